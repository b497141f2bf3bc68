/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the job store on a real SQLite file: coalescing rules, states, pruning. With
 * VISIERD_TEST_STORE=postgresql (tests/pg/check-store.pg) the same tests run on a real
 * PostgreSQL instead, a fresh database each, but for those whose subject is SQLite's file (its
 * mode, its schema version, its migrations, its query plans, a disk filling under it).
 */
#include <check.h>
#include <libpq-fe.h>
#include <sys/stat.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "harness.h"
#include "store-pg-schema.h"
#include "store.h"

static char dir[128], path[192], url[384];
static Store *st;

/* The store of the test, open again on the same database. */
static int reopen(Store **ret, char *err, size_t errlen) {
        return url[0] ? store_open_pg(url, NULL, ret, err, errlen) : store_open(path, ret, err, errlen);
}

static void setup(void) {
        char err[STORE_ERROR_MAX];

        harness_mkdtemp(dir, sizeof(dir), "check-store");
        snprintf(path, sizeof(path), "%s/jobs.db", dir);
        url[0] = '\0';
        if (harness_store_is_pg())
                harness_store_pg_new_url(url, sizeof(url));
        ck_assert_msg(reopen(&st, err, sizeof(err)) == 0, "open: %s", err);
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

        ck_assert_int_eq(store_batch_claim(st, INT64_MAX / 2, batch_max, NULL, 0, &b, &next), 0);
        return b;
}

static int64_t submit_call(const char *target) {
        json_t *items = json_array(), *extra = json_pack("{s:{s:s, s:s, s:s}}", "call", "method", "PUT", "path", target,
                                                         "route", target);
        char err[STORE_ERROR_MAX];
        bool existing;
        int64_t id = 0;

        ck_assert_int_eq(store_job_submit(st,
                                          &(JobSubmit) { .op = JOB_OP_CALL, .tenant = "", .project = "", .non_versioned = "",
                                                         .tenant_code = "", .client = "test", .body = "{}", .body_len = 2,
                                                         .items = items, .extra = extra, .solo = true },
                                          &id, &existing, err, sizeof(err)),
                         0);
        json_decref(items);
        json_decref(extra);
        return id;
}

/* Call jobs keep their place: one waiting (backed off) holds back every later job, and a job
 * of another kind before it holds it back; they are never merged. */
START_TEST(test_call_jobs_keep_their_place) {
        int64_t a = submit_call("/v1/admin/user-groups/users"), b, c, d;
        Batch *x;

        b = submit_call("/v1/admin/user-groups/permissions");
        c = submit(JOB_OP_CREATE, "[{\"displayName\":\"after\",\"correlationId\":\"c-after\"}]", "", NULL);
        x = claim(1000);
        ck_assert_ptr_nonnull(x);
        ck_assert_int_eq(x->op, JOB_OP_CALL);
        ck_assert_uint_eq(x->n_jobs, 1); /* alone */
        ck_assert_int_eq(x->jobs[0].id, a);
        batch_free(x);
        /* a is backed off (not due): neither b nor c may go before it. */
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_requeue(st, a, false, INT64_MAX / 2 + 60000, true, false, 429, "later"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        ck_assert_ptr_null(claim(1000));
        /* Once a is due again, it goes first, then b, then c. */
        {
                int64_t next;

                x = NULL;
                ck_assert_int_eq(store_batch_claim(st, INT64_MAX / 2 + 120000, 1000, NULL, 0, &x, &next), 0);
        }
        ck_assert_ptr_nonnull(x);
        ck_assert_int_eq(x->jobs[0].id, a);
        batch_free(x);
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, a, JOB_SUCCEEDED, 200, NULL, 200, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        x = claim(1000);
        ck_assert_int_eq(x->jobs[0].id, b);
        batch_free(x);
        /* c waits for b, still running. */
        ck_assert_ptr_null(claim(1000));
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, b, JOB_SUCCEEDED, 200, NULL, 200, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        /* A call job after a queued permission job waits for it too. */
        d = submit_call("/v1/admin/user-groups/users");
        x = claim(1000);
        ck_assert_int_eq(x->jobs[0].id, c);
        ck_assert_uint_eq(x->n_jobs, 1);
        batch_free(x);
        ck_assert_ptr_null(claim(1000)); /* d waits for c, running */
        (void) d;
}
END_TEST

START_TEST(test_schema_version) {
        /* Each backend has its own versions (store-pg-schema.c). */
        ck_assert_int_eq(store_schema_version(st), url[0] ? (int) store_pg_migrations_count : 7);
}
END_TEST

/* A new database, its WAL, its shared-memory file and its lock file are 0600 whatever the
 * umask: they hold the jobs' bodies. */
START_TEST(test_new_database_is_private) {
        const char *const suffixes[] = { "", "-wal", "-shm", ".lock" };
        char err[STORE_ERROR_MAX], p2[600], f[640];
        mode_t old = umask(022);
        Store *s2 = NULL;
        struct stat sb;

        snprintf(p2, sizeof(p2), "%s/private.db", dir);
        ck_assert_int_eq(store_open(p2, &s2, err, sizeof(err)), 0);
        umask(old);
        ck_assert_int_ge(store_job_exists(s2, 1), 0); /* the reader has opened the WAL too */
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                snprintf(f, sizeof(f), "%s%s", p2, suffixes[i]);
                ck_assert_msg(stat(f, &sb) == 0, "%s missing", f);
                ck_assert_msg((sb.st_mode & 0777) == 0600, "%s is %03o", f, (unsigned) (sb.st_mode & 0777));
        }
        store_close(s2);
}
END_TEST

START_TEST(test_compatible_jobs_merge_past_others) {
        Batch *b;
        int64_t a = submit(JOB_OP_CREATE, "[{\"displayName\":\"a\",\"correlationId\":\"c-a\"}]", "", NULL);
        int64_t c = submit(JOB_OP_CREATE, "[{\"displayName\":\"b\",\"correlationId\":\"c-b\"},{\"displayName\":\"c\",\"correlationId\":\"c-c\"}]", "", NULL);
        int64_t other_tenant = submit(JOB_OP_CREATE, "[{\"displayName\":\"d\",\"correlationId\":\"c-d\"}]", "T2", NULL);
        int64_t after = submit(JOB_OP_CREATE, "[{\"displayName\":\"e\",\"correlationId\":\"c-e\"}]", "", NULL);
        int64_t same_cid = submit(JOB_OP_CREATE, "[{\"displayName\":\"f\",\"correlationId\":\"c-d\"}]", "", NULL);

        /* A job that cannot share the call is passed by the later ones that name nothing it
         * names; one that shares its correlation ID stays behind it. */
        b = claim(1000);
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(b->n_jobs, 3);
        ck_assert_int_eq(b->jobs[0].id, a);
        ck_assert_int_eq(b->jobs[1].id, c);
        ck_assert_int_eq(b->jobs[2].id, after);
        ck_assert_uint_eq(b->n_items, 4);
        ck_assert_str_eq(b->items[2].correlation_id, "c-c");
        ck_assert_int_eq(store_job_state(st, a), JOB_RUNNING);
        batch_free(b);

        b = claim(1000);
        ck_assert_uint_eq(b->n_jobs, 1);
        ck_assert_int_eq(b->jobs[0].id, other_tenant);
        batch_free(b);
        ck_assert_ptr_null(claim(1000)); /* same_cid waits for other_tenant, running */
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, other_tenant, JOB_SUCCEEDED, 200, NULL, 200, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        b = claim(1000);
        ck_assert_int_eq(b->jobs[0].id, same_cid);
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

        /* Two items touching p1 never share a call, and the later one waits for the earlier;
         * u4 (p3) passes u3 into the call. */
        b = claim(1000);
        ck_assert_uint_eq(b->n_jobs, 3);
        ck_assert_int_eq(b->jobs[0].id, u1);
        ck_assert_int_eq(b->jobs[1].id, u2);
        ck_assert_int_eq(b->jobs[2].id, u4);
        batch_free(b);
        /* u1 still running: u3 (p1) must wait. */
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
                                                         .tenant_code = "", .client = "test", .idempotency_key = "k1",
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

        ck_assert_int_eq(store_job_retry(st, id1, &s, NULL), -EBUSY);
        ck_assert_int_eq(s, JOB_QUEUED);
        ck_assert_int_eq(store_job_cancel(st, id1, &s, NULL), 0);
        ck_assert_int_eq(s, JOB_CANCELLED);
        ck_assert_int_eq(store_job_cancel(st, id1, &s, NULL), -EBUSY);
        ck_assert_int_eq(store_job_cancel(st, 4242, &s, NULL), -ENOENT);
        ck_assert_ptr_null(claim(1000)); /* cancelled jobs are never sent */
}
END_TEST

/* An Idempotency-Key names one whole request: the same operation and body sent again by the
 * same caller with the same tenant, project, headers and (for a call job) method, path and
 * query. Anything else under the key is refused, never answered with the earlier job. */
static int submit_keyed(const JobSubmit *base, const char *what, const char *value, int64_t *ret_id, bool *ret_existing) {
        JobSubmit j = *base;
        json_t *extra = NULL;
        char err[STORE_ERROR_MAX];
        int r;

        if (streq(what, "tenant"))
                j.tenant = value;
        else if (streq(what, "project"))
                j.project = value;
        else if (streq(what, "non_versioned"))
                j.non_versioned = value;
        else if (streq(what, "tenant_code"))
                j.tenant_code = value;
        else if (streq(what, "client"))
                j.client = value;
        else if (streq(what, "upstream_headers"))
                j.upstream_headers = value;
        else if (streq(what, "path"))
                j.extra = extra = json_pack("{s:{s:s, s:s, s:s}}", "call", "method", "POST", "path", value, "route",
                                            "/v1/admin/projects/{projectId}");
        else
                ck_assert_str_eq(what, "nothing");
        r = store_job_submit(st, &j, ret_id, ret_existing, err, sizeof(err));
        if (r == -EEXIST)
                ck_assert_str_eq(err, "Idempotency-Key 'k-whole' was already used with a different request");
        json_decref(extra);
        return r;
}

START_TEST(test_idempotency_key_is_the_whole_request) {
        static const char body[] = "{\"operation\":\"commitAndPublish\"}";
        json_t *items = json_array(),
               *extra = json_pack("{s:{s:s, s:s, s:s}}", "call", "method", "POST", "path", "/v1/admin/projects/p-1", "route",
                                  "/v1/admin/projects/{projectId}");
        const JobSubmit base = { .op = JOB_OP_CALL, .tenant = "WFF_j1a", .project = "", .non_versioned = "",
                                 .tenant_code = "", .client = "etl", .upstream_headers = "FastMode: true",
                                 .idempotency_key = "k-whole", .body = body, .body_len = strlen(body), .items = items,
                                 .extra = extra, .solo = true };
        static const struct {
                const char *what, *value;
        } other[] = {
                { "path", "/v1/admin/projects/p-2" }, /* another project's commit, with the same body */
                { "tenant", "WFF_j1b" },
                { "project", "p-9" },
                { "non_versioned", "true" },
                { "tenant_code", "WFF_j1b" },
                { "client", "reports" },
                { "client", "tcp:127.0.0.1" },
                { "upstream_headers", "FastMode: false" },
        };
        int64_t first, id;
        bool existing;

        ck_assert_int_eq(submit_keyed(&base, "nothing", NULL, &first, &existing), 0);
        ck_assert(!existing);
        for (size_t i = 0; i < ELEMENTSOF(other); i++) {
                id = 0;
                ck_assert_msg(submit_keyed(&base, other[i].what, other[i].value, &id, &existing) == -EEXIST,
                              "another %s (%s) under the same key was taken for the same request (job %lld)", other[i].what,
                              other[i].value, (long long) id);
        }
        /* The same request again: the earlier job. */
        ck_assert_int_eq(submit_keyed(&base, "nothing", NULL, &id, &existing), 0);
        ck_assert(existing);
        ck_assert_int_eq(id, first);
        json_decref(extra);
        json_decref(items);

        /* Anonymous TCP callers are one caller: a retry from ::1 after 127.0.0.1 is the same request. */
        {
                json_t *its = json_loads("[\"p-1\"]", 0, NULL);
                const JobSubmit anon = { .op = JOB_OP_DELETE, .tenant = "", .project = "", .non_versioned = "",
                                         .tenant_code = "", .client = "tcp:127.0.0.1", .idempotency_key = "k-anon",
                                         .body = "[\"p-1\"]", .body_len = 7, .items = its };
                JobSubmit again = anon;
                char err[STORE_ERROR_MAX];

                ck_assert_int_eq(store_job_submit(st, &anon, &first, &existing, err, sizeof(err)), 0);
                again.client = "tcp:::1";
                ck_assert_int_eq(store_job_submit(st, &again, &id, &existing, err, sizeof(err)), 0);
                ck_assert(existing);
                ck_assert_int_eq(id, first);
                again.client = "uid:1000";
                ck_assert_int_eq(store_job_submit(st, &again, &id, &existing, err, sizeof(err)), -EEXIST);
                json_decref(its);
        }
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


/* ---- counters, indexes, the read connection, asynchronous submission ---- */

/* Jobs per state counted straight from the table, through a connection of the test's own. */
static json_t *counted_by_scan(void) {
        json_t *j = json_pack("{s:i, s:i, s:i, s:i, s:i}", "queued", 0, "running", 0, "succeeded", 0, "failed", 0,
                              "cancelled", 0);
        sqlite3 *db;
        sqlite3_stmt *q;

        if (url[0]) {
                PGconn *c = PQconnectdb(url);
                PGresult *res = PQexec(c, "SELECT state, count(*) FROM jobs GROUP BY state");

                ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
                for (int i = 0; i < PQntuples(res); i++)
                        json_object_set_new(j, PQgetvalue(res, i, 0), json_integer(strtoll(PQgetvalue(res, i, 1), NULL, 10)));
                PQclear(res);
                PQfinish(c);
                return j;
        }
        ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT state, count(*) FROM jobs GROUP BY state", -1, &q, NULL),
                         SQLITE_OK);
        while (sqlite3_step(q) == SQLITE_ROW)
                json_object_set_new(j, (const char *) sqlite3_column_text(q, 0), json_integer(sqlite3_column_int64(q, 1)));
        sqlite3_finalize(q);
        sqlite3_close(db);
        return j;
}

/* store_counts() agrees with a scan of the table, state by state. */
static void assert_counts_match(const char *when) {
        json_t *counts = store_counts(st, 0), *scan = counted_by_scan();
        const char *states[] = { "queued", "running", "succeeded", "failed", "cancelled" };

        for (size_t i = 0; i < ELEMENTSOF(states); i++)
                ck_assert_msg(json_integer_value(json_object_get(counts, states[i])) ==
                                      json_integer_value(json_object_get(scan, states[i])),
                              "%s: %s counted %lld, the table has %lld", when, states[i],
                              (long long) json_integer_value(json_object_get(counts, states[i])),
                              (long long) json_integer_value(json_object_get(scan, states[i])));
        json_decref(counts);
        json_decref(scan);
}

/* Every path that adds, moves or deletes a job keeps the counters exact: submission, claim,
 * finish, requeue, cancel, retry, prune; and the answer keeps its shape and order. */
/* The text GET /jobs/{id} shows: the same as the job's JSON with items, kept for final jobs,
 * and never stale after a retry or a prune. */
static char *job_text(int64_t id) {
        char *text = NULL;
        size_t len = 0;
        int r = store_job_text(st, id, &text, &len);

        if (r == -ENOENT)
                return NULL;
        ck_assert_int_eq(r, 0);
        ck_assert_uint_eq(strlen(text), len);
        return text;
}

START_TEST(test_job_text_follows_the_job) {
        char *t1, *t2, *want;
        json_t *j;
        JobState s;
        Batch *b;
        int64_t a;

        a = submit(JOB_OP_DELETE, "[\"p1\"]", "", NULL);
        t1 = job_text(a);
        j = store_job_json(st, a, true);
        want = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        ck_assert_str_eq(t1, want);
        free(want);
        free(t1);

        b = claim(1000);
        batch_free(b);
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, a, JOB_FAILED, 400, "no", 400, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        t1 = job_text(a); /* read, and kept */
        t2 = job_text(a); /* from memory */
        ck_assert_str_eq(t1, t2);
        ck_assert_ptr_nonnull(strstr(t1, "\"state\":\"failed\""));
        free(t1);
        free(t2);

        ck_assert_int_eq(store_job_retry(st, a, &s, NULL), 0);
        t1 = job_text(a);
        ck_assert_ptr_nonnull(strstr(t1, "\"state\":\"queued\""));
        free(t1);
        ck_assert_int_eq(store_job_cancel(st, a, &s, NULL), 0);
        t1 = job_text(a);
        ck_assert_ptr_nonnull(strstr(t1, "\"state\":\"cancelled\""));
        free(t1);
        ck_assert_int_eq(store_prune(st, INT64_MAX / 2, 1000, 1000), 1);
        ck_assert_ptr_null(job_text(a));
}
END_TEST

/* A cancel's and a retry's job is read in their own transaction: it shows the change (and is
 * what a read after the commit gives), and a refused change gives no job. */
static void assert_same_job(json_t *answered, int64_t id, const char *state) {
        json_t *stored = store_job_json(st, id, false);
        char *a = json_dumps(answered, JSON_COMPACT | JSON_SORT_KEYS), *b = json_dumps(stored, JSON_COMPACT | JSON_SORT_KEYS);

        ck_assert_str_eq(json_string_value(json_object_get(answered, "state")), state);
        ck_assert_str_eq(a, b);
        free(a);
        free(b);
        json_decref(stored);
}

START_TEST(test_cancel_and_retry_answer_their_change) {
        int64_t a = submit(JOB_OP_DELETE, "[\"p-1\"]", "", NULL);
        json_t *job = NULL;
        JobState s;
        Batch *b;

        ck_assert_int_eq(store_job_retry(st, a, &s, &job), -EBUSY);
        ck_assert_ptr_null(job);
        b = claim(1000);
        batch_free(b);
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, a, JOB_FAILED, 400, "no", 400, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);

        ck_assert_int_eq(store_job_retry(st, a, &s, &job), 0);
        assert_same_job(job, a, "queued");
        ck_assert(json_is_null(json_object_get(job, "error")));
        ck_assert_int_eq(json_integer_value(json_object_get(job, "attempts")), 0);
        json_decref(job);
        job = NULL;

        ck_assert_int_eq(store_job_cancel(st, a, &s, &job), 0);
        assert_same_job(job, a, "cancelled");
        ck_assert(json_is_string(json_object_get(job, "finished_at")));
        json_decref(job);
        job = NULL;
        ck_assert_int_eq(store_job_cancel(st, a, &s, &job), -EBUSY);
        ck_assert_ptr_null(job);
        ck_assert_int_eq(s, JOB_CANCELLED);
}
END_TEST

START_TEST(test_counts_follow_the_table) {
        JobState s;
        json_t *counts;
        char *text;
        Batch *b;
        int64_t a, c, d, e;

        counts = store_counts(st, 1000);
        text = json_dumps(counts, JSON_COMPACT);
        ck_assert_str_eq(text, "{\"queued\":0,\"running\":0,\"succeeded\":0,\"failed\":0,\"cancelled\":0,"
                               "\"oldest_queued_age_seconds\":null}");
        free(text);
        json_decref(counts);

        a = submit(JOB_OP_DELETE, "[\"p1\"]", "", NULL);
        c = submit(JOB_OP_DELETE, "[\"p2\"]", "T2", NULL);
        d = submit(JOB_OP_DELETE, "[\"p3\"]", "T3", NULL);
        e = submit(JOB_OP_DELETE, "[\"p4\"]", "T4", NULL);
        assert_counts_match("after submits");
        counts = store_counts(st, INT64_MAX / 4);
        ck_assert_int_eq(json_integer_value(json_object_get(counts, "queued")), 4);
        ck_assert(json_is_real(json_object_get(counts, "oldest_queued_age_seconds")));
        ck_assert(json_real_value(json_object_get(counts, "oldest_queued_age_seconds")) > 0);
        json_decref(counts);

        b = claim(1000); /* a */
        ck_assert_int_eq(b->jobs[0].id, a);
        batch_free(b);
        assert_counts_match("after a claim");
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, a, JOB_SUCCEEDED, 200, NULL, 200, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        assert_counts_match("after a finish");

        b = claim(1000); /* c */
        batch_free(b);
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_requeue(st, c, true, 0, false, false, 503, "later"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        assert_counts_match("after a requeue");
        /* A transaction rolled back leaves the counters as they were. */
        b = claim(1000); /* c again */
        ck_assert_int_eq(b->jobs[0].id, c);
        batch_free(b);
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, c, JOB_FAILED, 400, "no", 400, "{}"), 0);
        ck_assert_int_eq(store_end(st, false), 0);
        assert_counts_match("after a rollback");
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, c, JOB_FAILED, 400, "no", 400, "{}"), 0);
        ck_assert_int_eq(store_end(st, true), 0);
        assert_counts_match("after a failure");

        ck_assert_int_eq(store_job_cancel(st, d, &s, NULL), 0);
        assert_counts_match("after a cancel");
        ck_assert_int_eq(store_job_retry(st, c, &s, NULL), 0);
        assert_counts_match("after a retry");
        ck_assert_int_eq(store_job_cancel(st, c, &s, NULL), 0);
        ck_assert_int_eq(store_job_cancel(st, e, &s, NULL), 0);

        /* Prune: succeeded and the other final states each by their own retention. */
        ck_assert_int_eq(store_prune(st, INT64_MAX / 2, 1000, INT64_MAX / 2), 1);
        assert_counts_match("after pruning succeeded jobs");
        ck_assert_int_eq(store_prune(st, INT64_MAX / 2, 1000, 1000), 3);
        assert_counts_match("after pruning the rest");
        counts = store_counts(st, 0);
        text = json_dumps(counts, JSON_COMPACT);
        ck_assert_str_eq(text, "{\"queued\":0,\"running\":0,\"succeeded\":0,\"failed\":0,\"cancelled\":0,"
                               "\"oldest_queued_age_seconds\":null}");
        free(text);
        json_decref(counts);
}
END_TEST

/* A version-4 database with jobs in it is migrated to 5 with its counters built from the rows
 * already there, and from then on kept. */
START_TEST(test_migration_builds_counts) {
        char err[STORE_ERROR_MAX];
        sqlite3 *db;

        st = store_close(st);
        /* Back to version 4's schema (what 5, 6 and 7 added, removed), then rows written the old way. */
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db,
                                      "DROP TRIGGER jobs_count_insert; DROP TRIGGER jobs_count_update;"
                                      "DROP TRIGGER jobs_count_delete; DROP TABLE job_counts;"
                                      "DROP INDEX jobs_state_created; DROP INDEX jobs_state_finished;"
                                      "ALTER TABLE jobs DROP COLUMN upstream_headers;"
                                      "DROP INDEX jobs_round; ALTER TABLE jobs DROP COLUMN round_id;"
                                      "DROP TABLE round_items; DROP TABLE rounds;"
                                      "PRAGMA user_version = 4;"
                                      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
                                      "INSERT INTO jobs (state, operation, tenant, project, non_versioned, tenant_code, "
                                      "request_body, n_items, next_run_at, created_at, updated_at, finished_at) "
                                      "SELECT CASE WHEN i % 10 = 0 THEN 'failed' WHEN i % 25 = 1 THEN 'queued' "
                                      "WHEN i % 50 = 2 THEN 'cancelled' ELSE 'succeeded' END, 'delete', '', '', '', '', "
                                      "'[]', 0, i, i, i, CASE WHEN i % 25 = 1 THEN NULL ELSE i END FROM n;",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
        ck_assert_int_eq(store_open(path, &st, err, sizeof(err)), 0);
        ck_assert_int_eq(store_schema_version(st), 7);
        assert_counts_match("after the migration");
        {
                json_t *counts = store_counts(st, 2000);
                ck_assert_int_eq(json_integer_value(json_object_get(counts, "queued")), 40);
                ck_assert_int_eq(json_integer_value(json_object_get(counts, "failed")), 100);
                /* The oldest queued job was created at 1 ms. */
                ck_assert(json_real_value(json_object_get(counts, "oldest_queued_age_seconds")) == 1.999);
                json_decref(counts);
        }
        submit(JOB_OP_DELETE, "[\"x\"]", "", NULL);
        ck_assert_int_eq(store_prune(st, 600, 0, 0), 575); /* finished before 600 ms: 599 jobs less 24 queued */
        assert_counts_match("after a submit and a prune");
}
END_TEST

/* The plan SQLite chooses for each statement the store keeps prepared: a statement on the job
 * table never scans it (its cost would grow with the table), and the list, count and prune
 * statements search the index made for them. */
START_TEST(test_query_plans_use_indexes) {
        static const struct {
                const char *statement, *plan;
        } expected[] = {
                { "job_get", "INTEGER PRIMARY KEY (rowid=?)" },
                { "list_all", "INTEGER PRIMARY KEY (rowid<?)" },
                { "list_state", "INDEX jobs_state (state=? AND id<?)" },
                { "oldest_queued", "INDEX jobs_state_created (state=?)" },
                { "prune", "INDEX jobs_state_finished (state=? AND finished_at<?)" },
                { "job_state", "INTEGER PRIMARY KEY (rowid=?)" },
                { "job_response", "INTEGER PRIMARY KEY (rowid=?)" },
                { "job_exists", "INTEGER PRIMARY KEY (rowid=?)" },
                { "find_idempotent", "INDEX sqlite_autoindex_jobs_1 (idempotency_key=?)" },
        };
        json_t *plans = store_query_plans(st), *p, *line;
        size_t i, k, found = 0;

        ck_assert_ptr_nonnull(plans);
        ck_assert_int_gt(json_array_size(plans), 10);
        json_array_foreach(plans, i, p) {
                const char *name = json_string_value(json_object_get(p, "statement"));
                const char *sql = json_string_value(json_object_get(p, "sql"));
                bool has = false;

                json_array_foreach(json_object_get(p, "plan"), k, line) {
                        const char *d = json_string_value(line);
                        const char *scan = strstr(d, "SCAN ");

                        /* A scan of the small tables (job_counts: one row a state) is fine. */
                        ck_assert_msg(!scan || (strncmp(scan + 5, "jobs", 4) != 0 && strncmp(scan + 5, "job_items", 9) != 0 &&
                                                strncmp(scan + 5, "j ", 2) != 0 && strncmp(scan + 5, "c ", 2) != 0),
                                      "%s scans a table: %s (%s)", name, d, sql);
                        for (size_t e = 0; e < ELEMENTSOF(expected); e++)
                                if (streq(name, expected[e].statement) && strncmp(d, "SEARCH jobs USING ", 18) == 0 &&
                                    strstr(d, expected[e].plan))
                                        has = true;
                }
                for (size_t e = 0; e < ELEMENTSOF(expected); e++)
                        if (streq(name, expected[e].statement)) {
                                ck_assert_msg(has, "%s: plan %s, expected %s", name,
                                              json_dumps(json_object_get(p, "plan"), JSON_COMPACT), expected[e].plan);
                                found++;
                        }
        }
        ck_assert_uint_eq(found, ELEMENTSOF(expected));
        json_decref(plans);
}
END_TEST

/* Paging through the list, with and without a state, after the list statements were split. */
START_TEST(test_list_pages) {
        int64_t ids[7];
        json_t *list;
        JobState s;

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                char body[32];
                snprintf(body, sizeof(body), "[\"l%zu\"]", i);
                ids[i] = submit(JOB_OP_DELETE, body, "", NULL);
        }
        ck_assert_int_eq(store_job_cancel(st, ids[1], &s, NULL), 0);
        ck_assert_int_eq(store_job_cancel(st, ids[4], &s, NULL), 0);

        ck_assert_int_eq(store_jobs_list(st, _JOB_STATE_INVALID, 0, 3, &list), 0);
        ck_assert_uint_eq(json_array_size(list), 3);
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(list, 0), "id")), ids[6]);
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(list, 2), "id")), ids[4]);
        json_decref(list);
        ck_assert_int_eq(store_jobs_list(st, _JOB_STATE_INVALID, ids[4], 10, &list), 0);
        ck_assert_uint_eq(json_array_size(list), 4);
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(list, 0), "id")), ids[3]);
        json_decref(list);
        ck_assert_int_eq(store_jobs_list(st, JOB_CANCELLED, 0, 10, &list), 0);
        ck_assert_uint_eq(json_array_size(list), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(list, 0), "id")), ids[4]);
        json_decref(list);
        ck_assert_int_eq(store_jobs_list(st, JOB_CANCELLED, ids[4], 10, &list), 0);
        ck_assert_uint_eq(json_array_size(list), 1);
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(list, 0), "id")), ids[1]);
        json_decref(list);
        ck_assert_int_eq(store_jobs_list(st, JOB_FAILED, 0, 10, &list), 0);
        ck_assert_uint_eq(json_array_size(list), 0);
        json_decref(list);
}
END_TEST

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The ids of a list, newest first, as "5,3,1" (for one assertion per list). */
static const char *list_ids(const StoreJobFilter *f, int64_t before, unsigned limit) {
        static char buf[256];
        json_t *list, *j;
        size_t i, n = 0;

        ck_assert_int_eq(store_jobs_find(st, f, before, limit, &list), 0);
        buf[0] = '\0';
        json_array_foreach(list, i, j)
                n += (size_t) snprintf(buf + n, sizeof(buf) - n, "%s%lld", i ? "," : "",
                                       (long long) json_integer_value(json_object_get(j, "id")));
        json_decref(list);
        return buf;
}

/* The filters of GET /jobs: operation, client, since, with the state and pages, alone and
 * together; a value that would be SQL is only ever a value. */
START_TEST(test_list_filters) {
        StoreJobFilter f = STORE_JOB_FILTER_NONE;
        char err[STORE_ERROR_MAX];
        int64_t ids[6], later;
        bool existing;
        JobState s;

        ids[0] = submit(JOB_OP_DELETE, "[\"f0\"]", "", NULL);           /* client "test" */
        ids[1] = submit(JOB_OP_REVERT, "[\"f1\"]", "", NULL);
        ids[2] = submit(JOB_OP_DELETE, "[\"f2\"]", "", NULL);
        for (size_t i = 3; i < 5; i++) {                                  /* client "other' OR 1=1 --" */
                json_t *items = json_loads("[\"g\"]", 0, NULL);
                ck_assert_int_eq(store_job_submit(st,
                                                  &(JobSubmit) { .op = JOB_OP_DELETE, .tenant = "", .project = "",
                                                                 .non_versioned = "", .tenant_code = "",
                                                                 .client = "other' OR 1=1 --", .body = "[\"g\"]",
                                                                 .body_len = 5, .items = items },
                                                  &ids[i], &existing, err, sizeof(err)),
                                 0);
                json_decref(items);
        }
        /* The next job is created in a later millisecond than every one before it. */
        later = wall_ms() + 1;
        while (wall_ms() < later)
                ;
        ids[5] = submit(JOB_OP_REVERT, "[\"f5\"]", "", NULL);
        ck_assert_int_eq(store_job_cancel(st, ids[2], &s, NULL), 0);

        ck_assert_str_eq(list_ids(&f, 0, 50), "6,5,4,3,2,1");
        f.op = JOB_OP_REVERT;
        ck_assert_str_eq(list_ids(&f, 0, 50), "6,2");
        f.op = JOB_OP_DELETE;
        ck_assert_str_eq(list_ids(&f, 0, 50), "5,4,3,1");
        ck_assert_str_eq(list_ids(&f, 0, 2), "5,4");
        ck_assert_str_eq(list_ids(&f, ids[3], 2), "3,1");
        f.state = JOB_CANCELLED;
        ck_assert_str_eq(list_ids(&f, 0, 50), "3");
        f.state = JOB_QUEUED;
        f.client = "test";
        ck_assert_str_eq(list_ids(&f, 0, 50), "1");
        f = STORE_JOB_FILTER_NONE;
        f.client = "other' OR 1=1 --";
        ck_assert_str_eq(list_ids(&f, 0, 50), "5,4");
        f.client = "other";
        ck_assert_str_eq(list_ids(&f, 0, 50), "");
        f.client = "' OR 1=1 --";
        ck_assert_str_eq(list_ids(&f, 0, 50), "");
        f.client = NULL;
        f.since_ms = later;
        ck_assert_str_eq(list_ids(&f, 0, 50), "6");
        f.since_ms = later - 60000;
        ck_assert_str_eq(list_ids(&f, 0, 50), "6,5,4,3,2,1");
        f.since_ms = wall_ms() + 60000;
        ck_assert_str_eq(list_ids(&f, 0, 50), "");
        /* Every filter at once. */
        f = (StoreJobFilter) { .state = JOB_QUEUED, .op = JOB_OP_REVERT, .client = "test", .since_ms = later };
        ck_assert_str_eq(list_ids(&f, 0, 50), "6");
        ck_assert_str_eq(list_ids(&f, ids[5], 50), "");
        /* store_jobs_list is the filter on the state alone. */
        f = STORE_JOB_FILTER_NONE;
        f.state = JOB_QUEUED;
        ck_assert_str_eq(list_ids(&f, 0, 50), "6,5,4,2,1");
}
END_TEST

/* What an asynchronous submission's callback was told. */
typedef struct Answer {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int calls;
        int r;
        int64_t id;
        bool existing;
        char err[STORE_ERROR_MAX];
        char *job; /* job_json as text */
        pthread_t thread;
} Answer;

#define ANSWER_INIT { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER }

static void answer_done(void *userdata, int r, int64_t id, bool existing, const char *err, json_t *job_json) {
        Answer *a = userdata;

        pthread_mutex_lock(&a->lock);
        a->calls++;
        a->r = r;
        a->id = id;
        a->existing = existing;
        a->thread = pthread_self();
        snprintf(a->err, sizeof(a->err), "%s", err);
        free(a->job);
        a->job = job_json ? json_dumps(job_json, JSON_COMPACT) : NULL;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
}

static void answer_wait(Answer *a) {
        pthread_mutex_lock(&a->lock);
        while (a->calls == 0)
                pthread_cond_wait(&a->cond, &a->lock);
        pthread_mutex_unlock(&a->lock);
}

/* Submit asynchronously from buffers that are gone (freed and overwritten) by the time the
 * store thread writes the job. */
static void submit_async_from_scratch(Answer *a, JobOp op, const char *items_json, const char *tenant,
                                      const char *client, const char *key, const char *extra_json) {
        char *items_text = strdup(items_json), *t = strdup(tenant), *c = client ? strdup(client) : NULL,
             *k = key ? strdup(key) : NULL;
        json_t *items = json_loads(items_text, 0, NULL), *extra = extra_json ? json_loads(extra_json, 0, NULL) : NULL;
        json_t *cids = json_pack("[{s:i, s:s}]", "index", 0, "correlationId", "client-chosen-1");

        ck_assert_ptr_nonnull(items);
        ck_assert_int_eq(store_job_submit_async(st,
                                                &(JobSubmit) { .op = op, .tenant = t, .project = "P", .non_versioned = "true",
                                                               .tenant_code = "TC", .client = c, .idempotency_key = k,
                                                               .body = items_text, .body_len = strlen(items_text),
                                                               .items = items, .extra = extra,
                                                               .client_correlation_ids = op == JOB_OP_CREATE && !extra ? cids : NULL,
                                                               .solo = extra != NULL },
                                                answer_done, a),
                         0);
        memset(items_text, 'x', strlen(items_text));
        memset(t, 'x', strlen(t));
        if (c)
                memset(c, 'x', strlen(c));
        if (k)
                memset(k, 'x', strlen(k));
        json_array_clear(items);
        json_decref(items);
        json_decref(extra);
        json_decref(cids);
        free(items_text);
        free(t);
        free(c);
        free(k);
}

/* The callback's job JSON is store_job_json()'s, byte for byte; the job stored is the one
 * submitted, though the caller's buffers went away at once; the callback runs on the store's
 * thread, not the caller's. */
START_TEST(test_async_submit_answers_with_the_job) {
        static const struct {
                JobOp op;
                const char *items, *tenant, *client, *key, *extra;
        } cases[] = {
                { JOB_OP_CREATE, "[{\"displayName\":\"a1\",\"correlationId\":\"client-chosen-1\"}]", "T1", "svc", NULL, NULL },
                { JOB_OP_DELETE, "[\"p1\",\"p2\"]", "", NULL, "key-1", NULL },
                { JOB_OP_CREATE, "[{\"displayName\":\"a2\",\"correlationId\":\"vd-2\"}]", "", "svc2", NULL,
                  "{\"targetProjectForTenantsList\":{\"x\":1}}" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Answer a = ANSWER_INIT;
                json_t *stored, *items;
                char *text;

                submit_async_from_scratch(&a, cases[i].op, cases[i].items, cases[i].tenant, cases[i].client,
                                          cases[i].key, cases[i].extra);
                answer_wait(&a);
                ck_assert_msg(a.r == 0, "case %zu: %s", i, a.err);
                ck_assert_str_eq(a.err, "");
                ck_assert(!a.existing);
                ck_assert_int_gt(a.id, 0);
                ck_assert(!pthread_equal(a.thread, pthread_self()));
                ck_assert_ptr_nonnull(a.job);
                stored = store_job_json(st, a.id, false);
                text = json_dumps(stored, JSON_COMPACT);
                ck_assert_str_eq(a.job, text);
                free(text);
                json_decref(stored);
                /* The items and body as submitted, not the bytes left in the freed buffers. */
                stored = store_job_json(st, a.id, true);
                items = json_object_get(stored, "item_results");
                {
                        json_t *sent = json_loads(cases[i].items, 0, NULL);

                        ck_assert_uint_eq(json_array_size(items), json_array_size(sent));
                        json_decref(sent);
                }
                text = json_dumps(json_object_get(json_array_get(items, 0), "item"), JSON_COMPACT | JSON_ENCODE_ANY);
                ck_assert_ptr_nonnull(strstr(cases[i].items, text));
                free(text);
                ck_assert_str_eq(json_string_value(json_object_get(stored, "tenant")), cases[i].tenant);
                json_decref(stored);
                free(a.job);
        }

        /* The same Idempotency-Key and body again: the earlier job, as store_job_json() shows it. */
        {
                Answer a = ANSWER_INIT;
                json_t *stored;
                char *text;

                submit_async_from_scratch(&a, JOB_OP_DELETE, "[\"p1\",\"p2\"]", "", NULL, "key-1", NULL);
                answer_wait(&a);
                ck_assert_int_eq(a.r, 0);
                ck_assert(a.existing);
                stored = store_job_json(st, a.id, false);
                text = json_dumps(stored, JSON_COMPACT);
                ck_assert_str_eq(a.job, text);
                free(text);
                json_decref(stored);
                free(a.job);
        }
        /* Errors are answered the same way: a client correlation ID in use, another body for a key. */
        {
                Answer a = ANSWER_INIT, b = ANSWER_INIT;

                submit_async_from_scratch(&a, JOB_OP_CREATE, "[{\"displayName\":\"a3\",\"correlationId\":\"client-chosen-1\"}]",
                                          "T1", "svc", NULL, NULL);
                submit_async_from_scratch(&b, JOB_OP_DELETE, "[\"p3\"]", "", NULL, "key-1", NULL);
                answer_wait(&a);
                answer_wait(&b);
                ck_assert_int_eq(a.r, -EADDRINUSE);
                ck_assert_ptr_nonnull(strstr(a.err, "permissions[0].correlationId: client-chosen-1 is already used"));
                ck_assert_ptr_null(a.job);
                ck_assert_int_eq(b.r, -EEXIST);
                ck_assert_ptr_null(b.job);
                ck_assert_int_eq(a.calls, 1);
                ck_assert_int_eq(b.calls, 1);
        }
}
END_TEST

#define CLOSE_SUBMITS 300

/* store_close() with submissions queued: each is answered exactly once, either written (and
 * then in the database) or refused with -ECANCELED (and then not). */
START_TEST(test_close_answers_every_submission) {
        static Answer answers[CLOSE_SUBMITS];
        char err[STORE_ERROR_MAX];
        json_t *items = json_loads("[\"p\"]", 0, NULL);
        int written = 0, cancelled = 0;

        for (size_t i = 0; i < CLOSE_SUBMITS; i++) {
                char body[32];

                answers[i] = (Answer) ANSWER_INIT;
                snprintf(body, sizeof(body), "[\"c%zu\"]", i);
                ck_assert_int_eq(store_job_submit_async(st,
                                                        &(JobSubmit) { .op = JOB_OP_DELETE, .tenant = "", .project = "",
                                                                       .non_versioned = "", .tenant_code = "", .body = body,
                                                                       .body_len = strlen(body), .items = items },
                                                        answer_done, &answers[i]),
                                 0);
        }
        json_decref(items);
        st = store_close(st);
        ck_assert_int_eq(reopen(&st, err, sizeof(err)), 0);
        for (size_t i = 0; i < CLOSE_SUBMITS; i++) {
                json_t *j;

                ck_assert_int_eq(answers[i].calls, 1);
                j = answers[i].r == 0 ? store_job_json(st, answers[i].id, false) : NULL;
                if (answers[i].r == 0) {
                        ck_assert_ptr_nonnull(j);
                        written++;
                } else {
                        ck_assert_int_eq(answers[i].r, -ECANCELED);
                        ck_assert_ptr_nonnull(strstr(answers[i].err, "closed before the job was written"));
                        cancelled++;
                }
                json_decref(j);
                free(answers[i].job);
        }
        {
                json_t *counts = store_counts(st, 0);
                ck_assert_int_eq(json_integer_value(json_object_get(counts, "queued")), written);
                json_decref(counts);
        }
        ck_assert_int_eq(written + cancelled, CLOSE_SUBMITS);
}
END_TEST

/* A job claimed, and its outcome recorded in a write transaction left open, as the publisher's
 * is between its statements and its commit: the job's id. */
static int64_t begin_recording(void) {
        int64_t id = submit(JOB_OP_DELETE, "[\"p\"]", "", NULL);

        batch_free(claim(1000));
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(store_job_finish(st, id, JOB_SUCCEEDED, 200, NULL, 200, "{}"), 0);
        return id;
}

/* Work on a thread of its own beside that open transaction. */
typedef struct Beside {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
        void (*fn)(void *);
        void *arg;
} Beside;

static void *beside_main(void *userdata) {
        Beside *b = userdata;

        b->fn(b->arg);
        pthread_mutex_lock(&b->lock);
        b->done = true;
        pthread_cond_signal(&b->cond);
        pthread_mutex_unlock(&b->lock);
        return NULL;
}

static void beside_start(Beside *b, void (*fn)(void *), void *arg) {
        *b = (Beside) { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .fn = fn, .arg = arg };
        ck_assert_int_eq(pthread_create(&b->thread, NULL, beside_main, b), 0);
}

/* Did the work finish while the transaction is still open? Not a timing assertion: work that
 * waits for the transaction never finishes before store_end(), however long this waits (30 s). */
static bool beside_finished(Beside *b) {
        struct timespec deadline;
        int r = 0;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 30;
        pthread_mutex_lock(&b->lock);
        while (!b->done && r == 0)
                r = pthread_cond_timedwait(&b->cond, &b->lock, &deadline);
        pthread_mutex_unlock(&b->lock);
        return r == 0;
}

typedef struct Reader {
        int64_t id;
        char state[16];
        int64_t running;
        size_t listed;
} Reader;

static void reader(void *arg) {
        Reader *rd = arg;
        json_t *j = store_job_json(st, rd->id, true), *counts = store_counts(st, 0), *list = NULL;

        ck_assert_int_eq(store_jobs_list(st, JOB_RUNNING, 0, 10, &list), 0);
        ck_assert(store_ok(st));
        snprintf(rd->state, sizeof(rd->state), "%s", json_string_value(json_object_get(j, "state")));
        rd->running = json_integer_value(json_object_get(counts, "running"));
        rd->listed = json_array_size(list);
        json_decref(j);
        json_decref(counts);
        json_decref(list);
}

/* Reads are answered while a write transaction is open (they go through the read connection),
 * and see what was committed, not the open transaction's changes. */
START_TEST(test_reads_beside_a_write_transaction) {
        Reader rd = {};
        Beside b;
        bool finished;

        rd.id = begin_recording();
        beside_start(&b, reader, &rd);
        finished = beside_finished(&b);
        ck_assert_int_eq(store_end(st, true), 0);
        pthread_join(b.thread, NULL);
        ck_assert_msg(finished, "a read waited for the open write transaction");
        ck_assert_str_eq(rd.state, "running");
        ck_assert_int_eq(rd.running, 1);
        ck_assert_uint_eq(rd.listed, 1);
        /* Once committed, the read connection sees it at once. */
        ck_assert_int_eq(store_job_state(st, rd.id), JOB_SUCCEEDED);
        {
                json_t *counts = store_counts(st, 0);
                ck_assert_int_eq(json_integer_value(json_object_get(counts, "succeeded")), 1);
                ck_assert_int_eq(json_integer_value(json_object_get(counts, "running")), 0);
                json_decref(counts);
        }
}
END_TEST

static void submitter_beside(void *arg) {
        *(int64_t *) arg = submit(JOB_OP_DELETE, "[\"q\"]", "", NULL);
}

/* PostgreSQL: a submission does not wait behind a write transaction of the publisher's (the
 * group commit has its own connection), and /status's counts follow its commit. */
START_TEST(test_submit_beside_a_write_transaction) {
        int64_t id, submitted = 0;
        json_t *counts;
        Beside b;

        id = begin_recording();
        beside_start(&b, submitter_beside, &submitted);
        ck_assert_msg(beside_finished(&b), "a submission waited for the open write transaction");
        counts = store_counts(st, 0);
        ck_assert_int_eq(store_end(st, true), 0);
        pthread_join(b.thread, NULL);
        ck_assert_int_eq(submitted, id + 1);
        /* The counts as of the submission's commit: the new job queued, the other still running. */
        ck_assert_int_eq(json_integer_value(json_object_get(counts, "queued")), 1);
        ck_assert_int_eq(json_integer_value(json_object_get(counts, "running")), 1);
        json_decref(counts);
        ck_assert_int_eq(store_job_state(st, id), JOB_SUCCEEDED);
        ck_assert_int_eq(store_job_state(st, submitted), JOB_QUEUED);
}
END_TEST

/* ---- a full disk at every write: a VFS that fails writes from the N-th on ---- */

/*
 * Wraps the default VFS. Once armed with a quota, writes may grow the files by that many
 * bytes in all; a write that would grow them past it fails with SQLITE_FULL, as on a disk
 * with that much space left — so a large write fails while a small one after it may still
 * fit. Every file method is passed through otherwise, shared memory included (WAL mode).
 */
typedef struct FaultFile {
        sqlite3_file base;
        sqlite3_file *real;
} FaultFile;

static sqlite3_vfs fault_vfs, *real_vfs;
static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static long fault_quota = -1; /* -1: off */
static bool fault_hit;

/* May a write of these bytes to a file of this size go ahead? Takes the growth from the quota. */
static bool fault_take(sqlite3_int64 size, sqlite3_int64 end) {
        sqlite3_int64 grow = end > size ? end - size : 0;
        bool ok = true;

        pthread_mutex_lock(&fault_lock);
        if (fault_quota >= 0) {
                if (grow > fault_quota) {
                        ok = false;
                        fault_hit = true;
                } else
                        fault_quota -= (long) grow;
        }
        pthread_mutex_unlock(&fault_lock);
        return ok;
}

static void fault_arm(long quota) {
        pthread_mutex_lock(&fault_lock);
        fault_quota = quota;
        fault_hit = false;
        pthread_mutex_unlock(&fault_lock);
}

#define REAL(f) (((FaultFile *) (f))->real)
static int ff_close(sqlite3_file *f) {
        int rc = REAL(f)->pMethods->xClose(REAL(f));
        return rc;
}
static int ff_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) {
        return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int ff_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) {
        sqlite3_int64 size = 0;

        if (REAL(f)->pMethods->xFileSize(REAL(f), &size) != SQLITE_OK || !fault_take(size, o + n))
                return SQLITE_FULL;
        return REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 size) {
        return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int ff_sync(sqlite3_file *f, int flags) {
        return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int ff_file_size(sqlite3_file *f, sqlite3_int64 *size) {
        return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int ff_lock(sqlite3_file *f, int l) {
        return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int ff_unlock(sqlite3_file *f, int l) {
        return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int ff_check_reserved(sqlite3_file *f, int *out) {
        return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int ff_file_control(sqlite3_file *f, int op, void *arg) {
        return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int ff_sector_size(sqlite3_file *f) {
        return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int ff_device_chars(sqlite3_file *f) {
        return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int ff_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp) {
        return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}
static int ff_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
        return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void ff_shm_barrier(sqlite3_file *f) {
        REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int ff_shm_unmap(sqlite3_file *f, int del) {
        return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

/* Version 2 (no memory-mapped I/O, which would write without xWrite). */
static const sqlite3_io_methods fault_methods = {
        .iVersion = 2,
        .xClose = ff_close,
        .xRead = ff_read,
        .xWrite = ff_write,
        .xTruncate = ff_truncate,
        .xSync = ff_sync,
        .xFileSize = ff_file_size,
        .xLock = ff_lock,
        .xUnlock = ff_unlock,
        .xCheckReservedLock = ff_check_reserved,
        .xFileControl = ff_file_control,
        .xSectorSize = ff_sector_size,
        .xDeviceCharacteristics = ff_device_chars,
        .xShmMap = ff_shm_map,
        .xShmLock = ff_shm_lock,
        .xShmBarrier = ff_shm_barrier,
        .xShmUnmap = ff_shm_unmap,
};

static int fv_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags) {
        FaultFile *ff = (FaultFile *) f;
        int rc;

        (void) vfs;
        ff->real = (sqlite3_file *) (ff + 1);
        rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out_flags);
        ff->base.pMethods = ff->real->pMethods ? &fault_methods : NULL;
        return rc;
}

static void fault_vfs_install(void) {
        if (real_vfs)
                return;
        real_vfs = sqlite3_vfs_find(NULL);
        ck_assert_ptr_nonnull(real_vfs);
        fault_vfs = *real_vfs;
        fault_vfs.zName = "fault";
        fault_vfs.szOsFile = (int) sizeof(FaultFile) + real_vfs->szOsFile;
        fault_vfs.xOpen = fv_open;
        ck_assert_int_eq(sqlite3_vfs_register(&fault_vfs, 1), SQLITE_OK); /* the default from now on */
}

#define FAULT_WRITERS 4

typedef struct FaultSubmit {
        char name[32];
        char *body;
        int r;
        int64_t id;
} FaultSubmit;

static void *fault_submit(void *arg) {
        FaultSubmit *fs = arg;
        json_t *items = json_pack("[{s:s, s:s}]", "displayName", fs->name, "description", fs->body);
        char err[STORE_ERROR_MAX];
        bool existing;

        fs->r = store_job_submit(st,
                                 &(JobSubmit) { .op = JOB_OP_CREATE, .tenant = "", .project = "", .non_versioned = "",
                                                .tenant_code = "", .client = "test", .body = fs->name,
                                                .body_len = strlen(fs->name), .items = items },
                                 &fs->id, &existing, err, sizeof(err));
        json_decref(items);
        return NULL;
}

/* The database as the next start sees it, read without the fault VFS. */
static void check_after_fault(FaultSubmit *fs, size_t n, long k) {
        sqlite3 *db;
        sqlite3_stmt *q;

        ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        ck_assert_str_eq((const char *) sqlite3_column_text(q, 0), "ok");
        sqlite3_finalize(q);
        for (size_t i = 0; i < n; i++) {
                int jobs = 0, items = 0;

                ck_assert_int_eq(sqlite3_prepare_v2(db,
                                                    "SELECT count(*), (SELECT count(*) FROM job_items i JOIN jobs j ON "
                                                    "j.id = i.job_id WHERE j.request_body = ?1) FROM jobs WHERE "
                                                    "request_body = ?1",
                                                    -1, &q, NULL),
                                 SQLITE_OK);
                sqlite3_bind_blob(q, 1, fs[i].name, (int) strlen(fs[i].name), SQLITE_STATIC);
                ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
                jobs = sqlite3_column_int(q, 0);
                items = sqlite3_column_int(q, 1);
                sqlite3_finalize(q);
                if (fs[i].r == 0)
                        ck_assert_msg(jobs == 1 && items == 1, "write %ld: job %s accepted but stored %d times (%d items)",
                                      k, fs[i].name, jobs, items);
                else
                        ck_assert_msg(jobs == 0 && items == 0, "write %ld: job %s refused (%d) but stored", k, fs[i].name,
                                      fs[i].r);
        }
        sqlite3_close(db);
}

/* A disk that fills at every point of a group commit of large and small jobs (from no space
 * at all to enough for all): a job whose submission failed is never in the database, even
 * when a small job after a failed large one would still fit; one that succeeded is there
 * whole; and the store keeps working once space returns. */
START_TEST(test_full_disk_at_every_write) {
        static const size_t sizes[FAULT_WRITERS] = { 1600000, 64, 1200000, 16 };
        FaultSubmit fs[FAULT_WRITERS];
        long k, faults = 0;
        bool hit = true;

        fault_vfs_install();
        st = store_close(st);
        for (k = 0; hit; k += k < 65536 ? 4096 : 32768) {
                char err[STORE_ERROR_MAX];
                pthread_t t[FAULT_WRITERS];

                harness_rmtree(dir);
                harness_mkdtemp(dir, sizeof(dir), "check-store");
                snprintf(path, sizeof(path), "%s/jobs.db", dir);
                ck_assert_int_eq(store_open(path, &st, err, sizeof(err)), 0);
                submit(JOB_OP_CREATE, "[{\"displayName\":\"before\"}]", "", NULL);
                for (size_t i = 0; i < FAULT_WRITERS; i++) {
                        snprintf(fs[i].name, sizeof(fs[i].name), "fault-%ld-%zu", k, i);
                        fs[i].body = malloc(sizes[i] + 1);
                        memset(fs[i].body, 'a' + (int) i, sizes[i]);
                        fs[i].body[sizes[i]] = '\0';
                }
                fault_arm(k);
                for (size_t i = 0; i < FAULT_WRITERS; i++)
                        ck_assert_int_eq(pthread_create(&t[i], NULL, fault_submit, &fs[i]), 0);
                for (size_t i = 0; i < FAULT_WRITERS; i++)
                        pthread_join(t[i], NULL);
                pthread_mutex_lock(&fault_lock);
                hit = fault_hit;
                pthread_mutex_unlock(&fault_lock);
                faults += hit;
                fault_arm(-1);
                /* Space again: the store works without a restart. */
                submit(JOB_OP_CREATE, "[{\"displayName\":\"after\"}]", "", NULL);
                st = store_close(st);
                check_after_fault(fs, FAULT_WRITERS, k);
                for (size_t i = 0; i < FAULT_WRITERS; i++)
                        free(fs[i].body);
        }
        ck_assert_int_gt(faults, 40); /* the disk did fill inside the group, at many points */
        ck_assert_int_eq(store_open(path, &st, (char[STORE_ERROR_MAX]) {}, STORE_ERROR_MAX), 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_schema_version);
        if (!harness_store_is_pg()) {
                /* SQLite's file: its mode, a newer version in its header, its migrations, its
                 * query plans, a disk filling under it (check-db tests the PostgreSQL schema). */
                tcase_add_test(tc, test_new_database_is_private);
                tcase_add_test(tc, test_newer_schema_refused);
                tcase_add_test(tc, test_migration_builds_counts);
                tcase_add_test(tc, test_query_plans_use_indexes);
                tcase_add_test(tc, test_full_disk_at_every_write);
        } else
                printf("test_new_database_is_private, test_newer_schema_refused, test_migration_builds_counts, "
                       "test_query_plans_use_indexes, test_full_disk_at_every_write: SQLite only, not run on "
                       "PostgreSQL\n");
        tcase_add_test(tc, test_call_jobs_keep_their_place);
        tcase_add_test(tc, test_compatible_jobs_merge_past_others);
        tcase_add_test(tc, test_batch_max_and_conflicts);
        tcase_add_test(tc, test_idempotency_and_states);
        tcase_add_test(tc, test_idempotency_key_is_the_whole_request);
        tcase_add_test(tc, test_cancel_and_retry_answer_their_change);
        tcase_add_test(tc, test_queue_limit_and_prune);
        tcase_add_test(tc, test_concurrent_submits);
        tcase_add_test(tc, test_counts_follow_the_table);
        tcase_add_test(tc, test_job_text_follows_the_job);
        tcase_add_test(tc, test_list_pages);
        tcase_add_test(tc, test_list_filters);
        tcase_add_test(tc, test_async_submit_answers_with_the_job);
        tcase_add_test(tc, test_close_answers_every_submission);
        tcase_add_test(tc, test_reads_beside_a_write_transaction);
        if (harness_store_is_pg())
                tcase_add_test(tc, test_submit_beside_a_write_transaction);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
