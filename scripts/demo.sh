#!/bin/bash
# Quick start: installs what is needed, builds and installs durable, starts a
# throwaway PostgreSQL with durable preloaded, runs the greet workflow with a
# shell activity worker, and prints the run's history and result.
# Run as root from the repository root on Debian 12.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${DURABLE_DEMO_PORT:-54330}
DATA=/tmp/durable-demo
export PATH=/usr/lib/postgresql/15/bin:$PATH

bash "$ROOT/scripts/install-deps.sh"
make -C "$ROOT" -s
make -C "$ROOT" -s install

as_postgres() { su postgres -s /bin/bash -c "cd /tmp && PATH='$PATH' PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres $*"; }
rm -rf "$DATA"; mkdir -p "$DATA"; chown postgres "$DATA"
cp "$ROOT/test/cluster.sh" "$ROOT/examples/greet.sql" "$ROOT/examples/shell_worker.sh" "$DATA/"
chown postgres "$DATA"/*
as_postgres "bash $DATA/cluster.sh start $DATA/pg $PORT"
trap 'as_postgres "bash $DATA/cluster.sh stop $DATA/pg $PORT"' EXIT

echo "== a throwaway PostgreSQL on 127.0.0.1:$PORT, with durable preloaded"
as_postgres "psql -Xq -c 'CREATE EXTENSION durable' -f $DATA/greet.sql"
as_postgres "psql -XAt -c \"SELECT 'started ' || durable.start_workflow('greet', '{\\\"id\\\": 7}', workflow_id => 'greet-7')\""
echo "== the activity worker does three tasks (lookup_user, then two renders)"
as_postgres "bash $DATA/shell_worker.sh 3"
echo "== history of greet-7"
as_postgres "psql -X -c \"SELECT event_id, event_type, details - 'retry_policy' AS details FROM durable.history('greet-7')\""
echo "== result of greet-7"
as_postgres "psql -X -c \"SELECT jsonb_pretty(durable.result('greet-7', wait => '10 s')) AS result\""
