/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated tenant's catalog: capabilities, content packages, data security objects,
 * analytic objects, dimensions and members, immutable after model_new(). Every answer is a
 * new JSON value shaped like Visier's DTOs. The permissions are in sim-permissions.h.
 */
#pragma once

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most items a list filter (id=..., correlationIds=...) may name. */
#define MODEL_FILTER_MAX 64
/* Default member page when no limit is given (Visier: up to 15,000). */
#define MODEL_MEMBERS_LIMIT_DEFAULT 15000

typedef struct Model Model;

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
/* Does the tenant have a capability of this name? */
bool model_has_capability(Model *m, const char *name);
