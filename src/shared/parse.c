/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pure parsing helpers: bounded decimal numbers, form bodies with %-decoding, Cookie headers,
 * booleans, comma lists and times. They never log and never keep state between calls.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "parse.h"

int parse_uint64(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        unsigned long long v;
        char *end = NULL;

        if (!s || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (errno != 0 || !end || *end != '\0')
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = (uint64_t) v;
        return 0;
}

int parse_bool(const char *s, bool *ret) {
        if (!s)
                return -EINVAL;
        if (strcaseeq(s, "true")) {
                *ret = true;
                return 0;
        }
        if (strcaseeq(s, "false")) {
                *ret = false;
                return 0;
        }
        return -EINVAL;
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Decode LEN bytes of S (form encoding) into a new NUL-terminated string. */
static int form_decode(const char *s, size_t len, char **ret) {
        _cleanup_free_ char *out = NULL;
        size_t i, j = 0;

        out = malloc(len + 1);
        if (!out)
                return -ENOMEM;
        for (i = 0; i < len; i++) {
                char c = s[i];

                if (c == '+')
                        c = ' ';
                else if (c == '%') {
                        int hi, lo;

                        if (i + 2 >= len)
                                return -EINVAL;
                        hi = hexval(s[i + 1]);
                        lo = hexval(s[i + 2]);
                        if (hi < 0 || lo < 0)
                                return -EINVAL;
                        c = (char) (hi * 16 + lo);
                        i += 2;
                }
                if (c == '\0')
                        return -EINVAL;
                out[j++] = c;
        }
        out[j] = '\0';
        *ret = TAKE_PTR(out);
        return 0;
}

int parse_form_field(const char *body, size_t len, const char *name, char **ret) {
        size_t pos = 0;

        while (pos < len) {
                const char *pair = body + pos, *amp, *eq;
                size_t pair_len, key_len;
                _cleanup_free_ char *key = NULL;
                int r;

                amp = memchr(pair, '&', len - pos);
                pair_len = amp ? (size_t) (amp - pair) : len - pos;
                pos += pair_len + 1;
                if (pair_len == 0)
                        continue;

                eq = memchr(pair, '=', pair_len);
                key_len = eq ? (size_t) (eq - pair) : pair_len;
                r = form_decode(pair, key_len, &key);
                if (r < 0)
                        return r;
                if (!streq(key, name))
                        continue;
                if (!eq)
                        return form_decode("", 0, ret);
                return form_decode(eq + 1, pair_len - key_len - 1, ret);
        }
        return -ENOENT;
}

void parse_cookie_header(const char *header, CookieScan *scan) {
        const char *p = header;

        while (p && *p) {
                const char *end, *eq, *name_end, *value;
                size_t value_len;

                while (*p == ' ' || *p == '\t' || *p == ';')
                        p++;
                if (!*p)
                        break;
                end = strchr(p, ';');
                if (!end)
                        end = p + strlen(p);
                eq = memchr(p, '=', (size_t) (end - p));
                name_end = eq ? eq : end;
                while (name_end > p && (name_end[-1] == ' ' || name_end[-1] == '\t'))
                        name_end--;

                if (eq && (size_t) (name_end - p) == strlen("VisierASIDToken") &&
                    strncmp(p, "VisierASIDToken", (size_t) (name_end - p)) == 0) {
                        scan->n_tokens++;
                        value = eq + 1;
                        while (value < end && (*value == ' ' || *value == '\t'))
                                value++;
                        value_len = (size_t) (end - value);
                        while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
                                value_len--;
                        /* RFC 6265 allows a double-quoted value. */
                        if (value_len >= 2 && value[0] == '"' && value[value_len - 1] == '"') {
                                value++;
                                value_len -= 2;
                        }
                        if (scan->n_tokens == 1) {
                                if (value_len >= sizeof(scan->token_buf)) {
                                        scan->token_truncated = true;
                                        value_len = 0;
                                }
                                memcpy(scan->token_buf, value, value_len);
                                scan->token_buf[value_len] = '\0';
                                scan->token = scan->token_buf;
                        }
                } else if (name_end > p)
                        scan->n_foreign++;

                p = *end ? end + 1 : end;
        }
}

int parse_comma_list(const char *s, char **ret_buf, const char **items, size_t max_items) {
        _cleanup_free_ char *buf = NULL;
        char *p, *save = NULL;
        size_t n = 0;

        buf = strdup(s);
        if (!buf)
                return -ENOMEM;
        for (p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
                while (*p == ' ')
                        p++;
                if (!*p)
                        continue;
                if (n >= max_items)
                        return -E2BIG;
                items[n++] = p;
        }
        *ret_buf = TAKE_PTR(buf);
        return (int) n;
}

int utf8_prefix(const char *s, size_t max) {
        size_t n = strlen(s);

        if (n <= max)
                return (int) n;
        n = max;
        while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
                n--;
        return (int) n;
}

/* The length of the valid UTF-8 sequence at S (1 to 4), or 0 when it is not one (an
 * overlong form, a surrogate, past U+10FFFF, or cut short). */
static size_t utf8_sequence(const unsigned char *s) {
        size_t n;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xC2 && s[0] <= 0xDF)
                n = 2, cp = s[0] & 0x1F;
        else if (s[0] >= 0xE0 && s[0] <= 0xEF)
                n = 3, cp = s[0] & 0x0F;
        else if (s[0] >= 0xF0 && s[0] <= 0xF4)
                n = 4, cp = s[0] & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3F);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
                return 0;
        return n;
}

bool utf8_valid(const char *s) {
        for (const unsigned char *c = (const unsigned char *) s; *c;) {
                size_t n = utf8_sequence(c);

                if (n == 0)
                        return false;
                c += n;
        }
        return true;
}

size_t utf8_sanitize(char *s) {
        size_t replaced = 0;

        for (unsigned char *c = (unsigned char *) s; *c;) {
                size_t n = utf8_sequence(c);

                if (n == 0) {
                        *c++ = '?';
                        replaced++;
                } else
                        c += n;
        }
        return replaced;
}

/* Exactly n decimal digits at *p, advancing it. */
static bool time_digits(const char **p, size_t n, int *ret) {
        int v = 0;

        for (size_t i = 0; i < n; i++) {
                if (!isdigit((unsigned char) (*p)[i]))
                        return false;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *ret = v;
        return true;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d) {
        int64_t era, yoe, doy, doe;

        y -= m <= 2;
        era = (y >= 0 ? y : y - 399) / 400;
        yoe = y - era * 400;
        doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

int parse_time_ms(const char *s, int64_t *ret) {
        static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        int y, mo, d, h, mi, sec, oh = 0, om = 0, ms = 0, sign = 0;
        const char *p = s;
        uint64_t unix_s;
        int64_t v;

        if (!s || !*s)
                return -EINVAL;
        if (strspn(s, "0123456789") == strlen(s)) {
                if (parse_uint64(s, 0, PARSE_TIME_MAX_SEC, &unix_s) < 0)
                        return -ERANGE;
                *ret = (int64_t) unix_s * 1000;
                return 0;
        }
        if (!time_digits(&p, 4, &y) || *p++ != '-' || !time_digits(&p, 2, &mo) || *p++ != '-' ||
            !time_digits(&p, 2, &d) || (*p != 'T' && *p != 't'))
                return -EINVAL;
        p++;
        if (!time_digits(&p, 2, &h) || *p++ != ':' || !time_digits(&p, 2, &mi) || *p++ != ':' ||
            !time_digits(&p, 2, &sec))
                return -EINVAL;
        if (*p == '.') {
                size_t n;

                p++;
                n = strspn(p, "0123456789");
                if (n == 0)
                        return -EINVAL;
                for (size_t i = 0; i < 3; i++)
                        ms = ms * 10 + (i < n ? p[i] - '0' : 0);
                p += n;
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                sign = *p++ == '+' ? 1 : -1;
                if (!time_digits(&p, 2, &oh) || *p++ != ':' || !time_digits(&p, 2, &om))
                        return -EINVAL;
        } else
                return -EINVAL;
        if (*p)
                return -EINVAL;
        if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
            (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) || h > 23 || mi > 59 ||
            sec > 60 || oh > 23 || om > 59)
                return -EINVAL;
        if (sec == 60) /* a leap second: the last second of the minute */
                sec = 59;
        v = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
        if (v < 0 || v > (int64_t) PARSE_TIME_MAX_SEC)
                return -ERANGE;
        *ret = v * 1000 + ms;
        return 0;
}
