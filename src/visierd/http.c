/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local HTTP listener (see http.h). Knows nothing of Visier or jobs: it gathers requests
 * and queues the answers the router gives. Never logs: a request's outcome is logged by the
 * API layer that produced it.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "http.h"

#define HTTP_CONNECTION_MEMORY (64 * 1024) /* bounds the request line and headers */

struct HttpServer {
        struct MHD_Daemon *daemon;
        http_handler_fn handler;
        void *userdata;
        size_t max_body;
        atomic_uint_fast64_t next_id;
        unsigned port;
};

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
        j = json_pack("{s:s, s:s, s:s, s:b}", "code", code, "message", msg, "localizedMessage", msg, "userError",
                      user_error);
        body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!body)
                return NULL;
        return http_response_take(body, strlen(body), "application/json");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
        HttpServer *h = cls;
        HttpRequest *req = *con_cls;
        struct MHD_Response *resp;
        unsigned status = 500;
        enum MHD_Result ret;

        if (!req) {
                req = calloc(1, sizeof(*req));
                if (!req)
                        return MHD_NO;
                req->connection = connection;
                req->method = method;
                req->path = url;
                req->id = atomic_fetch_add(&h->next_id, 1) + 1;
                *con_cls = req;
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                if (!req->body_too_large) {
                        if (req->body_len + n > h->max_body) {
                                req->body_too_large = true;
                                free(req->body);
                                req->body = NULL;
                                req->body_len = 0;
                        } else {
                                char *b = realloc(req->body, req->body_len + n + 1);
                                if (!b)
                                        return MHD_NO;
                                memcpy(b + req->body_len, upload_data, n);
                                req->body = b;
                                req->body_len += n;
                                req->body[req->body_len] = '\0';
                        }
                }
                *upload_data_size = 0;
                return MHD_YES;
        }

        if (req->body_too_large) {
                status = MHD_HTTP_CONTENT_TOO_LARGE;
                resp = http_response_status("PayloadTooLarge", true, "request body is larger than max_body_size (%zu bytes)",
                                            h->max_body);
        } else
                resp = h->handler(h->userdata, req, &status);
        if (!resp) {
                status = 500;
                resp = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
                if (!resp)
                        return MHD_NO;
        }
        ret = MHD_queue_response(connection, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        HttpRequest *req = *con_cls;

        if (!req)
                return;
        free(req->body);
        free(req);
        *con_cls = NULL;
}

int http_server_start(const HttpSettings *s, http_handler_fn handler, void *userdata, HttpServer **ret,
                      char *err, size_t errlen) {
        _cleanup_(http_server_stopp) HttpServer *h = NULL;
        struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
        struct sockaddr_in a4 = { .sin_family = AF_INET };
        const struct sockaddr *addr;
        unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD;
        const union MHD_DaemonInfo *info;

        if (inet_pton(AF_INET, s->address, &a4.sin_addr) == 1) {
                a4.sin_port = htons((uint16_t) s->port);
                addr = (const struct sockaddr *) &a4;
        } else if (inet_pton(AF_INET6, s->address, &a6.sin6_addr) == 1) {
                a6.sin6_port = htons((uint16_t) s->port);
                addr = (const struct sockaddr *) &a6;
                flags |= MHD_USE_IPv6;
        } else {
                snprintf(err, errlen, "listen address %s is not an IP address", s->address);
                return -EINVAL;
        }

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->handler = handler;
        h->userdata = userdata;
        h->max_body = s->max_body;
        h->daemon = MHD_start_daemon(flags, (uint16_t) s->port, NULL, NULL, on_request, h,
                                     MHD_OPTION_SOCK_ADDR, addr,
                                     MHD_OPTION_CONNECTION_LIMIT, (unsigned) s->max_connections,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) s->idle_timeout,
                                     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HTTP_CONNECTION_MEMORY,
                                     MHD_OPTION_UNESCAPE_CALLBACK, unescape_nothing, NULL,
                                     MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                                     MHD_OPTION_END);
        if (!h->daemon) {
                snprintf(err, errlen, "cannot listen on %s port %u (in use, or not permitted)", s->address, s->port);
                return -EADDRINUSE;
        }
        info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
        h->port = info ? info->port : s->port;
        *ret = TAKE_PTR(h);
        return 0;
}

HttpServer *http_server_stop(HttpServer *h) {
        if (!h)
                return NULL;
        if (h->daemon)
                MHD_stop_daemon(h->daemon);
        free(h);
        return NULL;
}

unsigned http_server_port(HttpServer *h) {
        return h->port;
}
