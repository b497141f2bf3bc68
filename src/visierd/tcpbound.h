/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The upstream client's TCP sockets, opened and closed for libcurl, so that a request about to
 * be sent can be given a bound on how long its bytes may take to be delivered.
 *
 * libcurl tells CURLOPT_PREREQFUNCTION the connection's addresses, not its descriptor
 * (CURLINFO_ACTIVESOCKET is not set yet at that point in libcurl 7.88), so the sockets are
 * opened here (CURLOPT_OPENSOCKETFUNCTION) and kept in a table until libcurl closes them
 * (CURLOPT_CLOSESOCKETFUNCTION). Each is opened with SO_LINGER 0: a connection libcurl gives
 * up on (a timeout, an abort) or a process that dies discards what it has not sent yet,
 * instead of the kernel delivering it later. tcpbound_deliver_within() then sets
 * TCP_USER_TIMEOUT on the request's connection: a byte not acknowledged by the peer within
 * that time (lost, or stuck behind a window the peer keeps shut) drops the connection, so
 * the request never arrives later than that after it was sent.
 *
 * Thread-safe: the blocking calls' threads and the loop share the table.
 */
#include <curl/curl.h>

#include "clock.h"

typedef struct TcpBound TcpBound;

int tcpbound_new(TcpBound **ret);
TcpBound *tcpbound_free(TcpBound *b);

/* libcurl's open and close socket callbacks; userdata is the TcpBound. */
curl_socket_t tcpbound_open(void *userdata, curlsocktype purpose, struct curl_sockaddr *address);
int tcpbound_close(void *userdata, curl_socket_t fd);

/*
 * Bytes sent on the connection from local_ip:local_port to peer_ip:peer_port (the arguments
 * of CURLOPT_PREREQFUNCTION) must be acknowledged within `within` of being sent, or the
 * connection is dropped (TCP_USER_TIMEOUT, at least 1 ms). A bound set earlier on the same
 * connection and not over yet is kept when it is the shorter (HTTP/2 multiplexes requests on
 * one connection). 0, -ENOENT when no socket of the table has those addresses (libcurl opened
 * it otherwise), or the setsockopt's error.
 */
int tcpbound_deliver_within(TcpBound *b, const char *local_ip, int local_port, const char *peer_ip, int peer_port,
                            usec_t within);
