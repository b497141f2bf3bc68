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

#include "db-internal.h"
#include "macro.h"

typedef struct SqliteStmt SqliteStmt;

typedef struct SqliteDb {
        Db base; /* first: a Db * is a SqliteDb * (db-internal.h) */
        sqlite3 *db;
        SqliteStmt *stmts; /* prepared and not yet finalized: close finalizes them */
        char errmsg[DB_ERROR_MAX]; /* the last failure's message, "" if none */
} SqliteDb;

struct SqliteStmt {
        DbStmt base; /* first */
        SqliteDb *db;
        sqlite3_stmt *st;
        SqliteStmt *prev, *next;
};

static const DbOps sqlite_ops;

#define DB(d) ((SqliteDb *) (d))
#define ST(s) ((SqliteStmt *) (s))

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
static int db_fail(SqliteDb *db, int rc, const char *msg) {
        if (rc == SQLITE_OK)
                return 0;
        snprintf(db->errmsg, sizeof(db->errmsg), "%s", msg ? msg : sqlite3_errmsg(db->db));
        return sqlite_to_errno(rc);
}

int db_open_sqlite(const char *path, bool create, unsigned busy_ms, Db **ret, char *err, size_t errlen) {
        _cleanup_free_ SqliteDb *db = NULL;
        int rc;

        assert(path);
        assert(ret);

        db = calloc(1, sizeof(*db));
        if (!db)
                return -ENOMEM;
        db->base.ops = &sqlite_ops;
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
        *ret = &TAKE_PTR(db)->base;
        return 0;
}

static DbStmt *sqlite_finalize(DbStmt *st);

static Db *sqlite_close(Db *d) {
        SqliteDb *db = DB(d);

        while (db->stmts)
                sqlite_finalize(&db->stmts->base);
        sqlite3_close_v2(db->db);
        free(db);
        return NULL;
}

static const char *sqlite_errmsg(const Db *d) {
        return DB(d)->errmsg;
}

static int64_t sqlite_changes(const Db *d) {
        return (int64_t) sqlite3_changes64(DB(d)->db);
}

static bool sqlite_in_transaction(const Db *d) {
        return !sqlite3_get_autocommit(DB(d)->db);
}

static bool sqlite_transaction_failed(const Db *d) {
        return false; /* SQLite rolls back what cannot go on: db_in_transaction() then says no */
}

static bool sqlite_read_only(const Db *d) {
        return sqlite3_db_readonly(DB(d)->db, "main") == 1;
}

static int sqlite_exec(Db *d, const char *sql) {
        SqliteDb *db = DB(d);
        char *msg = NULL;
        int rc, r;

        rc = sqlite3_exec(db->db, sql, NULL, NULL, &msg);
        r = db_fail(db, rc, msg ? msg : rc != SQLITE_OK ? sqlite3_errstr(rc) : NULL);
        sqlite3_free(msg);
        return r;
}

static int sqlite_prepare(Db *d, const char *sql, bool persistent, DbStmt **ret) {
        SqliteDb *db = DB(d);
        sqlite3_stmt *st = NULL;
        SqliteStmt *s;
        int rc;

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
        s->base.db = d;
        *ret = &s->base;
        return 0;
}

static DbStmt *sqlite_finalize(DbStmt *stmt) {
        SqliteStmt *st = ST(stmt);

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

static void sqlite_reset(DbStmt *stmt) {
        SqliteStmt *st = ST(stmt);

        /* sqlite3_reset() repeats the last step's error: that step has already reported it. */
        (void) sqlite3_reset(st->st);
        (void) sqlite3_clear_bindings(st->st);
}

/* A parameter past the statement's count is -ERANGE (db-internal.h). */
static int bind_result(SqliteStmt *st, int rc) {
        return rc == SQLITE_RANGE ? (db_fail(st->db, rc, NULL), -ERANGE) : db_fail(st->db, rc, NULL);
}

static int sqlite_bind_int64(DbStmt *stmt, int i, int64_t v) {
        SqliteStmt *st = ST(stmt);

        return bind_result(st, sqlite3_bind_int64(st->st, i, (sqlite3_int64) v));
}

static int sqlite_bind_null(DbStmt *stmt, int i) {
        SqliteStmt *st = ST(stmt);

        return bind_result(st, sqlite3_bind_null(st->st, i));
}

static int sqlite_bind_text(DbStmt *stmt, int i, const char *v) {
        SqliteStmt *st = ST(stmt);

        if (!v)
                return sqlite_bind_null(stmt, i);
        return bind_result(st, sqlite3_bind_text(st->st, i, v, -1, SQLITE_TRANSIENT));
}

static int sqlite_bind_blob(DbStmt *stmt, int i, const void *p, size_t n) {
        SqliteStmt *st = ST(stmt);

        /* A NULL pointer binds NULL, as sqlite3_bind_blob() does (db-internal.h). */
        if (!p)
                return sqlite_bind_null(stmt, i);
        return bind_result(st, sqlite3_bind_blob64(st->st, i, p, (sqlite3_uint64) n, SQLITE_TRANSIENT));
}

static int sqlite_step(DbStmt *stmt) {
        SqliteStmt *st = ST(stmt);
        int rc;

        rc = sqlite3_step(st->st);
        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return db_fail(st->db, rc, NULL);
}

static int sqlite_column_count(DbStmt *st) {
        return sqlite3_column_count(ST(st)->st);
}

static bool sqlite_column_is_null(DbStmt *st, int i) {
        return sqlite3_column_type(ST(st)->st, i) == SQLITE_NULL;
}

static int64_t sqlite_column_int64(DbStmt *st, int i) {
        return (int64_t) sqlite3_column_int64(ST(st)->st, i);
}

static const char *sqlite_column_text(DbStmt *st, int i) {
        return (const char *) sqlite3_column_text(ST(st)->st, i);
}

static const void *sqlite_column_blob(DbStmt *stmt, int i, size_t *ret_len) {
        SqliteStmt *st = ST(stmt);
        const void *p;

        if (sqlite3_column_type(st->st, i) == SQLITE_NULL) {
                *ret_len = 0;
                return NULL;
        }
        p = sqlite3_column_blob(st->st, i); /* before _bytes(), as SQLite asks */
        *ret_len = (size_t) sqlite3_column_bytes(st->st, i);
        return p ?: ""; /* an empty blob is not NULL */
}

static const DbOps sqlite_ops = {
        .kind = DB_SQLITE,
        .close = sqlite_close,
        .errmsg = sqlite_errmsg,
        .changes = sqlite_changes,
        .in_transaction = sqlite_in_transaction,
        .transaction_failed = sqlite_transaction_failed,
        .read_only = sqlite_read_only,
        .exec = sqlite_exec,
        .prepare = sqlite_prepare,
        .finalize = sqlite_finalize,
        .reset = sqlite_reset,
        .bind_int64 = sqlite_bind_int64,
        .bind_text = sqlite_bind_text,
        .bind_blob = sqlite_bind_blob,
        .bind_null = sqlite_bind_null,
        .step = sqlite_step,
        .column_count = sqlite_column_count,
        .column_is_null = sqlite_column_is_null,
        .column_int64 = sqlite_column_int64,
        .column_text = sqlite_column_text,
        .column_blob = sqlite_column_blob,
};
