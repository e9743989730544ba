/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database worker: runs due workflow tasks, then sleeps on its
 *	  latch until a commit sets it.
 *
 * The worker holds no state of its own between transactions: everything it
 * needs is in the tables, so a crash or a kill loses nothing and its
 * successor simply finds the same tasks due.  Errors in workflow code are
 * handled by replay.c; an error in the engine itself parks the run it was
 * working on (see replay.c), so one bad run cannot block the others.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* The fallback sleep: only a safety net, commits wake the worker. */
#define WORKER_IDLE_TIMEOUT_MS	10000

static int	my_slot = -1;
static char my_database[NAMEDATALEN];

static void
worker_detach(int code, Datum arg)
{
	WorkerSlot *slot = &durable_shared->slots[my_slot];

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	slot->pid = 0;
	slot->latch = NULL;
	LWLockRelease(durable_shared->lock);
}

static void
set_slot_state(WorkerSlotState state)
{
	WorkerSlot *slot = &durable_shared->slots[my_slot];

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	slot->state = state;
	if (state == SLOT_RUNNING)
	{
		slot->pid = MyProcPid;
		slot->latch = MyLatch;
	}
	LWLockRelease(durable_shared->lock);
}

static bool
extension_exists(void)
{
	bool		exists;

	StartTransactionCommand();
	exists = OidIsValid(get_extension_oid("durable", true));
	if (my_database[0] == '\0')
		strlcpy(my_database, get_database_name(MyDatabaseId), NAMEDATALEN);
	CommitTransactionCommand();
	return exists;
}

/*
 * Runs due workflow tasks until none is left.  Exits (for good) when the
 * extension is gone: DROP EXTENSION is never blocked by us for longer than
 * one workflow task.
 */
static void
run_due_tasks(void)
{
	for (;;)
	{
		bool		ran;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!extension_exists())
		{
			ereport(LOG,
					(errmsg("durable worker exiting: the extension was dropped from database \"%s\"",
							my_database)));
			set_slot_state(SLOT_ABSENT);
			proc_exit(0);
		}
		ran = replay_run_one_task();
		pgstat_report_stat(false);
		if (!ran)
			return;
	}
}

void
durable_worker_main(Datum main_arg)
{
	Oid			dboid;

	my_slot = DatumGetInt32(main_arg);
	dboid = durable_shared->slots[my_slot].dboid;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	on_shmem_exit(worker_detach, 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("durable worker");

	if (!extension_exists())
	{
		set_slot_state(SLOT_ABSENT);
		proc_exit(0);
	}
	set_slot_state(SLOT_RUNNING);
	ereport(LOG, (errmsg("durable worker started for database \"%s\"",
						 my_database)));

	for (;;)
	{
		run_due_tasks();
		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 WORKER_IDLE_TIMEOUT_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
