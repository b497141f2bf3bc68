/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierctl's command line: global options (before or after the command), the command
 * name, its own options and its arguments. Parses only; never prints but for --help and
 * --version, and never exits.
 */
#pragma once

#include <stddef.h>
#include <stdio.h>

#include "commands.h"

typedef enum OptionsResult {
        OPTIONS_RUN = 0,  /* run *ret_command */
        OPTIONS_DONE = 1, /* --help or --version printed: exit 0 */
} OptionsResult;

/* Returns an OptionsResult, or -EINVAL with a message in err for a usage error. argv is
 * permuted (as getopt does) and must outlive ret. */
int options_parse(int argc, char **argv, CtlArgs *ret, const Command **ret_command, char *err, size_t errlen);
void options_help(FILE *f);
