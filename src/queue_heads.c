/*-------------------------------------------------------------------------
 *
 * queue_heads.c
 *	  Where the live part of a busy task queue begins in the ready tasks'
 *	  index: a hint in shared memory that lets a claim skip the entries of
 *	  tasks already claimed.
 *
 * A claimed task leaves its entry in durable.activity_tasks_ready until
 * VACUUM removes it: new tasks go in at the end of their queue (ready_at is
 * when they became ready), claims take them from the front, and the front
 * of a busy queue is a growing run of dead entries, then whole pages of
 * them.  A claim that starts at the queue's first entry walks all of them:
 * under a sustained load, until the next autovacuum, each claim read more
 * pages than the last.
 *
 * So each queue that claims have looked at (up to DURABLE_QUEUE_HEADS of
 * them, the least recently used making room) has a head: a ready_at before
 * which its entries are all dead to every transaction.  A claim starts
 * there ("ready_at >= head", priority 0: first a short span past it, as wide
 * as lately held a task for this backend, so that a btree page is not read
 * to its end for one task), and raises the head to the first entry it meets
 * that is not known dead.  Keeping the head a lower bound:
 *
 * - Dead is for ever: an entry passed over because no snapshot can see its
 *   row (the index AM's killed items, the heap's all-dead answer), or
 *   because a claim or an end that the claim's snapshot sees committed
 *   replaced or deleted it (no later snapshot sees that row either: see
 *   superseded_for_good() in task_rows.c), never becomes live again.  The
 *   second kind does not wait for the oldest snapshot in the database to
 *   go, which a long poll on an idle queue holds as long as it waits.  An
 *   entry whose row is merely invisible to the claim (an insert not yet
 *   committed) stops the raise.
 * - An entry may go in behind the head after a claim passed that place:
 *   the task made ready by a transaction whose ready_at is old, or a
 *   concurrent insert whose ready_at was taken just before another's.  The
 *   writer of a ready entry reports it once the entry is in the index (so
 *   before its commit makes it visible): one older than the head lowers the
 *   head, and one older than HEAD_SLACK bumps the version that every raise
 *   compares and gives up on if it moved.  A raise never goes past the
 *   claim's own start time minus HEAD_SLACK: an entry that a claim passed
 *   over before it went in was inserted after that start, and its ready_at,
 *   unless the writer reported it as old, is later than that start minus
 *   HEAD_SLACK.
 * - Priorities sort before ready_at: a queue that ever had a ready task of
 *   another priority than 0 is "mixed" and claimed from its first entry,
 *   until a claim from the first entry finds priority 0 in front.
 *
 * The head only saves work, it never decides what is claimed: a claim that
 * finds nothing from the head claims from the first entry before it gives
 * up, and each backend claims from the first entry at least every
 * FULL_SCAN_EVERY, which also lowers the head to what it finds.  A task
 * made ready behind the head some way this file does not know of (a hand
 * edit of the table) is then claimed late, never left behind.
 *
 *-------------------------------------------------------------------------
 */
#include "durable.h"

#include "miscadmin.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

/* How far behind its start a claim's raise stays (see above). */
#define HEAD_SLACK			(10 * 1000)		/* microseconds */
/* How often each backend claims from a queue's first entry anyway. */
#define FULL_SCAN_EVERY		(100 * 1000)	/* microseconds */

/* How far past the head a claim looks first, at least and at most. */
#define WINDOW_MIN			100		/* microseconds */
#define WINDOW_MAX			((int64) 3600 * 1000 * 1000)

/*
 * This backend's last queue: when it last claimed from the queue's first
 * entry, and how far past the head its claims look first (the span of
 * ready_at that held a task to claim, lately).
 */
static struct
{
	Oid			dboid;
	char		task_queue[NAMEDATALEN];
	TimestampTz full_scan_at;
	int64		window;
}			mine = {InvalidOid};

static bool
is_mine(const char *task_queue)
{
	return mine.dboid == MyDatabaseId && strcmp(mine.task_queue, task_queue) == 0;
}

static bool
keeps_head(const char *task_queue)
{
	return task_queue[0] != '\0' && strlen(task_queue) < NAMEDATALEN;
}

/* The slot of this database's queue, or NULL.  Under the mutex. */
static QueueHeadSlot *
find_slot(QueueHeads *heads, const char *task_queue)
{
	for (int i = 0; i < DURABLE_QUEUE_HEADS; i++)
	{
		QueueHeadSlot *slot = &heads->slots[i];

		if (slot->dboid == MyDatabaseId && strcmp(slot->task_queue, task_queue) == 0)
			return slot;
	}
	return NULL;
}

/* A slot for the queue: a free one, or the least recently used.  Under the mutex. */
static QueueHeadSlot *
take_slot(QueueHeads *heads, const char *task_queue)
{
	QueueHeadSlot *victim = &heads->slots[0];

	for (int i = 0; i < DURABLE_QUEUE_HEADS; i++)
	{
		QueueHeadSlot *slot = &heads->slots[i];

		if (!OidIsValid(slot->dboid))
		{
			victim = slot;
			break;
		}
		if (slot->last_used < victim->last_used)
			victim = slot;
	}
	victim->dboid = MyDatabaseId;
	strlcpy(victim->task_queue, task_queue, NAMEDATALEN);
	return victim;
}

/*
 * Where a claim from the queue may start: fills *read (the head, the
 * version it was read at, the claim's start time) and returns true when the
 * claim may start at read->head, false when it is to start at the first
 * entry (no head yet, a mixed queue, or this backend's periodic claim from
 * the first entry).  Called once the claim holds its snapshot.
 */
bool
queue_head_read(const char *task_queue, QueueHeadRead *read)
{
	QueueHeads *heads = &durable_shared->queue_heads;
	QueueHeadSlot *slot;
	bool		usable = false;

	read->started_at = GetCurrentTimestamp();
	read->head = DT_NOBEGIN;
	read->window = WINDOW_MIN;
	if (!keeps_head(task_queue))
	{
		read->version = 0;
		return false;
	}
	SpinLockAcquire(&heads->mutex);
	read->version = heads->version;
	slot = find_slot(heads, task_queue);
	if (slot != NULL)
	{
		slot->last_used = ++heads->uses;
		read->head = slot->head;
		usable = !slot->mixed_priorities && slot->head != DT_NOBEGIN;
	}
	SpinLockRelease(&heads->mutex);
	if (!is_mine(task_queue))
		return false;
	read->window = mine.window;
	return usable && read->started_at - mine.full_scan_at < FULL_SCAN_EVERY;
}

/*
 * Adapts how far past the head this backend's claims look first: wider when
 * that span held nothing to claim, narrower when it did (few entries
 * looked at, most of them claimable).
 */
void
queue_head_window_held(const char *task_queue, bool claimed)
{
	if (!is_mine(task_queue))
		return;
	if (claimed)
		mine.window = Max(WINDOW_MIN, mine.window * 3 / 4);
	else
		mine.window = Min(WINDOW_MAX, mine.window * 4);
}

/*
 * What a claim that started as read found: seen_live is false when every
 * entry it met was dead (or it met none); else first_ready_at and
 * first_priority are those of the first entry it met that was not known
 * dead.  from_first: the claim started at the queue's first entry; else at
 * the head, and it looked at entries before "until" (DT_NOEND: all those of
 * priority 0).
 */
void
queue_head_seen(const char *task_queue, const QueueHeadRead *read, bool from_first,
				TimestampTz until, bool seen_live, TimestampTz first_ready_at,
				int32 first_priority)
{
	QueueHeads *heads = &durable_shared->queue_heads;
	QueueHeadSlot *slot;
	TimestampTz target = Min(read->started_at - HEAD_SLACK, until);

	if (!keeps_head(task_queue))
		return;
	if (seen_live)
		target = Min(target, first_ready_at);
	if (from_first)
	{
		if (!is_mine(task_queue))
		{
			mine.dboid = MyDatabaseId;
			strlcpy(mine.task_queue, task_queue, NAMEDATALEN);
			mine.window = WINDOW_MIN;
		}
		mine.full_scan_at = read->started_at;
	}
	SpinLockAcquire(&heads->mutex);
	slot = find_slot(heads, task_queue);
	if (from_first && seen_live && first_priority != 0)
	{
		/* a higher priority in front (or a lower one only): no head */
		if (slot == NULL)
			slot = take_slot(heads, task_queue);
		slot->mixed_priorities = true;
		slot->head = DT_NOBEGIN;
		slot->last_used = ++heads->uses;
	}
	else if (from_first && slot != NULL && target < slot->head)
	{
		/* something is live before the head: lower it, and stop raises */
		slot->head = target;
		heads->version++;
	}
	else if (read->version == heads->version)
	{
		if (slot == NULL && from_first)
		{
			slot = take_slot(heads, task_queue);
			slot->mixed_priorities = false;
			slot->head = target;
			slot->last_used = ++heads->uses;
		}
		else if (slot != NULL && (from_first || !slot->mixed_priorities))
		{
			if (from_first)
				slot->mixed_priorities = false;
			if (target > slot->head)
				slot->head = target;
		}
	}
	SpinLockRelease(&heads->mutex);
}

/*
 * A ready entry of task_queue is in the index, and its transaction has not
 * committed yet: one that may sort before the head lowers it or stops
 * raises in progress (see the file's header).
 */
void
queue_head_entry_added(const char *task_queue, int32 priority, TimestampTz ready_at)
{
	QueueHeads *heads = &durable_shared->queue_heads;
	QueueHeadSlot *slot;
	bool		old;

	if (!keeps_head(task_queue))
		return;
	old = ready_at < GetCurrentTimestamp() - HEAD_SLACK;
	SpinLockAcquire(&heads->mutex);
	slot = find_slot(heads, task_queue);
	if (slot != NULL && priority != 0)
	{
		slot->mixed_priorities = true;
		slot->head = DT_NOBEGIN;
		heads->version++;
	}
	else if (slot != NULL && ready_at < slot->head)
	{
		slot->head = ready_at;
		heads->version++;
	}
	else if (old || priority != 0)
		heads->version++;
	SpinLockRelease(&heads->mutex);
}
