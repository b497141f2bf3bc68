/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet's publish lane: one lease row per tenant in PostgreSQL (holder, term, expiry, the
 * deadline of the write call the holder has open), taken, renewed, fenced and released in short
 * transactions. Not session advisory locks: a lease held in a row survives connection poolers
 * (PgBouncer in transaction mode) and a reconnect, and every check is a WHERE clause evaluated
 * by the database at the moment it matters. docs/fleet.md has the timing argument.
 *
 * The first building block of fleet mode: nothing in the daemon calls it yet.
 *
 * Clock: every time compared here is the database server's clock_timestamp(); a node's own
 * clock is never compared with it. Times come back as milliseconds since the epoch in the
 * database's clock, for tests and /status, and as durations (ret_wait_ms) a node measures
 * with its own CLOCK_BOOTTIME.
 *
 * Pure libpq: never logs, never keeps state between calls, takes a connection the caller owns
 * (one per thread, as libpq wants). Errors are negative errno values with a message in the
 * caller's buffer:
 *   -ESTALE     the term is no longer current (another node took the lane, or it expired)
 *   -EBUSY      another node holds the lane (lease_acquire)
 *   -EAGAIN     the term is current but may not send yet (lease_fence_call; *ret_wait_ms says how
 *               long), or the database asked for a retry (serialization failure, deadlock)
 *   -ENOTCONN   the connection is gone (server restarted, network): open a new one and call again
 *   -EPROTO     the fleet schema is missing (run lease_migrate()) or newer than this program's
 *   -EINVAL     a bad argument; -ENOMEM; -EIO any other database error
 */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetdb.h"

#define LEASE_ERROR_MAX FLEETDB_ERROR_MAX
#define LEASE_NAME_MAX FLEETDB_NAME_MAX /* longest tenant or node name */
#define LEASE_SCHEMA_VERSION FLEETDB_SCHEMA_VERSION /* the fleet schema's, shared with fleetbudget.c */
#define LEASE_MS_MAX (3600U * 1000) /* longest lease, call deadline or settle margin: an hour */

/* fleetdb_migrate(): create or migrate all the fleet tables (fleet_lanes among them) to
 * FLEETDB_SCHEMA_VERSION in one transaction; concurrent callers wait for each other. -EPROTO if
 * the database is at a newer version. Must not be called inside a transaction. */
int lease_migrate(PGconn *conn, int *ret_version, char *err, size_t errlen);

typedef struct LeaseGrant {
        int64_t term;          /* the previous term + 1 (1 for a tenant's first lease) */
        int64_t expires_at_ms; /* database clock */
        int64_t wait_until_ms; /* database clock: no write call before this */
        int64_t wait_ms;       /* the same, as a duration from the grant (0: send at once) */
} LeaseGrant;

/*
 * Take the tenant's lane for node if nobody holds it, the holder's lease has expired, or node
 * itself holds it (a restarted node: it gets a new term too, and its old term is fenced out).
 * The new holder must not send before the previous holders' open call could have finished:
 * wait_until is the latest of now, an earlier grant's wait_until, and the open call's deadline
 * plus settle_ms (publish_settle). lease_fence_call() enforces it as well. -EBUSY when another
 * node holds an unexpired lease.
 */
int lease_acquire(PGconn *conn, const char *tenant, const char *node, unsigned lease_ms, unsigned settle_ms,
                  LeaseGrant *ret, char *err, size_t errlen);

/* Extend node's lease to lease_ms from now, only if it still holds term and the lease has not
 * expired (in the database's time, in the same UPDATE); else -ESTALE. ret_expires_at_ms may be
 * NULL. */
int lease_renew(PGconn *conn, const char *tenant, const char *node, int64_t term, unsigned lease_ms,
                int64_t *ret_expires_at_ms, char *err, size_t errlen);

/*
 * Before each write call: verify node holds term, unexpired, and that the grant's wait_until
 * has passed, and record the call's deadline (call_deadline_ms from now, database clock) as the
 * lane's open call. -ESTALE when the term is not current; -EAGAIN with *ret_wait_ms (may be
 * NULL) when the term is current but must still wait.
 *
 * Transactions: with the connection idle, the fence is its own transaction. With a transaction
 * open on conn (PQtransactionStatus() == PQTRANS_INTRANS), the fence runs inside it and holds
 * the lane row locked until the caller commits: mark the jobs running in the same transaction,
 * commit, and only then send. Any error leaves the caller's transaction to roll back. The
 * caller starts its stopwatch (CLOCK_BOOTTIME) before calling and abandons the call
 * call_deadline_ms after that, so it gives up no later than the deadline recorded here.
 */
int lease_fence_call(PGconn *conn, const char *tenant, const char *node, int64_t term, unsigned call_deadline_ms,
                     int64_t *ret_wait_ms, char *err, size_t errlen);

/*
 * Inside the caller's transaction (which must be open): does node still hold term — no other
 * node has acquired the lane since, whether or not the lease has expired? The lane's row stays
 * locked (FOR SHARE) until the caller commits or rolls back, so no acquire can start a new term
 * in between. The publisher's recordings (jobs claimed, outcomes, requeues) run under it: a
 * node whose term was taken over records nothing more, and the next holder's recovery finds
 * the jobs as they stood. 0, or -ESTALE.
 */
int lease_check_term(PGconn *conn, const char *tenant, const char *node, int64_t term, char *err, size_t errlen);

/*
 * The write call fenced under term has ended. answered: Visier is done with it, the open call
 * is cleared and the next holder need not wait for it. Not answered (a timeout, a lost
 * connection: Visier may still be publishing): no write on the lane, by any node, for settle_ms
 * from now. -ESTALE when term is not current (the next holder already waits out the call's
 * recorded deadline). Same transaction rules as lease_fence_call().
 */
int lease_call_end(PGconn *conn, const char *tenant, const char *node, int64_t term, bool answered,
                   unsigned settle_ms, char *err, size_t errlen);

/* Give the lane up (holder cleared; the term, the open call and wait_until stay for the next
 * holder). -ESTALE when node does not hold term. */
int lease_release(PGconn *conn, const char *tenant, const char *node, int64_t term, char *err, size_t errlen);

typedef struct LeaseStatus {
        char holder[LEASE_NAME_MAX + 1]; /* "" when nobody holds the lane */
        int64_t term;                    /* 0 when the tenant never had a lease */
        bool held;                       /* a holder whose lease has not expired */
        int64_t expires_at_ms;           /* database clock; 0 when none */
        int64_t open_call_deadline_ms;   /* 0 when no call is open */
        int64_t wait_until_ms;           /* 0 when none */
        int64_t now_ms;                  /* the database's clock at the read */
} LeaseStatus;

/* The lane's row as the database sees it now (for /status). */
int lease_status(PGconn *conn, const char *tenant, LeaseStatus *ret, char *err, size_t errlen);
