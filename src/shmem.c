/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state (worker slots, wake channels, the count of waiting
 *	  pollers per queue) and the wakeups that are delivered when, and only
 *	  if, a transaction commits.
 *
 * SQL functions never wake anyone directly: they register what their
 * transaction changed (a task queue got a task, a run needs a workflow task,
 * a run closed) and the XACT_EVENT_COMMIT callback delivers it, after the
 * commit is visible to other snapshots.  So nobody is woken to find nothing,
 * and nothing waits for a polling tick.
 *
 * Condition variables are hashed by name into fixed arrays: two queues that
 * share a variable only cost each other a spurious wakeup.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/memutils.h"

DurableShared *durable_shared = NULL;

/* What this backend's current transaction will announce at commit. */
typedef struct PendingWakeups
{
	bool		worker;
	bool		results_waiting;	/* results left for the worker to record */
	int			n_launcher_dbs;	/* databases the launcher should look at */
	Oid			launcher_dbs[4];
	uint64		queues_at_commit;	/* bitmaps over DURABLE_CV_COUNT slots */
	uint64		queues_at_abort;
	uint64		closed_at_commit;
	TimestampTz earliest_timer; /* 0: no timer added */
	bool		queue_limits;	/* durable.task_queues changed */
} PendingWakeups;

StaticAssertDecl(DURABLE_CV_COUNT <= 64, "wakeup bitmaps are 64 bits wide");

static PendingWakeups pending;
static bool xact_callback_registered = false;

static Size
durable_shmem_size(void)
{
	return add_size(offsetof(DurableShared, slots),
					mul_size(sizeof(WorkerSlot), durable_max_databases));
}

void
durable_shmem_request(void)
{
	RequestAddinShmemSpace(durable_shmem_size());
	RequestNamedLWLockTranche("durable", 1);
}

void
durable_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	durable_shared = ShmemInitStruct("durable", durable_shmem_size(), &found);
	if (!found)
	{
		memset(durable_shared, 0, durable_shmem_size());
		durable_shared->lock = &(GetNamedLWLockTranche("durable"))->lock;
		for (int i = 0; i < DURABLE_CV_COUNT; i++)
		{
			ConditionVariableInit(&durable_shared->queue_channels[i].cv);
			pg_atomic_init_u64(&durable_shared->queue_channels[i].broadcasts, 0);
			ConditionVariableInit(&durable_shared->close_channels[i].cv);
			pg_atomic_init_u64(&durable_shared->close_channels[i].broadcasts, 0);
		}
		pg_atomic_init_u64(&durable_shared->queue_limits_version, 1);
		for (int i = 0; i < durable_max_databases; i++)
			pg_atomic_init_u32(&durable_shared->slots[i].results_waiting, 0);
		SpinLockInit(&durable_shared->queue_heads.mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Errors out unless the library was preloaded: without the launcher nothing
 * would ever run, and a workflow started now would silently wait forever.
 */
void
durable_require_preload(void)
{
	if (durable_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("durable is not loaded by shared_preload_libraries"),
				 errhint("Add durable to shared_preload_libraries in postgresql.conf and restart the server.")));
}

static int
cv_index(const char *name)
{
	uint32		h = hash_bytes((const unsigned char *) name, strlen(name));

	h ^= MyDatabaseId * 0x9E3779B1u;
	return h % DURABLE_CV_COUNT;
}

WakeChannel *
durable_queue_channel(const char *task_queue)
{
	return &durable_shared->queue_channels[cv_index(task_queue)];
}

WakeChannel *
durable_close_channel(const char *workflow_id)
{
	return &durable_shared->close_channels[cv_index(workflow_id)];
}

/* The queue this backend is counted as waiting on, if any. */
static bool counted_waiting = false;
static char counted_queue[NAMEDATALEN];

static void
count_waiting(const char *task_queue, int delta)
{
	WaitingPollers *free_entry = NULL;

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < DURABLE_WAITING_QUEUES; i++)
	{
		WaitingPollers *w = &durable_shared->waiting[i];

		if (w->pollers == 0)
		{
			if (free_entry == NULL)
				free_entry = w;
			continue;
		}
		if (w->dboid == MyDatabaseId &&
			strncmp(w->task_queue, task_queue, NAMEDATALEN - 1) == 0)
		{
			w->pollers = Max(w->pollers + delta, 0);
			LWLockRelease(durable_shared->lock);
			return;
		}
	}
	if (free_entry != NULL && delta > 0)
	{
		free_entry->dboid = MyDatabaseId;
		strlcpy(free_entry->task_queue, task_queue, NAMEDATALEN);
		free_entry->pollers = delta;
	}
	LWLockRelease(durable_shared->lock);
}

/* A backend that exits while it waits (FATAL skips PG_FINALLY) uncounts itself. */
static void
uncount_at_exit(int code, Datum arg)
{
	if (counted_waiting)
		count_waiting(counted_queue, -1);
	counted_waiting = false;
}

/*
 * Counts this database's pollers waiting on task_queue: durable_poller_waits
 * (queue, 1) when this backend starts waiting, (queue, -1) when it stops.
 * Names longer than NAMEDATALEN share their prefix's entry; when all entries
 * are taken, a queue goes uncounted.
 */
void
durable_poller_waits(const char *task_queue, int delta)
{
	static bool exit_callback_registered = false;

	if (delta > 0)
	{
		if (!exit_callback_registered)
		{
			before_shmem_exit(uncount_at_exit, (Datum) 0);
			exit_callback_registered = true;
		}
		strlcpy(counted_queue, task_queue, NAMEDATALEN);
		counted_waiting = true;
	}
	else if (!counted_waiting)
		return;
	else
		counted_waiting = false;
	count_waiting(task_queue, delta);
}

PG_FUNCTION_INFO_V1(durable_pollers_waiting);

/* durable._pollers_waiting(): this database's waiting pollers by queue. */
Datum
durable_pollers_waiting(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WaitingPollers copy[DURABLE_WAITING_QUEUES];

	durable_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(durable_shared->lock, LW_SHARED);
	memcpy(copy, durable_shared->waiting, sizeof(copy));
	LWLockRelease(durable_shared->lock);
	for (int i = 0; i < DURABLE_WAITING_QUEUES; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		if (copy[i].pollers == 0 || copy[i].dboid != MyDatabaseId)
			continue;
		values[0] = CStringGetTextDatum(copy[i].task_queue);
		values[1] = Int32GetDatum(copy[i].pollers);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Read before looking at the tables; pass to channel_sleep() after. */
uint64
channel_broadcasts(WakeChannel *ch)
{
	return pg_atomic_read_u64(&ch->broadcasts);
}

/*
 * Sleeps until the next broadcast or timeout_ms, unless a broadcast came
 * since seen_broadcasts was read (then returns at once, to look again).
 */
void
channel_sleep(WakeChannel *ch, uint64 seen_broadcasts, long timeout_ms)
{
	ConditionVariablePrepareToSleep(&ch->cv);
	if (pg_atomic_read_u64(&ch->broadcasts) == seen_broadcasts)
		(void) ConditionVariableTimedSleep(&ch->cv, Max(timeout_ms, 1),
										   PG_WAIT_EXTENSION);
	ConditionVariableCancelSleep();
}

void
durable_wake_worker_at_commit(void)
{
	pending.worker = true;
}

/*
 * Activity results wait on their task rows for the worker (see
 * activity_complete_unlocked): it looks for them after this commit.
 */
void
durable_results_waiting_at_commit(void)
{
	pending.results_waiting = true;
}

void
durable_wake_queue_at_commit(const char *task_queue)
{
	pending.queues_at_commit |= UINT64CONST(1) << cv_index(task_queue);
}

void
durable_wake_queue_at_abort(const char *task_queue)
{
	pending.queues_at_abort |= UINT64CONST(1) << cv_index(task_queue);
}

void
durable_wake_closed_at_commit(const char *workflow_id)
{
	pending.closed_at_commit |= UINT64CONST(1) << cv_index(workflow_id);
}

void
durable_timer_added_at_commit(TimestampTz fire_at)
{
	if (pending.earliest_timer == 0 || fire_at < pending.earliest_timer)
		pending.earliest_timer = fire_at;
}

/*
 * The limits of task queues changed: backends that remember which queues
 * have none (eager dispatch) look again once this transaction commits.
 */
void
durable_queue_limits_changed_at_commit(void)
{
	pending.queue_limits = true;
}

/*
 * Read before looking at durable.task_queues; changes at every commit that
 * changed it.  0 while this backend's own transaction has changed it: what it
 * reads then holds for it alone.
 */
uint64
durable_queue_limits_version(void)
{
	if (pending.queue_limits)
		return 0;
	return pg_atomic_read_u64(&durable_shared->queue_limits_version);
}

PG_FUNCTION_INFO_V1(durable_task_queues_changed);

/*
 * The statement trigger on durable.task_queues (limits set, removed, or rows
 * restored): backends forget what they knew of queue limits once it commits.
 */
Datum
durable_task_queues_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("durable._task_queues_changed() must be called as a trigger")));
	durable_queue_limits_changed_at_commit();
	return PointerGetDatum(NULL);
}

void
durable_notify_launcher_at_commit(Oid dboid)
{
	if (pending.n_launcher_dbs < (int) lengthof(pending.launcher_dbs))
		pending.launcher_dbs[pending.n_launcher_dbs++] = dboid;
}

static void
broadcast_bitmap(WakeChannel *channels, uint64 bitmap)
{
	for (int i = 0; bitmap != 0; i++, bitmap >>= 1)
	{
		if (bitmap & 1)
		{
			pg_atomic_fetch_add_u64(&channels[i].broadcasts, 1);
			ConditionVariableBroadcast(&channels[i].cv);
		}
	}
}

/*
 * Wakes this database's worker: always if "always", else only if it sleeps
 * past timer_at (a new timer falls due before it would wake), or is awake
 * (it may be computing its next deadline without the new timer).  With
 * results_waiting, it also looks for activity results to record.
 */
static void
wake_database_worker(bool always, TimestampTz timer_at, bool results_waiting)
{
	Latch	   *latch = NULL;

	LWLockAcquire(durable_shared->lock, LW_SHARED);
	for (int i = 0; i < durable_max_databases; i++)
	{
		WorkerSlot *slot = &durable_shared->slots[i];

		if (slot->state == SLOT_RUNNING && slot->dboid == MyDatabaseId)
		{
			if (results_waiting)
				pg_atomic_write_u32(&slot->results_waiting, 1);
			if (always || results_waiting || slot->sleeping_until == 0 ||
				timer_at < slot->sleeping_until)
				latch = slot->latch;
			break;
		}
	}
	LWLockRelease(durable_shared->lock);
	if (latch)
		SetLatch(latch);
}

/*
 * After COMMIT PREPARED, whose changes we cannot know: wake the worker and
 * every waiting poller and result() of this database, to look again.
 */
void
durable_wake_everything(void)
{
	if (durable_shared == NULL)
		return;
	broadcast_bitmap(durable_shared->queue_channels, ~UINT64CONST(0));
	broadcast_bitmap(durable_shared->close_channels, ~UINT64CONST(0));
	pg_atomic_fetch_add_u64(&durable_shared->queue_limits_version, 1);
	wake_database_worker(true, 0, true);
}

static void
notify_launcher(Oid *dbs, int n)
{
	Latch	   *latch = NULL;

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n && durable_shared->n_created < DURABLE_NOTIFY_MAX; i++)
		durable_shared->created[durable_shared->n_created++] = dbs[i];
	latch = durable_shared->launcher_latch;
	LWLockRelease(durable_shared->lock);
	if (latch)
		SetLatch(latch);
}

static void
deliver_wakeups(XactEvent event, void *arg)
{
	PendingWakeups todo = pending;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT &&
		event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;

	memset(&pending, 0, sizeof(pending));
	if (durable_shared == NULL)
		return;

	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		/* tasks this transaction had claimed are ready again */
		broadcast_bitmap(durable_shared->queue_channels, todo.queues_at_abort);
		return;
	}

	/*
	 * At PREPARE nothing is visible yet, and whoever runs COMMIT PREPARED
	 * later cannot know what to wake: durable.c wakes everything then.
	 */
	if (event == XACT_EVENT_PREPARE)
		return;

	broadcast_bitmap(durable_shared->queue_channels, todo.queues_at_commit);
	broadcast_bitmap(durable_shared->close_channels, todo.closed_at_commit);
	if (todo.queue_limits)
		pg_atomic_fetch_add_u64(&durable_shared->queue_limits_version, 1);
	if (todo.worker || todo.earliest_timer != 0 || todo.results_waiting)
		wake_database_worker(todo.worker, todo.earliest_timer, todo.results_waiting);
	if (todo.n_launcher_dbs > 0)
		notify_launcher(todo.launcher_dbs, todo.n_launcher_dbs);
}

void
durable_register_xact_callback(void)
{
	if (xact_callback_registered)
		return;
	RegisterXactCallback(deliver_wakeups, NULL);
	xact_callback_registered = true;
}
