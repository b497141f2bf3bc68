/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Jobs that end on another node. With the job store on PostgreSQL, any node of the fleet may
 * publish a job a client is holding an answer for here (Prefer: wait, the Visier-shaped
 * answer), so the holds cannot wait for this node's publisher alone. The store's schema
 * notifies channel JOBWATCH_CHANNEL with the job's id (text) in the transaction that moves a
 * job to a final state (a trigger: whichever node, whichever code path); PostgreSQL delivers it
 * at commit to every session that listens. This keeps one such session, LISTENing, on the
 * daemon's sd-event loop: its socket is an io source, so a notification costs no thread and no
 * poll, and fn(userdata, id) runs on the loop for each job ended.
 *
 * Notifications sent while the session is down are lost (PostgreSQL keeps none for a session
 * that is not there), so every time the session (re)connects fn(userdata, 0) runs: "recheck
 * every hold". The session is reconnected by a timer (JOBWATCH_RETRY_USEC) for as long as it
 * is down; nothing blocks the loop longer than the connect timeout.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define JOBWATCH_CHANNEL "visierd_job_final"
/* A job was queued on some node (store schema 2): fn(userdata, JOBWATCH_QUEUED). */
#define JOBWATCH_QUEUED_CHANNEL "visierd_job_queued"
#define JOBWATCH_QUEUED ((int64_t) -1)
#define JOBWATCH_RETRY_USEC (2 * USEC_PER_SEC)
#define JOBWATCH_CONNECT_TIMEOUT_SEC 2

typedef struct JobWatch JobWatch;

/* A job ended (id), a job was queued (JOBWATCH_QUEUED), or notifications may have been
 * missed (0). On the loop. */
typedef void (*jobwatch_fn)(void *userdata, int64_t job_id);

/* Start listening (connecting now if it can, else on the retry timer): 0 or -ENOMEM. conninfo
 * and password as the job store's ([store] url, password_file); both are copied. */
int jobwatch_new(sd_event *e, const char *conninfo, const char *password, jobwatch_fn fn, void *userdata,
                 JobWatch **ret);
JobWatch *jobwatch_free(JobWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(JobWatch *, jobwatch_free);

/* Is the session connected and listening (for /status)? */
bool jobwatch_listening(const JobWatch *w);
