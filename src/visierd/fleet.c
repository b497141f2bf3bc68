/* SPDX-License-Identifier: Apache-2.0 */
/*
 * This node's membership in the fleet (see fleet.h; the design is docs/fleet.md).
 *
 * DESIGN: two locks. conn_lock guards the PGconn (libpq wants one thread on a connection at a
 * time) and is held across each database call; state_lock guards the cached state and is held
 * only to copy it in or out. The order is conn_lock, then state_lock, never the other way, and
 * the readers (lane_usable, status, metrics) take state_lock alone, so none of them waits on
 * the database. The connection is opened lazily by the first call that needs it once the
 * reconnect backoff allows, and dropped (PQfinish) as soon as a call reports it lost, so a
 * lost connection costs each later call nothing until the next attempt.
 *
 * The lane's belief is three numbers on CLOCK_BOOTTIME — confirmed_at (the start of the last
 * granted renew or acquire), send_after and the term — and is evaluated against the clock at
 * the moment of use (fleet_lane_usable()), not by a timer.
 *
 * Must never log, and never put the password in an error, the status or a metric.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleet.h"
#include "lease.h"

typedef struct FleetNodeSeen {
        char node[FLEET_NAME_MAX + 1];
        int64_t seen_ms_ago; /* at the read */
} FleetNodeSeen;

struct Fleet {
        /* Set at creation, read-only after. */
        char *conninfo;
        char *url_shown;  /* conninfo for the status: the same, with the password scrubbed should it hold it */
        Secret *password; /* NULL: none */
        char node[FLEET_NAME_MAX + 1];
        char tenant[FLEET_NAME_MAX + 1];
        char hostname[256];
        unsigned lease_ms, renew_ms, settle_ms;

        pthread_mutex_t conn_lock; /* guards the fields below, to state_lock */
        PGconn *conn;
        usec_t reconnect_at; /* no connection attempt before this */
        usec_t backoff;
        bool caps_set;
        FleetBudgetCaps caps;

        pthread_mutex_t state_lock; /* guards everything below */
        /* The lane. */
        int64_t my_term; /* > 0: this node holds it, as far as it knows */
        usec_t confirmed_at, send_after;
        int64_t lane_term;
        char holder[FLEET_NAME_MAX + 1];
        usec_t lane_expires_at, lane_read_at;
        uint64_t lost;
        /* The budget, as last read or taken. */
        bool budget_known;
        unsigned minute_left, hour_left;
        int64_t blocked_ms;
        usec_t budget_read_at;
        /* The nodes seen. */
        FleetNodeSeen nodes[FLEET_NODES_MAX];
        size_t n_nodes;
        usec_t nodes_read_at;
        /* The database. */
        bool reachable;
        char error[FLEET_ERROR_MAX]; /* the last failure; "" none since the last success */
};

#define MILLIS(p) "(" p "::bigint * interval '1 millisecond')"

static const char *const sql_heartbeat =
        "INSERT INTO fleet_nodes (node, tenant, started_at, seen_at, pid, hostname, version)"
        " VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3::integer, $4, $5)"
        " ON CONFLICT (node) DO UPDATE SET tenant = excluded.tenant, seen_at = excluded.seen_at,"
        " pid = excluded.pid, hostname = excluded.hostname, version = excluded.version";

static const char *const sql_nodes =
        "SELECT node, greatest(0, floor(extract(epoch from (clock_timestamp() - seen_at)) * 1000))::bigint"
        " FROM fleet_nodes WHERE tenant = $1 AND seen_at > clock_timestamp() - " MILLIS("$2")
        " ORDER BY node LIMIT $3::integer";

static const char *const sql_forget =
        "DELETE FROM fleet_nodes WHERE seen_at < clock_timestamp() - " MILLIS("$1");

static const char *const sql_leave = "DELETE FROM fleet_nodes WHERE node = $1";

/* Copy into a fixed buffer (the source may be longer; callers checked lengths). */
static void copy_name(char *dst, size_t len, const char *src) {
        snprintf(dst, len, "%s", strempty(src));
}

/* Replace every occurrence of the password in s with "(hidden)": libpq never quotes it, but an
 * error text is shown to people, and this makes sure. */
static void scrub(const Fleet *f, char *s, size_t len) {
        static const char hidden[] = "(hidden)";
        const size_t n = sizeof(hidden) - 1;
        char *p, *from = s;

        if (!f->password || f->password->len == 0 || !s)
                return;
        while ((p = strstr(from, f->password->data))) {
                size_t tail = strlen(p + f->password->len);

                if ((size_t) (p - s) + n + tail >= len) {
                        *p = '\0'; /* no room: cut it off */
                        break;
                }
                memmove(p + n, p + f->password->len, tail + 1);
                memcpy(p, hidden, n);
                from = p + n; /* on after the replacement, which may itself hold the password */
        }
}

int fleet_params_from_config(const Config *c, FleetParams *ret) {
        if (!c || !config_fleet_mode(c) || !c->fleet_node || !c->fleet_tenant)
                return -EINVAL;
        *ret = (FleetParams) {
                .conninfo = c->store_url,
                .password = c->store_password,
                .node = c->fleet_node,
                .tenant = c->fleet_tenant,
                .lease_ms = c->fleet_lease_seconds * 1000U,
                .renew_ms = c->fleet_renew_seconds * 1000U,
                .settle_ms = c->publish_settle * 1000U,
        };
        return 0;
}

int fleet_new(const FleetParams *p, Fleet **ret, char *err, size_t errlen) {
        Fleet *f;
        int r;

        assert(p);
        assert(ret);
        if (!p->conninfo || !*p->conninfo) {
                fleetdb_set_error(err, errlen, "no connection string for the fleet database");
                return -EINVAL;
        }
        r = fleetdb_check_name("the node name", p->node, err, errlen);
        if (r < 0)
                return r;
        r = fleetdb_check_name("the tenant name", p->tenant, err, errlen);
        if (r < 0)
                return r;
        if (p->lease_ms == 0 || p->lease_ms > LEASE_MS_MAX || p->renew_ms == 0 ||
            2 * (uint64_t) p->renew_ms >= p->lease_ms || p->settle_ms > LEASE_MS_MAX) {
                fleetdb_set_error(err, errlen,
                                  "the lease (%u ms) must be 1 ms to %u ms and more than twice the renew interval "
                                  "(%u ms), the settle margin (%u ms) at most %u ms",
                                  p->lease_ms, LEASE_MS_MAX, p->renew_ms, p->settle_ms, LEASE_MS_MAX);
                return -EINVAL;
        }
        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        pthread_mutex_init(&f->conn_lock, NULL);
        pthread_mutex_init(&f->state_lock, NULL);
        f->conninfo = strdup(p->conninfo);
        if (p->password && p->password->len > 0)
                f->password = secret_dup(p->password);
        if (!f->conninfo || (p->password && p->password->len > 0 && !f->password)) {
                fleet_free(f);
                return -ENOMEM;
        }
        f->url_shown = strdup(p->conninfo);
        if (!f->url_shown) {
                fleet_free(f);
                return -ENOMEM;
        }
        scrub(f, f->url_shown, strlen(f->url_shown) + 1);
        copy_name(f->node, sizeof(f->node), p->node);
        copy_name(f->tenant, sizeof(f->tenant), p->tenant);
        if (p->hostname)
                copy_name(f->hostname, sizeof(f->hostname), p->hostname);
        else if (gethostname(f->hostname, sizeof(f->hostname) - 1) < 0)
                f->hostname[0] = '\0';
        f->lease_ms = p->lease_ms;
        f->renew_ms = p->renew_ms;
        f->settle_ms = p->settle_ms;
        f->backoff = FLEET_RECONNECT_MIN_USEC;
        *ret = f;
        return 0;
}

Fleet *fleet_free(Fleet *f) {
        if (!f)
                return NULL;
        PQfinish(f->conn);
        free(f->conninfo);
        free(f->url_shown);
        secret_free(f->password);
        pthread_mutex_destroy(&f->conn_lock);
        pthread_mutex_destroy(&f->state_lock);
        free(f);
        return NULL;
}

static void notice_ignore(void *arg, const char *message) {
}

/* The outcome of a database call under conn_lock, into the cached state: a failure (r < 0,
 * msg its text, already scrubbed) is kept for the status, and a lost connection is dropped and
 * the next attempt scheduled; a success (r >= 0) clears the error. */
static void fleet_note_locked(Fleet *f, int r, const char *msg) {
        if (r == -ENOTCONN && f->conn) {
                PQfinish(f->conn);
                f->conn = NULL;
                f->reconnect_at = clock_now() + f->backoff;
        }
        pthread_mutex_lock(&f->state_lock);
        f->reachable = f->conn != NULL;
        if (r < 0)
                snprintf(f->error, sizeof(f->error), "%s", msg && *msg ? msg : strerror(-r));
        else
                f->error[0] = '\0';
        pthread_mutex_unlock(&f->state_lock);
}

/* After a connection: the session's statement timeout, the fleet schema, the stale nodes gone,
 * the budget's caps. */
static int fleet_session_setup_locked(Fleet *f, char *err, size_t errlen) {
        char ms[24];
        const char *params[1] = { ms };
        PGresult *res = NULL;
        char sql[64];
        int r;

        PQsetNoticeProcessor(f->conn, notice_ignore, NULL);
        snprintf(sql, sizeof(sql), "SET statement_timeout = %d", FLEET_STATEMENT_TIMEOUT_MS);
        r = fleetdb_exec_simple(f->conn, "set the statement timeout", sql, err, errlen);
        if (r < 0)
                return r;
        r = fleetdb_migrate(f->conn, NULL, err, errlen);
        if (r < 0)
                return r;
        snprintf(ms, sizeof(ms), "%llu", (unsigned long long) FLEET_NODES_FORGET_SEC * 1000ULL);
        r = fleetdb_exec(f->conn, "forget old nodes", sql_forget, 1, params, &res, err, errlen);
        PQclear(res);
        if (r < 0)
                return r;
        if (f->caps_set)
                r = fleetbudget_set_caps(f->conn, f->tenant, &f->caps, err, errlen);
        return r;
}

/* A usable connection, or -ENOTCONN: at once while the backoff runs, else after one attempt
 * (bounded by the connect timeout). */
static int fleet_connect_locked(Fleet *f, char *err, size_t errlen) {
        char connect_timeout[16], keep_idle[16], keep_interval[16], keep_count[16], user_timeout[16];
        /* Earlier keywords are overridden by the expanded conninfo (its connect_timeout wins), the
         * password after it overrides whatever it says (config.c refused one in it anyway). */
        const char *keys[] = { "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                               "keepalives_count", "tcp_user_timeout", "fallback_application_name", "dbname",
                               "password", NULL };
        const char *values[ELEMENTSOF(keys)];
        usec_t now = clock_now();
        int r;

        if (f->conn && PQstatus(f->conn) == CONNECTION_OK)
                return 0;
        if (f->conn) {
                PQfinish(f->conn);
                f->conn = NULL;
                f->reconnect_at = now + f->backoff;
        }
        if (now < f->reconnect_at) {
                char last[FLEET_ERROR_MAX];

                /* No attempt: the cached error stays what the last attempt learnt. */
                pthread_mutex_lock(&f->state_lock);
                f->reachable = false;
                snprintf(last, sizeof(last), "%s", f->error);
                pthread_mutex_unlock(&f->state_lock);
                fleetdb_set_error(err, errlen, "the fleet database is unreachable (next attempt in %llu ms)%s%s",
                                  (unsigned long long) ((f->reconnect_at - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC),
                                  *last ? ": " : "", last);
                return -ENOTCONN;
        }
        snprintf(connect_timeout, sizeof(connect_timeout), "%d", FLEET_CONNECT_TIMEOUT_SEC);
        snprintf(keep_idle, sizeof(keep_idle), "%d", FLEET_KEEPALIVE_IDLE_SEC);
        snprintf(keep_interval, sizeof(keep_interval), "%d", FLEET_KEEPALIVE_INTERVAL_SEC);
        snprintf(keep_count, sizeof(keep_count), "%d", FLEET_KEEPALIVE_COUNT);
        snprintf(user_timeout, sizeof(user_timeout), "%d", FLEET_TCP_USER_TIMEOUT_MS);
        values[0] = connect_timeout;
        values[1] = "1";
        values[2] = keep_idle;
        values[3] = keep_interval;
        values[4] = keep_count;
        values[5] = user_timeout;
        values[6] = "visierd";
        values[7] = f->conninfo;
        values[8] = f->password ? f->password->data : NULL;
        values[9] = NULL;
        if (!f->password)
                keys[8] = NULL; /* no password keyword at all: libpq's own defaults apply */

        f->conn = PQconnectdbParams(keys, values, 1);
        if (!f->conn || PQstatus(f->conn) != CONNECTION_OK) {
                char msg[FLEET_ERROR_MAX];
                size_t n;

                snprintf(msg, sizeof(msg), "%s", f->conn ? PQerrorMessage(f->conn) : "out of memory");
                n = strlen(msg);
                while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
                        msg[--n] = '\0';
                fleetdb_set_error(err, errlen, "cannot connect to the fleet database: %s", msg);
                r = -ENOTCONN;
        } else
                r = fleet_session_setup_locked(f, err, errlen);
        if (r < 0) {
                usec_t cap = (usec_t) f->renew_ms * USEC_PER_MSEC;

                PQfinish(f->conn);
                f->conn = NULL;
                f->reconnect_at = clock_now() + f->backoff;
                f->backoff = f->backoff * 2 > cap ? cap : f->backoff * 2;
                scrub(f, err, errlen);
                fleet_note_locked(f, r, err);
                return r;
        }
        f->backoff = FLEET_RECONNECT_MIN_USEC;
        f->reconnect_at = 0;
        fleet_note_locked(f, 0, NULL);
        return 0;
}

static int fleet_heartbeat_locked(Fleet *f, char *err, size_t errlen) {
        char pid[24];
        const char *params[] = { f->node, f->tenant, pid, f->hostname, PACKAGE_VERSION };
        PGresult *res = NULL;
        int r;

        snprintf(pid, sizeof(pid), "%ld", (long) getpid());
        r = fleetdb_exec(f->conn, "heartbeat", sql_heartbeat, (int) ELEMENTSOF(params), params, &res, err, errlen);
        PQclear(res);
        return r;
}

/* Renew the term this node holds, or take the lane. */
static int fleet_lane_step_locked(Fleet *f, char *err, size_t errlen) {
        LeaseGrant g;
        int64_t term;
        usec_t start, end;
        int r;

        pthread_mutex_lock(&f->state_lock);
        term = f->my_term;
        pthread_mutex_unlock(&f->state_lock);
        if (term > 0) {
                start = clock_now(); /* before the statement: see fleet.h, the local expiry rule */
                r = lease_renew(f->conn, f->tenant, f->node, term, f->lease_ms, NULL, err, errlen);
                if (r == 0) {
                        pthread_mutex_lock(&f->state_lock);
                        if (f->my_term == term)
                                f->confirmed_at = start;
                        pthread_mutex_unlock(&f->state_lock);
                        return 0;
                }
                if (r != -ESTALE)
                        return r; /* the belief stands, and runs out by the local rule */
                pthread_mutex_lock(&f->state_lock);
                if (f->my_term == term) {
                        f->my_term = 0;
                        f->lost++;
                }
                pthread_mutex_unlock(&f->state_lock);
        }
        start = clock_now();
        r = lease_acquire(f->conn, f->tenant, f->node, f->lease_ms, f->settle_ms, &g, err, errlen);
        end = clock_now();
        if (r == -EBUSY) {
                if (err && errlen > 0)
                        err[0] = '\0';
                return 0; /* another node holds it: the status read says who */
        }
        if (r < 0)
                return r;
        pthread_mutex_lock(&f->state_lock);
        f->my_term = g.term;
        f->confirmed_at = start;
        /* The wait counts from the answer: the database measured it from the statement's time,
         * which came before, so this end falls no earlier than the database's. */
        f->send_after = end + (usec_t) (g.wait_ms > 0 ? g.wait_ms : 0) * USEC_PER_MSEC;
        f->lane_term = g.term;
        copy_name(f->holder, sizeof(f->holder), f->node);
        pthread_mutex_unlock(&f->state_lock);
        return 0;
}

static int fleet_read_lane_locked(Fleet *f, char *err, size_t errlen) {
        LeaseStatus s;
        usec_t at;
        int r;

        r = lease_status(f->conn, f->tenant, &s, err, errlen);
        at = clock_now();
        if (r < 0)
                return r;
        pthread_mutex_lock(&f->state_lock);
        copy_name(f->holder, sizeof(f->holder), s.held ? s.holder : "");
        f->lane_term = s.term;
        f->lane_expires_at = s.held && s.expires_at_ms > s.now_ms
                                     ? at + (usec_t) (s.expires_at_ms - s.now_ms) * USEC_PER_MSEC
                                     : 0;
        f->lane_read_at = at;
        if (f->my_term > 0) {
                if (!s.held || s.term != f->my_term || !streq(s.holder, f->node)) {
                        /* Expired by the database's clock, released, or a later term exists: this
                         * node's term is over (a renew would be refused). */
                        f->my_term = 0;
                        f->lost++;
                } else if (s.wait_until_ms > s.now_ms) {
                        /* The wait grew (a call whose answer was lost): it counts from this answer. */
                        usec_t until = at + (usec_t) (s.wait_until_ms - s.now_ms) * USEC_PER_MSEC;

                        if (until > f->send_after)
                                f->send_after = until;
                }
        }
        pthread_mutex_unlock(&f->state_lock);
        return 0;
}

static int fleet_read_budget_locked(Fleet *f, char *err, size_t errlen) {
        FleetBudgetStatus s;
        int r;

        r = fleetbudget_status(f->conn, f->tenant, &s, err, errlen);
        if (r == -ENOENT) {
                /* No caps set yet: nothing to show, and nothing wrong with the database. */
                if (err && errlen > 0)
                        err[0] = '\0';
                pthread_mutex_lock(&f->state_lock);
                f->budget_known = false;
                pthread_mutex_unlock(&f->state_lock);
                return 0;
        }
        if (r < 0)
                return r;
        pthread_mutex_lock(&f->state_lock);
        f->budget_known = true;
        f->minute_left = s.minute_left;
        f->hour_left = s.hour_left;
        f->blocked_ms = s.blocked_until_ms > s.now_ms ? s.blocked_until_ms - s.now_ms : 0;
        f->budget_read_at = clock_now();
        pthread_mutex_unlock(&f->state_lock);
        return 0;
}

static int fleet_read_nodes_locked(Fleet *f, char *err, size_t errlen) {
        char window[24], limit[16];
        const char *params[] = { f->tenant, window, limit };
        PGresult *res = NULL;
        size_t n;
        int r;

        snprintf(window, sizeof(window), "%llu", (unsigned long long) f->lease_ms * FLEET_NODES_SEEN_LEASES);
        snprintf(limit, sizeof(limit), "%d", FLEET_NODES_MAX);
        r = fleetdb_exec(f->conn, "read the fleet's nodes", sql_nodes, (int) ELEMENTSOF(params), params, &res, err,
                         errlen);
        if (r < 0)
                return r;
        n = (size_t) PQntuples(res);
        if (n > FLEET_NODES_MAX)
                n = FLEET_NODES_MAX;
        pthread_mutex_lock(&f->state_lock);
        for (size_t i = 0; i < n; i++) {
                copy_name(f->nodes[i].node, sizeof(f->nodes[i].node), PQgetvalue(res, (int) i, 0));
                f->nodes[i].seen_ms_ago = strtoll(PQgetvalue(res, (int) i, 1), NULL, 10);
        }
        f->n_nodes = n;
        f->nodes_read_at = clock_now();
        pthread_mutex_unlock(&f->state_lock);
        PQclear(res);
        return 0;
}

int fleet_tick(Fleet *f, FleetLane *ret_lane, char *err, size_t errlen) {
        /* The connection's loss ends the tick; any other failure is kept, and the rest goes on. */
        int (*const steps[])(Fleet *, char *, size_t) = {
                fleet_heartbeat_locked, fleet_lane_step_locked, fleet_read_lane_locked,
                fleet_read_budget_locked, fleet_read_nodes_locked,
        };
        char e[FLEET_ERROR_MAX] = "", first[FLEET_ERROR_MAX] = "";
        int r, q;

        assert(f);
        pthread_mutex_lock(&f->conn_lock);
        r = fleet_connect_locked(f, first, sizeof(first));
        for (size_t i = 0; f->conn && i < ELEMENTSOF(steps); i++) {
                e[0] = '\0';
                q = steps[i](f, e, sizeof(e));
                if (q >= 0)
                        continue;
                scrub(f, e, sizeof(e));
                fleet_note_locked(f, q, e);
                /* The first failure is returned, unless the connection went later: that is the news. */
                if (r >= 0 || q == -ENOTCONN) {
                        r = q;
                        snprintf(first, sizeof(first), "%s", e);
                }
                if (q == -ENOTCONN)
                        break;
        }
        if (r >= 0)
                fleet_note_locked(f, 0, NULL);
        pthread_mutex_unlock(&f->conn_lock);

        if (ret_lane)
                fleet_lane(f, clock_now(), ret_lane);
        if (r < 0)
                fleetdb_set_error(err, errlen, "%s", first);
        return r;
}

void fleet_lane(Fleet *f, usec_t now, FleetLane *ret) {
        usec_t believed;

        assert(f);
        assert(ret);
        pthread_mutex_lock(&f->state_lock);
        believed = f->my_term > 0 ? f->confirmed_at + ((usec_t) f->lease_ms - f->renew_ms) * USEC_PER_MSEC : 0;
        *ret = (FleetLane) {
                .held = f->my_term > 0 && now < believed,
                .term = f->my_term > 0 ? f->my_term : f->lane_term,
                .confirmed_at = f->my_term > 0 ? f->confirmed_at : 0,
                .believed_until = believed,
                .send_after = f->my_term > 0 ? f->send_after : 0,
                .expires_at = f->lane_expires_at,
                .read_at = f->lane_read_at,
                .lost = f->lost,
        };
        copy_name(ret->holder, sizeof(ret->holder), f->holder);
        pthread_mutex_unlock(&f->state_lock);
}

bool fleet_lane_usable(Fleet *f, usec_t now, int64_t *ret_term) {
        FleetLane l;

        fleet_lane(f, now, &l);
        if (!l.held || now < l.send_after)
                return false;
        if (ret_term)
                *ret_term = l.term;
        return true;
}

int fleet_release(Fleet *f, char *err, size_t errlen) {
        char e[FLEET_ERROR_MAX] = "";
        const char *params[] = { f->node };
        PGresult *res = NULL;
        int64_t term;
        int r, q;

        assert(f);
        pthread_mutex_lock(&f->conn_lock);
        pthread_mutex_lock(&f->state_lock);
        term = f->my_term;
        f->my_term = 0; /* whatever the database says: no more calls from this node */
        pthread_mutex_unlock(&f->state_lock);
        r = fleet_connect_locked(f, e, sizeof(e));
        if (r >= 0) {
                r = term > 0 ? lease_release(f->conn, f->tenant, f->node, term, e, sizeof(e)) : -ESTALE;
                if (r == -ESTALE && term == 0)
                        snprintf(e, sizeof(e), "this node holds no term");
                if (r != -ENOTCONN) {
                        char e2[FLEET_ERROR_MAX] = "";

                        q = fleetdb_exec(f->conn, "leave the fleet", sql_leave, 1, params, &res, e2, sizeof(e2));
                        PQclear(res);
                        if (q < 0 && r >= 0) {
                                r = q;
                                snprintf(e, sizeof(e), "%s", e2);
                        }
                }
        }
        scrub(f, e, sizeof(e));
        if (f->conn && r != -ESTALE)
                fleet_note_locked(f, r, e);
        pthread_mutex_unlock(&f->conn_lock);
        if (r < 0)
                fleetdb_set_error(err, errlen, "%s", e);
        return r;
}

/* Run one budget call on the connection: connect if the backoff allows, call, note (a refusal
 * or a missing budget row is the database answering, not failing). */
#define BUDGET_CALL(f, e, call)                                                                     \
        ({                                                                                          \
                int _r;                                                                             \
                pthread_mutex_lock(&(f)->conn_lock);                                                \
                _r = fleet_connect_locked((f), (e), sizeof(e));                                     \
                if (_r >= 0) {                                                                      \
                        _r = (call);                                                                \
                        scrub((f), (e), sizeof(e));                                                 \
                        fleet_note_locked((f), _r == -EAGAIN || _r == -ENOENT ? 0 : _r, (e));       \
                }                                                                                   \
                pthread_mutex_unlock(&(f)->conn_lock);                                              \
                _r;                                                                                 \
        })

int fleet_budget_take(Fleet *f, bool background, double reserve, usec_t *ret_wait) {
        char e[FLEET_ERROR_MAX] = "";
        FleetBudgetTake t = {};
        int r;

        assert(f);
        r = BUDGET_CALL(f, e,
                        background ? fleetbudget_take_background(f->conn, f->tenant, reserve, &t, e, sizeof(e))
                                   : fleetbudget_take(f->conn, f->tenant, &t, e, sizeof(e)));
        if (r == 0) {
                pthread_mutex_lock(&f->state_lock);
                f->budget_known = true;
                f->minute_left = t.minute_left;
                f->hour_left = t.hour_left;
                f->budget_read_at = clock_now();
                pthread_mutex_unlock(&f->state_lock);
        } else if (r == -EAGAIN && ret_wait)
                *ret_wait = (usec_t) (t.wait_ms > 0 ? t.wait_ms : 1) * USEC_PER_MSEC;
        return r;
}

int fleet_budget_wait(Fleet *f, usec_t *ret_wait) {
        char e[FLEET_ERROR_MAX] = "";
        FleetBudgetStatus s = {};
        int r;

        assert(f);
        assert(ret_wait);
        r = BUDGET_CALL(f, e, fleetbudget_status(f->conn, f->tenant, &s, e, sizeof(e)));
        if (r < 0)
                return r;
        *ret_wait = s.wait_ms > 0 ? (usec_t) s.wait_ms * USEC_PER_MSEC : 0;
        return 0;
}

int fleet_budget_observe(Fleet *f, long remaining_minute, long remaining_hour) {
        char e[FLEET_ERROR_MAX] = "";

        assert(f);
        return BUDGET_CALL(f, e, fleetbudget_observe(f->conn, f->tenant, remaining_minute, remaining_hour, e, sizeof(e)));
}

int fleet_budget_block(Fleet *f, usec_t retry_after) {
        char e[FLEET_ERROR_MAX] = "";
        uint64_t ms = (retry_after + USEC_PER_MSEC - 1) / USEC_PER_MSEC;
        int64_t until = 0;
        int r;

        assert(f);
        if (ms > FLEETBUDGET_BLOCK_MS_MAX)
                ms = FLEETBUDGET_BLOCK_MS_MAX;
        r = BUDGET_CALL(f, e, fleetbudget_block(f->conn, f->tenant, (unsigned) ms, &until, e, sizeof(e)));
        if (r == 0) {
                pthread_mutex_lock(&f->state_lock);
                if (f->budget_known) {
                        /* Aged to now, the cached block is at least this one. */
                        usec_t now = clock_now();
                        int64_t aged = f->blocked_ms - (int64_t) ((now - f->budget_read_at) / USEC_PER_MSEC);

                        if (aged < (int64_t) ms) {
                                f->blocked_ms = (int64_t) ms;
                                f->budget_read_at = now;
                        }
                }
                pthread_mutex_unlock(&f->state_lock);
        }
        return r;
}

int fleet_budget_set_caps(Fleet *f, const FleetBudgetCaps *caps) {
        char e[FLEET_ERROR_MAX] = "";
        FleetBudgetCaps c;

        assert(f);
        assert(caps);
        c = *caps;
        if (c.minute_ms == 0)
                c.minute_ms = FLEETBUDGET_MINUTE_MS;
        if (c.hour_ms == 0)
                c.hour_ms = FLEETBUDGET_HOUR_MS;
        if (c.per_minute == 0 || c.per_hour == 0 || c.per_minute > FLEETBUDGET_CAP_MAX || c.per_hour > FLEETBUDGET_CAP_MAX ||
            c.minute_ms > FLEETBUDGET_PERIOD_MS_MAX || c.hour_ms > FLEETBUDGET_PERIOD_MS_MAX)
                return -EINVAL;
        pthread_mutex_lock(&f->conn_lock);
        f->caps = c;
        f->caps_set = true;
        pthread_mutex_unlock(&f->conn_lock);
        /* A connection opened by this call applied the caps already; applying them twice changes
         * nothing (the same caps clamp nothing). */
        return BUDGET_CALL(f, e, fleetbudget_set_caps(f->conn, f->tenant, &c, e, sizeof(e)));
}

/* Seconds from an age in milliseconds at a read, aged to now. */
static double aged_seconds(int64_t ms_at_read, usec_t read_at, usec_t now) {
        return ((double) ms_at_read + (double) (now > read_at ? now - read_at : 0) / (double) USEC_PER_MSEC) / 1000.0;
}

/* Seconds to the millisecond, for a document (the heartbeats are read in milliseconds). */
static double to_ms(double seconds) {
        return round(seconds * 1000.0) / 1000.0;
}

/* What is left of a duration in milliseconds at a read, in seconds now; never negative. */
static double left_seconds(int64_t ms_at_read, usec_t read_at, usec_t now) {
        double s = ((double) ms_at_read - (double) (now > read_at ? now - read_at : 0) / (double) USEC_PER_MSEC) / 1000.0;

        return s > 0 ? s : 0.0;
}

json_t *fleet_status_json(Fleet *f) {
        usec_t now = clock_now(), window = (usec_t) f->lease_ms * FLEET_NODES_SEEN_LEASES * USEC_PER_MSEC;
        json_t *j = NULL, *nodes = NULL, *lane = NULL, *budget = NULL, *db = NULL;
        FleetLane l;
        bool ok = true;

        assert(f);
        fleet_lane(f, now, &l);
        nodes = json_array();
        if (!nodes)
                return NULL;
        pthread_mutex_lock(&f->state_lock);
        for (size_t i = 0; ok && i < f->n_nodes; i++) {
                double ago = aged_seconds(f->nodes[i].seen_ms_ago, f->nodes_read_at, now);

                if (ago * (double) USEC_PER_SEC >= (double) window)
                        continue;
                ok = json_array_append_new(nodes, json_pack("{s:s, s:f}", "node", f->nodes[i].node, "seen_seconds_ago",
                                                            to_ms(ago))) == 0;
        }
        if (f->budget_known)
                budget = json_pack("{s:i, s:i, s:f}", "minute_left", (int) f->minute_left, "hour_left", (int) f->hour_left,
                                   "blocked_seconds", to_ms(left_seconds(f->blocked_ms, f->budget_read_at, now)));
        else
                budget = json_pack("{s:n, s:n, s:n}", "minute_left", "hour_left", "blocked_seconds");
        db = json_pack("{s:s, s:b, s:s?}", "url", f->url_shown, "reachable", f->reachable, "error",
                       *f->error ? f->error : NULL);
        pthread_mutex_unlock(&f->state_lock);

        lane = json_pack("{s:s?, s:I, s:b, s:o}", "holder", *l.holder ? l.holder : NULL, "term", (json_int_t) l.term,
                         "held_by_this_node", l.held, "expires_in_seconds",
                         l.expires_at > 0 ? json_real(l.expires_at > now ? to_ms((double) (l.expires_at - now) / USEC_PER_SEC)
                                                                         : 0.0)
                                          : json_null());
        if (ok && lane && budget && db)
                j = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "node", f->node, "tenant", f->tenant, "lane", lane,
                              "nodes", nodes, "budget", budget, "database", db);
        else {
                json_decref(lane);
                json_decref(nodes);
                json_decref(budget);
                json_decref(db);
        }
        return j;
}

static void header(FILE *out, const char *name, const char *type, const char *help) {
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

unsigned fleet_nodes_last_seen(Fleet *f) {
        size_t n;

        assert(f);
        pthread_mutex_lock(&f->state_lock);
        n = f->n_nodes;
        pthread_mutex_unlock(&f->state_lock);
        return n > 0 ? (unsigned) n : 1;
}

void fleet_metrics_render(Fleet *f, FILE *out) {
        usec_t now = clock_now(), window = (usec_t) f->lease_ms * FLEET_NODES_SEEN_LEASES * USEC_PER_MSEC;
        bool known, reachable;
        unsigned minute = 0, hour = 0, seen = 0;
        double blocked = 0;
        FleetLane l;

        fleet_lane(f, now, &l);
        pthread_mutex_lock(&f->state_lock);
        for (size_t i = 0; i < f->n_nodes; i++)
                if (aged_seconds(f->nodes[i].seen_ms_ago, f->nodes_read_at, now) * (double) USEC_PER_SEC < (double) window)
                        seen++;
        known = f->budget_known;
        if (known) {
                minute = f->minute_left;
                hour = f->hour_left;
                blocked = left_seconds(f->blocked_ms, f->budget_read_at, now);
        }
        reachable = f->reachable;
        pthread_mutex_unlock(&f->state_lock);

        header(out, "visierd_fleet_lane_held", "gauge", "1 while this node holds the fleet's publish lane and trusts its lease.");
        fprintf(out, "visierd_fleet_lane_held %d\n", l.held ? 1 : 0);
        header(out, "visierd_fleet_lane_term", "gauge", "The publish lane's term: this node's while it holds it, else the last seen.");
        fprintf(out, "visierd_fleet_lane_term %lld\n", (long long) l.term);
        header(out, "visierd_fleet_lane_lost_total", "counter", "Times this node found its term of the lane taken or expired.");
        fprintf(out, "visierd_fleet_lane_lost_total %llu\n", (unsigned long long) l.lost);
        header(out, "visierd_fleet_nodes_seen", "gauge", "Nodes of the fleet whose heartbeat is younger than three leases.");
        fprintf(out, "visierd_fleet_nodes_seen %u\n", seen);
        if (known) {
                header(out, "visierd_fleet_budget_minute_left", "gauge", "Calls left in the fleet's shared minute budget.");
                fprintf(out, "visierd_fleet_budget_minute_left %u\n", minute);
                header(out, "visierd_fleet_budget_hour_left", "gauge", "Calls left in the fleet's shared hour budget.");
                fprintf(out, "visierd_fleet_budget_hour_left %u\n", hour);
        }
        header(out, "visierd_fleet_budget_blocked_seconds", "gauge", "Seconds until the fleet's budget reopens after a 429.");
        fprintf(out, "visierd_fleet_budget_blocked_seconds %.3f\n", blocked);
        header(out, "visierd_fleet_database_up", "gauge", "1 while the fleet's database answers this node.");
        fprintf(out, "visierd_fleet_database_up %d\n", reachable ? 1 : 0);
}
