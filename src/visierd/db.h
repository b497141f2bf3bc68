/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The job store's edge to its database: one connection and its statements, the same calls for
 * SQLite (db-sqlite.c) and PostgreSQL through libpq (db-pg.c), so that store.c holds every
 * rule once and each backend only says how a statement is run.
 *
 * The calls follow SQLite's shape (prepare, bind, step, column, reset), which store.c was
 * written against:
 *   - SQL is written once with SQLite's placeholders, "?" (numbered in order) or "?N"; the
 *     PostgreSQL backend turns them into "$N" (outside quoted literals and identifiers). A
 *     statement uses one style or the other, not both.
 *   - db_step() runs the statement on its first call after a reset (PostgreSQL: one
 *     PQexecPrepared, or PQexecParams for a statement not persistent, with text parameters,
 *     except blobs, sent as binary bytea) and returns its rows one by one.
 *   - A column's value stays valid until the next db_step() or db_reset() of its statement.
 *   - Where the two dialects differ (migrations, "BEGIN IMMEDIATE", "INSERT OR REPLACE",
 *     PRAGMA, FOR UPDATE SKIP LOCKED, EXPLAIN), store.c asks db_kind() and writes each.
 *   - Integers are int64 in both: the PostgreSQL schema uses bigint for every INTEGER column
 *     (flags included, 0 or 1), text for TEXT, bytea for BLOB.
 *
 * Errors are negative errno values; db_errmsg() says what the database said about the last
 * failure on the connection (never a password: the PostgreSQL backend's messages come from the
 * server or from libpq, which does not echo it):
 *   -ENOMEM; -EBUSY (SQLite busy/locked; PostgreSQL serialization failure, deadlock, lock not
 *   available); -EACCES (read-only, permission); -ENOSPC (disk full); -ENOENT (cannot open);
 *   -EBADMSG (corrupt); -EEXIST (a unique or primary-key constraint); -ENOTCONN (PostgreSQL:
 *   the connection is gone or the server is shutting down: open a new one); -EIO any other.
 *
 * Threads: a connection and its statements are used by one thread at a time (the caller's
 * lock); distinct connections are independent.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Db Db;
typedef struct DbStmt DbStmt;

typedef enum DbKind {
        DB_SQLITE,
        DB_POSTGRES,
} DbKind;

#define DB_ERROR_MAX 512

/* SQLite: open path read-write, creating it if create. Busy timeout busy_ms. */
int db_open_sqlite(const char *path, bool create, unsigned busy_ms, Db **ret, char *err, size_t errlen);
/*
 * PostgreSQL: conninfo is a libpq connection string or URI; password (or NULL) is passed
 * beside it, never inside it. connect_timeout_s bounds the connection (0: libpq's default).
 * The session runs with client_encoding UTF8, TimeZone UTC and the given statement timeout
 * (statement_timeout_ms, 0: none).
 */
int db_open_pg(const char *conninfo, const char *password, unsigned connect_timeout_s,
               unsigned statement_timeout_ms, Db **ret, char *err, size_t errlen);
/* Finalizes every statement still prepared on it. NULL is fine. */
Db *db_close(Db *db);

DbKind db_kind(const Db *db);
/* The last error's message on this connection ("" if none). */
const char *db_errmsg(const Db *db);
/* Rows changed by the last INSERT, UPDATE or DELETE run on the connection. */
int64_t db_changes(const Db *db);
/* Is a transaction open (including one that failed and awaits ROLLBACK)? */
bool db_in_transaction(const Db *db);
/* Has the open transaction failed (PostgreSQL: every statement until ROLLBACK fails)?
 * SQLite: false (SQLite rolls some failures back by itself: db_in_transaction() then says no). */
bool db_transaction_failed(const Db *db);
/* SQLite only (false otherwise): the connection was opened read-only. */
bool db_read_only(const Db *db);

/* Run one or more statements separated by ';' without parameters or results. */
int db_exec(Db *db, const char *sql);

/*
 * Prepare sql. persistent: it will be reused many times (SQLite: SQLITE_PREPARE_PERSISTENT;
 * PostgreSQL: a named server-side prepared statement, created on the first db_step()).
 * Otherwise the statement is run with its text each time (PostgreSQL: PQexecParams).
 */
int db_prepare(Db *db, const char *sql, bool persistent, DbStmt **ret);
/* Free the statement (and, PostgreSQL, DEALLOCATE a persistent one, best effort). NULL is fine. */
DbStmt *db_finalize(DbStmt *st);
/* Back to before the first step, with every parameter cleared (NULL). */
void db_reset(DbStmt *st);

/* Parameters are numbered from 1. Text and blobs are copied. */
int db_bind_int64(DbStmt *st, int i, int64_t v);
int db_bind_text(DbStmt *st, int i, const char *v); /* NULL binds NULL */
int db_bind_blob(DbStmt *st, int i, const void *p, size_t n);
int db_bind_null(DbStmt *st, int i);

/* 1: a row is ready; 0: no more rows (the statement ran to its end); a negative errno. */
int db_step(DbStmt *st);

int db_column_count(DbStmt *st);
bool db_column_is_null(DbStmt *st, int i);
int64_t db_column_int64(DbStmt *st, int i); /* NULL reads as 0 */
const char *db_column_text(DbStmt *st, int i); /* NULL reads as NULL */
/* The bytes of a blob (PostgreSQL: bytea decoded) or text column; NULL with 0 for NULL. */
const void *db_column_blob(DbStmt *st, int i, size_t *ret_len);

/* PostgreSQL only (NULL otherwise): the connection itself, for statements of the fleet's own
 * modules (lease.c) that must run inside the store's transaction. */
typedef struct pg_conn PGconn;
PGconn *db_pg_conn(Db *db);
