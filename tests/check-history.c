/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the queue history ring behind GET /status/history and the /ui sparklines. */
#include <check.h>
#include <stdlib.h>

#include "history.h"
#include "macro.h"

#define T0 ((int64_t) 1700000040000) /* a minute boundary: 1700000040000 / 60000 is whole */

static void counts_of(int64_t base, int64_t counts[_JOB_STATE_MAX]) {
        for (int s = 0; s < _JOB_STATE_MAX; s++)
                counts[s] = base * 10 + s;
}

START_TEST(test_one_sample_per_minute) {
        HistorySample out[HISTORY_SAMPLES];
        int64_t c[_JOB_STATE_MAX];
        History h;

        history_init(&h);
        ck_assert_uint_eq(history_snapshot(&h, T0, out), 0);
        counts_of(1, c);
        history_record(&h, T0 + 1000, c);
        counts_of(2, c);
        history_record(&h, T0 + 59999, c); /* same minute: replaces */
        ck_assert_uint_eq(history_snapshot(&h, T0 + 59999, out), 1);
        ck_assert_int_eq(out[0].at_ms, T0 + 59999);
        ck_assert_int_eq(out[0].counts[JOB_QUEUED], 20);
        ck_assert_int_eq(out[0].counts[JOB_CANCELLED], 24);
        counts_of(3, c);
        history_record(&h, T0 + 60000, c); /* next minute: a new sample */
        ck_assert_uint_eq(history_snapshot(&h, T0 + 60000, out), 2);
        ck_assert_int_eq(out[0].counts[JOB_QUEUED], 20);
        ck_assert_int_eq(out[1].counts[JOB_QUEUED], 30);
}
END_TEST

START_TEST(test_bounded_to_the_hour) {
        HistorySample out[HISTORY_SAMPLES];
        int64_t c[_JOB_STATE_MAX], now = 0;
        History h;
        size_t n;

        history_init(&h);
        /* Three hours of samples every 20 s: the ring keeps the last 60 minutes, oldest first. */
        for (int i = 0; i < 3 * 180; i++) {
                now = T0 + (int64_t) i * 20000;
                counts_of(now / HISTORY_INTERVAL_MS, c);
                history_record(&h, now, c);
        }
        n = history_snapshot(&h, now, out);
        ck_assert_uint_eq(n, HISTORY_SAMPLES);
        for (size_t i = 0; i < n; i++) {
                ck_assert_int_gt(out[i].at_ms, now - HISTORY_SPAN_MS);
                ck_assert_int_le(out[i].at_ms, now);
                if (i > 0)
                        ck_assert_int_eq(out[i].at_ms / HISTORY_INTERVAL_MS, out[i - 1].at_ms / HISTORY_INTERVAL_MS + 1);
                ck_assert_int_eq(out[i].counts[JOB_QUEUED], out[i].at_ms / HISTORY_INTERVAL_MS * 10);
        }
        ck_assert_int_eq(out[n - 1].at_ms, now);
        /* Read 30 minutes later with nothing recorded (a suspend): only the last half-hour. */
        n = history_snapshot(&h, now + 30 * HISTORY_INTERVAL_MS, out);
        ck_assert_uint_eq(n, 30);
        /* And two hours later: nothing. */
        ck_assert_uint_eq(history_snapshot(&h, now + 2 * HISTORY_SPAN_MS, out), 0);
}
END_TEST

START_TEST(test_clock_stepping_back) {
        HistorySample out[HISTORY_SAMPLES];
        int64_t c[_JOB_STATE_MAX];
        History h;

        history_init(&h);
        counts_of(1, c);
        history_record(&h, T0 + 5 * HISTORY_INTERVAL_MS, c);
        counts_of(2, c);
        history_record(&h, T0, c); /* the wall clock stepped back five minutes */
        ck_assert_uint_eq(history_snapshot(&h, T0 + 5 * HISTORY_INTERVAL_MS, out), 2);
        ck_assert_int_eq(out[0].counts[JOB_QUEUED], 10);
        ck_assert_int_eq(out[1].counts[JOB_QUEUED], 20);
        /* A sample from the reader's future is not shown. */
        ck_assert_uint_eq(history_snapshot(&h, T0, out), 1);
        ck_assert_int_eq(out[0].counts[JOB_QUEUED], 20);
}
END_TEST

int main(void) {
        Suite *s = suite_create("history");
        TCase *tc = tcase_create("ring");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_one_sample_per_minute);
        tcase_add_test(tc, test_bounded_to_the_hour);
        tcase_add_test(tc, test_clock_stepping_back);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
