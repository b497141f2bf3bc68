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
        tcase_add_test(tc, test_compatible_jobs_merge_in_order);
        tcase_add_test(tc, test_batch_max_and_conflicts);
        tcase_add_test(tc, test_idempotency_and_states);
        tcase_add_test(tc, test_queue_limit_and_prune);
        tcase_add_test(tc, test_concurrent_submits);
        tcase_add_test(tc, test_newer_schema_refused);
        tcase_add_test(tc, test_full_disk_at_every_write);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
