/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The publisher: the only code that sends permission writes to Visier. One thread claims
 * queued jobs in order, merges compatible ones into one bulk call (store_batch_claim), marks
 * them running before the call is sent, maps Visier's per-item answer back to each job, and
 * retries transient failures with backoff. Never two write calls in flight: there is one
 * thread and it makes one call at a time.
 *
 * Never two publishes at once, also across a crash: before a write call is sent, its start and
 * deadline are committed (store_lane_open), and a call whose answer was lost (a timeout, a
 * dropped connection, a gateway's 502 or 504, a process killed mid-call) is assumed to go on publishing at
 * Visier for publish_settle after it ended — or after its deadline, for a dead process's
 * call — before any other write, or any lookup of what it created, is sent.
 *
 * Recovery: every create carries a correlationId stored with the job, so whenever a create
 * may already have landed (after a network error, a 5xx, a timeout, or a crash that left the
 * job running) the publisher asks Visier which correlation IDs exist before sending again.
 * Updates, assignments and removals are idempotent and are simply sent again; a delete that
 * then finds the permission gone counts as done. Never logs: outcomes go to the event callback.
 *
 * Project mode ([jobs] publish = project): the calls of one round go into one draft project,
 * published once with commitAndPublish — one production version for the round. The round's
 * steps are recorded in the store; see "rounds" in publisher.c and docs/jobs.md.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "cache.h"
#include "fleet.h"
#include "store.h"
#include "upstream.h"

#define PUBLISHER_BACKOFF_INITIAL (1 * USEC_PER_SEC)
#define PUBLISHER_BACKOFF_MAX (300 * USEC_PER_SEC)
#define PUBLISHER_PRUNE_INTERVAL (60 * USEC_PER_SEC)
#define PUBLISHER_RECONCILE_CHUNK 50 /* correlation IDs per lookup */
/* Project mode: how many of the latest production versions are searched for a round's draft
 * whose commitAndPublish may have landed. */
#define PUBLISHER_VERSIONS_LOOKBACK 4000

/* Longest wait between two tries to recover jobs after store errors. */
#define PUBLISHER_TROUBLE_BACKOFF_MAX (60 * USEC_PER_SEC)
/* Fleet mode: how often a node that may not publish looks at the lane again. */
#define PUBLISHER_FLEET_POLL (250 * USEC_PER_MSEC)
/* Waiting for the rate budget, the thread looks again (lane, settings, budget) this often. */
#define PUBLISHER_BUDGET_POLL USEC_PER_SEC
/* Fleet mode: the most time between starting the stopwatch before a call's fence and sending
 * the call. The fence records the call's deadline as request_timeout + 1 s from the moment the
 * database runs it, and the call is given request_timeout: a node that took longer than this
 * to get from the stopwatch's start to the send (a pause, a slow fence) abandons the call, so
 * its own deadline never passes the recorded one (docs/fleet.md, "Why there is never more than
 * one sender"). */
#define PUBLISHER_FENCE_SLACK (500 * USEC_PER_MSEC)

typedef struct PublisherSettings {
        size_t batch_max;
        unsigned max_attempts;    /* 0: no limit; transient failures give up only by age */
        int64_t give_up_after_ms; /* a job failing transiently fails for good once this old */
        usec_t batch_delay; /* how long to let jobs gather after the queue wakes up */
        usec_t request_timeout; /* the upstream client's deadline for one call */
        usec_t publish_settle;  /* how long Visier may go on publishing a call whose answer was lost */
        int64_t keep_succeeded_ms, keep_failed_ms;
        bool project_mode;      /* rounds of bulk calls go into one draft project, published once */
        char project_tenants[1024]; /* in project mode, only these TargetTenantIDs ("-": none); "": all */
        size_t round_max_calls; /* most bulk calls into one draft */
} PublisherSettings;

typedef enum PublisherEventKind {
        PUBLISHER_CALL,      /* a write call ended (status or error in the event) */
        PUBLISHER_JOB_DONE,  /* a job reached a final state */
        PUBLISHER_JOB_RETRY, /* a job goes back to the queue */
        PUBLISHER_ORPHAN,    /* a job left running by an earlier process is being recovered */
        PUBLISHER_STORE_ERROR,
        PUBLISHER_LANE_WAIT, /* no write is sent until a call that may still run at Visier is over */
        PUBLISHER_BUDGET_WAIT, /* the rate budget has no call now: nothing is claimed until it has */
        PUBLISHER_FLEET_LANE, /* fleet mode: this node began publishing under a term, or stopped */
        PUBLISHER_FENCED,    /* fleet mode: the fence refused a write call, which was not sent */
        PUBLISHER_JOBS_CHANGED, /* the outcomes of the JOB_DONE events so far are committed */
        PUBLISHER_ROUND,     /* project mode: a round's draft was opened, published or discarded */
} PublisherEventKind;

typedef struct PublisherEvent {
        PublisherEventKind kind;
        int64_t job_id;     /* 0 for a call */
        const char *op;
        size_t n_jobs, n_items;
        long status;        /* HTTP status, 0 if none */
        const char *state;  /* for JOB_DONE */
        const char *message;
} PublisherEvent;

typedef void (*publisher_event_fn)(void *userdata, const PublisherEvent *e);

/* The write call in flight, as /status shows it (and visierctl top and /ui with it): the
 * operation, the method and the route pattern (never the path, its query or its body), how
 * many jobs and items it carries, its oldest job, when it began. */
#define PUBLISHER_ENDPOINT_MAX 96
typedef struct PublisherCall {
        bool active;
        char operation[16]; /* job_op_to_string(), or "publish" for a round's commitAndPublish */
        char method[8];
        char endpoint[PUBLISHER_ENDPOINT_MAX];
        unsigned n_jobs;
        uint64_t n_items;
        int64_t first_job; /* the call's oldest job (0: none, as for a round's publish) */
        usec_t started;    /* clock_now() */
} PublisherCall;

typedef struct PublisherStats {
        uint64_t write_calls, items_sent, reconcile_calls, splits, retries;
        uint64_t rounds_published, rounds_discarded; /* project mode */
        PublisherCall current;
} PublisherStats;

typedef struct Publisher Publisher;

int publisher_new(Store *store, Upstream *upstream, const PublisherSettings *s, publisher_event_fn event,
                  void *userdata, Publisher **ret);
int publisher_start(Publisher *p);
/* Stop claiming now (SIGTERM): the call in flight finishes and is recorded, nothing new is
 * sent. Does not wait. */
void publisher_stop(Publisher *p);
/* publisher_stop(), then wait for the thread. */
Publisher *publisher_free(Publisher *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(Publisher *, publisher_free);

/* The metadata cache every write sent invalidates (set once, before publisher_start). */
void publisher_set_cache(Publisher *p, Cache *cache);
/*
 * Fleet mode (before publisher_start()): publish only while this node may use the tenant's lane
 * (fleet_lane_usable()), under its term. The store's fence (store_set_fence()) is kept at that
 * term, so every claim, outcome and call opening is checked by the database in its own
 * transaction; on a term new to it the publisher first recovers what was left running (by the
 * previous holder, or by this node under an earlier term) and the rounds left open.
 */
void publisher_set_fleet(Publisher *p, Fleet *fleet);

/* New settings (reload); used from the next batch on. */
void publisher_set_settings(Publisher *p, const PublisherSettings *s);

/* Make every publisher_wait_job() return now (shutdown); the thread keeps running. */
void publisher_release_waiters(Publisher *p);

/* Is a write call to Visier in flight right now? */
bool publisher_call_in_flight(Publisher *p);

/* A job was queued (or retried). */
void publisher_wake(Publisher *p);
/* Wait until the job is final or the deadline (monotonic) passes: 0, -ETIMEDOUT, -ENOENT. */
int publisher_wait_job(Publisher *p, int64_t job_id, usec_t deadline);
void publisher_stats(Publisher *p, PublisherStats *ret);

usec_t publisher_backoff(unsigned attempts);
