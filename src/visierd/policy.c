/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "policy-table.h"

size_t policy_count(void) {
        return ELEMENTSOF(policy_rows);
}

const PolicyRow *policy_row(size_t i) {
        return i < ELEMENTSOF(policy_rows) ? &policy_rows[i] : NULL;
}

const PolicyRow *policy_find(const char *method, const char *pattern) {
        for (size_t i = 0; i < ELEMENTSOF(policy_rows); i++)
                if (streq(policy_rows[i].method, method) && streq(policy_rows[i].pattern, pattern))
                        return &policy_rows[i];
        return NULL;
}

const char *policy_class_to_string(PolicyClass c) {
        static const char *const names[] = { [POLICY_LOCAL] = "local", [POLICY_READ] = "read",
                                              [POLICY_PUBLISH] = "publish", [POLICY_WRITE] = "write",
                                              [POLICY_DENIED] = "denied" };

        return (unsigned) c < ELEMENTSOF(names) ? names[c] : NULL;
}

/* One "METHOD PATH" entry of the list (Visier's path, {parameter}s or '*'s), into method and
 * pattern; false if it is not that shape. */
static bool parse_entry(const char *s, size_t n, char *method, size_t msize, char *pattern, size_t psize) {
        size_t i = 0, m = 0, p = 0;

        while (i < n && s[i] == ' ')
                i++;
        while (i < n && s[i] >= 'A' && s[i] <= 'Z' && m + 1 < msize)
                method[m++] = s[i++];
        method[m] = '\0';
        if (m == 0 || i >= n || s[i] != ' ')
                return false;
        while (i < n && s[i] == ' ')
                i++;
        if (i >= n || s[i] != '/')
                return false;
        while (i < n && s[i] != ' ' && p + 1 < psize) {
                if (s[i] == '{') {
                        const char *end = memchr(s + i, '}', n - i);

                        if (!end)
                                return false;
                        pattern[p++] = '*';
                        i = (size_t) (end - s) + 1;
                } else
                        pattern[p++] = s[i++];
        }
        pattern[p] = '\0';
        while (i < n && s[i] == ' ')
                i++;
        return i == n;
}

int policy_allow_check(const char *list, char *bad, size_t badlen) {
        for (const char *e = list; e && *e;) {
                const char *comma = strchr(e, ',');
                size_t n = comma ? (size_t) (comma - e) : strlen(e);
                char method[16], pattern[256];
                const PolicyRow *row;

                if (!parse_entry(e, n, method, sizeof(method), pattern, sizeof(pattern)) ||
                    !(row = policy_find(method, pattern)) || row->class != POLICY_DENIED) {
                        while (n > 0 && *e == ' ')
                                e++, n--;
                        while (n > 0 && e[n - 1] == ' ')
                                n--;
                        snprintf(bad, badlen, "%.*s", (int) (n > 200 ? 200 : n), e);
                        return -1;
                }
                e = comma ? comma + 1 : NULL;
        }
        return 0;
}

bool policy_allowed(const char *list, const PolicyRow *row) {
        for (const char *e = list; row && e && *e;) {
                const char *comma = strchr(e, ',');
                size_t n = comma ? (size_t) (comma - e) : strlen(e);
                char method[16], pattern[256];

                if (parse_entry(e, n, method, sizeof(method), pattern, sizeof(pattern)) && streq(method, row->method) &&
                    streq(pattern, row->pattern))
                        return true;
                e = comma ? comma + 1 : NULL;
        }
        return false;
}
