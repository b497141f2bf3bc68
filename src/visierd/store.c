/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Job store (see store.h).
 *
 * DESIGN: the schema is a list of migrations; migration N takes user_version from N-1 to N
 * inside one transaction, so a crash mid-migration leaves the old version intact. WAL with
 * synchronous=FULL: a committed write survives power loss, which the write path relies on
 * before it answers 202. journal_size_limit keeps the WAL file from staying large.
 */
#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

struct Store {
        pthread_mutex_t lock;
        sqlite3 *db;
        char *path;
};

static const char *const migrations[] = {
        /* 1: the job table the write path fills. */
        "CREATE TABLE jobs ("
        "  id INTEGER PRIMARY KEY,"
        "  state TEXT NOT NULL,"
        "  operation TEXT NOT NULL,"
        "  tenant TEXT,"
        "  project TEXT,"
        "  client TEXT,"
        "  request_headers TEXT,"
        "  request_body BLOB,"
        "  attempts INTEGER NOT NULL DEFAULT 0,"
        "  next_run_at INTEGER,"
        "  created_at INTEGER NOT NULL,"
        "  updated_at INTEGER NOT NULL,"
        "  finished_at INTEGER,"
        "  upstream_status INTEGER,"
        "  result TEXT,"
        "  error TEXT"
        ");"
        "CREATE INDEX jobs_state ON jobs(state, id);",
};

static int sqlite_to_errno(int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK:
                return 0;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_READONLY:
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        default:
                return -EIO;
        }
}

static int exec(Store *s, const char *sql, char *err, size_t errlen) {
        char *msg = NULL;
        int rc;

        rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
                snprintf(err, errlen, "%s: %s", s->path, msg ? msg : sqlite3_errstr(rc));
                sqlite3_free(msg);
                return sqlite_to_errno(rc);
        }
        return 0;
}

static int read_int(Store *s, const char *sql, int *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        *ret = sqlite3_column_int(st, 0);
                        rc = SQLITE_OK;
                }
        }
        sqlite3_finalize(st);
        return sqlite_to_errno(rc);
}

static int migrate(Store *s, char *err, size_t errlen) {
        int version = 0, r;

        r = read_int(s, "PRAGMA user_version", &version);
        if (r < 0) {
                snprintf(err, errlen, "%s: cannot read the schema version: %s", s->path, sqlite3_errmsg(s->db));
                return r;
        }
        if (version > (int) ELEMENTSOF(migrations)) {
                snprintf(err, errlen, "%s: database schema version %d is newer than this visierd supports (%d)",
                         s->path, version, (int) ELEMENTSOF(migrations));
                return -EPROTO;
        }
        for (int v = version; v < (int) ELEMENTSOF(migrations); v++) {
                char bump[64];

                r = exec(s, "BEGIN IMMEDIATE", err, errlen);
                if (r < 0)
                        return r;
                snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", v + 1);
                r = exec(s, migrations[v], err, errlen);
                if (r >= 0)
                        r = exec(s, bump, err, errlen);
                if (r >= 0)
                        r = exec(s, "COMMIT", err, errlen);
                if (r < 0) {
                        char ignored[16];
                        exec(s, "ROLLBACK", ignored, sizeof(ignored));
                        return r;
                }
        }
        return 0;
}

int store_open(const char *path, Store **ret, char *err, size_t errlen) {
        _cleanup_(store_closep) Store *s = NULL;
        int rc, r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        s->path = strdup(path);
        if (!s->path)
                return -ENOMEM;
        rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
        if (rc != SQLITE_OK) {
                snprintf(err, errlen, "cannot open job database %s: %s", path,
                         s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
                return sqlite_to_errno(rc);
        }
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
        r = exec(s,
                 "PRAGMA journal_mode = WAL;"
                 "PRAGMA synchronous = FULL;"
                 "PRAGMA foreign_keys = ON;"
                 "PRAGMA journal_size_limit = 67108864;",
                 err, errlen);
        if (r < 0)
                return r;
        r = migrate(s, err, errlen);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;
        if (s->db)
                sqlite3_close_v2(s->db);
        pthread_mutex_destroy(&s->lock);
        free(s->path);
        free(s);
        return NULL;
}

bool store_ok(Store *s) {
        int v = 0;
        bool ok;

        pthread_mutex_lock(&s->lock);
        ok = read_int(s, "SELECT count(*) FROM sqlite_master", &v) == 0;
        pthread_mutex_unlock(&s->lock);
        return ok;
}

int store_schema_version(Store *s) {
        int v = -1;

        pthread_mutex_lock(&s->lock);
        if (read_int(s, "PRAGMA user_version", &v) < 0)
                v = -1;
        pthread_mutex_unlock(&s->lock);
        return v;
}

const char *store_path(Store *s) {
        return s->path;
}
