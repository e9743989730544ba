#!/bin/bash
# The benchmarks, in one command (as root, from anywhere in the repository):
#   bash test/bench/run.sh [bench.py options, e.g. --scenario latency --quick]
# Installs what is needed, builds and installs durable, starts a throwaway
# PostgreSQL 15 with default settings (fsync and synchronous_commit on) but
# shared_preload_libraries = 'durable', runs test/bench/bench.py against it,
# and writes the results as JSON under test/bench/results/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PORT=${DURABLE_BENCH_PORT:-54331}
DATA=/tmp/durable-bench
export PATH=/usr/lib/postgresql/15/bin:$PATH

bash "$ROOT/scripts/install-deps.sh"
make -C "$ROOT" -s
make -C "$ROOT" -s install

# a server left running by an interrupted run would hold the port
if [ -f "$DATA/pg/postmaster.pid" ]; then
    su postgres -s /bin/bash -c "$(command -v pg_ctl) -D $DATA/pg -m immediate -w stop" >/dev/null 2>&1 || true
fi
rm -rf "$DATA"; mkdir -p "$DATA/results"
cp "$ROOT/test/cluster.sh" "$ROOT/test/bench/bench.py" "$ROOT"/test/bench/*.sql "$DATA/"
gcc -O2 -Wall -o "$DATA/poller" "$ROOT/test/bench/poller.c" -I"$(pg_config --includedir)" -lpq
chown -R postgres "$DATA"
as_postgres() { su postgres -s /bin/bash -c "cd $DATA && export PATH='$PATH' PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=bench && $*"; }
as_postgres "bash cluster.sh start $DATA/pg $PORT"
trap 'as_postgres "bash cluster.sh stop $DATA/pg $PORT"' EXIT
as_postgres "PGDATABASE=postgres createdb bench && psql -Xq -c 'CREATE EXTENSION durable'"

stamp=$(date -u +%Y%m%d-%H%M%S)
as_postgres "/usr/bin/python3 bench.py --out $DATA/results/$stamp.json $*"
cp "$DATA/results/$stamp.json" "$ROOT/test/bench/results/"
# the server's log beside it (not committed): the next run removes the server
cp "$DATA/pg/server.log" "$ROOT/test/bench/results/$stamp.server.log"
echo "copied to test/bench/results/$stamp.json"
