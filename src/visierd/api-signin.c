/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api-signin.h"
#include "parse.h"
#include "session.h"

_Static_assert(SESSION_CLIENT_MAX == CONFIG_CLIENT_NAME_MAX + 1, "a session holds a whole client name");

char *api_request_credential(HttpRequest *req, bool *ret_bearer) {
        const char *auth = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        const char *cookie = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_COOKIE);

        if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
                *ret_bearer = true;
                return strdup(auth + 7);
        }
        if (cookie) {
                CookieScan scan = { 0 };
                char *v;

                parse_cookie_header(cookie, &scan);
                if (scan.n_tokens > 0) {
                        *ret_bearer = false;
                        /* A value too long to be a session cannot be one: an empty credential. */
                        v = strdup(scan.token_truncated || !scan.token ? "" : scan.token);
                        explicit_bzero(scan.token_buf, sizeof(scan.token_buf));
                        return v;
                }
        }
        return NULL;
}

void free_credential(char *credential) {
        if (credential) {
                explicit_bzero(credential, strlen(credential));
                free(credential);
        }
}

/* A sign-in's fields, from a form body (or, for oauth2, a JSON object). */
typedef struct SignIn {
        char *grant_type, *username, *password, *client_id, *client_secret, *refresh_token;
} SignIn;

static void sign_in_done(SignIn *s) {
        char **fields[] = { &s->grant_type, &s->username, &s->password, &s->client_id, &s->client_secret,
                            &s->refresh_token };

        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                free_credential(TAKE_PTR(*fields[i]));
}

static bool is_json(HttpRequest *req) {
        const char *ct = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);

        return ct && strncasecmp(ct, "application/json", 16) == 0 && (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ');
}

/* Fill s from the body: 0, -EINVAL (bad encoding, or a field that is not a string), -ENOMEM. */
static int sign_in_parse(HttpRequest *req, bool json_allowed, SignIn *s) {
        static const char *const names[] = { "grant_type", "username", "password", "client_id", "client_secret",
                                             "refresh_token" };
        char **fields[] = { &s->grant_type, &s->username, &s->password, &s->client_id, &s->client_secret,
                            &s->refresh_token };
        int r = 0;

        if (json_allowed && is_json(req)) {
                json_t *j = json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);

                if (!json_is_object(j)) {
                        json_decref(j);
                        return -EINVAL;
                }
                for (size_t i = 0; i < ELEMENTSOF(names) && r >= 0; i++) {
                        json_t *v = json_object_get(j, names[i]);

                        if (!v)
                                continue;
                        if (!json_is_string(v))
                                r = -EINVAL;
                        else if (!(*fields[i] = strdup(json_string_value(v))))
                                r = -ENOMEM;
                }
                json_decref(j);
                return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                r = parse_form_field(req->body ? req->body : "", req->body_len, names[i], fields[i]);
                if (r == -ENOENT)
                        continue;
                if (r < 0)
                        return r;
        }
        return 0;
}

/*
 * Who signs in: with no [client] sections, anyone (the anonymous local caller, ""); with
 * them, name must be a client and secret its token, compared in constant time. Copies the
 * identity into ret (SESSION_CLIENT_MAX bytes). False: wrong credentials.
 */
static bool identify(const Config *c, const char *name, const char *secret, char *ret) {
        const ConfigClient *found = NULL;
        Secret given;

        if (c->n_clients == 0) {
                ret[0] = '\0';
                return true;
        }
        given.data = (char *) (secret ? secret : "");
        given.len = strlen(given.data);
        for (size_t i = 0; i < c->n_clients; i++) {
                /* Every token is compared, whatever the name: the time says nothing of which. */
                bool ok = c->clients[i].token && secret_equal(&given, c->clients[i].token);

                if (ok && name && strcmp(name, c->clients[i].name) == 0 && !found)
                        found = &c->clients[i];
        }
        if (!found)
                return false;
        snprintf(ret, SESSION_CLIENT_MAX, "%s", found->name);
        return true;
}

static struct MHD_Response *unauthorized(unsigned *ret_status, const char *msg) {
        *ret_status = MHD_HTTP_UNAUTHORIZED;
        return http_response_status("Unauthorized", true, "%s", msg);
}

static struct MHD_Response *bad_request(unsigned *ret_status, const char *msg) {
        *ret_status = MHD_HTTP_BAD_REQUEST;
        return http_response_status("BadRequest", true, "%s", msg);
}

static struct MHD_Response *internal_error(unsigned *ret_status, int r) {
        *ret_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return http_response_status("InternalError", false, "cannot start a session: %s", strerror(-r));
}

struct MHD_Response *api_signin_asid(Manager *m, HttpRequest *req, unsigned *ret_status) {
        char access[SESSION_TOKEN_LEN + 1], who[SESSION_CLIENT_MAX];
        _cleanup_(sign_in_done) SignIn s = { 0 };
        struct MHD_Response *resp;
        usec_t lifetime;
        bool ok;
        int r;

        r = sign_in_parse(req, false, &s);
        if (r == -ENOMEM)
                return NULL;
        if (r < 0)
                return bad_request(ret_status, "the body is not a valid application/x-www-form-urlencoded form");
        pthread_rwlock_rdlock(&m->config_lock);
        ok = identify(m->config, s.username, s.password, who);
        lifetime = (usec_t) m->config->session_lifetime * USEC_PER_SEC;
        pthread_rwlock_unlock(&m->config_lock);
        if (!ok) {
                metrics_signin(m->metrics, false);
                return unauthorized(ret_status, "the username and password are not valid");
        }
        r = session_create(m->sessions, who, clock_now(), lifetime, access, NULL);
        if (r < 0)
                return internal_error(ret_status, r);
        metrics_signin(m->metrics, true);
        resp = http_response_copy(access, strlen(access), "text/plain");
        explicit_bzero(access, sizeof(access));
        *ret_status = MHD_HTTP_OK;
        return resp;
}

/* TokenResponse: every member Visier defines but id_token (visierd has no OpenID identity). */
static struct MHD_Response *token_response(const char *access, const char *refresh, usec_t lifetime,
                                           unsigned *ret_status) {
        struct MHD_Response *resp;
        json_t *j;
        char *text;

        j = json_pack("{s:s, s:s, s:s, s:I}", "access_token", access, "refresh_token", refresh, "token_type", "Bearer",
                      "expires_in", (json_int_t) (lifetime / USEC_PER_SEC));
        if (!j)
                return NULL;
        text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!text)
                return NULL;
        resp = http_response_copy(text, strlen(text), "application/json");
        explicit_bzero(text, strlen(text));
        free(text);
        if (resp) {
                MHD_add_response_header(resp, "Cache-Control", "no-store");
                *ret_status = MHD_HTTP_OK;
        }
        return resp;
}

struct MHD_Response *api_signin_oauth2(Manager *m, HttpRequest *req, unsigned *ret_status) {
        char access[SESSION_TOKEN_LEN + 1], refresh[SESSION_TOKEN_LEN + 1], who[SESSION_CLIENT_MAX];
        _cleanup_(sign_in_done) SignIn s = { 0 };
        struct MHD_Response *resp;
        usec_t lifetime, now = clock_now();
        bool ok;
        int r;

        r = sign_in_parse(req, true, &s);
        if (r == -ENOMEM)
                return NULL;
        if (r < 0)
                return bad_request(ret_status, "the body is not a valid form (or JSON object of strings)");
        if (!s.grant_type)
                return bad_request(ret_status, "grant_type is required");
        pthread_rwlock_rdlock(&m->config_lock);
        lifetime = (usec_t) m->config->session_lifetime * USEC_PER_SEC;
        if (strcmp(s.grant_type, "password") == 0)
                ok = identify(m->config, s.username, s.password, who);
        else if (strcmp(s.grant_type, "client_credentials") == 0)
                ok = identify(m->config, s.client_id, s.client_secret, who);
        else if (strcmp(s.grant_type, "refresh_token") == 0) {
                SessionInfo si;

                r = session_refresh(m->sessions, s.refresh_token, now, lifetime, access, refresh, &si);
                /* A refresh for an identity that is no longer configured ends here. */
                ok = r >= 0 && (si.client[0] ? m->config->n_clients > 0 : m->config->n_clients == 0);
                if (ok && si.client[0]) {
                        ok = false;
                        for (size_t i = 0; i < m->config->n_clients; i++)
                                ok = ok || strcmp(m->config->clients[i].name, si.client) == 0;
                }
                if (!ok && r >= 0)
                        (void) session_end_client(m->sessions, si.client);
                pthread_rwlock_unlock(&m->config_lock);
                if (!ok) {
                        metrics_signin(m->metrics, false);
                        return unauthorized(ret_status, "the refresh token is not valid or has expired");
                }
                metrics_signin(m->metrics, true);
                resp = token_response(access, refresh, lifetime, ret_status);
                explicit_bzero(access, sizeof(access));
                explicit_bzero(refresh, sizeof(refresh));
                return resp;
        } else {
                pthread_rwlock_unlock(&m->config_lock);
                return bad_request(ret_status,
                                   "grant_type must be password, client_credentials or refresh_token for visierd");
        }
        pthread_rwlock_unlock(&m->config_lock);
        if (!ok) {
                metrics_signin(m->metrics, false);
                return unauthorized(ret_status, "the credentials are not valid");
        }
        r = session_create(m->sessions, who, now, lifetime, access, refresh);
        if (r < 0)
                return internal_error(ret_status, r);
        metrics_signin(m->metrics, true);
        resp = token_response(access, refresh, lifetime, ret_status);
        explicit_bzero(access, sizeof(access));
        explicit_bzero(refresh, sizeof(refresh));
        return resp;
}
