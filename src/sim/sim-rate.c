/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: each window (minute, hour) is a fixed window that opens with the first call after
 * the previous window has ended, not aligned to the wall clock: a window opened at t lasts
 * until t + length, and the next call after that opens a new one. A call is allowed only when
 * both windows have budget left; an allowed call spends one unit of both, a refused call
 * spends nothing. Retry-After is the time until the exhausted window (the later one when both
 * are exhausted) ends, rounded up, at least 1 second. Never logs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "clock.h"
#include "sim-rate.h"

typedef struct RateWindow {
        uint64_t limit;         /* 0 = unlimited */
        uint64_t length_usec;
        uint64_t start_usec;
        uint64_t used;
        bool open;
} RateWindow;

struct Rate {
        pthread_mutex_t lock;
        RateWindow minute, hour;
};

int rate_new(uint64_t per_minute, uint64_t per_hour, Rate **ret) {
        Rate *r;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        pthread_mutex_init(&r->lock, NULL);
        r->minute = (RateWindow) { .limit = per_minute, .length_usec = 60 * USEC_PER_SEC };
        r->hour = (RateWindow) { .limit = per_hour, .length_usec = 3600 * USEC_PER_SEC };
        *ret = r;
        return 0;
}

Rate *rate_free(Rate *r) {
        if (!r)
                return NULL;
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
}

static void window_roll(RateWindow *w, uint64_t now) {
        if (!w->open || now >= w->start_usec + w->length_usec) {
                w->open = true;
                w->start_usec = now;
                w->used = 0;
        }
}

static bool window_has_budget(const RateWindow *w) {
        return w->limit == 0 || w->used < w->limit;
}

static uint64_t window_remaining(const RateWindow *w) {
        if (w->limit == 0)
                return RATE_UNLIMITED_REPORT;
        return w->used >= w->limit ? 0 : w->limit - w->used;
}

static uint64_t window_retry_after(const RateWindow *w, uint64_t now) {
        uint64_t end = w->start_usec + w->length_usec, left;

        left = end > now ? end - now : 0;
        left = (left + USEC_PER_SEC - 1) / USEC_PER_SEC;
        return left < 1 ? 1 : left;
}

bool rate_take(Rate *r, RateInfo *info) {
        uint64_t now = clock_now(), retry = 0;
        bool allowed;

        pthread_mutex_lock(&r->lock);
        window_roll(&r->minute, now);
        window_roll(&r->hour, now);

        allowed = window_has_budget(&r->minute) && window_has_budget(&r->hour);
        if (allowed) {
                r->minute.used++;
                r->hour.used++;
        } else {
                if (!window_has_budget(&r->minute))
                        retry = window_retry_after(&r->minute, now);
                if (!window_has_budget(&r->hour)) {
                        uint64_t h = window_retry_after(&r->hour, now);
                        if (h > retry)
                                retry = h;
                }
        }

        *info = (RateInfo) {
                .limit_minute = r->minute.limit == 0 ? RATE_UNLIMITED_REPORT : r->minute.limit,
                .remaining_minute = window_remaining(&r->minute),
                .limit_hour = r->hour.limit == 0 ? RATE_UNLIMITED_REPORT : r->hour.limit,
                .remaining_hour = window_remaining(&r->hour),
                .retry_after_sec = retry,
        };
        pthread_mutex_unlock(&r->lock);
        return allowed;
}

void rate_reset(Rate *r) {
        pthread_mutex_lock(&r->lock);
        r->minute.open = false;
        r->hour.open = false;
        r->minute.used = r->hour.used = 0;
        pthread_mutex_unlock(&r->lock);
}
