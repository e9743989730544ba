/*-------------------------------------------------------------------------
 *
 * user_functions.c
 *	  The users' functions the engine calls: workflow functions and SQL
 *	  activities.  Resolving the name a run stores, and keeping the call
 *	  information (FmgrInfo) of each across calls.
 *
 * A run stores its function as regprocedure text, so that it survives
 * pg_dump; parsing that text costs more than the rest of a short workflow
 * task.  And a fresh FmgrInfo for each call costs about 3,000 instructions
 * more: fmgr_info() (the function's row, its language's, the handler's),
 * and PL/pgSQL's hash lookup for its compiled function.  Both are kept
 * until any function, schema or type changes.  A kept FmgrInfo lives across
 * transactions, as the relcache keeps an index's support functions: the
 * procedural languages keep their own state in fn_extra and check it against
 * the function's row at each call (PL/pgSQL finds its compiled function
 * there without a hash lookup).  Only one call at a time uses a kept
 * FmgrInfo: a call inside it (a query's replay run by workflow code) gets a
 * fresh one, since a SQL function's fn_extra is the state of the call that
 * is running.  A change to any function drops what is kept, and frees it
 * when the transaction ends: a call may still be running with it.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/xact.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#define FUNCTION_CACHE_SIZE		16
#define FUNCTION_NAME_MAX		256
#define KEPT_CALLS_MAX			64

/* Stored function names resolved lately, by this backend. */
typedef struct ResolvedFunction
{
	char		name[FUNCTION_NAME_MAX];
	Oid			funcoid;
} ResolvedFunction;

static ResolvedFunction resolved_functions[FUNCTION_CACHE_SIZE];
static int	n_resolved_functions = 0;
static int	next_resolved_slot = 0;

/* Call information kept across calls, in kept_cxt. */
typedef struct KeptCall
{
	Oid			funcoid;
	bool		in_use;
	FmgrInfo	flinfo;
} KeptCall;

static KeptCall *kept_calls[KEPT_CALLS_MAX];
static int	n_kept_calls = 0;
static MemoryContext kept_cxt = NULL;
/* the parent of kept_cxt's that were dropped, emptied at transaction end */
static MemoryContext dropped_cxt = NULL;

/* Leaves what is kept to be freed at transaction end. */
static void
drop_kept_calls(void)
{
	n_kept_calls = 0;
	if (kept_cxt != NULL)
	{
		MemoryContextSetParent(kept_cxt, dropped_cxt);
		kept_cxt = NULL;
	}
}

static void
forget_functions(Datum arg, int cacheid, uint32 hashvalue)
{
	n_resolved_functions = 0;
	drop_kept_calls();
}

static void
free_dropped_calls(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	/* no call runs past its transaction */
	MemoryContextDeleteChildren(dropped_cxt);
	for (int i = 0; i < n_kept_calls; i++)
		kept_calls[i]->in_use = false;
}

static void
register_callbacks(void)
{
	static bool registered = false;

	if (registered)
		return;
	dropped_cxt = AllocSetContextCreate(TopMemoryContext, "durable dropped function calls",
										ALLOCSET_SMALL_SIZES);
	CacheRegisterSyscacheCallback(PROCOID, forget_functions, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, forget_functions, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPEOID, forget_functions, (Datum) 0);
	RegisterXactCallback(free_dropped_calls, NULL);
	registered = true;
}

/*
 * The function a run stores as regprocedure text (schema-qualified, with
 * its argument types), as regprocedurein would resolve it.
 */
Oid
engine_function_oid(const char *regprocedure)
{
	Oid			funcoid;
	int			slot;

	for (int i = 0; i < n_resolved_functions; i++)
		if (strcmp(resolved_functions[i].name, regprocedure) == 0)
			return resolved_functions[i].funcoid;
	register_callbacks();
	engine_pin_search_path();
	funcoid = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
												   CStringGetDatum(regprocedure)));
	if (strlen(regprocedure) >= FUNCTION_NAME_MAX)
		return funcoid;
	slot = n_resolved_functions < FUNCTION_CACHE_SIZE ? n_resolved_functions++ :
		next_resolved_slot++ % FUNCTION_CACHE_SIZE;
	strcpy(resolved_functions[slot].name, regprocedure);
	resolved_functions[slot].funcoid = funcoid;
	return funcoid;
}

static KeptCall *
new_kept_call(Oid funcoid)
{
	KeptCall   *call;

	/* more functions than that in turn: start again (rare) */
	if (n_kept_calls == KEPT_CALLS_MAX)
		drop_kept_calls();
	if (kept_cxt == NULL)
		kept_cxt = AllocSetContextCreate(TopMemoryContext, "durable kept function calls",
										 ALLOCSET_SMALL_SIZES);
	call = MemoryContextAllocZero(kept_cxt, sizeof(KeptCall));
	fmgr_info_cxt(funcoid, &call->flinfo, kept_cxt);
	call->funcoid = funcoid;
	kept_calls[n_kept_calls++] = call;
	return call;
}

/*
 * The FmgrInfo for one call of the function, until engine_function_call_end()
 * (in the caller's memory context when the kept one is in use).
 */
FmgrInfo *
engine_function_call_begin(Oid funcoid)
{
	KeptCall   *call = NULL;
	FmgrInfo   *flinfo;

	register_callbacks();
	for (int i = 0; i < n_kept_calls; i++)
		if (kept_calls[i]->funcoid == funcoid)
		{
			call = kept_calls[i];
			break;
		}
	if (call == NULL)
		call = new_kept_call(funcoid);
	if (!call->in_use)
	{
		call->in_use = true;
		return &call->flinfo;
	}
	flinfo = palloc(sizeof(FmgrInfo));
	fmgr_info(funcoid, flinfo);
	return flinfo;
}

void
engine_function_call_end(FmgrInfo *flinfo)
{
	for (int i = 0; i < n_kept_calls; i++)
		if (&kept_calls[i]->flinfo == flinfo)
			kept_calls[i]->in_use = false;
}
