/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The request log of the control API (GET /_sim/requests): the last SIM_REQUESTS_MAX calls
 * to Visier's API as they arrived — method, request target (path and query exactly as sent),
 * header lines in order, body — so that tests can state the exact bytes a client sent.
 * Secrets are never kept: the apikey header's value, the VisierASIDToken cookie's value and
 * an Authorization header's value are replaced by "<apikey>", "<token>" and "<credentials>",
 * and a login's body (the password) by "<login form>".
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define SIM_REQUESTS_MAX 512

typedef struct RequestLog RequestLog;

int request_log_new(RequestLog **ret);
RequestLog *request_log_free(RequestLog *l);

/* One header line as received. */
typedef struct RequestLogHeader {
        const char *name, *value;
} RequestLogHeader;

/* Record one call (copies everything; the oldest entry goes when full). */
void request_log_add(RequestLog *l, const char *method, const char *target, const RequestLogHeader *headers,
                     size_t n_headers, const char *body, size_t body_len, bool is_login);

/* {"requests":[{"method","target","headers":[[name,value],...],"body"},...]}, oldest first. */
json_t *request_log_to_json(RequestLog *l);
void request_log_clear(RequestLog *l);
