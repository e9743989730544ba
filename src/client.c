/*-------------------------------------------------------------------------
 *
 * client.c
 *	  The client API: start_workflow(), signal(), signal_with_start(),
 *	  result() and the procedure wait_for_result(), retry_workflow_task(),
 *	  and the extension's creation notice.
 *
 * A run is created in the caller's transaction, with the caller as its
 * owner; the worker learns of it only when that transaction commits.
 * result() waits on a condition variable that the closing transaction
 * broadcasts at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define MAX_WORKFLOW_ID_LEN	1000

PG_FUNCTION_INFO_V1(durable_extension_created);
PG_FUNCTION_INFO_V1(durable_start_workflow);
PG_FUNCTION_INFO_V1(durable_result);
PG_FUNCTION_INFO_V1(durable_wait_for_result);
PG_FUNCTION_INFO_V1(durable_retry_workflow_task);
PG_FUNCTION_INFO_V1(durable_signal);
PG_FUNCTION_INFO_V1(durable_signal_with_start);

Datum
durable_extension_created(PG_FUNCTION_ARGS)
{
	if (durable_shared == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("durable is not loaded by shared_preload_libraries, so no workflow will run"),
				 errhint("Add durable to shared_preload_libraries in postgresql.conf and restart the server.")));
	else
		durable_notify_launcher_at_commit(MyDatabaseId);
	PG_RETURN_VOID();
}

/* ---- resolving the workflow function ---- */

static void
wrong_signature(Oid funcoid)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
			 errmsg("function %s cannot be a workflow", format_procedure(funcoid)),
			 errdetail("A workflow function takes one jsonb argument and returns jsonb."),
			 errhint("Declare it as CREATE FUNCTION name(input jsonb) RETURNS jsonb.")));
}

/*
 * The function a workflow name denotes, resolved like a regproc through
 * search_path ("greet", "app.greet" or "app.greet(jsonb)").
 */
static Oid
resolve_workflow_function(const char *name)
{
	Oid			funcoid;
	Oid			argtypes[1] = {JSONBOID};
	List	   *names;

	if (strchr(name, '(') != NULL)
		funcoid = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
													   CStringGetDatum(name)));
	else
	{
		names = stringToQualifiedNameList(name);
		funcoid = LookupFuncName(names, 1, argtypes, true);
		if (!OidIsValid(funcoid))
		{
			FuncCandidateList c = FuncnameGetCandidates(names, -1, NIL,
														false, false, false, true);

			if (c != NULL)
				wrong_signature(c->oid);
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("workflow function %s(jsonb) does not exist", name),
					 errhint("Create it with CREATE FUNCTION %s(input jsonb) RETURNS jsonb, or schema-qualify the name.", name)));
		}
	}

	if (!is_workflow_function(funcoid, NULL))
		wrong_signature(funcoid);
	if (durable_proc_aclcheck(funcoid, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(funcoid));
	return funcoid;
}

static char *
workflow_id_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *id;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow_id must not be null")));
	id = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (id[0] == '\0' || strlen(id) > MAX_WORKFLOW_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow_id must be between 1 and %d bytes long", MAX_WORKFLOW_ID_LEN)));
	return id;
}

static Jsonb *
workflow_input_arg(FunctionCallInfo fcinfo, int argno)
{
	Jsonb	   *input;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow input must not be null"),
				 errhint("Pass '{}' for a workflow that takes no input.")));
	input = PG_GETARG_JSONB_P(argno);
	if (!JB_ROOT_IS_OBJECT(input) || JB_ROOT_IS_SCALAR(input))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow input must be a JSON object"),
				 errhint("Wrap the value in an object, e.g. '{\"items\": [1, 2]}'.")));
	return input;
}

static char *
workflow_name_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow function name must not be null")));
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/* What a new run is made of. */
typedef struct NewRun
{
	char	   *workflow;		/* regprocedure text of the function */
	Jsonb	   *input;
	char	   *workflow_id;
	Interval   *execution_timeout;	/* or NULL */
	bool		eager_start;	/* its first workflow task run here if it can */
} NewRun;

/*
 * A new run's id: a UUID of version 7 (RFC 9562), the milliseconds since
 * the Unix epoch in its first 48 bits, then random bits.  The run's rows in
 * every index keyed by run_id (the runs' primary key, the history's, the
 * tasks' and timers') then go in near the end of the index, where the last
 * runs' went, rather than at random places: fewer pages touched and split,
 * and fewer full-page images after each checkpoint.
 */
static Datum
new_run_id(void)
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));
	uint64		unix_ms = (uint64) (GetCurrentTimestamp() / 1000) +
		(uint64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	if (!pg_strong_random(uuid->data + 6, UUID_LEN - 6))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	for (int i = 0; i < 6; i++)
		uuid->data[i] = (unsigned char) (unix_ms >> (8 * (5 - i)));
	uuid->data[6] = (uuid->data[6] & 0x0F) | 0x70; /* version 7 */
	uuid->data[8] = (uuid->data[8] & 0x3F) | 0x80; /* RFC 9562 variant */
	return UUIDPGetDatum(uuid);
}

/*
 * Marks the workflow id's latest run superseded if it is closed, so that a
 * new run can take its place in runs_latest_workflow_id.  Returns whether
 * there was one.
 */
static bool
supersede_closed_run(Datum workflow_id)
{
	static EnginePlan plan = {NULL,
		"UPDATE durable.runs SET superseded = true"
		" WHERE workflow_id = $1 AND NOT superseded AND status <> 'running'",
	1, {TEXTOID}};
	Datum		values[1] = {workflow_id};

	return engine_exec(&plan, values, NULL, 0) > 0;
}

/*
 * Inserts the run and its first event; the worker runs it after commit.
 * With nr->eager_start, its first workflow task runs right here instead,
 * when this backend may run it (see replay_task_inline): the run is never
 * in the worker's queue, and its first command is there at this commit.
 * Returns false, writing nothing, when an open run has that workflow id.
 * Must be called inside engine_enter().
 */
static bool
insert_run(NewRun *nr, Oid owner, LockedRun *run)
{
	static EnginePlan queued_plan = {NULL,
		"WITH run AS ("
		"  INSERT INTO durable.runs (run_id, workflow_id, workflow, owner, input,"
		"   started_at, next_event_id) VALUES ($1, $2, $3, $4, $5, $6, 2)"
		"  ON CONFLICT (workflow_id) WHERE NOT superseded DO NOTHING"
		"  RETURNING run_id, task_due_at, ctid)"
		" INSERT INTO durable.due_tasks (run_id, due_at, run_row)"
		" SELECT run_id, task_due_at, ctid FROM run",
	6, {UUIDOID, TEXTOID, TEXTOID, OIDOID, JSONBOID, TIMESTAMPTZOID}};
	static EnginePlan eager_plan = {NULL,
		"INSERT INTO durable.runs (run_id, workflow_id, workflow, owner, input,"
		" started_at, next_event_id, task_pending) VALUES ($1, $2, $3, $4, $5, $6, 2, false)"
		" ON CONFLICT (workflow_id) WHERE NOT superseded DO NOTHING",
	6, {UUIDOID, TEXTOID, TEXTOID, OIDOID, JSONBOID, TIMESTAMPTZOID}};
	EnginePlan *plan = nr->eager_start ? &eager_plan : &queued_plan;
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[6];
	JsonBuf		jb;

	memset(run, 0, sizeof(LockedRun));
	run->run_id = new_run_id();
	/* the caller returns it after engine_leave() */
	run->workflow_id = nr->workflow_id ? nr->workflow_id :
		engine_pstrdup(DatumGetCString(DirectFunctionCall1(uuid_out, run->run_id)));
	run->workflow = nr->workflow;
	run->owner = owner;
	run->input = nr->input;
	run->status = "running";
	run->next_event_id = 1;

	values[0] = run->run_id;
	values[1] = CStringGetTextDatum(run->workflow_id);
	values[2] = CStringGetTextDatum(nr->workflow);
	values[3] = ObjectIdGetDatum(owner);
	values[4] = JsonbPGetDatum(nr->input);
	values[5] = TimestampTzGetDatum(now);
	(void) supersede_closed_run(values[1]);

	/*
	 * A conflict is an open run, or a run that a concurrent start inserted
	 * (committed since the supersede looked) and that has closed since: then
	 * supersede that one and try again.
	 */
	while (engine_exec(plan, values, NULL, 0) == 0)
		if (!supersede_closed_run(values[1]))
			return false;

	json_begin(&jb);
	json_add_str(&jb, "workflow", nr->workflow);
	json_add_jsonb(&jb, "input", nr->input);
	json_add_str(&jb, "owner", GetUserNameFromId(owner, false));
	if (nr->execution_timeout)
	{
		TimestampTz deadline =
		DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												TimestampTzGetDatum(now),
												IntervalPGetDatum(nr->execution_timeout)));

		json_add_str(&jb, "execution_timeout",
					 interval_text(nr->execution_timeout));
		timer_schedule(run, "execution_timeout", 0, deadline);
	}
	/*
	 * Event 1: the row already counts it (next_event_id 2), and its first
	 * workflow task is already due (task_pending's default, and the row
	 * in durable.due_tasks), unless it is to run here.
	 */
	engine_append_event(run, "WorkflowExecutionStarted", json_end(&jb), now);
	if (!nr->eager_start)
		durable_wake_worker_at_commit();
	else if (!replay_task_inline(run, owner))
		engine_request_workflow_task(run);
	return true;
}

static void
already_running(const char *workflow_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNIQUE_VIOLATION),
			 errmsg("workflow \"%s\" is already running", workflow_id),
			 errhint("Wait for it with durable.result(), or start this one with another workflow_id.")));
}

Datum
durable_start_workflow(PG_FUNCTION_ARGS)
{
	NewRun		nr;
	EngineScope scope;
	LockedRun	run;
	bool		started;

	durable_require_preload();
	nr.workflow = workflow_name_arg(fcinfo, 0);
	nr.input = workflow_input_arg(fcinfo, 1);
	nr.workflow_id = PG_ARGISNULL(2) ? NULL : workflow_id_arg(fcinfo, 2);
	nr.execution_timeout = NULL;
	if (!PG_ARGISNULL(3))
	{
		nr.execution_timeout = PG_GETARG_INTERVAL_P(3);
		if (interval_arg_ms(nr.execution_timeout, "execution_timeout") <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("execution_timeout must be positive")));
	}
	nr.workflow = format_procedure_qualified(resolve_workflow_function(nr.workflow));
	nr.eager_start = durable_eager_workflow_start;

	engine_enter(&scope);
	started = insert_run(&nr, scope.caller, &run);
	engine_leave(&scope);
	if (!started)
		already_running(nr.workflow_id);
	PG_RETURN_TEXT_P(cstring_to_text(run.workflow_id));
}

/* ---- signals ---- */

/* Appends the signal to a locked open run and makes a workflow task due. */
static void
append_signal(LockedRun *run, const char *signal, Jsonb *payload)
{
	JsonBuf		jb;

	json_begin(&jb);
	json_add_str(&jb, "signal", signal);
	if (payload)
		json_add_jsonb(&jb, "payload", payload);
	engine_append_event(run, "WorkflowExecutionSignaled", json_end(&jb),
						GetCurrentTimestamp());
	engine_request_workflow_task(run);
}

/*
 * Locks the open run of workflow_id for the caller.  Returns false if there
 * is none; *last_status gets the status of its latest closed run, if any.
 */
static bool
lock_open_run(Oid caller, const char *workflow_id, LockedRun *run, char **last_status)
{
	static EnginePlan find = {NULL,
		"SELECT run_id, owner, status FROM durable.runs"
		" WHERE workflow_id = $1 AND NOT superseded",
	1, {TEXTOID}};
	Datum		values[1] = {CStringGetTextDatum(workflow_id)};
	bool		isnull;

	*last_status = NULL;
	if (engine_exec(&find, values, NULL, 1) == 0 ||
		!has_privs_of_role(caller, DatumGetObjectId(engine_get(0, 2, &isnull))))
		return false;
	*last_status = engine_get_text(0, 3);
	if (strcmp(*last_status, "running") != 0)
		return false;
	values[0] = engine_get(0, 1, &isnull);
	/* it may have closed while we waited for its lock */
	return engine_lock_run(values[0], run, false) &&
		strcmp(*last_status = run->status, "running") == 0;
}

Datum
durable_signal(PG_FUNCTION_ARGS)
{
	char	   *workflow_id;
	char	   *signal;
	Jsonb	   *payload;
	EngineScope scope;
	LockedRun	run;
	char	   *last_status;
	bool		open;

	durable_require_preload();
	workflow_id = workflow_id_arg(fcinfo, 0);
	signal = required_text_arg(fcinfo, 1, "signal name");
	payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);

	engine_enter(&scope);
	open = lock_open_run(scope.caller, workflow_id, &run, &last_status);
	if (open)
		append_signal(&run, signal, payload);
	engine_leave(&scope);

	if (!open && last_status == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", workflow_id),
				 errhint("List the workflows you can see with: SELECT * FROM durable.workflows;")));
	if (!open)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("workflow \"%s\" is not running", workflow_id),
				 errdetail("Its last run is %s.", last_status),
				 errhint("Use durable.signal_with_start() to start a new run with the signal.")));
	PG_RETURN_VOID();
}

/*
 * Signals the open run of workflow_id, or starts one and signals it: either
 * way in the caller's transaction, so both or neither happen.
 */
Datum
durable_signal_with_start(PG_FUNCTION_ARGS)
{
	NewRun		nr;
	char	   *signal;
	Jsonb	   *payload;
	EngineScope scope;
	LockedRun	run;
	bool		done = false;

	durable_require_preload();
	nr.workflow = workflow_name_arg(fcinfo, 0);
	nr.workflow_id = workflow_id_arg(fcinfo, 1);
	signal = required_text_arg(fcinfo, 2, "signal name");
	payload = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	nr.input = workflow_input_arg(fcinfo, 4);
	nr.execution_timeout = NULL;
	/* its first task is due with the signal's: the worker runs it */
	nr.eager_start = false;
	nr.workflow = format_procedure_qualified(resolve_workflow_function(nr.workflow));

	engine_enter(&scope);
	/* a concurrent start or close can make either attempt miss: try again */
	for (int attempt = 0; attempt < 10 && !done; attempt++)
	{
		char	   *last_status;

		if (lock_open_run(scope.caller, nr.workflow_id, &run, &last_status))
			done = true;
		else if (last_status != NULL && strcmp(last_status, "running") == 0)
			break;				/* open, but not ours to signal */
		else
			done = insert_run(&nr, scope.caller, &run);
		if (done)
			append_signal(&run, signal, payload);
	}
	engine_leave(&scope);
	if (!done)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot signal workflow \"%s\"", nr.workflow_id),
				 errdetail("An open run with that id belongs to a role you cannot act for.")));
	PG_RETURN_TEXT_P(cstring_to_text(nr.workflow_id));
}

/* ---- result ---- */

typedef struct RunStatus
{
	char	   *status;
	Jsonb	   *result;
	Jsonb	   *failure;
} RunStatus;

/* The run an id names (the open one, else the latest), visible to the caller. */
static void
read_run_status(const char *workflow_id, RunStatus *rs)
{
	static EnginePlan plan = {NULL,
		"SELECT status, result, failure, owner FROM durable.runs"
		" WHERE workflow_id = $1 AND NOT superseded",
	1, {TEXTOID}};
	Oid			caller = GetUserId();
	EngineScope scope;
	Datum		values[1] = {CStringGetTextDatum(workflow_id)};
	bool		found;
	bool		isnull;
	Oid			owner = InvalidOid;

	engine_enter(&scope);
	found = engine_exec(&plan, values, NULL, 1) == 1;
	if (found)
	{
		Datum		d;

		rs->status = engine_get_text(0, 1);
		d = engine_get(0, 2, &isnull);
		rs->result = isnull ? NULL : DatumGetJsonbP(d);
		d = engine_get(0, 3, &isnull);
		rs->failure = isnull ? NULL : DatumGetJsonbP(d);
		owner = DatumGetObjectId(engine_get(0, 4, &isnull));
	}
	engine_leave(&scope);

	if (!found || !has_privs_of_role(caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", workflow_id),
				 errhint("List the workflows you can see with: SELECT * FROM durable.workflows;")));
}

static void
raise_run_failure(const char *workflow_id, RunStatus *rs)
{
	char	   *message = jsonb_field_text(rs->failure, "message");
	char	   *sqlstate = jsonb_field_text(rs->failure, "sqlstate");
	char	   *detail = jsonb_field_text(rs->failure, "detail");

	if (strcmp(rs->status, "timed_out") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DURABLE_WORKFLOW_FAILED),
				 errmsg("workflow \"%s\" timed out", workflow_id),
				 errdetail("It ran longer than the execution_timeout it was started with."),
				 errhint("See SELECT * FROM durable.history('%s');", workflow_id)));
	if (strcmp(rs->status, "failed") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DURABLE_WORKFLOW_FAILED),
				 errmsg("workflow \"%s\" did not complete: it is %s", workflow_id, rs->status)));
	ereport(ERROR,
			(errcode(ERRCODE_DURABLE_WORKFLOW_FAILED),
			 errmsg("workflow \"%s\" failed: %s", workflow_id, message ? message : "unknown error"),
			 detail ?
			 errdetail("The workflow code raised SQLSTATE %s: %s", sqlstate ? sqlstate : "?", detail) :
			 errdetail("The workflow code raised SQLSTATE %s.", sqlstate ? sqlstate : "?"),
			 errhint("See SELECT * FROM durable.history('%s');", workflow_id)));
}

typedef struct StatusRequest
{
	const char *workflow_id;
	RunStatus	rs;
} StatusRequest;

/* Keeps the subtransaction (and its lock) only if the run is closed. */
static bool
read_closed_status(void *arg)
{
	StatusRequest *req = arg;

	read_run_status(req->workflow_id, &req->rs);
	return strcmp(req->rs.status, "running") != 0;
}

/*
 * The status of the run of workflow_id once it is closed, waiting up to
 * wait_ms for it to close (DU003 if it does not).  Each look at an open run
 * leaves nothing behind while we sleep: it runs in a subtransaction, or with
 * commit_between_looks (a procedure called outside a transaction block,
 * connected to SPI as non-atomic) in a transaction of its own, committed.
 */
static void
wait_for_close(const char *workflow_id, long wait_ms, bool commit_between_looks,
			   RunStatus *rs)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
	WakeChannel *channel = durable_close_channel(workflow_id);

	for (;;)
	{
		TimestampTz now;
		uint64		seen = channel_broadcasts(channel);
		StatusRequest req = {workflow_id, {NULL, NULL, NULL}};

		if (commit_between_looks)
			(void) engine_look_or_commit(read_closed_status, &req);
		else if (wait_ms == 0)
			read_run_status(workflow_id, &req.rs);
		else
			(void) engine_try_in_subxact(read_closed_status, &req);
		*rs = req.rs;
		if (strcmp(rs->status, "running") != 0)
			return;
		now = GetCurrentTimestamp();
		if (now >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_DURABLE_WORKFLOW_RUNNING),
					 errmsg("workflow \"%s\" is still running", workflow_id),
					 errhint("Wait longer, e.g. durable.result('%s', wait => '30 s'), or see durable.describe('%s').",
							 workflow_id, workflow_id)));
		channel_sleep(channel, seen, TimestampDifferenceMilliseconds(now, deadline));
		CHECK_FOR_INTERRUPTS();
		engine_check_installed_after_wait();
	}
}

Datum
durable_result(PG_FUNCTION_ARGS)
{
	char	   *workflow_id;
	long		wait_ms;
	RunStatus	rs;

	durable_require_preload();
	workflow_id = workflow_id_arg(fcinfo, 0);
	wait_ms = PG_ARGISNULL(1) ? 0 : interval_arg_ms(PG_GETARG_INTERVAL_P(1), "wait");
	if (wait_ms > 0)
		check_wait_isolation("durable.result",
							 "Wait in a READ COMMITTED transaction, or pass wait => '0'.");
	wait_for_close(workflow_id, wait_ms, false, &rs);
	if (strcmp(rs.status, "completed") != 0)
		raise_run_failure(workflow_id, &rs);
	if (rs.result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(rs.result);
}

/*
 * CALL durable.wait_for_result(workflow_id, wait): result() for a long
 * wait, holding no snapshot while it waits (as wait_for_activity_task() in
 * activity_workers.c: a procedure called outside a transaction block
 * commits each look at the open run).  The result comes back as the INOUT
 * argument; inside a transaction block it waits as result() does.
 */
Datum
durable_wait_for_result(PG_FUNCTION_ARGS)
{
	bool		atomic = !call_may_commit(fcinfo);
	MemoryContext caller_cxt = CurrentMemoryContext;
	char	   *workflow_id;
	long		wait_ms;
	TupleDesc	desc;
	RunStatus	rs;
	Datum		value = (Datum) 0;
	bool		isnull = true;

	durable_require_preload();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE || desc->natts != 1)
		elog(ERROR, "durable: wait_for_result has the wrong INOUT arguments");
	desc = BlessTupleDesc(desc);
	workflow_id = workflow_id_arg(fcinfo, 0);
	wait_ms = PG_ARGISNULL(1) ? 0 : interval_arg_ms(PG_GETARG_INTERVAL_P(1), "wait");
	if (atomic && wait_ms > 0)
		check_wait_isolation("durable.wait_for_result",
							 "CALL it outside a transaction block, or in a READ COMMITTED one.");

	if (!atomic && SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wait_for_close(workflow_id, wait_ms, !atomic, &rs);
	if (strcmp(rs.status, "completed") != 0)
		raise_run_failure(workflow_id, &rs);
	if (rs.result != NULL)
	{
		/* SPI_finish() frees what the looks allocated */
		MemoryContext old = MemoryContextSwitchTo(caller_cxt);

		value = JsonbPGetDatum(DatumGetJsonbPCopy(JsonbPGetDatum(rs.result)));
		isnull = false;
		MemoryContextSwitchTo(old);
	}
	if (!atomic)
		SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, &value, &isnull)));
}

/* ---- retry_workflow_task ---- */

Datum
durable_retry_workflow_task(PG_FUNCTION_ARGS)
{
	static EnginePlan find = {NULL,
		"SELECT run_id, owner FROM durable.runs"
		" WHERE workflow_id = $1 AND NOT superseded AND status = 'running'",
	1, {TEXTOID}};
	static EnginePlan retry = {NULL,
		"WITH retried AS ("
		"  UPDATE durable.runs SET task_failure = NULL, task_pending = true,"
		"   task_due_at = pg_catalog.clock_timestamp()"
		"  WHERE run_id = $1 AND task_failure IS NOT NULL"
		"  RETURNING run_id, task_due_at, ctid)"
		" INSERT INTO durable.due_tasks (run_id, due_at, run_row)"
		" SELECT run_id, task_due_at, ctid FROM retried"
		" ON CONFLICT (run_id) DO UPDATE SET due_at = EXCLUDED.due_at, run_row = EXCLUDED.run_row",
	1, {UUIDOID}};
	char	   *workflow_id;
	Oid			caller = GetUserId();
	EngineScope scope;
	Datum		values[1];
	bool		found;
	bool		retried = false;
	bool		isnull;
	Oid			owner = InvalidOid;

	durable_require_preload();
	workflow_id = workflow_id_arg(fcinfo, 0);
	values[0] = CStringGetTextDatum(workflow_id);

	engine_enter(&scope);
	found = engine_exec(&find, values, NULL, 1) == 1;
	if (found)
	{
		owner = DatumGetObjectId(engine_get(0, 2, &isnull));
		if (has_privs_of_role(caller, owner))
		{
			values[0] = engine_get(0, 1, &isnull);
			retried = engine_exec(&retry, values, NULL, 0) == 1;
		}
	}
	engine_leave(&scope);

	if (!found || !has_privs_of_role(caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" has no open run", workflow_id),
				 errhint("Only an open run's workflow task can be retried; see durable.workflows.")));
	if (retried)
		durable_wake_worker_at_commit();
	PG_RETURN_BOOL(retried);
}
