/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manager (see manager.h): builds the subsystems in dependency order, tears them down in
 * reverse, owns the main loop, and logs what happens to them. The only place besides the
 * HTTP layer that logs.
 */
#include <signal.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "manager.h"

#define HTTP_IDLE_TIMEOUT 60 /* seconds a local connection may sit idle */

static void upstream_settings_from_config(const Config *c, UpstreamSettings *ret) {
        *ret = (UpstreamSettings) {
                .base_url = c->base_url,
                .username = c->username,
                .apikey = c->apikey,
                .password = c->password,
                .ca_file = c->ca_file,
                .connect_timeout = (usec_t) c->connect_timeout * USEC_PER_SEC,
                .request_timeout = (usec_t) c->request_timeout * USEC_PER_SEC,
                .max_retries = c->max_retries,
                .max_response = c->max_response_size,
        };
}

int manager_new(Config *config, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->config = config;
        m->started_at = clock_now();
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* Reverse order: stop taking requests (waiters for jobs are released first), let the
         * publisher finish and record the call in flight, then stop the keeper and the rest. */
        if (m->publisher)
                publisher_release_waiters(m->publisher);
        http_server_stop(m->http);
        publisher_free(m->publisher);
        token_keeper_free(m->token);
        upstream_free(m->upstream);
        store_close(m->store);
        if (m->rate_ready)
                ratelimit_done(&m->rate);
        sd_event_unref(m->event);
        config_free(m->config);
        free(m);
        return NULL;
}

static void on_login(void *userdata, int result, const char *err, usec_t backoff) {
        Manager *m = userdata;

        if (result >= 0)
                log_full(LOG_INFO, LOG_MSGID_LOGIN_OK, NULL, "logged in to Visier as %s; token trusted for %u s",
                         m->config->username, m->config->token_lifetime);
        else
                log_full(LOG_WARNING, LOG_MSGID_LOGIN_FAILED, NULL, "login to Visier failed: %s; next attempt in %llu s",
                         err, (unsigned long long) (backoff / USEC_PER_SEC));
}

static void on_publisher(void *userdata, const PublisherEvent *e) {
        char job[48], status[48], op[48];
        const char *fields[] = { job, status, op, NULL };

        snprintf(job, sizeof(job), "JOB_ID=%lld", (long long) e->job_id);
        snprintf(status, sizeof(status), "VISIER_STATUS=%ld", e->status);
        snprintf(op, sizeof(op), "JOB_OPERATION=%s", strempty(e->op));
        switch (e->kind) {
        case PUBLISHER_CALL:
                if (e->message)
                        log_full(LOG_WARNING, LOG_MSGID_WRITE_CALL, fields + 1,
                                 "write call (%s of %zu items from %zu jobs) failed: %s", e->op, e->n_items, e->n_jobs,
                                 e->message);
                else
                        log_full(LOG_INFO, LOG_MSGID_WRITE_CALL, fields + 1,
                                 "write call (%s of %zu items from %zu jobs) answered %ld", e->op, e->n_items, e->n_jobs,
                                 e->status);
                break;
        case PUBLISHER_JOB_DONE:
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
        }
}

int manager_start(Manager *m) {
        const Config *c = m->config;
        UpstreamSettings us;
        char err[512] = "";
        sigset_t mask;
        int r;

        /* Block the signals the loop handles before any thread exists: every thread inherits
         * the mask, so they reach the loop's signalfd and never kill a worker thread. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);

        r = store_open(c->database, &m->store, err, sizeof(err));
        if (r < 0) {
                log_error("%s", err[0] ? err : strerror(-r));
                return r;
        }

        ratelimit_init(&m->rate, c->rate_limit_minute, c->rate_limit_hour, clock_now());
        m->rate_ready = true;

        upstream_settings_from_config(c, &us);
        r = upstream_new(&us, &m->rate, &m->upstream);
        if (r < 0) {
                log_error("cannot set up the Visier client: %s", strerror(-r));
                return r;
        }
        r = token_keeper_new((usec_t) c->token_lifetime * USEC_PER_SEC, (usec_t) c->refresh_margin * USEC_PER_SEC,
                             upstream_login, m->upstream, on_login, m, &m->token);
        if (r < 0) {
                log_error("cannot set up the token keeper: %s", strerror(-r));
                return r;
        }
        upstream_set_token_keeper(m->upstream, m->token);

        store_set_max_pending(m->store, c->max_pending);
        r = publisher_new(m->store, m->upstream,
                          &(PublisherSettings) {
                                  .batch_max = c->batch_max,
                                  .max_attempts = c->max_attempts,
                                  .batch_delay = (usec_t) c->batch_delay_ms * USEC_PER_MSEC,
                                  .keep_succeeded_ms = (int64_t) c->keep_succeeded * 1000,
                                  .keep_failed_ms = (int64_t) c->keep_failed * 1000,
                          },
                          on_publisher, m, &m->publisher);
        if (r < 0) {
                log_error("cannot set up the publisher: %s", strerror(-r));
                return r;
        }

        r = http_server_start(&(HttpSettings) {
                                      .address = c->listen_address,
                                      .port = c->listen_port,
                                      .max_connections = c->max_connections,
                                      .max_body = c->max_body_size,
                                      .idle_timeout = HTTP_IDLE_TIMEOUT,
                              },
                              api_handle, m, &m->http, err, sizeof(err));
        if (r < 0) {
                log_error("%s", err);
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
        return 0;
}

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_full(LOG_INFO, LOG_MSGID_SHUTDOWN, NULL, "received %s, stopping", strsignal((int) si->ssi_signo));
        return sd_event_exit(m->event, 0);
}

static int on_reload_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        log_warning("received SIGHUP: reloading is not supported yet; restart visierd to apply changes");
        return 0;
}

int manager_run(Manager *m) {
        int r;

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGHUP, on_reload_signal, m);
        if (r < 0) {
                log_error("cannot watch signals: %s", strerror(-r));
                return r;
        }

        log_full(LOG_INFO, LOG_MSGID_STARTUP, NULL, "visierd %s serving Visier %s on http://%s%s%s:%u/", PACKAGE_VERSION,
                 m->config->base_url, strchr(m->config->listen_address, ':') ? "[" : "", m->config->listen_address,
                 strchr(m->config->listen_address, ':') ? "]" : "", http_server_port(m->http));
        sd_notifyf(0, "READY=1\nSTATUS=serving on port %u\nX_LISTEN_PORT=%u", http_server_port(m->http),
                   http_server_port(m->http));

        r = sd_event_loop(m->event);
        sd_notify(0, "STOPPING=1");
        return r;
}
