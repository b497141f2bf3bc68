/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Export runner (see runner.h). A run's request, as stored on its job, is
 * {"export": NAME, "query": "list", "format": "csv", "body": {...}}.
 */
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include "runner.h"

#define RUNNER_CHUNK (64 * 1024)

struct Runner {
        Store *store;
        Upstream *upstream;
        char *dir;
        runner_event_fn event;
        void *userdata;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        bool started, stopping, woken;
        bool store_trouble; /* an outcome could not be recorded (thread only) */
        usec_t run_started; /* the run in progress (thread only) */
        uint64_t run_bytes;
        Fleet *fleet; /* fleet mode: run only while this node holds the lane (set before start) */
};

void runner_result_path(const char *results_dir, int64_t job_id, ExportFormat format, char *buf, size_t len) {
        snprintf(buf, len, "%s/%lld.%s", results_dir, (long long) job_id, export_format_to_string(format));
}

static int64_t wall_ms(void) {
        return (int64_t) (clock_realtime() / USEC_PER_MSEC);
}

static void finish(Runner *rn, int64_t id, bool ok, long status, const char *error, const char *result) {
        if (store_begin_lane(rn->store) < 0)
                rn->store_trouble = true;
        else {
                store_job_finish(rn->store, id, ok ? JOB_SUCCEEDED : JOB_FAILED, status, error, ok ? 200 : status,
                                 result);
                if (store_end(rn->store, true) < 0)
                        rn->store_trouble = true;
        }
        if (rn->event)
                rn->event(rn->userdata, &(RunnerEvent) { .job_id = id, .ok = ok, .message = error,
                                                          .bytes = rn->run_bytes,
                                                          .duration = clock_now() - rn->run_started });
}

static void run_one(Runner *rn, int64_t id, const char *request) {
        char err[UPSTREAM_ERROR_MAX] = "", path[512], tmp[600], accept[64], upath[64], msg[UPSTREAM_ERROR_MAX + 700];
        const char *headers[3];
        json_t *req = json_loads(request, 0, NULL);
        const char *query = json_string_value(json_object_get(req, "query"));
        ExportFormat format = export_format_from_string(json_string_value(json_object_get(req, "format")));
        char *body = json_dumps(json_object_get(req, "body"), JSON_COMPACT), *content_type = NULL, *buf = NULL;
        UpstreamStream *st = NULL;
        long status = 0;
        uint64_t bytes = 0;
        int fd = -1, r;
        ssize_t n;

        rn->run_started = clock_now();
        rn->run_bytes = 0;
        if (!req || !query || format < 0 || !body) {
                finish(rn, id, false, 0, "the run's request is damaged", NULL);
                goto out;
        }
        runner_result_path(rn->dir, id, format, path, sizeof(path));
        snprintf(tmp, sizeof(tmp), "%s.partial", path);
        snprintf(accept, sizeof(accept), "Accept: %s", export_format_media_type(format));
        snprintf(upath, sizeof(upath), "/v1/data/query/%s", query);
        headers[0] = accept;
        headers[1] = "Content-Type: application/json";
        headers[2] = NULL;
        r = upstream_stream_open(rn->upstream,
                                 &(UpstreamRequest) { .endpoint = upath, .method = "POST", .path = upath,
                                                      .headers = headers, .body = body, .body_len = strlen(body),
                                                      .idempotent = true, .background = true },
                                 &st, &status, &content_type, err, sizeof(err));
        if (r < 0) {
                if (r == -ENOKEY || r == -EBUSY) { /* not sent: try again shortly, no harm done */
                        if (store_begin_lane(rn->store) < 0)
                                rn->store_trouble = true;
                        else {
                                store_job_requeue(rn->store, id, false, wall_ms() + 5000, false, false, 0, err);
                                if (store_end(rn->store, true) < 0)
                                        rn->store_trouble = true;
                        }
                        goto out;
                }
                finish(rn, id, false, 0, err, NULL);
                goto out;
        }
        if (status != 200) {
                char small[2048];
                size_t len = 0;
                while (len < sizeof(small) - 1 && (n = upstream_stream_read(st, small + len, sizeof(small) - 1 - len)) > 0)
                        len += (size_t) n;
                small[len] = '\0';
                snprintf(msg, sizeof(msg), "Visier answered %ld", status);
                {
                        json_t *parsed = json_loads(small, 0, NULL);
                        finish(rn, id, false, status, msg, parsed ? small : NULL);
                        json_decref(parsed);
                }
                goto out;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        buf = malloc(RUNNER_CHUNK);
        if (fd < 0 || !buf) {
                snprintf(msg, sizeof(msg), "cannot write %s: %s", tmp, strerror(errno));
                finish(rn, id, false, 0, msg, NULL);
                goto out;
        }
        while ((n = upstream_stream_read(st, buf, RUNNER_CHUNK)) > 0) {
                if (__atomic_load_n(&rn->stopping, __ATOMIC_RELAXED)) {
                        /* Shutdown: cut the run short and queue it again, so the stop stays
                         * within its bound however large the export. */
                        unlink(tmp);
                        if (store_begin_lane(rn->store) < 0)
                                rn->store_trouble = true;
                        else {
                                store_job_requeue(rn->store, id, false, wall_ms(), false, false, 0,
                                                  "cut short by shutdown; runs again at the next start");
                                if (store_end(rn->store, true) < 0)
                                        rn->store_trouble = true;
                        }
                        goto out;
                }
                for (ssize_t off = 0; off < n;) {
                        ssize_t w = write(fd, buf + off, (size_t) (n - off));
                        if (w < 0) {
                                snprintf(msg, sizeof(msg), "cannot write %s: %s", tmp, strerror(errno));
                                finish(rn, id, false, 0, msg, NULL);
                                unlink(tmp);
                                goto out;
                        }
                        off += w;
                }
                bytes += (uint64_t) n;
                rn->run_bytes = bytes;
        }
        if (n < 0 || fsync(fd) < 0) {
                finish(rn, id, false, status, n < 0 ? "Visier's answer broke off before its end" : strerror(errno), NULL);
                unlink(tmp);
                goto out;
        }
        if (rename(tmp, path) < 0) {
                snprintf(msg, sizeof(msg), "cannot rename %s: %s", tmp, strerror(errno));
                finish(rn, id, false, 0, msg, NULL);
                unlink(tmp);
                goto out;
        }
        {
                json_t *res = json_pack("{s:s, s:s, s:I, s:s}", "export", json_string_value(json_object_get(req, "export")),
                                        "format", export_format_to_string(format), "bytes", (json_int_t) bytes,
                                        "content_type", export_format_media_type(format));
                char *text = json_dumps(res, JSON_COMPACT);
                finish(rn, id, true, status, NULL, text);
                free(text);
                json_decref(res);
        }
out:
        if (fd >= 0)
                close(fd);
        upstream_stream_close(st);
        free(content_type);
        free(buf);
        free(body);
        json_decref(req);
}

/* Remove result files whose jobs are gone (pruned), and partial files of interrupted runs. */
static void sweep_results(Runner *rn) {
        DIR *d = opendir(rn->dir);
        struct dirent *de;

        while (d && (de = readdir(d))) {
                char *end, p[1024];
                long long id = strtoll(de->d_name, &end, 10);

                if (de->d_name[0] == '.' || end == de->d_name || *end != '.')
                        continue;
                int exists = store_job_exists(rn->store, id);

                if (exists < 0)
                        break; /* the database cannot tell: keep everything */
                if (!exists || strstr(end, ".partial")) {
                        if (exists && store_job_state(rn->store, id) == JOB_RUNNING)
                                continue;
                        snprintf(p, sizeof(p), "%s/%s", rn->dir, de->d_name);
                        unlink(p);
                }
        }
        if (d)
                closedir(d);
}

static void *runner_thread(void *arg) {
        Runner *rn = arg;
        usec_t last_sweep = 0;

        /* Fleet mode: the publisher queues the runs left running again when it takes a term
         * (other nodes' runs may be running now); this node runs exports only while it holds
         * the lane, under its term (the store's fence). */
        if (!rn->fleet)
                store_export_requeue_orphans(rn->store);
        pthread_mutex_lock(&rn->lock);
        while (!__atomic_load_n(&rn->stopping, __ATOMIC_RELAXED)) {
                int64_t id = 0;
                char *request = NULL;
                struct timespec ts;
                bool may_run;

                pthread_mutex_unlock(&rn->lock);
                may_run = !rn->fleet || fleet_lane_usable(rn->fleet, clock_now(), NULL);
                if (may_run && rn->store_trouble && store_export_requeue_orphans(rn->store) >= 0)
                        rn->store_trouble = false; /* idle now: any run marked running is an orphan */
                if (clock_now() - last_sweep > RUNNER_RESULT_SWEEP) {
                        sweep_results(rn);
                        last_sweep = clock_now();
                }
                if (may_run && store_export_claim(rn->store, wall_ms(), &id, &request) >= 0 && id > 0) {
                        run_one(rn, id, request);
                        free(request);
                        pthread_mutex_lock(&rn->lock);
                        continue;
                }
                pthread_mutex_lock(&rn->lock);
                if (!rn->woken && !__atomic_load_n(&rn->stopping, __ATOMIC_RELAXED)) {
                        clock_gettime(CLOCK_MONOTONIC, &ts);
                        ts.tv_sec += 1;
                        pthread_cond_timedwait(&rn->cond, &rn->lock, &ts);
                }
                rn->woken = false;
        }
        pthread_mutex_unlock(&rn->lock);
        return NULL;
}

int runner_new(Store *store, Upstream *upstream, const char *results_dir, runner_event_fn event, void *userdata,
               Runner **ret) {
        pthread_condattr_t attr;
        Runner *rn;

        if (mkdir(results_dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        rn = calloc(1, sizeof(*rn));
        if (!rn)
                return -ENOMEM;
        rn->dir = strdup(results_dir);
        if (!rn->dir) {
                free(rn);
                return -ENOMEM;
        }
        rn->store = store;
        rn->upstream = upstream;
        rn->event = event;
        rn->userdata = userdata;
        pthread_mutex_init(&rn->lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&rn->cond, &attr);
        pthread_condattr_destroy(&attr);
        *ret = rn;
        return 0;
}

void runner_set_fleet(Runner *rn, Fleet *fleet) {
        assert(rn && !rn->started);
        rn->fleet = fleet;
}

int runner_start(Runner *rn) {
        int r = pthread_create(&rn->thread, NULL, runner_thread, rn);

        if (r != 0)
                return -r;
        rn->started = true;
        return 0;
}

void runner_stop(Runner *rn) {
        pthread_mutex_lock(&rn->lock);
        __atomic_store_n(&rn->stopping, true, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&rn->cond);
        pthread_mutex_unlock(&rn->lock);
}

Runner *runner_free(Runner *rn) {
        if (!rn)
                return NULL;
        runner_stop(rn);
        if (rn->started)
                pthread_join(rn->thread, NULL);
        pthread_cond_destroy(&rn->cond);
        pthread_mutex_destroy(&rn->lock);
        free(rn->dir);
        free(rn);
        return NULL;
}

void runner_wake(Runner *rn) {
        pthread_mutex_lock(&rn->lock);
        rn->woken = true;
        pthread_cond_signal(&rn->cond);
        pthread_mutex_unlock(&rn->lock);
}
