/*-------------------------------------------------------------------------
 *
 * activity.c
 *	  Activity tasks: scheduling them (from a workflow task), their
 *	  timeouts and cancellation, and the SQL API of activity workers:
 *	  poll_activity(), complete_activity(), fail_activity(),
 *	  heartbeat_activity(), cancel_activity().
 *
 * A task row lives from scheduling until the activity completes, fails for
 * good, times out for good or is canceled; each attempt is claimed by one
 * poller (FOR UPDATE SKIP LOCKED) and gets its own token.  A waiting poller
 * sleeps on its queue's condition variable, broadcast when a transaction
 * that made a task ready commits.  Retry backoffs and the four timeouts are
 * timers of the timer queue (timers.c).
 *
 * History: each attempt that ends is recorded as ActivityTaskStarted
 * followed by ActivityTaskCompleted, ActivityTaskFailed, ActivityTaskTimedOut
 * or ActivityTaskCanceled (Temporal writes Started lazily too, so a poll
 * costs no history write).
 *
 * Lock order, everywhere: the run row, then the task row, then its timers.
 * Heartbeats, which do not take the run, take the task then its timers.
 *
 *-------------------------------------------------------------------------
 */
#include "activity.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define MAX_POLL_TASKS				1000

PG_FUNCTION_INFO_V1(durable_poll_activity);
PG_FUNCTION_INFO_V1(durable_complete_activity);
PG_FUNCTION_INFO_V1(durable_fail_activity);
PG_FUNCTION_INFO_V1(durable_heartbeat_activity);
PG_FUNCTION_INFO_V1(durable_cancel_activity);
PG_FUNCTION_INFO_V1(durable_complete_and_poll);

static TimestampTz
plus_seconds(TimestampTz t, double seconds)
{
	return t + (TimestampTz) (seconds * USECS_PER_SEC);
}

/* Starts one of an attempt's timeouts, if the options set it. */
static void
start_timeout(Datum run_id, int64 task_id, int32 attempt, Jsonb *timeouts,
			  const char *timeout, TimestampTz from)
{
	static EnginePlan plan = {NULL,
		"INSERT INTO durable.timers (run_id, kind, task_id, attempt, timeout, fire_at)"
		" VALUES ($1, 'activity_timeout', $2, $3, $4::durable.activity_timeout, $5)",
	5, {UUIDOID, INT8OID, INT4OID, TEXTOID, TIMESTAMPTZOID}};
	double		seconds = activity_timeout_seconds(timeouts, timeout);
	TimestampTz fire_at;
	Datum		values[5];

	if (seconds <= 0)
		return;
	fire_at = plus_seconds(from, seconds);
	values[0] = run_id;
	values[1] = Int64GetDatum(task_id);
	values[2] = Int32GetDatum(attempt);
	values[3] = CStringGetTextDatum(timeout);
	values[4] = TimestampTzGetDatum(fire_at);
	engine_exec(&plan, values, NULL, 0);
	durable_timer_added_at_commit(fire_at);
}

/*
 * Drops a task's timers: those of the attempt that ended, or (all) every
 * one, the retry and schedule_to_close included.  A task with no timeouts
 * that is not waiting out a retry backoff has none: no statement then.
 */
static void
drop_task_timers(ClaimedAttempt *a, bool all)
{
	static EnginePlan attempt_plan = {NULL,
		"DELETE FROM durable.timers WHERE task_id = $1 AND kind = 'activity_timeout'"
		" AND timeout <> 'schedule_to_close'",
	1, {INT8OID}};
	static EnginePlan all_plan = {NULL,
	"DELETE FROM durable.timers WHERE task_id = $1", 1, {INT8OID}};
	Datum		values[1] = {Int64GetDatum(a->task_id)};

	if ((a->timeouts == NULL || JB_ROOT_COUNT(a->timeouts) == 0) &&
		strcmp(a->status, "backoff") != 0)
		return;
	engine_exec(all ? &all_plan : &attempt_plan, values, NULL, 0);
}

/* ---- eager dispatch ---- */

/* An activity handed straight to complete_and_poll()'s caller. */
typedef struct EagerTask
{
	int64		task_id;
	char	   *workflow_id;
	char	   *activity;
	Jsonb	   *input;
	pg_uuid_t	run_id;
	int32		handle;
	bool		has_timeouts;
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
	int			slots;			/* tasks it may still take */
	int			limited;		/* -1: not looked up yet; else 0 or 1 */
	int			ntasks;
	EagerTask  *tasks;
} EagerOffer;

static EagerOffer *eager_offer = NULL;

/* Activities handed out by eager dispatch since this backend last claimed from a queue. */
static int	eager_streak = 0;

/*
 * Does this queue have limits (a durable.task_queues row)?  The answer for
 * the last queue asked about is remembered until configure_task_queue()
 * changes any queue's limits (a version in shared memory, bumped at the
 * commit of such a change and read before looking).
 */
static bool
queue_has_limits(const char *queue)
{
	static EnginePlan plan = {NULL,
	"SELECT 1 FROM durable.task_queues WHERE task_queue = $1", 1, {TEXTOID}};
	static char known_queue[NAMEDATALEN * 2];
	static uint64 known_version = 0;
	static bool known_limited;
	uint64		version = durable_queue_limits_version();
	Datum		values[1];

	if (version == known_version && strcmp(queue, known_queue) == 0)
		return known_limited;
	values[0] = CStringGetTextDatum(queue);
	known_limited = engine_exec(&plan, values, NULL, 1) > 0;
	if (strlen(queue) < sizeof(known_queue))
	{
		strcpy(known_queue, queue);
		known_version = version;
	}
	return known_limited;
}

/* May an activity scheduled on task_queue go to the caller of complete_and_poll()? */
static bool
eager_offer_takes(const char *task_queue)
{
	EagerOffer *offer = eager_offer;

	if (offer == NULL || offer->slots == 0 || strcmp(task_queue, offer->queue) != 0)
		return false;
	if (offer->limited < 0)
		offer->limited = queue_has_limits(task_queue) ? 1 : 0;
	return offer->limited == 0;
}

static void
eager_offer_add(int64 task_id, LockedRun *run, int32 handle, const char *activity,
				Jsonb *input, bool has_timeouts, TimestampTz started_at)
{
	EagerOffer *offer = eager_offer;
	MemoryContext old = MemoryContextSwitchTo(offer->cxt);
	EagerTask  *t = &offer->tasks[offer->ntasks++];

	t->task_id = task_id;
	t->workflow_id = pstrdup(run->workflow_id);
	t->activity = pstrdup(activity);
	t->input = input ? DatumGetJsonbPCopy(JsonbPGetDatum(input)) : NULL;
	memcpy(&t->run_id, DatumGetUUIDP(run->run_id), sizeof(pg_uuid_t));
	t->handle = handle;
	t->has_timeouts = has_timeouts;
	t->started_at = started_at;
	offer->slots--;
	MemoryContextSwitchTo(old);
}

/* How many eager tasks are offered so far (see activity_eager_discard). */
int
activity_eager_mark(void)
{
	return eager_offer ? eager_offer->ntasks : 0;
}

/* The work that offered the tasks after mark was rolled back: take them back. */
void
activity_eager_discard(int mark)
{
	if (eager_offer == NULL)
		return;
	eager_offer->slots += eager_offer->ntasks - mark;
	eager_offer->ntasks = mark;
}

/* ---- scheduling, from a workflow task ---- */

/* The statement that records a new activity: its events, then its task row. */
#define EVENTS_CTE(rows) \
	"WITH e AS (INSERT INTO durable.history" \
	" (run_id, event_id, event_time, event_type, details) VALUES " rows ") "
#define ONE_EVENT	"($1, $12, $13, $14, $15)"
#define TWO_EVENTS	ONE_EVENT ", ($1, $12 + 1, $16, $17, $18)"
#define INSERT_TASK(status_columns, status_values) \
	"INSERT INTO durable.activity_tasks (run_id, handle, workflow_id, activity," \
	" task_queue, input, retry_policy, timeouts, priority, scheduled_at, ready_at" \
	status_columns ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10" \
	status_values ") RETURNING task_id"
#define SAVE_RUN(n) \
	", u AS (UPDATE durable.runs SET next_event_id = $12 + " #n " WHERE run_id = $1) "
#define READY_TASK		INSERT_TASK("", "")
#define STARTED_TASK	INSERT_TASK(", status, started_at, worker", ", 'started', $10, $11")
#define SCHEDULE_ARGS \
	18, {UUIDOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, JSONBOID, \
		 INT4OID, TIMESTAMPTZOID, TEXTOID, INT8OID, \
		 TIMESTAMPTZOID, TEXTOID, JSONBOID, TIMESTAMPTZOID, TEXTOID, JSONBOID}

/*
 * Appends the events (one or two) and inserts the task row of a new
 * activity, in one statement: ready for the queue's pollers, or already
 * started by complete_and_poll()'s caller (eager dispatch).  With save_run,
 * the same statement records the run's next_event_id (the caller has no
 * more events to append).  Returns the task_id.
 */
static int64
insert_task(LockedRun *run, int32 handle, const char *activity,
			const char *task_queue, Jsonb *input, ActivityOptions *options,
			TimestampTz now, bool eager, int nevents, NewEvent *events, bool save_run)
{
	/* [two events][eager][save_run] */
	static EnginePlan plans[2][2][2] = {
		{{{NULL, EVENTS_CTE(ONE_EVENT) READY_TASK, SCHEDULE_ARGS},
		{NULL, EVENTS_CTE(ONE_EVENT) SAVE_RUN(1) READY_TASK, SCHEDULE_ARGS}},
		{{NULL, EVENTS_CTE(ONE_EVENT) STARTED_TASK, SCHEDULE_ARGS},
		{NULL, EVENTS_CTE(ONE_EVENT) SAVE_RUN(1) STARTED_TASK, SCHEDULE_ARGS}}},
		{{{NULL, EVENTS_CTE(TWO_EVENTS) READY_TASK, SCHEDULE_ARGS},
		{NULL, EVENTS_CTE(TWO_EVENTS) SAVE_RUN(2) READY_TASK, SCHEDULE_ARGS}},
		{{NULL, EVENTS_CTE(TWO_EVENTS) STARTED_TASK, SCHEDULE_ARGS},
		{NULL, EVENTS_CTE(TWO_EVENTS) SAVE_RUN(2) STARTED_TASK, SCHEDULE_ARGS}}}};
	Datum		values[18];
	char		nulls[18];
	bool		isnull;
	int64		task_id;

	Assert(nevents == 1 || nevents == 2);
	memset(nulls, ' ', sizeof(nulls));
	memset(values, 0, sizeof(values));
	values[0] = run->run_id;
	values[1] = Int32GetDatum(handle);
	values[2] = CStringGetTextDatum(run->workflow_id);
	values[3] = CStringGetTextDatum(activity);
	values[4] = CStringGetTextDatum(task_queue);
	values[5] = jsonb_datum_or_null(input, &isnull);
	if (isnull)
		nulls[5] = 'n';
	values[6] = JsonbPGetDatum(options->retry_policy);
	values[7] = JsonbPGetDatum(options->timeouts);
	values[8] = Int32GetDatum(options->priority);
	values[9] = TimestampTzGetDatum(now);
	if (eager && eager_offer->worker)
		values[10] = CStringGetTextDatum(eager_offer->worker);
	else
		nulls[10] = 'n';
	values[11] = Int64GetDatum(run->next_event_id);
	for (int k = 0; k < 2; k++)
	{
		if (k < nevents)
		{
			values[12 + 3 * k] = TimestampTzGetDatum(events[k].when);
			values[13 + 3 * k] = CStringGetTextDatum(events[k].type);
			values[14 + 3 * k] = JsonbPGetDatum(events[k].details);
		}
		else
			nulls[12 + 3 * k] = nulls[13 + 3 * k] = nulls[14 + 3 * k] = 'n';
	}
	engine_exec(&plans[nevents - 1][eager ? 1 : 0][save_run ? 1 : 0], values, nulls, 1);
	task_id = DatumGetInt64(engine_get(0, 1, &isnull));
	engine_events_appended(run, nevents, events);
	return task_id;
}

/*
 * Records ActivityTaskScheduled (after "before", if given, in the same
 * statement) and inserts the activity's task; with save_run, that statement
 * also records the run's next_event_id (the caller appends nothing after).
 */
void
activity_schedule(LockedRun *run, int32 handle, const char *activity,
				  const char *task_queue, Jsonb *input,
				  ActivityOptions *options, TimestampTz now, const NewEvent *before,
				  bool save_run)
{
	bool		eager = eager_offer_takes(task_queue);
	int64		task_id;
	JsonBuf		jb;
	NewEvent	events[2];
	int			n = 0;

	json_begin(&jb);
	json_add_int(&jb, "handle", handle);
	json_add_str(&jb, "activity", activity);
	json_add_str(&jb, "task_queue", task_queue);
	json_add_jsonb(&jb, "input", input);
	json_add_jsonb(&jb, "retry_policy", options->retry_policy);
	if (JB_ROOT_COUNT(options->timeouts) > 0)
		json_add_jsonb(&jb, "timeouts", options->timeouts);
	if (options->priority != 0)
		json_add_int(&jb, "priority", options->priority);
	if (before)
		events[n++] = *before;
	events[n].type = "ActivityTaskScheduled";
	events[n].details = json_end(&jb);
	events[n].when = now;
	task_id = insert_task(run, handle, activity, task_queue, input, options, now, eager,
						  n + 1, events, save_run);

	start_timeout(run->run_id, task_id, 0, options->timeouts, "schedule_to_close", now);
	if (eager)
	{
		/* started at once: its attempt's timeouts run from now */
		start_timeout(run->run_id, task_id, 1, options->timeouts, "start_to_close", now);
		start_timeout(run->run_id, task_id, 1, options->timeouts, "heartbeat", now);
		eager_offer_add(task_id, run, handle, activity, input,
						JB_ROOT_COUNT(options->timeouts) > 0, now);
		return;
	}
	start_timeout(run->run_id, task_id, 1, options->timeouts, "schedule_to_start", now);
	if (task_queue[0] == '\0')
		sql_activity_maybe_due();	/* scheduled by the worker, which runs it */
	else
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

/* ---- the attempt a token or a timer names ---- */


/* The columns of a task that ClaimedAttempt holds (with a table alias prefix). */
#define TASK_COLUMNS_OF(p) \
	p "handle, " p "attempt, " p "status, " p "activity, " p "task_queue, " \
	p "worker, " p "started_at, " p "retry_policy, " p "timeouts, " \
	p "cancel_requested, " p "input"

/* Fills a from the current SPI result's first row, TASK_COLUMNS from first_col on. */
static void
fill_attempt(ClaimedAttempt *a, int64 task_id, int first_col)
{
	bool		isnull;
	Datum		d;
	int			c = first_col;

	a->task_id = task_id;
	a->handle = DatumGetInt32(engine_get(0, c, &isnull));
	a->attempt = DatumGetInt32(engine_get(0, c + 1, &isnull));
	a->status = engine_get_text(0, c + 2);
	a->activity = engine_get_text(0, c + 3);
	a->task_queue = engine_get_text(0, c + 4);
	a->worker = engine_get_text(0, c + 5);
	d = engine_get(0, c + 6, &isnull);
	a->started_at = isnull ? 0 : DatumGetTimestampTz(d);
	a->retry_policy = DatumGetJsonbP(engine_get(0, c + 7, &isnull));
	a->timeouts = DatumGetJsonbP(engine_get(0, c + 8, &isnull));
	a->cancel_requested = DatumGetBool(engine_get(0, c + 9, &isnull));
	d = engine_get(0, c + 10, &isnull);
	a->input = isnull ? NULL : DatumGetJsonbP(d);
}

/* Locks the task row (its run already locked by the caller) and reads it. */
bool
activity_lock_task(int64 task_id, ClaimedAttempt *a)
{
	static EnginePlan plan = {NULL,
		"SELECT " TASK_COLUMNS_OF("") " FROM durable.activity_tasks WHERE task_id = $1 FOR UPDATE",
	1, {INT8OID}};
	Datum		values[1] = {Int64GetDatum(task_id)};

	if (engine_exec(&plan, values, NULL, 1) == 0)
		return false;
	fill_attempt(a, task_id, 1);
	return true;
}

/*
 * Locks the run, then the task (always in that order: the worker locks
 * runs first too; FOR UPDATE OF locks in the order it names them), in one
 * statement, and checks the token's attempt is the current started one of
 * an open run.
 */
static bool
lock_current_attempt(const char *token, ClaimedAttempt *a)
{
	static EnginePlan plan = {NULL,
		"SELECT " RUN_COLUMNS_OF("r.") ", " TASK_COLUMNS_OF("t.")
		" FROM durable.activity_tasks t JOIN durable.runs r ON r.run_id = t.run_id"
		" WHERE t.task_id = $1 FOR UPDATE OF r, t",
	1, {INT8OID}};
	Datum		values[1];
	int64		task_id;
	int32		attempt;

	token_parse(token, &task_id, &attempt);
	values[0] = Int64GetDatum(task_id);
	if (engine_exec(&plan, values, NULL, 1) == 0)
		return false;
	engine_fill_locked_run(&a->run, 1);
	fill_attempt(a, task_id, RUN_NCOLUMNS + 1);
	return strcmp(a->run.status, "running") == 0 && a->attempt == attempt &&
		strcmp(a->status, "started") == 0;
}

/* ActivityTaskStarted of an attempt that ends now (Temporal writes it late too). */
static void
started_event(ClaimedAttempt *a, NewEvent *event)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_int(&jb, "handle", a->handle);
	json_add_int(&jb, "attempt", a->attempt);
	json_add_str(&jb, "worker", a->worker);
	event->type = "ActivityTaskStarted";
	event->details = json_end(&jb);
	event->when = a->started_at;
}

void
activity_append_started(ClaimedAttempt *a)
{
	NewEvent	started;

	started_event(a, &started);
	engine_append_events(&a->run, 1, &started);
}

/* ActivityTaskStarted and the event that ends the attempt, in one statement. */
void
activity_append_ended(ClaimedAttempt *a, const char *event_type, Jsonb *details,
					  TimestampTz when)
{
	NewEvent	events[2];

	started_event(a, &events[0]);
	events[1].type = event_type;
	events[1].details = details;
	events[1].when = when;
	engine_append_events(&a->run, 2, events);
}

static void
delete_task(int64 task_id)
{
	static EnginePlan plan = {NULL,
	"DELETE FROM durable.activity_tasks WHERE task_id = $1", 1, {INT8OID}};
	Datum		values[1] = {Int64GetDatum(task_id)};

	engine_exec(&plan, values, NULL, 0);
}

/*
 * The task row of an activity that is over is gone: what follows.  The
 * workflow task that follows may run right here when a client's role
 * (caller) ended the activity (see replay_task_inline); InvalidOid: the
 * worker runs it.
 */
static void
finish_activity(ClaimedAttempt *a, Oid caller)
{
	/* one fewer in flight: a poller held back by max_in_flight may go */
	if (a->task_queue[0] != '\0')
		durable_wake_queue_at_commit(a->task_queue);
	drop_task_timers(a, true);
	if (!OidIsValid(caller) || !replay_task_inline(&a->run, caller))
		engine_request_workflow_task(&a->run);
}

/*
 * The activity is over (completed, failed, timed out or canceled for good).
 * With a caller (a client's role), the workflow task that follows may run
 * right here (replay_task_inline); else, or if it does not, the worker runs
 * it.
 */
void
activity_resolve(ClaimedAttempt *a, Oid caller)
{
	delete_task(a->task_id);
	finish_activity(a, caller);
}

/*
 * The current attempt ended without a result (it failed or timed out):
 * records event_type with the details built so far, then either schedules
 * the next attempt after its backoff or resolves the activity as failed.
 */
void
activity_attempt_unsuccessful(ClaimedAttempt *a, const char *event_type, JsonBuf *jb,
					 bool retryable, const char *error_type, TimestampTz now)
{
	static EnginePlan retry_plan = {NULL,
		"UPDATE durable.activity_tasks SET attempt = attempt + 1, status = 'backoff',"
		" ready_at = $2, started_at = NULL, worker = NULL, last_failure = $3"
		" WHERE task_id = $1",
	3, {INT8OID, TIMESTAMPTZOID, JSONBOID}};
	RetryPolicy policy;
	bool		will_retry;
	TimestampTz next_at = 0;
	Jsonb	   *details;

	retry_policy_from_jsonb(a->retry_policy, &policy);
	will_retry = retryable && !retry_policy_stops(&policy, error_type) &&
		(policy.maximum_attempts == 0 || a->attempt < policy.maximum_attempts);
	if (will_retry)
	{
		next_at = plus_seconds(now, backoff_seconds(&policy, a->attempt));
		json_add_time(jb, "next_attempt_at", next_at);
	}
	else
		json_add_bool(jb, "final", true);
	details = json_end(jb);
	engine_append_event(&a->run, event_type, details, now);

	if (!will_retry)
	{
		activity_resolve(a, InvalidOid);
		return;
	}
	{
		Datum		values[3] = {Int64GetDatum(a->task_id),
		TimestampTzGetDatum(next_at), JsonbPGetDatum(details)};

		engine_exec(&retry_plan, values, NULL, 0);
	}
	drop_task_timers(a, false);
	engine_save_next_event_id(&a->run);
	if (a->task_queue[0] != '\0')
		durable_wake_queue_at_commit(a->task_queue);
	/* the timer queue makes it ready again after its backoff */
	timer_schedule(&a->run, "retry", 0, a->task_id, next_at);
}

/* ---- timeouts, fired by the timer queue ---- */

/*
 * One of an activity's timeouts fired (its run locked by the caller).
 * schedule_to_start and schedule_to_close end the activity for good, as in
 * Temporal; start_to_close and heartbeat end the attempt, retried by policy.
 * A timer of an attempt that is no longer current changes nothing.  Claims
 * (deletes) the timer row itself, after locking the task; returns false when
 * it did not fire.
 */
bool
activity_fire_timeout(LockedRun *run, int64 timer_id, int64 task_id, int32 attempt,
					  const char *timeout, TimestampTz now)
{
	static EnginePlan claim = {NULL,
		"DELETE FROM durable.timers WHERE timer_id = $1 AND fire_at <= $2",
	2, {INT8OID, TIMESTAMPTZOID}};
	Datum		values[2] = {Int64GetDatum(timer_id), TimestampTzGetDatum(now)};
	ClaimedAttempt a;
	bool		whole_activity = strcmp(timeout, "schedule_to_close") == 0;
	bool		before_start = strcmp(timeout, "schedule_to_start") == 0;
	JsonBuf		jb;

	memcpy(&a.run, run, sizeof(LockedRun));
	if (!activity_lock_task(task_id, &a))
		return false;
	/* after the task, the timer: a heartbeat may have moved it meanwhile */
	if (engine_exec(&claim, values, NULL, 0) == 0)
		return false;
	if (!whole_activity &&
		(a.attempt != attempt ||
		 strcmp(a.status, before_start ? "scheduled" : "started") != 0))
		return false;

	if (strcmp(a.status, "started") == 0)
		activity_append_started(&a);
	json_begin(&jb);
	json_add_int(&jb, "handle", a.handle);
	json_add_int(&jb, "attempt", a.attempt);
	json_add_str(&jb, "activity", a.activity);
	json_add_str(&jb, "timeout", timeout);
	json_add_str(&jb, "error", psprintf("%s timeout", timeout));
	if (whole_activity || before_start)
	{
		json_add_bool(&jb, "final", true);
		engine_append_event(&a.run, "ActivityTaskTimedOut", json_end(&jb), now);
		activity_resolve(&a, InvalidOid);
	}
	else
		activity_attempt_unsuccessful(&a, "ActivityTaskTimedOut", &jb, true, NULL, now);
	memcpy(run, &a.run, sizeof(LockedRun));
	return true;
}

/* ---- cancellation, requested by workflow code ---- */

/*
 * Asks for the activity to stop.  One that no worker holds is canceled at
 * once; a running one learns it from its heartbeat.  Returns true when the
 * activity was canceled now (the workflow then needs another task to see it).
 */
bool
activity_request_cancel(LockedRun *run, int32 handle, TimestampTz now)
{
	static EnginePlan find = {NULL,
		"UPDATE durable.activity_tasks SET cancel_requested = true"
		" WHERE run_id = $1 AND handle = $2 RETURNING task_id",
	2, {UUIDOID, INT4OID}};
	Datum		values[2] = {run->run_id, Int32GetDatum(handle)};
	ClaimedAttempt a;
	JsonBuf		jb;
	bool		isnull;

	json_begin(&jb);
	json_add_int(&jb, "handle", handle);
	engine_append_event(run, "ActivityTaskCancelRequested", json_end(&jb), now);
	if (engine_exec(&find, values, NULL, 1) == 0)
		return false;			/* already over */
	memcpy(&a.run, run, sizeof(LockedRun));
	if (!activity_lock_task(DatumGetInt64(engine_get(0, 1, &isnull)), &a) ||
		strcmp(a.status, "started") == 0)
		return false;

	json_begin(&jb);
	json_add_int(&jb, "handle", handle);
	engine_append_event(&a.run, "ActivityTaskCanceled", json_end(&jb), now);
	drop_task_timers(&a, true);
	delete_task(a.task_id);
	memcpy(run, &a.run, sizeof(LockedRun));
	return true;
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

#define CLAIM_COLUMNS 9

/*
 * The attempts this backend handed out last, with what completing one
 * needs: a worker usually completes on the connection it polled with
 * (complete_and_poll), and then the token needs no HMAC to be checked and
 * the run is locked by its id, without reading the task row first.  Whether
 * the attempt is still the current one is checked by the statement that
 * ends it, as always.  Attempts with timeouts (which have timers to drop)
 * or long names are not kept: they take the general path.
 */
#define HANDED_OUT		8
#define HANDED_OUT_TOKEN_LEN	80

typedef struct HandedOut
{
	char		token[HANDED_OUT_TOKEN_LEN];	/* "" : free */
	int64		task_id;
	int32		attempt;
	pg_uuid_t	run_id;
	int32		handle;
	char		task_queue[NAMEDATALEN];
	bool		has_worker;
	char		worker[NAMEDATALEN];
	TimestampTz started_at;
} HandedOut;

static HandedOut handed_out[HANDED_OUT];
static int	next_handed_out = 0;

/* An attempt that this function hands out. */
typedef struct Attempt
{
	int64		task_id;
	int32		attempt;
	const char *workflow_id;
	const char *activity;
	Jsonb	   *input;
	Datum		heartbeat_details;
	bool		no_details;
	/* for handed_out */
	Datum		run_id;
	int32		handle;
	const char *task_queue;
	const char *worker;
	TimestampTz started_at;
	bool		has_timeouts;
} Attempt;

static void
remember_handed_out(const char *token, Attempt *t)
{
	HandedOut  *h = &handed_out[next_handed_out++ % HANDED_OUT];

	h->token[0] = '\0';
	if (t->has_timeouts || strlen(token) >= HANDED_OUT_TOKEN_LEN ||
		strlen(t->task_queue) >= NAMEDATALEN ||
		(t->worker && strlen(t->worker) >= NAMEDATALEN))
		return;
	h->task_id = t->task_id;
	h->attempt = t->attempt;
	memcpy(&h->run_id, DatumGetUUIDP(t->run_id), sizeof(pg_uuid_t));
	h->handle = t->handle;
	strcpy(h->task_queue, t->task_queue);
	h->has_worker = t->worker != NULL;
	if (t->worker)
		strcpy(h->worker, t->worker);
	h->started_at = t->started_at;
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
	char	   *token = token_make(t->task_id, t->attempt);

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
	if (engine_exec(&limits, values, NULL, 1) == 0)
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
			int max_tasks, long *retry_ms)
{
	static EnginePlan claim = {NULL,
		"UPDATE durable.activity_tasks t"
		"    SET status = 'started', started_at = $4, worker = $3"
		"  WHERE t.task_id = ANY (ARRAY("
		"    SELECT task_id FROM durable.activity_tasks"
		"     WHERE task_queue = $1 AND status = 'scheduled' AND ready_at <= $4"
		"     ORDER BY priority DESC, ready_at, task_id LIMIT $2 FOR UPDATE SKIP LOCKED))"
		" RETURNING t.task_id, t.attempt, t.workflow_id, t.activity, t.input,"
		"           t.heartbeat_details, t.run_id, t.timeouts, t.handle",
	4, {TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID}};
	EngineScope scope;
	Datum		values[4];
	char		nulls[4] = "    ";
	TimestampTz now = GetCurrentTimestamp();
	double		tokens;
	int			n;

	engine_enter(&scope);
	max_tasks = tasks_allowed(queue, max_tasks, now, retry_ms, &tokens);
	if (max_tasks == 0)
	{
		engine_leave(&scope);
		return 0;
	}
	values[0] = CStringGetTextDatum(queue);
	values[1] = Int32GetDatum(max_tasks);
	values[2] = worker ? CStringGetTextDatum(worker) : (Datum) 0;
	if (!worker)
		nulls[2] = 'n';
	values[3] = TimestampTzGetDatum(now);
	n = engine_exec(&claim, values, nulls, 0);
	eager_streak = 0;			/* the queue had its turn */
	if (n > 0)
	{
		/* read the claimed rows before other queries of ours run */
		Datum	   *rows = palloc(sizeof(Datum) * CLAIM_COLUMNS * n);
		bool	   *rownulls = palloc(sizeof(bool) * CLAIM_COLUMNS * n);

		durable_wake_queue_at_abort(queue);
		for (int i = 0; i < n; i++)
			for (int col = 0; col < CLAIM_COLUMNS; col++)
				rows[i * CLAIM_COLUMNS + col] =
					engine_get(i, col + 1, &rownulls[i * CLAIM_COLUMNS + col]);
		for (int i = 0; i < n; i++)
		{
			Datum	   *row = &rows[i * CLAIM_COLUMNS];
			bool	   *rownull = &rownulls[i * CLAIM_COLUMNS];
			int64		task_id = DatumGetInt64(row[0]);
			int32		attempt = DatumGetInt32(row[1]);
			Jsonb	   *timeouts = DatumGetJsonbP(row[7]);

			Attempt		t;

			start_timeout(row[6], task_id, attempt, timeouts, "start_to_close", now);
			start_timeout(row[6], task_id, attempt, timeouts, "heartbeat", now);
			t.task_id = task_id;
			t.attempt = attempt;
			t.workflow_id = TextDatumGetCString(row[2]);
			t.activity = TextDatumGetCString(row[3]);
			t.input = rownull[4] ? NULL : DatumGetJsonbP(row[4]);
			t.heartbeat_details = row[5];
			t.no_details = rownull[5];
			t.run_id = row[6];
			t.handle = DatumGetInt32(row[8]);
			t.task_queue = queue;
			t.worker = worker;
			t.started_at = now;
			t.has_timeouts = JB_ROOT_COUNT(timeouts) > 0;
			put_task(rsinfo, &t);
		}
		if (tokens >= 0)
			spend_tokens(queue, tokens - n, now);
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
	long		retry_ms;		/* out: when a rate limit allows more (-1) */
} ClaimRequest;

static bool
claim_some(void *arg)
{
	ClaimRequest *req = arg;

	return claim_tasks(req->rsinfo, req->queue, req->worker, req->max_tasks,
					   &req->retry_ms) > 0;
}

/*
 * The queue (argument "first"), worker (first + 1) and max_tasks (the one
 * after the next) of a poll, checked, into req.
 */
static void
poll_args(FunctionCallInfo fcinfo, int first, ClaimRequest *req)
{
	int			max_tasks_arg = first + (first == 0 ? 3 : 2);

	if (PG_ARGISNULL(first))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task queue must not be null")));
	check_task_queue_name(PG_GETARG_TEXT_PP(first));
	req->rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	req->queue = text_to_cstring(PG_GETARG_TEXT_PP(first));
	req->worker = PG_ARGISNULL(first + 1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(first + 1));
	req->max_tasks = PG_ARGISNULL(max_tasks_arg) ? 1 : PG_GETARG_INT32(max_tasks_arg);
	req->retry_ms = -1;
	if (req->max_tasks < 1 || req->max_tasks > MAX_POLL_TASKS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks must be between 1 and %d", MAX_POLL_TASKS)));
}

Datum
durable_poll_activity(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ClaimRequest args;
	const char *queue;
	const char *worker;
	long		wait_ms;
	int			max_tasks;
	TimestampTz deadline;
	WakeChannel *channel;

	durable_require_preload();
	poll_args(fcinfo, 0, &args);
	wait_ms = PG_ARGISNULL(2) ? 0 : interval_arg_ms(PG_GETARG_INTERVAL_P(2), "wait");
	wait_ms = Min(wait_ms, durable_max_poll_wait_ms);
	queue = args.queue;
	worker = args.worker;
	max_tasks = args.max_tasks;
	if (wait_ms > 0 && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("poll_activity cannot wait inside a REPEATABLE READ or SERIALIZABLE transaction"),
				 errhint("Poll in a READ COMMITTED transaction, or pass wait => '0'.")));

	InitMaterializedSRF(fcinfo, 0);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
	channel = durable_queue_channel(queue);

	if (wait_ms == 0)
	{
		ClaimRequest req = {rsinfo, queue, worker, max_tasks, -1};

		(void) claim_some(&req);
		return (Datum) 0;
	}

	durable_poller_waits(queue, 1);
	PG_TRY();
	{
		for (;;)
		{
			ClaimRequest req = {rsinfo, queue, worker, max_tasks, -1};
			uint64		seen = channel_broadcasts(channel);
			TimestampTz now;
			long		sleep_ms;

			/* an empty look leaves no lock behind while we sleep */
			if (engine_try_in_subxact(claim_some, &req))
				break;
			now = GetCurrentTimestamp();
			if (now >= deadline)
				break;
			sleep_ms = TimestampDifferenceMilliseconds(now, deadline);
			if (req.retry_ms >= 0)
				sleep_ms = Min(sleep_ms, req.retry_ms);
			channel_sleep(channel, seen, sleep_ms);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_FINALLY();
	{
		durable_poller_waits(queue, -1);
	}
	PG_END_TRY();
	return (Datum) 0;
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
 * The hot path of every activity worker, in two statements: the first locks
 * the run (and reads the task, unless this backend handed the attempt out
 * and knows it); the second deletes the task row, if the attempt is still
 * the current started one, and appends ActivityTaskStarted and
 * ActivityTaskCompleted only if it did.  The task row is never locked by
 * itself: that would cost a WAL record, and the run lock already keeps
 * everyone but a heartbeat (which the delete waits for) away from it.
 */
static bool
complete_attempt(const char *token, Jsonb *result)
{
	static EnginePlan lock = {NULL,
		"SELECT " RUN_COLUMNS_OF("r.") ", " TASK_COLUMNS_OF("t.")
		" FROM durable.activity_tasks t JOIN durable.runs r ON r.run_id = t.run_id"
		" WHERE t.task_id = $1 FOR UPDATE OF r",
	1, {INT8OID}};
	static EnginePlan end = {NULL,
		"WITH gone AS (DELETE FROM durable.activity_tasks"
		"   WHERE task_id = $1 AND attempt = $2 AND status = 'started' RETURNING run_id)"
		" INSERT INTO durable.history (run_id, event_id, event_time, event_type, details)"
		" SELECT gone.run_id, e.event_id, e.event_time, e.event_type, e.details"
		"   FROM gone, (VALUES ($3, $4, $5, $6), ($3 + 1, $7, $8, $9))"
		"     AS e (event_id, event_time, event_type, details)",
		9, {INT8OID, INT4OID, INT8OID, TIMESTAMPTZOID, TEXTOID, JSONBOID,
	TIMESTAMPTZOID, TEXTOID, JSONBOID}};
	EngineScope scope;
	ClaimedAttempt a;
	HandedOut  *h = find_handed_out(token);
	int64		task_id;
	int32		attempt;
	Datum		values[9];
	bool		current = false;

	engine_enter(&scope);
	if (h != NULL)
	{
		/* handed out by this backend: all but the run is known */
		pg_uuid_t  *run_id = palloc(sizeof(pg_uuid_t));

		memcpy(run_id, &h->run_id, sizeof(pg_uuid_t));
		task_id = h->task_id;
		attempt = h->attempt;
		memset(&a, 0, sizeof(a));
		a.task_id = task_id;
		a.attempt = attempt;
		a.handle = h->handle;
		a.status = "started";
		a.task_queue = pstrdup(h->task_queue);
		a.worker = h->has_worker ? pstrdup(h->worker) : NULL;
		a.started_at = h->started_at;
		current = engine_lock_run(UUIDPGetDatum(run_id), &a.run, false) &&
			strcmp(a.run.status, "running") == 0;
	}
	else
	{
		token_parse(token, &task_id, &attempt);
		values[0] = Int64GetDatum(task_id);
		if (engine_exec(&lock, values, NULL, 1) == 1)
		{
			engine_fill_locked_run(&a.run, 1);
			fill_attempt(&a, task_id, RUN_NCOLUMNS + 1);
			current = strcmp(a.run.status, "running") == 0 && a.attempt == attempt &&
				strcmp(a.status, "started") == 0;
		}
	}
	if (current)
	{
		NewEvent	events[2];
		JsonBuf		jb;

		started_event(&a, &events[0]);
		json_begin(&jb);
		json_add_int(&jb, "handle", a.handle);
		json_add_int(&jb, "attempt", a.attempt);
		if (result)
			json_add_jsonb(&jb, "result", result);
		events[1].type = "ActivityTaskCompleted";
		events[1].details = json_end(&jb);
		events[1].when = GetCurrentTimestamp();

		values[0] = Int64GetDatum(task_id);
		values[1] = Int32GetDatum(attempt);
		values[2] = Int64GetDatum(a.run.next_event_id);
		for (int k = 0; k < 2; k++)
		{
			values[3 + 3 * k] = TimestampTzGetDatum(events[k].when);
			values[4 + 3 * k] = CStringGetTextDatum(events[k].type);
			values[5 + 3 * k] = JsonbPGetDatum(events[k].details);
		}
		current = engine_exec(&end, values, NULL, 0) == 2;
		if (current)
		{
			engine_events_appended(&a.run, 2, events);
			finish_activity(&a, scope.caller);
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

	poll_args(fcinfo, 2, &req);
	offer.cxt = CurrentMemoryContext;
	offer.queue = req.queue;
	offer.worker = req.worker;
	offer.slots = Max(0, Min(req.max_tasks, durable_eager_dispatch_limit - eager_streak));
	offer.limited = -1;
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

		t.task_id = e->task_id;
		t.attempt = 1;
		t.workflow_id = e->workflow_id;
		t.activity = e->activity;
		t.input = e->input;
		t.heartbeat_details = (Datum) 0;
		t.no_details = true;
		t.run_id = UUIDPGetDatum(&e->run_id);
		t.handle = e->handle;
		t.task_queue = req.queue;
		t.worker = req.worker;
		t.started_at = e->started_at;
		t.has_timeouts = e->has_timeouts;
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
		JsonBuf		jb;

		activity_append_started(&a);
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
		"UPDATE durable.activity_tasks SET heartbeat_details = $3, last_heartbeat_at = $4"
		" WHERE task_id = $1 AND attempt = $2 AND status = 'started'"
		" RETURNING cancel_requested, timeouts",
	4, {INT8OID, INT4OID, JSONBOID, TIMESTAMPTZOID}};
	static EnginePlan move = {NULL,
		"UPDATE durable.timers SET fire_at = $3 WHERE task_id = $1 AND attempt = $2"
		" AND kind = 'activity_timeout' AND timeout = 'heartbeat'",
	3, {INT8OID, INT4OID, TIMESTAMPTZOID}};
	char	   *token = required_token(fcinfo);
	Jsonb	   *details = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	TimestampTz now = GetCurrentTimestamp();
	EngineScope scope;
	int64		task_id;
	int32		attempt;
	Datum		values[4];
	char		nulls[4] = "    ";
	bool		stop = true;

	engine_enter(&scope);
	token_parse(token, &task_id, &attempt);
	values[0] = Int64GetDatum(task_id);
	values[1] = Int32GetDatum(attempt);
	values[2] = details ? JsonbPGetDatum(details) : (Datum) 0;
	nulls[2] = details ? ' ' : 'n';
	values[3] = TimestampTzGetDatum(now);
	if (engine_exec(&beat, values, nulls, 1) == 1)
	{
		bool		isnull;
		double		seconds;

		stop = DatumGetBool(engine_get(0, 1, &isnull));
		seconds = activity_timeout_seconds(DatumGetJsonbP(engine_get(0, 2, &isnull)),
										   "heartbeat");
		if (seconds > 0)
		{
			values[2] = TimestampTzGetDatum(plus_seconds(now, seconds));
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
	current = lock_current_attempt(token, &a);
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
