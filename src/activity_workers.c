/*-------------------------------------------------------------------------
 *
 * activity_workers.c
 *	  The SQL API of activity workers: poll_activity() and the procedure
 *	  wait_for_activity_task(), complete_activity(), complete_and_poll(),
 *	  fail_activity(), heartbeat_activity(), cancel_activity(); and how
 *	  attempts are handed to them: claimed from the queue within its
 *	  limits, or dispatched eagerly by complete_and_poll() from the run it
 *	  just advanced.
 *
 * Each attempt is claimed by one poller (FOR UPDATE SKIP LOCKED) and gets
 * its own token.  A waiting poller sleeps on its queue's condition variable,
 * broadcast when a transaction that made a task ready commits.  The attempts
 * a backend handed out are remembered, so that completing one on the same
 * connection (the usual loop) takes the shortest path.
 *
 * Lock order, as in activity.c: the run row, then the task row, then its
 * timers; heartbeats, which do not take the run, take the task then its
 * timers.
 *
 *-------------------------------------------------------------------------
 */
#include "activity.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "executor/tuptable.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define MAX_POLL_TASKS				1000

PG_FUNCTION_INFO_V1(durable_poll_activity);
PG_FUNCTION_INFO_V1(durable_wait_for_activity_task);
PG_FUNCTION_INFO_V1(durable_complete_activity);
PG_FUNCTION_INFO_V1(durable_fail_activity);
PG_FUNCTION_INFO_V1(durable_heartbeat_activity);
PG_FUNCTION_INFO_V1(durable_cancel_activity);
PG_FUNCTION_INFO_V1(durable_complete_and_poll);

/* ---- eager dispatch ---- */

/* An activity handed straight to complete_and_poll()'s caller. */
typedef struct EagerTask
{
	char	   *workflow_id;
	char	   *activity;
	Jsonb	   *input;
	pg_uuid_t	run_id;
	int32		handle;
	ItemPointerData tid;		/* of its task row */
	bool		has_timeout_timers;
	TimestampTz started_at;
} EagerTask;

/*
 * complete_and_poll()'s offer while it completes an activity: when the run
 * advances inline and schedules activities on the caller's task queue, they
 * go to the caller at once (claimed in the same transaction), up to its free
 * slots.  Not for a queue with limits, whose starts pollers count.
 */
typedef struct EagerOffer
{
	MemoryContext cxt;			/* of complete_and_poll(): the tasks live there */
	const char *queue;
	const char *worker;
	ItemPointerData run_tid;	/* where the run's row is, once it advanced */
	ItemPointerData run_root;	/* and where its versions start (LockedRun.root) */
	int			slots;			/* tasks it may still take */
	int			limited;		/* -1: not looked up yet; else 0 or 1 */
	int			ntasks;
	EagerTask  *tasks;
} EagerOffer;

static EagerOffer *eager_offer = NULL;

/* Activities handed out by eager dispatch since this backend last claimed from a queue. */
static int	eager_streak = 0;

/* What queue_has_limits() last found, for one queue. */
static struct
{
	char		queue[NAMEDATALEN * 2];
	uint64		version;		/* of all queues' limits; 0: not to be kept */
	bool		limited;
}			known_limits;

/*
 * Does this queue have limits (a durable.task_queues row)?  The answer for
 * the last queue asked about is remembered until any queue's limits change
 * (a version in shared memory, bumped at the commit of such a change by the
 * table's trigger, and read before looking).  A claim that starts just
 * before the bump sees what a statement whose snapshot predates the commit
 * would see.
 */
static bool
queue_has_limits(const char *queue)
{
	static EnginePlan plan = {NULL,
	"SELECT 1 FROM durable.task_queues WHERE task_queue = $1", 1, {TEXTOID}};
	uint64		version = durable_queue_limits_version();
	Datum		values[1];

	if (version != 0 && version == known_limits.version &&
		strcmp(queue, known_limits.queue) == 0)
		return known_limits.limited;
	values[0] = CStringGetTextDatum(queue);
	known_limits.limited = engine_exec(&plan, values, NULL, 1) > 0;
	known_limits.version = 0;
	if (version != 0 && strlen(queue) < sizeof(known_limits.queue))
	{
		strcpy(known_limits.queue, queue);
		known_limits.version = version;
	}
	return known_limits.limited;
}

/* Is this queue known to have no limits, without looking them up? */
static bool
queue_known_unlimited(const char *queue)
{
	uint64		version = durable_queue_limits_version();

	return version != 0 && version == known_limits.version &&
		!known_limits.limited && strcmp(queue, known_limits.queue) == 0;
}

/* May an activity scheduled on task_queue go to the caller of complete_and_poll()? */
bool
activity_eager_takes(const char *task_queue)
{
	EagerOffer *offer = eager_offer;

	if (offer == NULL || offer->slots == 0 || strcmp(task_queue, offer->queue) != 0)
		return false;
	if (offer->limited < 0)
		offer->limited = queue_has_limits(task_queue) ? 1 : 0;
	return offer->limited == 0;
}

void
activity_eager_add(LockedRun *run, int32 handle, ItemPointer tid, const char *activity,
				   Jsonb *input, bool has_timeout_timers, TimestampTz started_at)
{
	EagerOffer *offer = eager_offer;
	MemoryContext old = MemoryContextSwitchTo(offer->cxt);
	EagerTask  *t = &offer->tasks[offer->ntasks++];

	t->workflow_id = pstrdup(run->workflow_id);
	t->activity = pstrdup(activity);
	t->input = input ? DatumGetJsonbPCopy(JsonbPGetDatum(input)) : NULL;
	memcpy(&t->run_id, DatumGetUUIDP(run->run_id), sizeof(pg_uuid_t));
	t->handle = handle;
	t->tid = *tid;
	t->has_timeout_timers = has_timeout_timers;
	t->started_at = started_at;
	offer->slots--;
	MemoryContextSwitchTo(old);
}

/* The worker name of the complete_and_poll() call that takes them. */
const char *
activity_eager_worker(void)
{
	return eager_offer ? eager_offer->worker : NULL;
}

/* ---- the attempt a token names ---- */

/* An attempt's run and task, by the task's key: lock what the caller needs. */
#define ATTEMPT_QUERY \
	"SELECT " RUN_COLUMNS_OF("r.") ", " TASK_COLUMNS_OF("t.") \
	" FROM durable.activity_tasks t JOIN durable.runs r ON r.run_id = t.run_id" \
	" WHERE t.run_id = $1 AND t.handle = $2"
#define ATTEMPT_QUERY_TYPES	2, {UUIDOID, INT4OID}

/*
 * Locks the run, then the task (always in that order: the worker locks
 * runs first too; FOR UPDATE OF locks in the order it names them), in one
 * statement, and checks the token's attempt is the current started one of
 * an open run.  With unless_held, a run someone else holds is not waited
 * for: *held is set then (or when there is no such task), and the caller
 * gets the token's run, handle and attempt in *token_key.
 */
typedef struct TokenKey
{
	Datum		run_id;
	int32		handle;
	int32		attempt;
} TokenKey;

static bool
lock_current_attempt(const char *token, ClaimedAttempt *a, bool unless_held,
					 bool *held, TokenKey *token_key)
{
	static EnginePlan plan = {NULL, ATTEMPT_QUERY " FOR UPDATE OF r, t", ATTEMPT_QUERY_TYPES};
	static EnginePlan skip_plan = {NULL, ATTEMPT_QUERY " FOR UPDATE OF r, t SKIP LOCKED",
	ATTEMPT_QUERY_TYPES};
	Datum		values[2];
	int32		handle;
	int32		attempt;

	token_parse(token, &values[0], &handle, &attempt);
	values[1] = Int32GetDatum(handle);
	if (token_key)
	{
		token_key->run_id = values[0];
		token_key->handle = handle;
		token_key->attempt = attempt;
	}
	if (engine_exec(unless_held ? &skip_plan : &plan, values, NULL, 1) == 0)
	{
		if (held)
			*held = true;
		return false;
	}
	engine_fill_locked_run(&a->run, 1);
	activity_fill_attempt(a, RUN_NCOLUMNS + 1);
	return strcmp(a->run.status, "running") == 0 && a->attempt == attempt &&
		strcmp(a->status, "started") == 0;
}

/* ---- poll_activity ---- */

static void
check_task_queue_name(text *queue)
{
	if (VARSIZE_ANY_EXHDR(queue) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("task queue name must not be empty")));
}

/*
 * The attempts this backend handed out last, with what completing one
 * needs: a worker usually completes on the connection it polled with
 * (complete_and_poll), and then the token needs no HMAC to be checked, the
 * run is locked by its id without reading the task row first, and the task
 * row is looked for where the claim (or eager dispatch) left it before its
 * primary key is asked; so is the run's row, for an activity handed out by
 * eager dispatch, whose transaction had just written it.  Whether
 * the attempt is still the current one is checked where it ends (the task
 * row's delete), as always.  Attempts with timer rows to drop (timeouts but
 * start_to_close, which is on the task row) or long names are not kept:
 * they take the general path.
 */
#define HANDED_OUT		8
#define HANDED_OUT_TOKEN_LEN	96

typedef struct HandedOut
{
	char		token[HANDED_OUT_TOKEN_LEN];	/* "" : free */
	int32		attempt;
	pg_uuid_t	run_id;
	int32		handle;
	ItemPointerData task_tid;	/* where the task row was when handed out */
	ItemPointerData run_tid;	/* and the run's, if known */
	ItemPointerData run_root;	/* where the run's versions start, if known */
	char		task_queue[NAMEDATALEN];
	bool		has_worker;
	char		worker[NAMEDATALEN];
	TimestampTz started_at;
	/* the (sub)transaction that claimed it, until that commits (else 0) */
	SubTransactionId claimed_in;
} HandedOut;

static HandedOut handed_out[HANDED_OUT];
static int	next_handed_out = 0;
static bool handed_out_callbacks = false;

/*
 * A claim that does not commit did not happen: the same attempt may be
 * claimed again, by another worker at another time, and what this backend
 * remembered of it would be wrong.
 */
static void
forget_handed_out_since(SubTransactionId subid)
{
	for (int i = 0; i < HANDED_OUT; i++)
		if (handed_out[i].claimed_in != InvalidSubTransactionId &&
			handed_out[i].claimed_in >= subid)
		{
			handed_out[i].token[0] = '\0';
			handed_out[i].claimed_in = InvalidSubTransactionId;
		}
}

static void
handed_out_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		for (int i = 0; i < HANDED_OUT; i++)
			handed_out[i].claimed_in = InvalidSubTransactionId;
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
			 event == XACT_EVENT_PREPARE)
		forget_handed_out_since(TopSubTransactionId);
}

static void
handed_out_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		forget_handed_out_since(mySubid);
}

/* An attempt that this function hands out. */
typedef struct Attempt
{
	int32		attempt;
	const char *workflow_id;
	const char *activity;
	Jsonb	   *input;
	Datum		heartbeat_details;
	bool		no_details;
	/* for handed_out */
	Datum		run_id;
	int32		handle;
	ItemPointerData task_tid;
	ItemPointerData run_tid;
	ItemPointerData run_root;
	const char *task_queue;
	const char *worker;
	TimestampTz started_at;
	bool		has_timeout_timers;
} Attempt;

static void
remember_handed_out(const char *token, Attempt *t)
{
	HandedOut  *h = &handed_out[next_handed_out++ % HANDED_OUT];

	if (!handed_out_callbacks)
	{
		RegisterXactCallback(handed_out_xact_callback, NULL);
		RegisterSubXactCallback(handed_out_subxact_callback, NULL);
		handed_out_callbacks = true;
	}
	h->token[0] = '\0';
	h->claimed_in = InvalidSubTransactionId;
	if (t->has_timeout_timers || strlen(token) >= HANDED_OUT_TOKEN_LEN ||
		strlen(t->task_queue) >= NAMEDATALEN ||
		(t->worker && strlen(t->worker) >= NAMEDATALEN))
		return;
	h->attempt = t->attempt;
	memcpy(&h->run_id, DatumGetUUIDP(t->run_id), sizeof(pg_uuid_t));
	h->handle = t->handle;
	h->task_tid = t->task_tid;
	h->run_tid = t->run_tid;
	h->run_root = t->run_root;
	strcpy(h->task_queue, t->task_queue);
	h->has_worker = t->worker != NULL;
	if (t->worker)
		strcpy(h->worker, t->worker);
	h->started_at = t->started_at;
	h->claimed_in = GetCurrentSubTransactionId();
	strcpy(h->token, token);
}

static HandedOut *
find_handed_out(const char *token)
{
	for (int i = 0; i < HANDED_OUT; i++)
		if (handed_out[i].token[0] != '\0' && strcmp(handed_out[i].token, token) == 0)
			return &handed_out[i];
	return NULL;
}

/* Puts an attempt handed out into the function's result. */
static void
put_task(ReturnSetInfo *rsinfo, Attempt *t)
{
	Datum		out[6];
	bool		outnull[6] = {false, false, false, t->input == NULL, false, t->no_details};
	char	   *token = token_make(t->run_id, t->handle, t->attempt);

	remember_handed_out(token, t);
	out[0] = CStringGetTextDatum(token);
	out[1] = CStringGetTextDatum(t->workflow_id);
	out[2] = CStringGetTextDatum(t->activity);
	out[3] = t->input ? JsonbPGetDatum(t->input) : (Datum) 0;
	out[4] = Int32GetDatum(t->attempt);
	out[5] = t->heartbeat_details;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnull);
}

/*
 * How many tasks this poll may claim under the queue's limits (locking the
 * queue's row until the poll ends, so pollers of a limited queue take turns).
 * When it is 0, *retry_ms says when the rate limit allows the next start
 * (-1: when a task in flight ends).  A queue without limits: max_tasks.
 */
static int
tasks_allowed(const char *queue, int max_tasks, TimestampTz now, long *retry_ms,
			  double *tokens_left)
{
	static EnginePlan limits = {NULL,
		"SELECT max_in_flight, max_starts_per_second, tokens, refilled_at"
		" FROM durable.task_queues WHERE task_queue = $1 FOR UPDATE",
	1, {TEXTOID}};
	static EnginePlan in_flight = {NULL,
		"SELECT count(*) FROM durable.activity_tasks WHERE task_queue = $1 AND status = 'started'",
	1, {TEXTOID}};
	Datum		values[1] = {CStringGetTextDatum(queue)};
	bool		no_max,
				no_rate,
				isnull;
	int32		max_in_flight;
	double		rate;
	int			allowed = max_tasks;

	*retry_ms = -1;
	*tokens_left = -1;
	if (!queue_has_limits(queue) || engine_exec(&limits, values, NULL, 1) == 0)
		return max_tasks;
	max_in_flight = DatumGetInt32(engine_get(0, 1, &no_max));
	rate = DatumGetFloat8(engine_get(0, 2, &no_rate));
	if (!no_rate)
	{
		double		tokens = DatumGetFloat8(engine_get(0, 3, &isnull));
		TimestampTz refilled_at = DatumGetTimestampTz(engine_get(0, 4, &isnull));
		double		elapsed = Max(now - refilled_at, 0) / (double) USECS_PER_SEC;

		/* the bucket holds a second's worth of starts, and at least one */
		tokens = Min(Max(rate, 1.0), tokens + rate * elapsed);
		*tokens_left = tokens;
		allowed = Min(allowed, (int) tokens);
		if (allowed < 1)
			*retry_ms = (long) ((1.0 - tokens) / rate * 1000.0) + 1;
	}
	if (!no_max)
	{
		int64		running;

		engine_exec(&in_flight, values, NULL, 1);
		running = DatumGetInt64(engine_get(0, 1, &isnull));
		allowed = Min(allowed, (int) Max(max_in_flight - running, 0));
	}
	return Max(allowed, 0);
}

static void
spend_tokens(const char *queue, double tokens, TimestampTz now)
{
	static EnginePlan plan = {NULL,
		"UPDATE durable.task_queues SET tokens = $2, refilled_at = $3 WHERE task_queue = $1",
	3, {TEXTOID, FLOAT8OID, TIMESTAMPTZOID}};
	Datum		values[3] = {CStringGetTextDatum(queue), Float8GetDatum(tokens),
	TimestampTzGetDatum(now)};

	engine_exec(&plan, values, NULL, 0);
}

/*
 * Claims up to max_tasks ready tasks of the queue (highest priority first,
 * then oldest) into the tuplestore.  Returns how many.
 */
static int
claim_tasks(ReturnSetInfo *rsinfo, const char *queue, const char *worker,
			int max_tasks, bool tentative, long *retry_ms)
{
	EngineScope scope;
	TimestampTz now = GetCurrentTimestamp();
	double		tokens;
	ClaimedTask *claimed;
	int			n;

	engine_enter(&scope);
	max_tasks = tasks_allowed(queue, max_tasks, now, retry_ms, &tokens);
	if (max_tasks == 0)
	{
		engine_leave(&scope);
		return 0;
	}
	claimed = palloc(sizeof(ClaimedTask) * max_tasks);
	n = engine_claim_tasks(queue, worker, now, max_tasks, tentative, claimed);
	eager_streak = 0;			/* the queue had its turn */
	if (n > 0)
		durable_wake_queue_at_abort(queue);
	for (int i = 0; i < n; i++)
	{
		ClaimedTask *c = &claimed[i];
		Attempt		t;

		/* start_to_close: the claim set the row's start_to_close_at */
		activity_start_timeout(c->run_id, c->handle, c->attempt, c->timeouts,
							   "heartbeat", now);
		t.attempt = c->attempt;
		t.workflow_id = c->workflow_id;
		t.activity = c->activity;
		t.input = c->input;
		t.heartbeat_details = c->heartbeat_details ?
			JsonbPGetDatum(c->heartbeat_details) : (Datum) 0;
		t.no_details = c->heartbeat_details == NULL;
		t.run_id = c->run_id;
		t.handle = c->handle;
		t.task_tid = c->tid;
		ItemPointerSetInvalid(&t.run_tid);
		t.run_root = c->run_row;
		t.task_queue = queue;
		t.worker = worker;
		t.started_at = now;
		t.has_timeout_timers = activity_has_timeout_timers(c->timeouts);
		put_task(rsinfo, &t);
	}
	if (n > 0 && tokens >= 0)
		spend_tokens(queue, tokens - n, now);
	engine_leave(&scope);
	return n;
}

typedef struct ClaimRequest
{
	ReturnSetInfo *rsinfo;
	const char *queue;
	const char *worker;
	int			max_tasks;
	long		retry_ms;		/* out: when a rate limit allows more (-1) */
	bool		tentative;		/* see engine_claim_tasks() */
} ClaimRequest;

static bool
claim_some(void *arg)
{
	ClaimRequest *req = arg;

	return claim_tasks(req->rsinfo, req->queue, req->worker, req->max_tasks,
					   req->tentative, &req->retry_ms) > 0;
}

/*
 * The first look of a poll that may wait, when the queue is known to have
 * no limits (so no row of durable.task_queues gets locked, and no statement
 * runs): in the caller's transaction itself, which costs no subtransaction
 * and no second transaction id.  Tentative: if it claims nothing it leaves
 * no lock behind, and the look in a subtransaction that follows sees the
 * rows it passed over.
 */
static bool
claim_at_once(ClaimRequest *req)
{
	ClaimRequest first = *req;

	if (!queue_known_unlimited(req->queue))
		return false;
	first.tentative = true;
	return claim_some(&first);
}

/*
 * The queue (argument "first"), worker (first + 1) and max_tasks (argument
 * max_tasks_arg; -1: the poll has none, one task) of a poll, checked, into
 * req.
 */
static void
poll_args(FunctionCallInfo fcinfo, int first, int max_tasks_arg, ClaimRequest *req)
{
	if (PG_ARGISNULL(first))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task queue must not be null")));
	check_task_queue_name(PG_GETARG_TEXT_PP(first));
	req->rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	req->queue = text_to_cstring(PG_GETARG_TEXT_PP(first));
	req->worker = PG_ARGISNULL(first + 1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(first + 1));
	req->max_tasks = max_tasks_arg < 0 || PG_ARGISNULL(max_tasks_arg) ? 1 :
		PG_GETARG_INT32(max_tasks_arg);
	req->retry_ms = -1;
	req->tentative = false;
	if (req->max_tasks < 1 || req->max_tasks > MAX_POLL_TASKS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks must be between 1 and %d", MAX_POLL_TASKS)));
}

/*
 * Looks at the queue until tasks come (claimed into args->rsinfo) or the
 * deadline passes, sleeping on the queue's channel in between.  An empty
 * look leaves no lock behind while we sleep: it runs in a subtransaction,
 * or with commit_between_looks (a procedure called outside a transaction
 * block, connected to SPI as non-atomic) in a transaction of its own,
 * committed.
 */
static void
wait_for_tasks(ClaimRequest *args, TimestampTz deadline, bool commit_between_looks)
{
	WakeChannel *channel = durable_queue_channel(args->queue);

	durable_poller_waits(args->queue, 1);
	PG_TRY();
	{
		for (;;)
		{
			ClaimRequest req = *args;
			uint64		seen = channel_broadcasts(channel);
			TimestampTz now;
			long		sleep_ms;

			req.retry_ms = -1;
			req.tentative = false;
			if (commit_between_looks ? engine_look_or_commit(claim_some, &req) :
				engine_try_in_subxact(claim_some, &req))
				break;
			now = GetCurrentTimestamp();
			if (now >= deadline)
				break;
			sleep_ms = TimestampDifferenceMilliseconds(now, deadline);
			if (req.retry_ms >= 0)
				sleep_ms = Min(sleep_ms, req.retry_ms);
			channel_sleep(channel, seen, sleep_ms);
			CHECK_FOR_INTERRUPTS();
			engine_check_installed_after_wait();
		}
	}
	PG_FINALLY();
	{
		durable_poller_waits(args->queue, -1);
	}
	PG_END_TRY();
}

/* The wait argument of a poll, in milliseconds, within durable.max_poll_wait. */
static long
poll_wait_ms(FunctionCallInfo fcinfo, int argno)
{
	long		wait_ms;

	wait_ms = PG_ARGISNULL(argno) ? 0 :
		interval_arg_ms(PG_GETARG_INTERVAL_P(argno), "wait");
	return Min(wait_ms, durable_max_poll_wait_ms);
}

Datum
durable_poll_activity(PG_FUNCTION_ARGS)
{
	ClaimRequest args;
	long		wait_ms;
	TimestampTz deadline;

	durable_require_preload();
	poll_args(fcinfo, 0, 3, &args);
	wait_ms = poll_wait_ms(fcinfo, 2);
	if (wait_ms > 0)
		check_wait_isolation("poll_activity",
							 "Poll in a READ COMMITTED transaction, or pass wait => '0'.");

	InitMaterializedSRF(fcinfo, 0);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);

	if (wait_ms == 0)
	{
		(void) claim_some(&args);
		return (Datum) 0;
	}
	if (claim_at_once(&args))
		return (Datum) 0;
	wait_for_tasks(&args, deadline, false);
	return (Datum) 0;
}

/*
 * CALL durable.wait_for_activity_task(task_queue, worker, wait): the long
 * poll that holds no snapshot while it waits (see call_may_commit()): each
 * look that finds nothing is committed, and the wait runs in a transaction
 * that has taken no snapshot.  Inside a transaction block (an atomic CALL)
 * it waits as poll_activity() does.  The task comes back as the procedure's
 * INOUT arguments, all null when none came.
 */
Datum
durable_wait_for_activity_task(PG_FUNCTION_ARGS)
{
	bool		atomic = !call_may_commit(fcinfo);
	MemoryContext caller_cxt = CurrentMemoryContext;
	MemoryContext look_cxt;
	ReturnSetInfo rsinfo;
	ClaimRequest args;
	TupleDesc	desc;
	long		wait_ms;
	Datum		values[6] = {0};
	bool		nulls[6] = {true, true, true, true, true, true};
	TupleTableSlot *slot;
	Datum		result;

	durable_require_preload();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE ||
		desc->natts != lengthof(values))
		elog(ERROR, "durable: wait_for_activity_task has the wrong INOUT arguments");
	desc = BlessTupleDesc(desc);
	/* the INOUT arguments that follow are the result's, whatever they hold */
	poll_args(fcinfo, 0, -1, &args);
	args.rsinfo = &rsinfo;
	wait_ms = poll_wait_ms(fcinfo, 2);
	if (atomic && wait_ms > 0)
		check_wait_isolation("wait_for_activity_task",
							 "CALL it outside a transaction block, or in a READ COMMITTED one.");

	/*
	 * The claim puts the task in a tuplestore, read after SPI_finish().  It
	 * is made before the first commit, so it must never spill to a file: its
	 * resource owner would be gone.  It holds one task.
	 */
	MemSet(&rsinfo, 0, sizeof(rsinfo));
	rsinfo.type = T_ReturnSetInfo;
	look_cxt = AllocSetContextCreate(caller_cxt, "durable wait_for_activity_task",
									 ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(look_cxt);
	rsinfo.setDesc = desc;
	rsinfo.setResult = tuplestore_begin_heap(false, false, MAX_KILOBYTES);
	if (!atomic && SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wait_for_tasks(&args, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms),
				   !atomic);
	if (!atomic)
		SPI_finish();

	MemoryContextSwitchTo(caller_cxt);
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	if (tuplestore_gettupleslot(rsinfo.setResult, true, false, slot))
	{
		slot_getallattrs(slot);
		memcpy(values, slot->tts_values, sizeof(values));
		memcpy(nulls, slot->tts_isnull, sizeof(nulls));
	}
	result = HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(look_cxt);
	PG_RETURN_DATUM(result);
}

/* ---- complete, fail, heartbeat, cancel ---- */

static char *
required_token(FunctionCallInfo fcinfo)
{
	durable_require_preload();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task token must not be null")));
	return text_to_cstring(PG_GETARG_TEXT_PP(0));
}

/*
 * Completes the attempt of the token; false if it is no longer current.
 * The hot path of every activity worker, in two steps: the first locks the
 * run (and reads the task, unless this backend handed the attempt out and
 * knows it: then no statement, see rows.c); the second deletes the task
 * row, if the attempt is still the current started one, and records
 * ActivityTaskStarted and ActivityTaskCompleted only if it did.  The task
 * row is never locked by itself: that would cost a WAL record, and the run
 * lock already keeps everyone but a heartbeat (which the delete waits for)
 * away from it.
 *
 * A run someone else holds is not waited for: the result is left on the
 * task row for the worker to record (activity_complete_unlocked), so that
 * the parallel activities of one run complete side by side.
 */
static bool
complete_attempt(const char *token, Jsonb *result)
{
	static EnginePlan lock = {NULL, ATTEMPT_QUERY " FOR UPDATE OF r SKIP LOCKED",
	ATTEMPT_QUERY_TYPES};
	EngineScope scope;
	ClaimedAttempt a;
	HandedOut  *h = find_handed_out(token);
	int32		handle;
	int32		attempt;
	Datum		values[2];
	ItemPointerData task_tid;
	ItemPointerData run_tid;
	ItemPointerData run_root;
	bool		current = false;
	bool		locked;

	engine_enter(&scope);
	if (h != NULL)
	{
		/* handed out by this backend: all but the run is known */
		pg_uuid_t  *run_id = palloc(sizeof(pg_uuid_t));

		memcpy(run_id, &h->run_id, sizeof(pg_uuid_t));
		handle = h->handle;
		attempt = h->attempt;
		task_tid = h->task_tid;
		run_tid = h->run_tid;
		run_root = h->run_root;
		memset(&a, 0, sizeof(a));
		a.attempt = attempt;
		a.handle = handle;
		a.status = "started";
		a.had_started = true;
		a.task_queue = pstrdup(h->task_queue);
		a.worker = h->has_worker ? pstrdup(h->worker) : NULL;
		a.started_at = h->started_at;
		values[0] = UUIDPGetDatum(run_id);
		locked = engine_find_run_at(values[0], &run_tid, &run_root, &a.run,
									RUN_LOCK_OR_SKIP);
		current = locked && strcmp(a.run.status, "running") == 0;
	}
	else
	{
		token_parse(token, &values[0], &handle, &attempt);
		values[1] = Int32GetDatum(handle);
		ItemPointerSetInvalid(&task_tid);
		locked = engine_exec(&lock, values, NULL, 1) == 1;
		if (locked)
		{
			engine_fill_locked_run(&a.run, 1);
			activity_fill_attempt(&a, RUN_NCOLUMNS + 1);
			current = strcmp(a.run.status, "running") == 0 && a.attempt == attempt &&
				strcmp(a.status, "started") == 0;
		}
	}
	/* not found, or held by someone else: the task row alone tells */
	if (!locked)
		current = activity_complete_unlocked(values[0], handle, attempt, result);
	else if (current)
	{
		JsonBuf		jb;

		json_begin(&jb);
		json_add_int(&jb, "handle", a.handle);
		json_add_int(&jb, "attempt", a.attempt);
		if (result)
			json_add_jsonb(&jb, "result", result);

		current = engine_delete_started_task(a.run.run_id, handle, attempt, &task_tid);
		if (current)
		{
			activity_append_ended(&a, "ActivityTaskCompleted", json_end(&jb),
								  GetCurrentTimestamp());
			activity_finish(&a, scope.caller);
			/* the tasks it hands out are of this run: where its row is now */
			if (eager_offer != NULL)
			{
				eager_offer->run_tid = a.run.tid;
				eager_offer->run_root = a.run.root;
			}
		}
	}
	engine_leave(&scope);
	return current;
}

Datum
durable_complete_activity(PG_FUNCTION_ARGS)
{
	char	   *token = required_token(fcinfo);
	Jsonb	   *result = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);

	PG_RETURN_BOOL(complete_attempt(token, result));
}

/*
 * durable.complete_and_poll(token, result, task_queue, worker, max_tasks):
 * complete_activity, then poll_activity without waiting, in one call: a busy
 * worker's loop at one round trip and one commit per activity.
 *
 * Eager dispatch: when the completion lets the run go on at once (see
 * replay_task_inline) and its next activities are on this task queue, they
 * are the tasks returned, already claimed, without going through the queue.
 * A connection takes at most durable.eager_dispatch_limit of them in a row
 * before it claims the oldest task of the queue again, so that tasks waiting
 * there are not passed over for long.
 */
Datum
durable_complete_and_poll(PG_FUNCTION_ARGS)
{
	char	   *token = required_token(fcinfo);
	Jsonb	   *result = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	ClaimRequest req;
	EagerOffer	offer;

	poll_args(fcinfo, 2, 4, &req);
	offer.cxt = CurrentMemoryContext;
	offer.queue = req.queue;
	offer.worker = req.worker;
	offer.slots = Max(0, Min(req.max_tasks, durable_eager_dispatch_limit - eager_streak));
	offer.limited = -1;
	ItemPointerSetInvalid(&offer.run_tid);
	ItemPointerSetInvalid(&offer.run_root);
	offer.ntasks = 0;
	offer.tasks = palloc(sizeof(EagerTask) * req.max_tasks);

	eager_offer = &offer;
	PG_TRY();
	{
		(void) complete_attempt(token, result);
	}
	PG_FINALLY();
	{
		eager_offer = NULL;
	}
	PG_END_TRY();

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < offer.ntasks; i++)
	{
		EagerTask  *e = &offer.tasks[i];
		Attempt		t;

		t.attempt = 1;
		t.workflow_id = e->workflow_id;
		t.activity = e->activity;
		t.input = e->input;
		t.heartbeat_details = (Datum) 0;
		t.no_details = true;
		t.run_id = UUIDPGetDatum(&e->run_id);
		t.handle = e->handle;
		t.task_tid = e->tid;
		t.run_tid = offer.run_tid;
		t.run_root = offer.run_root;
		t.task_queue = req.queue;
		t.worker = req.worker;
		t.started_at = e->started_at;
		t.has_timeout_timers = e->has_timeout_timers;
		put_task(req.rsinfo, &t);
	}
	eager_streak += offer.ntasks;
	if (offer.ntasks < req.max_tasks)
	{
		req.max_tasks -= offer.ntasks;
		(void) claim_some(&req);
	}
	return (Datum) 0;
}

Datum
durable_fail_activity(PG_FUNCTION_ARGS)
{
	char	   *token = required_token(fcinfo);
	char	   *error;
	bool		retryable = PG_ARGISNULL(2) ? true : PG_GETARG_BOOL(2);
	char	   *error_type = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	EngineScope scope;
	ClaimedAttempt a;
	bool		current;
	bool		held = false;
	TokenKey	key;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("activity error message must not be null"),
				 errhint("Describe why the activity failed; it is recorded in the history.")));
	error = text_to_cstring(PG_GETARG_TEXT_PP(1));

	engine_enter(&scope);
	current = lock_current_attempt(token, &a, true, &held, &key);
	/* not found, or held by someone else: the task row alone tells */
	if (held)
		current = activity_fail_unlocked(key.run_id, key.handle, key.attempt, error,
										 retryable, error_type);
	else if (current)
	{
		JsonBuf		jb;

		json_begin(&jb);
		json_add_int(&jb, "handle", a.handle);
		json_add_int(&jb, "attempt", a.attempt);
		json_add_str(&jb, "activity", a.activity);
		json_add_str(&jb, "error", error);
		if (error_type)
			json_add_str(&jb, "error_type", error_type);
		json_add_bool(&jb, "retryable", retryable);
		activity_attempt_unsuccessful(&a, "ActivityTaskFailed", &jb, retryable, error_type,
							 GetCurrentTimestamp());
	}
	engine_leave(&scope);
	PG_RETURN_BOOL(current);
}

/*
 * Records progress and resets the heartbeat timeout.  Returns true when the
 * worker should stop: cancellation was requested, or the attempt is no
 * longer current (timed out, run closed).
 */
Datum
durable_heartbeat_activity(PG_FUNCTION_ARGS)
{
	static EnginePlan beat = {NULL,
		"UPDATE durable.activity_tasks SET heartbeat_details = $4, last_heartbeat_at = $5"
		" WHERE run_id = $1 AND handle = $2 AND attempt = $3 AND status = 'started'"
		" RETURNING cancel_requested, timeouts",
	5, {UUIDOID, INT4OID, INT4OID, JSONBOID, TIMESTAMPTZOID}};
	static EnginePlan move = {NULL,
		"UPDATE durable.timers SET fire_at = $4 WHERE run_id = $1 AND handle = $2"
		" AND attempt = $3 AND kind = 'activity_timeout' AND timeout = 'heartbeat'",
	4, {UUIDOID, INT4OID, INT4OID, TIMESTAMPTZOID}};
	char	   *token = required_token(fcinfo);
	Jsonb	   *details = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	TimestampTz now = GetCurrentTimestamp();
	EngineScope scope;
	int32		handle;
	int32		attempt;
	Datum		values[5];
	char		nulls[5] = "     ";
	bool		stop = true;

	engine_enter(&scope);
	token_parse(token, &values[0], &handle, &attempt);
	values[1] = Int32GetDatum(handle);
	values[2] = Int32GetDatum(attempt);
	values[3] = details ? JsonbPGetDatum(details) : (Datum) 0;
	nulls[3] = details ? ' ' : 'n';
	values[4] = TimestampTzGetDatum(now);
	if (engine_exec(&beat, values, nulls, 1) == 1)
	{
		bool		isnull;
		double		seconds;

		stop = DatumGetBool(engine_get(0, 1, &isnull));
		seconds = activity_timeout_seconds(DatumGetJsonbP(engine_get(0, 2, &isnull)),
										   "heartbeat");
		if (seconds > 0)
		{
			values[3] = TimestampTzGetDatum(plus_seconds(now, seconds));
			engine_exec(&move, values, NULL, 0);
		}
	}
	engine_leave(&scope);
	PG_RETURN_BOOL(stop);
}

/*
 * The worker stopped the activity after a cancellation request: the
 * workflow sees it canceled.  Returns false when the attempt is no longer
 * current.
 */
Datum
durable_cancel_activity(PG_FUNCTION_ARGS)
{
	char	   *token = required_token(fcinfo);
	Jsonb	   *details = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	EngineScope scope;
	ClaimedAttempt a;
	bool		current;
	bool		requested = true;

	engine_enter(&scope);
	current = lock_current_attempt(token, &a, false, NULL, NULL);
	if (current && !a.cancel_requested)
		requested = false;
	else if (current)
	{
		JsonBuf		jb;

		json_begin(&jb);
		json_add_int(&jb, "handle", a.handle);
		json_add_int(&jb, "attempt", a.attempt);
		if (details)
			json_add_jsonb(&jb, "details", details);
		activity_append_ended(&a, "ActivityTaskCanceled", json_end(&jb),
							  GetCurrentTimestamp());
		activity_resolve(&a, scope.caller);
	}
	engine_leave(&scope);
	if (!requested)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cancellation of this activity was not requested"),
				 errhint("Report a failure with durable.fail_activity() instead.")));
	PG_RETURN_BOOL(current);
}
