-- Activities in depth: error types, timeouts, heartbeats, cancellation,
-- priorities, the poll wait cap.

-- Test helper: wait until the activity of this handle is in that state.
CREATE FUNCTION wait_activity(id text, handle int, state text, attempt int DEFAULT 1)
RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..1000 LOOP
    IF EXISTS (SELECT FROM durable.describe(id), jsonb_array_elements(pending_activities) a
                WHERE (a->>'handle')::int = handle AND a->>'state' = state
                  AND (a->>'attempt')::int = attempt) THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RETURN false;
END $$;

CREATE FUNCTION one_activity(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity(input->>'activity', input->'input', input->>'queue', input->'options');
EXCEPTION WHEN SQLSTATE 'DU001' OR SQLSTATE 'DU007' THEN
  RETURN jsonb_build_object('error', SQLERRM, 'sqlstate', SQLSTATE);
END $$;

-- non_retryable_errors: an error of a listed type stops the retries
SELECT durable.start_workflow('one_activity', '{"activity": "charge", "queue": "act",
  "options": {"retry": {"non_retryable_errors": ["CardDeclined"], "initial_interval": "0.1 s"}}}',
  workflow_id => 'types-1');
SELECT task_token AS token FROM durable.poll_activity('act', wait => '10 s') \gset
SELECT durable.fail_activity(:'token', 'network glitch', error_type => 'Timeout');
SELECT task_token AS token, attempt FROM durable.poll_activity('act', wait => '10 s') \gset
\echo attempt :attempt
SELECT durable.fail_activity(:'token', 'card declined', error_type => 'CardDeclined');
SELECT durable.result('types-1', wait => '10 s');
SELECT event_type, details->>'attempt' AS attempt, details->>'error_type' AS error_type,
       details->'final' AS final
  FROM durable.history('types-1') WHERE event_type = 'ActivityTaskFailed' ORDER BY event_id;

-- start_to_close: an attempt that takes too long times out, its token stops
-- working, the next attempt gets the task (a worker that died loses nothing)
SELECT durable.start_workflow('one_activity', '{"activity": "slow", "queue": "act",
  "options": {"start_to_close": "0.3 s", "retry": {"initial_interval": "0.1 s"}}}',
  workflow_id => 'stc-1');
SELECT task_token AS token1 FROM durable.poll_activity('act', wait => '10 s') \gset
-- describe() shows when the attempt runs out
SELECT (a->>'start_to_close_at')::timestamptz - (a->>'started_at')::timestamptz AS start_to_close
  FROM durable.describe('stc-1'), jsonb_array_elements(pending_activities) a;
SELECT task_token AS token2, attempt FROM durable.poll_activity('act', wait => '10 s') \gset
\echo attempt :attempt
SELECT durable.complete_activity(:'token1', '"late"');
SELECT durable.complete_activity(:'token2', '"on time"');
SELECT durable.result('stc-1', wait => '10 s');
SELECT event_type, details->>'attempt' AS attempt, details->>'timeout' AS timeout
  FROM durable.history('stc-1') WHERE event_type LIKE 'Activity%' ORDER BY event_id;

-- heartbeats: they keep an attempt alive, carry progress to the next
-- attempt, and a missed one times the attempt out
SELECT durable.start_workflow('one_activity', '{"activity": "long", "queue": "act",
  "options": {"heartbeat": "2 s", "retry": {"initial_interval": "0.1 s"}}}',
  workflow_id => 'hb-1');
SELECT task_token AS token, heartbeat_details FROM durable.poll_activity('act', wait => '10 s') \gset
\echo details :heartbeat_details
SELECT pg_sleep(0.3);
SELECT durable.heartbeat_activity(:'token', '{"done": 40}') AS stop;
SELECT pg_sleep(0.3);
SELECT durable.heartbeat_activity(:'token', '{"done": 80}') AS stop;
SELECT last_heartbeat_at IS NOT NULL AS beating, heartbeat_details
  FROM durable.activity_tasks WHERE workflow_id = 'hb-1';
-- now the worker "dies": no more heartbeats; the next attempt resumes at 80
SELECT task_token AS token, attempt, heartbeat_details FROM durable.poll_activity('act', wait => '10 s') \gset
\echo attempt :attempt details :heartbeat_details
SELECT durable.complete_activity(:'token', '"resumed"');
SELECT durable.result('hb-1', wait => '10 s');
SELECT details->>'timeout' AS timeout FROM durable.history('hb-1') WHERE event_type = 'ActivityTaskTimedOut';

-- schedule_to_start: no worker took it in time; not retried
SELECT durable.start_workflow('one_activity', '{"activity": "unwanted", "queue": "nobody",
  "options": {"schedule_to_start": "0.2 s"}}', workflow_id => 'sts-1');
SELECT durable.result('sts-1', wait => '10 s');
-- schedule_to_close: the whole activity, all attempts, within its time
SELECT durable.start_workflow('one_activity', '{"activity": "doomed", "queue": "act",
  "options": {"schedule_to_close": "2 s", "retry": {"initial_interval": "10 s"}}}',
  workflow_id => 'stc-all');
SELECT task_token AS token FROM durable.poll_activity('act', wait => '10 s') \gset
SELECT durable.fail_activity(:'token', 'try again');
SELECT durable.result('stc-all', wait => '10 s');

-- cancellation: the workflow cancels a running activity; the worker learns
-- it from its heartbeat and reports it; the workflow sees DU007
CREATE FUNCTION canceler(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE job bigint; nudge bigint;
BEGIN
  job := durable.activity_async('render', NULL, 'act');
  nudge := durable.timer_async('2 s');
  IF durable.await_any(ARRAY[job, nudge]) = nudge THEN
    PERFORM durable.cancel(job);
  END IF;
  RETURN jsonb_build_object('result', durable.await(job));
EXCEPTION WHEN SQLSTATE 'DU007' THEN
  RETURN jsonb_build_object('canceled', SQLERRM);
END $$;
SELECT durable.start_workflow('canceler', '{}', workflow_id => 'cancel-1');
SELECT task_token AS token FROM durable.poll_activity('act', wait => '10 s') \gset
SELECT durable.heartbeat_activity(:'token') AS stop;
SELECT durable.cancel_activity(:'token', '{"cleaned_up": true}');
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN (SELECT bool_or((a->>'cancel_requested')::bool)
                 FROM durable.describe('cancel-1'), jsonb_array_elements(pending_activities) a);
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT durable.heartbeat_activity(:'token') AS stop;
SELECT durable.cancel_activity(:'token', '{"cleaned_up": true}');
SELECT durable.cancel_activity(:'token');
SELECT durable.result('cancel-1', wait => '10 s');
SELECT event_type, details - 'attempt' - 'worker' AS details FROM durable.history('cancel-1')
 WHERE event_type LIKE 'ActivityTaskCancel%' OR event_type = 'TimerFired' ORDER BY event_id;

-- an activity no worker holds is canceled at once; so is a timer
CREATE FUNCTION cancel_early(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE job bigint; t bigint; errors jsonb := '[]';
BEGIN
  job := durable.activity_async('never_polled', NULL, 'nobody');
  t := durable.timer_async('1 hour');
  PERFORM durable.cancel(job);
  PERFORM durable.cancel(t);
  PERFORM durable.cancel(t);   -- twice is fine
  BEGIN PERFORM durable.await(job);
  EXCEPTION WHEN SQLSTATE 'DU007' THEN errors := errors || to_jsonb(SQLERRM); END;
  BEGIN PERFORM durable.await(t);
  EXCEPTION WHEN SQLSTATE 'DU007' THEN errors := errors || to_jsonb(SQLERRM); END;
  RETURN errors;
END $$;
SELECT durable.start_workflow('cancel_early', '{}', workflow_id => 'cancel-2');
SELECT durable.result('cancel-2', wait => '10 s');
SELECT event_type FROM durable.history('cancel-2') WHERE event_type NOT LIKE 'Workflow%' ORDER BY event_id;

-- priority: of the ready tasks, the highest priority first
CREATE FUNCTION prioritized(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.await_all(ARRAY[
    durable.activity_async('low', NULL, 'prio', '{"priority": -5}'),
    durable.activity_async('normal', NULL, 'prio'),
    durable.activity_async('high', NULL, 'prio', '{"priority": 10}')]);
END $$;
SELECT durable.start_workflow('prioritized', '{}', workflow_id => 'prio-1');
SELECT activity FROM durable.poll_activity('prio', wait => '10 s');
SELECT activity FROM durable.poll_activity('prio', wait => '10 s');
SELECT activity FROM durable.poll_activity('prio', wait => '10 s');

-- wait_for_activity_task: poll_activity as a procedure, for long waits.
-- Called outside a transaction block it commits each look that finds nothing
-- and waits holding no snapshot (test/t/002_processes.pl shows it); the task
-- comes back as its INOUT arguments, all null when none came.
CALL durable.wait_for_activity_task('empty-queue', wait => '10 ms');
SELECT durable.start_workflow('one_activity', '{"activity": "called", "queue": "call", "input": {"n": 1}}',
                              workflow_id => 'call-1');
CALL durable.wait_for_activity_task('call', worker => 'caller', wait => '10 s') \gset
\echo :workflow_id :activity :input :attempt
SELECT worker FROM durable.activity_tasks WHERE workflow_id = 'call-1';
SELECT durable.complete_activity(:'task_token', '"done"');
SELECT durable.result('call-1', wait => '10 s');
-- inside a transaction block it cannot commit: it waits as poll_activity
-- does, and the claim is the transaction's
SELECT durable.start_workflow('one_activity', '{"activity": "called", "queue": "call"}',
                              workflow_id => 'call-2');
BEGIN;
CALL durable.wait_for_activity_task('call', wait => '10 s') \gset
\echo :workflow_id :attempt
ROLLBACK;
CALL durable.wait_for_activity_task('call', wait => '10 s') \gset
\echo :workflow_id :attempt
SELECT durable.complete_activity(:'task_token', '"done"');
SELECT durable.result('call-2', wait => '10 s');
-- a worker written as a PL/pgSQL procedure: variables for the INOUT
-- arguments (what they hold when passed in does not matter: each CALL sets
-- them all), a commit after each task
CREATE PROCEDURE plpgsql_worker(tasks int) LANGUAGE plpgsql AS $$
DECLARE tok text; wf text; act text; inp jsonb; att int; hb jsonb; done int := 0;
BEGIN
  WHILE done < tasks LOOP
    CALL durable.wait_for_activity_task('call', 'plpgsql', '10 s', tok, wf, act, inp, att, hb);
    CONTINUE WHEN tok IS NULL;
    PERFORM durable.complete_activity(tok, to_jsonb((inp->>'n')::int * 2));
    COMMIT;
    done := done + 1;
  END LOOP;
END $$;
SELECT durable.start_workflow('one_activity', jsonb_build_object('activity', 'double', 'queue', 'call',
                                                                 'input', jsonb_build_object('n', i)),
                              workflow_id => 'call-pl-' || i)
  FROM generate_series(1, 3) i;
CALL plpgsql_worker(3);
SELECT durable.result('call-pl-' || i, wait => '10 s') FROM generate_series(1, 3) i;
SELECT DISTINCT attempt_worker FROM durable.recorded_events e JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id LIKE 'call-pl-%' AND attempt_worker IS NOT NULL;

-- each of its looks is a transaction of its own: REPEATABLE READ does not
-- keep it from waiting (poll_activity would refuse)
SET default_transaction_isolation = 'repeatable read';
CALL durable.wait_for_activity_task('empty-queue', wait => '10 ms');
RESET default_transaction_isolation;

-- the poll wait is capped by durable.max_poll_wait
ALTER SYSTEM SET durable.max_poll_wait = '100ms';
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SET statement_timeout = '5s';
SELECT count(*) FROM durable.poll_activity('empty-queue', wait => '1 hour');
CALL durable.wait_for_activity_task('empty-queue', wait => '1 hour');
RESET statement_timeout;
ALTER SYSTEM RESET durable.max_poll_wait;
SELECT pg_reload_conf();

-- errors
SELECT durable.heartbeat_activity(NULL);
SELECT durable.heartbeat_activity('garbage');
SELECT durable.cancel_activity('00000000000000000000000000000000.1.1.00000000000000000000000000000000');
SELECT durable.cancel(1);
CREATE FUNCTION bad_activity_options(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE errors jsonb := '[]';
BEGIN
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"start_to_close": "-1 s"}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"heartbeat": "often"}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"priority": 1.5}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"retry": {"non_retryable_errors": "Oops"}}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"retry": {"non_retryable_errors": [1]}}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.cancel(NULL);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.cancel(42);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  RETURN errors;
END $$;
SELECT durable.start_workflow('bad_activity_options', '{}', workflow_id => 'bad-act');
SELECT jsonb_array_elements_text(durable.result('bad-act', wait => '10 s'));

-- SQL activities: the worker runs the function itself, as the run's owner;
-- its effects commit with its completion, and a failed attempt leaves none.
CREATE TABLE stock (item text PRIMARY KEY, qty int CHECK (qty >= 0));
INSERT INTO stock VALUES ('apple', 2);
CREATE TABLE ledger (wf text, item text, by_role text);
CREATE FUNCTION reserve(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.ledger VALUES (input->>'wf', input->>'item', current_user);
  UPDATE public.stock SET qty = qty - 1 WHERE item = input->>'item';
  RETURN jsonb_build_object('reserved', input->>'item',
                            'left', (SELECT qty FROM public.stock WHERE item = input->>'item'));
END $$;
CREATE FUNCTION buyer(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.sql_activity('public.reserve', input,
      '{"retry": {"maximum_attempts": 2, "initial_interval": "0.1 s", "non_retryable_errors": ["42501"]}}');
EXCEPTION WHEN SQLSTATE 'DU001' THEN
  RETURN jsonb_build_object('failed', SQLERRM);
END $$;
SELECT durable.start_workflow('buyer', '{"wf": "b1", "item": "apple"}', workflow_id => 'b1');
SELECT durable.result('b1', wait => '10 s');
SELECT durable.start_workflow('buyer', '{"wf": "b2", "item": "apple"}', workflow_id => 'b2');
SELECT durable.result('b2', wait => '10 s');
-- out of stock: the CHECK fails, both attempts are rolled back
SELECT durable.start_workflow('buyer', '{"wf": "b3", "item": "apple"}', workflow_id => 'b3');
SELECT durable.result('b3', wait => '10 s');
SELECT * FROM stock;
SELECT * FROM ledger ORDER BY wf;
SELECT event_type, details->>'attempt' AS attempt, details->>'worker' AS worker,
       details->>'error_type' AS error_type, details->'final' AS final
  FROM durable.history('b3') WHERE event_type LIKE 'Activity%' ORDER BY event_id;
-- it runs as the run's owner: a role without rights on the table fails,
-- and 42501 is listed as not retryable
CREATE ROLE regress_durable_clerk;
GRANT USAGE ON SCHEMA public TO regress_durable_clerk;
GRANT EXECUTE ON FUNCTION buyer(jsonb), reserve(jsonb) TO regress_durable_clerk;
SET ROLE regress_durable_clerk;
SELECT durable.start_workflow('buyer', '{"wf": "b4", "item": "apple"}', workflow_id => 'b4');
RESET ROLE;
SELECT durable.result('b4', wait => '10 s');
SELECT count(*) AS attempts FROM durable.history('b4') WHERE event_type = 'ActivityTaskFailed';
-- an unknown or unfit SQL activity function is an error in the workflow code
CREATE FUNCTION bad_sql_activity(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE errors jsonb := '[]';
BEGIN
  BEGIN PERFORM durable.sql_activity('reserve', NULL);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.sql_activity('public.no_such_function', NULL);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.sql_activity('pg_catalog.now()', NULL);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.sql_activity(NULL, NULL);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  RETURN errors;
END $$;
SELECT durable.start_workflow('bad_sql_activity', '{}', workflow_id => 'bad-sql');
SELECT jsonb_array_elements_text(durable.result('bad-sql', wait => '10 s'));
SELECT durable.sql_activity('public.reserve');
REVOKE ALL ON SCHEMA public FROM regress_durable_clerk;
DROP OWNED BY regress_durable_clerk;
DROP ROLE regress_durable_clerk;

-- SQL activities due together run in one transaction (they share its
-- commit), each in its own subtransaction: the one that fails leaves no
-- effects and is retried, the others' effects stay.
CREATE TABLE batch_effects (n int, at timestamptz DEFAULT now());
CREATE SEQUENCE tries_of_5;  -- not transactional: counts the rolled-back try too
CREATE FUNCTION add_batch_row(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.batch_effects (n) VALUES ((input->>'n')::int);
  IF (input->>'n')::int = 5 AND nextval('public.tries_of_5') = 1 THEN
    RAISE EXCEPTION 'not this time';   -- its insert is rolled back with it
  END IF;
  RETURN input->'n';
END $$;
CREATE FUNCTION fan_sql(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE h bigint[];
BEGIN
  SELECT array_agg(durable.sql_activity_async('public.add_batch_row', jsonb_build_object('n', i),
                     '{"retry": {"initial_interval": "0.1 s"}}'))
    INTO h FROM generate_series(1, 10) i;
  RETURN durable.await_all(h);
END $$;
SELECT durable.start_workflow('fan_sql', '{}', workflow_id => 'fan-sql');
SELECT durable.result('fan-sql', wait => '10 s');
-- nine rows from the first batch (one transaction: one now()), n = 5 once,
-- from its retry
SELECT count(*) AS rows, count(DISTINCT n) AS distinct_n,
       count(DISTINCT at) FILTER (WHERE n <> 5) AS transactions_of_the_nine
  FROM batch_effects;
SELECT count(*) AS attempts_of_5 FROM durable.history('fan-sql')
 WHERE event_type = 'ActivityTaskStarted' AND (details->>'handle')::int = 5;
-- slow ones do not share a batch past 50 ms: each commits on its own
CREATE TABLE slow_effects (n int, at timestamptz DEFAULT now());
CREATE FUNCTION add_slow_row(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_sleep(0.06);
  INSERT INTO public.slow_effects (n) VALUES ((input->>'n')::int);
  RETURN input->'n';
END $$;
CREATE FUNCTION fan_slow_sql(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE h bigint[];
BEGIN
  SELECT array_agg(durable.sql_activity_async('public.add_slow_row', jsonb_build_object('n', i)))
    INTO h FROM generate_series(1, 3) i;
  RETURN durable.await_all(h);
END $$;
SELECT durable.start_workflow('fan_slow_sql', '{}', workflow_id => 'fan-slow-sql');
SELECT durable.result('fan-slow-sql', wait => '10 s');
SELECT count(*) AS rows, count(DISTINCT at) AS transactions FROM slow_effects;
-- A task resolves a name once for the calls that use it in a row; names
-- used in turn resolve each to its own function, on replay too.
CREATE FUNCTION tag_a(input jsonb) RETURNS jsonb LANGUAGE sql
  AS $$ SELECT to_jsonb('a' || (input->>'n')) $$;
CREATE FUNCTION tag_b(input jsonb) RETURNS jsonb LANGUAGE sql
  AS $$ SELECT to_jsonb('b' || (input->>'n')) $$;
CREATE FUNCTION alternate_sql(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE tags jsonb := '[]';
BEGIN
  FOR i IN 1..4 LOOP
    tags := tags || durable.sql_activity(
      CASE WHEN i % 2 = 1 THEN 'public.tag_a' ELSE 'public.tag_b(jsonb)' END,
      jsonb_build_object('n', i));
  END LOOP;
  FOR i IN 5..6 LOOP
    tags := tags || durable.sql_activity('public.tag_b', jsonb_build_object('n', i));
  END LOOP;
  RETURN tags;
END $$;
SELECT durable.start_workflow('alternate_sql', '{}', workflow_id => 'alternate-sql');
SELECT durable.result('alternate-sql', wait => '10 s');
SELECT details->>'activity' AS activity, count(*)
  FROM durable.history('alternate-sql') WHERE event_type = 'ActivityTaskScheduled'
 GROUP BY 1 ORDER BY 1;

-- Per-queue controls: at most max_in_flight tasks claimed at once, at most
-- max_starts_per_second started (a token bucket: one second's worth of burst)
CREATE FUNCTION fan_out(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE h bigint[] := '{}';
BEGIN
  FOR i IN 1..(input->>'n')::int LOOP
    h := h || durable.activity_async('job', to_jsonb(i), input->>'queue');
  END LOOP;
  RETURN durable.await_all(h);
END $$;
SELECT durable.configure_task_queue('limited', max_in_flight => 2);
SELECT durable.start_workflow('fan_out', '{"n": 5, "queue": "limited"}', workflow_id => 'limited-1');
CREATE TEMP TABLE got AS SELECT * FROM durable.poll_activity('limited', wait => '10 s', max_tasks => 5);
SELECT count(*) AS claimed FROM got;
SELECT count(*) AS claimed_beyond_limit FROM durable.poll_activity('limited', max_tasks => 5);
SELECT task_queue, backlog, in_flight, retrying, max_in_flight, max_starts_per_second
  FROM durable.task_queue_status WHERE task_queue = 'limited';
SELECT count(*) FILTER (WHERE durable.complete_activity(task_token, input)) AS completed FROM got;
SELECT count(*) AS claimed_after FROM durable.poll_activity('limited', max_tasks => 5);
SELECT durable.configure_task_queue('rated', max_starts_per_second => 0.2);
SELECT durable.start_workflow('fan_out', '{"n": 5, "queue": "rated"}', workflow_id => 'rated-1');
SELECT count(*) AS first_second FROM durable.poll_activity('rated', wait => '10 s', max_tasks => 5);
SELECT count(*) AS right_after FROM durable.poll_activity('rated', max_tasks => 5);
SELECT max_starts_per_second FROM durable.task_queue_status WHERE task_queue = 'rated';
-- lifting the limits
SELECT durable.configure_task_queue('limited');
SELECT count(*) FROM durable.task_queues WHERE task_queue = 'limited';
SELECT durable.configure_task_queue('limited', max_in_flight => 0);
SELECT durable.configure_task_queue('', max_in_flight => 1);
-- a backend remembers that a queue has no limits (its claims skip the
-- lookup) until limits change anywhere: by configure_task_queue(), in its own
-- transaction too, or by rows written by hand (as pg_restore would)
SELECT durable.start_workflow('fan_out', '{"n": 6, "queue": "later"}', workflow_id => 'later-1');
CREATE TEMP TABLE later_got AS SELECT * FROM durable.poll_activity('later', wait => '10 s');
SELECT durable.configure_task_queue('later', max_in_flight => 2);
INSERT INTO later_got SELECT * FROM durable.poll_activity('later', max_tasks => 5);
SELECT count(*) AS in_flight_limit_2 FROM later_got;
BEGIN;
SELECT durable.configure_task_queue('later', max_in_flight => 3);
INSERT INTO later_got SELECT * FROM durable.poll_activity('later', max_tasks => 5);
SELECT count(*) AS in_flight_limit_3 FROM later_got;
ROLLBACK;
UPDATE durable.task_queues SET max_in_flight = 4 WHERE task_queue = 'later';
INSERT INTO later_got SELECT * FROM durable.poll_activity('later', max_tasks => 5);
SELECT count(*) AS in_flight_limit_4 FROM later_got;
DELETE FROM durable.task_queues WHERE task_queue = 'later';
INSERT INTO later_got SELECT * FROM durable.poll_activity('later', max_tasks => 5);
SELECT count(*) AS no_limit FROM later_got;
SELECT count(*) FILTER (WHERE durable.complete_activity(task_token, input)) AS completed FROM later_got;
SELECT durable.result('later-1', wait => '10 s');

-- complete_and_poll: complete one task and claim the next in one round trip
SELECT durable.start_workflow('fan_out', '{"n": 2, "queue": "cp"}', workflow_id => 'cp-1');
SELECT task_token AS token, input FROM durable.poll_activity('cp', wait => '10 s') \gset
\echo :input
SELECT task_token AS token, input FROM durable.complete_and_poll(:'token', :'input', 'cp') \gset
\echo :input
SELECT count(*) AS next_tasks FROM durable.complete_and_poll(:'token', :'input', 'cp');
SELECT durable.result('cp-1', wait => '10 s');
SELECT count(*) FROM durable.complete_and_poll('00000000000000000000000000000000.1.1.00000000000000000000000000000000', NULL, 'cp');

-- A poll that may wait looks first in the caller's transaction itself when
-- the queue is known to have no limits: the claimed row is written by the
-- transaction, not by a subtransaction of it (which would take a second
-- transaction id at every poll).  The first poll of a queue looks its limits
-- up, in a subtransaction.
SELECT durable.start_workflow('fan_out', '{"n": 2, "queue": "at-once"}', workflow_id => 'at-once-1');
CREATE TEMP TABLE at_once AS SELECT * FROM durable.poll_activity('at-once', wait => '10 s');
BEGIN;
INSERT INTO at_once SELECT * FROM durable.poll_activity('at-once', wait => '10 s');
SELECT count(*) AS claimed_by_the_transaction
  FROM durable.activity_tasks t JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'at-once-1'
   AND t.xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text;
COMMIT;
SELECT count(*) FILTER (WHERE durable.complete_activity(task_token, input)) AS completed FROM at_once;
SELECT durable.result('at-once-1', wait => '10 s');

-- Two queues whose names share a hash (the ready index's first column): a
-- poll on one passes over the other's task, older though it is.
SELECT durable.task_queue_hash('q562789') = durable.task_queue_hash('q779192') AS same_hash;
CREATE PROCEDURE wait_for_task_on(queue text) LANGUAGE plpgsql AS $$
BEGIN
  WHILE NOT EXISTS (SELECT FROM durable.activity_tasks WHERE task_queue = queue) LOOP
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT durable.start_workflow('fan_out', '{"n": 1, "queue": "q562789"}', workflow_id => 'hash-1');
CALL wait_for_task_on('q562789');
SELECT durable.start_workflow('fan_out', '{"n": 1, "queue": "q779192"}', workflow_id => 'hash-2');
CALL wait_for_task_on('q779192');
SELECT task_queue, backlog FROM durable.task_queue_status
 WHERE task_queue IN ('q562789', 'q779192') ORDER BY task_queue;
SELECT workflow_id FROM durable.poll_activity('q779192', wait => '10 s');
SELECT workflow_id FROM durable.poll_activity('q562789', wait => '10 s');

-- The engine's statements keep to their indexes, even when their plans are
-- made on tables analyzed nearly empty (a queue's statistics are always
-- stale): with a task waiting behind thousands of others, a poll or a
-- completion must not read the whole table.
ANALYZE durable.activity_tasks, durable.runs, durable.recorded_events, durable.timers;
SELECT pg_stat_force_next_flush();  -- count only what follows
SELECT durable.start_workflow('fan_out', '{"n": 3, "queue": "indexed"}', workflow_id => 'indexed-1');
BEGIN;
SELECT count(*) AS claimed FROM durable.poll_activity('indexed', wait => '10 s');
SELECT count(*) AS claimed FROM durable.poll_activity('indexed');
SELECT count(*) AS claimed FROM durable.poll_activity('indexed');
SELECT count(*) AS claimed FROM durable.poll_activity('indexed');
SELECT count(*) AS claimed FROM durable.poll_activity('indexed');
SELECT count(*) AS claimed FROM durable.poll_activity('indexed');
SELECT count(*) AS claimed FROM durable.poll_activity('indexed');
SELECT relname, seq_scan FROM pg_stat_xact_user_tables
 WHERE schemaname = 'durable' AND relname <> 'token_key' AND seq_scan > 0;
ROLLBACK;
