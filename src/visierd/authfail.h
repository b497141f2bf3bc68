/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Failed authentications per peer ("tcp:ADDRESS", "uid:N"; the caller folds addresses one
 * host can choose among into one peer: all of 127.0.0.0/8, an IPv6 /64): how many in the
 * current window, when the next refusal may be answered, and when to log. Guessing a client
 * token then costs time: the first AUTHFAIL_FREE failures of a window are answered at once,
 * every later one AUTHFAIL_DELAY_FIRST after the previous one's answer (doubling to
 * AUTHFAIL_DELAY_MAX), but never later than AUTHFAIL_DELAY_MAX from now, so parallel guesses
 * from one peer are spread out without any being held for long. Requests that authenticate
 * are never delayed, so a local service sharing the peer address with a guesser is not slowed.
 * A window ends AUTHFAIL_WINDOW after the peer's last failure. Pure bookkeeping: no I/O, no
 * logging; thread-safe.
 */
#pragma once

#include <stdbool.h>

#include "clock.h"
#include "macro.h"

#define AUTHFAIL_PEERS 256
#define AUTHFAIL_FREE 5
#define AUTHFAIL_WINDOW (60 * USEC_PER_SEC)
#define AUTHFAIL_DELAY_FIRST (100 * USEC_PER_MSEC)
#define AUTHFAIL_DELAY_MAX (2 * USEC_PER_SEC)
#define AUTHFAIL_LOG_INTERVAL (10 * USEC_PER_SEC)
/* Refusals held for a later answer at once, in all; past it they are answered at once. */
#define AUTHFAIL_PENDING_MAX 256

typedef struct AuthFailures AuthFailures;

int authfail_new(AuthFailures **ret);
AuthFailures *authfail_free(AuthFailures *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(AuthFailures *, authfail_free);

typedef struct AuthFailureNote {
        usec_t answer_at;     /* when the refusal may be answered (<= now: at once) */
        unsigned failures;    /* in the peer's current window, this one included */
        usec_t window_start;
        bool log;             /* the first of a window, or AUTHFAIL_LOG_INTERVAL since the last line */
} AuthFailureNote;

/* A request from PEER failed to authenticate at NOW. */
void authfail_note(AuthFailures *a, const char *peer, usec_t now, AuthFailureNote *ret);
