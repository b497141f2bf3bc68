/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet's publish lane in PostgreSQL (see lease.h; the timing argument is docs/fleet.md).
 *
 * DESIGN: one row per tenant in fleet_lanes. Each operation is one statement (an autocommitted
 * transaction, or part of the caller's), and its condition is in its WHERE clause, evaluated by
 * the database under the row's lock against the row's latest committed version (READ COMMITTED
 * re-checks the WHERE after waiting for a concurrent writer; INSERT ... ON CONFLICT DO UPDATE
 * locks the row it conflicts with). So two nodes racing for a free lane serialize on the row and
 * exactly one gets each term, and a fence and a take-over serialize the same way: a fence either
 * lands before the take-over (which then sees its deadline) or sees the new holder and fails.
 *
 * The row never forgets a write that may still be running: open_call_deadline survives a
 * change of holder (only its own holder's lease_call_end() clears it), and send_after only
 * moves forward, so a holder that dies before it sends passes the wait on to the next one.
 *
 * Must never log, keep state, or read the node's clock: every time is clock_timestamp() in the
 * database.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fleetdb.h"
#include "lease.h"

/* A timestamptz as milliseconds since the epoch (NULL stays NULL). */
#define MS(x) "floor(extract(epoch from " x ") * 1000)::bigint"
/* How long from now until x, in whole milliseconds rounded up, never negative. */
#define WAIT_MS(x) "greatest(0, ceil(extract(epoch from (" x " - clock_timestamp())) * 1000))::bigint"
#define MILLIS(p) "(" p "::bigint * interval '1 millisecond')"

static const char *const sql_acquire =
        "INSERT INTO fleet_lanes AS l (tenant, holder, term, expires_at, acquired_at, send_after)"
        " VALUES ($1, $2, 1, clock_timestamp() + " MILLIS("$3") ", clock_timestamp(), clock_timestamp())"
        " ON CONFLICT (tenant) DO UPDATE SET holder = excluded.holder, term = l.term + 1,"
        " expires_at = excluded.expires_at, acquired_at = excluded.acquired_at,"
        " send_after = greatest(excluded.send_after, l.send_after, l.open_call_deadline + " MILLIS("$4") ")"
        " WHERE l.holder IS NULL OR l.holder = excluded.holder OR l.expires_at IS NULL"
        " OR l.expires_at <= clock_timestamp()"
        " RETURNING term, " MS("expires_at") ", " MS("send_after") ", " WAIT_MS("send_after");

static const char *const sql_renew =
        "UPDATE fleet_lanes SET expires_at = clock_timestamp() + " MILLIS("$4")
        " WHERE tenant = $1 AND holder = $2 AND term = $3 AND expires_at > clock_timestamp()"
        " RETURNING " MS("expires_at");

/* FOR SHARE: the row stays locked against an acquire (an UPDATE) until the caller's
 * transaction ends, so the term cannot change between this check and its commit. */
static const char *const sql_check_term =
        "SELECT 1 FROM fleet_lanes WHERE tenant = $1 AND holder = $2 AND term = $3 FOR SHARE";

static const char *const sql_fence =
        "UPDATE fleet_lanes SET open_call_deadline = greatest(open_call_deadline, clock_timestamp() + " MILLIS("$4") ")"
        " WHERE tenant = $1 AND holder = $2 AND term = $3 AND expires_at > clock_timestamp()"
        " AND (send_after IS NULL OR send_after <= clock_timestamp())"
        " RETURNING term";

/* Why a fence matched no row: still the term (then how long to wait), or not. */
static const char *const sql_fence_why =
        "SELECT holder = $2 AND term = $3 AND expires_at > clock_timestamp(), " WAIT_MS("send_after")
        " FROM fleet_lanes WHERE tenant = $1";

static const char *const sql_call_answered =
        "UPDATE fleet_lanes SET open_call_deadline = NULL WHERE tenant = $1 AND holder = $2 AND term = $3"
        " RETURNING term";

static const char *const sql_call_lost =
        "UPDATE fleet_lanes SET open_call_deadline = NULL,"
        " send_after = greatest(send_after, clock_timestamp() + " MILLIS("$4") ")"
        " WHERE tenant = $1 AND holder = $2 AND term = $3 RETURNING term";

static const char *const sql_release =
        "UPDATE fleet_lanes SET holder = NULL, expires_at = NULL WHERE tenant = $1 AND holder = $2 AND term = $3"
        " RETURNING term";

static const char *const sql_status =
        "SELECT coalesce(l.holder, ''), coalesce(l.term, 0), coalesce(l.holder IS NOT NULL AND l.expires_at > t.now, false), "
        MS("l.expires_at") ", " MS("l.open_call_deadline") ", " MS("l.send_after") ", " MS("t.now")
        " FROM (SELECT clock_timestamp() AS now) t LEFT JOIN fleet_lanes l ON l.tenant = $1";

static int check_args(PGconn *conn, const char *tenant, const char *node, int64_t term, char *err, size_t errlen) {
        int r;

        r = fleetdb_check_conn(conn, err, errlen);
        if (r < 0)
                return r;
        r = fleetdb_check_name("tenant", tenant, err, errlen);
        if (r < 0)
                return r;
        r = fleetdb_check_name("node", node, err, errlen);
        if (r < 0)
                return r;
        if (term < 0) {
                fleetdb_set_error(err, errlen, "term must not be negative");
                return -EINVAL;
        }
        return 0;
}

static int check_ms(const char *what, unsigned ms, unsigned min, char *err, size_t errlen) {
        if (ms < min || ms > LEASE_MS_MAX) {
                fleetdb_set_error(err, errlen, "%s must be %u to %u ms", what, min, LEASE_MS_MAX);
                return -EINVAL;
        }
        return 0;
}

#define TERM_BUF 24 /* a term as text: an int64 and its NUL */
#define MS_BUF 16   /* a duration in ms as text */

/* The checked arguments of a statement on a held term: $3 the term, and $4 a duration in ms
 * (what: its name, NULL for none) within min..LEASE_MS_MAX. */
static int term_params(PGconn *conn, const char *tenant, const char *node, int64_t term, const char *what,
                       unsigned ms, unsigned min, char *term_s, char *ms_s, char *err,
                       size_t errlen) {
        int r;

        r = check_args(conn, tenant, node, term, err, errlen);
        if (r < 0)
                return r;
        if (what) {
                r = check_ms(what, ms, min, err, errlen);
                if (r < 0)
                        return r;
                snprintf(ms_s, MS_BUF, "%u", ms);
        }
        snprintf(term_s, TERM_BUF, "%" PRId64, term);
        return 0;
}

/* The term is no longer node's: -ESTALE, with the message. */
static int stale(const char *tenant, const char *node, int64_t term, char *err, size_t errlen) {
        fleetdb_set_error(err, errlen, "term %" PRId64 " of %s's lane is no longer %s's", term, tenant, node);
        return -ESTALE;
}

int lease_migrate(PGconn *conn, int *ret_version, char *err, size_t errlen) {
        return fleetdb_migrate(conn, ret_version, err, errlen);
}

int lease_acquire(PGconn *conn, const char *tenant, const char *node, unsigned lease_ms, unsigned settle_ms,
                  LeaseGrant *ret, char *err, size_t errlen) {
        char lease_s[MS_BUF], settle_s[MS_BUF];
        const char *params[] = { tenant, node, lease_s, settle_s };
        PGresult *res = NULL;
        LeaseGrant g = {};
        int r;

        assert(conn);
        assert(ret);
        r = check_args(conn, tenant, node, 0, err, errlen);
        if (r < 0)
                return r;
        r = check_ms("lease_ms", lease_ms, 1, err, errlen);
        if (r < 0)
                return r;
        r = check_ms("settle_ms", settle_ms, 0, err, errlen);
        if (r < 0)
                return r;
        snprintf(lease_s, sizeof(lease_s), "%u", lease_ms);
        snprintf(settle_s, sizeof(settle_s), "%u", settle_ms);

        r = fleetdb_exec(conn, "acquire the lane", sql_acquire, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                fleetdb_set_error(err, errlen, "the lane of %s is held by another node", tenant);
                return -EBUSY;
        }
        if (fleetdb_get_i64(res, 0, &g.term) < 0 || fleetdb_get_i64(res, 1, &g.expires_at_ms) < 0 ||
            fleetdb_get_i64(res, 2, &g.wait_until_ms) < 0 || fleetdb_get_i64(res, 3, &g.wait_ms) < 0) {
                PQclear(res);
                fleetdb_set_error(err, errlen, "acquire the lane: unreadable answer");
                return -EBADMSG;
        }
        PQclear(res);
        *ret = g;
        return 0;
}

int lease_renew(PGconn *conn, const char *tenant, const char *node, int64_t term, unsigned lease_ms,
                int64_t *ret_expires_at_ms, char *err, size_t errlen) {
        char term_s[TERM_BUF], lease_s[MS_BUF];
        const char *params[] = { tenant, node, term_s, lease_s };
        PGresult *res = NULL;
        int64_t expires = 0;
        int r;

        assert(conn);
        r = term_params(conn, tenant, node, term, "lease_ms", lease_ms, 1, term_s, lease_s, err, errlen);
        if (r < 0)
                return r;

        r = fleetdb_exec(conn, "renew the lease", sql_renew, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                return stale(tenant, node, term, err, errlen);
        }
        r = fleetdb_get_i64(res, 0, &expires);
        PQclear(res);
        if (r < 0) {
                fleetdb_set_error(err, errlen, "renew the lease: unreadable answer");
                return r;
        }
        if (ret_expires_at_ms)
                *ret_expires_at_ms = expires;
        return 0;
}

int lease_check_term(PGconn *conn, const char *tenant, const char *node, int64_t term, char *err, size_t errlen) {
        char term_s[TERM_BUF];
        const char *params[] = { tenant, node, term_s };
        PGresult *res = NULL;
        int r;

        assert(conn);
        r = term_params(conn, tenant, node, term, NULL, 0, 0, term_s, NULL, err, errlen);
        if (r < 0)
                return r;
        r = fleetdb_exec(conn, "check the term", sql_check_term, 3, params, &res, err, errlen);
        if (r < 0)
                return r;
        r = PQntuples(res) == 1 ? 0 : stale(tenant, node, term, err, errlen);
        PQclear(res);
        return r;
}

int lease_fence_call(PGconn *conn, const char *tenant, const char *node, int64_t term, unsigned call_deadline_ms,
                     int64_t *ret_wait_ms, char *err, size_t errlen) {
        char term_s[TERM_BUF], deadline_s[MS_BUF];
        const char *params[] = { tenant, node, term_s, deadline_s };
        PGresult *res = NULL;
        int64_t wait = 0;
        int r;

        assert(conn);
        r = term_params(conn, tenant, node, term, "call_deadline_ms", call_deadline_ms, 1, term_s, deadline_s, err,
                        errlen);
        if (r < 0)
                return r;

        r = fleetdb_exec(conn, "fence the write call", sql_fence, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) == 1) {
                PQclear(res);
                return 0;
        }
        PQclear(res);
        res = NULL;

        /* Not fenced: tell a term that must still wait from one that is over. */
        r = fleetdb_exec(conn, "fence the write call", sql_fence_why, 3, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) && streq(PQgetvalue(res, 0, 0), "t")) {
                r = fleetdb_get_i64(res, 1, &wait);
                PQclear(res);
                if (r < 0) {
                        fleetdb_set_error(err, errlen, "fence the write call: unreadable answer");
                        return r;
                }
                fleetdb_set_error(err, errlen, "term %" PRId64 " of %s's lane may send in %" PRId64 " ms", term, tenant, wait);
                if (ret_wait_ms)
                        *ret_wait_ms = wait;
                return -EAGAIN;
        }
        PQclear(res);
        return stale(tenant, node, term, err, errlen);
}

int lease_call_end(PGconn *conn, const char *tenant, const char *node, int64_t term, bool answered,
                   unsigned settle_ms, char *err, size_t errlen) {
        char term_s[TERM_BUF], settle_s[MS_BUF];
        const char *params[] = { tenant, node, term_s, settle_s };
        PGresult *res = NULL;
        int r;

        assert(conn);
        r = term_params(conn, tenant, node, term, "settle_ms", settle_ms, 0, term_s, settle_s, err, errlen);
        if (r < 0)
                return r;

        r = answered ? fleetdb_exec(conn, "end the write call", sql_call_answered, 3, params, &res, err, errlen)
                     : fleetdb_exec(conn, "end the write call", sql_call_lost, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        r = PQntuples(res) == 1 ? 0 : -ESTALE;
        PQclear(res);
        return r < 0 ? stale(tenant, node, term, err, errlen) : 0;
}

int lease_release(PGconn *conn, const char *tenant, const char *node, int64_t term, char *err, size_t errlen) {
        char term_s[TERM_BUF];
        const char *params[] = { tenant, node, term_s };
        PGresult *res = NULL;
        int r;

        assert(conn);
        r = term_params(conn, tenant, node, term, NULL, 0, 0, term_s, NULL, err, errlen);
        if (r < 0)
                return r;

        r = fleetdb_exec(conn, "release the lane", sql_release, 3, params, &res, err, errlen);
        if (r < 0)
                return r;
        r = PQntuples(res) == 1 ? 0 : -ESTALE;
        PQclear(res);
        return r < 0 ? stale(tenant, node, term, err, errlen) : 0;
}

int lease_status(PGconn *conn, const char *tenant, LeaseStatus *ret, char *err, size_t errlen) {
        const char *params[] = { tenant };
        PGresult *res = NULL;
        LeaseStatus s = {};
        int r;

        assert(conn);
        assert(ret);
        r = check_args(conn, tenant, "-", 0, err, errlen);
        if (r < 0)
                return r;

        r = fleetdb_exec(conn, "read the lane", sql_status, 1, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) == 1) { /* always: the clock's row, joined with the lane's if any */
                snprintf(s.holder, sizeof(s.holder), "%s", PQgetvalue(res, 0, 0));
                s.held = streq(PQgetvalue(res, 0, 2), "t");
                if (fleetdb_get_i64(res, 1, &s.term) < 0 || fleetdb_get_i64(res, 3, &s.expires_at_ms) < 0 ||
                    fleetdb_get_i64(res, 4, &s.open_call_deadline_ms) < 0 || fleetdb_get_i64(res, 5, &s.wait_until_ms) < 0 ||
                    fleetdb_get_i64(res, 6, &s.now_ms) < 0) {
                        PQclear(res);
                        fleetdb_set_error(err, errlen, "read the lane: unreadable answer");
                        return -EBADMSG;
                }
        }
        PQclear(res);
        *ret = s;
        return 0;
}
