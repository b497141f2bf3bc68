/* SPDX-License-Identifier: Apache-2.0 */
/*
 * post-many: a benchmark client that POSTs single-permission creates from many threads.
 *
 * Each of CLIENTS threads keeps one libcurl handle (one keep-alive connection) and POSTs
 * {"permissions":[{"displayName":"PREFIX-N"}]} with a unique N taken from a shared counter,
 * until COUNT creates were sent or, with -d, until SECONDS have passed (COUNT 0 = no cap).
 * It prints one line of key=value pairs: elapsed seconds (start to the last answer), the
 * requests made, the count of each HTTP status seen, transport errors, and its own CPU
 * seconds (user + system), since on a small machine the client competes with the server, and
 * the latency of the answered requests (p50, p99, max in milliseconds; the first LATENCIES_MAX
 * requests).
 *
 *   post-many [-H HEADER]... [-p PREFIX] [-d SECONDS] URL COUNT CLIENTS
 *   post-many -m IDS_FILE [-H HEADER]... [-p PREFIX] BASE_URL COUNT CLIENTS
 *   post-many -g IDS_FILE [-H HEADER]... [-d SECONDS] BASE_URL COUNT CLIENTS
 *
 * URL (or BASE_URL) may be several, separated by commas, for several servers: thread k uses
 * the (k mod n)th, so the clients are spread evenly over them.
 *
 * With -m, request N is the (N mod 4)th of a mixed stream on distinct permissions: a create
 * (POST BASE_URL/v1/admin/permissions), an update of ID 3k, a delete of ID 3k+1 and a user
 * assignment (PUT BASE_URL/v1/admin/permissions/users) to ID 3k+2, k = N / 4, the IDs being
 * the lines of IDS_FILE (at least 3 * COUNT / 4 of them).
 *
 * With -g, request N is GET BASE_URL/jobs/ID, ID the (N mod lines)th line of IDS_FILE: job
 * status reads, as a client following its 202s makes them.
 *
 * A benchmark tool only: it never retries, and it must not be used as an example of how a
 * service should talk to visierd (that one should send an Idempotency-Key).
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
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
#define LATENCIES_MAX (1L << 21)
#define URLS_MAX 16

static const char *urls[URLS_MAX], *prefix = "bench";
static int n_urls;
static char **mixed_ids;     /* -m: permission IDs; -g: job IDs */
static long n_mixed_ids;
static int get_jobs;         /* -g */
static long count;           /* 0: no cap (needs -d) */
static double deadline;      /* 0: none */
static struct curl_slist *headers;
static atomic_long next_index, requests, transport_errors;
static atomic_long status_counts[STATUS_MAX];
static double *latencies; /* seconds, one per answered request */
static atomic_long n_latencies;

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
        const char *url = urls[(long) (intptr_t) arg % n_urls];
        CURL *h = curl_easy_init();

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
                double t0;

                if (get_jobs) {
                        char u[512];

                        snprintf(u, sizeof(u), "%s/jobs/%s", url, mixed_ids[i % n_mixed_ids]);
                        curl_easy_setopt(h, CURLOPT_URL, u);
                        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
                } else if (mixed_ids) {
                        static const char *const methods[] = { "POST", "PUT", "DELETE", "PUT" };
                        long k = i / 4;
                        char u[512];

                        if (3 * k + 2 >= n_mixed_ids)
                                break;
                        switch (i % 4) {
                        case 0:
                                snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s-%07ld\"}]}",
                                         prefix, k);
                                break;
                        case 1:
                                snprintf(body, sizeof(body),
                                         "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"%s-u-%07ld\"}]}",
                                         mixed_ids[3 * k], prefix, k);
                                break;
                        case 2:
                                snprintf(body, sizeof(body), "{\"permissionIds\":[\"%s\"]}", mixed_ids[3 * k + 1]);
                                break;
                        default:
                                snprintf(body, sizeof(body),
                                         "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-%03ld\"]}]}",
                                         mixed_ids[3 * k + 2], k % 1000);
                                break;
                        }
                        snprintf(u, sizeof(u), "%s%s", url,
                                 i % 4 == 3 ? "/v1/admin/permissions/users" : "/v1/admin/permissions");
                        curl_easy_setopt(h, CURLOPT_URL, u);
                        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, methods[i % 4]);
                } else
                        snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s-%07ld\"}]}", prefix, i);
                if (!get_jobs)
                        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                atomic_fetch_add(&requests, 1);
                t0 = now();
                if (curl_easy_perform(h) != CURLE_OK ||
                    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status <= 0 ||
                    status >= STATUS_MAX)
                        atomic_fetch_add(&transport_errors, 1);
                else {
                        long k = atomic_fetch_add(&n_latencies, 1);

                        if (k < LATENCIES_MAX)
                                latencies[k] = now() - t0;
                        atomic_fetch_add(&status_counts[status], 1);
                }
        }
        curl_easy_cleanup(h);
        return NULL;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, long n, double p) {
        long i = (long) (p * (double) (n - 1) + 0.5);

        return n > 0 ? sorted[i] : 0;
}

static void usage(void) {
        fprintf(stderr, "usage: post-many [-m IDS_FILE | -g IDS_FILE] [-H HEADER]... [-p PREFIX] [-d SECONDS] "
                        "URL[,URL...] COUNT CLIENTS\n");
}

int main(int argc, char **argv) {
        pthread_t threads[CLIENTS_MAX];
        double seconds = 0, start, elapsed;
        long clients;
        int n_threads = 0, opt, n_headers = 0;
        char *end;

        while ((opt = getopt(argc, argv, "H:p:d:m:g:")) != -1)
                switch (opt) {
                case 'g':
                        get_jobs = 1;
                        /* fall through */
                case 'm': {
                        FILE *f = fopen(optarg, "re");
                        char line[128];

                        if (!f) {
                                fprintf(stderr, "post-many: cannot open %s\n", optarg);
                                return 2;
                        }
                        while (fgets(line, sizeof(line), f)) {
                                char **n = realloc(mixed_ids, (size_t) (n_mixed_ids + 1) * sizeof(*n));

                                line[strcspn(line, "\r\n")] = '\0';
                                if (!n || !(n[n_mixed_ids] = strdup(line))) {
                                        fprintf(stderr, "post-many: out of memory\n");
                                        return 1;
                                }
                                mixed_ids = n;
                                n_mixed_ids++;
                        }
                        fclose(f);
                        break;
                }
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
        for (char *u = argv[optind], *comma; u; u = comma) {
                comma = strchr(u, ',');
                if (comma)
                        *comma++ = '\0';
                if (n_urls == URLS_MAX || !*u) {
                        fprintf(stderr, "post-many: 1 to %d URLs, separated by commas\n", URLS_MAX);
                        return 2;
                }
                urls[n_urls++] = u;
        }
        if (get_jobs && n_mixed_ids == 0) {
                fprintf(stderr, "post-many: -g: no job IDs\n");
                return 2;
        }
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
        latencies = calloc(LATENCIES_MAX, sizeof(*latencies));
        if (!latencies) {
                fprintf(stderr, "post-many: out of memory\n");
                return 1;
        }
        if (!headers || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                fprintf(stderr, "post-many: libcurl initialisation failed\n");
                return 1;
        }

        start = now();
        if (seconds > 0)
                deadline = start + seconds;
        for (long c = 0; c < clients; c++) {
                if (pthread_create(&threads[n_threads], NULL, client, (void *) (intptr_t) c) != 0) {
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
        {
                long n = atomic_load(&n_latencies);

                if (n > LATENCIES_MAX)
                        n = LATENCIES_MAX;
                qsort(latencies, (size_t) n, sizeof(*latencies), cmp_double);
                printf(" errors=%ld cpu=%.2f p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", atomic_load(&transport_errors),
                       cpu_seconds(), percentile(latencies, n, 0.50) * 1e3, percentile(latencies, n, 0.99) * 1e3,
                       n > 0 ? latencies[n - 1] * 1e3 : 0);
        }
        free(latencies);

        curl_slist_free_all(headers);
        curl_global_cleanup();
        return n_threads == clients ? 0 : 1;
}
