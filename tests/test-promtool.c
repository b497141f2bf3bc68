/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: Prometheus's own checker, promtool (Debian's prometheus package), passes
 * visierd's /metrics after a run that includes what broke it once: junk request methods
 * (one with a double quote), unmatched paths, refused bodies, reads and a write. Exit 77
 * (SKIP, with the reason) when promtool cannot be found: $PROMTOOL, then $PATH.
 */
#include <check.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "macro.h"

static Sim sim;
static Visierd vd;
static char promtool[512];

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

static bool find_promtool(void) {
        const char *env = getenv("PROMTOOL"), *path = getenv("PATH");

        if (env && *env) {
                snprintf(promtool, sizeof(promtool), "%s", env);
                return access(promtool, X_OK) == 0;
        }
        for (const char *p = path; p && *p;) {
                const char *colon = strchr(p, ':');
                int n = colon ? (int) (colon - p) : (int) strlen(p);

                snprintf(promtool, sizeof(promtool), "%.*s/promtool", n, p);
                if (n > 0 && access(promtool, X_OK) == 0)
                        return true;
                p = colon ? colon + 1 : NULL;
        }
        return false;
}

/* promtool check metrics on text; its exit code, its output in *ret_output. */
static int promtool_check(const char *dir, const char *text, char **ret_output) {
        char file[256];
        const char *argv[] = { "/bin/sh", "-c", "exec \"$0\" check metrics < \"$1\"", promtool, file, NULL };

        snprintf(file, sizeof(file), "%s/metrics.txt", dir);
        harness_write_file(file, text, 0600);
        return harness_run(argv, ret_output);
}

static long req(const char *method, const char *path, const char *const *headers, const char *body, char **ret_body) {
        return visierd_call(&vd, method, path, headers, body, ret_body);
}

START_TEST(test_metrics_pass_promtool) {
        const char *wait[] = { "Prefer: wait=20", NULL }, *text_plain[] = { "Content-Type: text/plain", NULL };
        char request[128], *answer, *text, *out;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, "[jobs]\nbatch_delay_ms = 0", NULL);
        visierd_wait_ready(&vd);

        /* The checker can fail: a label value with a bare double quote, as junk methods once made. */
        ck_assert_int_ne(promtool_check(vd.dir, "# TYPE x_total counter\nx_total{method=\"GE\"T\"} 1\n", &out), 0);
        free(out);

        answer = harness_raw_exchange(vd.port, "GE\"T /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 10);
        free(answer);
        for (int i = 0; i < 600; i++) {
                snprintf(request, sizeof(request), "X%03d /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", i);
                answer = harness_raw_exchange(vd.port, request, 10);
                free(answer);
        }
        ck_assert_int_eq(req("GET", "/no/such/thing", NULL, NULL, NULL), 404);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", text_plain, "{}", NULL), 415);
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(req("GET", "/v1/admin/capabilities", NULL, NULL, NULL), 200);
        ck_assert_int_eq(req("POST", "/v1/admin/permissions", wait, "{\"permissions\":[{\"displayName\":\"p1\"}]}", NULL),
                         200);
        ck_assert_int_eq(req("GET", "/status", NULL, NULL, NULL), 200);

        ck_assert_int_eq(req("GET", "/metrics", NULL, NULL, &text), 200);
        ck_assert_msg(promtool_check(vd.dir, text, &out) == 0, "promtool check metrics: %s", out);
        ck_assert_str_eq(out, "");
        free(out);
        free(text);
}
END_TEST

int main(void) {
        Suite *s;
        TCase *tc;
        SRunner *sr;
        int failed;

        if (!find_promtool()) {
                printf("SKIP: promtool not found ($PROMTOOL or $PATH; it is in Debian's prometheus package, which "
                       "tools/quickstart test fetches)\n");
                return 77;
        }
        printf("promtool: %s\n", promtool);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        s = suite_create("promtool");
        tc = tcase_create("integration");
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_metrics_pass_promtool);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
