/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manager (see manager.h): builds the subsystems in dependency order, tears them down in
 * reverse, owns the main loop, and logs what happens to them. The only place besides the
 * HTTP layer that logs.
 */
#include <signal.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "manager.h"

#define MANAGER_STATUS_INTERVAL (2 * USEC_PER_SEC) /* how often STATUS= is refreshed */
#define MANAGER_WORKERS 4        /* threads for blocking work: a fixed number, whatever the load */
#define MANAGER_OPS_RESERVE 64   /* connections past max_connections kept for /healthz, /readyz, /metrics */
#define MANAGER_METRICS_CONNECTIONS 64 /* connections the metrics-only listener takes at once */

/* Every connection is a descriptor: raise the soft limit as far as the hard one allows. */
static void raise_fd_limit(unsigned max_connections) {
        struct rlimit rl;
        rlim_t want = (rlim_t) max_connections + MANAGER_OPS_RESERVE + 256;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
                return;
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
                log_warning("only %llu file descriptors are allowed; max_connections=%u needs %llu (raise LimitNOFILE=)",
                            (unsigned long long) rl.rlim_cur, max_connections, (unsigned long long) want);
}

static void upstream_settings_from_config(const Config *c, UpstreamSettings *ret) {
        *ret = (UpstreamSettings) {
                .base_url = c->base_url,
                .username = c->username,
                .apikey = c->apikey,
                .password = c->password,
                .ca_file = c->ca_file,
                .proxy = c->proxy,
                .connect_timeout = (usec_t) c->connect_timeout * USEC_PER_SEC,
                .request_timeout = (usec_t) c->request_timeout * USEC_PER_SEC,
                .max_retries = c->max_retries,
                .max_response = c->max_response_size,
        };
}

int manager_check_online(const Config *c, char *msg, size_t msg_size) {
        /* Freed in the reverse order: the keeper (and a login its thread may still be making
         * with u) before the client it uses. */
        _cleanup_(upstream_freep) Upstream *u = NULL;
        _cleanup_(token_keeper_freep) TokenKeeper *tk = NULL;
        _cleanup_(secret_freep) Secret *token = NULL;
        char err[UPSTREAM_ERROR_MAX] = "";
        UpstreamResponse resp = {};
        UpstreamSettings us;
        uint64_t generation;
        RateLimit rl;
        int r;

        ratelimit_init(&rl, c->rate_limit_minute, c->rate_limit_hour);
        upstream_settings_from_config(c, &us);
        r = upstream_new(&us, &rl, &u);
        if (r >= 0)
                r = token_keeper_new((usec_t) c->token_lifetime * USEC_PER_SEC, (usec_t) c->refresh_margin * USEC_PER_SEC,
                                     upstream_login, u, NULL, NULL, &tk);
        if (r >= 0) {
                upstream_set_token_keeper(u, tk);
                r = token_keeper_start(tk);
        }
        if (r < 0) {
                snprintf(msg, msg_size, "cannot set up the Visier client: %s", strerror(-r));
                return r;
        }
        r = token_acquire(tk, clock_now() + (usec_t) c->request_timeout * USEC_PER_SEC, &token, &generation, err,
                          sizeof(err));
        if (r < 0) {
                snprintf(msg, msg_size, "cannot log in to Visier at %s as %s: %s", c->base_url, c->username,
                         err[0] ? err : strerror(-r));
                return r;
        }
        r = upstream_call(u,
                          &(UpstreamRequest) { .endpoint = "/v1/admin/capabilities", .method = "GET",
                                               .path = "/v1/admin/capabilities",
                                               .headers = (const char *const[]) { "Accept: application/json", NULL },
                                               .idempotent = true },
                          &resp, err, sizeof(err));
        if (r < 0) {
                snprintf(msg, msg_size, "logged in to Visier as %s, but GET /v1/admin/capabilities failed: %s",
                         c->username, err);
                return r;
        }
        if (resp.status != 200) {
                json_t *st = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
                const char *why = json_string_value(json_object_get(st, "localizedMessage"));

                snprintf(msg, msg_size, "logged in to Visier as %s, but GET /v1/admin/capabilities answered %ld: %s",
                         c->username, resp.status, why ? why : "(no message)");
                json_decref(st);
                upstream_response_done(&resp);
                return -EPROTO;
        }
        upstream_response_done(&resp);
        snprintf(msg, msg_size, "logged in to Visier at %s as %s and read GET /v1/admin/capabilities (200)",
                 c->base_url, c->username);
        return 0;
}

static void cache_settings_from_config(const Config *c, CacheSettings *ret) {
        *ret = (CacheSettings) { .max_bytes = c->cache_max_bytes };
        ret->ttl[CACHE_CLASS_MODEL] = (usec_t) c->cache_model_ttl * USEC_PER_SEC;
        ret->ttl[CACHE_CLASS_MEMBERS] = (usec_t) c->cache_members_ttl * USEC_PER_SEC;
        ret->ttl[CACHE_CLASS_PERMISSIONS] = (usec_t) c->cache_permissions_ttl * USEC_PER_SEC;
        ret->ttl[CACHE_CLASS_ASSIGNMENTS] = (usec_t) c->cache_assignments_ttl * USEC_PER_SEC;
}

_Static_assert(sizeof(((PublisherSettings *) NULL)->project_tenants) >= CONFIG_PROJECT_TENANTS_MAX,
               "[jobs] project_tenants fits the publisher's settings");

static void publisher_settings_from_config(const Config *c, PublisherSettings *ret) {
        *ret = (PublisherSettings) {
                .batch_max = c->batch_max,
                .max_attempts = c->max_attempts,
                .give_up_after_ms = (int64_t) c->give_up_after * 1000,
                .batch_delay = (usec_t) c->batch_delay_ms * USEC_PER_MSEC,
                .request_timeout = (usec_t) c->request_timeout * USEC_PER_SEC,
                .publish_settle = (usec_t) c->publish_settle * USEC_PER_SEC,
                .keep_succeeded_ms = (int64_t) c->keep_succeeded * 1000,
                .keep_failed_ms = (int64_t) c->keep_failed * 1000,
                .project_mode = streq(c->publish, "project"),
                .round_max_calls = c->round_max_calls,
        };
        snprintf(ret->project_tenants, sizeof(ret->project_tenants), "%s", strempty(c->project_tenants));
}

int manager_new(Config *config, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->config = config;
        pthread_rwlock_init(&m->config_lock, NULL);
        pthread_mutex_init(&m->finished_lock, NULL);
        m->started_at = clock_now();
        history_init(&m->history);
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* Reverse order: held answers go out, the workers finish what they run (their
         * answers are queued), the listener closes; then the publisher finishes and records
         * the call in flight, and the keeper and the rest stop. */
        m->draining = true;
        m->fleet_timer = sd_event_source_disable_unref(m->fleet_timer); /* no new tick */
        m->jobwatch = jobwatch_free(m->jobwatch);
        if (m->publisher)
                publisher_release_waiters(m->publisher);
        if (m->http)
                api_release_holds(m);
        if (m->runner)
                runner_stop(m->runner);
        worker_pool_stop(m->workers);
        if (m->http)
                api_release_holds(m); /* holds the last completions started */
        http_server_stop(m->http); /* every call and stream of a request is aborted with it */
        m->http = NULL;
        m->metrics_http = http_server_stop(m->metrics_http);
        if (m->upstream)
                upstream_detach_event(m->upstream); /* before the keeper it subscribes to goes */
        runner_free(m->runner);
        publisher_free(m->publisher); /* its last events still post to the pool */
        worker_pool_free(m->workers);
        if (m->fleet) {
                /* Nothing of this node publishes any more: the next holder need not wait for the
                 * lease to lapse (a call it left open is still waited out, docs/fleet.md). */
                char err[FLEET_ERROR_MAX];

                if (fleet_release(m->fleet, err, sizeof(err)) < 0 && err[0])
                        log_info("fleet: %s", err);
        }
        cache_free(m->cache);
        session_table_free(m->sessions);
        authfail_free(m->authfail);
        token_keeper_free(m->token);
        metrics_free(m->metrics);
        upstream_free(m->upstream);
        fleet_free(m->fleet); /* after the upstream client, which takes from its budget */
        store_close(m->store);
        if (m->rate_ready)
                ratelimit_done(&m->rate);
        sd_event_source_unref(m->status_timer);
        sd_event_source_unref(m->drain_timer);
        sd_event_unref(m->event);
        config_free(m->config);
        exports_free(m->exports);
        pthread_rwlock_destroy(&m->config_lock);
        pthread_mutex_destroy(&m->finished_lock);
        free(m->finished);
        free(m);
        return NULL;
}

static void on_login(void *userdata, int result, const char *err, usec_t backoff) {
        Manager *m = userdata;

        if (result >= 0) {
                /* The keeper's thread: the configuration may be swapped by a reload meanwhile. */
                pthread_rwlock_rdlock(&m->config_lock);
                log_debug("token refresh due in about %u s (token_lifetime %u s less refresh_margin %u s, less a "
                          "little jitter)",
                          m->config->token_lifetime - m->config->refresh_margin, m->config->token_lifetime,
                          m->config->refresh_margin);
                log_full(LOG_INFO, LOG_MSGID_LOGIN_OK, NULL, "logged in to Visier as %s; token trusted for %u s",
                         m->config->username, m->config->token_lifetime);
                pthread_rwlock_unlock(&m->config_lock);
        } else
                log_full(LOG_WARNING, LOG_MSGID_LOGIN_FAILED, NULL, "login to Visier failed: %s; next attempt in %llu s",
                         err, (unsigned long long) (backoff / USEC_PER_SEC));
}

static void on_upstream_call(void *userdata, const char *endpoint, long status, usec_t latency) {
        Manager *m = userdata;

        metrics_upstream_call(m->metrics, endpoint, status, latency);
}

static void on_budget_wait(void *userdata, const char *endpoint, usec_t wait) {
        Manager *m = userdata;
        unsigned minute, hour;

        if (!log_enabled(LOG_DEBUG))
                return;
        ratelimit_snapshot(&m->rate, clock_now(), &minute, &hour);
        log_debug("rate budget: %s waits %.3f s for a call (%u left this minute, %u this hour)", endpoint,
                  (double) wait / (double) USEC_PER_SEC, minute, hour);
}

typedef struct JobFinished {
        Manager *m;
        size_t n;
        int64_t ids[];
} JobFinished;

static void job_finished_on_loop(void *userdata) {
        JobFinished *f = userdata;

        for (size_t i = 0; i < f->n; i++)
                api_job_finished(f->m, f->ids[i]);
        free(f);
}

static void post_finished(Manager *m, const int64_t *ids, size_t n) {
        JobFinished *f = malloc(sizeof(*f) + n * sizeof(int64_t));

        /* Without memory the holds still end: at their deadline, with the job's 202. */
        if (!f)
                return;
        f->m = m;
        f->n = n;
        memcpy(f->ids, ids, n * sizeof(int64_t));
        if (worker_post(m->workers, job_finished_on_loop, f) < 0)
                free(f);
}

void manager_job_finished(Manager *m, int64_t job_id) {
        post_finished(m, &job_id, 1);
}

/* The publisher's JOB_DONE events come inside its recording transaction: the jobs are told
 * to the loop once it is committed (JOBS_CHANGED), so a held answer reads the outcome. */
static void finished_note(Manager *m, int64_t id) {
        pthread_mutex_lock(&m->finished_lock);
        if (m->n_finished == m->cap_finished) {
                size_t cap = m->cap_finished ? m->cap_finished * 2 : 64;
                int64_t *a = realloc(m->finished, cap * sizeof(int64_t));

                if (!a) {
                        pthread_mutex_unlock(&m->finished_lock);
                        return;
                }
                m->finished = a;
                m->cap_finished = cap;
        }
        m->finished[m->n_finished++] = id;
        pthread_mutex_unlock(&m->finished_lock);
}

static void finished_flush(Manager *m) {
        pthread_mutex_lock(&m->finished_lock);
        if (m->n_finished > 0)
                post_finished(m, m->finished, m->n_finished);
        m->n_finished = 0;
        pthread_mutex_unlock(&m->finished_lock);
}

static void on_publisher(void *userdata, const PublisherEvent *e) {
        char job[48], status[48], op[48];
        const char *fields[] = { job, status, op, NULL };

        snprintf(job, sizeof(job), "JOB_ID=%lld", (long long) e->job_id);
        snprintf(status, sizeof(status), "VISIER_STATUS=%ld", e->status);
        snprintf(op, sizeof(op), "JOB_OPERATION=%s", strempty(e->op));
        switch (e->kind) {
        case PUBLISHER_CALL:
                metrics_write_call(((Manager *) userdata)->metrics, e->n_items);
                log_full(LOG_DEBUG, LOG_MSGID_WRITE_CALL, fields + 1, "batch: %s of %zu items merged from %zu jobs", e->op,
                         e->n_items, e->n_jobs);
                if (e->message)
                        log_full(LOG_WARNING, LOG_MSGID_WRITE_CALL, fields + 1,
                                 "write call (%s of %zu items from %zu jobs) failed: %s", e->op, e->n_items, e->n_jobs,
                                 e->message);
                else
                        log_full(LOG_INFO, LOG_MSGID_WRITE_CALL, fields + 1,
                                 "write call (%s of %zu items from %zu jobs) answered %ld", e->op, e->n_items, e->n_jobs,
                                 e->status);
                break;
        case PUBLISHER_JOBS_CHANGED:
                finished_flush(userdata);
                break;
        case PUBLISHER_JOB_DONE:
                finished_note(userdata, e->job_id);
                log_full(streq(strempty(e->state), "succeeded") ? LOG_INFO : LOG_WARNING, LOG_MSGID_JOB_DONE, fields,
                         "job %lld (%s, %zu items) %s%s%s", (long long) e->job_id, e->op, e->n_items, e->state,
                         e->message ? ": " : "", strempty(e->message));
                break;
        case PUBLISHER_JOB_RETRY:
                log_full(LOG_NOTICE, LOG_MSGID_JOB_RETRY, fields, "job %lld (%s) goes back to the queue: %s",
                         (long long) e->job_id, e->op, strempty(e->message));
                break;
        case PUBLISHER_ORPHAN:
                log_full(LOG_NOTICE, LOG_MSGID_JOB_RETRY, fields,
                         "job %lld (%s, %zu items) was running when visierd stopped; reconciling it with Visier",
                         (long long) e->job_id, e->op, e->n_items);
                break;
        case PUBLISHER_STORE_ERROR:
                log_error("job database: %s", strempty(e->message));
                break;
        case PUBLISHER_LANE_WAIT:
        case PUBLISHER_BUDGET_WAIT:
                log_full(LOG_NOTICE, LOG_MSGID_WRITE_CALL, NULL, "%s", strempty(e->message));
                break;
        case PUBLISHER_FENCED:
                log_full(LOG_NOTICE, LOG_MSGID_WRITE_CALL, NULL, "fleet: %s", strempty(e->message));
                break;
        case PUBLISHER_FLEET_LANE:
                log_full(LOG_INFO, LOG_MSGID_WRITE_CALL, NULL, "fleet: %s", strempty(e->message));
                break;
        case PUBLISHER_ROUND:
                log_full(e->status == 200 ? LOG_INFO : LOG_NOTICE, LOG_MSGID_WRITE_CALL, fields + 1, "%s",
                         strempty(e->message));
                break;
        }
}

/* Load the named exports; every problem is logged. */
static int load_exports(const Config *c, Exports **ret) {
        char **errors = NULL;
        size_t n = 0;
        int r;

        r = exports_load(c->exports_dir, ret, &errors, &n);
        for (size_t i = 0; i < n; i++)
                log_full(LOG_ERR, LOG_MSGID_CONFIG, NULL, "export definition: %s", errors[i]);
        exports_errors_free(errors, n);
        return r;
}

static void on_export_run(void *userdata, const RunnerEvent *e) {
        Manager *m = userdata;
        char job[48];
        const char *fields[] = { job, NULL };

        metrics_export_run(m->metrics, e->ok, e->bytes, e->duration);
        snprintf(job, sizeof(job), "JOB_ID=%lld", (long long) e->job_id);
        log_full(e->ok ? LOG_INFO : LOG_WARNING, LOG_MSGID_JOB_DONE, fields, "export run %lld %s (%llu bytes in %.1f s)%s%s",
                 (long long) e->job_id, e->ok ? "succeeded" : "failed", (unsigned long long) e->bytes,
                 (double) e->duration / (double) USEC_PER_SEC, e->message ? ": " : "", strempty(e->message));
}

/* ---- fleet mode (docs/fleet.md) ---- */

typedef struct FleetTickRun {
        Manager *m;
        int r;
        FleetLane lane;
        char err[FLEET_ERROR_MAX];
} FleetTickRun;

/* On a worker: the tick blocks on the database (fleet.h bounds it), never the loop. */
static void fleet_tick_work(void *userdata) {
        FleetTickRun *t = userdata;

        t->r = fleet_tick(t->m->fleet, &t->lane, t->err, sizeof(t->err));
}

/* On the loop: say what changed, once, and let the publisher and the runner look again. */
static void fleet_tick_done(void *userdata) {
        FleetTickRun *t = userdata;
        Manager *m = t->m;
        const FleetLane *was = &m->fleet_lane, *now = &t->lane;

        m->fleet_ticking = false;
        if (t->r < 0 && !streq(m->fleet_error, t->err))
                log_warning("fleet: %s", t->err);
        else if (t->r >= 0 && m->fleet_error[0])
                log_info("fleet: the database answers again");
        snprintf(m->fleet_error, sizeof(m->fleet_error), "%s", t->r < 0 ? t->err : "");
        if (now->held && (!was->held || now->term != was->term)) {
                usec_t at = clock_now();

                /* The grant's wait (send_after) is the lane's: a call fenced under an earlier term,
                 * this node's own before a restart too, may still run until its deadline, and
                 * Visier go on publishing for publish_settle after it. The publisher waits it out
                 * in fleet_lane_usable() without a word, so the operator learns why from here, as
                 * a single visierd's lane_wait_locked() tells its own. */
                if (now->send_after > at)
                        log_info("fleet: this node holds the publish lane, term %lld; waiting %llu ms before the "
                                 "next write: a write call under an earlier term may still be open, or its answer "
                                 "was lost, and Visier may still be publishing it",
                                 (long long) now->term, (unsigned long long) ((now->send_after - at) / USEC_PER_MSEC));
                else
                        log_info("fleet: this node holds the publish lane, term %lld", (long long) now->term);
        } else if (!now->held && was->held)
                log_info("fleet: this node no longer holds the publish lane (term %lld)%s%s", (long long) was->term,
                         now->holder[0] ? "; it is held by " : "", now->holder);
        m->fleet_lane = *now;
        if (m->publisher)
                publisher_wake(m->publisher);
        if (m->runner)
                runner_wake(m->runner);
        free(t);
}

static int on_fleet_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        FleetTickRun *t;

        (void) sd_event_source_set_time_relative(s, (usec_t) m->config->fleet_renew_seconds * USEC_PER_SEC);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        if (m->fleet_ticking)
                return 0; /* the last one is still waiting on the database */
        t = calloc(1, sizeof(*t));
        if (!t)
                return 0;
        t->m = m;
        m->fleet_ticking = true;
        if (worker_queue(m->workers, fleet_tick_work, fleet_tick_done, t) < 0) {
                m->fleet_ticking = false;
                free(t);
        }
        return 0;
}

/* A job ended on some node (0: perhaps several, while the watch was reconnecting). */
static void on_job_final(void *userdata, int64_t job_id) {
        Manager *m = userdata;

        if (job_id > 0) {
                api_job_finished(m, job_id);
                return;
        }
        if (job_id == 0)
                api_recheck_holds(m);
        /* A job queued on any node (or notifications missed): the lane's holder claims it now,
         * not at its next poll. (Export runs are left to the runner's own poll.) */
        if (m->publisher)
                publisher_wake(m->publisher);
}

/* The node joins the fleet: its membership (ticked on a worker, first at once), the shared
 * budget for every call, the lane for the publisher and the runner, the store's fence, and the
 * watch for jobs ended elsewhere. */
static int fleet_start(Manager *m) {
        const Config *c = m->config;
        FleetParams fp;
        char err[FLEET_ERROR_MAX] = "";
        int r;

        r = fleet_params_from_config(c, &fp);
        if (r >= 0)
                r = fleet_new(&fp, &m->fleet, err, sizeof(err));
        if (r < 0) {
                log_error("fleet: %s", err[0] ? err : strerror(-r));
                return r;
        }
        /* Kept and applied at every connection (fleet.h): only a refusal of the caps themselves
         * is an error here, not a database that is down. */
        r = fleet_budget_set_caps(m->fleet, &(FleetBudgetCaps) { .per_minute = c->rate_limit_minute,
                                                                  .per_hour = c->rate_limit_hour });
        if (r == -EINVAL) {
                log_error("fleet: the rate limits (%u a minute, %u an hour) cannot be the fleet's budget",
                          c->rate_limit_minute, c->rate_limit_hour);
                return r;
        }
        upstream_set_fleet(m->upstream, m->fleet);
        publisher_set_fleet(m->publisher, m->fleet);
        runner_set_fleet(m->runner, m->fleet);
        r = store_set_fence(m->store, fp.tenant, fp.node, fp.settle_ms);
        if (r < 0) {
                log_error("fleet: the job store cannot fence the lane: %s", strerror(-r));
                return r;
        }
        r = sd_event_add_time_relative(m->event, &m->fleet_timer, CLOCK_MONOTONIC, 0, 0, on_fleet_timer, m);
        if (r < 0) {
                log_error("fleet: cannot arm the membership timer: %s", strerror(-r));
                return r;
        }
        r = jobwatch_new(m->event, c->store_url, c->store_password ? c->store_password->data : NULL, on_job_final, m,
                         &m->jobwatch);
        if (r < 0) {
                log_error("fleet: cannot watch for jobs ended on other nodes: %s", strerror(-r));
                return r;
        }
        log_info("fleet: node %s of tenant %s's fleet; lease %u s, renewed every %u s", fp.node, fp.tenant,
                 c->fleet_lease_seconds, c->fleet_renew_seconds);
        return 0;
}

int manager_start(Manager *m) {
        const Config *c = m->config;

        atomic_store(&m->access_log, streq(c->log_access, "yes"));
        UpstreamSettings us;
        PublisherSettings ps;
        char err[512] = "";
        int fds[HTTP_LISTENERS_MAX], n_fds;
        char **fd_names = NULL;
        sigset_t mask;
        int r;

        /* Block the signals the loop handles before any thread exists: every thread inherits
         * the mask, so they reach the loop's signalfd and never kill a worker thread. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);

        r = sd_event_default(&m->event);
        if (r < 0) {
                log_error("cannot set up the event loop: %s", strerror(-r));
                return r;
        }
        r = worker_pool_new(m->event, MANAGER_WORKERS, &m->workers);
        if (r < 0) {
                log_error("cannot start the worker threads: %s", strerror(-r));
                return r;
        }
        raise_fd_limit(c->max_connections);

        if (config_fleet_mode(c))
                r = store_open_pg(c->store_url, c->store_password ? c->store_password->data : NULL, &m->store, err,
                                  sizeof(err));
        else
                r = store_open(c->database, &m->store, err, sizeof(err));
        if (r < 0) {
                log_error("%s", err[0] ? err : strerror(-r));
                return r;
        }

        r = metrics_new(&m->metrics);
        if (r < 0)
                return r;
        ratelimit_init(&m->rate, c->rate_limit_minute, c->rate_limit_hour);
        m->rate_ready = true;

        upstream_settings_from_config(c, &us);
        r = upstream_new(&us, &m->rate, &m->upstream);
        if (r < 0) {
                log_error("cannot set up the Visier client: %s", strerror(-r));
                return r;
        }
        upstream_set_observer(m->upstream, on_upstream_call, m);
        upstream_set_budget_wait_observer(m->upstream, on_budget_wait, m);
        r = token_keeper_new((usec_t) c->token_lifetime * USEC_PER_SEC, (usec_t) c->refresh_margin * USEC_PER_SEC,
                             upstream_login, m->upstream, on_login, m, &m->token);
        if (r < 0) {
                log_error("cannot set up the token keeper: %s", strerror(-r));
                return r;
        }
        upstream_set_token_keeper(m->upstream, m->token);
        r = upstream_attach_event(m->upstream, m->event);
        if (r < 0) {
                log_error("cannot drive the Visier client from the event loop: %s", strerror(-r));
                return r;
        }

        r = load_exports(c, &m->exports);
        if (r < 0) {
                log_error("invalid export definitions in %s; not starting", c->exports_dir);
                return r;
        }
        if (c->exports_results)
                snprintf(m->results_dir, sizeof(m->results_dir), "%s", c->exports_results);
        else {
                /* Export results live next to the job database (in fleet mode, the path it
                 * would have: they stay on the node that ran the export). */
                char *slash;
                snprintf(m->results_dir, sizeof(m->results_dir), "%s", c->database);
                slash = strrchr(m->results_dir, '/');
                if (slash)
                        snprintf(slash, sizeof(m->results_dir) - (size_t) (slash - m->results_dir), "/exports");
                else
                        snprintf(m->results_dir, sizeof(m->results_dir), "exports");
        }
        r = runner_new(m->store, m->upstream, m->results_dir, on_export_run, m, &m->runner);
        if (r < 0) {
                log_error("cannot set up export runs in %s: %s", m->results_dir, strerror(-r));
                return r;
        }
        store_set_max_pending(m->store, c->max_pending);
        publisher_settings_from_config(c, &ps);
        r = publisher_new(m->store, m->upstream, &ps, on_publisher, m, &m->publisher);
        if (r < 0) {
                log_error("cannot set up the publisher: %s", strerror(-r));
                return r;
        }
        {
                CacheSettings cs;

                cache_settings_from_config(c, &cs);
                r = cache_new(&cs, &m->cache);
                if (r < 0) {
                        log_error("cannot set up the metadata cache: %s", strerror(-r));
                        return r;
                }
                publisher_set_cache(m->publisher, m->cache);
        }
        r = session_table_new(c->max_sessions, &m->sessions);
        if (r < 0) {
                log_error("cannot set up the sign-in sessions: %s", strerror(-r));
                return r;
        }
        r = authfail_new(&m->authfail);
        if (r < 0) {
                log_error("cannot set up the authentication failure table: %s", strerror(-r));
                return r;
        }

        /* Sockets passed by systemd (visierd.socket) replace the configured listeners. */
        n_fds = sd_listen_fds_with_names(1, &fd_names);
        if (n_fds < 0) {
                log_error("cannot take the sockets passed by systemd: %s", strerror(-n_fds));
                return n_fds;
        }
        for (int i = 0; i < n_fds; i++)
                log_info("socket activation: listening socket %d named '%s'", SD_LISTEN_FDS_START + i,
                         fd_names && fd_names[i] ? fd_names[i] : "unknown");
        for (int i = 0; fd_names && fd_names[i]; i++)
                free(fd_names[i]);
        free(fd_names);
        for (int i = 0; i < n_fds && i < HTTP_LISTENERS_MAX; i++) {
                fds[i] = SD_LISTEN_FDS_START + i;
                if (streq(c->listen_tcp, "no") &&
                    (sd_is_socket(fds[i], AF_INET, SOCK_STREAM, 1) > 0 || sd_is_socket(fds[i], AF_INET6, SOCK_STREAM, 1) > 0)) {
                        log_error("[listen] tcp = no, but systemd passed a TCP socket (fd %d): remove its "
                                  "ListenStream= from visierd.socket (a drop-in with an empty ListenStream= and the "
                                  "unix socket's), or set tcp = yes",
                                  fds[i]);
                        return -EADDRNOTAVAIL;
                }
        }
        if (n_fds > HTTP_LISTENERS_MAX) {
                log_error("systemd passed %d sockets; at most %d are supported", n_fds, HTTP_LISTENERS_MAX);
                return -E2BIG;
        }
        r = http_server_start(m->event,
                              &(HttpSettings) {
                                      .fds = fds,
                                      .n_fds = (size_t) n_fds,
                                      .tcp = streq(c->listen_tcp, "yes"),
                                      .address = c->listen_address,
                                      .port = c->listen_port,
                                      .socket_path = c->listen_socket,
                                      .socket_mode = CONFIG_SOCKET_MODE,
                                      .max_connections = c->max_connections,
                                      .ops_reserve = MANAGER_OPS_RESERVE,
                                      .max_body = c->max_body_size,
                                      .max_header = c->max_header_size,
                                      .idle_timeout = c->idle_timeout,
                                      .read_timeout = c->read_timeout,
                                      .refused = api_refused,
                              },
                              api_handle, m, &m->http, err, sizeof(err));
        if (r < 0) {
                log_error("%s", err);
                return r;
        }
        if (c->metrics_port >= 0 || (c->metrics_socket && *c->metrics_socket)) {
                r = http_server_start(m->event,
                                      &(HttpSettings) {
                                              .tcp = c->metrics_port >= 0,
                                              .address = c->metrics_address,
                                              .port = c->metrics_port >= 0 ? (unsigned) c->metrics_port : 0,
                                              .socket_path = c->metrics_socket,
                                              .socket_mode = CONFIG_SOCKET_MODE,
                                              .max_connections = MANAGER_METRICS_CONNECTIONS,
                                              .max_body = 1024,
                                              .max_header = c->max_header_size,
                                              .idle_timeout = c->idle_timeout,
                                              .read_timeout = c->read_timeout,
                                              .refused = api_refused,
                                      },
                                      api_handle_metrics, m, &m->metrics_http, err, sizeof(err));
                if (r < 0) {
                        log_error("[metrics]: %s", err);
                        return r;
                }
        }

        if (config_fleet_mode(c)) {
                r = fleet_start(m);
                if (r < 0)
                        return r;
        }
        r = token_keeper_start(m->token);
        if (r < 0) {
                log_error("cannot start the token keeper: %s", strerror(-r));
                return r;
        }
        r = publisher_start(m->publisher);
        if (r < 0) {
                log_error("cannot start the publisher: %s", strerror(-r));
                return r;
        }
        r = runner_start(m->runner);
        if (r < 0) {
                log_error("cannot start export runs: %s", strerror(-r));
                return r;
        }
        return 0;
}

static void on_drained(void *userdata) {
        Manager *m = userdata;

        (void) sd_event_exit(m->event, 0);
}

static int on_drain_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_full(LOG_WARNING, LOG_MSGID_SHUTDOWN, NULL,
                 "stopping: %u requests still in progress after %u s ([listen] drain_timeout); cutting them off",
                 http_server_active(m->http), m->config->drain_timeout);
        return sd_event_exit(m->event, 0);
}

/* SIGTERM: stop claiming writes, stop accepting, let what is in progress finish (within
 * drain_timeout), then leave the loop. */
static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        int r;

        if (m->draining)
                return 0;
        log_full(LOG_INFO, LOG_MSGID_SHUTDOWN, NULL, "received %s, stopping", strsignal((int) si->ssi_signo));
        publisher_stop(m->publisher); /* first: no write is claimed or sent from now on */
        m->draining = true;
        sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing the requests in progress");
        api_release_holds(m);   /* held writes get their 202 with the job now */
        runner_stop(m->runner); /* an export run is cut short and queued again */
        r = sd_event_add_time_relative(m->event, &m->drain_timer, CLOCK_MONOTONIC,
                                       (usec_t) m->config->drain_timeout * USEC_PER_SEC, 0, on_drain_timeout, m);
        if (r < 0)
                return sd_event_exit(m->event, 0);
        http_server_drain(m->http, on_drained, m);
        if (m->metrics_http)
                http_server_drain(m->metrics_http, NULL, NULL); /* scrapes are answered at once */
        return 0;
}


/* What a reload cannot change without a restart. */
static void warn_restart_needed(const Config *old, const Config *new) {
        if (!streq(old->listen_address, new->listen_address) || old->listen_port != new->listen_port ||
            !streq(old->listen_tcp, new->listen_tcp) ||
            !streq(strempty(old->listen_socket), strempty(new->listen_socket)) ||
            old->max_connections != new->max_connections || old->max_body_size != new->max_body_size ||
            old->max_header_size != new->max_header_size || old->max_sessions != new->max_sessions ||
            old->max_connections_per_client != new->max_connections_per_client ||
            old->idle_timeout != new->idle_timeout || old->read_timeout != new->read_timeout)
                log_warning("[listen] changes take effect only after a restart");
        if (!streq(strempty(old->metrics_listen), strempty(new->metrics_listen)) ||
            !streq(strempty(old->metrics_socket), strempty(new->metrics_socket)))
                log_warning("[metrics] changes take effect only after a restart");
        if (!streq(old->database, new->database))
                log_warning("[store] database changes take effect only after a restart");
        if (!streq(strempty(old->store_url), strempty(new->store_url)) ||
            !streq(strempty(old->store_password_file), strempty(new->store_password_file)))
                log_warning("[store] url and password_file changes take effect only after a restart");
        if (!streq(strempty(old->fleet_node), strempty(new->fleet_node)) ||
            !streq(strempty(old->fleet_tenant), strempty(new->fleet_tenant)) ||
            old->fleet_lease_seconds != new->fleet_lease_seconds || old->fleet_renew_seconds != new->fleet_renew_seconds)
                log_warning("[fleet] changes take effect only after a restart");
}

/* Sessions of a [client] whose section went or whose token changed end with the reload; the
 * anonymous ones end once client sections appear. */
static void end_changed_sessions(Manager *m, const Config *old, const Config *new) {
        if (old->n_clients == 0 && new->n_clients > 0)
                (void) session_end_client(m->sessions, "");
        for (size_t i = 0; i < old->n_clients; i++) {
                bool kept = false;

                for (size_t j = 0; j < new->n_clients && !kept; j++)
                        kept = streq(old->clients[i].name, new->clients[j].name) &&
                               secret_equal(old->clients[i].token, new->clients[j].token);
                if (!kept && session_end_client(m->sessions, old->clients[i].name) > 0)
                        log_full(LOG_NOTICE, LOG_MSGID_CONFIG, NULL,
                                 "[client %s] changed: its sign-in sessions end", old->clients[i].name);
        }
}

int manager_reload(Manager *m) {
        ConfigErrors errors = {};
        Config *nc = NULL, *old;
        Exports *nx = NULL, *old_exports;
        UpstreamSettings us;
        PublisherSettings ps;
        bool relogin;
        int r;

        sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
        if (!m->config->path || streq(m->config->path, "--dev")) {
                log_warning("received SIGHUP: --dev mode has no configuration file to reload");
                sd_notify(0, "READY=1");
                return 0;
        }
        r = config_load_all(m->config->path, &nc, &errors);
        if (r < 0) {
                for (size_t i = 0; i < errors.n; i++)
                        log_full(LOG_ERR, LOG_MSGID_CONFIG, NULL, "%s", errors.messages[i]);
                log_full(LOG_ERR, LOG_MSGID_CONFIG, NULL,
                         "configuration reload rejected (%zu error%s); still running with the previous configuration",
                         errors.n, errors.n == 1 ? "" : "s");
                config_errors_clear(&errors);
                sd_notify(0, "READY=1");
                return r;
        }
        r = load_exports(nc, &nx);
        if (r < 0) {
                log_full(LOG_ERR, LOG_MSGID_CONFIG, NULL,
                         "configuration reload rejected (invalid export definitions); still running with the previous "
                         "configuration");
                config_free(nc);
                sd_notify(0, "READY=1");
                return r;
        }
        warn_restart_needed(m->config, nc);
        relogin = !secret_equal(m->config->apikey, nc->apikey) || !secret_equal(m->config->password, nc->password) ||
                  !streq(m->config->base_url, nc->base_url) || !streq(m->config->username, nc->username);

        upstream_settings_from_config(nc, &us);
        r = upstream_update(m->upstream, &us);
        if (r < 0) {
                log_error("configuration reload failed: %s; still running with the previous configuration",
                          strerror(-r));
                config_free(nc);
                exports_free(nx);
                sd_notify(0, "READY=1");
                return r;
        }
        token_keeper_set_times(m->token, (usec_t) nc->token_lifetime * USEC_PER_SEC,
                               (usec_t) nc->refresh_margin * USEC_PER_SEC);
        ratelimit_set_caps(&m->rate, nc->rate_limit_minute, nc->rate_limit_hour);
        if (m->fleet) {
                /* The tenant's caps are the last node's to set them (fleet.h); this node's share
                 * during an outage follows them. */
                (void) fleet_budget_set_caps(m->fleet, &(FleetBudgetCaps) { .per_minute = nc->rate_limit_minute,
                                                                             .per_hour = nc->rate_limit_hour });
                upstream_set_fleet(m->upstream, m->fleet);
        }
        publisher_settings_from_config(nc, &ps);
        publisher_set_settings(m->publisher, &ps);
        {
                CacheSettings cs;

                cache_settings_from_config(nc, &cs);
                cache_set_settings(m->cache, &cs);
                if (relogin) /* the answers stored belong to another identity */
                        cache_invalidate(m->cache, NULL, CACHE_CLASSES_ALL);
        }
        store_set_max_pending(m->store, nc->max_pending);

        end_changed_sessions(m, m->config, nc);
        pthread_rwlock_wrlock(&m->config_lock);
        old = m->config;
        m->config = nc;
        log_set_json(streq(nc->log_format, "json"));
        atomic_store(&m->access_log, streq(nc->log_access, "yes"));
        old_exports = m->exports;
        m->exports = nx;
        pthread_rwlock_unlock(&m->config_lock);
        config_free(old);
        exports_free(old_exports);

        if (relogin) {
                log_full(LOG_NOTICE, LOG_MSGID_CONFIG, NULL, "Visier credentials or origin changed: logging in again");
                token_keeper_relogin(m->token);
        }
        log_full(LOG_INFO, LOG_MSGID_CONFIG, NULL, "configuration reloaded from %s", m->config->path);
        sd_notify(0, "READY=1");
        return 0;
}

static int on_reload_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) manager_reload(userdata);
        return 0;
}

void manager_record_history(Manager *m) {
        int64_t counts[_JOB_STATE_MAX], oldest;

        if (!m->store)
                return;
        store_counts_get(m->store, counts, &oldest);
        history_record(&m->history, (int64_t) (clock_realtime() / USEC_PER_MSEC), counts);
}

/* STATUS= in words: the token state and the queue depth, sent when it changes. Also takes
 * the queue history's sample (the timer runs every few seconds, so no minute is missed). */
static void manager_update_status(Manager *m) {
        char status[256];
        TokenStatus ts;
        json_t *counts;

        manager_record_history(m);
        token_keeper_status(m->token, &ts);
        counts = store_counts(m->store, (int64_t) (clock_realtime() / USEC_PER_MSEC));
        if (ts.valid)
                snprintf(status, sizeof(status), "token valid for %llu min%s; jobs: %lld queued, %lld running",
                         (unsigned long long) (ts.expires_in / USEC_PER_SEC / 60),
                         streq(ts.state, "failing") ? " (refresh failing)" : "",
                         (long long) json_integer_value(json_object_get(counts, "queued")),
                         (long long) json_integer_value(json_object_get(counts, "running")));
        else
                snprintf(status, sizeof(status), "no Visier token (%s%s%.100s); jobs: %lld queued, %lld running",
                         ts.state, ts.last_error[0] ? ": " : "", ts.last_error,
                         (long long) json_integer_value(json_object_get(counts, "queued")),
                         (long long) json_integer_value(json_object_get(counts, "running")));
        json_decref(counts);
        if (!streq(status, m->last_status)) {
                snprintf(m->last_status, sizeof(m->last_status), "%s", status);
                sd_notifyf(0, "STATUS=%s", status);
        }
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        manager_update_status(m);
        return sd_event_source_set_time_relative(s, MANAGER_STATUS_INTERVAL);
}

int manager_run(Manager *m) {
        int r;

        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGHUP, on_reload_signal, m);
        if (r < 0) {
                log_error("cannot watch signals: %s", strerror(-r));
                return r;
        }

        /* Keep-alives come from the loop itself, so a stuck loop gets the service restarted. */
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                log_warning("cannot enable the watchdog: %s", strerror(-r));
        r = sd_event_add_time_relative(m->event, &m->status_timer, CLOCK_MONOTONIC, MANAGER_STATUS_INTERVAL, 0,
                                       on_status_timer, m);
        if (r < 0)
                log_warning("cannot start the status timer: %s", strerror(-r));

        if (http_server_port(m->http) > 0) {
                const char *a = m->config->listen_address;
                bool v6 = strchr(a, ':');

                /* The URL a local client uses: the configured address, or loopback for a
                 * wildcard one. */
                if (streq(a, "0.0.0.0") || streq(a, "::"))
                        a = v6 ? "::1" : "127.0.0.1";
                log_full(LOG_INFO, LOG_MSGID_STARTUP, NULL,
                         "visierd %s serving Visier %s on http://%s%s%s:%u/ (listening on %s)", PACKAGE_VERSION,
                         m->config->base_url, v6 ? "[" : "", a, v6 ? "]" : "", http_server_port(m->http),
                         http_server_describe(m->http));
        }
        else
                log_full(LOG_INFO, LOG_MSGID_STARTUP, NULL, "visierd %s serving Visier %s (listening on %s)",
                         PACKAGE_VERSION, m->config->base_url, http_server_describe(m->http));
        if (m->metrics_http)
                log_full(LOG_INFO, LOG_MSGID_STARTUP, NULL, "metrics for scrapers (GET /metrics, no token) on %s",
                         http_server_describe(m->metrics_http));
        manager_update_status(m);
        {
                char ports[64] = "";

                if (http_server_port(m->http) > 0)
                        snprintf(ports, sizeof(ports), "\nX_LISTEN_PORT=%u", http_server_port(m->http));
                if (m->metrics_http && http_server_port(m->metrics_http) > 0)
                        snprintf(ports + strlen(ports), sizeof(ports) - strlen(ports), "\nX_METRICS_PORT=%u",
                                 http_server_port(m->metrics_http));
                sd_notifyf(0, "READY=1\nSTATUS=%s%s", m->last_status, ports);
        }

        r = sd_event_loop(m->event);
        /* Stop claiming before anything else shuts down: from here on no new write is sent. */
        publisher_stop(m->publisher);
        sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing the write call in flight");
        log_full(LOG_INFO, LOG_MSGID_SHUTDOWN, NULL, "stopping: no new requests; finishing the write call in flight");
        return r;
}
