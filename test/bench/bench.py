#!/usr/bin/python3
"""durable's benchmarks: throughput, dispatch latency, timers and replay cost,
each next to PostgreSQL's own commit ceiling on the same server.

    bench.py [--scenario NAME ...] [--clients K] [--quick]

Connects with the usual PG* environment variables to a server that preloads
durable (test/bench/run.sh starts one).  Prints a table and writes JSON to
test/bench/results/.  Activities are done by real SQL clients, never by the
worker: poller.c (built by run.sh), one process and connection each, like
pgbench for the ceiling.  Scenarios:

  ceiling      pgbench, a one-row INSERT per transaction (prepared), K clients
  throughput   N workflows of 1 and of 10 sequential activities, K pollers
  sql          SQL activities (run by the worker itself) per second
  fanout       one workflow awaiting 1,000 parallel activities, K pollers
  latency      start_workflow commit -> waiting poller has the task, and
               complete_activity commit -> next task, idle and loaded;
               start_workflow call -> task, idle, also with the eager start
  timers       10,000 timers due in the same second (spread over it, and all
               at the same instant): fired/s and lateness; the idle
               worker's CPU with 1,000,000 pending timers
  replay       a workflow of 1,000 sequential activities: the workflow task
               at step 1,000 versus step 10 (run inline by complete_activity,
               and by the worker)
"""
import argparse
import threading
import json
import os
import statistics
import subprocess
import sys
import time

import psycopg2

ROOT = os.path.dirname(os.path.abspath(__file__))


def connect():
    conn = psycopg2.connect(application_name="durable-bench")
    conn.autocommit = True
    return conn


def q(conn, sql, args=None):
    cur = conn.cursor()
    cur.execute(sql, args)
    return cur.fetchall() if cur.description else None


def q1(conn, sql, args=None):
    rows = q(conn, sql, args)
    return rows[0][0] if rows else None


def wal_position(conn):
    return q1(conn, "SELECT pg_current_wal_insert_lsn()")


def wal_records(conn, since):
    """WAL records since an LSN, by kind, counted by pg_waldump: commits (the
    transactions that wrote something: read-only ones write none),
    MultiXacts created, and the bytes of all records (full-page images
    included)."""
    # the flushed end: records still in WAL buffers are not in the files yet
    # (every commit counted was flushed before it returned)
    until = q1(conn, "SELECT pg_current_wal_flush_lsn()")
    wal = os.path.join(q1(conn, "SHOW data_directory"), "pg_wal")
    out = subprocess.run(["pg_waldump", "--stats=record", "-p", wal, "-s", since, "-e", until],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("pg_waldump failed: " + out.stderr)
    out = out.stdout
    counts = {"commits": 0, "multixacts": 0, "bytes": 0}
    for line in out.splitlines():
        if line.startswith("Total "):
            # Total  N  record bytes [%]  FPI bytes [%]  combined bytes [%]
            counts["bytes"] = int(line.split()[6])
        elif line.startswith("Transaction/COMMIT "):
            counts["commits"] = int(line.split()[1])
        elif line.startswith("MultiXact/CREATE_ID "):
            counts["multixacts"] = int(line.split()[1])
    return counts


def next_xid(conn):
    """The next transaction id to be assigned (taking none): the difference
    of two readings is the ids used in between, subtransactions' included,
    which is what brings on anti-wraparound vacuums."""
    return q1(conn, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(values) - 1)
    return values[f] + (values[c] - values[f]) * (k - f)


def setup(conn):
    with open(os.path.join(ROOT, "workflows.sql")) as f:
        q(conn, f.read())


def clean(conn):
    """Forget earlier runs, so that no scenario pays for another's rows, nor
    for the checkpoint their WAL would bring on in its middle (a checkpoint
    stalled the timers' second by 45 ms in some runs)."""
    q(conn, "TRUNCATE durable.runs, durable.due_tasks, durable.recorded_events, durable.activity_tasks, durable.timers, bench_effects")
    q(conn, "VACUUM ANALYZE durable.runs, durable.recorded_events, durable.activity_tasks, durable.timers")
    q(conn, "CHECKPOINT")


def warm_wal(conn):
    """A server that has been running has WAL segments recycled and waiting:
    a fresh one creates each new segment, zero-filling 16 MB in the middle
    of whatever statement crossed into it (40 ms here: the one stall in the
    timers' second when that scenario ran alone).  Writing 256 MB of WAL,
    then a checkpoint, leaves the server as one that has: the checkpoint
    recycles the segments, as many as its distance says the next cycle
    needs.  Settings stay the defaults."""
    for _ in range(256):
        q(conn, "SELECT pg_logical_emit_message(false, 'durable-bench', repeat('x', 1048576))")
    q(conn, "CHECKPOINT")


# ---- activity pollers: poller.c, one process and one connection each ----

POLLER_APP = "durable-bench-poller"

class Pollers:
    """K real SQL clients that poll and complete.  mode (poller.c): "two"
    (poll_activity, then complete_activity), "combined" (complete_and_poll,
    one round trip and one commit per activity while tasks keep coming) or
    "two-async-claim" (as "two", the poll's commit not waiting for its WAL
    flush)."""

    def __init__(self, queue, k, mode="two"):
        self.proc = subprocess.Popen([os.path.join(ROOT, "poller"), queue, str(k),
                                      mode],
                                     stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PGAPPNAME=POLLER_APP))
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("pollers did not start")

    def pids(self):
        """The client processes (the parent only waits)."""
        return [p for p in all_pids() if parent_pid(p) == self.proc.pid]

    def finish(self):
        self.proc.terminate()
        out, _ = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError("pollers failed")
        return int(out.split()[-1])


# ---- CPU time per activity, by process, from /proc ----

def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def proc_stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def parent_pid(pid):
    fields = proc_stat(pid)
    return int(fields[1]) if fields else None


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total


def machine_busy_ticks():
    """All CPUs' busy time (user, nice, system, irq, softirq: not idle, I/O
    wait or time stolen by the hypervisor), in clock ticks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6]


class CpuMeter:
    """CPU (user + system) of the pollers' backends, the durable worker and
    the poller processes: far steadier than rates on a shared machine."""

    def __init__(self, conn, pollers):
        self.pids = {
            "poller_backends": [r[0] for r in q(conn, "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                                (POLLER_APP,))],
            "worker": [q1(conn, "SELECT pid FROM durable.worker_status() WHERE database = current_database()")],
            "poller_clients": pollers.pids()}
        self.start = {k: cpu_ticks(v) for k, v in self.pids.items()}
        self.machine_start = machine_busy_ticks()

    def per_activity_us(self, activities):
        hz = os.sysconf("SC_CLK_TCK")
        used = {k: (cpu_ticks(v) - self.start[k]) * 1e6 / hz / activities for k, v in self.pids.items()}
        used["total"] = sum(used.values())
        used["machine"] = (machine_busy_ticks() - self.machine_start) * 1e6 / hz / activities
        return {k: round(v) for k, v in used.items()}


def wait_closed(conn, prefix, n, timeout=600):
    """Waits until n runs whose workflow_id starts with prefix have closed,
    and returns when the last of them closed (epoch seconds, the server's
    clock: the same machine's).  Looks only every 100 ms: each look scans
    durable.runs, and looking every 20 ms took 5 to 10% of a core from the
    very scenario it timed (and pruned the pages the pollers were updating);
    the time comes from closed_at, not from when the look saw it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        closed, last = q(conn, "SELECT count(*), extract(epoch FROM max(closed_at)) FROM durable.runs"
                               " WHERE workflow_id LIKE %s AND status <> 'running'", (prefix + "%",))[0]
        if closed >= n:
            return float(last)
        time.sleep(0.1)
    raise RuntimeError("workflows %s did not finish" % prefix)


# ---- scenarios ----

def one_row_inserts(conn, args, seconds):
    """pgbench's one-row INSERT, args.clients clients for seconds: (commits/s,
    commits)."""
    script = os.path.join(ROOT, "insert.sql")
    # prepared statements, as the pollers use: the simple protocol would
    # parse and plan the INSERT at every commit and lower the ceiling (by
    # about 7% here)
    out = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", str(args.clients), "-j", str(args.clients),
                          "-T", str(seconds), "-f", script],
                         capture_output=True, text=True, check=True).stdout
    tps = float([l for l in out.splitlines() if l.startswith("tps")][0].split()[2])
    commits = int([l for l in out.splitlines() if l.startswith("number of transactions actually processed")][0]
                  .split(":")[1].split("/")[0])
    # its rows would be vacuumed in the middle of a later scenario
    q(conn, "TRUNCATE bench_ceiling")
    return tps, commits


def ceiling(conn, args):
    busy0 = machine_busy_ticks()
    tps, commits = one_row_inserts(conn, args, args.seconds)
    busy = machine_busy_ticks() - busy0
    return {"commits_per_s": round(tps, 1), "clients": args.clients,
            "machine_cpu_us_per_commit": round(busy * 1e6 / os.sysconf("SC_CLK_TCK") / commits)}


# name: (activities per workflow, pollers' mode, label, times the usual
# number of workflows, workflow, first tasks made before the pollers
# start, an idle long poll beside them).  The "async_claim" ones are not a
# recommendation: they measure what two round trips would do if a claim
# could be lost in a server crash (see BENCHMARKS.md).  The "sustained" one
# runs eight times as long, so that what builds up under a steady load (the
# entries of claimed tasks at the front of the queue's index, until VACUUM)
# shows.  The "start_to_close" one gives each activity a 60 s timeout, as
# real activities have (Temporal asks for one).  The "first_tasks_made" one
# (as many as "sustained") lets the worker make every workflow's first task
# before the pollers start, and is timed from then: the pollers' part
# alone, without the worker's share of the machine's cores beside it.  The
# "idle_long_poll" one (as many as "sustained") has one more client waiting
# in poll_activity() on a queue that gets no task, all along: its
# statement's snapshot holds back what VACUUM and the indexes' killed
# entries may remove, as any long-running statement does.  The "idle_call"
# one has that client wait with CALL durable.wait_for_activity_task(),
# which holds no snapshot while it waits.
THROUGHPUT_VARIANTS = {
    "1_step": (1, "two", "1-activity workflows, poll + complete", 1, "bench_steps"),
    "1_step_complete_and_poll": (1, "combined", "1-activity workflows, complete_and_poll", 1, "bench_steps"),
    "10_steps": (10, "two", "10-activity workflows, poll + complete", 1, "bench_steps"),
    "10_steps_complete_and_poll": (10, "combined", "10-activity workflows, complete_and_poll", 1, "bench_steps"),
    "1_step_async_claim": (1, "two-async-claim", "1-activity workflows, poll (claim not flushed) + complete", 1,
                           "bench_steps"),
    "10_steps_async_claim": (10, "two-async-claim", "10-activity workflows, poll (claim not flushed) + complete", 1,
                             "bench_steps"),
    "1_step_complete_and_poll_sustained": (1, "combined", "1-activity workflows, complete_and_poll, 8 times as many",
                                           8, "bench_steps"),
    "1_step_complete_and_poll_start_to_close": (1, "combined",
                                                "1-activity workflows with start_to_close, complete_and_poll", 1,
                                                "bench_timed_steps"),
    "1_step_complete_and_poll_sustained_first_tasks_made": (1, "combined",
                                                            "1-activity workflows, complete_and_poll, 8 times as many,"
                                                            " first tasks made before", 8, "bench_steps", True),
    "1_step_complete_and_poll_sustained_idle_long_poll": (1, "combined",
                                                          "1-activity workflows, complete_and_poll, 8 times as many,"
                                                          " an idle long poll beside", 8, "bench_steps", False,
                                                          "poll_activity"),
    "1_step_complete_and_poll_sustained_idle_call": (1, "combined",
                                                     "1-activity workflows, complete_and_poll, 8 times as many,"
                                                     " an idle CALL wait_for_activity_task beside", 8, "bench_steps",
                                                     False, "wait_for_activity_task"),
}


class IdleLongPoll:
    """A client waiting on a queue that gets no task, until finish() cancels
    it: in poll_activity(), which holds its statement's snapshot while it
    waits, or in the procedure wait_for_activity_task(), which holds none."""

    WAITS = {"poll_activity": "SELECT count(*) FROM durable.poll_activity('bench-idle', wait => '1 hour')",
             "wait_for_activity_task": "CALL durable.wait_for_activity_task('bench-idle', wait => '1 hour')"}

    def __init__(self, how):
        self.conn = connect()
        self.pid = q1(self.conn, "SELECT pg_backend_pid()")
        self.thread = threading.Thread(target=self._wait, args=(self.WAITS[how],))
        self.thread.start()

    def _wait(self, sql):
        try:
            q(self.conn, sql)
        except psycopg2.Error:
            pass

    def finish(self, conn):
        q(conn, "SELECT pg_cancel_backend(%s)", (self.pid,))
        self.thread.join()
        self.conn.close()


def throughput(conn, args, steps, n, mode, workflow, first_tasks_made=False, idle_long_poll=None):
    # the ceiling again just before and just after, as well as the one of
    # the whole run: how fast this machine commits drifts by 10% and more
    # over a few seconds, and a variant lasts one or a few
    clean(conn)
    adjacent = [one_row_inserts(conn, args, args.adjacent_seconds)[0]] if args.adjacent_seconds else []
    prefix = "tp%d-" % steps
    idle = IdleLongPoll(idle_long_poll) if idle_long_poll else None
    # the pollers are connected and waiting before the first workflow starts
    pollers = None if first_tasks_made else Pollers("bench", args.clients, mode)
    lsn0 = wal_position(conn)
    # timed from the commit that starts them all
    q(conn, "SELECT count(durable.start_workflow(%s, jsonb_build_object('steps', %s, 'queue', 'bench'), %s || i))"
            " FROM generate_series(1, %s) i", (workflow, steps, prefix, n))
    t0 = time.time()
    xid0 = next_xid(conn)
    if first_tasks_made:
        # or from when the worker has made every first task
        while q1(conn, "SELECT count(*) FROM durable.activity_tasks WHERE task_queue = 'bench'") < n:
            time.sleep(0.05)
        t0 = time.time()
        pollers = Pollers("bench", args.clients, mode)
    meter = CpuMeter(conn, pollers)
    last_closed = wait_closed(conn, prefix, n)
    cpu = meter.per_activity_us(n * steps)
    elapsed = last_closed - t0
    activities = n * steps
    xids = next_xid(conn) - xid0
    done = pollers.finish()
    if idle:
        idle.finish(conn)
    wal = wal_records(conn, lsn0)
    if adjacent:
        adjacent.append(one_row_inserts(conn, args, args.adjacent_seconds)[0])
    extra = {"adjacent_ceiling_commits_per_s": round(sum(adjacent) / len(adjacent), 1),
             "activities_per_s_vs_adjacent_ceiling": round(activities / elapsed / (sum(adjacent) / len(adjacent)), 3)
             } if adjacent else {}
    return {**extra, "workflows": n, "steps": steps, "pollers": args.clients,
            "seconds": round(elapsed, 2),
            "workflows_per_s": round(n / elapsed, 1),
            "activities_per_s": round(activities / elapsed, 1),
            "commits_per_activity": round(wal["commits"] / activities, 2),
            "wal_bytes_per_activity": round(wal["bytes"] / activities),
            "xids_per_activity": round(xids / activities, 2),
            "multixacts_per_activity": round(wal["multixacts"] / activities, 2),
            "cpu_us_per_activity": cpu,
            "completed_by_pollers": done}


def sql_activities(conn, args):
    clean(conn)
    n, steps = (20, 10) if args.quick else (300, 10)
    q(conn, "SELECT count(durable.start_workflow('bench_sql_steps', jsonb_build_object('steps', %s, 'id', 'sql' || i), 'sql-' || i))"
            " FROM generate_series(1, %s) i", (steps, n))
    t0 = time.time()
    elapsed = wait_closed(conn, "sql-", n) - t0
    rows = q1(conn, "SELECT count(*) FROM bench_effects")
    return {"sql_activities": n * steps, "seconds": round(elapsed, 2),
            "sql_activities_per_s": round(n * steps / elapsed, 1), "rows": rows}


def fanout_once(conn, args, n, mode, workflow_id):
    clean(conn)
    t0 = time.time()
    q(conn, "SELECT durable.start_workflow('bench_fanout', jsonb_build_object('n', %s, 'queue', 'fan'), %s)",
      (n, workflow_id))
    pollers = Pollers("fan", args.clients, mode)
    elapsed = wait_closed(conn, workflow_id, 1) - t0
    pollers.finish()
    tasks = q1(conn, "SELECT count(*) FROM durable.history h JOIN durable.runs r USING (run_id)"
               " WHERE r.workflow_id = %s AND h.event_type = 'WorkflowTaskCompleted'", (workflow_id,))
    return {"seconds": round(elapsed, 2), "activities_per_s": round(n / elapsed, 1),
            "workflow_tasks": tasks}


def fanout(conn, args):
    """One workflow, n parallel activities, timed from the start call to the
    run's close: with the two-trip loop (the top-level figures, as from the
    start) and with complete_and_poll."""
    n = 200 if args.quick else 1000
    r = {"parallel_activities": n, "pollers": args.clients}
    r.update(fanout_once(conn, args, n, "two", "fan-1"))
    r["complete_and_poll"] = fanout_once(conn, args, n, "combined", "fan-2")
    return r


def dispatch_latencies(samples, loaded_pollers=0, eager_start=False):
    """start_workflow commit -> poller has the task (and from the call: with
    eager_start, the call runs the first workflow task); complete commit ->
    next task."""
    starter = connect()
    waiter = connect()
    if eager_start:
        q(starter, "SET durable.eager_workflow_start = on")
    start_lat, call_lat, next_lat = [], [], []
    load = Pollers("bench", loaded_pollers) if loaded_pollers else None
    if load:
        q(starter, "SELECT count(durable.start_workflow('bench_steps', jsonb_build_object('steps', 1000000, 'queue', 'bench'), 'load-' || i))"
                   " FROM generate_series(1, %s) i", (loaded_pollers * 2,))
    for i in range(samples):
        wf = "lat-%d-%d" % (loaded_pollers, i)
        cur = waiter.cursor()
        # the waiter is already waiting when the start commits
        got = {}

        def wait():
            c = waiter.cursor()
            c.execute("SELECT task_token FROM durable.poll_activity('lat', wait => '10 s')")
            got["t"] = time.perf_counter()
            got["token"] = c.fetchone()[0]
        th = threading.Thread(target=wait)
        th.start()
        time.sleep(0.005)
        t_call = time.perf_counter()
        q(starter, "SELECT durable.start_workflow('bench_steps', jsonb_build_object('steps', 2, 'queue', 'lat'), %s)", (wf,))
        t0 = time.perf_counter()
        th.join()
        start_lat.append((got["t"] - t0) * 1000)
        call_lat.append((got["t"] - t_call) * 1000)
        th = threading.Thread(target=wait)
        th.start()
        time.sleep(0.005)
        q(starter, "SELECT durable.complete_activity(%s, '1')", (got.pop("token"),))
        t0 = time.perf_counter()
        th.join()
        next_lat.append((got["t"] - t0) * 1000)
        q(starter, "SELECT durable.complete_activity(%s, '1')", (got["token"],))
    if load:
        load.finish()
    stats = {}
    for name, values in (("start_to_first_task", start_lat), ("start_call_to_first_task", call_lat),
                         ("complete_to_next_task", next_lat)):
        stats[name] = {"p50_ms": round(percentile(values, 50), 2), "p99_ms": round(percentile(values, 99), 2)}
    return stats


def latency(conn, args):
    clean(conn)
    samples = 50 if args.quick else 200
    idle = dispatch_latencies(samples)
    loaded = dispatch_latencies(samples // 2, loaded_pollers=args.clients)
    eager = dispatch_latencies(samples, eager_start=True)
    return {"samples": samples, "idle": idle, "loaded": loaded, "idle_eager_start": eager}


def worker_cpu(conn, seconds):
    pid, wake0 = q(conn, "SELECT pid, wakeups FROM durable.worker_status() WHERE database = current_database()")[0]

    def ticks():
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().split()
        return int(fields[13]) + int(fields[14])
    t0 = ticks()
    time.sleep(seconds)
    t1 = ticks()
    wake1 = q1(conn, "SELECT wakeups FROM durable.worker_status() WHERE database = current_database()")
    return {"cpu_ms": (t1 - t0) * 1000 // os.sysconf("SC_CLK_TCK"), "wakeups": wake1 - wake0,
            "seconds": seconds}


def timer_lateness(conn, n, lead, spread_s):
    """n sleepers whose timers fall due over spread_s seconds (0: all at the
    same instant), lead seconds from now: fired/s and lateness, the time
    from a timer's fire_at to its TimerFired commit... as recorded."""
    clean(conn)
    at = q1(conn, "SELECT date_trunc('second', clock_timestamp()) + make_interval(secs => %s)", (lead,))
    q(conn, "SELECT count(durable.start_workflow('bench_sleeper', jsonb_build_object('at',"
            " %s::timestamptz + (i - 1) * make_interval(secs => %s::float8 / %s)), 'tm-' || i))"
            " FROM generate_series(1, %s) i", (at, spread_s, n, n))
    # Measured warm, as a worker that has been running is.  Once all the
    # timers are set: the statistics of the tables they went into taken now
    # (not by an autoanalyze in the measured second, which would also make
    # every statement be planned again), then a few sleepers fired first, so
    # that the first firing's one-time costs (the firing statements planned
    # again after clean()'s TRUNCATE and the ANALYZE: 5 to 15 ms on the
    # first timers) are not in the measured second.
    deadline = time.time() + lead
    while q1(conn, "SELECT count(*) FROM durable.timers") < n and time.time() < deadline:
        time.sleep(0.1)
    q(conn, "ANALYZE durable.runs, durable.recorded_events, durable.timers")
    q(conn, "SELECT count(durable.start_workflow('bench_sleeper', jsonb_build_object('at',"
            " clock_timestamp() + interval '50 ms'), 'warm-tm-' || i)) FROM generate_series(1, 20) i")
    wait_closed(conn, "warm-tm-", 20)
    if q1(conn, "SELECT clock_timestamp() > %s::timestamptz - interval '200 ms'", (at,)):
        raise RuntimeError("the timers' lead was too short to set them all and warm up")
    wait_closed(conn, "tm-", n, timeout=lead + 300)
    rows = q(conn, """
SELECT extract(epoch FROM f.event_time - (s.details->>'fire_at')::timestamptz) * 1000, f.event_time
  FROM durable.history s JOIN durable.history f USING (run_id) JOIN durable.runs r USING (run_id)
 WHERE s.event_type = 'TimerStarted' AND f.event_type = 'TimerFired' AND r.workflow_id LIKE 'tm-%'""")
    late = [float(r[0]) for r in rows]
    span = (max(r[1] for r in rows) - min(r[1] for r in rows)).total_seconds()
    return {"timers": n, "due_over_s": spread_s,
            "fired_per_s": round(n / span, 1) if span > 0 else None,
            "lateness_p50_ms": round(percentile(late, 50), 2),
            "lateness_p99_ms": round(percentile(late, 99), 2),
            "lateness_max_ms": round(max(late), 2)}


def lone_timers(conn, sleeps_s):
    """One sleeper at a time, each due sleeps_s[i] seconds after the idle
    worker went to sleep: how late a timer fires after a long sleep of the
    worker (the operating system lets a long timed wait end late)."""
    clean(conn)
    late = []
    for i, secs in enumerate(sleeps_s):
        wf = "lone-%d" % i
        q(conn, "SELECT durable.start_workflow('bench_sleeper', jsonb_build_object('at',"
                " clock_timestamp() + make_interval(secs => %s)), %s)", (secs, wf))
        wait_closed(conn, wf, 1, timeout=secs + 60)
        late.append(q1(conn, """
SELECT extract(epoch FROM f.event_time - (s.details->>'fire_at')::timestamptz) * 1000
  FROM durable.history s JOIN durable.history f USING (run_id) JOIN durable.runs r USING (run_id)
 WHERE s.event_type = 'TimerStarted' AND f.event_type = 'TimerFired' AND r.workflow_id = %s""", (wf,)))
    return {"sleeps_s": sleeps_s, "lateness_ms": [round(float(x), 2) for x in late],
            "lateness_max_ms": round(float(max(late)), 2)}


def timers(conn, args):
    n = 2000 if args.quick else 10000
    lead = 10 if args.quick else 20
    # "due in the same second": spread over it, and the harsher burst where
    # every one falls due at the very same instant
    result = {"spread": timer_lateness(conn, n, lead, 1.0),
              "burst": timer_lateness(conn, n, lead, 0.0),
              "lone": lone_timers(conn, [2, 4] if args.quick else [3, 6, 12])}
    # a million pending timers, far in the future, cost an idle worker nothing
    clean(conn)
    pending = 100000 if args.quick else 1000000
    q(conn, "SELECT durable.start_workflow('bench_sleeper', jsonb_build_object('at', now() + interval '1 year'), 'far-1')")
    wait_closed_timer = time.time() + 30
    while q1(conn, "SELECT count(*) FROM durable.timers") < 1 and time.time() < wait_closed_timer:
        time.sleep(0.05)
    q(conn, """INSERT INTO durable.timers (run_id, kind, handle, fire_at)
               SELECT run_id, 'timer', 1000 + i, now() + interval '1 day' + i * interval '1 ms'
                 FROM durable.runs, generate_series(1, %s) i WHERE workflow_id = 'far-1'""", (pending,))
    q(conn, "ANALYZE durable.timers")
    # wake it once, so that it computes its next deadline with all of them
    q(conn, "SELECT durable.signal('far-1', 'nudge')")
    time.sleep(1)
    result["pending_timers"] = pending
    result["idle_worker"] = worker_cpu(conn, 5 if args.quick else 10)
    clean(conn)
    return result


def replay_steps(conn, args, inline, workflow="bench_steps"):
    """One run of a workflow of sequential activities done one at a time; per
    step, the time from completing an activity to holding the next task: the
    workflow task between them (replay included) runs inside
    complete_activity when inline, in the worker otherwise."""
    clean(conn)
    steps = 200 if args.quick else 1000
    q(conn, "SET durable.eager_workflow_tasks = %s" % ("on" if inline else "off"))
    q(conn, "SELECT durable.start_workflow(%s, jsonb_build_object('steps', %s, 'queue', 'rp'), 'replay-1')",
      (workflow, steps))
    cur = conn.cursor()
    per_step = []
    cur.execute("SELECT task_token FROM durable.poll_activity('rp', wait => '10 s')")
    token = cur.fetchone()[0]
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        cur.execute("SELECT durable.complete_activity(%s, '1')", (token,))
        if step == steps:
            break
        cur.execute("SELECT task_token FROM durable.poll_activity('rp', wait => '10 s')")
        token = cur.fetchone()[0]
        per_step.append((time.perf_counter() - t0) * 1000)
    q(conn, "RESET durable.eager_workflow_tasks")
    # medians of 50 tasks each (20 in --quick): one task is well under a
    # millisecond, and this machine's noise is not
    k = 20 if args.quick else 50
    early = statistics.median(per_step[9:9 + k])
    late = statistics.median(per_step[-k:])
    return {"workflow": workflow, "steps": steps, "task_ms_at_step_10": round(early, 2),
            "task_ms_at_last_step": round(late, 2), "ratio": round(late / early, 2)}


# mode: (eager_workflow_tasks, workflow, label)
REPLAY_MODES = {
    "inline": (True, "bench_steps", "run by complete_activity"),
    "worker": (False, "bench_steps", "run by the worker"),
    # the same loop without the benchmark's own work per step (to_jsonb(i),
    # input->>'queue', a cast): what replaying costs durable, per call
    "inline_bare_code": (True, "bench_bare_steps", "run by complete_activity, bare loop"),
}


def replay(conn, args):
    return {mode: replay_steps(conn, args, inline, workflow)
            for mode, (inline, workflow, _) in REPLAY_MODES.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", action="append",
                        choices=["ceiling", "throughput", "sql", "fanout", "latency", "timers", "replay"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--adjacent-seconds", type=int, default=3,
                        help="throughput: the ceiling again for this long just before and after each variant"
                             " (0: not)")
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--scale", type=int, default=1, help="multiply the throughput counts")
    parser.add_argument("--variant", action="append",
                        choices=list(THROUGHPUT_VARIANTS),
                        help="throughput: only these variants (default: all of them)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    scenarios = args.scenario or ["ceiling", "throughput", "sql", "fanout", "latency", "timers", "replay"]

    conn = connect()
    setup(conn)
    warm_wal(conn)
    results = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "server": q1(conn, "SELECT version()"),
               "settings": dict(q(conn, "SELECT name, setting FROM pg_settings WHERE name IN "
                                        "('fsync', 'synchronous_commit', 'shared_buffers', 'max_wal_size', 'wal_level')")),
               "cpus": os.cpu_count(), "scenarios": {}}
    ceiling_tps = None
    for s in scenarios:
        t0 = time.time()
        if s == "ceiling":
            r = ceiling(conn, args)
            ceiling_tps = r["commits_per_s"]
        elif s == "throughput":
            n1, n10 = (500, 100) if args.quick else (5000 * args.scale, 1000 * args.scale)
            r = {k: throughput(conn, args, steps, times * (n1 if steps == 1 else n10), mode, workflow,
                               *extras)
                 for k, (steps, mode, _, times, workflow, *extras) in THROUGHPUT_VARIANTS.items()
                 if not args.variant or k in args.variant}
        elif s == "sql":
            r = sql_activities(conn, args)
        elif s == "fanout":
            r = fanout(conn, args)
        elif s == "latency":
            r = latency(conn, args)
        elif s == "timers":
            r = timers(conn, args)
        else:
            r = replay(conn, args)
        r["bench_seconds"] = round(time.time() - t0, 1)
        results["scenarios"][s] = r
        print("%-10s %s" % (s, json.dumps(r)), flush=True)

    if ceiling_tps:
        for key in THROUGHPUT_VARIANTS:
            t = results["scenarios"].get("throughput", {}).get(key)
            if t:
                t["activities_per_s_vs_ceiling"] = round(t["activities_per_s"] / ceiling_tps, 3)
        for s in ("sql", "fanout"):
            t = results["scenarios"].get(s)
            if t:
                rate = t.get("sql_activities_per_s") or t.get("activities_per_s")
                t["vs_ceiling"] = round(rate / ceiling_tps, 3)
        t = results["scenarios"].get("fanout", {}).get("complete_and_poll")
        if t:
            t["vs_ceiling"] = round(t["activities_per_s"] / ceiling_tps, 3)

    print_table(results)
    out = args.out or os.path.join(ROOT, "results", time.strftime("%Y%m%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print("results written to %s" % out)


def print_table(results):
    s = results["scenarios"]
    rows = []
    if "ceiling" in s:
        rows.append(("ceiling: one-row INSERT commits/s", s["ceiling"]["commits_per_s"], ""))
        rows.append(("ceiling: machine CPU us per commit", s["ceiling"]["machine_cpu_us_per_commit"], ""))
    for key, (_, _, label, *_) in THROUGHPUT_VARIANTS.items():
        t = s.get("throughput", {}).get(key)
        if t:
            rows.append(("%s: workflows/s" % label, t["workflows_per_s"], ""))
            rows.append(("%s: activities/s" % label, t["activities_per_s"],
                         ("x%.2f of ceiling" % t["activities_per_s_vs_ceiling"] if "activities_per_s_vs_ceiling" in t else "")
                         + (", x%.2f of the one around it" % t["activities_per_s_vs_adjacent_ceiling"]
                            if "activities_per_s_vs_adjacent_ceiling" in t else "")))
            rows.append(("%s: WAL commits per activity" % label, t["commits_per_activity"], ""))
            if "wal_bytes_per_activity" in t:
                rows.append(("%s: WAL bytes per activity" % label, t["wal_bytes_per_activity"],
                             "the workflows' starts included"))
            rows.append(("%s: transaction ids / MultiXacts per activity" % label,
                         "%s / %s" % (t["xids_per_activity"], t["multixacts_per_activity"]), ""))
            c = t["cpu_us_per_activity"]
            rows.append(("%s: machine CPU us per activity" % label, c["machine"],
                         "pollers' backends %d, worker %d, poller processes %d" % (
                             c["poller_backends"], c["worker"], c["poller_clients"])))
    if "sql" in s:
        rows.append(("SQL activities/s (worker-run)", s["sql"]["sql_activities_per_s"],
                     "x%.2f of ceiling" % s["sql"]["vs_ceiling"] if "vs_ceiling" in s["sql"] else ""))
    if "fanout" in s:
        f = s["fanout"]
        for label, t in (("", f), (", complete_and_poll", f.get("complete_and_poll"))):
            if t:
                rows.append(("fan-out of %d%s: seconds" % (f["parallel_activities"], label), t["seconds"],
                             "%s activities/s%s, %s workflow tasks" % (
                                 t["activities_per_s"],
                                 " (x%.2f of ceiling)" % t["vs_ceiling"] if "vs_ceiling" in t else "",
                                 t.get("workflow_tasks"))))
    if "latency" in s:
        for mode in ("idle", "loaded", "idle_eager_start"):
            for k, v in s["latency"].get(mode, {}).items():
                rows.append(("latency %s %s p50/p99 ms" % (mode, k), "%s / %s" % (v["p50_ms"], v["p99_ms"]), ""))
    if "timers" in s:
        t = s["timers"]
        for key, label in (("spread", "due over one second"), ("burst", "due at the same instant")):
            r = t[key]
            rows.append(("timers: %d %s, fired/s" % (r["timers"], label), r["fired_per_s"], ""))
            rows.append(("timers: %d %s, lateness p50/p99/max ms" % (r["timers"], label), "%s / %s / %s" % (
                r["lateness_p50_ms"], r["lateness_p99_ms"], r["lateness_max_ms"]), ""))
        rows.append(("timers: one at a time, due %s s after the worker slept: lateness ms" % (
            " / ".join(str(x) for x in t["lone"]["sleeps_s"])),
            " / ".join(str(x) for x in t["lone"]["lateness_ms"]), ""))
        rows.append(("idle worker with %d timers: CPU ms, wakeups in %ds" % (
            t["pending_timers"], t["idle_worker"]["seconds"]),
            "%s, %s" % (t["idle_worker"]["cpu_ms"], t["idle_worker"]["wakeups"]), ""))
    if "replay" in s:
        for mode, (_, _, label) in REPLAY_MODES.items():
            r = s["replay"][mode]
            rows.append(("replay, %s: step ms around step 10 / %d" % (label, r["steps"]),
                         "%s / %s" % (r["task_ms_at_step_10"], r["task_ms_at_last_step"]),
                         "x%.2f" % r["ratio"]))
    width = max(len(r[0]) for r in rows) if rows else 10
    print()
    for name, value, note in rows:
        print("%-*s  %14s  %s" % (width, name, value, note))


if __name__ == "__main__":
    main()
