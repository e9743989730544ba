/*-------------------------------------------------------------------------
 *
 * rows.c
 *	  The row operations of every step, done with the table and index access
 *	  methods instead of SQL statements: locking (or reading) a run's row,
 *	  appending to its history, and deleting the task row of an attempt
 *	  that ended.
 *
 * Every activity locks its run once, appends two to four history rows and
 * deletes its task row.  As statements, most of their cost was the
 * executor's set-up (plan nodes, expression states, result relations), paid
 * again at every call for work that is an index probe and a tuple lock, a
 * heap insert and an index insert, or an index probe and a delete.  So they
 * are written as PostgreSQL writes its catalogs.  Each does what the
 * statement's executor would have done for these tables (snapshot, command
 * id, table lock, concurrent updates handled as in READ COMMITTED or as a
 * serialization failure), and nothing else a statement adds applies to
 * them: the engine owns the tables, so row security does not, and they have
 * no triggers, rules or foreign keys (history has no defaults or CHECKs
 * either).
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

/* A durable table's OID, looked up once per backend (again if it was re-created). */
static Oid
durable_relid(Oid *cached, const char *name)
{
	if (!OidIsValid(*cached) || !SearchSysCacheExists1(RELOID, ObjectIdGetDatum(*cached)))
		*cached = get_relname_relid(name, get_namespace_oid("durable", false));
	if (!OidIsValid(*cached))
		elog(ERROR, "durable.%s does not exist", name);
	return *cached;
}

/*
 * What SPI does before each statement: a new command id, so that the
 * transaction's earlier writes are seen, and a snapshot for it (the
 * transaction's, in REPEATABLE READ).  Pop it with PopActiveSnapshot().
 */
static Snapshot
begin_statement(void)
{
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	return GetActiveSnapshot();
}

/* Finds the row whose one-column primary key equals key (eqproc: its = function). */
static bool
find_by_primary_key(Relation rel, RegProcedure eqproc, Datum key, Snapshot snapshot,
					TupleTableSlot *slot)
{
	Relation	index = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	IndexScanDesc scan;
	ScanKeyData scankey;
	bool		found;

	ScanKeyInit(&scankey, 1, BTEqualStrategyNumber, eqproc, key);
	scan = index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &scankey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	index_close(index, NoLock);
	return found;
}

static AttrNumber
column_attnum(Oid relid, const char *column)
{
	AttrNumber	attnum = get_attnum(relid, column);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "durable table %u has no column %s", relid, column);
	return attnum;
}

/* ---- the run row ---- */

/* Where LockedRun's columns are in durable.runs (by name: columns may be added). */
typedef struct RunAttnums
{
	Oid			relid;
	AttrNumber	run_id,
				workflow_id,
				workflow,
				owner,
				input,
				status,
				next_event_id,
				task_failure,
				task_pending;
} RunAttnums;

static const RunAttnums *
run_attnums(Oid relid)
{
	static RunAttnums a = {InvalidOid};

	if (a.relid != relid)
	{
		a.run_id = column_attnum(relid, "run_id");
		a.workflow_id = column_attnum(relid, "workflow_id");
		a.workflow = column_attnum(relid, "workflow");
		a.owner = column_attnum(relid, "owner");
		a.input = column_attnum(relid, "input");
		a.status = column_attnum(relid, "status");
		a.next_event_id = column_attnum(relid, "next_event_id");
		a.task_failure = column_attnum(relid, "task_failure");
		a.task_pending = column_attnum(relid, "task_pending");
		a.relid = relid;
	}
	return &a;
}

/* A column of the slot, as a C string in the caller's memory (SPI_palloc). */
static char *
slot_text(TupleTableSlot *slot, AttrNumber attnum)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);

	return isnull ? NULL : engine_pstrdup(TextDatumGetCString(d));
}

/* LockedRun from the run's row, copied to outlive the engine's scope. */
static void
fill_run(LockedRun *run, TupleTableSlot *slot, const RunAttnums *a)
{
	bool		isnull;
	Datum		d;
	Jsonb	   *input;
	pg_uuid_t  *run_id;

	run->workflow_id = slot_text(slot, a->workflow_id);
	run->workflow = slot_text(slot, a->workflow);
	run->owner = DatumGetObjectId(slot_getattr(slot, a->owner, &isnull));
	input = DatumGetJsonbP(slot_getattr(slot, a->input, &isnull));
	run->input = SPI_palloc(VARSIZE(input));
	memcpy(run->input, input, VARSIZE(input));
	d = slot_getattr(slot, a->status, &isnull);
	run->status = engine_pstrdup(DatumGetCString(DirectFunctionCall1(enum_out, d)));
	run->next_event_id = DatumGetInt64(slot_getattr(slot, a->next_event_id, &isnull));
	(void) slot_getattr(slot, a->task_failure, &isnull);
	run->task_failed = !isnull;
	run->task_pending = DatumGetBool(slot_getattr(slot, a->task_pending, &isnull));
	run_id = SPI_palloc(sizeof(pg_uuid_t));
	memcpy(run_id, DatumGetUUIDP(slot_getattr(slot, a->run_id, &isnull)), sizeof(pg_uuid_t));
	run->run_id = UUIDPGetDatum(run_id);
}

/*
 * Locks the row in slot as SELECT ... FOR UPDATE [SKIP LOCKED] does: in READ
 * COMMITTED, the newest version of a row updated since the snapshot (its key
 * cannot change, so there is nothing to check again); in REPEATABLE READ and
 * SERIALIZABLE, a serialization failure.  False: skipped, or deleted.
 */
static bool
lock_row(Relation rel, TupleTableSlot *slot, Snapshot snapshot, bool skip_locked)
{
	TM_FailureData tmfd;
	TM_Result	result;

	result = table_tuple_lock(rel, &slot->tts_tid, snapshot, slot,
							  GetCurrentCommandId(false), LockTupleExclusive,
							  skip_locked ? LockWaitSkip : LockWaitBlock,
							  IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							  &tmfd);
	switch (result)
	{
		case TM_Ok:
			return true;
		case TM_WouldBlock:
			return false;
		case TM_Updated:
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent update")));
			if (result == TM_Deleted)
				return false;
			elog(ERROR, "unexpected concurrent update of a row of %s",
				 RelationGetRelationName(rel));
			break;
		case TM_SelfModified:
			/* changed by this transaction after our snapshot: cannot happen */
		default:
			elog(ERROR, "unexpected result %d locking a row of %s", (int) result,
				 RelationGetRelationName(rel));
	}
	return false;
}

/*
 * Finds the run by its primary key and, unless mode is RUN_READ, locks it;
 * fills run.  False when there is no such run, or it was skipped.
 *
 * What SPI would do for the statement, it does too: a new command id and a
 * snapshot taken for it (the transaction's, in REPEATABLE READ), the table
 * locked in the statement's mode, and FOR UPDATE refused in a read-only
 * transaction.
 */
bool
engine_find_run(Datum run_id, LockedRun *run, RunLockMode mode)
{
	static Oid	relid = InvalidOid;
	Relation	rel;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	bool		found;

	if (mode != RUN_READ)
		PreventCommandIfReadOnly("SELECT FOR UPDATE");
	snapshot = begin_statement();
	rel = table_open(durable_relid(&relid, "runs"),
					 mode == RUN_READ ? AccessShareLock : RowShareLock);
	slot = table_slot_create(rel, NULL);
	found = find_by_primary_key(rel, F_UUID_EQ, run_id, snapshot, slot);
	if (found && mode != RUN_READ)
		found = lock_row(rel, slot, snapshot, mode == RUN_LOCK_OR_SKIP);
	if (found)
		fill_run(run, slot, run_attnums(RelationGetRelid(rel)));

	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	PopActiveSnapshot();
	return found;
}

/* ---- the task row of an attempt that ended ---- */

/*
 * Deletes the task row of task_id if it is still at this attempt and
 * started, as "DELETE ... WHERE task_id = $1 AND attempt = $2 AND status =
 * 'started'" would: a row someone updated meanwhile (a heartbeat) is waited
 * for and looked at again in its newest version (a serialization failure in
 * REPEATABLE READ).  True if it deleted the row.
 */
bool
engine_delete_started_task(int64 task_id, int32 attempt)
{
	static Oid	relid = InvalidOid;
	static AttrNumber attempt_attnum,
				status_attnum;
	static Oid	attnums_of = InvalidOid;
	Relation	rel;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	bool		found;
	bool		deleted = false;

	PreventCommandIfReadOnly("DELETE FROM durable.activity_tasks");
	snapshot = begin_statement();
	rel = table_open(durable_relid(&relid, "activity_tasks"), RowExclusiveLock);
	if (attnums_of != relid)
	{
		attempt_attnum = column_attnum(relid, "attempt");
		status_attnum = column_attnum(relid, "status");
		attnums_of = relid;
	}
	slot = table_slot_create(rel, NULL);
	found = find_by_primary_key(rel, F_INT8EQ, Int64GetDatum(task_id), snapshot, slot);
	while (found)
	{
		bool		isnull;
		TM_FailureData tmfd;
		TM_Result	result;

		if (DatumGetInt32(slot_getattr(slot, attempt_attnum, &isnull)) != attempt ||
			strcmp(DatumGetCString(DirectFunctionCall1(enum_out,
													   slot_getattr(slot, status_attnum, &isnull))),
				   "started") != 0)
			break;
		result = table_tuple_delete(rel, &slot->tts_tid, GetCurrentCommandId(true),
									snapshot, InvalidSnapshot, true, &tmfd, false);
		if (result == TM_Ok)
		{
			deleted = true;
			break;
		}
		if (result != TM_Updated && result != TM_Deleted)
			elog(ERROR, "unexpected result %d deleting an activity task", (int) result);
		/* its newest version, locked (or an error, or gone) */
		found = lock_row(rel, slot, snapshot, false);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	PopActiveSnapshot();
	return deleted;
}

/* ---- history rows ---- */

/* Index entries for a heap tuple just inserted (plain column indexes only). */
static void
insert_index_entries(ResultRelInfo *rri, TupleTableSlot *slot, HeapTuple tuple)
{
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		Relation	index = rri->ri_IndexRelationDescs[i];
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		Assert(info->ii_Expressions == NIL && info->ii_Predicate == NIL);
		FormIndexDatum(info, slot, NULL, values, isnull);
		index_insert(index, values, isnull, &tuple->t_self, rri->ri_RelationDesc,
					 info->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, info);
	}
}

/*
 * The bookkeeping of events just appended with ids from the run's
 * next_event_id on: the run's counter, and this backend's cached history
 * of it.
 */
static void
events_appended(LockedRun *run, int n, const NewEvent *events)
{
	for (int k = 0; k < n; k++)
	{
		history_note_appended(run, run->next_event_id, events[k].when,
							  events[k].type, events[k].details);
		run->next_event_id++;
	}
}

/*
 * Appends events to a locked run's history, with ids from its
 * next_event_id on: heap_insert() and an insert into the table's one index
 * (its primary key).  Unique violations are reported as by an INSERT.
 */
void
engine_append_events(LockedRun *run, int n, const NewEvent *events)
{
	static Oid	relid = InvalidOid;
	Relation	rel;
	ResultRelInfo *rri;
	TupleTableSlot *slot;

	/* what an INSERT would check first (a hot standby's sessions included) */
	PreventCommandIfReadOnly("INSERT INTO durable.history");
	rel = table_open(durable_relid(&relid, "history"), RowExclusiveLock);
	rri = makeNode(ResultRelInfo);
	slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	for (int i = 0; i < n; i++)
	{
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		HeapTuple	tuple;

		values[0] = run->run_id;
		values[1] = Int64GetDatum(run->next_event_id + i);
		values[2] = TimestampTzGetDatum(events[i].when);
		values[3] = CStringGetTextDatum(events[i].type);
		values[4] = JsonbPGetDatum(events[i].details);
		tuple = heap_form_tuple(RelationGetDescr(rel), values, nulls);
		heap_insert(rel, tuple, GetCurrentCommandId(true), 0, NULL);
		ExecStoreHeapTuple(tuple, slot, false);
		insert_index_entries(rri, slot, tuple);
		heap_freetuple(tuple);
	}
	ExecDropSingleTupleTableSlot(slot);
	ExecCloseIndices(rri);
	table_close(rel, NoLock);
	events_appended(run, n, events);
}

void
engine_append_event(LockedRun *run, const char *event_type, Jsonb *details,
					TimestampTz when)
{
	NewEvent	event = {event_type, details, when};

	engine_append_events(run, 1, &event);
}
