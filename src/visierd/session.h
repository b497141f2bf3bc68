/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local sign-in sessions: what POST /v1/admin/visierSecureToken and POST /v1/auth/oauth2/token
 * hand out, so that clients written for Visier sign in to visierd as they would to Visier.
 *
 * A session belongs to one local identity (a [client NAME] section, or the anonymous local
 * caller when none is configured) and lives in memory only: a restart forgets every session,
 * and a client's next call gets the 401 that makes it sign in again. Tokens are
 * "<kind><slot><generation><secret>" in hex: the slot and generation find the session at once,
 * the 128-bit secret is compared in constant time. Nothing here logs or knows about HTTP.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "clock.h"
#include "macro.h"

#define SESSION_TOKEN_LEN 49             /* 1 + 8 + 8 + 32 hex digits */
#define SESSION_CLIENT_MAX (64 + 1)      /* a [client NAME]'s name (CONFIG_CLIENT_NAME_MAX), NUL included */
#define SESSION_REFRESH_LIFETIME (24 * 3600 * USEC_PER_SEC)

typedef struct SessionTable SessionTable;

typedef struct SessionInfo {
        char client[SESSION_CLIENT_MAX]; /* "" for the anonymous local caller */
        usec_t expires_at;               /* of the access token */
} SessionInfo;

/* A table of at most max sessions; when full, signing in evicts the one that ends first. */
int session_table_new(unsigned max, SessionTable **ret);
SessionTable *session_table_free(SessionTable *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(SessionTable *, session_table_free);

/*
 * A new session for client ("" or NULL: anonymous) whose access token lasts `lifetime` from
 * `now` and whose refresh token lasts SESSION_REFRESH_LIFETIME. Writes both tokens (NUL-ended,
 * SESSION_TOKEN_LEN + 1 bytes each; refresh may be NULL). -ENAMETOOLONG, -EIO (no randomness).
 */
int session_create(SessionTable *t, const char *client, usec_t now, usec_t lifetime,
                   char *ret_access, char *ret_refresh);

/* The session an access token names: 0, -ENOENT (unknown, or ended by a restart), -ETIME
 * (expired). ret may be NULL. */
int session_lookup(SessionTable *t, const char *token, usec_t now, SessionInfo *ret);

/* Trade a refresh token for a new pair (the old pair stops working): 0, -ENOENT, -ETIME. */
int session_refresh(SessionTable *t, const char *refresh, usec_t now, usec_t lifetime, char *ret_access,
                    char *ret_refresh, SessionInfo *ret);

/* End every session of client (a [client] section removed or changed). "" ends the anonymous
 * ones. Returns how many ended. */
unsigned session_end_client(SessionTable *t, const char *client);

/* Sessions in use (for /metrics and tests). */
unsigned session_count(SessionTable *t, usec_t now);
