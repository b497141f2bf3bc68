/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local API's router and handlers: ops routes (/healthz, /readyz, /status) and the
 * read endpoints of Visier's API, proxied unchanged through the upstream client. The route
 * table below is the one list of what visierd serves. Logs each failed request once, with
 * its request id; never logs or returns a secret.
 */
#include <jansson.h>
#include <stdarg.h>

#include "log.h"
#include "manager.h"

#define API_HEADER_MAX 1024
#define API_QUERY_MAX 8192

typedef struct MHD_Response *(*route_fn)(Manager *m, HttpRequest *req, unsigned *ret_status);

typedef struct Route {
        const char *method;
        const char *pattern; /* '*' matches one path segment */
        route_fn handler;
} Route;

static struct MHD_Response *api_healthz(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_readyz(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_status(Manager *m, HttpRequest *req, unsigned *ret_status);
static struct MHD_Response *api_proxy_read(Manager *m, HttpRequest *req, unsigned *ret_status);

static const Route routes[] = {
        { "GET", "/healthz", api_healthz },
        { "GET", "/readyz", api_readyz },
        { "GET", "/status", api_status },
        { "GET", "/v1/admin/capabilities", api_proxy_read },
        { "GET", "/v1/admin/capabilities/*", api_proxy_read },
        { "GET", "/v1/admin/content-packages", api_proxy_read },
        { "GET", "/v1/admin/content-packages/*", api_proxy_read },
        { "GET", "/v1/admin/data-security-objects", api_proxy_read },
        { "GET", "/v1/admin/permissions", api_proxy_read },
        { "GET", "/v1/admin/permissions/*", api_proxy_read },
        { "GET", "/v1/admin/permissions/*/users", api_proxy_read },
        { "GET", "/v1/data/model/analytic-objects", api_proxy_read },
        { "GET", "/v1/data/model/analytic-objects/*/dimensions", api_proxy_read },
        { "GET", "/v1/data/model/analytic-objects/*/dimensions/*/members", api_proxy_read },
};

/* Headers a local client may pass on to Visier; everything else (apikey, Cookie,
 * Authorization above all) is dropped. */
static const char *const forwarded_headers[] = { "TargetTenantID", "ProjectID", "NonVersioned", "Accept" };

static bool segment_char_ok(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               strchr("-._~%!$&'()*+,;=:@", c);
}

/* Does the raw path match the pattern? Wildcard segments must be non-empty, plain and not
 * dot segments (which could walk the forwarded path elsewhere). */
static bool path_match(const char *pattern, const char *path) {
        while (*pattern && *path) {
                if (*pattern == '*') {
                        const char *end = strchr(path, '/');
                        size_t n = end ? (size_t) (end - path) : strlen(path);

                        if (n == 0 || (n == 1 && path[0] == '.') || (n == 2 && path[0] == '.' && path[1] == '.'))
                                return false;
                        for (size_t i = 0; i < n; i++)
                                if (!segment_char_ok(path[i]))
                                        return false;
                        if (memmem(path, n, "%2e", 3) || memmem(path, n, "%2E", 3) || memmem(path, n, "%2f", 3) ||
                            memmem(path, n, "%2F", 3))
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


struct MHD_Response *api_handle(void *userdata, HttpRequest *req, unsigned *ret_status) {
        Manager *m = userdata;
        bool path_known = false;

        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                if (!path_match(routes[i].pattern, req->path))
                        continue;
                path_known = true;
                if (streq(routes[i].method, req->method))
                        return routes[i].handler(m, req, ret_status);
        }
        if (path_known) {
                struct MHD_Response *r;

                *ret_status = MHD_HTTP_METHOD_NOT_ALLOWED;
                r = http_response_status("MethodNotAllowed", true, "%s is not allowed on %s", req->method,
                                         req->path);
                if (r)
                        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET");
                return r;
        }
        *ret_status = MHD_HTTP_NOT_FOUND;
        return http_response_status("NotFound", true, "no such endpoint: %s %s", req->method, req->path);
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
        if (!m->store || !store_ok(m->store))
                json_array_append_new(reasons, json_string("the job database is not open"));
        if (json_array_size(reasons) == 0) {
                json_decref(reasons);
                *ret_status = MHD_HTTP_OK;
                return json_response(json_pack("{s:s}", "status", "ready"));
        }
        *ret_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        return json_response(json_pack("{s:s, s:o}", "status", "not ready", "reasons", reasons));
}

static struct MHD_Response *api_status(Manager *m, HttpRequest *req, unsigned *ret_status) {
        unsigned minute = 0, hour = 0;
        UpstreamStats us;
        TokenStatus ts;
        usec_t now = clock_now();
        json_t *token;

        token_keeper_status(m->token, &ts);
        ratelimit_snapshot(&m->rate, now, &minute, &hour);
        upstream_stats(m->upstream, &us);

        token = json_pack("{s:s, s:b, s:I, s:I, s:s?}", "state", ts.state, "valid", ts.valid, "logins",
                          (json_int_t) ts.logins, "login_failures", (json_int_t) ts.login_failures,
                          "last_login_error", ts.last_error[0] ? ts.last_error : NULL);
        if (ts.valid)
                json_object_set_new(token, "expires_in_seconds", json_integer((json_int_t) (ts.expires_in / USEC_PER_SEC)));
        if (ts.next_attempt_in > 0)
                json_object_set_new(token, "next_login_in_seconds",
                                    json_integer((json_int_t) ((ts.next_attempt_in + USEC_PER_SEC - 1) / USEC_PER_SEC)));

        *ret_status = MHD_HTTP_OK;
        return json_response(json_pack(
                "{s:s, s:I, s:{s:s, s:s}, s:o, s:{s:i, s:i, s:i, s:i}, s:{s:I, s:I, s:I, s:I, s:I}, s:{s:s, s:b, s:i}}",
                "version", PACKAGE_VERSION,
                "uptime_seconds", (json_int_t) ((now - m->started_at) / USEC_PER_SEC),
                "visier", "base_url", m->config->base_url, "username", m->config->username,
                "token", token,
                "rate_budget", "minute_remaining", (int) minute, "hour_remaining", (int) hour,
                "minute_limit", (int) m->config->rate_limit_minute, "hour_limit", (int) m->config->rate_limit_hour,
                "upstream", "calls", (json_int_t) us.calls, "retries", (json_int_t) us.retries,
                "unauthorized", (json_int_t) us.unauthorized, "throttled", (json_int_t) us.throttled,
                "failures", (json_int_t) us.failures,
                "store", "path", store_path(m->store), "ok", store_ok(m->store),
                "schema_version", store_schema_version(m->store)));
}

typedef struct QueryBuilder {
        char buf[API_QUERY_MAX];
        size_t len;
        bool overflow;
} QueryBuilder;

static enum MHD_Result query_append(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        QueryBuilder *q = cls;
        int n;

        n = snprintf(q->buf + q->len, sizeof(q->buf) - q->len, "%s%s%s%s", q->len ? "&" : "", key,
                     value ? "=" : "", value ? value : "");
        if (n < 0 || (size_t) n >= sizeof(q->buf) - q->len) {
                q->overflow = true;
                return MHD_NO;
        }
        q->len += (size_t) n;
        return MHD_YES;
}

static struct MHD_Response *api_proxy_read(Manager *m, HttpRequest *req, unsigned *ret_status) {
        char header_lines[ELEMENTSOF(forwarded_headers)][API_HEADER_MAX];
        const char *headers[ELEMENTSOF(forwarded_headers) + 1] = {};
        UpstreamResponse resp = {};
        char err[UPSTREAM_ERROR_MAX] = "", rid[48];
        const char *fields[] = { rid, NULL };
        QueryBuilder q = {};
        size_t nh = 0;
        int r;

        snprintf(rid, sizeof(rid), "REQUEST_ID=%llu", (unsigned long long) req->id);
        MHD_get_connection_values(req->connection, MHD_GET_ARGUMENT_KIND, query_append, &q);
        if (q.overflow) {
                *ret_status = MHD_HTTP_URI_TOO_LONG;
                return http_response_status("BadRequest", true, "query string longer than %d bytes", API_QUERY_MAX);
        }
        for (size_t i = 0; i < ELEMENTSOF(forwarded_headers); i++) {
                const char *v = MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, forwarded_headers[i]);
                int n;

                if (!v)
                        continue;
                n = snprintf(header_lines[nh], API_HEADER_MAX, "%s: %s", forwarded_headers[i], v);
                if (n < 0 || n >= API_HEADER_MAX) {
                        *ret_status = MHD_HTTP_BAD_REQUEST;
                        return http_response_status("BadRequest", true, "header %s is too long", forwarded_headers[i]);
                }
                headers[nh] = header_lines[nh];
                nh++;
        }

        r = upstream_call(m->upstream,
                          &(UpstreamRequest) {
                                  .method = "GET",
                                  .path = req->path,
                                  .query = q.len ? q.buf : NULL,
                                  .headers = headers,
                                  .idempotent = true,
                          },
                          &resp, err, sizeof(err));
        if (r < 0) {
                const char *code;
                unsigned status;

                switch (r) {
                case -ENOKEY:
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
                log_full(LOG_WARNING, LOG_MSGID_UPSTREAM_ERROR, fields, "GET %s failed with %u: %s", req->path, status,
                         err);
                *ret_status = status;
                struct MHD_Response *e = http_response_status(code, false, "%s", err);
                if (e && r == -EBUSY)
                        MHD_add_response_header(e, MHD_HTTP_HEADER_RETRY_AFTER, "1");
                return e;
        }

        *ret_status = (unsigned) resp.status;
        struct MHD_Response *out = http_response_take(resp.body ? TAKE_PTR(resp.body) : strdup(""), resp.body_len,
                                                      resp.content_type);
        upstream_response_done(&resp);
        return out;
}
