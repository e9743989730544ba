/*-------------------------------------------------------------------------
 *
 * rows.c
 *	  The row operations of every step, done with the table and index access
 *	  methods instead of SQL statements: here, locking (or reading) a run's
 *	  row and writing it, reading and appending to its history, and what
 *	  every such operation needs (rows.h); task rows are in task_rows.c.
 *
 * An activity is a claim (or an eager hand-out), a run lock, a task delete,
 * two to four history rows, a task insert and a run update.  As
 * statements, most of their cost was the executor's set-up (plan nodes,
 * expression states, result relations), paid again at every call for work
 * that is an index probe and a tuple lock, a heap insert and its index
 * entries, or an index probe and a delete.  So they are written as
 * PostgreSQL writes its catalogs.  Each does what the statement's executor
 * would have done for these tables: a command id and a snapshot taken as SPI
 * takes them; the table locked in the statement's mode; a row changed
 * concurrently followed to its newest version in READ COMMITTED (and looked
 * at again where the statement's conditions could have changed), or a
 * serialization failure in REPEATABLE READ; index entries, partial indexes'
 * predicates and unique checks as the executor's ExecInsertIndexTuples()
 * makes them (row_indexes.c).
 * Nothing else a statement adds applies to these tables: the engine owns
 * them, so row security does not, and they have no triggers, rules,
 * foreign keys or deferrable constraints (durable--0.1.sql says so where it
 * defines them).
 *
 *-------------------------------------------------------------------------
 */
#include "rows.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_enum.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

/*
 * A durable table's OID, looked up once per backend, and again after the
 * table changed (relcache invalidation: dropped with the extension and
 * created again, altered, vacuumed or analyzed).
 */
Oid
rows_relid(Oid *cached, const char *name)
{
	if (OidIsValid(*cached))
		return *cached;
	rows_forget_on_change(cached);
	*cached = get_relname_relid(name, get_namespace_oid("durable", false));
	if (!OidIsValid(*cached))
		elog(ERROR, "durable.%s does not exist", name);
	return *cached;
}

/* ---- relations kept open for an engine scope ---- */

/*
 * A call of ours opens the same few relations several times (a completion
 * run inline opens durable.recorded_events three times, and its index as
 * often; a worker's batch every table once per task), and each open and
 * close is a lock table lookup, a relation cache lookup and resource owner
 * bookkeeping.  What is opened in the subtransaction an engine scope was
 * entered in stays open, and locked, until the scope is left (the locks
 * are held to the end of the transaction anyway); a nested subtransaction
 * uses what is kept but keeps nothing of its own, since its rollback
 * releases its locks and references.  Nothing stays open after the call:
 * DDL later in the transaction (DROP EXTENSION) finds the relations unused.
 */
typedef struct KeptRelation
{
	Oid			relid;
	LOCKMODE	mode;
	Relation	rel;
	int			depth;			/* of the scope that keeps it */
} KeptRelation;

#define MAX_KEPT_RELATIONS 32

static KeptRelation kept[MAX_KEPT_RELATIONS];
static int	n_kept = 0;

/* A table or index of ours, open and locked in mode (rows_close() it). */
Relation
rows_open(Oid relid, LOCKMODE mode)
{
	int			depth = engine_keeping_depth();
	Relation	rel;

	for (int i = 0; i < n_kept; i++)
	{
		if (kept[i].relid != relid)
			continue;
		if (kept[i].mode < mode)
		{
			LockRelationOid(relid, mode);
			/* a nested subtransaction's lock is not the scope's */
			if (depth == kept[i].depth)
				kept[i].mode = mode;
		}
		return kept[i].rel;
	}
	rel = relation_open(relid, mode);
	if (depth > 0 && n_kept < MAX_KEPT_RELATIONS)
	{
		kept[n_kept].relid = relid;
		kept[n_kept].mode = mode;
		kept[n_kept].rel = rel;
		kept[n_kept].depth = depth;
		n_kept++;
	}
	return rel;
}

/* Done with rel for now: closed, unless a scope keeps it (lock kept either way). */
void
rows_close(Relation rel)
{
	for (int i = 0; i < n_kept; i++)
		if (kept[i].rel == rel)
			return;
	relation_close(rel, NoLock);
}

/* The scope at depth is left: closes what it (and any deeper one) kept. */
void
rows_close_kept(int depth)
{
	while (n_kept > 0 && kept[n_kept - 1].depth >= depth)
		relation_close(kept[--n_kept].rel, NoLock);
}

/*
 * Scopes deeper than depth were abandoned by an error: their relations
 * were released by the rollback, forget them.
 */
void
rows_forget_kept(int depth)
{
	while (n_kept > 0 && kept[n_kept - 1].depth > depth)
		n_kept--;
}

/*
 * What SPI does before each statement: a new command id, so that the
 * transaction's earlier writes are seen, and a snapshot for it (the
 * transaction's, in REPEATABLE READ).  Pop it with PopActiveSnapshot().
 */
Snapshot
rows_begin_statement(void)
{
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	return GetActiveSnapshot();
}

/*
 * Finds the row whose primary key equals key[] (its first nkeys columns: all
 * of them; eqprocs[]: their = functions).  *root, if root is not NULL: where
 * the key's index entry points, the root of the row's chain of heap-only
 * versions (see rows_fetch_from_root()).
 */
bool
rows_find_by_key(Relation rel, int nkeys, const RegProcedure *eqprocs,
				 const Datum *key, Snapshot snapshot, TupleTableSlot *slot,
				 ItemPointer root)
{
	Relation	index = rows_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	IndexScanDesc scan;
	ScanKeyData scankeys[INDEX_MAX_KEYS];
	ItemPointerData entry;
	bool		found = false;

	Assert(nkeys > 0 && nkeys <= INDEX_MAX_KEYS);
	for (int i = 0; i < nkeys; i++)
		ScanKeyInit(&scankeys[i], i + 1, BTEqualStrategyNumber, eqprocs[i], key[i]);
	scan = index_beginscan(rel, index, snapshot, nkeys, 0);
	index_rescan(scan, scankeys, nkeys, NULL, 0);
	/* index_getnext_slot(), keeping the entry's TID (the fetch moves it along the chain) */
	for (;;)
	{
		if (!scan->xs_heap_continue)
		{
			ItemPointer next = index_getnext_tid(scan, ForwardScanDirection);

			if (next == NULL)
				break;
			entry = *next;
		}
		if (index_fetch_heap(scan, slot))
		{
			if (root)
				*root = entry;
			found = true;
			break;
		}
	}
	index_endscan(scan);
	rows_close(index);
	return found;
}

/* Finds the row whose primary key, a uuid, is key (*root: as rows_find_by_key()). */
bool
rows_find_by_uuid(Relation rel, Datum key, Snapshot snapshot, TupleTableSlot *slot,
				  ItemPointer root)
{
	static const RegProcedure eq = F_UUID_EQ;

	return rows_find_by_key(rel, 1, &eq, &key, snapshot, slot, root);
}

Oid
rows_enum_value(Oid enumtype, const char *label)
{
	Oid			value = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
										ObjectIdGetDatum(enumtype),
										CStringGetDatum(label));

	if (!OidIsValid(value))
		elog(ERROR, "enum type %u has no value %s", enumtype, label);
	return value;
}

AttrNumber
rows_attnum(Oid relid, const char *column)
{
	AttrNumber	attnum = get_attnum(relid, column);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "durable table %u has no column %s", relid, column);
	return attnum;
}

/* rows_attnum(), and the column noted in *known (for rows_check_columns()). */
AttrNumber
rows_known_attnum(Oid relid, const char *column, Bitmapset **known)
{
	AttrNumber	attnum = rows_attnum(relid, column);

	*known = bms_add_member(*known, attnum);
	return attnum;
}

/*
 * What is cached of durable tables, by the relid it is of (column numbers,
 * the tables' own OIDs): the relid is reset when the table changes.
 */
#define MAX_OID_CACHES 16
static Oid *oid_caches[MAX_OID_CACHES];
static int	n_oid_caches = 0;

static void
forget_changed(Datum arg, Oid relid)
{
	for (int i = 0; i < n_oid_caches; i++)
		if (!OidIsValid(relid) || relid == *oid_caches[i])
			*oid_caches[i] = InvalidOid;
}

/* *cached is to be reset (InvalidOid) when the relation it names changes. */
void
rows_forget_on_change(Oid *cached)
{
	for (int i = 0; i < n_oid_caches; i++)
		if (oid_caches[i] == cached)
			return;
	if (n_oid_caches == MAX_OID_CACHES)
		elog(ERROR, "too many durable relation caches");
	if (n_oid_caches == 0)
		CacheRegisterRelcacheCallback(forget_changed, (Datum) 0);
	oid_caches[n_oid_caches++] = cached;
}

/*
 * Are the columns a cache holds (*cached: the relid they are of, invalid
 * if none) still those of rel?  If not, *cached is reset: the caller looks
 * them up and sets it last.  The cache is forgotten when the table changes
 * (relcache invalidation: ALTER TABLE, and its rollback).
 */
bool
rows_columns_kept(Oid *cached, Relation rel)
{
	if (*cached == RelationGetRelid(rel))
		return true;
	rows_forget_on_change(cached);
	*cached = InvalidOid;
	return false;
}

/*
 * Every column of rel but the known ones must be one that an INSERT naming
 * only those would leave NULL: a column with a default (or NOT NULL, or
 * generated) that this code does not know about is an error, not a silent
 * NULL.
 */
void
rows_check_columns(Relation rel, const Bitmapset *known)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && !bms_is_member(att->attnum, known) &&
			(att->atthasdef || att->attnotnull || att->attgenerated))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("column \"%s\" of durable.%s is not known to this version of durable",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errdetail("durable writes this table's rows itself, and would leave the column null."),
					 errhint("Install the durable library that matches the extension's version.")));
	}
}

/*
 * Replaces the row at tid (locked by this transaction) with slot's values:
 * a heap-only update when no indexed column changes and the page has room,
 * else with index entries for the new version.  old, if not NULL, holds the
 * version replaced (pinned): entries that repeat its own skip their unique
 * check (row_indexes.c).  True: not heap-only (the new version has index
 * entries, and is the root of its own chain of versions).
 */
bool
rows_update(Relation rel, ItemPointer tid, TupleTableSlot *slot, TupleTableSlot *old,
			Snapshot snapshot, EState *estate)
{
#if PG_VERSION_NUM >= 160000
	TU_UpdateIndexes update_indexes;

	simple_table_tuple_update(rel, tid, slot, snapshot, &update_indexes);
	if (update_indexes != TU_None)
		rows_add_index_entries(rel, slot, old, estate, update_indexes == TU_Summarizing);
	return update_indexes != TU_None;
#else
	bool		update_indexes;

	simple_table_tuple_update(rel, tid, slot, snapshot, &update_indexes);
	if (update_indexes)
		rows_add_index_entries(rel, slot, old, estate, false);
	return update_indexes;
#endif
}

/*
 * Replaces the row at tid with slot's values unless someone holds it or
 * changed it since the snapshot, in one step: no lock of the row first (the
 * lock would be a WAL record of its own).  TM_Ok: replaced, with its index
 * entries.  Anything else (held by another transaction, or by this one;
 * changed since the snapshot): nothing was written, and the caller goes the
 * way of SELECT ... FOR UPDATE (rows_lock), which tells these cases apart.
 */
TM_Result
rows_update_unless_held(Relation rel, ItemPointer tid, TupleTableSlot *slot,
						TupleTableSlot *old, Snapshot snapshot, EState *estate)
{
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	TM_Result	result;
#if PG_VERSION_NUM >= 160000
	TU_UpdateIndexes update_indexes;

	result = table_tuple_update(rel, tid, slot, GetCurrentCommandId(true), snapshot,
								InvalidSnapshot, false, &tmfd, &lockmode, &update_indexes);
	if (result == TM_Ok && update_indexes != TU_None)
		rows_add_index_entries(rel, slot, old, estate, update_indexes == TU_Summarizing);
#else
	bool		update_indexes;

	result = table_tuple_update(rel, tid, slot, GetCurrentCommandId(true), snapshot,
								InvalidSnapshot, false, &tmfd, &lockmode, &update_indexes);
	if (result == TM_Ok && update_indexes)
		rows_add_index_entries(rel, slot, old, estate, false);
#endif
	return result;
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
				task_pending,
				result,
				failure,
				closed_at;
} RunAttnums;

static const RunAttnums *
run_attnums(Relation rel)
{
	static RunAttnums a = {InvalidOid};
	Oid			relid = RelationGetRelid(rel);

	if (!rows_columns_kept(&a.relid, rel))
	{
		a.run_id = rows_attnum(relid, "run_id");
		a.workflow_id = rows_attnum(relid, "workflow_id");
		a.workflow = rows_attnum(relid, "workflow");
		a.owner = rows_attnum(relid, "owner");
		a.input = rows_attnum(relid, "input");
		a.status = rows_attnum(relid, "status");
		a.next_event_id = rows_attnum(relid, "next_event_id");
		a.task_failure = rows_attnum(relid, "task_failure");
		a.task_pending = rows_attnum(relid, "task_pending");
		a.result = rows_attnum(relid, "result");
		a.failure = rows_attnum(relid, "failure");
		a.closed_at = rows_attnum(relid, "closed_at");
		a.relid = relid;
	}
	return &a;
}

/* A column of the slot, as a C string in the caller's memory (SPI_palloc). */
char *
rows_text(TupleTableSlot *slot, AttrNumber attnum)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);

	return isnull ? NULL : engine_pstrdup(TextDatumGetCString(d));
}

/* A jsonb column of slot, copied to outlive the engine's scope; NULL if null. */
Jsonb *
rows_jsonb(TupleTableSlot *slot, AttrNumber attnum)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);
	Jsonb	   *j;
	Jsonb	   *copy;

	if (isnull)
		return NULL;
	j = DatumGetJsonbP(d);
	copy = SPI_palloc(VARSIZE(j));
	memcpy(copy, j, VARSIZE(j));
	return copy;
}

/*
 * Where the run's row is now, for write_run().  Only within the
 * subtransaction that saw it: its locks on the table are held there (a
 * rolled-back one's are not, and the page could go).
 */
static void
note_run_tid(LockedRun *run, TupleTableSlot *slot)
{
	run->tid = slot->tts_tid;
	run->tid_lxid = MY_LXID;
	run->tid_subxact = GetCurrentSubTransactionId();
}

static bool
run_tid_usable(const LockedRun *run)
{
	return ItemPointerIsValid(&run->tid) && run->tid_lxid == MY_LXID &&
		run->tid_subxact == GetCurrentSubTransactionId();
}

/* Does the slot's uuid column attnum hold key? */
bool
rows_uuid_column_is(TupleTableSlot *slot, AttrNumber attnum, Datum key)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);

	return !isnull && memcmp(DatumGetUUIDP(d), DatumGetUUIDP(key), UUID_LEN) == 0;
}

static bool
same_run(TupleTableSlot *slot, const RunAttnums *a, Datum run_id)
{
	return rows_uuid_column_is(slot, a->run_id, run_id);
}

/* Is the row version in slot (a buffer slot from a fetch) heap-only, not a chain's root? */
static bool
heap_only_version(TupleTableSlot *slot)
{
	BufferHeapTupleTableSlot *bslot = (BufferHeapTupleTableSlot *) slot;

	Assert(TTS_IS_BUFFERTUPLE(slot));
	return HeapTupleIsHeapOnly(bslot->base.tuple);
}

/* LockedRun from the run's row, copied to outlive the engine's scope. */
static void
fill_run(LockedRun *run, TupleTableSlot *slot, const RunAttnums *a)
{
	bool		isnull;
	Datum		d;
	Jsonb	   *input;
	pg_uuid_t  *run_id;

	run->workflow_id = rows_text(slot, a->workflow_id);
	run->workflow = rows_text(slot, a->workflow);
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
	note_run_tid(run, slot);
	ItemPointerSetInvalid(&run->due_row);
}

/*
 * Locks the row in slot as SELECT ... FOR UPDATE [SKIP LOCKED] does: in READ
 * COMMITTED, the newest version of a row updated since the snapshot, into
 * slot (*traversed says whether it is another version: the caller looks at
 * it again if its conditions could have changed); in REPEATABLE READ and
 * SERIALIZABLE, a serialization failure.  False: skipped, or deleted.
 */
bool
rows_lock(Relation rel, TupleTableSlot *slot, Snapshot snapshot, bool skip_locked,
		 bool *traversed)
{
	TM_FailureData tmfd;
	TM_Result	result;

	tmfd.traversed = false;

	result = table_tuple_lock(rel, &slot->tts_tid, snapshot, slot,
							  GetCurrentCommandId(false), LockTupleExclusive,
							  skip_locked ? LockWaitSkip : LockWaitBlock,
							  IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							  &tmfd);
	if (traversed)
		*traversed = tmfd.traversed;
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
 * Whether another transaction, still in progress, is writing or locking the
 * row version in slot (a buffer slot from a scan), as its header tells under
 * a share lock of its page: what SKIP LOCKED passes over.  A claim looks
 * before it tries to update a ready task: with several pollers, the oldest
 * ready tasks are often being claimed by the others, and finding that out
 * by a failed update and a failed lock costs two exclusive locks of a page
 * they all want.  Only a hint: the caller's update still decides.
 */
bool
rows_held_elsewhere(TupleTableSlot *slot)
{
	BufferHeapTupleTableSlot *bslot = (BufferHeapTupleTableSlot *) slot;
	HeapTupleHeader tuple;
	TransactionId xmax = InvalidTransactionId;
	bool		multi = false;

	if (!TTS_IS_BUFFERTUPLE(slot) || bslot->base.tuple == NULL ||
		!BufferIsValid(bslot->buffer))
		return false;
	LockBuffer(bslot->buffer, BUFFER_LOCK_SHARE);
	tuple = bslot->base.tuple->t_data;
	if (!(tuple->t_infomask & (HEAP_XMAX_INVALID | HEAP_XMAX_COMMITTED)))
	{
		xmax = HeapTupleHeaderGetRawXmax(tuple);
		multi = (tuple->t_infomask & HEAP_XMAX_IS_MULTI) != 0;
	}
	LockBuffer(bslot->buffer, BUFFER_LOCK_UNLOCK);
	/* a MultiXact's members are for the update to sort out */
	return !multi && TransactionIdIsNormal(xmax) &&
		!TransactionIdIsCurrentTransactionId(xmax) &&
		TransactionIdIsInProgress(xmax);
}

/* Could tid, where this backend saw a row before, be a place in the table still? */
static bool
place_in_table(Relation rel, ItemPointer tid)
{
	/*
	 * The block may be gone: VACUUM truncates a table's empty end (though
	 * not while the caller holds the table), and ReadBuffer would report
	 * that as an error.
	 */
	return tid != NULL && ItemPointerIsValid(tid) &&
		ItemPointerGetBlockNumber(tid) < RelationGetNumberOfBlocks(rel);
}

/*
 * The version at tid that the snapshot sees, into slot, where tid is where
 * this backend saw a row before, in another transaction: false if the
 * snapshot sees nothing there now (the row was changed since).  The line
 * pointer may hold another row by now (pruned and reused), which the caller
 * tells by the row's key.
 */
bool
rows_fetch_where_seen(Relation rel, ItemPointer tid, Snapshot snapshot, TupleTableSlot *slot)
{
	return place_in_table(rel, tid) &&
		table_tuple_fetch_row_version(rel, tid, snapshot, slot);
}

/*
 * The version that the snapshot sees of the row whose versions' chain
 * starts at root (where an index entry of the row points: updates that
 * changed no indexed column put their version on the same page, at the end
 * of that chain), into slot, as an index scan fetches it: false if there is
 * none (the row was deleted, or moved by an update that could not stay on
 * its page, or the place was never a root).  As with rows_fetch_where_seen(),
 * the caller checks the row's key.
 */
bool
rows_fetch_from_root(Relation rel, ItemPointer root, Snapshot snapshot, TupleTableSlot *slot)
{
	IndexFetchTableData *fetch;
	ItemPointerData tid;
	bool		call_again = false;
	bool		all_dead;
	bool		found;

	if (!place_in_table(rel, root))
		return false;
	tid = *root;
	fetch = table_index_fetch_begin(rel);
	found = table_index_fetch_tuple(fetch, &tid, snapshot, slot, &call_again, &all_dead);
	table_index_fetch_end(fetch);
	return found;
}

/*
 * The newest version of the row at tid, changed since the snapshot, as far
 * as a look without a lock can tell (committed, or written by a transaction
 * still in progress): into slot, and true; false when none can be seen (the
 * row is gone).  What it finds may change before the caller could lock it:
 * it only tells the caller that a lock is not worth taking.
 */
bool
rows_peek_newest(Relation rel, ItemPointer row, TupleTableSlot *slot)
{
	SnapshotData dirty;
	ItemPointerData tid = *row;
	TableScanDesc scan;

	InitDirtySnapshot(dirty);
	scan = table_beginscan_tid(rel, &dirty);
	table_tuple_get_latest_tid(scan, &tid);
	table_endscan(scan);
	return table_tuple_fetch_row_version(rel, &tid, &dirty, slot);
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
	return engine_find_run_at(run_id, NULL, NULL, run, mode);
}

/*
 * The run's row that the snapshot sees, into slot: at seen_at, the version
 * this backend last saw there (see rows_fetch_where_seen()), else along the
 * chain of versions from root (rows_fetch_from_root()), in either case only
 * if it is the run's; else where the primary key finds it.  *found_root:
 * the root of the chain the row was found in, if known.
 */
static bool
find_run_row(Relation rel, Datum run_id, ItemPointer seen_at, ItemPointer root,
			 Snapshot snapshot, TupleTableSlot *slot, ItemPointer found_root)
{
	const RunAttnums *a = run_attnums(rel);

	ItemPointerSetInvalid(found_root);
	if (rows_fetch_where_seen(rel, seen_at, snapshot, slot) && same_run(slot, a, run_id))
	{
		/* seen together with root: it still holds, as the version does */
		if (root != NULL)
			*found_root = *root;
		else if (!heap_only_version(slot))
			*found_root = *seen_at;
		return true;
	}
	if (rows_fetch_from_root(rel, root, snapshot, slot) && same_run(slot, a, run_id))
	{
		*found_root = *root;
		return true;
	}
	return rows_find_by_uuid(rel, run_id, snapshot, slot, found_root);
}

/*
 * engine_find_run(), looking first where this backend last saw the run's
 * row (seen_at and root, each if not NULL: see find_run_row()).
 */
bool
engine_find_run_at(Datum run_id, ItemPointer seen_at, ItemPointer root,
				   LockedRun *run, RunLockMode mode)
{
	static Oid	relid = InvalidOid;
	Relation	rel;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	ItemPointerData found_root;
	bool		traversed = false;
	bool		found;

	if (mode != RUN_READ)
		PreventCommandIfReadOnly("SELECT FOR UPDATE");
	snapshot = rows_begin_statement();
	rel = rows_open(rows_relid(&relid, "runs"), mode == RUN_READ ? AccessShareLock : RowShareLock);
	slot = table_slot_create(rel, NULL);
	found = find_run_row(rel, run_id, seen_at, root, snapshot, slot, &found_root);
	if (found && mode != RUN_READ)
		found = rows_lock(rel, slot, snapshot, mode == RUN_LOCK_OR_SKIP, &traversed);
	if (found)
	{
		fill_run(run, slot, run_attnums(rel));
		/* a newer version, of an update since the snapshot, may start a chain */
		if (traversed)
			ItemPointerSetInvalid(&found_root);
		run->root = found_root;
	}

	ExecDropSingleTupleTableSlot(slot);
	rows_close(rel);
	PopActiveSnapshot();
	return found;
}

/* What a workflow task's outcome sets on its run's row (see engine_update_run). */
typedef struct RunOutcome
{
	const char *status;
	Jsonb	   *result;
	Jsonb	   *failure;
	Jsonb	   *task_failure;
} RunOutcome;

static void
set_column(TupleTableSlot *slot, AttrNumber attnum, Datum value, bool isnull)
{
	slot->tts_values[attnum - 1] = value;
	slot->tts_isnull[attnum - 1] = isnull;
}

static void
set_jsonb(TupleTableSlot *slot, AttrNumber attnum, Jsonb *value)
{
	set_column(slot, attnum, value ? JsonbPGetDatum(value) : (Datum) 0, value == NULL);
}

/* Where durable.due_tasks has its run_id column. */
static AttrNumber
due_run_id_attnum(Relation rel)
{
	static Oid	of_relid = InvalidOid;
	static AttrNumber attnum;

	if (!rows_columns_kept(&of_relid, rel))
	{
		attnum = rows_attnum(RelationGetRelid(rel), "run_id");
		of_relid = RelationGetRelid(rel);
	}
	return attnum;
}

/*
 * Takes the run out of the worker's queue of workflow tasks
 * (durable.due_tasks): its task has run.  The queue's row is looked for
 * where the worker saw it (seen_at, if not NULL), else by its key.  The
 * caller holds the run locked, as everyone who writes the queue does.
 */
static void
dequeue_run(Datum run_id, ItemPointer seen_at, Snapshot snapshot)
{
	static Oid	relid = InvalidOid;
	Relation	rel = rows_open(rows_relid(&relid, "due_tasks"), RowExclusiveLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);

	if ((rows_fetch_where_seen(rel, seen_at, snapshot, slot) &&
		 rows_uuid_column_is(slot, due_run_id_attnum(rel), run_id)) ||
		rows_find_by_uuid(rel, run_id, snapshot, slot, NULL))
		simple_table_tuple_delete(rel, &slot->tts_tid, snapshot);
	ExecDropSingleTupleTableSlot(slot);
	rows_close(rel);
}

/* A run's row in the worker's queue with no task to run (its run gone, or not due): out. */
void
engine_dequeue_run(Datum run_id)
{
	PreventCommandIfReadOnly("DELETE FROM durable.due_tasks");
	dequeue_run(run_id, NULL, rows_begin_statement());
	PopActiveSnapshot();
}

/*
 * Writes the locked run's row: next_event_id, and the outcome if given. A
 * heap-only update when no indexed column changes and the page has room,
 * with index entries otherwise.  A task's outcome takes the run out of the
 * worker's queue if it was there.
 */
static void
write_run(LockedRun *run, const RunOutcome *outcome)
{
	static Oid	relid = InvalidOid;
	Relation	rel;
	const RunAttnums *a;
	EState	   *estate;
	TupleTableSlot *slot;
	TupleTableSlot *old;
	Snapshot	snapshot;
	ItemPointerData tid;

	PreventCommandIfReadOnly("UPDATE durable.runs");
	snapshot = rows_begin_statement();
	rel = rows_open(rows_relid(&relid, "runs"), RowExclusiveLock);
	a = run_attnums(rel);
	estate = CreateExecutorState();
	slot = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), table_slot_callbacks(rel));
	/*
	 * The caller holds the row locked, so only this transaction can have
	 * replaced it: the version where it was last seen is still the newest if
	 * this statement's snapshot sees it (one this transaction replaced since,
	 * with a statement of its own, it does not see; nor one written by a
	 * subtransaction that was rolled back).  The slot may since hold another
	 * row (a rolled-back version is pruned at once and its slot reused), so
	 * the run id must match too: a run has one version this snapshot sees.
	 * Else, or if not known, the primary key finds it.
	 */
	if (!(run_tid_usable(run) &&
		  table_tuple_fetch_row_version(rel, &run->tid, snapshot, slot) &&
		  same_run(slot, a, run->run_id)) &&
		!rows_find_by_uuid(rel, run->run_id, snapshot, slot, &run->root))
		elog(ERROR, "workflow run to update was not found");
	tid = slot->tts_tid;
	old = slot;
	slot = ExecCopySlot(ExecInitExtraTupleSlot(estate, RelationGetDescr(rel),
											   &TTSOpsVirtual), old);
	set_column(slot, a->next_event_id, Int64GetDatum(run->next_event_id), false);
	if (outcome)
	{
		bool		closes = strcmp(outcome->status, "running") != 0;
		Oid			status_type = TupleDescAttr(RelationGetDescr(rel), a->status - 1)->atttypid;

		set_column(slot, a->task_pending, BoolGetDatum(false), false);
		set_column(slot, a->status,
				   ObjectIdGetDatum(rows_enum_value(status_type, outcome->status)), false);
		set_jsonb(slot, a->result, outcome->result);
		set_jsonb(slot, a->failure, outcome->failure);
		set_jsonb(slot, a->task_failure, outcome->task_failure);
		/* set when, and only when, the run leaves 'running' */
		set_column(slot, a->closed_at, TimestampTzGetDatum(GetCurrentTimestamp()), !closes);
	}
	/* a version that is not heap-only starts a chain of its own */
	if (rows_update(rel, &tid, slot, old, snapshot, estate))
		run->root = slot->tts_tid;
	note_run_tid(run, slot);
	if (outcome && run->task_pending)
	{
		dequeue_run(run->run_id, &run->due_row, snapshot);
		run->task_pending = false;
	}
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	rows_close(rel);
	PopActiveSnapshot();
}

/*
 * Records the appended events on the locked run's row (nothing else
 * changes): as "UPDATE durable.runs SET next_event_id = ... WHERE run_id =
 * ...".
 */
void
engine_save_next_event_id(LockedRun *run)
{
	write_run(run, NULL);
}

/*
 * A workflow task's outcome: the run's next_event_id, no task pending, its
 * status (closed_at set if it leaves 'running'), result, failure and
 * task_failure.
 */
void
engine_update_run(LockedRun *run, const char *status, Jsonb *result, Jsonb *failure,
				  Jsonb *task_failure)
{
	RunOutcome	outcome = {status, result, failure, task_failure};

	write_run(run, &outcome);
}

/* ---- history rows ---- */

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
		int64		first = run->next_event_id;
		int64		id = first + (events[k].attempt_started_at != 0 ? 1 : 0);

		history_note_appended(run, first, id, events[k].when, events[k].type,
							  events[k].details);
		run->next_event_id = id + 1;
	}
}

/*
 * Is events[i] a WorkflowTaskCompleted that the row of the event after it
 * can keep (see durable.recorded_events: its time, and its details, which
 * are only the number of new commands, into *new_commands)?
 */
static bool
task_completed_folds(const NewEvent *events, int n, int i, int64 *new_commands)
{
	const NewEvent *e = &events[i];

	return i + 1 < n && strcmp(e->type, "WorkflowTaskCompleted") == 0 &&
		e->attempt_started_at == 0 && events[i + 1].attempt_started_at == 0 &&
		events[i + 1].when == e->when && JB_ROOT_COUNT(e->details) == 1 &&
		jsonb_field_int(e->details, "new_commands", new_commands) &&
		*new_commands >= 0 && *new_commands <= PG_INT32_MAX;
}

/* The details of a WorkflowTaskCompleted kept on the row after it. */
static Jsonb *
task_completed_details(int32 new_commands)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_int(&jb, "new_commands", new_commands);
	return json_end(&jb);
}

/* The labels of durable.event_type (durable--*.sql), each event's type. */
static const char *const event_types[] = {
	"WorkflowExecutionStarted", "WorkflowTaskCompleted", "WorkflowTaskFailed",
	"ActivityTaskScheduled", "ActivityTaskCompleted", "ActivityTaskFailed",
	"ActivityTaskTimedOut", "ActivityTaskCancelRequested", "ActivityTaskCanceled",
	"TimerStarted", "TimerFired", "TimerCanceled", "WorkflowExecutionSignaled",
	"WorkflowExecutionCompleted", "WorkflowExecutionFailed", "WorkflowExecutionTimedOut"
};

#define N_EVENT_TYPES lengthof(event_types)

/* Where the history's columns are (by name: columns may be added). */
typedef struct HistoryColumns
{
	Oid			relid;			/* invalid: to be looked up */
	AttrNumber	run_id,
				event_id,
				event_time,
				event_type,
				details,
				attempt_started_at,
				attempt_worker,
				task_new_commands;
	Oid			event_type_values[N_EVENT_TYPES];	/* each label's enum value */
} HistoryColumns;

static const HistoryColumns *
history_columns(Relation rel)
{
	static HistoryColumns cache = {InvalidOid};
	HistoryColumns *c = &cache;
	Oid			relid = RelationGetRelid(rel);
	Bitmapset  *known = NULL;

	if (rows_columns_kept(&c->relid, rel))
		return c;
	c->run_id = rows_known_attnum(relid, "run_id", &known);
	c->event_id = rows_known_attnum(relid, "event_id", &known);
	c->event_time = rows_known_attnum(relid, "event_time", &known);
	c->event_type = rows_known_attnum(relid, "event_type", &known);
	c->details = rows_known_attnum(relid, "details", &known);
	c->attempt_started_at = rows_known_attnum(relid, "attempt_started_at", &known);
	c->attempt_worker = rows_known_attnum(relid, "attempt_worker", &known);
	c->task_new_commands = rows_known_attnum(relid, "task_new_commands", &known);
	rows_check_columns(rel, known);
	bms_free(known);
	for (int i = 0; i < (int) N_EVENT_TYPES; i++)
		c->event_type_values[i] =
			rows_enum_value(TupleDescAttr(RelationGetDescr(rel), c->event_type - 1)->atttypid,
							event_types[i]);
	c->relid = relid;
	return c;
}

/* An event type's enum value. */
static Datum
event_type_value(const HistoryColumns *c, const char *type)
{
	for (int i = 0; i < (int) N_EVENT_TYPES; i++)
		if (strcmp(event_types[i], type) == 0)
			return ObjectIdGetDatum(c->event_type_values[i]);
	elog(ERROR, "durable: unknown event type %s", type);
	return (Datum) 0;			/* keep compiler quiet */
}

/* An enum value's event type. */
static const char *
event_type_label(const HistoryColumns *c, Datum value)
{
	for (int i = 0; i < (int) N_EVENT_TYPES; i++)
		if (c->event_type_values[i] == DatumGetObjectId(value))
			return event_types[i];
	/* a label added to durable.event_type by hand, or a newer extension */
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("event type \"%s\" of durable.recorded_events is not known to this version of durable",
					DatumGetCString(DirectFunctionCall1(enum_out, value))),
			 errhint("Install the durable library that matches the extension's version.")));
	return NULL;				/* keep compiler quiet */
}

/*
 * Reads the run's events after event id "after", in order, handing each to
 * reader (as "SELECT ... FROM durable.recorded_events WHERE run_id = $1 AND
 * event_id > $2 ORDER BY event_id": its primary key read in order), a
 * WorkflowTaskCompleted kept on the row after it included; the
 * ActivityTaskStarted events kept on the rows of the events that ended
 * their attempts are not: they tell replay nothing.  What reader gets
 * lives until the engine's scope ends: it copies what it keeps.
 */
void
engine_read_events(Datum run_id, int64 after, EventReader reader, void *arg)
{
	static Oid	relid = InvalidOid;
	const HistoryColumns *c;
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	ScanKeyData keys[2];
	TupleTableSlot *slot;
	Snapshot	snapshot;

	snapshot = rows_begin_statement();
	rel = rows_open(rows_relid(&relid, "recorded_events"), AccessShareLock);
	c = history_columns(rel);
	index = rows_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	slot = table_slot_create(rel, NULL);
	/* the primary key is (run_id, event_id) */
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, run_id);
	ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
	scan = index_beginscan(rel, index, snapshot, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		int64		event_id = DatumGetInt64(slot_getattr(slot, c->event_id, &isnull));
		TimestampTz event_time = DatumGetTimestampTz(slot_getattr(slot, c->event_time, &isnull));
		Datum		new_commands = slot_getattr(slot, c->task_new_commands, &isnull);

		if (!isnull && event_id - 1 > after)
			reader(arg, event_id - 1, event_time, "WorkflowTaskCompleted",
				   task_completed_details(DatumGetInt32(new_commands)));
		reader(arg, event_id, event_time,
			   event_type_label(c, slot_getattr(slot, c->event_type, &isnull)),
			   DatumGetJsonbP(slot_getattr(slot, c->details, &isnull)));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	rows_close(index);
	rows_close(rel);
	PopActiveSnapshot();
}

/*
 * Appends events to a locked run's history, with ids from its
 * next_event_id on (an attempt's end with its start: two ids, one row; a
 * WorkflowTaskCompleted followed by an event at the same time: two ids, the
 * second event's row): heap_insert(), or heap_multi_insert() for several
 * (one WAL record and one page lock for all, as COPY writes rows), and an
 * insert into the table's one index (its primary key).  Unique violations
 * are reported as by an INSERT.
 */
void
engine_append_events(LockedRun *run, int n, const NewEvent *events)
{
	static Oid	relid = InvalidOid;
	const HistoryColumns *c;
	Relation	rel;
	TupleTableSlot **slots;
	int			natts;
	Datum	   *values;
	bool	   *nulls;
	int64		id;
	int			nrows = 0;

	/* what an INSERT would check first (a hot standby's sessions included) */
	PreventCommandIfReadOnly("INSERT INTO durable.recorded_events");
	rel = rows_open(rows_relid(&relid, "recorded_events"), RowExclusiveLock);
	c = history_columns(rel);
	natts = RelationGetDescr(rel)->natts;
	values = palloc(sizeof(Datum) * natts);
	nulls = palloc(sizeof(bool) * natts);
	slots = palloc(sizeof(TupleTableSlot *) * n);
	id = run->next_event_id;
	for (int i = 0; i < n; i++, id++)
	{
		int64		new_commands;

		if (task_completed_folds(events, n, i, &new_commands))
		{
			/* kept on the next event's row, which takes the id after it */
			i++;
			id++;
		}
		else
			new_commands = -1;
		/* the other columns (dropped ones, nullable ones added later) NULL */
		memset(nulls, true, sizeof(bool) * natts);
#define SET(col, value) (values[c->col - 1] = (value), nulls[c->col - 1] = false)
		if (new_commands >= 0)
			SET(task_new_commands, Int32GetDatum((int32) new_commands));
		if (events[i].attempt_started_at != 0)
		{
			/* its ActivityTaskStarted has the id before it */
			id++;
			SET(attempt_started_at, TimestampTzGetDatum(events[i].attempt_started_at));
			if (events[i].attempt_worker)
				SET(attempt_worker, CStringGetTextDatum(events[i].attempt_worker));
		}
		SET(run_id, run->run_id);
		SET(event_id, Int64GetDatum(id));
		SET(event_time, TimestampTzGetDatum(events[i].when));
		SET(event_type, event_type_value(c, events[i].type));
		SET(details, JsonbPGetDatum(events[i].details));
#undef SET
		slots[nrows] = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
		ExecStoreHeapTuple(heap_form_tuple(RelationGetDescr(rel), values, nulls),
						   slots[nrows++], true);
	}
	if (nrows == 1)
	{
		HeapTuple	tuple = ExecFetchSlotHeapTuple(slots[0], false, NULL);

		heap_insert(rel, tuple, GetCurrentCommandId(true), 0, NULL);
		slots[0]->tts_tid = tuple->t_self;
	}
	else if (nrows > 1)
		heap_multi_insert(rel, slots, nrows, GetCurrentCommandId(true), 0, NULL);
	for (int i = 0; i < nrows; i++)
	{
		rows_add_index_entries(rel, slots[i], NULL, NULL, false);
		ExecDropSingleTupleTableSlot(slots[i]);
	}
	rows_close(rel);
	events_appended(run, n, events);
}

void
engine_append_event(LockedRun *run, const char *event_type, Jsonb *details,
					TimestampTz when)
{
	NewEvent	event = NEW_EVENT(event_type, details, when);

	engine_append_events(run, 1, &event);
}
