/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "session.h"

#define SECRET_BYTES 16

typedef struct Session {
        uint32_t generation;   /* bumped whenever the slot is reused or refreshed (0: never used) */
        bool in_use;
        char client[SESSION_CLIENT_MAX];
        uint8_t access[SECRET_BYTES], refresh[SECRET_BYTES];
        usec_t access_until, refresh_until;
} Session;

struct SessionTable {
        pthread_mutex_t lock;
        unsigned max;
        Session *slots;
};

int session_table_new(unsigned max, SessionTable **ret) {
        SessionTable *t;

        assert(max > 0);
        assert(ret);
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->slots = calloc(max, sizeof(*t->slots));
        if (!t->slots) {
                free(t);
                return -ENOMEM;
        }
        t->max = max;
        pthread_mutex_init(&t->lock, NULL);
        *ret = t;
        return 0;
}

SessionTable *session_table_free(SessionTable *t) {
        if (!t)
                return NULL;
        explicit_bzero(t->slots, sizeof(*t->slots) * t->max);
        free(t->slots);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return NULL;
}

static void hex(char *out, const uint8_t *in, size_t n) {
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[in[i] >> 4];
                out[2 * i + 1] = digits[in[i] & 15];
        }
}

static int unhex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

static void format_token(char *out, char kind, unsigned slot, uint32_t generation, const uint8_t *secret) {
        snprintf(out, 18, "%c%08x%08x", kind, slot, generation);
        hex(out + 17, secret, SECRET_BYTES);
        out[SESSION_TOKEN_LEN] = '\0';
}

/* Split a token of the given kind into its slot, generation and secret: false if malformed. */
static bool parse_token(const char *token, char kind, unsigned *ret_slot, uint32_t *ret_generation,
                        uint8_t *ret_secret) {
        uint32_t v[2] = { 0, 0 };

        if (!token || strlen(token) != SESSION_TOKEN_LEN || token[0] != kind)
                return false;
        for (size_t i = 0; i < 16; i++) {
                int d = unhex_digit(token[1 + i]);

                if (d < 0)
                        return false;
                v[i / 8] = (v[i / 8] << 4) | (uint32_t) d;
        }
        for (size_t i = 0; i < SECRET_BYTES; i++) {
                int hi = unhex_digit(token[17 + 2 * i]), lo = unhex_digit(token[18 + 2 * i]);

                if (hi < 0 || lo < 0)
                        return false;
                ret_secret[i] = (uint8_t) (hi << 4 | lo);
        }
        *ret_slot = v[0];
        *ret_generation = v[1];
        return true;
}

static bool equal_ct(const uint8_t *a, const uint8_t *b) {
        uint8_t d = 0;

        for (size_t i = 0; i < SECRET_BYTES; i++)
                d |= a[i] ^ b[i];
        return d == 0;
}

/* New secrets and a new generation for slot i (lock held). */
static int issue(SessionTable *t, unsigned i, usec_t now, usec_t lifetime, char *ret_access, char *ret_refresh) {
        Session *s = &t->slots[i];

        if (getrandom(s->access, sizeof(s->access), 0) != (ssize_t) sizeof(s->access) ||
            getrandom(s->refresh, sizeof(s->refresh), 0) != (ssize_t) sizeof(s->refresh)) {
                explicit_bzero(s, sizeof(*s));
                return -EIO;
        }
        s->generation++;
        if (s->generation == 0)
                s->generation = 1;
        s->in_use = true;
        s->access_until = now + lifetime;
        s->refresh_until = now + SESSION_REFRESH_LIFETIME;
        format_token(ret_access, 'a', i, s->generation, s->access);
        if (ret_refresh)
                format_token(ret_refresh, 'r', i, s->generation, s->refresh);
        return 0;
}

int session_create(SessionTable *t, const char *client, usec_t now, usec_t lifetime, char *ret_access,
                   char *ret_refresh) {
        unsigned pick = 0;
        int r;

        assert(t);
        assert(ret_access);
        if (!client)
                client = "";
        if (strlen(client) >= SESSION_CLIENT_MAX)
                return -ENAMETOOLONG;
        pthread_mutex_lock(&t->lock);
        /* A free (or wholly ended) slot, else the one whose refresh token ends first. */
        for (unsigned i = 0; i < t->max; i++) {
                Session *s = &t->slots[i];

                if (!s->in_use || s->refresh_until <= now) {
                        pick = i;
                        break;
                }
                if (s->refresh_until < t->slots[pick].refresh_until)
                        pick = i;
        }
        snprintf(t->slots[pick].client, sizeof(t->slots[pick].client), "%s", client);
        r = issue(t, pick, now, lifetime, ret_access, ret_refresh);
        pthread_mutex_unlock(&t->lock);
        return r;
}

/* The slot a token names, if its secret matches (lock held): -ENOENT or the slot. */
static int find(SessionTable *t, const char *token, char kind) {
        uint8_t secret[SECRET_BYTES];
        uint32_t generation;
        unsigned i;
        bool ok;

        if (!parse_token(token, kind, &i, &generation, secret) || i >= t->max)
                return -ENOENT;
        ok = t->slots[i].in_use && t->slots[i].generation == generation &&
             equal_ct(secret, kind == 'a' ? t->slots[i].access : t->slots[i].refresh);
        explicit_bzero(secret, sizeof(secret));
        return ok ? (int) i : -ENOENT;
}

static void info(const Session *s, SessionInfo *ret) {
        if (!ret)
                return;
        snprintf(ret->client, sizeof(ret->client), "%s", s->client);
        ret->expires_at = s->access_until;
}

int session_lookup(SessionTable *t, const char *token, usec_t now, SessionInfo *ret) {
        int i;

        assert(t);
        pthread_mutex_lock(&t->lock);
        i = find(t, token, 'a');
        if (i >= 0) {
                if (t->slots[i].access_until <= now)
                        i = -ETIME;
                else
                        info(&t->slots[i], ret);
        }
        pthread_mutex_unlock(&t->lock);
        return i < 0 ? i : 0;
}

int session_refresh(SessionTable *t, const char *refresh, usec_t now, usec_t lifetime, char *ret_access,
                    char *ret_refresh, SessionInfo *ret) {
        int i, r;

        assert(t);
        assert(ret_access);
        pthread_mutex_lock(&t->lock);
        i = find(t, refresh, 'r');
        if (i < 0)
                r = i;
        else if (t->slots[i].refresh_until <= now)
                r = -ETIME;
        else {
                r = issue(t, (unsigned) i, now, lifetime, ret_access, ret_refresh);
                if (r >= 0)
                        info(&t->slots[i], ret);
        }
        pthread_mutex_unlock(&t->lock);
        return r;
}

unsigned session_end_client(SessionTable *t, const char *client) {
        unsigned n = 0;

        assert(t);
        pthread_mutex_lock(&t->lock);
        for (unsigned i = 0; i < t->max; i++)
                if (t->slots[i].in_use && strcmp(t->slots[i].client, client ? client : "") == 0) {
                        t->slots[i].in_use = false;
                        explicit_bzero(t->slots[i].access, sizeof(t->slots[i].access));
                        explicit_bzero(t->slots[i].refresh, sizeof(t->slots[i].refresh));
                        n++;
                }
        pthread_mutex_unlock(&t->lock);
        return n;
}

unsigned session_count(SessionTable *t, usec_t now) {
        unsigned n = 0;

        assert(t);
        pthread_mutex_lock(&t->lock);
        for (unsigned i = 0; i < t->max; i++)
                n += t->slots[i].in_use && t->slots[i].refresh_until > now;
        pthread_mutex_unlock(&t->lock);
        return n;
}
