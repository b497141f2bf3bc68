/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local API's router and handlers: ops routes (/healthz, /readyz, /status) and the
 * read endpoints of Visier's API, proxied unchanged through the upstream client. The route
 * table below is the one list of what visierd serves. Logs each failed request once, with
 * its request id; never logs or returns a secret.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <sys/random.h>

#include "api-signin.h"
#include "policy.h"
#include "exports.h"
#include "metrics.h"
#include "ui.h"
#include "validate.h"
#include "parse.h"

#include "log.h"
#include "manager.h"

#define API_HEADER_MAX 1024
#define API_QUERY_MAX 8192

typedef struct MHD_Response *(*route_fn)(Manager *m, HttpRequest *req, unsigned *ret_status);

/* Where a route's handler runs. */
typedef enum RouteKind {
        ROUTE_LOOP,   /* on the loop: never blocks (memory, the store's read connection) */
        ROUTE_WORKER, /* on a worker thread (it blocks: a store commit, Visier); the connection is suspended */
        ROUTE_OPS,    /* on the loop, and served even past max_connections (probes, scrapes) */
        ROUTE_ASYNC,  /* on the loop, answered later by whatever it started (a write's commit) */
} RouteKind;

typedef struct Route {
        const char *method;
        const char *pattern; /* '*' matches one path segment */
        route_fn handler;
        ClientRole role;     /* the least role that may call it when client tokens are configured */
        RouteKind kind;
        unsigned headers;    /* VH_* : the request headers Visier defines for it, forwarded */
        bool any_caller;     /* taken without X-Visierd-Request even with require_request_header:
                              * probes, scrapers and what a browser loads by navigation */
} Route;

/* The request headers Visier's definitions give the proxied operations (../shared/visier-api),
 * each forwarded only to the operations that define it, validated (valid UTF-8, no control
 * characters) and, where Visier types it boolean, normalised to true/false. Accept is the
 * client's content negotiation (data queries choose JSON, JSON lines or CSV). */
enum {
        VH_TARGET_TENANT = 1u << 0,
        VH_PROJECT = 1u << 1,
        VH_NON_VERSIONED = 1u << 2,
        VH_DATA_VERSION = 1u << 3,
        VH_ACCEPT = 1u << 4,
};
static const struct {
        const char *name;
        bool boolean;
} visier_headers[] = {
        { "TargetTenantID", false }, { "ProjectID", false }, { "NonVersioned", true },
        { "DataVersionID", false },  { "Accept", false },
};
#define VH_MAX ELEMENTSOF(visier_headers)
/* The first four are the policy table's bits too. */
_Static_assert((unsigned) VH_TARGET_TENANT == (unsigned) PH_TARGET_TENANT_ID &&
                       (unsigned) VH_PROJECT == (unsigned) PH_PROJECT_ID &&
                       (unsigned) VH_NON_VERSIONED == (unsigned) PH_NON_VERSIONED &&
                       (unsigned) VH_DATA_VERSION == (unsigned) PH_DATA_VERSION_ID,
               "VH_* and PH_* disagree");
#define VH_FROM_POLICY (VH_TARGET_TENANT | VH_PROJECT | VH_NON_VERSIONED | VH_DATA_VERSION)
#define VH_READ (VH_TARGET_TENANT | VH_PROJECT | VH_ACCEPT)
#define VH_PERMISSION_READ (VH_READ | VH_NON_VERSIONED)
#define VH_QUERY (VH_TARGET_TENANT | VH_PROJECT | VH_DATA_VERSION | VH_ACCEPT)

static struct MHD_Response *api_healthz(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_readyz(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_status(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_status_history(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_ui(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_metrics(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_proxy_read(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_write(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_query(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_exports_list(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_export_run(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_export_queue(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_export_result(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_jobs_list(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_job_get(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_job_cancel(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_job_retry(Manager *m, HttpRequest *req, unsigned *ret_status);

/* /metrics on the metrics-only listener: no role needed. */
static const Route metrics_only_route = { "GET", "/metrics", api_metrics, CLIENT_ROLE_NONE, ROUTE_OPS, 0, true };

static const Route routes[] = {
        { "GET", "/healthz", api_healthz, CLIENT_ROLE_NONE, ROUTE_OPS, 0, true },
        { "GET", "/readyz", api_readyz, CLIENT_ROLE_NONE, ROUTE_OPS, 0, true },
        { "GET", "/status", api_status, CLIENT_ROLE_READ, ROUTE_LOOP },
        { "GET", "/status/history", api_status_history, CLIENT_ROLE_READ, ROUTE_LOOP },
        /* The page for people: /status's rules, files built in (ui.c). */
        { "GET", "/ui", api_ui, CLIENT_ROLE_READ, ROUTE_LOOP, 0, true },
        { "GET", "/ui/*", api_ui, CLIENT_ROLE_READ, ROUTE_LOOP, 0, true },
        { "POST", "/v1/admin/visierSecureToken", api_signin_asid, CLIENT_ROLE_NONE, ROUTE_LOOP },
        { "POST", "/v1/auth/oauth2/token", api_signin_oauth2, CLIENT_ROLE_NONE, ROUTE_LOOP },
        { "GET", "/metrics", api_metrics, CLIENT_ROLE_READ, ROUTE_OPS },
        { "GET", "/jobs", api_jobs_list, CLIENT_ROLE_READ, ROUTE_LOOP },
        { "GET", "/jobs/*", api_job_get, CLIENT_ROLE_READ, ROUTE_LOOP },
        { "POST", "/jobs/*/cancel", api_job_cancel, CLIENT_ROLE_WRITE, ROUTE_WORKER },
        { "POST", "/jobs/*/retry", api_job_retry, CLIENT_ROLE_ADMIN, ROUTE_WORKER },
        { "POST", "/v1/admin/permissions", api_write, CLIENT_ROLE_WRITE, ROUTE_ASYNC },
        { "PUT", "/v1/admin/permissions", api_write, CLIENT_ROLE_WRITE, ROUTE_ASYNC },
        { "DELETE", "/v1/admin/permissions", api_write, CLIENT_ROLE_WRITE, ROUTE_ASYNC },
        { "PUT", "/v1/admin/permissions/users", api_write, CLIENT_ROLE_WRITE, ROUTE_ASYNC },
        { "DELETE", "/v1/admin/permissions/users", api_write, CLIENT_ROLE_WRITE, ROUTE_ASYNC },
        { "POST", "/v1/admin/permissions/revert-to-parent", api_write, CLIENT_ROLE_WRITE, ROUTE_ASYNC },
        /* visierd's own: merge patches (RFC 7396), sent as Visier's full-replacement PUT. */
        { "PATCH", "/v1/admin/permissions", api_write, CLIENT_ROLE_WRITE, ROUTE_ASYNC },
        { "PATCH", "/v1/admin/permissions/*", api_write, CLIENT_ROLE_WRITE, ROUTE_ASYNC },
        { "GET", "/v1/admin/capabilities", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_READ },
        { "GET", "/v1/admin/capabilities/*", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_READ },
        { "GET", "/v1/admin/content-packages", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_READ },
        { "GET", "/v1/admin/content-packages/*", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_READ },
        { "GET", "/v1/admin/data-security-objects", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_READ },
        { "GET", "/v1/admin/permissions", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_PERMISSION_READ },
        { "GET", "/v1/admin/permissions/*", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_PERMISSION_READ },
        { "GET", "/v1/admin/permissions/*/users", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_PERMISSION_READ },
        { "GET", "/v1/data/model/analytic-objects", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_READ },
        { "GET", "/v1/data/model/analytic-objects/*/dimensions", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_READ },
        { "GET", "/v1/data/model/analytic-objects/*/dimensions/*/members", api_proxy_read, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_READ },
        { "POST", "/v1/data/query/aggregate", api_query, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_QUERY },
        { "POST", "/v1/data/query/list", api_query, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_QUERY },
        { "POST", "/v1/data/query/sql", api_query, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_QUERY },
        { "POST", "/v1/data/query/snapshot", api_query, CLIENT_ROLE_READ, ROUTE_ASYNC, VH_QUERY },
        { "GET", "/exports", api_exports_list, CLIENT_ROLE_READ, ROUTE_LOOP },
        { "GET", "/exports/*", api_export_run, CLIENT_ROLE_READ, ROUTE_ASYNC },
        { "POST", "/exports/*/runs", api_export_queue, CLIENT_ROLE_READ, ROUTE_WORKER },
        { "GET", "/exports/*/runs/*", api_export_result, CLIENT_ROLE_READ, ROUTE_WORKER },
};

/* Headers a local client may pass on to Visier; everything else (apikey, Cookie,
 * Authorization above all) is dropped. */

static int hex_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/*
 * A wildcard segment: an ID as Visier's paths name them — letters, digits, "-._~", and
 * %-escapes of other characters. Refused: an empty segment, one of dots only ("." and ".."
 * walk the forwarded path elsewhere), and whatever a server on the way might read as a step
 * or a parameter: ';' ("..;", matrix parameters), '\', other delimiters, and escapes of '.',
 * '/', '\', ';', '?', '#', '%' itself (double encoding) or of control characters.
 */
static bool segment_ok(const char *s, size_t n) {
        bool dots_only = true;

        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (c == '%') {
                        int hi, lo;

                        if (i + 2 >= n)
                                return false; /* fewer than two digits follow */
                        hi = hex_value(s[i + 1]);
                        lo = hex_value(s[i + 2]);
                        if (hi < 0 || lo < 0)
                                return false;
                        c = (char) (hi << 4 | lo);
                        if ((unsigned char) c < 0x20 || c == 0x7f || strchr("./\\;?#%", c))
                                return false;
                        dots_only = false;
                        i += 2;
                        continue;
                }
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._~", c)))
                        return false;
                if (c != '.')
                        dots_only = false;
        }
        return !dots_only;
}

/* Does the raw path match the pattern? Wildcard segments must pass segment_ok(). */
static bool path_match(const char *pattern, const char *path) {
        while (*pattern && *path) {
                if (*pattern == '*') {
                        const char *end = strchr(path, '/');
                        size_t n = end ? (size_t) (end - path) : strlen(path);

                        if (!segment_ok(path, n))
                                return false;
                        path += n;
                        pattern++;
                        continue;
                }
                if (*pattern != *path)
                        return false;
                pattern++;
                path++;
        }
        return *pattern == '\0' && *path == '\0';
}


static bool list_contains(const char *list, const char *value, bool nocase);

/* Is name (a Host header without its port) one of ours: a loopback name, one of allowed, or
 * the address the connection came in on (the configured listen address, say 127.0.0.53, or
 * whatever address a socket passed by systemd is bound to)? */
static bool host_allowed(const HttpRequest *req, const char *host, const char *allowed) {
        static const char *const loopback[] = { "localhost", "127.0.0.1", "[::1]", "::1" };
        char name[256], local[INET6_ADDRSTRLEN + 2];
        const char *end;
        size_t n;

        if (!host)
                return false;
        /* Strip the port: "[::1]:8420" → "[::1]", "localhost:8420" → "localhost". */
        end = host[0] == '[' ? strchr(host, ']') : strrchr(host, ':');
        if (host[0] == '[' && end)
                end++;
        n = end && (*end == ':' || *end == '\0') ? (size_t) (end - host) : strlen(host);
        if (n == 0 || n >= sizeof(name))
                return false;
        memcpy(name, host, n);
        name[n] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(loopback); i++)
                if (strcaseeq(name, loopback[i]))
                        return true;
        if (list_contains(allowed, name, true))
                return true;
        return http_request_local_host(req, local, sizeof(local)) && strcaseeq(name, local);
}

/* Is value in the comma-separated list? */
static bool list_contains(const char *list, const char *value, bool nocase) {
        size_t vl = strlen(value);

        for (const char *p = list; p && *p;) {
                const char *comma = strchr(p, ',');
                size_t n = comma ? (size_t) (comma - p) : strlen(p);

                while (n > 0 && *p == ' ')
                        p++, n--;
                while (n > 0 && p[n - 1] == ' ')
                        n--;
                if (n == vl && (nocase ? strncasecmp(p, value, n) : strncmp(p, value, n)) == 0)
                        return true;
                p = comma ? comma + 1 : NULL;
        }
        return false;
}

static bool id_in_list(const char *list, unsigned id) {
        char buf[16];

        snprintf(buf, sizeof(buf), "%u", id);
        return list_contains(list, buf, false);
}

/* Is the unix-socket peer's primary group, or one of its supplementary groups, in LIST? */
static bool peer_in_groups(const char *list, const HttpRequest *req) {
        if (id_in_list(list, req->gid))
                return true;
        for (size_t i = 0; i < req->n_groups; i++)
                if (id_in_list(list, req->groups[i]))
                        return true;
        return false;
}

static struct MHD_Response *refuse(unsigned *ret_status, unsigned status, const char *code, const char *msg) {
        *ret_status = status;
        return http_response_status(code, true, "%s", msg);
}

/* The client whose token is given (constant-time compare against each). */
static const ConfigClient *client_by_token(const Config *c, const char *token) {
        const ConfigClient *found = NULL;
        Secret given;

        given.data = (char *) token;
        given.len = strlen(given.data);
        for (size_t i = 0; i < c->n_clients; i++)
                if (c->clients[i].token && secret_equal(&given, c->clients[i].token) && !found)
                        found = &c->clients[i];
        return found;
}

static const ConfigClient *client_by_name(const Config *c, const char *name) {
        for (size_t i = 0; i < c->n_clients; i++)
                if (streq(c->clients[i].name, name))
                        return &c->clients[i];
        return NULL;
}

/* 401 in Visier's Status shape: a client signs in again and resends. */
static struct MHD_Response *refuse_credential(unsigned *ret_status, bool bearer, const char *msg) {
        struct MHD_Response *r = refuse(ret_status, MHD_HTTP_UNAUTHORIZED, "Unauthorized", msg);

        if (r && bearer)
                MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"visierd\"");
        return r;
}

/*
 * Who is calling, from the credential the request carries (a client's bearer token, or a
 * local sign-in session as bearer or VisierASIDToken cookie). Sets req->client and req->role.
 * A credential that is not valid — a session from before a restart, an expired one — is
 * refused even when no client sections are configured, so that the client signs in again.
 */
static bool identify_caller(Manager *m, const Config *c, HttpRequest *req, const Route *route,
                            unsigned *ret_status, struct MHD_Response **ret_refusal, MetricsAuthFailure *ret_auth) {
        _cleanup_(free_credentialp) char *cred = NULL;
        const ConfigClient *cl = NULL;
        SessionInfo si;
        bool bearer = false;
        int r;

        cred = api_request_credential(req, &bearer);
        if (!cred) {
                if (c->n_clients == 0)
                        return true;
                *ret_auth = METRICS_AUTH_MISSING;
                *ret_refusal = refuse_credential(ret_status, true,
                                                 "an Authorization: Bearer token is required (a client token or a sign-in session)");
                return false;
        }
        if (bearer && c->n_clients > 0)
                cl = client_by_token(c, cred);
        if (!cl) {
                r = session_lookup(m->sessions, cred, clock_now(), &si);
                if (r < 0) {
                        *ret_auth = r == -ETIME ? METRICS_AUTH_EXPIRED : METRICS_AUTH_INVALID;
                        *ret_refusal = refuse_credential(ret_status, bearer,
                                                         r == -ETIME ? "the session has expired; sign in again"
                                                                     : "the token is not valid; sign in again");
                        return false;
                }
                if (si.client[0] ? !(cl = client_by_name(c, si.client)) : c->n_clients > 0) {
                        *ret_auth = METRICS_AUTH_INVALID;
                        *ret_refusal = refuse_credential(ret_status, bearer,
                                                         "the session's client is no longer configured; sign in again");
                        return false;
                }
                if (!cl)
                        return true; /* the anonymous local caller's session */
        }
        snprintf(req->client, sizeof(req->client), "%s", cl->name);
        req->role = cl->role;
        if (cl->role < route->role) {
                char msg[160];

                snprintf(msg, sizeof(msg), "client %s has role %s; this needs %s", cl->name,
                         client_role_to_string(cl->role), client_role_to_string(route->role));
                *ret_refusal = refuse(ret_status, MHD_HTTP_FORBIDDEN, "Forbidden", msg);
                return false;
        }
        return true;
}

/*
 * Who may do what: the Host must be ours (DNS rebinding), no foreign Origin (browser pages),
 * the unix socket's peer must be on the allow-lists, and once client tokens are configured a
 * valid Bearer token (or a sign-in session) of a sufficient role. Fills req->client and
 * req->role. True: go on. False: refused, with the answer in *ret_refusal — which may be NULL
 * when even that could not be built (the HTTP layer then answers its preallocated
 * out-of-memory 500): a failed allocation never lets a request through.
 */
/* The media type a request body must have on ROUTE: what Visier's definitions give for the
 * operation (a form for the sign-ins — or JSON for oauth2/token, as OAuth clients send either
 * — and a ZIP for the two uploads), JSON for everything else, which no page of another site
 * can send without a CORS preflight. */
static const char *body_media_type(const Route *route) {
        if (streq(route->pattern, "/v1/admin/visierSecureToken") || streq(route->pattern, "/v1/auth/oauth2/token") ||
            streq(route->pattern, "/v1/admin/visierImpersonationToken"))
                return "application/x-www-form-urlencoded";
        if (streq(route->method, "PUT") &&
            (streq(route->pattern, "/v1/admin/projects/*/commits") || streq(route->pattern, "/v1beta/admin/sources")))
                return "application/zip";
        return "application/json";
}

static bool media_type_is(const char *content_type, const char *want);

static bool body_type_ok(const Route *route, const char *content_type) {
        return media_type_is(content_type, body_media_type(route)) ||
               (streq(route->pattern, "/v1/auth/oauth2/token") && media_type_is(content_type, "application/json"));
}

/* Is CONTENT_TYPE (a Content-Type header, or NULL) the media type WANT, parameters aside?
 * application/merge-patch+json counts as JSON. */
static bool media_type_is(const char *content_type, const char *want) {
        size_t n;

        if (!content_type)
                return false;
        content_type += strspn(content_type, " \t");
        n = strcspn(content_type, "; \t");
        if (strlen(want) == n && strncasecmp(content_type, want, n) == 0)
                return true;
        return streq(want, "application/json") && n == strlen("application/merge-patch+json") &&
               strncasecmp(content_type, "application/merge-patch+json", n) == 0;
}

/* Does the request carry X-Visierd-Request: true ([listen] require_request_header)? */
static bool request_header_true(HttpRequest *req) {
        const char *v = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "X-Visierd-Request");

        return v && strcaseeq(v, "true");
}

/* A read (GET), which changes nothing: the only kind a page of visierd's own origin may send
 * without its Origin listed in allowed_origins. */
static bool route_is_safe(const Route *route) {
        return streq(route->method, "GET");
}

/*
 * Is ORIGIN visierd's own origin: "http://" and the request's Host (which has passed the Host
 * check), as a browser sends it from a page visierd served (/ui)? Never over the unix socket,
 * which has no origin of its own.
 */
static bool origin_is_own(const char *origin, const char *host, const HttpRequest *req) {
        static const char scheme[] = "http://";

        if (req->unix_peer || !host || strncasecmp(origin, scheme, sizeof(scheme) - 1) != 0)
                return false;
        return strcaseeq(origin + sizeof(scheme) - 1, host);
}

static bool authorize(Manager *m, HttpRequest *req, const Route *route, unsigned *ret_status,
                      struct MHD_Response **ret_refusal, MetricsAuthFailure *ret_auth) {
        const char *host = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
        const char *origin = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Origin");
        const char *fetch_site = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Sec-Fetch-Site");
        const char *content_type =
                MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        struct MHD_Response *r = NULL;
        bool allowed = false;
        const Config *c;

        pthread_rwlock_rdlock(&m->config_lock);
        c = m->config;
        snprintf(req->client, sizeof(req->client), "%s", req->peer);
        req->role = c->n_clients > 0 ? CLIENT_ROLE_NONE : CLIENT_ROLE_ADMIN;

        if (!req->unix_peer &&
            !host_allowed(req, host, route == &metrics_only_route ? c->metrics_allowed_hosts : c->allowed_hosts))
                r = refuse(ret_status, MHD_HTTP_MISDIRECTED_REQUEST, "MisdirectedRequest",
                           "the Host header does not name this service (allowed: localhost, 127.0.0.1, ::1, the "
                           "listen address and [listen] allowed_hosts)");
        else if (origin && !list_contains(c->allowed_origins, origin, true) &&
                 !(route_is_safe(route) && origin_is_own(origin, host, req)))
                r = refuse(ret_status, MHD_HTTP_FORBIDDEN, "Forbidden",
                           "requests from web pages (Origin header) are refused unless listed in [listen] allowed_origins");
        else if (!origin && fetch_site && (strcaseeq(fetch_site, "cross-site") || strcaseeq(fetch_site, "same-site")))
                /* A browser's image, script or no-cors fetch from another site carries no Origin. */
                r = refuse(ret_status, MHD_HTTP_FORBIDDEN, "Forbidden",
                           "requests from other sites' pages (Sec-Fetch-Site: cross-site or same-site) are refused");
        else if (streq(c->require_request_header, "yes") && !route->any_caller && !request_header_true(req))
                r = refuse(ret_status, MHD_HTTP_PRECONDITION_FAILED, "PreconditionFailed",
                           "requests must carry the header X-Visierd-Request: true ([listen] require_request_header)");
        else if (req->body_len > 0 && !body_type_ok(route, content_type)) {
                char msg[160];

                snprintf(msg, sizeof(msg), "the request body must be sent as Content-Type: %s", body_media_type(route));
                r = refuse(ret_status, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", msg);
        }
        else if (req->unix_peer && (c->socket_allow_uids || c->socket_allow_gids) &&
                 !(req->have_creds && ((c->socket_allow_uids && id_in_list(c->socket_allow_uids, req->uid)) ||
                                       (c->socket_allow_gids && peer_in_groups(c->socket_allow_gids, req)))))
                r = refuse(ret_status, MHD_HTTP_FORBIDDEN, "Forbidden",
                           "this user may not use the unix socket ([listen] socket_allow_uids, socket_allow_gids)");
        else if (route->role != CLIENT_ROLE_NONE)
                allowed = identify_caller(m, c, req, route, ret_status, &r, ret_auth);
        else
                allowed = true;
        pthread_rwlock_unlock(&m->config_lock);
        if (!allowed)
                *ret_refusal = r;
        return allowed;
}

struct QueryBuilder {
        char buf[API_QUERY_MAX];
        size_t len;
        bool overflow;
        int bad_byte;  /* the first byte that must be percent-encoded (-1: none) */
};

/* ---- dispatch ---- */

static bool route_is_own(const Route *route);

/* A request answered (ROUTE NULL: none matched): counted, and (with [log] access) logged. Its
 * duration is kept per route of visierd's own, and for all of Visier's API together, so that
 * no request can spread the histograms over routes of its choosing. */
static void request_answered(Manager *m, const HttpRequest *req, const Route *r, unsigned status) {
        const char *route = r ? r->pattern : "unmatched";
        usec_t latency = clock_now() - req->started;

        metrics_local_request(m->metrics, req->method, route, !r ? "unmatched" : route_is_own(r) ? route : "visier-api",
                              status, latency);
        if (atomic_load(&m->access_log)) {
                char rid[48];
                const char *fields[] = { rid, NULL };

                snprintf(rid, sizeof(rid), "REQUEST_ID=%llu", (unsigned long long) req->id);
                log_full(LOG_INFO, LOG_MSGID_REQUEST, fields, "%s %s %u %.3f ms client=%s request=%llu", req->method,
                         route, status, (double) latency / (double) USEC_PER_MSEC, req->client,
                         (unsigned long long) req->id);
        }
}

static struct MHD_Response *refuse_authentication(Manager *m, HttpRequest *req, const Route *route,
                                                  struct MHD_Response *refusal, unsigned *ret_status,
                                                  MetricsAuthFailure reason);

/* A request handed to a worker thread (its connection suspended meanwhile). */
typedef struct ApiTask {
        Manager *m;
        HttpRequest *req;
        const Route *route;
        unsigned status;
        struct MHD_Response *resp;
        char identity[80]; /* counted against max_connections_per_client ("" : not counted) */
        int64_t hold_job;  /* set by a write handler: hold the answer until this job ends */
        char *hold_accepted; /* that job as committed (JSON text): the 202 when it cannot be read again */
        long hold_wait;    /* seconds applied */
        bool hold_asked;   /* the wait came from the client's Prefer: wait (Preference-Applied) */
        bool respond_async; /* Prefer: respond-async applied: the 202 says so */
        struct ApiTask *hold_next;
        sd_event_source *hold_timer;
        CacheFlight *flight; /* a proxied read that fills the cache (it leads) */
        CacheWaiter *waiter; /* a proxied read waiting for another's fill (it follows) */
        UpstreamCall *call;  /* a proxied read in flight on the loop */
        struct QueryStream *stream; /* a streamed query's state (shared with its response) */
        JobOp write_op;      /* a write being committed */
        size_t write_items;
} ApiTask;

/* Requests in progress per identified client (loop thread only). */
typedef struct ClientCount {
        char identity[80];
        unsigned n;
        struct ClientCount *next;
} ClientCount;

static ClientCount **client_count_find(Manager *m, const char *identity) {
        ClientCount **p;

        for (p = (ClientCount **) &m->client_counts; *p; p = &(*p)->next)
                if (streq((*p)->identity, identity))
                        break;
        return p;
}

static void client_count_put(Manager *m, const char *identity) {
        ClientCount **p = client_count_find(m, identity), *c = *p;

        if (!c)
                return;
        if (--c->n == 0) {
                *p = c->next;
                free(c);
        }
}

static bool client_count_take(Manager *m, const char *identity, unsigned max) {
        ClientCount **p = client_count_find(m, identity), *c = *p;

        if (!c) {
                c = calloc(1, sizeof(*c));
                if (!c)
                        return false;
                snprintf(c->identity, sizeof(c->identity), "%s", identity);
                *p = c;
        }
        if (c->n >= max) {
                if (c->n == 0) {
                        *p = c->next;
                        free(c);
                }
                return false;
        }
        c->n++;
        return true;
}

static void task_free(ApiTask *t) {
        if (t->resp)
                MHD_destroy_response(t->resp);
        sd_event_source_disable_unref(t->hold_timer);
        free(t->hold_accepted);
        free(t);
}

/* The request ended (answered and sent, or its connection gone): loop thread. */
static void query_stream_detach(struct QueryStream *qs);

static void task_request_done(void *ctx, HttpRequest *req) {
        ApiTask *t = ctx;

        /* The client went away (or visierd stops) before the answer: nothing calls back. */
        if (t->call)
                upstream_call_abort(TAKE_PTR(t->call));
        if (t->flight)
                cache_flight_fail(TAKE_PTR(t->flight), -ECANCELED);
        if (t->waiter) /* on the loop, as its callback: never after that has run */
                cache_waiter_cancel(TAKE_PTR(t->waiter));
        if (t->stream)
                query_stream_detach(TAKE_PTR(t->stream));

        if (t->identity[0])
                client_count_put(t->m, t->identity);
        assert(t->m->held > 0);
        t->m->held--;
        task_free(t);
}

/* Hands resp over to the HTTP layer. */
/* A task that was not needed after all (the request is answered at once): let go of it. */
static void task_drop(ApiTask *t) {
        HttpRequest *req = t->req;

        req->done = NULL;
        req->ctx = NULL;
        task_request_done(t, req);
}

static void task_answer(ApiTask *t, unsigned status, struct MHD_Response *resp) {
        if (resp == t->resp)
                t->resp = NULL;
        request_answered(t->m, t->req, t->route, resp ? status : 500);
        http_request_answer(t->req, status, resp);
}

static void hold_start(ApiTask *t);

static void task_work(void *userdata) {
        ApiTask *t = userdata;

        t->resp = t->route->handler(t->m, t->req, &t->status);
}

static void task_done(void *userdata) {
        ApiTask *t = userdata;

        if (t->hold_job > 0 && !t->resp) {
                hold_start(t);
                return;
        }
        task_answer(t, t->status, t->resp);
}

_printf_(2, 3) static struct MHD_Response *overloaded(unsigned *ret_status, const char *fmt, ...) {
        struct MHD_Response *r;
        char msg[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        r = http_response_status("ServiceUnavailable", false, "%s", msg);
        if (r)
                MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
        return r;
}

/* A task for a request answered later, counted against the caps on requests in progress;
 * NULL with *ret the refusal (503) when a cap is reached. */
static ApiTask *task_new(Manager *m, HttpRequest *req, const Route *route, unsigned *ret_status,
                         struct MHD_Response **ret) {
        unsigned max_held, per_client;
        ApiTask *t;

        pthread_rwlock_rdlock(&m->config_lock);
        max_held = m->config->max_held_requests;
        per_client = m->config->max_connections_per_client;
        pthread_rwlock_unlock(&m->config_lock);
        *ret = NULL;
        if (m->held >= max_held) {
                metrics_refusal(m->metrics, METRICS_REFUSED_MAX_HELD);
                *ret = overloaded(ret_status, "%u requests are in progress ([listen] max_held_requests); try again",
                                  max_held);
                return NULL;
        }
        t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        *t = (ApiTask) { .m = m, .req = req, .route = route };
        /* Clients known by token or by uid share their own allowance; each anonymous TCP
         * connection is its own (one request at a time), bounded by max_connections. */
        if (!streq(req->client, req->peer) || req->unix_peer)
                snprintf(t->identity, sizeof(t->identity), "%s", req->client);
        if (t->identity[0] && !client_count_take(m, t->identity, per_client)) {
                free(t);
                metrics_refusal(m->metrics, METRICS_REFUSED_PER_CLIENT);
                *ret = overloaded(ret_status,
                                  "this client has %u requests in progress ([listen] max_connections_per_client); try "
                                  "again",
                                  per_client);
                return NULL;
        }
        m->held++;
        req->ctx = t;
        req->done = task_request_done;
        return t;
}

/* Hand the request to a worker. */
static struct MHD_Response *dispatch_worker(Manager *m, HttpRequest *req, const Route *route, unsigned *ret_status) {
        struct MHD_Response *r;
        ApiTask *t = task_new(m, req, route, ret_status, &r);

        if (!t)
                return r;
        if (worker_queue(m->workers, task_work, task_done, t) < 0) {
                /* Stopping: the request still gets an answer. */
                task_drop(t);
                return overloaded(ret_status, "visierd is stopping");
        }
        return HTTP_DEFER;
}

/* Run the handler on the loop; it answers through the task later, or at once (a refusal). */
static struct MHD_Response *dispatch_async(Manager *m, HttpRequest *req, const Route *route, CacheFlight *flight,
                                           unsigned *ret_status) {
        struct MHD_Response *r;
        ApiTask *t = task_new(m, req, route, ret_status, &r);

        if (!t) {
                if (flight)
                        cache_flight_fail(flight, -EBUSY);
                return r;
        }
        t->flight = flight;
        r = route->handler(m, req, ret_status);
        if (r != HTTP_DEFER)
                task_drop(t);
        return r;
}

/* ---- failed authentication ---- */

/* A 401 answered later (loop thread only): not a task, so it holds none of max_held_requests. */
typedef struct DelayedRefusal {
        Manager *m;
        HttpRequest *req;
        const Route *route;
        struct MHD_Response *resp;
        unsigned status;
        sd_event_source *timer;
        struct DelayedRefusal *prev, *next;
} DelayedRefusal;

static void refusal_answer(DelayedRefusal *d) {
        struct MHD_Response *resp = TAKE_PTR(d->resp);

        d->timer = sd_event_source_disable_unref(d->timer);
        request_answered(d->m, d->req, d->route, d->status);
        http_request_answer(d->req, d->status, resp);
}

static int on_refusal_due(sd_event_source *s, uint64_t usec, void *userdata) {
        refusal_answer(userdata);
        return 0;
}

/* The request ended (answered and sent, or gone). */
static void refusal_done(void *ctx, HttpRequest *req) {
        DelayedRefusal *d = ctx;
        Manager *m = d->m;

        if (d->prev)
                d->prev->next = d->next;
        else
                m->refusals = d->next;
        if (d->next)
                d->next->prev = d->prev;
        m->n_refusals--;
        sd_event_source_disable_unref(d->timer);
        if (d->resp)
                MHD_destroy_response(d->resp);
        free(d);
}

/* Stopping: every refusal still waiting is answered now. */
static void refusals_release(Manager *m) {
        for (DelayedRefusal *d = m->refusals, *next; d; d = next) {
                next = d->next; /* answering may end the request, and free d, at once */
                if (d->resp)
                        refusal_answer(d);
        }
}

/* The peer a failure is counted against: one host can pick any address of 127.0.0.0/8, or of
 * its IPv6 /64, so each of those counts as one. */
static void authfail_peer(const HttpRequest *req, char *buf, size_t size) {
        struct in6_addr a6;

        if (strncmp(req->peer, "tcp:127.", 8) == 0)
                snprintf(buf, size, "tcp:127.0.0.0/8");
        else if (strncmp(req->peer, "tcp:", 4) == 0 && strchr(req->peer + 4, ':') &&
                 inet_pton(AF_INET6, req->peer + 4, &a6) == 1 && !IN6_IS_ADDR_LOOPBACK(&a6)) {
                char a[INET6_ADDRSTRLEN];

                memset(a6.s6_addr + 8, 0, 8);
                inet_ntop(AF_INET6, &a6, a, sizeof(a));
                snprintf(buf, size, "tcp:%s/64", a);
        } else
                snprintf(buf, size, "%s", req->peer);
}

/*
 * A request refused 401 (REASON): counted, logged (rate-limited per peer), and — after the
 * peer's first few failures in a window — answered only later (authfail.h), so guessing a
 * client token costs time. The refusal is REFUSAL; returns it, or HTTP_DEFER when it is
 * answered later. At most AUTHFAIL_PENDING_MAX wait at once (beyond, they are answered at
 * once); a stop answers them at once.
 */
static struct MHD_Response *refuse_authentication(Manager *m, HttpRequest *req, const Route *route,
                                                  struct MHD_Response *refusal, unsigned *ret_status,
                                                  MetricsAuthFailure reason) {
        static const char *const reasons[_METRICS_AUTH_MAX] = {
                [METRICS_AUTH_MISSING] = "no credential",
                [METRICS_AUTH_INVALID] = "a token or session that is not valid",
                [METRICS_AUTH_EXPIRED] = "an expired session",
        };
        AuthFailureNote note;
        usec_t now = clock_now();
        DelayedRefusal *d;
        char peer[64];
        int r;

        metrics_auth_failure(m->metrics, reason);
        authfail_peer(req, peer, sizeof(peer));
        authfail_note(m->authfail, peer, now, &note);
        if (note.log)
                log_full(LOG_WARNING, LOG_MSGID_REQUEST, NULL,
                         "authentication failed: %s from %s (%s %s); %u failures from it in the last %llu s%s",
                         reasons[reason], peer, req->method, route->pattern, note.failures,
                         (unsigned long long) ((now - note.window_start) / USEC_PER_SEC),
                         note.failures > AUTHFAIL_FREE ? "; its refusals are now answered with a delay" : "");
        if (!refusal || note.answer_at <= now || m->draining || m->n_refusals >= AUTHFAIL_PENDING_MAX)
                return refusal;
        d = calloc(1, sizeof(*d));
        if (!d)
                return refusal;
        *d = (DelayedRefusal) { .m = m, .req = req, .route = route, .resp = refusal, .status = *ret_status };
        r = sd_event_add_time(m->event, &d->timer, CLOCK_MONOTONIC, note.answer_at, 0, on_refusal_due, d);
        if (r < 0) {
                free(d);
                return refusal;
        }
        d->next = m->refusals;
        if (d->next)
                d->next->prev = d;
        m->refusals = d;
        m->n_refusals++;
        req->ctx = d;
        req->done = refusal_done;
        return HTTP_DEFER;
}

/* ---- cached metadata reads ---- */

static void entry_release(void *cls) {
        cache_entry_unref(cls);
}

/* The answer for a cache entry (takes the caller's reference), with Age and Cache-Status. */
static struct MHD_Response *response_from_entry(CacheEntry *e, CacheResult how, unsigned *ret_status) {
        char cs[CACHE_STATUS_MAX], age[32];
        struct MHD_Response *r;
        const char *body, *ct;
        usec_t now = clock_now();
        size_t len;

        body = cache_entry_body(e, &len);
        ct = cache_entry_content_type(e);
        *ret_status = cache_entry_status(e);
        cache_status_format(cs, sizeof(cs), how, e, now);
        snprintf(age, sizeof(age), "%llu", (unsigned long long) cache_entry_age(e, now));
        r = MHD_create_response_from_buffer_with_free_callback_cls(len, (void *) body, entry_release, e);
        if (!r) {
                cache_entry_unref(e);
                return NULL;
        }
        if (ct)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ct);
        if (how == CACHE_HIT)
                MHD_add_response_header(r, MHD_HTTP_HEADER_AGE, age);
        MHD_add_response_header(r, "Cache-Status", cs);
        return r;
}

static struct MHD_Response *upstream_error_response(Manager *m, int r, const char *err, unsigned *ret_status);

/* A follower's answer. Flights are ended on the loop only (a lead's answer, or its request
 * ending), so this runs on the loop, never inside cache_lookup(). */
static void on_follow(CacheEntry *e, int error, void *userdata) {
        HttpRequest *req = userdata;
        ApiTask *t = req->ctx;
        unsigned status = 500;
        struct MHD_Response *r;

        t->waiter = NULL;
        if (e)
                r = response_from_entry(e, CACHE_FOLLOW, &status);
        else
                r = upstream_error_response(t->m, error, error == -EBUSY ? "too many requests in progress"
                                                   : error == -ESHUTDOWN ? "visierd is stopping"
                                                                         : strerror(-error),
                                            &status);
        request_answered(t->m, t->req, t->route, r ? status : 500);
        http_request_answer(t->req, status, r);
}

static enum MHD_Result query_append(void *cls, enum MHD_ValueKind kind, const char *key, const char *value);

/* A proxied metadata read through the cache (on the loop): a hit is answered at once; the
 * first miss for a key fetches (on a worker), later misses for it wait for that answer. */
typedef struct QueryBuilder QueryBuilder;
static int query_collect(HttpRequest *req, QueryBuilder *q, unsigned *ret_status, struct MHD_Response **ret);

static struct MHD_Response *proxy_cached(Manager *m, HttpRequest *req, const Route *route, unsigned *ret_status) {
        CacheEntry *e = NULL;
        CacheFlight *flight = NULL;
        CacheWaiter *waiter = NULL;
        CacheDirectives d;
        QueryBuilder *q;
        struct MHD_Response *r;
        ApiTask *t;
        int k;

#define H(name) MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name)
        q = calloc(1, sizeof(*q));
        if (!q)
                return NULL;
        if (query_collect(req, q, ret_status, &r) < 0) { /* 400 or 414, before any lookup */
                free(q);
                return r;
        }
        cache_directives_parse(H("Cache-Control"), H("Pragma"), &d);
        k = cache_lookup(m->cache,
                         &(CacheKey) { .route = route->pattern, .tenant = H("TargetTenantID"), .project = H("ProjectID"),
                                       .non_versioned = H("NonVersioned"), .accept = H("Accept"), .path = req->path,
                                       .query = q->len ? q->buf : NULL },
                         &d, clock_now(), on_follow, req, &e, &flight, &waiter);
#undef H
        free(q);
        if (k == CACHE_HIT)
                return response_from_entry(e, CACHE_HIT, ret_status);
        if (k == CACHE_LEAD)
                return dispatch_async(m, req, route, flight, ret_status);
        if (k != CACHE_FOLLOW)
                return dispatch_async(m, req, route, NULL, ret_status); /* no memory for the cache: fetch alone */
        /* A follower waits like any request in progress, counted against the caps; the
         * callback cannot come before this returns (both on the loop). */
        t = task_new(m, req, route, ret_status, &r);
        if (!t) {
                cache_waiter_cancel(waiter);
                return r;
        }
        t->waiter = waiter;
        return HTTP_DEFER;
}

static struct MHD_Response *api_call_write(Manager *m, HttpRequest *req, unsigned *ret_status);

/* ---- the rest of Visier's API, from the policy table ---- */

static struct MHD_Response *api_policy_refuse(Manager *m, HttpRequest *req, unsigned *ret_status);

/* A route for each policy row: reads proxied, writes as call jobs, denied operations refused;
 * and for each denied row, the route it gets when [policy] allow names it. */
#define POLICY_ROWS_MAX 512
static Route policy_routes[POLICY_ROWS_MAX], policy_routes_allowed[POLICY_ROWS_MAX];
static size_t n_policy_routes;
static pthread_once_t policy_once = PTHREAD_ONCE_INIT;

static void policy_route_for(const PolicyRow *row, PolicyClass class, Route *r) {
        *r = (Route) { .method = row->method, .pattern = row->pattern, .handler = api_policy_refuse,
                       .role = CLIENT_ROLE_READ, .kind = ROUTE_LOOP };
        if (class == POLICY_READ && streq(row->method, "GET")) {
                r->handler = api_proxy_read;
                r->kind = ROUTE_ASYNC;
                r->headers = (row->headers & VH_FROM_POLICY) | VH_ACCEPT;
        } else if (class == POLICY_READ && streq(row->method, "POST")) {
                /* A read with a body (a search, a validation): streamed like a data query. */
                r->handler = api_query;
                r->kind = ROUTE_ASYNC;
                r->headers = (row->headers & VH_FROM_POLICY) | VH_ACCEPT;
        } else if (class == POLICY_PUBLISH || class == POLICY_WRITE) {
                r->handler = api_call_write;
                r->kind = ROUTE_ASYNC;
                r->role = CLIENT_ROLE_WRITE;
                r->headers = row->headers;
        }
}

static void policy_routes_init(void) {
        n_policy_routes = policy_count() < POLICY_ROWS_MAX ? policy_count() : POLICY_ROWS_MAX;
        for (size_t i = 0; i < n_policy_routes; i++) {
                const PolicyRow *row = policy_row(i);

                policy_route_for(row, row->class, &policy_routes[i]);
                /* Allowed by the operator: a read if it is a GET, else a write through the lane
                 * (admin role: these touch credentials and keys). */
                policy_route_for(row, streq(row->method, "GET") ? POLICY_READ : POLICY_WRITE, &policy_routes_allowed[i]);
                if (!streq(row->method, "GET"))
                        policy_routes_allowed[i].role = CLIENT_ROLE_ADMIN;
        }
}

static const PolicyRow *policy_row_of(const char *method, const char *pattern) {
        return policy_find(method, pattern);
}

/* A Visier operation visierd knows but does not send (yet), or never sends. */
static struct MHD_Response *api_policy_refuse(Manager *m, HttpRequest *req, unsigned *ret_status) {
        const PolicyRow *row = policy_row_of(req->method, req->route);

        if (row && row->class == POLICY_DENIED) {
                *ret_status = MHD_HTTP_FORBIDDEN;
                return http_response_status("Forbidden", true,
                                            "%s %s is denied by visierd's policy: it could reveal or change visierd's "
                                            "own credentials or keys",
                                            req->method, req->route);
        }
        *ret_status = MHD_HTTP_NOT_IMPLEMENTED;
        if (row && (row->class == POLICY_PUBLISH || row->class == POLICY_WRITE))
                return http_response_status("NotImplemented", true,
                                            "visierd does not send %s %s yet: writes go through visierd's publisher, "
                                            "which sends permission writes only so far",
                                            req->method, req->route);
        return http_response_status("NotImplemented", true, "visierd does not forward %s %s yet", req->method,
                                    req->route);
}

/* The first byte of S that may not stand in a URI as it is (RFC 3986: unreserved, sub-delims,
 * ':', '@', '/', the characters of ALSO, and '%' with two hex digits), or -1. */
static int uri_bad_byte(const char *s, const char *also) {
        for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
                if (*c == '%') {
                        if (!isxdigit(c[1]) || !isxdigit(c[2]))
                                return '%';
                        c += 2;
                } else if (!isalnum(*c) && !strchr("-._~!$&'()*+,;=:@/", *c) && !strchr(also, *c))
                        return *c;
        }
        return -1;
}

static int query_bad_byte(const char *s) {
        return uri_bad_byte(s, "?");
}

/* The first byte of PATH that may not stand in a path as it is (pchar and '/'), or -1. */
static int path_bad_byte(const char *path) {
        return uri_bad_byte(path, "");
}

struct MHD_Response *api_handle(void *userdata, HttpRequest *req, unsigned *ret_status) {
        Manager *m = userdata;
        const Route *route = NULL;
        struct MHD_Response *r;
        char allow[64] = "";
        int bad = path_bad_byte(req->path);

        if (bad >= 0) {
                /* Never matched, forwarded or echoed: it could not be sent to Visier as it is. */
                *ret_status = MHD_HTTP_BAD_REQUEST;
                r = http_response_status("BadRequest", true,
                                         "the path holds a character that must be percent-encoded (byte 0x%02x)",
                                         (unsigned) bad);
                request_answered(m, req, NULL, r ? *ret_status : 500);
                return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                if (!path_match(routes[i].pattern, req->path))
                        continue;
                if (streq(routes[i].method, req->method)) {
                        route = &routes[i];
                        break;
                }
                if (!strstr(allow, routes[i].method)) {
                        size_t n = strlen(allow);
                        snprintf(allow + n, sizeof(allow) - n, "%s%s", n ? ", " : "", routes[i].method);
                }
        }
        /* Then the rest of Visier's published API, as the policy table says. */
        (void) pthread_once(&policy_once, policy_routes_init);
        for (size_t i = 0; !route && i < n_policy_routes; i++) {
                if (!path_match(policy_routes[i].pattern, req->path))
                        continue;
                if (streq(policy_routes[i].method, req->method)) {
                        const PolicyRow *row = policy_row(i);

                        route = &policy_routes[i];
                        if (row->class == POLICY_DENIED) {
                                pthread_rwlock_rdlock(&m->config_lock);
                                if (policy_allowed(m->config->policy_allow, row))
                                        route = &policy_routes_allowed[i];
                                pthread_rwlock_unlock(&m->config_lock);
                        }
                        break;
                }
                if (!strstr(allow, policy_routes[i].method)) {
                        size_t n = strlen(allow);
                        snprintf(allow + n, sizeof(allow) - n, "%s%s", n ? ", " : "", policy_routes[i].method);
                }
        }
        if (route && req->over_capacity && route->kind != ROUTE_OPS) {
                unsigned max;

                /* Past max_connections only probes and scrapes are served (their reserve). */
                pthread_rwlock_rdlock(&m->config_lock);
                max = m->config->max_connections;
                pthread_rwlock_unlock(&m->config_lock);
                metrics_refusal(m->metrics, METRICS_REFUSED_MAX_CONNECTIONS);
                r = overloaded(ret_status, "visierd has %u connections open ([listen] max_connections); try again",
                               max);
                if (r)
                        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        } else if (route) {
                MetricsAuthFailure auth = _METRICS_AUTH_MAX;

                req->route = route->pattern;
                if (!authorize(m, req, route, ret_status, &r, &auth)) {
                        if (auth != _METRICS_AUTH_MAX) {
                                r = refuse_authentication(m, req, route, r, ret_status, auth);
                                if (r == HTTP_DEFER)
                                        return r; /* counted in metrics when answered */
                        }
                } else {
                        if (route->handler == api_proxy_read && m->cache &&
                            cache_route_ttl(m->cache, route->pattern) > 0) {
                                r = proxy_cached(m, req, route, ret_status);
                                if (r == HTTP_DEFER)
                                        return r;
                        } else if (route->kind == ROUTE_ASYNC) {
                                r = dispatch_async(m, req, route, NULL, ret_status);
                                if (r == HTTP_DEFER)
                                        return r;
                        } else if (route->kind == ROUTE_WORKER) {
                                r = dispatch_worker(m, req, route, ret_status);
                                if (r == HTTP_DEFER)
                                        return r; /* counted in metrics when answered */
                        } else {
                                r = route->handler(m, req, ret_status);
                                /* A sign-in refused: a guess at a client token or password too. */
                                if ((route->handler == api_signin_asid || route->handler == api_signin_oauth2) &&
                                    *ret_status == MHD_HTTP_UNAUTHORIZED) {
                                        r = refuse_authentication(m, req, route, r, ret_status, METRICS_AUTH_INVALID);
                                        if (r == HTTP_DEFER)
                                                return r;
                                }
                        }
                }
        } else if (allow[0]) {
                *ret_status = MHD_HTTP_METHOD_NOT_ALLOWED;
                r = http_response_status("MethodNotAllowed", true, "%s is not allowed on %s", req->method, req->path);
                if (r)
                        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
        } else {
                *ret_status = MHD_HTTP_NOT_FOUND;
                r = http_response_status("NotFound", true, "no such endpoint: %s %s", req->method, req->path);
        }
        request_answered(m, req, route, r ? *ret_status : 500);
        return r;
}

/* An answer the HTTP layer made itself (http.h's refused): counted and logged as unmatched. */
void api_refused(void *userdata, HttpRequest *req, unsigned status) {
        Manager *m = userdata;

        snprintf(req->client, sizeof(req->client), "%s", req->peer);
        request_answered(m, req, NULL, status);
}

static bool route_is_own(const Route *route) {
        return (route >= routes && route < routes + ELEMENTSOF(routes)) || route == &metrics_only_route;
}

/* The metrics-only listener ([metrics] listen, socket): GET /metrics and nothing else, with the
 * Host, Origin, Sec-Fetch-Site and unix-socket checks of the local API but no client token. */
struct MHD_Response *api_handle_metrics(void *userdata, HttpRequest *req, unsigned *ret_status) {
        Manager *m = userdata;
        struct MHD_Response *r;
        MetricsAuthFailure auth = _METRICS_AUTH_MAX;

        if (!streq(req->path, "/metrics")) {
                *ret_status = MHD_HTTP_NOT_FOUND;
                r = http_response_status("NotFound", true, "this listener serves GET /metrics only");
                request_answered(m, req, NULL, r ? *ret_status : 500);
                return r;
        }
        if (!streq(req->method, "GET")) {
                *ret_status = MHD_HTTP_METHOD_NOT_ALLOWED;
                r = http_response_status("MethodNotAllowed", true, "this listener serves GET /metrics only");
                if (r)
                        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET");
        } else {
                req->route = metrics_only_route.pattern;
                if (authorize(m, req, &metrics_only_route, ret_status, &r, &auth))
                        r = api_metrics(m, req, ret_status);
        }
        request_answered(m, req, &metrics_only_route, r ? *ret_status : 500);
        return r;
}

size_t api_routes(const char *const **ret_methods, const char *const **ret_patterns) {
        static const char *methods[ELEMENTSOF(routes)], *patterns[ELEMENTSOF(routes)];

        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                methods[i] = routes[i].method;
                patterns[i] = routes[i].pattern;
        }
        *ret_methods = methods;
        *ret_patterns = patterns;
        return ELEMENTSOF(routes);
}

static struct MHD_Response *json_response(json_t *j) {
        char *body = json_dumps(j, JSON_COMPACT);

        json_decref(j);
        if (!body)
                return NULL;
        return http_response_take(body, strlen(body), "application/json");
}

static struct MHD_Response *api_healthz(Manager *m, HttpRequest *req, unsigned *ret_status) {
        *ret_status = MHD_HTTP_OK;
        return json_response(json_pack("{s:s}", "status", "ok"));
}

static struct MHD_Response *api_readyz(Manager *m, HttpRequest *req, unsigned *ret_status) {
        json_t *reasons = json_array();
        TokenStatus ts;

        token_keeper_status(m->token, &ts);
        if (!ts.valid)
                json_array_append_new(reasons,
                                      json_sprintf("no valid Visier token (%s%s%s)", ts.state,
                                                   ts.last_error[0] ? ": " : "", ts.last_error));
        {
                char why[STORE_ERROR_MAX] = "";

                if (!m->store)
                        json_array_append_new(reasons, json_string("the job database is not open"));
                else if (store_check(m->store, why, sizeof(why)) < 0)
                        json_array_append_new(reasons, json_string(why));
        }
        if (json_array_size(reasons) == 0) {
                json_decref(reasons);
                *ret_status = MHD_HTTP_OK;
                return json_response(json_pack("{s:s}", "status", "ready"));
        }
        *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        return json_response(json_pack("{s:s, s:o}", "status", "not ready", "reasons", reasons));
}

/* A JSON text built by hand, for the ops answers asked many times a second (/status): the
 * same bytes jansson would write, without building a tree first. */
typedef struct JsonOut {
        char buf[4096];
        size_t len;
        bool overflow;
} JsonOut;

/* Append n bytes. */
static void out_mem(JsonOut *o, const char *p, size_t n) {
        if (o->overflow || n >= sizeof(o->buf) - o->len) {
                o->overflow = true;
                return;
        }
        memcpy(o->buf + o->len, p, n);
        o->len += n;
}

#define out_lit(o, lit) out_mem((o), "" lit, sizeof(lit) - 1)

static void out_u64(JsonOut *o, uint64_t v) {
        char d[20];
        size_t n = 0;

        do
                d[sizeof(d) - ++n] = (char) ('0' + v % 10);
        while ((v /= 10) > 0);
        out_mem(o, d + sizeof(d) - n, n);
}

static void out_i64(JsonOut *o, int64_t v) {
        if (v < 0) {
                out_lit(o, "-");
                out_u64(o, (uint64_t) 0 - (uint64_t) v);
        } else
                out_u64(o, (uint64_t) v);
}

/* As jansson writes a real: %.17g, and a ".0" when that looks like an integer (so that /status
 * is byte for byte what a JSON library writes back). */
static void out_real(JsonOut *o, double v) {
        char real[64];
        int n = snprintf(real, sizeof(real), "%.17g", v);

        out_mem(o, real, n > 0 ? (size_t) n : 0);
        if (!strpbrk(real, ".eE"))
                out_lit(o, ".0");
}

static void out_bool(JsonOut *o, bool v) {
        if (v)
                out_lit(o, "true");
        else
                out_lit(o, "false");
}

/* A JSON string (escaped as jansson escapes it), or null. */
static void out_string(JsonOut *o, const char *v) {
        static const char hex[] = "0123456789ABCDEF";

        if (!v) {
                out_lit(o, "null");
                return;
        }
        out_lit(o, "\"");
        for (const unsigned char *p = (const unsigned char *) v; *p && !o->overflow; p++) {
                const unsigned char *run = p;

                while (*p >= 0x20 && *p != '"' && *p != '\\')
                        p++;
                out_mem(o, (const char *) run, (size_t) (p - run));
                if (!*p)
                        break;
                if (*p == '"')
                        out_lit(o, "\\\"");
                else if (*p == '\\')
                        out_lit(o, "\\\\");
                else if (*p == '\n')
                        out_lit(o, "\\n");
                else if (*p == '\t')
                        out_lit(o, "\\t");
                else if (*p == '\r')
                        out_lit(o, "\\r");
                else if (*p == '\b')
                        out_lit(o, "\\b");
                else if (*p == '\f')
                        out_lit(o, "\\f");
                else {
                        char u[6] = { '\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15] };

                        out_mem(o, u, sizeof(u));
                }
        }
        out_lit(o, "\"");
}

static struct MHD_Response *api_status(Manager *m, HttpRequest *req, unsigned *ret_status) {
        unsigned minute = 0, hour = 0, minute_limit, hour_limit;
        int64_t counts[_JOB_STATE_MAX], oldest, now_ms = (int64_t) (clock_realtime() / USEC_PER_MSEC);
        usec_t now = clock_now();
        PublisherStats ps;
        UpstreamStats us;
        TokenStatus ts;
        JsonOut *o;

        o = malloc(sizeof(*o));
        if (!o)
                return NULL;
        o->len = 0;
        o->overflow = false;
        token_keeper_status(m->token, &ts);
        ratelimit_snapshot(&m->rate, now, &minute, &hour);
        upstream_stats(m->upstream, &us);
        publisher_stats(m->publisher, &ps);
        store_counts_get(m->store, counts, &oldest);

        out_lit(o, "{\"jobs\":{\"queued\":");
        out_i64(o, counts[JOB_QUEUED]);
        out_lit(o, ",\"running\":");
        out_i64(o, counts[JOB_RUNNING]);
        out_lit(o, ",\"succeeded\":");
        out_i64(o, counts[JOB_SUCCEEDED]);
        out_lit(o, ",\"failed\":");
        out_i64(o, counts[JOB_FAILED]);
        out_lit(o, ",\"cancelled\":");
        out_i64(o, counts[JOB_CANCELLED]);
        out_lit(o, ",\"oldest_queued_age_seconds\":");
        if (oldest < 0)
                out_lit(o, "null");
        else
                out_real(o, oldest < now_ms ? (double) (now_ms - oldest) / 1000.0 : 0.0);
        out_lit(o, "},\"publisher\":{\"write_calls\":");
        out_u64(o, ps.write_calls);
        out_lit(o, ",\"items_sent\":");
        out_u64(o, ps.items_sent);
        out_lit(o, ",\"reconcile_calls\":");
        out_u64(o, ps.reconcile_calls);
        out_lit(o, ",\"splits\":");
        out_u64(o, ps.splits);
        out_lit(o, ",\"retries\":");
        out_u64(o, ps.retries);
        out_lit(o, ",\"rounds_published\":");
        out_u64(o, ps.rounds_published);
        out_lit(o, ",\"rounds_discarded\":");
        out_u64(o, ps.rounds_discarded);
        out_lit(o, ",\"current_call\":");
        if (!ps.current.active)
                out_lit(o, "null");
        else {
                out_lit(o, "{\"operation\":");
                out_string(o, ps.current.operation);
                out_lit(o, ",\"method\":");
                out_string(o, ps.current.method);
                out_lit(o, ",\"endpoint\":");
                out_string(o, ps.current.endpoint);
                out_lit(o, ",\"jobs\":");
                out_u64(o, ps.current.n_jobs);
                out_lit(o, ",\"items\":");
                out_u64(o, ps.current.n_items);
                out_lit(o, ",\"first_job\":");
                if (ps.current.first_job > 0)
                        out_i64(o, ps.current.first_job);
                else
                        out_lit(o, "null");
                out_lit(o, ",\"elapsed_seconds\":");
                /* In milliseconds, as the oldest queued job's age. */
                out_real(o, (double) ((now > ps.current.started ? now - ps.current.started : 0) / USEC_PER_MSEC) / 1000.0);
                out_lit(o, "}");
        }
        out_lit(o, "},\"version\":\"" PACKAGE_VERSION "\",\"uptime_seconds\":");
        out_u64(o, (uint64_t) ((now - m->started_at) / USEC_PER_SEC));
        out_lit(o, ",\"visier\":{\"base_url\":");
        pthread_rwlock_rdlock(&m->config_lock);
        out_string(o, m->config->base_url);
        out_lit(o, ",\"username\":");
        out_string(o, m->config->username);
        minute_limit = m->config->rate_limit_minute;
        hour_limit = m->config->rate_limit_hour;
        pthread_rwlock_unlock(&m->config_lock);
        out_lit(o, "},\"token\":{\"state\":");
        out_string(o, ts.state);
        out_lit(o, ",\"valid\":");
        out_bool(o, ts.valid);
        out_lit(o, ",\"logins\":");
        out_u64(o, ts.logins);
        out_lit(o, ",\"login_failures\":");
        out_u64(o, ts.login_failures);
        out_lit(o, ",\"last_login_error\":");
        out_string(o, ts.last_error[0] ? ts.last_error : NULL);
        if (ts.valid) {
                out_lit(o, ",\"expires_in_seconds\":");
                out_u64(o, (uint64_t) (ts.expires_in / USEC_PER_SEC));
        }
        if (ts.next_attempt_in > 0) {
                out_lit(o, ",\"next_login_in_seconds\":");
                out_u64(o, (uint64_t) ((ts.next_attempt_in + USEC_PER_SEC - 1) / USEC_PER_SEC));
        }
        out_lit(o, "},\"rate_budget\":{\"minute_remaining\":");
        out_u64(o, minute);
        out_lit(o, ",\"hour_remaining\":");
        out_u64(o, hour);
        out_lit(o, ",\"minute_limit\":");
        out_u64(o, minute_limit);
        out_lit(o, ",\"hour_limit\":");
        out_u64(o, hour_limit);
        out_lit(o, "},\"upstream\":{\"calls\":");
        out_u64(o, us.calls);
        out_lit(o, ",\"retries\":");
        out_u64(o, us.retries);
        out_lit(o, ",\"unauthorized\":");
        out_u64(o, us.unauthorized);
        out_lit(o, ",\"throttled\":");
        out_u64(o, us.throttled);
        out_lit(o, ",\"failures\":");
        out_u64(o, us.failures);
        out_lit(o, ",\"retaken\":");
        out_u64(o, us.retaken);
        out_lit(o, ",\"held_back\":");
        out_u64(o, us.held_back);
        out_lit(o, "},\"store\":{\"path\":");
        out_string(o, store_path(m->store));
        out_lit(o, ",\"ok\":");
        out_bool(o, store_ok(m->store));
        out_lit(o, ",\"schema_version\":");
        out_i64(o, store_schema_version(m->store));
        out_lit(o, "}");
        if (m->fleet) {
                /* The fleet as this node last learnt it (fleet.h): memory only, never the database. */
                json_t *f = fleet_status_json(m->fleet);
                char *text = f ? json_dumps(f, JSON_COMPACT) : NULL;

                out_lit(o, ",\"fleet\":");
                if (text)
                        out_mem(o, text, strlen(text));
                else
                        o->overflow = true; /* out of memory: answered as an error below */
                free(text);
                json_decref(f);
        }
        out_lit(o, "}");
        if (o->overflow) {
                free(o);
                *ret_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                return http_response_status("InternalError", false, "the status is larger than %zu bytes",
                                            sizeof(o->buf));
        }
        *ret_status = MHD_HTTP_OK;
        {
                struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback_cls(o->len, o->buf, free, o);

                if (!r) {
                        free(o);
                        return NULL;
                }
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
                return r;
        }
}

/* GET /status/history: the queue history ring (history.h), with the current counts as its
 * newest sample. On the loop, as the status timer that records it. */
static struct MHD_Response *api_status_history(Manager *m, HttpRequest *req, unsigned *ret_status) {
        HistorySample *samples;
        int64_t now_ms;
        json_t *a, *j;
        size_t n;

        samples = malloc(sizeof(HistorySample) * HISTORY_SAMPLES);
        a = json_array();
        if (!samples || !a) {
                free(samples);
                json_decref(a);
                return NULL;
        }
        manager_record_history(m);
        now_ms = (int64_t) (clock_realtime() / USEC_PER_MSEC); /* not before the sample just taken */
        n = history_snapshot(&m->history, now_ms, samples);
        for (size_t i = 0; i < n; i++) {
                const HistorySample *h = &samples[i];

                if (json_array_append_new(a, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "at_ms", (json_int_t) h->at_ms,
                                                       "queued", (json_int_t) h->counts[JOB_QUEUED], "running",
                                                       (json_int_t) h->counts[JOB_RUNNING], "succeeded",
                                                       (json_int_t) h->counts[JOB_SUCCEEDED], "failed",
                                                       (json_int_t) h->counts[JOB_FAILED], "cancelled",
                                                       (json_int_t) h->counts[JOB_CANCELLED])) < 0) {
                        free(samples);
                        json_decref(a);
                        return NULL;
                }
        }
        free(samples);
        j = json_pack("{s:I, s:I, s:I, s:o}", "interval_seconds", (json_int_t) (HISTORY_INTERVAL_MS / 1000),
                      "span_seconds", (json_int_t) (HISTORY_SPAN_MS / 1000), "now_ms", (json_int_t) now_ms, "samples", a);
        if (!j)
                return NULL;
        *ret_status = MHD_HTTP_OK;
        return json_response(j);
}

/* GET /ui and /ui/FILE: the page's files (ui.h), with the page's security headers, an ETag
 * and no-cache (a browser asks again, and gets 304 while the binary is the same). */
static struct MHD_Response *api_ui(Manager *m, HttpRequest *req, unsigned *ret_status) {
        const char *name = streq(req->path, "/ui") ? "index.html" : req->path + strlen("/ui/");
        const char *inm = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
        const UiAsset *a = ui_asset_find(name);
        struct MHD_Response *r;
        bool fresh;

        if (!a) {
                *ret_status = MHD_HTTP_NOT_FOUND;
                return http_response_status("NotFound", true, "no such endpoint: %s %s", req->method, req->path);
        }
        fresh = inm && (streq(inm, a->etag) || streq(inm, "*"));
        r = MHD_create_response_from_buffer(fresh ? 0 : a->size, fresh ? NULL : (void *) a->data,
                                            MHD_RESPMEM_PERSISTENT);
        if (!r)
                return NULL;
        if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type) != MHD_YES ||
            MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, a->etag) != MHD_YES ||
            MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") != MHD_YES ||
            MHD_add_response_header(r, "Content-Security-Policy", UI_CONTENT_SECURITY_POLICY) != MHD_YES ||
            MHD_add_response_header(r, "X-Content-Type-Options", "nosniff") != MHD_YES ||
            MHD_add_response_header(r, "Referrer-Policy", "no-referrer") != MHD_YES ||
            MHD_add_response_header(r, "X-Frame-Options", "DENY") != MHD_YES ||
            MHD_add_response_header(r, "Cross-Origin-Resource-Policy", "same-origin") != MHD_YES ||
            MHD_add_response_header(r, "Cross-Origin-Opener-Policy", "same-origin") != MHD_YES) {
                MHD_destroy_response(r);
                return NULL;
        }
        *ret_status = fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK;
        return r;
}

static enum MHD_Result query_append(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        QueryBuilder *q = cls;
        int n, bad;

        bad = query_bad_byte(key);
        if (bad < 0 && value)
                bad = query_bad_byte(value);
        if (bad >= 0) {
                q->bad_byte = bad;
                return MHD_NO;
        }
        n = snprintf(q->buf + q->len, sizeof(q->buf) - q->len, "%s%s%s%s", q->len ? "&" : "", key,
                     value ? "=" : "", value ? value : "");
        if (n < 0 || (size_t) n >= sizeof(q->buf) - q->len) {
                q->overflow = true;
                return MHD_NO;
        }
        q->len += (size_t) n;
        return MHD_YES;
}

static struct MHD_Response *bad_request(unsigned *ret_status, const char *path, const char *msg);

/* The request's query string as it is to be forwarded: 0, or -1 with the refusal in *ret (a
 * character that is not percent-encoded, which Visier could not be sent; a query too long)
 * — before anything is sent or any rate budget spent. */
static int query_collect(HttpRequest *req, QueryBuilder *q, unsigned *ret_status, struct MHD_Response **ret) {
        q->bad_byte = -1;
        MHD_get_connection_values(req->connection, MHD_GET_ARGUMENT_KIND, query_append, q);
        if (q->bad_byte >= 0) {
                *ret_status = MHD_HTTP_BAD_REQUEST;
                *ret = http_response_status("BadRequest", true,
                                            "the query string holds a character that must be percent-encoded "
                                            "(byte 0x%02x)",
                                            (unsigned) q->bad_byte);
                return -1;
        }
        if (q->overflow) {
                *ret_status = MHD_HTTP_URI_TOO_LONG;
                *ret = http_response_status("BadRequest", true, "query string longer than %d bytes", API_QUERY_MAX);
                return -1;
        }
        return 0;
}

/* The headers forwarded to Visier for one request (NULL-terminated list, room for one more). */
typedef struct Forwarded {
        char lines[VH_MAX][API_HEADER_MAX];
        const char *list[VH_MAX + 2];
        size_t n;
} Forwarded;

/* Build f from the request's headers that mask names; -EINVAL with err naming the header. */
static int forwarded_build(HttpRequest *req, unsigned mask, Forwarded *f, ValidateError *err) {
        f->n = 0;
        for (size_t i = 0; i < VH_MAX; i++) {
                const char *v;
                int n;

                if (!(mask & (1u << i)))
                        continue;
                v = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, visier_headers[i].name);
                if (!v)
                        continue;
                if (validate_header_value(visier_headers[i].name, v, err) < 0 ||
                    (visier_headers[i].boolean && validate_boolean_header(visier_headers[i].name, v, &v, err) < 0))
                        return -EINVAL;
                n = snprintf(f->lines[f->n], API_HEADER_MAX, "%s: %s", visier_headers[i].name, v);
                if (n < 0 || n >= API_HEADER_MAX) {
                        snprintf(err->path, sizeof(err->path), "%s", visier_headers[i].name);
                        snprintf(err->message, sizeof(err->message), "header is too long");
                        return -EINVAL;
                }
                f->list[f->n] = f->lines[f->n];
                f->n++;
        }
        f->list[f->n] = NULL;
        return 0;
}

static void proxy_done(void *userdata, int r, UpstreamResponse *resp, const char *err);

static struct MHD_Response *api_proxy_read(Manager *m, HttpRequest *req, unsigned *ret_status) {
        ApiTask *t = req->ctx;
        ValidateError verr;
        QueryBuilder q = {};
        Forwarded *f;

        assert(t);
        {
                struct MHD_Response *refusal = NULL;

                if (query_collect(req, &q, ret_status, &refusal) < 0)
                        return refusal;
        }
        f = malloc(sizeof(*f));
        if (!f) {
                if (t->flight)
                        cache_flight_fail(TAKE_PTR(t->flight), -ENOMEM);
                return NULL;
        }
        if (forwarded_build(req, t->route->headers, f, &verr) < 0) {
                free(f);
                if (t->flight)
                        cache_flight_fail(TAKE_PTR(t->flight), -EINVAL);
                return bad_request(ret_status, verr.path, verr.message);
        }

        t->call = upstream_call_start(m->upstream,
                                      &(UpstreamRequest) {
                                              .endpoint = req->route,
                                              .method = "GET",
                                              .path = req->path,
                                              .query = q.len ? q.buf : NULL,
                                              .headers = f->list,
                                              .idempotent = true,
                                      },
                                      proxy_done, t);
        free(f); /* upstream_call_start() copied what it keeps */
        if (!t->call) {
                if (t->flight)
                        cache_flight_fail(TAKE_PTR(t->flight), -ENOMEM);
                return NULL;
        }
        return HTTP_DEFER;
}

/* Visier's answer to a proxied read (on the loop). */
static void proxy_done(void *userdata, int r, UpstreamResponse *resp, const char *err) {
        ApiTask *t = userdata;
        HttpRequest *req = t->req;
        char rid[48];
        const char *fields[] = { rid, NULL };
        struct MHD_Response *out;
        unsigned status = 500;

        t->call = NULL;
        if (r < 0) {
                if (t->flight)
                        cache_flight_fail(TAKE_PTR(t->flight), r);
                out = upstream_error_response(t->m, r, err, &status);
                snprintf(rid, sizeof(rid), "REQUEST_ID=%llu", (unsigned long long) req->id);
                log_full(LOG_WARNING, LOG_MSGID_UPSTREAM_ERROR, fields, "GET %s for %s failed with %u: %s", req->path,
                         req->client, status, err);
        } else if (t->flight) {
                /* This request leads the cache's fetch: the answer goes to the cache, and from
                 * it to this client and every one that waited for the same read. */
                CacheEntry *ce = cache_flight_done(TAKE_PTR(t->flight), (unsigned) resp->status, resp->content_type,
                                                   TAKE_PTR(resp->body), resp->body_len, clock_now());

                out = ce ? response_from_entry(ce, CACHE_LEAD, &status) : NULL;
        } else {
                status = (unsigned) resp->status;
                out = http_response_take(resp->body ? TAKE_PTR(resp->body) : strdup(""), resp->body_len,
                                         resp->content_type);
        }
        task_answer(t, status, out);
}

/* The answer for a failed upstream call (the errno of upstream_call()). */
static struct MHD_Response *upstream_error_response(Manager *m, int r, const char *err, unsigned *ret_status) {
        struct MHD_Response *e;
        const char *code;
        unsigned status;

        switch (r) {
        case -ENOKEY:
        case -ESHUTDOWN:
                status = MHD_HTTP_SERVICE_UNAVAILABLE, code = "ServiceUnavailable";
                break;
        case -ETIMEDOUT:
                status = MHD_HTTP_GATEWAY_TIMEOUT, code = "GatewayTimeout";
                break;
        case -EBUSY:
                status = MHD_HTTP_TOO_MANY_REQUESTS, code = "TooManyRequests";
                break;
        case -ENOMEM:
                status = MHD_HTTP_INTERNAL_SERVER_ERROR, code = "InternalError";
                break;
        default:
                status = MHD_HTTP_BAD_GATEWAY, code = "BadGateway";
        }
        *ret_status = status;
        e = http_response_status(code, false, "%s", err);
        if (e && r == -EBUSY) {
                /* How long the budget really stays empty (the hour's budget may be spent). */
                usec_t wait = m->rate_ready ? ratelimit_next_free(&m->rate, clock_now()) : 0;
                char v[24];

                snprintf(v, sizeof(v), "%llu", (unsigned long long) (wait > 0 ? (wait + USEC_PER_SEC - 1) / USEC_PER_SEC : 1));
                MHD_add_response_header(e, MHD_HTTP_HEADER_RETRY_AFTER, v);
        }
        return e;
}

/* ---- permission writes ---- */

#define IDEMPOTENCY_KEY_MAX 200

static struct MHD_Response *bad_request(unsigned *ret_status, const char *path, const char *msg) {
        *ret_status = MHD_HTTP_BAD_REQUEST;
        return http_response_status("BadRequest", true, "%s: %s", path, msg);
}


/* What a request's Prefer headers (RFC 7240) ask of visierd: respond-async, and wait=N. */
typedef struct Preferences {
        bool respond_async;
        long wait; /* seconds; -1: not asked */
        char nv_lock[16]; /* Visier's own nvLock=…: global, artifact or none ("" not asked) */
        bool nv_lock_bad; /* nvLock with another value */
} Preferences;

/* One Prefer header: comma-separated preferences, each a token with an optional "=value" and
 * ";"-parameters (ignored). Others' preferences (Visier's own nvLock=…) are left alone. */
static enum MHD_Result prefer_scan(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        Preferences *p = cls;

        (void) kind;
        if (!value || strcasecmp(key, "Prefer") != 0)
                return MHD_YES;
        for (const char *e = value; e && *e;) {
                const char *end = strchr(e, ','), *stop;
                size_t n;

                while (*e == ' ' || *e == '\t')
                        e++;
                stop = e + strcspn(e, "=;,");
                n = (size_t) (stop - e);
                while (n > 0 && (e[n - 1] == ' ' || e[n - 1] == '\t'))
                        n--;
                if (n == 13 && strncasecmp(e, "respond-async", 13) == 0)
                        p->respond_async = true;
                else if (n == 6 && strncmp(e, "nvLock", 6) == 0 && *stop == '=') {
                        size_t vl = strcspn(stop + 1, ";, \t");

                        if ((vl == 6 && strncmp(stop + 1, "global", 6) == 0) ||
                            (vl == 8 && strncmp(stop + 1, "artifact", 8) == 0) ||
                            (vl == 4 && strncmp(stop + 1, "none", 4) == 0))
                                snprintf(p->nv_lock, sizeof(p->nv_lock), "%.*s", (int) vl, stop + 1);
                        else
                                p->nv_lock_bad = true;
                }
                else if (n == 4 && strncasecmp(e, "wait", 4) == 0 && *stop == '=') {
                        const char *v = stop + 1;
                        char *vend;
                        long w;

                        while (*v == ' ' || *v == '"')
                                v++;
                        errno = 0;
                        w = strtol(v, &vend, 10);
                        if (errno == 0 && vend != v && w >= 0 && p->wait < 0)
                                p->wait = w;
                }
                e = end ? end + 1 : NULL;
        }
        return MHD_YES;
}

static Preferences request_preferences(HttpRequest *req) {
        Preferences p = { .wait = -1 };

        MHD_get_connection_values(req->connection, MHD_HEADER_KIND, prefer_scan, &p);
        return p;
}

/* How long a write's answer is held (both kinds of write): Prefer: wait=N (at most max_wait),
 * respond-async (not at all), else answer_wait. */
static void hold_settings(ApiTask *t, const Preferences *prefer, unsigned max_wait, unsigned answer_wait) {
        if (prefer->wait >= 0) {
                t->hold_wait = prefer->wait > (long) max_wait ? (long) max_wait : prefer->wait;
                t->hold_asked = true;
        } else if (prefer->respond_async) {
                t->hold_wait = 0;
                t->respond_async = true;
        } else
                t->hold_wait = answer_wait;
}

static void make_correlation_id(char *buf, size_t len) {
        unsigned char raw[10];

        if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
                memset(raw, 0, sizeof(raw));
        snprintf(buf, len, "vd-");
        for (size_t i = 0; i < sizeof(raw) && 3 + 2 * i + 2 < len; i++)
                snprintf(buf + 3 + 2 * i, 3, "%02x", raw[i]);
}

/* 503: the job database cannot be read (r, a negative errno), so whether a job exists is unknown. */
static struct MHD_Response *job_database_unreadable(unsigned *ret_status, int r) {
        *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        return http_response_status("ServiceUnavailable", false, "cannot read the job database: %s", strerror(-r));
}

/* The 202 for a job accepted earlier: the job as the database shows it now, or, when it
 * cannot be read (the job database went away after the commit), as it was committed; the
 * job exists either way, so the client must not be told to send it again. */
static struct MHD_Response *job_accepted(Manager *m, int64_t id, const char *committed, unsigned *ret_status) {
        struct MHD_Response *r;
        char location[64];
        json_t *j = NULL;
        int k;

        k = store_job_read(m->store, id, false, &j);
        if (k < 0 && !committed)
                return job_database_unreadable(ret_status, k);
        *ret_status = MHD_HTTP_ACCEPTED;
        if (k < 0) {
                log_warning("job %lld: cannot read it again for its 202 (%s); answering with the job as it was committed",
                            (long long) id, strerror(-k));
                r = http_response_copy(committed, strlen(committed), "application/json");
        } else
                r = json_response(j);
        snprintf(location, sizeof(location), "/jobs/%lld", (long long) id);
        if (r)
                MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location);
        return r;
}

static void write_submitted(void *userdata, int r, int64_t id, bool existing, const char *err, json_t *job_json);

/* The headers Visier defines for this write beyond the scope (TargetTenantID, ProjectID,
 * NonVersioned): FastMode on creates and updates, SessionBasedPermissions and SessionRepoId on
 * assignments, validated, booleans as true/false, as "Name: value" lines in this order for
 * the job (jobs merge only with jobs that carry the same). Others are not forwarded. */
static int write_upstream_headers(HttpRequest *req, JobOp op, char *buf, size_t size, ValidateError *err) {
        static const struct {
                const char *name;
                bool boolean;
                bool (*applies)(JobOp op);
        } table[] = {
                { "FastMode", true, job_op_takes_fast_mode },
                { "SessionBasedPermissions", true, job_op_takes_session_headers },
                { "SessionRepoId", false, job_op_takes_session_headers },
        };
        size_t len = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                const char *v = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, table[i].name);
                int n;

                if (!v || !table[i].applies(op))
                        continue;
                if (validate_header_value(table[i].name, v, err) < 0 ||
                    (table[i].boolean && validate_boolean_header(table[i].name, v, &v, err) < 0))
                        return -EINVAL;
                n = snprintf(buf + len, size - len, "%s%s: %s", len ? "\n" : "", table[i].name, v);
                if (n < 0 || (size_t) n >= size - len) {
                        snprintf(err->path, sizeof(err->path), "%s", table[i].name);
                        snprintf(err->message, sizeof(err->message), "header is too long");
                        return -EINVAL;
                }
                len += (size_t) n;
        }
        return 0;
}

/*
 * PATCH /v1/admin/permissions/{id}: the body is one merge patch of that permission; into
 * *RET_BODY goes the bulk form {"permissions":[patch with its permissionId]}. NULL with the
 * answer to send when the request is refused.
 */
static struct MHD_Response *single_patch(HttpRequest *req, char **ret_body, unsigned *ret_status) {
        const char *id = req->path + strlen("/v1/admin/permissions/");
        json_auto_t *patch = NULL, *root = NULL;
        json_error_t jerr;
        json_t *given;

        *ret_body = NULL;
        if (strchr(id, '%') || streq(id, "users") || streq(id, "revert-to-parent")) {
                *ret_status = MHD_HTTP_NOT_FOUND;
                return http_response_status("NotFound", true, "no such endpoint: %s %s", req->method, req->path);
        }
        if (!req->body || req->body_len == 0)
                return bad_request(ret_status, "$", "a JSON merge patch object is required");
        patch = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(patch))
                return bad_request(ret_status, "$", "must be a JSON merge patch object");
        given = json_object_get(patch, "permissionId");
        if (given && !(json_is_string(given) && streq(json_string_value(given), id)))
                return bad_request(ret_status, "permissionId", "does not match the permission of the path");
        if (json_object_set_new(patch, "permissionId", json_string(id)) < 0 ||
            !(root = json_pack("{s:[O]}", "permissions", patch)) || !(*ret_body = json_dumps(root, JSON_COMPACT))) {
                *ret_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                return http_response_status("InternalError", false, "out of memory");
        }
        return NULL;
}

static struct MHD_Response *api_write(Manager *m, HttpRequest *req, unsigned *ret_status) {
        const char *tenant, *project, *non_versioned, *tenant_code_raw, *idem;
        _cleanup_free_ char *patch_body = NULL;
        const char *body = req->body;
        size_t body_len = req->body_len;
        Preferences prefer;
        char client[80], rid[48], upstream_headers[3 * 600];
        const char *fields[] = { rid, NULL };
        char *tenant_code = NULL;
        json_t *root = NULL, *items, *extra, *client_cids = NULL;
        ValidateError verr;
        JobOp op = job_op_from_request(req->method, req->path);
        struct MHD_Response *resp;
        size_t n_items = 0, batch_max;
        unsigned max_wait, answer_wait;
        size_t i;
        int r;

        snprintf(rid, sizeof(rid), "REQUEST_ID=%llu", (unsigned long long) req->id);
        if (op < 0) {
                *ret_status = MHD_HTTP_NOT_FOUND;
                return http_response_status("NotFound", true, "no such endpoint: %s %s", req->method, req->path);
        }
        if (op == JOB_OP_PATCH && !streq(req->path, "/v1/admin/permissions")) {
                resp = single_patch(req, &patch_body, ret_status);
                if (!patch_body)
                        return resp;
                body = patch_body;
                body_len = strlen(patch_body);
        }
        pthread_rwlock_rdlock(&m->config_lock);
        batch_max = m->config->batch_max;
        max_wait = m->config->max_wait;
        answer_wait = m->config->answer_wait;
        pthread_rwlock_unlock(&m->config_lock);
        r = validate_write(op, body, body_len, batch_max, &root, &verr);
        if (r == -ENOMEM) {
                *ret_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                return http_response_status("InternalError", false, "out of memory");
        }
        if (r < 0)
                return bad_request(ret_status, verr.path, verr.message);

        /* Everything stored with the job is checked first, so it can always be shown again. */
        idem = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Idempotency-Key");
        tenant = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "TargetTenantID");
        project = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "ProjectID");
        non_versioned = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "NonVersioned");
        if (idem && (strlen(idem) == 0 || strlen(idem) > IDEMPOTENCY_KEY_MAX)) {
                json_decref(root);
                return bad_request(ret_status, "Idempotency-Key", "must be 1 to 200 characters");
        }
        if (validate_header_value("Idempotency-Key", idem, &verr) < 0 ||
            validate_header_value("TargetTenantID", tenant, &verr) < 0 ||
            validate_header_value("ProjectID", project, &verr) < 0 ||
            validate_non_versioned(non_versioned, &non_versioned, &verr) < 0 ||
            write_upstream_headers(req, op, upstream_headers, sizeof(upstream_headers), &verr) < 0) {
                json_decref(root);
                return bad_request(ret_status, verr.path, verr.message);
        }
        tenant_code_raw = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "tenantCode");
        if (tenant_code_raw) {
                int decoded_len = 0;

                tenant_code = curl_easy_unescape(NULL, tenant_code_raw, 0, &decoded_len);
                if (!tenant_code) {
                        json_decref(root);
                        *ret_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                        return http_response_status("InternalError", false, "out of memory");
                }
                if (validate_tenant_code(tenant_code, (size_t) decoded_len, &verr) < 0) {
                        json_decref(root);
                        curl_free(tenant_code);
                        return bad_request(ret_status, verr.path, verr.message);
                }
        }

        /* Every create gets a correlationId, so that after a crash or a lost answer visierd can
         * ask Visier what landed instead of creating twice. */
        items = json_object_get(root, job_op_items_member(op));
        n_items = json_array_size(items);
        client_cids = op == JOB_OP_CREATE ? json_array() : NULL;
        if (op == JOB_OP_CREATE)
                json_array_foreach(items, i, extra) {
                        json_t *cid = json_object_get(extra, "correlationId");

                        if (cid) /* the client's own: checked against pending jobs when stored */
                                json_array_append_new(client_cids, json_pack("{s:I, s:O}", "index", (json_int_t) i,
                                                                             "correlationId", cid));
                        else {
                                char made[32];
                                make_correlation_id(made, sizeof(made));
                                json_object_set_new(extra, "correlationId", json_string(made));
                        }
                }
        extra = json_deep_copy(root);
        json_object_del(extra, job_op_items_member(op));
        snprintf(client, sizeof(client), "%s", req->client);

        /* Answered as Visier answers (the job's own answer, held until it ends, at most
         * answer_wait), unless the client asks for the job at once (respond-async) or names its
         * own wait (at most max_wait). */
        prefer = request_preferences(req);
        {
                ApiTask *t = req->ctx;

                assert(t);
                t->write_op = op;
                t->write_items = n_items;
                hold_settings(t, &prefer, max_wait, answer_wait);
        }
        /* Committed by the store thread with whatever else is pending (one transaction, one
         * fsync); the answer comes from write_submitted(). */
        r = store_job_submit_async(m->store,
                                   &(JobSubmit) {
                                           .op = op,
                                           .tenant = strempty(tenant),
                                           .project = strempty(project),
                                           .non_versioned = strempty(non_versioned),
                                           .tenant_code = strempty(tenant_code),
                                           .upstream_headers = upstream_headers,
                                           .client = client,
                                           .idempotency_key = idem,
                                           .body = body,
                                           .body_len = body_len,
                                           .items = items,
                                           .extra = extra,
                                           .client_correlation_ids = client_cids,
                                           .solo = json_object_size(extra) > 0,
                                   },
                                   write_submitted, req->ctx);
        json_decref(extra);
        json_decref(root);
        json_decref(client_cids);
        curl_free(tenant_code);
        if (r < 0) {
                log_full(LOG_ERR, LOG_MSGID_REQUEST, fields, "%s %s from %s not queued: %s", req->method, req->path,
                         req->client, strerror(-r));
                *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
                resp = http_response_status("ServiceUnavailable", false, "the change was not queued: %s",
                                            r == -ESHUTDOWN ? "visierd is stopping" : strerror(-r));
                if (resp)
                        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "5");
                return resp;
        }
        return HTTP_DEFER;
}

static void hold_start_on_loop(void *userdata);

/* A write's commit ended (on the store thread): answer, or hold the answer on the loop. */
static void write_submitted(void *userdata, int r, int64_t id, bool existing, const char *err, json_t *job_json) {
        ApiTask *t = userdata;
        Manager *m = t->m;
        HttpRequest *req = t->req;
        char rid[48], jid[48], location[64];
        const char *fields[] = { rid, jid, NULL };
        struct MHD_Response *resp;
        unsigned status;

        snprintf(rid, sizeof(rid), "REQUEST_ID=%llu", (unsigned long long) req->id);
        snprintf(jid, sizeof(jid), "JOB_ID=%lld", (long long) id);
        if (r == -EEXIST) {
                status = MHD_HTTP_UNPROCESSABLE_CONTENT;
                resp = http_response_status("UnprocessableEntity", true, "%s", err);
        } else if (r == -EADDRINUSE) {
                status = MHD_HTTP_BAD_REQUEST;
                resp = http_response_status("BadRequest", true, "%s", err);
        } else if (r < 0) {
                log_full(LOG_ERR, LOG_MSGID_REQUEST, fields + 1, "%s %s from %s not queued: %s", req->method, req->path,
                         req->client, err);
                status = MHD_HTTP_SERVICE_UNAVAILABLE;
                resp = http_response_status("ServiceUnavailable", false, "the change was not queued: %s", err);
                if (resp)
                        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "5");
        } else {
                if (!existing) {
                        if (publisher_call_in_flight(m->publisher))
                                metrics_overlap_prevented(m->metrics);
                        if (t->write_op == JOB_OP_CALL)
                                log_full(LOG_INFO, LOG_MSGID_REQUEST, fields, "job %lld queued: %s %s from %s",
                                         (long long) id, req->method, req->path, req->client);
                        else
                                log_full(LOG_INFO, LOG_MSGID_REQUEST, fields, "job %lld queued: %s of %zu items from %s",
                                         (long long) id, job_op_to_string(t->write_op), t->write_items, req->client);
                        publisher_wake(m->publisher);
                }
                if (t->hold_wait > 0) {
                        /* Held on the loop (no thread waits): answered when the job ends or the
                         * wait is up, whichever comes first. */
                        t->hold_job = id;
                        /* As text: the answer may be built on another thread (jansson's
                         * reference counts are not for sharing between threads). */
                        t->hold_accepted = job_json ? json_dumps(job_json, JSON_COMPACT) : NULL;
                        if (worker_post(m->workers, hold_start_on_loop, t) >= 0)
                                return;
                }
                /* The 202 from what was just written: the job is not read again. */
                status = MHD_HTTP_ACCEPTED;
                resp = job_json ? json_response(json_incref(job_json)) : NULL;
                snprintf(location, sizeof(location), "/jobs/%lld", (long long) id);
                if (resp) {
                        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
                        if (t->respond_async)
                                MHD_add_response_header(resp, "Preference-Applied", "respond-async");
                }
        }
        task_answer(t, status, resp);
}

/* ---- held answers (Prefer: wait), on the loop ---- */

static void hold_unlink(ApiTask *t) {
        for (ApiTask **p = (ApiTask **) &t->m->holds; *p; p = &(*p)->hold_next)
                if (*p == t) {
                        *p = t->hold_next;
                        break;
                }
        t->hold_next = NULL;
        t->hold_timer = sd_event_source_disable_unref(t->hold_timer);
}

/* The job's own answer if it has ended, else its 202. */
static void hold_answer(ApiTask *t) {
        struct MHD_Response *resp = NULL;
        unsigned status = 0;
        long vstatus;
        char *body;

        hold_unlink(t);
        if (job_state_is_final(store_job_state(t->m->store, t->hold_job)) &&
            store_job_response(t->m->store, t->hold_job, &vstatus, &body) == 0) {
                char pa[32];

                char location[64];

                status = (unsigned) vstatus;
                resp = http_response_take(body, strlen(body), "application/json");
                snprintf(pa, sizeof(pa), "wait=%ld", t->hold_wait);
                snprintf(location, sizeof(location), "/jobs/%lld", (long long) t->hold_job);
                if (resp) {
                        /* Which job this answer is, to follow it at /jobs/{id}. */
                        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_LOCATION, location);
                        if (t->hold_asked)
                                MHD_add_response_header(resp, "Preference-Applied", pa);
                }
        } else
                resp = job_accepted(t->m, t->hold_job, t->hold_accepted, &status);
        task_answer(t, status, resp);
}

static int on_hold_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        hold_answer(userdata);
        return 0;
}

static void hold_start_on_loop(void *userdata) {
        hold_start(userdata);
}

static void hold_start(ApiTask *t) {
        Manager *m = t->m;
        int r;

        t->hold_next = m->holds;
        m->holds = t;
        r = sd_event_add_time_relative(m->event, &t->hold_timer, CLOCK_MONOTONIC,
                                       (usec_t) t->hold_wait * USEC_PER_SEC, 0, on_hold_timer, t);
        /* Ended already (before the hold was in the list), or no timer: answer now. */
        if (r < 0 || m->draining || job_state_is_final(store_job_state(m->store, t->hold_job)))
                hold_answer(t);
}

void api_job_finished(Manager *m, int64_t job_id) {
        bool final = false, read = false;

        for (ApiTask *t = m->holds, *next; t; t = next) {
                next = t->hold_next;
                if (t->hold_job != job_id)
                        continue;
                if (!read) {
                        final = job_state_is_final(store_job_state(m->store, job_id));
                        read = true;
                }
                if (final) /* else it goes back to the queue: the hold waits on */
                        hold_answer(t);
        }
}

void api_recheck_holds(Manager *m) {
        /* One pass, one state read per hold (as api_job_finished, the next hold is taken
         * before this one is answered and unlinked). */
        for (ApiTask *t = m->holds, *next; t; t = next) {
                next = t->hold_next;
                if (job_state_is_final(store_job_state(m->store, t->hold_job)))
                        hold_answer(t);
        }
}

void api_release_holds(Manager *m) {
        while (m->holds)
                hold_answer(m->holds);
        refusals_release(m);
}

/* ---- job status ---- */

#define JOBS_LIST_DEFAULT 50
#define JOBS_LIST_MAX 500

static bool parse_id(const char *s, size_t n, int64_t *ret) {
        int64_t v = 0;

        if (n == 0 || n > 18)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (s[i] - '0');
        }
        *ret = v;
        return v > 0;
}

/* The id in /jobs/{id}[/...]. */
static bool path_job_id(const char *path, int64_t *ret) {
        const char *p = path + strlen("/jobs/"), *end = strchr(p, '/');

        return parse_id(p, end ? (size_t) (end - p) : strlen(p), ret);
}

static struct MHD_Response *no_such_job(unsigned *ret_status, const char *path) {
        *ret_status = MHD_HTTP_NOT_FOUND;
        return http_response_status("NotFound", true, "no such job: %s", path);
}

#define JOBS_FILTER_CLIENT_MAX (sizeof(((HttpRequest *) NULL)->client) - 1) /* as long as a client's name */
#define JOBS_FILTER_SINCE_MAX 64

/* s percent-encoded (every byte but A-Z a-z 0-9 - . _ ~) into buf; false when it does not fit. */
static bool jobs_query_escape(const char *s, char *buf, size_t len) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = 0;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
                        if (n + 1 >= len)
                                return false;
                        buf[n++] = (char) *p;
                } else {
                        if (n + 3 >= len)
                                return false;
                        buf[n++] = '%';
                        buf[n++] = hex[*p >> 4];
                        buf[n++] = hex[*p & 15];
                }
        }
        if (n >= len)
                return false;
        buf[n] = '\0';
        return true;
}

/* A query argument as the client meant it (visierd keeps them raw): %-escapes decoded and '+'
 * a space, into buf. -EINVAL for a bad escape or an escaped NUL, -E2BIG when it does not fit. */
static int jobs_query_decode(const char *raw, char *buf, size_t len) {
        size_t n = 0;

        for (const char *p = raw; *p; p++) {
                char c = *p;

                if (c == '%') {
                        int hi = hex_value(p[1]), lo = hi < 0 ? -1 : hex_value(p[2]);

                        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                                return -EINVAL;
                        c = (char) (hi << 4 | lo);
                        p += 2;
                } else if (c == '+')
                        c = ' ';
                if (n + 1 >= len)
                        return -E2BIG;
                buf[n++] = c;
        }
        buf[n] = '\0';
        return 0;
}

/* The next page's URL: the same filters, before the last job listed. NULL when out of memory. */
static json_t *jobs_next_link(int64_t last_id, int64_t limit, const char *state, const char *op, const char *client,
                              const char *since) {
        char client_e[JOBS_FILTER_CLIENT_MAX * 3 + 1] = "", since_e[JOBS_FILTER_SINCE_MAX * 3 + 1] = "";
        char link[128 + sizeof(client_e) + sizeof(since_e)];
        int n;

        /* The state and the operation are names from closed sets; the others were bounded. */
        if ((client && !jobs_query_escape(client, client_e, sizeof(client_e))) ||
            (since && !jobs_query_escape(since, since_e, sizeof(since_e))))
                return NULL;
        n = snprintf(link, sizeof(link), "/jobs?before=%lld&limit=%lld%s%s%s%s%s%s%s%s", (long long) last_id,
                     (long long) limit, state ? "&state=" : "", strempty(state), op ? "&operation=" : "", strempty(op),
                     client ? "&client=" : "", client_e, since ? "&since=" : "", since_e);
        if (n < 0 || (size_t) n >= sizeof(link))
                return NULL;
        return json_string(link);
}

static struct MHD_Response *api_jobs_list(Manager *m, HttpRequest *req, unsigned *ret_status) {
        const char *state_s = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "state");
        const char *limit_s = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "limit");
        const char *before_s = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "before");
        const char *op_raw = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "operation");
        const char *client_raw = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "client");
        const char *since_raw = MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, "since");
        /* One byte more than each may hold, so that too long is told from just fitting. */
        char op_b[16], client_b[JOBS_FILTER_CLIENT_MAX + 2], since_b[JOBS_FILTER_SINCE_MAX + 2];
        const char *op_s = NULL, *client_s = NULL, *since_s = NULL;
        StoreJobFilter f = STORE_JOB_FILTER_NONE;
        int64_t before = 0, limit = JOBS_LIST_DEFAULT;
        json_t *jobs, *next = json_null();
        int r;

        if (state_s && (f.state = job_state_from_string(state_s)) < 0)
                return bad_request(ret_status, "state", "must be queued, running, succeeded, failed or cancelled");
        if (limit_s && (!parse_id(limit_s, strlen(limit_s), &limit) || limit > JOBS_LIST_MAX))
                return bad_request(ret_status, "limit", "must be 1 to 500");
        if (before_s && !parse_id(before_s, strlen(before_s), &before))
                return bad_request(ret_status, "before", "must be a job id");
        if (op_raw && jobs_query_decode(op_raw, op_b, sizeof(op_b)) == 0)
                op_s = op_b;
        if (op_raw && (!op_s || (f.op = job_op_from_string(op_s)) < 0))
                return bad_request(ret_status, "operation",
                                   "must be create, update, delete, assign, remove, revert, patch, export or call");
        if (client_raw) {
                bool printable = jobs_query_decode(client_raw, client_b, sizeof(client_b)) == 0;

                client_s = printable ? client_b : "";
                for (const unsigned char *p = (const unsigned char *) client_s; *p; p++)
                        printable = printable && *p >= 0x20 && *p != 0x7f;
                if (!*client_s || strlen(client_s) > JOBS_FILTER_CLIENT_MAX || !printable)
                        return bad_request(ret_status, "client",
                                           "must be a client's name (or its address, as tcp:127.0.0.1 or uid:1000): 1 "
                                           "to 79 bytes without control characters");
                f.client = client_s;
        }
        if (since_raw) {
                int64_t ms;

                if (jobs_query_decode(since_raw, since_b, sizeof(since_b)) == 0)
                        since_s = since_b;
                if (!since_s || strlen(since_s) > JOBS_FILTER_SINCE_MAX || parse_time_ms(since_s, &ms) < 0)
                        return bad_request(ret_status, "since",
                                           "must be an RFC 3339 date-time with its offset (2026-01-31T08:00:00Z) or "
                                           "a Unix time in seconds");
                f.since_ms = ms > 0 ? ms : 1; /* 0 would mean no filter; nothing is older than 1 ms anyway */
        }
        r = store_jobs_find(m->store, &f, before, (unsigned) limit, &jobs);
        if (r < 0)
                return job_database_unreadable(ret_status, r);
        if ((int64_t) json_array_size(jobs) == limit) {
                json_t *last = json_array_get(jobs, json_array_size(jobs) - 1), *link;

                link = jobs_next_link(json_integer_value(json_object_get(last, "id")), limit, state_s, op_s, client_s,
                                      since_s);
                if (link)
                        next = link;
        }
        *ret_status = MHD_HTTP_OK;
        return json_response(json_pack("{s:o, s:o}", "jobs", jobs, "next", next));
}

static struct MHD_Response *api_job_get(Manager *m, HttpRequest *req, unsigned *ret_status) {
        char *text;
        size_t len;
        int64_t id;
        int r;

        if (!path_job_id(req->path, &id))
                return no_such_job(ret_status, req->path);
        r = store_job_text(m->store, id, &text, &len);
        if (r == -ENOENT)
                return no_such_job(ret_status, req->path);
        if (r == -ENOMEM)
                return NULL;
        if (r < 0) /* not a 404: the job may well exist (a database outage, say) */
                return job_database_unreadable(ret_status, r);
        *ret_status = MHD_HTTP_OK;
        return http_response_take(text, len, "application/json");
}

static struct MHD_Response *job_action(Manager *m, HttpRequest *req, unsigned *ret_status, bool cancel) {
        JobState state = _JOB_STATE_INVALID;
        json_t *job = NULL;
        int64_t id;
        int r;

        if (!path_job_id(req->path, &id))
                return no_such_job(ret_status, req->path);
        if (req->role < CLIENT_ROLE_ADMIN) {
                /* A write client may cancel only the jobs it queued. */
                json_t *j = NULL;
                const char *owner;
                bool own;

                r = store_job_read(m->store, id, false, &j);
                if (r == -ENOENT)
                        return no_such_job(ret_status, req->path);
                if (r < 0)
                        return job_database_unreadable(ret_status, r);
                owner = json_string_value(json_object_get(j, "client"));
                own = owner && streq(owner, req->client);
                json_decref(j);
                if (!own) {
                        *ret_status = MHD_HTTP_FORBIDDEN;
                        return http_response_status("Forbidden", true, "job %lld was queued by another client",
                                                    (long long) id);
                }
        }
        /* The answer is the job as the change's own transaction left it, so that the change is
         * never made without a job to show for it (an outage between the commit and a second
         * read would have given an empty 500 for a change that was made). */
        r = cancel ? store_job_cancel(m->store, id, &state, &job) : store_job_retry(m->store, id, &state, &job);
        if (r == -ENOENT)
                return no_such_job(ret_status, req->path);
        if (r == -EBUSY) {
                *ret_status = MHD_HTTP_CONFLICT;
                return http_response_status("Conflict", true, "job %lld is %s; only %s jobs can be %s", (long long) id,
                                            job_state_to_string(state), cancel ? "queued" : "failed",
                                            cancel ? "cancelled" : "retried");
        }
        if (r < 0) {
                *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
                return http_response_status("ServiceUnavailable", false, "cannot update the job database: %s",
                                            strerror(-r));
        }
        if (!cancel)
                publisher_wake(m->publisher);
        else
                manager_job_finished(m, id);
        *ret_status = MHD_HTTP_OK;
        return json_response(job);
}

static struct MHD_Response *api_job_cancel(Manager *m, HttpRequest *req, unsigned *ret_status) {
        return job_action(m, req, ret_status, true);
}

static struct MHD_Response *api_job_retry(Manager *m, HttpRequest *req, unsigned *ret_status) {
        return job_action(m, req, ret_status, false);
}

static struct MHD_Response *api_metrics(Manager *m, HttpRequest *req, unsigned *ret_status) {
        MetricsGauges g = {};
        CacheStats cs;
        TokenStatus ts;
        json_t *counts;
        size_t len = 0;
        char *text;

        token_keeper_status(m->token, &ts);
        g.token_expires_in = ts.valid ? (double) ts.expires_in / (double) USEC_PER_SEC : 0.0;
        g.logins = ts.logins;
        g.login_failures = ts.login_failures;
        ratelimit_snapshot(&m->rate, clock_now(), &g.budget_minute, &g.budget_hour);
        counts = store_counts(m->store, (int64_t) (clock_realtime() / USEC_PER_MSEC));
        for (int s = 0; s < _JOB_STATE_MAX; s++)
                g.jobs[s] = json_integer_value(json_object_get(counts, job_state_to_string((JobState) s)));
        g.oldest_queued_age = json_is_number(json_object_get(counts, "oldest_queued_age_seconds"))
                                      ? json_number_value(json_object_get(counts, "oldest_queued_age_seconds"))
                                      : -1.0;
        json_decref(counts);
        if (m->cache) {
                cache_stats(m->cache, &cs);
                g.cache = &cs;
        }
        text = metrics_render(m->metrics, &g, &len);
        if (text && m->fleet) {
                /* The fleet's gauges after the node's own (fleet.h). */
                char *all = NULL;
                size_t all_len = 0;
                FILE *out = open_memstream(&all, &all_len);

                if (out) {
                        fwrite(text, 1, len, out);
                        fleet_metrics_render(m->fleet, out);
                }
                if (out && fclose(out) == 0) {
                        free(text);
                        text = all;
                        len = all_len;
                } else {
                        free(all);
                        free(text);
                        text = NULL;
                }
        }
        if (!text) {
                *ret_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                return http_response_status("InternalError", false, "out of memory");
        }
        *ret_status = MHD_HTTP_OK;
        return http_response_take(text, len, "text/plain; version=0.0.4; charset=utf-8");
}

/* ---- data queries (exports), streamed ---- */

#define QUERY_BLOCK (64 * 1024)
#define QUERY_REFUSAL_MAX (16 * 1024)

/* A streamed query: shared by the request's task (until the request ends) and, once the
 * answer has begun, its response (until libmicrohttpd frees it). Loop thread only. */
typedef struct QueryStream {
        unsigned refs;
        UpstreamStream *st;  /* closed when the request ends: nothing calls back after */
        HttpRequest *req;    /* NULL once the request has ended */
        ApiTask *t;
        char *refusal;       /* a 403's body, read whole before answering */
        size_t refusal_len;
} QueryStream;

static void query_stream_unref(QueryStream *qs) {
        if (--qs->refs > 0)
                return;
        upstream_stream_close(qs->st);
        free(qs->refusal);
        free(qs);
}

static void query_stream_detach(QueryStream *qs) {
        qs->req = NULL;
        qs->t = NULL;
        qs->st = upstream_stream_close(qs->st);
        query_stream_unref(qs);
}

static void query_free(void *cls) {
        query_stream_unref(cls);
}

static void query_resume(void *userdata) {
        QueryStream *qs = userdata;

        if (qs->req)
                http_stream_resume(qs->req);
}

static ssize_t query_read(void *cls, char *buf, size_t max) {
        QueryStream *qs = cls;
        ssize_t n;

        if (!qs->st)
                return HTTP_STREAM_ERROR;
        n = upstream_stream_read_nb(qs->st, buf, max);
        if (n >= 0)
                return n;
        if (n == -EAGAIN) {
                /* The connection is suspended until more of Visier's answer is in. */
                upstream_stream_notify(qs->st, query_resume, qs);
                return HTTP_STREAM_AGAIN;
        }
        return HTTP_STREAM_ERROR;
}

/* Visier refused the query (403): its reason, read whole, in words. */
static void query_refused(void *userdata) {
        QueryStream *qs = userdata;
        struct MHD_Response *r;
        ssize_t n;

        for (;;) {
                n = qs->refusal_len < QUERY_REFUSAL_MAX
                            ? upstream_stream_read_nb(qs->st, qs->refusal + qs->refusal_len,
                                                      QUERY_REFUSAL_MAX - qs->refusal_len)
                            : 0;
                if (n == -EAGAIN) {
                        upstream_stream_notify(qs->st, query_refused, qs);
                        return;
                }
                if (n <= 0)
                        break;
                qs->refusal_len += (size_t) n;
        }
        {
                json_t *j = json_loadb(qs->refusal, qs->refusal_len, 0, NULL);
                const char *why = json_string_value(json_object_get(j, "localizedMessage"));

                if (!why)
                        why = json_string_value(json_object_get(j, "message"));
                r = http_response_status("Forbidden", true,
                                         "data exports are not available to visierd's API user: %s. Data exports must "
                                         "be enabled for the tenant and the API user needs the Consume Data Exports "
                                         "capability; ask your Visier administrator",
                                         why ? why : "Visier refused the query (403)");
                json_decref(j);
        }
        task_answer(qs->t, MHD_HTTP_FORBIDDEN, r);
}

static void query_headers(void *userdata, int k, long status, const char *content_type, const char *err) {
        QueryStream *qs = userdata;
        ApiTask *t = qs->t;
        HttpRequest *req = qs->req;
        struct MHD_Response *r;
        char rid[48];
        const char *fields[] = { rid, NULL };
        unsigned s;

        if (k < 0) {
                r = upstream_error_response(t->m, k, err, &s);
                snprintf(rid, sizeof(rid), "REQUEST_ID=%llu", (unsigned long long) req->id);
                log_full(LOG_WARNING, LOG_MSGID_UPSTREAM_ERROR, fields, "POST %s for %s failed with %u: %s", req->path,
                         req->client, s, err);
                task_answer(t, s, r);
                return;
        }
        if (status == MHD_HTTP_FORBIDDEN) {
                /* Visier refuses queries when data exports are off for the tenant or the API user
                 * lacks the capability: say so in words, with Visier's own reason. */
                qs->refusal = malloc(QUERY_REFUSAL_MAX + 1);
                if (!qs->refusal) {
                        task_answer(t, 500, NULL);
                        return;
                }
                query_refused(qs);
                return;
        }
        r = http_response_stream(req, QUERY_BLOCK, query_read, qs, query_free);
        if (r) {
                qs->refs++; /* the response's */
                if (content_type)
                        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        }
        task_answer(t, (unsigned) status, r);
}

/* Run a data query against Visier and stream its answer to the client (on the loop: the
 * connection waits suspended for each piece, and libcurl is paused while the client is
 * slower than Visier). */
static struct MHD_Response *stream_query(Manager *m, HttpRequest *req, const char *endpoint, const char *path,
                                         const char *query,
                                         const char *const *headers, const char *body, size_t body_len,
                                         unsigned *ret_status) {
        ApiTask *t = req->ctx;
        QueryStream *qs;

        assert(t);
        qs = calloc(1, sizeof(*qs));
        if (!qs)
                return NULL;
        *qs = (QueryStream) { .refs = 1, .req = req, .t = t };
        qs->st = upstream_stream_start(m->upstream,
                                       &(UpstreamRequest) {
                                               .endpoint = endpoint, /* a route pattern: a bounded label */
                                               .method = "POST",
                                               .path = path,
                                               .query = query,
                                               .headers = headers,
                                               .body = body,
                                               .body_len = body_len,
                                               .idempotent = true, /* a query reads; sending it twice is harmless */
                                       },
                                       query_headers, qs);
        if (!qs->st) {
                free(qs);
                return NULL;
        }
        t->stream = qs;
        return HTTP_DEFER;
}

static struct MHD_Response *api_query(Manager *m, HttpRequest *req, unsigned *ret_status) {
        _cleanup_free_ Forwarded *f = NULL;
        ValidateError verr;
        QueryBuilder q = {};
        const Route *route = ((ApiTask *) req->ctx)->route;

        {
                struct MHD_Response *refusal = NULL;

                if (query_collect(req, &q, ret_status, &refusal) < 0)
                        return refusal;
        }
        f = malloc(sizeof(*f));
        if (!f)
                return NULL;
        if (forwarded_build(req, route->headers, f, &verr) < 0)
                return bad_request(ret_status, verr.path, verr.message);
        f->list[f->n++] = "Content-Type: application/json";
        f->list[f->n] = NULL;
        return stream_query(m, req, req->route, req->path, q.len ? q.buf : NULL, f->list, req->body ? req->body : "", req->body_len,
                            ret_status);
}

/* ---- named exports ---- */

#define EXPORT_PARAMS_IN_REQUEST 32

static struct MHD_Response *api_exports_list(Manager *m, HttpRequest *req, unsigned *ret_status) {
        char *body;

        /* The description shares JSON values with the loaded definitions, which a reload frees:
         * it is written out and let go while the configuration is held. */
        pthread_rwlock_rdlock(&m->config_lock);
        {
                json_t *j = exports_describe(m->exports);
                body = j ? json_dumps(j, JSON_COMPACT) : NULL;
                json_decref(j);
        }
        pthread_rwlock_unlock(&m->config_lock);
        if (!body)
                return NULL;
        *ret_status = MHD_HTTP_OK;
        return http_response_take(body, strlen(body), "application/json");
}

typedef struct ParamCollector {
        ExportParam params[EXPORT_PARAMS_IN_REQUEST];
        char *owned[EXPORT_PARAMS_IN_REQUEST * 2];
        size_t n, n_owned;
        bool overflow;
} ParamCollector;

static enum MHD_Result collect_param(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        ParamCollector *c = cls;
        char *k, *v;

        if (c->n >= EXPORT_PARAMS_IN_REQUEST) {
                c->overflow = true;
                return MHD_NO;
        }
        k = curl_easy_unescape(NULL, key, 0, NULL);
        v = curl_easy_unescape(NULL, value ? value : "", 0, NULL);
        if (!k || !v) {
                curl_free(k);
                curl_free(v);
                c->overflow = true;
                return MHD_NO;
        }
        /* '+' means a space in a query string. */
        for (char *p = v; *p; p++)
                if (*p == '+')
                        *p = ' ';
        c->owned[c->n_owned++] = k;
        c->owned[c->n_owned++] = v;
        c->params[c->n++] = (ExportParam) { .name = k, .value = v };
        return MHD_YES;
}

static void params_done(ParamCollector *c) {
        for (size_t i = 0; i < c->n_owned; i++)
                curl_free(c->owned[i]);
}

/* The export named in /exports/NAME[.ext][/...]: its name, and the format the suffix asks for. */
static bool export_name_from_path(const char *path, char *name, size_t len, ExportFormat *ret_format) {
        const char *p = path + strlen("/exports/"), *end = strchr(p, '/'), *dot;
        size_t n = end ? (size_t) (end - p) : strlen(p);

        if (n == 0 || n >= len)
                return false;
        memcpy(name, p, n);
        name[n] = '\0';
        *ret_format = _EXPORT_FORMAT_INVALID;
        dot = strrchr(name, '.');
        if (dot && !end) {
                ExportFormat f = export_format_from_string(dot + 1);
                if (f >= 0) {
                        *ret_format = f;
                        name[dot - name] = '\0';
                }
        }
        return true;
}

/* Resolve an export and its query body for this request (under the config lock). */
static struct MHD_Response *export_prepare(Manager *m, HttpRequest *req, char *name, size_t namelen,
                                           ExportFormat *format, char **ret_query, char **ret_body, unsigned *ret_status) {
        ParamCollector pc = {};
        char err[EXPORT_ERROR_MAX];
        const Export *x;
        json_t *body = NULL;
        int r;

        if (!export_name_from_path(req->path, name, namelen, format)) {
                *ret_status = MHD_HTTP_NOT_FOUND;
                return http_response_status("NotFound", true, "no such export: %s", req->path);
        }
        MHD_get_connection_values(req->connection, MHD_GET_ARGUMENT_KIND, collect_param, &pc);
        if (pc.overflow) {
                params_done(&pc);
                return bad_request(ret_status, "parameters", "too many, or badly escaped");
        }
        pthread_rwlock_rdlock(&m->config_lock);
        x = exports_find(m->exports, name);
        if (!x) {
                pthread_rwlock_unlock(&m->config_lock);
                params_done(&pc);
                *ret_status = MHD_HTTP_NOT_FOUND;
                return http_response_status("NotFound", true, "no export named %s (see GET /exports)", name);
        }
        if (*format < 0) {
                const char *accept = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Accept");
                *format = export_format_from_accept(accept);
                if (*format < 0)
                        *format = x->format;
        }
        r = export_build_body(x, pc.params, pc.n, &body, err, sizeof(err));
        *ret_query = strdup(x->query);
        pthread_rwlock_unlock(&m->config_lock);
        params_done(&pc);
        if (r < 0) {
                free(*ret_query);
                *ret_query = NULL;
                if (r == -ENOMEM) {
                        *ret_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                        return http_response_status("InternalError", false, "out of memory");
                }
                *ret_status = MHD_HTTP_BAD_REQUEST;
                return http_response_status("BadRequest", true, "%s", err);
        }
        *ret_body = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        return NULL;
}

static struct MHD_Response *api_export_run(Manager *m, HttpRequest *req, unsigned *ret_status) {
        char name[EXPORT_NAME_MAX + 8], upath[64], accept[80];
        const char *headers[3];
        ExportFormat format;
        char *query = NULL, *body = NULL;
        struct MHD_Response *r;

        r = export_prepare(m, req, name, sizeof(name), &format, &query, &body, ret_status);
        if (r)
                return r;
        snprintf(upath, sizeof(upath), "/v1/data/query/%s", query);
        snprintf(accept, sizeof(accept), "Accept: %s", export_format_media_type(format));
        headers[0] = accept;
        headers[1] = "Content-Type: application/json";
        headers[2] = NULL;
        r = stream_query(m, req, upath, upath, NULL, headers, body ? body : "{}", body ? strlen(body) : 2, ret_status);
        free(query);
        free(body);
        return r;
}

static struct MHD_Response *api_export_queue(Manager *m, HttpRequest *req, unsigned *ret_status) {
        char name[EXPORT_NAME_MAX + 8], err[STORE_ERROR_MAX] = "", location[128];
        ExportFormat format;
        char *query = NULL, *body = NULL, *request = NULL, *text = NULL;
        struct MHD_Response *r;
        json_t *reqj, *items;
        bool existing = false;
        int64_t id = 0;
        int k;

        r = export_prepare(m, req, name, sizeof(name), &format, &query, &body, ret_status);
        if (r)
                return r;
        reqj = json_pack("{s:s, s:s, s:s, s:o}", "export", name, "query", query, "format",
                         export_format_to_string(format), "body", json_loads(body, 0, NULL));
        request = reqj ? json_dumps(reqj, JSON_COMPACT) : NULL;
        json_decref(reqj);
        free(query);
        free(body);
        if (!request) {
                *ret_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                return http_response_status("InternalError", false, "out of memory");
        }
        items = json_array();
        /* The 202 is the job as its commit wrote it: never a second read, which an outage
         * after the commit would turn into an empty 500 for a run that was queued. */
        k = store_job_submit_text(m->store,
                                  &(JobSubmit) { .op = JOB_OP_EXPORT, .tenant = "", .project = "", .non_versioned = "",
                                                 .tenant_code = "", .client = req->client, .body = request,
                                                 .body_len = strlen(request), .items = items, .solo = true },
                                  &id, &existing, &text, err, sizeof(err));
        json_decref(items);
        free(request);
        if (k < 0) {
                *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
                return http_response_status("ServiceUnavailable", false, "the run was not queued: %s", err);
        }
        runner_wake(m->runner);
        *ret_status = MHD_HTTP_ACCEPTED;
        r = http_response_take(text, strlen(text), "application/json");
        snprintf(location, sizeof(location), "/exports/%s/runs/%lld", name, (long long) id);
        if (r)
                MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location);
        return r;
}

static struct MHD_Response *api_export_result(Manager *m, HttpRequest *req, unsigned *ret_status) {
        char name[EXPORT_NAME_MAX + 8], path[1024];
        const char *runs = strstr(req->path, "/runs/"), *res_export, *res_format;
        ExportFormat ignored;
        struct MHD_Response *r;
        json_t *job, *result;
        struct stat st;
        int64_t id = 0;
        int fd, e;

        if (!export_name_from_path(req->path, name, sizeof(name), &ignored) || !runs ||
            !parse_id(runs + 6, strlen(runs + 6), &id))
                return no_such_job(ret_status, req->path);
        e = store_job_read(m->store, id, false, &job);
        if (e == -ENOENT)
                return no_such_job(ret_status, req->path);
        if (e < 0)
                return job_database_unreadable(ret_status, e);
        result = json_object_get(job, "result");
        res_export = json_string_value(json_object_get(result, "export"));
        res_format = json_string_value(json_object_get(result, "format"));
        if (!streq(json_string_value(json_object_get(job, "operation")) ?: "", "export")) {
                json_decref(job);
                return no_such_job(ret_status, req->path);
        }
        if (!streq(json_string_value(json_object_get(job, "state")) ?: "", "succeeded")) {
                /* Not there yet (or failed): the job tells. */
                *ret_status = streq(json_string_value(json_object_get(job, "state")) ?: "", "failed") ? MHD_HTTP_CONFLICT
                                                                                                    : MHD_HTTP_ACCEPTED;
                return json_response(job);
        }
        if (!res_export || !streq(res_export, name) || export_format_from_string(res_format) < 0) {
                json_decref(job);
                return no_such_job(ret_status, req->path);
        }
        runner_result_path(m->results_dir, id, export_format_from_string(res_format), path, sizeof(path));
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0) {
                if (fd >= 0)
                        close(fd);
                json_decref(job);
                *ret_status = MHD_HTTP_GONE;
                return http_response_status("Gone", true, "the result of run %lld is no longer kept", (long long) id);
        }
        r = MHD_create_response_from_fd((size_t) st.st_size, fd);
        if (r)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                        export_format_media_type(export_format_from_string(res_format)));
        else
                close(fd);
        json_decref(job);
        *ret_status = MHD_HTTP_OK;
        return r;
}

/* ---- any other write of Visier's API, as a call job ---- */

/* The request headers Visier defines for policy rows, PH_* order (src/visierd/policy.h). */
static const struct {
        const char *name;
        bool boolean;
} policy_headers[] = {
        { "TargetTenantID", false }, { "ProjectID", false },        { "NonVersioned", true },
        { "DataVersionID", false },  { "FastMode", true },          { "SessionBasedPermissions", true },
        { "SessionRepoId", false },  { "Prefer", false },           { "TargetUsername", false },
};

/*
 * A write of Visier's API with no handler of its own (the policy table's publish and write
 * classes): queued as a call job, sent as it came — method, path, query, the headers Visier
 * defines for it, body — alone, through the publisher's one lane, and answered with Visier's
 * own answer like a permission write (Prefer: respond-async, wait=N, answer_wait).
 */
static struct MHD_Response *api_call_write(Manager *m, HttpRequest *req, unsigned *ret_status) {
        ApiTask *t = req->ctx;
        const char *tenant = NULL, *project = NULL, *non_versioned = NULL, *idem;
        char upstream_headers[9 * 600] = "", rid[48];
        const char *fields[] = { rid, NULL };
        unsigned mask, max_wait, answer_wait;
        ValidateError verr;
        QueryBuilder q = {};
        Preferences prefer;
        json_t *extra, *items;
        size_t len = 0;
        int r;

        assert(t);
        mask = t->route->headers;
        snprintf(rid, sizeof(rid), "REQUEST_ID=%llu", (unsigned long long) req->id);
        if (req->body_len > 0) {
                json_t *j = json_loadb(req->body, req->body_len, 0, NULL);

                if (!j)
                        return bad_request(ret_status, "$", "the body is not valid JSON");
                json_decref(j);
        }
        {
                struct MHD_Response *refusal = NULL;

                if (query_collect(req, &q, ret_status, &refusal) < 0)
                        return refusal;
        }
        idem = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Idempotency-Key");
        if (idem && (strlen(idem) == 0 || strlen(idem) > IDEMPOTENCY_KEY_MAX))
                return bad_request(ret_status, "Idempotency-Key", "must be 1 to 200 characters");
        if (validate_header_value("Idempotency-Key", idem, &verr) < 0)
                return bad_request(ret_status, verr.path, verr.message);
        prefer = request_preferences(req);
        if (prefer.nv_lock_bad)
                return bad_request(ret_status, "Prefer", "nvLock must be global, artifact or none");
        for (size_t i = 0; i < ELEMENTSOF(policy_headers); i++) {
                const char *v;
                int n;

                if (!(mask & (1u << i)))
                        continue;
                if (streq(policy_headers[i].name, "Prefer")) {
                        v = prefer.nv_lock[0] ? prefer.nv_lock : NULL;
                        if (v) {
                                n = snprintf(upstream_headers + len, sizeof(upstream_headers) - len, "%sPrefer: nvLock=%s",
                                             len ? "\n" : "", v);
                                if (n < 0 || (size_t) n >= sizeof(upstream_headers) - len)
                                        return bad_request(ret_status, "Prefer", "header is too long");
                                len += (size_t) n;
                        }
                        continue;
                }
                v = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, policy_headers[i].name);
                if (!v)
                        continue;
                if (validate_header_value(policy_headers[i].name, v, &verr) < 0 ||
                    (policy_headers[i].boolean && validate_boolean_header(policy_headers[i].name, v, &v, &verr) < 0))
                        return bad_request(ret_status, verr.path, verr.message);
                if (i == 0)
                        tenant = v;
                else if (i == 1)
                        project = v;
                else if (i == 2)
                        non_versioned = v;
                else {
                        n = snprintf(upstream_headers + len, sizeof(upstream_headers) - len, "%s%s: %s", len ? "\n" : "",
                                     policy_headers[i].name, v);
                        if (n < 0 || (size_t) n >= sizeof(upstream_headers) - len)
                                return bad_request(ret_status, policy_headers[i].name, "header is too long");
                        len += (size_t) n;
                }
        }
        pthread_rwlock_rdlock(&m->config_lock);
        max_wait = m->config->max_wait;
        answer_wait = m->config->answer_wait;
        pthread_rwlock_unlock(&m->config_lock);
        t->write_op = JOB_OP_CALL;
        t->write_items = 0;
        hold_settings(t, &prefer, max_wait, answer_wait);

        extra = json_pack("{s:{s:s, s:s, s:s}}", "call", "method", req->method, "path", req->path, "route", req->route);
        items = json_array();
        if (!extra || !items) {
                json_decref(extra);
                json_decref(items);
                return NULL;
        }
        if (q.len)
                json_object_set_new(json_object_get(extra, "call"), "query", json_string(q.buf));
        if (req->body_len)
                json_object_set_new(json_object_get(extra, "call"), "body", json_stringn(req->body, req->body_len));
        r = store_job_submit_async(m->store,
                                   &(JobSubmit) {
                                           .op = JOB_OP_CALL,
                                           .tenant = strempty(tenant),
                                           .project = strempty(project),
                                           .non_versioned = strempty(non_versioned),
                                           .tenant_code = "",
                                           .upstream_headers = upstream_headers,
                                           .client = req->client,
                                           .idempotency_key = idem,
                                           .body = req->body,
                                           .body_len = req->body_len,
                                           .items = items,
                                           .extra = extra,
                                           .solo = true,
                                   },
                                   write_submitted, t);
        json_decref(extra);
        json_decref(items);
        if (r < 0) {
                log_full(LOG_ERR, LOG_MSGID_REQUEST, fields, "%s %s from %s not queued: %s", req->method, req->path,
                         req->client, strerror(-r));
                *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
                return http_response_status("ServiceUnavailable", false, "the change was not queued: %s",
                                            r == -ESHUTDOWN ? "visierd is stopping" : strerror(-r));
        }
        return HTTP_DEFER;
}
