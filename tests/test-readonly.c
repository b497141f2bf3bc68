/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: a job database that becomes read-only — while visierd runs, and before it
 * starts. Writes are refused with 503 and nothing refused is applied; /readyz says why.
 * Needs a filesystem with the immutable flag and the right to set it (root): otherwise the
 * whole program reports SKIP (exit 77), never a pass.
 */
#include <check.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

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

static void start_all(const char *jobs_conf) {
        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 5",
                      jobs_conf);
        visierd_wait_ready(&vd);
}

static json_t *write_req(const char *method, const char *path, const char *body, const char *const *headers,
                         long *ret_status) {
        return visierd_request_json(&vd, method, path, body, headers, ret_status);
}

static void submit_create(const char *name, const char *unused) {
        char body[256];
        long status;

        (void) unused;
        snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s\"}]}", name);
        json_decref(write_req("POST", "/v1/admin/permissions", body, NULL, &status));
        ck_assert_msg(status == 202, "create answered %ld", status);
}

static void wait_queue_empty(void) {
        visierd_wait_drained(&vd, JOB_WAIT_SEC);
}

/* Set or clear the immutable flag (as chattr +i does): the file can no longer be written,
 * not even through descriptors already open, as on a read-only mount. */
static int set_immutable(const char *path, bool on) {
        int fd = open(path, O_RDONLY | O_CLOEXEC), flags = 0, r = 0;

        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0)
                r = -errno;
        else {
                flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
                if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0)
                        r = -errno;
        }
        close(fd);
        return r;
}

static int set_db_immutable(bool on) {
        static const char *const suffixes[] = { "", "-wal", "-shm" };
        char p[256];
        int r;

        for (size_t i = 0; i < 3; i++) {
                snprintf(p, sizeof(p), "%s/visierd.db%s", vd.dir, suffixes[i]);
                r = set_immutable(p, on);
                if (r < 0)
                        return r;
        }
        return 0;
}

START_TEST(test_read_only_database_refuses_cleanly_and_recovers) {
        long status;
        json_t *j;
        int r;

        start_all("[jobs]\nbatch_delay_ms = 0");
        submit_create("ro-before", NULL);
        wait_queue_empty();
        r = set_db_immutable(true);
        ck_assert_int_eq(r, 0); /* main() checked that the flag works here */
        j = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"ro-refused\"}]}", NULL,
                      &status);
        ck_assert_int_eq(set_db_immutable(false), 0);
        ck_assert_msg(status == 503, "a write to a read-only database answered %ld", status);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "ServiceUnavailable");
        json_decref(j);

        submit_create("ro-after", NULL);
        wait_queue_empty();
        j = sim_control_get(&sim, "/_sim/permissions");
        ck_assert_int_eq(sim_count_named(j, "ro-before"), 1);
        ck_assert_int_eq(sim_count_named(j, "ro-refused"), 0);
        ck_assert_int_eq(sim_count_named(j, "ro-after"), 1);
        json_decref(j);
}
END_TEST


/* visierd restarted on a database it cannot write: it serves reads, /readyz says the job
 * database is read-only, and writes are refused until it can write again (after a restart). */
START_TEST(test_read_only_database_at_start) {
        long status;
        json_t *j;
        char *u;

        start_all("[jobs]\nbatch_delay_ms = 0");
        submit_create("ro-start-before", NULL);
        wait_queue_empty();
        ck_assert_int_eq(visierd_stop(&vd), 0);
        ck_assert_int_eq(set_db_immutable(true), 0);
        visierd_restart(&vd);
        u = visierd_url(&vd, "/readyz");
        j = http_get_json(u, &status);
        ck_assert_int_eq(status, 503);
        ck_assert_msg(readyz_says(j, "is open read-only"), "readyz: %s", json_dumps(j, JSON_COMPACT));
        json_decref(j);
        j = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"ro-start-refused\"}]}",
                      NULL, &status);
        ck_assert_int_eq(status, 503);
        json_decref(j);
        ck_assert_int_eq(visierd_stop(&vd), 0);
        ck_assert_int_eq(set_db_immutable(false), 0);

        visierd_restart(&vd);
        visierd_wait_ready(&vd);
        submit_create("ro-start-after", NULL);
        wait_queue_empty();
        j = sim_control_get(&sim, "/_sim/permissions");
        ck_assert_int_eq(sim_count_named(j, "ro-start-before"), 1);
        ck_assert_int_eq(sim_count_named(j, "ro-start-refused"), 0);
        ck_assert_int_eq(sim_count_named(j, "ro-start-after"), 1);
        json_decref(j);
        free(u);
}
END_TEST

/* Can this process set the immutable flag on a file under $TMPDIR? (Outside any test: no
 * harness helpers, which assert.) */
static int immutable_supported(char *why, size_t len) {
        const char *tmp = getenv("TMPDIR");
        char dir[256], p[300];
        int fd, r;

        snprintf(dir, sizeof(dir), "%s/visierd-ro-probe-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
                snprintf(why, len, "%s", strerror(errno));
                return -errno;
        }
        snprintf(p, sizeof(p), "%s/probe", dir);
        fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
                close(fd);
        r = set_immutable(p, true);
        if (r == 0)
                r = set_immutable(p, false);
        snprintf(why, len, "%s", strerror(r < 0 ? -r : 0));
        unlink(p);
        rmdir(dir);
        return r;
}

int main(void) {
        Suite *s = suite_create("readonly");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        char why[128];
        int failed;

        if (immutable_supported(why, sizeof(why)) < 0) {
                printf("SKIP: cannot set the immutable flag under $TMPDIR (%s); needs root on ext4, xfs or btrfs\n",
                       why);
                return 77;
        }
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_read_only_database_refuses_cleanly_and_recovers);
        tcase_add_test(tc, test_read_only_database_at_start);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
