/*-------------------------------------------------------------------------
 *
 * replay.h
 *	  The state of one replay of a run's workflow function, shared by
 *	  replay.c (which loads the history, runs the code and records what it
 *	  did) and workflow_api.c (the deterministic functions the code calls).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DURABLE_REPLAY_H
#define DURABLE_REPLAY_H

#include "durable.h"

#include "nodes/pg_list.h"
#include "utils/uuid.h"

typedef enum CommandKind
{
	COMMAND_NONE = 0,			/* no command recorded under this handle */
	COMMAND_ACTIVITY,
	COMMAND_TIMER
} CommandKind;

/* What the history says about one handle (a command of the code). */
typedef struct CommandSlot
{
	CommandKind kind;
	char	   *activity;		/* activities: name and task queue */
	char	   *task_queue;
	int64		resolved_by;	/* event that completed, failed, fired or canceled it */
	bool		failed;			/* failed or timed out for good */
	bool		canceled;		/* ActivityTaskCanceled or TimerCanceled recorded */
	bool		cancel_requested;	/* ActivityTaskCancelRequested recorded */
	Jsonb	   *result;			/* ActivityTaskCompleted details.result */
	Jsonb	   *failure;		/* final ActivityTaskFailed/TimedOut details */
} CommandSlot;

/* A WorkflowTaskCompleted event: the time the code ran up to there. */
typedef struct TaskBoundary
{
	int64		event_id;
	TimestampTz time;
} TaskBoundary;

typedef struct SignalEvent
{
	int64		event_id;
	char	   *name;
	Jsonb	   *payload;
	bool		received;		/* consumed by a wait_signal() of this replay */
} SignalEvent;

/* What the code was waiting for when it suspended (see history_still_blocked). */
typedef enum BlockedOn
{
	BLOCKED_UNKNOWN = 0,		/* not known, or on something else */
	BLOCKED_ONE,				/* await(), activity(): this one handle */
	BLOCKED_ALL,				/* await_all(): every one of the handles */
	BLOCKED_ANY					/* await_any(): any one of the handles */
} BlockedOn;

typedef struct Blocked
{
	BlockedOn	on;
	int			nhandles;
	int64	   *handles;
} Blocked;

/* The facts of a run's history, as replay needs them (history.c). */
typedef struct RunHistory
{
	pg_uuid_t	run_id;			/* hash key when cached */
	MemoryContext cxt;
	int64		last_event_id;	/* events up to this one are applied */
	CommandSlot *slots;			/* indexed by handle, 1..max_recorded */
	int32		max_recorded;
	int32		slots_allocated;
	int32		open_commands;	/* commands not resolved yet */
	bool		execution_timeout;	/* the run has one (a timer), or may have */
	TaskBoundary *tasks;
	int			ntasks;
	int			tasks_allocated;
	SignalEvent *signals;		/* in arrival order */
	int			nsignals;
	int			signals_allocated;
	/* the last event that is not an activity's result or retried attempt */
	int64		last_other_event;
	/* where the code of this backend's last task of the run suspended */
	Blocked		blocked;
	int64		blocked_after;	/* the last event that task saw or appended */
} RunHistory;

extern RunHistory *history_load(LockedRun *run, bool cached);
extern void history_forget(Datum run_id);
extern void history_note_blocked(LockedRun *run, const Blocked *blocked);
extern bool history_still_blocked(RunHistory *h);

/* A command the code issued that the history does not have yet. */
typedef struct NewCommand
{
	CommandKind kind;
	int32		handle;
	char	   *activity;
	char	   *task_queue;
	Jsonb	   *input;
	ActivityOptions options;
	TimestampTz fire_at;
	Interval   *duration;		/* timers: as asked, for the history */
} NewCommand;

/* A cancellation the code asked for in this task. */
typedef struct CancelCommand
{
	int32		handle;
	CommandKind kind;
	bool		by_code;		/* durable.cancel(), not wait_signal's own timer */
} CancelCommand;

/* A query answer declared by durable.on_query(). */
typedef struct QueryAnswer
{
	char	   *name;
	Jsonb	   *answer;
	char	   *handler;		/* function (jsonb, jsonb) RETURNS jsonb, or NULL */
} QueryAnswer;

#define MAX_BUSY_EXPRS 8

typedef struct Replay
{
	MemoryContext cxt;			/* survives the code's subtransaction */
	LockedRun  *run;
	TimestampTz task_time;
	bool		query_mode;		/* answering durable.query(): record nothing */

	CommandSlot *slots;			/* indexed by handle, 1..max_recorded */
	int32		max_recorded;
	int32		slots_allocated;
	TaskBoundary *tasks;		/* recorded boundaries, then the current task */
	int			ntasks;
	int			cursor;
	SignalEvent *signals;		/* in arrival order */
	int			nsignals;
	/* what closing the run must drop: open commands' rows, the run's timer */
	int32		open_commands;
	bool		execution_timeout;

	int32		issued;			/* handles the code has issued so far */
	/* the handle durable._replayed() took, for the value the plan returns */
	int32		replayed_handle;
	/* the SQL activity function last named, and what the name resolved to */
	char	   *sql_activity_name;
	text	   *sql_activity_function;
	text	   *sql_activity_queue;
	List	   *new_commands;	/* of NewCommand */
	List	   *cancels;		/* of CancelCommand */
	List	   *query_answers;	/* of QueryAnswer */

	bool		suspended;
	Blocked		blocked;		/* what the first suspend waited for */
	bool		nondeterministic;

	/* the code's PL/pgSQL expressions a suspend interrupted (plpgsql_exprs.c) */
	ErrorContextCallback *code_frames_base;
	bool		code_plpgsql;
	Oid			code_function;
	int			nbusy_exprs;
	void	   *busy_exprs[MAX_BUSY_EXPRS];
} Replay;

extern Replay *current_replay;

extern void replay_suspend(Replay *r) pg_attribute_noreturn();
extern void replay_suspend_on(Replay *r, BlockedOn on, int nhandles,
							  const int64 *handles) pg_attribute_noreturn();
extern void replay_nondeterminism(Replay *r, const char *fmt,...)
			pg_attribute_printf(2, 3) pg_attribute_noreturn();
extern Replay *replay_required(const char *function);
extern void replay_advance_cursor(Replay *r, int64 event_id);
extern TimestampTz replay_now(Replay *r);

/* plpgsql_exprs.c */
extern void plpgsql_exprs_code_begins(Replay *r, FmgrInfo *function);
extern void plpgsql_exprs_note_busy(Replay *r);
extern void plpgsql_exprs_release_busy(Replay *r);

#endif							/* DURABLE_REPLAY_H */
