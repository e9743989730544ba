# Sourced by callgrind.sh and callgrind_pollers.sh: a throwaway server in
# $DIR on $PORT with every process under callgrind (one output file per
# process in $DIR/out), durable and the benchmark's workflows installed,
# and $1 workflows of $2 steps of $3 started, their first tasks run by the
# worker.  Defines as_postgres; the caller stops the server.
export PATH=/usr/lib/postgresql/15/bin:$PATH

# what the scripts need, and durable built and installed
callgrind_prepare()
{
	bash "$ROOT/scripts/install-deps.sh"
	command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
	make -C "$ROOT" -s
	make -C "$ROOT" -s install
}

as_postgres() { su postgres -s /bin/bash -c "cd $DIR && export PATH='$PATH' PGHOST=127.0.0.1 PGPORT=$PORT PGDATABASE=bench && $*"; }

callgrind_server_start()
{
	local workflows=$1 steps=$2 workflow=$3
	if [ -f "$DIR/data/postmaster.pid" ]; then
		su postgres -s /bin/bash -c "pg_ctl -D $DIR/data -m immediate -w stop" >/dev/null 2>&1 || true
	fi
	rm -rf "$DIR"; mkdir -p "$DIR/out"
	chown -R postgres "$DIR"
	as_postgres "initdb -D data -A trust >/dev/null"
	cat >> "$DIR/data/postgresql.conf" <<EOC
shared_preload_libraries = 'durable'
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
EOC
	as_postgres "valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$DIR/out/cg.%p -q postgres -D data > server.log 2>&1 &"
	trap 'as_postgres "pg_ctl -D data -m fast -w stop" >/dev/null 2>&1 || true' EXIT
	for _ in $(seq 1 120); do as_postgres "pg_isready -q" && break; sleep 1; done
	as_postgres "PGDATABASE=postgres createdb bench && psql -Xq -c 'CREATE EXTENSION durable'"
	cp "$ROOT/test/bench/workflows.sql" "$DIR/" && chown postgres "$DIR/workflows.sql"
	as_postgres "psql -Xq -f workflows.sql" 2>/dev/null
	as_postgres "psql -Xq" >/dev/null <<EOC
SELECT count(durable.start_workflow('$workflow', '{"steps": $steps, "queue": "cg"}', 'cg-' || i))
  FROM generate_series(1, $workflows) i;
EOC
	# the worker (slow under callgrind) runs every first workflow task
	for _ in $(seq 1 600); do
		[ "$(as_postgres "psql -XAtc 'SELECT count(*) FROM durable.activity_tasks'")" = "$workflows" ] && break
		sleep 1
	done
}

callgrind_server_stop()
{
	as_postgres "pg_ctl -D data -m fast -w stop" >/dev/null
	trap - EXIT
}
