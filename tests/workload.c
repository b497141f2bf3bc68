/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mixed workload and its end-state checks (see workload.h). Each client thread keeps its
 * own record; workload_verify reads the records only after the threads are joined, so no lock
 * guards them. Nothing here calls ck_assert: the threads must not, and the callers print every
 * figure before they assert.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "macro.h"
#include "workload.h"

#define WORKLOAD_NAME_MAX 96
#define WORKLOAD_PID_MAX 64
#define WORKLOAD_REQUEST_TIMEOUT_MS 30000
#define WORKLOAD_RESEND_PAUSE_MS 25      /* after a connection error: visierd restarting */
#define WORKLOAD_RESEND_5XX_PAUSE_MS 200 /* after a 5xx, when retry_5xx */
#define WORKLOAD_RESOLVE_PER_WRITE 2     /* create jobs looked up between two writes */
#define WORKLOAD_CLIENT_PROBLEMS 1024

typedef struct Perm {
        char base[64];                   /* the create's displayName, unique to the run */
        char name[WORKLOAD_NAME_MAX];    /* the displayName the sim must hold: the last accepted rename */
        char pid[WORKLOAD_PID_MAX];      /* "" until its create job is known to have succeeded */
        int64_t create_job;
        unsigned create_idx;
        bool create_done;                /* its create job ended (pid known, or it did not succeed) */
        bool deleted;                    /* a delete of it was accepted */
        bool uncertain;                  /* a write to it got no answer: its end state is unknown */
        json_t *users;                   /* userId -> true: the users it must have */
} Perm;

typedef struct Accepted {
        int64_t id;
        WorkloadOp op;
} Accepted;

typedef struct Client {
        Workload *w;
        unsigned index, quota;
        uint64_t rng;
        CURL *h;
        Perm *perms;
        size_t n_perms, cap_perms, next_unresolved;
        Accepted *jobs;
        size_t n_jobs, cap_jobs;
        json_t *refused_names;           /* creates refused: their names must never appear */
        json_t *unknown_names;           /* creates never answered: either way is allowed */
        unsigned refused, unanswered, resent, seq, names, renames, users;
        char problems[WORKLOAD_CLIENT_PROBLEMS];
        pthread_t thread;
        bool started;
} Client;

struct Workload {
        WorkloadSettings s;
        char prefix[32];
        /* The visierds the clients talk to (0: down). Client i starts with node i % n_nodes
         * and, while its node is down or gives no answer, moves on to the next node that is
         * up: any node answers for any job, and the Idempotency-Key keeps a resend one job. */
        atomic_uint ports[WORKLOAD_NODES_MAX];
        unsigned n_nodes;
        atomic_uint running;
        Client *clients;
};

/* The port client c uses now: its node's, or the next node's that is up (0: all down). */
static unsigned client_port(Client *c, unsigned shift) {
        Workload *w = c->w;

        for (unsigned k = 0; k < w->n_nodes; k++) {
                unsigned port = atomic_load(&w->ports[(c->index + shift + k) % w->n_nodes]);
                if (port)
                        return port;
        }
        return 0;
}

static const char *const op_names[_WORKLOAD_OP_MAX] = {
        [WORKLOAD_CREATE] = "create", [WORKLOAD_UPDATE] = "update", [WORKLOAD_ASSIGN] = "assign",
        [WORKLOAD_REMOVE] = "remove", [WORKLOAD_REVERT] = "revert", [WORKLOAD_DELETE] = "delete",
};

const char *workload_op_to_string(WorkloadOp op) {
        return op >= 0 && op < _WORKLOAD_OP_MAX ? op_names[op] : NULL;
}

uint64_t workload_rand(uint64_t *state) {
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

uint64_t workload_random_seed(void) {
        uint64_t s = 0;

        if (getrandom(&s, sizeof(s), 0) != sizeof(s))
                s = clock_realtime();
        return s % UINT64_C(1000000000000); /* short enough to type */
}

static void problem_append(char *buf, size_t size, const char *fmt, va_list ap) {
        size_t used = strnlen(buf, size);

        if (used + 2 >= size)
                return;
        vsnprintf(buf + used, size - used, fmt, ap);
        used = strnlen(buf, size);
        if (used + 1 < size) {
                buf[used] = '\n';
                buf[used + 1] = '\0';
        }
}

void workload_problem(WorkloadReport *r, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        problem_append(r->problems, sizeof(r->problems), fmt, ap);
        va_end(ap);
}

static void client_problem(Client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void client_problem(Client *c, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        problem_append(c->problems, sizeof(c->problems), fmt, ap);
        va_end(ap);
}

static unsigned client_rand(Client *c, unsigned n) {
        return n ? (unsigned) (workload_rand(&c->rng) % n) : 0;
}

/* ---- one write ---- */

/*
 * Send one write until it is answered. 202: the job's id in *ret_id, 0. A connection error
 * (visierd killed or restarting) sends it again with the same Idempotency-Key, as does a 5xx
 * when retry_5xx; any other answer is a refusal (-EPROTO, *ret_status says which); no answer
 * within give_up_sec is -ETIMEDOUT.
 */
static int client_write(Client *c, const char *method, const char *path, const char *body, int64_t *ret_id,
                        long *ret_status) {
        usec_t deadline = clock_now() + (usec_t) c->w->s.give_up_sec * USEC_PER_SEC;
        char keyh[128], url[256];
        const char *headers[] = { keyh, "Content-Type: application/json", NULL };

        snprintf(keyh, sizeof(keyh), "Idempotency-Key: %s-t%u-k%u", c->w->prefix, c->index, ++c->seq);
        *ret_status = 0;
        for (unsigned attempt = 0;; attempt++) {
                unsigned port = client_port(c, attempt);
                HttpResult r;

                if (port == 0) {
                        if (clock_now() >= deadline)
                                break;
                        clock_sleep(10 * USEC_PER_MSEC);
                        continue;
                }
                snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
                http_request_on(c->h, method, url, headers, body, 0, WORKLOAD_REQUEST_TIMEOUT_MS, &r);
                if (r.curl_error == 0 && r.status == 202) {
                        json_t *j = json_loadb(r.body, r.len, 0, NULL);
                        int64_t id = json_integer_value(json_object_get(j, "id"));

                        json_decref(j);
                        http_result_done(&r);
                        if (id <= 0) {
                                client_problem(c, "%s %s: 202 without a job id", method, path);
                                c->refused++;
                                *ret_status = 202;
                                return -EPROTO;
                        }
                        *ret_id = id;
                        return 0;
                }
                if (r.curl_error == 0 && !(r.status >= 500 && c->w->s.retry_5xx)) {
                        client_problem(c, "%s %s (%s) answered %ld: %.300s", method, path, keyh, r.status, r.body);
                        c->refused++;
                        *ret_status = r.status;
                        http_result_done(&r);
                        return -EPROTO;
                }
                http_result_done(&r);
                c->resent++;
                if (clock_now() >= deadline)
                        break;
                clock_sleep((r.curl_error ? WORKLOAD_RESEND_PAUSE_MS : WORKLOAD_RESEND_5XX_PAUSE_MS) * USEC_PER_MSEC);
        }
        client_problem(c, "%s %s (%s): no answer in %u s", method, path, keyh, c->w->s.give_up_sec);
        c->unanswered++;
        return -ETIMEDOUT;
}

static void client_accepted(Client *c, int64_t id, WorkloadOp op) {
        if (c->n_jobs == c->cap_jobs) {
                c->cap_jobs = c->cap_jobs ? 2 * c->cap_jobs : 64;
                c->jobs = realloc(c->jobs, c->cap_jobs * sizeof(*c->jobs));
                if (!c->jobs)
                        abort(); /* a test helper out of memory: nothing sensible to report */
        }
        c->jobs[c->n_jobs++] = (Accepted) { .id = id, .op = op };
}

static Perm *client_new_perm(Client *c) {
        Perm *p;

        if (c->n_perms == c->cap_perms) {
                c->cap_perms = c->cap_perms ? 2 * c->cap_perms : 64;
                c->perms = realloc(c->perms, c->cap_perms * sizeof(*c->perms));
                if (!c->perms)
                        abort();
        }
        p = &c->perms[c->n_perms++];
        memset(p, 0, sizeof(*p));
        p->users = json_object();
        return p;
}

/* ---- learning what the creates made ---- */

/* Take the permission IDs of every perm of JOB (GET /jobs/{id} with item_results) that ended. */
static void perms_take_job(Perm *perms, size_t n, size_t from, json_t *job) {
        int64_t id = json_integer_value(json_object_get(job, "id"));
        const char *state = json_string_value(json_object_get(job, "state"));
        json_t *items = json_object_get(job, "item_results");

        for (size_t k = from; k < n; k++) {
                Perm *p = &perms[k];
                json_t *it;
                const char *pid;

                if (p->create_job != id || p->create_done)
                        continue;
                it = json_array_get(items, p->create_idx);
                pid = json_string_value(json_object_get(json_object_get(it, "result"), "permissionId"));
                if (streq(state ?: "", "succeeded") && streq(json_string_value(json_object_get(it, "state")) ?: "", "succeeded") &&
                    pid)
                        snprintf(p->pid, sizeof(p->pid), "%s", pid);
                p->create_done = true;
        }
}

static json_t *get_job(CURL *h, unsigned port, int64_t id) {
        char url[128];
        HttpResult r;
        json_t *j = NULL;

        snprintf(url, sizeof(url), "http://127.0.0.1:%u/jobs/%lld", port, (long long) id);
        http_request_on(h, "GET", url, NULL, NULL, 0, WORKLOAD_REQUEST_TIMEOUT_MS, &r);
        if (r.curl_error == 0 && r.status == 200)
                j = json_loadb(r.body, r.len, 0, NULL);
        http_result_done(&r);
        return j;
}

/* Look up (in order) the create jobs not known to have ended, at most MAX of them. */
static void client_resolve(Client *c, unsigned max) {
        for (unsigned polls = 0; c->next_unresolved < c->n_perms && polls < max;) {
                Perm *p = &c->perms[c->next_unresolved];
                unsigned port = client_port(c, 0);
                const char *state;
                json_t *j;

                if (p->create_done) {
                        c->next_unresolved++;
                        continue;
                }
                if (port == 0 || !(j = get_job(c->h, port, p->create_job)))
                        return;
                polls++;
                state = json_string_value(json_object_get(j, "state"));
                if (streq(state ?: "", "queued") || streq(state ?: "", "running")) {
                        json_decref(j);
                        return;
                }
                perms_take_job(c->perms, c->n_perms, c->next_unresolved, j);
                json_decref(j);
        }
}

/* A permission of this client that exists by now, chosen at random; NULL if none. */
static Perm *client_pick(Client *c, bool need_users) {
        size_t start;

        if (c->n_perms == 0)
                return NULL;
        start = client_rand(c, (unsigned) c->n_perms);
        for (size_t k = 0; k < c->n_perms; k++) {
                Perm *p = &c->perms[(start + k) % c->n_perms];

                if (p->create_done && p->pid[0] && !p->deleted && !p->uncertain &&
                    (!need_users || json_object_size(p->users) > 0))
                        return p;
        }
        return NULL;
}

/* ---- the operations ---- */

static int client_create(Client *c) {
        unsigned n = 1 + (client_rand(c, 10) >= 7) + (client_rand(c, 10) >= 8);
        char names[3][64], body[512];
        size_t len = 0;
        int64_t id;
        long status;
        int r;

        len += (size_t) snprintf(body + len, sizeof(body) - len, "{\"permissions\":[");
        for (unsigned i = 0; i < n; i++) {
                snprintf(names[i], sizeof(names[i]), "%s-t%u-%u", c->w->prefix, c->index, c->names++);
                len += (size_t) snprintf(body + len, sizeof(body) - len, "%s{\"displayName\":\"%s\"}", i ? "," : "",
                                         names[i]);
        }
        snprintf(body + len, sizeof(body) - len, "]}");
        r = client_write(c, "POST", "/v1/admin/permissions", body, &id, &status);
        for (unsigned i = 0; i < n; i++) {
                Perm *p;

                if (r < 0) {
                        json_object_set_new(r == -ETIMEDOUT ? c->unknown_names : c->refused_names, names[i], json_true());
                        continue;
                }
                p = client_new_perm(c);
                snprintf(p->base, sizeof(p->base), "%.63s", names[i]);
                snprintf(p->name, sizeof(p->name), "%.63s", names[i]);
                p->create_job = id;
                p->create_idx = i;
        }
        if (r == 0)
                client_accepted(c, id, WORKLOAD_CREATE);
        return r;
}

static int client_touch(Client *c, WorkloadOp op, Perm *p) {
        char body[512], newname[WORKLOAD_NAME_MAX], user[64] = "";
        const char *method, *path;
        int64_t id;
        long status;
        int r;

        switch (op) {
        case WORKLOAD_UPDATE:
                snprintf(newname, sizeof(newname), "%s~u%u", p->base, ++c->renames);
                snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"%s\"}]}",
                         p->pid, newname);
                method = "PUT", path = "/v1/admin/permissions";
                break;
        case WORKLOAD_ASSIGN:
                /* Users of visier-sim's directory (u-000 to u-999 in its tenant), spread over clients. */
                snprintf(user, sizeof(user), "u-%03u", (c->index * 167 + ++c->users) % 1000);
                snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"%s\"]}]}", p->pid,
                         user);
                method = "PUT", path = "/v1/admin/permissions/users";
                break;
        case WORKLOAD_REMOVE: {
                size_t pick = client_rand(c, (unsigned) json_object_size(p->users)), k = 0;
                const char *u;
                json_t *v;

                json_object_foreach(p->users, u, v)
                        if (k++ == pick) {
                                snprintf(user, sizeof(user), "%s", u);
                                break;
                        }
                snprintf(body, sizeof(body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"%s\"]}]}", p->pid,
                         user);
                method = "DELETE", path = "/v1/admin/permissions/users";
                break;
        }
        case WORKLOAD_REVERT:
                snprintf(body, sizeof(body), "{\"permissionIds\":[\"%s\"]}", p->pid);
                method = "POST", path = "/v1/admin/permissions/revert-to-parent";
                break;
        case WORKLOAD_DELETE:
                snprintf(body, sizeof(body), "{\"permissionIds\":[\"%s\"]}", p->pid);
                method = "DELETE", path = "/v1/admin/permissions";
                break;
        default:
                return -EINVAL;
        }
        r = client_write(c, method, path, body, &id, &status);
        if (r == -ETIMEDOUT)
                p->uncertain = true;
        if (r < 0)
                return r;
        client_accepted(c, id, op);
        switch (op) {
        case WORKLOAD_UPDATE:
                snprintf(p->name, sizeof(p->name), "%s", newname);
                break;
        case WORKLOAD_ASSIGN:
                json_object_set_new(p->users, user, json_true());
                break;
        case WORKLOAD_REMOVE:
                json_object_del(p->users, user);
                break;
        case WORKLOAD_DELETE:
                p->deleted = true;
                break;
        default:
                break;
        }
        return 0;
}

static WorkloadOp client_choose(Client *c) {
        unsigned r = client_rand(c, 100);

        if (r < 35)
                return WORKLOAD_CREATE;
        if (r < 55)
                return WORKLOAD_UPDATE;
        if (r < 70)
                return WORKLOAD_ASSIGN;
        if (r < 78)
                return WORKLOAD_REMOVE;
        if (r < 85)
                return WORKLOAD_REVERT;
        return WORKLOAD_DELETE;
}

static void *client_main(void *arg) {
        Client *c = arg;

        for (unsigned n = 0; n < c->quota; n++) {
                WorkloadOp op = client_choose(c);
                Perm *p = NULL;
                int r;

                client_resolve(c, WORKLOAD_RESOLVE_PER_WRITE);
                if (op == WORKLOAD_REMOVE && !(p = client_pick(c, true)))
                        op = WORKLOAD_ASSIGN;
                if (op != WORKLOAD_CREATE && !p && !(p = client_pick(c, false)))
                        op = WORKLOAD_CREATE;
                r = op == WORKLOAD_CREATE ? client_create(c) : client_touch(c, op, p);
                if (r == -ETIMEDOUT)
                        break; /* visierd is not answering at all: the checks will say so */
                if (c->w->s.think_ms > 0)
                        clock_sleep((usec_t) client_rand(c, 2 * c->w->s.think_ms + 1) * USEC_PER_MSEC);
        }
        atomic_fetch_sub(&c->w->running, 1);
        return NULL;
}

/* ---- the workload ---- */

Workload *workload_start(const WorkloadSettings *s, unsigned port) {
        return workload_start_nodes(s, &port, 1);
}

Workload *workload_start_nodes(const WorkloadSettings *s, const unsigned *ports, unsigned n_nodes) {
        Workload *w = calloc(1, sizeof(*w));

        if (!w || n_nodes == 0 || n_nodes > WORKLOAD_NODES_MAX)
                abort();
        w->s = *s;
        if (w->s.threads == 0)
                w->s.threads = 1;
        if (w->s.give_up_sec == 0)
                w->s.give_up_sec = 60;
        snprintf(w->prefix, sizeof(w->prefix), "wl%llx", (unsigned long long) (s->seed % UINT64_C(0xffffffff)));
        w->n_nodes = n_nodes;
        for (unsigned i = 0; i < n_nodes; i++)
                atomic_store(&w->ports[i], ports[i]);
        w->clients = calloc(w->s.threads, sizeof(*w->clients));
        if (!w->clients)
                abort();
        atomic_store(&w->running, w->s.threads);
        for (unsigned i = 0; i < w->s.threads; i++) {
                Client *c = &w->clients[i];

                c->w = w;
                c->index = i;
                c->quota = w->s.jobs / w->s.threads + (i < w->s.jobs % w->s.threads);
                c->rng = s->seed ^ (UINT64_C(0x5851f42d4c957f2d) * (i + 1));
                c->h = curl_easy_init();
                c->refused_names = json_object();
                c->unknown_names = json_object();
        }
        for (unsigned i = 0; i < w->s.threads; i++)
                w->clients[i].started = pthread_create(&w->clients[i].thread, NULL, client_main, &w->clients[i]) == 0;
        for (unsigned i = 0; i < w->s.threads; i++)
                if (!w->clients[i].started)
                        atomic_fetch_sub(&w->running, 1);
        return w;
}

void workload_set_port(Workload *w, unsigned port) {
        workload_set_node_port(w, 0, port);
}

void workload_set_node_port(Workload *w, unsigned node, unsigned port) {
        assert(node < w->n_nodes);
        atomic_store(&w->ports[node], port);
}

bool workload_running(Workload *w) {
        return atomic_load(&w->running) > 0;
}

void workload_join(Workload *w) {
        for (unsigned i = 0; i < w->s.threads; i++)
                if (w->clients[i].started) {
                        pthread_join(w->clients[i].thread, NULL);
                        w->clients[i].started = false;
                }
}

Workload *workload_free(Workload *w) {
        if (!w)
                return NULL;
        workload_join(w);
        for (unsigned i = 0; i < w->s.threads; i++) {
                Client *c = &w->clients[i];

                for (size_t k = 0; k < c->n_perms; k++)
                        json_decref(c->perms[k].users);
                free(c->perms);
                free(c->jobs);
                json_decref(c->refused_names);
                json_decref(c->unknown_names);
                if (c->h)
                        curl_easy_cleanup(c->h);
        }
        free(w->clients);
        free(w);
        return NULL;
}

/* ---- the checks ---- */

static void base_of(const char *name, char *buf, size_t size) {
        const char *t = strchr(name, '~');
        size_t n = t ? (size_t) (t - name) : strlen(name);

        snprintf(buf, size, "%.*s", (int) (n < size ? n : size - 1), name);
}

static bool json_array_has_string(json_t *a, const char *s) {
        json_t *v;
        size_t i;

        json_array_foreach(a, i, v)
                if (streq(json_string_value(v) ?: "", s))
                        return true;
        return false;
}

static void verify_perm(const Perm *p, json_t *by_pid, json_t *by_base, WorkloadReport *r) {
        long long n = json_integer_value(json_object_get(by_base, p->base));
        json_t *entry = p->pid[0] ? json_object_get(by_pid, p->pid) : NULL;
        const char *u;
        json_t *v, *users;
        size_t i;

        if (p->deleted) {
                if (entry) {
                        r->lost_deletes++;
                        workload_problem(r, "deleted permission %s (%s) is still there", p->pid, p->base);
                } else if (n > 0) {
                        r->duplicates += (unsigned) n;
                        workload_problem(r, "%s was deleted, yet %lld more of it exist", p->base, n);
                }
                return;
        }
        if (n == 0) {
                r->lost_creates++;
                workload_problem(r, "%s (job %lld) does not exist", p->base, (long long) p->create_job);
                return;
        }
        if (n > 1) {
                r->duplicates += (unsigned) (n - 1);
                workload_problem(r, "%s exists %lld times", p->base, n);
        }
        if (!p->pid[0] || p->uncertain)
                return; /* its job did not succeed (counted there) or its end state is unknown */
        if (!entry) {
                r->lost_creates++;
                workload_problem(r, "%s: job %lld names %s, which does not exist", p->base, (long long) p->create_job,
                                 p->pid);
                return;
        }
        if (!streq(json_string_value(json_object_get(entry, "displayName")) ?: "", p->name)) {
                r->lost_updates++;
                workload_problem(r, "%s is named %s, the last accepted rename was %s", p->pid,
                                 json_string_value(json_object_get(entry, "displayName")), p->name);
        }
        users = json_object_get(entry, "userIds");
        json_object_foreach(p->users, u, v)
                if (!json_array_has_string(users, u)) {
                        r->lost_users++;
                        workload_problem(r, "%s lacks user %s, whose assignment was accepted", p->pid, u);
                }
        json_array_foreach(users, i, v)
                if (!json_object_get(p->users, json_string_value(v) ?: "")) {
                        r->lost_users++;
                        workload_problem(r, "%s has user %s, whose removal was accepted", p->pid, json_string_value(v));
                }
}

static void verify_job(CURL *h, unsigned port, Client *c, const Accepted *a, WorkloadReport *r) {
        json_t *j = get_job(h, port, a->id), *it;
        const char *state = json_string_value(json_object_get(j, "state"));
        size_t i;

        r->accepted++;
        r->accepted_by_op[a->op]++;
        if (!j) {
                r->not_succeeded++;
                workload_problem(r, "job %lld (%s): GET /jobs/%lld failed", (long long) a->id, op_names[a->op],
                                 (long long) a->id);
                return;
        }
        if (!streq(state ?: "", "succeeded")) {
                r->not_succeeded++;
                if (streq(state ?: "", "queued") || streq(state ?: "", "running"))
                        r->pending++;
                workload_problem(r, "job %lld (%s) is %s after %lld attempts: %s", (long long) a->id, op_names[a->op],
                                 state, (long long) json_integer_value(json_object_get(j, "attempts")),
                                 json_string_value(json_object_get(j, "error")) ?: "(no error)");
        } else
                json_array_foreach(json_object_get(j, "item_results"), i, it)
                        if (!streq(json_string_value(json_object_get(it, "state")) ?: "", "succeeded")) {
                                char *res = json_dumps(json_object_get(it, "result"), JSON_COMPACT);
                                r->not_succeeded++;
                                workload_problem(r, "job %lld (%s) succeeded but item %zu is %s: %.300s", (long long) a->id,
                                                 op_names[a->op], i, json_string_value(json_object_get(it, "state")),
                                                 res ?: "");
                                free(res);
                                break;
                        }
        if (a->op == WORKLOAD_CREATE)
                perms_take_job(c->perms, c->n_perms, 0, j);
        json_decref(j);
}

void workload_verify(Workload *w, unsigned port, json_t *sim_dump, WorkloadReport *ret) {
        json_t *by_pid = json_object(), *by_base = json_object(), *known = json_object(), *p;
        CURL *h = curl_easy_init();
        char prefix[40];
        const char *k;
        json_t *v;
        size_t i;

        memset(ret, 0, sizeof(*ret));
        workload_join(w);
        snprintf(prefix, sizeof(prefix), "%s-", w->prefix);
        json_array_foreach(json_object_get(sim_dump, "permissions"), i, p) {
                const char *name = json_string_value(json_object_get(p, "displayName"));
                const char *pid = json_string_value(json_object_get(p, "permissionId"));
                char base[WORKLOAD_NAME_MAX];

                if (!name || strncmp(name, prefix, strlen(prefix)) != 0)
                        continue;
                base_of(name, base, sizeof(base));
                json_object_set_new(by_base, base,
                                    json_integer(json_integer_value(json_object_get(by_base, base)) + 1));
                if (pid)
                        json_object_set(by_pid, pid, p);
        }

        for (unsigned t = 0; t < w->s.threads; t++) {
                Client *c = &w->clients[t];

                ret->refused += c->refused;
                ret->unanswered += c->unanswered;
                ret->resent += c->resent;
                if (c->problems[0])
                        workload_problem(ret, "client %u: %s", t, c->problems);
                for (size_t n = 0; n < c->n_jobs; n++)
                        verify_job(h, port, c, &c->jobs[n], ret);
                for (size_t n = 0; n < c->n_perms; n++) {
                        json_object_set_new(known, c->perms[n].base, json_true());
                        verify_perm(&c->perms[n], by_pid, by_base, ret);
                }
                json_object_foreach(c->unknown_names, k, v)
                        json_object_set_new(known, k, json_true());
                json_object_foreach(c->refused_names, k, v)
                        if (json_object_get(by_base, k)) {
                                ret->unexpected++;
                                workload_problem(ret, "%s was refused, yet it exists", k);
                        }
        }
        json_object_foreach(by_base, k, v)
                if (!json_object_get(known, k)) {
                        bool refused = false;

                        for (unsigned t = 0; t < w->s.threads; t++)
                                refused |= json_object_get(w->clients[t].refused_names, k) != NULL;
                        if (!refused) {
                                ret->unexpected++;
                                workload_problem(ret, "%s exists, but no create of it was accepted", k);
                        }
                }
        json_decref(by_pid);
        json_decref(by_base);
        json_decref(known);
        if (h)
                curl_easy_cleanup(h);
}

/* ---- draining and the database ---- */

static long long jobs_in_state(CURL *h, unsigned port, const char *state) {
        char url[128];
        HttpResult r;
        long long n = -1;

        snprintf(url, sizeof(url), "http://127.0.0.1:%u/jobs?state=%s&limit=1", port, state);
        http_request_on(h, "GET", url, NULL, NULL, 0, 10000, &r);
        if (r.curl_error == 0 && r.status == 200) {
                json_t *j = json_loadb(r.body, r.len, 0, NULL);
                json_t *jobs = json_object_get(j, "jobs");

                if (json_is_array(jobs))
                        n = (long long) json_array_size(jobs);
                json_decref(j);
        }
        http_result_done(&r);
        return n;
}

static long long status_pending(CURL *h, unsigned port) {
        char url[128];
        HttpResult r;
        long long n = -1;

        snprintf(url, sizeof(url), "http://127.0.0.1:%u/status", port);
        http_request_on(h, "GET", url, NULL, NULL, 0, 10000, &r);
        if (r.curl_error == 0 && r.status == 200) {
                json_t *j = json_loadb(r.body, r.len, 0, NULL), *jobs = json_object_get(j, "jobs");

                if (jobs)
                        n = json_integer_value(json_object_get(jobs, "queued")) +
                            json_integer_value(json_object_get(jobs, "running"));
                json_decref(j);
        }
        http_result_done(&r);
        return n;
}

long long workload_wait_drained(unsigned port, unsigned max_sec) {
        usec_t deadline = clock_now() + (usec_t) max_sec * USEC_PER_SEC;
        CURL *h = curl_easy_init();
        long long n;

        for (;;) {
                long long q = jobs_in_state(h, port, "queued"), r = jobs_in_state(h, port, "running");

                if (q == 0 && r == 0)
                        break;
                if (clock_now() >= deadline)
                        break;
                clock_sleep(100 * USEC_PER_MSEC); /* probe interval */
        }
        n = status_pending(h, port);
        if (h)
                curl_easy_cleanup(h);
        return n;
}

void workload_db_check(const char *db, char *ret_integrity, size_t len, long long *ret_pending) {
        sqlite3 *s = NULL;
        sqlite3_stmt *st = NULL;
        size_t used = 0;

        snprintf(ret_integrity, len, "(not checked)");
        *ret_pending = -1;
        if (sqlite3_open_v2(db, &s, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
                snprintf(ret_integrity, len, "cannot open %s: %s", db, s ? sqlite3_errmsg(s) : "out of memory");
                sqlite3_close(s);
                return;
        }
        if (sqlite3_prepare_v2(s, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
                ret_integrity[0] = '\0';
                while (sqlite3_step(st) == SQLITE_ROW && used + 2 < len) {
                        const char *row = (const char *) sqlite3_column_text(st, 0);
                        int n = snprintf(ret_integrity + used, len - used, "%s%s", used ? "; " : "", row ? row : "");
                        if (n < 0)
                                break;
                        used += (size_t) n < len - used ? (size_t) n : len - used - 1;
                }
                if (!ret_integrity[0])
                        snprintf(ret_integrity, len, "integrity_check: %s", sqlite3_errmsg(s));
        } else
                snprintf(ret_integrity, len, "integrity_check: %s", sqlite3_errmsg(s));
        sqlite3_finalize(st);
        st = NULL;
        if (sqlite3_prepare_v2(s, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')", -1, &st, NULL) ==
                    SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                *ret_pending = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(s);
}

/*
 * PostgreSQL has no integrity_check to ask, and its pages are the server's business: what a
 * node can get wrong there is its bookkeeping. So "ok" here means that every state's count in
 * job_counts (kept by triggers at every insert, change of state and delete; the sum of the
 * state's rows, one per shard) equals the jobs the table holds in that state, and that no state
 * is counted that has no jobs; otherwise it names the states that disagree.
 */
#define WORKLOAD_PG_COUNTS_CHECK                                                                     \
        "SELECT coalesce(string_agg(format('%s: %s counted, %s in jobs', state, coalesce(c.n, 0),"  \
        " coalesce(j.n, 0)), '; ' ORDER BY state), 'ok')"                                           \
        " FROM (SELECT state, count(*) AS n FROM jobs GROUP BY state) j"                            \
        " FULL JOIN (SELECT state, sum(n) AS n FROM job_counts GROUP BY state HAVING sum(n) <> 0) c" \
        " USING (state)"                                                                            \
        " WHERE j.n IS DISTINCT FROM c.n"

void workload_store_check(const Visierd *d, char *ret_integrity, size_t len, long long *ret_pending) {
        char db[256], err[512], *v = NULL;

        if (!d->store_url[0]) {
                snprintf(db, sizeof(db), "%s/visierd.db", d->dir);
                workload_db_check(db, ret_integrity, len, ret_pending);
                return;
        }
        *ret_pending = -1;
        if (visierd_store_query(d, WORKLOAD_PG_COUNTS_CHECK, NULL, &v, err, sizeof(err)) > 0)
                snprintf(ret_integrity, len, "%s", v);
        else
                snprintf(ret_integrity, len, "job_counts check: %s", err);
        free(v);
        v = NULL;
        if (visierd_store_query(d, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')", NULL, &v, err,
                                sizeof(err)) > 0)
                *ret_pending = strtoll(v, NULL, 10);
        free(v);
}
