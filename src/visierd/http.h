/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local HTTP listener (libmicrohttpd): accepts connections, gathers each request with
 * its body (capped), hands it to the API's router, and queues the answer. Errors visierd
 * produces itself use Visier's Status JSON shape so clients written for Visier handle them.
 *
 * DESIGN: one thread per connection (MHD_USE_THREAD_PER_CONNECTION). A request that waits on
 * Visier blocks only its own connection's thread; the connection limit bounds the threads.
 * See docs/architecture.md for why this shape instead of one event loop.
 */
#pragma once

#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "macro.h"

typedef struct HttpServer HttpServer;

typedef struct HttpRequest {
        struct MHD_Connection *connection;
        bool unix_peer;      /* came over the unix socket */
        bool have_creds;     /* uid and gid are the peer's (SO_PEERCRED) */
        uid_t uid;
        gid_t gid;
        char peer[64];       /* "tcp:127.0.0.1" or "uid:1000" */
        char client[80];     /* who asked: a configured client's name, or the peer (set by the router) */
        int role;            /* that client's role (a ClientRole; set by the router) */
        const char *route;   /* the route pattern matched (set by the router) */
        const char *method;
        const char *path; /* raw (not percent-decoded), without the query string */
        char *body;
        size_t body_len;
        bool body_too_large;
        uint64_t id;
} HttpRequest;

/* Produces the answer for a gathered request; never NULL (falls back to a 500). */
typedef struct MHD_Response *(*http_handler_fn)(void *userdata, HttpRequest *req, unsigned *ret_status);

#define HTTP_LISTENERS_MAX 8

typedef struct HttpSettings {
        /* Sockets handed over by systemd (socket activation); when n_fds > 0 these are used
         * and address, port and socket_path are ignored. */
        const int *fds;
        size_t n_fds;
        const char *address;     /* TCP listener */
        unsigned port;
        const char *socket_path; /* optional unix socket listener ("" or NULL: none) */
        unsigned socket_mode;
        unsigned max_connections;
        unsigned max_connections_per_client;
        size_t max_body;
        unsigned idle_timeout; /* seconds */
        unsigned read_timeout; /* seconds to send a whole request; slower clients are cut off */
} HttpSettings;

int http_server_start(const HttpSettings *s, http_handler_fn handler, void *userdata, HttpServer **ret,
                      char *err, size_t errlen);
/* Stops accepting and closes every connection (waits for their threads). */
HttpServer *http_server_stop(HttpServer *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer *, http_server_stop);
/* The port of the first TCP listener (0 if there is none). */
unsigned http_server_port(HttpServer *h);
/* A readable list of the listeners, e.g. "127.0.0.1:8420 and /run/visierd/visierd.sock". */
const char *http_server_describe(HttpServer *h);

/* Response helpers: each returns a response ready to queue (or NULL when out of memory). */
struct MHD_Response *http_response_take(char *body, size_t len, const char *content_type);
struct MHD_Response *http_response_copy(const char *body, size_t len, const char *content_type);
/* Visier's Status error shape: {"code", "message", "localizedMessage", "userError"}. */
struct MHD_Response *http_response_status(const char *code, bool user_error, const char *fmt, ...)
        _printf_(3, 4);
