/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pure parsers for the bits of HTTP that visierd and the simulator read themselves: decimal
 * numbers with bounds, application/x-www-form-urlencoded bodies, Cookie headers and boolean
 * query values, and points in time (RFC 3339 or Unix seconds).
 * Nothing here allocates except where stated, logs or knows about the server.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse a whole string as a decimal unsigned number in [min, max]. -EINVAL or -ERANGE. */
int parse_uint64(const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* "true"/"false" (any case). -EINVAL otherwise. */
int parse_bool(const char *s, bool *ret);

/*
 * Find field NAME in a form-urlencoded body of LEN bytes and %-decode its value ('+' is a
 * space) into a freshly allocated string. -ENOENT when absent, -EINVAL for bad escapes or
 * embedded NUL bytes, -ENOMEM. Only the first occurrence counts.
 */
int parse_form_field(const char *body, size_t len, const char *name, char **ret);

/* What a Cookie header holds, as far as the simulator cares. */
typedef struct CookieScan {
        unsigned n_tokens;      /* VisierASIDToken cookies seen */
        unsigned n_foreign;     /* any other cookies */
        const char *token;      /* first VisierASIDToken value, points into token_buf */
        char token_buf[256];
        bool token_truncated;   /* the value did not fit token_buf: cannot be a valid token */
} CookieScan;

/* Accumulate one Cookie header ("a=b; c=d") into SCAN. */
void parse_cookie_header(const char *header, CookieScan *scan);

/*
 * Split a comma-separated list value into an already allocated array of pointers into a
 * copy of S (owned by *ret_buf). Empty items are skipped. Returns the count or -ENOMEM/-E2BIG.
 */
int parse_comma_list(const char *s, char **ret_buf, const char **items, size_t max_items);

/* How many bytes of S to print with "%.*s" to show at most MAX bytes of it without cutting a
 * UTF-8 sequence in two. */
int utf8_prefix(const char *s, size_t max);

/* Whether S is valid UTF-8 (no overlong form, surrogate, code point past U+10FFFF or cut sequence). */
bool utf8_valid(const char *s);

/* Replace, in place, every byte of S that is not part of a valid UTF-8 sequence with '?', so
 * the text can go into JSON whatever came in; returns how many were replaced. */
size_t utf8_sanitize(char *s);

/* A point in time as milliseconds since the epoch: an RFC 3339 date-time
 * ("2026-01-31T08:00:00Z", "2026-01-31T09:00:00.250+01:00"; T or t, Z or z or an offset) or
 * a Unix time in whole seconds ("1769846400"), from 1970 to the end of 9999. -EINVAL for
 * anything else (a date alone, no offset, Feb 30), -ERANGE outside that span. */
#define PARSE_TIME_MAX_SEC 253402300799ULL /* 9999-12-31T23:59:59Z */
int parse_time_ms(const char *s, int64_t *ret);
