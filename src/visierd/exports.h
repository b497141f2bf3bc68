/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named exports: definitions kept as files NAME.json in a directory (default
 * /etc/visierd/exports.d), each one Visier data query (aggregate, list, sql or snapshot) with
 * a default format and the parameters a caller may set. This module loads and validates the
 * definitions and builds the query body for a run; it does no I/O beyond reading the
 * directory and never logs.
 *
 * A definition:
 *   {
 *     "description": "Headcount by location",
 *     "query": "aggregate",                 (aggregate | list | sql | snapshot)
 *     "format": "csv",                      (csv | jsonl | json)
 *     "body": { ...Visier's query body... },
 *     "parameters": {
 *       "from": { "path": "/timeIntervals/fromDateTime", "default": "2024-01-01",
 *                 "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": "..." }
 *     }
 *   }
 * A parameter's "path" is a JSON pointer (RFC 6901) into "body" that must exist; the caller's
 * value (or the default) replaces the string found there. "pattern" is a POSIX extended
 * regular expression the value must match (default: no control characters, 1 to 256 bytes).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define EXPORTS_MAX 256
#define EXPORT_NAME_MAX 64
#define EXPORT_PARAMS_MAX 32
#define EXPORT_VALUE_MAX 256
#define EXPORT_ERROR_MAX 512

typedef enum ExportFormat {
        EXPORT_CSV,
        EXPORT_JSONL,
        EXPORT_JSON,
        _EXPORT_FORMAT_MAX,
        _EXPORT_FORMAT_INVALID = -1,
} ExportFormat;

const char *export_format_to_string(ExportFormat f);      /* "csv" */
ExportFormat export_format_from_string(const char *s);
const char *export_format_media_type(ExportFormat f);     /* "text/csv" */
ExportFormat export_format_from_accept(const char *accept); /* _INVALID if none matches */

typedef struct Export {
        char *name;
        char *description;
        char *query; /* aggregate, list, sql, snapshot */
        ExportFormat format;
        json_t *definition; /* the whole file, for body and parameters */
} Export;

typedef struct Exports {
        Export items[EXPORTS_MAX];
        size_t n;
} Exports;

/* Load every *.json in dir (a missing directory is no exports). Problems go to errors
 * (each naming the file and the member), -EINVAL if there was any. */
int exports_load(const char *dir, Exports **ret, char ***ret_errors, size_t *ret_n_errors);
Exports *exports_free(Exports *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(Exports *, exports_free);
void exports_errors_free(char **errors, size_t n);

const Export *exports_find(const Exports *e, const char *name);
/* Check one definition (already parsed); err names the member at fault. */
int export_validate(const char *name, json_t *def, char *err, size_t errlen);

/* The list for GET /exports. */
json_t *exports_describe(const Exports *e);

typedef struct ExportParam {
        const char *name, *value;
} ExportParam;

/*
 * The query body for a run with the caller's parameters (defaults for the rest). -EINVAL with
 * err naming the parameter when one is unknown or its value does not match; *ret is owned by
 * the caller.
 */
int export_build_body(const Export *x, const ExportParam *params, size_t n, json_t **ret, char *err, size_t errlen);

/* JSON pointer lookup (RFC 6901); NULL if the path does not exist. */
json_t *json_pointer_get(json_t *root, const char *pointer);
