/*
 * durable--0.1.sql: the schema of durable execution.
 *
 * A workflow run is a row of durable.runs; everything that ever happened to it
 * is an append-only list of events in durable.history; the activities it is
 * waiting for are rows of durable.activity_tasks until they complete.  The
 * background worker replays a run's function against its history whenever the
 * run has a workflow task pending (runs.task_pending, and a row in its queue,
 * durable.due_tasks).
 *
 * Every per-run table carries run_id and every hot query stays inside one run
 * or one task queue, so no query cost grows with the number of closed runs.
 *
 * Privileges: the state tables are written only by the extension's C
 * functions, which switch to the extension owner for their internal queries.
 * Roles may read their own runs (row-level security on the owner role); the
 * token secret is readable by nobody but the owner.
 */

\echo Use "CREATE EXTENSION durable" to load this file. \quit

-- The states of runs, activity tasks and timers, as enums rather than text
-- with CHECK constraints: the same guard on the values, but PostgreSQL 15
-- would parse a CHECK's expression again at every INSERT and UPDATE of these
-- hot tables.
CREATE TYPE durable.run_status AS ENUM
    ('running', 'completed', 'failed', 'canceled', 'terminated', 'timed_out');
CREATE TYPE durable.task_state AS ENUM
    ('scheduled', 'started', 'backoff', 'completed', 'failed');
CREATE TYPE durable.timer_kind AS ENUM
    ('timer', 'retry', 'activity_timeout', 'execution_timeout');
CREATE TYPE durable.activity_timeout AS ENUM
    ('schedule_to_start', 'start_to_close', 'schedule_to_close', 'heartbeat');
-- The events a history records, Temporal's names: 4 bytes on each history
-- row instead of the name's 13 to 28 (durable.history shows them as text).
CREATE TYPE durable.event_type AS ENUM
    ('WorkflowExecutionStarted', 'WorkflowTaskCompleted', 'WorkflowTaskFailed',
     'ActivityTaskScheduled', 'ActivityTaskCompleted', 'ActivityTaskFailed',
     'ActivityTaskTimedOut', 'ActivityTaskCancelRequested', 'ActivityTaskCanceled',
     'TimerStarted', 'TimerFired', 'TimerCanceled', 'WorkflowExecutionSignaled',
     'WorkflowExecutionCompleted', 'WorkflowExecutionFailed', 'WorkflowExecutionTimedOut');

-- Runs: one row per workflow execution.  The hot path locks a run and
-- writes it (next_event_id, a workflow task's outcome) without statements
-- (src/rows.c: index probe, tuple lock, heap update and index entries, as
-- the executor would): triggers or rules on this table would not see those.
-- Workflow ids and task queue names are identifiers, compared as bytes
-- (COLLATE "C", here and in the tables below): a run update or a task row
-- that adds index entries compares them at every level of the index, and
-- under a linguistic collation each comparison would go through strcoll().
-- Equality is the same under any deterministic collation; sorting by them
-- is byte order.
CREATE TABLE durable.runs (
    run_id          pg_catalog.uuid PRIMARY KEY,
    workflow_id     pg_catalog.text COLLATE pg_catalog."C" NOT NULL,
    -- the workflow function, as regprocedure text (schema-qualified), so that
    -- it survives pg_dump and is resolved again at every workflow task
    workflow        pg_catalog.text NOT NULL,
    owner           pg_catalog.regrole NOT NULL,
    input           pg_catalog.jsonb NOT NULL,
    -- closed_at is set when, and only when, status leaves 'running' (by
    -- the same UPDATE)
    status          durable.run_status NOT NULL DEFAULT 'running',
    -- a workflow task is due: something happened that the code has not seen
    task_pending    pg_catalog.bool NOT NULL DEFAULT true,
    -- since when it is pending: the worker takes the oldest first
    task_due_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- the last workflow task failed (non-determinism, a write, a lost
    -- privilege): the run is parked until durable.retry_workflow_task()
    task_failure    pg_catalog.jsonb,
    next_event_id   pg_catalog.int8 NOT NULL DEFAULT 1,
    result          pg_catalog.jsonb,
    failure         pg_catalog.jsonb,
    started_at      pg_catalog.timestamptz NOT NULL,
    closed_at       pg_catalog.timestamptz,
    -- a later run of the same workflow id was started (this one had closed)
    superseded      pg_catalog.bool NOT NULL DEFAULT false
)
-- Half of each page is left free when runs are inserted, so that a run's
-- first updates (its first workflow task, its counter) find room for the
-- new version on the same page and are heap-only: no new index entries, and
-- no lock record for a move to another page.  The price is space: about
-- twice the bytes per run.  ALTER TABLE durable.runs SET (fillfactor = 100)
-- to trade that back.
WITH (fillfactor = 50);

-- A workflow id names at most one open run; closed runs keep their id.  The
-- unique entry is each id's latest run, open or closed: a start marks the
-- closed run before it superseded.  So a run's close, which changes its
-- status, changes no indexed column (nor a partial index's predicate) and is
-- heap-only too; and "the open run, else the latest" is one index probe.
CREATE UNIQUE INDEX runs_latest_workflow_id ON durable.runs (workflow_id)
    WHERE NOT superseded;
CREATE INDEX runs_workflow_id ON durable.runs (workflow_id, started_at);

-- The worker's queue of workflow tasks: a row for each run with one due
-- (task_pending, not parked, running), oldest first, so that under a load
-- it cannot keep up with, no run waits for ever behind newer ones.  A table
-- of its own, not a partial index on durable.runs: a run entering or
-- leaving the queue would change an indexed column of its row, and that
-- update could not be heap-only (a new entry in every index of the table).
-- Written with the run's row, under its lock.
CREATE TABLE durable.due_tasks (
    run_id          pg_catalog.uuid PRIMARY KEY,
    due_at          pg_catalog.timestamptz NOT NULL,
    -- where the run's row was when it was queued (the version the queuing
    -- statement wrote): only a hint for the worker, which looks there before
    -- asking the key, and takes the row only if it is the run's
    run_row         pg_catalog.tid
);
-- Not deduplicated: the runs started by one transaction share a due_at, and
-- a deduplicated index keeps their entries in posting lists, one index
-- tuple for hundreds of runs, which a scan can mark dead only once every
-- run in it has left the queue.  Until then each batch of the worker walked
-- again the entries of the runs its batches had taken out before.
CREATE INDEX due_tasks_due_at ON durable.due_tasks (due_at) WITH (deduplicate_items = off);

-- History: the append-only event log of each run, Temporal's event names,
-- as the engine records it.  The engine appends rows the way PostgreSQL
-- writes its catalogs (heap and index inserts, no INSERT statement): a
-- trigger or rule on this table would not see them.  Two events that only
-- ever come right before another are kept on its row, which takes the
-- event id after theirs: an activity attempt's ActivityTaskStarted
-- (written when the attempt ends, as Temporal does) on the row of the event
-- that ended the attempt (attempt_started_at, attempt_worker), and a
-- WorkflowTaskCompleted on the row of the first event its task appended
-- after it, at the same time (task_new_commands: its new_commands).  And an
-- ActivityTaskScheduled records of its retry policy only what differs from
-- the defaults (nothing for the default policy: about 110 bytes less per
-- activity).  Read durable.history, which shows every event, whole.
CREATE TABLE durable.recorded_events (
    run_id          pg_catalog.uuid NOT NULL,
    event_id        pg_catalog.int8 NOT NULL,
    event_time      pg_catalog.timestamptz NOT NULL,
    event_type      durable.event_type NOT NULL,
    details         pg_catalog.jsonb NOT NULL,
    attempt_started_at pg_catalog.timestamptz,
    attempt_worker  pg_catalog.text,
    task_new_commands pg_catalog.int4,
    PRIMARY KEY (run_id, event_id)
);

-- Every event of every run, one row each: the recorded ones, and those kept
-- on the rows after them.
CREATE VIEW durable.history WITH (security_invoker = true) AS
    SELECT e.run_id, e.event_id, e.event_time, e.event_type::pg_catalog.text AS event_type,
           CASE WHEN e.event_type = 'ActivityTaskScheduled'
                -- the defaults of src/activity_options.c, and what differs
                THEN e.details || pg_catalog.jsonb_build_object('retry_policy',
                         '{"initial_interval": 1, "backoff_coefficient": 2,
                           "maximum_interval": 100, "maximum_attempts": 0}'::pg_catalog.jsonb
                         || COALESCE(e.details -> 'retry_policy', '{}'))
                ELSE e.details END AS details
      FROM durable.recorded_events e
    UNION ALL
    SELECT e.run_id, e.event_id - 1, e.attempt_started_at, 'ActivityTaskStarted',
           pg_catalog.jsonb_build_object('handle', e.details -> 'handle',
                                         'attempt', e.details -> 'attempt',
                                         'worker', e.attempt_worker)
      FROM durable.recorded_events e
     WHERE e.attempt_started_at IS NOT NULL
    UNION ALL
    SELECT e.run_id, e.event_id - 1, e.event_time, 'WorkflowTaskCompleted',
           pg_catalog.jsonb_build_object('new_commands', e.task_new_commands)
      FROM durable.recorded_events e
     WHERE e.task_new_commands IS NOT NULL;

-- A task queue's name hashed to 4 bytes (FNV-1a of its bytes): the first
-- column of the ready tasks' index.  A claim compares its queue with every
-- entry it reads, and behind a name of no fixed length the index's other
-- columns would be found by walking each entry; rows whose names share a
-- hash are told apart by the name, on the row.
CREATE FUNCTION durable.task_queue_hash(task_queue pg_catalog.text) RETURNS pg_catalog.int4
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'durable_task_queue_hash';

-- Activity tasks: one row per scheduled activity until it completes or fails
-- for good, keyed by its run and "handle", the activity's sequence number in
-- its run (the value durable.activity_async() returns; a task token names
-- both).  No surrogate key: every new task and every claim would add an
-- entry to its index.  A row is claimed by poll_activity()
-- (status 'started'); a retried attempt goes back to 'scheduled' with a later
-- ready_at; a completion or failure that finds the run held by someone
-- else leaves the row 'completed' or 'failed' for the worker.  New rows are
-- inserted, claimed and, when their attempt ends, deleted without statements
-- (src/task_rows.c): no trigger or rule sees those.
CREATE TABLE durable.activity_tasks (
    run_id          pg_catalog.uuid NOT NULL,
    handle          pg_catalog.int4 NOT NULL,
    -- where the run's row was when the task was scheduled: the root of its
    -- versions' chain, where durable.runs' primary key points.  Only a hint
    -- for the completion, which looks there before asking the key, and takes
    -- the row only if it is the run's; NULL: not known.
    run_row         pg_catalog.tid,
    workflow_id     pg_catalog.text COLLATE pg_catalog."C" NOT NULL,
    activity        pg_catalog.text NOT NULL,
    task_queue      pg_catalog.text COLLATE pg_catalog."C" NOT NULL,
    task_queue_hash pg_catalog.int4 NOT NULL
        GENERATED ALWAYS AS (durable.task_queue_hash(task_queue)) STORED,
    input           pg_catalog.jsonb,
    -- what differs from the default policy ('{}': none; durable.history
    -- shows it whole)
    retry_policy    pg_catalog.jsonb NOT NULL,
    -- seconds: schedule_to_start, start_to_close, schedule_to_close, heartbeat
    timeouts        pg_catalog.jsonb NOT NULL DEFAULT '{}',
    priority        pg_catalog.int4 NOT NULL DEFAULT 0,
    attempt         pg_catalog.int4 NOT NULL DEFAULT 1,
    -- scheduled: ready for a poller at ready_at; started: claimed by one;
    -- backoff: failed, waiting for its retry timer; completed, failed: the
    -- attempt's result or failure (below) waits for the worker to record it
    -- (the run was held by someone else when it ended: see
    -- complete_activity)
    status          durable.task_state NOT NULL DEFAULT 'scheduled',
    scheduled_at    pg_catalog.timestamptz NOT NULL,
    ready_at        pg_catalog.timestamptz NOT NULL,
    started_at      pg_catalog.timestamptz,
    -- started: when the attempt's start_to_close runs out (NULL: it has
    -- none).  Kept here rather than as a timer: the claim writes the row
    -- anyway, and the attempt's end deletes or rewrites it.
    start_to_close_at pg_catalog.timestamptz,
    worker          pg_catalog.text,
    -- the last attempt's failure; failed: this attempt's, as reported
    last_failure    pg_catalog.jsonb,
    -- progress reported by durable.heartbeat_activity(), handed to the next
    -- attempt
    heartbeat_details pg_catalog.jsonb,
    last_heartbeat_at pg_catalog.timestamptz,
    cancel_requested pg_catalog.bool NOT NULL DEFAULT false,
    -- completed: the attempt's result; completed, failed: when it came (the
    -- order in which the worker records the ends it finds together)
    result          pg_catalog.jsonb,
    completed_at    pg_catalog.timestamptz,
    PRIMARY KEY (run_id, handle)
);

-- What poll_activity() reads: ready tasks of one queue (by its name's hash),
-- oldest first (those ready at the same time in the order of their rows).
CREATE INDEX activity_tasks_ready ON durable.activity_tasks
    (task_queue_hash, priority DESC, ready_at) WHERE status = 'scheduled';

-- Where pollers count running tasks of a queue (max_in_flight).
CREATE INDEX activity_tasks_in_flight ON durable.activity_tasks (task_queue)
    WHERE status = 'started';

-- Where the worker finds attempts' ends to record in their runs' histories.
CREATE INDEX activity_tasks_ended ON durable.activity_tasks (run_id)
    WHERE status IN ('completed', 'failed');

-- Where the worker finds attempts whose start_to_close ran out, as it finds
-- due timers.
CREATE INDEX activity_tasks_start_to_close ON durable.activity_tasks (start_to_close_at)
    WHERE start_to_close_at IS NOT NULL;

-- Per-queue controls, set with durable.configure_task_queue(); a queue with
-- no row has no limits.  tokens/refilled_at: the token bucket of
-- max_starts_per_second (burst: one second's worth, at least one start).
CREATE TABLE durable.task_queues (
    task_queue            pg_catalog.text COLLATE pg_catalog."C" PRIMARY KEY,
    max_in_flight         pg_catalog.int4 CHECK (max_in_flight > 0),
    max_starts_per_second pg_catalog.float8 CHECK (max_starts_per_second > 0),
    tokens                pg_catalog.float8 NOT NULL DEFAULT 0,
    refilled_at           pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- The timer queue: everything that must happen at a given time.  The worker
-- sleeps until the earliest fire_at (one index probe, whatever the number of
-- timers) and fires what is due in batches.
--   timer              a workflow timer (durable.sleep, timer_async, a
--                      wait_signal timeout): fires TimerFired for "handle"
--   retry              an activity's retry backoff: the task of "handle"
--                      becomes ready
--   activity_timeout   one of the timeouts ("timeout") of the activity of
--                      "handle", for its attempt "attempt" (0: all
--                      attempts); not start_to_close, kept on the task row
--                      (start_to_close_at)
--   execution_timeout  the run's execution_timeout: it closes as timed out
CREATE TABLE durable.timers (
    timer_id        pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          pg_catalog.uuid NOT NULL,
    kind            durable.timer_kind NOT NULL,
    handle          pg_catalog.int4,
    attempt         pg_catalog.int4,
    timeout         durable.activity_timeout,
    fire_at         pg_catalog.timestamptz NOT NULL,
    CHECK ((kind <> 'execution_timeout') = (handle IS NOT NULL)),
    CHECK ((kind = 'activity_timeout') = (timeout IS NOT NULL AND attempt IS NOT NULL))
);
CREATE INDEX timers_due ON durable.timers (fire_at);
CREATE INDEX timers_of_run ON durable.timers (run_id, handle);

-- The key that signs task tokens (HMAC-SHA256), so that a forged token is
-- told apart from a stale one without storing tokens.
CREATE TABLE durable.token_key (
    key             pg_catalog.bytea NOT NULL,
    singleton       pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (singleton)
);

-- Keep state in pg_dump output.
SELECT pg_catalog.pg_extension_config_dump('durable.runs', '');
SELECT pg_catalog.pg_extension_config_dump('durable.recorded_events', '');
SELECT pg_catalog.pg_extension_config_dump('durable.activity_tasks', '');
SELECT pg_catalog.pg_extension_config_dump('durable.timers', '');
SELECT pg_catalog.pg_extension_config_dump('durable.task_queues', '');
SELECT pg_catalog.pg_extension_config_dump('durable.token_key', '');
SELECT pg_catalog.pg_extension_config_dump('durable.due_tasks', '');

-- Each role sees the runs it owns (or is a member of the owner of).
ALTER TABLE durable.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE durable.recorded_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE durable.activity_tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE durable.timers ENABLE ROW LEVEL SECURITY;
CREATE POLICY runs_owner ON durable.runs FOR SELECT
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
CREATE POLICY recorded_events_owner ON durable.recorded_events FOR SELECT
    USING (EXISTS (SELECT FROM durable.runs r WHERE r.run_id = recorded_events.run_id));
CREATE POLICY activity_tasks_owner ON durable.activity_tasks FOR SELECT
    USING (EXISTS (SELECT FROM durable.runs r WHERE r.run_id = activity_tasks.run_id));
CREATE POLICY timers_owner ON durable.timers FOR SELECT
    USING (EXISTS (SELECT FROM durable.runs r WHERE r.run_id = timers.run_id));

REVOKE ALL ON ALL TABLES IN SCHEMA durable FROM PUBLIC;
GRANT SELECT ON durable.runs, durable.recorded_events, durable.history,
    durable.activity_tasks, durable.timers, durable.task_queues TO PUBLIC;
GRANT USAGE ON SCHEMA durable TO PUBLIC;

-- Internal: a random key, and the notice to the launcher that this database
-- now has the extension (it starts the database's worker at commit).
CREATE FUNCTION durable._random_key() RETURNS pg_catalog.bytea
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'durable_random_key';
CREATE FUNCTION durable._extension_created() RETURNS pg_catalog.void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_extension_created';
REVOKE ALL ON FUNCTION durable._random_key(), durable._extension_created() FROM PUBLIC;

INSERT INTO durable.token_key (key) VALUES (durable._random_key());
SELECT durable._extension_created();

------------------------------------------------------------------------------
-- Client API: start runs, wait for them, look at them.
------------------------------------------------------------------------------

CREATE FUNCTION durable.start_workflow(workflow pg_catalog.text,
                                       input pg_catalog.jsonb DEFAULT '{}',
                                       workflow_id pg_catalog.text DEFAULT NULL,
                                       execution_timeout pg_catalog.interval DEFAULT NULL)
    RETURNS pg_catalog.text
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_start_workflow';

CREATE FUNCTION durable.result(workflow_id pg_catalog.text,
                               wait pg_catalog.interval DEFAULT '0')
    RETURNS pg_catalog.jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_result';

-- result() for a long wait, as a procedure: called outside a transaction
-- block, it commits each look at the open run and waits with no snapshot
-- (see wait_for_activity_task below).  The result comes back as the INOUT
-- argument (leave it out of the CALL).
CREATE PROCEDURE durable.wait_for_result(workflow_id pg_catalog.text,
                                         wait pg_catalog.interval DEFAULT '30 s',
                                         INOUT result pg_catalog.jsonb DEFAULT NULL)
    LANGUAGE c AS 'MODULE_PATHNAME', 'durable_wait_for_result';

-- Signals: messages into a running workflow, received by durable.wait_signal().
CREATE FUNCTION durable.signal(workflow_id pg_catalog.text, signal pg_catalog.text,
                               payload pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_signal';

CREATE FUNCTION durable.signal_with_start(workflow pg_catalog.text,
                                          workflow_id pg_catalog.text,
                                          signal pg_catalog.text,
                                          payload pg_catalog.jsonb DEFAULT NULL,
                                          input pg_catalog.jsonb DEFAULT '{}')
    RETURNS pg_catalog.text
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_signal_with_start';

-- Queries: read a run's state as its code has reached it; writes nothing.
CREATE FUNCTION durable.query(workflow_id pg_catalog.text, query pg_catalog.text,
                              args pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_query';

-- Testing: fire a run's pending timers (sleeps, signal timeouts, retry
-- backoffs) now, instead of waiting for them.
CREATE FUNCTION durable.fire_timers(workflow_id pg_catalog.text)
    RETURNS pg_catalog.int4
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_fire_timers';

-- Operations: each database worker, its wakeups and its next timer.
CREATE FUNCTION durable.worker_status(OUT database pg_catalog.name, OUT pid pg_catalog.int4,
                                      OUT wakeups pg_catalog.int8,
                                      OUT sleeping_until pg_catalog.timestamptz)
    RETURNS SETOF record
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_worker_status';

CREATE FUNCTION durable.retry_workflow_task(workflow_id pg_catalog.text)
    RETURNS pg_catalog.bool
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_retry_workflow_task';

-- Runs visible to the current role, newest first.
CREATE VIEW durable.workflows WITH (security_invoker = true) AS
    SELECT r.workflow_id, r.run_id, r.workflow, r.status, r.owner,
           r.started_at, r.closed_at, r.task_failure IS NOT NULL AS task_failed
      FROM durable.runs r
     ORDER BY r.started_at DESC;
GRANT SELECT ON durable.workflows TO PUBLIC;

-- The run a workflow id names: its open run, else its latest closed one.
CREATE FUNCTION durable._run_of(workflow_id pg_catalog.text)
    RETURNS pg_catalog.uuid
    LANGUAGE plpgsql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_run uuid;
BEGIN
    SELECT r.run_id INTO found_run
      FROM durable.runs r
     WHERE r.workflow_id = _run_of.workflow_id AND NOT r.superseded;
    IF found_run IS NULL THEN
        RAISE EXCEPTION 'workflow "%" does not exist', _run_of.workflow_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List the workflows you can see with: SELECT * FROM durable.workflows;';
    END IF;
    RETURN found_run;
END
$$;

CREATE FUNCTION durable.history(workflow_id pg_catalog.text)
    RETURNS TABLE (event_id pg_catalog.int8, event_time pg_catalog.timestamptz,
                   event_type pg_catalog.text, details pg_catalog.jsonb)
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT h.event_id, h.event_time, h.event_type, h.details
      FROM durable.history h
     WHERE h.run_id = durable._run_of(history.workflow_id)
     ORDER BY h.event_id;
END;

CREATE TYPE durable.workflow_description AS (
    workflow_id         pg_catalog.text,
    run_id              pg_catalog.uuid,
    workflow            pg_catalog.text,
    status              pg_catalog.text,
    owner               pg_catalog.regrole,
    started_at          pg_catalog.timestamptz,
    closed_at           pg_catalog.timestamptz,
    history_length      pg_catalog.int8,
    pending_activities  pg_catalog.jsonb,
    pending_timers      pg_catalog.jsonb,
    task_failure        pg_catalog.jsonb,
    result              pg_catalog.jsonb,
    failure             pg_catalog.jsonb
);

CREATE FUNCTION durable.describe(workflow_id pg_catalog.text)
    RETURNS durable.workflow_description
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT r.workflow_id, r.run_id, r.workflow, r.status::pg_catalog.text, r.owner,
           r.started_at, r.closed_at, r.next_event_id - 1,
           COALESCE((SELECT jsonb_agg(jsonb_build_object(
                         'handle', t.handle, 'activity', t.activity,
                         'task_queue', t.task_queue, 'state', t.status,
                         'attempt', t.attempt, 'scheduled_at', t.scheduled_at,
                         'ready_at', t.ready_at, 'started_at', t.started_at,
                         'worker', t.worker, 'last_failure', t.last_failure,
                         'last_heartbeat_at', t.last_heartbeat_at,
                         'heartbeat_details', t.heartbeat_details,
                         'cancel_requested', t.cancel_requested)
                       || CASE WHEN t.start_to_close_at IS NOT NULL
                               THEN jsonb_build_object('start_to_close_at', t.start_to_close_at)
                               ELSE '{}' END
                       ORDER BY t.handle)
                       FROM durable.activity_tasks t
                      WHERE t.run_id = r.run_id), '[]'::jsonb),
           COALESCE((SELECT jsonb_agg(jsonb_build_object(
                         'kind', tm.kind, 'handle', tm.handle, 'fire_at', tm.fire_at)
                       ORDER BY tm.fire_at, tm.timer_id)
                       FROM durable.timers tm
                      WHERE tm.run_id = r.run_id AND tm.kind IN ('timer', 'execution_timeout')), '[]'::jsonb),
           r.task_failure, r.result, r.failure
      FROM durable.runs r
     WHERE r.run_id = durable._run_of(describe.workflow_id);
END;

------------------------------------------------------------------------------
-- Activity workers' API: claim, complete and fail activity tasks.
------------------------------------------------------------------------------

-- What a poll hands a worker: one claimed attempt of an activity.  (A named
-- type rather than RETURNS TABLE: PostgreSQL builds a TABLE function's row
-- type again from its catalog entry at every call.)
CREATE TYPE durable.activity_task AS (
    task_token          pg_catalog.text,
    workflow_id         pg_catalog.text,
    activity            pg_catalog.text,
    input               pg_catalog.jsonb,
    attempt             pg_catalog.int4,
    heartbeat_details   pg_catalog.jsonb
);

CREATE FUNCTION durable.poll_activity(task_queue pg_catalog.text,
                                      worker pg_catalog.text DEFAULT NULL,
                                      wait pg_catalog.interval DEFAULT '0',
                                      max_tasks pg_catalog.int4 DEFAULT 1)
    RETURNS SETOF durable.activity_task
    LANGUAGE c VOLATILE ROWS 1 AS 'MODULE_PATHNAME', 'durable_poll_activity';

-- poll_activity() for a long wait, as a procedure: called outside a
-- transaction block, it commits each look that finds nothing and waits with
-- no snapshot, so a worker idling on a queue does not hold back VACUUM.  The
-- task comes back as the INOUT arguments (leave them out of the CALL).
CREATE PROCEDURE durable.wait_for_activity_task(task_queue pg_catalog.text,
                                                worker pg_catalog.text DEFAULT NULL,
                                                wait pg_catalog.interval DEFAULT '30 s',
                                                INOUT task_token pg_catalog.text DEFAULT NULL,
                                                INOUT workflow_id pg_catalog.text DEFAULT NULL,
                                                INOUT activity pg_catalog.text DEFAULT NULL,
                                                INOUT input pg_catalog.jsonb DEFAULT NULL,
                                                INOUT attempt pg_catalog.int4 DEFAULT NULL,
                                                INOUT heartbeat_details pg_catalog.jsonb DEFAULT NULL)
    LANGUAGE c AS 'MODULE_PATHNAME', 'durable_wait_for_activity_task';

CREATE FUNCTION durable.complete_activity(task_token pg_catalog.text,
                                          result pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.bool
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_complete_activity';

CREATE FUNCTION durable.fail_activity(task_token pg_catalog.text,
                                      error pg_catalog.text,
                                      retryable pg_catalog.bool DEFAULT true,
                                      error_type pg_catalog.text DEFAULT NULL)
    RETURNS pg_catalog.bool
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_fail_activity';

-- Completes an attempt and claims the next ready tasks (without waiting) in
-- one round trip and one commit: a busy worker's loop.
CREATE FUNCTION durable.complete_and_poll(task_token pg_catalog.text,
                                          result pg_catalog.jsonb,
                                          task_queue pg_catalog.text,
                                          worker pg_catalog.text DEFAULT NULL,
                                          max_tasks pg_catalog.int4 DEFAULT 1)
    RETURNS SETOF durable.activity_task
    LANGUAGE c VOLATILE ROWS 1 AS 'MODULE_PATHNAME', 'durable_complete_and_poll';

-- Progress of a long activity; true means: stop (cancellation requested, or
-- this attempt is no longer current).
CREATE FUNCTION durable.heartbeat_activity(task_token pg_catalog.text,
                                           details pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.bool
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_heartbeat_activity';

-- The worker's answer to a cancellation request: the activity stopped.
CREATE FUNCTION durable.cancel_activity(task_token pg_catalog.text,
                                        details pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.bool
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_cancel_activity';

-- Polling hands out other roles' activity inputs: only roles granted it may.
REVOKE ALL ON PROCEDURE durable.wait_for_activity_task(pg_catalog.text, pg_catalog.text, pg_catalog.interval,
                                                     pg_catalog.text, pg_catalog.text, pg_catalog.text,
                                                     pg_catalog.jsonb, pg_catalog.int4, pg_catalog.jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION durable.poll_activity(pg_catalog.text, pg_catalog.text, pg_catalog.interval, pg_catalog.int4),
    durable.complete_activity(pg_catalog.text, pg_catalog.jsonb),
    durable.fail_activity(pg_catalog.text, pg_catalog.text, pg_catalog.bool, pg_catalog.text),
    durable.heartbeat_activity(pg_catalog.text, pg_catalog.jsonb),
    durable.cancel_activity(pg_catalog.text, pg_catalog.jsonb),
    durable.complete_and_poll(pg_catalog.text, pg_catalog.jsonb, pg_catalog.text,
                              pg_catalog.text, pg_catalog.int4) FROM PUBLIC;

-- Internal: tells backends, at commit, that queue limits changed (they
-- remember which queues have none, and claim from those without looking).
-- A trigger, so that rows restored by pg_restore or written by hand count too;
-- not on the token bucket's columns, which every start on a rate-limited
-- queue updates.
CREATE FUNCTION durable._task_queues_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'durable_task_queues_changed';
REVOKE ALL ON FUNCTION durable._task_queues_changed() FROM PUBLIC;
CREATE TRIGGER task_queues_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF task_queue, max_in_flight, max_starts_per_second
    ON durable.task_queues
    FOR EACH STATEMENT EXECUTE FUNCTION durable._task_queues_changed();

-- Per-queue controls; NULL lifts a limit.
CREATE FUNCTION durable.configure_task_queue(task_queue pg_catalog.text,
                                             max_in_flight pg_catalog.int4 DEFAULT NULL,
                                             max_starts_per_second pg_catalog.float8 DEFAULT NULL)
    RETURNS pg_catalog.void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF task_queue IS NULL OR task_queue = '' THEN
        RAISE EXCEPTION 'task queue name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_in_flight <= 0 OR max_starts_per_second <= 0 THEN
        RAISE EXCEPTION 'task queue limits must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to lift a limit.';
    END IF;
    IF max_in_flight IS NULL AND max_starts_per_second IS NULL THEN
        DELETE FROM durable.task_queues q WHERE q.task_queue = configure_task_queue.task_queue;
    ELSE
        INSERT INTO durable.task_queues AS q (task_queue, max_in_flight, max_starts_per_second, tokens)
        VALUES (configure_task_queue.task_queue, max_in_flight, max_starts_per_second,
                coalesce(greatest(max_starts_per_second, 1), 0))
        ON CONFLICT ON CONSTRAINT task_queues_pkey DO UPDATE
           SET max_in_flight = excluded.max_in_flight,
               max_starts_per_second = excluded.max_starts_per_second,
               tokens = least(q.tokens, coalesce(greatest(excluded.max_starts_per_second, 1), 0));
    END IF;
END
$$;
REVOKE ALL ON FUNCTION durable.configure_task_queue(pg_catalog.text, pg_catalog.int4, pg_catalog.float8) FROM PUBLIC;

-- Pollers waiting right now, by task queue (from shared memory).
CREATE FUNCTION durable._pollers_waiting(OUT task_queue pg_catalog.text, OUT pollers pg_catalog.int4)
    RETURNS SETOF record
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_pollers_waiting';

-- Each task queue's backlog, work in flight, limits and waiting pollers.
CREATE VIEW durable.task_queue_status WITH (security_invoker = true) AS
    WITH queues AS (
        SELECT t.task_queue FROM durable.activity_tasks t WHERE t.task_queue <> ''
        UNION SELECT q.task_queue FROM durable.task_queues q
        UNION SELECT w.task_queue FROM durable._pollers_waiting() w)
    SELECT qs.task_queue,
           (SELECT count(*) FROM durable.activity_tasks t
             WHERE t.task_queue_hash = durable.task_queue_hash(qs.task_queue)
               AND t.task_queue = qs.task_queue AND t.status = 'scheduled'
               AND t.ready_at <= pg_catalog.now()) AS backlog,
           (SELECT count(*) FROM durable.activity_tasks t
             WHERE t.task_queue = qs.task_queue AND t.status = 'started') AS in_flight,
           (SELECT count(*) FROM durable.activity_tasks t
             WHERE t.task_queue = qs.task_queue AND t.status = 'backoff') AS retrying,
           coalesce((SELECT w.pollers FROM durable._pollers_waiting() w
                      WHERE w.task_queue = qs.task_queue), 0) AS pollers_waiting,
           q.max_in_flight, q.max_starts_per_second
      FROM queues qs LEFT JOIN durable.task_queues q USING (task_queue)
     ORDER BY qs.task_queue;
GRANT SELECT ON durable.task_queue_status TO PUBLIC;

------------------------------------------------------------------------------
-- Deterministic API: called only from workflow code run by the worker.
------------------------------------------------------------------------------

-- Planner support of the four activity calls below (src/replayed_calls.c):
-- where a call's input or options have something to evaluate and all its
-- arguments are built-in, non-volatile expressions, its plan first asks the
-- history whether it has the call (and, for the awaited ones, its end) and
-- evaluates input and options only if not, replay having no use for them.
-- The four functions after it are what that plan calls.
CREATE FUNCTION durable._replayed_calls_support(pg_catalog.internal)
    RETURNS pg_catalog.internal
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'durable_replayed_calls_support';
CREATE FUNCTION durable._replayed(activity pg_catalog.text, task_queue pg_catalog.text,
                                  awaited pg_catalog.bool)
    RETURNS pg_catalog.bool
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_replayed';
CREATE FUNCTION durable._replayed_sql(function pg_catalog.text, awaited pg_catalog.bool)
    RETURNS pg_catalog.bool
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_replayed_sql';
CREATE FUNCTION durable._replayed_result()
    RETURNS pg_catalog.jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_replayed_result';
CREATE FUNCTION durable._replayed_handle()
    RETURNS pg_catalog.int8
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_replayed_handle';

CREATE FUNCTION durable.activity_async(activity pg_catalog.text,
                                       input pg_catalog.jsonb DEFAULT NULL,
                                       task_queue pg_catalog.text DEFAULT 'default',
                                       options pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.int8
    LANGUAGE c VOLATILE SUPPORT durable._replayed_calls_support
    AS 'MODULE_PATHNAME', 'durable_activity_async';

CREATE FUNCTION durable.activity(activity pg_catalog.text,
                                 input pg_catalog.jsonb DEFAULT NULL,
                                 task_queue pg_catalog.text DEFAULT 'default',
                                 options pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    LANGUAGE c VOLATILE SUPPORT durable._replayed_calls_support
    AS 'MODULE_PATHNAME', 'durable_activity';

-- A SQL activity: a function (jsonb) RETURNS jsonb that the worker runs itself,
-- as the workflow's owner, its effects committed with its completion.
CREATE FUNCTION durable.sql_activity_async(function pg_catalog.text,
                                           input pg_catalog.jsonb DEFAULT NULL,
                                           options pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.int8
    LANGUAGE c VOLATILE SUPPORT durable._replayed_calls_support
    AS 'MODULE_PATHNAME', 'durable_sql_activity_async';

CREATE FUNCTION durable.sql_activity(function pg_catalog.text,
                                     input pg_catalog.jsonb DEFAULT NULL,
                                     options pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    LANGUAGE c VOLATILE SUPPORT durable._replayed_calls_support
    AS 'MODULE_PATHNAME', 'durable_sql_activity';

CREATE FUNCTION durable.await(handle pg_catalog.int8)
    RETURNS pg_catalog.jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_await';

CREATE FUNCTION durable.await_all(handles pg_catalog.int8[])
    RETURNS pg_catalog.jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_await_all';

CREATE FUNCTION durable.now()
    RETURNS pg_catalog.timestamptz
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_now';

-- Cancels an activity (the worker learns it by its heartbeat) or a timer.
CREATE FUNCTION durable.cancel(handle pg_catalog.int8)
    RETURNS pg_catalog.void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_cancel';

CREATE FUNCTION durable.await_any(handles pg_catalog.int8[])
    RETURNS pg_catalog.int8
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_await_any';

CREATE FUNCTION durable.timer_async(duration pg_catalog.interval)
    RETURNS pg_catalog.int8
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_timer_async';

CREATE FUNCTION durable.sleep(duration pg_catalog.interval)
    RETURNS pg_catalog.void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_sleep';

CREATE FUNCTION durable.sleep_until(fire_at pg_catalog.timestamptz)
    RETURNS pg_catalog.void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_sleep_until';

CREATE FUNCTION durable.wait_signal(signal pg_catalog.text,
                                    timeout pg_catalog.interval DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_wait_signal';

-- Declares, from this point of the code on, the answer to a query: "answer"
-- itself, or handler(answer, args) when a handler function is named.
CREATE FUNCTION durable.on_query(query pg_catalog.text, answer pg_catalog.jsonb,
                                 handler pg_catalog.text DEFAULT NULL)
    RETURNS pg_catalog.void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'durable_on_query';
