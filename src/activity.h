/*-------------------------------------------------------------------------
 *
 * activity.h
 *	  One attempt of an activity, shared by activity.c (scheduling, timeouts,
 *	  how an attempt ends), activity_workers.c (the API of apps' activity
 *	  workers) and sql_activity.c (SQL activities, done by the worker
 *	  itself).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DURABLE_ACTIVITY_H
#define DURABLE_ACTIVITY_H

#include "durable.h"

/* The task row of an attempt, locked along with its run. */
typedef struct ClaimedAttempt
{
	LockedRun	run;
	int32		handle;			/* with run.run_id, the task row's key */
	int32		attempt;
	char	   *status;
	char	   *activity;
	char	   *task_queue;
	char	   *worker;
	TimestampTz started_at;
	Jsonb	   *input;
	Jsonb	   *retry_policy;
	Jsonb	   *timeouts;
	bool		cancel_requested;
	/* the attempt ending now had started: its end records when, and by whom */
	bool		had_started;
} ClaimedAttempt;

/* The columns of a task that ClaimedAttempt holds (with a table alias prefix). */
#define TASK_COLUMNS_OF(p) \
	p "handle, " p "attempt, " p "status, " p "activity, " p "task_queue, " \
	p "worker, " p "started_at, " p "retry_policy, " p "timeouts, " \
	p "cancel_requested, " p "input"

/* SQL activities have no task queue: no poller can claim them. */
#define SQL_ACTIVITY_QUEUE	""

static inline TimestampTz
plus_seconds(TimestampTz t, double seconds)
{
	return t + (TimestampTz) (seconds * USECS_PER_SEC);
}

/* activity.c */
extern void activity_start_timeout(Datum run_id, int32 handle, int32 attempt,
								   Jsonb *timeouts, const char *timeout, TimestampTz from);
extern void activity_fill_attempt(ClaimedAttempt *a, int first_col);
extern void activity_finish(ClaimedAttempt *a, Oid caller);
extern bool activity_lock_task(int32 handle, ClaimedAttempt *a);
extern void activity_append_ended(ClaimedAttempt *a, const char *event_type,
								  Jsonb *details, TimestampTz when);
extern void activity_resolve(ClaimedAttempt *a, Oid caller);
extern bool activity_complete_unlocked(Datum run_id, int32 handle, int32 attempt,
									   Jsonb *result);
extern bool activity_fail_unlocked(Datum run_id, int32 handle, int32 attempt,
								   const char *error, bool retryable,
								   const char *error_type);
extern void activity_attempt_unsuccessful(ClaimedAttempt *a, const char *event_type,
										  JsonBuf *jb, bool retryable,
										  const char *error_type, TimestampTz now);

/* activity_workers.c: eager dispatch, for activity_schedule() */
extern bool activity_eager_takes(const char *task_queue);
extern const char *activity_eager_worker(void);
extern void activity_eager_add(LockedRun *run, int32 handle, ItemPointer tid,
							   const char *activity, Jsonb *input,
							   bool has_timeout_timers, TimestampTz started_at);

#endif							/* DURABLE_ACTIVITY_H */
