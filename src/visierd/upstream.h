/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The upstream client: every call visierd makes to Visier goes through here (libcurl).
 *
 * It injects the apikey header and the VisierASIDToken cookie, sends credentials only to
 * the configured origin and follows no redirects, verifies TLS always, takes every call from
 * the shared rate budget (logins too), retries a 401 with a fresh token within the deadline
 * (a 401 never reaches the caller: -ENOKEY), waits out a 429 without
 * counting it as a failed attempt, and retries idempotent calls on network errors and 5xx
 * with exponential backoff and jitter — all within one deadline per call. Never logs.
 *
 * Two ways to call, one set of rules. The blocking calls (upstream_call, upstream_stream_open
 * and _read, upstream_login) are for threads of their own (the publisher, the export runner,
 * the token keeper); each keeps its connections warm in a pooled easy handle. The calls on an
 * sd-event loop (upstream_attach_event, upstream_call_start, upstream_stream_start) never
 * block: one libcurl multi handle driven by the loop's io and time sources, the rate budget's
 * waits and the backoff as timers, and a wait for the token keeper's login as a notification
 * from its thread. They and everything done with what they return run on the loop's thread
 * only, and their callbacks are always called from the loop, never from inside the function
 * that started the work.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "clock.h"
#include "fleet.h"
#include "ratelimit.h"
#include "secret.h"
#include "token.h"

#define UPSTREAM_ERROR_MAX 512
#define UPSTREAM_RETRY_BASE (250 * USEC_PER_MSEC)
#define UPSTREAM_RETRY_MAX (5 * USEC_PER_SEC)
#define UPSTREAM_RETRY_AFTER_DEFAULT (1 * USEC_PER_SEC)
#define UPSTREAM_POOL_MAX 64              /* idle easy handles kept, per kind (blocking, loop) */
#define UPSTREAM_CONNECTIONS_DEFAULT 256 /* connections the loop opens and keeps warm (max_connections 0) */

typedef struct UpstreamSettings {
        const char *base_url;
        const char *username;
        const Secret *apikey;
        const Secret *password;
        const char *ca_file;
        const char *proxy; /* NULL or "": none (the environment's proxy variables are ignored) */
        usec_t connect_timeout;
        usec_t request_timeout;
        unsigned max_retries;
        size_t max_response;
        /* Connections to Visier the loop's multi handle opens at most and keeps for reuse
         * (0: the default); calls beyond wait for one to come free, within their deadline.
         * Size it for the local concurrency (e.g. [listen] max_connections): a smaller cache
         * closes connections after every burst, and each new one is a TLS handshake. */
        unsigned max_connections;
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
        /* Requests whose budget take was older than RATELIMIT_SEND_SLACK when their connection
         * was ready: sent under a new take, or held back (not sent) when none was left. */
        uint64_t retaken, held_back;
        /* Requests sent with a bound on their delivery (tcpbound.h); the others went on a
         * socket visierd did not open (none, today). Not in /status. */
        uint64_t delivery_bounded;
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

/* Told when a call waits for the rate budget (wait: how long), from the thread or loop the
 * call runs on. Set once, before use. */
typedef void (*upstream_budget_wait_fn)(void *userdata, const char *endpoint, usec_t wait);
void upstream_set_budget_wait_observer(Upstream *u, upstream_budget_wait_fn fn, void *userdata);
/*
 * Fleet mode (before the first call): every call and login takes from the tenant's shared
 * budget (fleet_budget_take()) instead of this node's own RateLimit, Visier's
 * X-RateLimit-Remaining-* answers lower the shared one and a 429 closes it for every node. While
 * the database cannot be reached, calls take from this node's own buckets with its share of the
 * tenant's caps (the caps divided by the nodes the fleet last listed, fleet_nodes_last_seen()),
 * so reads go on; docs/fleet.md, "Outages", says what that costs.
 */
void upstream_set_fleet(Upstream *u, Fleet *fleet);

/*
 * How long from now until the rate budget could give a call (0: now), without taking one: the
 * shared budget's in fleet mode, else this node's. 0 as well when it cannot be told (no budget,
 * the database unreachable): the call's own take then decides.
 */
usec_t upstream_budget_wait(Upstream *u);

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
/* > 0 bytes read, 0 at the end of the body, -EIO if the transfer failed. Blocks. Only for
 * streams from upstream_stream_open(). */
ssize_t upstream_stream_read(UpstreamStream *st, char *buf, size_t len);
/* Ends a stream of either kind (cutting the transfer short if it is still going) and frees
 * it; after it returns, no callback of the stream is called. Accepts NULL. */
UpstreamStream *upstream_stream_close(UpstreamStream *st);
DEFINE_TRIVIAL_CLEANUP_FUNC(UpstreamStream *, upstream_stream_close);

/* ---- on an sd-event loop: every function below runs on the loop's thread only ---- */

/*
 * Drive the calls below from this loop: one libcurl multi handle on its io and time sources,
 * and the token keeper's login results bounced onto it through an eventfd. Once per Upstream.
 * -EBUSY if already attached; -ENOMEM, or -EINVAL if libcurl refuses the multi's options.
 */
int upstream_attach_event(Upstream *u, sd_event *e);
/*
 * The reverse (upstream_free() does it too): every call and stream still going is cut short
 * and freed without a callback, so their owners must have dropped them first. Call it before
 * the token keeper or the loop is freed.
 */
void upstream_detach_event(Upstream *u);

/*
 * A call on the loop: the same rules, errors (r) and bytes on the wire as upstream_call(),
 * within the same single deadline; everything in req is copied. done is called once, from
 * the loop, with r = 0 and the answer (resp, whose fields the callback may take, e.g. with
 * TAKE_PTR; the rest is freed when it returns) or a negative errno, resp NULL and err the
 * reason. The call is freed before done runs: do not abort it from there. NULL (errno set)
 * when out of memory or not attached.
 */
typedef struct UpstreamCall UpstreamCall;
typedef void (*upstream_done_fn)(void *userdata, int r, UpstreamResponse *resp, const char *err);
UpstreamCall *upstream_call_start(Upstream *u, const UpstreamRequest *req, upstream_done_fn done, void *userdata);
/* Cancel a call not yet done (its client went away; shutdown): once this returns, done is
 * never called. Accepts NULL. */
void upstream_call_abort(UpstreamCall *c);

/*
 * A streamed call on the loop (data queries): token, budget, the same retries and errors as
 * upstream_stream_open(), then on_headers once, from the loop, with r = 0, Visier's status and
 * content type (valid during the callback), or a negative errno and err — no body byte is
 * handed out before it. Then read with upstream_stream_read_nb() and wait with
 * upstream_stream_notify(). The caller owns the stream in every case and ends it with
 * upstream_stream_close() (from a callback too). At most UPSTREAM_STREAM_BUFFER bytes are
 * held: libcurl is paused while the buffer is full and resumed as the reader drains it.
 */
typedef void (*upstream_stream_headers_fn)(void *userdata, int r, long status, const char *content_type,
                                           const char *err);
UpstreamStream *upstream_stream_start(Upstream *u, const UpstreamRequest *req, upstream_stream_headers_fn on_headers,
                                      void *userdata);
/* > 0 bytes read, 0 at the end of the body, -EAGAIN when nothing is buffered yet, -EIO when
 * the transfer broke off (after every byte received before) or on_headers reported an error,
 * -EINVAL before on_headers. Never blocks. */
ssize_t upstream_stream_read_nb(UpstreamStream *st, char *buf, size_t len);
/* Call fn(userdata) once, from the loop, when data, the end or an error can be read (at the
 * next loop iteration if that is already so). Replaces an earlier request; fn NULL cancels. */
void upstream_stream_notify(UpstreamStream *st, void (*fn)(void *userdata), void *userdata);
/* Body bytes held now (at most UPSTREAM_STREAM_BUFFER). */
size_t upstream_stream_buffered(const UpstreamStream *st);
