/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token keeper: owns the one current Visier security token and its expiry.
 *
 * One thread of its own does every login, so concurrent callers can never cause concurrent
 * logins (single-flight). It logs in at start, refreshes at expiry minus the margin minus a
 * little jitter, and after a failed login backs off exponentially (1 s doubling, capped at
 * 5 minutes). Callers take a copy of the token with token_acquire(), which checks expiry
 * against the clock at that moment: an expired token is never handed out, while a valid one
 * keeps being handed out while a refresh is failing. A 401 from Visier is reported with
 * token_invalidate() naming the generation the caller was given, so a late report cannot
 * throw away a newer token. Never logs: the login callback's error text is kept for /status.
 *
 * Callers on an event loop never wait here: token_try_acquire() answers at once, and a
 * subscriber (token_keeper_subscribe()) is told from the keeper's thread after every login
 * attempt, so such a caller can bounce the news onto its loop and try again then.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "secret.h"

#define TOKEN_BACKOFF_INITIAL (1 * USEC_PER_SEC)
#define TOKEN_BACKOFF_MAX (300 * USEC_PER_SEC)
#define TOKEN_ERROR_MAX 256
#define TOKEN_RECHECK (1 * USEC_PER_SEC) /* longest wait before the clock is read again */

/* Performs one login. Returns 0 and a new token, or a negative errno and a reason in err. */
typedef int (*token_login_fn)(void *userdata, Secret **ret_token, char *err, size_t errlen);
/* Told after each login attempt (from the keeper's thread, without its lock held). */
typedef void (*token_event_fn)(void *userdata, int result, const char *err, usec_t backoff);
/* Told that a login attempt ended (from the keeper's thread): must be quick and must not call
 * into the keeper; writing to an eventfd is the intended use. */
typedef void (*token_notify_fn)(void *userdata);

/* Subscribers a keeper tells about login results (token_keeper_subscribe). */
#define TOKEN_SUBSCRIBERS_MAX 4

typedef struct TokenKeeper TokenKeeper;

typedef struct TokenStatus {
        const char *state;         /* "none", "valid", "refreshing", "failing" */
        bool valid;                /* a token that may be sent is held */
        usec_t expires_in;         /* when valid */
        uint64_t logins, login_failures;
        unsigned rejections;       /* tokens refused in a row */
        usec_t next_attempt_in;    /* when failing */
        char last_error[TOKEN_ERROR_MAX];
} TokenStatus;

int token_keeper_new(usec_t lifetime, usec_t margin, token_login_fn login, void *login_userdata, token_event_fn event,
                     void *event_userdata, TokenKeeper **ret);
/* Stops the thread (waiting for a login in progress to end) and wipes the token. */
TokenKeeper *token_keeper_free(TokenKeeper *tk);
DEFINE_TRIVIAL_CLEANUP_FUNC(TokenKeeper *, token_keeper_free);

int token_keeper_start(TokenKeeper *tk);

/* Change lifetime and margin; applies from the next login. */
void token_keeper_set_times(TokenKeeper *tk, usec_t lifetime, usec_t margin);

/*
 * A copy of the current token (caller frees it) and its generation. Waits while a login is in
 * progress, up to deadline (monotonic). -ETIMEDOUT when the deadline passes, -ENOKEY when the
 * last login failed and the next attempt is not due yet (err gets the reason).
 */
int token_acquire(TokenKeeper *tk, usec_t deadline, Secret **ret_token, uint64_t *ret_generation, char *err,
                  size_t errlen);

/*
 * The same without waiting: 0 with a copy of the token, -ENOKEY and -ETIMEDOUT exactly when
 * token_acquire() would return them at this moment, or -EAGAIN when token_acquire() would
 * wait for a login (one is in progress or due): try again after the next subscriber
 * notification, or give up at the deadline as token_acquire() does (-ETIMEDOUT).
 */
int token_try_acquire(TokenKeeper *tk, usec_t deadline, Secret **ret_token, uint64_t *ret_generation, char *err,
                      size_t errlen);

/*
 * Call fn(userdata) from the keeper's thread after every login attempt, successful or not
 * (-ENOSPC past TOKEN_SUBSCRIBERS_MAX). Once token_keeper_unsubscribe() returns, fn is not
 * running and is never called again for that pair.
 */
int token_keeper_subscribe(TokenKeeper *tk, token_notify_fn fn, void *userdata);
void token_keeper_unsubscribe(TokenKeeper *tk, token_notify_fn fn, void *userdata);

/* The token of this generation was refused by Visier: drop it and log in again — at once the
 * first time, then with the login backoff while new tokens keep being refused unconfirmed. */
void token_invalidate(TokenKeeper *tk, uint64_t generation);
/* A call with the token of this generation was accepted: refusals no longer count. */
void token_confirm(TokenKeeper *tk, uint64_t generation);
/* The generation of the newest token (0 before the first login). */
uint64_t token_generation(TokenKeeper *tk);

/* Forget the token and log in now (credentials changed). */
void token_keeper_relogin(TokenKeeper *tk);

void token_keeper_status(TokenKeeper *tk, TokenStatus *ret);

/* Backoff after n consecutive failures (n >= 1): 1 s, 2 s, 4 s, ... capped at 5 minutes. */
usec_t token_backoff(unsigned failures);
