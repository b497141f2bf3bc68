/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the job state table, operation mapping and write-body validation. */
#include <check.h>
#include <stdlib.h>

#include "jobs.h"
#include "macro.h"
#include "validate.h"

START_TEST(test_transition_table) {
        /* Exactly these moves are allowed; everything else is refused. */
        static const struct { JobState from, to; } allowed[] = {
                { JOB_QUEUED, JOB_RUNNING },   { JOB_QUEUED, JOB_CANCELLED }, { JOB_RUNNING, JOB_SUCCEEDED },
                { JOB_RUNNING, JOB_FAILED },   { JOB_RUNNING, JOB_QUEUED },   { JOB_FAILED, JOB_QUEUED },
        };
        int n = 0;

        for (int f = 0; f < _JOB_STATE_MAX; f++)
                for (int t = 0; t < _JOB_STATE_MAX; t++) {
                        bool expect = false;
                        for (size_t i = 0; i < ELEMENTSOF(allowed); i++)
                                expect |= allowed[i].from == (JobState) f && allowed[i].to == (JobState) t;
                        ck_assert_msg(job_state_transition_ok(f, t) == expect, "%s -> %s", job_state_to_string(f),
                                      job_state_to_string(t));
                        n += expect;
                }
        ck_assert_int_eq(n, (int) ELEMENTSOF(allowed));
        ck_assert(!job_state_transition_ok(_JOB_STATE_INVALID, JOB_QUEUED));
        ck_assert(job_state_is_final(JOB_CANCELLED) && !job_state_is_final(JOB_RUNNING));
        for (int s = 0; s < _JOB_STATE_MAX; s++)
                ck_assert_int_eq(job_state_from_string(job_state_to_string(s)), s);
        ck_assert_int_eq(job_state_from_string("done"), _JOB_STATE_INVALID);
}
END_TEST

START_TEST(test_operations) {
        ck_assert_int_eq(job_op_from_request("POST", "/v1/admin/permissions"), JOB_OP_CREATE);
        ck_assert_int_eq(job_op_from_request("PUT", "/v1/admin/permissions"), JOB_OP_UPDATE);
        ck_assert_int_eq(job_op_from_request("DELETE", "/v1/admin/permissions"), JOB_OP_DELETE);
        ck_assert_int_eq(job_op_from_request("PUT", "/v1/admin/permissions/users"), JOB_OP_ASSIGN);
        ck_assert_int_eq(job_op_from_request("DELETE", "/v1/admin/permissions/users"), JOB_OP_REMOVE);
        ck_assert_int_eq(job_op_from_request("POST", "/v1/admin/permissions/revert-to-parent"), JOB_OP_REVERT);
        ck_assert_int_eq(job_op_from_request("GET", "/v1/admin/permissions"), _JOB_OP_INVALID);
        for (int o = 0; o < _JOB_OP_MAX; o++)
                if (o != JOB_OP_PATCH) /* sent as PUT, queued by PATCH */
                        ck_assert_int_eq(job_op_from_request(job_op_method(o), job_op_path(o)), o);
        ck_assert_int_eq(job_op_from_request("PATCH", "/v1/admin/permissions"), JOB_OP_PATCH);
        ck_assert_int_eq(job_op_from_request("PATCH", "/v1/admin/permissions/abc"), JOB_OP_PATCH);
        ck_assert_int_eq(job_op_from_request("PATCH", "/v1/admin/permissions/abc/users"), _JOB_OP_INVALID);
        ck_assert_int_eq(job_op_from_request("PATCH", "/v1/admin/permissions/"), _JOB_OP_INVALID);
        ck_assert_str_eq(job_op_method(JOB_OP_PATCH), "PUT");
        ck_assert_str_eq(job_op_items_member(JOB_OP_DELETE), "permissionIds");
        ck_assert(!job_op_is_bulk(JOB_OP_ASSIGN) && job_op_is_bulk(JOB_OP_REVERT));
}
END_TEST

/* RFC 7396, appendix A: every example, target + patch = result. */
START_TEST(test_merge_patch_rfc7396) {
        static const char *const cases[][3] = {
                { "{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}" },
                { "{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}" },
                { "{\"a\":\"b\"}", "{\"a\":null}", "{}" },
                { "{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}" },
                { "{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}" },
                { "{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}" },
                { "{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}" },
                { "{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}" },
                { "[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]" },
                { "{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]" },
                { "{\"a\":\"foo\"}", "null", "null" },
                { "{\"a\":\"foo\"}", "\"bar\"", "\"bar\"" },
                { "{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}" },
                { "[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}" },
                { "{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_t *target = json_loads(cases[i][0], JSON_DECODE_ANY, NULL);
                json_t *patch = json_loads(cases[i][1], JSON_DECODE_ANY, NULL);
                json_t *want = json_loads(cases[i][2], JSON_DECODE_ANY, NULL), *got;
                char *before = json_dumps(target, JSON_ENCODE_ANY | JSON_COMPACT), *after;

                got = job_merge_patch(target, patch);
                ck_assert_msg(json_equal(got, want), "case %zu: %s + %s gave %s", i, cases[i][0], cases[i][1],
                              json_dumps(got, JSON_ENCODE_ANY | JSON_COMPACT));
                after = json_dumps(target, JSON_ENCODE_ANY | JSON_COMPACT);
                ck_assert_str_eq(before, after); /* the target is left as it was */
                free(before);
                free(after);
                json_decref(target);
                json_decref(patch);
                json_decref(want);
                json_decref(got);
        }
}
END_TEST

START_TEST(test_id_rules) {
        ck_assert(validate_correlation_id("abc"));
        ck_assert(validate_correlation_id("A_b-9"));
        ck_assert(!validate_correlation_id("ab"));
        ck_assert(!validate_correlation_id("has space"));
        ck_assert(!validate_correlation_id("ünïcode"));
        ck_assert(validate_correlation_id("0123456789012345678901234567890123456789012345678901234567890123"));
        ck_assert(!validate_correlation_id("01234567890123456789012345678901234567890123456789012345678901234"));

        ck_assert(validate_model_id("Location"));
        ck_assert(validate_model_id("Employee.Job_Name"));
        ck_assert(validate_model_id("_private"));
        ck_assert(!validate_model_id("9Lives"));
        ck_assert(!validate_model_id("Em-ployee"));
        ck_assert(!validate_model_id("ab"));
        ck_assert(!validate_model_id("Employee..Name"));
        ck_assert(!validate_model_id("Employee.9x"));
}
END_TEST

START_TEST(test_validate_reports_first_bad_path) {
        ValidateError e;
        json_t *root = NULL;
        const char *ok = "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\"}]}]}";
        const char *deep = "{\"permissions\":[{\"displayName\":\"a\"},{\"displayName\":\"b\",\"dataSecurityProfiles\":[{"
                           "\"propertySetConfig\":{\"propertyAccessConfigs\":[{\"propertyId\":\"Employee.P-1\"}]}}]}]}";

        ck_assert_int_eq(validate_write(JOB_OP_CREATE, ok, strlen(ok), 1000, &root, &e), 0);
        json_decref(root);
        ck_assert_int_eq(validate_write(JOB_OP_CREATE, deep, strlen(deep), 1000, &root, &e), -EINVAL);
        ck_assert_str_eq(e.path, "permissions[1].dataSecurityProfiles[0].propertySetConfig.propertyAccessConfigs[0].propertyId");
        ck_assert_int_eq(validate_write(JOB_OP_CREATE, ok, strlen(ok), 0, &root, &e), -EINVAL);
        ck_assert_str_eq(e.path, "permissions");
        ck_assert_int_eq(validate_write(JOB_OP_DELETE, "{\"permissionIds\":[\"a\",\"a\"]}", 27, 10, &root, &e), 0);
        json_decref(root);
        ck_assert_int_eq(validate_write(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\",\"displayName\":\"b\"}]}",
                                        55, 10, &root, &e),
                         -EINVAL); /* duplicate members are refused, not silently resolved */
        ck_assert_str_eq(e.path, "$");
}
END_TEST

int main(void) {
        Suite *s = suite_create("jobs");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_transition_table);
        tcase_add_test(tc, test_operations);
        tcase_add_test(tc, test_merge_patch_rfc7396);
        tcase_add_test(tc, test_id_rules);
        tcase_add_test(tc, test_validate_reports_first_bad_path);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
