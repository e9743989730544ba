/*
 * one_worker.c: a single activity worker for test/bench/callgrind.sh.
 *
 *   one_worker QUEUE N
 *
 * One connection (libpq's environment) that prints its backend's pid, polls
 * QUEUE once, then completes every task with complete_and_poll (a prepared
 * statement, as test/bench/poller.c does) until it has done N activities or
 * gets no task back, and prints how many it did.
 */
#include <stdio.h>
#include <stdlib.h>

#include <libpq-fe.h>

static PGresult *
checked(PGconn *conn, PGresult *res)
{
	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "one_worker: %s", PQerrorMessage(conn));
		exit(1);
	}
	return res;
}

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	PGresult   *task;
	const char *queue;
	long		wanted;
	long		done = 0;

	if (argc != 3)
	{
		fprintf(stderr, "usage: one_worker QUEUE N\n");
		return 2;
	}
	queue = argv[1];
	wanted = atol(argv[2]);
	conn = PQconnectdb("");
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "one_worker: %s", PQerrorMessage(conn));
		return 1;
	}
	task = checked(conn, PQexec(conn, "SELECT pg_backend_pid()"));
	printf("pid %s\n", PQgetvalue(task, 0, 0));
	PQclear(task);
	PQclear(checked(conn, PQprepare(conn, "next",
									"SELECT task_token, input FROM durable.complete_and_poll($1, $2, $3)",
									3, NULL)));
	task = checked(conn, PQexecParams(conn,
									  "SELECT task_token, input FROM durable.poll_activity($1, wait => '10 s')",
									  1, NULL, &queue, NULL, NULL, 0));
	while (done < wanted && PQntuples(task) == 1)
	{
		/* the result is the input (null for none) */
		const char *params[3] = {PQgetvalue(task, 0, 0),
		PQgetisnull(task, 0, 1) ? "null" : PQgetvalue(task, 0, 1), queue};
		PGresult   *next = checked(conn, PQexecPrepared(conn, "next", 3, params, NULL, NULL, 0));

		PQclear(task);
		task = next;
		done++;
	}
	PQclear(task);
	printf("done %ld\n", done);
	PQfinish(conn);
	return 0;
}
