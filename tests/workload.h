/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A mixed permission-write workload for end-to-end tests of visierd's two promises (never two
 * publishes at once; every 202'd change applied exactly once, nothing refused applied), and
 * the end-state checks that go with it.
 *
 * Client threads each own the permissions they create: they create (1 to 3 items a job, every
 * displayName unique to the run), and on their own permissions whose create has succeeded
 * they rename (update), assign and remove users, revert and delete. Each write carries its own
 * Idempotency-Key and is sent again with the same key after a connection error, so a 202 lost
 * in a crash is never a second job. Every 202'd job id is kept, with what it must have done.
 *
 * The checks compare that record with visier-sim's own state (GET /_sim/permissions): every
 * accepted create exists exactly once (by its displayName, which an update only extends with
 * a "~" suffix), every accepted delete's permission is gone, the last accepted rename and the
 * accepted assignments are what the sim holds, and no name the run never got a 202 for exists.
 *
 * Nothing here fails the running test: the threads must not, and a caller prints every figure
 * before it asserts, so one run shows all that went wrong.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "harness.h"

typedef struct WorkloadSettings {
        unsigned threads;   /* client threads */
        unsigned jobs;      /* writes to get 202 for, over all threads */
        unsigned think_ms;  /* mean pause between one client's writes (uniform 0 .. 2x) */
        uint64_t seed;      /* decides every client's choices; printed so a run can be replayed */
        bool retry_5xx;     /* send a write answered 5xx again, with the same key (else it counts as refused) */
        unsigned give_up_sec; /* a write gets no answer for this long: give up on it */
} WorkloadSettings;

typedef enum WorkloadOp {
        WORKLOAD_CREATE,
        WORKLOAD_UPDATE,
        WORKLOAD_ASSIGN,
        WORKLOAD_REMOVE,
        WORKLOAD_REVERT,
        WORKLOAD_DELETE,
        _WORKLOAD_OP_MAX,
} WorkloadOp;

typedef struct WorkloadReport {
        unsigned accepted;                      /* jobs answered 202 */
        unsigned accepted_by_op[_WORKLOAD_OP_MAX];
        unsigned refused;                       /* writes answered anything but 202 (and not sent again) */
        unsigned unanswered;                    /* writes given up on without an answer */
        unsigned resent;                        /* writes sent again after a connection error or a 5xx */
        unsigned not_succeeded;                 /* accepted jobs not "succeeded", or with an item not succeeded */
        unsigned pending;                       /* of those, still queued or running */
        unsigned duplicates;                    /* extra copies of a create at the sim */
        unsigned lost_creates;                  /* accepted creates (not deleted) missing at the sim */
        unsigned lost_deletes;                  /* accepted deletes whose permission is still there */
        unsigned lost_updates;                  /* permissions whose name is not the last accepted rename */
        unsigned lost_users;                    /* assignments or removals not visible */
        unsigned unexpected;                    /* run names at the sim the run never got a 202 for */
        char problems[4096];                    /* the first few of each, for the log */
} WorkloadReport;

typedef struct Workload Workload;

const char *workload_op_to_string(WorkloadOp op);

#define WORKLOAD_NODES_MAX 8

/* Start the client threads against visierd on PORT. */
Workload *workload_start(const WorkloadSettings *s, unsigned port);
/* The same against a fleet: client i starts with node i % n_nodes and moves on to the next
 * node up while its own is down or does not answer (any node answers for any job). */
Workload *workload_start_nodes(const WorkloadSettings *s, const unsigned *ports, unsigned n_nodes);
/* visierd is now on PORT (0: it is down; clients wait). */
void workload_set_port(Workload *w, unsigned port);
/* The same for one node of a fleet (0: down; its clients move to another node). */
void workload_set_node_port(Workload *w, unsigned node, unsigned port);
/* Are clients still submitting? */
bool workload_running(Workload *w);
/* Wait for every client to finish its share. */
void workload_join(Workload *w);
/* Check the accepted jobs (through visierd on PORT) and SIM_DUMP (GET /_sim/permissions). */
void workload_verify(Workload *w, unsigned port, json_t *sim_dump, WorkloadReport *ret);
Workload *workload_free(Workload *w);

/* Append a line to a report's problems, while there is room. */
void workload_problem(WorkloadReport *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Wait, probing visierd on PORT, until no job is queued or running, or MAX_SEC passed; returns
 * the jobs still queued or running (0: drained; -1: visierd did not answer). */
long long workload_wait_drained(unsigned port, unsigned max_sec);

/* After visierd stopped: PRAGMA integrity_check of DB into ret_integrity ("ok" when sound) and
 * the jobs its table still holds queued or running (-1 when unreadable). */
void workload_db_check(const char *db, char *ret_integrity, size_t len, long long *ret_pending);
/* The same for D's job store after it stopped: workload_db_check on its SQLite file, or, on
 * PostgreSQL, the agreement of job_counts with the jobs table (workload.c says why) into
 * ret_integrity ("ok" when they agree), and the jobs still queued or running. */
void workload_store_check(const Visierd *d, char *ret_integrity, size_t len, long long *ret_pending);

/* A fresh seed from the kernel, for runs not told one. */
uint64_t workload_random_seed(void);
/* The next number of a splitmix64 sequence. */
uint64_t workload_rand(uint64_t *state);
