/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The /ui page's files, assembled into .rodata from the source tree at build time (the
 * assembler's .incbin: no generator, no copy of the files in C). UI_ASSET_DIR is set by
 * src/visierd/local.mk, which also makes this object depend on the files.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "ui.h"

#ifndef UI_ASSET_DIR
#error "UI_ASSET_DIR must name the directory of the /ui files"
#endif

/* SYM: the bytes of FILE; SYM_end: just past them. */
#define UI_INCBIN(sym, file)                                                  \
        __asm__(".pushsection .rodata\n"                                      \
                ".balign 16\n"                                                \
                ".globl " #sym "\n.hidden " #sym "\n"                         \
                #sym ":\n"                                                    \
                ".incbin \"" UI_ASSET_DIR "/" file "\"\n"                     \
                ".globl " #sym "_end\n.hidden " #sym "_end\n"                 \
                #sym "_end:\n"                                                \
                ".byte 0\n"                                                   \
                ".popsection\n");                                             \
        extern const unsigned char sym[], sym##_end[]

UI_INCBIN(visierd_ui_index_html, "index.html");
UI_INCBIN(visierd_ui_css, "ui.css");
UI_INCBIN(visierd_ui_js, "ui.js");

static char etags[3][48];
static UiAsset assets[3] = {
        { "index.html", "text/html; charset=utf-8" },
        { "ui.css", "text/css; charset=utf-8" },
        { "ui.js", "text/javascript; charset=utf-8" },
};
static pthread_once_t assets_once = PTHREAD_ONCE_INIT;

static void assets_init(void) {
        const unsigned char *start[3] = { visierd_ui_index_html, visierd_ui_css, visierd_ui_js };
        const unsigned char *end[3] = { visierd_ui_index_html_end, visierd_ui_css_end, visierd_ui_js_end };

        for (size_t i = 0; i < ELEMENTSOF(assets); i++) {
                uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */

                assets[i].data = start[i];
                assets[i].size = (size_t) (end[i] - start[i]);
                for (size_t k = 0; k < assets[i].size; k++)
                        h = (h ^ start[i][k]) * UINT64_C(0x100000001b3);
                snprintf(etags[i], sizeof(etags[i]), "\"%s-%016llx\"", PACKAGE_VERSION, (unsigned long long) h);
                assets[i].etag = etags[i];
        }
}

const UiAsset *ui_asset_find(const char *name) {
        (void) pthread_once(&assets_once, assets_init);
        for (size_t i = 0; i < ELEMENTSOF(assets); i++)
                if (streq(assets[i].name, name))
                        return &assets[i];
        return NULL;
}
