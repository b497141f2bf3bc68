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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"
#include "macro.h"

/* A timestamptz as milliseconds since the epoch (NULL stays NULL). */
#define MS(x) "floor(extract(epoch from " x ") * 1000)::bigint"
/* How long from now until x, in whole milliseconds rounded up, never negative. */
#define WAIT_MS(x) "greatest(0, ceil(extract(epoch from (" x " - clock_timestamp())) * 1000))::bigint"
#define MILLIS(p) "(" p "::bigint * interval '1 millisecond')"

/* Migration N takes the fleet schema from version N-1 to N. */
static const char *const migrations[LEASE_SCHEMA_VERSION] = {
        /* 1: the publish lane, one row per tenant. */
        "CREATE TABLE fleet_lanes ("
        " tenant text PRIMARY KEY,"
        " holder text,"                   /* NULL: released */
        " term bigint NOT NULL CHECK (term > 0),"
        " expires_at timestamptz,"
        " acquired_at timestamptz,"
        " send_after timestamptz,"        /* no write call on the lane before this */
        " open_call_deadline timestamptz" /* a fenced call may run until this; NULL: none open */
        ")",
};

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

_printf_(3, 4) static void set_error(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (err && errlen > 0) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
}

/* A libpq failure as a negative errno, with what was being done and the server's words. */
static int pg_error(PGconn *conn, const PGresult *res, const char *what, char *err, size_t errlen) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        char buf[LEASE_ERROR_MAX];
        size_t n;
        int r;

        if (!msg || !*msg)
                msg = PQerrorMessage(conn);
        snprintf(buf, sizeof(buf), "%s", strempty(msg));
        n = strlen(buf);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                buf[--n] = '\0';

        /* A failed write to a server that went away may leave the status OK until libpq reads:
         * an error of libpq's own (no SQLSTATE) is a lost connection if reading says so. */
        if (PQstatus(conn) == CONNECTION_OK && !state && res && PQconsumeInput(conn) == 0)
                r = -ENOTCONN;
        else if (PQstatus(conn) != CONNECTION_OK)
                r = -ENOTCONN;
        else if (!state)
                r = res ? -EIO : -ENOMEM; /* no result at all: libpq could not allocate one */
        else if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0)
                r = -ENOTCONN; /* connection exception, server shutting down or restarting */
        else if (streq(state, "40001") || streq(state, "40P01"))
                r = -EAGAIN;
        else if (streq(state, "42P01"))
                r = -EPROTO; /* undefined table: the fleet schema was never migrated */
        else if (streq(state, "53100"))
                r = -ENOSPC;
        else if (streq(state, "53200"))
                r = -ENOMEM;
        else
                r = -EIO;
        set_error(err, errlen, "%s: %s%s%s%s", what, buf, state ? " (SQLSTATE " : "", strempty(state),
                  state ? ")" : "");
        return r;
}

/* Run one statement; *ret is the result (tuples or command), else a negative errno. */
static int exec(PGconn *conn, const char *what, const char *sql, int n, const char *const *params, PGresult **ret,
                char *err, size_t errlen) {
        PGresult *res;
        ExecStatusType st;

        res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
        st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
                int r = pg_error(conn, res, what, err, errlen);
                PQclear(res);
                return r;
        }
        *ret = res;
        return 0;
}

static int exec_simple(PGconn *conn, const char *what, const char *sql, char *err, size_t errlen) {
        PGresult *res = NULL;
        int r = exec(conn, what, sql, 0, NULL, &res, err, errlen);

        PQclear(res);
        return r;
}

/* A bigint column; NULL reads as 0. */
static int get_i64(const PGresult *res, int col, int64_t *ret) {
        const char *s;
        char *end;
        long long v;

        if (PQgetisnull(res, 0, col)) {
                *ret = 0;
                return 0;
        }
        s = PQgetvalue(res, 0, col);
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || end == s || *end)
                return -EBADMSG;
        *ret = v;
        return 0;
}

static int check_name(const char *what, const char *s, char *err, size_t errlen) {
        if (!s || !*s || strlen(s) > LEASE_NAME_MAX) {
                set_error(err, errlen, "%s must be 1 to %d bytes", what, LEASE_NAME_MAX);
                return -EINVAL;
        }
        return 0;
}

static int check_args(PGconn *conn, const char *tenant, const char *node, int64_t term, char *err, size_t errlen) {
        int r;

        if (PQtransactionStatus(conn) == PQTRANS_INERROR) {
                set_error(err, errlen, "the connection's transaction has already failed: roll it back");
                return -EIO;
        }
        if (PQtransactionStatus(conn) == PQTRANS_ACTIVE) {
                set_error(err, errlen, "the connection is busy with another command");
                return -EBUSY;
        }
        r = check_name("tenant", tenant, err, errlen);
        if (r < 0)
                return r;
        r = check_name("node", node, err, errlen);
        if (r < 0)
                return r;
        if (term < 0) {
                set_error(err, errlen, "term must not be negative");
                return -EINVAL;
        }
        return 0;
}

static int check_ms(const char *what, unsigned ms, unsigned min, char *err, size_t errlen) {
        if (ms < min || ms > LEASE_MS_MAX) {
                set_error(err, errlen, "%s must be %u to %u ms", what, min, LEASE_MS_MAX);
                return -EINVAL;
        }
        return 0;
}

int lease_migrate(PGconn *conn, int *ret_version, char *err, size_t errlen) {
        PGresult *res = NULL;
        int64_t version = 0;
        int r;

        assert(conn);
        if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
                set_error(err, errlen, "lease_migrate must run outside a transaction");
                return -EINVAL;
        }
        r = exec_simple(conn, "begin migration", "BEGIN", err, errlen);
        if (r < 0)
                return r;
        /* Concurrent nodes starting at once wait here for each other. A transaction-scoped lock,
         * released at commit: it works behind a pooler in transaction mode. */
        r = exec_simple(conn, "lock the fleet schema", "SELECT pg_advisory_xact_lock(hashtext('visierd fleet schema'))",
                        err, errlen);
        if (r < 0)
                goto out;
        /* No NOTICE ("already exists") for the caller's notice processor: this module is silent. */
        r = exec_simple(conn, "quiet the migration", "SET LOCAL client_min_messages = warning", err, errlen);
        if (r < 0)
                goto out;
        r = exec_simple(conn, "create fleet_schema_version",
                        "CREATE TABLE IF NOT EXISTS fleet_schema_version ("
                        " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                        err, errlen);
        if (r < 0)
                goto out;
        r = exec(conn, "read the fleet schema version", "SELECT coalesce(max(version), 0)::bigint FROM fleet_schema_version",
                 0, NULL, &res, err, errlen);
        if (r < 0)
                goto out;
        r = get_i64(res, 0, &version);
        PQclear(res);
        res = NULL;
        if (r < 0) {
                set_error(err, errlen, "unreadable fleet schema version");
                goto out;
        }
        if (version > LEASE_SCHEMA_VERSION) {
                set_error(err, errlen, "the fleet schema is at version %" PRId64 ", newer than this visierd's %d",
                          version, LEASE_SCHEMA_VERSION);
                r = -EPROTO;
                goto out;
        }
        for (int64_t v = version + 1; v <= LEASE_SCHEMA_VERSION; v++) {
                char vs[24], what[64];
                const char *params[] = { vs };

                snprintf(what, sizeof(what), "fleet schema migration %" PRId64, v);
                r = exec_simple(conn, what, migrations[v - 1], err, errlen);
                if (r < 0)
                        goto out;
                snprintf(vs, sizeof(vs), "%" PRId64, v);
                r = exec(conn, what, "INSERT INTO fleet_schema_version (version) VALUES ($1::integer)", 1, params, &res,
                         err, errlen);
                PQclear(res);
                res = NULL;
                if (r < 0)
                        goto out;
        }
        r = exec_simple(conn, "commit migration", "COMMIT", err, errlen);
        if (r < 0)
                goto out;
        if (ret_version)
                *ret_version = LEASE_SCHEMA_VERSION;
        return 0;
out:
        if (PQtransactionStatus(conn) != PQTRANS_IDLE && PQtransactionStatus(conn) != PQTRANS_UNKNOWN)
                PQclear(PQexec(conn, "ROLLBACK"));
        return r;
}

int lease_acquire(PGconn *conn, const char *tenant, const char *node, unsigned lease_ms, unsigned settle_ms,
                  LeaseGrant *ret, char *err, size_t errlen) {
        char lease_s[16], settle_s[16];
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

        r = exec(conn, "acquire the lane", sql_acquire, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                set_error(err, errlen, "the lane of %s is held by another node", tenant);
                return -EBUSY;
        }
        if (get_i64(res, 0, &g.term) < 0 || get_i64(res, 1, &g.expires_at_ms) < 0 ||
            get_i64(res, 2, &g.wait_until_ms) < 0 || get_i64(res, 3, &g.wait_ms) < 0) {
                PQclear(res);
                set_error(err, errlen, "acquire the lane: unreadable answer");
                return -EBADMSG;
        }
        PQclear(res);
        *ret = g;
        return 0;
}

int lease_renew(PGconn *conn, const char *tenant, const char *node, int64_t term, unsigned lease_ms,
                int64_t *ret_expires_at_ms, char *err, size_t errlen) {
        char term_s[24], lease_s[16];
        const char *params[] = { tenant, node, term_s, lease_s };
        PGresult *res = NULL;
        int64_t expires = 0;
        int r;

        assert(conn);
        r = check_args(conn, tenant, node, term, err, errlen);
        if (r < 0)
                return r;
        r = check_ms("lease_ms", lease_ms, 1, err, errlen);
        if (r < 0)
                return r;
        snprintf(term_s, sizeof(term_s), "%" PRId64, term);
        snprintf(lease_s, sizeof(lease_s), "%u", lease_ms);

        r = exec(conn, "renew the lease", sql_renew, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                set_error(err, errlen, "term %" PRId64 " of %s's lane is no longer %s's", term, tenant, node);
                return -ESTALE;
        }
        r = get_i64(res, 0, &expires);
        PQclear(res);
        if (r < 0) {
                set_error(err, errlen, "renew the lease: unreadable answer");
                return r;
        }
        if (ret_expires_at_ms)
                *ret_expires_at_ms = expires;
        return 0;
}

int lease_fence_call(PGconn *conn, const char *tenant, const char *node, int64_t term, unsigned call_deadline_ms,
                     int64_t *ret_wait_ms, char *err, size_t errlen) {
        char term_s[24], deadline_s[16];
        const char *params[] = { tenant, node, term_s, deadline_s };
        PGresult *res = NULL;
        int64_t wait = 0;
        int r;

        assert(conn);
        r = check_args(conn, tenant, node, term, err, errlen);
        if (r < 0)
                return r;
        r = check_ms("call_deadline_ms", call_deadline_ms, 1, err, errlen);
        if (r < 0)
                return r;
        snprintf(term_s, sizeof(term_s), "%" PRId64, term);
        snprintf(deadline_s, sizeof(deadline_s), "%u", call_deadline_ms);

        r = exec(conn, "fence the write call", sql_fence, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) == 1) {
                PQclear(res);
                return 0;
        }
        PQclear(res);
        res = NULL;

        /* Not fenced: tell a term that must still wait from one that is over. */
        r = exec(conn, "fence the write call", sql_fence_why, 3, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) && streq(PQgetvalue(res, 0, 0), "t")) {
                r = get_i64(res, 1, &wait);
                PQclear(res);
                if (r < 0) {
                        set_error(err, errlen, "fence the write call: unreadable answer");
                        return r;
                }
                set_error(err, errlen, "term %" PRId64 " of %s's lane may send in %" PRId64 " ms", term, tenant, wait);
                if (ret_wait_ms)
                        *ret_wait_ms = wait;
                return -EAGAIN;
        }
        PQclear(res);
        set_error(err, errlen, "term %" PRId64 " of %s's lane is no longer %s's", term, tenant, node);
        return -ESTALE;
}

int lease_call_end(PGconn *conn, const char *tenant, const char *node, int64_t term, bool answered,
                   unsigned settle_ms, char *err, size_t errlen) {
        char term_s[24], settle_s[16];
        const char *params[] = { tenant, node, term_s, settle_s };
        PGresult *res = NULL;
        int r;

        assert(conn);
        r = check_args(conn, tenant, node, term, err, errlen);
        if (r < 0)
                return r;
        r = check_ms("settle_ms", settle_ms, 0, err, errlen);
        if (r < 0)
                return r;
        snprintf(term_s, sizeof(term_s), "%" PRId64, term);
        snprintf(settle_s, sizeof(settle_s), "%u", settle_ms);

        r = answered ? exec(conn, "end the write call", sql_call_answered, 3, params, &res, err, errlen)
                     : exec(conn, "end the write call", sql_call_lost, 4, params, &res, err, errlen);
        if (r < 0)
                return r;
        r = PQntuples(res) == 1 ? 0 : -ESTALE;
        PQclear(res);
        if (r < 0)
                set_error(err, errlen, "term %" PRId64 " of %s's lane is no longer %s's", term, tenant, node);
        return r;
}

int lease_release(PGconn *conn, const char *tenant, const char *node, int64_t term, char *err, size_t errlen) {
        char term_s[24];
        const char *params[] = { tenant, node, term_s };
        PGresult *res = NULL;
        int r;

        assert(conn);
        r = check_args(conn, tenant, node, term, err, errlen);
        if (r < 0)
                return r;
        snprintf(term_s, sizeof(term_s), "%" PRId64, term);

        r = exec(conn, "release the lane", sql_release, 3, params, &res, err, errlen);
        if (r < 0)
                return r;
        r = PQntuples(res) == 1 ? 0 : -ESTALE;
        PQclear(res);
        if (r < 0)
                set_error(err, errlen, "term %" PRId64 " of %s's lane is no longer %s's", term, tenant, node);
        return r;
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

        r = exec(conn, "read the lane", sql_status, 1, params, &res, err, errlen);
        if (r < 0)
                return r;
        if (PQntuples(res) == 1) { /* always: the clock's row, joined with the lane's if any */
                snprintf(s.holder, sizeof(s.holder), "%s", PQgetvalue(res, 0, 0));
                s.held = streq(PQgetvalue(res, 0, 2), "t");
                if (get_i64(res, 1, &s.term) < 0 || get_i64(res, 3, &s.expires_at_ms) < 0 ||
                    get_i64(res, 4, &s.open_call_deadline_ms) < 0 || get_i64(res, 5, &s.wait_until_ms) < 0 ||
                    get_i64(res, 6, &s.now_ms) < 0) {
                        PQclear(res);
                        set_error(err, errlen, "read the lane: unreadable answer");
                        return -EBADMSG;
                }
        }
        PQclear(res);
        *ret = s;
        return 0;
}
