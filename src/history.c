/*-------------------------------------------------------------------------
 *
 * history.c
 *	  A run's history, parsed into what replay needs: the commands under
 *	  each handle and how they ended, the workflow task boundaries, the
 *	  signals.  The worker keeps it between tasks and reads only the events
 *	  appended since, so a long run's history is not re-read or re-parsed in
 *	  full at every task.
 *
 * Only committed events are ever read, and events are never changed once
 * written, so what was read stays true: the cache needs no invalidation but
 * forgetting closed runs.  It is bounded: past HISTORY_CACHE_RUNS runs it is
 * emptied and refilled on demand.
 *
 *-------------------------------------------------------------------------
 */
#include "replay.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#define HISTORY_CACHE_RUNS	10000

static HTAB *cache = NULL;
static MemoryContext cache_cxt = NULL;

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

/* What one event tells replay.  Allocates in the history's context. */
static void
apply_event(RunHistory *h, int64 event_id, TimestampTz time, const char *type,
			Jsonb *details)
{
	CommandSlot *slot;

	if (strcmp(type, "WorkflowTaskCompleted") == 0)
		add_task_boundary(h, event_id, time);
	else if (strcmp(type, "ActivityTaskScheduled") == 0)
	{
		slot = slot_for_event(h, details);
		slot->kind = COMMAND_ACTIVITY;
		slot->activity = jsonb_field_text(details, "activity");
		slot->task_queue = jsonb_field_text(details, "task_queue");
	}
	else if (strcmp(type, "ActivityTaskCompleted") == 0)
	{
		slot = slot_for_event(h, details);
		slot->resolved_by = event_id;
		slot->result = jsonb_field(details, "result");
	}
	else if (strcmp(type, "TimerStarted") == 0)
		slot_for_event(h, details)->kind = COMMAND_TIMER;
	else if (strcmp(type, "TimerFired") == 0)
		slot_for_event(h, details)->resolved_by = event_id;
	else if (strcmp(type, "TimerCanceled") == 0 ||
			 strcmp(type, "ActivityTaskCanceled") == 0)
	{
		slot = slot_for_event(h, details);
		slot->canceled = true;
		slot->resolved_by = event_id;
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
		slot->resolved_by = event_id;
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
	h->tasks_allocated = 16;
	h->tasks = palloc(sizeof(TaskBoundary) * h->tasks_allocated);
	h->ntasks = 0;
	h->signals_allocated = 8;
	h->signals = palloc(sizeof(SignalEvent) * h->signals_allocated);
	h->nsignals = 0;
	MemoryContextSwitchTo(old);
}

/* Reads and applies the events after h->last_event_id. */
static void
read_new_events(RunHistory *h, Datum run_id)
{
	static EnginePlan plan = {NULL,
		"SELECT event_id, event_time, event_type, details FROM durable.history"
		" WHERE run_id = $1 AND event_id > $2 ORDER BY event_id",
	2, {UUIDOID, INT8OID}};
	Datum		values[2] = {run_id, Int64GetDatum(h->last_event_id)};
	int			n = engine_exec(&plan, values, NULL, 0);
	MemoryContext old = MemoryContextSwitchTo(h->cxt);

	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		event_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		TimestampTz time = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));
		char	   *type = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
		Jsonb	   *details = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull));

		apply_event(h, event_id, time, type, details);
		h->last_event_id = event_id;
		pfree(type);
	}
	MemoryContextSwitchTo(old);
}

static RunHistory *
cached_history(Datum run_id)
{
	pg_uuid_t  *key = DatumGetUUIDP(run_id);
	RunHistory *h;
	bool		found;

	if (cache == NULL || hash_get_num_entries(cache) >= HISTORY_CACHE_RUNS)
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
 * The run's parsed history.  The worker (cached) reads only new events; a
 * query, in a client backend, reads all of them into a history of its own.
 */
RunHistory *
history_load(LockedRun *run, bool cached)
{
	RunHistory *h;

	if (cached)
		h = cached_history(run->run_id);
	else
	{
		h = palloc0(sizeof(RunHistory));
		init_history(h, CurrentMemoryContext);
	}
	read_new_events(h, run->run_id);
	return h;
}

/* A run closed: its history will not be replayed by the worker again. */
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
