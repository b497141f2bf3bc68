/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one event loop (docs/architecture.md): a held request costs no thread, the ops routes
 * are answered while every other slot is held, requests past the caps get a 503 in Visier's
 * Status shape with Retry-After, and SIGTERM lets what is in progress finish (reads complete,
 * held writes get their 202, an export run is cut short and queued again) before exit 0.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"

static Sim sim;
static Visierd vd;

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

static const char *const unlimited[] = { "--rate-minute", "0", "--rate-hour", "0", NULL };
#define FAST "rate_limit_minute = 1000000\nrate_limit_hour = 100000000\nrequest_timeout = 30\n"

static void set_faults(const char *json) {
        json_decref(sim_control_post(&sim, "/_sim/faults", json));
}

static long threads_of(pid_t pid) {
        char path[64], *status, *p;
        long n = -1;

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        status = harness_read_file(path);
        ck_assert_ptr_nonnull(status);
        p = strstr(status, "\nThreads:");
        if (p)
                n = strtol(p + 9, NULL, 10);
        free(status);
        return n;
}

/* N concurrent requests on N connections from this one thread (curl multi). */
typedef struct Many {
        size_t n;
        CURL **h;
        CURLM *multi;
        HttpResult *res;
        struct curl_slist *headers;
        char **bodies;
} Many;

/* Each request creates one permission named NAME-i. */
static void many_start(Many *m, size_t n, const char *method, const char *path, const char *const *headers,
                       const char *name) {
        char *u = visierd_url(&vd, path);

        *m = (Many) { .n = n };
        m->h = calloc(n, sizeof(*m->h));
        m->res = calloc(n, sizeof(*m->res));
        m->bodies = calloc(n, sizeof(*m->bodies));
        m->multi = curl_multi_init();
        ck_assert(m->h && m->res && m->bodies && m->multi);
        for (const char *const *hd = headers; hd && *hd; hd++)
                m->headers = curl_slist_append(m->headers, *hd);
        m->headers = curl_slist_append(m->headers, "Content-Type: application/json");
        curl_multi_setopt(m->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) n + 1);
        for (size_t i = 0; i < n; i++) {
                m->h[i] = curl_easy_init();
                ck_assert_ptr_nonnull(m->h[i]);
                ck_assert_int_ge(asprintf(&m->bodies[i], "{\"permissions\":[{\"displayName\":\"%s-%zu\"}]}", name, i), 0);
                curl_easy_setopt(m->h[i], CURLOPT_URL, u);
                curl_easy_setopt(m->h[i], CURLOPT_CUSTOMREQUEST, method);
                if (!streq(method, "GET"))
                        curl_easy_setopt(m->h[i], CURLOPT_POSTFIELDS, m->bodies[i]);
                curl_easy_setopt(m->h[i], CURLOPT_HTTPHEADER, m->headers);
                curl_easy_setopt(m->h[i], CURLOPT_TIMEOUT_MS, 60000L);
                curl_easy_setopt(m->h[i], CURLOPT_NOSIGNAL, 1L);
                curl_easy_setopt(m->h[i], CURLOPT_WRITEFUNCTION, harness_body_write);
                curl_easy_setopt(m->h[i], CURLOPT_WRITEDATA, &m->res[i]);
                curl_easy_setopt(m->h[i], CURLOPT_FORBID_REUSE, 1L);
                curl_multi_add_handle(m->multi, m->h[i]);
        }
        free(u);
}

/* Drive the transfers for up to ms; true when all are done. */
static bool many_run(Many *m, long ms) {
        usec_t until = clock_now() + (usec_t) ms * USEC_PER_MSEC;
        int running = 1;

        while (running && clock_now() < until) {
                CURLMsg *msg;
                int left;

                curl_multi_perform(m->multi, &running);
                while ((msg = curl_multi_info_read(m->multi, &left)))
                        if (msg->msg == CURLMSG_DONE)
                                for (size_t i = 0; i < m->n; i++)
                                        if (m->h[i] == msg->easy_handle) {
                                                m->res[i].curl_error = (int) msg->data.result;
                                                curl_easy_getinfo(m->h[i], CURLINFO_RESPONSE_CODE, &m->res[i].status);
                                        }
                if (running)
                        curl_multi_poll(m->multi, NULL, 0, 20, NULL);
        }
        return running == 0;
}

static void many_done(Many *m) {
        for (size_t i = 0; i < m->n; i++) {
                curl_multi_remove_handle(m->multi, m->h[i]);
                curl_easy_cleanup(m->h[i]);
                free(m->res[i].body);
                free(m->bodies[i]);
        }
        curl_multi_cleanup(m->multi);
        curl_slist_free_all(m->headers);
        free(m->h);
        free(m->res);
        free(m->bodies);
}

static json_t *status_json(void) {
        char *u = visierd_url(&vd, "/status");
        json_t *j;
        long st;

        j = http_get_json(u, &st);
        free(u);
        ck_assert_int_eq(st, 200);
        return j;
}

static long get(const char *path, long timeout_ms) {
        char *u = visierd_url(&vd, path);
        HttpResult r;
        long status;

        http_request("GET", u, NULL, NULL, timeout_ms, &r);
        free(u);
        status = r.status;
        http_result_done(&r);
        return status;
}

/* 100 writes held (Prefer: wait) while Visier publishes slowly fill max_held_requests: the
 * next ones get 503 with Retry-After in Visier's Status shape, the probes are answered all
 * along, the number of threads does not move, and every held write ends with Visier's answer. */
START_TEST(test_holds_cost_no_thread) {
        static const char refused[] =
                "{\"code\":\"ServiceUnavailable\",\"message\":\"100 requests are in progress ([listen] "
                "max_held_requests); try again\",\"localizedMessage\":\"100 requests are in progress ([listen] "
                "max_held_requests); try again\",\"userError\":false}";
        const char *const wait[] = { "Prefer: wait=60", NULL };
        Many held, extra;
        long before, during;
        size_t ok = 0;

        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, FAST, "[listen]\nmax_held_requests = 100\n[jobs]\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        ck_assert_int_eq(get("/healthz", 5000), 200);
        before = threads_of(vd.pid);
        set_faults("{\"publish_ms\":3000}");

        many_start(&held, 100, "POST", "/v1/admin/permissions", wait, "held");
        /* Until all 100 are in (queued or running), with none answered. */
        for (int i = 0; i < 500; i++) {
                json_t *s;

                many_run(&held, 20);
                s = status_json();
                if (json_integer_value(json_object_get(json_object_get(s, "jobs"), "queued")) +
                            json_integer_value(json_object_get(json_object_get(s, "jobs"), "running")) >=
                    100) {
                        json_decref(s);
                        break;
                }
                json_decref(s);
        }
        for (size_t i = 0; i < held.n; i++)
                ck_assert_int_eq(held.res[i].status, 0); /* still held */

        many_start(&extra, 10, "POST", "/v1/admin/permissions", wait, "extra");
        ck_assert(many_run(&extra, 20000));
        for (size_t i = 0; i < extra.n; i++) {
                ck_assert_int_eq(extra.res[i].status, 503);
                ck_assert_str_eq(extra.res[i].body, refused);
        }
        /* Every slot for requests in progress is held: the probes are still answered. */
        for (int i = 0; i < 20; i++) {
                many_run(&held, 5);
                ck_assert_int_eq(get("/healthz", 5000), 200);
                ck_assert_int_eq(get("/readyz", 5000), 200);
        }
        ck_assert_int_eq(get("/metrics", 5000), 200);
        during = threads_of(vd.pid);
        ck_assert_msg(during == before, "%ld threads before the holds, %ld while 100 are held", before, during);
        for (size_t i = 0; i < held.n; i++)
                ck_assert_int_eq(held.res[i].status, 0);

        set_faults("{\"publish_ms\":0}");
        ck_assert(many_run(&held, 60000));
        for (size_t i = 0; i < held.n; i++) {
                json_t *j = json_loads(held.res[i].body ? held.res[i].body : "", 0, NULL);

                ck_assert_msg(held.res[i].status == 200, "held write %zu answered %ld: %s", i, held.res[i].status,
                              held.res[i].body);
                ok += json_array_size(json_object_get(j, "successes")) == 1;
                json_decref(j);
        }
        ck_assert_int_eq(ok, 100);
        /* The refused ones queued nothing. */
        visierd_wait_drained(&vd, 60);
        {
                json_t *s = status_json();
                ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(s, "jobs"), "succeeded")), 100);
                json_decref(s);
        }
        many_done(&held);
        many_done(&extra);
}
END_TEST

/* ---- the metadata cache ---- */

/* One raw GET; the whole answer, headers included (caller frees). */
static char *raw_get(const char *path, const char *extra_header) {
        char req[512], *out = calloc(1, 65536);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) vd.port) };
        size_t len = 0;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert(fd >= 0 && out);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n%sConnection: close\r\n\r\n", path,
                 extra_header ? extra_header : "");
        ck_assert_int_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t) strlen(req));
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;

                if (poll(&p, 1, 20000) <= 0)
                        break;
                n = recv(fd, out + len, 65535 - len, 0);
                if (n <= 0)
                        break;
                len += (size_t) n;
        }
        close(fd);
        return out;
}

/* Many readers of one key make one upstream call (single flight, then hits); a hit says so
 * (Cache-Status, Age); Cache-Control: no-cache fetches anew; and after a write through
 * visierd ends, no read shows the list from before it (read-your-writes), 20 times over. */
START_TEST(test_cache_coherent) {
        const char *const wait[] = { "Prefer: wait=30", NULL };
        Many readers;
        char *a, name[64];
        long st;

        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, FAST, "[cache]\nmax_bytes = 67108864\n");
        visierd_wait_ready(&vd);

        many_start(&readers, 50, "GET", "/v1/admin/capabilities", NULL, "unused");
        ck_assert(many_run(&readers, 30000));
        for (size_t i = 0; i < readers.n; i++)
                ck_assert_int_eq(readers.res[i].status, 200);
        for (size_t i = 1; i < readers.n; i++)
                ck_assert_str_eq(readers.res[i].body, readers.res[0].body);
        many_done(&readers);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 1);

        a = raw_get("/v1/admin/capabilities", NULL);
        ck_assert_msg(strncmp(a, "HTTP/1.1 200 ", 13) == 0, "%s", a);
        ck_assert_msg(strstr(a, "\r\nCache-Status: visierd; hit; ttl=") != NULL, "%s", a);
        ck_assert_ptr_nonnull(strstr(a, "\r\nAge: "));
        free(a);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 1);
        a = raw_get("/v1/admin/capabilities", "Cache-Control: no-cache\r\n");
        ck_assert_ptr_nonnull(strstr(a, "\r\nCache-Status: visierd; fwd=request; fwd-status=200; stored; ttl="));
        free(a);
        ck_assert_int_eq(sim_calls(&sim, "/v1/admin/capabilities"), 2);
        /* The metrics count what the cache saved: 49 followers or hits of the first 50, the hit. */
        {
                char *mu = visierd_url(&vd, "/metrics");
                HttpResult mr;
                const char *p;

                http_request("GET", mu, NULL, NULL, 10000, &mr);
                free(mu);
                ck_assert_int_eq(mr.status, 200);
                p = strstr(mr.body, "\nvisierd_cache_upstream_calls_saved_total ");
                ck_assert_ptr_nonnull(p);
                ck_assert_int_eq(strtoll(p + strlen("\nvisierd_cache_upstream_calls_saved_total "), NULL, 10), 50);
                http_result_done(&mr);
        }

        /* Read, write, read: the second read always shows the write. */
        for (int i = 0; i < 20; i++) {
                json_t *list = visierd_request_json(&vd, "GET", "/v1/admin/permissions", NULL, NULL, &st), *w;
                char body[160], *dump;

                ck_assert_int_eq(st, 200);
                snprintf(name, sizeof(name), "ryw-%d", i);
                dump = json_dumps(list, JSON_COMPACT);
                ck_assert_ptr_null(strstr(dump, name));
                free(dump);
                json_decref(list);
                snprintf(body, sizeof(body), "{\"permissions\":[{\"displayName\":\"%s\"}]}", name);
                w = visierd_request_json(&vd, "POST", "/v1/admin/permissions", body, wait, &st);
                ck_assert_int_eq(st, 200);
                json_decref(w);
                list = visierd_request_json(&vd, "GET", "/v1/admin/permissions", NULL, NULL, &st);
                ck_assert_int_eq(st, 200);
                dump = json_dumps(list, JSON_COMPACT);
                ck_assert_msg(strstr(dump, name) != NULL, "read %d after its write did not show %s", i, name);
                free(dump);
                json_decref(list);
        }
}
END_TEST

/* /status is written by hand (it is asked many times a second): the very bytes jansson would
 * write for the same members, in the documented order, with a job queued (a real age). */
START_TEST(test_status_text) {
        /* In fleet mode (the job store on PostgreSQL) the fleet follows, as this node sees it. */
        static const char *const members[] = { "jobs",     "publisher",   "version",  "uptime_seconds", "visier",
                                               "token",    "rate_budget", "upstream", "store",          "fleet" };
        const size_t n_members = ELEMENTSOF(members) - (harness_store_is_pg() ? 0 : 1);
        char *u, *again;
        HttpResult r;
        json_t *j;
        size_t i = 0;
        const char *key;
        json_t *v;
        long st;

        sim_start(&sim, unlimited);
        visierd_start(&vd, &sim, FAST, "[jobs]\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        set_faults("{\"publish_ms\":2000}");
        json_decref(visierd_request_json(&vd, "POST", "/v1/admin/permissions",
                                         "{\"permissions\":[{\"displayName\":\"s-1\"}]}", NULL, &st));
        /* The first job in its (slow) call before the second comes, so the second waits queued
         * rather than joining the first's call on a slow machine. */
        for (usec_t until = clock_now() + 20 * USEC_PER_SEC;;) {
                json_t *s = visierd_request_json(&vd, "GET", "/status", NULL, NULL, &st);
                bool running = json_integer_value(json_object_get(json_object_get(s, "jobs"), "running")) == 1;

                json_decref(s);
                if (running)
                        break;
                ck_assert_msg(clock_now() < until, "the first job never ran");
                clock_sleep(10 * USEC_PER_MSEC); /* probe interval */
        }
        json_decref(visierd_request_json(&vd, "POST", "/v1/admin/permissions",
                                         "{\"permissions\":[{\"displayName\":\"s-2\"}]}", NULL, &st));
        u = visierd_url(&vd, "/status");
        http_request("GET", u, NULL, NULL, 10000, &r);
        free(u);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.content_type, "application/json");
        j = json_loadb(r.body, r.len, 0, NULL);
        ck_assert_ptr_nonnull(j);
        again = json_dumps(j, JSON_COMPACT);
        ck_assert_str_eq(r.body, again);
        json_object_foreach(j, key, v) {
                ck_assert_uint_lt(i, n_members);
                ck_assert_str_eq(key, members[i++]);
        }
        ck_assert_uint_eq(i, n_members);
        ck_assert(json_is_real(json_object_get(json_object_get(j, "jobs"), "oldest_queued_age_seconds")));
        free(again);
        json_decref(j);
        http_result_done(&r);
        set_faults("{\"publish_ms\":0}");
}
END_TEST

/* Strings in /status are escaped as jansson escapes them: a database path with a quote, a
 * backslash and control characters comes back byte for byte as json_dumps() writes it. */
START_TEST(test_status_text_escapes) {
        char dir[256], sub[512], db[600];
        const char *path;
        char *u, *again;
        HttpResult r;
        json_t *j;

        harness_mkdtemp(dir, sizeof(dir), "visierd-status");
        sim_start(&sim, unlimited);
        if (harness_store_is_pg()) {
                /* The store is shown by its connection string: the characters in a value of it. */
                char url[400];

                harness_store_pg_new_url(url, sizeof(url));
                snprintf(db, sizeof(db), "%s application_name='q\"b\\\\s\001\037e/jobs.db'", url);
                visierd_write_config_url(&vd, &sim, db, FAST, NULL);
        } else {
                snprintf(sub, sizeof(sub), "%s/q\"b\\s\001\037e", dir);
                ck_assert_int_eq(mkdir(sub, 0700), 0);
                snprintf(db, sizeof(db), "%s/jobs.db", sub);
                visierd_write_config_db(&vd, &sim, db, FAST, NULL);
        }
        visierd_restart(&vd);
        visierd_wait_ready(&vd);
        u = visierd_url(&vd, "/status");
        http_request("GET", u, NULL, NULL, 10000, &r);
        free(u);
        ck_assert_int_eq(r.status, 200);
        j = json_loadb(r.body, r.len, 0, NULL);
        ck_assert_ptr_nonnull(j);
        path = json_string_value(json_object_get(json_object_get(j, "store"), "path"));
        ck_assert_ptr_nonnull(path);
        ck_assert_str_eq(path, db);
        ck_assert_ptr_nonnull(strstr(r.body, harness_store_is_pg() ? "q\\\"b\\\\\\\\s\\u0001\\u001Fe/jobs.db'\""
                                                           : "q\\\"b\\\\s\\u0001\\u001Fe/jobs.db\""));
        again = json_dumps(j, JSON_COMPACT);
        ck_assert_str_eq(r.body, again);
        free(again);
        json_decref(j);
        http_result_done(&r);
        harness_teardown(&sim, &vd);
        harness_rmtree(dir);
}
END_TEST

/* ---- SIGTERM ---- */

#define LIST_BODY                                                                                        \
        "{\"source\":{\"analyticObject\":\"Employee\"},\"columns\":[{\"columnDefinition\":{\"property\":" \
        "{\"name\":\"Employee.EmployeeID\"}}}]}"

typedef struct Call {
        const char *method, *path, *body;
        const char *const *headers;
        HttpResult r;
} Call;

static void *call_thread(void *arg) {
        Call *c = arg;
        char *u = visierd_url(&vd, c->path);

        http_request(c->method, u, c->headers, c->body, 60000, &c->r);
        free(u);
        return NULL;
}

/* The job's state as its store holds it (the SQLite file or the PostgreSQL database), read
 * after visierd stopped. */
static char *job_state_in_db(long long id) {
        char idtext[24], err[512], *state = NULL;

        snprintf(idtext, sizeof(idtext), "%lld", id);
        ck_assert_msg(visierd_store_query(&vd, "SELECT state FROM jobs WHERE id = $1", idtext, &state, err, sizeof(err)) >=
                              0,
                      "%s", err);
        return state;
}

/* SIGTERM with a read waiting on Visier, a write held and an export run streaming: the read
 * gets its whole answer, the write its 202 with the job, the run is cut short and queued
 * again, and visierd exits 0 well within drain_timeout (not after the whole export). */
START_TEST(test_sigterm_drains) {
        const char *const wait[] = { "Prefer: wait=60", "Content-Type: application/json", NULL };
        Call read = { .method = "GET", .path = "/v1/admin/capabilities" };
        Call write = { .method = "POST", .path = "/v1/admin/permissions",
                       .body = "{\"permissions\":[{\"displayName\":\"drain-1\"}]}", .headers = wait };
        char dir[256], partial[320], tail[512], *state;
        pthread_t tr, tw;
        long long run;
        usec_t t0;
        long st;
        json_t *j;
        int status;

        sim_start(&sim, unlimited);
        snprintf(tail, sizeof(tail), "[listen]\ndrain_timeout = 20\n[jobs]\nbatch_delay_ms = 0\n[exports]\ndirectory = ");
        visierd_write_config(&vd, &sim, FAST, NULL);
        snprintf(dir, sizeof(dir), "%s/exports.d", vd.dir);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        {
                char path[320], *conf = harness_read_file(vd.config), *all;

                snprintf(path, sizeof(path), "%s/employees.json", dir);
                harness_write_file(path, "{\"query\":\"list\",\"format\":\"jsonl\",\"body\":" LIST_BODY "}", 0644);
                ck_assert_int_ge(asprintf(&all, "%s%s%s\n", conf, tail, dir), 0);
                harness_write_file(vd.config, all, 0644);
                free(conf);
                free(all);
        }
        visierd_restart(&vd);
        visierd_wait_ready(&vd);

        /* An export run large enough to be streaming when the stop comes. */
        set_faults("{\"query_rows\":20000000}");
        j = visierd_request_json(&vd, "POST", "/exports/employees/runs", NULL, NULL, &st);
        ck_assert_int_eq(st, 202);
        run = json_integer_value(json_object_get(j, "id"));
        json_decref(j);
        snprintf(partial, sizeof(partial), "%s/exports/%lld.jsonl.partial", vd.dir, run);
        for (int i = 0; i < 1000; i++) {
                struct stat s;

                if (stat(partial, &s) == 0 && s.st_size > 0)
                        break;
                clock_sleep(10 * USEC_PER_MSEC);
        }

        set_faults("{\"query_rows\":20000000,\"latency_ms\":2000,\"publish_ms\":1000}");
        ck_assert_int_eq(pthread_create(&tr, NULL, call_thread, &read), 0);
        ck_assert_int_eq(pthread_create(&tw, NULL, call_thread, &write), 0);
        for (int i = 0; i < 500 && (sim_calls(&sim, "/v1/admin/capabilities") < 1 ||
                                    sim_calls(&sim, "/v1/admin/permissions") < 1);
             i++)
                clock_sleep(10 * USEC_PER_MSEC);
        ck_assert_int_ge(sim_calls(&sim, "/v1/admin/capabilities"), 1);

        t0 = clock_now();
        status = visierd_stop(&vd);
        ck_assert_int_eq(status, 0);
        ck_assert_msg(clock_now() - t0 < 20 * USEC_PER_SEC, "the stop took %.1f s",
                      (double) (clock_now() - t0) / USEC_PER_SEC);
        pthread_join(tr, NULL);
        pthread_join(tw, NULL);

        /* The read in flight got Visier's whole answer. */
        ck_assert_msg(read.r.status == 200, "the read in flight got %ld (curl %d)", read.r.status, read.r.curl_error);
        j = json_loadb(read.r.body, read.r.len, 0, NULL);
        ck_assert_ptr_nonnull(j);
        json_decref(j);
        /* The held write got an answer with its job: 202 (or Visier's 200 if it ended first). */
        ck_assert_msg(write.r.status == 202 || write.r.status == 200, "the held write got %ld (curl %d)",
                      write.r.status, write.r.curl_error);
        if (write.r.status == 202) {
                j = json_loadb(write.r.body, write.r.len, 0, NULL);
                ck_assert_int_gt(json_integer_value(json_object_get(j, "id")), 0);
                json_decref(j);
        }
        /* The run was cut short and waits for the next start. */
        state = job_state_in_db(run);
        ck_assert_str_eq(state, "queued");
        free(state);
        ck_assert_int_ne(access(partial, F_OK), 0);
        http_result_done(&read.r);
        http_result_done(&write.r);
        set_faults("{\"latency_ms\":0,\"publish_ms\":0,\"query_rows\":1000}");
        visierd_restart(&vd);
        visierd_wait_ready(&vd);
}
END_TEST

int main(void) {
        Suite *s = suite_create("loop");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 240);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_holds_cost_no_thread);
        tcase_add_test(tc, test_sigterm_drains);
        tcase_add_test(tc, test_cache_coherent);
        tcase_add_test(tc, test_status_text);
        tcase_add_test(tc, test_status_text_escapes);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
