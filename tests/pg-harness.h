/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A real PostgreSQL server for a test: Debian's initdb and postgres (the newest
 * /usr/lib/postgresql/N/bin, or $PG_BINDIR) in a private temporary directory, listening only
 * on a unix socket there (listen_addresses = ''), fsync off. Readiness is probed with
 * PQping() until a deadline. As root (tests run so here) initdb and postgres run as `nobody`,
 * who owns the directory: PostgreSQL refuses to run as root.
 *
 * The postmaster is the test process's own child (not detached by pg_ctl start), so it dies
 * with the test (PR_SET_PDEATHSIG: SIGQUIT, an immediate shutdown); it is stopped with the
 * signals pg_ctl stop sends (-m fast: SIGINT; -m immediate: SIGQUIT) and reaped. Start it
 * again on the same data directory to test a restart: after an immediate stop it recovers as
 * after a crash, and every committed transaction is kept (fsync is off, but the server only
 * dies, the machine does not).
 *
 * The functions that start a server return a negative errno with a reason instead of failing
 * the test, so a program's main() can report SKIP (exit 77) where PostgreSQL cannot run.
 */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PG_START_TIMEOUT_SEC 30
#define PG_REASON_MAX 1024

typedef enum PgStop {
        PG_STOP_FAST,      /* pg_ctl stop -m fast: SIGINT, sessions ended, a clean checkpoint */
        PG_STOP_IMMEDIATE, /* pg_ctl stop -m immediate: SIGQUIT, as a crash; recovery at next start */
} PgStop;

typedef struct PgServer {
        pid_t pid;            /* the postmaster; 0 while stopped */
        uid_t uid;            /* who runs initdb and postgres */
        gid_t gid;
        char bindir[128];
        char dir[128];        /* the temporary directory: data/, the socket, logs */
        char data[160];
        char log[160];        /* initdb's and the server's output */
        char conninfo[256];   /* for PQconnectdb() */
} PgServer;

/* The newest of /usr/lib/postgresql/N/bin holding initdb and postgres ($PG_BINDIR wins):
 * 0, or -ENOENT with a reason. */
int pg_server_find_bindir(char *buf, size_t len, char *reason, size_t reasonlen);

/* initdb a fresh cluster in a new temporary directory and start it: 0, or a negative errno
 * with a reason (initdb's or the server's log tail). */
int pg_server_init(PgServer *pg, char *reason, size_t reasonlen);
/* Start the server on its data directory again and wait until it accepts connections. */
int pg_server_start(PgServer *pg, char *reason, size_t reasonlen);
/* Stop the server and reap it (SIGKILL after PG_START_TIMEOUT_SEC); 0 or -ETIMEDOUT. */
int pg_server_stop(PgServer *pg, PgStop mode);
/* Stop (mode), then start again on the same data. */
int pg_server_restart(PgServer *pg, PgStop mode, char *reason, size_t reasonlen);
/* Stop (immediately) if running, remove the directory. Accepts a server never started. */
void pg_server_destroy(PgServer *pg);

/* A new connection to the server's postgres database; fails the test if it cannot connect.
 * The caller PQfinish()es it. */
PGconn *pg_server_connect(const PgServer *pg);
