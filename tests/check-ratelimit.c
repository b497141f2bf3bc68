/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the rate budget arithmetic (time is passed in, so no clock is involved). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "ratelimit.h"

#define T0 (1000 * USEC_PER_SEC)

/* A place comes back a window's length plus the slack after its take, up to a slot late. */
#define MINUTE_BACK (60 * USEC_PER_SEC + RATELIMIT_SLACK)
#define HOUR_BACK (3600 * USEC_PER_SEC + RATELIMIT_SLACK)
#define SLOT(back) ((back) / (RATELIMIT_SLOTS - 4) + 1)

START_TEST(test_minute_burst_then_a_window) {
        RateLimit rl;
        usec_t wait = 0;
        unsigned m, h;

        ratelimit_init(&rl, 100, 6000);
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), 0);
        /* Visier's window may have opened with the first of these: no call until every
         * place is back, a minute and the slack later (not one every 0.6 s). */
        ck_assert_int_eq(ratelimit_try_take(&rl, T0, &wait), -EAGAIN);
        ck_assert_uint_ge(wait, MINUTE_BACK);
        ck_assert_uint_lt(wait, MINUTE_BACK + SLOT(MINUTE_BACK));
        ck_assert_int_eq(ratelimit_try_take(&rl, T0 + 61 * USEC_PER_SEC, &wait), -EAGAIN);
        ratelimit_snapshot(&rl, T0 + 61 * USEC_PER_SEC, &m, &h);
        ck_assert_uint_eq(m, 0);
        ck_assert_uint_eq(h, 5900);
        ratelimit_snapshot(&rl, T0 + MINUTE_BACK + SLOT(MINUTE_BACK), &m, &h);
        ck_assert_uint_eq(m, 100);
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, T0 + MINUTE_BACK + SLOT(MINUTE_BACK), &wait), 0);
        ratelimit_done(&rl);
}
END_TEST

/* Takes at uneven times, as fast as the budget allows: no stretch of a window's length plus
 * the slack, wherever it starts, holds more than the cap, and the budget is not idle while
 * calls wait either. A token bucket refilled continuously fails the first check. */
START_TEST(test_no_window_holds_more_than_the_cap) {
        enum { CAP = 100, MAX_TAKES = 20000 };
        static usec_t at[MAX_TAKES];
        RateLimit rl;
        usec_t t = T0, end = T0 + 20 * 60 * USEC_PER_SEC, wait = 0;
        unsigned n = 0, seed = 12345;

        ratelimit_init(&rl, CAP, 100000);
        while (t < end && n < MAX_TAKES) {
                if (ratelimit_try_take(&rl, t, &wait) == 0) {
                        at[n++] = t;
                        t += (usec_t) (rand_r(&seed) % 500) * USEC_PER_MSEC; /* 0 to 0.5 s apart */
                } else
                        t += wait;
        }
        for (unsigned i = 0, j = 0; i < n; i++) {
                while (j < n && at[j] < at[i] + MINUTE_BACK)
                        j++;
                ck_assert_msg(j - i <= CAP, "%u calls in the %.1f s from %.1f s", j - i,
                              (double) MINUTE_BACK / USEC_PER_SEC, (double) (at[i] - T0) / USEC_PER_SEC);
        }
        /* 20 minutes hold 19 whole windows of 62.1 s at most: 1,900 calls, and more than
         * 1,800 of them are made. */
        ck_assert_uint_gt(n, 1800);
        ck_assert_uint_le(n, 2000);
        ratelimit_done(&rl);
}
END_TEST

START_TEST(test_hour_cap_binds) {
        RateLimit rl;
        usec_t wait = 0, t = T0;
        unsigned m, h;

        ratelimit_init(&rl, 100, 150);
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, t, &wait), 0);
        t += MINUTE_BACK + SLOT(MINUTE_BACK); /* the minute's places are back, the hour's not */
        ratelimit_snapshot(&rl, t, &m, &h);
        ck_assert_uint_eq(m, 100);
        ck_assert_uint_eq(h, 50);
        for (int i = 0; i < 50; i++)
                ck_assert_int_eq(ratelimit_try_take(&rl, t, &wait), 0);
        ck_assert_int_eq(ratelimit_try_take(&rl, t, &wait), -EAGAIN);
        /* The first places in the hour come back an hour and the slack after T0. */
        ck_assert_uint_ge(t + wait, T0 + HOUR_BACK);
        ck_assert_uint_lt(t + wait, T0 + HOUR_BACK + SLOT(HOUR_BACK));
        ratelimit_done(&rl);
}
END_TEST

START_TEST(test_headers_only_lower) {
        RateLimit rl;
        usec_t wait = 0;
        unsigned m, h;

        ratelimit_init(&rl, 100, 6000);
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

        ratelimit_init(&rl, 100, 6000);
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

        ratelimit_init(&rl, 100, 6000);
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

        tcase_add_test(tc, test_minute_burst_then_a_window);
        tcase_add_test(tc, test_no_window_holds_more_than_the_cap);
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
