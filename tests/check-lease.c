/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the fleet's publish lease (lease.c) against a real PostgreSQL started by
 * tests/pg-harness.c: terms, expiry and take-over, the fence, the wait for the previous
 * holder's open call, races for the lane, and a server restart between calls. Every expiry is
 * the database's own (short leases, probed with lease_status()), never a clock of the test's.
 * Exits 77 (SKIP), saying why, where PostgreSQL cannot run.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "harness.h"
#include "lease.h"
#include "pg-harness.h"

static PgServer server; /* shared by the tests of the "lease" case; each test has its own tenant */
static PGconn *conn;
static char err[LEASE_ERROR_MAX];

#define LONG_LEASE 60000
/* A lease meant to lapse during the test, yet long enough that a loaded machine's stall
 * between two calls does not end it early. */
#define SHORT_LEASE 1000
#define EXPIRY_WAIT_SEC 10

static void setup(void) {
        int version = 0;

        conn = pg_server_connect(&server);
        ck_assert_msg(lease_migrate(conn, &version, err, sizeof(err)) == 0, "migrate: %s", err);
        ck_assert_int_eq(version, LEASE_SCHEMA_VERSION);
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

static LeaseStatus status_of(PGconn *c, const char *tenant) {
        LeaseStatus s;

        ck_assert_msg(lease_status(c, tenant, &s, err, sizeof(err)) == 0, "status: %s", err);
        return s;
}

static LeaseGrant acquire_ok(PGconn *c, const char *tenant, const char *node, unsigned lease_ms, unsigned settle_ms) {
        LeaseGrant g;
        int r = lease_acquire(c, tenant, node, lease_ms, settle_ms, &g, err, sizeof(err));

        ck_assert_msg(r == 0, "%s acquires %s: %s (%s)", node, tenant, strerror(-r), err);
        return g;
}

/* Probe until the database says the tenant's lease has expired. */
static void wait_expired(PGconn *c, const char *tenant) {
        usec_t deadline = clock_now() + EXPIRY_WAIT_SEC * USEC_PER_SEC;

        while (status_of(c, tenant).held) {
                ck_assert_msg(clock_now() < deadline, "the lease of %s did not expire within %d s", tenant,
                              EXPIRY_WAIT_SEC);
                clock_sleep(5 * USEC_PER_MSEC);
        }
}

START_TEST(test_migration_is_versioned) {
        PGconn *fresh;
        char conninfo[320], newer[128];
        LeaseGrant g;
        int version = 0;
        PGresult *res;

        /* A database without the fleet schema: refused with -EPROTO, then migrated. */
        sql(conn, "DROP DATABASE IF EXISTS lease_fresh");
        sql(conn, "CREATE DATABASE lease_fresh");
        snprintf(conninfo, sizeof(conninfo), "%s dbname=lease_fresh", server.conninfo);
        fresh = PQconnectdb(conninfo);
        ck_assert_msg(PQstatus(fresh) == CONNECTION_OK, "%s", PQerrorMessage(fresh));
        ck_assert_int_eq(lease_acquire(fresh, "t", "a", LONG_LEASE, 0, &g, err, sizeof(err)), -EPROTO);
        ck_assert_int_eq(lease_migrate(fresh, &version, err, sizeof(err)), 0);
        ck_assert_int_eq(version, LEASE_SCHEMA_VERSION);
        ck_assert_int_eq(lease_migrate(fresh, &version, err, sizeof(err)), 0); /* again: nothing to do */
        res = PQexec(fresh, "SELECT string_agg(version::text, ',' ORDER BY version) FROM fleet_schema_version");
        /* the lane, the rate budget, the nodes, the budget's sliding windows (fleetdb.c) */
        ck_assert_str_eq(PQgetvalue(res, 0, 0), "1,2,3,4");
        PQclear(res);
        ck_assert_int_eq(acquire_ok(fresh, "t", "a", LONG_LEASE, 0).term, 1);

        /* A database a newer visierd migrated: refused, untouched. */
        snprintf(newer, sizeof(newer), "INSERT INTO fleet_schema_version (version) VALUES (%d)", LEASE_SCHEMA_VERSION + 1);
        sql(fresh, newer);
        ck_assert_int_eq(lease_migrate(fresh, &version, err, sizeof(err)), -EPROTO);
        snprintf(newer, sizeof(newer), "version %d", LEASE_SCHEMA_VERSION + 1);
        ck_assert_msg(strstr(err, newer), "%s", err);
        ck_assert_int_eq(PQtransactionStatus(fresh), PQTRANS_IDLE);
        PQfinish(fresh);
        sql(conn, "DROP DATABASE lease_fresh");
}
END_TEST

START_TEST(test_acquire_renew_expire_steal) {
        const char *t = "t-steal";
        LeaseStatus s;
        LeaseGrant g;
        int64_t exp1 = 0, exp2 = 0;

        s = status_of(conn, t);
        ck_assert_int_eq(s.term, 0);
        ck_assert_str_eq(s.holder, "");
        ck_assert(!s.held);
        ck_assert_int_gt(s.now_ms, 0);

        g = acquire_ok(conn, t, "a", LONG_LEASE, 1000);
        ck_assert_int_eq(g.term, 1);
        ck_assert_int_eq(g.wait_ms, 0); /* nobody sent before: no wait, whatever the settle margin */
        s = status_of(conn, t);
        ck_assert_str_eq(s.holder, "a");
        ck_assert_int_eq(s.term, 1);
        ck_assert(s.held);
        ck_assert_int_ge(s.expires_at_ms, s.now_ms + LONG_LEASE - 1000);

        /* Held: nobody else gets it. */
        ck_assert_int_eq(lease_acquire(conn, t, "b", LONG_LEASE, 0, &g, err, sizeof(err)), -EBUSY);
        ck_assert_int_eq(status_of(conn, t).term, 1);

        /* Renewal needs the holder and its term. */
        ck_assert_int_eq(lease_renew(conn, t, "a", 1, LONG_LEASE, &exp1, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_renew(conn, t, "a", 1, LONG_LEASE, &exp2, err, sizeof(err)), 0);
        ck_assert_int_ge(exp2, exp1);
        ck_assert_int_eq(lease_renew(conn, t, "a", 2, LONG_LEASE, NULL, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(lease_renew(conn, t, "b", 1, LONG_LEASE, NULL, err, sizeof(err)), -ESTALE);

        /* Expired: even the holder cannot renew or fence under its term, though nobody took it. */
        ck_assert_int_eq(lease_renew(conn, t, "a", 1, 100, NULL, err, sizeof(err)), 0);
        wait_expired(conn, t);
        ck_assert_str_eq(status_of(conn, t).holder, "a");
        ck_assert_int_eq(lease_renew(conn, t, "a", 1, LONG_LEASE, NULL, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 1, 1000, NULL, err, sizeof(err)), -ESTALE);

        /* Taken over: a new term; every call under the old one is refused. */
        g = acquire_ok(conn, t, "b", LONG_LEASE, 0);
        ck_assert_int_eq(g.term, 2);
        ck_assert_int_eq(lease_renew(conn, t, "a", 1, LONG_LEASE, NULL, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 1, 1000, NULL, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(lease_call_end(conn, t, "a", 1, true, 0, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(lease_release(conn, t, "a", 1, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(lease_renew(conn, t, "b", 2, LONG_LEASE, NULL, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_fence_call(conn, t, "b", 2, 1000, NULL, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_call_end(conn, t, "b", 2, true, 0, err, sizeof(err)), 0);

        /* Released: free for anyone, the term goes on. */
        ck_assert_int_eq(lease_release(conn, t, "b", 2, err, sizeof(err)), 0);
        s = status_of(conn, t);
        ck_assert_str_eq(s.holder, "");
        ck_assert_int_eq(s.term, 2);
        ck_assert(!s.held);
        ck_assert_int_eq(lease_release(conn, t, "b", 2, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(lease_fence_call(conn, t, "b", 2, 1000, NULL, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(acquire_ok(conn, t, "a", LONG_LEASE, 0).term, 3);

        /* The holder taking it again (a restarted node) gets a new term; its old one is fenced. */
        ck_assert_int_eq(acquire_ok(conn, t, "a", LONG_LEASE, 0).term, 4);
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 3, 1000, NULL, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 4, 1000, NULL, err, sizeof(err)), 0);

        /* Bad arguments. */
        ck_assert_int_eq(lease_acquire(conn, "", "a", LONG_LEASE, 0, &g, err, sizeof(err)), -EINVAL);
        ck_assert_int_eq(lease_acquire(conn, t, "a", 0, 0, &g, err, sizeof(err)), -EINVAL);
        ck_assert_int_eq(lease_acquire(conn, t, "a", LEASE_MS_MAX + 1, 0, &g, err, sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_new_holder_waits_out_the_open_call) {
        const char *t = "t-wait", *u = "t-wait-short";
        LeaseStatus s;
        LeaseGrant g;
        int64_t deadline, wait = 0;
        usec_t give_up;
        int r;

        /* a's call may run 3 s; its lease lapses meanwhile (a pause, a partition). */
        acquire_ok(conn, t, "a", SHORT_LEASE, 0);
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 1, 3000, NULL, err, sizeof(err)), 0);
        s = status_of(conn, t);
        deadline = s.open_call_deadline_ms;
        ck_assert_int_ge(deadline, s.now_ms + 3000 - 1000);
        wait_expired(conn, t);

        /* b may not send before that call's deadline plus the settle margin. */
        g = acquire_ok(conn, t, "b", SHORT_LEASE, 1000);
        ck_assert_int_eq(g.term, 2);
        ck_assert_int_eq(g.wait_until_ms, deadline + 1000);
        ck_assert_int_gt(g.wait_ms, 0);
        ck_assert_int_eq(lease_fence_call(conn, t, "b", 2, 1000, &wait, err, sizeof(err)), -EAGAIN);
        ck_assert_int_gt(wait, 0);
        ck_assert_int_le(wait, g.wait_ms);

        /* b dies before its first write: c inherits the wait, even with no settle margin of its own. */
        wait_expired(conn, t);
        g = acquire_ok(conn, t, "c", LONG_LEASE, 0);
        ck_assert_int_eq(g.term, 3);
        ck_assert_int_ge(g.wait_until_ms, deadline + 1000);

        /* On a lane with short times: the fence refuses until the wait is over, then sends. */
        acquire_ok(conn, u, "a", SHORT_LEASE, 0);
        ck_assert_int_eq(lease_fence_call(conn, u, "a", 1, SHORT_LEASE + 500, NULL, err, sizeof(err)), 0);
        deadline = status_of(conn, u).open_call_deadline_ms;
        wait_expired(conn, u);
        g = acquire_ok(conn, u, "b", LONG_LEASE, 200);
        ck_assert_int_eq(g.wait_until_ms, deadline + 200);
        give_up = clock_now() + EXPIRY_WAIT_SEC * USEC_PER_SEC;
        while ((r = lease_fence_call(conn, u, "b", 2, 5000, &wait, err, sizeof(err))) == -EAGAIN) {
                ck_assert_msg(clock_now() < give_up, "the fence still refuses: %s", err);
                clock_sleep(5 * USEC_PER_MSEC);
        }
        ck_assert_msg(r == 0, "%s", err);
        /* b's call was fenced (in the database's time) no earlier than a's deadline + settle. */
        ck_assert_int_ge(status_of(conn, u).open_call_deadline_ms - 5000, deadline + 200);

        /* An answered call leaves nothing to wait for; a lost answer makes everyone wait settle. */
        ck_assert_int_eq(lease_call_end(conn, u, "b", 2, true, 0, err, sizeof(err)), 0);
        ck_assert_int_eq(status_of(conn, u).open_call_deadline_ms, 0);
        ck_assert_int_eq(lease_fence_call(conn, u, "b", 2, 5000, NULL, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_call_end(conn, u, "b", 2, false, 2000, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_fence_call(conn, u, "b", 2, 5000, &wait, err, sizeof(err)), -EAGAIN);
        ck_assert_int_gt(wait, 1000);
        ck_assert_int_le(wait, 2000);
        ck_assert_int_eq(lease_release(conn, u, "b", 2, err, sizeof(err)), 0);
        g = acquire_ok(conn, u, "c", LONG_LEASE, 0);
        ck_assert_int_gt(g.wait_ms, 1000);
}
END_TEST

typedef struct Taker {
        const PgServer *server;
        const char *tenant, *node;
        unsigned settle_ms;
        int r;
        LeaseGrant grant;
} Taker;

static void *take(void *arg) {
        Taker *tk = arg;
        PGconn *c = PQconnectdb(tk->server->conninfo);
        char e[LEASE_ERROR_MAX];

        tk->r = PQstatus(c) == CONNECTION_OK
                        ? lease_acquire(c, tk->tenant, tk->node, LONG_LEASE, tk->settle_ms, &tk->grant, e, sizeof(e))
                        : -ENOTCONN;
        PQfinish(c);
        return NULL;
}

/* Is a backend other than ours waiting for a lock? */
static bool someone_waits_for_a_lock(PGconn *c) {
        PGresult *res = PQexec(c, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                  " AND pid <> pg_backend_pid()");
        bool waits = PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "0") != 0;

        PQclear(res);
        return waits;
}

START_TEST(test_fence_in_the_callers_transaction) {
        const char *t = "t-tx";
        PGconn *other = pg_server_connect(&server);
        Taker tk = { .server = &server, .tenant = t, .node = "b", .settle_ms = 500 };
        pthread_t thread;
        LeaseStatus s;
        usec_t give_up;
        int64_t deadline;

        sql(conn, "CREATE TEMPORARY TABLE running (job bigint)");
        acquire_ok(conn, t, "a", LONG_LEASE, 0);

        /* Rolled back with the jobs it would have marked: no open call recorded. */
        sql(conn, "BEGIN");
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 1, 4000, NULL, err, sizeof(err)), 0);
        sql(conn, "INSERT INTO running VALUES (1)");
        ck_assert_int_eq(PQtransactionStatus(conn), PQTRANS_INTRANS);
        ck_assert_int_eq(status_of(other, t).open_call_deadline_ms, 0); /* not committed yet */
        sql(conn, "ROLLBACK");
        ck_assert_int_eq(status_of(conn, t).open_call_deadline_ms, 0);

        /* Committed with them: recorded. */
        sql(conn, "BEGIN");
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 1, 4000, NULL, err, sizeof(err)), 0);
        sql(conn, "INSERT INTO running VALUES (1)");
        sql(conn, "COMMIT");
        ck_assert_int_gt(status_of(other, t).open_call_deadline_ms, 0);
        ck_assert_int_eq(lease_call_end(conn, t, "a", 1, true, 0, err, sizeof(err)), 0);

        /* A fence whose transaction commits only after the lease lapsed is still seen by the
         * node taking over: the take-over waits for the row and then for the call. */
        ck_assert_int_eq(lease_renew(conn, t, "a", 1, SHORT_LEASE, NULL, err, sizeof(err)), 0);
        sql(conn, "BEGIN");
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 1, 4000, NULL, err, sizeof(err)), 0);
        wait_expired(other, t);
        ck_assert_int_eq(pthread_create(&thread, NULL, take, &tk), 0);
        give_up = clock_now() + EXPIRY_WAIT_SEC * USEC_PER_SEC;
        while (!someone_waits_for_a_lock(other)) {
                ck_assert_msg(clock_now() < give_up, "the take-over never waited for the fenced row");
                clock_sleep(5 * USEC_PER_MSEC);
        }
        sql(conn, "INSERT INTO running VALUES (2)");
        sql(conn, "COMMIT");
        ck_assert_int_eq(pthread_join(thread, NULL), 0);
        ck_assert_int_eq(tk.r, 0);
        ck_assert_int_eq(tk.grant.term, 2);
        s = status_of(other, t);
        deadline = s.open_call_deadline_ms;
        ck_assert_int_gt(deadline, 0);
        ck_assert_int_eq(tk.grant.wait_until_ms, deadline + 500);

        /* A stale fence inside a transaction: refused, the transaction left for the caller. */
        sql(conn, "BEGIN");
        ck_assert_int_eq(lease_fence_call(conn, t, "a", 1, 4000, NULL, err, sizeof(err)), -ESTALE);
        ck_assert_int_eq(PQtransactionStatus(conn), PQTRANS_INTRANS);
        sql(conn, "ROLLBACK");
        /* A transaction that already failed is refused, not used. */
        sql(conn, "BEGIN");
        PQclear(PQexec(conn, "SELECT nonsense"));
        ck_assert_int_eq(lease_fence_call(conn, t, "b", 2, 4000, NULL, err, sizeof(err)), -EIO);
        sql(conn, "ROLLBACK");
        PQfinish(other);
}
END_TEST

/* The recordings' check: the term is current while nobody has acquired since (expired or
 * not), refused once someone has, and a take-over waits for a transaction holding the check. */
START_TEST(test_check_term_holds_off_a_take_over) {
        const char *t = "t-check";
        PGconn *other = pg_server_connect(&server);
        Taker tk = { .server = &server, .tenant = t, .node = "b", .settle_ms = 0 };
        pthread_t thread;
        usec_t give_up;

        sql(conn, "CREATE TEMPORARY TABLE outcomes (job bigint)");
        acquire_ok(conn, t, "a", SHORT_LEASE, 0);
        sql(conn, "BEGIN");
        ck_assert_int_eq(lease_check_term(conn, t, "a", 1, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_check_term(conn, t, "a", 2, err, sizeof(err)), -ESTALE);
        ck_assert_str_eq(err, "term 2 of t-check's lane is no longer a's");
        ck_assert_int_eq(PQtransactionStatus(conn), PQTRANS_INTRANS); /* left for the caller */
        sql(conn, "ROLLBACK");
        ck_assert_int_eq(lease_check_term(conn, t, "b", 1, err, sizeof(err)), -ESTALE);

        /* Expired, nobody took over: still a's term. */
        wait_expired(other, t);
        sql(conn, "BEGIN");
        ck_assert_int_eq(lease_check_term(conn, t, "a", 1, err, sizeof(err)), 0);
        /* A take-over now waits for this transaction, which commits under term 1. */
        ck_assert_int_eq(pthread_create(&thread, NULL, take, &tk), 0);
        give_up = clock_now() + EXPIRY_WAIT_SEC * USEC_PER_SEC;
        while (!someone_waits_for_a_lock(other)) {
                ck_assert_msg(clock_now() < give_up, "the take-over never waited for the checked row");
                clock_sleep(5 * USEC_PER_MSEC);
        }
        sql(conn, "INSERT INTO outcomes VALUES (1)");
        sql(conn, "COMMIT");
        ck_assert_int_eq(pthread_join(thread, NULL), 0);
        ck_assert_int_eq(tk.r, 0);
        ck_assert_int_eq(tk.grant.term, 2);

        /* Taken over: term 1 records nothing more, even in a transaction of its own. */
        sql(conn, "BEGIN");
        ck_assert_int_eq(lease_check_term(conn, t, "a", 1, err, sizeof(err)), -ESTALE);
        sql(conn, "ROLLBACK");
        ck_assert_int_eq(lease_check_term(other, t, "b", 2, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_check_term(conn, t, "a", 0, err, sizeof(err)), -ESTALE); /* never a held term */
        PQfinish(other);
}
END_TEST

#define RACERS 4
#define RACE_ROUNDS 200

typedef struct Racer {
        unsigned idx;
        pthread_barrier_t *barrier;
        int r[RACE_ROUNDS];
        int64_t term[RACE_ROUNDS];
        bool connected;
} Racer;

static void *race(void *arg) {
        Racer *rc = arg;
        PGconn *c = PQconnectdb(server.conninfo);
        char node[16], e[LEASE_ERROR_MAX];

        snprintf(node, sizeof(node), "racer-%u", rc->idx);
        rc->connected = PQstatus(c) == CONNECTION_OK;
        for (unsigned round = 0; round < RACE_ROUNDS; round++) {
                LeaseGrant g = {};

                pthread_barrier_wait(rc->barrier);
                rc->r[round] = rc->connected ? lease_acquire(c, "t-race", node, LONG_LEASE, 0, &g, e, sizeof(e))
                                             : -ENOTCONN;
                rc->term[round] = g.term;
                pthread_barrier_wait(rc->barrier);
                /* The winner leaves the lane released (even rounds) or with a lease that lapses at
                 * once (odd rounds): the next round races for a free lane or an expired one (whose
                 * holder may take it again). */
                if (rc->r[round] == 0 && (round % 2 == 0 ? lease_release(c, "t-race", node, g.term, e, sizeof(e))
                                                         : lease_renew(c, "t-race", node, g.term, 1, NULL, e, sizeof(e))) < 0)
                        rc->r[round] = -EIO;
        }
        PQfinish(c);
        return NULL;
}

START_TEST(test_racers_one_winner_per_term) {
        static Racer racers[RACERS];
        pthread_t threads[RACERS];
        pthread_barrier_t barrier;

        ck_assert_int_eq(pthread_barrier_init(&barrier, NULL, RACERS), 0);
        for (unsigned i = 0; i < RACERS; i++) {
                racers[i] = (Racer) { .idx = i, .barrier = &barrier };
                ck_assert_int_eq(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
        }
        for (unsigned i = 0; i < RACERS; i++)
                ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
        pthread_barrier_destroy(&barrier);

        for (unsigned i = 0; i < RACERS; i++)
                ck_assert_msg(racers[i].connected, "racer %u could not connect", i);
        for (unsigned round = 0; round < RACE_ROUNDS; round++) {
                unsigned winners = 0;

                for (unsigned i = 0; i < RACERS; i++) {
                        int r = racers[i].r[round];

                        ck_assert_msg(r == 0 || r == -EBUSY, "round %u, racer %u: %s", round, i, strerror(-r));
                        if (r == 0) {
                                winners++;
                                ck_assert_int_eq(racers[i].term[round], round + 1);
                        }
                }
                ck_assert_msg(winners == 1, "round %u had %u winners", round, winners);
        }
        ck_assert_int_eq(status_of(conn, "t-race").term, RACE_ROUNDS);
}
END_TEST

/* ---- a server of the test's own, restarted between calls ---- */

static PgServer own;

static void own_setup(void) {
        char reason[PG_REASON_MAX];

        ck_assert_msg(pg_server_init(&own, reason, sizeof(reason)) == 0, "%s", reason);
}

static void own_teardown(void) {
        pg_server_destroy(&own);
}

START_TEST(test_postgres_restart_between_calls) {
        char reason[PG_REASON_MAX];
        PGconn *c1, *c2, *c3;
        const char *t = "t-restart";
        LeaseStatus s;
        LeaseGrant g;
        int r;

        c1 = pg_server_connect(&own);
        ck_assert_int_eq(lease_migrate(c1, NULL, err, sizeof(err)), 0);
        ck_assert_int_eq(acquire_ok(c1, t, "a", LONG_LEASE, 0).term, 1);
        ck_assert_int_eq(lease_fence_call(c1, t, "a", 1, 30000, NULL, err, sizeof(err)), 0);

        /* As a crash: the old connection reports the loss on every call, without harm. */
        ck_assert_msg(pg_server_restart(&own, PG_STOP_IMMEDIATE, reason, sizeof(reason)) == 0, "%s", reason);
        err[0] = '\0';
        r = lease_renew(c1, t, "a", 1, LONG_LEASE, NULL, err, sizeof(err));
        ck_assert_msg(r == -ENOTCONN, "renew on a connection the restart broke: %s (%s)", strerror(-r), err);
        ck_assert_msg(err[0], "no message");
        ck_assert_int_eq(lease_fence_call(c1, t, "a", 1, 1000, NULL, err, sizeof(err)), -ENOTCONN);
        ck_assert_int_eq(lease_status(c1, t, &s, err, sizeof(err)), -ENOTCONN);
        PQfinish(c1);

        /* A fresh connection: the lease and its open call survived the crash. */
        c2 = pg_server_connect(&own);
        s = status_of(c2, t);
        ck_assert_str_eq(s.holder, "a");
        ck_assert_int_eq(s.term, 1);
        ck_assert(s.held);
        ck_assert_int_gt(s.open_call_deadline_ms, s.now_ms);
        ck_assert_int_eq(lease_renew(c2, t, "a", 1, LONG_LEASE, NULL, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_acquire(c2, t, "b", LONG_LEASE, 0, &g, err, sizeof(err)), -EBUSY);
        ck_assert_int_eq(lease_call_end(c2, t, "a", 1, true, 0, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_release(c2, t, "a", 1, err, sizeof(err)), 0);

        /* While the server is down, and after a clean restart: terms go on from where they were. */
        ck_assert_int_eq(pg_server_stop(&own, PG_STOP_FAST), 0);
        ck_assert_int_eq(lease_acquire(c2, t, "b", LONG_LEASE, 0, &g, err, sizeof(err)), -ENOTCONN);
        PQfinish(c2);
        ck_assert_msg(pg_server_start(&own, reason, sizeof(reason)) == 0, "%s", reason);
        c3 = pg_server_connect(&own);
        g = acquire_ok(c3, t, "b", LONG_LEASE, 0);
        ck_assert_int_eq(g.term, 2);

        /* A restart between the take-over and the first write: the fence works on a new connection. */
        ck_assert_msg(pg_server_restart(&own, PG_STOP_IMMEDIATE, reason, sizeof(reason)) == 0, "%s", reason);
        r = lease_fence_call(c3, t, "b", 2, 1000, NULL, err, sizeof(err));
        ck_assert_msg(r == -ENOTCONN, "fence on a connection the restart broke: %s (%s)", strerror(-r), err);
        PQfinish(c3);
        c3 = pg_server_connect(&own);
        ck_assert_int_eq(lease_fence_call(c3, t, "b", 2, 1000, NULL, err, sizeof(err)), 0);
        ck_assert_int_eq(lease_release(c3, t, "b", 2, err, sizeof(err)), 0);
        ck_assert_int_eq(acquire_ok(c3, t, "c", LONG_LEASE, 0).term, 3);
        PQfinish(c3);
}
END_TEST

int main(void) {
        char reason[PG_REASON_MAX];
        Suite *s = suite_create("lease");
        TCase *tc = tcase_create("lease"), *tr = tcase_create("restart");
        SRunner *sr;
        int failed;

        /* One server for the "lease" case, started here so that one that cannot run is a SKIP. */
        if (pg_server_init(&server, reason, sizeof(reason)) < 0) {
                printf("SKIP: PostgreSQL cannot run here: %s\n", reason);
                pg_server_destroy(&server);
                return 77; /* Automake: SKIP */
        }
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_migration_is_versioned);
        tcase_add_test(tc, test_acquire_renew_expire_steal);
        tcase_add_test(tc, test_new_holder_waits_out_the_open_call);
        tcase_add_test(tc, test_fence_in_the_callers_transaction);
        tcase_add_test(tc, test_check_term_holds_off_a_take_over);
        tcase_add_test(tc, test_racers_one_winner_per_term);
        suite_add_tcase(s, tc);
        tcase_add_checked_fixture(tr, own_setup, own_teardown);
        tcase_add_test(tr, test_postgres_restart_between_calls);
        suite_add_tcase(s, tr);

        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        pg_server_destroy(&server);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
