#!/bin/bash
# test/cluster.sh start|stop DATADIR PORT
#
# A throwaway PostgreSQL 15 cluster with durable preloaded, listening only on
# 127.0.0.1 and a private socket directory.  Run as a non-root user (initdb
# refuses root); test/run.sh and scripts/demo.sh call it as postgres.
set -euo pipefail
BIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
cmd=$1 datadir=$2 port=$3
case "$cmd" in
start)
    rm -rf "$datadir"
    "$BIN/initdb" -D "$datadir" -A trust -U postgres --no-sync >/dev/null
    mkdir -p "$datadir/sock"
    cat >> "$datadir/postgresql.conf" <<CONF
shared_preload_libraries = 'durable'
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$datadir/sock'
max_worker_processes = 16
log_min_messages = warning
log_line_prefix = '%m [%p] %b '
CONF
    "$BIN/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w start >/dev/null
    ;;
stop)
    "$BIN/pg_ctl" -D "$datadir" -m fast -w stop >/dev/null || true
    ;;
*)
    echo "usage: $0 start|stop DATADIR PORT" >&2; exit 2;;
esac
