/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The job store: one SQLite database in WAL mode, its schema versioned with
 * PRAGMA user_version and migrated forward at open. Owns every SQL statement in visierd.
 * Never logs; errors come back as negative errno with a message.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define STORE_SCHEMA_VERSION 1
#define STORE_BUSY_TIMEOUT_MS 5000

typedef struct Store Store;

/* Open (creating if needed) the database at path; -EPROTO if its schema is newer than ours. */
int store_open(const char *path, Store **ret, char *err, size_t errlen);
Store *store_close(Store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_close);

/* Is the database usable right now (a cheap read)? */
bool store_ok(Store *s);
int store_schema_version(Store *s);
const char *store_path(Store *s);
