/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Job states and operations (see jobs.h).
 */
#include <string.h>

#include "jobs.h"
#include "macro.h"

static const char *const state_names[_JOB_STATE_MAX] = {
        [JOB_QUEUED] = "queued",
        [JOB_RUNNING] = "running",
        [JOB_SUCCEEDED] = "succeeded",
        [JOB_FAILED] = "failed",
        [JOB_CANCELLED] = "cancelled",
};

/* transitions[from][to] */
static const bool transitions[_JOB_STATE_MAX][_JOB_STATE_MAX] = {
        [JOB_QUEUED] = { [JOB_RUNNING] = true, [JOB_CANCELLED] = true },
        [JOB_RUNNING] = { [JOB_SUCCEEDED] = true, [JOB_FAILED] = true, [JOB_QUEUED] = true },
        [JOB_FAILED] = { [JOB_QUEUED] = true },
};

static const struct {
        const char *name, *method, *path, *items;
        bool bulk;
} ops[_JOB_OP_MAX] = {
        [JOB_OP_CREATE] = { "create", "POST", "/v1/admin/permissions", "permissions", true },
        [JOB_OP_UPDATE] = { "update", "PUT", "/v1/admin/permissions", "permissions", true },
        [JOB_OP_DELETE] = { "delete", "DELETE", "/v1/admin/permissions", "permissionIds", true },
        [JOB_OP_ASSIGN] = { "assign", "PUT", "/v1/admin/permissions/users", "permissions", false },
        [JOB_OP_REMOVE] = { "remove", "DELETE", "/v1/admin/permissions/users", "permissions", false },
        [JOB_OP_REVERT] = { "revert", "POST", "/v1/admin/permissions/revert-to-parent", "permissionIds", true },
        /* Queued by PATCH (job_op_from_request); sent as the full-replacement PUT. */
        [JOB_OP_PATCH] = { "patch", "PUT", "/v1/admin/permissions", "permissions", true },
        [JOB_OP_EXPORT] = { "export", "POST", "/exports", "items", false },
        /* Method and path are the job's own (its call), never matched by job_op_from_request(). */
        [JOB_OP_CALL] = { "call", "", "", "items", false },
};

const char *job_state_to_string(JobState s) {
        return s >= 0 && s < _JOB_STATE_MAX ? state_names[s] : NULL;
}

JobState job_state_from_string(const char *s) {
        for (int i = 0; s && i < _JOB_STATE_MAX; i++)
                if (streq(state_names[i], s))
                        return (JobState) i;
        return _JOB_STATE_INVALID;
}

bool job_state_is_final(JobState s) {
        return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELLED;
}

bool job_state_transition_ok(JobState from, JobState to) {
        if (from < 0 || from >= _JOB_STATE_MAX || to < 0 || to >= _JOB_STATE_MAX)
                return false;
        return transitions[from][to];
}

const char *job_op_to_string(JobOp op) {
        return op >= 0 && op < _JOB_OP_MAX ? ops[op].name : NULL;
}

JobOp job_op_from_string(const char *s) {
        for (int i = 0; s && i < _JOB_OP_MAX; i++)
                if (streq(ops[i].name, s))
                        return (JobOp) i;
        return _JOB_OP_INVALID;
}

const char *job_op_method(JobOp op) {
        return ops[op].method;
}

const char *job_op_path(JobOp op) {
        return ops[op].path;
}

JobOp job_op_from_request(const char *method, const char *path) {
        static const char prefix[] = "/v1/admin/permissions/";

        if (streq(method, "PATCH"))
                return streq(path, "/v1/admin/permissions") ||
                                       (strncmp(path, prefix, sizeof(prefix) - 1) == 0 &&
                                        path[sizeof(prefix) - 1] && !strchr(path + sizeof(prefix) - 1, '/'))
                               ? JOB_OP_PATCH
                               : _JOB_OP_INVALID;
        for (int i = 0; i < _JOB_OP_MAX; i++) {
                if (i == JOB_OP_PATCH)
                        continue; /* its method is the call's, not the request's */
                if (streq(ops[i].method, method) && streq(ops[i].path, path))
                        return (JobOp) i;
        }
        return _JOB_OP_INVALID;
}

const char *job_op_items_member(JobOp op) {
        return ops[op].items;
}

bool job_op_is_bulk(JobOp op) {
        return ops[op].bulk;
}

bool job_op_takes_fast_mode(JobOp op) {
        return op == JOB_OP_CREATE || op == JOB_OP_UPDATE || op == JOB_OP_PATCH;
}

bool job_op_takes_session_headers(JobOp op) {
        return op == JOB_OP_ASSIGN;
}

json_t *job_merge_patch(json_t *target, json_t *patch) {
        json_t *out, *v;
        const char *key;

        if (!json_is_object(patch))
                return json_deep_copy(patch);
        out = json_is_object(target) ? json_deep_copy(target) : json_object();
        if (!out)
                return NULL;
        json_object_foreach(patch, key, v) {
                json_t *merged;

                if (json_is_null(v)) {
                        (void) json_object_del(out, key);
                        continue;
                }
                merged = job_merge_patch(json_object_get(out, key), v);
                if (!merged || json_object_set_new(out, key, merged) < 0) {
                        json_decref(out);
                        return NULL;
                }
        }
        return out;
}
