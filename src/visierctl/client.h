/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierctl's HTTP client for visierd's local API: one libcurl handle talking TCP or a unix
 * socket, with the bearer token read from a private file. It never prints and never puts
 * the token in an error message; it returns negative errno values and fills err.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLIENT_DEFAULT_URL "http://127.0.0.1:8420"
/* visierd's socket under its unit (visierd.socket), used when it exists and nothing else is said. */
#define CLIENT_DEFAULT_SOCKET "/run/visierd/visierd.sock"
#define CLIENT_DEFAULT_TIMEOUT_SEC 30
#define CLIENT_REPLY_MAX (64u * 1024u * 1024u) /* largest answer buffered */
#define CLIENT_TOKEN_MAX 4096                   /* largest token file read */
#define CLIENT_ERROR_MAX 512

typedef struct ClientConfig {
        const char *url;         /* base URL; NULL for CLIENT_DEFAULT_URL */
        const char *socket_path; /* unix socket to connect to instead of the URL's host, or NULL */
        const char *token_file;  /* file holding a bearer token, or NULL */
        unsigned timeout_sec;    /* whole-request timeout; 0 for CLIENT_DEFAULT_TIMEOUT_SEC */
} ClientConfig;

typedef struct Client Client;

typedef struct ClientReply {
        long status;
        char *body; /* NUL-terminated */
        size_t len;
        json_t *json; /* the body parsed, or NULL when it is not JSON */
} ClientReply;

/* Errors: -EINVAL (bad URL, empty or malformed token), -EPERM (token file readable by group
 * or others), -EFBIG (token file too large), -errno from opening the token file, -ENOMEM. */
int client_new(const ClientConfig *cfg, Client **ret, char *err, size_t errlen);
Client *client_free(Client *c);

/* One request; path is appended to the base URL. headers is NULL or a NULL-terminated list of
 * "Name: value" lines. timeout_ms 0 means the client's timeout. Returns 0 whenever visierd
 * answered (whatever the status), -ECONNREFUSED when it could not be reached, -ETIMEDOUT,
 * -EFBIG for an answer over CLIENT_REPLY_MAX, -EIO for other transport errors, -ENOMEM. */
int client_call(Client *c, const char *method, const char *path, const char *const *headers, const char *body,
                size_t body_len, unsigned long timeout_ms, ClientReply *ret, char *err, size_t errlen);
unsigned client_timeout_sec(const Client *c);

/* Takes each piece of a streamed answer as it arrives; returns 0, or a negative errno to stop
 * the transfer (client_stream then returns that errno). */
typedef int (*ClientSink)(const void *data, size_t len, void *userdata);

/* A GET whose 2xx answer is handed to sink piece by piece and never held whole; any other
 * answer is buffered in ret (as client_call does) and sink is not called. There is no
 * whole-request timeout: the transfer fails when nothing arrives for the client's timeout.
 * *ret_bytes counts the bytes given to sink. Returns 0 when the answer came whole (ret->status
 * tells which kind), -EPIPE when a 2xx answer broke off midway, -ETIMEDOUT when nothing came
 * for the timeout, the sink's errno, or client_call's other errors. */
int client_stream(Client *c, const char *path, ClientSink sink, void *userdata, ClientReply *ret,
                  uint64_t *ret_bytes, char *err, size_t errlen);

/* s URL-escaped (every byte but A-Z a-z 0-9 - . _ ~ as %XX), or NULL; the caller frees. */
char *client_escape(Client *c, const char *s);

/* The message of a Visier Status answer, else the body itself (never NULL). */
const char *client_reply_message(const ClientReply *r);
void client_reply_done(ClientReply *r);

static inline void client_freep(Client **c) {
        client_free(*c);
}
#define _cleanup_client_ __attribute__((cleanup(client_freep)))
