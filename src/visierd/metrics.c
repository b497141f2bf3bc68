/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metrics (see metrics.h).
 *
 * DESIGN: labelled counters live in small fixed tables searched linearly under one mutex;
 * with route patterns and status codes as labels they hold a few dozen series. A table that
 * fills up counts further series under the label value "other" rather than growing. Label
 * values come only from closed sets — route patterns, visierd's own status codes, the HTTP
 * methods visierd knows, with any other method counted as "other" before it is counted at all
 * — so no request can add series; and every value is escaped on output all the same.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "jobs.h"
#include "metrics.h"

#define LABEL_MAX 96

static const double latency_buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
static const double items_buckets[] = { 1, 10, 50, 100, 250, 500, 1000 };
static const double local_latency_buckets[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                 0.025,  0.05,    0.1,    0.25,  1,      5,     30 };

typedef struct Series {
        char a[LABEL_MAX], b[LABEL_MAX], c[24];
        uint64_t count;
} Series;

typedef struct Table {
        Series series[METRICS_SERIES_MAX];
        size_t n;
} Table;

typedef struct Histogram {
        uint64_t buckets[16];
        uint64_t count;
        double sum;
} Histogram;

/* Local request latency per route: the routes seen first get a histogram each, the rest share
 * the last one ("other"). */
#define ROUTE_HISTOGRAMS 64

typedef struct RouteHistogram {
        char route[LABEL_MAX];
        Histogram h;
} RouteHistogram;

struct Metrics {
        pthread_mutex_t lock;
        Table requests; /* method, route, status */
        RouteHistogram latency[ROUTE_HISTOGRAMS];
        size_t n_latency;
        Table upstream; /* endpoint, status */
        Histogram upstream_latency;
        Histogram write_items;
        uint64_t write_calls, overlaps_prevented;
        uint64_t signins[2]; /* refused, started */
        uint64_t auth_failures[_METRICS_AUTH_MAX];
        uint64_t refusals[_METRICS_REFUSED_MAX];
        uint64_t export_runs[2], export_bytes; /* failed, succeeded */
        Histogram export_duration;
};

int metrics_new(Metrics **ret) {
        Metrics *m = calloc(1, sizeof(*m));

        if (!m)
                return -ENOMEM;
        pthread_mutex_init(&m->lock, NULL);
        *ret = m;
        return 0;
}

Metrics *metrics_free(Metrics *m) {
        if (!m)
                return NULL;
        pthread_mutex_destroy(&m->lock);
        free(m);
        return NULL;
}

static void table_inc(Table *t, const char *a, const char *b, const char *c) {
        for (size_t i = 0; i < t->n; i++)
                if (streq(t->series[i].a, a) && streq(t->series[i].b, b) && streq(t->series[i].c, c)) {
                        t->series[i].count++;
                        return;
                }
        if (t->n >= METRICS_SERIES_MAX - 1) {
                /* The last slot collects whatever does not fit. */
                Series *o = &t->series[METRICS_SERIES_MAX - 1];
                snprintf(o->a, sizeof(o->a), "other");
                snprintf(o->b, sizeof(o->b), "other");
                snprintf(o->c, sizeof(o->c), "other");
                o->count++;
                t->n = METRICS_SERIES_MAX;
                return;
        }
        snprintf(t->series[t->n].a, LABEL_MAX, "%s", a);
        snprintf(t->series[t->n].b, LABEL_MAX, "%s", b);
        snprintf(t->series[t->n].c, sizeof(t->series[t->n].c), "%s", c);
        t->series[t->n].count = 1;
        t->n++;
}

static void histogram_observe(Histogram *h, const double *bounds, size_t n, double v) {
        for (size_t i = 0; i < n; i++)
                if (v <= bounds[i])
                        h->buckets[i]++;
        h->count++;
        h->sum += v;
}

/* A request's method as a label: one of the methods visierd knows, or "other". */
static const char *method_label(const char *method) {
        static const char *const known[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS" };

        for (size_t i = 0; method && i < ELEMENTSOF(known); i++)
                if (streq(method, known[i]))
                        return known[i];
        return "other";
}

static Histogram *route_histogram_locked(Metrics *m, const char *route) {
        size_t i;

        for (i = 0; i < m->n_latency; i++)
                if (streq(m->latency[i].route, route))
                        return &m->latency[i].h;
        if (m->n_latency < ROUTE_HISTOGRAMS - 1 || (m->n_latency == ROUTE_HISTOGRAMS - 1 && streq(route, "other"))) {
                snprintf(m->latency[m->n_latency].route, LABEL_MAX, "%s", route);
                return &m->latency[m->n_latency++].h;
        }
        return route_histogram_locked(m, "other");
}

void metrics_local_request(Metrics *m, const char *method, const char *route, const char *latency_route, unsigned status,
                           usec_t latency) {
        char s[24];

        snprintf(s, sizeof(s), "%u", status);
        pthread_mutex_lock(&m->lock);
        table_inc(&m->requests, method_label(method), route, s);
        histogram_observe(route_histogram_locked(m, latency_route), local_latency_buckets, ELEMENTSOF(local_latency_buckets),
                          (double) latency / (double) USEC_PER_SEC);
        pthread_mutex_unlock(&m->lock);
}

/* A label value as the exposition format spells it: backslash, double quote and newline
 * escaped; other control bytes and bytes beyond ASCII (never in visierd's own labels) as '?',
 * so the text stays valid UTF-8 whatever came in. */
static void label_write(FILE *f, const char *v) {
        for (const unsigned char *c = (const unsigned char *) v; *c; c++)
                if (*c == '\\' || *c == '"')
                        fprintf(f, "\\%c", *c);
                else if (*c == '\n')
                        fputs("\\n", f);
                else if (*c < 0x20 || *c >= 0x7f)
                        fputc('?', f);
                else
                        fputc(*c, f);
}

void metrics_upstream_call(Metrics *m, const char *endpoint, long status, usec_t latency) {
        char s[24];

        if (status > 0)
                snprintf(s, sizeof(s), "%ld", status);
        else
                snprintf(s, sizeof(s), "error");
        pthread_mutex_lock(&m->lock);
        table_inc(&m->upstream, endpoint, s, "");
        histogram_observe(&m->upstream_latency, latency_buckets, ELEMENTSOF(latency_buckets),
                          (double) latency / (double) USEC_PER_SEC);
        pthread_mutex_unlock(&m->lock);
}

void metrics_write_call(Metrics *m, size_t items) {
        pthread_mutex_lock(&m->lock);
        m->write_calls++;
        histogram_observe(&m->write_items, items_buckets, ELEMENTSOF(items_buckets), (double) items);
        pthread_mutex_unlock(&m->lock);
}

void metrics_overlap_prevented(Metrics *m) {
        pthread_mutex_lock(&m->lock);
        m->overlaps_prevented++;
        pthread_mutex_unlock(&m->lock);
}

void metrics_signin(Metrics *m, bool ok) {
        pthread_mutex_lock(&m->lock);
        m->signins[ok]++;
        pthread_mutex_unlock(&m->lock);
}

void metrics_auth_failure(Metrics *m, MetricsAuthFailure reason) {
        if (reason < 0 || reason >= _METRICS_AUTH_MAX)
                return;
        pthread_mutex_lock(&m->lock);
        m->auth_failures[reason]++;
        pthread_mutex_unlock(&m->lock);
}

static const double export_buckets[] = { 1, 5, 15, 60, 300, 900, 3600, 14400 };

void metrics_export_run(Metrics *m, bool ok, uint64_t bytes, usec_t duration) {
        pthread_mutex_lock(&m->lock);
        m->export_runs[ok]++;
        m->export_bytes += bytes;
        histogram_observe(&m->export_duration, export_buckets, ELEMENTSOF(export_buckets),
                          (double) duration / (double) USEC_PER_SEC);
        pthread_mutex_unlock(&m->lock);
}

void metrics_refusal(Metrics *m, MetricsRefusal reason) {
        if (reason < 0 || reason >= _METRICS_REFUSED_MAX)
                return;
        pthread_mutex_lock(&m->lock);
        m->refusals[reason]++;
        pthread_mutex_unlock(&m->lock);
}

static void header(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The metadata cache's counters (docs/architecture.md, "Metadata cache"). */
static void cache_render(FILE *f, const CacheStats *s) {
        const struct {
                const char *name, *type, *help;
                uint64_t value;
        } rows[] = {
                { "visierd_cache_hits_total", "counter", "Proxied reads answered from the metadata cache.", s->hits },
                { "visierd_cache_misses_total", "counter",
                  "Proxied reads of a cacheable answer that called Visier (nothing fresh stored, or the client "
                  "asked for a refresh).", s->misses },
                { "visierd_cache_collapsed_total", "counter",
                  "Proxied reads that waited for another read's call to Visier of the same request.", s->collapsed },
                { "visierd_cache_bypasses_total", "counter",
                  "Proxied reads the cache does not handle (route or class not cached, cache off, no-store).",
                  s->bypasses },
                { "visierd_cache_upstream_calls_saved_total", "counter",
                  "Calls to Visier the cache saved (hits plus collapsed reads).", s->saved },
                { "visierd_cache_stored_total", "counter", "Answers stored in the metadata cache.", s->stored },
                { "visierd_cache_evictions_total", "counter", "Stored answers dropped to make room (LRU).", s->evictions },
                { "visierd_cache_expirations_total", "counter", "Stored answers dropped past their TTL.", s->expirations },
                { "visierd_cache_invalidations_total", "counter",
                  "Stored answers dropped because visierd wrote what they show.", s->invalidations },
                { "visierd_cache_bytes", "gauge", "Memory held by stored answers, in bytes.", s->bytes },
                { "visierd_cache_max_bytes", "gauge", "The cache's memory bound ([cache] max_bytes).", s->max_bytes },
                { "visierd_cache_entries", "gauge", "Stored answers.", s->entries },
                { "visierd_cache_flights", "gauge", "Shared calls to Visier in progress for the cache.", s->flights },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                header(f, rows[i].name, rows[i].type, rows[i].help);
                fprintf(f, "%s %llu\n", rows[i].name, (unsigned long long) rows[i].value);
        }
        header(f, "visierd_cache_not_stored_total", "counter",
               "200 answers not stored, by reason: too big for the cache, or outdated by a write while in flight.");
        fprintf(f, "visierd_cache_not_stored_total{reason=\"oversize\"} %llu\n",
                (unsigned long long) s->not_stored_oversize);
        fprintf(f, "visierd_cache_not_stored_total{reason=\"stale\"} %llu\n", (unsigned long long) s->not_stored_stale);
}

static void histogram_render(FILE *f, const char *name, const Histogram *h, const double *bounds, size_t n) {
        for (size_t i = 0; i < n; i++)
                fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long) h->buckets[i]);
        fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long) h->count);
        fprintf(f, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long) h->count);
}

/* When the machine booted, in seconds since the epoch (/proc/stat btime), or 0. */
static unsigned long long boot_time(void) {
        unsigned long long btime = 0;
        char line[256];
        FILE *f = fopen("/proc/stat", "re");

        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "btime %llu", &btime) == 1)
                        break;
        if (f)
                fclose(f);
        return btime;
}

/* The process_* metrics client libraries export, from /proc/self at scrape time, and the
 * process's threads. A value that cannot be read is left out. */
static void process_render(FILE *f) {
        long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
        unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
        long long rss = 0, threads = 0;
        char buf[1024], *p;
        struct rlimit nofile;
        FILE *st = fopen("/proc/self/stat", "re");
        size_t n = st ? fread(buf, 1, sizeof(buf) - 1, st) : 0;
        int fds = 0;
        DIR *d;

        if (st)
                fclose(st);
        buf[n] = '\0';
        /* After the command's closing parenthesis: state is field 3; utime 14, stime 15,
         * num_threads 20, starttime 22, vsize 23, rss 24. */
        p = strrchr(buf, ')');
        if (p && ticks > 0 &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %lld %*d %llu %llu %lld",
                   &utime, &stime, &threads, &start, &vsize, &rss) == 6) {
                header(f, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
                fprintf(f, "process_cpu_seconds_total %.2f\n", (double) (utime + stime) / (double) ticks);
                header(f, "process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.");
                fprintf(f, "process_resident_memory_bytes %lld\n", rss * page);
                header(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.");
                fprintf(f, "process_virtual_memory_bytes %llu\n", vsize);
                unsigned long long btime = boot_time();

                if (btime > 0) {
                        header(f, "process_start_time_seconds", "gauge", "Start time since the Unix epoch, in seconds.");
                        fprintf(f, "process_start_time_seconds %.2f\n", (double) btime + (double) start / (double) ticks);
                }
                header(f, "visierd_threads", "gauge", "Threads of the process.");
                fprintf(f, "visierd_threads %lld\n", threads);
        }
        d = opendir("/proc/self/fd");
        if (d) {
                for (struct dirent *e; (e = readdir(d));)
                        fds += e->d_name[0] != '.';
                closedir(d);
                header(f, "process_open_fds", "gauge", "Open file descriptors.");
                fprintf(f, "process_open_fds %d\n", fds - 1); /* less the one reading the directory */
        }
        if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
                header(f, "process_max_fds", "gauge", "Most open file descriptors allowed.");
                fprintf(f, "process_max_fds %llu\n", (unsigned long long) nofile.rlim_cur);
        }
}

char *metrics_render(Metrics *m, const MetricsGauges *g, size_t *ret_len) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return NULL;
        pthread_mutex_lock(&m->lock);
        header(f, "visierd_http_requests_total", "counter", "Local API requests by method, route and status.");
        for (size_t i = 0; i < m->requests.n; i++) {
                fputs("visierd_http_requests_total{method=\"", f);
                label_write(f, m->requests.series[i].a);
                fputs("\",route=\"", f);
                label_write(f, m->requests.series[i].b);
                fputs("\",status=\"", f);
                label_write(f, m->requests.series[i].c);
                fprintf(f, "\"} %llu\n", (unsigned long long) m->requests.series[i].count);
        }
        header(f, "visierd_http_request_duration_seconds", "histogram",
               "Local API requests from their head's arrival to their answer, by route.");
        for (size_t i = 0; i < m->n_latency; i++) {
                const Histogram *h = &m->latency[i].h;

                for (size_t b = 0; b < ELEMENTSOF(local_latency_buckets); b++) {
                        fputs("visierd_http_request_duration_seconds_bucket{route=\"", f);
                        label_write(f, m->latency[i].route);
                        fprintf(f, "\",le=\"%g\"} %llu\n", local_latency_buckets[b], (unsigned long long) h->buckets[b]);
                }
                fputs("visierd_http_request_duration_seconds_bucket{route=\"", f);
                label_write(f, m->latency[i].route);
                fprintf(f, "\",le=\"+Inf\"} %llu\n", (unsigned long long) h->count);
                fputs("visierd_http_request_duration_seconds_sum{route=\"", f);
                label_write(f, m->latency[i].route);
                fprintf(f, "\"} %.6f\n", h->sum);
                fputs("visierd_http_request_duration_seconds_count{route=\"", f);
                label_write(f, m->latency[i].route);
                fprintf(f, "\"} %llu\n", (unsigned long long) h->count);
        }
        header(f, "visierd_upstream_requests_total", "counter",
               "Calls to Visier by endpoint and status (\"error\": no HTTP answer).");
        for (size_t i = 0; i < m->upstream.n; i++) {
                fputs("visierd_upstream_requests_total{endpoint=\"", f);
                label_write(f, m->upstream.series[i].a);
                fputs("\",status=\"", f);
                label_write(f, m->upstream.series[i].b);
                fprintf(f, "\"} %llu\n", (unsigned long long) m->upstream.series[i].count);
        }
        header(f, "visierd_upstream_request_duration_seconds", "histogram", "Duration of calls to Visier.");
        histogram_render(f, "visierd_upstream_request_duration_seconds", &m->upstream_latency, latency_buckets,
                         ELEMENTSOF(latency_buckets));
        header(f, "visierd_write_calls_total", "counter", "Permission write calls sent to Visier.");
        fprintf(f, "visierd_write_calls_total %llu\n", (unsigned long long) m->write_calls);
        header(f, "visierd_write_call_items", "histogram", "Permission changes per write call.");
        histogram_render(f, "visierd_write_call_items", &m->write_items, items_buckets, ELEMENTSOF(items_buckets));
        header(f, "visierd_publish_overlaps_prevented_total", "counter",
               "Permission writes that arrived while a write call was in flight (each would have been an "
               "overlapping publish).");
        fprintf(f, "visierd_publish_overlaps_prevented_total %llu\n", (unsigned long long) m->overlaps_prevented);
        header(f, "visierd_signins_total", "counter",
               "Local sign-ins (visierSecureToken, oauth2/token) by result: ok started a session, refused had "
               "wrong credentials.");
        fprintf(f, "visierd_signins_total{result=\"ok\"} %llu\n", (unsigned long long) m->signins[1]);
        fprintf(f, "visierd_signins_total{result=\"refused\"} %llu\n", (unsigned long long) m->signins[0]);
        header(f, "visierd_export_runs_total", "counter", "Export runs that ended, by result.");
        fprintf(f, "visierd_export_runs_total{result=\"succeeded\"} %llu\n", (unsigned long long) m->export_runs[1]);
        fprintf(f, "visierd_export_runs_total{result=\"failed\"} %llu\n", (unsigned long long) m->export_runs[0]);
        header(f, "visierd_export_run_bytes_total", "counter", "Bytes export runs wrote to their results.");
        fprintf(f, "visierd_export_run_bytes_total %llu\n", (unsigned long long) m->export_bytes);
        header(f, "visierd_export_run_duration_seconds", "histogram", "Duration of export runs.");
        histogram_render(f, "visierd_export_run_duration_seconds", &m->export_duration, export_buckets,
                         ELEMENTSOF(export_buckets));
        header(f, "visierd_refused_requests_total", "counter",
               "Requests refused 503 because a limit was reached: max_connections, max_held_requests or "
               "max_connections_per_client ([listen]).");
        {
                static const char *const limits[_METRICS_REFUSED_MAX] = { "max_connections", "max_held_requests",
                                                                          "max_connections_per_client" };

                for (int i = 0; i < _METRICS_REFUSED_MAX; i++)
                        fprintf(f, "visierd_refused_requests_total{limit=\"%s\"} %llu\n", limits[i],
                                (unsigned long long) m->refusals[i]);
        }
        header(f, "visierd_auth_failures_total", "counter",
               "Requests refused 401 by reason: missing (no credential where one is required), invalid (a token or "
               "session not valid), expired (a session past its lifetime).");
        {
                static const char *const reasons[_METRICS_AUTH_MAX] = { "missing", "invalid", "expired" };

                for (int i = 0; i < _METRICS_AUTH_MAX; i++)
                        fprintf(f, "visierd_auth_failures_total{reason=\"%s\"} %llu\n", reasons[i],
                                (unsigned long long) m->auth_failures[i]);
        }
        pthread_mutex_unlock(&m->lock);

        header(f, "visierd_logins_total", "counter", "Successful logins to Visier.");
        fprintf(f, "visierd_logins_total %llu\n", (unsigned long long) g->logins);
        header(f, "visierd_login_failures_total", "counter", "Failed logins to Visier.");
        fprintf(f, "visierd_login_failures_total %llu\n", (unsigned long long) g->login_failures);
        header(f, "visierd_token_expiry_seconds", "gauge", "Seconds until the current token expires (0 without one).");
        fprintf(f, "visierd_token_expiry_seconds %.3f\n", g->token_expires_in);
        header(f, "visierd_rate_budget_remaining", "gauge", "Calls left in the rate budget by window.");
        fprintf(f, "visierd_rate_budget_remaining{window=\"minute\"} %u\n", g->budget_minute);
        fprintf(f, "visierd_rate_budget_remaining{window=\"hour\"} %u\n", g->budget_hour);
        header(f, "visierd_jobs", "gauge", "Jobs in the job store by state.");
        for (int s = 0; s < _JOB_STATE_MAX && s < (int) ELEMENTSOF(g->jobs); s++)
                fprintf(f, "visierd_jobs{state=\"%s\"} %lld\n", job_state_to_string((JobState) s), (long long) g->jobs[s]);
        header(f, "visierd_oldest_queued_job_age_seconds", "gauge", "Age of the oldest queued job (0 when none).");
        fprintf(f, "visierd_oldest_queued_job_age_seconds %.3f\n", g->oldest_queued_age > 0 ? g->oldest_queued_age : 0.0);
        if (g->cache)
                cache_render(f, g->cache);
        process_render(f);
        header(f, "visierd_build_info", "gauge", "Build information.");
        fprintf(f, "visierd_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        *ret_len = len;
        return buf;
}
