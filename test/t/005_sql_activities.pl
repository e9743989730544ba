# SQL activities commit their effects exactly once, with the event that
# records them: a stream of SQL activities that insert rows survives the
# server being crashed again and again, and every row is there once.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DurableTest;

my $workflows = 20;
my $steps = 40;

my $node = durable_node('sql_activities');
$node->start;
$node->safe_psql('postgres', qq{
CREATE EXTENSION durable;
CREATE TABLE effects (workflow text, step int, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION add_row(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
BEGIN
  INSERT INTO public.effects (workflow, step) VALUES (input->>'workflow', (input->>'step')::int);
  PERFORM pg_sleep(0.005);    -- a little work, so that crashes land inside it
  RETURN to_jsonb((input->>'step')::int);
END \$\$;
CREATE FUNCTION stream(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
DECLARE total int := 0;
BEGIN
  FOR i IN 1..$steps LOOP
    total := total + (durable.sql_activity('public.add_row',
                        jsonb_build_object('workflow', input->>'id', 'step', i)))::int;
  END LOOP;
  RETURN to_jsonb(total);
END \$\$;
SELECT count(durable.start_workflow('stream', jsonb_build_object('id', 's' || i), 's' || i))
  FROM generate_series(1, $workflows) i;
});

# crash the server (SIGKILL of every backend, as after a power cut) while
# the stream runs, several times
my $crashes = 0;
for my $round (1 .. 6)
{
	usleep(250_000 + int(rand(250_000)));
	my $done = $node->safe_psql('postgres', 'SELECT count(*) FROM effects');
	last if $done >= $workflows * $steps;
	$node->stop('immediate');
	$node->start;
	$crashes++;
}
ok($crashes >= 3, "the server crashed $crashes times during the stream");

ok($node->poll_query_until('postgres', qq{
SELECT count(*) = $workflows FROM durable.runs WHERE status = 'completed'}),
	'every workflow completed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM effects'),
	$workflows * $steps, 'as many rows as activities');
is($node->safe_psql('postgres',
	'SELECT count(*) FROM (SELECT workflow, step FROM effects GROUP BY 1, 2 HAVING count(*) > 1) d'),
	'0', 'no activity committed its effects twice');
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM durable.runs WHERE result = to_jsonb($steps * ($steps + 1) / 2)}),
	$workflows, 'every workflow saw every result once');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable.history WHERE event_type = 'ActivityTaskCompleted'}),
	$workflows * $steps, 'one completion event per row, no more');

$node->stop;
done_testing();
