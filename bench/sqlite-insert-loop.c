/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sqlite-insert-loop: the floor under any durable queue on this disk, with journal_mode=WAL
 * and synchronous=FULL, the settings visierd's store uses. Two modes:
 *
 *   sqlite-insert-loop DATABASE SECONDS [ROW_BYTES]
 *       one thread, one connection, a plain loop of single-row inserts, each in its own
 *       transaction (BEGIN IMMEDIATE; INSERT; COMMIT): one fsync per row;
 *   sqlite-insert-loop -g PRODUCERS DATABASE SECONDS [ROW_BYTES]
 *       the grouped floor: PRODUCERS threads each hand one row at a time to one writer
 *       thread and wait until it is committed (as visierd's clients wait for their 202); the
 *       writer takes every row waiting, inserts them in one transaction, commits, and
 *       answers them — the group is as large as the queue, with no delay, as in visierd.
 *
 * Prints rows inserted, elapsed seconds, rows a second and the CPU seconds (user + system)
 * it used; the grouped mode also prints the commits and the mean rows per commit. DATABASE
 * is created (and should be a fresh file on the filesystem under test); ROW_BYTES (default
 * 300) is the size of the text payload of each row.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define ROW_BYTES_MAX 65536
#define PRODUCERS_MAX 1024

static double now(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
        struct rusage ru;

        if (getrusage(RUSAGE_SELF, &ru) < 0)
                return 0;
        return (double) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int exec(sqlite3 *db, const char *sql) {
        char *err = NULL;

        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
                fprintf(stderr, "sqlite-insert-loop: %s: %s\n", sql, err ? err : "error");
                sqlite3_free(err);
                return -1;
        }
        return 0;
}

/* ---- the grouped mode ---- */

typedef struct Request {
        double created;
        bool done, failed;
        pthread_cond_t cond; /* its producer's own: a commit wakes only the producers it answers */
        struct Request *next;
} Request;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_writer = PTHREAD_COND_INITIALIZER;
static Request *queue, **queue_tail = &queue;
static double deadline;
static long producers_left;

static void *producer(void *arg) {
        (void) arg;
        for (;;) {
                Request r = { .cond = PTHREAD_COND_INITIALIZER };

                r.created = now();
                if (r.created >= deadline)
                        break;
                pthread_mutex_lock(&lock);
                *queue_tail = &r;
                queue_tail = &r.next;
                pthread_cond_signal(&wake_writer);
                while (!r.done)
                        pthread_cond_wait(&r.cond, &lock);
                pthread_mutex_unlock(&lock);
                pthread_cond_destroy(&r.cond);
                if (r.failed)
                        break;
        }
        pthread_mutex_lock(&lock);
        producers_left--;
        pthread_cond_signal(&wake_writer);
        pthread_mutex_unlock(&lock);
        return NULL;
}

/* One writer: every round, all rows waiting in one transaction. */
static int grouped(sqlite3 *db, sqlite3_stmt *begin, sqlite3_stmt *insert, sqlite3_stmt *commit, const char *payload,
                   long row_bytes, long producers, long *ret_rows, long *ret_commits, double *ret_last) {
        pthread_t threads[PRODUCERS_MAX];
        long rows = 0, commits = 0, started = 0;
        int ret = 0;

        producers_left = producers;
        for (long i = 0; i < producers; i++) {
                if (pthread_create(&threads[i], NULL, producer, NULL) != 0) {
                        fprintf(stderr, "sqlite-insert-loop: cannot start producer %ld\n", i);
                        pthread_mutex_lock(&lock);
                        producers_left -= producers - i;
                        pthread_mutex_unlock(&lock);
                        break;
                }
                started++;
        }
        pthread_mutex_lock(&lock);
        for (;;) {
                Request *batch;
                bool ok = true;
                long n = 0;

                while (!queue && producers_left > 0)
                        pthread_cond_wait(&wake_writer, &lock);
                if (!queue)
                        break;
                batch = queue;
                queue = NULL;
                queue_tail = &queue;
                pthread_mutex_unlock(&lock);

                ok = sqlite3_step(begin) == SQLITE_DONE;
                sqlite3_reset(begin);
                for (Request *r = batch; ok && r; r = r->next) {
                        sqlite3_bind_int64(insert, 1, (sqlite3_int64) (r->created * 1e6));
                        sqlite3_bind_text(insert, 2, payload, (int) row_bytes, SQLITE_STATIC);
                        ok = sqlite3_step(insert) == SQLITE_DONE;
                        sqlite3_reset(insert);
                        n++;
                }
                if (ok)
                        ok = sqlite3_step(commit) == SQLITE_DONE;
                sqlite3_reset(commit);
                if (!ok) {
                        fprintf(stderr, "sqlite-insert-loop: group commit: %s\n", sqlite3_errmsg(db));
                        ret = -1;
                        exec(db, "ROLLBACK");
                } else {
                        rows += n;
                        commits++;
                        *ret_last = now();
                }

                pthread_mutex_lock(&lock);
                for (Request *r = batch, *next; r; r = next) {
                        next = r->next; /* read before done: the request lives on its producer's stack */
                        r->failed = !ok;
                        r->done = true;
                        pthread_cond_signal(&r->cond);
                }
        }
        pthread_mutex_unlock(&lock);
        for (long i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        *ret_rows = rows;
        *ret_commits = commits;
        return ret < 0 || started != producers ? -1 : 0;
}

static void usage(void) {
        fprintf(stderr, "usage: sqlite-insert-loop [-g PRODUCERS] DATABASE SECONDS [ROW_BYTES]\n");
}

int main(int argc, char **argv) {
        sqlite3 *db = NULL;
        sqlite3_stmt *begin = NULL, *insert = NULL, *commit = NULL;
        double seconds, start, t;
        long row_bytes = 300, n = 0, producers = 0, commits = 0;
        char *payload = NULL, *end;
        int ret = 1, opt;

        while ((opt = getopt(argc, argv, "g:")) != -1)
                switch (opt) {
                case 'g':
                        producers = strtol(optarg, &end, 10);
                        if (*end || producers < 1 || producers > PRODUCERS_MAX) {
                                fprintf(stderr, "sqlite-insert-loop: -g: PRODUCERS must be 1 to %d\n", PRODUCERS_MAX);
                                return 2;
                        }
                        break;
                default:
                        usage();
                        return 2;
                }
        argc -= optind - 1;
        argv += optind - 1;
        if (argc < 3 || argc > 4) {
                usage();
                return 2;
        }
        seconds = strtod(argv[2], &end);
        if (*end || seconds <= 0) {
                fprintf(stderr, "sqlite-insert-loop: SECONDS must be positive\n");
                return 2;
        }
        if (argc == 4) {
                row_bytes = strtol(argv[3], &end, 10);
                if (*end || row_bytes < 1 || row_bytes > ROW_BYTES_MAX) {
                        fprintf(stderr, "sqlite-insert-loop: ROW_BYTES must be 1 to %d\n", ROW_BYTES_MAX);
                        return 2;
                }
        }
        payload = malloc((size_t) row_bytes + 1);
        if (!payload)
                goto out;
        for (long i = 0; i < row_bytes; i++)
                payload[i] = (char) ('a' + i % 26);
        payload[row_bytes] = '\0';

        if (sqlite3_open(argv[1], &db) != SQLITE_OK) {
                fprintf(stderr, "sqlite-insert-loop: %s: %s\n", argv[1], db ? sqlite3_errmsg(db) : "cannot open");
                goto out;
        }
        if (exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") < 0 ||
            exec(db, "CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, state TEXT NOT NULL, "
                     "created INTEGER NOT NULL, payload TEXT NOT NULL)") < 0)
                goto out;
        if (sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(db, "INSERT INTO rows (state, created, payload) VALUES ('queued', ?, ?)", -1, &insert,
                               NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL) != SQLITE_OK) {
                fprintf(stderr, "sqlite-insert-loop: prepare: %s\n", sqlite3_errmsg(db));
                goto out;
        }

        start = now();
        deadline = start + seconds;
        if (producers > 0) {
                t = start;
                if (grouped(db, begin, insert, commit, payload, row_bytes, producers, &n, &commits, &t) < 0)
                        goto out;
                printf("inserts=%ld elapsed=%.3f rate=%.1f cpu=%.2f commits=%ld rows_per_commit=%.1f\n", n, t - start,
                       (double) n / (t - start), cpu_seconds(), commits, commits > 0 ? (double) n / (double) commits : 0.0);
                ret = 0;
                goto out;
        }
        for (t = start; t < deadline; t = now()) {
                sqlite3_bind_int64(insert, 1, (sqlite3_int64) (t * 1e6));
                sqlite3_bind_text(insert, 2, payload, (int) row_bytes, SQLITE_STATIC);
                if (sqlite3_step(begin) != SQLITE_DONE || sqlite3_step(insert) != SQLITE_DONE ||
                    sqlite3_step(commit) != SQLITE_DONE) {
                        fprintf(stderr, "sqlite-insert-loop: insert %ld: %s\n", n, sqlite3_errmsg(db));
                        goto out;
                }
                sqlite3_reset(begin);
                sqlite3_reset(insert);
                sqlite3_reset(commit);
                n++;
        }
        printf("inserts=%ld elapsed=%.3f rate=%.1f cpu=%.2f\n", n, t - start, (double) n / (t - start), cpu_seconds());
        ret = 0;
out:
        sqlite3_finalize(begin);
        sqlite3_finalize(insert);
        sqlite3_finalize(commit);
        sqlite3_close(db);
        free(payload);
        return ret;
}
