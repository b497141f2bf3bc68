/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated organization's permissions, scoped as Visier scopes them: one store per tenant
 * in production and one per open draft project, each with its own correlation IDs; the draft
 * projects themselves (create, list, get, commitAndPublish, delete); the read side (list,
 * details with validity statuses, assigned users) and the write side (bulk create/update/
 * delete/revert, assign/remove users). Every answer is a new JSON value shaped exactly like
 * Visier's DTOs. Thread-safe.
 */
#pragma once

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "sim-model.h"

/* Most permissions one store holds; creates beyond it fail per item. */
#define PERMISSIONS_MAX 100000
/* Most correlation IDs one store remembers at once; expired ones are swept when it is full. */
#define PERMISSIONS_CORRELATION_IDS_MAX 100000
/* Correlation IDs stay reserved (and findable) this long after their create. */
#define PERMISSIONS_CORRELATION_TTL_USEC ((uint64_t) 7 * 24 * 3600 * 1000000)
#define PERMISSIONS_CORRELATION_ID_MIN 3
#define PERMISSIONS_CORRELATION_ID_MAX 64
/* Most directly assigned users per permission and tenant. */
#define PERMISSIONS_USERS_PER_TENANT_MAX 10000
/* Default and largest page for the permission users endpoint. */
#define PERMISSIONS_USERS_LIMIT_MAX 100
/* Most draft projects open at once, over all tenants (each holds a copy of its tenant's store). */
#define PERMISSIONS_PROJECTS_MAX 64
/* Room for one per-item message, and for a scope error. */
#define PERMISSIONS_MESSAGE_MAX 256

typedef struct Permissions Permissions;

typedef enum PermissionsWrite {
        PERMISSIONS_WRITE_CREATE,       /* POST /v1/admin/permissions */
        PERMISSIONS_WRITE_UPDATE,       /* PUT /v1/admin/permissions */
        PERMISSIONS_WRITE_DELETE,       /* DELETE /v1/admin/permissions */
        PERMISSIONS_WRITE_REVERT,       /* POST /v1/admin/permissions/revert-to-parent */
        _PERMISSIONS_WRITE_MAX,
        _PERMISSIONS_WRITE_INVALID = -EINVAL,
} PermissionsWrite;

/* What a call names about where it acts, as it arrived (NULL = not given). */
typedef struct PermissionsScope {
        const char *target_tenant;      /* TargetTenantID header: the tenant logged in to */
        const char *tenant_code;        /* tenantCode query, on the routes that take one */
        const char *project_id;         /* ProjectID header: a draft project of the tenant acted in */
} PermissionsScope;

/* CATALOG is borrowed (capability names for checking writes) and must outlive the store. */
int permissions_new(Model *catalog, Permissions **ret);
Permissions *permissions_free(Permissions *p);

/*
 * Check SCOPE before a call uses it. Returns 0; -EPERM when a tenant is unknown or out of reach
 * of the tenant logged in to (HTTP 403); -EINVAL when ProjectID is not a UUID (400); -ENOENT
 * when the project is not an open draft of the tenant acted in (404). ERR gets a message.
 * The calls below resolve SCOPE again under their lock and answer -ESTALE if it vanished
 * in between (a project published or deleted meanwhile).
 */
int permissions_scope_check(Permissions *p, const PermissionsScope *scope, char *err, size_t err_size);

/* permissions_scope_check() that also gives the index of the tenant acted in. */
int permissions_scope_resolve(Permissions *p, const PermissionsScope *scope, size_t *ret_tenant, char *err,
                              size_t err_size);

/* Every permission of SCOPE: an object permissionId -> displayName. -ESTALE, -ENOMEM. */
int permissions_names(Permissions *p, const PermissionsScope *scope, json_t **ret);

/* The permissions of SCOPE assigned to USER_ID (directly or through a group, as the store
 * records it): [servicing.PermissionAssignedForLocalTenantDTO]. -ESTALE, -ENOMEM. */
int permissions_user_assigned(Permissions *p, const PermissionsScope *scope, const char *user_id, json_t **ret);

/* GET /v1/admin/permissions: servicing.GetPermissionsAPIResponseDTO. CORRELATION_IDS (may be
 * empty) keeps the permissions created in this scope with one of them within the last 7 days. */
int permissions_list(Permissions *p, const PermissionsScope *scope, bool details, bool with_status,
                     const ModelStrv *correlation_ids, json_t **ret);
/* GET /v1/admin/permissions/{id}: servicing.PermissionDTO, or -ENOENT. */
int permissions_get(Permissions *p, const PermissionsScope *scope, const char *id, bool with_status, json_t **ret);
/* GET /v1/admin/permissions/{id}/users: servicing.PermissionAssignedUsersDTO, -ENOENT, -EINVAL. */
int permissions_users(Permissions *p, const PermissionsScope *scope, const char *id, bool include_user_groups,
                      const char *tenant_filter, int64_t start, int64_t limit, json_t **ret);

/*
 * Apply one bulk call whose body passed schema_check(): ITEMS is its list (PermissionDTOs for
 * create/update, permission IDs for delete/revert). Items are applied in order under one lock;
 * each becomes a success or a failure with a message. Returns 0 and a
 * servicing.PermissionBulkOperationResponseDTO in *ret, -ESTALE, or -ENOMEM (items before the
 * failure stay applied).
 */
int permissions_write(Permissions *p, const PermissionsScope *scope, PermissionsWrite op, json_t *items,
                      json_t **ret);

/*
 * Assign (ASSIGN) or remove the direct assignment of users to permissions of the scope. ITEMS
 * is the checked list of {permissionId, userIds}. A user must exist in a tenant the scope's
 * tenant reaches; results are grouped by the tenant each user belongs to. Idempotent per
 * user. Returns 0 and a servicing.AssignRevokePermissionsResponseDTO, -ESTALE or -ENOMEM.
 */
int permissions_assign(Permissions *p, const PermissionsScope *scope, json_t *items, bool assign, json_t **ret);

/*
 * The /_sim dump of one store: {"tenantCode", "projectId"?, "permissions":[{permissionId,
 * displayName, correlationId?, userIds}], "count"}. TENANT NULL is the administrating tenant,
 * PROJECT NULL its production store. -ENOENT for an unknown tenant or project.
 */
int permissions_dump(Permissions *p, const char *tenant, const char *project, json_t **ret);

/*
 * Draft projects of tenant LOGIN (a TargetTenantID header or NULL), each holding a copy of the
 * tenant's production store taken when it was created. All return -EPERM for an unknown
 * tenant, -ENOENT for an unknown project, -EINVAL with ERR for a bad body.
 */
/* POST /v1/admin/projects: BODY is a servicing.ProjectDTO without id; answers the new ProjectDTO.
 * -ENOSPC when PERMISSIONS_PROJECTS_MAX are open. */
int projects_create(Permissions *p, const char *login, json_t *body, json_t **ret, char *err, size_t err_size);
/* GET /v1/admin/projects: servicing.GetProjectsAPIResponseDTO; WITH lists the kinds asked for
 * (Open, Approval, Rejected, Archived; empty = Open), LIMIT caps each list. */
int projects_list(Permissions *p, const char *login, const ModelStrv *with, int64_t limit, json_t **ret, char *err,
                  size_t err_size);
/* GET /v1/admin/projects/{id}: servicing.ProjectDTO. */
int projects_get(Permissions *p, const char *login, const char *id, json_t **ret);
/* POST /v1/admin/projects/{id}: BODY is a servicing.ProjectOperationRequestDTO; commitAndPublish
 * merges the draft into production (its creates, updates, assignments and deletes) and closes
 * the project. Answers a servicing.ProjectOperationResponseDTO. */
int projects_operate(Permissions *p, const char *login, const char *id, json_t *body, json_t **ret, char *err,
                     size_t err_size);
/* DELETE /v1/admin/projects/{id}: drops the draft; answers its ProjectDTO. */
int projects_delete(Permissions *p, const char *login, const char *id, json_t **ret);
