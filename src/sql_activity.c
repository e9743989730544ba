/*-------------------------------------------------------------------------
 *
 * sql_activity.c
 *	  SQL activities: functions (jsonb) RETURNS jsonb that the worker runs
 *	  itself, as the run's owner, exactly once.
 *
 * The function runs in a subtransaction of the transaction that records its
 * outcome.  On success its effects and ActivityTaskCompleted commit together;
 * on error the subtransaction is rolled back, so a failed attempt leaves no
 * effects, and the retry policy applies as to any activity.  A crash at any
 * point loses the whole transaction: the task is still scheduled, and runs
 * again as if it never had.  So the effects of a SQL activity are committed
 * exactly once, with the event that records them.  The activities due at
 * once run in one transaction, each in a subtransaction of its own (so that
 * a row someone else holds sets aside only that one): they share a commit,
 * as the workflow tasks of a batch do.
 *
 *-------------------------------------------------------------------------
 */
#include "activity.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/*
 * Whether a SQL activity may be due: set at each wakeup of the worker and
 * whenever it schedules one or a retry of one falls due; cleared when a look
 * finds none.  Spares the worker a query per loop when there are none.
 */
static bool maybe_due = true;

void
sql_activity_maybe_due(void)
{
	maybe_due = true;
}

/* How long a SQL activity may run when its options set no start_to_close. */
#define DEFAULT_SQL_ACTIVITY_TIMEOUT_MS	60000

/*
 * No more SQL activities join a batch once it has run this long: the first
 * one's completion (and its run's lock) waits for the batch to commit.
 */
#define SQL_BATCH_MAX_MS	50

typedef struct SqlOutcome
{
	Jsonb	   *result;
	ErrorData  *error;			/* NULL on success */
} SqlOutcome;

/*
 * Calls the function as the run's owner in a subtransaction, kept on
 * success and rolled back on error.
 */
static void
call_sql_activity(ClaimedAttempt *a, SqlOutcome *out)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	double		seconds = activity_timeout_seconds(a->timeouts, "start_to_close");
	int			timeout_ms = seconds > 0 ? (int) Min(seconds * 1000, INT_MAX) :
		DEFAULT_SQL_ACTIVITY_TIMEOUT_MS;
	FmgrInfo   *volatile flinfo = NULL;

	out->result = NULL;
	out->error = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Oid			funcoid = engine_function_oid(a->activity);
		Datum		d;

		LOCAL_FCINFO(fcinfo, 1);

		engine_check_role_may_run(funcoid, a->run.owner);
		engine_become_role(a->run.owner, false);
		flinfo = engine_function_call_begin(funcoid);
		InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = a->input ? JsonbPGetDatum(a->input) : (Datum) 0;
		fcinfo->args[0].isnull = a->input == NULL;
		enable_timeout_after(STATEMENT_TIMEOUT, timeout_ms);
		if (!(flinfo->fn_strict && a->input == NULL))
		{
			d = FunctionCallInvoke(fcinfo);
			if (!fcinfo->isnull)
			{
				MemoryContextSwitchTo(cxt);
				out->result = DatumGetJsonbPCopy(d);
			}
		}
		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(cxt);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(cxt);
		out->error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	if (flinfo != NULL)
		engine_function_call_end(flinfo);
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

static void
record_outcome(ClaimedAttempt *a, SqlOutcome *out, TimestampTz now)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_int(&jb, "handle", a->handle);
	json_add_int(&jb, "attempt", a->attempt);
	if (out->error == NULL)
	{
		if (out->result)
			json_add_jsonb(&jb, "result", out->result);
		activity_append_ended(a, "ActivityTaskCompleted", json_end(&jb), now);
		activity_resolve(a, InvalidOid);
		return;
	}
	json_add_str(&jb, "activity", a->activity);
	json_add_str(&jb, "error", out->error->message);
	/* the SQLSTATE is the error type: list them in non_retryable_errors */
	json_add_str(&jb, "error_type", unpack_sql_state(out->error->sqlerrcode));
	if (out->error->detail)
		json_add_str(&jb, "detail", out->error->detail);
	json_add_bool(&jb, "retryable", true);
	activity_attempt_unsuccessful(a, "ActivityTaskFailed", &jb, true,
								  unpack_sql_state(out->error->sqlerrcode), now);
}

typedef struct DueSqlActivity
{
	Datum		run_id;
	int32		handle;
	TimestampTz now;
	bool		ran;
	bool		busy;			/* its run is held by someone else */
} DueSqlActivity;

/* Runs the activity, if its run and task are still as they were found. */
static void
run_one(void *arg)
{
	DueSqlActivity *due = arg;
	ClaimedAttempt a;
	SqlOutcome	out;

	/* run first, then task, like everyone; a busy run is tried later */
	if (!engine_lock_run(due->run_id, &a.run, true))
	{
		due->busy = true;
		return;
	}
	if (strcmp(a.run.status, "running") != 0 ||
		!activity_lock_task(due->handle, &a) ||
		strcmp(a.status, "scheduled") != 0)
		return;
	a.started_at = due->now;
	a.worker = "durable worker";
	a.had_started = true;		/* by this call */
	call_sql_activity(&a, &out);
	record_outcome(&a, &out, GetCurrentTimestamp());
	due->ran = true;
}

/*
 * Runs up to max_tasks due SQL activities in one transaction (one commit for
 * all: each one's effects still commit, or not, with its completion), fewer
 * if they are slow (SQL_BATCH_MAX_MS).
 * Returns how many ran; none due clears maybe_due.  *busy is set when a due
 * one was left because someone else held its run or task.
 */
int
sql_activity_run_due(int max_tasks, bool *busy)
{
	static EnginePlan due = {NULL,
		"SELECT run_id, handle FROM durable.activity_tasks"
		" WHERE task_queue_hash = durable.task_queue_hash('" SQL_ACTIVITY_QUEUE "')"
		"   AND task_queue = '" SQL_ACTIVITY_QUEUE "' AND status = 'scheduled' AND ready_at <= $1"
		" ORDER BY priority DESC, ready_at LIMIT $2",
	2, {TIMESTAMPTZOID, INT4OID}};
	EngineScope scope;
	TimestampTz now;
	Datum		values[2];
	DueSqlActivity *activities;
	int			n;
	int			ran = 0;

	*busy = false;
	if (!maybe_due)
		return 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "durable: running SQL activities");
	engine_enter(&scope);
	now = GetCurrentTimestamp();
	values[0] = TimestampTzGetDatum(now);
	values[1] = Int32GetDatum(max_tasks);
	n = engine_exec(&due, values, NULL, 0);
	activities = palloc0(sizeof(DueSqlActivity) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		activities[i].run_id = engine_get(i, 1, &isnull);
		activities[i].handle = DatumGetInt32(engine_get(i, 2, &isnull));
		activities[i].now = now;
	}
	/* each in a subtransaction: a row someone holds sets aside only that one */
	for (int i = 0; i < n; i++)
	{
		if (!engine_in_subxact_unless_busy(run_one, &activities[i]))
			activities[i].busy = true;
		if (activities[i].ran)
			ran++;
		*busy |= activities[i].busy;
		if (TimestampDifferenceExceeds(now, GetCurrentTimestamp(), SQL_BATCH_MAX_MS))
			break;
	}
	if (n == 0)
		maybe_due = false;
	engine_leave(&scope);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return ran;
}
