/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet's rate budget for calls to Visier: one row per tenant in PostgreSQL with the
 * sliding windows of ratelimit.c (at most a minute's cap of calls in any minute, an hour's in
 * any hour), shared by every node: a call is taken from it in one short transaction, so the
 * calls of all nodes together — logins too — never exceed the caps in any window of Visier's.
 * Visier's X-RateLimit-Remaining-* answers count the calls it saw and the budget did not, and
 * a 429 closes it for every node until its Retry-After has passed. docs/fleet.md, "The rate
 * budget", says why one transaction per call and not per-node shares.
 *
 * The second building block of fleet mode: nothing in the daemon calls it yet.
 *
 * Clock: the refill, the block and every wait are computed from the database server's
 * clock_timestamp(); a node's own clock is never compared with them. Waits come back as
 * durations (a node sleeps them on its own clock, then takes again).
 *
 * Pure libpq: never logs, keeps no state between calls, takes a connection the caller owns (one
 * per thread, as libpq wants), idle: a take inside a longer transaction would hold every node's
 * budget locked until it ended. Errors are negative errno values with a message in the caller's
 * buffer:
 *   -EAGAIN     no call may be taken now (*ret_wait_ms says how long until one could be)
 *   -ENOENT     the tenant has no budget yet: fleetbudget_set_caps() creates it
 *   -ENOTCONN   the connection is gone (server restarted, network): open a new one, call again
 *   -EPROTO     the fleet schema is missing (run fleetbudget_migrate()) or newer than this program's
 *   -EINVAL     a bad argument, or a transaction open on the connection; -ENOMEM; -EIO any other
 */
#pragma once

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetdb.h"
#include "ratelimit.h"

#define FLEETBUDGET_ERROR_MAX FLEETDB_ERROR_MAX
#define FLEETBUDGET_MINUTE_MS 60000U             /* the minute window's length */
#define FLEETBUDGET_HOUR_MS 3600000U             /* the hour window's */
/* A call's place comes back its window's length plus this long after its take (ratelimit.h). */
#define FLEETBUDGET_SLACK_MS ((unsigned) (RATELIMIT_SLACK / USEC_PER_MSEC))
#define FLEETBUDGET_PERIOD_MS_MAX 86400000U      /* longest period a test may set: a day */
#define FLEETBUDGET_CAP_MAX 100000000U /* most calls per period: the most [visier] rate_limit_hour takes */
#define FLEETBUDGET_BLOCK_MS_MAX (86400U * 1000) /* longest Retry-After honoured: a day */

/* The fleet schema (fleetdb_migrate()): the same one lease_migrate() migrates. */
int fleetbudget_migrate(PGconn *conn, int *ret_version, char *err, size_t errlen);

typedef struct FleetBudgetCaps {
        unsigned per_minute, per_hour; /* 1 to FLEETBUDGET_CAP_MAX */
        /* The windows' lengths: FLEETBUDGET_MINUTE_MS and FLEETBUDGET_HOUR_MS; tests shorten them
         * (1 to FLEETBUDGET_PERIOD_MS_MAX). */
        unsigned minute_ms, hour_ms;
} FleetBudgetCaps;

/*
 * Create the tenant's budget with no call counted, or change its caps (a reload): the calls
 * already counted count against the new caps. The caps are the tenant's, not a node's: every
 * node should be configured alike, and the last call wins.
 */
int fleetbudget_set_caps(PGconn *conn, const char *tenant, const FleetBudgetCaps *caps, char *err, size_t errlen);

typedef struct FleetBudgetTake {
        int64_t wait_ms;       /* -EAGAIN: how long until a call could be taken (at least 1) */
        int64_t at_ms;         /* 0: the database's clock at the grant */
        unsigned minute_left;  /* 0: calls left in each window after the grant, or now */
        unsigned hour_left;
} FleetBudgetTake;

/* Take one call from the tenant's budget: 0, or -EAGAIN (closed by a 429, or a window has
 * no call left) with ret->wait_ms. ret may be NULL. */
int fleetbudget_take(PGconn *conn, const char *tenant, FleetBudgetTake *ret, char *err, size_t errlen);

/* Like fleetbudget_take(), for background work: takes a call only while more than a `reserve`
 * share (0..1) of a minute's cap is left in both windows, so interactive calls (and logins)
 * keep that much. */
int fleetbudget_take_background(PGconn *conn, const char *tenant, double reserve, FleetBudgetTake *ret, char *err,
                                size_t errlen);

/* Visier said how many calls remain (negative: header absent): where a window has more left,
 * the difference (calls Visier counted and the budget did not) is counted as taken now. The
 * budget is never raised. */
int fleetbudget_observe(PGconn *conn, const char *tenant, long remaining_minute, long remaining_hour, char *err,
                        size_t errlen);

/* Visier answered 429: no node takes a call for retry_after_ms from now (database clock). A
 * block already longer is kept. ret_until_ms (may be NULL): the block's end, database clock. */
int fleetbudget_block(PGconn *conn, const char *tenant, unsigned retry_after_ms, int64_t *ret_until_ms, char *err,
                      size_t errlen);

typedef struct FleetBudgetStatus {
        FleetBudgetCaps caps;
        unsigned minute_left, hour_left;     /* calls left now */
        int64_t blocked_until_ms;            /* database clock; 0 when not blocked */
        int64_t wait_ms;                     /* until a call could be taken; 0: now */
        int64_t now_ms;                      /* the database's clock at the read */
} FleetBudgetStatus;

/* The tenant's budget as the database sees it now (for /status and /metrics). */
int fleetbudget_status(PGconn *conn, const char *tenant, FleetBudgetStatus *ret, char *err, size_t errlen);
