# Fan-outs under concurrency: 100 workflows of 20 parallel activities, each
# awaiting any then all of them, worked by 4 pgbench clients that complete
# (half the time), fail (retried) or abandon (timed out after its
# start_to_close, retried) each attempt in one statement, while a fifth
# client keeps taking random running runs for 20 ms at a time, so that
# completions find their run held and leave their results to the worker.
# Every workflow ends with the sum of its activities' inputs; every history
# is whole (ids without a gap, each activity completed once, times never
# going back but for the attempts' back-dated starts); no task row is left;
# and the code ran about three times per workflow (first task, when
# await_any returns, the last), not once per batch of results.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use DurableTest;

my $workflows = 100;
my $node = durable_node('fan_outs');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION durable;
CREATE FUNCTION fan(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE h bigint[]; total int := 0; r jsonb;
BEGIN
  SELECT array_agg(durable.activity_async('part', jsonb_build_object('i', i), 'fan',
           '{"retry": {"maximum_attempts": 100, "initial_interval": "0.01 s",
                       "backoff_coefficient": 1},
             "start_to_close": "1 s"}'))
    INTO h FROM generate_series(1, 20) i;
  PERFORM durable.await_any(h);
  FOR r IN SELECT jsonb_array_elements(durable.await_all(h)) LOOP
    total := total + r::text::int;
  END LOOP;
  RETURN to_jsonb(total);
END $$;
});
ok(wait_for_worker($node), 'worker started');

my $work = "$PostgreSQL::Test::Utils::tmp_check/fan_work.sql";
PostgreSQL::Test::Utils::append_to_file($work, q{
SELECT CASE WHEN x.r < 0.5 THEN durable.complete_activity(t.task_token, to_jsonb((t.input->>'i')::int))
            WHEN x.r < 0.8 THEN durable.fail_activity(t.task_token, 'flaky')
            ELSE true END
  FROM durable.poll_activity('fan', wait => '0.1 s') t, (SELECT random() r) x;
});
my $hold = "$PostgreSQL::Test::Utils::tmp_check/fan_hold.sql";
PostgreSQL::Test::Utils::append_to_file($hold, q{
BEGIN;
SELECT 1 FROM durable.runs WHERE status = 'running' ORDER BY random() LIMIT 1 FOR UPDATE;
SELECT pg_sleep(0.02);
COMMIT;
});

$node->safe_psql('postgres', qq{
SELECT count(durable.start_workflow('fan', '{}', 'fan-' || i)) FROM generate_series(1, $workflows) i});

# until every workflow is over (or 180 s)
my @conn = ('-h', $node->host, '-p', $node->port, '-n', 'postgres');
my ($out, $err) = ('', '');
my $workers = IPC::Run::start([ 'pgbench', @conn, '-c', '4', '-j', '2', '-T', '180', '-f', $work ],
	'>', \$out, '2>', \$err);
my $holder = IPC::Run::start([ 'pgbench', @conn, '-c', '1', '-T', '180', '-f', $hold ],
	'>', \my $hold_out, '2>', \my $hold_err);
my $over = $node->poll_query_until('postgres', qq{
SELECT count(*) = $workflows FROM durable.runs WHERE status <> 'running'});
$_->signal('INT') for ($workers, $holder);
$_->finish for ($workers, $holder);
ok($over, 'every workflow is over');

is($node->safe_psql('postgres', q{
SELECT status || ' ' || result::text || ' ' || count(*) FROM durable.runs GROUP BY status, result}),
	"completed 210 $workflows", 'each completed with the sum of its 20 results');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT run_id, count(*) AS n, max(event_id) AS last FROM durable.history GROUP BY run_id) h
  JOIN durable.runs r USING (run_id) WHERE h.n <> h.last OR r.next_event_id <> h.last + 1}),
	'0', 'every history has its events 1..n, and its run counts n');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT run_id, details->>'handle', count(*) FROM durable.history
  WHERE event_type = 'ActivityTaskCompleted' GROUP BY 1, 2 HAVING count(*) <> 1) s}),
	'0', 'each activity completed once');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.history WHERE event_type = 'ActivityTaskCompleted'}),
	20 * $workflows, 'and all of them did');
my $back = $node->safe_psql('postgres', q{
SELECT string_agg(format('%s: %s %s at %s after %s %s at %s', r.workflow_id, b.event_id, b.event_type,
                         b.event_time, a.event_id, a.event_type, a.event_time), '; ')
  FROM durable.history b JOIN durable.runs r USING (run_id)
  JOIN LATERAL (SELECT * FROM durable.history a WHERE a.run_id = b.run_id AND a.event_id < b.event_id
                  AND a.event_time > b.event_time ORDER BY a.event_id LIMIT 1) a ON true
 WHERE b.event_type <> 'ActivityTaskStarted'});
is($back, '', 'no event but an attempt\'s start is older than one before it');
is($node->safe_psql('postgres', q{SELECT count(*) FROM durable.activity_tasks}),
	'0', 'no task row is left');
cmp_ok($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.history h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id LIKE 'fan-%' AND h.event_type = 'ActivityTaskStarted'}),
	'>', 20 * $workflows, 'attempts failed and timed out on the way');
my $tasks = $node->safe_psql('postgres', q{
SELECT count(*) FROM durable.history WHERE event_type = 'WorkflowTaskCompleted'});
cmp_ok($tasks, '<=', 4 * $workflows,
	"the code ran about three times per workflow ($tasks tasks), not once per batch of results");

$node->stop;
done_testing();
