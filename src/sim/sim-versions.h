/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated tenants' production versions (one per publishing call, and one per published
 * draft project) and the commits of each open draft project (one per write applied in it).
 * Answers are new JSON values in Visier's shapes (servicing.GetProductionVersionsAPIResponseDTO,
 * servicing.ProjectCommitsAPIResponseDTO). Thread-safe; never logs.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Most production versions kept per tenant (the oldest are forgotten past it), and most
 * commits kept per project. */
#define VERSIONS_MAX 10000
#define VERSIONS_COMMITS_MAX 10000
/* The default page of both lists, as Visier's definitions give it. */
#define VERSIONS_LIMIT_DEFAULT 400

typedef struct Versions Versions;

int versions_new(Versions **ret);
Versions *versions_free(Versions *v);

/*
 * A new production version of TENANT. ID is the published project's ID, or NULL for a
 * publishing API call (a fresh ID is made); NAME and DESCRIPTION as the version shows them.
 * The version number is one more than the tenant's last. -ENOMEM.
 */
int versions_publish(Versions *v, size_t tenant, const char *id, const char *name, const char *description);

/* GET /v1/admin/production-versions: the tenant's versions, latest first, from START, at most
 * LIMIT. */
int versions_list(Versions *v, size_t tenant, int64_t start, int64_t limit, json_t **ret);

/* A draft project was created: commits may be recorded in it until it is closed. */
int versions_project_opened(Versions *v, size_t tenant, const char *project);

/* A commit in open project PROJECT of TENANT, named NAME (what the write did). -ESTALE when the
 * project is not open (published or deleted meanwhile), -ENOMEM. */
int versions_commit(Versions *v, size_t tenant, const char *project, const char *name);

/* GET /v1/admin/projects/{id}/commits: the project's commits in order, from START, at most LIMIT.
 * A project without commits answers an empty list (the caller checks that it is open). */
int versions_commits(Versions *v, size_t tenant, const char *project, int64_t start, int64_t limit, json_t **ret);

/* The project was published or deleted: its commits are gone. */
void versions_project_closed(Versions *v, size_t tenant, const char *project);
