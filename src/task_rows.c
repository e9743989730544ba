/*-------------------------------------------------------------------------
 *
 * task_rows.c
 *	  The task rows of activities, without statements (see rows.c): a new
 *	  activity's row inserted, ready rows claimed by a poll, the row of an
 *	  attempt that ended deleted.
 *
 *-------------------------------------------------------------------------
 */
#include "rows.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(durable_task_queue_hash);

/* ---- the task row of a new activity ---- */

/*
 * A queue name's hash, the ready index's first column (durable--*.sql):
 * 32-bit FNV-1a of its bytes, the same on every platform, so that rows
 * restored elsewhere are found where claims look.
 */
static int32
task_queue_hash(const char *name, int len)
{
	uint32		hash = 2166136261u;

	for (int i = 0; i < len; i++)
	{
		hash ^= (unsigned char) name[i];
		hash *= 16777619u;
	}
	return (int32) hash;
}

Datum
durable_task_queue_hash(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);

	PG_RETURN_INT32(task_queue_hash(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name)));
}

/* Where NewTask's columns are in durable.activity_tasks, and what they hold. */
typedef struct TaskColumns
{
	Oid			relid;			/* invalid: to be looked up */
	Oid			scheduled,		/* the status enum's values */
				started;
	AttrNumber	run_id,
				handle,
				run_row,
				workflow_id,
				activity,
				task_queue,
				task_queue_hash,
				input,
				retry_policy,
				timeouts,
				priority,
				attempt,
				status,
				scheduled_at,
				ready_at,
				started_at,
				start_to_close_at,
				worker,
				cancel_requested,
				heartbeat_details;	/* not written by an insert */
} TaskColumns;

/*
 * Looks the columns up once per backend, and again when the table changes;
 * every other column must be one an INSERT naming these would leave NULL
 * (rows_check_columns()).
 */
static const TaskColumns *
task_columns(Relation rel)
{
	static TaskColumns cache = {InvalidOid};
	TaskColumns *c = &cache;
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	Bitmapset  *known = NULL;

	if (rows_columns_kept(&c->relid, rel))
		return c;
	c->run_id = rows_known_attnum(relid, "run_id", &known);
	c->handle = rows_known_attnum(relid, "handle", &known);
	c->run_row = rows_known_attnum(relid, "run_row", &known);
	c->workflow_id = rows_known_attnum(relid, "workflow_id", &known);
	c->activity = rows_known_attnum(relid, "activity", &known);
	c->task_queue = rows_known_attnum(relid, "task_queue", &known);
	c->task_queue_hash = rows_known_attnum(relid, "task_queue_hash", &known);
	c->input = rows_known_attnum(relid, "input", &known);
	c->retry_policy = rows_known_attnum(relid, "retry_policy", &known);
	c->timeouts = rows_known_attnum(relid, "timeouts", &known);
	c->priority = rows_known_attnum(relid, "priority", &known);
	c->attempt = rows_known_attnum(relid, "attempt", &known);
	c->status = rows_known_attnum(relid, "status", &known);
	c->scheduled_at = rows_known_attnum(relid, "scheduled_at", &known);
	c->ready_at = rows_known_attnum(relid, "ready_at", &known);
	c->started_at = rows_known_attnum(relid, "started_at", &known);
	c->start_to_close_at = rows_known_attnum(relid, "start_to_close_at", &known);
	c->worker = rows_known_attnum(relid, "worker", &known);
	c->cancel_requested = rows_known_attnum(relid, "cancel_requested", &known);
	c->heartbeat_details = rows_attnum(relid, "heartbeat_details");
	rows_check_columns(rel, known);
	bms_free(known);
	c->scheduled = rows_enum_value(TupleDescAttr(desc, c->status - 1)->atttypid, "scheduled");
	c->started = rows_enum_value(TupleDescAttr(desc, c->status - 1)->atttypid, "started");
	c->relid = relid;
	return c;
}

/*
 * Inserts the task row of a new activity, as an INSERT naming these columns
 * would (the others NULL, uniqueness and partial indexes as the executor
 * checks them): scheduled, or already started by the caller of
 * complete_and_poll().
 */
ItemPointerData
engine_insert_task(const NewTask *t)
{
	static Oid	relid = InvalidOid;
	Relation	rel;
	const TaskColumns *c;
	EState	   *estate;
	TupleTableSlot *slot;
	Datum	   *values;
	bool	   *nulls;
	ItemPointerData tid;
	TimestampTz start_to_close_at = t->started ?
		activity_start_to_close_at(t->timeouts, t->now) : 0;

	/*
	 * Ready from this insert on, by the clock rather than the workflow
	 * task's time: the tasks of one fan-out would otherwise share a
	 * ready_at, and a claim could not start past those already claimed
	 * among them (see queue_heads.c) but would walk their entries each time.
	 */
	TimestampTz ready_at = Max(t->now, GetCurrentTimestamp());

	PreventCommandIfReadOnly("INSERT INTO durable.activity_tasks");
	rel = rows_open(rows_relid(&relid, "activity_tasks"), RowExclusiveLock);
	c = task_columns(rel);

	estate = CreateExecutorState();
	slot = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), &TTSOpsVirtual);
	values = slot->tts_values;
	nulls = slot->tts_isnull;
	ExecClearTuple(slot);
	memset(nulls, true, sizeof(bool) * RelationGetDescr(rel)->natts);
#define SET(col, value) (values[c->col - 1] = (value), nulls[c->col - 1] = false)
	SET(run_id, t->run_id);
	SET(handle, Int32GetDatum(t->handle));
	if (ItemPointerIsValid(&t->run_row))
		SET(run_row, PointerGetDatum(&t->run_row));
	SET(workflow_id, CStringGetTextDatum(t->workflow_id));
	SET(activity, CStringGetTextDatum(t->activity));
	SET(task_queue, CStringGetTextDatum(t->task_queue));
	SET(task_queue_hash, Int32GetDatum(task_queue_hash(t->task_queue, strlen(t->task_queue))));
	if (t->input)
		SET(input, JsonbPGetDatum(t->input));
	SET(retry_policy, JsonbPGetDatum(t->retry_policy));
	SET(timeouts, JsonbPGetDatum(t->timeouts));
	SET(priority, Int32GetDatum(t->priority));
	SET(attempt, Int32GetDatum(1));
	SET(status, ObjectIdGetDatum(t->started ? c->started : c->scheduled));
	SET(scheduled_at, TimestampTzGetDatum(t->now));
	SET(ready_at, TimestampTzGetDatum(ready_at));
	if (t->started)
		SET(started_at, TimestampTzGetDatum(t->now));
	if (start_to_close_at != 0)
		SET(start_to_close_at, TimestampTzGetDatum(start_to_close_at));
	if (t->started && t->worker)
		SET(worker, CStringGetTextDatum(t->worker));
	SET(cancel_requested, BoolGetDatum(false));
#undef SET
	ExecStoreVirtualTuple(slot);

	simple_table_tuple_insert(rel, slot);
	tid = slot->tts_tid;
	rows_add_index_entries(rel, slot, NULL, estate, false);
	if (!t->started)
		queue_head_entry_added(t->task_queue, t->priority, ready_at);
	if (start_to_close_at != 0)
		durable_timer_added_at_commit(start_to_close_at);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	rows_close(rel);
	return tid;
}

/* ---- claiming ready tasks ---- */

/* The ready tasks' index, durable.activity_tasks_ready. */
static Oid
ready_index(Relation rel)
{
	static Oid	indexid = InvalidOid;
	static Oid	of_relid = InvalidOid;

	if (of_relid != RelationGetRelid(rel) || !OidIsValid(indexid))
	{
		rows_forget_on_change(&indexid);
		indexid = get_relname_relid("activity_tasks_ready", RelationGetNamespace(rel));
		if (!OidIsValid(indexid))
			elog(ERROR, "index durable.activity_tasks_ready does not exist");
		of_relid = RelationGetRelid(rel);
	}
	return indexid;
}

/* Is the task in slot ready, on queue, at now? */
static bool
task_is_ready(TupleTableSlot *slot, const TaskColumns *c, text *queue, TimestampTz now)
{
	bool		isnull;
	text	   *row_queue;

	if (DatumGetObjectId(slot_getattr(slot, c->status, &isnull)) != c->scheduled ||
		DatumGetTimestampTz(slot_getattr(slot, c->ready_at, &isnull)) > now)
		return false;
	row_queue = DatumGetTextPP(slot_getattr(slot, c->task_queue, &isnull));
	return VARSIZE_ANY_EXHDR(row_queue) == VARSIZE_ANY_EXHDR(queue) &&
		memcmp(VARDATA_ANY(row_queue), VARDATA_ANY(queue), VARSIZE_ANY_EXHDR(queue)) == 0;
}

static void
fill_claimed(ClaimedTask *t, TupleTableSlot *slot, const TaskColumns *c)
{
	bool		isnull;
	pg_uuid_t  *run_id = SPI_palloc(sizeof(pg_uuid_t));
	Datum		row;

	t->attempt = DatumGetInt32(slot_getattr(slot, c->attempt, &isnull));
	t->handle = DatumGetInt32(slot_getattr(slot, c->handle, &isnull));
	memcpy(run_id, DatumGetUUIDP(slot_getattr(slot, c->run_id, &isnull)), sizeof(pg_uuid_t));
	t->run_id = UUIDPGetDatum(run_id);
	t->workflow_id = rows_text(slot, c->workflow_id);
	t->activity = rows_text(slot, c->activity);
	t->input = rows_jsonb(slot, c->input);
	t->heartbeat_details = rows_jsonb(slot, c->heartbeat_details);
	t->timeouts = rows_jsonb(slot, c->timeouts);
	t->tid = slot->tts_tid;
	row = slot_getattr(slot, c->run_row, &isnull);
	if (isnull)
		ItemPointerSetInvalid(&t->run_row);
	else
		t->run_row = *(ItemPointer) DatumGetPointer(row);
}

/*
 * The claimed version of the task in slot, into started: its attempt's
 * start_to_close runs from now.
 */
static void
mark_started(TupleTableSlot *started, TupleTableSlot *slot, const TaskColumns *c,
			 TimestampTz now, const char *worker)
{
	bool		isnull;
	Datum		timeouts = slot_getattr(slot, c->timeouts, &isnull);
	TimestampTz start_to_close_at =
		isnull ? 0 : activity_start_to_close_at(DatumGetJsonbP(timeouts), now);

	ExecCopySlot(started, slot);
	started->tts_values[c->status - 1] = ObjectIdGetDatum(c->started);
	started->tts_values[c->started_at - 1] = TimestampTzGetDatum(now);
	started->tts_isnull[c->started_at - 1] = false;
	started->tts_values[c->worker - 1] = worker ? CStringGetTextDatum(worker) : (Datum) 0;
	started->tts_isnull[c->worker - 1] = worker == NULL;
	started->tts_values[c->start_to_close_at - 1] = TimestampTzGetDatum(start_to_close_at);
	started->tts_isnull[c->start_to_close_at - 1] = start_to_close_at == 0;
}

/* The claim of the task in started is made: the timer queue has its deadline. */
static void
note_started(TupleTableSlot *started, const TaskColumns *c)
{
	bool		isnull;
	Datum		start_to_close_at = slot_getattr(started, c->start_to_close_at, &isnull);

	if (!isnull)
		durable_timer_added_at_commit(DatumGetTimestampTz(start_to_close_at));
}

/* The scan key "task_queue_hash = task_queue_hash(queue)" on the ready index. */
static void
queue_scan_key(ScanKey key, text *queue)
{
	ScanKeyInit(key, 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(task_queue_hash(VARDATA_ANY(queue), VARSIZE_ANY_EXHDR(queue))));
}

/*
 * Does the ready index hold (task_queue_hash, priority DESC, ready_at, ...),
 * as the schema makes it?  Only then can a claim start at a queue's head
 * (queue_heads.c).
 */
static bool
ready_index_has_head_columns(Relation index, const TaskColumns *c)
{
	Form_pg_index form = index->rd_index;

	return form->indnkeyatts >= 3 &&
		form->indkey.values[0] == c->task_queue_hash &&
		form->indkey.values[1] == c->priority &&
		(index->rd_indoption[1] & INDOPTION_DESC) != 0 &&
		form->indkey.values[2] == c->ready_at &&
		(index->rd_indoption[2] & INDOPTION_DESC) == 0;
}

/*
 * Where a claim's scan of the ready index goes: the queue's entries from
 * its first one, or from its head (queue_heads.c) those of priority 0 with
 * head <= ready_at < until (DT_NOEND: no end).
 */
typedef struct ClaimRange
{
	bool		from_head;
	TimestampTz head;
	TimestampTz until;
} ClaimRange;

static int
claim_scan_keys(ScanKey keys, text *queue, const ClaimRange *range)
{
	int			nkeys = 1;

	queue_scan_key(&keys[0], queue);
	if (!range->from_head)
		return nkeys;
	ScanKeyInit(&keys[nkeys++], 2, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(0));
	ScanKeyInit(&keys[nkeys++], 3, BTGreaterEqualStrategyNumber, F_TIMESTAMPTZ_GE,
				TimestampTzGetDatum(range->head));
	if (range->until != DT_NOEND)
		ScanKeyInit(&keys[nkeys++], 3, BTLessStrategyNumber, F_TIMESTAMPTZ_LT,
					TimestampTzGetDatum(range->until));
	return nkeys;
}

/* What a claim's scan met first, for the queue's head. */
typedef struct FirstLive
{
	bool		seen;			/* met an entry not known dead */
	TimestampTz ready_at;
	int32		priority;
} FirstLive;

/*
 * Is the row version of the entry the scan is on, which the claim's
 * snapshot does not see, out of every later claim's reach for good?  Yes if
 * its insert was rolled back, or committed before the snapshot (so what
 * hides it is an update or delete that committed before the snapshot: every
 * later snapshot sees that too).  Not if its insert was in progress at the
 * snapshot: it may be a task becoming ready.  Unlike the index's killed
 * entries this does not wait for the oldest snapshot of all to go: a
 * session that holds one (a long poll on another queue, a long statement)
 * would otherwise keep every claim walking the tasks claimed since.
 */
static bool
superseded_for_good(Relation rel, IndexScanDesc scan, Snapshot snapshot)
{
	HeapTupleData tuple;
	Buffer		buffer;
	bool		superseded = false;

	tuple.t_self = scan->xs_heaptid;
	if (!heap_fetch(rel, SnapshotAny, &tuple, &buffer, false))
	{
		if (BufferIsValid(buffer))
			ReleaseBuffer(buffer);
		return false;
	}
	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	if (HeapTupleHeaderXminInvalid(tuple.t_data))
		superseded = true;		/* its insert rolled back */
	else if (HeapTupleHeaderXminCommitted(tuple.t_data) || HeapTupleHeaderXminFrozen(tuple.t_data))
		superseded = !XidInMVCCSnapshot(HeapTupleHeaderGetRawXmin(tuple.t_data), snapshot);
	LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
	ReleaseBuffer(buffer);
	return superseded;
}

/*
 * Notes the entry the scan is on unless it is known dead (or superseded for
 * good, see above), or one was noted.
 */
static void
note_first_live(FirstLive *first, Relation rel, IndexScanDesc scan, bool visible,
				Snapshot snapshot)
{
	bool		isnull;

	if (first->seen ||
		(!visible && (scan->kill_prior_tuple || superseded_for_good(rel, scan, snapshot))))
		return;
	first->seen = true;
	first->priority = DatumGetInt32(index_getattr(scan->xs_itup, 2, scan->xs_itupdesc, &isnull));
	first->ready_at = DatumGetTimestampTz(index_getattr(scan->xs_itup, 3, scan->xs_itupdesc, &isnull));
}

/*
 * One pass of engine_claim_tasks() over the ready index, from the queue's
 * head or from its first entry; claims into claimed[] from n on, returns
 * the new count.
 */
static int
claim_scan(Relation rel, Relation index, const TaskColumns *c, text *queue,
		   const ClaimRange *range, const char *worker, TimestampTz now,
		   int n, int max_tasks, bool tentative, Snapshot snapshot, EState *estate,
		   ClaimedTask *claimed, FirstLive *first)
{
	TupleTableSlot *slot;
	TupleTableSlot *started;
	TupleTableSlot *peek;
	IndexScanDesc scan;
	ScanKeyData keys[4];
	int			nkeys;
	TM_Result	result;

	slot = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), table_slot_callbacks(rel));
	started = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), &TTSOpsVirtual);
	peek = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), table_slot_callbacks(rel));
	nkeys = claim_scan_keys(keys, queue, range);
	scan = index_beginscan(rel, index, snapshot, nkeys, 0);
	/* the entries' own keys, for the head, whether or not their rows are visible */
	scan->xs_want_itup = first != NULL;
	index_rescan(scan, keys, nkeys, NULL, 0);
	/* index_getnext_slot(), with a look at each entry for the head */
	while (n < max_tasks && index_getnext_tid(scan, ForwardScanDirection) != NULL)
	{
		ItemPointerData tid;
		bool		visible = index_fetch_heap(scan, slot);

		if (first != NULL)
			note_first_live(first, rel, scan, visible, snapshot);
		if (!visible)
			continue;
		tid = slot->tts_tid;
		/* the other pollers' claims first: a look at the header, no columns */
		if (rows_held_elsewhere(slot) || !task_is_ready(slot, c, queue, now))
			continue;
		mark_started(started, slot, c, now, worker);
		result = rows_update_unless_held(rel, &tid, started, slot, snapshot, estate);
		if (result != TM_Ok)
		{
			bool		traversed;

			/*
			 * Claimed (or finished) by someone since the snapshot, the usual
			 * case with several pollers: the statement would lock its newest
			 * version and only then see that it is not ready, a lock that is
			 * a WAL record and holds up that claimer's completion until this
			 * transaction ends.  A look without a lock comes first.
			 */
			if (tentative ||
				(result == TM_Updated && !IsolationUsesXactSnapshot() &&
				 (!rows_peek_newest(rel, &tid, peek) ||
				  !task_is_ready(peek, c, queue, now))) ||
				!rows_lock(rel, slot, snapshot, true, &traversed) ||
				(traversed && !task_is_ready(slot, c, queue, now)))
				continue;
			tid = slot->tts_tid;
			mark_started(started, slot, c, now, worker);
			(void) rows_update(rel, &tid, started, slot, snapshot, estate);
		}
		note_started(started, c);
		fill_claimed(&claimed[n++], started, c);
	}
	index_endscan(scan);
	return n;
}

/* One pass of a claim, and what it tells of the queue's head. */
static int
claim_pass(Relation rel, Relation index, const TaskColumns *c, const char *queue,
		   text *queue_text, const ClaimRange *range, const QueueHeadRead *head,
		   const char *worker, TimestampTz now, int max_tasks, bool tentative,
		   Snapshot snapshot, EState *estate, ClaimedTask *claimed)
{
	FirstLive	first = {false};
	int			n;

	/* from the first entry or from the head: what it meets tells of the head */
	n = claim_scan(rel, index, c, queue_text, range, worker, now, 0, max_tasks,
				   tentative, snapshot, estate, claimed, &first);
	queue_head_seen(queue, head, !range->from_head, range->until, first.seen,
					first.ready_at, first.priority);
	return n;
}

/*
 * A claim past the queue's dead entries (queue_heads.c): first the entries
 * just past its head (how far: what held a task lately), then, for as many
 * as that did not find, those of a span four times as wide after it, then
 * the rest of them from there; and when those hold nothing to claim (or the
 * head is not to be used), from the queue's first entry.  The head is read
 * once the claim holds its snapshot.  The first span is mostly missed when
 * the other pollers' claims hold all of it, and the queue's next tasks are
 * then just past it: the wider span finds them without reading the rest of
 * the index page (a btree scan reads a leaf page from where it starts to
 * its end, or to the scan's bound, checking every entry).
 */
#define WIDER_SPAN	4

static int
claim_from_head_or_first(Relation rel, Relation index, const TaskColumns *c,
						 const char *queue, text *queue_text, const char *worker,
						 TimestampTz now, int max_tasks, bool tentative,
						 Snapshot snapshot, EState *estate, ClaimedTask *claimed)
{
	QueueHeadRead head;
	ClaimRange	range = {false, 0, DT_NOEND};
	int			n = 0;

	if (queue_head_read(queue, &head))
	{
		range.from_head = true;
		range.head = head.head;
		range.until = head.head + head.window;
		n = claim_pass(rel, index, c, queue, queue_text, &range, &head, worker, now,
					   max_tasks, tentative, snapshot, estate, claimed);
		queue_head_window_held(queue, n > 0);
		if (n < max_tasks)
		{
			range.head = range.until;
			range.until = range.head + head.window * WIDER_SPAN;
			n = claim_scan(rel, index, c, queue_text, &range, worker, now, n,
						   max_tasks, tentative, snapshot, estate, claimed, NULL);
		}
		if (n < max_tasks)
		{
			range.head = range.until;
			range.until = DT_NOEND;
			n = claim_scan(rel, index, c, queue_text, &range, worker, now, n,
						   max_tasks, tentative, snapshot, estate, claimed, NULL);
		}
		if (n > 0)
			return n;
		(void) queue_head_read(queue, &head);
	}
	range.from_head = false;
	range.until = DT_NOEND;
	return claim_pass(rel, index, c, queue, queue_text, &range, &head, worker, now,
					  max_tasks, tentative, snapshot, estate, claimed);
}

/*
 * Claims up to max_tasks ready tasks of the queue into claimed[], highest
 * priority first, then oldest, passing over rows someone holds; returns how
 * many.  As the statement
 *   UPDATE ... SET status = 'started', started_at = now, worker = worker
 *    WHERE ctid = ANY (ARRAY(SELECT ctid ... WHERE task_queue = queue
 *      AND status = 'scheduled' AND ready_at <= now ORDER BY priority DESC,
 *      ready_at LIMIT max_tasks FOR UPDATE SKIP LOCKED))
 * would, reading the ready tasks' index in its order.  A row is updated at
 * once when no one holds it and it is as the snapshot saw it (the usual
 * case); else it goes the statement's way: locked unless someone holds it,
 * in its newest version and looked at again (READ COMMITTED), or a
 * serialization failure (REPEATABLE READ).  In READ COMMITTED, a row changed
 * since the snapshot whose newest version is plainly not ready is passed
 * over without that lock (the statement would lock it, and keep the lock).
 *
 * The index is read from the queue's head when it has one (queue_heads.c:
 * past the entries of tasks claimed before, which stay until VACUUM), and
 * from its first entry when that finds nothing.
 *
 * A tentative look leaves nothing behind if it claims nothing: it passes
 * over rows changed since its snapshot instead of locking them, and then
 * releases the table and index locks it took (a poller about to sleep must
 * not hold them; the statement's way would keep them to the end of the
 * transaction).
 */
int
engine_claim_tasks(const char *queue, const char *worker, TimestampTz now,
				   int max_tasks, bool tentative, ClaimedTask *claimed)
{
	static Oid	relid = InvalidOid;
	text	   *queue_text = cstring_to_text(queue);
	Relation	rel;
	Relation	index;
	const TaskColumns *c;
	EState	   *estate;
	Snapshot	snapshot;
	int			n;

	PreventCommandIfReadOnly("UPDATE durable.activity_tasks");
	snapshot = rows_begin_statement();
	/* a tentative look may release its locks: nothing of it is kept */
	rel = tentative ? table_open(rows_relid(&relid, "activity_tasks"), RowExclusiveLock) :
		rows_open(rows_relid(&relid, "activity_tasks"), RowExclusiveLock);
	c = task_columns(rel);
	index = tentative ? index_open(ready_index(rel), AccessShareLock) :
		rows_open(ready_index(rel), AccessShareLock);
	estate = CreateExecutorState();
	if (ready_index_has_head_columns(index, c))
		n = claim_from_head_or_first(rel, index, c, queue, queue_text, worker, now,
									 max_tasks, tentative, snapshot, estate, claimed);
	else
	{
		ClaimRange	all = {false};

		/* the scan key is on the first column: it must be the hash */
		if (index->rd_index->indkey.values[0] != c->task_queue_hash)
			elog(ERROR, "index durable.activity_tasks_ready does not begin with task_queue_hash");
		n = claim_scan(rel, index, c, queue_text, &all, worker, now, 0, max_tasks,
					   tentative, snapshot, estate, claimed, NULL);
	}
	if (tentative)
		index_close(index, n == 0 ? AccessShareLock : NoLock);
	else
		rows_close(index);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	if (tentative)
		table_close(rel, n == 0 ? RowExclusiveLock : NoLock);
	else
		rows_close(rel);
	PopActiveSnapshot();
	return n;
}

/* ---- the task row of an attempt that ended ---- */

/*
 * The version of task (run_id, handle) that the snapshot sees, if it is the
 * one at tid: where this backend last wrote it (its claim, or its insert as
 * started), unless someone changed it since (a heartbeat, a timeout: then
 * the snapshot does not see that version, and the primary key is asked;
 * see rows_fetch_where_seen()).  A task has one version that a snapshot
 * sees, so a row there with the task's key is the one the primary key would
 * find, without the index's descent.
 */
static bool
task_version_at(Relation rel, const TaskColumns *c, ItemPointer tid, Datum run_id,
				int32 handle, Snapshot snapshot, TupleTableSlot *slot)
{
	bool		isnull;

	return rows_fetch_where_seen(rel, tid, snapshot, slot) &&
		DatumGetInt32(slot_getattr(slot, c->handle, &isnull)) == handle &&
		rows_uuid_column_is(slot, c->run_id, run_id);
}

/*
 * Deletes the task row of (run_id, handle) if it is still at this attempt
 * and started, as "DELETE ... WHERE run_id = $1 AND handle = $2 AND attempt =
 * $3 AND status = 'started'" would: a row someone updated meanwhile (a heartbeat) is waited
 * for and looked at again in its newest version (a serialization failure in
 * REPEATABLE READ).  seen_at, if not NULL, is where this backend last saw
 * the row (see task_version_at()).  True if it deleted the row.
 */
bool
engine_delete_started_task(Datum run_id, int32 handle, int32 attempt, ItemPointer seen_at)
{
	static const RegProcedure key_eq[2] = {F_UUID_EQ, F_INT4EQ};
	Datum		key[2] = {run_id, Int32GetDatum(handle)};
	static Oid	relid = InvalidOid;
	Relation	rel;
	const TaskColumns *c;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	bool		found;
	bool		deleted = false;

	PreventCommandIfReadOnly("DELETE FROM durable.activity_tasks");
	snapshot = rows_begin_statement();
	rel = rows_open(rows_relid(&relid, "activity_tasks"), RowExclusiveLock);
	c = task_columns(rel);
	slot = table_slot_create(rel, NULL);
	found = task_version_at(rel, c, seen_at, run_id, handle, snapshot, slot) ||
		rows_find_by_key(rel, 2, key_eq, key, snapshot, slot, NULL);
	while (found)
	{
		bool		isnull;
		TM_FailureData tmfd;
		TM_Result	result;

		if (DatumGetInt32(slot_getattr(slot, c->attempt, &isnull)) != attempt ||
			DatumGetObjectId(slot_getattr(slot, c->status, &isnull)) != c->started)
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
		found = rows_lock(rel, slot, snapshot, false, NULL);
	}
	ExecDropSingleTupleTableSlot(slot);
	rows_close(rel);
	PopActiveSnapshot();
	return deleted;
}
