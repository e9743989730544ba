/*
 * poller.c: the benchmark's activity workers, a small libpq driver.
 *
 *   poller QUEUE CLIENTS MODE
 *
 * Forks CLIENTS processes, one connection each (libpq's environment:
 * PGHOST, PGPORT, ...), that poll QUEUE and complete every task with its own
 * input as the result, as a real worker would after doing the work.  MODE is
 * "two" (poll_activity, then complete_activity: two round trips and commits
 * per activity), "combined" (complete_and_poll: one of each while tasks
 * keep coming) or "two-async-claim" (as "two", but the poll's transaction
 * sets synchronous_commit off for itself: its commit does not wait for the
 * WAL flush, the completion's does, and a server crash may hand the task
 * out again: a measure of that trade-off, not a recommendation).  Each client prints "ready" once connected; on SIGTERM they
 * stop and the parent prints the total number of activities completed.
 *
 * It is C, like pgbench for the ceiling, so that the clients' own CPU does
 * not blur the comparison: both sides' clients cost about the same.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

static volatile sig_atomic_t stopping = 0;

static void
on_term(int sig)
{
	stopping = 1;
}

static PGresult *
run(PGconn *conn, const char *stmt, int nparams, const char *const *params)
{
	PGresult   *res = PQexecPrepared(conn, stmt, nparams, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		fprintf(stderr, "poller: %s", PQerrorMessage(conn));
		exit(1);
	}
	return res;
}

static void
prepare(PGconn *conn, const char *name, const char *sql)
{
	PGresult   *res = PQprepare(conn, name, sql, 0, NULL);

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "poller: %s", PQerrorMessage(conn));
		exit(1);
	}
	PQclear(res);
}

/* One client: returns how many activities it completed. */
static long
client(const char *queue, int combined, int async_claim, int pipe_fd)
{
	PGconn	   *conn = PQconnectdb("");
	PGresult   *task = NULL;
	long		done = 0;

	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "poller: %s", PQerrorMessage(conn));
		exit(1);
	}
	prepare(conn, "poll",
			async_claim ?
			"SELECT task_token, input FROM durable.poll_activity($1, wait => '200 ms'),"
			" set_config('synchronous_commit', 'off', true)" :
			"SELECT task_token, input FROM durable.poll_activity($1, wait => '200 ms')");
	prepare(conn, "complete", "SELECT durable.complete_activity($1, $2)");
	prepare(conn, "complete_and_poll",
			"SELECT task_token, input FROM durable.complete_and_poll($1, $2, $3)");
	if (write(pipe_fd, "r", 1) != 1)
		exit(1);

	while (!stopping)
	{
		const char *params[3];

		if (task == NULL || PQntuples(task) == 0)
		{
			if (task)
				PQclear(task);
			params[0] = queue;
			task = run(conn, "poll", 1, params);
			continue;
		}
		params[0] = PQgetvalue(task, 0, 0);
		params[1] = PQgetvalue(task, 0, 1);
		params[2] = queue;
		if (combined)
		{
			PGresult   *next = run(conn, "complete_and_poll", 3, params);

			PQclear(task);
			task = next;
		}
		else
		{
			PQclear(run(conn, "complete", 2, params));
			PQclear(task);
			task = NULL;
		}
		done++;
	}
	PQfinish(conn);
	return done;
}

int
main(int argc, char **argv)
{
	int			clients;
	int			combined;
	int			async_claim;
	int			ready[2];
	int			counts[2];
	pid_t	   *pids;
	long		total = 0;

	if (argc != 4)
	{
		fprintf(stderr, "usage: poller QUEUE CLIENTS two|combined|two-async-claim\n");
		return 2;
	}
	clients = atoi(argv[2]);
	combined = strcmp(argv[3], "combined") == 0;
	async_claim = strcmp(argv[3], "two-async-claim") == 0;
	signal(SIGTERM, on_term);
	if (pipe(ready) != 0 || pipe(counts) != 0)
		return 1;
	pids = calloc(clients, sizeof(pid_t));
	for (int i = 0; i < clients; i++)
	{
		pids[i] = fork();
		if (pids[i] == 0)
		{
			long		done = client(argv[1], combined, async_claim, ready[1]);

			if (write(counts[1], &done, sizeof(done)) != sizeof(done))
				return 1;
			return 0;
		}
	}
	for (int i = 0; i < clients; i++)
	{
		char		c;

		if (read(ready[0], &c, 1) != 1)
			return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (!stopping)
		usleep(10000);
	for (int i = 0; i < clients; i++)
		kill(pids[i], SIGTERM);
	for (int i = 0; i < clients; i++)
	{
		long		done;
		int			status;

		if (read(counts[0], &done, sizeof(done)) != sizeof(done))
			return 1;
		total += done;
		waitpid(pids[i], &status, 0);
	}
	printf("%ld\n", total);
	return 0;
}
