# 200 greet workflows in flight survive an immediate shutdown and a SIGKILL
# of the durable worker: every one finishes exactly once, with the right
# result.  Activity results left for the worker survive a crash too.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DurableTest;

my $node = durable_node('crash');
$node->start;
create_greet($node);
ok(wait_for_worker($node), 'worker started after CREATE EXTENSION');

# Works activities until about $target are done, or all runs are closed.
sub work_until
{
	my ($target, $prefix, $n) = @_;
	my $done = 0;
	for (my $i = 0; $i < 1000 && $done < $target; $i++)
	{
		$done += work_activities($node, 25);
		last if $node->safe_psql('postgres', qq{
SELECT count(*) = $n FROM durable.runs WHERE workflow_id LIKE '$prefix-%' AND status <> 'running'}) eq 't';
	}
	return $done;
}

# --- immediate shutdown in the middle of the run ---
start_greets($node, 'imm', 200);
my $before = work_until(300, 'imm', 200);
ok($before >= 300, "some activities done before the crash ($before)");
my $open = $node->safe_psql('postgres',
	"SELECT count(*) FROM durable.runs WHERE workflow_id LIKE 'imm-%' AND status = 'running'");
ok($open > 0, "runs still open at the crash ($open)");
$node->stop('immediate');
$node->start;
ok(wait_for_worker($node), 'worker back after restart');
work_until(100000, 'imm', 200);
check_greets($node, 'imm', 200);

# --- the worker killed with SIGKILL: the postmaster restarts everything ---
start_greets($node, 'kill', 200);
$before = work_until(200, 'kill', 200);
my $pid = worker_pid($node);
ok($pid, "worker pid $pid");
kill 'KILL', $pid;
# the postmaster resets all backends; wait until a new worker runs
$node->poll_query_until('postgres', qq{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE backend_type = 'durable worker' AND pid <> $pid}) or die 'worker not restarted';
work_until(100000, 'kill', 200);
check_greets($node, 'kill', 200);

like(slurp_file($node->logfile), qr/background worker "durable worker" \(PID \d+\) was terminated by signal 9/,
	'the kill was a real crash of the worker');

# --- results waiting for the worker when the server crashes ---
# An application holds a fan-out's run: the completions do not wait for it,
# they leave their results on the task rows for the worker.  The server
# crashes before the worker could record them; committed, they survive, and
# the worker records them once it is back.
$node->safe_psql('postgres', q{
CREATE FUNCTION crash_fan(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.await_all(ARRAY(SELECT durable.activity_async('part', to_jsonb(i), 'crash-fan')
                                   FROM generate_series(1, 3) i));
END $$;
SELECT durable.start_workflow('crash_fan', '{}', 'fan-1');
});
$node->poll_query_until('postgres', q{
SELECT count(*) = 3 FROM durable.activity_tasks WHERE task_queue = 'crash-fan'})
  or die 'fan-out tasks never made';
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe(q{SELECT 1 FROM durable.runs WHERE workflow_id = 'fan-1' FOR UPDATE});
is($node->safe_psql('postgres', q{
SET lock_timeout = '5s';
SELECT count(*) FILTER (WHERE durable.complete_activity(task_token, input))
  FROM durable.poll_activity('crash-fan', max_tasks => 3)}),
	'3', 'completions of a held run do not wait for it');
is($node->safe_psql('postgres', q{
SELECT string_agg(result::text, ',' ORDER BY handle) FROM durable.activity_tasks
 WHERE task_queue = 'crash-fan' AND status = 'completed'}),
	'1,2,3', 'their results wait on the task rows');
$node->stop('immediate');
eval { $holder->quit };
$node->start;
ok(wait_for_worker($node), 'worker back after the crash');
ok($node->poll_query_until('postgres', q{
SELECT status = 'completed' FROM durable.runs WHERE workflow_id = 'fan-1'}),
	'the worker records the waiting results after the crash');
is($node->safe_psql('postgres', q{SELECT durable.result('fan-1')}), '[1, 2, 3]',
	'with every result');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.history h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'fan-1' AND h.event_type = 'ActivityTaskCompleted'}),
	'3', 'each recorded once');

$node->stop;
done_testing();
