/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Queue history: one sample of the job counts by state per minute, for the last hour, in a
 * fixed ring (HISTORY_SAMPLES entries, never allocated, never grown). The /ui page draws its
 * sparklines from it (GET /status/history). Pure logic: the caller passes the time and the
 * counts, and serializes access (the manager records and reads on its loop thread only).
 * Never logs.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "jobs.h"

#define HISTORY_SAMPLES 60                 /* one hour of minutes */
#define HISTORY_INTERVAL_MS (60 * 1000)    /* one sample per wall-clock minute */
#define HISTORY_SPAN_MS ((int64_t) HISTORY_SAMPLES * HISTORY_INTERVAL_MS)

typedef struct HistorySample {
        int64_t at_ms; /* wall clock of the latest counts recorded in its minute */
        int64_t counts[_JOB_STATE_MAX];
} HistorySample;

typedef struct History {
        HistorySample ring[HISTORY_SAMPLES];
        size_t next; /* where the next new minute goes */
        size_t n;    /* samples held (at most HISTORY_SAMPLES) */
} History;

void history_init(History *h);

/* Record COUNTS at NOW_MS: a new minute (of the wall clock) takes a new slot, dropping the
 * oldest when the ring is full; another recording in the newest sample's minute replaces it,
 * so the newest sample is always the latest counts. A clock that stepped back starts a new
 * sample too (the ring never reorders). */
void history_record(History *h, int64_t now_ms, const int64_t counts[_JOB_STATE_MAX]);

/* The samples of the hour before NOW_MS (at_ms > now_ms - HISTORY_SPAN_MS, and not after
 * NOW_MS), oldest first, copied to RET; returns how many. */
size_t history_snapshot(const History *h, int64_t now_ms, HistorySample ret[HISTORY_SAMPLES]);
