/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: visier-sim alone, driven over HTTP as Visier's clients drive Visier. It holds
 * the simulator to Visier's published definitions, so that a lenient simulator cannot hide a
 * visierd bug: permission stores and correlation IDs scoped by tenant and draft project, the
 * shapes of the write answers, a write that lost its client still publishing (and overlapping),
 * the refuse_tokens fault, and credentials reloaded on SIGHUP under load.
 */
#include <check.h>
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

static Sim sim;
static char *token;

static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };

static void start_sim(void) {
        sim_start(&sim, unlimited);
        token = sim_login(&sim);
}

static void teardown(void) {
        free(token);
        token = NULL;
        sim_stop(&sim);
        if (sim.dir[0])
                harness_rmtree(sim.dir);
        memset(&sim, 0, sizeof(sim));
}

static void set_faults(const char *json) {
        json_decref(sim_control_post(&sim, "/_sim/faults", json));
}

/*
 * One authenticated /v1 call straight to the sim, with EXTRA headers (NULL-terminated or
 * NULL). Fills *ret; the caller calls http_result_done().
 */
static void api(const char *method, const char *path, const char *const *extra, const char *body, long timeout_ms,
                HttpResult *ret) {
        const char *headers[16];
        char *cookie, *apikey, *u = sim_url(&sim, path);
        size_t n = 0;

        ck_assert_int_ge(asprintf(&cookie, "Cookie: VisierASIDToken=%s", token), 0);
        ck_assert_int_ge(asprintf(&apikey, "apikey: %s", sim.apikey), 0);
        headers[n++] = cookie;
        headers[n++] = apikey;
        headers[n++] = "Content-Type: application/json";
        for (size_t i = 0; extra && extra[i] && n < ELEMENTSOF(headers) - 1; i++)
                headers[n++] = extra[i];
        headers[n] = NULL;
        http_request(method, u, headers, body, timeout_ms, ret);
        free(cookie);
        free(apikey);
        free(u);
}

/* api() that must get an answer; returns the parsed body and its status. */
static json_t *api_json(const char *method, const char *path, const char *const *extra, const char *body,
                        long *ret_status) {
        HttpResult r;
        json_t *j;

        api(method, path, extra, body, 30000, &r);
        ck_assert_msg(r.curl_error == 0, "%s %s: transport error %d", method, path, r.curl_error);
        j = json_loadb(r.body, r.len, 0, NULL);
        ck_assert_msg(j, "%s %s answered %ld with non-JSON: %s", method, path, r.status, r.body);
        *ret_status = r.status;
        http_result_done(&r);
        return j;
}

/* ---- overlaps: a write whose client left keeps publishing ---------------------------- */

START_TEST(test_overlap_after_client_gone) {
        HttpResult r;
        json_t *perms;
        long status;
        bool found = false;
        size_t i;
        json_t *p;

        start_sim();
        set_faults("{\"publish_ms\":1500}");
        /* The client gives up after 200 ms; the sim goes on publishing for 1500 ms. */
        api("POST", "/v1/admin/permissions", NULL, "{\"permissions\":[{\"displayName\":\"abandoned\"}]}", 200, &r);
        ck_assert_int_eq(r.curl_error, CURLE_OPERATION_TIMEDOUT);
        http_result_done(&r);
        ck_assert_int_eq(sim_counter(&sim, "writes_in_flight"), 1);
        /* A second write meanwhile overlaps the first. */
        json_decref(api_json("POST", "/v1/admin/permissions", NULL, "{\"permissions\":[{\"displayName\":\"second\"}]}",
                             &status));
        ck_assert_int_eq(status, 200);
        ck_assert_int_eq(sim_counter(&sim, "publish_overlaps"), 1);
        ck_assert_int_eq(sim_counter(&sim, "writes_in_flight_max"), 2);
        ck_assert_int_eq(sim_counter(&sim, "writes_in_flight"), 0);
        ck_assert_int_eq(sim_counter(&sim, "production_version"), 2);
        /* The abandoned write was applied all the same. */
        perms = sim_control_get(&sim, "/_sim/permissions");
        json_array_foreach(json_object_get(perms, "permissions"), i, p)
                found |= streq(json_string_value(json_object_get(p, "displayName")) ?: "", "abandoned");
        json_decref(perms);
        ck_assert(found);
}
END_TEST

/* ---- refuse_tokens: logins succeed, tokens do not ------------------------------------ */

START_TEST(test_refuse_tokens) {
        long status;
        json_t *j;
        char *t2;

        start_sim();
        set_faults("{\"refuse_tokens\":true}");
        j = api_json("GET", "/v1/admin/capabilities", NULL, NULL, &status);
        ck_assert_int_eq(status, 401);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "Unauthorized");
        ck_assert_str_eq(json_string_value(json_object_get(j, "message")),
                         "The VisierASIDToken is invalid, expired or revoked.");
        ck_assert(json_is_string(json_object_get(j, "localizedMessage")));
        ck_assert(json_is_string(json_object_get(j, "rci")));
        ck_assert(json_is_true(json_object_get(j, "userError")));
        ck_assert_int_eq(json_object_size(j), 5);
        json_decref(j);
        /* A fresh login still works, and its token is refused as well. */
        t2 = sim_login(&sim);
        free(token);
        token = t2;
        j = api_json("POST", "/v1/admin/permissions", NULL, "{\"permissions\":[{\"displayName\":\"never\"}]}", &status);
        ck_assert_int_eq(status, 401);
        json_decref(j);
        ck_assert_int_eq(sim_counter(&sim, "logins"), 2);
        ck_assert_int_ge(sim_counter(&sim, "logins_per_second_max"), 1);
        ck_assert_int_eq(sim_counter(&sim, "tokens_refused"), 2);
        ck_assert_int_eq(sim_counter(&sim, "bad_token"), 2);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 0);
        /* Off again: the same token works. */
        set_faults("{\"refuse_tokens\":false}");
        json_decref(api_json("GET", "/v1/admin/capabilities", NULL, NULL, &status));
        ck_assert_int_eq(status, 200);
}
END_TEST

START_TEST(test_logins_per_second) {
        start_sim();
        for (int i = 0; i < 5; i++)
                free(sim_login(&sim));
        /* Six logins (start_sim's and five) well within a second. */
        ck_assert_int_eq(sim_counter(&sim, "logins"), 6);
        ck_assert_int_eq(sim_counter(&sim, "logins_per_second_max"), 6);
        json_decref(sim_control_post(&sim, "/_sim/reset", NULL));
        ck_assert_int_eq(sim_counter(&sim, "logins_per_second_max"), 0);
}
END_TEST

/* ---- SIGHUP reloads credentials while they are in use -------------------------------- */

static atomic_bool hup_done;

static void *hup_loop(void *arg) {
        for (int i = 0; i < 300; i++) {
                kill(sim.pid, SIGHUP);
                clock_sleep(2 * USEC_PER_MSEC);
        }
        atomic_store(&hup_done, true);
        return arg;
}

static void *login_loop(void *arg) {
        atomic_int *failures = arg;

        while (!atomic_load(&hup_done)) {
                char *url = sim_url(&sim, "/v1/admin/visierSecureToken"), *body;
                const char *headers[] = { "Content-Type: application/x-www-form-urlencoded", NULL };
                HttpResult r;

                /* No ck_assert off the test's own thread: count the failure instead. */
                if (asprintf(&body, "username=%s&password=%s", sim.username, sim.password) < 0) {
                        atomic_fetch_add(failures, 1);
                        free(url);
                        break;
                }
                http_request("POST", url, headers, body, 10000, &r);
                if (r.status != 200)
                        atomic_fetch_add(failures, 1);
                http_result_done(&r);
                free(body);
                free(url);
        }
        return NULL;
}

/* Logins and API-key checks race SIGHUP's reload; under the sanitizers a read of a freed
 * secret is an error, and without them every login must still succeed. */
START_TEST(test_sighup_under_load) {
        pthread_t hup, logins[4];
        atomic_int failures = 0;
        long status;

        start_sim();
        atomic_store(&hup_done, false);
        for (int i = 0; i < 4; i++)
                pthread_create(&logins[i], NULL, login_loop, &failures);
        pthread_create(&hup, NULL, hup_loop, NULL);
        pthread_join(hup, NULL);
        for (int i = 0; i < 4; i++)
                pthread_join(logins[i], NULL);
        ck_assert_int_eq(atomic_load(&failures), 0);
        /* The loops may have issued more than the 4096 tokens kept: log in afresh. */
        free(token);
        token = sim_login(&sim);
        json_decref(api_json("GET", "/v1/admin/capabilities", NULL, NULL, &status));
        ck_assert_int_eq(status, 200);
        fprintf(stderr, "SIGHUP under load: %lld logins\n", sim_counter(&sim, "logins"));
        ck_assert_int_gt(sim_counter(&sim, "logins"), 4);
        /* A sanitizer build (ThreadSanitizer above all) reports the race in the sim's log. */
        sim_stop(&sim);
        {
                char *log = harness_read_file(sim.log);

                ck_assert_ptr_nonnull(log);
                ck_assert_msg(!strstr(log, "Sanitizer"), "visier-sim's log reports:\n%s", log);
                free(log);
        }
}
END_TEST

int main(void) {
        Suite *s = suite_create("sim");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_overlap_after_client_gone);
        tcase_add_test(tc, test_refuse_tokens);
        tcase_add_test(tc, test_logins_per_second);
        tcase_add_test(tc, test_sighup_under_load);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
