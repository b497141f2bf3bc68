/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The job store: one SQLite database in WAL mode (synchronous=FULL), its schema versioned
 * with PRAGMA user_version and migrated forward at open. Owns every SQL statement in
 * visierd. Never logs; errors come back as negative errno with a message.
 *
 * Threads: every function may be called from any thread. Writes go through one connection
 * behind one mutex; submissions are committed by the store's own thread, which groups all
 * those waiting into one transaction; reads (store_job_json, store_jobs_list, store_counts,
 * store_job_state, store_job_response, store_job_exists, store_check) go through a second
 * connection behind its own mutex, so they never wait behind a commit, and see what was last
 * committed. A transaction opened with store_begin() is seen only by the write connection's
 * functions called inside it.
 *
 * Every state change goes through job_state_transition_ok() (jobs.h) and is written with
 * "WHERE state = <from>", so the table in jobs.c is the only place the rules live.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "jobs.h"
#include "macro.h"

#define STORE_BUSY_TIMEOUT_MS 5000
#define STORE_ERROR_MAX 512
/* PostgreSQL: the server ends a store session idle inside a transaction for this long (the
 * store's transactions never wait on anything but the database). */
#define STORE_PG_IDLE_TX_TIMEOUT_MS 5000
#define STORE_PG_IDLE_TX_TIMEOUT "5000" /* the same, for SQL */
/* PostgreSQL: a connection attempt gives up after this long (at start, and each reconnect). */
#define STORE_PG_CONNECT_TIMEOUT_SEC 5
/* PostgreSQL: the job counts (/status, /metrics) are read again when older than this, as other
 * nodes change them too: 0, every time (five rows of job_counts and one index search, on the
 * read connection). */
#define STORE_SHARED_COUNTS_MAX_AGE 0

typedef struct Store Store;

/* Open (creating if needed) the database at path; -EPROTO if its schema is newer than ours,
 * -EBUSY if another process holds the database's lock file ("<path>.lock", flock). */
int store_open(const char *path, Store **ret, char *err, size_t errlen);
/*
 * Open the job store on PostgreSQL (fleet mode, docs/fleet.md): conninfo is [store] url (a
 * libpq connection string or URI without a password), password [store] password_file's (or
 * NULL). The schema is migrated (store-pg-schema.c; nodes starting at once take turns). The same
 * interface as on SQLite, with these differences: there is no lock file (every node of a fleet
 * opens the same database), no file to check (store_check() reads through the server), a
 * session the server ends is opened again before the next transaction or read, nothing read is
 * kept in memory past the read (other nodes change the jobs: final job texts are not kept, the
 * counts are read again), claims pass over rows another claim holds (FOR UPDATE SKIP LOCKED),
 * and the publish lane can be fenced (store_set_fence()). store_path() is conninfo.
 */
int store_open_pg(const char *conninfo, const char *password, Store **ret, char *err, size_t errlen);
/* Stops the store thread first: the group it is committing finishes and is answered, and
 * submissions still queued are answered with -ECANCELED. Nothing else may call into the
 * store during or after it. */
Store *store_close(Store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_close);

/* Is the database usable for writes: still the file at its path (not deleted or replaced) and
 * not open read-only? 0, or -ENOENT / -EACCES / -EIO with a reason in err (err may be NULL). */
int store_check(Store *s, char *err, size_t errlen);
/* For /status, without touching the database: the file check of store_check() (repeated at
 * most every 250 ms), and the last write transaction committed. */
bool store_ok(Store *s);
int store_schema_version(Store *s);
const char *store_path(Store *s);
/* Refuse new jobs once this many are queued or running (0: no limit). */
void store_set_max_pending(Store *s, unsigned max_pending);

/* ---- accepting writes ---- */

typedef struct JobSubmit {
        JobOp op;
        const char *tenant;        /* TargetTenantID, or "" */
        const char *project;       /* ProjectID, or "" */
        const char *non_versioned; /* NonVersioned, or "" */
        const char *tenant_code;   /* ?tenantCode=, or "" */
        const char *upstream_headers; /* Visier's other write headers, "Name: value" lines, or "" / NULL */
        const char *client;        /* who asked */
        const char *idempotency_key; /* or NULL */
        const char *body;          /* the request body as received */
        size_t body_len;
        json_t *items;             /* the items to send (creates carry their correlationId) */
        json_t *extra;             /* other members of the body to send along, or NULL */
        json_t *client_correlation_ids; /* creates: [{"index":N,"correlationId":"…"}] the client chose, or NULL */
        bool solo;                 /* never merge with other jobs */
} JobSubmit;

/*
 * Commit a new queued job durably. With an idempotency key already used: for the same
 * operation and body, *ret_existing is set and the earlier job's id returned; for another
 * body, -EEXIST. -EADDRINUSE when a create item's correlationId is used by a job not yet
 * finished. -EOVERFLOW when max_pending jobs wait already; -ENOSPC, -EACCES, -EIO, -ENOENT
 * when the database cannot be written (nothing of the job is written then, and no job of the
 * same group commit is either). Blocks until the store thread has committed the group the
 * job went into (store_job_submit_async() and a wait); never call it from a store_submit_fn.
 */
int store_job_submit(Store *s, const JobSubmit *j, int64_t *ret_id, bool *ret_existing, char *err, size_t errlen);
/* store_job_submit(), and the job as it was written (as GET /jobs/{id} shows it, without its
 * items) in *ret_text (caller frees): built from the commit itself, so a job is never queued
 * without its text, whatever happens to the database after the commit. */
int store_job_submit_text(Store *s, const JobSubmit *j, int64_t *ret_id, bool *ret_existing, char **ret_text, char *err,
                          size_t errlen);

/*
 * The answer to an asynchronous submission, called once, on the store's thread, after the
 * transaction holding the job committed (or failed), with no store lock held. r is 0 or one
 * of store_job_submit()'s errors (and -ECANCELED when the store closed before the job was
 * written); id and existing as store_job_submit() returns them (id 0 on error); err is ""
 * on success. job_json is the job exactly as store_job_json(s, id, false) would give it,
 * built from what was written (read back only for an existing job), or NULL on error; it
 * belongs to the store and is freed when done returns: json_incref() it to keep it. err and
 * job_json are valid only during the call. done should return quickly (the next group waits
 * for it) and must not call store_job_submit(); it may call the store's read functions and
 * store_job_submit_async().
 */
typedef void (*store_submit_fn)(void *userdata, int r, int64_t id, bool existing, const char *err,
                                json_t *job_json);

/*
 * Queue a job for the store thread's next group commit and return at once: everything needed
 * is copied from j (its strings, body and JSON may be freed as soon as this returns). 0, and
 * done(userdata, ...) will be called exactly once; or -ENOMEM, or -ESHUTDOWN when the store is
 * closing, and done is never called. The store thread takes every submission queued when it
 * starts a round, so a group is as large as the queue, with no added delay.
 */
int store_job_submit_async(Store *s, const JobSubmit *j, store_submit_fn done, void *userdata);

/* The job as JSON (with per-item results if with_items) in *ret (caller decrefs): 0,
 * -ENOENT (no such job), or another negative errno (the job database cannot be read). */
int store_job_read(Store *s, int64_t id, bool with_items, json_t **ret);
/* The same, NULL for no such job or a failed read alike. */
json_t *store_job_json(Store *s, int64_t id, bool with_items);
/* The job with its items as compact JSON text (caller frees): GET /jobs/{id}. The text of a
 * final job is kept in memory (up to STORE_FINAL_TEXTS of them, each at most
 * STORE_FINAL_TEXT_MAX bytes) until it is retried or pruned. -ENOENT (no such job), -ENOMEM,
 * or another negative errno (the job database cannot be read). */
#define STORE_FINAL_TEXTS 4096
#define STORE_FINAL_TEXT_MAX (16 * 1024)
int store_job_text(Store *s, int64_t id, char **ret_text, size_t *ret_len);
/* Newest first; state _JOB_STATE_INVALID for all; before_id 0 for the first page. */
int store_jobs_list(Store *s, JobState state, int64_t before_id, unsigned limit, json_t **ret);

/* What GET /jobs may keep: each field unset (_JOB_STATE_INVALID, _JOB_OP_INVALID, NULL, 0)
 * keeps every job. client is compared byte for byte; since_ms keeps the jobs created at or
 * after it (wall clock, milliseconds since the epoch). */
typedef struct StoreJobFilter {
        JobState state;
        JobOp op;
        const char *client;
        int64_t since_ms;
} StoreJobFilter;
#define STORE_JOB_FILTER_NONE ((StoreJobFilter) { .state = _JOB_STATE_INVALID, .op = _JOB_OP_INVALID })

/* store_jobs_list with a filter. Every value is bound as a statement parameter; a filter on
 * the state alone (or none) uses the prepared list statements, any other shape a statement
 * prepared for the call from fixed pieces. */
int store_jobs_find(Store *s, const StoreJobFilter *f, int64_t before_id, unsigned limit, json_t **ret);
/* queued → cancelled; -ENOENT, or -EBUSY with *ret_state when the job is not queued. With
 * ret_job (may be NULL), the job as the change left it, read in the change's own transaction:
 * on success both the change and *ret_job (caller's), on failure neither. */
int store_job_cancel(Store *s, int64_t id, JobState *ret_state, json_t **ret_job);
/* failed → queued with its attempts reset; -ENOENT, or -EBUSY with *ret_state; ret_job as above. */
int store_job_retry(Store *s, int64_t id, JobState *ret_state, json_t **ret_job);
JobState store_job_state(Store *s, int64_t id);
/* Final answer kept for Prefer: wait: HTTP status and body (caller frees), or -EAGAIN if not final. */
int store_job_response(Store *s, int64_t id, long *ret_status, char **ret_body);

/* {"queued":N,...,"oldest_queued_age_seconds":S}, from counters kept in step with the job
 * table (a few rows read, whatever its size). */
/* The same counts as numbers (as of the last commit); oldest: created_at (ms) of the oldest
 * queued job, or -1. */
void store_counts_get(Store *s, int64_t ret_counts[_JOB_STATE_MAX], int64_t *ret_oldest_queued);
json_t *store_counts(Store *s, int64_t now_ms);
/* Delete finished jobs older than their retention; returns how many. */
int store_prune(Store *s, int64_t now_ms, int64_t keep_succeeded_ms, int64_t keep_failed_ms);

/* ---- the publisher's side ---- */

typedef struct BatchItem {
        int64_t job_id;
        unsigned idx;
        json_t *item;
        char *correlation_id; /* creates only */
        bool done;            /* already succeeded in an earlier attempt (reconciled), or settled */
        bool in_doubt;        /* its job's earlier attempt may have landed */
        json_t *before;       /* patches: the permission as read before the call (publisher's) */
} BatchItem;

typedef struct BatchJob {
        int64_t id;
        unsigned attempts; /* attempts made before this one */
        bool in_doubt;     /* an earlier attempt may have landed */
        int64_t created_at_ms;
        size_t first_item, n_items;
} BatchJob;

typedef struct Batch {
        JobOp op;
        char *tenant, *project, *non_versioned, *tenant_code;
        char *upstream_headers; /* "Name: value" lines, or "" */
        char *scope;            /* the heads a round's jobs share, or NULL: it shares no call or round */
        json_t *extra;
        BatchJob *jobs;
        size_t n_jobs;
        BatchItem *items;
        size_t n_items;
} Batch;

Batch *batch_free(Batch *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(Batch *, batch_free);

/*
 * Claim the oldest due queued job and the queued jobs right after it that can share its call
 * (same operation, tenant, project, NonVersioned and tenantCode; no item touching a permission
 * already in the batch; at most batch_max items; none marked solo), and mark them running in
 * one transaction. *ret is NULL when nothing is due; *ret_next_due_ms then tells when the
 * next queued job is due (INT64_MAX if none). With ROUND_SCOPE (a round in progress: a
 * Batch's scope), only jobs of that scope are claimed, and they join round ROUND_ID in the
 * same transaction.
 */
int store_batch_claim(Store *s, int64_t now_ms, size_t batch_max, const char *round_scope, int64_t round_id,
                      Batch **ret, int64_t *ret_next_due_ms);

/* Jobs left running by a previous process (orphans), as a batch each, marked as they are;
 * not those of a round that still exists (see below). */
int store_orphans(Store *s, Batch ***ret, size_t *ret_n);

/*
 * Rounds (project mode, docs/jobs.md "Project mode"): one draft project filled with bulk
 * calls and published once. The round row says which step was last begun; its jobs are running
 * and name it until they leave it (any change of state from running, including a requeue);
 * Visier's answers for their items in the draft are stashed in the round until it is published
 * (store_round_apply) or dropped (store_round_close). Every function but store_rounds() and
 * store_round_batches() runs inside store_begin()/store_end().
 */
typedef enum StoreRoundState {
        STORE_ROUND_OPENING,    /* the draft is being created: its ID may not be known */
        STORE_ROUND_FILLING,    /* bulk calls go into the draft */
        STORE_ROUND_COMMITTING, /* commitAndPublish was (or is about to be) sent */
        _STORE_ROUND_STATE_MAX,
} StoreRoundState;

typedef struct StoreRound {
        int64_t id;
        StoreRoundState state;
        char *name, *tenant; /* the draft's name, and the TargetTenantID it lives in ("": the login's) */
        char *project_id;    /* NULL until the draft exists */
        int64_t created_at_ms;
} StoreRound;

const char *store_round_state_to_string(StoreRoundState state);
/* A new round (opening) named NAME in TENANT, with B's jobs (running) in it. */
int store_round_open(Store *s, const char *name, const char *tenant, const Batch *b, int64_t *ret_id);
/* The round's step, and its draft's ID (NULL: unchanged). -ENOENT. */
int store_round_set(Store *s, int64_t round, StoreRoundState state, const char *project_id);
/* What Visier answered for an item in the round's draft. */
int store_round_stash(Store *s, int64_t round, int64_t job_id, unsigned idx, bool succeeded, json_t *result);
/* The draft was published: every stashed answer becomes its item's outcome. */
int store_round_apply(Store *s, int64_t round);
/* The round is over: its row and stash are deleted (its jobs must have left it). */
int store_round_close(Store *s, int64_t round);
/* Every round, oldest first. */
int store_rounds(Store *s, StoreRound **ret, size_t *ret_n);
void store_rounds_free(StoreRound *list, size_t n);
/* The running jobs of a round, as a batch each. */
int store_round_batches(Store *s, int64_t round, Batch ***ret, size_t *ret_n);

/*
 * The write lane: before a write call is sent, when it started and the latest time it can
 * still be running on visierd's side (its deadline) are committed, so that a visierd started
 * after a crash can wait out the call the dead process left open. deadline 0: no call open.
 */
int store_lane_open(Store *s, int64_t started_ms, int64_t deadline_ms);
int store_lane_get(Store *s, int64_t *ret_started_ms, int64_t *ret_deadline_ms);
/* The same, inside a transaction opened with store_begin(). */
int store_lane_set(Store *s, int64_t started_ms, int64_t deadline_ms);

/*
 * Fleet mode (PostgreSQL only; -EOPNOTSUPP on SQLite): the publish lane's fence (lease.h). From
 * here on the publisher's and the export runner's transactions — store_begin_lane(),
 * store_batch_claim(), store_lane_open(), store_export_claim(), store_export_requeue_orphans()
 * — check, as the transaction's last statements before its COMMIT, that this node (node, in
 * tenant's lane) still holds the term set by store_set_fence_term() (lease_check_term(), which
 * holds the lane's row until the commit, so no node can take the lane over in between; only
 * for the commit, so the holder's renewals and other nodes' attempts never queue behind a
 * long transaction): store_end() fails with -ESTALE, nothing written, when it does not (term
 * 0: no term held; then begin fails at once). store_lane_open() also fences the call itself
 * (lease_fence_call(), recording its deadline; -EAGAIN while the lane's wait runs), and
 * store_lane_set() ends it (lease_call_end(), with settle_ms when its answer was lost), both
 * at that same point.
 * Submissions, cancels, retries and prunes are never fenced.
 */
int store_set_fence(Store *s, const char *tenant, const char *node, unsigned settle_ms);
void store_set_fence_term(Store *s, int64_t term);

/* Recording an outcome: all calls between begin and end form one transaction; if any
 * statement in it fails, store_end() rolls the whole transaction back and fails. */
int store_begin(Store *s);
/* store_begin() for the publisher's and the runner's recordings: fenced in fleet mode (above). */
int store_begin_lane(Store *s);
int store_end(Store *s, bool commit);
int store_item_record(Store *s, int64_t job_id, unsigned idx, bool succeeded, json_t *result);
int store_job_finish(Store *s, int64_t job_id, JobState state, long upstream_status, const char *error,
                     long response_status, const char *response_body);
int store_job_requeue(Store *s, int64_t job_id, bool count_attempt, int64_t next_run_ms, bool solo, bool in_doubt,
                      long upstream_status, const char *error);
/* 1 if the job exists, 0 if not, a negative errno if the database cannot tell. */
int store_job_exists(Store *s, int64_t id);
/* Export runs (operation "export"), which the publisher never claims: the oldest due queued
 * one is marked running and its request (as submitted) returned; *ret_id is 0 if none. */
int store_export_claim(Store *s, int64_t now_ms, int64_t *ret_id, char **ret_request);
/* At start-up: runs left running by an earlier process are queued again. */
int store_export_requeue_orphans(Store *s);

/* For tests: the plan (EXPLAIN QUERY PLAN) of each statement the store keeps prepared, as
 * [{"statement":NAME, "sql":SQL, "plan":["SEARCH jobs USING INDEX ...", ...]}, ...]. */
json_t *store_query_plans(Store *s);

/* Items of a job not yet succeeded (for building the job's answer). */
json_t *store_job_item_results(Store *s, int64_t job_id);
/* The correlationIds a create job's request had itself (not the ones visierd added), inside
 * store_begin/store_end. An empty array for other jobs (or on error). */
json_t *store_job_client_correlation_ids(Store *s, int64_t job_id);
