/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The upstream client's TCP sockets and the bound on their delivery (see tcpbound.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "macro.h"
#include "tcpbound.h"

typedef struct Entry {
        curl_socket_t fd;
        bool known; /* the addresses below are read (once connected) */
        usec_t bound_until; /* clock_now() by which the latest bound set wants delivery */
        int local_port, peer_port;
        char local_ip[INET6_ADDRSTRLEN], peer_ip[INET6_ADDRSTRLEN];
} Entry;

struct TcpBound {
        pthread_mutex_t lock;
        Entry *v;
        size_t n, cap;
};

int tcpbound_new(TcpBound **ret) {
        TcpBound *b = calloc(1, sizeof(*b));

        if (!b)
                return -ENOMEM;
        pthread_mutex_init(&b->lock, NULL);
        *ret = b;
        return 0;
}

TcpBound *tcpbound_free(TcpBound *b) {
        if (!b)
                return NULL;
        pthread_mutex_destroy(&b->lock);
        free(b->v);
        free(b);
        return NULL;
}

/* An address as text and its port; false for a family other than IPv4 and IPv6. */
static bool address_text(const struct sockaddr_storage *a, char *ip, size_t len, int *ret_port) {
        if (a->ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) a;

                *ret_port = ntohs(in->sin_port);
                return inet_ntop(AF_INET, &in->sin_addr, ip, (socklen_t) len) != NULL;
        }
        if (a->ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) a;

                *ret_port = ntohs(in6->sin6_port);
                return inet_ntop(AF_INET6, &in6->sin6_addr, ip, (socklen_t) len) != NULL;
        }
        return false;
}

/* Read an entry's addresses once its socket is connected. */
static bool entry_known(Entry *e) {
        struct sockaddr_storage local, peer;
        socklen_t llen = sizeof(local), plen = sizeof(peer);

        if (e->known)
                return true;
        if (getpeername(e->fd, (struct sockaddr *) &peer, &plen) < 0 ||
            getsockname(e->fd, (struct sockaddr *) &local, &llen) < 0)
                return false; /* not connected yet */
        if (!address_text(&local, e->local_ip, sizeof(e->local_ip), &e->local_port) ||
            !address_text(&peer, e->peer_ip, sizeof(e->peer_ip), &e->peer_port))
                return false;
        e->known = true;
        return true;
}

curl_socket_t tcpbound_open(void *userdata, curlsocktype purpose, struct curl_sockaddr *address) {
        TcpBound *b = userdata;
        const struct linger abort_on_close = { .l_onoff = 1, .l_linger = 0 };
        curl_socket_t fd;

        fd = socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
        if (fd < 0)
                return CURL_SOCKET_BAD;
        if (purpose != CURLSOCKTYPE_IPCXN || (address->family != AF_INET && address->family != AF_INET6))
                return fd;
        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close)) < 0)
                goto fail;
        pthread_mutex_lock(&b->lock);
        if (b->n == b->cap) {
                size_t cap = b->cap ? 2 * b->cap : 16;
                Entry *v = reallocarray(b->v, cap, sizeof(*v));

                if (!v) {
                        pthread_mutex_unlock(&b->lock);
                        goto fail;
                }
                b->v = v;
                b->cap = cap;
        }
        b->v[b->n++] = (Entry) { .fd = fd };
        pthread_mutex_unlock(&b->lock);
        return fd;
fail:
        close(fd);
        return CURL_SOCKET_BAD;
}

int tcpbound_close(void *userdata, curl_socket_t fd) {
        TcpBound *b = userdata;

        pthread_mutex_lock(&b->lock);
        for (size_t i = 0; i < b->n; i++)
                if (b->v[i].fd == fd) {
                        b->v[i] = b->v[--b->n];
                        break;
                }
        pthread_mutex_unlock(&b->lock);
        return close(fd);
}

int tcpbound_deliver_within(TcpBound *b, const char *local_ip, int local_port, const char *peer_ip, int peer_port,
                            usec_t within) {
        usec_t now = clock_now(), until = now + within;
        int r = -ENOENT;

        pthread_mutex_lock(&b->lock);
        for (size_t i = 0; i < b->n; i++) {
                Entry *e = &b->v[i];
                unsigned ms;

                if (!entry_known(e) || e->local_port != local_port || e->peer_port != peer_port ||
                    !streq(e->local_ip, local_ip) || !streq(e->peer_ip, peer_ip))
                        continue;
                /* Requests multiplexed on one connection (HTTP/2) share its timeout: a bound
                 * not yet over belongs to a request that may still be on its way, and is never
                 * loosened by a later one. */
                if (e->bound_until > now && e->bound_until < until)
                        until = e->bound_until;
                e->bound_until = until;
                ms = (until - now) / USEC_PER_MSEC >= UINT32_MAX ? UINT32_MAX
                                                                 : (unsigned) ((until - now) / USEC_PER_MSEC);
                if (ms == 0)
                        ms = 1;
                r = setsockopt(e->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms)) < 0 ? -errno : 0;
                break;
        }
        pthread_mutex_unlock(&b->lock);
        return r;
}
