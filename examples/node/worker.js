// An activity worker for durable, in Node.js (npm package "pg").
//
//   node worker.js [--queue default] [--concurrency 4] [--name node-1]
//
// Each of `concurrency` loops long-polls the task queue on its own
// connection, runs the activity, and completes or fails it with its token;
// a completion fetches the next task in the same round trip while there are
// some (durable.complete_and_poll).
// Long activities heartbeat their progress, resume from the last heartbeat of
// a previous attempt, and stop when cancellation is requested.  SIGTERM or
// SIGINT stops polling; tasks in hand are finished, then the process exits.
// Connection settings come from the usual PG* environment variables.
'use strict';
const { Client } = require('pg');

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) =>
  arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs, []));
const queue = args.queue || 'default';
const concurrency = Number(args.concurrency || 4);
const name = args.name || `node-${process.pid}`;
let stopping = false;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The activities this worker knows.  Each gets the input and a context with
// heartbeat(details) -> true when it should stop.
const activities = {
  async lookup_user(input) {
    return { name: `user-${input.id}` };
  },
  async render(input) {
    return `${input.lang}:${input.name}`;
  },
  // Counts to input.steps, a step every input.step_ms, heartbeating.
  async long(input, ctx) {
    let done = (ctx.heartbeatDetails && ctx.heartbeatDetails.done) || 0;
    while (done < input.steps) {
      await sleep(input.step_ms || 100);
      done += 1;
      if (await ctx.heartbeat({ done })) {
        throw Object.assign(new Error('canceled'), { canceled: true, done });
      }
    }
    return { done, resumed_from: (ctx.heartbeatDetails && ctx.heartbeatDetails.done) || 0 };
  },
};

// Runs the task and reports its outcome; returns the next tasks when the
// report could fetch them in the same round trip (complete_and_poll).
async function runTask(client, task) {
  const ctx = {
    heartbeatDetails: task.heartbeat_details,
    heartbeat: async (details) => {
      const res = await client.query('SELECT durable.heartbeat_activity($1, $2) AS stop',
        [task.task_token, JSON.stringify(details)]);
      return res.rows[0].stop;
    },
  };
  const fn = activities[task.activity];
  try {
    if (!fn) throw Object.assign(new Error(`unknown activity ${task.activity}`), { fatal: true });
    const result = JSON.stringify(await fn(task.input, ctx) ?? null);
    if (stopping) {   // take no new task on the way out
      await client.query('SELECT durable.complete_activity($1, $2)', [task.task_token, result]);
      return [];
    }
    const next = await client.query(
      `SELECT task_token, activity, input, attempt, heartbeat_details
         FROM durable.complete_and_poll($1, $2, $3, $4)`, [task.task_token, result, queue, name]);
    return next.rows;
  } catch (err) {
    if (err.canceled) {
      await client.query('SELECT durable.cancel_activity($1, $2)',
        [task.task_token, JSON.stringify({ done: err.done })]);
    } else {
      await client.query('SELECT durable.fail_activity($1, $2, $3)',
        [task.task_token, String(err.message), !err.fatal]);
    }
  }
  return [];
}

async function pollLoop(slot) {
  const client = new Client({ application_name: `${name}/${slot}` });
  await client.connect();
  try {
    while (!stopping) {
      // a long poll that holds no snapshot while it waits (a procedure that
      // commits, called outside a transaction block)
      const res = await client.query(
        `CALL durable.wait_for_activity_task($1, worker => $2, wait => '5 s')`, [queue, name]);
      let tasks = res.rows.filter((task) => task.task_token !== null);
      // while tasks keep coming, completing one fetches the next
      while (tasks.length > 0) {
        const next = [];
        for (const task of tasks) next.push(...await runTask(client, task));
        tasks = next;
      }
    }
  } finally {
    await client.end();
  }
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    if (!stopping) console.log(`${name}: stopping after the tasks in hand`);
    stopping = true;
  });
}

Promise.all(Array.from({ length: concurrency }, (_, slot) => pollLoop(slot)))
  .then(() => { console.log(`${name}: stopped`); process.exit(0); })
  .catch((err) => { console.error(`${name}: ${err.message}`); process.exit(1); });
