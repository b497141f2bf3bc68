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

static const char *const migrations[FLEETDB_SCHEMA_VERSION] = {
        /* 1, lease.c: the publish lane, one row per tenant. */
        "CREATE TABLE fleet_lanes ("
        " tenant text PRIMARY KEY,"
        " holder text,"                   /* NULL: released */
        " term bigint NOT NULL CHECK (term > 0),"
        " expires_at timestamptz,"
        " acquired_at timestamptz,"
        " send_after timestamptz,"        /* no write call on the lane before this */
        " open_call_deadline timestamptz" /* a fenced call may run until this; NULL: none open */
        ")",
        /* 2, fleetbudget.c: the rate budget, one row per tenant. The buckets hold tokens as of
         * refilled_at and refill continuously, cap per period, computed from the database's clock
         * at each use. */
        "CREATE TABLE fleet_budgets ("
        " tenant text PRIMARY KEY,"
        " minute_cap integer NOT NULL CHECK (minute_cap > 0),"
        " hour_cap integer NOT NULL CHECK (hour_cap > 0),"
        " minute_ms integer NOT NULL CHECK (minute_ms > 0)," /* the minute bucket's period: 60000 */
        " hour_ms integer NOT NULL CHECK (hour_ms > 0),"     /* the hour bucket's: 3600000 */
        " minute_tokens double precision NOT NULL,"
        " hour_tokens double precision NOT NULL,"
        " refilled_at timestamptz NOT NULL,"
        " blocked_until timestamptz"                         /* a 429's Retry-After; NULL: none */
        ")",
        /* 3, fleet.c: the fleet's nodes, one row per running process, its heartbeat in seen_at.
         * For /status: who is in the fleet and when each was last heard of. */
        "CREATE TABLE fleet_nodes ("
        " node text PRIMARY KEY,"
        " tenant text NOT NULL,"
        " started_at timestamptz NOT NULL,"               /* the node's first heartbeat */
        " seen_at timestamptz NOT NULL,"                  /* its latest */
        " pid integer,"
        " hostname text,"
        " version text"                                   /* visierd's PACKAGE_VERSION */
        ")",
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
        else if (streq(state, "42P01"))
                r = -EPROTO; /* undefined table: the fleet schema was never migrated */
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
                r = fleetdb_exec_simple(conn, what, migrations[v - 1], err, errlen);
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
