/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Token keeper (see token.h).
 *
 * DESIGN: all state sits under one mutex; the keeper's thread is the only caller of the
 * login function and drops the mutex while it runs. Condition waits use CLOCK_MONOTONIC
 * with relative times taken from the clock module, so a replaced clock still drives the
 * decisions (what is valid, what is due) even though sleeps are real.
 *
 * Subscribers sit under a lock of their own, held while the keeper's thread calls them and
 * never together with the state lock, so unsubscribing waits out a call in progress and a
 * subscriber may read the keeper's state (token_try_acquire) from another thread at any time.
 */
#include <sys/random.h>

#include "parse.h"
#include "token.h"

struct TokenKeeper {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        bool started, stopping;

        token_login_fn login;
        void *login_userdata;
        token_event_fn event;
        void *event_userdata;
        usec_t lifetime, margin;

        Secret *token;
        uint64_t generation;
        usec_t expires_at, refresh_at;
        bool login_in_flight;

        unsigned failures;   /* logins that failed in a row */
        unsigned rejections; /* tokens Visier refused in a row, none confirmed since */
        usec_t next_attempt_at;
        char last_error[TOKEN_ERROR_MAX];
        uint64_t logins, login_failures;

        pthread_mutex_t subscribers_lock;
        struct {
                token_notify_fn fn;
                void *userdata;
        } subscribers[TOKEN_SUBSCRIBERS_MAX];
};

usec_t token_backoff(unsigned failures) {
        usec_t b = TOKEN_BACKOFF_INITIAL;

        for (unsigned i = 1; i < failures && b < TOKEN_BACKOFF_MAX; i++)
                b *= 2;
        return b < TOKEN_BACKOFF_MAX ? b : TOKEN_BACKOFF_MAX;
}

static usec_t jitter(usec_t max) {
        uint64_t v = 0;

        if (max == 0)
                return 0;
        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
                v = (uint64_t) clock_now();
        return v % max;
}

/* Wait on the condition until the clock-module time `until`, but never longer than
 * TOKEN_RECHECK at a stretch: callers re-check the clock after every wake, so a suspend or a
 * jumped clock is noticed within that time rather than when a long timer fires. */
static void keeper_wait_until(TokenKeeper *tk, usec_t until) {
        struct timespec ts;
        usec_t now = clock_now(), rel, abs;

        if (until <= now)
                return;
        rel = until - now;
        if (rel > TOKEN_RECHECK)
                rel = TOKEN_RECHECK;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        abs = (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000 + rel;
        ts.tv_sec = (time_t) (abs / USEC_PER_SEC);
        ts.tv_nsec = (long) (abs % USEC_PER_SEC) * 1000;
        pthread_cond_timedwait(&tk->cond, &tk->lock, &ts);
}

static void *keeper_thread(void *arg) {
        TokenKeeper *tk = arg;

        pthread_mutex_lock(&tk->lock);
        while (!tk->stopping) {
                usec_t now = clock_now(), start, backoff = 0, jmax;
                Secret *token = NULL;
                char err[TOKEN_ERROR_MAX] = "";
                bool due;
                int r;

                if (tk->token && now >= tk->expires_at)
                        tk->token = secret_free(tk->token); /* expired: never to be sent */
                due = !tk->token || now >= tk->refresh_at;
                if (!due || now < tk->next_attempt_at) {
                        keeper_wait_until(tk, due ? tk->next_attempt_at : tk->refresh_at);
                        continue;
                }

                tk->login_in_flight = true;
                start = now;
                pthread_mutex_unlock(&tk->lock);
                r = tk->login(tk->login_userdata, &token, err, sizeof(err));
                pthread_mutex_lock(&tk->lock);
                tk->login_in_flight = false;

                if (r >= 0) {
                        secret_free(tk->token);
                        tk->token = token;
                        tk->generation++;
                        tk->expires_at = start + tk->lifetime;
                        /* Jitter up to a tenth of the margin, and never into the token's first half-life. */
                        jmax = tk->margin / 10;
                        if (jmax > (tk->lifetime - tk->margin) / 2)
                                jmax = (tk->lifetime - tk->margin) / 2;
                        tk->refresh_at = tk->expires_at - tk->margin - jitter(jmax);
                        tk->failures = 0;
                        /* Not next_attempt_at: a token refused again soon must still wait out the
                         * backoff that its predecessor's refusal set. */
                        tk->last_error[0] = '\0';
                        tk->logins++;
                } else {
                        tk->failures++;
                        tk->login_failures++;
                        backoff = token_backoff(tk->failures);
                        tk->next_attempt_at = clock_now() + backoff;
                        snprintf(tk->last_error, sizeof(tk->last_error), "%s", err[0] ? err : strerror(-r));
                        /* Shown in /status: text only, even where the cut fell inside a character. */
                        (void) utf8_sanitize(tk->last_error);
                }
                pthread_cond_broadcast(&tk->cond);

                pthread_mutex_unlock(&tk->lock);
                if (tk->event)
                        tk->event(tk->event_userdata, r, err, backoff);
                pthread_mutex_lock(&tk->subscribers_lock);
                for (size_t i = 0; i < ELEMENTSOF(tk->subscribers); i++)
                        if (tk->subscribers[i].fn)
                                tk->subscribers[i].fn(tk->subscribers[i].userdata);
                pthread_mutex_unlock(&tk->subscribers_lock);
                pthread_mutex_lock(&tk->lock);
        }
        pthread_mutex_unlock(&tk->lock);
        return NULL;
}

int token_keeper_new(usec_t lifetime, usec_t margin, token_login_fn login, void *login_userdata, token_event_fn event,
                     void *event_userdata, TokenKeeper **ret) {
        pthread_condattr_t attr;
        TokenKeeper *tk;

        if (!login || margin >= lifetime)
                return -EINVAL;
        tk = calloc(1, sizeof(*tk));
        if (!tk)
                return -ENOMEM;
        pthread_mutex_init(&tk->lock, NULL);
        pthread_mutex_init(&tk->subscribers_lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&tk->cond, &attr);
        pthread_condattr_destroy(&attr);
        tk->login = login;
        tk->login_userdata = login_userdata;
        tk->event = event;
        tk->event_userdata = event_userdata;
        tk->lifetime = lifetime;
        tk->margin = margin;
        *ret = tk;
        return 0;
}

int token_keeper_start(TokenKeeper *tk) {
        int r;

        r = pthread_create(&tk->thread, NULL, keeper_thread, tk);
        if (r != 0)
                return -r;
        tk->started = true;
        return 0;
}

TokenKeeper *token_keeper_free(TokenKeeper *tk) {
        if (!tk)
                return NULL;
        pthread_mutex_lock(&tk->lock);
        tk->stopping = true;
        pthread_cond_broadcast(&tk->cond);
        pthread_mutex_unlock(&tk->lock);
        if (tk->started)
                pthread_join(tk->thread, NULL);
        secret_free(tk->token);
        pthread_cond_destroy(&tk->cond);
        pthread_mutex_destroy(&tk->subscribers_lock);
        pthread_mutex_destroy(&tk->lock);
        free(tk);
        return NULL;
}

void token_keeper_set_times(TokenKeeper *tk, usec_t lifetime, usec_t margin) {
        if (margin >= lifetime)
                return;
        pthread_mutex_lock(&tk->lock);
        tk->lifetime = lifetime;
        tk->margin = margin;
        pthread_mutex_unlock(&tk->lock);
}

/* One look at the state, with the lock held: what token_acquire() does at this moment.
 * -EAGAIN: it would wait for a login. */
static int acquire_locked(TokenKeeper *tk, usec_t deadline, Secret **ret_token, uint64_t *ret_generation, char *err,
                          size_t errlen) {
        usec_t now = clock_now();

        if (tk->token && now < tk->expires_at) {
                Secret *copy = secret_dup(tk->token);
                if (!copy)
                        return -ENOMEM;
                *ret_token = copy;
                if (ret_generation)
                        *ret_generation = tk->generation;
                return 0;
        }
        if (tk->token) {
                /* Expired before the keeper noticed (a late timer, a suspend): never send it. */
                tk->token = secret_free(tk->token);
                pthread_cond_broadcast(&tk->cond);
        }
        if (!tk->login_in_flight && tk->failures > 0 && now < tk->next_attempt_at) {
                snprintf(err, errlen, "no Visier token: the last login failed (%s); next attempt in %llu s",
                         tk->last_error,
                         (unsigned long long) ((tk->next_attempt_at - now + USEC_PER_SEC - 1) / USEC_PER_SEC));
                return -ENOKEY;
        }
        if (!tk->login_in_flight && tk->rejections > 0 && tk->next_attempt_at > deadline) {
                snprintf(err, errlen, "no Visier token: Visier refused the last %u token%s; next login in %llu s",
                         tk->rejections, tk->rejections == 1 ? "" : "s",
                         (unsigned long long) ((tk->next_attempt_at - now + USEC_PER_SEC - 1) / USEC_PER_SEC));
                return -ENOKEY;
        }
        if (now >= deadline) {
                snprintf(err, errlen, "no Visier token: timed out waiting for the login");
                return -ETIMEDOUT;
        }
        return -EAGAIN;
}

int token_acquire(TokenKeeper *tk, usec_t deadline, Secret **ret_token, uint64_t *ret_generation, char *err,
                  size_t errlen) {
        int r;

        pthread_mutex_lock(&tk->lock);
        while ((r = acquire_locked(tk, deadline, ret_token, ret_generation, err, errlen)) == -EAGAIN)
                keeper_wait_until(tk, deadline);
        pthread_mutex_unlock(&tk->lock);
        return r;
}

int token_try_acquire(TokenKeeper *tk, usec_t deadline, Secret **ret_token, uint64_t *ret_generation, char *err,
                      size_t errlen) {
        int r;

        pthread_mutex_lock(&tk->lock);
        r = acquire_locked(tk, deadline, ret_token, ret_generation, err, errlen);
        pthread_mutex_unlock(&tk->lock);
        return r;
}

int token_keeper_subscribe(TokenKeeper *tk, token_notify_fn fn, void *userdata) {
        int r = -ENOSPC;

        if (!fn)
                return -EINVAL;
        pthread_mutex_lock(&tk->subscribers_lock);
        for (size_t i = 0; i < ELEMENTSOF(tk->subscribers); i++)
                if (!tk->subscribers[i].fn) {
                        tk->subscribers[i].fn = fn;
                        tk->subscribers[i].userdata = userdata;
                        r = 0;
                        break;
                }
        pthread_mutex_unlock(&tk->subscribers_lock);
        return r;
}

void token_keeper_unsubscribe(TokenKeeper *tk, token_notify_fn fn, void *userdata) {
        pthread_mutex_lock(&tk->subscribers_lock);
        for (size_t i = 0; i < ELEMENTSOF(tk->subscribers); i++)
                if (tk->subscribers[i].fn == fn && tk->subscribers[i].userdata == userdata) {
                        tk->subscribers[i].fn = NULL;
                        tk->subscribers[i].userdata = NULL;
                }
        pthread_mutex_unlock(&tk->subscribers_lock);
}

void token_invalidate(TokenKeeper *tk, uint64_t generation) {
        pthread_mutex_lock(&tk->lock);
        if (tk->token && tk->generation == generation) {
                tk->token = secret_free(tk->token);
                /* The first refusal logs in again at once (a revocation); a token refused again
                 * before any call confirmed it waits 1 s, then 2 s, ... as failed logins do, so
                 * a Visier that takes logins but refuses every token is not flooded with logins. */
                tk->rejections++;
                if (tk->rejections > 1) {
                        usec_t at = clock_now() + token_backoff(tk->rejections - 1);
                        if (at > tk->next_attempt_at)
                                tk->next_attempt_at = at;
                        snprintf(tk->last_error, sizeof(tk->last_error),
                                 "Visier accepted the login but refused %u tokens in a row", tk->rejections);
                }
                pthread_cond_broadcast(&tk->cond);
        }
        pthread_mutex_unlock(&tk->lock);
}

void token_confirm(TokenKeeper *tk, uint64_t generation) {
        pthread_mutex_lock(&tk->lock);
        if (tk->generation == generation && tk->rejections > 0) {
                tk->rejections = 0;
                tk->next_attempt_at = 0;
        }
        pthread_mutex_unlock(&tk->lock);
}

uint64_t token_generation(TokenKeeper *tk) {
        uint64_t g;

        pthread_mutex_lock(&tk->lock);
        g = tk->generation;
        pthread_mutex_unlock(&tk->lock);
        return g;
}

void token_keeper_relogin(TokenKeeper *tk) {
        pthread_mutex_lock(&tk->lock);
        tk->token = secret_free(tk->token);
        tk->failures = 0;
        tk->rejections = 0;
        tk->next_attempt_at = 0;
        pthread_cond_broadcast(&tk->cond);
        pthread_mutex_unlock(&tk->lock);
}

void token_keeper_status(TokenKeeper *tk, TokenStatus *ret) {
        usec_t now = clock_now();

        memset(ret, 0, sizeof(*ret));
        pthread_mutex_lock(&tk->lock);
        ret->valid = tk->token && now < tk->expires_at;
        if (ret->valid)
                ret->expires_in = tk->expires_at - now;
        ret->rejections = tk->rejections;
        if (tk->failures > 0 || (!ret->valid && tk->rejections > 1)) {
                ret->state = "failing";
                ret->next_attempt_in = tk->next_attempt_at > now ? tk->next_attempt_at - now : 0;
        } else if (ret->valid)
                ret->state = tk->login_in_flight ? "refreshing" : "valid";
        else
                ret->state = "none";
        ret->logins = tk->logins;
        ret->login_failures = tk->login_failures;
        snprintf(ret->last_error, sizeof(ret->last_error), "%s", tk->last_error);
        pthread_mutex_unlock(&tk->lock);
}
