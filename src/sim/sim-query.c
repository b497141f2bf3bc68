/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the data queries. query_stream_new() reads a request DTO (or a SQL-like string), checks
 * every name against the seeded model and fills a plan; query_stream_read() then writes the
 * answer from the plan.
 *
 * DESIGN of the stream: the answer is head, records, tail. The plan keeps a cursor (the next
 * record to look at, how many were skipped for paging and how many were written) and a buffer
 * of about QUERY_CHUNK bytes that is refilled only when the reader has drained it, so memory
 * stays flat whatever query_rows is. List-like records are computed from their index by
 * sim-query-data.c; an aggregate scans at most QUERY_AGGREGATE_ROWS_MAX records once, up front,
 * into a bounded cell array, and its cells are then written like records. Supported subset:
 * sources analyticObject or metric; columns property, dimension, dimensionLevelSelection and
 * (snapshot) effectiveDateProperty; filters memberSet; axes dimensionMemberSelection,
 * dimensionLevelSelection and dimensionLeafMemberSelection; options limit, page, omitHeader,
 * dateTimeDisplayMode, memberDisplayMode. Anything else that would change an answer is refused
 * with a message naming it. Never logs.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "sim-model-data.h"
#include "sim-query-data.h"
#include "sim-query.h"
#include "sim-schema.h"

#define _cleanup_json_ _cleanup_(json_decrefp)
#define COLUMN_VALUE_MAX 256
#define NAME_MAX_LEN 256
#define SQL_ITEMS_MAX QUERY_COLUMNS_MAX

typedef enum ColumnKind {
        COLUMN_PROPERTY,
        COLUMN_DIMENSION,       /* the member's full name path */
        COLUMN_LEVEL,           /* the member at one level */
        COLUMN_EFFECTIVE_DATE,  /* the snapshot's date */
} ColumnKind;

typedef struct Column {
        char name[NAME_MAX_LEN + 1];
        ColumnKind kind;
        size_t prop, dim;
        unsigned depth;
        bool path_mode;         /* level columns: PATH instead of NAME */
} Column;

typedef struct Filter {
        size_t dim;             /* member filters */
        bool ok[QDATA_MEMBERS_MAX];     /* by member index: leaves that pass */
        bool is_property;       /* SQL-like WHERE on a property */
        size_t prop;
        char value[NAME_MAX_LEN + 1];
} Filter;

typedef enum DisplayMode {
        DISPLAY_DEFAULT,        /* name path joined with "." */
        DISPLAY_COMPACT,        /* last element; time intervals: their end */
        DISPLAY_MDX,            /* [a].[b] */
        _DISPLAY_MAX,
        _DISPLAY_INVALID = -EINVAL,
} DisplayMode;

typedef struct Axis {
        size_t dim;
        size_t positions[64];
        size_t n_positions;
        uint64_t mask[QDATA_MEMBERS_MAX];       /* by member index: positions holding that leaf */
        DisplayMode mode;
        char column[NAME_MAX_LEN + 1];
} Axis;

typedef enum State {
        STATE_HEAD,
        STATE_BODY,
        STATE_TAIL,
        STATE_DONE,
} State;

typedef struct Buf {
        char *data;
        size_t len, allocated;
} Buf;

struct QueryStream {
        QueryKind kind;
        QueryFormat format;
        size_t object;
        bool datetime, omit_header;
        size_t leaves[QDATA_DIMENSIONS_MAX][QDATA_MEMBERS_MAX];
        size_t n_leaves[QDATA_DIMENSIONS_MAX];

        Column columns[QUERY_COLUMNS_MAX];
        size_t n_columns;
        Filter filters[QUERY_FILTERS_MAX];
        size_t n_filters;

        /* list, SQL-like, snapshot */
        uint64_t population;            /* records looked at */
        uint64_t per_snapshot;          /* records per snapshot (= population for lists) */
        uint64_t skip, limit;           /* paging over the records that pass the filters */
        int64_t snapshot_day[QUERY_INTERVALS_MAX];

        /* aggregate and snapshot */
        int64_t start[QUERY_INTERVALS_MAX], end[QUERY_INTERVALS_MAX];
        size_t n_intervals;
        DisplayMode mode;
        size_t metrics[QUERY_METRICS_MAX];
        char metric_columns[QUERY_METRICS_MAX][NAME_MAX_LEN + 1];
        size_t n_metrics;
        Axis axes[QUERY_AXES_MAX];
        size_t n_axes;
        size_t n_cells;
        uint64_t *num, *den;            /* n_metrics * n_cells each */

        /* cursor */
        State state;
        uint64_t next, skipped, written;
        Buf out;
        size_t out_off;
};

typedef struct Err {
        char *buf;
        size_t size;
} Err;

_printf_(2, 3) static int fail(Err *e, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(e->buf, e->size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* ---- tables ---------------------------------------------------------------------------- */

static const char *const kind_table[_QUERY_KIND_MAX] = {
        [QUERY_AGGREGATE] = "aggregate",
        [QUERY_LIST] = "list",
        [QUERY_SQL] = "sql",
        [QUERY_SNAPSHOT] = "snapshot",
};

const char *query_kind_to_string(QueryKind k) {
        if (k < 0 || k >= _QUERY_KIND_MAX)
                return NULL;
        return kind_table[k];
}

QueryKind query_kind_from_string(const char *s) {
        for (size_t i = 0; s && i < ELEMENTSOF(kind_table); i++)
                if (streq(kind_table[i], s))
                        return (QueryKind) i;
        return _QUERY_KIND_INVALID;
}

static const char *const content_type_table[_QUERY_FORMAT_MAX] = {
        [QUERY_FORMAT_JSON] = "application/json",
        [QUERY_FORMAT_JSONLINES] = "application/jsonlines",
        [QUERY_FORMAT_CSV] = "text/csv",
};

const char *query_format_to_content_type(QueryFormat f) {
        if (f < 0 || f >= _QUERY_FORMAT_MAX)
                return NULL;
        return content_type_table[f];
}

static const struct {
        const char *range;
        QueryFormat format;
} accept_table[] = {
        { "application/json", QUERY_FORMAT_JSON },
        { "*/*", QUERY_FORMAT_JSON },
        { "application/*", QUERY_FORMAT_JSON },
        { "application/jsonlines", QUERY_FORMAT_JSONLINES },
        { "application/x-ndjson", QUERY_FORMAT_JSONLINES },
        { "application/x-jsonlines", QUERY_FORMAT_JSONLINES },
        { "text/csv", QUERY_FORMAT_CSV },
        { "text/*", QUERY_FORMAT_CSV },
};

/* Whether the parameters of one media range (after its ';') set q to zero. */
static bool accept_q_zero(const char *p, const char *end) {
        while (p && p < end) {
                while (p < end && (*p == ';' || *p == ' ' || *p == '\t'))
                        p++;
                if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
                        double q = strtod(p + 2, NULL);
                        return q <= 0.0;
                }
                p = memchr(p, ';', (size_t) (end - p));
        }
        return false;
}

QueryFormat query_format_from_accept(const char *accept) {
        const char *p = accept;

        if (!p || strspn(p, " \t") == strlen(p))
                return QUERY_FORMAT_JSON;
        while (*p) {
                const char *end = strchr(p, ','), *semi;
                size_t n;

                if (!end)
                        end = p + strlen(p);
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                semi = memchr(p, ';', (size_t) (end - p));
                n = (size_t) ((semi ? semi : end) - p);
                while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
                        n--;
                if (!accept_q_zero(semi, end))
                        for (size_t i = 0; i < ELEMENTSOF(accept_table); i++)
                                if (strlen(accept_table[i].range) == n && strncasecmp(accept_table[i].range, p, n) == 0)
                                        return accept_table[i].format;
                p = *end ? end + 1 : end;
        }
        return _QUERY_FORMAT_INVALID;
}

static const char *const display_table[_DISPLAY_MAX] = {
        [DISPLAY_DEFAULT] = "DEFAULT",
        [DISPLAY_COMPACT] = "COMPACT",
        [DISPLAY_MDX] = "MDX",
};

static DisplayMode display_from_string(const char *s) {
        if (streq(s, "DISPLAY") || streq(s, "COMPACT_DISPLAY"))
                return DISPLAY_COMPACT;
        for (size_t i = 0; i < ELEMENTSOF(display_table); i++)
                if (streq(display_table[i], s))
                        return (DisplayMode) i;
        return _DISPLAY_INVALID;
}

/* ---- output buffer --------------------------------------------------------------------- */

static int buf_reserve(Buf *b, size_t more) {
        size_t n;
        char *p;

        if (b->len + more <= b->allocated)
                return 0;
        if (more > QUERY_BUFFER_MAX - b->len)
                return -ENOBUFS;
        n = b->allocated ? b->allocated : QUERY_CHUNK * 2;
        while (n < b->len + more)
                n = n * 2 > QUERY_BUFFER_MAX ? QUERY_BUFFER_MAX : n * 2;
        p = realloc(b->data, n);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->allocated = n;
        return 0;
}

static int buf_put(Buf *b, const char *s, size_t n) {
        int r = buf_reserve(b, n);

        if (r < 0)
                return r;
        memcpy(b->data + b->len, s, n);
        b->len += n;
        return 0;
}

static int buf_puts(Buf *b, const char *s) {
        return buf_put(b, s, strlen(s));
}

_printf_(2, 3) static int buf_printf(Buf *b, const char *fmt, ...) {
        char tmp[128];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof(tmp))
                return -ENOBUFS;
        return buf_put(b, tmp, (size_t) n);
}

/* A JSON string literal; S is UTF-8 (request strings were checked by jansson, ours are ASCII). */
static int buf_json_string(Buf *b, const char *s) {
        int r = buf_put(b, "\"", 1);

        for (const char *p = s; r >= 0 && *p; p++) {
                unsigned char c = (unsigned char) *p;

                if (c == '"')
                        r = buf_put(b, "\\\"", 2);
                else if (c == '\\')
                        r = buf_put(b, "\\\\", 2);
                else if (c == '\n')
                        r = buf_put(b, "\\n", 2);
                else if (c == '\r')
                        r = buf_put(b, "\\r", 2);
                else if (c == '\t')
                        r = buf_put(b, "\\t", 2);
                else if (c < 0x20)
                        r = buf_printf(b, "\\u%04x", c);
                else
                        r = buf_put(b, p, 1);
        }
        return r < 0 ? r : buf_put(b, "\"", 1);
}

/* One RFC 4180 field: quoted when it holds a comma, a quote, CR or LF; quotes doubled. */
static int buf_csv_field(Buf *b, const char *s) {
        int r;

        if (!strpbrk(s, ",\"\r\n"))
                return buf_puts(b, s);
        r = buf_put(b, "\"", 1);
        for (const char *p = s; r >= 0 && *p; p++)
                r = *p == '"' ? buf_put(b, "\"\"", 2) : buf_put(b, p, 1);
        return r < 0 ? r : buf_put(b, "\"", 1);
}

/*
 * One record of N named string values in the table formats: a JSON lines array (Visier's
 * connector reads the first line as the column names and every later line as one row, each a
 * JSON array), a CSV line, or (JSON) an object keyed by column index. FIRST: no separator
 * before it.
 */
static int buf_record(Buf *b, QueryFormat f, const char *const *names, const char *const *values, size_t n,
                      bool first) {
        int r = 0;

        switch (f) {
        case QUERY_FORMAT_CSV:
                for (size_t i = 0; r >= 0 && i < n; i++) {
                        if (i > 0)
                                r = buf_put(b, ",", 1);
                        if (r >= 0)
                                r = buf_csv_field(b, values[i]);
                }
                return r < 0 ? r : buf_put(b, "\r\n", 2);
        case QUERY_FORMAT_JSONLINES:
                r = buf_put(b, "[", 1);
                for (size_t i = 0; r >= 0 && i < n; i++) {
                        if (i > 0)
                                r = buf_put(b, ",", 1);
                        if (r >= 0)
                                r = buf_json_string(b, values[i]);
                }
                return r < 0 ? r : buf_put(b, "]\n", 2);
        case QUERY_FORMAT_JSON:
                if (!first)
                        r = buf_put(b, ",", 1);
                if (r >= 0)
                        r = buf_put(b, "{", 1);
                for (size_t i = 0; r >= 0 && i < n; i++) {
                        if (i > 0)
                                r = buf_put(b, ",", 1);
                        if (r >= 0)
                                r = buf_printf(b, "\"%zu\":", i);
                        if (r >= 0)
                                r = buf_json_string(b, values[i]);
                }
                return r < 0 ? r : buf_put(b, "}", 1);
        default:
                return -EINVAL;
        }
}

/* ---- reading the request --------------------------------------------------------------- */

/* Optional member KEY of O of JSON type TYPE; *ret NULL when absent or null. */
static int get_typed(json_t *o, const char *key, json_type type, const char *where, json_t **ret, Err *e) {
        json_t *v = json_object_get(o, key);
        static const char *const names[] = {
                [JSON_OBJECT] = "an object", [JSON_ARRAY] = "an array", [JSON_STRING] = "a string",
                [JSON_INTEGER] = "an integer", [JSON_REAL] = "a number", [JSON_TRUE] = "a boolean",
                [JSON_FALSE] = "a boolean", [JSON_NULL] = "null",
        };

        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        if (json_typeof(v) != type && !(type == JSON_TRUE && json_is_boolean(v)))
                return fail(e, "%s%s%s must be %s.", where, *where ? "." : "", key, names[type]);
        *ret = v;
        return 0;
}

static int get_string(json_t *o, const char *key, const char *where, const char **ret, Err *e) {
        json_t *v;
        int r = get_typed(o, key, JSON_STRING, where, &v, e);

        *ret = v ? json_string_value(v) : NULL;
        if (r >= 0 && v && (json_string_length(v) != strlen(*ret) || strlen(*ret) > NAME_MAX_LEN))
                return fail(e, "%s.%s is too long or holds a NUL byte.", where, key);
        return r;
}

/* An int32 that may also come as a string of digits (Visier's stringified longs). */
static int get_int(json_t *o, const char *key, const char *where, int64_t min, int64_t max, int64_t def,
                   int64_t *ret, Err *e) {
        json_t *v = json_object_get(o, key);
        long long n;
        char *end = NULL;

        *ret = def;
        if (!v || json_is_null(v))
                return 0;
        if (json_is_integer(v))
                n = json_integer_value(v);
        else if (json_is_string(v)) {
                errno = 0;
                n = strtoll(json_string_value(v), &end, 10);
                if (errno != 0 || end == json_string_value(v) || *end)
                        return fail(e, "%s.%s must be an integer.", where, key);
        } else
                return fail(e, "%s.%s must be an integer.", where, key);
        if (n < min || n > max)
                return fail(e, "%s.%s must be between %" PRId64 " and %" PRId64 ".", where, key, min, max);
        *ret = n;
        return 0;
}

static int get_bool(json_t *o, const char *key, const char *where, bool *ret, Err *e) {
        json_t *v;
        int r = get_typed(o, key, JSON_TRUE, where, &v, e);

        *ret = v && json_is_true(v);
        return r;
}

/* Refuse a present member KEY the simulator does not implement. */
static int refuse(json_t *o, const char *key, const char *where, Err *e) {
        json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0))
                return 0;
        return fail(e, "%s%s%s is not supported by the simulator.", where, *where ? "." : "", key);
}

static const char *object_id(const QueryStream *s) {
        return seed_objects[s->object].id;
}

/* A DimensionReferenceDTO of the query's object. */
static int read_dimension_ref(QueryStream *s, json_t *ref, const char *where, size_t *ret, Err *e) {
        const char *name, *path;
        int r;

        if (!json_is_object(ref))
                return fail(e, "%s.dimension must be an object.", where);
        r = get_string(ref, "name", where, &name, e);
        if (r >= 0)
                r = get_string(ref, "qualifyingPath", where, &path, e);
        if (r < 0)
                return r;
        if (!name)
                return fail(e, "%s.dimension.name is required.", where);
        if (path && !streq(path, object_id(s)))
                return fail(e, "Unknown dimension '%s' on qualifying path '%s': the query's analytic object is '%s'.",
                            name, path, object_id(s));
        r = qdata_dimension(s->object, name);
        if (r == -ENXIO)
                return fail(e, "Dimension '%s' is not available on analytic object '%s'.", name, object_id(s));
        if (r < 0)
                return fail(e, "Unknown dimension '%s'.", name);
        *ret = (size_t) r;
        return 0;
}

/* A DimensionMemberReferenceDTO: {"path": [...]}. */
static int read_member_ref(size_t dim, json_t *ref, const char *where, size_t *ret, Err *e) {
        json_t *path = json_object_get(ref, "path"), *v;
        char buf[NAME_MAX_LEN + 1];
        size_t i, pos = 0;
        int r;

        if (!json_is_array(path) || json_array_size(path) == 0)
                return fail(e, "%s: each member needs a non-empty path array.", where);
        json_array_foreach(path, i, v) {
                int n;

                if (!json_is_string(v))
                        return fail(e, "%s: member paths hold strings.", where);
                n = snprintf(buf + pos, sizeof(buf) - pos, "%s%s", i > 0 ? "/" : "", json_string_value(v));
                if (n < 0 || (size_t) n >= sizeof(buf) - pos)
                        return fail(e, "%s: member path too long.", where);
                pos += (size_t) n;
        }
        r = qdata_member(dim, buf);
        if (r < 0)
                return fail(e, "Unknown member '%s' of dimension '%s'.", buf, seed_dimensions[dim].id);
        *ret = (size_t) r;
        return 0;
}

static int read_filters(QueryStream *s, json_t *filters, Err *e) {
        size_t i;
        json_t *f;
        int r;

        if (!filters)
                return 0;
        if (json_array_size(filters) > QUERY_FILTERS_MAX)
                return fail(e, "At most %d filters.", QUERY_FILTERS_MAX);
        json_array_foreach(filters, i, f) {
                json_t *ms = json_object_get(f, "memberSet"), *values, *inc, *exc, *m;
                Filter *flt = &s->filters[s->n_filters];
                bool in[QDATA_MEMBERS_MAX] = {}, out[QDATA_MEMBERS_MAX] = {}, any_in = false;
                size_t j, member;

                if (!json_is_object(f))
                        return fail(e, "filters[%zu] must be an object.", i);
                if ((r = refuse(f, "formula", "filters[]", e)) < 0 ||
                    (r = refuse(f, "selectionConcept", "filters[]", e)) < 0 ||
                    (r = refuse(f, "cohort", "filters[]", e)) < 0)
                        return r;
                if (!json_is_object(ms))
                        return fail(e, "filters[%zu] needs a memberSet.", i);
                r = read_dimension_ref(s, json_object_get(ms, "dimension"), "filters[].memberSet", &flt->dim, e);
                if (r < 0)
                        return r;
                values = json_object_get(ms, "values");
                inc = json_object_get(values, "included");
                exc = json_object_get(values, "excluded");
                if ((inc && !json_is_array(inc)) || (exc && !json_is_array(exc)))
                        return fail(e, "filters[%zu].memberSet.values.included and excluded must be arrays.", i);
                json_array_foreach(inc, j, m) {
                        if ((r = read_member_ref(flt->dim, m, "filters[].memberSet.values.included", &member, e)) < 0)
                                return r;
                        in[member] = any_in = true;
                }
                json_array_foreach(exc, j, m) {
                        if ((r = read_member_ref(flt->dim, m, "filters[].memberSet.values.excluded", &member, e)) < 0)
                                return r;
                        out[member] = true;
                }
                for (size_t leaf = 0; leaf < qdata_members_n(flt->dim); leaf++) {
                        bool ok = !any_in;

                        for (size_t a = 0; a < qdata_members_n(flt->dim); a++) {
                                if (!qdata_member_under(flt->dim, leaf, a))
                                        continue;
                                if (in[a])
                                        ok = true;
                        }
                        for (size_t a = 0; a < qdata_members_n(flt->dim); a++)
                                if (out[a] && qdata_member_under(flt->dim, leaf, a))
                                        ok = false;
                        flt->ok[leaf] = ok;
                }
                s->n_filters++;
        }
        return 0;
}

/* ---- time ------------------------------------------------------------------------------ */

static int64_t add_period(int64_t day, const char *type, int64_t n) {
        int64_t y, months;
        unsigned m, d, dim;

        if (streq(type, "DAY"))
                return day + n;
        if (streq(type, "WEEK"))
                return day + 7 * n;
        months = streq(type, "QUARTER") ? 3 * n : streq(type, "YEAR") ? 12 * n : n;
        qdata_civil_from_days(day, &y, &m, &d);
        months += y * 12 + (int64_t) m - 1;
        y = months >= 0 ? months / 12 : (months - 11) / 12;
        m = (unsigned) (months - y * 12) + 1;
        dim = (unsigned) (qdata_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) -
                          qdata_days_from_civil(y, m, 1));
        return qdata_days_from_civil(y, m, d > dim ? dim : d);
}

/* QueryTimeIntervalsDTO (or, with SINGLE, QueryTimeIntervalDTO) into s->start/end. */
static int read_time(QueryStream *s, json_t *t, bool single, const char *where, Err *e) {
        const char *type = "MONTH", *from, *dynamic, *direction;
        int64_t period, count, from_day = QDATA_DAY_END, y, ms;
        unsigned m, d;
        int r;

        s->n_intervals = 1;
        if (!t) {
                s->start[0] = add_period(from_day, type, -1);
                s->end[0] = from_day;
                return 0;
        }
        if (!json_is_object(t))
                return fail(e, "%s must be an object.", where);
        if ((r = get_string(t, "intervalPeriodType", where, &type, e)) < 0 ||
            (r = get_string(t, "fromDateTime", where, &from, e)) < 0 ||
            (r = get_string(t, "dynamicDateFrom", where, &dynamic, e)) < 0 ||
            (r = get_string(t, "direction", where, &direction, e)) < 0 ||
            (r = get_int(t, "intervalPeriodCount", where, 1, 1200, 1, &period, e)) < 0 ||
            (r = get_int(t, "intervalCount", where, 1, QUERY_INTERVALS_MAX, 1, &count, e)) < 0 ||
            (r = get_int(t, "fromInstant", where, INT64_C(-62135596800000), INT64_C(253402300799000), INT64_MIN,
                         &ms, e)) < 0 ||
            (r = refuse(t, "shift", where, e)) < 0)
                return r;
        if (!type)
                type = "MONTH";
        if (!streq(type, "MONTH") && !streq(type, "DAY") && !streq(type, "WEEK") && !streq(type, "QUARTER") &&
            !streq(type, "YEAR"))
                return fail(e, "%s.intervalPeriodType '%s' is not one of MONTH, DAY, WEEK, QUARTER, YEAR.", where, type);
        if (direction && !streq(direction, "BACKWARD") && !streq(direction, "FORWARD"))
                return fail(e, "%s.direction '%s' is not BACKWARD or FORWARD.", where, direction);
        if (single && json_object_get(t, "intervalCount"))
                return fail(e, "%s.intervalCount is not part of a list query's timeInterval.", where);
        if (from) {
                if (sscanf(from, "%4" SCNd64 "-%2u-%2u", &y, &m, &d) != 3 || m < 1 || m > 12 || d < 1 || d > 31 ||
                    y < 1 || y > 9999)
                        return fail(e, "%s.fromDateTime '%s' is not a yyyy-MM-dd date.", where, from);
                from_day = qdata_days_from_civil(y, m, d);
        } else if (ms != INT64_MIN)
                from_day = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
        /* dynamicDateFrom (SOURCE, COMPLETE_PERIOD): the simulated data ends on QDATA_DAY_END. */
        (void) dynamic;

        s->n_intervals = (size_t) count;
        for (size_t i = 0; i < s->n_intervals; i++) {
                if (direction && streq(direction, "FORWARD")) {
                        s->start[i] = add_period(from_day, type, period * (int64_t) i);
                        s->end[i] = add_period(from_day, type, period * (int64_t) (i + 1));
                } else {
                        s->end[i] = add_period(from_day, type, -period * (int64_t) (s->n_intervals - 1 - i));
                        s->start[i] = add_period(from_day, type, -period * (int64_t) (s->n_intervals - i));
                }
        }
        return 0;
}

/* ---- columns --------------------------------------------------------------------------- */

static int column_name_unique(QueryStream *s, const char *name, Err *e) {
        for (size_t i = 0; i < s->n_columns; i++)
                if (streq(s->columns[i].name, name))
                        return fail(e, "Duplicate column name '%s'.", name);
        return 0;
}

/* Resolve NAME (qualified "Object.Name" or bare) as a property of the query's object. */
static int resolve_property(QueryStream *s, const char *name, const char *path, size_t *ret, Err *e) {
        char full[2 * NAME_MAX_LEN + 2];
        int r;

        if (path && !streq(path, object_id(s)))
                return fail(e, "Unknown property '%s' on qualifying path '%s': the query's analytic object is '%s'.",
                            name, path, object_id(s));
        if (strchr(name, '.'))
                snprintf(full, sizeof(full), "%s", name);
        else
                snprintf(full, sizeof(full), "%s.%s", object_id(s), name);
        r = qdata_property(s->object, full);
        if (r == -ENXIO)
                return fail(e, "Property '%s' is not available on analytic object '%s'.", name, object_id(s));
        if (r < 0)
                return fail(e, "Unknown property '%s' on analytic object '%s'.", name, object_id(s));
        *ret = (size_t) r;
        return 0;
}

static int read_column(QueryStream *s, json_t *col, size_t i, Err *e) {
        Column c = {};
        json_t *def, *v;
        const char *name, *n2, *path, *mode;
        int64_t depth;
        int r;

        if (!json_is_object(col))
                return fail(e, "columns[%zu] must be an object.", i);
        if ((r = get_string(col, "columnName", "columns[]", &name, e)) < 0)
                return r;
        def = json_object_get(col, "columnDefinition");
        if (!json_is_object(def))
                return fail(e, "columns[%zu].columnDefinition is required.", i);
        for (const char *const *k = (const char *const[]) { "formula", "selectionConcept", "memberMapProperty", NULL };
             *k; k++)
                if ((r = refuse(def, *k, "columns[].columnDefinition", e)) < 0)
                        return r;

        if ((v = json_object_get(def, "property"))) {
                if (!json_is_object(v))
                        return fail(e, "columns[%zu].columnDefinition.property must be an object.", i);
                if ((r = get_string(v, "name", "columns[].property", &n2, e)) < 0 ||
                    (r = get_string(v, "qualifyingPath", "columns[].property", &path, e)) < 0)
                        return r;
                if (!n2)
                        return fail(e, "columns[%zu].columnDefinition.property.name is required.", i);
                c.kind = COLUMN_PROPERTY;
                if ((r = resolve_property(s, n2, path, &c.prop, e)) < 0)
                        return r;
                snprintf(c.name, sizeof(c.name), "%s", n2);
        } else if ((v = json_object_get(def, "dimension"))) {
                c.kind = COLUMN_DIMENSION;
                if ((r = read_dimension_ref(s, v, "columns[].columnDefinition", &c.dim, e)) < 0)
                        return r;
                snprintf(c.name, sizeof(c.name), "%s", seed_dimensions[c.dim].id);
        } else if ((v = json_object_get(def, "dimensionLevelSelection"))) {
                const char *level;

                c.kind = COLUMN_LEVEL;
                if (!json_is_object(v))
                        return fail(e, "columns[%zu].columnDefinition.dimensionLevelSelection must be an object.", i);
                if ((r = read_dimension_ref(s, json_object_get(v, "dimension"), "columns[].dimensionLevelSelection",
                                            &c.dim, e)) < 0 ||
                    (r = get_string(v, "levelId", "columns[].dimensionLevelSelection", &level, e)) < 0 ||
                    (r = get_int(v, "levelDepth", "columns[].dimensionLevelSelection", 1, 64, 0, &depth, e)) < 0 ||
                    (r = get_string(v, "memberValueMode", "columns[].dimensionLevelSelection", &mode, e)) < 0)
                        return r;
                if (level) {
                        r = qdata_level(c.dim, level);
                        if (r < 0)
                                return fail(e, "Unknown level '%s' of dimension '%s'.", level, seed_dimensions[c.dim].id);
                        c.depth = (unsigned) r;
                } else if (depth > 0 && (unsigned) depth <= qdata_levels_n(c.dim))
                        c.depth = (unsigned) depth;
                else
                        return fail(e, "columns[%zu].dimensionLevelSelection needs a known levelId or levelDepth.", i);
                if (mode && !streq(mode, "NAME") && !streq(mode, "PATH"))
                        return fail(e, "memberValueMode '%s' is not NAME or PATH.", mode);
                c.path_mode = mode && streq(mode, "PATH");
                snprintf(c.name, sizeof(c.name), "%s",
                         level ? level : seed_dimensions[c.dim].level_ids[c.depth - 1]);
        } else if (json_object_get(def, "effectiveDateProperty")) {
                if (s->kind != QUERY_SNAPSHOT)
                        return fail(e, "columns[%zu]: effectiveDateProperty is only available in snapshot queries.", i);
                c.kind = COLUMN_EFFECTIVE_DATE;
                snprintf(c.name, sizeof(c.name), "EffectiveDate");
        } else
                return fail(e, "columns[%zu].columnDefinition: only property, dimension, dimensionLevelSelection and "
                            "effectiveDateProperty columns are supported by the simulator.", i);

        if (name)
                snprintf(c.name, sizeof(c.name), "%s", name);
        if ((r = column_name_unique(s, c.name, e)) < 0)
                return r;
        s->columns[s->n_columns++] = c;
        return 0;
}

/* ---- list-like requests ---------------------------------------------------------------- */

static int read_list_source(QueryStream *s, json_t *src, Err *e) {
        const char *ao, *metric;
        int r;

        if (!json_is_object(src))
                return fail(e, "source is required and must be an object.");
        if ((r = refuse(src, "formula", "source", e)) < 0 || (r = refuse(src, "textConcept", "source", e)) < 0 ||
            (r = get_string(src, "analyticObject", "source", &ao, e)) < 0 ||
            (r = get_string(src, "metric", "source", &metric, e)) < 0)
                return r;
        if (!!ao == !!metric)
                return fail(e, "source needs exactly one of analyticObject or metric.");
        if (metric) {
                r = qdata_metric(metric);
                if (r < 0)
                        return fail(e, "Unknown metric '%s'.", metric);
                ao = qdata_metrics[r].object;
        }
        r = qdata_object(ao);
        if (r < 0)
                return fail(e, "Unknown analytic object '%s'.", ao);
        s->object = (size_t) r;
        return 0;
}

/* limit, page, omitHeader, dateTimeDisplayMode of List/SnapshotQueryExecutionOptionsDTO. */
static int read_list_options(QueryStream *s, json_t *o, Err *e) {
        int64_t limit, page;
        const char *dt;
        int r;

        s->limit = UINT64_MAX;
        if (!o)
                return 0;
        if (!json_is_object(o))
                return fail(e, "options must be an object.");
        if ((r = get_int(o, "limit", "options", 0, INT32_MAX, -1, &limit, e)) < 0 ||
            (r = get_int(o, "page", "options", 0, INT32_MAX, -1, &page, e)) < 0 ||
            (r = get_bool(o, "omitHeader", "options", &s->omit_header, e)) < 0 ||
            (r = get_string(o, "dateTimeDisplayMode", "options", &dt, e)) < 0 ||
            (r = refuse(o, "multipleTables", "options", e)) < 0)
                return r;
        if (dt && !streq(dt, "EPOCH") && !streq(dt, "DATETIME"))
                return fail(e, "options.dateTimeDisplayMode '%s' is not EPOCH or DATETIME.", dt);
        s->datetime = dt && streq(dt, "DATETIME");
        if (page >= 0 && limit < 0)
                limit = 1000;
        if (limit >= 0)
                s->limit = (uint64_t) limit;
        if (page >= 0)
                s->skip = (uint64_t) page * (uint64_t) limit;
        return 0;
}

static int read_list(QueryStream *s, json_t *in, uint64_t rows, Err *e) {
        json_t *cols, *filters, *c;
        size_t i;
        int r;

        if ((r = read_list_source(s, json_object_get(in, "source"), e)) < 0 ||
            (r = get_typed(in, "columns", JSON_ARRAY, "", &cols, e)) < 0 ||
            (r = get_typed(in, "filters", JSON_ARRAY, "", &filters, e)) < 0 ||
            (r = refuse(in, "sortOptions", "", e)) < 0 ||
            (r = read_list_options(s, json_object_get(in, "options"), e)) < 0)
                return r;
        if (!cols || json_array_size(cols) == 0)
                return fail(e, "columns must contain at least one column.");
        if (json_array_size(cols) > QUERY_COLUMNS_MAX)
                return fail(e, "At most %d columns.", QUERY_COLUMNS_MAX);
        json_array_foreach(cols, i, c)
                if ((r = read_column(s, c, i, e)) < 0)
                        return r;
        if ((r = read_filters(s, filters, e)) < 0)
                return r;

        if (s->kind == QUERY_SNAPSHOT) {
                if ((r = refuse(in, "timeInterval", "", e)) < 0 ||
                    (r = read_time(s, json_object_get(in, "timeIntervals"), false, "timeIntervals", e)) < 0)
                        return r;
                s->per_snapshot = rows / s->n_intervals;
                s->population = s->per_snapshot * s->n_intervals;
                for (size_t k = 0; k < s->n_intervals; k++)
                        s->snapshot_day[k] = s->end[k];
        } else {
                if ((r = read_time(s, json_object_get(in, "timeInterval"), true, "timeInterval", e)) < 0)
                        return r;
                s->per_snapshot = s->population = rows;
        }
        return 0;
}

/* ---- SQL-like -------------------------------------------------------------------------- */

typedef enum TokenType {
        TOKEN_END,
        TOKEN_IDENT,
        TOKEN_NUMBER,
        TOKEN_STRING,
        TOKEN_PUNCT,
} TokenType;

typedef struct Token {
        TokenType type;
        char text[NAME_MAX_LEN + 1];
        size_t offset;
} Token;

typedef struct Lexer {
        const char *s;
        size_t pos;
        Token tok;
} Lexer;

static int lex_next(Lexer *l, Err *e) {
        const char *p;
        size_t n = 0;

        while (l->s[l->pos] == ' ' || l->s[l->pos] == '\t' || l->s[l->pos] == '\n' || l->s[l->pos] == '\r')
                l->pos++;
        p = l->s + l->pos;
        l->tok = (Token) { .offset = l->pos };
        if (!*p) {
                l->tok.type = TOKEN_END;
                return 0;
        }
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_') {
                while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z') || (p[n] >= '0' && p[n] <= '9') ||
                       p[n] == '_' || p[n] == '.')
                        n++;
                l->tok.type = TOKEN_IDENT;
        } else if (*p >= '0' && *p <= '9') {
                while (p[n] >= '0' && p[n] <= '9')
                        n++;
                l->tok.type = TOKEN_NUMBER;
        } else if (*p == '\'' || *p == '"') {
                size_t out = 0;
                char q = *p;

                for (n = 1;; n++) {
                        if (!p[n])
                                return fail(e, "SQL-like query: unterminated string at offset %zu.", l->pos);
                        if (p[n] == q && p[n + 1] == q)
                                n++;
                        else if (p[n] == q)
                                break;
                        if (out >= NAME_MAX_LEN)
                                return fail(e, "SQL-like query: string too long at offset %zu.", l->pos);
                        l->tok.text[out++] = p[n];
                }
                l->tok.type = TOKEN_STRING;
                l->pos += n + 1;
                return 0;
        } else {
                n = 1;
                l->tok.type = TOKEN_PUNCT;
        }
        if (n > NAME_MAX_LEN)
                return fail(e, "SQL-like query: token too long at offset %zu.", l->pos);
        memcpy(l->tok.text, p, n);
        l->tok.text[n] = '\0';
        l->pos += n;
        return 0;
}

static bool tok_is(const Lexer *l, const char *word) {
        return (l->tok.type == TOKEN_IDENT || l->tok.type == TOKEN_PUNCT) && strcaseeq(l->tok.text, word);
}

static int unsupported_token(const Lexer *l, Err *e) {
        if (l->tok.type == TOKEN_END)
                return fail(e, "SQL-like query: unexpected end of query.");
        return fail(e, "SQL-like query: '%s' at offset %zu is not supported by the simulator (supported: SELECT "
                    "<property>[ AS <name>], ... FROM <object> [WHERE <property> = '<value>'] [LIMIT <n>]).",
                    l->tok.text, l->tok.offset);
}

typedef struct SqlItem {
        char name[NAME_MAX_LEN + 1], alias[NAME_MAX_LEN + 1];
} SqlItem;

/* A SELECT item or WHERE name as a property, else a dimension, of the query's object. */
static int sql_resolve(QueryStream *s, const char *name, Column *c, Err *e) {
        char tmp[QUERY_ERROR_MAX];
        Err quiet = { tmp, sizeof(tmp) };
        int r;

        if (resolve_property(s, name, NULL, &c->prop, &quiet) >= 0) {
                c->kind = COLUMN_PROPERTY;
                return 0;
        }
        r = qdata_dimension(s->object, name);
        if (r >= 0) {
                c->kind = COLUMN_DIMENSION;
                c->dim = (size_t) r;
                return 0;
        }
        if (qdata_metric(name) >= 0)
                return fail(e, "SQL-like query: metric '%s': aggregate SQL-like queries are not supported by the "
                            "simulator.", name);
        return resolve_property(s, name, NULL, &c->prop, e);
}

static int read_sql(QueryStream *s, json_t *in, uint64_t rows, Err *e) {
        const char *q;
        json_t *qv;
        SqlItem *items = NULL;
        size_t n_items = 0;
        Lexer l = {};
        Token where_name = {}, where_value = {};
        bool has_where = false;
        uint64_t sql_limit = UINT64_MAX;
        int r;

        if ((r = get_typed(in, "query", JSON_STRING, "", &qv, e)) < 0)
                return r;
        q = qv ? json_string_value(qv) : NULL;
        if (!q || !*q)
                return fail(e, "query is required: a SQL-like query string.");
        if (json_string_length(qv) != strlen(q))
                return fail(e, "query holds a NUL byte.");
        if ((r = refuse(in, "aggregateQueryOptions", "", e)) < 0 ||
            (r = read_list_options(s, json_object_get(in, "listQueryOptions"), e)) < 0)
                return r;

        items = calloc(SQL_ITEMS_MAX, sizeof(*items));
        if (!items)
                return -ENOMEM;
        l.s = q;
        if ((r = lex_next(&l, e)) < 0)
                goto out;
        if (!tok_is(&l, "SELECT")) {
                r = unsupported_token(&l, e);
                goto out;
        }
        for (;;) {
                if ((r = lex_next(&l, e)) < 0)
                        goto out;
                if (l.tok.type != TOKEN_IDENT || tok_is(&l, "FROM")) {
                        r = unsupported_token(&l, e);
                        goto out;
                }
                if (n_items >= SQL_ITEMS_MAX) {
                        r = fail(e, "SQL-like query: at most %d columns.", SQL_ITEMS_MAX);
                        goto out;
                }
                memcpy(items[n_items].name, l.tok.text, sizeof(l.tok.text));
                if ((r = lex_next(&l, e)) < 0)
                        goto out;
                if (tok_is(&l, "(")) {
                        r = qdata_metric(items[n_items].name) >= 0
                                    ? fail(e, "SQL-like query: metric '%s': aggregate SQL-like queries are not "
                                           "supported by the simulator.", items[n_items].name)
                                    : fail(e, "SQL-like query: function '%s(...)' is not supported by the simulator.",
                                           items[n_items].name);
                        goto out;
                }
                if (tok_is(&l, "AS")) {
                        if ((r = lex_next(&l, e)) < 0)
                                goto out;
                        if (l.tok.type != TOKEN_IDENT && l.tok.type != TOKEN_STRING) {
                                r = unsupported_token(&l, e);
                                goto out;
                        }
                        memcpy(items[n_items].alias, l.tok.text, sizeof(l.tok.text));
                        if ((r = lex_next(&l, e)) < 0)
                                goto out;
                }
                n_items++;
                if (!tok_is(&l, ","))
                        break;
        }
        if (!tok_is(&l, "FROM")) {
                r = unsupported_token(&l, e);
                goto out;
        }
        if ((r = lex_next(&l, e)) < 0)
                goto out;
        if (l.tok.type != TOKEN_IDENT) {
                r = unsupported_token(&l, e);
                goto out;
        }
        r = qdata_object(l.tok.text);
        if (r < 0) {
                r = fail(e, "Unknown analytic object '%s'.", l.tok.text);
                goto out;
        }
        s->object = (size_t) r;
        if ((r = lex_next(&l, e)) < 0)
                goto out;
        if (tok_is(&l, "WHERE")) {
                if ((r = lex_next(&l, e)) < 0)
                        goto out;
                if (l.tok.type != TOKEN_IDENT) {
                        r = unsupported_token(&l, e);
                        goto out;
                }
                where_name = l.tok;
                if ((r = lex_next(&l, e)) < 0)
                        goto out;
                if (!tok_is(&l, "=")) {
                        r = unsupported_token(&l, e);
                        goto out;
                }
                if ((r = lex_next(&l, e)) < 0)
                        goto out;
                if (l.tok.type != TOKEN_STRING && l.tok.type != TOKEN_NUMBER) {
                        r = unsupported_token(&l, e);
                        goto out;
                }
                where_value = l.tok;
                has_where = true;
                if ((r = lex_next(&l, e)) < 0)
                        goto out;
        }
        if (tok_is(&l, "LIMIT")) {
                if ((r = lex_next(&l, e)) < 0)
                        goto out;
                if (l.tok.type != TOKEN_NUMBER || strlen(l.tok.text) > 18) {
                        r = unsupported_token(&l, e);
                        goto out;
                }
                sql_limit = strtoull(l.tok.text, NULL, 10);
                if ((r = lex_next(&l, e)) < 0)
                        goto out;
        }
        if (tok_is(&l, ";") && (r = lex_next(&l, e)) < 0)
                goto out;
        if (l.tok.type != TOKEN_END) {
                r = unsupported_token(&l, e);
                goto out;
        }

        for (size_t i = 0; i < n_items; i++) {
                Column c = {};

                if ((r = sql_resolve(s, items[i].name, &c, e)) < 0)
                        goto out;
                snprintf(c.name, sizeof(c.name), "%s", items[i].alias[0] ? items[i].alias : items[i].name);
                if ((r = column_name_unique(s, c.name, e)) < 0)
                        goto out;
                s->columns[s->n_columns++] = c;
        }
        if (has_where) {
                Filter *f = &s->filters[s->n_filters];
                Column c = {};

                if ((r = sql_resolve(s, where_name.text, &c, e)) < 0)
                        goto out;
                if (c.kind == COLUMN_PROPERTY) {
                        f->is_property = true;
                        f->prop = c.prop;
                        memcpy(f->value, where_value.text, sizeof(f->value));
                } else {
                        /* A dimension equals a member named by its last element or its "/"-path. */
                        f->dim = c.dim;
                        for (size_t m = 0; m < qdata_members_n(c.dim); m++) {
                                const char *path = qdata_member_path(c.dim, m), *last = strrchr(path, '/');

                                if (!streq(path, where_value.text) && !streq(last ? last + 1 : path, where_value.text))
                                        continue;
                                for (size_t leaf = 0; leaf < qdata_members_n(c.dim); leaf++)
                                        if (qdata_member_under(c.dim, leaf, m))
                                                f->ok[leaf] = true;
                        }
                }
                s->n_filters++;
        }
        if (sql_limit < s->limit)
                s->limit = sql_limit;
        s->per_snapshot = s->population = rows;
        r = 0;
out:
        free(items);
        return r;
}

/* ---- aggregate ------------------------------------------------------------------------- */

static int add_position(Axis *a, size_t member, Err *e) {
        if (a->n_positions >= ELEMENTSOF(a->positions))
                return fail(e, "At most %zu positions per axis.", ELEMENTSOF(a->positions));
        a->positions[a->n_positions++] = member;
        return 0;
}

static int read_axis(QueryStream *s, json_t *ax, size_t i, Err *e) {
        Axis *a = &s->axes[s->n_axes];
        json_t *sel, *opts, *v;
        const char *mode = NULL, *colname = NULL;
        size_t j;
        int r;

        *a = (Axis) { .mode = s->mode };
        if (!json_is_object(ax))
                return fail(e, "axes[%zu] must be an object.", i);
        for (const char *const *k = (const char *const[]) { "formula", "selectionConcept", "memberMapSelection",
                                                           "numericRanges", "dimensionDataMemberSelection",
                                                           "dimensionLevelWithUncategorizedValueSelection",
                                                           "sortAndLimitOptions", NULL };
             *k; k++)
                if ((r = refuse(ax, *k, "axes[]", e)) < 0)
                        return r;
        if ((sel = json_object_get(ax, "dimensionMemberSelection"))) {
                json_t *members = json_object_get(sel, "members");

                if ((r = read_dimension_ref(s, json_object_get(sel, "dimension"), "axes[].dimensionMemberSelection",
                                            &a->dim, e)) < 0)
                        return r;
                if (!json_is_array(members) || json_array_size(members) == 0)
                        return fail(e, "axes[%zu].dimensionMemberSelection.members must hold at least one member.", i);
                json_array_foreach(members, j, v) {
                        size_t m;

                        if ((r = read_member_ref(a->dim, v, "axes[].dimensionMemberSelection.members", &m, e)) < 0 ||
                            (r = add_position(a, m, e)) < 0)
                                return r;
                }
        } else if ((sel = json_object_get(ax, "dimensionLevelSelection"))) {
                json_t *ids = json_object_get(sel, "levelIds"), *depths = json_object_get(sel, "levelDepths");
                bool want[8] = {}, any = false;

                if ((r = read_dimension_ref(s, json_object_get(sel, "dimension"), "axes[].dimensionLevelSelection",
                                            &a->dim, e)) < 0)
                        return r;
                if ((ids && !json_is_array(ids)) || (depths && !json_is_array(depths)))
                        return fail(e, "axes[%zu].dimensionLevelSelection.levelIds and levelDepths must be arrays.", i);
                json_array_foreach(ids, j, v) {
                        r = json_is_string(v) ? qdata_level(a->dim, json_string_value(v)) : -ENOENT;
                        if (r < 0)
                                return fail(e, "Unknown level '%s' of dimension '%s'.",
                                            json_is_string(v) ? json_string_value(v) : "?", seed_dimensions[a->dim].id);
                        want[r] = any = true;
                }
                json_array_foreach(depths, j, v) {
                        json_int_t d = json_integer_value(v);

                        if (!json_is_integer(v) || d < 1 || d > (json_int_t) qdata_levels_n(a->dim))
                                return fail(e, "axes[%zu].dimensionLevelSelection.levelDepths: no such level depth.", i);
                        want[d] = any = true;
                }
                if (!any)
                        return fail(e, "axes[%zu].dimensionLevelSelection needs levelIds or levelDepths.", i);
                for (size_t m = 0; m < qdata_members_n(a->dim); m++)
                        if (want[qdata_member_depth(a->dim, m)] && (r = add_position(a, m, e)) < 0)
                                return r;
        } else if ((sel = json_object_get(ax, "dimensionLeafMemberSelection"))) {
                if ((r = read_dimension_ref(s, json_object_get(sel, "dimension"), "axes[].dimensionLeafMemberSelection",
                                            &a->dim, e)) < 0)
                        return r;
                for (size_t m = 0; m < qdata_members_n(a->dim); m++)
                        if (qdata_member_is_leaf(a->dim, m) && (r = add_position(a, m, e)) < 0)
                                return r;
        } else
                return fail(e, "axes[%zu]: only dimensionMemberSelection, dimensionLevelSelection and "
                            "dimensionLeafMemberSelection axes are supported by the simulator.", i);

        if ((opts = json_object_get(ax, "tableAxisOptions"))) {
                if ((r = get_string(opts, "memberDisplayMode", "axes[].tableAxisOptions", &mode, e)) < 0 ||
                    (r = get_string(opts, "columnName", "axes[].tableAxisOptions", &colname, e)) < 0)
                        return r;
                if (mode && !streq(mode, "UNCHANGED")) {
                        a->mode = display_from_string(mode);
                        if (a->mode < 0)
                                return fail(e, "axes[%zu].tableAxisOptions.memberDisplayMode '%s' is unknown.", i, mode);
                }
        }
        snprintf(a->column, sizeof(a->column), "%s", colname ? colname : seed_dimensions[a->dim].id);
        for (size_t p = 0; p < a->n_positions; p++)
                for (size_t m = 0; m < qdata_members_n(a->dim); m++)
                        if (qdata_member_under(a->dim, m, a->positions[p]))
                                a->mask[m] |= UINT64_C(1) << p;
        s->n_axes++;
        return 0;
}

static int read_metric_source(QueryStream *s, json_t *src, Err *e) {
        json_t *ms, *cols, *c;
        const char *metric;
        size_t i;
        int r;

        if (!json_is_object(src))
                return fail(e, "query.source is required and must be an object.");
        if ((r = refuse(src, "formula", "query.source", e)) < 0 ||
            (r = get_string(src, "metric", "query.source", &metric, e)) < 0 ||
            (r = get_typed(src, "metrics", JSON_OBJECT, "query.source", &ms, e)) < 0)
                return r;
        if (!!metric == !!ms)
                return fail(e, "query.source needs exactly one of metric or metrics.");
        if (metric) {
                r = qdata_metric(metric);
                if (r < 0)
                        return fail(e, "Unknown metric '%s'.", metric);
                s->metrics[0] = (size_t) r;
                snprintf(s->metric_columns[0], sizeof(s->metric_columns[0]), "%s", metric);
                s->n_metrics = 1;
        } else {
                if (s->format != QUERY_FORMAT_CSV)
                        return fail(e, "query.source.metrics is only available when the Accept header is text/csv.");
                cols = json_object_get(ms, "columns");
                if (!json_is_array(cols) || json_array_size(cols) == 0)
                        return fail(e, "query.source.metrics.columns must hold at least one metric.");
                if (json_array_size(cols) > QUERY_METRICS_MAX)
                        return fail(e, "At most %d metrics.", QUERY_METRICS_MAX);
                json_array_foreach(cols, i, c) {
                        const char *id, *name;

                        if ((r = get_string(c, "id", "query.source.metrics.columns[]", &id, e)) < 0 ||
                            (r = get_string(c, "columnName", "query.source.metrics.columns[]", &name, e)) < 0)
                                return r;
                        if (!id)
                                return fail(e, "query.source.metrics.columns[%zu].id is required.", i);
                        r = qdata_metric(id);
                        if (r < 0)
                                return fail(e, "Unknown metric '%s'.", id);
                        s->metrics[i] = (size_t) r;
                        snprintf(s->metric_columns[i], sizeof(s->metric_columns[i]), "%s", name ? name : id);
                        s->n_metrics++;
                }
        }
        for (i = 1; i < s->n_metrics; i++)
                if (!streq(qdata_metrics[s->metrics[i]].object, qdata_metrics[s->metrics[0]].object))
                        return fail(e, "All metrics in the query must reference the same analytic object: '%s' uses "
                                    "'%s', '%s' uses '%s'.", qdata_metrics[s->metrics[0]].id,
                                    qdata_metrics[s->metrics[0]].object, qdata_metrics[s->metrics[i]].id,
                                    qdata_metrics[s->metrics[i]].object);
        s->object = (size_t) qdata_object(qdata_metrics[s->metrics[0]].object);
        return 0;
}

static bool record_passes(const QueryStream *s, uint64_t row);

static size_t record_leaf(const QueryStream *s, size_t dim, uint64_t row) {
        return s->leaves[dim][qdata_leaf_pick(s->object, dim, row, s->n_leaves[dim])];
}

/* Add record ROW to every cell it falls in, axis by axis from AXIS on; BASE is the cell so far. */
static void aggregate_add(QueryStream *s, uint64_t row, size_t axis, size_t base) {
        int64_t start = 0, exit_day = 0;
        bool exited = false, voluntary = false;

        if (axis < s->n_axes) {
                const Axis *a = &s->axes[axis];
                uint64_t mask = a->mask[record_leaf(s, a->dim, row)];

                for (size_t p = 0; p < a->n_positions; p++)
                        if (mask & (UINT64_C(1) << p))
                                aggregate_add(s, row, axis + 1, base * a->n_positions + p);
                return;
        }
        start = qdata_day(s->object, row);
        if (streq(object_id(s), "Employee"))
                exited = qdata_employee_exit(row, &exit_day, &voluntary);
        for (size_t m = 0; m < s->n_metrics; m++)
                for (size_t i = 0; i < s->n_intervals; i++) {
                        size_t cell = m * s->n_cells + base * s->n_intervals + i;
                        bool active = start < s->end[i] && (!exited || exit_day >= s->end[i]);

                        switch (qdata_metrics[s->metrics[m]].kind) {
                        case QDATA_METRIC_HEADCOUNT:
                                s->num[cell] += active;
                                break;
                        case QDATA_METRIC_EVENTS:
                                s->num[cell] += start >= s->start[i] && start < s->end[i];
                                break;
                        case QDATA_METRIC_RESIGNATION_RATE:
                                s->num[cell] += exited && voluntary && exit_day >= s->start[i] && exit_day < s->end[i];
                                s->den[cell] += active;
                                break;
                        default:
                                break;
                        }
                }
}

static int read_aggregate(QueryStream *s, json_t *in, uint64_t rows, Err *e) {
        json_t *q, *axes, *filters, *opts, *ax;
        const char *mode;
        uint64_t n;
        size_t i;
        int r;

        if ((r = get_typed(in, "query", JSON_OBJECT, "", &q, e)) < 0)
                return r;
        if (!q)
                return fail(e, "query is required.");
        if ((r = get_typed(in, "options", JSON_OBJECT, "", &opts, e)) < 0 ||
            (r = get_string(opts, "memberDisplayMode", "options", &mode, e)) < 0)
                return r;
        if (mode) {
                s->mode = display_from_string(mode);
                if (s->mode < 0)
                        return fail(e, "options.memberDisplayMode '%s' is unknown.", mode);
        }
        if ((r = read_metric_source(s, json_object_get(q, "source"), e)) < 0 ||
            (r = get_typed(q, "axes", JSON_ARRAY, "query", &axes, e)) < 0 ||
            (r = get_typed(q, "filters", JSON_ARRAY, "query", &filters, e)) < 0 ||
            (r = read_filters(s, filters, e)) < 0 ||
            (r = read_time(s, json_object_get(q, "timeIntervals"), false, "query.timeIntervals", e)) < 0)
                return r;
        if (json_array_size(axes) > QUERY_AXES_MAX)
                return fail(e, "At most %d axes.", QUERY_AXES_MAX);
        json_array_foreach(axes, i, ax)
                if ((r = read_axis(s, ax, i, e)) < 0)
                        return r;

        n = s->n_intervals;
        for (i = 0; i < s->n_axes; i++)
                n *= s->axes[i].n_positions;
        if (n > QUERY_CELLS_MAX)
                return fail(e, "The query asks for %" PRIu64 " cells; the simulator answers at most %d.", n,
                            QUERY_CELLS_MAX);
        s->n_cells = (size_t) n;
        s->num = calloc(s->n_cells * s->n_metrics, sizeof(uint64_t));
        s->den = calloc(s->n_cells * s->n_metrics, sizeof(uint64_t));
        if (!s->num || !s->den)
                return -ENOMEM;
        s->population = rows < QUERY_AGGREGATE_ROWS_MAX ? rows : QUERY_AGGREGATE_ROWS_MAX;
        for (uint64_t row = 0; row < s->population; row++)
                if (record_passes(s, row))
                        aggregate_add(s, row, 0, 0);
        s->limit = UINT64_MAX;
        return 0;
}

/* ---- records --------------------------------------------------------------------------- */

static bool record_passes(const QueryStream *s, uint64_t row) {
        for (size_t i = 0; i < s->n_filters; i++) {
                const Filter *f = &s->filters[i];

                if (f->is_property) {
                        char v[QDATA_VALUE_MAX];

                        qdata_value(s->object, f->prop, row, s->datetime, v, sizeof(v));
                        if (!streq(v, f->value))
                                return false;
                } else if (!f->ok[record_leaf(s, f->dim, row)])
                        return false;
        }
        return true;
}

/* A member's name path in MODE: "a.b.c", "c" or "[a].[b].[c]"; DEPTH 0 = the whole path. */
static void format_member(size_t dim, size_t member, unsigned depth, DisplayMode mode, char *buf, size_t size) {
        const char *p = qdata_member_path(dim, member);
        size_t pos = 0;
        unsigned level = 1;

        buf[0] = '\0';
        if (depth > 0 && qdata_member_depth(dim, member) < depth) {
                snprintf(buf, size, "Unknown");
                return;
        }
        while (*p && pos + 4 < size) {
                size_t n = strcspn(p, "/");
                bool last = !p[n] || (depth > 0 && level == depth);

                if (mode == DISPLAY_COMPACT && !last) {
                        p += n + 1;
                        level++;
                        continue;
                }
                pos += (size_t) snprintf(buf + pos, size - pos, mode == DISPLAY_MDX ? "%s[%.*s]" : "%s%.*s",
                                         pos > 0 ? "." : "", (int) n, p);
                if (last || pos >= size)
                        break;
                p += n + 1;
                level++;
        }
}

static void format_interval(const QueryStream *s, size_t i, char *buf, size_t size) {
        char a[40], b[40];

        qdata_format_iso(s->start[i], a, sizeof(a));
        qdata_format_iso(s->end[i], b, sizeof(b));
        if (s->mode == DISPLAY_DEFAULT)
                snprintf(buf, size, "%s/%s - [%zu]", a, b, i);
        else
                snprintf(buf, size, s->mode == DISPLAY_MDX ? "[%s]" : "%s", b);
}

static void format_cell_value(const QueryStream *s, size_t m, size_t cell, char *buf, size_t size) {
        size_t k = m * s->n_cells + cell;

        if (qdata_metrics[s->metrics[m]].kind == QDATA_METRIC_RESIGNATION_RATE)
                snprintf(buf, size, "%.6f", s->den[k] ? (double) s->num[k] / (double) s->den[k] : 0.0);
        else
                snprintf(buf, size, "%" PRIu64, s->num[k]);
}

static int emit_list_record(QueryStream *s, uint64_t r) {
        char values[QUERY_COLUMNS_MAX][COLUMN_VALUE_MAX];
        const char *vp[QUERY_COLUMNS_MAX], *np[QUERY_COLUMNS_MAX];
        uint64_t row = r % s->per_snapshot;
        size_t snapshot = (size_t) (r / s->per_snapshot);

        for (size_t i = 0; i < s->n_columns; i++) {
                const Column *c = &s->columns[i];

                switch (c->kind) {
                case COLUMN_PROPERTY:
                        qdata_value(s->object, c->prop, row, s->datetime, values[i], sizeof(values[i]));
                        break;
                case COLUMN_DIMENSION:
                        format_member(c->dim, record_leaf(s, c->dim, row), 0, DISPLAY_DEFAULT, values[i],
                                      sizeof(values[i]));
                        break;
                case COLUMN_LEVEL:
                        format_member(c->dim, record_leaf(s, c->dim, row), c->depth,
                                      c->path_mode ? DISPLAY_DEFAULT : DISPLAY_COMPACT, values[i], sizeof(values[i]));
                        break;
                case COLUMN_EFFECTIVE_DATE:
                        qdata_format_date(s->snapshot_day[snapshot < s->n_intervals ? snapshot : 0], s->datetime,
                                          values[i], sizeof(values[i]));
                        break;
                }
                vp[i] = values[i];
                np[i] = c->name;
        }
        return buf_record(&s->out, s->format, np, vp, s->n_columns, s->written == 0);
}

/* The table columns of an aggregate: axes, DateInRange, metrics. */
static size_t aggregate_names(const QueryStream *s, const char **np) {
        size_t n = 0;

        for (size_t a = 0; a < s->n_axes; a++)
                np[n++] = s->axes[a].column;
        np[n++] = "DateInRange";
        for (size_t m = 0; m < s->n_metrics; m++)
                np[n++] = s->metric_columns[m];
        return n;
}

static int emit_cell(QueryStream *s, size_t cell) {
        char values[QUERY_AXES_MAX + 1 + QUERY_METRICS_MAX][COLUMN_VALUE_MAX];
        const char *vp[QUERY_AXES_MAX + 1 + QUERY_METRICS_MAX], *np[QUERY_AXES_MAX + 1 + QUERY_METRICS_MAX];
        size_t coords[QUERY_AXES_MAX + 1], rest = cell / s->n_intervals, n;
        int r;

        coords[s->n_axes] = cell % s->n_intervals;
        for (size_t a = s->n_axes; a-- > 0;) {
                coords[a] = rest % s->axes[a].n_positions;
                rest /= s->axes[a].n_positions;
        }
        if (s->format == QUERY_FORMAT_JSON) {
                format_cell_value(s, 0, cell, values[0], sizeof(values[0]));
                r = buf_printf(&s->out, "%s{\"value\":\"%s\",\"support\":\"%" PRIu64 "\",\"coordinates\":[",
                               cell > 0 ? "," : "", values[0],
                               qdata_metrics[s->metrics[0]].kind == QDATA_METRIC_RESIGNATION_RATE ? s->den[cell]
                                                                                                   : s->num[cell]);
                for (size_t a = 0; r >= 0 && a <= s->n_axes; a++)
                        r = buf_printf(&s->out, "%s%zu", a > 0 ? "," : "", coords[a]);
                return r < 0 ? r : buf_puts(&s->out, "]}");
        }
        n = aggregate_names(s, np);
        for (size_t a = 0; a < s->n_axes; a++)
                format_member(s->axes[a].dim, s->axes[a].positions[coords[a]], 0, s->axes[a].mode, values[a],
                              sizeof(values[a]));
        format_interval(s, coords[s->n_axes], values[s->n_axes], sizeof(values[s->n_axes]));
        for (size_t m = 0; m < s->n_metrics; m++)
                format_cell_value(s, m, cell, values[s->n_axes + 1 + m], sizeof(values[0]));
        for (size_t i = 0; i < n; i++)
                vp[i] = values[i];
        return buf_record(&s->out, s->format, np, vp, n, cell == 0);
}

/* The CellSetDTO axes, written at the end of a JSON aggregate answer. */
static int emit_axes(QueryStream *s) {
        _cleanup_json_ json_t *axes = json_array();
        _cleanup_free_ char *text = NULL;
        char buf[COLUMN_VALUE_MAX];
        int r;

        if (!axes)
                return -ENOMEM;
        for (size_t a = 0; a <= s->n_axes; a++) {
                json_t *positions = json_array(), *axis;

                if (!positions)
                        return -ENOMEM;
                if (a < s->n_axes) {
                        for (size_t p = 0; p < s->axes[a].n_positions; p++) {
                                const char *path = qdata_member_path(s->axes[a].dim, s->axes[a].positions[p]);
                                json_t *arr = json_array();

                                while (arr && *path) {
                                        size_t n = strcspn(path, "/");

                                        if (json_array_append_new(arr, json_stringn(path, n)) < 0)
                                                break;
                                        path += n + (path[n] == '/');
                                }
                                if (!arr || *path ||
                                    json_array_append_new(positions, json_pack("{s:o}", "path", arr)) < 0) {
                                        json_decref(positions);
                                        return -ENOMEM;
                                }
                        }
                        axis = json_pack("{s:{s:s,s:s},s:o}", "dimension", "name", seed_dimensions[s->axes[a].dim].id,
                                         "qualifyingPath", object_id(s), "positions", positions);
                } else {
                        for (size_t i = 0; i < s->n_intervals; i++) {
                                format_interval(s, i, buf, sizeof(buf));
                                if (json_array_append_new(positions, json_pack("{s:[s]}", "path", buf)) < 0) {
                                        json_decref(positions);
                                        return -ENOMEM;
                                }
                        }
                        axis = json_pack("{s:{s:s,s:s},s:o}", "dimension", "name", "DateInRange", "qualifyingPath",
                                         object_id(s), "positions", positions);
                }
                if (json_array_append_new(axes, axis) < 0)
                        return -ENOMEM;
        }
        text = json_dumps(axes, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        r = buf_puts(&s->out, "],\"axes\":");
        if (r >= 0)
                r = buf_puts(&s->out, text);
        return r < 0 ? r : buf_puts(&s->out, "}");
}

static int emit_head(QueryStream *s) {
        const char *np[QUERY_COLUMNS_MAX + QUERY_AXES_MAX + 1 + QUERY_METRICS_MAX];
        size_t n = 0;
        int r;

        if (s->kind == QUERY_AGGREGATE) {
                if (s->format == QUERY_FORMAT_JSON)
                        return buf_puts(&s->out, "{\"cells\":[");
                n = aggregate_names(s, np);
        } else
                for (; n < s->n_columns; n++)
                        np[n] = s->columns[n].name;

        switch (s->format) {
        case QUERY_FORMAT_JSON:
                if (s->omit_header)
                        return buf_puts(&s->out, "{\"rows\":[");
                r = buf_puts(&s->out, "{\"header\":");
                if (r >= 0)
                        r = buf_record(&s->out, QUERY_FORMAT_JSON, np, np, n, true);
                return r < 0 ? r : buf_puts(&s->out, ",\"rows\":[");
        case QUERY_FORMAT_CSV:
        case QUERY_FORMAT_JSONLINES:
                return s->omit_header ? 0 : buf_record(&s->out, s->format, np, np, n, true);
        default:
                return 0;
        }
}

/* Append records until the buffer holds about a chunk or the answer's body is complete. */
static int emit_body(QueryStream *s) {
        int r;

        while (s->out.len < QUERY_CHUNK) {
                if (s->kind == QUERY_AGGREGATE) {
                        if (s->next >= s->n_cells)
                                goto done;
                        if ((r = emit_cell(s, (size_t) s->next++)) < 0)
                                return r;
                        s->written++;
                        continue;
                }
                if (s->next >= s->population || s->written >= s->limit)
                        goto done;
                if (!record_passes(s, s->next % s->per_snapshot)) {
                        s->next++;
                        continue;
                }
                if (s->skipped < s->skip) {
                        s->skipped++;
                        s->next++;
                        continue;
                }
                if ((r = emit_list_record(s, s->next++)) < 0)
                        return r;
                s->written++;
        }
        return 0;
done:
        s->state = STATE_TAIL;
        return 0;
}

static int emit_tail(QueryStream *s) {
        if (s->format != QUERY_FORMAT_JSON)
                return 0;
        if (s->kind == QUERY_AGGREGATE)
                return emit_axes(s);
        return buf_puts(&s->out, "]}");
}

ssize_t query_stream_read(QueryStream *s, char *buf, size_t max) {
        size_t n;
        int r = 0;

        while (s->out.len == s->out_off) {
                s->out.len = s->out_off = 0;
                switch (s->state) {
                case STATE_HEAD:
                        r = emit_head(s);
                        s->state = STATE_BODY;
                        break;
                case STATE_BODY:
                        r = emit_body(s);
                        break;
                case STATE_TAIL:
                        r = emit_tail(s);
                        s->state = STATE_DONE;
                        break;
                case STATE_DONE:
                        return 0;
                }
                if (r < 0)
                        return r;
        }
        n = s->out.len - s->out_off;
        if (n > max)
                n = max;
        memcpy(buf, s->out.data + s->out_off, n);
        s->out_off += n;
        return (ssize_t) n;
}

/* ---- setup ----------------------------------------------------------------------------- */

QueryStream *query_stream_free(QueryStream *s) {
        if (!s)
                return NULL;
        free(s->num);
        free(s->den);
        free(s->out.data);
        free(s);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(QueryStream *, query_stream_free);

int query_stream_new(QueryKind kind, QueryFormat format, const char *body, size_t len, uint64_t rows,
                     char *err, size_t err_size, QueryStream **ret) {
        _cleanup_(query_stream_freep) QueryStream *s = NULL;
        _cleanup_json_ json_t *in = NULL;
        json_error_t jerr;
        Err e = { err, err_size };
        int r;

        if (kind < 0 || kind >= _QUERY_KIND_MAX || format < 0 || format >= _QUERY_FORMAT_MAX)
                return -EINVAL;
        r = qdata_check();
        if (r < 0)
                return r;
        in = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!in)
                return fail(&e, "The request body is not valid JSON (line %d, column %d).", jerr.line, jerr.column);
        if (!json_is_object(in))
                return fail(&e, "The request body must be a JSON object.");
        r = schema_check_query_enums(in, err, err_size);
        if (r < 0)
                return r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->kind = kind;
        s->format = format;
        s->mode = DISPLAY_DEFAULT;
        for (size_t d = 0; d < seed_dimensions_n; d++)
                s->n_leaves[d] = qdata_leaves(d, s->leaves[d], QDATA_MEMBERS_MAX);

        switch (kind) {
        case QUERY_AGGREGATE:
                r = read_aggregate(s, in, rows, &e);
                break;
        case QUERY_SQL:
                r = read_sql(s, in, rows, &e);
                break;
        default:
                r = read_list(s, in, rows, &e);
                break;
        }
        if (r < 0)
                return r;
        if (s->per_snapshot == 0)
                s->per_snapshot = 1;    /* only ever a divisor; population is 0 then */
        *ret = TAKE_PTR(s);
        return 0;
}
