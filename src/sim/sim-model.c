/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the simulated tenant's model. At start model_new() turns the seed tables into JSON
 * shaped like Visier's DTOs (visier-subset.yaml); read calls answer deep copies filtered by
 * the query, so the bytes depend only on the request. No timestamps, no random values.
 *
 * The permission store is a mutable array behind the model's mutex: each entry holds the full
 * PermissionDTO, an optional correlation ID with its creation time, and the users assigned per
 * tenant. An index (permissionId -> position) makes lookups constant time; a delete leaves a
 * tombstone that the same locked section compacts away, so readers never see one. The write
 * side applies one bulk call under the lock, item by item in request order, and answers
 * Visier's per-item DTOs. Correlation IDs live in a bounded table and expire after 7 days of
 * the program's clock. New permission IDs come from a deterministic generator. Never logs.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "macro.h"
#include "sim-model-data.h"
#include "sim-model.h"

/* Validity range every seeded member carries: 2018-01-01 until 9999-12-31. */
#define MEMBER_VALID_FROM "1514764800000"
#define MEMBER_VALID_TO "253402300799000"
#define DATA_START "1514764800000"
#define DATA_END "1767225600000"

typedef struct PermissionEntry {
        json_t *dto;            /* full servicing.PermissionDTO, without statuses; NULL = tombstone */
        json_t *tenants;        /* array of {tenantCode, users:[{userId, username, permissionFrom}]} */
        char *correlation_id;   /* NULL for seeded permissions */
        usec_t correlation_time;        /* clock_now() at creation */
} PermissionEntry;

struct Model {
        pthread_mutex_t lock;           /* guards permissions; the rest is immutable */
        json_t *capabilities;           /* array of CapabilityDTO */
        json_t *content_packages;       /* array of ContentPackageDTO with artifactsByType */
        json_t *analytic_objects;       /* array of datamodel AnalyticObjectDTO */
        json_t *security_objects;       /* array of servicing AnalyticObjectDTO, full */
        json_t *dimensions;             /* object: dimension id -> DimensionDTO */
        json_t *members;                /* object: dimension id -> array of MemberDTO */
        PermissionEntry *permissions;
        size_t n_permissions, n_permissions_allocated;
        json_t *by_id;                  /* object: permissionId -> index into permissions */
        json_t *correlation_ids;        /* object: correlation ID -> clock_now() of its create */
        json_t *usernames;              /* object: userId -> username, from the seed */
        uint64_t uuid_state;            /* deterministic permission ID generator */
        bool has_tombstones;
};

#define _cleanup_json_ _cleanup_(json_decrefp)

/* ---- seed lookups ---------------------------------------------------------------------- */

static const SeedObject *seed_object(const char *id) {
        for (size_t i = 0; i < seed_objects_n; i++)
                if (streq(seed_objects[i].id, id))
                        return &seed_objects[i];
        return NULL;
}

static const SeedDimension *seed_dimension(const char *id) {
        for (size_t i = 0; i < seed_dimensions_n; i++)
                if (streq(seed_dimensions[i].id, id))
                        return &seed_dimensions[i];
        return NULL;
}

static const SeedProperty *seed_property(const char *id) {
        for (size_t i = 0; i < seed_properties_n; i++)
                if (streq(seed_properties[i].id, id))
                        return &seed_properties[i];
        return NULL;
}

static bool strv_contains(const char *const *v, const char *s) {
        for (; v && *v; v++)
                if (streq(*v, s))
                        return true;
        return false;
}

static bool property_belongs(const SeedProperty *p, const char *object_id) {
        size_t n = strlen(object_id);
        return strncmp(p->id, object_id, n) == 0 && p->id[n] == '.';
}

static bool member_exists(const SeedDimension *d, json_t *name_path) {
        char buf[512];
        size_t i, pos = 0;
        json_t *v;

        if (!json_is_array(name_path) || json_array_size(name_path) == 0)
                return false;
        json_array_foreach(name_path, i, v) {
                const char *s = json_string_value(v);
                int n;

                if (!s)
                        return false;
                n = snprintf(buf + pos, sizeof(buf) - pos, "%s%s", i > 0 ? "/" : "", s);
                if (n < 0 || (size_t) n >= sizeof(buf) - pos)
                        return false;
                pos += (size_t) n;
        }
        for (const char *const *m = d->members; m && *m; m++)
                if (streq(*m, buf))
                        return true;
        return false;
}

/* ---- building the model ---------------------------------------------------------------- */

static json_t *strv_to_json(const char *const *v) {
        json_t *a = json_array();

        for (; a && v && *v; v++)
                if (json_array_append_new(a, json_string(*v)) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

/* Split "a/b/c" into a JSON array of strings. */
static json_t *path_to_json(const char *path) {
        json_t *a = json_array();
        const char *p = path;

        while (a && p) {
                const char *slash = strchr(p, '/');
                size_t n = slash ? (size_t) (slash - p) : strlen(p);

                if (json_array_append_new(a, json_stringn(p, n)) < 0) {
                        json_decref(a);
                        return NULL;
                }
                p = slash ? slash + 1 : NULL;
        }
        return a;
}

static const char *path_last(const char *path) {
        const char *s = strrchr(path, '/');
        return s ? s + 1 : path;
}

static int build_capabilities(Model *m) {
        static const struct { const char *name, *display, *description; } caps[] = {
                { "data", "Data", "Access data in analyses, visualizations and exports." },
                { "analytic_model", "Analytic Model", "View and edit the analytic model in Studio." },
                { "aggregate_view", "Aggregate View", "View aggregated metric values for the permitted population." },
                { "detailed_view", "Detailed View", "View individual records in detailed lists." },
                { "consume_data_exports", "Consume Data Exports", "Download scheduled data export jobs." },
                { "schedule_analysis", "Schedule Analysis", "Schedule analyses to be sent by email." },
                { "manage_users", "Manage Users", "Create users and assign them permissions." },
        };

        m->capabilities = json_array();
        if (!m->capabilities)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(caps); i++)
                if (json_array_append_new(m->capabilities,
                                          json_pack("{s:s, s:s, s:s}", "name", caps[i].name, "displayName",
                                                    caps[i].display, "description", caps[i].description)) < 0)
                        return -ENOMEM;
        return 0;
}

static json_t *artifact_dimension(const char *id) {
        const SeedDimension *d = seed_dimension(id);
        return json_pack("{s:s, s:s, s:b, s:b}", "objectName", id, "displayName", d ? d->display : id,
                         "canFilterBy", 1, "canGroupBy", 1);
}

static json_t *artifact_metric(const char *id, const char *display) {
        return json_pack("{s:s, s:s}", "objectName", id, "displayName", display);
}

static int build_content_packages(Model *m) {
        m->content_packages = json_pack(
                "[{s:s, s:s, s:s, s:[{s:s, s:[o,o,o]}, {s:s, s:[o,o,o]}]},"
                " {s:s, s:s, s:s, s:[{s:s, s:[o,o]}, {s:s, s:[o,o]}]},"
                " {s:s, s:s, s:s, s:[{s:s, s:[o]}, {s:s, s:[o,o]}]}]",
                "contentPackageId", "4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c01",
                "displayName", "Core HR",
                "description", "Workforce size, movement, diversity and organization structure.",
                "artifactsByType",
                "artifactType", "dimension", "artifacts",
                artifact_dimension("Location"), artifact_dimension("Gender"),
                artifact_dimension("Organization_Hierarchy"),
                "artifactType", "metric", "artifacts",
                artifact_metric("employeeCount", "Headcount"), artifact_metric("exitCount", "Exits"),
                artifact_metric("resignationRate", "Resignation Rate"),

                "contentPackageId", "4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c02",
                "displayName", "Talent Acquisition",
                "description", "Requisitions, applicants and the recruiting funnel.",
                "artifactsByType",
                "artifactType", "dimension", "artifacts",
                artifact_dimension("Requisition_Status"), artifact_dimension("Applicant_Source"),
                "artifactType", "metric", "artifacts",
                artifact_metric("applicantCount", "Applicants"), artifact_metric("timeToFill", "Time to Fill"),

                "contentPackageId", "4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c03",
                "displayName", "Compensation",
                "description", "Pay levels, compensation changes and pay equity.",
                "artifactsByType",
                "artifactType", "dimension", "artifacts",
                artifact_dimension("Compensation_Change_Reason"),
                "artifactType", "metric", "artifacts",
                artifact_metric("averageBasePay", "Average Base Pay"),
                artifact_metric("compaRatio", "Compa-Ratio"));
        return m->content_packages ? 0 : -ENOMEM;
}

static int build_dimensions(Model *m) {
        m->dimensions = json_object();
        m->members = json_object();
        if (!m->dimensions || !m->members)
                return -ENOMEM;

        for (size_t i = 0; i < seed_dimensions_n; i++) {
                const SeedDimension *d = &seed_dimensions[i];
                _cleanup_json_ json_t *dim = NULL, *levels = NULL, *members = NULL;
                size_t count = 0;

                levels = json_array();
                members = json_array();
                if (!levels || !members)
                        return -ENOMEM;
                for (size_t l = 0; l < ELEMENTSOF(d->level_ids) && d->level_ids[l]; l++)
                        if (json_array_append_new(levels, json_pack("{s:s, s:s, s:i}", "id", d->level_ids[l],
                                                                    "displayName", d->level_names[l],
                                                                    "depth", (int) l + 1)) < 0)
                                return -ENOMEM;

                for (const char *const *p = d->members; p && *p; p++, count++) {
                        json_t *path = path_to_json(*p), *display_path = path_to_json(*p);
                        char full[256];

                        snprintf(full, sizeof(full), "%s.%s", d->id, path_last(*p));
                        if (!path || !display_path ||
                            json_array_append_new(members,
                                                  json_pack("{s:s, s:s, s:i, s:o, s:[{s:s, s:s}], s:o}",
                                                            "fullName", full, "displayName", path_last(*p),
                                                            "level", (int) json_array_size(path), "path", path,
                                                            "validityRanges", "start", MEMBER_VALID_FROM,
                                                            "end", MEMBER_VALID_TO,
                                                            "displayNamePath", display_path)) < 0)
                                return -ENOMEM;
                }

                dim = json_pack("{s:s, s:s, s:s, s:O, s:i, s:b}", "id", d->id, "displayName", d->display,
                                "description", d->description, "levels", levels, "memberCount", (int) count,
                                "visibleInApp", 1);
                if (!dim)
                        return -ENOMEM;
                if (d->tag_id &&
                    json_object_set_new(dim, "tags", json_pack("[{s:s, s:s}]", "id", d->tag_id, "displayName",
                                                               d->tag_name)) < 0)
                        return -ENOMEM;
                if (json_object_set_new(dim, "explanation", json_string(d->explanation)) < 0 ||
                    json_object_set(m->dimensions, d->id, dim) < 0 ||
                    json_object_set(m->members, d->id, members) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static json_t *property_ids_json(const char *object_id) {
        json_t *a = json_array();

        for (size_t i = 0; a && i < seed_properties_n; i++)
                if (property_belongs(&seed_properties[i], object_id) &&
                    json_array_append_new(a, json_string(seed_properties[i].id)) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

static int build_analytic_objects(Model *m) {
        m->analytic_objects = json_array();
        if (!m->analytic_objects)
                return -ENOMEM;

        for (size_t i = 0; i < seed_objects_n; i++) {
                const SeedObject *o = &seed_objects[i];
                _cleanup_json_ json_t *dto = NULL;

                dto = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "id", o->id, "displayName", o->display,
                                "description", o->description, "type", o->type, "dataStartDate", DATA_START,
                                "dataEndDate", DATA_END, "propertyIds", property_ids_json(o->id),
                                "dimensionIds", strv_to_json(o->dimensions));
                if (!dto)
                        return -ENOMEM;
                if (o->selection_concepts &&
                    json_object_set_new(dto, "selectionConceptIds", strv_to_json(o->selection_concepts)) < 0)
                        return -ENOMEM;
                if (streq(o->id, "Applicant") &&
                    json_object_set_new(dto, "objectReferences",
                                        json_pack("[{s:s, s:s, s:s, s:s, s:s, s:s, s:b}]", "id",
                                                  "Applicant.Requisition", "displayName", "Requisition",
                                                  "description", "The requisition the applicant applied to.",
                                                  "fromObject", "Applicant", "toObject", "Requisition", "type",
                                                  "SUBJECT_REFERENCE", "isStrongReference", 1)) < 0)
                        return -ENOMEM;
                if (streq(o->id, "Employee") &&
                    json_object_set_new(dto, "populationConfiguration",
                                        json_pack("{s:[{s:s, s:s}, {s:s, s:s}], s:[{s:s, s:s}],"
                                                  " s:[{s:s, s:s}, {s:s, s:s}]}",
                                                  "distinguishingProperties",
                                                  "name", "Employee.Job_Name", "qualifyingPath", "Employee",
                                                  "name", "Employee.Pay_Level", "qualifyingPath", "Employee",
                                                  "changeHistoryProperties",
                                                  "name", "Employee.Pay_Level", "qualifyingPath", "Employee",
                                                  "groupingDimensions",
                                                  "name", "Location", "qualifyingPath", "Employee",
                                                  "name", "Organization_Hierarchy", "qualifyingPath",
                                                  "Employee")) < 0)
                        return -ENOMEM;
                if (json_array_append(m->analytic_objects, dto) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int append_securable_properties(json_t *a, const char *object_id) {
        for (size_t i = 0; i < seed_properties_n; i++) {
                const SeedProperty *p = &seed_properties[i];
                json_t *o;

                if (!property_belongs(p, object_id))
                        continue;
                o = json_pack("{s:s, s:s, s:s, s:b}", "propertyId", p->id, "displayName", p->display,
                              "analyticObjectId", object_id, "isPrimaryKey", p->primary_key);
                if (o && p->reference_symbol)
                        (void) json_object_set_new(o, "referenceSymbolName", json_string(p->reference_symbol));
                if (json_array_append_new(a, o) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int build_security_objects(Model *m) {
        m->security_objects = json_array();
        if (!m->security_objects)
                return -ENOMEM;

        for (size_t i = 0; i < seed_objects_n; i++) {
                const SeedObject *o = &seed_objects[i];
                _cleanup_json_ json_t *dto = NULL, *related = NULL, *props = NULL, *dims = NULL;

                if (!o->security_object)
                        continue;
                related = json_array();
                props = json_array();
                dims = json_array();
                if (!related || !props || !dims)
                        return -ENOMEM;
                if (append_securable_properties(props, o->id) < 0)
                        return -ENOMEM;
                for (const char *const *r = o->related; r && *r; r++) {
                        const SeedObject *ro = seed_object(*r);

                        if (json_array_append_new(related, json_pack("{s:s, s:s}", "analyticObjectId", *r,
                                                                     "displayName", ro ? ro->display : *r)) < 0 ||
                            append_securable_properties(props, *r) < 0)
                                return -ENOMEM;
                }
                for (const char *const *d = o->dimensions; d && *d; d++) {
                        const SeedDimension *sd = seed_dimension(*d);
                        _cleanup_json_ json_t *ids = NULL, *hprops = NULL;

                        ids = json_array();
                        hprops = json_array();
                        if (!sd || !ids || !hprops || json_array_append_new(ids, json_string(o->id)) < 0)
                                return -ENOMEM;
                        for (const char *const *r = o->related; r && *r; r++) {
                                const SeedObject *ro = seed_object(*r);
                                if (ro && strv_contains(ro->dimensions, *d) &&
                                    json_array_append_new(ids, json_string(*r)) < 0)
                                        return -ENOMEM;
                        }
                        for (const SeedHierarchyProperty *h = sd->hierarchy_properties; h && h->id; h++)
                                if (json_array_append_new(hprops, json_pack("{s:s, s:s}", "hierarchyPropertyId",
                                                                            h->id, "displayName",
                                                                            h->display)) < 0)
                                        return -ENOMEM;
                        if (json_array_append_new(dims, json_pack("{s:s, s:s, s:O, s:O}", "dimensionId", *d,
                                                                  "displayName", sd->display,
                                                                  "analyticObjectIds", ids,
                                                                  "hierarchyProperties", hprops)) < 0)
                                return -ENOMEM;
                }
                dto = json_pack("{s:s, s:s, s:s, s:O, s:O, s:O}", "analyticObjectId", o->id, "displayName",
                                o->display, "objectType", o->security_type, "relatedObjects", related,
                                "securableProperties", props, "securableDimensions", dims);
                if (!dto || json_array_append(m->security_objects, dto) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int permissions_append(Model *m, json_t *dto, json_t *tenants, const char *correlation_id) {
        PermissionEntry *e;

        if (!dto || !tenants) {
                json_decref(dto);
                json_decref(tenants);
                return -ENOMEM;
        }
        if (m->n_permissions >= m->n_permissions_allocated) {
                size_t n = m->n_permissions_allocated ? m->n_permissions_allocated * 2 : 8;
                PermissionEntry *p = reallocarray(m->permissions, n, sizeof(PermissionEntry));

                if (!p) {
                        json_decref(dto);
                        json_decref(tenants);
                        return -ENOMEM;
                }
                m->permissions = p;
                m->n_permissions_allocated = n;
        }
        e = &m->permissions[m->n_permissions];
        *e = (PermissionEntry) { .dto = dto, .tenants = tenants, .correlation_time = clock_now() };
        if (correlation_id) {
                e->correlation_id = strdup(correlation_id);
                if (!e->correlation_id) {
                        json_decref(dto);
                        json_decref(tenants);
                        return -ENOMEM;
                }
        }
        if (json_object_set_new(m->by_id, json_string_value(json_object_get(dto, "permissionId")),
                                json_integer((json_int_t) m->n_permissions)) < 0) {
                free(e->correlation_id);
                json_decref(dto);
                json_decref(tenants);
                return -ENOMEM;
        }
        m->n_permissions++;
        return 0;
}

/* Remember the user names the seed knows, for assign answers. */
static int build_usernames(Model *m) {
        m->usernames = json_object();
        if (!m->usernames)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_permissions; i++) {
                size_t j, k;
                json_t *t, *u;

                json_array_foreach(m->permissions[i].tenants, j, t)
                        json_array_foreach(json_object_get(t, "users"), k, u) {
                                const char *id = json_string_value(json_object_get(u, "userId"));
                                json_t *name = json_object_get(u, "username");

                                if (id && json_is_string(name) && json_object_set(m->usernames, id, name) < 0)
                                        return -ENOMEM;
                        }
        }
        return 0;
}

static int build_permissions(Model *m) {
        int r;

        r = permissions_append(
                m,
                json_pack("{s:s, s:s, s:s,"
                          " s:[{s:s, s:{s:[{s:s, s:s, s:[], s:s}, {s:s, s:s, s:[], s:s}, {s:s, s:s, s:[], s:s}]},"
                          "      s:b, s:[{s:s, s:b}]}],"
                          " s:{s:b, s:[s, s, s]}, s:{s:[s, s]}}",
                          "permissionId", "3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71",
                          "displayName", "HR Analyst",
                          "description", "Aggregate and detailed access to the whole employee population.",
                          "dataSecurityProfiles",
                          "analyticObjectId", "Employee",
                          "propertySetConfig", "propertyAccessConfigs",
                          "propertyId", "Employee.Full_Name", "analyticObjectId", "Employee",
                          "analyticObjectReferencePaths", "accessLevel", "Detailed",
                          "propertyId", "Employee.Pay_Level", "analyticObjectId", "Employee",
                          "analyticObjectReferencePaths", "accessLevel", "Aggregate",
                          "propertyId", "Employee.Performance_Rating", "analyticObjectId", "Employee",
                          "analyticObjectReferencePaths", "accessLevel", "Aggregate",
                          "allDataPointAccess", 1,
                          "inheritedAccessConfigs", "analyticObjectId", "Compensation_Change", "removeAccess", 1,
                          "adminCapabilityConfig", "allCapabilitiesAccess", 0,
                          "capabilities", "data", "aggregate_view", "detailed_view",
                          "roleModulesConfig", "contentPackageIds",
                          "4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c01", "4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c03"),
                json_pack("[{s:s, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s, s:s}]},"
                          " {s:s, s:[{s:s, s:s, s:s}]}]",
                          "tenantCode", "WFF_j1a", "users",
                          "userId", "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c1", "username", "alice.nguyen@example.com",
                          "permissionFrom", "User",
                          "userId", "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c2", "username", "bob.martin@example.com",
                          "permissionFrom", "UserGroup",
                          "userId", "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c3", "username", "carol.singh@example.com",
                          "permissionFrom", "UserAndUserGroup",
                          "tenantCode", "WFF_j1a~c01", "users",
                          "userId", "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c4", "username", "dan.okafor@example.com",
                          "permissionFrom", "User"),
                NULL);
        if (r < 0)
                return r;

        r = permissions_append(
                m,
                json_pack("{s:s, s:s, s:s,"
                          " s:[{s:s, s:{s:[{s:s, s:s, s:[], s:s}]}, s:b,"
                          "      s:[{s:[{s:{s:s, s:[], s:[{s:[s], s:b}, {s:[s, s], s:b}]}}]}]},"
                          "     {s:s, s:{s:[{s:s, s:s, s:[], s:s}]}, s:b,"
                          "      s:[{s:[{s:{s:s, s:[], s:[{s:[s], s:b}]}}]}]}],"
                          " s:{s:b, s:[s, s]}, s:{s:[s]}}",
                          "permissionId", "7a9e4d2c-1b3f-4c5d-8e6f-0a1b2c3d4e72",
                          "displayName", "Canada HR Business Partner",
                          "description", "Employees and requisitions located in Canada, except Ontario.",
                          "dataSecurityProfiles",
                          "analyticObjectId", "Employee",
                          "propertySetConfig", "propertyAccessConfigs",
                          "propertyId", "Employee.Job_Name", "analyticObjectId", "Employee",
                          "analyticObjectReferencePaths", "accessLevel", "Detailed",
                          "allDataPointAccess", 0,
                          "memberFilterConfigs", "dimensionFilters", "staticDimensionFilter",
                          "dimensionId", "Location", "subjectReferencePath", "memberSelections",
                          "namePath", "Canada", "excluded", 0,
                          "namePath", "Canada", "Ontario", "excluded", 1,
                          "analyticObjectId", "Requisition",
                          "propertySetConfig", "propertyAccessConfigs",
                          "propertyId", "Requisition.Job_Title", "analyticObjectId", "Requisition",
                          "analyticObjectReferencePaths", "accessLevel", "Aggregate",
                          "allDataPointAccess", 0,
                          "memberFilterConfigs", "dimensionFilters", "staticDimensionFilter",
                          "dimensionId", "Location", "subjectReferencePath", "memberSelections",
                          "namePath", "Canada", "excluded", 0,
                          "adminCapabilityConfig", "allCapabilitiesAccess", 0,
                          "capabilities", "data", "aggregate_view",
                          "roleModulesConfig", "contentPackageIds", "4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c01"),
                json_pack("[{s:s, s:[{s:s, s:s, s:s}]}]",
                          "tenantCode", "WFF_j1a", "users",
                          "userId", "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c5", "username", "emma.tremblay@example.com",
                          "permissionFrom", "User"),
                NULL);
        if (r < 0)
                return r;

        /* Deliberately stale: Germany and Applicant.Source_Channel no longer exist (status NotFound). */
        return permissions_append(
                m,
                json_pack("{s:s, s:s, s:s,"
                          " s:[{s:s, s:{s:[{s:s, s:s, s:[], s:s}, {s:s, s:s, s:[], s:s}]}, s:b,"
                          "      s:[{s:[{s:{s:s, s:[], s:[{s:{s:s}, s:s}]}}]}]},"
                          "     {s:s, s:{s:[{s:s, s:s, s:[], s:s}]}, s:b,"
                          "      s:[{s:[{s:{s:s, s:[], s:[{s:[s], s:b}]}}]}], s:{s:s, s:s}}],"
                          " s:{s:b}, s:{s:[s]}}",
                          "permissionId", "c25d8f3a-6e1b-4a7c-9d0e-5f4a3b2c1d93",
                          "displayName", "Recruiter",
                          "description", "Requisitions in the recruiter's organization and their applicants.",
                          "dataSecurityProfiles",
                          "analyticObjectId", "Requisition",
                          "propertySetConfig", "propertyAccessConfigs",
                          "propertyId", "Requisition.Job_Title", "analyticObjectId", "Requisition",
                          "analyticObjectReferencePaths", "accessLevel", "Detailed",
                          "propertyId", "Requisition.Hiring_Manager", "analyticObjectId", "Requisition",
                          "analyticObjectReferencePaths", "accessLevel", "Detailed",
                          "allDataPointAccess", 0,
                          "memberFilterConfigs", "dimensionFilters", "dynamicDimensionFilter",
                          "dimensionId", "Organization_Hierarchy", "subjectReferencePath",
                          "dynamicPropertyMappings", "userProperty", "name", "employeeId",
                          "hierarchyPropertyId", "Organization_Hierarchy.Organization_Head",
                          "analyticObjectId", "Applicant",
                          "propertySetConfig", "propertyAccessConfigs",
                          "propertyId", "Applicant.Source_Channel", "analyticObjectId", "Applicant",
                          "analyticObjectReferencePaths", "accessLevel", "Aggregate",
                          "allDataPointAccess", 0,
                          "memberFilterConfigs", "dimensionFilters", "staticDimensionFilter",
                          "dimensionId", "Applicant_Source", "subjectReferencePath", "memberSelections",
                          "namePath", "Germany", "excluded", 0,
                          "inheritedReferenceMemberFilterConfig",
                          "targetAnalyticObjectId", "Requisition", "analyticObjectReference", "Applicant.Requisition",
                          "adminCapabilityConfig", "allCapabilitiesAccess", 1,
                          "roleModulesConfig", "contentPackageIds", "4c1d7a52-3e8b-4f6a-9d2c-1b7e5a9f3c02"),
                json_pack("[{s:s, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}, {s:s, s:[{s:s, s:s, s:s}]}]",
                          "tenantCode", "WFF_j1a", "users",
                          "userId", "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c6", "username", "farah.haddad@example.com",
                          "permissionFrom", "User",
                          "userId", "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c2", "username", "bob.martin@example.com",
                          "permissionFrom", "UserGroup",
                          "tenantCode", "WFF_j1a~c02", "users",
                          "userId", "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c7", "username", "gil.roberts@example.com",
                          "permissionFrom", "UserGroup"),
                NULL);
}

int model_new(Model **ret) {
        Model *m;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        pthread_mutex_init(&m->lock, NULL);
        m->uuid_state = UINT64_C(0x5eed5eed5eed5eed);
        m->by_id = json_object();
        m->correlation_ids = json_object();
        if (!m->by_id || !m->correlation_ids) {
                model_free(m);
                return -ENOMEM;
        }

        r = build_capabilities(m);
        if (r >= 0)
                r = build_content_packages(m);
        if (r >= 0)
                r = build_dimensions(m);
        if (r >= 0)
                r = build_analytic_objects(m);
        if (r >= 0)
                r = build_security_objects(m);
        if (r >= 0)
                r = build_permissions(m);
        if (r >= 0)
                r = build_usernames(m);
        if (r < 0) {
                model_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

Model *model_free(Model *m) {
        if (!m)
                return NULL;
        json_decref(m->capabilities);
        json_decref(m->content_packages);
        json_decref(m->analytic_objects);
        json_decref(m->security_objects);
        json_decref(m->dimensions);
        json_decref(m->members);
        for (size_t i = 0; i < m->n_permissions; i++) {
                json_decref(m->permissions[i].dto);
                json_decref(m->permissions[i].tenants);
                free(m->permissions[i].correlation_id);
        }
        free(m->permissions);
        json_decref(m->by_id);
        json_decref(m->correlation_ids);
        json_decref(m->usernames);
        pthread_mutex_destroy(&m->lock);
        free(m);
        return NULL;
}

/* ---- read side ------------------------------------------------------------------------- */

static bool strv_has(const ModelStrv *v, const char *s) {
        for (size_t i = 0; v && i < v->n; i++)
                if (streq(v->items[i], s))
                        return true;
        return false;
}

/* Find the element of array A whose string field KEY equals VALUE (borrowed). */
static json_t *array_find(json_t *a, const char *key, const char *value) {
        size_t i;
        json_t *v;

        json_array_foreach(a, i, v) {
                const char *s = json_string_value(json_object_get(v, key));
                if (s && streq(s, value))
                        return v;
        }
        return NULL;
}

/* {KEY: copy of A}. */
static int wrap_array(const char *key, json_t *a, json_t **ret) {
        json_t *o = json_pack("{s:o}", key, a);

        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

int model_capabilities(Model *m, json_t **ret) {
        return wrap_array("capabilities", json_deep_copy(m->capabilities), ret);
}

int model_capability(Model *m, const char *id, json_t **ret) {
        json_t *c = array_find(m->capabilities, "name", id);

        if (!c)
                return -ENOENT;
        *ret = json_deep_copy(c);
        return *ret ? 0 : -ENOMEM;
}

static json_t *content_package_copy(json_t *cp, bool details) {
        json_t *o = json_deep_copy(cp);

        if (o && !details)
                (void) json_object_del(o, "artifactsByType");
        return o;
}

int model_content_packages(Model *m, const char *search, json_t **ret) {
        _cleanup_json_ json_t *a = json_array();
        size_t i;
        json_t *cp;

        if (!a)
                return -ENOMEM;
        json_array_foreach(m->content_packages, i, cp) {
                const char *name = json_string_value(json_object_get(cp, "displayName"));
                const char *desc = json_string_value(json_object_get(cp, "description"));

                if (search && *search && !strcasestr(strempty(name), search) && !strcasestr(strempty(desc), search))
                        continue;
                if (json_array_append_new(a, content_package_copy(cp, false)) < 0)
                        return -ENOMEM;
        }
        return wrap_array("contentPackages", TAKE_PTR(a), ret);
}

int model_content_package(Model *m, const char *id, bool with_details, json_t **ret) {
        json_t *cp = array_find(m->content_packages, "contentPackageId", id);

        if (!cp)
                return -ENOENT;
        *ret = content_package_copy(cp, with_details);
        return *ret ? 0 : -ENOMEM;
}

int model_data_security_objects(Model *m, const ModelStrv *ids, bool details, json_t **ret) {
        _cleanup_json_ json_t *a = json_array();
        size_t i;
        json_t *o;

        if (!a)
                return -ENOMEM;
        for (i = 0; ids && i < ids->n; i++)
                if (!array_find(m->security_objects, "analyticObjectId", ids->items[i]))
                        return -ENOENT;
        json_array_foreach(m->security_objects, i, o) {
                json_t *c;

                if (ids && ids->n > 0 &&
                    !strv_has(ids, json_string_value(json_object_get(o, "analyticObjectId"))))
                        continue;
                if (details)
                        c = json_deep_copy(o);
                else
                        c = json_pack("{s:O, s:O, s:O}", "analyticObjectId", json_object_get(o, "analyticObjectId"),
                                      "displayName", json_object_get(o, "displayName"), "objectType",
                                      json_object_get(o, "objectType"));
                if (json_array_append_new(a, c) < 0)
                        return -ENOMEM;
        }
        return wrap_array("analyticObjects", TAKE_PTR(a), ret);
}

int model_analytic_objects(Model *m, const ModelStrv *ids, const char *object_type, json_t **ret) {
        _cleanup_json_ json_t *a = json_array();
        size_t i;
        json_t *o;

        if (!a)
                return -ENOMEM;
        for (i = 0; ids && i < ids->n; i++)
                if (!seed_object(ids->items[i]))
                        return -ENOENT;
        if (object_type && *object_type && !strcaseeq(object_type, "SUBJECT") && !strcaseeq(object_type, "EVENT") &&
            !strcaseeq(object_type, "OVERLAY"))
                return -EINVAL;
        json_array_foreach(m->analytic_objects, i, o) {
                if (ids && ids->n > 0 && !strv_has(ids, json_string_value(json_object_get(o, "id"))))
                        continue;
                if (object_type && *object_type &&
                    !strcaseeq(object_type, json_string_value(json_object_get(o, "type"))))
                        continue;
                if (json_array_append_new(a, json_deep_copy(o)) < 0)
                        return -ENOMEM;
        }
        return wrap_array("analyticObjects", TAKE_PTR(a), ret);
}

int model_dimensions(Model *m, const char *object_id, const ModelStrv *ids, json_t **ret) {
        _cleanup_json_ json_t *a = json_array();
        const SeedObject *o = seed_object(object_id);

        if (!a)
                return -ENOMEM;
        if (!o)
                return -ENOENT;
        for (size_t i = 0; ids && i < ids->n; i++)
                if (!strv_contains(o->dimensions, ids->items[i]))
                        return -ENOENT;
        for (const char *const *d = o->dimensions; d && *d; d++) {
                if (ids && ids->n > 0 && !strv_has(ids, *d))
                        continue;
                if (json_array_append_new(a, json_deep_copy(json_object_get(m->dimensions, *d))) < 0)
                        return -ENOMEM;
        }
        return wrap_array("dimensions", TAKE_PTR(a), ret);
}

static bool member_matches(json_t *member, const ModelMemberQuery *q, regex_t *re) {
        const char *display = json_string_value(json_object_get(member, "displayName"));
        json_t *path = json_object_get(member, "path");
        const char *id = json_string_value(json_array_get(path, json_array_size(path) - 1));

        if (q->ids.n > 0 && !strv_has(&q->ids, strempty(id)))
                return false;
        if (q->max_level >= 0 && json_integer_value(json_object_get(member, "level")) > q->max_level)
                return false;
        if (re) {
                bool by_id = !q->field || strcaseeq(q->field, "id") || strcaseeq(q->field, "either");
                bool by_display = q->field && (strcaseeq(q->field, "display") || strcaseeq(q->field, "either"));

                if (!(by_id && regexec(re, strempty(id), 0, NULL, 0) == 0) &&
                    !(by_display && regexec(re, strempty(display), 0, NULL, 0) == 0))
                        return false;
        }
        return true;
}

int model_members(Model *m, const char *object_id, const char *dimension_id, const ModelMemberQuery *q,
                  json_t **ret, bool *ret_partial) {
        _cleanup_json_ json_t *a = json_array();
        const SeedObject *o = seed_object(object_id);
        json_t *all, *member;
        bool paged, partial = false, have_re = false;
        regex_t re;
        size_t i, total;
        int r = 0;

        if (!a)
                return -ENOMEM;
        if (!o || !strv_contains(o->dimensions, dimension_id))
                return -ENOENT;
        all = json_object_get(m->members, dimension_id);
        if (!all)
                return -ENOENT;
        total = json_array_size(all);

        if (q->field && !strcaseeq(q->field, "id") && !strcaseeq(q->field, "display") && !strcaseeq(q->field, "either"))
                return -EINVAL;
        if (q->offset < 0 || q->limit < -1 || q->limit == 0)
                return -EINVAL;

        /* Visier: a non-default offset or limit turns on paging and ignores the other filters. */
        paged = q->offset != 0 || q->limit != -1;
        if (paged) {
                size_t start = (size_t) q->offset, limit = q->limit < 0 ? MODEL_MEMBERS_LIMIT_DEFAULT : (size_t) q->limit;

                for (i = start; i < total && i - start < limit; i++)
                        if (json_array_append_new(a, json_deep_copy(json_array_get(all, i))) < 0)
                                return -ENOMEM;
                partial = start > 0 || start + limit < total;
        } else {
                if (q->filter && *q->filter) {
                        if (regcomp(&re, q->filter, REG_EXTENDED | REG_NOSUB) != 0)
                                return -EINVAL;
                        have_re = true;
                }
                json_array_foreach(all, i, member) {
                        if (!member_matches(member, q, have_re ? &re : NULL))
                                continue;
                        if (json_array_size(a) >= MODEL_MEMBERS_LIMIT_DEFAULT) {
                                partial = true;
                                break;
                        }
                        if (json_array_append_new(a, json_deep_copy(member)) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                }
                if (have_re)
                        regfree(&re);
                if (r < 0)
                        return r;
        }

        r = wrap_array("members", TAKE_PTR(a), ret);
        if (r >= 0)
                *ret_partial = partial;
        return r;
}

/* ---- permissions ----------------------------------------------------------------------- */

static const char *status_of(bool exists, bool no_data) {
        return !exists ? "NotFound" : no_data ? "NoData" : "Valid";
}

static void annotate_member_filters(json_t *configs, const char *object_id) {
        size_t i, j, k;
        json_t *cfg, *df, *sel;

        json_array_foreach(configs, i, cfg) {
                json_array_foreach(json_object_get(cfg, "dimensionFilters"), j, df) {
                        json_t *st = json_object_get(df, "staticDimensionFilter");
                        json_t *dy = json_object_get(df, "dynamicDimensionFilter");
                        const SeedObject *o = seed_object(object_id);

                        if (st) {
                                const char *dim = json_string_value(json_object_get(st, "dimensionId"));
                                const SeedDimension *d = dim ? seed_dimension(dim) : NULL;
                                bool ok = d && o && strv_contains(o->dimensions, dim);

                                (void) json_object_set_new(st, "dimensionStatus", json_string(status_of(ok, false)));
                                json_array_foreach(json_object_get(st, "memberSelections"), k, sel)
                                        (void) json_object_set_new(
                                                sel, "dimensionMemberStatus",
                                                json_string(status_of(ok && member_exists(d, json_object_get(sel, "namePath")), false)));
                        }
                        if (dy) {
                                const char *dim = json_string_value(json_object_get(dy, "dimensionId"));
                                const SeedDimension *d = dim ? seed_dimension(dim) : NULL;
                                bool ok = d && o && strv_contains(o->dimensions, dim);

                                (void) json_object_set_new(dy, "dimensionStatus", json_string(status_of(ok, false)));
                                json_array_foreach(json_object_get(dy, "dynamicPropertyMappings"), k, sel) {
                                        const char *hp = json_string_value(json_object_get(sel, "hierarchyPropertyId"));
                                        bool found = false;

                                        for (const SeedHierarchyProperty *h = ok ? d->hierarchy_properties : NULL;
                                             hp && h && h->id; h++)
                                                if (streq(h->id, hp))
                                                        found = true;
                                        (void) json_object_set_new(sel, "hierarchyPropertyStatus",
                                                                   json_string(status_of(found, false)));
                                }
                        }
                }
        }
}

/* Add Visier's validity statuses to a copy of a PermissionDTO. */
static void annotate_permission(json_t *dto) {
        size_t i, j;
        json_t *p, *pac, *inh;

        json_array_foreach(json_object_get(dto, "dataSecurityProfiles"), i, p) {
                const char *obj = json_string_value(json_object_get(p, "analyticObjectId"));
                const SeedObject *o = obj ? seed_object(obj) : NULL;

                (void) json_object_set_new(p, "analyticObjectStatus",
                                           json_string(status_of(o && o->security_object, false)));
                json_array_foreach(json_object_get(json_object_get(p, "propertySetConfig"), "propertyAccessConfigs"),
                                   j, pac) {
                        const char *pid = json_string_value(json_object_get(pac, "propertyId"));
                        const SeedProperty *sp = pid ? seed_property(pid) : NULL;

                        (void) json_object_set_new(pac, "propertyStatus",
                                                   json_string(status_of(sp, sp && sp->no_data)));
                }
                annotate_member_filters(json_object_get(p, "memberFilterConfigs"), strempty(obj));
                json_array_foreach(json_object_get(p, "inheritedAccessConfigs"), j, inh)
                        annotate_member_filters(json_object_get(inh, "memberFilterConfigs"),
                                                strempty(json_string_value(json_object_get(inh, "analyticObjectId"))));
        }
}

/* The DTO as answered. Lock held. */
static json_t *permission_render(const PermissionEntry *e, bool details, bool with_status) {
        json_t *o;

        if (details || with_status) {
                o = json_deep_copy(e->dto);
                if (o && with_status)
                        annotate_permission(o);
        } else {
                static const char *const summary[] = { "permissionId", "displayName", "description" };

                o = json_object();
                for (size_t i = 0; o && i < ELEMENTSOF(summary); i++) {
                        json_t *v = json_object_get(e->dto, summary[i]);

                        if (v && json_object_set(o, summary[i], v) < 0) {
                                json_decref(o);
                                o = NULL;
                        }
                }
        }
        if (o && e->correlation_id && json_object_set_new(o, "correlationId", json_string(e->correlation_id)) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static PermissionEntry *permission_find_locked(Model *m, const char *id) {
        json_t *index = json_object_get(m->by_id, id);
        json_int_t i;

        if (!index)
                return NULL;
        i = json_integer_value(index);
        if (i < 0 || (size_t) i >= m->n_permissions || !m->permissions[i].dto)
                return NULL;
        return &m->permissions[i];
}

static bool correlation_active(usec_t created, usec_t now) {
        return now < created || now - created < MODEL_CORRELATION_TTL_USEC;
}

int model_permissions(Model *m, bool details, bool with_status, const ModelStrv *correlation_ids, json_t **ret) {
        _cleanup_json_ json_t *a = json_array();
        usec_t now = clock_now();
        int r = 0;

        if (!a)
                return -ENOMEM;
        pthread_mutex_lock(&m->lock);
        for (size_t i = 0; i < m->n_permissions; i++) {
                const PermissionEntry *e = &m->permissions[i];

                if (correlation_ids && correlation_ids->n > 0 &&
                    (!e->correlation_id || !strv_has(correlation_ids, e->correlation_id) ||
                     !correlation_active(e->correlation_time, now)))
                        continue;
                if (json_array_append_new(a, permission_render(e, details, with_status)) < 0) {
                        r = -ENOMEM;
                        break;
                }
        }
        pthread_mutex_unlock(&m->lock);
        if (r < 0)
                return r;
        return wrap_array("permissions", TAKE_PTR(a), ret);
}

int model_permission(Model *m, const char *id, bool with_status, json_t **ret) {
        PermissionEntry *e;
        json_t *o = NULL;

        pthread_mutex_lock(&m->lock);
        e = permission_find_locked(m, id);
        if (e)
                o = permission_render(e, true, with_status);
        pthread_mutex_unlock(&m->lock);
        if (!e)
                return -ENOENT;
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

int model_permission_users(Model *m, const char *id, bool include_user_groups, const char *tenant_filter,
                           int64_t start, int64_t limit, json_t **ret) {
        _cleanup_json_ json_t *tenants = json_array(), *o = NULL;
        PermissionEntry *e;
        size_t i, index = 0;
        json_t *t;
        int r = 0;

        if (!tenants)
                return -ENOMEM;
        if (start < 0 || limit < 0 || limit > MODEL_USERS_LIMIT_MAX)
                return -EINVAL;

        pthread_mutex_lock(&m->lock);
        e = permission_find_locked(m, id);
        if (!e)
                r = -ENOENT;
        else
                json_array_foreach(e->tenants, i, t) {
                        const char *code = json_string_value(json_object_get(t, "tenantCode"));
                        json_t *users, *u, *copy;
                        size_t k;

                        if (tenant_filter && *tenant_filter && !streq(strempty(code), tenant_filter))
                                continue;
                        users = json_array();
                        if (!users) {
                                r = -ENOMEM;
                                break;
                        }
                        json_array_foreach(json_object_get(t, "users"), k, u) {
                                const char *from = json_string_value(json_object_get(u, "permissionFrom"));

                                if (!include_user_groups && from && streq(from, "UserGroup"))
                                        continue;
                                (void) json_array_append_new(users, json_deep_copy(u));
                        }
                        if (json_array_size(users) == 0) {
                                json_decref(users);
                                continue;
                        }
                        /* Paging counts tenants, as Visier's start/limit describe. */
                        if (index++ < (size_t) start || json_array_size(tenants) >= (size_t) limit) {
                                json_decref(users);
                                continue;
                        }
                        copy = json_pack("{s:s, s:o}", "tenantCode", strempty(code), "users", users);
                        if (json_array_append_new(tenants, copy) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                }
        pthread_mutex_unlock(&m->lock);
        if (r < 0)
                return r;

        o = json_pack("{s:O, s:I, s:I}", "tenants", tenants, "limit", (json_int_t) limit, "start", (json_int_t) start);
        if (!o)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

/* ---- write side ------------------------------------------------------------------------ */

/* Length of at most MAX bytes of S that does not end inside a UTF-8 sequence. */
static int utf8_cut(const char *s, size_t max) {
        size_t n = strlen(s);

        if (n <= max)
                return (int) n;
        n = max;
        while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
                n--;
        return (int) n;
}

/* A root-cause id that depends only on the message, like the Status answers'. */
static void error_rci(const char *message, char *buf, size_t size) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        for (const char *p = message; *p; p++)
                h = (h ^ (unsigned char) *p) * UINT64_C(0x100000001b3);
        snprintf(buf, size, "sim-%016" PRIx64, h);
}

/* Drop null members of objects and arrays, recursively, so stored DTOs hold only typed values. */
static void json_strip_nulls(json_t *v) {
        const char *key;
        json_t *child;
        void *tmp;
        size_t i;

        if (json_is_object(v)) {
                json_object_foreach_safe(v, tmp, key, child) {
                        if (json_is_null(child))
                                (void) json_object_del(v, key);
                        else
                                json_strip_nulls(child);
                }
        } else if (json_is_array(v)) {
                for (i = json_array_size(v); i > 0; i--) {
                        child = json_array_get(v, i - 1);
                        if (json_is_null(child))
                                (void) json_array_remove(v, i - 1);
                        else
                                json_strip_nulls(child);
                }
        }
}

/* Append one PermissionSuccessDTO (MESSAGE NULL) or PermissionFailureDTO to LIST. */
static int bulk_append(json_t *list, const char *id, const char *display, const char *correlation_id,
                       const char *message) {
        _cleanup_json_ json_t *o = json_object();
        char rci[32];

        if (!o)
                return -ENOMEM;
        if (id && json_object_set_new(o, "permissionId", json_string(id)) < 0)
                return -ENOMEM;
        if (display && json_object_set_new(o, "displayName", json_string(display)) < 0)
                return -ENOMEM;
        if (message) {
                error_rci(message, rci, sizeof(rci));
                if (json_object_set_new(o, "error", json_pack("{s:s, s:s}", "message", message, "rci", rci)) < 0)
                        return -ENOMEM;
        }
        if (correlation_id && json_object_set_new(o, "correlationId", json_string(correlation_id)) < 0)
                return -ENOMEM;
        return json_array_append_new(list, TAKE_PTR(o)) < 0 ? -ENOMEM : 0;
}

static bool correlation_id_valid(const char *s) {
        size_t n = strlen(s);

        if (n < MODEL_CORRELATION_ID_MIN || n > MODEL_CORRELATION_ID_MAX)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' ||
                      *p == '-'))
                        return false;
        return true;
}

/* The first capability ITEM names that the tenant does not have, or NULL. */
static const char *unknown_capability(Model *m, json_t *item) {
        json_t *caps = json_object_get(json_object_get(item, "adminCapabilityConfig"), "capabilities");
        size_t i;
        json_t *c;

        json_array_foreach(caps, i, c) {
                const char *name = json_string_value(c);
                if (name && !array_find(m->capabilities, "name", name))
                        return name;
        }
        return NULL;
}

/* Is ID still reserved by an earlier create? Lock held. */
static bool correlation_used_locked(Model *m, const char *id, usec_t now) {
        json_t *t = json_object_get(m->correlation_ids, id);
        return t && correlation_active((usec_t) json_integer_value(t), now);
}

/* Reserve ID from NOW on. -ENOSPC when the table is full of active IDs. Lock held. */
static int correlation_remember_locked(Model *m, const char *id, usec_t now) {
        if (json_object_size(m->correlation_ids) >= MODEL_CORRELATION_IDS_MAX &&
            !json_object_get(m->correlation_ids, id)) {
                const char *key;
                json_t *t;
                void *tmp;

                json_object_foreach_safe(m->correlation_ids, tmp, key, t)
                        if (!correlation_active((usec_t) json_integer_value(t), now))
                                (void) json_object_del(m->correlation_ids, key);
                if (json_object_size(m->correlation_ids) >= MODEL_CORRELATION_IDS_MAX)
                        return -ENOSPC;
        }
        return json_object_set_new(m->correlation_ids, id, json_integer((json_int_t) now)) < 0 ? -ENOMEM : 0;
}

static uint64_t splitmix64(uint64_t *state) {
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

/* A version-4-shaped UUID no permission has yet; the sequence is the same on every run. Lock held. */
static void permission_id_next_locked(Model *m, char *buf, size_t size) {
        do {
                uint64_t a = splitmix64(&m->uuid_state), b = splitmix64(&m->uuid_state);

                snprintf(buf, size, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, a >> 32,
                         (a >> 16) & 0xffff, UINT64_C(0x4000) | (a & 0x0fff), UINT64_C(0x8000) | ((b >> 48) & 0x3fff),
                         b & UINT64_C(0xffffffffffff));
        } while (json_object_get(m->by_id, buf));
}

/* The stored form of a create/update item: permissionId first, no correlationId, no nulls. */
static json_t *permission_dto_from_item(json_t *item, const char *id) {
        _cleanup_json_ json_t *copy = json_deep_copy(item), *dto = NULL;

        if (!copy)
                return NULL;
        (void) json_object_del(copy, "correlationId");
        (void) json_object_del(copy, "permissionId");
        json_strip_nulls(copy);
        dto = json_pack("{s:s}", "permissionId", id);
        if (!dto || json_object_update(dto, copy) < 0)
                return NULL;
        return TAKE_PTR(dto);
}

/* Close the gaps deletes left and refresh the index of every moved entry. Lock held. */
static void permissions_compact_locked(Model *m) {
        size_t to = 0;

        if (!m->has_tombstones)
                return;
        for (size_t from = 0; from < m->n_permissions; from++) {
                PermissionEntry *e = &m->permissions[from];

                if (!e->dto)
                        continue;
                if (from != to) {
                        m->permissions[to] = *e;
                        json_integer_set(json_object_get(m->by_id, json_string_value(json_object_get(
                                                                           m->permissions[to].dto, "permissionId"))),
                                         (json_int_t) to);
                }
                to++;
        }
        m->n_permissions = to;
        m->has_tombstones = false;
}

/* Check and apply one create item. Returns the failure message in MSG, or "" on success. Lock held. */
static int write_create_locked(Model *m, json_t *item, usec_t now, char *msg, size_t msg_size, char *id,
                               size_t id_size) {
        const char *display = json_string_value(json_object_get(item, "displayName"));
        const char *corr = json_string_value(json_object_get(item, "correlationId"));
        const char *cap;
        json_t *dto;
        int r;

        if (json_is_string(json_object_get(item, "permissionId")))
                snprintf(msg, msg_size, "permissionId must not be set when creating a permission");
        else if (!display || !*display)
                snprintf(msg, msg_size, "displayName is required");
        else if (corr && !correlation_id_valid(corr))
                snprintf(msg, msg_size, "correlationId must be %d to %d characters of A-Z, a-z, 0-9, _ and -",
                         MODEL_CORRELATION_ID_MIN, MODEL_CORRELATION_ID_MAX);
        else if ((cap = unknown_capability(m, item)))
                snprintf(msg, msg_size, "unknown capability %.*s", utf8_cut(cap, 128), cap);
        else if (corr && correlation_used_locked(m, corr, now))
                snprintf(msg, msg_size, "correlation ID %s was already used", corr);
        else if (m->n_permissions >= MODEL_PERMISSIONS_MAX)
                snprintf(msg, msg_size, "the permission store is full (%d permissions)", MODEL_PERMISSIONS_MAX);
        if (*msg)
                return 0;

        permission_id_next_locked(m, id, id_size);
        if (corr) {
                r = correlation_remember_locked(m, corr, now);
                if (r == -ENOSPC) {
                        snprintf(msg, msg_size, "too many active correlation IDs (%d)", MODEL_CORRELATION_IDS_MAX);
                        return 0;
                }
                if (r < 0)
                        return r;
        }
        dto = permission_dto_from_item(item, id);
        r = permissions_append(m, dto, json_array(), corr);
        if (r < 0)
                return r;
        m->permissions[m->n_permissions - 1].correlation_time = now;
        return 0;
}

/* Check and apply one update item. Lock held. */
static int write_update_locked(Model *m, json_t *item, char *msg, size_t msg_size) {
        const char *id = json_string_value(json_object_get(item, "permissionId"));
        const char *display = json_string_value(json_object_get(item, "displayName"));
        PermissionEntry *e = id ? permission_find_locked(m, id) : NULL;
        const char *cap;
        json_t *dto;

        if (!id || !*id)
                snprintf(msg, msg_size, "permissionId is required");
        else if (!e)
                snprintf(msg, msg_size, "permission %.*s not found", utf8_cut(id, 128), id);
        else if (!display || !*display)
                snprintf(msg, msg_size, "displayName is required");
        else if ((cap = unknown_capability(m, item)))
                snprintf(msg, msg_size, "unknown capability %.*s", utf8_cut(cap, 128), cap);
        if (*msg)
                return 0;

        dto = permission_dto_from_item(item, id);
        if (!dto)
                return -ENOMEM;
        json_decref(e->dto);
        e->dto = dto;
        return 0;
}

int model_permissions_write(Model *m, ModelWrite op, json_t *items, json_t **ret) {
        _cleanup_json_ json_t *successes = json_array(), *failures = json_array();
        usec_t now = clock_now();
        size_t i;
        json_t *item;
        int r = 0;

        if (op < 0 || op >= _MODEL_WRITE_MAX || !json_is_array(items))
                return -EINVAL;
        if (!successes || !failures)
                return -ENOMEM;

        pthread_mutex_lock(&m->lock);
        json_array_foreach(items, i, item) {
                char msg[MODEL_MESSAGE_MAX] = "", new_id[40] = "";
                const char *id = NULL, *display = NULL, *corr = NULL;
                PermissionEntry *e;

                if (op == MODEL_WRITE_CREATE || op == MODEL_WRITE_UPDATE) {
                        id = json_string_value(json_object_get(item, "permissionId"));
                        display = json_string_value(json_object_get(item, "displayName"));
                        corr = json_string_value(json_object_get(item, "correlationId"));
                        if (op == MODEL_WRITE_CREATE)
                                r = write_create_locked(m, item, now, msg, sizeof(msg), new_id, sizeof(new_id));
                        else
                                r = write_update_locked(m, item, msg, sizeof(msg));
                        if (!*msg && op == MODEL_WRITE_CREATE)
                                id = new_id;
                } else {
                        id = json_string_value(item);
                        e = id ? permission_find_locked(m, id) : NULL;
                        if (!e)
                                snprintf(msg, sizeof(msg), "permission %.*s not found", utf8_cut(strempty(id), 128),
                                         strempty(id));
                        else {
                                /* The answer outlives the entry: copy the name before a delete. */
                                display = json_string_value(json_object_get(e->dto, "displayName"));
                                if (op == MODEL_WRITE_DELETE) {
                                        r = bulk_append(successes, id, display, NULL, NULL);
                                        if (r < 0)
                                                break;
                                        (void) json_object_del(m->by_id, id);
                                        json_decref(e->dto);
                                        json_decref(e->tenants);
                                        free(e->correlation_id);
                                        *e = (PermissionEntry) {};
                                        m->has_tombstones = true;
                                        continue;
                                }
                        }
                }
                if (r < 0)
                        break;
                r = bulk_append(*msg ? failures : successes, id, display, corr, *msg ? msg : NULL);
                if (r < 0)
                        break;
        }
        permissions_compact_locked(m);
        pthread_mutex_unlock(&m->lock);
        if (r < 0)
                return r;

        *ret = json_pack("{s:O, s:O}", "successes", successes, "failures", failures);
        return *ret ? 0 : -ENOMEM;
}

/* The users array of TENANT_CODE in E, created when CREATE is set; NULL when absent. Lock held. */
static json_t *tenant_users_locked(PermissionEntry *e, const char *tenant_code, bool create) {
        size_t i;
        json_t *t;

        json_array_foreach(e->tenants, i, t) {
                const char *code = json_string_value(json_object_get(t, "tenantCode"));
                if (code && streq(code, tenant_code))
                        return json_object_get(t, "users");
        }
        if (!create)
                return NULL;
        t = json_pack("{s:s, s:[]}", "tenantCode", tenant_code, "users");
        if (!t || json_array_append_new(e->tenants, t) < 0)
                return NULL;
        return json_object_get(t, "users");
}

/*
 * Give or take USER_ID's direct assignment. A user who has the permission through a user group
 * only changes between UserGroup and UserAndUserGroup. Idempotent. Lock held.
 */
static int assign_user_locked(Model *m, PermissionEntry *e, const char *tenant_code, const char *user_id, bool assign,
                              char *msg, size_t msg_size) {
        json_t *users = tenant_users_locked(e, tenant_code, assign), *u = NULL, *name;
        const char *from;
        size_t i;

        if (!users)
                return assign ? -ENOMEM : 0;
        json_array_foreach(users, i, u) {
                const char *id = json_string_value(json_object_get(u, "userId"));
                if (id && streq(id, user_id))
                        break;
        }
        if (i >= json_array_size(users))
                u = NULL;
        from = u ? strempty(json_string_value(json_object_get(u, "permissionFrom"))) : NULL;

        if (assign) {
                if (!u) {
                        if (json_array_size(users) >= MODEL_USERS_PER_TENANT_MAX) {
                                snprintf(msg, msg_size, "too many users assigned to this permission (%d)",
                                         MODEL_USERS_PER_TENANT_MAX);
                                return 0;
                        }
                        u = json_pack("{s:s}", "userId", user_id);
                        name = json_object_get(m->usernames, user_id);
                        if (!u || (name && json_object_set(u, "username", name) < 0) ||
                            json_object_set_new(u, "permissionFrom", json_string("User")) < 0 ||
                            json_array_append_new(users, u) < 0)
                                return -ENOMEM;
                } else if (streq(from, "UserGroup"))
                        return json_object_set_new(u, "permissionFrom", json_string("UserAndUserGroup")) < 0 ? -ENOMEM : 0;
                return 0;
        }
        if (!u)
                return 0;
        if (streq(from, "UserAndUserGroup"))
                return json_object_set_new(u, "permissionFrom", json_string("UserGroup")) < 0 ? -ENOMEM : 0;
        if (!streq(from, "UserGroup"))
                (void) json_array_remove(users, i);
        return 0;
}

/* servicing.AssignRevokePermissionByUserDTO. */
static json_t *assign_user_result(Model *m, const char *user_id, const char *message) {
        json_t *o = json_pack("{s:s}", "userId", user_id), *name = json_object_get(m->usernames, user_id);

        if (o && name && json_object_set(o, "username", name) < 0)
                goto fail;
        if (o && message && json_object_set_new(o, "message", json_string(message)) < 0)
                goto fail;
        return o;
fail:
        json_decref(o);
        return NULL;
}

int model_permissions_assign(Model *m, json_t *items, const char *tenant_code, const char *project_id, bool assign,
                             json_t **ret) {
        _cleanup_json_ json_t *perms = json_array(), *tenant = NULL;
        char first_failure[MODEL_MESSAGE_MAX] = "";
        size_t i, n_failed = 0;
        json_t *item;
        int r = 0;

        if (!json_is_array(items) || !tenant_code)
                return -EINVAL;
        if (!perms)
                return -ENOMEM;

        pthread_mutex_lock(&m->lock);
        json_array_foreach(items, i, item) {
                const char *id = json_string_value(json_object_get(item, "permissionId"));
                PermissionEntry *e = id ? permission_find_locked(m, id) : NULL;
                json_t *user_ids = json_object_get(item, "userIds"), *perm, *users, *uid;
                char msg[MODEL_MESSAGE_MAX] = "";
                bool failed = false;
                size_t k;

                if (!id || !*id)
                        snprintf(msg, sizeof(msg), "permissionId is required");
                else if (!e)
                        snprintf(msg, sizeof(msg), "permission %.*s not found", utf8_cut(id, 128), id);
                failed = *msg;

                perm = json_object();
                users = json_array();
                if (!perm || !users || json_array_append_new(perms, json_pack("{s:o, s:o}", "permission", perm,
                                                                              "users", users)) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (id && json_object_set_new(perm, "permissionId", json_string(id)) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (e && json_object_set(perm, "displayName", json_object_get(e->dto, "displayName")) < 0) {
                        r = -ENOMEM;
                        break;
                }
                json_array_foreach(user_ids, k, uid) {
                        const char *user = json_string_value(uid);
                        char umsg[MODEL_MESSAGE_MAX] = "";

                        if (!user)
                                continue;
                        if (!*user)
                                snprintf(umsg, sizeof(umsg), "userId must not be empty");
                        else if (!failed) {
                                r = assign_user_locked(m, e, tenant_code, user, assign, umsg, sizeof(umsg));
                                if (r < 0)
                                        break;
                        }
                        if (json_array_append_new(users, assign_user_result(m, user, failed ? msg : *umsg ? umsg : NULL)) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                }
                if (r < 0)
                        break;
                if (failed) {
                        if (n_failed++ == 0)
                                memcpy(first_failure, msg, sizeof(msg));
                }
        }
        pthread_mutex_unlock(&m->lock);
        if (r < 0)
                return r;

        tenant = json_pack("{s:s, s:O, s:s}", "tenantCode", tenant_code, "permissions", perms, "status",
                           n_failed > 0 && n_failed == json_array_size(items) ? "Failed" : "Succeed");
        if (!tenant)
                return -ENOMEM;
        if (n_failed > 0) {
                char message[MODEL_MESSAGE_MAX + 64];

                snprintf(message, sizeof(message), "%zu of %zu permissions failed; first: %s", n_failed,
                         json_array_size(items), first_failure);
                if (json_object_set_new(tenant, "message", json_string(message)) < 0)
                        return -ENOMEM;
        }
        if (project_id && json_object_set_new(tenant, "projectId", json_string(project_id)) < 0)
                return -ENOMEM;
        *ret = json_pack("{s:[O]}", "tenants", tenant);
        return *ret ? 0 : -ENOMEM;
}

/* Direct assignees of E in any tenant, each once. Lock held. */
static json_t *direct_user_ids_locked(const PermissionEntry *e) {
        _cleanup_json_ json_t *seen = json_object(), *a = json_array();
        size_t i, k;
        json_t *t, *u;

        if (!seen || !a)
                return NULL;
        json_array_foreach(e->tenants, i, t)
                json_array_foreach(json_object_get(t, "users"), k, u) {
                        const char *id = json_string_value(json_object_get(u, "userId"));
                        const char *from = strempty(json_string_value(json_object_get(u, "permissionFrom")));

                        if (!id || streq(from, "UserGroup") || json_object_get(seen, id))
                                continue;
                        if (json_object_set_new(seen, id, json_true()) < 0 ||
                            json_array_append_new(a, json_string(id)) < 0)
                                return NULL;
                }
        return TAKE_PTR(a);
}

int model_permissions_dump(Model *m, json_t **ret) {
        _cleanup_json_ json_t *a = json_array();
        int r = 0;

        if (!a)
                return -ENOMEM;
        pthread_mutex_lock(&m->lock);
        for (size_t i = 0; i < m->n_permissions; i++) {
                const PermissionEntry *e = &m->permissions[i];
                json_t *o = json_pack("{s:O, s:O}", "permissionId", json_object_get(e->dto, "permissionId"),
                                      "displayName", json_object_get(e->dto, "displayName"));

                if (o && e->correlation_id && json_object_set_new(o, "correlationId", json_string(e->correlation_id)) < 0)
                        r = -ENOMEM;
                if (o && r >= 0 && json_object_set_new(o, "userIds", direct_user_ids_locked(e)) < 0)
                        r = -ENOMEM;
                if (json_array_append_new(a, o) < 0)
                        r = -ENOMEM;
                if (r < 0)
                        break;
        }
        pthread_mutex_unlock(&m->lock);
        if (r < 0)
                return r;
        *ret = json_pack("{s:O, s:I}", "permissions", a, "count", (json_int_t) json_array_size(a));
        return *ret ? 0 : -ENOMEM;
}
