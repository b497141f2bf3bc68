/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rate budget (see ratelimit.h).
 *
 * DESIGN: Visier counts calls in fixed windows (a minute, an hour) whose start it does not
 * tell. A token bucket refilled continuously lets a full window's calls go early in one of
 * those windows and then more before it has closed, and Visier answers the extra ones with
 * 429. So each window here is a sliding one: a call is taken only while fewer than the cap
 * were taken in the last length + RATELIMIT_SLACK, and then no stretch of a window's length,
 * wherever it starts, holds more than the cap of calls arriving at Visier (as long as each
 * leaves within the slack's first second of its take and arrives within its second).
 *
 * A window keeps the calls it counts in a ring of slots, each holding the calls whose places
 * come back in the same quantum ((length + slack) / (RATELIMIT_SLOTS - 4), rounded up: a
 * call's place comes back up to one quantum late, never early). Taken calls come back in the
 * order they were taken, so the ring stays sorted and never holds more than the quanta of one
 * length + slack. Visier's Remaining headers count calls this budget did not make (another
 * client of the tenant) as taken now; a 429 closes the budget until Retry-After has passed.
 * Time is passed in, which keeps the arithmetic testable.
 */
#include <errno.h>

#include "ratelimit.h"

static void window_init(RateWindow *w, unsigned cap, usec_t length) {
        *w = (RateWindow) {
                .cap = cap,
                .length = length,
                .quantum = (length + RATELIMIT_SLACK + RATELIMIT_SLOTS - 5) / (RATELIMIT_SLOTS - 4),
        };
}

/* Give back the places whose time has come. */
static void window_expire(RateWindow *w, usec_t now) {
        while (w->used > 0 && w->slots[w->head].back_at <= now) {
                w->spent -= w->slots[w->head].n;
                w->head = (w->head + 1) % RATELIMIT_SLOTS;
                w->used--;
        }
}

/* Count n calls taken at now. */
static void window_spend(RateWindow *w, usec_t now, unsigned n) {
        usec_t back = (now + w->length + RATELIMIT_SLACK + w->quantum - 1) / w->quantum * w->quantum;
        RateSlot *last = w->used > 0 ? &w->slots[(w->head + w->used - 1) % RATELIMIT_SLOTS] : NULL;

        /* A clock passed in that went back joins the latest slot: later, never earlier. */
        if (last && back <= last->back_at)
                last->n += n;
        else if (w->used < RATELIMIT_SLOTS)
                w->slots[(w->head + w->used++) % RATELIMIT_SLOTS] = (RateSlot) { .back_at = back, .n = n };
        else
                last->n += n; /* cannot happen with a forward clock: the slots cover length + slack */
        w->spent += n;
}

static double window_free(const RateWindow *w) {
        return (double) w->cap - (double) w->spent;
}

/* How long from now until `need` calls are free (0: they are). */
static usec_t window_wait(const RateWindow *w, usec_t now, double need) {
        double excess = need - window_free(w), back = 0;

        if (excess <= 0)
                return 0;
        for (unsigned i = 0; i < w->used; i++) {
                const RateSlot *s = &w->slots[(w->head + i) % RATELIMIT_SLOTS];

                back += s->n;
                if (back >= excess)
                        return s->back_at > now ? s->back_at - now : 1;
        }
        /* More than the cap is needed: never free; check again after a whole window. */
        return w->length + RATELIMIT_SLACK;
}

void ratelimit_init(RateLimit *rl, unsigned per_minute, unsigned per_hour) {
        pthread_mutex_init(&rl->lock, NULL);
        window_init(&rl->minute, per_minute, 60 * USEC_PER_SEC);
        window_init(&rl->hour, per_hour, 3600 * USEC_PER_SEC);
        rl->blocked_until = 0;
}

void ratelimit_done(RateLimit *rl) {
        pthread_mutex_destroy(&rl->lock);
}

void ratelimit_set_caps(RateLimit *rl, unsigned per_minute, unsigned per_hour) {
        pthread_mutex_lock(&rl->lock);
        rl->minute.cap = per_minute;
        rl->hour.cap = per_hour;
        pthread_mutex_unlock(&rl->lock);
}

void ratelimit_caps(RateLimit *rl, unsigned *ret_per_minute, unsigned *ret_per_hour) {
        pthread_mutex_lock(&rl->lock);
        *ret_per_minute = rl->minute.cap;
        *ret_per_hour = rl->hour.cap;
        pthread_mutex_unlock(&rl->lock);
}

/* With the lock held: how long until a take needing `need` calls free in both windows could
 * succeed (0: now). */
static usec_t wait_locked(RateLimit *rl, usec_t now, double need) {
        usec_t w = now < rl->blocked_until ? rl->blocked_until - now : 0, wm, wh;

        window_expire(&rl->minute, now);
        window_expire(&rl->hour, now);
        wm = window_wait(&rl->minute, now, need);
        wh = window_wait(&rl->hour, now, need);
        if (wm > w)
                w = wm;
        if (wh > w)
                w = wh;
        return w;
}

/* Take a call if one is free in both windows, and a `reserve` share of a minute's cap
 * besides. */
static int take(RateLimit *rl, usec_t now, double reserve, usec_t *ret_wait) {
        usec_t w;

        pthread_mutex_lock(&rl->lock);
        w = wait_locked(rl, now, 1.0 + reserve * rl->minute.cap);
        if (w == 0) {
                window_spend(&rl->minute, now, 1);
                window_spend(&rl->hour, now, 1);
        }
        pthread_mutex_unlock(&rl->lock);
        if (w == 0)
                return 0;
        *ret_wait = w;
        return -EAGAIN;
}

int ratelimit_try_take(RateLimit *rl, usec_t now, usec_t *ret_wait) {
        return take(rl, now, 0.0, ret_wait);
}

int ratelimit_try_take_low(RateLimit *rl, usec_t now, double reserve, usec_t *ret_wait) {
        return take(rl, now, reserve, ret_wait);
}

usec_t ratelimit_next_free(RateLimit *rl, usec_t now) {
        usec_t w;

        pthread_mutex_lock(&rl->lock);
        w = wait_locked(rl, now, 1.0);
        pthread_mutex_unlock(&rl->lock);
        return w;
}

static int take_sleeping(RateLimit *rl, usec_t deadline, double reserve) {
        for (;;) {
                usec_t now = clock_now(), wait = 0;

                if (take(rl, now, reserve, &wait) == 0)
                        return 0;
                if (now + wait > deadline)
                        return -ETIMEDOUT;
                clock_sleep(wait);
        }
}

int ratelimit_take_low(RateLimit *rl, usec_t deadline, double reserve) {
        return take_sleeping(rl, deadline, reserve);
}

int ratelimit_take(RateLimit *rl, usec_t deadline) {
        return take_sleeping(rl, deadline, 0.0);
}

static void observe_window(RateWindow *w, long remaining, usec_t now) {
        double extra;

        if (remaining < 0)
                return;
        extra = window_free(w) - (double) remaining;
        if (extra >= 1.0)
                window_spend(w, now, (unsigned) extra);
}

void ratelimit_observe(RateLimit *rl, long remaining_minute, long remaining_hour, usec_t now) {
        pthread_mutex_lock(&rl->lock);
        window_expire(&rl->minute, now);
        window_expire(&rl->hour, now);
        observe_window(&rl->minute, remaining_minute, now);
        observe_window(&rl->hour, remaining_hour, now);
        pthread_mutex_unlock(&rl->lock);
}

void ratelimit_block(RateLimit *rl, usec_t until) {
        pthread_mutex_lock(&rl->lock);
        if (until > rl->blocked_until)
                rl->blocked_until = until;
        pthread_mutex_unlock(&rl->lock);
}

static unsigned free_calls(const RateWindow *w) {
        double f = window_free(w);

        return f > 0 ? (unsigned) f : 0;
}

void ratelimit_snapshot(RateLimit *rl, usec_t now, unsigned *ret_minute, unsigned *ret_hour) {
        pthread_mutex_lock(&rl->lock);
        window_expire(&rl->minute, now);
        window_expire(&rl->hour, now);
        *ret_minute = free_calls(&rl->minute);
        *ret_hour = free_calls(&rl->hour);
        pthread_mutex_unlock(&rl->lock);
}
