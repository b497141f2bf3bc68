/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secrets: the API key, the API user's password and the security token. A Secret is a byte
 * string that is wiped before it is freed, compared in constant time, and has no printer:
 * there is deliberately no function here that formats one into text for a human.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* The user the unit runs visierd as (systemd/visierd.sysusers): its files are accepted too. */
#define SECRET_SERVICE_USER "visierd"

/* Cap on a secret file's size: API keys, passwords and tokens are all far shorter. */
#define SECRET_FILE_MAX 4096

typedef struct Secret {
        char *data; /* NUL-terminated for the libraries that need C strings */
        size_t len;
} Secret;

Secret *secret_new(const char *data, size_t len);
Secret *secret_dup(const Secret *s);
Secret *secret_free(Secret *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Secret *, secret_free);

/* Constant-time equality (length is not hidden). NULLs are equal only to each other. */
bool secret_equal(const Secret *a, const Secret *b);

/*
 * Read a secret from a file. Refuses a symbolic link (-ELOOP), files that group or others can
 * access or that neither root nor the process's user owns (-EPERM), that are not regular files
 * (-EINVAL; a FIFO is refused at once, never waited on), empty (-ENODATA), larger than
 * SECRET_FILE_MAX (-EFBIG), or holding a control character once one trailing newline (and CR)
 * is stripped (-EINVAL). On failure, err (if given) gets a sentence that names the path and
 * the reason, never the contents.
 */
int secret_read_file(const char *path, Secret **ret, char *err, size_t errlen);
