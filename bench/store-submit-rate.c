/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store-submit-rate: visierd's job store alone, without HTTP — how many single-item creates a
 * second store_job_submit_async() commits, from PRODUCERS threads that each keep one job in
 * flight (submit, wait for the callback, submit the next), as visierd's clients each wait for
 * their 202. Compare with `sqlite-insert-loop -g PRODUCERS`, the grouped floor on the same
 * disk. Prints jobs committed, elapsed seconds, jobs a second and CPU seconds.
 *
 *   store-submit-rate DATABASE SECONDS PRODUCERS
 *
 * Links the build's libvisierd-core.a (bench/enqueue-rate.sh compiles it against the build
 * it measures). DATABASE must not exist yet. Compiled with -DSTORE_SUBMIT_BLOCKING it calls
 * the blocking store_job_submit() instead, for builds from before the asynchronous one.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "store.h"

#define PRODUCERS_MAX 1024

static Store *store;
static double deadline;
static atomic_long committed, failed, next_index;

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

typedef struct Producer {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool answered;
        int r;
        pthread_t thread;
} Producer;

static void answered(void *userdata, int r, int64_t id, bool existing, const char *err, json_t *job_json) {
        Producer *p = userdata;

        (void) id;
        (void) existing;
        (void) err;
        (void) job_json;
        pthread_mutex_lock(&p->lock);
        p->r = r;
        p->answered = true;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
}

static void *producer(void *arg) {
        Producer *p = arg;

        while (now() < deadline) {
                char body[128], name[32], cid[32];
                long i = atomic_fetch_add(&next_index, 1);
                json_t *items;
                int r;

                /* What visierd stores for POST {"permissions":[{"displayName":NAME}]}. */
                snprintf(name, sizeof(name), "bench-%07ld", i);
                snprintf(cid, sizeof(cid), "vd-%020ld", i);
                snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s\"}]}", name);
                items = json_pack("[{s:s, s:s}]", "displayName", name, "correlationId", cid);
                p->answered = false;
#ifdef STORE_SUBMIT_BLOCKING
                {
                        char err[STORE_ERROR_MAX];
                        bool existing;
                        int64_t id;

                        r = store_job_submit(store,
                                             &(JobSubmit) { .op = JOB_OP_CREATE, .tenant = "", .project = "",
                                                            .non_versioned = "", .tenant_code = "", .client = "bench",
                                                            .body = body, .body_len = strlen(body), .items = items },
                                             &id, &existing, err, sizeof(err));
                        answered(p, r, id, existing, err, NULL);
                }
#else
                r = store_job_submit_async(store,
                                           &(JobSubmit) { .op = JOB_OP_CREATE, .tenant = "", .project = "",
                                                          .non_versioned = "", .tenant_code = "", .client = "bench",
                                                          .body = body, .body_len = strlen(body), .items = items },
                                           answered, p);
#endif
                json_decref(items);
                if (r < 0) {
                        atomic_fetch_add(&failed, 1);
                        break;
                }
                pthread_mutex_lock(&p->lock);
                while (!p->answered)
                        pthread_cond_wait(&p->cond, &p->lock);
                r = p->r;
                pthread_mutex_unlock(&p->lock);
                atomic_fetch_add(r < 0 ? &failed : &committed, 1);
                if (r < 0)
                        break;
        }
        return NULL;
}

int main(int argc, char **argv) {
        static Producer producers[PRODUCERS_MAX];
        char err[STORE_ERROR_MAX], *end;
        double seconds, start, elapsed;
        long n;

        if (argc != 4) {
                fprintf(stderr, "usage: store-submit-rate DATABASE SECONDS PRODUCERS\n");
                return 2;
        }
        seconds = strtod(argv[2], &end);
        if (*end || seconds <= 0) {
                fprintf(stderr, "store-submit-rate: SECONDS must be positive\n");
                return 2;
        }
        n = strtol(argv[3], &end, 10);
        if (*end || n < 1 || n > PRODUCERS_MAX) {
                fprintf(stderr, "store-submit-rate: PRODUCERS must be 1 to %d\n", PRODUCERS_MAX);
                return 2;
        }
        if (store_open(argv[1], &store, err, sizeof(err)) < 0) {
                fprintf(stderr, "store-submit-rate: %s\n", err);
                return 1;
        }
        start = now();
        deadline = start + seconds;
        for (long i = 0; i < n; i++) {
                pthread_mutex_init(&producers[i].lock, NULL);
                pthread_cond_init(&producers[i].cond, NULL);
                if (pthread_create(&producers[i].thread, NULL, producer, &producers[i]) != 0) {
                        fprintf(stderr, "store-submit-rate: cannot start producer %ld\n", i);
                        return 1;
                }
        }
        for (long i = 0; i < n; i++)
                pthread_join(producers[i].thread, NULL);
        elapsed = now() - start;
        printf("inserts=%ld elapsed=%.3f rate=%.1f cpu=%.2f failed=%ld\n", atomic_load(&committed), elapsed,
               (double) atomic_load(&committed) / elapsed, cpu_seconds(), atomic_load(&failed));
        store_close(store);
        return atomic_load(&failed) == 0 ? 0 : 1;
}
