/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The four data queries (aggregate, list, SQL-like, snapshot): a request body is checked
 * against the seeded model and turned into a QueryStream that writes the answer, in JSON,
 * JSON lines or CSV, a chunk at a time in constant memory. Knows nothing of HTTP. Never logs.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Longest message a rejected query gets. */
#define QUERY_ERROR_MAX 256
/* Most columns of a list, SQL-like or snapshot query. */
#define QUERY_COLUMNS_MAX 64
/* Most filters, axes, metrics and time intervals of one query. */
#define QUERY_FILTERS_MAX 16
#define QUERY_AXES_MAX 8
#define QUERY_METRICS_MAX 8
#define QUERY_INTERVALS_MAX 240
/* Most cells (axis positions times intervals) of an aggregate answer. */
#define QUERY_CELLS_MAX 100000
/* Most records an aggregate scans, whatever query_rows says (aggregates are computed up front). */
#define QUERY_AGGREGATE_ROWS_MAX UINT64_C(1000000)
/* The stream refills its buffer in chunks of about this size; one record may exceed it. */
#define QUERY_CHUNK 65536
/* Hard cap of the stream's buffer. */
#define QUERY_BUFFER_MAX (1024 * 1024)

typedef enum QueryKind {
        QUERY_AGGREGATE,
        QUERY_LIST,
        QUERY_SQL,
        QUERY_SNAPSHOT,
        _QUERY_KIND_MAX,
        _QUERY_KIND_INVALID = -EINVAL,
} QueryKind;

typedef enum QueryFormat {
        QUERY_FORMAT_JSON,
        QUERY_FORMAT_JSONLINES,
        QUERY_FORMAT_CSV,
        _QUERY_FORMAT_MAX,
        _QUERY_FORMAT_INVALID = -EINVAL,
} QueryFormat;

/* "aggregate", "list", "sql", "snapshot": the last path segment. */
const char *query_kind_to_string(QueryKind k);
QueryKind query_kind_from_string(const char *s);

/* The Content-Type of an answer in F. */
const char *query_format_to_content_type(QueryFormat f);

/*
 * Pick the answer format from an Accept header: absent or empty, application/json, * / *
 * and application/ * give JSON; application/jsonlines or application/x-ndjson JSON lines;
 * text/csv or text/ * CSV. The first acceptable media range wins (q=0 ranges are skipped).
 * _QUERY_FORMAT_INVALID when none is acceptable.
 */
QueryFormat query_format_from_accept(const char *accept);

typedef struct QueryStream QueryStream;

/*
 * Check BODY (LEN bytes of JSON) as a KIND request and prepare its answer in FORMAT over a
 * population of ROWS records. -EINVAL with a message in ERR for a request Visier would answer
 * 400; -ENOMEM. Aggregates are computed here; lists are produced while reading.
 */
int query_stream_new(QueryKind kind, QueryFormat format, const char *body, size_t len, uint64_t rows,
                     char *err, size_t err_size, QueryStream **ret);

/* Copy up to MAX bytes of the answer into BUF. 0 at its end, -ENOBUFS if a record is too big. */
ssize_t query_stream_read(QueryStream *s, char *buf, size_t max);

/* Accepts NULL; returns NULL. */
QueryStream *query_stream_free(QueryStream *s);
