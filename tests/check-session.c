/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the local sign-in sessions: tokens that name their session, expiry on the
 * given clock, what a malformed or forged token gets, refresh (the old pair stops working),
 * eviction when the table is full, and ending one client's sessions.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

#define T0 (1000 * USEC_PER_SEC)
#define HOUR (3600 * USEC_PER_SEC)

static SessionTable *t;

static void setup(void) {
        ck_assert_int_eq(session_table_new(4, &t), 0);
}

static void teardown(void) {
        t = session_table_free(t);
}

START_TEST(test_create_and_lookup) {
        char a[SESSION_TOKEN_LEN + 1], r[SESSION_TOKEN_LEN + 1], b[SESSION_TOKEN_LEN + 1];
        SessionInfo si;

        ck_assert_int_eq(session_create(t, "reporting", T0, HOUR, a, r), 0);
        ck_assert_uint_eq(strlen(a), SESSION_TOKEN_LEN);
        ck_assert_uint_eq(strlen(r), SESSION_TOKEN_LEN);
        ck_assert_uint_eq(strspn(a + 1, "0123456789abcdef"), SESSION_TOKEN_LEN - 1);
        ck_assert_str_ne(a, r);
        ck_assert_int_eq(session_lookup(t, a, T0 + 1, &si), 0);
        ck_assert_str_eq(si.client, "reporting");
        ck_assert_uint_eq(si.expires_at, T0 + HOUR);
        /* The refresh token is not an access token. */
        ck_assert_int_eq(session_lookup(t, r, T0 + 1, NULL), -ENOENT);
        /* Anonymous sessions have the empty name; two sessions have different tokens. */
        ck_assert_int_eq(session_create(t, NULL, T0, HOUR, b, NULL), 0);
        ck_assert_str_ne(a, b);
        ck_assert_int_eq(session_lookup(t, b, T0 + 1, &si), 0);
        ck_assert_str_eq(si.client, "");
        ck_assert_uint_eq(session_count(t, T0 + 1), 2);
}
END_TEST

START_TEST(test_expiry) {
        char a[SESSION_TOKEN_LEN + 1];

        ck_assert_int_eq(session_create(t, "c", T0, HOUR, a, NULL), 0);
        ck_assert_int_eq(session_lookup(t, a, T0 + HOUR - 1, NULL), 0);
        ck_assert_int_eq(session_lookup(t, a, T0 + HOUR, NULL), -ETIME);
        ck_assert_int_eq(session_lookup(t, a, T0 + 2 * HOUR, NULL), -ETIME);
}
END_TEST

START_TEST(test_malformed_and_forged) {
        char a[SESSION_TOKEN_LEN + 1], forged[SESSION_TOKEN_LEN + 1];
        static const char *const junk[] = { "", "a", "not-a-token", "a00000000000000010000000000000000000000000000000",
                                            "a0000000000000001000000000000000000000000000000000",
                                            "aZZZZZZZZ00000001000000000000000000000000000000000",
                                            "a00000000000000010000000000000000000000000000000G" };

        ck_assert_int_eq(session_create(t, "c", T0, HOUR, a, NULL), 0);
        for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
                ck_assert_int_eq(session_lookup(t, junk[i], T0, NULL), -ENOENT);
        ck_assert_int_eq(session_lookup(t, NULL, T0, NULL), -ENOENT);
        /* The right slot and generation with one secret digit changed. */
        memcpy(forged, a, sizeof(forged));
        forged[SESSION_TOKEN_LEN - 1] = forged[SESSION_TOKEN_LEN - 1] == '0' ? '1' : '0';
        ck_assert_int_eq(session_lookup(t, forged, T0, NULL), -ENOENT);
        /* A slot past the table. */
        memcpy(forged, a, sizeof(forged));
        memcpy(forged + 1, "ffffffff", 8);
        ck_assert_int_eq(session_lookup(t, forged, T0, NULL), -ENOENT);
        /* Upper-case hex is not the token handed out. */
        memcpy(forged, a, sizeof(forged));
        for (char *p = forged; *p; p++)
                if (*p >= 'a' && *p <= 'f' && p != forged)
                        *p = (char) (*p - 'a' + 'A');
        if (strcmp(forged, a) != 0)
                ck_assert_int_eq(session_lookup(t, forged, T0, NULL), -ENOENT);
        ck_assert_int_eq(session_lookup(t, a, T0, NULL), 0);
}
END_TEST

START_TEST(test_refresh) {
        char a[SESSION_TOKEN_LEN + 1], r[SESSION_TOKEN_LEN + 1], a2[SESSION_TOKEN_LEN + 1], r2[SESSION_TOKEN_LEN + 1];
        SessionInfo si;

        ck_assert_int_eq(session_create(t, "w", T0, HOUR, a, r), 0);
        /* After the access token ended, within the refresh token's day. */
        ck_assert_int_eq(session_refresh(t, r, T0 + 2 * HOUR, HOUR, a2, r2, &si), 0);
        ck_assert_str_eq(si.client, "w");
        ck_assert_uint_eq(si.expires_at, T0 + 3 * HOUR);
        ck_assert_int_eq(session_lookup(t, a2, T0 + 2 * HOUR, NULL), 0);
        /* The old pair stops working. */
        ck_assert_int_eq(session_lookup(t, a, T0 + 2 * HOUR, NULL), -ENOENT);
        ck_assert_int_eq(session_refresh(t, r, T0 + 2 * HOUR, HOUR, a, r, NULL), -ENOENT);
        /* An access token cannot refresh; a refresh token past its day cannot either. */
        ck_assert_int_eq(session_refresh(t, a2, T0 + 2 * HOUR, HOUR, a, r, NULL), -ENOENT);
        ck_assert_int_eq(session_refresh(t, r2, T0 + 2 * HOUR + SESSION_REFRESH_LIFETIME, HOUR, a, r, NULL), -ETIME);
}
END_TEST

START_TEST(test_full_table_evicts_the_first_to_end) {
        char tok[6][SESSION_TOKEN_LEN + 1];

        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(session_create(t, "c", T0 + (usec_t) i * USEC_PER_SEC, HOUR, tok[i], NULL), 0);
        ck_assert_uint_eq(session_count(t, T0 + 10 * USEC_PER_SEC), 4);
        /* A fifth ends the oldest (the first to end), the others stay. */
        ck_assert_int_eq(session_create(t, "c", T0 + 10 * USEC_PER_SEC, HOUR, tok[4], NULL), 0);
        ck_assert_int_eq(session_lookup(t, tok[0], T0 + 11 * USEC_PER_SEC, NULL), -ENOENT);
        for (int i = 1; i < 5; i++)
                ck_assert_int_eq(session_lookup(t, tok[i], T0 + 11 * USEC_PER_SEC, NULL), 0);
        ck_assert_uint_eq(session_count(t, T0 + 11 * USEC_PER_SEC), 4);
        /* Past every refresh token's day, the slots are free again. */
        ck_assert_uint_eq(session_count(t, T0 + 20 * USEC_PER_SEC + SESSION_REFRESH_LIFETIME), 0);
        ck_assert_int_eq(session_create(t, "c", T0 + 20 * USEC_PER_SEC + SESSION_REFRESH_LIFETIME, HOUR, tok[5], NULL), 0);
        ck_assert_int_eq(session_lookup(t, tok[5], T0 + 21 * USEC_PER_SEC + SESSION_REFRESH_LIFETIME, NULL), 0);
}
END_TEST

START_TEST(test_end_client) {
        char a[SESSION_TOKEN_LEN + 1], b[SESSION_TOKEN_LEN + 1], c[SESSION_TOKEN_LEN + 1];
        char name[SESSION_CLIENT_MAX + 1];

        ck_assert_int_eq(session_create(t, "reporting", T0, HOUR, a, NULL), 0);
        ck_assert_int_eq(session_create(t, "ops", T0, HOUR, b, NULL), 0);
        ck_assert_int_eq(session_create(t, "", T0, HOUR, c, NULL), 0);
        ck_assert_uint_eq(session_end_client(t, "reporting"), 1);
        ck_assert_int_eq(session_lookup(t, a, T0, NULL), -ENOENT);
        ck_assert_int_eq(session_lookup(t, b, T0, NULL), 0);
        ck_assert_uint_eq(session_end_client(t, ""), 1);
        ck_assert_int_eq(session_lookup(t, c, T0, NULL), -ENOENT);
        ck_assert_uint_eq(session_end_client(t, "nobody"), 0);
        /* A slot reused gets a new generation: the ended token stays dead. */
        ck_assert_int_eq(session_create(t, "reporting", T0, HOUR, c, NULL), 0);
        ck_assert_int_eq(session_lookup(t, a, T0, NULL), -ENOENT);
        memset(name, 'n', SESSION_CLIENT_MAX);
        name[SESSION_CLIENT_MAX] = '\0';
        ck_assert_int_eq(session_create(t, name, T0, HOUR, c, NULL), -ENAMETOOLONG);
}
END_TEST

static Suite *session_suite(void) {
        Suite *s = suite_create("session");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_create_and_lookup);
        tcase_add_test(tc, test_expiry);
        tcase_add_test(tc, test_malformed_and_forged);
        tcase_add_test(tc, test_refresh);
        tcase_add_test(tc, test_full_table_evicts_the_first_to_end);
        tcase_add_test(tc, test_end_client);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(session_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
