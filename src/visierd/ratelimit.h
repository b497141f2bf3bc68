/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shared rate budget for calls to Visier: two token buckets (per minute and per hour)
 * refilled continuously, lowered (never raised) by Visier's X-RateLimit-Remaining-* headers,
 * and closed until a time after a 429's Retry-After. Thread-safe; never logs.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>

#include "clock.h"

typedef struct RateLimit {
        pthread_mutex_t lock;
        unsigned minute_cap, hour_cap;
        double minute_tokens, hour_tokens;
        usec_t last_refill;
        usec_t blocked_until;
} RateLimit;

void ratelimit_init(RateLimit *rl, unsigned per_minute, unsigned per_hour, usec_t now);
void ratelimit_done(RateLimit *rl);
/* Change the caps (on reload); the tokens held are clamped to the new caps. */
void ratelimit_set_caps(RateLimit *rl, unsigned per_minute, unsigned per_hour);

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
 * `reserve` share (0..1) of a minute's budget is left in both buckets, so interactive calls
 * keep that much. */
int ratelimit_try_take_low(RateLimit *rl, usec_t now, double reserve, usec_t *ret_wait);
/* Like ratelimit_take(), with the reserve of ratelimit_try_take_low(). */
int ratelimit_take_low(RateLimit *rl, usec_t deadline, double reserve);

/* Take one call even if that overdraws the budget (the login must not wait behind reads). */
void ratelimit_take_forced(RateLimit *rl, usec_t now);

/* Visier said how many calls remain (negative: header absent). */
void ratelimit_observe(RateLimit *rl, long remaining_minute, long remaining_hour, usec_t now);

/* Visier answered 429: take nothing until `until`. */
void ratelimit_block(RateLimit *rl, usec_t until);

void ratelimit_snapshot(RateLimit *rl, usec_t now, unsigned *ret_minute, unsigned *ret_hour);
