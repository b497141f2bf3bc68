/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The upstream client: every call visierd makes to Visier goes through here (libcurl).
 *
 * It injects the apikey header and the VisierASIDToken cookie, sends credentials only to
 * the configured origin and follows no redirects, verifies TLS always, takes every call from
 * the shared rate budget (logins too), retries a 401 with a fresh token within the deadline
 * (a 401 never reaches the caller: -ENOKEY), waits out a 429 without
 * counting it as a failed attempt, and retries idempotent calls on network errors and 5xx
 * with exponential backoff and jitter — all within one deadline per call. Connections are
 * kept warm in a pool of easy handles sharing one connection cache. Never logs.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clock.h"
#include "ratelimit.h"
#include "secret.h"
#include "token.h"

#define UPSTREAM_ERROR_MAX 512
#define UPSTREAM_RETRY_BASE (250 * USEC_PER_MSEC)
#define UPSTREAM_RETRY_MAX (5 * USEC_PER_SEC)
#define UPSTREAM_RETRY_AFTER_DEFAULT (1 * USEC_PER_SEC)
#define UPSTREAM_POOL_MAX 64

typedef struct UpstreamSettings {
        const char *base_url;
        const char *username;
        const Secret *apikey;
        const Secret *password;
        const char *ca_file;
        usec_t connect_timeout;
        usec_t request_timeout;
        unsigned max_retries;
        size_t max_response;
} UpstreamSettings;

typedef struct UpstreamRequest {
        const char *endpoint;        /* a label for metrics: the route pattern (NULL: path) */
        const char *method;          /* "GET", "POST", ... */
        const char *path;            /* escaped path starting with /v1/ */
        const char *query;           /* escaped query string without '?', or NULL */
        const char *const *headers;  /* "Name: value" lines to forward, NULL-terminated, or NULL */
        const char *body;            /* or NULL */
        size_t body_len;
        bool idempotent;             /* may be retried after a network error or 5xx */
        bool background;             /* yields the rate budget's reserve to interactive calls */
} UpstreamRequest;

/* Share of the rate budget kept for interactive calls when background work (export runs)
 * takes calls. */
#define UPSTREAM_BACKGROUND_RESERVE 0.25

typedef struct UpstreamResponse {
        long status;
        char *content_type;
        char *body;
        size_t body_len;
        unsigned attempts;
} UpstreamResponse;

typedef struct UpstreamStats {
        uint64_t calls, retries, unauthorized, throttled, failures;
} UpstreamStats;

typedef struct Upstream Upstream;

int upstream_new(const UpstreamSettings *s, RateLimit *rl, Upstream **ret);
Upstream *upstream_free(Upstream *u);
DEFINE_TRIVIAL_CLEANUP_FUNC(Upstream *, upstream_free);

/* Replace the settings (reload). In-flight calls finish with the old ones. */
int upstream_update(Upstream *u, const UpstreamSettings *s);

/* Told about every HTTP exchange with Visier (status 0: none completed). Set once, before use. */
typedef void (*upstream_observer_fn)(void *userdata, const char *endpoint, long status, usec_t latency);
void upstream_set_observer(Upstream *u, upstream_observer_fn fn, void *userdata);

/* The token keeper whose tokens calls use (set once, after both exist). */
void upstream_set_token_keeper(Upstream *u, TokenKeeper *tk);

/* Log in with the configured username and password: a token_login_fn. */
int upstream_login(void *userdata, Secret **ret_token, char *err, size_t errlen);

/*
 * Make one call. Returns 0 with ret filled for any HTTP answer (the caller owns it; free
 * with upstream_response_done), or a negative errno with err set:
 *   -ENOKEY     no token could be obtained, or Visier kept refusing it (nothing was applied)
 *   -ECANCELED  a write not sent: the deadline passed while its earlier attempts were refused
 *               outright (401, 429), so nothing of it landed
 *   -ETIMEDOUT  the deadline passed (connect or answer)
 *   -EBUSY      the rate budget stays empty past the deadline
 *   -EFBIG      the answer was larger than max_response
 *   -EHOSTUNREACH  Visier could not be reached or dropped the connection
 */
int upstream_call(Upstream *u, const UpstreamRequest *req, UpstreamResponse *ret, char *err, size_t errlen);
void upstream_response_done(UpstreamResponse *r);

void upstream_stats(Upstream *u, UpstreamStats *ret);

/*
 * Streamed calls, for answers too large to hold (data exports). upstream_stream_open() makes
 * the call — token, rate budget, and the same retries as upstream_call(), all before any body
 * byte is handed out — and returns once Visier's status and headers are in. The body is then
 * read piece by piece: at most UPSTREAM_STREAM_BUFFER bytes are held, and libcurl is paused
 * while the reader is slower than Visier. A transfer that breaks off makes the read fail
 * (-EIO) rather than end early, so a short export is never mistaken for a whole one.
 */
#define UPSTREAM_STREAM_BUFFER (256 * 1024)
typedef struct UpstreamStream UpstreamStream;
int upstream_stream_open(Upstream *u, const UpstreamRequest *req, UpstreamStream **ret, long *ret_status,
                         char **ret_content_type, char *err, size_t errlen);
/* > 0 bytes read, 0 at the end of the body, -EIO if the transfer failed. Blocks. */
ssize_t upstream_stream_read(UpstreamStream *st, char *buf, size_t len);
UpstreamStream *upstream_stream_close(UpstreamStream *st);
