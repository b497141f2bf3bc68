/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierctl: the command-line client of visierd. Parses the command line, opens the client
 * (reading the token file), runs one command and returns its exit status. Everything else
 * lives in options.c, client.c, commands.c and output.c.
 */
#include <curl/curl.h>
#include <stdlib.h>
#include <unistd.h>

#include "client.h"
#include "commands.h"
#include "options.h"
#include "output.h"

static const char *getenv_nonempty(const char *name) {
        const char *v = getenv(name);

        return v && *v ? v : NULL;
}

int main(int argc, char **argv) {
        char err[CLIENT_ERROR_MAX] = "";
        const Command *cmd = NULL;
        Client *client = NULL;
        CtlArgs args;
        int r;

        r = options_parse(argc, argv, &args, &cmd, err, sizeof(err));
        if (r < 0) {
                output_error("%s", err);
                fputs("Try 'visierctl --help'.\n", stderr);
                return CTL_EXIT_USAGE;
        }
        if (r == OPTIONS_DONE)
                return CTL_EXIT_OK;

        /* Options first, then the environment, then visierd's own socket when it is there
         * (the unit's RuntimeDirectory), then its default TCP address. */
        if (!args.url && !args.socket_path) {
                args.url = getenv_nonempty("VISIERCTL_URL");
                args.socket_path = getenv_nonempty("VISIERCTL_SOCKET");
                if (!args.url && !args.socket_path && access(CLIENT_DEFAULT_SOCKET, W_OK) == 0)
                        args.socket_path = CLIENT_DEFAULT_SOCKET;
        }
        if (!args.token_file)
                args.token_file = getenv_nonempty("VISIERCTL_TOKEN_FILE");

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                output_error("cannot initialise libcurl");
                return CTL_EXIT_FAILED;
        }
        r = client_new(&(ClientConfig) { .url = args.url,
                                         .socket_path = args.socket_path,
                                         .token_file = args.token_file,
                                         .timeout_sec = args.timeout_sec },
                       &client, err, sizeof(err));
        if (r < 0) {
                output_error("%s", r == -ENOMEM ? "out of memory" : err);
                r = r == -ENOMEM ? CTL_EXIT_FAILED : CTL_EXIT_USAGE;
        } else {
                r = cmd->run(&(Ctl) { .client = client, .args = &args });
                client_free(client);
        }
        curl_global_cleanup();
        if (fflush(stdout) != 0 && r == CTL_EXIT_OK) {
                output_error("cannot write the output: %s", strerror(errno));
                r = CTL_EXIT_FAILED;
        }
        return r;
}
