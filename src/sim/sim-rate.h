/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Visier's per-tenant call budget: fixed windows of one minute and one hour. Thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* What an unlimited window reports in the X-RateLimit-* headers. */
#define RATE_UNLIMITED_REPORT UINT64_C(1000000)

typedef struct Rate Rate;

typedef struct RateInfo {
        uint64_t limit_minute, remaining_minute;
        uint64_t limit_hour, remaining_hour;
        uint64_t retry_after_sec;       /* only meaningful when the call was refused */
} RateInfo;

/* A limit of 0 means unlimited. */
int rate_new(uint64_t per_minute, uint64_t per_hour, Rate **ret);
Rate *rate_free(Rate *r);

/* Spend one call. Returns true when allowed; fills INFO either way. Refused calls cost nothing. */
bool rate_take(Rate *r, RateInfo *info);

/* Start fresh windows (used by /_sim/reset). */
void rate_reset(Rate *r);
