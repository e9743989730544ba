/*-------------------------------------------------------------------------
 *
 * engine.c
 *	  What every part of the engine needs: running internal queries as the
 *	  extension owner, locking a run, appending to its history, and building
 *	  the JSON of event details.
 *
 * Users call our SQL functions as themselves; the state tables are not
 * theirs to write.  engine_enter() switches to the owner of the durable
 * schema, the way a SECURITY DEFINER function would, but after the caller's
 * identity has been read (it becomes the run's owner); search_path is pinned
 * for the rest of the scope before anything in it is resolved by name
 * (engine_pin_search_path(), called by engine_exec() and the function
 * lookups).
 *
 * The run row is the mutex of a run: whoever appends events to a run holds
 * its row locked FOR UPDATE, so event ids are dense and a workflow task
 * never misses an event appended while it ran.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"
#include "rows.h"

#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/regproc.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/syscache.h"
#include "utils/uuid.h"



Oid
engine_owner(void)
{
	Oid			nspid = get_namespace_oid("durable", false);
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for namespace %u", nspid);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * The search_path of everything the engine resolves by name: its own
 * statements (planned once, and planned again if they ran under another
 * path) and the functions it looks up.
 */
#define ENGINE_SEARCH_PATH "pg_catalog, pg_temp"

/*
 * The engine scopes entered and not left, by depth (1 is the outermost):
 * where each was entered (its subtransaction level) and the GUC nest level
 * at which it pinned its settings (0: not yet).  And, per subtransaction
 * level, the depth when that subtransaction began: an error that aborts a
 * subtransaction abandons the scopes entered inside it, and the scope
 * around them is the innermost again.  Depths, not pointers: an abandoned
 * scope's frame is gone.
 */
typedef struct ScopeState
{
	int			xact_level;
	int			pinned_at;
} ScopeState;

static int	scope_depth = 0;
static ScopeState *scopes = NULL;
static int	scopes_size = 0;
static int *depth_at_level = NULL;
static int	levels_size = 0;

/* array[size] grown to hold index i, new entries zeroed */
static void *
grown(void *array, int *size, int i, Size entry)
{
	int			n = Max(16, (i + 1) * 2);

	if (i < *size)
		return array;
	array = array == NULL ? MemoryContextAllocZero(TopMemoryContext, n * entry) :
		repalloc(array, n * entry);
	memset((char *) array + *size * entry, 0, (n - *size) * entry);
	*size = n;
	return array;
}

static void
scope_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_START_SUB)
	{
		depth_at_level = grown(depth_at_level, &levels_size, level, sizeof(int));
		depth_at_level[level] = scope_depth;
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB && level < levels_size)
	{
		scope_depth = depth_at_level[level];
		/* the rollback released what the abandoned scopes kept open */
		rows_forget_kept(scope_depth);
	}
}

static void
scope_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
	{
		scope_depth = 0;
		rows_forget_kept(0);
	}
}

static bool
search_path_pinned(void)
{
	return namespace_search_path != NULL &&
		strcmp(namespace_search_path, ENGINE_SEARCH_PATH) == 0;
}

/*
 * Sets search_path (and, in the worker, lock_timeout) for what the innermost
 * scope does next, until it is left; or, when called inside a
 * subtransaction begun within the scope, until that subtransaction ends.
 */
static void
pin_settings(void)
{
	ScopeState *scope = &scopes[scope_depth];
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("search_path", ENGINE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	/*
	 * The worker never waits long for a row an application holds (a
	 * heartbeat, a claim in an open transaction): it gives up and comes back
	 * (see ENGINE_LOCK_BUSY).  Users' code gets its own settings back.
	 */
	if (IsBackgroundWorker)
		(void) set_config_option("lock_timeout", ENGINE_LOCK_TIMEOUT,
								 PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	/* a later level of the same scope is undone with this one */
	if (GetCurrentTransactionNestLevel() == scope->xact_level && scope->pinned_at == 0)
		scope->pinned_at = nestlevel;
}

/*
 * Pins search_path before the engine resolves a name: runs a statement of
 * its own or looks a function up.  engine_enter() leaves it to here (but in
 * the worker): most calls on the hot path run no statement, and on
 * PostgreSQL 15 a setting set and restored costs 6,000 instructions
 * (AtEOXact_GUC() visits every setting).
 */
void
engine_pin_search_path(void)
{
	if (search_path_pinned())
		return;
	if (scope_depth == 0)
		elog(ERROR, "durable: a name resolved outside the engine's scope");
	pin_settings();
}

/*
 * Registers what keeps scope_depth right: at library load, so that it sees
 * every subtransaction begin.
 */
void
engine_register_scope_callbacks(void)
{
	RegisterXactCallback(scope_xact_callback, NULL);
	RegisterSubXactCallback(scope_subxact_callback, NULL);
}

/*
 * Become the extension owner and connect to SPI; search_path is pinned by
 * engine_pin_search_path() before anything is resolved by name.
 * Inside, GetUserId() is the owner: check the caller's rights with
 * scope->caller.
 * Results meant to outlive engine_leave() must be made with engine_get(),
 * engine_get_text() or engine_pstrdup(), which allocate in the caller's
 * memory context; anything else allocated inside is freed by engine_leave().
 * An error unwinds all of it with the (sub)transaction.
 */
void
engine_enter(EngineScope *scope)
{
	GetUserIdAndSecContext(&scope->save_userid, &scope->save_sec_context);
	scope->caller = scope->save_userid;
	SetUserIdAndSecContext(engine_owner(),
						   scope->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	scope->depth = ++scope_depth;
	scopes = grown(scopes, &scopes_size, scope_depth, sizeof(ScopeState));
	scopes[scope_depth].xact_level = GetCurrentTransactionNestLevel();
	scopes[scope_depth].pinned_at = 0;
	/* the worker's lock_timeout must hold for rows locked without statements too */
	if (IsBackgroundWorker)
		pin_settings();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
engine_leave(EngineScope *scope)
{
	int			pinned_at = scopes[scope->depth].pinned_at;

	rows_close_kept(scope->depth);
	SPI_finish();
	if (pinned_at > 0)
		AtEOXact_GUC(true, pinned_at);
	scope_depth = scope->depth - 1;
	SetUserIdAndSecContext(scope->save_userid, scope->save_sec_context);
}

/*
 * The innermost scope's depth, if the current subtransaction is the one it
 * was entered in (what is opened now may be kept open until it is left);
 * else 0.
 */
int
engine_keeping_depth(void)
{
	if (scope_depth == 0 ||
		scopes[scope_depth].xact_level != GetCurrentTransactionNestLevel())
		return 0;
	return scope_depth;
}

/*
 * Runs fn(arg) in a subtransaction, kept if fn returns true and rolled back
 * if it returns false.  A rollback releases the relation locks fn took: a
 * caller about to sleep (a long poll, a wait for a result) then holds no lock
 * on our tables while it sleeps, and DROP EXTENSION is not kept waiting.
 */
bool
engine_try_in_subxact(bool (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		keep;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		keep = fn(arg);
	}
	PG_CATCH();
	{
		/* our subtransaction must not outlive us, even on error */
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ReThrowError(edata);
	}
	PG_END_TRY();

	if (keep)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return keep;
}

/*
 * Is this call a procedure's that may commit: a CALL outside a transaction
 * block (non-atomic)?  The long waits (wait_for_activity_task(),
 * wait_for_result()) then commit each look that finds nothing, so that
 * they sleep holding no snapshot; a function cannot let go of its
 * statement's, and while it waits nothing that dies in the database can be
 * pruned or vacuumed.
 */
bool
call_may_commit(FunctionCallInfo fcinfo)
{
	CallContext *call = (CallContext *) fcinfo->context;

	return call != NULL && IsA(call, CallContext) && !call->atomic;
}

/*
 * The look of a wait in a procedure that may commit (call_may_commit(),
 * connected to SPI as non-atomic): runs fn(arg) with a snapshot of its own
 * and, if it returns false (nothing came), commits, which lets go of that
 * snapshot and of the locks fn took.  The transaction SPI_commit() starts
 * has taken no snapshot: the sleep that follows holds none.
 */
bool
engine_look_or_commit(bool (*fn) (void *arg), void *arg)
{
	bool		found;

	PushActiveSnapshot(GetTransactionSnapshot());
	found = fn(arg);
	PopActiveSnapshot();
	if (!found)
		SPI_commit();
	return found;
}

/*
 * Before a wait's next look: DROP EXTENSION may have run while it slept (a
 * wait holds no lock on our tables, so that DDL does not wait for it).  Take
 * in what changed, which also forgets the relations' cached OIDs, and say so
 * plainly rather than as a relation OID that is gone.
 */
void
engine_check_installed_after_wait(void)
{
	Oid			nspid;

	AcceptInvalidationMessages();
	/* two cache lookups (pg_extension has no cache): the schema outlives it */
	nspid = get_namespace_oid("durable", true);
	if (!OidIsValid(nspid) || !OidIsValid(get_relname_relid("runs", nspid)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"durable\" was dropped while this call waited")));
}

/* A wait sees what changes only with a new snapshot at each look. */
void
check_wait_isolation(const char *function, const char *hint)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s cannot wait inside a REPEATABLE READ or SERIALIZABLE transaction",
						function),
				 errhint("%s", hint)));
}

/*
 * Runs fn(arg) in a subtransaction of the caller's, kept when fn returns:
 * returns NULL then.  When fn fails, the subtransaction is rolled back and
 * the error returned (in the caller's memory context) for the caller to
 * handle: the rest of its transaction goes on.
 */
ErrorData *
engine_in_subxact(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();

	if (edata == NULL)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

/*
 * engine_in_subxact(), for work that may meet a row held by someone else
 * (see ENGINE_LOCK_BUSY): returns false then, and the caller leaves that
 * piece of work for later.  Any other error is rethrown, after the rollback.
 */
bool
engine_in_subxact_unless_busy(void (*fn) (void *arg), void *arg)
{
	ErrorData  *edata = engine_in_subxact(fn, arg);

	if (edata != NULL && !ENGINE_LOCK_BUSY(edata))
		ReThrowError(edata);
	return edata == NULL;
}

/*
 * Value of a result column, copied into the caller's context (the one that
 * was current at engine_enter(): SPI's upper context, which SPI unwinds
 * correctly when an error aborts a nested scope).  A varlena value is copied
 * detoasted (decompressed, fetched, with a full header): DatumGetJsonbP() and
 * the like then return the copy itself, instead of detoasting it again into
 * SPI's memory, which engine_leave() frees.
 */
Datum
engine_get(int row, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, isnull);
	Form_pg_attribute att = TupleDescAttr(SPI_tuptable->tupdesc, col - 1);

	if (*isnull || att->attbyval)
		return d;
	if (att->attlen == -1)
		d = PointerGetDatum(pg_detoast_datum((struct varlena *) DatumGetPointer(d)));
	return SPI_datumTransfer(d, false, att->attlen);
}

/* A column as a C string (text, or any type's output: our enums). */
char *
engine_get_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	if (isnull)
		return NULL;
	if (SPI_gettypeid(SPI_tuptable->tupdesc, col) != TEXTOID)
		return engine_pstrdup(SPI_getvalue(SPI_tuptable->vals[row],
										   SPI_tuptable->tupdesc, col));
	return engine_pstrdup(TextDatumGetCString(d));
}

/* A copy of s in the caller's context, to outlive engine_leave(). */
char *
engine_pstrdup(const char *s)
{
	size_t		len = strlen(s) + 1;
	char	   *copy = SPI_palloc(len);

	memcpy(copy, s, len);
	return copy;
}

/* Fills run from the current SPI result's first row, RUN_COLUMNS from first_col on. */
void
engine_fill_locked_run(LockedRun *run, int first_col)
{
	bool		isnull;
	int			c = first_col;

	run->workflow_id = engine_get_text(0, c);
	run->workflow = engine_get_text(0, c + 1);
	run->owner = DatumGetObjectId(engine_get(0, c + 2, &isnull));
	run->input = DatumGetJsonbP(engine_get(0, c + 3, &isnull));
	run->status = engine_get_text(0, c + 4);
	run->next_event_id = DatumGetInt64(engine_get(0, c + 5, &isnull));
	run->task_failed = DatumGetBool(engine_get(0, c + 6, &isnull));
	run->task_pending = DatumGetBool(engine_get(0, c + 7, &isnull));
	run->run_id = engine_get(0, c + 8, &isnull);	/* copied out of SPI's memory */
	ItemPointerSetInvalid(&run->tid);
	ItemPointerSetInvalid(&run->root);
	ItemPointerSetInvalid(&run->due_row);
}

/* Reads a run without locking it (for queries); false if it does not exist. */
bool
engine_read_run(Datum run_id, LockedRun *run)
{
	return engine_find_run(run_id, run, RUN_READ);
}

/*
 * Locks the run row FOR UPDATE (or skips it, if skip_locked and someone
 * holds it).  Returns false when the run does not exist or was skipped.
 */
bool
engine_lock_run(Datum run_id, LockedRun *run, bool skip_locked)
{
	return engine_find_run(run_id, run, skip_locked ? RUN_LOCK_OR_SKIP : RUN_LOCK);
}

/*
 * Records the appended events on the run row and makes a workflow task due
 * (in the worker's queue, durable.due_tasks, unless the run is parked),
 * waking the worker when this transaction commits.
 */
void
engine_request_workflow_task(LockedRun *run)
{
	static EnginePlan plan = {NULL,
		"WITH run AS ("
		"  UPDATE durable.runs SET next_event_id = $2, task_pending = true,"
		"   task_due_at = CASE WHEN task_pending THEN task_due_at ELSE $3 END"
		"  WHERE run_id = $1"
		"  RETURNING run_id, task_due_at, task_failure IS NULL AND status = 'running' AS due,"
		"   ctid)"
		" INSERT INTO durable.due_tasks (run_id, due_at, run_row)"
		" SELECT run_id, task_due_at, ctid FROM run WHERE due"
		" ON CONFLICT (run_id) DO NOTHING",
	3, {UUIDOID, INT8OID, TIMESTAMPTZOID}};
	Datum		values[3] = {run->run_id, Int64GetDatum(run->next_event_id),
	TimestampTzGetDatum(GetCurrentTimestamp())};

	engine_exec(&plan, values, NULL, 0);
	run->task_pending = true;
	durable_wake_worker_at_commit();
}

/* ---- JSON of event details ---- */

/*
 * Built as a jsonb value directly (no text to print and parse again); keys
 * end up sorted and unique exactly as jsonb_in would leave them.
 */
void
json_begin(JsonBuf *jb)
{
	jb->state = NULL;
	(void) pushJsonbValue(&jb->state, WJB_BEGIN_OBJECT, NULL);
}

static void
json_push_string(JsonBuf *jb, JsonbIteratorToken token, const char *s)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.len = strlen(s);
	v.val.string.val = pnstrdup(s, v.val.string.len);
	(void) pushJsonbValue(&jb->state, token, &v);
}

static void
json_push_value(JsonBuf *jb, const char *key, JsonbValue *v)
{
	json_push_string(jb, WJB_KEY, key);
	(void) pushJsonbValue(&jb->state, WJB_VALUE, v);
}

void
json_add_str(JsonBuf *jb, const char *key, const char *value)
{
	JsonbValue	v;

	if (value == NULL)
	{
		v.type = jbvNull;
		json_push_value(jb, key, &v);
		return;
	}
	json_push_string(jb, WJB_KEY, key);
	json_push_string(jb, WJB_VALUE, value);
}

void
json_add_int(JsonBuf *jb, const char *key, int64 value)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(value);
	json_push_value(jb, key, &v);
}

void
json_add_float(JsonBuf *jb, const char *key, double value)
{
	JsonbValue	v;

	/* the digits float8out prints, as jsonb_in would have read them */
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
														CStringGetDatum(float8out_internal(value)),
														ObjectIdGetDatum(InvalidOid),
														Int32GetDatum(-1)));
	json_push_value(jb, key, &v);
}

void
json_add_bool(JsonBuf *jb, const char *key, bool value)
{
	JsonbValue	v;

	v.type = jbvBool;
	v.val.boolean = value;
	json_push_value(jb, key, &v);
}

void
json_add_time(JsonBuf *jb, const char *key, TimestampTz value)
{
	char		buf[MAXDATELEN + 1];

	json_push_string(jb, WJB_KEY, key);
	json_push_string(jb, WJB_VALUE,
					 JsonEncodeDateTime(buf, TimestampTzGetDatum(value),
										TIMESTAMPTZOID, NULL));
}

void
json_add_jsonb(JsonBuf *jb, const char *key, Jsonb *value)
{
	JsonbValue	v;

	if (value == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &value->root;
		v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	}
	json_push_value(jb, key, &v);
}

Jsonb *
json_end(JsonBuf *jb)
{
	return JsonbValueToJsonb(pushJsonbValue(&jb->state, WJB_END_OBJECT, NULL));
}

/* The value of key in a JSON object (JSON null included), or NULL if absent. */
Jsonb *
jsonb_field(Jsonb *obj, const char *key)
{
	JsonbValue	v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	if (getKeyJsonValueFromContainer(&obj->root, key, strlen(key), &v) == NULL)
		return NULL;
	return JsonbValueToJsonb(&v);
}

char *
jsonb_field_text(Jsonb *obj, const char *key)
{
	JsonbValue	v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	if (getKeyJsonValueFromContainer(&obj->root, key, strlen(key), &v) == NULL ||
		v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

bool
jsonb_field_int(Jsonb *obj, const char *key, int64 *result)
{
	JsonbValue	v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return false;
	if (getKeyJsonValueFromContainer(&obj->root, key, strlen(key), &v) == NULL ||
		v.type != jbvNumeric)
		return false;
	*result = DatumGetInt64(DirectFunctionCall1(numeric_int8,
												NumericGetDatum(v.val.numeric)));
	return true;
}

/* An error as recorded in history and shown by describe(). */
Jsonb *
error_to_jsonb(ErrorData *edata)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_str(&jb, "message", edata->message);
	json_add_str(&jb, "sqlstate", unpack_sql_state(edata->sqlerrcode));
	if (edata->detail)
		json_add_str(&jb, "detail", edata->detail);
	if (edata->hint)
		json_add_str(&jb, "hint", edata->hint);
	if (edata->context)
		json_add_str(&jb, "context", edata->context);
	return json_end(&jb);
}

Datum
jsonb_datum_or_null(Jsonb *j, bool *isnull)
{
	*isnull = (j == NULL);
	return j ? JsonbPGetDatum(j) : (Datum) 0;
}

/* Is funcoid a function (jsonb) RETURNS jsonb?  Its schema goes to *nspid. */
bool
is_workflow_function(Oid funcoid, Oid *nspid)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcoid));
	Form_pg_proc proc;
	bool		ok;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", funcoid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->pronargs == 1 && proc->proargtypes.values[0] == JSONBOID &&
		proc->prorettype == JSONBOID && !proc->proretset &&
		proc->prokind == PROKIND_FUNCTION;
	if (nspid)
		*nspid = proc->pronamespace;
	ReleaseSysCache(tup);
	return ok;
}

/* An interval argument in milliseconds (capped at INT_MAX); negative is an error. */
long
interval_arg_ms(Interval *iv, const char *what)
{
	double		ms = iv->time / 1000.0 + iv->day * (double) SECS_PER_DAY * 1000 +
		iv->month * (double) DAYS_PER_MONTH * SECS_PER_DAY * 1000;

	if (ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
	return (long) Min(ms, (double) INT_MAX);
}

/* An interval as history shows it ("3 days 01:00:00"), whatever IntervalStyle. */
char *
interval_text(Interval *iv)
{
	struct pg_itm itm;
	char		buf[MAXDATELEN + 1];

	interval2itm(*iv, &itm);
	EncodeInterval(&itm, INTSTYLE_POSTGRES, buf);
	return pstrdup(buf);
}

/* ---- running users' code ---- */

void
engine_check_role_may_run(Oid funcoid, Oid owner)
{
	Oid			nspid;

	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role %u that started the workflow no longer exists", owner)));
	if (!is_workflow_function(funcoid, &nspid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s no longer takes jsonb and returns jsonb",
						format_procedure(funcoid)),
				 errhint("Workflow and SQL activity functions take one jsonb argument and return jsonb.")));
	if (durable_namespace_aclcheck(nspid, owner, ACL_USAGE) != ACLCHECK_OK ||
		durable_proc_aclcheck(funcoid, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may no longer execute function %s",
						GetUserNameFromId(owner, false), format_procedure(funcoid))));
}

/*
 * Become the run's owner, as a security-restricted operation with a safe
 * search_path (read-only for workflow code).  Call inside a subtransaction:
 * its end undoes all of it.
 */
void
engine_become_role(Oid owner, bool read_only)
{
	Oid			userid;
	int			sec_context;

	GetUserIdAndSecContext(&userid, &sec_context);
	SetUserIdAndSecContext(owner, sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	(void) NewGUCNestLevel();
	/* the engine's scope may have it already (the worker's always does) */
	if (!search_path_pinned())
		(void) set_config_option("search_path", ENGINE_SEARCH_PATH,
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (IsBackgroundWorker)
		(void) set_config_option("lock_timeout",
								 GetConfigOptionResetString("lock_timeout"),
								 PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (read_only)
		XactReadOnly = true;
}


/* ---- rows an application holds: left alone for a while ---- */

#define BUSY_ENTRIES	64
#define BUSY_BACKOFF_MS	1000

typedef struct BusyEntry
{
	int64		key;			/* a timer id, or a hash of a run id */
	TimestampTz until;
} BusyEntry;

static BusyEntry busy_entries[BUSY_ENTRIES];

static BusyEntry *
busy_entry(int64 key)
{
	for (int i = 0; i < BUSY_ENTRIES; i++)
		if (busy_entries[i].key == key && busy_entries[i].until != 0)
			return &busy_entries[i];
	return NULL;
}

/*
 * The worker met a row lock it gave up on (ENGINE_LOCK_BUSY): leave what
 * needs it alone for a second rather than wait again at every loop.
 */
void
engine_note_busy(int64 key)
{
	TimestampTz now = GetCurrentTimestamp();
	BusyEntry  *entry = busy_entry(key);

	if (entry == NULL)
	{
		/* a free or expired entry, else the one that expires first */
		entry = &busy_entries[0];
		for (int i = 0; i < BUSY_ENTRIES && entry->until >= now; i++)
			if (busy_entries[i].until < entry->until)
				entry = &busy_entries[i];
	}
	entry->key = key;
	entry->until = TimestampTzPlusMilliseconds(now, BUSY_BACKOFF_MS);
}

/* Is what needs this key being left alone (engine_note_busy())? */
bool
engine_is_busy(int64 key)
{
	BusyEntry  *entry = busy_entry(key);

	return entry != NULL && entry->until > GetCurrentTimestamp();
}

/*
 * Was the key's lock given up on the last time it was tried, its wait for
 * it over (so that the next try need not wait again)?  Forgotten by
 * engine_forget_busy() once it is had, or when the entry goes to another.
 */
bool
engine_was_busy(int64 key)
{
	return busy_entry(key) != NULL;
}

void
engine_forget_busy(int64 key)
{
	BusyEntry  *entry = busy_entry(key);

	if (entry != NULL)
		entry->until = 0;
}

int64
engine_run_key(Datum run_id)
{
	int64		key;

	memcpy(&key, DatumGetUUIDP(run_id)->data, sizeof(key));
	return key;
}

/*
 * A text argument that must be neither NULL nor empty, as it is: for callers
 * that only compare it (a replayed call), to which a copy would be waste.
 */
text *
required_text(FunctionCallInfo fcinfo, int argno, const char *what)
{
	text	   *t;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	t = PG_GETARG_TEXT_PP(argno);
	if (VARSIZE_ANY_EXHDR(t) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	return t;
}

/* The same, as a C string. */
char *
required_text_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	return text_to_cstring(required_text(fcinfo, argno, what));
}

/* Whether the text t holds the C string s. */
bool
text_equals_cstring(const text *t, const char *s)
{
	size_t		len = VARSIZE_ANY_EXHDR(t);

	return strlen(s) == len && memcmp(VARDATA_ANY(t), s, len) == 0;
}
