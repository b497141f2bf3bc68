/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated tenant's credentials, its OAuth client and its live tokens (VisierASIDTokens,
 * OAuth access and refresh tokens). Thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_TOKEN_BYTES 32
#define AUTH_TOKEN_HEX_LEN (AUTH_TOKEN_BYTES * 2)
/* Most tokens kept at once; past it the one closest to expiry is forgotten. */
#define AUTH_TOKENS_MAX 4096

/* How long an OAuth refresh token lives (access tokens and ASID tokens live the TTL). */
#define AUTH_REFRESH_TTL (24ULL * 3600 * 1000000)

typedef struct Auth Auth;

typedef enum AuthTokenKind {
        AUTH_TOKEN_ASID,        /* the VisierASIDToken cookie */
        AUTH_TOKEN_ACCESS,      /* Authorization: Bearer */
        AUTH_TOKEN_REFRESH,     /* one refresh_token grant */
} AuthTokenKind;

typedef enum AuthGrantKind {
        AUTH_GRANT_PASSWORD,    /* grant_type=password: username, password */
        AUTH_GRANT_REFRESH,     /* grant_type=refresh_token: the refresh token, used up */
        AUTH_GRANT_ASID,        /* urn:visier:params:oauth:grant-type:asid-token: a live ASID token */
} AuthGrantKind;

typedef struct AuthGrant {
        AuthGrantKind kind;
        const char *username, *password;        /* AUTH_GRANT_PASSWORD */
        const char *token;                      /* AUTH_GRANT_REFRESH, AUTH_GRANT_ASID */
} AuthGrant;

/* Copies the credentials; the copies are wiped when freed. CLIENT_ID and CLIENT_SECRET are
 * the one OAuth client registered with the tenant. */
int auth_new(const char *username, const char *password, const char *apikey, const char *client_id,
             const char *client_secret, uint64_t ttl_usec, Auth **ret);
Auth *auth_free(Auth *a);

/* Replace the accepted password, API key and/or OAuth client secret (NULL keeps one); tokens
 * stay valid. Safe against concurrent auth_login() and the checks: the old copies are freed
 * under the lock those read them under. */
int auth_set_credentials(Auth *a, const char *password, const char *apikey, const char *client_secret);

/*
 * Check the credentials (constant time) and, when they match, issue a fresh token written to
 * RET_TOKEN (at least AUTH_TOKEN_HEX_LEN + 1 bytes). -EACCES on a mismatch, -EIO if no
 * randomness is available.
 */
int auth_login(Auth *a, const char *username, const char *password, char *ret_token, size_t size);

/* True when CLIENT_ID and CLIENT_SECRET are the registered OAuth client's (constant time). */
bool auth_client_valid(Auth *a, const char *client_id, const char *client_secret);

/*
 * An OAuth grant (the client already checked): on success a fresh access token and a fresh
 * refresh token into RET_ACCESS and RET_REFRESH (each AUTH_TOKEN_HEX_LEN + 1 bytes); a refresh
 * token is used up by its grant. -EACCES when the grant's credentials or token are not good.
 */
int auth_oauth_grant(Auth *a, const AuthGrant *g, char *ret_access, char *ret_refresh);

/* The lifetime of ASID and access tokens, in microseconds. */
uint64_t auth_token_ttl(Auth *a);

/* True when KEY is the configured API key. */
bool auth_apikey_valid(Auth *a, const char *key);

/* True when TOKEN was issued as KIND, is not revoked and has not expired by now. */
bool auth_token_valid(Auth *a, AuthTokenKind kind, const char *token);

/* Forget every token; returns how many were still live. */
unsigned auth_revoke_all(Auth *a);
