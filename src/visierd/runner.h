/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Export runs: one thread that takes queued runs of named exports from the job store, streams
 * each query's answer from Visier into a file under the results directory (never holding it
 * in memory), and records the outcome on the job. Runs take their calls from the shared rate
 * budget in the background, leaving a reserve to interactive calls. Old result files are
 * removed once their jobs have been pruned. Never logs: outcomes go to the event callback.
 */
#pragma once

#include "exports.h"
#include "fleet.h"
#include "store.h"
#include "upstream.h"

#define RUNNER_RESULT_SWEEP (60 * USEC_PER_SEC)

/* A run ended: its job, whether it succeeded (and why not), the bytes it had written and how
 * long it took. */
typedef struct RunnerEvent {
        int64_t job_id;
        bool ok;
        const char *message;
        uint64_t bytes;
        usec_t duration;
} RunnerEvent;

typedef void (*runner_event_fn)(void *userdata, const RunnerEvent *e);

typedef struct Runner Runner;

int runner_new(Store *store, Upstream *upstream, const char *results_dir, runner_event_fn event, void *userdata,
               Runner **ret);
/* Fleet mode (before runner_start()): export runs only while this node may use the lane
 * (fleet_lane_usable()), their claims and outcomes fenced by the store under its term; runs
 * left running are queued again by the publisher when it takes a term. */
void runner_set_fleet(Runner *rn, Fleet *fleet);
int runner_start(Runner *r);
/* Stop: the run in progress is cut short at its next piece and queued again (it runs at the
 * next start); no new run starts. Does not wait. */
void runner_stop(Runner *r);
/* runner_stop(), then wait for the thread. */
Runner *runner_free(Runner *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Runner *, runner_free);
void runner_wake(Runner *r);

/* The result file of a run ("DIR/ID.csv"); the format's extension. */
void runner_result_path(const char *results_dir, int64_t job_id, ExportFormat format, char *buf, size_t len);
