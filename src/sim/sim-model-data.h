/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The seed tables of the simulated tenant, shared by the catalog (sim-model.c) and the
 * permission statuses (sim-permissions.c). Plain constant data: objects, properties,
 * dimensions and members, with lookups that never allocate.
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

/* Lookups by ID; NULL when the seed has no such thing. */
const SeedObject *seed_object_find(const char *id);
const SeedDimension *seed_dimension_find(const char *id);
const SeedProperty *seed_property_find(const char *id);
/* Does object O have dimension DIM? */
bool seed_object_has_dimension(const SeedObject *o, const char *dim);
/* Is PATH ("a/b/c") a member of dimension D? */
bool seed_dimension_has_member(const SeedDimension *d, const char *path);
