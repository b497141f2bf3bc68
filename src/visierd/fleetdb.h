/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the fleet's PostgreSQL modules (lease.c, fleetbudget.c, fleet.c) share: the fleet schema and its
 * one versioned migration, and libpq at the module edge — running a statement, reading a
 * bigint, translating a failure into a negative errno with a message in the caller's buffer.
 *
 * Pure libpq: never logs, keeps no state, takes a connection the caller owns. The errors:
 *   -ENOTCONN   the connection is gone (server restarted, network): open a new one, call again
 *   -EAGAIN     the database asked for a retry (serialization failure, deadlock)
 *   -EPROTO     the fleet schema is missing (run fleetdb_migrate()) or newer than this program's
 *   -ENOSPC, -ENOMEM  the server is out of disk or memory; -EIO any other database error
 */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define FLEETDB_ERROR_MAX 256
#define FLEETDB_NAME_MAX 128 /* longest tenant or node name */
/* 1: the publish lane (lease.c); 2: the rate budget (fleetbudget.c); 3: the nodes (fleet.c). */
#define FLEETDB_SCHEMA_VERSION 4

/* Create or migrate the fleet tables to FLEETDB_SCHEMA_VERSION in one transaction; concurrent
 * callers wait for each other. -EPROTO if the database is at a newer version. Must not be
 * called inside a transaction. */
int fleetdb_migrate(PGconn *conn, int *ret_version, char *err, size_t errlen);

_printf_(3, 4) void fleetdb_set_error(char *err, size_t errlen, const char *fmt, ...);

/* The server's primary message for the failure that gave res (NULL: none), else libpq's own,
 * without its trailing newline, in buf (len > 0). Never the connection string. */
void fleetdb_message(PGconn *conn, const PGresult *res, char *buf, size_t len);
/* Did the failure that gave res (NULL: none) lose the connection: gone, a libpq error whose
 * read says so, a connection exception (class 08) or a server shutting down (57P0x)? */
bool fleetdb_connection_lost(PGconn *conn, const PGresult *res);

/* A libpq failure (res may be NULL) as a negative errno, with `what` and the server's words in err. */
int fleetdb_error(PGconn *conn, const PGresult *res, const char *what, char *err, size_t errlen);

/* Run one statement with n text parameters; *ret is the result (tuples or command), which the
 * caller PQclear()s, else a negative errno. */
int fleetdb_exec(PGconn *conn, const char *what, const char *sql, int n, const char *const *params, PGresult **ret,
                 char *err, size_t errlen);
int fleetdb_exec_simple(PGconn *conn, const char *what, const char *sql, char *err, size_t errlen);

/* Row 0's bigint column col; NULL reads as 0. -EBADMSG if it is not one. */
int fleetdb_get_i64(const PGresult *res, int col, int64_t *ret);

/* 1 to FLEETDB_NAME_MAX bytes, else -EINVAL. */
int fleetdb_check_name(const char *what, const char *s, char *err, size_t errlen);

/* The connection can run a statement now: connected (else -ENOTCONN), idle or in a
 * transaction that has not failed (-EIO), not busy (-EBUSY). */
int fleetdb_check_conn(PGconn *conn, char *err, size_t errlen);
