/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the record of what each simulated tenant published, and of what each draft project
 * holds before it is published. A production version is servicing.ProjectDTO-shaped:
 * {id, name, description, versionNumber, projectType:"Standard"}; a commit is
 * servicing.CommitDTO-shaped: {id, name, description}. Both lists are JSON arrays behind one
 * mutex, versions per tenant and commits in an object keyed by "tenant/projectid" (lower case),
 * which holds exactly the open projects: a commit to a project no longer open is refused. New IDs
 * come from a deterministic generator (a run's IDs are the same every time), formatted as
 * UUIDs of their own range.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "sim-directory.h"
#include "sim-versions.h"

struct Versions {
        pthread_mutex_t lock;
        json_t *published[DIRECTORY_TENANTS_N];        /* arrays of ProjectDTO, oldest first */
        json_int_t last_number[DIRECTORY_TENANTS_N];
        json_t *commits;                                /* object: "tenant/project" -> array of CommitDTO */
        uint64_t next_id;
};

int versions_new(Versions **ret) {
        Versions *v = calloc(1, sizeof(*v));

        if (!v)
                return -ENOMEM;
        pthread_mutex_init(&v->lock, NULL);
        v->commits = json_object();
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                v->published[t] = json_array();
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                if (!v->published[t] || !v->commits) {
                        versions_free(v);
                        return -ENOMEM;
                }
        *ret = v;
        return 0;
}

Versions *versions_free(Versions *v) {
        if (!v)
                return NULL;
        for (size_t t = 0; t < DIRECTORY_TENANTS_N; t++)
                json_decref(v->published[t]);
        json_decref(v->commits);
        pthread_mutex_destroy(&v->lock);
        free(v);
        return NULL;
}

/* A fresh ID of this module's range. Lock held. */
static void id_next_locked(Versions *v, char buf[static 37]) {
        uint64_t n = ++v->next_id;

        snprintf(buf, 37, "e1f0c0de-%04" PRIx64 "-4000-8000-%012" PRIx64, (n >> 48) & 0xffff, n & UINT64_C(0xffffffffffff));
}

/* A page of ARRAY: from START, at most LIMIT, reversed when LATEST_FIRST; deep copies. */
static json_t *page(json_t *array, int64_t start, int64_t limit, bool latest_first) {
        size_t n = json_array_size(array);
        json_t *out = json_array();

        for (size_t k = (size_t) start; out && k < n && (int64_t) (k - (size_t) start) < limit; k++) {
                json_t *item = json_array_get(array, latest_first ? n - 1 - k : k);

                if (json_array_append_new(out, json_deep_copy(item)) < 0) {
                        json_decref(out);
                        return NULL;
                }
        }
        return out;
}

int versions_publish(Versions *v, size_t tenant, const char *id, const char *name, const char *description) {
        char buf[37];
        json_t *dto;
        int r = 0;

        if (tenant >= DIRECTORY_TENANTS_N)
                return -EINVAL;
        pthread_mutex_lock(&v->lock);
        if (!id) {
                id_next_locked(v, buf);
                id = buf;
        }
        dto = json_pack("{s:s, s:s, s:s, s:I, s:s}", "id", id, "name", name ?: "", "description", description ?: "",
                        "versionNumber", v->last_number[tenant] + 1, "projectType", "Standard");
        if (!dto || json_array_append_new(v->published[tenant], dto) < 0)
                r = -ENOMEM;
        else {
                v->last_number[tenant]++;
                if (json_array_size(v->published[tenant]) > VERSIONS_MAX)
                        (void) json_array_remove(v->published[tenant], 0);
        }
        pthread_mutex_unlock(&v->lock);
        return r;
}

int versions_list(Versions *v, size_t tenant, int64_t start, int64_t limit, json_t **ret) {
        json_t *list;

        if (tenant >= DIRECTORY_TENANTS_N)
                return -EINVAL;
        pthread_mutex_lock(&v->lock);
        list = page(v->published[tenant], start, limit, true);
        pthread_mutex_unlock(&v->lock);
        if (!list)
                return -ENOMEM;
        *ret = json_pack("{s:o}", "publishedVersions", list);
        return *ret ? 0 : -ENOMEM;
}

/* "tenant/project", the project ID in lower case (Visier's IDs are case-insensitive UUIDs). */
static void commits_key(size_t tenant, const char *project, char *buf, size_t size) {
        int n = snprintf(buf, size, "%zu/", tenant);

        for (size_t i = (size_t) n, k = 0; i + 1 < size && project[k]; i++, k++) {
                buf[i] = (char) tolower((unsigned char) project[k]);
                buf[i + 1] = '\0';
        }
}

int versions_project_opened(Versions *v, size_t tenant, const char *project) {
        char key[64];
        int r = 0;

        commits_key(tenant, project, key, sizeof(key));
        pthread_mutex_lock(&v->lock);
        if (!json_object_get(v->commits, key) && json_object_set_new(v->commits, key, json_array()) < 0)
                r = -ENOMEM;
        pthread_mutex_unlock(&v->lock);
        return r;
}

int versions_commit(Versions *v, size_t tenant, const char *project, const char *name) {
        char key[64], id[37];
        json_t *list, *dto;
        int r = 0;

        commits_key(tenant, project, key, sizeof(key));
        pthread_mutex_lock(&v->lock);
        list = json_object_get(v->commits, key);
        if (!list) {
                /* Published or deleted meanwhile: nothing to commit to. */
                pthread_mutex_unlock(&v->lock);
                return -ESTALE;
        }
        id_next_locked(v, id);
        dto = json_pack("{s:s, s:s, s:s}", "id", id, "name", name, "description", "");
        if (!dto || json_array_append_new(list, dto) < 0)
                r = -ENOMEM;
        else if (json_array_size(list) > VERSIONS_COMMITS_MAX)
                (void) json_array_remove(list, 0);
        pthread_mutex_unlock(&v->lock);
        return r;
}

int versions_commits(Versions *v, size_t tenant, const char *project, int64_t start, int64_t limit, json_t **ret) {
        char key[64];
        json_t *list, *all;

        commits_key(tenant, project, key, sizeof(key));
        pthread_mutex_lock(&v->lock);
        all = json_object_get(v->commits, key);
        list = all ? page(all, start, limit, false) : json_array();
        pthread_mutex_unlock(&v->lock);
        if (!list)
                return -ENOMEM;
        *ret = json_pack("{s:o}", "commits", list);
        return *ret ? 0 : -ENOMEM;
}

void versions_project_closed(Versions *v, size_t tenant, const char *project) {
        char key[64];

        commits_key(tenant, project, key, sizeof(key));
        pthread_mutex_lock(&v->lock);
        (void) json_object_del(v->commits, key);
        pthread_mutex_unlock(&v->lock);
}
