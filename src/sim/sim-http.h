/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulator's HTTP face: the Visier /v1 API (auth, rate limit, faults, model reads,
 * permissions scoped by tenant and draft project, draft projects, data queries streamed in
 * chunks) and
 * the /_sim control API, served by libmicrohttpd with a thread per connection.
 */
#pragma once

#include "sim-requests.h"

#include <stdint.h>
#include <sys/socket.h>

#include "sim-auth.h"
#include "sim-counters.h"
#include "sim-faults.h"
#include "sim-model.h"
#include "sim-permissions.h"
#include "sim-rate.h"
#include "sim-users.h"
#include "sim-versions.h"

/* Largest request body accepted; more is answered 413. */
#define HTTP_BODY_MAX 8192
/* Largest body of a permission write (up to 1000 PermissionDTOs). */
#define HTTP_WRITE_BODY_MAX (4 * 1024 * 1024)
/* Largest body of a data query (up to QUERY_COLUMNS_MAX columns, filters, axes). */
#define HTTP_QUERY_BODY_MAX (64 * 1024)
#define HTTP_CONNECTIONS_MAX 2048
#define HTTP_CONNECTION_TIMEOUT_SEC 30

/* Everything a request may touch; owned by main, borrowed by the HTTP layer. */
typedef struct SimServer {
        Model *model;
        Permissions *permissions;
        Users *users;
        Versions *versions;
        Auth *auth;
        Rate *rate;
        Faults *faults;
        Counters *counters;
        RequestLog *requests;
} SimServer;

typedef struct HttpDaemon HttpDaemon;

/* Listen on ADDR (port 0 picks one) and serve S. Writes the bound port to *ret_port. */
int http_start(SimServer *s, const struct sockaddr *addr, HttpDaemon **ret, uint16_t *ret_port);

/* Stop serving and wait for connection threads. Accepts NULL. */
HttpDaemon *http_stop(HttpDaemon *d);
