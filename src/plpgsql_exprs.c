/*-------------------------------------------------------------------------
 *
 * plpgsql_exprs.c
 *	  Keeps PL/pgSQL workflow code on its fast path after a suspend, for the
 *	  other tasks of the same transaction.
 *
 * PL/pgSQL evaluates a "simple" expression, such as the right side of
 * x := durable.activity(...), without the executor, through an expression
 * tree it prepares once per transaction and marks busy while it evaluates
 * it.  An error that escapes the evaluation leaves the mark: for the rest
 * of the transaction, PL/pgSQL evaluates that expression through SPI, a
 * whole executor run each time, and prepares a tree again only in the next
 * transaction.  Nearly every workflow task ends with such an error (the
 * suspend, at the call the history has not seen), and the worker runs a
 * batch of tasks in one transaction, mostly of the same few workflow
 * functions: each task after the first paid the executor for every call of
 * the expression that had suspended (callgrind: 14,000 instructions for the
 * first task of a 1-step workflow, of 177,000).
 *
 * At a suspend, the expressions that the workflow code's PL/pgSQL frames
 * are evaluating are noted (those of the statement each frame is at, and of
 * the variable it is initializing); once the code's subtransaction has been
 * rolled back and nothing of the code runs any more, they are marked as a
 * new transaction finds them: not prepared, so that their next evaluation
 * prepares a fresh tree, as PL/pgSQL itself would after a commit.  The tree
 * the error interrupted is never used again.
 *
 * PL/pgSQL's frames are found on the error context stack by their
 * callback, which this process learns at the first suspend of a workflow
 * function called straight through plpgsql_call_handler: the first frame
 * that function pushes is PL/pgSQL's (and names the function).  Once it is
 * known, the frames of any workflow code are told apart (SPI's, SQL
 * functions', other languages'), whatever called PL/pgSQL: a function with
 * a SET clause or SECURITY DEFINER (called through fmgr's wrapper, which
 * hides the handler), or a helper of code in another language.
 *
 *-------------------------------------------------------------------------
 */
#include "replay.h"

#include "plpgsql.h"
#include "storage/proc.h"

/* the error context callback of PL/pgSQL's frames, once learned */
static void (*plpgsql_frame_callback) (void *) = NULL;

/* PL/pgSQL's call handler, looked up once; NULL if PL/pgSQL cannot be loaded */
static PGFunction
plpgsql_handler(void)
{
	static bool looked_up = false;
	static PGFunction handler = NULL;

	if (!looked_up)
	{
		handler = load_external_function("$libdir/plpgsql", "plpgsql_call_handler",
										 false, NULL);
		looked_up = true;
	}
	return handler;
}

/*
 * Notes where the workflow code's error context frames begin, before
 * function (the workflow function, of oid funcoid) is called.
 */
void
plpgsql_exprs_code_begins(Replay *r, FmgrInfo *function)
{
	r->code_frames_base = error_context_stack;
	r->code_plpgsql = function->fn_addr == plpgsql_handler();
	r->code_function = function->fn_oid;
	r->nbusy_exprs = 0;
}

/*
 * An expression noted is held until it is released: its function counted
 * as in use, as PL/pgSQL counts a function it runs.  Code that catches the
 * suspend runs on, and could meanwhile find its function redefined by
 * another session; PL/pgSQL frees a replaced function's memory only when
 * no one uses it.
 */
static void
note_if_busy(Replay *r, PLpgSQL_expr *expr)
{
	if (expr != NULL && expr->func != NULL && expr->expr_simple_in_use &&
		expr->expr_simple_lxid == MY_LXID &&
		r->nbusy_exprs < MAX_BUSY_EXPRS)
	{
		expr->func->use_count++;
		r->busy_exprs[r->nbusy_exprs++] = expr;
	}
}

static void
note_busy_list(Replay *r, List *exprs)
{
	ListCell   *lc;

	foreach(lc, exprs)
		note_if_busy(r, (PLpgSQL_expr *) lfirst(lc));
}

/* The expressions a statement evaluates through exec_eval_expr(). */
static void
note_busy_of_statement(Replay *r, PLpgSQL_stmt *stmt)
{
	ListCell   *lc;

	switch (stmt->cmd_type)
	{
		case PLPGSQL_STMT_ASSIGN:
			note_if_busy(r, ((PLpgSQL_stmt_assign *) stmt)->expr);
			break;
		case PLPGSQL_STMT_IF:
			note_if_busy(r, ((PLpgSQL_stmt_if *) stmt)->cond);
			foreach(lc, ((PLpgSQL_stmt_if *) stmt)->elsif_list)
				note_if_busy(r, ((PLpgSQL_if_elsif *) lfirst(lc))->cond);
			break;
		case PLPGSQL_STMT_CASE:
			note_if_busy(r, ((PLpgSQL_stmt_case *) stmt)->t_expr);
			foreach(lc, ((PLpgSQL_stmt_case *) stmt)->case_when_list)
				note_if_busy(r, ((PLpgSQL_case_when *) lfirst(lc))->expr);
			break;
		case PLPGSQL_STMT_WHILE:
			note_if_busy(r, ((PLpgSQL_stmt_while *) stmt)->cond);
			break;
		case PLPGSQL_STMT_FORI:
			note_if_busy(r, ((PLpgSQL_stmt_fori *) stmt)->lower);
			note_if_busy(r, ((PLpgSQL_stmt_fori *) stmt)->upper);
			note_if_busy(r, ((PLpgSQL_stmt_fori *) stmt)->step);
			break;
		case PLPGSQL_STMT_FOREACH_A:
			note_if_busy(r, ((PLpgSQL_stmt_foreach_a *) stmt)->expr);
			break;
		case PLPGSQL_STMT_EXIT:
			note_if_busy(r, ((PLpgSQL_stmt_exit *) stmt)->cond);
			break;
		case PLPGSQL_STMT_RETURN:
			note_if_busy(r, ((PLpgSQL_stmt_return *) stmt)->expr);
			break;
		case PLPGSQL_STMT_RETURN_NEXT:
			note_if_busy(r, ((PLpgSQL_stmt_return_next *) stmt)->expr);
			break;
		case PLPGSQL_STMT_RAISE:
			note_busy_list(r, ((PLpgSQL_stmt_raise *) stmt)->params);
			foreach(lc, ((PLpgSQL_stmt_raise *) stmt)->options)
				note_if_busy(r, ((PLpgSQL_raise_option *) lfirst(lc))->expr);
			break;
		case PLPGSQL_STMT_ASSERT:
			note_if_busy(r, ((PLpgSQL_stmt_assert *) stmt)->cond);
			note_if_busy(r, ((PLpgSQL_stmt_assert *) stmt)->message);
			break;
		case PLPGSQL_STMT_DYNEXECUTE:
			note_if_busy(r, ((PLpgSQL_stmt_dynexecute *) stmt)->query);
			note_busy_list(r, ((PLpgSQL_stmt_dynexecute *) stmt)->params);
			break;
		default:
			/* evaluated through SPI anyway (PERFORM, SQL statements) */
			break;
	}
}

/*
 * At a suspend, before the error unwinds the code: notes the expressions
 * the code's PL/pgSQL frames are evaluating.
 */
void
plpgsql_exprs_note_busy(Replay *r)
{
	ErrorContextCallback *frame;

	/* learned from the workflow function's own frame, pushed first */
	if (plpgsql_frame_callback == NULL && r->code_plpgsql)
		for (frame = error_context_stack; frame != NULL; frame = frame->previous)
			if (frame->previous == r->code_frames_base)
			{
				PLpgSQL_execstate *estate = (PLpgSQL_execstate *) frame->arg;

				if (estate != NULL && estate->func != NULL &&
					estate->func->fn_oid == r->code_function)
					plpgsql_frame_callback = frame->callback;
				break;
			}
	if (plpgsql_frame_callback == NULL)
		return;
	for (frame = error_context_stack; frame != NULL && frame != r->code_frames_base;
		 frame = frame->previous)
	{
		PLpgSQL_execstate *estate;

		if (frame->callback != plpgsql_frame_callback)
			continue;
		estate = (PLpgSQL_execstate *) frame->arg;
		if (estate->err_var != NULL)
			note_if_busy(r, estate->err_var->default_val);
		if (estate->err_stmt != NULL)
			note_busy_of_statement(r, estate->err_stmt);
	}
}

/*
 * Once the code's subtransaction is rolled back: the noted expressions are
 * prepared afresh at their next evaluation, as in a new transaction.
 */
void
plpgsql_exprs_release_busy(Replay *r)
{
	for (int i = 0; i < r->nbusy_exprs; i++)
	{
		PLpgSQL_expr *expr = (PLpgSQL_expr *) r->busy_exprs[i];

		expr->expr_simple_in_use = false;
		expr->expr_simple_lxid = InvalidLocalTransactionId;
		expr->func->use_count--;
	}
	r->nbusy_exprs = 0;
}
