/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the job store's database edge on PostgreSQL (db.h through db-pg.c) and the
 * store's PostgreSQL schema (store-pg-schema.c), against a real PostgreSQL started by
 * tests/pg-harness.c: placeholders, binds and columns of every type, persistent statements,
 * changes, transactions and savepoints, errno translation, a server crash under an open
 * connection, a refused password, the migrations (and their equivalence to SQLite's schema
 * as store.c makes it) and the job_counts triggers. Exits 77 (SKIP), saying why, where
 * PostgreSQL cannot run.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "db.h"
#include "harness.h"
#include "pg-harness.h"
#include "store-pg-schema.h"
#include "store.h"

static PgServer server; /* shared by every case but "restart", which runs its own */
static Db *db;           /* the fixture's connection to the postgres database */
static char err[DB_ERROR_MAX];

#define PASSWORD "Pw-7f3e9c21-secret"
#define WRONG_PASSWORD "Wrong-4d8a0b55-guess"
#define RELOAD_WAIT_SEC 10

/* ---- helpers ---- */

static Db *open_ok(const char *conninfo, const char *password, unsigned statement_timeout_ms) {
        Db *d = NULL;
        int r = db_open_pg(conninfo, password, 5, statement_timeout_ms, &d, err, sizeof(err));

        ck_assert_msg(r == 0, "open %s: %s (%s)", conninfo, strerror(-r), err);
        ck_assert_ptr_nonnull(d);
        return d;
}

static void exec_ok(Db *d, const char *sql) {
        int r = db_exec(d, sql);

        ck_assert_msg(r == 0, "%s: %s (%s)", sql, strerror(-r), db_errmsg(d));
}

static DbStmt *prepare_ok(Db *d, const char *sql, bool persistent) {
        DbStmt *st = NULL;
        int r = db_prepare(d, sql, persistent, &st);

        ck_assert_msg(r == 0, "prepare %s: %s (%s)", sql, strerror(-r), db_errmsg(d));
        return st;
}

static void step_row(Db *d, DbStmt *st) {
        int r = db_step(st);

        ck_assert_msg(r == 1, "step: %d %s (%s)", r, r < 0 ? strerror(-r) : "", db_errmsg(d));
}

static void step_done(Db *d, DbStmt *st) {
        int r = db_step(st);

        ck_assert_msg(r == 0, "step: %d %s (%s)", r, r < 0 ? strerror(-r) : "", db_errmsg(d));
}

/* The first row's first column of sql's result as text ("NULL" for NULL), valid until the next call. */
static const char *scalar(Db *d, const char *sql) {
        static char buf[4096];
        DbStmt *st = prepare_ok(d, sql, false);
        const char *v;

        step_row(d, st);
        v = db_column_text(st, 0);
        snprintf(buf, sizeof(buf), "%s", v ? v : "NULL");
        db_finalize(st);
        return buf;
}

/* A new, empty database of that name, and a connection to it. */
static Db *fresh_database(const char *name) {
        char sql[128], conninfo[sizeof(server.conninfo) + 64];

        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
        exec_ok(db, sql);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        exec_ok(db, sql);
        snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", server.conninfo, name);
        return open_ok(conninfo, NULL, 0);
}

static void drop_database(Db *d, const char *name) {
        char sql[128];

        db_close(d);
        snprintf(sql, sizeof(sql), "DROP DATABASE %s", name);
        exec_ok(db, sql);
}

static void setup(void) {
        db = open_ok(server.conninfo, NULL, 0);
}

static void teardown(void) {
        db = db_close(db);
}

/* ---- the connection ---- */

START_TEST(test_session) {
        Db *t;

        ck_assert_int_eq(db_kind(db), DB_POSTGRES);
        ck_assert(!db_read_only(db));
        ck_assert_str_eq(db_errmsg(db), "");
        ck_assert_ptr_nonnull(db_pg_conn(db));
        ck_assert_int_eq(PQstatus(db_pg_conn(db)), CONNECTION_OK);
        ck_assert_str_eq(scalar(db, "SHOW client_encoding"), "UTF8");
        ck_assert_str_eq(scalar(db, "SHOW TimeZone"), "UTC");
        ck_assert_str_eq(scalar(db, "SHOW statement_timeout"), "0");
        ck_assert_str_eq(scalar(db, "SHOW application_name"), "visierd");

        /* The statement timeout given: a longer statement is cancelled (57014: -EIO). */
        t = open_ok(server.conninfo, NULL, 200);
        ck_assert_str_eq(scalar(t, "SHOW statement_timeout"), "200ms");
        ck_assert_int_eq(db_exec(t, "SELECT pg_sleep(10)"), -EIO);
        ck_assert_msg(strstr(db_errmsg(t), "statement timeout") && strstr(db_errmsg(t), "(SQLSTATE 57014)"), "%s",
                      db_errmsg(t));
        exec_ok(t, "SELECT 1"); /* the connection goes on */
        db_close(t);

        /* Several statements in one db_exec(); an empty one is fine. */
        exec_ok(db, "CREATE TEMP TABLE s (v bigint); INSERT INTO s VALUES (1); INSERT INTO s VALUES (2)");
        ck_assert_str_eq(scalar(db, "SELECT sum(v) FROM s"), "3");
        exec_ok(db, "");
        ck_assert_ptr_null(db_close(NULL));
        ck_assert_ptr_null(db_finalize(NULL));
}
END_TEST

/* ---- placeholders ---- */

START_TEST(test_placeholders) {
        DbStmt *st;

        /* "?" numbered in order. */
        st = prepare_ok(db, "SELECT ?, ?, ?", false);
        ck_assert_int_eq(db_bind_text(st, 1, "a"), 0);
        ck_assert_int_eq(db_bind_text(st, 2, "b"), 0);
        ck_assert_int_eq(db_bind_text(st, 3, "c"), 0);
        ck_assert_int_eq(db_bind_text(st, 4, "d"), -ERANGE);
        step_row(db, st);
        ck_assert_int_eq(db_column_count(st), 3);
        ck_assert_str_eq(db_column_text(st, 0), "a");
        ck_assert_str_eq(db_column_text(st, 1), "b");
        ck_assert_str_eq(db_column_text(st, 2), "c");
        step_done(db, st);
        db_finalize(st);

        /* "?N", used twice and out of order. */
        st = prepare_ok(db, "SELECT ?2, ?1, ?2 || ?1", true);
        ck_assert_int_eq(db_bind_text(st, 1, "x"), 0);
        ck_assert_int_eq(db_bind_text(st, 2, "y"), 0);
        ck_assert_int_eq(db_bind_text(st, 3, "z"), -ERANGE);
        step_row(db, st);
        ck_assert_str_eq(db_column_text(st, 0), "y");
        ck_assert_str_eq(db_column_text(st, 1), "x");
        ck_assert_str_eq(db_column_text(st, 2), "yx");
        db_finalize(st);

        /* A "?" in a literal, an E'' literal with an escaped quote, a quoted identifier, a
         * dollar-quoted string and comments is left alone: one parameter only. */
        st = prepare_ok(db,
                        "SELECT '?', ?, 'it''s ?', E'\\'?', \"?\", $$?$$, $q$ '? $q$ -- a ? here\n"
                        "/* and ? /* nested ? */ still ? */ FROM (SELECT 'id?' AS \"?\") t -- ?",
                        false);
        ck_assert_int_eq(db_bind_text(st, 1, "p"), 0);
        ck_assert_int_eq(db_bind_text(st, 2, "q"), -ERANGE);
        step_row(db, st);
        ck_assert_int_eq(db_column_count(st), 7);
        ck_assert_str_eq(db_column_text(st, 0), "?");
        ck_assert_str_eq(db_column_text(st, 1), "p");
        ck_assert_str_eq(db_column_text(st, 2), "it's ?");
        ck_assert_str_eq(db_column_text(st, 3), "'?");
        ck_assert_str_eq(db_column_text(st, 4), "id?");
        ck_assert_str_eq(db_column_text(st, 5), "?");
        ck_assert_str_eq(db_column_text(st, 6), " '? ");
        db_finalize(st);

        /* No placeholder at all; an unbound parameter is NULL. */
        ck_assert_str_eq(scalar(db, "SELECT 'no ? here'"), "no ? here");
        st = prepare_ok(db, "SELECT ?1::text IS NULL, ?2::text", false);
        step_row(db, st);
        ck_assert_int_eq(db_column_int64(st, 0), 1);
        ck_assert(db_column_is_null(st, 1));
        db_finalize(st);

        /* Both styles in one statement, "?0", a number past the protocol's limit: refused. */
        st = NULL;
        ck_assert_int_eq(db_prepare(db, "SELECT ?, ?1", false, &st), -EINVAL);
        ck_assert_int_eq(db_prepare(db, "SELECT ?1, ?", false, &st), -EINVAL);
        ck_assert_int_eq(db_prepare(db, "SELECT ?0", false, &st), -EINVAL);
        ck_assert_int_eq(db_prepare(db, "SELECT ?65536", false, &st), -EINVAL);
        ck_assert_ptr_null(st);
        ck_assert_msg(strstr(db_errmsg(db), "placeholders"), "%s", db_errmsg(db));
}
END_TEST

/* ---- binds and columns ---- */

START_TEST(test_binds_round_trip) {
        static const unsigned char blob[] = { 0x00, 0xff, 0x80, 0x00, 'A', '\\', '\'', 0x01, 0x7f, 0xc3, 0x28, 0x00 };
        unsigned char all[256];
        const char *utf8 = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"; /* "héllo € 😀" */
        const void *p;
        size_t n = 99;
        DbStmt *ins, *sel;

        for (size_t k = 0; k < sizeof(all); k++)
                all[k] = (unsigned char) (255 - k);
        exec_ok(db, "CREATE TEMP TABLE t (k bigint PRIMARY KEY, i bigint, s text, b bytea)");
        ins = prepare_ok(db, "INSERT INTO t (k, i, s, b) VALUES (?, ?, ?, ?)", true);

        /* 1: the largest int64, UTF-8 text, a blob with NULs and high bytes. */
        ck_assert_int_eq(db_bind_int64(ins, 1, 1), 0);
        ck_assert_int_eq(db_bind_int64(ins, 2, INT64_MAX), 0);
        ck_assert_int_eq(db_bind_text(ins, 3, utf8), 0);
        ck_assert_int_eq(db_bind_blob(ins, 4, blob, sizeof(blob)), 0);
        step_done(db, ins);
        /* 2: the smallest int64, empty text, every byte value. */
        db_reset(ins);
        ck_assert_int_eq(db_bind_int64(ins, 1, 2), 0);
        ck_assert_int_eq(db_bind_int64(ins, 2, INT64_MIN), 0);
        ck_assert_int_eq(db_bind_text(ins, 3, ""), 0);
        ck_assert_int_eq(db_bind_blob(ins, 4, all, sizeof(all)), 0);
        step_done(db, ins);
        /* 3: NULL three ways. */
        db_reset(ins);
        ck_assert_int_eq(db_bind_int64(ins, 1, 3), 0);
        ck_assert_int_eq(db_bind_null(ins, 2), 0);
        ck_assert_int_eq(db_bind_text(ins, 3, NULL), 0);
        ck_assert_int_eq(db_bind_blob(ins, 4, NULL, 0), 0);
        step_done(db, ins);
        /* 4: zero, -1, an empty blob (not NULL); a bind replaced before the step. */
        db_reset(ins);
        ck_assert_int_eq(db_bind_int64(ins, 1, 4), 0);
        ck_assert_int_eq(db_bind_int64(ins, 2, 7), 0);
        ck_assert_int_eq(db_bind_int64(ins, 2, -1), 0);
        ck_assert_int_eq(db_bind_text(ins, 3, "0"), 0);
        ck_assert_int_eq(db_bind_blob(ins, 4, blob, 0), 0);
        step_done(db, ins);
        /* 5: after a reset every parameter is NULL again. */
        db_reset(ins);
        ck_assert_int_eq(db_bind_int64(ins, 1, 5), 0);
        step_done(db, ins);
        db_finalize(ins);

        /* What the server holds, by its own reading. */
        ck_assert_str_eq(scalar(db, "SELECT string_agg(k || ':' || coalesce(i::text, 'null') || ':' || "
                                    "coalesce(length(b)::text, 'null'), ',' ORDER BY k) FROM t"),
                         "1:9223372036854775807:12,2:-9223372036854775808:256,3:null:null,4:-1:0,5:null:null");
        ck_assert_str_eq(scalar(db, "SELECT encode(b, 'hex') FROM t WHERE k = 1"), "00ff8000415c27017fc32800");
        ck_assert_str_eq(scalar(db, "SELECT s = U&'h\\00e9llo \\20ac \\+01f600' FROM t WHERE k = 1"), "t");

        sel = prepare_ok(db, "SELECT k, i, s, b FROM t ORDER BY k", false);
        step_row(db, sel);
        ck_assert_int_eq(db_column_int64(sel, 0), 1);
        ck_assert(db_column_int64(sel, 1) == INT64_MAX);
        ck_assert_str_eq(db_column_text(sel, 2), utf8);
        p = db_column_blob(sel, 3, &n);
        ck_assert_uint_eq(n, sizeof(blob));
        ck_assert_mem_eq(p, blob, sizeof(blob));
        /* Asked again in the same row: the same bytes; a text column's blob is its bytes. */
        ck_assert_ptr_eq(db_column_blob(sel, 3, &n), p);
        p = db_column_blob(sel, 2, &n);
        ck_assert_uint_eq(n, strlen(utf8));
        ck_assert_mem_eq(p, utf8, n);

        step_row(db, sel);
        ck_assert(db_column_int64(sel, 1) == INT64_MIN);
        ck_assert_str_eq(db_column_text(sel, 2), "");
        ck_assert(!db_column_is_null(sel, 2));
        p = db_column_blob(sel, 3, &n);
        ck_assert_uint_eq(n, sizeof(all));
        ck_assert_mem_eq(p, all, sizeof(all));

        step_row(db, sel);
        ck_assert(db_column_is_null(sel, 1));
        ck_assert(db_column_is_null(sel, 2));
        ck_assert(db_column_is_null(sel, 3));
        ck_assert_int_eq(db_column_int64(sel, 1), 0);
        ck_assert_ptr_null(db_column_text(sel, 2));
        n = 99;
        ck_assert_ptr_null(db_column_blob(sel, 3, &n));
        ck_assert_uint_eq(n, 0);

        step_row(db, sel);
        ck_assert_int_eq(db_column_int64(sel, 1), -1);
        ck_assert_int_eq(db_column_int64(sel, 2), 0);
        ck_assert(!db_column_is_null(sel, 3));
        n = 99;
        db_column_blob(sel, 3, &n);
        ck_assert_uint_eq(n, 0);

        step_row(db, sel);
        ck_assert_int_eq(db_column_int64(sel, 0), 5);
        ck_assert(db_column_is_null(sel, 1) && db_column_is_null(sel, 2) && db_column_is_null(sel, 3));
        /* A column past the row's end reads as NULL. */
        ck_assert(db_column_is_null(sel, 4));
        ck_assert_ptr_null(db_column_text(sel, 4));
        step_done(db, sel);
        /* No row ready: NULL too. */
        ck_assert(db_column_is_null(sel, 0));
        ck_assert_int_eq(db_column_int64(sel, 0), 0);
        db_finalize(sel);

        /* A blob into a comparison on the server, as binary bytea; booleans read as 1 and 0. */
        sel = prepare_ok(db, "SELECT count(*), bool_or(b = ?), true, false FROM t", false);
        ck_assert_int_eq(db_bind_blob(sel, 1, all, sizeof(all)), 0);
        step_row(db, sel);
        ck_assert_int_eq(db_column_int64(sel, 0), 5);
        ck_assert_int_eq(db_column_int64(sel, 1), 1);
        ck_assert_int_eq(db_column_int64(sel, 2), 1);
        ck_assert_int_eq(db_column_int64(sel, 3), 0);
        db_finalize(sel);

        /* int64's extremes through arithmetic on the server. */
        sel = prepare_ok(db, "SELECT ?::bigint - 1, ?::bigint + 1", false);
        ck_assert_int_eq(db_bind_int64(sel, 1, INT64_MAX), 0);
        ck_assert_int_eq(db_bind_int64(sel, 2, INT64_MIN), 0);
        step_row(db, sel);
        ck_assert(db_column_int64(sel, 0) == INT64_MAX - 1);
        ck_assert(db_column_int64(sel, 1) == INT64_MIN + 1);
        db_finalize(sel);
}
END_TEST

/* ---- persistent statements ---- */

START_TEST(test_persistent_reused) {
        DbStmt *ins, *sel, *count;
        char v[32];

        exec_ok(db, "CREATE TEMP TABLE r (k bigint PRIMARY KEY, v text)");
        ins = prepare_ok(db, "INSERT INTO r (k, v) VALUES (?, ?)", true);
        sel = prepare_ok(db, "SELECT v, k * 2 FROM r WHERE k = ?", true);
        for (int64_t i = 0; i < 1000; i++) {
                db_reset(ins);
                snprintf(v, sizeof(v), "v%" PRId64, i);
                ck_assert_int_eq(db_bind_int64(ins, 1, i), 0);
                ck_assert_int_eq(db_bind_text(ins, 2, v), 0);
                step_done(db, ins);
                ck_assert_int_eq(db_changes(db), 1);
        }
        for (int64_t i = 999; i >= 0; i--) {
                db_reset(sel);
                ck_assert_int_eq(db_bind_int64(sel, 1, i), 0);
                step_row(db, sel);
                snprintf(v, sizeof(v), "v%" PRId64, i);
                ck_assert_str_eq(db_column_text(sel, 0), v);
                ck_assert_int_eq(db_column_int64(sel, 1), 2 * i);
                step_done(db, sel);
        }
        ck_assert_str_eq(scalar(db, "SELECT count(*) || ' ' || sum(k) FROM r"), "1000 499500");
        /* Two named statements on the server, each prepared once. */
        ck_assert_str_eq(scalar(db, "SELECT string_agg(statement, ' | ' ORDER BY name) FROM pg_prepared_statements"),
                         "INSERT INTO r (k, v) VALUES ($1, $2) | SELECT v, k * 2 FROM r WHERE k = $1");

        /* A step after the end runs it again with the same parameters. */
        count = prepare_ok(db, "SELECT count(*) FROM r WHERE k < ?", true);
        ck_assert_int_eq(db_bind_int64(count, 1, 10), 0);
        step_row(db, count);
        ck_assert_int_eq(db_column_int64(count, 0), 10);
        step_done(db, count);
        step_row(db, count);
        ck_assert_int_eq(db_column_int64(count, 0), 10);

        /* Finalized: deallocated on the server. */
        db_finalize(ins);
        db_finalize(sel);
        db_finalize(count);
        ck_assert_str_eq(scalar(db, "SELECT count(*) FROM pg_prepared_statements"), "0");

        /* Statements left open are finalized by db_close() (ASan would see a leak). */
        ins = prepare_ok(db, "SELECT 1", true);
        step_row(db, ins);
        prepare_ok(db, "SELECT 2", false);
}
END_TEST

/* ---- changes, RETURNING ---- */

START_TEST(test_changes_returning) {
        DbStmt *st;

        exec_ok(db, "CREATE TEMP TABLE c (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v bigint)");
        exec_ok(db, "INSERT INTO c (v) VALUES (1), (2), (3)");
        ck_assert_int_eq(db_changes(db), 3);
        exec_ok(db, "UPDATE c SET v = v + 10 WHERE v >= 2");
        ck_assert_int_eq(db_changes(db), 2);
        ck_assert_str_eq(scalar(db, "SELECT count(*) FROM c"), "3");
        ck_assert_int_eq(db_changes(db), 2); /* a SELECT changes nothing */
        exec_ok(db, "DELETE FROM c WHERE v = 12");
        ck_assert_int_eq(db_changes(db), 1);
        exec_ok(db, "UPDATE c SET v = 0 WHERE false");
        ck_assert_int_eq(db_changes(db), 0);

        st = prepare_ok(db, "INSERT INTO c (v) VALUES (?) RETURNING id, v", false);
        ck_assert_int_eq(db_bind_int64(st, 1, 7), 0);
        step_row(db, st);
        ck_assert_int_eq(db_changes(db), 1);
        ck_assert_int_eq(db_column_count(st), 2);
        ck_assert_int_eq(db_column_int64(st, 0), 4);
        ck_assert_int_eq(db_column_int64(st, 1), 7);
        step_done(db, st);
        db_finalize(st);

        st = prepare_ok(db, "UPDATE c SET v = -v WHERE v > ? RETURNING id", true);
        ck_assert_int_eq(db_bind_int64(st, 1, 5), 0);
        step_row(db, st);
        ck_assert_int_eq(db_changes(db), 2);
        step_row(db, st);
        step_done(db, st);
        db_finalize(st);
        ck_assert_str_eq(scalar(db, "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM c"), "1=1,3=-13,4=-7");
}
END_TEST

/* ---- transactions ---- */

START_TEST(test_transactions) {
        DbStmt *ins, *sp, *rollback_to, *release;
        int r;

        exec_ok(db, "CREATE TEMP TABLE x (k bigint PRIMARY KEY)");
        ins = prepare_ok(db, "INSERT INTO x VALUES (?)", true);
        ck_assert(!db_in_transaction(db));
        ck_assert(!db_transaction_failed(db));

        /* A failed statement fails the transaction until ROLLBACK. */
        exec_ok(db, "BEGIN");
        ck_assert(db_in_transaction(db));
        ck_assert(!db_transaction_failed(db));
        ck_assert_int_eq(db_bind_int64(ins, 1, 1), 0);
        step_done(db, ins);
        ck_assert_int_eq(db_exec(db, "SELECT 1 / 0"), -EIO);
        ck_assert_msg(strstr(db_errmsg(db), "division by zero (SQLSTATE 22012)"), "%s", db_errmsg(db));
        ck_assert(db_in_transaction(db));
        ck_assert(db_transaction_failed(db));
        db_reset(ins);
        ck_assert_int_eq(db_bind_int64(ins, 1, 2), 0);
        r = db_step(ins);
        ck_assert_int_eq(r, -EIO);
        ck_assert_msg(strstr(db_errmsg(db), "25P02"), "%s", db_errmsg(db));
        exec_ok(db, "ROLLBACK");
        ck_assert(!db_in_transaction(db));
        ck_assert(!db_transaction_failed(db));
        ck_assert_str_eq(scalar(db, "SELECT count(*) FROM x"), "0");

        /* Committed. */
        exec_ok(db, "BEGIN");
        db_reset(ins);
        ck_assert_int_eq(db_bind_int64(ins, 1, 1), 0);
        step_done(db, ins);
        exec_ok(db, "COMMIT");
        ck_assert(!db_in_transaction(db));
        ck_assert_str_eq(scalar(db, "SELECT string_agg(k::text, ',' ORDER BY k) FROM x"), "1");

        /* A savepoint per item, as the store's group commit does: a refused one is rolled
         * back to its savepoint, the transaction recovers and the others commit. */
        sp = prepare_ok(db, "SAVEPOINT job", true);
        rollback_to = prepare_ok(db, "ROLLBACK TO SAVEPOINT job", true);
        release = prepare_ok(db, "RELEASE SAVEPOINT job", true);
        exec_ok(db, "BEGIN");
        for (int64_t k = 2; k <= 4; k++) {
                db_reset(sp);
                step_done(db, sp);
                db_reset(ins);
                ck_assert_int_eq(db_bind_int64(ins, 1, k == 3 ? 1 : k), 0); /* 3 collides with 1 */
                r = db_step(ins);
                if (k == 3) {
                        ck_assert_int_eq(r, -EEXIST);
                        ck_assert(db_transaction_failed(db));
                        db_reset(rollback_to);
                        step_done(db, rollback_to);
                        ck_assert(!db_transaction_failed(db));
                        ck_assert(db_in_transaction(db));
                } else {
                        ck_assert_int_eq(r, 0);
                        db_reset(release);
                        step_done(db, release);
                }
        }
        exec_ok(db, "COMMIT");
        ck_assert(!db_in_transaction(db));
        ck_assert_str_eq(scalar(db, "SELECT string_agg(k::text, ',' ORDER BY k) FROM x"), "1,2,4");

        db_finalize(ins);
        db_finalize(sp);
        db_finalize(rollback_to);
        db_finalize(release);
}
END_TEST

/* ---- errors ---- */

START_TEST(test_errors) {
        Db *other;
        DbStmt *st;

        exec_ok(db, "CREATE TABLE e (k bigint PRIMARY KEY, u text UNIQUE)");
        exec_ok(db, "INSERT INTO e VALUES (1, 'a')");

        /* A unique or primary-key violation: -EEXIST, with the server's primary message. */
        ck_assert_int_eq(db_exec(db, "INSERT INTO e VALUES (1, 'b')"), -EEXIST);
        ck_assert_str_eq(db_errmsg(db), "duplicate key value violates unique constraint \"e_pkey\" (SQLSTATE 23505)");
        st = prepare_ok(db, "INSERT INTO e VALUES (?, ?)", true);
        ck_assert_int_eq(db_bind_int64(st, 1, 2), 0);
        ck_assert_int_eq(db_bind_text(st, 2, "a"), 0);
        ck_assert_int_eq(db_step(st), -EEXIST);
        ck_assert_str_eq(db_errmsg(db), "duplicate key value violates unique constraint \"e_u_key\" (SQLSTATE 23505)");
        db_finalize(st);

        /* A syntax error, at prepare time of a persistent statement (its first step). */
        st = prepare_ok(db, "SELEKT 1", true);
        ck_assert_int_eq(db_step(st), -EIO);
        ck_assert_str_eq(db_errmsg(db), "syntax error at or near \"SELEKT\" (SQLSTATE 42601)");
        ck_assert_int_eq(db_step(st), -EIO); /* still not prepared, still refused */
        db_finalize(st);

        /* A read-only transaction (25006) and a missing privilege (42501): -EACCES. */
        exec_ok(db, "BEGIN READ ONLY");
        ck_assert_int_eq(db_exec(db, "INSERT INTO e VALUES (3, 'c')"), -EACCES);
        ck_assert_msg(strstr(db_errmsg(db), "(SQLSTATE 25006)"), "%s", db_errmsg(db));
        exec_ok(db, "ROLLBACK");
        exec_ok(db, "CREATE ROLE nobody_here");
        exec_ok(db, "SET ROLE nobody_here");
        ck_assert_int_eq(db_exec(db, "SELECT * FROM e"), -EACCES);
        ck_assert_str_eq(db_errmsg(db), "permission denied for table e (SQLSTATE 42501)");
        exec_ok(db, "RESET ROLE");
        exec_ok(db, "DROP ROLE nobody_here");

        /* A row locked by another connection, taken with NOWAIT (55P03): -EBUSY. */
        other = open_ok(server.conninfo, NULL, 0);
        exec_ok(other, "BEGIN");
        exec_ok(other, "SELECT * FROM e WHERE k = 1 FOR UPDATE");
        exec_ok(db, "BEGIN");
        ck_assert_int_eq(db_exec(db, "SELECT * FROM e WHERE k = 1 FOR UPDATE NOWAIT"), -EBUSY);
        ck_assert_msg(strstr(db_errmsg(db), "(SQLSTATE 55P03)"), "%s", db_errmsg(db));
        exec_ok(db, "ROLLBACK");
        exec_ok(other, "ROLLBACK");
        db_close(other);

        /* The table is gone: -EIO, 42P01. */
        exec_ok(db, "DROP TABLE e");
        ck_assert_int_eq(db_exec(db, "SELECT * FROM e"), -EIO);
        ck_assert_str_eq(db_errmsg(db), "relation \"e\" does not exist (SQLSTATE 42P01)");
}
END_TEST

/* ---- passwords ---- */

/* Require a password of one role on the shared server, and wait until the server reads it. */
static void require_password(const char *role) {
        char hba[sizeof(server.data) + 16], line[128], conninfo[sizeof(server.conninfo) + 64], sql[128];
        _cleanup_free_ char *old = NULL;
        usec_t deadline;
        FILE *f;
        Db *d = NULL;
        int r;

        snprintf(sql, sizeof(sql), "CREATE ROLE %s LOGIN PASSWORD '" PASSWORD "'", role);
        exec_ok(db, sql);
        snprintf(hba, sizeof(hba), "%s/pg_hba.conf", server.data);
        old = harness_read_file(hba);
        ck_assert_ptr_nonnull(old);
        f = fopen(hba, "we"); /* the file stays the server's own */
        ck_assert_ptr_nonnull(f);
        snprintf(line, sizeof(line), "local all %s scram-sha-256\n", role);
        ck_assert_int_ge(fputs(line, f), 0);
        ck_assert_int_ge(fputs(old, f), 0);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_str_eq(scalar(db, "SELECT pg_reload_conf()"), "t");

        /* The reload is asynchronous: probe until a connection without the password is refused. */
        snprintf(conninfo, sizeof(conninfo), "%s user=%s", server.conninfo, role);
        deadline = clock_now() + RELOAD_WAIT_SEC * USEC_PER_SEC;
        while ((r = db_open_pg(conninfo, NULL, 5, 0, &d, err, sizeof(err))) == 0) {
                d = db_close(d);
                ck_assert_msg(clock_now() < deadline, "the server did not ask %s for a password within %d s", role,
                              RELOAD_WAIT_SEC);
                clock_sleep(10 * USEC_PER_MSEC);
        }
        ck_assert_msg(r == -EACCES, "%s (%s)", strerror(-r), err);
}

START_TEST(test_password_never_echoed) {
        char conninfo[sizeof(server.conninfo) + 64];
        Db *d = NULL;
        int r;

        require_password("pwuser");
        snprintf(conninfo, sizeof(conninfo), "%s user=pwuser", server.conninfo);

        /* Wrong: refused, and neither the password nor the one tried is in the message. */
        memset(err, 0, sizeof(err));
        r = db_open_pg(conninfo, WRONG_PASSWORD, 5, 0, &d, err, sizeof(err));
        ck_assert_msg(r == -EACCES, "%s (%s)", strerror(-r), err);
        ck_assert_ptr_null(d);
        ck_assert_msg(strstr(err, "password authentication failed for user \"pwuser\""), "%s", err);
        ck_assert_msg(!strstr(err, WRONG_PASSWORD) && !strstr(err, PASSWORD), "%s", err);

        /* Inside the conninfo instead (which db.h says never to do): the given one wins, and
         * the conninfo's is not repeated either. */
        snprintf(conninfo, sizeof(conninfo), "%s user=pwuser password=" PASSWORD, server.conninfo);
        r = db_open_pg(conninfo, WRONG_PASSWORD, 5, 0, &d, err, sizeof(err));
        ck_assert_int_eq(r, -EACCES);
        ck_assert_msg(!strstr(err, WRONG_PASSWORD) && !strstr(err, PASSWORD), "%s", err);

        /* Right: connected, as that role. */
        snprintf(conninfo, sizeof(conninfo), "%s user=pwuser", server.conninfo);
        d = open_ok(conninfo, PASSWORD, 0);
        ck_assert_str_eq(scalar(d, "SELECT current_user"), "pwuser");
        ck_assert_msg(!strstr(db_errmsg(d), PASSWORD), "%s", db_errmsg(d));
        db_close(d);

        /* A connection string that does not parse is not repeated: it may hold the password. */
        d = NULL;
        r = db_open_pg("host=/nowhere password=" PASSWORD " broken", NULL, 5, 0, &d, err, sizeof(err));
        ck_assert_int_eq(r, -EINVAL);
        ck_assert_msg(!strstr(err, PASSWORD) && strstr(err, "invalid PostgreSQL connection string"), "%s", err);
        r = db_open_pg("postgresql://pwuser:" PASSWORD "%zz@/postgres", NULL, 5, 0, &d, err, sizeof(err));
        ck_assert_int_eq(r, -EINVAL);
        ck_assert_msg(!strstr(err, PASSWORD), "%s", err);
        ck_assert_ptr_null(d);
}
END_TEST

/* ---- the store's schema ---- */

/* Column 0 of every row of a SQLite query, joined with ','. */
static void sqlite_list(sqlite3 *s, const char *sql, char *buf, size_t len) {
        sqlite3_stmt *st = NULL;
        size_t o = 0;

        buf[0] = '\0';
        ck_assert_msg(sqlite3_prepare_v2(s, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(s));
        while (sqlite3_step(st) == SQLITE_ROW)
                o += (size_t) snprintf(buf + o, len - o, "%s%s", o ? "," : "", sqlite3_column_text(st, 0));
        ck_assert_uint_lt(o, len);
        sqlite3_finalize(st);
}

/* A SQLite table's columns as "name type notnull,...", its types as the PostgreSQL schema's. */
static void sqlite_columns(sqlite3 *s, const char *table, char *buf, size_t len) {
        sqlite3_stmt *st = NULL;
        char sql[128];
        size_t o = 0;

        snprintf(sql, sizeof(sql), "PRAGMA table_info(%s)", table);
        buf[0] = '\0';
        ck_assert_int_eq(sqlite3_prepare_v2(s, sql, -1, &st, NULL), SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
                const char *type = (const char *) sqlite3_column_text(st, 2);
                const char *pg = streq(type, "INTEGER") ? "bigint" : streq(type, "TEXT") ? "text"
                                : streq(type, "BLOB") ? "bytea" : type;
                bool not_null = sqlite3_column_int(st, 3) || sqlite3_column_int(st, 5) > 0; /* a key is never NULL */

                o += (size_t) snprintf(buf + o, len - o, "%s%s %s %d", o ? "," : "", sqlite3_column_text(st, 1), pg,
                                       not_null);
        }
        ck_assert_uint_lt(o, len);
        sqlite3_finalize(st);
}

static const char *pg_columns(Db *d, const char *table) {
        static char buf[4096];
        DbStmt *st = prepare_ok(d,
                                "SELECT string_agg(column_name || ' ' || data_type || ' ' || (is_nullable = 'NO')::int,"
                                " ',' ORDER BY ordinal_position) FROM information_schema.columns"
                                " WHERE table_schema = 'public' AND table_name = ?",
                                false);

        ck_assert_int_eq(db_bind_text(st, 1, table), 0);
        step_row(d, st);
        snprintf(buf, sizeof(buf), "%s", strempty(db_column_text(st, 0)));
        db_finalize(st);
        return buf;
}

START_TEST(test_schema_is_sqlites) {
        char dir[256], path[320], tables[1024], list[1024], cols[4096];
        _cleanup_(store_closep) Store *store = NULL;
        const char *t;
        sqlite3 *s = NULL;
        Db *d;
        int version = 0;

        /* The SQLite schema as store.c makes it today. */
        harness_mkdtemp(dir, sizeof(dir), "check-db");
        snprintf(path, sizeof(path), "%s/jobs.db", dir);
        ck_assert_msg(store_open(path, &store, err, sizeof(err)) == 0, "%s", err);
        store = store_close(store);
        ck_assert_int_eq(sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);

        d = fresh_database("schema_cmp");
        ck_assert_msg(store_pg_migrate(d, &version, err, sizeof(err)) == 0, "%s", err);
        ck_assert_int_eq(version, 3);

        /* The same tables (and store_schema), with the same columns, types and NOT NULLs. */
        sqlite_list(s, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
                    tables, sizeof(tables));
        ck_assert_str_eq(tables, "client_correlation_ids,job_counts,job_items,jobs,lane,round_items,rounds");
        ck_assert_str_eq(scalar(d, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables"
                                   " WHERE schemaname = 'public' AND tablename <> 'store_schema'"),
                         tables);
        for (char *save = NULL, *name = strtok_r(tables, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
                sqlite_columns(s, name, cols, sizeof(cols));
                /* PostgreSQL's counts have a shard column besides (its migration 3). */
                if (streq(name, "job_counts"))
                        strncat(cols, ",shard integer 1", sizeof(cols) - strlen(cols) - 1);
                ck_assert_msg(streq(pg_columns(d, name), cols), "table %s: PostgreSQL has %s, SQLite %s", name,
                              pg_columns(d, name), cols);
        }
        ck_assert_str_eq(pg_columns(d, "store_schema"), "version integer 1");

        /* The same indexes (beside those of keys and UNIQUE), the same triggers. */
        sqlite_list(s, "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name",
                    list, sizeof(list));
        ck_assert_str_eq(list, "client_correlation_ids_job,job_items_conflict,jobs_round,jobs_state,jobs_state_created,"
                               "jobs_state_finished,round_items_round");
        ck_assert_str_eq(scalar(d, "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes i"
                                   " WHERE schemaname = 'public' AND tablename <> 'store_schema'"
                                   " AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conname = i.indexname)"),
                         list);
        ck_assert_str_eq(scalar(d, "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes i"
                                   " WHERE schemaname = 'public' AND tablename = 'jobs'"),
                         "jobs_idempotency_key_key,jobs_pkey,jobs_round,jobs_state,jobs_state_created,jobs_state_finished");
        t = scalar(d, "SELECT string_agg(indexdef, ';' ORDER BY indexname) FROM pg_indexes"
                      " WHERE indexname IN ('jobs_round', 'job_items_conflict')");
        ck_assert_str_eq(t, "CREATE INDEX job_items_conflict ON public.job_items USING btree (conflict_key) WHERE "
                            "(conflict_key IS NOT NULL);CREATE INDEX jobs_round ON public.jobs USING btree (round_id) "
                            "WHERE (round_id IS NOT NULL)");
        sqlite_list(s, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name", list, sizeof(list));
        ck_assert_str_eq(list, "jobs_count_delete,jobs_count_insert,jobs_count_update");
        /* PostgreSQL's three more: jobs ended and jobs queued, announced to every node (jobwatch.h). */
        ck_assert_str_eq(scalar(d, "SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal"),
                         "jobs_count_delete,jobs_count_insert,jobs_count_update,jobs_notify_final,"
                         "jobs_notify_queued_insert,jobs_notify_queued_update");
        /* The lane's one row. */
        ck_assert_str_eq(scalar(d, "SELECT id || ',' || call_started_at || ',' || call_deadline_at FROM lane"), "1,0,0");

        sqlite3_close(s);
        harness_rmtree(dir);
        drop_database(d, "schema_cmp");
}
END_TEST

START_TEST(test_migrations_versioned) {
        char newer[96];
        Db *d;
        int version = 0;

        ck_assert_uint_eq(store_pg_migrations_count, 3);
        d = fresh_database("store_fresh");
        ck_assert_msg(store_pg_migrate(d, &version, err, sizeof(err)) == 0, "%s", err);
        ck_assert_int_eq(version, 3);
        ck_assert(!db_in_transaction(d));
        /* Again: nothing to do. */
        version = 0;
        ck_assert_msg(store_pg_migrate(d, &version, err, sizeof(err)) == 0, "%s", err);
        ck_assert_int_eq(version, 3);
        ck_assert_str_eq(scalar(d, "SELECT count(*) || ':' || max(version) FROM store_schema"), "1:3");
        ck_assert_int_eq(db_exec(d, "INSERT INTO store_schema VALUES (5)"), -EEXIST); /* one row, ever */
        /* The fleet's version table is not the store's. */
        ck_assert_str_eq(scalar(d, "SELECT count(*) FROM pg_tables WHERE tablename = 'fleet_schema_version'"), "0");

        /* Inside a transaction, or on a version newer than this program's: refused, untouched. */
        exec_ok(d, "BEGIN");
        ck_assert_int_eq(store_pg_migrate(d, &version, err, sizeof(err)), -EINVAL);
        exec_ok(d, "ROLLBACK");
        snprintf(newer, sizeof(newer), "UPDATE store_schema SET version = %zu", store_pg_migrations_count + 1);
        exec_ok(d, newer);
        version = 0;
        ck_assert_int_eq(store_pg_migrate(d, &version, err, sizeof(err)), -EPROTO);
        ck_assert_int_eq(version, 0);
        ck_assert_str_eq(err, "the store schema is at version 4, newer than this visierd's 3");
        ck_assert(!db_in_transaction(d));
        ck_assert_str_eq(scalar(d, "SELECT version FROM store_schema"), "4");
        drop_database(d, "store_fresh");
}
END_TEST

typedef struct Migrator {
        pthread_barrier_t *start;
        char conninfo[sizeof(server.conninfo) + 64];
        int r, version;
        char err[DB_ERROR_MAX];
} Migrator;

static void *migrator(void *arg) {
        Migrator *m = arg;
        Db *d = NULL;

        m->r = db_open_pg(m->conninfo, NULL, 5, 0, &d, m->err, sizeof(m->err));
        pthread_barrier_wait(m->start);
        if (m->r == 0)
                m->r = store_pg_migrate(d, &m->version, m->err, sizeof(m->err));
        db_close(d);
        return NULL;
}

START_TEST(test_migrations_concurrent) {
        pthread_barrier_t start;
        Migrator m[4] = {};
        pthread_t th[ELEMENTSOF(m)];
        Db *d = fresh_database("store_race");

        ck_assert_int_eq(pthread_barrier_init(&start, NULL, ELEMENTSOF(m)), 0);
        for (size_t k = 0; k < ELEMENTSOF(m); k++) {
                m[k].start = &start;
                snprintf(m[k].conninfo, sizeof(m[k].conninfo), "%s dbname=store_race", server.conninfo);
                ck_assert_int_eq(pthread_create(&th[k], NULL, migrator, &m[k]), 0);
        }
        for (size_t k = 0; k < ELEMENTSOF(m); k++) {
                ck_assert_int_eq(pthread_join(th[k], NULL), 0);
                ck_assert_msg(m[k].r == 0, "node %zu: %s (%s)", k, strerror(-m[k].r), m[k].err);
                ck_assert_int_eq(m[k].version, 3);
        }
        pthread_barrier_destroy(&start);
        ck_assert_str_eq(scalar(d, "SELECT count(*) || ':' || max(version) FROM store_schema"), "1:3");
        ck_assert_str_eq(scalar(d, "SELECT count(*) FROM lane"), "1");
        drop_database(d, "store_race");
}
END_TEST

/* The statement insert_job() runs: a job of one item in ?1's state. */
static DbStmt *prepare_insert_job(Db *d) {
        return prepare_ok(d,
                          "INSERT INTO jobs (state, operation, tenant, project, non_versioned, tenant_code,"
                          " idempotency_key, request_body, n_items, next_run_at, created_at, updated_at)"
                          " VALUES (?1, 'create', 't', 'p', 'nv', 'tc', ?2, ?3, 1, 0, 100, 100)"
                          " RETURNING id, in_doubt, upstream_headers, attempts",
                          true);
}

/* A session of its own on the test database dbname, listening on channel. */
static PGconn *listen_on(const char *dbname, const char *channel) {
        char conninfo[512], sql[96];
        PGconn *l;
        PGresult *res;

        snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", server.conninfo, dbname); /* the later dbname wins */
        l = PQconnectdb(conninfo);
        ck_assert_msg(PQstatus(l) == CONNECTION_OK, "%s", PQerrorMessage(l));
        snprintf(sql, sizeof(sql), "LISTEN %s", channel);
        res = PQexec(l, sql);
        ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
        return l;
}

static void insert_job(Db *d, DbStmt *ins, const char *state, const char *idempotency_key, int64_t *ret_id) {
        static const unsigned char body[] = "{\"x\":1}";

        db_reset(ins);
        ck_assert_int_eq(db_bind_text(ins, 1, state), 0);
        ck_assert_int_eq(db_bind_text(ins, 2, idempotency_key), 0);
        ck_assert_int_eq(db_bind_blob(ins, 3, body, sizeof(body) - 1), 0);
        step_row(d, ins);
        *ret_id = db_column_int64(ins, 0);
        ck_assert_int_eq(db_column_int64(ins, 1), 0);      /* in_doubt's default */
        ck_assert_str_eq(db_column_text(ins, 2), "");      /* upstream_headers' */
        ck_assert_int_eq(db_column_int64(ins, 3), 0);      /* attempts' */
        step_done(d, ins);
}

START_TEST(test_job_counts_triggers) {
        /* A state's count is the sum of its shards' rows (migration 3). */
        static const char *const counts = "SELECT coalesce(string_agg(state || '=' || n, ',' ORDER BY state), '')"
                                          " FROM (SELECT state, sum(n) AS n FROM job_counts GROUP BY state) c";
        DbStmt *ins, *set_state;
        int64_t id[6];
        Db *d = fresh_database("store_counts");

        ck_assert_msg(store_pg_migrate(d, NULL, err, sizeof(err)) == 0, "%s", err);
        ins = prepare_insert_job(d);
        set_state = prepare_ok(d, "UPDATE jobs SET state = ?2, updated_at = 200 WHERE id = ?1", true);
        ck_assert_str_eq(scalar(d, counts), "");

        insert_job(d, ins, "queued", "k1", &id[0]);
        insert_job(d, ins, "queued", "k2", &id[1]);
        insert_job(d, ins, "queued", NULL, &id[2]);
        insert_job(d, ins, "running", NULL, &id[3]);
        ck_assert_int_eq(id[0], 1);
        ck_assert_int_eq(id[3], 4);
        ck_assert_str_eq(scalar(d, counts), "queued=3,running=1");

        /* The idempotency key is unique; a refused insert counts nothing. */
        db_reset(ins);
        ck_assert_int_eq(db_bind_text(ins, 1, "queued"), 0);
        ck_assert_int_eq(db_bind_text(ins, 2, "k1"), 0);
        ck_assert_int_eq(db_bind_blob(ins, 3, "b", 1), 0);
        ck_assert_int_eq(db_step(ins), -EEXIST);
        ck_assert_str_eq(scalar(d, counts), "queued=3,running=1");

        /* A change of state moves one; the same state again, or another column, moves none. */
        db_reset(set_state);
        ck_assert_int_eq(db_bind_int64(set_state, 1, id[0]), 0);
        ck_assert_int_eq(db_bind_text(set_state, 2, "running"), 0);
        step_done(d, set_state);
        ck_assert_int_eq(db_changes(d), 1);
        ck_assert_str_eq(scalar(d, counts), "queued=2,running=2");
        step_done(d, set_state); /* run again, same parameters: running to running */
        ck_assert_int_eq(db_changes(d), 1);
        ck_assert_str_eq(scalar(d, counts), "queued=2,running=2");
        exec_ok(d, "UPDATE jobs SET attempts = attempts + 1");
        ck_assert_int_eq(db_changes(d), 4);
        ck_assert_str_eq(scalar(d, counts), "queued=2,running=2");
        db_reset(set_state);
        ck_assert_int_eq(db_bind_int64(set_state, 1, id[3]), 0);
        ck_assert_int_eq(db_bind_text(set_state, 2, "succeeded"), 0);
        step_done(d, set_state);
        ck_assert_str_eq(scalar(d, counts), "queued=2,running=1,succeeded=1");

        /* Many rows in one statement; a rolled-back change leaves the counts as they were. */
        exec_ok(d, "UPDATE jobs SET state = 'failed' WHERE state IN ('queued', 'running')");
        ck_assert_int_eq(db_changes(d), 3);
        ck_assert_str_eq(scalar(d, counts), "failed=3,queued=0,running=0,succeeded=1");
        exec_ok(d, "BEGIN");
        insert_job(d, ins, "queued", "k9", &id[4]);
        ck_assert_int_eq(id[4], 6); /* the refused insert took 5: identities are not given back */
        exec_ok(d, "DELETE FROM jobs WHERE state = 'failed'");
        ck_assert_str_eq(scalar(d, counts), "failed=0,queued=1,running=0,succeeded=1");
        exec_ok(d, "ROLLBACK");
        ck_assert_str_eq(scalar(d, counts), "failed=3,queued=0,running=0,succeeded=1");

        /* Deletes, and a job's items and correlation IDs go with it. */
        exec_ok(d, "INSERT INTO job_items (job_id, idx, item) VALUES (1, 0, 'a'), (1, 1, 'b'), (2, 0, 'c')");
        exec_ok(d, "INSERT INTO client_correlation_ids VALUES ('cid-1', 1)");
        exec_ok(d, "DELETE FROM jobs WHERE id = 1");
        ck_assert_str_eq(scalar(d, counts), "failed=2,queued=0,running=0,succeeded=1");
        ck_assert_str_eq(scalar(d, "SELECT count(*) || ',' || min(state) FROM job_items"), "1,pending");
        ck_assert_str_eq(scalar(d, "SELECT count(*) FROM client_correlation_ids"), "0");
        insert_job(d, ins, "queued", "k1", &id[5]); /* its key is free again; ids are not reused */
        ck_assert_int_eq(id[5], 7);
        exec_ok(d, "DELETE FROM jobs");
        ck_assert_int_eq(db_changes(d), 4);
        ck_assert_str_eq(scalar(d, counts), "failed=0,queued=0,running=0,succeeded=0");
        ck_assert_str_eq(scalar(d, "SELECT count(*) FROM job_items"), "0");

        db_finalize(ins);
        db_finalize(set_state);
        drop_database(d, "store_counts");
}
END_TEST

/* Two sessions queue jobs at once without waiting for each other: each counts into its own
 * shard, so the second's insert commits while the first's transaction, which has counted a job
 * of its own, is still open (with one row per state it waited for that transaction's end: its
 * lock_timeout fails the insert here). The sums stay exact when a job counted up in one shard
 * is counted down in another. */
START_TEST(test_job_counts_shards) {
        static const char *const sums = "SELECT coalesce(string_agg(state || '=' || n, ',' ORDER BY state), '')"
                                        " FROM (SELECT state, sum(n) AS n FROM job_counts GROUP BY state) c";
        char conninfo[sizeof(server.conninfo) + 64], shard_a[16];
        DbStmt *ins_a, *ins_b;
        Db *a = fresh_database("store_shards"), *b = NULL;
        int64_t id_a, id_b;

        ck_assert_msg(store_pg_migrate(a, NULL, err, sizeof(err)) == 0, "%s", err);
        snprintf(shard_a, sizeof(shard_a), "%s", scalar(a, "SELECT pg_backend_pid() % 64"));
        snprintf(conninfo, sizeof(conninfo), "%s dbname=store_shards", server.conninfo);
        /* A second session in another shard (process ids are the server's to give: a few tries). */
        for (int i = 0; i < 64 && !b; i++) {
                b = open_ok(conninfo, NULL, 0);
                if (streq(scalar(b, "SELECT pg_backend_pid() % 64"), shard_a)) {
                        db_close(b);
                        b = NULL;
                }
        }
        ck_assert_msg(b, "no second session outside shard %s in 64 tries", shard_a);
        exec_ok(b, "SET lock_timeout = '5s'");
        ins_a = prepare_insert_job(a);
        ins_b = prepare_insert_job(b);

        exec_ok(a, "BEGIN");
        insert_job(a, ins_a, "queued", "shard-a", &id_a);
        insert_job(b, ins_b, "queued", "shard-b", &id_b); /* commits beside a's open transaction */
        ck_assert_str_eq(scalar(b, sums), "queued=1");
        exec_ok(a, "COMMIT");
        ck_assert_str_eq(scalar(b, sums), "queued=2");
        ck_assert_str_eq(scalar(b, "SELECT count(DISTINCT shard) FROM job_counts"), "2");

        /* b moves a's job: down in b's shard, which counted it up in none of its rows. */
        exec_ok(b, "UPDATE jobs SET state = 'running' WHERE idempotency_key = 'shard-a'");
        ck_assert_str_eq(scalar(b, sums), "queued=1,running=1");
        exec_ok(b, "DELETE FROM jobs WHERE idempotency_key = 'shard-b'");
        ck_assert_str_eq(scalar(a, sums), "queued=0,running=1");
        db_finalize(ins_a);
        db_finalize(ins_b);
        db_close(b);
        drop_database(a, "store_shards");
}
END_TEST

/* Read every notification that has arrived on l, all for channel, as "payload,payload,…". */
static void notified_on(PGconn *l, const char *channel, char *buf, size_t len) {
        PGnotify *n;

        buf[0] = '\0';
        ck_assert_int_eq(PQconsumeInput(l), 1);
        while ((n = PQnotifies(l))) {
                size_t used = strlen(buf);

                ck_assert_str_eq(n->relname, channel);
                snprintf(buf + used, len - used, "%s%s", used ? "," : "", n->extra);
                PQfreemem(n);
        }
}

static void notified(PGconn *l, char *buf, size_t len) {
        notified_on(l, "visierd_job_final", buf, len);
}

/* Every job that reaches a final state is announced at commit to the sessions listening
 * (jobwatch.h), once per change, never a change that is not to a final state or is rolled back. */
START_TEST(test_final_states_notified) {
        DbStmt *ins;
        int64_t id[3];
        char got[256];
        Db *d = fresh_database("store_notify");
        PGconn *l;

        ck_assert_msg(store_pg_migrate(d, NULL, err, sizeof(err)) == 0, "%s", err);
        l = listen_on("store_notify", "visierd_job_final");

        ins = prepare_insert_job(d);
        insert_job(d, ins, "queued", NULL, &id[0]);
        insert_job(d, ins, "queued", NULL, &id[1]);
        insert_job(d, ins, "queued", NULL, &id[2]);
        exec_ok(d, "UPDATE jobs SET state = 'running'");
        exec_ok(d, "UPDATE jobs SET state = 'queued' WHERE id = 3");
        exec_ok(d, "SELECT 1"); /* a round trip after the commits: notifications were sent */
        notified(l, got, sizeof(got));
        ck_assert_str_eq(got, "");

        exec_ok(d, "BEGIN");
        exec_ok(d, "UPDATE jobs SET state = 'succeeded' WHERE id = 1");
        exec_ok(d, "UPDATE jobs SET state = 'failed' WHERE id = 2");
        notified(l, got, sizeof(got));
        ck_assert_str_eq(got, ""); /* not before the commit */
        exec_ok(d, "COMMIT");
        exec_ok(d, "BEGIN");
        exec_ok(d, "UPDATE jobs SET state = 'cancelled' WHERE id = 3");
        exec_ok(d, "ROLLBACK");
        exec_ok(d, "UPDATE jobs SET state = 'cancelled' WHERE id = 3");
        exec_ok(d, "UPDATE jobs SET error = 'x' WHERE id = 1"); /* not a change of state */
        for (usec_t until = clock_now() + 10 * USEC_PER_SEC; clock_now() < until;) {
                char more[128];

                notified(l, more, sizeof(more));
                if (more[0])
                        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", got[0] ? "," : "", more);
                if (strlen(got) >= 5)
                        break;
                clock_sleep(10 * USEC_PER_MSEC); /* probe interval */
        }
        ck_assert_str_eq(got, "1,2,3");

        PQfinish(l);
        db_finalize(ins);
        drop_database(d, "store_notify");
}
END_TEST

/* How many notifications on channel l holds, after a round trip of its own (a session is
 * sent the notifications committed before its transaction at that transaction's end). */
static unsigned count_notified(PGconn *l, const char *channel) {
        PGresult *res = PQexec(l, "SELECT 1");
        unsigned k = 0;
        PGnotify *n;

        ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        PQclear(res);
        while ((n = PQnotifies(l))) {
                ck_assert_str_eq(n->relname, channel);
                ck_assert_str_eq(n->extra, "");
                k++;
                PQfreemem(n);
        }
        return k;
}

/* A job queued — inserted queued, or moved back to queued — is announced on
 * visierd_job_queued at commit, with an empty payload, once per transaction however many
 * (jobwatch.h); never for another state, a rolled-back change or a change not of state. */
START_TEST(test_queued_notified) {
        DbStmt *ins;
        int64_t id;
        Db *d = fresh_database("store_notify_queued");
        PGconn *l;

        ck_assert_msg(store_pg_migrate(d, NULL, err, sizeof(err)) == 0, "%s", err);
        l = listen_on("store_notify_queued", "visierd_job_queued");
        ins = prepare_insert_job(d);

        exec_ok(d, "BEGIN");
        for (int i = 0; i < 3; i++)
                insert_job(d, ins, "queued", NULL, &id);
        ck_assert_uint_eq(count_notified(l, "visierd_job_queued"), 0); /* not before the commit */
        exec_ok(d, "COMMIT");
        ck_assert_uint_eq(count_notified(l, "visierd_job_queued"), 1); /* three jobs, one transaction */

        insert_job(d, ins, "running", NULL, &id);
        exec_ok(d, "UPDATE jobs SET state = 'running'");
        exec_ok(d, "BEGIN");
        exec_ok(d, "UPDATE jobs SET state = 'queued' WHERE id = 1");
        exec_ok(d, "ROLLBACK");
        exec_ok(d, "UPDATE jobs SET error = 'x' WHERE id = 1");
        ck_assert_uint_eq(count_notified(l, "visierd_job_queued"), 0);

        exec_ok(d, "UPDATE jobs SET state = 'queued' WHERE id = 2"); /* a requeue */
        exec_ok(d, "UPDATE jobs SET state = 'queued' WHERE id = 2"); /* not a change of state */
        ck_assert_uint_eq(count_notified(l, "visierd_job_queued"), 1);

        PQfinish(l);
        db_finalize(ins);
        drop_database(d, "store_notify_queued");
}
END_TEST

/* ---- distinct connections in distinct threads ---- */

typedef struct Worker {
        int n;
        int r;
        int64_t sum;
        char err[DB_ERROR_MAX];
} Worker;

static void *worker(void *arg) {
        Worker *w = arg;
        Db *d = NULL;
        DbStmt *ins = NULL, *sum = NULL;

        w->r = db_open_pg(server.conninfo, NULL, 5, 0, &d, w->err, sizeof(w->err));
        if (w->r < 0)
                return NULL;
        w->r = db_exec(d, "CREATE TEMP TABLE w (v bigint)");
        if (w->r >= 0)
                w->r = db_prepare(d, "INSERT INTO w VALUES (?)", true, &ins);
        for (int i = 1; w->r >= 0 && i <= w->n; i++) {
                db_reset(ins);
                w->r = db_bind_int64(ins, 1, i);
                if (w->r >= 0)
                        w->r = db_step(ins);
        }
        if (w->r >= 0)
                w->r = db_prepare(d, "SELECT sum(v) FROM w", false, &sum);
        if (w->r >= 0 && (w->r = db_step(sum)) == 1) {
                w->sum = db_column_int64(sum, 0);
                w->r = 0;
        }
        if (w->r < 0)
                snprintf(w->err, sizeof(w->err), "%s", db_errmsg(d));
        db_finalize(sum);
        db_finalize(ins);
        db_close(d);
        return NULL;
}

START_TEST(test_threads_own_connections) {
        Worker w[3] = { { .n = 300 }, { .n = 200 }, { .n = 100 } };
        pthread_t th[ELEMENTSOF(w)];

        for (size_t k = 0; k < ELEMENTSOF(w); k++)
                ck_assert_int_eq(pthread_create(&th[k], NULL, worker, &w[k]), 0);
        for (size_t k = 0; k < ELEMENTSOF(w); k++) {
                ck_assert_int_eq(pthread_join(th[k], NULL), 0);
                ck_assert_msg(w[k].r == 0, "worker %zu: %s (%s)", k, strerror(-w[k].r), w[k].err);
                ck_assert_int_eq(w[k].sum, (int64_t) w[k].n * (w[k].n + 1) / 2);
        }
}
END_TEST

/* ---- a server of the test's own, crashed under an open connection ---- */

static PgServer own;

static void own_setup(void) {
        char reason[PG_REASON_MAX];

        ck_assert_msg(pg_server_init(&own, reason, sizeof(reason)) == 0, "%s", reason);
}

static void own_teardown(void) {
        pg_server_destroy(&own);
}

START_TEST(test_server_restart) {
        char reason[PG_REASON_MAX];
        DbStmt *st, *other = NULL;
        Db *d, *tx;
        int r;

        d = open_ok(own.conninfo, NULL, 0);
        tx = open_ok(own.conninfo, NULL, 0);
        exec_ok(d, "CREATE TABLE kept (v bigint)");
        st = prepare_ok(d, "INSERT INTO kept VALUES (?) RETURNING v", true);
        ck_assert_int_eq(db_bind_int64(st, 1, 1), 0);
        step_row(d, st);
        step_done(d, st);
        exec_ok(tx, "BEGIN");
        exec_ok(tx, "INSERT INTO kept VALUES (2)");
        ck_assert(db_in_transaction(tx));

        /* As a crash: every later call on the old connections is -ENOTCONN, without harm. */
        ck_assert_msg(pg_server_restart(&own, PG_STOP_IMMEDIATE, reason, sizeof(reason)) == 0, "%s", reason);
        db_reset(st);
        ck_assert_int_eq(db_bind_int64(st, 1, 3), 0);
        r = db_step(st);
        ck_assert_msg(r == -ENOTCONN, "step on a connection the restart broke: %d (%s)", r, db_errmsg(d));
        ck_assert_msg(db_errmsg(d)[0], "no message");
        ck_assert_int_eq(db_step(st), -ENOTCONN);
        ck_assert_int_eq(db_exec(d, "SELECT 1"), -ENOTCONN);
        ck_assert_int_eq(db_prepare(d, "SELECT 1", false, &other), -ENOTCONN);
        ck_assert_ptr_null(other);
        ck_assert(!db_in_transaction(d));
        ck_assert(!db_transaction_failed(d));
        ck_assert_int_eq(db_column_count(st), 0);
        ck_assert(db_column_is_null(st, 0));

        r = db_exec(tx, "COMMIT");
        ck_assert_msg(r == -ENOTCONN, "commit on a connection the restart broke: %d (%s)", r, db_errmsg(tx));
        ck_assert(!db_in_transaction(tx));
        ck_assert_int_eq(db_exec(tx, "ROLLBACK"), -ENOTCONN);
        db_close(tx);
        db_finalize(st);
        db_close(d);

        /* A new connection: what was committed is there, the open transaction is not. */
        d = open_ok(own.conninfo, NULL, 0);
        ck_assert_str_eq(scalar(d, "SELECT string_agg(v::text, ',' ORDER BY v) FROM kept"), "1");
        db_close(d);

        /* While the server is down: no connection. */
        ck_assert_int_eq(pg_server_stop(&own, PG_STOP_FAST), 0);
        d = NULL;
        r = db_open_pg(own.conninfo, NULL, 2, 0, &d, err, sizeof(err));
        ck_assert_msg(r == -ENOTCONN, "%d (%s)", r, err);
        ck_assert_ptr_null(d);
        ck_assert_msg(strstr(err, "cannot connect to PostgreSQL"), "%s", err);
}
END_TEST

int main(void) {
        char reason[PG_REASON_MAX];
        Suite *s = suite_create("db");
        TCase *tc = tcase_create("db"), *ts = tcase_create("schema"), *tr = tcase_create("restart");
        SRunner *sr;
        int failed;

        /* One server for the "db" and "schema" cases, started here so that one that cannot run is a SKIP. */
        if (pg_server_init(&server, reason, sizeof(reason)) < 0) {
                printf("SKIP: PostgreSQL cannot run here: %s\n", reason);
                pg_server_destroy(&server);
                return 77; /* Automake: SKIP */
        }
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_session);
        tcase_add_test(tc, test_placeholders);
        tcase_add_test(tc, test_binds_round_trip);
        tcase_add_test(tc, test_persistent_reused);
        tcase_add_test(tc, test_changes_returning);
        tcase_add_test(tc, test_transactions);
        tcase_add_test(tc, test_errors);
        tcase_add_test(tc, test_password_never_echoed);
        tcase_add_test(tc, test_threads_own_connections);
        suite_add_tcase(s, tc);
        tcase_add_checked_fixture(ts, setup, teardown);
        tcase_set_timeout(ts, 60);
        tcase_add_test(ts, test_schema_is_sqlites);
        tcase_add_test(ts, test_migrations_versioned);
        tcase_add_test(ts, test_migrations_concurrent);
        tcase_add_test(ts, test_job_counts_triggers);
        tcase_add_test(ts, test_job_counts_shards);
        tcase_add_test(ts, test_final_states_notified);
        tcase_add_test(ts, test_queued_notified);
        suite_add_tcase(s, ts);
        tcase_add_checked_fixture(tr, own_setup, own_teardown);
        tcase_set_timeout(tr, 60);
        tcase_add_test(tr, test_server_restart);
        suite_add_tcase(s, tr);

        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        pg_server_destroy(&server);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
