/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: the real visierd in front of the real visier-sim. Read calls through visierd
 * give Visier's own bodies; local credentials never reach Visier; revoked tokens, 429s and an
 * unreachable Visier are handled as documented; no secret ever appears in a log or /status.
 */
#include <check.h>
#include <curl/curl.h>
#include <regex.h>
#include <stdlib.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

static Sim sim;
static Visierd vd;

static void stop_all(void) {
        ck_assert_int_eq(visierd_stop(&vd), 0); /* a clean exit on SIGTERM */
        sim_stop(&sim);
}

/* Runs after every test, in the test's process, so a failed test leaves no directories. */
static void teardown(void) {
        visierd_stop(&vd);
        sim_stop(&sim);
        if (vd.dir[0])
                harness_rmtree(vd.dir);
        if (sim.dir[0])
                harness_rmtree(sim.dir);
}

/* Start both with a rate budget that never gets in the way, and wait for a token. */
static void start_all(const char *const *sim_args, const char *extra_visier) {
        sim_start(&sim, sim_args);
        visierd_start(&vd, &sim, extra_visier, NULL);
        visierd_wait_ready(&vd);
}

#define LIST_QUERY                                                                                         \
        "{\"source\":{\"analyticObject\":\"Employee\"},\"columns\":[{\"columnDefinition\":{\"property\":" \
        "{\"name\":\"Employee.EmployeeID\"}}}]}"
/* LIST_QUERY as a JSON string value */
#define LIST_QUERY_JSON                                                                                    \
        "\"{\\\"source\\\":{\\\"analyticObject\\\":\\\"Employee\\\"},\\\"columns\\\":[{\\\"columnDefinition\\\":" \
        "{\\\"property\\\":{\\\"name\\\":\\\"Employee.EmployeeID\\\"}}}]}\""

static const char *const read_paths[] = {
        "/v1/admin/capabilities",
        "/v1/admin/capabilities/data",
        "/v1/admin/content-packages",
        "/v1/admin/content-packages/4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c01",
        "/v1/admin/data-security-objects",
        "/v1/admin/data-security-objects?id=Employee&includeDetails=true",
        "/v1/data/model/analytic-objects",
        "/v1/data/model/analytic-objects/Employee/dimensions",
        "/v1/data/model/analytic-objects/Employee/dimensions/Location/members",
        "/v1/data/model/analytic-objects/Employee/dimensions/Gender/members",
        "/v1/admin/permissions",
        "/v1/admin/permissions?includeDetails=true",
        "/v1/admin/permissions?includeDetails=true&includeDetailsWithStatus=true",
        "/v1/admin/permissions/3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71",
        "/v1/admin/permissions/3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71/users",
        "/v1/admin/capabilities/no_such_capability",
        "/v1/data/model/analytic-objects/NoSuchObject/dimensions",
};

START_TEST(test_reads_match_visier) {
        const char *args[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };
        char *token, *cookie, *apikey;
        const char *direct_headers[3];

        start_all(args, NULL);
        token = sim_login(&sim);
        ck_assert_int_ge(asprintf(&cookie, "Cookie: VisierASIDToken=%s", token), 0);
        ck_assert_int_ge(asprintf(&apikey, "apikey: %s", sim.apikey), 0);
        direct_headers[0] = cookie;
        direct_headers[1] = apikey;
        direct_headers[2] = NULL;

        for (size_t i = 0; i < sizeof(read_paths) / sizeof(read_paths[0]); i++) {
                char *du = sim_url(&sim, read_paths[i]), *pu = visierd_url(&vd, read_paths[i]);
                HttpResult d, p;

                http_request("GET", du, direct_headers, NULL, 10000, &d);
                http_request("GET", pu, NULL, NULL, 10000, &p);
                ck_assert_msg(d.status == p.status, "%s: direct %ld, through visierd %ld", read_paths[i], d.status,
                              p.status);
                ck_assert_msg(d.len == p.len && memcmp(d.body, p.body, d.len) == 0,
                              "%s: bodies differ\ndirect: %s\nvisierd: %s", read_paths[i], d.body, p.body);
                ck_assert_msg(d.len > 2, "%s: empty body", read_paths[i]);
                ck_assert_str_eq(p.content_type, d.content_type);
                http_result_done(&d);
                http_result_done(&p);
                free(du);
                free(pu);
        }
        ck_assert_int_eq(sim_counter(&sim, "bad_token"), 0);
        ck_assert_int_eq(sim_counter(&sim, "logins"), 2); /* visierd's one and ours */
        free(token);
        free(cookie);
        free(apikey);
        stop_all();
}
END_TEST

START_TEST(test_local_errors_use_status_shape) {
        long status;
        json_t *j;
        char *u;

        start_all(NULL, NULL);
        u = visierd_url(&vd, "/v1/no/such/path");
        j = http_get_json(u, &status);
        ck_assert_int_eq(status, 404);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "NotFound");
        ck_assert(json_is_string(json_object_get(j, "localizedMessage")));
        ck_assert(json_is_boolean(json_object_get(j, "userError")));
        json_decref(j);
        free(u);
        /* A dot segment must not walk the forwarded path to another endpoint. */
        u = visierd_url(&vd, "/v1/admin/capabilities/..");
        j = http_get_json(u, &status);
        ck_assert_int_eq(status, 404);
        json_decref(j);
        free(u);
        stop_all();
}
END_TEST

/* Paths a server on the way might normalise into another endpoint are refused (404), never
 * forwarded: matrix parameters and "..;", backslashes, escaped dots, slashes, backslashes and
 * semicolons, double encoding, control characters. The requests go on the wire as written. */
START_TEST(test_path_tricks_refused) {
        static const char *const tricks[] = {
                "/v1/admin/permissions/..;/users",
                "/v1/admin/permissions/x;y/users",
                "/v1/admin/permissions/%3B/users",
                "/v1/admin/permissions/%3b/users",
                "/v1/admin/permissions/a\\b/users",
                "/v1/admin/permissions/%5c/users",
                "/v1/admin/permissions/%5C..%5C/users",
                "/v1/admin/permissions/%2e%2e/users",
                "/v1/admin/permissions/.%2E/users",
                "/v1/admin/permissions/%252e%252e/users",
                "/v1/admin/permissions/%252f/users",
                "/v1/admin/permissions/.../users",
                "/v1/admin/permissions/%2f/users",
                "/v1/admin/capabilities/%00",
                "/v1/admin/capabilities/a%0d%0aX",
                "/v1/admin/capabilities/%zz",
                "/v1/admin/capabilities/%4",
                "/v1/admin/capabilities/a:b",
                "/v1/admin/capabilities/a@b",
        };
        char req[512], *a;
        long long calls;

        start_all(NULL, NULL);
        calls = sim_counter(&sim, "calls_total");
        for (size_t i = 0; i < sizeof(tricks) / sizeof(tricks[0]); i++) {
                snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n",
                         tricks[i], vd.port);
                a = harness_raw_exchange(vd.port, req, 10);
                ck_assert_msg(strncmp(a, "HTTP/1.1 404 ", 13) == 0 || strncmp(a, "HTTP/1.1 400 ", 13) == 0,
                              "%s was answered:\n%s", tricks[i], a);
                free(a);
        }
        ck_assert_int_eq(sim_counter(&sim, "calls_total"), calls); /* none reached Visier */
        /* The same shapes with plain IDs are served. */
        snprintf(req, sizeof(req),
                 "GET /v1/admin/permissions/3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71/users HTTP/1.1\r\nHost: "
                 "127.0.0.1:%u\r\nConnection: close\r\n\r\n",
                 vd.port);
        a = harness_raw_exchange(vd.port, req, 10);
        ck_assert_msg(strncmp(a, "HTTP/1.1 200 ", 13) == 0, "answer:\n%s", a);
        free(a);
        stop_all();
}
END_TEST

/* The body of a raw answer (after the head), parsed; NULL when it is not JSON. */
static json_t *raw_body_json(const char *answer) {
        const char *body = strstr(answer, "\r\n\r\n");

        return body ? json_loads(body + 4, 0, NULL) : NULL;
}

/* A query string or path holding bytes that must be percent-encoded is refused 400 at once —
 * nothing sent to Visier, no rate budget spent, no retries — and every error visierd makes,
 * whatever bytes the request had (in the path, in a JSON body), is a valid Status JSON. */
START_TEST(test_bad_bytes_answered_as_status) {
        static const char *const bad_queries[] = { "x=\xff", "x=\x7f", "x=<a>", "x=%zz", "x=\"q\"" };
        char req[512], *a;
        long long calls;
        json_t *j;

        start_all(NULL, NULL);
        calls = sim_counter(&sim, "calls_total");
        for (size_t i = 0; i < ELEMENTSOF(bad_queries); i++) {
                snprintf(req, sizeof(req),
                         "GET /v1/admin/capabilities?%s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n",
                         bad_queries[i], vd.port);
                a = harness_raw_exchange(vd.port, req, 10);
                ck_assert_msg(strncmp(a, "HTTP/1.1 400 ", 13) == 0, "?%s was answered:\n%s", bad_queries[i], a);
                j = raw_body_json(a);
                ck_assert_msg(j, "?%s: not JSON:\n%s", bad_queries[i], a);
                ck_assert(strncmp(json_string_value(json_object_get(j, "message")),
                                  "the query string holds a character that must be percent-encoded (byte 0x", 72) == 0);
                json_decref(j);
                free(a);
        }
        /* The path: refused the same way, never echoed. */
        snprintf(req, sizeof(req), "GET /v1/admin/\xff HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n",
                 vd.port);
        a = harness_raw_exchange(vd.port, req, 10);
        ck_assert_msg(strncmp(a, "HTTP/1.1 400 ", 13) == 0, "answer:\n%s", a);
        ck_assert_msg(strstr(a, "\r\n\r\n{\"code\":\"BadRequest\",\"message\":\"the path holds a character that must be "
                                "percent-encoded (byte 0xff)\",\"localizedMessage\":\"the path holds a character that "
                                "must be percent-encoded (byte 0xff)\",\"userError\":true}"),
                      "answer:\n%s", a);
        free(a);
        ck_assert_int_eq(sim_counter(&sim, "calls_total"), calls); /* none reached Visier */

        /* A JSON body with a byte that is not UTF-8: a 400 whose body is valid JSON. */
        {
                const char *body = "{\"permissions\":[{\"displayName\":\"\xff\xfe\"}]}";

                snprintf(req, sizeof(req),
                         "POST /v1/admin/permissions HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                         vd.port, strlen(body), body);
                a = harness_raw_exchange(vd.port, req, 10);
                ck_assert_msg(strncmp(a, "HTTP/1.1 400 ", 13) == 0, "answer:\n%s", a);
                j = raw_body_json(a);
                ck_assert_msg(j && streq(json_string_value(json_object_get(j, "code")), "BadRequest"), "answer:\n%s", a);
                json_decref(j);
                free(a);
        }
        /* Percent-encoded, the same values are fine and go on the wire as the client wrote them. */
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        snprintf(req, sizeof(req),
                 "GET /v1/admin/capabilities?x=%%FF%%20y HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n",
                 vd.port);
        a = harness_raw_exchange(vd.port, req, 10);
        ck_assert_msg(strncmp(a, "HTTP/1.1 ", 9) == 0 && strncmp(a, "HTTP/1.1 5", 10) != 0, "answer:\n%s", a);
        free(a);
        j = sim_control_get(&sim, "/_sim/requests");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "requests"), 0), "target")),
                         "/v1/admin/capabilities?x=%FF%20y");
        json_decref(j);
        stop_all();
}
END_TEST

/* The exact requests visierd sends Visier, from the sim's request log: each header Visier
 * defines for the operation is forwarded (and only those), booleans as true/false; a header
 * with a control character is refused with 400 naming it, and never sent. */
START_TEST(test_upstream_request_bytes) {
        const char *read_headers[] = { "TargetTenantID: WFF_j1a~c01", "NonVersioned: True",
                                       "DataVersionID: 7", "Accept: application/json", "FastMode: true", NULL };
        const char *query_headers[] = { "DataVersionID: 12345", "Accept: application/jsonlines",
                                        "Content-Type: application/json", "NonVersioned: true", NULL };
        const char *bad_boolean[] = { "NonVersioned: maybe", NULL };
        char expected[4096], *got, req[256], *a;
        json_t *log;
        HttpResult r;
        char *u;

        start_all(NULL, NULL);
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        u = visierd_url(&vd, "/v1/admin/permissions?includeDetails=true&x=a%20b");
        http_request("GET", u, read_headers, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);
        free(u);
        u = visierd_url(&vd, "/v1/data/query/list");
        http_request("POST", u, query_headers, LIST_QUERY, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);
        free(u);

        /* Refused before anything is sent: a bare CR in a forwarded header, a non-boolean. */
        snprintf(req, sizeof(req),
                 "GET /v1/admin/capabilities HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nTargetTenantID: a\rb\r\n"
                 "Connection: close\r\n\r\n",
                 vd.port);
        a = harness_raw_exchange(vd.port, req, 10);
        ck_assert_msg(strstr(a, "HTTP/1.1 400 Bad Request\r\n") == a, "answer:\n%s", a);
        ck_assert_ptr_nonnull(strstr(a, "\"message\":\"TargetTenantID: must not contain control characters\""));
        free(a);
        u = visierd_url(&vd, "/v1/admin/permissions");
        http_request("GET", u, bad_boolean, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 400);
        ck_assert_str_eq(r.body, "{\"code\":\"BadRequest\",\"message\":\"NonVersioned: must be true or false\","
                                 "\"localizedMessage\":\"NonVersioned: must be true or false\",\"userError\":true}");
        http_result_done(&r);
        free(u);

        log = sim_control_get(&sim, "/_sim/requests");
        got = json_dumps(log, JSON_COMPACT);
        snprintf(expected, sizeof(expected),
                 "{\"requests\":["
                 "{\"method\":\"GET\",\"target\":\"/v1/admin/permissions?includeDetails=true&x=a%%20b\","
                 "\"headers\":[[\"Host\",\"127.0.0.1:%u\"],[\"User-Agent\",\"visierd/" PACKAGE_VERSION "\"],"
                 "[\"TargetTenantID\",\"WFF_j1a~c01\"],[\"NonVersioned\",\"true\"],"
                 "[\"Accept\",\"application/json\"],[\"apikey\",\"<apikey>\"],[\"Cookie\",\"VisierASIDToken=<token>\"]],"
                 "\"body\":\"\"},"
                 "{\"method\":\"POST\",\"target\":\"/v1/data/query/list\","
                 "\"headers\":[[\"Host\",\"127.0.0.1:%u\"],[\"User-Agent\",\"visierd/" PACKAGE_VERSION "\"],"
                 "[\"DataVersionID\",\"12345\"],[\"Accept\",\"application/jsonlines\"],"
                 "[\"Content-Type\",\"application/json\"],[\"apikey\",\"<apikey>\"],"
                 "[\"Cookie\",\"VisierASIDToken=<token>\"],[\"Content-Length\",\"%zu\"]],"
                 "\"body\":%s}]}",
                 sim.port, sim.port, strlen(LIST_QUERY), LIST_QUERY_JSON);
        ck_assert_str_eq(got, expected);
        free(got);
        json_decref(log);
        stop_all();
}
END_TEST

/* The rest of Visier's published API, as the policy table says: a read visierd has no
 * handler of its own for is proxied (the sim's log shows it, with the headers Visier defines
 * for it); a denied operation gets 403 in Visier's Status shape without reaching Visier; any
 * other write goes through the lane as a call job; a path Visier does not have is 404, a
 * known path with another method 405. */
START_TEST(test_policy_table_routes) {
        const char *tenant[] = { "TargetTenantID: WFF_j1a~c01", "DataVersionID: 9", NULL };
        char expected[1024], *got, *body;
        json_t *log;
        HttpResult r;
        long long calls;
        char *u;

        start_all(NULL, NULL);
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        u = visierd_url(&vd, "/v1/admin/users?limit=5");
        http_request("GET", u, tenant, NULL, 10000, &r);
        free(u);
        /* Visier's answer as it is: the analytic tenant's users. */
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(strncmp(r.body, "{\"users\":[{\"userId\":\"9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c4\",", 58) == 0,
                      "%s", r.body);
        http_result_done(&r);
        log = sim_control_get(&sim, "/_sim/requests");
        got = json_dumps(json_array_get(json_object_get(log, "requests"), 0), JSON_COMPACT);
        /* GET /v1/admin/users defines TargetTenantID (and ProjectID, NonVersioned), not
         * DataVersionID: only the first goes. */
        snprintf(expected, sizeof(expected),
                 "{\"method\":\"GET\",\"target\":\"/v1/admin/users?limit=5\",\"headers\":[[\"Host\",\"127.0.0.1:%u\"],"
                 "[\"User-Agent\",\"visierd/" PACKAGE_VERSION "\"],[\"TargetTenantID\",\"WFF_j1a~c01\"],"
                 "[\"Accept\",\"*/*\"],[\"apikey\",\"<apikey>\"],[\"Cookie\",\"VisierASIDToken=<token>\"]],\"body\":\"\"}",
                 sim.port);
        ck_assert_str_eq(got, expected);
        free(got);
        json_decref(log);

        /* A /v2 read of the table, byte for byte. */
        u = visierd_url(&vd, "/v2/admin/user-groups/5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a52?with=permissions");
        http_request("GET", u, NULL, NULL, 10000, &r);
        free(u);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, "{\"userGroupId\":\"5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a52\",\"displayName\":\"Recruiting\","
                                 "\"description\":\"Recruiters and hiring coordinators.\",\"tenantCode\":\"WFF_j1a\","
                                 "\"permissionIds\":{\"ids\":[\"c25d8f3a-6e1b-4a7c-9d0e-5f4a3b2c1d93\"]}}");
        http_result_done(&r);

        calls = sim_counter(&sim, "calls_total");
        u = visierd_url(&vd, "/v1/auth/oauth2/userinfo");
        http_request("GET", u, NULL, NULL, 10000, &r);
        free(u);
        ck_assert_int_eq(r.status, 403);
        ck_assert_str_eq(r.body, "{\"code\":\"Forbidden\",\"message\":\"GET /v1/auth/oauth2/userinfo is denied by "
                                 "visierd's policy: it could reveal or change visierd's own credentials or keys\","
                                 "\"localizedMessage\":\"GET /v1/auth/oauth2/userinfo is denied by visierd's policy: it "
                                 "could reveal or change visierd's own credentials or keys\",\"userError\":true}");
        http_result_done(&r);
        ck_assert_int_eq(sim_counter(&sim, "calls_total"), calls); /* it never reached Visier */

        /* Any other write is a call job through the publisher's lane: sent once as it came,
         * with the headers Visier defines for it (nvLock from Prefer, NonVersioned as true),
         * and answered with Visier's own answer. */
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        {
                const char *h[] = { "Prefer: wait=20, nvLock=global", "NonVersioned: True", "FastMode: true",
                                    "Content-Type: application/json", NULL };

                u = visierd_url(&vd, "/v1/admin/user-groups/users?x=1");
                http_request("PUT", u, h, "{\"userGroups\":[{\"userGroupId\":\"g\"}]}", 30000, &r);
                free(u);
        }
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_nonnull(strstr(r.body, "{\"tenants\":[{"));
        http_result_done(&r);
        log = sim_control_get(&sim, "/_sim/requests");
        ck_assert_uint_eq(json_array_size(json_object_get(log, "requests")), 1);
        got = json_dumps(json_array_get(json_object_get(log, "requests"), 0), JSON_COMPACT);
        snprintf(expected, sizeof(expected),
                 "{\"method\":\"PUT\",\"target\":\"/v1/admin/user-groups/users?x=1\",\"headers\":[[\"Host\",\"127.0.0.1:%u\"],"
                 "[\"User-Agent\",\"visierd/" PACKAGE_VERSION "\"],[\"NonVersioned\",\"true\"],"
                 "[\"Prefer\",\"nvLock=global\"],[\"Content-Type\",\"application/json\"],[\"Accept\",\"application/json\"],"
                 "[\"apikey\",\"<apikey>\"],[\"Cookie\",\"VisierASIDToken=<token>\"],[\"Content-Length\",\"36\"]],"
                 "\"body\":\"{\\\"userGroups\\\":[{\\\"userGroupId\\\":\\\"g\\\"}]}\"}",
                 sim.port);
        ck_assert_str_eq(got, expected);
        free(got);
        json_decref(log);

        /* A read with a body (a search) is forwarded as it came, like a data query. */
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        {
                const char *h[] = { "Content-Type: application/json", NULL };

                u = visierd_url(&vd, "/v1alpha/search/visier-objects");
                http_request("POST", u, h, "{\"query\":\"headcount\"}", 10000, &r);
                free(u);
        }
        ck_assert_int_eq(r.status, 404); /* the sim has no search: its 404, passed through */
        http_result_done(&r);
        log = sim_control_get(&sim, "/_sim/requests");
        ck_assert_uint_eq(json_array_size(json_object_get(log, "requests")), 1);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(log, "requests"), 0), "target")),
                         "/v1alpha/search/visier-objects");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(log, "requests"), 0), "body")),
                         "{\"query\":\"headcount\"}");
        json_decref(log);

        u = visierd_url(&vd, "/v1/admin/no-such-thing");
        http_request("GET", u, NULL, NULL, 10000, &r);
        free(u);
        ck_assert_int_eq(r.status, 404);
        http_result_done(&r);
        u = visierd_url(&vd, "/v1/admin/users/u-1");
        http_request("PATCH", u, NULL, "{}", 10000, &r);
        free(u);
        ck_assert_int_eq(r.status, 405);
        http_result_done(&r);
        (void) body;
        stop_all();
}
END_TEST

/* [policy] allow lets an operator open a denied operation: it is then forwarded like a read;
 * the other denied operations stay refused; an entry that is not a denied operation is a
 * configuration error naming it. */
START_TEST(test_policy_allow) {
        char *u, dir[128], conf[256], key[256], *out;
        const char *argv[5];
        json_t *log;
        HttpResult r;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[policy]\nallow = GET /v1/auth/oauth2/userinfo\n");
        visierd_wait_ready(&vd);
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        u = visierd_url(&vd, "/v1/auth/oauth2/userinfo");
        http_request("GET", u, NULL, NULL, 10000, &r);
        free(u);
        ck_assert_int_ne(r.status, 403);
        http_result_done(&r);
        log = sim_control_get(&sim, "/_sim/requests");
        ck_assert_uint_eq(json_array_size(json_object_get(log, "requests")), 1);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(log, "requests"), 0), "target")),
                         "/v1/auth/oauth2/userinfo");
        json_decref(log);
        u = visierd_url(&vd, "/v1alpha/admin/encryption-keys");
        http_request("GET", u, NULL, NULL, 10000, &r);
        free(u);
        ck_assert_int_eq(r.status, 403);
        http_result_done(&r);

        harness_mkdtemp(dir, sizeof(dir), "visierd-policy");
        snprintf(conf, sizeof(conf), "%s/c.conf", dir);
        snprintf(key, sizeof(key), "%s/k", dir);
        harness_write_file(key, "secret-value", 0600);
        {
                char text[1024];

                snprintf(text, sizeof(text),
                         "[visier]\nbase_url = https://x.api.visier.io\nusername = u\napikey_file = %s\npassword_file = %s\n"
                         "[policy]\nallow = GET /v1/auth/oauth2/userinfo, GET /v1/admin/capabilities\n",
                         key, key);
                harness_write_file(conf, text, 0644);
        }
        argv[0] = getenv("VISIERD_BIN");
        argv[1] = "--check-config";
        argv[2] = "--config";
        argv[3] = conf;
        argv[4] = NULL;
        ck_assert_int_ne(harness_run(argv, &out), 0);
        ck_assert_msg(strstr(out, "[policy] allow: 'GET /v1/admin/capabilities' is not \"METHOD PATH\" of an operation "
                                  "visierd denies"),
                      "--check-config said: %s", out);
        free(out);
        harness_rmtree(dir);
}
END_TEST

START_TEST(test_client_credentials_never_forwarded) {
        const char *stale[] = {
                "apikey: client-supplied-key",
                "Cookie: VisierASIDToken=client-token; session=abc",
                NULL,
        };
        const char *stale_bearer[] = { "Authorization: Bearer client-bearer", NULL };
        char *session, cookie[128], bearer[128];
        const char *with_cookie[] = { "apikey: client-supplied-key", cookie, "TargetTenantID: WFF_j1r", NULL };
        const char *with_bearer[] = { "apikey: client-supplied-key", bearer, NULL };
        HttpResult r;
        char *u;

        start_all(NULL, NULL);
        u = visierd_url(&vd, "/v1/admin/capabilities");
        /* A token visierd did not hand out is refused (the client signs in again), and
         * nothing reaches Visier. */
        http_request("GET", u, stale, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 401);
        http_result_done(&r);
        http_request("GET", u, stale_bearer, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 401);
        http_result_done(&r);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 0);

        /* A local session, as cookie or bearer, with the client's own apikey beside it. */
        session = visierd_signin(&vd, "any-user", "any-password");
        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s; session=abc", session);
        snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", session);
        for (int i = 0; i < 3; i++) {
                http_request("GET", u, i == 2 ? with_bearer : with_cookie, NULL, 10000, &r);
                ck_assert_int_eq(r.status, 200);
                http_result_done(&r);
        }
        /* The sim saw only visierd's own apikey and token on every call. */
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 3);
        ck_assert_int_eq(sim_counter(&sim, "bad_apikey"), 0);
        ck_assert_int_eq(sim_counter(&sim, "bad_token"), 0);
        ck_assert_int_eq(sim_counter(&sim, "authorization_headers"), 0);
        ck_assert_int_eq(sim_counter(&sim, "foreign_cookies"), 0);
        free(session);
        free(u);
        stop_all();
}
END_TEST

START_TEST(test_revoked_token_recovers) {
        HttpResult r;
        json_t *j;
        char *u;

        start_all(NULL, NULL);
        u = visierd_url(&vd, "/v1/admin/content-packages");
        http_request("GET", u, NULL, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);
        ck_assert_int_eq(sim_counter(&sim, "logins"), 1);

        j = sim_control_post(&sim, "/_sim/revoke-tokens", NULL);
        ck_assert_int_ge(json_integer_value(json_object_get(j, "revoked")), 1);
        json_decref(j);

        http_request("GET", u, NULL, NULL, 10000, &r);
        ck_assert_msg(r.status == 200, "after revocation: %ld %s", r.status, r.body);
        http_result_done(&r);
        ck_assert_int_eq(sim_counter(&sim, "logins"), 2);
        ck_assert_int_eq(sim_counter(&sim, "bad_token"), 1);
        free(u);
        stop_all();
}
END_TEST

/* visierd's own 429 (the budget has no call before request_timeout) says in Retry-After how
 * long the budget really stays empty: with the hour's budget spent, until the hour's first
 * place comes back. */
START_TEST(test_own_429_retry_after) {
        char req[256], *a, *ra;
        long retry;
        int i;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, "request_timeout = 1\nrate_limit_minute = 3\nrate_limit_hour = 3", NULL);
        visierd_wait_ready(&vd);
        snprintf(req, sizeof(req), "GET /v1/admin/capabilities HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n",
                 vd.port);
        /* The login took one call of the hour's three; two reads take the rest. */
        for (i = 0; i < 2; i++) {
                a = harness_raw_exchange(vd.port, req, 10);
                ck_assert_msg(strncmp(a, "HTTP/1.1 200 ", 13) == 0, "read %d:\n%s", i, a);
                free(a);
        }
        a = harness_raw_exchange(vd.port, req, 10);
        ck_assert_msg(strncmp(a, "HTTP/1.1 429 Too Many Requests\r\n", 32) == 0, "answer:\n%s", a);
        ra = strstr(a, "\r\nRetry-After: ");
        ck_assert_ptr_nonnull(ra);
        retry = strtol(ra + 15, NULL, 10);
        /* The hour's first place comes back an hour and the budget's 2 s of slack after the
         * login (up to a slot of 5.7 s late), not with the minute's. */
        ck_assert_msg(retry > 3590 && retry <= 3610, "Retry-After: %ld", retry);
        ck_assert_ptr_nonnull(strstr(a, "\"code\":\"TooManyRequests\""));
        free(a);
}
END_TEST

START_TEST(test_429_is_waited_out) {
        HttpResult r;
        json_t *j;
        char *u;

        start_all(NULL, NULL);
        j = sim_control_post(&sim, "/_sim/faults", "{\"next_throttles\":1,\"retry_after\":1}");
        json_decref(j);
        u = visierd_url(&vd, "/v1/admin/capabilities");
        http_request("GET", u, NULL, NULL, 20000, &r);
        ck_assert_msg(r.status == 200, "after a 429: %ld %s", r.status, r.body);
        http_result_done(&r);
        ck_assert_int_eq(sim_counter(&sim, "throttles_injected"), 1);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 2);
        free(u);
        stop_all();
}
END_TEST

START_TEST(test_5xx_and_drops_are_retried) {
        HttpResult r;
        json_t *j;
        char *u;

        start_all(NULL, "max_retries = 3");
        j = sim_control_post(&sim, "/_sim/faults", "{\"next_errors\":1,\"next_drops\":1}");
        json_decref(j);
        u = visierd_url(&vd, "/v1/admin/capabilities");
        http_request("GET", u, NULL, NULL, 20000, &r);
        ck_assert_msg(r.status == 200, "after a 503 and a drop: %ld %s", r.status, r.body);
        http_result_done(&r);
        ck_assert_int_eq(sim_counter(&sim, "errors_injected") + sim_counter(&sim, "drops_injected"), 2);
        free(u);
        stop_all();
}
END_TEST

START_TEST(test_unreachable_and_slow_visier) {
        usec_t start, took;
        long status;
        json_t *j, *faults;
        char *u;

        start_all(NULL, "request_timeout = 2\nconnect_timeout = 1\nmax_retries = 1");
        u = visierd_url(&vd, "/v1/admin/capabilities");

        /* Slower than the request timeout: 504 within the timeout (plus scheduling slack). */
        faults = sim_control_post(&sim, "/_sim/faults", "{\"latency_ms\":4000}");
        json_decref(faults);
        start = clock_now();
        j = http_get_json(u, &status);
        took = clock_now() - start;
        ck_assert_int_eq(status, 504);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "GatewayTimeout");
        ck_assert_msg(took < 3500 * USEC_PER_MSEC, "504 took %llu ms", (unsigned long long) (took / 1000));
        json_decref(j);

        /* Gone altogether: 502 naming the problem. */
        sim_stop(&sim);
        start = clock_now();
        j = http_get_json(u, &status);
        took = clock_now() - start;
        ck_assert_int_eq(status, 502);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "BadGateway");
        ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "localizedMessage")), "connect"));
        ck_assert_msg(took < 3500 * USEC_PER_MSEC, "502 took %llu ms", (unsigned long long) (took / 1000));
        json_decref(j);
        free(u);
        stop_all();
}
END_TEST

START_TEST(test_no_token_gives_503_and_readyz_says_why) {
        char bad[160];
        long status;
        json_t *j;
        char *u;

        sim_start(&sim, NULL);
        /* visierd gets a password the sim does not accept. */
        snprintf(bad, sizeof(bad), "%s/wrong-password", sim.dir);
        harness_write_file(bad, "not-the-password", 0600);
        {
                char extra[320];
                Sim wrong = sim;
                snprintf(wrong.password_file, sizeof(wrong.password_file), "%s", bad);
                snprintf(extra, sizeof(extra), "request_timeout = 3");
                visierd_start(&vd, &wrong, extra, NULL);
        }
        u = visierd_url(&vd, "/readyz");
        for (int i = 0; i < 500 && sim_counter(&sim, "login_failures") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        /* The sim counts the refusal as it answers; visierd records it a moment later. */
        for (int i = 0;; i++) {
                char *text;
                bool says;

                j = http_get_json(u, &status);
                ck_assert_int_eq(status, 503);
                text = json_dumps(j, 0);
                says = strstr(text, "login refused by Visier: HTTP 401") != NULL;
                ck_assert_msg(says || i < 500, "/readyz never named the refused login: %s", text);
                free(text);
                if (says)
                        break;
                json_decref(j);
                clock_sleep(10 * USEC_PER_MSEC); /* probe interval */
        }
        json_decref(j);
        free(u);

        u = visierd_url(&vd, "/v1/admin/capabilities");
        j = http_get_json(u, &status);
        ck_assert_int_eq(status, 503);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "ServiceUnavailable");
        json_decref(j);
        free(u);
        stop_all();

        /* The failed logins were logged, without either password or the API key. */
        u = harness_read_file(vd.log);
        ck_assert_ptr_nonnull(strstr(u, "login to Visier failed"));
        ck_assert_msg(!strstr(u, "not-the-password") && !strstr(u, sim.password) && !strstr(u, sim.apikey),
                      "visierd's log contains a secret");
        free(u);
}
END_TEST

/* Fails if text holds the needle. */
static void assert_absent(const char *what, const char *text, const char *needle) {
        ck_assert_msg(!strstr(text, needle), "%s contains a secret", what);
}

START_TEST(test_no_secrets_in_logs_or_status) {
        const char *args[] = { "--token-ttl", "3", "--rate-minute", "0", "--rate-hour", "0", NULL };
        char *log, *sim_log, *status_body, *u, *direct_token;
        HttpResult r;
        regex_t hex;
        json_t *j;

        setenv("VISIERD_LOG_LEVEL", "debug", 1);
        start_all(args, "token_lifetime = 3\nrefresh_margin = 1\nrequest_timeout = 3\nmax_retries = 1");
        direct_token = sim_login(&sim);

        /* Walk through logins, refreshes, a revocation, a 429, 5xx, a timeout and a failure. */
        u = visierd_url(&vd, "/v1/admin/permissions?includeDetails=true");
        for (int i = 0; i < 5; i++) {
                http_request("GET", u, NULL, NULL, 10000, &r);
                http_result_done(&r);
        }
        json_decref(sim_control_post(&sim, "/_sim/revoke-tokens", NULL));
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"next_throttles\":1,\"next_errors\":1}"));
        http_request("GET", u, NULL, NULL, 10000, &r);
        http_result_done(&r);
        for (int i = 0; i < 300 && sim_counter(&sim, "logins") < 4; i++) /* a refresh or two */
                clock_sleep(10 * USEC_PER_MSEC);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"latency_ms\":5000}"));
        http_request("GET", u, NULL, NULL, 10000, &r);
        http_result_done(&r);
        json_decref(sim_control_post(&sim, "/_sim/reset", NULL));
        free(u);

        u = visierd_url(&vd, "/status");
        http_request("GET", u, NULL, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        status_body = strdup(r.body);
        http_result_done(&r);
        j = json_loads(status_body, 0, NULL);
        ck_assert_ptr_nonnull(j);
        ck_assert_ptr_nonnull(json_object_get(j, "token"));
        ck_assert_ptr_nonnull(json_object_get(json_object_get(j, "rate_budget"), "minute_remaining"));
        json_decref(j);
        free(u);

        stop_all();
        unsetenv("VISIERD_LOG_LEVEL");

        log = harness_read_file(vd.log);
        sim_log = harness_read_file(sim.log);
        ck_assert_ptr_nonnull(log);
        ck_assert_ptr_nonnull(strstr(log, "logged in to Visier"));
        ck_assert_ptr_nonnull(strstr(log, "failed with 504"));
        for (int k = 0; k < 3; k++) {
                const char *text = k == 0 ? log : k == 1 ? sim_log : status_body;
                const char *what = k == 0 ? "visierd's log" : k == 1 ? "visier-sim's log" : "/status";
                assert_absent(what, text, sim.password);
                assert_absent(what, text, sim.apikey);
                assert_absent(what, text, direct_token);
        }
        /* Tokens are long hex or base64 strings: nothing of the kind appears in visierd's log. */
        ck_assert_int_eq(regcomp(&hex, "[0-9A-Za-z+=_-]{32,}", REG_EXTENDED | REG_NOSUB), 0);
        ck_assert_msg(regexec(&hex, log, 0, NULL, 0) != 0, "visierd's log holds a token-like string:\n%s", log);
        regfree(&hex);
        free(log);
        free(sim_log);
        free(status_body);
        free(direct_token);
}
END_TEST

static Suite *proxy_suite(void) {
        Suite *s = suite_create("proxy");
        TCase *tc = tcase_create("integration");

        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_reads_match_visier);
        tcase_add_test(tc, test_local_errors_use_status_shape);
        tcase_add_test(tc, test_client_credentials_never_forwarded);
        tcase_add_test(tc, test_path_tricks_refused);
        tcase_add_test(tc, test_bad_bytes_answered_as_status);
        tcase_add_test(tc, test_upstream_request_bytes);
        tcase_add_test(tc, test_policy_table_routes);
        tcase_add_test(tc, test_policy_allow);
        tcase_add_test(tc, test_revoked_token_recovers);
        tcase_add_test(tc, test_429_is_waited_out);
        tcase_add_test(tc, test_own_429_retry_after);
        tcase_add_test(tc, test_5xx_and_drops_are_retried);
        tcase_add_test(tc, test_unreachable_and_slow_visier);
        tcase_add_test(tc, test_no_token_gives_503_and_readyz_says_why);
        tcase_add_test(tc, test_no_secrets_in_logs_or_status);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        sr = srunner_create(proxy_suite());
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
