# 200 greet workflows in flight survive an immediate shutdown and a SIGKILL
# of the durable worker: every one finishes exactly once, with the right
# result.
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

$node->stop;
done_testing();
