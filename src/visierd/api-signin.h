/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local sign-in: POST /v1/admin/visierSecureToken and POST /v1/auth/oauth2/token answered by
 * visierd itself, with a local session (session.h), so that clients written for Visier start
 * unchanged. Neither call reaches Visier; visierd's own credentials play no part.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "manager.h"

struct MHD_Response *api_signin_asid(Manager *m, HttpRequest *req, unsigned *ret_status);
struct MHD_Response *api_signin_oauth2(Manager *m, HttpRequest *req, unsigned *ret_status);

/*
 * The credential a request carries: its Authorization: Bearer token, else its VisierASIDToken
 * cookie. NULL when it has neither; otherwise a string the caller frees (with free_credential,
 * which wipes it). *ret_bearer says which it was.
 */
char *api_request_credential(HttpRequest *req, bool *ret_bearer);
void free_credential(char *credential);
static inline void free_credentialp(char **p) {
        free_credential(*p);
}
