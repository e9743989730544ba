/*-------------------------------------------------------------------------
 *
 * replayed_calls.c
 *	  Planner support of durable.activity() and its kin: a replayed call
 *	  does not evaluate the arguments that replay would throw away.
 *
 * Workflow code is run from the top at every workflow task, and each call
 * the history already answers only returns what it recorded: of its
 * arguments, replay compares the activity's name and task queue with the
 * history, and nothing else.  Yet PostgreSQL evaluates every argument
 * before the call, and the input (to_jsonb(...), jsonb_build_object(...))
 * is often the costliest part of a step: at step 1,000 of a loop, the
 * workflow task builds 999 inputs that nothing reads.
 *
 * So when the planner simplifies a call of durable.activity(),
 * activity_async(), sql_activity() or sql_activity_async(), this support
 * function puts in its place
 *
 *	  CASE WHEN durable._replayed(activity, task_queue, awaited)
 *		   THEN durable._replayed_result()	-- _replayed_handle(): the async ones
 *		   ELSE <the call itself> END
 *
 * (_replayed_sql(function, awaited) for the SQL ones): the condition takes
 * the call from the history when the history has it, with its end if the
 * call waits for one, and the input and options are evaluated only for a
 * call it has not seen, or when the full call must raise an error (see
 * workflow_api.c).  Name and queue are evaluated twice for a new command.
 *
 * Only where input or options have something to evaluate, and where
 * leaving them unevaluated cannot change what the code does: every
 * function and operator in the arguments built in (none can call durable)
 * and not volatile, and no subquery.  An argument that calls a
 * function of the user's, or durable's own, may issue commands itself,
 * which must keep their place in the code's order: those calls stay as
 * they are.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/transam.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/supportnodes.h"
#include "parser/parse_func.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

PG_FUNCTION_INFO_V1(durable_replayed_calls_support);

/* Would evaluating this function be something the code may not skip? */
static bool
not_skippable_function(Oid function, void *context)
{
	return !OidIsValid(function) || function >= FirstNormalObjectId ||
		func_volatile(function) == PROVOLATILE_VOLATILE;
}

static bool
has_unskippable_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, not_skippable_function, context))
		return true;
	/* a sequence's next value, a domain's checks, a subquery: never */
	if (IsA(node, NextValueExpr) || IsA(node, CoerceToDomain) ||
		IsA(node, SubLink) || IsA(node, SubPlan) || IsA(node, AlternativeSubPlan))
		return true;
	/* GREATEST() and subscripts call their type's own support functions */
	if (IsA(node, MinMaxExpr) &&
		not_skippable_function(lookup_type_cache(((MinMaxExpr *) node)->minmaxtype,
												 TYPECACHE_CMP_PROC)->cmp_proc, context))
		return true;
	if (IsA(node, SubscriptingRef) &&
		not_skippable_function(get_typsubscript(((SubscriptingRef *) node)->refcontainertype,
												NULL), context))
		return true;
	return expression_tree_walker(node, has_unskippable_walker, context);
}

/*
 * Is there anything to evaluate in this argument, beyond values at hand (a
 * constant, a variable, a column)?  If not, asking the history first would
 * only cost the plan two more function calls.
 */
static bool
has_evaluation(Node *node)
{
	while (node != NULL && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	return node != NULL && !IsA(node, Const) && !IsA(node, Param) && !IsA(node, Var);
}

/* durable.<name>(argtypes), which the extension's script creates */
static Oid
durable_function(const char *name, int nargs, Oid *argtypes)
{
	return LookupFuncName(list_make2(makeString("durable"), makeString(pstrdup(name))),
						  nargs, argtypes, false);
}

static FuncExpr *
durable_call(const char *name, Oid result_type, List *args, Oid input_collation)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, BOOLOID};
	int			nargs = list_length(args);

	/* _replayed(text, text, bool), _replayed_sql(text, bool), _replayed_result() */
	if (nargs == 2)
		argtypes[1] = BOOLOID;
	return makeFuncExpr(durable_function(name, nargs, argtypes), result_type, args,
						InvalidOid, nargs > 0 ? input_collation : InvalidOid,
						COERCE_EXPLICIT_CALL);
}

/*
 * The CASE that asks the history before the call: which call this is, by
 * its name (the support function is attached to these four only).
 */
static Node *
replayed_or_called(FuncExpr *call)
{
	const char *name = get_func_name(call->funcid);
	bool		sql;
	bool		awaited;
	List	   *ask;
	CaseWhen   *when;
	CaseExpr   *result;

	if (name == NULL)
		return NULL;
	sql = strncmp(name, "sql_", 4) == 0;
	awaited = strcmp(name + (sql ? 4 : 0), "activity") == 0;
	/* activity(activity, input, task_queue, options), sql_activity(function, input, options) */
	if (list_length(call->args) != (sql ? 3 : 4) ||
		!(has_evaluation(lsecond(call->args)) || has_evaluation(llast(call->args))) ||
		has_unskippable_walker((Node *) call->args, NULL))
		return NULL;
	ask = list_make1(copyObject(linitial(call->args)));
	if (!sql)
		ask = lappend(ask, copyObject(lthird(call->args)));
	ask = lappend(ask, makeBoolConst(awaited, false));

	when = makeNode(CaseWhen);
	when->expr = (Expr *) durable_call(sql ? "_replayed_sql" : "_replayed", BOOLOID, ask,
									   call->inputcollid);
	when->result = (Expr *) durable_call(awaited ? "_replayed_result" : "_replayed_handle",
										 call->funcresulttype, NIL, InvalidOid);
	when->location = -1;
	result = makeNode(CaseExpr);
	result->casetype = call->funcresulttype;
	result->casecollid = InvalidOid;
	result->arg = NULL;
	result->args = list_make1(when);
	result->defresult = (Expr *) copyObject(call);
	result->location = call->location;
	return (Node *) result;
}

Datum
durable_replayed_calls_support(PG_FUNCTION_ARGS)
{
	Node	   *request = (Node *) PG_GETARG_POINTER(0);

	if (!IsA(request, SupportRequestSimplify))
		PG_RETURN_POINTER(NULL);
	PG_RETURN_POINTER(replayed_or_called(((SupportRequestSimplify *) request)->fcall));
}
