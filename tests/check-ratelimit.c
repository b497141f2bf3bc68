/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the rate budget arithmetic (time is passed in, so no clock is involved). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "ratelimit.h"

#define T0 (1000 * USEC_PER_SEC)

START_TEST(test_minute_burst_then_spacing) {
        RateLimit rl;
        usec_t wait = 0;

        ratelimit_init(&rl, 100, 6000, T0);
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), 0);
        ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), -EAGAIN);
        ck_assert_uint_eq(wait, 600 * USEC_PER_MSEC); /* one call every 0.6 s at 100/min */
        ck_assert_int_eq(ratelimit_try_take(&rl, T0 + 600 * USEC_PER_MSEC, &wait), 0);
        ck_assert_int_eq(ratelimit_try_take(&rl, T0 + 600 * USEC_PER_MSEC, &wait), -EAGAIN);
        ratelimit_done(&rl);
}
END_TEST

START_TEST(test_hour_cap_binds) {
        RateLimit rl;
        usec_t wait = 0, t = T0;
        unsigned m, h;

        ratelimit_init(&rl, 100, 150, T0);
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, t, &wait), 0);
        t += 60 * USEC_PER_SEC; /* the minute bucket is full again, the hour one nearly empty */
        ratelimit_snapshot(&rl, t, &m, &h);
        ck_assert_uint_eq(m, 100);
        ck_assert_uint_eq(h, 52); /* 50 left + 2.5 refilled over a minute at 150/h */
        for (int i = 0; i < 52; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, t, &wait), 0);
        ck_assert_int_eq(ratelimit_try_take(&rl, t, &wait), -EAGAIN);
        ck_assert_uint_gt(wait, 10 * USEC_PER_SEC); /* the hour bucket refills slowly: 24 s a call */
        ratelimit_done(&rl);
}
END_TEST

START_TEST(test_headers_only_lower) {
        RateLimit rl;
        usec_t wait = 0;
        unsigned m, h;

        ratelimit_init(&rl, 100, 6000, T0);
        ratelimit_observe(&rl, 3, -1, T0);
        ratelimit_snapshot(&rl, T0, &m, &h);
        ck_assert_uint_eq(m, 3);
        ck_assert_uint_eq(h, 6000);
        ratelimit_observe(&rl, 50, 10, T0); /* a higher Remaining never raises our count */
        ratelimit_snapshot(&rl, T0, &m, &h);
        ck_assert_uint_eq(m, 3);
        ck_assert_uint_eq(h, 10);
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), 0);
        ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), -EAGAIN);
        ratelimit_done(&rl);
}
END_TEST

START_TEST(test_retry_after_blocks) {
        RateLimit rl;
        usec_t wait = 0;

        ratelimit_init(&rl, 100, 6000, T0);
        ratelimit_block(&rl, T0 + 2 * USEC_PER_SEC);
        ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), -EAGAIN);
        ck_assert_uint_eq(wait, 2 * USEC_PER_SEC);
        ck_assert_int_eq(ratelimit_try_take(&rl, T0 + 2 * USEC_PER_SEC, &wait), 0);
        ratelimit_done(&rl);
}
END_TEST

START_TEST(test_background_leaves_a_reserve) {
        RateLimit rl;
        usec_t wait = 0;
        int background = 0;

        ratelimit_init(&rl, 100, 6000, T0);
        /* Background work stops while a quarter of a minute's budget is left... */
        while (ratelimit_try_take_low(&rl, T0, 0.25, &wait) == 0)
                background++;
        ck_assert_int_eq(background, 75);
        ck_assert_uint_gt(wait, 0);
        /* ...which interactive calls can still use. */
        for (int i = 0; i < 25; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), 0);
        ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), -EAGAIN);
        ratelimit_done(&rl);
}
END_TEST

static Suite *ratelimit_suite(void) {
        Suite *s = suite_create("ratelimit");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_minute_burst_then_spacing);
        tcase_add_test(tc, test_hour_cap_binds);
        tcase_add_test(tc, test_headers_only_lower);
        tcase_add_test(tc, test_retry_after_blocks);
        tcase_add_test(tc, test_background_leaves_a_reserve);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(ratelimit_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
