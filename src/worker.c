/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database worker: fires due timers, runs due workflow tasks (in
 *	  batches) and SQL activities, then sleeps on its latch until a commit
 *	  sets it or the next timer falls due.
 *
 * The worker keeps nothing between transactions that the tables do not have
 * (its history cache is only a copy): a crash or a kill loses nothing, and
 * its successor finds the same work due.  Errors in workflow code are
 * handled by replay.c; an error in the engine itself parks the run it was
 * working on, so one bad run cannot block the others; a row an application
 * holds is left for a moment rather than waited for.
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
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "funcapi.h"

/* When a due timer's run was busy: look again this soon. */
#define BUSY_RUN_RETRY_MS	50

/*
 * A timed wait on Linux may end late by 0.1% of its length (0.5% in a
 * niced process), up to 100 ms: timer slack, which lets the kernel batch
 * wakeups.  A timer due in ten seconds would fire 10 ms late, one due in two
 * minutes 100 ms late.  So a wait longer than this ends early, by 1% of it
 * and a millisecond, and the rest is waited again: a hundred times shorter,
 * with a hundred times less slack.
 */
#define EXACT_SLEEP_MS		50

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

/* Publishes when the worker will wake by itself (0: it is awake now). */
static void
set_sleeping_until(TimestampTz until, bool woke)
{
	WorkerSlot *slot = &durable_shared->slots[my_slot];

	LWLockAcquire(durable_shared->lock, LW_EXCLUSIVE);
	slot->sleeping_until = until;
	if (woke)
		slot->wakeups++;
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

/*
 * Should the worker look for activity results waiting on task rows (see
 * activity_complete_unlocked)?  Yes at start (a crash may have left some),
 * when a commit left some, and while the last look found some.
 */
static bool look_for_results = true;

static void
take_results_waiting(void)
{
	WorkerSlot *slot = &durable_shared->slots[my_slot];

	/* a commit that sets it after this still wakes us: we look again then */
	if (pg_atomic_exchange_u32(&slot->results_waiting, 0) != 0)
		look_for_results = true;
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
 * Fires due timers and runs due workflow tasks until neither is left.
 * Returns true when a due timer had to be left for a moment (its run was
 * locked by someone else).  Exits (for good) when the extension is gone:
 * DROP EXTENSION is never blocked by us for longer than one workflow task.
 */
static bool
run_due_work(void)
{
	bool		retry_soon = false;

	sql_activity_maybe_due();
	/* once per wakeup: a DROP EXTENSION wakes us up */
	if (!extension_exists())
	{
		ereport(LOG,
				(errmsg("durable worker exiting: the extension was dropped from database \"%s\"",
						my_database)));
		set_slot_state(SLOT_ABSENT);
		proc_exit(0);
	}
	for (;;)
	{
		int			ran;
		bool		ran_sql;
		bool		busy;
		int			fired;
		TimestampTz next_due;

		retry_soon = false;
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			environment_publish(&durable_shared->slots[my_slot]);
		}
		/* due timers first, all of them: their lateness is what users see */
		fired = 0;
		for (;;)
		{
			bool		full;
			int			batch = timers_fire_due(&busy, &full, &next_due);

			retry_soon |= busy;
			fired += batch;
			if (!full || batch == 0)
				break;
		}
		/* tasks until the next timer is due, and then that timer first */
		take_results_waiting();
		ran = replay_run_tasks(durable_task_batch_size, next_due, &look_for_results,
							   &busy);
		retry_soon |= busy;
		ran_sql = sql_activity_run_due(durable_task_batch_size, &busy) > 0;
		retry_soon |= busy;
		pgstat_report_stat(false);
		if (ran == 0 && !ran_sql && fired == 0)
			return retry_soon;
	}
}

/*
 * Waits on the latch until "until" (timeout_ms from now), not later: a long
 * wait ends early (see EXACT_SLEEP_MS) and the rest is waited again, with
 * nothing else done in between (nothing is due before "until" that would
 * not have set the latch).
 */
static void
wait_until(TimestampTz until, long timeout_ms)
{
	while (timeout_ms > 0)
	{
		long		wait_ms = timeout_ms;
		int			events;

		if (wait_ms > EXACT_SLEEP_MS)
			wait_ms -= wait_ms / 100 + 1;
		events = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						   wait_ms, PG_WAIT_EXTENSION);
		if (!(events & WL_TIMEOUT) || wait_ms == timeout_ms)
			return;
		timeout_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
	}
}

/*
 * Sleeps until the next timer is due, or forever when there is none: only
 * a commit (or a signal) wakes an idle worker.
 */
static void
sleep_until_next_timer(bool retry_soon)
{
	TimestampTz next;
	long		timeout_ms;

	set_sleeping_until(0, false);
	timeout_ms = timers_ms_until_next(&next);
	/*
	 * Something was left because an application holds it: look again soon,
	 * but do sleep (the due timer may be that very one).
	 */
	if (retry_soon && (timeout_ms <= 0 || timeout_ms > BUSY_RUN_RETRY_MS))
	{
		timeout_ms = BUSY_RUN_RETRY_MS;
		next = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	}
	if (timeout_ms == 0)
		return;
	set_sleeping_until(timeout_ms < 0 ? DT_NOEND : next, false);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (timeout_ms < 0)
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, 0,
						 PG_WAIT_EXTENSION);
	else
		wait_until(next, timeout_ms);
	ResetLatch(MyLatch);
	set_sleeping_until(0, true);
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
	environment_publish(&durable_shared->slots[my_slot]);
	set_slot_state(SLOT_RUNNING);
	ereport(LOG, (errmsg("durable worker started for database \"%s\"",
						 my_database)));

	for (;;)
		sleep_until_next_timer(run_due_work());
}

/*
 * durable.worker_status(): each running database worker, how often it woke
 * up, and until when it sleeps (NULL while it works, infinity with no timer).
 */
PG_FUNCTION_INFO_V1(durable_worker_status);

Datum
durable_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	WorkerSlot *slots;

	durable_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	/* copy, so that no catalog lookup happens under our lock */
	slots = palloc(sizeof(WorkerSlot) * durable_max_databases);
	LWLockAcquire(durable_shared->lock, LW_SHARED);
	memcpy(slots, durable_shared->slots, sizeof(WorkerSlot) * durable_max_databases);
	LWLockRelease(durable_shared->lock);

	for (int i = 0; i < durable_max_databases; i++)
	{
		WorkerSlot *slot = &slots[i];
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};
		char	   *dbname;

		if (slot->state != SLOT_RUNNING || slot->pid == 0)
			continue;
		dbname = get_database_name(slot->dboid);
		if (dbname == NULL)
			continue;
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(dbname));
		values[1] = Int32GetDatum(slot->pid);
		values[2] = Int64GetDatum((int64) slot->wakeups);
		values[3] = TimestampTzGetDatum(slot->sleeping_until);
		nulls[3] = slot->sleeping_until == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
