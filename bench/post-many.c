/* SPDX-License-Identifier: Apache-2.0 */
/*
 * post-many: a benchmark client that POSTs single-permission creates from many threads.
 *
 * Each of CLIENTS threads keeps one libcurl handle (one keep-alive connection) and POSTs
 * {"permissions":[{"displayName":"PREFIX-N"}]} with a unique N taken from a shared counter,
 * until COUNT creates were sent or, with -d, until SECONDS have passed (COUNT 0 = no cap).
 * It prints one line of key=value pairs: elapsed seconds (start to the last answer), the
 * requests made, the count of each HTTP status seen, transport errors, and its own CPU
 * seconds (user + system), since on a small machine the client competes with the server.
 *
 *   post-many [-H HEADER]... [-p PREFIX] [-d SECONDS] URL COUNT CLIENTS
 *
 * A benchmark tool only: it never retries, and it must not be used as an example of how a
 * service should talk to visierd (that one should send an Idempotency-Key).
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CLIENTS_MAX 1024
#define HEADERS_MAX 16
#define STATUS_MAX 600
#define REQUEST_TIMEOUT_S 300L

static const char *url, *prefix = "bench";
static long count;           /* 0: no cap (needs -d) */
static double deadline;      /* 0: none */
static struct curl_slist *headers;
static atomic_long next_index, requests, transport_errors;
static atomic_long status_counts[STATUS_MAX];

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

static size_t discard(char *ptr, size_t size, size_t nmemb, void *userdata) {
        (void) ptr;
        (void) userdata;
        return size * nmemb;
}

static void *client(void *arg) {
        CURL *h = curl_easy_init();

        (void) arg;
        if (!h) {
                atomic_fetch_add(&transport_errors, 1);
                return NULL;
        }
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
        for (;;) {
                char body[256];
                long i, status = 0;

                if (deadline > 0 && now() >= deadline)
                        break;
                i = atomic_fetch_add(&next_index, 1);
                if (count > 0 && i >= count)
                        break;
                snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s-%07ld\"}]}", prefix, i);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                atomic_fetch_add(&requests, 1);
                if (curl_easy_perform(h) != CURLE_OK ||
                    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status <= 0 ||
                    status >= STATUS_MAX)
                        atomic_fetch_add(&transport_errors, 1);
                else
                        atomic_fetch_add(&status_counts[status], 1);
        }
        curl_easy_cleanup(h);
        return NULL;
}

static void usage(void) {
        fprintf(stderr, "usage: post-many [-H HEADER]... [-p PREFIX] [-d SECONDS] URL COUNT CLIENTS\n");
}

int main(int argc, char **argv) {
        pthread_t threads[CLIENTS_MAX];
        double seconds = 0, start, elapsed;
        long clients;
        int n_threads = 0, opt, n_headers = 0;
        char *end;

        while ((opt = getopt(argc, argv, "H:p:d:")) != -1)
                switch (opt) {
                case 'H':
                        if (++n_headers > HEADERS_MAX) {
                                fprintf(stderr, "post-many: at most %d headers\n", HEADERS_MAX);
                                return 2;
                        }
                        headers = curl_slist_append(headers, optarg);
                        break;
                case 'p':
                        if (strlen(optarg) > 64) {
                                fprintf(stderr, "post-many: -p: at most 64 characters\n");
                                return 2;
                        }
                        prefix = optarg;
                        break;
                case 'd':
                        seconds = strtod(optarg, &end);
                        if (*end || seconds <= 0) {
                                usage();
                                return 2;
                        }
                        break;
                default:
                        usage();
                        return 2;
                }
        if (argc - optind != 3) {
                usage();
                return 2;
        }
        url = argv[optind];
        count = strtol(argv[optind + 1], &end, 10);
        if (*end || count < 0 || (count == 0 && seconds == 0)) {
                usage();
                return 2;
        }
        clients = strtol(argv[optind + 2], &end, 10);
        if (*end || clients < 1 || clients > CLIENTS_MAX) {
                fprintf(stderr, "post-many: CLIENTS must be 1 to %d\n", CLIENTS_MAX);
                return 2;
        }
        headers = curl_slist_append(headers, "Content-Type: application/json");
        if (!headers || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                fprintf(stderr, "post-many: libcurl initialisation failed\n");
                return 1;
        }

        start = now();
        if (seconds > 0)
                deadline = start + seconds;
        for (long c = 0; c < clients; c++) {
                if (pthread_create(&threads[n_threads], NULL, client, NULL) != 0) {
                        fprintf(stderr, "post-many: cannot start thread %ld\n", c);
                        break;
                }
                n_threads++;
        }
        for (int c = 0; c < n_threads; c++)
                pthread_join(threads[c], NULL);
        elapsed = now() - start;

        printf("elapsed=%.3f requests=%ld", elapsed, atomic_load(&requests));
        for (int s = 0; s < STATUS_MAX; s++)
                if (atomic_load(&status_counts[s]) > 0)
                        printf(" s%d=%ld", s, atomic_load(&status_counts[s]));
        printf(" errors=%ld cpu=%.2f\n", atomic_load(&transport_errors), cpu_seconds());

        curl_slist_free_all(headers);
        curl_global_cleanup();
        return n_threads == clients ? 0 : 1;
}
