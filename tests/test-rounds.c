/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: project mode ([jobs] publish = project). A round's bulk calls, of any
 * operations, go into one draft project that is published once; the wire shows exactly that.
 * A SIGKILL at each step of a round (filling the draft, during commitAndPublish, after it
 * landed unanswered) ends with every job applied exactly once and no half-filled draft
 * published; a commit that fails before landing is sent again; a refused commit or bulk call
 * isolates what Visier refuses; a client's own ProjectID writes never join visierd's drafts.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

#define JOB_WAIT_SEC 90

static Sim sim;
static Visierd vd;
static char *token; /* the test's own session at the sim */

static void teardown(void) {
        free(token);
        token = NULL;
        harness_teardown(&sim, &vd);
}

static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };
#define FAST "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 5"
#define PROJECT_MODE "[jobs]\npublish = project\nbatch_delay_ms = 0\npublish_settle = 1\n"

static void start_all(const char *more_jobs) {
        char tail[512];

        snprintf(tail, sizeof(tail), PROJECT_MODE "%s", strempty(more_jobs));
        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, FAST, tail);
        visierd_wait_ready(&vd);
        token = sim_login(&sim);
}

static void set_faults(const char *json) {
        json_decref(sim_control_post(&sim, "/_sim/faults", json));
}

static long long submit(const char *method, const char *path, const char *body, const char *const *headers) {
        long status;
        long long id;
        json_t *j = visierd_request_json(&vd, method, path, body, headers, &status);

        ck_assert_msg(status == 202, "%s %s answered %ld", method, path, status);
        id = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        return id;
}

/* Wait (probing) until the job is final; its state must be WANT. Returns the job (caller decrefs). */
static json_t *wait_final(long long id, const char *want) {
        usec_t deadline = clock_now() + JOB_WAIT_SEC * USEC_PER_SEC;

        for (;;) {
                json_t *j = visierd_job(&vd, id);
                const char *s = json_string_value(json_object_get(j, "state"));

                if (streq(s, "succeeded") || streq(s, "failed") || streq(s, "cancelled")) {
                        ck_assert_msg(streq(s, want), "job %lld %s, not %s: %s", id, s, want,
                                      strempty(json_string_value(json_object_get(j, "error"))));
                        return j;
                }
                json_decref(j);
                ck_assert_msg(clock_now() < deadline, "job %lld never finished", id);
                clock_sleep(50 * USEC_PER_MSEC); /* probe interval */
        }
}

static void wait_counter(const char *name, long long at_least) {
        usec_t deadline = clock_now() + 30 * USEC_PER_SEC;

        while (sim_counter(&sim, name) < at_least) {
                ck_assert_msg(clock_now() < deadline, "sim counter %s stayed below %lld", name, at_least);
                clock_sleep(10 * USEC_PER_MSEC); /* probe interval */
        }
}

/* A call straight to the sim; its JSON answer (caller decrefs), which must come with WANT. */
static json_t *sim_json(const char *method, const char *path, const char *body, long want) {
        HttpResult r;
        json_t *j;

        sim_api(&sim, token, method, path, body, &r);
        ck_assert_msg(r.status == want, "%s %s answered %ld, not %ld", method, path, r.status, want);
        j = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
        http_result_done(&r);
        return j;
}

/* A permission made straight in the sim; its ID (caller frees). */
static char *precreate(const char *name) {
        char body[128], *id;
        json_t *j;

        snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s\"}]}", name);
        j = sim_json("POST", "/v1/admin/permissions", body, 200);
        id = strdup(json_string_value(json_object_get(json_array_get(json_object_get(j, "successes"), 0), "permissionId")));
        json_decref(j);
        return id;
}

/* The open draft projects (caller decrefs). */
static json_t *open_drafts(void) {
        json_t *j = sim_json("GET", "/v1/admin/projects", NULL, 200), *open = json_incref(json_object_get(j, "openProjects"));

        json_decref(j);
        return open;
}

static size_t n_open_drafts(void) {
        json_t *open = open_drafts();
        size_t n = json_array_size(open);

        json_decref(open);
        return n;
}

/* The only open draft's ID (caller frees), waiting for it to exist. */
static char *the_open_draft(void) {
        usec_t deadline = clock_now() + 30 * USEC_PER_SEC;

        for (;;) {
                json_t *open = open_drafts();
                char *id = json_array_size(open) == 1
                                   ? strdup(json_string_value(json_object_get(json_array_get(open, 0), "id")))
                                   : NULL;

                ck_assert_uint_le(json_array_size(open), 1);
                json_decref(open);
                if (id)
                        return id;
                ck_assert_msg(clock_now() < deadline, "no draft project was opened");
                clock_sleep(10 * USEC_PER_MSEC); /* probe interval */
        }
}

/* Is PROJECT among the production versions? */
static bool published(const char *project) {
        json_t *j = sim_json("GET", "/v1/admin/production-versions?limit=1000", NULL, 200), *e;
        bool found = false;
        size_t i;

        json_array_foreach(json_object_get(j, "publishedVersions"), i, e)
                found |= streq(strempty(json_string_value(json_object_get(e, "id"))), project);
        json_decref(j);
        return found;
}

static const char *display_name(const char *id) {
        static char name[128];
        char path[128];
        json_t *j;

        snprintf(path, sizeof(path), "/v1/admin/permissions/%s", id);
        j = sim_json("GET", path, NULL, 200);
        snprintf(name, sizeof(name), "%s", strempty(json_string_value(json_object_get(j, "displayName"))));
        json_decref(j);
        return name;
}

static int count_named(const char *name) {
        json_t *dump = sim_control_get(&sim, "/_sim/permissions");
        int n = sim_count_named(dump, name);

        json_decref(dump);
        return n;
}

static json_t *visierd_status(void) {
        char *u = visierd_url(&vd, "/status");
        long status;
        json_t *st = http_get_json(u, &status);

        ck_assert_int_eq(status, 200);
        free(u);
        return st;
}

static long long rounds_published(void) {
        json_t *st = visierd_status();
        long long n = json_integer_value(json_object_get(json_object_get(st, "publisher"), "rounds_published"));

        json_decref(st);
        return n;
}

static const char *header(json_t *request, const char *name) {
        json_t *h;
        size_t i;

        json_array_foreach(json_object_get(request, "headers"), i, h)
                if (strcasecmp(strempty(json_string_value(json_array_get(h, 0))), name) == 0)
                        return json_string_value(json_array_get(h, 1));
        return NULL;
}

/* visierd's calls to /v1/admin/ (not its sign-in, not the test's own calls), from the sim's log. */
static json_t *admin_requests(void) {
        json_t *log = sim_control_get(&sim, "/_sim/requests"), *out = json_array(), *e;
        size_t i;

        json_array_foreach(json_object_get(log, "requests"), i, e)
                if (strncmp(strempty(json_string_value(json_object_get(e, "target"))), "/v1/admin/", 10) == 0 &&
                    !strstr(json_string_value(json_object_get(e, "target")), "visierSecureToken") &&
                    strncmp(strempty(header(e, "User-Agent")), "visierd/", 8) == 0)
                        json_array_append(out, e);
        json_decref(log);
        return out;
}

static void assert_request(json_t *request, const char *method, const char *target, const char *project,
                           const char *body) {
        ck_assert_str_eq(json_string_value(json_object_get(request, "method")), method);
        ck_assert_str_eq(json_string_value(json_object_get(request, "target")), target);
        if (project)
                ck_assert_str_eq(strempty(header(request, "ProjectID")), project);
        else
                ck_assert_ptr_null(header(request, "ProjectID"));
        if (body)
                ck_assert_str_eq(json_string_value(json_object_get(request, "body")), body);
}

/* ---- one round, on the wire ------------------------------------------------------------- */

/* Four operations on disjoint permissions, queued while the first write is held in its draft:
 * one draft, each operation's call into it with its ProjectID, one commitAndPublish, and one
 * production version. */
START_TEST(test_round_publishes_once) {
        char *a, *b, *c, *draft, body[256], target[128];
        long long ids[4], v0;
        json_t *log, *e;
        const char *text;

        start_all(NULL);
        a = precreate("round-a");
        b = precreate("round-b");
        c = precreate("round-c");
        v0 = sim_counter(&sim, "production_version");
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));

        set_faults("{\"hold_writes\":true}");
        ids[0] = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"round-new\"}]}", NULL);
        wait_counter("writes_in_flight", 1);
        draft = the_open_draft();
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"round-a-2\"}]}", a);
        ids[1] = submit("PUT", "/v1/admin/permissions", body, NULL);
        snprintf(body, sizeof(body), "{\"permissionIds\":[\"%s\"]}", b);
        ids[2] = submit("DELETE", "/v1/admin/permissions", body, NULL);
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-001\"]}]}", c);
        ids[3] = submit("PUT", "/v1/admin/permissions/users", body, NULL);
        set_faults("{\"hold_writes\":false}");
        for (size_t i = 0; i < ELEMENTSOF(ids); i++)
                json_decref(wait_final(ids[i], "succeeded"));

        ck_assert_int_eq(sim_counter(&sim, "production_version") - v0, 1);
        ck_assert_int_eq(sim_counter(&sim, "publish_overlaps"), 0);
        ck_assert_int_eq(rounds_published(), 1);
        ck_assert(published(draft));
        ck_assert_uint_eq(n_open_drafts(), 0);

        /* The wire: the draft, four calls into it, its commit. */
        log = admin_requests();
        ck_assert_uint_eq(json_array_size(log), 6);
        /* The draft: its name is "visierd round " and 16 hex digits. */
        e = json_array_get(log, 0);
        assert_request(e, "POST", "/v1/admin/projects", NULL, NULL);
        text = json_string_value(json_object_get(e, "body"));
        ck_assert_uint_eq(strlen(text), strlen("{\"name\":\"visierd round 0123456789abcdef\",\"description\":\"Queued "
                                               "permission changes, published together by visierd.\"}"));
        ck_assert(strncmp(text, "{\"name\":\"visierd round ", 23) == 0);
        ck_assert_str_eq(text + 39, "\",\"description\":\"Queued permission changes, published together by visierd.\"}");
        ck_assert_uint_eq(strspn(text + 23, "0123456789abcdef"), 16);
        /* The create carries visierd's correlationId: vd- and 20 hex digits. */
        assert_request(json_array_get(log, 1), "POST", "/v1/admin/permissions", draft, NULL);
        text = json_string_value(json_object_get(json_array_get(log, 1), "body"));
        ck_assert_uint_eq(strlen(text), strlen("{\"permissions\":[{\"displayName\":\"round-new\",\"correlationId\":"
                                               "\"vd-00000000000000000000\"}]}"));
        ck_assert(strncmp(text, "{\"permissions\":[{\"displayName\":\"round-new\",\"correlationId\":\"vd-", 63) == 0);
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"round-a-2\"}]}", a);
        assert_request(json_array_get(log, 2), "PUT", "/v1/admin/permissions", draft, body);
        snprintf(body, sizeof(body), "{\"permissionIds\":[\"%s\"]}", b);
        assert_request(json_array_get(log, 3), "DELETE", "/v1/admin/permissions", draft, body);
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-001\"]}]}", c);
        assert_request(json_array_get(log, 4), "PUT", "/v1/admin/permissions/users", draft, body);
        snprintf(target, sizeof(target), "/v1/admin/projects/%s", draft);
        assert_request(json_array_get(log, 5), "POST", target, NULL, "{\"operation\":\"commitAndPublish\"}");
        json_decref(log);

        /* The end state of applying them one by one. */
        ck_assert_int_eq(count_named("round-new"), 1);
        ck_assert_str_eq(display_name(a), "round-a-2");
        snprintf(target, sizeof(target), "/v1/admin/permissions/%s", b);
        json_decref(sim_json("GET", target, NULL, 404));
        free(draft);
        free(a);
        free(b);
        free(c);
}
END_TEST

/* ---- crashes at each step ---------------------------------------------------------------- */

/* Two jobs of one round, A's update and a create named NEW; returns their IDs. */
static void submit_pair(const char *a, const char *new_name, long long ids[2]) {
        char body[256];

        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"%s-2\"}]}", a, new_name);
        ids[0] = submit("PUT", "/v1/admin/permissions", body, NULL);
        snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s\"}]}", new_name);
        ids[1] = submit("POST", "/v1/admin/permissions", body, NULL);
}

static void assert_pair_applied_once(const char *a, const char *new_name, const long long ids[2]) {
        char want[128];

        for (size_t i = 0; i < 2; i++)
                json_decref(wait_final(ids[i], "succeeded"));
        snprintf(want, sizeof(want), "%s-2", new_name);
        ck_assert_str_eq(display_name(a), want);
        ck_assert_int_eq(count_named(new_name), 1);
        ck_assert_int_eq(sim_counter(&sim, "publish_overlaps"), 0);
        ck_assert_uint_eq(n_open_drafts(), 0);
}

/* SIGKILL while the draft is being filled: the round's first call (a create) was answered in
 * the draft, its second (an update) is in flight there. The restarted visierd deletes that
 * draft unpublished and sends both again in a new round — the create included, as what the
 * draft answered for it was never published. */
START_TEST(test_kill_while_filling) {
        char *a, *draft, body[256];
        long long ids[2], v0;

        start_all(NULL);
        a = precreate("fill-a");
        v0 = sim_counter(&sim, "production_version");
        set_faults("{\"publish_ms\":1500}");
        ids[0] = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"fill-new\"}]}", NULL);
        wait_counter("write_calls", 1);
        snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"fill-new-2\"}]}", a);
        ids[1] = submit("PUT", "/v1/admin/permissions", body, NULL);
        wait_counter("write_calls", 2); /* the update is in the draft's second call, in flight */
        draft = the_open_draft();
        visierd_kill(&vd);
        set_faults("{\"publish_ms\":0}");
        visierd_restart(&vd);

        for (size_t i = 0; i < 2; i++)
                json_decref(wait_final(ids[i], "succeeded"));
        ck_assert_str_eq(display_name(a), "fill-new-2");
        ck_assert_int_eq(count_named("fill-new"), 1);
        ck_assert_int_eq(sim_counter(&sim, "publish_overlaps"), 0);
        ck_assert_uint_eq(n_open_drafts(), 0);
        ck_assert(!published(draft));
        ck_assert_int_eq(sim_counter(&sim, "production_version") - v0, 1); /* the new round only */
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 4);             /* both sent again */
        ck_assert_int_eq(rounds_published(), 1);
        free(draft);
        free(a);
}
END_TEST

/* A round of two whose commitAndPublish is held at Visier, then a SIGKILL: before the commit
 * lands (it lands while visierd is down), or after it landed with its answer lost. The
 * restarted visierd waits out the lane, finds the draft published, and finishes the jobs from
 * what the draft answered: nothing is sent again. */
static void kill_at_commit(const char *prefix, bool landed_first) {
        char a_name[64], new_name[64], *a, *draft;
        long long ids[2], v0, writes;

        snprintf(a_name, sizeof(a_name), "%s-a", prefix);
        snprintf(new_name, sizeof(new_name), "%s-new", prefix);
        start_all(NULL);
        a = precreate(a_name);
        v0 = sim_counter(&sim, "production_version");
        set_faults("{\"hold_commits\":true}");
        submit_pair(a, new_name, ids);
        wait_counter("commit_calls", 1);
        draft = the_open_draft();
        if (landed_first) {
                set_faults("{\"next_apply_then_drop\":1,\"hold_commits\":false}");
                wait_counter("apply_then_drops_injected", 1);
                visierd_kill(&vd);
        } else {
                visierd_kill(&vd);
                set_faults("{\"hold_commits\":false}");
                wait_counter("production_version", v0 + 1);
        }
        writes = sim_counter(&sim, "write_calls");
        visierd_restart(&vd);

        assert_pair_applied_once(a, new_name, ids);
        ck_assert(published(draft));
        ck_assert_int_eq(sim_counter(&sim, "production_version") - v0, 1);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), writes);
        ck_assert_int_eq(sim_counter(&sim, "commit_calls"), 1);
        free(draft);
        free(a);
}

START_TEST(test_kill_during_commit) {
        kill_at_commit("commit", false);
}
END_TEST

START_TEST(test_kill_after_commit_landed) {
        kill_at_commit("landed", true);
}
END_TEST

/* A commit answered 503 before it reached the project: visierd asks, finds the draft open and
 * unpublished, and commits it again. One version, and the call into the draft sent once. */
START_TEST(test_commit_not_landed_is_sent_again) {
        char *draft;
        long long id, v0;

        start_all(NULL);
        v0 = sim_counter(&sim, "production_version");
        set_faults("{\"hold_writes\":true}");
        id = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"again-new\"}]}", NULL);
        wait_counter("writes_in_flight", 1);
        draft = the_open_draft();
        /* The round's only call is past the sim's gateway: the next call to arrive is the commit. */
        set_faults("{\"next_errors\":1,\"hold_writes\":false}");

        json_decref(wait_final(id, "succeeded"));
        ck_assert(published(draft));
        ck_assert_int_eq(count_named("again-new"), 1);
        ck_assert_int_eq(sim_counter(&sim, "errors_injected"), 1);
        ck_assert_int_eq(sim_counter(&sim, "commit_calls"), 1);
        ck_assert_int_eq(sim_counter(&sim, "write_calls"), 1);
        ck_assert_int_eq(sim_counter(&sim, "production_version") - v0, 1);
        ck_assert_uint_eq(n_open_drafts(), 0);
        free(draft);
}
END_TEST

/* A commit that outlives visierd's request timeout and publish_settle (Visier slower than
 * configured): visierd finds the draft open and commits it again; when the first commit
 * lands, the second finds the draft gone (404). That is no refusal: visierd asks again, finds
 * the draft published, and the job succeeds, applied once. */
START_TEST(test_commit_outliving_settle_is_not_refused) {
        long long id, v0;
        char *draft;

        start_all(NULL);
        v0 = sim_counter(&sim, "production_version");
        set_faults("{\"hold_commits\":true}");
        id = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"slow-commit\"}]}", NULL);
        wait_counter("commit_calls", 1);
        draft = the_open_draft();
        /* request_timeout (5 s) and publish_settle (1 s) later, the commit is sent again. */
        for (usec_t deadline = clock_now() + 60 * USEC_PER_SEC; sim_counter(&sim, "commit_calls") < 2;) {
                ck_assert_msg(clock_now() < deadline, "the commit was never sent again");
                clock_sleep(50 * USEC_PER_MSEC); /* probe interval */
        }
        set_faults("{\"hold_commits\":false}");

        json_decref(wait_final(id, "succeeded"));
        ck_assert(published(draft));
        ck_assert_int_eq(count_named("slow-commit"), 1);
        ck_assert_int_eq(sim_counter(&sim, "production_version") - v0, 1);
        ck_assert_uint_eq(n_open_drafts(), 0);
        free(draft);
}
END_TEST

/* ---- refusals ----------------------------------------------------------------------------- */

/* Visier refuses every commit: the round of two is split, each job goes again in a round of
 * its own, and each fails with Visier's answer; nothing is published and no draft stays open. */
START_TEST(test_refused_commit_fails_each_job_with_visiers_answer) {
        char *a;
        long long ids[2], v0;

        start_all(NULL);
        a = precreate("refused-a");
        v0 = sim_counter(&sim, "production_version");
        set_faults("{\"refuse_commits\":true,\"hold_writes\":true}");
        submit_pair(a, "refused-new", ids);
        wait_counter("writes_in_flight", 1);
        set_faults("{\"hold_writes\":false}");
        for (size_t i = 0; i < 2; i++) {
                json_t *j = wait_final(ids[i], "failed");
                const char *error = json_string_value(json_object_get(j, "error"));

                ck_assert_msg(error && strstr(error, "Visier refused to publish draft project") &&
                                      strstr(error, "with 409: The project cannot be published: its changes conflict "
                                                    "with production."),
                              "error: %s", strempty(error));
                ck_assert_int_eq(json_integer_value(json_object_get(j, "upstream_status")), 409);
                json_decref(j);
        }
        ck_assert_int_eq(rounds_published(), 0);
        ck_assert_int_eq(sim_counter(&sim, "production_version"), v0);
        ck_assert_str_eq(display_name(a), "refused-a");
        ck_assert_int_eq(count_named("refused-new"), 0);
        ck_assert_uint_eq(n_open_drafts(), 0);
        free(a);
}
END_TEST

/* A bulk call into the draft that Visier rejects whole (400) changes nothing there: the round
 * publishes what else it holds, the call's merged jobs go again each alone (in a round of its
 * own), and only the offender fails — its round, left empty, is discarded unpublished. */
START_TEST(test_rejected_call_in_a_round_fails_only_its_job) {
        long long ids[3], v0;
        json_t *j;

        start_all(NULL);
        v0 = sim_counter(&sim, "production_version");
        set_faults("{\"reject_display_name\":\"spoiler\",\"hold_writes\":true}");
        ids[0] = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"first\"}]}", NULL);
        wait_counter("writes_in_flight", 1);
        ids[1] = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"good\"}]}", NULL);
        ids[2] = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"spoiler\"}]}", NULL);
        set_faults("{\"hold_writes\":false}");
        json_decref(wait_final(ids[0], "succeeded"));
        json_decref(wait_final(ids[1], "succeeded"));
        j = wait_final(ids[2], "failed");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "upstream_status")), 400);
        json_decref(j);
        ck_assert_int_eq(count_named("first"), 1);
        ck_assert_int_eq(count_named("good"), 1);
        ck_assert_int_eq(count_named("spoiler"), 0);
        ck_assert_int_eq(sim_counter(&sim, "production_version") - v0, 2);
        ck_assert_int_eq(rounds_published(), 2);
        ck_assert_uint_eq(n_open_drafts(), 0);
}
END_TEST

/* ---- what stays out of visierd's drafts --------------------------------------------------- */

/* A write with the client's own ProjectID goes, as sent, into the client's draft, never into
 * one of visierd's, and visierd never publishes the client's draft. */
START_TEST(test_client_project_writes_stay_out) {
        const char *hdr[] = { NULL, NULL };
        char *client_draft, line[96], target[128];
        long long ids[2];
        json_t *j, *log, *e;
        size_t i, seen = 0;

        start_all(NULL);
        j = sim_json("POST", "/v1/admin/projects", "{\"name\":\"client's own draft\"}", 200);
        client_draft = strdup(json_string_value(json_object_get(j, "id")));
        json_decref(j);
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        snprintf(line, sizeof(line), "ProjectID: %s", client_draft);
        hdr[0] = line;
        ids[0] = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"in-client-draft\"}]}", hdr);
        ids[1] = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"in-visierd-round\"}]}",
                        NULL);
        json_decref(wait_final(ids[0], "succeeded"));
        json_decref(wait_final(ids[1], "succeeded"));

        log = admin_requests();
        json_array_foreach(log, i, e) {
                const char *body = strempty(json_string_value(json_object_get(e, "body")));

                if (strstr(body, "in-client-draft")) {
                        ck_assert_str_eq(strempty(header(e, "ProjectID")), client_draft);
                        ck_assert(!strstr(body, "in-visierd-round"));
                        seen++;
                } else if (strstr(body, "in-visierd-round")) {
                        ck_assert(header(e, "ProjectID") && !streq(header(e, "ProjectID"), client_draft));
                        seen++;
                }
                snprintf(target, sizeof(target), "/v1/admin/projects/%s", client_draft);
                ck_assert_str_ne(strempty(json_string_value(json_object_get(e, "target"))), target);
        }
        ck_assert_int_eq(seen, 2);
        json_decref(log);
        /* The client's draft is still open, holding its create; production has only the other. */
        ck_assert(!published(client_draft));
        ck_assert_uint_eq(n_open_drafts(), 1);
        ck_assert_int_eq(count_named("in-visierd-round"), 1);
        ck_assert_int_eq(count_named("in-client-draft"), 0);
        free(client_draft);
}
END_TEST

/* project_tenants names the tenants whose writes go through drafts: a write of another (here
 * one without TargetTenantID, when only WFF_other is listed) is sent directly. */
START_TEST(test_project_tenants_limits_the_mode) {
        long long id, v0;
        json_t *log;

        start_all("project_tenants = WFF_other\n");
        v0 = sim_counter(&sim, "production_version");
        json_decref(sim_control_post(&sim, "/_sim/requests", "{}"));
        id = submit("POST", "/v1/admin/permissions", "{\"permissions\":[{\"displayName\":\"direct-one\"}]}", NULL);
        json_decref(wait_final(id, "succeeded"));
        log = admin_requests();
        ck_assert_uint_eq(json_array_size(log), 1);
        assert_request(json_array_get(log, 0), "POST", "/v1/admin/permissions", NULL, NULL);
        json_decref(log);
        ck_assert_int_eq(sim_counter(&sim, "production_version") - v0, 1);
        ck_assert_int_eq(rounds_published(), 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("rounds");
        TCase *tc = tcase_create("project mode");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_set_timeout(tc, 180);
        tcase_add_test(tc, test_round_publishes_once);
        tcase_add_test(tc, test_kill_while_filling);
        tcase_add_test(tc, test_kill_during_commit);
        tcase_add_test(tc, test_kill_after_commit_landed);
        tcase_add_test(tc, test_commit_not_landed_is_sent_again);
        tcase_add_test(tc, test_commit_outliving_settle_is_not_refused);
        tcase_add_test(tc, test_refused_commit_fails_each_job_with_visiers_answer);
        tcase_add_test(tc, test_rejected_call_in_a_round_fails_only_its_job);
        tcase_add_test(tc, test_client_project_writes_stay_out);
        tcase_add_test(tc, test_project_tenants_limits_the_mode);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
