/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierd's configuration: one table of keys (section, name, type, default, bounds, help)
 * that feeds the parser, --check-config, the defaults and the tests. Parsing collects every
 * error with its line instead of stopping at the first. Never logs.
 */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

#include "macro.h"
#include "secret.h"

#define CONFIG_DEFAULT_PATH CONFDIR "/visierd.conf"
#define CONFIG_ERRORS_MAX 64
#define CREDENTIAL_APIKEY "visier-apikey"
#define CREDENTIAL_PASSWORD "visier-password"
#define CREDENTIAL_STORE_PASSWORD "store-password" /* [store] password_file's default, when it exists */
#define CONFIG_PROJECT_TENANTS_MAX 1024 /* bytes of [jobs] project_tenants, with its NUL */
#define CONFIG_SOCKET_MODE 0660 /* the unix socket: owner and group may connect */
#define CONFIG_KEYS_MAX 128 /* rows of config_keys[] (checked at compile time in config.c) */
#define CONFIG_FLEET_NAME_MAX 128 /* [fleet] node and tenant: FLEETDB_NAME_MAX (checked in config.c) */

typedef enum ClientRole {
        CLIENT_ROLE_NONE,  /* nobody in particular (no client tokens configured) */
        CLIENT_ROLE_READ,  /* proxied reads, job status, /status, /metrics */
        CLIENT_ROLE_WRITE, /* also permission writes, and cancelling its own jobs */
        CLIENT_ROLE_ADMIN, /* everything, on any job */
        _CLIENT_ROLE_MAX,
        _CLIENT_ROLE_INVALID = -1,
} ClientRole;

const char *client_role_to_string(ClientRole r);
ClientRole client_role_from_string(const char *s);

#define CONFIG_CLIENTS_MAX 64
/* A client token: at least this many bytes, of at least this many different characters. */
#define CONFIG_CLIENT_TOKEN_MIN 32
#define CONFIG_CLIENT_TOKEN_DISTINCT_MIN 8
#define CONFIG_CLIENT_NAME_MAX 64

typedef struct ConfigClient {
        char *name;
        char *token_file;
        ClientRole role;
        Secret *token; /* loaded by config_load_secrets() */
        unsigned line;
} ConfigClient;

typedef struct Config {
        char *path;

        /* [visier] */
        char *base_url;
        char *username;
        char *apikey_file;
        char *password_file;
        char *ca_file;
        char *proxy;              /* NULL: no proxy, whatever the environment says */
        unsigned token_lifetime;  /* seconds */
        unsigned refresh_margin;  /* seconds */
        unsigned connect_timeout; /* seconds */
        unsigned request_timeout; /* seconds */
        unsigned rate_limit_minute;
        unsigned rate_limit_hour;
        unsigned max_retries;
        unsigned max_response_size; /* bytes */

        /* [listen] */
        char *listen_address;
        unsigned listen_port;
        char *listen_socket; /* unix socket path, or NULL */
        char *listen_tcp;    /* "yes" or "no" (the unix socket only) */
        unsigned max_connections;
        unsigned max_connections_per_client;
        unsigned max_held_requests;
        unsigned drain_timeout; /* seconds a stop waits for requests in progress */
        unsigned max_body_size; /* bytes */
        unsigned max_header_size; /* bytes: libmicrohttpd's per-connection memory pool */
        unsigned session_lifetime; /* seconds */
        char *policy_allow;        /* [policy] allow: denied operations allowed anyway, or NULL */
        char *log_format;          /* [log] format: "text" or "json" */
        char *log_access;          /* [log] access: "yes" or "no" */
        unsigned max_sessions;
        unsigned idle_timeout;  /* seconds */
        unsigned read_timeout;  /* seconds to send a whole request */
        char *allowed_hosts;    /* comma-separated extra Host names */
        char *allowed_origins;  /* comma-separated Origins allowed (none by default) */
        char *require_request_header; /* "yes": requests must carry X-Visierd-Request: true */
        char *socket_allow_uids; /* comma-separated uids allowed on the unix socket */
        char *socket_allow_gids;

        /* [metrics] */
        char *metrics_listen;  /* "ADDRESS:PORT" of the metrics-only listener, or NULL */
        char *metrics_socket;  /* its unix socket path, or NULL */
        char *metrics_allowed_hosts; /* Host names it accepts besides loopback and its own address */
        char metrics_address[INET6_ADDRSTRLEN]; /* parsed from metrics_listen */
        int metrics_port;      /* parsed from metrics_listen; -1: no TCP metrics listener */

        /* [client NAME] sections */
        ConfigClient clients[CONFIG_CLIENTS_MAX];
        size_t n_clients;

        /* [store] */
        char *database;       /* SQLite; keeps its default in fleet mode, unused there */
        char *store_url;      /* libpq conninfo or postgresql:// URI: fleet mode; NULL: SQLite. Never a password */
        char *store_password_file; /* NULL: $CREDENTIALS_DIRECTORY/store-password if it exists, else none */

        /* [fleet]: only with store_url. Filled in by validation: node, tenant and renew_seconds
         * hold their effective values (the defaults are derived). */
        char *fleet_node;          /* default HOSTNAME:PID */
        char *fleet_tenant;        /* default the host of base_url */
        unsigned fleet_lease_seconds;
        unsigned fleet_renew_seconds; /* default lease_seconds / 3 */

        /* [exports] */
        char *exports_dir;
        char *exports_results; /* NULL: "exports" beside database */

        /* [jobs] */
        unsigned batch_max;
        unsigned max_attempts;    /* 0: no limit */
        unsigned give_up_after;   /* seconds */
        unsigned publish_settle;  /* seconds */
        unsigned batch_delay_ms;
        unsigned max_wait;
        unsigned answer_wait; /* seconds a write without a Prefer waits for its job's answer */        /* seconds a Prefer: wait may hold an answer */
        unsigned keep_succeeded;  /* seconds */
        unsigned keep_failed;     /* seconds */
        unsigned max_pending;
        char *publish;            /* "direct" or "project" */
        char *project_tenants;    /* comma-separated TargetTenantIDs ("-": none given), or NULL: all */
        unsigned round_max_calls;

        /* [cache] */
        unsigned cache_max_bytes;       /* 0: no cache */
        unsigned cache_model_ttl;       /* seconds; 0: not cached */
        unsigned cache_members_ttl;
        unsigned cache_permissions_ttl;
        unsigned cache_assignments_ttl;

        /* Loaded by config_load_secrets(). */
        Secret *apikey;
        Secret *password;
        Secret *store_password; /* NULL: none (peer or trust authentication, a unix socket) */

        /* The line each key of config_keys[] was set on, by its index; 0: not in the file. */
        unsigned key_line[CONFIG_KEYS_MAX];
} Config;

typedef enum ConfigType {
        CONFIG_STRING,
        CONFIG_UINT,
        _CONFIG_TYPE_MAX,
        _CONFIG_TYPE_INVALID = -1,
} ConfigType;

typedef struct ConfigKey {
        const char *section;
        const char *name;
        ConfigType type;
        size_t offset;
        const char *default_value; /* NULL: no default (unset) */
        unsigned long min, max;    /* bounds for CONFIG_UINT */
        const char *help;
} ConfigKey;

/* The table, terminated by a row whose name is NULL. */
extern const ConfigKey config_keys[];

typedef struct ConfigErrors {
        char *messages[CONFIG_ERRORS_MAX];
        size_t n;
        bool truncated;
} ConfigErrors;

void config_errors_clear(ConfigErrors *e);

Config *config_free(Config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Config *, config_free);

/* A Config with every default applied and no file read. */
int config_new_defaults(Config **ret);

/*
 * Parse the file at path over the defaults, then validate the whole: every problem goes into
 * errors as "PATH:LINE: message" (or "PATH: message" when no line applies). Returns 0, or
 * -EINVAL when there was any error (ret untouched), or another negative errno.
 */
int config_load(const char *path, Config **ret, ConfigErrors *errors);

/* Same, from a string (for tests and --dev); name is used in messages. */
int config_load_string(const char *name, const char *text, Config **ret, ConfigErrors *errors);

/*
 * Load the API key and the password: from the configured files, or else from
 * $CREDENTIALS_DIRECTORY/visier-apikey and visier-password. In fleet mode also the database's
 * password: [store] password_file, or else $CREDENTIALS_DIRECTORY/store-password when that file
 * exists, or else none. Problems go into errors.
 */
int config_load_secrets(Config *c, ConfigErrors *errors);

/*
 * config_load() and then config_load_secrets(), reporting the problems of both at once: a
 * bad key does not hide an unreadable secret file. This is what visierd and --check-config use.
 */
int config_load_all(const char *path, Config **ret, ConfigErrors *errors);

/* Find a key in the table; NULL when unknown. */
const ConfigKey *config_key_find(const char *section, const char *name);

/* The line of the file that set the key, 0 when it keeps its default (or is unknown). */
unsigned config_key_line(const Config *c, const char *section, const char *name);

/* Fleet mode: [store] url is set. */
static inline bool config_fleet_mode(const Config *c) {
        return c->store_url != NULL;
}
