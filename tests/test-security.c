/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: who may use the local API, and the limits that keep it serving. Foreign Host
 * and Origin headers, missing or wrong tokens, too low a role and a disallowed unix-socket
 * peer are refused with the right status while allowed requests pass; oversized bodies and
 * headers, connection floods and slow clients are answered or cut off within the limits.
 * Also: /metrics parses as Prometheus text and its counters follow a scripted workload.
 */
#include <arpa/inet.h>
#include <check.h>
#include <grp.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

static Sim sim;
static Visierd vd;

/* A peer's failures answered at once in a window (authfail.h's AUTHFAIL_FREE, as documented). */
#define AUTHFAIL_FREE_FAILURES 5

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

static double sample(const char *text, const char *series);
static void assert_prometheus_text(const char *text);

static long req(const char *method, const char *path, const char *const *headers, const char *body, char **ret_body) {
        return visierd_call(&vd, method, path, headers, body, ret_body);
}

START_TEST(test_host_and_origin) {
        const char *foreign_host[] = { "Host: attacker.example", NULL };
        const char *named_host[] = { "Host: visierd.internal:8420", NULL };
        const char *v6_host[] = { "Host: [::1]:8420", NULL };
        const char *foreign_origin[] = { "Origin: https://evil.example", NULL };
        const char *allowed_origin[] = { "Origin: https://ops.example", NULL };
        char *u;
        HttpResult r;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[listen]\nallowed_hosts = visierd.internal\nallowed_origins = https://ops.example");
        visierd_wait_ready(&vd);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", foreign_host, NULL, NULL), 421);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", named_host, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", v6_host, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200); /* Host: 127.0.0.1:port */
        ck_assert_int_eq(req("GET", "/status", foreign_origin, NULL, NULL), 403);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", foreign_origin,
                             "{\"permissions\":[{\"displayName\":\"from a web page\"}]}", NULL),
                         403);
        u = visierd_url(&vd, "/status");
        http_request("GET", u, allowed_origin, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);
        free(u);
        /* Nothing was queued by the refused write. */
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 0);
}
END_TEST

/* Listening on a loopback address other than 127.0.0.1, visierd answers its own URL (the Host
 * names the address it listens on) and its start-up line advertises that address; another
 * loopback address in Host is still refused. */
START_TEST(test_other_loopback_address) {
        char host[64], *answer, *log, *line;
        const char *other[] = { host, NULL };

        harness_listen_address = "127.0.0.53";
        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, NULL);
        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, &answer), 200); /* Host: 127.0.0.53:port */
        ck_assert_str_eq(answer, "{\"status\":\"ok\"}");
        free(answer);
        visierd_wait_ready(&vd);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200);
        snprintf(host, sizeof(host), "Host: 127.0.0.54:%u", vd.port);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", other, NULL, NULL), 421);
        ck_assert_int_ge(asprintf(&line, " on http://127.0.0.53:%u/ (listening on 127.0.0.53:%u)", vd.port, vd.port), 0);
        log = harness_read_file(vd.log);
        ck_assert_msg(strstr(log, line), "no start-up line with '%s' in: %s", line, log);
        free(log);
        free(line);
}
END_TEST

/* A listening socket on 127.0.0.1 standing in for a proxy; returns its fd, port in *ret_port. */
static int fake_proxy(unsigned *ret_port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        ck_assert_int_eq(listen(fd, 16), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &a, &len), 0);
        *ret_port = ntohs(a.sin_port);
        return fd;
}

/* The proxy environment variables are ignored by visierd and visierctl: a proxy they name would
 * read the API key and the password (on a plain-http base_url) or a client token. Only
 * [visier] proxy sends calls through a proxy, and then, Visier being https, all the proxy
 * sees is the CONNECT, byte for byte. */
START_TEST(test_proxy_only_when_configured) {
        char env[6][64], ctl[256], *out, *text, head[1024], *want;
        const char *const names[] = { "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy" };
        const char *envp[ELEMENTSOF(names) + 1] = {};
        size_t n = 0;
        unsigned port;
        int lfd, cfd;
        struct pollfd p;

        lfd = fake_proxy(&port);
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                snprintf(env[i], sizeof(env[i]), "%s=http://127.0.0.1:%u", names[i], port);
                envp[i] = env[i];
        }
        harness_child_env = envp;
        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, NULL);
        visierd_wait_ready(&vd); /* it logged in, straight to the sim */
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200);
        snprintf(ctl, sizeof(ctl), "%s/visierctl", getenv("TOP_BUILDDIR") ? getenv("TOP_BUILDDIR") : ".");
        {
                char url[64];
                const char *argv[] = { ctl, "--url", url, "status", NULL };

                snprintf(url, sizeof(url), "http://127.0.0.1:%u", vd.port);
                ck_assert_msg(harness_run(argv, &out) == 0, "visierctl status: %s", out);
                free(out);
        }
        p = (struct pollfd) { .fd = lfd, .events = POLLIN };
        ck_assert_msg(poll(&p, 1, 0) == 0, "a program connected to the proxy the environment names");
        ck_assert_int_ge(sim_calls(&sim, "/v1/admin/capabilities"), 1);
        ck_assert_int_eq(visierd_stop(&vd), 0);
        harness_child_env = NULL;

        /* The configured proxy, for an https Visier: a CONNECT and nothing else in the clear. */
        ck_assert_int_ge(asprintf(&text,
                                  "[visier]\nbase_url = https://tenant.api.visier.example\nusername = %s\n"
                                  "apikey_file = %s\npassword_file = %s\nproxy = http://127.0.0.1:%u\n"
                                  "[listen]\naddress = 127.0.0.1\nport = 0\n[store]\ndatabase = %s/visierd.db\n",
                                  sim.username, sim.apikey_file, sim.password_file, port, vd.dir),
                         0);
        harness_write_file(vd.config, text, 0644);
        free(text);
        visierd_restart(&vd);
        p = (struct pollfd) { .fd = lfd, .events = POLLIN };
        ck_assert_msg(poll(&p, 1, 30000) == 1, "visierd did not connect to the configured proxy");
        cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(cfd, 0);
        while (!memmem(head, n, "\r\n\r\n", 4)) {
                ssize_t k;

                p = (struct pollfd) { .fd = cfd, .events = POLLIN };
                ck_assert_msg(poll(&p, 1, 10000) == 1, "no whole request from visierd: %.*s", (int) n, head);
                k = recv(cfd, head + n, sizeof(head) - 1 - n, 0);
                ck_assert_int_gt(k, 0);
                n += (size_t) k;
                ck_assert_uint_lt(n, sizeof(head) - 1);
        }
        head[n] = '\0';
        ck_assert_int_ge(asprintf(&want,
                                  "CONNECT tenant.api.visier.example:443 HTTP/1.1\r\n"
                                  "Host: tenant.api.visier.example:443\r\n"
                                  "User-Agent: visierd/%s\r\n"
                                  "Proxy-Connection: Keep-Alive\r\n\r\n",
                                  PACKAGE_VERSION),
                         0);
        ck_assert_str_eq(head, want);
        free(want);
        close(cfd);
        close(lfd);
}
END_TEST

/* A browser's request from another site's page that carries no Origin (an <img>, a no-cors
 * fetch) is refused before anything reaches Visier, and a write body is taken only as JSON
 * (a text/plain or form body is what a page can send without a CORS preflight). */
START_TEST(test_cross_site_without_origin) {
        const char *cross[] = { "Sec-Fetch-Site: cross-site", NULL }, *same_site[] = { "Sec-Fetch-Site: same-site", NULL };
        const char *same_origin[] = { "Sec-Fetch-Site: same-origin", NULL }, *typed[] = { "Sec-Fetch-Site: none", NULL };
        const char *text_plain[] = { "Content-Type: text/plain", NULL };
        const char *form[] = { "Content-Type: application/x-www-form-urlencoded", NULL };
        const char *json_charset[] = { "Content-Type: application/json; charset=utf-8", "Prefer: respond-async", NULL };
        const char *body = "{\"permissions\":[{\"displayName\":\"from a page\"}]}";
        long long reads;
        char *answer;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, NULL);
        visierd_wait_ready(&vd);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200);
        reads = sim_calls(&sim, "/v1/admin/capabilities");
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", cross, NULL, &answer), 403);
        ck_assert_str_eq(answer, "{\"code\":\"Forbidden\",\"message\":\"requests from other sites' pages (Sec-Fetch-Site: "
                                 "cross-site or same-site) are refused\",\"localizedMessage\":\"requests from other sites' "
                                 "pages (Sec-Fetch-Site: cross-site or same-site) are refused\",\"userError\":true}");
        free(answer);
        ck_assert_int_eq(req("GET", "/status", same_site, NULL, NULL), 403);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", cross, body, NULL), 403);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), reads); /* no rate budget spent */
        ck_assert_int_eq(req("GET", "/status", same_origin, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/status", typed, NULL, NULL), 200);

        /* The /ui page has /status's rules: a page of visierd's own origin may read (its Origin,
         * when a browser sends one, is http:// and the Host), never write; another site's page
         * may do neither. */
        {
                char own[96], own_localhost[96], evil_suffix[96], https_own[96];
                const char *own_origin[] = { own, NULL }, *own_origin_other_host[] = { own, "Host: localhost", NULL };
                const char *own_localhost_origin[] = { own_localhost, NULL }, *suffixed[] = { evil_suffix, NULL };
                const char *https[] = { https_own, NULL }, *null_origin[] = { "Origin: null", NULL };
                const char *foreign_origin[] = { "Origin: https://evil.example", NULL };
                const char *foreign_host[] = { "Host: attacker.example", NULL };
                const char *own_write[] = { own, "Content-Type: application/json", "Prefer: respond-async", NULL };

                snprintf(own, sizeof(own), "Origin: http://127.0.0.1:%u", vd.port);
                snprintf(own_localhost, sizeof(own_localhost), "Origin: http://localhost:%u", vd.port);
                snprintf(evil_suffix, sizeof(evil_suffix), "Origin: http://127.0.0.1:%u.evil.example", vd.port);
                snprintf(https_own, sizeof(https_own), "Origin: https://127.0.0.1:%u", vd.port);
                ck_assert_int_eq(req("GET", "/ui", typed, NULL, NULL), 200);
                ck_assert_int_eq(req("GET", "/ui/ui.js", same_origin, NULL, NULL), 200);
                ck_assert_int_eq(req("GET", "/ui/ui.css", same_origin, NULL, NULL), 200);
                ck_assert_int_eq(req("GET", "/ui/nothing.js", same_origin, NULL, NULL), 404);
                ck_assert_int_eq(req("GET", "/ui", cross, NULL, NULL), 403);
                ck_assert_int_eq(req("GET", "/ui/ui.js", same_site, NULL, NULL), 403);
                ck_assert_int_eq(req("GET", "/ui", foreign_origin, NULL, NULL), 403);
                ck_assert_int_eq(req("GET", "/ui", foreign_host, NULL, NULL), 421);
                ck_assert_int_eq(req("GET", "/status/history", cross, NULL, NULL), 403);
                ck_assert_int_eq(req("GET", "/status", own_origin, NULL, NULL), 200);
                ck_assert_int_eq(req("GET", "/status/history", own_origin, NULL, NULL), 200);
                ck_assert_int_eq(req("GET", "/jobs", own_origin, NULL, NULL), 200);
                ck_assert_int_eq(req("GET", "/ui", own_origin, NULL, NULL), 200);
                /* Only that exact origin, and only to read. */
                ck_assert_int_eq(req("GET", "/status", own_origin_other_host, NULL, NULL), 403);
                ck_assert_int_eq(req("GET", "/status", own_localhost_origin, NULL, NULL), 403); /* Host is 127.0.0.1 */
                ck_assert_int_eq(req("GET", "/status", suffixed, NULL, NULL), 403);
                ck_assert_int_eq(req("GET", "/status", https, NULL, NULL), 403);
                ck_assert_int_eq(req("GET", "/status", null_origin, NULL, NULL), 403);
                ck_assert_int_eq(req("POST", "/v1/admin/permissions", own_write, body, NULL), 403);
                ck_assert_int_eq(req("POST", "/jobs/1/cancel", own_origin, NULL, NULL), 403);
        }

        ck_assert_int_eq(req("POST", "/v1/admin/permissions", text_plain, body, &answer), 415);
        ck_assert_str_eq(answer, "{\"code\":\"UnsupportedMediaType\",\"message\":\"the request body must be sent as "
                                 "Content-Type: application/json\",\"localizedMessage\":\"the request body must be sent "
                                 "as Content-Type: application/json\",\"userError\":true}");
        free(answer);
        ck_assert_int_eq(req("PUT", "/v1/admin/permissions", form, body, NULL), 415);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 0);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", json_charset, body, NULL), 202);
}
END_TEST

/* A body whose end two HTTP parsers could place differently (RFC 9112 §6.3) is answered 400 (501
 * for an unknown coding before chunked) and its connection closed: what follows it on the
 * connection, a request smuggled past a proxy that framed the body the other way, is never
 * read. A plain chunked body is still taken. */
START_TEST(test_ambiguous_body_framing) {
        static const struct {
                const char *headers, *status, *message;
        } cases[] = {
                { "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "400 Bad Request",
                  "the request has both Content-Length and Transfer-Encoding" },
                { "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "400 Bad Request",
                  "the request has both Content-Length and Transfer-Encoding" },
                { "Transfer-Encoding: gzip\r\n", "400 Bad Request", "the request's Transfer-Encoding is not chunked" },
                { "Transfer-Encoding: chunked \r\n", "400 Bad Request", "the request's Transfer-Encoding is not chunked" },
                { "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "400 Bad Request",
                  "the request has more than one Transfer-Encoding header" },
                { "Content-Length: 2\r\nContent-Length: 40\r\n", "400 Bad Request",
                  "the request has Content-Length headers that disagree" },
                { "Transfer-Encoding: gzip, chunked\r\n", "501 Not Implemented",
                  "the request's Transfer-Encoding has a coding other than chunked" },
                { "Transfer-Encoding : chunked\r\nContent-Length: 4\r\n", "400 Bad Request",
                  "the request has a malformed header line (a name with white space, or a folded line)" },
                { "Transfer-Encoding:\r\n chunked\r\nContent-Length: 4\r\n", "400 Bad Request",
                  "the request has a malformed header line (a name with white space, or a folded line)" },
                { "X-Note\t: x\r\n", "400 Bad Request",
                  "the request has a malformed header line (a name with white space, or a folded line)" },
        };
        const char *smuggled = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        char *request, *answer, *want;
        json_t *jobs;
        long status;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, NULL);
        visierd_wait_ready(&vd);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *code = cases[i].status[0] == '4' ? "BadRequest" : "NotImplemented";

                ck_assert_int_ge(asprintf(&request,
                                          "POST /v1/admin/permissions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          "Content-Type: application/json\r\n%s\r\n"
                                          "2c\r\n{\"permissions\":[{\"displayName\":\"smuggled\"}]}\r\n0\r\n\r\n%s",
                                          cases[i].headers, smuggled),
                                 0);
                /* The exchange ends only when visierd closes the connection. */
                answer = harness_raw_exchange(vd.port, request, 10);
                ck_assert_int_ge(asprintf(&want, "HTTP/1.1 %s\r\n", cases[i].status), 0);
                ck_assert_msg(strncmp(answer, want, strlen(want)) == 0, "case %zu: %s", i, answer);
                ck_assert_msg(strstr(answer, "\r\nConnection: close\r\n"), "case %zu: %s", i, answer);
                free(want);
                ck_assert_int_ge(asprintf(&want,
                                          "\r\n\r\n{\"code\":\"%s\",\"message\":\"%s\",\"localizedMessage\":\"%s\","
                                          "\"userError\":true}",
                                          code, cases[i].message, cases[i].message),
                                 0);
                ck_assert_msg(strlen(answer) >= strlen(want) && streq(answer + strlen(answer) - strlen(want), want),
                              "case %zu: %s", i, answer);
                /* One answer only: the request after the body was not read. */
                ck_assert_ptr_null(strstr(answer + 1, "HTTP/1.1 "));
                free(want);
                free(answer);
                free(request);
        }
        jobs = visierd_request_json(&vd, "GET", "/jobs", NULL, NULL, &status);
        ck_assert_int_eq(status, 200);
        ck_assert_int_eq(json_array_size(json_object_get(jobs, "jobs")), 0);
        json_decref(jobs);
        /* Each refusal is counted (and logged) like any other answer. */
        ck_assert_int_eq(req("GET", "/metrics", NULL, NULL, &answer), 200);
        ck_assert_double_eq(sample(answer, "visierd_http_requests_total{method=\"POST\",route=\"unmatched\",status=\"400\"}"),
                            (double) ELEMENTSOF(cases) - 1);
        ck_assert_double_eq(sample(answer, "visierd_http_requests_total{method=\"POST\",route=\"unmatched\",status=\"501\"}"), 1);
        free(answer);
        answer = harness_read_file(vd.log);
        ck_assert_msg(strstr(answer, "POST unmatched 400 "), "no access line for a refusal: %s", answer);
        free(answer);

        /* A plain chunked body is taken as before. */
        answer = harness_raw_exchange(vd.port,
                                      "POST /v1/admin/permissions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      "Content-Type: application/json\r\nPrefer: respond-async\r\n"
                                      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                      "2b\r\n{\"permissions\":[{\"displayName\":\"chunked\"}]}\r\n0\r\n\r\n",
                                      10);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 202 Accepted\r\n", 23) == 0, "%s", answer);
        free(answer);
}
END_TEST

static void write_token(const char *dir, const char *name, const char *token, char *path, size_t len) {
        snprintf(path, len, "%s/%s.token", dir, name);
        harness_write_file(path, token, 0600);
}

START_TEST(test_client_tokens_and_roles) {
        char tail[1024], rp[256], wp[256], ap[256], rt[41], wt[41], at[41], hr[80], hw[80], ha[80], path[64], *body;
        const char *bad[] = { "Authorization: Bearer not-a-token", NULL };
        const char *reader[] = { hr, NULL }, *writer[] = { hw, NULL }, *admin[] = { ha, NULL };
        long long id;
        json_t *j;

        sim_start(&sim, NULL);
        harness_random_hex(rt, 20);
        harness_random_hex(wt, 20);
        harness_random_hex(at, 20);
        write_token(sim.dir, "reader", rt, rp, sizeof(rp));
        write_token(sim.dir, "writer", wt, wp, sizeof(wp));
        write_token(sim.dir, "boss", at, ap, sizeof(ap));
        snprintf(tail, sizeof(tail),
                 "[client reader]\ntoken_file = %s\nrole = read\n"
                 "[client writer]\ntoken_file = %s\nrole = write\n"
                 "[client boss]\ntoken_file = %s\nrole = admin\n",
                 rp, wp, ap);
        snprintf(hr, sizeof(hr), "Authorization: Bearer %s", rt);
        snprintf(hw, sizeof(hw), "Authorization: Bearer %s", wt);
        snprintf(ha, sizeof(ha), "Authorization: Bearer %s", at);
        visierd_start(&vd, &sim, "[jobs]\nbatch_delay_ms = 0", tail);

        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200); /* health needs no token */
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 401);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", bad, NULL, NULL), 401);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", reader, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/metrics", reader, NULL, NULL), 200);
        /* /ui as /status: a browser cannot add the bearer by itself (visierd(8)). */
        ck_assert_int_eq(req("GET", "/ui", NULL, NULL, NULL), 401);
        ck_assert_int_eq(req("GET", "/ui", reader, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/status/history", reader, NULL, NULL), 200);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", reader,
                             "{\"permissions\":[{\"displayName\":\"by reader\"}]}", NULL),
                         403);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", writer,
                             "{\"permissions\":[{\"displayName\":\"by writer\"}]}", &body),
                         202);
        j = json_loads(body, 0, NULL);
        free(body);
        id = json_integer_value(json_object_get(j, "id"));
        ck_assert_str_eq(json_string_value(json_object_get(j, "client")), "writer"); /* recorded on the job */
        json_decref(j);
        snprintf(path, sizeof(path), "/jobs/%lld/retry", id);
        ck_assert_int_eq(req("POST", path, writer, NULL, NULL), 403); /* retry needs admin */
        ck_assert_int_eq(req("POST", path, admin, NULL, NULL), 409);  /* allowed, but the job is not failed */
        snprintf(path, sizeof(path), "/jobs/%lld/cancel", id);
        ck_assert_int_eq(req("POST", path, reader, NULL, NULL), 403);
        {
                long s = req("POST", path, writer, NULL, NULL); /* its own job: allowed (200, or 409 once sent) */
                ck_assert_msg(s == 200 || s == 409, "writer cancelling its own job got %ld", s);
        }
        /* A job queued by the admin is not the writer's to cancel. */
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", admin,
                             "{\"permissions\":[{\"displayName\":\"by boss\"}]}", &body),
                         202);
        j = json_loads(body, 0, NULL);
        free(body);
        snprintf(path, sizeof(path), "/jobs/%lld/cancel", (long long) json_integer_value(json_object_get(j, "id")));
        json_decref(j);
        ck_assert_int_eq(req("POST", path, writer, NULL, NULL), 403);
        ck_assert_int_eq(req("POST", "/jobs/999999/cancel", writer, NULL, NULL), 404); /* no such job, not "another's" */

        /* visierctl with the reader's token file reads job status; without a token it is refused. */
        {
                char ctl[512], url[64], *out;
                const char *with[8], *without[6];
                snprintf(ctl, sizeof(ctl), "%s/visierctl", getenv("TOP_BUILDDIR") ? getenv("TOP_BUILDDIR") : ".");
                snprintf(url, sizeof(url), "http://127.0.0.1:%u", vd.port);
                with[0] = ctl, with[1] = "--url", with[2] = url, with[3] = "--token-file", with[4] = rp,
                with[5] = "jobs", with[6] = NULL;
                without[0] = ctl, without[1] = "--url", without[2] = url, without[3] = "jobs", without[4] = NULL;
                ck_assert_int_eq(harness_run(with, &out), 0);
                ck_assert_msg(strstr(out, "writer") && strstr(out, "boss"), "visierctl jobs: %s", out);
                ck_assert_ptr_null(strstr(out, rt));
                free(out);
                ck_assert_int_eq(harness_run(without, &out), 1);
                ck_assert_msg(strstr(out, "Authorization: Bearer token is required"), "visierctl without a token: %s", out);
                free(out);
        }
        /* No token reaches a log line. */
        ck_assert_int_eq(visierd_stop(&vd), 0);
        body = harness_read_file(vd.log);
        ck_assert_msg(!strstr(body, rt) && !strstr(body, wt) && !strstr(body, at), "a client token was logged");
        free(body);
}
END_TEST

static const char *const bad_token[] = { "Authorization: Bearer 0000000000000000000000000000000000000000", NULL };

/* visierd with one admin client "ops" (and EXTRA before it); its Authorization header line
 * into GOOD. Then the peer's 5 failures that are answered at once. */
static void start_with_ops_client(const char *extra, char *good, size_t good_size, char *token) {
        char tail[512], tp[256];

        sim_start(&sim, NULL);
        harness_random_hex(token, 20);
        write_token(sim.dir, "ops", token, tp, sizeof(tp));
        snprintf(tail, sizeof(tail), "%s[client ops]\ntoken_file = %s\nrole = admin\n", strempty(extra), tp);
        snprintf(good, good_size, "Authorization: Bearer %s", token);
        visierd_start(&vd, &sim, NULL, tail);
        visierd_wait_ready(&vd);
        for (int i = 0; i < AUTHFAIL_FREE_FAILURES; i++)
                ck_assert_int_eq(req("GET", "/status", bad_token, NULL, NULL), 401);
}

/* Guessing a client token costs time and is seen: after the first 5 failures from a peer,
 * each refusal is answered 100 ms, 200 ms, 400 ms... later; every failure is counted in
 * /metrics; the log says so without a line per failure; a valid token still gets in. */
START_TEST(test_failed_authentication_slows_down) {
        char token[41], good[80], *text, *log;
        const char *ok[] = { good, NULL };
        usec_t start;
        int lines = 0;

        start_with_ops_client(NULL, good, sizeof(good), token);
        start = clock_now();
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(req("GET", "/status", bad_token, NULL, NULL), 401);
        /* A lower bound only: a slow machine can only make it longer. */
        ck_assert_msg(clock_now() - start >= 700 * USEC_PER_MSEC, "3 refusals past the 5th took %llu ms",
                      (unsigned long long) ((clock_now() - start) / USEC_PER_MSEC));
        ck_assert_int_eq(req("GET", "/status", ok, NULL, NULL), 200);

        ck_assert_int_eq(req("GET", "/metrics", ok, NULL, &text), 200);
        ck_assert_double_eq(sample(text, "visierd_auth_failures_total{reason=\"invalid\"}"), 8);
        free(text);
        log = harness_read_file(vd.log);
        /* All of 127.0.0.0/8 is one peer: a local guesser cannot spread over its addresses. */
        for (const char *p = log; (p = strstr(p, "authentication failed: a token or session that is not valid from "
                                                  "tcp:127.0.0.0/8"));
             p++)
                lines++;
        ck_assert_msg(lines >= 1 && lines <= 2, "%d log lines for 8 failures", lines);
        ck_assert(strstr(log, "its refusals are now answered with a delay") || lines == 1);
        ck_assert_ptr_null(strstr(log, token));
        free(log);
}
END_TEST

/* Refusals answered later hold none of max_held_requests: with 8 allowed, a dozen guesses
 * waiting for their 401 leave room for a client with a valid token, and every guess still
 * gets its 401 (none a 503). */
START_TEST(test_delayed_refusals_hold_no_capacity) {
        char token[41], good[80];
        const char *ok[] = { good, NULL };
        pid_t kids[12];

        start_with_ops_client("[listen]\nmax_held_requests = 8\n", good, sizeof(good), token);
        for (size_t i = 0; i < ELEMENTSOF(kids); i++) {
                kids[i] = fork();
                ck_assert_int_ge(kids[i], 0);
                if (kids[i] == 0)
                        _exit(req("GET", "/status", bad_token, NULL, NULL) == 401 ? 0 : 1);
        }
        /* Wait until all twelve are held: the failure counter says they arrived. */
        for (usec_t deadline = clock_now() + 20 * USEC_PER_SEC;;) {
                char *text;
                double n;

                ck_assert_int_eq(req("GET", "/metrics", ok, NULL, &text), 200);
                n = sample(text, "visierd_auth_failures_total{reason=\"invalid\"}");
                free(text);
                if (n >= AUTHFAIL_FREE_FAILURES + (double) ELEMENTSOF(kids))
                        break;
                ck_assert_msg(clock_now() < deadline, "the guesses never all arrived");
                clock_sleep(20 * USEC_PER_MSEC); /* probe interval */
        }
        ck_assert_int_eq(req("GET", "/status", ok, NULL, NULL), 200);
        for (size_t i = 0; i < ELEMENTSOF(kids); i++) {
                int status;

                ck_assert_int_eq(waitpid(kids[i], &status, 0), kids[i]);
                ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a guess did not get its 401");
        }
}
END_TEST

START_TEST(test_non_loopback_needs_tokens) {
        char dir[128], conf[192], key[192], *out;
        const char *argv[5];

        harness_mkdtemp(dir, sizeof(dir), "visierd-sec");
        snprintf(conf, sizeof(conf), "%s/c.conf", dir);
        snprintf(key, sizeof(key), "%s/k", dir);
        harness_write_file(key, "secret-value", 0600);
        {
                char text[1024];
                snprintf(text, sizeof(text),
                         "[visier]\nbase_url = https://x.api.visier.io\nusername = u\napikey_file = %s\npassword_file = %s\n"
                         "[listen]\naddress = 192.0.2.10\n",
                         key, key);
                harness_write_file(conf, text, 0644);
        }
        argv[0] = getenv("VISIERD_BIN");
        argv[1] = "--check-config";
        argv[2] = "--config";
        argv[3] = conf;
        argv[4] = NULL;
        ck_assert_int_ne(harness_run(argv, &out), 0);
        ck_assert_ptr_nonnull(strstr(out, "192.0.2.10 is not a loopback address"));
        free(out);
        {
                char text[1024];
                snprintf(text, sizeof(text),
                         "[visier]\nbase_url = https://x.api.visier.io\nusername = u\napikey_file = %s\npassword_file = %s\n"
                         "[listen]\naddress = 192.0.2.10\n[client ops]\ntoken_file = %s/ops.token\nrole = read\n",
                         key, key, dir);
                harness_write_file(conf, text, 0644);
                snprintf(text, sizeof(text), "%s/ops.token", dir);
                harness_write_file(text, "3f9a1c0d7e2b4a6f8c1d3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b", 0600);
        }
        ck_assert_int_eq(harness_run(argv, &out), 0);
        ck_assert_str_eq(out, "configuration OK\n");
        free(out);
        harness_rmtree(dir);
}
END_TEST

static long unix_get(const char *sock, const char *path) {
        CURL *h = curl_easy_init();
        char url[128];
        long status = 0;
        FILE *devnull = fopen("/dev/null", "we");

        snprintf(url, sizeof(url), "http://localhost%s", path);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, sock);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, devnull);
        if (curl_easy_perform(h) == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(h);
        fclose(devnull);
        return status;
}

/* [metrics] listen and socket: a listener for scrapers that serves GET /metrics without a client
 * token (the local API wants one here), refuses everything else by name, and keeps the Host
 * check. The port picked (port 0) is reported as X_METRICS_PORT and in the start-up log. */
START_TEST(test_metrics_only_listener) {
        char tail[1024], tp[256], token[41], msock[256], url[128], host[64], *log, *line;
        const char *foreign[] = { "Host: attacker.example", NULL }, *with_host[] = { host, NULL };
        const char *p;
        unsigned mport;
        HttpResult r;

        sim_start(&sim, NULL);
        harness_random_hex(token, 20);
        write_token(sim.dir, "reader", token, tp, sizeof(tp));
        snprintf(msock, sizeof(msock), "%s/metrics.sock", sim.dir);
        snprintf(tail, sizeof(tail),
                 "[client reader]\ntoken_file = %s\nrole = read\n[metrics]\nlisten = 127.0.0.1:0\nsocket = %s\n"
                 "allowed_hosts = node7.example\n",
                 tp, msock);
        visierd_start(&vd, &sim, NULL, tail);
        p = strstr(vd.notify_log, "X_METRICS_PORT=");
        ck_assert_msg(p, "no X_METRICS_PORT in: %s", vd.notify_log);
        mport = (unsigned) strtoul(p + strlen("X_METRICS_PORT="), NULL, 10);
        ck_assert_uint_gt(mport, 0);
        ck_assert_uint_ne(mport, vd.port);

        ck_assert_int_eq(req("GET", "/metrics", NULL, NULL, NULL), 401); /* the local API wants the token */
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", mport);
        http_request("GET", url, NULL, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(strstr(r.body, "\nvisierd_build_info{version=\"" PACKAGE_VERSION "\"} 1\n"), "%s", r.body);
        assert_prometheus_text(r.body);
        http_result_done(&r);
        ck_assert_int_eq(unix_get(msock, "/metrics"), 200);
        ck_assert_int_eq(unix_get(msock, "/status"), 404);

        snprintf(url, sizeof(url), "http://127.0.0.1:%u/status", mport);
        http_request("GET", url, NULL, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 404);
        ck_assert_str_eq(r.body, "{\"code\":\"NotFound\",\"message\":\"this listener serves GET /metrics only\","
                                 "\"localizedMessage\":\"this listener serves GET /metrics only\",\"userError\":true}");
        http_result_done(&r);
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/admin/capabilities", mport);
        http_request("GET", url, NULL, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 404); /* never a way to Visier */
        http_result_done(&r);
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", mport);
        http_request("POST", url, NULL, "{}", 10000, &r);
        ck_assert_int_eq(r.status, 405);
        http_result_done(&r);
        http_request("GET", url, foreign, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 421);
        http_result_done(&r);
        snprintf(host, sizeof(host), "Host: localhost:%u", mport);
        http_request("GET", url, with_host, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);
        /* A scraper's name for the host: in [metrics] allowed_hosts, not the local API's. */
        snprintf(host, sizeof(host), "Host: node7.example:%u", mport);
        http_request("GET", url, with_host, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);
        ck_assert_int_eq(req("GET", "/healthz", with_host, NULL, NULL), 421);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 0);

        /* The scrapes are counted, under their own route. */
        http_request("GET", url, NULL, NULL, 10000, &r);
        ck_assert_double_ge(sample(r.body, "visierd_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}"), 3);
        http_result_done(&r);

        ck_assert_int_ge(asprintf(&line, "metrics for scrapers (GET /metrics, no token) on 127.0.0.1:%u and %s", mport,
                                  msock),
                         0);
        log = harness_read_file(vd.log);
        ck_assert_msg(strstr(log, line), "no '%s' in: %s", line, log);
        free(log);
        free(line);
}
END_TEST

/* [listen] require_request_header = yes (off by default): a request without X-Visierd-Request:
 * true gets 412 before anything reaches Visier; probes and the metrics-only listener are exempt;
 * visierctl sends the header. */
START_TEST(test_required_request_header) {
        const char *marked[] = { "X-Visierd-Request: true", NULL }, *wrong[] = { "X-Visierd-Request: 1", NULL };
        char ctl[256], url[64], murl[128], *answer, *out;
        const char *argv[] = { ctl, "--url", url, "status", NULL };
        const char *p;
        HttpResult r;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[listen]\nrequire_request_header = yes\n[metrics]\nlisten = 127.0.0.1:0\n");
        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200);
        visierd_wait_ready(&vd); /* /readyz: exempt too */
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, &answer), 412);
        ck_assert_str_eq(answer, "{\"code\":\"PreconditionFailed\",\"message\":\"requests must carry the header "
                                 "X-Visierd-Request: true ([listen] require_request_header)\",\"localizedMessage\":"
                                 "\"requests must carry the header X-Visierd-Request: true ([listen] "
                                 "require_request_header)\",\"userError\":true}");
        free(answer);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", wrong, NULL, NULL), 412);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", NULL, "{\"permissions\":[{\"displayName\":\"p\"}]}", NULL),
                         412);
        ck_assert_int_eq(req("GET", "/status", NULL, NULL, NULL), 412);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 0);
        /* The page for people loads by navigation, which cannot add a header; its reads do. */
        ck_assert_int_eq(req("GET", "/ui", NULL, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/ui/ui.js", NULL, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/status/history", NULL, NULL, NULL), 412);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", marked, NULL, NULL), 200);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 1);

        p = strstr(vd.notify_log, "X_METRICS_PORT=");
        ck_assert_ptr_nonnull(p);
        snprintf(murl, sizeof(murl), "http://127.0.0.1:%lu/metrics", strtoul(p + strlen("X_METRICS_PORT="), NULL, 10));
        http_request("GET", murl, NULL, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);

        snprintf(ctl, sizeof(ctl), "%s/visierctl", getenv("TOP_BUILDDIR") ? getenv("TOP_BUILDDIR") : ".");
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", vd.port);
        ck_assert_msg(harness_run(argv, &out) == 0, "visierctl status: %s", out);
        free(out);
}
END_TEST

START_TEST(test_unix_socket_peer_allow_list) {
        char tail[512], sock[256];

        sim_start(&sim, NULL);
        snprintf(sock, sizeof(sock), "%s/api.sock", sim.dir);
        snprintf(tail, sizeof(tail), "[listen]\nsocket = %s\nsocket_allow_uids = 12345\nsocket_allow_gids = 54321\n", sock);
        visierd_start(&vd, &sim, NULL, tail);
        ck_assert_int_eq(unix_get(sock, "/status"), 403); /* we are uid 0, gid 0 */
        ck_assert_int_eq(visierd_stop(&vd), 0);

        snprintf(tail, sizeof(tail), "[listen]\nsocket = %s\nsocket_allow_uids = 12345,%u\n", sock, (unsigned) getuid());
        visierd_start(&vd, &sim, NULL, tail);
        ck_assert_int_eq(unix_get(sock, "/status"), 200);
        ck_assert_int_eq(unix_get(sock, "/v1/admin/capabilities"), 200);
}
END_TEST

/* GET /status on the unix socket as UID with primary group GID and supplementary group
 * SUPPLEMENTARY (a child process drops to them): the HTTP status, or 0. */
static long unix_get_as(const char *sock, uid_t uid, gid_t gid, gid_t supplementary) {
        pid_t pid = fork();
        int status;

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                long st;

                if (setgroups(1, &supplementary) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
                        _exit(99);
                st = unix_get(sock, "/status");
                _exit(st == 200 ? 0 : st == 403 ? 1 : 2);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 99, "could not drop to uid %u", (unsigned) uid);
        return WEXITSTATUS(status) == 0 ? 200 : WEXITSTATUS(status) == 1 ? 403 : 0;
}

/* The allow-lists limit who uses the credentials only when TCP is off: with tcp = no nothing
 * listens on TCP. socket_allow_gids honours a peer's supplementary groups. */
START_TEST(test_socket_only_and_supplementary_groups) {
        char tail[512], sock[256], *log;

        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: test_socket_only_and_supplementary_groups: needs root to act as another user\n");
                return;
        }
        sim_start(&sim, NULL);
        snprintf(sock, sizeof(sock), "%s/api.sock", sim.dir);
        ck_assert_int_eq(chmod(sim.dir, 0755), 0);
        snprintf(tail, sizeof(tail), "[listen]\ntcp = no\nsocket = %s\nsocket_allow_gids = 54321\n", sock);
        harness_socket_only = true;
        visierd_start(&vd, &sim, NULL, tail);
        harness_socket_only = false;
        ck_assert_int_eq(vd.port, 0); /* no TCP port to report */
        log = harness_read_file(vd.log);
        {
                char want[320];

                snprintf(want, sizeof(want), " (listening on %s)\n", sock);
                ck_assert_msg(strstr(log, want) && !strstr(log, "/ (listening on"), "log:\n%s", log);
        }
        free(log);
        ck_assert_int_eq(chmod(sock, 0666), 0); /* let the other user reach the allow-list check */
        ck_assert_int_eq(unix_get_as(sock, 65534, 65534, 54321), 200);  /* by its supplementary group */
        ck_assert_int_eq(unix_get_as(sock, 65534, 65534, 54322), 403);
        ck_assert_int_eq(unix_get_as(sock, 65534, 54321, 65534), 200);  /* by its primary group */
}
END_TEST

static int connect_raw(unsigned port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        return fd;
}

/* Wait (bounded) until the server closes the connection; returns the seconds it took. */
static double wait_closed(int fd, unsigned max_sec, bool trickle) {
        usec_t start = clock_now(), deadline = start + max_sec * USEC_PER_SEC;
        char buf[256];

        while (clock_now() < deadline) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (poll(&p, 1, 1000) > 0) {
                        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                        if (n <= 0)
                                return (double) (clock_now() - start) / USEC_PER_SEC;
                }
                if (trickle && send(fd, "X", 1, MSG_NOSIGNAL) < 0)
                        return (double) (clock_now() - start) / USEC_PER_SEC;
        }
        return -1;
}

START_TEST(test_limits_keep_it_serving) {
        char *big_body, big_header[200 * 1024];
        const char *headers[] = { big_header, NULL };
        int hogs[4], slow;
        double took;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[listen]\nmax_body_size = 4096\nread_timeout = 2\nmax_connections = 6\n");
        visierd_wait_ready(&vd);

        /* Oversized body: 413, and the next request is served. */
        big_body = malloc(64 * 1024);
        memset(big_body, 'a', 64 * 1024 - 1);
        big_body[64 * 1024 - 1] = '\0';
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", NULL, big_body, NULL), 413);
        free(big_body);
        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200);

        /* Oversized header: refused with a 4xx, not a crash or a hang. */
        snprintf(big_header, sizeof(big_header), "X-Big: ");
        memset(big_header + 7, 'b', sizeof(big_header) - 8);
        big_header[sizeof(big_header) - 1] = '\0';
        {
                /* libmicrohttpd answers 431 and closes while the client is still sending the
                 * rest of the header; the client may then see the reset before the answer. */
                char *u = visierd_url(&vd, "/healthz");
                HttpResult rr;

                http_request("GET", u, headers, NULL, 20000, &rr);
                free(u);
                ck_assert_msg(rr.status == 431 || (rr.status == 0 && (rr.curl_error == CURLE_GOT_NOTHING ||
                                                                      rr.curl_error == CURLE_SEND_ERROR ||
                                                                      rr.curl_error == CURLE_RECV_ERROR)),
                              "an oversized header got %ld (curl error %d)", rr.status, rr.curl_error);
                http_result_done(&rr);
        }
        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200);

        /* A client sending one byte a second is cut off after read_timeout, while others are served. */
        slow = connect_raw(vd.port);
        ck_assert_int_eq(send(slow, "GET /healthz HTTP/1.1\r\n", 23, MSG_NOSIGNAL), 23);
        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200);
        took = wait_closed(slow, 15, true);
        close(slow);
        ck_assert_msg(took >= 0, "the slow client was never cut off");

        /* Connections that hold slots without sending are cut off too, and the slots come back. */
        for (int i = 0; i < 4; i++)
                hogs[i] = connect_raw(vd.port);
        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200); /* slots left: still served */
        for (int i = 0; i < 4; i++) {
                ck_assert_msg(wait_closed(hogs[i], 15, false) >= 0, "an idle connection was never closed");
                close(hogs[i]);
        }
        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200);
}
END_TEST

/* max_header_size bounds a request's line and headers: a head within it is served, on the
 * proxied path too (the answer's header lines have room of their own), a larger one gets 431 in
 * Visier's Status shape and the connection's next client is served. */
START_TEST(test_header_size_limit) {
        static const char expected[] =
                "{\"code\":\"RequestHeaderFieldsTooLarge\",\"message\":\"request line and headers are larger than "
                "max_header_size (2048 bytes)\",\"localizedMessage\":\"request line and headers are larger than "
                "max_header_size (2048 bytes)\",\"userError\":true}";
        char fits[2048 - 400], too_big[2048 + 200];
        const char *h_fits[] = { fits, NULL }, *h_too_big[] = { too_big, NULL };
        char *body = NULL;

        snprintf(fits, sizeof(fits), "X-Pad: ");
        memset(fits + 7, 'f', sizeof(fits) - 8);
        fits[sizeof(fits) - 1] = '\0';
        snprintf(too_big, sizeof(too_big), "X-Pad: ");
        memset(too_big + 7, 't', sizeof(too_big) - 8);
        too_big[sizeof(too_big) - 1] = '\0';

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[listen]\nmax_header_size = 2048\n");
        visierd_wait_ready(&vd);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", h_fits, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/status", h_fits, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", h_too_big, NULL, &body), 431);
        ck_assert_str_eq(body, expected);
        free(body);
        body = NULL;
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", h_too_big, "[]", &body), 431);
        ck_assert_str_eq(body, expected);
        free(body);
        ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200);
}
END_TEST

/* Past max_connections a connection is answered, never closed silently: 503 in Visier's
 * Status shape with Retry-After for API routes, while the ops routes keep their reserve. */
START_TEST(test_connection_limit) {
        static const char expected[] =
                "{\"code\":\"ServiceUnavailable\",\"message\":\"visierd has 3 connections open ([listen] "
                "max_connections); try again\",\"localizedMessage\":\"visierd has 3 connections open ([listen] "
                "max_connections); try again\",\"userError\":false}";
        int hogs[3], extra, probe;
        char buf[4096];
        size_t len = 0;
        ssize_t n;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[listen]\nmax_connections = 3\nread_timeout = 30\n");
        visierd_wait_ready(&vd);
        for (int i = 0; i < 3; i++)
                hogs[i] = connect_raw(vd.port);
        /* Each hog has begun a request, so the listener has taken it before the extra one. */
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(send(hogs[i], "G", 1, MSG_NOSIGNAL), 1);
        /* Let the listener take the three: a request on one of them is answered once it is in. */
        for (int i = 0; i < 200 && req("GET", "/healthz", NULL, NULL, NULL) != 200; i++)
                clock_sleep(20 * USEC_PER_MSEC);
        extra = connect_raw(vd.port);
        snprintf(buf, sizeof(buf), "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        ck_assert_int_eq(send(extra, buf, strlen(buf), MSG_NOSIGNAL), (ssize_t) strlen(buf));
        while (len < sizeof(buf) - 1) {
                struct pollfd p = { .fd = extra, .events = POLLIN };

                if (poll(&p, 1, 10000) <= 0)
                        break;
                n = recv(extra, buf + len, sizeof(buf) - 1 - len, 0);
                if (n <= 0)
                        break;
                len += (size_t) n;
        }
        buf[len] = '\0';
        ck_assert_msg(strncmp(buf, "HTTP/1.1 503 ", 13) == 0, "past max_connections: %s", buf);
        ck_assert_ptr_nonnull(strcasestr(buf, "\r\nRetry-After: 1\r\n"));
        ck_assert_ptr_nonnull(strcasestr(buf, "\r\nConnection: close\r\n"));
        ck_assert_ptr_nonnull(strstr(buf, expected));
        close(extra);

        /* The probe routes are still served past the limit. */
        probe = connect_raw(vd.port);
        snprintf(buf, sizeof(buf), "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        ck_assert_int_eq(send(probe, buf, strlen(buf), MSG_NOSIGNAL), (ssize_t) strlen(buf));
        len = 0;
        while (len < sizeof(buf) - 1 && !strstr(buf, "\"ok\"}")) {
                struct pollfd p = { .fd = probe, .events = POLLIN };

                if (poll(&p, 1, 10000) <= 0)
                        break;
                n = recv(probe, buf + len, sizeof(buf) - 1 - len, 0);
                if (n <= 0)
                        break;
                len += (size_t) n;
                buf[len] = '\0';
        }
        ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "healthz past max_connections: %s", buf);
        close(probe);
        /* The refusal is counted, and /metrics is served past the limit too. */
        {
                char *text;

                ck_assert_int_eq(req("GET", "/metrics", NULL, NULL, &text), 200);
                ck_assert_double_eq(sample(text, "visierd_refused_requests_total{limit=\"max_connections\"}"), 1);
                free(text);
        }
        for (int i = 0; i < 3; i++)
                close(hogs[i]);
}
END_TEST

/* ---- logs ---- */

/* [log] format = json writes one JSON object a line (time, level, pid, message and the
 * entry's fields); VISIERD_LOG_LEVEL=debug adds the token refresh schedule and each write
 * call's batch. */
START_TEST(test_log_json_and_debug) {
        const char *const env[] = { "VISIERD_LOG_LEVEL=debug", NULL };
        const char *wait[] = { "Prefer: wait=20", NULL };
        bool refresh = false, batch = false, job = false, access = false, budget = false;
        char *log, *line, *save = NULL;
        int lines = 0;

        sim_start(&sim, NULL);
        harness_child_env = env;
        visierd_start(&vd, &sim, NULL, "[log]\nformat = json\n[jobs]\nbatch_delay_ms = 0\n");
        harness_child_env = NULL;
        visierd_wait_ready(&vd);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", wait, "{\"permissions\":[{\"displayName\":\"logged\"}]}",
                             NULL),
                         200);
        /* A 429 with Retry-After: 1 closes the budget; the read's next try waits for it. */
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"next_throttles\":1,\"retry_after\":1}"));
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200);
        ck_assert_int_eq(visierd_stop(&vd), 0);
        log = harness_read_file(vd.log);
        for (line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                json_t *j = json_loads(line, 0, NULL);
                const char *msg = json_string_value(json_object_get(j, "message"));
                const char *level = json_string_value(json_object_get(j, "level"));

                ck_assert_msg(j && msg && level && json_is_string(json_object_get(j, "time")) &&
                                      json_is_integer(json_object_get(j, "pid")),
                              "not a JSON log line: %s", line);
                refresh |= streq(level, "debug") && strncmp(msg, "token refresh due in about ", 27) == 0;
                batch |= streq(level, "debug") && streq(msg, "batch: create of 1 items merged from 1 jobs");
                budget |= streq(level, "debug") && strncmp(msg, "rate budget: /v1/admin/capabilities waits ", 42) == 0 &&
                          strstr(msg, " s for a call (") && strstr(msg, " left this minute, ");
                job |= streq(level, "info") && strstr(msg, "succeeded") && json_is_string(json_object_get(j, "JOB_ID")) &&
                       streq(strempty(json_string_value(json_object_get(j, "message_id"))), "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e09");
                /* The access line of the write: method, route, status, duration, client, request ID. */
                if (streq(level, "info") && strncmp(msg, "POST /v1/admin/permissions 200 ", 31) == 0) {
                        char rid[32];

                        snprintf(rid, sizeof(rid), " request=%s",
                                 strempty(json_string_value(json_object_get(j, "REQUEST_ID"))));
                        access |= strstr(msg, " ms client=tcp:127.0.0.1 request=") && strstr(msg, rid) &&
                                  rid[9] != '\0';
                }
                json_decref(j);
                lines++;
        }
        ck_assert_int_gt(lines, 3);
        ck_assert_msg(refresh && batch && job && access && budget, "refresh %d, batch %d, job %d, access %d, budget %d",
                      refresh, batch, job, access, budget);
        free(log);
}
END_TEST

/* [log] access = no: no line per request. */
START_TEST(test_access_log_off) {
        char *log;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[log]\naccess = no\n");
        visierd_wait_ready(&vd);
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200);
        ck_assert_int_eq(visierd_stop(&vd), 0);
        log = harness_read_file(vd.log);
        ck_assert_msg(!strstr(log, "GET /v1/admin/capabilities 200 "), "log:\n%s", log);
        free(log);
}
END_TEST

/* ---- secrets out of core dumps ---- */

/* visierd holds the API key and the password: it leaves no core dump even when started with
 * an unlimited core size (it is not dumpable and sets its core size to 0), and its secrets
 * live in memory marked not to be dumped. */
START_TEST(test_secrets_kept_out_of_core_dumps) {
        struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY }, saved;
        char path[64], *smaps;
        int status;

        ck_assert_int_eq(getrlimit(RLIMIT_CORE, &saved), 0);
        if (setrlimit(RLIMIT_CORE, &unlimited) < 0) {
                fprintf(stderr, "SKIP: test_secrets_kept_out_of_core_dumps: cannot raise RLIMIT_CORE: %m\n");
                return;
        }
        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, NULL);
        visierd_wait_ready(&vd);
        ck_assert_int_eq(setrlimit(RLIMIT_CORE, &saved), 0);

        /* The secret arena (1024 slots of 512 bytes) is marked "dd" (MADV_DONTDUMP). */
        snprintf(path, sizeof(path), "/proc/%d/smaps", (int) vd.pid);
        smaps = harness_read_file(path);
        ck_assert_ptr_nonnull(smaps);
        {
                bool found = false;

                for (const char *m = strstr(smaps, "\nSize:"); m && !found; m = strstr(m + 1, "\nSize:")) {
                        const char *flags = strstr(m, "\nVmFlags:"), *eol = flags ? strchr(flags + 1, '\n') : NULL;

                        if (strtoul(m + 6, NULL, 10) == 512 && flags && eol) {
                                char line[256];

                                snprintf(line, sizeof(line), "%.*s ", (int) (eol - flags), flags);
                                found = strstr(line, " dd ") != NULL;
                        }
                }
                ck_assert_msg(found, "no 512 kB mapping of visierd is excluded from core dumps");
        }
        free(smaps);

        /* A crash leaves no core, though the core size it was started with was unlimited. */
        ck_assert_int_eq(kill(vd.pid, SIGQUIT), 0);
        ck_assert_int_eq(waitpid(vd.pid, &status, 0), vd.pid);
        vd.pid = 0;
        ck_assert(WIFSIGNALED(status));
        ck_assert_msg(!WCOREDUMP(status), "visierd dumped core");
}
END_TEST

/* ---- Prometheus text format ---- */

static double sample(const char *text, const char *series) {
        const char *p = text;
        size_t n = strlen(series);

        while ((p = strstr(p, series))) {
                if ((p == text || p[-1] == '\n') && p[n] == ' ')
                        return strtod(p + n + 1, NULL);
                p += n;
        }
        return -1;
}

/* A line-by-line check of the exposition format: HELP and TYPE before samples of a family,
 * valid names and labels, numeric values, cumulative histogram buckets ending in +Inf. */
static void assert_prometheus_text(const char *text) {
        regex_t sample_re, help_re, type_re;
        char family[128] = "", type[16] = "", last_series[256] = "";
        double last_bucket = -1;
        const char *line = text;
        int samples = 0;

        ck_assert_int_eq(regcomp(&sample_re,
                                 "^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\]*\",?)*\\})? "
                                 "(-?[0-9.eE+-]+|\\+Inf|NaN)$",
                                 REG_EXTENDED),
                         0);
        ck_assert_int_eq(regcomp(&help_re, "^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$", REG_EXTENDED), 0);
        ck_assert_int_eq(regcomp(&type_re, "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$",
                                 REG_EXTENDED),
                         0);
        while (*line) {
                const char *nl = strchr(line, '\n');
                char l[1024];
                regmatch_t mm[5];
                size_t n;

                ck_assert_msg(nl, "the exposition must end with a newline");
                n = (size_t) (nl - line);
                ck_assert(n < sizeof(l));
                memcpy(l, line, n);
                l[n] = '\0';
                if (regexec(&type_re, l, 3, mm, 0) == 0) {
                        snprintf(family, sizeof(family), "%.*s", (int) (mm[1].rm_eo - mm[1].rm_so), l + mm[1].rm_so);
                        snprintf(type, sizeof(type), "%.*s", (int) (mm[2].rm_eo - mm[2].rm_so), l + mm[2].rm_so);
                        last_bucket = -1;
                } else if (regexec(&help_re, l, 0, NULL, 0) == 0) {
                } else {
                        ck_assert_msg(regexec(&sample_re, l, 5, mm, 0) == 0, "not a valid sample line: %s", l);
                        ck_assert_msg(family[0] && strncmp(l, family, strlen(family)) == 0, "sample before its TYPE: %s", l);
                        ck_assert_msg(strncmp(family, "visierd_", 8) == 0 || strncmp(family, "process_", 8) == 0,
                                      "name without the visierd_ (or the standard process_) prefix: %s", l);
                        if (streq(type, "counter"))
                                ck_assert_msg(strstr(family, "_total"), "counter %s lacks _total", family);
                        if (streq(type, "histogram") && strstr(l, "_bucket{")) {
                                double v = strtod(strrchr(l, ' ') + 1, NULL);
                                const char *le = strstr(l, "le=\"");
                                char key[256];

                                /* Buckets are cumulative within one series (its labels but le). */
                                snprintf(key, sizeof(key), "%.*s", le ? (int) (le - l) : 0, l);
                                if (!streq(key, last_series)) {
                                        snprintf(last_series, sizeof(last_series), "%s", key);
                                        last_bucket = -1;
                                }
                                ck_assert_msg(v >= last_bucket, "histogram buckets not cumulative: %s", l);
                                last_bucket = v;
                        }
                        samples++;
                }
                line = nl + 1;
        }
        ck_assert_int_gt(samples, 20);
        regfree(&sample_re);
        regfree(&help_re);
        regfree(&type_re);
}

START_TEST(test_metrics) {
        const char *wait[] = { "Prefer: wait=20", NULL };
        char *before, *after;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, "[jobs]\nbatch_delay_ms = 0", NULL);
        visierd_wait_ready(&vd);
        ck_assert_int_eq(req("GET", "/metrics", NULL, NULL, &before), 200);
        assert_prometheus_text(before);

        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/no/such/thing", NULL, NULL, NULL), 404);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", wait,
                             "{\"permissions\":[{\"displayName\":\"m1\"},{\"displayName\":\"m2\"}]}", NULL),
                         200);
        ck_assert_int_eq(req("GET", "/metrics", NULL, NULL, &after), 200);
        assert_prometheus_text(after);

        ck_assert_double_eq(sample(after, "visierd_http_requests_total{method=\"GET\",route=\"/v1/admin/capabilities\",status=\"200\"}") -
                                    fmax(0, sample(before, "visierd_http_requests_total{method=\"GET\",route=\"/v1/admin/capabilities\",status=\"200\"}")),
                            3);
        ck_assert_double_eq(sample(after, "visierd_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"), 1);
        ck_assert_double_ge(sample(after, "visierd_upstream_requests_total{endpoint=\"/v1/admin/capabilities\",status=\"200\"}"), 3);
        ck_assert_double_eq(sample(after, "visierd_upstream_requests_total{endpoint=\"/v1/admin/visierSecureToken\",status=\"200\"}"), 1);
        ck_assert_double_eq(sample(after, "visierd_write_calls_total") - sample(before, "visierd_write_calls_total"), 1);
        ck_assert_double_eq(sample(after, "visierd_write_call_items_sum"), 2);
        ck_assert_double_eq(sample(after, "visierd_logins_total"), 1);
        ck_assert_double_gt(sample(after, "visierd_token_expiry_seconds"), 3000);
        ck_assert_double_eq(sample(after, "visierd_jobs{state=\"succeeded\"}"), 1);
        ck_assert_double_ge(sample(after, "visierd_upstream_request_duration_seconds_count"), 5);
        ck_assert_double_eq(sample(after, "visierd_build_info{version=\"" PACKAGE_VERSION "\"}"), 1);
        /* The process, as client libraries export it. */
        ck_assert_double_gt(sample(after, "process_resident_memory_bytes"), 1 << 20);
        ck_assert_double_gt(sample(after, "process_open_fds"), 3);
        ck_assert_double_ge(sample(after, "process_max_fds"), sample(after, "process_open_fds"));
        ck_assert_double_ge(sample(after, "process_cpu_seconds_total"), 0);
        ck_assert_double_ge(sample(after, "visierd_threads"), 2);
        {
                double started = sample(after, "process_start_time_seconds"), now = (double) time(NULL);

                ck_assert_msg(started > now - 600 && started <= now + 2, "process_start_time_seconds %f, now %f", started,
                              now);
        }
        ck_assert_double_eq(sample(after, "visierd_refused_requests_total{limit=\"max_held_requests\"}"), 0);
        /* Local latency by route of visierd's own (capabilities is one: its reads are
         * cached), each answer in some bucket up to +Inf; the unmatched path under its own. */
        ck_assert_double_eq(
                sample(after, "visierd_http_request_duration_seconds_count{route=\"/v1/admin/capabilities\"}") -
                        fmax(0, sample(before, "visierd_http_request_duration_seconds_count{route=\"/v1/admin/capabilities\"}")),
                3);
        ck_assert_double_eq(
                sample(after, "visierd_http_request_duration_seconds_bucket{route=\"/v1/admin/capabilities\",le=\"+Inf\"}"),
                sample(after, "visierd_http_request_duration_seconds_count{route=\"/v1/admin/capabilities\"}"));
        ck_assert_double_gt(sample(after, "visierd_http_request_duration_seconds_sum{route=\"/v1/admin/capabilities\"}"), 0);
        ck_assert_double_eq(sample(after, "visierd_http_request_duration_seconds_count{route=\"/v1/admin/permissions\"}"), 1);
        ck_assert_double_eq(sample(after, "visierd_http_request_duration_seconds_count{route=\"unmatched\"}"), 1);
        ck_assert_double_eq(sample(after, "visierd_auth_failures_total{reason=\"invalid\"}"), 0);
        free(before);
        free(after);
}
END_TEST

/* Methods no client of visierd uses, one of them with a double quote in it, are counted as
 * method "other" before they are counted at all: /metrics stays valid text, gains at most one
 * series per route and status for them, and the real series keep their own lines. */
START_TEST(test_metrics_labels_from_closed_sets) {
        char request[256], *answer, *text;
        const char *line;
        double other = 0;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, NULL);
        visierd_wait_ready(&vd);
        answer = harness_raw_exchange(vd.port, "GE\"T /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 10);
        free(answer);
        for (int i = 0; i < 600; i++) {
                snprintf(request, sizeof(request), "X%03d /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", i);
                answer = harness_raw_exchange(vd.port, request, 10);
                free(answer);
        }
        ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200);
        ck_assert_int_eq(req("GET", "/metrics", NULL, NULL, &text), 200);
        assert_prometheus_text(text);
        ck_assert_msg(!strstr(text, "method=\"X0") && !strstr(text, "GE\\\"T") && !strstr(text, "GE\"T"),
                      "a junk method became a label");
        ck_assert_double_eq(
                sample(text, "visierd_http_requests_total{method=\"GET\",route=\"/v1/admin/capabilities\",status=\"200\"}"), 1);
        for (line = text; (line = strstr(line, "visierd_http_requests_total{method=\"other\",")); line++)
                other += strtod(strchr(line, ' ') + 1, NULL);
        ck_assert_double_eq(other, 601);
        ck_assert_msg(!strstr(text, "route=\"other\""), "real series collapsed into other");
        free(text);
}
END_TEST

int main(void) {
        Suite *s = suite_create("security");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_host_and_origin);
        tcase_add_test(tc, test_client_tokens_and_roles);
        tcase_add_test(tc, test_non_loopback_needs_tokens);
        tcase_add_test(tc, test_unix_socket_peer_allow_list);
        tcase_add_test(tc, test_socket_only_and_supplementary_groups);
        tcase_add_test(tc, test_limits_keep_it_serving);
        tcase_add_test(tc, test_header_size_limit);
        tcase_add_test(tc, test_connection_limit);
        tcase_add_test(tc, test_metrics);
        tcase_add_test(tc, test_metrics_labels_from_closed_sets);
        tcase_add_test(tc, test_failed_authentication_slows_down);
        tcase_add_test(tc, test_delayed_refusals_hold_no_capacity);
        tcase_add_test(tc, test_cross_site_without_origin);
        tcase_add_test(tc, test_ambiguous_body_framing);
        tcase_add_test(tc, test_other_loopback_address);
        tcase_add_test(tc, test_proxy_only_when_configured);
        tcase_add_test(tc, test_metrics_only_listener);
        tcase_add_test(tc, test_required_request_header);
        tcase_add_test(tc, test_secrets_kept_out_of_core_dumps);
        tcase_add_test(tc, test_log_json_and_debug);
        tcase_add_test(tc, test_access_log_off);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
