/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: token rollovers are invisible to callers. With a 2-second token lifetime and
 * 32 concurrent callers for 15 seconds, no call fails, visier-sim counts about one login per
 * rollover, and never two logins in flight at once.
 */
#include <check.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "clock.h"
#include "harness.h"

#define CALLERS 32
#define DURATION (15 * USEC_PER_SEC)

static atomic_long ok_calls, failed_calls;
static usec_t stop_at;
static char *url;

static void *caller(void *arg) {
        CURL *h = curl_easy_init();
        FILE *devnull = fopen("/dev/null", "we");

        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, devnull);
        while (clock_now() < stop_at) {
                long status = 0;
                CURLcode c = curl_easy_perform(h);

                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
                if (c == CURLE_OK && status == 200)
                        atomic_fetch_add(&ok_calls, 1);
                else
                        atomic_fetch_add(&failed_calls, 1);
        }
        fclose(devnull);
        curl_easy_cleanup(h);
        return NULL;
}

START_TEST(test_rollover_under_load) {
        const char *args[] = { "--token-ttl", "2", "--login-latency-ms", "50", "--rate-minute", "0", "--rate-hour", "0",
                               NULL };
        pthread_t threads[CALLERS];
        long long logins, before, max_in_flight;
        Sim sim;
        Visierd vd;

        sim_start(&sim, args);
        visierd_start(&vd, &sim, "token_lifetime = 2\nrefresh_margin = 1\nrate_limit_minute = 1000000\nrate_limit_hour = 100000000", NULL);
        visierd_wait_ready(&vd);
        url = visierd_url(&vd, "/v1/admin/capabilities");
        before = sim_counter(&sim, "logins");

        stop_at = clock_now() + DURATION;
        for (int i = 0; i < CALLERS; i++)
                ck_assert_int_eq(pthread_create(&threads[i], NULL, caller, NULL), 0);
        for (int i = 0; i < CALLERS; i++)
                pthread_join(threads[i], NULL);

        logins = sim_counter(&sim, "logins") - before;
        max_in_flight = sim_counter(&sim, "logins_in_flight_max");
        fprintf(stderr, "rollover: %ld ok, %ld failed, %lld logins in 15 s, at most %lld in flight\n",
                atomic_load(&ok_calls), atomic_load(&failed_calls), logins, max_in_flight);
        ck_assert_int_eq(atomic_load(&failed_calls), 0);
        ck_assert_int_gt(atomic_load(&ok_calls), CALLERS);
        ck_assert_int_eq(max_in_flight, 1);
        /* A token is refreshed 1 s (minus up to 0.1 s of jitter) after its login, so 15 s hold
         * 14 to 17 rollovers; many more would mean logins per caller rather than per rollover. */
        ck_assert_int_ge(logins, 10);
        ck_assert_int_le(logins, 18);

        ck_assert_int_eq(visierd_stop(&vd), 0);
        sim_stop(&sim);
        harness_rmtree(vd.dir);
        harness_rmtree(sim.dir);
        free(url);
}
END_TEST

int main(void) {
        Suite *s = suite_create("rollover");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 90);
        tcase_add_test(tc, test_rollover_under_load);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
