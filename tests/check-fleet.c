/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the node's membership in the fleet (fleet.c) against a real PostgreSQL started
 * by tests/pg-harness.c: two and three Fleet objects on one server, one lane between them, the
 * holder's renewals, a take-over after the holder stops ticking (as if paused), with a higher
 * term and the settle margin's wait; the paused node learning it lost; the local expiry by the
 * node's own clock while the database is down, and the reconnect once it is back; heartbeats,
 * the status JSON's exact members and the metrics; the shared budget across two Fleets; and
 * threads using one Fleet at once (for ThreadSanitizer).
 *
 * Every expiry is the database's or the node's own rule, awaited by probing (ticks, lease_status)
 * until a deadline, never by a bare sleep. Exits 77 (SKIP), saying why, where PostgreSQL cannot run.
 */
#include <check.h>
#include <math.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "fleet.h"
#include "harness.h"
#include "lease.h"
#include "pg-harness.h"

static PgServer server; /* shared by the "fleet" case; each test has its own tenant */
static PGconn *conn;    /* the test's own view of the database */
static char err[FLEET_ERROR_MAX];

#define DAY 86400000U
/* A lease meant to lapse during a test, yet long enough that a loaded machine's stall between
 * two ticks does not end it early. */
#define LEASE_MS 1000
#define RENEW_MS 300
#define SETTLE_MS 400
#define PROBE_WAIT_SEC 10
#define PASSWORD "Pg-S3cret-never-shown"

static void setup(void) {
        conn = pg_server_connect(&server);
}

static void teardown(void) {
        PQfinish(conn);
        conn = NULL;
}

static Fleet *fleet_make_on(const PgServer *pg, const char *node, const char *tenant, unsigned lease_ms,
                            unsigned renew_ms, unsigned settle_ms) {
        _cleanup_(secret_freep) Secret *pw = secret_new(PASSWORD, strlen(PASSWORD));
        FleetParams p = {
                .conninfo = pg->conninfo,
                .password = pw, /* the harness's server trusts: unused, and never to be shown */
                .node = node,
                .tenant = tenant,
                .lease_ms = lease_ms,
                .renew_ms = renew_ms,
                .settle_ms = settle_ms,
                .hostname = "host-of-test",
        };
        Fleet *f = NULL;

        ck_assert_ptr_nonnull(pw);
        ck_assert_msg(fleet_new(&p, &f, err, sizeof(err)) == 0, "fleet_new %s: %s", node, err);
        return f;
}

static Fleet *fleet_make(const char *node, const char *tenant) {
        return fleet_make_on(&server, node, tenant, LEASE_MS, RENEW_MS, SETTLE_MS);
}

static FleetLane tick_ok(Fleet *f) {
        FleetLane l;
        int r = fleet_tick(f, &l, err, sizeof(err));

        ck_assert_msg(r == 0, "tick: %s (%s)", strerror(-r), err);
        return l;
}

static LeaseStatus status_of(const char *tenant) {
        LeaseStatus s;

        ck_assert_msg(lease_status(conn, tenant, &s, err, sizeof(err)) == 0, "status: %s", err);
        return s;
}

static char *metrics_of(Fleet *f) {
        char *buf = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&buf, &len);

        ck_assert_ptr_nonnull(out);
        fleet_metrics_render(f, out);
        ck_assert_int_eq(fclose(out), 0);
        return buf;
}

static void assert_no_password(const char *text) {
        ck_assert_msg(!strstr(text, PASSWORD) && !strstr(text, "S3cret"), "the password is shown: %s", text);
}

static char *status_text(Fleet *f) {
        json_t *j = fleet_status_json(f);
        char *s;

        ck_assert_ptr_nonnull(j);
        s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        ck_assert_ptr_nonnull(s);
        assert_no_password(s);
        return s;
}

/* The object's members are exactly these (comma-separated, sorted). */
static void assert_members(const json_t *o, const char *expect) {
        const char *key;
        json_t *v;
        char have[512] = "";

        ck_assert(json_is_object(o));
        /* jansson iterates in insertion order; compare as sorted sets. */
        {
                const char *keys[32];
                size_t n = 0;

                json_object_foreach((json_t *) o, key, v) {
                        ck_assert_uint_lt(n, ELEMENTSOF(keys));
                        keys[n++] = key;
                }
                for (size_t i = 0; i < n; i++)
                        for (size_t k = i + 1; k < n; k++)
                                if (strcmp(keys[k], keys[i]) < 0) {
                                        const char *t = keys[i];
                                        keys[i] = keys[k];
                                        keys[k] = t;
                                }
                for (size_t i = 0, len = 0; i < n; i++)
                        len += (size_t) snprintf(have + len, sizeof(have) - len, "%s%s", i ? "," : "", keys[i]);
        }
        ck_assert_str_eq(have, expect);
}

/* Exactly one of the fleets holds the lane, all agree who and under which term; its index. */
static size_t exactly_one_holder(Fleet **f, size_t n, const char *const *names, int64_t *ret_term) {
        size_t holder = n;
        FleetLane l[4];

        ck_assert_uint_le(n, ELEMENTSOF(l));
        for (size_t i = 0; i < n; i++) {
                l[i] = tick_ok(f[i]);
                if (l[i].held) {
                        ck_assert_msg(holder == n, "%s and %s both hold the lane", names[holder], names[i]);
                        holder = i;
                }
        }
        ck_assert_msg(holder < n, "nobody holds the lane");
        for (size_t i = 0; i < n; i++) {
                if (i < holder)
                        continue; /* read before the holder's grant or renewal: checked next round */
                ck_assert_str_eq(l[i].holder, names[holder]);
                ck_assert_int_eq(l[i].term, l[holder].term);
        }
        *ret_term = l[holder].term;
        return holder;
}

START_TEST(test_one_holder_renews_across_ticks) {
        static const char *const names[] = { "node-a", "node-b", "node-c" };
        const char *t = "t-one";
        Fleet *f[3];
        int64_t term, term2;
        size_t holder, h;
        usec_t end;
        unsigned rounds = 0;

        for (size_t i = 0; i < 3; i++)
                f[i] = fleet_make_on(&server, names[i], t, 1500, 400, SETTLE_MS);
        holder = exactly_one_holder(f, 3, names, &term);
        ck_assert_int_eq(term, 1);
        ck_assert_str_eq(status_of(t).holder, names[holder]);

        /* Over more than two leases, ticking every 100 ms: the holder keeps it, same term. */
        end = clock_now() + 3500 * USEC_PER_MSEC;
        while (clock_now() < end) {
                int64_t u;

                h = exactly_one_holder(f, 3, names, &term2);
                ck_assert_uint_eq(h, holder);
                ck_assert_int_eq(term2, term);
                ck_assert(fleet_lane_usable(f[holder], clock_now(), &u));
                ck_assert_int_eq(u, term);
                for (size_t i = 0; i < 3; i++)
                        if (i != holder)
                                ck_assert(!fleet_lane_usable(f[i], clock_now(), NULL));
                rounds++;
                clock_sleep(100 * USEC_PER_MSEC); /* the timer's pace, not a wait for the database */
        }
        ck_assert_uint_ge(rounds, 10);
        ck_assert_int_eq(status_of(t).term, 1);
        ck_assert(status_of(t).held);

        /* The holder leaves: the next tick of another takes the lane, as term 2, at once. */
        ck_assert_int_eq(fleet_release(f[holder], err, sizeof(err)), 0);
        ck_assert(!fleet_lane_usable(f[holder], clock_now(), NULL));
        ck_assert(!status_of(t).held);
        h = (holder + 1) % 3;
        ck_assert(tick_ok(f[h]).held);
        ck_assert_int_eq(status_of(t).term, 2);
        ck_assert_str_eq(status_of(t).holder, names[h]);
        for (size_t i = 0; i < 3; i++) {
                if (i != holder)
                        (void) fleet_release(f[i], err, sizeof(err));
                fleet_free(f[i]);
        }
}
END_TEST

START_TEST(test_takeover_after_pause) {
        const char *t = "t-pause";
        Fleet *a = fleet_make("pause-a", t), *b = fleet_make("pause-b", t);
        FleetLane la, lb, old;
        LeaseStatus s;
        usec_t deadline, at;
        int64_t term, u;

        la = tick_ok(a);
        ck_assert(la.held);
        term = la.term;
        ck_assert(!tick_ok(b).held);
        ck_assert_str_eq(tick_ok(b).holder, "pause-a");
        ck_assert(fleet_lane_usable(a, clock_now(), &u));
        ck_assert_int_eq(u, term);

        /* The holder's publisher fences a call that may run 1.5 s, past the lease, and then the node
         * stops ticking, as if paused. */
        ck_assert_msg(lease_fence_call(conn, t, "pause-a", term, 1500, NULL, err, sizeof(err)) == 0, "fence: %s", err);
        old = tick_ok(a);
        ck_assert(old.held);

        /* The other node takes it once the database says the lease expired: a higher term, and
         * a wait covering the open call and the settle margin. */
        deadline = clock_now() + PROBE_WAIT_SEC * USEC_PER_SEC;
        do {
                ck_assert_msg(clock_now() < deadline, "pause-b did not take the lane within %d s", PROBE_WAIT_SEC);
                lb = tick_ok(b);
        } while (!lb.held);
        ck_assert_int_eq(lb.term, term + 1);
        ck_assert_str_eq(lb.holder, "pause-b");
        s = status_of(t);
        at = clock_now();
        ck_assert_int_eq(s.term, term + 1);
        ck_assert_int_ge(s.wait_until_ms, s.open_call_deadline_ms + SETTLE_MS);
        if (s.wait_until_ms > s.now_ms)
                /* The node's own end of the wait is not before the database's. */
                ck_assert_uint_ge(lb.send_after + 2 * USEC_PER_MSEC, at + (usec_t) (s.wait_until_ms - s.now_ms) * USEC_PER_MSEC);
        ck_assert_uint_gt(lb.send_after, lb.confirmed_at);
        ck_assert(!fleet_lane_usable(b, lb.send_after - 1, NULL));
        /* Usable only from send_after: probe with its ticks until it is. */
        do {
                ck_assert_msg(clock_now() < deadline, "pause-b's wait did not end");
                lb = tick_ok(b);
                at = clock_now();
        } while (!fleet_lane_usable(b, at, &u));
        ck_assert_uint_ge(at, lb.send_after);
        ck_assert_int_eq(u, term + 1);

        /* The paused node: its own clock already ended its belief... */
        ck_assert(!fleet_lane_usable(a, clock_now(), NULL));
        /* ... and even at a time its belief would still cover, once it has ticked it knows it lost
         * and never offers the old term again. */
        ck_assert(fleet_lane_usable(a, old.confirmed_at + USEC_PER_MSEC, NULL)); /* before it learnt */
        la = tick_ok(a);
        ck_assert(!la.held);
        ck_assert_uint_eq(la.lost, 1);
        ck_assert_int_eq(la.term, term + 1);
        ck_assert_str_eq(la.holder, "pause-b");
        ck_assert(!fleet_lane_usable(a, old.confirmed_at + USEC_PER_MSEC, NULL));
        ck_assert(!fleet_lane_usable(a, clock_now(), NULL));
        /* Nor does its old term fence anything. */
        ck_assert_int_eq(lease_fence_call(conn, t, "pause-a", term, 200, NULL, err, sizeof(err)), -ESTALE);
        ck_assert(tick_ok(b).held);
        ck_assert(!tick_ok(a).held);

        ck_assert_int_eq(fleet_release(b, err, sizeof(err)), 0);
        fleet_free(a);
        fleet_free(b);
}
END_TEST

/* Heartbeat rows, the status JSON's members and values, and the metrics. */
/* A number of seconds shown to the millisecond (a whole number of milliseconds). */
static void assert_whole_ms(json_t *v) {
        double ms = json_real_value(v) * 1000.0;

        ck_assert(json_is_real(v));
        ck_assert_msg(fabs(ms - round(ms)) < 1e-6, "%.17g s is not to the millisecond", json_real_value(v));
}

START_TEST(test_heartbeat_status_metrics) {
        const char *t = "t-status";
        Fleet *a = fleet_make("status-a", t), *b = fleet_make("status-b", t);
        FleetBudgetCaps caps = { 30, 200, DAY, DAY };
        PGresult *res;
        char started[64], seen[64];
        json_t *j, *lane, *nodes, *budget, *db;
        char *text, *m;

        tick_ok(a);
        tick_ok(b);

        /* One row per node, with its process, host and version. */
        res = PQexec(conn, "SELECT node, tenant, pid, hostname, version, started_at <= seen_at, started_at::text,"
                           " seen_at::text FROM fleet_nodes WHERE tenant = 't-status' ORDER BY node");
        ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        ck_assert_int_eq(PQntuples(res), 2);
        ck_assert_str_eq(PQgetvalue(res, 0, 0), "status-a");
        ck_assert_str_eq(PQgetvalue(res, 1, 0), "status-b");
        ck_assert_str_eq(PQgetvalue(res, 0, 1), t);
        ck_assert_int_eq(strtol(PQgetvalue(res, 0, 2), NULL, 10), getpid());
        ck_assert_str_eq(PQgetvalue(res, 0, 3), "host-of-test");
        ck_assert_str_eq(PQgetvalue(res, 0, 4), PACKAGE_VERSION);
        ck_assert_str_eq(PQgetvalue(res, 0, 5), "t");
        snprintf(started, sizeof(started), "%s", PQgetvalue(res, 0, 6));
        snprintf(seen, sizeof(seen), "%s", PQgetvalue(res, 0, 7));
        PQclear(res);
        /* A node long gone is not listed. */
        res = PQexec(conn, "INSERT INTO fleet_nodes (node, tenant, started_at, seen_at) VALUES ('status-gone', 't-status',"
                           " clock_timestamp() - interval '1 hour', clock_timestamp() - interval '1 hour')");
        ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);

        /* The next heartbeat moves seen_at on, and keeps started_at. */
        tick_ok(a);
        res = PQexec(conn, "SELECT started_at::text, seen_at::text FROM fleet_nodes WHERE node = 'status-a'");
        ck_assert_str_eq(PQgetvalue(res, 0, 0), started);
        ck_assert_str_ne(PQgetvalue(res, 0, 1), seen);
        PQclear(res);

        /* Before any budget: its members are null. */
        j = fleet_status_json(a);
        ck_assert_ptr_nonnull(j);
        assert_members(j, "budget,database,lane,node,nodes,tenant");
        ck_assert_str_eq(json_string_value(json_object_get(j, "node")), "status-a");
        ck_assert_str_eq(json_string_value(json_object_get(j, "tenant")), t);
        lane = json_object_get(j, "lane");
        assert_members(lane, "expires_in_seconds,held_by_this_node,holder,term");
        ck_assert_str_eq(json_string_value(json_object_get(lane, "holder")), "status-a");
        ck_assert_int_eq(json_integer_value(json_object_get(lane, "term")), 1);
        ck_assert(json_is_true(json_object_get(lane, "held_by_this_node")));
        ck_assert(json_is_real(json_object_get(lane, "expires_in_seconds")));
        ck_assert(json_real_value(json_object_get(lane, "expires_in_seconds")) > 0);
        ck_assert(json_real_value(json_object_get(lane, "expires_in_seconds")) <= LEASE_MS / 1000.0);
        nodes = json_object_get(j, "nodes");
        ck_assert_uint_eq(json_array_size(nodes), 2);
        for (size_t i = 0; i < 2; i++) {
                assert_members(json_array_get(nodes, i), "node,seen_seconds_ago");
                ck_assert(json_real_value(json_object_get(json_array_get(nodes, i), "seen_seconds_ago")) >= 0);
                ck_assert(json_real_value(json_object_get(json_array_get(nodes, i), "seen_seconds_ago")) < 3.0 * LEASE_MS / 1000);
                assert_whole_ms(json_object_get(json_array_get(nodes, i), "seen_seconds_ago"));
        }
        assert_whole_ms(json_object_get(lane, "expires_in_seconds"));
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(nodes, 0), "node")), "status-a");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(nodes, 1), "node")), "status-b");
        budget = json_object_get(j, "budget");
        assert_members(budget, "blocked_seconds,hour_left,minute_left");
        ck_assert(json_is_null(json_object_get(budget, "minute_left")));
        ck_assert(json_is_null(json_object_get(budget, "hour_left")));
        ck_assert(json_is_null(json_object_get(budget, "blocked_seconds")));
        db = json_object_get(j, "database");
        assert_members(db, "error,reachable,url");
        ck_assert_str_eq(json_string_value(json_object_get(db, "url")), server.conninfo); /* exactly as configured */
        ck_assert(json_is_true(json_object_get(db, "reachable")));
        ck_assert(json_is_null(json_object_get(db, "error")));
        json_decref(j);

        /* The other node's view: not the holder. */
        j = fleet_status_json(b);
        lane = json_object_get(j, "lane");
        ck_assert_str_eq(json_string_value(json_object_get(lane, "holder")), "status-a");
        ck_assert(json_is_false(json_object_get(lane, "held_by_this_node")));
        json_decref(j);

        /* With a budget, after a tick: whole calls left, no block. */
        ck_assert_int_eq(fleet_budget_set_caps(a, &caps), 0);
        ck_assert_int_eq(fleet_budget_take(b, false, 0, NULL), 0);
        tick_ok(a);
        j = fleet_status_json(a);
        budget = json_object_get(j, "budget");
        ck_assert_int_eq(json_integer_value(json_object_get(budget, "minute_left")), 29);
        ck_assert_int_eq(json_integer_value(json_object_get(budget, "hour_left")), 199);
        ck_assert(json_real_value(json_object_get(budget, "blocked_seconds")) == 0.0);
        json_decref(j);
        text = status_text(a);
        free(text);

        m = metrics_of(a);
        ck_assert_msg(strstr(m, "# TYPE visierd_fleet_lane_held gauge\nvisierd_fleet_lane_held 1\n"), "%s", m);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_lane_term 1\n"), "%s", m);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_nodes_seen 2\n"), "%s", m);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_budget_minute_left 29\n"), "%s", m);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_budget_hour_left 199\n"), "%s", m);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_budget_blocked_seconds 0.000\n"), "%s", m);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_database_up 1\n"), "%s", m);
        ck_assert_msg(strstr(m, "# TYPE visierd_fleet_lane_lost_total counter\n"), "%s", m);
        assert_no_password(m);
        free(m);
        m = metrics_of(b);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_lane_held 0\n"), "%s", m);
        free(m);

        /* Leaving: the lane released, the row gone; the other node takes over at its next tick. */
        ck_assert_int_eq(fleet_release(a, err, sizeof(err)), 0);
        ck_assert_int_eq(fleet_release(a, err, sizeof(err)), -ESTALE); /* nothing held any more */
        res = PQexec(conn, "SELECT count(*) FROM fleet_nodes WHERE node = 'status-a'");
        ck_assert_str_eq(PQgetvalue(res, 0, 0), "0");
        PQclear(res);
        ck_assert(tick_ok(b).held);
        ck_assert_int_eq(status_of(t).term, 2);
        ck_assert_int_eq(fleet_release(b, err, sizeof(err)), 0);
        fleet_free(a);
        fleet_free(b);
}
END_TEST

/* Bad parameters are refused before any connection. */
START_TEST(test_params_refused) {
        FleetParams p = { .conninfo = server.conninfo, .node = "n", .tenant = "t", .lease_ms = 1000, .renew_ms = 300 };
        FleetParams bad;
        Fleet *f = NULL;
        char name[FLEET_NAME_MAX + 2];

        memset(name, 'x', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        bad = p;
        bad.renew_ms = 500; /* not under half the lease */
        ck_assert_int_eq(fleet_new(&bad, &f, err, sizeof(err)), -EINVAL);
        bad = p;
        bad.node = name;
        ck_assert_int_eq(fleet_new(&bad, &f, err, sizeof(err)), -EINVAL);
        bad = p;
        bad.tenant = "";
        ck_assert_int_eq(fleet_new(&bad, &f, err, sizeof(err)), -EINVAL);
        bad = p;
        bad.conninfo = "";
        ck_assert_int_eq(fleet_new(&bad, &f, err, sizeof(err)), -EINVAL);
        bad = p;
        bad.lease_ms = LEASE_MS_MAX + 1;
        ck_assert_int_eq(fleet_new(&bad, &f, err, sizeof(err)), -EINVAL);
        ck_assert_ptr_null(f);
        ck_assert_int_eq(fleet_new(&p, &f, err, sizeof(err)), 0);
        fleet_free(f);
        ck_assert_ptr_null(fleet_free(NULL));
}
END_TEST

/* The password never reaches an error, the status or the metrics, even where the server quotes
 * it back (here it is also the name of a database that does not exist). */
START_TEST(test_password_never_shown) {
        _cleanup_(secret_freep) Secret *pw = secret_new(PASSWORD, strlen(PASSWORD));
        char conninfo[512], *text, *m;
        FleetParams p = { .node = "pw-a", .tenant = "t-pw", .lease_ms = 1000, .renew_ms = 300, .password = pw };
        Fleet *f = NULL;
        FleetLane l;
        int r;

        snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", server.conninfo, PASSWORD);
        p.conninfo = conninfo;
        ck_assert_int_eq(fleet_new(&p, &f, err, sizeof(err)), 0);
        r = fleet_tick(f, &l, err, sizeof(err));
        ck_assert_int_eq(r, -ENOTCONN);
        ck_assert_msg(strstr(err, "\"(hidden)\" does not exist"), "%s", err);
        assert_no_password(err);
        ck_assert(!l.held);
        text = status_text(f); /* asserts the password is not in it */
        ck_assert_msg(strstr(text, "(hidden)"), "%s", text);
        free(text);
        ck_assert_int_eq(fleet_budget_take(f, false, 0, NULL), -ENOTCONN); /* in the backoff: at once */
        m = metrics_of(f);
        assert_no_password(m);
        free(m);
        fleet_free(f);
}
END_TEST

/* The budget adapter: two nodes take from one tenant's budget; Visier's corrections and a 429
 * seen by one stop the other. */
START_TEST(test_budget_shared_by_two_nodes) {
        Fleet *a = fleet_make("budget-a", "t-budget"), *b = fleet_make("budget-b", "t-budget");
        Fleet *c = fleet_make("budget-c", "t-budget-bg"), *none = fleet_make("budget-n", "t-budget-none");
        FleetBudgetCaps caps = { 10, 100, DAY, DAY };
        FleetBudgetStatus s;
        usec_t wait = 0;

        /* No budget row yet. */
        ck_assert_int_eq(fleet_budget_take(none, false, 0, &wait), -ENOENT);
        ck_assert_int_eq(fleet_budget_set_caps(none, &(FleetBudgetCaps) { 0, 1, DAY, DAY }), -EINVAL);

        ck_assert_int_eq(fleet_budget_set_caps(a, &caps), 0);
        for (int i = 0; i < 4; i++) {
                ck_assert_int_eq(fleet_budget_take(a, false, 0, NULL), 0);
                ck_assert_int_eq(fleet_budget_take(b, false, 0, NULL), 0);
        }
        ck_assert_int_eq(fleetbudget_status(conn, "t-budget", &s, err, sizeof(err)), 0);
        ck_assert_uint_eq(s.minute_left, 2);
        ck_assert_uint_eq(s.hour_left, 92);

        /* Visier says one call is left: b's observation lowers what a may take. */
        ck_assert_int_eq(fleet_budget_observe(b, 1, -1), 0);
        ck_assert_int_eq(fleet_budget_take(a, false, 0, NULL), 0);
        ck_assert_int_eq(fleet_budget_take(a, false, 0, &wait), -EAGAIN);
        ck_assert_uint_gt(wait, 0);
        ck_assert_int_eq(fleet_budget_take(b, false, 0, NULL), -EAGAIN);

        /* A 429 seen by a closes the budget for b, with its Retry-After as the wait. */
        /* Every place given back (by hand: the windows are a day long), so the block alone decides. */
        PQclear(PQexec(conn, "DELETE FROM fleet_budget_calls WHERE tenant = 't-budget'"));
        ck_assert_int_eq(fleet_budget_block(a, 20 * USEC_PER_SEC), 0);
        wait = 0;
        ck_assert_int_eq(fleet_budget_take(b, false, 0, &wait), -EAGAIN);
        ck_assert_uint_gt(wait, 19 * USEC_PER_SEC);
        ck_assert_uint_le(wait, 20 * USEC_PER_SEC);
        tick_ok(b);
        {
                json_t *j = fleet_status_json(b);
                double blocked = json_real_value(json_object_get(json_object_get(j, "budget"), "blocked_seconds"));

                ck_assert_msg(blocked > 19 && blocked <= 20, "blocked_seconds %f", blocked);
                json_decref(j);
        }

        /* Background work keeps a reserve: with half of 10 reserved, 5 calls are taken, then only
         * interactive ones. */
        ck_assert_int_eq(fleet_budget_set_caps(c, &caps), 0);
        for (int i = 0; i < 5; i++)
                ck_assert_int_eq(fleet_budget_take(c, true, 0.5, NULL), 0);
        ck_assert_int_eq(fleet_budget_take(c, true, 0.5, &wait), -EAGAIN);
        ck_assert_int_eq(fleet_budget_take(c, false, 0, NULL), 0);

        fleet_free(a);
        fleet_free(b);
        fleet_free(c);
        fleet_free(none);
}
END_TEST

typedef struct Racer {
        Fleet *f;
        unsigned granted, refused;
} Racer;

static void *racer(void *arg) {
        Racer *r = arg;

        for (int i = 0; i < 40; i++) {
                int k = fleet_budget_take(r->f, i % 2, 0.1, NULL);
                json_t *j;

                if (k == 0)
                        r->granted++;
                else
                        r->refused++;
                (void) fleet_lane_usable(r->f, clock_now(), NULL);
                j = fleet_status_json(r->f);
                json_decref(j);
        }
        return NULL;
}

typedef struct Reader {
        Fleet *f;
        int stop; /* __atomic */
        unsigned reads;
} Reader;

/* The HTTP layer's side: status, metrics and the publisher's question, never taking the
 * connection's lock, while the loop ticks. */
static void *reader(void *arg) {
        Reader *r = arg;

        while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
                json_t *j = fleet_status_json(r->f);

                ck_assert_ptr_nonnull(j);
                json_decref(j);
                free(metrics_of(r->f));
                (void) fleet_lane_usable(r->f, clock_now(), NULL);
                r->reads++;
        }
        return NULL;
}

/* One Fleet used from several threads at once (the budget from the upstream client's threads,
 * the tick from the loop, the status from the HTTP layer): every call is answered, every grant
 * counted once. */
START_TEST(test_threads_share_one_fleet) {
        Fleet *a = fleet_make("thread-a", "t-threads"), *b = fleet_make("thread-b", "t-threads");
        FleetBudgetCaps caps = { 1000, 10000, DAY, DAY };
        Racer racers[3] = {};
        Reader rd = { .f = a };
        pthread_t th[3], rth;
        FleetBudgetStatus s;
        unsigned granted = 0;

        ck_assert_int_eq(fleet_budget_set_caps(a, &caps), 0);
        ck_assert_int_eq(pthread_create(&rth, NULL, reader, &rd), 0);
        for (size_t i = 0; i < ELEMENTSOF(th); i++) {
                racers[i].f = i == 2 ? b : a;
                ck_assert_int_eq(pthread_create(&th[i], NULL, racer, &racers[i]), 0);
        }
        for (int i = 0; i < 10; i++) {
                (void) fleet_tick(a, NULL, err, sizeof(err));
                (void) fleet_tick(b, NULL, err, sizeof(err));
                free(metrics_of(a));
        }
        for (size_t i = 0; i < ELEMENTSOF(th); i++) {
                ck_assert_int_eq(pthread_join(th[i], NULL), 0);
                ck_assert_uint_eq(racers[i].refused, 0);
                granted += racers[i].granted;
        }
        __atomic_store_n(&rd.stop, 1, __ATOMIC_RELEASE);
        ck_assert_int_eq(pthread_join(rth, NULL), 0);
        ck_assert_uint_gt(rd.reads, 0);
        ck_assert_uint_eq(granted, 120);
        ck_assert_int_eq(fleetbudget_status(conn, "t-threads", &s, err, sizeof(err)), 0);
        ck_assert_uint_eq(s.minute_left, 1000 - 120);
        ck_assert_uint_eq(s.hour_left, 10000 - 120);
        (void) fleet_release(a, err, sizeof(err));
        (void) fleet_release(b, err, sizeof(err));
        fleet_free(a);
        fleet_free(b);
}
END_TEST

static PgServer own; /* the outage test's own server, stopped and started again */

static void own_setup(void) {
        char reason[PG_REASON_MAX];

        ck_assert_msg(pg_server_init(&own, reason, sizeof(reason)) == 0, "%s", reason);
}

static void own_teardown(void) {
        pg_server_destroy(&own);
}

/* The database goes away under the holder: its belief ends by its own clock within the lease,
 * every call fails at once with -ENOTCONN, the budget refuses; once the database is back the
 * node reconnects by itself, holds the lane again and the caps set meanwhile apply. */
START_TEST(test_database_down_local_expiry) {
        char reason[PG_REASON_MAX];
        const char *t = "t-down";
        Fleet *a = fleet_make_on(&own, "down-a", t, LEASE_MS, RENEW_MS, SETTLE_MS);
        FleetBudgetCaps caps = { 7, 70, DAY, DAY };
        FleetLane l, last;
        usec_t deadline, t0, now;
        json_t *j, *db;
        char *m, *text;
        int r;

        last = tick_ok(a);
        ck_assert(last.held);
        ck_assert_uint_eq(last.believed_until, last.confirmed_at + (LEASE_MS - RENEW_MS) * USEC_PER_MSEC);
        /* The local rule, exactly: usable until believed_until, not at it. */
        ck_assert(fleet_lane_usable(a, last.believed_until - 1, NULL));
        ck_assert(!fleet_lane_usable(a, last.believed_until, NULL));

        ck_assert_int_eq(pg_server_stop(&own, PG_STOP_FAST), 0);
        /* Ticks fail; the belief runs out by the node's clock within the lease of its last
         * confirmed renewal's start. */
        deadline = last.confirmed_at + PROBE_WAIT_SEC * USEC_PER_SEC;
        for (;;) {
                r = fleet_tick(a, &l, err, sizeof(err));
                ck_assert_msg(r == -ENOTCONN, "tick with the database down: %s (%s)", strerror(-r), err);
                assert_no_password(err);
                ck_assert_uint_eq(l.confirmed_at, last.confirmed_at); /* nothing confirmed since */
                now = clock_now();
                if (!fleet_lane_usable(a, now, NULL))
                        break;
                ck_assert_uint_lt(now, last.believed_until); /* usable only inside the belief */
                ck_assert_msg(now < deadline, "still usable %d s after the database went", PROBE_WAIT_SEC);
                clock_sleep(10 * USEC_PER_MSEC); /* the pace of the probe */
        }
        ck_assert_uint_lt(now - last.confirmed_at, (usec_t) LEASE_MS * USEC_PER_MSEC + 500 * USEC_PER_MSEC);
        ck_assert(!l.held || now >= l.believed_until);

        /* While it is down: the status says so (from memory), the budget refuses at once. */
        j = fleet_status_json(a);
        db = json_object_get(j, "database");
        ck_assert(json_is_false(json_object_get(db, "reachable")));
        ck_assert_msg(json_is_string(json_object_get(db, "error")), "no error in the status");
        ck_assert(json_is_false(json_object_get(json_object_get(j, "lane"), "held_by_this_node")));
        json_decref(j);
        text = status_text(a);
        free(text);
        m = metrics_of(a);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_database_up 0\n"), "%s", m);
        ck_assert_msg(strstr(m, "\nvisierd_fleet_lane_held 0\n"), "%s", m);
        free(m);
        t0 = clock_now();
        ck_assert_int_eq(fleet_budget_take(a, false, 0, NULL), -ENOTCONN);
        ck_assert_int_eq(fleet_budget_set_caps(a, &caps), -ENOTCONN); /* kept for the reconnect */
        ck_assert_int_eq(fleet_budget_observe(a, 1, 1), -ENOTCONN);
        ck_assert_int_eq(fleet_budget_block(a, USEC_PER_SEC), -ENOTCONN);
        ck_assert_uint_lt(clock_now() - t0, (usec_t) 4 * FLEET_CONNECT_TIMEOUT_SEC * USEC_PER_SEC);

        /* Back: the node reconnects by itself at a tick, and holds the lane again. */
        ck_assert_msg(pg_server_start(&own, reason, sizeof(reason)) == 0, "%s", reason);
        deadline = clock_now() + PROBE_WAIT_SEC * USEC_PER_SEC;
        while ((r = fleet_tick(a, &l, err, sizeof(err))) < 0) {
                ck_assert_msg(r == -ENOTCONN, "tick after the restart: %s (%s)", strerror(-r), err);
                ck_assert_msg(clock_now() < deadline, "no reconnect within %d s: %s", PROBE_WAIT_SEC, err);
                clock_sleep(20 * USEC_PER_MSEC); /* the pace of the probe */
        }
        ck_assert(l.held);
        ck_assert_int_ge(l.term, last.term); /* the same term if its lease outlived the outage, else a new one */
        ck_assert(fleet_lane_usable(a, clock_now(), NULL));
        j = fleet_status_json(a);
        db = json_object_get(j, "database");
        ck_assert(json_is_true(json_object_get(db, "reachable")));
        ck_assert(json_is_null(json_object_get(db, "error")));
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "budget"), "minute_left")), 7);
        json_decref(j);
        ck_assert_int_eq(fleet_budget_take(a, false, 0, NULL), 0);
        ck_assert_int_eq(fleet_release(a, err, sizeof(err)), 0);
        fleet_free(a);
}
END_TEST

int main(void) {
        char reason[PG_REASON_MAX];
        Suite *s = suite_create("fleet");
        TCase *tc = tcase_create("fleet"), *td = tcase_create("outage");
        SRunner *sr;
        int failed;

        if (pg_server_init(&server, reason, sizeof(reason)) < 0) {
                printf("SKIP: PostgreSQL cannot run here: %s\n", reason);
                pg_server_destroy(&server);
                return 77; /* Automake: SKIP */
        }
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_params_refused);
        tcase_add_test(tc, test_password_never_shown);
        tcase_add_test(tc, test_one_holder_renews_across_ticks);
        tcase_add_test(tc, test_takeover_after_pause);
        tcase_add_test(tc, test_heartbeat_status_metrics);
        tcase_add_test(tc, test_budget_shared_by_two_nodes);
        tcase_add_test(tc, test_threads_share_one_fleet);
        suite_add_tcase(s, tc);
        tcase_add_checked_fixture(td, own_setup, own_teardown);
        tcase_add_test(td, test_database_down_local_expiry);
        suite_add_tcase(s, td);

        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        pg_server_destroy(&server);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
