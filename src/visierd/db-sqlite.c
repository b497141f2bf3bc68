/* SPDX-License-Identifier: Apache-2.0 */
/*
 * db.h on SQLite: the job store's connections and statements, as store.c used them directly
 * before (see db.h for the contract).
 *
 * DESIGN: a Db is one sqlite3 handle, opened with SQLITE_OPEN_FULLMUTEX and the busy timeout,
 * with extended result codes on (so a unique or primary-key constraint is told from the other
 * constraints), and the message of its last failure, copied when the failure happens: SQLite's
 * own sqlite3_errmsg() is replaced by the next call's outcome ("not an error"), while the store
 * writes its message after it has reset the statement or run a ROLLBACK. A DbStmt is a
 * sqlite3_stmt and its connection; each connection lists the statements prepared on it, so
 * that db_close() finalizes what is left. Statements run exactly as SQLite runs them: the SQL
 * is passed through unchanged, "?" and "?N" being SQLite's own placeholders.
 *
 * The only place that turns SQLite's result codes into errno values (sqlite_to_errno()).
 * Must never log, and never keep anything of a statement's values beyond what SQLite keeps.
 */
#include <assert.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "macro.h"

struct Db {
        sqlite3 *db;
        DbStmt *stmts; /* prepared and not yet finalized: db_close() finalizes them */
        char errmsg[DB_ERROR_MAX]; /* the last failure's message, "" if none */
};

struct DbStmt {
        Db *db;
        sqlite3_stmt *st;
        DbStmt *prev, *next;
};

static int sqlite_to_errno(int rc) {
        switch (rc) {
        case SQLITE_CONSTRAINT_UNIQUE:
        case SQLITE_CONSTRAINT_PRIMARYKEY:
        case SQLITE_CONSTRAINT_ROWID:
                return -EEXIST;
        default:
                break;
        }
        switch (rc & 0xff) {
        case SQLITE_OK:
                return 0;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_READONLY:
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        default:
                return -EIO;
        }
}

/* A call on the connection returned rc: keep SQLite's message if it failed. Returns the errno. */
static int db_fail(Db *db, int rc, const char *msg) {
        if (rc == SQLITE_OK)
                return 0;
        snprintf(db->errmsg, sizeof(db->errmsg), "%s", msg ? msg : sqlite3_errmsg(db->db));
        return sqlite_to_errno(rc);
}

int db_open_sqlite(const char *path, bool create, unsigned busy_ms, Db **ret, char *err, size_t errlen) {
        _cleanup_free_ Db *db = NULL;
        int rc;

        assert(path);
        assert(ret);

        db = calloc(1, sizeof(*db));
        if (!db)
                return -ENOMEM;
        rc = sqlite3_open_v2(path, &db->db,
                             SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_extended_result_codes(db->db, 1);
        if (rc == SQLITE_OK)
                rc = sqlite3_busy_timeout(db->db, (int) busy_ms);
        if (rc != SQLITE_OK) {
                if (err)
                        snprintf(err, errlen, "%s", db->db ? sqlite3_errmsg(db->db) : sqlite3_errstr(rc));
                sqlite3_close_v2(db->db); /* a handle is made even when the open fails */
                return sqlite_to_errno(rc);
        }
        *ret = TAKE_PTR(db);
        return 0;
}

Db *db_close(Db *db) {
        if (!db)
                return NULL;
        while (db->stmts)
                db_finalize(db->stmts);
        sqlite3_close_v2(db->db);
        free(db);
        return NULL;
}

DbKind db_kind(const Db *db) {
        assert(db);
        return DB_SQLITE;
}

const char *db_errmsg(const Db *db) {
        assert(db);
        return db->errmsg;
}

int64_t db_changes(const Db *db) {
        assert(db);
        return (int64_t) sqlite3_changes64(db->db);
}

bool db_in_transaction(const Db *db) {
        assert(db);
        return !sqlite3_get_autocommit(db->db);
}

bool db_transaction_failed(const Db *db) {
        assert(db);
        return false; /* SQLite rolls back what cannot go on: db_in_transaction() then says no */
}

bool db_read_only(const Db *db) {
        assert(db);
        return sqlite3_db_readonly(db->db, "main") == 1;
}

int db_exec(Db *db, const char *sql) {
        char *msg = NULL;
        int rc, r;

        assert(db);
        assert(sql);

        rc = sqlite3_exec(db->db, sql, NULL, NULL, &msg);
        r = db_fail(db, rc, msg ? msg : rc != SQLITE_OK ? sqlite3_errstr(rc) : NULL);
        sqlite3_free(msg);
        return r;
}

int db_prepare(Db *db, const char *sql, bool persistent, DbStmt **ret) {
        sqlite3_stmt *st = NULL;
        DbStmt *s;
        int rc;

        assert(db);
        assert(sql);
        assert(ret);

        rc = sqlite3_prepare_v3(db->db, sql, -1, persistent ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL);
        if (rc != SQLITE_OK)
                return db_fail(db, rc, NULL);
        if (!st) {
                snprintf(db->errmsg, sizeof(db->errmsg), "no statement in the SQL text");
                return -EINVAL;
        }
        s = calloc(1, sizeof(*s));
        if (!s) {
                sqlite3_finalize(st);
                return -ENOMEM;
        }
        s->db = db;
        s->st = st;
        s->next = db->stmts;
        if (db->stmts)
                db->stmts->prev = s;
        db->stmts = s;
        *ret = s;
        return 0;
}

DbStmt *db_finalize(DbStmt *st) {
        if (!st)
                return NULL;
        if (st->prev)
                st->prev->next = st->next;
        else
                st->db->stmts = st->next;
        if (st->next)
                st->next->prev = st->prev;
        sqlite3_finalize(st->st);
        free(st);
        return NULL;
}

void db_reset(DbStmt *st) {
        assert(st);
        /* sqlite3_reset() repeats the last step's error: that step has already reported it. */
        (void) sqlite3_reset(st->st);
        (void) sqlite3_clear_bindings(st->st);
}

int db_bind_int64(DbStmt *st, int i, int64_t v) {
        assert(st);
        return db_fail(st->db, sqlite3_bind_int64(st->st, i, (sqlite3_int64) v), NULL);
}

int db_bind_text(DbStmt *st, int i, const char *v) {
        assert(st);
        if (!v)
                return db_bind_null(st, i);
        return db_fail(st->db, sqlite3_bind_text(st->st, i, v, -1, SQLITE_TRANSIENT), NULL);
}

int db_bind_blob(DbStmt *st, int i, const void *p, size_t n) {
        assert(st);
        assert(p || n == 0);
        /* SQLite binds NULL for a NULL pointer: no bytes is an empty blob here, as in bytea. */
        if (!p)
                return db_fail(st->db, sqlite3_bind_zeroblob(st->st, i, 0), NULL);
        return db_fail(st->db, sqlite3_bind_blob64(st->st, i, p, (sqlite3_uint64) n, SQLITE_TRANSIENT), NULL);
}

int db_bind_null(DbStmt *st, int i) {
        assert(st);
        return db_fail(st->db, sqlite3_bind_null(st->st, i), NULL);
}

int db_step(DbStmt *st) {
        int rc;

        assert(st);
        rc = sqlite3_step(st->st);
        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return db_fail(st->db, rc, NULL);
}

int db_column_count(DbStmt *st) {
        assert(st);
        return sqlite3_column_count(st->st);
}

bool db_column_is_null(DbStmt *st, int i) {
        assert(st);
        return sqlite3_column_type(st->st, i) == SQLITE_NULL;
}

int64_t db_column_int64(DbStmt *st, int i) {
        assert(st);
        return (int64_t) sqlite3_column_int64(st->st, i);
}

const char *db_column_text(DbStmt *st, int i) {
        assert(st);
        return (const char *) sqlite3_column_text(st->st, i);
}

const void *db_column_blob(DbStmt *st, int i, size_t *ret_len) {
        const void *p;

        assert(st);
        assert(ret_len);
        if (sqlite3_column_type(st->st, i) == SQLITE_NULL) {
                *ret_len = 0;
                return NULL;
        }
        p = sqlite3_column_blob(st->st, i); /* before _bytes(), as SQLite asks */
        *ret_len = (size_t) sqlite3_column_bytes(st->st, i);
        return p ?: ""; /* an empty blob is not NULL */
}

PGconn *db_pg_conn(Db *db) {
        assert(db);
        return NULL;
}
