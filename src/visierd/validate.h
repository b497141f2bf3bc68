/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Validation of what a permission write brings before anything of it is stored: the request
 * body, and the header and query values that are kept with the job. Every rule names the
 * JSON path of the first bad member (e.g. "permissions[3].correlationId") or the name of the
 * bad header, so the client hears exactly what to fix. Pure logic; never logs, never
 * touches the store.
 *
 * Bodies are walked against Visier's own request schemas (validate-schema.h, generated from
 * Visier's OpenAPI definitions by tools/gen-validate-schema.py): every member must be one the
 * schema defines (Visier's DTOs say nothing of additionalProperties; visierd treats them as
 * closed, since a misspelt member would be dropped by Visier and the permission written
 * without it), of the JSON type it defines, and an enum member one of its values; null is
 * no value of any type. On top of the schemas, visierd's own rules: the operation's list
 * member ("permissions" or "permissionIds") holds 1 to max_items entries; creates carry a
 * displayName and no permissionId, updates a permissionId, assignments a permissionId and a
 * non-empty userIds; correlationId is 3 to 64 characters of A-Z a-z 0-9 _ - and unique
 * within the request; IDs that name model objects (analyticObjectId, dimensionId,
 * propertyId, hierarchyPropertyId) follow Visier's rule for IDs of data not yet in Visier:
 * A-Z a-z 0-9 and _, 3 to 200 characters, not starting with a digit — applied to each
 * dot-separated part, as qualified names such as "Employee.Job_Name" are how Visier names
 * properties.
 *
 * Header and query values (TargetTenantID, ProjectID, Idempotency-Key, tenantCode, ...) are
 * stored with a job and rendered back in job listings, so they must be valid UTF-8 without
 * control characters (C0, DEL, C1) and at most VALIDATE_HEADER_VALUE_MAX bytes. NonVersioned
 * is normalised to "true" or "false" from the spellings clients send (the Visier SDK sends
 * Python's True and False).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "jobs.h"

#define VALIDATE_PATH_MAX 256
#define VALIDATE_MESSAGE_MAX 256
/* The longest header or query value visierd stores with a job, in bytes. */
#define VALIDATE_HEADER_VALUE_MAX 256

typedef struct ValidateError {
        char path[VALIDATE_PATH_MAX];
        char message[VALIDATE_MESSAGE_MAX];
} ValidateError;

/* The JSON shapes a schema node can require. */
typedef enum ValidateType {
        VALIDATE_STRING,
        VALIDATE_BOOLEAN,
        VALIDATE_INTEGER,
        VALIDATE_NUMBER,
        VALIDATE_ENUM,   /* a string, one of enum_values */
        VALIDATE_ARRAY,  /* each element is an items */
        VALIDATE_OBJECT, /* only the listed members */
        VALIDATE_MAP,    /* any member names, each value an items */
        _VALIDATE_TYPE_MAX,
        _VALIDATE_TYPE_INVALID = -1,
} ValidateType;

typedef struct ValidateSchema ValidateSchema;

typedef struct ValidateMember {
        const char *name;
        const ValidateSchema *schema;
        bool required; /* Visier lists it under required: */
} ValidateMember;

/* One node of a schema tree. Trees are static and constant; nothing here is ever freed. */
struct ValidateSchema {
        ValidateType type;
        const char *name;               /* OBJECT: Visier's schema name, used in messages */
        const ValidateMember *members;  /* OBJECT: ended by an entry whose name is NULL */
        const ValidateSchema *items;    /* ARRAY: each element; MAP: each value */
        const char *const *enum_values; /* ENUM: ended by NULL */
        json_int_t int_min, int_max;    /* INTEGER: inclusive bounds */
};

/* Parse and check a body; on success *ret is the parsed root (caller decrefs). -EINVAL when
 * the body is refused, -ENOMEM when memory ran out; err is filled either way. */
int validate_write(JobOp op, const char *body, size_t len, size_t max_items, json_t **ret, ValidateError *err);

/* Visier's request-body schema of a write; NULL for an operation that is not one. */
const ValidateSchema *validate_request_schema(JobOp op);

/* Check v against schema s (and the model-ID rule) with path naming v; 0 or -EINVAL. */
int validate_json(const ValidateSchema *s, json_t *v, const char *path, ValidateError *err);

/* A header value that will be stored: valid UTF-8, no control characters, at most
 * VALIDATE_HEADER_VALUE_MAX bytes. NULL (header absent) is fine. On -EINVAL err->path is
 * the header's name. */
int validate_header_value(const char *name, const char *value, ValidateError *err);

/* The tenantCode query value after percent-decoding, len bytes (so that a decoded NUL is
 * seen); the same rules as a header value, err->path "tenantCode". NULL is fine. */
int validate_tenant_code(const char *value, size_t len, ValidateError *err);

/* NonVersioned: true/True/TRUE give "true", false/False/FALSE give "false" in
 * *ret_normalized (a static string); anything else -EINVAL. NULL (header absent) gives 0
 * and *ret_normalized NULL. */
int validate_non_versioned(const char *value, const char **ret_normalized, ValidateError *err);
/* The same for any header Visier types as boolean (FastMode, SessionBasedPermissions, ...):
 * Python clients send True/False; Visier's definitions say true/false. */
int validate_boolean_header(const char *name, const char *value, const char **ret_normalized, ValidateError *err);

bool validate_correlation_id(const char *s);
bool validate_model_id(const char *s);
