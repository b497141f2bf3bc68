/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visier-sim: a Visier REST API simulator for tests. main() parses the command line, reads
 * the credential files, builds the model, permission, auth, rate, fault and counter modules, starts the
 * HTTP daemon on a loopback address, announces the port (port file and sd_notify), then waits
 * for SIGTERM/SIGINT and tears everything down. It prints no secret, ever.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "macro.h"
#include "sim-auth.h"
#include "clock.h"
#include "sim-counters.h"
#include "sim-faults.h"
#include "sim-http.h"
#include "sim-model.h"
#include "parse.h"
#include "sim-rate.h"

#define SECRET_FILE_MAX 4096
#define PORT_FILE_PATH_MAX 4096
#define EXIT_USAGE 2

typedef struct Args {
        const char *listen;
        uint64_t port;
        const char *port_file;
        const char *username;
        const char *password_file;
        const char *apikey_file;
        const char *client_id;
        const char *client_secret_file;
        uint64_t token_ttl;
        uint64_t rate_minute, rate_hour;
        FaultSettings faults;
} Args;

enum {
        ARG_LISTEN = 0x100,
        ARG_PORT,
        ARG_PORT_FILE,
        ARG_USERNAME,
        ARG_PASSWORD_FILE,
        ARG_APIKEY_FILE,
        ARG_CLIENT_ID,
        ARG_CLIENT_SECRET_FILE,
        ARG_TOKEN_TTL,
        ARG_RATE_MINUTE,
        ARG_RATE_HOUR,
        ARG_LATENCY_MS,
        ARG_LOGIN_LATENCY_MS,
        ARG_ERROR_RATE,
        ARG_DROP_RATE,
        ARG_THROTTLE_RATE,
        ARG_RETRY_AFTER,
        ARG_PUBLISH_MS,
        ARG_REJECT_OVERLAPS,
        ARG_REFUSE_TOKENS,
        ARG_REJECT_DISPLAY_NAME,
        ARG_QUERY_ROWS,
        ARG_VERSION,
};

/* Numeric options: one row each with its bounds and target. */
typedef struct NumericOption {
        int id;
        const char *name;
        uint64_t min, max;
        size_t offset;
} NumericOption;

#define NUM(i, n, lo, hi, field) { i, n, lo, hi, offsetof(Args, field) }
static const NumericOption numeric_options[] = {
        NUM(ARG_PORT, "port", 0, 65535, port),
        NUM(ARG_TOKEN_TTL, "token-ttl", 1, UINT64_C(31536000), token_ttl),
        NUM(ARG_RATE_MINUTE, "rate-minute", 0, UINT64_C(100000000), rate_minute),
        NUM(ARG_RATE_HOUR, "rate-hour", 0, UINT64_C(100000000), rate_hour),
        NUM(ARG_LATENCY_MS, "latency-ms", 0, FAULTS_LATENCY_MAX_MS, faults.latency_ms),
        NUM(ARG_LOGIN_LATENCY_MS, "login-latency-ms", 0, FAULTS_LATENCY_MAX_MS, faults.login_latency_ms),
        NUM(ARG_ERROR_RATE, "error-rate", 0, 100, faults.error_rate),
        NUM(ARG_DROP_RATE, "drop-rate", 0, 100, faults.drop_rate),
        NUM(ARG_THROTTLE_RATE, "throttle-rate", 0, 100, faults.throttle_rate),
        NUM(ARG_RETRY_AFTER, "retry-after", 0, FAULTS_RETRY_AFTER_MAX, faults.retry_after),
        NUM(ARG_PUBLISH_MS, "publish-ms", 0, FAULTS_PUBLISH_MAX_MS, faults.publish_ms),
        NUM(ARG_QUERY_ROWS, "query-rows", 0, FAULTS_QUERY_ROWS_MAX, faults.query_rows),
};
#undef NUM

static void help(void) {
        printf("Usage: visier-sim [OPTIONS]\n"
               "\n"
               "Simulate the Visier REST API (authentication, rate limits, data model, permissions)\n"
               "on a loopback address, with injectable faults and a /_sim control API for tests.\n"
               "\n"
               "Listening:\n"
               "  --listen ADDR            loopback address to listen on (127.0.0.0/8 or ::1; default 127.0.0.1)\n"
               "  --port N                 TCP port, 0 picks a free one (default 0)\n"
               "  --port-file FILE         write the bound port and a newline to FILE (atomically)\n"
               "\n"
               "Credentials:\n"
               "  --username NAME          API user name (default apiuser)\n"
               "  --password-file FILE     file holding the password (default password: sim-password)\n"
               "  --apikey-file FILE       file holding the API key (default key: sim-apikey)\n"
               "  --client-id ID           the registered OAuth client's ID (default sim-client)\n"
               "  --client-secret-file FILE  file holding its secret (default secret: sim-client-secret)\n"
               "  --token-ttl SECONDS      VisierASIDToken and OAuth access token lifetime (default 3600)\n"
               "\n"
               "Rate limit (0 = unlimited):\n"
               "  --rate-minute N          calls per minute (default 100)\n"
               "  --rate-hour N            calls per hour (default 6000)\n"
               "\n"
               "Faults (also settable at run time with POST /_sim/faults):\n"
               "  --latency-ms N           delay before answering every /v1 call\n"
               "  --login-latency-ms N     delay of the login call\n"
               "  --error-rate PCT         share of /v1 calls answered 503\n"
               "  --drop-rate PCT          share of /v1 calls whose connection is closed unanswered\n"
               "  --throttle-rate PCT      share of /v1 calls answered 429 with Retry-After\n"
               "  --retry-after S          Retry-After of injected 429 answers (default 1)\n"
               "  --publish-ms N           how long every permission write publishes (default 0)\n"
               "  --reject-overlaps        answer 409 to a permission write that overlaps another\n"
               "  --refuse-tokens          accept logins but answer 401 to every other /v1 call\n"
               "  --reject-display-name S  answer 400 to a create/update carrying this displayName\n"
               "  --query-rows N           records behind list/sql/snapshot answers (default 200)\n"
               "\n"
               "  -h --help                show this help\n"
               "     --version             show the version\n"
               "\n"
               "Readiness: after listening, writes --port-file and, when NOTIFY_SOCKET is set, sends\n"
               "READY=1 and X_LISTEN_PORT=<port>. SIGTERM or SIGINT stops it with exit status 0.\n");
}

static int parse_args(int argc, char *argv[], Args *a) {
        static const struct option options[] = {
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "port", required_argument, NULL, ARG_PORT },
                { "port-file", required_argument, NULL, ARG_PORT_FILE },
                { "username", required_argument, NULL, ARG_USERNAME },
                { "password-file", required_argument, NULL, ARG_PASSWORD_FILE },
                { "apikey-file", required_argument, NULL, ARG_APIKEY_FILE },
                { "client-id", required_argument, NULL, ARG_CLIENT_ID },
                { "client-secret-file", required_argument, NULL, ARG_CLIENT_SECRET_FILE },
                { "token-ttl", required_argument, NULL, ARG_TOKEN_TTL },
                { "rate-minute", required_argument, NULL, ARG_RATE_MINUTE },
                { "rate-hour", required_argument, NULL, ARG_RATE_HOUR },
                { "latency-ms", required_argument, NULL, ARG_LATENCY_MS },
                { "login-latency-ms", required_argument, NULL, ARG_LOGIN_LATENCY_MS },
                { "error-rate", required_argument, NULL, ARG_ERROR_RATE },
                { "drop-rate", required_argument, NULL, ARG_DROP_RATE },
                { "throttle-rate", required_argument, NULL, ARG_THROTTLE_RATE },
                { "retry-after", required_argument, NULL, ARG_RETRY_AFTER },
                { "publish-ms", required_argument, NULL, ARG_PUBLISH_MS },
                { "reject-overlaps", no_argument, NULL, ARG_REJECT_OVERLAPS },
                { "refuse-tokens", no_argument, NULL, ARG_REFUSE_TOKENS },
                { "reject-display-name", required_argument, NULL, ARG_REJECT_DISPLAY_NAME },
                { "query-rows", required_argument, NULL, ARG_QUERY_ROWS },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                const NumericOption *num = NULL;

                for (size_t i = 0; i < ELEMENTSOF(numeric_options); i++)
                        if (numeric_options[i].id == c)
                                num = &numeric_options[i];
                if (num) {
                        uint64_t *target = (uint64_t *) (void *) ((char *) a + num->offset);

                        if (parse_uint64(optarg, num->min, num->max, target) < 0) {
                                fprintf(stderr, "visier-sim: --%s: expected a whole number between %" PRIu64
                                        " and %" PRIu64 ", got '%s'\n", num->name, num->min, num->max, optarg);
                                return -EINVAL;
                        }
                        continue;
                }

                switch (c) {
                case ARG_LISTEN:
                        a->listen = optarg;
                        break;
                case ARG_PORT_FILE:
                        a->port_file = optarg;
                        break;
                case ARG_USERNAME:
                        a->username = optarg;
                        break;
                case ARG_PASSWORD_FILE:
                        a->password_file = optarg;
                        break;
                case ARG_APIKEY_FILE:
                        a->apikey_file = optarg;
                        break;
                case ARG_CLIENT_ID:
                        a->client_id = optarg;
                        break;
                case ARG_CLIENT_SECRET_FILE:
                        a->client_secret_file = optarg;
                        break;
                case ARG_REJECT_OVERLAPS:
                        a->faults.reject_overlaps = true;
                        break;
                case ARG_REFUSE_TOKENS:
                        a->faults.refuse_tokens = true;
                        break;
                case ARG_REJECT_DISPLAY_NAME: {
                        size_t n = strlen(optarg);

                        if (n > FAULTS_NAME_MAX) {
                                fprintf(stderr, "visier-sim: --reject-display-name: at most %d bytes\n",
                                        FAULTS_NAME_MAX);
                                return -EINVAL;
                        }
                        memcpy(a->faults.reject_display_name, optarg, n + 1);
                        break;
                }
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("visier-sim %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "visier-sim: try --help\n");
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "visier-sim: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        if (!*a->username || (a->client_id && !*a->client_id)) {
                fprintf(stderr, "visier-sim: --username and --client-id must not be empty\n");
                return -EINVAL;
        }
        return 1;
}

/* Loopback only: 127.0.0.0/8 or ::1. Fills *ret (big enough for either family). */
static int listen_address(const char *s, struct sockaddr_in6 *ret6, struct sockaddr_in *ret4, bool *ret_v6) {
        struct in_addr a4;
        struct in6_addr a6;

        if (inet_pton(AF_INET, s, &a4) == 1) {
                if ((ntohl(a4.s_addr) >> 24) != 127)
                        return -EADDRNOTAVAIL;
                *ret4 = (struct sockaddr_in) { .sin_family = AF_INET, .sin_addr = a4 };
                *ret_v6 = false;
                return 0;
        }
        if (inet_pton(AF_INET6, s, &a6) == 1) {
                if (!IN6_IS_ADDR_LOOPBACK(&a6))
                        return -EADDRNOTAVAIL;
                *ret6 = (struct sockaddr_in6) { .sin6_family = AF_INET6, .sin6_addr = a6 };
                *ret_v6 = true;
                return 0;
        }
        return -EINVAL;
}

/* Read a secret file into a new string, one trailing newline stripped. */
static int read_secret_file(const char *path, char **ret) {
        _cleanup_fclose_ FILE *f = NULL;
        char buf[SECRET_FILE_MAX + 1];
        size_t n;
        char *s;

        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        n = fread(buf, 1, sizeof(buf), f);
        if (ferror(f)) {
                explicit_bzero(buf, sizeof(buf));
                return -EIO;
        }
        if (n > SECRET_FILE_MAX) {
                explicit_bzero(buf, sizeof(buf));
                return -EFBIG;
        }
        if (n > 0 && buf[n - 1] == '\n')
                n--;
        if (n > 0 && buf[n - 1] == '\r')
                n--;
        if (n == 0 || memchr(buf, '\0', n)) {
                explicit_bzero(buf, sizeof(buf));
                return -EBADMSG;
        }
        s = strndup(buf, n);
        explicit_bzero(buf, sizeof(buf));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* SIGHUP: read the password, API key and client secret files again (as a credential rotation
 * on Visier's side would change them); the files that were not given keep their defaults. */
static void reload_credentials(const Args *a, Auth *auth) {
        const char *const paths[] = { a->password_file, a->apikey_file, a->client_secret_file };
        static const char *const what[] = { "password", "API key", "client secret" };
        char *values[ELEMENTSOF(paths)] = {};

        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                if (paths[i] && read_secret_file(paths[i], &values[i]) < 0)
                        fprintf(stderr, "visier-sim: SIGHUP: cannot read %s file %s\n", what[i], paths[i]);
        if (auth_set_credentials(auth, values[0], values[1], values[2]) >= 0)
                fprintf(stderr, "visier-sim: credentials re-read\n");
        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                if (values[i]) {
                        explicit_bzero(values[i], strlen(values[i]));
                        free(values[i]);
                }
}

static void secret_freep(char **p) {
        if (*p) {
                explicit_bzero(*p, strlen(*p));
                free(*p);
        }
}

static int write_port_file(const char *path, uint16_t port) {
        char tmp[PORT_FILE_PATH_MAX];
        FILE *f;
        int n;

        n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        if (n < 0 || (size_t) n >= sizeof(tmp))
                return -ENAMETOOLONG;
        f = fopen(tmp, "we");
        if (!f)
                return negative_errno();
        if (fprintf(f, "%u\n", (unsigned) port) < 0 || fflush(f) != 0 || fsync(fileno(f)) < 0) {
                int r = negative_errno();
                fclose(f);
                (void) unlink(tmp);
                return r;
        }
        if (fclose(f) != 0 || rename(tmp, path) < 0) {
                int r = negative_errno();
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

static int run(int argc, char *argv[]) {
        Args args = {
                .listen = "127.0.0.1",
                .username = "apiuser",
                .token_ttl = 3600,
                .rate_minute = 100,
                .rate_hour = 6000,
                .faults = FAULT_SETTINGS_DEFAULT,
        };
        __attribute__((cleanup(secret_freep))) char *password = NULL, *apikey = NULL, *client_secret = NULL;
        SimServer s = {};
        HttpDaemon *daemon = NULL;
        struct sockaddr_in6 sa6;
        struct sockaddr_in sa4;
        bool v6 = false;
        sigset_t mask;
        uint16_t port = 0;
        int r, sig, ret = EXIT_FAILURE;

        r = parse_args(argc, argv, &args);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;

        r = listen_address(args.listen, &sa6, &sa4, &v6);
        if (r < 0) {
                fprintf(stderr, "visier-sim: --listen %s: %s\n", args.listen,
                        r == -EINVAL ? "not an IP address" : "not a loopback address (use 127.0.0.1 or ::1)");
                return EXIT_USAGE;
        }
        if (v6)
                sa6.sin6_port = htons((uint16_t) args.port);
        else
                sa4.sin_port = htons((uint16_t) args.port);

        if (args.password_file) {
                r = read_secret_file(args.password_file, &password);
                if (r < 0) {
                        fprintf(stderr, "visier-sim: cannot read password file %s: %s\n", args.password_file,
                                r == -EBADMSG ? "empty or binary" : strerror(-r));
                        return EXIT_USAGE;
                }
        } else if (!(password = strdup("sim-password")))
                return EXIT_FAILURE;
        if (args.apikey_file) {
                r = read_secret_file(args.apikey_file, &apikey);
                if (r < 0) {
                        fprintf(stderr, "visier-sim: cannot read API key file %s: %s\n", args.apikey_file,
                                r == -EBADMSG ? "empty or binary" : strerror(-r));
                        return EXIT_USAGE;
                }
        } else if (!(apikey = strdup("sim-apikey")))
                return EXIT_FAILURE;
        if (args.client_secret_file) {
                r = read_secret_file(args.client_secret_file, &client_secret);
                if (r < 0) {
                        fprintf(stderr, "visier-sim: cannot read client secret file %s: %s\n", args.client_secret_file,
                                r == -EBADMSG ? "empty or binary" : strerror(-r));
                        return EXIT_USAGE;
                }
        } else if (!(client_secret = strdup("sim-client-secret")))
                return EXIT_FAILURE;

        /* Block the stop signals before any thread starts, so only sigwait() below sees them. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0)
                return EXIT_FAILURE;
        (void) signal(SIGPIPE, SIG_IGN);

        r = model_new(&s.model);
        if (r >= 0)
                r = permissions_new(s.model, &s.permissions);
        if (r >= 0)
                r = users_new(&s.users);
        if (r >= 0)
                r = versions_new(&s.versions);
        if (r >= 0)
                r = auth_new(args.username, password, apikey, args.client_id ?: "sim-client", client_secret,
                             args.token_ttl * USEC_PER_SEC, &s.auth);
        if (r >= 0)
                r = rate_new(args.rate_minute, args.rate_hour, &s.rate);
        if (r >= 0)
                r = faults_new(&args.faults, &s.faults);
        if (r >= 0)
                r = counters_new(&s.counters);
        if (r >= 0)
                r = request_log_new(&s.requests);
        if (r < 0) {
                fprintf(stderr, "visier-sim: cannot set up: %s\n", strerror(-r));
                goto out;
        }

        r = http_start(&s, v6 ? (const struct sockaddr *) &sa6 : (const struct sockaddr *) &sa4, &daemon, &port);
        if (r < 0) {
                fprintf(stderr, "visier-sim: cannot listen on %s port %" PRIu64 ": %s\n", args.listen, args.port,
                        strerror(-r));
                goto out;
        }

        if (args.port_file) {
                r = write_port_file(args.port_file, port);
                if (r < 0) {
                        fprintf(stderr, "visier-sim: cannot write port file %s: %s\n", args.port_file, strerror(-r));
                        goto out;
                }
        }
        fprintf(stderr, v6 ? "visier-sim listening on [%s]:%u\n" : "visier-sim listening on %s:%u\n", args.listen,
                (unsigned) port);
        if (getenv("NOTIFY_SOCKET")) {
                r = sd_notifyf(0, "READY=1\nX_LISTEN_PORT=%u", (unsigned) port);
                if (r < 0)
                        fprintf(stderr, "visier-sim: sd_notify failed: %s\n", strerror(-r));
        }

        for (;;) {
                r = sigwait(&mask, &sig);
                if (r == 0 && (sig == SIGTERM || sig == SIGINT))
                        break;
                if (r == 0 && sig == SIGHUP)
                        reload_credentials(&args, s.auth);
        }
        if (getenv("NOTIFY_SOCKET"))
                (void) sd_notify(0, "STOPPING=1");
        ret = EXIT_SUCCESS;

out:
        daemon = http_stop(daemon);
        s.counters = counters_free(s.counters);
        s.requests = request_log_free(s.requests);
        s.faults = faults_free(s.faults);
        s.rate = rate_free(s.rate);
        s.auth = auth_free(s.auth);
        s.permissions = permissions_free(s.permissions);
        s.users = users_free(s.users);
        s.versions = versions_free(s.versions);
        s.model = model_free(s.model);
        explicit_bzero(&args, sizeof(args));
        return ret;
}



int main(int argc, char *argv[]) {
        return run(argc, argv);
}
