/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulator's one clock. Token expiry and rate-limit windows read time only through
 * clock_now_usec(), so a test build could replace this file with a fake clock.
 */
#pragma once

#include <stdint.h>

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)

/* Microseconds on CLOCK_MONOTONIC: never jumps with wall-clock changes. */
uint64_t clock_now_usec(void);

/* Sleep for the given number of milliseconds, restarting after signals. */
void clock_sleep_msec(uint64_t msec);
