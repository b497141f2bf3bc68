/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which queued jobs may share the next call, and which may be sent before jobs queued ahead
 * of them: the reordering rules of docs/jobs.md ("Coalescing"), in one place. Pure: no I/O, no
 * locks, no logging; the store hands in what it read and writes back what was picked.
 *
 * The rules. A job names the objects its items touch (its keys): the permission of an update,
 * delete, revert or user assignment, and the correlation ID of a create (two creates with one
 * correlation ID: the first succeeds, the second fails, so they keep their order). A later job
 * may be sent before an earlier unfinished one when they name no key in common — then neither
 * can see the other's effect, and the end state is the one of submission order. A call job
 * (any other write of Visier's API) names nothing visierd can compare, so it keeps its place
 * both ways: it waits for every earlier unfinished job, and no job passes it. Jobs share one
 * call when they are of one group (operation, tenant, project and other heads, as the store
 * spells it), due, and their items name no key twice. In project mode the calls of one round
 * go into one draft: while a round is in progress only jobs of its scope (the same heads, any
 * operation) may go, and the others wait behind as if they were not due.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How a create's correlation ID is spelled as a key (permission IDs are UUIDs, never this). */
#define COALESCE_CORRELATION_PREFIX "correlationId:"

typedef struct CoalesceJob {
        const char *group;              /* jobs of one non-NULL group may share a call; NULL: alone */
        const char *scope;              /* jobs of one non-NULL scope may share a round; NULL: alone */
        bool call;                      /* a call job */
        bool due;                       /* not waiting out a backoff */
        size_t n_items;
        const char *const *keys;        /* the objects its items touch */
        size_t n_keys;
} CoalesceJob;

/* What is in flight now (claimed, not finished): it blocks its keys, and a call job waits for it. */
typedef struct CoalesceRunning {
        size_t n_jobs;
        bool call;                      /* one of them is a call job */
        const char *const *keys;
        size_t n_keys;
        const char *scope;              /* a round is in progress: only jobs of this scope may go */
} CoalesceRunning;

/*
 * May LATER be sent before EARLIER, an unfinished job queued ahead of it? When not, *RET_TIE
 * (if not NULL) names what ties them: the key they share, or "a call job".
 */
bool coalesce_may_pass(const CoalesceJob *earlier, const CoalesceJob *later, const char **ret_tie);

/*
 * The jobs of the next call, from QUEUED (N jobs in queue order, all unfinished): the first job
 * that may go now (due, and no earlier unfinished job — running or queued ahead — ties it),
 * then every later job of its group that may pass the jobs left behind it, while the items stay
 * at most BATCH_MAX. Writes their indexes, in queue order, to RET (room for N) and their count
 * to *RET_N (0: nothing may go now). -ENOMEM.
 */
int coalesce_pick(const CoalesceJob *queued, size_t n, const CoalesceRunning *running, size_t batch_max, size_t *ret,
                  size_t *ret_n);
