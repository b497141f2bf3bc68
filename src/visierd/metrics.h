/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus metrics: counters and histograms that the HTTP layer, the upstream client's
 * observer and the publisher feed, rendered in the text exposition format together with
 * gauges the caller reads at scrape time. Label values are route patterns and status codes,
 * never raw paths, so the number of series stays bounded. Thread-safe; never logs.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "clock.h"
#include "macro.h"

#define METRICS_SERIES_MAX 512

typedef struct Metrics Metrics;

typedef struct MetricsGauges {
        double token_expires_in; /* seconds, 0 without a valid token */
        uint64_t logins, login_failures;
        unsigned budget_minute, budget_hour;
        int64_t jobs[5]; /* by JobState */
        double oldest_queued_age; /* seconds; negative when none is queued */
        const CacheStats *cache;  /* the metadata cache's counters (cache_stats()); NULL: none rendered */
} MetricsGauges;

int metrics_new(Metrics **ret);
Metrics *metrics_free(Metrics *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Metrics *, metrics_free);

/* A local request answered: by method, route pattern (a closed set; "unmatched") and status,
 * and the time from its head's arrival to its answer (LATENCY) under LATENCY_ROUTE (a smaller
 * closed set: visierd's own routes, "visier-api", "unmatched"). */
void metrics_local_request(Metrics *m, const char *method, const char *route, const char *latency_route, unsigned status,
                           usec_t latency);
/* status 0: no HTTP answer (network error or timeout). */
void metrics_upstream_call(Metrics *m, const char *endpoint, long status, usec_t latency);
void metrics_write_call(Metrics *m, size_t items);
void metrics_overlap_prevented(Metrics *m);
/* A local sign-in: ok (a session started) or refused (wrong credentials). */
void metrics_signin(Metrics *m, bool ok);
/* A request refused 401: no credential where one is required, a token or session not valid,
 * or a session expired. */
typedef enum MetricsAuthFailure {
        METRICS_AUTH_MISSING,
        METRICS_AUTH_INVALID,
        METRICS_AUTH_EXPIRED,
        _METRICS_AUTH_MAX,
} MetricsAuthFailure;
void metrics_auth_failure(Metrics *m, MetricsAuthFailure reason);
/* A request refused 503 because a limit was reached. */
typedef enum MetricsRefusal {
        METRICS_REFUSED_MAX_CONNECTIONS,          /* [listen] max_connections */
        METRICS_REFUSED_MAX_HELD,                 /* [listen] max_held_requests */
        METRICS_REFUSED_PER_CLIENT,               /* [listen] max_connections_per_client */
        _METRICS_REFUSED_MAX,
} MetricsRefusal;
void metrics_refusal(Metrics *m, MetricsRefusal reason);
/* An export run ended. */
void metrics_export_run(Metrics *m, bool ok, uint64_t bytes, usec_t duration);

/* The whole exposition (caller frees). */
char *metrics_render(Metrics *m, const MetricsGauges *g, size_t *ret_len);
