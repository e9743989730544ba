/*-------------------------------------------------------------------------
 *
 * durable.h
 *	  Declarations shared by the files of the durable extension.
 *
 * Each .c file owns one concept: durable.c (module load, settings, hooks),
 * shmem.c (shared state and commit-time wakeups), launcher.c (one worker per
 * database), worker.c (the per-database worker loop), replay.c (running a
 * workflow task, answering a query), workflow_api.c (the deterministic API),
 * history.c (a run's parsed history, cached by the worker), client.c
 * (starting, signaling and watching runs), activity.c (activity tasks),
 * activity_workers.c (the API of activity workers), environment.c (the
 * settings workflow code runs under), activity_options.c (retry policies,
 * timeouts, priority), sql_activity.c (SQL activities run by the worker),
 * timers.c (the timer queue), token.c (task tokens), queue_heads.c (where
 * a busy queue's live ready tasks begin), plans.c (how the
 * engine's statements are planned and run), engine.c (running internal
 * queries as the extension owner, history appends, JSON building).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DURABLE_H
#define DURABLE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/s_lock.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/*
 * SQLSTATEs of durable's own errors (class "DU").  Documented in README.md.
 */
#define ERRCODE_DURABLE_ACTIVITY_FAILED		MAKE_SQLSTATE('D','U','0','0','1')
#define ERRCODE_DURABLE_WORKFLOW_FAILED		MAKE_SQLSTATE('D','U','0','0','2')
#define ERRCODE_DURABLE_WORKFLOW_RUNNING	MAKE_SQLSTATE('D','U','0','0','3')
#define ERRCODE_DURABLE_NONDETERMINISM		MAKE_SQLSTATE('D','U','0','0','4')
#define ERRCODE_DURABLE_NOT_IN_WORKFLOW		MAKE_SQLSTATE('D','U','0','0','5')
#define ERRCODE_DURABLE_CANCELED			MAKE_SQLSTATE('D','U','0','0','7')
#define ERRCODE_DURABLE_QUERY_NOT_ANSWERED	MAKE_SQLSTATE('D','U','0','0','6')
/* raised to unwind workflow code when it must wait; never reaches a client */
#define ERRCODE_DURABLE_SUSPEND				MAKE_SQLSTATE('D','U','0','S','0')

/* ---- settings (durable.c) ---- */
extern int	durable_max_databases;
extern int	durable_workflow_task_timeout_ms;
extern int	durable_max_poll_wait_ms;
extern int	durable_task_batch_size;
extern bool durable_eager_workflow_tasks;
extern bool durable_eager_workflow_start;
extern int	durable_eager_dispatch_limit;

/* ---- shared state (shmem.c) ---- */

/* A per-database worker slot, owned by the launcher, filled in by workers. */
typedef enum WorkerSlotState
{
	SLOT_FREE = 0,
	SLOT_STARTING,				/* launcher started a worker for dboid */
	SLOT_RUNNING,				/* worker found the extension and works */
	SLOT_ABSENT					/* worker found no extension and exited */
} WorkerSlotState;

/* The settings workflow code runs under, as the worker has them (environment.c). */
#define DURABLE_ENV_SETTINGS	18
#define DURABLE_ENV_VALUE_LEN	64

typedef struct WorkerSlot
{
	Oid			dboid;
	WorkerSlotState state;
	pid_t		pid;
	Latch	   *latch;
	bool		paused;			/* a DROP/ALTER DATABASE needs it gone */
	/* 0 while the worker works, else the time it sleeps until (DT_NOEND: no timer) */
	TimestampTz sleeping_until;
	uint64		wakeups;		/* times the worker woke up */
	/* activity results may wait on task rows (1; set and taken without the lock) */
	pg_atomic_uint32 results_waiting;
	uint32		env_version;	/* bumped at each publication (0: none yet) */
	bool		env_valid;
	char		env[DURABLE_ENV_SETTINGS][DURABLE_ENV_VALUE_LEN];
} WorkerSlot;

#define DURABLE_NOTIFY_MAX		32
#define DURABLE_CV_COUNT		64

/*
 * Where sleepers wait for commits: a condition variable, and a counter of its
 * broadcasts, so that a sleeper that looked at the tables in a subtransaction
 * (which, rolled back, cancels any prepared sleep) can tell whether it missed
 * a broadcast between its look and its sleep.
 */
typedef struct WakeChannel
{
	ConditionVariable cv;
	pg_atomic_uint64 broadcasts;
} WakeChannel;

/* Pollers waiting on a task queue, for durable.task_queue_status. */
#define DURABLE_WAITING_QUEUES	128

typedef struct WaitingPollers
{
	Oid			dboid;
	int			pollers;		/* 0: entry free */
	char		task_queue[NAMEDATALEN];
} WaitingPollers;

/* Where each busy task queue's live ready entries begin (queue_heads.c). */
#define DURABLE_QUEUE_HEADS		64

typedef struct QueueHeadSlot
{
	Oid			dboid;			/* InvalidOid: free */
	char		task_queue[NAMEDATALEN];
	bool		mixed_priorities;	/* claims start at the first entry */
	TimestampTz head;			/* DT_NOBEGIN: none */
	uint64		last_used;
} QueueHeadSlot;

typedef struct QueueHeads
{
	slock_t		mutex;
	uint64		version;		/* bumped by what a raise must not pass */
	uint64		uses;
	QueueHeadSlot slots[DURABLE_QUEUE_HEADS];
} QueueHeads;

typedef struct DurableShared
{
	LWLock	   *lock;			/* protects everything but the CVs */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			n_created;		/* databases that may just have got the extension */
	Oid			created[DURABLE_NOTIFY_MAX];
	WakeChannel queue_channels[DURABLE_CV_COUNT];	/* by hash of task queue */
	WakeChannel close_channels[DURABLE_CV_COUNT];	/* by hash of workflow id */
	WaitingPollers waiting[DURABLE_WAITING_QUEUES];
	pg_atomic_uint64 queue_limits_version; /* bumped when task queue limits change */
	QueueHeads	queue_heads;
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];	/* durable_max_databases */
} DurableShared;

extern DurableShared *durable_shared;

extern void durable_shmem_request(void);
extern void durable_shmem_startup(void);
extern void durable_require_preload(void);
extern WakeChannel *durable_queue_channel(const char *task_queue);
extern WakeChannel *durable_close_channel(const char *workflow_id);
extern uint64 channel_broadcasts(WakeChannel *ch);
extern void durable_poller_waits(const char *task_queue, int delta);
extern void channel_sleep(WakeChannel *ch, uint64 seen_broadcasts, long timeout_ms);

/* commit-time wakeups: register now, delivered only if the transaction commits */
extern void durable_wake_worker_at_commit(void);
extern void durable_results_waiting_at_commit(void);
extern void durable_wake_queue_at_commit(const char *task_queue);
extern void durable_wake_queue_at_abort(const char *task_queue);
extern void durable_wake_closed_at_commit(const char *workflow_id);
extern void durable_notify_launcher_at_commit(Oid dboid);
extern void durable_timer_added_at_commit(TimestampTz fire_at);
extern void durable_wake_everything(void);
extern void durable_queue_limits_changed_at_commit(void);
extern uint64 durable_queue_limits_version(void);
extern void durable_register_xact_callback(void);

/* ---- where a queue's live ready entries begin (queue_heads.c) ---- */

typedef struct QueueHeadRead
{
	TimestampTz head;
	int64		window;			/* how far past the head to look first */
	uint64		version;
	TimestampTz started_at;
} QueueHeadRead;

extern bool queue_head_read(const char *task_queue, QueueHeadRead *read);
extern void queue_head_seen(const char *task_queue, const QueueHeadRead *read,
							bool from_first, TimestampTz until, bool seen_live,
							TimestampTz first_ready_at, int32 first_priority);
extern void queue_head_window_held(const char *task_queue, bool claimed);
extern void queue_head_entry_added(const char *task_queue, int32 priority,
								   TimestampTz ready_at);

/* ---- processes (launcher.c, worker.c) ---- */
extern void durable_register_launcher(void);
PGDLLEXPORT void durable_launcher_main(Datum main_arg);
PGDLLEXPORT void durable_worker_main(Datum main_arg);
extern void durable_pause_database_worker(Oid dboid);
extern void durable_resume_database_worker(Oid dboid);

/* ---- environment.c ---- */
extern void environment_publish(WorkerSlot *slot);
extern bool environment_available(void);
extern void environment_adopt(void);

/* ---- engine.c ---- */

/*
 * How long the worker's internal queries wait for a row lock before giving
 * up; an error with this SQLSTATE means "busy, try again later", never a
 * failure of the run.
 */
#define ENGINE_LOCK_TIMEOUT		"100ms"
#define ENGINE_LOCK_BUSY(edata)	((edata)->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)

extern void engine_note_busy(int64 key);
extern bool engine_is_busy(int64 key);
extern bool engine_was_busy(int64 key);
extern void engine_forget_busy(int64 key);
extern int64 engine_run_key(Datum run_id);

/* Identity switch around internal queries. */
typedef struct EngineScope
{
	Oid			caller;			/* the role that called us: check its rights */
	Oid			save_userid;
	int			save_sec_context;
	int			depth;			/* 1 + the scopes it is inside of */
} EngineScope;

extern void engine_enter(EngineScope *scope);
extern void engine_leave(EngineScope *scope);
extern int	engine_keeping_depth(void);
extern void engine_pin_search_path(void);
extern void engine_register_scope_callbacks(void);
extern Oid	engine_owner(void);

/* A saved SPI plan, prepared on first use. */
typedef struct CachedPlan_
{
	SPIPlanPtr	plan;
	const char *sql;
	int			nargs;
	Oid			argtypes[18];
} EnginePlan;

extern bool engine_try_in_subxact(bool (*fn) (void *arg), void *arg);
extern bool call_may_commit(FunctionCallInfo fcinfo);
extern bool engine_look_or_commit(bool (*fn) (void *arg), void *arg);
extern void check_wait_isolation(const char *function, const char *hint);
extern void engine_check_installed_after_wait(void);
extern ErrorData *engine_in_subxact(void (*fn) (void *arg), void *arg);
extern bool engine_in_subxact_unless_busy(void (*fn) (void *arg), void *arg);
extern int	engine_exec(EnginePlan *plan, Datum *values, const char *nulls,
						long count);
extern void engine_install_planner_hook(void);
extern Datum engine_get(int row, int col, bool *isnull);
extern char *engine_get_text(int row, int col);
extern char *engine_pstrdup(const char *s);

/* The run row, locked FOR UPDATE: the per-run mutex of every event append. */
typedef struct LockedRun
{
	Datum		run_id;			/* uuid, palloc'd in caller's context */
	char	   *workflow_id;
	char	   *workflow;
	Oid			owner;
	Jsonb	   *input;
	char	   *status;
	int64		next_event_id;
	bool		task_failed;
	bool		task_pending;
	/* where rows.c last saw its row, and in which (sub)transaction: a hint */
	ItemPointerData tid;
	LocalTransactionId tid_lxid;
	SubTransactionId tid_subxact;
	/* the root of its row's versions, where the primary key points (a hint) */
	ItemPointerData root;
	/* where its row in the worker's queue was seen, by the worker (a hint) */
	ItemPointerData due_row;
} LockedRun;

extern bool engine_lock_run(Datum run_id, LockedRun *run, bool skip_locked);
extern bool engine_read_run(Datum run_id, LockedRun *run);
extern void engine_dequeue_run(Datum run_id);

/* rows.c: the hot row operations, without statements */
typedef enum RunLockMode
{
	RUN_READ,
	RUN_LOCK,
	RUN_LOCK_OR_SKIP
} RunLockMode;

extern bool engine_find_run(Datum run_id, LockedRun *run, RunLockMode mode);
extern bool engine_find_run_at(Datum run_id, ItemPointer seen_at, ItemPointer root,
							   LockedRun *run, RunLockMode mode);
extern bool engine_delete_started_task(Datum run_id, int32 handle, int32 attempt,
									   ItemPointer seen_at);

/* A new activity's task row. */
typedef struct NewTask
{
	Datum		run_id;
	int32		handle;
	const char *workflow_id;
	const char *activity;
	const char *task_queue;
	Jsonb	   *input;			/* or NULL */
	Jsonb	   *retry_policy;
	Jsonb	   *timeouts;
	int32		priority;
	TimestampTz now;			/* scheduled (and started) at */
	bool		started;		/* by the caller of complete_and_poll() */
	const char *worker;			/* that caller's worker name, or NULL */
	ItemPointerData run_row;	/* the run's LockedRun.root */
} NewTask;

extern ItemPointerData engine_insert_task(const NewTask *task);

/* A task claimed by a poll, with what handing it out needs. */
typedef struct ClaimedTask
{
	int32		attempt;
	int32		handle;
	Datum		run_id;			/* uuid */
	char	   *workflow_id;
	char	   *activity;
	Jsonb	   *input;			/* or NULL */
	Jsonb	   *heartbeat_details;	/* or NULL */
	Jsonb	   *timeouts;
	ItemPointerData tid;		/* of the version the claim wrote */
	ItemPointerData run_row;	/* the run's row's root, if the row tells */
} ClaimedTask;

extern int	engine_claim_tasks(const char *queue, const char *worker, TimestampTz now,
							   int max_tasks, bool tentative, ClaimedTask *claimed);
/*
 * The columns of a run that LockedRun holds, as queries read them (with a
 * table alias prefix, e.g. "r."): see engine_fill_locked_run().
 */
#define RUN_COLUMNS_OF(p) \
	p "workflow_id, " p "workflow, " p "owner, " p "input, " p "status, " \
	p "next_event_id, " p "task_failure IS NOT NULL, " p "task_pending, " p "run_id"
#define RUN_COLUMNS RUN_COLUMNS_OF("")
#define RUN_NCOLUMNS 9

extern void engine_fill_locked_run(LockedRun *run, int first_col);
/* An event to append to a run's history. */
typedef struct NewEvent
{
	const char *type;
	Jsonb	   *details;
	TimestampTz when;
	/*
	 * The end of an activity attempt that had started: when, and by which
	 * worker (or NULL).  Its ActivityTaskStarted takes the event id before
	 * it, and is kept on its row (see durable.recorded_events).  0: none.
	 */
	TimestampTz attempt_started_at;
	const char *attempt_worker;
} NewEvent;

/* An event with nothing else: see NewEvent. */
#define NEW_EVENT(type, details, when)	((NewEvent) {(type), (details), (when), 0, NULL})

extern void engine_append_events(LockedRun *run, int n, const NewEvent *events);
typedef void (*EventReader) (void *arg, int64 event_id, TimestampTz time,
							 const char *type, Jsonb *details);
extern void engine_read_events(Datum run_id, int64 after, EventReader reader, void *arg);
extern void engine_append_event(LockedRun *run, const char *event_type,
								Jsonb *details, TimestampTz when);
extern void engine_save_next_event_id(LockedRun *run);
extern void engine_update_run(LockedRun *run, const char *status, Jsonb *result,
							  Jsonb *failure, Jsonb *task_failure);
extern void engine_request_workflow_task(LockedRun *run);

/* A small JSON object builder for event details. */
typedef struct JsonBuf
{
	JsonbParseState *state;
} JsonBuf;

extern void json_begin(JsonBuf *jb);
extern void json_add_str(JsonBuf *jb, const char *key, const char *value);
extern void json_add_int(JsonBuf *jb, const char *key, int64 value);
extern void json_add_bool(JsonBuf *jb, const char *key, bool value);
extern void json_add_time(JsonBuf *jb, const char *key, TimestampTz value);
extern void json_add_float(JsonBuf *jb, const char *key, double value);
extern void json_add_jsonb(JsonBuf *jb, const char *key, Jsonb *value);
extern Jsonb *json_end(JsonBuf *jb);
extern Jsonb *jsonb_field(Jsonb *obj, const char *key);
extern char *jsonb_field_text(Jsonb *obj, const char *key);
extern bool jsonb_field_int(Jsonb *obj, const char *key, int64 *result);
extern Jsonb *error_to_jsonb(ErrorData *edata);
extern Datum jsonb_datum_or_null(Jsonb *j, bool *isnull);

extern bool is_workflow_function(Oid funcoid, Oid *nspid);
/* user_functions.c */
extern Oid	engine_function_oid(const char *regprocedure);
extern FmgrInfo *engine_function_call_begin(Oid funcoid);
extern void engine_function_call_end(FmgrInfo *flinfo);
extern void engine_check_role_may_run(Oid funcoid, Oid role);
extern void engine_become_role(Oid role, bool read_only);
extern long interval_arg_ms(Interval *iv, const char *what);
/* this backend's local transaction id (storage/proc.h) */
#if PG_VERSION_NUM >= 170000
#define MY_LXID (MyProc->vxid.lxid)
#else
#define MY_LXID (MyProc->lxid)
#endif

extern text *required_text(FunctionCallInfo fcinfo, int argno, const char *what);
extern char *required_text_arg(FunctionCallInfo fcinfo, int argno, const char *what);
extern bool text_equals_cstring(const text *t, const char *s);
extern char *interval_text(Interval *iv);

/* ACL checks under their PostgreSQL 15 names (object_aclcheck from 16 on) */
#if PG_VERSION_NUM >= 160000
#define durable_proc_aclcheck(f, r, m) object_aclcheck(ProcedureRelationId, f, r, m)
#define durable_namespace_aclcheck(n, r, m) object_aclcheck(NamespaceRelationId, n, r, m)
#else
#define durable_proc_aclcheck(f, r, m) pg_proc_aclcheck(f, r, m)
#define durable_namespace_aclcheck(n, r, m) pg_namespace_aclcheck(n, r, m)
#endif

/* ---- token.c ---- */
extern char *token_make(Datum run_id, int32 handle, int32 attempt);
extern void token_parse(const char *token, Datum *run_id, int32 *handle,
						int32 *attempt);

/* ---- sql_activity.c ---- */
extern int	sql_activity_run_due(int max_tasks, bool *busy);
extern void sql_activity_maybe_due(void);

/* ---- timers.c ---- */
extern void timer_schedule(LockedRun *run, const char *kind, int32 handle,
						   TimestampTz fire_at);
extern bool timer_cancel(LockedRun *run, int32 handle);
extern void timers_cancel_all(LockedRun *run);
#define TIMERS_FIRE_BATCH	500
extern int	timers_fire_due(bool *retry_soon, bool *full, TimestampTz *next_due);
extern long timers_ms_until_next(TimestampTz *next);

/* ---- replay.c ---- */
extern int	replay_run_tasks(int max_tasks, TimestampTz stop_at, bool *results,
							 bool *busy);
extern Jsonb *replay_query(LockedRun *run, const char *query, Jsonb *args);
extern bool replay_task_inline(LockedRun *run, Oid caller);

/* ---- history.c ---- */
extern void history_note_appended(LockedRun *run, int64 first_event_id, int64 event_id,
								  TimestampTz time, const char *type, Jsonb *details);

/* ---- activity.c ---- */
/* ---- activity_options.c ---- */
typedef struct RetryPolicy
{
	double		initial_interval_s;
	double		backoff_coefficient;
	double		maximum_interval_s;
	int32		maximum_attempts;	/* 0: unlimited */
	Jsonb	   *non_retryable_errors;	/* array of error types, or NULL */
} RetryPolicy;

/* Normalized activity options. */
typedef struct ActivityOptions
{
	Jsonb	   *retry_policy;	/* what differs from the defaults ('{}': none) */
	Jsonb	   *timeouts;		/* {"start_to_close": seconds, ...} */
	int32		priority;
} ActivityOptions;

extern void activity_parse_options(Jsonb *options, ActivityOptions *out);
extern void retry_policy_from_jsonb(Jsonb *j, RetryPolicy *p);
extern bool retry_policy_stops(RetryPolicy *p, const char *error_type);
extern double backoff_seconds(RetryPolicy *p, int32 failed_attempt);
extern double activity_timeout_seconds(Jsonb *timeouts, const char *name);
extern TimestampTz activity_start_to_close_at(Jsonb *timeouts, TimestampTz started_at);
extern bool activity_has_timeout_timers(Jsonb *timeouts);

/* ---- activity.c ---- */
extern void activity_schedule(LockedRun *run, int32 handle, const char *activity,
							  const char *task_queue, Jsonb *input,
							  ActivityOptions *options, TimestampTz now,
							  const NewEvent *before, bool save_run);
extern int	activity_record_ended(LockedRun *run);
extern void activity_cancel_all(LockedRun *run);
extern bool activity_request_cancel(LockedRun *run, int32 handle, TimestampTz now);
extern bool activity_fire_timeout(LockedRun *run, int64 timer_id, int32 handle,
								  int32 attempt, const char *timeout, TimestampTz now);

#endif							/* DURABLE_H */
