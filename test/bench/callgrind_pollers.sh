#!/bin/bash
# Instructions per activity of K concurrent pollers (complete_and_poll), as
# callgrind counts them: what contention among pollers costs (claims that
# meet tasks the others are claiming), which callgrind.sh's single
# connection never meets.  As root:
#   bash test/bench/callgrind_pollers.sh [SMALL [LARGE [POLLERS]]]
# (default 600 and 1200 one-step workflows, 4 pollers).  For each size, a
# throwaway server with every process under callgrind, the workflows' first
# tasks run by the worker, then test/bench/poller.c's clients do all the
# activities; the pollers' backends' instructions are summed.  Prints the
# difference of the two sizes per activity, which leaves out the backends'
# start.  Scheduling under valgrind varies: runs of the same build differ by
# a few percent, so compare two runs of each build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SMALL=${1:-600}
LARGE=${2:-1200}
POLLERS=${3:-4}
PORT=${DURABLE_CALLGRIND_PORT:-54342}
DIR=/tmp/durable-callgrind-pollers
. "$ROOT/test/bench/callgrind_server.sh"
callgrind_prepare

# the pollers' backends' instructions for n one-step workflows
pollers_instructions()
{
	local n=$1 pids total=0
	callgrind_server_start "$n" 1 bench_steps
	gcc -O2 -Wall -o "$DIR/poller" "$ROOT/test/bench/poller.c" -I"$(pg_config --includedir)" -lpq
	chown postgres "$DIR/poller"
	as_postgres "PGAPPNAME=callgrind-poller ./poller cg $POLLERS combined > poller.out 2>&1 &"
	for _ in $(seq 1 1800); do
		[ "$(as_postgres "psql -XAtc \"SELECT count(*) FROM durable.runs WHERE status <> 'running'\"")" = "$n" ] && break
		sleep 1
	done
	pids=$(as_postgres "psql -XAtc \"SELECT pid FROM pg_stat_activity WHERE application_name = 'callgrind-poller'\"")
	pkill -f "poller cg $POLLERS combined" || true
	sleep 2
	callgrind_server_stop
	for p in $pids; do
		total=$((total + $(awk '/^totals:/ {print $2}' "$DIR/out/cg.$p")))
	done
	echo "$total"
}

small=$(pollers_instructions "$SMALL")
large=$(pollers_instructions "$LARGE")
echo "$POLLERS pollers, $SMALL and $LARGE one-step workflows: $small and $large instructions in their backends"
echo "instructions per activity (the difference): $(( (large - small) / (LARGE - SMALL) ))"
