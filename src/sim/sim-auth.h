/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated tenant's credentials and its live VisierASIDTokens. Thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_TOKEN_BYTES 32
#define AUTH_TOKEN_HEX_LEN (AUTH_TOKEN_BYTES * 2)
/* Most tokens kept at once; past it the one closest to expiry is forgotten. */
#define AUTH_TOKENS_MAX 4096

typedef struct Auth Auth;

/* Copies USERNAME, PASSWORD and APIKEY; the copies are wiped when freed. */
int auth_new(const char *username, const char *password, const char *apikey, uint64_t ttl_usec, Auth **ret);
Auth *auth_free(Auth *a);

/* Replace the accepted password and/or API key (NULL keeps one); tokens stay valid. Safe
 * against concurrent auth_login() and auth_apikey_valid(): the old copies are freed under
 * the lock those read them under. */
int auth_set_credentials(Auth *a, const char *password, const char *apikey);

/*
 * Check the credentials (constant time) and, when they match, issue a fresh token written to
 * RET_TOKEN (at least AUTH_TOKEN_HEX_LEN + 1 bytes). -EACCES on a mismatch, -EIO if no
 * randomness is available.
 */
int auth_login(Auth *a, const char *username, const char *password, char *ret_token, size_t size);

/* True when KEY is the configured API key. */
bool auth_apikey_valid(Auth *a, const char *key);

/* True when TOKEN was issued, is not revoked and has not expired by now. */
bool auth_token_valid(Auth *a, const char *token);

/* Forget every token; returns how many were still live. */
unsigned auth_revoke_all(Auth *a);
