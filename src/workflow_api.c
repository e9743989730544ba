/*-------------------------------------------------------------------------
 *
 * workflow_api.c
 *	  The deterministic API: the functions workflow code calls, which return
 *	  what the run's history recorded, or issue new commands, or suspend.
 *
 * Every command (an activity, a timer) gets the next handle in code order;
 * on replay, the command under a handle must be the one the history
 * recorded, else the code is non-deterministic.  Waiting (await, sleep,
 * wait_signal) returns at once when the history already has what the code
 * waits for, moving the replay cursor past the event that ended the wait;
 * otherwise it suspends the run (see replay.c).
 *
 * A signal is received by the first wait_signal() of its name that comes
 * after it (in history order, as seen by the cursor): each signal once, in
 * arrival order, the same on every replay.
 *
 *-------------------------------------------------------------------------
 */
#include "replay.h"
#include "activity.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/regproc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(durable_activity_async);
PG_FUNCTION_INFO_V1(durable_activity);
PG_FUNCTION_INFO_V1(durable_await);
PG_FUNCTION_INFO_V1(durable_await_all);
PG_FUNCTION_INFO_V1(durable_await_any);
PG_FUNCTION_INFO_V1(durable_now);
PG_FUNCTION_INFO_V1(durable_timer_async);
PG_FUNCTION_INFO_V1(durable_sleep);
PG_FUNCTION_INFO_V1(durable_sleep_until);
PG_FUNCTION_INFO_V1(durable_wait_signal);
PG_FUNCTION_INFO_V1(durable_on_query);
PG_FUNCTION_INFO_V1(durable_cancel);
PG_FUNCTION_INFO_V1(durable_sql_activity);
PG_FUNCTION_INFO_V1(durable_sql_activity_async);
PG_FUNCTION_INFO_V1(durable_replayed);
PG_FUNCTION_INFO_V1(durable_replayed_sql);
PG_FUNCTION_INFO_V1(durable_replayed_result);
PG_FUNCTION_INFO_V1(durable_replayed_handle);

static void add_cancel(Replay *r, int32 handle, CommandKind kind, bool by_code);

static const char *
kind_name(CommandKind kind)
{
	return kind == COMMAND_ACTIVITY ? "an activity" :
		kind == COMMAND_TIMER ? "a timer" : "nothing";
}

/*
 * The next handle, checked against the history: returns the recorded slot,
 * or NULL when the command is new (the caller records it).
 */
static CommandSlot *
next_command(Replay *r, CommandKind kind, int32 *handle)
{
	CommandSlot *slot;

	*handle = ++r->issued;
	if (*handle > r->max_recorded)
		return NULL;
	slot = &r->slots[*handle];
	if (slot->kind != kind)
		replay_nondeterminism(r, "command %d was %s in the history, the code now issues %s",
							  *handle, kind_name(slot->kind), kind_name(kind));
	return slot;
}

static NewCommand *
new_command(Replay *r, CommandKind kind, int32 handle)
{
	MemoryContext old = MemoryContextSwitchTo(r->cxt);
	NewCommand *cmd = palloc0(sizeof(NewCommand));

	/* the list must outlive the code's subtransaction, like the command */
	cmd->kind = kind;
	cmd->handle = handle;
	r->new_commands = lappend(r->new_commands, cmd);
	MemoryContextSwitchTo(old);
	return cmd;
}

/* ---- activities ---- */

/*
 * Issues an activity command: a remote one on task_queue, or a SQL one
 * (task_queue SQL_ACTIVITY_QUEUE, activity the function's regprocedure).
 * Replayed, it only compares: nothing is copied.
 */
static int32
issue_command(Replay *r, text *activity, Jsonb *input, text *task_queue,
			  Jsonb *options)
{
	ActivityOptions parsed;
	int32		handle;
	CommandSlot *slot;
	MemoryContext old;
	NewCommand *cmd;

	/* options are validated once, when the command is new */
	if (r->issued >= r->max_recorded)
		activity_parse_options(options, &parsed);
	slot = next_command(r, COMMAND_ACTIVITY, &handle);
	if (slot != NULL)
	{
		if (!text_equals_cstring(activity, slot->activity) ||
			!text_equals_cstring(task_queue, slot->task_queue))
			replay_nondeterminism(r, "command %d was activity \"%s\" on task queue \"%s\", the code now schedules activity \"%s\" on task queue \"%s\"",
								  handle, slot->activity, slot->task_queue,
								  text_to_cstring(activity), text_to_cstring(task_queue));
		return handle;
	}

	cmd = new_command(r, COMMAND_ACTIVITY, handle);
	old = MemoryContextSwitchTo(r->cxt);
	cmd->activity = text_to_cstring(activity);
	cmd->task_queue = text_to_cstring(task_queue);
	cmd->input = input ? DatumGetJsonbPCopy(JsonbPGetDatum(input)) : NULL;
	cmd->options.retry_policy = DatumGetJsonbPCopy(JsonbPGetDatum(parsed.retry_policy));
	cmd->options.timeouts = DatumGetJsonbPCopy(JsonbPGetDatum(parsed.timeouts));
	cmd->options.priority = parsed.priority;
	MemoryContextSwitchTo(old);
	return handle;
}

static int32
issue_activity(FunctionCallInfo fcinfo, Replay *r)
{
	text	   *activity = required_text(fcinfo, 0, "activity name");
	Jsonb	   *input = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	text	   *task_queue = required_text(fcinfo, 2, "task queue");
	Jsonb	   *options = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);

	return issue_command(r, activity, input, task_queue, options);
}

/* The regprocedure of a SQL activity function named name, as the run's owner. */
static char *
resolve_sql_activity(const char *name)
{
	Oid			funcoid;

	if (strchr(name, '(') != NULL)
		funcoid = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
													   CStringGetDatum(name)));
	else
	{
		Oid			argtypes[1] = {JSONBOID};

		funcoid = LookupFuncName(stringToQualifiedNameList(name), 1, argtypes, true);
		if (!OidIsValid(funcoid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("SQL activity function %s(jsonb) does not exist", name),
					 errhint("Workflow code runs with search_path = pg_catalog, pg_temp: schema-qualify the name.")));
	}
	if (!is_workflow_function(funcoid, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a SQL activity", format_procedure(funcoid)),
				 errhint("A SQL activity function takes one jsonb argument and returns jsonb.")));
	return format_procedure_qualified(funcoid);
}

/*
 * A SQL activity: the function is resolved as the run's owner, once per
 * workflow task for each name the code uses in a row (a loop calls the same
 * one again and again, and a lookup costs many times the rest of a replayed
 * call).  Within a task the code cannot change the catalogs; the next task
 * resolves the name again.
 */
static text *
sql_activity_function(Replay *r, text *name)
{
	if (r->sql_activity_name == NULL ||
		!text_equals_cstring(name, r->sql_activity_name))
	{
		char	   *cname = text_to_cstring(name);
		char	   *function = resolve_sql_activity(cname);
		MemoryContext old = MemoryContextSwitchTo(r->cxt);

		r->sql_activity_name = pstrdup(cname);
		r->sql_activity_function = cstring_to_text(function);
		if (r->sql_activity_queue == NULL)
			r->sql_activity_queue = cstring_to_text(SQL_ACTIVITY_QUEUE);
		MemoryContextSwitchTo(old);
	}
	return r->sql_activity_function;
}

static int32
issue_sql_activity(FunctionCallInfo fcinfo, Replay *r)
{
	text	   *name = required_text(fcinfo, 0, "SQL activity function");
	Jsonb	   *input = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	Jsonb	   *options = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	text	   *function = sql_activity_function(r, name);

	return issue_command(r, function, input, r->sql_activity_queue, options);
}

static CommandSlot *
slot_of_handle(Replay *r, int64 handle)
{
	if (handle < 1 || handle > r->issued)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("handle " INT64_FORMAT " does not exist", handle),
				 errhint("Pass a handle returned by durable.activity_async() or durable.timer_async() in this run.")));
	return handle <= r->max_recorded ? &r->slots[handle] : NULL;
}

static void
raise_activity_failure(CommandSlot *slot)
{
	char	   *error = jsonb_field_text(slot->failure, "error");
	int64		attempt = 0;
	Jsonb	   *retryable = jsonb_field(slot->failure, "retryable");
	bool		was_retryable = retryable != NULL &&
		strcmp(JsonbToCString(NULL, &retryable->root, VARSIZE(retryable)), "true") == 0;

	(void) jsonb_field_int(slot->failure, "attempt", &attempt);
	ereport(ERROR,
			(errcode(ERRCODE_DURABLE_ACTIVITY_FAILED),
			 errmsg("activity \"%s\" failed: %s", slot->activity, error ? error : ""),
			 errdetail("Activity error: %s (attempt " INT64_FORMAT ", %s).",
					   error ? error : "", attempt,
					   was_retryable ? "attempts exhausted" : "not retryable")));
}

static void
raise_canceled(CommandSlot *slot)
{
	if (slot->kind == COMMAND_TIMER)
		ereport(ERROR,
				(errcode(ERRCODE_DURABLE_CANCELED),
				 errmsg("timer was canceled")));
	ereport(ERROR,
			(errcode(ERRCODE_DURABLE_CANCELED),
			 errmsg("activity \"%s\" was canceled", slot->activity)));
}

/* Raises the error of a handle that ended without a result. */
static void
raise_unsuccessful(CommandSlot *slot)
{
	if (slot->canceled)
		raise_canceled(slot);
	raise_activity_failure(slot);
}

/* The value of a resolved handle: an activity's result, NULL for a timer. */
static Datum
slot_result(CommandSlot *slot, FunctionCallInfo fcinfo)
{
	if (slot->failed || slot->canceled)
		raise_unsuccessful(slot);
	if (slot->result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(slot->result);
}

static Datum
await_one(FunctionCallInfo fcinfo, Replay *r, int64 handle)
{
	CommandSlot *slot = slot_of_handle(r, handle);

	if (slot == NULL || slot->resolved_by == 0)
		replay_suspend_on(r, BLOCKED_ONE, 1, &handle);
	replay_advance_cursor(r, slot->resolved_by);
	return slot_result(slot, fcinfo);
}

Datum
durable_activity_async(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.activity_async()");

	PG_RETURN_INT64(issue_activity(fcinfo, r));
}

Datum
durable_activity(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.activity()");

	return await_one(fcinfo, r, issue_activity(fcinfo, r));
}

Datum
durable_sql_activity_async(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.sql_activity_async()");

	PG_RETURN_INT64(issue_sql_activity(fcinfo, r));
}

Datum
durable_sql_activity(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.sql_activity()");

	return await_one(fcinfo, r, issue_sql_activity(fcinfo, r));
}

/*
 * ---- calls the history answers, without their arguments ----
 *
 * What the plan of a durable.activity() call (or its kin) whose arguments
 * are built-in expressions asks first (replayed_calls.c): is the call the
 * code makes next one the history has, and has it what the call returns?
 * If so it is taken here, and the plan returns its value from
 * durable._replayed_result() (or _replayed_handle()) without evaluating
 * input and options, which replay would only throw away.  If not, the plan
 * makes the call in full, which raises whatever a mismatch or the state of
 * the replay raises: nothing here raises but a SQL activity's name, which
 * is resolved as the full call resolves it.
 */

/*
 * The slot of the code's next handle, if the history has an activity
 * activity on task_queue under it (with its end recorded, when awaited).
 */
static CommandSlot *
recorded_next(Replay *r, text *activity, text *task_queue, bool awaited)
{
	CommandSlot *slot;

	if (r->issued >= r->max_recorded)
		return NULL;
	slot = &r->slots[r->issued + 1];
	if (slot->kind != COMMAND_ACTIVITY ||
		!text_equals_cstring(activity, slot->activity) ||
		!text_equals_cstring(task_queue, slot->task_queue) ||
		(awaited && slot->resolved_by == 0))
		return NULL;
	return slot;
}

/* Takes the next handle as the call would, for the value in its place. */
static Datum
take_recorded(Replay *r, CommandSlot *slot, bool awaited)
{
	if (slot == NULL)
		PG_RETURN_BOOL(false);
	r->issued++;
	if (awaited)
		replay_advance_cursor(r, slot->resolved_by);
	r->replayed_handle = r->issued;
	PG_RETURN_BOOL(true);
}

/* The replay the plan may answer from, or NULL: the full call decides. */
static Replay *
replay_answering(void)
{
	Replay	   *r = current_replay;

	if (r == NULL || r->nondeterministic || r->suspended)
		return NULL;
	return r;
}

/* durable._replayed(activity, task_queue, awaited) */
Datum
durable_replayed(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_answering();
	bool		awaited = PG_GETARG_BOOL(2);

	if (r == NULL || PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	return take_recorded(r, recorded_next(r, PG_GETARG_TEXT_PP(0),
										  PG_GETARG_TEXT_PP(1), awaited),
						 awaited);
}

/*
 * durable._replayed_sql(function, awaited): the name is resolved as the
 * full call resolves it (and raises what it raises).
 */
Datum
durable_replayed_sql(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_answering();
	bool		awaited = PG_GETARG_BOOL(1);
	text	   *function;

	/* a null or empty name: the full call's error */
	if (r == NULL || PG_ARGISNULL(0) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0)
		PG_RETURN_BOOL(false);
	function = sql_activity_function(r, PG_GETARG_TEXT_PP(0));
	return take_recorded(r, recorded_next(r, function, r->sql_activity_queue, awaited),
						 awaited);
}

/* The handle _replayed() took, for the value the plan returns in its place. */
static int32
take_replayed_handle(const char *function)
{
	Replay	   *r = current_replay;
	int32		handle;

	if (r == NULL || r->replayed_handle == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s can only be called by the plan of a replayed call", function)));
	handle = r->replayed_handle;
	r->replayed_handle = 0;
	return handle;
}

/* durable._replayed_result(): the result (or the error) of the call taken */
Datum
durable_replayed_result(PG_FUNCTION_ARGS)
{
	int32		handle = take_replayed_handle("durable._replayed_result()");

	return slot_result(&current_replay->slots[handle], fcinfo);
}

/* durable._replayed_handle(): the handle of the async call taken */
Datum
durable_replayed_handle(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(take_replayed_handle("durable._replayed_handle()"));
}

Datum
durable_await(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.await()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("handle must not be null")));
	return await_one(fcinfo, r, PG_GETARG_INT64(0));
}

/*
 * The slots of a handles array argument; *n gets their number, *handles
 * the handles.
 */
static CommandSlot **
handle_slots(FunctionCallInfo fcinfo, Replay *r, int *n, int64 **handles)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	CommandSlot **slots;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("handles must not be null")));
	arr = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("handles must be a one-dimensional array")));
	deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, n);
	slots = palloc(sizeof(CommandSlot *) * Max(*n, 1));
	*handles = palloc(sizeof(int64) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("handles must not contain nulls")));
		(*handles)[i] = DatumGetInt64(elems[i]);
		slots[i] = slot_of_handle(r, (*handles)[i]);
	}
	return slots;
}

/*
 * Waits for all handles, or for the first (in history order) to fail, as
 * Promise.all does; returns a JSON array of results in handle order.
 */
Datum
durable_await_all(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.await_all()");
	int			n;
	int64	   *handles;
	CommandSlot **slots = handle_slots(fcinfo, r, &n, &handles);
	CommandSlot *first_failed = NULL;
	int64		all_done_at = 0;
	bool		all_done = true;
	JsonbParseState *state = NULL;
	JsonbValue *res;

	for (int i = 0; i < n; i++)
	{
		if (slots[i] == NULL || slots[i]->resolved_by == 0)
			all_done = false;
		else
		{
			all_done_at = Max(all_done_at, slots[i]->resolved_by);
			if ((slots[i]->failed || slots[i]->canceled) &&
				(first_failed == NULL || slots[i]->resolved_by < first_failed->resolved_by))
				first_failed = slots[i];
		}
	}
	if (first_failed != NULL)
	{
		replay_advance_cursor(r, first_failed->resolved_by);
		raise_unsuccessful(first_failed);
	}
	if (!all_done)
		replay_suspend_on(r, BLOCKED_ALL, n, handles);
	replay_advance_cursor(r, all_done_at);

	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
	{
		JsonbValue	v;

		if (slots[i]->result == NULL)
			v.type = jbvNull;
		else
		{
			v.type = jbvBinary;
			v.val.binary.data = &slots[i]->result->root;
			v.val.binary.len = VARSIZE(slots[i]->result) - VARHDRSZ;
		}
		pushJsonbValue(&state, WJB_ELEM, &v);
	}
	res = pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}

/*
 * The handle, of those given, that finished first as the history recorded
 * it (completed, failed or fired); waits until one has.
 */
Datum
durable_await_any(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.await_any()");
	int			n;
	int64	   *handles;
	CommandSlot **slots = handle_slots(fcinfo, r, &n, &handles);
	int			first = -1;

	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("durable.await_any() needs at least one handle")));
	for (int i = 0; i < n; i++)
		if (slots[i] != NULL && slots[i]->resolved_by != 0 &&
			(first < 0 || slots[i]->resolved_by < slots[first]->resolved_by))
			first = i;
	if (first < 0)
		replay_suspend_on(r, BLOCKED_ANY, n, handles);
	replay_advance_cursor(r, slots[first]->resolved_by);
	PG_RETURN_INT64(handles[first]);
}

Datum
durable_now(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.now()");

	PG_RETURN_TIMESTAMPTZ(replay_now(r));
}

/* ---- timers ---- */

static int32
issue_timer(Replay *r, TimestampTz fire_at, Interval *duration)
{
	int32		handle;
	NewCommand *cmd;

	if (next_command(r, COMMAND_TIMER, &handle) != NULL)
		return handle;
	cmd = new_command(r, COMMAND_TIMER, handle);
	cmd->fire_at = fire_at;
	if (duration)
	{
		cmd->duration = MemoryContextAlloc(r->cxt, sizeof(Interval));
		memcpy(cmd->duration, duration, sizeof(Interval));
	}
	return handle;
}

static Interval *
duration_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	Interval   *iv;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	iv = PG_GETARG_INTERVAL_P(argno);
	(void) interval_arg_ms(iv, what);	/* rejects negative intervals */
	return iv;
}

static TimestampTz
after(Replay *r, Interval *duration)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(replay_now(r)),
												   IntervalPGetDatum(duration)));
}

Datum
durable_timer_async(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.timer_async()");
	Interval   *duration = duration_arg(fcinfo, 0, "timer duration");

	PG_RETURN_INT64(issue_timer(r, after(r, duration), duration));
}

Datum
durable_sleep(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.sleep()");
	Interval   *duration = duration_arg(fcinfo, 0, "sleep duration");

	(void) await_one(fcinfo, r, issue_timer(r, after(r, duration), duration));
	PG_RETURN_VOID();
}

Datum
durable_sleep_until(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.sleep_until()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sleep_until time must not be null")));
	(void) await_one(fcinfo, r, issue_timer(r, PG_GETARG_TIMESTAMPTZ(0), NULL));
	PG_RETURN_VOID();
}

/* ---- cancellation ---- */

static void
add_cancel(Replay *r, int32 handle, CommandKind kind, bool by_code)
{
	MemoryContext old = MemoryContextSwitchTo(r->cxt);
	CancelCommand *c = palloc(sizeof(CancelCommand));

	c->handle = handle;
	c->kind = kind;
	c->by_code = by_code;
	r->cancels = lappend(r->cancels, c);
	MemoryContextSwitchTo(old);
}

static bool
cancel_pending(Replay *r, int32 handle)
{
	ListCell   *lc;

	foreach(lc, r->cancels)
		if (((CancelCommand *) lfirst(lc))->handle == handle)
			return true;
	return false;
}

/*
 * Cancels an activity or a timer.  An activity no worker holds, and a timer,
 * are canceled at once; a running activity's worker learns it from its
 * heartbeat and answers with cancel_activity().  Awaiting a canceled handle
 * raises DU007.  Canceling what is over, or already canceled, does nothing.
 */
Datum
durable_cancel(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.cancel()");
	int64		handle;
	CommandSlot *slot;
	CommandKind kind = COMMAND_NONE;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("handle must not be null")));
	handle = PG_GETARG_INT64(0);
	slot = slot_of_handle(r, handle);
	if (slot != NULL)
	{
		if (slot->resolved_by != 0 || slot->cancel_requested || slot->canceled)
			PG_RETURN_VOID();
		kind = slot->kind;
	}
	else
	{
		ListCell   *lc;

		foreach(lc, r->new_commands)
			if (((NewCommand *) lfirst(lc))->handle == handle)
				kind = ((NewCommand *) lfirst(lc))->kind;
	}
	if (!cancel_pending(r, (int32) handle))
		add_cancel(r, (int32) handle, kind, true);
	PG_RETURN_VOID();
}

/* ---- signals ---- */

static SignalEvent *
oldest_unreceived(Replay *r, const char *name)
{
	for (int i = 0; i < r->nsignals; i++)
		if (!r->signals[i].received && strcmp(r->signals[i].name, name) == 0)
			return &r->signals[i];
	return NULL;
}

static Datum
receive(FunctionCallInfo fcinfo, SignalEvent *signal)
{
	signal->received = true;
	if (signal->payload == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(signal->payload);
}

/*
 * The payload of the oldest signal of that name not yet received, waiting
 * for one if needed; NULL when the timeout fires first.  A timeout timer
 * that lost the race is canceled, so it never wakes the run.
 */
Datum
durable_wait_signal(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.wait_signal()");
	char	   *name = required_text_arg(fcinfo, 0, "signal name");
	Interval   *timeout = PG_ARGISNULL(1) ? NULL : duration_arg(fcinfo, 1, "timeout");
	SignalEvent *signal = oldest_unreceived(r, name);
	CommandSlot *timer = NULL;
	int32		timer_handle = 0;

	/* already there when the code got here: no waiting, no timer */
	if (signal != NULL && signal->event_id < r->tasks[r->cursor].event_id)
		return receive(fcinfo, signal);

	if (timeout != NULL)
	{
		timer_handle = issue_timer(r, after(r, timeout), timeout);
		timer = timer_handle <= r->max_recorded ? &r->slots[timer_handle] : NULL;
	}
	if (timer != NULL && timer->resolved_by != 0 && !timer->canceled &&
		(signal == NULL || timer->resolved_by < signal->event_id))
	{
		replay_advance_cursor(r, timer->resolved_by);
		PG_RETURN_NULL();
	}
	if (signal == NULL)
		replay_suspend(r);

	replay_advance_cursor(r, signal->event_id);
	if (timer_handle != 0 && (timer == NULL || timer->resolved_by == 0))
		add_cancel(r, timer_handle, COMMAND_TIMER, false);
	return receive(fcinfo, signal);
}

/* ---- queries ---- */

/*
 * Declares the answer to a query from this point of the code on.  Only a
 * replay that answers durable.query() keeps it; a workflow task ignores it.
 */
Datum
durable_on_query(PG_FUNCTION_ARGS)
{
	Replay	   *r = replay_required("durable.on_query()");
	char	   *name = required_text_arg(fcinfo, 0, "query name");
	Jsonb	   *answer = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	char	   *handler = PG_ARGISNULL(2) ? NULL : required_text_arg(fcinfo, 2, "query handler");
	MemoryContext old;
	QueryAnswer *qa;
	ListCell   *lc;

	if (!r->query_mode)
		PG_RETURN_VOID();

	old = MemoryContextSwitchTo(r->cxt);
	foreach(lc, r->query_answers)
	{
		qa = lfirst(lc);
		if (strcmp(qa->name, name) == 0)
		{
			r->query_answers = foreach_delete_current(r->query_answers, lc);
			break;
		}
	}
	qa = palloc(sizeof(QueryAnswer));
	qa->name = pstrdup(name);
	qa->answer = answer ? DatumGetJsonbPCopy(JsonbPGetDatum(answer)) : NULL;
	qa->handler = handler ? pstrdup(handler) : NULL;
	r->query_answers = lappend(r->query_answers, qa);
	MemoryContextSwitchTo(old);
	PG_RETURN_VOID();
}
