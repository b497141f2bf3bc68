/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the reordering and sharing rules of the publisher's queue (see coalesce.h). One pass in
 * queue order keeps the set of keys that jobs left behind still hold (those of the running
 * jobs, then of every queued job that is not picked): a later job naming one of them must stay
 * behind too, and adds its own keys; a call job left behind ends the pass, as nothing may pass
 * it. Key sets are jansson objects used as sets.
 */
#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "coalesce.h"
#include "macro.h"

static bool keys_meet(const CoalesceJob *a, const CoalesceJob *b, const char **ret_tie) {
        for (size_t i = 0; i < a->n_keys; i++)
                for (size_t k = 0; k < b->n_keys; k++)
                        if (streq(a->keys[i], b->keys[k])) {
                                if (ret_tie)
                                        *ret_tie = a->keys[i];
                                return true;
                        }
        return false;
}

bool coalesce_may_pass(const CoalesceJob *earlier, const CoalesceJob *later, const char **ret_tie) {
        if (earlier->call || later->call) {
                if (ret_tie)
                        *ret_tie = "a call job";
                return false;
        }
        return !keys_meet(earlier, later, ret_tie);
}

static bool set_has_any(json_t *set, const char *const *keys, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (json_object_get(set, keys[i]))
                        return true;
        return false;
}

static int set_add(json_t *set, const char *const *keys, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (json_object_set_new(set, keys[i], json_true()) < 0)
                        return -ENOMEM;
        return 0;
}

int coalesce_pick(const CoalesceJob *queued, size_t n, const CoalesceRunning *running, size_t batch_max, size_t *ret,
                  size_t *ret_n) {
        _cleanup_(json_decrefp) json_t *held = json_object(), *batch = json_object();
        const CoalesceJob *first = NULL;
        size_t picked = 0, items = 0;

        *ret_n = 0;
        if (!held || !batch)
                return -ENOMEM;
        if (running && set_add(held, running->keys, running->n_keys) < 0)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++) {
                const CoalesceJob *j = &queued[i];
                bool go;

                if (j->call) {
                        /* Alone, and only when no unfinished job is ahead of it: none running,
                         * none queued before it (every job before it here is unfinished). */
                        if (i == 0 && j->due && (!running || running->n_jobs == 0)) {
                                ret[0] = i;
                                *ret_n = 1;
                                return 0;
                        }
                        break; /* nothing passes a call job */
                }
                if (!first)
                        go = j->due && !(running && running->call) && !set_has_any(held, j->keys, j->n_keys) &&
                             (!running || !running->scope || (j->scope && streq(j->scope, running->scope)));
                else
                        go = j->due && j->group && first->group && streq(j->group, first->group) &&
                             items + j->n_items <= batch_max && !set_has_any(held, j->keys, j->n_keys) &&
                             !set_has_any(batch, j->keys, j->n_keys);
                if (!go) {
                        /* Left behind: what it touches stays in order behind it. */
                        if (set_add(held, j->keys, j->n_keys) < 0)
                                return -ENOMEM;
                        if (running && running->call)
                                break; /* everything waits for a running call job */
                        continue;
                }
                if (set_add(batch, j->keys, j->n_keys) < 0)
                        return -ENOMEM;
                ret[picked++] = i;
                items += j->n_items;
                if (!first) {
                        first = j;
                        if (!j->group)
                                break; /* a job that goes alone */
                }
                if (items >= batch_max)
                        break; /* full */
        }
        if (first)
                *ret_n = picked;
        return 0;
}
