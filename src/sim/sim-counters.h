/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the simulator has seen, for tests to assert on through GET /_sim/counters. Thread-safe.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Distinct request paths tracked in "calls"; later new paths are summed under "(other)". */
#define COUNTERS_PATHS_MAX 1024
/* Logins remembered for logins_per_second_max; a busier second counts as this many. */
#define COUNTERS_LOGIN_WINDOW_MAX 1024

typedef enum CounterId {
        COUNTER_LOGINS,
        COUNTER_LOGIN_FAILURES,
        COUNTER_CALLS_TOTAL,
        COUNTER_BAD_APIKEY,
        COUNTER_BAD_TOKEN,
        COUNTER_AUTHORIZATION_HEADERS,
        COUNTER_FOREIGN_COOKIES,
        COUNTER_RATE_LIMITED,
        COUNTER_ERRORS_INJECTED,
        COUNTER_DROPS_INJECTED,
        COUNTER_THROTTLES_INJECTED,
        COUNTER_APPLY_THEN_DROPS_INJECTED,
        COUNTER_WRITE_CALLS,
        COUNTER_WRITE_ITEMS,
        COUNTER_PRODUCTION_VERSION,
        COUNTER_PUBLISH_OVERLAPS,
        COUNTER_COMMIT_CALLS,
        COUNTER_QUERY_ABORTS_INJECTED,
        COUNTER_QUERY_CALLS,
        COUNTER_QUERY_EXPORTS_REFUSED,
        COUNTER_TOKENS_REFUSED,
        COUNTER_CONNECTIONS,
        _COUNTER_MAX,
        _COUNTER_INVALID = -EINVAL,
} CounterId;

typedef struct Counters Counters;

int counters_new(Counters **ret);
Counters *counters_free(Counters *c);

void counters_inc(Counters *c, CounterId id);
void counters_add(Counters *c, CounterId id, uint64_t n);

/* Count one write call that passed authentication: write_calls and
 * write_calls_by_operation["METHOD PATH"] (PATH without the query). */
void counters_write_call(Counters *c, const char *method, const char *path);

/* Count one /v1 call on PATH (no query string): bumps calls_total and calls[PATH]. */
void counters_call(Counters *c, const char *path);

/*
 * A token was issued at NOW (clock_now()): bumps logins and updates logins_per_second_max,
 * the most logins seen within any one second (a sliding window, not aligned to the clock).
 */
void counters_login_issued(Counters *c, uint64_t now);

/* A login starts or ends its (possibly slow) work; tracks logins_in_flight and its maximum. */
void counters_login_begin(Counters *c);
void counters_login_end(Counters *c);

/*
 * A permission write starts publishing. When another write is in flight it counts one
 * publish_overlap and, with REJECT_OVERLAPS, returns -EBUSY without entering; otherwise it
 * enters (writes_in_flight and its maximum) and returns 0. Pair each 0 with one write_end.
 */
int counters_write_begin(Counters *c, bool reject_overlaps);
/* The write finished publishing; BUMP_VERSION adds one production_version. */
void counters_write_end(Counters *c, bool bump_version);

/* Zero everything except logins_in_flight and writes_in_flight (work still running). */
void counters_reset(Counters *c);

/* New reference, or NULL on OOM. */
json_t *counters_to_json(Counters *c);

const char *counter_id_to_string(CounterId id);
