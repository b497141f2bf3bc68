/* SPDX-License-Identifier: Apache-2.0 */
/*
 * visierctl's output: aligned text tables, JSON documents, and error lines on stderr. Knows
 * nothing of visierd's API; the commands decide what goes in a table.
 */
#pragma once

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "macro.h"

#define OUTPUT_TABLE_COLUMNS_MAX 8
#define OUTPUT_CELL_MAX 256 /* longer cells are cut, with "..." */

typedef struct Table Table;

/* headers: ncolumns column titles, or NULL for a table without a header line. */
Table *table_new(size_t ncolumns, const char *const *headers);
Table *table_free(Table *t);
/* Copy one row of ncolumns cells (NULL prints as "-"); -ENOMEM on failure. */
int table_add_row(Table *t, const char *const *cells);
/* Columns padded to their widest cell, two spaces apart; control characters shown as '?'. */
void table_print(const Table *t, FILE *f);

static inline void table_freep(Table **t) {
        table_free(*t);
}
#define _cleanup_table_ __attribute__((cleanup(table_freep)))

/* One JSON document and a newline: indented when f is a terminal, compact otherwise. */
void output_json(FILE *f, const json_t *j);

/* "visierctl: " and the message on stderr. */
_printf_(1, 2) void output_error(const char *fmt, ...);
