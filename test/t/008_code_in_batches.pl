# The worker runs many workflow tasks in one transaction, and PL/pgSQL
# workflow code stays on its fast path in all of them: an expression that a
# suspend interrupted in one task is evaluated without the executor in the
# next tasks of the batch, whatever the statement it is in (an assignment,
# an IF, a DECLARE, an EXIT WHEN, a helper function's RETURN), and in a
# function with a SET clause (called through fmgr's wrapper).  auto_explain
# logs every statement the executor runs in the worker, nested ones
# included: the code's calls must not be among them.  Without the engine's
# care, PL/pgSQL would keep each interrupted expression "in use" until the
# transaction ends and run it through SPI in every later task.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DurableTest;

my $node = durable_node('batches');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'durable, auto_explain'
auto_explain.log_min_duration = 0
auto_explain.log_nested_statements = on
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION durable;
CREATE FUNCTION by_assignment(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..3 LOOP
    total := total + durable.activity('batched', to_jsonb(i), 'batched')::int;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
CREATE FUNCTION by_condition(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..3 LOOP
    IF durable.activity('batched', to_jsonb(i), 'batched')::int > 0 THEN
      total := total + i;
    END IF;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
CREATE FUNCTION by_declaration(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..3 LOOP
    DECLARE step int := durable.activity('batched', to_jsonb(i), 'batched')::int;
    BEGIN
      total := total + step;
    END;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
CREATE FUNCTION by_exit(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE i int := 0; total int := 0;
BEGIN
  LOOP
    i := i + 1;
    total := total + i;
    EXIT WHEN durable.activity('batched', to_jsonb(i), 'batched')::int >= 3;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
CREATE FUNCTION by_set_clause(input jsonb) RETURNS jsonb LANGUAGE plpgsql
  SET search_path = pg_catalog, public AS $$
DECLARE total int := 0; step int;
BEGIN
  FOR i IN 1..3 LOOP
    step := durable.activity('batched', to_jsonb(i), 'batched')::int;
    total := total + step;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
CREATE FUNCTION batched_step(n int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('batched', to_jsonb(n), 'batched')::int;
END $$;
CREATE FUNCTION by_helper(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..3 LOOP
    total := total + public.batched_step(i);
  END LOOP;
  RETURN to_jsonb(total);
END $$;
});
ok(wait_for_worker($node), 'worker started');

# five runs of each, their tasks due together at every step: one batch each
my @workflows = qw(by_assignment by_condition by_declaration by_exit by_helper by_set_clause);
my $runs = 5 * @workflows;
$node->safe_psql('postgres', join('', map { qq{
SELECT count(durable.start_workflow('$_', '{}', '$_-' || i)) FROM generate_series(1, 5) i;} } @workflows));
for my $step (1 .. 3)
{
	ok($node->poll_query_until('postgres', qq{
SELECT count(*) = $runs FROM durable.activity_tasks WHERE task_queue = 'batched' AND status = 'scheduled'}),
		"step $step: every run waits for its activity");
	# completed in one transaction, the next tasks left to the worker
	is($node->safe_psql('postgres', q{
SET durable.eager_workflow_tasks = off;
SELECT count(durable.complete_activity(task_token, input))
  FROM durable.poll_activity('batched', max_tasks => 100);}), $runs,
		"step $step: all activities completed");
}
ok($node->poll_query_until('postgres', qq{
SELECT count(*) = $runs FROM durable.runs WHERE status <> 'running'}), 'all runs closed');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.runs WHERE status = 'completed' AND result = '6'}),
	$runs, 'every run completed with the sum of its three steps');
cmp_ok($node->safe_psql('postgres', q{
SELECT max(n) FROM (SELECT count(*) AS n FROM durable.runs GROUP BY xmin::text) b}),
	'>', 1, 'the last tasks ran in a shared batch');

my $log = slurp_file($node->logfile);
my $explained = () = $log =~ /Query Text: .*SELECT count\(durable\.complete_activity/g;
cmp_ok($explained, '>', 0, 'auto_explain logs the statements the executor runs');
my @code = $log =~ /Query Text: (.*durable\.activity\('batched'.*)/g;
is(scalar(@code), 0, 'no call of the workflow code went through the executor')
  or diag(join("\n", @code[0 .. ($#code < 9 ? $#code : 9)]));

$node->stop;
done_testing();
