/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Job store (see store.h).
 *
 * DESIGN: the schema is a list of migrations; migration N takes user_version from N-1 to N
 * inside one transaction, so a crash mid-migration leaves the old version intact. WAL with
 * synchronous=FULL: a committed write survives power loss, which the write path relies on
 * before it answers 202. journal_size_limit keeps the WAL file from staying large.
 *
 * Two connections. The write connection (behind `lock`) runs every transaction: the store
 * thread's group commits of submissions, the publisher's claims and outcomes, cancel, retry,
 * prune. The read connection (behind `read_lock`, query_only) answers the read functions;
 * in WAL mode it reads the last committed snapshot beside a writer, so a job GET or /status
 * never waits for an fsync. Each connection prepares its hot statements once (stmt_table).
 *
 * Submissions: store_job_submit_async() copies the job into a SubmitWaiter and queues it; the
 * store thread takes the whole queue, writes it in one transaction (one savepoint per job, so
 * a refused job leaves the others in; a failed statement or commit fails the whole group),
 * and then calls each waiter's callback. store_job_submit() is that plus a condvar wait.
 *
 * The database is reached through db.h only (db-sqlite.c; db-pg.c to come). The SQL is written
 * once, in the form both dialects take, except at these points, each marked "DIALECT:" below:
 *   - `dialects[]`: the migrations, how the schema version is read and set (PRAGMA
 *     user_version), each connection's setup (PRAGMA journal_mode, synchronous, foreign_keys,
 *     journal_size_limit; the reader's query_only), the write transaction ("BEGIN IMMEDIATE"),
 *     the WAL checkpoint after a prune or a recovered failure, EXPLAIN QUERY PLAN
 *     (store_query_plans), and whether the database is a local file;
 *   - `stmt_table`'s second column, a statement's text where it differs: the readiness read
 *     (sqlite_master) and the read snapshot ("BEGIN");
 *   - the local file: the flock()ed lock file (take_lock), the file made 0600 and stat()ed in
 *     store_open, and the file checks of store_check/store_ok (check_file).
 */
#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "coalesce.h"
#include "db.h"
#include "lease.h"
#include "store-pg-schema.h"
#include "store.h"

/*
 * Statements prepared once per connection (db_prepare() with persistent) and reset after each
 * use: the hot paths (submission, job reads, lists, counts, prune). Each connection has its own
 * set, used only under that connection's lock.
 */
typedef enum StmtId {
        STMT_SAVEPOINT,
        STMT_RELEASE,
        STMT_ROLLBACK_TO,
        STMT_FIND_IDEMPOTENT,
        STMT_FIND_CORRELATION,
        STMT_INSERT_JOB,
        STMT_INSERT_ITEM,
        STMT_INSERT_CID,
        STMT_JOB_GET,
        STMT_ITEM_RESULTS,
        STMT_LIST_ALL,
        STMT_LIST_STATE,
        STMT_COUNTS,
        STMT_OLDEST_QUEUED,
        STMT_PENDING,
        STMT_JOB_STATE,
        STMT_JOB_RESPONSE,
        STMT_JOB_EXISTS,
        STMT_PRUNE,
        STMT_CHECK,
        STMT_READ_BEGIN,
        STMT_READ_END,
        _STMT_MAX,
} StmtId;

#define JOB_COLUMNS                                                                                          \
        "id, state, operation, tenant, project, non_versioned, tenant_code, client, n_items, attempts, "    \
        "next_run_at, created_at, updated_at, started_at, finished_at, upstream_status, error, "          \
        "response_status, response_body, idempotency_key"

/* DIALECT: a statement whose text differs has it in .pg (NULL: .sql is right for both; the
 * PostgreSQL texts of check and read_begin are to be written with db-pg.c). */
static const struct {
        const char *name; /* for store_query_plans() */
        const char *sql;
        const char *pg;
} stmt_table[_STMT_MAX] = {
        [STMT_SAVEPOINT] = { "savepoint", "SAVEPOINT submit" },
        [STMT_RELEASE] = { "release", "RELEASE submit" },
        [STMT_ROLLBACK_TO] = { "rollback_to", "ROLLBACK TO submit" },
        [STMT_FIND_IDEMPOTENT] = { "find_idempotent",
                                   "SELECT id, operation, request_body, tenant, project, non_versioned, tenant_code, "
                                   "client, upstream_headers, extra FROM jobs WHERE idempotency_key = ?" },
        [STMT_FIND_CORRELATION] = { "find_correlation",
                                    "SELECT j.id FROM client_correlation_ids c JOIN jobs j ON j.id = c.job_id WHERE "
                                    "c.correlation_id = ? AND j.state IN ('queued','running')" },
        [STMT_INSERT_JOB] = { "insert_job",
                              "INSERT INTO jobs (state, operation, tenant, project, non_versioned, tenant_code, client, "
                              "idempotency_key, request_body, extra, n_items, solo, next_run_at, created_at, updated_at, "
                              "upstream_headers) VALUES ('queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                              "RETURNING id" },
        [STMT_INSERT_ITEM] = { "insert_item",
                               "INSERT INTO job_items (job_id, idx, item, correlation_id, conflict_key) VALUES (?, ?, ?, ?, ?)" },
        /* The ID's last job: the row's one other column replaced, as INSERT OR REPLACE did. */
        [STMT_INSERT_CID] = { "insert_cid",
                              "INSERT INTO client_correlation_ids (correlation_id, job_id) VALUES (?, ?) "
                              "ON CONFLICT (correlation_id) DO UPDATE SET job_id = excluded.job_id" },
        [STMT_JOB_GET] = { "job_get", "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?" },
        [STMT_ITEM_RESULTS] = { "item_results",
                                "SELECT idx, state, correlation_id, result, item FROM job_items WHERE job_id = ? ORDER BY idx" },
        /* One statement per shape of the list, so each is an index search: a filter written as
         * "(?1 IS NULL OR state = ?1)" would make SQLite scan the whole table. The first page
         * passes before = INT64_MAX. */
        [STMT_LIST_ALL] = { "list_all", "SELECT " JOB_COLUMNS " FROM jobs WHERE id < ?2 ORDER BY id DESC LIMIT ?3" },
        [STMT_LIST_STATE] = { "list_state",
                              "SELECT " JOB_COLUMNS " FROM jobs WHERE state = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3" },
        /* Maintained by triggers (schema 5): five rows, whatever the size of the job table. */
        /* (On PostgreSQL a state has a row per shard, store-pg-schema.c's migration 3.) */
        [STMT_COUNTS] = { "counts", "SELECT state, n FROM job_counts",
                          "SELECT state, sum(n)::bigint FROM job_counts GROUP BY state" },
        [STMT_OLDEST_QUEUED] = { "oldest_queued", "SELECT min(created_at) FROM jobs WHERE state = 'queued'" },
        [STMT_PENDING] = { "pending", "SELECT coalesce(sum(n), 0) FROM job_counts WHERE state IN ('queued','running')" },
        [STMT_JOB_STATE] = { "job_state", "SELECT state FROM jobs WHERE id = ?" },
        [STMT_JOB_RESPONSE] = { "job_response", "SELECT state, response_status, response_body FROM jobs WHERE id = ?" },
        [STMT_JOB_EXISTS] = { "job_exists", "SELECT 1 FROM jobs WHERE id = ?" },
        /* Run once per final state, each an index search on (state, finished_at). */
        [STMT_PRUNE] = { "prune", "DELETE FROM jobs WHERE state = ?1 AND finished_at < ?2" },
        /* DIALECT: a read of the schema, which SQLite keeps in the file; PostgreSQL: a round
         * trip to the server. */
        [STMT_CHECK] = { "check", "SELECT count(*) FROM sqlite_master", "SELECT 1" },
        /* DIALECT: one snapshot for the statements up to read_end (SQLite: any read transaction
         * in WAL mode; PostgreSQL: REPEATABLE READ, which takes its snapshot at the first read). */
        [STMT_READ_BEGIN] = { "read_begin", "BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" },
        [STMT_READ_END] = { "read_end", "COMMIT" },
};

typedef struct Conn {
        Db *db;
        DbStmt *stmt[_STMT_MAX];
        bool reader; /* the read connection (its setup differs) */
} Conn;

static const char *stmt_sql(const Conn *c, StmtId id) {
        return db_kind(c->db) != DB_SQLITE && stmt_table[id].pg ? stmt_table[id].pg : stmt_table[id].sql;
}

typedef struct Dialect Dialect;

struct Store {
        pthread_mutex_t lock; /* the write connection and everything below up to read_lock */
        Conn w;
        const Dialect *dialect; /* of the write connection's database: fixed at open */
        char *path;         /* SQLite: the file; PostgreSQL: the connection string (no password) */
        char *password;     /* PostgreSQL: kept for reconnecting; NULL: none */
        /* Fleet mode: the publish lane's fence (store_set_fence()), under lock. */
        char *fence_tenant, *fence_node;
        unsigned fence_settle_ms;
        int64_t fence_term;
        /* The open transaction is fenced: its checks run right before its COMMIT (fence_finish()),
         * so the lane's row is locked for the commit only, never for the whole transaction —
         * the holder's own renewals and the other nodes' attempts do not queue behind it. */
        bool tx_fenced;
        enum { LANE_OP_NONE, LANE_OP_OPEN, LANE_OP_END } tx_lane_op;
        int64_t tx_lane_started_ms, tx_lane_deadline_ms;
        usec_t counts_at;   /* when the counts were last read (clock_now()) */
        unsigned max_pending;
        bool in_transaction;
        int tx_error;     /* the first statement that failed in the open transaction (0: none) */
        bool had_error;   /* a transaction failed since the last one that committed */
        bool read_only;   /* the write connection was opened read-only (SQLite decides at open) */
        dev_t dev;        /* the database file opened, to notice it being deleted or replaced */
        ino_t ino;
        bool file_ok;            /* the last file check passed (store_ok) */
        usec_t file_checked_at;  /* when store_ok last checked the file (0: never) */
        int lock_fd;      /* flock() on <database>.lock, held for the store's lifetime */
        int64_t pending;  /* jobs queued or running, as committed */
        int64_t tx_delta; /* change to pending in the open transaction */
        bool tx_touched_final; /* the open transaction changes or removes a final job */
        int schema_version;   /* after the migrations at open: it does not change while open */
        /* The job counts as of the last commit (read on the write connection right after it),
         * so /status and /metrics read memory, not the database. */
        pthread_mutex_t counts_lock;
        int64_t counts[_JOB_STATE_MAX];
        int64_t oldest_queued; /* created_at in ms, or -1: none queued */
        /* The text of final jobs as GET /jobs/{id} shows them (final jobs change only when
         * retried or pruned, and both empty this): one slot per id modulo the size. */
        pthread_mutex_t final_lock;
        uint64_t final_gen;   /* bumped whenever the slots are emptied */
        struct {
                int64_t id;
                char *text;
                size_t len;
        } final[STORE_FINAL_TEXTS];

        pthread_mutex_t read_lock; /* the read connection */
        Conn r;

        /* Submissions waiting for the store thread, which commits all of them in one
         * transaction per round (group commit). */
        pthread_mutex_t group_lock;
        pthread_cond_t group_cond;
        struct SubmitWaiter *group_queue, **group_tail;
        bool stopping;
        bool thread_started;
        pthread_t thread;
        /* PostgreSQL: the group commit's own write connection, in a store of its own (no reader,
         * no thread, no migrations), so that a submission never waits behind the publisher's
         * or the runner's transactions on the write connection; the database serializes what
         * must be (the job counts' rows), as it does between nodes. NULL with SQLite, which
         * has one writer whichever connection asks. */
        Store *submit;
};

/* DIALECT: SQLite's schema, as it was written (a migration that has run is never changed:
 * WITHOUT ROWID, AUTOINCREMENT, the triggers of 5 and their "IS NOT" stay SQLite's). */
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

        /* 2: the write path. Version 1's table was never written to; it is replaced. */
        "DROP TABLE jobs;"
        "CREATE TABLE jobs ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  state TEXT NOT NULL,"
        "  operation TEXT NOT NULL,"
        "  tenant TEXT NOT NULL,"
        "  project TEXT NOT NULL,"
        "  non_versioned TEXT NOT NULL,"
        "  tenant_code TEXT NOT NULL,"
        "  client TEXT,"
        "  idempotency_key TEXT UNIQUE,"
        "  request_body BLOB NOT NULL,"
        "  extra TEXT,"
        "  n_items INTEGER NOT NULL,"
        "  solo INTEGER NOT NULL DEFAULT 0,"
        "  attempts INTEGER NOT NULL DEFAULT 0,"
        "  next_run_at INTEGER NOT NULL,"
        "  created_at INTEGER NOT NULL,"
        "  updated_at INTEGER NOT NULL,"
        "  started_at INTEGER,"
        "  finished_at INTEGER,"
        "  upstream_status INTEGER,"
        "  error TEXT,"
        "  response_status INTEGER,"
        "  response_body TEXT"
        ");"
        "CREATE INDEX jobs_state ON jobs(state, id);"
        "CREATE TABLE job_items ("
        "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        "  idx INTEGER NOT NULL,"
        "  item TEXT NOT NULL,"
        "  correlation_id TEXT,"
        "  conflict_key TEXT,"
        "  state TEXT NOT NULL DEFAULT 'pending',"
        "  result TEXT,"
        "  PRIMARY KEY (job_id, idx)"
        ") WITHOUT ROWID;"
        "CREATE INDEX job_items_conflict ON job_items(conflict_key) WHERE conflict_key IS NOT NULL;",

        /* 3: a job whose call may have landed (an attempt ended in doubt, or a crash cut it
         * short) stays marked, so creates are reconciled and deletes that find nothing count
         * as done — across restarts and manual retries. */
        "ALTER TABLE jobs ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0;",

        /* 4: the write lane: when the last write call was opened and until when it may run,
         * written before the call is sent, so that a restarted visierd waits out a call that a
         * dead process left open at Visier. Correlation IDs are looked up at submission. */
        "CREATE TABLE lane ("
        "  id INTEGER PRIMARY KEY CHECK (id = 1),"
        "  call_started_at INTEGER NOT NULL,"
        "  call_deadline_at INTEGER NOT NULL"
        ");"
        "INSERT INTO lane VALUES (1, 0, 0);"
        /* Correlation IDs that clients chose (visierd's own are random and never collide),
         * with the job that last used each, so a second pending create with one is refused. */
        "CREATE TABLE client_correlation_ids ("
        "  correlation_id TEXT PRIMARY KEY,"
        "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE"
        ") WITHOUT ROWID;"
        "CREATE INDEX client_correlation_ids_job ON client_correlation_ids(job_id);",

        /* 5: costs that stay flat as the job table grows. Jobs per state are counted by
         * triggers on every insert, change of state and delete of a job row, whichever code
         * path makes it (submission, the publisher, cancel, retry, prune, a later
         * migration), starting from the rows already there. The oldest queued job and the
         * prune of old finished jobs become index searches. */
        "CREATE TABLE job_counts ("
        "  state TEXT PRIMARY KEY,"
        "  n INTEGER NOT NULL"
        ") WITHOUT ROWID;"
        "INSERT INTO job_counts (state, n) SELECT state, count(*) FROM jobs GROUP BY state;"
        "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN"
        "  INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)"
        "    ON CONFLICT (state) DO UPDATE SET n = n + 1;"
        "END;"
        "CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs WHEN OLD.state IS NOT NEW.state BEGIN"
        "  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;"
        "  INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)"
        "    ON CONFLICT (state) DO UPDATE SET n = n + 1;"
        "END;"
        "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN"
        "  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;"
        "END;"
        "CREATE INDEX jobs_state_created ON jobs(state, created_at);"
        "CREATE INDEX jobs_state_finished ON jobs(state, finished_at);",
        /* 6: Visier's own write headers beyond the scope (FastMode, SessionBasedPermissions,
         * SessionRepoId), as "Name: value" lines, sent with the job's calls; jobs merge only
         * with jobs that carry the same. */
        "ALTER TABLE jobs ADD COLUMN upstream_headers TEXT NOT NULL DEFAULT '';",
        /* 7: project mode. A round is one draft project the publisher fills with bulk calls
         * and publishes once; its step (opening the draft, filling it, committing it) is
         * written before the step is taken, so a restart knows what the dead process may have
         * left at Visier. Its jobs are running and name it; what Visier answered for their
         * items in the draft waits in round_items until the draft is published. */
        "CREATE TABLE rounds ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  state TEXT NOT NULL CHECK (state IN ('opening', 'filling', 'committing')),"
        "  name TEXT NOT NULL,"
        "  tenant TEXT NOT NULL,"
        "  project_id TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  updated_at INTEGER NOT NULL"
        ");"
        "CREATE TABLE round_items ("
        "  round_id INTEGER NOT NULL REFERENCES rounds(id) ON DELETE CASCADE,"
        "  job_id INTEGER NOT NULL,"
        "  idx INTEGER NOT NULL,"
        "  succeeded INTEGER NOT NULL,"
        "  result TEXT,"
        "  PRIMARY KEY (job_id, idx)"
        ") WITHOUT ROWID;"
        "CREATE INDEX round_items_round ON round_items(round_id);"
        "ALTER TABLE jobs ADD COLUMN round_id INTEGER;"
        "CREATE INDEX jobs_round ON jobs(round_id) WHERE round_id IS NOT NULL;",
};

/*
 * DIALECT: what differs between the databases beyond a statement's text, one row per DbKind
 * (the PostgreSQL row is to be written with db-pg.c: its migrations build the same schema).
 */
struct Dialect {
        const char *const *migrations; /* migration N takes the schema from version N-1 to N */
        size_t n_migrations;
        const char *version_get; /* the schema version: one row, one integer */
        const char *version_set; /* followed by the new version; runs in the migration's transaction */
        const char *write_setup; /* run on the write connection once it is open */
        const char *read_setup;  /* run on the read connection once it is open: it must never write */
        const char *begin_write; /* a write transaction holding the write lock from its start */
        const char *checkpoint;  /* give back the space the log took (NULL: nothing to do) */
        const char *explain;     /* store_query_plans(): prefixed to a statement (NULL: none) */
        int explain_detail;      /* the column of the plan's text */
        bool local_file;         /* the database is the file at the store's path (take_lock, check_file) */
        /* Other processes (the fleet's nodes) change the database too: nothing read is kept in
         * memory past the next read (the final texts, the counts, the pending count), claims
         * skip rows another claim holds, and the publish lane is fenced (store_set_fence()). */
        bool shared;
};

static const Dialect dialects[] = {
        [DB_SQLITE] = {
                .migrations = migrations,
                .n_migrations = ELEMENTSOF(migrations),
                .version_get = "PRAGMA user_version",
                .version_set = "PRAGMA user_version = ",
                .write_setup = "PRAGMA journal_mode = WAL;"
                               "PRAGMA synchronous = FULL;"
                               "PRAGMA foreign_keys = ON;"
                               "PRAGMA journal_size_limit = 67108864;",
                .read_setup = "PRAGMA query_only = 1",
                .begin_write = "BEGIN IMMEDIATE",
                .checkpoint = "PRAGMA wal_checkpoint(TRUNCATE)",
                .explain = "EXPLAIN QUERY PLAN ",
                .explain_detail = 3,
                .local_file = true,
        },
        /* Migrated by store_pg_migrate() (store-pg-schema.c: its own versions, its own lock). */
        /* A session idle inside a transaction for STORE_PG_IDLE_TX_TIMEOUT_MS is ended by the
         * server: a node paused in the middle of one (SIGSTOP, a VM freeze) would otherwise keep
         * the rows it locked — the lane's row among them (lease_check_term()) — and no node
         * could take the lane over until it resumed (docs/fleet.md, "Outages"). */
        [DB_POSTGRES] = {
                .write_setup = "SET synchronous_commit = on;" /* docs/fleet.md, "Durability" */
                               "SET idle_in_transaction_session_timeout = " STORE_PG_IDLE_TX_TIMEOUT,
                .read_setup = "SET default_transaction_read_only = on;"
                              "SET idle_in_transaction_session_timeout = " STORE_PG_IDLE_TX_TIMEOUT,
                .begin_write = "BEGIN",
                .shared = true,
        },
};

/* db.h gives -EEXIST for a unique or primary-key constraint; to the store's callers -EEXIST
 * means an Idempotency-Key used for another request (api.c answers 409), and no statement of
 * the store is meant to meet a constraint: one that does is a failure of the database, -EIO,
 * as it always was. Every result of a db_*() call goes through here. */
static int from_db(int r) {
        return r == -EEXIST ? -EIO : r;
}

/* A statement failed: inside a transaction, the whole transaction fails (store_end() rolls it
 * back), whatever the caller does with the error. Returns r. */
static int tx_note(Store *s, int r) {
        if (r < 0 && s->in_transaction && s->tx_error == 0)
                s->tx_error = r;
        return r;
}

/* May a statement run in the open transaction? Not once one has failed: SQLite may have rolled
 * the transaction back already, and every statement after that would commit on its own. */
static int tx_usable(Store *s) {
        if (!s->in_transaction)
                return 0;
        if (s->tx_error == 0 && (!db_in_transaction(s->w.db) || db_transaction_failed(s->w.db)))
                s->tx_error = -EIO; /* rolled back behind our back, or bound to be */
        return s->tx_error;
}

static int exec(Store *s, const char *sql, char *err, size_t errlen) {
        int r;

        if (tx_usable(s) < 0) {
                snprintf(err, errlen, "%s: not run: an earlier statement of the transaction failed", s->path);
                return s->tx_error;
        }
        r = from_db(db_exec(s->w.db, sql));
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", s->path, db_errmsg(s->w.db));
                return tx_note(s, r);
        }
        return 0;
}

/* The first column of the first row of sql on the write connection; -EIO if there is none. */
static int read_int(Store *s, const char *sql, int *ret) {
        DbStmt *st = NULL;
        int r;

        r = from_db(db_prepare(s->w.db, sql, false, &st));
        if (r >= 0) {
                r = from_db(db_step(st));
                if (r > 0) {
                        *ret = (int) db_column_int64(st, 0);
                        r = 0;
                } else if (r == 0)
                        r = -EIO;
        }
        db_finalize(st);
        return r;
}

static int migrate(Store *s, char *err, size_t errlen) {
        const Dialect *d = s->dialect;
        int version = 0, r;

        if (db_kind(s->w.db) == DB_POSTGRES) {
                char msg[STORE_ERROR_MAX] = "";

                r = store_pg_migrate(s->w.db, &version, msg, sizeof(msg));
                if (r < 0) {
                        snprintf(err, errlen, "job database %s: %s", s->path, msg);
                        return r;
                }
                s->schema_version = version;
                return 0;
        }
        r = read_int(s, d->version_get, &version);
        if (r < 0) {
                snprintf(err, errlen, "%s: cannot read the schema version: %s", s->path, db_errmsg(s->w.db));
                return r;
        }
        if (version > (int) d->n_migrations) {
                snprintf(err, errlen, "%s: database schema version %d is newer than this visierd supports (%d)",
                         s->path, version, (int) d->n_migrations);
                return -EPROTO;
        }
        for (int v = version; v < (int) d->n_migrations; v++) {
                char bump[64];

                r = exec(s, d->begin_write, err, errlen);
                if (r < 0)
                        return r;
                snprintf(bump, sizeof(bump), "%s%d", d->version_set, v + 1);
                r = exec(s, d->migrations[v], err, errlen);
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
        s->schema_version = (int) d->n_migrations;
        return 0;
}

static int count_pending(Store *s, int64_t *ret);
static void final_texts_clear(Store *s);
static void counts_refresh(Store *s, Conn *c);

/*
 * DIALECT (local file): one visierd per database: an exclusive flock() on "<database>.lock",
 * which also holds the holder's PID for the message a second instance prints. The lock goes
 * with the process, so a crashed holder never blocks a restart.
 */
static int take_lock(Store *s, char *err, size_t errlen) {
        _cleanup_free_ char *lock_path = NULL;
        char pid[32] = "";
        int fd, n;

        if (asprintf(&lock_path, "%s.lock", s->path) < 0)
                return -ENOMEM;
        fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                int r = -errno;
                snprintf(err, errlen, "cannot open the lock file %s: %s", lock_path, strerror(-r));
                return r;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int r = -errno;

                if (r == -EWOULDBLOCK) {
                        n = (int) pread(fd, pid, sizeof(pid) - 1, 0);
                        pid[n > 0 ? n : 0] = '\0';
                        pid[strcspn(pid, "\n")] = '\0';
                        snprintf(err, errlen,
                                 "job database %s is in use by another visierd (pid %s); only one may use it at a time",
                                 s->path, pid[0] ? pid : "unknown");
                        r = -EBUSY;
                } else
                        snprintf(err, errlen, "cannot lock %s: %s", lock_path, strerror(-r));
                close(fd);
                return r;
        }
        n = snprintf(pid, sizeof(pid), "%ld\n", (long) getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t) n, 0) != n) {
                /* The lock holds without the PID; only the message would lack it. */
        }
        s->lock_fd = fd;
        return 0;
}

static void *store_thread(void *arg);

/* The second connection, for reads beside the writer (WAL): each statement or read
 * transaction sees the database as last committed, never waiting for a commit in progress. */
/* A new connection to the store's database, set up as a writer or a reader. */
static int conn_open(Store *s, Conn *c, char *msg, size_t msglen) {
        int r;

        if (s->dialect == &dialects[DB_POSTGRES])
                r = from_db(db_open_pg(s->path, s->password, STORE_PG_CONNECT_TIMEOUT_SEC, 0, &c->db, msg, msglen));
        else
                r = from_db(db_open_sqlite(s->path, !c->reader, STORE_BUSY_TIMEOUT_MS, &c->db, msg, msglen));
        if (r >= 0) {
                r = from_db(db_exec(c->db, c->reader ? s->dialect->read_setup : s->dialect->write_setup));
                if (r < 0)
                        snprintf(msg, msglen, "%s", db_errmsg(c->db));
        }
        return r;
}

static void conn_close(Conn *c);

/* PostgreSQL: a session the server ended (a restart, a network failure) is opened again before
 * the next transaction or read on it; the one that found it gone has failed already. The
 * caller holds the connection's lock, outside a transaction. */
static void conn_ensure(Store *s, Conn *c) {
        PGconn *pg = db_pg_conn(c->db);
        char msg[DB_ERROR_MAX];
        Conn fresh = { .reader = c->reader };

        if (!pg || PQstatus(pg) != CONNECTION_BAD)
                return;
        /* The old one stays until a new one is open: the next use fails on it and comes back. */
        if (conn_open(s, &fresh, msg, sizeof(msg)) < 0) {
                fresh.db = db_close(fresh.db);
                return;
        }
        conn_close(c);
        *c = fresh;
}

/* The read connection's lock, the connection made usable again if its session was lost. */
static void read_lock_take(Store *s) {
        pthread_mutex_lock(&s->read_lock);
        conn_ensure(s, &s->r);
}

static int open_reader(Store *s, char *err, size_t errlen) {
        char msg[DB_ERROR_MAX] = "";
        int r;

        s->r.reader = true;
        r = conn_open(s, &s->r, msg, sizeof(msg));
        if (r < 0) {
                snprintf(err, errlen, "cannot open job database %s for reading: %s", s->path, msg);
                return r;
        }
        return 0;
}

static Store *store_new(const Dialect *d, const char *path) {
        Store *s = calloc(1, sizeof(*s));

        if (!s)
                return NULL;
        pthread_mutex_init(&s->lock, NULL);
        pthread_mutex_init(&s->read_lock, NULL);
        pthread_mutex_init(&s->final_lock, NULL);
        pthread_mutex_init(&s->counts_lock, NULL);
        pthread_mutex_init(&s->group_lock, NULL);
        pthread_cond_init(&s->group_cond, NULL);
        s->group_tail = &s->group_queue;
        s->lock_fd = -1;
        s->dialect = d;
        s->path = strdup(path);
        if (!s->path)
                return store_close(s);
        return s;
}

/* The write connection is open: its setup, the schema, the counts, the reader, the thread. */
static int store_start(Store *s, char *err, size_t errlen) {
        int r;

        r = exec(s, s->dialect->write_setup, err, errlen);
        if (r < 0)
                return r;
        r = migrate(s, err, errlen);
        if (r < 0)
                return r;
        s->read_only = db_read_only(s->w.db);
        /* DIALECT (local file): the file's identity, for check_file(). */
        if (s->dialect->local_file) {
                struct stat st;
                if (stat(s->path, &st) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "cannot stat job database %s: %s", s->path, strerror(-r));
                        return r;
                }
                s->dev = st.st_dev;
                s->ino = st.st_ino;
        }
        r = count_pending(s, &s->pending);
        if (r < 0) {
                snprintf(err, errlen, "%s: cannot count pending jobs: %s", s->path, db_errmsg(s->w.db));
                return r;
        }
        counts_refresh(s, &s->w);
        r = open_reader(s, err, errlen);
        if (r < 0)
                return r;
        r = -pthread_create(&s->thread, NULL, store_thread, s);
        if (r < 0) {
                snprintf(err, errlen, "cannot start the job store's thread: %s", strerror(-r));
                return r;
        }
        s->thread_started = true;
        return 0;
}

int store_open(const char *path, Store **ret, char *err, size_t errlen) {
        _cleanup_(store_closep) Store *s = NULL;
        char msg[DB_ERROR_MAX] = "";
        int r;

        s = store_new(&dialects[DB_SQLITE], path); /* a path: an SQLite database file */
        if (!s)
                return -ENOMEM;
        r = take_lock(s, err, errlen);
        if (r < 0)
                return r;
        /* DIALECT (local file): a new database is made 0600 whatever the umask: it holds the
         * jobs' bodies. SQLite gives its -wal and -shm files the database file's mode. */
        {
                int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

                if (fd >= 0)
                        close(fd);
                else if (errno != EEXIST) {
                        r = -errno;
                        snprintf(err, errlen, "cannot create job database %s: %s", path, strerror(-r));
                        return r;
                }
        }
        r = from_db(db_open_sqlite(path, true, STORE_BUSY_TIMEOUT_MS, &s->w.db, msg, sizeof(msg)));
        if (r < 0) {
                snprintf(err, errlen, "cannot open job database %s: %s", path, msg);
                return r;
        }
        r = store_start(s, err, errlen);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

int store_open_pg(const char *conninfo, const char *password, Store **ret, char *err, size_t errlen) {
        _cleanup_(store_closep) Store *s = NULL;
        char msg[DB_ERROR_MAX] = "";
        int r;

        assert(conninfo && ret);
        s = store_new(&dialects[DB_POSTGRES], conninfo);
        if (!s)
                return -ENOMEM;
        if (password && !(s->password = strdup(password)))
                return -ENOMEM;
        r = conn_open(s, &s->w, msg, sizeof(msg));
        if (r < 0) {
                snprintf(err, errlen, "cannot open the job database at %s: %s", conninfo, msg);
                return r;
        }
        s->submit = store_new(&dialects[DB_POSTGRES], conninfo);
        if (!s->submit || (password && !(s->submit->password = strdup(password))))
                return -ENOMEM;
        r = conn_open(s->submit, &s->submit->w, msg, sizeof(msg));
        if (r < 0) {
                snprintf(err, errlen, "cannot open the job database at %s for submissions: %s", conninfo, msg);
                return r;
        }
        r = store_start(s, err, errlen);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

static void conn_close(Conn *c) {
        for (size_t i = 0; i < _STMT_MAX; i++)
                c->stmt[i] = db_finalize(c->stmt[i]);
        c->db = db_close(c->db);
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;
        if (s->thread_started) {
                /* The store thread finishes the group it is committing, answers whatever is
                 * still queued with an error (never dropping one), and stops. */
                pthread_mutex_lock(&s->group_lock);
                s->stopping = true;
                pthread_cond_broadcast(&s->group_cond);
                pthread_mutex_unlock(&s->group_lock);
                pthread_join(s->thread, NULL);
        }
        s->submit = store_close(s->submit); /* only the store thread, now stopped, used it */
        /* The reader first: the writer, closing last, checkpoints and removes the WAL. */
        conn_close(&s->r);
        conn_close(&s->w);
        if (s->lock_fd >= 0)
                close(s->lock_fd); /* releases the flock */
        pthread_mutex_destroy(&s->lock);
        pthread_mutex_destroy(&s->read_lock);
        final_texts_clear(s);
        pthread_mutex_destroy(&s->final_lock);
        pthread_mutex_destroy(&s->counts_lock);
        pthread_mutex_destroy(&s->group_lock);
        pthread_cond_destroy(&s->group_cond);
        free(s->path);
        if (s->password) {
                explicit_bzero(s->password, strlen(s->password));
                free(s->password);
        }
        free(s->fence_tenant);
        free(s->fence_node);
        free(s);
        return NULL;
}

/* DIALECT (local file): is the open database still the file at the configured path, and
 * writable? Needs no lock: the identity of the file and the read-only flag are fixed at open. */
static int check_file(Store *s, char *err, size_t errlen) {
        struct stat st;

        if (s->dialect->local_file && (stat(s->path, &st) < 0 || st.st_dev != s->dev || st.st_ino != s->ino)) {
                if (err)
                        snprintf(err, errlen,
                                 "job database %s was deleted or replaced while visierd had it open; restart visierd",
                                 s->path);
                return -ENOENT;
        }
        if (s->read_only) {
                if (err)
                        snprintf(err, errlen, "job database %s is open read-only", s->path);
                return -EACCES;
        }
        return 0;
}


/* The file check is a stat() of the path: /status, asked many times a second, repeats it at
 * most every STORE_FILE_CHECK_INTERVAL. */
#define STORE_FILE_CHECK_INTERVAL (250 * USEC_PER_MSEC)

bool store_ok(Store *s) {
        usec_t now = clock_now(), at = __atomic_load_n(&s->file_checked_at, __ATOMIC_ACQUIRE);

        /* No read: the file check and how the last write transaction ended. */
        if (at == 0 || now < at || now - at >= STORE_FILE_CHECK_INTERVAL) {
                __atomic_store_n(&s->file_ok, check_file(s, NULL, 0) >= 0, __ATOMIC_RELAXED);
                __atomic_store_n(&s->file_checked_at, now, __ATOMIC_RELEASE);
        }
        return __atomic_load_n(&s->file_ok, __ATOMIC_RELAXED) && !__atomic_load_n(&s->had_error, __ATOMIC_RELAXED) &&
               !(s->submit && __atomic_load_n(&s->submit->had_error, __ATOMIC_RELAXED));
}

int store_schema_version(Store *s) {
        return s->schema_version;
}

const char *store_path(Store *s) {
        return s->path;
}

void store_set_max_pending(Store *s, unsigned max_pending) {
        /* Submitters read it inside their transaction, under the same lock. */
        pthread_mutex_lock(&s->lock);
        s->max_pending = max_pending;
        pthread_mutex_unlock(&s->lock);
        if (s->submit)
                store_set_max_pending(s->submit, max_pending);
}

/* ---- small statement helpers (callers hold the lock) ---- */

typedef struct Stmt {
        DbStmt *st;
        bool cached; /* one of a connection's prepared statements: reset, not finalized */
} Stmt;

static void stmt_done(Stmt *st) {
        if (st->cached)
                db_reset(st->st);
        else
                db_finalize(st->st);
        st->st = NULL;
        st->cached = false;
}

/* A statement run once, on the write connection (callers hold the lock). */
static int prepare(Store *s, Stmt *st, const char *sql) {
        if (tx_usable(s) < 0)
                return s->tx_error;
        st->st = NULL;
        st->cached = false;
        return tx_note(s, from_db(db_prepare(s->w.db, sql, false, &st->st)));
}

/* A connection's statement, prepared on first use (the caller holds the connection's lock). */
static int conn_stmt(Conn *c, StmtId id, Stmt *st) {
        if (!c->stmt[id]) {
                int r = from_db(db_prepare(c->db, stmt_sql(c, id), true, &c->stmt[id]));
                if (r < 0)
                        return r;
        }
        st->st = c->stmt[id];
        st->cached = true;
        return 0;
}

/* One step of any statement: 1 for a row, 0 at the end, a negative errno on failure. Does not
 * touch the transaction's state: step_done() and step_row() below do. */
static int step(Stmt *st) {
        return from_db(db_step(st->st));
}

/* A cached statement of the write connection (callers hold the lock). */
static int prepare_cached(Store *s, Stmt *st, StmtId id) {
        if (tx_usable(s) < 0)
                return s->tx_error;
        return tx_note(s, conn_stmt(&s->w, id, st));
}

/* A cached statement of the read connection (callers hold read_lock). Reads never touch the
 * write connection's transaction state. */
static int read_prepare(Store *s, Stmt *st, StmtId id) {
        return conn_stmt(&s->r, id, st);
}

/* A read transaction on the read connection: the statements between see one snapshot. */
static void read_begin(Store *s) {
        Stmt st = {};

        if (read_prepare(s, &st, STMT_READ_BEGIN) >= 0) {
                (void) step(&st);
                stmt_done(&st);
        }
}

static void read_end(Store *s) {
        Stmt st = {};

        if (read_prepare(s, &st, STMT_READ_END) >= 0) {
                (void) step(&st);
                stmt_done(&st);
        }
        if (db_in_transaction(s->r.db))
                (void) db_exec(s->r.db, "ROLLBACK");
}

/* Readiness: the file check, and a read through the read connection, so that a probe never
 * waits behind a group commit or the publisher's transaction. */
int store_check(Store *s, char *err, size_t errlen) {
        int r;

        r = check_file(s, err, errlen);
        if (r < 0)
                return r;
        read_lock_take(s);
        {
                Stmt st = {};

                r = read_prepare(s, &st, STMT_CHECK);
                if (r >= 0) {
                        r = step(&st);
                        r = r > 0 ? 0 : r == 0 ? -EIO : r;
                        stmt_done(&st);
                }
        }
        if (r < 0 && err)
                snprintf(err, errlen, "job database %s cannot be read: %s", s->path, db_errmsg(s->r.db));
        pthread_mutex_unlock(&s->read_lock);
        return r;
}

/* Run a cached statement that returns nothing, as exec() does. */
static int exec_cached(Store *s, StmtId id, char *err, size_t errlen) {
        Stmt st = {};
        int r;

        if (tx_usable(s) < 0) {
                snprintf(err, errlen, "%s: not run: an earlier statement of the transaction failed", s->path);
                return s->tx_error;
        }
        r = prepare_cached(s, &st, id);
        if (r < 0) {
                snprintf(err, errlen, "%s: %s", s->path, db_errmsg(s->w.db));
                return r;
        }
        r = step(&st);
        if (r != 0)
                snprintf(err, errlen, "%s: %s", s->path, db_errmsg(s->w.db));
        stmt_done(&st);
        return r == 0 ? 0 : tx_note(s, r > 0 ? -EIO : r);
}

static void bind_text(Stmt *st, int i, const char *v) {
        (void) db_bind_text(st->st, i, v);
}

static const char *col_text(Stmt *st, int i) {
        return db_column_text(st->st, i);
}

/* Step a statement that returns no rows. */
static int step_done(Store *s, Stmt *st) {
        int r = step(st);
        return r == 0 ? 0 : tx_note(s, r > 0 ? -EIO : r);
}

/* Step a statement that returns rows: 1 for a row, 0 at the end, a negative errno on failure. */
static int step_row(Store *s, Stmt *st) {
        return tx_note(s, step(st));
}

/* Step an INSERT ... RETURNING id to its end: the new row's id. */
static int step_returning_id(Store *s, Stmt *st, int64_t *ret_id) {
        int64_t id;
        int r;

        r = step_row(s, st);
        if (r == 0)
                r = tx_note(s, -EIO); /* no row inserted */
        if (r < 0)
                return r;
        id = db_column_int64(st->st, 0);
        r = step_done(s, st);
        if (r < 0)
                return r;
        *ret_id = id;
        return 0;
}

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static json_t *json_time(int64_t ms) {
        char buf[96];
        time_t t = (time_t) (ms / 1000);
        struct tm tm;

        if (ms <= 0)
                return json_null();
        gmtime_r(&t, &tm);
        snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (ms % 1000));
        return json_string(buf);
}

static void set_err(Store *s, char *err, size_t errlen, const char *what) {
        if (err)
                snprintf(err, errlen, "job database %s: %s: %s", s->path, what, db_errmsg(s->w.db));
}

/* DIALECT: give back the space the log took (SQLite: truncate the WAL). Outside a transaction;
 * callers hold the lock. */
static int checkpoint(Store *s) {
        char ignored[STORE_ERROR_MAX];

        if (!s->dialect->checkpoint)
                return 0;
        return exec(s, s->dialect->checkpoint, ignored, sizeof(ignored));
}

/* store_begin(), and on failure "job database …: what: <the database's message>" in err (if
 * not NULL), read while the lock is still held: another thread may use the connection next. */
static int store_begin_err(Store *s, char *err, size_t errlen, const char *what) {
        char ignored[STORE_ERROR_MAX];
        int r;

        pthread_mutex_lock(&s->lock);
        conn_ensure(s, &s->w);
        r = exec(s, s->dialect->begin_write, ignored, sizeof(ignored));
        if (r < 0) {
                set_err(s, err, errlen, what);
                pthread_mutex_unlock(&s->lock);
                return r;
        }
        s->in_transaction = true;
        s->tx_delta = 0;
        s->tx_error = 0;
        return 0;
}

int store_begin(Store *s) {
        return store_begin_err(s, NULL, 0, NULL);
}

/* ---- fleet mode: the publish lane's fence ---- */

int store_set_fence(Store *s, const char *tenant, const char *node, unsigned settle_ms) {
        char *t, *n;

        assert(s && tenant && node);
        if (!s->dialect->shared)
                return -EOPNOTSUPP;
        t = strdup(tenant);
        n = strdup(node);
        if (!t || !n) {
                free(t);
                free(n);
                return -ENOMEM;
        }
        pthread_mutex_lock(&s->lock);
        free(s->fence_tenant);
        free(s->fence_node);
        s->fence_tenant = t;
        s->fence_node = n;
        s->fence_settle_ms = settle_ms;
        s->fence_term = 0;
        pthread_mutex_unlock(&s->lock);
        return 0;
}

void store_set_fence_term(Store *s, int64_t term) {
        pthread_mutex_lock(&s->lock);
        s->fence_term = term;
        pthread_mutex_unlock(&s->lock);
}

/*
 * The last statements of a fenced transaction, right before its COMMIT (lock held): does this
 * node still hold its term (lease_check_term(), which keeps the lane's row locked until the
 * commit), and the lane's call opened or ended (lease_fence_call(), lease_call_end()). 0, or
 * -ESTALE (another node's term), -EAGAIN (the lane's wait is not over), another error.
 */
static int fence_finish(Store *s) {
        char err[LEASE_ERROR_MAX];
        PGconn *c = db_pg_conn(s->w.db);
        int64_t wait = 0;
        int r;

        if (s->fence_term <= 0)
                return -ESTALE;
        r = lease_check_term(c, s->fence_tenant, s->fence_node, s->fence_term, err, sizeof(err));
        if (r >= 0 && s->tx_lane_op == LANE_OP_OPEN)
                r = lease_fence_call(c, s->fence_tenant, s->fence_node, s->fence_term,
                                     (unsigned) (s->tx_lane_deadline_ms > s->tx_lane_started_ms
                                                         ? s->tx_lane_deadline_ms - s->tx_lane_started_ms
                                                         : 1),
                                     &wait, err, sizeof(err));
        else if (r >= 0 && s->tx_lane_op == LANE_OP_END)
                r = lease_call_end(c, s->fence_tenant, s->fence_node, s->fence_term, s->tx_lane_deadline_ms == 0,
                                   s->fence_settle_ms, err, sizeof(err));
        return r;
}

/* store_begin() and, in fleet mode, a fence at its end: -ESTALE at once without a term. */
static int begin_fenced(Store *s) {
        int r = store_begin(s);

        if (r < 0 || !s->fence_tenant)
                return r;
        if (s->fence_term <= 0) {
                store_end(s, false);
                return -ESTALE;
        }
        s->tx_fenced = true;
        s->tx_lane_op = LANE_OP_NONE;
        return 0;
}

int store_begin_lane(Store *s) {
        return begin_fenced(s);
}

/*
 * All or nothing: a transaction in which any statement failed is rolled back, and so is one
 * that SQLite already rolled back by itself (a full disk or I/O error mid-transaction returns
 * the connection to autocommit mode, after which later statements would each commit alone).
 */
/* Read the counters the triggers keep (the connection's lock held, outside a transaction: what
 * was last committed) into memory. */
static void counts_refresh(Store *s, Conn *c) {
        int64_t counts[_JOB_STATE_MAX] = {}, oldest = -1;
        Stmt st = {};

        if (conn_stmt(c, STMT_COUNTS, &st) < 0)
                return;
        while (step(&st) > 0) {
                JobState js = job_state_from_string(col_text(&st, 0));

                if (js >= 0)
                        counts[js] = db_column_int64(st.st, 1);
        }
        stmt_done(&st);
        if (conn_stmt(c, STMT_OLDEST_QUEUED, &st) < 0)
                return;
        if (step(&st) > 0 && !db_column_is_null(st.st, 0))
                oldest = db_column_int64(st.st, 0);
        stmt_done(&st);
        pthread_mutex_lock(&s->counts_lock);
        memcpy(s->counts, counts, sizeof(counts));
        s->oldest_queued = oldest;
        s->counts_at = clock_now();
        pthread_mutex_unlock(&s->counts_lock);
}

static void final_texts_clear(Store *s) {
        pthread_mutex_lock(&s->final_lock);
        for (size_t i = 0; i < STORE_FINAL_TEXTS; i++) {
                free(s->final[i].text);
                s->final[i].text = NULL;
                s->final[i].id = 0;
        }
        s->final_gen++;
        pthread_mutex_unlock(&s->final_lock);
}

int store_end(Store *s, bool commit) {
        char ignored[STORE_ERROR_MAX];
        bool open_tx = db_in_transaction(s->w.db);
        bool refused = false; /* by the fence: not a failure of the database */
        int r = 0;

        if (commit && s->tx_error == 0 && open_tx && s->tx_fenced) {
                r = fence_finish(s);
                refused = r == -ESTALE || r == -EAGAIN;
        }
        s->tx_fenced = false;
        s->tx_lane_op = LANE_OP_NONE;
        s->in_transaction = false; /* COMMIT and ROLLBACK below run whatever failed before */
        if (commit && r < 0)
                ; /* the fence refused it: rolled back below */
        else if (commit && s->tx_error < 0)
                r = s->tx_error;
        else if (commit && !open_tx)
                r = -EIO; /* rolled back behind our back */
        else if (commit)
                r = exec(s, "COMMIT", ignored, sizeof(ignored));
        if ((!commit || r < 0) && db_in_transaction(s->w.db))
                exec(s, "ROLLBACK", ignored, sizeof(ignored));
        if (s->tx_touched_final) {
                /* After the commit: a reader that read the old text before it cannot store it
                 * now (its generation is gone). */
                s->tx_touched_final = false;
                final_texts_clear(s);
        }
        if (commit && r >= 0) {
                s->pending += s->tx_delta;
                counts_refresh(s, &s->w);
                if (__atomic_load_n(&s->had_error, __ATOMIC_RELAXED)) {
                        /* Writes work again: give back the space the WAL took while they failed
                         * (it is otherwise truncated only after a prune). */
                        __atomic_store_n(&s->had_error, checkpoint(s) < 0, __ATOMIC_RELAXED);
                }
        } else if (commit && !refused)
                __atomic_store_n(&s->had_error, true, __ATOMIC_RELAXED);
        s->in_transaction = false;
        s->tx_error = 0;
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* Conflict key of an item: the permission it touches (NULL for creates, which touch new ones). */
static const char *item_conflict_key(JobOp op, json_t *item) {
        switch (op) {
        case JOB_OP_DELETE:
        case JOB_OP_REVERT:
                return json_string_value(item);
        case JOB_OP_UPDATE:
        case JOB_OP_PATCH:
        case JOB_OP_ASSIGN:
        case JOB_OP_REMOVE:
                return json_string_value(json_object_get(item, "permissionId"));
        default:
                return NULL;
        }
}

static int count_pending(Store *s, int64_t *ret) {
        Stmt st = {};
        int r;

        r = prepare_cached(s, &st, STMT_PENDING);
        if (r < 0)
                return r;
        r = step(&st);
        if (r > 0) {
                *ret = db_column_int64(st.st, 0);
                r = 0;
        } else if (r == 0)
                r = -EIO;
        stmt_done(&st);
        return r;
}

/*
 * A submission as the store thread needs it: everything copied from the caller's JobSubmit
 * (whose buffers may be gone once store_job_submit_async() returns), the JSON already turned
 * into the text that is stored, so the store thread only runs SQL.
 */
typedef struct SubmitItem {
        char *text;           /* the item as stored */
        char *correlation_id; /* creates only, or NULL */
        char *conflict_key;   /* or NULL */
} SubmitItem;

typedef struct SubmitCid {
        char *correlation_id;
        json_int_t index;
} SubmitCid;

typedef struct SubmitWaiter {
        JobOp op;
        char *tenant, *project, *non_versioned, *tenant_code, *client, *idempotency_key, *upstream_headers;
        char *body; /* NULL if the caller passed none */
        size_t body_len;
        char *extra; /* JSON text, or NULL */
        SubmitItem *items;
        size_t n_items;
        SubmitCid *cids;
        size_t n_cids;
        bool solo;
        bool want_json; /* build the job's JSON for done() */
        store_submit_fn done;
        void *userdata;

        /* the outcome, set by the store thread */
        int r;
        int64_t id;
        int64_t created_ms; /* the row's created_at, updated_at and next_run_at */
        bool existing;
        char err[STORE_ERROR_MAX];
        struct SubmitWaiter *next;
} SubmitWaiter;

static SubmitWaiter *submit_waiter_free(SubmitWaiter *w) {
        if (!w)
                return NULL;
        free(w->tenant);
        free(w->project);
        free(w->non_versioned);
        free(w->tenant_code);
        free(w->client);
        free(w->idempotency_key);
        free(w->upstream_headers);
        free(w->body);
        free(w->extra);
        for (size_t i = 0; i < w->n_items; i++) {
                free(w->items[i].text);
                free(w->items[i].correlation_id);
                free(w->items[i].conflict_key);
        }
        free(w->items);
        for (size_t i = 0; i < w->n_cids; i++)
                free(w->cids[i].correlation_id);
        free(w->cids);
        free(w);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(SubmitWaiter *, submit_waiter_free);

/* strdup() that keeps NULL as NULL; false only when out of memory. */
static bool dup_or_null(char **ret, const char *v) {
        *ret = v ? strdup(v) : NULL;
        return !v || *ret;
}

static int submit_waiter_new(const JobSubmit *j, SubmitWaiter **ret) {
        _cleanup_(submit_waiter_freep) SubmitWaiter *w = NULL;
        json_t *item;
        size_t i;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->op = j->op;
        w->solo = j->solo;
        if (!dup_or_null(&w->tenant, j->tenant) || !dup_or_null(&w->project, j->project) ||
            !dup_or_null(&w->non_versioned, j->non_versioned) || !dup_or_null(&w->tenant_code, j->tenant_code) ||
            !dup_or_null(&w->client, j->client) || !dup_or_null(&w->idempotency_key, j->idempotency_key) ||
            !dup_or_null(&w->upstream_headers, strempty(j->upstream_headers)))
                return -ENOMEM;
        if (j->body) {
                w->body = malloc(j->body_len + 1);
                if (!w->body)
                        return -ENOMEM;
                memcpy(w->body, j->body, j->body_len);
                w->body[j->body_len] = '\0';
                w->body_len = j->body_len;
        }
        if (j->extra && json_object_size(j->extra) > 0) {
                w->extra = json_dumps(j->extra, JSON_COMPACT);
                if (!w->extra)
                        return -ENOMEM;
        }
        if (json_array_size(j->items) > 0) {
                w->items = calloc(json_array_size(j->items), sizeof(*w->items));
                if (!w->items)
                        return -ENOMEM;
        }
        json_array_foreach(j->items, i, item) {
                SubmitItem *it = &w->items[i];

                w->n_items = i + 1;
                it->text = json_dumps(item, JSON_COMPACT | JSON_ENCODE_ANY);
                if (!it->text ||
                    !dup_or_null(&it->correlation_id, j->op == JOB_OP_CREATE
                                                              ? json_string_value(json_object_get(item, "correlationId"))
                                                              : NULL) ||
                    !dup_or_null(&it->conflict_key, item_conflict_key(j->op, item)))
                        return -ENOMEM;
        }
        if (json_array_size(j->client_correlation_ids) > 0) {
                w->cids = calloc(json_array_size(j->client_correlation_ids), sizeof(*w->cids));
                if (!w->cids)
                        return -ENOMEM;
        }
        json_array_foreach(j->client_correlation_ids, i, item) {
                w->n_cids = i + 1;
                w->cids[i].index = json_integer_value(json_object_get(item, "index"));
                if (!dup_or_null(&w->cids[i].correlation_id, json_string_value(json_object_get(item, "correlationId"))))
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(w);
        return 0;
}

/* Who asked, for comparing Idempotency-Keys: a named client or a unix-socket uid as it is, and
 * every anonymous TCP caller as one (a retry may come from 127.0.0.1 after ::1). */
static const char *idempotency_identity(const char *client) {
        return strncmp(strempty(client), "tcp:", 4) == 0 ? "tcp:" : strempty(client);
}

/* An earlier job with this idempotency key: 1 and its id if the same request, -EEXIST if not, 0 if none.
 * The same request means everything the job was made of: the operation and body, the tenant,
 * project and headers it is sent with, who asked, and the rest (for a call job, its method,
 * path and query; they are in extra). A key used again by another client, for another tenant
 * or on another path is a different request: answering it with the earlier job would tell the
 * client a change was made that never was. */
static int find_idempotent(Store *s, const SubmitWaiter *w, int64_t *ret_id) {
        const char *mine[] = { w->tenant, w->project, w->non_versioned, w->tenant_code, idempotency_identity(w->client),
                               w->upstream_headers, w->extra };
        Stmt st = {};
        int r;

        r = prepare_cached(s, &st, STMT_FIND_IDEMPOTENT);
        if (r < 0)
                return r;
        bind_text(&st, 1, w->idempotency_key);
        r = step_row(s, &st);
        if (r > 0) {
                size_t n;
                const void *b = db_column_blob(st.st, 2, &n);
                bool same = streq(strempty(col_text(&st, 1)), job_op_to_string(w->op)) && n == w->body_len &&
                            (n == 0 || memcmp(b, w->body, n) == 0);

                for (size_t i = 0; same && i < ELEMENTSOF(mine); i++) {
                        const char *theirs = col_text(&st, 3 + (int) i);

                        same = streq(i == 4 ? idempotency_identity(theirs) : strempty(theirs), strempty(mine[i]));
                }
                if (same) {
                        *ret_id = db_column_int64(st.st, 0);
                        r = 1;
                } else
                        r = -EEXIST;
        }
        stmt_done(&st);
        return r;
}

/* A create item's correlation ID that a job still queued or running uses: 1 and that job's id
 * (two creates with one correlation ID in flight would make Visier refuse one of them and
 * leave the lookup unable to tell them apart), 0 if none. */
static int find_pending_correlation(Store *s, const char *cid, int64_t *ret_job) {
        Stmt st = {};
        int r;

        r = prepare_cached(s, &st, STMT_FIND_CORRELATION);
        if (r < 0)
                return r;
        bind_text(&st, 1, cid);
        r = step_row(s, &st);
        if (r > 0)
                *ret_job = db_column_int64(st.st, 0);
        stmt_done(&st);
        return r;
}

/* Insert one job inside the open transaction, in a savepoint of its own so that a failure
 * leaves the other jobs of the group untouched. */
static int submit_one_locked(Store *s, SubmitWaiter *w, char *err, size_t errlen) {
        int64_t id = 0, pending = 0, now = now_ms();
        Stmt st = {};
        int r;

        r = exec_cached(s, STMT_SAVEPOINT, err, errlen);
        if (r < 0)
                return r;
        if (w->idempotency_key) {
                r = find_idempotent(s, w, &id);
                if (r == 1) {
                        exec_cached(s, STMT_RELEASE, err, errlen);
                        w->id = id;
                        w->existing = true;
                        return 0;
                }
                if (r == -EEXIST) {
                        snprintf(err, errlen, "Idempotency-Key '%s' was already used with a different request",
                                 w->idempotency_key);
                        goto fail;
                }
                if (r < 0)
                        goto fail_db;
        }
        for (size_t i = 0; i < w->n_cids; i++) {
                int64_t other = 0;

                r = find_pending_correlation(s, w->cids[i].correlation_id, &other);
                if (r < 0)
                        goto fail_db;
                if (r > 0) {
                        r = -EADDRINUSE;
                        snprintf(err, errlen,
                                 "permissions[%lld].correlationId: %s is already used by job %lld, which is not "
                                 "finished",
                                 (long long) w->cids[i].index, w->cids[i].correlation_id, (long long) other);
                        goto fail;
                }
        }
        if (s->max_pending > 0) {
                pending = s->pending + s->tx_delta;
                if (pending >= (int64_t) s->max_pending) {
                        r = -EOVERFLOW;
                        snprintf(err, errlen, "the job queue is full (%u jobs waiting or running)", s->max_pending);
                        goto fail;
                }
        }

        r = prepare_cached(s, &st, STMT_INSERT_JOB);
        if (r < 0)
                goto fail_db;
        bind_text(&st, 1, job_op_to_string(w->op));
        bind_text(&st, 2, w->tenant);
        bind_text(&st, 3, w->project);
        bind_text(&st, 4, w->non_versioned);
        bind_text(&st, 5, w->tenant_code);
        bind_text(&st, 6, w->client);
        bind_text(&st, 7, w->idempotency_key);
        if (w->body)
                db_bind_blob(st.st, 8, w->body, w->body_len);
        else
                db_bind_null(st.st, 8);
        bind_text(&st, 9, w->extra);
        db_bind_int64(st.st, 10, (int64_t) w->n_items);
        db_bind_int64(st.st, 11, w->solo ? 1 : 0);
        db_bind_int64(st.st, 12, now);
        db_bind_int64(st.st, 13, now);
        db_bind_int64(st.st, 14, now);
        bind_text(&st, 15, w->upstream_headers);
        r = step_returning_id(s, &st, &id);
        stmt_done(&st);
        if (r < 0)
                goto fail_db;

        if (w->n_items > 0) {
                r = prepare_cached(s, &st, STMT_INSERT_ITEM);
                if (r < 0)
                        goto fail_db;
                for (size_t i = 0; i < w->n_items; i++) {
                        db_reset(st.st);
                        db_bind_int64(st.st, 1, id);
                        db_bind_int64(st.st, 2, (int64_t) i);
                        bind_text(&st, 3, w->items[i].text);
                        bind_text(&st, 4, w->items[i].correlation_id);
                        bind_text(&st, 5, w->items[i].conflict_key);
                        r = step_done(s, &st);
                        if (r < 0) {
                                stmt_done(&st);
                                goto fail_db;
                        }
                }
                stmt_done(&st);
        }

        if (w->n_cids > 0) {
                r = prepare_cached(s, &st, STMT_INSERT_CID);
                if (r < 0)
                        goto fail_db;
                for (size_t i = 0; i < w->n_cids; i++) {
                        db_reset(st.st);
                        bind_text(&st, 1, w->cids[i].correlation_id);
                        db_bind_int64(st.st, 2, id);
                        r = step_done(s, &st);
                        if (r < 0) {
                                stmt_done(&st);
                                goto fail_db;
                        }
                }
                stmt_done(&st);
        }

        r = exec_cached(s, STMT_RELEASE, err, errlen);
        if (r < 0)
                goto fail;
        s->tx_delta++;
        w->id = id;
        w->created_ms = now;
        w->existing = false;
        return 0;

fail_db:
        set_err(s, err, errlen, "cannot queue the job");
fail:
        {
                char ignored[STORE_ERROR_MAX];
                if (exec_cached(s, STMT_ROLLBACK_TO, ignored, sizeof(ignored)) >= 0)
                        exec_cached(s, STMT_RELEASE, ignored, sizeof(ignored));
        }
        return r;
}

/*
 * Group commit: submissions queue themselves; the store thread takes everything queued,
 * inserts it in one transaction (one fsync for all), and answers each submission once that
 * transaction has committed or failed. No answer is given before its commit.
 */
/* Errors about the request itself rather than the database: they stand even when the group's
 * transaction fails. */
static bool job_submit_error_is_logical(int r) {
        return r == -EEXIST || r == -EOVERFLOW || r == -EADDRINUSE;
}

static void group_commit(Store *s, SubmitWaiter *batch) {
        char err[STORE_ERROR_MAX] = "";
        int r;

        r = store_begin_err(s, err, sizeof(err), "cannot start a transaction");
        if (r < 0) {
                for (SubmitWaiter *w = batch; w; w = w->next) {
                        w->r = r;
                        snprintf(w->err, sizeof(w->err), "%s", err);
                }
                return;
        }
        r = check_file(s, err, sizeof(err));
        if (r >= 0 && s->dialect->shared && s->max_pending > 0)
                r = count_pending(s, &s->pending); /* other nodes queue jobs too */
        if (r < 0) {
                if (!err[0])
                        set_err(s, err, sizeof(err), "cannot count the jobs waiting");
                store_end(s, false);
                for (SubmitWaiter *w = batch; w; w = w->next) {
                        w->r = r;
                        snprintf(w->err, sizeof(w->err), "%s", err);
                }
                return;
        }
        for (SubmitWaiter *w = batch; w; w = w->next) {
                w->r = -ECANCELED;
                if (s->tx_error < 0)
                        continue; /* the transaction has failed: the rest are not tried */
                w->r = submit_one_locked(s, w, w->err, sizeof(w->err));
        }
        if (s->tx_error < 0)
                set_err(s, err, sizeof(err), "cannot queue the job");
        r = store_end(s, true);
        if (r < 0) {
                /* Nothing of the group was written: every waiter hears so, including those whose
                 * own statements went through before another's failed. */
                if (!err[0])
                        snprintf(err, sizeof(err), "job database %s: cannot commit the job: %s", s->path,
                                 strerror(-r));
                for (SubmitWaiter *w = batch; w; w = w->next)
                        if (w->r >= 0 || w->r == -ECANCELED || !job_submit_error_is_logical(w->r)) {
                                w->r = r;
                                w->existing = false;
                                snprintf(w->err, sizeof(w->err), "%s", err);
                        }
        }
}

static json_t *submitted_job_json(const SubmitWaiter *w);

/* Answer each submission of a round, in order, and free it. Called on the store thread with
 * no lock held, so done() may call the store's read functions. */
static void submit_answer_all(Store *s, SubmitWaiter *list) {
        for (SubmitWaiter *w = list, *next; w; w = next) {
                json_t *job = NULL;

                next = w->next;
                /* A new job is described from what was just written; an earlier job (the same
                 * Idempotency-Key) is read, and when that read fails the repeat is refused
                 * with the read's error (sending it again is safe). */
                if (w->r >= 0 && w->want_json && !w->existing)
                        job = submitted_job_json(w);
                else if (w->r >= 0 && w->want_json) {
                        int k = store_job_read(s, w->id, false, &job);

                        if (k < 0) {
                                w->r = k;
                                snprintf(w->err, sizeof(w->err),
                                         "job database %s: cannot read job %lld, the earlier job of this Idempotency-Key: %s",
                                         s->path, (long long) w->id, strerror(-k));
                        }
                }
                w->done(w->userdata, w->r < 0 ? w->r : 0, w->r < 0 ? 0 : w->id, w->r >= 0 && w->existing,
                        w->r < 0 ? w->err : "", job);
                json_decref(job);
                submit_waiter_free(w);
        }
}

static void *store_thread(void *arg) {
        Store *s = arg;

        pthread_mutex_lock(&s->group_lock);
        for (;;) {
                SubmitWaiter *batch;

                while (!s->group_queue && !s->stopping)
                        pthread_cond_wait(&s->group_cond, &s->group_lock);
                batch = s->group_queue;
                s->group_queue = NULL;
                s->group_tail = &s->group_queue;
                if (s->stopping) {
                        pthread_mutex_unlock(&s->group_lock);
                        /* store_close(): nothing queued is written, and every submission hears so. */
                        for (SubmitWaiter *w = batch; w; w = w->next) {
                                w->r = -ECANCELED;
                                snprintf(w->err, sizeof(w->err), "job database %s: closed before the job was written",
                                         s->path);
                        }
                        submit_answer_all(s, batch);
                        return NULL;
                }
                pthread_mutex_unlock(&s->group_lock);
                /* On PostgreSQL the counts are read afresh for every use (other nodes write
                 * too), so the submission store's need not be copied. */
                group_commit(s->submit ? s->submit : s, batch);
                submit_answer_all(s, batch);
                pthread_mutex_lock(&s->group_lock);
        }
}

static int submit_enqueue(Store *s, const JobSubmit *j, bool want_json, store_submit_fn done, void *userdata) {
        SubmitWaiter *w = NULL;
        int r;

        assert(s);
        assert(j);
        assert(done);
        r = submit_waiter_new(j, &w);
        if (r < 0)
                return r;
        w->want_json = want_json;
        w->done = done;
        w->userdata = userdata;
        pthread_mutex_lock(&s->group_lock);
        if (s->stopping) {
                pthread_mutex_unlock(&s->group_lock);
                submit_waiter_free(w);
                return -ESHUTDOWN;
        }
        *s->group_tail = w;
        s->group_tail = &w->next;
        pthread_cond_signal(&s->group_cond);
        pthread_mutex_unlock(&s->group_lock);
        return 0;
}

int store_job_submit_async(Store *s, const JobSubmit *j, store_submit_fn done, void *userdata) {
        return submit_enqueue(s, j, true, done, userdata);
}

/* The blocking submission: the asynchronous one, and a wait for its answer. */
typedef struct SubmitSync {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
        int r;
        int64_t id;
        bool existing;
        bool want_text;
        char *text; /* with want_text: the job, as text (the JSON stays on the store thread) */
        char err[STORE_ERROR_MAX];
} SubmitSync;

static void submit_sync_done(void *userdata, int r, int64_t id, bool existing, const char *err, json_t *job_json) {
        SubmitSync *sync = userdata;
        char *text = NULL;

        if (r >= 0 && sync->want_text && !(text = job_json ? json_dumps(job_json, JSON_COMPACT) : NULL)) {
                r = -ENOMEM;
                err = "out of memory for the job's text";
        }
        pthread_mutex_lock(&sync->lock);
        sync->r = r;
        sync->id = id;
        sync->existing = existing;
        sync->text = text;
        snprintf(sync->err, sizeof(sync->err), "%s", err);
        sync->done = true;
        pthread_cond_signal(&sync->cond);
        pthread_mutex_unlock(&sync->lock);
}

static int submit_sync(Store *s, const JobSubmit *j, int64_t *ret_id, bool *ret_existing, char **ret_text, char *err,
                       size_t errlen) {
        SubmitSync sync = { .want_text = ret_text != NULL };
        int r;

        pthread_mutex_init(&sync.lock, NULL);
        pthread_cond_init(&sync.cond, NULL);
        r = submit_enqueue(s, j, ret_text != NULL, submit_sync_done, &sync);
        if (r < 0)
                snprintf(sync.err, sizeof(sync.err), "job database %s: cannot queue the job: %s", s->path, strerror(-r));
        else {
                pthread_mutex_lock(&sync.lock);
                while (!sync.done)
                        pthread_cond_wait(&sync.cond, &sync.lock);
                pthread_mutex_unlock(&sync.lock);
                r = sync.r;
        }
        pthread_mutex_destroy(&sync.lock);
        pthread_cond_destroy(&sync.cond);
        if (r < 0) {
                snprintf(err, errlen, "%s", sync.err);
                return r;
        }
        *ret_id = sync.id;
        *ret_existing = sync.existing;
        if (ret_text)
                *ret_text = sync.text;
        return 0;
}

int store_job_submit(Store *s, const JobSubmit *j, int64_t *ret_id, bool *ret_existing, char *err, size_t errlen) {
        return submit_sync(s, j, ret_id, ret_existing, NULL, err, errlen);
}

int store_job_submit_text(Store *s, const JobSubmit *j, int64_t *ret_id, bool *ret_existing, char **ret_text, char *err,
                          size_t errlen) {
        assert(ret_text);
        return submit_sync(s, j, ret_id, ret_existing, ret_text, err, errlen);
}

/* A job as shown by /jobs: the one place its JSON is built, from a row read back or from the
 * row a submission has just written. */
typedef struct JobView {
        int64_t id;
        const char *state, *operation, *tenant, *project, *non_versioned, *tenant_code, *client;
        int64_t n_items, attempts, next_run_at, created_at, updated_at, started_at, finished_at;
        bool has_upstream_status;
        int64_t upstream_status;
        const char *error, *response_body, *idempotency_key;
} JobView;

static json_t *job_view_json(const JobView *v) {
        json_t *j;

        j = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:I, s:I}", "id", (json_int_t) v->id, "state",
                      v->state, "operation", v->operation, "tenant", v->tenant, "project", v->project, "non_versioned",
                      v->non_versioned, "tenant_code", v->tenant_code, "client", v->client, "items",
                      (json_int_t) v->n_items, "attempts", (json_int_t) v->attempts);
        if (!j)
                return NULL;
        if (streq(v->state, "queued"))
                json_object_set_new(j, "next_run_at", json_time(v->next_run_at));
        json_object_set_new(j, "created_at", json_time(v->created_at));
        json_object_set_new(j, "updated_at", json_time(v->updated_at));
        json_object_set_new(j, "started_at", json_time(v->started_at));
        json_object_set_new(j, "finished_at", json_time(v->finished_at));
        json_object_set_new(j, "upstream_status", v->has_upstream_status ? json_integer(v->upstream_status) : json_null());
        json_object_set_new(j, "error", v->error ? json_string(v->error) : json_null());
        json_object_set_new(j, "result", v->response_body ? json_loads(v->response_body, 0, NULL) : json_null());
        if (!json_object_get(j, "result"))
                json_object_set_new(j, "result", json_null());
        if (v->idempotency_key)
                json_object_set_new(j, "idempotency_key", json_string(v->idempotency_key));
        return j;
}

/* A row of JOB_COLUMNS. */
static json_t *job_row_json(Stmt *st) {
        return job_view_json(&(JobView) {
                .id = db_column_int64(st->st, 0),
                .state = col_text(st, 1),
                .operation = col_text(st, 2),
                .tenant = col_text(st, 3),
                .project = col_text(st, 4),
                .non_versioned = col_text(st, 5),
                .tenant_code = col_text(st, 6),
                .client = col_text(st, 7),
                .n_items = db_column_int64(st->st, 8),
                .attempts = db_column_int64(st->st, 9),
                .next_run_at = db_column_int64(st->st, 10),
                .created_at = db_column_int64(st->st, 11),
                .updated_at = db_column_int64(st->st, 12),
                .started_at = db_column_int64(st->st, 13),
                .finished_at = db_column_int64(st->st, 14),
                .has_upstream_status = !db_column_is_null(st->st, 15),
                .upstream_status = db_column_int64(st->st, 15),
                .error = col_text(st, 16),
                .response_body = col_text(st, 18),
                .idempotency_key = col_text(st, 19),
        });
}

/* The job a submission has just committed, as store_job_json(s, id, false) would read it:
 * the values submit_one_locked() bound to STMT_INSERT_JOB, and the columns' defaults. */
static json_t *submitted_job_json(const SubmitWaiter *w) {
        return job_view_json(&(JobView) {
                .id = w->id,
                .state = job_state_to_string(JOB_QUEUED),
                .operation = job_op_to_string(w->op),
                .tenant = w->tenant,
                .project = w->project,
                .non_versioned = w->non_versioned,
                .tenant_code = w->tenant_code,
                .client = w->client,
                .n_items = (int64_t) w->n_items,
                .next_run_at = w->created_ms,
                .created_at = w->created_ms,
                .updated_at = w->created_ms,
                .idempotency_key = w->idempotency_key,
        });
}

/* Per-item results of a job, through the connection c (its lock held). */
/* The item results of a job through connection c: 0, or a negative errno (the read failed). */
static int item_results_read(Conn *c, int64_t job_id, json_t **ret) {
        json_t *a = json_array();
        Stmt st = {};
        int r;

        if (!a)
                return -ENOMEM;
        r = conn_stmt(c, STMT_ITEM_RESULTS, &st);
        if (r >= 0) {
                db_bind_int64(st.st, 1, job_id);
                while ((r = step(&st)) > 0) {
                        json_t *o = json_pack("{s:I, s:s}", "index", (json_int_t) db_column_int64(st.st, 0), "state",
                                              col_text(&st, 1));
                        if (col_text(&st, 2))
                                json_object_set_new(o, "correlationId", json_string(col_text(&st, 2)));
                        json_object_set_new(o, "item", json_loads(col_text(&st, 4), JSON_DECODE_ANY, NULL));
                        if (col_text(&st, 3))
                                json_object_set_new(o, "result", json_loads(col_text(&st, 3), 0, NULL));
                        json_array_append_new(a, o);
                }
                stmt_done(&st);
        }
        if (r < 0) {
                json_decref(a);
                return r;
        }
        *ret = a;
        return 0;
}

static json_t *item_results_conn(Conn *c, int64_t job_id) {
        json_t *a = NULL;

        return item_results_read(c, job_id, &a) < 0 ? json_array() : a;
}

json_t *store_job_item_results(Store *s, int64_t job_id) {
        /* Called inside store_begin/store_end: the write connection, which sees the transaction. */
        if (tx_usable(s) < 0)
                return json_array();
        return item_results_conn(&s->w, job_id);
}

json_t *store_job_client_correlation_ids(Store *s, int64_t job_id) {
        json_t *ids = json_array();
        Stmt st = {};
        int r;

        if (!ids || tx_usable(s) < 0 ||
            prepare(s, &st, "SELECT correlation_id FROM client_correlation_ids WHERE job_id = ?") < 0)
                return ids;
        db_bind_int64(st.st, 1, job_id);
        while ((r = step_row(s, &st)) > 0)
                if (col_text(&st, 0))
                        json_array_append_new(ids, json_string(col_text(&st, 0)));
        stmt_done(&st);
        return ids;
}

int store_job_text(Store *s, int64_t id, char **ret_text, size_t *ret_len) {
        size_t slot = (size_t) ((uint64_t) id % STORE_FINAL_TEXTS), len;
        const char *state;
        uint64_t gen;
        char *text;
        json_t *j;
        int r;

        pthread_mutex_lock(&s->final_lock);
        if (s->final[slot].id == id && s->final[slot].text) {
                text = malloc(s->final[slot].len + 1);
                if (text) {
                        memcpy(text, s->final[slot].text, s->final[slot].len + 1);
                        *ret_len = s->final[slot].len;
                }
                pthread_mutex_unlock(&s->final_lock);
                if (!text)
                        return -ENOMEM;
                *ret_text = text;
                return 0;
        }
        gen = s->final_gen;
        pthread_mutex_unlock(&s->final_lock);

        r = store_job_read(s, id, true, &j);
        if (r < 0)
                return r;
        text = json_dumps(j, JSON_COMPACT);
        state = json_string_value(json_object_get(j, "state"));
        /* Not when other nodes may retry a final job: nothing here would hear of it. */
        if (text && state && !s->dialect->shared && job_state_is_final(job_state_from_string(state)) &&
            (len = strlen(text)) <= STORE_FINAL_TEXT_MAX) {
                char *keep = strdup(text);

                pthread_mutex_lock(&s->final_lock);
                if (keep && s->final_gen == gen) {
                        free(s->final[slot].text);
                        s->final[slot].id = id;
                        s->final[slot].text = TAKE_PTR(keep);
                        s->final[slot].len = len;
                }
                pthread_mutex_unlock(&s->final_lock);
                free(keep);
        }
        json_decref(j);
        if (!text)
                return -ENOMEM;
        *ret_text = text;
        *ret_len = strlen(text);
        return 0;
}

int store_job_read(Store *s, int64_t id, bool with_items, json_t **ret) {
        json_t *j = NULL, *items = NULL;
        Stmt st = {};
        int r;

        read_lock_take(s);
        if (with_items)
                read_begin(s); /* the job and its items from one snapshot */
        r = read_prepare(s, &st, STMT_JOB_GET);
        if (r >= 0) {
                db_bind_int64(st.st, 1, id);
                r = step(&st);
                if (r > 0)
                        r = (j = job_row_json(&st)) ? 0 : -ENOMEM;
                else if (r == 0)
                        r = -ENOENT;
                stmt_done(&st);
        }
        if (r >= 0 && with_items && (r = item_results_read(&s->r, id, &items)) >= 0)
                json_object_set_new(j, "item_results", items);
        if (with_items)
                read_end(s);
        pthread_mutex_unlock(&s->read_lock);
        if (r < 0) {
                json_decref(j);
                return r;
        }
        *ret = j;
        return 0;
}

json_t *store_job_json(Store *s, int64_t id, bool with_items) {
        json_t *j = NULL;

        return store_job_read(s, id, with_items, &j) < 0 ? NULL : j;
}

/* The list's statement for a filter with more than a state in it: fixed pieces only, the
 * values bound by number (?1 state, ?2 before, ?3 limit, ?4 operation, ?5 client, ?6 since).
 * Not kept prepared: the shapes are many and the call is rare next to the plain list. */
static int list_prepare_filtered(Store *s, const StoreJobFilter *f, Stmt *st) {
        char sql[1024];
        int n;

        n = snprintf(sql, sizeof(sql), "SELECT " JOB_COLUMNS " FROM jobs WHERE id < ?2%s%s%s%s ORDER BY id DESC LIMIT ?3",
                     f->state >= 0 ? " AND state = ?1" : "", f->op >= 0 ? " AND operation = ?4" : "",
                     f->client ? " AND client = ?5" : "", f->since_ms > 0 ? " AND created_at >= ?6" : "");
        if (n < 0 || (size_t) n >= sizeof(sql))
                return -ENOBUFS;
        st->st = NULL;
        st->cached = false;
        return from_db(db_prepare(s->r.db, sql, false, &st->st));
}

int store_jobs_find(Store *s, const StoreJobFilter *f, int64_t before_id, unsigned limit, json_t **ret) {
        const bool plain = f->op < 0 && !f->client && f->since_ms <= 0;
        json_t *a = json_array();
        Stmt st = {};
        int r, rc = 0;

        if (!a)
                return -ENOMEM;
        read_lock_take(s);
        if (plain)
                r = read_prepare(s, &st, f->state >= 0 ? STMT_LIST_STATE : STMT_LIST_ALL);
        else
                r = list_prepare_filtered(s, f, &st);
        if (r >= 0) {
                if (f->state >= 0)
                        bind_text(&st, 1, job_state_to_string(f->state));
                db_bind_int64(st.st, 2, before_id > 0 ? before_id : INT64_MAX);
                db_bind_int64(st.st, 3, limit);
                if (!plain && f->op >= 0)
                        bind_text(&st, 4, job_op_to_string(f->op));
                if (!plain && f->client)
                        bind_text(&st, 5, f->client);
                if (!plain && f->since_ms > 0)
                        db_bind_int64(st.st, 6, f->since_ms);
                while ((rc = step(&st)) > 0)
                        json_array_append_new(a, job_row_json(&st));
                stmt_done(&st);
                if (rc < 0)
                        r = rc;
        }
        pthread_mutex_unlock(&s->read_lock);
        if (r < 0) {
                json_decref(a);
                return r;
        }
        *ret = a;
        return 0;
}

int store_jobs_list(Store *s, JobState state, int64_t before_id, unsigned limit, json_t **ret) {
        StoreJobFilter f = STORE_JOB_FILTER_NONE;

        f.state = state;
        return store_jobs_find(s, &f, before_id, limit, ret);
}

/* The state of a job through the write connection (inside a transaction: it sees its own changes). */
static JobState state_locked(Store *s, int64_t id) {
        JobState state = _JOB_STATE_INVALID;
        Stmt st = {};

        if (prepare_cached(s, &st, STMT_JOB_STATE) < 0)
                return state;
        db_bind_int64(st.st, 1, id);
        if (step(&st) > 0)
                state = job_state_from_string(col_text(&st, 0));
        stmt_done(&st);
        return state;
}

JobState store_job_state(Store *s, int64_t id) {
        JobState state = _JOB_STATE_INVALID;
        Stmt st = {};

        read_lock_take(s);
        if (read_prepare(s, &st, STMT_JOB_STATE) >= 0) {
                db_bind_int64(st.st, 1, id);
                if (step(&st) > 0)
                        state = job_state_from_string(col_text(&st, 0));
                stmt_done(&st);
        }
        pthread_mutex_unlock(&s->read_lock);
        return state;
}

/* Move a job from one state to another if the table allows it and the job is in `from`. */
static int transition_locked(Store *s, int64_t id, JobState from, JobState to, const char *extra_set) {
        char sql[512];
        Stmt st = {};
        int r;

        if (!job_state_transition_ok(from, to))
                return -EINVAL;
        if (job_state_is_final(from)) {
                s->tx_touched_final = true;
                final_texts_clear(s); /* now, and again at the commit */
        }
        /* A job that stops running leaves its round, if it was in one. */
        snprintf(sql, sizeof(sql), "UPDATE jobs SET state = ?, updated_at = ?%s%s%s WHERE id = ? AND state = ?",
                 from == JOB_RUNNING ? ", round_id = NULL" : "", extra_set ? ", " : "", extra_set ? extra_set : "");
        r = prepare(s, &st, sql);
        if (r < 0)
                return r;
        bind_text(&st, 1, job_state_to_string(to));
        db_bind_int64(st.st, 2, now_ms());
        db_bind_int64(st.st, 3, id);
        bind_text(&st, 4, job_state_to_string(from));
        r = step_done(s, &st);
        stmt_done(&st);
        if (r < 0)
                return r;
        if (db_changes(s->w.db) != 1)
                return -ESTALE;
        s->tx_delta += (int64_t) (!job_state_is_final(to)) - (int64_t) (!job_state_is_final(from));
        return 0;
}

/* The job as it stands inside the open write transaction (the write connection, its lock held):
 * what the transaction's commit will make of it. */
static int job_read_locked(Store *s, int64_t id, json_t **ret) {
        Stmt st = {};
        int r;

        r = prepare_cached(s, &st, STMT_JOB_GET);
        if (r < 0)
                return r;
        db_bind_int64(st.st, 1, id);
        r = step_row(s, &st);
        if (r > 0)
                r = (*ret = job_row_json(&st)) ? 0 : -ENOMEM;
        else if (r == 0)
                r = -ENOENT;
        stmt_done(&st);
        return r;
}

/* A cancel or a retry, and (with ret_job) the job as it becomes, read before the commit: either
 * the change and the job that shows it, or neither. */
static int manual_transition(Store *s, int64_t id, JobState from, JobState to, const char *extra_set,
                             JobState *ret_state, json_t **ret_job) {
        json_t *job = NULL;
        JobState cur;
        int r;

        r = store_begin(s);
        if (r < 0)
                return r;
        cur = state_locked(s, id);
        if (cur == _JOB_STATE_INVALID) {
                store_end(s, false);
                return -ENOENT;
        }
        if (cur != from) {
                store_end(s, false);
                *ret_state = cur;
                return -EBUSY;
        }
        r = transition_locked(s, id, from, to, extra_set);
        if (r < 0) {
                store_end(s, false);
                return r;
        }
        if (to == JOB_QUEUED) {
                Stmt st = {};
                if (prepare(s, &st, "UPDATE job_items SET state = 'pending', result = NULL WHERE job_id = ? AND state != 'succeeded'") >= 0) {
                        db_bind_int64(st.st, 1, id);
                        r = step_done(s, &st);
                        stmt_done(&st);
                }
        }
        if (r >= 0 && ret_job)
                r = job_read_locked(s, id, &job);
        if (r < 0) {
                store_end(s, false);
                return r;
        }
        r = store_end(s, true);
        if (r < 0) {
                json_decref(job);
                return r;
        }
        *ret_state = to;
        if (ret_job)
                *ret_job = job;
        return 0;
}

int store_job_cancel(Store *s, int64_t id, JobState *ret_state, json_t **ret_job) {
        char set[64];

        snprintf(set, sizeof(set), "finished_at = %" PRId64, now_ms());
        return manual_transition(s, id, JOB_QUEUED, JOB_CANCELLED, set, ret_state, ret_job);
}

int store_job_retry(Store *s, int64_t id, JobState *ret_state, json_t **ret_job) {
        char set[160];

        snprintf(set, sizeof(set),
                 "attempts = 0, solo = 0, next_run_at = %" PRId64 ", finished_at = NULL, error = NULL, "
                 "response_status = NULL, response_body = NULL",
                 now_ms());
        return manual_transition(s, id, JOB_FAILED, JOB_QUEUED, set, ret_state, ret_job);
}

int store_job_response(Store *s, int64_t id, long *ret_status, char **ret_body) {
        Stmt st = {};
        int r = -ENOENT;

        read_lock_take(s);
        if (read_prepare(s, &st, STMT_JOB_RESPONSE) >= 0) {
                db_bind_int64(st.st, 1, id);
                if (step(&st) > 0) {
                        JobState state = job_state_from_string(col_text(&st, 0));
                        if (!job_state_is_final(state) || db_column_is_null(st.st, 1))
                                r = -EAGAIN;
                        else {
                                *ret_status = (long) db_column_int64(st.st, 1);
                                *ret_body = strdup(strempty(col_text(&st, 2)));
                                r = *ret_body ? 0 : -ENOMEM;
                        }
                }
                stmt_done(&st);
        }
        pthread_mutex_unlock(&s->read_lock);
        return r;
}

/* The counts kept by schema 5's triggers and the oldest queued job from the index on
 * (state, created_at): a few rows read, whatever the size of the job table, through the read
 * connection in one snapshot. */
void store_counts_get(Store *s, int64_t ret_counts[_JOB_STATE_MAX], int64_t *ret_oldest_queued) {
        if (s->dialect->shared) {
                /* Other nodes' jobs too: read again when a second old (the read connection, so
                 * never behind a commit). */
                usec_t at;

                pthread_mutex_lock(&s->counts_lock);
                at = s->counts_at;
                pthread_mutex_unlock(&s->counts_lock);
                if (clock_now() - at + 1 > STORE_SHARED_COUNTS_MAX_AGE) {
                        read_lock_take(s);
                        counts_refresh(s, &s->r);
                        pthread_mutex_unlock(&s->read_lock);
                }
        }
        pthread_mutex_lock(&s->counts_lock);
        memcpy(ret_counts, s->counts, sizeof(s->counts));
        *ret_oldest_queued = s->oldest_queued;
        pthread_mutex_unlock(&s->counts_lock);
}

json_t *store_counts(Store *s, int64_t now) {
        int64_t counts[_JOB_STATE_MAX], oldest;
        json_t *j;

        store_counts_get(s, counts, &oldest);
        j = json_pack("{s:I, s:I, s:I, s:I, s:I}", "queued", (json_int_t) counts[JOB_QUEUED], "running",
                      (json_int_t) counts[JOB_RUNNING], "succeeded", (json_int_t) counts[JOB_SUCCEEDED], "failed",
                      (json_int_t) counts[JOB_FAILED], "cancelled", (json_int_t) counts[JOB_CANCELLED]);
        if (j)
                json_object_set_new(j, "oldest_queued_age_seconds",
                                    oldest < 0 ? json_null()
                                               : json_real(oldest < now ? (double) (now - oldest) / 1000.0 : 0.0));
        return j;
}

int store_prune(Store *s, int64_t now, int64_t keep_succeeded_ms, int64_t keep_failed_ms) {
        static const JobState finals[] = { JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED };
        int r, n = 0;

        r = store_begin(s);
        if (r < 0)
                return r;
        s->tx_touched_final = true;
        for (size_t i = 0; i < ELEMENTSOF(finals) && r >= 0; i++) {
                Stmt st = {};

                r = prepare_cached(s, &st, STMT_PRUNE);
                if (r < 0)
                        break;
                bind_text(&st, 1, job_state_to_string(finals[i]));
                db_bind_int64(st.st, 2, now - (finals[i] == JOB_SUCCEEDED ? keep_succeeded_ms : keep_failed_ms));
                r = step_done(s, &st);
                if (r >= 0)
                        n += db_changes(s->w.db);
                stmt_done(&st);
        }
        r = store_end(s, r >= 0) < 0 && r >= 0 ? -EIO : r;
        if (r >= 0 && n > 0) {
                /* Give the WAL back to the database file now and then (outside the transaction:
                 * a checkpoint cannot run inside one). */
                pthread_mutex_lock(&s->lock);
                (void) checkpoint(s);
                pthread_mutex_unlock(&s->lock);
        }
        return r < 0 ? r : n;
}

json_t *store_query_plans(Store *s) {
        const Dialect *d = s->dialect;
        json_t *a;

        if (!d->explain)
                return NULL; /* DIALECT: no plan to read */
        a = json_array();
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; a && i < _STMT_MAX; i++) {
                const char *sql = stmt_sql(&s->w, (StmtId) i);
                _cleanup_free_ char *explain = NULL;
                DbStmt *st = NULL;
                json_t *plan;

                if (strncmp(sql, "SELECT", 6) != 0 && strncmp(sql, "INSERT", 6) != 0 && strncmp(sql, "UPDATE", 6) != 0 &&
                    strncmp(sql, "DELETE", 6) != 0)
                        continue; /* transaction control */
                if (asprintf(&explain, "%s%s", d->explain, sql) < 0 || db_prepare(s->w.db, explain, false, &st) < 0) {
                        json_decref(a);
                        a = NULL;
                        break;
                }
                plan = json_array();
                while (db_step(st) > 0)
                        json_array_append_new(plan, json_string(db_column_text(st, d->explain_detail)));
                db_finalize(st);
                json_array_append_new(a, json_pack("{s:s, s:s, s:o}", "statement", stmt_table[i].name, "sql", sql,
                                                   "plan", plan));
        }
        pthread_mutex_unlock(&s->lock);
        return a;
}

/* ---- batches ---- */

Batch *batch_free(Batch *b) {
        if (!b)
                return NULL;
        for (size_t i = 0; i < b->n_items; i++) {
                json_decref(b->items[i].item);
                json_decref(b->items[i].before);
                free(b->items[i].correlation_id);
        }
        free(b->items);
        free(b->jobs);
        free(b->tenant);
        free(b->project);
        free(b->non_versioned);
        free(b->tenant_code);
        free(b->upstream_headers);
        free(b->scope);
        json_decref(b->extra);
        free(b);
        return NULL;
}

typedef struct JobHead {
        int64_t id;
        JobOp op;
        char *tenant, *project, *non_versioned, *tenant_code, *extra, *upstream_headers;
        bool solo, in_doubt;
        int64_t n_items, attempts, next_run_at, created_at;
} JobHead;

static void job_head_done(JobHead *h) {
        free(h->tenant);
        free(h->project);
        free(h->non_versioned);
        free(h->tenant_code);
        free(h->extra);
        free(h->upstream_headers);
        memset(h, 0, sizeof(*h));
}

#define HEAD_COLUMNS \
        "id, operation, tenant, project, non_versioned, tenant_code, extra, solo, n_items, attempts, next_run_at, in_doubt, " \
        "created_at, upstream_headers"

static void job_head_read(Stmt *st, JobHead *h) {
        h->id = db_column_int64(st->st, 0);
        h->op = job_op_from_string(col_text(st, 1));
        h->tenant = strdup(strempty(col_text(st, 2)));
        h->project = strdup(strempty(col_text(st, 3)));
        h->non_versioned = strdup(strempty(col_text(st, 4)));
        h->tenant_code = strdup(strempty(col_text(st, 5)));
        h->extra = col_text(st, 6) ? strdup(col_text(st, 6)) : NULL;
        h->solo = db_column_int64(st->st, 7) != 0;
        h->n_items = db_column_int64(st->st, 8);
        h->attempts = db_column_int64(st->st, 9);
        h->next_run_at = db_column_int64(st->st, 10);
        h->in_doubt = db_column_int64(st->st, 11) != 0;
        h->created_at = db_column_int64(st->st, 12);
        h->upstream_headers = strdup(strempty(col_text(st, 13)));
}

/* The group of jobs H may share a call with (coalesce.h), or NULL when it goes alone: equal
 * operation, tenant, project, NonVersioned, tenantCode and other write headers; no other body
 * members; not solo. Length-prefixed, so no value can pose as another's. */
/* The heads that jobs sharing a call or a round must have in common (every one but the
 * operation), or NULL for a job that shares neither. */
static char *head_scope(const JobHead *h) {
        char *g = NULL;

        if (h->solo || h->extra || h->op == JOB_OP_CALL)
                return NULL;
        if (asprintf(&g, "%zu:%s|%zu:%s|%zu:%s|%zu:%s|%zu:%s", strlen(h->tenant), h->tenant, strlen(h->project),
                     h->project, strlen(h->non_versioned), h->non_versioned, strlen(h->tenant_code), h->tenant_code,
                     strlen(strempty(h->upstream_headers)), strempty(h->upstream_headers)) < 0)
                return NULL;
        return g;
}

/* Jobs of one group may share a call: the scope and the operation. */
static char *head_group(const char *scope, JobOp op) {
        char *g = NULL;

        if (!scope || asprintf(&g, "%s|%s", job_op_to_string(op), scope) < 0)
                return NULL;
        return g;
}

/* How many queued jobs, oldest first, one claim weighs, and how many of their items at most
 * (a call takes at most 1,000): later ones wait for a later claim. */
#define CLAIM_LOOKAHEAD 10000
#define CLAIM_LOOKAHEAD_ITEMS 20000

/* A queued job as the claim weighs it. */
typedef struct Candidate {
        JobHead head;
        char *scope, *group;
        char **keys;
        size_t n_keys, allocated;
} Candidate;

typedef struct KeyList {
        char **keys;
        size_t n, allocated;
} KeyList;

static int key_list_add(char ***keys, size_t *n, size_t *allocated, const char *prefix, const char *key) {
        char *k;

        if (*n >= *allocated) {
                size_t na = *allocated ? *allocated * 2 : 4;
                char **nk = reallocarray(*keys, na, sizeof(char *));

                if (!nk)
                        return -ENOMEM;
                *keys = nk;
                *allocated = na;
        }
        if (asprintf(&k, "%s%s", prefix, key) < 0)
                return -ENOMEM;
        (*keys)[(*n)++] = k;
        return 0;
}

static void keys_free(char **keys, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(keys[i]);
        free(keys);
}

/* The keys an item row names (coalesce.h): its permission, or a create's correlation ID. */
static int row_keys(Stmt *st, int col, char ***keys, size_t *n, size_t *allocated) {
        const char *permission = col_text(st, col), *correlation = col_text(st, col + 1);
        int r = 0;

        if (permission)
                r = key_list_add(keys, n, allocated, "", permission);
        if (r >= 0 && correlation)
                r = key_list_add(keys, n, allocated, COALESCE_CORRELATION_PREFIX, correlation);
        return r;
}

static int batch_add_job(Store *s, Batch *b, const JobHead *h) {
        BatchJob *jobs;
        Stmt st = {};
        int r;

        jobs = realloc(b->jobs, (b->n_jobs + 1) * sizeof(*jobs));
        if (!jobs)
                return -ENOMEM;
        b->jobs = jobs;
        b->jobs[b->n_jobs] = (BatchJob) { .id = h->id, .attempts = (unsigned) h->attempts, .in_doubt = h->in_doubt,
                                           .created_at_ms = h->created_at, .first_item = b->n_items };

        r = prepare(s, &st, "SELECT idx, item, correlation_id, state FROM job_items WHERE job_id = ? ORDER BY idx");
        if (r < 0)
                return r;
        db_bind_int64(st.st, 1, h->id);
        while ((r = step_row(s, &st)) > 0) {
                BatchItem *items = realloc(b->items, (b->n_items + 1) * sizeof(*items));
                if (!items) {
                        stmt_done(&st);
                        return -ENOMEM;
                }
                b->items = items;
                b->items[b->n_items] = (BatchItem) {
                        .job_id = h->id,
                        .idx = (unsigned) db_column_int64(st.st, 0),
                        .item = json_loads(col_text(&st, 1), JSON_DECODE_ANY, NULL),
                        .correlation_id = col_text(&st, 2) ? strdup(col_text(&st, 2)) : NULL,
                        .done = streq(strempty(col_text(&st, 3)), "succeeded"),
                        .in_doubt = h->in_doubt,
                };
                b->n_items++;
                b->jobs[b->n_jobs].n_items++;
                if (!b->items[b->n_items - 1].item) {
                        stmt_done(&st);
                        return -ENOMEM;
                }
        }
        stmt_done(&st);
        if (r < 0)
                return r; /* never a batch with some of a job's items */
        b->n_jobs++;
        return 0;
}

static int batch_from_head(Batch **ret, const JobHead *h) {
        Batch *b = calloc(1, sizeof(*b));

        if (!b)
                return -ENOMEM;
        b->op = h->op;
        b->tenant = strdup(h->tenant);
        b->project = strdup(h->project);
        b->non_versioned = strdup(h->non_versioned);
        b->tenant_code = strdup(h->tenant_code);
        b->upstream_headers = strdup(strempty(h->upstream_headers));
        b->extra = h->extra ? json_loads(h->extra, 0, NULL) : NULL;
        if (!b->tenant || !b->project || !b->non_versioned || !b->tenant_code || !b->upstream_headers) {
                batch_free(b);
                return -ENOMEM;
        }
        *ret = b;
        return 0;
}

int store_batch_claim(Store *s, int64_t now, size_t batch_max, const char *round_scope, int64_t round_id, Batch **ret,
                      int64_t *ret_next_due_ms) {
        _cleanup_(batch_freep) Batch *b = NULL;
        Candidate *cand = NULL;
        CoalesceJob *jobs = NULL;
        KeyList running_keys = {};
        CoalesceRunning running = {};
        size_t n = 0, allocated = 0, *picked = NULL, n_picked = 0, window_items = 0;
        int64_t next_due = INT64_MAX, last_running = 0;
        Stmt st = {};
        int r;

        *ret = NULL;
        r = begin_fenced(s);
        if (r < 0)
                return r;
        r = check_file(s, NULL, 0); /* nothing is claimed into a database that is gone */
        if (r < 0)
                goto out;

        /* What is in flight: its keys are held, and a call job waits for it. */
        r = prepare(s, &st,
                    "SELECT j.id, j.operation, i.conflict_key, i.correlation_id FROM jobs j LEFT JOIN job_items i "
                    "ON i.job_id = j.id WHERE j.state = 'running' AND j.operation != 'export' ORDER BY j.id");
        while (r >= 0 && (r = step_row(s, &st)) > 0) {
                if (db_column_int64(st.st, 0) != last_running) {
                        last_running = db_column_int64(st.st, 0);
                        running.n_jobs++;
                }
                running.call |= streq(strempty(col_text(&st, 1)), job_op_to_string(JOB_OP_CALL));
                r = row_keys(&st, 2, &running_keys.keys, &running_keys.n, &running_keys.allocated);
        }
        stmt_done(&st);
        if (r < 0)
                goto out;
        running.keys = (const char *const *) running_keys.keys;
        running.n_keys = running_keys.n;
        running.scope = round_scope;

        /* The queued jobs the next call may take from, oldest first. */
        /* DIALECT: where other nodes claim too, rows another claim holds are passed over. */
        r = prepare(s, &st, s->dialect->shared
                                    ? "SELECT " HEAD_COLUMNS " FROM jobs WHERE state = 'queued' AND operation != 'export' "
                                      "ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED"
                                    : "SELECT " HEAD_COLUMNS " FROM jobs WHERE state = 'queued' AND operation != 'export' "
                                      "ORDER BY id LIMIT ?");
        if (r >= 0)
                db_bind_int64(st.st, 1, CLAIM_LOOKAHEAD);
        while (r >= 0 && window_items < CLAIM_LOOKAHEAD_ITEMS && (r = step_row(s, &st)) > 0) {
                if (n >= allocated) {
                        size_t na = allocated ? allocated * 2 : 64;
                        Candidate *nc = reallocarray(cand, na, sizeof(*cand));

                        if (!nc) {
                                r = -ENOMEM;
                                break;
                        }
                        cand = nc;
                        allocated = na;
                }
                cand[n] = (Candidate) {};
                job_head_read(&st, &cand[n].head);
                cand[n].scope = head_scope(&cand[n].head);
                cand[n].group = head_group(cand[n].scope, cand[n].head.op);
                if (cand[n].head.next_run_at > now && cand[n].head.next_run_at < next_due)
                        next_due = cand[n].head.next_run_at;
                window_items += (size_t) cand[n].head.n_items;
                n++;
        }
        stmt_done(&st);
        if (r > 0)
                r = 0; /* stopped at the item bound */
        /* Each candidate's keys, by its own rows only (a finished job's items are never read). */
        if (r >= 0 && n > 0)
                r = prepare(s, &st,
                            "SELECT job_id, conflict_key, correlation_id FROM job_items WHERE job_id = ? AND "
                            "(conflict_key IS NOT NULL OR correlation_id IS NOT NULL)");
        for (size_t i = 0; r >= 0 && i < n; i++) {
                db_reset(st.st);
                db_bind_int64(st.st, 1, cand[i].head.id);
                while ((r = step_row(s, &st)) > 0) {
                        r = row_keys(&st, 1, &cand[i].keys, &cand[i].n_keys, &cand[i].allocated);
                        if (r < 0)
                                break;
                }
        }
        if (n > 0)
                stmt_done(&st);
        if (r < 0)
                goto out;

        jobs = calloc(n ? n : 1, sizeof(*jobs));
        picked = calloc(n ? n : 1, sizeof(*picked));
        if (!jobs || !picked) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++)
                jobs[i] = (CoalesceJob) {
                        .group = cand[i].group,
                        .scope = cand[i].scope,
                        .call = cand[i].head.op == JOB_OP_CALL,
                        .due = cand[i].head.next_run_at <= now,
                        .n_items = (size_t) cand[i].head.n_items,
                        .keys = (const char *const *) cand[i].keys,
                        .n_keys = cand[i].n_keys,
                };
        r = coalesce_pick(jobs, n, &running, batch_max, picked, &n_picked);
        if (r < 0)
                goto out;
        if (n_picked == 0) {
                *ret_next_due_ms = next_due;
                r = 0;
                goto out;
        }

        r = batch_from_head(&b, &cand[picked[0]].head);
        if (r >= 0 && cand[picked[0]].scope && !(b->scope = strdup(cand[picked[0]].scope)))
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n_picked; i++)
                r = batch_add_job(s, b, &cand[picked[i]].head);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < b->n_jobs; i++) {
                char set[96];

                if (round_id > 0)
                        snprintf(set, sizeof(set), "started_at = %" PRId64 ", round_id = %" PRId64, now_ms(), round_id);
                else
                        snprintf(set, sizeof(set), "started_at = %" PRId64, now_ms());
                r = transition_locked(s, b->jobs[i].id, JOB_QUEUED, JOB_RUNNING, set);
                if (r < 0)
                        goto out;
        }
        r = 0;
out:
        for (size_t i = 0; i < n; i++) {
                job_head_done(&cand[i].head);
                free(cand[i].scope);
                free(cand[i].group);
                keys_free(cand[i].keys, cand[i].n_keys);
        }
        free(cand);
        free(jobs);
        free(picked);
        keys_free(running_keys.keys, running_keys.n);
        {
                int e = store_end(s, r >= 0); /* the fence's refusal (-ESTALE) comes from here */

                r = r < 0 ? r : e;
        }
        if (r >= 0)
                *ret = TAKE_PTR(b);
        return r;
}

/* Running jobs as a batch each: those of round ROUND, or (ROUND 0) those in no round that exists. */
static int running_batches(Store *s, int64_t round, Batch ***ret, size_t *ret_n) {
        Batch **list = NULL;
        size_t n = 0;
        Stmt st = {};
        int r;

        pthread_mutex_lock(&s->lock);
        if (round > 0)
                r = prepare(s, &st, "SELECT " HEAD_COLUMNS " FROM jobs WHERE round_id = ? AND state = 'running' ORDER BY id");
        else
                r = prepare(s, &st,
                            "SELECT " HEAD_COLUMNS " FROM jobs WHERE state = 'running' AND operation != 'export' AND "
                            "(round_id IS NULL OR round_id NOT IN (SELECT id FROM rounds)) ORDER BY id");
        if (r >= 0 && round > 0)
                db_bind_int64(st.st, 1, round);
        while (r >= 0 && (r = step_row(s, &st)) > 0) {
                JobHead h = {};
                Batch *b = NULL, **nl;

                job_head_read(&st, &h);
                r = batch_from_head(&b, &h);
                if (r >= 0)
                        r = batch_add_job(s, b, &h);
                job_head_done(&h);
                nl = r >= 0 ? realloc(list, (n + 1) * sizeof(*list)) : NULL;
                if (!nl) {
                        batch_free(b);
                        r = r < 0 ? r : -ENOMEM;
                        break;
                }
                list = nl;
                list[n++] = b;
        }
        stmt_done(&st);
        pthread_mutex_unlock(&s->lock);
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        batch_free(list[i]);
                free(list);
                return r;
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int store_orphans(Store *s, Batch ***ret, size_t *ret_n) {
        return running_batches(s, 0, ret, ret_n);
}

int store_round_batches(Store *s, int64_t round, Batch ***ret, size_t *ret_n) {
        return round > 0 ? running_batches(s, round, ret, ret_n) : -EINVAL;
}

/* ---- rounds (project mode) ---- */

static const char *const round_states[_STORE_ROUND_STATE_MAX] = {
        [STORE_ROUND_OPENING] = "opening",
        [STORE_ROUND_FILLING] = "filling",
        [STORE_ROUND_COMMITTING] = "committing",
};

const char *store_round_state_to_string(StoreRoundState state) {
        return state >= 0 && state < _STORE_ROUND_STATE_MAX ? round_states[state] : NULL;
}

int store_round_open(Store *s, const char *name, const char *tenant, const Batch *b, int64_t *ret_id) {
        Stmt st = {};
        int64_t id;
        int r;

        r = prepare(s, &st,
                    "INSERT INTO rounds (state, name, tenant, created_at, updated_at) VALUES ('opening', ?, ?, ?, ?) "
                    "RETURNING id");
        if (r < 0)
                return r;
        bind_text(&st, 1, name);
        bind_text(&st, 2, tenant);
        db_bind_int64(st.st, 3, now_ms());
        db_bind_int64(st.st, 4, now_ms());
        r = step_returning_id(s, &st, &id);
        stmt_done(&st);
        if (r < 0)
                return r;
        r = prepare(s, &st, "UPDATE jobs SET round_id = ? WHERE id = ? AND state = 'running'");
        for (size_t i = 0; r >= 0 && i < b->n_jobs; i++) {
                db_reset(st.st);
                db_bind_int64(st.st, 1, id);
                db_bind_int64(st.st, 2, b->jobs[i].id);
                r = step_done(s, &st);
                if (r >= 0 && db_changes(s->w.db) != 1)
                        r = -ESTALE;
        }
        stmt_done(&st);
        if (r < 0)
                return r;
        *ret_id = id;
        return 0;
}

int store_round_set(Store *s, int64_t round, StoreRoundState state, const char *project_id) {
        Stmt st = {};
        int r;

        r = prepare(s, &st, "UPDATE rounds SET state = ?, project_id = coalesce(?, project_id), updated_at = ? WHERE id = ?");
        if (r < 0)
                return r;
        bind_text(&st, 1, store_round_state_to_string(state));
        bind_text(&st, 2, project_id);
        db_bind_int64(st.st, 3, now_ms());
        db_bind_int64(st.st, 4, round);
        r = step_done(s, &st);
        stmt_done(&st);
        if (r >= 0 && db_changes(s->w.db) != 1)
                r = -ENOENT;
        return r;
}

int store_round_stash(Store *s, int64_t round, int64_t job_id, unsigned idx, bool succeeded, json_t *result) {
        _cleanup_free_ char *text = result ? json_dumps(result, JSON_COMPACT) : NULL;
        Stmt st = {};
        int r;

        /* The item's latest answer in the round, replacing an earlier one as INSERT OR REPLACE did. */
        r = prepare(s, &st,
                    "INSERT INTO round_items (round_id, job_id, idx, succeeded, result) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (job_id, idx) DO UPDATE SET round_id = excluded.round_id, "
                    "succeeded = excluded.succeeded, result = excluded.result");
        if (r < 0)
                return r;
        db_bind_int64(st.st, 1, round);
        db_bind_int64(st.st, 2, job_id);
        db_bind_int64(st.st, 3, idx);
        db_bind_int64(st.st, 4, succeeded ? 1 : 0);
        bind_text(&st, 5, text);
        r = step_done(s, &st);
        stmt_done(&st);
        return r;
}

int store_round_apply(Store *s, int64_t round) {
        Stmt st = {};
        int r;

        r = prepare(s, &st,
                    "UPDATE job_items SET state = CASE r.succeeded WHEN 1 THEN 'succeeded' ELSE 'failed' END, "
                    "result = r.result FROM round_items r "
                    "WHERE r.round_id = ? AND job_items.job_id = r.job_id AND job_items.idx = r.idx");
        if (r < 0)
                return r;
        db_bind_int64(st.st, 1, round);
        r = step_done(s, &st);
        stmt_done(&st);
        return r;
}

int store_round_close(Store *s, int64_t round) {
        Stmt st = {};
        int r;

        r = prepare(s, &st, "DELETE FROM round_items WHERE round_id = ?");
        if (r >= 0) {
                db_bind_int64(st.st, 1, round);
                r = step_done(s, &st);
                stmt_done(&st);
        }
        if (r >= 0)
                r = prepare(s, &st, "DELETE FROM rounds WHERE id = ?");
        if (r >= 0) {
                db_bind_int64(st.st, 1, round);
                r = step_done(s, &st);
                stmt_done(&st);
        }
        return r;
}

void store_rounds_free(StoreRound *list, size_t n) {
        for (size_t i = 0; list && i < n; i++) {
                free(list[i].name);
                free(list[i].tenant);
                free(list[i].project_id);
        }
        free(list);
}

int store_rounds(Store *s, StoreRound **ret, size_t *ret_n) {
        StoreRound *list = NULL;
        size_t n = 0;
        Stmt st = {};
        int r;

        pthread_mutex_lock(&s->lock);
        r = prepare(s, &st, "SELECT id, state, name, tenant, project_id, created_at FROM rounds ORDER BY id");
        while (r >= 0 && (r = step_row(s, &st)) > 0) {
                StoreRound *nl = realloc(list, (n + 1) * sizeof(*list));
                const char *state = strempty(col_text(&st, 1));

                if (!nl) {
                        r = -ENOMEM;
                        break;
                }
                list = nl;
                list[n] = (StoreRound) {
                        .id = db_column_int64(st.st, 0),
                        .state = streq(state, "opening")  ? STORE_ROUND_OPENING
                                 : streq(state, "filling") ? STORE_ROUND_FILLING
                                                           : STORE_ROUND_COMMITTING,
                        .name = strdup(strempty(col_text(&st, 2))),
                        .tenant = strdup(strempty(col_text(&st, 3))),
                        .project_id = col_text(&st, 4) ? strdup(col_text(&st, 4)) : NULL,
                        .created_at_ms = db_column_int64(st.st, 5),
                };
                n++;
                if (!list[n - 1].name || !list[n - 1].tenant || (col_text(&st, 4) && !list[n - 1].project_id)) {
                        r = -ENOMEM;
                        break;
                }
        }
        stmt_done(&st);
        pthread_mutex_unlock(&s->lock);
        if (r < 0) {
                store_rounds_free(list, n);
                return r;
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int store_item_record(Store *s, int64_t job_id, unsigned idx, bool succeeded, json_t *result) {
        _cleanup_free_ char *text = result ? json_dumps(result, JSON_COMPACT) : NULL;
        Stmt st = {};
        int r;

        r = prepare(s, &st, "UPDATE job_items SET state = ?, result = ? WHERE job_id = ? AND idx = ?");
        if (r < 0)
                return r;
        bind_text(&st, 1, succeeded ? "succeeded" : "failed");
        bind_text(&st, 2, text);
        db_bind_int64(st.st, 3, job_id);
        db_bind_int64(st.st, 4, idx);
        r = step_done(s, &st);
        stmt_done(&st);
        return r;
}

int store_job_finish(Store *s, int64_t job_id, JobState state, long upstream_status, const char *error,
                     long response_status, const char *response_body) {
        Stmt st = {};
        int r;

        r = transition_locked(s, job_id, JOB_RUNNING, state, NULL);
        if (r < 0)
                return r;
        r = prepare(s, &st,
                    "UPDATE jobs SET finished_at = ?, upstream_status = ?, error = ?, response_status = ?, "
                    "response_body = ?, attempts = attempts + 1 WHERE id = ?");
        if (r < 0)
                return r;
        db_bind_int64(st.st, 1, now_ms());
        if (upstream_status > 0)
                db_bind_int64(st.st, 2, upstream_status);
        else
                db_bind_null(st.st, 2);
        bind_text(&st, 3, error);
        db_bind_int64(st.st, 4, response_status);
        bind_text(&st, 5, response_body);
        db_bind_int64(st.st, 6, job_id);
        r = step_done(s, &st);
        stmt_done(&st);
        return r;
}

int store_job_requeue(Store *s, int64_t job_id, bool count_attempt, int64_t next_run_ms, bool solo, bool in_doubt,
                      long upstream_status, const char *error) {
        Stmt st = {};
        int r;

        r = transition_locked(s, job_id, JOB_RUNNING, JOB_QUEUED, NULL);
        if (r < 0)
                return r;
        r = prepare(s, &st,
                    "UPDATE jobs SET next_run_at = ?1, attempts = attempts + ?2, "
                    "solo = CASE WHEN ?3 > solo THEN ?3 ELSE solo END, upstream_status = ?4, error = ?5, "
                    "in_doubt = CASE WHEN ?6 > in_doubt THEN ?6 ELSE in_doubt END WHERE id = ?7");
        if (r < 0)
                return r;
        db_bind_int64(st.st, 1, next_run_ms);
        db_bind_int64(st.st, 2, count_attempt ? 1 : 0);
        db_bind_int64(st.st, 3, solo ? 1 : 0);
        if (upstream_status > 0)
                db_bind_int64(st.st, 4, upstream_status);
        else
                db_bind_null(st.st, 4);
        bind_text(&st, 5, error);
        db_bind_int64(st.st, 6, in_doubt ? 1 : 0);
        db_bind_int64(st.st, 7, job_id);
        r = step_done(s, &st);
        stmt_done(&st);
        return r;
}

int store_job_exists(Store *s, int64_t id) {
        Stmt st = {};
        int r;

        read_lock_take(s);
        r = read_prepare(s, &st, STMT_JOB_EXISTS);
        if (r >= 0) {
                db_bind_int64(st.st, 1, id);
                r = step(&st);
                stmt_done(&st);
        }
        pthread_mutex_unlock(&s->read_lock);
        return r;
}

/* ---- the write lane ---- */

static int lane_row_set(Store *s, int64_t started_ms, int64_t deadline_ms);

/* Fleet mode, in the transaction recording the lane: the fenced call opens (lease_fence_call(),
 * its deadline as a duration from now in the database's clock) or ends (lease_call_end():
 * answered when no call is open any more, else lost, so no node sends for publish_settle). */
static int lane_lease(Store *s, int64_t started_ms, int64_t deadline_ms, bool opening) {
        if (!s->tx_fenced)
                return 0;
        /* Run by fence_finish(), right before the commit. */
        s->tx_lane_op = opening ? LANE_OP_OPEN : LANE_OP_END;
        s->tx_lane_started_ms = started_ms;
        s->tx_lane_deadline_ms = deadline_ms;
        return 0;
}

int store_lane_set(Store *s, int64_t started_ms, int64_t deadline_ms) {
        int r = lane_lease(s, started_ms, deadline_ms, false);

        return r < 0 ? r : lane_row_set(s, started_ms, deadline_ms);
}

static int lane_row_set(Store *s, int64_t started_ms, int64_t deadline_ms) {
        Stmt st = {};
        int r;

        r = prepare(s, &st, "UPDATE lane SET call_started_at = ?, call_deadline_at = ? WHERE id = 1");
        if (r < 0)
                return r;
        db_bind_int64(st.st, 1, started_ms);
        db_bind_int64(st.st, 2, deadline_ms);
        r = step_done(s, &st);
        stmt_done(&st);
        if (r >= 0 && db_changes(s->w.db) != 1)
                r = tx_note(s, -EIO);
        return r;
}

int store_lane_open(Store *s, int64_t started_ms, int64_t deadline_ms) {
        int r;

        r = begin_fenced(s);
        if (r < 0)
                return r;
        r = lane_lease(s, started_ms, deadline_ms, true);
        if (r >= 0)
                r = lane_row_set(s, started_ms, deadline_ms);
        {
                int e = store_end(s, r >= 0); /* the fence's refusal (-ESTALE, -EAGAIN) comes from here */

                return r < 0 ? r : e;
        }
}

int store_lane_get(Store *s, int64_t *ret_started_ms, int64_t *ret_deadline_ms) {
        Stmt st = {};
        int r;

        pthread_mutex_lock(&s->lock);
        r = prepare(s, &st, "SELECT call_started_at, call_deadline_at FROM lane WHERE id = 1");
        if (r >= 0) {
                r = step_row(s, &st);
                if (r > 0) {
                        *ret_started_ms = db_column_int64(st.st, 0);
                        *ret_deadline_ms = db_column_int64(st.st, 1);
                        r = 0;
                } else if (r == 0)
                        r = -EIO;
                stmt_done(&st);
        }
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* ---- export runs ---- */

int store_export_claim(Store *s, int64_t now, int64_t *ret_id, char **ret_request) {
        Stmt st = {};
        int64_t id = 0;
        char *request = NULL;
        int r;

        r = begin_fenced(s);
        if (r < 0)
                return r;
        r = prepare(s, &st, s->dialect->shared
                                    ? "SELECT id, request_body FROM jobs WHERE state = 'queued' AND operation = 'export' AND "
                                      "next_run_at <= ? ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
                                    : "SELECT id, request_body FROM jobs WHERE state = 'queued' AND operation = 'export' AND "
                                      "next_run_at <= ? ORDER BY id LIMIT 1");
        if (r >= 0) {
                db_bind_int64(st.st, 1, now);
                if (step(&st) > 0) {
                        size_t n;
                        const char *b = db_column_blob(st.st, 1, &n);

                        id = db_column_int64(st.st, 0);
                        request = strndup(b ?: "", n);
                }
                stmt_done(&st);
        }
        if (r >= 0 && id > 0) {
                char set[64];
                snprintf(set, sizeof(set), "started_at = %" PRId64, now_ms());
                r = request ? transition_locked(s, id, JOB_QUEUED, JOB_RUNNING, set) : -ENOMEM;
        }
        if (store_end(s, r >= 0) < 0 && r >= 0)
                r = -EIO;
        if (r < 0 || id == 0) {
                free(request);
                *ret_id = 0;
                return r;
        }
        *ret_id = id;
        *ret_request = request;
        return 0;
}

int store_export_requeue_orphans(Store *s) {
        Stmt st = {};
        int r;

        r = begin_fenced(s);
        if (r < 0)
                return r;
        /* An export run cut short by a restart simply runs again: it only reads. */
        r = prepare(s, &st, "UPDATE jobs SET state = 'queued', updated_at = ? WHERE state = 'running' AND operation = 'export'");
        if (r >= 0) {
                db_bind_int64(st.st, 1, now_ms());
                r = step_done(s, &st);
                stmt_done(&st);
        }
        return store_end(s, r >= 0) < 0 && r >= 0 ? -EIO : r;
}
