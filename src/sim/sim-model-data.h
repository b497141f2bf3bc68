/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The seed tables of the simulated tenant, shared by sim-model.c only. Plain constant data:
 * objects, properties, dimensions, members, capabilities, content packages and permissions.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct SeedProperty {
        const char *id;                 /* "Object.Name"; the object is the prefix */
        const char *display;
        bool primary_key;
        const char *reference_symbol;   /* for reference properties, else NULL */
        bool no_data;                   /* exists but holds no loaded data */
} SeedProperty;

typedef struct SeedHierarchyProperty {
        const char *id, *display;
} SeedHierarchyProperty;

typedef struct SeedDimension {
        const char *id, *display, *description, *explanation;
        const char *level_ids[3], *level_names[3];
        const char *const *members;     /* "/"-separated paths, parents before children */
        const SeedHierarchyProperty *hierarchy_properties;      /* NULL-id terminated or NULL */
        const char *tag_id, *tag_name;  /* optional */
} SeedDimension;

typedef struct SeedObject {
        const char *id, *display, *description;
        const char *type;               /* data model type: SUBJECT, EVENT */
        const char *security_type;      /* servicing type: Subject, Event */
        bool security_object;           /* listed by /v1/admin/data-security-objects */
        const char *const *dimensions;
        const char *const *related;     /* related analytic objects (data security) */
        const char *const *selection_concepts;
} SeedObject;

extern const SeedProperty seed_properties[];
extern const size_t seed_properties_n;
extern const SeedDimension seed_dimensions[];
extern const size_t seed_dimensions_n;
extern const SeedObject seed_objects[];
extern const size_t seed_objects_n;
