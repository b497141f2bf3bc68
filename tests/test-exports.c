/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: data exports through visierd. The four data queries are byte-identical to
 * visier-sim's own answers in each format; an upstream failure in the middle of an answer
 * makes the client's transfer fail; named exports list, run with parameters, refuse bad
 * parameters and bad definitions; export runs are queued as jobs and fetched; a tenant
 * without data exports gets the reason in words.
 */
#include <check.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdlib.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

static Sim sim;
static Visierd vd;
static char *token;

#define LIST_BODY                                                                                               \
        "{\"source\":{\"analyticObject\":\"Employee\"},\"columns\":["                                           \
        "{\"columnDefinition\":{\"property\":{\"name\":\"EmployeeID\",\"qualifyingPath\":\"Employee\"}}},"      \
        "{\"columnDefinition\":{\"property\":{\"name\":\"Full_Name\",\"qualifyingPath\":\"Employee\"}}},"       \
        "{\"columnDefinition\":{\"property\":{\"name\":\"Pay_Level\",\"qualifyingPath\":\"Employee\"}}}],"      \
        "\"timeInterval\":{\"fromDateTime\":\"2025-01-01\"}}"
#define AGG_BODY                                                                                                \
        "{\"query\":{\"source\":{\"metric\":\"employeeCount\"},\"axes\":[{\"dimensionLevelSelection\":"         \
        "{\"dimension\":{\"name\":\"Location\",\"qualifyingPath\":\"Employee\"},\"levelIds\":[\"Country\"]}}],"  \
        "\"timeIntervals\":{\"fromDateTime\":\"2025-01-01\",\"intervalPeriodType\":\"MONTH\",\"intervalCount\":3}}}"
#define SQL_BODY "{\"query\":\"SELECT EmployeeID, Full_Name FROM Employee LIMIT 50\"}"
#define SNAPSHOT_BODY                                                                                           \
        "{\"source\":{\"analyticObject\":\"Employee\"},\"columns\":["                                           \
        "{\"columnDefinition\":{\"property\":{\"name\":\"EmployeeID\",\"qualifyingPath\":\"Employee\"}}}],"     \
        "\"timeIntervals\":{\"fromDateTime\":\"2025-01-01\",\"intervalPeriodType\":\"MONTH\",\"intervalCount\":2}}"

static void teardown(void) {
        harness_teardown(&sim, &vd);
        free(token);
        token = NULL;
}

static void write_export(const char *name, const char *json) {
        char dir[256], path[320];

        snprintf(dir, sizeof(dir), "%s/exports.d", vd.dir);
        mkdir(dir, 0755);
        snprintf(path, sizeof(path), "%s/%s.json", dir, name);
        harness_write_file(path, json, 0644);
}

static const char *const headcount_def =
        "{\"description\":\"Headcount by country\",\"query\":\"aggregate\",\"format\":\"csv\",\"body\":" AGG_BODY ","
        "\"parameters\":{\"from\":{\"path\":\"/query/timeIntervals/fromDateTime\",\"default\":\"2025-01-01\","
        "\"pattern\":\"^[0-9]{4}-[0-9]{2}-[0-9]{2}$\"}}}";
static const char *const employees_def =
        "{\"description\":\"Employees\",\"query\":\"list\",\"format\":\"jsonl\",\"body\":" LIST_BODY "}";

/* Start both; exports.d holds the given definitions. */
static void start_all(bool with_exports) {
        static const char *const args[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };
        char tail[512];

        sim_start(&sim, args);
        token = sim_login(&sim);
        visierd_write_config(&vd, &sim, "rate_limit_minute = 100000\nrate_limit_hour = 10000000", NULL);
        snprintf(tail, sizeof(tail), "[exports]\ndirectory = %s/exports.d\n", vd.dir);
        {
                char *conf = harness_read_file(vd.config), *all;
                ck_assert_int_ge(asprintf(&all, "%s%s", conf, tail), 0);
                harness_write_file(vd.config, all, 0644);
                free(conf);
                free(all);
        }
        if (with_exports) {
                write_export("headcount", headcount_def);
                write_export("employees", employees_def);
        }
        visierd_restart(&vd);
        visierd_wait_ready(&vd);
}

static void direct(const char *path, const char *accept, const char *body, HttpResult *r) {
        char cookie[160], apikey[96], acc[96], *u = sim_url(&sim, path);
        const char *headers[] = { cookie, apikey, acc, "Content-Type: application/json", NULL };

        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        snprintf(apikey, sizeof(apikey), "apikey: %s", sim.apikey);
        snprintf(acc, sizeof(acc), "Accept: %s", accept);
        http_request("POST", u, headers, body, 30000, r);
        free(u);
}

static void through(const char *method, const char *path, const char *accept, const char *body, HttpResult *r) {
        char acc[96], *u = visierd_url(&vd, path);
        const char *headers[] = { acc, "Content-Type: application/json", NULL };

        snprintf(acc, sizeof(acc), "Accept: %s", accept ? accept : "*/*");
        http_request(method, u, headers, body, 30000, r);
        free(u);
}

START_TEST(test_queries_byte_identical) {
        static const struct { const char *path, *body; } queries[] = {
                { "/v1/data/query/aggregate", AGG_BODY },
                { "/v1/data/query/list", LIST_BODY },
                { "/v1/data/query/sql", SQL_BODY },
                { "/v1/data/query/snapshot", SNAPSHOT_BODY },
        };
        static const char *const formats[] = { "application/json", "application/jsonlines", "text/csv" };

        start_all(false);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"query_rows\":5000}"));
        for (size_t q = 0; q < ELEMENTSOF(queries); q++)
                for (size_t f = 0; f < ELEMENTSOF(formats); f++) {
                        HttpResult d, p;

                        direct(queries[q].path, formats[f], queries[q].body, &d);
                        through("POST", queries[q].path, formats[f], queries[q].body, &p);
                        ck_assert_msg(d.status == 200, "%s %s: direct answered %ld: %s", queries[q].path, formats[f],
                                      d.status, d.body);
                        ck_assert_int_eq(p.status, 200);
                        ck_assert_int_eq(p.curl_error, 0);
                        ck_assert_msg(d.len == p.len && memcmp(d.body, p.body, d.len) == 0,
                                      "%s %s: %zu bytes direct, %zu through visierd, or different bytes", queries[q].path,
                                      formats[f], d.len, p.len);
                        ck_assert_str_eq(p.content_type, d.content_type);
                        ck_assert_uint_gt(d.len, 100);
                        http_result_done(&d);
                        http_result_done(&p);
                }
}
END_TEST

START_TEST(test_mid_answer_failure_fails_the_transfer) {
        HttpResult r;

        start_all(true);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"query_rows\":20000,\"next_query_abort_after_bytes\":50000}"));
        through("POST", "/v1/data/query/list", "text/csv", LIST_BODY, &r);
        ck_assert_msg(r.curl_error == CURLE_PARTIAL_FILE || r.curl_error == CURLE_RECV_ERROR,
                      "a broken pass-through ended with curl code %d after %zu bytes", r.curl_error, r.len);
        http_result_done(&r);

        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"next_query_abort_after_bytes\":50000}"));
        through("GET", "/exports/employees.csv", NULL, NULL, &r);
        ck_assert_msg(r.curl_error == CURLE_PARTIAL_FILE || r.curl_error == CURLE_RECV_ERROR,
                      "a broken named export ended with curl code %d after %zu bytes", r.curl_error, r.len);
        http_result_done(&r);
        ck_assert_int_eq(sim_counter(&sim, "query_aborts_injected"), 2);

        /* And without the fault the same export is whole. */
        through("GET", "/exports/employees.csv", NULL, NULL, &r);
        ck_assert_int_eq(r.curl_error, 0);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);
}
END_TEST

START_TEST(test_named_exports) {
        HttpResult r, d;
        long status;
        json_t *j;
        char *u, *substituted, *at;

        start_all(true);
        u = visierd_url(&vd, "/exports");
        j = http_get_json(u, &status);
        free(u);
        ck_assert_int_eq(status, 200);
        ck_assert_int_eq(json_array_size(json_object_get(j, "exports")), 2);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "exports"), 1), "name")),
                         "headcount");
        json_decref(j);

        /* The definition's default format, a suffix, and Accept. */
        through("GET", "/exports/employees", NULL, NULL, &r);
        direct("/v1/data/query/list", "application/jsonlines", LIST_BODY, &d);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.content_type, "application/jsonlines");
        ck_assert(r.len == d.len && memcmp(r.body, d.body, d.len) == 0);
        http_result_done(&r);
        http_result_done(&d);
        through("GET", "/exports/employees.csv", NULL, NULL, &r);
        ck_assert_str_eq(r.content_type, "text/csv");
        http_result_done(&r);
        through("GET", "/exports/employees", "application/json", NULL, &r);
        ck_assert_str_eq(r.content_type, "application/json");
        http_result_done(&r);

        /* A parameter replaces its place in the body: the same as sending that body directly. */
        through("GET", "/exports/headcount.csv?from=2024-06-01", NULL, NULL, &r);
        substituted = strdup(AGG_BODY);
        at = strstr(substituted, "2025-01-01");
        memcpy(at, "2024-06-01", 10);
        direct("/v1/data/query/aggregate", "text/csv", substituted, &d);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(r.len == d.len && memcmp(r.body, d.body, d.len) == 0, "parameter not applied:\n%s\n%s", r.body,
                      d.body);
        free(substituted);
        http_result_done(&r);
        http_result_done(&d);

        /* Bad parameters are named; unknown exports are 404. */
        through("GET", "/exports/headcount?from=yesterday", NULL, NULL, &r);
        ck_assert_int_eq(r.status, 400);
        ck_assert_ptr_nonnull(strstr(r.body, "from: 'yesterday' is not a valid value"));
        http_result_done(&r);
        through("GET", "/exports/headcount?region=emea", NULL, NULL, &r);
        ck_assert_int_eq(r.status, 400);
        ck_assert_ptr_nonnull(strstr(r.body, "region: export headcount has no such parameter"));
        http_result_done(&r);
        through("GET", "/exports/nothing", NULL, NULL, &r);
        ck_assert_int_eq(r.status, 404);
        http_result_done(&r);
}
END_TEST

START_TEST(test_bad_definitions) {
        static const char *const argv_base[] = { NULL, "--check-config", "--config", NULL, NULL };
        const char *argv[5];
        char *out, *log;

        start_all(true);
        /* A reload with a broken definition is rejected with the reason; the old ones stay. */
        write_export("broken", "{\"query\":\"aggregate\",\"body\":{\"a\":\"x\"},\"parameters\":{\"p\":{\"path\":\"/b\"}}}");
        kill(vd.pid, SIGHUP);
        for (int i = 0; i < 400; i++) {
                log = harness_read_file(vd.log);
                bool seen = strstr(log, "reload rejected");
                if (seen)
                        break;
                free(log);
                log = NULL;
                clock_sleep(10 * USEC_PER_MSEC);
        }
        ck_assert_msg(log, "the reload was not rejected");
        ck_assert_ptr_nonnull(strstr(log, "broken.json: parameters.p.path: /b does not exist in body"));
        free(log);
        {
                HttpResult r;
                through("GET", "/exports/headcount.csv", NULL, NULL, &r);
                ck_assert_int_eq(r.status, 200);
                http_result_done(&r);
        }
        ck_assert_int_eq(visierd_stop(&vd), 0);

        /* Start-up is refused too. */
        memcpy(argv, argv_base, sizeof(argv));
        argv[0] = getenv("VISIERD_BIN");
        argv[3] = vd.config;
        ck_assert_int_eq(harness_run(argv, &out), 3); /* --check-config checks the definitions too */
        ck_assert_msg(strstr(out, "broken.json: parameters.p.path: /b does not exist in body") &&
                              !strstr(out, "configuration OK"),
                      "--check-config output: %s", out);
        free(out);
        {
                const char *run[] = { getenv("VISIERD_BIN"), "--config", vd.config, NULL };
                ck_assert_int_ne(harness_run(run, &out), 0);
                ck_assert_msg(strstr(out, "broken.json: parameters.p.path: /b does not exist in body") &&
                                      strstr(out, "not starting"),
                              "start-up output: %s", out);
                free(out);
        }
}
END_TEST

START_TEST(test_export_runs) {
        HttpResult r, d;
        long long id;
        char path[128];
        json_t *j;

        start_all(true);
        through("POST", "/exports/employees/runs", NULL, NULL, &r);
        ck_assert_int_eq(r.status, 202);
        j = json_loadb(r.body, r.len, 0, NULL);
        id = json_integer_value(json_object_get(j, "id"));
        ck_assert_str_eq(json_string_value(json_object_get(j, "operation")), "export");
        json_decref(j);
        http_result_done(&r);

        snprintf(path, sizeof(path), "/exports/employees/runs/%lld", id);
        for (int i = 0; i < 600; i++) {
                through("GET", path, NULL, NULL, &r);
                if (r.status != 202)
                        break;
                http_result_done(&r);
                clock_sleep(20 * USEC_PER_MSEC);
        }
        ck_assert_msg(r.status == 200, "the run answered %ld: %s", r.status, r.body);
        direct("/v1/data/query/list", "application/jsonlines", LIST_BODY, &d);
        ck_assert(r.len == d.len && memcmp(r.body, d.body, d.len) == 0);
        ck_assert_str_eq(r.content_type, "application/jsonlines");
        http_result_done(&r);
        http_result_done(&d);

        /* The run is a job like any other. */
        snprintf(path, sizeof(path), "/jobs/%lld", id);
        {
                char *u = visierd_url(&vd, path);
                long status;
                j = http_get_json(u, &status);
                free(u);
        }
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded");
        ck_assert_int_gt(json_integer_value(json_object_get(json_object_get(j, "result"), "bytes")), 100);
        /* Counted in /metrics: one run, its bytes, its duration. */
        {
                long long bytes = json_integer_value(json_object_get(json_object_get(j, "result"), "bytes"));
                char *u = visierd_url(&vd, "/metrics"), want[96];
                HttpResult mr;

                http_request("GET", u, NULL, NULL, 10000, &mr);
                free(u);
                ck_assert_int_eq(mr.status, 200);
                ck_assert_msg(strstr(mr.body, "\nvisierd_export_runs_total{result=\"succeeded\"} 1\n"), "%s", mr.body);
                ck_assert(strstr(mr.body, "\nvisierd_export_runs_total{result=\"failed\"} 0\n"));
                snprintf(want, sizeof(want), "\nvisierd_export_run_bytes_total %lld\n", bytes);
                ck_assert_msg(strstr(mr.body, want), "no '%s'", want + 1);
                ck_assert(strstr(mr.body, "\nvisierd_export_run_duration_seconds_count 1\n"));
                http_result_done(&mr);
        }
        json_decref(j);
        /* A run of another export does not answer under this name. */
        snprintf(path, sizeof(path), "/exports/headcount/runs/%lld", id);
        through("GET", path, NULL, NULL, &r);
        ck_assert_int_eq(r.status, 404);
        http_result_done(&r);

        /* Once its job is pruned, the result file goes too. (Pruning by age is unit-tested in
         * check-store; here the row is deleted as store_prune() would.) */
        {
                char db[256], file[256];
                sqlite3 *h;
                struct stat st;

                snprintf(db, sizeof(db), "%s/visierd.db", vd.dir);
                snprintf(file, sizeof(file), "%s/exports/%lld.jsonl", vd.dir, id);
                ck_assert_int_eq(stat(file, &st), 0);
                ck_assert_int_eq(visierd_stop(&vd), 0);
                ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
                snprintf(path, sizeof(path), "DELETE FROM jobs WHERE id = %lld", id);
                ck_assert_int_eq(sqlite3_exec(h, path, NULL, NULL, NULL), SQLITE_OK);
                sqlite3_close(h);
                visierd_restart(&vd);
                for (int i = 0; i < 500 && stat(file, &st) == 0; i++)
                        clock_sleep(10 * USEC_PER_MSEC);
                ck_assert_msg(stat(file, &st) < 0, "the result of a pruned run is still there");
        }
}
END_TEST

START_TEST(test_exports_not_available) {
        HttpResult r;

        start_all(true);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"exports_disabled\":true}"));
        through("POST", "/v1/data/query/list", "text/csv", LIST_BODY, &r);
        ck_assert_int_eq(r.status, 403);
        ck_assert_msg(strstr(r.body, "data exports are not available") && strstr(r.body, "Consume Data Exports"),
                      "403 without the reason in words: %s", r.body);
        http_result_done(&r);
        through("GET", "/exports/headcount.csv", NULL, NULL, &r);
        ck_assert_int_eq(r.status, 403);
        http_result_done(&r);
}
END_TEST

int main(void) {
        Suite *s = suite_create("exports");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_queries_byte_identical);
        tcase_add_test(tc, test_mid_answer_failure_fails_the_transfer);
        tcase_add_test(tc, test_named_exports);
        tcase_add_test(tc, test_bad_definitions);
        tcase_add_test(tc, test_export_runs);
        tcase_add_test(tc, test_exports_not_available);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
