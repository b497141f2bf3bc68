/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the simulated organization's user groups, and answers for its users. Never logs.
 *
 * DESIGN. Users come from the directory (constant: named users, then a thousand synthetic ones
 * per tenant). A user group is a JSON object {userGroupId, displayName, description,
 * permissionIds:[...], userIds:[...]} (userIds: the users manually included; the simulator has
 * no dynamic filters). Each scope holds its groups as a JSON array in creation order: one per
 * tenant for production, and one per open draft project, made as a deep copy of production
 * at the project's first group write (reads of a project without a copy see production, which
 * is what a copy would hold). Writes in a draft mark the groups they change; when the project
 * is published, each marked group replaces production's (later production changes to other
 * groups survive); when it is deleted the copy is dropped. Everything sits behind one mutex.
 * An answer is written out after the lock is let go, so it never holds one of the store's
 * containers (objects, arrays), only new ones; it may share the store's strings, which jansson
 * never changes in place and counts atomically.
 *
 * Groups are seeded in the administrating tenant (HR Analysts, Recruiting) and in WFF_j1a~c02
 * (Analytic recruiters), with the seeded permissions' group-given users as members. Visier's
 * permission answers ("permissionFrom": "UserGroup") come from the permissions module's own
 * seed and do not follow later group changes.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "parse.h"
#include "sim-directory.h"
#include "sim-permissions.h"
#include "sim-users.h"

#define PROJECT_ID_MAX 37
#define DRAFTS_MAX PERMISSIONS_PROJECTS_MAX
#define MESSAGE_MAX 256

#define _cleanup_json_ _cleanup_(json_decrefp)

/* An open draft project: its own groups once a write changed them (NULL until then). */
typedef struct Draft {
        size_t tenant;
        char project[PROJECT_ID_MAX];
        json_t *groups;
        json_t *touched;        /* object: the IDs of the groups changed in the draft */
} Draft;

struct Users {
        pthread_mutex_t lock;
        json_t *production[DIRECTORY_TENANTS_N];
        Draft drafts[DRAFTS_MAX];
        size_t n_drafts;
};

static json_t *seed_group(const char *id, const char *name, const char *description, json_t *permission_ids,
                          json_t *user_ids) {
        return json_pack("{s:s, s:s, s:s, s:o, s:o}", "userGroupId", id, "displayName", name, "description",
                         description, "permissionIds", permission_ids, "userIds", user_ids);
}

static int seed(Users *u) {
        static const char bob[] = "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c2", carol[] = "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c3",
                          gil[] = "9b2f3c1d-0a4e-4b5c-8d6e-7f8091a2b3c7";
        int r = 0;

        r |= json_array_append_new(u->production[0],
                                   seed_group("5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a51", "HR Analysts",
                                              "Everyone who analyses the whole workforce.",
                                              json_pack("[s]", "3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71"),
                                              json_pack("[s, s]", bob, carol)));
        r |= json_array_append_new(u->production[0],
                                   seed_group("5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a52", "Recruiting",
                                              "Recruiters and hiring coordinators.",
                                              json_pack("[s]", "c25d8f3a-6e1b-4a7c-9d0e-5f4a3b2c1d93"),
                                              json_pack("[s]", bob)));
        r |= json_array_append_new(u->production[2],
                                   seed_group("5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a53", "Analytic recruiters",
                                              "Recruiters of the analytic tenant.", json_array(),
                                              json_pack("[s]", gil)));
        return r < 0 ? -ENOMEM : 0;
}

int users_new(Users **ret) {
        Users *u = calloc(1, sizeof(*u));
        int r = 0;

        if (!u)
                return -ENOMEM;
        pthread_mutex_init(&u->lock, NULL);
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                if (!(u->production[t] = json_array()))
                        r = -ENOMEM;
        if (r >= 0)
                r = seed(u);
        if (r < 0) {
                users_free(u);
                return r;
        }
        *ret = u;
        return 0;
}

Users *users_free(Users *u) {
        if (!u)
                return NULL;
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                json_decref(u->production[t]);
        for (size_t i = 0; i < u->n_drafts; i++) {
                json_decref(u->drafts[i].groups);
                json_decref(u->drafts[i].touched);
        }
        pthread_mutex_destroy(&u->lock);
        free(u);
        return NULL;
}

/* ---- scopes ---------------------------------------------------------------------------- */

static Draft *draft_find_locked(Users *u, size_t tenant, const char *project) {
        for (size_t i = 0; project && i < u->n_drafts; i++)
                if (u->drafts[i].tenant == tenant && strcasecmp(u->drafts[i].project, project) == 0)
                        return &u->drafts[i];
        return NULL;
}

/* The groups of SC; for a write (WRITE), the project's own copy, made on first use. NULL with
 * -EINVAL (no such tenant), -ESTALE (the project was published or deleted meanwhile) or -ENOMEM
 * in *ret_error, which is untouched otherwise. Lock held. */
static json_t *scope_groups_locked(Users *u, const UsersScope *sc, bool write, int *ret_error) {
        Draft *d;

        if (sc->tenant >= DIRECTORY_TENANTS_N) {
                *ret_error = -EINVAL;
                return NULL;
        }
        if (!sc->project)
                return u->production[sc->tenant];
        d = draft_find_locked(u, sc->tenant, sc->project);
        if (!d) {
                *ret_error = -ESTALE;
                return NULL;
        }
        if (d->groups)
                return d->groups;
        if (!write)
                return u->production[sc->tenant];
        d->groups = json_deep_copy(u->production[sc->tenant]);
        d->touched = json_object();
        if (!d->groups || !d->touched) {
                json_decref(d->groups);
                json_decref(d->touched);
                d->groups = d->touched = NULL;
                *ret_error = -ENOMEM;
                return NULL;
        }
        return d->groups;
}

int users_project_opened(Users *u, size_t tenant, const char *project) {
        int r = 0;

        pthread_mutex_lock(&u->lock);
        if (draft_find_locked(u, tenant, project))
                r = 0;
        else if (u->n_drafts >= DRAFTS_MAX || strlen(project) >= PROJECT_ID_MAX)
                r = -ENOSPC;
        else {
                u->drafts[u->n_drafts] = (Draft) { .tenant = tenant };
                snprintf(u->drafts[u->n_drafts].project, PROJECT_ID_MAX, "%s", project);
                u->n_drafts++;
        }
        pthread_mutex_unlock(&u->lock);
        return r;
}

/* Visier's displayNameFilter: '*' any run of characters, '?' one character (one UTF-8
 * sequence), anything else itself; case-sensitive. */
static bool glob_match(const char *pat, const char *s) {
        const char *star = NULL, *resume = NULL;

        while (*s) {
                if (*pat == '*') {
                        star = pat++;
                        resume = s;
                } else if (*pat == '?' || *pat == *s) {
                        if (*pat++ == '?')
                                while (((unsigned char) s[1] & 0xC0) == 0x80)
                                        s++;
                        s++;
                } else if (star) {
                        pat = star + 1;
                        do
                                resume++;
                        while (((unsigned char) *resume & 0xC0) == 0x80);
                        s = resume;
                } else
                        return false;
        }
        while (*pat == '*')
                pat++;
        return *pat == '\0';
}

static json_t *group_find(json_t *groups, const char *id) {
        size_t i;
        json_t *g;

        json_array_foreach(groups, i, g)
                if (id && strcasecmp(json_string_value(json_object_get(g, "userGroupId")), id) == 0)
                        return g;
        return NULL;
}

static bool strings_have(json_t *array, const char *s) {
        size_t i;
        json_t *v;

        json_array_foreach(array, i, v)
                if (streq(json_string_value(v), s))
                        return true;
        return false;
}

/* Add S to ARRAY (ASSIGN, if absent) or remove it (if present); true if ARRAY changed. */
static int strings_toggle(json_t *array, const char *s, bool assign, size_t max) {
        size_t i;
        json_t *v;

        json_array_foreach(array, i, v)
                if (streq(json_string_value(v), s)) {
                        if (assign)
                                return 0;
                        return json_array_remove(array, i) < 0 ? -ENOMEM : 1;
                }
        if (!assign)
                return 0;
        if (json_array_size(array) >= max)
                return -ENOSPC;
        return json_array_append_new(array, json_string(s)) < 0 ? -ENOMEM : 1;
}

/* A write in SC changed group G: marked for the publish of SC's project. Lock held. */
static int mark_touched_locked(Users *u, const UsersScope *sc, json_t *g) {
        Draft *d = draft_find_locked(u, sc->tenant, sc->project);

        if (!d)
                return 0;
        return json_object_set_new(d->touched, json_string_value(json_object_get(g, "userGroupId")), json_true()) < 0
                       ? -ENOMEM
                       : 0;
}

/* ---- users ----------------------------------------------------------------------------- */

/* servicing.UserGetAPIResponseDTO of user ID (its directory entry D) in GROUPS. */
static json_t *user_dto(const char *id, const DirectoryUser *d, json_t *groups, bool with_groups, bool profiles) {
        _cleanup_json_ json_t *dto = json_pack("{s:s, s:s, s:s, s:b, s:s}", "userId", id, "username", d->username,
                                               "displayName", d->username, "accountEnabled", 1, "email", d->username);
        size_t i;
        json_t *g;

        if (!dto)
                return NULL;
        if (with_groups) {
                json_t *assigned = json_array();

                if (json_object_set_new(dto, "userGroups", json_pack("{s:o}", "assignedUserGroups", assigned)) < 0)
                        return NULL;
                json_array_foreach(groups, i, g)
                        if (strings_have(json_object_get(g, "userIds"), id) &&
                            json_array_append_new(assigned,
                                                  json_pack("{s:O, s:O}", "userGroupId", json_object_get(g, "userGroupId"),
                                                            "displayName", json_object_get(g, "displayName"))) < 0)
                                return NULL;
        }
        /* No user has profiles here, and Visier leaves "profiles" out for a user without any. */
        (void) profiles;
        return TAKE_PTR(dto);
}

int users_list(Users *u, const UsersScope *sc, int64_t start, int64_t limit, bool groups, bool profiles,
               json_t **ret) {
        _cleanup_json_ json_t *list = json_array();
        size_t n = directory_users_count(sc->tenant);
        json_t *gs;
        int r = 0;

        if (!list)
                return -ENOMEM;
        pthread_mutex_lock(&u->lock);
        gs = scope_groups_locked(u, sc, false, &r);
        for (size_t k = (size_t) start; gs && k < n && (int64_t) (k - (size_t) start) < limit; k++) {
                char id[DIRECTORY_USER_ID_MAX];
                DirectoryUser d;

                if (directory_user_at(sc->tenant, k, id, sizeof(id), &d) < 0)
                        break;
                if (json_array_append_new(list, user_dto(id, &d, gs, groups, profiles)) < 0) {
                        gs = NULL;
                        r = -ENOMEM;
                }
        }
        pthread_mutex_unlock(&u->lock);
        if (!gs)
                return r;
        *ret = json_pack("{s:O, s:I, s:I}", "users", list, "limit", (json_int_t) limit, "start", (json_int_t) start);
        return *ret ? 0 : -ENOMEM;
}

int users_get(Users *u, const UsersScope *sc, const char *id, bool groups, bool profiles, json_t **ret) {
        DirectoryUser d;
        json_t *gs, *dto = NULL;
        int r = 0;

        if (directory_user_find(id, &d) < 0 || d.tenant != sc->tenant)
                return -ENOENT;
        pthread_mutex_lock(&u->lock);
        gs = scope_groups_locked(u, sc, false, &r);
        if (gs && !(dto = user_dto(id, &d, gs, groups, profiles)))
                r = -ENOMEM;
        pthread_mutex_unlock(&u->lock);
        if (!dto)
                return r;
        *ret = dto;
        return 0;
}

/* ---- user groups: reads ---------------------------------------------------------------- */

int users_groups_v1(Users *u, const UsersScope *sc, int64_t start, int64_t limit, json_t **ret) {
        _cleanup_json_ json_t *list = json_array();
        json_t *gs, *g;
        int r = 0;

        if (!list)
                return -ENOMEM;
        pthread_mutex_lock(&u->lock);
        gs = scope_groups_locked(u, sc, false, &r);
        for (size_t k = (size_t) start; gs && k < json_array_size(gs) && (int64_t) (k - (size_t) start) < limit; k++) {
                json_t *perms = json_array(), *id;
                size_t i;

                g = json_array_get(gs, k);
                json_array_foreach(json_object_get(g, "permissionIds"), i, id)
                        if (json_array_append_new(perms, json_pack("{s:O}", "permissionId", id)) < 0)
                                r = -ENOMEM;
                if (json_array_append_new(list, json_pack("{s:O, s:O, s:o}", "userGroupId",
                                                          json_object_get(g, "userGroupId"), "displayName",
                                                          json_object_get(g, "displayName"), "permissions", perms)) < 0)
                        r = -ENOMEM;
                if (r < 0)
                        gs = NULL;
        }
        pthread_mutex_unlock(&u->lock);
        if (!gs)
                return r;
        *ret = json_pack("{s:O, s:I, s:I}", "userGroups", list, "limit", (json_int_t) limit, "start", (json_int_t) start);
        return *ret ? 0 : -ENOMEM;
}

/* admin.UserGroupChangeDefinitionDTO of G. */
static json_t *group_v2(json_t *g, const UsersScope *sc, bool permissions, bool users) {
        _cleanup_json_ json_t *dto = json_pack("{s:O, s:O, s:O, s:s}", "userGroupId", json_object_get(g, "userGroupId"),
                                               "displayName", json_object_get(g, "displayName"), "description",
                                               json_object_get(g, "description"), "tenantCode",
                                               directory_tenant_code(sc->tenant));

        if (!dto)
                return NULL;
        if (sc->project && json_object_set_new(dto, "projectId", json_string(sc->project)) < 0)
                return NULL;
        /* Copies: the store's arrays change under the lock after it is let go. */
        if (permissions && json_object_set_new(dto, "permissionIds",
                                               json_pack("{s:o}", "ids",
                                                         json_deep_copy(json_object_get(g, "permissionIds")))) < 0)
                return NULL;
        if (users && json_object_set_new(dto, "users",
                                         json_pack("{s:b, s:{s:o}}", "includeAllUsers", 0, "manuallyIncludedIds", "ids",
                                                   json_deep_copy(json_object_get(g, "userIds")))) < 0)
                return NULL;
        return TAKE_PTR(dto);
}

int users_groups_v2(Users *u, const UsersScope *sc, const char *id, bool permissions, bool users, const char *glob,
                    int64_t start, int64_t limit, json_t **ret) {
        _cleanup_json_ json_t *list = json_array();
        json_t *gs, *g, *one = NULL;
        int r = 0;
        size_t i, skipped = 0;

        if (!list)
                return -ENOMEM;
        pthread_mutex_lock(&u->lock);
        gs = scope_groups_locked(u, sc, false, &r);
        if (gs && id) {
                g = group_find(gs, id);
                r = !g ? -ENOENT : !(one = group_v2(g, sc, permissions, users)) ? -ENOMEM : 0;
        } else if (gs)
                json_array_foreach(gs, i, g) {
                        if (glob && !glob_match(glob, json_string_value(json_object_get(g, "displayName"))))
                                continue;
                        if (skipped++ < (size_t) start)
                                continue;
                        if ((int64_t) json_array_size(list) >= limit)
                                break;
                        if (json_array_append_new(list, group_v2(g, sc, permissions, users)) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                }
        pthread_mutex_unlock(&u->lock);
        if (!gs || r < 0)
                return r;
        *ret = id ? one : json_pack("{s:O}", "userGroups", list);
        return *ret ? 0 : -ENOMEM;
}

int users_group_users(Users *u, const UsersScope *sc, const char *id, int64_t start, int64_t limit, json_t **ret) {
        _cleanup_json_ json_t *list = json_array(), *tenants = json_array();
        json_t *gs, *g = NULL, *uid;
        size_t k;
        int r = 0;

        if (!list || !tenants)
                return -ENOMEM;
        pthread_mutex_lock(&u->lock);
        gs = scope_groups_locked(u, sc, false, &r);
        if (gs && !(g = group_find(gs, id)))
                r = -ENOENT;
        json_array_foreach(g ? json_object_get(g, "userIds") : NULL, k, uid) {
                DirectoryUser d;

                if (directory_user_find(json_string_value(uid), &d) < 0)
                        continue;
                if (json_array_append_new(list, json_pack("{s:O, s:s}", "userId", uid, "username", d.username)) < 0) {
                        r = -ENOMEM;
                        break;
                }
        }
        pthread_mutex_unlock(&u->lock);
        if (!g || r < 0)
                return r;
        /* start and limit page the tenants (Visier: at most 100 a page); a group's users are all
         * of its own tenant, so there is one. */
        if (start == 0 && limit > 0 &&
            json_array_append_new(tenants, json_pack("{s:s, s:O}", "tenantCode", directory_tenant_code(sc->tenant),
                                                     "users", list)) < 0)
                return -ENOMEM;
        *ret = json_pack("{s:O, s:I, s:I}", "tenants", tenants, "limit", (json_int_t) limit, "start", (json_int_t) start);
        return *ret ? 0 : -ENOMEM;
}

/* ---- user groups: writes --------------------------------------------------------------- */

/* One failed change: counted, and the first one's message kept. */
static void failure(size_t *n_failed, char *first, const char *kind, const char *what, const char *problem) {
        if ((*n_failed)++ == 0)
                snprintf(first, MESSAGE_MAX, "%s %.*s %s", kind, utf8_prefix(what, 96), what, problem);
}

/* The status and message of a call with N changes of which N_FAILED failed, onto O. */
static int outcome(json_t *o, size_t n, size_t n_failed, const char *first) {
        char msg[MESSAGE_MAX + 64];

        if (json_object_set_new(o, "status", json_string(n_failed > 0 && n_failed == n ? "Failed" : "Succeed")) < 0)
                return -ENOMEM;
        if (n_failed == 0)
                return 0;
        snprintf(msg, sizeof(msg), "%zu of %zu changes failed; first: %s", n_failed, n, first);
        return json_object_set_new(o, "message", json_string(msg)) < 0 ? -ENOMEM : 0;
}

int users_assign_users(Users *u, const UsersScope *sc, json_t *items, bool assign, json_t **ret, bool *ret_changed) {
        _cleanup_json_ json_t *tenant = json_pack("{s:s, s:[]}", "tenantCode", directory_tenant_code(sc->tenant),
                                                  "assignments");
        char first[MESSAGE_MAX] = "";
        size_t i, k, n = 0, n_failed = 0;
        bool changed = false;
        json_t *gs, *item, *uid;
        int r = 0;

        if (!tenant)
                return -ENOMEM;
        pthread_mutex_lock(&u->lock);
        gs = scope_groups_locked(u, sc, true, &r);
        json_array_foreach(gs ? items : NULL, i, item) {
                const char *gid = json_string_value(json_object_get(item, "userGroupId"));
                json_t *g = group_find(gs, gid), *users, *userIds = json_object_get(item, "userIds");

                if (!g) {
                        size_t m = json_array_size(userIds) ?: 1;

                        n += m;
                        for (k = 0; k < m; k++)
                                failure(&n_failed, first, "user group", gid ? gid : "(none)", "not found");
                        continue;
                }
                users = json_array();
                if (json_array_append_new(json_object_get(tenant, "assignments"),
                                          json_pack("{s:O, s:O, s:o}", "id", json_object_get(g, "userGroupId"), "name",
                                                    json_object_get(g, "displayName"), "users", users)) < 0) {
                        r = -ENOMEM;
                        break;
                }
                json_array_foreach(userIds, k, uid) {
                        const char *id = json_string_value(uid);
                        DirectoryUser d;
                        int c;

                        n++;
                        if (!id || directory_user_find(id, &d) < 0 || d.tenant != sc->tenant) {
                                failure(&n_failed, first, "user", id ? id : "(none)", "not found");
                                continue;
                        }
                        c = strings_toggle(json_object_get(g, "userIds"), id, assign, USERS_GROUP_USERS_MAX);
                        if (c == -ENOSPC) {
                                failure(&n_failed, first, "user group", gid, "is full");
                                continue;
                        }
                        if (c > 0 && mark_touched_locked(u, sc, g) < 0)
                                c = -ENOMEM;
                        if (c < 0 || json_array_append_new(users, json_pack("{s:s, s:s}", "userId", id, "username",
                                                                            d.username)) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                        changed |= c > 0;
                }
                if (r < 0)
                        break;
        }
        pthread_mutex_unlock(&u->lock);
        if (!gs || r < 0)
                return r;
        if (sc->project && json_object_set_new(tenant, "projectId", json_string(sc->project)) < 0)
                return -ENOMEM;
        if (outcome(tenant, n, n_failed, first) < 0)
                return -ENOMEM;
        *ret = json_pack("{s:[O]}", "tenants", tenant);
        if (!*ret)
                return -ENOMEM;
        *ret_changed = changed;
        return 0;
}

int users_assign_permissions(Users *u, const UsersScope *sc, json_t *items, bool assign, json_t *known,
                             json_t **ret, bool *ret_changed) {
        _cleanup_json_ json_t *answer = json_pack("{s:s, s:[]}", "tenantCode", directory_tenant_code(sc->tenant),
                                                  "userGroups");
        _cleanup_json_ json_t *touched = json_array();
        char first[MESSAGE_MAX] = "";
        size_t i, k, n = 0, n_failed = 0;
        bool changed = false;
        json_t *gs, *item, *pid, *g;
        int r = 0;

        if (!answer || !touched)
                return -ENOMEM;
        pthread_mutex_lock(&u->lock);
        gs = scope_groups_locked(u, sc, true, &r);
        json_array_foreach(gs ? items : NULL, i, item) {
                const char *gid = json_string_value(json_object_get(item, "userGroupId"));
                json_t *ids = json_object_get(item, "permissionsIds");

                g = group_find(gs, gid);
                if (!g) {
                        size_t m = json_array_size(ids) ?: 1;

                        n += m;
                        for (k = 0; k < m; k++)
                                failure(&n_failed, first, "user group", gid ? gid : "(none)", "not found");
                        continue;
                }
                if (!strings_have(touched, json_string_value(json_object_get(g, "userGroupId"))) &&
                    json_array_append(touched, json_object_get(g, "userGroupId")) < 0) {
                        r = -ENOMEM;
                        break;
                }
                json_array_foreach(ids, k, pid) {
                        const char *id = json_string_value(pid);
                        int c;

                        n++;
                        if (!id || !json_object_get(known, id)) {
                                failure(&n_failed, first, "permission", id ? id : "(none)", "not found");
                                continue;
                        }
                        c = strings_toggle(json_object_get(g, "permissionIds"), id, assign, USERS_GROUP_USERS_MAX);
                        if (c > 0 && mark_touched_locked(u, sc, g) < 0)
                                c = -ENOMEM;
                        if (c < 0) {
                                r = c;
                                break;
                        }
                        changed |= c > 0;
                }
                if (r < 0)
                        break;
        }
        /* Each group named, once, with the permissions it holds now. */
        json_array_foreach(r >= 0 && gs ? touched : NULL, i, pid) {
                json_t *perms = json_array(), *p;

                g = group_find(gs, json_string_value(pid));
                json_array_foreach(json_object_get(g, "permissionIds"), k, p)
                        if (json_array_append_new(perms, json_pack("{s:O, s:O}", "permissionId", p, "displayName",
                                                                   json_object_get(known, json_string_value(p)) ?:
                                                                           p)) < 0)
                                r = -ENOMEM;
                if (json_array_append_new(json_object_get(answer, "userGroups"),
                                          json_pack("{s:O, s:O, s:o}", "userGroupId", pid, "displayName",
                                                    json_object_get(g, "displayName"), "permissions", perms)) < 0)
                        r = -ENOMEM;
        }
        pthread_mutex_unlock(&u->lock);
        if (!gs || r < 0)
                return r;
        if (outcome(answer, n, n_failed, first) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(answer);
        *ret_changed = changed;
        return 0;
}

void users_project_closed(Users *u, size_t tenant, const char *project, bool published) {
        const char *id;
        json_t *v;
        Draft *d;

        pthread_mutex_lock(&u->lock);
        d = draft_find_locked(u, tenant, project);
        if (d) {
                json_object_foreach(published && d->touched ? d->touched : NULL, id, v) {
                        json_t *g = group_find(d->groups, id), *prod = u->production[tenant];
                        size_t i;
                        json_t *p;

                        json_array_foreach(prod, i, p)
                                if (streq(json_string_value(json_object_get(p, "userGroupId")), id))
                                        break;
                        if (!g)
                                continue;
                        if (i < json_array_size(prod))
                                (void) json_array_set(prod, i, g);
                        else
                                (void) json_array_append(prod, g);
                }
                json_decref(d->groups);
                json_decref(d->touched);
                *d = u->drafts[--u->n_drafts];
        }
        pthread_mutex_unlock(&u->lock);
}
