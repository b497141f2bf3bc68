/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Text tables and JSON printing for visierctl (see output.h). Widths count UTF-8 characters,
 * not bytes, so names with accents stay aligned. Cells come from the network: control
 * characters are replaced so that an answer cannot move the cursor or rewrite the terminal.
 */
#include <unistd.h>

#include "output.h"

struct Table {
        size_t ncolumns;
        bool header;
        char **cells; /* row-major, ncolumns per row; row 0 is the header if any */
        size_t nrows;
};

Table *table_new(size_t ncolumns, const char *const *headers) {
        Table *t;

        if (ncolumns == 0 || ncolumns > OUTPUT_TABLE_COLUMNS_MAX)
                return NULL;
        t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->ncolumns = ncolumns;
        if (headers) {
                if (table_add_row(t, headers) < 0)
                        return table_free(t);
                t->header = true;
        }
        return t;
}

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->nrows * t->ncolumns; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}

/* A printable copy of s: control characters become '?', and it is cut at OUTPUT_CELL_MAX. */
static char *table_cell_dup(const char *s) {
        size_t n = strlen(s), cut = n > OUTPUT_CELL_MAX ? OUTPUT_CELL_MAX : n;
        char *c = malloc(cut + 4);

        if (!c)
                return NULL;
        /* Do not cut a UTF-8 sequence in half. */
        while (cut < n && cut > 0 && ((unsigned char) s[cut] & 0xc0) == 0x80)
                cut--;
        for (size_t i = 0; i < cut; i++) {
                unsigned char ch = (unsigned char) s[i];
                c[i] = ch < 0x20 || ch == 0x7f ? '?' : (char) ch;
        }
        if (cut < n)
                memcpy(c + cut, "...", 4);
        else
                c[cut] = '\0';
        return c;
}

int table_add_row(Table *t, const char *const *cells) {
        char **more = reallocarray(t->cells, (t->nrows + 1) * t->ncolumns, sizeof(char *));
        char **row;

        if (!more)
                return -ENOMEM;
        t->cells = more;
        row = t->cells + t->nrows * t->ncolumns;
        for (size_t i = 0; i < t->ncolumns; i++) {
                row[i] = table_cell_dup(cells[i] ? cells[i] : "-");
                if (!row[i]) {
                        while (i > 0)
                                free(row[--i]);
                        return -ENOMEM;
                }
        }
        t->nrows++;
        return 0;
}

/* Display width: UTF-8 continuation bytes do not count. */
static size_t output_width(const char *s) {
        size_t w = 0;

        for (; *s; s++)
                w += ((unsigned char) *s & 0xc0) != 0x80;
        return w;
}

void table_print(const Table *t, FILE *f) {
        size_t width[OUTPUT_TABLE_COLUMNS_MAX] = {};

        for (size_t r = 0; r < t->nrows; r++)
                for (size_t c = 0; c < t->ncolumns; c++) {
                        size_t w = output_width(t->cells[r * t->ncolumns + c]);
                        if (w > width[c])
                                width[c] = w;
                }
        for (size_t r = 0; r < t->nrows; r++) {
                for (size_t c = 0; c < t->ncolumns; c++) {
                        const char *cell = t->cells[r * t->ncolumns + c];

                        fputs(cell, f);
                        if (c + 1 < t->ncolumns)
                                fprintf(f, "%*s", (int) (width[c] - output_width(cell) + 2), "");
                }
                fputc('\n', f);
        }
}

void output_json(FILE *f, const json_t *j) {
        size_t flags = isatty(fileno(f)) ? JSON_INDENT(2) : JSON_COMPACT;

        if (!j)
                j = json_null();
        json_dumpf(j, f, flags | JSON_ENCODE_ANY);
        fputc('\n', f);
}

void output_error(const char *fmt, ...) {
        va_list ap;

        fflush(stdout);
        fputs("visierctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}
