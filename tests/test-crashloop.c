/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: visierd SIGKILLed again and again under a mixed write workload (tests/workload.h),
 * most kills while a write call is open at visier-sim, each followed by a restart on the same
 * database. Afterwards, against visier-sim's own state: never two publishes at once, every
 * 202'd change applied exactly once, every accepted job succeeded, nothing left queued or
 * running, and a sound database.
 *
 * Sized by the environment (defaults are the short run of `make check`; see tests/README):
 *   CRASHLOOP_JOBS (400), CRASHLOOP_KILLS (8), CRASHLOOP_THREADS (6), CRASHLOOP_SEED (random,
 *   printed), CRASHLOOP_DRAIN_SEC (60 + jobs / 5), CRASHLOOP_PUBLISH_SETTLE (1 s: the sim publishes
 *   in at most 300 ms).
 */
#include <check.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "harness.h"
#include "workload.h"

/* Each kill aims at an open write call this often, in percent. */
#define CRASHLOOP_AIM_PCT 80
/* Longest wait for a write call to open before killing anyway. */
#define CRASHLOOP_AIM_WAIT_SEC 5
/* Publishing takes this long at the sim, chosen anew before every kill. */
#define CRASHLOOP_PUBLISH_MIN_MS 50
#define CRASHLOOP_PUBLISH_MAX_MS 300
/* Run this long between two kills, at random. */
#define CRASHLOOP_GAP_MIN_MS 200
#define CRASHLOOP_GAP_MAX_MS 1200

static struct {
        uint64_t jobs, kills, threads, seed, drain_sec, settle;
} cfg;

static Sim sim;
static Visierd vd;

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };

/* One counter from the sim over a kept connection (-1 when it does not answer). */
static long long counter_on(CURL *h, const char *name) {
        char *url = sim_url(&sim, "/_sim/counters");
        long long n = -1;
        HttpResult r;

        http_request_on(h, "GET", url, NULL, NULL, 0, 5000, &r);
        if (r.curl_error == 0 && r.status == 200) {
                json_t *j = json_loadb(r.body, r.len, 0, NULL), *v = json_object_get(j, name);
                if (json_is_integer(v))
                        n = json_integer_value(v);
                json_decref(j);
        }
        http_result_done(&r);
        free(url);
        return n;
}

static void set_publish_ms(unsigned ms) {
        char body[64];

        snprintf(body, sizeof(body), "{\"publish_ms\":%u}", ms);
        json_decref(sim_control_post(&sim, "/_sim/faults", body));
}

START_TEST(test_crashloop) {
        usec_t start = clock_now();
        uint64_t rng = cfg.seed;
        unsigned kills = 0, kills_open = 0;
        char visier_conf[256], jobs_conf[256], integrity[512];
        long long write_calls, overlaps, max_in_flight, drained, db_pending, lost;
        WorkloadReport rep;
        json_t *dump, *counters;
        Workload *w;
        CURL *poll = curl_easy_init();
        int exit_status;

        printf("crashloop: seed %llu (replay: CRASHLOOP_SEED=%llu CRASHLOOP_JOBS=%llu CRASHLOOP_KILLS=%llu "
               "CRASHLOOP_THREADS=%llu)\n",
               (unsigned long long) cfg.seed, (unsigned long long) cfg.seed, (unsigned long long) cfg.jobs,
               (unsigned long long) cfg.kills, (unsigned long long) cfg.threads);
        fflush(stdout);
        ck_assert_ptr_nonnull(poll);

        sim_start(&sim, unlimited);
        set_publish_ms(CRASHLOOP_PUBLISH_MIN_MS + (unsigned) (workload_rand(&rng) % (CRASHLOOP_PUBLISH_MAX_MS - CRASHLOOP_PUBLISH_MIN_MS + 1)));
        /* A write call ends within 2 s (publishing takes at most 300 ms), so a fixed visierd
         * that waits out a dead process's call deadline restarts quickly. */
        snprintf(visier_conf, sizeof(visier_conf),
                 "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 2");
        /* On PostgreSQL the restarted visierd keeps its node's name, so it takes the lane back at
         * once, under a new term whose grant waits out the dead call (docs/fleet.md), as a fixed
         * single visierd waits it out from its lane record. Under the default name, HOST:PID,
         * every restart would first wait out the dead node's lease (15 s), longer than the dead
         * call, and most kills would find no write open. */
        snprintf(jobs_conf, sizeof(jobs_conf), "[jobs]\nbatch_delay_ms = 50\npublish_settle = %llu%s",
                 (unsigned long long) cfg.settle, harness_store_is_pg() ? "\n[fleet]\nnode = crashloop" : "");
        visierd_start(&vd, &sim, visier_conf, jobs_conf);

        w = workload_start(&(WorkloadSettings) {
                                   .threads = (unsigned) cfg.threads,
                                   .jobs = (unsigned) cfg.jobs,
                                   /* spread the writes over the kills: about a second each */
                                   .think_ms = (unsigned) (cfg.kills * 900 * cfg.threads / (cfg.jobs ? cfg.jobs : 1) + 5),
                                   .seed = cfg.seed,
                                   .retry_5xx = true,
                                   .give_up_sec = 60,
                           },
                           vd.port);

        for (uint64_t k = 0; k < cfg.kills; k++) {
                unsigned gap = CRASHLOOP_GAP_MIN_MS +
                               (unsigned) (workload_rand(&rng) % (CRASHLOOP_GAP_MAX_MS - CRASHLOOP_GAP_MIN_MS + 1));
                unsigned publish = CRASHLOOP_PUBLISH_MIN_MS +
                                   (unsigned) (workload_rand(&rng) % (CRASHLOOP_PUBLISH_MAX_MS - CRASHLOOP_PUBLISH_MIN_MS + 1));
                bool aim = workload_rand(&rng) % 100 < CRASHLOOP_AIM_PCT;
                unsigned extra = (unsigned) (workload_rand(&rng) % (publish / 4 + 1));
                long long open;

                clock_sleep((usec_t) gap * USEC_PER_MSEC); /* the workload runs meanwhile */
                set_publish_ms(publish);
                if (aim) {
                        usec_t until = clock_now() + CRASHLOOP_AIM_WAIT_SEC * USEC_PER_SEC;

                        while (counter_on(poll, "writes_in_flight") < 1 && clock_now() < until)
                                clock_sleep(2 * USEC_PER_MSEC); /* probe interval */
                        /* somewhere in the first quarter of the call's publishing */
                        clock_sleep((usec_t) extra * USEC_PER_MSEC);
                }
                workload_set_port(w, 0);
                visierd_kill(&vd);
                open = counter_on(poll, "writes_in_flight");
                kills++;
                kills_open += open >= 1;
                visierd_restart(&vd);
                workload_set_port(w, vd.port);
        }
        workload_join(w);
        drained = workload_wait_drained(vd.port, (unsigned) cfg.drain_sec);

        counters = sim_control_get(&sim, "/_sim/counters");
        write_calls = json_integer_value(json_object_get(counters, "write_calls"));
        overlaps = json_integer_value(json_object_get(counters, "publish_overlaps"));
        max_in_flight = json_integer_value(json_object_get(counters, "writes_in_flight_max"));
        dump = sim_control_get(&sim, "/_sim/permissions");
        workload_verify(w, vd.port, dump, &rep);
        exit_status = visierd_stop(&vd);
        workload_store_check(&vd, integrity, sizeof(integrity), &db_pending);
        lost = rep.lost_creates + rep.lost_deletes + rep.lost_updates + rep.lost_users;

        printf("crashloop: jobs %u (create %u, update %u, assign %u, remove %u, revert %u, delete %u), "
               "kills %u, kills with a write open %u, write calls %lld, overlaps %lld (most in flight %lld), "
               "duplicates %u, lost %lld (creates %u, deletes %u, updates %u, users %u), unexpected %u, "
               "not succeeded %u, pending after drain %lld, refused %u, unanswered %u, resent %u, "
               "integrity %s, pending in db %lld, exit %d, elapsed %.1f s, seed %llu\n",
               rep.accepted, rep.accepted_by_op[WORKLOAD_CREATE], rep.accepted_by_op[WORKLOAD_UPDATE],
               rep.accepted_by_op[WORKLOAD_ASSIGN], rep.accepted_by_op[WORKLOAD_REMOVE],
               rep.accepted_by_op[WORKLOAD_REVERT], rep.accepted_by_op[WORKLOAD_DELETE], kills, kills_open, write_calls,
               overlaps, max_in_flight, rep.duplicates, lost, rep.lost_creates, rep.lost_deletes, rep.lost_updates,
               rep.lost_users, rep.unexpected, rep.not_succeeded, drained, rep.refused, rep.unanswered, rep.resent,
               integrity, db_pending, exit_status, (double) (clock_now() - start) / USEC_PER_SEC,
               (unsigned long long) cfg.seed);
        if (rep.problems[0])
                printf("crashloop: first problems:\n%s", rep.problems);
        fflush(stdout);
        json_decref(dump);
        json_decref(counters);
        workload_free(w);
        curl_easy_cleanup(poll);

        ck_assert_msg(rep.accepted > 0 && rep.accepted >= cfg.jobs * 9 / 10, "only %u of %llu writes were accepted",
                      rep.accepted, (unsigned long long) cfg.jobs);
        ck_assert_msg(kills == cfg.kills, "%u kills of %llu", kills, (unsigned long long) cfg.kills);
        ck_assert_msg(cfg.kills == 0 || kills_open > 0, "no kill hit an open write call (the test did not test)");
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
        ck_assert_msg(exit_status == 0, "visierd exited %d on SIGTERM", exit_status);
        ck_assert_msg(strcmp(integrity, "ok") == 0, "the job store's check: %s", integrity);
        ck_assert_msg(db_pending == 0, "%lld jobs queued or running in the database", db_pending);
}
END_TEST

static int read_settings(void) {
        if (harness_env_u64("CRASHLOOP_JOBS", 400, &cfg.jobs) < 0 || harness_env_u64("CRASHLOOP_KILLS", 8, &cfg.kills) < 0 ||
            harness_env_u64("CRASHLOOP_THREADS", 6, &cfg.threads) < 0 ||
            harness_env_u64("CRASHLOOP_SEED", workload_random_seed(), &cfg.seed) < 0 ||
            /* The writes come faster than one publisher sends them (it coalesces only jobs
             * next to each other, some 5 to 8 a second here): the drain may take a while. */
            harness_env_u64("CRASHLOOP_DRAIN_SEC", 60 + cfg.jobs / 5, &cfg.drain_sec) < 0 ||
            harness_env_u64("CRASHLOOP_PUBLISH_SETTLE", 1, &cfg.settle) < 0)
                return -1;
        if (cfg.threads == 0 || cfg.threads > 64 || cfg.jobs > 1000000 || cfg.kills > 100000)
                return -1;
        return 0;
}

int main(void) {
        Suite *s = suite_create("crashloop");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        if (read_settings() < 0) {
                fprintf(stderr, "bad CRASHLOOP_* setting (whole numbers; 1 to 64 threads)\n");
                return 99; /* a hard error to Automake */
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        /* Bounded: start-up, about a second per kill and 20 ms per job, and the drain. */
        tcase_set_timeout(tc, (double) (60 + cfg.kills * 4 + cfg.jobs / 50 + cfg.drain_sec));
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_crashloop);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
