/* SPDX-License-Identifier: Apache-2.0 */
/* docs/openapi.yaml describes exactly the routes of the router: each method and path the
 * router serves appears under `paths:`, and nothing else does. */
#include <check.h>
#include <stdlib.h>

#include "harness.h"
#include "policy.h"
#include "manager.h"

#define MAX_OPS 128

typedef struct Op {
        char method[8];
        char pattern[160]; /* with {param} segments written as '*' */
} Op;

static void to_pattern(const char *path, char *out, size_t len) {
        size_t o = 0;

        for (const char *p = path; *p && o + 1 < len; p++) {
                if (*p == '{') {
                        const char *end = strchr(p, '}');
                        out[o++] = '*';
                        if (!end)
                                break;
                        p = end;
                } else
                        out[o++] = *p;
        }
        out[o] = '\0';
}

/* Operations in the YAML: a path is two spaces and "/...:" under paths:, a method four spaces. */
static size_t yaml_ops(const char *text, Op *ops) {
        char path[160] = "";
        bool in_paths = false;
        size_t n = 0;

        for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
                size_t len = strchr(line, '\n') ? (size_t) (strchr(line, '\n') - line) : strlen(line);

                if (len == 0)
                        continue;
                if (line[0] != ' ' && line[0] != '#') {
                        in_paths = strncmp(line, "paths:", 6) == 0;
                        continue;
                }
                if (!in_paths)
                        continue;
                if (len > 3 && line[0] == ' ' && line[1] == ' ' && line[2] == '/' && line[len - 1] == ':') {
                        char raw[160];
                        snprintf(raw, sizeof(raw), "%.*s", (int) (len - 3), line + 2);
                        to_pattern(raw, path, sizeof(path));
                        continue;
                }
                static const char *const methods[] = { "get", "post", "put", "delete", "patch", "head" };
                for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
                        size_t ml = strlen(methods[m]);
                        if (len == 4 + ml + 1 && strncmp(line, "    ", 4) == 0 && strncmp(line + 4, methods[m], ml) == 0 &&
                            line[4 + ml] == ':' && n < MAX_OPS) {
                                for (size_t k = 0; k < ml; k++)
                                        ops[n].method[k] = (char) (methods[m][k] - 'a' + 'A');
                                ops[n].method[ml] = '\0';
                                snprintf(ops[n].pattern, sizeof(ops[n].pattern), "%s", path);
                                n++;
                        }
                }
        }
        return n;
}

START_TEST(test_openapi_matches_router) {
        const char *top = getenv("TOP_SRCDIR") ? getenv("TOP_SRCDIR") : ".";
        const char *const *methods, *const *patterns;
        char path[512], *text;
        Op ops[MAX_OPS];
        size_t n_routes, n_ops;

        snprintf(path, sizeof(path), "%s/docs/openapi.yaml", top);
        text = harness_read_file(path);
        ck_assert_msg(text, "cannot read %s", path);
        n_ops = yaml_ops(text, ops);
        n_routes = api_routes(&methods, &patterns);
        ck_assert_uint_gt(n_routes, 10);

        for (size_t i = 0; i < n_routes; i++) {
                bool found = false;
                for (size_t k = 0; k < n_ops && !found; k++)
                        found = streq(ops[k].method, methods[i]) && streq(ops[k].pattern, patterns[i]);
                ck_assert_msg(found, "docs/openapi.yaml does not describe %s %s", methods[i], patterns[i]);
        }
        for (size_t k = 0; k < n_ops; k++) {
                bool found = false;
                for (size_t i = 0; i < n_routes && !found; i++)
                        found = streq(ops[k].method, methods[i]) && streq(ops[k].pattern, patterns[i]);
                ck_assert_msg(found, "docs/openapi.yaml describes %s %s, which visierd does not serve", ops[k].method,
                              ops[k].pattern);
        }
        ck_assert_uint_eq(n_ops, n_routes);
        free(text);
}
END_TEST

/* The policy table and the router agree: every Visier operation the router serves with a
 * handler of its own is a row of the table, of the class that handler is for (reads and data
 * queries: read; permission writes: publish; sign-in: local); the table has each operation
 * once; and each of visierd's own routes is outside Visier's API. */
START_TEST(test_policy_table_matches_router) {
        const char *const *methods, *const *patterns;
        size_t n_routes = api_routes(&methods, &patterns), n_local = 0, n_served = 0;

        for (size_t i = 0; i < policy_count(); i++)
                for (size_t k = i + 1; k < policy_count(); k++)
                        ck_assert_msg(!(streq(policy_row(i)->method, policy_row(k)->method) &&
                                        streq(policy_row(i)->pattern, policy_row(k)->pattern)),
                                      "%s %s is in the table twice", policy_row(i)->method, policy_row(i)->pattern);
        for (size_t i = 0; i < n_routes; i++) {
                const PolicyRow *row = NULL;
                PolicyClass want;

                row = policy_find(methods[i], patterns[i]);
                if (strncmp(patterns[i], "/v1/", 4) != 0) {
                        ck_assert_msg(!row, "%s %s is visierd's own route but a Visier operation", methods[i], patterns[i]);
                        continue;
                }
                ck_assert_msg(row, "the router serves %s %s, which Visier's definitions do not have", methods[i],
                              patterns[i]);
                if (strstr(patterns[i], "visierSecureToken") || strstr(patterns[i], "oauth2"))
                        want = POLICY_LOCAL, n_local++;
                else if (streq(methods[i], "GET") || strncmp(patterns[i], "/v1/data/query/", 15) == 0)
                        want = POLICY_READ;
                else
                        want = POLICY_PUBLISH;
                ck_assert_msg(row->class == want, "%s %s: the table says %s, the router serves it as %s", methods[i],
                              patterns[i], policy_class_to_string(row->class), policy_class_to_string(want));
                n_served++;
        }
        ck_assert_uint_eq(n_local, 2);
        ck_assert_uint_ge(n_served, 20);
        ck_assert_uint_ge(policy_count(), 259);
}
END_TEST

int main(void) {
        Suite *s = suite_create("openapi");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_openapi_matches_router);
        tcase_add_test(tc, test_policy_table_matches_router);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
