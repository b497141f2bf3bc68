/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The upstream client on an sd-event loop (upstream_attach_event, upstream_call_start,
 * upstream_stream_start), run in the test's own thread against the real visier-sim, and against
 * a capture server of the test's own that records the exact bytes of every request. Each test
 * states what it proves; "the loop stays free" is measured with a 10 ms ticker on the same loop.
 */
#include <check.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "clock.h"
#include "harness.h"
#include "ratelimit.h"
#include "tcpbound.h"
#include "token.h"
#include "upstream.h"

#define LIST_BODY                                                                                               \
        "{\"source\":{\"analyticObject\":\"Employee\"},\"columns\":["                                           \
        "{\"columnDefinition\":{\"property\":{\"name\":\"EmployeeID\",\"qualifyingPath\":\"Employee\"}}},"      \
        "{\"columnDefinition\":{\"property\":{\"name\":\"Full_Name\",\"qualifyingPath\":\"Employee\"}}},"       \
        "{\"columnDefinition\":{\"property\":{\"name\":\"Pay_Level\",\"qualifyingPath\":\"Employee\"}}}],"      \
        "\"timeInterval\":{\"fromDateTime\":\"2025-01-01\"}}"

#define TICK (10 * USEC_PER_MSEC)

static const char *const read_paths[] = {
        "/v1/admin/capabilities",
        "/v1/admin/content-packages",
        "/v1/admin/data-security-objects",
        "/v1/data/model/analytic-objects",
        "/v1/data/model/analytic-objects/Employee/dimensions",
        "/v1/data/model/analytic-objects/Employee/dimensions/Location/members",
        "/v1/admin/permissions",
        "/v1/admin/permissions/3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71",
        "/v1/admin/capabilities/no_such_capability",
        "/v1/data/model/analytic-objects/NoSuchObject/dimensions",
};

typedef struct Env {
        sd_event *event;
        RateLimit rl;
        bool rl_init;
        Upstream *u;
        TokenKeeper *tk;
        sd_event_source *ticker;
        unsigned ticks;
} Env;

static Sim sim;
static Env env;

/* ---- the loop ---- */

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        env.ticks++;
        ck_assert_int_ge(sd_event_source_set_time(s, usec + TICK), 0);
        ck_assert_int_ge(sd_event_source_set_enabled(s, SD_EVENT_ONESHOT), 0);
        return 0;
}

/* Count loop turns with a 10 ms ticker: a loop blocked by a sleep or a blocking call misses them. */
static void ticker_stop(void);

static void ticker_start(void) {
        uint64_t now;

        ticker_stop();
        ck_assert_int_ge(sd_event_now(env.event, CLOCK_BOOTTIME, &now), 0);
        ck_assert_int_ge(sd_event_add_time(env.event, &env.ticker, CLOCK_BOOTTIME, now + TICK, 1, on_tick, NULL), 0);
        env.ticks = 0;
}

static void ticker_stop(void) {
        env.ticker = sd_event_source_disable_unref(env.ticker);
}

/* Run the loop until *counter reaches want; fails the test after timeout. Returns the number
 * of event sources dispatched. */
static unsigned loop_until(const unsigned *counter, unsigned want, usec_t timeout) {
        usec_t deadline = clock_now() + timeout;
        unsigned turns = 0;

        while (*counter < want) {
                int r;

                ck_assert_msg(clock_now() < deadline, "the loop got %u of %u in time", *counter, want);
                r = sd_event_run(env.event, 100 * USEC_PER_MSEC);
                ck_assert_int_ge(r, 0);
                turns += r > 0;
        }
        return turns;
}

/* Run the loop for a while, whatever happens. */
static unsigned loop_for(usec_t duration) {
        usec_t end = clock_now() + duration;
        unsigned turns = 0;

        while (clock_now() < end) {
                int r = sd_event_run(env.event, (end - clock_now()));
                ck_assert_int_ge(r, 0);
                turns += r > 0;
        }
        return turns;
}

/* ---- the client under test ---- */

static int fixed_login(void *userdata, Secret **ret, char *err, size_t errlen) {
        *ret = secret_new("tok-test-123", strlen("tok-test-123"));
        return *ret ? 0 : -ENOMEM;
}

typedef struct EnvOptions {
        const char *base_url; /* NULL: the sim */
        const char *password; /* NULL: the sim's */
        unsigned request_timeout_sec;
        unsigned rate_minute; /* 0: plenty */
        token_login_fn login; /* NULL: upstream_login */
        bool no_keeper_start;
        unsigned max_connections; /* 0: the default */
} EnvOptions;

static void env_start(const EnvOptions *o) {
        char *url = o->base_url ? strdup(o->base_url) : sim_url(&sim, "");
        const char *apikey = o->base_url ? "key-test-456" : sim.apikey;
        const char *password = o->password ?: (o->base_url ? "pw" : sim.password);
        Secret *k = secret_new(apikey, strlen(apikey)), *p = secret_new(password, strlen(password));
        UpstreamSettings us = {
                .base_url = url,
                .username = o->base_url ? "api-user" : sim.username,
                .apikey = k,
                .password = p,
                .connect_timeout = 5 * USEC_PER_SEC,
                .request_timeout = (o->request_timeout_sec ?: 20) * USEC_PER_SEC,
                .max_retries = 3,
                .max_response = 32 * 1024 * 1024,
                .max_connections = o->max_connections,
        };

        ck_assert_int_ge(sd_event_new(&env.event), 0);
        ratelimit_init(&env.rl, o->rate_minute ?: 1000000, 100000000);
        env.rl_init = true;
        ck_assert_int_eq(upstream_new(&us, &env.rl, &env.u), 0);
        ck_assert_int_eq(token_keeper_new(3600 * USEC_PER_SEC, 300 * USEC_PER_SEC, o->login ?: upstream_login, env.u,
                                          NULL, NULL, &env.tk),
                         0);
        upstream_set_token_keeper(env.u, env.tk);
        ck_assert_int_eq(upstream_attach_event(env.u, env.event), 0);
        ck_assert_int_eq(upstream_attach_event(env.u, env.event), -EBUSY);
        if (!o->no_keeper_start)
                ck_assert_int_eq(token_keeper_start(env.tk), 0);
        secret_free(k);
        secret_free(p);
        free(url);
}

static void env_stop(void) {
        ticker_stop();
        if (env.u)
                upstream_detach_event(env.u); /* before the keeper goes */
        env.tk = token_keeper_free(env.tk);
        env.u = upstream_free(env.u);
        if (env.rl_init)
                ratelimit_done(&env.rl);
        env.event = sd_event_unref(env.event);
        memset(&env, 0, sizeof(env));
}

static void teardown(void) {
        env_stop();
        sim_stop(&sim);
        if (sim.dir[0])
                harness_rmtree(sim.dir);
        memset(&sim, 0, sizeof(sim));
}

static void start_sim(void) {
        const char *args[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };
        sim_start(&sim, args);
}

static void set_faults(const char *json) {
        json_decref(sim_control_post(&sim, "/_sim/faults", json));
}

/* Wait (probing, off the loop) until the keeper holds a token. */
static void wait_token(void) {
        usec_t deadline = clock_now() + 20 * USEC_PER_SEC;
        TokenStatus ts;

        for (;;) {
                token_keeper_status(env.tk, &ts);
                if (ts.valid)
                        return;
                ck_assert_msg(clock_now() < deadline, "no token: %s", ts.last_error);
                clock_sleep(10 * USEC_PER_MSEC);
        }
}

typedef struct Result {
        unsigned called;
        int r;
        long status;
        char *body, *content_type;
        size_t len;
        unsigned attempts;
        char err[UPSTREAM_ERROR_MAX];
        usec_t at;
} Result;

static unsigned n_done;

static void on_done(void *userdata, int r, UpstreamResponse *resp, const char *err) {
        Result *res = userdata;

        res->called++;
        res->r = r;
        res->at = clock_now();
        if (r >= 0) {
                ck_assert_ptr_nonnull(resp);
                ck_assert_ptr_null(err);
                res->status = resp->status;
                res->body = TAKE_PTR(resp->body);
                res->len = resp->body_len;
                res->attempts = resp->attempts;
                res->content_type = resp->content_type ? strdup(resp->content_type) : NULL;
        } else {
                ck_assert_ptr_null(resp);
                ck_assert_ptr_nonnull(err);
                snprintf(res->err, sizeof(res->err), "%s", err);
        }
        n_done++;
}

static void result_done(Result *res) {
        free(res->body);
        free(res->content_type);
        memset(res, 0, sizeof(*res));
}

static UpstreamCall *start_call(const char *method, const char *path, const char *query, const char *const *headers,
                                const char *body, bool idempotent, Result *res) {
        UpstreamCall *c = upstream_call_start(env.u,
                                              &(UpstreamRequest) {
                                                      .method = method,
                                                      .path = path,
                                                      .query = query,
                                                      .headers = headers,
                                                      .body = body,
                                                      .body_len = body ? strlen(body) : 0,
                                                      .idempotent = idempotent,
                                              },
                                              on_done, res);
        ck_assert_ptr_nonnull(c);
        return c;
}

/* One call on the loop, run to its end. */
static void call_on_loop(const char *method, const char *path, const char *query, const char *const *headers,
                         const char *body, bool idempotent, Result *res) {
        unsigned before = n_done;

        start_call(method, path, query, headers, body, idempotent, res);
        ck_assert_uint_eq(res->called, 0); /* never from inside the start */
        loop_until(&n_done, before + 1, 60 * USEC_PER_SEC);
        ck_assert_uint_eq(res->called, 1);
}

static void call_blocking(const char *method, const char *path, const char *query, const char *const *headers,
                          const char *body, bool idempotent, UpstreamResponse *resp) {
        char err[UPSTREAM_ERROR_MAX] = "";
        int r;

        r = upstream_call(env.u,
                          &(UpstreamRequest) {
                                  .method = method,
                                  .path = path,
                                  .query = query,
                                  .headers = headers,
                                  .body = body,
                                  .body_len = body ? strlen(body) : 0,
                                  .idempotent = idempotent,
                          },
                          resp, err, sizeof(err));
        ck_assert_msg(r == 0, "%s %s: %s", method, path, err);
}

static void check_sim_saw_clean_credentials(void) {
        ck_assert_int_eq(sim_counter(&sim, "bad_apikey"), 0);
        ck_assert_int_eq(sim_counter(&sim, "bad_token"), 0);
        ck_assert_int_eq(sim_counter(&sim, "foreign_cookies"), 0);
        ck_assert_int_eq(sim_counter(&sim, "authorization_headers"), 0);
}

/* ---- calls ---- */

/* Many calls at once complete, each with the answer (status, body, content type) the blocking
 * path gets for the same request; the request is copied (the caller's buffers are gone by the
 * time anything is sent); the sim saw a good apikey and cookie on every one. */
START_TEST(test_many_concurrent_calls) {
        enum { PER_PATH = 10, N = ELEMENTSOF(read_paths) * PER_PATH };
        static Result res[N];
        UpstreamResponse want[ELEMENTSOF(read_paths)] = {};

        start_sim();
        env_start(&(EnvOptions) {});
        for (size_t i = 0; i < N; i++) {
                char *path = strdup(read_paths[i % ELEMENTSOF(read_paths)]);
                char *h = strdup("TargetTenantID: WFF_j1r");
                const char *headers[] = { h, NULL };

                start_call("GET", path, NULL, headers, NULL, true, &res[i]);
                memset(path, 'x', strlen(path)); /* the client must have its own copy */
                memset(h, 'x', strlen(h));
                free(path);
                free(h);
        }
        n_done = 0;
        loop_until(&n_done, N, 60 * USEC_PER_SEC);

        for (size_t p = 0; p < ELEMENTSOF(read_paths); p++)
                call_blocking("GET", read_paths[p], NULL, (const char *const[]) { "TargetTenantID: WFF_j1r", NULL },
                              NULL, true, &want[p]);
        for (size_t i = 0; i < N; i++) {
                UpstreamResponse *w = &want[i % ELEMENTSOF(read_paths)];

                ck_assert_uint_eq(res[i].called, 1);
                ck_assert_msg(res[i].r == 0, "call %zu: %s", i, res[i].err);
                ck_assert_int_eq(res[i].status, w->status);
                ck_assert_str_eq(res[i].content_type, w->content_type);
                ck_assert_msg(res[i].len == w->body_len && memcmp(res[i].body, w->body, w->body_len) == 0,
                              "%s: the body differs from the blocking call's", read_paths[i % ELEMENTSOF(read_paths)]);
                result_done(&res[i]);
        }
        ck_assert_int_eq(want[0].status, 200);
        ck_assert_int_eq(want[ELEMENTSOF(read_paths) - 1].status, 404);
        for (size_t p = 0; p < ELEMENTSOF(read_paths); p++)
                upstream_response_done(&want[p]);
        check_sim_saw_clean_credentials();
        ck_assert_int_eq(sim_counter(&sim, "logins"), 1);
}
END_TEST

/* ---- a capture server: the exact bytes of each request ---- */

#define CAPTURE_MAX 16
#define CAPTURE_REQUEST_MAX (64 * 1024)

typedef struct Capture {
        int fd;
        unsigned port;
        pthread_t thread;
        pthread_mutex_t lock;
        char *requests[CAPTURE_MAX];
        size_t n;
} Capture;

static Capture capture;

/* Read one request (headers and a Content-Length body), or NULL at EOF. */
static char *capture_read(int fd) {
        char *buf = malloc(CAPTURE_REQUEST_MAX + 1), *end;
        size_t len = 0, want = 0;

        ck_assert_ptr_nonnull(buf);
        for (;;) {
                ssize_t n = recv(fd, buf + len, CAPTURE_REQUEST_MAX - len, 0);

                if (n <= 0) {
                        free(buf);
                        return NULL;
                }
                len += (size_t) n;
                buf[len] = '\0';
                end = strstr(buf, "\r\n\r\n");
                if (end && want == 0) {
                        const char *cl = strcasestr(buf, "\r\nContent-Length:");
                        want = (size_t) (end - buf) + 4 + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
                }
                if (want > 0 && len >= want)
                        return buf;
                ck_assert_uint_lt(len, CAPTURE_REQUEST_MAX);
        }
}

static void *capture_thread(void *arg) {
        static const char answer[] =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";

        for (;;) {
                int c = accept4(capture.fd, NULL, NULL, SOCK_CLOEXEC);
                char *req;

                if (c < 0)
                        return NULL; /* shut down */
                req = capture_read(c);
                if (req) {
                        pthread_mutex_lock(&capture.lock);
                        if (capture.n < CAPTURE_MAX)
                                capture.requests[capture.n++] = req;
                        else
                                free(req);
                        pthread_mutex_unlock(&capture.lock);
                        /* Recorded before the answer, so a finished call's bytes are in. */
                        ck_assert_int_eq(send(c, answer, sizeof(answer) - 1, MSG_NOSIGNAL),
                                         (ssize_t) sizeof(answer) - 1);
                }
                close(c);
        }
}

static void capture_start(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof(a);

        capture.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(capture.fd, 0);
        ck_assert_int_eq(bind(capture.fd, (struct sockaddr *) &a, sizeof(a)), 0);
        ck_assert_int_eq(listen(capture.fd, 16), 0);
        ck_assert_int_eq(getsockname(capture.fd, (struct sockaddr *) &a, &al), 0);
        capture.port = ntohs(a.sin_port);
        pthread_mutex_init(&capture.lock, NULL);
        ck_assert_int_eq(pthread_create(&capture.thread, NULL, capture_thread, NULL), 0);
}

static void capture_stop(void) {
        shutdown(capture.fd, SHUT_RDWR); /* accept() returns */
        pthread_join(capture.thread, NULL);
        close(capture.fd);
        for (size_t i = 0; i < capture.n; i++)
                free(capture.requests[i]);
        pthread_mutex_destroy(&capture.lock);
        memset(&capture, 0, sizeof(capture));
}

/* The request captured last (the caller frees it). */
static char *capture_last(void) {
        char *r;

        pthread_mutex_lock(&capture.lock);
        ck_assert_uint_gt(capture.n, 0);
        capture.n--;
        r = TAKE_PTR(capture.requests[capture.n]);
        pthread_mutex_unlock(&capture.lock);
        return r;
}

static unsigned stream_headers_called;
static int stream_headers_r;
static long stream_headers_status;

static void on_stream_headers_note(void *userdata, int r, long status, const char *content_type, const char *err) {
        stream_headers_called++;
        stream_headers_r = r;
        stream_headers_status = status;
}

/* The loop's calls and streams put the same bytes on the wire as the blocking ones — method,
 * path and query, forwarded headers in order, the added Content-Type, the apikey and the
 * VisierASIDToken cookie, the body — and the bytes are the ones stated here. */
START_TEST(test_request_bytes_match_blocking) {
        static const char *const get_headers[] = { "TargetTenantID: WFF_j1r", "Accept: application/json", NULL };
        static const char *const post_headers[] = { "Accept: text/csv", NULL };
        static const char *const put_headers[] = { "Content-Type: application/json", "ProjectID: p-1", NULL };
        static const struct {
                const char *method, *path, *query, *body;
                const char *const *headers;
                bool idempotent;
        } reqs[] = {
                { "GET", "/v1/admin/permissions", "includeDetails=true&limit=5", NULL, get_headers, true },
                { "POST", "/v1/data/query/list", NULL, LIST_BODY, post_headers, true },
                { "PUT", "/v1/admin/permissions", NULL, "{\"permissions\":[]}", put_headers, false },
                { "DELETE", "/v1/admin/permissions", "ids=a,b", NULL, NULL, false },
        };
        char url[64], expected[1024];
        char *blocking, *loop;

        capture_start();
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", capture.port);
        env_start(&(EnvOptions) { .base_url = url, .login = fixed_login });
        wait_token();

        for (size_t i = 0; i < ELEMENTSOF(reqs); i++) {
                UpstreamResponse resp = {};
                Result res = {};

                call_blocking(reqs[i].method, reqs[i].path, reqs[i].query, reqs[i].headers, reqs[i].body,
                              reqs[i].idempotent, &resp);
                ck_assert_int_eq(resp.status, 200);
                upstream_response_done(&resp);
                blocking = capture_last();
                call_on_loop(reqs[i].method, reqs[i].path, reqs[i].query, reqs[i].headers, reqs[i].body,
                             reqs[i].idempotent, &res);
                ck_assert_msg(res.r == 0, "%s", res.err);
                ck_assert_int_eq(res.status, 200);
                result_done(&res);
                loop = capture_last();
                ck_assert_str_eq(loop, blocking);
                if (i == 0) {
                        snprintf(expected, sizeof(expected),
                                 "GET /v1/admin/permissions?includeDetails=true&limit=5 HTTP/1.1\r\n"
                                 "Host: 127.0.0.1:%u\r\n"
                                 "User-Agent: visierd/" PACKAGE_VERSION "\r\n"
                                 "TargetTenantID: WFF_j1r\r\n"
                                 "Accept: application/json\r\n"
                                 "apikey: key-test-456\r\n"
                                 "Cookie: VisierASIDToken=tok-test-123\r\n"
                                 "\r\n",
                                 capture.port);
                        ck_assert_str_eq(loop, expected);
                }
                if (i == 1) {
                        snprintf(expected, sizeof(expected),
                                 "POST /v1/data/query/list HTTP/1.1\r\n"
                                 "Host: 127.0.0.1:%u\r\n"
                                 "User-Agent: visierd/" PACKAGE_VERSION "\r\n"
                                 "Accept: text/csv\r\n"
                                 "Content-Type: application/json\r\n"
                                 "apikey: key-test-456\r\n"
                                 "Cookie: VisierASIDToken=tok-test-123\r\n"
                                 "Content-Length: %zu\r\n"
                                 "\r\n" LIST_BODY,
                                 capture.port, strlen(LIST_BODY));
                        ck_assert_str_eq(loop, expected);
                }
                free(blocking);
                free(loop);
        }

        /* A streamed call on the loop sends what a blocking streamed call sends. */
        {
                const UpstreamRequest sreq = { .method = "POST", .path = "/v1/data/query/list", .body = LIST_BODY,
                                               .body_len = strlen(LIST_BODY), .idempotent = true,
                                               .headers = (const char *const[]) { "Accept: text/csv", NULL } };
                char err[UPSTREAM_ERROR_MAX], *ct = NULL;
                UpstreamStream *st;
                long status = 0;

                ck_assert_int_eq(upstream_stream_open(env.u, &sreq, &st, &status, &ct, err, sizeof(err)), 0);
                ck_assert_int_eq(status, 200);
                upstream_stream_close(st);
                free(ct);
                blocking = capture_last();
                stream_headers_called = 0;
                st = upstream_stream_start(env.u, &sreq, on_stream_headers_note, NULL);
                ck_assert_ptr_nonnull(st);
                loop_until(&stream_headers_called, 1, 30 * USEC_PER_SEC);
                ck_assert_int_eq(stream_headers_r, 0);
                ck_assert_int_eq(stream_headers_status, 200);
                upstream_stream_close(st);
                loop = capture_last();
                ck_assert_str_eq(loop, blocking);
                free(blocking);
                free(loop);
        }
        env_stop();
        capture_stop();
}
END_TEST

/* A revoked token: the 401 invalidates that token's generation, the keeper logs in once, and
 * the call is answered 200 with the new token on its second attempt; after another revocation
 * 20 concurrent calls all get 200 from one more login. No 401 reaches a caller. */
START_TEST(test_401_retried_with_new_token) {
        enum { N = 20 };
        static Result res[N];
        UpstreamStats stats;

        start_sim();
        env_start(&(EnvOptions) {});
        wait_token();
        ck_assert_uint_eq(token_generation(env.tk), 1);

        json_decref(sim_control_post(&sim, "/_sim/revoke-tokens", NULL));
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[0]);
        ck_assert_msg(res[0].r == 0, "%s", res[0].err);
        ck_assert_int_eq(res[0].status, 200);
        ck_assert_uint_eq(res[0].attempts, 2);
        result_done(&res[0]);
        ck_assert_uint_eq(token_generation(env.tk), 2);
        upstream_stats(env.u, &stats);
        ck_assert_uint_eq(stats.unauthorized, 1);

        json_decref(sim_control_post(&sim, "/_sim/revoke-tokens", NULL));
        n_done = 0;
        for (size_t i = 0; i < N; i++)
                start_call("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[i]);
        loop_until(&n_done, N, 30 * USEC_PER_SEC);
        for (size_t i = 0; i < N; i++) {
                ck_assert_msg(res[i].r == 0, "call %zu: %s", i, res[i].err);
                ck_assert_int_eq(res[i].status, 200);
                ck_assert_uint_le(res[i].attempts, 2);
                result_done(&res[i]);
        }
        ck_assert_uint_eq(token_generation(env.tk), 3);
        ck_assert_int_eq(sim_counter(&sim, "logins"), 3);
}
END_TEST

/* A 429 closes the budget until Retry-After and the call is retried after it (not as a failed
 * attempt); a budget that has a call only later is waited for on a timer; one that has none
 * before the deadline gives -EBUSY at once. Throughout, the loop keeps turning. */
START_TEST(test_429_and_budget_waits_on_timers) {
        Result res = {};
        UpstreamStats stats;
        usec_t t0;

        start_sim();
        env_start(&(EnvOptions) { .rate_minute = 120, .request_timeout_sec = 5 });
        wait_token();

        set_faults("{\"next_throttles\":1,\"retry_after\":1}");
        ticker_start();
        t0 = clock_now();
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res);
        ck_assert_msg(res.r == 0, "%s", res.err);
        ck_assert_int_eq(res.status, 200);
        ck_assert_uint_eq(res.attempts, 2);
        ck_assert_uint_ge(res.at - t0, 900 * USEC_PER_MSEC);
        ck_assert_msg(env.ticks >= 50, "the loop turned only %u times in %llu ms", env.ticks,
                      (unsigned long long) ((res.at - t0) / USEC_PER_MSEC));
        result_done(&res);
        upstream_stats(env.u, &stats);
        ck_assert_uint_eq(stats.throttled, 1);
        ck_assert_uint_eq(stats.retries, 0); /* not a failed attempt */
        ck_assert_int_eq(sim_counter(&sim, "throttles_injected"), 1);

        /* Close the budget for 0.5 s: the next call is free then. */
        ratelimit_block(&env.rl, clock_now() + 500 * USEC_PER_MSEC);
        ticker_start();
        t0 = clock_now();
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res);
        ck_assert_msg(res.r == 0, "%s", res.err);
        ck_assert_uint_ge(res.at - t0, 300 * USEC_PER_MSEC);
        ck_assert_msg(env.ticks >= 20, "the loop turned only %u times while waiting for the budget", env.ticks);
        result_done(&res);

        /* No call before the deadline: -EBUSY without waiting. */
        ratelimit_block(&env.rl, clock_now() + 60 * USEC_PER_SEC);
        t0 = clock_now();
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res);
        ck_assert_int_eq(res.r, -EBUSY);
        ck_assert_msg(strstr(res.err, "rate budget"), "%s", res.err);
        ck_assert_uint_lt(res.at - t0, 500 * USEC_PER_MSEC);
        result_done(&res);
}
END_TEST

/*
 * The budget counts a call's place from its take, so a request must leave within
 * RATELIMIT_SEND_SLACK of it. Two calls at once with one connection allowed and each answer
 * taking 1.5 s: the second takes its place at once but its connection is ready only when the
 * first's answer is in. With a place left then, it takes a new one and is sent (the budget
 * shows both places spent); with none left, a write is held back, never sent, and ends with
 * -EBUSY when no place comes back before its deadline, not as one that may have landed.
 */
START_TEST(test_stale_take_retaken_or_held_back) {
        static Result res[2];
        UpstreamStats stats;
        unsigned minute = 0, hour = 0;

        start_sim();
        /* The login, two calls and one take again. */
        env_start(&(EnvOptions) { .rate_minute = 4, .max_connections = 1 });
        wait_token();
        set_faults("{\"latency_ms\":1500}");
        n_done = 0;
        start_call("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[0]);
        start_call("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[1]);
        loop_until(&n_done, 2, 30 * USEC_PER_SEC);
        for (size_t i = 0; i < 2; i++) {
                ck_assert_msg(res[i].r == 0, "call %zu: %s", i, res[i].err);
                ck_assert_int_eq(res[i].status, 200);
                ck_assert_uint_eq(res[i].attempts, 1);
                result_done(&res[i]);
        }
        upstream_stats(env.u, &stats);
        ck_assert_uint_eq(stats.retaken, 1);
        ck_assert_uint_eq(stats.held_back, 0);
        ratelimit_snapshot(&env.rl, clock_now(), &minute, &hour);
        ck_assert_uint_eq(minute, 0);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 2);
        env_stop();

        /* The login and two calls: no place for a new take. */
        set_faults("{\"latency_ms\":0}");
        env_start(&(EnvOptions) { .rate_minute = 3, .max_connections = 1, .request_timeout_sec = 5 });
        wait_token();
        set_faults("{\"latency_ms\":1500}");
        n_done = 0;
        start_call("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[0]);
        start_call("POST", "/v1/admin/permissions", NULL, NULL, "{\"permissions\":[]}", false, &res[1]);
        loop_until(&n_done, 2, 30 * USEC_PER_SEC);
        ck_assert_msg(res[0].r == 0, "%s", res[0].err);
        ck_assert_int_eq(res[0].status, 200);
        ck_assert_msg(res[1].r == -EBUSY, "%d %s", res[1].r, res[1].err);
        ck_assert_msg(strstr(res[1].err, "rate budget"), "%s", res[1].err);
        for (size_t i = 0; i < 2; i++)
                result_done(&res[i]);
        upstream_stats(env.u, &stats);
        ck_assert_uint_eq(stats.retaken, 0);
        ck_assert_uint_eq(stats.held_back, 1);
        ck_assert_uint_eq(stats.failures, 0);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 3);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/permissions"), 0);
}
END_TEST

/* 5xx answers and dropped connections are retried with backoff for idempotent calls; a write
 * gets Visier's 503 as its answer, sent once. */
START_TEST(test_5xx_and_drops_retried) {
        Result res = {};
        UpstreamStats stats;

        start_sim();
        env_start(&(EnvOptions) {});
        wait_token();

        set_faults("{\"next_errors\":2}");
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res);
        ck_assert_msg(res.r == 0, "%s", res.err);
        ck_assert_int_eq(res.status, 200);
        ck_assert_uint_eq(res.attempts, 3);
        result_done(&res);
        upstream_stats(env.u, &stats);
        ck_assert_uint_eq(stats.retries, 2);

        /* (libcurl itself may resend on a fresh connection when a reused one dies unanswered.) */
        set_faults("{\"next_drops\":1}");
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res);
        ck_assert_msg(res.r == 0, "%s", res.err);
        ck_assert_int_eq(res.status, 200);
        ck_assert_uint_le(res.attempts, 2);
        result_done(&res);
        ck_assert_int_eq(sim_counter(&sim, "drops_injected"), 1);

        set_faults("{\"next_errors\":1}");
        call_on_loop("POST", "/v1/data/query/list", NULL, (const char *const[]) { "Accept: text/csv", NULL },
                     LIST_BODY, false, &res);
        ck_assert_msg(res.r == 0, "%s", res.err);
        ck_assert_int_eq(res.status, 503);
        ck_assert_uint_eq(res.attempts, 1);
        result_done(&res);
        ck_assert_int_eq(sim_counter(&sim, "errors_injected"), 3);
}
END_TEST

/* One deadline for everything: a Visier slower than request_timeout gives -ETIMEDOUT at the
 * deadline, and the loop turns all the while. */
START_TEST(test_deadline_times_out) {
        Result res = {};
        usec_t t0;

        start_sim();
        env_start(&(EnvOptions) { .request_timeout_sec = 1 });
        wait_token();
        set_faults("{\"latency_ms\":3000}");
        ticker_start();
        t0 = clock_now();
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res);
        ck_assert_int_eq(res.r, -ETIMEDOUT);
        ck_assert_uint_ge(res.at - t0, 900 * USEC_PER_MSEC);
        ck_assert_uint_lt(res.at - t0, 2500 * USEC_PER_MSEC);
        ck_assert_msg(env.ticks >= 50, "the loop turned only %u times", env.ticks);
        result_done(&res);
        set_faults("{\"latency_ms\":0}");
}
END_TEST

/* ---- the delivery bound (tcpbound.h) ---- */

static int listen_loopback(int rcvbuf, unsigned *ret_port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        /* On the listener, so the accepted connection's window is small from its first byte. */
        if (rcvbuf > 0)
                ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        ck_assert_int_eq(listen(fd, 4), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &a, &al), 0);
        *ret_port = ntohs(a.sin_port);
        return fd;
}

static unsigned user_timeout_ms(int fd) {
        unsigned ms = 0;
        socklen_t len = sizeof(ms);

        ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, &len), 0);
        return ms;
}

/* The sockets libcurl gets: closed abortively (SO_LINGER 0), found by the addresses libcurl
 * gives on_prereq once connected, given TCP_USER_TIMEOUT, a bound not yet over never
 * loosened by a later one, forgotten when libcurl closes them. */
START_TEST(test_tcpbound_sockets) {
        struct sockaddr_in peer = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }, local;
        socklen_t len = sizeof(local);
        struct linger lg = {};
        socklen_t lglen = sizeof(lg);
        struct curl_sockaddr a = { .family = AF_INET, .socktype = SOCK_STREAM, .protocol = IPPROTO_TCP };
        unsigned port, local_port;
        TcpBound *b = NULL;
        int lfd, fd;

        lfd = listen_loopback(0, &port);
        peer.sin_port = htons((uint16_t) port);
        ck_assert_int_eq(tcpbound_new(&b), 0);
        fd = tcpbound_open(b, CURLSOCKTYPE_IPCXN, &a);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &lglen), 0);
        ck_assert_int_eq(lg.l_onoff, 1);
        ck_assert_int_eq(lg.l_linger, 0);
        ck_assert_int_eq(tcpbound_deliver_within(b, "127.0.0.1", 1, "127.0.0.1", (int) port, USEC_PER_SEC), -ENOENT);

        ck_assert_int_eq(connect(fd, (struct sockaddr *) &peer, sizeof(peer)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &local, &len), 0);
        local_port = ntohs(local.sin_port);
        ck_assert_uint_eq(user_timeout_ms(fd), 0);
        ck_assert_int_eq(tcpbound_deliver_within(b, "127.0.0.1", (int) local_port, "127.0.0.1", (int) port + 1,
                                                 USEC_PER_SEC),
                         -ENOENT);
        ck_assert_int_eq(tcpbound_deliver_within(b, "127.0.0.1", (int) local_port, "127.0.0.1", (int) port,
                                                 1500 * USEC_PER_MSEC),
                         0);
        ck_assert_uint_eq(user_timeout_ms(fd), 1500);
        /* A longer bound while the first is not over keeps the first's end. */
        ck_assert_int_eq(tcpbound_deliver_within(b, "127.0.0.1", (int) local_port, "127.0.0.1", (int) port,
                                                 60 * USEC_PER_SEC),
                         0);
        ck_assert_uint_le(user_timeout_ms(fd), 1500);
        ck_assert_uint_ge(user_timeout_ms(fd), 1000); /* the test's own steps take well under 0.5 s */
        /* A shorter one is taken. */
        ck_assert_int_eq(tcpbound_deliver_within(b, "127.0.0.1", (int) local_port, "127.0.0.1", (int) port,
                                                 200 * USEC_PER_MSEC),
                         0);
        ck_assert_uint_eq(user_timeout_ms(fd), 200);

        ck_assert_int_eq(tcpbound_close(b, fd), 0);
        ck_assert_int_eq(tcpbound_deliver_within(b, "127.0.0.1", (int) local_port, "127.0.0.1", (int) port,
                                                 USEC_PER_SEC),
                         -ENOENT);
        tcpbound_free(b);
        close(lfd);
}
END_TEST

/* Every request sent goes with a delivery bound, on new connections and reused ones; and a
 * request whose bytes Visier does not take (a peer that keeps its window shut, as a partition
 * looks to the sender) is dropped with its connection at the bound, RATELIMIT_SLACK after its
 * budget take, not left to the 30 s request timeout; the peer never receives it whole. */
START_TEST(test_undeliverable_request_dropped) {
        enum { BODY = 8 * 1024 * 1024 };
        static Result res;
        UpstreamStats before, after;
        char url[64], *body;
        unsigned port;
        size_t got = 0;
        usec_t t0;
        int lfd, c;

        start_sim();
        env_start(&(EnvOptions) {});
        wait_token();
        upstream_stats(env.u, &before);
        for (int i = 0; i < 3; i++) {
                call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res);
                ck_assert_msg(res.r == 0 && res.status == 200, "%d %s", res.r, res.err);
                result_done(&res);
        }
        upstream_stats(env.u, &after);
        ck_assert_uint_eq(after.delivery_bounded - before.delivery_bounded, 3);
        env_stop();

        lfd = listen_loopback(4096, &port);
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
        env_start(&(EnvOptions) { .base_url = url, .login = fixed_login, .request_timeout_sec = 30 });
        wait_token();
        body = malloc(BODY + 1);
        ck_assert_ptr_nonnull(body);
        memset(body, 'x', BODY);
        body[BODY] = '\0';
        t0 = clock_now();
        call_on_loop("POST", "/v1/admin/permissions", NULL, NULL, body, false, &res);
        printf("undeliverable request: r=%d after %.2f s: %s\n", res.r, (double) (res.at - t0) / USEC_PER_SEC,
               res.err);
        ck_assert_int_lt(res.r, 0);
        ck_assert_int_ne(res.r, -ETIMEDOUT); /* the request timeout's error */
        ck_assert_msg(res.at - t0 < 15 * USEC_PER_SEC, "dropped only after %.1f s",
                      (double) (res.at - t0) / USEC_PER_SEC);
        upstream_stats(env.u, &after);
        ck_assert_uint_eq(after.delivery_bounded, 1);
        result_done(&res);

        /* The peer drains what reached it: a part of the request, never all of it. */
        c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        ck_assert_int_ge(c, 0);
        for (;;) {
                struct pollfd p = { .fd = c, .events = POLLIN };
                ssize_t n;

                if (poll(&p, 1, 500) <= 0)
                        break;
                n = recv(c, body, BODY, 0);
                if (n <= 0)
                        break;
                got += (size_t) n;
        }
        ck_assert_uint_lt(got, BODY);
        printf("undeliverable request: the peer received %zu of its %d body bytes\n", got, BODY);
        close(c);
        close(lfd);
        free(body);
}
END_TEST

static void on_stream_headers_never(void *userdata, int r, long status, const char *content_type, const char *err) {
        ck_abort_msg("on_headers called after the stream was closed");
}

static void on_done_never(void *userdata, int r, UpstreamResponse *resp, const char *err) {
        ck_abort_msg("done called after abort");
}

/* An aborted call never calls back — aborted before its first step, while waiting for a
 * token, and with its transfer in flight — and a stream closed before its headers never
 * does either. Nothing leaks (the sanitizer builds check). */
START_TEST(test_abort_never_calls_back) {
        static const char *const accept_csv[] = { "Accept: text/csv", NULL };
        const UpstreamRequest get = { .method = "GET", .path = "/v1/admin/capabilities", .idempotent = true };
        const UpstreamRequest query = { .method = "POST", .path = "/v1/data/query/list", .body = LIST_BODY,
                                        .body_len = strlen(LIST_BODY), .idempotent = true, .headers = accept_csv };
        UpstreamCall *calls[40];
        UpstreamStream *st;

        start_sim();
        /* No keeper thread yet: every call waits for a token. */
        env_start(&(EnvOptions) { .no_keeper_start = true });
        for (size_t i = 0; i < 10; i++)
                calls[i] = upstream_call_start(env.u, &get, on_done_never, NULL);
        upstream_call_abort(calls[0]); /* before its first step */
        loop_for(100 * USEC_PER_MSEC);
        for (size_t i = 1; i < 10; i++)
                upstream_call_abort(calls[i]); /* waiting for the token */
        upstream_call_abort(NULL);

        ck_assert_int_eq(token_keeper_start(env.tk), 0);
        wait_token();
        set_faults("{\"latency_ms\":400}");
        for (size_t i = 0; i < ELEMENTSOF(calls); i++)
                calls[i] = upstream_call_start(env.u, &get, on_done_never, NULL);
        st = upstream_stream_start(env.u, &query, on_stream_headers_never, NULL);
        ck_assert_ptr_nonnull(st);
        loop_for(150 * USEC_PER_MSEC); /* sent, not answered */
        for (size_t i = 0; i < ELEMENTSOF(calls); i++)
                upstream_call_abort(calls[i]);
        upstream_stream_close(st);
        loop_for(800 * USEC_PER_MSEC); /* the answers would have come by now */
        /* They were in flight: the sim received every one. */
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), ELEMENTSOF(calls));
        ck_assert_int_eq(sim_calls(&sim, "/v1/data/query/list"), 1);
        set_faults("{\"latency_ms\":0}");
}
END_TEST

/* No token yet: calls wait for the keeper's first login without polling (the loop sleeps:
 * only the calls' first steps run while the slow login goes on), then all complete on one
 * login. And while the keeper backs off after a failed login, a call fails at once with that
 * login's error, as token_acquire() does. */
START_TEST(test_waits_for_keeper_without_polling) {
        enum { N = 20 };
        static Result res[N];
        unsigned turns;
        usec_t t0;

        start_sim();
        set_faults("{\"login_latency_ms\":1000}");
        env_start(&(EnvOptions) {});
        t0 = clock_now();
        n_done = 0;
        for (size_t i = 0; i < N; i++)
                start_call("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[i]);
        turns = loop_for(600 * USEC_PER_MSEC);
        ck_assert_uint_eq(n_done, 0);
        ck_assert_msg(turns <= N + 2, "%u loop turns while waiting 600 ms for the login: polling?", turns);
        loop_until(&n_done, N, 30 * USEC_PER_SEC);
        for (size_t i = 0; i < N; i++) {
                ck_assert_msg(res[i].r == 0, "call %zu: %s", i, res[i].err);
                ck_assert_int_eq(res[i].status, 200);
                ck_assert_uint_ge(res[i].at - t0, 900 * USEC_PER_MSEC);
                result_done(&res[i]);
        }
        ck_assert_int_eq(sim_counter(&sim, "logins"), 1);
        env_stop();

        /* A keeper whose login fails backs off; calls meanwhile fail fast with its reason. */
        set_faults("{\"login_latency_ms\":0}");
        env_start(&(EnvOptions) { .password = "wrong-password" });
        {
                usec_t deadline = clock_now() + 10 * USEC_PER_SEC;
                TokenStatus ts;

                do {
                        ck_assert(clock_now() < deadline);
                        clock_sleep(10 * USEC_PER_MSEC);
                        token_keeper_status(env.tk, &ts);
                } while (ts.login_failures == 0);
        }
        t0 = clock_now();
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[0]);
        ck_assert_int_eq(res[0].r, -ENOKEY);
        ck_assert_msg(strstr(res[0].err, "the last login failed"), "%s", res[0].err);
        ck_assert_uint_lt(res[0].at - t0, 200 * USEC_PER_MSEC);
        result_done(&res[0]);
}
END_TEST

/* 200 concurrent calls, twice: the first burst opens at most one connection per call, the
 * second reuses them (the multi's cache is sized for it; the old cap of 64 made it open ~136). */
START_TEST(test_connections_stay_warm) {
        enum { N = 200 };
        static Result res[N];
        long long c0, c1, c2;

        start_sim();
        env_start(&(EnvOptions) {});
        wait_token();
        set_faults("{\"latency_ms\":150}"); /* so that the calls overlap */
        for (int round = 0; round < 2; round++) {
                c0 = sim_counter(&sim, "connections");
                n_done = 0;
                for (size_t i = 0; i < N; i++)
                        start_call("GET", read_paths[i % 3], NULL, NULL, NULL, true, &res[i]);
                loop_until(&n_done, N, 60 * USEC_PER_SEC);
                for (size_t i = 0; i < N; i++) {
                        ck_assert_msg(res[i].r == 0, "call %zu: %s", i, res[i].err);
                        ck_assert_int_eq(res[i].status, 200);
                        result_done(&res[i]);
                }
                c1 = sim_counter(&sim, "connections");
                /* Each sim_counter() is a connection of its own. */
                if (round == 0)
                        ck_assert_msg(c1 - c0 <= N + 1, "%lld connections for %d calls", c1 - c0, N);
                else {
                        c2 = c1 - c0;
                        ck_assert_msg(c2 <= 5, "the second burst of %d calls opened %lld new connections", N, c2);
                }
        }
        set_faults("{\"latency_ms\":0}");
}
END_TEST

/* max_connections caps the connections to Visier too: 40 concurrent calls over 8
 * connections all succeed, in waves; a call still waiting for a connection at its deadline
 * (all of them held by streams) gets -ETIMEDOUT then, not whenever one comes free. */
START_TEST(test_connection_cap_and_deadline_while_queued) {
        enum { N = 40 };
        static const char *const accept_csv[] = { "Accept: text/csv", NULL };
        const UpstreamRequest query = { .method = "POST", .path = "/v1/data/query/list", .body = LIST_BODY,
                                        .body_len = strlen(LIST_BODY), .idempotent = true, .headers = accept_csv };
        static Result res[N];
        UpstreamStream *streams[2];
        long long c0, c1;
        usec_t t0;

        start_sim();
        env_start(&(EnvOptions) { .max_connections = 8 });
        wait_token();
        set_faults("{\"latency_ms\":100}");
        c0 = sim_counter(&sim, "connections");
        t0 = clock_now();
        n_done = 0;
        for (size_t i = 0; i < N; i++)
                start_call("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[i]);
        loop_until(&n_done, N, 60 * USEC_PER_SEC);
        c1 = sim_counter(&sim, "connections");
        for (size_t i = 0; i < N; i++) {
                ck_assert_msg(res[i].r == 0, "call %zu: %s", i, res[i].err);
                ck_assert_int_eq(res[i].status, 200);
                ck_assert_uint_ge(res[i].at - t0, 100 * USEC_PER_MSEC);
                result_done(&res[i]);
        }
        ck_assert_msg(c1 - c0 <= 8 + 1, "%lld connections with max_connections = 8", c1 - c0);
        ck_assert_uint_ge(clock_now() - t0, 450 * USEC_PER_MSEC); /* 5 waves of 100 ms */
        env_stop();

        /* Both connections held by streams nobody reads (libcurl paused, the connection kept):
         * a call queued behind them ends at its deadline. */
        set_faults("{\"latency_ms\":0,\"query_rows\":200000}");
        env_start(&(EnvOptions) { .max_connections = 2, .request_timeout_sec = 1 });
        wait_token();
        stream_headers_called = 0;
        for (size_t i = 0; i < ELEMENTSOF(streams); i++) {
                streams[i] = upstream_stream_start(env.u, &query, on_stream_headers_note, NULL);
                ck_assert_ptr_nonnull(streams[i]);
        }
        loop_until(&stream_headers_called, ELEMENTSOF(streams), 30 * USEC_PER_SEC);
        ck_assert_int_eq(stream_headers_r, 0);
        t0 = clock_now();
        call_on_loop("GET", "/v1/admin/capabilities", NULL, NULL, NULL, true, &res[0]);
        ck_assert_msg(res[0].r == -ETIMEDOUT, "%d %s", res[0].r, res[0].err);
        ck_assert_uint_ge(res[0].at - t0, 900 * USEC_PER_MSEC);
        ck_assert_uint_lt(res[0].at - t0, 1600 * USEC_PER_MSEC);
        result_done(&res[0]);
        for (size_t i = 0; i < ELEMENTSOF(streams); i++)
                upstream_stream_close(streams[i]);
}
END_TEST

/* ---- streams ---- */

typedef struct Reader {
        UpstreamStream *st;
        int headers_r;
        long status;
        char *content_type;
        char err[UPSTREAM_ERROR_MAX];
        char *data;
        size_t len, cap;
        size_t chunk;          /* bytes per read */
        size_t max_buffered;
        unsigned finished;     /* 1 when the end or an error was read */
        unsigned headers_called;
        ssize_t last;          /* 0 or -EIO at the end */
        bool slow;             /* read on a timer, one chunk per tick */
        sd_event_source *timer;
} Reader;

static void reader_take(Reader *rd, const char *p, size_t n) {
        if (rd->len + n > rd->cap) {
                rd->cap = (rd->len + n) * 2;
                rd->data = realloc(rd->data, rd->cap);
                ck_assert_ptr_nonnull(rd->data);
        }
        memcpy(rd->data + rd->len, p, n);
        rd->len += n;
}

static void reader_notified(void *userdata);

/* Read what is there; true when finished. */
static bool reader_read(Reader *rd, bool once) {
        char buf[64 * 1024];

        for (;;) {
                size_t b = upstream_stream_buffered(rd->st);
                ssize_t n;

                ck_assert_uint_le(b, UPSTREAM_STREAM_BUFFER);
                if (b > rd->max_buffered)
                        rd->max_buffered = b;
                n = upstream_stream_read_nb(rd->st, buf, rd->chunk < sizeof(buf) ? rd->chunk : sizeof(buf));
                if (n == -EAGAIN)
                        return false;
                if (n <= 0) {
                        ck_assert_msg(n == 0 || n == -EIO, "read gave %zd", n);
                        rd->last = n;
                        rd->finished = 1;
                        return true;
                }
                reader_take(rd, buf, (size_t) n);
                if (once)
                        return false;
        }
}

static void reader_notified(void *userdata) {
        Reader *rd = userdata;

        if (!reader_read(rd, false))
                upstream_stream_notify(rd->st, reader_notified, rd);
}

static int reader_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        Reader *rd = userdata;

        if (reader_read(rd, true))
                return 0;
        ck_assert_int_ge(sd_event_source_set_time(s, usec + 2 * USEC_PER_MSEC), 0);
        ck_assert_int_ge(sd_event_source_set_enabled(s, SD_EVENT_ONESHOT), 0);
        return 0;
}

static void reader_on_headers(void *userdata, int r, long status, const char *content_type, const char *err) {
        Reader *rd = userdata;
        uint64_t now;

        rd->headers_called++;
        rd->headers_r = r;
        rd->status = status;
        if (r < 0) {
                snprintf(rd->err, sizeof(rd->err), "%s", err);
                rd->finished = 1;
                return;
        }
        rd->content_type = content_type ? strdup(content_type) : NULL;
        if (rd->slow) {
                /* The first read only after 300 ms: meanwhile the buffer fills up. */
                ck_assert_int_ge(sd_event_now(env.event, CLOCK_BOOTTIME, &now), 0);
                ck_assert_int_ge(sd_event_add_time(env.event, &rd->timer, CLOCK_BOOTTIME, now + 300 * USEC_PER_MSEC, 1,
                                                   reader_tick, rd),
                                 0);
        } else
                reader_notified(rd);
}

static void reader_start(Reader *rd, const char *body) {
        rd->st = upstream_stream_start(env.u,
                                       &(UpstreamRequest) {
                                               .method = "POST",
                                               .path = "/v1/data/query/list",
                                               .headers = (const char *const[]) { "Accept: text/csv", NULL },
                                               .body = body,
                                               .body_len = strlen(body),
                                               .idempotent = true,
                                       },
                                       reader_on_headers, rd);
        ck_assert_ptr_nonnull(rd->st);
        ck_assert_int_eq(upstream_stream_read_nb(rd->st, (char[8]) {}, 8), -EINVAL); /* nothing before the headers */
}

static void reader_done(Reader *rd) {
        rd->timer = sd_event_source_disable_unref(rd->timer);
        upstream_stream_close(rd->st);
        free(rd->data);
        free(rd->content_type);
        memset(rd, 0, sizeof(*rd));
}

/* The same query straight from the sim. */
static void direct_query(HttpResult *d) {
        char cookie[160], apikey[96], *token = sim_login(&sim), *u = sim_url(&sim, "/v1/data/query/list");
        const char *headers[] = { cookie, apikey, "Accept: text/csv", "Content-Type: application/json", NULL };

        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        snprintf(apikey, sizeof(apikey), "apikey: %s", sim.apikey);
        http_request("POST", u, headers, LIST_BODY, 60000, d);
        ck_assert_int_eq(d->status, 200);
        free(u);
        free(token);
}

/* A slow reader (nothing for 300 ms, then 16 KiB every 2 ms) against a faster Visier: at most
 * UPSTREAM_STREAM_BUFFER bytes are ever held, though the buffer does fill (libcurl is paused,
 * and resumed as the reader drains it: the answer is several times the buffer), and the
 * reader gets exactly the bytes Visier sends. Then a reader that waits only through notifications gets
 * them exactly too. */
START_TEST(test_stream_slow_reader_within_cap) {
        Reader rd = { .chunk = 16 * 1024, .slow = true };
        HttpResult d;

        start_sim();
        set_faults("{\"query_rows\":100000}");
        env_start(&(EnvOptions) {});
        direct_query(&d);
        ck_assert_uint_gt(d.len, 4 * UPSTREAM_STREAM_BUFFER);

        reader_start(&rd, LIST_BODY);
        loop_until(&rd.finished, 1, 120 * USEC_PER_SEC);
        ck_assert_msg(rd.headers_r == 0, "%s", rd.err);
        ck_assert_int_eq(rd.status, 200);
        ck_assert_str_eq(rd.content_type, d.content_type);
        ck_assert_int_eq(rd.last, 0);
        ck_assert_uint_le(rd.max_buffered, UPSTREAM_STREAM_BUFFER);
        ck_assert_msg(rd.max_buffered > UPSTREAM_STREAM_BUFFER - CURL_MAX_WRITE_SIZE,
                      "the buffer never filled (%zu bytes at most)", rd.max_buffered);
        ck_assert_msg(rd.len == d.len && memcmp(rd.data, d.body, d.len) == 0, "%zu bytes streamed, %zu direct", rd.len,
                      d.len);
        reader_done(&rd);

        rd = (Reader) { .chunk = 64 * 1024 };
        reader_start(&rd, LIST_BODY);
        loop_until(&rd.finished, 1, 120 * USEC_PER_SEC);
        ck_assert_int_eq(rd.last, 0);
        ck_assert_msg(rd.len == d.len && memcmp(rd.data, d.body, d.len) == 0, "%zu bytes streamed, %zu direct", rd.len,
                      d.len);
        reader_done(&rd);
        http_result_done(&d);
}
END_TEST

/* Visier's answer breaks off mid-body: the reader gets the bytes that came, then -EIO — never
 * an end that would pass a short export for a whole one. */
START_TEST(test_stream_broken_gives_eio) {
        Reader rd = { .chunk = 64 * 1024 };

        start_sim();
        set_faults("{\"query_rows\":40000,\"next_query_abort_after_bytes\":100000}");
        env_start(&(EnvOptions) {});
        reader_start(&rd, LIST_BODY);
        loop_until(&rd.finished, 1, 60 * USEC_PER_SEC);
        ck_assert_msg(rd.headers_r == 0, "%s", rd.err);
        ck_assert_int_eq(rd.status, 200);
        ck_assert_int_eq(rd.last, -EIO);
        ck_assert_uint_gt(rd.len, 0);
        ck_assert_uint_lt(rd.len, 200000);
        ck_assert_int_eq(upstream_stream_read_nb(rd.st, (char[8]) {}, 8), -EIO); /* and it stays so */
        ck_assert_int_eq(sim_counter(&sim, "query_aborts_injected"), 1);
        reader_done(&rd);
}
END_TEST

/* A stream's headers come only after the same retries as a call (a 503, a revoked token), and
 * no byte of a refused answer is handed out; a stream whose headers miss the deadline gets
 * -ETIMEDOUT in on_headers. */
START_TEST(test_stream_retries_before_headers) {
        Reader rd = { .chunk = 64 * 1024 };
        UpstreamStats stats;
        HttpResult d;

        start_sim();
        set_faults("{\"query_rows\":2000}");
        env_start(&(EnvOptions) { .request_timeout_sec = 2 });
        wait_token();
        direct_query(&d);

        set_faults("{\"next_errors\":1}");
        json_decref(sim_control_post(&sim, "/_sim/revoke-tokens", NULL));
        reader_start(&rd, LIST_BODY);
        loop_until(&rd.finished, 1, 60 * USEC_PER_SEC);
        ck_assert_uint_eq(rd.headers_called, 1);
        ck_assert_msg(rd.headers_r == 0, "%s", rd.err);
        ck_assert_int_eq(rd.status, 200);
        ck_assert_int_eq(rd.last, 0);
        ck_assert_msg(rd.len == d.len && memcmp(rd.data, d.body, d.len) == 0, "%zu bytes streamed, %zu direct", rd.len,
                      d.len);
        reader_done(&rd);
        upstream_stats(env.u, &stats);
        ck_assert_uint_eq(stats.retries, 1);
        ck_assert_uint_eq(stats.unauthorized, 1);
        http_result_done(&d);

        set_faults("{\"latency_ms\":5000}");
        rd = (Reader) { .chunk = 64 * 1024 };
        reader_start(&rd, LIST_BODY);
        loop_until(&rd.finished, 1, 30 * USEC_PER_SEC);
        ck_assert_int_eq(rd.headers_r, -ETIMEDOUT);
        ck_assert_int_eq(upstream_stream_read_nb(rd.st, (char[8]) {}, 8), -EIO);
        reader_done(&rd);
        set_faults("{\"latency_ms\":0}");
}
END_TEST

static Suite *upstream_async_suite(void) {
        Suite *s = suite_create("upstream-async");
        TCase *tc = tcase_create("loop");

        tcase_set_timeout(tc, 180);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_many_concurrent_calls);
        tcase_add_test(tc, test_request_bytes_match_blocking);
        tcase_add_test(tc, test_401_retried_with_new_token);
        tcase_add_test(tc, test_429_and_budget_waits_on_timers);
        tcase_add_test(tc, test_stale_take_retaken_or_held_back);
        tcase_add_test(tc, test_5xx_and_drops_retried);
        tcase_add_test(tc, test_deadline_times_out);
        tcase_add_test(tc, test_tcpbound_sockets);
        tcase_add_test(tc, test_undeliverable_request_dropped);
        tcase_add_test(tc, test_abort_never_calls_back);
        tcase_add_test(tc, test_waits_for_keeper_without_polling);
        tcase_add_test(tc, test_connections_stay_warm);
        tcase_add_test(tc, test_connection_cap_and_deadline_while_queued);
        tcase_add_test(tc, test_stream_slow_reader_within_cap);
        tcase_add_test(tc, test_stream_broken_gives_eio);
        tcase_add_test(tc, test_stream_retries_before_headers);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        sr = srunner_create(upstream_async_suite());
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
