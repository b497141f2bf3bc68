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
 *   FLEET_JOBS (600), FLEET_THREADS (50), FLEET_SEED (random, printed), FLEET_DRAIN_SEC (120 + jobs / 10),
 *   FLEET_FAILOVER_JOBS (600: the failover test's workload, some 50 s of it), FLEET_WORKLOAD_NODES (3:
 *   the workload test's nodes; 1 gives the single node's figures to compare, the same seed).
 * CK_RUN_CASE=workload runs the workload test alone, CK_RUN_CASE=failover the others.
 * The acceptance run of issue 14 is FLEET_JOBS=10000 (docs/fleet.md, "Tests").
 *
 * Exits 77 (SKIP), saying why, where PostgreSQL cannot run.
 */
#include <check.h>
#include <pthread.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"
#include "pg-harness.h"
#include "workload.h"

#define FLEET_NODES 3

static struct {
        uint64_t jobs, threads, seed, drain_sec, failover_jobs, nodes;
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
static void fleet_database(const PgServer *srv, const char *name) {
        char sql[96];
        PGconn *c = pg_server_connect(srv);
        PGresult *res;

        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        res = PQexec(c, sql);
        ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
        PQclear(res);
        PQfinish(c);
        snprintf(store_url, sizeof(store_url), "host='%s' port=5432 user=visier dbname=%s", srv->dir, name);
}

/* Node i of the fleet, started on the shared store. */
static void node_start(unsigned i, const char *extra_tail) {
        char tail[512];

        snprintf(tail, sizeof(tail), "[jobs]\nbatch_delay_ms = 50\n[fleet]\nnode = node%u\n%s", i + 1,
                 extra_tail ? extra_tail : "");
        visierd_write_config_url(&nodes[i], &sim, store_url, NULL, tail);
        visierd_restart(&nodes[i]);
}

/* How many rows of the tables of the fleet's database hold the API key or the API user's
 * password (the first such row's table in where); the rows looked at in *ret_rows. */
static size_t rows_with_secret(PGconn *c, size_t *ret_rows, char *where, size_t wherelen) {
        PGresult *tables, *res;
        size_t found = 0;

        *ret_rows = 0;
        tables = PQexec(c, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
        ck_assert_int_eq(PQresultStatus(tables), PGRES_TUPLES_OK);
        ck_assert_int_gt(PQntuples(tables), 10);
        for (int t = 0; t < PQntuples(tables); t++) {
                char sql[160];

                snprintf(sql, sizeof(sql), "SELECT t::text FROM %s t", PQgetvalue(tables, t, 0));
                res = PQexec(c, sql);
                ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
                for (int i = 0; i < PQntuples(res); i++, (*ret_rows)++) {
                        const char *row = PQgetvalue(res, i, 0);

                        if (!strstr(row, sim.apikey) && !strstr(row, sim.password))
                                continue;
                        if (found++ == 0)
                                snprintf(where, wherelen, "%s", PQgetvalue(tables, t, 0));
                }
                PQclear(res);
        }
        PQclear(tables);
        return found;
}

static void exec_ok(PGconn *c, const char *sql) {
        PGresult *res = PQexec(c, sql);

        ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
        PQclear(res);
}

/* Secrets stay on the nodes: no row of any table of the fleet's database holds the API key or
 * the API user's password. The scan is shown to find both first, planted in a table of its own. */
static void assert_no_secret_in_database(void) {
        PGconn *c = PQconnectdb(store_url);
        char where[64] = "", sql[256];
        size_t rows, found;

        ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
        exec_ok(c, "CREATE TABLE secret_scan_probe (v text)");
        snprintf(sql, sizeof(sql), "INSERT INTO secret_scan_probe VALUES ('key %s'), ('password %s')", sim.apikey,
                 sim.password);
        exec_ok(c, sql);
        found = rows_with_secret(c, &rows, where, sizeof(where));
        exec_ok(c, "DROP TABLE secret_scan_probe");
        ck_assert_msg(found >= 2, "the scan found %zu of the 2 planted secrets", found);

        found = rows_with_secret(c, &rows, where, sizeof(where));
        ck_assert_msg(found == 0, "%zu rows hold the API key or the password, the first in %s", found, where);
        printf("fleet: %zu rows of the fleet's tables hold neither the API key nor the password (the scan found both "
               "when planted)\n", rows);
        PQfinish(c);
}

START_TEST(test_fleet_workload) {
        usec_t start = clock_now();
        const unsigned n = (unsigned) cfg.nodes;
        unsigned ports[FLEET_NODES];
        WorkloadReport rep = {};
        long long overlaps, rate_limited, write_calls, drained, lost;
        json_t *counters, *dump;
        Workload *w;

        printf("fleet: seed %llu (replay: FLEET_SEED=%llu FLEET_JOBS=%llu FLEET_THREADS=%llu)\n",
               (unsigned long long) cfg.seed, (unsigned long long) cfg.seed, (unsigned long long) cfg.jobs,
               (unsigned long long) cfg.threads);
        fflush(stdout);
        fleet_database(&pg, "fleet_workload");
        sim_start(&sim, NULL); /* Visier's limits: 100 calls a minute, 6,000 an hour */
        for (unsigned i = 0; i < n; i++) {
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
                                 ports, n);
        workload_join(w);
        drained = workload_wait_drained(nodes[1 % n].port, (unsigned) cfg.drain_sec);

        counters = sim_control_get(&sim, "/_sim/counters");
        write_calls = json_integer_value(json_object_get(counters, "write_calls"));
        overlaps = json_integer_value(json_object_get(counters, "publish_overlaps"));
        rate_limited = json_integer_value(json_object_get(counters, "rate_limited"));
        dump = sim_control_get(&sim, "/_sim/permissions");
        /* Through the third node: not the one most clients started with. */
        workload_verify(w, nodes[2 % n].port, dump, &rep);
        lost = rep.lost_creates + rep.lost_deletes + rep.lost_updates + rep.lost_users;
        printf("fleet: nodes %u, jobs %u (create %u, update %u, assign %u, remove %u, revert %u, delete %u), "
               "write calls %lld (%.1f jobs a call), overlaps %lld, rate limited %lld, duplicates %u, lost %lld, "
               "unexpected %u, not succeeded %u, pending after drain %lld, refused %u, unanswered %u, resent %u, "
               "elapsed %.1f s, seed %llu\n",
               n, rep.accepted, rep.accepted_by_op[WORKLOAD_CREATE], rep.accepted_by_op[WORKLOAD_UPDATE],
               rep.accepted_by_op[WORKLOAD_ASSIGN], rep.accepted_by_op[WORKLOAD_REMOVE],
               rep.accepted_by_op[WORKLOAD_REVERT], rep.accepted_by_op[WORKLOAD_DELETE], write_calls,
               write_calls ? (double) rep.accepted / (double) write_calls : 0.0, overlaps, rate_limited,
               rep.duplicates, lost, rep.unexpected, rep.not_succeeded, drained, rep.refused, rep.unanswered,
               rep.resent, (double) (clock_now() - start) / USEC_PER_SEC, (unsigned long long) cfg.seed);
        if (rep.problems[0])
                printf("fleet: first problems:\n%s", rep.problems);
        for (unsigned i = 0; i < n; i++) {
                long st;
                _cleanup_free_ char *url = visierd_url(&nodes[i], "/status");
                json_t *status = http_get_json(url, &st);
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
        for (unsigned i = 0; i < n; i++)
                ck_assert_msg(visierd_stop(&nodes[i]) == 0, "node%u did not exit 0 on SIGTERM", i + 1);
        assert_no_secret_in_database();
}
END_TEST

/* ---- failover ---- */

/* Short leases and waits, so that failovers take seconds: a 3 s lease renewed every second, a
 * call deadline of request_timeout + 1 = 6 s, publish_settle 1 s. */
#define FAILOVER_VISIER "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 5"
#define FAILOVER_TAIL "lease_seconds = 3\nrenew_seconds = 1\n[jobs]\npublish_settle = 1\n"
#define FAILOVER_LEASE_SEC 3
#define FAILOVER_WAIT_SEC 60 /* the longest any step may take: far past every bound above */

static long long sim_count(const char *name) {
        json_t *c = sim_control_get(&sim, "/_sim/counters");
        long long n = json_integer_value(json_object_get(c, name));

        json_decref(c);
        return n;
}

/* The lane's holder and term as node i sees them (its /status: memory, never the database). */
static int lane_of(unsigned i, char *holder, size_t len, long long *ret_term) {
        long st = 0;
        _cleanup_free_ char *url = nodes[i].pid > 0 ? visierd_url(&nodes[i], "/status") : NULL;
        json_t *j = url ? http_get_json(url, &st) : NULL;
        json_t *lane = json_object_get(json_object_get(j, "fleet"), "lane");
        const char *h = json_string_value(json_object_get(lane, "holder"));

        snprintf(holder, len, "%s", h ? h : "");
        if (ret_term)
                *ret_term = json_integer_value(json_object_get(lane, "term"));
        json_decref(j);
        return st == 200 && h ? 0 : -1;
}

/* The node whose name holds the lane, as the running nodes other than `but` agree (-1: none yet). */
static int holder_index(int but) {
        for (unsigned i = 0; i < FLEET_NODES; i++) {
                char holder[64], name[16];

                if ((int) i == but || nodes[i].pid <= 0 || lane_of(i, holder, sizeof(holder), NULL) < 0)
                        continue;
                for (unsigned k = 0; k < FLEET_NODES; k++) {
                        snprintf(name, sizeof(name), "node%u", k + 1);
                        if (streq(holder, name))
                                return (int) k;
                }
        }
        return -1;
}

/* Each node's log, its last lines but the access log's, for a failure's message. */
static void print_logs(void) {
        for (unsigned i = 0; i < FLEET_NODES; i++) {
                char *log = nodes[i].log[0] ? harness_read_file(nodes[i].log) : NULL;
                const char *lines[40] = {};
                size_t n = 0;

                for (char *line = log, *end; line && *line; line = end ? end + 1 : NULL) {
                        end = strchr(line, '\n');
                        if (end)
                                *end = '\0';
                        if (!strstr(line, " client="))
                                lines[n++ % ELEMENTSOF(lines)] = line;
                }
                printf("---- node%u's log (its last lines but requests):\n", i + 1);
                for (size_t k = n > ELEMENTSOF(lines) ? n - ELEMENTSOF(lines) : 0; k < n; k++)
                        printf("%s\n", lines[k % ELEMENTSOF(lines)]);
                free(log);
        }
        fflush(stdout);
}

/* Wait until the sim counts a write call after `calls` (another node published): seconds. */
static double until_next_write(long long calls, usec_t since) {
        usec_t deadline = clock_now() + FAILOVER_WAIT_SEC * USEC_PER_SEC;

        while (sim_count("write_calls") <= calls) {
                if (clock_now() >= deadline)
                        print_logs();
                ck_assert_msg(clock_now() < deadline, "no write call in %d s after the failover", FAILOVER_WAIT_SEC);
                clock_sleep(10 * USEC_PER_MSEC); /* probe interval */
        }
        return (double) (clock_now() - since) / USEC_PER_SEC;
}

static void wait_open_write(void) {
        usec_t deadline = clock_now() + FAILOVER_WAIT_SEC * USEC_PER_SEC;

        while (sim_count("writes_in_flight") < 1) {
                ck_assert_msg(clock_now() < deadline, "no write call was open in %d s", FAILOVER_WAIT_SEC);
                clock_sleep(2 * USEC_PER_MSEC); /* probe interval */
        }
}

static int wait_holder(int but) {
        usec_t deadline = clock_now() + FAILOVER_WAIT_SEC * USEC_PER_SEC;
        int h;

        while ((h = holder_index(but)) < 0 || h == but) {
                if (clock_now() >= deadline)
                        print_logs();
                ck_assert_msg(clock_now() < deadline, "no node took the lane in %d s", FAILOVER_WAIT_SEC);
                clock_sleep(20 * USEC_PER_MSEC); /* probe interval */
        }
        return h;
}

static size_t file_size(const char *path) {
        struct stat st;

        return stat(path, &st) == 0 ? (size_t) st.st_size : 0;
}

/* One request to node i, raw: the whole answer, headers included (caller frees). */
static char *raw_to(unsigned i, const char *method, const char *path, const char *body) {
        char req[512];

        if (body)
                snprintf(req, sizeof(req),
                         "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         method, path, strlen(body), body);
        else
                snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method,
                         path);
        return harness_raw_exchange(nodes[i].port, req, 20);
}

/*
 * While the database is down, node i (docs/fleet.md, "Outages"): refuses a write with 503 and
 * Retry-After in Visier's Status shape, and a job status read with 503; a read through to
 * Visier still answers 200 from the node's share of the budget (no-cache: a real upstream
 * call); the probes answer, and /status says the database is unreachable.
 */
static void assert_outage_answers(unsigned i) {
        static const char write_body[] = "{\"permissions\":[{\"displayName\":\"outage probe\"}]}";
        const char *const no_cache[] = { "Cache-Control: no-cache", NULL };
        usec_t deadline = clock_now() + FAILOVER_WAIT_SEC * USEC_PER_SEC;
        long long reads_before = sim_calls(&sim, "/v1/admin/capabilities");
        char *a = NULL, *body = NULL;
        json_t *st = NULL;
        long status;

        /* The node notices on its next transaction or tick. */
        for (;;) {
                long code = 0;
                _cleanup_free_ char *url = visierd_url(&nodes[i], "/status");

                json_decref(st);
                st = http_get_json(url, &code);
                ck_assert_int_eq(code, 200);
                if (json_is_false(json_object_get(json_object_get(json_object_get(st, "fleet"), "database"),
                                                  "reachable")))
                        break;
                ck_assert_msg(clock_now() < deadline, "node%u's /status never said the database is unreachable",
                              i + 1);
                clock_sleep(20 * USEC_PER_MSEC); /* probe interval */
        }
        json_decref(st);

        a = raw_to(i, "POST", "/v1/admin/permissions", write_body);
        ck_assert_ptr_nonnull(a);
        ck_assert_msg(strncmp(a, "HTTP/1.1 503 ", 13) == 0, "a write during the outage: %.400s", a);
        ck_assert_msg(strcasestr(a, "\r\nRetry-After: "), "no Retry-After on the refused write: %.400s", a);
        body = strstr(a, "\r\n\r\n");
        ck_assert_ptr_nonnull(body);
        ck_assert_msg(strstr(body, "{\"code\":\"ServiceUnavailable\",\"message\":\""), "%s", body);
        free(a);

        status = visierd_call(&nodes[i], "GET", "/jobs/1", NULL, NULL, NULL);
        ck_assert_msg(status == 503, "a job status read during the outage answered %ld", status);

        status = visierd_call(&nodes[i], "GET", "/v1/admin/capabilities", no_cache, NULL, NULL);
        ck_assert_msg(status == 200, "a read through to Visier during the outage answered %ld", status);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), reads_before + 1);
        ck_assert_int_eq(visierd_call(&nodes[i], "GET", "/healthz", NULL, NULL, NULL), 200);
        printf("fleet failover: during the outage node%u refused a write (503, Retry-After) and a job read (503), "
               "and answered a read through to Visier (200)\n", i + 1);
        fflush(stdout);
}

/*
 * The holder SIGKILLed while a write call is open; the next holder SIGSTOPped past its lease
 * and resumed; PostgreSQL restarted under the workload. Every job ends exactly once, no two
 * publishes overlap, and the stopped node sends nothing under its old term after it resumes.
 */
START_TEST(test_fleet_failover) {
        unsigned ports[FLEET_NODES];
        WorkloadReport rep = {};
        long long overlaps, drained, lost, calls, term_before = 0, term_after = 0;
        double killed_to_write, stopped_to_write;
        char holder[64], reason[PG_REASON_MAX], *log, *after;
        int victim, paused;
        PgServer own = {};
        size_t log_at;
        usec_t t;
        Workload *w;

        printf("fleet failover: seed %llu (replay: FLEET_SEED=%llu)\n", (unsigned long long) cfg.seed,
               (unsigned long long) cfg.seed);
        fflush(stdout);
        /* A server of the test's own (Check runs each test in a child process): only the
         * process that started the postmaster can stop and restart it. */
        ck_assert_msg(pg_server_init(&own, reason, sizeof(reason)) == 0, "PostgreSQL: %s", reason);
        fleet_database(&own, "fleet_failover");
        sim_start(&sim, (const char *const[]) { "--rate-minute", "0", "--rate-hour", "0", NULL });
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":300}"));
        for (unsigned i = 0; i < FLEET_NODES; i++) {
                char tail[512];

                snprintf(tail, sizeof(tail), "[fleet]\nnode = node%u\n" FAILOVER_TAIL, i + 1);
                visierd_write_config_url(&nodes[i], &sim, store_url, FAILOVER_VISIER, tail);
                visierd_restart(&nodes[i]);
                ports[i] = nodes[i].port;
        }
        w = workload_start_nodes(&(WorkloadSettings) {
                                         /* about 12 writes a second for some 50 s: writes keep
                                          * coming through every step below */
                                         .threads = 12,
                                         .jobs = (unsigned) cfg.failover_jobs,
                                         .think_ms = 1000,
                                         .seed = cfg.seed,
                                         .retry_5xx = true,
                                         .give_up_sec = 120,
                                 },
                                 ports, FLEET_NODES);

        /* 1. The holder dies with a write call open. */
        victim = wait_holder(-1);
        wait_open_write();
        calls = sim_count("write_calls");
        workload_set_node_port(w, (unsigned) victim, 0);
        visierd_kill(&nodes[victim]);
        t = clock_now();
        killed_to_write = until_next_write(calls, t);
        visierd_restart(&nodes[victim]);
        workload_set_node_port(w, (unsigned) victim, nodes[victim].port);

        /* 2. The next holder stops past its lease (no call open, so nothing of it is in flight),
         * another takes over, and the stopped one resumes. */
        paused = wait_holder(-1);
        ck_assert_int_eq(lane_of((unsigned) paused, holder, sizeof(holder), &term_before), 0);
        workload_set_node_port(w, (unsigned) paused, 0);
        for (usec_t until = clock_now() + FAILOVER_WAIT_SEC * USEC_PER_SEC;;) {
                ck_assert_msg(clock_now() < until, "a write call was always open");
                if (sim_count("writes_in_flight") > 0) {
                        clock_sleep(1 * USEC_PER_MSEC); /* probe interval */
                        continue;
                }
                calls = sim_count("write_calls");
                ck_assert_int_eq(kill(nodes[paused].pid, SIGSTOP), 0);
                /* A call it sent just before may still be on its way: let it arrive, and if one
                 * did, start again (its answer would be logged after the resume). */
                clock_sleep(300 * USEC_PER_MSEC);
                if (sim_count("writes_in_flight") == 0 && sim_count("write_calls") == calls)
                        break;
                ck_assert_int_eq(kill(nodes[paused].pid, SIGCONT), 0);
        }
        t = clock_now();
        ck_assert_int_ne(wait_holder(paused), paused);
        stopped_to_write = until_next_write(calls, t);
        clock_sleep(FAILOVER_LEASE_SEC * USEC_PER_SEC); /* stopped well past its lease: the point of the test */
        log_at = file_size(nodes[paused].log);
        ck_assert_int_eq(kill(nodes[paused].pid, SIGCONT), 0);
        workload_set_node_port(w, (unsigned) paused, nodes[paused].port);

        /* 3. PostgreSQL crashes (immediate shutdown) while writes come in; what a node answers
         * meanwhile; then it starts again. */
        clock_sleep(1 * USEC_PER_SEC); /* the workload runs meanwhile */
        ck_assert_int_eq(pg_server_stop(&own, PG_STOP_IMMEDIATE), 0);
        assert_outage_answers((unsigned) (paused + 1) % FLEET_NODES);
        ck_assert_msg(pg_server_start(&own, reason, sizeof(reason)) == 0, "%s", reason);

        workload_join(w);
        drained = workload_wait_drained(nodes[(paused + 1) % FLEET_NODES].port, (unsigned) cfg.drain_sec);
        overlaps = sim_count("publish_overlaps");
        {
                json_t *dump = sim_control_get(&sim, "/_sim/permissions");
                workload_verify(w, nodes[(paused + 2) % FLEET_NODES].port, dump, &rep);
                json_decref(dump);
        }
        lost = rep.lost_creates + rep.lost_deletes + rep.lost_updates + rep.lost_users;
        (void) lane_of((unsigned) (paused + 1) % FLEET_NODES, holder, sizeof(holder), &term_after);

        /* What the resumed node did. The answer to a call it sent before the stop may be logged
         * after the resume; then its publisher finds the lane no longer usable ("stopped
         * publishing"), and from there nothing may be sent until it takes the lane again as a
         * new term. */
        log = harness_read_file(nodes[paused].log);
        ck_assert_ptr_nonnull(log);
        after = log + (log_at < strlen(log) ? log_at : strlen(log));
        {
                const char *stopped = strstr(after, "fleet: stopped publishing under term");
                const char *regain = stopped ? strstr(stopped, "fleet: publishing under term") : NULL;
                const char *sent = stopped ? strstr(stopped, "write call (") : NULL;
                bool old_term_send = sent && (!regain || sent < regain);

                printf("fleet failover: kill to the next write %.2f s; stop to the next write %.2f s; resumed "
                       "node%d %s; terms %lld then %lld\n",
                       killed_to_write, stopped_to_write, paused + 1,
                       !stopped ? "never noticed it lost the lane"
                       : old_term_send ? "SENT under its old term" : "sent nothing under its old term",
                       term_before, term_after);
                ck_assert_msg(stopped, "node%d never said it stopped publishing after it resumed:\n%.2000s", paused + 1,
                              after);
                ck_assert_msg(!old_term_send,
                              "node%d sent a write call after it resumed, before taking the lane again:\n%.600s",
                              paused + 1, sent);
        }
        free(log);
        printf("fleet failover: jobs %u, overlaps %lld, duplicates %u, lost %lld, unexpected %u, not succeeded %u, "
               "pending after drain %lld, refused %u, unanswered %u, resent %u\n",
               rep.accepted, overlaps, rep.duplicates, lost, rep.unexpected, rep.not_succeeded, drained, rep.refused,
               rep.unanswered, rep.resent);
        if (rep.problems[0])
                printf("fleet failover: first problems:\n%s", rep.problems);
        fflush(stdout);
        workload_free(w);

        ck_assert_msg(overlaps == 0, "%lld publishes overlapped (never two at once)", overlaps);
        ck_assert_msg(rep.duplicates == 0, "%u duplicate permissions", rep.duplicates);
        ck_assert_msg(lost == 0, "%lld accepted changes lost", lost);
        ck_assert_msg(rep.unexpected == 0, "%u permissions exist that no accepted create made", rep.unexpected);
        ck_assert_msg(rep.not_succeeded == 0, "%u accepted jobs did not succeed", rep.not_succeeded);
        ck_assert_msg(drained == 0, "%lld jobs still queued or running", drained);
        ck_assert_msg(rep.refused == 0 && rep.unanswered == 0, "%u writes refused, %u unanswered", rep.refused,
                      rep.unanswered);
        ck_assert_msg(term_after > term_before, "the lane's term did not move on (%lld, then %lld)", term_before,
                      term_after);
        for (unsigned i = 0; i < FLEET_NODES; i++)
                ck_assert_msg(visierd_stop(&nodes[i]) == 0, "node%u did not exit 0 on SIGTERM", i + 1);
        pg_server_destroy(&own);
}
END_TEST

/* A raw exchange on a thread of its own, for a request whose answer is held. */
typedef struct RawExchange {
        unsigned port;
        const char *request;
        char *answer;
} RawExchange;

static void *raw_exchange_thread(void *userdata) {
        RawExchange *x = userdata;

        x->answer = harness_raw_exchange(x->port, x->request, 60);
        return NULL;
}

/*
 * A write held by Prefer: wait whose wait ends while the database is down: the job was
 * committed, so the answer is its 202 (the job as it was committed, with its Location), never
 * an error that would have the client send it again; once the database is back the job ends
 * once. The write call is kept open at Visier past the wait (publish_ms), so the job is
 * running, not ended, when the wait is up.
 */
START_TEST(test_fleet_held_write_outage) {
        static const char request[] =
                "POST /v1/admin/permissions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                "Content-Type: application/json\r\nPrefer: wait=8\r\nContent-Length: 47\r\n\r\n"
                "{\"permissions\":[{\"displayName\":\"held outage\"}]}";
        RawExchange x = { .request = request };
        char reason[PG_REASON_MAX], *body, *log, *text;
        usec_t deadline;
        PgServer own = {};
        pthread_t thread;
        json_t *job, *dump;

        ck_assert_msg(pg_server_init(&own, reason, sizeof(reason)) == 0, "PostgreSQL: %s", reason);
        fleet_database(&own, "fleet_held_outage");
        sim_start(&sim, NULL);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":15000}"));
        node_start(0, NULL);
        x.port = nodes[0].port;
        ck_assert_int_eq(pthread_create(&thread, NULL, raw_exchange_thread, &x), 0);
        wait_open_write();
        ck_assert_int_eq(pg_server_stop(&own, PG_STOP_IMMEDIATE), 0);
        ck_assert_int_eq(pthread_join(thread, NULL), 0);
        ck_assert_ptr_nonnull(x.answer);
        ck_assert_msg(strncmp(x.answer, "HTTP/1.1 202 Accepted\r\n", 23) == 0,
                      "the held write's answer during the outage: %.600s", x.answer);
        ck_assert_msg(strcasestr(x.answer, "\r\nLocation: /jobs/1\r\n"), "%.600s", x.answer);
        body = strstr(x.answer, "\r\n\r\n");
        ck_assert_ptr_nonnull(body);
        ck_assert_msg(strncmp(body + 4, "{\"id\":1,\"state\":\"queued\",", 25) == 0, "%s", body + 4);
        free(x.answer);
        log = harness_read_file(nodes[0].log);
        ck_assert_msg(strstr(log, "job 1: cannot read it again for its 202"), "%s", log);
        free(log);

        ck_assert_msg(pg_server_start(&own, reason, sizeof(reason)) == 0, "%s", reason);
        deadline = clock_now() + FAILOVER_WAIT_SEC * USEC_PER_SEC;
        for (;;) {
                long code = 0;
                _cleanup_free_ char *url = visierd_url(&nodes[0], "/jobs/1");

                job = http_get_json(url, &code);
                if (code == 200 && streq(json_string_value(json_object_get(job, "state")), "succeeded"))
                        break;
                json_decref(job);
                ck_assert_msg(clock_now() < deadline, "job 1 did not succeed after the database came back");
                clock_sleep(50 * USEC_PER_MSEC); /* probe interval */
        }
        json_decref(job);
        dump = sim_control_get(&sim, "/_sim/permissions");
        text = json_dumps(dump, JSON_COMPACT);
        json_decref(dump);
        ck_assert_int_eq(sim_count("write_calls"), 1);
        ck_assert_msg(text && strstr(text, "\"held outage\""), "the permission is not at Visier: %s", text);
        ck_assert_msg(!strstr(strstr(text, "\"held outage\"") + 1, "\"held outage\""), "twice at Visier: %s", text);
        free(text);
        printf("fleet: a write held while the database went down was answered 202 with the job as committed; "
               "it succeeded once, with one write call\n");
        ck_assert_msg(visierd_stop(&nodes[0]) == 0, "the node did not exit 0 on SIGTERM");
        pg_server_destroy(&own);
}
END_TEST

static int read_settings(void) {
        if (harness_env_u64("FLEET_JOBS", 600, &cfg.jobs) < 0 || harness_env_u64("FLEET_THREADS", 50, &cfg.threads) < 0 ||
            harness_env_u64("FLEET_SEED", workload_random_seed(), &cfg.seed) < 0 ||
            harness_env_u64("FLEET_DRAIN_SEC", 120 + cfg.jobs / 10, &cfg.drain_sec) < 0 ||
            harness_env_u64("FLEET_FAILOVER_JOBS", 600, &cfg.failover_jobs) < 0 ||
            harness_env_u64("FLEET_WORKLOAD_NODES", FLEET_NODES, &cfg.nodes) < 0)
                return -1;
        if (cfg.threads == 0 || cfg.threads > 256 || cfg.jobs > 1000000 || cfg.nodes == 0 || cfg.nodes > FLEET_NODES)
                return -1;
        return 0;
}

int main(void) {
        char reason[PG_REASON_MAX];
        Suite *s = suite_create("fleet");
        /* Two cases, so that CK_RUN_CASE=workload runs the workload alone (bench/fleet-coalesce.sh). */
        TCase *tc = tcase_create("workload"), *tf = tcase_create("failover");
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
        tcase_set_timeout(tc, (double) (120 + cfg.jobs / 5 + cfg.drain_sec + 4 * FAILOVER_WAIT_SEC));
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_fleet_workload);
        suite_add_tcase(s, tc);
        tcase_set_timeout(tf, (double) (120 + cfg.failover_jobs / 5 + cfg.drain_sec + 4 * FAILOVER_WAIT_SEC));
        tcase_add_checked_fixture(tf, NULL, teardown);
        tcase_add_test(tf, test_fleet_failover);
        tcase_add_test(tf, test_fleet_held_write_outage);
        suite_add_tcase(s, tf);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        pg_server_destroy(&pg);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
