#!/usr/bin/python3
"""An activity worker for durable, in Python with Debian's python3-psycopg2.

    /usr/bin/python3 worker.py [queue] [worker-name]

Long-polls the task queue, runs the activity, completes or fails it with its
token (a completion fetches the next task in the same round trip while there
are some); long activities heartbeat and resume from the last heartbeat of a
previous attempt.  SIGTERM stops polling after the task in hand.  Connection
settings come from the usual PG* environment variables.
"""
import json
import os
import signal
import sys
import time

import psycopg2

QUEUE = sys.argv[1] if len(sys.argv) > 1 else "default"
NAME = sys.argv[2] if len(sys.argv) > 2 else "python-%d" % os.getpid()
stopping = False


class Canceled(Exception):
    pass


def lookup_user(inp, heartbeat, resumed):
    return {"name": "user-%s" % inp["id"]}


def render(inp, heartbeat, resumed):
    return "%s:%s" % (inp["lang"], inp["name"])


def long(inp, heartbeat, resumed):
    start = (resumed or {}).get("done", 0)
    done = start
    while done < inp["steps"]:
        time.sleep(inp.get("step_ms", 100) / 1000.0)
        done += 1
        if heartbeat({"done": done}):
            raise Canceled()
    return {"done": done, "resumed_from": start}


ACTIVITIES = {"lookup_user": lookup_user, "render": render, "long": long}


def main():
    conn = psycopg2.connect(application_name=NAME)
    conn.autocommit = True
    cur = conn.cursor()

    def heartbeat(token):
        def beat(details):
            cur.execute("SELECT durable.heartbeat_activity(%s, %s)", (token, json.dumps(details)))
            return cur.fetchone()[0]
        return beat

    tasks = []
    while not stopping:
        if not tasks:
            # a long poll that holds no snapshot while it waits (autocommit)
            cur.execute("CALL durable.wait_for_activity_task(%s, worker => %s, wait => '2 s')", (QUEUE, NAME))
            token, _, activity, inp, _, resumed = cur.fetchone()
            tasks = [(token, activity, inp, resumed)] if token else []
        next_tasks = []
        for token, activity, inp, resumed in tasks:
            if activity not in ACTIVITIES:
                cur.execute("SELECT durable.fail_activity(%s, %s, false)",
                            (token, "unknown activity %s" % activity))
                continue
            try:
                result = json.dumps(ACTIVITIES[activity](inp, heartbeat(token), resumed))
                if stopping:
                    cur.execute("SELECT durable.complete_activity(%s, %s)", (token, result))
                else:
                    # completing fetches the next task in the same round trip
                    cur.execute("SELECT task_token, activity, input, heartbeat_details"
                                " FROM durable.complete_and_poll(%s, %s, %s, %s)",
                                (token, result, QUEUE, NAME))
                    next_tasks.extend(cur.fetchall())
            except Canceled:
                cur.execute("SELECT durable.cancel_activity(%s)", (token,))
            except Exception as err:  # the activity failed: retried by its policy
                cur.execute("SELECT durable.fail_activity(%s, %s)", (token, str(err)))
        tasks = next_tasks
    conn.close()
    print("%s: stopped" % NAME, flush=True)


def stop(signum, frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
main()
