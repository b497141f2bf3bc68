/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: fleet mode (docs/fleet.md). Three visierd nodes share one job store on a real
 * PostgreSQL (tests/pg-harness.h) and serve one visier-sim, which enforces Visier's limit of
 * 100 calls a minute for all its clients together and counts publishes that overlap, whoever
 * sent them. A mixed permission workload (tests/workload.h) comes from client threads spread
 * over the three nodes; each job is followed and verified through a node other than the one
 * that took it. Afterwards, against the sim's own state: never two publishes at once, no call
 * refused for the rate limit, every 202'd change applied exactly once, every accepted job
 * succeeded.
 *
 * Sized by the environment (defaults are the short run of `make check`; tests/README):
 *   FLEET_JOBS (600), FLEET_THREADS (50), FLEET_SEED (random, printed), FLEET_DRAIN_SEC (120 + jobs / 10).
 * The acceptance run of issue 14 is FLEET_JOBS=10000 (docs/fleet.md, "Tests").
 *
 * Exits 77 (SKIP), saying why, where PostgreSQL cannot run.
 */
#include <check.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "harness.h"
#include "pg-harness.h"
#include "workload.h"

#define FLEET_NODES 3

static struct {
        uint64_t jobs, threads, seed, drain_sec;
} cfg;

static PgServer pg;
static char store_url[384];
static Sim sim;
static Visierd nodes[FLEET_NODES];

static void teardown(void) {
        for (unsigned i = 1; i < FLEET_NODES; i++) {
                Sim none = {};
                harness_teardown(&none, &nodes[i]);
        }
        harness_teardown(&sim, &nodes[0]);
}

/* A fresh database on the test's server for one fleet; its [store] url into store_url. */
static void fleet_database(const char *name) {
        char sql[96];
        PGconn *c = pg_server_connect(&pg);
        PGresult *res;

        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        res = PQexec(c, sql);
        ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
        PQclear(res);
        PQfinish(c);
        snprintf(store_url, sizeof(store_url), "host='%s' port=5432 user=visier dbname=%s", pg.dir, name);
}

/* Node i of the fleet, started on the shared store. */
static void node_start(unsigned i, const char *extra_tail) {
        char tail[512];

        snprintf(tail, sizeof(tail), "[jobs]\nbatch_delay_ms = 50\n[fleet]\nnode = node%u\n%s", i + 1,
                 extra_tail ? extra_tail : "");
        visierd_write_config_url(&nodes[i], &sim, store_url, NULL, tail);
        visierd_restart(&nodes[i]);
}

START_TEST(test_fleet_workload) {
        usec_t start = clock_now();
        unsigned ports[FLEET_NODES];
        WorkloadReport rep = {};
        long long overlaps, rate_limited, write_calls, drained, lost;
        json_t *counters, *dump;
        Workload *w;

        printf("fleet: seed %llu (replay: FLEET_SEED=%llu FLEET_JOBS=%llu FLEET_THREADS=%llu)\n",
               (unsigned long long) cfg.seed, (unsigned long long) cfg.seed, (unsigned long long) cfg.jobs,
               (unsigned long long) cfg.threads);
        fflush(stdout);
        fleet_database("fleet_workload");
        sim_start(&sim, NULL); /* Visier's limits: 100 calls a minute, 6,000 an hour */
        for (unsigned i = 0; i < FLEET_NODES; i++) {
                node_start(i, NULL);
                ports[i] = nodes[i].port;
        }
        w = workload_start_nodes(&(WorkloadSettings) {
                                         .threads = (unsigned) cfg.threads,
                                         .jobs = (unsigned) cfg.jobs,
                                         .think_ms = 20,
                                         .seed = cfg.seed,
                                         .retry_5xx = true,
                                         .give_up_sec = 120,
                                 },
                                 ports, FLEET_NODES);
        workload_join(w);
        drained = workload_wait_drained(nodes[1].port, (unsigned) cfg.drain_sec);

        counters = sim_control_get(&sim, "/_sim/counters");
        write_calls = json_integer_value(json_object_get(counters, "write_calls"));
        overlaps = json_integer_value(json_object_get(counters, "publish_overlaps"));
        rate_limited = json_integer_value(json_object_get(counters, "rate_limited"));
        dump = sim_control_get(&sim, "/_sim/permissions");
        /* Through the third node: not the one most clients started with. */
        workload_verify(w, nodes[2].port, dump, &rep);
        lost = rep.lost_creates + rep.lost_deletes + rep.lost_updates + rep.lost_users;
        printf("fleet: nodes %u, jobs %u (create %u, update %u, assign %u, remove %u, revert %u, delete %u), "
               "write calls %lld (%.1f jobs a call), overlaps %lld, rate limited %lld, duplicates %u, lost %lld, "
               "unexpected %u, not succeeded %u, pending after drain %lld, refused %u, unanswered %u, resent %u, "
               "elapsed %.1f s, seed %llu\n",
               FLEET_NODES, rep.accepted, rep.accepted_by_op[WORKLOAD_CREATE], rep.accepted_by_op[WORKLOAD_UPDATE],
               rep.accepted_by_op[WORKLOAD_ASSIGN], rep.accepted_by_op[WORKLOAD_REMOVE],
               rep.accepted_by_op[WORKLOAD_REVERT], rep.accepted_by_op[WORKLOAD_DELETE], write_calls,
               write_calls ? (double) rep.accepted / (double) write_calls : 0.0, overlaps, rate_limited,
               rep.duplicates, lost, rep.unexpected, rep.not_succeeded, drained, rep.refused, rep.unanswered,
               rep.resent, (double) (clock_now() - start) / USEC_PER_SEC, (unsigned long long) cfg.seed);
        if (rep.problems[0])
                printf("fleet: first problems:\n%s", rep.problems);
        for (unsigned i = 0; i < FLEET_NODES; i++) {
                long st;
                json_t *status = http_get_json(visierd_url(&nodes[i], "/status"), &st);
                char *text = json_dumps(json_object_get(status, "jobs"), JSON_COMPACT);

                printf("fleet: node%u's jobs: %s\n", i + 1, text ? text : "(none)");
                free(text);
                json_decref(status);
        }
        fflush(stdout);
        json_decref(dump);
        json_decref(counters);
        workload_free(w);

        ck_assert_msg(rep.accepted >= cfg.jobs * 9 / 10, "only %u of %llu writes were accepted", rep.accepted,
                      (unsigned long long) cfg.jobs);
        ck_assert_msg(overlaps == 0, "%lld publishes overlapped (never two at once)", overlaps);
        ck_assert_msg(rate_limited == 0, "%lld calls were refused for Visier's rate limit", rate_limited);
        ck_assert_msg(rep.duplicates == 0, "%u duplicate permissions", rep.duplicates);
        ck_assert_msg(lost == 0, "%lld accepted changes lost", lost);
        ck_assert_msg(rep.unexpected == 0, "%u permissions exist that no accepted create made", rep.unexpected);
        ck_assert_msg(rep.not_succeeded == 0, "%u accepted jobs did not succeed", rep.not_succeeded);
        ck_assert_msg(drained == 0, "%lld jobs still queued or running after %llu s", drained,
                      (unsigned long long) cfg.drain_sec);
        ck_assert_msg(rep.refused == 0 && rep.unanswered == 0, "%u writes refused, %u unanswered", rep.refused,
                      rep.unanswered);
        for (unsigned i = 0; i < FLEET_NODES; i++)
                ck_assert_msg(visierd_stop(&nodes[i]) == 0, "node%u did not exit 0 on SIGTERM", i + 1);
}
END_TEST

static int read_settings(void) {
        if (harness_env_u64("FLEET_JOBS", 600, &cfg.jobs) < 0 || harness_env_u64("FLEET_THREADS", 50, &cfg.threads) < 0 ||
            harness_env_u64("FLEET_SEED", workload_random_seed(), &cfg.seed) < 0 ||
            harness_env_u64("FLEET_DRAIN_SEC", 120 + cfg.jobs / 10, &cfg.drain_sec) < 0)
                return -1;
        if (cfg.threads == 0 || cfg.threads > 256 || cfg.jobs > 1000000)
                return -1;
        return 0;
}

int main(void) {
        char reason[PG_REASON_MAX];
        Suite *s = suite_create("fleet");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        if (read_settings() < 0) {
                fprintf(stderr, "bad FLEET_* setting (whole numbers; 1 to 256 threads)\n");
                return 99;
        }
        if (pg_server_init(&pg, reason, sizeof(reason)) < 0) {
                printf("SKIP: PostgreSQL cannot run here: %s\n", reason);
                return 77;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        /* Bounded: start-up, the writes at Visier's pace, and the drain. */
        tcase_set_timeout(tc, (double) (120 + cfg.jobs / 5 + cfg.drain_sec));
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_fleet_workload);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        pg_server_destroy(&pg);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
