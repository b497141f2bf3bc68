/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated organization's users (from the directory) and user groups, scoped as Visier
 * scopes them: one set of groups per tenant in production and one per open draft project
 * (a copy of production taken at the project's first group write; the groups it changed are
 * merged into production when the project is published). The read side (users, their groups; groups, their permissions
 * and users) and the write side (users to groups, permissions to groups). Every answer is a
 * new JSON value shaped exactly like Visier's DTOs. Thread-safe; never logs.
 *
 * Permissions are another module's: the caller fills permission display names into answers
 * and says which permission IDs exist.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most users and user groups one page may hold (Visier: 1000). */
#define USERS_LIMIT_MAX 1000
/* Most user groups per scope, and most users manually included in one group. */
#define USERS_GROUPS_MAX 10000
#define USERS_GROUP_USERS_MAX 100000

typedef struct Users Users;

/* Where a call acts, already resolved: a tenant index and an open project (NULL = production). */
typedef struct UsersScope {
        size_t tenant;
        const char *project;
} UsersScope;

int users_new(Users **ret);
Users *users_free(Users *u);

/* GET /v1/admin/users: servicing.AllUsersGetAPIResponseDTO, the scope tenant's users from START,
 * at most LIMIT; GROUPS adds each user's userGroups, PROFILES an empty profiles list. */
int users_list(Users *u, const UsersScope *sc, int64_t start, int64_t limit, bool groups, bool profiles,
               json_t **ret);
/* GET /v1/admin/users/{id}: servicing.UserGetAPIResponseDTO, or -ENOENT for a user the scope's
 * tenant does not hold. */
int users_get(Users *u, const UsersScope *sc, const char *id, bool groups, bool profiles, json_t **ret);

/* GET /v1/admin/user-groups: admin.UserGroupsGetAPIResponseDTO; each group's permissions are
 * [{permissionId}], for the caller to add displayName. */
int users_groups_v1(Users *u, const UsersScope *sc, int64_t start, int64_t limit, json_t **ret);
/* GET /v2/admin/user-groups (ID NULL: admin.UserGroupsChangeDTO, from START, at most LIMIT,
 * display names matching GLOB if not NULL) or /v2/admin/user-groups/{id}
 * (admin.UserGroupChangeDefinitionDTO, -ENOENT). PERMISSIONS and USERS add those parts. */
int users_groups_v2(Users *u, const UsersScope *sc, const char *id, bool permissions, bool users, const char *glob,
                    int64_t start, int64_t limit, json_t **ret);
/* GET /v1/admin/user-groups/{id}/users: admin.UserGroupsUsersDTO, -ENOENT. */
int users_group_users(Users *u, const UsersScope *sc, const char *id, int64_t start, int64_t limit, json_t **ret);

/*
 * PUT (ASSIGN) or DELETE /v1/admin/user-groups/users: ITEMS is the checked list of
 * {userGroupId, userIds}. A user must be one of the group's tenant; an unknown group or user
 * is a failed change, named in the message. Answers admin.SecurityAssignmentResponseDTO;
 * *RET_CHANGED says whether anything changed.
 */
int users_assign_users(Users *u, const UsersScope *sc, json_t *items, bool assign, json_t **ret, bool *ret_changed);
/*
 * PUT (ASSIGN) or DELETE /v1/admin/user-groups/permissions: ITEMS is the checked list of
 * {userGroupId, permissionsIds}; KNOWN maps each permission ID of the scope to its display name
 * (an ID it lacks is a failed change). Answers admin.PermissionsToUserGroupForTenantDTO.
 */
int users_assign_permissions(Users *u, const UsersScope *sc, json_t *items, bool assign, json_t *known,
                             json_t **ret, bool *ret_changed);

/* A draft project was created: its group calls are served from now on (-ENOSPC past
 * PERMISSIONS_PROJECTS_MAX). A call naming a project that is not open (never opened, published
 * or deleted meanwhile) gets -ESTALE. */
int users_project_opened(Users *u, size_t tenant, const char *project);
/* The project was published (each group changed in it replaces production's) or deleted. */
void users_project_closed(Users *u, size_t tenant, const char *project, bool published);
