/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierd: holds the Visier credentials and serves Visier's API on localhost.
 * main() parses arguments, loads and checks the configuration, builds the manager and runs
 * it. Nothing below main() exits the process.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "config.h"
#include "dev.h"
#include "exports.h"
#include "log.h"
#include "manager.h"

enum {
        EXIT_USAGE = 2,
        EXIT_CONFIG = 3,
        EXIT_ONLINE = 4, /* --check-config --online: the configuration is valid, Visier said no */
};

static void help(void) {
        printf("Usage: visierd [OPTIONS]\n"
               "Hold Visier API credentials, keep the security token fresh and serve Visier's API on localhost.\n\n"
               "  -c, --config=PATH    configuration file (default %s)\n"
               "  -n, --check-config   check the configuration and the secret files, then exit\n"
               "      --online         with --check-config: also log in to Visier and read one endpoint\n"
               "      --dev            run against a throwaway visier-sim with random credentials\n"
               "  -h, --help           show this help\n"
               "      --version        show the version\n",
               CONFIG_DEFAULT_PATH);
}

static int load_config(const char *path, Config **ret) {
        ConfigErrors errors = {};
        Config *c = NULL;
        int r;

        r = config_load_all(path, &c, &errors);
        for (size_t i = 0; i < errors.n; i++)
                fprintf(stderr, "%s\n", errors.messages[i]);
        if (errors.truncated)
                fprintf(stderr, "%s: more errors not shown\n", path);
        config_errors_clear(&errors);
        if (r < 0)
                return r;
        *ret = c;
        return 0;
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_DEV, ARG_ONLINE };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, 'n' },
                { "online", no_argument, NULL, ARG_ONLINE },
                { "dev", no_argument, NULL, ARG_DEV },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        _cleanup_(manager_freep) Manager *m = NULL;
        const char *config_path = CONFIG_DEFAULT_PATH;
        bool check_only = false, dev = false, online = false;
        Dev d = { .sim = -1 };
        Config *config = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:nh", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case 'n':
                        check_only = true;
                        break;
                case ARG_DEV:
                        dev = true;
                        break;
                case ARG_ONLINE:
                        online = true;
                        break;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("visierd %s\n", PACKAGE_VERSION);
                        return EXIT_SUCCESS;
                default:
                        return EXIT_USAGE;
                }
        }
        if (online && !check_only) {
                fprintf(stderr, "visierd: --online goes with --check-config\n");
                return EXIT_USAGE;
        }
        if (optind < argc) {
                fprintf(stderr, "visierd: unexpected argument '%s' (secrets are never taken on the command line)\n",
                        argv[optind]);
                return EXIT_USAGE;
        }

        /* Before any secret is read: no core dump of this process, and no ptrace (gcore) by
         * its own user either — it holds the API key and the password. */
        if (prctl(PR_SET_DUMPABLE, 0) < 0)
                fprintf(stderr, "visierd: cannot make the process non-dumpable: %m\n");
        (void) setrlimit(RLIMIT_CORE, &(struct rlimit) { 0, 0 });
        log_setup();
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                fprintf(stderr, "visierd: cannot initialise libcurl\n");
                return EXIT_FAILURE;
        }

        if (dev) {
                r = dev_start(&d, &config);
                if (r < 0) {
                        dev_stop(&d);
                        return EXIT_FAILURE;
                }
        } else {
                r = load_config(config_path, &config);
                if (r < 0)
                        return EXIT_CONFIG;
        }
        log_set_json(streq(config->log_format, "json"));
        if (check_only) {
                _cleanup_(exports_freep) Exports *exports = NULL;
                char **errors = NULL;
                size_t n = 0;

                r = exports_load(config->exports_dir, &exports, &errors, &n);
                for (size_t i = 0; i < n; i++)
                        fprintf(stderr, "export definition: %s\n", errors[i]);
                exports_errors_free(errors, n);
                if (r < 0) {
                        config_free(config);
                        dev_stop(&d);
                        return EXIT_CONFIG;
                }
                printf("configuration OK\n");
                if (online) {
                        char msg[1024];

                        r = manager_check_online(config, msg, sizeof(msg));
                        fprintf(r < 0 ? stderr : stdout, "%s: %s\n", r < 0 ? "online check failed" : "online check OK",
                                msg);
                        config_free(config);
                        dev_stop(&d);
                        return r < 0 ? EXIT_ONLINE : EXIT_SUCCESS;
                }
                config_free(config);
                dev_stop(&d);
                return EXIT_SUCCESS;
        }

        r = manager_new(config, &m);
        if (r < 0) {
                config_free(config);
                dev_stop(&d);
                return EXIT_FAILURE;
        }
        r = manager_start(m);
        if (r >= 0) {
                if (dev)
                        dev_print_welcome(&d, m->config, http_server_port(m->http));
                r = manager_run(m);
        }
        m = manager_free(m);
        dev_stop(&d);
        curl_global_cleanup();
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
