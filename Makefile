# durable: PGXS build.  `make && make install`, then see README.md.

MODULE_big = durable
OBJS = src/durable.o src/shmem.o src/launcher.o src/worker.o src/engine.o src/rows.o src/row_indexes.o src/task_rows.o src/plans.o \
       src/token.o src/activity_options.o src/activity.o src/activity_workers.o src/history.o src/environment.o src/replay.o src/plpgsql_exprs.o src/workflow_api.o src/replayed_calls.o src/sql_activity.o src/timers.o src/client.o src/queue_heads.o src/user_functions.o
EXTENSION = durable
DATA = durable--0.1.sql
PGFILEDESC = "durable - durable execution of workflows inside PostgreSQL"

PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Werror=implicit-function-declaration
# task tokens are signed with OpenSSL's SHA-256 (PostgreSQL links it too)
SHLIB_LINK = -lcrypto

# pg_regress (sql/, expected/) against a server that preloads durable
REGRESS = api errors replay security timers activities eager
REGRESS_OPTS = --inputdir=. --load-extension=durable
# pg_isolation_regress (test/isolation/specs, test/isolation/expected)
ISOLATION = pollers completion_race signals activity_races queue_heads starts
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=durable
# TAP (test/t/*.pl), each with its own clusters
TAP_TESTS = 1

# no LLVM bitcode: nothing to JIT-inline here, and one dependency less
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS runs prove on t/ by default; ours live in test/t
PROVE_TESTS = test/t/*.pl

# every object depends on the headers (PGXS tracks no header dependencies)
$(OBJS): src/durable.h src/replay.h src/activity.h
