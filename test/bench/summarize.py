#!/usr/bin/env python3
"""Several benchmark runs of one engine, summed up: for each figure the
lowest and the highest over the runs (this shared machine moves by 10 to 20%
from one run to the next, so a single run says little).

    python3 test/bench/summarize.py test/bench/results/20261130-02*.json

Prints one line per figure, as BENCHMARKS.md's tables give them."""
import json
import sys

# (label, path into a result's "scenarios", format)
FIGURES = [
    ("ceiling: one-row INSERT commits/s", "ceiling.commits_per_s", "{:,.0f}"),
    ("ceiling: machine CPU per commit (us)", "ceiling.machine_cpu_us_per_commit", "{:.0f}"),
]
for key in ("10_steps_complete_and_poll", "1_step_complete_and_poll", "10_steps", "1_step",
            "10_steps_async_claim", "1_step_async_claim", "1_step_complete_and_poll_sustained",
            "1_step_complete_and_poll_start_to_close", "1_step_complete_and_poll_sustained_first_tasks_made",
            "1_step_complete_and_poll_sustained_idle_long_poll", "1_step_complete_and_poll_sustained_idle_call"):
    t = "throughput." + key + "."
    FIGURES += [
        (key + ": activities/s", t + "activities_per_s", "{:,.0f}"),
        (key + ": x ceiling", t + "activities_per_s_vs_ceiling", "{:.2f}"),
        (key + ": x the ceiling around it", t + "activities_per_s_vs_adjacent_ceiling", "{:.2f}"),
        (key + ": machine CPU per activity (us)", t + "cpu_us_per_activity.machine", "{:.0f}"),
        (key + ": pollers' backends CPU (us)", t + "cpu_us_per_activity.poller_backends", "{:.0f}"),
        (key + ": worker CPU (us)", t + "cpu_us_per_activity.worker", "{:.0f}"),
        (key + ": WAL commits per activity", t + "commits_per_activity", "{:.2f}"),
        (key + ": WAL bytes per activity", t + "wal_bytes_per_activity", "{:,.0f}"),
        (key + ": transaction ids per activity", t + "xids_per_activity", "{:.2f}"),
        (key + ": MultiXacts per activity", t + "multixacts_per_activity", "{:.2f}"),
    ]
FIGURES += [
    ("SQL activities/s", "sql.sql_activities_per_s", "{:,.0f}"),
    ("SQL activities x ceiling", "sql.vs_ceiling", "{:.2f}"),
    ("fan-out of 1,000: seconds", "fanout.seconds", "{:.2f}"),
    ("fan-out of 1,000: activities/s", "fanout.activities_per_s", "{:,.0f}"),
    ("fan-out of 1,000: workflow tasks", "fanout.workflow_tasks", "{:.0f}"),
    ("fan-out of 1,000, complete_and_poll: seconds", "fanout.complete_and_poll.seconds", "{:.2f}"),
    ("fan-out of 1,000, complete_and_poll: activities/s", "fanout.complete_and_poll.activities_per_s", "{:,.0f}"),
    ("fan-out of 1,000, complete_and_poll: x ceiling", "fanout.complete_and_poll.vs_ceiling", "{:.2f}"),
    ("fan-out of 1,000, complete_and_poll: workflow tasks", "fanout.complete_and_poll.workflow_tasks", "{:.0f}"),
]
for mode in ("idle", "loaded", "idle_eager_start"):
    for kind in ("start_to_first_task", "start_call_to_first_task", "complete_to_next_task"):
        for p in ("p50_ms", "p99_ms"):
            FIGURES.append(("dispatch %s %s %s" % (mode, kind, p), "latency.%s.%s.%s" % (mode, kind, p), "{:.2f}"))
for key in ("spread", "burst"):
    FIGURES += [
        ("timers %s: fired/s" % key, "timers.%s.fired_per_s" % key, "{:,.0f}"),
        ("timers %s: lateness p50 (ms)" % key, "timers.%s.lateness_p50_ms" % key, "{:.2f}"),
        ("timers %s: lateness p99 (ms)" % key, "timers.%s.lateness_p99_ms" % key, "{:.1f}"),
        ("timers %s: lateness max (ms)" % key, "timers.%s.lateness_max_ms" % key, "{:.0f}"),
    ]
FIGURES += [
    ("timers one at a time after a long sleep: lateness max (ms)", "timers.lone.lateness_max_ms", "{:.2f}"),
    ("idle worker, 1,000,000 timers: CPU ms", "timers.idle_worker.cpu_ms", "{:.0f}"),
    ("idle worker, 1,000,000 timers: wakeups", "timers.idle_worker.wakeups", "{:.0f}"),
]
for mode in ("inline", "worker", "inline_bare_code"):
    FIGURES += [
        ("replay %s: ratio" % mode, "replay.%s.ratio" % mode, "x{:.2f}"),
        ("replay %s: step ms at 10" % mode, "replay.%s.task_ms_at_step_10" % mode, "{:.2f}"),
        ("replay %s: step ms at the last" % mode, "replay.%s.task_ms_at_last_step" % mode, "{:.2f}"),
    ]


def lookup(scenarios, path):
    value = scenarios
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def main(paths):
    runs = [json.load(open(p))["scenarios"] for p in paths]
    print("%d runs: %s" % (len(runs), ", ".join(paths)))
    for label, path, fmt in FIGURES:
        values = [v for v in (lookup(r, path) for r in runs) if v is not None]
        if not values:
            continue
        lo, hi = fmt.format(min(values)), fmt.format(max(values))
        span = lo if lo == hi else "%s to %s" % (lo, hi)
        note = "" if len(values) == len(runs) else "  (%d of the runs)" % len(values)
        print("%-55s %s%s" % (label, span, note))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
