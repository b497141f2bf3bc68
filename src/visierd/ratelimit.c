/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rate budget (see ratelimit.h).
 *
 * DESIGN: each bucket holds at most its cap and refills at cap per period, so a burst of a
 * full minute's budget is allowed and then calls are spaced evenly. Visier counts in fixed
 * windows we cannot see, so its Remaining headers only ever lower our count; a 429 closes the
 * budget until Retry-After has passed. Time is passed in, which keeps the arithmetic testable.
 */
#include <errno.h>
#include <math.h>

#include "ratelimit.h"

void ratelimit_init(RateLimit *rl, unsigned per_minute, unsigned per_hour, usec_t now) {
        pthread_mutex_init(&rl->lock, NULL);
        rl->minute_cap = per_minute;
        rl->hour_cap = per_hour;
        rl->minute_tokens = per_minute;
        rl->hour_tokens = per_hour;
        rl->last_refill = now;
        rl->blocked_until = 0;
}

void ratelimit_done(RateLimit *rl) {
        pthread_mutex_destroy(&rl->lock);
}

static void refill(RateLimit *rl, usec_t now) {
        double dt;

        if (now <= rl->last_refill)
                return;
        dt = (double) (now - rl->last_refill) / (double) USEC_PER_SEC;
        rl->minute_tokens = fmin((double) rl->minute_cap, rl->minute_tokens + dt * rl->minute_cap / 60.0);
        rl->hour_tokens = fmin((double) rl->hour_cap, rl->hour_tokens + dt * rl->hour_cap / 3600.0);
        rl->last_refill = now;
}

void ratelimit_set_caps(RateLimit *rl, unsigned per_minute, unsigned per_hour) {
        pthread_mutex_lock(&rl->lock);
        rl->minute_cap = per_minute;
        rl->hour_cap = per_hour;
        rl->minute_tokens = fmin(rl->minute_tokens, per_minute);
        rl->hour_tokens = fmin(rl->hour_tokens, per_hour);
        pthread_mutex_unlock(&rl->lock);
}

static usec_t wait_for_one(double tokens, unsigned cap, double period_sec) {
        double need = 1.0 - tokens;

        if (need <= 0)
                return 0;
        return (usec_t) ceil(need * period_sec / cap * (double) USEC_PER_SEC);
}

int ratelimit_try_take(RateLimit *rl, usec_t now, usec_t *ret_wait) {
        usec_t wm, wh, w;
        int r = 0;

        pthread_mutex_lock(&rl->lock);
        refill(rl, now);
        if (now < rl->blocked_until) {
                *ret_wait = rl->blocked_until - now;
                r = -EAGAIN;
        } else if (rl->minute_tokens >= 1.0 && rl->hour_tokens >= 1.0) {
                rl->minute_tokens -= 1.0;
                rl->hour_tokens -= 1.0;
        } else {
                wm = wait_for_one(rl->minute_tokens, rl->minute_cap, 60.0);
                wh = wait_for_one(rl->hour_tokens, rl->hour_cap, 3600.0);
                w = wm > wh ? wm : wh;
                *ret_wait = w > 0 ? w : 1;
                r = -EAGAIN;
        }
        pthread_mutex_unlock(&rl->lock);
        return r;
}

usec_t ratelimit_next_free(RateLimit *rl, usec_t now) {
        usec_t wm, wh, w = 0;

        pthread_mutex_lock(&rl->lock);
        refill(rl, now);
        if (now < rl->blocked_until)
                w = rl->blocked_until - now;
        if (rl->minute_tokens < 1.0 || rl->hour_tokens < 1.0) {
                wm = wait_for_one(rl->minute_tokens, rl->minute_cap, 60.0);
                wh = wait_for_one(rl->hour_tokens, rl->hour_cap, 3600.0);
                if (wm > w)
                        w = wm;
                if (wh > w)
                        w = wh;
        }
        pthread_mutex_unlock(&rl->lock);
        return w;
}

int ratelimit_try_take_low(RateLimit *rl, usec_t now, double reserve, usec_t *ret_wait) {
        double need_m, need_h;
        int r = 0;

        pthread_mutex_lock(&rl->lock);
        refill(rl, now);
        /* The reserve is a share of a minute's budget, kept in both buckets. */
        need_m = 1.0 + reserve * rl->minute_cap;
        need_h = need_m;
        if (now < rl->blocked_until) {
                *ret_wait = rl->blocked_until - now;
                r = -EAGAIN;
        } else if (rl->minute_tokens >= need_m && rl->hour_tokens >= need_h) {
                rl->minute_tokens -= 1.0;
                rl->hour_tokens -= 1.0;
        } else {
                usec_t wm = wait_for_one(rl->minute_tokens - (need_m - 1.0), rl->minute_cap, 60.0);
                usec_t wh = wait_for_one(rl->hour_tokens - (need_h - 1.0), rl->hour_cap, 3600.0);
                *ret_wait = (wm > wh ? wm : wh) ?: 1;
                r = -EAGAIN;
        }
        pthread_mutex_unlock(&rl->lock);
        return r;
}

int ratelimit_take_low(RateLimit *rl, usec_t deadline, double reserve) {
        for (;;) {
                usec_t now = clock_now(), wait = 0;

                if (ratelimit_try_take_low(rl, now, reserve, &wait) == 0)
                        return 0;
                if (now + wait > deadline)
                        return -ETIMEDOUT;
                clock_sleep(wait);
        }
}

int ratelimit_take(RateLimit *rl, usec_t deadline) {
        for (;;) {
                usec_t now = clock_now(), wait = 0;

                if (ratelimit_try_take(rl, now, &wait) == 0)
                        return 0;
                if (now + wait > deadline)
                        return -ETIMEDOUT;
                clock_sleep(wait);
        }
}

void ratelimit_take_forced(RateLimit *rl, usec_t now) {
        pthread_mutex_lock(&rl->lock);
        refill(rl, now);
        rl->minute_tokens -= 1.0;
        rl->hour_tokens -= 1.0;
        pthread_mutex_unlock(&rl->lock);
}

void ratelimit_observe(RateLimit *rl, long remaining_minute, long remaining_hour, usec_t now) {
        pthread_mutex_lock(&rl->lock);
        refill(rl, now);
        if (remaining_minute >= 0 && rl->minute_tokens > (double) remaining_minute)
                rl->minute_tokens = (double) remaining_minute;
        if (remaining_hour >= 0 && rl->hour_tokens > (double) remaining_hour)
                rl->hour_tokens = (double) remaining_hour;
        pthread_mutex_unlock(&rl->lock);
}

void ratelimit_block(RateLimit *rl, usec_t until) {
        pthread_mutex_lock(&rl->lock);
        if (until > rl->blocked_until)
                rl->blocked_until = until;
        pthread_mutex_unlock(&rl->lock);
}

void ratelimit_snapshot(RateLimit *rl, usec_t now, unsigned *ret_minute, unsigned *ret_hour) {
        pthread_mutex_lock(&rl->lock);
        refill(rl, now);
        *ret_minute = rl->minute_tokens > 0 ? (unsigned) rl->minute_tokens : 0;
        *ret_hour = rl->hour_tokens > 0 ? (unsigned) rl->hour_tokens : 0;
        pthread_mutex_unlock(&rl->lock);
}
