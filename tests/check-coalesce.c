/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the reordering and sharing rules (src/visierd/coalesce.c): for every pair of
 * operations, whether a later job may be sent before an earlier unfinished one, and the object
 * that ties them when not; then which jobs the next call takes from a queue.
 */
#include <check.h>
#include <stdlib.h>

#include "coalesce.h"
#include "macro.h"

#define P1 "3f1b6a2e-7c4d-4e8f-9a1b-2c3d4e5f6a71"
#define P2 "7a9e4d2c-1b3f-4c5d-8e6f-0a1b2c3d4e72"
#define CID_X COALESCE_CORRELATION_PREFIX "x-1"

static const char *const k_p1[] = { P1 }, *const k_p2[] = { P2 }, *const k_p1_p2[] = { P1, P2 };
static const char *const k_cid[] = { CID_X };

/* The jobs of each operation as the store describes them (groups spelled as it does). */
#define CREATE(...) { .group = "create|WFF_j1a", .due = true, __VA_ARGS__ }
#define UPDATE(k) { .group = "update|WFF_j1a", .due = true, .n_items = 1, .keys = k, .n_keys = ELEMENTSOF(k) }
#define DELETE(k) { .group = "delete|WFF_j1a", .due = true, .n_items = 1, .keys = k, .n_keys = ELEMENTSOF(k) }
#define REVERT(k) { .group = "revert|WFF_j1a", .due = true, .n_items = 1, .keys = k, .n_keys = ELEMENTSOF(k) }
#define ASSIGN(k) { .group = "assign|WFF_j1a", .due = true, .n_items = 1, .keys = k, .n_keys = ELEMENTSOF(k) }
#define REMOVE(k) { .group = "remove|WFF_j1a", .due = true, .n_items = 1, .keys = k, .n_keys = ELEMENTSOF(k) }
#define CALL { .group = NULL, .call = true, .due = true, .n_items = 1 }

/* Every pair of operations on one permission keeps its order, tied by that permission. */
START_TEST(test_same_permission_keeps_order) {
        const CoalesceJob ops[] = { UPDATE(k_p1), DELETE(k_p1), REVERT(k_p1), ASSIGN(k_p1), REMOVE(k_p1) };
        const char *tie;

        for (size_t a = 0; a < ELEMENTSOF(ops); a++)
                for (size_t b = 0; b < ELEMENTSOF(ops); b++) {
                        tie = NULL;
                        ck_assert_msg(!coalesce_may_pass(&ops[a], &ops[b], &tie), "%s passed %s on one permission",
                                      ops[b].group, ops[a].group);
                        ck_assert_str_eq(tie, P1);
                }
}
END_TEST

/* ...and on different permissions every pair may be reordered. */
START_TEST(test_other_permission_may_pass) {
        const CoalesceJob on_p1[] = { UPDATE(k_p1), DELETE(k_p1), REVERT(k_p1), ASSIGN(k_p1), REMOVE(k_p1) };
        const CoalesceJob on_p2[] = { UPDATE(k_p2), DELETE(k_p2), REVERT(k_p2), ASSIGN(k_p2), REMOVE(k_p2) };

        for (size_t a = 0; a < ELEMENTSOF(on_p1); a++)
                for (size_t b = 0; b < ELEMENTSOF(on_p2); b++) {
                        ck_assert(coalesce_may_pass(&on_p1[a], &on_p2[b], NULL));
                        ck_assert(coalesce_may_pass(&on_p2[b], &on_p1[a], NULL));
                }
}
END_TEST

/* Creates touch new permissions: they pass and are passed, except two creates with one
 * correlation ID (the first wins it), tied by that ID; a job of several items is tied by any. */
START_TEST(test_creates_and_correlation_ids) {
        const CoalesceJob plain = CREATE(), with_cid = CREATE(.keys = k_cid, .n_keys = 1);
        const CoalesceJob others[] = { UPDATE(k_p1), DELETE(k_p1), ASSIGN(k_p1), REMOVE(k_p1), REVERT(k_p1) };
        const CoalesceJob both = UPDATE(k_p1_p2), on_p2 = DELETE(k_p2);
        const char *tie = NULL;

        ck_assert(coalesce_may_pass(&plain, &plain, NULL));
        ck_assert(coalesce_may_pass(&plain, &with_cid, NULL));
        ck_assert(!coalesce_may_pass(&with_cid, &with_cid, &tie));
        ck_assert_str_eq(tie, CID_X);
        for (size_t i = 0; i < ELEMENTSOF(others); i++) {
                ck_assert(coalesce_may_pass(&with_cid, &others[i], NULL));
                ck_assert(coalesce_may_pass(&others[i], &with_cid, NULL));
        }
        ck_assert(!coalesce_may_pass(&both, &on_p2, &tie));
        ck_assert_str_eq(tie, P2);
}
END_TEST

/* A call job names nothing visierd can compare: it keeps its place both ways. */
START_TEST(test_call_jobs_keep_their_place) {
        const CoalesceJob call = CALL, any[] = { CREATE(), UPDATE(k_p1), DELETE(k_p2), ASSIGN(k_p1), CALL };
        const char *tie;

        for (size_t i = 0; i < ELEMENTSOF(any); i++) {
                tie = NULL;
                ck_assert(!coalesce_may_pass(&call, &any[i], &tie));
                ck_assert_str_eq(tie, "a call job");
                tie = NULL;
                ck_assert(!coalesce_may_pass(&any[i], &call, &tie));
                ck_assert_str_eq(tie, "a call job");
        }
}
END_TEST

/* Picks, as lists of indexes. */
static void assert_pick(const CoalesceJob *q, size_t n, const CoalesceRunning *running, size_t batch_max,
                        const size_t *want, size_t n_want) {
        size_t got[64], n_got = 99;

        ck_assert_int_eq(coalesce_pick(q, n, running, batch_max, got, &n_got), 0);
        ck_assert_uint_eq(n_got, n_want);
        for (size_t i = 0; i < n_want; i++)
                ck_assert_uint_eq(got[i], want[i]);
}

/* Mixed operations on disjoint permissions: each call takes every job of its kind. */
START_TEST(test_pick_past_other_kinds) {
        const CoalesceJob q[] = { CREATE(), UPDATE(k_p1), CREATE(), DELETE(k_p2), CREATE() };

        assert_pick(q, ELEMENTSOF(q), NULL, 1000, (const size_t[]) { 0, 2, 4 }, 3);
        assert_pick(q + 1, 4, NULL, 1000, (const size_t[]) { 0 }, 1); /* the update; the creates are gone */
}
END_TEST

/* A job of the first one's kind stays behind a job it is tied to, and so does what is tied to it. */
START_TEST(test_pick_stops_at_ties) {
        const CoalesceJob q[] = { UPDATE(k_p2), DELETE(k_p1), UPDATE(k_p1), UPDATE(k_p1_p2), CREATE(), UPDATE(k_p2) };

        /* The update of P2 goes. The update of P1 waits for the delete of P1; the one of P1 and
         * P2 for both; the second update of P2 for that one (and would be P2 twice in a call). */
        assert_pick(q, ELEMENTSOF(q), NULL, 1000, (const size_t[]) { 0 }, 1);
}
END_TEST

/* The first job is the oldest that may go now: past jobs waiting out a backoff and jobs tied
 * to a running one. */
START_TEST(test_pick_first_may_go) {
        CoalesceJob q[] = { UPDATE(k_p1), DELETE(k_p1), DELETE(k_p2), DELETE(k_p1_p2) };
        const CoalesceRunning busy_p2 = { .n_jobs = 1, .keys = k_p2, .n_keys = 1 };

        q[0].due = false;
        /* Delete P1 waits for the update of P1 (not due); delete P2 goes; P1+P2 is tied to both. */
        assert_pick(q, ELEMENTSOF(q), NULL, 1000, (const size_t[]) { 2 }, 1);
        /* With P2 in flight nothing of P2 goes, and P1 waits for the update. */
        assert_pick(q, ELEMENTSOF(q), &busy_p2, 1000, NULL, 0);
}
END_TEST

/* Call jobs: one goes alone and only first; nothing passes one; one running stops everything. */
START_TEST(test_pick_call_jobs) {
        const CoalesceJob q1[] = { CREATE(), CALL, CREATE() }, q2[] = { CALL, CREATE() }, q3[] = { CREATE(), CREATE() };
        const CoalesceRunning one = { .n_jobs = 1, .keys = k_p1, .n_keys = 1 }, call = { .n_jobs = 1, .call = true };

        assert_pick(q1, ELEMENTSOF(q1), NULL, 1000, (const size_t[]) { 0 }, 1);
        assert_pick(q2, ELEMENTSOF(q2), NULL, 1000, (const size_t[]) { 0 }, 1);
        assert_pick(q2, ELEMENTSOF(q2), &one, 1000, NULL, 0); /* waits for the running job */
        assert_pick(q3, ELEMENTSOF(q3), &call, 1000, NULL, 0);
        assert_pick(q3, ELEMENTSOF(q3), &one, 1000, (const size_t[]) { 0, 1 }, 2);
}
END_TEST

/* At most batch_max items; a job that goes alone (no group) takes no followers. */
START_TEST(test_pick_limits) {
        CoalesceJob q[] = { CREATE(.n_items = 600), CREATE(.n_items = 600), CREATE(.n_items = 400), CREATE() };
        const CoalesceJob solo[] = { { .group = NULL, .due = true, .n_items = 1 }, CREATE() };

        q[3].n_items = 1;
        assert_pick(q, ELEMENTSOF(q), NULL, 1000, (const size_t[]) { 0, 2 }, 2);
        assert_pick(solo, ELEMENTSOF(solo), NULL, 1000, (const size_t[]) { 0 }, 1);
        assert_pick(q, 0, NULL, 1000, NULL, 0);
}
END_TEST

/* A round in progress takes only jobs of its scope (any operation); a job of another scope
 * stays behind, and what is tied to it stays with it. */
START_TEST(test_pick_round_scope) {
        CoalesceJob q[] = { DELETE(k_p1), UPDATE(k_p1), DELETE(k_p2), CREATE() };
        const CoalesceRunning round = { .n_jobs = 1, .scope = "WFF_j1a" };
        const CoalesceJob alone[] = { { .group = NULL, .scope = NULL, .due = true, .n_items = 1 }, CREATE() };

        for (size_t i = 0; i < ELEMENTSOF(q); i++)
                q[i].scope = "WFF_j1a";
        q[0].scope = "WFF_other";
        q[0].group = "delete|WFF_other";
        /* The other tenant's delete of P1 stays; the update of P1 is tied to it (P1); the
         * delete of P2 goes. */
        assert_pick(q, ELEMENTSOF(q), &round, 1000, (const size_t[]) { 2 }, 1);
        /* Without a round the oldest goes first, whatever its scope. */
        assert_pick(q, ELEMENTSOF(q), NULL, 1000, (const size_t[]) { 0 }, 1);
        /* A job that shares no round never joins one. */
        assert_pick(alone, 1, &round, 1000, NULL, 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("coalesce");
        TCase *tc = tcase_create("rules");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_same_permission_keeps_order);
        tcase_add_test(tc, test_other_permission_may_pass);
        tcase_add_test(tc, test_creates_and_correlation_ids);
        tcase_add_test(tc, test_call_jobs_keep_their_place);
        tcase_add_test(tc, test_pick_past_other_kinds);
        tcase_add_test(tc, test_pick_stops_at_ties);
        tcase_add_test(tc, test_pick_first_may_go);
        tcase_add_test(tc, test_pick_call_jobs);
        tcase_add_test(tc, test_pick_limits);
        tcase_add_test(tc, test_pick_round_scope);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
