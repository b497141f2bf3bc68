/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The manager: builds and owns every subsystem (rate budget, upstream client, token keeper,
 * job store, HTTP listener), runs the main loop (sd-event: signals, and later timers and the
 * watchdog), and is where outcomes get logged. main() only parses arguments and calls in.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <systemd/sd-event.h>

#include "authfail.h"
#include "cache.h"
#include "config.h"
#include "history.h"
#include "http.h"
#include "metrics.h"
#include "publisher.h"
#include "fleet.h"
#include "jobwatch.h"
#include "runner.h"
#include "session.h"
#include "ratelimit.h"
#include "store.h"
#include "token.h"
#include "upstream.h"
#include "worker.h"

typedef struct Manager {
        Config *config;          /* replaced on reload: read it under config_lock */
        pthread_rwlock_t config_lock;
        RateLimit rate;
        bool rate_ready;
        Upstream *upstream;
        TokenKeeper *token;
        Store *store;
        Publisher *publisher;
        Runner *runner;
        Fleet *fleet;            /* fleet mode ([store] url): the node's membership; else NULL */
        JobWatch *jobwatch;      /* fleet mode: jobs ended on any node (loop) */
        sd_event_source *fleet_timer; /* fleet mode: fleet_tick() every renew interval, on a worker */
        bool fleet_ticking;      /* loop thread: a tick is running on a worker */
        FleetLane fleet_lane;    /* loop thread: the lane after the last tick, for what it logs */
        char fleet_error[FLEET_ERROR_MAX]; /* loop thread: the last tick's failure ("" none), logged once */
        Exports *exports;        /* replaced on reload: read it under config_lock */
        char results_dir[512];
        Metrics *metrics;
        HttpServer *http;
        HttpServer *metrics_http; /* [metrics] listen, socket: GET /metrics only (or NULL) */
        WorkerPool *workers;     /* blocking work off the loop */
        Cache *cache;            /* metadata reads (thread-safe) */
        SessionTable *sessions;  /* local sign-ins (thread-safe; memory only) */
        AuthFailures *authfail;  /* failed authentications per peer (thread-safe) */
        pthread_mutex_t finished_lock; /* jobs finished in the publisher's open transaction */
        int64_t *finished;
        size_t n_finished, cap_finished;
        sd_event *event;         /* the one loop: signals, timers, HTTP, completions */
        sd_event_source *drain_timer;
        bool draining;
        atomic_bool access_log;  /* [log] access (set at start and on reload) */
        /* Loop thread only: */
        unsigned held;           /* requests answered later (worker or hold) */
        void *client_counts;     /* requests in progress per identified client (api.c) */
        void *holds;             /* writes waiting for their job (Prefer: wait; api.c) */
        void *refusals;          /* failed authentications answered later (api.c; loop thread) */
        unsigned n_refusals;
        sd_event_source *status_timer;
        char last_status[256];
        History history;   /* queue depth by state, a sample a minute (GET /status/history) */
        usec_t started_at; /* monotonic */
} Manager;

/* Takes ownership of config (whose secrets must be loaded). */
int manager_new(Config *config, Manager **ret);

/* --check-config --online: log in to Visier with C's settings and read one endpoint
 * (GET /v1/admin/capabilities). 0 with what was done in MSG, or a negative errno with the
 * reason in MSG (never a secret). Needs no manager, loop or database. */
int manager_check_online(const Config *c, char *msg, size_t msg_size);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Open the store, start the token keeper and the listener. Logs what failed. */
int manager_start(Manager *m);
/* Tell systemd (or a test's notify socket) we are ready, run until SIGTERM/SIGINT. */
int manager_run(Manager *m);

/* Re-read the configuration and the credential files (SIGHUP). An invalid configuration is
 * rejected with its errors logged, and the running one kept. */
int manager_reload(Manager *m);

/* A job reached a final state (any thread): held answers for it go out. */
void manager_job_finished(Manager *m, int64_t job_id);

/* Record the job counts in m->history now (loop thread; also done by the status timer). */
void manager_record_history(Manager *m);

/* The API router: answers one local request (http_handler_fn). Defined in api.c. */
struct MHD_Response *api_handle(void *userdata, HttpRequest *req, unsigned *ret_status);
/* An answer the HTTP layer made itself (HttpSettings.refused): counted as unmatched, logged. */
void api_refused(void *userdata, HttpRequest *req, unsigned status);
/* The same for the metrics-only listener: GET /metrics only, no client token. */
struct MHD_Response *api_handle_metrics(void *userdata, HttpRequest *req, unsigned *ret_status);
/* On the loop: answer the holds waiting for this job / all of them (shutdown). */
void api_job_finished(Manager *m, int64_t job_id);
void api_release_holds(Manager *m);
/* On the loop: answer every hold whose job has ended (fleet mode: notifications may have been
 * missed while the job watch was reconnecting). */
void api_recheck_holds(Manager *m);
/* The route table, for the check that docs/openapi.yaml describes every route. */
size_t api_routes(const char *const **ret_methods, const char *const **ret_patterns);
