/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for src/shared/parse.c's time parser: RFC 3339 date-times and Unix seconds, as
 * GET /jobs?since= takes them, and what it must refuse.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "macro.h"
#include "parse.h"

START_TEST(test_time_accepted) {
        static const struct {
                const char *text;
                int64_t ms;
        } ok[] = {
                { "0", 0 },
                { "1769846400", 1769846400000 },
                { "2026-01-31T08:00:00Z", 1769846400000 },
                { "2026-01-31t08:00:00z", 1769846400000 },
                { "2026-01-31T09:00:00+01:00", 1769846400000 },
                { "2026-01-31T02:30:00-05:30", 1769846400000 },
                { "2026-01-31T08:00:00.250Z", 1769846400250 },
                { "2026-01-31T08:00:00.2Z", 1769846400200 },
                { "2026-01-31T08:00:00.123456789Z", 1769846400123 },
                { "1970-01-01T00:00:00Z", 0 },
                { "2024-02-29T00:00:00Z", 1709164800000 },
                { "2000-02-29T00:00:00Z", 951782400000 },
                { "2016-12-31T23:59:60Z", 1483228799000 }, /* a leap second */
                { "9999-12-31T23:59:59Z", 253402300799000 },
        };

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                int64_t ms = -1;

                ck_assert_msg(parse_time_ms(ok[i].text, &ms) == 0, "%s refused", ok[i].text);
                ck_assert_msg(ms == ok[i].ms, "%s: %lld, expected %lld", ok[i].text, (long long) ms,
                              (long long) ok[i].ms);
        }
}
END_TEST

START_TEST(test_time_refused) {
        static const char *const bad[] = {
                "", "now", "-1", "+5", "1.5", "12a", "2026-01-31", "2026-01-31T08:00:00", "2026-01-31 08:00:00Z",
                "2026-1-31T08:00:00Z", "2026-01-31T8:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
                "2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-31T24:00:00Z",
                "2026-01-31T08:60:00Z", "2026-01-31T08:00:61Z", "2026-01-31T08:00:00.Z", "2026-01-31T08:00:00+0100",
                "2026-01-31T08:00:00+24:00", "2026-01-31T08:00:00Zjunk", "2026-01-31T08:00:00Z ",
        };
        int64_t ms = 42;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ck_assert_msg(parse_time_ms(bad[i], &ms) < 0, "'%s' accepted", bad[i]);
        ck_assert_int_eq(ms, 42); /* never written on failure */
        ck_assert_int_eq(parse_time_ms("253402300800", &ms), -ERANGE);
        ck_assert_int_eq(parse_time_ms("99999999999999999999999", &ms), -ERANGE);
        ck_assert_int_eq(parse_time_ms("1970-01-01T00:00:00+00:01", &ms), -ERANGE); /* before the epoch */
        ck_assert_int_eq(parse_time_ms(NULL, &ms), -EINVAL);
}
END_TEST

int main(void) {
        Suite *s = suite_create("parse");
        TCase *tc = tcase_create("time");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_time_accepted);
        tcase_add_test(tc, test_time_refused);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
