/*-------------------------------------------------------------------------
 *
 * replay.c
 *	  Running one workflow task: replaying a run's function against its
 *	  history, and recording what the code did; answering queries the same
 *	  way without recording anything.
 *
 * The worker locks a run with a task due, loads its history, and calls the
 * workflow function from the top, as the run's owner, read-only, inside a
 * subtransaction.  Each deterministic call returns what the history recorded;
 * the first await of something the history has not resolved unwinds the code
 * with an internal error (ERRCODE_DURABLE_SUSPEND) and the task ends with the
 * new commands the code issued.  Whether the code was suspended is decided by
 * a flag of ours, not by the error that reached us, so a PL/pgSQL
 * "WHEN OTHERS" that catches the unwind changes nothing: every later
 * deterministic call unwinds again, and whatever the code returns is ignored.
 * Non-determinism is flagged the same way.
 *
 * Time: every task that ran the code appends WorkflowTaskCompleted, a
 * boundary.  Replay keeps a cursor on these boundaries: an await moves it past
 * the event that resolved what it waited for, as the original execution had
 * to wait for that event; durable.now() is the time of the boundary under the
 * cursor.  So now() returns, on every replay, what it returned the first time.
 *
 *-------------------------------------------------------------------------
 */
#include "replay.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(durable_query);

typedef enum Outcome
{
	OUTCOME_RETURNED,
	OUTCOME_SUSPENDED,
	OUTCOME_RUN_FAILED,			/* the code raised: the run fails */
	OUTCOME_TASK_FAILED,		/* the task fails: the run is parked */
	OUTCOME_CANCELED			/* a client canceled its own statement */
} Outcome;

Replay	   *current_replay = NULL;

/*
 * durable.workflow_task_timeout, as a timeout of our own: a client backend
 * that runs a workflow task keeps its statement_timeout, and a cancel that
 * is not ours is told apart from ours.
 */
static TimeoutId task_timeout = MAX_TIMEOUTS;
static volatile sig_atomic_t task_timed_out = false;

static void
task_timeout_handler(void)
{
	task_timed_out = true;
	/* what a statement timeout does: cancel at the next interrupt check */
	InterruptPending = true;
	QueryCancelPending = true;
	SetLatch(MyLatch);
}

static void
start_task_timeout(void)
{
	if (task_timeout == MAX_TIMEOUTS)
		task_timeout = RegisterTimeout(USER_TIMEOUT, task_timeout_handler);
	enable_timeout_after(task_timeout, durable_workflow_task_timeout_ms);
}

/* Stops the timeout; true if it fired. */
static bool
stop_task_timeout(void)
{
	disable_timeout(task_timeout, false);
	return task_timed_out;
}

/* ---- what the deterministic API needs ---- */

void
replay_suspend(Replay *r)
{
	r->suspended = true;
	plpgsql_exprs_note_busy(r);

	/*
	 * Nearly every workflow task ends here, so the unwinding is kept cheap:
	 * no context lines (each PL/pgSQL frame would format one, translated) and
	 * no translation of the text (a gettext lookup each: with the context,
	 * 17,000 instructions, more than the rest of the error).  Whatever
	 * catches the error restores its own context stack.
	 */
	error_context_stack = NULL;
	ereport(ERROR,
			(errcode(ERRCODE_DURABLE_SUSPEND),
			 errmsg_internal("workflow is waiting for something that has not happened yet"),
			 errdetail_internal("This error unwinds workflow code so that the worker can suspend the run: do not catch it, a handler that does changes nothing.")));
}

/*
 * Suspends the code at an await of handles, noting (the first time) what it
 * waits for: while events that resolve none of that come, the worker need
 * not run the code again (see history_still_blocked).
 */
void
replay_suspend_on(Replay *r, BlockedOn on, int nhandles, const int64 *handles)
{
	if (!r->suspended)
	{
		MemoryContext old = MemoryContextSwitchTo(r->cxt);

		r->blocked.on = on;
		r->blocked.nhandles = nhandles;
		r->blocked.handles = palloc(sizeof(int64) * Max(nhandles, 1));
		memcpy(r->blocked.handles, handles, sizeof(int64) * nhandles);
		MemoryContextSwitchTo(old);
	}
	replay_suspend(r);
}

void
replay_nondeterminism(Replay *r, const char *fmt,...)
{
	va_list		args;
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	r->nondeterministic = true;
	ereport(ERROR,
			(errcode(ERRCODE_DURABLE_NONDETERMINISM),
			 errmsg("workflow code does not match the run's history"),
			 errdetail("%s", buf.data),
			 errhint("Restore the code that started the run (or make the change compatible with it), then call durable.retry_workflow_task().")));
}

Replay *
replay_required(const char *function)
{
	Replay	   *r = current_replay;

	if (r == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DURABLE_NOT_IN_WORKFLOW),
				 errmsg("%s can only be called from workflow code", function),
				 errhint("Write it in a workflow function and run that with durable.start_workflow().")));
	/* once unwound, the code can make no more progress in this task */
	if (r->nondeterministic)
		replay_nondeterminism(r, "an earlier mismatch in this workflow task was caught by the workflow code");
	if (r->suspended)
		replay_suspend(r);
	return r;
}

/* The code waited until event_id: move the cursor past it. */
void
replay_advance_cursor(Replay *r, int64 event_id)
{
	while (r->cursor < r->ntasks - 1 && r->tasks[r->cursor].event_id < event_id)
		r->cursor++;
}

TimestampTz
replay_now(Replay *r)
{
	return r->tasks[r->cursor].time;
}

/* ---- loading the history ---- */

/*
 * The history as this replay sees it: the commands (shared with the cache:
 * replay only reads them), the task boundaries followed by the task being
 * run now, and the signals, none received yet.
 */
static void
load_history(Replay *r, RunHistory *h)
{
	MemoryContext old = MemoryContextSwitchTo(r->cxt);

	r->slots = h->slots;
	r->max_recorded = h->max_recorded;
	r->slots_allocated = h->slots_allocated;
	r->tasks = palloc(sizeof(TaskBoundary) * (h->ntasks + 1));
	memcpy(r->tasks, h->tasks, sizeof(TaskBoundary) * h->ntasks);
	r->ntasks = h->ntasks;
	/* the task being run now: its boundary is not written yet */
	r->tasks[r->ntasks].event_id = PG_INT64_MAX;
	r->tasks[r->ntasks].time = r->task_time;
	r->ntasks++;
	r->cursor = 0;
	r->signals = palloc(sizeof(SignalEvent) * Max(h->nsignals, 1));
	memcpy(r->signals, h->signals, sizeof(SignalEvent) * h->nsignals);
	r->nsignals = h->nsignals;
	for (int i = 0; i < r->nsignals; i++)
		r->signals[i].received = false;
	r->open_commands = h->open_commands;
	r->execution_timeout = h->execution_timeout;
	MemoryContextSwitchTo(old);
}

/* ---- calling the workflow function ---- */

static Outcome
classify_error(Replay *r, ErrorData *edata)
{
	if (r->nondeterministic)
		return OUTCOME_TASK_FAILED;
	if (r->suspended)
		return OUTCOME_SUSPENDED;
	if (edata->sqlerrcode == ERRCODE_READ_ONLY_SQL_TRANSACTION)
	{
		edata->hint = pstrdup("Workflow code must not write to the database: move the write into an activity (durable.activity), whose effects are recorded once.");
		return OUTCOME_TASK_FAILED;
	}
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED && task_timed_out)
	{
		edata->message = psprintf("workflow code ran longer than durable.workflow_task_timeout (%d ms)",
								  durable_workflow_task_timeout_ms);
		edata->hint = pstrdup("Make the code wait with durable.sleep() or durable.wait_signal() rather than loop, or raise the timeout.");
		return OUTCOME_TASK_FAILED;
	}
	/* the worker was canceled: the task fails, to be retried */
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED && IsBackgroundWorker)
		return OUTCOME_TASK_FAILED;
	/* a client's cancel or statement_timeout is for its own statement */
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		return OUTCOME_CANCELED;
	return OUTCOME_RUN_FAILED;
}

static Outcome
call_workflow(Replay *r, Jsonb **result, ErrorData **edata)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool setting_up = true;
	volatile Outcome outcome = OUTCOME_RETURNED;
	FmgrInfo   *volatile flinfo = NULL;

	/* a query from workflow code replays another run inside this one */
	Replay	   *outer = current_replay;

	*result = NULL;
	*edata = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		Oid			funcoid;
		Datum		d;

		LOCAL_FCINFO(fcinfo, 1);

		funcoid = engine_function_oid(r->run->workflow);
		engine_check_role_may_run(funcoid, r->run->owner);
		engine_become_role(r->run->owner, true);
		environment_adopt();
		flinfo = engine_function_call_begin(funcoid);
		InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = JsonbPGetDatum(r->run->input);
		fcinfo->args[0].isnull = false;

		setting_up = false;
		current_replay = r;
		/* a query runs with no timeout of ours: none of an earlier task counts */
		task_timed_out = false;
		/* a query runs under its caller's own statement_timeout */
		if (!r->query_mode)
			start_task_timeout();
		plpgsql_exprs_code_begins(r, flinfo);
		d = FunctionCallInvoke(fcinfo);
		/* fired too late to stop the code: it must not cancel anything else */
		if (!r->query_mode && stop_task_timeout())
			QueryCancelPending = false;
		current_replay = outer;

		MemoryContextSwitchTo(r->cxt);
		if (!fcinfo->isnull)
			*result = DatumGetJsonbPCopy(d);
		MemoryContextSwitchTo(oldcxt);
		if (r->nondeterministic)
			outcome = OUTCOME_TASK_FAILED;
		else if (r->suspended)
			outcome = OUTCOME_SUSPENDED;
	}
	PG_CATCH();
	{
		if (!r->query_mode)
			(void) stop_task_timeout();
		current_replay = outer;
		MemoryContextSwitchTo(r->cxt);
		*edata = CopyErrorData();
		FlushErrorState();
		outcome = setting_up ? OUTCOME_TASK_FAILED : classify_error(r, *edata);
	}
	PG_END_TRY();
	if (flinfo != NULL)
		engine_function_call_end(flinfo);

	/* workflow code wrote nothing that should stay (temp tables included) */
	RollbackAndReleaseCurrentSubTransaction();
	plpgsql_exprs_release_busy(r);
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;

	if (outcome == OUTCOME_CANCELED)
		return outcome;
	/* the code ran out of commands before reaching all recorded ones */
	if ((outcome == OUTCOME_RETURNED || outcome == OUTCOME_SUSPENDED ||
		 outcome == OUTCOME_RUN_FAILED) && r->issued < r->max_recorded)
	{
		CommandSlot *slot = &r->slots[r->issued + 1];
		ErrorData  *e = palloc0(sizeof(ErrorData));

		e->sqlerrcode = ERRCODE_DURABLE_NONDETERMINISM;
		e->message = pstrdup("workflow code does not match the run's history");
		if (slot->kind == COMMAND_ACTIVITY)
			e->detail = psprintf("history has command %d, activity \"%s\" on task queue \"%s\", which the code no longer reaches",
								 r->issued + 1, slot->activity, slot->task_queue);
		else
			e->detail = psprintf("history has command %d, a timer, which the code no longer reaches",
								 r->issued + 1);
		e->hint = pstrdup("Restore the code that started the run (or make the change compatible with it), then call durable.retry_workflow_task().");
		*edata = e;
		outcome = OUTCOME_TASK_FAILED;
	}
	return outcome;
}

/* ---- recording the outcome ---- */

static void
update_run(Replay *r, const char *status, Jsonb *result, Jsonb *failure,
		   Jsonb *task_failure)
{
	engine_update_run(r->run, status, result, failure, task_failure);
}

static void
task_completed_event(Replay *r, int ncommands, NewEvent *event)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_int(&jb, "new_commands", ncommands);
	*event = NEW_EVENT("WorkflowTaskCompleted", json_end(&jb), r->task_time);
}

/* The last task of a run: WorkflowTaskCompleted, then the event that closes it. */
static void
append_closing_events(Replay *r, const char *event_type, Jsonb *details)
{
	NewEvent	events[2];

	task_completed_event(r, 0, &events[0]);
	events[1] = NEW_EVENT(event_type, details, r->task_time);
	engine_append_events(r->run, 2, events);
}

/* Records TimerStarted (after "before", if given, in the same append). */
static void
start_timer(Replay *r, NewCommand *cmd, const NewEvent *before)
{
	JsonBuf		jb;
	NewEvent	events[2];
	int			n = 0;

	json_begin(&jb);
	json_add_int(&jb, "handle", cmd->handle);
	json_add_time(&jb, "fire_at", cmd->fire_at);
	if (cmd->duration)
		json_add_str(&jb, "duration",
					 interval_text(cmd->duration));
	if (before)
		events[n++] = *before;
	events[n++] = NEW_EVENT("TimerStarted", json_end(&jb), r->task_time);
	engine_append_events(r->run, n, events);
	timer_schedule(r->run, "timer", cmd->handle, cmd->fire_at);
}

/*
 * The commands the code issued in this task, then its cancellations.
 * Returns true when a cancellation by the code took effect at once: the code
 * needs another task to see it.  *run_saved is set when the run's
 * next_event_id was recorded on the way (with the last activity: only when
 * nothing follows it and the run needs no other change).
 */
static bool
record_commands(Replay *r, bool *run_saved)
{
	ListCell   *lc;
	bool		resolved = false;
	NewEvent	task_completed;
	NewEvent   *first = &task_completed;

	*run_saved = false;
	/* WorkflowTaskCompleted goes with the first command's event: one row */
	task_completed_event(r, list_length(r->new_commands) + list_length(r->cancels),
						 &task_completed);
	foreach(lc, r->new_commands)
	{
		NewCommand *cmd = lfirst(lc);

		if (cmd->kind == COMMAND_ACTIVITY)
		{
			bool		last = lnext(r->new_commands, lc) == NULL && r->cancels == NIL &&
				!r->run->task_pending;

			activity_schedule(r->run, cmd->handle, cmd->activity, cmd->task_queue,
							  cmd->input, &cmd->options, r->task_time, first, last);
			*run_saved = last;
		}
		else
			start_timer(r, cmd, first);
		first = NULL;
	}
	if (first)
		engine_append_events(r->run, 1, first);
	foreach(lc, r->cancels)
	{
		CancelCommand *c = lfirst(lc);
		JsonBuf		jb;

		if (c->kind == COMMAND_ACTIVITY)
		{
			if (activity_request_cancel(r->run, c->handle, r->task_time))
				resolved = true;
			continue;
		}
		/* a timer that fired in the meantime is past canceling */
		if (!timer_cancel(r->run, c->handle))
			continue;
		json_begin(&jb);
		json_add_int(&jb, "handle", c->handle);
		engine_append_event(r->run, "TimerCanceled", json_end(&jb), r->task_time);
		if (c->by_code)
			resolved = true;
	}
	return resolved;
}

/*
 * A closed run's pending activities and timers are dropped; result() waiters
 * wake.  A run whose history leaves no command open has no task rows and no
 * timers but its execution timeout (every event that resolves a command
 * deletes its rows): most runs close with nothing to drop, and two DELETEs
 * that find nothing cost a tenth of a one-step workflow.
 */
static void
close_run(Replay *r)
{
	history_forget(r->run->run_id);
	if (r->open_commands > 0)
		activity_cancel_all(r->run);
	if (r->open_commands > 0 || r->execution_timeout)
		timers_cancel_all(r->run);
	durable_wake_closed_at_commit(r->run->workflow_id);
}

static void
record_outcome(Replay *r, Outcome outcome, Jsonb *result, ErrorData *edata)
{
	JsonBuf		jb;

	switch (outcome)
	{
		case OUTCOME_SUSPENDED:
			{
				bool		run_saved;

				if (record_commands(r, &run_saved))
					engine_request_workflow_task(r->run);
				else if (!r->run->task_pending)
				{
					/* a task run inline: nothing else about the run changes */
					if (!run_saved)
						engine_save_next_event_id(r->run);
				}
				else
					update_run(r, "running", NULL, NULL, NULL);
				break;
			}

		case OUTCOME_RETURNED:
			json_begin(&jb);
			json_add_jsonb(&jb, "result", result);
			append_closing_events(r, "WorkflowExecutionCompleted", json_end(&jb));
			update_run(r, "completed", result, NULL, NULL);
			close_run(r);
			break;

		case OUTCOME_RUN_FAILED:
			{
				Jsonb	   *failure = error_to_jsonb(edata);

				json_begin(&jb);
				json_add_jsonb(&jb, "failure", failure);
				append_closing_events(r, "WorkflowExecutionFailed", json_end(&jb));
				update_run(r, "failed", NULL, failure, NULL);
				close_run(r);
				break;
			}

		case OUTCOME_TASK_FAILED:
			{
				Jsonb	   *failure = error_to_jsonb(edata);

				json_begin(&jb);
				json_add_str(&jb, "cause",
							 edata->sqlerrcode == ERRCODE_DURABLE_NONDETERMINISM ? "nondeterminism" :
							 edata->sqlerrcode == ERRCODE_READ_ONLY_SQL_TRANSACTION ? "write_in_workflow_code" :
							 edata->sqlerrcode == ERRCODE_QUERY_CANCELED ? "timeout" :
							 "cannot_run_workflow_code");
				json_add_jsonb(&jb, "failure", failure);
				failure = json_end(&jb);
				engine_append_event(r->run, "WorkflowTaskFailed", failure, r->task_time);
				update_run(r, "running", NULL, NULL, failure);
				ereport(LOG,
						(errmsg("durable: workflow task of \"%s\" failed: %s",
								r->run->workflow_id, edata->message),
						 edata->detail ? errdetail("%s", edata->detail) : 0));
				break;
			}

		case OUTCOME_CANCELED:
			ReThrowError(edata);
	}
}

/* What the workflow code did in one task, not yet recorded. */
typedef struct CodeRun
{
	Replay	   *replay;
	Outcome		outcome;
	Jsonb	   *result;
	ErrorData  *edata;
} CodeRun;

/*
 * Calls the workflow code of a locked run against its history h.  Writes
 * nothing: the code runs in a subtransaction that is rolled back.
 */
static void
run_code(LockedRun *run, RunHistory *h, CodeRun *code)
{
	Replay	   *r = palloc0(sizeof(Replay));

	r->cxt = CurrentMemoryContext;
	r->run = run;
	r->task_time = GetCurrentTimestamp();
	load_history(r, h);
	code->replay = r;
	code->outcome = call_workflow(r, &code->result, &code->edata);
}

/*
 * Runs the workflow task of a locked run, against its history h; or, when
 * the code would only stop where it stopped last time (nothing it waits for
 * has come: another result of a fan-out still open), makes the task done
 * without running the code: a run of the code would issue nothing and
 * record only a WorkflowTaskCompleted, which tells replay nothing (the next
 * task that runs the code records its own, where the code goes on).
 */
static void
execute_task(LockedRun *run, RunHistory *h)
{
	CodeRun		code;

	if (history_still_blocked(h))
	{
		engine_update_run(run, "running", NULL, NULL, NULL);
		return;
	}
	run_code(run, h, &code);
	record_outcome(code.replay, code.outcome, code.result, code.edata);
	if (code.outcome == OUTCOME_SUSPENDED && !code.replay->nondeterministic)
		history_note_blocked(run, &code.replay->blocked);
}

/* ---- running a task where its cause happened ---- */

/*
 * May this backend run the workflow task of a run it holds, now, for the
 * role caller?  Not when durable.eager_workflow_tasks is off; not unless
 * caller has the privileges of the run's owner (the owner's code would run
 * in the caller's session, among its settings and cursors: a session that
 * acts for the owner anyway, as durable.query() requires too); not in a
 * REPEATABLE READ or SERIALIZABLE transaction (the task must see the latest
 * history, which the run lock guarantees only to a fresh snapshot); not in a
 * session with temporary objects (code run by the worker never sees any);
 * not without a running worker whose settings the code can run under.
 */
static bool
may_run_task_here(LockedRun *run, Oid caller)
{
	Oid			temp_namespace;
	Oid			temp_toast_namespace;

	if (!durable_eager_workflow_tasks || IsolationUsesXactSnapshot() ||
		run->task_failed || strcmp(run->status, "running") != 0 ||
		!has_privs_of_role(caller, run->owner))
		return false;
	GetTempNamespaceState(&temp_namespace, &temp_toast_namespace);
	return !OidIsValid(temp_namespace) && environment_available();
}

/*
 * The caller holds the run locked and has just appended the event that
 * makes a workflow task due (an activity's result).  When that event leaves
 * the code nothing else to wait for (no other activity or timer open: the
 * usual sequential step), runs the task right here, in the caller's
 * transaction: the next command is scheduled in the same commit, with no
 * trip through the worker.  Otherwise (a fan-out still open: the worker
 * then runs one task for many results) or when this backend may not run
 * it, or if the engine fails before the code has run (the worker will try
 * again, and park the run if it fails too), returns false and leaves the
 * run as it was: the caller makes the task due for the worker.
 *
 * Only the reading and the code are in a subtransaction of their own (which
 * writes nothing, so it takes no transaction id); what the code did is
 * recorded by the caller's transaction, which locked the run.  Recorded in a
 * subtransaction, the run's new version would carry the caller's lock and
 * the subtransaction's update: a MultiXact, and a second transaction id, at
 * every step.  An error while recording fails the caller's statement, as an
 * error in the completion itself would.
 */
typedef struct InlineTask
{
	LockedRun  *run;
	bool		ran;
	CodeRun		code;
} InlineTask;

static void
run_inline_code(void *arg)
{
	InlineTask *task = arg;
	RunHistory *h = history_load(task->run, true);

	if (h->open_commands == 0)
	{
		run_code(task->run, h, &task->code);
		task->ran = true;
	}
}

bool
replay_task_inline(LockedRun *run, Oid caller)
{
	LockedRun	saved = *run;
	InlineTask	task = {.run = run};
	ErrorData  *edata;

	if (!may_run_task_here(run, caller))
		return false;
	edata = engine_in_subxact(run_inline_code, &task);
	if (edata != NULL)
	{
		/* a cancel, or a lock the caller gave up on, is the caller's */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED || ENGINE_LOCK_BUSY(edata))
			ReThrowError(edata);
		ereport(LOG,
				(errmsg("durable: workflow task of \"%s\" left to the worker: %s",
						run->workflow_id, edata->message)));
		*run = saved;
		return false;
	}
	if (!task.ran)
		return false;
	record_outcome(task.code.replay, task.code.outcome, task.code.result,
				   task.code.edata);
	return true;
}

/* ---- the worker's entry point ---- */

/*
 * An error of the engine itself (not of workflow code) while running a
 * run's task: park that run with the error, so the worker goes on with the
 * others and a person can look.
 */
static void
park_run(Datum run_id, ErrorData *edata)
{
	static EnginePlan plan = {NULL,
		"WITH parked AS ("
		"  UPDATE durable.runs SET task_failure = $2 WHERE run_id = $1 AND status = 'running'"
		"  RETURNING run_id)"
		" DELETE FROM durable.due_tasks d USING parked p WHERE d.run_id = p.run_id",
	2, {UUIDOID, JSONBOID}};
	JsonBuf		jb;
	Datum		values[2];

	json_begin(&jb);
	json_add_str(&jb, "cause", "engine_error");
	json_add_jsonb(&jb, "failure", error_to_jsonb(edata));
	values[0] = run_id;
	values[1] = JsonbPGetDatum(json_end(&jb));
	engine_exec(&plan, values, NULL, 0);
}

/*
 * A run in a batch of the worker's, and where the queue's row said its rows
 * were (hints; invalid: not known).
 */
typedef struct BatchRun
{
	Datum		run_id;
	ItemPointerData due_row;	/* its row in durable.due_tasks */
	ItemPointerData run_row;	/* its row in durable.runs, when queued */
} BatchRun;

/* One run's workflow task in a batch of the worker's. */
typedef struct WorkerTask
{
	const BatchRun *run;
	/* activity results wait on its task rows: record them first */
	bool		record_results;
	bool		ran;			/* locked it (and ran its task, if still due) */
} WorkerTask;

/*
 * Records the activity results that wait on the task rows of a run locked
 * here (see activity_complete_unlocked); its workflow task is then due.
 */
static void
record_results(LockedRun *run)
{
	if (strcmp(run->status, "running") != 0)
	{
		/* a closed run's tasks are dropped when it closes: these came late */
		activity_cancel_all(run);
		return;
	}
	if (activity_record_ended(run) == 0)
		return;
	if (run->task_failed)
		engine_request_workflow_task(run);	/* parked: kept for its retry */
	else
		run->task_pending = true;	/* the task below records the run */
}

static void
run_worker_task(void *arg)
{
	WorkerTask *task = arg;
	Datum		run_id = task->run->run_id;
	LockedRun  *run = palloc0(sizeof(LockedRun));
	ItemPointerData run_row = task->run->run_row;
	bool		skip_locked = !task->record_results ||
		engine_was_busy(engine_run_key(run_id));

	/*
	 * Locked here, by the (sub)transaction that updates it: a lock of the
	 * batch's transaction, updated by a subtransaction of it, would make the
	 * update create a MultiXact.  A run someone else holds is left for the
	 * next batch.  A queue row with no task behind it (the run gone, its task
	 * taken care of, the run closed or parked: none of which the engine
	 * leaves, but a hand may) is dropped, so that it does not stay at the
	 * head of the queue.  Results wait for their run (a completion holds
	 * it until its commit) unless the last wait for it timed out: an
	 * application holds it, and the worker tries again without waiting.
	 */
	if (!engine_find_run_at(run_id, &run_row, NULL, run,
							skip_locked ? RUN_LOCK_OR_SKIP : RUN_LOCK))
	{
		LockedRun	exists;

		if (!engine_read_run(run_id, &exists))
		{
			engine_dequeue_run(run_id);
			if (task->record_results)
			{
				run->run_id = run_id;
				activity_cancel_all(run);
			}
		}
		return;
	}
	run->due_row = task->run->due_row;
	task->ran = true;
	if (task->record_results)
	{
		engine_forget_busy(engine_run_key(run_id));
		record_results(run);
	}
	if (run->task_pending && !run->task_failed && strcmp(run->status, "running") == 0)
		execute_task(run, history_load(run, true));
	else
		engine_dequeue_run(run->run_id);
}

/*
 * A task run in a task-by-task batch (see replay_run_tasks()), or a run
 * whose activity results wait (record_results): that one waits for its run
 * (a completion holds it until its commit) up to the worker's lock_timeout,
 * then is left alone for a second (engine_note_busy()), and tried again
 * without a wait until it is had.
 */
static bool
run_task_isolated(const BatchRun *r, bool record_results)
{
	WorkerTask	task = {r, record_results, false};
	Datum		run_id = r->run_id;
	ErrorData  *edata;

	if (engine_is_busy(engine_run_key(run_id)))
		return false;
	edata = engine_in_subxact(run_worker_task, &task);
	if (edata == NULL)
	{
		/* results whose run was held again: left for a while once more */
		if (record_results && !task.ran)
			engine_note_busy(engine_run_key(run_id));
		return task.ran;
	}
	if (ENGINE_LOCK_BUSY(edata))
	{
		engine_note_busy(engine_run_key(run_id));	/* an application holds a row */
		return false;
	}
	ereport(LOG,
			(errmsg("durable: engine error running a workflow task, run parked: %s",
					edata->message)));
	park_run(run_id, edata);
	/* its waiting results stay (rolled back with the error): not at once again */
	if (record_results)
		engine_note_busy(engine_run_key(run_id));
	return true;
}

/* A task run in the batch's transaction itself: see replay_run_tasks(). */
static bool
run_task_in_batch(const BatchRun *r)
{
	WorkerTask	task = {r, false, false};

	if (engine_is_busy(engine_run_key(r->run_id)))
		return false;
	run_worker_task(&task);
	return task.ran;
}

/* An SPI result's column of type tid, or an invalid one if NULL or absent. */
static ItemPointerData
result_tid(uint64 row, int col)
{
	ItemPointerData tid;
	bool		isnull = true;
	Datum		d = (Datum) 0;

	if (col <= SPI_tuptable->tupdesc->natts)
		d = engine_get(row, col, &isnull);
	if (isnull)
		ItemPointerSetInvalid(&tid);
	else
		tid = *(ItemPointer) DatumGetPointer(d);
	return tid;
}

/*
 * Adds the runs of the current SPI result (run_id, and where its queue row
 * and run row are, if the result has them) to runs (n of them so far), but
 * those already there; returns the new count.
 */
static int
add_runs(BatchRun *runs, int n)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		run_id = engine_get(i, 1, &isnull);
		int			j = 0;

		while (j < n && memcmp(DatumGetUUIDP(runs[j].run_id), DatumGetUUIDP(run_id),
							   UUID_LEN) != 0)
			j++;
		if (j == n)
		{
			runs[n].run_id = run_id;
			runs[n].due_row = result_tid(i, 2);
			runs[n].run_row = result_tid(i, 3);
			n++;
		}
	}
	return n;
}

/*
 * One batch, in one transaction: first the runs whose activity results wait
 * (when *results: up to max_tasks, each in a subtransaction), then up to
 * max_tasks due workflow tasks, each in a subtransaction of its own if
 * isolated; see replay_run_tasks().  *results is left true if results were
 * found (more may have come meanwhile, or a run was busy: look again).
 */
static int
run_batch(int max_tasks, TimestampTz stop_at, bool isolated, bool *results, bool *busy)
{
	static EnginePlan waiting = {NULL,
		"SELECT DISTINCT run_id FROM durable.activity_tasks"
		" WHERE status IN ('completed', 'failed')"
		" LIMIT $1",
	1, {INT4OID}};
	static EnginePlan due = {NULL,
		"SELECT run_id, ctid, run_row FROM durable.due_tasks ORDER BY due_at LIMIT $1",
	1, {INT4OID}};
	EngineScope scope;
	Datum		values[1] = {Int32GetDatum(max_tasks)};
	BatchRun   *runs;
	int			with_results = 0;
	int			n;
	int			ran = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "durable: running workflow tasks");
	engine_enter(&scope);
	runs = palloc(sizeof(BatchRun) * max_tasks * 2);
	if (*results)
	{
		engine_exec(&waiting, values, NULL, 0);
		with_results = add_runs(runs, 0);
	}
	*results = with_results > 0;
	engine_exec(&due, values, NULL, 0);
	n = add_runs(runs, with_results);
	for (int i = 0; i < n; i++)
	{
		bool		ok;

		if (i < with_results || isolated)
			ok = run_task_isolated(&runs[i], i < with_results);
		else
			ok = run_task_in_batch(&runs[i]);
		if (ok)
			ran++;
		else
			*busy = true;
		if (GetCurrentTimestamp() >= stop_at)
			break;
	}
	engine_leave(&scope);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return ran;
}

/*
 * Runs up to max_tasks due workflow tasks in one transaction (one commit for
 * all of them), and stops early once stop_at has passed (a timer is due: it
 * must not wait for a whole batch).  Returns how many ran; *busy is set when
 * a due run was skipped because someone else held it.
 *
 * The tasks run in the batch's transaction itself: a subtransaction per
 * task, which writes, would take a transaction id of its own (a one-step
 * workflow would use two in all, one of them the client's, and anti-
 * wraparound vacuums come with the ids used) and cost its begin and commit.
 * Should anything fail (an engine error, a row an application holds past
 * the worker's lock_timeout), the whole batch is rolled back and run again
 * task by task, each in a subtransaction: an engine error then undoes only
 * its own run, which is parked, and a run whose rows someone holds is left
 * for later.  The next few batches go task by task from the start, so that
 * a run that keeps failing does not keep costing whole batches.
 */
#define ISOLATED_BATCHES_AFTER_FAILURE 16

int
replay_run_tasks(int max_tasks, TimestampTz stop_at, bool *results, bool *busy)
{
	static int	isolated_batches = 0;
	MemoryContext cxt = CurrentMemoryContext;
	volatile int ran = -1;
	bool		look_for_results = *results;

	*busy = false;
	if (isolated_batches > 0)
	{
		isolated_batches--;
		return run_batch(max_tasks, stop_at, true, results, busy);
	}
	PG_TRY();
	{
		ran = run_batch(max_tasks, stop_at, false, results, busy);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(cxt);
		RESUME_INTERRUPTS();
		ereport(DEBUG1,
				(errmsg("durable: batch of workflow tasks rolled back, run again task by task: %s",
						edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	if (ran >= 0)
		return ran;
	isolated_batches = ISOLATED_BATCHES_AFTER_FAILURE;
	*busy = false;
	*results = look_for_results;
	return run_batch(max_tasks, stop_at, true, results, busy);
}

/* ---- queries ---- */

/* Calls handler(answer, args) as the run's owner, read-only. */
static Jsonb *
call_query_handler(Replay *r, QueryAnswer *qa, Jsonb *args)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Jsonb	   *volatile result = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		Oid			argtypes[2] = {JSONBOID, JSONBOID};
		Oid			funcoid;
		FmgrInfo	flinfo;
		Datum		d;

		LOCAL_FCINFO(fcinfo, 2);

		engine_pin_search_path();
		funcoid = LookupFuncName(stringToQualifiedNameList(qa->handler),
								 2, argtypes, false);

		if (get_func_rettype(funcoid) != JSONBOID)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
					 errmsg("query handler %s must return jsonb", format_procedure(funcoid))));
		if (durable_proc_aclcheck(funcoid, r->run->owner, ACL_EXECUTE) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(funcoid));
		engine_become_role(r->run->owner, true);
		fmgr_info(funcoid, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, 2, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = qa->answer ? JsonbPGetDatum(qa->answer) : (Datum) 0;
		fcinfo->args[0].isnull = qa->answer == NULL;
		fcinfo->args[1].value = args ? JsonbPGetDatum(args) : (Datum) 0;
		fcinfo->args[1].isnull = args == NULL;
		if (!(flinfo.fn_strict && (qa->answer == NULL || args == NULL)))
		{
			d = FunctionCallInvoke(fcinfo);
			MemoryContextSwitchTo(r->cxt);
			if (!fcinfo->isnull)
				result = DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(oldcxt);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ReThrowError(edata);
	}
	PG_END_TRY();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return result;
}

static void
no_such_query(Replay *r, const char *query)
{
	StringInfoData known;
	ListCell   *lc;

	initStringInfo(&known);
	foreach(lc, r->query_answers)
		appendStringInfo(&known, "%s%s", known.len ? ", " : "",
						 ((QueryAnswer *) lfirst(lc))->name);
	ereport(ERROR,
			(errcode(ERRCODE_DURABLE_QUERY_NOT_ANSWERED),
			 errmsg("workflow \"%s\" does not answer query \"%s\"", r->run->workflow_id, query),
			 known.len ?
			 errdetail("At its current point it answers: %s.", known.data) :
			 errdetail("Its code has declared no query answers so far."),
			 errhint("Declare answers in the workflow function with durable.on_query(query, answer).")));
}

/*
 * Answers a query from the run's state at its current point: replays the
 * code against the history, records nothing.
 */
Jsonb *
replay_query(LockedRun *run, const char *query, Jsonb *args)
{
	Replay	   *r = palloc0(sizeof(Replay));
	Jsonb	   *result;
	ErrorData  *edata;
	Outcome		outcome;
	ListCell   *lc;

	r->cxt = CurrentMemoryContext;
	r->run = run;
	r->task_time = GetCurrentTimestamp();
	r->query_mode = true;
	load_history(r, history_load(run, false));
	outcome = call_workflow(r, &result, &edata);
	/* the caller's cancel or statement_timeout ends the query */
	if (outcome == OUTCOME_CANCELED)
		ReThrowError(edata);
	if (outcome == OUTCOME_TASK_FAILED)
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("cannot answer query \"%s\": %s", query, edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 edata->hint ? errhint("%s", edata->hint) : 0));

	foreach(lc, r->query_answers)
	{
		QueryAnswer *qa = lfirst(lc);

		if (strcmp(qa->name, query) == 0)
			return qa->handler ? call_query_handler(r, qa, args) : qa->answer;
	}
	no_such_query(r, query);
	return NULL;				/* keep compiler quiet */
}

Datum
durable_query(PG_FUNCTION_ARGS)
{
	static EnginePlan find = {NULL,
		"SELECT run_id, owner FROM durable.runs WHERE workflow_id = $1 AND NOT superseded",
	1, {TEXTOID}};
	MemoryContext fn_cxt = CurrentMemoryContext;
	char	   *workflow_id;
	char	   *query;
	Jsonb	   *args;
	Jsonb	   *answer = NULL;
	EngineScope scope;
	Datum		values[1];
	bool		found;
	LockedRun	run;

	durable_require_preload();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow_id and query must not be null")));
	workflow_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	args = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	values[0] = CStringGetTextDatum(workflow_id);

	engine_enter(&scope);
	found = engine_exec(&find, values, NULL, 1) == 1;
	if (found)
	{
		bool		isnull;

		found = has_privs_of_role(scope.caller,
								  DatumGetObjectId(engine_get(0, 2, &isnull)));
		values[0] = engine_get(0, 1, &isnull);
	}
	if (found && engine_read_run(values[0], &run))
	{
		Jsonb	   *a = replay_query(&run, query, args);

		if (a != NULL)
			answer = (Jsonb *) MemoryContextAlloc(fn_cxt, VARSIZE(a));
		if (a != NULL)
			memcpy(answer, a, VARSIZE(a));
	}
	else
		found = false;
	engine_leave(&scope);

	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", workflow_id),
				 errhint("List the workflows you can see with: SELECT * FROM durable.workflows;")));
	if (answer == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(answer);
}
