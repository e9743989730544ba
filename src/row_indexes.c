/*-------------------------------------------------------------------------
 *
 * row_indexes.c
 *	  The index entries of a row that rows.c or task_rows.c wrote: what
 *	  ExecInsertIndexTuples() would make, with what it works out again at
 *	  every call (each index's IndexInfo, its partial-index predicate
 *	  compiled) kept per backend.
 *
 * The executor opens a table's indexes, builds their IndexInfo and compiles
 * their predicates for every statement: for a claim, a fifth of its cost.
 * Our tables' indexes are btrees on plain columns, partial or not, unique or
 * not; for those, entries are made here from what is kept, which relcache
 * invalidation throws away when the table or any of its indexes changes
 * (the caller has opened the table, which took in pending invalidations).
 * A table with any other kind of index (on an expression, backing an
 * exclusion or a deferrable constraint, of another access method) goes
 * through ExecInsertIndexTuples().
 *
 *-------------------------------------------------------------------------
 */
#include "rows.h"

#include "access/genam.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "optimizer/optimizer.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"

typedef struct KeptIndex
{
	Oid			indexoid;
	IndexInfo  *info;
	ExprState  *predicate;		/* NULL: not a partial index */
} KeptIndex;

typedef struct KeptIndexes
{
	Oid			relid;
	bool		valid;
	bool		generic;		/* an index we do not handle: the executor's way */
	int			nindexes;
	KeptIndex  *indexes;
	ExprContext *econtext;		/* for predicates */
	MemoryContext cxt;
} KeptIndexes;

/* runs, history, activity_tasks: room for one more */
#define KEPT_TABLES 4

static KeptIndexes kept[KEPT_TABLES];
static bool invalidation_registered = false;

static void
forget_kept(Datum arg, Oid relid)
{
	for (int i = 0; i < KEPT_TABLES; i++)
	{
		KeptIndexes *k = &kept[i];

		if (!k->valid)
			continue;
		if (!OidIsValid(relid) || relid == k->relid)
			k->valid = false;
		for (int j = 0; k->valid && j < k->nindexes; j++)
			if (k->indexes[j].indexoid == relid)
				k->valid = false;
	}
}

static bool
handled_here(Relation index, IndexInfo *info)
{
	return index->rd_rel->relam == BTREE_AM_OID &&
		info->ii_Expressions == NIL &&
		info->ii_ExclusionOps == NULL &&
		index->rd_index->indimmediate;
}

/* Works out and keeps what making rel's index entries needs. */
static void
keep_indexes(KeptIndexes *k, Relation rel)
{
	List	   *indexoids;
	ListCell   *lc;
	int			i = 0;
	MemoryContext old;

	if (k->cxt == NULL)
		k->cxt = AllocSetContextCreate(TopMemoryContext, "durable index entries",
									   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(k->cxt);
	k->valid = false;
	k->relid = RelationGetRelid(rel);
	old = MemoryContextSwitchTo(k->cxt);
	indexoids = RelationGetIndexList(rel);
	k->nindexes = list_length(indexoids);
	k->indexes = palloc0(sizeof(KeptIndex) * Max(k->nindexes, 1));
	k->econtext = CreateStandaloneExprContext();
	k->generic = false;
	foreach(lc, indexoids)
	{
		KeptIndex  *ki = &k->indexes[i++];
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);

		ki->indexoid = RelationGetRelid(index);
		ki->info = BuildIndexInfo(index);
		if (!handled_here(index, ki->info))
			k->generic = true;
		else if (ki->info->ii_Predicate != NIL)
			ki->predicate = ExecInitQual((List *) expression_planner((Expr *) ki->info->ii_Predicate),
										 NULL);
		index_close(index, NoLock);
	}
	MemoryContextSwitchTo(old);
	k->valid = true;
}

static KeptIndexes *
kept_for(Relation rel)
{
	static int	next_evicted = 0;
	Oid			relid = RelationGetRelid(rel);
	KeptIndexes *k = NULL;

	if (!invalidation_registered)
	{
		CacheRegisterRelcacheCallback(forget_kept, (Datum) 0);
		invalidation_registered = true;
	}
	for (int i = 0; i < KEPT_TABLES; i++)
	{
		if (kept[i].valid && kept[i].relid == relid)
			return &kept[i];
		if (k == NULL && (!kept[i].valid || kept[i].relid == relid))
			k = &kept[i];
	}
	if (k == NULL)
		k = &kept[next_evicted++ % KEPT_TABLES];
	keep_indexes(k, rel);
	return k;
}

/* The executor's way: a ResultRelInfo, its indexes opened, their entries made. */
static void
generic_index_entries(Relation rel, TupleTableSlot *slot, EState *estate,
					  bool summarizing_only)
{
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	EState	   *own = estate ? NULL : CreateExecutorState();

	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
#if PG_VERSION_NUM >= 160000
	ExecInsertIndexTuples(rri, slot, estate ? estate : own, false, false, NULL, NIL,
						  summarizing_only);
#else
	Assert(!summarizing_only);
	ExecInsertIndexTuples(rri, slot, estate ? estate : own, false, false, NULL, NIL);
#endif
	ExecCloseIndices(rri);
	if (own)
		FreeExecutorState(own);
}

/* Whether the row in slot belongs in the index: a partial one's predicate. */
static bool
in_index(KeptIndexes *k, KeptIndex *ki, TupleTableSlot *slot)
{
	bool		holds;

	if (ki->predicate == NULL)
		return true;
	k->econtext->ecxt_scantuple = slot;
	holds = ExecQual(ki->predicate, k->econtext);
	ResetExprContext(k->econtext);
	return holds;
}

/*
 * Whether the new version's entry in an index is the old version's: the
 * same values in the entry's columns, compared byte for byte, and the old
 * version in the index (a partial index's predicate held for it).  Then a
 * unique index needs no check: the old version, live until this update
 * (which found it so), held the key, and anyone inserting the key meanwhile
 * waits for this transaction and then finds the new version.  The entry is
 * also flagged as a copy, as the executor flags it, so that the btree
 * deletes older versions' entries before it splits a full page (bottom-up
 * deletion).
 */
static bool
entry_unchanged(KeptIndexes *k, KeptIndex *ki, TupleTableSlot *old,
				TupleTableSlot *slot)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;

	for (int i = 0; i < ki->info->ii_NumIndexAttrs; i++)
	{
		AttrNumber	attnum = ki->info->ii_IndexAttrNumbers[i];
		Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
		bool		old_null;
		bool		new_null;
		Datum		old_value = slot_getattr(old, attnum, &old_null);
		Datum		new_value = slot_getattr(slot, attnum, &new_null);

		if (old_null != new_null ||
			(!old_null && !datumIsEqual(old_value, new_value, att->attbyval, att->attlen)))
			return false;
	}
	return in_index(k, ki, old);
}

/*
 * The index entries of the tuple just written from slot (its tts_tid set),
 * as the executor makes them: partial indexes' predicates, unique checks.
 * old: for an update, the version it replaced (still pinned), else NULL.
 * summarizing_only: for an update that needs only those (PostgreSQL 16 and
 * later).  estate may be NULL.
 */
void
rows_add_index_entries(Relation rel, TupleTableSlot *slot, TupleTableSlot *old,
					   EState *estate, bool summarizing_only)
{
	KeptIndexes *k = kept_for(rel);

	if (k->generic)
	{
		generic_index_entries(rel, slot, estate, summarizing_only);
		return;
	}
	for (int i = 0; i < k->nindexes; i++)
	{
		KeptIndex  *ki = &k->indexes[i];
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];
		Relation	index;
		bool		unchanged;

		if (!ki->info->ii_ReadyForInserts)
			continue;
#if PG_VERSION_NUM >= 160000
		if (summarizing_only && !ki->info->ii_Summarizing)
			continue;
#endif
		if (!in_index(k, ki, slot))
			continue;
		unchanged = old != NULL && entry_unchanged(k, ki, old, slot);
		index = rows_open(ki->indexoid, RowExclusiveLock);
		FormIndexDatum(ki->info, slot, NULL, values, isnull);
		index_insert(index, values, isnull, &slot->tts_tid, rel,
					 ki->info->ii_Unique && !unchanged ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 unchanged, ki->info);
		rows_close(index);
	}
}
