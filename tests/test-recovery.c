/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: the write lane's promises where earlier builds broke them — a restarted
 * visierd waiting out the call its dead predecessor left open, a lost answer waited out
 * before the next write, one visierd per database, SIGTERM stopping the publisher first,
 * creates reconciled only with what is really theirs, merged assignments that fail per
 * permission, and a job database that is deleted under visierd. Each test failed on the
 * build before these fixes.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
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
#define FAST "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\n"

static void start_all(const char *visier_conf, const char *tail) {
        char v[512];

        snprintf(v, sizeof(v), FAST "%s", visier_conf ? visier_conf : "request_timeout = 5");
        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, v, tail);
        visierd_wait_ready(&vd);
}

static void set_faults(const char *json) {
        json_decref(sim_control_post(&sim, "/_sim/faults", json));
}

static json_t *write_req(const char *method, const char *path, const char *body, const char *const *headers,
                         long *ret_status) {
        return visierd_request_json(&vd, method, path, body, headers, ret_status);
}

static long long submit(const char *method, const char *path, const char *body) {
        long status;
        long long id;
        json_t *j = write_req(method, path, body, NULL, &status);

        ck_assert_msg(status == 202, "%s %s answered %ld", method, path, status);
        id = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        return id;
}

/* Create a permission and wait for Visier's answer; returns its permissionId (caller frees). */
static char *create_now(const char *name) {
        const char *wait[] = { "Prefer: wait=30", NULL };
        char body[256], *id;
        long status;
        json_t *j;

        snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s\"}]}", name);
        j = write_req("POST", "/v1/admin/permissions", body, wait, &status);
        ck_assert_msg(status == 200, "create %s answered %ld", name, status);
        id = strdup(json_string_value(json_object_get(json_array_get(json_object_get(j, "successes"), 0), "permissionId")));
        json_decref(j);
        return id;
}

static json_t *job(long long id) {
        return visierd_job(&vd, id);
}

static char *job_state(long long id) {
        json_t *j = job(id);
        char *s = strdup(json_string_value(json_object_get(j, "state")));

        json_decref(j);
        return s;
}

/* Wait (probing) until the job is final; returns its state (caller frees). */
static char *wait_final(long long id) {
        usec_t deadline = clock_now() + JOB_WAIT_SEC * USEC_PER_SEC;

        for (;;) {
                char *s = job_state(id);

                if (streq(s, "succeeded") || streq(s, "failed") || streq(s, "cancelled"))
                        return s;
                free(s);
                ck_assert_msg(clock_now() < deadline, "job %lld never finished", id);
                clock_sleep(50 * USEC_PER_MSEC);
        }
}

static void wait_counter(const char *name, long long at_least) {
        for (int i = 0; i < 1000 && sim_counter(&sim, name) < at_least; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        ck_assert_msg(sim_counter(&sim, name) >= at_least, "sim counter %s stayed below %lld", name, at_least);
}

static bool log_has(const Visierd *d, const char *needle) {
        return visierd_log_count(d, needle) > 0;
}

/* ---- never two publishes at once ---- */

/* SIGKILL while an update is open at Visier; restart at once. The restarted visierd must not
 * send any write until the dead call can no longer be running there. */
START_TEST(test_restart_waits_out_the_dead_call) {
        char body[256], *pid;
        long long id;
        char *state;

        /* On PostgreSQL the restarted visierd keeps its node's name, so it takes the lane back at
         * once, under a new term, and the dead call's wait is the grant's (docs/fleet.md); under
         * the default name, HOST:PID, it would first wait out the dead node's lease, which lasts
         * longer than this call. */
        start_all("request_timeout = 4", harness_store_is_pg()
                                                 ? "[jobs]\nbatch_delay_ms = 0\npublish_settle = 1\n[fleet]\nnode = restarted"
                                                 : "[jobs]\nbatch_delay_ms = 0\npublish_settle = 1");
        pid = create_now("dead-call");
        set_faults("{\"publish_ms\":3000}");
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"dead-call-2\"}]}", pid);
        id = submit("PUT", "/v1/admin/permissions", body);
        wait_counter("writes_in_flight", 1);
        visierd_kill(&vd);
        /* The dead call goes on publishing at the sim for about 3 s: restart right away. */
        visierd_restart(&vd);
        set_faults("{\"publish_ms\":0}");
        state = wait_final(id);
        ck_assert_str_eq(state, "succeeded");
        ck_assert_int_eq(sim_counter(&sim, "publish_overlaps"), 0);
        ck_assert(log_has(&vd, "Visier may still be publishing it"));
        free(state);
        free(pid);
}
END_TEST

/* A write whose answer is lost (the call timed out while Visier kept publishing) is not
 * followed by another write until publish_settle has passed. */
START_TEST(test_lost_answer_is_waited_out) {
        char body[256], *pid, *state;
        long long id;

        start_all("request_timeout = 1", "[jobs]\nbatch_delay_ms = 0\npublish_settle = 3");
        pid = create_now("slow-publish");
        set_faults("{\"publish_ms\":2500}");
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"slow-publish-2\"}]}",
                 pid);
        id = submit("PUT", "/v1/admin/permissions", body);
        wait_counter("writes_in_flight", 1);
        set_faults("{\"publish_ms\":0}"); /* the call in flight keeps its 2.5 s */
        state = wait_final(id);
        ck_assert_str_eq(state, "succeeded");
        ck_assert_int_ge(sim_counter(&sim, "write_calls"), 3); /* the create, the lost update, its resend */
        ck_assert_int_eq(sim_counter(&sim, "publish_overlaps"), 0);
        free(state);
        free(pid);
}
END_TEST

static bool unix_socket_answers(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        ok = fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
        if (fd >= 0)
                close(fd);
        return ok;
}

/* A second visierd on the same database refuses to start and names the holder. */
START_TEST(test_second_instance_refused) {
        char sock[256], tail[512], pidtext[32], *out = NULL;
        const char *argv[4];
        int status;

        snprintf(sock, sizeof(sock), "/tmp/visierd-second-%d.sock", (int) getpid());
        snprintf(tail, sizeof(tail), "[listen]\nsocket = %s\n", sock);
        start_all(NULL, tail);
        ck_assert(unix_socket_answers(sock));

        argv[0] = getenv("VISIERD_BIN");
        argv[1] = "--config";
        argv[2] = vd.config;
        argv[3] = NULL;
        status = harness_run(argv, &out);
        ck_assert_int_ne(status, 0);
        snprintf(pidtext, sizeof(pidtext), "(pid %d)", (int) vd.pid);
        ck_assert_msg(strstr(out, "is in use by another visierd") && strstr(out, pidtext), "second visierd said: %s", out);
        free(out);
        ck_assert(unix_socket_answers(sock));
        ck_assert_int_eq(visierd_stop(&vd), 0);
        ck_assert(!unix_socket_answers(sock));
}
END_TEST

/* A visierd on another database never takes over the first one's unix socket. */
START_TEST(test_socket_not_taken_over) {
        char sock[256], tail[512], *out = NULL;
        const char *argv[4];
        Visierd other;
        int status;

        snprintf(sock, sizeof(sock), "/tmp/visierd-second-%d.sock", (int) getpid());
        snprintf(tail, sizeof(tail), "[listen]\nsocket = %s\n", sock);
        start_all(NULL, tail);
        ck_assert(unix_socket_answers(sock));

        /* Another database (a file of its own, or a database of its own on PostgreSQL), the
         * same socket path. */
        visierd_write_config(&other, &sim, FAST, tail);
        argv[0] = getenv("VISIERD_BIN");
        argv[1] = "--config";
        argv[2] = other.config;
        argv[3] = NULL;
        status = harness_run(argv, &out);
        harness_rmtree(other.dir);
        ck_assert_int_ne(status, 0);
        ck_assert_msg(strstr(out, "another process is listening on it"), "second visierd said: %s", out);
        free(out);
        ck_assert(unix_socket_answers(sock));
        ck_assert_int_eq(visierd_stop(&vd), 0);
        ck_assert(!unix_socket_answers(sock));
}
END_TEST

static void *slow_read(void *arg) {
        char *u = visierd_url(&vd, "/v1/admin/capabilities");
        HttpResult r;

        (void) arg;
        http_request("GET", u, NULL, NULL, 20000, &r);
        http_result_done(&r);
        free(u);
        return NULL;
}

/* SIGTERM stops claiming before anything else shuts down: while a slow read keeps the HTTP
 * server busy, the job queued behind the write in flight is not sent. */
START_TEST(test_sigterm_stops_claiming_first) {
        char body[256], *p1, *p2, *state;
        long long a, b, before;
        pthread_t t;

        start_all("request_timeout = 10", "[jobs]\nbatch_delay_ms = 0");
        p1 = create_now("term-1");
        p2 = create_now("term-2");
        set_faults("{\"latency_ms\":1500}");
        before = sim_calls(&sim, "/v1/admin/permissions");
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"term-1b\"}]}", p1);
        a = submit("PUT", "/v1/admin/permissions", body);
        snprintf(body, sizeof(body), "{\"permissionIds\":[\"%s\"]}", p2);
        b = submit("DELETE", "/v1/admin/permissions", body);
        for (int i = 0; i < 500 && sim_calls(&sim, "/v1/admin/permissions") < before + 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/permissions"), before + 1);
        ck_assert_int_eq(pthread_create(&t, NULL, slow_read, NULL), 0);
        for (int i = 0; i < 500 && sim_calls(&sim, "/v1/admin/capabilities") < 1; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        ck_assert_int_eq(visierd_stop(&vd), 0);
        pthread_join(t, NULL);
        /* The update in flight finished; the delete was never sent. */
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/permissions"), before + 1);

        set_faults("{\"latency_ms\":0}");
        visierd_restart(&vd);
        state = wait_final(a);
        ck_assert_str_eq(state, "succeeded");
        free(state);
        state = wait_final(b);
        ck_assert_str_eq(state, "succeeded");
        free(state);
        free(p1);
        free(p2);
}
END_TEST

/* ---- every accepted change applied exactly once; nothing refused applied ---- */

/* A create whose client correlation ID is already used (by another permission) fails; it is
 * never recorded as succeeded with the other permission's ID. Two pending creates with one
 * correlation ID: the second is refused with 400. */
START_TEST(test_reused_correlation_id_is_not_taken_for_ours) {
        char *first, *state;
        long long id, blocker;
        long status;
        json_t *j, *r;

        start_all(NULL, "[jobs]\nbatch_delay_ms = 0");
        j = write_req("POST", "/v1/admin/permissions",
                      "{\"permissions\":[{\"displayName\":\"cid-owner\",\"correlationId\":\"cid-reuse-1\"}]}",
                      (const char *[]) { "Prefer: wait=30", NULL }, &status);
        ck_assert_int_eq(status, 200);
        first = strdup(json_string_value(json_object_get(json_array_get(json_object_get(j, "successes"), 0), "permissionId")));
        json_decref(j);

        id = submit("POST", "/v1/admin/permissions",
                    "{\"permissions\":[{\"displayName\":\"cid-latecomer\",\"correlationId\":\"cid-reuse-1\"}]}");
        state = wait_final(id);
        ck_assert_str_eq(state, "failed");
        free(state);
        j = job(id);
        r = json_object_get(json_array_get(json_object_get(j, "item_results"), 0), "result");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "item_results"), 0), "state")),
                         "failed");
        ck_assert_msg(!json_object_get(r, "permissionId") ||
                              !streq(json_string_value(json_object_get(r, "permissionId")) ?: "", first),
                      "the latecomer was given the owner's permission");
        json_decref(j);

        /* Both pending: hold the lane with a slow create first. */
        set_faults("{\"publish_ms\":1500}");
        blocker = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"cid-blocker\"}]}");
        wait_counter("writes_in_flight", 1);
        id = submit("POST", "/v1/admin/permissions",
                    "{\"permissions\":[{\"displayName\":\"cid-twin-a\",\"correlationId\":\"cid-twin\"}]}");
        j = write_req("POST", "/v1/admin/permissions",
                      "{\"permissions\":[{\"displayName\":\"cid-twin-b\",\"correlationId\":\"cid-twin\"}]}", NULL, &status);
        ck_assert_int_eq(status, 400);
        ck_assert_msg(strstr(json_string_value(json_object_get(j, "message")) ?: "", "permissions[0].correlationId"),
                      "400 does not name the field: %s", json_string_value(json_object_get(j, "message")));
        json_decref(j);
        set_faults("{\"publish_ms\":0}");
        state = wait_final(blocker);
        ck_assert_str_eq(state, "succeeded");
        free(state);
        state = wait_final(id);
        ck_assert_str_eq(state, "succeeded");
        free(state);
        free(first);
}
END_TEST

/* Two assignments merged into one call, one on a permission that does not exist: that one
 * fails, the other succeeds. */
START_TEST(test_merged_assignment_on_missing_permission_fails) {
        const char *known = "7a9e4d2c-1b3f-4c5d-8e6f-0a1b2c3d4e72";
        const char *missing = "0b0b0b0b-0000-4000-8000-000000000001";
        char body[256], *s1, *s2;
        long long ok_job, bad_job, calls;
        json_t *j;

        start_all(NULL, "[jobs]\nbatch_delay_ms = 1000");
        calls = sim_counter(&sim, "write_calls");
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-100\"]}]}", known);
        ok_job = submit("PUT", "/v1/admin/permissions/users", body);
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-101\"]}]}", missing);
        bad_job = submit("PUT", "/v1/admin/permissions/users", body);
        s1 = wait_final(ok_job);
        s2 = wait_final(bad_job);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), calls + 1); /* merged: one call */
        ck_assert_str_eq(s1, "succeeded");
        ck_assert_str_eq(s2, "failed");
        j = job(bad_job);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "item_results"), 0), "state")),
                         "failed");
        json_decref(j);
        free(s1);
        free(s2);
}
END_TEST

/* The job database is deleted under a running visierd: /readyz says so and writes are
 * refused with 503 (they would vanish at the next restart). */
START_TEST(test_deleted_database_is_noticed) {
        char path[256], *u;
        long status;
        json_t *j;

        start_all(NULL, "[jobs]\nbatch_delay_ms = 0");
        snprintf(path, sizeof(path), "%s/visierd.db", vd.dir);
        ck_assert_int_eq(unlink(path), 0);
        u = visierd_url(&vd, "/readyz");
        j = http_get_json(u, &status);
        ck_assert_int_eq(status, 503);
        ck_assert_msg(readyz_says(j, "deleted or replaced"), "readyz reasons: %s", json_dumps(j, JSON_COMPACT));
        json_decref(j);
        free(u);
        j = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"into-the-void\"}]}", NULL,
                      &status);
        ck_assert_int_eq(status, 503);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "ServiceUnavailable");
        json_decref(j);
}
END_TEST

/* Header values that are not valid UTF-8 or hold control characters are refused before
 * anything is stored; NonVersioned as the Visier SDK spells it is normalised. */
START_TEST(test_bad_header_values_refused) {
        const char *bad_utf8[] = { "ProjectID: \xff\xfe", NULL };
        const char *ctl[] = { "TargetTenantID: a\x01z", NULL };
        const char *nv_odd[] = { "NonVersioned: maybe", NULL };
        const char *nv_sdk[] = { "NonVersioned: True", "Prefer: wait=30", NULL };
        long status;
        json_t *j, *list;
        char *u;

        start_all(NULL, "[jobs]\nbatch_delay_ms = 0");
        j = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"hdr-1\"}]}", bad_utf8, &status);
        ck_assert_int_eq(status, 400);
        ck_assert_str_eq(json_string_value(json_object_get(j, "message")), "ProjectID: must be valid UTF-8");
        json_decref(j);
        j = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"hdr-2\"}]}", ctl, &status);
        ck_assert_int_eq(status, 400);
        ck_assert_str_eq(json_string_value(json_object_get(j, "message")),
                         "TargetTenantID: must not contain control characters");
        json_decref(j);
        j = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"hdr-3\"}]}", nv_odd, &status);
        ck_assert_int_eq(status, 400);
        ck_assert_str_eq(json_string_value(json_object_get(j, "message")), "NonVersioned: must be true or false");
        json_decref(j);
        j = write_req("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"hdr-4\"}]}", nv_sdk, &status);
        ck_assert_int_eq(status, 200);
        json_decref(j);
        /* Nothing refused was stored: only the one accepted job is listed, with "true". */
        u = visierd_url(&vd, "/jobs");
        j = http_get_json(u, &status);
        free(u);
        list = json_object_get(j, "jobs");
        ck_assert_int_eq(json_array_size(list), 1);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "non_versioned")), "true");
        json_decref(j);
}
END_TEST

/* Transient failures (every call answered 503, lookups included) fail a job only once it is
 * older than give_up_after, and then say so; a job that meets them for a while then gets
 * through is not failed. */
START_TEST(test_transient_failures_give_up_only_by_age) {
        char *state;
        long long id;
        json_t *j;

        start_all("request_timeout = 2\nmax_retries = 0", "[jobs]\nbatch_delay_ms = 0\ngive_up_after = 4");
        set_faults("{\"error_rate\":100}");
        id = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"never-through\"}]}");
        state = wait_final(id);
        ck_assert_str_eq(state, "failed");
        free(state);
        j = job(id);
        ck_assert_msg(strstr(json_string_value(json_object_get(j, "error")) ?: "", "gave up after"), "error: %s",
                      json_string_value(json_object_get(j, "error")));
        json_decref(j);

        /* 5xx for a while, shorter than give_up_after: the job gets through. */
        set_faults("{\"error_rate\":0,\"next_errors\":2}");
        id = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"through-at-last\"}]}");
        state = wait_final(id);
        ck_assert_str_eq(state, "succeeded");
        free(state);
}
END_TEST

/* ---- token refusals ---- */

typedef struct Read {
        const char *path;
        long status;
        char *body;
} Read;

static void *read_thread(void *arg) {
        Read *rd = arg;
        char *u = visierd_url(&vd, rd->path);
        HttpResult r;

        http_request("GET", u, NULL, NULL, 30000, &r);
        rd->status = r.curl_error ? -r.curl_error : r.status;
        rd->body = r.body ? strndup(r.body, r.len) : strdup("");
        http_result_done(&r);
        free(u);
        return NULL;
}

/* A read during which Visier refuses visierd's token twice (two revocations) still gets
 * Visier's answer: a 401 about a token is visierd's to cure, never the caller's. */
START_TEST(test_read_spanning_two_refusals) {
        Read rd = { .path = "/v1/admin/capabilities" };
        long long logins;
        pthread_t t;

        start_all("request_timeout = 15", NULL);
        logins = sim_counter(&sim, "logins");
        set_faults("{\"refuse_tokens\":true}");
        ck_assert_int_eq(pthread_create(&t, NULL, read_thread, &rd), 0);
        wait_counter("logins", logins + 2); /* refused, logged in again, refused again, ... */
        wait_counter("tokens_refused", 2);
        set_faults("{\"refuse_tokens\":false}");
        pthread_join(t, NULL);
        ck_assert_msg(rd.status == 200, "read answered %ld: %s", rd.status, rd.body);
        ck_assert_ptr_nonnull(strstr(rd.body, "capabilities"));
        free(rd.body);
}
END_TEST

/* A lone write whose call meets refused tokens is not failed: it goes through once Visier
 * takes the token again. */
START_TEST(test_write_spanning_refusals_not_failed) {
        char body[256], *pid, *state;
        long long id, logins;

        start_all("request_timeout = 3", "[jobs]\nbatch_delay_ms = 0");
        pid = create_now("refused-token");
        logins = sim_counter(&sim, "logins");
        set_faults("{\"refuse_tokens\":true}");
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"refused-2\"}]}",
                 pid);
        id = submit("PUT", "/v1/admin/permissions", body);
        wait_counter("tokens_refused", 3);
        ck_assert_int_ge(sim_counter(&sim, "logins"), logins + 2);
        state = job_state(id);
        ck_assert_msg(!streq(state, "failed"), "the write failed on an authentication error");
        free(state);
        set_faults("{\"refuse_tokens\":false}");
        state = wait_final(id);
        ck_assert_str_eq(state, "succeeded");
        free(state);
        free(pid);
}
END_TEST

static atomic_bool storm_stop;

static void *storm_reader(void *arg) {
        long *bad = arg;
        char *u = visierd_url(&vd, "/v1/admin/capabilities");

        while (!atomic_load(&storm_stop)) {
                HttpResult r;
                json_t *j;

                http_request("GET", u, NULL, NULL, 30000, &r);
                j = r.curl_error ? NULL : json_loadb(r.body, r.len, 0, NULL);
                /* Either Visier's answer or one of visierd's Status-shaped 5xx (503 without a
                 * token; 504 when the deadline cut the last try short); never a 401. */
                if (!(r.status == 200 ||
                      (r.status >= 500 && r.status <= 504 && json_string_value(json_object_get(j, "code"))))) {
                        fprintf(stderr, "storm read answered %ld (curl %d): %.*s\n", r.status, r.curl_error,
                                (int) r.len, r.body ? r.body : "");
                        (*bad)++;
                }
                json_decref(j);
                http_result_done(&r);
        }
        free(u);
        return NULL;
}

/* Visier takes every login but refuses every token: visierd backs off its logins (immediately,
 * then 1 s, 2 s, 4 s ...) instead of logging in as fast as calls come, and answers callers
 * with a Status-shaped 503. */
START_TEST(test_token_storm_backs_off) {
        long bad[4] = {};
        long long logins, during;
        pthread_t t[4];

        start_all("request_timeout = 2", NULL);
        logins = sim_counter(&sim, "logins");
        set_faults("{\"refuse_tokens\":true}");
        atomic_store(&storm_stop, false);
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(pthread_create(&t[i], NULL, storm_reader, &bad[i]), 0);
        /* A window of eight seconds of refusals, while the readers keep calling. */
        for (int i = 0; i < 80; i++)
                clock_sleep(100 * USEC_PER_MSEC);
        during = sim_counter(&sim, "logins") - logins;
        atomic_store(&storm_stop, true);
        for (int i = 0; i < 4; i++)
                pthread_join(t[i], NULL);
        ck_assert_int_eq(bad[0] + bad[1] + bad[2] + bad[3], 0);
        /* 1 + immediate + 1 s + 2 s + 4 s: at most 5 in 8 s; allow a little for scheduling. */
        ck_assert_msg(during <= 7, "%lld logins in 8 s of refused tokens", during);
        ck_assert_int_ge(during, 2);
        set_faults("{\"refuse_tokens\":false}");
}
END_TEST

/* ---- reloads under load ---- */

static atomic_bool load_stop;
static atomic_int load_accepted, load_refused;

static void *load_writer(void *arg) {
        char *u = visierd_url(&vd, "/v1/admin/permissions");
        int n = 0;

        while (!atomic_load(&load_stop)) {
                char body[128];
                HttpResult r;

                snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"reload-%d-%d\"}]}",
                         (int) (intptr_t) arg, n++);
                http_request("POST", u, NULL, body, 30000, &r);
                atomic_fetch_add(r.status == 202 ? &load_accepted : &load_refused, 1);
                http_result_done(&r);
        }
        free(u);
        return NULL;
}

static void *load_exports_reader(void *arg) {
        char *u = visierd_url(&vd, "/exports");

        (void) arg;
        while (!atomic_load(&load_stop)) {
                HttpResult r;
                http_request("GET", u, NULL, NULL, 30000, &r);
                if (r.status != 200)
                        atomic_fetch_add(&load_refused, 1);
                http_result_done(&r);
        }
        free(u);
        return NULL;
}

/* SIGHUP again and again while writes and /exports are served: every write is accepted and
 * every listing answered (under ThreadSanitizer, the harness fails the test on any report:
 * the queue limit and the export definitions are swapped by a reload while requests read
 * them). */
START_TEST(test_reload_under_load) {
        char tail[512], dir[256], path[320], *def;
        pthread_t t[3];

        snprintf(dir, sizeof(dir), "%s/etc/examples/exports.d/employees.json", getenv("TOP_SRCDIR") ?: ".");
        def = harness_read_file(dir);
        ck_assert_ptr_nonnull(def);
        sim_start(&sim, unlimited);
        visierd_write_config(&vd, &sim, FAST "request_timeout = 5", NULL);
        snprintf(dir, sizeof(dir), "%s/exports.d", vd.dir);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        snprintf(path, sizeof(path), "%s/employees.json", dir);
        harness_write_file(path, def, 0644);
        free(def);
        snprintf(tail, sizeof(tail), "[exports]\ndirectory = %s\n[jobs]\nbatch_delay_ms = 0\nmax_pending = 100000\n", dir);
        {
                char *conf = harness_read_file(vd.config), *all;
                ck_assert_int_ge(asprintf(&all, "%s%s", conf, tail), 0);
                harness_write_file(vd.config, all, 0644);
                free(conf);
                free(all);
        }
        visierd_restart(&vd);
        visierd_wait_ready(&vd);

        atomic_store(&load_stop, false);
        ck_assert_int_eq(pthread_create(&t[0], NULL, load_writer, (void *) 0), 0);
        ck_assert_int_eq(pthread_create(&t[1], NULL, load_writer, (void *) 1), 0);
        ck_assert_int_eq(pthread_create(&t[2], NULL, load_exports_reader, NULL), 0);
        for (int i = 0; i < 20; i++) {
                ck_assert_int_eq(kill(vd.pid, SIGHUP), 0);
                clock_sleep(100 * USEC_PER_MSEC); /* spacing between reloads, not a readiness wait */
        }
        atomic_store(&load_stop, true);
        for (int i = 0; i < 3; i++)
                pthread_join(t[i], NULL);
        ck_assert_int_gt(atomic_load(&load_accepted), 0);
        ck_assert_int_eq(atomic_load(&load_refused), 0);
        ck_assert(log_has(&vd, "configuration reloaded"));
}
END_TEST

int main(void) {
        Suite *s = suite_create("recovery");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_restart_waits_out_the_dead_call);
        tcase_add_test(tc, test_lost_answer_is_waited_out);
        /* One visierd per database is SQLite's lock file beside the database; on PostgreSQL a
         * second visierd on the same database is a second node of the fleet (docs/fleet.md). */
        if (!harness_store_is_pg())
                tcase_add_test(tc, test_second_instance_refused);
        else
                printf("test_second_instance_refused: SQLite only (its lock file), not run on PostgreSQL\n");
        tcase_add_test(tc, test_socket_not_taken_over);
        tcase_add_test(tc, test_sigterm_stops_claiming_first);
        tcase_add_test(tc, test_reused_correlation_id_is_not_taken_for_ours);
        tcase_add_test(tc, test_merged_assignment_on_missing_permission_fails);
        /* The database file deleted under visierd: PostgreSQL's files are the server's. */
        if (!harness_store_is_pg())
                tcase_add_test(tc, test_deleted_database_is_noticed);
        else
                printf("test_deleted_database_is_noticed: SQLite only (its database file deleted), not run on "
                       "PostgreSQL\n");
        tcase_add_test(tc, test_bad_header_values_refused);
        tcase_add_test(tc, test_transient_failures_give_up_only_by_age);
        tcase_add_test(tc, test_read_spanning_two_refusals);
        tcase_add_test(tc, test_write_spanning_refusals_not_failed);
        tcase_add_test(tc, test_token_storm_backs_off);
        tcase_add_test(tc, test_reload_under_load);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
