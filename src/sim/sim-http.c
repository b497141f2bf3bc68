/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns request handling: body collection with a hard cap, the order in which a /v1 call
 * meets the simulated gateway (count -> rate limit -> faults -> authentication, where
 * refuse_tokens turns every live token away -> route), the Visier-style answers (Status JSON
 * errors, X-RateLimit-* headers) and the unauthenticated /_sim control API. Secrets never
 * reach a log line or an answer; the only token ever sent is the one the login call just
 * issued. Logs only internal failures, once, with the path.
 *
 * DESIGN of a permission write (POST/PUT/DELETE /v1/admin/permissions, POST .../revert-to-parent,
 * PUT/DELETE .../users): after the gateway steps above it is counted (write_calls), its scope
 * (TargetTenantID, tenantCode, ProjectID; see sim-permissions.c) is checked (403, 400 or 404),
 * it is parsed and checked whole against the request schema (400, nothing applied, nothing
 * published), checked against reject_display_name (400 likewise), then it "publishes": it
 * enters the in-flight set (an overlap is counted, or answered 409 with reject_overlaps), is
 * applied to its scope's store, stays in flight for publish_ms whether or not its client is
 * still connected (the connection's thread sleeps it out), and bumps production_version unless
 * it went to a draft (ProjectID) or to non-versioned artifacts (NonVersioned: true). An
 * apply-then-drop fault closes the connection only after all of that. commitAndPublish of a
 * draft project publishes the same way, except that its changes land at the end of its time in
 * flight (after publish_ms, hold_writes and hold_commits), together with its production version: until then
 * the draft is open and unpublished.
 *
 * DESIGN of a data query (POST /v1/data/query/{aggregate,list,sql,snapshot}): after the gateway
 * steps it is counted (query_calls), refused 403 while exports_disabled is set, refused 406 when
 * the Accept header names no format we write, checked whole (400 with a message naming the
 * unknown metric, property, dimension or object, or the unsupported feature), and only then
 * answered 200: a chunked response whose body a QueryStream writes while MHD sends it, so memory
 * stays flat for a multi-gigabyte CSV. A query_abort fault is taken at that point; the reader
 * then ends the transfer with an error after about that many bytes (query_aborts_injected).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "clock.h"
#include "sim-directory.h"
#include "sim-http.h"
#include "parse.h"
#include "sim-query.h"
#include "sim-schema.h"

#define LOGIN_PATH "/v1/admin/visierSecureToken"
#define OAUTH_TOKEN_PATH "/v1/auth/oauth2/token"
#define PATH_SEGMENTS_MAX 10

struct HttpDaemon {
        struct MHD_Daemon *mhd;
};

typedef struct Request {
        char *target;                   /* the request target as sent: path and query */
        char *body;                     /* NUL-terminated; wiped before it is freed (logins carry passwords) */
        size_t size, allocated;         /* allocated counts the NUL */
        size_t max;                     /* HTTP_BODY_MAX, or HTTP_WRITE_BODY_MAX for permission writes */
        bool too_large;
} Request;

typedef enum WriteKind {
        WRITE_CREATE,
        WRITE_UPDATE,
        WRITE_DELETE,
        WRITE_REVERT,
        WRITE_ASSIGN,
        WRITE_REMOVE,
        _WRITE_KIND_MAX,
        _WRITE_KIND_INVALID = -EINVAL,
} WriteKind;

/* What each write call reads and does; one row per route. */
static const struct {
        const char *method;
        SchemaBody schema;
        PermissionsWrite op;    /* bulk calls only */
        bool tenant_code;       /* takes the tenantCode query */
        bool assign;            /* user calls only: assign (true) or remove */
} write_table[_WRITE_KIND_MAX] = {
        [WRITE_CREATE] = { "POST", SCHEMA_PERMISSIONS_LIST, PERMISSIONS_WRITE_CREATE, true, false },
        [WRITE_UPDATE] = { "PUT", SCHEMA_PERMISSIONS_LIST, PERMISSIONS_WRITE_UPDATE, true, false },
        [WRITE_DELETE] = { "DELETE", SCHEMA_PERMISSION_IDS, PERMISSIONS_WRITE_DELETE, true, false },
        [WRITE_REVERT] = { "POST", SCHEMA_PERMISSION_IDS, PERMISSIONS_WRITE_REVERT, false, false },
        [WRITE_ASSIGN] = { "PUT", SCHEMA_ASSIGN_REVOKE, _PERMISSIONS_WRITE_INVALID, false, true },
        [WRITE_REMOVE] = { "DELETE", SCHEMA_ASSIGN_REVOKE, _PERMISSIONS_WRITE_INVALID, false, false },
};

/* One answer under construction. */
typedef struct Reply {
        unsigned status;
        const char *content_type;
        char *body;                     /* owned */
        size_t body_len;
        const RateInfo *rate;           /* /v1 only */
        uint64_t retry_after;           /* 0 = no Retry-After header */
        bool has_retry_after;
        const char *allow;
} Reply;

#define _cleanup_json_ _cleanup_(json_decrefp)

/* ---- answers --------------------------------------------------------------------------- */

/* Content-Type, X-RateLimit-*, Retry-After and Allow of R onto RESP. */
static void reply_headers(struct MHD_Response *resp, const Reply *r) {
        char buf[32];

        (void) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
        if (r->rate) {
                snprintf(buf, sizeof(buf), "%" PRIu64, r->rate->limit_minute);
                (void) MHD_add_response_header(resp, "X-RateLimit-Limit-Minute", buf);
                snprintf(buf, sizeof(buf), "%" PRIu64, r->rate->remaining_minute);
                (void) MHD_add_response_header(resp, "X-RateLimit-Remaining-Minute", buf);
                snprintf(buf, sizeof(buf), "%" PRIu64, r->rate->limit_hour);
                (void) MHD_add_response_header(resp, "X-RateLimit-Limit-Hour", buf);
                snprintf(buf, sizeof(buf), "%" PRIu64, r->rate->remaining_hour);
                (void) MHD_add_response_header(resp, "X-RateLimit-Remaining-Hour", buf);
        }
        if (r->has_retry_after) {
                snprintf(buf, sizeof(buf), "%" PRIu64, r->retry_after);
                (void) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, buf);
        }
        if (r->allow)
                (void) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
}

static enum MHD_Result reply_send(struct MHD_Connection *c, Reply *r) {
        struct MHD_Response *resp;
        enum MHD_Result ret;

        resp = MHD_create_response_from_buffer(r->body_len, r->body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(r->body);
                return MHD_NO;
        }
        r->body = NULL;
        reply_headers(resp, r);
        ret = MHD_queue_response(c, r->status, resp);
        MHD_destroy_response(resp);
        return ret;
}

/* Send BODY (stolen) as compact JSON. */
static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *body, const RateInfo *rate) {
        Reply r = { .status = status, .content_type = "application/json", .rate = rate };

        r.body = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        if (!r.body)
                return MHD_NO;
        r.body_len = strlen(r.body);
        return reply_send(c, &r);
}

/* A root-cause id that depends only on the error, so equal requests get equal bytes. */
static void status_rci(const char *code, const char *message, char *buf, size_t size) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        for (const char *p = code; *p; p++)
                h = (h ^ (unsigned char) *p) * UINT64_C(0x100000001b3);
        for (const char *p = message; *p; p++)
                h = (h ^ (unsigned char) *p) * UINT64_C(0x100000001b3);
        snprintf(buf, size, "sim-%016" PRIx64, h);
}

typedef struct StatusOpts {
        const RateInfo *rate;
        bool has_retry_after;
        uint64_t retry_after;
        const char *allow;
} StatusOpts;

static enum MHD_Result reply_status(struct MHD_Connection *c, unsigned status, const char *code,
                                    const char *message, const StatusOpts *opts) {
        Reply r = { .status = status, .content_type = "application/json" };
        json_t *o;
        char rci[32];

        status_rci(code, message, rci, sizeof(rci));
        o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "code", code, "message", message, "localizedMessage", message,
                      "rci", rci, "userError", status < 500);
        if (!o)
                return MHD_NO;
        r.body = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!r.body)
                return MHD_NO;
        r.body_len = strlen(r.body);
        if (opts) {
                r.rate = opts->rate;
                r.has_retry_after = opts->has_retry_after;
                r.retry_after = opts->retry_after;
                r.allow = opts->allow;
        }
        return reply_send(c, &r);
}

static enum MHD_Result reply_error_errno(struct MHD_Connection *c, int err, const char *url, const RateInfo *rate) {
        StatusOpts o = { .rate = rate };

        switch (err) {
        case -ENOENT:
                return reply_status(c, MHD_HTTP_NOT_FOUND, "NotFound", "The requested object does not exist.", &o);
        case -EINVAL:
        case -E2BIG:
        case -ERANGE:
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", "Invalid request parameter.", &o);
        default:
                fprintf(stderr, "visier-sim: %s: internal error: %s\n", url, strerror(-err));
                return reply_status(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "InternalError", "Internal error.", &o);
        }
}

/* A method Visier defines for the path (one of ALLOWED, a list like "GET, POST") but the
 * simulator does not model: 501, as for targetProjectForTenantsList; any other method 405. */
static enum MHD_Result reply_unmodelled(struct MHD_Connection *c, const char *method, const char *allowed,
                                        const RateInfo *rate) {
        StatusOpts o = { .rate = rate, .allow = allowed };
        char msg[128];
        const char *p = allowed;
        size_t n = strlen(method);

        while (n > 0 && (p = strstr(p, method)))
                if ((p == allowed || (p - allowed >= 2 && p[-2] == ',' && p[-1] == ' ')) &&
                    (p[n] == '\0' || p[n] == ','))
                        break;
                else
                        p += n;
        if (n == 0)
                p = NULL;
        if (!p)
                return reply_status(c, MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed",
                                    "The HTTP method is not allowed for this resource.", &o);
        snprintf(msg, sizeof(msg), "visier-sim does not model %s of this resource.", method);
        return reply_status(c, MHD_HTTP_NOT_IMPLEMENTED, "NotImplemented", msg, &o);
}

static enum MHD_Result reply_method_not_allowed(struct MHD_Connection *c, const char *allow, const RateInfo *rate) {
        StatusOpts o = { .rate = rate, .allow = allow };
        return reply_status(c, MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed",
                            "The HTTP method is not allowed for this resource.", &o);
}

/* ---- query strings --------------------------------------------------------------------- */

typedef struct QueryList {
        const char *name;
        ModelStrv *v;
        char *bufs[MODEL_FILTER_MAX];
        size_t n_bufs;
        int error;
} QueryList;

static void query_list_done(QueryList *q) {
        for (size_t i = 0; i < q->n_bufs; i++)
                free(q->bufs[i]);
        q->n_bufs = 0;
}

static enum MHD_Result query_list_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        QueryList *q = cls;
        char *buf = NULL;
        int n;

        if (!key || !streq(key, q->name) || !value)
                return MHD_YES;
        if (q->n_bufs >= MODEL_FILTER_MAX) {
                q->error = -E2BIG;
                return MHD_NO;
        }
        n = parse_comma_list(value, &buf, q->v->items + q->v->n, MODEL_FILTER_MAX - q->v->n);
        if (n < 0) {
                q->error = n;
                return MHD_NO;
        }
        q->bufs[q->n_bufs++] = buf;
        q->v->n += (size_t) n;
        return MHD_YES;
}

/* Collect every NAME=a,b argument (repeated or comma-separated) into V; free with query_list_done. */
static int query_list(struct MHD_Connection *c, const char *name, ModelStrv *v, QueryList *q) {
        *q = (QueryList) { .name = name, .v = v };
        v->n = 0;
        (void) MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_list_cb, q);
        return q->error;
}

static int query_bool(struct MHD_Connection *c, const char *name, bool *ret) {
        const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);

        *ret = false;
        if (!v || !*v)
                return 0;
        return parse_bool(v, ret);
}

static int query_int(struct MHD_Connection *c, const char *name, int64_t def, int64_t min, int64_t max,
                     int64_t *ret) {
        const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
        long long n;
        char *end = NULL;

        *ret = def;
        if (!v || !*v)
                return 0;
        errno = 0;
        n = strtoll(v, &end, 10);
        if (errno != 0 || !end || *end != '\0' || n < min || n > max)
                return -EINVAL;
        *ret = n;
        return 0;
}

/* ---- the /v1 API ----------------------------------------------------------------------- */

static size_t path_split(const char *url, char *buf, size_t size, const char **seg, size_t max) {
        size_t n = 0;
        char *p, *save = NULL;

        if (strlen(url) >= size)
                return SIZE_MAX;
        memcpy(buf, url, strlen(url) + 1);
        for (p = strtok_r(buf, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
                if (n >= max)
                        return SIZE_MAX;
                seg[n++] = p;
        }
        return n;
}

static bool seg_is(const char **seg, size_t n, size_t len, ...) {
        va_list ap;
        bool ok = n == len;

        va_start(ap, len);
        for (size_t i = 0; ok && i < len; i++) {
                const char *want = va_arg(ap, const char *);
                if (want && !streq(seg[i], want))
                        ok = false;
        }
        va_end(ap);
        return ok;
}

/* An optional header's value; NULL when absent or empty. */
static const char *header_value(struct MHD_Connection *c, const char *name) {
        const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
        return v && *v ? v : NULL;
}

/* The index of the first permissions[] item whose displayName is NAME, or -ENOENT. */
static int find_display_name(json_t *items, const char *name) {
        size_t i;
        json_t *item;

        json_array_foreach(items, i, item) {
                const char *d = json_string_value(json_object_get(item, "displayName"));
                if (d && streq(d, name))
                        return (int) i;
        }
        return -ENOENT;
}

/* What the call names about where it acts (borrowed from C). TENANT_CODE: the route takes
 * the tenantCode query. */
static void request_scope(struct MHD_Connection *c, bool tenant_code, PermissionsScope *ret) {
        const char *code = tenant_code ? MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tenantCode") : NULL;

        *ret = (PermissionsScope) {
                .target_tenant = header_value(c, "TargetTenantID"),
                .tenant_code = code && *code ? code : NULL,
                .project_id = header_value(c, "ProjectID"),
        };
}

/* A scope refused by permissions_scope_check() (ERR set) or gone since (-ESTALE). */
static enum MHD_Result reply_scope_error(struct MHD_Connection *c, int r, const char *err, const char *url,
                                         const RateInfo *rate) {
        StatusOpts o = { .rate = rate };

        switch (r) {
        case -EPERM:
                return reply_status(c, MHD_HTTP_FORBIDDEN, "Forbidden", err, &o);
        case -EINVAL:
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, &o);
        case -ENOENT:
                return reply_status(c, MHD_HTTP_NOT_FOUND, "NotFound", err, &o);
        case -ESTALE:
                return reply_status(c, MHD_HTTP_NOT_FOUND, "NotFound",
                                    "The draft project was published or deleted while the call ran.", &o);
        default:
                return reply_error_errno(c, r, url, rate);
        }
}

/* The request's JSON body (duplicate members refused), or NULL with ERR saying where it is not
 * valid JSON. */
static json_t *load_body(const Request *req, char *err, size_t err_size) {
        json_error_t jerr;
        json_t *in = json_loadb(req->body, req->size, JSON_REJECT_DUPLICATES, &jerr);

        if (!in)
                snprintf(err, err_size, "The request body is not valid JSON (line %d, column %d).", jerr.line,
                         jerr.column);
        return in;
}

/* Does an assign/remove body name tenants and projects in its targetProjectForTenantsList? */
static bool names_target_projects(json_t *in) {
        json_t *l = json_object_get(json_object_get(in, "targetProjectForTenantsList"), "targetProjectForTenants");
        return json_array_size(l) > 0;
}

/* The scope of a users or user-groups call, resolved: the tenant acted in (TargetTenantID, and
 * tenantCode where the route takes it) and the open draft project (ProjectID) or production. */
static int users_scope(SimServer *s, struct MHD_Connection *c, bool tenant_code, PermissionsScope *ps, UsersScope *us,
                       char *err, size_t err_size) {
        size_t tenant;
        int r;

        request_scope(c, tenant_code, ps);
        r = permissions_scope_resolve(s->permissions, ps, &tenant, err, err_size);
        if (r < 0)
                return r;
        *us = (UsersScope) { .tenant = tenant, .project = ps->project_id };
        return 0;
}

/* After a write that succeeded in SCOPE: a production version when it published (production,
 * versioned), else a commit of its draft project. WHAT names the call. */
static void record_write(SimServer *s, const PermissionsScope *scope, size_t tenant, bool non_versioned,
                         const char *what) {
        if (scope->project_id)
                (void) versions_commit(s->versions, tenant, scope->project_id, what);
        else if (!non_versioned)
                (void) versions_publish(s->versions, tenant, NULL, what, "Published by an API call.");
}

/* Answer an authenticated permission write; see DESIGN at the top. */
static enum MHD_Result v1_write(SimServer *s, struct MHD_Connection *c, const char *url, WriteKind kind,
                                const Request *req, const RateInfo *rate) {
        StatusOpts o = { .rate = rate };
        _cleanup_json_ json_t *in = NULL;
        json_t *out = NULL, *items;
        PermissionsScope scope;
        bool non_versioned = false, drop;
        char err[SCHEMA_ERROR_MAX > PERMISSIONS_MESSAGE_MAX ? SCHEMA_ERROR_MAX : PERMISSIONS_MESSAGE_MAX];
        size_t tenant;
        const char *nv;
        WriteFaults wf;
        int n, r;

        counters_write_call(s->counters, write_table[kind].method, url);
        nv = header_value(c, "NonVersioned");
        if (nv && parse_bool(nv, &non_versioned) < 0)
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                    "The NonVersioned header must be true or false.", &o);
        /* The tenant and draft project the call acts in must exist and be within reach. */
        request_scope(c, write_table[kind].tenant_code, &scope);
        r = permissions_scope_resolve(s->permissions, &scope, &tenant, err, sizeof(err));
        if (r < 0)
                return reply_scope_error(c, r, err, url, rate);

        /* Whole-call validation: on any failure nothing is applied or published. */
        in = load_body(req, err, sizeof(err));
        if (!in)
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, &o);
        n = schema_check(write_table[kind].schema, in, err, sizeof(err));
        if (n < 0)
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, &o);
        items = json_object_get(in, schema_list_name(write_table[kind].schema));
        if (write_table[kind].schema == SCHEMA_ASSIGN_REVOKE && names_target_projects(in))
                return reply_status(c, MHD_HTTP_NOT_IMPLEMENTED, "NotImplemented",
                                    "visier-sim does not model targetProjectForTenantsList; name the tenant and the "
                                    "draft project with the TargetTenantID and ProjectID headers.", &o);

        faults_write_settings(s->faults, &wf);
        if (write_table[kind].schema == SCHEMA_PERMISSIONS_LIST && wf.reject_display_name[0]) {
                r = find_display_name(items, wf.reject_display_name);
                if (r >= 0) {
                        snprintf(err, sizeof(err), "permissions[%d].displayName is rejected by the simulator.", r);
                        return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, &o);
                }
        }
        counters_add(s->counters, COUNTER_WRITE_ITEMS, (uint64_t) n);

        /* Publish: in flight from before the apply until production_version moves. */
        if (counters_write_begin(s->counters, wf.reject_overlaps) == -EBUSY)
                return reply_status(c, MHD_HTTP_CONFLICT, "Conflict",
                                    "Another change is being published to production. Retry later.", &o);
        drop = faults_take_apply_then_drop(s->faults);
        if (kind == WRITE_ASSIGN || kind == WRITE_REMOVE)
                r = permissions_assign(s->permissions, &scope, items, write_table[kind].assign, &out);
        else
                r = permissions_write(s->permissions, &scope, write_table[kind].op, items, &out);
        if (wf.publish_ms > 0)
                clock_sleep((usec_t) wf.publish_ms * USEC_PER_MSEC);
        (void) faults_hold_writes(s->faults);
        counters_write_end(s->counters, r >= 0 && !scope.project_id && !non_versioned);

        if (r < 0)
                return reply_scope_error(c, r, err, url, rate);
        snprintf(err, sizeof(err), "%s %s", write_table[kind].method, url);
        record_write(s, &scope, tenant, non_versioned, err);
        if (drop) {
                json_decref(out);
                counters_inc(s->counters, COUNTER_APPLY_THEN_DROPS_INJECTED);
                return MHD_NO;
        }
        return reply_json(c, MHD_HTTP_OK, out, rate);
}

/* ---- data queries ---------------------------------------------------------------------- */

typedef struct QueryReader {
        QueryStream *stream;
        Counters *counters;
        uint64_t abort_after;           /* 0 = answer in full */
} QueryReader;

static ssize_t query_reader(void *cls, uint64_t pos, char *buf, size_t max) {
        QueryReader *q = cls;
        ssize_t n;

        if (q->abort_after > 0) {
                if (pos >= q->abort_after) {
                        counters_inc(q->counters, COUNTER_QUERY_ABORTS_INJECTED);
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                }
                if (max > q->abort_after - pos)
                        max = (size_t) (q->abort_after - pos);
        }
        n = query_stream_read(q->stream, buf, max);
        if (n < 0) {
                fprintf(stderr, "visier-sim: data query: answer cut: %s\n", strerror((int) -n));
                return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void query_reader_free(void *cls) {
        QueryReader *q = cls;

        if (!q)
                return;
        query_stream_free(q->stream);
        free(q);
}

/* Answer an authenticated data query; see DESIGN at the top. */
static enum MHD_Result v1_query(SimServer *s, struct MHD_Connection *c, const char *url, QueryKind kind,
                                const Request *req, const RateInfo *rate) {
        StatusOpts o = { .rate = rate };
        Reply reply = { .status = MHD_HTTP_OK, .rate = rate };
        char err[QUERY_ERROR_MAX] = "";
        struct MHD_Response *resp;
        QueryReader *reader;
        QueryStream *stream = NULL;
        QueryFaults qf;
        QueryFormat format;
        enum MHD_Result ret;
        int r;

        counters_inc(s->counters, COUNTER_QUERY_CALLS);
        faults_query_settings(s->faults, false, &qf);
        if (qf.exports_disabled) {
                counters_inc(s->counters, COUNTER_QUERY_EXPORTS_REFUSED);
                return reply_status(c, MHD_HTTP_FORBIDDEN, "Forbidden",
                                    "Data queries and exports are not enabled for this tenant, or the API user does "
                                    "not have the Consume Data Exports capability.", &o);
        }
        format = query_format_from_accept(header_value(c, MHD_HTTP_HEADER_ACCEPT));
        if (format < 0)
                return reply_status(c, MHD_HTTP_NOT_ACCEPTABLE, "NotAcceptable",
                                    "The Accept header must allow application/json, application/jsonlines or text/csv.",
                                    &o);

        r = query_stream_new(kind, format, req->body, req->size, qf.rows, err, sizeof(err), &stream);
        if (r == -EINVAL && err[0])
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, &o);
        if (r < 0)
                return reply_error_errno(c, r, url, rate);

        reader = calloc(1, sizeof(*reader));
        if (!reader) {
                query_stream_free(stream);
                return MHD_NO;
        }
        faults_query_settings(s->faults, true, &qf);
        *reader = (QueryReader) { .stream = stream, .counters = s->counters, .abort_after = qf.abort_after_bytes };
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, QUERY_CHUNK, query_reader, reader,
                                                 query_reader_free);
        if (!resp) {
                query_reader_free(reader);
                return MHD_NO;
        }
        reply.content_type = query_format_to_content_type(format);
        reply_headers(resp, &reply);
        ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ret;
}

/* ---- draft projects -------------------------------------------------------------------- */

/*
 * /v1/admin/projects (ID NULL) and /v1/admin/projects/{id}, in the tenant the TargetTenantID
 * header names. commitAndPublish publishes like a permission write (in flight for publish_ms,
 * an overlap counted or refused, production_version raised) but is not a write_call.
 */
static enum MHD_Result v1_projects(SimServer *s, struct MHD_Connection *c, const char *url, const char *method,
                                   const char *id, const Request *req, const RateInfo *rate) {
        bool get = streq(method, MHD_HTTP_METHOD_GET), post = streq(method, MHD_HTTP_METHOD_POST);
        bool del = streq(method, MHD_HTTP_METHOD_DELETE);
        const char *login = header_value(c, "TargetTenantID");
        /* The tenant logged in to; an unknown one is refused by the projects_*() calls. */
        size_t tenant = login && directory_tenant_find(login) >= 0 ? (size_t) directory_tenant_find(login) : 0;
        StatusOpts o = { .rate = rate };
        char err[PERMISSIONS_MESSAGE_MAX] = "", name[256], description[512], canonical[64];
        _cleanup_json_ json_t *in = NULL;
        json_t *body = NULL;
        int r;

        if (id ? !get && !post && !del : !get && !post)
                return reply_method_not_allowed(c, id ? "GET, POST, DELETE" : "GET, POST", rate);
        if (post) {
                in = load_body(req, err, sizeof(err));
                if (!in)
                        return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, &o);
        }

        if (!id && get) {
                ModelStrv with = {};
                QueryList ql;
                int64_t limit;

                r = query_list(c, "with", &with, &ql);
                if (r >= 0)
                        r = query_int(c, "limit", 100, 1, 1000, &limit);
                if (r >= 0)
                        r = projects_list(s->permissions, login, &with, limit, &body, err, sizeof(err));
                query_list_done(&ql);
        } else if (!id) {
                r = projects_create(s->permissions, login, in, &body, err, sizeof(err));
                if (r >= 0) {
                        const char *pid = json_string_value(json_object_get(body, "id"));

                        /* Both have room: projects_create() allows as many open projects. */
                        r = users_project_opened(s->users, tenant, pid);
                        if (r >= 0)
                                r = versions_project_opened(s->versions, tenant, pid);
                }
        }
        else if (get)
                r = projects_get(s->permissions, login, id, &body);
        else if (del)
                r = projects_delete(s->permissions, login, id, &body);
        else {
                const char *op = json_string_value(json_object_get(in, "operation"));
                WriteFaults wf;

                r = projects_get(s->permissions, login, id, &body);
                /* The project as Visier spells it, whatever the case of the path. */
                snprintf(canonical, sizeof(canonical), "%s", strempty(json_string_value(json_object_get(body, "id"))));
                snprintf(name, sizeof(name), "%s", strempty(json_string_value(json_object_get(body, "name"))));
                snprintf(description, sizeof(description), "%s",
                         strempty(json_string_value(json_object_get(body, "description"))));
                json_decref(TAKE_PTR(body));
                if (r >= 0 && (!op || !streq(op, "commitAndPublish")))
                        return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                            "operation must be commitAndPublish", &o);
                if (r >= 0) {
                        faults_write_settings(s->faults, &wf);
                        if (counters_write_begin(s->counters, wf.reject_overlaps) == -EBUSY)
                                return reply_status(c, MHD_HTTP_CONFLICT, "Conflict",
                                                    "Another change is being published to production. Retry later.",
                                                    &o);
                        if (faults_refuse_commits(s->faults)) {
                                /* As Visier refuses a commit that conflicts: nothing published, the
                                 * draft left open. */
                                counters_write_end(s->counters, false);
                                return reply_status(c, MHD_HTTP_CONFLICT, "Conflict",
                                                    "The project cannot be published: its changes conflict with "
                                                    "production.",
                                                    &o);
                        }
                        /* A publish lands at the end of its time in flight, all at once: until
                         * then the draft is open and no version lists it. */
                        counters_inc(s->counters, COUNTER_COMMIT_CALLS);
                        if (wf.publish_ms > 0)
                                clock_sleep((usec_t) wf.publish_ms * USEC_PER_MSEC);
                        (void) faults_hold_writes(s->faults);
                        (void) faults_hold_commits(s->faults);
                        r = projects_operate(s->permissions, login, id, in, &body, err, sizeof(err));
                        if (r >= 0) {
                                users_project_closed(s->users, tenant, canonical, true);
                                versions_project_closed(s->versions, tenant, canonical);
                                (void) versions_publish(s->versions, tenant, canonical, name, description);
                        }
                        counters_write_end(s->counters, r >= 0);
                        if (r >= 0 && faults_take_apply_then_drop(s->faults)) {
                                json_decref(body);
                                counters_inc(s->counters, COUNTER_APPLY_THEN_DROPS_INJECTED);
                                return MHD_NO;
                        }
                }
        }
        if (del && r >= 0) {
                const char *pid = json_string_value(json_object_get(body, "id"));

                users_project_closed(s->users, tenant, pid, false);
                versions_project_closed(s->versions, tenant, pid);
        }

        if (r == -EPERM && !err[0])
                snprintf(err, sizeof(err), "TargetTenantID %.64s is not a tenant you can access.", strempty(login));
        if (r == -EPERM || (r == -EINVAL && err[0]))
                return reply_scope_error(c, r, err, url, rate);
        if (r == -ENOSPC)
                return reply_status(c, MHD_HTTP_CONFLICT, "Conflict", err, &o);
        if (r == -ENOENT)
                return reply_status(c, MHD_HTTP_NOT_FOUND, "NotFound", "The draft project does not exist or is not open.",
                                    &o);
        if (r < 0)
                return reply_error_errno(c, r, url, rate);
        return reply_json(c, MHD_HTTP_OK, body, rate);
}

/*
 * PUT|DELETE /v1/admin/user-groups/users (users to user groups) and
 * /v1/admin/user-groups/permissions (permissions to user groups): publishing writes like a
 * permission write (in flight for publish_ms, an overlap counted or refused, a production
 * version unless in a draft project or NonVersioned, or when nothing changed). The body is
 * checked against Visier's request DTO as a whole first; then each change is applied or failed
 * on its own (an unknown group, user or permission fails that change and is named in the
 * answer's message).
 */
static enum MHD_Result v1_user_group_assign(SimServer *s, struct MHD_Connection *c, const char *url,
                                            const char *method, const Request *req, const RateInfo *rate,
                                            bool permissions) {
        bool assign = streq(method, MHD_HTTP_METHOD_PUT), non_versioned = false, changed = false;
        char err[SCHEMA_ERROR_MAX > PERMISSIONS_MESSAGE_MAX ? SCHEMA_ERROR_MAX : PERMISSIONS_MESSAGE_MAX];
        StatusOpts o = { .rate = rate };
        _cleanup_json_ json_t *in = NULL, *known = NULL;
        json_t *out = NULL, *items;
        PermissionsScope ps;
        UsersScope us;
        WriteFaults wf;
        const char *nv;
        int r;

        if (!assign && !streq(method, MHD_HTTP_METHOD_DELETE))
                return reply_method_not_allowed(c, "PUT, DELETE", rate);
        counters_write_call(s->counters, method, url);
        nv = permissions ? NULL : header_value(c, "NonVersioned");
        if (nv && parse_bool(nv, &non_versioned) < 0)
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                    "The NonVersioned header must be true or false.", &o);
        r = users_scope(s, c, false, &ps, &us, err, sizeof(err));
        if (r < 0)
                return reply_scope_error(c, r, err, url, rate);
        in = load_body(req, err, sizeof(err));
        if (!in)
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, &o);
        r = schema_check(permissions ? SCHEMA_PERMISSIONS_TO_GROUPS : SCHEMA_USERS_TO_GROUPS, in, err, sizeof(err));
        if (r < 0)
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, &o);
        counters_add(s->counters, COUNTER_WRITE_ITEMS, (uint64_t) r);
        items = json_object_get(in, "userGroups");
        if (!permissions && names_target_projects(in))
                return reply_status(c, MHD_HTTP_NOT_IMPLEMENTED, "NotImplemented",
                                    "visier-sim does not model targetProjectForTenantsList; name the tenant and the "
                                    "draft project with the TargetTenantID and ProjectID headers.", &o);
        if (permissions) {
                r = permissions_names(s->permissions, &ps, &known);
                if (r < 0)
                        return reply_scope_error(c, r, err, url, rate);
        }

        faults_write_settings(s->faults, &wf);
        if (counters_write_begin(s->counters, wf.reject_overlaps) == -EBUSY)
                return reply_status(c, MHD_HTTP_CONFLICT, "Conflict",
                                    "Another change is being published to production. Retry later.", &o);
        if (permissions)
                r = users_assign_permissions(s->users, &us, items, assign, known, &out, &changed);
        else
                r = users_assign_users(s->users, &us, items, assign, &out, &changed);
        if (wf.publish_ms > 0)
                clock_sleep((usec_t) wf.publish_ms * USEC_PER_MSEC);
        (void) faults_hold_writes(s->faults);
        /* A call that changed nothing (every change failed, or all were as asked) publishes
         * nothing. */
        counters_write_end(s->counters, r >= 0 && changed && !ps.project_id && !non_versioned);
        if (r < 0)
                return reply_scope_error(c, r, err, url, rate);
        snprintf(err, sizeof(err), "%s %s", method, url);
        if (changed)
                record_write(s, &ps, us.tenant, non_versioned, err);
        return reply_json(c, MHD_HTTP_OK, out, rate);
}

/* A correlation ID as Visier defines them: 3 to 64 of A-Z a-z 0-9 _ -. */
static bool correlation_id_ok(const char *s) {
        size_t n = strlen(s);

        if (n < PERMISSIONS_CORRELATION_ID_MIN || n > PERMISSIONS_CORRELATION_ID_MAX)
                return false;
        return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

/* Each {permissionId} in the permissions arrays of LIST's user groups gets its displayName. */
static int fill_permission_names(SimServer *s, const PermissionsScope *ps, json_t *groups) {
        _cleanup_json_ json_t *names = NULL;
        size_t i, k;
        json_t *g, *p;
        int r;

        r = permissions_names(s->permissions, ps, &names);
        if (r < 0)
                return r;
        json_array_foreach(groups, i, g)
                json_array_foreach(json_object_get(g, "permissions"), k, p) {
                        json_t *name = json_object_get(names, json_string_value(json_object_get(p, "permissionId")));

                        if (name && json_object_set(p, "displayName", name) < 0)
                                return -ENOMEM;
                }
        return 0;
}

/* GET /v1/admin/users and /v1/admin/users/{id}. */
static enum MHD_Result v1_users(SimServer *s, struct MHD_Connection *c, const char *url, const char *id,
                                const RateInfo *rate) {
        bool profiles, perms, groups;
        char err[PERMISSIONS_MESSAGE_MAX];
        json_t *body = NULL, *list, *user;
        int64_t start = 0, limit = 100;
        PermissionsScope ps;
        UsersScope us;
        size_t i;
        int r;

        r = users_scope(s, c, true, &ps, &us, err, sizeof(err));
        if (r < 0)
                return reply_scope_error(c, r, err, url, rate);
        r = query_bool(c, "assignedProfiles", &profiles);
        if (r >= 0)
                r = query_bool(c, "assignedPermissions", &perms);
        if (r >= 0)
                r = query_bool(c, "assignedUserGroups", &groups);
        if (r >= 0 && !id)
                r = query_int(c, "start", 0, 0, INT32_MAX, &start);
        if (r >= 0 && !id)
                r = query_int(c, "limit", 100, 0, USERS_LIMIT_MAX, &limit);
        if (r >= 0)
                r = id ? users_get(s->users, &us, id, groups, profiles, &body)
                       : users_list(s->users, &us, start, limit, groups, profiles, &body);
        list = id ? NULL : json_object_get(body, "users");
        /* Each user's permissions, from the permissions' own assignments. */
        for (i = 0; r >= 0 && perms && i < (id ? 1 : json_array_size(list)); i++) {
                json_t *assigned = NULL;

                user = id ? body : json_array_get(list, i);
                r = permissions_user_assigned(s->permissions, &ps, json_string_value(json_object_get(user, "userId")),
                                              &assigned);
                if (r >= 0 && json_object_set_new(user, "permissions", json_pack("{s:o}", "assignedPermissions",
                                                                                assigned)) < 0)
                        r = -ENOMEM;
        }
        if (r < 0) {
                json_decref(body);
                return r == -ESTALE ? reply_scope_error(c, r, err, url, rate) : reply_error_errno(c, r, url, rate);
        }
        return reply_json(c, MHD_HTTP_OK, body, rate);
}

/* GET /v1/admin/user-groups, /v2/admin/user-groups[/{id}], /v1/admin/user-groups/{id}/users. */
static enum MHD_Result v1_user_groups(SimServer *s, struct MHD_Connection *c, const char *url, bool v2,
                                      const char *id, bool users_of, const RateInfo *rate) {
        char err[PERMISSIONS_MESSAGE_MAX];
        bool with_permissions = false, with_users = false;
        int64_t start = 0, limit = 100;
        ModelStrv with = {}, cids = {};
        QueryList ql = { .n_bufs = 0 }, ql2 = { .n_bufs = 0 };
        const char *tenant_filter;
        json_t *body = NULL;
        PermissionsScope ps;
        UsersScope us;
        int r;

        r = users_scope(s, c, !v2 && !id, &ps, &us, err, sizeof(err));
        if (r < 0)
                return reply_scope_error(c, r, err, url, rate);
        if (!(v2 && id)) {
                r = query_int(c, "start", 0, 0, INT32_MAX, &start);
                if (r >= 0)
                        r = query_int(c, "limit", 100, 0, users_of ? 100 : USERS_LIMIT_MAX, &limit);
        }
        if (r >= 0 && v2)
                r = query_list(c, "with", &with, &ql);
        if (r >= 0 && with.n > 1) /* one value of the enum, not a list */
                r = -EINVAL;
        /* One v2 group without "with" is answered in detail, a list in brief. */
        if (r >= 0 && v2 && id && with.n == 0)
                with_permissions = with_users = true;
        for (size_t i = 0; r >= 0 && i < with.n; i++) {
                if (streq(with.items[i], "permissions") || streq(with.items[i], "details"))
                        with_permissions = true;
                if (streq(with.items[i], "users") || streq(with.items[i], "details"))
                        with_users = true;
                if (!streq(with.items[i], "permissions") && !streq(with.items[i], "users") &&
                    !streq(with.items[i], "details"))
                        r = -EINVAL;
        }
        if (r >= 0 && v2 && !id)
                r = query_list(c, "correlationIds", &cids, &ql2);
        for (size_t i = 0; r >= 0 && i < cids.n; i++)
                if (!correlation_id_ok(cids.items[i]))
                        r = -EINVAL;
        if (r >= 0 && users_of) {
                tenant_filter = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tenantFilter");
                r = users_group_users(s->users, &us, id, start, limit, &body);
                /* tenantFilter: the group's users of that tenant only, which are all or none. */
                if (r >= 0 && tenant_filter && *tenant_filter &&
                    !streq(tenant_filter, directory_tenant_code(us.tenant)))
                        json_array_clear(json_object_get(body, "tenants"));
        } else if (r >= 0 && v2)
                /* No user group carries a correlation ID here (the simulator creates none), so a
                 * correlationIds filter matches none. */
                r = users_groups_v2(s->users, &us, id, with_permissions, with_users,
                                    MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "displayNameFilter"), start,
                                    cids.n > 0 ? 0 : limit, &body);
        else if (r >= 0) {
                r = users_groups_v1(s->users, &us, start, limit, &body);
                if (r >= 0)
                        r = fill_permission_names(s, &ps, json_object_get(body, "userGroups"));
        }
        query_list_done(&ql);
        query_list_done(&ql2);
        if (r < 0) {
                json_decref(body);
                return r == -ESTALE ? reply_scope_error(c, r, err, url, rate) : reply_error_errno(c, r, url, rate);
        }
        return reply_json(c, MHD_HTTP_OK, body, rate);
}

/* GET /v1/admin/production-versions and /v1/admin/projects/{id}/commits (of an open project of
 * the tenant logged in to). */
static enum MHD_Result v1_versions(SimServer *s, struct MHD_Connection *c, const char *url, const char *project,
                                   const RateInfo *rate) {
        const char *login = header_value(c, "TargetTenantID");
        int tenant = login ? directory_tenant_find(login) : 0;
        StatusOpts o = { .rate = rate };
        json_t *body = NULL;
        int64_t start, limit;
        char err[128];
        int r;

        if (tenant < 0) {
                snprintf(err, sizeof(err), "TargetTenantID %.*s is not a tenant you can access.", utf8_prefix(login, 64),
                         login);
                return reply_status(c, MHD_HTTP_FORBIDDEN, "Forbidden", err, &o);
        }
        r = query_int(c, "start", 0, 0, INT32_MAX, &start);
        if (r >= 0)
                r = query_int(c, "limit", VERSIONS_LIMIT_DEFAULT, 0, INT32_MAX, &limit);
        if (r >= 0 && project) {
                r = projects_get(s->permissions, login, project, &body);
                json_decref(TAKE_PTR(body));
                if (r == -ENOENT)
                        return reply_status(c, MHD_HTTP_NOT_FOUND, "NotFound",
                                            "The draft project does not exist or is not open.", &o);
                if (r >= 0)
                        r = versions_commits(s->versions, (size_t) tenant, project, start, limit, &body);
        } else if (r >= 0)
                r = versions_list(s->versions, (size_t) tenant, start, limit, &body);
        if (r < 0)
                return reply_error_errno(c, r, url, rate);
        return reply_json(c, MHD_HTTP_OK, body, rate);
}

/* Answer an authenticated /v1 call. */
static enum MHD_Result v1_route(SimServer *s, struct MHD_Connection *c, const char *url, const char *method,
                                const Request *req, const RateInfo *rate) {
        const char *seg[PATH_SEGMENTS_MAX];
        char buf[1024];
        json_t *body = NULL;
        ModelStrv ids = {};
        QueryList ql = { .n_bufs = 0 };
        bool get = streq(method, MHD_HTTP_METHOD_GET), partial = false, b1 = false, b2 = false;
        bool post = streq(method, MHD_HTTP_METHOD_POST), put = streq(method, MHD_HTTP_METHOD_PUT);
        bool del = streq(method, MHD_HTTP_METHOD_DELETE);
        char err[PERMISSIONS_MESSAGE_MAX];
        PermissionsScope scope;
        size_t n;
        int r;

        n = path_split(url, buf, sizeof(buf), seg, ELEMENTSOF(seg));
        if (n == SIZE_MAX)
                return reply_error_errno(c, -ENOENT, url, rate);

#define REQUIRE_GET                                                        \
        if (!get)                                                          \
                return reply_method_not_allowed(c, "GET", rate)
/* Visier defines the methods in ALLOWED here; the simulator serves only GET of them. */
#define REQUIRE_GET_OR_UNMODELLED(allowed)                                 \
        if (!get)                                                          \
                return reply_unmodelled(c, method, allowed, rate)

        if (seg_is(seg, n, 3, "v1", "admin", "capabilities")) {
                REQUIRE_GET;
                r = model_capabilities(s->model, &body);
        } else if (seg_is(seg, n, 4, "v1", "admin", "capabilities", NULL)) {
                REQUIRE_GET;
                r = model_capability(s->model, seg[3], &body);
        } else if (seg_is(seg, n, 3, "v1", "admin", "content-packages")) {
                REQUIRE_GET;
                r = model_content_packages(s->model,
                                           MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "searchString"),
                                           &body);
        } else if (seg_is(seg, n, 4, "v1", "admin", "content-packages", NULL)) {
                REQUIRE_GET;
                r = query_list(c, "with", &ids, &ql);
                if (r >= 0) {
                        for (size_t i = 0; i < ids.n; i++)
                                if (streq(ids.items[i], "details"))
                                        b1 = true;
                        r = model_content_package(s->model, seg[3], b1, &body);
                }
        } else if (seg_is(seg, n, 3, "v1", "admin", "data-security-objects")) {
                REQUIRE_GET;
                r = query_bool(c, "includeDetails", &b1);
                if (r >= 0)
                        r = query_list(c, "id", &ids, &ql);
                if (r >= 0)
                        r = model_data_security_objects(s->model, &ids, b1, &body);
        } else if (seg_is(seg, n, 3, "v1", "admin", "permissions")) {
                if (post || put || del)
                        return v1_write(s, c, url, post ? WRITE_CREATE : put ? WRITE_UPDATE : WRITE_DELETE, req, rate);
                if (!get)
                        return reply_method_not_allowed(c, "GET, POST, PUT, DELETE", rate);
                request_scope(c, true, &scope);
                r = permissions_scope_check(s->permissions, &scope, err, sizeof(err));
                if (r < 0)
                        return reply_scope_error(c, r, err, url, rate);
                r = query_bool(c, "includeDetails", &b1);
                if (r >= 0)
                        r = query_bool(c, "includeDetailsWithStatus", &b2);
                if (r >= 0)
                        r = query_list(c, "correlationIds", &ids, &ql);
                if (r >= 0)
                        r = permissions_list(s->permissions, &scope, b1, b2, &ids, &body);
        } else if (seg_is(seg, n, 4, "v1", "admin", "permissions", "revert-to-parent")) {
                if (!post)
                        return reply_method_not_allowed(c, "POST", rate);
                return v1_write(s, c, url, WRITE_REVERT, req, rate);
        } else if (seg_is(seg, n, 4, "v1", "admin", "permissions", "users")) {
                if (!put && !del)
                        return reply_method_not_allowed(c, "PUT, DELETE", rate);
                return v1_write(s, c, url, put ? WRITE_ASSIGN : WRITE_REMOVE, req, rate);
        } else if (seg_is(seg, n, 4, "v1", "admin", "permissions", NULL)) {
                REQUIRE_GET;
                request_scope(c, true, &scope);
                r = permissions_scope_check(s->permissions, &scope, err, sizeof(err));
                if (r < 0)
                        return reply_scope_error(c, r, err, url, rate);
                r = query_bool(c, "includeDetailsWithStatus", &b2);
                if (r >= 0)
                        r = permissions_get(s->permissions, &scope, seg[3], b2, &body);
        } else if (seg_is(seg, n, 5, "v1", "admin", "permissions", NULL, "users")) {
                int64_t start, limit;

                REQUIRE_GET;
                request_scope(c, false, &scope);
                r = permissions_scope_check(s->permissions, &scope, err, sizeof(err));
                if (r < 0)
                        return reply_scope_error(c, r, err, url, rate);
                r = query_bool(c, "includeUserGroups", &b1);
                if (r >= 0)
                        r = query_int(c, "start", 0, 0, INT32_MAX, &start);
                if (r >= 0)
                        r = query_int(c, "limit", PERMISSIONS_USERS_LIMIT_MAX, 0, PERMISSIONS_USERS_LIMIT_MAX, &limit);
                if (r >= 0)
                        r = permissions_users(s->permissions, &scope, seg[3], b1,
                                              MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tenantFilter"),
                                              start, limit, &body);
        } else if (seg_is(seg, n, 4, "v1", "admin", "user-groups", "users") ||
                   seg_is(seg, n, 4, "v1", "admin", "user-groups", "permissions")) {
                return v1_user_group_assign(s, c, url, method, req, rate, streq(seg[3], "permissions"));
        } else if (seg_is(seg, n, 3, "v1", "admin", "user-groups")) {
                REQUIRE_GET;
                return v1_user_groups(s, c, url, false, NULL, false, rate);
        } else if (seg_is(seg, n, 5, "v1", "admin", "user-groups", NULL, "users")) {
                REQUIRE_GET;
                return v1_user_groups(s, c, url, false, seg[3], true, rate);
        } else if (seg_is(seg, n, 3, "v2", "admin", "user-groups")) {
                REQUIRE_GET_OR_UNMODELLED("GET, POST, PUT, PATCH, DELETE");
                return v1_user_groups(s, c, url, true, NULL, false, rate);
        } else if (seg_is(seg, n, 4, "v2", "admin", "user-groups", NULL)) {
                REQUIRE_GET_OR_UNMODELLED("GET, DELETE");
                return v1_user_groups(s, c, url, true, seg[3], false, rate);
        } else if (seg_is(seg, n, 3, "v1", "admin", "users")) {
                REQUIRE_GET_OR_UNMODELLED("GET, POST");
                return v1_users(s, c, url, NULL, rate);
        } else if (seg_is(seg, n, 4, "v1", "admin", "users", NULL)) {
                REQUIRE_GET_OR_UNMODELLED("GET, PUT, DELETE");
                return v1_users(s, c, url, seg[3], rate);
        } else if (seg_is(seg, n, 3, "v1", "admin", "production-versions")) {
                REQUIRE_GET_OR_UNMODELLED("GET, POST");
                return v1_versions(s, c, url, NULL, rate);
        } else if (seg_is(seg, n, 5, "v1", "admin", "projects", NULL, "commits")) {
                REQUIRE_GET_OR_UNMODELLED("GET, PUT");
                return v1_versions(s, c, url, seg[3], rate);
        } else if (seg_is(seg, n, 3, "v1", "admin", "projects") || seg_is(seg, n, 4, "v1", "admin", "projects", NULL)) {
                return v1_projects(s, c, url, method, n == 4 ? seg[3] : NULL, req, rate);
        } else if (seg_is(seg, n, 4, "v1", "data", "query", NULL) && query_kind_from_string(seg[3]) >= 0) {
                if (!post)
                        return reply_method_not_allowed(c, "POST", rate);
                return v1_query(s, c, url, query_kind_from_string(seg[3]), req, rate);
        } else if (seg_is(seg, n, 4, "v1", "data", "model", "analytic-objects")) {
                REQUIRE_GET;
                r = query_list(c, "id", &ids, &ql);
                if (r >= 0)
                        r = model_analytic_objects(s->model, &ids,
                                                   MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
                                                                               "objectType"),
                                                   &body);
        } else if (seg_is(seg, n, 6, "v1", "data", "model", "analytic-objects", NULL, "dimensions")) {
                REQUIRE_GET;
                r = query_list(c, "id", &ids, &ql);
                if (r >= 0)
                        r = model_dimensions(s->model, seg[4], &ids, &body);
        } else if (seg_is(seg, n, 8, "v1", "data", "model", "analytic-objects", NULL, "dimensions", NULL,
                          "members")) {
                ModelMemberQuery q = MODEL_MEMBER_QUERY_INIT;

                REQUIRE_GET;
                q.filter = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "filter");
                q.field = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "field");
                r = query_int(c, "maxLevel", -1, -1, INT32_MAX, &q.max_level);
                if (r >= 0)
                        r = query_int(c, "offset", 0, 0, INT32_MAX, &q.offset);
                if (r >= 0)
                        r = query_int(c, "limit", -1, -1, INT32_MAX, &q.limit);
                if (r >= 0)
                        r = query_list(c, "id", &ids, &ql);
                if (r >= 0) {
                        q.ids = ids;
                        r = model_members(s->model, seg[4], seg[6], &q, &body, &partial);
                }
        } else
                r = -ENOENT;
#undef REQUIRE_GET
#undef REQUIRE_GET_OR_UNMODELLED

        query_list_done(&ql);
        if (r < 0)
                return reply_error_errno(c, r, url, rate);
        return reply_json(c, partial ? MHD_HTTP_PARTIAL_CONTENT : MHD_HTTP_OK, body, rate);
}

static enum MHD_Result cookie_header_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        if (key && value && strcaseeq(key, MHD_HTTP_HEADER_COOKIE))
                parse_cookie_header(value, cls);
        return MHD_YES;
}

static enum MHD_Result v1_login(SimServer *s, struct MHD_Connection *c, const char *method, Request *req,
                                const RateInfo *rate) {
        StatusOpts o = { .rate = rate };
        _cleanup_free_ char *user = NULL, *pass = NULL;
        char token[AUTH_TOKEN_HEX_LEN + 1];
        const char *ctype;
        Reply reply = { .status = MHD_HTTP_OK, .content_type = "text/plain", .rate = rate };
        enum MHD_Result ret;
        int r, r2;

        if (!streq(method, MHD_HTTP_METHOD_POST))
                return reply_method_not_allowed(c, "POST", rate);

        ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (ctype && strncasecmp(ctype, "application/x-www-form-urlencoded", 33) != 0) {
                counters_inc(s->counters, COUNTER_LOGIN_FAILURES);
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                    "Expected an application/x-www-form-urlencoded body.", &o);
        }

        r = parse_form_field(req->body, req->size, "username", &user);
        r2 = parse_form_field(req->body, req->size, "password", &pass);
        if (r == -ENOMEM || r2 == -ENOMEM)
                return MHD_NO;
        if (r == -EINVAL || r2 == -EINVAL) {
                counters_inc(s->counters, COUNTER_LOGIN_FAILURES);
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", "Malformed form body.", &o);
        }

        r = auth_login(s->auth, user, pass, token, sizeof(token));
        if (pass)
                explicit_bzero(pass, strlen(pass));
        if (r == -EACCES || !user || !pass) {
                counters_inc(s->counters, COUNTER_LOGIN_FAILURES);
                return reply_status(c, MHD_HTTP_UNAUTHORIZED, "Unauthorized",
                                    "Invalid username or password.", &o);
        }
        if (r < 0) {
                fprintf(stderr, "visier-sim: login: cannot issue a token: %s\n", strerror(-r));
                return reply_status(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "InternalError", "Internal error.", &o);
        }

        counters_login_issued(s->counters, clock_now());
        reply.body = strdup(token);
        explicit_bzero(token, sizeof(token));
        if (!reply.body)
                return MHD_NO;
        reply.body_len = AUTH_TOKEN_HEX_LEN;
        ret = reply_send(c, &reply);
        return ret;
}

/* Wipe and free each of N form values. */
static void form_values_free(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (v[i]) {
                        explicit_bzero(v[i], strlen(v[i]));
                        free(v[i]);
                }
}

/*
 * POST /v1/auth/oauth2/token: Visier's TokenRequestBody as a form (the only content type its
 * definition gives), from the registered client (client_id, client_secret). Grants: password
 * (username, password), refresh_token (the refresh token, used up) and
 * urn:visier:params:oauth:grant-type:asid-token (a live VisierASIDToken). The answer is
 * TokenResponse with access_token, refresh_token, token_type and expires_in. Like the login,
 * it needs no apikey and is an API call of the rate budget.
 */
static enum MHD_Result v1_oauth_token(SimServer *s, struct MHD_Connection *c, const char *method, Request *req,
                                      const RateInfo *rate) {
        enum { F_GRANT, F_CLIENT_ID, F_CLIENT_SECRET, F_USERNAME, F_PASSWORD, F_REFRESH, F_ASID, _F_MAX };
        static const char *const names[_F_MAX] = { "grant_type", "client_id", "client_secret", "username",
                                                    "password", "refresh_token", "asid_token" };
        char *v[_F_MAX] = {}, access[AUTH_TOKEN_HEX_LEN + 1], refresh[AUTH_TOKEN_HEX_LEN + 1], msg[160];
        StatusOpts o = { .rate = rate };
        AuthGrant g = {};
        const char *ctype;
        enum MHD_Result ret;
        bool known;
        json_t *body;
        int r = 0;

        if (!streq(method, MHD_HTTP_METHOD_POST))
                return reply_method_not_allowed(c, "POST", rate);
        ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!ctype || strncasecmp(ctype, "application/x-www-form-urlencoded", 33) != 0) {
                counters_inc(s->counters, COUNTER_LOGIN_FAILURES);
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                    "Expected an application/x-www-form-urlencoded body.", &o);
        }
        for (size_t i = 0; i < _F_MAX && r >= 0; i++) {
                r = parse_form_field(req->body, req->size, names[i], &v[i]);
                if (r == -ENOENT)
                        r = 0;
        }
        if (r == -ENOMEM) {
                form_values_free(v, _F_MAX);
                return MHD_NO;
        }
        if (r < 0) {
                form_values_free(v, _F_MAX);
                counters_inc(s->counters, COUNTER_LOGIN_FAILURES);
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", "Malformed form body.", &o);
        }

        if (!v[F_GRANT])
                snprintf(msg, sizeof(msg), "grant_type is required.");
        else if (streq(v[F_GRANT], "password"))
                g = (AuthGrant) { .kind = AUTH_GRANT_PASSWORD, .username = v[F_USERNAME], .password = v[F_PASSWORD] };
        else if (streq(v[F_GRANT], "refresh_token"))
                g = (AuthGrant) { .kind = AUTH_GRANT_REFRESH, .token = v[F_REFRESH] };
        else if (streq(v[F_GRANT], "urn:visier:params:oauth:grant-type:asid-token"))
                g = (AuthGrant) { .kind = AUTH_GRANT_ASID, .token = v[F_ASID] };
        else
                snprintf(msg, sizeof(msg), "The grant_type is not one this client may use.");
        known = v[F_GRANT] && (streq(v[F_GRANT], "password") || streq(v[F_GRANT], "refresh_token") ||
                               streq(v[F_GRANT], "urn:visier:params:oauth:grant-type:asid-token"));
        if (!known) {
                form_values_free(v, _F_MAX);
                counters_inc(s->counters, COUNTER_LOGIN_FAILURES);
                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", msg, &o);
        }

        if (!auth_client_valid(s->auth, v[F_CLIENT_ID], v[F_CLIENT_SECRET]))
                r = -EPERM;
        else
                r = auth_oauth_grant(s->auth, &g, access, refresh);
        form_values_free(v, _F_MAX);
        if (r == -EPERM || r == -EACCES) {
                counters_inc(s->counters, COUNTER_LOGIN_FAILURES);
                return reply_status(c, MHD_HTTP_UNAUTHORIZED, "Unauthorized",
                                    r == -EPERM ? "Invalid client credentials." : "Invalid grant.", &o);
        }
        if (r < 0) {
                fprintf(stderr, "visier-sim: oauth2 token: cannot issue a token: %s\n", strerror(-r));
                return reply_status(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "InternalError", "Internal error.", &o);
        }

        counters_login_issued(s->counters, clock_now());
        body = json_pack("{s:s, s:s, s:s, s:I}", "access_token", access, "refresh_token", refresh, "token_type", "Bearer",
                         "expires_in", (json_int_t) (auth_token_ttl(s->auth) / USEC_PER_SEC));
        explicit_bzero(access, sizeof(access));
        explicit_bzero(refresh, sizeof(refresh));
        if (!body)
                return MHD_NO;
        ret = reply_json(c, MHD_HTTP_OK, body, rate);
        return ret;
}

static enum MHD_Result v1_handle(SimServer *s, struct MHD_Connection *c, const char *url, const char *method,
                                 Request *req) {
        bool is_oauth = streq(url, OAUTH_TOKEN_PATH), is_login = streq(url, LOGIN_PATH) || is_oauth, apikey_ok;
        bool token_ok, bearer_ok;
        CookieScan cookies = {};
        FaultDecision fault;
        RateInfo rate;
        StatusOpts o = { .rate = &rate };
        const char *apikey, *bearer;

        counters_call(s->counters, url);
        if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))
                counters_inc(s->counters, COUNTER_AUTHORIZATION_HEADERS);
        (void) MHD_get_connection_values(c, MHD_HEADER_KIND, cookie_header_cb, &cookies);
        if (cookies.n_foreign > 0 || cookies.n_tokens > 1)
                counters_inc(s->counters, COUNTER_FOREIGN_COOKIES);

        /* 1. The tenant's call budget; the login is an API call too. */
        if (!rate_take(s->rate, &rate)) {
                counters_inc(s->counters, COUNTER_RATE_LIMITED);
                o.has_retry_after = true;
                o.retry_after = rate.retry_after_sec;
                return reply_status(c, MHD_HTTP_TOO_MANY_REQUESTS, "TooManyRequests",
                                    "Rate limit exceeded. Retry after the time given in Retry-After.", &o);
        }

        /* 2. Injected faults and latency. */
        faults_decide(s->faults, is_login, &fault);
        if (is_login) {
                counters_login_begin(s->counters);
                if (fault.latency_ms > 0)
                        clock_sleep((usec_t) fault.latency_ms * USEC_PER_MSEC);
                counters_login_end(s->counters);
        } else if (fault.latency_ms > 0)
                clock_sleep((usec_t) fault.latency_ms * USEC_PER_MSEC);

        switch (fault.action) {
        case FAULT_DROP:
                counters_inc(s->counters, COUNTER_DROPS_INJECTED);
                return MHD_NO;
        case FAULT_ERROR:
                counters_inc(s->counters, COUNTER_ERRORS_INJECTED);
                return reply_status(c, MHD_HTTP_SERVICE_UNAVAILABLE, "InternalError",
                                    "The service is temporarily unavailable.", &o);
        case FAULT_THROTTLE:
                counters_inc(s->counters, COUNTER_THROTTLES_INJECTED);
                o.has_retry_after = true;
                o.retry_after = fault.retry_after;
                return reply_status(c, MHD_HTTP_TOO_MANY_REQUESTS, "TooManyRequests",
                                    "Rate limit exceeded. Retry after the time given in Retry-After.", &o);
        default:
                break;
        }

        if (req->too_large)
                return reply_status(c, MHD_HTTP_CONTENT_TOO_LARGE, "BadRequest", "Request body too large.", &o);

        if (is_oauth)
                return v1_oauth_token(s, c, method, req, &rate);
        if (is_login)
                return v1_login(s, c, method, req, &rate);

        /* 3. Authentication: the apikey header, and a live VisierASIDToken cookie or OAuth
         * access token (Authorization: Bearer), both required. */
        apikey = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "apikey");
        apikey_ok = auth_apikey_valid(s->auth, apikey);
        token_ok = cookies.token && !cookies.token_truncated && auth_token_valid(s->auth, AUTH_TOKEN_ASID, cookies.token);
        explicit_bzero(cookies.token_buf, sizeof(cookies.token_buf));
        bearer = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        bearer_ok = bearer && strncasecmp(bearer, "Bearer ", 7) == 0 &&
                    auth_token_valid(s->auth, AUTH_TOKEN_ACCESS, bearer + 7);
        token_ok = token_ok || bearer_ok;
        /* refuse_tokens: a good token is refused exactly as an expired one would be. */
        if (token_ok && apikey_ok && faults_refuse_tokens(s->faults)) {
                counters_inc(s->counters, COUNTER_TOKENS_REFUSED);
                token_ok = false;
        }
        if (!apikey_ok)
                counters_inc(s->counters, COUNTER_BAD_APIKEY);
        if (!token_ok)
                counters_inc(s->counters, COUNTER_BAD_TOKEN);
        if (!apikey_ok)
                return reply_status(c, MHD_HTTP_UNAUTHORIZED, "Unauthorized",
                                    apikey ? "Invalid API key." : "Missing apikey header.", &o);
        if (!token_ok)
                return reply_status(c, MHD_HTTP_UNAUTHORIZED, "Unauthorized",
                                    cookies.n_tokens > 0 ? "The VisierASIDToken is invalid, expired or revoked."
                                    : bearer            ? "The access token is invalid, expired or revoked."
                                                        : "Missing VisierASIDToken cookie.",
                                    &o);

        return v1_route(s, c, url, method, req, &rate);
}

/* ---- the /_sim control API ------------------------------------------------------------- */

static enum MHD_Result sim_handle(SimServer *s, struct MHD_Connection *c, const char *url, const char *method,
                                  Request *req) {
        bool get = streq(method, MHD_HTTP_METHOD_GET), post = streq(method, MHD_HTTP_METHOD_POST);

        if (req->too_large)
                return reply_status(c, MHD_HTTP_CONTENT_TOO_LARGE, "BadRequest", "Request body too large.", NULL);

        if (streq(url, "/_sim/health")) {
                if (!get)
                        return reply_method_not_allowed(c, "GET", NULL);
                return reply_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"), NULL);
        }
        if (streq(url, "/_sim/counters")) {
                if (!get)
                        return reply_method_not_allowed(c, "GET", NULL);
                return reply_json(c, MHD_HTTP_OK, counters_to_json(s->counters), NULL);
        }
        if (streq(url, "/_sim/faults")) {
                if (post) {
                        _cleanup_json_ json_t *in = NULL;
                        json_error_t jerr;
                        char err[160] = "";

                        in = json_loadb(req->body, req->size, JSON_REJECT_DUPLICATES, &jerr);
                        if (!in)
                                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", "Body is not valid JSON.",
                                                    NULL);
                        if (faults_apply_json(s->faults, in, err, sizeof(err)) < 0)
                                return reply_status(c, MHD_HTTP_BAD_REQUEST, "BadRequest", err, NULL);
                } else if (!get)
                        return reply_method_not_allowed(c, "GET, POST", NULL);
                return reply_json(c, MHD_HTTP_OK, faults_to_json(s->faults), NULL);
        }
        if (streq(url, "/_sim/permissions")) {
                const char *tenant = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tenant");
                const char *project = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "project");
                json_t *body = NULL;
                int r;

                if (!get)
                        return reply_method_not_allowed(c, "GET", NULL);
                r = permissions_dump(s->permissions, tenant && *tenant ? tenant : NULL,
                                     project && *project ? project : NULL, &body);
                if (r == -ENOENT)
                        return reply_status(c, MHD_HTTP_NOT_FOUND, "NotFound", "No such tenant or open draft project.",
                                            NULL);
                if (r < 0)
                        return reply_error_errno(c, r, url, NULL);
                return reply_json(c, MHD_HTTP_OK, body, NULL);
        }
        if (streq(url, "/_sim/requests")) {
                if (post) {
                        request_log_clear(s->requests);
                        return reply_json(c, MHD_HTTP_OK, json_pack("{s:[]}", "requests"), NULL);
                }
                if (!get)
                        return reply_method_not_allowed(c, "GET, POST", NULL);
                return reply_json(c, MHD_HTTP_OK, request_log_to_json(s->requests), NULL);
        }
        if (streq(url, "/_sim/revoke-tokens")) {
                if (!post)
                        return reply_method_not_allowed(c, "POST", NULL);
                return reply_json(c, MHD_HTTP_OK, json_pack("{s:I}", "revoked", (json_int_t) auth_revoke_all(s->auth)),
                                  NULL);
        }
        if (streq(url, "/_sim/reset")) {
                if (!post)
                        return reply_method_not_allowed(c, "POST", NULL);
                counters_reset(s->counters);
                request_log_clear(s->requests);
                faults_reset(s->faults);
                rate_reset(s->rate);
                return reply_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"), NULL);
        }
        return reply_status(c, MHD_HTTP_NOT_FOUND, "NotFound", "Unknown control endpoint.", NULL);
}

/* ---- MHD glue -------------------------------------------------------------------------- */

static Request *request_free(Request *req) {
        if (!req)
                return NULL;
        free(req->target);
        if (req->body) {
                explicit_bzero(req->body, req->allocated);
                free(req->body);
        }
        free(req);
        return NULL;
}

/* Made when the request line arrives (libmicrohttpd's URI callback), with the target as sent. */
static void *request_start(void *cls, const char *uri, struct MHD_Connection *c) {
        Request *req = calloc(1, sizeof(*req));

        if (!req)
                return NULL;
        req->target = strdup(uri ? uri : "");
        req->allocated = 1;
        req->body = calloc(1, req->allocated);
        if (!req->target || !req->body)
                return request_free(req);
        return req;
}

/* Permission writes may carry up to 1000 definitions, data queries many columns; the rest stays small. */
static void request_set_max(Request *req, const char *url, const char *method) {
        req->max = strncmp(url, "/v1/admin/permissions", 21) == 0 && !streq(method, MHD_HTTP_METHOD_GET)
                           ? HTTP_WRITE_BODY_MAX
                   : strncmp(url, "/v1/data/query/", 15) == 0 ? HTTP_QUERY_BODY_MAX
                                                              : HTTP_BODY_MAX;
}

#define LOGGED_HEADERS_MAX 64

typedef struct HeaderScan {
        RequestLogHeader h[LOGGED_HEADERS_MAX];
        size_t n;
} HeaderScan;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        HeaderScan *hs = cls;

        if (hs->n < LOGGED_HEADERS_MAX)
                hs->h[hs->n++] = (RequestLogHeader) { key, value };
        return MHD_YES;
}

static void log_request(SimServer *s, struct MHD_Connection *c, const char *url, const char *method, Request *req) {
        HeaderScan hs = { .n = 0 };

        MHD_get_connection_values(c, MHD_HEADER_KIND, scan_header, &hs);
        request_log_add(s->requests, method, req->target ? req->target : url, hs.h, hs.n, req->body, req->size,
                        streq(url, "/v1/admin/visierSecureToken") || streq(url, "/v1/auth/oauth2/token"));
}

/* Make room for SIZE bytes plus the NUL (SIZE <= max). Never reallocs in place: the old copy is wiped. */
static int request_reserve(Request *req, size_t size) {
        size_t n = req->allocated;
        char *p;

        if (size + 1 <= req->allocated)
                return 0;
        while (n < size + 1)
                n = n > (req->max + 1) / 2 ? req->max + 1 : n * 2;
        p = malloc(n);
        if (!p)
                return -ENOMEM;
        memcpy(p, req->body, req->size + 1);
        explicit_bzero(req->body, req->allocated);
        free(req->body);
        req->body = p;
        req->allocated = n;
        return 0;
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_data_size,
                                   void **con_cls) {
        SimServer *s = cls;
        Request *req = *con_cls;

        if (!req)
                return MHD_NO; /* request_start() had no memory */
        if (req->max == 0) {
                request_set_max(req, url, method);
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                if (!req->too_large && n <= req->max - req->size && request_reserve(req, req->size + n) >= 0) {
                        memcpy(req->body + req->size, upload_data, n);
                        req->size += n;
                        req->body[req->size] = '\0';
                } else
                        req->too_large = true;
                *upload_data_size = 0;
                return MHD_YES;
        }

        if (strncmp(url, "/_sim/", 6) == 0)
                return sim_handle(s, c, url, method, req);
        log_request(s, c, url, method, req); /* every call to Visier's API, known or not */
        /* Visier's API: /v1/ and the /v2/ user groups (authenticated and rate-limited alike). */
        if (strncmp(url, "/v1/", 4) == 0 || strncmp(url, "/v2/", 4) == 0)
                return v1_handle(s, c, url, method, req);
        return reply_status(c, MHD_HTTP_NOT_FOUND, "NotFound", "Unknown path.", NULL);
}

static void http_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
        *con_cls = request_free(*con_cls);
}

/* Every connection accepted counts, control calls included: a client that keeps its
 * connections warm opens few. */
static void http_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe) {
        SimServer *s = cls;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED)
                counters_inc(s->counters, COUNTER_CONNECTIONS);
}

int http_start(SimServer *s, const struct sockaddr *addr, HttpDaemon **ret, uint16_t *ret_port) {
        const union MHD_DaemonInfo *info;
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION;
        HttpDaemon *d;

        if (addr->sa_family == AF_INET6)
                flags |= MHD_USE_IPv6;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        errno = 0;
        d->mhd = MHD_start_daemon(flags, 0, NULL, NULL, http_access, s,
                                  MHD_OPTION_SOCK_ADDR, addr,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned) HTTP_CONNECTIONS_MAX,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) HTTP_CONNECTION_TIMEOUT_SEC,
                                  MHD_OPTION_NOTIFY_COMPLETED, http_completed, NULL,
                                  MHD_OPTION_URI_LOG_CALLBACK, request_start, NULL,
                                  MHD_OPTION_NOTIFY_CONNECTION, http_connection, s,
                                  MHD_OPTION_END);
        if (!d->mhd) {
                int r = errno > 0 ? -errno : -EADDRNOTAVAIL;
                free(d);
                return r;
        }
        info = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
        if (!info || info->port == 0) {
                http_stop(d);
                return -EADDRNOTAVAIL;
        }
        *ret_port = info->port;
        *ret = d;
        return 0;
}

HttpDaemon *http_stop(HttpDaemon *d) {
        if (!d)
                return NULL;
        if (d->mhd)
                MHD_stop_daemon(d->mhd);
        free(d);
        return NULL;
}
