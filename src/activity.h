/*-------------------------------------------------------------------------
 *
 * activity.h
 *	  One attempt of an activity, shared by activity.c (remote activities,
 *	  done by apps' workers) and sql_activity.c (SQL activities, done by
 *	  the worker itself).
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
	int64		task_id;
	int32		handle;
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
} ClaimedAttempt;

/* SQL activities have no task queue: no poller can claim them. */
#define SQL_ACTIVITY_QUEUE	""

extern bool activity_lock_task(int64 task_id, ClaimedAttempt *a);
extern void activity_append_started(ClaimedAttempt *a);
extern void activity_append_ended(ClaimedAttempt *a, const char *event_type,
								  Jsonb *details, TimestampTz when);
extern void activity_resolve(ClaimedAttempt *a, Oid caller);
extern void activity_attempt_unsuccessful(ClaimedAttempt *a, const char *event_type,
										  JsonBuf *jb, bool retryable,
										  const char *error_type, TimestampTz now);

#endif							/* DURABLE_ACTIVITY_H */
