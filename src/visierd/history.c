/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Queue history: the ring of per-minute job counts (see history.h). Owns no thread, no lock
 * and no clock: the caller gives the time and serializes calls.
 */
#include <string.h>

#include "history.h"

void history_init(History *h) {
        memset(h, 0, sizeof(*h));
}

static int64_t minute_of(int64_t ms) {
        return ms >= 0 ? ms / HISTORY_INTERVAL_MS : -1 - (-1 - ms) / HISTORY_INTERVAL_MS;
}

void history_record(History *h, int64_t now_ms, const int64_t counts[_JOB_STATE_MAX]) {
        HistorySample *s;

        if (h->n > 0) {
                HistorySample *newest = &h->ring[(h->next + HISTORY_SAMPLES - 1) % HISTORY_SAMPLES];

                if (minute_of(newest->at_ms) == minute_of(now_ms)) {
                        newest->at_ms = now_ms;
                        memcpy(newest->counts, counts, sizeof(newest->counts));
                        return;
                }
        }
        s = &h->ring[h->next];
        s->at_ms = now_ms;
        memcpy(s->counts, counts, sizeof(s->counts));
        h->next = (h->next + 1) % HISTORY_SAMPLES;
        if (h->n < HISTORY_SAMPLES)
                h->n++;
}

size_t history_snapshot(const History *h, int64_t now_ms, HistorySample ret[HISTORY_SAMPLES]) {
        size_t first = (h->next + HISTORY_SAMPLES - h->n) % HISTORY_SAMPLES, k = 0;

        for (size_t i = 0; i < h->n; i++) {
                const HistorySample *s = &h->ring[(first + i) % HISTORY_SAMPLES];

                if (s->at_ms > now_ms - HISTORY_SPAN_MS && s->at_ms <= now_ms)
                        ret[k++] = *s;
        }
        return k;
}
