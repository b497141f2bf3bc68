/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: the /ui page in a real browser. Starts visier-sim and visierd with jobs in
 * every state (succeeded, failed with a per-item failure, an export run, one running — the
 * sim holds its write call — two queued behind it, one cancelled), loads /ui in headless
 * Chromium, and asserts on the DOM the page's script rendered: the counts, the oldest queued
 * job, the publisher's current call, the token, the rate budget, the sparklines, the job
 * list and its state filter, a job's per-item results, the export runs, and no secret. Keeps
 * a screenshot (tests/ui-screenshot.png in the build directory) and the DOMs it read
 * (tests/ui-dom.html, tests/ui-dom-failed.html) as artifacts.
 *
 * Chromium is Debian's `chromium` (or $CHROMIUM). Where it is not installed, or cannot start
 * here, the program says why and exits 77, which Automake reports as SKIP — never a pass.
 * Every Chromium run is bounded (CHROMIUM_TIMEOUT_SEC) and killed with its process group.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

#define CHROMIUM_TIMEOUT_SEC 90
#define VIRTUAL_TIME_MS "8000" /* the page's first refresh and one more (it refreshes every 5 s) */

static Sim sim;
static Visierd vd;
static char chromium[512];

static void teardown(void) {
        /* Let the held call go, so that visierd stops cleanly. */
        if (sim.pid > 0)
                json_decref(sim_control_post(&sim, "/_sim/faults", "{\"hold_writes\":false}"));
        harness_teardown(&sim, &vd);
}

/* Find the browser: $CHROMIUM, or chromium / chromium-browser on $PATH. */
static bool chromium_find(char *buf, size_t len) {
        const char *env = getenv("CHROMIUM"), *path = getenv("PATH");
        static const char *const names[] = { "chromium", "chromium-browser" };

        if (env && *env) {
                snprintf(buf, len, "%s", env);
                return access(buf, X_OK) == 0;
        }
        for (size_t n = 0; n < ELEMENTSOF(names); n++)
                for (const char *p = path ? path : "/usr/bin:/bin"; p && *p;) {
                        const char *colon = strchr(p, ':');
                        size_t dl = colon ? (size_t) (colon - p) : strlen(p);

                        snprintf(buf, len, "%.*s/%s", (int) dl, p, names[n]);
                        if (dl > 0 && access(buf, X_OK) == 0)
                                return true;
                        p = colon ? colon + 1 : NULL;
                }
        return false;
}

/*
 * Run Chromium headless on URL with the extra arguments (NULL-terminated), its standard
 * output to OUT_PATH and standard error to ERR_PATH, in a fresh profile, for at most
 * CHROMIUM_TIMEOUT_SEC. 0 when it exited 0; -ETIMEDOUT (killed), -ECHILD (it failed to run
 * or exited non-zero), another -errno when it could not be started. Never fails the test
 * itself (the caller decides), so it may run outside a test.
 */
static int chromium_run(const char *url, const char *const *extra, const char *out_path, const char *err_path) {
        char profile[160], profile_arg[200];
        const char *argv[32];
        usec_t deadline;
        size_t n = 0;
        int status = 0, r = -ECHILD;
        pid_t pid, w;

        /* No ck_assert here: this also runs in main(), outside any test. */
        snprintf(profile, sizeof(profile), "%s/ui-chromium.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(profile))
                return -errno;
        snprintf(profile_arg, sizeof(profile_arg), "--user-data-dir=%s", profile);
        argv[n++] = chromium;
        argv[n++] = "--headless";
        argv[n++] = "--no-sandbox"; /* as root, and in containers without user namespaces */
        argv[n++] = "--disable-gpu";
        argv[n++] = "--disable-dev-shm-usage";
        argv[n++] = "--no-first-run";
        argv[n++] = "--no-default-browser-check";
        argv[n++] = "--disable-extensions";
        argv[n++] = "--disable-background-networking";
        argv[n++] = "--disable-component-update";
        argv[n++] = "--disable-sync";
        argv[n++] = "--hide-scrollbars";
        argv[n++] = profile_arg;
        for (size_t i = 0; extra && extra[i] && n < ELEMENTSOF(argv) - 2; i++)
                argv[n++] = extra[i];
        argv[n++] = url;
        argv[n] = NULL;

        pid = fork();
        if (pid < 0) {
                r = -errno;
                harness_rmtree(profile);
                return r;
        }
        if (pid == 0) {
                int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                (void) setpgid(0, 0); /* its renderer and helpers too, for the kill below */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (out < 0 || err < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0)
                        _exit(127);
                execv(argv[0], (char *const *) argv);
                _exit(127);
        }
        (void) setpgid(pid, pid);
        deadline = clock_now() + CHROMIUM_TIMEOUT_SEC * USEC_PER_SEC;
        for (;;) {
                w = waitpid(pid, &status, WNOHANG);
                if (w == pid) {
                        r = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
                        break;
                }
                if (w < 0 && errno != EINTR)
                        break;
                if (clock_now() >= deadline) {
                        (void) kill(-pid, SIGKILL);
                        (void) waitpid(pid, &status, 0);
                        r = -ETIMEDOUT;
                        break;
                }
                clock_sleep(50 * USEC_PER_MSEC); /* poll interval, bounded by the deadline above */
        }
        (void) kill(-pid, SIGKILL); /* whatever of its group is left */
        harness_rmtree(profile);
        return r;
}

/* The DOM of URL after the page's script ran (caller frees), kept at ARTIFACT. */
static char *dump_dom(const char *url, const char *artifact) {
        static const char *const extra[] = { "--virtual-time-budget=" VIRTUAL_TIME_MS, "--dump-dom", NULL };
        char err_path[256], *dom, *err;
        int r;

        snprintf(err_path, sizeof(err_path), "%s/chromium.log", vd.dir);
        r = chromium_run(url, extra, artifact, err_path);
        err = harness_read_file(err_path);
        ck_assert_msg(r == 0, "chromium --dump-dom %s: %s; its log:\n%s", url, r == -ETIMEDOUT ? "timed out" : "failed",
                      err ? err : "");
        free(err);
        dom = harness_read_file(artifact);
        ck_assert_msg(dom && *dom, "chromium wrote no DOM for %s", url);
        return dom;
}

/* The first match of PATTERN (extended regex) in TEXT: its group 1 (caller frees), or NULL. */
static char *match1(const char *text, const char *pattern) {
        regmatch_t m[2];
        regex_t re;
        char *v = NULL;

        ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED), 0);
        if (regexec(&re, text, 2, m, 0) == 0 && m[1].rm_so >= 0)
                v = strndup(text + m[1].rm_so, (size_t) (m[1].rm_eo - m[1].rm_so));
        regfree(&re);
        return v;
}

/* The attribute ATTR of the element with id ID, as the DOM shows it ("" when absent). */
static char *attr_of(const char *dom, const char *id, const char *attr) {
        char pattern[256], *v;

        snprintf(pattern, sizeof(pattern), "<[a-z]+ [^>]*id=\"%s\"[^>]*%s=\"([^\"]*)\"", id, attr);
        v = match1(dom, pattern);
        return v ? v : strdup("");
}

/* The text of the element with id ID up to its first child tag. */
static char *text_of(const char *dom, const char *id) {
        char pattern[256], *v;

        snprintf(pattern, sizeof(pattern), "id=\"%s\"[^>]*>([^<]*)<", id);
        v = match1(dom, pattern);
        return v ? v : strdup("");
}

static long long num(const char *s) {
        char *end;
        long long v;

        errno = 0;
        v = strtoll(s, &end, 10);
        return errno || end == s || *end ? -1 : v;
}

static void assert_attr(const char *dom, const char *id, const char *attr, const char *want) {
        char *v = attr_of(dom, id, attr);

        ck_assert_msg(streq(v, want), "#%s %s=\"%s\", expected \"%s\"", id, attr, v, want);
        free(v);
}

/* The state the page shows for job ID in the job list, or NULL if it lists no such row. */
static char *row_state(const char *dom, const char *tbody, long long id) {
        const char *body = strstr(dom, tbody);
        char pattern[160];

        ck_assert_msg(body, "no %s in the DOM", tbody);
        snprintf(pattern, sizeof(pattern), "<tr data-[a-z]+-id=\"%lld\" data-state=\"([a-z]+)\"", id);
        return match1(body, pattern);
}

static long long submit_as(const char *method, const char *items_json) {
        static const char *const async[] = { "Prefer: respond-async", NULL };
        char body[512];
        long status;
        long long id;
        json_t *j;

        snprintf(body, sizeof(body), "{\"permissions\":%s}", items_json);
        j = visierd_request_json(&vd, method, "/v1/admin/permissions", body, async, &status);
        ck_assert_msg(status == 202, "%s answered %ld", method, status);
        id = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        return id;
}

static long long submit(const char *items_json) {
        return submit_as("POST", items_json);
}

static const char *job_state(long long id) {
        static char state[16];
        json_t *j = visierd_job(&vd, id);

        snprintf(state, sizeof(state), "%s", json_string_value(json_object_get(j, "state")) ?: "");
        json_decref(j);
        return state;
}

static void wait_state(long long id, const char *want) {
        usec_t deadline = clock_now() + 30 * USEC_PER_SEC;

        while (!streq(job_state(id), want)) {
                ck_assert_msg(clock_now() < deadline, "job %lld is %s, not %s, after 30 s", id, job_state(id), want);
                clock_sleep(20 * USEC_PER_MSEC); /* probe interval */
        }
}

static const char employees_def[] =
        "{\"description\":\"Employees\",\"query\":\"list\",\"format\":\"jsonl\",\"body\":"
        "{\"source\":{\"analyticObject\":\"Employee\"},\"columns\":["
        "{\"columnDefinition\":{\"property\":{\"name\":\"EmployeeID\",\"qualifyingPath\":\"Employee\"}}}],"
        "\"timeInterval\":{\"fromDateTime\":\"2025-01-01\"}}}";

START_TEST(test_ui_page) {
        static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };
        char dir[256], path[320], tail[512], dom_path[512], shot_path[512], url_detail[256], *conf, *all, *u, *dom,
                *v, *raw, *etag, request[512];
        const char *top_builddir = getenv("TOP_BUILDDIR") ? getenv("TOP_BUILDDIR") : ".";
        long long ok, bad, run, held, q1, q2, cancelled;
        usec_t deadline;
        HttpResult r;
        struct stat st;

        sim_start(&sim, unlimited);
        visierd_write_config(&vd, &sim, "rate_limit_minute = 100000\nrate_limit_hour = 10000000", NULL);
        snprintf(tail, sizeof(tail), "[exports]\ndirectory = %s/exports.d\n", vd.dir);
        conf = harness_read_file(vd.config);
        ck_assert_int_ge(asprintf(&all, "%s%s", conf, tail), 0);
        harness_write_file(vd.config, all, 0644);
        free(conf);
        free(all);
        snprintf(dir, sizeof(dir), "%s/exports.d", vd.dir);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        snprintf(path, sizeof(path), "%s/employees.json", dir);
        harness_write_file(path, employees_def, 0644);
        visierd_restart(&vd);
        visierd_wait_ready(&vd);

        /* Jobs in every state. */
        ok = submit("[{\"displayName\":\"ui-ok-1\"},{\"displayName\":\"ui-ok-2\"}]");
        wait_state(ok, "succeeded");
        /* Visier answers this update's one item with a failure: no such permission. */
        bad = submit_as("PUT", "[{\"permissionId\":\"ui-poison\",\"displayName\":\"ui-poison\"}]");
        wait_state(bad, "failed");
        u = visierd_url(&vd, "/exports/employees/runs");
        http_request("POST", u, NULL, NULL, 20000, &r);
        free(u);
        ck_assert_msg(r.status == 202, "the export run answered %ld: %s", r.status, r.body);
        {
                json_t *j = json_loads(r.body, 0, NULL);
                run = json_integer_value(json_object_get(j, "id"));
                json_decref(j);
        }
        http_result_done(&r);
        wait_state(run, "succeeded");
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"hold_writes\":true}"));
        held = submit("[{\"displayName\":\"ui-held\"}]");
        for (deadline = clock_now() + 30 * USEC_PER_SEC; sim_counter(&sim, "writes_in_flight") < 1;) {
                ck_assert_msg(clock_now() < deadline, "the held write never reached visier-sim");
                clock_sleep(10 * USEC_PER_MSEC); /* probe interval */
        }
        wait_state(held, "running");
        q1 = submit("[{\"displayName\":\"ui-queued-1\"}]");
        q2 = submit("[{\"displayName\":\"ui-queued-2\"},{\"displayName\":\"ui-queued-3\"}]");
        cancelled = submit("[{\"displayName\":\"ui-cancelled\"}]");
        {
                char cpath[64];
                long status;
                json_t *j;

                snprintf(cpath, sizeof(cpath), "/jobs/%lld/cancel", cancelled);
                j = visierd_request_json(&vd, "POST", cpath, NULL, NULL, &status);
                ck_assert_int_eq(status, 200);
                json_decref(j);
        }
        ck_assert_str_eq(job_state(q1), "queued");
        ck_assert_str_eq(job_state(q2), "queued");

        /* The page's headers: its policy, no sniffing, a validator that gives 304. */
        snprintf(request, sizeof(request), "GET /ui HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n", vd.port);
        raw = harness_raw_exchange(vd.port, request, 10);
        ck_assert_msg(strncmp(raw, "HTTP/1.1 200", 12) == 0, "GET /ui: %.200s", raw);
        ck_assert_ptr_nonnull(strstr(raw, "\r\nContent-Type: text/html; charset=utf-8\r\n"));
        ck_assert_ptr_nonnull(strstr(raw, "\r\nContent-Security-Policy: default-src 'none'; script-src 'self'; "
                                          "style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                                          "form-action 'none'; frame-ancestors 'none'"));
        ck_assert_ptr_nonnull(strstr(raw, "\r\nX-Content-Type-Options: nosniff\r\n"));
        ck_assert_ptr_nonnull(strstr(raw, "\r\nReferrer-Policy: no-referrer\r\n"));
        ck_assert_ptr_null(strstr(raw, "Access-Control-Allow-Origin"));
        etag = match1(raw, "\r\nETag: (\"[^\"]+\")\r\n");
        ck_assert_ptr_nonnull(etag);
        free(raw);
        snprintf(request, sizeof(request),
                 "GET /ui HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nIf-None-Match: %s\r\nConnection: close\r\n\r\n", vd.port, etag);
        raw = harness_raw_exchange(vd.port, request, 10);
        ck_assert_msg(strncmp(raw, "HTTP/1.1 304", 12) == 0, "GET /ui with If-None-Match: %.200s", raw);
        free(raw);
        free(etag);
        snprintf(request, sizeof(request), "GET /ui/ui.js HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n",
                 vd.port);
        raw = harness_raw_exchange(vd.port, request, 10);
        ck_assert_ptr_nonnull(strstr(raw, "\r\nContent-Type: text/javascript; charset=utf-8\r\n"));
        ck_assert_ptr_null(strstr(raw, sim.apikey));
        ck_assert_ptr_null(strstr(raw, sim.password));
        free(raw);

        /* The page, rendered, with the failed job's items open. */
        snprintf(url_detail, sizeof(url_detail), "http://127.0.0.1:%u/ui#job=%lld", vd.port, bad);
        snprintf(dom_path, sizeof(dom_path), "%s/tests/ui-dom.html", top_builddir);
        dom = dump_dom(url_detail, dom_path);
        fprintf(stderr, "test-ui: the rendered DOM is in %s\n", dom_path);
        v = match1(dom, "<body[^>]* data-state=\"([a-z]+)\"");
        ck_assert_msg(v && streq(v, "ready"), "the page did not render (body data-state=\"%s\"): %.300s",
                      v ? v : "?", strstr(dom, "id=\"error\"") ? strstr(dom, "id=\"error\"") : "");
        free(v);

        /* The counts by state, from /status. */
        assert_attr(dom, "count-queued", "data-value", "2");
        assert_attr(dom, "count-running", "data-value", "1");
        assert_attr(dom, "count-succeeded", "data-value", "2"); /* the create and the export run */
        assert_attr(dom, "count-failed", "data-value", "1");
        assert_attr(dom, "count-cancelled", "data-value", "1");
        v = text_of(dom, "count-queued");
        ck_assert_str_eq(v, "2");
        free(v);

        /* The sparklines, from /status/history: at least the current sample, drawn. */
        v = attr_of(dom, "spark-queued", "data-samples");
        ck_assert_msg(num(v) >= 1, "no history sample: \"%s\"", v);
        free(v);
        ck_assert_ptr_nonnull(strstr(strstr(dom, "id=\"spark-queued\""), "<polyline"));

        /* The oldest queued job, and the publisher's call holding the lane. */
        {
                char want[32];

                snprintf(want, sizeof(want), "%lld", q1);
                assert_attr(dom, "oldest-queued", "data-job-id", want);
                snprintf(want, sizeof(want), "%lld", held);
                assert_attr(dom, "current-call", "data-active", "true");
                assert_attr(dom, "current-call", "data-first-job", want);
        }
        v = text_of(dom, "current-call");
        ck_assert_msg(strstr(v, "POST /v1/admin/permissions (create): 1 item of 1 job"), "current call: %s", v);
        free(v);

        /* Token and rate budget. */
        v = text_of(dom, "token-state");
        ck_assert_str_eq(v, "valid");
        free(v);
        v = attr_of(dom, "token-expires", "data-seconds");
        ck_assert_msg(num(v) > 0, "token expires in \"%s\" s", v);
        free(v);
        v = attr_of(dom, "budget-minute", "data-remaining");
        ck_assert_msg(num(v) > 0 && num(v) <= 100000, "minute budget \"%s\"", v);
        free(v);
        v = text_of(dom, "budget-hour");
        ck_assert_msg(strstr(v, " of 10000000"), "hour budget \"%s\"", v);
        free(v);

        /* Every job in the list with its state. */
        {
                const struct {
                        long long id;
                        const char *state;
                } want[] = { { ok, "succeeded" }, { bad, "failed" }, { run, "succeeded" }, { held, "running" },
                             { q1, "queued" },    { q2, "queued" },  { cancelled, "cancelled" } };

                for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                        v = row_state(dom, "id=\"jobs-body\"", want[i].id);
                        ck_assert_msg(v && streq(v, want[i].state), "job %lld listed as %s, not %s", want[i].id,
                                      v ? v : "(absent)", want[i].state);
                        free(v);
                }
        }

        /* The failed job's per-item results, from /jobs/{id}. */
        {
                char want[32], *items = strstr(dom, "id=\"items-body\"");

                snprintf(want, sizeof(want), "%lld", bad);
                assert_attr(dom, "job-detail", "data-job-id", want);
                ck_assert_ptr_nonnull(items);
                v = match1(items, "<tr data-index=\"0\" data-state=\"([a-z]+)\"");
                ck_assert_msg(v && streq(v, "failed"), "item 0 of job %lld: %s", bad, v ? v : "(absent)");
                free(v);
                ck_assert_ptr_nonnull(strstr(items, "ui-poison"));
                ck_assert_msg(strstr(items, "not found"), "Visier's answer for the item is not shown: %.400s", items);
        }

        /* The export run, with its export's name. */
        v = row_state(dom, "id=\"exports-body\"", run);
        ck_assert_msg(v && streq(v, "succeeded"), "export run %lld: %s", run, v ? v : "(absent)");
        free(v);
        v = text_of(dom, "export-defs");
        ck_assert_str_eq(v, "employees");
        free(v);
        ck_assert_ptr_nonnull(strstr(strstr(dom, "id=\"exports-body\""), "<td>employees</td>"));

        /* No secret. */
        ck_assert_ptr_null(strstr(dom, sim.apikey));
        ck_assert_ptr_null(strstr(dom, sim.password));
        free(dom);

        /* The state filter: only failed jobs listed. */
        {
                char url[256], *body, *p;
                int rows = 0;

                snprintf(url, sizeof(url), "http://127.0.0.1:%u/ui#state=failed", vd.port);
                snprintf(dom_path, sizeof(dom_path), "%s/tests/ui-dom-failed.html", top_builddir);
                dom = dump_dom(url, dom_path);
                fprintf(stderr, "test-ui: the DOM filtered to failed jobs is in %s\n", dom_path);
                body = strstr(dom, "id=\"jobs-body\"");
                ck_assert_ptr_nonnull(body);
                *strstr(body, "</tbody>") = '\0';
                for (p = body; (p = strstr(p, "<tr data-job-id=")); p++, rows++)
                        ck_assert_msg(strncmp(strstr(p, "data-state="), "data-state=\"failed\"", 19) == 0,
                                      "the failed filter lists %.60s", p);
                ck_assert_int_eq(rows, 1);
                free(dom);
        }

        /* The screenshot, kept as the test's artifact. */
        {
                static const char *const extra_fmt[] = { "--virtual-time-budget=" VIRTUAL_TIME_MS,
                                                          "--window-size=1280,1500",
                                                          "--run-all-compositor-stages-before-draw", NULL, NULL };
                const char *extra[ELEMENTSOF(extra_fmt)];
                char shot_arg[560], err_path[256], out_path[256], *err;
                unsigned char sig[8] = { 0 };
                FILE *f;
                int k;

                snprintf(shot_path, sizeof(shot_path), "%s/tests/ui-screenshot.png", top_builddir);
                snprintf(shot_arg, sizeof(shot_arg), "--screenshot=%s", shot_path);
                memcpy(extra, extra_fmt, sizeof(extra));
                extra[3] = shot_arg;
                (void) unlink(shot_path);
                snprintf(err_path, sizeof(err_path), "%s/chromium-shot.log", vd.dir);
                snprintf(out_path, sizeof(out_path), "%s/chromium-shot.out", vd.dir);
                k = chromium_run(url_detail, extra, out_path, err_path);
                err = harness_read_file(err_path);
                ck_assert_msg(k == 0, "chromium --screenshot: %s; its log:\n%s", k == -ETIMEDOUT ? "timed out" : "failed",
                              err ? err : "");
                free(err);
                ck_assert_int_eq(stat(shot_path, &st), 0);
                ck_assert_int_gt(st.st_size, 10000);
                f = fopen(shot_path, "rb");
                ck_assert_ptr_nonnull(f);
                ck_assert_int_eq(fread(sig, 1, sizeof(sig), f), sizeof(sig));
                fclose(f);
                ck_assert_msg(memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0, "%s is not a PNG", shot_path);
                fprintf(stderr, "test-ui: screenshot of %s kept at %s (%lld bytes)\n", url_detail, shot_path,
                        (long long) st.st_size);
        }

        /* With [listen] require_request_header = yes (a reload): the page itself loads without the
         * header, which a browser cannot add to a navigation, and its reads carry it. */
        {
                char url[256], *text;
                long status = 0;

                conf = harness_read_file(vd.config);
                ck_assert_int_ge(asprintf(&all, "%s[listen]\nrequire_request_header = yes\n", conf), 0);
                harness_write_file(vd.config, all, 0644);
                free(conf);
                free(all);
                ck_assert_int_eq(kill(vd.pid, SIGHUP), 0);
                for (deadline = clock_now() + 30 * USEC_PER_SEC; status != 412;) {
                        json_decref(visierd_request_json(&vd, "GET", "/status", NULL, NULL, &status));
                        ck_assert_msg(clock_now() < deadline, "the reload did not turn require_request_header on");
                        if (status != 412)
                                clock_sleep(20 * USEC_PER_MSEC); /* probe interval */
                }
                snprintf(url, sizeof(url), "http://127.0.0.1:%u/ui", vd.port);
                snprintf(dom_path, sizeof(dom_path), "%s/tests/ui-dom-header.html", top_builddir);
                dom = dump_dom(url, dom_path);
                v = match1(dom, "<body[^>]* data-state=\"([a-z]+)\"");
                ck_assert_msg(v && streq(v, "ready"), "the page did not render with the header required (%s)",
                              v ? v : "?");
                free(v);
                assert_attr(dom, "count-failed", "data-value", "1");
                text = text_of(dom, "token-state");
                ck_assert_str_eq(text, "valid");
                free(text);
                free(dom);
        }
}
END_TEST

/* Can Chromium run here at all? NULL if yes, else why not (static). */
static const char *chromium_usable(void) {
        static char why[1024];
        char dir[160], out[256], err[256], *dom, *log;
        int r;

        if (!chromium_find(chromium, sizeof(chromium)))
                return "chromium is not installed (Debian: apt-get install --no-install-recommends chromium; or set "
                       "$CHROMIUM)";
        snprintf(dir, sizeof(dir), "%s/ui-probe.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir)) {
                snprintf(why, sizeof(why), "cannot make a directory for the probe: %s", strerror(errno));
                return why;
        }
        snprintf(out, sizeof(out), "%s/dom", dir);
        snprintf(err, sizeof(err), "%s/log", dir);
        r = chromium_run("data:text/html,<p id=probe>ok</p>", (const char *const[]) { "--dump-dom", NULL }, out, err);
        dom = harness_read_file(out);
        log = harness_read_file(err);
        if (r < 0 || !dom || !strstr(dom, "probe")) {
                const char *tail = log ? log + (strlen(log) > 600 ? strlen(log) - 600 : 0) : "";

                snprintf(why, sizeof(why), "%s cannot start here (%s): %s", chromium,
                         r == -ETIMEDOUT ? "timed out" : r == -ECHILD || r == 0 ? "no DOM" : strerror(-r), tail);
        }
        free(dom);
        free(log);
        harness_rmtree(dir);
        return why[0] ? why : NULL;
}

int main(void) {
        Suite *s = suite_create("ui");
        TCase *tc = tcase_create("chromium");
        const char *why;
        SRunner *sr;
        int failed;

        why = chromium_usable();
        if (why) {
                printf("SKIP: test-ui: %s\n", why);
                return 77; /* Automake: SKIP */
        }
        printf("test-ui: using %s\n", chromium);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 300);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_ui_page);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
