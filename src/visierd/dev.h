/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `visierd --dev`: a throwaway playground. Starts visier-sim on a free loopback port with
 * random credentials in a private temporary directory, and builds a configuration that points
 * visierd at it with a temporary job database. Everything is removed again at the end.
 */
#pragma once

#include <sys/types.h>

#include "config.h"

typedef struct Dev {
        char dir[64];
        pid_t sim;
        unsigned sim_port;
} Dev;

/* Start visier-sim and return a loaded configuration (secrets included). Prints problems to stderr. */
int dev_start(Dev *d, Config **ret);
/* Print the local URL and example commands for someone trying visierd out. */
void dev_print_welcome(const Dev *d, const Config *c, unsigned port);
/* Stop visier-sim and remove the temporary directory. */
void dev_stop(Dev *d);
