/*-------------------------------------------------------------------------
 *
 * plans.c
 *	  The engine's own statements: prepared once per backend, executed
 *	  through SPI, and planned to use their indexes whatever the statistics.
 *
 * Our tables are queues: durable.activity_tasks, durable.timers and the due
 * runs go from empty to many thousands of rows and back within seconds, far
 * faster than autovacuum's ANALYZE follows.  A plan cached while a table was
 * small (a fresh database, a TRUNCATE, the first poll of the morning) is a
 * sequential scan and a sort, and it stays cached while the table grows: a
 * poll then reads the whole table, under every poller at once.  Every
 * statement of the engine has an index made for it, so the engine plans its
 * statements for the large case whatever the size now: every table they
 * read is taken to hold at least a million rows, and sequential and bitmap
 * scans are off.  The plan is then the same index scan, driven from the few
 * rows at hand (a batch of due timers, a task id), at ten rows and at ten
 * million.  A statement with no index to use still gets its sequential
 * scan; none gets JIT (it is small work whatever the estimates say).  Only
 * the engine's statements are planned so; the queries of workflow code and
 * of SQL activities, run inside them, are planned as usual.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "jit/jit.h"
#include "optimizer/cost.h"
#include "optimizer/plancat.h"
#include "optimizer/planner.h"

/* The size the engine's statements are planned for, at the least. */
#define PLANNED_MIN_ROWS	1000000.0
#define PLANNED_ROWS_PER_PAGE	100.0

static planner_hook_type prev_planner_hook = NULL;
static get_relation_info_hook_type prev_get_relation_info_hook = NULL;

/* Planning an engine statement now (not a query run inside one). */
static bool planning_ours = false;

/* The SQL of the engine statement being executed, if any. */
static const char *executing_sql = NULL;

static PlannedStmt *
plan_with_indexes(Query *parse, const char *query_string, int cursor_options,
				  ParamListInfo params)
{
	bool		is_ours = executing_sql != NULL && query_string != NULL &&
		strcmp(query_string, executing_sql) == 0;
	bool		save_seqscan = enable_seqscan;
	bool		save_bitmapscan = enable_bitmapscan;
	bool		save_jit = jit_enabled;
	bool		save_planning_ours = planning_ours;
	PlannedStmt *result;

	planning_ours = is_ours;
	if (is_ours)
	{
		enable_seqscan = false;
		enable_bitmapscan = false;
		/* a disabled scan costs 1e10: far above jit_above_cost */
		jit_enabled = false;
	}
	PG_TRY();
	{
		if (prev_planner_hook)
			result = prev_planner_hook(parse, query_string, cursor_options, params);
		else
			result = standard_planner(parse, query_string, cursor_options, params);
	}
	PG_FINALLY();
	{
		planning_ours = save_planning_ours;
		enable_seqscan = save_seqscan;
		enable_bitmapscan = save_bitmapscan;
		jit_enabled = save_jit;
	}
	PG_END_TRY();
	return result;
}

/* A table of an engine statement is planned as a large one. */
static void
assume_large_tables(PlannerInfo *root, Oid relid, bool inhparent,
					RelOptInfo *rel)
{
	ListCell   *lc;

	if (prev_get_relation_info_hook)
		prev_get_relation_info_hook(root, relid, inhparent, rel);
	if (!planning_ours || rel->tuples >= PLANNED_MIN_ROWS)
		return;
	rel->tuples = PLANNED_MIN_ROWS;
	rel->pages = (BlockNumber) (PLANNED_MIN_ROWS / PLANNED_ROWS_PER_PAGE);
	foreach(lc, rel->indexlist)
	{
		IndexOptInfo *index = (IndexOptInfo *) lfirst(lc);

		index->tuples = index->indpred ? PLANNED_MIN_ROWS / 10 : PLANNED_MIN_ROWS;
		index->pages = (BlockNumber) (index->tuples / PLANNED_ROWS_PER_PAGE / 2);
	}
}

void
engine_install_planner_hook(void)
{
	prev_planner_hook = planner_hook;
	planner_hook = plan_with_indexes;
	prev_get_relation_info_hook = get_relation_info_hook;
	get_relation_info_hook = assume_large_tables;
}

/*
 * Executes an engine statement (prepared and kept on first use) in the
 * current SPI connection; returns the number of rows processed.
 */
int
engine_exec(EnginePlan *plan, Datum *values, const char *nulls, long count)
{
	const char *outer_sql = executing_sql;
	int			ret;

	/* planned under it, and planned again if run under another */
	engine_pin_search_path();
	if (plan->plan == NULL)
	{
		/*
		 * One generic plan, made once: every statement of ours is planned
		 * for its indexes whatever its parameters, and the plan cache would
		 * otherwise plan again at every execution any statement whose
		 * custom plans look cheaper than the generic one (a LIMIT $n does).
		 */
		SPIPlanPtr	p = SPI_prepare_cursor(plan->sql, plan->nargs, plan->argtypes,
										   CURSOR_OPT_GENERIC_PLAN);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 plan->sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plan->plan = p;
	}

	/*
	 * No need to restore executing_sql on error: it only ever points to a
	 * string constant, and a stale one only makes a later planning of that
	 * same engine statement use its indexes, as it should.
	 */
	executing_sql = plan->sql;
	ret = SPI_execute_plan(plan->plan, values, nulls, false, count);
	executing_sql = outer_sql;
	if (ret < 0)
		elog(ERROR, "SPI_execute_plan failed for \"%s\": %s",
			 plan->sql, SPI_result_code_string(ret));
	return (int) SPI_processed;
}
