/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The job store's schema on PostgreSQL (fleet mode): its migrations, and the function that
 * applies them. The tables, columns and their meanings are SQLite's (store.c), so the store's
 * SQL runs on both; only the version sequence is PostgreSQL's own (1: all of SQLite's 7).
 */
#pragma once

#include <stddef.h>

#include "db.h"

/* Migration N (from 1) is store_pg_migrations[N - 1]: one or more statements, no parameters. */
extern const char *const store_pg_migrations[];
extern const size_t store_pg_migrations_count;

/*
 * Take the store's tables to the newest version, one transaction per migration, each under a
 * transaction-scoped advisory lock so nodes starting at once migrate one after the other. The
 * version is the one row of store_schema. *ret_version (if not NULL): the version reached.
 * -EPROTO (the database untouched) if it is newer than this program's; -EINVAL if db is not
 * PostgreSQL or is inside a transaction; else db.h's errors, with err saying which step failed.
 */
int store_pg_migrate(Db *db, int *ret_version, char *err, size_t errlen);
