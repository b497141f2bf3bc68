/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated tenant's data: capabilities, content packages, data security objects,
 * analytic objects, dimensions and members (immutable after model_new()), and the mutable
 * permission store with its write side (bulk create/update/delete/revert, assign/remove users).
 * Every answer is a new JSON value shaped like Visier's DTOs.
 */
#pragma once

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most items a list filter (id=..., correlationIds=...) may name. */
#define MODEL_FILTER_MAX 64
/* Default and largest page for the permission users endpoint. */
#define MODEL_USERS_LIMIT_MAX 100
/* Default member page when no limit is given (Visier: up to 15,000). */
#define MODEL_MEMBERS_LIMIT_DEFAULT 15000

/* Most permissions the store holds; creates beyond it fail per item. */
#define MODEL_PERMISSIONS_MAX 100000
/* Most correlation IDs remembered at once; expired ones are swept when the table is full. */
#define MODEL_CORRELATION_IDS_MAX 100000
/* Correlation IDs stay reserved (and findable) this long after their create. */
#define MODEL_CORRELATION_TTL_USEC ((uint64_t) 7 * 24 * 3600 * 1000000)
#define MODEL_CORRELATION_ID_MIN 3
#define MODEL_CORRELATION_ID_MAX 64
/* Most directly assigned users per permission and tenant. */
#define MODEL_USERS_PER_TENANT_MAX 10000
/* Room for one per-item error message. */
#define MODEL_MESSAGE_MAX 256
/* The simulated tenant's code, used when a call names no TargetTenantID. */
#define MODEL_TENANT_CODE "WFF_j1a"

typedef struct Model Model;

typedef enum ModelWrite {
        MODEL_WRITE_CREATE,             /* POST /v1/admin/permissions */
        MODEL_WRITE_UPDATE,             /* PUT /v1/admin/permissions */
        MODEL_WRITE_DELETE,             /* DELETE /v1/admin/permissions */
        MODEL_WRITE_REVERT,             /* POST /v1/admin/permissions/revert-to-parent */
        _MODEL_WRITE_MAX,
        _MODEL_WRITE_INVALID = -EINVAL,
} ModelWrite;

typedef struct ModelStrv {
        const char *items[MODEL_FILTER_MAX];
        size_t n;
} ModelStrv;

typedef struct ModelMemberQuery {
        ModelStrv ids;
        int64_t max_level;      /* -1: all levels */
        const char *filter;     /* POSIX extended regex or NULL */
        const char *field;      /* "id", "display", "either"; NULL = id */
        int64_t offset;         /* 0 default */
        int64_t limit;          /* -1 default */
} ModelMemberQuery;

#define MODEL_MEMBER_QUERY_INIT ((ModelMemberQuery) { .max_level = -1, .limit = -1 })

int model_new(Model **ret);
Model *model_free(Model *m);

/* All return 0 and a new reference in *ret, -ENOENT for unknown ids, -EINVAL for bad queries. */
int model_capabilities(Model *m, json_t **ret);
int model_capability(Model *m, const char *id, json_t **ret);
int model_content_packages(Model *m, const char *search, json_t **ret);
int model_content_package(Model *m, const char *id, bool with_details, json_t **ret);
int model_data_security_objects(Model *m, const ModelStrv *ids, bool details, json_t **ret);
int model_analytic_objects(Model *m, const ModelStrv *ids, const char *object_type, json_t **ret);
int model_dimensions(Model *m, const char *object_id, const ModelStrv *ids, json_t **ret);
/* *ret_partial is set when the answer is one page of a longer list (HTTP 206). */
int model_members(Model *m, const char *object_id, const char *dimension_id, const ModelMemberQuery *q,
                  json_t **ret, bool *ret_partial);
int model_permissions(Model *m, bool details, bool with_status, const ModelStrv *correlation_ids, json_t **ret);
int model_permission(Model *m, const char *id, bool with_status, json_t **ret);
int model_permission_users(Model *m, const char *id, bool include_user_groups, const char *tenant_filter,
                           int64_t start, int64_t limit, json_t **ret);

/*
 * Apply one bulk permission call whose body passed schema_check(): ITEMS is its list
 * (PermissionDTOs for create/update, permission IDs for delete/revert). Items are applied in
 * order under one lock; each becomes a success or a failure with a message. Returns 0 and a
 * servicing.PermissionBulkOperationResponseDTO in *ret, or -ENOMEM (items before the failure
 * stay applied).
 */
int model_permissions_write(Model *m, ModelWrite op, json_t *items, json_t **ret);

/*
 * Assign (ASSIGN) or remove the direct assignment of users to permissions in TENANT_CODE.
 * ITEMS is the checked list of {permissionId, userIds}. Idempotent per user. Returns 0 and a
 * servicing.AssignRevokePermissionsResponseDTO (one tenant; projectId when PROJECT_ID is set).
 */
int model_permissions_assign(Model *m, json_t *items, const char *tenant_code, const char *project_id, bool assign,
                             json_t **ret);

/* {"permissions":[{permissionId, displayName, correlationId?, userIds}], "count": N}: the whole store. */
int model_permissions_dump(Model *m, json_t **ret);
