# Workflow tasks are run oldest first: when tasks fall due faster than the
# worker runs them, each waits its turn, and none waits behind newer ones
# (they used to be taken in run_id order: a run whose uuid sorted late could
# wait as long as new ones kept coming).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DurableTest;

my $node = durable_node('fairness');
# one task per batch, so that the order of the batches is the order of the tasks
$node->append_conf('postgresql.conf', 'durable.task_batch_size = 1');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION durable;
-- a workflow task that takes its time: the worker falls behind
CREATE FUNCTION slowpoke(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_sleep(0.3);
  RETURN input;
END $$;
});
ok(wait_for_worker($node), 'worker started');

$node->safe_psql('postgres', q{SELECT durable.start_workflow('slowpoke', '{}', workflow_id => 'busy')});
usleep(50_000);
# while the worker is busy, eight runs fall due one after the other
for my $i (1 .. 8)
{
	$node->safe_psql('postgres',
		"SELECT durable.start_workflow('slowpoke', '{\"n\": $i}', workflow_id => 'fair-$i')");
	usleep(10_000);
}
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 8 FROM durable.runs WHERE workflow_id LIKE 'fair-%' AND status = 'completed'}),
	'all runs complete');
is($node->safe_psql('postgres', q{
SELECT string_agg(workflow_id, ',' ORDER BY closed_at) FROM durable.runs WHERE workflow_id LIKE 'fair-%'}),
	join(',', map { "fair-$_" } 1 .. 8),
	'their tasks ran in the order they fell due');

$node->stop;
done_testing();
