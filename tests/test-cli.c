/* SPDX-License-Identifier: Apache-2.0 */
/* Integration: `visierd --check-config` names every problem clearly, and accepts a good file. */
#include <check.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"

static char dir[128], conf[192], key[192], pw[192];

static void setup(void) {
        harness_mkdtemp(dir, sizeof(dir), "visierd-cli");
        snprintf(conf, sizeof(conf), "%s/visierd.conf", dir);
        snprintf(key, sizeof(key), "%s/apikey", dir);
        snprintf(pw, sizeof(pw), "%s/password", dir);
        harness_write_file(key, "an-api-key-value", 0600);
        harness_write_file(pw, "a-password-value", 0600);
}

static void teardown(void) {
        harness_rmtree(dir);
}

static int check_config(const char *extra, char **ret_output) {
        const char *bin = getenv("VISIERD_BIN") ? getenv("VISIERD_BIN") : "./visierd";
        const char *argv[] = { bin, "--check-config", "--config", conf, NULL };
        char *text;

        ck_assert_int_ge(asprintf(&text,
                                  "# test configuration\n[visier]\nbase_url = https://example.api.visier.io\n"
                                  "username = svc-user\napikey_file = %s\npassword_file = %s\n%s",
                                  key, pw, extra),
                         0);
        harness_write_file(conf, text, 0644);
        free(text);
        return harness_run(argv, ret_output);
}

START_TEST(test_good_config) {
        char *out;

        ck_assert_int_eq(check_config("", &out), 0);
        ck_assert_str_eq(out, "configuration OK\n");
        free(out);
}
END_TEST

START_TEST(test_bad_key) {
        char *out, expect[256];

        ck_assert_int_ne(check_config("tokn_lifetime = 3600\n", &out), 0);
        snprintf(expect, sizeof(expect), "%s:7: unknown key 'tokn_lifetime' in section [visier]", conf);
        ck_assert_msg(strstr(out, expect), "output: %s", out);
        ck_assert_ptr_null(strstr(out, "configuration OK"));
        free(out);
}
END_TEST

START_TEST(test_missing_secret_file) {
        char *out;

        unlink(key);
        ck_assert_int_ne(check_config("", &out), 0);
        ck_assert_msg(strstr(out, "apikey_file: cannot open secret file") && strstr(out, "No such file or directory"),
                      "output: %s", out);
        free(out);
}
END_TEST

START_TEST(test_group_readable_secret_file) {
        char *out;

        harness_write_file(pw, "a-password-value", 0640);
        ck_assert_int_ne(check_config("", &out), 0);
        ck_assert_msg(strstr(out, "password_file: secret file") &&
                              strstr(out, "is accessible by group or others (mode 0640)"),
                      "output: %s", out);
        ck_assert_ptr_null(strstr(out, "a-password-value"));
        free(out);
}
END_TEST

START_TEST(test_every_error_reported) {
        char *out;

        harness_write_file(pw, "a-password-value", 0604);
        ck_assert_int_ne(check_config("bogus = 1\nrequest_timeout = 0\n[listen]\naddress = 10.1.2.3\n", &out), 0);
        ck_assert_msg(strstr(out, "unknown key 'bogus'") && strstr(out, "request_timeout: 0 is out of range") &&
                              strstr(out, "not a loopback address") && strstr(out, "accessible by group or others"),
                      "output: %s", out);
        free(out);
}
END_TEST

START_TEST(test_secrets_never_on_command_line) {
        const char *bin = getenv("VISIERD_BIN") ? getenv("VISIERD_BIN") : "./visierd";
        const char *argv[] = { bin, "--password", "x", NULL };
        char *out;

        ck_assert_int_eq(harness_run(argv, &out), 2);
        free(out);
}
END_TEST

START_TEST(test_dev_mode_config) {
        const char *bin = getenv("VISIERD_BIN") ? getenv("VISIERD_BIN") : "./visierd";
        const char *argv[] = { bin, "--dev", "--check-config", NULL };
        char *out;

        /* --dev starts visier-sim with throwaway credentials, builds a configuration pointing
         * at it, and (with --check-config) checks it and tears everything down again. */
        ck_assert_int_eq(harness_run(argv, &out), 0);
        ck_assert_msg(strstr(out, "visier-sim listening on 127.0.0.1:") && strstr(out, "configuration OK\n"),
                      "output: %s", out);
        free(out);
}
END_TEST

/* --check-config --online logs in to Visier and reads one endpoint: it says so and exits 0
 * against a sim that takes the credentials; with a password the sim refuses, or no Visier at
 * all, it exits 4 naming the reason (never the password); --online alone is a usage error. */
START_TEST(test_online_check) {
        const char *bin = getenv("VISIERD_BIN") ? getenv("VISIERD_BIN") : "./visierd";
        const char *argv[] = { bin, "--check-config", "--online", "--config", conf, NULL };
        const char *alone[] = { bin, "--online", "--config", conf, NULL };
        char text[1024], expect[512], *out;
        Sim sim;

        sim_start(&sim, NULL);
        snprintf(text, sizeof(text),
                 "[visier]\nbase_url = http://127.0.0.1:%u\nusername = %s\napikey_file = %s\npassword_file = %s\n",
                 sim.port, sim.username, sim.apikey_file, sim.password_file);
        harness_write_file(conf, text, 0644);
        ck_assert_int_eq(harness_run(argv, &out), 0);
        snprintf(expect, sizeof(expect),
                 "configuration OK\nonline check OK: logged in to Visier at http://127.0.0.1:%u as %s and read GET "
                 "/v1/admin/capabilities (200)\n",
                 sim.port, sim.username);
        ck_assert_str_eq(out, expect);
        free(out);
        ck_assert_int_eq(sim_counter(&sim, "logins"), 1);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 1);

        /* A password the sim refuses. */
        snprintf(text, sizeof(text),
                 "[visier]\nbase_url = http://127.0.0.1:%u\nusername = %s\napikey_file = %s\npassword_file = %s\n"
                 "request_timeout = 5\n",
                 sim.port, sim.username, sim.apikey_file, pw);
        harness_write_file(conf, text, 0644);
        ck_assert_int_eq(harness_run(argv, &out), 4);
        snprintf(expect, sizeof(expect), "online check failed: cannot log in to Visier at http://127.0.0.1:%u as %s: ",
                 sim.port, sim.username);
        ck_assert_msg(strstr(out, "configuration OK\n") && strstr(out, expect), "output: %s", out);
        ck_assert_msg(!strstr(out, "a-password-value") && !strstr(out, sim.password), "a password was shown: %s", out);
        free(out);
        sim_stop(&sim);

        /* No Visier at all. */
        ck_assert_int_eq(harness_run(argv, &out), 4);
        ck_assert_msg(strstr(out, "online check failed: cannot log in to Visier at http://127.0.0.1:"), "output: %s",
                      out);
        free(out);
        ck_assert_int_eq(harness_run(alone, &out), 2);
        ck_assert_msg(strstr(out, "--online goes with --check-config"), "output: %s", out);
        free(out);
}
END_TEST

int main(void) {
        Suite *s = suite_create("cli");
        TCase *tc = tcase_create("check-config");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_good_config);
        tcase_add_test(tc, test_bad_key);
        tcase_add_test(tc, test_missing_secret_file);
        tcase_add_test(tc, test_group_readable_secret_file);
        tcase_add_test(tc, test_every_error_reported);
        tcase_add_test(tc, test_secrets_never_on_command_line);
        tcase_add_test(tc, test_dev_mode_config);
        tcase_add_test(tc, test_online_check);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
