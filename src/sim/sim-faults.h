/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Injected faults: latency, random 503/429/dropped connections and one-shot counters that
 * make the next N outcomes deterministic, tokens refused after a good login, plus the
 * permission-write knobs (publish duration,
 * overlap rejection, apply-then-drop, a display name to refuse) and the data-query knobs (answer
 * size, answers cut mid-transfer, exports disabled). Thread-safe.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FAULTS_LATENCY_MAX_MS UINT64_C(600000)
#define FAULTS_RETRY_AFTER_MAX UINT64_C(86400)
#define FAULTS_NEXT_MAX UINT64_C(1000000)
#define FAULTS_PUBLISH_MAX_MS UINT64_C(600000)
/* query_rows: records a list, SQL-like or snapshot query answers by default, and at most. */
#define FAULTS_QUERY_ROWS_DEFAULT UINT64_C(200)
#define FAULTS_QUERY_ROWS_MAX UINT64_C(1000000000)
/* Largest query_abort_after_bytes / next_query_abort_after_bytes (1 TiB). */
#define FAULTS_ABORT_BYTES_MAX (UINT64_C(1) << 40)
/* Longest reject_display_name, in bytes. */
#define FAULTS_NAME_MAX 256

typedef struct FaultSettings {
        uint64_t latency_ms;
        uint64_t login_latency_ms;
        uint64_t error_rate;            /* percent */
        uint64_t drop_rate;             /* percent */
        uint64_t throttle_rate;         /* percent */
        uint64_t retry_after;           /* seconds */
        uint64_t next_errors;
        uint64_t next_drops;
        uint64_t next_throttles;
        uint64_t publish_ms;            /* every permission write publishes this long */
        uint64_t next_apply_then_drop;  /* writes applied and published, then dropped unanswered */
        uint64_t query_rows;            /* records behind list, SQL-like and snapshot answers */
        uint64_t next_query_abort_after_bytes;  /* one-shot: the next data query answer is cut after N bytes */
        uint64_t query_abort_after_bytes;       /* every data query answer is cut after N bytes; 0 = off */
        bool faults_include_login;
        bool exports_disabled;          /* data queries answer 403 */
        bool reject_overlaps;           /* a write starting while another is in flight gets 409 */
        bool refuse_tokens;             /* logins succeed, every other /v1 call gets 401 */
        bool hold_writes;               /* publishing writes stay in flight until it is turned off */
        bool refuse_commits;            /* commitAndPublish answers 409 (a merge conflict); the draft stays */
        bool hold_commits;              /* commitAndPublish stays in flight, before it lands, while on */
        char reject_display_name[FAULTS_NAME_MAX + 1];  /* "" = off */
} FaultSettings;

/* The longest a write is held by hold_writes. */
#define FAULTS_HOLD_MAX_MS 120000

#define FAULT_SETTINGS_DEFAULT ((FaultSettings) { .retry_after = 1, .query_rows = FAULTS_QUERY_ROWS_DEFAULT })

typedef enum FaultAction {
        FAULT_NONE,
        FAULT_ERROR,
        FAULT_DROP,
        FAULT_THROTTLE,
        _FAULT_ACTION_MAX,
        _FAULT_ACTION_INVALID = -EINVAL,
} FaultAction;

typedef struct FaultDecision {
        FaultAction action;
        uint64_t latency_ms;            /* sleep this long before answering */
        uint64_t retry_after;           /* for FAULT_THROTTLE */
} FaultDecision;

typedef struct Faults Faults;

int faults_new(const FaultSettings *initial, Faults **ret);
Faults *faults_free(Faults *f);

/*
 * Decide the fate of one /v1 call. For the login call (IS_LOGIN) only login_latency_ms applies
 * unless faults_include_login is set. One-shot counters win over rates, in the order drop,
 * error, throttle, and are consumed.
 */
void faults_decide(Faults *f, bool is_login, FaultDecision *ret);

/* What a permission write must do, decided once when it passes validation. */
typedef struct WriteFaults {
        uint64_t publish_ms;
        bool reject_overlaps;
        char reject_display_name[FAULTS_NAME_MAX + 1];
} WriteFaults;

/* Snapshot the write knobs; consumes nothing. */
void faults_write_settings(Faults *f, WriteFaults *ret);

/* True while refuse_tokens is set: every issued token is refused (a "token storm"). */
bool faults_refuse_tokens(Faults *f);
bool faults_refuse_commits(Faults *f);

/* While hold_writes is on, wait (a publishing write stays in flight), at most
 * FAULTS_HOLD_MAX_MS; true when it was held at all. */
bool faults_hold_writes(Faults *f);

/* The same for commitAndPublish while hold_commits is on (before the draft lands). */
bool faults_hold_commits(Faults *f);

/* Consume one next_apply_then_drop if any is left; true when this write must be dropped. */
bool faults_take_apply_then_drop(Faults *f);

/* What a data query must do, decided once when it is about to answer. */
typedef struct QueryFaults {
        uint64_t rows;
        uint64_t abort_after_bytes;     /* 0 = answer in full */
        bool exports_disabled;
} QueryFaults;

/* Snapshot the query knobs, consuming next_query_abort_after_bytes when TAKE_ABORT is set. */
void faults_query_settings(Faults *f, bool take_abort, QueryFaults *ret);

/* Current settings as a JSON object (new reference), or NULL on OOM. */
json_t *faults_to_json(Faults *f);

/*
 * Apply a JSON object holding any subset of the setting fields. All-or-nothing: on a bad
 * field nothing changes, ERR gets a message and -EINVAL is returned.
 */
int faults_apply_json(Faults *f, json_t *obj, char *err, size_t err_size);

/* Back to no faults at all (retry_after 1, query_rows FAULTS_QUERY_ROWS_DEFAULT). */
void faults_reset(Faults *f);

const char *fault_action_to_string(FaultAction a);
