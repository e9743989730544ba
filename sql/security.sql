-- Workflow code runs as the role that started the run, never as the
-- worker's superuser; roles see only their own runs; state tables are not
-- writable by users.
CREATE ROLE regress_durable_alice;
CREATE ROLE regress_durable_bob;
CREATE TABLE secret_plans (plan text);
INSERT INTO secret_plans VALUES ('world domination');
REVOKE ALL ON secret_plans FROM PUBLIC;
CREATE SCHEMA alice_app AUTHORIZATION regress_durable_alice;

SET ROLE regress_durable_alice;
CREATE FUNCTION alice_app.whoami(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.activity('noop', NULL, task_queue => 'security');
  RETURN jsonb_build_object('current_user', current_user,
                            'search_path', current_setting('search_path'),
                            'read_only', current_setting('transaction_read_only'));
END $$;
CREATE FUNCTION alice_app.snoop(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN to_jsonb((SELECT plan FROM public.secret_plans LIMIT 1));
END $$;
SELECT durable.start_workflow('alice_app.whoami', '{}', workflow_id => 'alice-1');
SELECT durable.start_workflow('alice_app.snoop', '{}', workflow_id => 'alice-snoop');
-- alice cannot write the engine's tables, nor read the token key
INSERT INTO durable.runs (run_id, workflow_id, workflow, owner, input, started_at)
  VALUES (gen_random_uuid(), 'forged', 'x', 'regress_durable_alice', '{}', now());
UPDATE durable.runs SET status = 'completed';
DELETE FROM durable.recorded_events;
SELECT * FROM durable.token_key;
-- nor act as an activity worker unless granted: polling hands out other
-- roles' inputs
SELECT * FROM durable.poll_activity('security');
CALL durable.wait_for_activity_task('security');
SELECT durable.complete_activity('00000000000000000000000000000000.1.1.00000000000000000000000000000000');
RESET ROLE;
GRANT EXECUTE ON FUNCTION durable.poll_activity(text, text, interval, int) TO regress_durable_bob;
SET ROLE regress_durable_bob;
SELECT count(*) FROM durable.poll_activity('nothing-here');
RESET ROLE;

-- the activity worker completes alice's activity
SELECT task_token AS token FROM durable.poll_activity('security', wait => '10 s') \gset
SELECT durable.complete_activity(:'token');
SELECT durable.result('alice-1', wait => '10 s');
SELECT owner FROM durable.describe('alice-1');
SELECT durable.result('alice-snoop', wait => '10 s');

-- alice sees her run's events, the attempt's start (kept on the row of its
-- completion) included
SET ROLE regress_durable_alice;
SELECT h.event_type FROM durable.history h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'alice-1' AND h.event_type LIKE 'Activity%' ORDER BY h.event_id;
RESET ROLE;

-- bob sees none of alice's runs
SET ROLE regress_durable_bob;
SELECT count(*) FROM durable.workflows WHERE workflow_id LIKE 'alice%';
SELECT count(*) FROM durable.history h;
SELECT count(*) FROM durable.recorded_events;
SELECT * FROM durable.describe('alice-1');
SELECT durable.result('alice-1');
-- and bob cannot start alice's workflows
SELECT durable.start_workflow('alice_app.whoami', '{}');
RESET ROLE;

-- privileges are checked again when the code runs: revoked, the task fails
SET ROLE regress_durable_alice;
SELECT durable.start_workflow('alice_app.whoami', '{}', workflow_id => 'alice-2');
RESET ROLE;
SELECT task_token AS token FROM durable.poll_activity('security', wait => '10 s') \gset
REVOKE USAGE ON SCHEMA alice_app FROM regress_durable_alice;
SELECT durable.complete_activity(:'token');
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN (SELECT task_failure IS NOT NULL FROM durable.describe('alice-2'));
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT status, task_failure->>'cause' AS cause, task_failure->'failure'->>'message' AS message
  FROM durable.describe('alice-2');
GRANT USAGE ON SCHEMA alice_app TO regress_durable_alice;
SET ROLE regress_durable_alice;
SELECT durable.retry_workflow_task('alice-2');
RESET ROLE;
SELECT durable.result('alice-2', wait => '10 s') ->> 'current_user' AS ran_as;

-- The engine resolves the names in its statements under a search_path of
-- its own, whatever the caller's: an operator that shadows pg_catalog's in a
-- schema the caller puts first is never called (the engine's statements run
-- as the extension's owner).
SET ROLE regress_durable_alice;
CREATE FUNCTION alice_app.hijacked_texteq(a text, b text) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'hijacked, running as %', current_user;
  RETURN a OPERATOR(pg_catalog.=) b;
END $$;
CREATE OPERATOR alice_app.= (LEFTARG = text, RIGHTARG = text, FUNCTION = alice_app.hijacked_texteq);
SET search_path = alice_app, pg_catalog, public;
SELECT 'x'::text = 'x'::text AS shadowed_here;
SELECT durable.result('alice-2') ->> 'current_user' AS read_without_it;
SELECT durable.start_workflow('alice_app.whoami', '{}', workflow_id => 'alice-3');
RESET search_path;
RESET ROLE;

DROP SCHEMA alice_app CASCADE;
DROP TABLE secret_plans;
DROP OWNED BY regress_durable_alice, regress_durable_bob;
DROP ROLE regress_durable_alice;
DROP ROLE regress_durable_bob;
