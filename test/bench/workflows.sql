-- The benchmarks' tables and workflows (test/bench/bench.py, callgrind.sh).
DROP TABLE IF EXISTS bench_ceiling, bench_effects;
CREATE TABLE bench_ceiling (id bigserial PRIMARY KEY, v int);
CREATE TABLE bench_effects (workflow text, step int);
CREATE OR REPLACE FUNCTION bench_steps(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..(input->>'steps')::int LOOP
    total := total + (durable.activity('step', to_jsonb(i), input->>'queue'))::int;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
-- bench_steps with a 60 s start_to_close on each activity, as real ones have.
CREATE OR REPLACE FUNCTION bench_timed_steps(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..(input->>'steps')::int LOOP
    total := total + (durable.activity('step', to_jsonb(i), input->>'queue',
                                       '{"start_to_close": 60}'))::int;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
-- The same sequence of activities with nothing else in the loop: replaying
-- it measures what a replayed call costs durable itself.
CREATE OR REPLACE FUNCTION bench_bare_steps(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE queue text := input->>'queue'; r jsonb;
BEGIN
  FOR i IN 1..(input->>'steps')::int LOOP
    r := durable.activity('step', NULL, queue);
  END LOOP;
  RETURN r;
END $$;
CREATE OR REPLACE FUNCTION bench_fanout(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE h bigint[];
BEGIN
  SELECT array_agg(durable.activity_async('part', to_jsonb(i), input->>'queue'))
    INTO h FROM generate_series(1, (input->>'n')::int) i;
  RETURN jsonb_array_length(durable.await_all(h));
END $$;
CREATE OR REPLACE FUNCTION bench_add(input jsonb) RETURNS jsonb LANGUAGE sql AS $$
  INSERT INTO public.bench_effects VALUES (input->>'workflow', (input->>'step')::int)
  RETURNING to_jsonb(step)
$$;
CREATE OR REPLACE FUNCTION bench_sql_steps(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..(input->>'steps')::int LOOP
    PERFORM durable.sql_activity('public.bench_add',
              jsonb_build_object('workflow', input->>'id', 'step', i));
  END LOOP;
  RETURN '{}';
END $$;
CREATE OR REPLACE FUNCTION bench_sleeper(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.sleep_until((input->>'at')::timestamptz);
  RETURN '{}';
END $$;
