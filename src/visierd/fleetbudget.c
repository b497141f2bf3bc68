/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet's rate budget in PostgreSQL (see fleetbudget.h; docs/fleet.md, "The rate budget").
 *
 * DESIGN: the windows slide, as ratelimit.c's do: a call is taken only while fewer than the
 * cap were taken in the last window length + FLEETBUDGET_SLACK_MS, so no window of Visier's,
 * wherever it starts, sees more than the cap from the whole fleet. fleet_budgets holds each
 * tenant's caps and 429 block; fleet_budget_calls counts the calls whose places have not come
 * back, one row per span and slot of about a 636th of the window (so at most 637 rows per span
 * and tenant), the database's clock in ms. The arithmetic is in the PL/pgSQL functions of
 * fleetdb.c's migration 4, one call per operation: a take or an observe locks the tenant's row
 * FOR UPDATE first, so concurrent ones from any node run one after the other, and each then
 * reads the calls with a snapshot taken after the lock (READ COMMITTED: one per statement),
 * gives back the places whose time has come and counts what is left. No place is granted
 * twice and the caps hold across all nodes together. A status read takes no lock: it is
 * advice, a take decides.
 *
 * Must never log, keep state, or read the node's clock.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "fleetbudget.h"

/* A timestamptz as milliseconds since the epoch (NULL stays NULL). */
#define MS(x) "floor(extract(epoch from " x ") * 1000)::bigint"
#define MILLIS(p) "(" p "::bigint * interval '1 millisecond')"

/* A new tenant's budget, or new caps: the calls already counted count against them. */
static const char *const sql_set_caps =
        "INSERT INTO fleet_budgets AS b (tenant, minute_cap, hour_cap, minute_ms, hour_ms)"
        " VALUES ($1, $2::integer, $3::integer, $4::integer, $5::integer)"
        " ON CONFLICT (tenant) DO UPDATE SET (minute_cap, hour_cap, minute_ms, hour_ms) ="
        " (excluded.minute_cap, excluded.hour_cap, excluded.minute_ms, excluded.hour_ms)";

/* $1 tenant, $2 reserve, $3 slack (ms). */
static const char *const sql_take =
        "SELECT granted, wait_ms, at_ms, minute_left, hour_left FROM fleet_budget_take($1, $2::float8, $3::integer)";

/* $2, $3: remaining per minute and per hour, negative when unknown; $4 slack. */
static const char *const sql_observe =
        "SELECT fleet_budget_observe($1, $2::bigint, $3::bigint, $4::integer)";

static const char *const sql_block =
        "UPDATE fleet_budgets b SET blocked_until = greatest(b.blocked_until, clock_timestamp() + " MILLIS("$2") ")"
        " WHERE b.tenant = $1 RETURNING " MS("b.blocked_until");

/* $1 tenant, $2 slack: nothing is taken or given back, so no lock. */
static const char *const sql_status =
        "SELECT b.minute_cap, b.hour_cap, b.minute_ms, b.hour_ms,"
        " greatest(0, floor(m.free))::bigint, greatest(0, floor(h.free))::bigint,"
        " CASE WHEN b.blocked_until > n.now THEN " MS("b.blocked_until") " ELSE 0 END,"
        " greatest(m.wait_ms, h.wait_ms, coalesce(ceil(extract(epoch from b.blocked_until - n.now) * 1000)::bigint, 0)),"
        " n.now_ms"
        " FROM fleet_budgets b, (SELECT now, " MS("now") " AS now_ms FROM (SELECT clock_timestamp() AS now) c) n,"
        " LATERAL fleet_budget_span(b.tenant, 'minute', b.minute_cap, b.minute_ms, $2::integer, 1, n.now_ms) m,"
        " LATERAL fleet_budget_span(b.tenant, 'hour', b.hour_cap, b.hour_ms, $2::integer, 1, n.now_ms) h"
        " WHERE b.tenant = $1";

static int check_args(PGconn *conn, const char *tenant, char *err, size_t errlen) {
        int r;

        r = fleetdb_check_conn(conn, err, errlen);
        if (r < 0)
                return r;
        if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
                fleetdb_set_error(err, errlen, "the rate budget must be used outside a transaction");
                return -EINVAL;
        }
        return fleetdb_check_name("tenant", tenant, err, errlen);
}

static int check_range(const char *what, unsigned v, unsigned min, unsigned max, char *err, size_t errlen) {
        if (v < min || v > max) {
                fleetdb_set_error(err, errlen, "%s must be %u to %u", what, min, max);
                return -EINVAL;
        }
        return 0;
}

static int no_budget(const char *tenant, char *err, size_t errlen) {
        fleetdb_set_error(err, errlen, "%s has no fleet rate budget yet", tenant);
        return -ENOENT;
}

int fleetbudget_migrate(PGconn *conn, int *ret_version, char *err, size_t errlen) {
        return fleetdb_migrate(conn, ret_version, err, errlen);
}

int fleetbudget_set_caps(PGconn *conn, const char *tenant, const FleetBudgetCaps *caps, char *err, size_t errlen) {
        char pm[16], ph[16], mm[16], hm[16];
        const char *params[] = { tenant, pm, ph, mm, hm };
        PGresult *res = NULL;
        int r;

        assert(conn);
        assert(caps);
        r = check_args(conn, tenant, err, errlen);
        if (r < 0)
                return r;
        if ((r = check_range("per_minute", caps->per_minute, 1, FLEETBUDGET_CAP_MAX, err, errlen)) < 0 ||
            (r = check_range("per_hour", caps->per_hour, 1, FLEETBUDGET_CAP_MAX, err, errlen)) < 0 ||
            (r = check_range("minute_ms", caps->minute_ms, 1, FLEETBUDGET_PERIOD_MS_MAX, err, errlen)) < 0 ||
            (r = check_range("hour_ms", caps->hour_ms, 1, FLEETBUDGET_PERIOD_MS_MAX, err, errlen)) < 0)
                return r;
        snprintf(pm, sizeof(pm), "%u", caps->per_minute);
        snprintf(ph, sizeof(ph), "%u", caps->per_hour);
        snprintf(mm, sizeof(mm), "%u", caps->minute_ms);
        snprintf(hm, sizeof(hm), "%u", caps->hour_ms);

        r = fleetdb_exec(conn, "set the rate budget's caps", sql_set_caps, 5, params, &res, err, errlen);
        PQclear(res);
        return r;
}

static int take(PGconn *conn, const char *tenant, double reserve, FleetBudgetTake *ret, char *err, size_t errlen) {
        char reserve_s[32], slack_s[16];
        const char *params[] = { tenant, reserve_s, slack_s };
        PGresult *res = NULL;
        FleetBudgetTake t = {};
        int64_t m = 0, h = 0;
        bool granted;
        int r;

        assert(conn);
        r = check_args(conn, tenant, err, errlen);
        if (r < 0)
                return r;
        if (!(reserve >= 0.0 && reserve <= 1.0)) { /* NaN too */
                fleetdb_set_error(err, errlen, "reserve must be 0 to 1");
                return -EINVAL;
        }
        snprintf(reserve_s, sizeof(reserve_s), "%.6f", reserve);
        snprintf(slack_s, sizeof(slack_s), "%u", FLEETBUDGET_SLACK_MS);

        r = fleetdb_exec(conn, "take a call from the rate budget", sql_take, 3, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
                PQclear(res);
                return no_budget(tenant, err, errlen);
        }
        granted = PQgetvalue(res, 0, 0)[0] == 't';
        if (fleetdb_get_i64(res, 1, &t.wait_ms) < 0 || fleetdb_get_i64(res, 2, &t.at_ms) < 0 ||
            fleetdb_get_i64(res, 3, &m) < 0 || fleetdb_get_i64(res, 4, &h) < 0) {
                PQclear(res);
                fleetdb_set_error(err, errlen, "take a call from the rate budget: unreadable answer");
                return -EBADMSG;
        }
        PQclear(res);
        t.minute_left = (unsigned) m;
        t.hour_left = (unsigned) h;
        if (granted) {
                t.wait_ms = 0;
                if (ret)
                        *ret = t;
                return 0;
        }
        t.at_ms = 0;
        if (t.wait_ms < 1)
                t.wait_ms = 1;
        fleetdb_set_error(err, errlen, "the rate budget of %s has a call in %" PRId64 " ms", tenant, t.wait_ms);
        if (ret)
                *ret = t;
        return -EAGAIN;
}

int fleetbudget_take(PGconn *conn, const char *tenant, FleetBudgetTake *ret, char *err, size_t errlen) {
        return take(conn, tenant, 0.0, ret, err, errlen);
}

int fleetbudget_take_background(PGconn *conn, const char *tenant, double reserve, FleetBudgetTake *ret, char *err,
                                size_t errlen) {
        return take(conn, tenant, reserve, ret, err, errlen);
}

int fleetbudget_observe(PGconn *conn, const char *tenant, long remaining_minute, long remaining_hour, char *err,
                        size_t errlen) {
        char rm[24], rh[24], slack_s[16];
        const char *params[] = { tenant, rm, rh, slack_s };
        PGresult *res = NULL;
        int r;

        assert(conn);
        r = check_args(conn, tenant, err, errlen);
        if (r < 0)
                return r;
        snprintf(rm, sizeof(rm), "%ld", remaining_minute < 0 ? -1L : remaining_minute);
        snprintf(rh, sizeof(rh), "%ld", remaining_hour < 0 ? -1L : remaining_hour);
        snprintf(slack_s, sizeof(slack_s), "%u", FLEETBUDGET_SLACK_MS);

        r = fleetdb_exec(conn, "correct the rate budget", sql_observe, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        r = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't' ? 0 : no_budget(tenant, err, errlen);
        PQclear(res);
        return r;
}

int fleetbudget_block(PGconn *conn, const char *tenant, unsigned retry_after_ms, int64_t *ret_until_ms, char *err,
                      size_t errlen) {
        char ms_s[16];
        const char *params[] = { tenant, ms_s };
        PGresult *res = NULL;
        int64_t until = 0;
        int r;

        assert(conn);
        r = check_args(conn, tenant, err, errlen);
        if (r < 0)
                return r;
        r = check_range("retry_after_ms", retry_after_ms, 0, FLEETBUDGET_BLOCK_MS_MAX, err, errlen);
        if (r < 0)
                return r;
        snprintf(ms_s, sizeof(ms_s), "%u", retry_after_ms);

        r = fleetdb_exec(conn, "close the rate budget", sql_block, 2, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                return no_budget(tenant, err, errlen);
        }
        r = fleetdb_get_i64(res, 0, &until);
        PQclear(res);
        if (r < 0) {
                fleetdb_set_error(err, errlen, "close the rate budget: unreadable answer");
                return r;
        }
        if (ret_until_ms)
                *ret_until_ms = until;
        return 0;
}

int fleetbudget_status(PGconn *conn, const char *tenant, FleetBudgetStatus *ret, char *err, size_t errlen) {
        char slack_s[16];
        const char *params[] = { tenant, slack_s };
        PGresult *res = NULL;
        FleetBudgetStatus s = {};
        int64_t v[9];
        int r;

        assert(conn);
        assert(ret);
        r = check_args(conn, tenant, err, errlen);
        if (r < 0)
                return r;

        snprintf(slack_s, sizeof(slack_s), "%u", FLEETBUDGET_SLACK_MS);
        r = fleetdb_exec(conn, "read the rate budget", sql_status, 2, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                return no_budget(tenant, err, errlen);
        }
        for (int i = 0; i < 9; i++)
                if (fleetdb_get_i64(res, i, &v[i]) < 0) {
                        PQclear(res);
                        fleetdb_set_error(err, errlen, "read the rate budget: unreadable answer");
                        return -EBADMSG;
                }
        PQclear(res);
        s.caps = (FleetBudgetCaps) { .per_minute = (unsigned) v[0], .per_hour = (unsigned) v[1],
                                     .minute_ms = (unsigned) v[2], .hour_ms = (unsigned) v[3] };
        s.minute_left = (unsigned) v[4];
        s.hour_left = (unsigned) v[5];
        s.blocked_until_ms = v[6];
        s.wait_ms = v[7];
        s.now_ms = v[8];
        *ret = s;
        return 0;
}
