#!/bin/bash
# Instructions per activity, counted by callgrind: a measure of the hot path
# that this shared, noisy machine cannot blur (timings move by 15% from run
# to run; instruction counts by well under 1%).  As root:
#   bash test/bench/callgrind.sh [WORKFLOWS [STEPS [WORKFLOW]]]
# (default 40 workflows of 10 steps of bench_steps, test/bench/workflows.sql)
# Builds and installs durable, starts a throwaway server with every process
# under callgrind, lets the worker start WORKFLOWS workflows of STEPS
# activities, then one connection (test/bench/one_worker.c) does all their
# activities with complete_and_poll.  Prints the instructions per activity
# of every server process (the worker's included), and of that connection's
# backend: in all, and in complete_and_poll itself (the rest is the
# protocol, the commit and the backend's start).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKFLOWS=${1:-40}
STEPS=${2:-10}
WORKFLOW=${3:-bench_steps}
PORT=${DURABLE_CALLGRIND_PORT:-54340}
DIR=/tmp/durable-callgrind
. "$ROOT/test/bench/callgrind_server.sh"
callgrind_prepare
callgrind_server_start "$WORKFLOWS" "$STEPS" "$WORKFLOW"
gcc -O2 -Wall -o "$DIR/one_worker" "$ROOT/test/bench/one_worker.c" -I"$(pg_config --includedir)" -lpq
chown postgres "$DIR/one_worker"
as_postgres "./one_worker cg $((WORKFLOWS * STEPS))" > "$DIR/one_worker.out"
callgrind_server_stop

pid=$(awk '/^pid/ {print $2}' "$DIR/one_worker.out")
done_=$(awk '/^done/ {print $2}' "$DIR/one_worker.out")
total=$(awk '/^totals:/ {print $2}' "$DIR/out/cg.$pid")
callgrind_annotate --inclusive=yes "$DIR/out/cg.$pid" > "$DIR/profile.txt" 2>/dev/null
in_call=$(awk '/durable_complete_and_poll/ {gsub(",", "", $1); print $1; exit}' "$DIR/profile.txt")
all=$(cat "$DIR"/out/cg.* | awk '/^totals:/ {s += $2} END {printf "%.0f", s}')
echo "activities: $done_ (one connection, complete_and_poll)"
echo "instructions per activity, all server processes: $((all / done_)) (the worker's first tasks and the server's start included)"
echo "instructions per activity, backend in all:      $((total / done_))"
echo "instructions per activity, in complete_and_poll: $((in_call / done_))"
# the worker ran every workflow's first task (before the connection began)
worker_file=$(grep -l "replay_run_tasks" "$DIR"/out/cg.* | head -1 || true)
if [ -n "$worker_file" ]; then
    echo "instructions of the worker in all:              $(awk '/^totals:/ {print $2}' "$worker_file") (its start included: take two sizes' difference for its first tasks)"
fi
echo "profile (inclusive, by function): $DIR/profile.txt"
