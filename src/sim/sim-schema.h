/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Whole-call checks of the permission and user-group write bodies against Visier's request
 * DTOs (admin.PermissionsListDTO, servicing.DeletePermissionsRequestDTO /
 * RevertPermissionsRequestDTO, servicing.AssignRevokePermissionsRequestDTO,
 * admin.UsersToUserGroupsRequestDTO, admin.PermissionsToUserGroupsRequestDTO): JSON types, and
 * for Visier's enums the allowed values. Pure: no state, no allocation, no logging.
 */
#pragma once

#include <errno.h>
#include <jansson.h>
#include <stddef.h>

/* Most items one bulk write may carry (Visier: 1000 definitions per call). */
#define SCHEMA_ITEMS_MAX 1000
/* Room for an error message naming a JSON path. */
#define SCHEMA_ERROR_MAX 256

typedef enum SchemaBody {
        SCHEMA_PERMISSIONS_LIST,        /* {"permissions":[servicing.PermissionDTO...]} */
        SCHEMA_PERMISSION_IDS,          /* {"permissionIds":["..."]} */
        SCHEMA_ASSIGN_REVOKE,           /* {"permissions":[{"permissionId","userIds":[...]}]} */
        SCHEMA_USERS_TO_GROUPS,         /* {"userGroups":[{"userGroupId","userIds":[...]}]} */
        SCHEMA_PERMISSIONS_TO_GROUPS,   /* {"userGroups":[{"userGroupId","permissionsIds":[...]}]} */
        _SCHEMA_BODY_MAX,
        _SCHEMA_BODY_INVALID = -EINVAL,
} SchemaBody;

/*
 * Check BODY: a JSON object whose list field is present, an array of at most SCHEMA_ITEMS_MAX
 * items, every item and every known field of the right JSON type (null counts as absent;
 * unknown fields are ignored). Returns the item count, or -EINVAL with ERR naming the JSON
 * path ("permissions[3].displayName") and the problem.
 */
int schema_check(SchemaBody which, json_t *body, char *err, size_t err_size);

/* The name of the list field of WHICH ("permissions", "permissionIds" or "userGroups"). */
const char *schema_list_name(SchemaBody which);

/* Check every enum member of a data query body (aggregate, list, sql, snapshot) against
 * Visier's values, wherever it sits. 0, or -EINVAL with ERR naming the JSON path and the
 * allowed values. */
int schema_check_query_enums(json_t *body, char *err, size_t err_size);
