/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Notify socket receiver (see notify.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

int notify_socket_open(NotifySocket *ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *tmp = getenv("TMPDIR");
        NotifySocket n = { .fd = -1 };
        int r;

        snprintf(n.dir, sizeof(n.dir), "%s/notify.XXXXXX", tmp && strlen(tmp) < 40 ? tmp : "/tmp");
        if (!mkdtemp(n.dir))
                return -errno;
        snprintf(n.path, sizeof(n.path), "%s/sock", n.dir);
        n.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (n.fd < 0) {
                r = -errno;
                rmdir(n.dir);
                return r;
        }
        memcpy(sa.sun_path, n.path, strlen(n.path) + 1);
        if (bind(n.fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = -errno;
                close(n.fd);
                rmdir(n.dir);
                return r;
        }
        *ret = n;
        return 0;
}

void notify_socket_close(NotifySocket *n) {
        if (n->fd >= 0) {
                close(n->fd);
                unlink(n->path);
                rmdir(n->dir);
        }
        n->fd = -1;
}

int notify_receive(NotifySocket *n, usec_t deadline, char *buf, size_t buflen) {
        for (;;) {
                struct pollfd p = { .fd = n->fd, .events = POLLIN };
                usec_t now = clock_now();
                ssize_t len;
                int r;

                if (now >= deadline)
                        return -ETIMEDOUT;
                r = poll(&p, 1, (int) ((deadline - now) / USEC_PER_MSEC) + 1);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        continue;
                len = recv(n->fd, buf, buflen - 1, MSG_DONTWAIT);
                if (len < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                continue;
                        return -errno;
                }
                buf[len] = '\0';
                return 0;
        }
}

static bool has_line(const char *msg, const char *line) {
        size_t n = strlen(line);

        for (const char *p = msg; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
                if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
                        return true;
        return false;
}

int notify_wait_ready(NotifySocket *n, usec_t deadline, unsigned *ret_port, char *log, size_t loglen) {
        char buf[4096];
        int r;

        for (;;) {
                r = notify_receive(n, deadline, buf, sizeof(buf));
                if (r < 0)
                        return r;
                if (log) {
                        size_t used = strnlen(log, loglen);
                        if (used + 1 < loglen)
                                snprintf(log + used, loglen - used, "%s\n", buf);
                }
                if (!has_line(buf, "READY=1"))
                        continue;
                if (ret_port) {
                        const char *p = strstr(buf, "X_LISTEN_PORT=");
                        *ret_port = p ? (unsigned) strtoul(p + strlen("X_LISTEN_PORT="), NULL, 10) : 0;
                }
                return 0;
        }
}
