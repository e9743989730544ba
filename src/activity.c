/*-------------------------------------------------------------------------
 *
 * activity.c
 *	  Activity tasks: scheduling them (from a workflow task), their
 *	  timeouts and cancellation, and how an attempt ends (the history it
 *	  records, its retry or its resolution).  What activity workers call
 *	  (poll_activity() and the rest) is activity_workers.c.
 *
 * A task row lives from scheduling until the activity completes, fails for
 * good, times out for good or is canceled; each attempt is claimed by one
 * poller (FOR UPDATE SKIP LOCKED) and gets its own token.  A waiting poller
 * sleeps on its queue's condition variable, broadcast when a transaction
 * that made a task ready commits.  Retry backoffs and three of the four
 * timeouts are timers of the timer queue (timers.c); start_to_close, which
 * nearly every activity has, is a column of the task row that the claim
 * sets, and the worker finds it as it finds due timers.
 *
 * History: each attempt that ends is recorded as ActivityTaskStarted
 * followed by ActivityTaskCompleted, ActivityTaskFailed, ActivityTaskTimedOut
 * or ActivityTaskCanceled (Temporal writes Started lazily too, so a poll
 * costs no history write), both in one row: the start is kept on the row of
 * the event that ends the attempt (durable.recorded_events), and
 * durable.history shows it as an event of its own.
 *
 * A completion or failure that finds its run held by someone else does not
 * wait for it: the end waits on the task row (status 'completed' or
 * 'failed') for the worker, which records it when it next holds the run
 * (activity_record_ended).
 *
 * Lock order, everywhere: the run row, then the task row, then its timers.
 * Heartbeats, which do not take the run, take the task then its timers;
 * completions and failures that find the run held take the task alone.
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

/* Starts one of an attempt's timeouts, if the options set it. */
void
activity_start_timeout(Datum run_id, int32 handle, int32 attempt, Jsonb *timeouts,
			  const char *timeout, TimestampTz from)
{
	static EnginePlan plan = {NULL,
		"INSERT INTO durable.timers (run_id, kind, handle, attempt, timeout, fire_at)"
		" VALUES ($1, 'activity_timeout', $2, $3, $4::durable.activity_timeout, $5)",
	5, {UUIDOID, INT4OID, INT4OID, TEXTOID, TIMESTAMPTZOID}};
	double		seconds = activity_timeout_seconds(timeouts, timeout);
	TimestampTz fire_at;
	Datum		values[5];

	if (seconds <= 0)
		return;
	fire_at = plus_seconds(from, seconds);
	values[0] = run_id;
	values[1] = Int32GetDatum(handle);
	values[2] = Int32GetDatum(attempt);
	values[3] = CStringGetTextDatum(timeout);
	values[4] = TimestampTzGetDatum(fire_at);
	engine_exec(&plan, values, NULL, 0);
	durable_timer_added_at_commit(fire_at);
}

/*
 * Drops a task's timers: those of the attempt that ended, or (all) every
 * one, the retry and schedule_to_close included.  A task with no timeouts
 * but start_to_close (see activity_has_timeout_timers) that is not waiting
 * out a retry backoff has none: no statement then.
 */
static void
drop_task_timers(ClaimedAttempt *a, bool all)
{
	static EnginePlan attempt_plan = {NULL,
		"DELETE FROM durable.timers WHERE run_id = $1 AND handle = $2"
		" AND kind = 'activity_timeout' AND timeout <> 'schedule_to_close'",
	2, {UUIDOID, INT4OID}};
	static EnginePlan all_plan = {NULL,
		"DELETE FROM durable.timers WHERE run_id = $1 AND handle = $2"
		" AND kind IN ('retry', 'activity_timeout')",
	2, {UUIDOID, INT4OID}};
	Datum		values[2] = {a->run.run_id, Int32GetDatum(a->handle)};

	if (!activity_has_timeout_timers(a->timeouts) && strcmp(a->status, "backoff") != 0)
		return;
	engine_exec(all ? &all_plan : &attempt_plan, values, NULL, 0);
}

/* ---- scheduling, from a workflow task ---- */

/*
 * Appends the events (one or two) and inserts the task row of a new
 * activity: ready for the queue's pollers, or already started by
 * complete_and_poll()'s caller (eager dispatch).  With save_run, the run's
 * next_event_id is recorded too (the caller has no more events to append).
 */
static ItemPointerData
insert_task(LockedRun *run, int32 handle, const char *activity,
			const char *task_queue, Jsonb *input, ActivityOptions *options,
			TimestampTz now, bool eager, int nevents, NewEvent *events, bool save_run)
{
	NewTask		task;
	ItemPointerData tid;

	engine_append_events(run, nevents, events);
	task.run_id = run->run_id;
	task.handle = handle;
	task.workflow_id = run->workflow_id;
	task.activity = activity;
	task.task_queue = task_queue;
	task.input = input;
	task.retry_policy = options->retry_policy;
	task.timeouts = options->timeouts;
	task.priority = options->priority;
	task.now = now;
	task.started = eager;
	task.worker = eager ? activity_eager_worker() : NULL;
	task.run_row = run->root;
	tid = engine_insert_task(&task);
	if (save_run)
		engine_save_next_event_id(run);
	return tid;
}

/*
 * Records ActivityTaskScheduled (after "before", if given, in the same
 * append) and inserts the activity's task; with save_run, also records the
 * run's next_event_id (the caller appends nothing after).
 */
void
activity_schedule(LockedRun *run, int32 handle, const char *activity,
				  const char *task_queue, Jsonb *input,
				  ActivityOptions *options, TimestampTz now, const NewEvent *before,
				  bool save_run)
{
	bool		eager = activity_eager_takes(task_queue);
	JsonBuf		jb;
	NewEvent	events[2];
	int			n = 0;
	ItemPointerData tid;

	json_begin(&jb);
	json_add_int(&jb, "handle", handle);
	json_add_str(&jb, "activity", activity);
	json_add_str(&jb, "task_queue", task_queue);
	json_add_jsonb(&jb, "input", input);
	/* the default policy is not recorded: durable.history shows it */
	if (JB_ROOT_COUNT(options->retry_policy) > 0)
		json_add_jsonb(&jb, "retry_policy", options->retry_policy);
	if (JB_ROOT_COUNT(options->timeouts) > 0)
		json_add_jsonb(&jb, "timeouts", options->timeouts);
	if (options->priority != 0)
		json_add_int(&jb, "priority", options->priority);
	if (before)
		events[n++] = *before;
	events[n] = NEW_EVENT("ActivityTaskScheduled", json_end(&jb), now);
	tid = insert_task(run, handle, activity, task_queue, input, options, now, eager,
					  n + 1, events, save_run);

	activity_start_timeout(run->run_id, handle, 0, options->timeouts, "schedule_to_close", now);
	if (eager)
	{
		/* started at once: its attempt's timeouts run from now (and the row's) */
		activity_start_timeout(run->run_id, handle, 1, options->timeouts, "heartbeat", now);
		activity_eager_add(run, handle, &tid, activity, input,
						   activity_has_timeout_timers(options->timeouts), now);
		return;
	}
	activity_start_timeout(run->run_id, handle, 1, options->timeouts, "schedule_to_start", now);
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


/* Fills a from the current SPI result's first row, TASK_COLUMNS from first_col on. */
void
activity_fill_attempt(ClaimedAttempt *a, int first_col)
{
	bool		isnull;
	Datum		d;
	int			c = first_col;

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
	a->had_started = strcmp(a->status, "started") == 0;
}

/*
 * Locks the task row of handle in a->run (locked by the caller) and reads
 * it into a.
 */
bool
activity_lock_task(int32 handle, ClaimedAttempt *a)
{
	static EnginePlan plan = {NULL,
		"SELECT " TASK_COLUMNS_OF("") " FROM durable.activity_tasks"
		" WHERE run_id = $1 AND handle = $2 FOR UPDATE",
	2, {UUIDOID, INT4OID}};
	Datum		values[2] = {a->run.run_id, Int32GetDatum(handle)};

	if (engine_exec(&plan, values, NULL, 1) == 0)
		return false;
	activity_fill_attempt(a, 1);
	return true;
}

/*
 * The event that ends the attempt in a (its details with its handle and
 * attempt), and, when the attempt had started, its ActivityTaskStarted
 * (Temporal writes it late too): kept on the same row, it takes the event
 * id before it (see durable.recorded_events).
 */
static void
activity_ended_event(ClaimedAttempt *a, const char *event_type, Jsonb *details,
					 TimestampTz when, NewEvent *event)
{
	*event = NEW_EVENT(event_type, details, when);
	if (a->had_started)
	{
		event->attempt_started_at = a->started_at;
		event->attempt_worker = a->worker;
	}
}

/* Appends the event that ends the attempt in a, after its start if it had one. */
void
activity_append_ended(ClaimedAttempt *a, const char *event_type, Jsonb *details,
					  TimestampTz when)
{
	NewEvent	event;

	activity_ended_event(a, event_type, details, when, &event);
	engine_append_events(&a->run, 1, &event);
}

static void
delete_task(ClaimedAttempt *a)
{
	static EnginePlan plan = {NULL,
		"DELETE FROM durable.activity_tasks WHERE run_id = $1 AND handle = $2",
	2, {UUIDOID, INT4OID}};
	Datum		values[2] = {a->run.run_id, Int32GetDatum(a->handle)};

	engine_exec(&plan, values, NULL, 0);
}

/*
 * The task row of an activity that is over is gone: what follows.  The
 * workflow task that follows may run right here when a client's role
 * (caller) ended the activity (see replay_task_inline); InvalidOid: the
 * worker runs it.
 */
void
activity_finish(ClaimedAttempt *a, Oid caller)
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
	delete_task(a);
	activity_finish(a, caller);
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
		" ready_at = $3, started_at = NULL, start_to_close_at = NULL, worker = NULL,"
		" last_failure = $4"
		" WHERE run_id = $1 AND handle = $2",
	4, {UUIDOID, INT4OID, TIMESTAMPTZOID, JSONBOID}};
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
	activity_append_ended(a, event_type, details, now);

	if (!will_retry)
	{
		activity_resolve(a, InvalidOid);
		return;
	}
	{
		Datum		values[4] = {a->run.run_id, Int32GetDatum(a->handle),
		TimestampTzGetDatum(next_at), JsonbPGetDatum(details)};

		engine_exec(&retry_plan, values, NULL, 0);
	}
	drop_task_timers(a, false);
	engine_save_next_event_id(&a->run);
	if (a->task_queue[0] != '\0')
		durable_wake_queue_at_commit(a->task_queue);
	/* the timer queue makes it ready again after its backoff */
	timer_schedule(&a->run, "retry", a->handle, next_at);
}

/* ---- completions and failures that find their run held ---- */

/*
 * Ends a started attempt without its run: state 'completed' with its
 * result, or 'failed' with its failure, for the worker to record.
 */
static bool
end_unlocked(Datum run_id, int32 handle, int32 attempt, const char *state,
			 Jsonb *result, Jsonb *failure)
{
	static EnginePlan plan = {NULL,
		"UPDATE durable.activity_tasks SET status = $4::durable.task_state, result = $5,"
		" last_failure = coalesce($6, last_failure), completed_at = $7,"
		" start_to_close_at = NULL"
		" WHERE run_id = $1 AND handle = $2 AND attempt = $3 AND status = 'started'"
		" RETURNING task_queue",
	7, {UUIDOID, INT4OID, INT4OID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID}};
	Datum		values[7] = {run_id, Int32GetDatum(handle), Int32GetDatum(attempt),
		CStringGetTextDatum(state), result ? JsonbPGetDatum(result) : (Datum) 0,
		failure ? JsonbPGetDatum(failure) : (Datum) 0,
	TimestampTzGetDatum(GetCurrentTimestamp())};
	char		nulls[7] = {' ', ' ', ' ', ' ', result ? ' ' : 'n', failure ? ' ' : 'n', ' '};
	char	   *task_queue;

	if (engine_exec(&plan, values, nulls, 1) == 0)
		return false;
	/* one fewer in flight: a poller held back by max_in_flight may go */
	task_queue = engine_get_text(0, 1);
	if (task_queue[0] != '\0')
		durable_wake_queue_at_commit(task_queue);
	durable_results_waiting_at_commit();
	return true;
}

/*
 * Completes a started attempt without its run, which someone else holds
 * (another activity's completion, the worker running the run's workflow
 * task): the result waits on the task row, in status 'completed', until the
 * worker records it (activity_record_ended), woken when this transaction
 * commits.  So the completions of a run's parallel activities do not each
 * wait for the one before to commit (its WAL flush, with the run's lock
 * held), and can share flushes.  Returns false if the attempt is not the
 * current started one (its run closed: its tasks are gone).  The task row is
 * all it locks, as a heartbeat.
 */
bool
activity_complete_unlocked(Datum run_id, int32 handle, int32 attempt, Jsonb *result)
{
	return end_unlocked(run_id, handle, attempt, "completed", result, NULL);
}

/*
 * Fails a started attempt without its run, as activity_complete_unlocked()
 * completes one: the failure (error, retryable, error_type) waits on the
 * task row, in status 'failed', and the worker records it and decides the
 * retry as fail_activity() would have.
 */
bool
activity_fail_unlocked(Datum run_id, int32 handle, int32 attempt, const char *error,
					   bool retryable, const char *error_type)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_str(&jb, "error", error);
	if (error_type)
		json_add_str(&jb, "error_type", error_type);
	json_add_bool(&jb, "retryable", retryable);
	return end_unlocked(run_id, handle, attempt, "failed", NULL, json_end(&jb));
}

/* An attempt's end that activity_*_unlocked() left, as the worker finds it. */
typedef struct WaitingEnd
{
	bool		failed;
	int32		handle;
	int32		attempt;
	TimestampTz started_at;
	char	   *worker;
	Jsonb	   *result;			/* completed: NULL if without one */
	Jsonb	   *failure;		/* failed: error, retryable, error_type */
	Jsonb	   *timeouts;
	TimestampTz ended_at;
} WaitingEnd;

static int
by_end(const void *a, const void *b)
{
	const WaitingEnd *x = a;
	const WaitingEnd *y = b;

	if (x->ended_at != y->ended_at)
		return x->ended_at < y->ended_at ? -1 : 1;
	return x->handle < y->handle ? -1 : x->handle > y->handle;
}

/* Reads the current SPI result (the columns of read_waiting_ends) into ends. */
static void
fill_waiting_ends(WaitingEnd *ends, int n, bool failed)
{
	for (int i = 0; i < n; i++)
	{
		WaitingEnd *w = &ends[i];
		bool		isnull;
		Datum		d;

		w->failed = failed;
		w->handle = DatumGetInt32(engine_get(i, 1, &isnull));
		w->attempt = DatumGetInt32(engine_get(i, 2, &isnull));
		w->started_at = DatumGetTimestampTz(engine_get(i, 3, &isnull));
		d = engine_get(i, 4, &isnull);
		w->worker = isnull ? NULL : TextDatumGetCString(d);
		d = engine_get(i, 5, &isnull);
		w->result = (isnull || failed) ? NULL : DatumGetJsonbPCopy(d);
		w->failure = (isnull || !failed) ? NULL : DatumGetJsonbPCopy(d);
		w->timeouts = DatumGetJsonbPCopy(engine_get(i, 6, &isnull));
		w->ended_at = DatumGetTimestampTz(engine_get(i, 7, &isnull));
	}
}

/*
 * The waiting ends of a locked run's attempts, in the order they came:
 * the completed ones' task rows deleted (nothing is left to do with them),
 * the failed ones' left for activity_attempt_unsuccessful().
 */
static int
read_waiting_ends(LockedRun *run, WaitingEnd **out)
{
	static EnginePlan completed = {NULL,
		"DELETE FROM durable.activity_tasks WHERE run_id = $1 AND status = 'completed'"
		" RETURNING handle, attempt, started_at, worker, result, timeouts, completed_at",
	1, {UUIDOID}};
	static EnginePlan failed = {NULL,
		"SELECT handle, attempt, started_at, worker, last_failure, timeouts, completed_at"
		" FROM durable.activity_tasks WHERE run_id = $1 AND status = 'failed'",
	1, {UUIDOID}};
	Datum		values[1] = {run->run_id};
	WaitingEnd *ends;
	int			ncompleted = engine_exec(&completed, values, NULL, 0);
	int			nfailed;

	ends = palloc(sizeof(WaitingEnd) * Max(ncompleted, 1));
	fill_waiting_ends(ends, ncompleted, false);
	nfailed = engine_exec(&failed, values, NULL, 0);
	if (nfailed > 0)
	{
		ends = repalloc(ends, sizeof(WaitingEnd) * (ncompleted + nfailed));
		fill_waiting_ends(ends + ncompleted, nfailed, true);
	}
	qsort(ends, ncompleted + nfailed, sizeof(WaitingEnd), by_end);
	*out = ends;
	return ncompleted + nfailed;
}

/* Records the completions ends[from..to), in one append. */
static void
record_completions(LockedRun *run, WaitingEnd *ends, int from, int to, TimestampTz now)
{
	NewEvent   *events;

	if (to <= from)
		return;
	events = palloc(sizeof(NewEvent) * (to - from));
	for (int i = from; i < to; i++)
	{
		WaitingEnd *w = &ends[i];
		JsonBuf		jb;
		ClaimedAttempt a;

		json_begin(&jb);
		json_add_int(&jb, "handle", w->handle);
		json_add_int(&jb, "attempt", w->attempt);
		if (w->result)
			json_add_jsonb(&jb, "result", w->result);
		events[i - from] = NEW_EVENT("ActivityTaskCompleted", json_end(&jb), now);
		events[i - from].attempt_started_at = w->started_at;
		events[i - from].attempt_worker = w->worker;
		if (!activity_has_timeout_timers(w->timeouts))
			continue;
		memcpy(&a.run, run, sizeof(LockedRun));
		a.handle = w->handle;
		a.timeouts = w->timeouts;
		a.status = "completed";
		drop_task_timers(&a, true);
	}
	engine_append_events(run, to - from, events);
}

/* The "retryable" of a waiting failure (activity_fail_unlocked wrote it). */
static bool
failure_retryable(Jsonb *failure)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(&failure->root, "retryable", strlen("retryable"), &v) == NULL ||
		v.type != jbvBool)
		return true;
	return v.val.boolean;
}

/* Records a failure: its retry or its end for good, as fail_activity() does. */
static void
record_failure(LockedRun *run, WaitingEnd *w, TimestampTz now)
{
	ClaimedAttempt a;
	JsonBuf		jb;
	char	   *error_type = jsonb_field_text(w->failure, "error_type");
	bool		retryable = failure_retryable(w->failure);

	memcpy(&a.run, run, sizeof(LockedRun));
	if (!activity_lock_task(w->handle, &a))
		elog(ERROR, "activity task of a waiting failure was not found");
	a.status = "started";		/* the attempt that failed */
	a.had_started = true;
	json_begin(&jb);
	json_add_int(&jb, "handle", a.handle);
	json_add_int(&jb, "attempt", a.attempt);
	json_add_str(&jb, "activity", a.activity);
	json_add_str(&jb, "error", jsonb_field_text(w->failure, "error"));
	if (error_type)
		json_add_str(&jb, "error_type", error_type);
	json_add_bool(&jb, "retryable", retryable);
	activity_attempt_unsuccessful(&a, "ActivityTaskFailed", &jb, retryable, error_type, now);
	memcpy(run, &a.run, sizeof(LockedRun));
}

/*
 * Records, on a running run the caller holds locked, the ends of attempts
 * that activity_complete_unlocked() and activity_fail_unlocked() left on
 * their task rows, in the order they came, stamped with the time they enter
 * the history (as every event is: the history's times never go back):
 * completions as ActivityTaskStarted and ActivityTaskCompleted (their task
 * rows and timers go), failures as fail_activity() records them (the retry
 * decided now).  Returns how many; the caller makes the workflow task that
 * follows due.
 */
int
activity_record_ended(LockedRun *run)
{
	WaitingEnd *ends;
	int			n = read_waiting_ends(run, &ends);
	int			from = 0;

	/* after the reads: what they saw had started, and ended, before */
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < n; i++)
	{
		if (!ends[i].failed)
			continue;
		record_completions(run, ends, from, i, now);
		record_failure(run, &ends[i], now);
		from = i + 1;
	}
	record_completions(run, ends, from, n, now);
	return n;
}

/* ---- timeouts, fired by the timer queue ---- */

/*
 * Reads the task of handle into a, on a run the caller holds.  If its
 * attempt's end waits on the row (activity_*_unlocked), the run's waiting
 * ends are recorded first (*recorded; the caller makes the workflow task
 * due), so that what follows sees the activity as the history has it: a
 * failure may have left it waiting for a retry, still under its
 * schedule_to_close, or ended it.  *now then moves past their time.  Returns
 * false when no task is left.
 */
static bool
lock_task_as_recorded(LockedRun *run, int32 handle, ClaimedAttempt *a,
					  TimestampTz *now, bool *recorded)
{
	*recorded = false;
	memcpy(&a->run, run, sizeof(LockedRun));
	if (!activity_lock_task(handle, a))
		return false;
	if (strcmp(a->status, "completed") != 0 && strcmp(a->status, "failed") != 0)
		return true;
	*recorded = activity_record_ended(run) > 0;
	*now = Max(*now, GetCurrentTimestamp());
	memcpy(&a->run, run, sizeof(LockedRun));
	return activity_lock_task(handle, a);
}

/*
 * Has the attempt in a, locked, run out of its start_to_close at now?  As
 * the claim computed the row's start_to_close_at from the same two values.
 */
static bool
start_to_close_ran_out(ClaimedAttempt *a, TimestampTz now)
{
	TimestampTz deadline = activity_start_to_close_at(a->timeouts, a->started_at);

	return deadline != 0 && deadline <= now;
}

/*
 * One of an activity's timeouts fired (its run locked by the caller).
 * schedule_to_start and schedule_to_close end the activity for good, as in
 * Temporal; start_to_close and heartbeat end the attempt, retried by policy.
 * A timer of an attempt that is no longer current changes nothing.  Claims
 * (deletes) the timer row itself, after locking the task; returns false when
 * it did not fire.  timer_id 0: a start_to_close kept on the task row,
 * which fires only if the locked row is still that attempt and it ran out.
 */
bool
activity_fire_timeout(LockedRun *run, int64 timer_id, int32 handle, int32 attempt,
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
	bool		recorded;

	if (!lock_task_as_recorded(run, handle, &a, &now, &recorded))
	{
		/* it ended before the timeout: nothing left to time out */
		if (recorded)
			engine_request_workflow_task(run);
		return timer_id != 0 && engine_exec(&claim, values, NULL, 0) == 1;
	}
	if (recorded)
		engine_request_workflow_task(run);
	if (timer_id == 0)
	{
		if (strcmp(a.status, "started") != 0 || a.attempt != attempt ||
			!start_to_close_ran_out(&a, now))
			return false;
	}
	/* after the task, the timer: a heartbeat may have moved it meanwhile */
	else if (engine_exec(&claim, values, NULL, 0) == 0)
		return false;
	if (!whole_activity &&
		(a.attempt != attempt ||
		 strcmp(a.status, before_start ? "scheduled" : "started") != 0))
		return false;

	json_begin(&jb);
	json_add_int(&jb, "handle", a.handle);
	json_add_int(&jb, "attempt", a.attempt);
	json_add_str(&jb, "activity", a.activity);
	json_add_str(&jb, "timeout", timeout);
	json_add_str(&jb, "error", psprintf("%s timeout", timeout));
	if (whole_activity || before_start)
	{
		json_add_bool(&jb, "final", true);
		activity_append_ended(&a, "ActivityTaskTimedOut", json_end(&jb), now);
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
		" WHERE run_id = $1 AND handle = $2",
	2, {UUIDOID, INT4OID}};
	Datum		values[2] = {run->run_id, Int32GetDatum(handle)};
	ClaimedAttempt a;
	JsonBuf		jb;
	bool		recorded;

	json_begin(&jb);
	json_add_int(&jb, "handle", handle);
	engine_append_event(run, "ActivityTaskCancelRequested", json_end(&jb), now);
	if (engine_exec(&find, values, NULL, 1) == 0)
		return false;			/* already over */
	/* the code needs another task for ends recorded here */
	if (!lock_task_as_recorded(run, handle, &a, &now, &recorded))
		return recorded;
	if (strcmp(a.status, "started") == 0)
		return recorded;

	json_begin(&jb);
	json_add_int(&jb, "handle", handle);
	engine_append_event(&a.run, "ActivityTaskCanceled", json_end(&jb), now);
	drop_task_timers(&a, true);
	delete_task(&a);
	memcpy(run, &a.run, sizeof(LockedRun));
	return true;
}
