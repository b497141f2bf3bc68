/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The rate budget for calls to Visier: at most a minute's cap of calls in any minute and an
 * hour's cap in any hour (sliding windows), lowered (never raised) by Visier's
 * X-RateLimit-Remaining-* headers, and closed until a time after a 429's Retry-After.
 * Thread-safe; never logs.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>

#include "clock.h"

/*
 * A call's place in a window comes back the window's length plus this much after the call
 * was taken: up to RATELIMIT_SEND_SLACK for the request to leave after its take (the upstream
 * client holds back a request that would leave later, or takes a new place for it), and the
 * rest for it to reach Visier, which counts it on arrival (the upstream client drops a
 * connection whose bytes are not acknowledged by then: tcpbound.h; docs/fleet.md, "The rate
 * budget").
 */
#define RATELIMIT_SEND_SLACK (1 * USEC_PER_SEC)
#define RATELIMIT_SLACK (RATELIMIT_SEND_SLACK + 1 * USEC_PER_SEC)

/* A window's calls are kept in this many slots of (length + slack) / (slots - 4) each. */
#define RATELIMIT_SLOTS 640

typedef struct RateSlot {
        usec_t back_at; /* when these calls' places come back */
        unsigned n;
} RateSlot;

/* The calls taken in the last length + slack, oldest first, in a ring of slots. */
typedef struct RateWindow {
        unsigned cap;
        usec_t length, quantum;
        unsigned spent;         /* calls whose places have not come back */
        unsigned head, used;    /* the oldest slot, and how many are in use */
        RateSlot slots[RATELIMIT_SLOTS];
} RateWindow;

typedef struct RateLimit {
        pthread_mutex_t lock;
        RateWindow minute, hour;
        usec_t blocked_until;
} RateLimit;

void ratelimit_init(RateLimit *rl, unsigned per_minute, unsigned per_hour);
void ratelimit_done(RateLimit *rl);
/* Change the caps (on reload); the calls already taken count against the new caps. */
void ratelimit_set_caps(RateLimit *rl, unsigned per_minute, unsigned per_hour);

/* The caps now. */
void ratelimit_caps(RateLimit *rl, unsigned *ret_per_minute, unsigned *ret_per_hour);

/*
 * Take one call from the budget at time now: returns 0, or -EAGAIN with *ret_wait set to how
 * long until a call could be taken.
 */
int ratelimit_try_take(RateLimit *rl, usec_t now, usec_t *ret_wait);

/* How long from now until a call could be taken (0: now), without taking it: a 429's
 * Retry-After. */
usec_t ratelimit_next_free(RateLimit *rl, usec_t now);

/* Take one call, sleeping while the budget is empty; -ETIMEDOUT if it would pass deadline. */
int ratelimit_take(RateLimit *rl, usec_t deadline);

/* Like ratelimit_try_take(), for background work: takes a call only while more than a
 * `reserve` share (0..1) of a minute's budget is left in both windows, so interactive calls
 * keep that much. */
int ratelimit_try_take_low(RateLimit *rl, usec_t now, double reserve, usec_t *ret_wait);
/* Like ratelimit_take(), with the reserve of ratelimit_try_take_low(). */
int ratelimit_take_low(RateLimit *rl, usec_t deadline, double reserve);

/* Visier said how many calls remain (negative: header absent): calls it counts that this
 * budget does not (another client of the tenant) are counted as taken now. */
void ratelimit_observe(RateLimit *rl, long remaining_minute, long remaining_hour, usec_t now);

/* Visier answered 429: take nothing until `until`. */
void ratelimit_block(RateLimit *rl, usec_t until);

/* The calls that could be taken now in each window. */
void ratelimit_snapshot(RateLimit *rl, usec_t now, unsigned *ret_minute, unsigned *ret_hour);
