/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Upstream client (see upstream.h).
 *
 * DESIGN: the settings live in a reference-counted snapshot, so a reload swaps them without
 * disturbing calls in flight. The rules of a call are written once, as functions that decide
 * and never wait (rule_*): which token and budget errors end it, what a transfer error or an
 * answer means, whether and after how long to try again. The blocking calls sleep for the
 * delay a rule gives; the calls on the loop arm a timer for it. Building a request (headers,
 * method, body, options) is shared too, so both kinds put the same bytes on the wire.
 *
 * Connections. libcurl's CURLSHOPT_SHARE documentation says that sharing the connection cache
 * (CURL_LOCK_DATA_CONNECT) between handles used by concurrent threads is not supported, even
 * with lock callbacks; the old share did exactly that. So the share holds only the DNS cache
 * and the TLS session cache, which libcurl does support across threads behind our locks. A
 * pooled blocking easy handle keeps its own idle connection (one thread uses it at a time); a
 * blocking stream runs in a multi handle of its own, whose connection ends with it; the calls
 * on the loop share the one multi handle's cache, sized by max_connections (libcurl's default
 * shrinks with the number of transfers, closing connections after every burst).
 *
 * The loop's side: every call and stream started there is an UpstreamCall (an "op") with one
 * time source for its next step — a wait for the rate budget, a backoff, a deadline, or a
 * notification due. libcurl's callbacks only record and schedule; user callbacks run from
 * that time source or after curl_multi_socket_action() has returned, never inside libcurl.
 *
 * Secrets reach libcurl only inside header lists and a form body that are wiped before they
 * are freed.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>

#include "tcpbound.h"
#include "upstream.h"

/* libcurl hands the write callback at most CURL_MAX_WRITE_SIZE bytes at once; a chunk must fit
 * a stream's buffer whole, and resuming at half full must leave room for one. */
_Static_assert(UPSTREAM_STREAM_BUFFER >= 4 * CURL_MAX_WRITE_SIZE, "stream buffer smaller than libcurl's chunks");

/* A pooled blocking easy handle is used by one thread at a time, so one idle connection in its
 * own cache is all it can reuse. */
#define UPSTREAM_HANDLE_CONNECTIONS 1L

/* How long after its deadline a call on the loop still in libcurl is cut short by us: libcurl's
 * own timeout (at the deadline) normally ends it first. */
#define UPSTREAM_DEADLINE_GRACE (100 * USEC_PER_MSEC)

typedef struct Settings {
        unsigned refs;
        char *base_url, *username, *ca_file, *proxy;
        Secret *apikey, *password;
        usec_t connect_timeout, request_timeout;
        unsigned max_retries;
        size_t max_response;
        unsigned max_connections;
} Settings;

/* An io source libcurl asked for, kept in a list so none outlives the multi handle. */
typedef struct GlueSocket {
        sd_event_source *io;
        struct GlueSocket *prev, *next;
} GlueSocket;

struct Upstream {
        pthread_mutex_t lock; /* settings, the blocking pool, stats */
        Settings *settings;
        RateLimit *rl;
        Fleet *fleet; /* fleet mode: the shared budget instead of rl, which keeps this node's share */
        unsigned fleet_minute_cap, fleet_hour_cap; /* the tenant's caps, as rl had them at upstream_set_fleet() */
        TokenKeeper *tk;

        CURLSH *share; /* DNS and TLS sessions only: see DESIGN */
        TcpBound *tcp; /* every connection's socket, for on_prereq's delivery bound */
        pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

        CURL *pool[UPSTREAM_POOL_MAX];
        size_t pool_n;

        UpstreamStats stats;
        upstream_observer_fn observer;
        void *observer_userdata;
        upstream_budget_wait_fn budget_wait;
        void *budget_wait_userdata;

        /* The loop's side, touched on the loop's thread only (token_fd also by the keeper's
         * thread, through token_notify, between subscribe and unsubscribe). */
        sd_event *event;
        CURLM *multi;
        long multi_maxconnects;
        sd_event_source *curl_timer;
        sd_event_source *curl_defer; /* libcurl asked to be called at once (timeout 0) */
        GlueSocket *sockets;
        int token_fd;
        sd_event_source *token_source;
        bool subscribed;
        CURL *loop_pool[UPSTREAM_POOL_MAX];
        size_t loop_pool_n;
        UpstreamCall *ops; /* every call and stream started on the loop and not yet freed */
};

typedef struct Transfer {
        char *body;
        size_t len, cap, max;
        bool too_large;
        char *content_type;
        long remaining_minute, remaining_hour;
        long retry_after; /* seconds, -1 if absent */
        usec_t send_by;   /* clock_now(): a request not on its way by then is not sent (0: no bound) */
        /* For on_prereq's check of the budget's send slack: */
        Upstream *u;
        const UpstreamRequest *req; /* what a new take is for (background or not, the endpoint) */
        usec_t taken_at;            /* clock_now() at the call's budget take (0: no budget) */
        bool unsent;                /* on_prereq held the request back: it never left */
} Transfer;

/* The body bytes of a stream not yet read: a ring of UPSTREAM_STREAM_BUFFER bytes. */
typedef struct StreamBuffer {
        char *data;
        size_t head, len;
        bool paused; /* libcurl holds back a chunk that did not fit */
} StreamBuffer;

/* The rules' state over the attempts of one call, the same for every kind of call. */
typedef struct CallState {
        usec_t deadline;
        unsigned attempts;        /* sent */
        unsigned failed_attempts; /* network errors and 5xx, for the backoff */
        bool retried_401;         /* the latest answer refused the token */
        bool maybe_applied;       /* an attempt may have reached Visier's application */
} CallState;

typedef enum OpKind {
        OP_CALL,
        OP_STREAM,
} OpKind;

typedef enum OpState {
        OP_TOKEN,   /* next: take a token, or wait for the keeper's login */
        OP_BUDGET,  /* next: take a call from the rate budget, or wait for one */
        OP_SENDING, /* the attempt is in the multi handle (a stream: its headers are not handed over) */
        OP_BODY,    /* a stream whose headers were handed over: its body is flowing */
        OP_FAILED,  /* a stream that ended before its headers were handed over (on_headers said so) */
} OpState;

struct UpstreamCall {
        Upstream *u;
        UpstreamCall *prev, *next; /* u->ops */
        OpKind kind;
        OpState state;
        bool waiting_token;

        Settings *s;
        UpstreamRequest req; /* pointing into the copies below */
        char *method, *path, *query, *endpoint, *body, **headers;
        char *url;
        CallState cs;
        Secret *token; /* between taking it and building the attempt's headers */
        uint64_t generation;
        usec_t started; /* the attempt in flight */

        sd_event_source *timer; /* the next step */
        sd_event_source *defer; /* the next step, when it is due now */
        CURL *h;
        struct curl_slist *header_list;
        Transfer t;

        /* OP_CALL */
        upstream_done_fn done;
        void *userdata;

        /* OP_STREAM */
        UpstreamStream *stream;
        upstream_stream_headers_fn on_headers;
        StreamBuffer sb;
        bool headers_done, body_done;
        CURLcode result;
        long status;
        void (*notify)(void *userdata);
        void *notify_userdata;
};

struct UpstreamStream {
        Upstream *u;
        UpstreamCall *op; /* a stream on the loop; NULL for a blocking one (or after detach) */

        /* Blocking streams only. */
        Settings *s;
        CURLM *multi;
        CURL *h;
        struct curl_slist *headers;
        Transfer t; /* header fields of the answer */
        StreamBuffer sb;
        bool done, headers_done;
        CURLcode result;
        long status;
        usec_t started;
        const char *endpoint;
};

/* Every option is checked: a libcurl that refuses one (out of memory, or built without what we
 * rely on) fails the call rather than sending something else. For functions returning int. */
#define SETOPT(h, opt, value)                                                 \
        do {                                                                  \
                CURLcode _c = curl_easy_setopt((h), (opt), (value));          \
                if (_c != CURLE_OK)                                           \
                        return _c == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL; \
        } while (0)

static Settings *settings_unref(Settings *s) {
        if (!s || --s->refs > 0)
                return NULL;
        free(s->base_url);
        free(s->username);
        free(s->ca_file);
        free(s->proxy);
        secret_free(s->apikey);
        secret_free(s->password);
        free(s);
        return NULL;
}

static int settings_new(const UpstreamSettings *in, Settings **ret) {
        Settings *s;
        size_t n;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->refs = 1;
        s->base_url = strdup(in->base_url);
        /* base_url is an origin; strip a trailing slash so paths join cleanly. */
        if (s->base_url && (n = strlen(s->base_url)) > 0 && s->base_url[n - 1] == '/')
                s->base_url[n - 1] = '\0';
        s->username = strdup(in->username);
        s->ca_file = in->ca_file ? strdup(in->ca_file) : NULL;
        s->proxy = strdup(in->proxy ? in->proxy : "");
        s->apikey = secret_dup(in->apikey);
        s->password = secret_dup(in->password);
        s->connect_timeout = in->connect_timeout;
        s->request_timeout = in->request_timeout;
        s->max_retries = in->max_retries;
        s->max_response = in->max_response;
        s->max_connections = in->max_connections ? in->max_connections : UPSTREAM_CONNECTIONS_DEFAULT;
        if (!s->base_url || !s->username || (in->ca_file && !s->ca_file) || !s->proxy || !s->apikey || !s->password) {
                s->refs = 1;
                settings_unref(s);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}

static Settings *settings_get(Upstream *u) {
        Settings *s;

        pthread_mutex_lock(&u->lock);
        s = u->settings;
        s->refs++;
        pthread_mutex_unlock(&u->lock);
        return s;
}

static void settings_put(Upstream *u, Settings *s) {
        pthread_mutex_lock(&u->lock);
        settings_unref(s);
        pthread_mutex_unlock(&u->lock);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userdata) {
        Upstream *u = userdata;
        pthread_mutex_lock(&u->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userdata) {
        Upstream *u = userdata;
        pthread_mutex_unlock(&u->share_locks[data]);
}

static int share_setup(Upstream *u) {
        CURLSHcode c;

        u->share = curl_share_init();
        if (!u->share)
                return -ENOMEM;
        c = curl_share_setopt(u->share, CURLSHOPT_LOCKFUNC, share_lock);
        if (c == CURLSHE_OK)
                c = curl_share_setopt(u->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        if (c == CURLSHE_OK)
                c = curl_share_setopt(u->share, CURLSHOPT_USERDATA, u);
        /* Not CURL_LOCK_DATA_CONNECT: see DESIGN. */
        if (c == CURLSHE_OK)
                c = curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        if (c == CURLSHE_OK)
                c = curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        if (c != CURLSHE_OK)
                return c == CURLSHE_NOMEM ? -ENOMEM : -EINVAL;
        return 0;
}

int upstream_new(const UpstreamSettings *s, RateLimit *rl, Upstream **ret) {
        _cleanup_(upstream_freep) Upstream *u = NULL;
        int r;

        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        pthread_mutex_init(&u->lock, NULL);
        for (size_t i = 0; i < ELEMENTSOF(u->share_locks); i++)
                pthread_mutex_init(&u->share_locks[i], NULL);
        u->token_fd = -1;
        u->rl = rl;
        r = settings_new(s, &u->settings);
        if (r < 0)
                return r;
        r = share_setup(u);
        if (r < 0)
                return r;
        r = tcpbound_new(&u->tcp);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(u);
        return 0;
}

Upstream *upstream_free(Upstream *u) {
        if (!u)
                return NULL;
        upstream_detach_event(u);
        for (size_t i = 0; i < u->pool_n; i++)
                curl_easy_cleanup(u->pool[i]);
        if (u->share)
                curl_share_cleanup(u->share);
        if (u->settings) {
                u->settings->refs = 1;
                settings_unref(u->settings);
        }
        for (size_t i = 0; i < ELEMENTSOF(u->share_locks); i++)
                pthread_mutex_destroy(&u->share_locks[i]);
        pthread_mutex_destroy(&u->lock);
        tcpbound_free(u->tcp); /* after every handle: libcurl closes sockets through it */
        free(u);
        return NULL;
}

int upstream_update(Upstream *u, const UpstreamSettings *in) {
        Settings *s, *old;
        int r;

        r = settings_new(in, &s);
        if (r < 0)
                return r;
        pthread_mutex_lock(&u->lock);
        old = u->settings;
        u->settings = s;
        settings_unref(old);
        pthread_mutex_unlock(&u->lock);
        return 0;
}

void upstream_set_observer(Upstream *u, upstream_observer_fn fn, void *userdata) {
        u->observer = fn;
        u->observer_userdata = userdata;
}

void upstream_set_fleet(Upstream *u, Fleet *fleet) {
        if (u->fleet != fleet) /* set before the first call; a reload passes the same one */
                u->fleet = fleet;
        if (u->rl) {
                unsigned minute, hour;

                /* Read by calls on any thread: a reload sets them again. */
                ratelimit_caps(u->rl, &minute, &hour);
                __atomic_store_n(&u->fleet_minute_cap, minute, __ATOMIC_RELAXED);
                __atomic_store_n(&u->fleet_hour_cap, hour, __ATOMIC_RELAXED);
        }
}

usec_t upstream_budget_wait(Upstream *u) {
        usec_t wait = 0;

        if (u->fleet)
                return fleet_budget_wait(u->fleet, &wait) < 0 ? 0 : wait;
        return u->rl ? ratelimit_next_free(u->rl, clock_now()) : 0;
}

void upstream_set_budget_wait_observer(Upstream *u, upstream_budget_wait_fn fn, void *userdata) {
        u->budget_wait = fn;
        u->budget_wait_userdata = userdata;
}

static void observe(Upstream *u, const char *endpoint, long status, usec_t started) {
        if (u->observer)
                u->observer(u->observer_userdata, endpoint, status, clock_now() - started);
}

static void token_notify(void *userdata);

void upstream_set_token_keeper(Upstream *u, TokenKeeper *tk) {
        if (u->subscribed) {
                token_keeper_unsubscribe(u->tk, token_notify, u);
                u->subscribed = false;
        }
        u->tk = tk;
        /* Attached already: the loop's calls learn of logins from now on. */
        if (tk && u->event && token_keeper_subscribe(tk, token_notify, u) >= 0)
                u->subscribed = true;
}

void upstream_stats(Upstream *u, UpstreamStats *ret) {
        pthread_mutex_lock(&u->lock);
        *ret = u->stats;
        pthread_mutex_unlock(&u->lock);
}

#define STAT_INC(u, field)                        \
        do {                                      \
                pthread_mutex_lock(&(u)->lock);   \
                (u)->stats.field++;               \
                pthread_mutex_unlock(&(u)->lock); \
        } while (0)

static CURL *handle_get(Upstream *u) {
        CURL *h = NULL;

        pthread_mutex_lock(&u->lock);
        if (u->pool_n > 0)
                h = u->pool[--u->pool_n];
        pthread_mutex_unlock(&u->lock);
        return h ?: curl_easy_init();
}

/* Back into the pool, its options reset (which drops libcurl's pointers to our header lists
 * and buffers) but its idle connection kept. */
static void handle_put(Upstream *u, CURL *h) {
        curl_easy_reset(h);
        pthread_mutex_lock(&u->lock);
        if (u->pool_n < UPSTREAM_POOL_MAX) {
                u->pool[u->pool_n++] = h;
                h = NULL;
        }
        pthread_mutex_unlock(&u->lock);
        if (h)
                curl_easy_cleanup(h);
}

/* Free a header list after wiping every line: some of them carry secrets. */
static void slist_wipe_free(struct curl_slist *l) {
        for (struct curl_slist *i = l; i; i = i->next)
                explicit_bzero(i->data, strlen(i->data));
        curl_slist_free_all(l);
}

/* ---- answers: body, headers, stream buffer ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
        Transfer *t = userdata;
        size_t n = size * nmemb;

        if (t->len + n > t->max) {
                t->too_large = true;
                return 0;
        }
        if (t->len + n + 1 > t->cap) {
                size_t cap = t->cap ? t->cap : 4096;
                char *b;

                while (cap < t->len + n + 1)
                        cap *= 2;
                b = realloc(t->body, cap);
                if (!b)
                        return 0;
                t->body = b;
                t->cap = cap;
        }
        memcpy(t->body + t->len, ptr, n);
        t->len += n;
        t->body[t->len] = '\0';
        return n;
}

static bool header_is(const char *line, size_t len, const char *name, const char **ret_value, size_t *ret_len) {
        size_t nl = strlen(name);

        if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
                return false;
        line += nl + 1;
        len -= nl + 1;
        while (len > 0 && (*line == ' ' || *line == '\t'))
                line++, len--;
        while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
                len--;
        *ret_value = line;
        *ret_len = len;
        return true;
}

static long parse_long(const char *v, size_t n) {
        char buf[32];
        char *end;
        long x;

        if (n == 0 || n >= sizeof(buf))
                return -1;
        memcpy(buf, v, n);
        buf[n] = '\0';
        errno = 0;
        x = strtol(buf, &end, 10);
        if (errno != 0 || *end != '\0' || x < 0)
                return -1;
        return x;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *userdata) {
        Transfer *t = userdata;
        size_t n = size * nmemb, vl;
        const char *v;

        /* A new status line (after a 100 Continue, say) starts a new set of headers. */
        if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
                free(t->content_type);
                t->content_type = NULL;
                t->retry_after = -1;
                t->remaining_minute = t->remaining_hour = -1;
        } else if (header_is(line, n, "Content-Type", &v, &vl)) {
                free(t->content_type);
                t->content_type = strndup(v, vl);
        } else if (header_is(line, n, "Retry-After", &v, &vl))
                t->retry_after = parse_long(v, vl);
        else if (header_is(line, n, "X-RateLimit-Remaining-Minute", &v, &vl))
                t->remaining_minute = parse_long(v, vl);
        else if (header_is(line, n, "X-RateLimit-Remaining-Hour", &v, &vl))
                t->remaining_hour = parse_long(v, vl);
        return n;
}

/* One header line of a streamed answer into t. True when it ends the headers of a final
 * (not 1xx) answer, whose status is then in *ret_status. */
static bool stream_header_line(Transfer *t, CURL *h, char *line, size_t n, long *ret_status) {
        long status = 0;

        if ((n == 2 && line[0] == '\r' && line[1] == '\n') || (n == 1 && line[0] == '\n')) {
                if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status < 200)
                        return false;
                *ret_status = status;
                return true;
        }
        (void) on_header(line, 1, n, t);
        return false;
}

static void transfer_reset(Transfer *t, size_t max) {
        free(t->body);
        free(t->content_type);
        *t = (Transfer) { .max = max, .retry_after = -1, .remaining_minute = -1, .remaining_hour = -1 };
}

static void transfer_wipe(Transfer *t) {
        if (t->body)
                explicit_bzero(t->body, t->len);
        transfer_reset(t, 0);
}

static size_t sbuf_write(StreamBuffer *b, const char *p, size_t n) {
        size_t tail, first;

        if (n > UPSTREAM_STREAM_BUFFER - b->len) {
                /* Full: libcurl keeps this chunk and hands it over again once resumed. */
                b->paused = true;
                return CURL_WRITEFUNC_PAUSE;
        }
        tail = (b->head + b->len) % UPSTREAM_STREAM_BUFFER;
        first = n < UPSTREAM_STREAM_BUFFER - tail ? n : UPSTREAM_STREAM_BUFFER - tail;
        memcpy(b->data + tail, p, first);
        memcpy(b->data, p + first, n - first);
        b->len += n;
        return n;
}

static size_t sbuf_read(StreamBuffer *b, char *out, size_t n) {
        size_t first;

        if (n > b->len)
                n = b->len;
        first = n < UPSTREAM_STREAM_BUFFER - b->head ? n : UPSTREAM_STREAM_BUFFER - b->head;
        memcpy(out, b->data + b->head, first);
        memcpy(out + first, b->data, n - first);
        b->len -= n;
        b->head = b->len == 0 ? 0 : (b->head + n) % UPSTREAM_STREAM_BUFFER;
        return n;
}

static void sbuf_clear(StreamBuffer *b) {
        b->head = b->len = 0;
        b->paused = false;
}

/* Resume a paused transfer once half the buffer is free: room for many of libcurl's chunks,
 * without a pause and a resume for every one. */
static bool sbuf_resume_due(const StreamBuffer *b) {
        return b->paused && b->len <= UPSTREAM_STREAM_BUFFER / 2;
}

/* ---- building a request: the same for every kind of call ---- */

static int request_url(const Settings *s, const UpstreamRequest *req, char **ret) {
        char *url;

        if (asprintf(&url, "%s%s%s%s", s->base_url, req->path, req->query && *req->query ? "?" : "",
                     req->query ? req->query : "") < 0)
                return -ENOMEM;
        *ret = url;
        return 0;
}

/* The header list for one attempt: forwarded headers, then our apikey and cookie. */
static struct curl_slist *build_headers(const UpstreamRequest *req, const Settings *s, const Secret *token) {
        struct curl_slist *l = NULL, *n;
        char *line = NULL;

        for (size_t i = 0; req->headers && req->headers[i]; i++) {
                n = curl_slist_append(l, req->headers[i]);
                if (!n)
                        goto fail;
                l = n;
        }
        if (req->body) {
                /* Without this libcurl would add its form content type to a POST. */
                bool has_ct = false;
                for (size_t i = 0; req->headers && req->headers[i]; i++)
                        if (strncasecmp(req->headers[i], "Content-Type:", 13) == 0)
                                has_ct = true;
                if (!has_ct) {
                        n = curl_slist_append(l, "Content-Type: application/json");
                        if (!n)
                                goto fail;
                        l = n;
                }
        }
        n = curl_slist_append(l, "Expect:");
        if (!n)
                goto fail;
        l = n;
        if (asprintf(&line, "apikey: %s", s->apikey->data) < 0)
                goto fail;
        n = curl_slist_append(l, line);
        explicit_bzero(line, strlen(line));
        free(line);
        if (!n)
                goto fail;
        l = n;
        if (asprintf(&line, "Cookie: VisierASIDToken=%s", token->data) < 0)
                goto fail;
        n = curl_slist_append(l, line);
        explicit_bzero(line, strlen(line));
        free(line);
        if (!n)
                goto fail;
        return n;
fail:
        slist_wipe_free(l);
        return NULL;
}

static int rule_budget(Upstream *u, const UpstreamRequest *req, usec_t now, usec_t deadline, usec_t *ret_wait,
                       char *err, size_t errlen);

/*
 * libcurl calls this once connected, right before it sends the request. Nothing is sent:
 *  - once the deadline has passed (the process was paused, say, after its timeouts were set):
 *    every call to Visier ends by its deadline, and a write's deadline is the one the fleet's
 *    fence recorded (docs/fleet.md, "What the database cannot fence");
 *  - more than RATELIMIT_SEND_SLACK after the call's budget take (the connection took long to
 *    open, or the call waited for a free one), unless a new take succeeds at once: the budget
 *    counts a call's place from its take, and only a request that leaves within that slack is
 *    sure to reach Visier inside the window its place was counted in.
 * A request held back never left: the caller sees t->unsent, not a network error. A request
 * that goes is given a bound on its delivery (tcpbound.h): its bytes must be acknowledged by
 * the deadline, and, with a budget, by RATELIMIT_SLACK after the take, or the connection is
 * dropped, so it never reaches Visier later than the budget and the fence count on.
 */
static int on_prereq(void *userdata, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port) {
        Transfer *t = userdata;
        char err[UPSTREAM_ERROR_MAX];
        usec_t now = clock_now(), wait = 0, by;

        if (t->send_by != 0 && now >= t->send_by) {
                t->unsent = true;
                return CURL_PREREQFUNC_ABORT;
        }
        if (t->taken_at != 0 && now - t->taken_at > RATELIMIT_SEND_SLACK) {
                if (rule_budget(t->u, t->req, now, now, &wait, err, sizeof(err)) < 0) {
                        STAT_INC(t->u, held_back);
                        t->unsent = true;
                        return CURL_PREREQFUNC_ABORT;
                }
                STAT_INC(t->u, retaken);
                t->taken_at = now;
        }
        by = t->send_by;
        if (t->taken_at != 0 && (by == 0 || t->taken_at + RATELIMIT_SLACK < by))
                by = t->taken_at + RATELIMIT_SLACK;
        if (by != 0 && tcpbound_deliver_within(t->u->tcp, conn_local_ip, conn_local_port, conn_primary_ip,
                                               conn_primary_port, by - now) == 0)
                STAT_INC(t->u, delivery_bounded);
        return CURL_PREREQFUNC_OK;
}

/* A call's budget take, for on_prereq to check. */
static void transfer_taken(Upstream *u, Transfer *t, const UpstreamRequest *req, usec_t taken_at) {
        t->u = u;
        t->req = req;
        t->taken_at = u->rl || u->fleet ? taken_at : 0;
}

/* Common options for every call: TLS always verified, no redirects, http(s) only. */
static int setup_handle(Upstream *u, CURL *h, const Settings *s, usec_t remaining, Transfer *t) {
        usec_t connect = s->connect_timeout < remaining ? s->connect_timeout : remaining;

        t->send_by = clock_now() + remaining;
        t->u = u;
        SETOPT(h, CURLOPT_PREREQFUNCTION, on_prereq);
        SETOPT(h, CURLOPT_PREREQDATA, t);
        SETOPT(h, CURLOPT_OPENSOCKETFUNCTION, tcpbound_open);
        SETOPT(h, CURLOPT_OPENSOCKETDATA, u->tcp);
        SETOPT(h, CURLOPT_CLOSESOCKETFUNCTION, tcpbound_close);
        SETOPT(h, CURLOPT_CLOSESOCKETDATA, u->tcp);

        SETOPT(h, CURLOPT_SHARE, u->share);
        SETOPT(h, CURLOPT_NOSIGNAL, 1L);
        SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
        SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(h, CURLOPT_SSL_VERIFYPEER, 1L);
        SETOPT(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (s->ca_file)
                SETOPT(h, CURLOPT_CAINFO, s->ca_file);
        /* "" (no proxy key) makes libcurl ignore http_proxy, HTTPS_PROXY, ALL_PROXY and the like:
         * a proxy that an environment names would otherwise see every call. */
        SETOPT(h, CURLOPT_PROXY, s->proxy);
        SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, (long) (connect / USEC_PER_MSEC + 1));
        SETOPT(h, CURLOPT_TIMEOUT_MS, (long) (remaining / USEC_PER_MSEC + 1));
        SETOPT(h, CURLOPT_TCP_KEEPALIVE, 1L);
        /* For curl_easy_perform(); in the loop's multi handle its CURLMOPT_MAXCONNECTS rules. */
        SETOPT(h, CURLOPT_MAXCONNECTS, UPSTREAM_HANDLE_CONNECTIONS);
        SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
        SETOPT(h, CURLOPT_WRITEDATA, t);
        SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
        SETOPT(h, CURLOPT_HEADERDATA, t);
        SETOPT(h, CURLOPT_USERAGENT, "visierd/" PACKAGE_VERSION);
        return 0;
}

/* The request itself: URL, headers, method and body. */
static int setup_request(CURL *h, const UpstreamRequest *req, const char *url, struct curl_slist *headers) {
        /* libcurl silently re-sends a request whose reused connection dies before an answer;
         * for a write that could apply it twice, so writes get a new connection. */
        if (!req->idempotent)
                SETOPT(h, CURLOPT_FRESH_CONNECT, 1L);
        SETOPT(h, CURLOPT_URL, url);
        SETOPT(h, CURLOPT_HTTPHEADER, headers);
        if (streq(req->method, "GET"))
                SETOPT(h, CURLOPT_HTTPGET, 1L);
        else {
                if (!streq(req->method, "POST") || !req->body)
                        SETOPT(h, CURLOPT_CUSTOMREQUEST, req->method);
                if (req->body) {
                        SETOPT(h, CURLOPT_POSTFIELDS, req->body);
                        SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
                }
        }
        return 0;
}

/* A streamed answer: its body goes to a stream buffer, and there is no overall timeout (an
 * export may stream for a long time): a stall is what fails it. */
static int setup_stream(CURL *h, const Settings *s, curl_write_callback on_stream_body,
                        curl_write_callback on_stream_header, void *userdata) {
        SETOPT(h, CURLOPT_TIMEOUT_MS, 0L);
        SETOPT(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        SETOPT(h, CURLOPT_LOW_SPEED_TIME, (long) (s->request_timeout / USEC_PER_SEC));
        SETOPT(h, CURLOPT_WRITEFUNCTION, on_stream_body);
        SETOPT(h, CURLOPT_WRITEDATA, userdata);
        SETOPT(h, CURLOPT_HEADERFUNCTION, on_stream_header);
        SETOPT(h, CURLOPT_HEADERDATA, userdata);
        return 0;
}

static int setup_login(CURL *h, const char *url, struct curl_slist *headers, const char *form, size_t form_len) {
        SETOPT(h, CURLOPT_URL, url);
        SETOPT(h, CURLOPT_HTTPHEADER, headers);
        SETOPT(h, CURLOPT_POSTFIELDS, form);
        SETOPT(h, CURLOPT_POSTFIELDSIZE, (long) form_len);
        return 0;
}

static int curl_to_errno(CURLcode c) {
        switch (c) {
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_WRITE_ERROR:
                return -EFBIG;
        default:
                return -EHOSTUNREACH;
        }
}

static void observe_budget(Upstream *u, const Transfer *t) {
        if (u->fleet) {
                /* One round trip only when Visier said something: a failure leaves the shared
                 * budget as it was (the next answer corrects it). */
                if (t->remaining_minute >= 0 || t->remaining_hour >= 0)
                        (void) fleet_budget_observe(u->fleet, t->remaining_minute, t->remaining_hour);
        } else if (u->rl)
                ratelimit_observe(u->rl, t->remaining_minute, t->remaining_hour, clock_now());
}

static usec_t retry_delay(unsigned attempt) {
        usec_t cap = UPSTREAM_RETRY_BASE, v = 0;

        for (unsigned i = 1; i < attempt && cap < UPSTREAM_RETRY_MAX; i++)
                cap *= 2;
        if (cap > UPSTREAM_RETRY_MAX)
                cap = UPSTREAM_RETRY_MAX;
        /* "Full jitter": anywhere between half the step and the whole step. */
        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
                v = clock_now();
        return cap / 2 + v % (cap / 2 + 1);
}

void upstream_response_done(UpstreamResponse *r) {
        free(r->body);
        free(r->content_type);
        *r = (UpstreamResponse) {};
}

/* ---- the rules: decide, never wait ---- */

/* A token the keeper could not give: waiting past the deadline means no token. */
static int rule_token_error(int r) {
        return r == -ETIMEDOUT ? -ENOKEY : r;
}

/* Take one call from the rate budget at `now`: 0; -EAGAIN with *ret_wait when one comes free
 * before the deadline; -EBUSY when none does. Background work leaves the reserve alone. */
static int rule_budget(Upstream *u, const UpstreamRequest *req, usec_t now, usec_t deadline, usec_t *ret_wait,
                       char *err, size_t errlen) {
        usec_t wait = 0;
        int r;

        if (u->fleet) {
                r = fleet_budget_take(u->fleet, req->background, UPSTREAM_BACKGROUND_RESERVE, &wait);
                if (r >= 0)
                        return 0;
                now = clock_now(); /* the take may have waited on the database */
                if (r == -ENOTCONN && u->rl) {
                        /* The database is down: this node's share of the tenant's caps, from its
                         * own buckets (docs/fleet.md, "Outages"). */
                        unsigned n = fleet_nodes_last_seen(u->fleet);
                        unsigned minute = __atomic_load_n(&u->fleet_minute_cap, __ATOMIC_RELAXED) / n;
                        unsigned hour = __atomic_load_n(&u->fleet_hour_cap, __ATOMIC_RELAXED) / n;

                        ratelimit_set_caps(u->rl, minute ? minute : 1, hour ? hour : 1);
                        r = req->background ? ratelimit_try_take_low(u->rl, now, UPSTREAM_BACKGROUND_RESERVE, &wait)
                                            : ratelimit_try_take(u->rl, now, &wait);
                } else if (r != -EAGAIN) {
                        snprintf(err, errlen, "the fleet's shared Visier rate budget cannot be read (%s); no call is "
                                              "made without it",
                                 strerror(-r));
                        return -EBUSY;
                }
        } else if (!u->rl)
                return 0;
        else
                r = req->background ? ratelimit_try_take_low(u->rl, now, UPSTREAM_BACKGROUND_RESERVE, &wait)
                                    : ratelimit_try_take(u->rl, now, &wait);
        if (r >= 0)
                return 0;
        if (now + wait > deadline) {
                snprintf(err, errlen, "the Visier rate budget has no call left before the request timeout");
                return -EBUSY;
        }
        *ret_wait = wait;
        if (u->budget_wait)
                u->budget_wait(u->budget_wait_userdata, req->endpoint ? req->endpoint : req->path, wait);
        return -EAGAIN;
}

/* Just before sending: nothing is sent once the deadline has passed. A write whose earlier
 * attempts were all refused outright (401, 429) has not landed: say so (-ECANCELED), so it is
 * not taken for one that may have. */
static int rule_expired(const CallState *cs, const UpstreamRequest *req, usec_t now, char *err, size_t errlen) {
        int r;

        if (now < cs->deadline)
                return 0;
        r = !req->idempotent && !cs->maybe_applied ? -ECANCELED : -ETIMEDOUT;
        if (cs->retried_401 && r == -ETIMEDOUT)
                r = -ENOKEY; /* the last answer was a refused token */
        snprintf(err, errlen, "%s",
                 cs->retried_401 ? "Visier refused visierd's security token until the request timed out"
                 : r == -ECANCELED ? "request to Visier timed out before it could be sent"
                                   : "request to Visier timed out");
        return r;
}

/* An attempt goes out. */
static void rule_attempt(Upstream *u, CallState *cs) {
        cs->attempts++;
        STAT_INC(u, calls);
}

/* Backoff before another try of an idempotent call, within the retries and the deadline? */
static bool rule_backoff(Upstream *u, const Settings *s, const UpstreamRequest *req, CallState *cs,
                         usec_t *ret_delay) {
        usec_t d;

        if (!req->idempotent || cs->failed_attempts >= s->max_retries)
                return false;
        d = retry_delay(++cs->failed_attempts);
        if (clock_now() + d >= cs->deadline)
                return false;
        STAT_INC(u, retries);
        *ret_delay = d;
        return true;
}

/*
 * A transfer that ended without an answer (t: its Transfer, NULL when it was cut off at the
 * deadline): 1 to try again after *ret_delay (a network error on an idempotent call, within
 * the retries and the deadline; a request on_prereq held back, before the deadline), or the
 * negative errno for the caller, with err set.
 */
static int rule_after_error(Upstream *u, const Settings *s, const UpstreamRequest *req, CallState *cs, CURLcode c,
                            const Transfer *t, usec_t *ret_delay, char *err, size_t errlen) {
        int r;

        *ret_delay = 0;
        if (t && t->unsent) {
                /* It never left: not maybe applied, and not a failed attempt. Past the deadline
                 * that is the answer; before it, the call takes a place in the budget again. */
                cs->attempts--;
                r = rule_expired(cs, req, clock_now(), err, errlen);
                return r < 0 ? r : 1;
        }
        cs->maybe_applied = true;
        r = t && t->too_large ? -EFBIG : curl_to_errno(c);
        if (r == -EFBIG)
                snprintf(err, errlen, "Visier's answer is larger than max_response_size (%zu bytes)", s->max_response);
        else
                snprintf(err, errlen, "%s %s: %s", req->method, req->path, curl_easy_strerror(c));
        if (r == -EHOSTUNREACH && rule_backoff(u, s, req, cs, ret_delay))
                return 1;
        STAT_INC(u, failures);
        return r;
}

/*
 * What an HTTP answer means for the call: 1 to try again after *ret_delay (0: at once; the
 * next budget take waits for a 429), 0 to hand it to the caller, or a negative errno with err.
 * A 401 invalidates the token it was sent with and is retried within the deadline; a 429
 * closes the rate budget until Retry-After and is retried without counting as a failed
 * attempt; a 5xx to an idempotent call is retried with backoff. A 401 never reaches the
 * caller (-ENOKEY).
 */
static int rule_after_answer(Upstream *u, const Settings *s, const UpstreamRequest *req, CallState *cs, long status,
                             long retry_after, uint64_t generation, usec_t *ret_delay, char *err, size_t errlen) {
        *ret_delay = 0;
        cs->retried_401 = status == 401; /* the latest answer refused the token */
        if (status >= 500)
                cs->maybe_applied = true;
        if (status == 401) {
                /* The token was refused (revoked, or expired early): again with a fresh one, as
                 * long as the deadline allows. A 401 about a token older than the current one
                 * costs nothing; for the current one the keeper logs in again, with backoff
                 * when new tokens keep being refused, and taking a token gives up (-ENOKEY)
                 * rather than wait past the deadline. */
                STAT_INC(u, unauthorized);
                token_invalidate(u->tk, generation);
                if (clock_now() < cs->deadline)
                        return 1;
                snprintf(err, errlen, "Visier refused visierd's security token until the request timed out");
                return -ENOKEY;
        }
        token_confirm(u->tk, generation);
        if (status == 429) {
                usec_t wait = retry_after >= 0 ? (usec_t) retry_after * USEC_PER_SEC : UPSTREAM_RETRY_AFTER_DEFAULT;

                STAT_INC(u, throttled);
                if (u->fleet)
                        (void) fleet_budget_block(u->fleet, wait); /* every node's next take waits */
                else if (u->rl)
                        ratelimit_block(u->rl, clock_now() + wait); /* the next budget take waits */
                if (clock_now() + wait >= cs->deadline)
                        return 0; /* Visier's 429 is the answer */
                if (!u->rl && !u->fleet)
                        *ret_delay = wait;
                return 1; /* not a failed attempt */
        }
        if (status >= 500 && rule_backoff(u, s, req, cs, ret_delay))
                return 1;
        return 0;
}

/* ---- blocking calls ---- */

static char *strip(char *s, size_t *len) {
        while (*len > 0 && (s[*len - 1] == '\n' || s[*len - 1] == '\r' || s[*len - 1] == ' '))
                s[--*len] = '\0';
        return s;
}

/* Take one call from the budget, sleeping while it is empty: 0 or -EBUSY. */
static int budget_take(Upstream *u, const UpstreamRequest *req, usec_t deadline, char *err, size_t errlen) {
        for (;;) {
                usec_t wait = 0;
                int r;

                r = rule_budget(u, req, clock_now(), deadline, &wait, err, errlen);
                if (r != -EAGAIN)
                        return r;
                clock_sleep(wait);
        }
}

int upstream_login(void *userdata, Secret **ret_token, char *err, size_t errlen) {
        static const UpstreamRequest login_req = { .method = "POST", .path = "/v1/admin/visierSecureToken",
                                                   .endpoint = "/v1/admin/visierSecureToken" };
        Upstream *u = userdata;
        Settings *s = settings_get(u);
        struct curl_slist *headers = NULL;
        Transfer t = {};
        char *user_e = NULL, *pass_e = NULL, *form = NULL, *apikey_h = NULL, *url = NULL;
        size_t form_len = 0;
        usec_t started;
        CURLcode c;
        CURL *h = NULL;
        long status = 0;
        int r = -ENOMEM;

        transfer_reset(&t, 64 * 1024);
        h = handle_get(u);
        if (!h)
                goto out;
        user_e = curl_easy_escape(h, s->username, 0);
        pass_e = curl_easy_escape(h, s->password->data, (int) s->password->len);
        if (!user_e || !pass_e)
                goto out;
        form_len = strlen("username=&password=") + strlen(user_e) + strlen(pass_e);
        form = malloc(form_len + 1);
        if (!form)
                goto out;
        snprintf(form, form_len + 1, "username=%s&password=%s", user_e, pass_e);
        if (asprintf(&apikey_h, "apikey: %s", s->apikey->data) < 0) {
                apikey_h = NULL;
                goto out;
        }
        if (asprintf(&url, "%s/v1/admin/visierSecureToken", s->base_url) < 0) {
                url = NULL;
                goto out;
        }
        headers = curl_slist_append(headers, apikey_h);
        headers = curl_slist_append(headers, "Content-Type: application/x-www-form-urlencoded");
        headers = curl_slist_append(headers, "Accept: text/plain");
        if (!headers)
                goto out;

        r = setup_handle(u, h, s, s->request_timeout, &t);
        if (r >= 0)
                r = setup_login(h, url, headers, form, form_len);
        if (r < 0) {
                snprintf(err, errlen, "could not set up the login call: %s", strerror(-r));
                goto out;
        }

        /* A login is a call like any other: it waits for the shared rate budget (the fleet's:
         * the same take as every call's). */
        if (u->fleet) {
                r = budget_take(u, &login_req, clock_now() + s->request_timeout, err, errlen);
                if (r < 0)
                        goto out;
        } else if (u->rl && ratelimit_take(u->rl, clock_now() + s->request_timeout) < 0) {
                r = -EBUSY;
                snprintf(err, errlen, "the Visier rate budget has no call left for a login");
                goto out;
        }
        STAT_INC(u, calls);
        started = clock_now();
        transfer_taken(u, &t, &login_req, started);
        c = curl_easy_perform(h);
        if (c == CURLE_OK && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
                status = 0;
        if (t.unsent) {
                /* The keeper tries again, with its backoff. */
                r = -EBUSY;
                snprintf(err, errlen, "login call not sent: %s",
                         clock_now() >= t.send_by ? "its timeout passed before the connection was ready"
                                                  : "the Visier rate budget had no call left when the connection "
                                                    "was ready");
                goto out;
        }
        observe(u, "/v1/admin/visierSecureToken", c == CURLE_OK ? status : 0, started);
        observe_budget(u, &t);
        if (c != CURLE_OK) {
                r = curl_to_errno(c);
                snprintf(err, errlen, "login call to %s failed: %s", s->base_url, curl_easy_strerror(c));
                goto out;
        }
        if (status != 200) {
                r = status == 401 || status == 403 ? -EACCES : -EPROTO;
                snprintf(err, errlen, "login refused by Visier: HTTP %ld%s", status,
                         status == 401 ? " (wrong username, password or API key?)" : "");
                goto out;
        }
        strip(t.body ? t.body : (char *) "", &t.len);
        if (t.len == 0) {
                r = -EPROTO;
                snprintf(err, errlen, "login answered 200 with an empty token");
                goto out;
        }
        *ret_token = secret_new(t.body, t.len);
        r = *ret_token ? 0 : -ENOMEM;
out:
        if (r == -ENOMEM && err[0] == '\0')
                snprintf(err, errlen, "out of memory during login");
        /* The handle saw the form: back in the pool it is reset, which drops libcurl's
         * pointers to it, before the form is wiped. */
        if (h)
                handle_put(u, h);
        if (form) {
                explicit_bzero(form, form_len);
                free(form);
        }
        if (pass_e) {
                explicit_bzero(pass_e, strlen(pass_e));
                curl_free(pass_e);
        }
        curl_free(user_e);
        if (apikey_h) {
                explicit_bzero(apikey_h, strlen(apikey_h));
                free(apikey_h);
        }
        free(url);
        slist_wipe_free(headers);
        transfer_wipe(&t);
        settings_put(u, s);
        return r;
}

int upstream_call(Upstream *u, const UpstreamRequest *req, UpstreamResponse *ret, char *err, size_t errlen) {
        Settings *s = settings_get(u);
        CallState cs = { .deadline = clock_now() + s->request_timeout };
        _cleanup_free_ char *url = NULL;
        Transfer t = {};
        int r;

        r = request_url(s, req, &url);
        if (r < 0) {
                snprintf(err, errlen, "out of memory");
                goto out;
        }

        for (;;) {
                _cleanup_(secret_freep) Secret *token = NULL;
                struct curl_slist *headers = NULL;
                uint64_t generation = 0;
                usec_t now, delay = 0;
                long status = 0;
                CURLcode c;
                CURL *h;

                r = token_acquire(u->tk, cs.deadline, &token, &generation, err, errlen);
                if (r < 0) {
                        r = rule_token_error(r);
                        goto out;
                }
                r = budget_take(u, req, cs.deadline, err, errlen);
                if (r < 0)
                        goto out;
                now = clock_now();
                r = rule_expired(&cs, req, now, err, errlen);
                if (r < 0)
                        goto out;

                h = handle_get(u);
                headers = build_headers(req, s, token);
                if (!h || !headers) {
                        if (h)
                                handle_put(u, h);
                        slist_wipe_free(headers);
                        r = -ENOMEM;
                        snprintf(err, errlen, "out of memory");
                        goto out;
                }
                transfer_reset(&t, s->max_response);
                r = setup_handle(u, h, s, cs.deadline - now, &t);
                t.send_by = cs.deadline; /* the call's own, not one counted from a `now` gone by */
                transfer_taken(u, &t, req, now);
                if (r >= 0)
                        r = setup_request(h, req, url, headers);
                if (r < 0) {
                        handle_put(u, h);
                        slist_wipe_free(headers);
                        snprintf(err, errlen, "could not set up the call to Visier: %s", strerror(-r));
                        goto out;
                }

                rule_attempt(u, &cs);
                c = curl_easy_perform(h);
                if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
                        status = 0;
                if (!t.unsent)
                        observe(u, req->endpoint ? req->endpoint : req->path, c == CURLE_OK ? status : 0, now);
                handle_put(u, h); /* reset: libcurl lets go of the header list */
                slist_wipe_free(headers);
                observe_budget(u, &t);

                if (c != CURLE_OK)
                        r = rule_after_error(u, s, req, &cs, c, &t, &delay, err, errlen);
                else
                        r = rule_after_answer(u, s, req, &cs, status, t.retry_after, generation, &delay, err, errlen);
                if (r > 0) {
                        if (delay > 0)
                                clock_sleep(delay);
                        continue;
                }
                if (r < 0)
                        goto out;

                ret->status = status;
                ret->content_type = TAKE_PTR(t.content_type);
                ret->body = TAKE_PTR(t.body);
                ret->body_len = t.len;
                ret->attempts = cs.attempts;
                r = 0;
                goto out;
        }
out:
        transfer_reset(&t, 0);
        settings_put(u, s);
        return r;
}

/* ---- blocking streamed calls ---- */

static size_t stream_on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
        UpstreamStream *st = userdata;

        return sbuf_write(&st->sb, ptr, size * nmemb);
}

static size_t stream_on_header(char *line, size_t size, size_t nmemb, void *userdata) {
        UpstreamStream *st = userdata;
        size_t n = size * nmemb;

        if (stream_header_line(&st->t, st->h, line, n, &st->status))
                st->headers_done = true;
        return n;
}

/* Run the transfer until cond holds, the transfer ends, or (for the headers) the deadline. */
static void stream_drive(UpstreamStream *st, bool want_headers, usec_t deadline) {
        for (;;) {
                int running = 0, left;
                CURLMsg *msg;
                CURLMcode mc;

                mc = curl_multi_perform(st->multi, &running);
                while ((msg = curl_multi_info_read(st->multi, &left)))
                        if (msg->msg == CURLMSG_DONE) {
                                st->done = true;
                                st->result = msg->data.result;
                        }
                if (mc != CURLM_OK && !st->done) {
                        /* The multi handle itself failed: the transfer cannot go on. */
                        st->done = true;
                        st->result = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_RECV_ERROR;
                }
                if (st->done || (want_headers ? st->headers_done : st->sb.len > 0))
                        return;
                if (want_headers && clock_now() >= deadline) {
                        st->done = true;
                        st->result = CURLE_OPERATION_TIMEDOUT;
                        return;
                }
                mc = curl_multi_poll(st->multi, NULL, 0, 1000, NULL);
                if (mc != CURLM_OK) {
                        st->done = true;
                        st->result = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_RECV_ERROR;
                        return;
                }
        }
}

static void stream_release_handle(UpstreamStream *st) {
        if (st->h) {
                if (st->multi && curl_multi_remove_handle(st->multi, st->h) == CURLM_OK)
                        handle_put(st->u, st->h);
                else
                        curl_easy_cleanup(st->h); /* not known to be out of the multi: not reused */
                st->h = NULL;
        }
        slist_wipe_free(st->headers);
        st->headers = NULL;
}

static UpstreamCall *op_free(UpstreamCall *op);

UpstreamStream *upstream_stream_close(UpstreamStream *st) {
        if (!st)
                return NULL;
        if (st->op)
                op_free(st->op); /* a stream on the loop */
        stream_release_handle(st);
        if (st->multi)
                (void) curl_multi_cleanup(st->multi); /* nothing left in it to fail on */
        transfer_reset(&st->t, 0);
        free(st->sb.data);
        if (st->s)
                settings_put(st->u, st->s);
        free(st);
        return NULL;
}

/* One attempt: start the call and wait for its answer's headers. */
static int stream_attempt(UpstreamStream *st, const UpstreamRequest *req, const char *url, const Secret *token,
                          usec_t now, usec_t deadline) {
        CURLMcode mc;
        CURL *h;
        int r;

        h = handle_get(st->u);
        st->headers = build_headers(req, st->s, token);
        if (!h || !st->headers) {
                if (h)
                        handle_put(st->u, h);
                return -ENOMEM;
        }
        st->h = h;
        sbuf_clear(&st->sb);
        st->done = st->headers_done = false;
        st->status = 0;
        st->result = CURLE_OK;
        transfer_reset(&st->t, 0);
        r = setup_handle(st->u, h, st->s, deadline - now, &st->t);
        transfer_taken(st->u, &st->t, req, now);
        if (r >= 0)
                r = setup_request(h, req, url, st->headers);
        if (r >= 0)
                r = setup_stream(h, st->s, stream_on_body, stream_on_header, st);
        if (r < 0)
                return r;
        st->started = now;
        mc = curl_multi_add_handle(st->multi, h);
        if (mc != CURLM_OK)
                return mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
        stream_drive(st, true, deadline);
        if (!st->t.unsent)
                observe(st->u, st->endpoint, st->headers_done ? st->status : 0, st->started);
        observe_budget(st->u, &st->t);
        return 0;
}

int upstream_stream_open(Upstream *u, const UpstreamRequest *req, UpstreamStream **ret, long *ret_status,
                         char **ret_content_type, char *err, size_t errlen) {
        UpstreamStream *st;
        _cleanup_free_ char *url = NULL;
        CallState cs;
        int r;

        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        st->u = u;
        st->s = settings_get(u);
        st->endpoint = req->endpoint ? req->endpoint : req->path;
        st->multi = curl_multi_init();
        st->sb.data = malloc(UPSTREAM_STREAM_BUFFER);
        if (!st->multi || !st->sb.data || request_url(st->s, req, &url) < 0) {
                upstream_stream_close(st);
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        cs = (CallState) { .deadline = clock_now() + st->s->request_timeout };

        for (;;) {
                _cleanup_(secret_freep) Secret *token = NULL;
                uint64_t generation = 0;
                usec_t now, delay = 0;

                r = token_acquire(u->tk, cs.deadline, &token, &generation, err, errlen);
                if (r < 0) {
                        r = rule_token_error(r);
                        break;
                }
                r = budget_take(u, req, cs.deadline, err, errlen);
                if (r < 0)
                        break;
                now = clock_now();
                r = rule_expired(&cs, req, now, err, errlen);
                if (r < 0)
                        break;
                rule_attempt(u, &cs);
                r = stream_attempt(st, req, url, token, now, cs.deadline);
                if (r < 0) {
                        snprintf(err, errlen, "could not set up the call to Visier: %s", strerror(-r));
                        break;
                }
                if (!st->headers_done) {
                        stream_release_handle(st);
                        r = rule_after_error(u, st->s, req, &cs, st->result, &st->t, &delay, err, errlen);
                } else
                        r = rule_after_answer(u, st->s, req, &cs, st->status, st->t.retry_after, generation, &delay,
                                              err, errlen);
                if (r > 0) {
                        stream_release_handle(st);
                        if (delay > 0)
                                clock_sleep(delay);
                        continue;
                }
                if (r < 0)
                        break;
                *ret_status = st->status;
                *ret_content_type = st->t.content_type ? strdup(st->t.content_type) : NULL;
                *ret = st;
                return 0;
        }
        upstream_stream_close(st);
        return r;
}

ssize_t upstream_stream_read(UpstreamStream *st, char *buf, size_t len) {
        size_t n;

        if (st->op)
                return -EINVAL; /* a stream on the loop never blocks: upstream_stream_read_nb() */
        if (st->sb.len == 0 && !st->done) {
                if (st->sb.paused) {
                        st->sb.paused = false;
                        if (curl_easy_pause(st->h, CURLPAUSE_CONT) != CURLE_OK) {
                                st->done = true;
                                st->result = CURLE_RECV_ERROR;
                        }
                }
                if (!st->done)
                        stream_drive(st, false, USEC_INFINITY);
        }
        n = sbuf_read(&st->sb, buf, len);
        if (st->h && !st->done && sbuf_resume_due(&st->sb)) {
                st->sb.paused = false;
                if (curl_easy_pause(st->h, CURLPAUSE_CONT) != CURLE_OK) {
                        st->done = true;
                        st->result = CURLE_RECV_ERROR;
                }
        }
        if (n > 0)
                return (ssize_t) n;
        /* Nothing left: the end of the body, or a transfer that broke off. */
        return st->result == CURLE_OK ? 0 : -EIO;
}

size_t upstream_stream_buffered(const UpstreamStream *st) {
        return st->op ? st->op->sb.len : st->sb.len;
}

/* ---- on the loop: libcurl's multi handle on sd-event ---- */

/* Now on the clock the loop's time sources use (CLOCK_BOOTTIME, as clock_now()'s real source). */
static usec_t event_now(void) {
        struct timespec ts;

        clock_gettime(CLOCK_BOOTTIME, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

static void glue_socket_free(Upstream *u, GlueSocket *gs) {
        if (!gs)
                return;
        sd_event_source_disable_unref(gs->io);
        if (gs->prev)
                gs->prev->next = gs->next;
        else
                u->sockets = gs->next;
        if (gs->next)
                gs->next->prev = gs->prev;
        free(gs);
}

static void op_transfer_done(UpstreamCall *op, CURLcode result);

/* Hand every finished transfer to its op. Runs after libcurl has returned, so an op may call
 * its owner back from here. */
static void glue_check_finished(Upstream *u) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(u->multi, &left))) {
                CURLcode result = msg->data.result;
                char *op = NULL;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &op) != CURLE_OK || !op)
                        continue; /* every handle in the multi is an op's, with CURLOPT_PRIVATE set */
                op_transfer_done((UpstreamCall *) (void *) op, result);
        }
}

static int glue_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Upstream *u = userdata;
        int action = 0, running = 0;

        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;
        /* A failure here is the multi handle's as a whole (out of memory, say), not one
         * transfer's; the transfers then end on their own timeouts. Nobody to tell: go on. */
        (void) curl_multi_socket_action(u->multi, fd, action, &running);
        glue_check_finished(u);
        return 0; /* never < 0: sd-event would turn the source off */
}

static int glue_on_socket(CURL *h, curl_socket_t fd, int what, void *userdata, void *socketp) {
        Upstream *u = userdata;
        GlueSocket *gs = socketp;
        uint32_t events = 0;

        if (what == CURL_POLL_REMOVE) {
                /* libcurl says so before it closes the socket, so the fd is still ours here. */
                glue_socket_free(u, gs);
                return 0;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;
        if (gs)
                return sd_event_source_set_io_events(gs->io, events) < 0 ||
                                       sd_event_source_set_enabled(gs->io, SD_EVENT_ON) < 0
                               ? -1
                               : 0;
        gs = calloc(1, sizeof(*gs));
        if (!gs)
                return -1;
        if (sd_event_add_io(u->event, &gs->io, fd, events, glue_on_io, u) < 0) {
                free(gs);
                return -1;
        }
        gs->next = u->sockets;
        if (gs->next)
                gs->next->prev = gs;
        u->sockets = gs;
        if (curl_multi_assign(u->multi, fd, gs) != CURLM_OK) {
                glue_socket_free(u, gs);
                return -1;
        }
        return 0;
}

static int glue_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Upstream *u = userdata;
        int running = 0;

        (void) curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running); /* as in glue_on_io */
        glue_check_finished(u);
        return 0;
}

static int glue_on_defer(sd_event_source *s, void *userdata) {
        return glue_on_timer(s, 0, userdata);
}

/* A timeout of 0 ("now") is a defer source: setting a timer's time for every such request
 * costs a timerfd_settime() each, which under load was a large part of the loop's time. */
static int glue_on_timer_change(CURLM *m, long timeout_ms, void *userdata) {
        Upstream *u = userdata;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(u->curl_timer, SD_EVENT_OFF) < 0 ||
                                       sd_event_source_set_enabled(u->curl_defer, SD_EVENT_OFF) < 0
                               ? -1
                               : 0;
        if (timeout_ms == 0) {
                (void) sd_event_source_set_enabled(u->curl_timer, SD_EVENT_OFF);
                return sd_event_source_set_enabled(u->curl_defer, SD_EVENT_ONESHOT) < 0 ? -1 : 0;
        }
        (void) sd_event_source_set_enabled(u->curl_defer, SD_EVENT_OFF);
        if (sd_event_source_set_time(u->curl_timer, event_now() + (usec_t) timeout_ms * USEC_PER_MSEC) < 0 ||
            sd_event_source_set_enabled(u->curl_timer, SD_EVENT_ONESHOT) < 0)
                return -1;
        return 0;
}

/* From the keeper's thread after every login attempt: wake the loop. */
static void token_notify(void *userdata) {
        Upstream *u = userdata;
        uint64_t one = 1;
        ssize_t k;

        /* Fails only when the counter is full, which leaves the fd readable: nothing is lost. */
        k = write(u->token_fd, &one, sizeof(one));
        (void) k;
}

static int op_schedule(UpstreamCall *op, usec_t at);

/* On the loop: a login ended, so every call waiting for a token tries again. */
static int on_token_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Upstream *u = userdata;
        uint64_t n;
        ssize_t k;

        k = read(fd, &n, sizeof(n));
        (void) k; /* -EAGAIN: someone read it already; either way the waiters look again */
        for (UpstreamCall *op = u->ops; op; op = op->next)
                if (op->waiting_token) {
                        op->waiting_token = false;
                        /* On failure its deadline, already set, still ends the wait. */
                        (void) op_schedule(op, 0);
                }
        return 0;
}

/* Size the multi's connection cache for the settings the call runs with, and cap the
 * connections to Visier at the same number: calls beyond it wait inside libcurl for one to
 * come free (within their deadline, see op_step_budget) rather than open more. */
static int loop_apply_settings(Upstream *u, const Settings *s) {
        long want = (long) s->max_connections;

        if (want == u->multi_maxconnects)
                return 0;
        if (curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, want) != CURLM_OK ||
            curl_multi_setopt(u->multi, CURLMOPT_MAX_HOST_CONNECTIONS, want) != CURLM_OK)
                return -EINVAL;
        u->multi_maxconnects = want;
        return 0;
}

int upstream_attach_event(Upstream *u, sd_event *e) {
        Settings *s;
        CURLMcode mc;
        int r;

        if (u->event)
                return -EBUSY;
        u->event = sd_event_ref(e);
        r = sd_event_add_time(e, &u->curl_timer, CLOCK_BOOTTIME, 0, USEC_PER_MSEC, glue_on_timer, u);
        if (r >= 0)
                r = sd_event_source_set_enabled(u->curl_timer, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_defer(e, &u->curl_defer, glue_on_defer, u);
        if (r >= 0)
                r = sd_event_source_set_enabled(u->curl_defer, SD_EVENT_OFF);
        if (r < 0)
                goto fail;
        u->multi = curl_multi_init();
        if (!u->multi) {
                r = -ENOMEM;
                goto fail;
        }
        mc = curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, glue_on_socket);
        if (mc == CURLM_OK)
                mc = curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
        if (mc == CURLM_OK)
                mc = curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, glue_on_timer_change);
        if (mc == CURLM_OK)
                mc = curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
        if (mc != CURLM_OK) {
                r = mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
                goto fail;
        }
        s = settings_get(u);
        r = loop_apply_settings(u, s);
        settings_put(u, s);
        if (r < 0)
                goto fail;

        u->token_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (u->token_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        r = sd_event_add_io(e, &u->token_source, u->token_fd, EPOLLIN, on_token_event, u);
        if (r < 0)
                goto fail;
        if (u->tk) {
                r = token_keeper_subscribe(u->tk, token_notify, u);
                if (r < 0)
                        goto fail;
                u->subscribed = true;
        }
        return 0;
fail:
        upstream_detach_event(u);
        return r;
}

void upstream_detach_event(Upstream *u) {
        if (!u->event)
                return;
        while (u->ops)
                op_free(u->ops); /* removes its handle from the multi; a stream's owner keeps an empty shell */
        if (u->subscribed) {
                token_keeper_unsubscribe(u->tk, token_notify, u); /* waits out a notification in progress */
                u->subscribed = false;
        }
        u->token_source = sd_event_source_disable_unref(u->token_source);
        if (u->token_fd >= 0)
                close(u->token_fd);
        u->token_fd = -1;
        if (u->multi)
                (void) curl_multi_cleanup(u->multi); /* no transfer left in it to fail on */
        u->multi = NULL;
        u->multi_maxconnects = 0;
        while (u->sockets)
                glue_socket_free(u, u->sockets);
        u->curl_timer = sd_event_source_disable_unref(u->curl_timer);
        u->curl_defer = sd_event_source_disable_unref(u->curl_defer);
        for (size_t i = 0; i < u->loop_pool_n; i++)
                curl_easy_cleanup(u->loop_pool[i]);
        u->loop_pool_n = 0;
        u->event = sd_event_unref(u->event);
}

/* ---- on the loop: calls and streams ---- */

static CURL *loop_handle_get(Upstream *u) {
        return u->loop_pool_n > 0 ? u->loop_pool[--u->loop_pool_n] : curl_easy_init();
}

static void loop_handle_put(Upstream *u, CURL *h, bool reuse) {
        curl_easy_reset(h); /* drops libcurl's pointers to the op, its header list and buffers */
        if (reuse && u->loop_pool_n < UPSTREAM_POOL_MAX)
                u->loop_pool[u->loop_pool_n++] = h;
        else
                curl_easy_cleanup(h);
}

/* Out of the multi handle (cutting the transfer short if it still runs); headers wiped. */
static void op_release_transfer(UpstreamCall *op) {
        if (op->h) {
                CURLMcode mc = curl_multi_remove_handle(op->u->multi, op->h);
                loop_handle_put(op->u, op->h, mc == CURLM_OK); /* not reused unless known to be out */
                op->h = NULL;
        }
        slist_wipe_free(op->header_list);
        op->header_list = NULL;
}

static UpstreamCall *op_free(UpstreamCall *op) {
        Upstream *u;

        if (!op)
                return NULL;
        u = op->u;
        op_release_transfer(op);
        if (op->prev)
                op->prev->next = op->next;
        else
                u->ops = op->next;
        if (op->next)
                op->next->prev = op->prev;
        if (op->stream)
                op->stream->op = NULL;
        sd_event_source_disable_unref(op->timer);
        sd_event_source_disable_unref(op->defer);
        secret_free(op->token);
        free(op->method);
        free(op->path);
        free(op->query);
        free(op->endpoint);
        free(op->body);
        for (size_t i = 0; op->headers && op->headers[i]; i++)
                free(op->headers[i]);
        free(op->headers);
        free(op->url);
        transfer_reset(&op->t, 0);
        free(op->sb.data);
        if (op->s)
                settings_put(u, op->s);
        free(op);
        return NULL;
}

/* Run the op's next step at `at` (clock_now() time; 0 or a time past: at the next iteration). */
static int op_schedule(UpstreamCall *op, usec_t at) {
        usec_t now = clock_now(), when = event_now();
        int r;

        if (at <= now && sd_event_source_set_enabled(op->defer, SD_EVENT_ONESHOT) >= 0) {
                /* Due now: a defer source, not a timer moved to now (a timerfd_settime() each).
                 * As with the timer, the next step is the only wake-up left. */
                (void) sd_event_source_set_enabled(op->timer, SD_EVENT_OFF);
                return 0;
        }
        (void) sd_event_source_set_enabled(op->defer, SD_EVENT_OFF);
        if (at > now)
                when += at - now;
        r = sd_event_source_set_time(op->timer, when);
        if (r >= 0)
                r = sd_event_source_set_enabled(op->timer, SD_EVENT_ONESHOT);
        return r;
}

/* A call ends: freed first, so its owner may start others (or free what it pleases) from the
 * callback; resp is freed after the callback, without what it took. */
static void op_finish_call(UpstreamCall *op, int r, UpstreamResponse *resp, const char *err) {
        upstream_done_fn done = op->done;
        void *userdata = op->userdata;

        op_free(op);
        done(userdata, r, r >= 0 ? resp : NULL, r < 0 ? err : NULL);
        if (resp)
                upstream_response_done(resp);
}

/* The op failed before an answer could be handed over. */
static void op_fail(UpstreamCall *op, int r, const char *err) {
        upstream_stream_headers_fn on_headers;

        if (op->kind == OP_CALL) {
                op_finish_call(op, r, NULL, err);
                return;
        }
        op_release_transfer(op);
        op->state = OP_FAILED;
        (void) sd_event_source_set_enabled(op->timer, SD_EVENT_OFF); /* a late firing finds OP_FAILED anyway */
        (void) sd_event_source_set_enabled(op->defer, SD_EVENT_OFF);
        on_headers = op->on_headers;
        on_headers(op->userdata, r, 0, NULL, err); /* last: the owner may close the stream */
}

static size_t op_stream_on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
        UpstreamCall *op = userdata;
        size_t n = size * nmemb, k;

        k = sbuf_write(&op->sb, ptr, n);
        if (k == n && n > 0 && op->state == OP_BODY && op->notify && op_schedule(op, 0) < 0)
                return 0; /* nobody could be told: fail the transfer rather than stall it */
        return k;
}

static size_t op_stream_on_header(char *line, size_t size, size_t nmemb, void *userdata) {
        UpstreamCall *op = userdata;
        size_t n = size * nmemb;

        if (stream_header_line(&op->t, op->h, line, n, &op->status)) {
                op->headers_done = true;
                /* Decided in op_run(), outside libcurl; the body meanwhile fills the buffer. */
                if (op_schedule(op, 0) < 0)
                        return 0;
        }
        return n;
}

/* Send one attempt: the options as for a blocking call, into the multi handle. */
static int op_send(UpstreamCall *op, usec_t now, char *err, size_t errlen) {
        Upstream *u = op->u;
        CURLMcode mc;
        CURL *h;
        int r = -ENOMEM;

        h = loop_handle_get(u);
        if (!h)
                goto fail;
        op->header_list = build_headers(&op->req, op->s, op->token);
        op->token = secret_free(op->token); /* the header list holds it now, until wiped */
        if (!op->header_list)
                goto fail;
        transfer_reset(&op->t, op->kind == OP_CALL ? op->s->max_response : 0);
        r = setup_handle(u, h, op->s, op->cs.deadline - now, &op->t);
        op->t.send_by = op->cs.deadline;
        transfer_taken(u, &op->t, &op->req, now);
        if (r >= 0)
                r = setup_request(h, &op->req, op->url, op->header_list);
        if (r >= 0 && op->kind == OP_STREAM)
                r = setup_stream(h, op->s, op_stream_on_body, op_stream_on_header, op);
        if (r >= 0 && curl_easy_setopt(h, CURLOPT_PRIVATE, op) != CURLE_OK)
                r = -EINVAL;
        if (r >= 0)
                r = loop_apply_settings(u, op->s);
        if (r < 0)
                goto fail;
        if (op->kind == OP_STREAM) {
                sbuf_clear(&op->sb);
                op->headers_done = op->body_done = false;
                op->status = 0;
                op->result = CURLE_OK;
        }
        op->h = h; /* before it is added: the callbacks read it */
        mc = curl_multi_add_handle(u->multi, h);
        if (mc != CURLM_OK) {
                op->h = NULL;
                r = mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
                goto fail;
        }
        rule_attempt(u, &op->cs);
        op->started = now;
        return 0;
fail:
        if (h)
                loop_handle_put(u, h, true);
        slist_wipe_free(op->header_list);
        op->header_list = NULL;
        snprintf(err, errlen, "could not set up the call to Visier: %s", strerror(-r));
        return r;
}

static void op_retry(UpstreamCall *op, usec_t delay) {
        op->state = OP_TOKEN;
        if (op_schedule(op, clock_now() + delay) < 0)
                op_fail(op, -ENOMEM, "out of memory");
}

/* A stream's headers are in: retry, fail, or hand them over. */
static void op_stream_headers(UpstreamCall *op) {
        Upstream *u = op->u;
        char err[UPSTREAM_ERROR_MAX] = "";
        upstream_stream_headers_fn on_headers;
        usec_t delay = 0;
        int r;

        observe(u, op->req.endpoint, op->status, op->started);
        observe_budget(u, &op->t);
        r = rule_after_answer(u, op->s, &op->req, &op->cs, op->status, op->t.retry_after, op->generation, &delay, err,
                              sizeof(err));
        if (r > 0) {
                op_release_transfer(op); /* what came of this answer's body is dropped with it */
                op_retry(op, delay);
                return;
        }
        if (r < 0) {
                op_fail(op, r, err);
                return;
        }
        op->state = OP_BODY;
        on_headers = op->on_headers;
        on_headers(op->userdata, 0, op->status, op->t.content_type, NULL); /* last: may close */
}

/* A stream's notification is due (OP_BODY). */
static void op_stream_notify_due(UpstreamCall *op) {
        void (*fn)(void *userdata) = op->notify;

        if (!fn || (op->sb.len == 0 && !op->body_done))
                return;
        op->notify = NULL;
        fn(op->notify_userdata); /* last: may close */
}

static void op_transfer_done(UpstreamCall *op, CURLcode result) {
        Upstream *u = op->u;
        char err[UPSTREAM_ERROR_MAX] = "";
        usec_t delay = 0;
        long status = 0;
        int r;

        if (op->kind == OP_STREAM && op->headers_done) {
                /* The body is complete or broke off; what was received stays readable. */
                op->body_done = true;
                op->result = result;
                op_release_transfer(op);
                if (op->state == OP_BODY && op->notify && op_schedule(op, 0) < 0)
                        op_stream_notify_due(op); /* at once rather than never */
                return;
        }
        if (op->kind == OP_CALL && curl_easy_getinfo(op->h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
                status = 0;
        if (!op->t.unsent)
                observe(u, op->req.endpoint, result == CURLE_OK ? status : 0, op->started);
        op_release_transfer(op);
        observe_budget(u, &op->t);
        if (op->kind == OP_STREAM || result != CURLE_OK)
                /* A stream here ended without its headers: no answer, as a network error. */
                r = rule_after_error(u, op->s, &op->req, &op->cs, result, &op->t, &delay, err, sizeof(err));
        else
                r = rule_after_answer(u, op->s, &op->req, &op->cs, status, op->t.retry_after, op->generation, &delay,
                                      err, sizeof(err));
        if (r > 0) {
                op_retry(op, delay);
                return;
        }
        if (r < 0) {
                op_fail(op, r, err);
                return;
        }
        op_finish_call(op, 0,
                       &(UpstreamResponse) {
                               .status = status,
                               .content_type = TAKE_PTR(op->t.content_type),
                               .body = TAKE_PTR(op->t.body),
                               .body_len = op->t.len,
                               .attempts = op->cs.attempts,
                       },
                       NULL);
}

static void op_run(UpstreamCall *op);

static int op_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        UpstreamCall *op = userdata;

        (void) sd_event_source_set_enabled(op->defer, SD_EVENT_OFF);
        op_run(op);
        return 0;
}

static int op_on_defer(sd_event_source *s, void *userdata) {
        UpstreamCall *op = userdata;

        (void) sd_event_source_set_enabled(op->timer, SD_EVENT_OFF);
        op_run(op);
        return 0;
}

static void op_step_budget(UpstreamCall *op) {
        char err[UPSTREAM_ERROR_MAX] = "";
        usec_t now = clock_now(), wait = 0;
        int r;

        r = rule_budget(op->u, &op->req, now, op->cs.deadline, &wait, err, sizeof(err));
        if (r == -EAGAIN) {
                if (op_schedule(op, now + wait) < 0)
                        op_fail(op, -ENOMEM, "out of memory");
                return;
        }
        if (r >= 0)
                r = rule_expired(&op->cs, &op->req, now, err, sizeof(err));
        if (r >= 0)
                r = op_send(op, now, err, sizeof(err));
        if (r < 0) {
                op_fail(op, r, err);
                return;
        }
        op->state = OP_SENDING;
        /* A stream has no overall timeout (see setup_stream): until its headers are in, the
         * deadline holds. A call has libcurl's CURLOPT_TIMEOUT_MS, but libcurl does not time
         * out a transfer still waiting for a connection (max_connections all busy), so the
         * deadline holds for it too, a little after libcurl's own. */
        if (op_schedule(op, op->cs.deadline + (op->kind == OP_CALL ? UPSTREAM_DEADLINE_GRACE : 0)) < 0) {
                op_release_transfer(op);
                op_fail(op, -ENOMEM, "out of memory");
        }
}

static void op_step_token(UpstreamCall *op) {
        char err[UPSTREAM_ERROR_MAX] = "";
        int r;

        op->token = secret_free(op->token);
        if (!op->u->tk) {
                op_fail(op, -ENOKEY, "no Visier token: no token keeper");
                return;
        }
        r = token_try_acquire(op->u->tk, op->cs.deadline, &op->token, &op->generation, err, sizeof(err));
        if (r == -EAGAIN) {
                /* A login is in progress or due: the keeper's notification (on_token_event) or
                 * the deadline runs this again. */
                op->waiting_token = true;
                if (op_schedule(op, op->cs.deadline) < 0)
                        op_fail(op, -ENOMEM, "out of memory");
                return;
        }
        if (r < 0) {
                op_fail(op, rule_token_error(r), err);
                return;
        }
        op->state = OP_BUDGET;
        op_step_budget(op);
}

static void op_run(UpstreamCall *op) {
        char err[UPSTREAM_ERROR_MAX] = "";
        usec_t delay = 0;
        int r;

        op->waiting_token = false;
        switch (op->state) {
        case OP_TOKEN:
                op_step_token(op);
                return;
        case OP_BUDGET:
                op_step_budget(op);
                return;
        case OP_SENDING:
                /* A stream's headers are in, or the deadline came first. */
                if (op->kind == OP_STREAM && op->headers_done) {
                        op_stream_headers(op);
                        return;
                }
                if (clock_now() < op->cs.deadline) {
                        if (op_schedule(op, op->cs.deadline) < 0)
                                op_fail(op, -ENOMEM, "out of memory");
                        return;
                }
                observe(op->u, op->req.endpoint, 0, op->started);
                op_release_transfer(op);
                r = rule_after_error(op->u, op->s, &op->req, &op->cs, CURLE_OPERATION_TIMEDOUT, NULL, &delay, err,
                                     sizeof(err));
                op_fail(op, r < 0 ? r : -ETIMEDOUT, err); /* a timeout is never retried */
                return;
        case OP_BODY:
                op_stream_notify_due(op);
                return;
        case OP_FAILED:
                return;
        }
}

static int request_copy(UpstreamCall *op, const UpstreamRequest *req) {
        size_t n = 0;

        op->method = strdup(req->method);
        op->path = strdup(req->path);
        op->endpoint = strdup(req->endpoint ? req->endpoint : req->path);
        if (!op->method || !op->path || !op->endpoint)
                return -ENOMEM;
        if (req->query && !(op->query = strdup(req->query)))
                return -ENOMEM;
        if (req->body) {
                op->body = malloc(req->body_len + 1);
                if (!op->body)
                        return -ENOMEM;
                memcpy(op->body, req->body, req->body_len);
                op->body[req->body_len] = '\0';
        }
        while (req->headers && req->headers[n])
                n++;
        op->headers = calloc(n + 1, sizeof(char *));
        if (!op->headers)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (!(op->headers[i] = strdup(req->headers[i])))
                        return -ENOMEM;
        op->req = (UpstreamRequest) {
                .endpoint = op->endpoint,
                .method = op->method,
                .path = op->path,
                .query = op->query,
                .headers = (const char *const *) op->headers,
                .body = op->body,
                .body_len = req->body_len,
                .idempotent = req->idempotent,
                .background = req->background,
        };
        return 0;
}

static int op_new(Upstream *u, OpKind kind, const UpstreamRequest *req, UpstreamCall **ret) {
        UpstreamCall *op;
        int r;

        if (!u->event)
                return -EINVAL;
        op = calloc(1, sizeof(*op));
        if (!op)
                return -ENOMEM;
        op->u = u;
        op->next = u->ops;
        if (op->next)
                op->next->prev = op;
        u->ops = op;
        op->kind = kind;
        op->state = OP_TOKEN;
        op->s = settings_get(u);
        op->cs = (CallState) { .deadline = clock_now() + op->s->request_timeout };
        r = request_copy(op, req);
        if (r >= 0)
                r = request_url(op->s, &op->req, &op->url);
        if (r >= 0 && kind == OP_STREAM && !(op->sb.data = malloc(UPSTREAM_STREAM_BUFFER)))
                r = -ENOMEM;
        /* The first step runs at the next iteration, never inside the caller's start. Later
         * steps, deadlines and backoffs, are timers at 1 ms accuracy; a step due now is the
         * defer source. */
        if (r >= 0)
                r = sd_event_add_time(u->event, &op->timer, CLOCK_BOOTTIME, 0, USEC_PER_MSEC, op_on_timer, op);
        if (r >= 0)
                r = sd_event_source_set_enabled(op->timer, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_defer(u->event, &op->defer, op_on_defer, op);
        if (r < 0) {
                op_free(op);
                return r;
        }
        *ret = op;
        return 0;
}

UpstreamCall *upstream_call_start(Upstream *u, const UpstreamRequest *req, upstream_done_fn done, void *userdata) {
        UpstreamCall *op;
        int r;

        r = op_new(u, OP_CALL, req, &op);
        if (r < 0) {
                errno = -r;
                return NULL;
        }
        op->done = done;
        op->userdata = userdata;
        return op;
}

void upstream_call_abort(UpstreamCall *c) {
        op_free(c);
}

UpstreamStream *upstream_stream_start(Upstream *u, const UpstreamRequest *req, upstream_stream_headers_fn on_headers,
                                      void *userdata) {
        UpstreamStream *st;
        UpstreamCall *op;
        int r;

        st = calloc(1, sizeof(*st));
        if (!st) {
                errno = ENOMEM;
                return NULL;
        }
        r = op_new(u, OP_STREAM, req, &op);
        if (r < 0) {
                free(st);
                errno = -r;
                return NULL;
        }
        st->u = u;
        st->op = op;
        op->stream = st;
        op->on_headers = on_headers;
        op->userdata = userdata;
        return st;
}

ssize_t upstream_stream_read_nb(UpstreamStream *st, char *buf, size_t len) {
        UpstreamCall *op = st->op;
        size_t n;

        if (!op || op->state != OP_BODY)
                return op && op->state == OP_FAILED ? -EIO : -EINVAL;
        n = sbuf_read(&op->sb, buf, len);
        if (op->h && sbuf_resume_due(&op->sb)) {
                op->sb.paused = false;
                /* libcurl may hand over the chunk it held back right here (op_stream_on_body). */
                if (curl_easy_pause(op->h, CURLPAUSE_CONT) != CURLE_OK) {
                        op_release_transfer(op); /* cannot go on: the reader gets -EIO at the end */
                        op->body_done = true;
                        op->result = CURLE_RECV_ERROR;
                }
        }
        if (n > 0)
                return (ssize_t) n;
        if (op->body_done)
                return op->result == CURLE_OK ? 0 : -EIO;
        return -EAGAIN;
}

void upstream_stream_notify(UpstreamStream *st, void (*fn)(void *userdata), void *userdata) {
        UpstreamCall *op = st->op;

        if (!op)
                return;
        op->notify = fn;
        op->notify_userdata = userdata;
        /* Already readable: at the next iteration, never from inside this call. On failure the
         * next chunk or the end schedules it again. */
        if (fn && op->state == OP_BODY && (op->sb.len > 0 || op->body_done))
                (void) op_schedule(op, 0);
}
