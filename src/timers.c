/*-------------------------------------------------------------------------
 *
 * timers.c
 *	  The timer queue: workflow timers, activity retry backoffs and
 *	  timeouts, run execution timeouts, kept in durable.timers, and the
 *	  start_to_close of started attempts, kept on their task rows; fired by
 *	  the worker.
 *
 * The worker asks for the earliest fire_at (one probe of each table's index
 * of them, whatever their number), publishes it in its slot and sleeps until
 * then.  A transaction that adds an earlier timer wakes it at commit (see
 * shmem.c); one that adds a later one lets it sleep.  Due timers are fired in
 * batches, a batch per transaction: each firing locks its run, deletes the
 * timer row (a timer canceled meanwhile is gone: it never fires) and records
 * its effect.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define FIRE_BATCH			TIMERS_FIRE_BATCH
#define LOCKED_RUN_RETRY_MS	50

PG_FUNCTION_INFO_V1(durable_fire_timers);

/* A timer of kind for the command of handle (0: the run's own). */
void
timer_schedule(LockedRun *run, const char *kind, int32 handle, TimestampTz fire_at)
{
	static EnginePlan plan = {NULL,
		"INSERT INTO durable.timers (run_id, kind, handle, fire_at)"
		" VALUES ($1, $2::durable.timer_kind, $3, $4)",
	4, {UUIDOID, TEXTOID, INT4OID, TIMESTAMPTZOID}};
	Datum		values[4];
	char		nulls[4] = "    ";

	values[0] = run->run_id;
	values[1] = CStringGetTextDatum(kind);
	values[2] = Int32GetDatum(handle);
	if (handle == 0)
		nulls[2] = 'n';
	values[3] = TimestampTzGetDatum(fire_at);
	engine_exec(&plan, values, nulls, 0);
	durable_timer_added_at_commit(fire_at);
}

/* Deletes a workflow timer; false if it was no longer pending. */
bool
timer_cancel(LockedRun *run, int32 handle)
{
	static EnginePlan plan = {NULL,
		"DELETE FROM durable.timers WHERE run_id = $1 AND kind = 'timer' AND handle = $2",
	2, {UUIDOID, INT4OID}};
	Datum		values[2] = {run->run_id, Int32GetDatum(handle)};

	return engine_exec(&plan, values, NULL, 0) > 0;
}

/* A run closed: none of its timers may fire any more. */
void
timers_cancel_all(LockedRun *run)
{
	static EnginePlan plan = {NULL,
	"DELETE FROM durable.timers WHERE run_id = $1", 1, {UUIDOID}};
	Datum		values[1] = {run->run_id};

	engine_exec(&plan, values, NULL, 0);
}

/* An activity's backoff is over: it is ready for pollers again. */
static void
fire_retry(Datum run_id, int32 handle, TimestampTz now)
{
	static EnginePlan plan = {NULL,
		"UPDATE durable.activity_tasks SET status = 'scheduled', ready_at = $3"
		" WHERE run_id = $1 AND handle = $2 AND status = 'backoff'"
		" RETURNING task_queue, priority",
	3, {UUIDOID, INT4OID, TIMESTAMPTZOID}};
	Datum		values[3] = {run_id, Int32GetDatum(handle), TimestampTzGetDatum(now)};

	if (engine_exec(&plan, values, NULL, 1) == 1)
	{
		char	   *queue = engine_get_text(0, 1);

		if (queue[0] == '\0')
		{
			/* a SQL activity: the worker runs it */
			sql_activity_maybe_due();
			durable_wake_worker_at_commit();
		}
		else
		{
			bool		isnull;

			/* its entry in the ready index is in: see queue_heads.c */
			queue_head_entry_added(queue, DatumGetInt32(engine_get(0, 2, &isnull)), now);
			durable_wake_queue_at_commit(queue);
		}
	}
}

static void
fire_workflow_timer(LockedRun *run, int32 handle, TimestampTz now, bool early)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_int(&jb, "handle", handle);
	if (early)
		json_add_bool(&jb, "fired_early", true);
	engine_append_event(run, "TimerFired", json_end(&jb), now);
	engine_request_workflow_task(run);
}

static void
fire_execution_timeout(LockedRun *run, TimestampTz now)
{
	static EnginePlan plan = {NULL,
		"WITH closed AS ("
		"  UPDATE durable.runs SET status = 'timed_out', closed_at = $2,"
		"   next_event_id = $3, task_pending = false WHERE run_id = $1"
		"  RETURNING run_id)"
		" DELETE FROM durable.due_tasks d USING closed c WHERE d.run_id = c.run_id",
	3, {UUIDOID, TIMESTAMPTZOID, INT8OID}};
	Datum		values[3];
	JsonBuf		jb;

	json_begin(&jb);
	json_add_str(&jb, "reason", "execution_timeout");
	engine_append_event(run, "WorkflowExecutionTimedOut", json_end(&jb), now);
	values[0] = run->run_id;
	values[1] = TimestampTzGetDatum(now);
	values[2] = Int64GetDatum(run->next_event_id);
	engine_exec(&plan, values, NULL, 0);
	activity_cancel_all(run);
	timers_cancel_all(run);
	durable_wake_closed_at_commit(run->workflow_id);
}

typedef struct DueTimer
{
	int64		timer_id;
	Datum		run_id;
	char	   *kind;
	int32		handle;			/* 0: none (an execution_timeout) */
	int32		attempt;
	char	   *timeout;
} DueTimer;

/* Deletes the timer row; false if someone (a cancel) deleted it first. */
static bool
claim_timer(int64 timer_id)
{
	static EnginePlan plan = {NULL,
	"DELETE FROM durable.timers WHERE timer_id = $1", 1, {INT8OID}};
	Datum		values[1] = {Int64GetDatum(timer_id)};

	return engine_exec(&plan, values, NULL, 0) == 1;
}

/*
 * Fires a timer of an open run the caller holds locked (run: as read then;
 * kept current here).  Returns false if it did not fire.
 */
static bool
fire_one(DueTimer *t, LockedRun *run, TimestampTz now, bool early)
{
	/* an activity timeout claims its timer itself, after locking the task */
	if (strcmp(t->kind, "activity_timeout") == 0)
		return activity_fire_timeout(run, t->timer_id, t->handle, t->attempt,
									 t->timeout, now);
	if (!claim_timer(t->timer_id))
		return false;
	if (strcmp(t->kind, "retry") == 0)
		fire_retry(t->run_id, t->handle, now);
	else if (strcmp(t->kind, "timer") == 0)
		fire_workflow_timer(run, t->handle, now, early);
	else
		fire_execution_timeout(run, now);
	return true;
}

/* The due timers (values: now), or all pending ones of a run (values: run_id). */
static int
read_timers(bool of_one_run, Datum *values, DueTimer **out)
{
	static EnginePlan due = {NULL,
		"SELECT timer_id, run_id, kind, handle, attempt, timeout FROM durable.timers"
		" WHERE fire_at <= $1 ORDER BY fire_at LIMIT " CppAsString2(FIRE_BATCH),
	1, {TIMESTAMPTZOID}};
	static EnginePlan of_run = {NULL,
		"SELECT timer_id, run_id, kind, handle, attempt, timeout FROM durable.timers"
		" WHERE run_id = $1 AND kind IN ('timer', 'retry') ORDER BY fire_at",
	1, {UUIDOID}};
	int			n = engine_exec(of_one_run ? &of_run : &due, values, NULL, 0);
	DueTimer   *timers = palloc(sizeof(DueTimer) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		timers[i].timer_id = DatumGetInt64(engine_get(i, 1, &isnull));
		timers[i].run_id = engine_get(i, 2, &isnull);
		timers[i].kind = engine_get_text(i, 3);
		timers[i].handle = DatumGetInt32(engine_get(i, 4, &isnull));
		if (isnull)
			timers[i].handle = 0;
		timers[i].attempt = DatumGetInt32(engine_get(i, 5, &isnull));
		if (isnull)
			timers[i].attempt = 0;
		timers[i].timeout = engine_get_text(i, 6);
	}
	*out = timers;
	return n;
}

typedef struct OneFiring
{
	DueTimer   *timer;
	TimestampTz now;
	bool		fired;
	bool		busy;
	int			count;			/* fired together */
} OneFiring;

static void
fire_one_locked(void *arg)
{
	OneFiring  *f = (OneFiring *) arg;
	LockedRun	run;

	/* never wait for an application's transaction: come back later */
	if (!engine_lock_run(f->timer->run_id, &run, true))
		f->busy = true;
	else if (strcmp(run.status, "running") != 0 && f->timer->timer_id == 0)
	{
		/* a closed run's task (its close drops them): abandoned, as then */
		activity_cancel_all(&run);
		f->fired = true;
	}
	else if (strcmp(run.status, "running") != 0)
		f->fired = claim_timer(f->timer->timer_id); /* a closed run's leftover */
	else
	{
		/*
		 * Its events take the time it fires, with the run held: what others
		 * appended before is older (a history's times never go back).
		 */
		f->fired = fire_one(f->timer, &run, Max(f->now, GetCurrentTimestamp()), false);
	}
}

/*
 * The busy key (engine_note_busy()) of a task's start_to_close: negative, as
 * timer ids are not; two tasks that share one merely wait for each other.
 */
static int64
task_busy_key(Datum run_id, int32 handle)
{
	uint64		key;

	/* the run id's last 8 bytes, random in a UUIDv7 */
	memcpy(&key, DatumGetUUIDP(run_id)->data + UUID_LEN - sizeof(key), sizeof(key));
	return (int64) ((key ^ (uint64) handle) | PG_INT64_MIN);
}

/*
 * Fires one timer in its own subtransaction; a timer whose row or run is
 * held is left for later.  Returns false when it did not fire.
 */
static bool
fire_isolated(DueTimer *t, TimestampTz now, bool *busy)
{
	OneFiring	f = {t, now, false, false, 0};
	/* a start_to_close on a task row is known by its task */
	int64		key = t->timer_id != 0 ? t->timer_id : task_busy_key(t->run_id, t->handle);

	if (engine_is_busy(key))
	{
		*busy = true;
		return false;
	}
	if (!engine_in_subxact_unless_busy(fire_one_locked, &f))
	{
		engine_note_busy(key);
		f.busy = true;
	}
	*busy |= f.busy;
	return f.fired;
}

/*
 * Started attempts whose start_to_close ran out by now (values), as timers
 * of timer_id 0 (activity_fire_timeout() knows them by that).
 */
static int
read_due_attempts(Datum *values, DueTimer **out)
{
	static EnginePlan due = {NULL,
		"SELECT run_id, handle, attempt FROM durable.activity_tasks"
		" WHERE start_to_close_at <= $1 ORDER BY start_to_close_at"
		" LIMIT " CppAsString2(FIRE_BATCH),
	1, {TIMESTAMPTZOID}};
	int			n = engine_exec(&due, values, NULL, 0);
	DueTimer   *timers = palloc0(sizeof(DueTimer) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		timers[i].run_id = engine_get(i, 1, &isnull);
		timers[i].handle = DatumGetInt32(engine_get(i, 2, &isnull));
		timers[i].attempt = DatumGetInt32(engine_get(i, 3, &isnull));
		timers[i].kind = "activity_timeout";
		timers[i].timeout = "start_to_close";
	}
	*out = timers;
	return n;
}

/* The earliest fire_at of all timers, DT_NOEND when there is none. */
static TimestampTz
earliest_fire_at(void)
{
	static EnginePlan plan = {NULL,
		"SELECT LEAST((SELECT min(fire_at) FROM durable.timers),"
		" (SELECT min(start_to_close_at) FROM durable.activity_tasks))",
	0, {0}};
	bool		isnull = true;
	Datum		d = (Datum) 0;

	if (engine_exec(&plan, NULL, NULL, 1) == 1)
		d = engine_get(0, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/*
 * Fires due workflow timers of open runs with one statement: the common
 * case (sleeps, timer_async, wait_signal timeouts), and the one that comes
 * in bursts (10,000 sleeps that end at the same second).  Each timer row
 * is deleted and its TimerFired appended (at the time it is, once its run
 * is locked), each run's next_event_id moved
 * past its new events and its workflow task made due, exactly what
 * fire_one() does row by row, at a fraction of the cost per timer.  Runs
 * that someone else holds are skipped (SKIP LOCKED): their timers, and
 * those of closed runs, are left to the row-by-row path.  Sets f->count
 * to how many fired.
 */
static void
fire_workflow_timers_together(void *arg)
{
	static EnginePlan plan = {NULL,
		"WITH due AS ("
		"  SELECT timer_id, run_id, fire_at, handle FROM durable.timers"
		"   WHERE fire_at <= $1 AND kind = 'timer'"
		"   ORDER BY fire_at LIMIT " CppAsString2(FIRE_BATCH) "),"
		" locked AS ("
		"  SELECT d.timer_id, r.next_event_id"
		"    FROM due d JOIN durable.runs r ON r.run_id = d.run_id"
		"   WHERE r.status = 'running' FOR UPDATE OF r SKIP LOCKED),"
		" fired AS ("
		"  DELETE FROM durable.timers t USING locked l WHERE t.timer_id = l.timer_id"
		"  RETURNING t.run_id, t.timer_id, t.fire_at, t.handle, l.next_event_id),"
		" appended AS ("
		"  INSERT INTO durable.recorded_events (run_id, event_id, event_time, event_type, details)"
		"  SELECT run_id, next_event_id - 1 + row_number() OVER"
		"           (PARTITION BY run_id ORDER BY fire_at, timer_id),"
		"         pg_catalog.clock_timestamp(), 'TimerFired',"
		"         pg_catalog.jsonb_build_object('handle', handle)"
		"    FROM fired"
		"  RETURNING run_id, event_id),"
		" requested AS ("
		"  UPDATE durable.runs r SET next_event_id = a.last_event_id + 1, task_pending = true,"
		"         task_due_at = CASE WHEN r.task_pending THEN r.task_due_at ELSE $1 END"
		"    FROM (SELECT run_id, max(event_id) AS last_event_id FROM appended"
		"           GROUP BY run_id) a"
		"   WHERE r.run_id = a.run_id"
		"  RETURNING r.run_id, r.task_due_at, r.task_failure IS NULL AS due, r.ctid),"
		" queued AS ("
		"  INSERT INTO durable.due_tasks (run_id, due_at, run_row)"
		"  SELECT run_id, task_due_at, ctid FROM requested WHERE due"
		"  ON CONFLICT (run_id) DO NOTHING)"
		" SELECT count(*) FROM appended",
	1, {TIMESTAMPTZOID}};
	OneFiring  *f = (OneFiring *) arg;
	Datum		values[1] = {TimestampTzGetDatum(f->now)};
	bool		isnull;

	engine_exec(&plan, values, NULL, 1);
	f->count = (int) DatumGetInt64(engine_get(0, 1, &isnull));
}

/*
 * Fires up to a batch of due timers in one transaction: workflow timers all
 * together, then the rest (retries, timeouts, timers of busy or closed runs)
 * one by one, then up to a batch of attempts out of their start_to_close.
 * Returns how many fired; *full says a batch was full (more may be due);
 * *retry_soon is set when a due timer's run was locked by someone else (it
 * is left for later); *next_due is the earliest fire_at left (as this
 * transaction sees it; DT_NOEND if none).
 */
int
timers_fire_due(bool *retry_soon, bool *full, TimestampTz *next_due)
{
	EngineScope scope;
	TimestampTz now;
	Datum		values[1];
	DueTimer   *timers;
	int			n;
	int			m = 0;
	int			fired;
	OneFiring	together = {NULL, 0, false, false, 0};

	*retry_soon = false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	engine_enter(&scope);
	now = GetCurrentTimestamp();
	*next_due = earliest_fire_at();
	fired = n = 0;
	if (*next_due <= now)
	{
		together.now = now;
		if (!engine_in_subxact_unless_busy(fire_workflow_timers_together, &together))
			*retry_soon = true;
		fired = together.count;
		values[0] = TimestampTzGetDatum(now);
		/* a full batch that all fired: more of the same may be due, come back */
		n = (fired == FIRE_BATCH) ? 0 : read_timers(false, values, &timers);
		for (int i = 0; i < n; i++)
			if (fire_isolated(&timers[i], now, retry_soon))
				fired++;
		if (fired < FIRE_BATCH && n < FIRE_BATCH)
			m = read_due_attempts(values, &timers);
		for (int i = 0; i < m; i++)
			if (fire_isolated(&timers[i], now, retry_soon))
				fired++;
		*next_due = earliest_fire_at();
	}
	engine_leave(&scope);
	PopActiveSnapshot();
	CommitTransactionCommand();
	*full = (fired >= FIRE_BATCH || n == FIRE_BATCH || m == FIRE_BATCH);
	return fired;
}

/*
 * Milliseconds until the earliest pending timer (0 if one is due), or -1
 * when there is none.  Runs its own short transaction.
 */
long
timers_ms_until_next(TimestampTz *next)
{
	EngineScope scope;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	engine_enter(&scope);
	*next = earliest_fire_at();
	engine_leave(&scope);
	PopActiveSnapshot();
	CommitTransactionCommand();

	if (*next == DT_NOEND)
	{
		*next = 0;
		return -1;
	}
	return TimestampDifferenceMilliseconds(GetCurrentTimestamp(), *next);
}

/*
 * durable.fire_timers(workflow_id): fires the open run's workflow timers and
 * retry backoffs now, each recorded as fired early.  For tests of workflows
 * that sleep for days.
 */
Datum
durable_fire_timers(PG_FUNCTION_ARGS)
{
	static EnginePlan find = {NULL,
		"SELECT run_id, owner FROM durable.runs"
		" WHERE workflow_id = $1 AND NOT superseded AND status = 'running'",
	1, {TEXTOID}};
	char	   *workflow_id;
	EngineScope scope;
	Datum		values[1];
	Oid			owner = InvalidOid;
	bool		found;
	int			fired = 0;

	durable_require_preload();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow_id must not be null")));
	workflow_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	values[0] = CStringGetTextDatum(workflow_id);

	engine_enter(&scope);
	found = engine_exec(&find, values, NULL, 1) == 1;
	if (found)
	{
		bool		isnull;
		LockedRun	run;

		owner = DatumGetObjectId(engine_get(0, 2, &isnull));
		values[0] = engine_get(0, 1, &isnull);
		found = has_privs_of_role(scope.caller, owner) &&
			engine_lock_run(values[0], &run, false) &&
			strcmp(run.status, "running") == 0;
		if (found)
		{
			DueTimer   *timers;
			int			n = read_timers(true, values, &timers);
			TimestampTz now = GetCurrentTimestamp();

			for (int i = 0; i < n; i++)
				if (fire_one(&timers[i], &run, now, true))
					fired++;
		}
	}
	engine_leave(&scope);

	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" has no open run", workflow_id),
				 errhint("Only an open run's timers can be fired; see durable.workflows.")));
	PG_RETURN_INT32(fired);
}
