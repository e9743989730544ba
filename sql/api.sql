-- The core API end to end: start, poll, complete, fan out, fan in, result,
-- history, describe, the workflows view.  The worker is the real one.
CREATE FUNCTION greet(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE a jsonb; h bigint[]; parts jsonb;
BEGIN
  a := durable.activity('lookup_user', input);
  h := ARRAY[durable.activity_async('render', a || '{"lang":"en"}'),
             durable.activity_async('render', a || '{"lang":"fr"}')];
  parts := durable.await_all(h);
  RETURN jsonb_build_object('user', a, 'greetings', parts);
END $$;

-- the worker of this database is running and says what it is (it starts
-- when CREATE EXTENSION commits; give it a moment on a slow machine)
DO $$
BEGIN
  FOR i IN 1..500 LOOP
    EXIT WHEN EXISTS (SELECT FROM pg_stat_activity
                       WHERE datname = current_database() AND backend_type = 'durable worker');
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT backend_type, application_name FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'durable worker';

SELECT durable.start_workflow('greet', '{"id": 7}', workflow_id => 'greet-7');
SELECT status, task_failed FROM durable.workflows WHERE workflow_id = 'greet-7';

-- the first activity; a second poller finds nothing more
SELECT task_token AS token, workflow_id, activity, input, attempt
  FROM durable.poll_activity('default', worker => 'w1', wait => '10 s') \gset
\echo :workflow_id :activity :input :attempt
SELECT count(*) FROM durable.poll_activity('default', worker => 'w2');
SELECT jsonb_path_query(pending_activities, '$[*].state') AS state,
       jsonb_path_query(pending_activities, '$[*].worker') AS worker
  FROM durable.describe('greet-7');
SELECT durable.complete_activity(:'token', '{"name": "Ada"}');
-- the same token again: that attempt is no longer current
SELECT durable.complete_activity(:'token', '{"name": "Bob"}');

-- fan out: both renders are ready together, claimed in one poll
CREATE TEMP TABLE claimed AS
  SELECT * FROM durable.poll_activity('default', worker => 'w1', wait => '10 s', max_tasks => 10);
SELECT workflow_id, activity, input, attempt FROM claimed ORDER BY input->>'lang';
-- complete them in the opposite order: await_all keeps handle order
SELECT durable.complete_activity(task_token, to_jsonb(CASE input->>'lang' WHEN 'en' THEN 'Hello' ELSE 'Bonjour' END || ' ' || (input->>'name')))
  FROM claimed ORDER BY input->>'lang' DESC;
SELECT durable.result('greet-7', wait => '10 s');
SELECT event_id, event_type, details - 'retry_policy' AS details
  FROM durable.history('greet-7');
-- as recorded: an attempt's start on the row of the event that ends it, a
-- task's completion on the row of the first event it appended after it
SELECT e.event_id, e.event_type, e.attempt_started_at IS NOT NULL AS has_start,
       e.attempt_worker, e.task_new_commands
  FROM durable.recorded_events e JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'greet-7' ORDER BY e.event_id;
-- a default retry policy is not recorded; durable.history shows it
SELECT h.event_id, h.details -> 'retry_policy' AS shown, e.details ? 'retry_policy' AS recorded
  FROM durable.history h JOIN durable.recorded_events e USING (run_id, event_id)
  JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'greet-7' AND h.event_type = 'ActivityTaskScheduled'
 ORDER BY h.event_id;
SELECT workflow_id, workflow, status, owner, history_length, pending_activities,
       task_failure, result, failure, closed_at >= started_at AS closed_after_start
  FROM durable.describe('greet-7');
SELECT workflow_id, workflow, status, owner, closed_at IS NOT NULL AS closed
  FROM durable.workflows WHERE workflow_id = 'greet-7';

-- a closed run's tokens stop working
SELECT count(*) FROM claimed WHERE durable.complete_activity(task_token, '1');

-- a finished workflow id can be used again; the new run is the one shown
SELECT durable.start_workflow('greet', '{"id": 8}', workflow_id => 'greet-7');
SELECT status, history_length >= 1 AS has_history FROM durable.describe('greet-7');
SELECT count(*) FROM durable.workflows WHERE workflow_id = 'greet-7';
-- a generated workflow id is a uuid
SELECT durable.start_workflow('public.greet(jsonb)', '{"id": 9}')::uuid IS NOT NULL AS generated;
-- run ids are UUIDs of version 7, their first 48 bits the start's Unix time
-- in milliseconds: indexes keyed by run_id grow at their end
SELECT count(*) AS runs,
       count(*) FILTER (WHERE substr(run_id::text, 15, 1) = '7'
         AND abs(('x' || substr(replace(run_id::text, '-', ''), 1, 12))::bit(48)::int8
                 - floor(extract(epoch FROM started_at) * 1000)) <= 5) AS time_ordered
  FROM durable.runs;

-- result() of an open run, without and with a short wait
SELECT durable.result('greet-7');
SELECT durable.result('greet-7', wait => '50 ms');
-- wait_for_result: result() as a procedure, for long waits (called outside
-- a transaction block it waits holding no snapshot: test/t/002_processes.pl);
-- the result comes back as its INOUT argument
CALL durable.wait_for_result('greet-7', wait => '50 ms');
CREATE FUNCTION charge(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('charge', input, task_queue => 'charges');
END $$;
SELECT durable.start_workflow('charge', '{"amount": 11}', workflow_id => 'charge-11');
SELECT task_token AS token FROM durable.poll_activity('charges', wait => '10 s') \gset
SELECT durable.complete_activity(:'token', '{"charged": 11}');
CALL durable.wait_for_result('charge-11', wait => '10 s');
BEGIN;
CALL durable.wait_for_result('charge-11', wait => '10 s');
COMMIT;

-- failing an activity: retried with backoff, then for good
CREATE FUNCTION flaky(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('charge', input, task_queue => 'payments',
      options => '{"retry": {"maximum_attempts": 2, "initial_interval": "2 s"}}');
END $$;
SELECT durable.start_workflow('flaky', '{"amount": 5}', workflow_id => 'flaky-1');
SELECT task_token AS token, attempt FROM durable.poll_activity('payments', wait => '10 s') \gset
\echo attempt :attempt
-- the history shows the whole retry policy; its row, and the task row
-- (written again at every claim), keep what differs from the defaults
SELECT h.details->'retry_policy' AS shown, e.details->'retry_policy' AS recorded,
       t.retry_policy AS kept
  FROM durable.history h JOIN durable.recorded_events e USING (run_id, event_id),
       durable.activity_tasks t
 WHERE h.event_type = 'ActivityTaskScheduled' AND t.activity = 'charge'
   AND h.run_id = t.run_id;
SELECT durable.fail_activity(:'token', 'card declined');
SELECT durable.fail_activity(:'token', 'card declined');
SELECT jsonb_path_query(pending_activities, '$[*].attempt') AS attempt,
       jsonb_path_query(pending_activities, '$[*].last_failure.error') AS last_error
  FROM durable.describe('flaky-1');
-- not ready before its backoff, then ready: poll waits for it
SELECT count(*) FROM durable.poll_activity('payments');
SELECT task_token AS token, attempt FROM durable.poll_activity('payments', wait => '10 s') \gset
\echo attempt :attempt
SELECT durable.fail_activity(:'token', 'card declined again');
SELECT durable.result('flaky-1', wait => '10 s');
SELECT event_type, details->>'error' AS error, details->'final' AS final,
       details ? 'next_attempt_at' AS will_retry
  FROM durable.history('flaky-1') WHERE event_type LIKE 'Activity%' ORDER BY event_id;

-- a non-retryable failure ends it at once
SELECT durable.start_workflow('flaky', '{"amount": 6}', workflow_id => 'flaky-2');
SELECT task_token AS token FROM durable.poll_activity('payments', wait => '10 s') \gset
SELECT durable.fail_activity(:'token', 'fraud suspected', retryable => false);
SELECT durable.result('flaky-2', wait => '10 s');
CALL durable.wait_for_result('flaky-2', wait => '10 s');

-- starting inside an app transaction that rolls back leaves nothing
BEGIN;
SELECT durable.start_workflow('greet', '{"id": 10}', workflow_id => 'rolled-back');
ROLLBACK;
SELECT count(*) FROM durable.workflows WHERE workflow_id = 'rolled-back';
-- completing inside one that rolls back: the attempt stays claimed
SELECT durable.start_workflow('flaky', '{"amount": 7}', workflow_id => 'flaky-3');
SELECT task_token AS token FROM durable.poll_activity('payments', wait => '10 s') \gset
BEGIN;
SELECT durable.complete_activity(:'token', '{"charged": true}');
ROLLBACK;
SELECT status FROM durable.describe('flaky-3');
SELECT durable.complete_activity(:'token', '{"charged": true}');
SELECT durable.result('flaky-3', wait => '10 s');

-- a task token is "<run>.<handle>.<attempt>.<mac>": the task's key (the
-- run id in hex, the activity's handle), the attempt, and the first 16
-- bytes of HMAC-SHA256 of the rest under the database's key: checked
-- against pgcrypto's hmac()
CREATE EXTENSION pgcrypto;
SELECT durable.start_workflow('flaky', '{"amount": 8}', workflow_id => 'flaky-4');
SELECT task_token AS token FROM durable.poll_activity('payments', wait => '10 s') \gset
SELECT split_part(:'token', '.', 1) = replace(d.run_id::text, '-', '') AS names_the_run,
       split_part(:'token', '.', 2) = (d.pending_activities->0->>'handle') AS names_the_handle,
       split_part(:'token', '.', 3) = (d.pending_activities->0->>'attempt') AS names_the_attempt
  FROM durable.describe('flaky-4') d;
SELECT split_part(:'token', '.', 4) =
       encode(substring(hmac(convert_to(split_part(:'token', '.', 1) || '.' ||
                                        split_part(:'token', '.', 2) || '.' ||
                                        split_part(:'token', '.', 3), 'UTF8'),
                             k.key, 'sha256') FROM 1 FOR 16), 'hex') AS mac_is_hmac_sha256
  FROM durable.token_key k;
-- only that form: the same token with its handle written "01" is refused
SELECT set_config('regress.bad_token', split_part(:'token', '.', 1) || '.0' ||
                  substring(:'token' FROM position('.' IN :'token') + 1), false) IS NOT NULL AS set;
DO $$
DECLARE detail text;
BEGIN
  PERFORM durable.complete_activity(current_setting('regress.bad_token'));
  RAISE NOTICE 'accepted';
EXCEPTION WHEN invalid_parameter_value THEN
  GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
  RAISE NOTICE 'refused (%): %', SQLSTATE, detail;
END $$;
SELECT durable.complete_activity(:'token', '{"charged": true}');
DROP EXTENSION pgcrypto;
