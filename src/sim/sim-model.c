/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the simulated tenant's catalog. At start model_new() turns the seed tables into JSON
 * shaped like Visier's DTOs (visier-subset.yaml); read calls answer deep copies filtered by
 * the query, so the bytes depend only on the request. No timestamps, no random values.
 * Immutable after model_new(), so it needs no lock. The mutable permission stores live in
 * sim-permissions.c. Never logs.
 */
#include <errno.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "sim-model-data.h"
#include "sim-model.h"

/* Validity range every seeded member carries: 2018-01-01 until 9999-12-31. */
#define MEMBER_VALID_FROM "1514764800000"
#define MEMBER_VALID_TO "253402300799000"
#define DATA_START "1514764800000"
#define DATA_END "1767225600000"

struct Model {
        json_t *capabilities;           /* array of CapabilityDTO */
        json_t *content_packages;       /* array of ContentPackageDTO with artifactsByType */
        json_t *analytic_objects;       /* array of datamodel AnalyticObjectDTO */
        json_t *security_objects;       /* array of servicing AnalyticObjectDTO, full */
        json_t *dimensions;             /* object: dimension id -> DimensionDTO */
        json_t *members;                /* object: dimension id -> array of MemberDTO */
};

#define _cleanup_json_ _cleanup_(json_decrefp)

/* ---- seed lookups ---------------------------------------------------------------------- */

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
        const SeedDimension *d = seed_dimension_find(id);
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
                        const SeedObject *ro = seed_object_find(*r);

                        if (json_array_append_new(related, json_pack("{s:s, s:s}", "analyticObjectId", *r,
                                                                     "displayName", ro ? ro->display : *r)) < 0 ||
                            append_securable_properties(props, *r) < 0)
                                return -ENOMEM;
                }
                for (const char *const *d = o->dimensions; d && *d; d++) {
                        const SeedDimension *sd = seed_dimension_find(*d);
                        _cleanup_json_ json_t *ids = NULL, *hprops = NULL;

                        ids = json_array();
                        hprops = json_array();
                        if (!sd || !ids || !hprops || json_array_append_new(ids, json_string(o->id)) < 0)
                                return -ENOMEM;
                        for (const char *const *r = o->related; r && *r; r++) {
                                const SeedObject *ro = seed_object_find(*r);
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

int model_new(Model **ret) {
        Model *m;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        r = build_capabilities(m);
        if (r >= 0)
                r = build_content_packages(m);
        if (r >= 0)
                r = build_dimensions(m);
        if (r >= 0)
                r = build_analytic_objects(m);
        if (r >= 0)
                r = build_security_objects(m);
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
                if (!seed_object_find(ids->items[i]))
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
        const SeedObject *o = seed_object_find(object_id);

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
        const SeedObject *o = seed_object_find(object_id);
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

bool model_has_capability(Model *m, const char *name) {
        return name && array_find(m->capabilities, "name", name);
}
