/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for named export definitions: validation, parameters, formats, JSON pointers;
 * and the shipped examples load cleanly. */
#include <check.h>
#include <stdlib.h>

#include "exports.h"
#include "harness.h"

START_TEST(test_json_pointer) {
        json_t *j = json_loads("{\"a\":{\"b/c\":[10,{\"~d\":\"x\"}]}}", 0, NULL);

        ck_assert_int_eq(json_integer_value(json_pointer_get(j, "/a/b~1c/0")), 10);
        ck_assert_str_eq(json_string_value(json_pointer_get(j, "/a/b~1c/1/~0d")), "x");
        ck_assert_ptr_null(json_pointer_get(j, "/a/nope"));
        ck_assert_ptr_null(json_pointer_get(j, "/a/b~1c/7"));
        ck_assert_ptr_null(json_pointer_get(j, "a"));
        ck_assert_ptr_eq(json_pointer_get(j, ""), j);
        json_decref(j);
}
END_TEST

START_TEST(test_formats) {
        ck_assert_int_eq(export_format_from_accept("text/csv"), EXPORT_CSV);
        ck_assert_int_eq(export_format_from_accept("application/xml, application/jsonlines;q=0.9"), EXPORT_JSONL);
        ck_assert_int_eq(export_format_from_accept("application/x-ndjson"), EXPORT_JSONL);
        ck_assert_int_eq(export_format_from_accept("*/*"), _EXPORT_FORMAT_INVALID);
        ck_assert_int_eq(export_format_from_string("json"), EXPORT_JSON);
        ck_assert_str_eq(export_format_media_type(EXPORT_CSV), "text/csv");
}
END_TEST

static int validate(const char *name, const char *text, char *err, size_t len) {
        json_t *j = json_loads(text, 0, NULL);
        int r;

        ck_assert_ptr_nonnull(j);
        r = export_validate(name, j, err, len);
        json_decref(j);
        return r;
}

START_TEST(test_validation_names_the_member) {
        char err[EXPORT_ERROR_MAX];

        ck_assert_int_eq(validate("ok", "{\"query\":\"list\",\"body\":{}}", err, sizeof(err)), 0);
        ck_assert_int_eq(validate("bad name", "{\"query\":\"list\",\"body\":{}}", err, sizeof(err)), -EINVAL);
        ck_assert_int_eq(validate("x", "{\"query\":\"pivot\",\"body\":{}}", err, sizeof(err)), -EINVAL);
        ck_assert_str_eq(err, "query: must be aggregate, list, sql or snapshot");
        ck_assert_int_eq(validate("x", "{\"query\":\"list\",\"format\":\"xlsx\",\"body\":{}}", err, sizeof(err)), -EINVAL);
        ck_assert_str_eq(err, "format: must be csv, jsonl or json");
        ck_assert_int_eq(validate("x", "{\"query\":\"list\",\"body\":{},\"extra\":1}", err, sizeof(err)), -EINVAL);
        ck_assert_int_eq(validate("x", "{\"query\":\"list\",\"body\":{\"n\":1},\"parameters\":{\"p\":{\"path\":\"/n\"}}}",
                                  err, sizeof(err)),
                         -EINVAL);
        ck_assert_str_eq(err, "parameters.p.path: /n must name a string in body");
        ck_assert_int_eq(validate("x",
                                  "{\"query\":\"list\",\"body\":{\"d\":\"2025\"},\"parameters\":{\"p\":{\"path\":\"/d\","
                                  "\"pattern\":\"^[0-9]+$\",\"default\":\"abc\"}}}",
                                  err, sizeof(err)),
                         -EINVAL);
        ck_assert_str_eq(err, "parameters.p.default: 'abc' does not match the pattern");
}
END_TEST

START_TEST(test_examples_load_and_build) {
        const char *top = getenv("TOP_SRCDIR") ? getenv("TOP_SRCDIR") : ".";
        char dir[512], err[EXPORT_ERROR_MAX];
        Exports *e = NULL;
        char **errors = NULL;
        size_t n = 0;
        json_t *body;
        const Export *x;

        snprintf(dir, sizeof(dir), "%s/etc/examples/exports.d", top);
        ck_assert_int_eq(exports_load(dir, &e, &errors, &n), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert_uint_eq(e->n, 2);
        x = exports_find(e, "headcount-by-country");
        ck_assert_ptr_nonnull(x);
        ck_assert_int_eq(export_build_body(x, (ExportParam[]) { { "from", "2024-04-01" } }, 1, &body, err, sizeof(err)), 0);
        ck_assert_str_eq(json_string_value(json_pointer_get(body, "/query/timeIntervals/fromDateTime")), "2024-04-01");
        json_decref(body);
        ck_assert_int_eq(export_build_body(x, (ExportParam[]) { { "from", "April" } }, 1, &body, err, sizeof(err)), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err, "from: 'April' is not a valid value"));
        ck_assert_int_eq(export_build_body(x, (ExportParam[]) { { "to", "2024-04-01" } }, 1, &body, err, sizeof(err)), -EINVAL);
        ck_assert_str_eq(err, "to: export headcount-by-country has no such parameter");
        exports_free(e);
}
END_TEST

int main(void) {
        Suite *s = suite_create("exports");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_json_pointer);
        tcase_add_test(tc, test_formats);
        tcase_add_test(tc, test_validation_names_the_member);
        tcase_add_test(tc, test_examples_load_and_build);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
