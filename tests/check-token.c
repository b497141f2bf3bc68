/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the token keeper: single-flight logins, expiry at use, backoff, invalidation. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "token.h"

static atomic_uint_fast64_t fake_now;
static usec_t fake_clock(void) {
        return atomic_load(&fake_now);
}

typedef struct FakeLogin {
        atomic_int calls, in_flight, max_in_flight;
        atomic_bool fail;
        usec_t delay;
} FakeLogin;

static int fake_login(void *userdata, Secret **ret, char *err, size_t errlen) {
        FakeLogin *f = userdata;
        int n = atomic_fetch_add(&f->in_flight, 1) + 1, max = atomic_load(&f->max_in_flight);
        char tok[32];

        while (n > max && !atomic_compare_exchange_weak(&f->max_in_flight, &max, n))
                ;
        if (f->delay)
                clock_sleep(f->delay);
        atomic_fetch_sub(&f->in_flight, 1);
        n = atomic_fetch_add(&f->calls, 1) + 1;
        if (atomic_load(&f->fail)) {
                snprintf(err, errlen, "refused");
                return -EACCES;
        }
        snprintf(tok, sizeof(tok), "tok%d", n);
        *ret = secret_new(tok, strlen(tok));
        return 0;
}

/* Wait (really) until the keeper has made n login attempts. */
static void wait_calls(FakeLogin *f, int n) {
        for (int i = 0; i < 1000 && atomic_load(&f->calls) < n; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        ck_assert_int_ge(atomic_load(&f->calls), n);
}

START_TEST(test_backoff_doubles_and_caps) {
        ck_assert_uint_eq(token_backoff(1), 1 * USEC_PER_SEC);
        ck_assert_uint_eq(token_backoff(2), 2 * USEC_PER_SEC);
        ck_assert_uint_eq(token_backoff(3), 4 * USEC_PER_SEC);
        ck_assert_uint_eq(token_backoff(9), 256 * USEC_PER_SEC);
        ck_assert_uint_eq(token_backoff(10), 300 * USEC_PER_SEC);
        ck_assert_uint_eq(token_backoff(1000), 300 * USEC_PER_SEC);
}
END_TEST

typedef struct Caller {
        TokenKeeper *tk;
        int result;
} Caller;

static void *caller(void *arg) {
        Caller *c = arg;
        Secret *s = NULL;
        char err[256];

        c->result = token_acquire(c->tk, clock_now() + 10 * USEC_PER_SEC, &s, NULL, err, sizeof(err));
        if (c->result == 0 && !streq(s->data, "tok1"))
                c->result = -EBADMSG;
        secret_free(s);
        return NULL;
}

START_TEST(test_single_flight) {
        FakeLogin f = { .delay = 100 * USEC_PER_MSEC };
        Caller callers[16];
        pthread_t t[16];
        TokenKeeper *tk;

        clock_set_source(NULL);
        ck_assert_int_eq(token_keeper_new(60 * USEC_PER_SEC, 10 * USEC_PER_SEC, fake_login, &f, NULL, NULL, &tk), 0);
        /* Callers arrive before and during the first login. */
        for (int i = 0; i < 8; i++) {
                callers[i] = (Caller) { .tk = tk };
                pthread_create(&t[i], NULL, caller, &callers[i]);
        }
        ck_assert_int_eq(token_keeper_start(tk), 0);
        for (int i = 8; i < 16; i++) {
                callers[i] = (Caller) { .tk = tk };
                pthread_create(&t[i], NULL, caller, &callers[i]);
        }
        for (int i = 0; i < 16; i++) {
                pthread_join(t[i], NULL);
                ck_assert_int_eq(callers[i].result, 0);
        }
        ck_assert_int_eq(atomic_load(&f.calls), 1);
        ck_assert_int_eq(atomic_load(&f.max_in_flight), 1);
        token_keeper_free(tk);
}
END_TEST

typedef struct Subscriber {
        atomic_int notified;
        TokenKeeper *tk;
        atomic_int saw_token; /* token_try_acquire() from inside the notification gave one */
} Subscriber;

static void on_login_result(void *userdata) {
        Subscriber *sub = userdata;
        Secret *s = NULL;
        char err[256];

        /* A subscriber may look at the keeper from its notification (no lock is held). */
        if (token_try_acquire(sub->tk, clock_now() + USEC_PER_SEC, &s, NULL, err, sizeof(err)) == 0)
                atomic_fetch_add(&sub->saw_token, 1);
        secret_free(s);
        atomic_fetch_add(&sub->notified, 1);
}

/* token_try_acquire() never waits: -EAGAIN while a login is due or running, the token once it
 * is in, -ENOKEY at once while the keeper backs off; subscribers hear of every login attempt,
 * and not after unsubscribing. */
START_TEST(test_try_acquire_and_subscribers) {
        FakeLogin f = { .delay = 200 * USEC_PER_MSEC };
        Subscriber sub = {};
        TokenKeeper *tk;
        Secret *s = NULL;
        char err[256] = "";
        usec_t t0;

        clock_set_source(NULL);
        ck_assert_int_eq(token_keeper_new(60 * USEC_PER_SEC, 10 * USEC_PER_SEC, fake_login, &f, NULL, NULL, &tk), 0);
        sub.tk = tk;
        ck_assert_int_eq(token_keeper_subscribe(tk, on_login_result, &sub), 0);
        for (int i = 1; i < TOKEN_SUBSCRIBERS_MAX; i++)
                ck_assert_int_eq(token_keeper_subscribe(tk, on_login_result, &sub), 0);
        ck_assert_int_eq(token_keeper_subscribe(tk, on_login_result, &sub), -ENOSPC);
        token_keeper_unsubscribe(tk, on_login_result, &sub); /* every slot of the pair */
        ck_assert_int_eq(token_keeper_subscribe(tk, on_login_result, &sub), 0);

        ck_assert_int_eq(token_try_acquire(tk, clock_now() + 5 * USEC_PER_SEC, &s, NULL, err, sizeof(err)), -EAGAIN);
        ck_assert_int_eq(token_try_acquire(tk, clock_now(), &s, NULL, err, sizeof(err)), -ETIMEDOUT);
        ck_assert_int_eq(token_keeper_start(tk), 0);
        t0 = clock_now();
        ck_assert_int_eq(token_try_acquire(tk, clock_now() + 5 * USEC_PER_SEC, &s, NULL, err, sizeof(err)), -EAGAIN);
        ck_assert_uint_lt(clock_now() - t0, 100 * USEC_PER_MSEC); /* did not wait for the 200 ms login */
        for (int i = 0; i < 1000 && atomic_load(&sub.notified) < 1; i++)
                clock_sleep(5 * USEC_PER_MSEC);
        ck_assert_int_eq(atomic_load(&sub.notified), 1);
        ck_assert_int_eq(atomic_load(&sub.saw_token), 1);
        ck_assert_int_eq(token_try_acquire(tk, clock_now() + 5 * USEC_PER_SEC, &s, NULL, err, sizeof(err)), 0);
        ck_assert_str_eq(s->data, "tok1");
        s = secret_free(s);

        /* A failed login: notified too, and then calls fail fast with its reason. */
        atomic_store(&f.fail, true);
        token_keeper_relogin(tk);
        for (int i = 0; i < 1000 && atomic_load(&sub.notified) < 2; i++)
                clock_sleep(5 * USEC_PER_MSEC);
        ck_assert_int_eq(atomic_load(&sub.notified), 2);
        ck_assert_int_eq(token_try_acquire(tk, clock_now() + 5 * USEC_PER_SEC, &s, NULL, err, sizeof(err)), -ENOKEY);
        ck_assert_msg(strstr(err, "the last login failed (refused)"), "%s", err);

        /* Unsubscribed: the next login attempt (after the 1 s backoff) is not told. */
        token_keeper_unsubscribe(tk, on_login_result, &sub);
        atomic_store(&f.fail, false);
        wait_calls(&f, 3);
        clock_sleep(50 * USEC_PER_MSEC);
        ck_assert_int_eq(atomic_load(&sub.notified), 2);
        token_keeper_free(tk);
}
END_TEST

static Secret *acquire_now(TokenKeeper *tk, int *ret, uint64_t *gen) {
        Secret *s = NULL;
        char err[256];

        *ret = token_acquire(tk, clock_now() + 3 * USEC_PER_SEC, &s, gen, err, sizeof(err));
        return s;
}

START_TEST(test_expiry_refresh_and_failures) {
        FakeLogin f = {};
        TokenKeeper *tk;
        TokenStatus st;
        uint64_t gen1 = 0, gen = 0;
        Secret *s;
        int r;

        atomic_store(&fake_now, 1000 * USEC_PER_SEC);
        clock_set_source(fake_clock);
        ck_assert_int_eq(token_keeper_new(100 * USEC_PER_SEC, 10 * USEC_PER_SEC, fake_login, &f, NULL, NULL, &tk), 0);
        ck_assert_int_eq(token_keeper_start(tk), 0);

        s = acquire_now(tk, &r, &gen1);
        ck_assert_int_eq(r, 0);
        ck_assert_str_eq(s->data, "tok1");
        secret_free(s);

        /* Mid-life: the same token, no new login. */
        atomic_store(&fake_now, 1050 * USEC_PER_SEC);
        s = acquire_now(tk, &r, &gen);
        ck_assert_int_eq(r, 0);
        ck_assert_str_eq(s->data, "tok1");
        ck_assert_uint_eq(gen, gen1);
        secret_free(s);
        ck_assert_int_eq(atomic_load(&f.calls), 1);

        /* Past the refresh point with Visier refusing: the still-valid token keeps being used. */
        atomic_store(&f.fail, true);
        atomic_store(&fake_now, 1095 * USEC_PER_SEC);
        wait_calls(&f, 2);
        s = acquire_now(tk, &r, &gen);
        ck_assert_int_eq(r, 0);
        ck_assert_str_eq(s->data, "tok1");
        secret_free(s);
        token_keeper_status(tk, &st);
        ck_assert_str_eq(st.state, "failing");
        ck_assert(st.valid);
        ck_assert_str_eq(st.last_error, "refused");
        ck_assert_uint_le(st.next_attempt_in, 1 * USEC_PER_SEC);

        /* Past expiry: the old token is never handed out again. */
        atomic_store(&fake_now, 1100 * USEC_PER_SEC + 1);
        s = acquire_now(tk, &r, &gen);
        ck_assert_ptr_null(s);
        ck_assert_int_lt(r, 0);
        token_keeper_status(tk, &st);
        ck_assert(!st.valid);

        /* Visier accepts again: a new token with a new generation. */
        atomic_store(&f.fail, false);
        atomic_store(&fake_now, 1200 * USEC_PER_SEC);
        s = acquire_now(tk, &r, &gen);
        ck_assert_int_eq(r, 0);
        ck_assert_str_ne(s->data, "tok1");
        ck_assert_uint_gt(gen, gen1);
        secret_free(s);

        /* A late 401 about an old generation does nothing; one about the current forces a login. */
        int calls = atomic_load(&f.calls);
        token_invalidate(tk, gen1);
        s = acquire_now(tk, &r, NULL);
        ck_assert_int_eq(r, 0);
        secret_free(s);
        ck_assert_int_eq(atomic_load(&f.calls), calls);
        token_invalidate(tk, gen);
        s = acquire_now(tk, &r, NULL);
        ck_assert_int_eq(r, 0);
        secret_free(s);
        ck_assert_int_eq(atomic_load(&f.calls), calls + 1);

        token_keeper_free(tk);
        clock_set_source(NULL);
}
END_TEST

START_TEST(test_backoff_between_failed_logins) {
        FakeLogin f = {};
        TokenKeeper *tk;
        TokenStatus st;
        Secret *s;
        int r;

        atomic_store(&f.fail, true);
        atomic_store(&fake_now, 1000 * USEC_PER_SEC);
        clock_set_source(fake_clock);
        ck_assert_int_eq(token_keeper_new(100 * USEC_PER_SEC, 10 * USEC_PER_SEC, fake_login, &f, NULL, NULL, &tk), 0);
        ck_assert_int_eq(token_keeper_start(tk), 0);
        wait_calls(&f, 1);
        /* In backoff, callers fail fast with the reason instead of waiting. */
        s = acquire_now(tk, &r, NULL);
        ck_assert_ptr_null(s);
        ck_assert_int_eq(r, -ENOKEY);
        /* The clock does not move: no second attempt, however long we wait in real time. */
        clock_sleep(1500 * USEC_PER_MSEC);
        ck_assert_int_eq(atomic_load(&f.calls), 1);
        atomic_store(&fake_now, 1001 * USEC_PER_SEC);
        wait_calls(&f, 2);
        token_keeper_status(tk, &st);
        ck_assert_uint_gt(st.next_attempt_in, 1 * USEC_PER_SEC); /* second backoff is 2 s */
        ck_assert_uint_le(st.next_attempt_in, 2 * USEC_PER_SEC);
        ck_assert_uint_eq(st.login_failures, 2);
        token_keeper_free(tk);
        clock_set_source(NULL);
}
END_TEST

/* Visier takes every login but refuses every token: the first refusal logs in again at once,
 * the next ones wait 1 s, 2 s, ... (the clock does not move: no more logins); a confirmed
 * token ends the backoff. */
START_TEST(test_refused_tokens_back_off) {
        FakeLogin f = {};
        TokenKeeper *tk;
        TokenStatus st;
        uint64_t gen = 0;
        Secret *s;
        int r;

        atomic_store(&fake_now, 1000 * USEC_PER_SEC);
        clock_set_source(fake_clock);
        ck_assert_int_eq(token_keeper_new(100 * USEC_PER_SEC, 10 * USEC_PER_SEC, fake_login, &f, NULL, NULL, &tk), 0);
        ck_assert_int_eq(token_keeper_start(tk), 0);
        s = acquire_now(tk, &r, &gen);
        ck_assert_int_eq(r, 0);
        secret_free(s);

        token_invalidate(tk, gen); /* a revocation: logged in again at once */
        s = acquire_now(tk, &r, &gen);
        ck_assert_int_eq(r, 0);
        secret_free(s);
        ck_assert_int_eq(atomic_load(&f.calls), 2);

        token_invalidate(tk, gen); /* refused again, unconfirmed: 1 s backoff */
        {
                char err[256] = "";
                /* A caller whose deadline comes before the next login is told at once. */
                r = token_acquire(tk, clock_now() + 500 * USEC_PER_MSEC, &s, &gen, err, sizeof(err));
                ck_assert_int_eq(r, -ENOKEY);
                ck_assert_msg(strstr(err, "refused the last 2 tokens"), "%s", err);
        }
        clock_sleep(1200 * USEC_PER_MSEC);
        ck_assert_int_eq(atomic_load(&f.calls), 2);
        token_keeper_status(tk, &st);
        ck_assert_str_eq(st.state, "failing");
        ck_assert_uint_eq(st.rejections, 2);

        atomic_store(&fake_now, 1001 * USEC_PER_SEC + 1);
        wait_calls(&f, 3);
        s = acquire_now(tk, &r, &gen);
        ck_assert_int_eq(r, 0);
        secret_free(s);
        token_invalidate(tk, gen); /* third in a row: 2 s */
        atomic_store(&fake_now, 1002 * USEC_PER_SEC + 2);
        clock_sleep(1200 * USEC_PER_MSEC);
        ck_assert_int_eq(atomic_load(&f.calls), 3);
        atomic_store(&fake_now, 1003 * USEC_PER_SEC + 2);
        wait_calls(&f, 4);
        s = acquire_now(tk, &r, &gen);
        ck_assert_int_eq(r, 0);
        secret_free(s);

        /* A call with this token was accepted: the next refusal is a plain revocation again. */
        token_confirm(tk, gen);
        token_invalidate(tk, gen);
        s = acquire_now(tk, &r, &gen);
        ck_assert_int_eq(r, 0);
        secret_free(s);
        ck_assert_int_eq(atomic_load(&f.calls), 5);
        token_keeper_free(tk);
        clock_set_source(NULL);
}
END_TEST

static Suite *token_suite(void) {
        Suite *s = suite_create("token");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_backoff_doubles_and_caps);
        tcase_add_test(tc, test_single_flight);
        tcase_add_test(tc, test_try_acquire_and_subscribers);
        tcase_add_test(tc, test_expiry_refresh_and_failures);
        tcase_add_test(tc, test_backoff_between_failed_logins);
        tcase_add_test(tc, test_refused_tokens_back_off);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(token_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
