/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local HTTP listener (libmicrohttpd): accepts connections, gathers each request with
 * its body (capped), hands it to the API's router, and queues the answer. Errors visierd
 * produces itself use Visier's Status JSON shape so clients written for Visier handle them.
 *
 * DESIGN: libmicrohttpd in external-epoll mode on the manager's sd-event loop: every
 * connection is served by the loop thread, and none holds a thread of its own. A handler that
 * cannot answer at once (it waits on Visier, the rate budget, a job or the store thread)
 * returns HTTP_DEFER: the connection is suspended, costs nothing but its memory, and is
 * resumed when http_request_answer() is called, from any thread. See docs/architecture.md.
 */
#pragma once

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <systemd/sd-event.h>
#include <stdint.h>
#include <sys/types.h>

#include "clock.h"
#include "macro.h"

typedef struct HttpServer HttpServer;

/* Supplementary groups of a unix-socket peer taken into account (more are not). */
#define HTTP_PEER_GROUPS_MAX 64

typedef struct HttpRequest {
        struct MHD_Connection *connection;
        bool unix_peer;      /* came over the unix socket */
        bool have_creds;     /* uid and gid are the peer's (SO_PEERCRED) */
        uid_t uid;
        gid_t gid;
        gid_t groups[HTTP_PEER_GROUPS_MAX]; /* the peer's supplementary groups (SO_PEERGROUPS) */
        size_t n_groups;
        char peer[64];       /* "tcp:127.0.0.1" or "uid:1000" */
        char client[80];     /* who asked: a configured client's name, or the peer (set by the router) */
        int role;            /* that client's role (a ClientRole; set by the router) */
        const char *route;   /* the route pattern matched (set by the router) */
        const char *method;
        const char *path; /* raw (not percent-decoded), without the query string */
        char *body;
        size_t body_len;
        bool body_too_large;
        bool head_too_large; /* request line and headers past max_header_size: answered 431 */
        bool over_capacity;  /* arrived on a connection past max_connections (ops routes only) */
        bool draining;       /* arrived after shutdown began */
        uint64_t id;
        usec_t started;      /* clock_now() when its head had arrived */

        /* Owned by the HTTP layer. */
        HttpServer *server;
        bool deferred;       /* the handler answers later, through http_request_answer() */
        bool answered;       /* (under the server's answer lock) an answer is waiting to be queued */
        bool suspended;      /* the connection is suspended (loop thread only) */
        bool completed;      /* libmicrohttpd is done with it; freed once the owner lets go too */
        unsigned answer_status;
        struct MHD_Response *answer;
        struct HttpRequest *answer_next;
        struct HttpRequest *prev, *next; /* the requests in progress (loop thread only) */
        /* Set by a deferred handler: called on the loop thread when the request ends for any
         * reason (answered and sent, or the connection went away), before it is freed. */
        void (*done)(void *ctx, struct HttpRequest *req);
        void *ctx;
} HttpRequest;

/* Produces the answer for a gathered request (NULL: out of memory, answered with a 500), or
 * HTTP_DEFER: the handler (or whoever it handed the request to) calls http_request_answer()
 * exactly once, later, from any thread. */
typedef struct MHD_Response *(*http_handler_fn)(void *userdata, HttpRequest *req, unsigned *ret_status);
extern struct MHD_Response *const HTTP_DEFER;

/* The address the request's TCP connection was accepted on, written as a Host header names it
 * ("127.0.0.53", "[::1]"), into buf. Returns false for a unix socket or when it is unknown. */
bool http_request_local_host(const HttpRequest *req, char *buf, size_t len);

/* Answer a deferred request (any thread). Takes resp over (the caller must not destroy it);
 * NULL means out of memory (answered with a 500). */
void http_request_answer(HttpRequest *req, unsigned status, struct MHD_Response *resp);

/*
 * A streamed answer whose body comes in pieces, possibly not yet available. read returns
 * > 0 bytes, 0 at the end, HTTP_STREAM_AGAIN when nothing is ready (the connection is
 * suspended until http_stream_resume() is called for it, from any thread), or
 * HTTP_STREAM_ERROR (the answer is cut off: the client sees a failed transfer, never a short
 * body). free is called once the answer is done with.
 */
#define HTTP_STREAM_AGAIN ((ssize_t) -11)
#define HTTP_STREAM_ERROR ((ssize_t) -5)
typedef ssize_t (*http_stream_read_fn)(void *cls, char *buf, size_t max);
struct MHD_Response *http_response_stream(HttpRequest *req, size_t block, http_stream_read_fn read, void *cls,
                                          void (*free_fn)(void *cls));
/* The stream of req has something to read again (any thread). */
void http_stream_resume(HttpRequest *req);

#define HTTP_LISTENERS_MAX 8

typedef struct HttpSettings {
        /* Sockets handed over by systemd (socket activation); when n_fds > 0 these are used
         * and address, port and socket_path are ignored. */
        const int *fds;
        size_t n_fds;
        bool tcp;                /* open the TCP listener (address, port) */
        const char *address;
        unsigned port;
        const char *socket_path; /* optional unix socket listener ("" or NULL: none) */
        unsigned socket_mode;
        unsigned max_connections;  /* beyond these, only ops routes are served (503 for others) */
        unsigned ops_reserve;      /* extra connections kept for ops routes */
        size_t max_body;
        size_t max_header; /* each connection's memory for the request line and headers */
        unsigned idle_timeout; /* seconds */
        unsigned read_timeout; /* seconds to send a whole request; slower clients are cut off */
        /* Told (on the loop) of each answer this layer makes itself, before any handler: an
         * ambiguous body framing, a head or body past its limit, a stop in progress. May be NULL. */
        void (*refused)(void *userdata, HttpRequest *req, unsigned status);
} HttpSettings;

/* Serves on the loop e (which must be run by the calling thread). */
int http_server_start(sd_event *e, const HttpSettings *s, http_handler_fn handler, void *userdata,
                      HttpServer **ret, char *err, size_t errlen);
/* Shutdown, first step: stop accepting connections (the listening sockets are closed) and
 * answer new requests on open connections with 503 and Connection: close. Requests in
 * progress go on. drained is called (on the loop) once none is left. */
void http_server_drain(HttpServer *h, void (*drained)(void *userdata), void *userdata);
/* Requests being answered right now (deferred ones included). */
unsigned http_server_active(HttpServer *h);
/* Open connections. */
unsigned http_server_connections(HttpServer *h);
/* Closes every connection. Deferred requests must have been answered. */
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
