/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: visierd's database on a real, small filesystem (a tmpfs of its own) that fills
 * up while clients keep submitting tiny and 1 MiB creates, then frees up again. Every write
 * answered 503 must never be applied at visier-sim, every write answered 202 must be applied
 * exactly once and its job succeed, the queue must drain without a restart, and the database
 * must be sound afterwards.
 *
 * Needs root (to mount): otherwise, or when mounting is not permitted (EPERM, as in an
 * unprivileged container), the program exits 77, which Automake reports as SKIP.
 *
 * main() owns the mount: it moves the process into a private mount namespace, mounts the
 * tmpfs, runs the suite and unmounts, whatever the test's outcome. (Check runs each test in a
 * forked child and skips a checked teardown when an assertion fails; and should this process
 * itself die, the namespace, and the mount with it, goes away with its last process.)
 *
 * Sized by the environment (see tests/README): FULLDISK_MIB (32, the tmpfs), FULLDISK_SEED
 * (random, printed), FULLDISK_DRAIN_SEC (60).
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"
#include "workload.h"

#define FULLDISK_TINY_CLIENTS 3
#define FULLDISK_TINY_PAUSE_MS 20
#define FULLDISK_BIG_PAUSE_MS 700  /* one client sends the 1 MiB writes, this far apart */
#define FULLDISK_BIG_BODY 1048576  /* visierd's default max_body_size, the whole body */
#define FULLDISK_WRITES_MAX 20000
#define FULLDISK_BEFORE_MS 1500    /* phases: space, full, space again */
#define FULLDISK_FULL_MS 3000
/* The full phase goes on past FULLDISK_FULL_MS until a write has been refused, this long at
 * most: on a slow machine (ThreadSanitizer, a loaded CI host) the WAL's free pages can take
 * the few writes of 3 s without needing a new block. */
#define FULLDISK_FULL_MAX_MS 30000
#define FULLDISK_AFTER_MS 2000
#define FULLDISK_RESEND_SEC 15     /* a write without an answer is sent again (same key) this long */
/* 1 MiB writes per phase at most (0: no cap): a 1 MiB job takes some 2 MiB of database and
 * more of WAL, so once the space is back, visierd's own data must not fill the disk again. */
static const unsigned big_cap[] = { 2, 0, 1 };

static struct {
        uint64_t mib, seed, drain_sec;
        char mnt[256];
        bool mounted;
} cfg;

static Sim sim;
static Visierd vd;

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };

/* ---- the writes and what became of them ---- */

typedef enum Phase {
        PHASE_BEFORE,
        PHASE_FULL,
        PHASE_AFTER,
        _PHASE_MAX,
} Phase;

static const char *const phase_names[_PHASE_MAX] = { "before", "full", "after" };

typedef struct Write {
        char name[64];
        bool big;
        Phase phase;
        long status;      /* 0: no answer */
        int64_t job;
} Write;

typedef struct Writes {
        pthread_mutex_t lock;
        Write list[FULLDISK_WRITES_MAX];
        size_t n;
        atomic_int phase;
        atomic_uint full_refused; /* 503s to writes sent while the disk was full */
        atomic_bool stop;
        char *pad;        /* the description of a 1 MiB write */
        char problems[2048];
} Writes;

static Writes writes = { .lock = PTHREAD_MUTEX_INITIALIZER };

typedef struct Client {
        unsigned index;
        bool big;
        pthread_t thread;
} Client;

static void writes_problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void writes_problem(const char *fmt, ...) {
        size_t used = strlen(writes.problems);
        va_list ap;

        if (used + 300 >= sizeof(writes.problems))
                return;
        va_start(ap, fmt);
        vsnprintf(writes.problems + used, sizeof(writes.problems) - used - 1, fmt, ap);
        va_end(ap);
        used = strlen(writes.problems);
        writes.problems[used] = '\n';
        writes.problems[used + 1] = '\0';
}

/* One create; sent again with the same key while there is no answer. */
static void client_submit(CURL *h, Client *c, unsigned seq) {
        usec_t deadline = clock_now() + FULLDISK_RESEND_SEC * USEC_PER_SEC;
        char keyh[128], *url = visierd_url(&vd, "/v1/admin/permissions"), *body = NULL;
        const char *headers[] = { keyh, "Content-Type: application/json", NULL };
        Write w = { .big = c->big, .phase = (Phase) atomic_load(&writes.phase) };
        HttpResult r = {};

        snprintf(w.name, sizeof(w.name), "fd%llx-t%u-%u%s", (unsigned long long) (cfg.seed % UINT64_C(0xffffffff)),
                 c->index, seq, c->big ? "-big" : "");
        snprintf(keyh, sizeof(keyh), "Idempotency-Key: %s", w.name);
        if (asprintf(&body, "{\"permissions\":[{\"displayName\":\"%s\",\"description\":\"%s\"}]}", w.name,
                     c->big ? writes.pad : "tiny") < 0)
                abort();
        for (;;) {
                http_request_on(h, "POST", url, headers, body, 0, 30000, &r);
                if (r.curl_error == 0 || clock_now() >= deadline)
                        break;
                http_result_done(&r);
                clock_sleep(50 * USEC_PER_MSEC);
        }
        w.status = r.curl_error == 0 ? r.status : 0;
        if (w.status == 202) {
                json_t *j = json_loadb(r.body, r.len, 0, NULL);
                w.job = json_integer_value(json_object_get(j, "id"));
                json_decref(j);
        }
        pthread_mutex_lock(&writes.lock);
        if (w.status != 202 && w.status != 503)
                writes_problem("%s (%s): curl error %d, status %ld: %.200s", w.name, phase_names[w.phase], r.curl_error,
                               r.status, r.body);
        else if (w.status == 503) {
                json_t *j = json_loadb(r.body, r.len, 0, NULL);

                if (w.phase == PHASE_FULL)
                        atomic_fetch_add(&writes.full_refused, 1);
                if (!json_is_string(json_object_get(j, "code")) || !json_is_string(json_object_get(j, "message")))
                        writes_problem("%s: 503 without Visier's Status body: %.200s", w.name, r.body);
                json_decref(j);
        }
        if (writes.n < FULLDISK_WRITES_MAX)
                writes.list[writes.n++] = w;
        pthread_mutex_unlock(&writes.lock);
        http_result_done(&r);
        free(body);
        free(url);
}

static void *client_main(void *arg) {
        Client *c = arg;
        CURL *h = curl_easy_init();
        unsigned sent[_PHASE_MAX] = {};

        for (unsigned seq = 0; !atomic_load(&writes.stop); seq++) {
                Phase ph = (Phase) atomic_load(&writes.phase);

                if (c->big && big_cap[ph] > 0 && sent[ph] >= big_cap[ph]) {
                        clock_sleep(FULLDISK_TINY_PAUSE_MS * USEC_PER_MSEC);
                        continue;
                }
                sent[ph]++;
                client_submit(h, c, seq);
                clock_sleep((c->big ? FULLDISK_BIG_PAUSE_MS : FULLDISK_TINY_PAUSE_MS) * USEC_PER_MSEC);
        }
        curl_easy_cleanup(h);
        return NULL;
}

/* Fill the filesystem: write ever smaller chunks until not even 512 bytes fit. */
static long long fill(const char *path) {
        static char chunk[1 << 20];
        long long total = 0;
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        ck_assert_msg(fd >= 0, "open %s: %m", path);
        memset(chunk, 'f', sizeof(chunk));
        for (size_t size = sizeof(chunk); size >= 512;) {
                ssize_t n = write(fd, chunk, size);

                if (n > 0) {
                        total += n;
                        continue;
                }
                ck_assert_msg(n < 0 && errno == ENOSPC, "filling %s: %m", path);
                size /= 2;
        }
        fsync(fd);
        close(fd);
        return total;
}

static unsigned long long free_bytes(void) {
        struct statvfs sv;

        return statvfs(cfg.mnt, &sv) == 0 ? (unsigned long long) sv.f_bavail * sv.f_frsize : 0;
}

START_TEST(test_full_disk_on_tmpfs) {
        usec_t start = clock_now();
        char db[320], filler[320], integrity[512], conf_tail[128];
        Client clients[FULLDISK_TINY_CLIENTS + 1];
        unsigned by_phase[_PHASE_MAX][3] = {}; /* 202, 503, other */
        unsigned accepted = 0, refused = 0, other = 0, unanswered = 0, big_accepted = 0, big_refused = 0;
        unsigned refused_applied = 0, lost = 0, duplicated = 0, not_succeeded = 0, store_errors = 0, recoveries = 0;
        double elapsed;
        unsigned long long free_full, free_freed, free_end;
        long long filled, pending, db_pending, overlaps;
        json_t *dump, *counts = json_object(), *p;
        pid_t pid;
        int exit_status, status;
        CURL *h = curl_easy_init();
        size_t i;

        printf("fulldisk: seed %llu, tmpfs of %llu MiB at %s (replay: FULLDISK_SEED=%llu)\n",
               (unsigned long long) cfg.seed, (unsigned long long) cfg.mib, cfg.mnt, (unsigned long long) cfg.seed);
        fflush(stdout);
        ck_assert_msg(cfg.mounted, "the tmpfs is not mounted");
        snprintf(db, sizeof(db), "%s/visierd.db", cfg.mnt);
        snprintf(filler, sizeof(filler), "%s/filler", cfg.mnt);
        writes.pad = malloc(FULLDISK_BIG_BODY);
        ck_assert_ptr_nonnull(writes.pad);
        /* the body around the description takes less than 256 bytes */
        memset(writes.pad, 'x', FULLDISK_BIG_BODY - 256);
        writes.pad[FULLDISK_BIG_BODY - 256] = '\0';

        sim_start(&sim, unlimited);
        json_decref(sim_control_post(&sim, "/_sim/faults", "{\"publish_ms\":100}"));
        snprintf(conf_tail, sizeof(conf_tail), "[jobs]\nbatch_delay_ms = 50");
        visierd_write_config_db(&vd, &sim, db, "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 10",
                                conf_tail);
        visierd_restart(&vd);
        pid = vd.pid;

        for (unsigned c = 0; c <= FULLDISK_TINY_CLIENTS; c++) {
                clients[c] = (Client) { .index = c, .big = c == FULLDISK_TINY_CLIENTS };
                ck_assert_int_eq(pthread_create(&clients[c].thread, NULL, client_main, &clients[c]), 0);
        }
        clock_sleep(FULLDISK_BEFORE_MS * USEC_PER_MSEC); /* the clients write meanwhile */
        filled = fill(filler);
        free_full = free_bytes();
        atomic_store(&writes.phase, PHASE_FULL);
        clock_sleep(FULLDISK_FULL_MS * USEC_PER_MSEC);
        for (usec_t until = clock_now() + (FULLDISK_FULL_MAX_MS - FULLDISK_FULL_MS) * USEC_PER_MSEC;
             atomic_load(&writes.full_refused) == 0 && clock_now() < until;)
                clock_sleep(50 * USEC_PER_MSEC); /* probe interval */
        ck_assert_int_eq(unlink(filler), 0);
        free_freed = free_bytes();
        atomic_store(&writes.phase, PHASE_AFTER);
        clock_sleep(FULLDISK_AFTER_MS * USEC_PER_MSEC);
        atomic_store(&writes.stop, true);
        for (unsigned c = 0; c <= FULLDISK_TINY_CLIENTS; c++)
                pthread_join(clients[c].thread, NULL);

        /* Without a restart, the queue drains. */
        pending = workload_wait_drained(vd.port, (unsigned) cfg.drain_sec);
        free_end = free_bytes();
        ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0, "visierd died (status %d); its log:\n%s", status,
                      harness_read_file(vd.log));

        overlaps = sim_counter(&sim, "publish_overlaps");
        dump = sim_control_get(&sim, "/_sim/permissions");
        json_array_foreach(json_object_get(dump, "permissions"), i, p) {
                const char *name = json_string_value(json_object_get(p, "displayName"));
                if (name)
                        json_object_set_new(counts, name, json_integer(json_integer_value(json_object_get(counts, name)) + 1));
        }
        for (i = 0; i < writes.n; i++) {
                const Write *w = &writes.list[i];
                long long n = json_integer_value(json_object_get(counts, w->name));

                if (w->status == 0) {
                        unanswered++;
                        continue;
                }
                by_phase[w->phase][w->status == 202 ? 0 : w->status == 503 ? 1 : 2]++;
                if (w->status != 202) {
                        /* refused: 503 or anything else but 202 */
                        refused += w->status == 503;
                        other += w->status != 503;
                        big_refused += w->big;
                        if (n > 0) {
                                refused_applied++;
                                writes_problem("%s was answered %ld, yet it was applied %lld times", w->name, w->status, n);
                        }
                        continue;
                }
                accepted++;
                big_accepted += w->big;
                if (n == 0) {
                        lost++;
                        writes_problem("%s (job %lld) was accepted, but is not at the sim", w->name, (long long) w->job);
                } else if (n > 1) {
                        duplicated++;
                        writes_problem("%s (job %lld) was applied %lld times", w->name, (long long) w->job, n);
                }
                {
                        char url[128];
                        HttpResult r;
                        json_t *j;
                        const char *state;

                        snprintf(url, sizeof(url), "http://127.0.0.1:%u/jobs/%lld", vd.port, (long long) w->job);
                        http_request_on(h, "GET", url, NULL, NULL, 0, 10000, &r);
                        j = json_loadb(r.body, r.len, 0, NULL);
                        state = json_string_value(json_object_get(j, "state"));
                        if (!streq(state ?: "", "succeeded")) {
                                json_t *item = json_array_get(json_object_get(j, "item_results"), 0);
                                char *res = json_dumps(json_object_get(item, "result"), JSON_COMPACT | JSON_ENCODE_ANY);

                                not_succeeded++;
                                writes_problem("job %lld (%s, applied %lld times at the sim) is %s: %s; its item is %s: %.200s",
                                               (long long) w->job, w->name, n, state ?: "unknown",
                                               json_string_value(json_object_get(j, "error")) ?: "(no error)",
                                               json_string_value(json_object_get(item, "state")) ?: "?", res ?: "null");
                                free(res);
                        }
                        json_decref(j);
                        http_result_done(&r);
                }
        }
        exit_status = visierd_stop(&vd);
        workload_db_check(db, integrity, sizeof(integrity), &db_pending);
        {
                /* Store errors back off: the publisher's complaints and orphan recoveries come a
                 * few times over the run, not tens of times a second. */
                char *text = harness_read_file(vd.log), *at;

                for (at = text; at && (at = strstr(at, "job database:")); at++)
                        store_errors++;
                for (at = text; at && (at = strstr(at, "reconciling it with Visier")); at++)
                        recoveries++;
                free(text);
        }

        printf("fulldisk: writes %zu (202 %u of which 1 MiB %u; 503 %u; other %u; unanswered %u; 1 MiB refused %u); "
               "before: 202 %u / 503 %u / other %u; full: %u / %u / %u; after: %u / %u / %u; "
               "filler %lld bytes (%llu left free; %llu free once it was removed, %llu after the drain); refused but applied %u, accepted but lost %u, applied twice %u, "
               "not succeeded %u, pending after drain %lld, overlaps %lld; integrity %s, pending in db %lld, exit %d, "
               "store errors logged %u, orphan recoveries %u, elapsed %.1f s, seed %llu\n",
               writes.n, accepted, big_accepted, refused, other, unanswered, big_refused, by_phase[PHASE_BEFORE][0],
               by_phase[PHASE_BEFORE][1], by_phase[PHASE_BEFORE][2], by_phase[PHASE_FULL][0], by_phase[PHASE_FULL][1],
               by_phase[PHASE_FULL][2], by_phase[PHASE_AFTER][0], by_phase[PHASE_AFTER][1], by_phase[PHASE_AFTER][2],
               filled, free_full, free_freed, free_end, refused_applied, lost, duplicated, not_succeeded, pending, overlaps, integrity,
               db_pending, exit_status, store_errors, recoveries, (double) (clock_now() - start) / USEC_PER_SEC,
               (unsigned long long) cfg.seed);
        if (writes.problems[0])
                printf("fulldisk: first problems:\n%s", writes.problems);
        fflush(stdout);
        json_decref(dump);
        json_decref(counts);
        curl_easy_cleanup(h);
        free(writes.pad);

        ck_assert_msg(filled > 0, "the filler got no space: visierd's own data filled the tmpfs (raise FULLDISK_MIB)");
        ck_assert_msg(by_phase[PHASE_BEFORE][0] > 0, "nothing was accepted before the disk filled");
        ck_assert_msg(by_phase[PHASE_FULL][1] > 0, "no write was refused while the disk was full (the test did not test)");
        ck_assert_msg(by_phase[PHASE_AFTER][0] > 0, "no write was accepted once there was space again");
        ck_assert_msg(refused_applied == 0, "%u refused writes were applied", refused_applied);
        ck_assert_msg(lost == 0 && duplicated == 0, "%u accepted writes lost, %u applied twice", lost, duplicated);
        ck_assert_msg(not_succeeded == 0, "%u accepted jobs did not succeed", not_succeeded);
        ck_assert_msg(pending == 0, "%lld jobs still queued or running %llu s after the space came back", pending,
                      (unsigned long long) cfg.drain_sec);
        ck_assert_msg(other == 0 && unanswered == 0, "%u writes answered neither 202 nor 503, %u unanswered", other,
                      unanswered);
        ck_assert_msg(overlaps == 0, "%lld publishes overlapped", overlaps);
        ck_assert_msg(exit_status == 0, "visierd exited %d on SIGTERM", exit_status);
        ck_assert_msg(strcmp(integrity, "ok") == 0, "integrity_check: %s", integrity);
        ck_assert_msg(db_pending == 0, "%lld jobs queued or running in the database", db_pending);
        elapsed = (double) (clock_now() - start) / USEC_PER_SEC;
        /* One try at recovery logs a few lines (each recording that fails says so); tries back
         * off from 1 s, so a handful a second at most — the loop without backoff logged tens. */
        ck_assert_msg(store_errors <= 10 + 5 * (unsigned) elapsed,
                      "store errors do not back off: %u logged (and %u orphan recoveries) in %.0f s", store_errors,
                      recoveries, elapsed);
}
END_TEST

/* ---- the mount ---- */

/* Mount the tmpfs in a private mount namespace. 0: mounted; 1: not possible here (*ret_why
 * says why: SKIP); -errno: a real failure. */
static int mount_tmpfs(char *why, size_t len) {
        const char *tmp = getenv("TMPDIR");
        char opts[64];

        if (getuid() != 0 || geteuid() != 0) {
                snprintf(why, len, "not root (uid %u): mounting a tmpfs needs root", (unsigned) getuid());
                return 1;
        }
        if (unshare(CLONE_NEWNS) < 0) {
                snprintf(why, len, "cannot make a private mount namespace: %m");
                return errno == EPERM ? 1 : -errno;
        }
        /* Nothing mounted here may propagate to the rest of the system. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                snprintf(why, len, "cannot make mounts private: %m");
                return errno == EPERM ? 1 : -errno;
        }
        snprintf(cfg.mnt, sizeof(cfg.mnt), "%s/visierd-fulldisk.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(cfg.mnt)) {
                snprintf(why, len, "mkdtemp %s: %m", cfg.mnt);
                return -errno;
        }
        snprintf(opts, sizeof(opts), "size=%llum,mode=0700", (unsigned long long) cfg.mib);
        if (mount("tmpfs", cfg.mnt, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
                int r = errno;

                snprintf(why, len, "mount -t tmpfs -o %s %s: %s", opts, cfg.mnt, strerror(r));
                rmdir(cfg.mnt);
                return r == EPERM ? 1 : -r;
        }
        cfg.mounted = true;
        return 0;
}

static void unmount_tmpfs(void) {
        if (!cfg.mounted)
                return;
        if (umount2(cfg.mnt, MNT_DETACH) < 0)
                fprintf(stderr, "umount %s: %m\n", cfg.mnt);
        else if (rmdir(cfg.mnt) < 0)
                fprintf(stderr, "rmdir %s: %m\n", cfg.mnt);
        cfg.mounted = false;
}

int main(void) {
        Suite *s = suite_create("fulldisk");
        TCase *tc = tcase_create("integration");
        char why[512] = "";
        SRunner *sr;
        int failed, r;

        if (harness_env_u64("FULLDISK_MIB", 32, &cfg.mib) < 0 || harness_env_u64("FULLDISK_SEED", workload_random_seed(), &cfg.seed) < 0 ||
            harness_env_u64("FULLDISK_DRAIN_SEC", 60, &cfg.drain_sec) < 0 || cfg.mib < 4 || cfg.mib > 1024) {
                fprintf(stderr, "bad FULLDISK_* setting (whole numbers; 4 to 1024 MiB)\n");
                return 99; /* a hard error to Automake */
        }
        r = mount_tmpfs(why, sizeof(why));
        if (r == 1) {
                printf("SKIP: test_full_disk_on_tmpfs: %s\n", why);
                return 77; /* Automake: SKIP */
        }
        if (r < 0) {
                fprintf(stderr, "cannot set up the tmpfs: %s\n", why);
                return 99;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, (double) (60 + cfg.drain_sec));
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_full_disk_on_tmpfs);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        unmount_tmpfs(); /* whatever the outcome */
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
