/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sim-requests.h"

struct RequestLog {
        pthread_mutex_t lock;
        json_t *entries[SIM_REQUESTS_MAX];
        size_t next, n;
};

int request_log_new(RequestLog **ret) {
        RequestLog *l = calloc(1, sizeof(*l));

        if (!l)
                return -ENOMEM;
        pthread_mutex_init(&l->lock, NULL);
        *ret = l;
        return 0;
}

void request_log_clear(RequestLog *l) {
        pthread_mutex_lock(&l->lock);
        for (size_t i = 0; i < SIM_REQUESTS_MAX; i++) {
                json_decref(l->entries[i]);
                l->entries[i] = NULL;
        }
        l->next = l->n = 0;
        pthread_mutex_unlock(&l->lock);
}

RequestLog *request_log_free(RequestLog *l) {
        if (!l)
                return NULL;
        request_log_clear(l);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return NULL;
}

/* A Cookie header with each VisierASIDToken's value replaced. */
static json_t *redacted_cookie(const char *v) {
        size_t n = strlen(v), o = 0;
        char *out = malloc(n * 2 + 16);
        json_t *j;

        if (!out)
                return NULL;
        for (const char *p = v; *p;) {
                const char *end = strchr(p, ';');
                size_t len = end ? (size_t) (end - p) : strlen(p);
                const char *q = p;

                while (q < p + len && *q == ' ')
                        q++;
                if ((size_t) (p + len - q) >= 16 && strncmp(q, "VisierASIDToken=", 16) == 0) {
                        memcpy(out + o, p, (size_t) (q - p) + 16);
                        o += (size_t) (q - p) + 16;
                        memcpy(out + o, "<token>", 7);
                        o += 7;
                } else {
                        memcpy(out + o, p, len);
                        o += len;
                }
                if (!end)
                        break;
                out[o++] = ';';
                p = end + 1;
        }
        out[o] = '\0';
        j = json_string(out);
        free(out);
        return j;
}

/* A JSON string of the bytes, or a marker when they are not UTF-8. */
static json_t *text_or_marker(const char *s, size_t len) {
        json_t *j = json_stringn(s, len);

        return j ? j : json_sprintf("<%zu bytes, not UTF-8>", len);
}

void request_log_add(RequestLog *l, const char *method, const char *target, const RequestLogHeader *headers,
                     size_t n_headers, const char *body, size_t body_len, bool is_login) {
        json_t *hs = json_array(), *e;

        for (size_t i = 0; i < n_headers && hs; i++) {
                const char *name = headers[i].name, *value = headers[i].value ? headers[i].value : "";
                json_t *v;

                if (strcasecmp(name, "apikey") == 0)
                        v = json_string("<apikey>");
                else if (strcasecmp(name, "Authorization") == 0)
                        v = json_string("<credentials>");
                else if (strcasecmp(name, "Cookie") == 0)
                        v = redacted_cookie(value);
                else
                        v = text_or_marker(value, strlen(value));
                json_array_append_new(hs, json_pack("[s,o]", name, v));
        }
        /* A sign-in's query may carry credentials too (Visier reads only the form; a client
         * may still send them there): kept out like the form. */
        e = json_pack("{s:o, s:s, s:o, s:o}", "method", text_or_marker(method, strlen(method)), "target",
                      target, "headers", hs ? hs : json_null(), "body",
                      is_login ? json_string("<login form>") : text_or_marker(body ? body : "", body_len));
        if (e && is_login && strchr(target, '?'))
                (void) json_object_set_new(e, "target",
                                           json_sprintf("%.*s?<redacted>", (int) (strchr(target, '?') - target), target));
        if (!e)
                return;
        pthread_mutex_lock(&l->lock);
        json_decref(l->entries[l->next]);
        l->entries[l->next] = e;
        l->next = (l->next + 1) % SIM_REQUESTS_MAX;
        if (l->n < SIM_REQUESTS_MAX)
                l->n++;
        pthread_mutex_unlock(&l->lock);
}

json_t *request_log_to_json(RequestLog *l) {
        json_t *list = json_array();

        pthread_mutex_lock(&l->lock);
        for (size_t k = 0; k < l->n; k++) {
                size_t i = (l->next + SIM_REQUESTS_MAX - l->n + k) % SIM_REQUESTS_MAX;

                json_array_append(list, l->entries[i]);
        }
        pthread_mutex_unlock(&l->lock);
        return json_pack("{s:o}", "requests", list);
}
