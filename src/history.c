/*-------------------------------------------------------------------------
 *
 * history.c
 *	  A run's history, parsed into what replay needs: the commands under
 *	  each handle and how they ended, the workflow task boundaries, the
 *	  signals.  The worker keeps it between tasks and reads only the events
 *	  appended since, so a long run's history is not re-read or re-parsed in
 *	  full at every task.
 *
 * Events are never changed once written, so what was read stays true as
 * long as it was committed: the cache needs no invalidation but forgetting
 * closed runs.  A backend that runs a workflow task inline (after completing
 * an activity) also reads the events its own transaction has just appended;
 * until that transaction commits those runs are noted, and forgotten if it
 * (or the subtransaction that read them) rolls back or is prepared.  The
 * cache is bounded: past HISTORY_CACHE_RUNS runs (fewer in client backends,
 * which hold one each) it is emptied and refilled on demand.
 *
 *-------------------------------------------------------------------------
 */
#include "replay.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#define HISTORY_CACHE_RUNS			10000
#define HISTORY_CACHE_RUNS_CLIENT	1000

static HTAB *cache = NULL;
static MemoryContext cache_cxt = NULL;

/* Runs read by the current transaction: forgotten if it does not commit. */
typedef struct ReadRun
{
	pg_uuid_t	run_id;
	SubTransactionId subid;		/* the subtransaction that read it */
} ReadRun;

static ReadRun *read_runs = NULL;
static int	n_read_runs = 0;
static int	read_runs_allocated = 0;
static bool callbacks_registered = false;

static CommandSlot *
slot_for_event(RunHistory *h, Jsonb *details)
{
	int64		handle;

	if (!jsonb_field_int(details, "handle", &handle) || handle < 1 || handle > INT32_MAX)
		elog(ERROR, "history event has no valid handle");
	if (handle >= h->slots_allocated)
	{
		int32		newsize = Max(16, (int32) handle * 2);

		h->slots = repalloc(h->slots, sizeof(CommandSlot) * newsize);
		memset(&h->slots[h->slots_allocated], 0,
			   sizeof(CommandSlot) * (newsize - h->slots_allocated));
		h->slots_allocated = newsize;
	}
	h->max_recorded = Max(h->max_recorded, (int32) handle);
	return &h->slots[handle];
}

/* The event that ends the command under slot: it is no longer open. */
static void
resolve_slot(RunHistory *h, CommandSlot *slot, int64 event_id)
{
	if (slot->resolved_by == 0 && slot->kind != COMMAND_NONE)
		h->open_commands--;
	slot->resolved_by = event_id;
}

static void
add_task_boundary(RunHistory *h, int64 event_id, TimestampTz time)
{
	if (h->ntasks == h->tasks_allocated)
	{
		h->tasks_allocated *= 2;
		h->tasks = repalloc(h->tasks, sizeof(TaskBoundary) * h->tasks_allocated);
	}
	h->tasks[h->ntasks].event_id = event_id;
	h->tasks[h->ntasks].time = time;
	h->ntasks++;
}

static void
add_signal(RunHistory *h, int64 event_id, Jsonb *details)
{
	SignalEvent *sig;

	if (h->nsignals == h->signals_allocated)
	{
		h->signals_allocated *= 2;
		h->signals = repalloc(h->signals, sizeof(SignalEvent) * h->signals_allocated);
	}
	sig = &h->signals[h->nsignals++];
	sig->event_id = event_id;
	sig->name = jsonb_field_text(details, "signal");
	sig->payload = jsonb_field(details, "payload");
	sig->received = false;
}

/*
 * An activity's result, or an attempt's failure or timeout that the
 * activity retries (which replay does not see): the only events that cannot
 * send the code anywhere but where a result it waits for does.
 */
static bool
result_or_retry(const char *type, Jsonb *details)
{
	if (strcmp(type, "ActivityTaskCompleted") == 0)
		return true;
	return (strcmp(type, "ActivityTaskFailed") == 0 ||
			strcmp(type, "ActivityTaskTimedOut") == 0) &&
		jsonb_field(details, "final") == NULL;
}

/* What one event tells replay.  Allocates in the history's context. */
static void
apply_event(RunHistory *h, int64 event_id, TimestampTz time, const char *type,
			Jsonb *details)
{
	CommandSlot *slot;

	if (!result_or_retry(type, details))
		h->last_other_event = event_id;
	if (strcmp(type, "WorkflowTaskCompleted") == 0)
		add_task_boundary(h, event_id, time);
	else if (strcmp(type, "WorkflowExecutionStarted") == 0)
		h->execution_timeout = jsonb_field(details, "execution_timeout") != NULL;
	else if (strcmp(type, "ActivityTaskScheduled") == 0)
	{
		slot = slot_for_event(h, details);
		if (slot->kind == COMMAND_NONE)
			h->open_commands++;
		slot->kind = COMMAND_ACTIVITY;
		slot->activity = jsonb_field_text(details, "activity");
		slot->task_queue = jsonb_field_text(details, "task_queue");
	}
	else if (strcmp(type, "ActivityTaskCompleted") == 0)
	{
		slot = slot_for_event(h, details);
		resolve_slot(h, slot, event_id);
		slot->result = jsonb_field(details, "result");
	}
	else if (strcmp(type, "TimerStarted") == 0)
	{
		slot = slot_for_event(h, details);
		if (slot->kind == COMMAND_NONE)
			h->open_commands++;
		slot->kind = COMMAND_TIMER;
	}
	else if (strcmp(type, "TimerFired") == 0)
	{
		slot = slot_for_event(h, details);
		resolve_slot(h, slot, event_id);
	}
	else if (strcmp(type, "TimerCanceled") == 0 ||
			 strcmp(type, "ActivityTaskCanceled") == 0)
	{
		slot = slot_for_event(h, details);
		slot->canceled = true;
		resolve_slot(h, slot, event_id);
	}
	else if (strcmp(type, "ActivityTaskCancelRequested") == 0)
		slot_for_event(h, details)->cancel_requested = true;
	else if (strcmp(type, "WorkflowExecutionSignaled") == 0)
		add_signal(h, event_id, details);
	else if ((strcmp(type, "ActivityTaskFailed") == 0 ||
			  strcmp(type, "ActivityTaskTimedOut") == 0) &&
			 jsonb_field(details, "final") != NULL)
	{
		slot = slot_for_event(h, details);
		resolve_slot(h, slot, event_id);
		slot->failed = true;
		slot->failure = details;
	}
}

static void
init_history(RunHistory *h, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);

	h->cxt = cxt;
	h->last_event_id = 0;
	h->slots_allocated = 16;
	h->slots = palloc0(sizeof(CommandSlot) * h->slots_allocated);
	h->max_recorded = 0;
	h->open_commands = 0;
	h->execution_timeout = false;
	h->tasks_allocated = 16;
	h->tasks = palloc(sizeof(TaskBoundary) * h->tasks_allocated);
	h->ntasks = 0;
	h->signals_allocated = 8;
	h->signals = palloc(sizeof(SignalEvent) * h->signals_allocated);
	h->nsignals = 0;
	h->last_other_event = 0;
	memset(&h->blocked, 0, sizeof(Blocked));
	h->blocked_after = 0;
	MemoryContextSwitchTo(old);
}

/* One event read from the table: applied, in the history's memory. */
static void
apply_read_event(void *arg, int64 event_id, TimestampTz time, const char *type,
				 Jsonb *details)
{
	RunHistory *h = arg;
	MemoryContext old = MemoryContextSwitchTo(h->cxt);

	apply_event(h, event_id, time, type, DatumGetJsonbPCopy(JsonbPGetDatum(details)));
	h->last_event_id = event_id;
	MemoryContextSwitchTo(old);
}

/* Reads and applies the events after h->last_event_id. */
static void
read_new_events(RunHistory *h, Datum run_id)
{
	engine_read_events(run_id, h->last_event_id, apply_read_event, h);
}

/* Forgets the runs read since subtransaction subid began (all: 0). */
static void
forget_read_since(SubTransactionId subid)
{
	int			kept = 0;

	for (int i = 0; i < n_read_runs; i++)
	{
		if (read_runs[i].subid >= subid)
			history_forget(UUIDPGetDatum(&read_runs[i].run_id));
		else
			read_runs[kept++] = read_runs[i];
	}
	n_read_runs = kept;
}

static void
history_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			n_read_runs = 0;	/* what was read is committed now */
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:	/* may yet be rolled back, by anyone */
			forget_read_since(InvalidSubTransactionId);
			break;
		default:
			break;
	}
}

static void
history_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		forget_read_since(mySubid);
}

/* Notes that the current (sub)transaction read run_id's events. */
static void
note_read(Datum run_id)
{
	SubTransactionId subid = GetCurrentSubTransactionId();

	/* the same run read again by the same subtransaction: noted already */
	if (n_read_runs > 0 && read_runs[n_read_runs - 1].subid == subid &&
		memcmp(&read_runs[n_read_runs - 1].run_id, DatumGetUUIDP(run_id),
			   sizeof(pg_uuid_t)) == 0)
		return;
	if (!callbacks_registered)
	{
		RegisterXactCallback(history_xact_callback, NULL);
		RegisterSubXactCallback(history_subxact_callback, NULL);
		callbacks_registered = true;
	}
	if (n_read_runs == read_runs_allocated)
	{
		read_runs_allocated = Max(16, read_runs_allocated * 2);
		read_runs = read_runs == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(ReadRun) * read_runs_allocated) :
			repalloc(read_runs, sizeof(ReadRun) * read_runs_allocated);
	}
	memcpy(&read_runs[n_read_runs].run_id, DatumGetUUIDP(run_id), sizeof(pg_uuid_t));
	read_runs[n_read_runs].subid = subid;
	n_read_runs++;
}

static RunHistory *
cached_history(Datum run_id)
{
	pg_uuid_t  *key = DatumGetUUIDP(run_id);
	long		max_runs = IsBackgroundWorker ? HISTORY_CACHE_RUNS : HISTORY_CACHE_RUNS_CLIENT;
	RunHistory *h;
	bool		found;

	if (cache == NULL || hash_get_num_entries(cache) >= max_runs)
	{
		HASHCTL		ctl;

		if (cache_cxt != NULL)
			MemoryContextDelete(cache_cxt);
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "durable history cache",
										  ALLOCSET_DEFAULT_SIZES);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(RunHistory);
		ctl.hcxt = cache_cxt;
		cache = hash_create("durable history cache", 256, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	h = hash_search(cache, key, HASH_ENTER, &found);
	if (!found)
		init_history(h, AllocSetContextCreate(cache_cxt, "durable run history",
											  ALLOCSET_SMALL_SIZES));
	return h;
}

/*
 * The run's parsed history (its run locked by the caller, so that no event
 * can be appended meanwhile).  Cached: only the events that are new to this
 * backend are read.  Not cached (a query): all of them, into a history of
 * its own.
 */
RunHistory *
history_load(LockedRun *run, bool cached)
{
	RunHistory *h;

	if (cached)
	{
		h = cached_history(run->run_id);
		note_read(run->run_id);
		/* up to date: this backend appended or read every event so far */
		if (h->last_event_id == run->next_event_id - 1)
			return h;

		/*
		 * A new run's first task: its one event, WorkflowExecutionStarted,
		 * tells replay nothing but whether an execution timeout was set (the
		 * input is the run row's).  Not read: taken as set, so that closing
		 * the run looks for the timer (a probe) instead of every first task
		 * reading the history (a tenth of the worker's share of a
		 * one-activity workflow).
		 */
		if (h->last_event_id == 0 && run->next_event_id == 2)
		{
			h->last_event_id = 1;
			h->execution_timeout = true;
			return h;
		}
	}
	else
	{
		h = palloc0(sizeof(RunHistory));
		init_history(h, CurrentMemoryContext);
	}
	read_new_events(h, run->run_id);
	return h;
}

/*
 * An event was just appended to a locked run, with the ids from
 * first_event_id to event_id (an activity attempt's end takes its start's
 * id too, which tells replay nothing): if this backend's cached history of
 * the run is up to date, applies it there, so that the next workflow task
 * here need not read it back.  Like anything read by an open transaction,
 * it is forgotten if the transaction does not commit.
 */
void
history_note_appended(LockedRun *run, int64 first_event_id, int64 event_id,
					  TimestampTz time, const char *type, Jsonb *details)
{
	RunHistory *h;
	MemoryContext old;

	if (cache == NULL)
		return;
	h = hash_search(cache, DatumGetUUIDP(run->run_id), HASH_FIND, NULL);
	if (h == NULL || h->last_event_id != first_event_id - 1)
		return;
	note_read(run->run_id);
	old = MemoryContextSwitchTo(h->cxt);
	apply_event(h, event_id, time, type, DatumGetJsonbPCopy(JsonbPGetDatum(details)));
	h->last_event_id = event_id;
	MemoryContextSwitchTo(old);
}

/*
 * The workflow task just recorded on a locked run suspended its code where
 * blocked says: kept with this backend's cached history of the run, if that
 * is up to date (the task's own events included).
 */
void
history_note_blocked(LockedRun *run, const Blocked *blocked)
{
	RunHistory *h;

	if (cache == NULL)
		return;
	h = hash_search(cache, DatumGetUUIDP(run->run_id), HASH_FIND, NULL);
	if (h == NULL || h->last_event_id != run->next_event_id - 1)
		return;
	/* replaced at every task of a long run: not left to the run's context */
	if (h->blocked.handles != NULL)
		pfree(h->blocked.handles);
	h->blocked.handles = NULL;
	h->blocked.on = blocked->on;
	h->blocked.nhandles = blocked->nhandles;
	if (blocked->on != BLOCKED_UNKNOWN)
	{
		h->blocked.handles = MemoryContextAlloc(h->cxt, sizeof(int64) * Max(blocked->nhandles, 1));
		memcpy(h->blocked.handles, blocked->handles, sizeof(int64) * blocked->nhandles);
	}
	h->blocked_after = h->last_event_id;
}

static bool
handle_resolved(RunHistory *h, int64 handle)
{
	return handle >= 1 && handle <= h->max_recorded && h->slots[handle].resolved_by != 0;
}

/*
 * Would the code, run now against h, stop where this backend's last task of
 * the run left it, issuing nothing?  Yes if every event since is an
 * activity's result or a retried attempt (no failure for good, signal,
 * timer, cancel: those may send the code elsewhere) and none of them gives
 * the await it stopped at what it waits for.  The code's path up to that
 * await is what it was: each deterministic call before it returns what the
 * history said then (an await_any its first result in history order;
 * durable.now() the time under replay's cursor, which only awaits move), as
 * long as the code is deterministic, as workflow code must be.
 */
bool
history_still_blocked(RunHistory *h)
{
	int			resolved = 0;

	if (h->blocked.on == BLOCKED_UNKNOWN || h->last_other_event > h->blocked_after)
		return false;
	for (int i = 0; i < h->blocked.nhandles; i++)
		if (handle_resolved(h, h->blocked.handles[i]))
			resolved++;
	if (h->blocked.on == BLOCKED_ALL)
		return resolved < h->blocked.nhandles;
	return resolved == 0;
}

/* A run closed, or what was read of it may not stay: drop it from the cache. */
void
history_forget(Datum run_id)
{
	RunHistory *h;

	if (cache == NULL)
		return;
	h = hash_search(cache, DatumGetUUIDP(run_id), HASH_FIND, NULL);
	if (h == NULL)
		return;
	MemoryContextDelete(h->cxt);
	(void) hash_search(cache, DatumGetUUIDP(run_id), HASH_REMOVE, NULL);
}
