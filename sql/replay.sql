-- Replay semantics: catching errors, compensation, failures, durable.now(),
-- writes from workflow code, non-determinism and retry_workflow_task().

-- Test helper: wait until the worker has recorded a workflow task failure.
CREATE FUNCTION wait_task_failure(id text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE cause text;
BEGIN
  FOR i IN 1..1000 LOOP
    SELECT task_failure->>'cause' INTO cause FROM durable.describe(id);
    IF cause IS NOT NULL THEN RETURN cause; END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RETURN 'no task failure';
END $$;

-- A handler that catches everything cannot swallow the engine's suspension:
-- the run still waits for the activity, and the code after the handler
-- never runs early.
CREATE FUNCTION swallow(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
  BEGIN
    r := durable.activity('step', input, task_queue => 'replay');
  EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('swallowed', SQLERRM);
  END;
  RETURN jsonb_build_object('got', r);
END $$;
SELECT durable.start_workflow('swallow', '{}', workflow_id => 'swallow-1');
SELECT task_token AS token FROM durable.poll_activity('replay', wait => '10 s') \gset
SELECT status FROM durable.describe('swallow-1');
SELECT durable.complete_activity(:'token', '"done"');
SELECT durable.result('swallow-1', wait => '10 s');

-- Settings the code's function sets (ALTER FUNCTION ... SET) hold from the
-- next task on, in a backend that ran the function before: what the engine
-- keeps of a function across calls goes when any function changes.
CREATE FUNCTION setting_seen(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE seen jsonb := '[]';
BEGIN
  PERFORM durable.activity('step', '1', task_queue => 'replay');
  seen := seen || to_jsonb(current_setting('work_mem'));
  PERFORM durable.activity('step', '2', task_queue => 'replay');
  RETURN seen || to_jsonb(current_setting('work_mem'));
END $$;
SELECT durable.start_workflow('setting_seen', '{}', workflow_id => 'setting-1');
SELECT task_token AS token FROM durable.poll_activity('replay', wait => '10 s') \gset
-- this backend runs the code's next task
SELECT durable.complete_activity(:'token');
ALTER FUNCTION setting_seen(jsonb) SET work_mem = '1234kB';
SELECT task_token AS token FROM durable.poll_activity('replay', wait => '10 s') \gset
SELECT durable.complete_activity(:'token');
SELECT durable.result('setting-1', wait => '10 s');

-- Code that queries another run of its own function: the query replays that
-- run inside this run's call, each with a call of its own (a SQL function
-- keeps the state of the call that is running with the call's information).
CREATE FUNCTION asks_twin(input jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT durable.on_query('me', input->'me');
  SELECT jsonb_build_object('twin', CASE WHEN input ? 'twin' THEN durable.query(input->>'twin', 'me') END,
                            'a', durable.activity('a', input->'me', 'twins'));
$$;
SELECT durable.start_workflow('asks_twin', '{"me": "one"}', workflow_id => 'twin-1');
SELECT task_token AS token, input FROM durable.poll_activity('twins', wait => '10 s') \gset
SELECT durable.start_workflow('asks_twin', '{"me": "two", "twin": "twin-1"}', workflow_id => 'twin-2');
SELECT task_token AS token2, input FROM durable.poll_activity('twins', wait => '10 s') \gset
SELECT durable.complete_activity(:'token2', '"a2"');
SELECT durable.result('twin-2', wait => '10 s');
SELECT durable.complete_activity(:'token', '"a1"');
SELECT durable.result('twin-1', wait => '10 s');

-- A failed activity raises DU001 inside the workflow, which can compensate.
CREATE FUNCTION book_trip(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE hotel jsonb;
BEGIN
  hotel := durable.activity('book_hotel', input, task_queue => 'replay');
  BEGIN
    PERFORM durable.activity('book_flight', input, task_queue => 'replay',
                             options => '{"retry": {"maximum_attempts": 1}}');
  EXCEPTION WHEN SQLSTATE 'DU001' THEN
    PERFORM durable.activity('cancel_hotel', hotel, task_queue => 'replay');
    RETURN jsonb_build_object('booked', false, 'reason', SQLERRM);
  END;
  RETURN jsonb_build_object('booked', true);
END $$;
SELECT durable.start_workflow('book_trip', '{"to": "Lisbon"}', workflow_id => 'trip-1');
SELECT task_token AS token, activity FROM durable.poll_activity('replay', wait => '10 s') \gset
\echo :activity
SELECT durable.complete_activity(:'token', '{"hotel": 12}');
SELECT task_token AS token, activity FROM durable.poll_activity('replay', wait => '10 s') \gset
\echo :activity
SELECT durable.fail_activity(:'token', 'no seats left');
SELECT task_token AS token, activity, input FROM durable.poll_activity('replay', wait => '10 s') \gset
\echo :activity :input
SELECT durable.complete_activity(:'token');
SELECT durable.result('trip-1', wait => '10 s');

-- An uncaught error fails the run with its message, SQLSTATE and detail.
CREATE FUNCTION boom(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'order % is invalid', input->>'order'
    USING ERRCODE = 'check_violation', DETAIL = 'amount must be positive';
END $$;
SELECT durable.start_workflow('boom', '{"order": 42}', workflow_id => 'boom-1');
SELECT durable.result('boom-1', wait => '10 s');
SELECT status, failure->>'message' AS message, failure->>'sqlstate' AS sqlstate,
       failure->>'detail' AS detail
  FROM durable.describe('boom-1');
SELECT event_type FROM durable.history('boom-1');

-- A workflow returning SQL NULL completes with a NULL result.
CREATE FUNCTION nothing(input jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
SELECT durable.start_workflow('nothing', '{}', workflow_id => 'nothing-1');
SELECT durable.result('nothing-1', wait => '10 s') IS NULL AS null_result;

-- durable.now() is the time of the workflow task that first reached it, the
-- same on every replay.
CREATE FUNCTION clock(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE t1 timestamptz; t2 timestamptz;
BEGIN
  t1 := durable.now();
  PERFORM durable.activity('tick', NULL, task_queue => 'replay');
  t2 := durable.now();
  PERFORM durable.activity('tick', NULL, task_queue => 'replay');
  RETURN jsonb_build_object('t1', t1, 't2', t2, 't3', durable.now());
END $$;
SELECT durable.start_workflow('clock', '{}', workflow_id => 'clock-1');
SELECT task_token AS token FROM durable.poll_activity('replay', wait => '10 s') \gset
SELECT pg_sleep(0.05);
SELECT durable.complete_activity(:'token');
SELECT task_token AS token FROM durable.poll_activity('replay', wait => '10 s') \gset
SELECT pg_sleep(0.05);
SELECT durable.complete_activity(:'token');
SELECT durable.result('clock-1', wait => '10 s') AS times \gset
-- the three times are those of the three workflow tasks, in order
SELECT array_agg(event_time ORDER BY event_id) = ARRAY[(:'times'::jsonb->>'t1')::timestamptz,
                                                       (:'times'::jsonb->>'t2')::timestamptz,
                                                       (:'times'::jsonb->>'t3')::timestamptz] AS same_times
  FROM durable.history('clock-1') WHERE event_type = 'WorkflowTaskCompleted';
SELECT (:'times'::jsonb->>'t1')::timestamptz < (:'times'::jsonb->>'t2')::timestamptz AS advancing;

-- Workflow code is read-only: a write fails the workflow task (not the run)
-- with a hint to use an activity.
CREATE TABLE audit (note text);
CREATE FUNCTION writer(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.audit VALUES ('from workflow');
  RETURN '{}';
END $$;
SELECT durable.start_workflow('writer', '{}', workflow_id => 'writer-1');
SELECT wait_task_failure('writer-1');
SELECT status, task_failure->>'cause' AS cause, task_failure->'failure'->>'message' AS message,
       task_failure->'failure'->>'hint' AS hint
  FROM durable.describe('writer-1');
SELECT count(*) FROM audit;

-- Non-determinism: the function is edited while a run is open.
CREATE FUNCTION evolving(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity('first', NULL, task_queue => 'replay');
  RETURN jsonb_build_object('version', 1);
END $$;
SELECT durable.start_workflow('evolving', '{}', workflow_id => 'evolving-1');
SELECT task_token AS token, activity FROM durable.poll_activity('replay', wait => '10 s') \gset
\echo :activity
CREATE OR REPLACE FUNCTION evolving(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity('renamed', NULL, task_queue => 'replay');
  RETURN jsonb_build_object('version', 2);
END $$;
SELECT history_length AS before_length FROM durable.describe('evolving-1') \gset
SELECT durable.complete_activity(:'token', '"ok"');
SELECT wait_task_failure('evolving-1');
SELECT status, task_failure->>'cause' AS cause, task_failure->'failure'->>'detail' AS detail
  FROM durable.describe('evolving-1');
-- the history is untouched: the completion and the failure notice only
SELECT event_id, event_type FROM durable.history('evolving-1') WHERE event_id > :before_length - 2;
-- retrying without a fix fails the same way; after the fix it completes
SELECT durable.retry_workflow_task('evolving-1');
SELECT wait_task_failure('evolving-1');
SELECT count(*) AS failures FROM durable.history('evolving-1') WHERE event_type = 'WorkflowTaskFailed';
CREATE OR REPLACE FUNCTION evolving(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity('first', NULL, task_queue => 'replay');
  RETURN jsonb_build_object('version', 3);
END $$;
SELECT durable.retry_workflow_task('evolving-1');
SELECT durable.result('evolving-1', wait => '10 s');
SELECT durable.retry_workflow_task('swallow-1');

-- Code that no longer reaches a recorded command is non-deterministic too.
CREATE FUNCTION shrinking(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity_async('a', NULL, task_queue => 'replay');
  PERFORM durable.activity('b', NULL, task_queue => 'replay');
  RETURN '{}';
END $$;
SELECT durable.start_workflow('shrinking', '{}', workflow_id => 'shrinking-1');
CREATE TEMP TABLE shrinking_tasks AS
  SELECT * FROM durable.poll_activity('replay', wait => '10 s', max_tasks => 2);
SELECT activity FROM shrinking_tasks ORDER BY activity;
CREATE OR REPLACE FUNCTION shrinking(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN '{}';
END $$;
SELECT bool_and(durable.complete_activity(task_token)) FROM shrinking_tasks;
SELECT wait_task_failure('shrinking-1');
SELECT task_failure->>'cause' AS cause, task_failure->'failure'->>'detail' AS detail
  FROM durable.describe('shrinking-1');

-- Workflow code that never returns is stopped by durable.workflow_task_timeout:
-- the task fails, the run stays open.
ALTER SYSTEM SET durable.workflow_task_timeout = '300ms';
SELECT pg_reload_conf();
CREATE FUNCTION spin(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  LOOP
  END LOOP;
END $$;
SELECT durable.start_workflow('spin', '{}', workflow_id => 'spin-1');
SELECT wait_task_failure('spin-1');
SELECT status, task_failure->'failure'->>'sqlstate' AS sqlstate FROM durable.describe('spin-1');
-- A query replays such code under the caller's own statement_timeout, which
-- ends the query (it does not answer from what the code declared so far).
CREATE FUNCTION spin_answering(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.on_query('state', '"spinning"');
  LOOP
  END LOOP;
END $$;
SELECT durable.start_workflow('spin_answering', '{}', workflow_id => 'spin-2');
SELECT wait_task_failure('spin-2');
SET statement_timeout = '200ms';
SELECT durable.query('spin-2', 'state');
RESET statement_timeout;
ALTER SYSTEM RESET durable.workflow_task_timeout;
SELECT pg_reload_conf();

-- A call the history answers does not evaluate its input and options again:
-- where every function in a call's arguments is built in and not volatile,
-- its plan asks the history first (src/replayed_calls.c).
CREATE TABLE replay_args (x int, j jsonb);
EXPLAIN (VERBOSE, COSTS OFF)
SELECT durable.activity('a', to_jsonb(x), 'q'),
       durable.sql_activity_async('f', jsonb_build_object('x', greatest(x, 2), 'k', j['k']))
  FROM replay_args;
-- Not where there is nothing to skip (an input at hand), nor where an
-- argument may issue commands of its own, or must run anyway: a function of
-- the user's, one of durable's, a volatile one, a domain's check, a
-- subquery.
CREATE FUNCTION twice(v jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN v || v;
END $$;
CREATE DOMAIN replay_object AS jsonb CHECK (jsonb_typeof(VALUE) = 'object');
EXPLAIN (VERBOSE, COSTS OFF)
SELECT durable.activity('a', j, 'q'),
       durable.activity('a', twice(to_jsonb(x))),
       durable.activity('a', durable.activity('b')),
       durable.activity_async('a', to_jsonb(random())),
       durable.activity('a', jsonb_build_object('x', x)::replay_object),
       durable.activity('a', (SELECT to_jsonb(count(*)) FROM replay_args))
  FROM replay_args;
-- So a replayed call's input may fail to evaluate now: the relation it
-- names is gone by the time the run replays it.
CREATE TABLE replay_marker ();
CREATE FUNCTION marked(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE first jsonb; second jsonb;
BEGIN
  first := durable.activity('first', to_jsonb((input->>'table')::regclass::text),
                            task_queue => 'replay');
  second := durable.activity('second', NULL, task_queue => 'replay');
  RETURN jsonb_build_array(first, second);
END $$;
SELECT durable.start_workflow('marked', '{"table": "public.replay_marker"}',
                              workflow_id => 'marked-1');
SELECT task_token AS token, input FROM durable.poll_activity('replay', wait => '10 s') \gset
\echo :input
SELECT durable.complete_activity(:'token', '1');
SELECT task_token AS token, activity FROM durable.poll_activity('replay', wait => '10 s') \gset
\echo :activity
DROP TABLE replay_marker;
SELECT durable.complete_activity(:'token', '2');
SELECT durable.result('marked-1', wait => '10 s');
-- A call in another's input keeps its place, even under the same name and
-- in a function that says it is STABLE.
CREATE FUNCTION inner_step(v jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN durable.activity('step', v, task_queue => 'replay');
END $$;
CREATE FUNCTION nested(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('step', public.inner_step(input), task_queue => 'replay');
END $$;
SELECT durable.start_workflow('nested', '{"n": 1}', workflow_id => 'nested-1');
SELECT task_token AS token, input FROM durable.poll_activity('replay', wait => '10 s') \gset
\echo :input
SELECT durable.complete_activity(:'token', '2');
SELECT task_token AS token, input FROM durable.poll_activity('replay', wait => '10 s') \gset
\echo :input
SELECT durable.complete_activity(:'token', '3');
SELECT durable.result('nested-1', wait => '10 s');

-- A history row of a type this version of durable does not know (a label
-- added to durable.event_type by hand): replaying the run says so.
ALTER TYPE durable.event_type ADD VALUE 'MarkerRecorded';
INSERT INTO durable.recorded_events (run_id, event_id, event_time, event_type, details)
SELECT run_id, next_event_id, now(), 'MarkerRecorded', '{}'
  FROM durable.runs WHERE workflow_id = 'twin-1';
SELECT durable.query('twin-1', 'me');
DELETE FROM durable.recorded_events WHERE event_type = 'MarkerRecorded';
SELECT durable.query('twin-1', 'me');
