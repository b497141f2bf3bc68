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
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "clock.h"

#include "http.h"

#define HTTP_CONNECTION_MEMORY (64 * 1024) /* bounds the request line and headers */

/* A connection as the read-timeout reaper sees it. */
typedef struct HttpConn {
        int fd;
        ino_t ino;           /* the socket's inode: fd numbers are reused, inodes of open sockets are not */
        bool busy;           /* its request is being answered: no read deadline */
        usec_t reading_since;
        struct HttpConn *prev, *next;
} HttpConn;

struct HttpServer {
        struct MHD_Daemon *daemons[HTTP_LISTENERS_MAX];
        pthread_mutex_t conns_lock;
        HttpConn *conns;
        pthread_t reaper;
        bool reaper_started, stopping;
        pthread_cond_t reaper_cond;
        usec_t read_timeout;
        size_t n_daemons;
        http_handler_fn handler;
        void *userdata;
        size_t max_body;
        atomic_uint_fast64_t next_id;
        unsigned port;
        char *unlink_path; /* the unix socket we created, removed at stop */
        char describe[512];
        struct MHD_Response *oom; /* made at start: the answer when no other can be built */
};

#define HTTP_OOM_BODY \
        "{\"code\":\"InternalError\",\"message\":\"out of memory\",\"localizedMessage\":\"out of memory\",\"userError\":false}"

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
                {
                        struct stat st;
                        c->ino = c->fd >= 0 && fstat(c->fd, &st) == 0 ? st.st_ino : 0;
                }
                c->reading_since = clock_now();
                pthread_mutex_lock(&h->conns_lock);
                c->next = h->conns;
                if (h->conns)
                        h->conns->prev = c;
                h->conns = c;
                pthread_mutex_unlock(&h->conns_lock);
                *socket_context = c;
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
                c = *socket_context;
                if (!c)
                        return;
                pthread_mutex_lock(&h->conns_lock);
                if (c->prev)
                        c->prev->next = c->next;
                else
                        h->conns = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                pthread_mutex_unlock(&h->conns_lock);
                free(c);
                *socket_context = NULL;
        }
}

static void conn_set_busy(HttpServer *h, struct MHD_Connection *connection, bool busy) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        HttpConn *c = ci ? ci->socket_context : NULL;

        if (!c)
                return;
        pthread_mutex_lock(&h->conns_lock);
        c->busy = busy;
        c->reading_since = clock_now();
        pthread_mutex_unlock(&h->conns_lock);
}

/* Cuts off connections that take longer than read_timeout to send a request (slow-loris
 * clients), by shutting their socket down; the connection's own thread then ends it. */
static void *reaper_thread(void *arg) {
        HttpServer *h = arg;

        pthread_mutex_lock(&h->conns_lock);
        while (!h->stopping) {
                struct timespec ts;
                usec_t now = clock_now();

                for (HttpConn *c = h->conns; c; c = c->next) {
                        struct stat st;

                        if (c->busy || c->fd < 0 || now - c->reading_since <= h->read_timeout)
                                continue;
                        /* Only if the descriptor is still this connection's socket. */
                        if (fstat(c->fd, &st) == 0 && st.st_ino == c->ino)
                                (void) shutdown(c->fd, SHUT_RDWR);
                        c->reading_since = now; /* once is enough */
                }
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += 1;
                pthread_cond_timedwait(&h->reaper_cond, &h->conns_lock, &ts);
        }
        pthread_mutex_unlock(&h->conns_lock);
        return NULL;
}

static void request_peer(HttpRequest *req) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->connection,
                                                                     MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const union MHD_ConnectionInfo *fdi = MHD_get_connection_info(req->connection,
                                                                      MHD_CONNECTION_INFO_CONNECTION_FD);
        char addr[INET6_ADDRSTRLEN] = "unknown";
        struct ucred cred;
        socklen_t len = sizeof(cred);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);

        if (fdi && getsockname(fdi->connect_fd, (struct sockaddr *) &ss, &sl) == 0 && ss.ss_family == AF_UNIX) {
                req->unix_peer = true;
                if (getsockopt(fdi->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
                        req->have_creds = true;
                        req->uid = cred.uid;
                        req->gid = cred.gid;
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
                request_peer(req);
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

        conn_set_busy(h, connection, true);
        if (req->body_too_large) {
                status = MHD_HTTP_CONTENT_TOO_LARGE;
                resp = http_response_status("PayloadTooLarge", true, "request body is larger than max_body_size (%zu bytes)",
                                            h->max_body);
        } else
                resp = h->handler(h->userdata, req, &status);
        if (!resp) {
                /* No answer could be built (out of memory): the one made at start. Queuing
                 * takes a reference, so it is never used up. */
                ret = MHD_queue_response(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, h->oom);
                return ret;
        }
        ret = MHD_queue_response(connection, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        HttpRequest *req = *con_cls;
        HttpServer *h = cls;

        conn_set_busy(h, connection, false);
        if (!req)
                return;
        free(req->body);
        free(req);
        *con_cls = NULL;
}

static void describe_append(HttpServer *h, const char *what) {
        size_t n = strlen(h->describe);

        snprintf(h->describe + n, sizeof(h->describe) - n, "%s%s", n ? " and " : "", what);
}

/* One libmicrohttpd daemon on a listening socket we own (it closes it when stopped). */
static int start_on_fd(HttpServer *h, int fd, const HttpSettings *s, char *err, size_t errlen) {
        unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char what[160];

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
        h->daemons[h->n_daemons] = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                                                    MHD_OPTION_LISTEN_SOCKET, fd,
                                                    MHD_OPTION_CONNECTION_LIMIT, (unsigned) s->max_connections,
                                                    MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                                    (unsigned) s->max_connections_per_client,
                                                    MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                                                    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) s->idle_timeout,
                                                    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HTTP_CONNECTION_MEMORY,
                                                    MHD_OPTION_UNESCAPE_CALLBACK, unescape_nothing, NULL,
                                                    MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                                                    MHD_OPTION_END);
        if (!h->daemons[h->n_daemons]) {
                snprintf(err, errlen, "cannot serve on %s", what);
                return -EIO;
        }
        h->n_daemons++;
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

int http_server_start(const HttpSettings *s, http_handler_fn handler, void *userdata, HttpServer **ret,
                      char *err, size_t errlen) {
        _cleanup_(http_server_stopp) HttpServer *h = NULL;
        int r, fd;

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->handler = handler;
        h->userdata = userdata;
        h->max_body = s->max_body;
        h->oom = MHD_create_response_from_buffer(strlen(HTTP_OOM_BODY), (void *) HTTP_OOM_BODY,
                                                 MHD_RESPMEM_PERSISTENT);
        if (!h->oom || MHD_add_response_header(h->oom, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES)
                return -ENOMEM;
        pthread_mutex_init(&h->conns_lock, NULL);
        {
                /* The reaper's waits are measured on the monotonic clock. */
                pthread_condattr_t attr;
                pthread_condattr_init(&attr);
                pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
                pthread_cond_init(&h->reaper_cond, &attr);
                pthread_condattr_destroy(&attr);
        }
        h->read_timeout = (usec_t) (s->read_timeout ? s->read_timeout : 30) * USEC_PER_SEC;
        if (pthread_create(&h->reaper, NULL, reaper_thread, h) != 0) {
                snprintf(err, errlen, "cannot start the connection reaper");
                return -EAGAIN;
        }
        h->reaper_started = true;

        if (s->n_fds > 0) {
                for (size_t i = 0; i < s->n_fds; i++) {
                        r = start_on_fd(h, s->fds[i], s, err, errlen);
                        if (r < 0)
                                return r;
                }
        } else {
                fd = listen_tcp(s->address, s->port, err, errlen);
                if (fd < 0)
                        return fd;
                r = start_on_fd(h, fd, s, err, errlen);
                if (r < 0) {
                        close(fd);
                        return r;
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
        *ret = TAKE_PTR(h);
        return 0;
}

HttpServer *http_server_stop(HttpServer *h) {
        if (!h)
                return NULL;
        for (size_t i = 0; i < h->n_daemons; i++)
                MHD_stop_daemon(h->daemons[i]);
        if (h->reaper_started) {
                pthread_mutex_lock(&h->conns_lock);
                h->stopping = true;
                pthread_cond_broadcast(&h->reaper_cond);
                pthread_mutex_unlock(&h->conns_lock);
                pthread_join(h->reaper, NULL);
        }
        pthread_cond_destroy(&h->reaper_cond);
        pthread_mutex_destroy(&h->conns_lock);
        if (h->oom)
                MHD_destroy_response(h->oom);
        if (h->unlink_path) {
                (void) unlink(h->unlink_path);
                free(h->unlink_path);
        }
        free(h);
        return NULL;
}

const char *http_server_describe(HttpServer *h) {
        return h->describe;
}

unsigned http_server_port(HttpServer *h) {
        return h->port;
}
