/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sqlite-insert-loop: the floor under any durable queue on this disk. One thread, one
 * connection, a plain loop of single-row inserts, each in its own transaction
 * (BEGIN IMMEDIATE; INSERT; COMMIT), with journal_mode=WAL and synchronous=FULL, the
 * settings visierd's store uses. Prints inserts, elapsed seconds, inserts a second and the
 * CPU seconds (user + system) it used.
 *
 *   sqlite-insert-loop DATABASE SECONDS [ROW_BYTES]
 *
 * DATABASE is created (and should be a fresh file on the filesystem under test); ROW_BYTES
 * (default 300) is the size of the text payload of each row.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define ROW_BYTES_MAX 65536

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

int main(int argc, char **argv) {
        sqlite3 *db = NULL;
        sqlite3_stmt *begin = NULL, *insert = NULL, *commit = NULL;
        double seconds, start, t, deadline;
        long row_bytes = 300, n = 0;
        char *payload = NULL, *end;
        int ret = 1;

        if (argc < 3 || argc > 4) {
                fprintf(stderr, "usage: sqlite-insert-loop DATABASE SECONDS [ROW_BYTES]\n");
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
