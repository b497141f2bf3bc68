/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one clock of the program. Everything that measures time (token expiry, rate budgets,
 * backoff) reads it here, so tests can replace it with a clock they drive by hand.
 * Monotonic time is for deadlines; real time only for what people read.
 */
#pragma once

#include <stdint.h>

typedef uint64_t usec_t;

#define USEC_PER_MSEC ((usec_t) 1000ULL)
#define USEC_PER_SEC ((usec_t) 1000000ULL)
#define USEC_INFINITY ((usec_t) UINT64_MAX)

/* Monotonic microseconds (CLOCK_BOOTTIME, so time asleep counts toward token expiry). */
usec_t clock_now(void);
/* Wall-clock microseconds since the epoch. */
usec_t clock_realtime(void);

/* Test hook: replace the monotonic clock (NULL restores the real one). */
void clock_set_source(usec_t (*source)(void));

/* Sleep until the monotonic deadline or for usec, whichever is given; interrupted sleeps resume. */
void clock_sleep(usec_t usec);
