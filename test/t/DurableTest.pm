# Helpers shared by durable's TAP tests: a cluster with durable preloaded, the
# greet workflow, and an activity worker made of SQL.
package DurableTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Exporter 'import';

our @EXPORT = qw(durable_node create_greet start_greets work_activities
  wait_for_worker worker_pid check_greets);

# A new node (not started) that preloads durable.
sub durable_node
{
	my ($name, %params) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%params);
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable'
max_worker_processes = 16
log_min_messages = warning
restart_after_crash = on
});
	return $node;
}

sub create_greet
{
	my ($node, $db) = @_;
	$node->safe_psql($db // 'postgres', q{
CREATE EXTENSION IF NOT EXISTS durable;
CREATE OR REPLACE FUNCTION greet(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE a jsonb; h bigint[]; parts jsonb;
BEGIN
  a := durable.activity('lookup_user', input);
  h := ARRAY[durable.activity_async('render', a || '{"lang":"en"}'),
             durable.activity_async('render', a || '{"lang":"fr"}')];
  parts := durable.await_all(h);
  RETURN jsonb_build_object('user', a, 'greetings', parts);
END $$;
});
}

# Starts greet workflows with ids <prefix>-1 .. <prefix>-n, one transaction.
sub start_greets
{
	my ($node, $prefix, $n, $db) = @_;
	$node->safe_psql($db // 'postgres', qq{
SELECT count(durable.start_workflow('greet', jsonb_build_object('id', i), '$prefix-' || i))
  FROM generate_series(1, $n) i;
});
}

# One poll-and-complete round trip of an activity worker: claims up to $max
# tasks and completes each with a result derived from its input, all in one
# statement (so a crash never leaves a claimed task behind).  Returns how
# many it completed.
sub work_activities
{
	my ($node, $max, $db) = @_;
	my ($ret, $out, $err) = $node->psql($db // 'postgres', qq{
SELECT count(*) FILTER (WHERE durable.complete_activity(task_token,
         CASE activity
           WHEN 'lookup_user' THEN jsonb_build_object('name', 'user-' || (input->>'id'))
           ELSE to_jsonb((input->>'lang') || ':' || (input->>'name'))
         END))
  FROM durable.poll_activity('default', worker => 'tap', wait => '1 s', max_tasks => $max);
});
	return $ret == 0 ? $out : 0;
}

sub wait_for_worker
{
	my ($node, $db) = @_;
	$db //= 'postgres';
	return $node->poll_query_until('postgres', qq{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE backend_type = 'durable worker' AND datname = '$db'});
}

sub worker_pid
{
	my ($node, $db) = @_;
	$db //= 'postgres';
	return $node->safe_psql('postgres', qq{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'durable worker' AND datname = '$db'});
}

# All n greet runs completed, each exactly once, with the right result.
sub check_greets
{
	my ($node, $prefix, $n, $db) = @_;
	$db //= 'postgres';
	my $bad = $node->safe_psql($db, qq{
SELECT count(*) FROM generate_series(1, $n) i
 WHERE (SELECT result FROM durable.runs WHERE workflow_id = '$prefix-' || i AND status = 'completed')
       IS DISTINCT FROM jsonb_build_object(
         'user', jsonb_build_object('name', 'user-' || i),
         'greetings', jsonb_build_array('en:user-' || i, 'fr:user-' || i))});
	is($bad, '0', "$prefix: all $n workflows completed with the right result");
	my $runs = $node->safe_psql($db, qq{
SELECT count(*) FROM durable.runs WHERE workflow_id LIKE '$prefix-%'});
	is($runs, $n, "$prefix: exactly one run per workflow");
	my $dups = $node->safe_psql($db, qq{
SELECT count(*) FROM (
  SELECT h.run_id, h.event_type, h.details->>'handle'
    FROM durable.history h JOIN durable.runs r USING (run_id)
   WHERE r.workflow_id LIKE '$prefix-%'
     AND h.event_type IN ('ActivityTaskScheduled', 'ActivityTaskCompleted', 'WorkflowExecutionCompleted')
   GROUP BY 1, 2, 3 HAVING count(*) > 1) d});
	is($dups, '0', "$prefix: no activity scheduled or completed twice, no run completed twice");
	my $events = $node->safe_psql($db, qq{
SELECT count(*) FROM durable.history h JOIN durable.runs r USING (run_id)
 WHERE r.workflow_id LIKE '$prefix-%' AND h.event_type = 'ActivityTaskCompleted'});
	is($events, 3 * $n, "$prefix: three activity completions per run");
}

1;
