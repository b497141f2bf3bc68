/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The receiving end of the sd_notify protocol: a datagram socket a parent hands to a child
 * as $NOTIFY_SOCKET, and a bounded wait for the child's READY=1. Used by `visierd --dev` to
 * wait for visier-sim and by the tests to wait for both programs. Never logs.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "clock.h"

typedef struct NotifySocket {
        int fd;
        char path[108];
        char dir[64];
} NotifySocket;

/* Create a socket in a fresh private directory under $TMPDIR (or /tmp). */
int notify_socket_open(NotifySocket *ret);
void notify_socket_close(NotifySocket *n);

/*
 * Receive datagrams until one holds READY=1 or the deadline (monotonic) passes (-ETIMEDOUT).
 * If ret_port is given, the X_LISTEN_PORT= value of that datagram is stored there (0 if absent).
 * Every datagram received is appended, newline-separated, to log (if given, capped at loglen).
 */
int notify_wait_ready(NotifySocket *n, usec_t deadline, unsigned *ret_port, char *log, size_t loglen);

/* Receive one datagram (NUL-terminated) or time out. */
int notify_receive(NotifySocket *n, usec_t deadline, char *buf, size_t buflen);
