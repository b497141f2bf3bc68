/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierctl's commands (see commands.h): status, health, check, jobs (and jobs --watch), top,
 * job, cancel, retry, wait, submit, exports and export. Each does its requests through the
 * client, prints a table or the raw JSON (or draws a live screen through screen.c), and maps
 * what happened to one of the documented exit statuses. This is the one layer that
 * prints errors; it never prints the token.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "commands.h"
#include "output.h"
#include "screen.h"

#define CTL_BODY_MAX (64u * 1024u * 1024u) /* largest change file sent (visierd's own cap) */
#define CTL_LINE_MAX 512                   /* one formatted table cell */
#define CTL_WAIT_BACKOFF_FIRST (100 * USEC_PER_MSEC)
#define CTL_WAIT_BACKOFF_MAX (1 * USEC_PER_SEC)
#define CTL_ID_MAX 999999999999999999ULL /* visierd's ids have at most 18 digits */
#define CTL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CTL_PROGRESS_EVERY (200 * USEC_PER_MSEC) /* export: how often the progress line is redrawn */

/* ---- small helpers ---- */

static const char *ctl_str(const json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}

static long long ctl_int(const json_t *o, const char *key) {
        return (long long) json_integer_value(json_object_get(o, key));
}

/* A scalar as text (strings as they are, numbers in decimal, null as NULL). */
static const char *ctl_scalar(const json_t *v, char *buf, size_t len) {
        if (json_is_string(v))
                return json_string_value(v);
        if (json_is_integer(v)) {
                snprintf(buf, len, "%lld", (long long) json_integer_value(v));
                return buf;
        }
        if (json_is_real(v)) {
                snprintf(buf, len, "%.1f", json_real_value(v));
                return buf;
        }
        if (json_is_boolean(v))
                return json_is_true(v) ? "yes" : "no";
        return NULL;
}

static int ctl_exit_from_errno(int r) {
        switch (r) {
        case -ETIMEDOUT:
                return CTL_EXIT_TIMEOUT;
        case -ENOMEM:
        case -EFBIG:
                return CTL_EXIT_FAILED;
        default:
                return CTL_EXIT_UNREACHABLE;
        }
}

/* One request. Returns CTL_EXIT_OK when visierd answered (any status; reply filled), or the
 * exit status of the transport error, already reported. */
static int ctl_call(Ctl *ctl, const char *method, const char *path, const char *const *headers, const char *body,
                    size_t body_len, unsigned long timeout_ms, ClientReply *reply) {
        char err[CLIENT_ERROR_MAX] = "";
        int r;

        r = client_call(ctl->client, method, path, headers, body, body_len, timeout_ms, reply, err, sizeof(err));
        if (r == -ETIMEDOUT)
                output_error("visierd did not answer within the timeout: %s", err);
        else if (r == -ENOMEM)
                output_error("out of memory");
        else if (r == -EFBIG)
                output_error("%s", err);
        else if (r < 0)
                output_error("cannot reach visierd: %s", err);
        return r < 0 ? ctl_exit_from_errno(r) : CTL_EXIT_OK;
}

/* visierd refused (4xx) or failed (5xx): its message on stderr, the answer itself with --json. */
static int ctl_refused(Ctl *ctl, const ClientReply *reply) {
        if (ctl->args->json && reply->json)
                output_json(stdout, reply->json);
        output_error("%s (HTTP %ld)", client_reply_message(reply), reply->status);
        return CTL_EXIT_FAILED;
}

/* GET a JSON document that must come with 200. */
static int ctl_get(Ctl *ctl, const char *path, ClientReply *reply) {
        int r = ctl_call(ctl, "GET", path, NULL, NULL, 0, 0, reply);

        if (r != CTL_EXIT_OK)
                return r;
        if (reply->status != 200)
                return ctl_refused(ctl, reply);
        if (!reply->json) {
                output_error("GET %s: visierd answered with something that is not JSON", path);
                return CTL_EXIT_FAILED;
        }
        return CTL_EXIT_OK;
}

static int ctl_parse_id(const char *s, unsigned long long *ret) {
        unsigned long long v = 0;

        if (!*s || strlen(s) > 18)
                goto bad;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        goto bad;
                v = v * 10 + (unsigned long long) (*p - '0');
        }
        if (v == 0 || v > CTL_ID_MAX)
                goto bad;
        *ret = v;
        return 0;
bad:
        output_error("'%s' is not a job id (a positive whole number)", s);
        return -EINVAL;
}

/* "3723 s" as "1h 2m 3s". */
static void ctl_duration(long long s, char *buf, size_t len) {
        if (s >= 86400)
                snprintf(buf, len, "%lldd %lldh %lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
        else if (s >= 3600)
                snprintf(buf, len, "%lldh %lldm %llds", s / 3600, s % 3600 / 60, s % 60);
        else if (s >= 60)
                snprintf(buf, len, "%lldm %llds", s / 60, s % 60);
        else
                snprintf(buf, len, "%llds", s);
}

_printf_(3, 4) static int ctl_kv(Table *t, const char *key, const char *fmt, ...) {
        char value[CTL_LINE_MAX];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(value, sizeof(value), fmt, ap);
        va_end(ap);
        return table_add_row(t, (const char *const[]) { key, value });
}

/* ---- status ---- */

static int ctl_status_table(const json_t *s, Table *t) {
        const json_t *token = json_object_get(s, "token"), *rate = json_object_get(s, "rate_budget");
        const json_t *jobs = json_object_get(s, "jobs"), *pub = json_object_get(s, "publisher");
        const json_t *up = json_object_get(s, "upstream"), *store = json_object_get(s, "store");
        const json_t *visier = json_object_get(s, "visier"), *oldest;
        char uptime[64], expiry[128] = "", age[64];
        int r = 0;

        ctl_duration(ctl_int(s, "uptime_seconds"), uptime, sizeof(uptime));
        if (json_object_get(token, "expires_in_seconds"))
                snprintf(expiry, sizeof(expiry), ", expires in %lld s", ctl_int(token, "expires_in_seconds"));
        else if (json_object_get(token, "next_login_in_seconds"))
                snprintf(expiry, sizeof(expiry), ", next login in %lld s", ctl_int(token, "next_login_in_seconds"));
        oldest = json_object_get(jobs, "oldest_queued_age_seconds");
        if (json_is_number(oldest))
                snprintf(age, sizeof(age), "%.1f s", json_number_value(oldest));
        else
                snprintf(age, sizeof(age), "-");

        r |= ctl_kv(t, "version:", "%s", strempty(ctl_str(s, "version")));
        r |= ctl_kv(t, "uptime:", "%s", uptime);
        r |= ctl_kv(t, "visier:", "%s as %s", strempty(ctl_str(visier, "base_url")),
                    strempty(ctl_str(visier, "username")));
        r |= ctl_kv(t, "token:", "%s%s%s", strempty(ctl_str(token, "state")),
                    json_is_true(json_object_get(token, "valid")) ? "" : " (no valid token)", expiry);
        r |= ctl_kv(t, "logins:", "%lld, %lld failed%s%s", ctl_int(token, "logins"), ctl_int(token, "login_failures"),
                    ctl_str(token, "last_login_error") ? "; last error: " : "",
                    strempty(ctl_str(token, "last_login_error")));
        r |= ctl_kv(t, "rate budget:", "%lld of %lld left this minute, %lld of %lld this hour",
                    ctl_int(rate, "minute_remaining"), ctl_int(rate, "minute_limit"), ctl_int(rate, "hour_remaining"),
                    ctl_int(rate, "hour_limit"));
        r |= ctl_kv(t, "jobs:", "%lld queued, %lld running, %lld succeeded, %lld failed, %lld cancelled",
                    ctl_int(jobs, "queued"), ctl_int(jobs, "running"), ctl_int(jobs, "succeeded"),
                    ctl_int(jobs, "failed"), ctl_int(jobs, "cancelled"));
        r |= ctl_kv(t, "oldest queued:", "%s", age);
        r |= ctl_kv(t, "publisher:", "%lld write calls, %lld items sent, %lld reconcile calls, %lld splits, %lld retries",
                    ctl_int(pub, "write_calls"), ctl_int(pub, "items_sent"), ctl_int(pub, "reconcile_calls"),
                    ctl_int(pub, "splits"), ctl_int(pub, "retries"));
        r |= ctl_kv(t, "upstream:", "%lld calls, %lld retries, %lld unauthorized, %lld throttled, %lld failures",
                    ctl_int(up, "calls"), ctl_int(up, "retries"), ctl_int(up, "unauthorized"), ctl_int(up, "throttled"),
                    ctl_int(up, "failures"));
        r |= ctl_kv(t, "store:", "%s (%s, schema %lld)", strempty(ctl_str(store, "path")),
                    json_is_true(json_object_get(store, "ok")) ? "ok" : "NOT OK", ctl_int(store, "schema_version"));
        return r < 0 ? -ENOMEM : 0;
}

static int ctl_status(Ctl *ctl) {
        _cleanup_table_ Table *t = NULL;
        ClientReply reply = {};
        int r;

        r = ctl_get(ctl, "/status", &reply);
        if (r == CTL_EXIT_OK) {
                if (ctl->args->json)
                        output_json(stdout, reply.json);
                else if (!(t = table_new(2, NULL)) || ctl_status_table(reply.json, t) < 0) {
                        output_error("out of memory");
                        r = CTL_EXIT_FAILED;
                } else
                        table_print(t, stdout);
        }
        client_reply_done(&reply);
        return r;
}

/* ---- health ---- */

static int ctl_health(Ctl *ctl) {
        ClientReply health = {}, ready = {};
        const json_t *reasons, *v;
        bool is_ready;
        size_t i;
        int r;

        r = ctl_call(ctl, "GET", "/healthz", NULL, NULL, 0, 0, &health);
        if (r != CTL_EXIT_OK)
                goto out;
        if (health.status != 200) {
                r = ctl_refused(ctl, &health);
                goto out;
        }
        r = ctl_call(ctl, "GET", "/readyz", NULL, NULL, 0, 0, &ready);
        if (r != CTL_EXIT_OK)
                goto out;
        is_ready = ready.status == 200;
        if (ctl->args->json) {
                json_t *doc = json_pack("{s:O?, s:O?}", "healthz", health.json, "readyz", ready.json);
                output_json(stdout, doc);
                json_decref(doc);
        } else {
                printf("healthz: %s\n", ctl_str(health.json, "status") ?: "ok");
                printf("readyz:  %s\n", ctl_str(ready.json, "status") ?: (is_ready ? "ready" : "not ready"));
                reasons = json_object_get(ready.json, "reasons");
                json_array_foreach(reasons, i, v)
                        printf("  - %s\n", strempty(json_string_value(v)));
                if (!is_ready && json_array_size(reasons) == 0)
                        printf("  - %s (HTTP %ld)\n", client_reply_message(&ready), ready.status);
        }
        if (!is_ready)
                output_error("visierd is not ready");
        r = is_ready ? CTL_EXIT_OK : CTL_EXIT_NOT_READY;
out:
        client_reply_done(&health);
        client_reply_done(&ready);
        return r;
}

/* A live connectivity test, for after a deploy: visierd is ready (it holds a token), and a
 * read goes through it to Visier and back (Cache-Control: no-cache, so no cached answer
 * stands in for Visier's). */
static int ctl_check(Ctl *ctl) {
        const char *no_cache[] = { "Cache-Control: no-cache", NULL };
        ClientReply ready = {}, read = {};
        int r;

        r = ctl_call(ctl, "GET", "/readyz", NULL, NULL, 0, 0, &ready);
        if (r != CTL_EXIT_OK)
                goto out;
        if (ready.status != 200) {
                const json_t *reasons = json_object_get(ready.json, "reasons"), *v;
                size_t i;

                printf("readyz:  not ready\n");
                json_array_foreach(reasons, i, v)
                        printf("  - %s\n", strempty(json_string_value(v)));
                output_error("visierd is not ready");
                r = CTL_EXIT_NOT_READY;
                goto out;
        }
        printf("readyz:  ready\n");
        r = ctl_call(ctl, "GET", "/v1/admin/capabilities", no_cache, NULL, 0, 0, &read);
        if (r != CTL_EXIT_OK)
                goto out;
        if (read.status != 200) {
                printf("read:    GET /v1/admin/capabilities answered %ld\n", read.status);
                r = ctl_refused(ctl, &read);
                goto out;
        }
        printf("read:    GET /v1/admin/capabilities through visierd: 200 from Visier\n");
        r = CTL_EXIT_OK;
out:
        client_reply_done(&ready);
        client_reply_done(&read);
        return r;
}

/* ---- jobs ---- */

static const char *const job_states[] = { "queued", "running", "succeeded", "failed", "cancelled" };

static bool ctl_job_is_final(const char *state) {
        return state && (streq(state, "succeeded") || streq(state, "failed") || streq(state, "cancelled"));
}

static int ctl_jobs_row(Table *t, const json_t *job) {
        char id[32], items[32], attempts[32];

        snprintf(id, sizeof(id), "%lld", ctl_int(job, "id"));
        snprintf(items, sizeof(items), "%lld", ctl_int(job, "items"));
        snprintf(attempts, sizeof(attempts), "%lld", ctl_int(job, "attempts"));
        return table_add_row(t, (const char *const[]) { id, ctl_str(job, "state"), ctl_str(job, "operation"), items,
                                                        attempts, ctl_str(job, "created_at"), ctl_str(job, "client") });
}

/* --since as visierd takes it: an RFC 3339 time or Unix seconds as given, or "30s", "10m",
 * "2h", "7d" counted back from now (as Unix seconds). */
static int ctl_since(const char *since, char *buf, size_t len) {
        static const struct {
                char unit;
                long long seconds;
        } units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 } };
        size_t n = strspn(since, "0123456789");
        unsigned long long v;
        char *end;

        if (n == 0 || n > 9 || strlen(since) != n + 1) {
                snprintf(buf, len, "%s", since);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (since[n] == units[i].unit) {
                        long long now = (long long) (clock_realtime() / USEC_PER_SEC);

                        errno = 0;
                        v = strtoull(since, &end, 10);
                        if (errno != 0 || end != since + n)
                                return -EINVAL;
                        snprintf(buf, len, "%lld", (long long) v * units[i].seconds > now ? 0LL
                                                                                          : now - (long long) v * units[i].seconds);
                        return 0;
                }
        snprintf(buf, len, "%s", since);
        return 0;
}

/* "/jobs?..." with every filter given, the strings URL-escaped. */
static int ctl_jobs_path(Ctl *ctl, char **ret) {
        const CtlArgs *a = ctl->args;
        const struct {
                const char *name, *value;
        } strs[] = { { "state", a->state }, { "operation", a->operation }, { "client", a->client }, { "since", NULL } };
        char since[64], *path = NULL;
        size_t len = 0;
        bool first = true;
        FILE *f;

        if (a->since && ctl_since(a->since, since, sizeof(since)) < 0)
                return -EINVAL;
        f = open_memstream(&path, &len);
        if (!f)
                return -ENOMEM;
        fputs("/jobs", f);
        for (size_t i = 0; i < ELEMENTSOF(strs); i++) {
                const char *v = i == ELEMENTSOF(strs) - 1 ? (a->since ? since : NULL) : strs[i].value;
                _cleanup_free_ char *e = NULL;

                if (!v)
                        continue;
                if (!(e = client_escape(ctl->client, v))) {
                        fclose(f);
                        free(path);
                        return -ENOMEM;
                }
                fprintf(f, "%c%s=%s", first ? '?' : '&', strs[i].name, e);
                first = false;
        }
        if (a->limit) {
                fprintf(f, "%climit=%u", first ? '?' : '&', a->limit);
                first = false;
        }
        if (a->before)
                fprintf(f, "%cbefore=%llu", first ? '?' : '&', a->before);
        if (fclose(f) != 0) {
                free(path);
                return -ENOMEM;
        }
        *ret = path;
        return 0;
}

static const char *const jobs_headers[] = { "ID", "STATE", "OPERATION", "ITEMS", "ATTEMPTS", "CREATED", "CLIENT" };

/* The jobs of an answer as a table on f. */
/* PREFIX, then VALUE as the shell reads it back: bare when it is plain, else in single quotes. */
static void shell_quoted(FILE *f, const char *prefix, const char *value) {
        fputs(prefix, f);
        if (*value && strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+/@%=,") ==
                              strlen(value)) {
                fputs(value, f);
                return;
        }
        fputc('\'', f);
        for (const char *p = value; *p; p++)
                if (*p == '\'')
                        fputs("'\\''", f);
                else
                        fputc(*p, f);
        fputc('\'', f);
}

static int ctl_jobs_table(const json_t *answer, FILE *f) {
        _cleanup_table_ Table *t = table_new(ELEMENTSOF(jobs_headers), jobs_headers);
        const json_t *job;
        size_t i;

        if (!t)
                return -ENOMEM;
        json_array_foreach(json_object_get(answer, "jobs"), i, job)
                if (ctl_jobs_row(t, job) < 0)
                        return -ENOMEM;
        table_print(t, f);
        return 0;
}

/* Whether a failed request may pass on a live screen: visierd unreachable, slow or failing
 * (5xx) may be better at the next interval; a refusal (4xx) will not. */
static bool ctl_screen_retry(int exit_status, long http_status) {
        return exit_status == CTL_EXIT_UNREACHABLE || exit_status == CTL_EXIT_TIMEOUT || http_status >= 500;
}

/* GET path for a live screen, with the error in err (nothing printed). */
static int ctl_screen_get(Ctl *ctl, const char *path, ClientReply *reply, char *err, size_t errlen, bool *ret_retry) {
        char cerr[CLIENT_ERROR_MAX] = "";
        int r;

        r = client_call(ctl->client, "GET", path, NULL, NULL, 0, 0, reply, cerr, sizeof(cerr));
        if (r < 0) {
                snprintf(err, errlen, "%s%s", r == -ETIMEDOUT ? "visierd did not answer within the timeout: "
                                              : r == -ENOMEM  ? ""
                                                              : "cannot reach visierd: ",
                         r == -ENOMEM ? "out of memory" : cerr);
                *ret_retry = ctl_screen_retry(ctl_exit_from_errno(r), 0);
                return ctl_exit_from_errno(r);
        }
        if (reply->status != 200 || !reply->json) {
                if (reply->status != 200)
                        snprintf(err, errlen, "%s (HTTP %ld)", client_reply_message(reply), reply->status);
                else
                        snprintf(err, errlen, "GET %s: visierd answered with something that is not JSON", path);
                *ret_retry = ctl_screen_retry(CTL_EXIT_FAILED, reply->status);
                return CTL_EXIT_FAILED;
        }
        return CTL_EXIT_OK;
}

static int ctl_jobs_draw(void *userdata, FILE *f, char *err, size_t errlen, bool *ret_retry) {
        Ctl *ctl = userdata;
        _cleanup_free_ char *path = NULL;
        ClientReply reply = {};
        int r;

        if (ctl_jobs_path(ctl, &path) < 0) {
                snprintf(err, errlen, "out of memory");
                return CTL_EXIT_FAILED;
        }
        r = ctl_screen_get(ctl, path, &reply, err, errlen, ret_retry);
        if (r == CTL_EXIT_OK && ctl_jobs_table(reply.json, f) < 0) {
                snprintf(err, errlen, "out of memory");
                r = CTL_EXIT_FAILED;
        }
        client_reply_done(&reply);
        return r;
}

static int ctl_jobs(Ctl *ctl) {
        const CtlArgs *a = ctl->args;
        _cleanup_free_ char *path = NULL;
        ClientReply reply = {};
        const json_t *list;
        size_t i;
        int r;

        if (a->state) {
                bool known = false;
                for (i = 0; i < ELEMENTSOF(job_states); i++)
                        known = known || streq(a->state, job_states[i]);
                if (!known) {
                        output_error("--state must be queued, running, succeeded, failed or cancelled");
                        return CTL_EXIT_USAGE;
                }
        }
        if (!a->watch && (a->interval || a->count)) {
                output_error("--interval and --count go with --watch");
                return CTL_EXIT_USAGE;
        }
        if (a->watch && a->json) {
                output_error("--watch draws a table: it does not go with --json");
                return CTL_EXIT_USAGE;
        }
        r = ctl_jobs_path(ctl, &path);
        if (r < 0) {
                output_error("%s", r == -ENOMEM ? "out of memory" : "--since is out of range");
                return r == -ENOMEM ? CTL_EXIT_FAILED : CTL_EXIT_USAGE;
        }
        if (a->watch)
                return screen_run(&(ScreenConfig) { .title = "visierctl jobs --watch",
                                                    .interval = a->interval ?: SCREEN_INTERVAL_DEFAULT,
                                                    .count = a->count },
                                  ctl_jobs_draw, ctl);

        r = ctl_get(ctl, path, &reply);
        if (r != CTL_EXIT_OK)
                goto out;
        if (a->json) {
                output_json(stdout, reply.json);
                goto out;
        }
        if (ctl_jobs_table(reply.json, stdout) < 0) {
                output_error("out of memory");
                r = CTL_EXIT_FAILED;
                goto out;
        }
        list = json_object_get(reply.json, "jobs");
        if (json_is_string(json_object_get(reply.json, "next"))) {
                /* A command to paste: the free-form values quoted for the shell. */
                fprintf(stderr, "more jobs: visierctl jobs --before %lld",
                        ctl_int(json_array_get(list, json_array_size(list) - 1), "id"));
                if (a->state)
                        fprintf(stderr, " --state %s", a->state);
                if (a->operation)
                        fprintf(stderr, " --operation %s", a->operation);
                if (a->client)
                        shell_quoted(stderr, " --client ", a->client);
                if (a->since)
                        shell_quoted(stderr, " --since ", a->since);
                if (a->limit)
                        fprintf(stderr, " --limit %u", a->limit);
                fputc('\n', stderr);
        }
out:
        client_reply_done(&reply);
        return r;
}

/* ---- top ---- */

/* /status as a screen: the queue by state, the rate budget, the token, the write call in
 * flight and the call counters. */
static int ctl_top_table(const json_t *s, Table *t) {
        const json_t *token = json_object_get(s, "token"), *rate = json_object_get(s, "rate_budget");
        const json_t *jobs = json_object_get(s, "jobs"), *pub = json_object_get(s, "publisher");
        const json_t *up = json_object_get(s, "upstream"), *call = json_object_get(pub, "current_call");
        const json_t *oldest = json_object_get(jobs, "oldest_queued_age_seconds");
        char uptime[64], token_s[CTL_LINE_MAX], call_s[CTL_LINE_MAX], age[64] = "";
        int r = 0;

        ctl_duration(ctl_int(s, "uptime_seconds"), uptime, sizeof(uptime));
        if (json_is_number(oldest))
                snprintf(age, sizeof(age), ", oldest queued %.1f s", json_number_value(oldest));
        if (json_object_get(token, "expires_in_seconds"))
                snprintf(token_s, sizeof(token_s), "%s, expires in %lld s", strempty(ctl_str(token, "state")),
                         ctl_int(token, "expires_in_seconds"));
        else
                snprintf(token_s, sizeof(token_s), "%s (no valid token)%s%lld%s", strempty(ctl_str(token, "state")),
                         json_object_get(token, "next_login_in_seconds") ? ", next login in " : "",
                         ctl_int(token, "next_login_in_seconds"),
                         json_object_get(token, "next_login_in_seconds") ? " s" : "");
        if (json_is_object(call))
                snprintf(call_s, sizeof(call_s), "%s %s: %lld job%s, %lld item%s, for %.1f s",
                         strempty(ctl_str(call, "method")), strempty(ctl_str(call, "endpoint")), ctl_int(call, "jobs"),
                         ctl_int(call, "jobs") == 1 ? "" : "s", ctl_int(call, "items"),
                         ctl_int(call, "items") == 1 ? "" : "s",
                         json_number_value(json_object_get(call, "elapsed_seconds")));
        else
                snprintf(call_s, sizeof(call_s), "idle");

        r |= ctl_kv(t, "visierd:", "%s, up %s, Visier %s as %s", strempty(ctl_str(s, "version")), uptime,
                    strempty(ctl_str(json_object_get(s, "visier"), "base_url")),
                    strempty(ctl_str(json_object_get(s, "visier"), "username")));
        r |= ctl_kv(t, "queue:", "%lld queued, %lld running%s", ctl_int(jobs, "queued"), ctl_int(jobs, "running"), age);
        r |= ctl_kv(t, "finished:", "%lld succeeded, %lld failed, %lld cancelled", ctl_int(jobs, "succeeded"),
                    ctl_int(jobs, "failed"), ctl_int(jobs, "cancelled"));
        r |= ctl_kv(t, "rate budget:", "%lld of %lld left this minute, %lld of %lld this hour",
                    ctl_int(rate, "minute_remaining"), ctl_int(rate, "minute_limit"), ctl_int(rate, "hour_remaining"),
                    ctl_int(rate, "hour_limit"));
        r |= ctl_kv(t, "token:", "%s", token_s);
        r |= ctl_kv(t, "logins:", "%lld, %lld failed", ctl_int(token, "logins"), ctl_int(token, "login_failures"));
        r |= ctl_kv(t, "publishing:", "%s", call_s);
        r |= ctl_kv(t, "write calls:", "%lld, %lld items sent, %lld reconcile calls, %lld splits, %lld retries",
                    ctl_int(pub, "write_calls"), ctl_int(pub, "items_sent"), ctl_int(pub, "reconcile_calls"),
                    ctl_int(pub, "splits"), ctl_int(pub, "retries"));
        r |= ctl_kv(t, "upstream:", "%lld calls, %lld retries, %lld unauthorized, %lld throttled, %lld failures",
                    ctl_int(up, "calls"), ctl_int(up, "retries"), ctl_int(up, "unauthorized"), ctl_int(up, "throttled"),
                    ctl_int(up, "failures"));
        return r < 0 ? -ENOMEM : 0;
}

static int ctl_top_draw(void *userdata, FILE *f, char *err, size_t errlen, bool *ret_retry) {
        Ctl *ctl = userdata;
        _cleanup_table_ Table *t = NULL;
        ClientReply reply = {};
        int r;

        r = ctl_screen_get(ctl, "/status", &reply, err, errlen, ret_retry);
        if (r == CTL_EXIT_OK) {
                if (!(t = table_new(2, NULL)) || ctl_top_table(reply.json, t) < 0) {
                        snprintf(err, errlen, "out of memory");
                        r = CTL_EXIT_FAILED;
                } else
                        table_print(t, f);
        }
        client_reply_done(&reply);
        return r;
}

static int ctl_top(Ctl *ctl) {
        const CtlArgs *a = ctl->args;

        if (a->json) {
                output_error("top draws a screen: it does not go with --json (see visierctl status --json)");
                return CTL_EXIT_USAGE;
        }
        return screen_run(&(ScreenConfig) { .title = "visierctl top",
                                            .interval = a->interval ?: SCREEN_INTERVAL_DEFAULT,
                                            .count = a->count },
                          ctl_top_draw, ctl);
}

/* ---- one job ---- */

static int ctl_job_summary(const json_t *job, Table *t) {
        static const struct {
                const char *key, *label;
        } fields[] = {
                { "id", "id:" },
                { "state", "state:" },
                { "operation", "operation:" },
                { "items", "items:" },
                { "attempts", "attempts:" },
                { "client", "client:" },
                { "tenant", "tenant:" },
                { "project", "project:" },
                { "non_versioned", "non-versioned:" },
                { "tenant_code", "tenant code:" },
                { "idempotency_key", "idempotency key:" },
                { "created_at", "created:" },
                { "updated_at", "updated:" },
                { "started_at", "started:" },
                { "finished_at", "finished:" },
                { "next_run_at", "next run:" },
                { "upstream_status", "upstream status:" },
                { "error", "error:" },
        };
        char buf[64];

        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                const char *v = ctl_scalar(json_object_get(job, fields[i].key), buf, sizeof(buf));

                if (!v || !*v) /* absent, null or empty: not worth a line */
                        continue;
                if (table_add_row(t, (const char *const[]) { fields[i].label, v }) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* What an item did or is to do: the permission it made or touched, or why it failed. */
static void ctl_item_describe(const json_t *ir, char *buf, size_t len) {
        const json_t *res = json_object_get(ir, "result"), *item = json_object_get(ir, "item");
        const json_t *entry = json_object_get(res, "entry");
        const char *error, *pid, *name;

        error = ctl_str(json_object_get(res, "error"), "message") ?: ctl_str(res, "error") ?: ctl_str(res, "message")
                        ?: ctl_str(entry, "message") ?: ctl_str(json_object_get(entry, "error"), "message");
        pid = ctl_str(res, "permissionId") ?: ctl_str(json_object_get(entry, "permission"), "permissionId")
                        ?: ctl_str(item, "permissionId") ?: json_string_value(item);
        name = ctl_str(res, "displayName") ?: ctl_str(item, "displayName");
        if (error)
                snprintf(buf, len, "error: %s", error);
        else if (pid && name)
                snprintf(buf, len, "%s (%s)", pid, name);
        else if (pid || name)
                snprintf(buf, len, "%s", pid ?: name);
        else
                snprintf(buf, len, "-");
}

static int ctl_job_print(const json_t *job) {
        static const char *const headers[] = { "INDEX", "STATE", "CORRELATION ID", "PERMISSION / ERROR" };
        _cleanup_table_ Table *kv = table_new(2, NULL), *items = NULL;
        const json_t *results = json_object_get(job, "item_results"), *ir;
        size_t i;

        if (!kv || ctl_job_summary(job, kv) < 0)
                return -ENOMEM;
        table_print(kv, stdout);
        if (!json_is_array(results))
                return 0;
        if (!(items = table_new(ELEMENTSOF(headers), headers)))
                return -ENOMEM;
        json_array_foreach(results, i, ir) {
                char index[32], what[CTL_LINE_MAX];

                snprintf(index, sizeof(index), "%lld", ctl_int(ir, "index"));
                ctl_item_describe(ir, what, sizeof(what));
                if (table_add_row(items, (const char *const[]) { index, ctl_str(ir, "state"), ctl_str(ir, "correlationId"),
                                                                 what }) < 0)
                        return -ENOMEM;
        }
        putchar('\n');
        table_print(items, stdout);
        return 0;
}

/* Print a job answer (200 or 202): the JSON with --json, else the summary and items. */
static int ctl_job_output(Ctl *ctl, const ClientReply *reply) {
        if (!json_is_object(reply->json)) {
                output_error("visierd answered %ld with something that is not a job", reply->status);
                return CTL_EXIT_FAILED;
        }
        if (ctl->args->json)
                output_json(stdout, reply->json);
        else if (ctl_job_print(reply->json) < 0) {
                output_error("out of memory");
                return CTL_EXIT_FAILED;
        }
        return CTL_EXIT_OK;
}

static int ctl_job(Ctl *ctl) {
        ClientReply reply = {};
        unsigned long long id;
        char path[64];
        int r;

        if (ctl_parse_id(ctl->args->args[0], &id) < 0)
                return CTL_EXIT_USAGE;
        snprintf(path, sizeof(path), "/jobs/%llu", id);
        r = ctl_get(ctl, path, &reply);
        if (r == CTL_EXIT_OK)
                r = ctl_job_output(ctl, &reply);
        client_reply_done(&reply);
        return r;
}

static int ctl_job_action(Ctl *ctl, const char *action) {
        ClientReply reply = {};
        unsigned long long id;
        char path[80];
        int r;

        if (ctl_parse_id(ctl->args->args[0], &id) < 0)
                return CTL_EXIT_USAGE;
        snprintf(path, sizeof(path), "/jobs/%llu/%s", id, action);
        r = ctl_call(ctl, "POST", path, NULL, NULL, 0, 0, &reply);
        if (r == CTL_EXIT_OK)
                r = reply.status == 200 ? ctl_job_output(ctl, &reply) : ctl_refused(ctl, &reply);
        client_reply_done(&reply);
        return r;
}

static int ctl_cancel(Ctl *ctl) {
        return ctl_job_action(ctl, "cancel");
}

static int ctl_retry(Ctl *ctl) {
        return ctl_job_action(ctl, "retry");
}

/* ---- wait ---- */

typedef struct WaitJob {
        unsigned long long id;
        json_t *job; /* the latest answer */
} WaitJob;

static void ctl_wait_progress(const WaitJob *w, size_t n, usec_t elapsed) {
        size_t counts[ELEMENTSOF(job_states)] = {};
        bool first = true;

        for (size_t i = 0; i < n; i++) {
                const char *s = ctl_str(w[i].job, "state");
                for (size_t k = 0; s && k < ELEMENTSOF(job_states); k++)
                        counts[k] += streq(s, job_states[k]);
        }
        fprintf(stderr, "\r\033[Kwaiting for %zu job%s: ", n, n == 1 ? "" : "s");
        for (size_t k = 0; k < ELEMENTSOF(job_states); k++)
                if (counts[k]) {
                        fprintf(stderr, "%s%zu %s", first ? "" : ", ", counts[k], job_states[k]);
                        first = false;
                }
        fprintf(stderr, "%s(%.1f s)", first ? "" : " ", (double) elapsed / USEC_PER_SEC);
        fflush(stderr);
}

/* Poll every job not yet final once. Returns CTL_EXIT_OK, or the exit status of an error. */
static int ctl_wait_poll(Ctl *ctl, WaitJob *w, size_t n, unsigned long timeout_ms, size_t *ret_pending) {
        size_t pending = 0;

        for (size_t i = 0; i < n; i++) {
                ClientReply reply = {};
                char path[64];
                int r;

                if (w[i].job && ctl_job_is_final(ctl_str(w[i].job, "state")))
                        continue;
                snprintf(path, sizeof(path), "/jobs/%llu", w[i].id);
                r = ctl_call(ctl, "GET", path, NULL, NULL, 0, timeout_ms, &reply);
                if (r == CTL_EXIT_OK && reply.status != 200)
                        r = ctl_refused(ctl, &reply);
                else if (r == CTL_EXIT_OK && !json_is_object(reply.json)) {
                        output_error("GET %s: visierd answered with something that is not a job", path);
                        r = CTL_EXIT_FAILED;
                }
                if (r != CTL_EXIT_OK) {
                        client_reply_done(&reply);
                        return r;
                }
                json_decref(w[i].job);
                w[i].job = json_incref(reply.json);
                client_reply_done(&reply);
                pending += !ctl_job_is_final(ctl_str(w[i].job, "state"));
        }
        *ret_pending = pending;
        return CTL_EXIT_OK;
}

static int ctl_wait_report(Ctl *ctl, const WaitJob *w, size_t n) {
        static const char *const headers[] = { "ID", "STATE", "OPERATION", "ITEMS", "ERROR" };
        _cleanup_table_ Table *t = NULL;
        int r = CTL_EXIT_OK;

        if (ctl->args->json) {
                json_t *all = json_array(), *doc;
                for (size_t i = 0; i < n; i++)
                        json_array_append(all, w[i].job ? w[i].job : json_null());
                doc = json_pack("{s:o}", "jobs", all);
                output_json(stdout, doc);
                json_decref(doc);
        } else if ((t = table_new(ELEMENTSOF(headers), headers))) {
                for (size_t i = 0; i < n; i++) {
                        char id[32], items[32];
                        snprintf(id, sizeof(id), "%llu", w[i].id);
                        snprintf(items, sizeof(items), "%lld", ctl_int(w[i].job, "items"));
                        if (table_add_row(t, (const char *const[]) { id, ctl_str(w[i].job, "state"),
                                                                     ctl_str(w[i].job, "operation"), items,
                                                                     ctl_str(w[i].job, "error") }) < 0)
                                return CTL_EXIT_FAILED;
                }
                table_print(t, stdout);
        }
        for (size_t i = 0; i < n; i++) {
                const char *s = ctl_str(w[i].job, "state");
                if (s && (streq(s, "failed") || streq(s, "cancelled")))
                        r = CTL_EXIT_FAILED;
        }
        return r;
}

static int ctl_wait(Ctl *ctl) {
        const CtlArgs *a = ctl->args;
        const bool progress = isatty(STDERR_FILENO);
        const usec_t start = clock_now();
        const usec_t deadline = a->wait_timeout ? start + a->wait_timeout * USEC_PER_SEC : USEC_INFINITY;
        const unsigned long http_ms = client_timeout_sec(ctl->client) * 1000UL;
        usec_t delay = CTL_WAIT_BACKOFF_FIRST;
        _cleanup_free_ WaitJob *w = calloc(a->n_args, sizeof(WaitJob));
        size_t pending = 0;
        int r;

        if (!w) {
                output_error("out of memory");
                return CTL_EXIT_FAILED;
        }
        for (size_t i = 0; i < a->n_args; i++)
                if (ctl_parse_id(a->args[i], &w[i].id) < 0)
                        return CTL_EXIT_USAGE;
        for (;;) {
                usec_t now = clock_now();
                unsigned long ms = http_ms;

                /* A poll may not outlast the wait's deadline (by more than a second). */
                if (deadline != USEC_INFINITY && (deadline - CTL_MIN(now, deadline)) / USEC_PER_MSEC + 1000 < ms)
                        ms = (unsigned long) ((deadline - CTL_MIN(now, deadline)) / USEC_PER_MSEC + 1000);
                r = ctl_wait_poll(ctl, w, a->n_args, ms, &pending);
                if (r != CTL_EXIT_OK)
                        break;
                now = clock_now();
                if (progress)
                        ctl_wait_progress(w, a->n_args, now - start);
                if (pending == 0 || now >= deadline)
                        break;
                clock_sleep(CTL_MIN(delay, deadline - now));
                delay = CTL_MIN(delay * 2, CTL_WAIT_BACKOFF_MAX);
        }
        if (progress)
                fputs("\r\033[K", stderr);
        if (r != CTL_EXIT_OK)
                goto out;
        r = ctl_wait_report(ctl, w, a->n_args);
        if (pending > 0) {
                for (size_t i = 0; i < a->n_args; i++)
                        if (!ctl_job_is_final(ctl_str(w[i].job, "state")))
                                output_error("timed out after %u s: job %llu is still %s", a->wait_timeout, w[i].id,
                                             strempty(ctl_str(w[i].job, "state")));
                r = CTL_EXIT_TIMEOUT;
        }
out:
        for (size_t i = 0; i < a->n_args; i++)
                json_decref(w[i].job);
        return r;
}

/* ---- submit ---- */

typedef struct SubmitOp {
        const char *name, *method, *path;
} SubmitOp;

static const SubmitOp submit_ops[] = {
        { "create", "POST", "/v1/admin/permissions" },
        { "update", "PUT", "/v1/admin/permissions" },
        { "delete", "DELETE", "/v1/admin/permissions" },
        { "assign", "PUT", "/v1/admin/permissions/users" },
        { "remove", "DELETE", "/v1/admin/permissions/users" },
        { "revert", "POST", "/v1/admin/permissions/revert-to-parent" },
};

/* The whole change file ("-": standard input), at most CTL_BODY_MAX bytes. */
static int ctl_read_body(const char *path, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, size = 0;
        ssize_t n;

        fd = streq(path, "-") ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        for (;;) {
                if (len == size) {
                        char *more;
                        if (size >= CTL_BODY_MAX)
                                return -EFBIG;
                        size = size ? CTL_MIN(size * 2, (size_t) CTL_BODY_MAX) : 65536;
                        if (!(more = realloc(buf, size + 1)))
                                return -ENOMEM;
                        buf = more;
                }
                n = read(fd, buf + len, size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        buf[len] = '\0';
        *ret_len = len;
        *ret = TAKE_PTR(buf);
        return 0;
}

/* Visier's bulk answer ({"successes":[…],"failures":[…]}) as a table. */
static int ctl_submit_answer_table(const json_t *answer) {
        static const char *const headers[] = { "RESULT", "PERMISSION ID", "CORRELATION ID", "NAME / ERROR" };
        static const char *const lists[] = { "successes", "failures" };
        _cleanup_table_ Table *t = table_new(ELEMENTSOF(headers), headers);
        const json_t *e;
        size_t i;

        if (!t)
                return -ENOMEM;
        for (size_t l = 0; l < ELEMENTSOF(lists); l++)
                json_array_foreach(json_object_get(answer, lists[l]), i, e) {
                        const char *what = ctl_str(json_object_get(e, "error"), "message") ?: ctl_str(e, "displayName");
                        if (table_add_row(t, (const char *const[]) { l == 0 ? "succeeded" : "failed",
                                                                     ctl_str(e, "permissionId"),
                                                                     ctl_str(e, "correlationId"), what }) < 0)
                                return -ENOMEM;
                }
        table_print(t, stdout);
        return 0;
}

static int ctl_submit(Ctl *ctl) {
        const CtlArgs *a = ctl->args;
        const char *opname = a->operation ? a->operation : "create", *headers[3] = {};
        _cleanup_free_ char *body = NULL, *idem = NULL, *prefer = NULL;
        const SubmitOp *op = NULL;
        ClientReply reply = {};
        unsigned long timeout_ms = 0;
        size_t len = 0, nh = 0;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(submit_ops); i++)
                if (streq(opname, submit_ops[i].name))
                        op = &submit_ops[i];
        if (!op) {
                output_error("--operation must be create, update, delete, assign, remove or revert");
                return CTL_EXIT_USAGE;
        }
        if (a->idempotency_key) {
                for (const char *p = a->idempotency_key; *p; p++)
                        if ((unsigned char) *p < 0x20 || *p == 0x7f) {
                                output_error("--idempotency-key may not hold control characters");
                                return CTL_EXIT_USAGE;
                        }
                if (asprintf(&idem, "Idempotency-Key: %s", a->idempotency_key) < 0) {
                        idem = NULL;
                        output_error("out of memory");
                        return CTL_EXIT_FAILED;
                }
                headers[nh++] = idem;
        }
        /* Without --wait, the job at once (visierd would otherwise hold the answer until the
         * job ends, as Visier answers). */
        if (a->submit_wait < 0)
                headers[nh++] = "Prefer: respond-async";
        else {
                if (asprintf(&prefer, "Prefer: wait=%ld", a->submit_wait) < 0) {
                        prefer = NULL;
                        output_error("out of memory");
                        return CTL_EXIT_FAILED;
                }
                headers[nh++] = prefer;
                /* visierd holds the answer up to that long: the HTTP timeout comes on top. */
                timeout_ms = (client_timeout_sec(ctl->client) + (unsigned long) a->submit_wait) * 1000UL;
        }
        r = ctl_read_body(a->args[0], &body, &len);
        if (r < 0) {
                if (r == -EFBIG)
                        output_error("%s is larger than %u bytes", a->args[0], CTL_BODY_MAX);
                else
                        output_error("cannot read %s: %s", streq(a->args[0], "-") ? "standard input" : a->args[0],
                                     strerror(-r));
                return CTL_EXIT_USAGE;
        }

        r = ctl_call(ctl, op->method, op->path, headers, body, len, timeout_ms, &reply);
        if (r != CTL_EXIT_OK)
                goto out;
        if (reply.status == 202) {
                r = ctl_job_output(ctl, &reply);
                if (r == CTL_EXIT_OK && a->submit_wait >= 0) {
                        output_error("job %lld is not finished after %ld s; follow it with: visierctl wait %lld",
                                     ctl_int(reply.json, "id"), a->submit_wait, ctl_int(reply.json, "id"));
                        r = CTL_EXIT_TIMEOUT;
                }
        } else if (reply.status >= 200 && reply.status < 300) {
                /* Prefer: wait was honoured: this is Visier's own answer for the job's items. */
                const json_t *f = json_object_get(reply.json, "failures");
                if (a->json || !json_is_array(f))
                        output_json(stdout, reply.json);
                else if (ctl_submit_answer_table(reply.json) < 0) {
                        r = CTL_EXIT_FAILED;
                        goto out;
                }
                if (json_array_size(f) > 0 && json_array_size(json_object_get(reply.json, "successes")) == 0) {
                        output_error("every change failed");
                        r = CTL_EXIT_FAILED;
                } else if (streq(strempty(ctl_str(json_array_get(json_object_get(reply.json, "tenants"), 0), "status")),
                                 "Failed")) {
                        output_error("the change failed");
                        r = CTL_EXIT_FAILED;
                }
        } else
                r = ctl_refused(ctl, &reply);
out:
        client_reply_done(&reply);
        return r;
}

/* ---- exports ---- */

/* A definition's parameters as "from=2025-01-01, to" (the default after '=', when it has one). */
static void ctl_exports_params(const json_t *params, char *buf, size_t len) {
        const char *name;
        json_t *p;
        size_t n = 0;

        snprintf(buf, len, "-");
        json_object_foreach((json_t *) params, name, p) {
                const char *def = ctl_str(p, "default");
                int k = snprintf(buf + n, len - n, "%s%s%s%s", n ? ", " : "", name, def ? "=" : "", strempty(def));

                if (k < 0 || (size_t) k >= len - n) /* cut: the table shortens long cells anyway */
                        break;
                n += (size_t) k;
        }
}

static int ctl_exports(Ctl *ctl) {
        static const char *const headers[] = { "NAME", "QUERY", "FORMAT", "PARAMETERS", "DESCRIPTION" };
        _cleanup_table_ Table *t = NULL;
        ClientReply reply = {};
        const json_t *x;
        size_t i;
        int r;

        r = ctl_get(ctl, "/exports", &reply);
        if (r != CTL_EXIT_OK)
                goto out;
        if (ctl->args->json) {
                output_json(stdout, reply.json);
                goto out;
        }
        if (!(t = table_new(ELEMENTSOF(headers), headers))) {
                output_error("out of memory");
                r = CTL_EXIT_FAILED;
                goto out;
        }
        json_array_foreach(json_object_get(reply.json, "exports"), i, x) {
                char params[CTL_LINE_MAX];

                ctl_exports_params(json_object_get(x, "parameters"), params, sizeof(params));
                if (table_add_row(t, (const char *const[]) { ctl_str(x, "name"), ctl_str(x, "query"),
                                                             ctl_str(x, "format"), params,
                                                             ctl_str(x, "description") }) < 0) {
                        output_error("out of memory");
                        r = CTL_EXIT_FAILED;
                        goto out;
                }
        }
        table_print(t, stdout);
out:
        client_reply_done(&reply);
        return r;
}

/* ---- export ---- */

typedef struct ExportSink {
        int fd;
        int error; /* the write's, once one failed */
        bool progress;
        usec_t start, drawn; /* when the transfer began, and the progress line was last drawn */
        uint64_t bytes;
} ExportSink;

/* 1234567 as "1.2 MiB". */
static void ctl_bytes(double n, char *buf, size_t len) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        size_t u = 0;

        while (n >= 1024 && u + 1 < ELEMENTSOF(units)) {
                n /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%.0f B", n);
        else
                snprintf(buf, len, "%.1f %s", n, units[u]);
}

static void ctl_export_progress(ExportSink *s, usec_t now) {
        double secs = (double) (now - s->start) / USEC_PER_SEC;
        char got[32], rate[32];

        ctl_bytes((double) s->bytes, got, sizeof(got));
        ctl_bytes(secs > 0 ? (double) s->bytes / secs : 0, rate, sizeof(rate));
        fprintf(stderr, "\r\033[Kreceived %s (%s/s, %.1f s)", got, rate, secs);
        fflush(stderr);
        s->drawn = now;
}

static int ctl_export_write(const void *data, size_t len, void *userdata) {
        ExportSink *s = userdata;
        const char *p = data;

        while (len > 0) {
                ssize_t n = write(s->fd, p, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return (s->error = negative_errno());
                p += n;
                len -= (size_t) n;
                s->bytes += (uint64_t) n;
        }
        if (s->progress) {
                usec_t now = clock_now();
                if (now - s->drawn >= CTL_PROGRESS_EVERY)
                        ctl_export_progress(s, now);
        }
        return 0;
}

/* "/exports/NAME[.FORMAT][?P=V&...]" with the name and every parameter URL-escaped. */
static int ctl_export_path(Ctl *ctl, char **ret) {
        const CtlArgs *a = ctl->args;
        _cleanup_free_ char *name = client_escape(ctl->client, a->args[0]);
        char *path = NULL;
        size_t len = 0;
        FILE *f;

        if (!name)
                return -ENOMEM;
        f = open_memstream(&path, &len);
        if (!f)
                return -ENOMEM;
        fprintf(f, "/exports/%s%s%s", name, a->format ? "." : "", strempty(a->format));
        for (size_t i = 0; i < a->n_params; i++) {
                const char *eq = strchr(a->params[i], '=');
                _cleanup_free_ char *key = strndup(a->params[i], (size_t) (eq - a->params[i]));
                _cleanup_free_ char *k = key ? client_escape(ctl->client, key) : NULL;
                _cleanup_free_ char *v = client_escape(ctl->client, eq + 1);

                if (!k || !v) {
                        fclose(f);
                        free(path);
                        return -ENOMEM;
                }
                fprintf(f, "%c%s=%s", i == 0 ? '?' : '&', k, v);
        }
        if (fclose(f) != 0) {
                free(path);
                return -ENOMEM;
        }
        *ret = path;
        return 0;
}

/* Write the finished export to disk and give it its name; removes the partial file on failure. */
static int ctl_export_finish(int fd, const char *partial, const char *output) {
        int r = 0;

        if (fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
                r = negative_errno();
        if (close(fd) < 0 && r == 0 && errno != EINTR)
                r = negative_errno();
        if (r == 0 && rename(partial, output) < 0)
                r = negative_errno();
        if (r < 0)
                (void) unlink(partial);
        return r;
}

static int ctl_export(Ctl *ctl) {
        const CtlArgs *a = ctl->args;
        const bool to_stdout = !a->output || streq(a->output, "-");
        _cleanup_free_ char *path = NULL, *partial = NULL;
        char err[CLIENT_ERROR_MAX] = "";
        ExportSink sink = { .fd = -1 };
        ClientReply reply = {};
        struct stat st;
        uint64_t bytes = 0;
        int r, k;

        if (ctl_export_path(ctl, &path) < 0) {
                output_error("out of memory");
                return CTL_EXIT_FAILED;
        }
        if (to_stdout) {
                fflush(stdout);
                sink.fd = STDOUT_FILENO;
        } else if (stat(a->output, &st) == 0 && !S_ISREG(st.st_mode)) {
                /* A device or a pipe (/dev/null, a FIFO): written to as it is, never replaced. */
                sink.fd = open(a->output, O_WRONLY | O_CLOEXEC | O_NOCTTY);
                if (sink.fd < 0) {
                        output_error("cannot open %s: %s", a->output, strerror(errno));
                        return CTL_EXIT_USAGE;
                }
        } else {
                /* HR data: a new file is 0600 whatever the umask; one replaced keeps its mode. */
                mode_t mode = stat(a->output, &st) == 0 ? st.st_mode & 07777 : 0600;

                if (asprintf(&partial, "%s.partial", a->output) < 0) {
                        partial = NULL;
                        output_error("out of memory");
                        return CTL_EXIT_FAILED;
                }
                (void) unlink(partial); /* a stale one could be anyone's, with any mode */
                sink.fd = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0600);
                if (sink.fd < 0) {
                        output_error("cannot create %s: %s", partial, strerror(errno));
                        return CTL_EXIT_USAGE;
                }
                if (fchmod(sink.fd, mode) < 0) {
                        output_error("cannot set the mode of %s: %s", partial, strerror(errno));
                        (void) unlink(partial);
                        close(TAKE_FD(sink.fd));
                        return CTL_EXIT_FAILED;
                }
        }
        /* Progress on a terminal, unless the export itself is going to that terminal. */
        sink.progress = isatty(STDERR_FILENO) && !(to_stdout && isatty(STDOUT_FILENO));
        sink.start = sink.drawn = clock_now();

        k = client_stream(ctl->client, path, ctl_export_write, &sink, &reply, &bytes, err, sizeof(err));
        if (sink.progress && sink.bytes > 0) { /* the final count, and the line ended */
                ctl_export_progress(&sink, clock_now());
                fputc('\n', stderr);
        }
        if (k == 0 && reply.status >= 200 && reply.status < 300) {
                r = CTL_EXIT_OK;
                if (partial) {
                        k = ctl_export_finish(TAKE_FD(sink.fd), partial, a->output);
                        if (k < 0) {
                                output_error("cannot write %s: %s", a->output, strerror(-k));
                                r = CTL_EXIT_FAILED;
                        }
                }
                goto out;
        }
        if (k == 0)
                r = ctl_refused(ctl, &reply);
        else if (sink.error < 0 && k == sink.error) {
                output_error("cannot write %s: %s", to_stdout ? "standard output" : partial ?: a->output,
                             strerror(-k));
                r = CTL_EXIT_FAILED;
        } else if (k == -EPIPE) {
                output_error("the export broke off after %llu bytes", (unsigned long long) bytes);
                r = CTL_EXIT_FAILED;
        } else if (k == -ETIMEDOUT && bytes > 0) {
                output_error("the export stalled after %llu bytes: %s", (unsigned long long) bytes, err);
                r = CTL_EXIT_TIMEOUT;
        } else if (k == -ETIMEDOUT) {
                output_error("visierd did not answer within the timeout: %s", err);
                r = CTL_EXIT_TIMEOUT;
        } else if (k == -ENOMEM) {
                output_error("out of memory");
                r = CTL_EXIT_FAILED;
        } else if (k == -EFBIG) {
                output_error("%s", err);
                r = CTL_EXIT_FAILED;
        } else {
                output_error("cannot reach visierd: %s", err);
                r = ctl_exit_from_errno(k);
        }
out:
        if (partial && sink.fd >= 0) /* not finished: no partial file stays behind */
                (void) unlink(partial);
        if (!to_stdout && sink.fd >= 0)
                close(sink.fd);
        client_reply_done(&reply);
        return r;
}

/* ---- the table ---- */

const Command commands[] = {
        { "status", ctl_status, 0, 0, 0, "status" },
        { "health", ctl_health, 0, 0, 0, "health" },
        { "check", ctl_check, 0, 0, 0, "check" },
        { "jobs", ctl_jobs, 0, 0,
          CTL_OPT_STATE | CTL_OPT_LIMIT | CTL_OPT_BEFORE | CTL_OPT_OPERATION | CTL_OPT_CLIENT | CTL_OPT_SINCE |
                  CTL_OPT_WATCH | CTL_OPT_SCREEN,
          "jobs [--state STATE] [--operation OP] [--client NAME] [--since TIME] [--limit N] [--before ID]\n"
          "       [--watch [--interval SECONDS] [--count N]]" },
        { "top", ctl_top, 0, 0, CTL_OPT_SCREEN, "top [--interval SECONDS] [--count N]" },
        { "job", ctl_job, 1, 1, 0, "job ID" },
        { "cancel", ctl_cancel, 1, 1, 0, "cancel ID" },
        { "retry", ctl_retry, 1, 1, 0, "retry ID" },
        { "wait", ctl_wait, 1, SIZE_MAX, CTL_OPT_WAIT_TIMEOUT, "wait ID... [--timeout SECONDS]" },
        { "submit", ctl_submit, 1, 1, CTL_OPT_OPERATION | CTL_OPT_IDEMPOTENCY_KEY | CTL_OPT_SUBMIT_WAIT,
          "submit FILE [--operation OP] [--idempotency-key KEY] [--wait SECONDS]" },
        { "exports", ctl_exports, 0, 0, 0, "exports" },
        { "export", ctl_export, 1, 1, CTL_OPT_FORMAT | CTL_OPT_OUTPUT | CTL_OPT_PARAM,
          "export NAME [--format csv|jsonl|json] [-o FILE] [--param NAME=VALUE]..." },
        {},
};

const Command *commands_find(const char *name) {
        for (const Command *c = commands; c->name; c++)
                if (streq(c->name, name))
                        return c;
        return NULL;
}
