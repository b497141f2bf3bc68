/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated organization's directory: its tenants (one administrating tenant and its
 * analytic tenants) and the users each tenant holds. Constant data and pure lookups: no
 * state, no allocation, no logging.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* The administrating tenant, which a call acts in when it names no TargetTenantID. */
#define DIRECTORY_ADMIN_TENANT "WFF_j1a"
/* Tenants known to the simulator: the administrating one and its analytic tenants. */
#define DIRECTORY_TENANTS_N 3
/* Synthetic users per tenant ("u-000" ...). */
#define DIRECTORY_SYNTHETIC_USERS 1000
/* Longest user ID the directory hands out, NUL included. */
#define DIRECTORY_USER_ID_MAX 40
/* Longest username the directory hands out, NUL included. */
#define DIRECTORY_USERNAME_MAX 96

typedef struct DirectoryUser {
        size_t tenant;                          /* index, as directory_tenant_find() returns */
        char username[DIRECTORY_USERNAME_MAX];
} DirectoryUser;

/* The index of tenant CODE (exact spelling), or -ENOENT. */
int directory_tenant_find(const char *code);
/* The code of tenant INDEX (0 <= INDEX < DIRECTORY_TENANTS_N); index 0 is the administrating one. */
const char *directory_tenant_code(size_t index);
bool directory_tenant_is_admin(size_t index);

/*
 * May a call logged in to tenant LOGIN act in (or on users of) tenant TARGET? The
 * administrating tenant may act in itself and its analytic tenants; an analytic tenant only
 * in itself.
 */
bool directory_tenant_reaches(size_t login, size_t target);

/* Look user ID up; fills *ret and returns 0, or -ENOENT for a user no tenant has. */
int directory_user_find(const char *id, DirectoryUser *ret);

/* How many users tenant TENANT holds: its named users, then its synthetic ones. */
size_t directory_users_count(size_t tenant);
/* The INDEXth user of TENANT (0 <= INDEX < directory_users_count()): its ID into RET_ID and the
 * rest into *RET. -ENOENT past the end. */
int directory_user_at(size_t tenant, size_t index, char *ret_id, size_t id_size, DirectoryUser *ret);
