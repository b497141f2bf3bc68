/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the permissions of the simulated organization and the draft projects they may be
 * changed in. Never logs.
 *
 * DESIGN. Visier scopes a permission call by three things: the tenant logged in to
 * (TargetTenantID, default the administrating tenant), the tenant acted in (tenantCode, on the
 * routes that take it; default the tenant logged in to) and the draft project (ProjectID,
 * default production). The simulator keeps one Store per scope: one per tenant for production,
 * one per open draft project. A Store is a mutable array of entries (the full PermissionDTO,
 * an optional correlation ID with its creation time, the users assigned per tenant), an index
 * permissionId -> position, and its own table of correlation IDs, which are unique and reserved
 * for 7 days of the program's clock within that store only. A delete leaves a tombstone that
 * the same locked section compacts away, so readers never see one. Everything sits behind one
 * mutex; each call resolves its scope under it, so a project published or deleted meanwhile is
 * noticed (-ESTALE). There is no Blueprint inheritance: an analytic tenant starts with no
 * permissions and sees only those created in it.
 *
 * How projects come into existence: as in Visier, only through POST /v1/admin/projects (in
 * the tenant logged in to). A ProjectID that is not a UUID is refused 400; one that names no
 * open project of the tenant acted in is refused 404 — the simulator does not invent drafts on
 * first use, so a client that loses or mangles its project ID is told. A new draft starts as a
 * copy of its tenant's production store (permissions and correlation IDs). Writes in it mark
 * what they touch; commitAndPublish merges the draft's deletes and its touched entries into
 * production (later production changes to other permissions survive) and closes the project.
 *
 * New permission and project IDs come from one deterministic generator, so a run's IDs are
 * the same every time and never collide between scopes.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "macro.h"
#include "parse.h"
#include "sim-directory.h"
#include "sim-model-data.h"
#include "sim-permissions.h"

#define UUID_LEN 36

#define _cleanup_json_ _cleanup_(json_decrefp)

typedef struct Entry {
        json_t *dto;            /* full servicing.PermissionDTO, without statuses; NULL = tombstone */
        json_t *tenants;        /* array of {tenantCode, users:[{userId, username?, permissionFrom}]} */
        char *correlation_id;   /* NULL when created without one (and for the seed) */
        usec_t correlation_time;        /* clock_now() at creation */
        bool touched;           /* drafts: created, updated or (un)assigned in the draft */
} Entry;

typedef struct Store {
        Entry *entries;
        size_t n, allocated;
        json_t *by_id;          /* object: permissionId -> index into entries */
        json_t *correlation_ids;        /* object: correlation ID -> clock_now() of its create */
        json_t *deleted;        /* drafts: object of the permission IDs deleted in the draft */
        bool has_tombstones;
} Store;

typedef struct Project {
        char id[UUID_LEN + 1];
        size_t tenant;          /* the tenant it was created in, and the only one it changes */
        json_t *dto;            /* servicing.ProjectDTO as answered */
        Store draft;
} Project;

struct Permissions {
        pthread_mutex_t lock;
        Model *catalog;         /* borrowed; immutable */
        Store production[DIRECTORY_TENANTS_N];
        Project *projects[PERMISSIONS_PROJECTS_MAX];
        size_t n_projects;
        uint64_t id_state;      /* deterministic ID generator */
};

/* ---- small helpers --------------------------------------------------------------------- */

static bool strv_has(const ModelStrv *v, const char *s) {
        for (size_t i = 0; v && i < v->n; i++)
                if (streq(v->items[i], s))
                        return true;
        return false;
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

/* 8-4-4-4-12 hexadecimal digits, either case. */
static bool uuid_valid(const char *s) {
        if (strlen(s) != UUID_LEN)
                return false;
        for (size_t i = 0; i < UUID_LEN; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;
                char c = s[i];

                if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
                        return false;
        }
        return true;
}

static uint64_t splitmix64(uint64_t *state) {
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

/* The next version-4-shaped UUID of the sequence, the same on every run. Lock held. */
static void id_next_locked(Permissions *p, char buf[static UUID_LEN + 1]) {
        uint64_t a = splitmix64(&p->id_state), b = splitmix64(&p->id_state);

        snprintf(buf, UUID_LEN + 1, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, a >> 32,
                 (a >> 16) & 0xffff, UINT64_C(0x4000) | (a & 0x0fff), UINT64_C(0x8000) | ((b >> 48) & 0x3fff),
                 b & UINT64_C(0xffffffffffff));
}

static bool correlation_active(usec_t created, usec_t now) {
        return now < created || now - created < PERMISSIONS_CORRELATION_TTL_USEC;
}

static bool correlation_id_valid(const char *s) {
        size_t n = strlen(s);

        if (n < PERMISSIONS_CORRELATION_ID_MIN || n > PERMISSIONS_CORRELATION_ID_MAX)
                return false;
        for (const char *c = s; *c; c++)
                if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' ||
                      *c == '-'))
                        return false;
        return true;
}

/* ---- stores ---------------------------------------------------------------------------- */

static int store_init(Store *s, bool draft) {
        *s = (Store) { .by_id = json_object(), .correlation_ids = json_object() };
        if (draft)
                s->deleted = json_object();
        return s->by_id && s->correlation_ids && (!draft || s->deleted) ? 0 : -ENOMEM;
}

static void entry_done(Entry *e) {
        json_decref(e->dto);
        json_decref(e->tenants);
        free(e->correlation_id);
        *e = (Entry) {};
}

static void store_done(Store *s) {
        for (size_t i = 0; i < s->n; i++)
                entry_done(&s->entries[i]);
        free(s->entries);
        json_decref(s->by_id);
        json_decref(s->correlation_ids);
        json_decref(s->deleted);
        *s = (Store) {};
}

/* Append an entry taking DTO and TENANTS (both freed on failure); copies CORRELATION_ID. */
static int store_append(Store *s, json_t *dto, json_t *tenants, const char *correlation_id, usec_t time) {
        const char *id = json_string_value(json_object_get(dto, "permissionId"));
        Entry e = { .dto = dto, .tenants = tenants, .correlation_time = time };

        if (!dto || !tenants || !id)
                goto fail;
        if (correlation_id && !(e.correlation_id = strdup(correlation_id)))
                goto fail;
        if (s->n >= s->allocated) {
                size_t n = s->allocated ? s->allocated * 2 : 8;
                Entry *a = reallocarray(s->entries, n, sizeof(Entry));

                if (!a)
                        goto fail;
                s->entries = a;
                s->allocated = n;
        }
        if (json_object_set_new(s->by_id, id, json_integer((json_int_t) s->n)) < 0)
                goto fail;
        s->entries[s->n++] = e;
        return 0;
fail:
        entry_done(&e);         /* E owns DTO and TENANTS from the start */
        return -ENOMEM;
}

static Entry *store_find(Store *s, const char *id) {
        json_t *index = id ? json_object_get(s->by_id, id) : NULL;
        json_int_t i;

        if (!index)
                return NULL;
        i = json_integer_value(index);
        if (i < 0 || (size_t) i >= s->n || !s->entries[i].dto)
                return NULL;
        return &s->entries[i];
}

/* Turn E into a tombstone; store_compact() closes the gap. */
static void store_remove(Store *s, Entry *e) {
        const char *id = json_string_value(json_object_get(e->dto, "permissionId"));

        if (id)
                (void) json_object_del(s->by_id, id);
        entry_done(e);
        s->has_tombstones = true;
}

/* Close the gaps deletes left and refresh the index of every moved entry. */
static void store_compact(Store *s) {
        size_t to = 0;

        if (!s->has_tombstones)
                return;
        for (size_t from = 0; from < s->n; from++) {
                Entry *e = &s->entries[from];

                if (!e->dto)
                        continue;
                if (from != to) {
                        s->entries[to] = *e;
                        json_integer_set(json_object_get(s->by_id, json_string_value(json_object_get(
                                                                           s->entries[to].dto, "permissionId"))),
                                         (json_int_t) to);
                }
                to++;
        }
        s->n = to;
        s->has_tombstones = false;
}

/* A draft's starting point: a deep copy of production FROM. */
static int store_copy(Store *to, Store *from) {
        int r = store_init(to, true);

        for (size_t i = 0; r >= 0 && i < from->n; i++) {
                const Entry *e = &from->entries[i];

                r = store_append(to, json_deep_copy(e->dto), json_deep_copy(e->tenants), e->correlation_id,
                                 e->correlation_time);
        }
        if (r >= 0 && json_object_update(to->correlation_ids, from->correlation_ids) < 0)
                r = -ENOMEM;
        if (r < 0)
                store_done(to);
        return r;
}

/* Is ID still reserved by an earlier create in S? */
static bool correlation_used(Store *s, const char *id, usec_t now) {
        json_t *t = json_object_get(s->correlation_ids, id);
        return t && correlation_active((usec_t) json_integer_value(t), now);
}

/* Reserve ID in S from TIME on. -ENOSPC when the table is full of active IDs. */
static int correlation_remember(Store *s, const char *id, usec_t time, usec_t now) {
        if (json_object_size(s->correlation_ids) >= PERMISSIONS_CORRELATION_IDS_MAX &&
            !json_object_get(s->correlation_ids, id)) {
                const char *key;
                json_t *t;
                void *tmp;

                json_object_foreach_safe(s->correlation_ids, tmp, key, t)
                        if (!correlation_active((usec_t) json_integer_value(t), now))
                                (void) json_object_del(s->correlation_ids, key);
                if (json_object_size(s->correlation_ids) >= PERMISSIONS_CORRELATION_IDS_MAX)
                        return -ENOSPC;
        }
        return json_object_set_new(s->correlation_ids, id, json_integer((json_int_t) time)) < 0 ? -ENOMEM : 0;
}

/* ---- the seed -------------------------------------------------------------------------- */

static int seed_append(Store *s, json_t *dto, json_t *tenants) {
        return store_append(s, dto, tenants, NULL, 0);
}

/* The administrating tenant's production permissions; its seeded assignments include users of
 * the analytic tenants (an administrating tenant's permission given to their users). */
static int seed_permissions(Store *s) {
        int r;

        r = seed_append(
                s,
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
                          "permissionFrom", "User"));
        if (r < 0)
                return r;

        r = seed_append(
                s,
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
                          "permissionFrom", "User"));
        if (r < 0)
                return r;

        /* Deliberately stale: Germany and Applicant.Source_Channel no longer exist (status NotFound). */
        return seed_append(
                s,
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
                          "permissionFrom", "UserGroup"));
}

/* ---- life cycle ------------------------------------------------------------------------ */

static Project *project_free(Project *pr) {
        if (!pr)
                return NULL;
        json_decref(pr->dto);
        store_done(&pr->draft);
        free(pr);
        return NULL;
}

/*
 * Answers are built under the lock from values the store holds, then written out after it is
 * released. A value shared with the store (a reference, not a copy) would be read while a
 * write frees or changes it — jansson's reference counts do not order that — so every answer
 * is made a deep copy of itself before the lock is let go. Returns 0, or -ENOMEM (*v is
 * then NULL).
 */
static int answer_unshare(json_t **v) {
        json_t *copy;

        if (!*v)
                return 0;
        copy = json_deep_copy(*v);
        json_decref(*v);
        *v = copy;
        return copy ? 0 : -ENOMEM;
}

int permissions_new(Model *catalog, Permissions **ret) {
        Permissions *p;
        int r = 0;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        p->catalog = catalog;
        p->id_state = UINT64_C(0x5eed5eed5eed5eed);
        for (size_t t = 0; r >= 0 && t < DIRECTORY_TENANTS_N; t++)
                r = store_init(&p->production[t], false);
        if (r >= 0)
                r = seed_permissions(&p->production[0]);
        if (r < 0) {
                permissions_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

Permissions *permissions_free(Permissions *p) {
        if (!p)
                return NULL;
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                store_done(&p->production[t]);
        for (size_t i = 0; i < p->n_projects; i++)
                project_free(p->projects[i]);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

/* ---- scopes ---------------------------------------------------------------------------- */

/* The open project ID of TENANT, or NULL. Lock held. */
static Project *project_find_locked(Permissions *p, size_t tenant, const char *id, size_t *ret_index) {
        for (size_t i = 0; id && i < p->n_projects; i++)
                if (p->projects[i]->tenant == tenant && strcasecmp(p->projects[i]->id, id) == 0) {
                        if (ret_index)
                                *ret_index = i;
                        return p->projects[i];
                }
        return NULL;
}

/* The tenant logged in to: TargetTenantID, or the administrating tenant. */
static int login_tenant(const char *target, char *err, size_t err_size) {
        int t = target ? directory_tenant_find(target) : 0;

        if (t < 0) {
                snprintf(err, err_size, "TargetTenantID %.*s is not a tenant you can access.", utf8_prefix(target, 64),
                         target);
                return -EPERM;
        }
        return t;
}

/* Resolve SCOPE to its store (and tenant acted in, and project). Lock held. */
static int scope_resolve_locked(Permissions *p, const PermissionsScope *scope, Store **ret_store, size_t *ret_tenant,
                                Project **ret_project, char *err, size_t err_size) {
        int login, target;
        Project *pr = NULL;

        login = login_tenant(scope->target_tenant, err, err_size);
        if (login < 0)
                return login;
        target = scope->tenant_code ? directory_tenant_find(scope->tenant_code) : login;
        if (target < 0) {
                snprintf(err, err_size, "tenantCode %.*s is not a tenant you can access.",
                         utf8_prefix(scope->tenant_code, 64), scope->tenant_code);
                return -EPERM;
        }
        if (!directory_tenant_reaches((size_t) login, (size_t) target)) {
                snprintf(err, err_size, "Tenant %s cannot act in tenant %s.",
                         directory_tenant_code((size_t) login), directory_tenant_code((size_t) target));
                return -EPERM;
        }
        if (scope->project_id) {
                if (!uuid_valid(scope->project_id)) {
                        snprintf(err, err_size, "The ProjectID header must be a project UUID.");
                        return -EINVAL;
                }
                pr = project_find_locked(p, (size_t) target, scope->project_id, NULL);
                if (!pr) {
                        snprintf(err, err_size, "Project %s is not an open draft project of tenant %s.",
                                 scope->project_id, directory_tenant_code((size_t) target));
                        return -ENOENT;
                }
        }
        if (ret_store)
                *ret_store = pr ? &pr->draft : &p->production[target];
        if (ret_tenant)
                *ret_tenant = (size_t) target;
        if (ret_project)
                *ret_project = pr;
        return 0;
}

int permissions_scope_check(Permissions *p, const PermissionsScope *scope, char *err, size_t err_size) {
        int r;

        pthread_mutex_lock(&p->lock);
        r = scope_resolve_locked(p, scope, NULL, NULL, NULL, err, err_size);
        pthread_mutex_unlock(&p->lock);
        return r;
}

/* Resolve again inside an operation: a scope that passed permissions_scope_check() and is gone
 * now was closed meanwhile. Lock held. */
static int scope_store_locked(Permissions *p, const PermissionsScope *scope, Store **ret_store, size_t *ret_tenant,
                              Project **ret_project) {
        char err[PERMISSIONS_MESSAGE_MAX];

        return scope_resolve_locked(p, scope, ret_store, ret_tenant, ret_project, err, sizeof(err)) < 0 ? -ESTALE : 0;
}

int permissions_scope_resolve(Permissions *p, const PermissionsScope *scope, size_t *ret_tenant, char *err,
                              size_t err_size) {
        int r;

        pthread_mutex_lock(&p->lock);
        r = scope_resolve_locked(p, scope, NULL, ret_tenant, NULL, err, err_size);
        pthread_mutex_unlock(&p->lock);
        return r;
}

int permissions_names(Permissions *p, const PermissionsScope *scope, json_t **ret) {
        _cleanup_json_ json_t *names = json_object();
        Store *s;
        int r;

        if (!names)
                return -ENOMEM;
        pthread_mutex_lock(&p->lock);
        r = scope_store_locked(p, scope, &s, NULL, NULL);
        for (size_t i = 0; r >= 0 && i < s->n; i++) {
                json_t *dto = s->entries[i].dto;
                const char *id = json_string_value(json_object_get(dto, "permissionId"));

                if (dto && id && json_object_set_new(names, id, json_deep_copy(json_object_get(dto, "displayName") ?:
                                                                                    json_object_get(dto, "permissionId"))) < 0)
                        r = -ENOMEM;
        }
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(names);
        return 0;
}

int permissions_user_assigned(Permissions *p, const PermissionsScope *scope, const char *user_id, json_t **ret) {
        _cleanup_json_ json_t *list = json_array();
        Store *s;
        int r;

        if (!list)
                return -ENOMEM;
        pthread_mutex_lock(&p->lock);
        r = scope_store_locked(p, scope, &s, NULL, NULL);
        for (size_t i = 0; r >= 0 && i < s->n; i++) {
                Entry *e = &s->entries[i];
                bool has = false;
                size_t k, j;
                json_t *t, *u;

                if (!e->dto)
                        continue;
                json_array_foreach(e->tenants, k, t)
                        json_array_foreach(json_object_get(t, "users"), j, u)
                                has |= streq(strempty(json_string_value(json_object_get(u, "userId"))), user_id);
                if (has && json_array_append_new(list, json_pack("{s:O, s:O*, s:O*}", "permissionId",
                                                                 json_object_get(e->dto, "permissionId"), "displayName",
                                                                 json_object_get(e->dto, "displayName"), "description",
                                                                 json_object_get(e->dto, "description"))) < 0)
                        r = -ENOMEM;
        }
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        if (answer_unshare(&list) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(list);
        return 0;
}

/* ---- read side ------------------------------------------------------------------------- */

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
        return seed_dimension_has_member(d, buf);
}

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
                        const SeedObject *o = seed_object_find(object_id);

                        if (st) {
                                const char *dim = json_string_value(json_object_get(st, "dimensionId"));
                                const SeedDimension *d = dim ? seed_dimension_find(dim) : NULL;
                                bool ok = d && o && seed_object_has_dimension(o, dim);

                                (void) json_object_set_new(st, "dimensionStatus", json_string(status_of(ok, false)));
                                json_array_foreach(json_object_get(st, "memberSelections"), k, sel)
                                        (void) json_object_set_new(
                                                sel, "dimensionMemberStatus",
                                                json_string(status_of(ok && member_exists(d, json_object_get(sel, "namePath")), false)));
                        }
                        if (dy) {
                                const char *dim = json_string_value(json_object_get(dy, "dimensionId"));
                                const SeedDimension *d = dim ? seed_dimension_find(dim) : NULL;
                                bool ok = d && o && seed_object_has_dimension(o, dim);

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
                const SeedObject *o = obj ? seed_object_find(obj) : NULL;

                (void) json_object_set_new(p, "analyticObjectStatus",
                                           json_string(status_of(o && o->security_object, false)));
                json_array_foreach(json_object_get(json_object_get(p, "propertySetConfig"), "propertyAccessConfigs"),
                                   j, pac) {
                        const char *pid = json_string_value(json_object_get(pac, "propertyId"));
                        const SeedProperty *sp = pid ? seed_property_find(pid) : NULL;

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
static json_t *permission_render(const Entry *e, bool details, bool with_status) {
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

int permissions_list(Permissions *p, const PermissionsScope *scope, bool details, bool with_status,
                     const ModelStrv *correlation_ids, json_t **ret) {
        _cleanup_json_ json_t *a = json_array();
        usec_t now = clock_now();
        Store *s;
        int r;

        if (!a)
                return -ENOMEM;
        pthread_mutex_lock(&p->lock);
        r = scope_store_locked(p, scope, &s, NULL, NULL);
        for (size_t i = 0; r >= 0 && i < s->n; i++) {
                const Entry *e = &s->entries[i];

                if (correlation_ids && correlation_ids->n > 0 &&
                    (!e->correlation_id || !strv_has(correlation_ids, e->correlation_id) ||
                     !correlation_active(e->correlation_time, now)))
                        continue;
                if (json_array_append_new(a, permission_render(e, details, with_status)) < 0)
                        r = -ENOMEM;
        }
        if (r >= 0)
                r = answer_unshare(&a);
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        *ret = json_pack("{s:O}", "permissions", a);
        return *ret ? 0 : -ENOMEM;
}

int permissions_get(Permissions *p, const PermissionsScope *scope, const char *id, bool with_status, json_t **ret) {
        json_t *o = NULL;
        Entry *e = NULL;
        Store *s;
        int r;

        pthread_mutex_lock(&p->lock);
        r = scope_store_locked(p, scope, &s, NULL, NULL);
        if (r >= 0) {
                e = store_find(s, id);
                if (!e)
                        r = -ENOENT;
                else if (!(o = permission_render(e, true, with_status)))
                        r = -ENOMEM;
        }
        if (r >= 0)
                r = answer_unshare(&o);
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        *ret = o;
        return 0;
}

int permissions_users(Permissions *p, const PermissionsScope *scope, const char *id, bool include_user_groups,
                      const char *tenant_filter, int64_t start, int64_t limit, json_t **ret) {
        _cleanup_json_ json_t *tenants = json_array();
        size_t i, index = 0;
        Entry *e;
        Store *s;
        json_t *t;
        int r;

        if (!tenants)
                return -ENOMEM;
        if (start < 0 || limit < 0 || limit > PERMISSIONS_USERS_LIMIT_MAX)
                return -EINVAL;

        pthread_mutex_lock(&p->lock);
        r = scope_store_locked(p, scope, &s, NULL, NULL);
        e = r >= 0 ? store_find(s, id) : NULL;
        if (r >= 0 && !e)
                r = -ENOENT;
        if (r >= 0)
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
        if (r >= 0)
                r = answer_unshare(&tenants);
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;

        *ret = json_pack("{s:O, s:I, s:I}", "tenants", tenants, "limit", (json_int_t) limit, "start", (json_int_t) start);
        return *ret ? 0 : -ENOMEM;
}

/* ---- write side ------------------------------------------------------------------------ */

/* Append one PermissionSuccessDTO (MESSAGE NULL) or PermissionFailureDTO to LIST: only the
 * members the schema has, each a string, none null. */
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

/* The first capability ITEM names that the tenant does not have, or NULL. */
static const char *unknown_capability(Permissions *p, json_t *item) {
        json_t *caps = json_object_get(json_object_get(item, "adminCapabilityConfig"), "capabilities");
        size_t i;
        json_t *c;

        json_array_foreach(caps, i, c) {
                const char *name = json_string_value(c);
                if (name && !model_has_capability(p->catalog, name))
                        return name;
        }
        return NULL;
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

/* Check and apply one create item. Returns the failure message in MSG, or "" on success and the
 * new ID in ID. Lock held. */
static int write_create_locked(Permissions *p, Store *s, json_t *item, usec_t now, char *msg, size_t msg_size,
                               char id[static UUID_LEN + 1]) {
        const char *display = json_string_value(json_object_get(item, "displayName"));
        const char *corr = json_string_value(json_object_get(item, "correlationId"));
        const char *cap;
        int r;

        if (json_is_string(json_object_get(item, "permissionId")))
                snprintf(msg, msg_size, "permissionId must not be set when creating a permission");
        else if (!display || !*display)
                snprintf(msg, msg_size, "displayName is required");
        else if (corr && !correlation_id_valid(corr))
                snprintf(msg, msg_size, "correlationId must be %d to %d characters of A-Z, a-z, 0-9, _ and -",
                         PERMISSIONS_CORRELATION_ID_MIN, PERMISSIONS_CORRELATION_ID_MAX);
        else if ((cap = unknown_capability(p, item)))
                snprintf(msg, msg_size, "unknown capability %.*s", utf8_prefix(cap, 128), cap);
        else if (corr && correlation_used(s, corr, now))
                snprintf(msg, msg_size, "correlation ID %s was already used", corr);
        else if (s->n >= PERMISSIONS_MAX)
                snprintf(msg, msg_size, "the permission store is full (%d permissions)", PERMISSIONS_MAX);
        if (*msg)
                return 0;

        do
                id_next_locked(p, id);
        while (json_object_get(s->by_id, id));
        if (corr) {
                r = correlation_remember(s, corr, now, now);
                if (r == -ENOSPC) {
                        snprintf(msg, msg_size, "too many active correlation IDs (%d)",
                                 PERMISSIONS_CORRELATION_IDS_MAX);
                        return 0;
                }
                if (r < 0)
                        return r;
        }
        r = store_append(s, permission_dto_from_item(item, id), json_array(), corr, now);
        if (r < 0)
                return r;
        s->entries[s->n - 1].touched = true;
        return 0;
}

/* Check and apply one update item. Lock held. */
static int write_update_locked(Permissions *p, Store *s, json_t *item, char *msg, size_t msg_size) {
        const char *id = json_string_value(json_object_get(item, "permissionId"));
        const char *display = json_string_value(json_object_get(item, "displayName"));
        Entry *e = id ? store_find(s, id) : NULL;
        const char *cap;
        json_t *dto;

        if (!id || !*id)
                snprintf(msg, msg_size, "permissionId is required");
        else if (!e)
                snprintf(msg, msg_size, "permission %.*s not found", utf8_prefix(id, 128), id);
        else if (!display || !*display)
                snprintf(msg, msg_size, "displayName is required");
        else if ((cap = unknown_capability(p, item)))
                snprintf(msg, msg_size, "unknown capability %.*s", utf8_prefix(cap, 128), cap);
        if (*msg)
                return 0;

        dto = permission_dto_from_item(item, id);
        if (!dto)
                return -ENOMEM;
        json_decref(e->dto);
        e->dto = dto;
        e->touched = true;
        return 0;
}

int permissions_write(Permissions *p, const PermissionsScope *scope, PermissionsWrite op, json_t *items,
                      json_t **ret) {
        _cleanup_json_ json_t *successes = json_array(), *failures = json_array();
        usec_t now = clock_now();
        Project *pr;
        size_t i;
        json_t *item;
        Store *s;
        int r;

        if (op < 0 || op >= _PERMISSIONS_WRITE_MAX || !json_is_array(items))
                return -EINVAL;
        if (!successes || !failures)
                return -ENOMEM;

        pthread_mutex_lock(&p->lock);
        r = scope_store_locked(p, scope, &s, NULL, &pr);
        json_array_foreach(items, i, item) {
                char msg[PERMISSIONS_MESSAGE_MAX] = "", new_id[UUID_LEN + 1] = "";
                const char *id = NULL, *display = NULL, *corr = NULL;
                Entry *e;

                if (r < 0)
                        break;
                if (op == PERMISSIONS_WRITE_CREATE || op == PERMISSIONS_WRITE_UPDATE) {
                        id = json_string_value(json_object_get(item, "permissionId"));
                        display = json_string_value(json_object_get(item, "displayName"));
                        corr = json_string_value(json_object_get(item, "correlationId"));
                        if (op == PERMISSIONS_WRITE_CREATE)
                                r = write_create_locked(p, s, item, now, msg, sizeof(msg), new_id);
                        else
                                r = write_update_locked(p, s, item, msg, sizeof(msg));
                        if (!*msg && op == PERMISSIONS_WRITE_CREATE)
                                id = new_id;
                } else {
                        id = json_string_value(item);
                        e = store_find(s, id);
                        if (!e)
                                snprintf(msg, sizeof(msg), "permission %.*s not found", utf8_prefix(strempty(id), 128),
                                         strempty(id));
                        else {
                                /* The answer outlives the entry: answer before a delete. */
                                display = json_string_value(json_object_get(e->dto, "displayName"));
                                if (op == PERMISSIONS_WRITE_DELETE) {
                                        r = bulk_append(successes, id, display, NULL, NULL);
                                        if (r >= 0 && pr && json_object_set_new(s->deleted, id, json_true()) < 0)
                                                r = -ENOMEM;
                                        if (r >= 0)
                                                store_remove(s, e);
                                        continue;
                                }
                        }
                }
                if (r < 0)
                        break;
                r = bulk_append(*msg ? failures : successes, id, display, corr, *msg ? msg : NULL);
        }
        if (r != -ESTALE)
                store_compact(s);
        if (r >= 0 && answer_unshare(&successes) < 0)
                r = -ENOMEM;
        if (r >= 0 && answer_unshare(&failures) < 0)
                r = -ENOMEM;
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;

        *ret = json_pack("{s:O, s:O}", "successes", successes, "failures", failures);
        return *ret ? 0 : -ENOMEM;
}

/* ---- assignments ----------------------------------------------------------------------- */

/* The users array of TENANT_CODE in E, created when CREATE is set; NULL when absent. Lock held. */
static json_t *tenant_users_locked(Entry *e, const char *tenant_code, bool create) {
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
 * Give or take USER_ID's direct assignment in TENANT_CODE. A user who has the permission through
 * a user group only changes between UserGroup and UserAndUserGroup. Idempotent. Lock held.
 */
static int assign_user_locked(Entry *e, const char *tenant_code, const char *user_id, const char *username,
                              bool assign, char *msg, size_t msg_size) {
        json_t *users = tenant_users_locked(e, tenant_code, assign), *u = NULL;
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
                        if (json_array_size(users) >= PERMISSIONS_USERS_PER_TENANT_MAX) {
                                snprintf(msg, msg_size, "too many users assigned to this permission (%d)",
                                         PERMISSIONS_USERS_PER_TENANT_MAX);
                                return 0;
                        }
                        u = json_pack("{s:s, s:s, s:s}", "userId", user_id, "username", username, "permissionFrom",
                                      "User");
                        if (!u || json_array_append_new(users, u) < 0)
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

/* The answer for one tenant the users of a call belong to: servicing.AssignRevokePermissionByTenantDTO. */
typedef struct AssignGroup {
        json_t *permissions;            /* array of servicing.AssignRevokePermissionByPermissionDTO */
        json_t *item_entry;             /* borrowed: the current item's element of permissions, or NULL */
        size_t n_changes, n_failed;
        char first_failure[PERMISSIONS_MESSAGE_MAX];
        bool used;
        size_t order;
} AssignGroup;

/* The current item's servicing.AssignRevokePermissionByPermissionDTO in G, made on first use:
 * {"permission": servicing.PermissionAssignedForLocalTenantDTO, "users": []}. */
static json_t *assign_group_entry(AssignGroup *g, const char *id, const Entry *e, size_t *next_order) {
        json_t *perm;

        if (g->item_entry)
                return g->item_entry;
        if (!g->used) {
                g->used = true;
                g->order = (*next_order)++;
        }
        perm = json_object();
        if (!perm || (id && json_object_set_new(perm, "permissionId", json_string(id)) < 0))
                goto fail;
        if (e) {
                json_t *v;

                if ((v = json_object_get(e->dto, "displayName")) && json_object_set(perm, "displayName", v) < 0)
                        goto fail;
                if ((v = json_object_get(e->dto, "description")) && json_object_set(perm, "description", v) < 0)
                        goto fail;
        }
        g->item_entry = json_pack("{s:o, s:[]}", "permission", perm, "users");
        if (!g->item_entry || json_array_append_new(g->permissions, g->item_entry) < 0)
                return g->item_entry = NULL;
        return g->item_entry;
fail:
        json_decref(perm);
        return NULL;
}

static void assign_group_count(AssignGroup *g, const char *message) {
        g->n_changes++;
        if (message && g->n_failed++ == 0)
                snprintf(g->first_failure, sizeof(g->first_failure), "%s", message);
}

/* servicing.AssignRevokePermissionByUserDTO: userId, username when the user exists, message
 * when the change failed. */
static json_t *assign_user_result(const char *user_id, const char *username, const char *message) {
        json_t *o = json_pack("{s:s}", "userId", user_id);

        if (o && username && json_object_set_new(o, "username", json_string(username)) < 0)
                goto fail;
        if (o && message && json_object_set_new(o, "message", json_string(message)) < 0)
                goto fail;
        return o;
fail:
        json_decref(o);
        return NULL;
}

/* Apply one item {permissionId, userIds} in S for a call acting in TENANT. Lock held. */
static int assign_item_locked(Store *s, size_t tenant, bool draft, json_t *item, bool assign, AssignGroup *groups,
                              size_t *next_order) {
        const char *id = json_string_value(json_object_get(item, "permissionId"));
        Entry *e = store_find(s, id);
        json_t *user_ids = json_object_get(item, "userIds"), *uid, *entry;
        char perm_msg[PERMISSIONS_MESSAGE_MAX] = "";
        size_t k;
        int r = 0;

        if (!id || !*id)
                snprintf(perm_msg, sizeof(perm_msg), "permissionId is required");
        else if (!e)
                snprintf(perm_msg, sizeof(perm_msg), "permission %.*s not found", utf8_prefix(id, 128), id);
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                groups[t].item_entry = NULL;

        json_array_foreach(user_ids, k, uid) {
                const char *user = json_string_value(uid);
                char umsg[PERMISSIONS_MESSAGE_MAX] = "";
                DirectoryUser du = {};
                bool known;
                size_t ut;

                if (!user)
                        continue;
                known = directory_user_find(user, &du) >= 0 && directory_tenant_reaches(tenant, du.tenant);
                ut = known ? du.tenant : tenant;
                if (*perm_msg)
                        snprintf(umsg, sizeof(umsg), "%s", perm_msg);
                else if (!*user)
                        snprintf(umsg, sizeof(umsg), "userId must not be empty");
                else if (!known)
                        snprintf(umsg, sizeof(umsg), "user %.*s not found", utf8_prefix(user, 128), user);
                else {
                        r = assign_user_locked(e, directory_tenant_code(ut), user, du.username, assign, umsg,
                                               sizeof(umsg));
                        if (r < 0)
                                return r;
                        e->touched |= draft && !*umsg;
                }
                entry = assign_group_entry(&groups[ut], id, e, next_order);
                if (!entry || json_array_append_new(json_object_get(entry, "users"),
                                                    assign_user_result(user, known ? du.username : NULL,
                                                                       *umsg ? umsg : NULL)) < 0)
                        return -ENOMEM;
                assign_group_count(&groups[ut], *umsg ? umsg : NULL);
        }
        if (json_array_size(user_ids) == 0) {
                /* No user to carry the outcome: the permission appears in the tenant acted in. */
                if (!assign_group_entry(&groups[tenant], id, e, next_order))
                        return -ENOMEM;
                if (*perm_msg)
                        assign_group_count(&groups[tenant], perm_msg);
        }
        return 0;
}

int permissions_assign(Permissions *p, const PermissionsScope *scope, json_t *items, bool assign, json_t **ret) {
        AssignGroup groups[DIRECTORY_TENANTS_N] = {};
        _cleanup_json_ json_t *tenants = json_array();
        char project_id[UUID_LEN + 1] = "";
        size_t i, tenant = 0, next_order = 0;
        Project *pr = NULL;
        Store *s = NULL;
        json_t *item;
        int r = tenants ? 0 : -ENOMEM;

        if (!json_is_array(items))
                return -EINVAL;
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                if (!(groups[t].permissions = json_array()))
                        r = -ENOMEM;

        pthread_mutex_lock(&p->lock);
        if (r >= 0)
                r = scope_store_locked(p, scope, &s, &tenant, &pr);
        if (r >= 0 && pr)
                memcpy(project_id, pr->id, sizeof(project_id));
        json_array_foreach(items, i, item) {
                if (r < 0)
                        break;
                r = assign_item_locked(s, tenant, pr != NULL, item, assign, groups, &next_order);
        }
        for (size_t t = 0; r >= 0 && t < DIRECTORY_TENANTS_N; t++)
                r = answer_unshare(&groups[t].permissions);
        pthread_mutex_unlock(&p->lock);

        if (r >= 0 && next_order == 0) {
                /* No item at all: one empty answer for the tenant acted in. */
                groups[tenant].used = true;
                groups[tenant].order = next_order++;
        }
        for (size_t o = 0; r >= 0 && o < next_order; o++)
                for (size_t t = 0; r >= 0 && t < DIRECTORY_TENANTS_N; t++) {
                        AssignGroup *g = &groups[t];
                        json_t *dto;

                        if (!g->used || g->order != o)
                                continue;
                        dto = json_pack("{s:s, s:O, s:s}", "tenantCode", directory_tenant_code(t), "permissions",
                                        g->permissions, "status",
                                        g->n_changes > 0 && g->n_failed == g->n_changes ? "Failed" : "Succeed");
                        if (dto && g->n_failed > 0) {
                                char message[PERMISSIONS_MESSAGE_MAX + 64];

                                snprintf(message, sizeof(message), "%zu of %zu changes failed; first: %s", g->n_failed,
                                         g->n_changes, g->first_failure);
                                if (json_object_set_new(dto, "message", json_string(message)) < 0)
                                        r = -ENOMEM;
                        }
                        if (dto && *project_id && json_object_set_new(dto, "projectId", json_string(project_id)) < 0)
                                r = -ENOMEM;
                        if (json_array_append_new(tenants, dto) < 0)
                                r = -ENOMEM;
                }
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                json_decref(groups[t].permissions);
        if (r < 0)
                return r;
        *ret = json_pack("{s:O}", "tenants", tenants);
        return *ret ? 0 : -ENOMEM;
}

/* ---- the /_sim dump -------------------------------------------------------------------- */

/* Direct assignees of E in any tenant, each once. Lock held. */
static json_t *direct_user_ids_locked(const Entry *e) {
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

int permissions_dump(Permissions *p, const char *tenant, const char *project, json_t **ret) {
        _cleanup_json_ json_t *a = json_array(), *o = NULL;
        int t = tenant ? directory_tenant_find(tenant) : 0, r = 0;
        Project *pr = NULL;
        Store *s;

        if (!a)
                return -ENOMEM;
        if (t < 0)
                return -ENOENT;
        pthread_mutex_lock(&p->lock);
        if (project && !(pr = project_find_locked(p, (size_t) t, project, NULL)))
                r = -ENOENT;
        s = pr ? &pr->draft : &p->production[t];
        for (size_t i = 0; r >= 0 && i < s->n; i++) {
                const Entry *e = &s->entries[i];
                json_t *d = json_pack("{s:O, s:O}", "permissionId", json_object_get(e->dto, "permissionId"),
                                      "displayName", json_object_get(e->dto, "displayName"));

                if (d && e->correlation_id &&
                    json_object_set_new(d, "correlationId", json_string(e->correlation_id)) < 0)
                        r = -ENOMEM;
                if (d && r >= 0 && json_object_set_new(d, "userIds", direct_user_ids_locked(e)) < 0)
                        r = -ENOMEM;
                if (json_array_append_new(a, d) < 0)
                        r = -ENOMEM;
        }
        if (r >= 0) {
                o = json_pack("{s:s, s:O, s:I}", "tenantCode", directory_tenant_code((size_t) t), "permissions", a,
                              "count", (json_int_t) json_array_size(a));
                if (!o || (pr && json_object_set_new(o, "projectId", json_string(pr->id)) < 0))
                        r = -ENOMEM;
        }
        if (r >= 0)
                r = answer_unshare(&o);
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

/* ---- draft projects -------------------------------------------------------------------- */

/* servicing.ProjectDTO members a create may set, and their JSON types. */
static const struct {
        const char *name;
        json_type type;
} project_fields[] = {
        { "name", JSON_STRING },
        { "description", JSON_STRING },
        { "releaseVersion", JSON_STRING },
        { "ticketNumber", JSON_STRING },
        { "versionNumber", JSON_INTEGER },
};

/* Members the schema says to omit when creating a project. */
static const char *const project_fields_omitted[] = { "id", "capabilities", "projectType" };

int projects_create(Permissions *p, const char *login, json_t *body, json_t **ret, char *err, size_t err_size) {
        _cleanup_json_ json_t *dto = NULL;
        const char *name;
        Project *pr;
        int t, r = 0;

        t = login_tenant(login, err, err_size);
        if (t < 0)
                return t;
        if (!json_is_object(body)) {
                snprintf(err, err_size, "The request body must be a JSON object.");
                return -EINVAL;
        }
        for (size_t i = 0; i < ELEMENTSOF(project_fields_omitted); i++) {
                json_t *v = json_object_get(body, project_fields_omitted[i]);

                if (v && !json_is_null(v)) {
                        snprintf(err, err_size, "%s must be omitted when creating a project", project_fields_omitted[i]);
                        return -EINVAL;
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(project_fields); i++) {
                json_t *v = json_object_get(body, project_fields[i].name);

                if (v && !json_is_null(v) && json_typeof(v) != project_fields[i].type) {
                        snprintf(err, err_size, "%s must be %s", project_fields[i].name,
                                 project_fields[i].type == JSON_STRING ? "a string" : "an integer");
                        return -EINVAL;
                }
        }
        name = json_string_value(json_object_get(body, "name"));
        if (!name || !*name) {
                snprintf(err, err_size, "name is required");
                return -EINVAL;
        }

        pr = calloc(1, sizeof(*pr));
        if (!pr)
                return -ENOMEM;
        pr->tenant = (size_t) t;
        pthread_mutex_lock(&p->lock);
        if (p->n_projects >= PERMISSIONS_PROJECTS_MAX) {
                snprintf(err, err_size, "At most %d draft projects may be open at once.", PERMISSIONS_PROJECTS_MAX);
                r = -ENOSPC;
        }
        if (r >= 0) {
                id_next_locked(p, pr->id);
                dto = json_pack("{s:s}", "id", pr->id);
                for (size_t i = 0; dto && i < ELEMENTSOF(project_fields); i++) {
                        json_t *v = json_object_get(body, project_fields[i].name);

                        if (v && !json_is_null(v) && json_object_set(dto, project_fields[i].name, v) < 0)
                                r = -ENOMEM;
                }
                if (!dto || json_object_set_new(dto, "capabilities", json_pack("[s]", "owner")) < 0 ||
                    json_object_set_new(dto, "projectType", json_string("Standard")) < 0)
                        r = -ENOMEM;
        }
        if (r >= 0)
                r = store_copy(&pr->draft, &p->production[t]);
        if (r >= 0) {
                pr->dto = json_incref(dto);
                p->projects[p->n_projects++] = TAKE_PTR(pr);
        }
        pthread_mutex_unlock(&p->lock);
        project_free(pr);
        if (r < 0)
                return r;
        *ret = json_deep_copy(dto);
        return *ret ? 0 : -ENOMEM;
}

int projects_list(Permissions *p, const char *login, const ModelStrv *with, int64_t limit, json_t **ret, char *err,
                  size_t err_size) {
        static const char *const kinds[] = { "Open", "Approval", "Rejected", "Archived" };
        static const char *const keys[] = { "openProjects", "approvalProjects", "rejectedProjects", "archivedProjects" };
        _cleanup_json_ json_t *o = json_object(), *open = json_array();
        bool want[ELEMENTSOF(kinds)] = {};
        int t, r = 0;

        if (!o || !open)
                return -ENOMEM;
        t = login_tenant(login, err, err_size);
        if (t < 0)
                return t;
        for (size_t i = 0; with && i < with->n; i++) {
                size_t k;

                for (k = 0; k < ELEMENTSOF(kinds) && !streq(kinds[k], with->items[i]); k++)
                        ;
                if (k >= ELEMENTSOF(kinds)) {
                        snprintf(err, err_size, "with must name Open, Approval, Rejected or Archived, not %.*s",
                                 utf8_prefix(with->items[i], 64), with->items[i]);
                        return -EINVAL;
                }
                want[k] = true;
        }
        if (!with || with->n == 0)
                want[0] = true;

        pthread_mutex_lock(&p->lock);
        for (size_t i = 0; i < p->n_projects && (int64_t) json_array_size(open) < limit; i++)
                if (p->projects[i]->tenant == (size_t) t &&
                    json_array_append_new(open, json_deep_copy(p->projects[i]->dto)) < 0)
                        r = -ENOMEM;
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        /* Only open drafts exist in the simulator; the other kinds are always empty. */
        for (size_t k = 0; k < ELEMENTSOF(kinds); k++)
                if (want[k] && json_object_set_new(o, keys[k], k == 0 ? json_incref(open) : json_array()) < 0)
                        return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

int projects_get(Permissions *p, const char *login, const char *id, json_t **ret) {
        char err[PERMISSIONS_MESSAGE_MAX];
        json_t *o = NULL;
        Project *pr;
        int t, r = 0;

        t = login_tenant(login, err, sizeof(err));
        if (t < 0)
                return t;
        pthread_mutex_lock(&p->lock);
        pr = project_find_locked(p, (size_t) t, id, NULL);
        if (!pr)
                r = -ENOENT;
        else if (!(o = json_deep_copy(pr->dto)))
                r = -ENOMEM;
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        *ret = o;
        return 0;
}

/* Merge draft PR into its tenant's production: the draft's deletes, then every entry the draft
 * touched (replacing production's or added, with its correlation ID reserved there). Lock held. */
static int project_publish_locked(Permissions *p, Project *pr) {
        Store *prod = &p->production[pr->tenant], *d = &pr->draft;
        usec_t now = clock_now();
        const char *key;
        json_t *v;
        int r = 0;

        json_object_foreach(d->deleted, key, v) {
                Entry *e = store_find(prod, key);

                if (e)
                        store_remove(prod, e);
        }
        store_compact(prod);
        for (size_t i = 0; r >= 0 && i < d->n; i++) {
                Entry *de = &d->entries[i], *pe;
                const char *id = json_string_value(json_object_get(de->dto, "permissionId"));

                if (!de->touched)
                        continue;
                pe = store_find(prod, id);
                if (pe) {
                        json_decref(pe->dto);
                        json_decref(pe->tenants);
                        pe->dto = json_incref(de->dto);
                        pe->tenants = json_incref(de->tenants);
                        continue;
                }
                r = store_append(prod, json_incref(de->dto), json_incref(de->tenants), de->correlation_id,
                                 de->correlation_time);
                if (r >= 0 && de->correlation_id)
                        r = correlation_remember(prod, de->correlation_id, de->correlation_time, now);
                if (r == -ENOSPC)
                        r = 0;  /* published all the same; the ID is just not findable in production */
        }
        return r;
}

static void project_remove_locked(Permissions *p, size_t index) {
        project_free(p->projects[index]);
        memmove(&p->projects[index], &p->projects[index + 1], (p->n_projects - index - 1) * sizeof(Project *));
        p->n_projects--;
}

int projects_operate(Permissions *p, const char *login, const char *id, json_t *body, json_t **ret, char *err,
                     size_t err_size) {
        _cleanup_json_ json_t *published = NULL;
        const char *op;
        Project *pr;
        size_t index = 0;
        int t, r = 0;

        t = login_tenant(login, err, err_size);
        if (t < 0)
                return t;
        op = json_is_object(body) ? json_string_value(json_object_get(body, "operation")) : NULL;
        if (!op || !streq(op, "commitAndPublish")) {
                snprintf(err, err_size, "operation must be commitAndPublish");
                return -EINVAL;
        }
        pthread_mutex_lock(&p->lock);
        pr = project_find_locked(p, (size_t) t, id, &index);
        if (!pr)
                r = -ENOENT;
        if (r >= 0) {
                published = json_pack("{s:O, s:O}", "id", json_object_get(pr->dto, "id"), "name",
                                      json_object_get(pr->dto, "name"));
                if (!published)
                        r = -ENOMEM;
        }
        if (r >= 0)
                r = project_publish_locked(p, pr);
        if (r >= 0)
                project_remove_locked(p, index);
        if (r >= 0)
                r = answer_unshare(&published);
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        *ret = json_pack("{s:{s:O}}", "commitAndPublish", "publishedVersion", published);
        return *ret ? 0 : -ENOMEM;
}

int projects_delete(Permissions *p, const char *login, const char *id, json_t **ret) {
        char err[PERMISSIONS_MESSAGE_MAX];
        json_t *o = NULL;
        size_t index = 0;
        Project *pr;
        int t, r = 0;

        t = login_tenant(login, err, sizeof(err));
        if (t < 0)
                return t;
        pthread_mutex_lock(&p->lock);
        pr = project_find_locked(p, (size_t) t, id, &index);
        if (!pr)
                r = -ENOENT;
        else if (!(o = json_deep_copy(pr->dto)))
                r = -ENOMEM;
        else
                project_remove_locked(p, index);
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return r;
        *ret = o;
        return 0;
}
