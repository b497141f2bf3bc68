/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Work off the loop. The manager's sd-event loop must never block, so what does (a store
 * commit, a file opened, a call through the blocking upstream client) runs on a small fixed
 * pool of threads; its completion runs back on the loop thread, in the style of libuv's
 * uv_queue_work(). worker_post() is the same without the work: it runs a function on the
 * loop, from any thread (a job finished on the publisher's thread, say).
 *
 * The number of threads is fixed at start, so the daemon's thread count does not grow with
 * its clients: a request that waits (on Visier, a job, a slow consumer) waits suspended on
 * the loop, not on a worker.
 */
#pragma once

#include <stddef.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct WorkerPool WorkerPool;

typedef void (*worker_fn)(void *userdata);

/* n threads; completions and posts are run by the loop e. */
int worker_pool_new(sd_event *e, unsigned n, WorkerPool **ret);
/* Runs every queued work item, joins the threads, runs the completions (loop thread). Posts
 * are still accepted afterwards (a thread that outlives the pool's work may still post); they
 * run at worker_pool_free. */
void worker_pool_stop(WorkerPool *p);
/* worker_pool_stop(), then runs what was posted since and frees the pool. */
WorkerPool *worker_pool_free(WorkerPool *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(WorkerPool *, worker_pool_free);

/* work(userdata) on a worker thread, then done(userdata) on the loop (done may be NULL).
 * Any thread. -ENOMEM, or -ESHUTDOWN once the pool is being freed. */
int worker_queue(WorkerPool *p, worker_fn work, worker_fn done, void *userdata);
/* fn(userdata) on the loop, soon. Any thread. */
int worker_post(WorkerPool *p, worker_fn fn, void *userdata);

/* Work items queued or running (for /status). */
size_t worker_pending(WorkerPool *p);
