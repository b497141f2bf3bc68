/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierctl's HTTP client (see client.h). Requests go only to the configured origin: no
 * redirects are followed, so the token is never sent elsewhere. The token is read once from
 * a file that only its owner may read, kept in the Authorization line, and wiped on free.
 */
#include <curl/curl.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "client.h"
#include "clock.h"
#include "macro.h"

struct Client {
        CURL *curl;
        char *base_url;    /* without a trailing slash */
        char *socket_path;
        char *auth_line;   /* "Authorization: Bearer ...", a secret */
        unsigned timeout_sec;
};

_printf_(3, 4) static void client_set_error(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (!err || errlen == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
}

static void secret_freep(char **p) {
        if (*p) {
                explicit_bzero(*p, strlen(*p));
                free(*p);
        }
}

/* Read the token: the file must be a regular file no one but its owner can access. One
 * trailing newline (and a CR before it) is dropped; any other control character is refused,
 * as it could end the header line. */
static int client_read_token(const char *path, char **ret, char *err, size_t errlen) {
        _cleanup_close_ int fd = -1;
        char buf[CLIENT_TOKEN_MAX + 2];
        struct stat st;
        size_t len = 0;
        ssize_t n;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                r = negative_errno();
                client_set_error(err, errlen, "cannot open token file %s: %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                client_set_error(err, errlen, "cannot stat token file %s: %s", path, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                client_set_error(err, errlen, "token file %s is not a regular file", path);
                return -EINVAL;
        }
        if (st.st_mode & (S_IRWXG | S_IRWXO)) {
                client_set_error(err, errlen,
                                 "token file %s is accessible by group or others (mode %04o); "
                                 "make it private with chmod 600",
                                 path, (unsigned) (st.st_mode & 07777));
                return -EPERM;
        }
        while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        explicit_bzero(buf, sizeof(buf));
                        client_set_error(err, errlen, "cannot read token file %s: %s", path, strerror(-r));
                        return r;
                }
                len += (size_t) n;
        }
        if (len > CLIENT_TOKEN_MAX) {
                explicit_bzero(buf, sizeof(buf));
                client_set_error(err, errlen, "token file %s is larger than %d bytes", path, CLIENT_TOKEN_MAX);
                return -EFBIG;
        }
        if (len > 0 && buf[len - 1] == '\n') {
                len--;
                if (len > 0 && buf[len - 1] == '\r')
                        len--;
        }
        r = 0;
        if (len == 0) {
                client_set_error(err, errlen, "token file %s is empty", path);
                r = -EINVAL;
        }
        for (size_t i = 0; r == 0 && i < len; i++)
                if ((unsigned char) buf[i] < 0x20 || buf[i] == 0x7f) {
                        client_set_error(err, errlen, "token file %s holds a control character", path);
                        r = -EINVAL;
                }
        if (r == 0) {
                *ret = strndup(buf, len);
                if (!*ret)
                        r = -ENOMEM;
        }
        explicit_bzero(buf, sizeof(buf));
        return r;
}

int client_new(const ClientConfig *cfg, Client **ret, char *err, size_t errlen) {
        _cleanup_client_ Client *c = NULL;
        const char *url = cfg->url ? cfg->url : CLIENT_DEFAULT_URL;
        size_t n;
        int r;

        if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
                client_set_error(err, errlen, "URL %s does not start with http:// or https://", url);
                return -EINVAL;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->timeout_sec = cfg->timeout_sec ? cfg->timeout_sec : CLIENT_DEFAULT_TIMEOUT_SEC;
        c->base_url = strdup(url);
        if (!c->base_url)
                return -ENOMEM;
        n = strlen(c->base_url);
        while (n > 0 && c->base_url[n - 1] == '/')
                c->base_url[--n] = '\0';
        if (cfg->socket_path) {
                c->socket_path = strdup(cfg->socket_path);
                if (!c->socket_path)
                        return -ENOMEM;
        }
        if (cfg->token_file) {
                _cleanup_(secret_freep) char *token = NULL;

                r = client_read_token(cfg->token_file, &token, err, errlen);
                if (r < 0)
                        return r;
                if (asprintf(&c->auth_line, "Authorization: Bearer %s", token) < 0) {
                        c->auth_line = NULL;
                        return -ENOMEM;
                }
        }
        c->curl = curl_easy_init();
        if (!c->curl)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

Client *client_free(Client *c) {
        if (!c)
                return NULL;
        if (c->curl)
                curl_easy_cleanup(c->curl);
        secret_freep(&c->auth_line);
        free(c->base_url);
        free(c->socket_path);
        free(c);
        return NULL;
}

unsigned client_timeout_sec(const Client *c) {
        return c->timeout_sec;
}

typedef struct Buffer {
        char *data;
        size_t len;
        bool overflow;
} Buffer;

static size_t client_on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        Buffer *b = userdata;
        size_t n = size * nmemb;
        char *p;

        if (n > CLIENT_REPLY_MAX - b->len) {
                b->overflow = true;
                return 0;
        }
        p = realloc(b->data, b->len + n + 1);
        if (!p)
                return 0;
        memcpy(p + b->len, ptr, n);
        b->data = p;
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

static int client_errno_from_curl(CURLcode code) {
        switch (code) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        default:
                return -EIO;
        }
}

static int client_header_add(struct curl_slist **list, const char *line) {
        struct curl_slist *l = curl_slist_append(*list, line);

        if (!l)
                return -ENOMEM;
        *list = l;
        return 0;
}

/* The header list may hold a copy of the token: wipe it before it is freed. */
static void client_headers_free(struct curl_slist *list) {
        for (struct curl_slist *l = list; l; l = l->next)
                explicit_bzero(l->data, strlen(l->data));
        curl_slist_free_all(list);
}

/* The header lines of one request and the options every request shares. On success the
 * caller owns *ret_list and must give it to client_request_done. */
static int client_request_setup(Client *c, const char *method, const char *url, const char *const *headers,
                                bool json_body, char *curl_err, struct curl_slist **ret_list) {
        struct curl_slist *list = NULL;

        for (size_t i = 0; headers && headers[i]; i++)
                if (client_header_add(&list, headers[i]) < 0)
                        goto fail;
        if (json_body && client_header_add(&list, "Content-Type: application/json") < 0)
                goto fail;
        if (c->auth_line && client_header_add(&list, c->auth_line) < 0)
                goto fail;
        /* What [listen] require_request_header asks for; harmless where it is off. */
        if (client_header_add(&list, "X-Visierd-Request: true") < 0)
                goto fail;
        if (client_header_add(&list, "Expect:") < 0) /* no 100-continue round trip */
                goto fail;

        curl_easy_reset(c->curl);
        curl_easy_setopt(c->curl, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
        curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
        curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
        if (c->socket_path)
                curl_easy_setopt(c->curl, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
        curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
        /* Never through a proxy the environment names: it would read the client token. */
        curl_easy_setopt(c->curl, CURLOPT_PROXY, "");
        curl_easy_setopt(c->curl, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, list);
        curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, curl_err);
        curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "visierctl/" PACKAGE_VERSION);
        if (!streq(method, "GET"))
                curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
        *ret_list = list;
        return 0;
fail:
        client_headers_free(list);
        return -ENOMEM;
}

static void client_request_done(Client *c, struct curl_slist *list) {
        client_headers_free(list);
        curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, NULL);
}

/* The answer in buf as a ClientReply (buf's data moves into it). */
static int client_reply_take(long status, Buffer *buf, ClientReply *ret) {
        if (!buf->data && !(buf->data = strdup("")))
                return -ENOMEM;
        ret->status = status;
        ret->json = json_loadb(buf->data, buf->len, JSON_DECODE_ANY, NULL);
        ret->body = TAKE_PTR(buf->data);
        ret->len = buf->len;
        return 0;
}

int client_call(Client *c, const char *method, const char *path, const char *const *headers, const char *body,
                size_t body_len, unsigned long timeout_ms, ClientReply *ret, char *err, size_t errlen) {
        struct curl_slist *list = NULL;
        char curl_err[CURL_ERROR_SIZE] = "";
        _cleanup_free_ char *url = NULL;
        Buffer buf = {};
        CURLcode code;
        long status = 0;
        int r;

        if (asprintf(&url, "%s%s", c->base_url, path) < 0) {
                url = NULL;
                return -ENOMEM;
        }
        r = client_request_setup(c, method, url, headers, body != NULL, curl_err, &list);
        if (r < 0)
                return r;
        curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long) (timeout_ms ? timeout_ms : c->timeout_sec * 1000UL));
        curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, client_on_write);
        curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &buf);
        if (body || streq(method, "POST")) {
                curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) (body ? body_len : 0));
                curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body ? body : "");
        }

        code = curl_easy_perform(c->curl);
        if (code != CURLE_OK) {
                if (buf.overflow) {
                        client_set_error(err, errlen, "the answer is larger than %u bytes", CLIENT_REPLY_MAX);
                        r = -EFBIG;
                } else if (c->socket_path && code == CURLE_COULDNT_CONNECT) {
                        /* libcurl's message names the URL's host, which a unix socket does not use. */
                        client_set_error(err, errlen, "cannot connect to visierd's unix socket %s (%s)", c->socket_path,
                                         access(c->socket_path, F_OK) < 0 ? "no such socket" : "connection refused");
                        r = client_errno_from_curl(code);
                } else {
                        client_set_error(err, errlen, "%s %s%s%s: %s", method, url,
                                         c->socket_path ? " over unix socket " : "", strempty(c->socket_path),
                                         curl_err[0] ? curl_err : curl_easy_strerror(code));
                        r = client_errno_from_curl(code);
                }
                goto out;
        }
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
        r = client_reply_take(status, &buf, ret);
out:
        client_request_done(c, list);
        free(buf.data);
        return r;
}

/* One streamed GET (see client_stream). */
typedef struct Stream {
        CURL *curl;
        ClientSink sink;
        void *userdata;
        long status;    /* 0 until the first piece of the body */
        Buffer answer;  /* the body of an answer that is not 2xx */
        uint64_t bytes; /* given to the sink */
        int sink_error;
        usec_t last_data, stall_usec;
        bool stalled;
} Stream;

static bool client_status_ok(long status) {
        return status >= 200 && status < 300;
}

static size_t client_stream_on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        Stream *s = userdata;
        size_t n = size * nmemb;
        int r;

        s->last_data = clock_now();
        if (s->status == 0) /* the headers are in by the time the body starts */
                curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
        if (!client_status_ok(s->status))
                return client_on_write(ptr, size, nmemb, &s->answer);
        r = s->sink(ptr, n, s->userdata);
        if (r < 0) {
                s->sink_error = r;
                return 0;
        }
        s->bytes += n;
        return n;
}

/* Called at least once a second, also while nothing arrives: ends a transfer that stalled. */
static int client_stream_on_progress(void *userdata, curl_off_t dltotal _unused_, curl_off_t dlnow _unused_,
                                     curl_off_t ultotal _unused_, curl_off_t ulnow _unused_) {
        Stream *s = userdata;

        if (clock_now() - s->last_data < s->stall_usec)
                return 0;
        s->stalled = true;
        return 1;
}

int client_stream(Client *c, const char *path, ClientSink sink, void *userdata, ClientReply *ret,
                  uint64_t *ret_bytes, char *err, size_t errlen) {
        Stream s = { .curl = c->curl, .sink = sink, .userdata = userdata,
                     .stall_usec = c->timeout_sec * USEC_PER_SEC };
        struct curl_slist *list = NULL;
        char curl_err[CURL_ERROR_SIZE] = "";
        _cleanup_free_ char *url = NULL;
        CURLcode code;
        long status = 0;
        int r;

        *ret_bytes = 0;
        if (asprintf(&url, "%s%s", c->base_url, path) < 0) {
                url = NULL;
                return -ENOMEM;
        }
        r = client_request_setup(c, "GET", url, NULL, false, curl_err, &list);
        if (r < 0)
                return r;
        /* No whole-request timeout, which would cut off a long export: a stall ends it. */
        curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, (long) (c->timeout_sec * 1000UL));
        curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, client_stream_on_write);
        curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(c->curl, CURLOPT_XFERINFOFUNCTION, client_stream_on_progress);
        curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, &s);
        curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, 0L);

        s.last_data = clock_now();
        code = curl_easy_perform(c->curl);
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
        *ret_bytes = s.bytes;
        if (code == CURLE_OK)
                r = client_reply_take(status, &s.answer, ret);
        else if (s.sink_error < 0)
                r = s.sink_error;
        else if (s.stalled) {
                client_set_error(err, errlen, "GET %s: nothing came for %u s", url, c->timeout_sec);
                r = -ETIMEDOUT;
        } else if (s.answer.overflow) {
                client_set_error(err, errlen, "the answer is larger than %u bytes", CLIENT_REPLY_MAX);
                r = -EFBIG;
        } else {
                client_set_error(err, errlen, "GET %s%s%s: %s", url, c->socket_path ? " over unix socket " : "",
                                 strempty(c->socket_path), curl_err[0] ? curl_err : curl_easy_strerror(code));
                r = code == CURLE_OUT_OF_MEMORY ? -ENOMEM
                    : client_status_ok(status)  ? -EPIPE /* the answer began, and broke off */
                                                : client_errno_from_curl(code);
        }
        client_request_done(c, list);
        free(s.answer.data);
        return r;
}

char *client_escape(Client *c, const char *s) {
        char *e = curl_easy_escape(c->curl, s, 0), *copy;

        if (!e)
                return NULL;
        copy = strdup(e);
        curl_free(e);
        return copy;
}

const char *client_reply_message(const ClientReply *r) {
        const char *m = json_string_value(json_object_get(r->json, "message"));

        if (m && *m)
                return m;
        return r->body && *r->body ? r->body : "(empty answer)";
}

void client_reply_done(ClientReply *r) {
        free(r->body);
        json_decref(r->json);
        *r = (ClientReply) {};
}
