-- Timers, signals, queries and execution timeouts (the worker fires real
-- timers here; durable.fire_timers() skips long ones).

-- Test helper: wait until the run's timers are those of these handles (the
-- worker got there).
CREATE FUNCTION wait_timers(id text, handles int[]) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..1000 LOOP
    IF (SELECT array_agg((t->>'handle')::int ORDER BY (t->>'handle')::int)
          FROM durable.describe(id), jsonb_array_elements(pending_timers) t) = handles THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RETURN false;
END $$;

-- The order example: charge, wait up to three days for approval, sleep an
-- hour, ship.  Queries tell where it is.
CREATE FUNCTION order_flow(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE charge jsonb; approval jsonb;
BEGIN
  PERFORM durable.on_query('stage', '"charging"');
  charge   := durable.activity('charge_card', input, task_queue => 'payments');
  PERFORM durable.on_query('stage', '"awaiting approval"');
  approval := durable.wait_signal('approve', timeout => '3 days');
  IF approval IS NULL THEN
    PERFORM durable.on_query('stage', '"refunding"');
    PERFORM durable.activity('refund', charge, task_queue => 'payments');
    RETURN jsonb_build_object('status', 'expired');
  END IF;
  PERFORM durable.on_query('stage', '"shipping soon"');
  PERFORM durable.sleep('1 hour');
  PERFORM durable.activity('ship', input, task_queue => 'warehouse');
  RETURN jsonb_build_object('status', 'shipped', 'approved_by', approval->'by');
END $$;

SELECT durable.start_workflow('order_flow', '{"order": 42}', workflow_id => 'order-42');
SELECT task_token AS token FROM durable.poll_activity('payments', wait => '10 s') \gset
SELECT durable.query('order-42', 'stage');
SELECT durable.complete_activity(:'token', '{"charge": "ch_1"}');
SELECT wait_timers('order-42', ARRAY[2]);
SELECT durable.query('order-42', 'stage');
SELECT p->>'kind' AS kind, p->>'handle' AS handle,
       (p->>'fire_at')::timestamptz - started_at BETWEEN '3 days' AND '3 days 1 min' AS in_three_days
  FROM durable.describe('order-42'), jsonb_array_elements(pending_timers) p;
-- approval arrives: the three-day timer is canceled, the one-hour sleep starts
SELECT durable.signal('order-42', 'approve', '{"by": "alice"}');
SELECT wait_timers('order-42', ARRAY[3]) AS sleeping;
SELECT durable.query('order-42', 'stage');
-- a test need not wait an hour
SELECT durable.fire_timers('order-42');
SELECT task_token AS token, activity FROM durable.poll_activity('warehouse', wait => '10 s') \gset
\echo :activity
SELECT durable.complete_activity(:'token');
SELECT durable.result('order-42', wait => '10 s');
SELECT event_id, event_type, details - 'retry_policy' - 'fire_at' AS details
  FROM durable.history('order-42');
-- queries work on closed runs too, and write nothing
SELECT durable.query('order-42', 'stage');
SELECT history_length FROM durable.describe('order-42');

-- no approval within the timeout: the wait returns NULL, the order is refunded
SELECT durable.start_workflow('order_flow', '{"order": 43}', workflow_id => 'order-43');
SELECT task_token AS token FROM durable.poll_activity('payments', wait => '10 s') \gset
SELECT durable.complete_activity(:'token', '{"charge": "ch_2"}');
SELECT wait_timers('order-43', ARRAY[2]);
SELECT durable.fire_timers('order-43');
SELECT task_token AS token, activity, input FROM durable.poll_activity('payments', wait => '10 s') \gset
\echo :activity :input
SELECT durable.complete_activity(:'token');
SELECT durable.result('order-43', wait => '10 s');
-- a signal to a closed run, or to no run, is an error
SELECT durable.signal('order-43', 'approve', '{"by": "bob"}');
SELECT durable.signal('no-such-order', 'approve');

-- Real timers: a short sleep fires by itself.
CREATE FUNCTION napper(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := durable.now();
BEGIN
  PERFORM durable.sleep((input->>'nap')::interval);
  RETURN jsonb_build_object('slept_enough', durable.now() - t0 >= (input->>'nap')::interval);
END $$;
SELECT durable.start_workflow('napper', '{"nap": "0.2 s"}', workflow_id => 'nap-1');
SELECT durable.result('nap-1', wait => '10 s');
SELECT event_type, details->>'duration' AS duration FROM durable.history('nap-1')
 WHERE event_type LIKE 'Timer%';

-- sleep_until, timer_async and await_any: the first of an activity and a
-- timer, as the history recorded it
CREATE FUNCTION racer(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE work bigint; deadline bigint; first bigint;
BEGIN
  work := durable.activity_async('work', NULL, 'racing');
  deadline := durable.timer_async((input->>'deadline')::interval);
  first := durable.await_any(ARRAY[work, deadline]);
  PERFORM durable.sleep_until(durable.now() - interval '1 day');  -- in the past: fires at once
  RETURN jsonb_build_object('first', CASE first WHEN work THEN 'work' ELSE 'deadline' END);
END $$;
SELECT durable.start_workflow('racer', '{"deadline": "0.2 s"}', workflow_id => 'race-timer');
SELECT durable.result('race-timer', wait => '10 s');
SELECT durable.start_workflow('racer', '{"deadline": "1 hour"}', workflow_id => 'race-work');
SELECT count(*) FROM (SELECT durable.complete_activity(task_token, '"done"')
  FROM durable.poll_activity('racing', wait => '10 s', max_tasks => 5) WHERE workflow_id = 'race-work') c;
SELECT durable.result('race-work', wait => '10 s');
-- the hour-long timer died with its run
SELECT pending_timers FROM durable.describe('race-work');

-- Timers that fall due together fire together (one statement for the
-- batch): three of one run, due at the same instant, get consecutive event
-- ids in the order they were started, and 50 runs sleeping until the same
-- instant all wake up, each with its own TimerFired.
CREATE FUNCTION triple(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE h bigint[];
BEGIN
  h := ARRAY[durable.timer_async('0.3 s'), durable.timer_async('0.3 s'), durable.timer_async('0.3 s')];
  PERFORM durable.await_all(h);
  RETURN to_jsonb(h);
END $$;
SELECT durable.start_workflow('triple', '{}', workflow_id => 'triple-1');
SELECT durable.result('triple-1', wait => '10 s');
SELECT event_id - min(event_id) OVER () AS nth, details->>'handle' AS handle
  FROM durable.history('triple-1') WHERE event_type = 'TimerFired' ORDER BY event_id;
CREATE FUNCTION sleeper(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.sleep_until((input->>'at')::timestamptz);
  RETURN input->'n';
END $$;
SELECT count(durable.start_workflow('sleeper',
         jsonb_build_object('at', now() + interval '0.5 s', 'n', i), 'sleeper-' || i))
  FROM generate_series(1, 50) i;
SELECT sum(durable.result('sleeper-' || i, wait => '10 s')::int) FROM generate_series(1, 50) i;
SELECT count(*) AS timers_fired, count(DISTINCT run_id) AS runs
  FROM durable.history h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id LIKE 'sleeper-%' AND h.event_type = 'TimerFired';

-- Signals are received in arrival order, each once; one sent before the
-- code waits for it is kept until it does.
CREATE FUNCTION collector(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE items jsonb := '[]';
BEGIN
  FOR i IN 1..(input->>'n')::int LOOP
    items := items || jsonb_build_array(durable.wait_signal('item'));
  END LOOP;
  RETURN items;
END $$;
BEGIN;
SELECT durable.signal_with_start('collector', 'collect-1', 'item', '"first"', input => '{"n": 3}');
SELECT durable.signal('collect-1', 'item', '"second"');
COMMIT;
SELECT durable.signal('collect-1', 'other', '"ignored"');
SELECT durable.signal_with_start('collector', 'collect-1', 'item', NULL, input => '{"n": 99}');
SELECT durable.result('collect-1', wait => '10 s');
SELECT count(*) AS runs FROM durable.workflows WHERE workflow_id = 'collect-1';
SELECT event_type, details FROM durable.history('collect-1') WHERE event_type = 'WorkflowExecutionSignaled';
-- a signal inside a transaction that rolls back never existed
SELECT durable.start_workflow('collector', '{"n": 1}', workflow_id => 'collect-2');
BEGIN;
SELECT durable.signal('collect-2', 'item', '"rolled back"');
ROLLBACK;
SELECT durable.signal('collect-2', 'item', '"kept"');
SELECT durable.result('collect-2', wait => '10 s');

-- Query handlers take arguments; unknown queries are errors.
CREATE FUNCTION cart_item(state jsonb, args jsonb) RETURNS jsonb LANGUAGE sql
  AS $$ SELECT state -> (args->>'index')::int $$;
CREATE FUNCTION cart(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE items jsonb := '[]'; item jsonb;
BEGIN
  LOOP
    PERFORM durable.on_query('count', to_jsonb(jsonb_array_length(items)));
    PERFORM durable.on_query('item', items, handler => 'public.cart_item');
    item := durable.wait_signal('add');
    EXIT WHEN item = '"checkout"';
    items := items || jsonb_build_array(item);
  END LOOP;
  RETURN items;
END $$;
SELECT durable.start_workflow('cart', '{}', workflow_id => 'cart-1');
SELECT durable.signal('cart-1', 'add', '"apple"');
SELECT durable.signal('cart-1', 'add', '"pear"');
SELECT durable.query('cart-1', 'count');
SELECT durable.query('cart-1', 'item', '{"index": 1}');
SELECT durable.query('cart-1', 'price');
SELECT durable.query('no-such-cart', 'count');
SELECT durable.query('cart-1', NULL);
SELECT durable.signal('cart-1', 'add', '"checkout"');
SELECT durable.result('cart-1', wait => '10 s');

-- An execution timeout closes the run as timed out; its activities' tokens
-- stop working.
CREATE FUNCTION stuck(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('slow', NULL, 'stuck_queue');
END $$;
SELECT durable.start_workflow('stuck', '{}', workflow_id => 'stuck-1', execution_timeout => '2 s');
SELECT task_token AS token FROM durable.poll_activity('stuck_queue', wait => '10 s') \gset
SELECT durable.result('stuck-1', wait => '10 s');
SELECT status, closed_at IS NOT NULL AS closed, pending_activities, pending_timers
  FROM durable.describe('stuck-1');
SELECT durable.complete_activity(:'token', '"too late"');
SELECT event_type, details FROM durable.history('stuck-1') WHERE event_type LIKE 'WorkflowExecution%';
SELECT durable.start_workflow('stuck', '{}', execution_timeout => '0 s');
SELECT durable.start_workflow('stuck', '{}', execution_timeout => '-1 s');

-- A run that closes drops what it left behind: its execution timeout's timer,
-- activities and timers it never awaited.
CREATE FUNCTION walks_away(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  IF (input->>'leave')::bool THEN
    PERFORM durable.activity_async('never', NULL, 'walks_away_queue');
    PERFORM durable.timer_async('1 hour');
  END IF;
  RETURN to_jsonb(durable.activity('once', NULL, 'walks_away_queue'));
END $$;
SELECT durable.start_workflow('walks_away', '{"leave": false}', workflow_id => 'walks-1',
                              execution_timeout => '1 hour');
SELECT durable.start_workflow('walks_away', '{"leave": true}', workflow_id => 'walks-2');
DO $$
DECLARE done int := 0;
BEGIN
  -- complete the two 'once' activities; 'never' stays claimed and open
  WHILE done < 2 LOOP
    SELECT done + count(*) FILTER (WHERE activity = 'once' AND durable.complete_activity(task_token, '1'))
      INTO done FROM durable.poll_activity('walks_away_queue', wait => '10 s');
  END LOOP;
END $$;
SELECT durable.result('walks-1', wait => '10 s'), durable.result('walks-2', wait => '10 s');
SELECT workflow_id, status, pending_activities, pending_timers
  FROM durable.describe('walks-1') UNION ALL
SELECT workflow_id, status, pending_activities, pending_timers FROM durable.describe('walks-2');
-- A started task of a closed run (written by hand here: a close drops
-- them) whose start_to_close has run out: the worker drops it, as the close
-- would have, rather than finding it due again and again.
INSERT INTO durable.activity_tasks (run_id, handle, workflow_id, activity, task_queue,
                                    retry_policy, timeouts, status, scheduled_at, ready_at,
                                    started_at, start_to_close_at)
SELECT run_id, 99, workflow_id, 'left', 'walks_away_queue', '{}', '{"start_to_close": 1}',
       'started', now(), now(), now() - interval '2 s', now() - interval '1 s'
  FROM durable.runs WHERE workflow_id = 'walks-1';
-- any commit that gives the worker work wakes it
SELECT durable.start_workflow('walks_away', '{"leave": false}', workflow_id => 'walks-3');
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM durable.activity_tasks WHERE activity = 'left');
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT count(*) AS left_behind FROM durable.activity_tasks WHERE activity = 'left';

-- Bad arguments to the new functions.
SELECT durable.signal(NULL, 'x');
SELECT durable.signal('cart-1', NULL);
SELECT durable.signal('cart-1', '');
SELECT durable.fire_timers('no-such-run');
SELECT durable.sleep('1 s');
SELECT durable.wait_signal('x');
SELECT durable.timer_async('1 s');
SELECT durable.on_query('x', '1');
SELECT durable.await_any(ARRAY[1]);
CREATE FUNCTION bad_timers(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE errors jsonb := '[]';
BEGIN
  BEGIN PERFORM durable.sleep(NULL);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.sleep('-1 s');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.wait_signal(NULL);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.wait_signal('x', '-5 min');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.sleep_until(NULL);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.await_any(ARRAY[]::bigint[]);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.on_query(NULL, '1');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  RETURN errors;
END $$;
SELECT durable.start_workflow('bad_timers', '{}', workflow_id => 'bad-timers');
SELECT jsonb_array_elements_text(durable.result('bad-timers', wait => '10 s'));

-- The worker of this database, as seen by operators.
SELECT database = current_database() AS this_database, pid > 0 AS has_pid, wakeups > 0 AS woke
  FROM durable.worker_status() WHERE database = current_database();

-- Workflow code may query another run (a read); its own replay goes on.
CREATE FUNCTION asks_cart(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE n jsonb;
BEGIN
  n := durable.query('cart-1', 'count');
  PERFORM durable.sleep('0.1 s');
  RETURN jsonb_build_object('cart_count', n, 'now_works', durable.now() IS NOT NULL);
END $$;
SELECT durable.start_workflow('asks_cart', '{}', workflow_id => 'asks-1');
SELECT durable.result('asks-1', wait => '10 s');

-- A failing durable call nested in workflow code (starting a workflow is a
-- write) fails that task; the worker goes on with the other runs of its batch.
CREATE FUNCTION starts_child(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.start_workflow('public.napper', '{"nap": "0 s"}');
  RETURN '{}';
END $$;
SELECT count(durable.start_workflow(CASE WHEN i % 2 = 0 THEN 'starts_child' ELSE 'napper' END,
                                    '{"nap": "0.01 s"}', 'batch-' || i))
  FROM generate_series(1, 20) i;
SELECT durable.result('batch-' || i, wait => '10 s') FROM generate_series(1, 19, 2) i;
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN (SELECT count(*) FROM durable.runs
                WHERE workflow_id LIKE 'batch-%' AND task_failure IS NOT NULL) = 10;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT count(*) AS parked FROM durable.runs
 WHERE workflow_id LIKE 'batch-%' AND task_failure->>'cause' = 'write_in_workflow_code';

-- The worker runs a batch's tasks in one transaction; an engine error in one
-- of them (here, an event it cannot read, written by hand) rolls the batch
-- back, and the batch runs again task by task: that run is parked with the
-- error, every other one of the batch goes on, once.
CREATE FUNCTION waits_for_go(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN jsonb_build_object('got', durable.wait_signal('go'),
                            'at_step', durable.activity('bump', '{}', task_queue => 'never'));
END $$;
SELECT count(durable.start_workflow('waits_for_go', '{}', 'go-' || i))
  FROM generate_series(1, 6) i;
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM durable.runs
                           WHERE workflow_id LIKE 'go-%' AND task_pending);
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
BEGIN;
INSERT INTO durable.recorded_events (run_id, event_id, event_time, event_type, details)
SELECT run_id, next_event_id, now(), 'ActivityTaskCompleted', '{}'
  FROM durable.runs WHERE workflow_id = 'go-4';
UPDATE durable.runs SET next_event_id = next_event_id + 1 WHERE workflow_id = 'go-4';
SELECT count(durable.signal('go-' || i, 'go', to_jsonb(i))) FROM generate_series(1, 6) i;
COMMIT;
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM durable.runs
                           WHERE workflow_id LIKE 'go-%' AND task_pending
                             AND task_failure IS NULL);
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT workflow_id, task_failure->>'cause' AS cause,
       task_failure->'failure'->>'message' AS message,
       (SELECT count(*) FROM durable.activity_tasks t WHERE t.run_id = r.run_id) AS tasks,
       (SELECT count(*) FROM durable.history h
         WHERE h.run_id = r.run_id AND h.event_type = 'WorkflowTaskCompleted') AS tasks_completed
  FROM durable.runs r WHERE workflow_id LIKE 'go-%' ORDER BY workflow_id;

-- The worker's queue (durable.due_tasks) holds exactly the runs with a
-- workflow task due: running, not parked, task pending (the parked runs
-- above included).
SELECT count(*) AS queue_mismatches
  FROM durable.runs r FULL JOIN durable.due_tasks d USING (run_id)
 WHERE (d.run_id IS NOT NULL) IS DISTINCT FROM
       (r.task_pending AND r.task_failure IS NULL AND r.status = 'running');
-- A queue row with no run behind it (left by a hand) is dropped by the
-- worker rather than kept at the head of the queue for ever.
BEGIN;
INSERT INTO durable.due_tasks VALUES ('00000000-0000-0000-0000-000000000001', '-infinity');
SELECT durable.start_workflow('napper', '{"nap": "0 s"}', 'wakes-the-worker');
COMMIT;
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM durable.due_tasks
                           WHERE run_id = '00000000-0000-0000-0000-000000000001');
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT count(*) AS stale_queue_rows FROM durable.due_tasks
 WHERE run_id = '00000000-0000-0000-0000-000000000001';
SELECT durable.result('wakes-the-worker', wait => '10 s');

-- A run closed by its first workflow task (the worker's, which does not read
-- the run's one event) still drops its execution timeout's timer.
CREATE FUNCTION returns_at_once(input jsonb) RETURNS jsonb LANGUAGE sql
  AS $$ SELECT '"done"'::jsonb $$;
SELECT durable.start_workflow('returns_at_once', '{}', workflow_id => 'at-once',
                              execution_timeout => '1 hour');
SELECT durable.result('at-once', wait => '10 s');
SELECT count(*) AS timers_left
  FROM durable.timers t JOIN durable.runs r USING (run_id) WHERE r.workflow_id = 'at-once';
