/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Upstream client (see upstream.h).
 *
 * DESIGN: the settings live in a reference-counted snapshot, so a reload swaps them without
 * disturbing calls in flight. Easy handles are pooled and share one connection cache and
 * DNS cache through a CURLSH, which keeps connections to Visier warm across local requests
 * and threads. Secrets reach libcurl only inside header lists and a form body that are
 * wiped before they are freed.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <strings.h>
#include <sys/random.h>

#include "upstream.h"

typedef struct Settings {
        unsigned refs;
        char *base_url, *username, *ca_file;
        Secret *apikey, *password;
        usec_t connect_timeout, request_timeout;
        unsigned max_retries;
        size_t max_response;
} Settings;

struct Upstream {
        pthread_mutex_t lock; /* settings, pool, stats */
        Settings *settings;
        RateLimit *rl;
        TokenKeeper *tk;

        CURLSH *share;
        pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

        CURL *pool[UPSTREAM_POOL_MAX];
        size_t pool_n;

        UpstreamStats stats;
        upstream_observer_fn observer;
        void *observer_userdata;
};

typedef struct Transfer {
        char *body;
        size_t len, cap, max;
        bool too_large;
        char *content_type;
        long remaining_minute, remaining_hour;
        long retry_after; /* seconds, -1 if absent */
} Transfer;

static Settings *settings_unref(Settings *s) {
        if (!s || --s->refs > 0)
                return NULL;
        free(s->base_url);
        free(s->username);
        free(s->ca_file);
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
        s->apikey = secret_dup(in->apikey);
        s->password = secret_dup(in->password);
        s->connect_timeout = in->connect_timeout;
        s->request_timeout = in->request_timeout;
        s->max_retries = in->max_retries;
        s->max_response = in->max_response;
        if (!s->base_url || !s->username || (in->ca_file && !s->ca_file) || !s->apikey || !s->password) {
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

int upstream_new(const UpstreamSettings *s, RateLimit *rl, Upstream **ret) {
        _cleanup_(upstream_freep) Upstream *u = NULL;
        int r;

        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        pthread_mutex_init(&u->lock, NULL);
        for (size_t i = 0; i < ELEMENTSOF(u->share_locks); i++)
                pthread_mutex_init(&u->share_locks[i], NULL);
        u->rl = rl;
        r = settings_new(s, &u->settings);
        if (r < 0)
                return r;
        u->share = curl_share_init();
        if (!u->share)
                return -ENOMEM;
        curl_share_setopt(u->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(u->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(u->share, CURLSHOPT_USERDATA, u);
        curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
        curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        *ret = TAKE_PTR(u);
        return 0;
}

Upstream *upstream_free(Upstream *u) {
        if (!u)
                return NULL;
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

static void observe(Upstream *u, const char *endpoint, long status, usec_t started) {
        if (u->observer)
                u->observer(u->observer_userdata, endpoint, status, clock_now() - started);
}

void upstream_set_token_keeper(Upstream *u, TokenKeeper *tk) {
        u->tk = tk;
}

void upstream_stats(Upstream *u, UpstreamStats *ret) {
        pthread_mutex_lock(&u->lock);
        *ret = u->stats;
        pthread_mutex_unlock(&u->lock);
}

#define STAT_INC(u, field)                   \
        do {                                 \
                pthread_mutex_lock(&(u)->lock); \
                (u)->stats.field++;          \
                pthread_mutex_unlock(&(u)->lock); \
        } while (0)

static CURL *handle_get(Upstream *u) {
        CURL *h = NULL;

        pthread_mutex_lock(&u->lock);
        if (u->pool_n > 0)
                h = u->pool[--u->pool_n];
        pthread_mutex_unlock(&u->lock);
        if (h)
                curl_easy_reset(h);
        else
                h = curl_easy_init();
        return h;
}

static void handle_put(Upstream *u, CURL *h) {
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

/* Common options for every call: TLS always verified, no redirects, http(s) only. */
static void setup_handle(Upstream *u, CURL *h, const Settings *s, usec_t remaining, Transfer *t) {
        usec_t connect = s->connect_timeout < remaining ? s->connect_timeout : remaining;

        curl_easy_setopt(h, CURLOPT_SHARE, u->share);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (s->ca_file)
                curl_easy_setopt(h, CURLOPT_CAINFO, s->ca_file);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) (connect / USEC_PER_MSEC + 1));
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) (remaining / USEC_PER_MSEC + 1));
        curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
        /* The shared cache keeps as many idle connections as the last handle allowed; the
         * default (a handful) would close most of them under concurrent load. */
        curl_easy_setopt(h, CURLOPT_MAXCONNECTS, (long) UPSTREAM_POOL_MAX);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "visierd/" PACKAGE_VERSION);
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
        if (u->rl)
                ratelimit_observe(u->rl, t->remaining_minute, t->remaining_hour, clock_now());
}

static char *strip(char *s, size_t *len) {
        while (*len > 0 && (s[*len - 1] == '\n' || s[*len - 1] == '\r' || s[*len - 1] == ' '))
                s[--*len] = '\0';
        return s;
}

int upstream_login(void *userdata, Secret **ret_token, char *err, size_t errlen) {
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

        setup_handle(u, h, s, s->request_timeout, &t);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) form_len);

        /* A login is a call like any other: it waits for the shared rate budget. */
        if (u->rl && ratelimit_take(u->rl, clock_now() + s->request_timeout) < 0) {
                r = -EBUSY;
                snprintf(err, errlen, "the Visier rate budget has no call left for a login");
                goto out;
        }
        STAT_INC(u, calls);
        started = clock_now();
        c = curl_easy_perform(h);
        if (c == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        observe(u, "/v1/admin/visierSecureToken", c == CURLE_OK ? status : 0, started);
        observe_budget(u, &t);
        if (c != CURLE_OK) {
                r = curl_to_errno(c);
                snprintf(err, errlen, "login call to %s failed: %s", s->base_url, curl_easy_strerror(c));
                goto out;
        }
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
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
        if (h) {
                /* The handle saw the form; a reset drops libcurl's pointers to it. */
                curl_easy_reset(h);
                handle_put(u, h);
        }
        settings_put(u, s);
        return r;
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

/* Build the header list for one attempt: forwarded headers, then our apikey and cookie. */
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
                if (!has_ct && !(l = curl_slist_append(l, "Content-Type: application/json")))
                        goto fail;
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

/* After a network error: wait and retry an idempotent call, within the retries and deadline? */
static bool retry_after_network_error(Upstream *u, const Settings *s, const UpstreamRequest *req,
                                      unsigned *failed_attempts, usec_t deadline) {
        usec_t d;

        if (!req->idempotent || *failed_attempts >= s->max_retries)
                return false;
        d = retry_delay(++*failed_attempts);
        if (clock_now() + d >= deadline)
                return false;
        STAT_INC(u, retries);
        clock_sleep(d);
        return true;
}

/*
 * What an HTTP answer means for the call, the same for buffered and streamed calls: a 401
 * invalidates the token it was sent with and is retried within the deadline; a 429 closes the rate budget
 * until Retry-After and is retried without counting as a failed attempt; a 5xx to an
 * idempotent call is retried with backoff. True: the caller tries again (any wait is done).
 */
static bool retry_after_answer(Upstream *u, const Settings *s, const UpstreamRequest *req, long status,
                               long retry_after, uint64_t generation, bool *retried_401, unsigned *failed_attempts,
                               usec_t deadline) {
        *retried_401 = status == 401; /* the latest answer refused the token */
        if (status == 401) {
                /* The token was refused (revoked, or expired early): again with a fresh one, as
                 * long as the deadline allows. A 401 about a token older than the current one
                 * costs nothing; for the current one the keeper logs in again, with backoff
                 * when new tokens keep being refused, and token_acquire() gives up (-ENOKEY)
                 * rather than wait past the deadline. A 401 never reaches the caller. */
                STAT_INC(u, unauthorized);
                token_invalidate(u->tk, generation);
                return clock_now() < deadline;
        }
        token_confirm(u->tk, generation);
        if (status == 429) {
                usec_t wait = retry_after >= 0 ? (usec_t) retry_after * USEC_PER_SEC : UPSTREAM_RETRY_AFTER_DEFAULT;

                STAT_INC(u, throttled);
                if (u->rl)
                        ratelimit_block(u->rl, clock_now() + wait); /* the next ratelimit_take() waits */
                if (clock_now() + wait >= deadline)
                        return false;
                if (!u->rl)
                        clock_sleep(wait);
                return true; /* not a failed attempt */
        }
        if (status >= 500 && req->idempotent && *failed_attempts < s->max_retries) {
                usec_t d = retry_delay(++*failed_attempts);

                if (clock_now() + d >= deadline)
                        return false;
                STAT_INC(u, retries);
                clock_sleep(d);
                return true;
        }
        return false;
}

int upstream_call(Upstream *u, const UpstreamRequest *req, UpstreamResponse *ret, char *err, size_t errlen) {
        Settings *s = settings_get(u);
        usec_t deadline = clock_now() + s->request_timeout;
        bool retried_401 = false, maybe_applied = false;
        unsigned failed_attempts = 0, attempts = 0;
        _cleanup_free_ char *url = NULL;
        Transfer t = {};
        int r;

        if (asprintf(&url, "%s%s%s%s", s->base_url, req->path, req->query && *req->query ? "?" : "",
                     req->query ? req->query : "") < 0) {
                url = NULL;
                r = -ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto out;
        }

        for (;;) {
                _cleanup_(secret_freep) Secret *token = NULL;
                struct curl_slist *headers = NULL;
                uint64_t generation = 0;
                usec_t now;
                long status = 0;
                CURLcode c;
                CURL *h;

                r = token_acquire(u->tk, deadline, &token, &generation, err, errlen);
                if (r < 0) {
                        if (r != -ENOMEM)
                                r = r == -ETIMEDOUT ? -ENOKEY : r;
                        goto out;
                }
                if (u->rl && ratelimit_take(u->rl, deadline) < 0) {
                        r = -EBUSY;
                        snprintf(err, errlen, "the Visier rate budget has no call left before the request timeout");
                        goto out;
                }
                now = clock_now();
                if (now >= deadline) {
                        /* Nothing is sent now. A write whose earlier attempts were all refused
                         * outright (401, 429) has not landed: say so, so it is not taken for
                         * one that may have. */
                        r = !req->idempotent && !maybe_applied ? -ECANCELED : -ETIMEDOUT;
                        if (retried_401 && r == -ETIMEDOUT)
                                r = -ENOKEY; /* the last answer was a refused token */
                        snprintf(err, errlen, "%s",
                                 retried_401 ? "Visier refused visierd's security token until the request timed out"
                                 : r == -ECANCELED ? "request to Visier timed out before it could be sent"
                                                   : "request to Visier timed out");
                        goto out;
                }

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
                setup_handle(u, h, s, deadline - now, &t);
                /* libcurl silently re-sends a request whose reused connection dies before an
                 * answer; for a write that could apply it twice, so writes get a new connection. */
                if (!req->idempotent)
                        curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
                curl_easy_setopt(h, CURLOPT_URL, url);
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
                if (streq(req->method, "GET"))
                        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
                else {
                        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
                        if (req->body) {
                                curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
                                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
                        }
                }

                attempts++;
                STAT_INC(u, calls);
                c = curl_easy_perform(h);
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
                observe(u, req->endpoint ? req->endpoint : req->path, c == CURLE_OK ? status : 0, now);
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
                slist_wipe_free(headers);
                handle_put(u, h);
                observe_budget(u, &t);

                if (c != CURLE_OK) {
                        maybe_applied = true;
                        r = t.too_large ? -EFBIG : curl_to_errno(c);
                        if (r == -EFBIG)
                                snprintf(err, errlen, "Visier's answer is larger than max_response_size (%zu bytes)",
                                         s->max_response);
                        else
                                snprintf(err, errlen, "%s %s: %s", req->method, req->path, curl_easy_strerror(c));
                        if (r == -EHOSTUNREACH && retry_after_network_error(u, s, req, &failed_attempts, deadline))
                                continue;
                        STAT_INC(u, failures);
                        goto out;
                }

                if (status >= 500)
                        maybe_applied = true;
                if (retry_after_answer(u, s, req, status, t.retry_after, generation, &retried_401, &failed_attempts,
                                       deadline))
                        continue;
                if (status == 401) {
                        /* Refused until the deadline: visierd's problem, never the caller's 401. */
                        r = -ENOKEY;
                        snprintf(err, errlen, "Visier refused visierd's security token until the request timed out");
                        goto out;
                }

                ret->status = status;
                ret->content_type = TAKE_PTR(t.content_type);
                ret->body = TAKE_PTR(t.body);
                ret->body_len = t.len;
                ret->attempts = attempts;
                r = 0;
                goto out;
        }
out:
        transfer_reset(&t, 0);
        settings_put(u, s);
        return r;
}

/* ---- streamed calls ---- */

struct UpstreamStream {
        Upstream *u;
        Settings *s;
        CURLM *multi;
        CURL *h;
        struct curl_slist *headers;
        Transfer t;            /* header fields of the answer */
        char *buf;             /* body bytes received and not yet read */
        size_t head, tail;
        bool paused, done, headers_done;
        CURLcode result;
        long status;
        usec_t started;
        const char *endpoint;
};

static size_t stream_on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
        UpstreamStream *st = userdata;
        size_t n = size * nmemb;

        if (st->head > 0 && st->tail + n > UPSTREAM_STREAM_BUFFER) {
                memmove(st->buf, st->buf + st->head, st->tail - st->head);
                st->tail -= st->head;
                st->head = 0;
        }
        if (st->tail + n > UPSTREAM_STREAM_BUFFER) {
                /* Full: libcurl keeps this chunk and hands it over again once we resume. */
                st->paused = true;
                return CURL_WRITEFUNC_PAUSE;
        }
        memcpy(st->buf + st->tail, ptr, n);
        st->tail += n;
        return n;
}

static size_t stream_on_header(char *line, size_t size, size_t nmemb, void *userdata) {
        UpstreamStream *st = userdata;
        size_t n = size * nmemb;

        if ((n == 2 && line[0] == '\r' && line[1] == '\n') || (n == 1 && line[0] == '\n')) {
                long status = 0;
                curl_easy_getinfo(st->h, CURLINFO_RESPONSE_CODE, &status);
                if (status >= 200) {
                        st->status = status;
                        st->headers_done = true;
                }
                return n;
        }
        return on_header(line, size, nmemb, &st->t);
}

/* Run the transfer until cond holds, the transfer ends, or (for the headers) the deadline. */
static void stream_drive(UpstreamStream *st, bool want_headers, usec_t deadline) {
        for (;;) {
                int running = 0, left;
                CURLMsg *msg;

                curl_multi_perform(st->multi, &running);
                while ((msg = curl_multi_info_read(st->multi, &left)))
                        if (msg->msg == CURLMSG_DONE) {
                                st->done = true;
                                st->result = msg->data.result;
                        }
                if (st->done || (want_headers ? st->headers_done : st->tail > st->head))
                        return;
                if (want_headers && clock_now() >= deadline) {
                        st->done = true;
                        st->result = CURLE_OPERATION_TIMEDOUT;
                        return;
                }
                curl_multi_poll(st->multi, NULL, 0, 1000, NULL);
        }
}

static void stream_release_handle(UpstreamStream *st) {
        if (st->h) {
                curl_multi_remove_handle(st->multi, st->h);
                curl_easy_setopt(st->h, CURLOPT_HTTPHEADER, NULL);
                /* A handle whose transfer was cut short is not reused: its connection is gone. */
                if (st->done && st->result == CURLE_OK)
                        handle_put(st->u, st->h);
                else
                        curl_easy_cleanup(st->h);
                st->h = NULL;
        }
        slist_wipe_free(st->headers);
        st->headers = NULL;
}

UpstreamStream *upstream_stream_close(UpstreamStream *st) {
        if (!st)
                return NULL;
        if (st->h && !st->done)
                st->result = CURLE_ABORTED_BY_CALLBACK;
        stream_release_handle(st);
        if (st->multi)
                curl_multi_cleanup(st->multi);
        transfer_reset(&st->t, 0);
        free(st->buf);
        if (st->s)
                settings_put(st->u, st->s);
        free(st);
        return NULL;
}

/* One attempt: start the call and wait for its answer's headers. */
static int stream_attempt(UpstreamStream *st, const UpstreamRequest *req, const char *url, const Secret *token,
                          usec_t deadline) {
        usec_t now = clock_now();
        CURL *h;

        h = handle_get(st->u);
        st->headers = build_headers(req, st->s, token);
        if (!h || !st->headers) {
                if (h)
                        handle_put(st->u, h);
                return -ENOMEM;
        }
        st->h = h;
        st->head = st->tail = 0;
        st->paused = st->done = st->headers_done = false;
        st->status = 0;
        transfer_reset(&st->t, 0);
        /* No overall timeout: an export may stream for a long time. A stall is what fails it. */
        setup_handle(st->u, h, st->s, deadline - now, &st->t);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 0L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long) (st->s->request_timeout / USEC_PER_SEC));
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, stream_on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, st);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, stream_on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, st);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, st->headers);
        if (req->body) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
        }
        if (!streq(req->method, "GET") && !streq(req->method, "POST"))
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
        st->started = now;
        curl_multi_add_handle(st->multi, h);
        stream_drive(st, true, deadline);
        observe(st->u, st->endpoint, st->headers_done ? st->status : 0, st->started);
        observe_budget(st->u, &st->t);
        return 0;
}

int upstream_stream_open(Upstream *u, const UpstreamRequest *req, UpstreamStream **ret, long *ret_status,
                         char **ret_content_type, char *err, size_t errlen) {
        UpstreamStream *st;
        _cleanup_free_ char *url = NULL;
        unsigned failed_attempts = 0;
        bool retried_401 = false;
        usec_t deadline;
        int r;

        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        st->u = u;
        st->s = settings_get(u);
        st->endpoint = req->endpoint ? req->endpoint : req->path;
        st->multi = curl_multi_init();
        st->buf = malloc(UPSTREAM_STREAM_BUFFER);
        if (!st->multi || !st->buf ||
            asprintf(&url, "%s%s%s%s", st->s->base_url, req->path, req->query && *req->query ? "?" : "",
                     req->query ? req->query : "") < 0) {
                url = NULL;
                upstream_stream_close(st);
                return -ENOMEM;
        }
        deadline = clock_now() + st->s->request_timeout;

        for (;;) {
                _cleanup_(secret_freep) Secret *token = NULL;
                uint64_t generation = 0;

                r = token_acquire(u->tk, deadline, &token, &generation, err, errlen);
                if (r < 0) {
                        r = r == -ETIMEDOUT ? -ENOKEY : r;
                        break;
                }
                if (u->rl && (req->background ? ratelimit_take_low(u->rl, deadline, UPSTREAM_BACKGROUND_RESERVE)
                                              : ratelimit_take(u->rl, deadline)) < 0) {
                        r = -EBUSY;
                        snprintf(err, errlen, "the Visier rate budget has no call left before the request timeout");
                        break;
                }
                STAT_INC(u, calls);
                r = stream_attempt(st, req, url, token, deadline);
                if (r < 0) {
                        snprintf(err, errlen, "out of memory");
                        break;
                }
                if (!st->headers_done) {
                        r = st->result == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
                        snprintf(err, errlen, "%s %s: %s", req->method, req->path, curl_easy_strerror(st->result));
                        stream_release_handle(st);
                        if (r == -EHOSTUNREACH && retry_after_network_error(u, st->s, req, &failed_attempts, deadline))
                                continue;
                        STAT_INC(u, failures);
                        break;
                }
                if (retry_after_answer(u, st->s, req, st->status, st->t.retry_after, generation, &retried_401,
                                       &failed_attempts, deadline)) {
                        stream_release_handle(st);
                        continue;
                }
                if (st->status == 401) {
                        r = -ENOKEY;
                        snprintf(err, errlen, "Visier refused visierd's security token until the request timed out");
                        break;
                }
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

        if (st->tail == st->head) {
                if (st->paused) {
                        st->paused = false;
                        curl_easy_pause(st->h, CURLPAUSE_CONT);
                }
                if (!st->done)
                        stream_drive(st, false, USEC_INFINITY);
        }
        if (st->tail > st->head) {
                n = st->tail - st->head < len ? st->tail - st->head : len;
                memcpy(buf, st->buf + st->head, n);
                st->head += n;
                if (st->head == st->tail)
                        st->head = st->tail = 0;
                return (ssize_t) n;
        }
        /* Nothing left: the end of the body, or a transfer that broke off. */
        return st->result == CURLE_OK ? 0 : -EIO;
}
