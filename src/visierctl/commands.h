/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierctl's commands, one function each, and the table that names them. A command talks
 * to visierd through the client, prints what it got (a table, or the raw JSON with --json)
 * and returns the exit status; it never calls exit().
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "client.h"
#include "clock.h"
#include "macro.h"

/* The documented exit statuses (visierctl(1), --help). */
typedef enum CtlExit {
        CTL_EXIT_OK = 0,
        CTL_EXIT_FAILED = 1,      /* a job failed or was cancelled; visierd refused (4xx) or failed (5xx); an export broke off */
        CTL_EXIT_USAGE = 2,       /* bad arguments, unusable token file */
        CTL_EXIT_UNREACHABLE = 3, /* connection refused, no such socket, transport error */
        CTL_EXIT_TIMEOUT = 4,     /* wait --timeout, submit --wait, or the HTTP timeout ran out */
        CTL_EXIT_NOT_READY = 5,   /* health: visierd is up but not ready */
} CtlExit;

/* Options a command may take after its name (bit mask in Command.options). */
enum {
        CTL_OPT_STATE = 1u << 0,
        CTL_OPT_LIMIT = 1u << 1,
        CTL_OPT_BEFORE = 1u << 2,
        CTL_OPT_OPERATION = 1u << 3,
        CTL_OPT_IDEMPOTENCY_KEY = 1u << 4,
        CTL_OPT_SUBMIT_WAIT = 1u << 5,
        CTL_OPT_WAIT_TIMEOUT = 1u << 6, /* --timeout after "wait" is the wait's deadline */
        CTL_OPT_FORMAT = 1u << 7,
        CTL_OPT_OUTPUT = 1u << 8,
        CTL_OPT_PARAM = 1u << 9,
        CTL_OPT_CLIENT = 1u << 10,
        CTL_OPT_SINCE = 1u << 11,
        CTL_OPT_WATCH = 1u << 12,
        CTL_OPT_SCREEN = 1u << 13, /* --interval and --count, of a live screen */
};

#define CTL_PARAMS_MAX 32 /* --param options (visierd takes no more parameters in one request) */

typedef struct CtlArgs {
        /* global */
        const char *url;
        const char *socket_path;
        const char *token_file;
        unsigned timeout_sec; /* HTTP request timeout; 0 for the default */
        bool json;
        /* the command's */
        const char *state;
        unsigned limit;      /* 0: visierd's default */
        unsigned long long before; /* 0: none */
        const char *operation;
        const char *idempotency_key;
        long submit_wait;   /* -1: none */
        unsigned wait_timeout; /* 0: no deadline */
        const char *format;   /* export --format, or NULL for the definition's */
        const char *output;   /* export -o, or NULL for standard output */
        const char *params[CTL_PARAMS_MAX]; /* export --param NAME=VALUE */
        size_t n_params;
        const char *client;   /* jobs --client */
        const char *since;    /* jobs --since */
        bool watch;           /* jobs --watch */
        usec_t interval;      /* --interval of a live screen; 0 for the default */
        unsigned count;       /* --count frames of a live screen; 0: until stopped */
        char **args;        /* positional arguments after the command name */
        size_t n_args;
} CtlArgs;

typedef struct Ctl {
        Client *client;
        const CtlArgs *args;
} Ctl;

typedef struct Command {
        const char *name;
        int (*run)(Ctl *ctl);
        size_t min_args, max_args;
        unsigned options;
        const char *synopsis;
} Command;

const Command *commands_find(const char *name);
/* The command table, terminated by an entry with name NULL. */
extern const Command commands[];
