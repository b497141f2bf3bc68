/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns who exists in the simulated organization. Tenants: WFF_j1a administrates the analytic
 * tenants WFF_j1a~c01 and WFF_j1a~c02 (Visier spells analytic tenants WFF_{admin}~{code}).
 * Users: the named users of the seed (the ones the seeded permissions are assigned to), and
 * a synthetic population of a thousand users per tenant, "u-000" to "u-999" in WFF_j1a and
 * "c01-u-000" to "c01-u-999", "c02-u-000" to "c02-u-999" in the analytic tenants, each with
 * the username "<id>@example.com". Every other user ID belongs to no tenant. Pure: never
 * allocates, never logs.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "sim-directory.h"

static const struct {
        const char *code;
        const char *user_prefix;        /* synthetic users: prefix + three digits */
} tenant_table[DIRECTORY_TENANTS_N] = {
        { DIRECTORY_ADMIN_TENANT, "u-" },
        { DIRECTORY_ADMIN_TENANT "~c01", "c01-u-" },
        { DIRECTORY_ADMIN_TENANT "~c02", "c02-u-" },
};

static const struct {
        const char *id, *username;
        size_t tenant;
} named_users[] = {
        { "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c1", "alice.nguyen@example.com", 0 },
        { "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c2", "bob.martin@example.com", 0 },
        { "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c3", "carol.singh@example.com", 0 },
        { "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c4", "dan.okafor@example.com", 1 },
        { "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c5", "emma.tremblay@example.com", 0 },
        { "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c6", "farah.haddad@example.com", 0 },
        { "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c7", "gil.roberts@example.com", 2 },
};

int directory_tenant_find(const char *code) {
        for (size_t i = 0; code && i < DIRECTORY_TENANTS_N; i++)
                if (streq(tenant_table[i].code, code))
                        return (int) i;
        return -ENOENT;
}

const char *directory_tenant_code(size_t index) {
        return index < DIRECTORY_TENANTS_N ? tenant_table[index].code : NULL;
}

bool directory_tenant_is_admin(size_t index) {
        return index == 0;
}

bool directory_tenant_reaches(size_t login, size_t target) {
        if (login >= DIRECTORY_TENANTS_N || target >= DIRECTORY_TENANTS_N)
                return false;
        return login == target || directory_tenant_is_admin(login);
}

int directory_user_find(const char *id, DirectoryUser *ret) {
        if (!id)
                return -ENOENT;
        for (size_t i = 0; i < ELEMENTSOF(named_users); i++)
                if (streq(named_users[i].id, id)) {
                        ret->tenant = named_users[i].tenant;
                        snprintf(ret->username, sizeof(ret->username), "%s", named_users[i].username);
                        return 0;
                }
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++) {
                const char *prefix = tenant_table[t].user_prefix;
                size_t n = strlen(prefix);

                if (strncmp(id, prefix, n) != 0 || strlen(id) != n + 3)
                        continue;
                if (id[n] < '0' || id[n] > '9' || id[n + 1] < '0' || id[n + 1] > '9' || id[n + 2] < '0' ||
                    id[n + 2] > '9')
                        continue;
                ret->tenant = t;
                snprintf(ret->username, sizeof(ret->username), "%s@example.com", id);
                return 0;
        }
        return -ENOENT;
}

size_t directory_users_count(size_t tenant) {
        size_t n = DIRECTORY_SYNTHETIC_USERS;

        if (tenant >= DIRECTORY_TENANTS_N)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(named_users); i++)
                n += named_users[i].tenant == tenant;
        return n;
}

int directory_user_at(size_t tenant, size_t index, char *ret_id, size_t id_size, DirectoryUser *ret) {
        if (tenant >= DIRECTORY_TENANTS_N)
                return -ENOENT;
        for (size_t i = 0; i < ELEMENTSOF(named_users); i++) {
                if (named_users[i].tenant != tenant)
                        continue;
                if (index-- == 0) {
                        snprintf(ret_id, id_size, "%s", named_users[i].id);
                        return directory_user_find(named_users[i].id, ret);
                }
        }
        if (index >= DIRECTORY_SYNTHETIC_USERS)
                return -ENOENT;
        snprintf(ret_id, id_size, "%s%03zu", tenant_table[tenant].user_prefix, index);
        return directory_user_find(ret_id, ret);
}
