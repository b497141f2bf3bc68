/* SPDX-License-Identifier: Apache-2.0 */
/*
 * This node's membership in the fleet (docs/fleet.md): one Fleet object owning one libpq
 * connection to the fleet's PostgreSQL, through which it heartbeats into fleet_nodes, takes and
 * renews the tenant's publish lane (lease.c) and spends the tenant's shared rate budget
 * (fleetbudget.c). It keeps in memory what it last learnt — the lane, the nodes seen, the
 * budget, whether the database answered — so that /status and /metrics never wait on the
 * database, and so that the publisher can ask "may I send now, under which term?" without a
 * round trip.
 *
 * Never logs: calls return a negative errno (and, where they take one, a message in the
 * caller's buffer); the last failure is also kept for fleet_status_json(). No message, status
 * or metric ever holds the database password (it is kept in a Secret, handed to libpq only,
 * and scrubbed from any error text that would quote it).
 *
 * Threads: every function may be called from any thread. The connection is guarded by one
 * mutex and each call holds it for one short autocommitted statement or a few (a tick); the
 * cached state has its own mutex, which the readers (fleet_lane_usable(), fleet_status_json(),
 * fleet_metrics_render()) take alone, so they never wait behind the database.
 *
 * Blocking: the calls that reach the database block their thread for a round trip (about a
 * millisecond on a LAN), and at worst, with the database unreachable, for FLEET_CONNECT_TIMEOUT_SEC
 * (a reconnect), FLEET_STATEMENT_TIMEOUT_MS (a statement the server is slow to run), or the TCP
 * user timeout and keepalives below (a network that went silent). Reconnects back off (from
 * FLEET_RECONNECT_MIN_USEC, doubling up to renew interval): while the backoff runs, every call
 * fails with -ENOTCONN at once, without touching the network. A daemon that calls fleet_tick()
 * on its event loop accepts that bound on the loop's latency during an outage.
 *
 * Clocks: times compared with stored times are the database's (lease.c, fleetbudget.c). This
 * module measures durations only, on CLOCK_BOOTTIME (clock_now(), which counts suspend), and
 * all its usec_t times are on that clock.
 *
 * THE LOCAL EXPIRY RULE. The node stops believing it holds the lane at
 *
 *         believed_until = start of the last renew (or acquire) the database granted
 *                          + lease − renew interval
 *
 * on its own CLOCK_BOOTTIME, whatever happened since — even when the database cannot be
 * reached, so that a partitioned holder stops starting write calls before the database would
 * let another node take over. The reason it counts from when the renew *started*, not from its
 * answer: the database sets the new expiry (now + lease, its clock) while it runs the
 * statement, which is after the node sent it; counting from the start makes the node's end of
 * belief fall before the database's end of the lease, however long the statement, its answer
 * or a pause of the node in between took (the stopwatch argument of docs/fleet.md, "Why there
 * is never more than one sender"). The margin of one renew interval absorbs the drift between
 * the two clocks (assumption A2) and keeps the node from starting a call whose fence the
 * database would refuse anyway. It is also why renew_ms must be under half of lease_ms: the
 * next renewal, one interval after the last one started, then falls well inside the belief,
 * and one failed renewal does not drop the lane.
 *
 * The local rule only decides when to stop; it never grants anything. Every write call is still
 * fenced by lease_fence_call() under the term fleet_lane_usable() gave, which the database
 * checks at that moment.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "clock.h"
#include "config.h"
#include "fleetbudget.h"
#include "fleetdb.h"
#include "macro.h"
#include "secret.h"

#define FLEET_ERROR_MAX FLEETDB_ERROR_MAX
#define FLEET_NAME_MAX FLEETDB_NAME_MAX
/* The connection's limits (libpq keywords; a [store] url may set its own connect_timeout). */
#define FLEET_CONNECT_TIMEOUT_SEC 2     /* libpq's smallest: a connection attempt gives up after it */
#define FLEET_STATEMENT_TIMEOUT_MS 2000 /* SET on each new session: the server cancels a slower statement */
#define FLEET_TCP_USER_TIMEOUT_MS 5000  /* unacknowledged data for this long ends the connection */
#define FLEET_KEEPALIVE_IDLE_SEC 5      /* TCP keepalives: first probe after this long idle, */
#define FLEET_KEEPALIVE_INTERVAL_SEC 2  /* then one every this long, */
#define FLEET_KEEPALIVE_COUNT 3         /* and the connection ends after this many unanswered */
#define FLEET_RECONNECT_MIN_USEC (100 * USEC_PER_MSEC) /* the first backoff after a lost connection */
#define FLEET_NODES_MAX 64              /* nodes fleet_status_json() lists */
#define FLEET_NODES_SEEN_LEASES 3       /* a node is listed while its heartbeat is younger than this many leases */
#define FLEET_NODES_FORGET_SEC (7 * 86400) /* rows of nodes unseen this long are deleted (at each connect) */

typedef struct Fleet Fleet;

typedef struct FleetParams {
        const char *conninfo;   /* [store] url: a libpq connection string or URI, without a password */
        const Secret *password; /* [store] password_file's contents; NULL: none. Copied. */
        const char *node;       /* 1 to FLEET_NAME_MAX bytes, unique per running process */
        const char *tenant;     /* the lane's and the budget's row */
        unsigned lease_ms;      /* 1 to LEASE_MS_MAX */
        unsigned renew_ms;      /* the tick interval: at least 1, and 2 * renew_ms < lease_ms */
        unsigned settle_ms;     /* publish_settle (lease_acquire()'s settle margin), up to LEASE_MS_MAX */
        const char *hostname;   /* for fleet_nodes; NULL: gethostname() */
} FleetParams;

/* The parameters of fleet mode from a loaded configuration ([store] url, password, [fleet],
 * [jobs] publish_settle); -EINVAL when it is not in fleet mode. Points into c. */
int fleet_params_from_config(const Config *c, FleetParams *ret);

/* Check and copy the parameters; does not connect (the first tick does, so a node starts while
 * the database is down). -EINVAL with a reason in err for a bad parameter, -ENOMEM. */
int fleet_new(const FleetParams *p, Fleet **ret, char *err, size_t errlen);
/* Close the connection and wipe the password. Does not release the lane: fleet_release() does. */
Fleet *fleet_free(Fleet *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(Fleet *, fleet_free);

typedef struct FleetLane {
        bool held;             /* this node holds `term` and may still believe so (see above), at the snapshot's now */
        int64_t term;          /* held: this node's term; else the lane's term as last read (0: none seen) */
        char holder[FLEET_NAME_MAX + 1]; /* the holder as last read ("" none, or its lease expired) */
        usec_t confirmed_at;   /* the start of the last acquire or renew the database granted this node; 0: never */
        usec_t believed_until; /* confirmed_at + lease − renew: no write call may start at or after it */
        usec_t send_after;     /* no write call before this: the grant's wait, counted from its answer */
        usec_t expires_at;     /* the holder's lease end as last read, on this clock (an estimate); 0: none */
        usec_t read_at;        /* when the lane was last read; 0: never */
        uint64_t lost;         /* times this node found its term taken or expired (a renew refused -ESTALE) */
} FleetLane;

/*
 * One step of membership, for a timer every renew_ms: (re)connect when the backoff allows
 * (migrating the fleet schema, applying the budget caps of fleet_budget_set_caps()), heartbeat
 * (fleet_nodes.seen_at = clock_timestamp()), then the lane — renew when this node holds a term
 * (-ESTALE: lost, and it tries to take the lane again at once, as a new term), else acquire
 * (someone else holding it is no error) — then read the lane, the budget and the nodes for the
 * cached state. Returns 0, or the first failure with its message in err (may be NULL): -ENOTCONN
 * the database is unreachable (the belief runs out by the local rule), -EPROTO its fleet schema
 * is newer than this program's, or another error of lease.h or fleetbudget.h. ret_lane (may be
 * NULL) gets the lane as it stands after the tick, on success or not.
 */
int fleet_tick(Fleet *f, FleetLane *ret_lane, char *err, size_t errlen);

/* The lane as last learnt, evaluated at now (CLOCK_BOOTTIME). Never touches the database. */
void fleet_lane(Fleet *f, usec_t now, FleetLane *ret);

/* May the publisher claim jobs and send a write call now, and under which term: this node holds
 * the lane, its belief has not run out (now < believed_until), and its grant's wait is over
 * (now >= send_after). *ret_term (may be NULL) is written only when true. The call is still
 * fenced by lease_fence_call() under that term. Never touches the database. */
bool fleet_lane_usable(Fleet *f, usec_t now, int64_t *ret_term);

/* At shutdown: give the lane up if this node holds it (lease_release(), so the next node need
 * not wait for the lease to expire) and remove this node's heartbeat row. Whatever the database
 * says, the node believes it holds nothing afterwards. -ESTALE: it held nothing any more. */
int fleet_release(Fleet *f, char *err, size_t errlen);

/*
 * The shared rate budget (fleetbudget.c) on the Fleet's connection, for the upstream client and
 * the login; each call is one short transaction (a refused take: two statements).
 *
 * While the database is unreachable, every call fails with -ENOTCONN, at once during the
 * reconnect backoff and else within the timeouts above. The caller decides what a take's
 * -ENOTCONN means: the upstream client (upstream.h) then spends this node's share of the
 * tenant's caps from its own buckets (fleet_nodes_last_seen()), so reads go on through an outage;
 * docs/fleet.md, "Outages", gives the bound. A take whose answer was lost may have been granted:
 * its token is lost, never spent twice.
 */
/* 0: one call taken; -EAGAIN: none now, *ret_wait (may be NULL) says how long until one could
 * be; -ENOTCONN; -ENOENT: no budget row (no caps were ever set: fleet_budget_set_caps()).
 * background: take only while more than a `reserve` share (0..1) of the minute's cap is left. */
int fleet_budget_take(Fleet *f, bool background, double reserve, usec_t *ret_wait);
/* How long until a call could be taken (0: now), without taking one: 0 with *ret_wait, or the
 * errors of fleet_budget_take() other than -EAGAIN. */
int fleet_budget_wait(Fleet *f, usec_t *ret_wait);
/* Visier's X-RateLimit-Remaining-* answers (negative: header absent): lower the buckets. */
int fleet_budget_observe(Fleet *f, long remaining_minute, long remaining_hour);
/* Visier answered 429 with this Retry-After: no node takes a call until it has passed. */
int fleet_budget_block(Fleet *f, usec_t retry_after);
/* The tenant's caps (at start and on reload). Kept, and applied again at every new connection,
 * so a budget whose setting failed while the database was down is created once it is back.
 * Zero periods mean FLEETBUDGET_MINUTE_MS and FLEETBUDGET_HOUR_MS. */
int fleet_budget_set_caps(Fleet *f, const FleetBudgetCaps *caps);

/*
 * The fleet as last learnt, for /status, from memory (never waits on the database):
 *   {"node":…, "tenant":…,
 *    "lane":{"holder":… or null, "term":…, "held_by_this_node":bool, "expires_in_seconds":… or null},
 *    "nodes":[{"node":…, "seen_seconds_ago":…}, …],   (heartbeats younger than FLEET_NODES_SEEN_LEASES leases)
 *    "budget":{"minute_left":…, "hour_left":…, "blocked_seconds":…},   (nulls before the first read)
 *    "database":{"url":…, "reachable":bool, "error":… or null}}
 * url is [store] url as configured (it holds no password: config.c refuses one). NULL: -ENOMEM.
 */
json_t *fleet_status_json(Fleet *f);

/* How many nodes (this one included) the last read of the heartbeats listed, at least 1: the
 * share of the tenant's budget a node may spend on its own while the database is down
 * (upstream.h). From memory. */
unsigned fleet_nodes_last_seen(Fleet *f);

/* The fleet's gauges for /metrics, in the text exposition format (metrics.c's style):
 * visierd_fleet_lane_held, visierd_fleet_lane_term, visierd_fleet_nodes_seen,
 * visierd_fleet_budget_minute_left, visierd_fleet_budget_hour_left (once read),
 * visierd_fleet_budget_blocked_seconds, visierd_fleet_database_up. From memory. */
void fleet_metrics_render(Fleet *f, FILE *out);
