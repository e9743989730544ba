-- Bad input: every error has its own SQLSTATE, a PostgreSQL-style message
-- and, where it helps, a hint; none writes anything.

-- err(statement): runs it and shows its SQLSTATE, message, detail and hint
CREATE FUNCTION err(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE state text; msg text; detail text; hint text;
BEGIN
  EXECUTE statement;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  RETURN state || ' ' || msg || coalesce(E'\n  DETAIL: ' || nullif(detail, ''), '')
               || coalesce(E'\n  HINT: ' || nullif(hint, ''), '');
END $$;
CREATE FUNCTION wf(input jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT input';
CREATE FUNCTION not_wf(input text) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
CREATE FUNCTION returns_text(input jsonb) RETURNS text LANGUAGE sql AS 'SELECT NULL::text';
CREATE FUNCTION returns_set(input jsonb) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT input';
CREATE FUNCTION waits(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('never_done', NULL, task_queue => 'nobody_polls');
END $$;

-- start_workflow
SELECT err($$SELECT durable.start_workflow('no_such_function')$$);
SELECT err($$SELECT durable.start_workflow('no_such_schema.wf')$$);
SELECT err($$SELECT durable.start_workflow('wf(text)')$$);
SELECT err($$SELECT durable.start_workflow('not_wf')$$);
SELECT err($$SELECT durable.start_workflow('returns_text')$$);
SELECT err($$SELECT durable.start_workflow('returns_set')$$);
SELECT err($$SELECT durable.start_workflow(NULL)$$);
SELECT err($$SELECT durable.start_workflow('wf', NULL)$$);
SELECT err($$SELECT durable.start_workflow('wf', '[1, 2]')$$);
SELECT err($$SELECT durable.start_workflow('wf', '42')$$);
SELECT err($$SELECT durable.start_workflow('wf', '{}', workflow_id => '')$$);
SELECT err($$SELECT durable.start_workflow('wf', '{}', workflow_id => repeat('x', 1001))$$);
SELECT durable.start_workflow('waits', '{}', workflow_id => 'dup') IS NOT NULL AS started;
SELECT err($$SELECT durable.start_workflow('waits', '{}', workflow_id => 'dup')$$);
-- nothing was half-written by the failed starts
SELECT count(*) FROM durable.workflows WHERE workflow_id IN ('dup', '');

-- result, describe, history, retry_workflow_task
SELECT err($$SELECT durable.result('no-such-workflow')$$);
SELECT err($$SELECT durable.result(NULL)$$);
-- raised inside the subtransaction a waiting result() looks in
SELECT err($$SELECT durable.result('no-such-workflow', wait => '1 s')$$);
SELECT err($$SELECT durable.result('dup', wait => '-1 s')$$);
SELECT err($$SELECT * FROM durable.describe('no-such-workflow')$$);
SELECT err($$SELECT * FROM durable.history('no-such-workflow')$$);
SELECT err($$SELECT durable.retry_workflow_task('no-such-workflow')$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT err($$SELECT durable.result('dup', wait => '1 s')$$);
ROLLBACK;
SELECT err($$CALL durable.wait_for_result(NULL)$$);
SELECT err($$CALL durable.wait_for_result('no-such-workflow', wait => '1 s')$$);
SELECT err($$CALL durable.wait_for_result('dup', wait => '-1 s')$$);
-- still running when the wait ends, after looks committed one by one
CALL durable.wait_for_result('dup', wait => '20 ms');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT err($$CALL durable.wait_for_result('dup', wait => '1 s')$$);
ROLLBACK;

-- the deterministic API outside workflow code
SELECT err($$SELECT durable.activity('x')$$);
SELECT err($$SELECT durable.activity_async('x')$$);
SELECT err($$SELECT durable.await(1)$$);
SELECT err($$SELECT durable.await_all(ARRAY[1, 2])$$);
SELECT err($$SELECT durable.now()$$);

-- poll_activity, complete_activity, fail_activity
SELECT err($$SELECT * FROM durable.poll_activity(NULL)$$);
SELECT err($$SELECT * FROM durable.poll_activity('')$$);
SELECT err($$SELECT * FROM durable.poll_activity('q', wait => '-1 s')$$);
SELECT err($$SELECT * FROM durable.poll_activity('q', max_tasks => 0)$$);
SELECT err($$SELECT * FROM durable.poll_activity('q', max_tasks => 1001)$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT err($$SELECT * FROM durable.poll_activity('q', wait => '1 s')$$);
ROLLBACK;
SELECT err($$CALL durable.wait_for_activity_task(NULL)$$);
SELECT err($$CALL durable.wait_for_activity_task('')$$);
SELECT err($$CALL durable.wait_for_activity_task('q', wait => '-1 s')$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT err($$CALL durable.wait_for_activity_task('q', wait => '1 s')$$);
ROLLBACK;
SELECT err($$SELECT durable.complete_activity(NULL)$$);
SELECT err($$SELECT durable.complete_activity('not a token')$$);
SELECT err($$SELECT durable.complete_activity('00000000000000000000000000000000.1.1.00000000000000000000000000000000')$$);
SELECT err($$SELECT durable.complete_activity('1.1.0000')$$);
SELECT err($$SELECT durable.fail_activity('00000000000000000000000000000000.1.1.00000000000000000000000000000000', 'x')$$);
SELECT err($$SELECT durable.fail_activity(NULL, 'x')$$);

-- bad activity options and arguments are errors inside the workflow code
-- (catchable there); uncaught, they fail the run
CREATE FUNCTION bad_options(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE errors jsonb := '[]';
BEGIN
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', input->'options');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"retry": {"maximum_attempts": -1}}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"retry": {"initial_interval": "soon"}}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"retry": {"initial_interval": "-1 s"}}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"retry": {"initial_interval": "1 min", "maximum_interval": "1 s"}}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"retry": {"backoff_coefficient": 0.5}}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '{"retry": 5}');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, 'q', '[1]');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async(NULL, NULL, 'q');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.activity_async('a', NULL, '');
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.sql_activity('', to_jsonb(1));
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.await(99);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  BEGIN PERFORM durable.await_all(ARRAY[NULL::bigint]);
  EXCEPTION WHEN OTHERS THEN errors := errors || to_jsonb(SQLSTATE || ': ' || SQLERRM); END;
  RETURN errors;
END $$;
SELECT durable.start_workflow('bad_options',
    '{"options": {"retry": {"maximum_attempts": 2}, "colour": "red"}}', workflow_id => 'bad-options');
SELECT jsonb_array_elements_text(durable.result('bad-options', wait => '10 s'));
-- no activity was scheduled by any of them
SELECT count(*) FROM durable.poll_activity('q');

-- The engine writes history and task rows itself, by column name: a
-- nullable column added to its tables (as a later version's script might
-- add one) is left NULL, and a column it would have to fill (a default, NOT
-- NULL) is refused rather than left NULL.  Each in a transaction rolled
-- back, which keeps the worker off the tables meanwhile.
BEGIN;
ALTER TABLE durable.recorded_events ADD COLUMN note text;
SELECT durable.start_workflow('bad_options', '{}', workflow_id => 'added-column');
SELECT h.event_id, h.event_type, h.note
  FROM durable.recorded_events h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'added-column';
ROLLBACK;
BEGIN;
ALTER TABLE durable.recorded_events ADD COLUMN source text NOT NULL DEFAULT 'app';
SELECT durable.start_workflow('bad_options', '{}', workflow_id => 'added-column');
ROLLBACK;
-- The same for task rows: the next activity, scheduled by the workflow task
-- that complete_activity() runs, cannot be inserted.
CREATE FUNCTION two_activities(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity('a', NULL, 'added-column-q');
  RETURN durable.activity('b', NULL, 'added-column-q');
END $$;
SELECT durable.start_workflow('two_activities', '{}', workflow_id => 'added-task-column');
SELECT task_token AS first_token FROM durable.poll_activity('added-column-q', wait => '10 s') \gset
BEGIN;
ALTER TABLE durable.activity_tasks ADD COLUMN region text DEFAULT 'eu';
SELECT durable.complete_activity(:'first_token', '1');
ROLLBACK;
-- and with the column gone, the same completion goes through
SELECT durable.complete_activity(:'first_token', '1');
SELECT durable.complete_activity(task_token, '2')
  FROM durable.poll_activity('added-column-q', wait => '10 s');
SELECT durable.result('added-task-column', wait => '10 s');
-- Nothing of ours stays open once a call returns (a call keeps what it opens
-- until then): DDL later in the same transaction finds the tables unused.
SELECT durable.start_workflow('two_activities', '{}', workflow_id => 'ddl-after-calls');
BEGIN;
SELECT durable.complete_activity(task_token, '1')
  FROM durable.poll_activity('added-column-q', wait => '10 s');
ALTER TABLE durable.recorded_events ADD COLUMN note text;
ALTER TABLE durable.activity_tasks ADD COLUMN note text;
ALTER TABLE durable.runs ADD COLUMN note text;
ROLLBACK;
SELECT durable.complete_activity(task_token, '1')
  FROM durable.poll_activity('added-column-q', wait => '10 s');
SELECT durable.complete_activity(task_token, '2')
  FROM durable.poll_activity('added-column-q', wait => '10 s');
SELECT durable.result('ddl-after-calls', wait => '10 s');
