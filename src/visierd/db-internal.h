/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a database backend (db-sqlite.c, db-pg.c) provides behind db.h, and nothing else: db.c
 * owns the public db_* functions, checks their arguments once and calls the backend through the
 * ops table of the connection. Only db.c and the backends include this header.
 *
 * A backend:
 *   - defines its connection as a struct whose FIRST member is `Db base` and its statement as
 *     one whose first member is `DbStmt base`, and casts between the two (base is at offset 0);
 *   - sets base.ops to its own `static const DbOps` table when it opens a connection, and
 *     base.db of each statement to the connection that prepared it;
 *   - fills every member of the table except the two marked optional;
 *   - has its open function (db_open_sqlite(), db_open_pg()) declared in db.h, defined in the
 *     backend file itself; db.c knows no backend by name.
 *
 * What db.c guarantees to the ops, so a backend does not check it again:
 *   - db and st are never NULL (close and finalize are not called for NULL);
 *   - parameter indexes are >= 1 (the backend returns -ERANGE above its statement's count);
 *   - column indexes are >= 0 (the backend reads a column past the row's end, or a column when
 *     no row is ready, as NULL: 0, NULL, NULL with 0);
 *   - sql is never NULL; a blob's p is NULL only with n == 0, and then binds NULL, as
 *     sqlite3_bind_blob() does.
 *
 * What each op must do is what db.h says of the db_* function of the same name, plus:
 *   - close: finalize every statement still open on the connection, close it, free it all;
 *   - finalize: free the statement and unlink it from its connection;
 *   - step on a statement that returned 0 or failed runs it again with the same parameters
 *     (SQLite's automatic reset); db_reset() clears them;
 *   - errmsg never holds a password or a connection string.
 */
#pragma once

#include "db.h"

typedef struct DbOps {
        DbKind kind;

        Db *(*close)(Db *db); /* returns NULL */
        const char *(*errmsg)(const Db *db);
        int64_t (*changes)(const Db *db);
        bool (*in_transaction)(const Db *db);
        bool (*transaction_failed)(const Db *db);
        bool (*read_only)(const Db *db); /* optional: NULL reads as false */
        int (*exec)(Db *db, const char *sql);

        int (*prepare)(Db *db, const char *sql, bool persistent, DbStmt **ret);
        DbStmt *(*finalize)(DbStmt *st); /* returns NULL */
        void (*reset)(DbStmt *st);

        int (*bind_int64)(DbStmt *st, int i, int64_t v);
        int (*bind_text)(DbStmt *st, int i, const char *v); /* v NULL: NULL */
        int (*bind_blob)(DbStmt *st, int i, const void *p, size_t n);
        int (*bind_null)(DbStmt *st, int i);

        int (*step)(DbStmt *st);

        int (*column_count)(DbStmt *st);
        bool (*column_is_null)(DbStmt *st, int i);
        int64_t (*column_int64)(DbStmt *st, int i);
        const char *(*column_text)(DbStmt *st, int i);
        const void *(*column_blob)(DbStmt *st, int i, size_t *ret_len); /* *ret_len always written */

        PGconn *(*pg_conn)(Db *db); /* optional: NULL reads as no connection */
} DbOps;

/* The common head of every backend's connection and statement. */
struct Db {
        const DbOps *ops;
};

struct DbStmt {
        Db *db; /* the connection that prepared it */
};
