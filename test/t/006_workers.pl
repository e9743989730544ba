# The example activity workers (Node.js, Python, shell) against a real
# server: each runs greet workflows to the end; a worker killed in the middle
# of a long activity loses nothing (the task comes back after its heartbeat
# timeout and resumes from its last heartbeat, and completes once); a
# graceful stop finishes the task in hand; idle, the Node.js and Python
# workers hold no snapshot; 50 idle pollers on 5 queues use no
# CPU and each queue's task reaches one of them.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);
use DurableTest;

my $examples = "$FindBin::RealBin/../../examples";
my $node = durable_node('workers');
$node->start;
create_greet($node);
$node->safe_psql('postgres', q{
CREATE FUNCTION long_job(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('long', input, 'default',
           '{"heartbeat": "1 s", "retry": {"initial_interval": "0.1 s"}}');
END $$;
});

my %env = (PGHOST => $node->host, PGPORT => $node->port, PGDATABASE => 'postgres');
local @ENV{ keys %env } = values %env;

sub start_worker
{
	my ($cmd, $log) = @_;
	my $h = IPC::Run::start($cmd, '>', $log, '2>&1');
	return $h;
}

sub wait_done
{
	my ($prefix, $n) = @_;
	return $node->poll_query_until('postgres', qq{
SELECT count(*) = $n FROM durable.runs WHERE workflow_id LIKE '$prefix-%' AND status = 'completed'});
}

# --- each example worker runs greet workflows to the end ---
my $node_log = '';
my $nodejs = start_worker([ 'node', "$examples/node/worker.js", '--concurrency', '4', '--name', 'node-a' ], \$node_log);
start_greets($node, 'js', 20);
ok(wait_done('js', 20), 'the Node.js worker (4 at a time) ran 20 greet workflows');
check_greets($node, 'js', 20);
# idle, its four loops wait in CALL durable.wait_for_activity_task, and hold
# no snapshot while they wait (a waiting SELECT would: backend_xmin)
ok($node->poll_query_until('postgres', q{
SELECT count(*) FILTER (WHERE backend_xmin IS NULL) = 4 AND count(*) = 4 FROM pg_stat_activity
 WHERE application_name LIKE 'node-a/%' AND wait_event_type = 'Extension'}),
	'the idle Node.js worker waits in a CALL that holds no snapshot');

$nodejs->signal('TERM');
$nodejs->finish;

my $py_log = '';
my $python = start_worker([ '/usr/bin/python3', "$examples/python/worker.py", 'default', 'py-a' ], \$py_log);
start_greets($node, 'py', 10);
ok(wait_done('py', 10), 'the Python worker ran 10 greet workflows');
check_greets($node, 'py', 10);
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE application_name = 'py-a' AND wait_event_type = 'Extension' AND backend_xmin IS NULL}),
	'and so does the idle Python worker');
$python->signal('TERM');
$python->finish;
like($py_log, qr/py-a: stopped/, 'the Python worker stops gracefully on SIGTERM');

# --- kill a worker (SIGKILL) in the middle of a long activity ---
my $doomed_log = '';
my $doomed = start_worker([ 'node', "$examples/node/worker.js", '--concurrency', '1', '--name', 'doomed' ], \$doomed_log);
$node->safe_psql('postgres',
	q{SELECT durable.start_workflow('long_job', '{"steps": 30, "step_ms": 100}', workflow_id => 'long-1')});
$node->poll_query_until('postgres', q{
SELECT (heartbeat_details->>'done')::int >= 5 FROM durable.activity_tasks WHERE workflow_id = 'long-1'})
  or die 'the long activity never made progress';
$doomed->signal('KILL');
$doomed->finish;
my $done_at_kill = $node->safe_psql('postgres',
	q{SELECT heartbeat_details->>'done' FROM durable.activity_tasks WHERE workflow_id = 'long-1'});
ok($done_at_kill >= 5, "the worker died after $done_at_kill of 30 steps");

my $rescue_log = '';
my $rescue = start_worker([ '/usr/bin/python3', "$examples/python/worker.py", 'default', 'rescuer' ], \$rescue_log);
my $result = $node->safe_psql('postgres', q{SELECT durable.result('long-1', wait => '60 s')});
like($result, qr/"done": 30/, 'the activity finished on another worker');
my ($resumed) = $result =~ /"resumed_from": (\d+)/;
ok($resumed >= $done_at_kill, "resuming from its last heartbeat ($resumed), not from zero");
is($node->safe_psql('postgres', q{
SELECT string_agg(event_type || coalesce(':' || (details->>'timeout'), ''), ', ' ORDER BY event_id)
  FROM durable.history('long-1') WHERE event_type LIKE 'ActivityTask%' AND event_type <> 'ActivityTaskScheduled'}),
	'ActivityTaskStarted, ActivityTaskTimedOut:heartbeat, ActivityTaskStarted, ActivityTaskCompleted',
	'one heartbeat timeout, one completion');
$rescue->signal('TERM');
$rescue->finish;

# --- the shell worker ---
start_greets($node, 'sh', 2);
my $sh_log = '';
my $shell = start_worker([ 'bash', "$examples/shell_worker.sh", '6' ], \$sh_log);
$shell->finish;
ok(wait_done('sh', 2), 'the shell worker ran 2 greet workflows');

# --- a graceful stop finishes the task in hand ---
my $graceful_log = '';
my $graceful = start_worker([ 'node', "$examples/node/worker.js", '--concurrency', '1', '--name', 'graceful' ], \$graceful_log);
$node->safe_psql('postgres',
	q{SELECT durable.start_workflow('long_job', '{"steps": 10, "step_ms": 100}', workflow_id => 'long-2')});
$node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM durable.activity_tasks WHERE workflow_id = 'long-2' AND status = 'started'})
  or die 'not started';
$graceful->signal('TERM');
$graceful->finish;
like($graceful_log, qr/graceful: stopped/, 'the Node.js worker stops on SIGTERM');
like($node->safe_psql('postgres', q{SELECT durable.result('long-2', wait => '10 s')}),
	qr/"done": 10/, 'after finishing the task it had');

# --- 50 idle pollers on 5 queues ---
my @pollers;
my %out;
for my $q (1 .. 5)
{
	for my $p (1 .. 10)
	{
		push @pollers, IPC::Run::start(
			[ 'psql', '-XAtq', '-c',
			  "SELECT activity || ' ' || input FROM durable.poll_activity('q$q', worker => 'idle-$q-$p', wait => '60 s')" ],
			'>', \$out{"$q-$p"}, '2>&1');
	}
}
ok($node->poll_query_until('postgres', q{
SELECT sum(pollers_waiting) = 50 AND count(*) = 5 FROM durable.task_queue_status WHERE task_queue LIKE 'q_'}),
	'durable.task_queue_status shows the 50 waiting pollers, 10 per queue');
my @pids = split /\n/, $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE query LIKE '%idle-%' AND pid <> pg_backend_pid()});
sub ticks
{
	my $t = 0;
	for my $pid (@pids)
	{
		my @f = split ' ', slurp_file("/proc/$pid/stat");
		$t += $f[13] + $f[14];
	}
	return $t;
}
my $t0 = ticks();
sleep 2;
ok(ticks() - $t0 <= 5, 'the 50 waiting pollers used (almost) no CPU in 2 s');
$node->safe_psql('postgres', q{
CREATE FUNCTION to_queue(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('ping', input, input->>'queue');
END $$;
SELECT count(durable.start_workflow('to_queue', jsonb_build_object('queue', 'q' || i)))
  FROM generate_series(1, 5) i;
});
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 5 FROM durable.activity_tasks WHERE task_queue LIKE 'q_' AND status = 'started'}),
	'each queue\'s task went to one of its waiting pollers');
# a waiting poller whose backend is terminated is no longer counted
$node->safe_psql('postgres', q{
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE query LIKE '%idle-%' AND pid <> pg_backend_pid()});
$_->finish for @pollers;
ok($node->poll_query_until('postgres', q{
SELECT coalesce(sum(pollers_waiting), 0) = 0 FROM durable.task_queue_status}),
	'terminated pollers are no longer counted as waiting');

$node->stop;
done_testing();
