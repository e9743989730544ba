# A hot standby runs nothing of durable until it is promoted; then it
# finishes what the primary had started.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DurableTest;

my $primary = durable_node('primary', allows_streaming => 1);
$primary->start;
create_greet($primary);
ok(wait_for_worker($primary), 'primary runs a worker');

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;

start_greets($primary, 'ha', 50);
work_activities($primary, 30) for 1 .. 2;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'durable%'"),
	'0', 'no launcher and no worker on the standby');
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM durable.runs WHERE workflow_id LIKE 'ha-%' AND status = 'running'"),
	$primary->safe_psql('postgres',
	"SELECT count(*) FROM durable.runs WHERE workflow_id LIKE 'ha-%' AND status = 'running'"),
	'the standby has the open runs of the primary');
my ($ret, $out, $err) = $standby->psql('postgres', "SELECT durable.start_workflow('greet', '{}')");
like($err, qr/read-only transaction/, 'starting a workflow on the standby fails');

# the primary goes away; nothing progresses until the standby is promoted
$primary->stop('immediate');
sleep 1;
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'durable%'"),
	'0', 'still nothing running on the standby');
$standby->promote;
ok(wait_for_worker($standby), 'the promoted standby starts its worker');
for (1 .. 100)
{
	work_activities($standby, 50);
	last if $standby->safe_psql('postgres',
		"SELECT count(*) = 0 FROM durable.runs WHERE workflow_id LIKE 'ha-%' AND status = 'running'") eq 't';
}
check_greets($standby, 'ha', 50);

$standby->stop;
done_testing();
