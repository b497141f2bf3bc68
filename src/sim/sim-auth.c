/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the simulated tenant's one API user, its API key, its one registered OAuth client and
 * the tokens it issues: VisierASIDTokens (POST /v1/admin/visierSecureToken), and OAuth access
 * and refresh tokens (POST /v1/auth/oauth2/token). Tokens are 32 random bytes in hex that
 * expire a fixed TTL after issue (refresh tokens AUTH_REFRESH_TTL); expiry is checked against
 * the clock at use time. A token is good only as its own kind: an access token is not a
 * cookie, a refresh token opens nothing but one refresh, after which it is gone. Secrets are compared in
 * constant time and wiped before free. The password and API key are replaced at run time
 * (SIGHUP), so every read of them, like every read of the token table, happens under the
 * module's mutex. This module never logs and never hands a secret out except the token it
 * has just issued.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "macro.h"
#include "sim-auth.h"
#include "clock.h"

typedef struct AuthToken {
        char value[AUTH_TOKEN_HEX_LEN + 1];
        AuthTokenKind kind;
        uint64_t expires_usec;
} AuthToken;

struct Auth {
        pthread_mutex_t lock;
        char *username;
        char *password;
        char *apikey;
        char *client_id;
        char *client_secret;
        uint64_t ttl_usec;
        AuthToken *tokens;      /* AUTH_TOKENS_MAX slots */
        size_t n_tokens;
};

static void secret_free(char *s) {
        if (!s)
                return;
        explicit_bzero(s, strlen(s));
        free(s);
}

/* Constant-time (in the length of the longer input's prefix, not its content) string equality. */
static bool secret_equal(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b), n = la > lb ? la : lb, i;
        unsigned char diff = (unsigned char) (la != lb);

        for (i = 0; i < n; i++) {
                unsigned char ca = i < la ? (unsigned char) a[i] : 0;
                unsigned char cb = i < lb ? (unsigned char) b[i] : 0;
                diff |= (unsigned char) (ca ^ cb);
        }
        return diff == 0;
}

int auth_new(const char *username, const char *password, const char *apikey, const char *client_id,
             const char *client_secret, uint64_t ttl_usec, Auth **ret) {
        Auth *a;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        pthread_mutex_init(&a->lock, NULL);
        a->ttl_usec = ttl_usec;
        a->username = strdup(username);
        a->password = strdup(password);
        a->apikey = strdup(apikey);
        a->client_id = strdup(client_id);
        a->client_secret = strdup(client_secret);
        a->tokens = calloc(AUTH_TOKENS_MAX, sizeof(AuthToken));
        if (!a->username || !a->password || !a->apikey || !a->client_id || !a->client_secret || !a->tokens) {
                auth_free(a);
                return -ENOMEM;
        }
        *ret = a;
        return 0;
}

Auth *auth_free(Auth *a) {
        if (!a)
                return NULL;
        secret_free(a->username);
        secret_free(a->password);
        secret_free(a->apikey);
        secret_free(a->client_id);
        secret_free(a->client_secret);
        if (a->tokens) {
                explicit_bzero(a->tokens, AUTH_TOKENS_MAX * sizeof(AuthToken));
                free(a->tokens);
        }
        pthread_mutex_destroy(&a->lock);
        free(a);
        return NULL;
}

/* Drop expired tokens. Called with the lock held. */
static void auth_gc_locked(Auth *a, uint64_t now) {
        size_t i = 0;

        while (i < a->n_tokens) {
                if (a->tokens[i].expires_usec <= now) {
                        a->tokens[i] = a->tokens[--a->n_tokens];
                        explicit_bzero(&a->tokens[a->n_tokens], sizeof(AuthToken));
                } else
                        i++;
        }
}

/* Issue a fresh token of KIND into RET_TOKEN (AUTH_TOKEN_HEX_LEN + 1 bytes). */
static int token_issue(Auth *a, AuthTokenKind kind, char *ret_token) {
        static const char hex[] = "0123456789abcdef";
        unsigned char raw[AUTH_TOKEN_BYTES];
        AuthToken t = { .kind = kind };
        uint64_t now;
        size_t i;

        if (getrandom(raw, sizeof(raw), 0) != (ssize_t) sizeof(raw))
                return -EIO;
        for (i = 0; i < sizeof(raw); i++) {
                t.value[2 * i] = hex[raw[i] >> 4];
                t.value[2 * i + 1] = hex[raw[i] & 15];
        }
        explicit_bzero(raw, sizeof(raw));

        now = clock_now();
        t.expires_usec = now + (kind == AUTH_TOKEN_REFRESH ? AUTH_REFRESH_TTL : a->ttl_usec);

        pthread_mutex_lock(&a->lock);
        auth_gc_locked(a, now);
        if (a->n_tokens >= AUTH_TOKENS_MAX) {
                /* Full: forget the token closest to expiry. */
                size_t oldest = 0;
                for (i = 1; i < a->n_tokens; i++)
                        if (a->tokens[i].expires_usec < a->tokens[oldest].expires_usec)
                                oldest = i;
                a->tokens[oldest] = t;
        } else
                a->tokens[a->n_tokens++] = t;
        pthread_mutex_unlock(&a->lock);

        memcpy(ret_token, t.value, AUTH_TOKEN_HEX_LEN + 1);
        explicit_bzero(&t, sizeof(t));
        return 0;
}

/* The user's credentials, both compared so that timing says nothing about which one failed.
 * Under the lock: SIGHUP's auth_set_credentials() frees the old password while we may read it. */
static bool user_matches(Auth *a, const char *username, const char *password) {
        bool ok;

        pthread_mutex_lock(&a->lock);
        ok = secret_equal(username ? username : "", a->username);
        ok = secret_equal(password ? password : "", a->password) && ok;
        pthread_mutex_unlock(&a->lock);
        return ok;
}

int auth_login(Auth *a, const char *username, const char *password, char *ret_token, size_t size) {
        if (size < AUTH_TOKEN_HEX_LEN + 1)
                return -ENOBUFS;
        if (!user_matches(a, username, password))
                return -EACCES;
        return token_issue(a, AUTH_TOKEN_ASID, ret_token);
}

bool auth_client_valid(Auth *a, const char *client_id, const char *client_secret) {
        bool ok;

        pthread_mutex_lock(&a->lock);
        ok = secret_equal(client_id ? client_id : "", a->client_id);
        ok = secret_equal(client_secret ? client_secret : "", a->client_secret) && ok;
        pthread_mutex_unlock(&a->lock);
        return ok && client_id && client_secret;
}

/* Remove TOKEN of KIND when it is live; true if it was. Called with the lock held. */
static bool token_take_locked(Auth *a, AuthTokenKind kind, const char *token, uint64_t now) {
        bool found = false;

        for (size_t i = 0; i < a->n_tokens; i++)
                if (secret_equal(token, a->tokens[i].value) && a->tokens[i].kind == kind &&
                    a->tokens[i].expires_usec > now) {
                        a->tokens[i] = a->tokens[--a->n_tokens];
                        explicit_bzero(&a->tokens[a->n_tokens], sizeof(AuthToken));
                        found = true;
                        break;
                }
        return found;
}

int auth_oauth_grant(Auth *a, const AuthGrant *g, char *ret_access, char *ret_refresh) {
        bool ok = false;
        int r;

        if (g->token && strlen(g->token) != AUTH_TOKEN_HEX_LEN)
                return -EACCES;
        switch (g->kind) {
        case AUTH_GRANT_PASSWORD:
                ok = user_matches(a, g->username, g->password);
                break;
        case AUTH_GRANT_REFRESH:
                ok = g->token && auth_token_valid(a, AUTH_TOKEN_REFRESH, g->token);
                break;
        case AUTH_GRANT_ASID:
                ok = g->token && auth_token_valid(a, AUTH_TOKEN_ASID, g->token);
                break;
        }
        if (!ok)
                return -EACCES;
        /* The new pair first: a client whose refresh fails keeps its refresh token. */
        r = token_issue(a, AUTH_TOKEN_ACCESS, ret_access);
        if (r >= 0)
                r = token_issue(a, AUTH_TOKEN_REFRESH, ret_refresh);
        if (r >= 0 && g->kind == AUTH_GRANT_REFRESH) {
                /* Used up; if a concurrent refresh took it first, this one loses. */
                pthread_mutex_lock(&a->lock);
                ok = token_take_locked(a, AUTH_TOKEN_REFRESH, g->token, clock_now());
                if (!ok) {
                        (void) token_take_locked(a, AUTH_TOKEN_ACCESS, ret_access, 0);
                        (void) token_take_locked(a, AUTH_TOKEN_REFRESH, ret_refresh, 0);
                }
                pthread_mutex_unlock(&a->lock);
                if (!ok) {
                        explicit_bzero(ret_access, AUTH_TOKEN_HEX_LEN + 1);
                        explicit_bzero(ret_refresh, AUTH_TOKEN_HEX_LEN + 1);
                        return -EACCES;
                }
        }
        return r;
}

int auth_set_credentials(Auth *a, const char *password, const char *apikey, const char *client_secret) {
        char *p = password ? strdup(password) : NULL, *k = apikey ? strdup(apikey) : NULL;
        char *c = client_secret ? strdup(client_secret) : NULL;

        if ((password && !p) || (apikey && !k) || (client_secret && !c)) {
                secret_free(p);
                secret_free(k);
                secret_free(c);
                return -ENOMEM;
        }
        pthread_mutex_lock(&a->lock);
        if (p) {
                secret_free(a->password);
                a->password = p;
        }
        if (k) {
                secret_free(a->apikey);
                a->apikey = k;
        }
        if (c) {
                secret_free(a->client_secret);
                a->client_secret = c;
        }
        pthread_mutex_unlock(&a->lock);
        return 0;
}

uint64_t auth_token_ttl(Auth *a) {
        return a->ttl_usec;
}

bool auth_apikey_valid(Auth *a, const char *key) {
        bool ok;

        if (!key)
                return false;
        /* Under the lock, as auth_login(): a reload frees the old key. */
        pthread_mutex_lock(&a->lock);
        ok = secret_equal(key, a->apikey);
        pthread_mutex_unlock(&a->lock);
        return ok;
}

bool auth_token_valid(Auth *a, AuthTokenKind kind, const char *token) {
        uint64_t now = clock_now();
        bool found = false;
        size_t i;

        if (!token || strlen(token) != AUTH_TOKEN_HEX_LEN)
                return false;

        pthread_mutex_lock(&a->lock);
        for (i = 0; i < a->n_tokens; i++)
                if (secret_equal(token, a->tokens[i].value) && a->tokens[i].kind == kind &&
                    a->tokens[i].expires_usec > now)
                        found = true;
        pthread_mutex_unlock(&a->lock);
        return found;
}

unsigned auth_revoke_all(Auth *a) {
        unsigned n;

        pthread_mutex_lock(&a->lock);
        auth_gc_locked(a, clock_now());
        n = (unsigned) a->n_tokens;
        explicit_bzero(a->tokens, AUTH_TOKENS_MAX * sizeof(AuthToken));
        a->n_tokens = 0;
        pthread_mutex_unlock(&a->lock);
        return n;
}
