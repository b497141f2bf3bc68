/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: the mixed write workload of tests/workload.h with no crash but every transient
 * fault visier-sim has, at once: 20 % of calls answered 5xx, 5 % dropped unanswered, 10 %
 * answered 429, the tokens revoked every few seconds, latency spikes, and writes applied then
 * dropped unanswered. Meanwhile readers go through visierd. Every accepted job must succeed,
 * exactly once, never two publishes at once; every read must be 200 with the right body or a
 * 5xx with Visier's Status body, never a 401, another 4xx or an empty answer.
 *
 * Sized by the environment (defaults are the short run of `make check`; see tests/README):
 *   STORM_JOBS (200), STORM_THREADS (6), STORM_SEC (12: the writes are spread over this long),
 *   STORM_READERS (2), STORM_SEED (random, printed), STORM_STORM_DRAIN_SEC (30: how long the storm
 *   goes on while the queue drains), STORM_DRAIN_SEC (90: the longest wait for the rest of the
 *   drain once the storm has passed; a job that met five failures in a row waits out a backoff of
 *   up to 16 s, and under a storm without end the drain has no bound).
 */
#include <check.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"
#include "workload.h"

#define STORM_FAULTS "{\"error_rate\":20,\"drop_rate\":5,\"throttle_rate\":10}"
#define STORM_PUBLISH_MIN_MS 50
#define STORM_PUBLISH_MAX_MS 150
#define STORM_LATENCY_SPIKE_MS 500
#define STORM_TICK_MS 50
#define STORM_READ_PAUSE_MS 40

static struct {
        uint64_t jobs, threads, sec, readers, seed, drain_sec, storm_drain_sec;
} cfg;

static Sim sim;
static Visierd vd;

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };

/* ---- the chaos: revocations, latency spikes, apply-then-drop, publish times ---- */

typedef struct Chaos {
        atomic_bool stop;
        atomic_bool draining; /* no more one-shot faults: with one job left, each would hit it */
        uint64_t rng;
        unsigned revocations, spikes, apply_then_drops, control_failures;
        pthread_t thread;
} Chaos;

static bool chaos_post(CURL *h, const char *path, const char *json) {
        const char *headers[] = { "Content-Type: application/json", NULL };
        char *url = sim_url(&sim, path);
        HttpResult r;
        bool ok;

        http_request_on(h, "POST", url, headers, json, 0, 5000, &r);
        ok = r.curl_error == 0 && r.status == 200;
        http_result_done(&r);
        free(url);
        return ok;
}

static usec_t chaos_after(Chaos *c, unsigned min_ms, unsigned max_ms) {
        return clock_now() + (min_ms + workload_rand(&c->rng) % (max_ms - min_ms + 1)) * USEC_PER_MSEC;
}

static void *chaos_main(void *arg) {
        Chaos *c = arg;
        CURL *h = curl_easy_init();
        usec_t revoke_at = chaos_after(c, 2000, 4000), spike_at = chaos_after(c, 1000, 3000),
               drop_at = chaos_after(c, 4000, 8000), publish_at = 0;
        bool spiking = false;

        while (!atomic_load(&c->stop)) {
                usec_t now = clock_now();
                char body[64];

                if (now >= revoke_at) {
                        c->revocations += chaos_post(h, "/_sim/revoke-tokens", "{}");
                        revoke_at = chaos_after(c, 2000, 4000);
                }
                if (now >= spike_at) {
                        spiking = !spiking;
                        snprintf(body, sizeof(body), "{\"latency_ms\":%u}", spiking ? STORM_LATENCY_SPIKE_MS : 0);
                        c->control_failures += !chaos_post(h, "/_sim/faults", body);
                        c->spikes += spiking;
                        spike_at = spiking ? chaos_after(c, 500, 1500) : chaos_after(c, 3000, 6000);
                }
                if (now >= drop_at && !atomic_load(&c->draining)) {
                        c->apply_then_drops += chaos_post(h, "/_sim/faults", "{\"next_apply_then_drop\":1}");
                        drop_at = chaos_after(c, 4000, 8000);
                }
                if (now >= publish_at) {
                        snprintf(body, sizeof(body), "{\"publish_ms\":%u}",
                                 STORM_PUBLISH_MIN_MS +
                                         (unsigned) (workload_rand(&c->rng) % (STORM_PUBLISH_MAX_MS - STORM_PUBLISH_MIN_MS + 1)));
                        c->control_failures += !chaos_post(h, "/_sim/faults", body);
                        publish_at = chaos_after(c, 500, 1500);
                }
                clock_sleep(STORM_TICK_MS * USEC_PER_MSEC);
        }
        curl_easy_cleanup(h);
        return NULL;
}

/* ---- readers through visierd ---- */

typedef struct Reads {
        json_t *capabilities;    /* the sim's own answer, fetched before the storm */
        json_t *seed_ids;        /* permissionId -> true of permissions the run never touches */
        atomic_bool stop;
        pthread_mutex_t lock;
        unsigned ok, ok_5xx, bad;
        char problems[2048];
} Reads;

typedef struct Reader {
        Reads *reads;
        pthread_t thread;
} Reader;

static bool is_status_body(const HttpResult *r) {
        json_t *j = json_loadb(r->body, r->len, 0, NULL);
        bool ok = json_is_object(j) && json_is_string(json_object_get(j, "code")) &&
                  json_is_string(json_object_get(j, "message"));

        json_decref(j);
        return ok;
}

static bool permissions_body_ok(Reads *reads, const HttpResult *r) {
        json_t *j = json_loadb(r->body, r->len, 0, NULL), *list = json_object_get(j, "permissions"), *p;
        json_t *seen = json_object();
        const char *id;
        bool ok = json_is_array(list);
        size_t i;

        json_array_foreach(list, i, p) {
                const char *pid = json_string_value(json_object_get(p, "permissionId"));
                if (!pid || !json_is_string(json_object_get(p, "displayName")))
                        ok = false;
                else
                        json_object_set_new(seen, pid, json_true());
        }
        json_object_foreach(reads->seed_ids, id, p)
                ok &= json_object_get(seen, id) != NULL;
        json_decref(seen);
        json_decref(j);
        return ok;
}

static void *reader_main(void *arg) {
        Reader *rd = arg;
        Reads *reads = rd->reads;
        CURL *h = curl_easy_init();
        char *caps_url = visierd_url(&vd, "/v1/admin/capabilities"), *perms_url = visierd_url(&vd, "/v1/admin/permissions");

        for (unsigned n = 0; !atomic_load(&reads->stop); n++) {
                bool caps = n % 2 == 0, ok5 = false, ok = false;
                HttpResult r;

                http_request_on(h, "GET", caps ? caps_url : perms_url, NULL, NULL, 0, 60000, &r);
                if (r.curl_error == 0 && r.status == 200) {
                        if (caps) {
                                json_t *j = json_loadb(r.body, r.len, 0, NULL);
                                ok = j && json_equal(j, reads->capabilities);
                                json_decref(j);
                        } else
                                ok = permissions_body_ok(reads, &r);
                } else if (r.curl_error == 0 && r.status >= 500 && r.status <= 599)
                        ok5 = is_status_body(&r);
                pthread_mutex_lock(&reads->lock);
                if (ok)
                        reads->ok++;
                else if (ok5)
                        reads->ok_5xx++;
                else {
                        size_t used = strlen(reads->problems);
                        reads->bad++;
                        if (used + 400 < sizeof(reads->problems))
                                snprintf(reads->problems + used, sizeof(reads->problems) - used,
                                         "GET %s: curl error %d, status %ld, body: %.200s\n",
                                         caps ? "/v1/admin/capabilities" : "/v1/admin/permissions", r.curl_error,
                                         r.status, r.len ? r.body : "(empty)");
                }
                pthread_mutex_unlock(&reads->lock);
                http_result_done(&r);
                clock_sleep(STORM_READ_PAUSE_MS * USEC_PER_MSEC);
        }
        free(caps_url);
        free(perms_url);
        curl_easy_cleanup(h);
        return NULL;
}

/* The sim's own answer to GET path, with a token of our own (before any fault is set). */
static json_t *sim_direct_get(const char *token, const char *path) {
        char *url = sim_url(&sim, path), apikey[128], cookie[128];
        const char *headers[] = { apikey, cookie, NULL };
        HttpResult r;
        json_t *j;

        snprintf(apikey, sizeof(apikey), "apikey: %s", sim.apikey);
        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        http_request("GET", url, headers, NULL, 10000, &r);
        ck_assert_msg(r.status == 200, "GET %s at the sim answered %ld", path, r.status);
        j = json_loadb(r.body, r.len, 0, NULL);
        ck_assert_ptr_nonnull(j);
        http_result_done(&r);
        free(url);
        return j;
}

START_TEST(test_storm) {
        usec_t start = clock_now();
        Chaos chaos = { .rng = cfg.seed ^ UINT64_C(0xc4a05) };
        Reads reads = { .lock = PTHREAD_MUTEX_INITIALIZER };
        Reader *readers = calloc(cfg.readers ? cfg.readers : 1, sizeof(*readers));
        char integrity[512], *token;
        long long write_calls, overlaps, drained, db_pending, lost;
        bool drained_in_storm;
        WorkloadReport rep;
        json_t *dump, *counters, *perms, *p;
        Workload *w;
        int exit_status;
        size_t i;

        printf("storm: seed %llu (replay: STORM_SEED=%llu STORM_JOBS=%llu STORM_THREADS=%llu STORM_SEC=%llu)\n",
               (unsigned long long) cfg.seed, (unsigned long long) cfg.seed, (unsigned long long) cfg.jobs,
               (unsigned long long) cfg.threads, (unsigned long long) cfg.sec);
        fflush(stdout);

        sim_start(&sim, unlimited);
        token = sim_login(&sim);
        reads.capabilities = sim_direct_get(token, "/v1/admin/capabilities");
        perms = sim_direct_get(token, "/v1/admin/permissions");
        reads.seed_ids = json_object();
        json_array_foreach(json_object_get(perms, "permissions"), i, p)
                json_object_set_new(reads.seed_ids, json_string_value(json_object_get(p, "permissionId")), json_true());
        ck_assert_int_gt(json_object_size(reads.seed_ids), 0);
        json_decref(perms);
        free(token);

        /* request_timeout: a latency spike, a Retry-After and publishing fit in it several times. */
        visierd_start(&vd, &sim, "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 10",
                      "[jobs]\nbatch_delay_ms = 50");
        visierd_wait_ready(&vd);
        json_decref(sim_control_post(&sim, "/_sim/faults", STORM_FAULTS));

        ck_assert_int_eq(pthread_create(&chaos.thread, NULL, chaos_main, &chaos), 0);
        for (uint64_t k = 0; k < cfg.readers; k++) {
                readers[k].reads = &reads;
                ck_assert_int_eq(pthread_create(&readers[k].thread, NULL, reader_main, &readers[k]), 0);
        }
        w = workload_start(&(WorkloadSettings) {
                                   .threads = (unsigned) cfg.threads,
                                   .jobs = (unsigned) cfg.jobs,
                                   .think_ms = (unsigned) (cfg.sec * 1000 * cfg.threads / (cfg.jobs ? cfg.jobs : 1)),
                                   .seed = cfg.seed,
                                   .retry_5xx = false, /* visierd itself has no reason to refuse here */
                                   .give_up_sec = 60,
                           },
                           vd.port);
        workload_join(w);
        /* The storm goes on while the queue drains, but for the one-shot apply-then-drop: armed
         * every few seconds, it would hit the retry of the last job left every time. */
        atomic_store(&chaos.draining, true);
        drained = workload_wait_drained(vd.port, (unsigned) cfg.storm_drain_sec);
        drained_in_storm = drained == 0;
        atomic_store(&chaos.stop, true);
        pthread_join(chaos.thread, NULL);
        if (!drained_in_storm) {
                /* The storm passes; what is left must drain without a restart. */
                json_decref(sim_control_post(&sim, "/_sim/faults",
                                             "{\"error_rate\":0,\"drop_rate\":0,\"throttle_rate\":0,\"latency_ms\":0,"
                                             "\"next_apply_then_drop\":0}"));
                drained = workload_wait_drained(vd.port, (unsigned) cfg.drain_sec);
        }
        atomic_store(&reads.stop, true);
        for (uint64_t k = 0; k < cfg.readers; k++)
                pthread_join(readers[k].thread, NULL);
        json_decref(sim_control_post(&sim, "/_sim/faults",
                                     "{\"error_rate\":0,\"drop_rate\":0,\"throttle_rate\":0,\"latency_ms\":0,"
                                     "\"next_apply_then_drop\":0}"));

        counters = sim_control_get(&sim, "/_sim/counters");
        write_calls = json_integer_value(json_object_get(counters, "write_calls"));
        overlaps = json_integer_value(json_object_get(counters, "publish_overlaps"));
        dump = sim_control_get(&sim, "/_sim/permissions");
        workload_verify(w, vd.port, dump, &rep);
        exit_status = visierd_stop(&vd);
        workload_store_check(&vd, integrity, sizeof(integrity), &db_pending);
        lost = rep.lost_creates + rep.lost_deletes + rep.lost_updates + rep.lost_users;

        printf("storm: jobs %u (create %u, update %u, assign %u, remove %u, revert %u, delete %u), write calls %lld, "
               "overlaps %lld, duplicates %u, lost %lld (creates %u, deletes %u, updates %u, users %u), unexpected %u, "
               "not succeeded %u, drained %s, pending after drain %lld, refused %u, unanswered %u; injected: 5xx %lld, drops %lld, "
               "429 %lld, apply-then-drop %lld, revocations %u, latency spikes %u, bad tokens %lld, logins %lld; "
               "reads ok %u, 5xx with Status %u, bad %u; integrity %s, pending in db %lld, exit %d, elapsed %.1f s, "
               "seed %llu\n",
               rep.accepted, rep.accepted_by_op[WORKLOAD_CREATE], rep.accepted_by_op[WORKLOAD_UPDATE],
               rep.accepted_by_op[WORKLOAD_ASSIGN], rep.accepted_by_op[WORKLOAD_REMOVE],
               rep.accepted_by_op[WORKLOAD_REVERT], rep.accepted_by_op[WORKLOAD_DELETE], write_calls, overlaps,
               rep.duplicates, lost, rep.lost_creates, rep.lost_deletes, rep.lost_updates, rep.lost_users, rep.unexpected,
               rep.not_succeeded, drained_in_storm ? "during the storm" : "after it", drained, rep.refused, rep.unanswered,
               json_integer_value(json_object_get(counters, "errors_injected")),
               json_integer_value(json_object_get(counters, "drops_injected")),
               json_integer_value(json_object_get(counters, "throttles_injected")),
               json_integer_value(json_object_get(counters, "apply_then_drops_injected")), chaos.revocations,
               chaos.spikes, json_integer_value(json_object_get(counters, "bad_token")),
               json_integer_value(json_object_get(counters, "logins")), reads.ok, reads.ok_5xx, reads.bad, integrity,
               db_pending, exit_status, (double) (clock_now() - start) / USEC_PER_SEC, (unsigned long long) cfg.seed);
        if (rep.problems[0])
                printf("storm: first problems:\n%s", rep.problems);
        if (reads.problems[0])
                printf("storm: first bad reads:\n%s", reads.problems);
        fflush(stdout);
        json_decref(dump);
        json_decref(counters);
        json_decref(reads.capabilities);
        json_decref(reads.seed_ids);
        workload_free(w);
        free(readers);

        ck_assert_msg(rep.accepted > 0 && rep.accepted >= cfg.jobs * 9 / 10, "only %u of %llu writes were accepted",
                      rep.accepted, (unsigned long long) cfg.jobs);
        ck_assert_msg(chaos.revocations > 0 && chaos.control_failures == 0,
                      "the storm did not blow (%u revocations, %u failed control calls)", chaos.revocations,
                      chaos.control_failures);
        ck_assert_msg(overlaps == 0, "%lld publishes overlapped (never two at once)", overlaps);
        ck_assert_msg(rep.duplicates == 0, "%u duplicate permissions", rep.duplicates);
        ck_assert_msg(lost == 0, "%lld accepted changes lost (creates %u, deletes %u, updates %u, users %u)", lost,
                      rep.lost_creates, rep.lost_deletes, rep.lost_updates, rep.lost_users);
        ck_assert_msg(rep.unexpected == 0, "%u permissions exist that no accepted create made", rep.unexpected);
        ck_assert_msg(rep.not_succeeded == 0, "%u accepted jobs did not succeed", rep.not_succeeded);
        ck_assert_msg(drained == 0, "%lld jobs still queued or running after %llu s", drained,
                      (unsigned long long) cfg.drain_sec);
        ck_assert_msg(rep.refused == 0 && rep.unanswered == 0, "%u writes refused, %u unanswered", rep.refused,
                      rep.unanswered);
        ck_assert_msg(cfg.readers == 0 || reads.ok > 0, "no read succeeded");
        ck_assert_msg(reads.bad == 0, "%u reads were neither 200 with the right body nor a 5xx with a Status body",
                      reads.bad);
        ck_assert_msg(exit_status == 0, "visierd exited %d on SIGTERM", exit_status);
        ck_assert_msg(strcmp(integrity, "ok") == 0, "the job store's check: %s", integrity);
        ck_assert_msg(db_pending == 0, "%lld jobs queued or running in the database", db_pending);
}
END_TEST

static int read_settings(void) {
        if (harness_env_u64("STORM_JOBS", 200, &cfg.jobs) < 0 || harness_env_u64("STORM_THREADS", 6, &cfg.threads) < 0 ||
            harness_env_u64("STORM_SEC", 12, &cfg.sec) < 0 || harness_env_u64("STORM_READERS", 2, &cfg.readers) < 0 ||
            harness_env_u64("STORM_SEED", workload_random_seed(), &cfg.seed) < 0 ||
            harness_env_u64("STORM_DRAIN_SEC", 90, &cfg.drain_sec) < 0 ||
            harness_env_u64("STORM_STORM_DRAIN_SEC", 30, &cfg.storm_drain_sec) < 0)
                return -1;
        if (cfg.threads == 0 || cfg.threads > 64 || cfg.readers > 16 || cfg.jobs > 1000000 || cfg.sec > 86400)
                return -1;
        return 0;
}

int main(void) {
        Suite *s = suite_create("storm");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        if (read_settings() < 0) {
                fprintf(stderr, "bad STORM_* setting (whole numbers; 1 to 64 threads, at most 16 readers)\n");
                return 99; /* a hard error to Automake */
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        /* Bounded: start-up, the writes' spread, their slowest answers and the drain. */
        tcase_set_timeout(tc, (double) (60 + cfg.sec * 2 + cfg.storm_drain_sec + cfg.drain_sec));
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_storm);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
