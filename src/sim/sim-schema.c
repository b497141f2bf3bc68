/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the shape of the permission and user-group write bodies. Each request DTO is written
 * down once as a constant tree of nodes (string, enum, boolean, array of X, object with known
 * fields), copied
 * from visier-subset.yaml and administration-apis.yaml; one recursive walk checks a body
 * against it and names the first offending JSON path. The walk's depth is bounded by the
 * tree, never by the input, and unknown fields are not descended. Never logs, never
 * allocates.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "sim-schema.h"

#define SCHEMA_PATH_MAX 192

typedef enum SchemaType {
        SCHEMA_STRING,
        SCHEMA_ENUM,            /* a string, one of values */
        SCHEMA_BOOLEAN,
        SCHEMA_ARRAY,
        SCHEMA_OBJECT,
} SchemaType;

typedef struct SchemaNode SchemaNode;

typedef struct SchemaField {
        const char *name;
        const SchemaNode *node;
} SchemaField;

struct SchemaNode {
        SchemaType type;
        const SchemaNode *items;        /* SCHEMA_ARRAY */
        const SchemaField *fields;      /* SCHEMA_OBJECT, NULL-name terminated */
        const char *const *values;      /* SCHEMA_ENUM, NULL-terminated */
        const char *values_text;        /* SCHEMA_ENUM, for messages */
        bool closed;                    /* SCHEMA_OBJECT: a member not in fields is refused */
};

#define OBJECT(...) { .type = SCHEMA_OBJECT, .fields = (const SchemaField[]) { __VA_ARGS__, {} } }
/* A small DTO whose members are all known: a misspelled one is an error, not ignored. */
#define CLOSED_OBJECT(...) { .type = SCHEMA_OBJECT, .fields = (const SchemaField[]) { __VA_ARGS__, {} }, .closed = true }
#define ARRAY(n) { .type = SCHEMA_ARRAY, .items = &(n) }

static const SchemaNode string_node = { .type = SCHEMA_STRING };
static const SchemaNode boolean_node = { .type = SCHEMA_BOOLEAN };
static const SchemaNode strings_node = ARRAY(string_node);
#define ENUM(...) { .type = SCHEMA_ENUM, .values = (const char *const[]) { __VA_ARGS__, NULL }, .values_text = #__VA_ARGS__ }
/* The status a read reports for an object named in a permission (servicing.*Status enums). */
static const SchemaNode status_node = ENUM("Unset", "Valid", "NoData", "NotFound");
static const SchemaNode access_level_node = ENUM("None", "Aggregate", "Detailed");
#undef ENUM

/* servicing.PermissionDTO and everything below it. */
static const SchemaNode user_property = OBJECT({ "name", &string_node });
static const SchemaNode dynamic_property_mapping = OBJECT(
        { "hierarchyPropertyId", &string_node },
        { "userProperty", &user_property },
        { "hierarchyPropertyStatus", &status_node });
static const SchemaNode dynamic_property_mappings = ARRAY(dynamic_property_mapping);
static const SchemaNode dynamic_dimension_filter = OBJECT(
        { "dimensionId", &string_node },
        { "subjectReferencePath", &strings_node },
        { "dynamicPropertyMappings", &dynamic_property_mappings },
        { "dimensionStatus", &status_node });
static const SchemaNode member_selection = OBJECT(
        { "namePath", &strings_node },
        { "excluded", &boolean_node },
        { "dimensionMemberStatus", &status_node });
static const SchemaNode member_selections = ARRAY(member_selection);
static const SchemaNode static_dimension_filter = OBJECT(
        { "dimensionId", &string_node },
        { "subjectReferencePath", &strings_node },
        { "memberSelections", &member_selections },
        { "dimensionStatus", &status_node });
static const SchemaNode dimension_filter = OBJECT(
        { "staticDimensionFilter", &static_dimension_filter },
        { "dynamicDimensionFilter", &dynamic_dimension_filter });
static const SchemaNode dimension_filters = ARRAY(dimension_filter);
static const SchemaNode member_filter_config = OBJECT({ "dimensionFilters", &dimension_filters });
static const SchemaNode member_filter_configs = ARRAY(member_filter_config);
static const SchemaNode inherited_access_config = OBJECT(
        { "analyticObjectId", &string_node },
        { "removeAccess", &boolean_node },
        { "memberFilterConfigs", &member_filter_configs });
static const SchemaNode inherited_access_configs = ARRAY(inherited_access_config);
static const SchemaNode inherited_reference_member_filter_config = OBJECT(
        { "targetAnalyticObjectId", &string_node },
        { "analyticObjectReference", &string_node });
static const SchemaNode shareable_data_access_set = OBJECT({ "dataAccessSetId", &string_node });
static const SchemaNode property_access_config = OBJECT(
        { "propertyId", &string_node },
        { "analyticObjectId", &string_node },
        { "analyticObjectReferencePaths", &strings_node },
        { "accessLevel", &access_level_node },
        { "propertyStatus", &status_node });
static const SchemaNode property_access_configs = ARRAY(property_access_config);
static const SchemaNode property_set_config = OBJECT(
        { "propertyAccessConfigs", &property_access_configs },
        { "shareableDataAccessSet", &shareable_data_access_set });
static const SchemaNode data_security_profile = OBJECT(
        { "analyticObjectId", &string_node },
        { "propertySetConfig", &property_set_config },
        { "allDataPointAccess", &boolean_node },
        { "memberFilterConfigs", &member_filter_configs },
        { "inheritedAccessConfigs", &inherited_access_configs },
        { "inheritedReferenceMemberFilterConfig", &inherited_reference_member_filter_config },
        { "analyticObjectStatus", &status_node });
static const SchemaNode data_security_profiles = ARRAY(data_security_profile);
static const SchemaNode admin_capability_config = OBJECT(
        { "allCapabilitiesAccess", &boolean_node },
        { "capabilities", &strings_node });
static const SchemaNode role_modules_config = OBJECT({ "contentPackageIds", &strings_node });
static const SchemaNode source_security_profile = OBJECT({ "sourceId", &string_node });
static const SchemaNode source_security_profiles = ARRAY(source_security_profile);
static const SchemaNode source_security_config = OBJECT(
        { "sourceSecurityProfiles", &source_security_profiles },
        { "hasWriteAccessToAllSources", &boolean_node });
static const SchemaNode targets_for_all = OBJECT(
        { "accessToAllTargets", &boolean_node },
        { "targetIds", &strings_node });
static const SchemaNode targets_for_data_category = OBJECT(
        { "dataCategoryId", &string_node },
        { "accessToAllTargets", &boolean_node },
        { "targetIds", &strings_node });
static const SchemaNode targets_for_data_categories = ARRAY(targets_for_data_category);
static const SchemaNode target_security_config = OBJECT(
        { "targetSecurityForAll", &targets_for_all },
        { "targetSecurityProfiles", &targets_for_data_categories });
static const SchemaNode permission = OBJECT(
        { "permissionId", &string_node },
        { "displayName", &string_node },
        { "description", &string_node },
        { "dataSecurityProfiles", &data_security_profiles },
        { "adminCapabilityConfig", &admin_capability_config },
        { "roleModulesConfig", &role_modules_config },
        { "sourceSecurityConfig", &source_security_config },
        { "targetSecurityConfig", &target_security_config },
        { "correlationId", &string_node });

/* servicing.AssignRevokePermissionsRequestDTO. */
static const SchemaNode assign_revoke_permission = OBJECT(
        { "permissionId", &string_node },
        { "userIds", &strings_node });
static const SchemaNode target_project_for_tenant = OBJECT(
        { "tenantCode", &string_node },
        { "projectId", &string_node });
static const SchemaNode target_projects_for_tenants = ARRAY(target_project_for_tenant);
static const SchemaNode target_project_for_tenants_list = OBJECT(
        { "targetProjectForTenants", &target_projects_for_tenants });

/* admin.UsersToUserGroupsRequestDTO and admin.PermissionsToUserGroupsRequestDTO. */
static const SchemaNode users_to_user_group = CLOSED_OBJECT(
        { "userGroupId", &string_node },
        { "userIds", &strings_node });
static const SchemaNode permissions_to_user_group = CLOSED_OBJECT(
        { "userGroupId", &string_node },
        { "permissionsIds", &strings_node });

#undef OBJECT
#undef CLOSED_OBJECT
#undef ARRAY

/* One request body: its list field, the type of the list's items, and the other fields. */
typedef struct SchemaBodyInfo {
        const char *list;
        const SchemaNode *item;
        const SchemaField *others;      /* NULL-name terminated or NULL */
} SchemaBodyInfo;

static const SchemaField assign_revoke_others[] = {
        { "targetProjectForTenantsList", &target_project_for_tenants_list },
        {},
};

static const SchemaBodyInfo body_table[_SCHEMA_BODY_MAX] = {
        [SCHEMA_PERMISSIONS_LIST] = { "permissions", &permission, NULL },
        [SCHEMA_PERMISSION_IDS] = { "permissionIds", &string_node, NULL },
        [SCHEMA_ASSIGN_REVOKE] = { "permissions", &assign_revoke_permission, assign_revoke_others },
        [SCHEMA_USERS_TO_GROUPS] = { "userGroups", &users_to_user_group, assign_revoke_others },
        [SCHEMA_PERMISSIONS_TO_GROUPS] = { "userGroups", &permissions_to_user_group, NULL },
};

const char *schema_list_name(SchemaBody which) {
        if (which < 0 || which >= _SCHEMA_BODY_MAX)
                return NULL;
        return body_table[which].list;
}

static const char *type_phrase(SchemaType t) {
        switch (t) {
        case SCHEMA_STRING:
        case SCHEMA_ENUM:
                return "a string";
        case SCHEMA_BOOLEAN:
                return "a boolean";
        case SCHEMA_ARRAY:
                return "an array";
        default:
                return "an object";
        }
}

static bool type_matches(SchemaType t, json_t *v) {
        switch (t) {
        case SCHEMA_STRING:
        case SCHEMA_ENUM:
                return json_is_string(v);
        case SCHEMA_BOOLEAN:
                return json_is_boolean(v);
        case SCHEMA_ARRAY:
                return json_is_array(v);
        default:
                return json_is_object(v);
        }
}

/* Append to the path at PATH[LEN] without overflowing; a path too long is cut, not an error. */
static size_t path_push(char *path, size_t len, const char *key, size_t index) {
        int n;

        if (len >= SCHEMA_PATH_MAX - 1)
                return len;
        if (key)
                n = snprintf(path + len, SCHEMA_PATH_MAX - len, "%s%s", len > 0 ? "." : "", key);
        else
                n = snprintf(path + len, SCHEMA_PATH_MAX - len, "[%zu]", index);
        if (n < 0)
                return len;
        if ((size_t) n < SCHEMA_PATH_MAX - len)
                return len + (size_t) n;
        /* Cut: never inside a UTF-8 sequence, so that the message stays valid UTF-8. */
        {
                size_t end = SCHEMA_PATH_MAX - 1, k = end;

                while (k > len && ((unsigned char) path[k - 1] & 0xC0) == 0x80)
                        k--;
                if (k > len) {
                        unsigned char lead = (unsigned char) path[k - 1];
                        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;

                        if (end - (k - 1) < need)
                                end = k - 1;
                }
                path[end] = '\0';
                return end;
        }
}

static int check_fields(const SchemaField *fields, json_t *obj, char *path, size_t len, char *err, size_t err_size);

/* V must have NODE's type (the caller has dealt with null). */
static int check_node(const SchemaNode *node, json_t *v, char *path, size_t len, char *err, size_t err_size) {
        size_t i;
        json_t *item;
        int r;

        if (!type_matches(node->type, v)) {
                snprintf(err, err_size, "%s must be %s", path, type_phrase(node->type));
                return -EINVAL;
        }
        switch (node->type) {
        case SCHEMA_ARRAY:
                json_array_foreach(v, i, item) {
                        size_t l = path_push(path, len, NULL, i);

                        r = check_node(node->items, item, path, l, err, err_size);
                        path[len] = '\0';
                        if (r < 0)
                                return r;
                }
                return 0;
        case SCHEMA_OBJECT:
                if (node->closed) {
                        const char *key;
                        json_t *m;

                        json_object_foreach(v, key, m) {
                                const SchemaField *f = node->fields;

                                while (f->name && !streq(f->name, key))
                                        f++;
                                if (!f->name) {
                                        (void) path_push(path, len, key, 0);
                                        snprintf(err, err_size, "%s is not a member Visier defines here", path);
                                        path[len] = '\0';
                                        return -EINVAL;
                                }
                        }
                }
                return check_fields(node->fields, v, path, len, err, err_size);
        case SCHEMA_ENUM:
                for (const char *const *e = node->values; *e; e++)
                        if (streq(*e, json_string_value(v)))
                                return 0;
                snprintf(err, err_size, "%s must be one of %s", path, node->values_text);
                return -EINVAL;
        default:
                return 0;
        }
}

static int check_fields(const SchemaField *fields, json_t *obj, char *path, size_t len, char *err, size_t err_size) {
        for (const SchemaField *f = fields; f && f->name; f++) {
                json_t *v = json_object_get(obj, f->name);
                size_t l;
                int r;

                if (!v || json_is_null(v))
                        continue;
                l = path_push(path, len, f->name, 0);
                r = check_node(f->node, v, path, l, err, err_size);
                path[len] = '\0';
                if (r < 0)
                        return r;
        }
        return 0;
}

int schema_check(SchemaBody which, json_t *body, char *err, size_t err_size) {
        const SchemaBodyInfo *info;
        char path[SCHEMA_PATH_MAX] = "";
        json_t *list, *item;
        size_t i;
        int r;

        if (which < 0 || which >= _SCHEMA_BODY_MAX)
                return -EINVAL;
        info = &body_table[which];

        if (!json_is_object(body)) {
                snprintf(err, err_size, "The request body must be a JSON object.");
                return -EINVAL;
        }
        list = json_object_get(body, info->list);
        if (!list || json_is_null(list)) {
                snprintf(err, err_size, "%s is required", info->list);
                return -EINVAL;
        }
        if (!json_is_array(list)) {
                snprintf(err, err_size, "%s must be an array", info->list);
                return -EINVAL;
        }
        if (json_array_size(list) > SCHEMA_ITEMS_MAX) {
                snprintf(err, err_size, "%s has %zu items; at most %d are allowed", info->list,
                         json_array_size(list), SCHEMA_ITEMS_MAX);
                return -EINVAL;
        }
        r = check_fields(info->others, body, path, 0, err, err_size);
        if (r < 0)
                return r;
        json_array_foreach(list, i, item) {
                snprintf(path, sizeof(path), "%s[%zu]", info->list, i);
                r = check_node(info->item, item, path, strlen(path), err, err_size);
                if (r < 0)
                        return r;
        }
        return (int) json_array_size(list);
}

/* ---- data query bodies: Visier's enums, wherever they sit ----------------------------- */

#define VALUES(...) (const char *const[]) { __VA_ARGS__, NULL }
static const char *const periods[] = { "MONTH", "DAY", "WEEK", "QUARTER", "YEAR", NULL };
static const char *const visibility[] = { "SHOW", "HIDE", "ELIMINATE", NULL };

/*
 * Every enum member of the four data query request DTOs (data-out-apis.yaml), by name; PARENT
 * narrows a name whose enum depends on where it sits (memberDisplayMode of a table axis is not
 * that of the query options). The names are unique in meaning otherwise.
 */
static const struct {
        const char *parent;     /* NULL: any */
        const char *member;
        const char *const *values;
} query_enums[] = {
        { NULL, "intervalPeriodType", periods },
        { NULL, "periodType", periods },
        { NULL, "trailingPeriodType", periods },
        { NULL, "direction", VALUES("BACKWARD", "FORWARD") },
        { NULL, "dynamicDateFrom", VALUES("SOURCE", "COMPLETE_PERIOD") },
        { NULL, "memberValueMode", VALUES("NAME", "PATH") },
        { "tableAxisOptions", "memberDisplayMode", VALUES("UNCHANGED", "DEFAULT", "COMPACT", "DISPLAY", "MDX") },
        { NULL, "memberDisplayMode", VALUES("DEFAULT", "COMPACT", "DISPLAY", "MDX", "COMPACT_DISPLAY") },
        { NULL, "sortType", VALUES("CONFIGURED", "METRIC_VALUE") },
        { NULL, "sortDirection", VALUES("SORT_ASCENDING", "SORT_DESCENDING") },
        { NULL, "limitType", VALUES("FIRST_N", "LAST_N") },
        { NULL, "calendarType", VALUES("TENANT_CALENDAR", "GREGORIAN_CALENDAR") },
        { NULL, "currencyConversionMode", VALUES("TENANT_CURRENCY_CONVERSION", "VISIER_CURRENCY_CONVERSION") },
        { NULL, "zeroVisibility", visibility },
        { NULL, "nullVisibility", visibility },
        { NULL, "axisVisibility", VALUES("SIMPLE", "VERBOSE") },
        { NULL, "sparseHandlingMode", VALUES("ALLOW", "DISALLOW", "FORCE") },
        { NULL, "axesOverallValueMode", VALUES("NONE", "AGGREGATE", "OVERALL") },
        { NULL, "queryMode", VALUES("DEFAULT", "FILL", "FAIL") },
        { NULL, "recordMode", VALUES("NORMAL", "CHANGES") },
        { NULL, "dateTimeDisplayMode", VALUES("EPOCH", "DATETIME") },
};
#undef VALUES

/* Deeper than any of Visier's query DTOs. */
#define QUERY_DEPTH_MAX 32

static int check_enums(json_t *v, const char *parent, char *path, size_t len, unsigned depth, char *err,
                       size_t err_size) {
        const char *key;
        json_t *m;
        size_t i;
        int r;

        if (depth > QUERY_DEPTH_MAX) {
                snprintf(err, err_size, "%s is nested too deeply", len ? path : "The request body");
                return -EINVAL;
        }
        if (json_is_array(v)) {
                json_array_foreach(v, i, m) {
                        size_t l = path_push(path, len, NULL, i);

                        r = check_enums(m, parent, path, l, depth + 1, err, err_size);
                        path[len] = '\0';
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        json_object_foreach(v, key, m) {
                size_t l = path_push(path, len, key, 0);

                for (size_t k = 0; k < ELEMENTSOF(query_enums); k++) {
                        const char *const *e;

                        if (!streq(query_enums[k].member, key) ||
                            (query_enums[k].parent && !(parent && streq(query_enums[k].parent, parent))))
                                continue;
                        if (json_is_null(m))
                                break;
                        for (e = query_enums[k].values; *e && !(json_is_string(m) && streq(*e, json_string_value(m)));
                             e++)
                                ;
                        if (!*e) {
                                snprintf(err, err_size, "%s must be one of", path);
                                for (e = query_enums[k].values; *e; e++)
                                        snprintf(err + strlen(err), err_size - strlen(err), " %s%s", *e,
                                                 e[1] ? "," : "");
                                path[len] = '\0';
                                return -EINVAL;
                        }
                        break;
                }
                r = json_is_object(m) || json_is_array(m) ? check_enums(m, key, path, l, depth + 1, err, err_size) : 0;
                path[len] = '\0';
                if (r < 0)
                        return r;
        }
        return 0;
}

int schema_check_query_enums(json_t *body, char *err, size_t err_size) {
        char path[SCHEMA_PATH_MAX] = "";

        return check_enums(body, NULL, path, 0, 0, err, err_size);
}
