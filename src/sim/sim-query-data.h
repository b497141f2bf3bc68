/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated tenant's records for the data queries: rows of every seeded analytic object
 * computed from the row index alone (a splitmix64 hash), so any row can be produced at any
 * time in constant memory and equal requests give equal bytes. Also the metric table and the
 * lookups a query plan needs (objects, properties, dimensions, members, levels). Pure: no
 * state, no allocation, no logging.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most members a seeded dimension has, and most dimensions (checked by qdata_check()). */
#define QDATA_MEMBERS_MAX 32
#define QDATA_DIMENSIONS_MAX 16
/* Longest formatted value of a generated property. */
#define QDATA_VALUE_MAX 128
/* The data covers 2018-01-01 (inclusive) to 2026-01-01 (exclusive), in days since 1970-01-01. */
#define QDATA_DAY_FIRST INT64_C(17532)
#define QDATA_DAY_END INT64_C(20454)

typedef enum QDataMetricKind {
        QDATA_METRIC_HEADCOUNT,         /* subjects valid at the end of the interval */
        QDATA_METRIC_EVENTS,            /* events (or applications) dated inside the interval */
        QDATA_METRIC_RESIGNATION_RATE,  /* voluntary exits in the interval / headcount at its end */
        _QDATA_METRIC_KIND_MAX,
        _QDATA_METRIC_KIND_INVALID = -1,
} QDataMetricKind;

typedef struct QDataMetric {
        const char *id, *display, *object;
        QDataMetricKind kind;
} QDataMetric;

extern const QDataMetric qdata_metrics[];
extern const size_t qdata_metrics_n;

/* 0 when the seed tables fit this module (limits above, one value rule per property), else <0. */
int qdata_check(void);

/* Index into seed_objects / seed_properties / seed_dimensions / qdata_metrics, or -ENOENT. */
int qdata_object(const char *id);
int qdata_metric(const char *id);
/* FULL_ID is "Object.Name". -ENOENT when unknown, -ENXIO when it belongs to another object. */
int qdata_property(size_t object, const char *full_id);
/* -ENOENT when unknown, -ENXIO when OBJECT is not analysed by it. */
int qdata_dimension(size_t object, const char *id);
/* Member index of the "/"-joined PATH in dimension DIM, or -ENOENT. */
int qdata_member(size_t dim, const char *path);
size_t qdata_members_n(size_t dim);
const char *qdata_member_path(size_t dim, size_t member);
unsigned qdata_member_depth(size_t dim, size_t member);
bool qdata_member_is_leaf(size_t dim, size_t member);
/* True when ANCESTOR is MEMBER or one of its ancestors. */
bool qdata_member_under(size_t dim, size_t member, size_t ancestor);
/* The level depth (1-based) named by ID ("Location.Country" or "Country"), or -ENOENT. */
int qdata_level(size_t dim, const char *id);
unsigned qdata_levels_n(size_t dim);

/* The leaf members of DIM, in member order, into RET (at most MAX); returns how many. */
size_t qdata_leaves(size_t dim, size_t *ret, size_t max);
/* Which of the N_LEAVES leaves of DIM record ROW of OBJECT is mapped to (an index into them). */
size_t qdata_leaf_pick(size_t object, size_t dim, uint64_t row, size_t n_leaves);

/*
 * Write property PROP of record ROW of OBJECT (the property's own object) into BUF (at least QDATA_VALUE_MAX bytes). Dates are epoch
 * milliseconds, or "yyyy-MM-dd HH:mm:ss+0000" with DATETIME. Properties without data give "".
 */
void qdata_value(size_t object, size_t prop, uint64_t row, bool datetime, char *buf, size_t size);

/* The day a record is dated: a subject's start (or open or application) day, an event's date. */
int64_t qdata_day(size_t object, uint64_t row);
/* Whether employee ROW left; when so, the day it left and whether it resigned. */
bool qdata_employee_exit(uint64_t row, int64_t *ret_day, bool *ret_voluntary);

/* Calendar helpers (proleptic Gregorian, UTC). */
int64_t qdata_days_from_civil(int64_t y, unsigned m, unsigned d);
void qdata_civil_from_days(int64_t z, int64_t *ret_y, unsigned *ret_m, unsigned *ret_d);
/* "2022-06-01T00:00:00.000Z" */
void qdata_format_iso(int64_t day, char *buf, size_t size);
/* Epoch milliseconds or "yyyy-MM-dd HH:mm:ss+0000". */
void qdata_format_date(int64_t day, bool datetime, char *buf, size_t size);
