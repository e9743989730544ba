/*-------------------------------------------------------------------------
 *
 * activity.c
 *	  Activity tasks: scheduling them (from a workflow task), and the SQL
 *	  API of activity workers: poll_activity(), complete_activity(),
 *	  fail_activity().
 *
 * A task row lives from scheduling until the activity completes or fails for
 * good; each attempt is claimed by one poller (FOR UPDATE SKIP LOCKED) and
 * gets its own token.  A waiting poller sleeps on its queue's condition
 * variable, broadcast when a transaction that added a ready task commits,
 * and otherwise only until the next retry of the queue falls due.
 *
 * History: each attempt that ends is recorded as ActivityTaskStarted
 * followed by ActivityTaskCompleted or ActivityTaskFailed (Temporal writes
 * Started lazily too, so a poll costs no history write).
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define DEFAULT_INITIAL_INTERVAL_S	1.0
#define DEFAULT_BACKOFF_COEFFICIENT	2.0
#define DEFAULT_MAXIMUM_INTERVAL_S	100.0
#define MAX_POLL_TASKS				1000

PG_FUNCTION_INFO_V1(durable_poll_activity);
PG_FUNCTION_INFO_V1(durable_complete_activity);
PG_FUNCTION_INFO_V1(durable_fail_activity);

/* ---- options ---- */

static void
bad_option(const char *fmt, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg(fmt, what),
			 errhint("Activity options look like {\"retry\": {\"maximum_attempts\": 3, "
					 "\"initial_interval\": \"1 s\", \"backoff_coefficient\": 2, "
					 "\"maximum_interval\": \"1 min\"}}.")));
}

/* Seconds of an interval given as a string ("1 min") or a number of seconds. */
static double
option_seconds(JsonbValue *v, const char *name)
{
	double		seconds;

	if (v->type == jbvNumeric)
		seconds = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
													 NumericGetDatum(v->val.numeric)));
	else if (v->type == jbvString)
	{
		char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
		Interval   *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
															   CStringGetDatum(s),
															   ObjectIdGetDatum(InvalidOid),
															   Int32GetDatum(-1)));

		seconds = iv->time / (double) USECS_PER_SEC +
			iv->day * (double) SECS_PER_DAY +
			iv->month * (double) DAYS_PER_MONTH * SECS_PER_DAY;
	}
	else
	{
		bad_option("retry option \"%s\" must be an interval string or a number of seconds", name);
		return 0;				/* keep compiler quiet */
	}
	if (!(seconds > 0) || seconds > 10 * 365 * (double) SECS_PER_DAY)
		bad_option("retry option \"%s\" must be a positive interval of at most 10 years", name);
	return seconds;
}

static double
option_number(JsonbValue *v, const char *name)
{
	if (v->type != jbvNumeric)
		bad_option("retry option \"%s\" must be a number", name);
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8,
											  NumericGetDatum(v->val.numeric)));
}

static void
parse_retry(Jsonb *retry, RetryPolicy *policy)
{
	JsonbIterator *it;
	JsonbValue	k,
				v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(retry) || JB_ROOT_IS_SCALAR(retry))
		bad_option("activity option \"%s\" must be a JSON object", "retry");

	it = JsonbIteratorInit(&retry->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(k.val.string.val, k.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		if (strcmp(key, "initial_interval") == 0)
			policy->initial_interval_s = option_seconds(&v, key);
		else if (strcmp(key, "maximum_interval") == 0)
			policy->maximum_interval_s = option_seconds(&v, key);
		else if (strcmp(key, "backoff_coefficient") == 0)
		{
			policy->backoff_coefficient = option_number(&v, key);
			if (!(policy->backoff_coefficient >= 1.0 && policy->backoff_coefficient <= 100.0))
				bad_option("retry option \"%s\" must be between 1 and 100", key);
		}
		else if (strcmp(key, "maximum_attempts") == 0)
		{
			double		n = option_number(&v, key);

			if (n < 0 || n > INT_MAX || n != (int32) n)
				bad_option("retry option \"%s\" must be a whole number >= 0 (0 means unlimited)", key);
			policy->maximum_attempts = (int32) n;
		}
		else
			bad_option("unrecognized retry option \"%s\"", key);
	}
	if (policy->maximum_interval_s < policy->initial_interval_s)
		bad_option("retry option \"%s\" must not be less than initial_interval", "maximum_interval");
}

static Jsonb *
retry_policy_to_jsonb(RetryPolicy *p)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"initial_interval\": %.17g, \"backoff_coefficient\": %.17g, "
					 "\"maximum_interval\": %.17g, \"maximum_attempts\": %d}",
					 p->initial_interval_s, p->backoff_coefficient,
					 p->maximum_interval_s, p->maximum_attempts);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

static void
retry_policy_from_jsonb(Jsonb *j, RetryPolicy *p)
{
	JsonbValue	v;

	p->initial_interval_s = DEFAULT_INITIAL_INTERVAL_S;
	p->backoff_coefficient = DEFAULT_BACKOFF_COEFFICIENT;
	p->maximum_interval_s = DEFAULT_MAXIMUM_INTERVAL_S;
	p->maximum_attempts = 0;
#define GETNUM(key, field, conv) \
	if (getKeyJsonValueFromContainer(&j->root, key, strlen(key), &v) && v.type == jbvNumeric) \
		p->field = conv(DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric))))
	GETNUM("initial_interval", initial_interval_s, (double));
	GETNUM("backoff_coefficient", backoff_coefficient, (double));
	GETNUM("maximum_interval", maximum_interval_s, (double));
	GETNUM("maximum_attempts", maximum_attempts, (int32));
#undef GETNUM
}

/*
 * Validates activity options and returns the normalized retry policy.
 * Called from workflow code, so errors are the code's to catch.
 */
Jsonb *
activity_parse_options(Jsonb *options)
{
	RetryPolicy policy = {DEFAULT_INITIAL_INTERVAL_S, DEFAULT_BACKOFF_COEFFICIENT,
	DEFAULT_MAXIMUM_INTERVAL_S, 0};

	if (options != NULL)
	{
		JsonbIterator *it;
		JsonbValue	k,
					v;
		JsonbIteratorToken tok;

		if (!JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
			bad_option("activity options must be a JSON object, not %s",
					   JB_ROOT_IS_ARRAY(options) && !JB_ROOT_IS_SCALAR(options) ?
					   "an array" : "a scalar");
		it = JsonbIteratorInit(&options->root);
		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			char	   *key;

			if (tok != WJB_KEY)
				continue;
			key = pnstrdup(k.val.string.val, k.val.string.len);
			(void) JsonbIteratorNext(&it, &v, true);
			if (strcmp(key, "retry") != 0)
				bad_option("unrecognized activity option \"%s\"", key);
		}
		{
			Jsonb	   *retry = jsonb_field(options, "retry");

			if (retry != NULL)
				parse_retry(retry, &policy);
		}
	}
	return retry_policy_to_jsonb(&policy);
}

/* The delay before attempt (failed_attempt + 1). */
static double
backoff_seconds(RetryPolicy *p, int32 failed_attempt)
{
	double		delay = p->initial_interval_s;

	for (int i = 1; i < failed_attempt && delay < p->maximum_interval_s; i++)
		delay *= p->backoff_coefficient;
	return Min(delay, p->maximum_interval_s);
}

/* ---- scheduling, from a workflow task ---- */

void
activity_schedule(LockedRun *run, int32 handle, const char *activity,
				  const char *task_queue, Jsonb *input, Jsonb *retry_policy,
				  TimestampTz now)
{
	static EnginePlan plan = {NULL,
		"INSERT INTO durable.activity_tasks (run_id, handle, workflow_id, activity,"
		" task_queue, input, retry_policy, scheduled_at, ready_at)"
		" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
	8, {UUIDOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID}};
	Datum		values[8];
	char		nulls[8] = "        ";
	bool		isnull;
	JsonBuf		jb;

	json_begin(&jb);
	json_add_int(&jb, "handle", handle);
	json_add_str(&jb, "activity", activity);
	json_add_str(&jb, "task_queue", task_queue);
	json_add_jsonb(&jb, "input", input);
	json_add_jsonb(&jb, "retry_policy", retry_policy);
	engine_append_event(run, "ActivityTaskScheduled", json_end(&jb), now);

	values[0] = run->run_id;
	values[1] = Int32GetDatum(handle);
	values[2] = CStringGetTextDatum(run->workflow_id);
	values[3] = CStringGetTextDatum(activity);
	values[4] = CStringGetTextDatum(task_queue);
	values[5] = jsonb_datum_or_null(input, &isnull);
	if (isnull)
		nulls[5] = 'n';
	values[6] = JsonbPGetDatum(retry_policy);
	values[7] = TimestampTzGetDatum(now);
	engine_exec(&plan, values, nulls, 0);
	durable_wake_queue_at_commit(task_queue);
}

/* A run closed: its activities are abandoned, their tokens stop working. */
void
activity_cancel_all(LockedRun *run)
{
	static EnginePlan plan = {NULL,
	"DELETE FROM durable.activity_tasks WHERE run_id = $1", 1, {UUIDOID}};
	Datum		values[1] = {run->run_id};

	engine_exec(&plan, values, NULL, 0);
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
 * Claims up to max_tasks ready tasks of the queue into the tuplestore.
 * Returns how many.
 */
static int
claim_tasks(ReturnSetInfo *rsinfo, const char *queue, const char *worker,
			int max_tasks)
{
	static EnginePlan claim = {NULL,
		"WITH ready AS ("
		"  SELECT task_id FROM durable.activity_tasks"
		"   WHERE task_queue = $1 AND status = 'scheduled' AND ready_at <= $4"
		"   ORDER BY ready_at, task_id LIMIT $2 FOR UPDATE SKIP LOCKED)"
		" UPDATE durable.activity_tasks t"
		"    SET status = 'started', started_at = $4, worker = $3"
		"   FROM ready WHERE t.task_id = ready.task_id"
		" RETURNING t.task_id, t.attempt, t.workflow_id, t.activity, t.input",
	4, {TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID}};
	EngineScope scope;
	Datum		values[4];
	char		nulls[4] = "    ";
	int			n;

	engine_enter(&scope);
	values[0] = CStringGetTextDatum(queue);
	values[1] = Int32GetDatum(max_tasks);
	values[2] = worker ? CStringGetTextDatum(worker) : (Datum) 0;
	if (!worker)
		nulls[2] = 'n';
	values[3] = TimestampTzGetDatum(GetCurrentTimestamp());
	n = engine_exec(&claim, values, nulls, 0);
	if (n > 0)
		durable_wake_queue_at_abort(queue);
	if (n > 0)
	{
		/* read the claimed rows before token_make() runs queries of its own */
		Datum	   *rows = palloc(sizeof(Datum) * 5 * n);
		bool	   *rownulls = palloc(sizeof(bool) * 5 * n);

		for (int i = 0; i < n; i++)
			for (int col = 0; col < 5; col++)
				rows[i * 5 + col] = engine_get(i, col + 1, &rownulls[i * 5 + col]);
		for (int i = 0; i < n; i++)
		{
			Datum		out[5];
			bool		outnull[5];
			int64		task_id = DatumGetInt64(rows[i * 5]);
			int32		attempt = DatumGetInt32(rows[i * 5 + 1]);

			out[0] = CStringGetTextDatum(token_make(task_id, attempt));
			outnull[0] = false;
			for (int col = 1; col <= 3; col++)
			{
				out[col] = rows[i * 5 + col + 1];
				outnull[col] = rownulls[i * 5 + col + 1];
			}
			out[4] = Int32GetDatum(attempt);
			outnull[4] = false;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnull);
		}
	}
	engine_leave(&scope);
	return n;
}

typedef struct ClaimRequest
{
	ReturnSetInfo *rsinfo;
	const char *queue;
	const char *worker;
	int			max_tasks;
} ClaimRequest;

static bool
claim_some(void *arg)
{
	ClaimRequest *req = arg;

	return claim_tasks(req->rsinfo, req->queue, req->worker, req->max_tasks) > 0;
}

Datum
durable_poll_activity(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *queue;
	char	   *worker;
	long		wait_ms;
	int			max_tasks;
	TimestampTz deadline;
	WakeChannel *channel;

	durable_require_preload();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task queue must not be null")));
	check_task_queue_name(PG_GETARG_TEXT_PP(0));
	queue = text_to_cstring(PG_GETARG_TEXT_PP(0));
	worker = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	wait_ms = PG_ARGISNULL(2) ? 0 : interval_arg_ms(PG_GETARG_INTERVAL_P(2), "wait");
	max_tasks = PG_ARGISNULL(3) ? 1 : PG_GETARG_INT32(3);
	if (max_tasks < 1 || max_tasks > MAX_POLL_TASKS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks must be between 1 and %d", MAX_POLL_TASKS)));
	if (wait_ms > 0 && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("poll_activity cannot wait inside a REPEATABLE READ or SERIALIZABLE transaction"),
				 errhint("Poll in a READ COMMITTED transaction, or pass wait => '0'.")));

	InitMaterializedSRF(fcinfo, 0);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
	channel = durable_queue_channel(queue);

	for (;;)
	{
		ClaimRequest req = {rsinfo, queue, worker, max_tasks};
		uint64		seen = channel_broadcasts(channel);
		TimestampTz now;

		if (wait_ms == 0)
		{
			(void) claim_some(&req);
			break;
		}
		/* an empty look leaves no lock behind while we sleep */
		if (engine_try_in_subxact(claim_some, &req))
			break;
		now = GetCurrentTimestamp();
		if (now >= deadline)
			break;
		channel_sleep(channel, seen, TimestampDifferenceMilliseconds(now, deadline));
		CHECK_FOR_INTERRUPTS();
	}
	return (Datum) 0;
}

/* ---- complete_activity, fail_activity ---- */

/* The attempt a token names, locked along with its run. */
typedef struct ClaimedAttempt
{
	LockedRun	run;
	int64		task_id;
	int32		handle;
	int32		attempt;
	char	   *activity;
	char	   *task_queue;
	char	   *worker;
	TimestampTz started_at;
	Jsonb	   *retry_policy;
} ClaimedAttempt;

/*
 * Locks the run, then the task (always in that order: the worker locks
 * runs first too), and checks the token's attempt is the current started
 * one of an open run.
 */
static bool
lock_current_attempt(const char *token, ClaimedAttempt *a)
{
	static EnginePlan find_run = {NULL,
	"SELECT run_id FROM durable.activity_tasks WHERE task_id = $1", 1, {INT8OID}};
	static EnginePlan lock_task = {NULL,
		"SELECT handle, attempt, status, activity, task_queue, worker, started_at,"
		" retry_policy FROM durable.activity_tasks WHERE task_id = $1 FOR UPDATE",
	1, {INT8OID}};
	Datum		values[1];
	Datum		run_id;
	bool		isnull;
	char	   *status;

	token_parse(token, &a->task_id, &a->attempt);
	values[0] = Int64GetDatum(a->task_id);
	if (engine_exec(&find_run, values, NULL, 1) == 0)
		return false;
	run_id = engine_get(0, 1, &isnull);
	if (!engine_lock_run(run_id, &a->run, false) ||
		strcmp(a->run.status, "running") != 0)
		return false;
	if (engine_exec(&lock_task, values, NULL, 1) == 0)
		return false;
	if (DatumGetInt32(engine_get(0, 2, &isnull)) != a->attempt)
		return false;
	status = engine_get_text(0, 3);
	if (strcmp(status, "started") != 0)
		return false;
	a->handle = DatumGetInt32(engine_get(0, 1, &isnull));
	a->activity = engine_get_text(0, 4);
	a->task_queue = engine_get_text(0, 5);
	a->worker = engine_get_text(0, 6);
	a->started_at = DatumGetTimestampTz(engine_get(0, 7, &isnull));
	a->retry_policy = DatumGetJsonbP(engine_get(0, 8, &isnull));
	return true;
}

static void
append_started(ClaimedAttempt *a)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_int(&jb, "handle", a->handle);
	json_add_int(&jb, "attempt", a->attempt);
	json_add_str(&jb, "worker", a->worker);
	engine_append_event(&a->run, "ActivityTaskStarted", json_end(&jb), a->started_at);
}

static void
delete_task(int64 task_id)
{
	static EnginePlan plan = {NULL,
	"DELETE FROM durable.activity_tasks WHERE task_id = $1", 1, {INT8OID}};
	Datum		values[1] = {Int64GetDatum(task_id)};

	engine_exec(&plan, values, NULL, 0);
}

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

Datum
durable_complete_activity(PG_FUNCTION_ARGS)
{
	char	   *token = required_token(fcinfo);
	Jsonb	   *result = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	EngineScope scope;
	ClaimedAttempt a;
	bool		current;

	engine_enter(&scope);
	current = lock_current_attempt(token, &a);
	if (current)
	{
		JsonBuf		jb;

		append_started(&a);
		json_begin(&jb);
		json_add_int(&jb, "handle", a.handle);
		json_add_int(&jb, "attempt", a.attempt);
		if (result)
			json_add_jsonb(&jb, "result", result);
		engine_append_event(&a.run, "ActivityTaskCompleted", json_end(&jb),
							GetCurrentTimestamp());
		delete_task(a.task_id);
		engine_request_workflow_task(&a.run);
	}
	engine_leave(&scope);
	PG_RETURN_BOOL(current);
}

Datum
durable_fail_activity(PG_FUNCTION_ARGS)
{
	static EnginePlan retry_plan = {NULL,
		"UPDATE durable.activity_tasks SET attempt = attempt + 1, status = 'backoff',"
		" ready_at = $2, started_at = NULL, worker = NULL, last_failure = $3"
		" WHERE task_id = $1",
	3, {INT8OID, TIMESTAMPTZOID, JSONBOID}};
	char	   *token = required_token(fcinfo);
	char	   *error;
	bool		retryable = PG_ARGISNULL(2) ? true : PG_GETARG_BOOL(2);
	EngineScope scope;
	ClaimedAttempt a;
	bool		current;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("activity error message must not be null"),
				 errhint("Describe why the activity failed; it is recorded in the history.")));
	error = text_to_cstring(PG_GETARG_TEXT_PP(1));

	engine_enter(&scope);
	current = lock_current_attempt(token, &a);
	if (current)
	{
		RetryPolicy policy;
		bool		will_retry;
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz next_at = 0;
		JsonBuf		jb;
		Jsonb	   *failure;

		retry_policy_from_jsonb(a.retry_policy, &policy);
		will_retry = retryable &&
			(policy.maximum_attempts == 0 || a.attempt < policy.maximum_attempts);
		if (will_retry)
			next_at = now + (TimestampTz) (backoff_seconds(&policy, a.attempt) * USECS_PER_SEC);

		append_started(&a);
		json_begin(&jb);
		json_add_int(&jb, "handle", a.handle);
		json_add_int(&jb, "attempt", a.attempt);
		json_add_str(&jb, "activity", a.activity);
		json_add_str(&jb, "error", error);
		json_add_bool(&jb, "retryable", retryable);
		if (will_retry)
			json_add_time(&jb, "next_attempt_at", next_at);
		else
			json_add_bool(&jb, "final", true);
		failure = json_end(&jb);
		engine_append_event(&a.run, "ActivityTaskFailed", failure, now);

		if (will_retry)
		{
			Datum		values[3] = {Int64GetDatum(a.task_id),
			TimestampTzGetDatum(next_at), JsonbPGetDatum(failure)};

			engine_exec(&retry_plan, values, NULL, 0);
			/* the run row holds the new next_event_id; no workflow task */
			{
				static EnginePlan save = {NULL,
					"UPDATE durable.runs SET next_event_id = $2 WHERE run_id = $1",
				2, {UUIDOID, INT8OID}};
				Datum		v[2] = {a.run.run_id, Int64GetDatum(a.run.next_event_id)};

				engine_exec(&save, v, NULL, 0);
			}
			/* the timer queue makes it ready again after its backoff */
			timer_schedule(&a.run, "retry", 0, a.task_id, next_at);
		}
		else
		{
			delete_task(a.task_id);
			engine_request_workflow_task(&a.run);
		}
	}
	engine_leave(&scope);
	PG_RETURN_BOOL(current);
}
