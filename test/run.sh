#!/bin/bash
# Runs every test suite of durable against real PostgreSQL 15 servers:
#   pg_regress            sql/*.sql, expected/*.out
#   pg_isolation_regress  test/isolation/specs, test/isolation/expected
#   TAP                   test/t/*.pl (crashes, restarts, standbys)
# Run as root from the repository root on Debian 12: it installs what it
# needs, builds and installs the extension, then runs the suites as the
# postgres user (initdb refuses root) on a copy of the tree.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${DURABLE_TEST_PORT:-54329}
export PATH=/usr/lib/postgresql/15/bin:$PATH

bash "$ROOT/scripts/install-deps.sh"
make -C "$ROOT" -s clean
make -C "$ROOT" -s
make -C "$ROOT" -s install

WORK=$(mktemp -d /tmp/durable-test.XXXXXX)
tar -C "$ROOT" --exclude=.git -cf - . | tar -C "$WORK" -xf -
chown -R postgres:postgres "$WORK"
as_postgres() { su postgres -s /bin/bash -c "cd '$WORK' && PATH='$PATH' $*"; }

cleanup() { as_postgres "bash test/cluster.sh stop '$WORK/data' $PORT" || true; }
trap cleanup EXIT
as_postgres "bash test/cluster.sh start '$WORK/data' $PORT"

status=0
as_postgres "make -s installcheck PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres" || status=$?
if [ $status -ne 0 ]; then
    for f in "$WORK"/regression.diffs "$WORK"/output_iso/regression.diffs; do
        [ -f "$f" ] && { echo "=== $f"; cat "$f"; }
    done
    for f in "$WORK"/tmp_check/log/regress_log_*; do
        [ -f "$f" ] && { echo "=== $f"; tail -n 60 "$f"; }
    done
    echo "=== server log"; tail -n 60 "$WORK/data/server.log" || true
    echo "FAILED (work tree kept in $WORK)"
    exit $status
fi
cleanup
trap - EXIT
rm -rf "$WORK"
echo "all test suites passed"
