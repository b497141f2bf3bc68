/* SPDX-License-Identifier: Apache-2.0 */
/* docs/openapi.yaml describes exactly what visierd serves: each method and path of the
 * router's own routes and each operation of the policy table appears under `paths:`, with the
 * table's class for the table's operations, and nothing else does. */
#include <check.h>
#include <stdlib.h>

#include "harness.h"
#include "policy.h"
#include "manager.h"

#define MAX_OPS 512

typedef struct Op {
        char method[8];
        char pattern[160]; /* with {param} segments written as '*' */
        char policy[16];   /* x-visierd-policy, or "" */
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
                                ops[n].policy[0] = '\0';
                                n++;
                        }
                }
                if (n > 0 && len > 24 && strncmp(line, "      x-visierd-policy: ", 24) == 0)
                        snprintf(ops[n - 1].policy, sizeof(ops[n - 1].policy), "%.*s", (int) (len - 24), line + 24);
        }
        return n;
}

static bool is_route(const char *method, const char *pattern, const char *const *methods,
                     const char *const *patterns, size_t n_routes) {
        for (size_t i = 0; i < n_routes; i++)
                if (streq(method, methods[i]) && streq(pattern, patterns[i]))
                        return true;
        return false;
}

START_TEST(test_openapi_matches_router) {
        const char *top = getenv("TOP_SRCDIR") ? getenv("TOP_SRCDIR") : ".";
        const char *const *methods, *const *patterns;
        char path[512], *text;
        static Op ops[MAX_OPS];
        size_t n_routes, n_ops, n_table_only = 0;

        snprintf(path, sizeof(path), "%s/docs/openapi.yaml", top);
        text = harness_read_file(path);
        ck_assert_msg(text, "cannot read %s", path);
        n_ops = yaml_ops(text, ops);
        ck_assert_uint_lt(n_ops, MAX_OPS);
        n_routes = api_routes(&methods, &patterns);
        ck_assert_uint_gt(n_routes, 10);

        /* Each route and each table row is described once. */
        for (size_t i = 0; i < n_routes; i++) {
                bool found = false;
                for (size_t k = 0; k < n_ops && !found; k++)
                        found = streq(ops[k].method, methods[i]) && streq(ops[k].pattern, patterns[i]);
                ck_assert_msg(found, "docs/openapi.yaml does not describe %s %s", methods[i], patterns[i]);
        }
        for (size_t i = 0; i < policy_count(); i++) {
                const PolicyRow *row = policy_row(i);
                bool found = false;

                for (size_t k = 0; k < n_ops && !found; k++) {
                        if (!streq(ops[k].method, row->method) || !streq(ops[k].pattern, row->pattern))
                                continue;
                        found = true;
                        /* Served by the table (no handler of the router's own): its class is shown. */
                        if (!is_route(row->method, row->pattern, methods, patterns, n_routes)) {
                                ck_assert_msg(streq(ops[k].policy, policy_class_to_string(row->class)),
                                              "docs/openapi.yaml gives %s %s the class '%s', the table %s", row->method,
                                              row->pattern, ops[k].policy, policy_class_to_string(row->class));
                                n_table_only++;
                        }
                }
                ck_assert_msg(found, "docs/openapi.yaml does not describe %s %s of the policy table", row->method,
                              row->pattern);
        }
        /* And nothing else. */
        for (size_t k = 0; k < n_ops; k++) {
                ck_assert_msg(is_route(ops[k].method, ops[k].pattern, methods, patterns, n_routes) ||
                                      policy_find(ops[k].method, ops[k].pattern),
                              "docs/openapi.yaml describes %s %s, which visierd does not serve", ops[k].method,
                              ops[k].pattern);
                for (size_t j = k + 1; j < n_ops; j++)
                        ck_assert_msg(!streq(ops[k].method, ops[j].method) || !streq(ops[k].pattern, ops[j].pattern),
                                      "docs/openapi.yaml describes %s %s twice", ops[k].method, ops[k].pattern);
        }
        ck_assert_uint_gt(n_table_only, 200);
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
                /* visierd's own extensions of Visier's API: merge patches of permissions. */
                if (streq(methods[i], "PATCH") && (streq(patterns[i], "/v1/admin/permissions") ||
                                                   streq(patterns[i], "/v1/admin/permissions/*"))) {
                        ck_assert_msg(!row, "PATCH %s is Visier's now: serve Visier's operation", patterns[i]);
                        continue;
                }
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
