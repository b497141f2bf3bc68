/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the fleet's rate budget (fleetbudget.c) against a real PostgreSQL started by
 * tests/pg-harness.c: the caps held by three connections hammering one budget (a burst of
 * exactly the cap, then nothing until its places come back: no window of the length plus the
 * slack holds more than the cap), the hour cap, the background reserve, Visier's corrections
 * (lower, never raise), a 429 closing the budget for every connection, caps changed on a
 * reload, and a server restart in the middle of the hammering. Windows are shortened where
 * places coming back is what is tested (a "minute" of one second) and lengthened to a day
 * where exact counts are (none comes back during the test). Every time is the database's.
 * Exits 77 (SKIP), saying why, where PostgreSQL cannot run.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fleetbudget.h"
#include "lease.h"
#include "pg-harness.h"

static PgServer server; /* shared by the tests of the "budget" case; each test has its own tenant */
static PGconn *conn;
static char err[FLEETBUDGET_ERROR_MAX];

#define DAY FLEETBUDGET_PERIOD_MS_MAX
#define WAIT_SEC 10 /* longest a test waits for the database to say a block is over */
#define SLACK FLEETBUDGET_SLACK_MS
/* A place comes back up to one slot late: (length + slack) / 636 + 1 ms (fleetdb.c). */
#define SLOT(length) (((length) + SLACK) / 636 + 1)

static void setup(void) {
        int version = 0;

        conn = pg_server_connect(&server);
        ck_assert_msg(fleetbudget_migrate(conn, &version, err, sizeof(err)) == 0, "migrate: %s", err);
        ck_assert_int_eq(version, FLEETDB_SCHEMA_VERSION);
}

static void teardown(void) {
        PQfinish(conn);
        conn = NULL;
}

static void sql(PGconn *c, const char *statement) {
        PGresult *res = PQexec(c, statement);
        ExecStatusType st = PQresultStatus(res);

        ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", statement, PQerrorMessage(c));
        PQclear(res);
}

static void caps_ok(PGconn *c, const char *tenant, unsigned per_minute, unsigned per_hour, unsigned minute_ms,
                    unsigned hour_ms) {
        FleetBudgetCaps caps = { per_minute, per_hour, minute_ms, hour_ms };
        int r = fleetbudget_set_caps(c, tenant, &caps, err, sizeof(err));

        ck_assert_msg(r == 0, "set caps of %s: %s (%s)", tenant, strerror(-r), err);
}

static FleetBudgetStatus status_of(PGconn *c, const char *tenant) {
        FleetBudgetStatus s;
        int r = fleetbudget_status(c, tenant, &s, err, sizeof(err));

        ck_assert_msg(r == 0, "status of %s: %s (%s)", tenant, strerror(-r), err);
        return s;
}

/* Take until refused; how many were granted. */
static unsigned take_all(PGconn *c, const char *tenant, double reserve, FleetBudgetTake *ret_refusal) {
        FleetBudgetTake t;
        unsigned n = 0;
        int r;

        for (;;) {
                r = reserve > 0 ? fleetbudget_take_background(c, tenant, reserve, &t, err, sizeof(err))
                                : fleetbudget_take(c, tenant, &t, err, sizeof(err));
                if (r < 0)
                        break;
                ck_assert_uint_lt(++n, 100000);
        }
        ck_assert_msg(r == -EAGAIN, "take from %s: %s (%s)", tenant, strerror(-r), err);
        if (ret_refusal)
                *ret_refusal = t;
        return n;
}

START_TEST(test_schema_and_arguments) {
        PGconn *fresh;
        PGresult *res;
        FleetBudgetCaps caps = { 20, 100, DAY, DAY };
        FleetBudgetTake t;
        char conninfo[320];
        int version = 0;

        /* A database without the fleet schema: refused with -EPROTO. */
        sql(conn, "DROP DATABASE IF EXISTS budget_fresh");
        sql(conn, "CREATE DATABASE budget_fresh");
        snprintf(conninfo, sizeof(conninfo), "%s dbname=budget_fresh", server.conninfo);
        fresh = PQconnectdb(conninfo);
        ck_assert_msg(PQstatus(fresh) == CONNECTION_OK, "%s", PQerrorMessage(fresh));
        ck_assert_int_eq(fleetbudget_take(fresh, "t", &t, err, sizeof(err)), -EPROTO);

        /* A database the first building block migrated (version 1, the lane only) gains the budget
         * (and every later table) and keeps its lane. */
        sql(fresh, "CREATE TABLE fleet_schema_version (version integer PRIMARY KEY,"
                   " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())");
        sql(fresh, "INSERT INTO fleet_schema_version (version) VALUES (1)");
        sql(fresh, "CREATE TABLE fleet_lanes (tenant text PRIMARY KEY, holder text, term bigint NOT NULL CHECK (term > 0),"
                   " expires_at timestamptz, acquired_at timestamptz, send_after timestamptz, open_call_deadline timestamptz)");
        sql(fresh, "INSERT INTO fleet_lanes (tenant, holder, term) VALUES ('t', 'a', 7)");
        ck_assert_int_eq(fleetbudget_migrate(fresh, &version, err, sizeof(err)), 0);
        ck_assert_int_eq(version, FLEETDB_SCHEMA_VERSION);
        res = PQexec(fresh, "SELECT string_agg(version::text, ',' ORDER BY version), (SELECT term FROM fleet_lanes)"
                            " FROM fleet_schema_version");
        /* the lane, the budget, the nodes, the budget's sliding windows (fleetdb.c) */
        ck_assert_str_eq(PQgetvalue(res, 0, 0), "1,2,3,4");
        ck_assert_str_eq(PQgetvalue(res, 0, 1), "7");
        PQclear(res);
        ck_assert_int_eq(fleetbudget_migrate(fresh, &version, err, sizeof(err)), 0); /* again: nothing to do */
        ck_assert_int_eq(fleetbudget_set_caps(fresh, "t", &caps, err, sizeof(err)), 0);
        ck_assert_int_eq(fleetbudget_take(fresh, "t", &t, err, sizeof(err)), 0);
        PQfinish(fresh);
        sql(conn, "DROP DATABASE budget_fresh");

        /* A tenant without a budget. */
        ck_assert_int_eq(fleetbudget_take(conn, "t-none", &t, err, sizeof(err)), -ENOENT);
        ck_assert_int_eq(fleetbudget_take_background(conn, "t-none", 0.2, &t, err, sizeof(err)), -ENOENT);
        ck_assert_int_eq(fleetbudget_observe(conn, "t-none", 1, 1, err, sizeof(err)), -ENOENT);
        ck_assert_int_eq(fleetbudget_block(conn, "t-none", 1000, NULL, err, sizeof(err)), -ENOENT);
        ck_assert_int_eq(fleetbudget_status(conn, "t-none", &(FleetBudgetStatus) {}, err, sizeof(err)), -ENOENT);

        /* Bad arguments, and a transaction left open on the connection (it would hold every node's
         * budget locked). */
        caps = (FleetBudgetCaps) { 0, 100, DAY, DAY };
        ck_assert_int_eq(fleetbudget_set_caps(conn, "t-args", &caps, err, sizeof(err)), -EINVAL);
        caps = (FleetBudgetCaps) { 20, 100, 0, DAY };
        ck_assert_int_eq(fleetbudget_set_caps(conn, "t-args", &caps, err, sizeof(err)), -EINVAL);
        caps = (FleetBudgetCaps) { 20, 100, DAY, DAY + 1 };
        ck_assert_int_eq(fleetbudget_set_caps(conn, "t-args", &caps, err, sizeof(err)), -EINVAL);
        ck_assert_int_eq(fleetbudget_take(conn, "", &t, err, sizeof(err)), -EINVAL);
        caps_ok(conn, "t-args", 20, 100, DAY, DAY);
        ck_assert_int_eq(fleetbudget_take_background(conn, "t-args", 1.5, &t, err, sizeof(err)), -EINVAL);
        ck_assert_int_eq(fleetbudget_take_background(conn, "t-args", -0.1, &t, err, sizeof(err)), -EINVAL);
        ck_assert_int_eq(fleetbudget_block(conn, "t-args", FLEETBUDGET_BLOCK_MS_MAX + 1, NULL, err, sizeof(err)),
                         -EINVAL);
        sql(conn, "BEGIN");
        ck_assert_int_eq(fleetbudget_take(conn, "t-args", &t, err, sizeof(err)), -EINVAL);
        sql(conn, "ROLLBACK");
        ck_assert_int_eq(status_of(conn, "t-args").minute_left, 20);
}
END_TEST

/* ---- three connections hammering one budget ---- */

#define HAMMERS 3
#define GRANTS_MAX 512

typedef struct Hammer {
        const char *conninfo;
        const char *tenant;
        pthread_barrier_t *barrier;
        usec_t until;              /* stop at this time (the test's clock: how long to hammer) */
        bool reconnect;            /* open a new connection after -ENOTCONN, and stop once the
                                    * budget is spent for more than a second */
        atomic_uint *total;        /* grants of all hammers so far */
        int64_t at[GRANTS_MAX];    /* the database's time of each grant */
        unsigned n, refused, enotconn, max_wait_ms;
        int error;                 /* another error, or -ENOTCONN when not reconnecting */
} Hammer;

static void *hammer(void *arg) {
        Hammer *h = arg;
        PGconn *c = PQconnectdb(h->conninfo);
        char e[FLEETBUDGET_ERROR_MAX];

        pthread_barrier_wait(h->barrier);
        while (clock_now() < h->until) {
                FleetBudgetTake t = {};
                int r;

                if (!c) { /* the server restarted: connect again, polling, until the deadline */
                        c = PQconnectdb(h->conninfo);
                        if (PQstatus(c) != CONNECTION_OK) {
                                PQfinish(c);
                                c = NULL;
                                clock_sleep(10 * USEC_PER_MSEC);
                        }
                        continue;
                }
                r = fleetbudget_take(c, h->tenant, &t, e, sizeof(e));
                if (r == 0) {
                        if (h->n == GRANTS_MAX) {
                                h->error = -E2BIG;
                                break;
                        }
                        h->at[h->n++] = t.at_ms;
                        atomic_fetch_add(h->total, 1);
                } else if (r == -EAGAIN) {
                        h->refused++;
                        if (t.wait_ms > h->max_wait_ms)
                                h->max_wait_ms = (unsigned) t.wait_ms;
                        if (h->reconnect && t.wait_ms > 1000)
                                break;
                } else if (r == -ENOTCONN && h->reconnect) {
                        h->enotconn++;
                        PQfinish(c);
                        c = NULL;
                } else {
                        h->error = r;
                        break;
                }
        }
        PQfinish(c);
        return NULL;
}

static Hammer hammers[HAMMERS];

static void hammers_start(pthread_t *threads, pthread_barrier_t *barrier, atomic_uint *total, const PgServer *pg,
                          const char *tenant, usec_t duration, bool reconnect) {
        ck_assert_int_eq(pthread_barrier_init(barrier, NULL, HAMMERS + 1), 0);
        atomic_store(total, 0);
        for (unsigned i = 0; i < HAMMERS; i++) {
                hammers[i] = (Hammer) { .conninfo = pg->conninfo, .tenant = tenant, .barrier = barrier, .reconnect = reconnect, .total = total };
                ck_assert_int_eq(pthread_create(&threads[i], NULL, hammer, &hammers[i]), 0);
        }
        /* Every hammer has connected when the barrier opens: the clock starts then. */
        for (unsigned i = 0; i < HAMMERS; i++)
                hammers[i].until = clock_now() + duration;
        pthread_barrier_wait(barrier);
}

/* Join the hammers; all their grants' times, sorted, in *ret (GRANTS_MAX * HAMMERS). */
static unsigned hammers_join(pthread_t *threads, pthread_barrier_t *barrier, int64_t *ret) {
        unsigned n = 0;

        for (unsigned i = 0; i < HAMMERS; i++)
                ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
        pthread_barrier_destroy(barrier);
        for (unsigned i = 0; i < HAMMERS; i++) {
                ck_assert_msg(hammers[i].error == 0, "hammer %u: %s", i, strerror(-hammers[i].error));
                for (unsigned j = 0; j < hammers[i].n; j++)
                        ret[n++] = hammers[i].at[j];
        }
        /* Insertion sort: a few hundred. */
        for (unsigned i = 1; i < n; i++)
                for (unsigned j = i; j > 0 && ret[j - 1] > ret[j]; j--) {
                        int64_t x = ret[j];
                        ret[j] = ret[j - 1];
                        ret[j - 1] = x;
                }
        return n;
}

START_TEST(test_three_connections_never_exceed_the_cap) {
        static int64_t at[GRANTS_MAX * HAMMERS];
        pthread_t threads[HAMMERS];
        pthread_barrier_t barrier;
        atomic_uint total;
        unsigned n;
        PGresult *res;

        /* A minute's cap of 20 in a window of a day: exactly 20 granted, however hard three
         * connections try, each refused with the wait until the places come back (a day and
         * the slack, all at once). */
        caps_ok(conn, "t-burst", 20, 1000, DAY, DAY);
        hammers_start(threads, &barrier, &total, &server, "t-burst", 600 * USEC_PER_MSEC, false);
        n = hammers_join(threads, &barrier, at);
        ck_assert_uint_eq(n, 20);
        for (unsigned i = 0; i < HAMMERS; i++) {
                ck_assert_uint_gt(hammers[i].refused, 0);
                ck_assert_uint_le(hammers[i].max_wait_ms, DAY + SLACK + SLOT(DAY));
                ck_assert_uint_ge(hammers[i].max_wait_ms, DAY + SLACK - 1000);
        }
        ck_assert_uint_eq(status_of(conn, "t-burst").minute_left, 0);
        ck_assert_uint_eq(status_of(conn, "t-burst").hour_left, 980);

        /* A "minute" of one second, 20 calls in it, hammered for 4.5 s: the 20 at once, then
         * nothing until their places come back a second and the slack later, then 20 again.
         * No stretch of the length plus the slack, wherever it starts, holds more than 20 (a
         * bucket refilled continuously would grant one every 50 ms after the first 20). */
        caps_ok(conn, "t-pace", 20, 1000, 1000, DAY);
        hammers_start(threads, &barrier, &total, &server, "t-pace", 4500 * USEC_PER_MSEC, false);
        n = hammers_join(threads, &barrier, at);
        ck_assert_uint_eq(n, 40);
        for (unsigned i = 0; i < n; i++) {
                unsigned in_window = 0;

                for (unsigned j = i; j < n && at[j] < at[i] + 1000 + SLACK; j++)
                        in_window++;
                ck_assert_msg(in_window <= 20, "%u granted in the %u ms from grant %u", in_window, 1000 + SLACK, i);
        }
        ck_assert_int_ge(at[20] - at[0], 1000 + SLACK);
        ck_assert_int_le(at[20] - at[19], 1000 + SLACK + SLOT(1000) + 500);
        for (unsigned i = 0; i < HAMMERS; i++)
                ck_assert_uint_le(hammers[i].max_wait_ms, 1000 + SLACK + SLOT(1000));
        /* The calls are counted in slots, never more than the window's. */
        res = PQexec(conn, "SELECT count(*) <= 637, sum(n) FROM fleet_budget_calls WHERE tenant = 't-pace' AND span = 'minute'");
        ck_assert_str_eq(PQgetvalue(res, 0, 0), "t");
        ck_assert_str_eq(PQgetvalue(res, 0, 1), "20");
        PQclear(res);
}
END_TEST

START_TEST(test_hour_cap) {
        FleetBudgetTake t;

        /* Plenty per minute, 5 an hour: 5, then the wait for the hour's places to come back. */
        caps_ok(conn, "t-hour", 100, 5, FLEETBUDGET_MINUTE_MS, FLEETBUDGET_HOUR_MS);
        ck_assert_uint_eq(take_all(conn, "t-hour", 0, &t), 5);
        ck_assert_int_le(t.wait_ms, FLEETBUDGET_HOUR_MS + SLACK + SLOT(FLEETBUDGET_HOUR_MS));
        ck_assert_int_ge(t.wait_ms, FLEETBUDGET_HOUR_MS + SLACK - 5000);
        ck_assert_uint_eq(status_of(conn, "t-hour").minute_left, 95);
        ck_assert_uint_eq(status_of(conn, "t-hour").hour_left, 0);
}
END_TEST

START_TEST(test_background_keeps_a_reserve) {
        FleetBudgetTake t;

        /* 10 a minute, reserve 30 %: background work stops with 3 calls left, which interactive
         * calls (and logins) still get. */
        caps_ok(conn, "t-reserve", 10, 100, DAY, DAY);
        ck_assert_uint_eq(take_all(conn, "t-reserve", 0.3, &t), 7);
        ck_assert_int_gt(t.wait_ms, 0);
        ck_assert_int_le(t.wait_ms, DAY + SLACK + SLOT(DAY));
        ck_assert_uint_eq(take_all(conn, "t-reserve", 0, NULL), 3);

        /* The reserve is kept in the hour window too: 5 % of a minute's 100 is 5 of the hour's 10. */
        caps_ok(conn, "t-reserve-hour", 100, 10, DAY, DAY);
        ck_assert_uint_eq(take_all(conn, "t-reserve-hour", 0.05, NULL), 5);
        ck_assert_uint_eq(take_all(conn, "t-reserve-hour", 0, NULL), 5);
}
END_TEST

START_TEST(test_observe_lowers_never_raises) {
        FleetBudgetStatus s;

        caps_ok(conn, "t-observe", 20, 100, DAY, DAY);
        ck_assert_int_eq(fleetbudget_observe(conn, "t-observe", 5, -1, err, sizeof(err)), 0);
        s = status_of(conn, "t-observe");
        ck_assert_uint_eq(s.minute_left, 5);
        ck_assert_uint_eq(s.hour_left, 100);
        ck_assert_int_eq(fleetbudget_observe(conn, "t-observe", 50, 50, err, sizeof(err)), 0);
        s = status_of(conn, "t-observe");
        ck_assert_uint_eq(s.minute_left, 5);
        ck_assert_uint_eq(s.hour_left, 50);
        ck_assert_int_eq(fleetbudget_observe(conn, "t-observe", -1, -1, err, sizeof(err)), 0);
        s = status_of(conn, "t-observe");
        ck_assert_uint_eq(s.minute_left, 5);
        ck_assert_uint_eq(s.hour_left, 50);
        ck_assert_uint_eq(take_all(conn, "t-observe", 0, NULL), 5);
        ck_assert_int_eq(fleetbudget_observe(conn, "t-observe", 0, 0, err, sizeof(err)), 0);
        s = status_of(conn, "t-observe");
        ck_assert_uint_eq(s.minute_left, 0);
        ck_assert_uint_eq(s.hour_left, 0);
        ck_assert_int_eq(fleetbudget_observe(conn, "t-observe", 20, 100, err, sizeof(err)), 0);
        ck_assert_uint_eq(take_all(conn, "t-observe", 0, NULL), 0);
}
END_TEST

START_TEST(test_a_429_closes_the_budget_for_every_connection) {
        PGconn *others[2] = { pg_server_connect(&server), pg_server_connect(&server) };
        FleetBudgetStatus s;
        FleetBudgetTake t;
        int64_t until = 0, until2 = 0;
        usec_t give_up;

        caps_ok(conn, "t-429", 20, 100, DAY, DAY);
        ck_assert_int_eq(fleetbudget_block(conn, "t-429", 700, &until, err, sizeof(err)), 0);
        s = status_of(others[0], "t-429");
        ck_assert_int_eq(s.blocked_until_ms, until);
        ck_assert_int_gt(s.wait_ms, 0);
        ck_assert_int_le(s.wait_ms, 700);
        /* A shorter Retry-After does not shorten it. */
        ck_assert_int_eq(fleetbudget_block(others[1], "t-429", 100, &until2, err, sizeof(err)), 0);
        ck_assert_int_eq(until2, until);

        /* Every connection is refused, with the block's wait, and spends nothing. */
        ck_assert_int_eq(fleetbudget_take(conn, "t-429", &t, err, sizeof(err)), -EAGAIN);
        ck_assert_int_le(t.wait_ms, 700);
        for (unsigned i = 0; i < 2; i++) {
                ck_assert_int_eq(fleetbudget_take(others[i], "t-429", &t, err, sizeof(err)), -EAGAIN);
                ck_assert_int_gt(t.wait_ms, 0);
                ck_assert_int_le(t.wait_ms, 700);
                ck_assert_int_eq(fleetbudget_take_background(others[i], "t-429", 0.1, &t, err, sizeof(err)), -EAGAIN);
        }

        /* Once the database's clock has passed the block, calls are taken again, from a full budget. */
        give_up = clock_now() + WAIT_SEC * USEC_PER_SEC;
        while ((s = status_of(others[1], "t-429")).blocked_until_ms != 0) {
                ck_assert_msg(clock_now() < give_up, "the block did not end within %d s", WAIT_SEC);
                clock_sleep((usec_t) s.wait_ms * USEC_PER_MSEC);
        }
        ck_assert_uint_eq(s.minute_left, 20);
        ck_assert_int_eq(s.wait_ms, 0);
        ck_assert_int_eq(fleetbudget_take(others[1], "t-429", &t, err, sizeof(err)), 0);
        ck_assert_int_ge(t.at_ms, until);
        ck_assert_uint_eq(take_all(others[0], "t-429", 0, NULL), 19);
        PQfinish(others[0]);
        PQfinish(others[1]);
}
END_TEST

START_TEST(test_new_caps_count_the_calls_taken) {
        FleetBudgetStatus s;
        PGresult *res;

        caps_ok(conn, "t-caps", 20, 100, DAY, DAY);
        ck_assert_int_eq(fleetbudget_take(conn, "t-caps", NULL, err, sizeof(err)), 0);
        ck_assert_int_eq(fleetbudget_take(conn, "t-caps", NULL, err, sizeof(err)), 0);
        s = status_of(conn, "t-caps");
        ck_assert_uint_eq(s.minute_left, 18);
        ck_assert_uint_eq(s.hour_left, 98);

        /* The two calls taken count against lower caps, and against raised ones again. */
        caps_ok(conn, "t-caps", 5, 50, DAY, DAY);
        s = status_of(conn, "t-caps");
        ck_assert_uint_eq(s.caps.per_minute, 5);
        ck_assert_uint_eq(s.caps.per_hour, 50);
        ck_assert_uint_eq(s.minute_left, 3);
        ck_assert_uint_eq(s.hour_left, 48);
        caps_ok(conn, "t-caps", 20, 100, DAY, FLEETBUDGET_HOUR_MS);
        s = status_of(conn, "t-caps");
        ck_assert_uint_eq(s.caps.per_minute, 20);
        ck_assert_uint_eq(s.caps.hour_ms, FLEETBUDGET_HOUR_MS);
        ck_assert_uint_eq(s.minute_left, 18);
        ck_assert_uint_eq(s.hour_left, 98);
        /* Counted in the table, whoever reads it. */
        res = PQexec(conn, "SELECT string_agg(span || '=' || n, ',' ORDER BY span) FROM"
                           " (SELECT span, sum(n) AS n FROM fleet_budget_calls WHERE tenant = 't-caps' GROUP BY span) c");
        ck_assert_str_eq(PQgetvalue(res, 0, 0), "hour=2,minute=2");
        PQclear(res);
        ck_assert_uint_eq(take_all(conn, "t-caps", 0, NULL), 18);
}
END_TEST

/* ---- a server of the test's own, restarted while three connections hammer it ---- */

static PgServer own;

static void own_setup(void) {
        char reason[PG_REASON_MAX];

        ck_assert_msg(pg_server_init(&own, reason, sizeof(reason)) == 0, "%s", reason);
}

static void own_teardown(void) {
        pg_server_destroy(&own);
}

START_TEST(test_postgres_restart_mid_run) {
        static int64_t at[GRANTS_MAX * HAMMERS];
        char reason[PG_REASON_MAX];
        pthread_t threads[HAMMERS];
        pthread_barrier_t barrier;
        atomic_uint total;
        FleetBudgetStatus s;
        FleetBudgetTake t;
        PGconn *c1, *c2;
        unsigned n, lost = 0;
        usec_t give_up;
        int r;

        c1 = pg_server_connect(&own);
        ck_assert_int_eq(fleetbudget_migrate(c1, NULL, err, sizeof(err)), 0);
        /* 60 calls in windows of a day, so none comes back during the test. */
        caps_ok(c1, "t-restart", 60, 1000, DAY, DAY);

        /* Three hammers, reconnecting after each loss; the server crashes once they are under way. */
        hammers_start(threads, &barrier, &total, &own, "t-restart", 8000 * USEC_PER_MSEC, true);
        give_up = clock_now() + WAIT_SEC * USEC_PER_SEC;
        while (atomic_load(&total) < 10) {
                ck_assert_msg(clock_now() < give_up, "the hammers took nothing");
                clock_sleep(USEC_PER_MSEC);
        }
        ck_assert_msg(pg_server_restart(&own, PG_STOP_IMMEDIATE, reason, sizeof(reason)) == 0, "%s", reason);
        n = hammers_join(threads, &barrier, at);
        for (unsigned i = 0; i < HAMMERS; i++)
                lost += hammers[i].enotconn;

        /* The old connection reports the loss, without harm. */
        r = fleetbudget_take(c1, "t-restart", &t, err, sizeof(err));
        ck_assert_msg(r == -ENOTCONN, "take on a connection the restart broke: %s (%s)", strerror(-r), err);
        ck_assert_int_eq(fleetbudget_status(c1, "t-restart", &s, err, sizeof(err)), -ENOTCONN);
        ck_assert_int_eq(fleetbudget_block(c1, "t-restart", 1000, NULL, err, sizeof(err)), -ENOTCONN);
        ck_assert_int_eq(fleetbudget_observe(c1, "t-restart", 1, 1, err, sizeof(err)), -ENOTCONN);
        PQfinish(c1);

        /* Every committed grant survived: the hammers saw all of them but those whose answer the
         * crash cut off, and the whole cap was spent, no more. */
        c2 = pg_server_connect(&own);
        s = status_of(c2, "t-restart");
        ck_assert_uint_gt(lost, 0);
        ck_assert_uint_eq(s.minute_left, 0);
        ck_assert_msg(n <= 60 && n + lost >= 60, "%u granted, %u answers lost", n, lost);
        ck_assert_uint_eq(s.hour_left, 1000 - 60);

        /* A block survives a crash too; while the server is down every call is -ENOTCONN. */
        caps_ok(c2, "t-restart", 60, 1000, DAY, DAY); /* unchanged: still empty */
        ck_assert_uint_eq(status_of(c2, "t-restart").minute_left, 0);
        caps_ok(c2, "t-restart-block", 20, 100, DAY, DAY);
        ck_assert_int_eq(fleetbudget_block(c2, "t-restart-block", 60000, NULL, err, sizeof(err)), 0);
        ck_assert_int_eq(pg_server_stop(&own, PG_STOP_IMMEDIATE), 0);
        ck_assert_int_eq(fleetbudget_take(c2, "t-restart-block", &t, err, sizeof(err)), -ENOTCONN);
        PQfinish(c2);
        ck_assert_msg(pg_server_start(&own, reason, sizeof(reason)) == 0, "%s", reason);
        c2 = pg_server_connect(&own);
        ck_assert_int_eq(fleetbudget_take(c2, "t-restart-block", &t, err, sizeof(err)), -EAGAIN);
        ck_assert_int_gt(t.wait_ms, 50000);
        ck_assert_uint_eq(status_of(c2, "t-restart-block").minute_left, 20);
        PQfinish(c2);
}
END_TEST

int main(void) {
        char reason[PG_REASON_MAX];
        Suite *s = suite_create("budget");
        TCase *tc = tcase_create("budget"), *tr = tcase_create("restart");
        SRunner *sr;
        int failed;

        /* One server for the "budget" case, started here so that one that cannot run is a SKIP. */
        if (pg_server_init(&server, reason, sizeof(reason)) < 0) {
                printf("SKIP: PostgreSQL cannot run here: %s\n", reason);
                pg_server_destroy(&server);
                return 77; /* Automake: SKIP */
        }
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_schema_and_arguments);
        tcase_add_test(tc, test_three_connections_never_exceed_the_cap);
        tcase_add_test(tc, test_hour_cap);
        tcase_add_test(tc, test_background_keeps_a_reserve);
        tcase_add_test(tc, test_observe_lowers_never_raises);
        tcase_add_test(tc, test_a_429_closes_the_budget_for_every_connection);
        tcase_add_test(tc, test_new_caps_count_the_calls_taken);
        suite_add_tcase(s, tc);
        tcase_add_checked_fixture(tr, own_setup, own_teardown);
        tcase_add_test(tr, test_postgres_restart_mid_run);
        suite_add_tcase(s, tr);

        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        pg_server_destroy(&server);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
