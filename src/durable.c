/*-------------------------------------------------------------------------
 *
 * durable.c
 *	  Module load: settings, shared memory requests, the launcher, and the
 *	  utility hook that keeps our workers out of the way of DROP DATABASE.
 *
 * durable must be in shared_preload_libraries: the launcher and the shared
 * state exist only then.  Loaded any other way (a backend calling one of our
 * functions), _PG_init only sets up what a plain backend needs and the API
 * functions report how to fix the configuration.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/ipc.h"
#include "tcop/utility.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

int			durable_max_databases = 16;
int			durable_workflow_task_timeout_ms = 10000;
int			durable_max_poll_wait_ms = 60000;
int			durable_task_batch_size = 32;
bool		durable_eager_workflow_tasks = true;
bool		durable_eager_workflow_start = false;
int			durable_eager_dispatch_limit = 16;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

void		_PG_init(void);

static void
durable_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	durable_shmem_request();
}

static void
durable_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	durable_shmem_startup();
}

/*
 * The database a utility statement needs free of other connections, if any:
 * DROP DATABASE, ALTER DATABASE ... RENAME / SET TABLESPACE, and CREATE
 * DATABASE ... TEMPLATE.  Our worker would make them fail with "database is
 * being accessed by other users", so it steps aside while they run.
 */
static const char *
database_needing_exclusive_access(Node *stmt)
{
	ListCell   *lc;

	switch (nodeTag(stmt))
	{
		case T_DropdbStmt:
			return ((DropdbStmt *) stmt)->dbname;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) stmt)->subname;
			return NULL;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			{
				DefElem    *def = lfirst_node(DefElem, lc);

				if (strcmp(def->defname, "tablespace") == 0)
					return ((AlterDatabaseStmt *) stmt)->dbname;
			}
			return NULL;
		case T_CreatedbStmt:
			foreach(lc, ((CreatedbStmt *) stmt)->options)
			{
				DefElem    *def = lfirst_node(DefElem, lc);

				if (strcmp(def->defname, "template") == 0)
					return defGetString(def);
			}
			return NULL;
		default:
			return NULL;
	}
}

static void
next_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/*
 * A new database may have the extension from its template: the launcher
 * looks (its worker exits at once if not).
 */
static void
notice_new_database(Node *stmt)
{
	Oid			dboid;

	if (durable_shared == NULL || !IsA(stmt, CreatedbStmt))
		return;
	dboid = get_database_oid(((CreatedbStmt *) stmt)->dbname, true);
	if (OidIsValid(dboid))
		durable_notify_launcher_at_commit(dboid);
}

/* DROP EXTENSION durable: the worker should notice at once, not at its next tick. */
static bool
drops_durable_extension(Node *stmt)
{
	ListCell   *lc;

	if (!IsA(stmt, DropStmt) || ((DropStmt *) stmt)->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, ((DropStmt *) stmt)->objects)
		if (strcmp(strVal(lfirst(lc)), "durable") == 0)
			return true;
	return false;
}

static void
durable_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	const char *dbname = NULL;
	Oid			dboid = InvalidOid;

	if (durable_shared != NULL)
	{
		dbname = database_needing_exclusive_access(pstmt->utilityStmt);
		if (drops_durable_extension(pstmt->utilityStmt))
			durable_wake_worker_at_commit();
	}
	if (dbname != NULL)
		dboid = get_database_oid(dbname, true);

	if (!OidIsValid(dboid))
	{
		next_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
		notice_new_database(pstmt->utilityStmt);
		if (IsA(pstmt->utilityStmt, TransactionStmt) &&
			((TransactionStmt *) pstmt->utilityStmt)->kind == TRANS_STMT_COMMIT_PREPARED)
			durable_wake_everything();
		return;
	}

	durable_pause_database_worker(dboid);
	PG_TRY();
	{
		next_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		durable_resume_database_worker(dboid);
	}
	PG_END_TRY();
	notice_new_database(pstmt->utilityStmt);
}

void
_PG_init(void)
{
	DefineCustomIntVariable("durable.workflow_task_timeout",
							"Longest time workflow code may run in one workflow task.",
							"A task that runs longer fails (the run stays open) and can be retried "
							"with durable.retry_workflow_task().",
							&durable_workflow_task_timeout_ms,
							10000, 10, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("durable.max_poll_wait",
							"Longest wait of one durable.poll_activity() call.",
							"Longer waits asked for are cut to this; the worker polls again.",
							&durable_max_poll_wait_ms,
							60000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("durable.task_batch_size",
							"Workflow tasks the worker runs per transaction.",
							"More share one commit; an error in one undoes only its own task.",
							&durable_task_batch_size,
							32, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("durable.eager_workflow_tasks",
							 "Lets a backend that completes an activity run the workflow task that follows.",
							 "When the result leaves the workflow nothing else to wait for, the "
							 "completing transaction replays the code and schedules its next step itself, "
							 "instead of leaving that to the worker.",
							 &durable_eager_workflow_tasks,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("durable.eager_workflow_start",
							 "Lets start_workflow() run the new run's first workflow task itself.",
							 "The code runs up to its first command in the starting transaction, "
							 "which then schedules that command at its commit, with no trip through "
							 "the worker; it also takes the start that much longer.",
							 &durable_eager_workflow_start,
							 false,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("durable.eager_dispatch_limit",
							"Activities in a row that complete_and_poll() may hand out from the run it advanced.",
							"Such an activity goes straight to the caller, bypassing the task queue; "
							"after this many in a row the caller takes the oldest task of the queue. "
							"0 turns eager dispatch off.",
							&durable_eager_dispatch_limit,
							16, 0, INT_MAX,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	durable_register_xact_callback();
	engine_register_scope_callbacks();
	engine_install_planner_hook();

	/* loaded by a backend on demand: the API functions will say what to do */
	if (!process_shared_preload_libraries_in_progress)
	{
		MarkGUCPrefixReserved("durable");
		return;
	}

	DefineCustomIntVariable("durable.max_databases",
							"Maximum number of databases with a durable worker.",
							"Each database where the extension exists uses one background worker "
							"slot (see max_worker_processes).",
							&durable_max_databases,
							16, 1, 1024,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	MarkGUCPrefixReserved("durable");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = durable_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = durable_shmem_startup_hook;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = durable_ProcessUtility;

	/* pg_upgrade starts servers that must not run anything of ours */
	if (!IsBinaryUpgrade)
		durable_register_launcher();
}
