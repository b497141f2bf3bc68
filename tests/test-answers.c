/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes answered the way Visier answers them (../shared/visier-api/CLIENTS.md: the SDK turns
 * any 2xx but 200 into None): by default the answer is held until the job ends and is
 * Visier's own answer for exactly that request's items, naming the job in Content-Location;
 * Prefer: respond-async gives the 202 with the job at once; a job not done within answer_wait
 * gets the 202, never a dropped connection. Answers are read off the socket, headers and all.
 */
#include <arpa/inet.h>
#include <check.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

static Sim sim;
static Visierd vd;

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

/* One request on its own connection (Connection: close); the whole answer as sent, with the
 * Date header's value blanked so that the rest can be compared byte for byte. */
static char *raw_exchange(const char *method, const char *path, const char *extra_headers, const char *body,
                          unsigned timeout_s) {
        char *req, *out, *date;

        ck_assert_int_ge(asprintf(&req,
                                  "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n"
                                  "Content-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n%s",
                                  method, path, vd.port, extra_headers ? extra_headers : "", strlen(body), body),
                         0);
        out = harness_raw_exchange(vd.port, req, timeout_s);
        free(req);
        date = strstr(out, "\r\nDate: ");
        if (date)
                for (char *p = date + 8; *p && *p != '\r'; p++)
                        *p = 'D';
        return out;
}

static const char *body_of(const char *answer) {
        const char *b = strstr(answer, "\r\n\r\n");

        ck_assert_ptr_nonnull(b);
        return b + 4;
}

/* The head up to (not including) Content-Length, which depends on the IDs the sim made. */
static void assert_head(const char *answer, const char *expected) {
        ck_assert_msg(strncmp(answer, expected, strlen(expected)) == 0, "answer:\n%s\nexpected to begin with:\n%s", answer,
                      expected);
}

#define DATE "Date: DDDDDDDDDDDDDDDDDDDDDDDDDDDDD\r\n" /* as raw_exchange() blanks it */

START_TEST(test_create_answered_as_visier) {
        char *a, expected[4096], head[256];
        json_t *j, *s;
        const char *id1, *id2;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[jobs]\nanswer_wait = 30\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        a = raw_exchange("POST", "/v1/admin/permissions", NULL,
                         "{\"permissions\":[{\"displayName\":\"p1\"},{\"displayName\":\"p2\",\"correlationId\":\"mine-1\"}]}",
                         30);
        assert_head(a, "HTTP/1.1 200 OK\r\n" DATE "Connection: close\r\nContent-Type: application/json\r\n"
                       "Content-Location: /jobs/1\r\nContent-Length: ");
        /* Visier's PermissionBulkOperationResponseDTO for these two items: the IDs Visier gave,
         * the correlationId the request had, and not the one visierd added to p1. */
        j = json_loads(body_of(a), 0, NULL);
        ck_assert_ptr_nonnull(j);
        s = json_object_get(j, "successes");
        id1 = json_string_value(json_object_get(json_array_get(s, 0), "permissionId"));
        id2 = json_string_value(json_object_get(json_array_get(s, 1), "permissionId"));
        ck_assert_ptr_nonnull(id1);
        ck_assert_ptr_nonnull(id2);
        snprintf(expected, sizeof(expected),
                 "{\"successes\":[{\"permissionId\":\"%s\",\"displayName\":\"p1\"},{\"permissionId\":\"%s\","
                 "\"displayName\":\"p2\",\"correlationId\":\"mine-1\"}],\"failures\":[]}",
                 id1, id2);
        ck_assert_str_eq(body_of(a), expected);
        snprintf(head, sizeof(head), "Content-Length: %zu\r\n\r\n", strlen(expected));
        ck_assert_ptr_nonnull(strstr(a, head));
        json_decref(j);
        free(a);

        /* The job stays visible where Content-Location said. */
        {
                long st;

                j = visierd_request_json(&vd, "GET", "/jobs/1", NULL, NULL, &st);
                ck_assert_int_eq(st, 200);
                ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded");
                json_decref(j);
        }

        /* A change Visier refuses: still its 200 with the failure, as Visier answers. */
        a = raw_exchange("PUT", "/v1/admin/permissions", NULL,
                         "{\"permissions\":[{\"permissionId\":\"nope-123\",\"displayName\":\"x\"}]}", 30);
        assert_head(a, "HTTP/1.1 200 OK\r\n" DATE "Connection: close\r\nContent-Type: application/json\r\n"
                       "Content-Location: /jobs/2\r\nContent-Length: ");
        j = json_loads(body_of(a), 0, NULL);
        ck_assert_ptr_nonnull(j);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "successes")), 0);
        s = json_array_get(json_object_get(j, "failures"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(s, "permissionId")), "nope-123");
        ck_assert_str_eq(json_string_value(json_object_get(s, "displayName")), "x");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(s, "error"), "message")),
                         "permission nope-123 not found");
        json_decref(j);
        free(a);
}
END_TEST

START_TEST(test_assignment_answered_as_visier) {
        char *a;
        json_t *j, *t;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[jobs]\nanswer_wait = 30\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        a = raw_exchange("PUT", "/v1/admin/permissions/users", NULL,
                         "{\"permissions\":[{\"permissionId\":\"3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71\",\"userIds\":[\"u-1\"]}]}",
                         30);
        assert_head(a, "HTTP/1.1 200 OK\r\n" DATE "Connection: close\r\nContent-Type: application/json\r\n"
                       "Content-Location: /jobs/1\r\nContent-Length: ");
        /* Visier's answer: one entry per tenant, tenantCode a string (never null). */
        j = json_loads(body_of(a), 0, NULL);
        ck_assert_ptr_nonnull(j);
        ck_assert_uint_eq(json_object_size(j), 1);
        t = json_array_get(json_object_get(j, "tenants"), 0);
        ck_assert(json_is_string(json_object_get(t, "tenantCode")));
        ck_assert(json_is_string(json_object_get(t, "status")));
        {
                json_t *entry = json_array_get(json_object_get(t, "permissions"), 0);

                ck_assert_str_eq(json_string_value(json_object_get(json_object_get(entry, "permission"), "permissionId")),
                                 "3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71");
        }
        json_decref(j);
        free(a);
}
END_TEST

/* Prefer: respond-async: the 202 with the job at once, saying the preference was applied. */
START_TEST(test_respond_async) {
        char *a;
        json_t *j;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[jobs]\nanswer_wait = 30\n");
        visierd_wait_ready(&vd);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":5000}"));
        a = raw_exchange("POST", "/v1/admin/permissions", "Prefer: respond-async\r\n",
                         "{\"permissions\":[{\"displayName\":\"later\"}]}", 3);
        assert_head(a, "HTTP/1.1 202 Accepted\r\n" DATE "Connection: close\r\nContent-Type: application/json\r\n"
                       "Location: /jobs/1\r\nPreference-Applied: respond-async\r\nContent-Length: ");
        j = json_loads(body_of(a), 0, NULL);
        ck_assert_ptr_nonnull(j);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), 1);
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "queued");
        json_decref(j);
        free(a);
        /* Visier's own preferences beside visierd's do not change that. */
        a = raw_exchange("POST", "/v1/admin/permissions", "Prefer: nvLock=none, respond-async\r\n",
                         "{\"permissions\":[{\"displayName\":\"later-2\"}]}", 3);
        assert_head(a, "HTTP/1.1 202 Accepted\r\n");
        free(a);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":0}"));
}
END_TEST

/* A job not done within answer_wait: the 202 with the job, then the job ends on its own. */
START_TEST(test_answer_wait_bound) {
        char *a;
        json_t *j;
        long st;
        int i;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[jobs]\nanswer_wait = 1\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":4000}"));
        a = raw_exchange("POST", "/v1/admin/permissions", NULL, "{\"permissions\":[{\"displayName\":\"slow\"}]}", 20);
        assert_head(a, "HTTP/1.1 202 Accepted\r\n" DATE "Connection: close\r\nContent-Type: application/json\r\n"
                       "Location: /jobs/1\r\nContent-Length: ");
        free(a);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":0}"));
        for (i = 0; i < 600; i++) {
                j = visierd_request_json(&vd, "GET", "/jobs/1", NULL, NULL, &st);
                if (streq(json_string_value(json_object_get(j, "state")), "succeeded")) {
                        json_decref(j);
                        break;
                }
                json_decref(j);
                usleep(50000); /* probing, bounded */
        }
        ck_assert_msg(i < 600, "the job never ended");
}
END_TEST

/* The headers Visier defines for a write travel with its job, exactly as the write call
 * sends them (the sim's request log): FastMode on a create, booleans as true/false;
 * SessionBasedPermissions and SessionRepoId on an assignment, and not FastMode, which Visier
 * does not define there. */
START_TEST(test_write_headers_sent) {
        char expected[2048], *got, *a;
        json_t *log, *e;
        size_t i;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[jobs]\nanswer_wait = 30\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        a = raw_exchange("POST", "/v1/admin/permissions", "FastMode: True\r\nNonVersioned: True\r\n",
                         "{\"permissions\":[{\"displayName\":\"f1\"}]}", 30);
        assert_head(a, "HTTP/1.1 200 OK\r\n");
        free(a);
        a = raw_exchange("PUT", "/v1/admin/permissions/users",
                         "SessionBasedPermissions: False\r\nSessionRepoId: repo-1\r\nFastMode: true\r\n",
                         "{\"permissions\":[{\"permissionId\":\"3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71\",\"userIds\":[\"u-001\"]}]}",
                         30);
        assert_head(a, "HTTP/1.1 200 OK\r\n");
        free(a);

        log = sim_control_get(&sim, "/_sim/requests");
        ck_assert_uint_eq(json_array_size(json_object_get(log, "requests")), 2);
        json_array_foreach(json_object_get(log, "requests"), i, e) {
                const char *body = json_string_value(json_object_get(e, "body"));

                got = json_dumps(json_object_get(e, "headers"), JSON_COMPACT);
                if (i == 0) {
                        ck_assert_str_eq(json_string_value(json_object_get(e, "target")), "/v1/admin/permissions");
                        /* visierd's correlationId: vd- and 20 hex digits */
                        ck_assert_uint_eq(strlen(body), strlen("{\"permissions\":[{\"displayName\":\"f1\",\"correlationId\":"
                                                               "\"vd-00000000000000000000\"}]}"));
                        snprintf(expected, sizeof(expected),
                                 "[[\"Host\",\"127.0.0.1:%u\"],[\"User-Agent\",\"visierd/" PACKAGE_VERSION "\"],"
                                 "[\"NonVersioned\",\"true\"],[\"FastMode\",\"true\"],[\"Content-Type\",\"application/json\"],"
                                 "[\"Accept\",\"application/json\"],[\"apikey\",\"<apikey>\"],"
                                 "[\"Cookie\",\"VisierASIDToken=<token>\"],[\"Content-Length\",\"%zu\"]]",
                                 sim.port, strlen(body));
                } else {
                        ck_assert_str_eq(json_string_value(json_object_get(e, "target")), "/v1/admin/permissions/users");
                        ck_assert_str_eq(body, "{\"permissions\":[{\"permissionId\":\"3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71\","
                                               "\"userIds\":[\"u-001\"]}]}");
                        snprintf(expected, sizeof(expected),
                                 "[[\"Host\",\"127.0.0.1:%u\"],[\"User-Agent\",\"visierd/" PACKAGE_VERSION "\"],"
                                 "[\"SessionBasedPermissions\",\"false\"],[\"SessionRepoId\",\"repo-1\"],"
                                 "[\"Content-Type\",\"application/json\"],[\"Accept\",\"application/json\"],"
                                 "[\"apikey\",\"<apikey>\"],[\"Cookie\",\"VisierASIDToken=<token>\"],"
                                 "[\"Content-Length\",\"%zu\"]]",
                                 sim.port, strlen(body));
                }
                ck_assert_str_eq(got, expected);
                free(got);
        }
        json_decref(log);

        /* A value that is not a boolean is refused before anything is queued. */
        a = raw_exchange("POST", "/v1/admin/permissions", "FastMode: yes\r\n", "{\"permissions\":[{\"displayName\":\"f2\"}]}",
                         30);
        assert_head(a, "HTTP/1.1 400 Bad Request\r\n");
        ck_assert_str_eq(body_of(a), "{\"code\":\"BadRequest\",\"message\":\"FastMode: must be true or false\","
                                     "\"localizedMessage\":\"FastMode: must be true or false\",\"userError\":true}");
        free(a);
}
END_TEST

typedef struct LaneCall {
        const char *method, *path, *body;
        HttpResult r;
} LaneCall;

static void *lane_call(void *arg) {
        LaneCall *c = arg;
        char *u = visierd_url(&vd, c->path);

        http_request(c->method, u, NULL, c->body, 60000, &c->r);
        free(u);
        return NULL;
}

/* A users-to-group assignment, a permissions-to-group assignment and a project's
 * commitAndPublish go through the publisher's one lane with permission writes, all sent at
 * once by clients: Visier never has two publishes in flight (the sim's counters), and each
 * client gets Visier's own answer. */
START_TEST(test_other_writes_share_the_lane) {
        LaneCall calls[] = {
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"lane-1\"}]}" },
                { "PUT", "/v1/admin/user-groups/users",
                  "{\"userGroups\":[{\"userGroupId\":\"5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a51\",\"userIds\":[\"u-001\"]}]}" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"lane-2\"}]}" },
                { "PUT", "/v1/admin/user-groups/permissions",
                  "{\"userGroups\":[{\"userGroupId\":\"5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a52\",\"permissionsIds\":"
                  "[\"3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71\"]}]}" },
                { "POST", NULL, "{\"operation\":\"commitAndPublish\"}" },
                { "PUT", "/v1/admin/permissions/users",
                  "{\"permissions\":[{\"permissionId\":\"3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71\",\"userIds\":[\"u-002\"]}]}" },
        };
        pthread_t th[ELEMENTSOF(calls)];
        char project_path[160];
        json_t *j, *counters;
        long st;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[jobs]\nanswer_wait = 60\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        /* A draft project, made through visierd (a write: a call job too). */
        j = visierd_request_json(&vd, "POST", "/v1/admin/projects", "{\"name\":\"lane\"}", NULL, &st);
        ck_assert_int_eq(st, 200);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "id")));
        snprintf(project_path, sizeof(project_path), "/v1/admin/projects/%s", json_string_value(json_object_get(j, "id")));
        json_decref(j);
        calls[4].path = project_path;

        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":300}"));
        for (size_t i = 0; i < ELEMENTSOF(calls); i++)
                ck_assert_int_eq(pthread_create(&th[i], NULL, lane_call, &calls[i]), 0);
        for (size_t i = 0; i < ELEMENTSOF(calls); i++) {
                pthread_join(th[i], NULL);
                ck_assert_msg(calls[i].r.status == 200, "%s %s: %ld %s", calls[i].method, calls[i].path, calls[i].r.status,
                              calls[i].r.body);
        }
        /* Visier's own answers (admin.SecurityAssignmentResponseDTO, admin.PermissionsToUserGroupForTenantDTO). */
        ck_assert_str_eq(calls[1].r.body,
                         "{\"tenants\":[{\"tenantCode\":\"WFF_j1a\",\"assignments\":[{\"id\":"
                         "\"5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a51\",\"name\":\"HR Analysts\",\"users\":[{\"userId\":"
                         "\"u-001\",\"username\":\"u-001@example.com\"}]}],\"status\":\"Succeed\"}]}");
        ck_assert_str_eq(calls[3].r.body,
                         "{\"tenantCode\":\"WFF_j1a\",\"userGroups\":[{\"userGroupId\":"
                         "\"5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a52\",\"displayName\":\"Recruiting\",\"permissions\":["
                         "{\"permissionId\":\"c25d8f3a-6e1b-4a7c-9d0e-5f4a3b2c1d93\",\"displayName\":\"Recruiter\"},"
                         "{\"permissionId\":\"3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71\",\"displayName\":\"HR Analyst\"}]}],"
                         "\"status\":\"Succeed\"}");
        for (size_t i = 0; i < ELEMENTSOF(calls); i++)
                http_result_done(&calls[i].r);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":0}"));

        counters = sim_control_get(&sim, "/_sim/counters");
        ck_assert_int_eq(json_integer_value(json_object_get(counters, "publish_overlaps")), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(counters, "writes_in_flight_max")), 1);
        json_decref(counters);

        /* The exact calls visierd sent for the permissions-to-group assignment and the commit. */
        {
                json_t *log = sim_control_get(&sim, "/_sim/requests"), *e;
                char expected[1024], *got;
                bool seen_groups = false, seen_commit = false;
                size_t i;

                json_array_foreach(json_object_get(log, "requests"), i, e) {
                        const char *target = json_string_value(json_object_get(e, "target"));
                        const char *body = json_string_value(json_object_get(e, "body"));

                        if (streq(target, "/v1/admin/user-groups/permissions")) {
                                json_t *b = json_string(calls[3].body);
                                char *body_json = json_dumps(b, JSON_ENCODE_ANY); /* as the log writes it */

                                got = json_dumps(e, JSON_COMPACT);
                                snprintf(expected, sizeof(expected),
                                         "{\"method\":\"PUT\",\"target\":\"/v1/admin/user-groups/permissions\",\"headers\":"
                                         "[[\"Host\",\"127.0.0.1:%u\"],[\"User-Agent\",\"visierd/" PACKAGE_VERSION "\"],"
                                         "[\"Content-Type\",\"application/json\"],[\"Accept\",\"application/json\"],"
                                         "[\"apikey\",\"<apikey>\"],[\"Cookie\",\"VisierASIDToken=<token>\"],"
                                         "[\"Content-Length\",\"%zu\"]],\"body\":%s}",
                                         sim.port, strlen(calls[3].body), body_json);
                                ck_assert_str_eq(got, expected);
                                free(got);
                                free(body_json);
                                json_decref(b);
                                seen_groups = true;
                        }
                        if (streq(target, project_path)) {
                                ck_assert_str_eq(json_string_value(json_object_get(e, "method")), "POST");
                                ck_assert_str_eq(body, "{\"operation\":\"commitAndPublish\"}");
                                seen_commit = true;
                        }
                }
                ck_assert(seen_groups && seen_commit);
                json_decref(log);
        }
}
END_TEST

/* A call job refused before Visier applied anything (a 429 outlasting request_timeout) is
 * sent again later, never finished as if answered; Visier sees the first job's two sends,
 * then the second job's (the order itself is check-store's test_call_jobs_keep_their_place). */
static long long submit_async(const char *method, const char *path, const char *body) {
        const char *h[] = { "Prefer: respond-async", "Content-Type: application/json", NULL };
        long long id;
        json_t *j;
        long st;

        j = visierd_request_json(&vd, method, path, body, h, &st);
        ck_assert_int_eq(st, 202);
        id = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        return id;
}

static json_t *wait_job_final(long long id) {
        char path[64];

        snprintf(path, sizeof(path), "/jobs/%lld", id);
        for (int i = 0; i < 600; i++) {
                long st;
                json_t *j = visierd_request_json(&vd, "GET", path, NULL, NULL, &st);
                const char *state = json_string_value(json_object_get(j, "state"));

                if (state && (streq(state, "succeeded") || streq(state, "failed")))
                        return j;
                json_decref(j);
                usleep(50000); /* probing, bounded */
        }
        ck_abort_msg("job %lld never ended", id);
        return NULL;
}

START_TEST(test_call_job_retried_after_429) {
        const char *first = "{\"userGroups\":[{\"userGroupId\":\"g-9\",\"userIds\":[\"u-001\"]}]}";
        const char *second = "{\"userGroups\":[{\"userGroupId\":\"g-10\",\"userIds\":[\"u-002\"]}]}";
        const char *seen[4] = { NULL };
        json_t *log, *e, *j;
        long long a, b;
        size_t i, n = 0;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, "request_timeout = 1", "[jobs]\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"next_throttles\":1,\"retry_after\":3}"));
        a = submit_async("PUT", "/v1/admin/user-groups/users", first);
        b = submit_async("PUT", "/v1/admin/user-groups/users", second);
        j = wait_job_final(a);
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded");
        json_decref(j);
        j = wait_job_final(b);
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded");
        json_decref(j);

        log = sim_control_get(&sim, "/_sim/requests");
        json_array_foreach(json_object_get(log, "requests"), i, e)
                if (streq(json_string_value(json_object_get(e, "target")), "/v1/admin/user-groups/users")) {
                        ck_assert_uint_lt(n, 4);
                        seen[n++] = json_string_value(json_object_get(e, "body"));
                }
        ck_assert_uint_eq(n, 3); /* the first job's 429 and its answered send, then the second job */
        ck_assert_str_eq(seen[0], first);
        ck_assert_str_eq(seen[1], first);
        ck_assert_str_eq(seen[2], second);
        json_decref(log);
}
END_TEST

/* An Idempotency-Key names one request, path included: the commit of a second project under
 * the first commit's key (the body is the same) gets 422 and is not sent, where it used to be
 * answered with the first project's commit, which would tell the client that a project was
 * published that never was. The first commit's own repeat still gets its job's answer. */
static char *make_project(const char *name) {
        char body[64], *path;
        json_t *j;
        long st;

        snprintf(body, sizeof(body), "{\"name\":\"%s\"}", name);
        j = visierd_request_json(&vd, "POST", "/v1/admin/projects", body, NULL, &st);
        ck_assert_int_eq(st, 200);
        ck_assert_int_ge(asprintf(&path, "/v1/admin/projects/%s", json_string_value(json_object_get(j, "id"))), 0);
        json_decref(j);
        return path;
}

START_TEST(test_idempotency_key_names_the_path) {
        static const char commit[] = "{\"operation\":\"commitAndPublish\"}";
        static const char expected_422[] =
                "{\"code\":\"UnprocessableEntity\",\"message\":\"Idempotency-Key 'commit-1' was already used with a "
                "different request\",\"localizedMessage\":\"Idempotency-Key 'commit-1' was already used with a different "
                "request\",\"userError\":true}";
        char *p1, *p2, *first, *again, *other;
        size_t commits_p1 = 0, commits_p2 = 0, i;
        json_t *log, *e;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[jobs]\nanswer_wait = 60\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        p1 = make_project("idem-1");
        p2 = make_project("idem-2");
        first = raw_exchange("POST", p1, "Idempotency-Key: commit-1\r\n", commit, 60);
        assert_head(first, "HTTP/1.1 200 OK\r\n");
        again = raw_exchange("POST", p1, "Idempotency-Key: commit-1\r\n", commit, 60);
        ck_assert_str_eq(body_of(again), body_of(first));
        other = raw_exchange("POST", p2, "Idempotency-Key: commit-1\r\n", commit, 60);
        assert_head(other, "HTTP/1.1 422 Unprocessable Content\r\n" DATE "Connection: close\r\nContent-Type: application/json\r\n");
        ck_assert_str_eq(body_of(other), expected_422);

        log = sim_control_get(&sim, "/_sim/requests");
        json_array_foreach(json_object_get(log, "requests"), i, e) {
                const char *target = json_string_value(json_object_get(e, "target"));

                commits_p1 += streq(target, p1);
                commits_p2 += streq(target, p2);
        }
        ck_assert_uint_eq(commits_p1, 1);
        ck_assert_uint_eq(commits_p2, 0);
        json_decref(log);
        free(first);
        free(again);
        free(other);
        free(p1);
        free(p2);
}
END_TEST

int main(void) {
        Suite *s = suite_create("answers");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_create_answered_as_visier);
        tcase_add_test(tc, test_assignment_answered_as_visier);
        tcase_add_test(tc, test_respond_async);
        tcase_add_test(tc, test_answer_wait_bound);
        tcase_add_test(tc, test_write_headers_sent);
        tcase_add_test(tc, test_other_writes_share_the_lane);
        tcase_add_test(tc, test_call_job_retried_after_429);
        tcase_add_test(tc, test_idempotency_key_names_the_path);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
