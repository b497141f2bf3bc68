/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The /ui page's files: src/visierd/ui/index.html, ui.css and ui.js, built into the binary
 * (.incbin) so that visierd serves them with no file to install, each with its media type
 * and an ETag. They hold no secret and no data: the page reads visierd's own JSON routes.
 * Never logs.
 */
#pragma once

#include <stddef.h>

typedef struct UiAsset {
        const char *name;         /* "index.html", "ui.css", "ui.js" */
        const char *content_type;
        const unsigned char *data;
        size_t size;
        const char *etag;         /* a strong validator: "\"<version>-<hash of the bytes>\"" */
} UiAsset;

/* The asset of that name (the part after "/ui/"), or NULL. Thread-safe. */
const UiAsset *ui_asset_find(const char *name);

/* The headers every /ui answer carries: a Content-Security-Policy that allows only the page's
 * own files and fetches to its own origin (no inline script or style, no frame, no form), and
 * no sniffing, no referrer, no embedding by other sites. */
#define UI_CONTENT_SECURITY_POLICY                                                                             \
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " \
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'"
