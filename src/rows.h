/*-------------------------------------------------------------------------
 *
 * rows.h
 *	  What rows.c, row_indexes.c and task_rows.c share: doing for one row
 *	  what a statement's executor would do (see rows.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DURABLE_ROWS_H
#define DURABLE_ROWS_H

#include "durable.h"

#include "access/tableam.h"
#include "executor/executor.h"
#include "utils/snapshot.h"

extern Oid	rows_relid(Oid *cached, const char *name);
extern void rows_forget_on_change(Oid *cached);
extern Relation rows_open(Oid relid, LOCKMODE mode);
extern void rows_close(Relation rel);
extern void rows_close_kept(int depth);
extern void rows_forget_kept(int depth);
extern Snapshot rows_begin_statement(void);
extern bool rows_find_by_key(Relation rel, int nkeys, const RegProcedure *eqprocs,
							 const Datum *key, Snapshot snapshot, TupleTableSlot *slot,
							 ItemPointer root);
extern bool rows_find_by_uuid(Relation rel, Datum key, Snapshot snapshot,
							  TupleTableSlot *slot, ItemPointer root);
extern bool rows_lock(Relation rel, TupleTableSlot *slot, Snapshot snapshot,
					  bool skip_locked, bool *traversed);
extern bool rows_held_elsewhere(TupleTableSlot *slot);
extern bool rows_uuid_column_is(TupleTableSlot *slot, AttrNumber attnum, Datum key);
extern bool rows_peek_newest(Relation rel, ItemPointer row, TupleTableSlot *slot);
extern bool rows_fetch_where_seen(Relation rel, ItemPointer tid, Snapshot snapshot,
								  TupleTableSlot *slot);
extern bool rows_fetch_from_root(Relation rel, ItemPointer root, Snapshot snapshot,
								 TupleTableSlot *slot);
extern bool rows_update(Relation rel, ItemPointer tid, TupleTableSlot *slot,
						TupleTableSlot *old, Snapshot snapshot, EState *estate);
extern TM_Result rows_update_unless_held(Relation rel, ItemPointer tid,
										 TupleTableSlot *slot, TupleTableSlot *old,
										 Snapshot snapshot, EState *estate);
extern void rows_add_index_entries(Relation rel, TupleTableSlot *slot,
								   TupleTableSlot *old, EState *estate,
								   bool summarizing_only);
extern Oid	rows_enum_value(Oid enumtype, const char *label);
extern AttrNumber rows_attnum(Oid relid, const char *column);
extern AttrNumber rows_known_attnum(Oid relid, const char *column, Bitmapset **known);
extern void rows_check_columns(Relation rel, const Bitmapset *known);
extern bool rows_columns_kept(Oid *cached, Relation rel);
extern char *rows_text(TupleTableSlot *slot, AttrNumber attnum);
extern Jsonb *rows_jsonb(TupleTableSlot *slot, AttrNumber attnum);

#endif							/* DURABLE_ROWS_H */
