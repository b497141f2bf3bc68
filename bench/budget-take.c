/* SPDX-License-Identifier: Apache-2.0 */
/*
 * budget-take: the fleet's shared rate budget alone (fleetbudget.c), against two baselines on
 * the same server in the same run — how many takes a second THREADS connections get, each
 * thread on its own connection calling in a loop for SECONDS:
 *
 *   select   SELECT 1: one round trip, the floor of anything done per call in the database;
 *   update   UPDATE of one counter row, autocommit: one short write transaction on one hot
 *            row, the first design's take (docs/fleet.md, "One transaction per call");
 *   granted  fleetbudget_take() on a tenant whose caps never run out (10^8 a minute and an
 *            hour, windows of a day, so no place comes back during the run);
 *   refused  fleetbudget_take() on a tenant whose one call a day is spent: every take refused.
 *
 *   budget-take CONNINFO SECONDS ROUNDS
 *
 * Each round runs the four with 1 thread, then with 3. Prints one line per measurement, then
 * the median of the rounds for each and the ratios of granted and refused to the baselines.
 * Creates the fleet schema (fleetbudget_migrate()) and a table bench_counter in the database.
 * Links the build's libvisierd-core.a (bench/fleet.sh compiles it against the build it
 * measures).
 */
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fleetbudget.h"

#define ROUNDS_MAX 15

enum { PHASE_SELECT, PHASE_UPDATE, PHASE_GRANTED, PHASE_REFUSED, PHASES };
static const char *const phase_names[PHASES] = { "select", "update", "granted", "refused" };
static const unsigned thread_counts[] = { 1, 3 };

static const char *conninfo;
static double seconds;
static atomic_long ops, errors;
static int phase;
static double deadline;

static double now(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static PGconn *connect_or_die(void) {
        PGconn *c = PQconnectdb(conninfo);

        if (PQstatus(c) != CONNECTION_OK) {
                fprintf(stderr, "budget-take: %s", PQerrorMessage(c));
                exit(1);
        }
        return c;
}

static void exec_or_die(PGconn *c, const char *sql) {
        PGresult *res = PQexec(c, sql);
        ExecStatusType st = PQresultStatus(res);

        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                fprintf(stderr, "budget-take: %s: %s", sql, PQerrorMessage(c));
                exit(1);
        }
        PQclear(res);
}

/* One operation of the phase: true when it did what the phase expects. */
static bool one(PGconn *c) {
        char err[FLEETBUDGET_ERROR_MAX];
        FleetBudgetTake t;
        PGresult *res;
        bool ok;
        int r;

        switch (phase) {
        case PHASE_SELECT:
        case PHASE_UPDATE:
                res = PQexec(c, phase == PHASE_SELECT ? "SELECT 1" : "UPDATE bench_counter SET n = n + 1");
                ok = PQresultStatus(res) == (phase == PHASE_SELECT ? PGRES_TUPLES_OK : PGRES_COMMAND_OK);
                PQclear(res);
                return ok;
        case PHASE_GRANTED:
                return fleetbudget_take(c, "bench-granted", &t, err, sizeof(err)) == 0;
        default:
                r = fleetbudget_take(c, "bench-refused", &t, err, sizeof(err));
                return r == -EAGAIN;
        }
}

static void *worker(void *arg) {
        PGconn *c = connect_or_die();

        (void) arg;
        while (now() < deadline) {
                if (one(c))
                        atomic_fetch_add(&ops, 1);
                else
                        atomic_fetch_add(&errors, 1);
        }
        PQfinish(c);
        return NULL;
}

static double measure(int p, unsigned threads) {
        pthread_t th[8];
        double start, elapsed;

        phase = p;
        atomic_store(&ops, 0);
        atomic_store(&errors, 0);
        start = now();
        deadline = start + seconds;
        for (unsigned i = 0; i < threads; i++)
                if (pthread_create(&th[i], NULL, worker, NULL) != 0)
                        exit(1);
        for (unsigned i = 0; i < threads; i++)
                pthread_join(th[i], NULL);
        elapsed = now() - start;
        if (atomic_load(&errors) > 0) {
                fprintf(stderr, "budget-take: %s with %u threads: %ld operations did not do what the phase expects\n",
                        phase_names[p], threads, atomic_load(&errors));
                exit(1);
        }
        return (double) atomic_load(&ops) / elapsed;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n) {
        double s[ROUNDS_MAX];

        memcpy(s, v, n * sizeof(*v));
        qsort(s, n, sizeof(*s), cmp_double);
        return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

int main(int argc, char **argv) {
        static double rate[2][PHASES][ROUNDS_MAX];
        const FleetBudgetCaps plenty = { 100000000, 100000000, FLEETBUDGET_PERIOD_MS_MAX, FLEETBUDGET_PERIOD_MS_MAX };
        const FleetBudgetCaps one_a_day = { 1, 1, FLEETBUDGET_PERIOD_MS_MAX, FLEETBUDGET_PERIOD_MS_MAX };
        char err[FLEETBUDGET_ERROR_MAX];
        unsigned rounds;
        PGconn *c;

        if (argc != 4 || (seconds = atof(argv[2])) <= 0 || (rounds = (unsigned) atoi(argv[3])) == 0 ||
            rounds > ROUNDS_MAX) {
                fprintf(stderr, "usage: budget-take CONNINFO SECONDS ROUNDS (1 to %d)\n", ROUNDS_MAX);
                return 2;
        }
        conninfo = argv[1];
        c = connect_or_die();
        if (fleetbudget_migrate(c, NULL, err, sizeof(err)) < 0 ||
            fleetbudget_set_caps(c, "bench-granted", &plenty, err, sizeof(err)) < 0 ||
            fleetbudget_set_caps(c, "bench-refused", &one_a_day, err, sizeof(err)) < 0 ||
            fleetbudget_take(c, "bench-refused", NULL, err, sizeof(err)) < 0) {
                fprintf(stderr, "budget-take: %s\n", err);
                return 1;
        }
        exec_or_die(c, "CREATE TABLE IF NOT EXISTS bench_counter (n bigint NOT NULL)");
        exec_or_die(c, "DELETE FROM bench_counter");
        exec_or_die(c, "INSERT INTO bench_counter VALUES (0)");
        PQfinish(c);

        printf("round threads phase    per_second  ms_per_op\n");
        for (unsigned r = 0; r < rounds; r++)
                for (unsigned k = 0; k < 2; k++)
                        for (int p = 0; p < PHASES; p++) {
                                double v = measure(p, thread_counts[k]);

                                rate[k][p][r] = v;
                                printf("%-5u %-7u %-8s %10.1f %10.3f\n", r + 1, thread_counts[k], phase_names[p], v,
                                       1000.0 * thread_counts[k] / v);
                                fflush(stdout);
                        }
        printf("medians of %u rounds (takes a second):\nthreads  select    update   granted   refused  "
               "granted/select granted/update refused/select\n",
               rounds);
        for (unsigned k = 0; k < 2; k++) {
                double m[PHASES];

                for (int p = 0; p < PHASES; p++)
                        m[p] = median(rate[k][p], rounds);
                printf("%-7u %8.1f %9.1f %9.1f %9.1f  %14.2f %14.2f %14.2f\n", thread_counts[k], m[PHASE_SELECT],
                       m[PHASE_UPDATE], m[PHASE_GRANTED], m[PHASE_REFUSED], m[PHASE_GRANTED] / m[PHASE_SELECT],
                       m[PHASE_GRANTED] / m[PHASE_UPDATE], m[PHASE_REFUSED] / m[PHASE_SELECT]);
        }
        return 0;
}
