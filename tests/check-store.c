/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the job store on a real SQLite file: coalescing rules, states, pruning. */
#include <check.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "harness.h"
#include "store.h"

static char dir[128], path[192];
static Store *st;

static void setup(void) {
        char err[STORE_ERROR_MAX];

        harness_mkdtemp(dir, sizeof(dir), "check-store");
        snprintf(path, sizeof(path), "%s/jobs.db", dir);
        ck_assert_int_eq(store_open(path, &st, err, sizeof(err)), 0);
}

static void teardown(void) {
        st = store_close(st);
        harness_rmtree(dir);
}

static int64_t submit(JobOp op, const char *items_json, const char *tenant, const char *key) {
        json_t *items = json_loads(items_json, 0, NULL);
        char err[STORE_ERROR_MAX];
        bool existing;
        int64_t id = 0;
        int r;

        ck_assert_ptr_nonnull(items);
        r = store_job_submit(st,
                             &(JobSubmit) { .op = op, .tenant = tenant, .project = "", .non_versioned = "",
                                            .tenant_code = "", .client = "test", .idempotency_key = key,
                                            .body = items_json, .body_len = strlen(items_json), .items = items },
                             &id, &existing, err, sizeof(err));
        json_decref(items);
        ck_assert_msg(r == 0, "submit: %s", err);
        return id;
}

static Batch *claim(size_t batch_max) {
        int64_t next;
        Batch *b = NULL;

        ck_assert_int_eq(store_batch_claim(st, INT64_MAX / 2, batch_max, &b, &next), 0);
        return b;
}

START_TEST(test_schema_version) {
        ck_assert_int_eq(store_schema_version(st), 4);
}
END_TEST

START_TEST(test_compatible_jobs_merge_in_order) {
        Batch *b;
        int64_t a = submit(JOB_OP_CREATE, "[{\"displayName\":\"a\",\"correlationId\":\"c-a\"}]", "", NULL);
        int64_t c = submit(JOB_OP_CREATE, "[{\"displayName\":\"b\",\"correlationId\":\"c-b\"},{\"displayName\":\"c\",\"correlationId\":\"c-c\"}]", "", NULL);
        int64_t other_tenant = submit(JOB_OP_CREATE, "[{\"displayName\":\"d\",\"correlationId\":\"c-d\"}]", "T2", NULL);
        int64_t after = submit(JOB_OP_CREATE, "[{\"displayName\":\"e\",\"correlationId\":\"c-e\"}]", "", NULL);

        b = claim(1000);
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(b->n_jobs, 2); /* stops at the first job that cannot share the call */
        ck_assert_int_eq(b->jobs[0].id, a);
        ck_assert_int_eq(b->jobs[1].id, c);
        ck_assert_uint_eq(b->n_items, 3);
        ck_assert_str_eq(b->items[2].correlation_id, "c-c");
        ck_assert_int_eq(store_job_state(st, a), JOB_RUNNING);
        batch_free(b);

        b = claim(1000);
        ck_assert_uint_eq(b->n_jobs, 1);
        ck_assert_int_eq(b->jobs[0].id, other_tenant);
        batch_free(b);
        b = claim(1000);
        ck_assert_int_eq(b->jobs[0].id, after);
        batch_free(b);
        ck_assert_ptr_null(claim(1000));
}
END_TEST

START_TEST(test_batch_max_and_conflicts) {
        Batch *b;
        int64_t u1 = submit(JOB_OP_UPDATE, "[{\"permissionId\":\"p1\",\"displayName\":\"x\"}]", "", NULL);
        int64_t u2 = submit(JOB_OP_UPDATE, "[{\"permissionId\":\"p2\",\"displayName\":\"x\"}]", "", NULL);
        int64_t u3 = submit(JOB_OP_UPDATE, "[{\"permissionId\":\"p1\",\"displayName\":\"y\"}]", "", NULL);
        int64_t u4 = submit(JOB_OP_UPDATE, "[{\"permissionId\":\"p3\",\"displayName\":\"x\"}]", "", NULL);

        /* Two items touching p1 never share a call, and the later one waits for the earlier. */
        b = claim(1000);
        ck_assert_uint_eq(b->n_jobs, 2);
        ck_assert_int_eq(b->jobs[1].id, u2);
        batch_free(b);
        /* u1 still running: u3 (p1) must wait; u4 may not jump ahead of u3 into a merged call
         * either, but is due on its own. */
        b = claim(1000);
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(b->n_jobs, 1);
        ck_assert_int_eq(b->jobs[0].id, u4);
        batch_free(b);
        ck_assert_ptr_null(claim(1000));

        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, u1, JOB_SUCCEEDED, 200, NULL, 200, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        b = claim(1000);
        ck_assert_int_eq(b->jobs[0].id, u3);
        batch_free(b);

        /* batch_max bounds the items of one call. */
        submit(JOB_OP_DELETE, "[\"d1\",\"d2\"]", "", NULL);
        submit(JOB_OP_DELETE, "[\"d3\",\"d4\"]", "", NULL);
        b = claim(3);
        ck_assert_uint_eq(b->n_jobs, 1);
        ck_assert_uint_eq(b->n_items, 2);
        batch_free(b);
}
END_TEST

START_TEST(test_idempotency_and_states) {
        JobState s;
        json_t *items = json_loads("[{\"displayName\":\"a\"}]", 0, NULL);
        char err[STORE_ERROR_MAX];
        bool existing;
        int64_t id1, id2;

        id1 = submit(JOB_OP_CREATE, "[{\"displayName\":\"a\"}]", "", "k1");
        ck_assert_int_eq(store_job_submit(st,
                                          &(JobSubmit) { .op = JOB_OP_CREATE, .tenant = "", .project = "", .non_versioned = "",
                                                         .tenant_code = "", .idempotency_key = "k1",
                                                         .body = "[{\"displayName\":\"a\"}]", .body_len = 21, .items = items },
                                          &id2, &existing, err, sizeof(err)),
                         0);
        ck_assert(existing);
        ck_assert_int_eq(id1, id2);
        ck_assert_int_eq(store_job_submit(st,
                                          &(JobSubmit) { .op = JOB_OP_CREATE, .tenant = "", .project = "", .non_versioned = "",
                                                         .tenant_code = "", .idempotency_key = "k1",
                                                         .body = "[{\"displayName\":\"b\"}]", .body_len = 21, .items = items },
                                          &id2, &existing, err, sizeof(err)),
                         -EEXIST);
        json_decref(items);

        ck_assert_int_eq(store_job_retry(st, id1, &s), -EBUSY);
        ck_assert_int_eq(s, JOB_QUEUED);
        ck_assert_int_eq(store_job_cancel(st, id1, &s), 0);
        ck_assert_int_eq(s, JOB_CANCELLED);
        ck_assert_int_eq(store_job_cancel(st, id1, &s), -EBUSY);
        ck_assert_int_eq(store_job_cancel(st, 4242, &s), -ENOENT);
        ck_assert_ptr_null(claim(1000)); /* cancelled jobs are never sent */
}
END_TEST

START_TEST(test_queue_limit_and_prune) {
        char err[STORE_ERROR_MAX];
        json_t *items = json_loads("[\"p\"]", 0, NULL), *counts;
        bool existing;
        int64_t id, done;
        Batch *b;

        store_set_max_pending(st, 1);
        done = submit(JOB_OP_DELETE, "[\"p\"]", "", NULL);
        ck_assert_int_eq(store_job_submit(st,
                                          &(JobSubmit) { .op = JOB_OP_DELETE, .tenant = "", .project = "", .non_versioned = "",
                                                         .tenant_code = "", .body = "[\"p\"]", .body_len = 5, .items = items },
                                          &id, &existing, err, sizeof(err)),
                         -EOVERFLOW);
        json_decref(items);
        b = claim(1000);
        batch_free(b);
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, done, JOB_SUCCEEDED, 200, NULL, 200, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        counts = store_counts(st, 0);
        ck_assert_int_eq(json_integer_value(json_object_get(counts, "succeeded")), 1);
        json_decref(counts);
        /* Kept while young, pruned once older than its retention. */
        ck_assert_int_eq(store_prune(st, 0, 1000, 1000), 0);
        ck_assert_int_eq(store_prune(st, INT64_MAX / 2, 1000, 1000), 1);
        ck_assert_ptr_null(store_job_json(st, done, true));
}
END_TEST

static void *submitter(void *arg) {
        int64_t *ids = arg;

        for (int i = 0; i < 50; i++) {
                char body[96];
                snprintf(body, sizeof(body), "[{\"displayName\":\"t%p-%d\"}]", arg, i);
                ids[i] = submit(JOB_OP_CREATE, body, "", NULL);
        }
        return NULL;
}

/* Concurrent submissions share commits (group commit) without losing or mixing any. */
START_TEST(test_concurrent_submits) {
        int64_t ids[16][50];
        pthread_t t[16];
        json_t *counts, *list;

        for (int i = 0; i < 16; i++)
                pthread_create(&t[i], NULL, submitter, ids[i]);
        for (int i = 0; i < 16; i++)
                pthread_join(t[i], NULL);
        for (int i = 0; i < 16 * 50; i++)
                for (int k = i + 1; k < 16 * 50; k++)
                        ck_assert_int_ne(((int64_t *) ids)[i], ((int64_t *) ids)[k]);
        counts = store_counts(st, 0);
        ck_assert_int_eq(json_integer_value(json_object_get(counts, "queued")), 800);
        json_decref(counts);
        ck_assert_int_eq(store_jobs_list(st, JOB_QUEUED, 0, 500, &list), 0);
        ck_assert_int_eq(json_array_size(list), 500);
        json_decref(list);
        store_set_max_pending(st, 800); /* the count of pending jobs kept in memory agrees */
        {
                json_t *items = json_loads("[\"p\"]", 0, NULL);
                char err[STORE_ERROR_MAX];
                bool existing;
                int64_t id;
                ck_assert_int_eq(store_job_submit(st,
                                                  &(JobSubmit) { .op = JOB_OP_DELETE, .tenant = "", .project = "",
                                                                 .non_versioned = "", .tenant_code = "", .body = "[\"p\"]",
                                                                 .body_len = 5, .items = items },
                                                  &id, &existing, err, sizeof(err)),
                                 -EOVERFLOW);
                json_decref(items);
        }
}
END_TEST

START_TEST(test_newer_schema_refused) {
        char err[STORE_ERROR_MAX];
        sqlite3 *db;
        Store *s2 = NULL;

        st = store_close(st);
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        ck_assert_int_eq(store_open(path, &s2, err, sizeof(err)), -EPROTO);
        ck_assert_ptr_nonnull(strstr(err, "schema version 99 is newer"));
}
END_TEST

int main(void) {
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_schema_version);
        tcase_add_test(tc, test_compatible_jobs_merge_in_order);
        tcase_add_test(tc, test_batch_max_and_conflicts);
        tcase_add_test(tc, test_idempotency_and_states);
        tcase_add_test(tc, test_queue_limit_and_prune);
        tcase_add_test(tc, test_concurrent_submits);
        tcase_add_test(tc, test_newer_schema_refused);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
