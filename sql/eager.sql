-- Eager workflow tasks: a backend that completes an activity runs the
-- workflow task that follows itself, in its own transaction, when the result
-- leaves the code nothing else to wait for; and eager dispatch:
-- complete_and_poll() hands back the run's next activity on its queue.

CREATE FUNCTION three_steps(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE a jsonb; b jsonb; c jsonb;
BEGIN
  a := durable.activity('a', input, input->>'queue');
  b := durable.activity('b', a, input->>'queue');
  c := durable.activity('c', b, input->>'queue');
  RETURN jsonb_build_array(a, b, c);
END $$;

-- waits (up to 10 s) until the query, given id, returns true
CREATE FUNCTION wait_until(query text, id text) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE done bool;
BEGIN
  FOR i IN 1..1000 LOOP
    EXECUTE query INTO done USING id;
    IF done THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RETURN false;
END $$;

-- wait until the worker has run a new run's first task
CREATE FUNCTION wait_scheduled(id text) RETURNS bool LANGUAGE sql AS $$
  SELECT wait_until('SELECT EXISTS (SELECT FROM durable.describe($1) WHERE pending_activities <> ''[]'')', id)
$$;

-- waits until the worker has run a run's due workflow task
CREATE FUNCTION wait_task_done(id text) RETURNS bool LANGUAGE sql AS $$
  SELECT wait_until('SELECT NOT task_pending FROM durable.runs WHERE workflow_id = $1', id)
$$;

-- the state of a run's activities, as seen by the current transaction
CREATE FUNCTION tasks_of(id text) RETURNS TABLE (activity text, status text)
LANGUAGE sql AS $$
  SELECT t.activity, t.status FROM durable.activity_tasks t
    JOIN durable.runs r USING (run_id)
   WHERE r.workflow_id = id ORDER BY t.handle
$$;

-- The next step is scheduled by the completing transaction itself: it is
-- there before COMMIT, and gone with a ROLLBACK.
SELECT durable.start_workflow('three_steps', '{"queue": "eager"}', 'eager-1');
SELECT task_token AS token FROM durable.poll_activity('eager', wait => '10 s') \gset
BEGIN;
SELECT durable.complete_activity(:'token', '10');
SELECT * FROM tasks_of('eager-1');
SELECT event_type FROM durable.history('eager-1') ORDER BY event_id DESC LIMIT 2;
ROLLBACK;
SELECT * FROM tasks_of('eager-1');

-- The step is written by the completing transaction itself, not by a
-- subtransaction of it: the transaction locked the run, and a
-- subtransaction's update of that row would make a MultiXact (and take a
-- second transaction id) at every step.
SELECT durable.start_workflow('three_steps', '{"queue": "eager-xid"}', 'eager-xid');
SELECT task_token AS xid_token FROM durable.poll_activity('eager-xid', wait => '10 s') \gset
BEGIN;
SELECT durable.complete_activity(:'xid_token', '1');
WITH mine AS (SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text AS xid),
     run AS (SELECT run_id, xmin FROM durable.runs WHERE workflow_id = 'eager-xid')
SELECT (SELECT run.xmin::text = mine.xid FROM run, mine) AS run_written_by_it,
       (SELECT bool_and(t.xmin::text = mine.xid) FROM durable.activity_tasks t, run, mine
         WHERE t.run_id = run.run_id) AS task_written_by_it,
       (SELECT array_agg(h.event_type ORDER BY h.event_id) FROM durable.recorded_events h, run, mine
         WHERE h.run_id = run.run_id AND h.xmin::text = mine.xid) AS events_written_by_it;
COMMIT;

-- What the rolled-back task read and wrote is forgotten (this backend keeps
-- runs' histories between tasks): the next completion sees only 20, and so
-- does a completion rolled back to a savepoint.
SELECT durable.complete_activity(:'token', '20');
SELECT task_token AS token FROM durable.poll_activity('eager', wait => '10 s') \gset
BEGIN;
SAVEPOINT before_b;
SELECT durable.complete_activity(:'token', '"b rolled back"');
ROLLBACK TO SAVEPOINT before_b;
SELECT durable.complete_activity(:'token', '21');
COMMIT;
SELECT task_token AS token FROM durable.poll_activity('eager', wait => '10 s') \gset
SELECT durable.complete_activity(:'token', '22');
SELECT durable.result('eager-1');
SELECT count(*) AS workflow_tasks
  FROM durable.history('eager-1') WHERE event_type = 'WorkflowTaskCompleted';

-- A workflow function replaced, here by one in another language, while
-- this backend remembers how to call it: the next task calls the new one.
CREATE FUNCTION two_steps(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN jsonb_build_array(durable.activity('a', input, 'eager-lang'),
                           durable.activity('b', input, 'eager-lang'));
END $$;
SELECT durable.start_workflow('two_steps', '{"n": 1}', 'eager-lang');
SELECT task_token AS lang_token FROM durable.poll_activity('eager-lang', wait => '10 s') \gset
SELECT durable.complete_activity(:'lang_token', '"a"');
SELECT * FROM tasks_of('eager-lang');
CREATE OR REPLACE FUNCTION two_steps(input jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('sql', jsonb_build_array(durable.activity('a', input, 'eager-lang'),
                                                     durable.activity('b', input, 'eager-lang')))
$$;
SELECT task_token AS lang_token FROM durable.poll_activity('eager-lang', wait => '10 s') \gset
SELECT durable.complete_activity(:'lang_token', '"b"');
SELECT durable.result('eager-lang', wait => '10 s');

-- Workflow code that catches an error raised inside one of durable's calls
-- (a query the other run does not answer), then sleeps: recording the timer
-- runs a statement of ours in the completing backend, and the caller's
-- search_path is its own again afterwards.
CREATE FUNCTION catches(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE a jsonb;
BEGIN
  a := durable.activity('a', input, 'eager-catch');
  BEGIN
    PERFORM durable.query('eager-1', 'no_such_query');
  EXCEPTION WHEN others THEN NULL;
  END;
  PERFORM durable.sleep('1 millisecond');
  RETURN a;
END $$;
SELECT durable.start_workflow('catches', '{"n": 1}', 'eager-catch');
SELECT task_token AS catch_token FROM durable.poll_activity('eager-catch', wait => '10 s') \gset
BEGIN;
SET LOCAL search_path = public, pg_catalog;
SELECT durable.complete_activity(:'catch_token', '7');
SHOW search_path;
SELECT event_type FROM durable.history('eager-catch') ORDER BY event_id DESC LIMIT 2;
COMMIT;
SELECT durable.result('eager-catch', wait => '10 s');

-- Off: the worker runs the task after the commit.
SET durable.eager_workflow_tasks = off;
SELECT durable.start_workflow('three_steps', '{"queue": "eager"}', 'eager-2');
SELECT task_token AS token FROM durable.poll_activity('eager', wait => '10 s') \gset
BEGIN;
SELECT durable.complete_activity(:'token', '1');
SELECT * FROM tasks_of('eager-2');
COMMIT;
RESET durable.eager_workflow_tasks;
SELECT activity, input FROM durable.poll_activity('eager', wait => '10 s');

-- Workflow code runs under the worker's settings wherever it runs: a
-- session's own TimeZone or DateStyle does not change what it computes.
CREATE FUNCTION settings_seen(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity('step', NULL, 'eager-env');
  RETURN jsonb_build_object('tz', current_setting('TimeZone'),
                            'datestyle', current_setting('DateStyle'));
END $$;
-- what the worker sees: a run whose last task it runs itself
SET durable.eager_workflow_tasks = off;
SELECT durable.start_workflow('settings_seen', '{}', 'env-worker');
SELECT task_token AS token FROM durable.poll_activity('eager-env', wait => '10 s') \gset
SELECT durable.complete_activity(:'token');
RESET durable.eager_workflow_tasks;
SELECT durable.result('env-worker', wait => '10 s') AS worker_settings \gset
SELECT durable.start_workflow('settings_seen', '{}', 'env-inline');
SELECT task_token AS token FROM durable.poll_activity('eager-env', wait => '10 s') \gset
SET TimeZone = 'America/Adak';
SET DateStyle = 'German';
SELECT durable.complete_activity(:'token');
SELECT status = 'completed' AS closed_by_this_backend FROM durable.workflows
 WHERE workflow_id = 'env-inline';
SELECT durable.result('env-inline') = :'worker_settings'::jsonb AS same_as_worker,
       durable.result('env-inline')->>'tz' <> current_setting('TimeZone') AS not_the_session_tz;
SHOW TimeZone;
RESET TimeZone;
RESET DateStyle;
-- The session's settings are compared with the worker's again only when
-- they changed since they last matched: a change in between is seen.  The
-- session first takes all of the worker's values (pg_regress's own differ).
CREATE FUNCTION all_settings(input jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_object_agg(name, current_setting(name))
    FROM unnest(ARRAY['TimeZone', 'DateStyle', 'IntervalStyle', 'extra_float_digits',
                      'bytea_output', 'lc_monetary', 'lc_numeric', 'lc_time',
                      'xmlbinary', 'xmloption', 'default_text_search_config',
                      'array_nulls', 'transform_null_equals',
                      'standard_conforming_strings', 'backslash_quote',
                      'quote_all_identifiers', 'timezone_abbreviations',
                      'row_security']) name
$$;
SELECT durable.start_workflow('all_settings', '{}', 'env-all');
SELECT count(set_config(key, value, false))
  FROM jsonb_each_text(durable.result('env-all', wait => '10 s'));
SELECT durable.start_workflow('settings_seen', '{}', 'env-matching');
SELECT task_token AS token FROM durable.poll_activity('eager-env', wait => '10 s') \gset
SELECT durable.complete_activity(:'token');
SELECT durable.start_workflow('settings_seen', '{}', 'env-changed');
SELECT task_token AS token FROM durable.poll_activity('eager-env', wait => '10 s') \gset
SET DateStyle = 'SQL, DMY';
SELECT durable.complete_activity(:'token');
SELECT durable.result('env-matching') = :'worker_settings'::jsonb AS matching_same_as_worker,
       durable.result('env-changed') = :'worker_settings'::jsonb AS changed_same_as_worker,
       current_setting('DateStyle') AS session_datestyle;
RESET ALL;

-- A result that leaves other activities open (a fan-out) makes the task due
-- for the worker, which runs one task for several results; the last result
-- runs it here.
CREATE FUNCTION pair(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.await_all(ARRAY[durable.activity_async('left', NULL, 'eager-pair'),
                                 durable.activity_async('right', NULL, 'eager-pair')]);
END $$;
SELECT durable.start_workflow('pair', '{}', 'pair-1');
SELECT task_token AS token_l FROM durable.poll_activity('eager-pair', wait => '10 s') \gset
SELECT task_token AS token_r FROM durable.poll_activity('eager-pair', wait => '10 s') \gset
BEGIN;
SELECT durable.complete_activity(:'token_l', '"L"');
SELECT task_pending FROM durable.runs WHERE workflow_id = 'pair-1';
COMMIT;
-- (the worker runs that task first: a result that finds the run held by
-- someone leaves it to the worker, see the isolation test completion_race)
SELECT wait_task_done('pair-1');
SELECT durable.complete_activity(:'token_r', '"R"');
SELECT status, result FROM durable.runs WHERE workflow_id = 'pair-1';

-- While the code waits, a result that does not give it what it waits for
-- does not run it again: the worker makes that task done without it (no
-- WorkflowTaskCompleted recorded).  Here c's result cannot end the
-- await_any of a and b; a's ends it, and the code goes on to wait for all
-- three; b's, the last, ends that.
CREATE FUNCTION trio(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE ab bigint[]; c bigint; first bigint;
BEGIN
  ab := ARRAY[durable.activity_async('a', NULL, 'eager-trio'),
              durable.activity_async('b', NULL, 'eager-trio')];
  c := durable.activity_async('c', NULL, 'eager-trio');
  first := durable.await_any(ab);
  RETURN jsonb_build_object('first', first, 'all', durable.await_all(ab || c));
END $$;
SELECT durable.start_workflow('trio', '{}', 'trio-1');
CREATE TABLE trio_tokens AS
  SELECT activity, task_token FROM durable.poll_activity('eager-trio', wait => '10 s', max_tasks => 3);
SELECT count(*) FROM trio_tokens;
SELECT durable.complete_activity(task_token, '"C"') FROM trio_tokens WHERE activity = 'c';
SELECT wait_task_done('trio-1');
SELECT durable.complete_activity(task_token, '"A"') FROM trio_tokens WHERE activity = 'a';
SELECT wait_task_done('trio-1');
SELECT durable.complete_activity(task_token, '"B"') FROM trio_tokens WHERE activity = 'b';
SELECT durable.result('trio-1', wait => '10 s');
SELECT event_id, event_type, details->>'handle' AS handle, details->>'new_commands' AS new_commands
  FROM durable.history WHERE run_id = (SELECT run_id FROM durable.runs WHERE workflow_id = 'trio-1')
  ORDER BY event_id;
DROP TABLE trio_tokens;

-- Eager dispatch: complete_and_poll returns the run's next activity, already
-- claimed, though an older task waits in the queue.
SELECT durable.start_workflow('three_steps', '{"queue": "eager-d"}', 'eager-d1');
SELECT task_token AS token FROM durable.poll_activity('eager-d', wait => '10 s') \gset
SELECT durable.start_workflow('three_steps', '{"queue": "eager-d"}', 'eager-d2');
SELECT wait_scheduled('eager-d2');
SELECT task_token AS token, workflow_id, activity, input, attempt
  FROM durable.complete_and_poll(:'token', '1', 'eager-d') \gset
\echo :workflow_id :activity :input :attempt
SELECT * FROM tasks_of('eager-d1');
-- ... at most durable.eager_dispatch_limit in a row: then the queue's oldest
SET durable.eager_dispatch_limit = 1;
SELECT task_token AS token, workflow_id, activity
  FROM durable.complete_and_poll(:'token', '2', 'eager-d') \gset
\echo :workflow_id :activity
SELECT * FROM tasks_of('eager-d1');
-- the streak starts again after a claim from the queue
SELECT workflow_id, activity FROM durable.complete_and_poll(:'token', '1', 'eager-d');
RESET durable.eager_dispatch_limit;

-- A queue with limits counts its starts: no eager dispatch there.
SELECT durable.configure_task_queue('eager-lim', max_in_flight => 10);
SELECT durable.start_workflow('three_steps', '{"queue": "eager-lim"}', 'lim-1');
SELECT task_token AS token FROM durable.poll_activity('eager-lim', wait => '10 s') \gset
SELECT durable.start_workflow('three_steps', '{"queue": "eager-lim"}', 'lim-2');
SELECT wait_scheduled('lim-2');
SELECT workflow_id, activity FROM durable.complete_and_poll(:'token', '1', 'eager-lim');
SELECT durable.configure_task_queue('eager-lim');

-- durable.workflow_task_timeout stops code that loops in a client backend
-- too: the run's task fails and is parked, the completion itself commits.
CREATE FUNCTION loops_after(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity('first', NULL, 'eager-loop');
  LOOP
  END LOOP;
END $$;
ALTER SYSTEM SET durable.workflow_task_timeout = '200ms';
SELECT pg_reload_conf();
SELECT durable.start_workflow('loops_after', '{}', 'loop-1');
SELECT task_token AS token FROM durable.poll_activity('eager-loop', wait => '10 s') \gset
SELECT durable.complete_activity(:'token');
SELECT task_failure->>'cause' AS cause, task_failure->'failure'->>'sqlstate' AS sqlstate,
       task_failure->'failure'->>'message' AS message
  FROM durable.describe('loop-1');
ALTER SYSTEM RESET durable.workflow_task_timeout;
SELECT pg_reload_conf();

-- The client's own statement_timeout is the client's: it cancels the
-- completion as a whole (nothing is recorded, the run is not parked).
SELECT durable.start_workflow('loops_after', '{}', 'loop-2');
SELECT task_token AS token FROM durable.poll_activity('eager-loop', wait => '10 s') \gset
SET statement_timeout = '300ms';
SELECT durable.complete_activity(:'token');
RESET statement_timeout;
SELECT task_failure IS NULL AS not_parked, pending_activities->0->>'state' AS state
  FROM durable.describe('loop-2');
SELECT durable.fail_activity(:'token', 'give up', retryable => false);

-- The completing role must act for the run's owner: the owner's code would
-- run in its session.  A worker role that is not a member of the owner's
-- leaves the task to the worker.
CREATE ROLE regress_durable_eager_worker;
GRANT EXECUTE ON FUNCTION durable.poll_activity(text, text, interval, int),
                          durable.complete_activity(text, jsonb)
   TO regress_durable_eager_worker;
SELECT durable.start_workflow('three_steps', '{"queue": "eager-role"}', 'eager-role-1');
SELECT task_token AS token FROM durable.poll_activity('eager-role', wait => '10 s') \gset
BEGIN;
SET LOCAL ROLE regress_durable_eager_worker;
SELECT durable.complete_activity(:'token', '1');
RESET ROLE;
SELECT * FROM tasks_of('eager-role-1');
COMMIT;
SELECT activity, input FROM durable.poll_activity('eager-role', wait => '10 s');
REVOKE ALL ON FUNCTION durable.poll_activity(text, text, interval, int),
                       durable.complete_activity(text, jsonb)
  FROM regress_durable_eager_worker;
DROP ROLE regress_durable_eager_worker;

-- A claim that rolls back did not happen: the attempt claimed again records
-- the worker and time of the claim that committed, even on the connection
-- that made both.
SELECT durable.start_workflow('three_steps', '{"queue": "eager-rb"}', 'eager-rb-1');
SELECT wait_scheduled('eager-rb-1');
BEGIN;
SELECT count(*) FROM durable.poll_activity('eager-rb', worker => 'rolled back');
ROLLBACK;
SELECT task_token AS token FROM durable.poll_activity('eager-rb', worker => 'kept') \gset
SELECT durable.complete_activity(:'token', '1');
SELECT details->>'worker' AS worker FROM durable.history('eager-rb-1')
 WHERE event_type = 'ActivityTaskStarted';

-- An activity handed out by eager dispatch has its attempt's timeouts like
-- any claimed one: here start_to_close times it out, and the retry goes
-- through the queue.
CREATE FUNCTION then_timed(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity('first', NULL, 'eager-to');
  RETURN durable.activity('timed', NULL, 'eager-to',
                          '{"start_to_close": "0.3 s", "retry": {"initial_interval": "0.1 s"}}');
END $$;
SELECT durable.start_workflow('then_timed', '{}', 'eager-to-1');
SELECT task_token AS token FROM durable.poll_activity('eager-to', wait => '10 s') \gset
SELECT activity, attempt FROM durable.complete_and_poll(:'token', NULL, 'eager-to');
SELECT activity, attempt FROM durable.poll_activity('eager-to', wait => '10 s') \gset
\echo :activity :attempt
SELECT event_type, details->>'timeout' AS timeout FROM durable.history('eager-to-1')
 WHERE event_type = 'ActivityTaskTimedOut';

-- Many steps of one run in one transaction: the run row's page fills with
-- versions no one may prune yet, and its updates stop being heap-only (they
-- need index entries).  The run is still found through every index.
CREATE FUNCTION many_steps(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..200 LOOP
    total := total + durable.activity('step', to_jsonb(i), 'eager-many')::int;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
SELECT durable.start_workflow('many_steps', '{}', 'eager-many-1');
SELECT task_token AS token, input FROM durable.poll_activity('eager-many', wait => '10 s') \gset
SELECT set_config('eager.token', :'token', false), set_config('eager.input', :'input', false) \gset
DO $$
DECLARE token text := current_setting('eager.token');
        input jsonb := current_setting('eager.input')::jsonb;
        t durable.activity_task;
BEGIN
  LOOP
    SELECT * INTO t FROM durable.complete_and_poll(token, input, 'eager-many');
    EXIT WHEN t.task_token IS NULL;
    token := t.task_token;
    input := t.input;
  END LOOP;
END $$;
SELECT durable.result('eager-many-1');
SET enable_seqscan = off;
SELECT count(*) AS by_run_id FROM durable.runs
 WHERE run_id = (SELECT run_id FROM durable.describe('eager-many-1'));
SELECT count(*) AS by_workflow_id FROM durable.runs WHERE workflow_id = 'eager-many-1';
SELECT next_event_id - 1 = (SELECT max(event_id) FROM durable.history('eager-many-1')) AS counted
  FROM durable.runs WHERE workflow_id = 'eager-many-1';
RESET enable_seqscan;

-- Indexes added to the engine's tables while this session already writes
-- them (it keeps what their index entries need) get the entries of the rows
-- written after: amcheck finds every live row in each index.  An index on
-- an expression is written the executor's way.
CREATE EXTENSION IF NOT EXISTS amcheck;
CREATE INDEX extra_tasks_worker ON durable.activity_tasks (worker);
CREATE INDEX extra_tasks_expression ON durable.activity_tasks ((lower(activity)));
CREATE INDEX extra_runs_counter ON durable.runs (next_event_id) WHERE status = 'running';
CREATE INDEX extra_history_type ON durable.recorded_events (event_type);
SELECT durable.start_workflow('three_steps', '{"queue": "eager-idx"}', 'eager-idx-1');
SELECT durable.start_workflow('three_steps', '{"queue": "eager-idx"}', 'eager-idx-2');
SELECT task_token AS token FROM durable.poll_activity('eager-idx', 'w1', wait => '10 s') \gset
-- completes it (the run's row updated), hands back its next one (a new row)
SELECT activity FROM durable.complete_and_poll(:'token', '1', 'eager-idx', 'w1');
SELECT wait_scheduled('eager-idx-2');
SELECT count(*) AS live_tasks FROM durable.activity_tasks WHERE task_queue = 'eager-idx';
SELECT c.relname, bt_index_check(c.oid, true) IS NOT NULL AS checked
  FROM pg_class c WHERE c.relname LIKE 'extra\_%' ORDER BY c.relname;
DROP INDEX durable.extra_tasks_worker, durable.extra_tasks_expression,
           durable.extra_runs_counter, durable.extra_history_type;

-- Large values (stored out of line, compressed or not) go through the run's
-- row, the task rows and the history intact.
CREATE FUNCTION big_echo(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN jsonb_build_object(
    'first', durable.activity('echo', input, 'eager-big'),
    'second', durable.activity('echo', input, 'eager-big'));
END $$;
CREATE TABLE big_inputs AS
  SELECT 'big-' || k AS id, jsonb_build_object('blob', CASE k
           WHEN 1 THEN (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)
           ELSE repeat('durable', 20000) END) AS input
    FROM generate_series(1, 2) k;
SELECT durable.start_workflow('big_echo', input, id) FROM big_inputs ORDER BY id;
-- each: claimed from the queue, then handed back by complete_and_poll
SELECT task_token AS token, workflow_id AS id FROM durable.poll_activity('eager-big', wait => '10 s') \gset
SELECT task_token AS token2, (SELECT input FROM big_inputs WHERE id = :'id') = input AS input_intact
  FROM durable.complete_and_poll(:'token', (SELECT input FROM big_inputs WHERE id = :'id'), 'eager-big') \gset
\echo :input_intact
SELECT durable.complete_activity(:'token2', (SELECT input FROM big_inputs WHERE id = :'id'));
SELECT task_token AS token, workflow_id AS id FROM durable.poll_activity('eager-big', wait => '10 s') \gset
SELECT task_token AS token2, (SELECT input FROM big_inputs WHERE id = :'id') = input AS input_intact
  FROM durable.complete_and_poll(:'token', (SELECT input FROM big_inputs WHERE id = :'id'), 'eager-big') \gset
\echo :input_intact
SELECT durable.complete_activity(:'token2', (SELECT input FROM big_inputs WHERE id = :'id'));
SELECT b.id, durable.result(b.id, wait => '10 s') = jsonb_build_object('first', b.input, 'second', b.input) AS intact,
       length(b.input->>'blob') AS length
  FROM big_inputs b ORDER BY b.id;
SELECT b.id, count(*) AS events_with_it FROM big_inputs b, durable.history(b.id) h
 WHERE h.details->'input' = b.input OR h.details->'result' = b.input
 GROUP BY b.id ORDER BY b.id;
DROP TABLE big_inputs;

-- Eager start (durable.eager_workflow_start): start_workflow() runs the new
-- run's first workflow task itself.  Its first activity is scheduled in the
-- starting transaction, and the run never enters the worker's queue.
SET durable.eager_workflow_start = on;
BEGIN;
SELECT durable.start_workflow('three_steps', '{"queue": "eager-start"}', 'eager-start-1');
SELECT event_type FROM durable.history('eager-start-1') ORDER BY event_id;
SELECT * FROM tasks_of('eager-start-1');
SELECT count(*) AS in_worker_queue FROM durable.due_tasks d JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'eager-start-1';
COMMIT;
SELECT task_token AS token FROM durable.poll_activity('eager-start', wait => '10 s') \gset
SELECT durable.complete_activity(:'token', '1');
SELECT task_token AS token FROM durable.poll_activity('eager-start', wait => '10 s') \gset
SELECT durable.complete_activity(:'token', '2');
SELECT task_token AS token FROM durable.poll_activity('eager-start', wait => '10 s') \gset
SELECT durable.complete_activity(:'token', '3');
SELECT durable.result('eager-start-1', wait => '10 s');
-- code that fails ends the run right there, as it would in the worker
CREATE FUNCTION fails_at_once(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'no such order';
END $$;
BEGIN;
SELECT durable.start_workflow('fails_at_once', '{}', 'eager-start-2');
SELECT status FROM durable.describe('eager-start-2');
COMMIT;
-- in a REPEATABLE READ transaction the task is left to the worker
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT durable.start_workflow('three_steps', '{"queue": "eager-start-rr"}', 'eager-start-3');
SELECT event_type FROM durable.history('eager-start-3') ORDER BY event_id;
SELECT count(*) AS in_worker_queue FROM durable.due_tasks d JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'eager-start-3';
COMMIT;
SELECT wait_scheduled('eager-start-3');
RESET durable.eager_workflow_start;

-- A completion on the connection that claimed the task, or was handed it
-- by complete_and_poll(), looks for the task's row and the run's where it
-- last saw them before asking their primary keys.  Not there any more: after
-- a heartbeat (the task's row has a newer version) it asks the key, after a
-- signal (the run's has) it follows the run's versions from where they
-- start (below); where the table no longer has that block (VACUUM
-- truncates a table's empty end; TRUNCATE here) it finds no row rather than
-- failing on the missing block.
SELECT durable.start_workflow('three_steps', '{"queue": "eager-seen"}', 'eager-seen-1');
SELECT task_token AS token FROM durable.poll_activity('eager-seen', wait => '10 s') \gset
SELECT durable.heartbeat_activity(:'token') AS stop;
SELECT task_token AS token, activity FROM durable.complete_and_poll(:'token', '1', 'eager-seen') \gset
\echo :activity
SELECT durable.signal('eager-seen-1', 'nudge');
SELECT wait_task_done('eager-seen-1');
SELECT task_token AS token, activity FROM durable.complete_and_poll(:'token', '2', 'eager-seen') \gset
\echo :activity
TRUNCATE durable.activity_tasks;
SELECT durable.complete_activity(:'token', '3') AS completed;
SELECT status, next_event_id FROM durable.runs WHERE workflow_id = 'eager-seen-1';
SELECT durable.start_workflow('three_steps', '{"queue": "eager-seen"}', 'eager-seen-2');
SELECT task_token AS token FROM durable.poll_activity('eager-seen', wait => '10 s') \gset
SELECT task_token AS token, activity FROM durable.complete_and_poll(:'token', '1', 'eager-seen') \gset
\echo :activity
SELECT (ctid::text::point)[0] > 0 AS past_the_first_block FROM durable.runs
 WHERE workflow_id = 'eager-seen-2';
-- in one transaction, which the worker waits for: the table's rows back
-- behind the one of this run, now in the first block
CREATE TABLE seen_runs AS SELECT * FROM durable.runs;
BEGIN;
TRUNCATE durable.runs;
INSERT INTO durable.runs SELECT * FROM seen_runs WHERE workflow_id = 'eager-seen-2';
SELECT durable.complete_activity(:'token', '2') AS completed;
SELECT activity, status FROM tasks_of('eager-seen-2');
INSERT INTO durable.runs SELECT * FROM seen_runs WHERE workflow_id <> 'eager-seen-2';
COMMIT;
DROP TABLE seen_runs;

-- A task's row tells where its run's row was when it was scheduled
-- (run_row: where the row's versions start, as the primary key points), and
-- the completion on the connection that claimed the task looks there
-- first.  Where the run's row has moved since (an update of an indexed
-- column starts a new chain), it asks the key; where another run's row is
-- there now (VACUUM FULL moves rows; the hint is set by hand here, to the
-- row of a run whose row moved so), it takes its own run's.
SELECT durable.start_workflow('three_steps', '{"queue": "run-row"}', 'run-row-1');
SELECT task_token AS token FROM durable.poll_activity('run-row', wait => '10 s') \gset
SELECT t.run_row IS NOT NULL AS run_row_known
  FROM durable.activity_tasks t JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'run-row-1';
UPDATE durable.runs SET started_at = started_at + interval '1 s' WHERE workflow_id = 'run-row-1';
UPDATE durable.runs SET started_at = started_at - interval '1 s' WHERE workflow_id = 'run-row-1';
SELECT durable.complete_activity(:'token', '1') AS completed;
SELECT * FROM tasks_of('run-row-1');
SELECT durable.start_workflow('three_steps', '{"queue": "run-row-2"}', 'run-row-2');
SELECT wait_scheduled('run-row-2');
UPDATE durable.runs SET started_at = started_at + interval '1 s' WHERE workflow_id = 'eager-seen-1';
UPDATE durable.runs SET started_at = started_at - interval '1 s' WHERE workflow_id = 'eager-seen-1';
UPDATE durable.activity_tasks t SET run_row = r.ctid
  FROM durable.runs r, durable.runs mine
 WHERE r.workflow_id = 'eager-seen-1' AND mine.workflow_id = 'run-row-2'
   AND t.run_id = mine.run_id;
SELECT r.workflow_id AS run_there
  FROM durable.activity_tasks t JOIN durable.runs r ON r.ctid = t.run_row
 WHERE t.activity = 'a' AND t.task_queue = 'run-row-2';
SELECT task_token AS token FROM durable.poll_activity('run-row-2', wait => '10 s') \gset
SELECT durable.complete_activity(:'token', '1') AS completed;
SELECT * FROM tasks_of('run-row-2');
SELECT status, next_event_id FROM durable.runs WHERE workflow_id = 'eager-seen-1';

-- The worker's queue row tells it where the run's row was when it was
-- queued, and the worker looks there first: the row there must be the
-- run's.  Here it is the row of another run, which has no task due (set by
-- hand, before the worker sees the queue row): the worker still runs the
-- task of the run queued.
BEGIN;
SELECT durable.start_workflow('three_steps', '{"queue": "queue-row"}', 'queue-row-1');
UPDATE durable.due_tasks d SET run_row = closed.ctid
  FROM durable.runs r, durable.runs closed
 WHERE r.workflow_id = 'queue-row-1' AND d.run_id = r.run_id
   AND closed.workflow_id = 'eager-seen-1';
SELECT r.workflow_id AS run_there, r.task_pending
  FROM durable.due_tasks d JOIN durable.runs r ON r.ctid = d.run_row
  JOIN durable.runs mine ON mine.run_id = d.run_id AND mine.workflow_id = 'queue-row-1';
COMMIT;
SELECT wait_scheduled('queue-row-1');
SELECT * FROM tasks_of('queue-row-1');
SELECT count(*) AS still_queued FROM durable.due_tasks d JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'queue-row-1';

-- A session that has created temporary objects leaves the task to the
-- worker (code run by the worker never sees temporary objects).  Last in
-- this file: that holds for the rest of the session.
SELECT durable.start_workflow('three_steps', '{"queue": "eager"}', 'eager-temp');
SELECT task_token AS token FROM durable.poll_activity('eager', wait => '10 s') \gset
CREATE TEMP TABLE scratch (x int);
BEGIN;
SELECT durable.complete_activity(:'token', '1');
SELECT * FROM tasks_of('eager-temp');
COMMIT;
DROP TABLE scratch;
