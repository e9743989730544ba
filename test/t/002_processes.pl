# The processes around the engine: a worker per database that has the
# extension, started by CREATE EXTENSION's commit; waiting pollers woken by
# commits; DROP EXTENSION and DROP DATABASE while workflows run; a server
# without the library preloaded.
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

my $node = durable_node('processes');
$node->start;

# --- launcher only, until a database creates the extension ---
is($node->safe_psql('postgres',
	"SELECT string_agg(backend_type, ',' ORDER BY backend_type) FROM pg_stat_activity WHERE backend_type LIKE 'durable%'"),
	'durable launcher', 'only the launcher runs before CREATE EXTENSION');

$node->safe_psql('postgres', 'CREATE DATABASE app1');
$node->safe_psql('postgres', 'CREATE DATABASE app2');
create_greet($node, 'app1');
ok(wait_for_worker($node, 'app1'), 'CREATE EXTENSION in app1 starts its worker');
create_greet($node, 'app2');
ok(wait_for_worker($node, 'app2'), 'and in app2, each database its own worker');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'durable worker' AND datname = 'postgres'"),
	'0', 'no worker in a database without the extension');

# --- a waiting poller is woken by the commit that creates its task ---
my ($out, $err) = ('', '');
my $poller = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('app1'), '-c',
	  "SELECT activity FROM durable.poll_activity('default', worker => 'waiter', wait => '10 min')" ],
	'>', \$out, '2>', \$err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
ok($node->poll_query_until('app1', q{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE query LIKE '%waiter%' AND wait_event_type = 'Extension' AND pid <> pg_backend_pid()}),
	'the poller sleeps on a wait event, not in a loop');
# and it really sleeps: over a second it uses (almost) no CPU
my $poller_pid = $node->safe_psql('app1',
	"SELECT pid FROM pg_stat_activity WHERE query LIKE '%waiter%' AND pid <> pg_backend_pid()");
sub cpu_ticks
{
	my @f = split ' ', slurp_file("/proc/$poller_pid/stat");
	return $f[13] + $f[14];    # utime + stime, in clock ticks
}
my $ticks = cpu_ticks();
sleep 1;
ok(cpu_ticks() - $ticks <= 2, 'the waiting poller does not spin');
start_greets($node, 'wake', 1, 'app1');
# A poller that was not woken would sleep its full 10 minutes (and time out).
$poller->finish or die "poller failed: $err";
like($out, qr/^lookup_user$/m, 'the waiting poller received the new task at commit');

# --- a long poll by CALL durable.wait_for_activity_task() holds no snapshot
# while it waits (it commits each look that finds nothing), where a waiting
# poll_activity() holds its statement's, and with it what VACUUM may remove ---
sub start_waiting
{
	my ($sql, $out, $err) = @_;
	return IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('app1'), '-c', $sql ],
		'>', $out, '2>', $err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
}
my ($cout, $cerr, $fout, $ferr) = ('', '', '', '');
my $caller = start_waiting(
	"CALL durable.wait_for_activity_task('default', worker => 'caller', wait => '10 min')",
	\$cout, \$cerr);
my $function_poller = start_waiting(
	"SELECT activity FROM durable.poll_activity('elsewhere', worker => 'function-poller', wait => '10 min')",
	\$fout, \$ferr);
ok($node->poll_query_until('app1', q{
SELECT count(*) = 2 FROM pg_stat_activity
 WHERE (query LIKE '%caller%' OR query LIKE '%function-poller%') AND wait_event_type = 'Extension'
   AND pid <> pg_backend_pid()}), 'both pollers wait');
is($node->safe_psql('app1', q{
SELECT string_agg(CASE WHEN query LIKE 'CALL%' THEN 'procedure' ELSE 'function' END
                  || ' ' || CASE WHEN backend_xmin IS NULL THEN 'no snapshot' ELSE 'snapshot' END,
                  ', ' ORDER BY query)
  FROM pg_stat_activity WHERE (query LIKE '%caller%' OR query LIKE '%function-poller%')
   AND pid <> pg_backend_pid()}),
	'procedure no snapshot, function snapshot',
	'the waiting CALL holds no snapshot, the waiting function does');
start_greets($node, 'called', 1, 'app1');
$caller->finish or die "wait_for_activity_task failed: $cerr";
like($cout, qr/^[^|]+\|called-1\|lookup_user\|\{"id": 1\}\|1\|$/m,
	'the waiting CALL received the new task at commit, as its INOUT arguments');
is($node->safe_psql('app1', "SELECT status || ' by ' || worker FROM durable.activity_tasks WHERE workflow_id = 'called-1'"),
	'started by caller', 'and its claim committed');
# the same for a CALL durable.wait_for_result() on that workflow, which
# returns its result when the run closes
my ($rout, $rerr) = ('', '');
my $result_waiter = start_waiting("CALL durable.wait_for_result('called-1', wait => '10 min')",
	\$rout, \$rerr);
ok($node->poll_query_until('app1', q{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE query LIKE 'CALL durable.wait_for_result%' AND wait_event_type = 'Extension'
   AND backend_xmin IS NULL AND pid <> pg_backend_pid()}),
	'a CALL waiting for a result holds no snapshot either');
my ($called_token) = split /\|/, $cout;
$node->safe_psql('app1', qq{SELECT durable.complete_activity('$called_token', '{"name": "Called"}')});
work_activities($node, 2, 'app1');
$result_waiter->finish or die "wait_for_result failed: $rerr";
like($rout, qr/"greetings": \["en:Called", "fr:Called"\]/, 'and it returned the result when the run closed');
$node->safe_psql('app1', "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%function-poller%' AND pid <> pg_backend_pid()");
$function_poller->finish;

# --- DROP EXTENSION while workflows run and a poller waits: it succeeds at
# once, the worker leaves, the poller learns when it wakes.  The poller has
# polled that queue before, so it knows it has no limits and looks first in
# its own transaction: an empty look there must not keep its locks either ---
start_greets($node, 'doomed', 20, 'app2');
work_activities($node, 5, 'app2');
my ($pout, $perr) = ('', '');
my $waiting = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('app2'),
	  '-c', "SELECT count(*) FROM durable.poll_activity('empty-queue')",
	  '-c', "SELECT activity FROM durable.poll_activity('empty-queue', worker => 'doomed-poller', wait => '10 min')" ],
	'>', \$pout, '2>', \$perr,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
# and a CALL that waits, due to look again in two seconds
my ($cdout, $cderr) = ('', '');
my $call_waiting = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('app2'),
	  '-c', "CALL durable.wait_for_activity_task('empty-queue', worker => 'doomed-caller', wait => '2 s')" ],
	'>', \$cdout, '2>', \$cderr,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
$node->poll_query_until('app2', q{
SELECT count(*) = 2 FROM pg_stat_activity WHERE query ~ 'doomed-(poller|caller)' AND wait_event_type = 'Extension'
   AND pid <> pg_backend_pid()}) or die 'pollers not waiting';
$node->safe_psql('app2', 'DROP EXTENSION durable CASCADE', timeout => 30);
pass('DROP EXTENSION does not wait for a long-polling worker');
$call_waiting->finish;
like($cderr, qr/ERROR:  extension "durable" was dropped while this call waited/,
	'a wait that looks again after DROP EXTENSION says so');
$node->safe_psql('app2', "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%doomed-poller%' AND pid <> pg_backend_pid()");
$waiting->finish;
like($perr, qr/canceling statement due to user request/, 'the poller was still waiting, holding no lock');
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'durable worker' AND datname = 'app2'}),
	'the worker of app2 exits after DROP EXTENSION');
create_greet($node, 'app2');
ok(wait_for_worker($node, 'app2'), 'CREATE EXTENSION again brings it back');
start_greets($node, 'again', 3, 'app2');
work_activities($node, 10, 'app2') for 1 .. 3;
is($node->safe_psql('app2', 'SELECT durable.result(\'again-3\', wait => \'10 s\')->\'user\'->>\'name\''),
	'user-3', 'workflows run again after re-creation');

# --- DROP DATABASE with running workflows succeeds at once ---
start_greets($node, 'dropme', 20, 'app1');
work_activities($node, 5, 'app1');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE app1');
is($ret, 0, 'DROP DATABASE with running workflows succeeds');
is($stderr, '', 'without complaint');
# ALTER DATABASE ... RENAME too, and the worker comes back under the new name
($ret, $stdout, $stderr) = $node->psql('postgres', 'ALTER DATABASE app2 RENAME TO app3');
is($ret, 0, 'ALTER DATABASE RENAME of a database with a worker succeeds');
ok(wait_for_worker($node, 'app3'), 'its worker is back after the rename');
my $holder;
# While $holder keeps a row the worker needs: three greet workflows started
# now complete, the held run stays running, and once $holder commits it ends
# with status $status.
sub others_go_on_while_held
{
	my ($prefix, $held, $status) = @_;
	start_greets($node, $prefix, 3, 'app3');
	work_activities($node, 10, 'app3') for 1 .. 3;
	is($node->safe_psql('app3', qq{SELECT count(*) FROM durable.runs WHERE workflow_id LIKE '$prefix-%' AND status = 'completed'}),
		'3', "other runs go on while an application holds a row the worker needs ($held)");
	is($node->safe_psql('app3', qq{SELECT status FROM durable.runs WHERE workflow_id = '$held'}),
		'running', "the held run waits ($held)");
	$holder->query_safe('COMMIT');
	$holder->quit;
	ok($node->poll_query_until('app3', qq{SELECT status = '$status' FROM durable.runs WHERE workflow_id = '$held'}),
		"and ends ($status) once the application lets go");
}

# --- an application holding a task row in an open transaction does not stop
# the worker: it leaves that run for later and goes on with the others ---
$node->safe_psql('app3', q{
CREATE FUNCTION waits_long(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('slow', NULL, 'held');
END $$;
});
$holder = $node->background_psql('app3');
$node->safe_psql('app3', q{
SELECT durable.start_workflow('waits_long', '{}', workflow_id => 'held-1', execution_timeout => '3 s')});
$holder->query_safe('BEGIN');
is($holder->query_safe(q{SELECT count(*) FROM durable.poll_activity('held', wait => '10 s')}),
	'1', 'an application claims a task and keeps its transaction open');
# the execution timeout falls due; closing the run needs the held task row:
# the worker does not sit waiting for that lock
sleep 4;
my $lock_waits = 0;
for (1 .. 10)
{
	$lock_waits++ if $node->safe_psql('app3',
		"SELECT wait_event_type FROM pg_stat_activity WHERE backend_type = 'durable worker'") eq 'Lock';
	usleep(100_000);
}
ok($lock_waits <= 2, "the worker does not wait on the held row ($lock_waits of 10 samples)");
others_go_on_while_held('meanwhile', 'held-1', 'timed_out');

# --- the same for a workflow task: a run whose closing needs a task row an
# application holds is left for later (its batch rolled back and run again
# task by task), the worker's other tasks go on, and the worker stays up ---
$node->safe_psql('app3', q{
CREATE FUNCTION returns_early(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE other bigint;
BEGIN
  other := durable.activity_async('other', NULL, 'held2');
  RETURN durable.activity('first', NULL, 'first2');
END $$;
SELECT durable.start_workflow('returns_early', '{}', workflow_id => 'held-2');
});
my $worker_before = worker_pid($node, 'app3');
$holder = $node->background_psql('app3');
$holder->query_safe('BEGIN');
is($holder->query_safe(q{SELECT count(*) FROM durable.poll_activity('held2', wait => '10 s')}),
	'1', 'an application claims the other activity and keeps its transaction open');
# the first activity's result closes the run, in a task of the worker's
# (another activity is open), which must delete the held task row
is($node->safe_psql('app3', q{
SELECT durable.complete_activity(task_token, '1') FROM durable.poll_activity('first2', wait => '10 s')}),
	't', 'the first activity completes');
others_go_on_while_held('meanwhile2', 'held-2', 'completed');
is(worker_pid($node, 'app3'), $worker_before, 'the worker did not restart');

# CREATE DATABASE from a template that has durable: the template's worker
# steps aside for the copy, and the copy gets a worker of its own
($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE DATABASE app4 TEMPLATE app3');
is($ret, 0, 'CREATE DATABASE ... TEMPLATE a database with a worker succeeds');
ok(wait_for_worker($node, 'app4'), 'the new database gets its worker');
ok(wait_for_worker($node, 'app3'), 'and the template gets its worker back');
ok(!$node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'durable worker' AND datname = 'app1'"),
	'no worker left for the dropped database');

$node->stop;

# --- a server without durable in shared_preload_libraries ---
my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;
($ret, $stdout, $stderr) = $plain->psql('postgres', 'CREATE EXTENSION durable');
is($ret, 0, 'CREATE EXTENSION succeeds without preloading');
like($stderr, qr/WARNING:  durable is not loaded by shared_preload_libraries.*\nHINT:  Add durable to shared_preload_libraries/s,
	'with a warning and a hint how to fix it');
($ret, $stdout, $stderr) = $plain->psql('postgres', "SELECT durable.start_workflow('x')");
like($stderr, qr/ERROR:  durable is not loaded by shared_preload_libraries.*\nHINT:  Add durable to shared_preload_libraries/s,
	'API functions fail with the same hint');
$plain->stop;

done_testing();
