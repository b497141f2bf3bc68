/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Command-line parsing for visierctl (see options.h). Two passes: global options up to the
 * command name, then the command's arguments with the global options and the command's own
 * allowed anywhere among them. `--timeout` after `wait` is the wait's deadline; anywhere
 * else it is the HTTP timeout.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>

#include "macro.h"
#include "options.h"
#include "screen.h"

#define OPTIONS_TIMEOUT_MAX 86400u
#define OPTIONS_LIMIT_MAX 500u

enum {
        ARG_URL = 0x100,
        ARG_SOCKET,
        ARG_TOKEN_FILE,
        ARG_JSON,
        ARG_TIMEOUT,
        ARG_VERSION,
        ARG_STATE,
        ARG_LIMIT,
        ARG_BEFORE,
        ARG_OPERATION,
        ARG_IDEMPOTENCY_KEY,
        ARG_WAIT,
        ARG_FORMAT,
        ARG_PARAM,
        ARG_CLIENT,
        ARG_SINCE,
        ARG_WATCH,
        ARG_INTERVAL,
        ARG_COUNT,
};

static const struct option options_all[] = {
        { "url", required_argument, NULL, ARG_URL },
        { "socket", required_argument, NULL, ARG_SOCKET },
        { "token-file", required_argument, NULL, ARG_TOKEN_FILE },
        { "json", no_argument, NULL, ARG_JSON },
        { "timeout", required_argument, NULL, ARG_TIMEOUT },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION },
        { "state", required_argument, NULL, ARG_STATE },
        { "limit", required_argument, NULL, ARG_LIMIT },
        { "before", required_argument, NULL, ARG_BEFORE },
        { "operation", required_argument, NULL, ARG_OPERATION },
        { "idempotency-key", required_argument, NULL, ARG_IDEMPOTENCY_KEY },
        { "wait", required_argument, NULL, ARG_WAIT },
        { "format", required_argument, NULL, ARG_FORMAT },
        { "output", required_argument, NULL, 'o' },
        { "param", required_argument, NULL, ARG_PARAM },
        { "client", required_argument, NULL, ARG_CLIENT },
        { "since", required_argument, NULL, ARG_SINCE },
        { "watch", no_argument, NULL, ARG_WATCH },
        { "interval", required_argument, NULL, ARG_INTERVAL },
        { "count", required_argument, NULL, ARG_COUNT },
        {},
};

void options_help(FILE *f) {
        fputs("Usage: visierctl [OPTIONS] COMMAND [ARGS]\n"
              "\n"
              "Ask visierd, the local gateway to Visier's API, about its health and permission jobs,\n"
              "and run its named data exports.\n"
              "\n"
              "Commands:\n",
              f);
        for (const Command *c = commands; c->name; c++)
                fprintf(f, "  %s\n", c->synopsis);
        fputs("\n"
              "Options (before or after the command):\n"
              "  --url URL          visierd's local API ($VISIERCTL_URL; default " CLIENT_DEFAULT_SOCKET "\n"
              "                     when it exists, else " CLIENT_DEFAULT_URL ")\n"
              "  --socket PATH      talk to visierd over this unix socket ($VISIERCTL_SOCKET)\n"
              "  --token-file FILE  send the bearer token in FILE, which must be private ($VISIERCTL_TOKEN_FILE)\n"
              "  --json             print visierd's JSON answer instead of tables\n"
              "  --timeout SECONDS  HTTP request timeout (default 30); after 'wait', the wait's deadline;\n"
              "                     for 'export', how long the transfer may stall\n"
              "  -h, --help         show this help\n"
              "  --version          show the version\n"
              "\n"
              "Exit status:\n"
              "  0  success\n"
              "  1  a job failed or was cancelled, visierd refused (4xx) or failed (5xx) the request,\n"
              "     or an export broke off\n"
              "  2  usage error (or an unusable token file)\n"
              "  3  visierd unreachable (connection refused, no such socket, transport error)\n"
              "  4  timed out (wait --timeout, submit --wait, the HTTP timeout, or an export stalled)\n"
              "  5  visierd is not ready (health)\n"
              "\n"
              "See visierctl(1).\n",
              f);
}

_printf_(3, 4) static int options_error(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static int options_uint(const char *name, const char *s, unsigned long long lo, unsigned long long hi,
                        unsigned long long *ret, char *err, size_t errlen) {
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (!*s || *s == '-' || *s == '+' || *end || errno != 0 || v < lo || v > hi)
                return options_error(err, errlen, "%s must be a whole number from %llu to %llu, not '%s'", name, lo, hi,
                                     s);
        *ret = v;
        return 0;
}

/* Which command option an ARG_* is, for the check that the command takes it. */
static unsigned options_mask(int c, const Command *cmd) {
        switch (c) {
        case ARG_STATE:
                return CTL_OPT_STATE;
        case ARG_LIMIT:
                return CTL_OPT_LIMIT;
        case ARG_BEFORE:
                return CTL_OPT_BEFORE;
        case ARG_OPERATION:
                return CTL_OPT_OPERATION;
        case ARG_IDEMPOTENCY_KEY:
                return CTL_OPT_IDEMPOTENCY_KEY;
        case ARG_WAIT:
                return CTL_OPT_SUBMIT_WAIT;
        case ARG_FORMAT:
                return CTL_OPT_FORMAT;
        case 'o':
                return CTL_OPT_OUTPUT;
        case ARG_PARAM:
                return CTL_OPT_PARAM;
        case ARG_CLIENT:
                return CTL_OPT_CLIENT;
        case ARG_SINCE:
                return CTL_OPT_SINCE;
        case ARG_WATCH:
                return CTL_OPT_WATCH;
        case ARG_INTERVAL:
        case ARG_COUNT:
                return CTL_OPT_SCREEN;
        case ARG_TIMEOUT:
                return cmd && (cmd->options & CTL_OPT_WAIT_TIMEOUT) ? CTL_OPT_WAIT_TIMEOUT : 0;
        default:
                return 0;
        }
}

static const char *options_name(int c) {
        for (const struct option *o = options_all; o->name; o++)
                if (o->val == c)
                        return o->name;
        return "?";
}

/* One option; cmd is NULL before the command name. */
static int options_one(int c, const Command *cmd, CtlArgs *a, char *err, size_t errlen) {
        unsigned mask = options_mask(c, cmd);
        unsigned long long v;
        int r;

        if (mask && !cmd)
                return options_error(err, errlen, "--%s goes after the command name", options_name(c));
        if (mask && !(cmd->options & mask))
                return options_error(err, errlen, "%s does not take --%s (usage: visierctl %s)", cmd->name,
                                     options_name(c), cmd->synopsis);
        switch (c) {
        case ARG_URL:
                a->url = optarg;
                return 0;
        case ARG_SOCKET:
                a->socket_path = optarg;
                return 0;
        case ARG_TOKEN_FILE:
                a->token_file = optarg;
                return 0;
        case ARG_JSON:
                a->json = true;
                return 0;
        case ARG_TIMEOUT:
                r = options_uint("--timeout", optarg, 1, OPTIONS_TIMEOUT_MAX, &v, err, errlen);
                if (r < 0)
                        return r;
                if (mask == CTL_OPT_WAIT_TIMEOUT)
                        a->wait_timeout = (unsigned) v;
                else
                        a->timeout_sec = (unsigned) v;
                return 0;
        case ARG_STATE:
                a->state = optarg;
                return 0;
        case ARG_LIMIT:
                r = options_uint("--limit", optarg, 1, OPTIONS_LIMIT_MAX, &v, err, errlen);
                a->limit = (unsigned) v;
                return r;
        case ARG_BEFORE:
                r = options_uint("--before", optarg, 1, UINT64_MAX, &v, err, errlen);
                a->before = v;
                return r;
        case ARG_OPERATION:
                a->operation = optarg;
                return 0;
        case ARG_IDEMPOTENCY_KEY:
                a->idempotency_key = optarg;
                return 0;
        case ARG_WAIT:
                r = options_uint("--wait", optarg, 1, OPTIONS_TIMEOUT_MAX, &v, err, errlen);
                a->submit_wait = (long) v;
                return r;
        case ARG_FORMAT:
                if (!streq(optarg, "csv") && !streq(optarg, "jsonl") && !streq(optarg, "json"))
                        return options_error(err, errlen, "--format must be csv, jsonl or json, not '%s'", optarg);
                a->format = optarg;
                return 0;
        case 'o':
                if (!*optarg)
                        return options_error(err, errlen, "-o needs a file name (or - for standard output)");
                a->output = optarg;
                return 0;
        case ARG_PARAM:
                if (optarg[0] == '=' || !strchr(optarg, '='))
                        return options_error(err, errlen, "--param takes NAME=VALUE, not '%s'", optarg);
                if (a->n_params >= CTL_PARAMS_MAX)
                        return options_error(err, errlen, "at most %d --param options", CTL_PARAMS_MAX);
                a->params[a->n_params++] = optarg;
                return 0;
        case ARG_CLIENT:
                if (!*optarg)
                        return options_error(err, errlen, "--client needs a client's name (or address, as tcp:127.0.0.1)");
                a->client = optarg;
                return 0;
        case ARG_SINCE:
                if (!*optarg)
                        return options_error(err, errlen, "--since needs a time");
                a->since = optarg;
                return 0;
        case ARG_WATCH:
                a->watch = true;
                return 0;
        case ARG_INTERVAL:
                if (screen_parse_interval(optarg, &a->interval) < 0)
                        return options_error(err, errlen, "--interval must be seconds from 0.1 to 3600 (as 2 or 0.5), not '%s'",
                                             optarg);
                return 0;
        case ARG_COUNT:
                r = options_uint("--count", optarg, 1, SCREEN_COUNT_MAX, &v, err, errlen);
                a->count = (unsigned) v;
                return r;
        default:
                return options_error(err, errlen, "unknown option");
        }
}

int options_parse(int argc, char **argv, CtlArgs *ret, const Command **ret_command, char *err, size_t errlen) {
        CtlArgs a = { .submit_wait = -1 };
        const Command *cmd = NULL;
        int c, r;

        opterr = 0;
        /* Pass 1: global options, up to the command name. */
        optind = 0;
        while ((c = getopt_long(argc, argv, "+ho:", options_all, NULL)) >= 0) {
                if (c == 'h' || c == ARG_VERSION)
                        goto done;
                if (c == '?')
                        return options_error(err, errlen, "unknown option or missing argument: %s", argv[optind - 1]);
                r = options_one(c, NULL, &a, err, errlen);
                if (r < 0)
                        return r;
        }
        if (optind >= argc)
                return options_error(err, errlen, "no command given");
        cmd = commands_find(argv[optind]);
        if (!cmd)
                return options_error(err, errlen, "unknown command '%s'", argv[optind]);

        /* Pass 2: the command's arguments and options, in any order ("--" ends options). */
        argc -= optind;
        argv += optind;
        optind = 0;
        while ((c = getopt_long(argc, argv, "ho:", options_all, NULL)) >= 0) {
                if (c == 'h' || c == ARG_VERSION)
                        goto done;
                if (c == '?')
                        return options_error(err, errlen, "unknown option or missing argument: %s", argv[optind - 1]);
                r = options_one(c, cmd, &a, err, errlen);
                if (r < 0)
                        return r;
        }
        a.args = argv + optind;
        a.n_args = (size_t) (argc - optind);
        if (a.n_args < cmd->min_args || a.n_args > cmd->max_args)
                return options_error(err, errlen, "usage: visierctl %s", cmd->synopsis);
        *ret = a;
        *ret_command = cmd;
        return OPTIONS_RUN;

done:
        if (c == 'h')
                options_help(stdout);
        else
                printf("visierctl %s\n", PACKAGE_VERSION);
        return OPTIONS_DONE;
}
