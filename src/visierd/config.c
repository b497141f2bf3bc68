/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Configuration parsing and validation (see config.h). The INI syntax is libinih's; a line
 * counting reader gives each error its line. Must never log and never put a secret in an
 * error message (it only reads secret files through secret_read_file()).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <ini.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>

#include "config.h"
#include "fleetdb.h"
#include "parse.h"
#include "policy.h"

#define KEY_STRING(s, n, field, def, h) \
        { s, n, CONFIG_STRING, offsetof(Config, field), def, 0, 0, h }
#define KEY_UINT(s, n, field, def, lo, hi, h) \
        { s, n, CONFIG_UINT, offsetof(Config, field), def, lo, hi, h }

const ConfigKey config_keys[] = {
        KEY_STRING("visier", "base_url", base_url, NULL,
                   "Visier API origin, e.g. https://example.api.visier.io; http:// only for loopback"),
        KEY_STRING("visier", "username", username, NULL, "the API user's username"),
        KEY_STRING("visier", "apikey_file", apikey_file, NULL,
                   "file holding the API key; default $CREDENTIALS_DIRECTORY/" CREDENTIAL_APIKEY),
        KEY_STRING("visier", "password_file", password_file, NULL,
                   "file holding the API user's password; default $CREDENTIALS_DIRECTORY/" CREDENTIAL_PASSWORD),
        KEY_STRING("visier", "ca_file", ca_file, NULL, "CA bundle to verify Visier's certificate; default the system's"),
        KEY_STRING("visier", "proxy", proxy, NULL,
                   "HTTP proxy for the calls to Visier, e.g. http://proxy.internal:3128 (https:// base_url only); "
                   "default none: proxy environment variables are ignored"),
        KEY_UINT("visier", "token_lifetime", token_lifetime, "3600", 2, 86400,
                 "seconds a security token is trusted after login"),
        KEY_UINT("visier", "refresh_margin", refresh_margin, "300", 1, 3600,
                 "seconds before expiry at which the token is refreshed"),
        KEY_UINT("visier", "connect_timeout", connect_timeout, "10", 1, 300, "seconds to connect to Visier"),
        KEY_UINT("visier", "request_timeout", request_timeout, "30", 1, 3600,
                 "seconds for a whole call to Visier, retries and waits included"),
        KEY_UINT("visier", "rate_limit_minute", rate_limit_minute, "100", 1, 1000000,
                 "calls a minute the tenant allows"),
        KEY_UINT("visier", "rate_limit_hour", rate_limit_hour, "6000", 1, 100000000,
                 "calls an hour the tenant allows"),
        KEY_UINT("visier", "max_retries", max_retries, "3", 0, 10,
                 "retries of an idempotent call after a network error or 5xx"),
        KEY_UINT("visier", "max_response_size", max_response_size, "33554432", 1024, 1073741824,
                 "largest answer from Visier a proxied read may buffer, in bytes"),
        KEY_STRING("listen", "address", listen_address, "127.0.0.1", "IP address of the local API"),
        KEY_UINT("listen", "port", listen_port, "8420", 0, 65535, "TCP port of the local API; 0 picks a free one"),
        KEY_STRING("listen", "socket", listen_socket, NULL,
                   "path of a unix socket to serve the local API on too (mode 0660); default none"),
        KEY_STRING("listen", "tcp", listen_tcp, "yes",
                   "serve the local API on TCP (address, port) too: yes, or no for the unix socket only"),
        KEY_UINT("listen", "max_connections", max_connections, "16384", 1, 65536,
                 "local connections open at once; past it only /healthz, /readyz and /metrics are served"),
        KEY_UINT("listen", "max_connections_per_client", max_connections_per_client, "1024", 1, 65536,
                 "requests in progress at once per client token or unix-socket user"),
        KEY_UINT("listen", "max_held_requests", max_held_requests, "4096", 1, 1048576,
                 "requests in progress at once (waiting on Visier, a job or the store); more get 503"),
        KEY_UINT("listen", "drain_timeout", drain_timeout, "30", 1, 3600,
                 "seconds a stop waits for the requests in progress"),
        KEY_UINT("listen", "idle_timeout", idle_timeout, "60", 1, 3600,
                 "seconds an idle local connection is kept open"),
        KEY_UINT("listen", "read_timeout", read_timeout, "30", 1, 3600,
                 "seconds a client may take to send one whole request (headers and body)"),
        KEY_STRING("listen", "allowed_hosts", allowed_hosts, NULL,
                   "Host names accepted besides localhost, 127.0.0.1 and ::1 (comma-separated)"),
        KEY_STRING("listen", "allowed_origins", allowed_origins, NULL,
                   "browser Origins allowed to call the API (comma-separated); default none"),
        KEY_STRING("listen", "require_request_header", require_request_header, "no",
                   "yes: every request but /healthz, /readyz and the /ui page's files must carry X-Visierd-Request: true "
                   "(else 412), which "
                   "a browser page cannot send to another origin and a service tricked into fetching a URL does not "
                   "send"),
        KEY_STRING("listen", "socket_allow_uids", socket_allow_uids, NULL,
                   "uids allowed on the unix socket (comma-separated); default any"),
        KEY_STRING("listen", "socket_allow_gids", socket_allow_gids, NULL,
                   "gids allowed on the unix socket (comma-separated); default any"),
        KEY_UINT("listen", "max_body_size", max_body_size, "1048576", 1024, 67108864,
                 "largest request body accepted, in bytes"),
        KEY_UINT("listen", "session_lifetime", session_lifetime, "3600", 60, 86400,
                 "seconds a local sign-in (visierSecureToken, oauth2/token) lasts before the client signs in again"),
        KEY_UINT("listen", "max_sessions", max_sessions, "4096", 16, 1048576,
                 "local sign-in sessions kept at once; when full, a sign-in ends the one that would end first"),
        KEY_UINT("listen", "max_header_size", max_header_size, "6144", 1024, 1048576,
                 "largest request line and headers accepted, in bytes"),
        KEY_STRING("metrics", "listen", metrics_listen, NULL,
                   "ADDRESS:PORT of a listener that serves GET /metrics only, without a client token, for scrapers "
                   "(e.g. 127.0.0.1:9420, [::1]:9420; port 0 picks a free one); default none"),
        KEY_STRING("metrics", "allowed_hosts", metrics_allowed_hosts, NULL,
                   "Host names the metrics listener accepts besides localhost, 127.0.0.1, ::1 and the address it "
                   "listens on (comma-separated), e.g. the name a scraper uses; [listen] allowed_hosts is not "
                   "consulted"),
        KEY_STRING("metrics", "socket", metrics_socket, NULL,
                   "path of a unix socket that serves GET /metrics only, without a client token (mode 0660); "
                   "default none"),
        KEY_STRING("log", "format", log_format, "text",
                   "format of the log lines on standard error (never the journal's): text, or json for one object "
                   "a line"),
        KEY_STRING("log", "access", log_access, "yes",
                   "log a line for every local request (method, route, status, duration, client, request ID): yes or "
                   "no"),
        KEY_STRING("policy", "allow", policy_allow, NULL,
                   "operations denied by default that clients may use anyway: \"METHOD PATH\" as Visier's definitions "
                   "write them, comma-separated"),
        KEY_STRING("store", "database", database, STATEDIR "/visierd.db",
                   "path of the SQLite job database"),
        KEY_STRING("store", "url", store_url, NULL,
                   "fleet mode: the PostgreSQL database shared by the fleet's nodes, as a libpq connection string "
                   "(host=db.internal dbname=visierd user=visierd) or a postgresql:// URI, without a password; "
                   "not with database"),
        KEY_STRING("store", "password_file", store_password_file, NULL,
                   "fleet mode: file holding the PostgreSQL password; default $CREDENTIALS_DIRECTORY/"
                   CREDENTIAL_STORE_PASSWORD " if that file exists, else none (peer or trust authentication)"),
        KEY_STRING("fleet", "node", fleet_node, NULL,
                   "this node's name in the fleet, unique per running process (printable, no spaces); default "
                   "HOSTNAME:PID"),
        KEY_STRING("fleet", "tenant", fleet_tenant, NULL,
                   "the name of the publish lane and rate budget this node shares; default the host of [visier] "
                   "base_url"),
        KEY_UINT("fleet", "lease_seconds", fleet_lease_seconds, "15", 3, 3600,
                 "seconds the publish lane is leased to its holder at each renewal"),
        KEY_UINT("fleet", "renew_seconds", fleet_renew_seconds, NULL, 1, 1799,
                 "seconds between renewals of the lease (and attempts to take the lane); shorter than half of "
                 "lease_seconds; default lease_seconds / 3"),
        KEY_STRING("exports", "directory", exports_dir, CONFDIR "/exports.d",
                   "directory of named export definitions (NAME.json)"),
        KEY_STRING("exports", "results", exports_results, NULL,
                   "directory where export runs leave their results; default exports beside [store] database"),
        KEY_UINT("jobs", "batch_max", batch_max, "1000", 1, 1000,
                 "most permission changes sent in one bulk call (Visier takes at most 1000)"),
        KEY_UINT("jobs", "max_attempts", max_attempts, "0", 0, 1000,
                 "attempts at a write that fails transiently before its job fails; 0: no limit (give_up_after decides)"),
        KEY_UINT("jobs", "give_up_after", give_up_after, "86400", 1, 315360000,
                 "seconds after its submission a job that keeps failing transiently (5xx, network, timeouts) fails"),
        KEY_UINT("jobs", "publish_settle", publish_settle, "60", 0, 3600,
                 "seconds Visier is assumed to go on publishing a write whose answer was lost; no write is sent meanwhile"),
        KEY_UINT("jobs", "batch_delay_ms", batch_delay_ms, "200", 0, 10000,
                 "milliseconds queued jobs are given to gather into one call after the queue wakes"),
        KEY_UINT("jobs", "answer_wait", answer_wait, "60", 0, 3600,
                 "seconds a write without Prefer: respond-async or wait= waits for its job to end, to answer as Visier "
                 "does; then (or with 0 at once) the 202 with the job"),
        KEY_UINT("jobs", "max_wait", max_wait, "60", 0, 3600,
                 "longest Prefer: wait=N honoured, in seconds"),
        KEY_UINT("jobs", "keep_succeeded", keep_succeeded, "604800", 60, 315360000,
                 "seconds a succeeded job is kept before it is pruned (7 days)"),
        KEY_UINT("jobs", "keep_failed", keep_failed, "2592000", 60, 315360000,
                 "seconds a failed or cancelled job is kept before it is pruned (30 days)"),
        KEY_UINT("jobs", "max_pending", max_pending, "100000", 1, 100000000,
                 "jobs queued or running at most; more are refused with 503"),
        KEY_STRING("jobs", "publish", publish, "direct",
                   "how queued changes are published: direct (every bulk call publishes a production version) or "
                   "project (a round of bulk calls goes into one draft project, published once)"),
        KEY_STRING("jobs", "project_tenants", project_tenants, NULL,
                   "in project mode, the TargetTenantID values whose changes go through draft projects "
                   "(comma-separated; - for changes sent without TargetTenantID); default every tenant"),
        KEY_UINT("jobs", "round_max_calls", round_max_calls, "20", 1, 1000,
                 "in project mode, most bulk calls sent into one draft project before it is published"),
        KEY_UINT("cache", "max_bytes", cache_max_bytes, "67108864", 0, 2147483648UL,
                 "memory for cached metadata answers, in bytes; 0 turns the cache off"),
        KEY_UINT("cache", "model_ttl", cache_model_ttl, "300", 0, 86400,
                 "seconds capabilities, content packages, data security objects, analytic objects and "
                 "dimensions are cached; 0: not cached"),
        KEY_UINT("cache", "members_ttl", cache_members_ttl, "300", 0, 86400,
                 "seconds dimension members are cached; 0: not cached"),
        KEY_UINT("cache", "permissions_ttl", cache_permissions_ttl, "60", 0, 86400,
                 "seconds the permission list and single permissions are cached; 0: not cached"),
        KEY_UINT("cache", "assignments_ttl", cache_assignments_ttl, "0", 0, 86400,
                 "seconds the users assigned a permission are cached; 0: not cached"),
        {},
};

void config_errors_clear(ConfigErrors *e) {
        for (size_t i = 0; i < e->n; i++)
                free(e->messages[i]);
        e->n = 0;
        e->truncated = false;
}

_printf_(2, 3) static void config_error(ConfigErrors *e, const char *fmt, ...) {
        va_list ap;
        char *m;

        if (e->n >= CONFIG_ERRORS_MAX) {
                e->truncated = true;
                return;
        }
        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        if (m)
                e->messages[e->n++] = m;
}

/* The table fits Config.key_line, and fleet names fit the fleet's tables. */
_Static_assert(ELEMENTSOF(config_keys) <= CONFIG_KEYS_MAX, "config_keys[] outgrew CONFIG_KEYS_MAX");
_Static_assert(CONFIG_FLEET_NAME_MAX == FLEETDB_NAME_MAX, "CONFIG_FLEET_NAME_MAX is FLEETDB_NAME_MAX");

const ConfigKey *config_key_find(const char *section, const char *name) {
        for (const ConfigKey *k = config_keys; k->name; k++)
                if (streq(k->section, section) && streq(k->name, name))
                        return k;
        return NULL;
}

unsigned config_key_line(const Config *c, const char *section, const char *name) {
        const ConfigKey *k = config_key_find(section, name);

        return k ? c->key_line[k - config_keys] : 0;
}

static const char *const role_names[_CLIENT_ROLE_MAX] = {
        [CLIENT_ROLE_NONE] = "none",
        [CLIENT_ROLE_READ] = "read",
        [CLIENT_ROLE_WRITE] = "write",
        [CLIENT_ROLE_ADMIN] = "admin",
};

const char *client_role_to_string(ClientRole r) {
        return r >= 0 && r < _CLIENT_ROLE_MAX ? role_names[r] : NULL;
}

ClientRole client_role_from_string(const char *s) {
        for (int i = CLIENT_ROLE_READ; s && i < _CLIENT_ROLE_MAX; i++)
                if (streq(role_names[i], s))
                        return (ClientRole) i;
        return _CLIENT_ROLE_INVALID;
}

static bool config_section_known(const char *section) {
        for (const ConfigKey *k = config_keys; k->name; k++)
                if (streq(k->section, section))
                        return true;
        return false;
}

static int parse_uint(const char *s, unsigned long *ret) {
        unsigned long v;
        char *end;

        if (!s || !*s || *s == '-' || *s == '+')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

/* Set one key's value; msg gets the reason on failure. */
static int config_set(Config *c, const ConfigKey *k, const char *value, char *msg, size_t msglen) {
        void *field = (char *) c + k->offset;
        unsigned long v;
        char *copy;

        switch (k->type) {
        case CONFIG_STRING:
                /* Values are shown again (in /status, logs, job listings) and sent to Visier:
                 * UTF-8 only, never bytes that would make that JSON invalid. */
                if (!utf8_valid(value)) {
                        snprintf(msg, msglen, "%s: the value is not valid UTF-8", k->name);
                        return -EINVAL;
                }
                copy = strdup(value);
                if (!copy)
                        return -ENOMEM;
                free(*(char **) field);
                *(char **) field = copy;
                return 0;
        case CONFIG_UINT:
                if (parse_uint(value, &v) < 0) {
                        snprintf(msg, msglen, "%s: '%s' is not a whole number", k->name, value);
                        return -EINVAL;
                }
                if (v < k->min || v > k->max) {
                        snprintf(msg, msglen, "%s: %lu is out of range (%lu to %lu)", k->name, v, k->min, k->max);
                        return -ERANGE;
                }
                *(unsigned *) field = (unsigned) v;
                return 0;
        default:
                return -EINVAL;
        }
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        for (const ConfigKey *k = config_keys; k->name; k++)
                if (k->type == CONFIG_STRING)
                        free(*(char **) ((char *) c + k->offset));
        for (size_t i = 0; i < c->n_clients; i++) {
                free(c->clients[i].name);
                free(c->clients[i].token_file);
                secret_free(c->clients[i].token);
        }
        free(c->path);
        secret_free(c->apikey);
        secret_free(c->password);
        secret_free(c->store_password);
        free(c);
        return NULL;
}

int config_new_defaults(Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;
        char msg[256];
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->metrics_port = -1;
        for (const ConfigKey *k = config_keys; k->name; k++) {
                if (!k->default_value)
                        continue;
                r = config_set(c, k, k->default_value, msg, sizeof(msg));
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

typedef struct ParseState {
        Config *config;
        ConfigErrors *errors;
        const char *name;
        const char *text; /* for string input */
        FILE *file;       /* for file input */
        unsigned line;
        int oom;
} ParseState;

static char *config_reader(char *buf, int size, void *userdata) {
        ParseState *p = userdata;
        size_t n;
        const char *nl;

        if (p->file) {
                if (!fgets(buf, size, p->file))
                        return NULL;
                p->line++;
                return buf;
        }
        if (!p->text || !*p->text)
                return NULL;
        nl = strchr(p->text, '\n');
        n = nl ? (size_t) (nl - p->text) + 1 : strlen(p->text);
        if (n > (size_t) size - 1)
                n = (size_t) size - 1;
        memcpy(buf, p->text, n);
        buf[n] = '\0';
        p->text += n;
        p->line++;
        return buf;
}

static bool client_name_ok(const char *n) {
        size_t len = strlen(n);

        if (len == 0 || len > CONFIG_CLIENT_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9') ||
                      strchr("-_.", n[i])))
                        return false;
        return true;
}

/* A key of a [client NAME] section: token_file or role. */
static int config_client_key(ParseState *p, const char *client, const char *name, const char *value) {
        Config *c = p->config;
        ConfigClient *cl = NULL;

        if (!client_name_ok(client)) {
                config_error(p->errors, "%s:%u: [client %s]: a client name is 1 to %d characters of A-Z a-z 0-9 - _ .",
                             p->name, p->line, client, CONFIG_CLIENT_NAME_MAX);
                return 1;
        }
        for (size_t i = 0; i < c->n_clients; i++)
                if (streq(c->clients[i].name, client))
                        cl = &c->clients[i];
        if (!cl) {
                if (c->n_clients >= CONFIG_CLIENTS_MAX) {
                        config_error(p->errors, "%s:%u: more than %d [client] sections", p->name, p->line,
                                     CONFIG_CLIENTS_MAX);
                        return 1;
                }
                cl = &c->clients[c->n_clients++];
                cl->name = strdup(client);
                cl->line = p->line;
                if (!cl->name) {
                        p->oom = 1;
                        return 1;
                }
        }
        if (streq(name, "token_file")) {
                free(cl->token_file);
                cl->token_file = strdup(value);
                if (!cl->token_file)
                        p->oom = 1;
        } else if (streq(name, "role")) {
                cl->role = client_role_from_string(value);
                if (cl->role < 0)
                        config_error(p->errors, "%s:%u: [client %s] role: '%s' is not read, write or admin", p->name,
                                     p->line, client, value);
        } else
                config_error(p->errors, "%s:%u: unknown key '%s' in section [client %s] (token_file, role)", p->name,
                             p->line, name, client);
        return 1;
}

static int config_handler(void *userdata, const char *section, const char *name, const char *value) {
        ParseState *p = userdata;
        const ConfigKey *k;
        char msg[512];
        int r;

        if (!name) /* a bare section header; checked when a key uses it */
                return 1;
        if (strncmp(section, "client ", 7) == 0)
                return config_client_key(p, section + 7, name, value);
        if (!config_section_known(section)) {
                config_error(p->errors, "%s:%u: unknown section [%s]", p->name, p->line, section);
                return 1;
        }
        k = config_key_find(section, name);
        if (!k) {
                config_error(p->errors, "%s:%u: unknown key '%s' in section [%s]", p->name, p->line, name, section);
                return 1;
        }
        r = config_set(p->config, k, value, msg, sizeof(msg));
        if (r == 0)
                p->config->key_line[k - config_keys] = p->line;
        if (r == -ENOMEM)
                p->oom = 1;
        else if (r < 0)
                config_error(p->errors, "%s:%u: [%s] %s", p->name, p->line, section, msg);
        return 1;
}

static bool host_is_loopback(const char *host) {
        struct in_addr a4;
        struct in6_addr a6;
        char buf[64];
        size_t n;

        if (strcaseeq(host, "localhost"))
                return true;
        n = strlen(host);
        if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
                memcpy(buf, host + 1, n - 2);
                buf[n - 2] = '\0';
                host = buf;
        }
        if (inet_pton(AF_INET, host, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        if (inet_pton(AF_INET6, host, &a6) == 1)
                return IN6_IS_ADDR_LOOPBACK(&a6);
        return false;
}

/* base_url is scheme://host[:port][/] and nothing else: no user name or password (which
 * would be a secret in the configuration, echoed by /status and the log, and which makes
 * "https://x.api.visier.io@elsewhere" name elsewhere), no path, query or fragment. A value
 * with an '@' in it is never echoed in an error. */
static void config_validate_url(const Config *c, ConfigErrors *errors, const char *name) {
        CURLU *u;
        char *scheme = NULL, *host = NULL, *path = NULL, *query = NULL, *part = NULL;
        const char *shown = strchr(c->base_url, '@') ? "(not shown: it has an '@')" : c->base_url;

        u = curl_url();
        if (!u)
                return;
        if (curl_url_set(u, CURLUPART_URL, c->base_url, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
                config_error(errors, "%s: [visier] base_url: '%s' is not a valid URL", name, shown);
                goto out;
        }
        if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK ||
            curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK ||
            curl_url_get(u, CURLUPART_OPTIONS, &part, 0) == CURLUE_OK) {
                config_error(errors,
                             "%s: [visier] base_url: must not carry a user name or password (give scheme://host[:port] "
                             "only; credentials go in apikey_file and password_file)",
                             name);
                goto out;
        }
        if (curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK)
                config_error(errors, "%s: [visier] base_url: must not have a fragment", name);
        curl_free(part);
        part = NULL;
        if (streq(scheme, "http")) {
                if (!host_is_loopback(host))
                        config_error(errors,
                                     "%s: [visier] base_url: plain http:// is allowed only for loopback "
                                     "addresses (visier-sim); use https:// for %s",
                                     name, host);
        } else if (!streq(scheme, "https"))
                config_error(errors, "%s: [visier] base_url: scheme '%s' is not supported (use https://)", name, scheme);
        if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && !streq(path, "/"))
                config_error(errors, "%s: [visier] base_url: give the origin only, without a path ('%s')", name, path);
        if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK)
                config_error(errors, "%s: [visier] base_url: must not have a query string", name);
out:
        curl_free(scheme);
        curl_free(host);
        curl_free(path);
        curl_free(query);
        curl_free(part);
        curl_url_cleanup(u);
}

/* proxy is http(s)://host[:port] and nothing else. Credentials in it would be a secret in the
 * configuration. A proxy is refused for a plain http:// base_url: it would read the API key and
 * the password; for https:// it sees only the CONNECT to Visier's host. */
static void config_validate_proxy(const Config *c, ConfigErrors *errors, const char *name) {
        CURLU *u;
        char *scheme = NULL, *host = NULL, *path = NULL, *part = NULL;
        const char *shown = strchr(c->proxy, '@') ? "(not shown: it has an '@')" : c->proxy;

        if (strncasecmp(c->base_url, "https://", strlen("https://")) != 0) {
                config_error(errors,
                             "%s: [visier] proxy: only for an https:// base_url (through a proxy, plain http would "
                             "show it the API key and the password)",
                             name);
                return;
        }
        u = curl_url();
        if (!u)
                return;
        if (curl_url_set(u, CURLUPART_URL, c->proxy, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
                config_error(errors, "%s: [visier] proxy: '%s' is not a URL such as http://proxy.internal:3128", name,
                             shown);
        else if (!streq(scheme, "http") && !streq(scheme, "https"))
                config_error(errors, "%s: [visier] proxy: scheme '%s' is not supported (use http:// or https://)", name,
                             scheme);
        else if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK ||
                 curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK)
                config_error(errors, "%s: [visier] proxy: must not carry a user name or password", name);
        else if ((curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && !streq(path, "/")) ||
                 curl_url_get(u, CURLUPART_QUERY, &part, 0) == CURLUE_OK ||
                 curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK)
                config_error(errors, "%s: [visier] proxy: give scheme://host[:port] only ('%s')", name, shown);
        curl_free(scheme);
        curl_free(host);
        curl_free(path);
        curl_free(part);
        curl_url_cleanup(u);
}

/* [metrics] listen is ADDRESS:PORT ("127.0.0.1:9420", "[::1]:9420", port 0 for a free one): into
 * metrics_address and metrics_port. Any address is allowed: /metrics holds counts, never a
 * secret, and a scraper usually runs on another host. */
static void config_parse_metrics_listen(Config *c, ConfigErrors *errors, const char *name) {
        const char *v = c->metrics_listen, *colon;
        char addr[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        struct in_addr a4;
        unsigned long port;
        bool v6 = v && v[0] == '[';
        size_t n;
        char *end;

        c->metrics_port = -1;
        if (!v || !*v)
                return;
        if (v6) {
                const char *close = strchr(v, ']');

                colon = close && close[1] == ':' ? close + 1 : NULL;
                v++;
                n = close ? (size_t) (close - v) : 0;
        } else {
                colon = strrchr(v, ':');
                n = colon ? (size_t) (colon - v) : 0;
        }
        if (!colon || n == 0 || n >= sizeof(addr)) {
                config_error(errors, "%s: [metrics] listen: '%s' is not ADDRESS:PORT (e.g. 127.0.0.1:9420)", name,
                             c->metrics_listen);
                return;
        }
        memcpy(addr, v, n);
        addr[n] = '\0';
        if (v6 ? inet_pton(AF_INET6, addr, &a6) != 1 : inet_pton(AF_INET, addr, &a4) != 1) {
                config_error(errors, "%s: [metrics] listen: '%s' is not an IPv4 address or a bracketed IPv6 one", name,
                             addr);
                return;
        }
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (colon[1] < '0' || colon[1] > '9' || *end || errno || port > 65535) {
                config_error(errors, "%s: [metrics] listen: '%s' is not a port from 0 to 65535", name, colon + 1);
                return;
        }
        memcpy(c->metrics_address, addr, n + 1);
        c->metrics_port = (int) port;
}

static bool config_id_list_ok(const char *s) {
        bool digit = false;

        if (!s)
                return true;
        for (; *s; s++) {
                if (*s >= '0' && *s <= '9')
                        digit = true;
                else if (*s == ',' && digit)
                        digit = false;
                else if (*s != ' ')
                        return false;
        }
        return digit;
}

/* A fleet name ([fleet] node, tenant): 1 to CONFIG_FLEET_NAME_MAX bytes of printable ASCII,
 * no spaces (it is a key in the fleet's tables and a label in /status). */
static bool config_fleet_name_ok(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > CONFIG_FLEET_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] <= ' ' || (unsigned char) s[i] >= 0x7f)
                        return false;
        return true;
}

/* [store] url: a libpq connection string or URI, parsed by libpq itself, carrying no secret:
 * no password (password=, sslpassword=, user:password@ in a URI) and no passfile=, which would
 * put the password somewhere other than [store] password_file. The value is never echoed: a
 * refused one may hold the password. */
static void config_validate_store_url(const Config *c, ConfigErrors *errors, const char *name, unsigned line) {
        PQconninfoOption *opts;
        char *msg = NULL;
        bool password = false, passfile = false;

        if (!*c->store_url) {
                config_error(errors, "%s:%u: [store] url must not be empty", name, line);
                return;
        }
        opts = PQconninfoParse(c->store_url, &msg);
        PQfreemem(msg); /* libpq's reason may quote the value */
        if (!opts) {
                config_error(errors,
                             "%s:%u: [store] url is not a libpq connection string or postgresql:// URI (not shown: it "
                             "may hold a secret)",
                             name, line);
                return;
        }
        for (const PQconninfoOption *o = opts; o->keyword; o++) {
                if (!o->val)
                        continue;
                if (streq(o->keyword, "password") || streq(o->keyword, "sslpassword"))
                        password = true;
                else if (streq(o->keyword, "passfile"))
                        passfile = true;
        }
        PQconninfoFree(opts);
        if (password)
                config_error(errors,
                             "%s:%u: [store] url must not carry a password (password=, sslpassword= or user:password@ "
                             "in a URI): give it in [store] password_file",
                             name, line);
        if (passfile)
                config_error(errors, "%s:%u: [store] url must not name a passfile: give the password in [store] "
                             "password_file", name, line);
}

/* The host of base_url, for [fleet] tenant's default; NULL if it has none (already an error). */
static char *config_base_url_host(const Config *c) {
        CURLU *u = curl_url();
        char *host = NULL, *copy = NULL;

        if (!u)
                return NULL;
        if (c->base_url && curl_url_set(u, CURLUPART_URL, c->base_url, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
                copy = strdup(host);
        curl_free(host);
        curl_url_cleanup(u);
        return copy;
}

/* [store] url turns fleet mode on; [store] password_file and the [fleet] keys belong to it.
 * Fills in the derived defaults: node HOSTNAME:PID, tenant the host of base_url, renew_seconds
 * lease_seconds / 3. */
static void config_validate_fleet(Config *c, ConfigErrors *errors, const char *name) {
        unsigned url_line = config_key_line(c, "store", "url"), line;

        if (!config_fleet_mode(c)) {
                for (const ConfigKey *k = config_keys; k->name; k++) {
                        line = c->key_line[k - config_keys];
                        if (!line)
                                continue;
                        if (streq(k->section, "fleet") || (streq(k->section, "store") && streq(k->name, "password_file")))
                                config_error(errors, "%s:%u: [%s] %s is accepted only in fleet mode, with [store] url",
                                             name, line, k->section, k->name);
                }
                return;
        }
        if (config_key_line(c, "store", "database"))
                config_error(errors,
                             "%s:%u: [store] url and [store] database are mutually exclusive: database is a single "
                             "visierd's SQLite file, url the fleet's PostgreSQL",
                             name, url_line);
        config_validate_store_url(c, errors, name, url_line);

        if (!c->fleet_node) {
                char host[256] = "";

                if (gethostname(host, sizeof(host) - 1) < 0 || !*host)
                        snprintf(host, sizeof(host), "localhost");
                if (asprintf(&c->fleet_node, "%s:%ld", host, (long) getpid()) < 0)
                        c->fleet_node = NULL;
        }
        if (c->fleet_node && !config_fleet_name_ok(c->fleet_node)) {
                line = config_key_line(c, "fleet", "node");
                if (line)
                        config_error(errors, "%s:%u: [fleet] node must be 1 to %d printable characters without spaces",
                                     name, line, CONFIG_FLEET_NAME_MAX);
                else
                        config_error(errors,
                                     "%s: [fleet] node: the default HOSTNAME:PID is not 1 to %d printable characters "
                                     "without spaces; set [fleet] node",
                                     name, CONFIG_FLEET_NAME_MAX);
        }
        if (!c->fleet_tenant)
                c->fleet_tenant = config_base_url_host(c);
        if (c->fleet_tenant && !config_fleet_name_ok(c->fleet_tenant)) {
                line = config_key_line(c, "fleet", "tenant");
                if (line)
                        config_error(errors, "%s:%u: [fleet] tenant must be 1 to %d printable characters without spaces",
                                     name, line, CONFIG_FLEET_NAME_MAX);
                else
                        config_error(errors,
                                     "%s: [fleet] tenant: the default, the host of [visier] base_url, is longer than %d "
                                     "bytes; set [fleet] tenant",
                                     name, CONFIG_FLEET_NAME_MAX);
        }
        if (c->fleet_renew_seconds == 0)
                c->fleet_renew_seconds = c->fleet_lease_seconds / 3;
        else if (2 * c->fleet_renew_seconds >= c->fleet_lease_seconds)
                config_error(errors, "%s:%u: [fleet] renew_seconds (%u s) must be shorter than half of lease_seconds (%u s)",
                             name, config_key_line(c, "fleet", "renew_seconds"), c->fleet_renew_seconds,
                             c->fleet_lease_seconds);
}

static void config_validate(Config *c, ConfigErrors *errors, const char *name) {
        struct in_addr a4;
        struct in6_addr a6;

        if (!c->base_url)
                config_error(errors, "%s: [visier] base_url is required", name);
        else {
                config_validate_url(c, errors, name);
                if (c->proxy && *c->proxy)
                        config_validate_proxy(c, errors, name);
        }
        if (!c->username || !*c->username)
                config_error(errors, "%s: [visier] username is required", name);
        if (c->refresh_margin >= c->token_lifetime)
                config_error(errors, "%s: [visier] refresh_margin (%u s) must be shorter than token_lifetime (%u s)",
                             name, c->refresh_margin, c->token_lifetime);
        if (c->policy_allow) {
                char bad[256];

                if (policy_allow_check(c->policy_allow, bad, sizeof(bad)) < 0)
                        config_error(errors,
                                     "%s: [policy] allow: '%s' is not \"METHOD PATH\" of an operation visierd denies",
                                     name, bad);
        }
        if (c->rate_limit_hour < c->rate_limit_minute)
                config_error(errors, "%s: [visier] rate_limit_hour (%u) is below rate_limit_minute (%u)",
                             name, c->rate_limit_hour, c->rate_limit_minute);
        if (!streq(c->listen_tcp, "yes") && !streq(c->listen_tcp, "no"))
                config_error(errors, "%s: [listen] tcp: '%s' is not yes or no", name, c->listen_tcp);
        else if (streq(c->listen_tcp, "no") && (!c->listen_socket || !*c->listen_socket))
                config_error(errors, "%s: [listen] tcp = no needs a unix socket ([listen] socket) to serve on", name);
        if (inet_pton(AF_INET, c->listen_address, &a4) != 1 && inet_pton(AF_INET6, c->listen_address, &a6) != 1)
                config_error(errors, "%s: [listen] address: '%s' is not an IPv4 or IPv6 address", name, c->listen_address);
        else if (streq(c->listen_tcp, "yes") && !host_is_loopback(c->listen_address) && c->n_clients == 0)
                config_error(errors,
                             "%s: [listen] address: %s is not a loopback address; the local API serves Visier's "
                             "credentials to anyone who reaches it, so it listens beyond loopback only when "
                             "[client NAME] sections with tokens are configured",
                             name, c->listen_address);
        for (size_t i = 0; i < c->n_clients; i++) {
                if (!c->clients[i].token_file)
                        config_error(errors, "%s:%u: [client %s] token_file is required", name, c->clients[i].line,
                                     c->clients[i].name);
                if (c->clients[i].role == CLIENT_ROLE_NONE)
                        config_error(errors, "%s:%u: [client %s] role is required (read, write or admin)", name,
                                     c->clients[i].line, c->clients[i].name);
        }
        if (!config_id_list_ok(c->socket_allow_uids))
                config_error(errors, "%s: [listen] socket_allow_uids: '%s' is not a comma-separated list of numbers",
                             name, c->socket_allow_uids);
        if (!config_id_list_ok(c->socket_allow_gids))
                config_error(errors, "%s: [listen] socket_allow_gids: '%s' is not a comma-separated list of numbers",
                             name, c->socket_allow_gids);
        if (!c->database || !*c->database)
                config_error(errors, "%s: [store] database must not be empty", name);
        config_validate_fleet(c, errors, name);
        config_parse_metrics_listen(c, errors, name);
        if (c->metrics_socket && *c->metrics_socket && c->listen_socket && streq(c->metrics_socket, c->listen_socket))
                config_error(errors, "%s: [metrics] socket must not be [listen] socket (%s)", name, c->metrics_socket);
        if (!streq(c->require_request_header, "yes") && !streq(c->require_request_header, "no"))
                config_error(errors, "%s: [listen] require_request_header: '%s' is not yes or no", name,
                             c->require_request_header);
        if (!streq(c->log_access, "yes") && !streq(c->log_access, "no"))
                config_error(errors, "%s: [log] access: '%s' is not yes or no", name, c->log_access);
        if (!streq(c->log_format, "text") && !streq(c->log_format, "json"))
                config_error(errors, "%s: [log] format: '%s' is not text or json", name, c->log_format);
        if (!streq(c->publish, "direct") && !streq(c->publish, "project"))
                config_error(errors, "%s: [jobs] publish: '%s' is not direct or project", name, c->publish);
        if (c->project_tenants && strlen(c->project_tenants) >= CONFIG_PROJECT_TENANTS_MAX)
                config_error(errors, "%s: [jobs] project_tenants is longer than %d bytes", name,
                             CONFIG_PROJECT_TENANTS_MAX - 1);
}

/* Parse and validate; *ret gets the config even when there were errors (not on -ENOMEM). */
static int config_parse_lenient(ParseState *p, Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;
        size_t errors_before = p->errors->n;
        int r;

        r = config_new_defaults(&c);
        if (r < 0)
                return r;
        c->path = strdup(p->name);
        if (!c->path)
                return -ENOMEM;
        p->config = c;

        r = ini_parse_stream(config_reader, p, config_handler, p);
        if (p->oom)
                return -ENOMEM;
        if (r > 0)
                config_error(p->errors, "%s:%d: syntax error (expected [section] or key = value)", p->name, r);
        else if (r < 0)
                config_error(p->errors, "%s: cannot parse", p->name);
        config_validate(c, p->errors, p->name);
        *ret = TAKE_PTR(c);
        return p->errors->n > errors_before || p->errors->truncated ? -EINVAL : 0;
}

static int config_parse(ParseState *p, Config **ret) {
        Config *c = NULL;
        int r;

        r = config_parse_lenient(p, &c);
        if (r < 0) {
                config_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static int config_open(const char *path, FILE **ret, ConfigErrors *errors) {
        FILE *f = fopen(path, "re");

        if (!f) {
                int r = negative_errno();
                config_error(errors, "%s: cannot open configuration: %s", path, strerror(-r));
                return r;
        }
        *ret = f;
        return 0;
}

int config_load(const char *path, Config **ret, ConfigErrors *errors) {
        _cleanup_fclose_ FILE *f = NULL;
        ParseState p = { .errors = errors, .name = path };
        int r;

        r = config_open(path, &f, errors);
        if (r < 0)
                return r;
        p.file = f;
        return config_parse(&p, ret);
}

int config_load_all(const char *path, Config **ret, ConfigErrors *errors) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        ParseState p = { .errors = errors, .name = path };
        int r, q;

        r = config_open(path, &f, errors);
        if (r < 0)
                return r;
        p.file = f;
        r = config_parse_lenient(&p, &c);
        if (!c)
                return r;
        q = config_load_secrets(c, errors);
        if (r < 0)
                return r;
        if (q < 0)
                return q;
        *ret = TAKE_PTR(c);
        return 0;
}

int config_load_string(const char *name, const char *text, Config **ret, ConfigErrors *errors) {
        ParseState p = { .errors = errors, .name = name, .text = text };

        return config_parse(&p, ret);
}

static int config_load_one_secret(const char *configured, const char *credential, const char *key,
                                  Secret **ret, ConfigErrors *errors, const char *name) {
        _cleanup_free_ char *path = NULL;
        const char *dir;
        char err[512];
        int r;

        if (configured)
                path = strdup(configured);
        else {
                dir = getenv("CREDENTIALS_DIRECTORY");
                if (!dir || !*dir) {
                        config_error(errors,
                                     "%s: [visier] %s is not set and no systemd credential '%s' is available "
                                     "($CREDENTIALS_DIRECTORY is unset)",
                                     name, key, credential);
                        return -ENOENT;
                }
                if (asprintf(&path, "%s/%s", dir, credential) < 0)
                        path = NULL;
        }
        if (!path)
                return -ENOMEM;
        r = secret_read_file(path, ret, err, sizeof(err));
        if (r < 0)
                config_error(errors, "%s: [visier] %s: %s", name, key, err);
        return r;
}

/* Fleet mode's database password: [store] password_file, or the credential store-password when
 * it exists, or none (peer or trust authentication, a unix socket). *ret is NULL for none. */
static int config_load_store_password(const Config *c, Secret **ret, ConfigErrors *errors, const char *name) {
        _cleanup_free_ char *path = NULL;
        const char *dir;
        struct stat st;
        char err[512];
        int r;

        *ret = NULL;
        if (!config_fleet_mode(c))
                return 0;
        if (c->store_password_file)
                path = strdup(c->store_password_file);
        else {
                dir = getenv("CREDENTIALS_DIRECTORY");
                if (!dir || !*dir)
                        return 0;
                if (asprintf(&path, "%s/%s", dir, CREDENTIAL_STORE_PASSWORD) < 0)
                        path = NULL;
                else if (lstat(path, &st) < 0 && errno == ENOENT)
                        return 0; /* no credential: no password */
        }
        if (!path)
                return -ENOMEM;
        r = secret_read_file(path, ret, err, sizeof(err));
        if (r < 0)
                config_error(errors, "%s: [store] password_file: %s", name, err);
        return r;
}

/* Long enough, and not one character repeated: a client token is a password nobody types. */
static bool client_token_strong(const Secret *t) {
        bool seen[256] = {};
        int distinct = 0;

        if (t->len < CONFIG_CLIENT_TOKEN_MIN)
                return false;
        for (size_t i = 0; i < t->len; i++)
                if (!seen[(unsigned char) t->data[i]]) {
                        seen[(unsigned char) t->data[i]] = true;
                        distinct++;
                }
        return distinct >= CONFIG_CLIENT_TOKEN_DISTINCT_MIN;
}

int config_load_secrets(Config *c, ConfigErrors *errors) {
        _cleanup_(secret_freep) Secret *apikey = NULL, *password = NULL, *store_password = NULL;
        const char *name = c->path ? c->path : "configuration";
        int r, q, q_store, q_clients = 0;

        for (size_t i = 0; i < c->n_clients; i++) {
                char err[512];
                int k;

                if (!c->clients[i].token_file)
                        continue;
                secret_free(c->clients[i].token);
                c->clients[i].token = NULL;
                k = secret_read_file(c->clients[i].token_file, &c->clients[i].token, err, sizeof(err));
                if (k < 0) {
                        config_error(errors, "%s: [client %s] token_file: %s", name, c->clients[i].name, err);
                        q_clients = k;
                } else if (!client_token_strong(c->clients[i].token)) {
                        config_error(errors,
                                     "%s: [client %s] token_file: %s holds a token of %zu bytes with too few different "
                                     "characters; a client token needs at least %d bytes and %d different characters "
                                     "(for example: openssl rand -hex 32)",
                                     name, c->clients[i].name, c->clients[i].token_file, c->clients[i].token->len,
                                     CONFIG_CLIENT_TOKEN_MIN, CONFIG_CLIENT_TOKEN_DISTINCT_MIN);
                        c->clients[i].token = secret_free(c->clients[i].token);
                        q_clients = -EINVAL;
                }
        }
        r = config_load_one_secret(c->apikey_file, CREDENTIAL_APIKEY, "apikey_file", &apikey, errors, name);
        q = config_load_one_secret(c->password_file, CREDENTIAL_PASSWORD, "password_file", &password, errors, name);
        q_store = config_load_store_password(c, &store_password, errors, name);
        if (r < 0)
                return r;
        if (q < 0)
                return q;
        if (q_store < 0)
                return q_store;
        if (q_clients < 0)
                return q_clients;
        secret_free(c->apikey);
        secret_free(c->password);
        secret_free(c->store_password);
        c->apikey = TAKE_PTR(apikey);
        c->password = TAKE_PTR(password);
        c->store_password = TAKE_PTR(store_password);
        return 0;
}
