/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Jobs: the permission-write operations visierd queues, and the job state machine, written
 * down once as a transition table. Pure logic: no I/O, no locking, never logs.
 *
 *   queued ──▶ running ──▶ succeeded
 *     │  ▲        │  └────▶ failed ──▶ queued (manual retry)
 *     │  └────────┘ (transient failure, orphan after a crash, split of a rejected batch)
 *     └──▶ cancelled
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>

typedef enum JobState {
        JOB_QUEUED,
        JOB_RUNNING,
        JOB_SUCCEEDED,
        JOB_FAILED,
        JOB_CANCELLED,
        _JOB_STATE_MAX,
        _JOB_STATE_INVALID = -1,
} JobState;

typedef enum JobOp {
        JOB_OP_CREATE,  /* POST   /v1/admin/permissions */
        JOB_OP_UPDATE,  /* PUT    /v1/admin/permissions */
        JOB_OP_DELETE,  /* DELETE /v1/admin/permissions */
        JOB_OP_ASSIGN,  /* PUT    /v1/admin/permissions/users */
        JOB_OP_REMOVE,  /* DELETE /v1/admin/permissions/users */
        JOB_OP_REVERT,  /* POST   /v1/admin/permissions/revert-to-parent */
        JOB_OP_PATCH,   /* PATCH  /v1/admin/permissions[/{id}]: merge patches, sent as PUT */
        JOB_OP_EXPORT,  /* a run of a named export (POST /exports/NAME/runs); not a write */
        JOB_OP_CALL,    /* any other write of Visier's API, sent as it came, alone (policy table) */
        _JOB_OP_MAX,
        _JOB_OP_INVALID = -1,
} JobOp;

const char *job_state_to_string(JobState s);
JobState job_state_from_string(const char *s);
bool job_state_is_final(JobState s);
/* Is from → to one of the transitions of the table above? */
bool job_state_transition_ok(JobState from, JobState to);

const char *job_op_to_string(JobOp op);
JobOp job_op_from_string(const char *s);
/* The Visier call an operation becomes. */
const char *job_op_method(JobOp op);
const char *job_op_path(JobOp op);
/* The local request that queues an operation; _JOB_OP_INVALID if none. PATCH of
 * /v1/admin/permissions and of /v1/admin/permissions/{id} is JOB_OP_PATCH. */
JobOp job_op_from_request(const char *method, const char *path);
/* The JSON member of the request body that holds the items ("permissions" or "permissionIds"). */
const char *job_op_items_member(JobOp op);
/* Bulk operations answer {"successes","failures"}; assign and remove answer {"tenants"}. */
bool job_op_is_bulk(JobOp op);
/* Which of Visier's write headers the operation takes (its definitions): FastMode on
 * creates and updates; SessionBasedPermissions and SessionRepoId on assignments. */
bool job_op_takes_fast_mode(JobOp op);
bool job_op_takes_session_headers(JobOp op);

/*
 * RFC 7396 JSON merge patch: TARGET (NULL: absent) with PATCH applied, as a new value; TARGET
 * is not changed. A null member of PATCH removes the member, an object member is merged, any
 * other value replaces. NULL when memory ran out.
 */
json_t *job_merge_patch(json_t *target, json_t *patch);
