/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet schema and libpq at the edge of the fleet modules (see fleetdb.h).
 *
 * DESIGN: one schema for all of fleet mode, one version number, one list of migrations below:
 * migration N takes the schema from version N-1 to N, and each names the module that owns the
 * tables it creates. The migration runs in one transaction under a transaction-scoped advisory
 * lock (released at commit, so it works behind a pooler in transaction mode), so nodes starting
 * at once migrate one after the other and a failed step leaves the schema as it was.
 *
 * Must never log or keep state.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetdb.h"

/* Each migration's statements, run in order (a NULL ends the list). */
#define MIGRATION_STATEMENTS_MAX 8

static const char *const migrations[FLEETDB_SCHEMA_VERSION][MIGRATION_STATEMENTS_MAX] = {
        /* 1, lease.c: the publish lane, one row per tenant. */
        { "CREATE TABLE fleet_lanes ("
        " tenant text PRIMARY KEY,"
        " holder text,"                   /* NULL: released */
        " term bigint NOT NULL CHECK (term > 0),"
        " expires_at timestamptz,"
        " acquired_at timestamptz,"
        " send_after timestamptz,"        /* no write call on the lane before this */
        " open_call_deadline timestamptz" /* a fenced call may run until this; NULL: none open */
        ")" },
        /* 2, fleetbudget.c: the rate budget, one row per tenant (its buckets became sliding
         * windows in 4). */
        { "CREATE TABLE fleet_budgets ("
        " tenant text PRIMARY KEY,"
        " minute_cap integer NOT NULL CHECK (minute_cap > 0),"
        " hour_cap integer NOT NULL CHECK (hour_cap > 0),"
        " minute_ms integer NOT NULL CHECK (minute_ms > 0)," /* the minute bucket's period: 60000 */
        " hour_ms integer NOT NULL CHECK (hour_ms > 0),"     /* the hour bucket's: 3600000 */
        " minute_tokens double precision NOT NULL,"
        " hour_tokens double precision NOT NULL,"
        " refilled_at timestamptz NOT NULL,"
        " blocked_until timestamptz"                         /* a 429's Retry-After; NULL: none */
        ")" },
        /* 3, fleet.c: the fleet's nodes, one row per running process, its heartbeat in seen_at.
         * For /status: who is in the fleet and when each was last heard of. */
        { "CREATE TABLE fleet_nodes ("
        " node text PRIMARY KEY,"
        " tenant text NOT NULL,"
        " started_at timestamptz NOT NULL,"               /* the node's first heartbeat */
        " seen_at timestamptz NOT NULL,"                  /* its latest */
        " pid integer,"
        " hostname text,"
        " version text"                                   /* visierd's PACKAGE_VERSION */
        ")" },
        /* 4, fleetbudget.c: the rate budget's windows slide. Each call taken is counted in
         * fleet_budget_calls until its place comes back (back_at_ms: the database's clock in ms
         * since the epoch); calls whose places come back in the same slot share a row. The
         * functions each run as one statement's worth of work under the budget row's lock. */
        { "ALTER TABLE fleet_budgets DROP COLUMN minute_tokens, DROP COLUMN hour_tokens, DROP COLUMN refilled_at",
        "CREATE TABLE fleet_budget_calls ("
        " tenant text NOT NULL REFERENCES fleet_budgets ON DELETE CASCADE,"
        " span text NOT NULL CHECK (span IN ('minute', 'hour')),"
        " back_at_ms bigint NOT NULL,"
        " n integer NOT NULL CHECK (n > 0),"
        " PRIMARY KEY (tenant, span, back_at_ms)"
        ")",
        /* The calls of one span still counted at p_now, and how long until p_need are free. */
        "CREATE FUNCTION fleet_budget_span(p_tenant text, p_span text, p_cap integer, p_length_ms integer,"
        " p_slack_ms integer, p_need float8, p_now bigint, OUT free float8, OUT wait_ms bigint)"
        " LANGUAGE plpgsql STABLE AS $f$"
        " BEGIN"
        "  SELECT p_cap - coalesce(sum(c.n), 0) INTO free FROM fleet_budget_calls c"
        "   WHERE c.tenant = p_tenant AND c.span = p_span AND c.back_at_ms > p_now;"
        "  IF p_need <= free THEN wait_ms := 0; RETURN; END IF;"
        "  SELECT s.back_at_ms - p_now INTO wait_ms FROM (SELECT c.back_at_ms, sum(c.n) OVER (ORDER BY c.back_at_ms) AS back"
        "   FROM fleet_budget_calls c WHERE c.tenant = p_tenant AND c.span = p_span AND c.back_at_ms > p_now) s"
        "   WHERE s.back >= p_need - free ORDER BY s.back_at_ms LIMIT 1;"
        /* More than the cap is needed: never free; ask again after a whole window. */
        "  wait_ms := coalesce(wait_ms, p_length_ms + p_slack_ms);"
        " END $f$",
        /* Count p_n calls taken at p_now: their places come back the span's length plus the
         * slack later, rounded up to a slot of (length + slack) / 636 + 1 ms. */
        "CREATE FUNCTION fleet_budget_spend(p_tenant text, p_span text, p_length_ms integer, p_slack_ms integer,"
        " p_now bigint, p_n integer) RETURNS void LANGUAGE sql AS $f$"
        "  INSERT INTO fleet_budget_calls AS c (tenant, span, back_at_ms, n)"
        "  SELECT p_tenant, p_span, (p_now + p_length_ms + p_slack_ms + q - 1) / q * q, p_n"
        "   FROM (SELECT (p_length_ms + p_slack_ms)::bigint / 636 + 1 AS q) s"
        "  ON CONFLICT (tenant, span, back_at_ms) DO UPDATE SET n = c.n + excluded.n"
        " $f$",
        /* Take one call if one and the reserve are free in both spans and no 429 closed the
         * budget: granted (NULL: no budget), else how long until one could be. */
        "CREATE FUNCTION fleet_budget_take(p_tenant text, p_reserve float8, p_slack_ms integer,"
        " OUT granted boolean, OUT wait_ms bigint, OUT at_ms bigint, OUT minute_left bigint, OUT hour_left bigint)"
        " LANGUAGE plpgsql AS $f$"
        " DECLARE b fleet_budgets%ROWTYPE; m record; h record; need float8; t timestamptz;"
        " BEGIN"
        "  SELECT * INTO b FROM fleet_budgets WHERE tenant = p_tenant FOR UPDATE;"
        "  IF NOT FOUND THEN RETURN; END IF;"
        "  t := clock_timestamp();"
        "  at_ms := floor(extract(epoch from t) * 1000)::bigint;"
        "  DELETE FROM fleet_budget_calls WHERE tenant = p_tenant AND back_at_ms <= at_ms;"
        "  need := 1 + p_reserve * b.minute_cap;"
        "  SELECT * INTO m FROM fleet_budget_span(p_tenant, 'minute', b.minute_cap, b.minute_ms, p_slack_ms, need, at_ms);"
        "  SELECT * INTO h FROM fleet_budget_span(p_tenant, 'hour', b.hour_cap, b.hour_ms, p_slack_ms, need, at_ms);"
        "  wait_ms := greatest(m.wait_ms, h.wait_ms,"
        "   coalesce(ceil(extract(epoch from b.blocked_until - t) * 1000)::bigint, 0));"
        "  granted := wait_ms <= 0;"
        "  IF granted THEN"
        "   PERFORM fleet_budget_spend(p_tenant, 'minute', b.minute_ms, p_slack_ms, at_ms, 1);"
        "   PERFORM fleet_budget_spend(p_tenant, 'hour', b.hour_ms, p_slack_ms, at_ms, 1);"
        "   wait_ms := 0; minute_left := greatest(0, floor(m.free - 1)); hour_left := greatest(0, floor(h.free - 1));"
        "  ELSE"
        "   minute_left := greatest(0, floor(m.free)); hour_left := greatest(0, floor(h.free));"
        "  END IF;"
        " END $f$",
        /* Visier said how many calls remain in each span (negative: not said): the calls it
         * counts and the budget does not are counted as taken now. false: no budget. */
        "CREATE FUNCTION fleet_budget_observe(p_tenant text, p_minute bigint, p_hour bigint, p_slack_ms integer)"
        " RETURNS boolean LANGUAGE plpgsql AS $f$"
        " DECLARE b fleet_budgets%ROWTYPE; now_ms bigint; f float8;"
        " BEGIN"
        "  SELECT * INTO b FROM fleet_budgets WHERE tenant = p_tenant FOR UPDATE;"
        "  IF NOT FOUND THEN RETURN false; END IF;"
        "  now_ms := floor(extract(epoch from clock_timestamp()) * 1000)::bigint;"
        "  DELETE FROM fleet_budget_calls WHERE tenant = p_tenant AND back_at_ms <= now_ms;"
        "  IF p_minute >= 0 THEN"
        "   f := (fleet_budget_span(p_tenant, 'minute', b.minute_cap, b.minute_ms, p_slack_ms, 0, now_ms)).free;"
        "   IF f - p_minute >= 1 THEN"
        "    PERFORM fleet_budget_spend(p_tenant, 'minute', b.minute_ms, p_slack_ms, now_ms, floor(f - p_minute)::integer);"
        "   END IF;"
        "  END IF;"
        "  IF p_hour >= 0 THEN"
        "   f := (fleet_budget_span(p_tenant, 'hour', b.hour_cap, b.hour_ms, p_slack_ms, 0, now_ms)).free;"
        "   IF f - p_hour >= 1 THEN"
        "    PERFORM fleet_budget_spend(p_tenant, 'hour', b.hour_ms, p_slack_ms, now_ms, floor(f - p_hour)::integer);"
        "   END IF;"
        "  END IF;"
        "  RETURN true;"
        " END $f$" },
};

void fleetdb_set_error(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (err && errlen > 0) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
}

void fleetdb_message(PGconn *conn, const PGresult *res, char *buf, size_t len) {
        const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        size_t n;

        assert(buf);
        assert(len > 0);
        if (!msg || !*msg)
                msg = PQerrorMessage(conn);
        snprintf(buf, len, "%s", strempty(msg));
        n = strlen(buf);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                buf[--n] = '\0';
}

bool fleetdb_connection_lost(PGconn *conn, const PGresult *res) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

        if (PQstatus(conn) != CONNECTION_OK)
                return true;
        /* A failed write to a server that went away may leave the status OK until libpq reads:
         * an error of libpq's own (no SQLSTATE) is a lost connection if reading says so. */
        if (!state)
                return res && PQconsumeInput(conn) == 0;
        /* Connection exception, server shutting down or restarting. */
        return strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0;
}

int fleetdb_error(PGconn *conn, const PGresult *res, const char *what, char *err, size_t errlen) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        char buf[FLEETDB_ERROR_MAX];
        int r;

        fleetdb_message(conn, res, buf, sizeof(buf));
        if (fleetdb_connection_lost(conn, res))
                r = -ENOTCONN;
        else if (!state)
                r = res ? -EIO : -ENOMEM; /* no result at all: libpq could not allocate one */
        else if (streq(state, "40001") || streq(state, "40P01"))
                r = -EAGAIN;
        else if (streq(state, "42P01") || streq(state, "42883"))
                r = -EPROTO; /* undefined table or function: the fleet schema was never migrated */
        else if (streq(state, "53100"))
                r = -ENOSPC;
        else if (streq(state, "53200"))
                r = -ENOMEM;
        else
                r = -EIO;
        fleetdb_set_error(err, errlen, "%s: %s%s%s%s", what, buf, state ? " (SQLSTATE " : "", strempty(state),
                          state ? ")" : "");
        return r;
}

int fleetdb_exec(PGconn *conn, const char *what, const char *sql, int n, const char *const *params, PGresult **ret,
                 char *err, size_t errlen) {
        PGresult *res;
        ExecStatusType st;

        res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
        st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
                int r = fleetdb_error(conn, res, what, err, errlen);
                PQclear(res);
                return r;
        }
        *ret = res;
        return 0;
}

int fleetdb_exec_simple(PGconn *conn, const char *what, const char *sql, char *err, size_t errlen) {
        PGresult *res = NULL;
        int r = fleetdb_exec(conn, what, sql, 0, NULL, &res, err, errlen);

        PQclear(res);
        return r;
}

int fleetdb_get_i64(const PGresult *res, int col, int64_t *ret) {
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

int fleetdb_check_name(const char *what, const char *s, char *err, size_t errlen) {
        if (!s || !*s || strlen(s) > FLEETDB_NAME_MAX) {
                fleetdb_set_error(err, errlen, "%s must be 1 to %d bytes", what, FLEETDB_NAME_MAX);
                return -EINVAL;
        }
        return 0;
}

int fleetdb_check_conn(PGconn *conn, char *err, size_t errlen) {
        if (PQstatus(conn) != CONNECTION_OK) {
                fleetdb_set_error(err, errlen, "the connection to the fleet database is gone");
                return -ENOTCONN;
        }
        if (PQtransactionStatus(conn) == PQTRANS_INERROR) {
                fleetdb_set_error(err, errlen, "the connection's transaction has already failed: roll it back");
                return -EIO;
        }
        if (PQtransactionStatus(conn) == PQTRANS_ACTIVE) {
                fleetdb_set_error(err, errlen, "the connection is busy with another command");
                return -EBUSY;
        }
        return 0;
}

int fleetdb_migrate(PGconn *conn, int *ret_version, char *err, size_t errlen) {
        PGresult *res = NULL;
        int64_t version = 0;
        int r;

        assert(conn);
        if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
                fleetdb_set_error(err, errlen, "the fleet schema must be migrated outside a transaction");
                return -EINVAL;
        }
        r = fleetdb_exec_simple(conn, "begin migration", "BEGIN", err, errlen);
        if (r < 0)
                return r;
        /* Concurrent nodes starting at once wait here for each other. */
        r = fleetdb_exec_simple(conn, "lock the fleet schema",
                                "SELECT pg_advisory_xact_lock(hashtext('visierd fleet schema'))", err, errlen);
        if (r < 0)
                goto out;
        /* No NOTICE ("already exists") for the caller's notice processor: this module is silent. */
        r = fleetdb_exec_simple(conn, "quiet the migration", "SET LOCAL client_min_messages = warning", err, errlen);
        if (r < 0)
                goto out;
        r = fleetdb_exec_simple(conn, "create fleet_schema_version",
                                "CREATE TABLE IF NOT EXISTS fleet_schema_version ("
                                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                                err, errlen);
        if (r < 0)
                goto out;
        r = fleetdb_exec(conn, "read the fleet schema version",
                         "SELECT coalesce(max(version), 0)::bigint FROM fleet_schema_version", 0, NULL, &res, err,
                         errlen);
        if (r < 0)
                goto out;
        r = fleetdb_get_i64(res, 0, &version);
        PQclear(res);
        res = NULL;
        if (r < 0) {
                fleetdb_set_error(err, errlen, "unreadable fleet schema version");
                goto out;
        }
        if (version > FLEETDB_SCHEMA_VERSION) {
                fleetdb_set_error(err, errlen, "the fleet schema is at version %" PRId64 ", newer than this visierd's %d",
                                  version, FLEETDB_SCHEMA_VERSION);
                r = -EPROTO;
                goto out;
        }
        for (int64_t v = version + 1; v <= FLEETDB_SCHEMA_VERSION; v++) {
                char vs[24], what[64];
                const char *params[] = { vs };

                snprintf(what, sizeof(what), "fleet schema migration %" PRId64, v);
                for (size_t i = 0; i < MIGRATION_STATEMENTS_MAX && migrations[v - 1][i] && r >= 0; i++)
                        r = fleetdb_exec_simple(conn, what, migrations[v - 1][i], err, errlen);
                if (r < 0)
                        goto out;
                snprintf(vs, sizeof(vs), "%" PRId64, v);
                r = fleetdb_exec(conn, what, "INSERT INTO fleet_schema_version (version) VALUES ($1::integer)", 1,
                                 params, &res, err, errlen);
                PQclear(res);
                res = NULL;
                if (r < 0)
                        goto out;
        }
        r = fleetdb_exec_simple(conn, "commit migration", "COMMIT", err, errlen);
        if (r < 0)
                goto out;
        if (ret_version)
                *ret_version = FLEETDB_SCHEMA_VERSION;
        return 0;
out:
        if (PQtransactionStatus(conn) != PQTRANS_IDLE && PQtransactionStatus(conn) != PQTRANS_UNKNOWN)
                PQclear(PQexec(conn, "ROLLBACK"));
        return r;
}
