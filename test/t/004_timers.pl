# The timer queue: timers that fall due while the server is down fire right
# after it starts, and the worker sleeps exactly until the next deadline (it
# does not wake up periodically when idle).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DurableTest;

my $node = durable_node('timers');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION durable;
CREATE FUNCTION napper(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM durable.sleep((input->>'nap')::interval);
  RETURN jsonb_build_object('woke_at', durable.now());
END $$;
});
ok(wait_for_worker($node), 'worker started');

sub worker_status
{
	return split /\|/, $node->safe_psql('postgres',
		"SELECT wakeups, sleeping_until, extract(epoch FROM sleeping_until) FROM durable.worker_status() WHERE database = 'postgres'");
}

# --- idle: the worker sleeps without a deadline and does not wake up ---
$node->poll_query_until('postgres',
	"SELECT sleeping_until = 'infinity' FROM durable.worker_status() WHERE database = 'postgres'")
  or die 'worker never went idle';
my ($wakeups) = worker_status();
sleep 3;
my ($wakeups_after, $until) = worker_status();
is($wakeups_after, $wakeups, 'an idle worker does not wake up in 3 s');
is($until, 'infinity', 'and sleeps with no deadline');
is($node->safe_psql('postgres',
	"SELECT wait_event_type || '/' || wait_event FROM pg_stat_activity WHERE backend_type = 'durable worker'"),
	'Extension/Extension', 'waiting on its latch');

# --- a timer: the worker sleeps until exactly its fire time ---
$node->safe_psql('postgres',
	"SELECT durable.start_workflow('napper', '{\"nap\": \"4 s\"}', workflow_id => 'nap-4')");
$node->poll_query_until('postgres', q{
SELECT w.sleeping_until = (d.pending_timers->0->>'fire_at')::timestamptz
  FROM durable.worker_status() w, durable.describe('nap-4') d WHERE w.database = 'postgres'})
  or die 'worker not sleeping until the timer';
pass('the worker sleeps until the timer fire_at');
($wakeups) = worker_status();
# a later timer does not wake it; an earlier one does
$node->safe_psql('postgres',
	"SELECT durable.start_workflow('napper', '{\"nap\": \"1 hour\"}', workflow_id => 'nap-hour')");
$node->poll_query_until('postgres',
	"SELECT jsonb_array_length(pending_timers) = 1 FROM durable.describe('nap-hour')");
is($node->safe_psql('postgres', q{
SELECT w.sleeping_until = (d.pending_timers->0->>'fire_at')::timestamptz
  FROM durable.worker_status() w, durable.describe('nap-4') d WHERE w.database = 'postgres'}),
	't', 'still sleeping until the earliest timer');
$node->safe_psql('postgres',
	"SELECT durable.result('nap-4', wait => '20 s')");
my ($wakeups_done, $until_done) = worker_status();
ok($wakeups_done - $wakeups <= 4, 'few wakeups to fire it (' . ($wakeups_done - $wakeups) . ')');
is($node->safe_psql('postgres', q{
SELECT w.sleeping_until = (d.pending_timers->0->>'fire_at')::timestamptz
  FROM durable.worker_status() w, durable.describe('nap-hour') d WHERE w.database = 'postgres'}),
	't', 'then it sleeps until the next one, an hour away');
my $late = $node->safe_psql('postgres', q{
SELECT extract(epoch FROM f.event_time - (s.details->>'fire_at')::timestamptz) >= 0
  FROM durable.history('nap-4') s, durable.history('nap-4') f
 WHERE s.event_type = 'TimerStarted' AND f.event_type = 'TimerFired'});
is($late, 't', 'the timer fired at or after its time, never before');

# --- timers that fall due while the server is down fire at start ---
$node->safe_psql('postgres', q{
SELECT count(durable.start_workflow('napper', '{"nap": "2 s"}', 'down-' || i))
  FROM generate_series(1, 50) i});
$node->poll_query_until('postgres', q{
SELECT count(*) = 50 FROM durable.timers t JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id LIKE 'down-%'}) or die 'timers not started';
$node->stop('fast');
sleep 3;
$node->start;
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 50 FROM durable.runs WHERE workflow_id LIKE 'down-%' AND status = 'completed'}),
	'all 50 timers that fell due during downtime fired after the restart');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.history h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id LIKE 'down-%' AND h.event_type = 'TimerFired'}),
	'50', 'each exactly once');

# --- start_to_close of claimed attempts: kept on the task rows, not timers ---
# 50 attempts claimed with a 2 s start_to_close: no timer row, the worker
# sleeps until the earliest deadline, and after a crash that outlasts them
# each attempt times out exactly once and the next one is handed out.
$node->safe_psql('postgres', q{
CREATE FUNCTION timed_work(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RETURN durable.activity('work', NULL, 'stc',
                          '{"start_to_close": "2 s", "retry": {"initial_interval": "0.1 s"}}');
END $$;
SELECT count(durable.start_workflow('timed_work', '{}', 'stc-' || i)) FROM generate_series(1, 50) i;
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 50 FROM durable.activity_tasks WHERE task_queue = 'stc'")
  or die 'activities not scheduled';
is($node->safe_psql('postgres',
	"SELECT count(*) FROM durable.poll_activity('stc', max_tasks => 50)"), '50', '50 attempts claimed');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE start_to_close_at = started_at + interval '2 s')
       || '/' || (SELECT count(*) FROM durable.timers WHERE kind IN ('retry', 'activity_timeout'))
  FROM durable.activity_tasks WHERE task_queue = 'stc'}),
	'50/0', 'each deadline is on its task row, none is a timer');
ok($node->poll_query_until('postgres', q{
SELECT w.sleeping_until = (SELECT min(start_to_close_at) FROM durable.activity_tasks)
  FROM durable.worker_status() w WHERE w.database = 'postgres'}),
	'the worker sleeps until the earliest deadline');
$node->stop('immediate');
sleep 3;
$node->start;
my $claimed = 0;
for (my $i = 0; $i < 100 && $claimed < 50; $i++)
{
	$claimed += $node->safe_psql('postgres', q{
SELECT count(durable.complete_activity(task_token, to_jsonb(attempt)))
  FROM durable.poll_activity('stc', wait => '1 s', max_tasks => 50)});
}
is($claimed, 50, 'after the restart, each activity was handed out again');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE result = '2') || '/' ||
       (SELECT count(*) FROM durable.history h JOIN durable.runs r USING (run_id)
         WHERE r.workflow_id LIKE 'stc-%' AND h.event_type = 'ActivityTaskTimedOut'
           AND h.details->>'timeout' = 'start_to_close')
  FROM durable.runs WHERE workflow_id LIKE 'stc-%' AND status = 'completed'}),
	'50/50', 'as a second attempt, each after exactly one start_to_close timeout');

# --- signals sent while the server crashes: each received once, in order ---
$node->safe_psql('postgres', q{
CREATE FUNCTION collect5(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE items jsonb := '[]';
BEGIN
  FOR i IN 1..5 LOOP
    items := items || jsonb_build_array(durable.wait_signal('item'));
  END LOOP;
  RETURN items;
END $$;
SELECT count(durable.start_workflow('collect5', '{}', 'sig-' || i)) FROM generate_series(1, 20) i;
});
# Sends signal k to every run, skipping those the history already has (a
# send cut by the crash may or may not have committed: never send twice).
sub send_signals
{
	my ($k) = @_;
	for my $i (1 .. 20)
	{
		$node->psql('postgres', qq{
SELECT durable.signal('sig-$i', 'item', to_jsonb($k))
 WHERE NOT EXISTS (SELECT FROM durable.history('sig-$i')
                    WHERE event_type = 'WorkflowExecutionSignaled' AND details->'payload' = to_jsonb($k))});
	}
}
send_signals(1);
send_signals(2);
$node->stop('immediate');
$node->start;
send_signals(2);
send_signals(3);
$node->stop('immediate');
$node->start;
send_signals(3);
send_signals(4);
send_signals(5);
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 20 FROM durable.runs WHERE workflow_id LIKE 'sig-%' AND status = 'completed'}),
	'all 20 runs received their 5 signals across two crashes');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.runs WHERE workflow_id LIKE 'sig-%' AND result <> '[1, 2, 3, 4, 5]'}),
	'0', 'each signal received exactly once, in the order sent');

# --- a timer whose run an application holds: left for later, not lost ---
# An application's transaction that signals a run holds its row; the run's
# timer falls due meanwhile.  The worker fires the other runs' timers (all
# together) without waiting, and this one, exactly once, when it lets go.
$node->safe_psql('postgres', q{
SELECT durable.start_workflow('napper', '{"nap": "3 s"}', workflow_id => 'held-nap');
SELECT durable.start_workflow('napper', '{"nap": "3 s"}', workflow_id => 'free-nap-' || i)
  FROM generate_series(1, 5) i;
});
$node->poll_query_until('postgres', q{
SELECT count(*) = 6 FROM durable.timers t JOIN durable.runs r USING (run_id)
 WHERE (r.workflow_id = 'held-nap' OR r.workflow_id LIKE 'free-nap-%') AND t.kind = 'timer'})
  or die 'timers never started';
my $app = $node->background_psql('postgres');
$app->query_safe('BEGIN');
$app->query_safe(q{SELECT durable.signal('held-nap', 'nudge')});
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 5 FROM durable.runs WHERE workflow_id LIKE 'free-nap-%' AND status = 'completed'}),
	'the other runs wake up while one is held');
sleep 1;
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.history h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'held-nap' AND h.event_type = 'TimerFired'}),
	'0', 'the held run has not fired its timer');
$app->query_safe('COMMIT');
$app->quit;
ok($node->poll_query_until('postgres', q{
SELECT status = 'completed' FROM durable.runs WHERE workflow_id = 'held-nap'}),
	'it fires once the application lets go');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.history h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id = 'held-nap' AND h.event_type = 'TimerFired'}),
	'1', 'exactly once');

$node->stop;
done_testing();
