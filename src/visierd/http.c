/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local HTTP listener (see http.h). Knows nothing of Visier or jobs: it gathers requests
 * and queues the answers the router gives. Never logs: a request's outcome is logged by the
 * API layer that produced it.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stdarg.h>
#include <assert.h>
#include <limits.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>

#include "clock.h"

#include "http.h"
#include "parse.h"

/* libmicrohttpd keeps each connection's request line, headers and the answer's header lines in
 * one pool, which it zeroes after every request: max_header_size for the request, and this much
 * more for the answer's header lines and the pool's bookkeeping. */
#define HTTP_ANSWER_HEAD_RESERVE 2048

/* A connection as the read-timeout reaper sees it (loop thread only). */
typedef struct HttpConn {
        int fd;
        bool busy;           /* its request is being answered: no read deadline */
        bool over_capacity;  /* opened past max_connections */
        usec_t reading_since;
        struct HttpConn *prev, *next;
} HttpConn;

struct HttpServer {
        sd_event *event;
        struct MHD_Daemon *daemons[HTTP_LISTENERS_MAX];
        sd_event_source *daemon_io[HTTP_LISTENERS_MAX];
        size_t n_daemons;
        sd_event_source *mhd_timer;    /* libmicrohttpd's own timeouts */
        sd_event_source *mhd_defer;    /* libmicrohttpd has work ready now (timeout 0) */
        usec_t mhd_timer_at;           /* when mhd_timer is set for (0: off) */
        sd_event_source *reaper;       /* read_timeout */
        sd_event_source *wake;         /* answers from other threads */
        int wake_fd;
        pthread_mutex_t answer_lock;
        HttpRequest *answered;         /* answered (any thread), to be resumed on the loop */
        HttpConn *conns;
        HttpRequest *requests;         /* every request in progress */
        unsigned n_conns, max_connections;
        unsigned active;               /* requests between their first byte and their end */
        bool draining;
        void (*drained)(void *userdata);
        void *drained_userdata;
        usec_t read_timeout;
        http_handler_fn handler;
        void (*refused)(void *userdata, HttpRequest *req, unsigned status);
        void *userdata;
        size_t max_body;
        size_t max_header;
        uint64_t next_id;
        unsigned port;
        char *unlink_path; /* the unix socket we created, removed at stop */
        char describe[512];
        struct MHD_Response *oom;      /* made at start: the answer when no other can be built */
        struct MHD_Response *stopping; /* made at start: the answer to requests during shutdown */
};

static char http_defer_marker; /* its address is HTTP_DEFER: never a real response */
struct MHD_Response *const HTTP_DEFER = (struct MHD_Response *) &http_defer_marker;

#define HTTP_OOM_BODY \
        "{\"code\":\"InternalError\",\"message\":\"out of memory\",\"localizedMessage\":\"out of memory\",\"userError\":false}"
#define HTTP_STOPPING_BODY                                                                                     \
        "{\"code\":\"ServiceUnavailable\",\"message\":\"visierd is stopping\",\"localizedMessage\":\"visierd is " \
        "stopping\",\"userError\":false}"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13 */
#endif

static void http_run(HttpServer *h);

static size_t unescape_nothing(void *cls, struct MHD_Connection *c, char *s) {
        /* Keep paths and query arguments as the client sent them: they are forwarded raw. */
        return strlen(s);
}

struct MHD_Response *http_response_take(char *body, size_t len, const char *content_type) {
        struct MHD_Response *r;

        r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!r) {
                free(body);
                return NULL;
        }
        if (content_type)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        return r;
}

struct MHD_Response *http_response_copy(const char *body, size_t len, const char *content_type) {
        struct MHD_Response *r;

        r = MHD_create_response_from_buffer(len, (void *) body, MHD_RESPMEM_MUST_COPY);
        if (r && content_type)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        return r;
}

struct MHD_Response *http_response_status(const char *code, bool user_error, const char *fmt, ...) {
        char msg[1024];
        json_t *j;
        char *body;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        /* What it echoes of the request may be any bytes (or cut in a sequence): the answer is
         * valid JSON all the same. */
        (void) utf8_sanitize(msg);
        j = json_pack("{s:s, s:s, s:s, s:b}", "code", code, "message", msg, "localizedMessage", msg, "userError",
                      user_error);
        body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!body)
                return NULL;
        return http_response_take(body, strlen(body), "application/json");
}

/* ---- answers from other threads ---- */

static void request_free(HttpServer *h, HttpRequest *req) {
        if (req->answer && req->answer != h->oom)
                MHD_destroy_response(req->answer);
        if (req->body)
                explicit_bzero(req->body, req->body_len); /* sign-in bodies carry passwords and tokens */
        free(req->body);
        free(req);
}

static void wake_loop(HttpServer *h) {
        uint64_t one = 1;

        /* A full counter already wakes the loop, so a failed write loses nothing. */
        (void) !write(h->wake_fd, &one, sizeof(one));
}

void http_request_answer(HttpRequest *req, unsigned status, struct MHD_Response *resp) {
        HttpServer *h = req->server;
        bool wake;

        if (!resp) {
                resp = h->oom;
                status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        }
        pthread_mutex_lock(&h->answer_lock);
        if (resp != HTTP_DEFER) {
                assert(!req->answer);
                req->answer = resp;
                req->answer_status = status;
        }
        wake = !req->answered;
        if (wake) {
                req->answered = true;
                req->answer_next = h->answered;
                h->answered = req;
        }
        pthread_mutex_unlock(&h->answer_lock);
        if (wake)
                wake_loop(h);
}

void http_stream_resume(HttpRequest *req) {
        /* The same path as an answer, without one: the connection is resumed and its stream
         * read again. */
        http_request_answer(req, 0, HTTP_DEFER);
}

/* Take req off the list of answered requests (it ends before the loop got to it). */
static void request_unqueue(HttpServer *h, HttpRequest *req) {
        pthread_mutex_lock(&h->answer_lock);
        if (req->answered)
                for (HttpRequest **p = &h->answered; *p; p = &(*p)->answer_next)
                        if (*p == req) {
                                *p = req->answer_next;
                                break;
                        }
        req->answered = false;
        pthread_mutex_unlock(&h->answer_lock);
}

static void resume(HttpRequest *r) {
        if (r->suspended) {
                r->suspended = false;
                MHD_resume_connection(r->connection);
        }
}

static int on_wake(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpServer *h = userdata;
        HttpRequest *list;
        uint64_t n;

        (void) !read(h->wake_fd, &n, sizeof(n));
        pthread_mutex_lock(&h->answer_lock);
        list = TAKE_PTR(h->answered);
        for (HttpRequest *r = list; r; r = r->answer_next)
                r->answered = false; /* a stream may be resumed again later */
        pthread_mutex_unlock(&h->answer_lock);
        /* Only the loop frees requests, so the list stays valid while it is walked. */
        while (list) {
                HttpRequest *r = list;

                list = r->answer_next;
                r->answer_next = NULL;
                resume(r);
        }
        http_run(h);
        return 0;
}

/* ---- streamed answers ---- */

typedef struct HttpStream {
        HttpRequest *req;
        http_stream_read_fn read;
        void (*free_fn)(void *cls);
        void *cls;
} HttpStream;

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
        HttpStream *st = cls;
        ssize_t n = st->read(st->cls, buf, max);

        if (n > 0)
                return n;
        if (n == 0)
                return MHD_CONTENT_READER_END_OF_STREAM;
        if (n == HTTP_STREAM_AGAIN) {
                /* Nothing yet: the connection waits, suspended, until the producer says so. */
                st->req->suspended = true;
                MHD_suspend_connection(st->req->connection);
                return 0;
        }
        /* A failure mid-answer must reach the client as a failed transfer, never as a short
         * file: ending with an error leaves the chunked body unterminated. */
        return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls) {
        HttpStream *st = cls;

        if (st->free_fn)
                st->free_fn(st->cls);
        free(st);
}

struct MHD_Response *http_response_stream(HttpRequest *req, size_t block, http_stream_read_fn read, void *cls,
                                          void (*free_fn)(void *cls)) {
        HttpStream *st = calloc(1, sizeof(*st));
        struct MHD_Response *r;

        if (!st) {
                if (free_fn)
                        free_fn(cls);
                return NULL;
        }
        *st = (HttpStream) { .req = req, .read = read, .free_fn = free_fn, .cls = cls };
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block, stream_reader, st, stream_free);
        if (!r)
                stream_free(st);
        return r;
}

/* ---- connections ---- */

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
        HttpServer *h = cls;
        HttpConn *c;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci = MHD_get_connection_info(connection,
                                                                             MHD_CONNECTION_INFO_CONNECTION_FD);
                c = calloc(1, sizeof(*c));
                if (!c)
                        return;
                c->fd = ci ? ci->connect_fd : -1;
                c->reading_since = clock_now();
                c->over_capacity = h->n_conns >= h->max_connections;
                c->next = h->conns;
                if (h->conns)
                        h->conns->prev = c;
                h->conns = c;
                h->n_conns++;
                *socket_context = c;
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
                c = *socket_context;
                if (!c)
                        return;
                if (c->prev)
                        c->prev->next = c->next;
                else
                        h->conns = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                h->n_conns--;
                free(c);
                *socket_context = NULL;
        }
}

static HttpConn *conn_of(struct MHD_Connection *connection) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

        return ci ? ci->socket_context : NULL;
}

static void conn_set_busy(struct MHD_Connection *connection, bool busy) {
        HttpConn *c = conn_of(connection);

        if (!c)
                return;
        c->busy = busy;
        c->reading_since = clock_now();
}

/* Cuts off connections that take longer than read_timeout to send a request (slow-loris
 * clients), by shutting their socket down; libmicrohttpd then ends it. */
static int on_reaper(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpServer *h = userdata;
        usec_t now = clock_now();

        for (HttpConn *c = h->conns; c; c = c->next) {
                if (c->busy || c->fd < 0 || now - c->reading_since <= h->read_timeout)
                        continue;
                (void) shutdown(c->fd, SHUT_RDWR);
                c->reading_since = now; /* once is enough */
        }
        http_run(h);
        return sd_event_source_set_time_relative(s, USEC_PER_SEC);
}

static void request_peer(HttpRequest *req) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->connection,
                                                                     MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const union MHD_ConnectionInfo *fdi = MHD_get_connection_info(req->connection,
                                                                      MHD_CONNECTION_INFO_CONNECTION_FD);
        char addr[INET6_ADDRSTRLEN] = "unknown";
        struct ucred cred;
        socklen_t len = sizeof(cred);

        if (ci && ci->client_addr && ci->client_addr->sa_family == AF_UNIX) {
                req->unix_peer = true;
                if (fdi && getsockopt(fdi->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
                        socklen_t glen = sizeof(req->groups);

                        req->have_creds = true;
                        req->uid = cred.uid;
                        req->gid = cred.gid;
                        /* Its supplementary groups as they were when it connected; past
                         * HTTP_PEER_GROUPS_MAX (ERANGE) none are taken, only the primary one. */
                        if (getsockopt(fdi->connect_fd, SOL_SOCKET, SO_PEERGROUPS, req->groups, &glen) == 0)
                                req->n_groups = glen / sizeof(gid_t);
                        snprintf(req->peer, sizeof(req->peer), "uid:%u", (unsigned) cred.uid);
                } else
                        snprintf(req->peer, sizeof(req->peer), "unix");
                return;
        }
        if (ci && ci->client_addr) {
                if (ci->client_addr->sa_family == AF_INET)
                        inet_ntop(AF_INET, &((const struct sockaddr_in *) ci->client_addr)->sin_addr, addr, sizeof(addr));
                else if (ci->client_addr->sa_family == AF_INET6)
                        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) ci->client_addr)->sin6_addr, addr,
                                  sizeof(addr));
        }
        snprintf(req->peer, sizeof(req->peer), "tcp:%s", addr);
}

bool http_request_local_host(const HttpRequest *req, char *buf, size_t len) {
        const union MHD_ConnectionInfo *fdi = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char addr[INET6_ADDRSTRLEN];

        if (req->unix_peer || !fdi || getsockname(fdi->connect_fd, (struct sockaddr *) &ss, &sl) < 0)
                return false;
        if (ss.ss_family == AF_INET &&
            inet_ntop(AF_INET, &((const struct sockaddr_in *) &ss)->sin_addr, addr, sizeof(addr)))
                return snprintf(buf, len, "%s", addr) < (int) len;
        if (ss.ss_family == AF_INET6) {
                const struct in6_addr *a6 = &((const struct sockaddr_in6 *) &ss)->sin6_addr;

                /* An IPv4 client on a dual-stack socket: the address it connected to is IPv4. */
                if (IN6_IS_ADDR_V4MAPPED(a6) && inet_ntop(AF_INET, &a6->s6_addr[12], addr, sizeof(addr)))
                        return snprintf(buf, len, "%s", addr) < (int) len;
                if (inet_ntop(AF_INET6, a6, addr, sizeof(addr)))
                        return snprintf(buf, len, "[%s]", addr) < (int) len;
        }
        return false;
}

static enum MHD_Result queue(struct MHD_Connection *connection, unsigned status, struct MHD_Response *resp) {
        return MHD_queue_response(connection, status, resp);
}

/* The size of a request's line and header lines as sent, near enough: each name and value with
 * its ": " and line end. */
static enum MHD_Result add_field_size(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        size_t *n = cls;

        (void) kind;
        *n += strlen(key) + (value ? strlen(value) + 1 : 0) + 4;
        return MHD_YES;
}

static size_t request_head_size(struct MHD_Connection *connection, const char *url, const char *method,
                                const char *version) {
        size_t n = strlen(method) + strlen(url) + strlen(version) + 4;

        MHD_get_connection_values(connection, MHD_HEADER_KIND, add_field_size, &n);
        MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, add_field_size, &n);
        return n;
}

/* A request whose body framing is ambiguous (RFC 9112 §6.3): Content-Length together with
 * Transfer-Encoding, or a transfer coding other than chunked. A server that guesses where such a
 * body ends can disagree with a proxy in front of it about where the next request starts, so
 * the answer is a 400 (501 for a coding it does not know before chunked) and the connection is
 * closed. Returns the status, or 0 when the framing is sound. */
typedef struct FramingHeaders {
        const char *te, *cl;
        unsigned n_te;
        bool cl_differ;
        bool bad_name; /* a header name that is not a token (RFC 9110 §5.1), or a framing name mangled */
} FramingHeaders;

static bool is_token(const char *s) {
        if (!*s)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      strchr("!#$%&'*+-.^_`|~", *s)))
                        return false;
        return true;
}

static bool starts_with_nocase(const char *s, const char *prefix) {
        return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static enum MHD_Result framing_scan(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        FramingHeaders *f = cls;

        (void) kind;
        /* libmicrohttpd keeps "Transfer-Encoding : chunked" as a header named "Transfer-Encoding "
         * and a folded line as one name run into its value: a proxy could take either for the
         * framing header, so neither is let through. */
        if (!is_token(key) || ((starts_with_nocase(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) ||
                                starts_with_nocase(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) &&
                               !strcaseeq(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) &&
                               !strcaseeq(key, MHD_HTTP_HEADER_CONTENT_LENGTH)))
                f->bad_name = true;
        else if (strcaseeq(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
                f->n_te++;
                f->te = f->te ? f->te : value;
        } else if (strcaseeq(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
                if (f->cl && !streq(f->cl, value ? value : ""))
                        f->cl_differ = true;
                f->cl = f->cl ? f->cl : value ? value : "";
        }
        return MHD_YES;
}

static unsigned framing_refusal(struct MHD_Connection *connection, const char **ret_why) {
        FramingHeaders f = {};
        const char *te, *last;
        size_t n;

        MHD_get_connection_values(connection, MHD_HEADER_KIND, framing_scan, &f);
        if (f.bad_name) {
                *ret_why = "the request has a malformed header line (a name with white space, or a folded line)";
                return MHD_HTTP_BAD_REQUEST;
        }
        if (f.cl_differ) {
                *ret_why = "the request has Content-Length headers that disagree";
                return MHD_HTTP_BAD_REQUEST;
        }
        te = f.te;
        if (!te)
                return 0;
        if (f.n_te > 1) {
                *ret_why = "the request has more than one Transfer-Encoding header";
                return MHD_HTTP_BAD_REQUEST;
        }
        if (f.cl) {
                *ret_why = "the request has both Content-Length and Transfer-Encoding";
                return MHD_HTTP_BAD_REQUEST;
        }
        /* Exactly as libmicrohttpd reads it: "chunked" in any case, nothing around it. */
        if (strcaseeq(te, "chunked"))
                return 0;
        n = strlen(te);
        while (n > 0 && (te[n - 1] == ' ' || te[n - 1] == '\t'))
                n--;
        last = memrchr(te, ',', n);
        if (last) {
                last += 1 + strspn(last + 1, " \t");
                if ((size_t) (te + n - last) == strlen("chunked") && strncasecmp(last, "chunked", strlen("chunked")) == 0) {
                        *ret_why = "the request's Transfer-Encoding has a coding other than chunked";
                        return MHD_HTTP_NOT_IMPLEMENTED;
                }
        }
        *ret_why = "the request's Transfer-Encoding is not chunked";
        return MHD_HTTP_BAD_REQUEST;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
        HttpServer *h = cls;
        HttpRequest *req = *con_cls;
        struct MHD_Response *resp;
        unsigned status = 500;
        const char *why = NULL;
        enum MHD_Result ret;

        if (!req) {
                HttpConn *c = conn_of(connection);

                req = calloc(1, sizeof(*req));
                if (!req)
                        return MHD_NO;
                req->server = h;
                req->connection = connection;
                req->method = method;
                req->path = url;
                req->id = ++h->next_id;
                req->started = clock_now();
                req->over_capacity = c && c->over_capacity;
                req->draining = h->draining;
                /* The connection's memory is max_header_size plus room for the answer's header
                 * lines: a head that does not leave that room is refused here, with an answer. */
                req->head_too_large = request_head_size(connection, url, method, version) > h->max_header;
                request_peer(req);
                req->next = h->requests;
                if (h->requests)
                        h->requests->prev = req;
                h->requests = req;
                h->active++;
                *con_cls = req;
                status = framing_refusal(connection, &why);
                if (status == 0)
                        return MHD_YES;
                /* Answered before any of the body is read; the connection is not reused. */
                conn_set_busy(connection, true);
                resp = http_response_status(status == MHD_HTTP_BAD_REQUEST ? "BadRequest" : "NotImplemented", true,
                                            "%s", why);
                if (h->refused)
                        h->refused(h->userdata, req, status);
                if (!resp || MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES) {
                        if (resp)
                                MHD_destroy_response(resp);
                        return MHD_NO;
                }
                ret = queue(connection, status, resp);
                MHD_destroy_response(resp);
                return ret;
        }
        if (req->deferred) {
                /* Resumed: the deferred answer is in. */
                if (!req->answer)
                        return MHD_YES; /* a spurious resume; wait on */
                req->deferred = false;
                return queue(connection, req->answer_status, req->answer);
        }
        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                if (!req->body_too_large) {
                        if (req->body_len + n > h->max_body) {
                                req->body_too_large = true;
                                if (req->body)
                                        explicit_bzero(req->body, req->body_len);
                                free(req->body);
                                req->body = NULL;
                                req->body_len = 0;
                        } else {
                                /* Never realloc(): the old copy is wiped (bodies may carry secrets). */
                                char *b = malloc(req->body_len + n + 1);
                                if (!b)
                                        return MHD_NO;
                                if (req->body) {
                                        memcpy(b, req->body, req->body_len);
                                        explicit_bzero(req->body, req->body_len);
                                        free(req->body);
                                }
                                memcpy(b + req->body_len, upload_data, n);
                                req->body = b;
                                req->body_len += n;
                                req->body[req->body_len] = '\0';
                        }
                }
                *upload_data_size = 0;
                return MHD_YES;
        }

        conn_set_busy(connection, true);
        if (req->draining) {
                status = MHD_HTTP_SERVICE_UNAVAILABLE;
                resp = h->stopping;
                if (h->refused)
                        h->refused(h->userdata, req, status);
                return queue(connection, status, resp);
        }
        if (req->head_too_large) {
                status = MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE;
                resp = http_response_status("RequestHeaderFieldsTooLarge", true,
                                            "request line and headers are larger than max_header_size (%zu bytes)",
                                            h->max_header);
        } else if (req->body_too_large) {
                status = MHD_HTTP_CONTENT_TOO_LARGE;
                resp = http_response_status("PayloadTooLarge", true, "request body is larger than max_body_size (%zu bytes)",
                                            h->max_body);
        } else
                resp = h->handler(h->userdata, req, &status);
        if ((req->head_too_large || req->body_too_large) && h->refused)
                h->refused(h->userdata, req, resp ? status : MHD_HTTP_INTERNAL_SERVER_ERROR);
        if (resp == HTTP_DEFER) {
                /* Suspend now unless the answer is already in (a handler that answered from
                 * another thread at once): on_wake resumes it. */
                pthread_mutex_lock(&h->answer_lock);
                req->deferred = true;
                if (!req->answer) {
                        req->suspended = true;
                        MHD_suspend_connection(connection);
                        pthread_mutex_unlock(&h->answer_lock);
                        return MHD_YES;
                }
                pthread_mutex_unlock(&h->answer_lock);
                req->deferred = false;
                return queue(connection, req->answer_status, req->answer);
        }
        if (!resp) {
                /* No answer could be built (out of memory): the one made at start. Queuing
                 * takes a reference, so it is never used up. */
                return queue(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, h->oom);
        }
        ret = queue(connection, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        HttpRequest *req = *con_cls;
        HttpServer *h = cls;

        conn_set_busy(connection, false);
        if (!req)
                return;
        *con_cls = NULL;
        if (req->done)
                req->done(req->ctx, req);
        request_unqueue(h, req);
        if (req->prev)
                req->prev->next = req->next;
        else
                h->requests = req->next;
        if (req->next)
                req->next->prev = req->prev;
        request_free(h, req);
        assert(h->active > 0);
        h->active--;
        if (h->draining && h->active == 0 && h->drained)
                h->drained(h->drained_userdata);
}

/* ---- the loop ---- */

static int on_mhd_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpServer *h = userdata;

        h->mhd_timer_at = 0; /* a one-shot: it is off now */
        http_run(h);
        return 0;
}

/* Let libmicrohttpd do what it can now, then arm the timer for its next timeout: "now" is a
 * defer source, and a later timeout moves the timer only when it is due earlier or 10 ms
 * later than set (its timeouts are connection timeouts, in seconds), since every move costs
 * a timerfd_settime(). */
static void http_run(HttpServer *h) {
        MHD_UNSIGNED_LONG_LONG t, next = ULLONG_MAX;
        usec_t now, at;

        for (size_t i = 0; i < h->n_daemons; i++) {
                if (!h->daemons[i])
                        continue;
                (void) MHD_run(h->daemons[i]);
                if (MHD_get_timeout(h->daemons[i], &t) == MHD_YES && t < next)
                        next = t;
        }
        if (next == 0) {
                (void) sd_event_source_set_enabled(h->mhd_defer, SD_EVENT_ONESHOT);
                return;
        }
        if (next == ULLONG_MAX) {
                if (h->mhd_timer_at) {
                        (void) sd_event_source_set_enabled(h->mhd_timer, SD_EVENT_OFF);
                        h->mhd_timer_at = 0;
                }
                return;
        }
        (void) sd_event_now(h->event, CLOCK_MONOTONIC, &now);
        at = now + (usec_t) next * USEC_PER_MSEC;
        if (h->mhd_timer_at && at >= h->mhd_timer_at && at <= h->mhd_timer_at + 10 * USEC_PER_MSEC)
                return;
        (void) sd_event_source_set_time(h->mhd_timer, at);
        (void) sd_event_source_set_enabled(h->mhd_timer, SD_EVENT_ONESHOT);
        h->mhd_timer_at = at;
}

static int on_mhd_defer(sd_event_source *s, void *userdata) {
        http_run(userdata);
        return 0;
}

static int on_daemon_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        http_run(userdata);
        return 0;
}

static void describe_append(HttpServer *h, const char *what) {
        size_t n = strlen(h->describe);

        snprintf(h->describe + n, sizeof(h->describe) - n, "%s%s", n ? " and " : "", what);
}

/* One libmicrohttpd daemon on a listening socket we own (it closes it when stopped), driven
 * by the loop through its epoll descriptor. */
static int start_on_fd(HttpServer *h, int fd, const HttpSettings *s, char *err, size_t errlen) {
        unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
        const union MHD_DaemonInfo *info;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        struct MHD_Daemon *d;
        char what[160];
        int r;

        if (h->n_daemons >= HTTP_LISTENERS_MAX) {
                snprintf(err, errlen, "more than %d listening sockets", HTTP_LISTENERS_MAX);
                return -E2BIG;
        }
        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0) {
                snprintf(err, errlen, "listening socket %d: %s", fd, strerror(errno));
                return -errno;
        }
        if (ss.ss_family == AF_INET6)
                flags |= MHD_USE_IPv6;
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
                char a[INET6_ADDRSTRLEN] = "";
                unsigned port;

                if (ss.ss_family == AF_INET) {
                        inet_ntop(AF_INET, &((struct sockaddr_in *) &ss)->sin_addr, a, sizeof(a));
                        port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
                } else {
                        inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &ss)->sin6_addr, a, sizeof(a));
                        port = ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
                }
                if (h->port == 0)
                        h->port = port;
                snprintf(what, sizeof(what), ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, port);
        } else if (ss.ss_family == AF_UNIX)
                snprintf(what, sizeof(what), "%s", ((struct sockaddr_un *) &ss)->sun_path);
        else {
                snprintf(err, errlen, "listening socket %d is neither TCP nor a unix socket", fd);
                return -EAFNOSUPPORT;
        }
        /* The hard limit is max_connections plus the ops reserve; past it libmicrohttpd stops
         * accepting, which leaves new connections waiting in the backlog (never a silent
         * close). */
        d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                             MHD_OPTION_LISTEN_SOCKET, fd,
                             MHD_OPTION_CONNECTION_LIMIT, (unsigned) (s->max_connections + s->ops_reserve),
                             MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) s->idle_timeout,
                             MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->max_header + HTTP_ANSWER_HEAD_RESERVE,
                             MHD_OPTION_UNESCAPE_CALLBACK, unescape_nothing, NULL,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                             MHD_OPTION_END);
        if (!d) {
                snprintf(err, errlen, "cannot serve on %s", what);
                return -EIO;
        }
        info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info) {
                MHD_stop_daemon(d);
                snprintf(err, errlen, "cannot serve on %s: no epoll descriptor", what);
                return -EIO;
        }
        r = sd_event_add_io(h->event, &h->daemon_io[h->n_daemons], info->epoll_fd, EPOLLIN, on_daemon_io, h);
        if (r < 0) {
                MHD_stop_daemon(d);
                snprintf(err, errlen, "cannot serve on %s: %s", what, strerror(-r));
                return r;
        }
        h->daemons[h->n_daemons++] = d;
        describe_append(h, what);
        return 0;
}

static int listen_tcp(const char *address, unsigned port, char *err, size_t errlen) {
        struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t) port) };
        struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
        const struct sockaddr *sa;
        _cleanup_close_ int fd = -1;
        socklen_t len;
        int one = 1;

        if (inet_pton(AF_INET, address, &a4.sin_addr) == 1)
                sa = (const struct sockaddr *) &a4, len = sizeof(a4);
        else if (inet_pton(AF_INET6, address, &a6.sin6_addr) == 1)
                sa = (const struct sockaddr *) &a6, len = sizeof(a6);
        else {
                snprintf(err, errlen, "listen address %s is not an IP address", address);
                return -EINVAL;
        }
        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (sa->sa_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, sa, len) < 0 || listen(fd, SOMAXCONN) < 0) {
                int r = -errno;
                snprintf(err, errlen, "cannot listen on %s port %u: %s", address, port, strerror(-r));
                return r;
        }
        return TAKE_FD(fd);
}

static int listen_unix(const char *path, unsigned mode, char *err, size_t errlen) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                snprintf(err, errlen, "unix socket path %s is too long", path);
                return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* A socket left by an earlier run is replaced; one that a live process still listens on
         * (another visierd, started by hand beside the service) is never taken from it. */
        {
                _cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

                if (probe < 0)
                        return -errno;
                if (connect(probe, (struct sockaddr *) &sa, sizeof(sa)) == 0) {
                        snprintf(err, errlen, "cannot listen on %s: another process is listening on it", path);
                        return -EADDRINUSE;
                }
                if (errno == ECONNREFUSED)
                        (void) unlink(path);
                else if (errno != ENOENT) {
                        r = -errno;
                        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(-r));
                        return r;
                }
        }
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || chmod(path, (mode_t) mode) < 0 ||
            listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(-r));
                return r;
        }
        return TAKE_FD(fd);
}

int http_server_start(sd_event *e, const HttpSettings *s, http_handler_fn handler, void *userdata,
                      HttpServer **ret, char *err, size_t errlen) {
        _cleanup_(http_server_stopp) HttpServer *h = NULL;
        int r, fd;

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->wake_fd = -1;
        h->event = sd_event_ref(e);
        h->handler = handler;
        h->refused = s->refused;
        h->userdata = userdata;
        h->max_body = s->max_body;
        h->max_header = s->max_header;
        h->max_connections = s->max_connections;
        pthread_mutex_init(&h->answer_lock, NULL);
        h->oom = MHD_create_response_from_buffer(strlen(HTTP_OOM_BODY), (void *) HTTP_OOM_BODY,
                                                 MHD_RESPMEM_PERSISTENT);
        if (!h->oom || MHD_add_response_header(h->oom, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES)
                return -ENOMEM;
        h->stopping = MHD_create_response_from_buffer(strlen(HTTP_STOPPING_BODY), (void *) HTTP_STOPPING_BODY,
                                                      MHD_RESPMEM_PERSISTENT);
        if (!h->stopping ||
            MHD_add_response_header(h->stopping, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES ||
            MHD_add_response_header(h->stopping, MHD_HTTP_HEADER_RETRY_AFTER, "1") != MHD_YES ||
            MHD_add_response_header(h->stopping, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES)
                return -ENOMEM;
        h->read_timeout = (usec_t) (s->read_timeout ? s->read_timeout : 30) * USEC_PER_SEC;

        h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (h->wake_fd < 0)
                return -errno;
        r = sd_event_add_io(e, &h->wake, h->wake_fd, EPOLLIN, on_wake, h);
        if (r < 0)
                return r;
        /* libmicrohttpd asks for 0 ms when it has work ready (a resumed connection): that is
         * the defer source. Its other timeouts need no better than 1 ms (sd-event's default
         * accuracy, 250 ms, would be too coarse for the defer's fallback). */
        r = sd_event_add_time_relative(e, &h->mhd_timer, CLOCK_MONOTONIC, USEC_PER_SEC, USEC_PER_MSEC, on_mhd_timer,
                                       h);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(h->mhd_timer, SD_EVENT_OFF);
        r = sd_event_add_defer(e, &h->mhd_defer, on_mhd_defer, h);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(h->mhd_defer, SD_EVENT_OFF);
        r = sd_event_add_time_relative(e, &h->reaper, CLOCK_MONOTONIC, USEC_PER_SEC, 0, on_reaper, h);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(h->reaper, SD_EVENT_ON);

        if (s->n_fds > 0) {
                for (size_t i = 0; i < s->n_fds; i++) {
                        r = start_on_fd(h, s->fds[i], s, err, errlen);
                        if (r < 0)
                                return r;
                }
        } else {
                if (s->tcp) {
                        fd = listen_tcp(s->address, s->port, err, errlen);
                        if (fd < 0)
                                return fd;
                        r = start_on_fd(h, fd, s, err, errlen);
                        if (r < 0) {
                                close(fd);
                                return r;
                        }
                }
                if (s->socket_path && *s->socket_path) {
                        fd = listen_unix(s->socket_path, s->socket_mode, err, errlen);
                        if (fd < 0)
                                return fd;
                        h->unlink_path = strdup(s->socket_path);
                        r = start_on_fd(h, fd, s, err, errlen);
                        if (r < 0) {
                                close(fd);
                                return r;
                        }
                }
        }
        http_run(h);
        *ret = TAKE_PTR(h);
        return 0;
}

void http_server_drain(HttpServer *h, void (*drained)(void *userdata), void *userdata) {
        h->draining = true;
        h->drained = drained;
        h->drained_userdata = userdata;
        for (size_t i = 0; i < h->n_daemons; i++) {
                MHD_socket fd = MHD_quiesce_daemon(h->daemons[i]);

                if (fd != MHD_INVALID_SOCKET)
                        close(fd);
        }
        if (h->unlink_path) {
                (void) unlink(h->unlink_path);
                free(h->unlink_path);
                h->unlink_path = NULL;
        }
        http_run(h);
        if (h->active == 0 && drained)
                drained(userdata);
}

unsigned http_server_active(HttpServer *h) {
        return h->active;
}

unsigned http_server_connections(HttpServer *h) {
        return h->n_conns;
}

HttpServer *http_server_stop(HttpServer *h) {
        if (!h)
                return NULL;
        /* libmicrohttpd must not be stopped with suspended connections: resume them all (their
         * owners have answered, or they are streams cut off now). */
        on_wake(NULL, -1, 0, h);
        for (HttpRequest *r = h->requests; r; r = r->next)
                resume(r);
        for (size_t i = 0; i < h->n_daemons; i++) {
                h->daemon_io[i] = sd_event_source_disable_unref(h->daemon_io[i]);
                MHD_stop_daemon(h->daemons[i]);
        }
        sd_event_source_disable_unref(h->mhd_timer);
        sd_event_source_disable_unref(h->mhd_defer);
        sd_event_source_disable_unref(h->reaper);
        sd_event_source_disable_unref(h->wake);
        if (h->wake_fd >= 0)
                close(h->wake_fd);
        pthread_mutex_destroy(&h->answer_lock);
        if (h->oom)
                MHD_destroy_response(h->oom);
        if (h->stopping)
                MHD_destroy_response(h->stopping);
        if (h->unlink_path) {
                (void) unlink(h->unlink_path);
                free(h->unlink_path);
        }
        sd_event_unref(h->event);
        free(h);
        return NULL;
}

const char *http_server_describe(HttpServer *h) {
        return h->describe;
}

unsigned http_server_port(HttpServer *h) {
        return h->port;
}
