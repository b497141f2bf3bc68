/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The public db_* functions (see db.h): each checks its arguments and hands the call to the
 * backend of the connection through its ops table (db-internal.h). Knows no backend by name,
 * keeps no state, never logs.
 */
#include <assert.h>

#include "db-internal.h"

Db *db_close(Db *db) {
        if (!db)
                return NULL;
        return db->ops->close(db);
}

DbKind db_kind(const Db *db) {
        assert(db);
        return db->ops->kind;
}

const char *db_errmsg(const Db *db) {
        assert(db);
        return db->ops->errmsg(db);
}

int64_t db_changes(const Db *db) {
        assert(db);
        return db->ops->changes(db);
}

bool db_in_transaction(const Db *db) {
        assert(db);
        return db->ops->in_transaction(db);
}

bool db_transaction_failed(const Db *db) {
        assert(db);
        return db->ops->transaction_failed(db);
}

bool db_read_only(const Db *db) {
        assert(db);
        return db->ops->read_only ? db->ops->read_only(db) : false;
}

int db_exec(Db *db, const char *sql) {
        assert(db);
        assert(sql);
        return db->ops->exec(db, sql);
}

int db_prepare(Db *db, const char *sql, bool persistent, DbStmt **ret) {
        assert(db);
        assert(sql);
        assert(ret);
        return db->ops->prepare(db, sql, persistent, ret);
}

DbStmt *db_finalize(DbStmt *st) {
        if (!st)
                return NULL;
        return st->db->ops->finalize(st);
}

void db_reset(DbStmt *st) {
        assert(st);
        st->db->ops->reset(st);
}

int db_bind_int64(DbStmt *st, int i, int64_t v) {
        assert(st);
        assert(i >= 1);
        return st->db->ops->bind_int64(st, i, v);
}

int db_bind_text(DbStmt *st, int i, const char *v) {
        assert(st);
        assert(i >= 1);
        return st->db->ops->bind_text(st, i, v);
}

int db_bind_blob(DbStmt *st, int i, const void *p, size_t n) {
        assert(st);
        assert(i >= 1);
        assert(p || n == 0);
        return st->db->ops->bind_blob(st, i, p, n);
}

int db_bind_null(DbStmt *st, int i) {
        assert(st);
        assert(i >= 1);
        return st->db->ops->bind_null(st, i);
}

int db_step(DbStmt *st) {
        assert(st);
        return st->db->ops->step(st);
}

int db_column_count(DbStmt *st) {
        assert(st);
        return st->db->ops->column_count(st);
}

bool db_column_is_null(DbStmt *st, int i) {
        assert(st);
        assert(i >= 0);
        return st->db->ops->column_is_null(st, i);
}

int64_t db_column_int64(DbStmt *st, int i) {
        assert(st);
        assert(i >= 0);
        return st->db->ops->column_int64(st, i);
}

const char *db_column_text(DbStmt *st, int i) {
        assert(st);
        assert(i >= 0);
        return st->db->ops->column_text(st, i);
}

const void *db_column_blob(DbStmt *st, int i, size_t *ret_len) {
        assert(st);
        assert(i >= 0);
        assert(ret_len);
        return st->db->ops->column_blob(st, i, ret_len);
}

PGconn *db_pg_conn(Db *db) {
        assert(db);
        return db->ops->pg_conn ? db->ops->pg_conn(db) : NULL;
}
