/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one background worker per database that has durable.
 *
 * Registered from shared_preload_libraries with BgWorkerStart_RecoveryFinished,
 * so nothing runs on a hot standby until it is promoted.  At start the
 * launcher starts a worker for every connectable database; a worker that
 * finds no extension exits and is not started again until CREATE EXTENSION
 * in that database notifies the launcher at commit.  A worker that exits
 * after it ran (an error, a kill) is started again after a second; after a
 * crash of any backend the postmaster restarts the launcher, which starts
 * everything again.
 *
 * Statements that need a database free of other connections (DROP DATABASE
 * and friends, see durable.c) pause its worker: the launcher stops it and
 * starts it again once the statement is over, if the database still exists.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#define RESTART_DELAY_MS	1000
#define IDLE_TIMEOUT_MS		60000

/* The launcher's own view of each slot (handles are process-local). */
typedef struct LauncherEntry
{
	BackgroundWorkerHandle *handle;
	TimestampTz start_at;		/* when to (re)start the worker, if no handle */
} LauncherEntry;

static LauncherEntry *entries;

void
durable_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "durable");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "durable_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "durable launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "durable launcher");
	RegisterBackgroundWorker(&worker);
}

static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	durable_shared->launcher_pid = 0;
	durable_shared->launcher_latch = NULL;
	LWLockRelease(durable_shared->lock);
}

/* The slot of dboid, or -1.  Caller holds the lock. */
static int
slot_of(Oid dboid)
{
	for (int i = 0; i < durable_max_databases; i++)
		if (durable_shared->slots[i].state != SLOT_FREE &&
			durable_shared->slots[i].dboid == dboid)
			return i;
	return -1;
}

/* Marks dboid as wanting a worker, to be started at the next pass. */
static void
want_worker(Oid dboid, bool quietly)
{
	int			slot;

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	slot = slot_of(dboid);
	if (slot >= 0 && durable_shared->slots[slot].state == SLOT_ABSENT &&
		entries[slot].handle == NULL)
		durable_shared->slots[slot].state = SLOT_STARTING;
	if (slot < 0)
	{
		for (int i = 0; i < durable_max_databases; i++)
		{
			if (durable_shared->slots[i].state == SLOT_FREE)
			{
				WorkerSlot *s = &durable_shared->slots[i];

				s->dboid = dboid;
				s->state = SLOT_STARTING;
				s->pid = 0;
				s->latch = NULL;
				s->paused = false;
				entries[i].handle = NULL;
				entries[i].start_at = 0;
				slot = i;
				break;
			}
		}
		if (slot < 0 && !quietly)
			ereport(WARNING,
					(errmsg("durable cannot run workflows in database %u: all %d worker slots are in use",
							dboid, durable_max_databases),
					 errhint("Raise durable.max_databases (and max_worker_processes) and restart the server.")));
	}
	LWLockRelease(durable_shared->lock);
}

static void
forget_slot(int i)
{
	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	durable_shared->slots[i].state = SLOT_FREE;
	durable_shared->slots[i].dboid = InvalidOid;
	LWLockRelease(durable_shared->lock);
	if (entries[i].handle)
		pfree(entries[i].handle);
	entries[i].handle = NULL;
}

/* Every database a worker could connect to: the start-up probe. */
static void
want_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *dbs = NIL;
	ListCell   *lc;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate && db->datconnlimit != -2)
			dbs = lappend_oid(dbs, db->oid);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	foreach(lc, dbs)
		want_worker(lfirst_oid(lc), true);
}

static bool
database_exists(Oid dboid)
{
	bool		exists;

	StartTransactionCommand();
	exists = SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dboid));
	CommitTransactionCommand();
	return exists;
}

static bool
start_worker(int slot)
{
	BackgroundWorker worker;
	Oid			dboid = durable_shared->slots[slot].dboid;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "durable");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "durable_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "durable worker for database %u", dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "durable worker");
	worker.bgw_main_arg = Int32GetDatum(slot);
	worker.bgw_notify_pid = MyProcPid;

	return RegisterDynamicBackgroundWorker(&worker, &entries[slot].handle);
}

/*
 * One pass over the slots: notice exits, honour pauses, start what is due.
 * Returns how long to sleep before the next pass.
 */
static long
launcher_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = IDLE_TIMEOUT_MS;

	for (int i = 0; i < durable_max_databases; i++)
	{
		WorkerSlot *s = &durable_shared->slots[i];
		LauncherEntry *e = &entries[i];
		pid_t		pid;

		if (s->state == SLOT_FREE)
			continue;

		if (e->handle != NULL &&
			GetBackgroundWorkerPid(e->handle, &pid) == BGWH_STOPPED)
		{
			pfree(e->handle);
			e->handle = NULL;
			if (s->state != SLOT_RUNNING)
			{
				/* no extension there, or it could not even connect */
				forget_slot(i);
				continue;
			}
			LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
			s->state = SLOT_STARTING;
			LWLockRelease(durable_shared->lock);
			e->start_at = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
		}

		if (s->paused)
		{
			if (e->handle != NULL)
				TerminateBackgroundWorker(e->handle);
			e->start_at = 0;
			sleep_ms = Min(sleep_ms, 10);
			continue;
		}

		if (e->handle == NULL && s->state == SLOT_STARTING)
		{
			if (now < e->start_at)
			{
				sleep_ms = Min(sleep_ms,
							   TimestampDifferenceMilliseconds(now, e->start_at) + 1);
				continue;
			}
			if (!database_exists(s->dboid))
			{
				forget_slot(i);
				continue;
			}
			if (!start_worker(i))
			{
				/* no free bgworker slot right now: try again soon */
				e->handle = NULL;
				e->start_at = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
				sleep_ms = Min(sleep_ms, RESTART_DELAY_MS);
			}
		}
	}
	return sleep_ms;
}

static void
take_notifications(void)
{
	Oid			created[DURABLE_NOTIFY_MAX];
	int			n;

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	n = durable_shared->n_created;
	memcpy(created, durable_shared->created, n * sizeof(Oid));
	durable_shared->n_created = 0;
	LWLockRelease(durable_shared->lock);

	for (int i = 0; i < n; i++)
		want_worker(created[i], false);
}

void
durable_launcher_main(Datum main_arg)
{
	long		sleep_ms;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	/* no database: only shared catalogs, to list the databases */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("durable launcher");

	entries = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(LauncherEntry) * durable_max_databases);

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	durable_shared->launcher_pid = MyProcPid;
	durable_shared->launcher_latch = MyLatch;
	/* slots from a previous launcher have no live handles: start afresh */
	for (int i = 0; i < durable_max_databases; i++)
		durable_shared->slots[i].state = SLOT_FREE;
	LWLockRelease(durable_shared->lock);
	on_shmem_exit(launcher_detach, 0);

	want_all_databases();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		take_notifications();
		sleep_ms = launcher_pass();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Called by a backend about to run a statement that needs dboid free of
 * other connections: has the launcher stop the database's worker, and waits
 * (up to 10 s) until it is gone.
 */
void
durable_pause_database_worker(Oid dboid)
{
	Latch	   *launcher_latch;
	int			slot;

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	slot = slot_of(dboid);
	if (slot >= 0)
		durable_shared->slots[slot].paused = true;
	launcher_latch = durable_shared->launcher_latch;
	LWLockRelease(durable_shared->lock);
	if (slot < 0)
		return;
	if (launcher_latch)
		SetLatch(launcher_latch);

	for (int waited_ms = 0; waited_ms < 10000; waited_ms += 10)
	{
		bool		gone;

		LWLockAcquire(durable_shared->lock, LW_SHARED);
		gone = durable_shared->slots[slot].dboid != dboid ||
			durable_shared->slots[slot].pid == 0;
		LWLockRelease(durable_shared->lock);
		if (gone)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

void
durable_resume_database_worker(Oid dboid)
{
	Latch	   *launcher_latch;
	int			slot;

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	slot = slot_of(dboid);
	if (slot >= 0)
		durable_shared->slots[slot].paused = false;
	launcher_latch = durable_shared->launcher_latch;
	LWLockRelease(durable_shared->lock);
	if (launcher_latch)
		SetLatch(launcher_latch);
}
