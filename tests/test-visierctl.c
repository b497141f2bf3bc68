/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: the real visierctl against the real visierd and visier-sim. Every command in
 * table and --json form, and every documented exit status: 0 success, 1 failed job or
 * refused request, 2 usage, 3 unreachable, 4 timeout, 5 not ready. A tiny canned HTTP server
 * checks the exact Authorization line, a 5xx answer and the HTTP timeout. Named exports are
 * listed, and streamed to files byte-identical to what visierd serves; a broken transfer
 * leaves no file behind.
 */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

static Sim sim;
static Visierd vd;
static char url[64], scratch[128];

static void setup(void) {
        harness_mkdtemp(scratch, sizeof(scratch), "visierctl-test");
}

static void pty_stop(void);

static void teardown(void) {
        pty_stop();
        if (vd.pid > 0)
                ck_assert_int_eq(visierd_stop(&vd), 0);
        sim_stop(&sim);
        if (vd.dir[0])
                harness_rmtree(vd.dir);
        if (sim.dir[0])
                harness_rmtree(sim.dir);
        harness_rmtree(scratch);
        memset(&vd, 0, sizeof(vd));
        memset(&sim, 0, sizeof(sim));
        url[0] = '\0';
}

static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };
#define FAST "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 5"

static void start_all(const char *tail) {
        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, FAST, tail);
        visierd_wait_ready(&vd);
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", vd.port);
}

static void set_faults(const char *json) {
        json_decref(sim_control_post(&sim, "/_sim/faults", json));
}

static const char *ctl_bin(void) {
        static char bin[512];
        const char *top = getenv("TOP_BUILDDIR");

        snprintf(bin, sizeof(bin), "%s/visierctl", top ? top : ".");
        return bin;
}

/* Run visierctl with args (NULL-terminated), --url first when a visierd runs; returns its exit
 * status and its stdout+stderr in *out (caller frees). */
static int run_ctl_v(char **out, const char *const *args) {
        const char *argv[32];
        size_t n = 0;

        argv[n++] = ctl_bin();
        if (url[0]) {
                argv[n++] = "--url";
                argv[n++] = url;
        }
        for (size_t i = 0; args[i]; i++) {
                ck_assert(n < ELEMENTSOF(argv) - 1);
                argv[n++] = args[i];
        }
        argv[n] = NULL;
        return harness_run(argv, out);
}
#define CTL(out, ...) run_ctl_v(out, (const char *const[]) { __VA_ARGS__, NULL })

#define assert_has(out, needle) ck_assert_msg(strstr((out), (needle)), "expected \"%s\" in:\n%s", (needle), (out))
#define assert_lacks(out, needle) ck_assert_msg(!strstr((out), (needle)), "did not expect \"%s\" in:\n%s", (needle), (out))

/* The output is exactly one JSON document (nothing else on stdout or stderr). */
static json_t *parse_one(const char *out) {
        json_error_t e;
        json_t *j = json_loads(out, 0, &e);

        ck_assert_msg(j, "not one JSON document (%s):\n%s", e.text, out);
        return j;
}

/* The JSON document that starts the output (an error line may follow on stderr). */
static json_t *parse_first(const char *out) {
        json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);

        ck_assert_msg(j, "no JSON document in:\n%s", out);
        return j;
}

static char *write_change(const char *name, const char *content) {
        char *p;

        ck_assert_int_ge(asprintf(&p, "%s/%s", scratch, name), 0);
        harness_write_file(p, content, 0600);
        return p;
}

/* Submit a create of one permission; returns the job id. */
static long long submit_create(const char *display_name) {
        char body[256], *file, *out;
        long long id;
        json_t *j;

        snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s\"}]}", display_name);
        file = write_change(display_name, body);
        ck_assert_int_eq(CTL(&out, "--json", "submit", file), 0);
        j = parse_one(out);
        id = json_integer_value(json_object_get(j, "id"));
        ck_assert_int_gt(id, 0);
        json_decref(j);
        free(out);
        free(file);
        return id;
}

static char *id_str(long long id) {
        static char buf[4][32];
        static int k;

        k = (k + 1) % 4;
        snprintf(buf[k], sizeof(buf[k]), "%lld", id);
        return buf[k];
}

/* ---- status and health ---- */

START_TEST(test_status) {
        char *out;
        json_t *j;

        start_all(NULL);
        ck_assert_int_eq(CTL(&out, "status"), 0);
        assert_has(out, "version:");
        assert_has(out, PACKAGE_VERSION);
        assert_has(out, "uptime:");
        assert_has(out, "token:");
        assert_has(out, "token:          valid, expires in ");
        assert_has(out, "rate budget:");
        assert_has(out, "0 queued, 0 running, 0 succeeded, 0 failed, 0 cancelled");
        assert_has(out, "oldest queued:");
        assert_has(out, "publisher:");
        assert_has(out, "write calls");
        free(out);

        ck_assert_int_eq(CTL(&out, "status", "--json"), 0);
        j = parse_one(out);
        ck_assert_str_eq(json_string_value(json_object_get(j, "version")), PACKAGE_VERSION);
        ck_assert(json_is_object(json_object_get(j, "jobs")));
        ck_assert(json_is_true(json_object_get(json_object_get(j, "token"), "valid")));
        /* No write call in flight: present, and null. */
        ck_assert(json_object_get(json_object_get(j, "publisher"), "current_call"));
        ck_assert(json_is_null(json_object_get(json_object_get(j, "publisher"), "current_call")));
        json_decref(j);
        free(out);
}
END_TEST

START_TEST(test_health_ready) {
        char *out;
        json_t *j;

        start_all(NULL);
        ck_assert_int_eq(CTL(&out, "health"), 0);
        assert_has(out, "healthz: ok");
        assert_has(out, "readyz:  ready");
        free(out);
        ck_assert_int_eq(CTL(&out, "--json", "health"), 0);
        j = parse_one(out);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "healthz"), "status")), "ok");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "readyz"), "status")), "ready");
        json_decref(j);
        free(out);
}
END_TEST

/* check: ready, and a read through visierd reaches Visier (not the cache) and comes back. */
START_TEST(test_check) {
        long long before;
        char *out;

        start_all("[cache]\nmax_bytes = 1048576\nmodel_ttl = 300\n"); /* capabilities would be cached */
        before = sim_calls(&sim, "/v1/admin/capabilities");
        ck_assert_int_eq(CTL(&out, "check"), 0);
        ck_assert_str_eq(out, "readyz:  ready\nread:    GET /v1/admin/capabilities through visierd: 200 from Visier\n");
        free(out);
        ck_assert_int_eq(CTL(&out, "check"), 0);
        free(out);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities") - before, 2); /* each one reached Visier */
}
END_TEST

START_TEST(test_health_not_ready) {
        char bad[192], *out;
        json_t *j;
        Sim wrong;

        sim_start(&sim, NULL);
        /* visierd gets a password the sim does not accept. */
        snprintf(bad, sizeof(bad), "%s/wrong-password", sim.dir);
        harness_write_file(bad, "not-the-password", 0600);
        wrong = sim;
        snprintf(wrong.password_file, sizeof(wrong.password_file), "%s", bad);
        visierd_start(&vd, &wrong, "request_timeout = 3", NULL);
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", vd.port);
        for (int i = 0; i < 500 && sim_counter(&sim, "login_failures") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);

        ck_assert_int_eq(CTL(&out, "check"), 5);
        assert_has(out, "readyz:  not ready\n  - no valid Visier token");
        assert_lacks(out, "read:");
        free(out);
        ck_assert_int_eq(CTL(&out, "health"), 5);
        assert_has(out, "healthz: ok");
        assert_has(out, "readyz:  not ready");
        assert_has(out, "  - no valid Visier token");
        assert_has(out, "login refused by Visier: HTTP 401");
        assert_has(out, "visierctl: visierd is not ready");
        free(out);
        ck_assert_int_eq(CTL(&out, "health", "--json"), 5);
        j = parse_first(out);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "readyz"), "status")), "not ready");
        ck_assert_int_ge(json_array_size(json_object_get(json_object_get(j, "readyz"), "reasons")), 1);
        json_decref(j);
        free(out);
}
END_TEST

/* ---- submit, job, wait ---- */

START_TEST(test_submit_job_and_wait) {
        char *file, *out;
        long long id;
        json_t *j;

        start_all(NULL);
        file = write_change("good.json",
                            "{\"permissions\":[{\"displayName\":\"ctl-good\",\"correlationId\":\"ctl-corr-1\"}]}");
        ck_assert_int_eq(CTL(&out, "submit", file), 0);
        assert_has(out, "id:");
        assert_has(out, "operation:");
        assert_has(out, "create");
        assert_has(out, "client:");
        free(out);
        id = 1;

        ck_assert_int_eq(CTL(&out, "wait", id_str(id), "--timeout", "60"), 0);
        assert_has(out, "ID  STATE");
        assert_has(out, "succeeded");
        assert_lacks(out, "\r");
        assert_lacks(out, "\033"); /* no progress line when stderr is not a terminal */
        free(out);

        ck_assert_int_eq(CTL(&out, "job", id_str(id)), 0);
        assert_has(out, "state:");
        assert_has(out, "succeeded");
        assert_has(out, "INDEX  STATE      CORRELATION ID  PERMISSION / ERROR");
        assert_has(out, "ctl-corr-1");
        assert_has(out, "(ctl-good)");
        free(out);

        ck_assert_int_eq(CTL(&out, "--json", "job", id_str(id)), 0);
        j = parse_one(out);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), id);
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded");
        ck_assert_int_eq(json_array_size(json_object_get(j, "item_results")), 1);
        json_decref(j);
        free(out);

        /* A second submit, in --json form: the 202 job itself. */
        ck_assert_int_eq(CTL(&out, "submit", "--json", file, "--idempotency-key", "ctl-key-1"), 0);
        j = parse_one(out);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), 2);
        ck_assert_str_eq(json_string_value(json_object_get(j, "idempotency_key")), "ctl-key-1");
        json_decref(j);
        free(out);
        /* The same key with another body: visierd refuses with 422. */
        free(file);
        file = write_change("other.json", "{\"permissions\":[{\"displayName\":\"ctl-other\"}]}");
        ck_assert_int_eq(CTL(&out, "submit", file, "--idempotency-key", "ctl-key-1"), 1);
        assert_has(out, "(HTTP 422)");
        free(out);

        /* From standard input. */
        {
                const char *argv[] = { "/bin/sh", "-c", "exec \"$0\" --url \"$1\" submit - < \"$2\"", ctl_bin(), url, file,
                                       NULL };
                ck_assert_int_eq(harness_run(argv, &out), 0);
                assert_has(out, "create");
                free(out);
        }
        free(file);
}
END_TEST

START_TEST(test_submit_bad_file) {
        char *file, *out;
        json_t *j;

        start_all(NULL);
        file = write_change("bad.json",
                            "{\"permissions\":[{\"displayName\":\"a\"},{\"displayName\":\"b\",\"correlationId\":\"x!\"}]}");
        ck_assert_int_eq(CTL(&out, "submit", file), 1);
        assert_has(out, "visierctl: permissions[1].correlationId: ");
        assert_has(out, "(HTTP 400)");
        free(out);
        ck_assert_int_eq(CTL(&out, "submit", file, "--json"), 1);
        j = parse_first(out);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "BadRequest");
        json_decref(j);
        free(out);
        /* The route follows --operation: an update needs a permissionId. */
        free(file);
        file = write_change("upd.json", "{\"permissions\":[{\"displayName\":\"a\"}]}");
        ck_assert_int_eq(CTL(&out, "submit", file, "--operation", "update"), 1);
        assert_has(out, "permissions[0].permissionId: ");
        free(out);
        ck_assert_int_eq(CTL(&out, "submit", file, "--operation", "frobnicate"), 2);
        assert_has(out, "--operation must be");
        free(out);
        ck_assert_int_eq(CTL(&out, "submit", "/nonexistent/change.json"), 2);
        assert_has(out, "cannot read /nonexistent/change.json");
        free(out);
        free(file);
        /* Nothing was queued. */
        ck_assert_int_eq(CTL(&out, "--json", "jobs"), 0);
        j = parse_one(out);
        ck_assert_int_eq(json_array_size(json_object_get(j, "jobs")), 0);
        json_decref(j);
        free(out);
}
END_TEST

START_TEST(test_submit_wait) {
        char *file, *out;
        json_t *j, *s;

        start_all("[jobs]\nbatch_delay_ms = 0");
        file = write_change("w.json", "{\"permissions\":[{\"displayName\":\"ctl-waited\",\"correlationId\":\"ctl-w-1\"}]}");
        ck_assert_int_eq(CTL(&out, "submit", file, "--wait", "20"), 0);
        assert_has(out, "RESULT     PERMISSION ID");
        assert_has(out, "succeeded");
        assert_has(out, "ctl-w-1");
        assert_has(out, "ctl-waited");
        free(out);
        free(file);

        file = write_change("w2.json", "{\"permissions\":[{\"displayName\":\"ctl-waited-2\",\"correlationId\":\"ctl-w-2\"}]}");
        ck_assert_int_eq(CTL(&out, "--json", "submit", "--wait", "20", file), 0);
        j = parse_one(out);
        s = json_array_get(json_object_get(j, "successes"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(s, "correlationId")), "ctl-w-2");
        ck_assert_int_eq(json_array_size(json_object_get(j, "failures")), 0);
        json_decref(j);
        free(out);
        free(file);

        /* Not done in time: the job is printed, and the exit status says timed out. */
        set_faults("{\"publish_ms\":5000}");
        file = write_change("w3.json", "{\"permissions\":[{\"displayName\":\"ctl-slow\"}]}");
        ck_assert_int_eq(CTL(&out, "submit", file, "--wait", "1"), 4);
        assert_has(out, "is not finished after 1 s; follow it with: visierctl wait 3");
        free(out);
        free(file);
}
END_TEST

START_TEST(test_wait_failed_and_retry) {
        char *out;
        long long id;
        json_t *j;

        start_all(NULL);
        set_faults("{\"reject_display_name\":\"poison\"}");
        id = submit_create("poison");
        ck_assert_int_eq(CTL(&out, "wait", "--timeout", "60", id_str(id)), 1);
        assert_has(out, "failed");
        free(out);
        ck_assert_int_eq(CTL(&out, "--json", "wait", id_str(id)), 1);
        j = parse_one(out);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "jobs"), 0), "state")),
                         "failed");
        json_decref(j);
        free(out);
        ck_assert_int_eq(CTL(&out, "job", id_str(id)), 0); /* showing a failed job is no failure */
        assert_has(out, "upstream status:");
        assert_has(out, "400");
        free(out);

        /* Retry: the job is queued again, and now succeeds. A second retry is refused. */
        set_faults("{\"reject_display_name\":\"\"}");
        ck_assert_int_eq(CTL(&out, "retry", id_str(id)), 0);
        assert_has(out, "queued");
        free(out);
        ck_assert_int_eq(CTL(&out, "retry", id_str(id)), 1);
        assert_has(out, "only failed jobs can be retried (HTTP 409)");
        free(out);
        ck_assert_int_eq(CTL(&out, "wait", id_str(id), "--timeout", "60"), 0);
        assert_has(out, "succeeded");
        free(out);
}
END_TEST

START_TEST(test_wait_timeout) {
        char *out;
        long long id;
        usec_t t0;

        start_all(NULL);
        set_faults("{\"publish_ms\":5000}");
        id = submit_create("ctl-held");
        t0 = clock_now();
        ck_assert_int_eq(CTL(&out, "wait", id_str(id), "--timeout", "1"), 4);
        ck_assert_int_lt(clock_now() - t0, 4 * USEC_PER_SEC);
        assert_has(out, "visierctl: timed out after 1 s: job ");
        free(out);
}
END_TEST

START_TEST(test_cancel) {
        long long first, second;
        char *out;
        json_t *j;

        start_all("[jobs]\nbatch_delay_ms = 0");
        set_faults("{\"publish_ms\":3000}");
        first = submit_create("ctl-first");
        /* While the first is being published, the second waits in the queue. */
        for (int i = 0; i < 400 && sim_counter(&sim, "write_calls") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 1);
        second = submit_create("ctl-second");

        ck_assert_int_eq(CTL(&out, "cancel", id_str(first)), 1);
        assert_has(out, "is running; only queued jobs can be cancelled (HTTP 409)");
        free(out);
        ck_assert_int_eq(CTL(&out, "--json", "cancel", id_str(second)), 0);
        j = parse_one(out);
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "cancelled");
        json_decref(j);
        free(out);
        ck_assert_int_eq(CTL(&out, "cancel", id_str(second)), 1);
        assert_has(out, "is cancelled; only queued jobs can be cancelled (HTTP 409)");
        free(out);
        ck_assert_int_eq(CTL(&out, "cancel", "999999"), 1);
        assert_has(out, "no such job");
        assert_has(out, "(HTTP 404)");
        free(out);
        /* A cancelled job among those waited for: exit 1. */
        ck_assert_int_eq(CTL(&out, "wait", id_str(first), id_str(second), "--timeout", "60"), 1);
        assert_has(out, "succeeded");
        assert_has(out, "cancelled");
        free(out);
        /* Finished: no longer cancellable. */
        ck_assert_int_eq(CTL(&out, "cancel", id_str(first)), 1);
        assert_has(out, "is succeeded; only queued jobs can be cancelled (HTTP 409)");
        free(out);
        ck_assert_int_eq(CTL(&out, "cancel", "12abc"), 2);
        assert_has(out, "'12abc' is not a job id");
        free(out);
}
END_TEST

/* ---- jobs ---- */

START_TEST(test_jobs_list) {
        long long ids[4];
        char *out, *a, *b;
        json_t *j;

        start_all(NULL);
        set_faults("{\"reject_display_name\":\"poison\"}");
        ids[0] = submit_create("ctl-list-0");
        ids[1] = submit_create("ctl-list-1");
        ids[2] = submit_create("poison");
        ids[3] = submit_create("ctl-list-3");
        ck_assert_int_eq(CTL(&out, "wait", id_str(ids[0]), id_str(ids[1]), id_str(ids[3]), "--timeout", "60"), 0);
        free(out);
        ck_assert_int_eq(CTL(&out, "wait", id_str(ids[2]), "--timeout", "60"), 1);
        free(out);

        ck_assert_int_eq(CTL(&out, "jobs"), 0);
        ck_assert_msg(strncmp(out, "ID  STATE      OPERATION  ITEMS  ATTEMPTS  CREATED", 50) == 0, "header:\n%s", out);
        assert_has(out, "CLIENT\n");
        assert_has(out, "tcp:127.0.0.1");
        /* Newest first. */
        a = strstr(out, "\n4  ");
        b = strstr(out, "\n1  ");
        ck_assert_msg(a && b && a < b, "not newest first:\n%s", out);
        free(out);

        ck_assert_int_eq(CTL(&out, "jobs", "--state", "failed"), 0);
        assert_has(out, "\n3   failed  create");
        assert_lacks(out, "succeeded");
        free(out);

        ck_assert_int_eq(CTL(&out, "jobs", "--limit", "2"), 0);
        assert_has(out, "\n4  ");
        assert_has(out, "\n3  ");
        assert_lacks(out, "\n2  ");
        assert_has(out, "more jobs: visierctl jobs --before 3");
        free(out);

        ck_assert_int_eq(CTL(&out, "--json", "jobs", "--limit", "1", "--state", "succeeded"), 0);
        j = parse_one(out);
        ck_assert_int_eq(json_array_size(json_object_get(j, "jobs")), 1);
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(json_object_get(j, "jobs"), 0), "id")), 4);
        ck_assert(json_is_string(json_object_get(j, "next")));
        json_decref(j);
        free(out);

        ck_assert_int_eq(CTL(&out, "jobs", "--before", "3"), 0);
        assert_has(out, "\n2  ");
        assert_lacks(out, "\n3  ");
        free(out);

        ck_assert_int_eq(CTL(&out, "jobs", "--state", "bogus"), 2);
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--limit", "0"), 2);
        free(out);
}
END_TEST

/* GET /jobs?... as "ids|next" ("4,2|/jobs?before=2&..."), the answer required to be 200. */
static char *jobs_query(const char *query) {
        char path[512], *ret;
        json_t *j, *job;
        size_t i, n = 0;
        long status;
        char ids[256] = "";

        snprintf(path, sizeof(path), "/jobs?%s", query);
        j = visierd_request_json(&vd, "GET", path, NULL, NULL, &status);
        ck_assert_msg(status == 200, "GET %s: %ld", path, status);
        json_array_foreach(json_object_get(j, "jobs"), i, job)
                n += (size_t) snprintf(ids + n, sizeof(ids) - n, "%s%lld", i ? "," : "",
                                       (long long) json_integer_value(json_object_get(job, "id")));
        ck_assert_int_ge(asprintf(&ret, "%s|%s", ids, json_string_value(json_object_get(j, "next")) ?: "null"), 0);
        json_decref(j);
        return ret;
}

#define assert_jobs_query(query, want)                                                                             \
        do {                                                                                                       \
                char *got_ = jobs_query(query);                                                                    \
                ck_assert_msg(streq(got_, want), "GET /jobs?%s: %s, expected %s", query, got_, want);              \
                free(got_);                                                                                        \
        } while (0)

/* A bad filter value: 400 in Visier's Status shape, naming the parameter. */
static void assert_jobs_refused(const char *query, const char *message) {
        char path[512];
        long status;
        json_t *j;

        snprintf(path, sizeof(path), "/jobs?%s", query);
        j = visierd_request_json(&vd, "GET", path, NULL, NULL, &status);
        ck_assert_msg(status == 400, "GET %s: %ld, expected 400", path, status);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "BadRequest");
        ck_assert_msg(strstr(strempty(json_string_value(json_object_get(j, "message"))), message),
                      "GET %s: message '%s', expected '%s'", path, json_string_value(json_object_get(j, "message")),
                      message);
        ck_assert(json_is_boolean(json_object_get(j, "userError")));
        json_decref(j);
}

/* GET /jobs filtered by operation, client and creation time, server-side, with the filters
 * carried by the next link and bad values refused. */
START_TEST(test_jobs_filters_api) {
        char *out, *file, future[64], query[256];

        start_all(NULL);
        submit_create("ctl-filter-1");
        file = write_change("del.json", "{\"permissionIds\":[\"no-such-permission\"]}");
        ck_assert_int_eq(CTL(&out, "submit", file, "--operation", "delete"), 0);
        free(out);
        free(file);
        submit_create("ctl-filter-3");
        visierd_wait_drained(&vd, 60);

        assert_jobs_query("", "3,2,1|null");
        assert_jobs_query("operation=create", "3,1|null");
        assert_jobs_query("operation=delete", "2|null");
        assert_jobs_query("operation=revert", "|null");
        assert_jobs_query("client=tcp%3A127.0.0.1", "3,2,1|null");
        assert_jobs_query("client=tcp:127.0.0.2", "|null");
        assert_jobs_query("client=x%27%20OR%20%271%27%3D%271", "|null"); /* a value, never SQL */
        assert_jobs_query("since=0", "3,2,1|null");
        assert_jobs_query("since=1970-01-01T00:00:00Z", "3,2,1|null");
        snprintf(future, sizeof(future), "%lld", (long long) (time(NULL) + 3600));
        snprintf(query, sizeof(query), "since=%s", future);
        assert_jobs_query(query, "|null");
        assert_jobs_query("since=2100-01-01T01:00:00%2B01:00", "|null");
        assert_jobs_query("state=succeeded&operation=create&client=tcp%3A127.0.0.1&since=2000-01-01T00:00:00Z",
                          "3,1|null");
        /* The next page keeps every filter (escaped), and following it gives the rest. */
        assert_jobs_query("operation=create&client=tcp%3A127.0.0.1&since=2000-01-01T00:00:00Z&limit=1",
                          "3|/jobs?before=3&limit=1&operation=create&client=tcp%3A127.0.0.1&since=2000-01-01T00%3A00%3A00Z");
        assert_jobs_query("before=3&limit=1&operation=create&client=tcp%3A127.0.0.1&since=2000-01-01T00%3A00%3A00Z",
                          "1|/jobs?before=1&limit=1&operation=create&client=tcp%3A127.0.0.1&since=2000-01-01T00%3A00%3A00Z");
        assert_jobs_query("before=1&limit=1&operation=create", "|null");
        /* Unchanged without the new parameters. */
        assert_jobs_query("limit=2", "3,2|/jobs?before=2&limit=2");
        assert_jobs_query("limit=1&state=succeeded", "3|/jobs?before=3&limit=1&state=succeeded");

        assert_jobs_refused("operation=frobnicate", "operation: must be create, update, delete");
        assert_jobs_refused("client=", "client: must be a client's name");
        assert_jobs_refused("client=a%01b", "client: must be a client's name");
        assert_jobs_refused("client=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                            "client: must be a client's name");
        assert_jobs_refused("since=yesterday", "since: must be an RFC 3339 date-time");
        assert_jobs_refused("since=2026-01-31", "since: must be an RFC 3339 date-time");
        assert_jobs_refused("since=2026-01-31T08:00:00", "since: must be an RFC 3339 date-time");
        assert_jobs_refused("since=-5", "since: must be an RFC 3339 date-time");
        assert_jobs_refused("state=done&operation=create", "state: must be queued");
}
END_TEST

/* visierctl jobs with the filters: sent to visierd, which does the filtering. */
START_TEST(test_jobs_filters_cli) {
        char *out, *file;

        start_all(NULL);
        submit_create("ctl-f-1");
        file = write_change("del.json", "{\"permissionIds\":[\"no-such-permission\"]}");
        ck_assert_int_eq(CTL(&out, "submit", file, "--operation", "delete"), 0);
        free(out);
        free(file);
        visierd_wait_drained(&vd, 60);

        ck_assert_int_eq(CTL(&out, "jobs", "--operation", "delete"), 0);
        assert_has(out, "\n2  ");
        assert_lacks(out, "\n1  ");
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--client", "tcp:127.0.0.1", "--operation", "create"), 0);
        assert_has(out, "\n1  ");
        assert_lacks(out, "\n2  ");
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--client", "someone else"), 0);
        assert_lacks(out, "\n1  ");
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--since", "1h"), 0); /* counted back from now */
        assert_has(out, "\n2  ");
        assert_has(out, "\n1  ");
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--since", "2100-01-01T00:00:00+01:00"), 0);
        ck_assert_msg(strncmp(out, "ID  STATE", 9) == 0 && strchr(out, '\n') == out + strlen(out) - 1,
                      "expected only the header:\n%s", out);
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--limit", "1", "--operation", "create", "--since", "0"), 0);
        assert_has(out, "\n1  ");
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--limit", "1", "--client", "tcp:127.0.0.1"), 0);
        assert_has(out, "more jobs: visierctl jobs --before 2 --client tcp:127.0.0.1 --limit 1\n");
        free(out);
        /* The hint is a command to paste: free-form values quoted for the shell. */
        ck_assert_int_eq(CTL(&out, "jobs", "--limit", "1", "--since", "0", "--operation", "create"), 0);
        assert_has(out, "more jobs: visierctl jobs --before 1 --operation create --since 0 --limit 1\n");
        free(out);
        /* visierd judges the values: its message, exit 1. */
        ck_assert_int_eq(CTL(&out, "jobs", "--since", "yesterday"), 1);
        assert_has(out, "visierctl: since: must be an RFC 3339 date-time");
        assert_has(out, "(HTTP 400)");
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--operation", "frobnicate"), 1);
        assert_has(out, "visierctl: operation: must be create, update, delete");
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--client", ""), 2);
        free(out);
}
END_TEST

/* ---- live screens ---- */

#define SCREEN_ENTER "\033[?1049h\033[?25l"
#define SCREEN_LEAVE "\033[?25h\033[?1049l"
#define PTY_TIMEOUT_MS 20000

/* visierctl on a pseudo-terminal: what it wrote so far. */
typedef struct Pty {
        pid_t pid;
        int fd;
        char buf[1 << 20];
        size_t len;
        bool eof;
} Pty;

static Pty pty;

static void pty_start(Pty *p, const char *const *args) {
        struct winsize ws = { .ws_row = 40, .ws_col = 200 };
        const char *argv[32];
        size_t n = 0;

        argv[n++] = ctl_bin();
        argv[n++] = "--url";
        argv[n++] = url;
        for (size_t i = 0; args[i]; i++) {
                ck_assert(n < ELEMENTSOF(argv) - 1);
                argv[n++] = args[i];
        }
        argv[n] = NULL;
        p->len = 0;
        p->eof = false;
        p->pid = forkpty(&p->fd, NULL, NULL, &ws);
        ck_assert_int_ge(p->pid, 0);
        if (p->pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                execv(argv[0], (char *const *) argv);
                _exit(127);
        }
}

/* Read what comes until the deadline (or the end). */
static void pty_read(Pty *p, usec_t deadline) {
        while (!p->eof && p->len < sizeof(p->buf) - 1) {
                usec_t now = clock_now();
                struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
                ssize_t n;

                if (now >= deadline)
                        return;
                if (poll(&pfd, 1, (int) ((deadline - now) / USEC_PER_MSEC) + 1) <= 0)
                        continue;
                n = read(p->fd, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
                if (n <= 0) { /* EIO: every process holding the terminal is gone */
                        p->eof = true;
                        return;
                }
                p->len += (size_t) n;
                p->buf[p->len] = '\0';
                return;
        }
}

/* Wait (bounded) until needle appears at or after offset from; its offset. */
static size_t pty_expect(Pty *p, size_t from, const char *needle) {
        usec_t deadline = clock_now() + PTY_TIMEOUT_MS * USEC_PER_MSEC;
        char *at;

        p->buf[p->len] = '\0';
        while (!(at = from <= p->len ? strstr(p->buf + from, needle) : NULL)) {
                ck_assert_msg(clock_now() < deadline && !p->eof, "\"%s\" did not appear on the screen; it shows:\n%s",
                              needle, p->len > 3000 ? p->buf + p->len - 3000 : p->buf);
                pty_read(p, deadline);
        }
        return (size_t) (at - p->buf);
}

/* Wait (bounded) for visierctl to end; its exit status. */
static int pty_exit(Pty *p) {
        usec_t deadline = clock_now() + PTY_TIMEOUT_MS * USEC_PER_MSEC;
        int status;

        for (;;) {
                pid_t r = waitpid(p->pid, &status, WNOHANG);

                ck_assert_int_ge(r, 0);
                if (r == p->pid)
                        break;
                ck_assert_msg(clock_now() < deadline, "visierctl did not end; the screen shows:\n%s",
                              p->len > 3000 ? p->buf + p->len - 3000 : p->buf);
                pty_read(p, clock_now() + 50 * USEC_PER_MSEC);
        }
        while (!p->eof) /* what it wrote last */
                pty_read(p, clock_now() + 200 * USEC_PER_MSEC);
        p->pid = 0;
        ck_assert_msg(WIFEXITED(status), "visierctl died of signal %d", WTERMSIG(status));
        return WEXITSTATUS(status);
}

/* The terminal is as visierctl found it: canonical input with echo. */
static void assert_terminal_restored(Pty *p) {
        struct termios t;

        ck_assert_int_eq(tcgetattr(p->fd, &t), 0);
        ck_assert_msg((t.c_lflag & (ICANON | ECHO)) == (ICANON | ECHO), "the terminal was left without echo");
        close(p->fd);
}

static void pty_stop(void) {
        if (pty.pid > 0) {
                kill(pty.pid, SIGKILL);
                waitpid(pty.pid, NULL, 0);
                close(pty.fd);
                pty.pid = 0;
        }
}

/* A screen ended by SIGQUIT (Ctrl-\\) puts the terminal back and exits 128+3; one whose reader
 * goes away (top | head, the keys still on the terminal) ends with exit 1 and the terminal put
 * back, never killed by SIGPIPE with echo off. */
START_TEST(test_screen_quit_and_broken_pipe) {
        size_t entered;
        int out[2], status;
        char buf[4096];
        ssize_t n = 0;
        usec_t deadline;

        start_all(NULL);
        pty_start(&pty, (const char *const[]) { "top", "--interval", "0.2", NULL });
        entered = pty_expect(&pty, 0, SCREEN_ENTER);
        pty_expect(&pty, entered, "publishing:   idle");
        ck_assert_int_eq(kill(pty.pid, SIGQUIT), 0);
        ck_assert_int_eq(pty_exit(&pty), 128 + SIGQUIT);
        pty_expect(&pty, entered, SCREEN_LEAVE);
        assert_terminal_restored(&pty);

        ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
        pty.len = 0;
        pty.eof = false;
        pty.pid = forkpty(&pty.fd, NULL, NULL, NULL);
        ck_assert_int_ge(pty.pid, 0);
        if (pty.pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                dup2(out[1], STDOUT_FILENO);
                execl(ctl_bin(), ctl_bin(), "--url", url, "top", "--interval", "0.2", (char *) NULL);
                _exit(127);
        }
        close(out[1]);
        for (deadline = clock_now() + PTY_TIMEOUT_MS * USEC_PER_MSEC; n <= 0 || !memmem(buf, (size_t) n, "queue:", 6);) {
                struct pollfd p = { .fd = out[0], .events = POLLIN };

                ck_assert_msg(clock_now() < deadline, "no frame from visierctl top");
                if (poll(&p, 1, 200) == 1)
                        n = read(out[0], buf, sizeof(buf));
        }
        close(out[0]); /* the reader goes away */
        for (deadline = clock_now() + PTY_TIMEOUT_MS * USEC_PER_MSEC; waitpid(pty.pid, &status, WNOHANG) == 0;) {
                ck_assert_msg(clock_now() < deadline, "visierctl top did not end when its reader went away");
                pty_read(&pty, clock_now() + 50 * USEC_PER_MSEC);
        }
        pty.pid = 0;
        ck_assert_msg(WIFEXITED(status), "visierctl top died of signal %d", WTERMSIG(status));
        ck_assert_int_eq(WEXITSTATUS(status), 1);
        assert_terminal_restored(&pty);
}
END_TEST

/* jobs --watch on a terminal redraws in place: a job seen running while Visier holds its
 * write is then seen succeeded, on the same screen, without visierctl being run again; q ends
 * it and puts the terminal back. */
START_TEST(test_jobs_watch_pty) {
        size_t entered, running, done, end;

        start_all("[jobs]\nbatch_delay_ms = 0");
        set_faults("{\"hold_writes\":true}");
        submit_create("ctl-watched");
        pty_start(&pty, (const char *const[]) { "jobs", "--watch", "--interval", "0.2", NULL });
        entered = pty_expect(&pty, 0, SCREEN_ENTER);
        pty_expect(&pty, entered, "visierctl jobs --watch  every 0.2 s");
        running = pty_expect(&pty, entered, " running ");
        /* A second frame, drawn over the first (home, not scrolled), still running. */
        running = pty_expect(&pty, pty_expect(&pty, running, "\033[H"), " running ");
        assert_lacks(pty.buf, "succeeded");

        set_faults("{\"hold_writes\":false}");
        done = pty_expect(&pty, running, " succeeded ");
        ck_assert_uint_gt(done, running);
        ck_assert_int_eq(write(pty.fd, "q", 1), 1);
        ck_assert_int_eq(pty_exit(&pty), 0);
        end = pty_expect(&pty, done, SCREEN_LEAVE);
        ck_assert_uint_gt(end, done);
        assert_terminal_restored(&pty);
}
END_TEST

/* top on a terminal: the write call in flight and the queue, then idle and finished, redrawn;
 * Ctrl-C ends it and puts the terminal back. */
START_TEST(test_top_pty) {
        size_t entered, calling, idle;

        start_all("[jobs]\nbatch_delay_ms = 0");
        pty_start(&pty, (const char *const[]) { "top", "--interval", "0.2", NULL });
        entered = pty_expect(&pty, 0, SCREEN_ENTER);
        pty_expect(&pty, entered, "queue:        0 queued, 0 running");
        pty_expect(&pty, entered, "publishing:   idle");
        pty_expect(&pty, entered, "rate budget:  ");
        pty_expect(&pty, entered, "token:        valid, expires in ");

        set_faults("{\"hold_writes\":true}");
        submit_create("ctl-topped");
        calling = pty_expect(&pty, entered, "publishing:   POST /v1/admin/permissions: 1 job, 1 item, for ");
        pty_expect(&pty, entered, "queue:        0 queued, 1 running");
        pty_expect(&pty, entered, "write calls:  1, 1 items sent");

        set_faults("{\"hold_writes\":false}");
        idle = pty_expect(&pty, calling, "publishing:   idle");
        pty_expect(&pty, calling, "finished:     1 succeeded, 0 failed, 0 cancelled");
        ck_assert_int_eq(write(pty.fd, "\003", 1), 1); /* Ctrl-C: SIGINT from the terminal */
        ck_assert_int_eq(pty_exit(&pty), 0);
        pty_expect(&pty, idle, SCREEN_LEAVE);
        assert_terminal_restored(&pty);
}
END_TEST

/* Not on a terminal: a fresh table per interval, no escape codes; --count ends it. */
START_TEST(test_screens_not_on_a_terminal) {
        char *out, *second;

        start_all(NULL);
        submit_create("ctl-plain");
        visierd_wait_drained(&vd, 60);
        ck_assert_int_eq(CTL(&out, "jobs", "--watch", "--interval", "0.1", "--count", "2"), 0);
        assert_lacks(out, "\033");
        ck_assert_msg(strncmp(out, "visierctl jobs --watch  every 0.1 s  ", 37) == 0, "title:\n%s", out);
        second = strstr(out + 1, "visierctl jobs --watch  every 0.1 s  ");
        ck_assert_msg(second, "one frame only:\n%s", out);
        ck_assert(strstr(out, "\n1   succeeded  create") < second);
        ck_assert_ptr_nonnull(strstr(second, "\n1   succeeded  create"));
        ck_assert_ptr_null(strstr(second + 1, "visierctl jobs --watch  every")); /* two frames */
        free(out);
        ck_assert_int_eq(CTL(&out, "top", "--count", "1"), 0);
        assert_lacks(out, "\033");
        assert_has(out, "visierctl top  every 2.0 s  ");
        assert_has(out, "finished:     1 succeeded, 0 failed, 0 cancelled");
        assert_has(out, "publishing:   idle");
        free(out);

        /* A refusal ends the screen at once (it would not get better), with visierd's message. */
        ck_assert_int_eq(CTL(&out, "jobs", "--watch", "--operation", "frobnicate", "--count", "5"), 1);
        assert_has(out, "visierctl: operation: must be create");
        ck_assert_ptr_null(strstr(out, "visierctl jobs --watch  every"));
        free(out);
        /* visierd unreachable: said in each frame, and tried again. */
        snprintf(url, sizeof(url), "http://127.0.0.1:1");
        ck_assert_int_eq(CTL(&out, "top", "--interval", "0.1", "--count", "2"), 3);
        second = strstr(out, "cannot reach visierd");
        ck_assert_msg(second && strstr(second + 1, "cannot reach visierd"), "not tried again:\n%s", out);
        assert_has(out, "(trying again in 0.1 s)");
        free(out);

        /* Usage. */
        ck_assert_int_eq(CTL(&out, "jobs", "--interval", "1"), 2);
        assert_has(out, "--interval and --count go with --watch");
        free(out);
        ck_assert_int_eq(CTL(&out, "jobs", "--watch", "--json"), 2);
        free(out);
        ck_assert_int_eq(CTL(&out, "top", "--interval", "0"), 2);
        assert_has(out, "--interval must be seconds from 0.1 to 3600");
        free(out);
        ck_assert_int_eq(CTL(&out, "top", "--interval", "1e3"), 2);
        free(out);
        ck_assert_int_eq(CTL(&out, "top", "--count", "0"), 2);
        free(out);
        ck_assert_int_eq(CTL(&out, "status", "--watch"), 2);
        assert_has(out, "status does not take --watch");
        free(out);
}
END_TEST

/* ---- transports, errors and the token ---- */

START_TEST(test_unreachable) {
        char *out, sock[192];

        snprintf(url, sizeof(url), "http://127.0.0.1:1");
        ck_assert_int_eq(CTL(&out, "status"), 3);
        assert_has(out, "visierctl: cannot reach visierd");
        free(out);
        ck_assert_int_eq(CTL(&out, "health", "--json"), 3);
        free(out);
        snprintf(sock, sizeof(sock), "%s/no-such.sock", scratch);
        ck_assert_int_eq(CTL(&out, "--socket", sock, "jobs"), 3);
        {
                char want[320];

                /* The socket is named, not the URL's host, which a socket does not use. */
                snprintf(want, sizeof(want),
                         "visierctl: cannot reach visierd: cannot connect to visierd's unix socket %s (no such socket)\n",
                         sock);
                ck_assert_str_eq(out, want);
        }
        free(out);
}
END_TEST

START_TEST(test_unix_socket) {
        char tail[256], sock[192], *out;
        json_t *j;

        /* A second [listen] section adds the socket to the one the harness writes. */
        sim_start(&sim, unlimited);
        snprintf(sock, sizeof(sock), "%s/visierd.sock", sim.dir);
        snprintf(tail, sizeof(tail), "[listen]\nsocket = %s", sock);
        visierd_start(&vd, &sim, FAST, tail);
        visierd_wait_ready(&vd);
        /* The URL's host and port do not matter: nothing listens there. */
        snprintf(url, sizeof(url), "http://127.0.0.1:1");
        ck_assert_int_eq(CTL(&out, "--socket", sock, "health"), 0);
        assert_has(out, "readyz:  ready");
        free(out);
        ck_assert_int_eq(CTL(&out, "status", "--socket", sock, "--json"), 0);
        j = parse_one(out);
        ck_assert_str_eq(json_string_value(json_object_get(j, "version")), PACKAGE_VERSION);
        json_decref(j);
        free(out);
        ck_assert_int_eq(CTL(&out, "status"), 3); /* and without the socket, it is unreachable */
        free(out);

        /* The same socket named by VISIERCTL_SOCKET, with no option; an option still wins. */
        {
                char env[256];

                url[0] = '\0';
                snprintf(env, sizeof(env), "VISIERCTL_SOCKET=%s", sock);
                harness_child_env = (const char *const[]) { env, NULL };
                ck_assert_int_eq(CTL(&out, "health"), 0);
                assert_has(out, "readyz:  ready");
                free(out);
                ck_assert_int_eq(CTL(&out, "--url", "http://127.0.0.1:1", "health"), 3);
                free(out);
                harness_child_env = NULL;
        }
}
END_TEST

/* A one-connection HTTP server that records the request and answers with a canned reply
 * (or, with reply NULL, holds the connection without answering). */
typedef struct Canned {
        int fd;
        unsigned port;
        const char *reply;
        char request[8192];
        pthread_t thread;
} Canned;

static void *canned_serve(void *arg) {
        Canned *c = arg;
        size_t len = 0;
        int conn = accept(c->fd, NULL, NULL);
        ssize_t n;

        if (conn < 0)
                return NULL;
        while (len < sizeof(c->request) - 1 && !strstr(c->request, "\r\n\r\n") &&
               (n = read(conn, c->request + len, sizeof(c->request) - 1 - len)) > 0) {
                len += (size_t) n;
                c->request[len] = '\0';
        }
        if (c->reply)
                (void) !write(conn, c->reply, strlen(c->reply));
        else
                while (read(conn, c->request + len, 1) > 0) /* until the client gives up */
                        ;
        close(conn);
        return NULL;
}

static void canned_start(Canned *c, const char *reply) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);

        memset(c, 0, sizeof(*c));
        c->reply = reply;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(c->fd, 0);
        ck_assert_int_eq(bind(c->fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(c->fd, 4), 0);
        ck_assert_int_eq(getsockname(c->fd, (struct sockaddr *) &sa, &sl), 0);
        c->port = ntohs(sa.sin_port);
        ck_assert_int_eq(pthread_create(&c->thread, NULL, canned_serve, c), 0);
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", c->port);
}

static void canned_stop(Canned *c) {
        pthread_join(c->thread, NULL);
        close(c->fd);
}

START_TEST(test_token_file) {
        char tok[192], *out, reply[512];
        const char *body = "{\"status\":\"ok\"}";
        Canned c;

        snprintf(tok, sizeof(tok), "%s/token", scratch);
        harness_write_file(tok, "s3cret-t0ken\n", 0644);
        snprintf(url, sizeof(url), "http://127.0.0.1:1");
        ck_assert_int_eq(CTL(&out, "--token-file", tok, "status"), 2);
        assert_has(out, "is accessible by group or others (mode 0644)");
        assert_lacks(out, "s3cret");
        free(out);
        harness_write_file(tok, "s3cret-t0ken\n", 0640);
        ck_assert_int_eq(CTL(&out, "status", "--token-file", tok), 2);
        free(out);

        /* Private: sent as a bearer token, without its newline, to the configured origin. */
        harness_write_file(tok, "s3cret-t0ken\n", 0600);
        snprintf(reply, sizeof(reply),
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(body), body);
        canned_start(&c, reply);
        ck_assert_int_eq(CTL(&out, "--token-file", tok, "status"), 0);
        canned_stop(&c);
        assert_lacks(out, "s3cret");
        free(out);
        ck_assert_msg(strstr(c.request, "GET /status HTTP/1.1\r\n"), "request:\n%s", c.request);
        ck_assert_msg(strstr(c.request, "\r\nAuthorization: Bearer s3cret-t0ken\r\n"), "request:\n%s", c.request);

        ck_assert_int_eq(CTL(&out, "--token-file", "/nonexistent/token", "status"), 2);
        assert_has(out, "cannot open token file /nonexistent/token");
        free(out);
}
END_TEST

START_TEST(test_server_error_and_http_timeout) {
        const char *body = "{\"code\":\"ServiceUnavailable\",\"message\":\"the job database is not open\","
                           "\"localizedMessage\":\"x\",\"userError\":false}";
        char reply[512], *out;
        Canned c;
        usec_t t0;

        snprintf(reply, sizeof(reply),
                 "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 strlen(body), body);
        canned_start(&c, reply);
        ck_assert_int_eq(CTL(&out, "jobs"), 1);
        canned_stop(&c);
        assert_has(out, "visierctl: the job database is not open (HTTP 503)");
        free(out);

        /* visierd accepts the connection but never answers: the HTTP timeout, exit 4. */
        canned_start(&c, NULL);
        t0 = clock_now();
        ck_assert_int_eq(CTL(&out, "--timeout", "1", "status"), 4);
        ck_assert_int_lt(clock_now() - t0, 5 * USEC_PER_SEC);
        canned_stop(&c);
        assert_has(out, "did not answer within the timeout");
        free(out);
}
END_TEST

/* ---- named exports ---- */

static const char *const employees_def =
        "{\"description\":\"Employees\",\"query\":\"list\",\"format\":\"csv\",\"body\":"
        "{\"source\":{\"analyticObject\":\"Employee\"},\"columns\":["
        "{\"columnDefinition\":{\"property\":{\"name\":\"EmployeeID\",\"qualifyingPath\":\"Employee\"}}},"
        "{\"columnDefinition\":{\"property\":{\"name\":\"Full_Name\",\"qualifyingPath\":\"Employee\"}}}],"
        "\"timeInterval\":{\"fromDateTime\":\"2025-01-01\"}},"
        "\"parameters\":{\"from\":{\"path\":\"/timeInterval/fromDateTime\",\"default\":\"2025-01-01\","
        "\"pattern\":\"^[0-9]{4}-[0-9]{2}-[0-9]{2}$\"}}}";

/* Start both, with an exports.d that defines "employees". */
static void start_with_export(void) {
        char dir[256], def[320], *conf, *all;

        sim_start(&sim, unlimited);
        visierd_write_config(&vd, &sim, FAST, NULL);
        snprintf(dir, sizeof(dir), "%s/exports.d", vd.dir);
        conf = harness_read_file(vd.config);
        ck_assert_ptr_nonnull(conf);
        ck_assert_int_ge(asprintf(&all, "%s\n[exports]\ndirectory = %s\n", conf, dir), 0);
        harness_write_file(vd.config, all, 0644);
        free(conf);
        free(all);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        snprintf(def, sizeof(def), "%s/employees.json", dir);
        harness_write_file(def, employees_def, 0644);
        visierd_restart(&vd);
        visierd_wait_ready(&vd);
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", vd.port);
}

/* What visierd serves at path, fetched directly. */
static void fetch(const char *path, HttpResult *r) {
        char *u = visierd_url(&vd, path);

        http_request("GET", u, NULL, NULL, 30000, r);
        free(u);
        ck_assert_int_eq(r->curl_error, 0);
        ck_assert_int_eq(r->status, 200);
        ck_assert_uint_gt(r->len, 100);
}

static bool exists(const char *path) {
        struct stat st;

        return stat(path, &st) == 0;
}

/* The file holds exactly the bytes visierd serves at path. */
static void assert_file_is(const char *file, const char *path) {
        char *got = harness_read_file(file);
        HttpResult r;

        ck_assert_msg(got, "%s was not written", file);
        fetch(path, &r);
        ck_assert_msg(strlen(got) == r.len && memcmp(got, r.body, r.len) == 0,
                      "%s: %zu bytes, but visierd serves %zu bytes at %s (or other bytes)", file, strlen(got), r.len,
                      path);
        http_result_done(&r);
        free(got);
}

START_TEST(test_exports_list) {
        char *out;
        json_t *j, *x;

        start_with_export();
        ck_assert_int_eq(CTL(&out, "exports"), 0);
        ck_assert_msg(strncmp(out, "NAME       QUERY  FORMAT  PARAMETERS       DESCRIPTION\n", 55) == 0, "header:\n%s",
                      out);
        assert_has(out, "\nemployees  list   csv     from=2025-01-01  Employees\n");
        free(out);

        ck_assert_int_eq(CTL(&out, "--json", "exports"), 0);
        j = parse_one(out);
        ck_assert_int_eq(json_array_size(json_object_get(j, "exports")), 1);
        x = json_array_get(json_object_get(j, "exports"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(x, "name")), "employees");
        ck_assert_str_eq(json_string_value(json_object_get(x, "query")), "list");
        ck_assert_str_eq(
                json_string_value(json_object_get(json_object_get(json_object_get(x, "parameters"), "from"), "pattern")),
                "^[0-9]{4}-[0-9]{2}-[0-9]{2}$");
        json_decref(j);
        free(out);
}
END_TEST

START_TEST(test_export_to_file) {
        char file[192], partial[256], *out;
        HttpResult r;

        start_with_export();
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"query_rows\":3000}"));
        snprintf(file, sizeof(file), "%s/employees.csv", scratch);
        snprintf(partial, sizeof(partial), "%s.partial", file);

        /* The definition's format (csv), exactly as visierd serves it; nothing else printed. */
        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file), 0);
        ck_assert_str_eq(out, "");
        free(out);
        assert_file_is(file, "/exports/employees.csv");
        ck_assert(!exists(partial));

        ck_assert_int_eq(CTL(&out, "export", "--format", "jsonl", "employees", "--output", file), 0);
        free(out);
        assert_file_is(file, "/exports/employees.jsonl");

        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file, "--param", "from=2024-06-01"), 0);
        free(out);
        assert_file_is(file, "/exports/employees.csv?from=2024-06-01");

        /* To standard output, without -o or with "-". */
        fetch("/exports/employees.json", &r);
        ck_assert_int_eq(CTL(&out, "export", "employees", "--format", "json"), 0);
        ck_assert_msg(strlen(out) == r.len && memcmp(out, r.body, r.len) == 0, "standard output differs");
        free(out);
        ck_assert_int_eq(CTL(&out, "export", "employees", "--format", "json", "-o", "-"), 0);
        ck_assert_msg(strlen(out) == r.len && memcmp(out, r.body, r.len) == 0, "standard output differs");
        free(out);
        http_result_done(&r);
        ck_assert(!exists(partial));

        /* HR data: a new file is 0600 under umask 022, and a replaced one keeps its mode. */
        {
                char fresh[256];
                mode_t old = umask(022);
                struct stat st;

                snprintf(fresh, sizeof(fresh), "%s/new-export.csv", scratch);
                ck_assert_int_eq(CTL(&out, "export", "employees", "-o", fresh), 0);
                free(out);
                ck_assert_int_eq(stat(fresh, &st), 0);
                ck_assert_msg((st.st_mode & 0777) == 0600, "a new export is %03o", (unsigned) (st.st_mode & 0777));
                ck_assert_int_eq(chmod(file, 0640), 0);
                ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file), 0);
                free(out);
                ck_assert_int_eq(stat(file, &st), 0);
                ck_assert_msg((st.st_mode & 0777) == 0640, "a replaced export is %03o", (unsigned) (st.st_mode & 0777));
                ck_assert_int_eq(chmod(file, 0600), 0);
                ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file), 0);
                free(out);
                ck_assert_int_eq(stat(file, &st), 0);
                ck_assert_msg((st.st_mode & 0777) == 0600, "a replaced 0600 export is %03o", (unsigned) (st.st_mode & 0777));
                umask(old);
        }

        /* A file that is not a regular one is written to, never replaced. */
        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", "/dev/null"), 0);
        free(out);
        {
                struct stat st;
                ck_assert_int_eq(stat("/dev/null", &st), 0);
                ck_assert(S_ISCHR(st.st_mode));
                ck_assert(!exists("/dev/null.partial"));
        }
}
END_TEST

START_TEST(test_export_refused) {
        char file[192], partial[256], *out;

        start_with_export();
        snprintf(file, sizeof(file), "%s/refused.csv", scratch);
        snprintf(partial, sizeof(partial), "%s.partial", file);

        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file, "--param", "from=yesterday"), 1);
        assert_has(out, "visierctl: from: 'yesterday' is not a valid value");
        assert_has(out, "(HTTP 400)");
        free(out);
        /* Names and values are URL-escaped: the value arrives as it was given. */
        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file, "--param", "from=2024 06&x=#1"), 1);
        assert_has(out, "from: '2024 06&x=#1' is not a valid value");
        free(out);
        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file, "--param", "region=emea"), 1);
        assert_has(out, "region: export employees has no such parameter (HTTP 400)");
        free(out);
        ck_assert_int_eq(CTL(&out, "export", "nothing", "-o", file), 1);
        assert_has(out, "no export named nothing");
        assert_has(out, "(HTTP 404)");
        free(out);
        ck_assert(!exists(file));
        ck_assert(!exists(partial));

        /* Usage errors. */
        ck_assert_int_eq(CTL(&out, "export"), 2);
        assert_has(out, "usage: visierctl export NAME");
        free(out);
        ck_assert_int_eq(CTL(&out, "export", "employees", "--format", "xml"), 2);
        assert_has(out, "--format must be csv, jsonl or json");
        free(out);
        ck_assert_int_eq(CTL(&out, "export", "employees", "--param", "from"), 2);
        assert_has(out, "--param takes NAME=VALUE");
        free(out);
        ck_assert_int_eq(CTL(&out, "status", "-o", file), 2);
        assert_has(out, "status does not take --output");
        free(out);
        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", "/nonexistent/dir/x.csv"), 2);
        assert_has(out, "cannot create /nonexistent/dir/x.csv.partial");
        free(out);
}
END_TEST

START_TEST(test_export_broken) {
        char file[192], partial[256], *out, *got;

        start_with_export();
        snprintf(file, sizeof(file), "%s/broken.csv", scratch);
        snprintf(partial, sizeof(partial), "%s.partial", file);
        set_faults("{\"query_rows\":20000,\"next_query_abort_after_bytes\":50000}");
        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file), 1);
        assert_has(out, "visierctl: the export broke off after ");
        assert_has(out, " bytes");
        free(out);
        ck_assert(!exists(file));
        ck_assert(!exists(partial));
        ck_assert_int_eq(sim_counter(&sim, "query_aborts_injected"), 1);

        /* Without the fault, the same export is whole. */
        ck_assert_int_eq(CTL(&out, "export", "employees", "-o", file), 0);
        free(out);
        got = harness_read_file(file);
        ck_assert_uint_gt(strlen(got), 50000);
        free(got);
        ck_assert(!exists(partial));
}
END_TEST

START_TEST(test_export_stalled) {
        char file[192], *out;
        Canned c;
        usec_t t0;

        /* visierd accepts the connection but sends nothing: the stall limit (--timeout), exit 4. */
        snprintf(file, sizeof(file), "%s/stalled.csv", scratch);
        canned_start(&c, NULL);
        t0 = clock_now();
        ck_assert_int_eq(CTL(&out, "--timeout", "1", "export", "employees", "-o", file), 4);
        ck_assert_int_lt(clock_now() - t0, 5 * USEC_PER_SEC);
        canned_stop(&c);
        assert_has(out, "did not answer within the timeout");
        free(out);
        ck_assert_msg(strstr(c.request, "GET /exports/employees HTTP/1.1\r\n"), "request:\n%s", c.request);
        ck_assert(!exists(file));
}
END_TEST

START_TEST(test_usage) {
        char *out;

        ck_assert_int_eq(CTL(&out, "--help"), 0);
        assert_has(out, "Usage: visierctl");
        assert_has(out, "5  visierd is not ready");
        assert_has(out, "  exports\n");
        assert_has(out, "  export NAME [--format csv|jsonl|json] [-o FILE] [--param NAME=VALUE]...\n");
        free(out);
        ck_assert_int_eq(CTL(&out, "--version"), 0);
        assert_has(out, "visierctl " PACKAGE_VERSION);
        free(out);
        ck_assert_int_eq(CTL(&out, "frobnicate"), 2);
        assert_has(out, "unknown command 'frobnicate'");
        free(out);
        ck_assert_int_eq(CTL(&out, NULL), 2); /* no command */
        free(out);
        ck_assert_int_eq(CTL(&out, "job"), 2);
        assert_has(out, "usage: visierctl job ID");
        free(out);
        ck_assert_int_eq(CTL(&out, "job", "0"), 2);
        free(out);
        ck_assert_int_eq(CTL(&out, "--state", "queued", "jobs"), 2);
        free(out);
        ck_assert_int_eq(CTL(&out, "status", "--timeout", "soon"), 2);
        free(out);
        ck_assert_int_eq(CTL(&out, "--url", "ftp://127.0.0.1/", "status"), 2);
        free(out);
}
END_TEST

int main(void) {
        Suite *s = suite_create("visierctl");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_usage);
        tcase_add_test(tc, test_unreachable);
        tcase_add_test(tc, test_token_file);
        tcase_add_test(tc, test_server_error_and_http_timeout);
        tcase_add_test(tc, test_status);
        tcase_add_test(tc, test_health_ready);
        tcase_add_test(tc, test_health_not_ready);
        tcase_add_test(tc, test_check);
        tcase_add_test(tc, test_submit_job_and_wait);
        tcase_add_test(tc, test_submit_bad_file);
        tcase_add_test(tc, test_submit_wait);
        tcase_add_test(tc, test_wait_failed_and_retry);
        tcase_add_test(tc, test_wait_timeout);
        tcase_add_test(tc, test_cancel);
        tcase_add_test(tc, test_jobs_list);
        tcase_add_test(tc, test_jobs_filters_api);
        tcase_add_test(tc, test_jobs_filters_cli);
        tcase_add_test(tc, test_jobs_watch_pty);
        tcase_add_test(tc, test_top_pty);
        tcase_add_test(tc, test_screen_quit_and_broken_pipe);
        tcase_add_test(tc, test_screens_not_on_a_terminal);
        tcase_add_test(tc, test_unix_socket);
        tcase_add_test(tc, test_exports_list);
        tcase_add_test(tc, test_export_to_file);
        tcase_add_test(tc, test_export_refused);
        tcase_add_test(tc, test_export_broken);
        tcase_add_test(tc, test_export_stalled);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
