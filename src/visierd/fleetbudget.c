/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet's rate budget in PostgreSQL (see fleetbudget.h; docs/fleet.md, "The rate budget").
 *
 * DESIGN: one row per tenant in fleet_budgets holds each bucket's tokens as of refilled_at; the
 * tokens at any later time t are min(cap, tokens + (t - refilled_at) * cap / period), the same
 * continuous refill as ratelimit.c, with t the database's clock_timestamp(). Each operation is
 * one statement. A take is an UPDATE whose WHERE requires the row not blocked and a whole call
 * (plus the reserve) in both buckets at the database's now; it sets both buckets to their
 * refilled value minus one and refilled_at to now. Under READ COMMITTED concurrent takes queue
 * on the row's lock, and each re-evaluates its WHERE and its SET against the latest committed
 * version, with a fresh clock_timestamp() (a volatile function, evaluated again at the recheck),
 * so no token is granted twice and the caps hold across all nodes together.
 *
 * A take that matches no row (no budget, or not enough of it) is followed by a read that says
 * which, and how long until a call could be taken; that read is advice, the UPDATE decides.
 * refilled_at only moves forward (greatest()), and a clock that went back refills nothing.
 *
 * Must never log, keep state, or read the node's clock.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fleetbudget.h"

/* A timestamptz as milliseconds since the epoch (NULL stays NULL). */
#define MS(x) "floor(extract(epoch from " x ") * 1000)::bigint"
#define MILLIS(p) "(" p "::bigint * interval '1 millisecond')"
/* Milliseconds from the row's refill to `now`, never negative. */
#define ELAPSED_MS(now) "greatest(0, extract(epoch from (" now " - b.refilled_at))::float8 * 1000)"
/* Each bucket's tokens at `now`. */
#define MINUTE_AT(now) "least(b.minute_cap, b.minute_tokens + " ELAPSED_MS(now) " * b.minute_cap / b.minute_ms)"
#define HOUR_AT(now) "least(b.hour_cap, b.hour_tokens + " ELAPSED_MS(now) " * b.hour_cap / b.hour_ms)"
/* What a take needs in each bucket: one call, and a reserve (a share of a minute's cap). */
#define NEED(reserve) "(1 + " reserve "::float8 * b.minute_cap)"
/* How long from `now` until a take needing NEED(reserve) could succeed, in whole ms. */
#define WAIT_MS(reserve, now)                                                                                     \
        "greatest(0, ceil(extract(epoch from (b.blocked_until - " now ")) * 1000),"                               \
        " ceil((" NEED(reserve) " - " MINUTE_AT(now) ") * b.minute_ms / b.minute_cap),"                             \
        " ceil((" NEED(reserve) " - " HOUR_AT(now) ") * b.hour_ms / b.hour_cap))::bigint"
#define LEFT(col) "greatest(0, floor(" col "))::bigint"
#define NOW_ROW "(SELECT clock_timestamp() AS now) n"

static const char *const sql_set_caps =
        "INSERT INTO fleet_budgets AS b (tenant, minute_cap, hour_cap, minute_ms, hour_ms, minute_tokens, hour_tokens,"
        " refilled_at) VALUES ($1, $2::integer, $3::integer, $4::integer, $5::integer, $2::float8, $3::float8,"
        " clock_timestamp())"
        " ON CONFLICT (tenant) DO UPDATE SET"
        " (minute_cap, hour_cap, minute_ms, hour_ms, minute_tokens, hour_tokens, refilled_at) ="
        " (SELECT excluded.minute_cap, excluded.hour_cap, excluded.minute_ms, excluded.hour_ms,"
        " least(" MINUTE_AT("n.now") ", excluded.minute_cap), least(" HOUR_AT("n.now") ", excluded.hour_cap),"
        " greatest(b.refilled_at, n.now) FROM " NOW_ROW ")";

/* $1 tenant, $2 reserve. */
static const char *const sql_take =
        "UPDATE fleet_budgets b SET (minute_tokens, hour_tokens, refilled_at) ="
        " (SELECT " MINUTE_AT("n.now") " - 1, " HOUR_AT("n.now") " - 1, greatest(b.refilled_at, n.now) FROM " NOW_ROW ")"
        " WHERE b.tenant = $1"
        " AND (b.blocked_until IS NULL OR b.blocked_until <= clock_timestamp())"
        " AND " MINUTE_AT("clock_timestamp()") " >= " NEED("$2")
        " AND " HOUR_AT("clock_timestamp()") " >= " NEED("$2")
        " RETURNING " MS("b.refilled_at") ", " LEFT("b.minute_tokens") ", " LEFT("b.hour_tokens");

/* Why a take matched no row, and for how long. */
static const char *const sql_take_why =
        "SELECT greatest(1, " WAIT_MS("$2", "n.now") ") FROM fleet_budgets b, " NOW_ROW " WHERE b.tenant = $1";

/* $2, $3: remaining per minute and per hour, negative when unknown. */
static const char *const sql_observe =
        "UPDATE fleet_budgets b SET (minute_tokens, hour_tokens, refilled_at) ="
        " (SELECT CASE WHEN $2::bigint >= 0 THEN least(" MINUTE_AT("n.now") ", $2::float8) ELSE " MINUTE_AT("n.now") " END,"
        " CASE WHEN $3::bigint >= 0 THEN least(" HOUR_AT("n.now") ", $3::float8) ELSE " HOUR_AT("n.now") " END,"
        " greatest(b.refilled_at, n.now) FROM " NOW_ROW ")"
        " WHERE b.tenant = $1 RETURNING 1";

static const char *const sql_block =
        "UPDATE fleet_budgets b SET blocked_until = greatest(b.blocked_until, clock_timestamp() + " MILLIS("$2") ")"
        " WHERE b.tenant = $1 RETURNING " MS("b.blocked_until");

static const char *const sql_status =
        "SELECT b.minute_cap, b.hour_cap, b.minute_ms, b.hour_ms, " LEFT(MINUTE_AT("n.now")) ", " LEFT(HOUR_AT("n.now")) ","
        " CASE WHEN b.blocked_until > n.now THEN " MS("b.blocked_until") " ELSE 0 END, " WAIT_MS("0", "n.now") ","
        " " MS("n.now") " FROM fleet_budgets b, " NOW_ROW " WHERE b.tenant = $1";

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
        char reserve_s[32];
        const char *params[] = { tenant, reserve_s };
        PGresult *res = NULL;
        FleetBudgetTake t = {};
        int64_t m = 0, h = 0;
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

        r = fleetdb_exec(conn, "take a call from the rate budget", sql_take, 2, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) == 1) {
                if (fleetdb_get_i64(res, 0, &t.at_ms) < 0 || fleetdb_get_i64(res, 1, &m) < 0 ||
                    fleetdb_get_i64(res, 2, &h) < 0) {
                        PQclear(res);
                        fleetdb_set_error(err, errlen, "take a call from the rate budget: unreadable answer");
                        return -EBADMSG;
                }
                PQclear(res);
                t.minute_left = (unsigned) m;
                t.hour_left = (unsigned) h;
                if (ret)
                        *ret = t;
                return 0;
        }
        PQclear(res);
        res = NULL;

        /* Not taken: no budget, or not now (then for how long). */
        r = fleetdb_exec(conn, "take a call from the rate budget", sql_take_why, 2, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                return no_budget(tenant, err, errlen);
        }
        r = fleetdb_get_i64(res, 0, &t.wait_ms);
        PQclear(res);
        if (r < 0) {
                fleetdb_set_error(err, errlen, "take a call from the rate budget: unreadable answer");
                return r;
        }
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
        char rm[24], rh[24];
        const char *params[] = { tenant, rm, rh };
        PGresult *res = NULL;
        int r;

        assert(conn);
        r = check_args(conn, tenant, err, errlen);
        if (r < 0)
                return r;
        snprintf(rm, sizeof(rm), "%ld", remaining_minute < 0 ? -1L : remaining_minute);
        snprintf(rh, sizeof(rh), "%ld", remaining_hour < 0 ? -1L : remaining_hour);

        r = fleetdb_exec(conn, "correct the rate budget", sql_observe, 3, params, &res, err, errlen);
        if (r < 0)
                return r;
        r = PQntuples(res) == 1 ? 0 : no_budget(tenant, err, errlen);
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
        const char *params[] = { tenant };
        PGresult *res = NULL;
        FleetBudgetStatus s = {};
        int64_t v[9];
        int r;

        assert(conn);
        assert(ret);
        r = check_args(conn, tenant, err, errlen);
        if (r < 0)
                return r;

        r = fleetdb_exec(conn, "read the rate budget", sql_status, 1, params, &res, err, errlen);
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
        s.minute_tokens = (unsigned) v[4];
        s.hour_tokens = (unsigned) v[5];
        s.blocked_until_ms = v[6];
        s.wait_ms = v[7];
        s.now_ms = v[8];
        *ret = s;
        return 0;
}
