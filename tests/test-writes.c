/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: permission writes through visierd's job queue and publisher, against the
 * real visier-sim. Nothing lost, nothing applied twice, never two publishes at once, bulk
 * calls instead of one call per change, and every bad body refused with the JSON path.
 */
#include <check.h>
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

#define JOB_WAIT_SEC 90

static Sim sim;
static Visierd vd;

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };
#define FAST_JOBS "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 5"

static void start_all(const char *jobs_conf) {
        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, FAST_JOBS, jobs_conf);
        visierd_wait_ready(&vd);
}

static void set_faults(const char *json) {
        json_decref(sim_control_post(&sim, "/_sim/faults", json));
}

/* Send a write; returns the HTTP status and the parsed body (caller decrefs). */
static json_t *write_req(const char *method, const char *path, const char *body, const char *const *headers,
                         long *ret_status) {
        return visierd_request_json(&vd, method, path, body, headers, ret_status);
}

static long long submit_create(const char *display_name, const char *extra_item_json) {
        char body[512];
        long status;
        json_t *j;
        long long id;

        snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s\"%s%s}]}", display_name,
                 extra_item_json ? "," : "", extra_item_json ? extra_item_json : "");
        j = write_req("POST", "/v1/admin/permissions", body, NULL, &status);
        ck_assert_msg(status == 202, "create answered %ld", status);
        id = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        return id;
}

static json_t *job(long long id) {
        return visierd_job(&vd, id);
}

static const char *job_state(json_t *j) {
        return json_string_value(json_object_get(j, "state"));
}

static void wait_queue_empty(void) {
        visierd_wait_drained(&vd, JOB_WAIT_SEC);
}

/* Does the JSON text of j contain needle? */
static bool json_has(json_t *j, const char *needle) {
        char *text = json_dumps(j, JSON_COMPACT);
        bool found = text && strstr(text, needle);

        free(text);
        return found;
}

/* ---- 2,000 creates from 20 clients ---- */

#define CLIENTS 20
#define PER_CLIENT 100

static atomic_int accepted;

static void *create_client(void *arg) {
        int c = (int) (intptr_t) arg;
        char *u = visierd_url(&vd, "/v1/admin/permissions");
        CURL *h = curl_easy_init();
        FILE *devnull = fopen("/dev/null", "we");

        struct curl_slist *json = curl_slist_append(NULL, "Content-Type: application/json");

        curl_easy_setopt(h, CURLOPT_URL, u);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, json);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, devnull);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
        for (int i = 0; i < PER_CLIENT; i++) {
                char body[128];
                long status = 0;

                snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"bulk-%02d-%03d\"}]}", c, i);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                if (curl_easy_perform(h) == CURLE_OK && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
                    status == 202)
                        atomic_fetch_add(&accepted, 1);
        }
        fclose(devnull);
        curl_easy_cleanup(h);
        curl_slist_free_all(json);
        free(u);
        return NULL;
}

START_TEST(test_2000_creates_few_calls) {
        pthread_t t[CLIENTS];
        json_t *perms, *st;
        long long calls, overlaps;
        long status;
        char *u;

        start_all("[jobs]\nbatch_delay_ms = 200");
        set_faults("{\"publish_ms\":2000}"); /* Visier takes seconds to publish a version */
        for (int c = 0; c < CLIENTS; c++)
                pthread_create(&t[c], NULL, create_client, (void *) (intptr_t) c);
        for (int c = 0; c < CLIENTS; c++)
                pthread_join(t[c], NULL);
        ck_assert_int_eq(atomic_load(&accepted), CLIENTS * PER_CLIENT);
        wait_queue_empty();

        calls = sim_counter(&sim, "write_calls");
        overlaps = sim_counter(&sim, "publish_overlaps");
        perms = sim_control_get(&sim, "/_sim/permissions");
        for (int c = 0; c < CLIENTS; c++)
                for (int i = 0; i < PER_CLIENT; i++) {
                        char name[32];
                        snprintf(name, sizeof(name), "bulk-%02d-%03d", c, i);
                        ck_assert_msg(sim_count_named(perms, name) == 1, "%s exists %d times", name,
                                      sim_count_named(perms, name));
                }
        json_decref(perms);
        u = visierd_url(&vd, "/status");
        st = http_get_json(u, &status);
        {
                char *text = json_dumps(json_object_get(st, "jobs"), JSON_COMPACT);
                fprintf(stderr, "2000 creates: %lld write calls, %lld overlaps, jobs %s\n", calls, overlaps, text);
                free(text);
        }
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(st, "jobs"), "succeeded")), 2000);
        json_decref(st);
        free(u);
        ck_assert_int_eq(overlaps, 0);
        ck_assert_int_le(calls, 5);
        ck_assert_int_ge(calls, 2);
}
END_TEST

/* ---- crashes and lost answers ---- */


/* Every item of the job succeeded and names the permission Visier created. */
static void assert_job_created(long long id) {
        json_t *j = job(id), *r;
        size_t i;

        ck_assert_msg(streq(job_state(j), "succeeded"), "job %lld is %s: %s", id, job_state(j),
                      json_dumps(j, JSON_COMPACT));
        json_array_foreach(json_object_get(j, "item_results"), i, r) {
                ck_assert_str_eq(json_string_value(json_object_get(r, "state")), "succeeded");
                ck_assert_ptr_nonnull(json_string_value(json_object_get(json_object_get(r, "result"), "permissionId")));
        }
        json_decref(j);
}

START_TEST(test_kill_during_create_call) {
        long long ids[5];
        json_t *perms;

        start_all("[jobs]\nbatch_delay_ms = 100");
        set_faults("{\"publish_ms\":3000}");
        for (int i = 0; i < 5; i++) {
                char name[32];
                snprintf(name, sizeof(name), "crash-%d", i);
                ids[i] = submit_create(name, NULL);
        }
        /* Kill visierd while visier-sim holds the create call open. */
        for (int i = 0; i < 400 && sim_counter(&sim, "write_calls") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 1);
        visierd_kill(&vd);
        set_faults("{\"publish_ms\":0}");
        /* Let the sim finish applying the call that lost its client. */
        for (int i = 0; i < 600 && sim_counter(&sim, "production_version") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);

        visierd_restart(&vd);
        wait_queue_empty();
        perms = sim_control_get(&sim, "/_sim/permissions");
        for (int i = 0; i < 5; i++) {
                char name[32];
                snprintf(name, sizeof(name), "crash-%d", i);
                ck_assert_msg(sim_count_named(perms, name) == 1, "%s exists %d times", name, sim_count_named(perms, name));
                assert_job_created(ids[i]);
        }
        json_decref(perms);
        ck_assert_int_eq(sim_counter(&sim, "publish_overlaps"), 0);
}
END_TEST

/* A delete cut short by a crash is in doubt: sent again, it finds the permission gone, and
 * that counts as done. */
START_TEST(test_kill_during_delete_call) {
        const char *pid = "c25d8f3a-6e1b-4a7c-9d0e-5f4a3b2c1d93";
        char body[128];
        long status;
        long long id;
        json_t *j;

        start_all("[jobs]\nbatch_delay_ms = 0");
        set_faults("{\"publish_ms\":3000}");
        snprintf(body, sizeof(body), "{\"permissionIds\":[\"%s\"]}", pid);
        j = write_req("DELETE", "/v1/admin/permissions", body, NULL, &status);
        ck_assert_int_eq(status, 202);
        id = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        for (int i = 0; i < 400 && sim_counter(&sim, "write_calls") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        visierd_kill(&vd);
        set_faults("{\"publish_ms\":0}");
        for (int i = 0; i < 600 && sim_counter(&sim, "production_version") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        visierd_restart(&vd);
        wait_queue_empty();
        j = job(id);
        ck_assert_msg(streq(job_state(j), "succeeded"), "the delete ended %s", job_state(j));
        json_decref(j);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 2);
}
END_TEST

START_TEST(test_apply_then_drop) {
        long long id;
        json_t *perms;

        start_all("[jobs]\nbatch_delay_ms = 0");
        set_faults("{\"next_apply_then_drop\":1}");
        id = submit_create("dropped-answer", NULL);
        wait_queue_empty();
        perms = sim_control_get(&sim, "/_sim/permissions");
        ck_assert_int_eq(sim_count_named(perms, "dropped-answer"), 1);
        json_decref(perms);
        assert_job_created(id);
}
END_TEST

START_TEST(test_storm_of_failures) {
        long long ids[6];
        json_t *perms;

        start_all("[jobs]\nbatch_delay_ms = 0\nmax_attempts = 20");
        set_faults("{\"next_errors\":3,\"next_drops\":3,\"next_apply_then_drop\":1}");
        for (int i = 0; i < 6; i++) {
                char name[32];
                snprintf(name, sizeof(name), "storm-%d", i);
                ids[i] = submit_create(name, NULL);
        }
        wait_queue_empty();
        perms = sim_control_get(&sim, "/_sim/permissions");
        for (int i = 0; i < 6; i++) {
                char name[32];
                snprintf(name, sizeof(name), "storm-%d", i);
                ck_assert_msg(sim_count_named(perms, name) == 1, "%s exists %d times", name, sim_count_named(perms, name));
                assert_job_created(ids[i]);
        }
        json_decref(perms);
}
END_TEST

START_TEST(test_item_failure_stays_on_its_item) {
        long long id;
        json_t *j, *items;

        start_all(NULL);
        j = write_req("POST", "/v1/admin/permissions",
                      "{\"permissions\":[{\"displayName\":\"good-one\"},"
                      "{\"displayName\":\"bad-one\",\"adminCapabilityConfig\":{\"capabilities\":[\"no_such_capability\"]}}]}",
                      NULL, &(long) { 0 });
        id = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        wait_queue_empty();
        j = job(id);
        items = json_object_get(j, "item_results");
        ck_assert_str_eq(job_state(j), "succeeded"); /* partly: the failure is on the item */
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "state")), "succeeded");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 1), "state")), "failed");
        ck_assert_ptr_nonnull(json_object_get(json_object_get(json_array_get(items, 1), "result"), "error"));
        json_decref(j);
}
END_TEST

START_TEST(test_whole_call_rejection_fails_only_its_job) {
        long long a, b, c;
        json_t *j, *perms;

        start_all("[jobs]\nbatch_delay_ms = 500");
        set_faults("{\"reject_display_name\":\"poison\"}");
        a = submit_create("fine-a", NULL);
        b = submit_create("poison", NULL);
        c = submit_create("fine-c", NULL);
        wait_queue_empty();
        ck_assert_str_eq(job_state(j = job(b)), "failed");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "upstream_status")), 400);
        json_decref(j);
        assert_job_created(a);
        assert_job_created(c);
        perms = sim_control_get(&sim, "/_sim/permissions");
        ck_assert_int_eq(sim_count_named(perms, "fine-a"), 1);
        ck_assert_int_eq(sim_count_named(perms, "fine-c"), 1);
        ck_assert_int_eq(sim_count_named(perms, "poison"), 0);
        json_decref(perms);
        /* The rejected call held all three; the split sent them again one by one. */
        ck_assert_int_ge(sim_counter(&sim, "write_calls"), 4);

        /* A failed job can be retried, and now succeeds. */
        set_faults("{\"reject_display_name\":\"\"}");
        {
                char path[64];
                long status;
                snprintf(path, sizeof(path), "/jobs/%lld/retry", b);
                json_decref(write_req("POST", path, NULL, NULL, &status));
                ck_assert_int_eq(status, 200);
                json_decref(write_req("POST", path, NULL, NULL, &status));
                ck_assert_int_eq(status, 409); /* queued now, not failed */
        }
        wait_queue_empty();
        assert_job_created(b);
}
END_TEST

typedef struct BadBody {
        const char *method, *path, *body, *json_path;
} BadBody;

START_TEST(test_bad_bodies) {
        static const BadBody cases[] = {
                { "POST", "/v1/admin/permissions", "{not json", "$:" },
                { "POST", "/v1/admin/permissions", "[]", "$:" },
                { "POST", "/v1/admin/permissions", "{}", "permissions:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":{}}", "permissions:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[]}", "permissions:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[7]}", "permissions[0]:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"description\":\"x\"}]}", "permissions[0].displayName:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\",\"permissionId\":\"p\"}]}", "permissions[0].permissionId:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\"},{\"displayName\":\"b\",\"correlationId\":\"x!\"}]}", "permissions[1].correlationId:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\",\"correlationId\":\"same\"},{\"displayName\":\"b\",\"correlationId\":\"same\"}]}", "permissions[1].correlationId:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\",\"memberFilterConfigs\":[{\"dimensionFilters\":[{\"staticDimensionFilter\":{\"dimensionId\":\"9Location\"}}]}]}]}]}", "permissions[0].dataSecurityProfiles[0].memberFilterConfigs[0].dimensionFilters[0].staticDimensionFilter.dimensionId:" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Em-ployee\"}]}]}", "permissions[0].dataSecurityProfiles[0].analyticObjectId:" },
                { "PUT", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\"}]}", "permissions[0].permissionId:" },
                { "DELETE", "/v1/admin/permissions", "{\"permissionIds\":[\"ok\",3]}", "permissionIds[1]:" },
                { "PUT", "/v1/admin/permissions/users", "{\"permissions\":[{\"permissionId\":\"p\"}]}", "permissions[0].userIds:" },
                { "DELETE", "/v1/admin/permissions/users", "{\"permissions\":[{\"permissionId\":\"p\",\"userIds\":[\"\"]}]}", "permissions[0].userIds[0]:" },
                { "POST", "/v1/admin/permissions/revert-to-parent", "{\"permissionIds\":[]}", "permissionIds:" },
                /* Members' types and enums as Visier's schemas define them. */
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\",\"allDataPointAccess\":\"yes\"}]}]}", "permissions[0].dataSecurityProfiles[0].allDataPointAccess: must be a boolean" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\",\"adminCapabilityConfig\":{\"capabilities\":\"data\"}}]}", "permissions[0].adminCapabilityConfig.capabilities: must be an array" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\",\"analyticObjectStatus\":\"Bogus\"}]}]}", "permissions[0].dataSecurityProfiles[0].analyticObjectStatus: must be one of " },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\",\"description\":5}]}", "permissions[0].description: must be a string" },
                { "PUT", "/v1/admin/permissions/users", "{\"permissions\":[{\"permissionId\":\"p\",\"userIds\":[\"u-1\"]}],\"targetProjectForTenantsList\":\"x\"}", "targetProjectForTenantsList: must be an object" },
                { "POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"a\"}],\"targetProjectForTenantsList\":{}}", "targetProjectForTenantsList: is not a member of admin.PermissionsListDTO" },
        };
        long status;
        json_t *j;

        start_all(NULL);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const char *msg;

                j = write_req(cases[i].method, cases[i].path, cases[i].body, NULL, &status);
                msg = json_string_value(json_object_get(j, "message"));
                ck_assert_msg(status == 400, "case %zu answered %ld", i, status);
                ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "BadRequest");
                ck_assert_msg(msg && strncmp(msg, cases[i].json_path, strlen(cases[i].json_path)) == 0,
                              "case %zu: expected path %s, got: %s", i, cases[i].json_path, msg);
                json_decref(j);
        }
        /* Too many items for one call. */
        {
                size_t n = 1001 * 24 + 32;
                char *body = malloc(n), *p = body;
                p += snprintf(p, n, "{\"permissions\":[");
                for (int i = 0; i < 1001; i++)
                        p += snprintf(p, n - (size_t) (p - body), "%s{\"displayName\":\"n%d\"}", i ? "," : "", i);
                snprintf(p, n - (size_t) (p - body), "]}");
                j = write_req("POST", "/v1/admin/permissions", body, NULL, &status);
                ck_assert_int_eq(status, 400);
                ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "message")), "1 to 1000 entries"));
                json_decref(j);
                free(body);
        }
        /* Nothing was queued. */
        {
                char *u = visierd_url(&vd, "/jobs");
                j = http_get_json(u, &status);
                ck_assert_int_eq(json_array_size(json_object_get(j, "jobs")), 0);
                json_decref(j);
                free(u);
        }
}
END_TEST

START_TEST(test_prefer_wait_gives_visier_shape) {
        const char *headers[] = { "Prefer: wait=20", NULL };
        char *u = visierd_url(&vd, "/v1/admin/permissions");
        HttpResult r;
        json_t *j, *s;

        start_all(NULL);
        free(u);
        u = visierd_url(&vd, "/v1/admin/permissions");
        http_request("POST", u, headers,
                     "{\"permissions\":[{\"displayName\":\"waited\",\"correlationId\":\"wait-1\"}]}", 30000, &r);
        ck_assert_int_eq(r.status, 200);
        j = json_loadb(r.body, r.len, 0, NULL);
        s = json_array_get(json_object_get(j, "successes"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(s, "correlationId")), "wait-1");
        ck_assert_str_eq(json_string_value(json_object_get(s, "displayName")), "waited");
        ck_assert_ptr_nonnull(json_string_value(json_object_get(s, "permissionId")));
        ck_assert_int_eq(json_array_size(json_object_get(j, "failures")), 0);
        ck_assert_int_eq(json_object_size(j), 2); /* exactly Visier's PermissionBulkOperationResponseDTO */
        json_decref(j);
        http_result_done(&r);
        free(u);
}
END_TEST

START_TEST(test_idempotency_key) {
        const char *h1[] = { "Idempotency-Key: key-1", NULL };
        long s1, s2, s3;
        json_t *a, *b, *c;

        start_all(NULL);
        a = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"idem\"}]}", h1, &s1);
        b = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"idem\"}]}", h1, &s2);
        c = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"other\"}]}", h1, &s3);
        ck_assert_int_eq(s1, 202);
        ck_assert_int_eq(s2, 202);
        ck_assert_int_eq(json_integer_value(json_object_get(a, "id")), json_integer_value(json_object_get(b, "id")));
        ck_assert_int_eq(s3, 422);
        wait_queue_empty();
        {
                json_t *perms = sim_control_get(&sim, "/_sim/permissions");
                ck_assert_int_eq(sim_count_named(perms, "idem"), 1);
                ck_assert_int_eq(sim_count_named(perms, "other"), 0);
                json_decref(perms);
        }
        json_decref(a);
        json_decref(b);
        json_decref(c);
}
END_TEST

START_TEST(test_cancel_obeys_states) {
        long long first, second;
        char path[64];
        long status;
        json_t *j;

        start_all("[jobs]\nbatch_delay_ms = 0");
        set_faults("{\"publish_ms\":1500}");
        /* The first update holds the publisher; the second touches the same permission, so it
         * must wait for the first and stays queued. */
        j = write_req("PUT", "/v1/admin/permissions",
                      "{\"permissions\":[{\"permissionId\":\"3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71\",\"displayName\":\"v2\"}]}",
                      NULL, &status);
        first = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        for (int i = 0; i < 400 && sim_counter(&sim, "write_calls") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        j = write_req("PUT", "/v1/admin/permissions",
                      "{\"permissions\":[{\"permissionId\":\"3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71\",\"displayName\":\"v3\"}]}",
                      NULL, &status);
        second = json_integer_value(json_object_get(j, "id"));
        json_decref(j);

        snprintf(path, sizeof(path), "/jobs/%lld/cancel", first);
        j = write_req("POST", path, NULL, NULL, &status);
        ck_assert_int_eq(status, 409); /* running */
        json_decref(j);
        snprintf(path, sizeof(path), "/jobs/%lld/cancel", second);
        j = write_req("POST", path, NULL, NULL, &status);
        ck_assert_int_eq(status, 200);
        ck_assert_str_eq(job_state(j), "cancelled");
        {
                /* The answer is the job as the cancel left it: what any later read shows (which
                 * adds the items' results). */
                json_t *read = job(second);

                json_object_del(read, "item_results");
                ck_assert_msg(json_equal(j, read), "cancel answered %s, the job reads %s", json_dumps(j, JSON_COMPACT),
                              json_dumps(read, JSON_COMPACT));
                json_decref(read);
        }
        json_decref(j);
        j = write_req("POST", path, NULL, NULL, &status);
        ck_assert_int_eq(status, 409); /* already cancelled */
        json_decref(j);
        j = write_req("POST", "/jobs/999999/cancel", NULL, NULL, &status);
        ck_assert_int_eq(status, 404);
        json_decref(j);
        wait_queue_empty();
        ck_assert_str_eq(job_state(j = job(first)), "succeeded");
        json_decref(j);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 1); /* the cancelled job was never sent */
}
END_TEST

/* With no call left in the rate budget, the publisher claims nothing: the jobs queued stay
 * queued, untried and without an error, nothing is logged but one notice, and once the budget
 * has a call again (here a reload raises the cap) they all go in that one call. */
START_TEST(test_empty_budget_claims_nothing) {
        static const char wait_note[] = "the Visier rate budget has no call for ";
        long long ids[10], calls;
        json_t *reqs, *last = NULL, *e;
        char *conf, *at;
        size_t i;

        sim_start(&sim, unlimited);
        /* The login and two writes spend the minute's three calls. */
        visierd_start(&vd, &sim, "rate_limit_minute = 3\nrate_limit_hour = 1000\nrequest_timeout = 5",
                      "[jobs]\nbatch_delay_ms = 0");
        visierd_wait_ready(&vd);
        for (int k = 0; k < 2; k++) {
                char name[32];

                snprintf(name, sizeof(name), "budget-first-%d", k);
                (void) submit_create(name, NULL);
                wait_queue_empty();
        }
        ck_assert_int_eq(sim_counter(&sim, "logins"), 1);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 2);

        for (int k = 0; k < 10; k++) {
                char name[32];

                snprintf(name, sizeof(name), "budget-wait-%d", k);
                ids[k] = submit_create(name, NULL);
        }
        for (int k = 0; k < 1000 && visierd_log_count(&vd, wait_note) == 0; k++)
                clock_sleep(10 * USEC_PER_MSEC);
        /* Two seconds of the wait (the thread looks again every second): nothing claimed, sent
         * or put back. */
        for (int k = 0; k < 20; k++) {
                clock_sleep(100 * USEC_PER_MSEC); /* watching a span of time, not waiting for a state */
                ck_assert_int_eq(sim_counter(&sim, "write_calls"), 2);
        }
        for (int k = 0; k < 10; k++) {
                json_t *j = job(ids[k]);

                ck_assert_msg(streq(job_state(j), "queued") && json_integer_value(json_object_get(j, "attempts")) == 0 &&
                                      json_is_null(json_object_get(j, "error")),
                              "job %lld while the budget is empty: %s", ids[k], json_dumps(j, JSON_COMPACT));
                json_decref(j);
        }
        ck_assert_uint_eq(visierd_log_count(&vd, wait_note), 1);
        ck_assert_uint_eq(visierd_log_count(&vd, "write call (create"), 2);
        ck_assert_uint_eq(visierd_log_count(&vd, "goes back to the queue"), 0);

        /* A reload raises the minute's cap: the budget has calls again. */
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        conf = harness_read_file(vd.config);
        ck_assert_ptr_nonnull(conf);
        at = strstr(conf, "rate_limit_minute = 3\n");
        ck_assert_ptr_nonnull(at);
        memcpy(at, "rate_limit_minute = 9\n", strlen("rate_limit_minute = 9\n"));
        harness_write_file(vd.config, conf, 0644);
        free(conf);
        ck_assert_int_eq(kill(vd.pid, SIGHUP), 0);
        wait_queue_empty();

        calls = sim_counter(&sim, "write_calls");
        ck_assert_msg(calls == 3, "the ten jobs went in %lld calls", calls - 2);
        reqs = sim_control_get(&sim, "/_sim/requests");
        json_array_foreach(json_object_get(reqs, "requests"), i, e)
                if (streq(json_string_value(json_object_get(e, "method")) ?: "", "POST"))
                        last = e;
        ck_assert_ptr_nonnull(last);
        for (int k = 0; k < 10; k++) {
                char name[48];

                snprintf(name, sizeof(name), "{\"displayName\":\"budget-wait-%d\",", k);
                ck_assert_msg(strstr(json_string_value(json_object_get(last, "body")) ?: "", name),
                              "the call lacks %s: %s", name, json_string_value(json_object_get(last, "body")));
                assert_job_created(ids[k]);
        }
        json_decref(reqs);
        ck_assert_uint_eq(visierd_log_count(&vd, wait_note), 1);
}
END_TEST

START_TEST(test_sigterm_finishes_the_call_in_flight) {
        long long id, calls;
        json_t *j;

        start_all("[jobs]\nbatch_delay_ms = 0");
        set_faults("{\"publish_ms\":1500}");
        id = submit_create("drain-1", NULL);
        for (int i = 0; i < 400 && sim_counter(&sim, "write_calls") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 1);
        /* Stop while the call is in flight: it is finished and recorded before visierd exits. */
        ck_assert_int_eq(visierd_stop(&vd), 0);
        {
                char *log = harness_read_file(vd.log);
                ck_assert_ptr_nonnull(strstr(log, "job 1 (create, 1 items) succeeded"));
                free(log);
        }
        visierd_restart(&vd);
        j = job(id);
        ck_assert_str_eq(job_state(j), "succeeded");
        json_decref(j);
        calls = sim_counter(&sim, "write_calls");
        ck_assert_int_eq(calls, 1); /* nothing was sent twice */
}
END_TEST

START_TEST(test_assign_remove_and_delete) {
        const char *wait[] = { "Prefer: wait=20", NULL };
        const char *pid = "7a9e4d2c-1b3f-4c5d-8e6f-0a1b2c3d4e72";
        char body[256], *u;
        long status;
        json_t *j, *s;

        start_all("[jobs]\nbatch_delay_ms = 0");
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-100\",\"u-101\"]}]}", pid);
        j = write_req("PUT", "/v1/admin/permissions/users", body, wait, &status);
        ck_assert_int_eq(status, 200);
        ck_assert_ptr_nonnull(json_object_get(j, "tenants")); /* Visier's assign answer shape */
        json_decref(j);
        u = visierd_url(&vd, "/v1/admin/permissions/7a9e4d2c-1b3f-4c5d-8e6f-0a1b2c3d4e72/users");
        j = http_get_json(u, &status);
        ck_assert(json_has(j, "u-101"));
        json_decref(j);
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-101\"]}]}", pid);
        j = write_req("DELETE", "/v1/admin/permissions/users", body, wait, &status);
        ck_assert_int_eq(status, 200);
        json_decref(j);
        j = http_get_json(u, &status);
        ck_assert(!json_has(j, "u-101"));
        ck_assert(json_has(j, "u-100"));
        json_decref(j);
        free(u);

        /* A delete whose answer is lost is sent again, finds the permission gone, and is done. */
        j = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"short-lived\"}]}", wait,
                      &status);
        ck_assert_int_eq(status, 200);
        s = json_array_get(json_object_get(j, "successes"), 0);
        snprintf(body, sizeof(body), "{\"permissionIds\":[\"%s\"]}", json_string_value(json_object_get(s, "permissionId")));
        json_decref(j);
        set_faults("{\"next_apply_then_drop\":1}");
        j = write_req("DELETE", "/v1/admin/permissions", body, wait, &status);
        ck_assert_msg(status == 200, "delete answered %ld", status);
        ck_assert_int_eq(json_array_size(json_object_get(j, "successes")), 1);
        json_decref(j);
        j = sim_control_get(&sim, "/_sim/permissions");
        ck_assert_int_eq(sim_count_named(j, "short-lived"), 0);
        json_decref(j);
}
END_TEST

/* ---- reorder-safe coalescing: a mixed stream on disjoint permissions ---------------------- */

#define MIX_JOBS 5000
#define MIX_KINDS 4
#define MIX_PER_KIND (MIX_JOBS / MIX_KINDS)
#define MIX_CLIENTS 10

static char mix_ids[MIX_PER_KIND * 3][40]; /* the permissions the updates, deletes and assignments name */
static atomic_int mix_accepted;

/* N permissions made straight in the sim, named PREFIX-i; their IDs into mix_ids. */
static void sim_precreate(size_t n, const char *prefix) {
        char *token = sim_login(&sim);

        for (size_t done = 0; done < n;) {
                size_t chunk = n - done > 1000 ? 1000 : n - done;
                json_t *body = json_pack("{s:[]}", "permissions"), *j, *e;
                char *text;
                HttpResult r;
                size_t i;

                for (i = 0; i < chunk; i++) {
                        char name[64];

                        snprintf(name, sizeof(name), "%s-%04zu", prefix, done + i);
                        json_array_append_new(json_object_get(body, "permissions"), json_pack("{s:s}", "displayName", name));
                }
                text = json_dumps(body, JSON_COMPACT);
                sim_api(&sim, token, "POST", "/v1/admin/permissions", text, &r);
                ck_assert_int_eq(r.status, 200);
                j = json_loadb(r.body, r.len, 0, NULL);
                ck_assert_uint_eq(json_array_size(json_object_get(j, "successes")), chunk);
                json_array_foreach(json_object_get(j, "successes"), i, e)
                        snprintf(mix_ids[done + i], sizeof(mix_ids[0]), "%s",
                                 json_string_value(json_object_get(e, "permissionId")));
                json_decref(j);
                http_result_done(&r);
                free(text);
                json_decref(body);
                done += chunk;
        }
        free(token);
}

/* Job I of the stream: its method, path and body. Kinds rotate create, update, delete, assign;
 * each update, delete and assignment names a permission of its own. */
static void mix_job(int i, const char **ret_method, const char **ret_path, char *body, size_t size) {
        int k = i / MIX_KINDS;

        switch (i % MIX_KINDS) {
        case 0:
                *ret_method = "POST", *ret_path = "/v1/admin/permissions";
                snprintf(body, size, "{\"permissions\":[{\"displayName\":\"mix-c-%04d\"}]}", k);
                break;
        case 1:
                *ret_method = "PUT", *ret_path = "/v1/admin/permissions";
                snprintf(body, size, "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"mix-u-%04d\"}]}",
                         mix_ids[3 * k], k);
                break;
        case 2:
                *ret_method = "DELETE", *ret_path = "/v1/admin/permissions";
                snprintf(body, size, "{\"permissionIds\":[\"%s\"]}", mix_ids[3 * k + 1]);
                break;
        default:
                *ret_method = "PUT", *ret_path = "/v1/admin/permissions/users";
                snprintf(body, size, "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-%03d\"]}]}",
                         mix_ids[3 * k + 2], k % 1000);
                break;
        }
}

static void *mix_client(void *arg) {
        int c = (int) (intptr_t) arg;

        for (int i = c; i < MIX_JOBS; i += MIX_CLIENTS) {
                const char *method, *path;
                char body[256];
                long status;
                json_t *j;

                mix_job(i, &method, &path, body, sizeof(body));
                j = visierd_request_json(&vd, method, path, body, NULL, &status);
                if (status == 202)
                        atomic_fetch_add(&mix_accepted, 1);
                json_decref(j);
        }
        return NULL;
}

/* The sim's permission dump entry for ID, or NULL. */
static json_t *dump_find(json_t *dump, const char *id) {
        json_t *p;
        size_t i;

        json_array_foreach(json_object_get(dump, "permissions"), i, p)
                if (streq(json_string_value(json_object_get(p, "permissionId")), id))
                        return p;
        return NULL;
}

/* 5,000 mixed jobs queued behind a held first write, through the publisher configured by
 * JOBS_CONF: the write calls per kind, never two at once, and the end state of applying them
 * in submission order. Returns the production versions they made. */
static long long run_mixed_stream(const char *jobs_conf) {
        pthread_t t[MIX_CLIENTS];
        json_t *counters, *ops, *dump, *p, *st;
        long long v0, versions;
        usec_t deadline;
        long status;
        char *u;

        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 120",
                      jobs_conf);
        visierd_wait_ready(&vd);
        sim_precreate(MIX_PER_KIND * 3, "pre");

        /* A first write held in flight at Visier keeps the lane busy while the stream queues,
         * so the next claims see all of it: one round. */
        json_decref(sim_control_post(&sim, "/_sim/reset", "{}"));
        v0 = sim_counter(&sim, "production_version");
        set_faults("{\"hold_writes\":true}");
        submit_create("blocker", NULL);
        for (deadline = clock_now() + 30 * USEC_PER_SEC; sim_counter(&sim, "writes_in_flight") < 1;) {
                ck_assert_msg(clock_now() < deadline, "the first write never reached visier-sim");
                clock_sleep(10 * USEC_PER_MSEC); /* probe interval */
        }
        for (int c = 0; c < MIX_CLIENTS; c++)
                pthread_create(&t[c], NULL, mix_client, (void *) (intptr_t) c);
        for (int c = 0; c < MIX_CLIENTS; c++)
                pthread_join(t[c], NULL);
        ck_assert_int_eq(atomic_load(&mix_accepted), MIX_JOBS);
        set_faults("{\"hold_writes\":false}");
        wait_queue_empty();

        /* The blocker, then ceil(1250 / 1000) = 2 calls per kind, never two at once. */
        counters = sim_control_get(&sim, "/_sim/counters");
        ops = json_object_get(counters, "write_calls_by_operation");
        {
                char *text = json_dumps(ops, JSON_COMPACT);
                fprintf(stderr, "5000 mixed jobs: write calls %s\n", text);
                free(text);
        }
        ck_assert_int_eq(json_integer_value(json_object_get(ops, "POST /v1/admin/permissions")), 1 + 2);
        ck_assert_int_eq(json_integer_value(json_object_get(ops, "PUT /v1/admin/permissions")), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(ops, "DELETE /v1/admin/permissions")), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(ops, "PUT /v1/admin/permissions/users")), 2);
        ck_assert_int_eq(json_object_size(ops), 4);
        ck_assert_int_eq(json_integer_value(json_object_get(counters, "publish_overlaps")), 0);
        versions = json_integer_value(json_object_get(counters, "production_version")) - v0;
        json_decref(counters);

        /* Every job succeeded, and the end state is that of applying them one by one in order. */
        u = visierd_url(&vd, "/status");
        st = http_get_json(u, &status);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(st, "jobs"), "succeeded")), MIX_JOBS + 1);
        json_decref(st);
        free(u);
        dump = sim_control_get(&sim, "/_sim/permissions");
        for (int k = 0; k < MIX_PER_KIND; k++) {
                char name[32], user[16];

                snprintf(name, sizeof(name), "mix-c-%04d", k);
                ck_assert_int_eq(sim_count_named(dump, name), 1);
                p = dump_find(dump, mix_ids[3 * k]);
                snprintf(name, sizeof(name), "mix-u-%04d", k);
                ck_assert_msg(p && streq(json_string_value(json_object_get(p, "displayName")), name), "%s not updated",
                              mix_ids[3 * k]);
                ck_assert_msg(!dump_find(dump, mix_ids[3 * k + 1]), "%s not deleted", mix_ids[3 * k + 1]);
                p = dump_find(dump, mix_ids[3 * k + 2]);
                snprintf(user, sizeof(user), "u-%03d", k % 1000);
                ck_assert_msg(p && json_has(json_object_get(p, "userIds"), user), "%s lacks %s", mix_ids[3 * k + 2], user);
        }
        ck_assert_int_eq(sim_count_named(dump, "blocker"), 1);
        json_decref(dump);
        return versions;
}

/* Direct mode: each call publishes a version. */
START_TEST(test_mixed_stream_coalesces_by_kind) {
        ck_assert_int_eq(run_mixed_stream("[jobs]\nbatch_delay_ms = 0\n"), 9);
}
END_TEST

/* Project mode: the same calls go into one draft project, published once — one production
 * version for the round, and it is visierd's draft. */
START_TEST(test_mixed_stream_one_version_per_round) {
        json_t *st, *versions, *top;
        char *token;
        HttpResult r;
        long status;
        char *u;

        ck_assert_int_eq(run_mixed_stream("[jobs]\nbatch_delay_ms = 0\npublish = project\n"), 1);
        u = visierd_url(&vd, "/status");
        st = http_get_json(u, &status);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(st, "publisher"), "rounds_published")), 1);
        json_decref(st);
        free(u);
        token = sim_login(&sim);
        sim_api(&sim, token, "GET", "/v1/admin/production-versions?limit=1", NULL, &r);
        ck_assert_int_eq(r.status, 200);
        versions = json_loadb(r.body, r.len, 0, NULL);
        top = json_array_get(json_object_get(versions, "publishedVersions"), 0);
        ck_assert(strncmp(strempty(json_string_value(json_object_get(top, "name"))), "visierd round ", 14) == 0);
        json_decref(versions);
        http_result_done(&r);
        free(token);
}
END_TEST

/* ---- merge patches ---------------------------------------------------------------------- */

#define CANADA "7a9e4d2c-1b3f-4c5d-8e6f-0a1b2c3d4e72"

typedef struct PatchCall {
        const char *body;
        long status;
        json_t *answer;
} PatchCall;

static void *patch_call(void *arg) {
        PatchCall *c = arg;
        const char *h[] = { "Prefer: wait=30", "Content-Type: application/merge-patch+json", NULL };

        c->answer = visierd_request_json(&vd, "PATCH", "/v1/admin/permissions/" CANADA, c->body, h, &c->status);
        return NULL;
}

/* The sim's permission ID as Visier answers it, or NULL. */
static json_t *sim_permission(const char *id) {
        char *token = sim_login(&sim), path[128];
        HttpResult r;
        json_t *j;

        snprintf(path, sizeof(path), "/v1/admin/permissions/%s", id);
        sim_api(&sim, token, "GET", path, NULL, &r);
        j = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
        http_result_done(&r);
        free(token);
        return j;
}

/* Two merge patches of one permission at once, to different parts of it: both survive (each
 * is read, merged and sent under the lane, one after the other), and the job shows what
 * changed. */
START_TEST(test_concurrent_patches_both_survive) {
        PatchCall calls[] = {
                { .body = "{\"adminCapabilityConfig\":{\"capabilities\":[\"data\",\"aggregate_view\",\"detailed_view\"]}}" },
                { .body = "{\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\",\"allDataPointAccess\":true}],"
                          "\"description\":null}" },
        };
        pthread_t t[ELEMENTSOF(calls)];
        json_t *after, *job, *item;
        char *text;

        start_all("[jobs]\nbatch_delay_ms = 0");
        set_faults("{\"publish_ms\":300}");
        for (size_t i = 0; i < ELEMENTSOF(calls); i++)
                ck_assert_int_eq(pthread_create(&t[i], NULL, patch_call, &calls[i]), 0);
        for (size_t i = 0; i < ELEMENTSOF(calls); i++) {
                pthread_join(t[i], NULL);
                ck_assert_msg(calls[i].status == 200, "patch %zu answered %ld", i, calls[i].status);
                /* Visier's bulk answer for the PUT it became, and nothing else. */
                text = json_dumps(calls[i].answer, JSON_COMPACT);
                ck_assert_str_eq(text, "{\"successes\":[{\"permissionId\":\"" CANADA "\",\"displayName\":"
                                       "\"Canada HR Business Partner\"}],\"failures\":[]}");
                free(text);
        }
        ck_assert_int_eq(sim_counter(&sim, "publish_overlaps"), 0);

        after = sim_permission(CANADA);
        ck_assert_ptr_nonnull(after);
        text = json_dumps(json_object_get(json_object_get(after, "adminCapabilityConfig"), "capabilities"), JSON_COMPACT);
        ck_assert_str_eq(text, "[\"data\",\"aggregate_view\",\"detailed_view\"]");
        free(text);
        text = json_dumps(json_object_get(after, "dataSecurityProfiles"), JSON_COMPACT);
        ck_assert_str_eq(text, "[{\"analyticObjectId\":\"Employee\",\"allDataPointAccess\":true}]");
        free(text);
        ck_assert_ptr_null(json_object_get(after, "description")); /* removed by null */
        /* What neither patch named is as it was. */
        ck_assert_str_eq(json_string_value(json_object_get(after, "displayName")), "Canada HR Business Partner");
        text = json_dumps(json_object_get(after, "roleModulesConfig"), JSON_COMPACT);
        ck_assert_str_eq(text, "{\"contentPackageIds\":[\"4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c01\"]}");
        free(text);
        json_decref(after);

        /* The job keeps the permission before and after its own change. */
        job = visierd_job(&vd, 2);
        item = json_object_get(json_array_get(json_object_get(job, "item_results"), 0), "result");
        ck_assert_ptr_nonnull(json_object_get(item, "before"));
        ck_assert_ptr_nonnull(json_object_get(item, "after"));
        ck_assert_ptr_nonnull(json_object_get(item, "answer"));
        ck_assert(!json_equal(json_object_get(item, "before"), json_object_get(item, "after")));
        json_decref(job);
        for (size_t i = 0; i < ELEMENTSOF(calls); i++)
                json_decref(calls[i].answer);
}
END_TEST

/* A patch refused before it is queued, one that would make the permission invalid, and one of
 * a permission that does not exist: 400, 400 and 404, and nothing is sent to Visier. */
START_TEST(test_bad_patches_change_nothing) {
        const char *wait[] = { "Prefer: wait=30", NULL };
        json_t *before, *after, *j;
        long long writes;
        long status;

        start_all("[jobs]\nbatch_delay_ms = 0");
        before = sim_permission(CANADA);
        writes = sim_counter(&sim, "write_calls");

        j = write_req("PATCH", "/v1/admin/permissions/" CANADA, "{\"displayName\":null}", wait, &status);
        ck_assert_int_eq(status, 400);
        ck_assert_str_eq(json_string_value(json_object_get(j, "message")),
                         "permissions[0].displayName: cannot be removed");
        json_decref(j);
        j = write_req("PATCH", "/v1/admin/permissions/" CANADA, "{\"permissionId\":\"other\"}", wait, &status);
        ck_assert_int_eq(status, 400);
        json_decref(j);

        /* Nested members are checked too, before anything is queued. */
        j = write_req("PATCH", "/v1/admin/permissions/" CANADA, "{\"adminCapabilityConfig\":{\"capabilities\":5}}", wait,
                      &status);
        ck_assert_int_eq(status, 400);
        ck_assert_str_eq(json_string_value(json_object_get(j, "message")),
                         "permissions[0].adminCapabilityConfig.capabilities: must be an array");
        json_decref(j);

        /* Valid as a patch, invalid as the permission it makes: one made in Visier (not through
         * visierd) with an ID visierd's rules refuse. Read, merged, refused; nothing sent. */
        {
                char *token = sim_login(&sim), path[128];
                HttpResult r;
                json_t *made;

                sim_api(&sim, token, "POST", "/v1/admin/permissions",
                        "{\"permissions\":[{\"displayName\":\"made-elsewhere\",\"dataSecurityProfiles\":"
                        "[{\"analyticObjectId\":\"9lives\"}]}]}",
                        &r);
                ck_assert_int_eq(r.status, 200);
                made = json_loadb(r.body, r.len, 0, NULL);
                snprintf(path, sizeof(path), "/v1/admin/permissions/%s",
                         json_string_value(json_object_get(json_array_get(json_object_get(made, "successes"), 0),
                                                           "permissionId")));
                http_result_done(&r);
                writes = sim_counter(&sim, "write_calls");
                j = write_req("PATCH", path, "{\"description\":\"x\"}", wait, &status);
                ck_assert_int_eq(status, 400);
                ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "BadRequest");
                ck_assert_str_eq(json_string_value(json_object_get(j, "message")),
                                 "the patched permission is not valid: dataSecurityProfiles[0].analyticObjectId '9lives' "
                                 "is not a valid ID: use A-Z a-z 0-9 and _, 3 to 200 characters, not starting with a digit");
                json_decref(j);
                ck_assert_int_eq(sim_counter(&sim, "write_calls"), writes);
                json_decref(made);
                free(token);
        }

        j = write_req("PATCH", "/v1/admin/permissions/0b3c2d1e-0000-4000-8000-00000000dead", "{\"description\":\"x\"}",
                      wait, &status);
        ck_assert_int_eq(status, 404);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "NotFound");
        json_decref(j);

        ck_assert_int_eq(sim_counter(&sim, "write_calls"), writes);
        after = sim_permission(CANADA);
        ck_assert(json_equal(before, after));
        json_decref(before);
        json_decref(after);

        /* The bulk form: two permissions, one of them missing; the other changes. */
        j = write_req("PATCH", "/v1/admin/permissions",
                      "{\"permissions\":[{\"permissionId\":\"" CANADA "\",\"description\":\"patched\"},"
                      "{\"permissionId\":\"0b3c2d1e-0000-4000-8000-00000000dead\",\"description\":\"x\"}]}",
                      wait, &status);
        ck_assert_int_eq(status, 200);
        ck_assert_int_eq(json_array_size(json_object_get(j, "successes")), 1);
        ck_assert_int_eq(json_array_size(json_object_get(j, "failures")), 1);
        json_decref(j);
        after = sim_permission(CANADA);
        ck_assert_str_eq(json_string_value(json_object_get(after, "description")), "patched");
        json_decref(after);
}
END_TEST

START_TEST(test_full_disk_refuses_cleanly_and_recovers) {
        char body[2048], pad[1500];
        int accepted_n = 0, refused = 0;
        struct rlimit unlimited_fsize = { RLIM_INFINITY, RLIM_INFINITY };
        long status;
        json_t *j;

        memset(pad, 'x', sizeof(pad) - 1);
        pad[sizeof(pad) - 1] = '\0';
        harness_fsize_limit = 256 * 1024; /* files visierd writes may not grow past this: a full disk */
        start_all("[jobs]\nbatch_delay_ms = 0");
        harness_fsize_limit = 0;
        for (int i = 0; i < 2000 && !refused; i++) {
                snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"disk-%d\",\"description\":\"%s\"}]}", i,
                         pad);
                j = write_req("POST", "/v1/admin/permissions", body, NULL, &status);
                if (status == 202)
                        accepted_n++;
                else {
                        ck_assert_int_eq(status, 503);
                        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "ServiceUnavailable");
                        refused = 1;
                }
                json_decref(j);
        }
        ck_assert_msg(refused, "the size limit was never hit");
        ck_assert_int_gt(accepted_n, 0);

        /* Space again: writes are accepted, and every job accepted before is there, whole. */
        ck_assert_int_eq(prlimit(vd.pid, RLIMIT_FSIZE, &unlimited_fsize, NULL), 0);
        snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"disk-after\"}]}");
        j = write_req("POST", "/v1/admin/permissions", body, NULL, &status);
        ck_assert_int_eq(status, 202);
        json_decref(j);
        wait_queue_empty();
        j = sim_control_get(&sim, "/_sim/permissions");
        ck_assert_int_eq(sim_count_named(j, "disk-after"), 1);
        for (int i = 0; i < accepted_n; i++) {
                char name[32];
                snprintf(name, sizeof(name), "disk-%d", i);
                ck_assert_msg(sim_count_named(j, name) == 1, "%s exists %d times", name, sim_count_named(j, name));
        }
        {
                char name[32];
                snprintf(name, sizeof(name), "disk-%d", accepted_n); /* the refused one */
                ck_assert_int_eq(sim_count_named(j, name), 0);
        }
        json_decref(j);
}
END_TEST

int main(void) {
        Suite *s = suite_create("writes");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 180);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_bad_bodies);
        tcase_add_test(tc, test_prefer_wait_gives_visier_shape);
        tcase_add_test(tc, test_idempotency_key);
        tcase_add_test(tc, test_item_failure_stays_on_its_item);
        tcase_add_test(tc, test_whole_call_rejection_fails_only_its_job);
        tcase_add_test(tc, test_cancel_obeys_states);
        tcase_add_test(tc, test_apply_then_drop);
        tcase_add_test(tc, test_kill_during_create_call);
        tcase_add_test(tc, test_kill_during_delete_call);
        tcase_add_test(tc, test_storm_of_failures);
        tcase_add_test(tc, test_2000_creates_few_calls);
        tcase_add_test(tc, test_sigterm_finishes_the_call_in_flight);
        tcase_add_test(tc, test_empty_budget_claims_nothing);
        tcase_add_test(tc, test_assign_remove_and_delete);
        /* The disk filling under SQLite's file (a file size limit on visierd): not a thing a
         * node does to PostgreSQL's, which is the server's (docs/fleet.md, "Outages"). */
        if (!harness_store_is_pg())
                tcase_add_test(tc, test_full_disk_refuses_cleanly_and_recovers);
        else
                printf("test_full_disk_refuses_cleanly_and_recovers: SQLite only, not run on PostgreSQL\n");
        tcase_add_test(tc, test_mixed_stream_coalesces_by_kind);
        tcase_add_test(tc, test_mixed_stream_one_version_per_round);
        tcase_add_test(tc, test_concurrent_patches_both_survive);
        tcase_add_test(tc, test_bad_patches_change_nothing);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
