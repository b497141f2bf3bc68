/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the metadata cache: the route table, Cache-Control, hits, TTLs on the test
 * clock, LRU eviction at the byte bound, single flight, coherence under invalidation (also
 * from another thread while lookups run), the settings and the rendered metrics.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cache.h"
#include "config.h"
#include "manager.h"
#include "metrics.h"

#define T0 (1000 * USEC_PER_SEC)
#define R_CAPS "/v1/admin/capabilities"
#define R_PERMS "/v1/admin/permissions"
#define R_PERM "/v1/admin/permissions/*"
#define R_USERS "/v1/admin/permissions/*/users"
#define R_MEMBERS "/v1/data/model/analytic-objects/*/dimensions/*/members"

static atomic_uint_fast64_t fake_now;

static usec_t fake_clock(void) {
        return atomic_load(&fake_now);
}

static void setup(void) {
        atomic_store(&fake_now, T0);
        clock_set_source(fake_clock);
}

static void teardown(void) {
        clock_set_source(NULL);
}

static void advance(usec_t d) {
        atomic_fetch_add(&fake_now, d);
}

static CacheSettings settings(size_t max_bytes) {
        return (CacheSettings) {
                .max_bytes = max_bytes,
                .ttl = {
                        [CACHE_CLASS_MODEL] = 300 * USEC_PER_SEC,
                        [CACHE_CLASS_MEMBERS] = 300 * USEC_PER_SEC,
                        [CACHE_CLASS_PERMISSIONS] = 60 * USEC_PER_SEC,
                        [CACHE_CLASS_ASSIGNMENTS] = 0,
                },
        };
}

static Cache *new_cache(size_t max_bytes) {
        CacheSettings s = settings(max_bytes);
        Cache *c = NULL;

        ck_assert_int_eq(cache_new(&s, &c), 0);
        return c;
}

static CacheKey key(const char *tenant, const char *route, const char *path) {
        return (CacheKey) { .route = route, .tenant = tenant, .accept = "application/json", .path = path };
}

/* What a follower's callback was given. */
typedef struct Got {
        int calls;
        int error;
        CacheEntry *entry;
} Got;

static void got_cb(CacheEntry *e, int error, void *userdata) {
        Got *g = userdata;

        g->calls++;
        g->error = error;
        g->entry = e;
}

typedef struct Lookup {
        int r;
        CacheEntry *entry;
        CacheFlight *flight;
        CacheWaiter *waiter;
} Lookup;

static Lookup look(Cache *c, const CacheKey *k, const CacheDirectives *d, Got *g) {
        Lookup l = {};

        l.r = cache_lookup(c, k, d, clock_now(), got_cb, g, &l.entry, &l.flight, &l.waiter);
        return l;
}

/* Lead a fetch of k and end it with body: the caller's entry reference is dropped. */
static void fill(Cache *c, const CacheKey *k, unsigned status, const char *body) {
        Lookup l = look(c, k, NULL, NULL);

        ck_assert_int_eq(l.r, CACHE_LEAD);
        cache_entry_unref(cache_flight_done(l.flight, status, "application/json", strdup(body), strlen(body),
                                            clock_now()));
}

static bool body_is(const CacheEntry *e, const char *want) {
        size_t n;
        const char *b = cache_entry_body(e, &n);

        return n == strlen(want) && memcmp(b, want, n) == 0;
}

static CacheStats stats(Cache *c) {
        CacheStats s;

        cache_stats(c, &s);
        return s;
}

/* Every GET that api.c proxies has a row in the cache's route table, so adding a proxied
 * route makes someone decide whether it is cached. */
START_TEST(test_route_table) {
        const char *const *methods, *const *patterns;
        size_t n = api_routes(&methods, &patterns), proxied = 0;

        for (size_t i = 0; i < n; i++) {
                if (!streq(methods[i], "GET") || strncmp(patterns[i], "/v1/", 4) != 0)
                        continue;
                proxied++;
                ck_assert_msg(cache_route_class(patterns[i]) >= 0, "GET %s has no row in cache.c's route table",
                              patterns[i]);
        }
        ck_assert_uint_eq(proxied, 11);
        ck_assert_int_eq(cache_route_class(R_CAPS), CACHE_CLASS_MODEL);
        ck_assert_int_eq(cache_route_class("/v1/admin/content-packages/*"), CACHE_CLASS_MODEL);
        ck_assert_int_eq(cache_route_class("/v1/admin/data-security-objects"), CACHE_CLASS_MODEL);
        ck_assert_int_eq(cache_route_class("/v1/data/model/analytic-objects/*/dimensions"), CACHE_CLASS_MODEL);
        ck_assert_int_eq(cache_route_class(R_MEMBERS), CACHE_CLASS_MEMBERS);
        ck_assert_int_eq(cache_route_class(R_PERMS), CACHE_CLASS_PERMISSIONS);
        ck_assert_int_eq(cache_route_class(R_PERM), CACHE_CLASS_PERMISSIONS);
        ck_assert_int_eq(cache_route_class(R_USERS), CACHE_CLASS_ASSIGNMENTS);
        ck_assert_int_eq(cache_route_class("/jobs/*"), _CACHE_CLASS_INVALID);
        ck_assert_int_eq(cache_route_class("/v1/admin/permissions/users"), _CACHE_CLASS_INVALID);
        ck_assert_int_eq(cache_route_class(NULL), _CACHE_CLASS_INVALID);
        for (int i = 0; i < _CACHE_CLASS_MAX; i++)
                ck_assert_int_eq(cache_class_from_string(cache_class_to_string((CacheClass) i)), i);
        ck_assert_int_eq(cache_class_from_string("bogus"), _CACHE_CLASS_INVALID);
}
END_TEST

START_TEST(test_invalidation_for_op) {
        const unsigned perms = CACHE_CLASS_BIT(CACHE_CLASS_PERMISSIONS), users = CACHE_CLASS_BIT(CACHE_CLASS_ASSIGNMENTS);

        ck_assert_uint_eq(cache_invalidation_for_op(JOB_OP_CREATE), perms);
        ck_assert_uint_eq(cache_invalidation_for_op(JOB_OP_UPDATE), perms);
        ck_assert_uint_eq(cache_invalidation_for_op(JOB_OP_DELETE), perms | users);
        ck_assert_uint_eq(cache_invalidation_for_op(JOB_OP_REVERT), perms | users);
        ck_assert_uint_eq(cache_invalidation_for_op(JOB_OP_ASSIGN), users);
        ck_assert_uint_eq(cache_invalidation_for_op(JOB_OP_REMOVE), users);
        ck_assert_uint_eq(cache_invalidation_for_op(JOB_OP_EXPORT), 0);
        /* Any other write of Visier's API may change anything. */
        ck_assert_uint_eq(cache_invalidation_for_op(JOB_OP_CALL), CACHE_CLASSES_ALL);
        /* No permission write changes the model or the members. */
        for (int op = 0; op < _JOB_OP_MAX; op++)
                if (op != JOB_OP_CALL)
                        ck_assert_uint_eq(cache_invalidation_for_op((JobOp) op) &
                                                  (CACHE_CLASS_BIT(CACHE_CLASS_MODEL) | CACHE_CLASS_BIT(CACHE_CLASS_MEMBERS)),
                                          0);
}
END_TEST

START_TEST(test_directives) {
        CacheDirectives d;

        cache_directives_parse(NULL, NULL, &d);
        ck_assert(!d.no_cache && !d.no_store && d.max_age == USEC_INFINITY);
        cache_directives_parse("no-cache", NULL, &d);
        ck_assert(d.no_cache && !d.no_store);
        cache_directives_parse(" No-Cache , max-age=5", NULL, &d);
        ck_assert(d.no_cache);
        ck_assert_uint_eq(d.max_age, 5 * USEC_PER_SEC);
        cache_directives_parse("max-age=\"7\", no-store", NULL, &d);
        ck_assert(!d.no_cache && d.no_store);
        ck_assert_uint_eq(d.max_age, 7 * USEC_PER_SEC);
        cache_directives_parse("max-age=0", NULL, &d);
        ck_assert_uint_eq(d.max_age, 0);
        cache_directives_parse("max-age=99999999999999999999999", NULL, &d);
        ck_assert_uint_eq(d.max_age, USEC_INFINITY);
        /* Malformed values are ignored; so are directives that merely start like ours. */
        cache_directives_parse("max-age=-1, max-age=1x, no-cachex, =, ,,max-age", NULL, &d);
        ck_assert(!d.no_cache && d.max_age == USEC_INFINITY);
        cache_directives_parse("private, no-transform", NULL, &d);
        ck_assert(!d.no_cache && !d.no_store && d.max_age == USEC_INFINITY);
        /* Pragma counts only without Cache-Control (RFC 9111 5.4). */
        cache_directives_parse(NULL, "no-cache", &d);
        ck_assert(d.no_cache);
        cache_directives_parse("max-age=60", "no-cache", &d);
        ck_assert(!d.no_cache);
}
END_TEST

START_TEST(test_hit_and_miss) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey k = key(NULL, R_CAPS, R_CAPS);
        char status[CACHE_STATUS_MAX];
        CacheEntry *e;
        Lookup l;

        l = look(c, &k, NULL, NULL);
        ck_assert_int_eq(l.r, CACHE_LEAD);
        ck_assert_int_eq(cache_flight_forward(l.flight), CACHE_FWD_MISS);
        advance(2 * USEC_PER_SEC);
        e = cache_flight_done(l.flight, 200, "application/json", strdup("{\"caps\":[]}"), 11, clock_now());
        ck_assert_ptr_nonnull(e);
        ck_assert(cache_entry_stored(e));
        ck_assert_str_eq(cache_status_format(status, sizeof(status), CACHE_LEAD, e, clock_now()),
                         "visierd; fwd=miss; fwd-status=200; stored; ttl=298");
        ck_assert_uint_eq(cache_entry_age(e, clock_now()), 2);
        cache_entry_unref(e);

        advance(8 * USEC_PER_SEC);
        l = look(c, &k, NULL, NULL);
        ck_assert_int_eq(l.r, CACHE_HIT);
        ck_assert(body_is(l.entry, "{\"caps\":[]}"));
        ck_assert_uint_eq(cache_entry_status(l.entry), 200);
        ck_assert_str_eq(cache_entry_content_type(l.entry), "application/json");
        ck_assert_int_eq(cache_entry_class(l.entry), CACHE_CLASS_MODEL);
        /* The age counts from when the fetch began. */
        ck_assert_uint_eq(cache_entry_age(l.entry, clock_now()), 10);
        ck_assert_str_eq(cache_status_format(status, sizeof(status), CACHE_HIT, l.entry, clock_now()),
                         "visierd; hit; ttl=290");
        cache_entry_unref(l.entry);

        /* The query string, the accept header, the project are all part of the key. */
        k.query = "tenantCode=abc";
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_LEAD);
        cache_flight_fail(l.flight, -ETIMEDOUT);
        k.query = NULL;
        k.accept = "text/csv";
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_LEAD);
        cache_flight_fail(l.flight, -ETIMEDOUT);
        k.accept = "application/json";
        k.project = "7e2c";
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_LEAD);
        cache_flight_fail(l.flight, -ETIMEDOUT);
        k.project = NULL;
        k.non_versioned = "true";
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_LEAD);
        cache_flight_fail(l.flight, -ETIMEDOUT);
        k.non_versioned = NULL;
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_HIT);
        cache_entry_unref(l.entry);

        CacheStats s = stats(c);
        ck_assert_uint_eq(s.hits, 2);
        ck_assert_uint_eq(s.misses, 5);
        ck_assert_uint_eq(s.saved, 2);
        ck_assert_uint_eq(s.entries, 1);
        ck_assert_uint_eq(s.stored, 1);
        ck_assert_uint_gt(s.bytes, 11);
        ck_assert_uint_eq(s.flights, 0);
}
END_TEST

START_TEST(test_ttl_expiry) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey perms = key(NULL, R_PERMS, R_PERMS), caps = key(NULL, R_CAPS, R_CAPS);
        Lookup l;

        fill(c, &perms, 200, "[1]");
        fill(c, &caps, 200, "[2]");
        advance(60 * USEC_PER_SEC - 1);
        ck_assert_int_eq((l = look(c, &perms, NULL, NULL)).r, CACHE_HIT);
        cache_entry_unref(l.entry);
        advance(1); /* exactly the permission TTL: expired */
        l = look(c, &perms, NULL, NULL);
        ck_assert_int_eq(l.r, CACHE_LEAD);
        ck_assert_int_eq(cache_flight_forward(l.flight), CACHE_FWD_STALE);
        cache_entry_unref(cache_flight_done(l.flight, 200, NULL, strdup("[3]"), 3, clock_now()));
        /* The model keeps its longer TTL. */
        ck_assert_int_eq((l = look(c, &caps, NULL, NULL)).r, CACHE_HIT);
        cache_entry_unref(l.entry);
        advance(240 * USEC_PER_SEC);
        ck_assert_int_eq((l = look(c, &caps, NULL, NULL)).r, CACHE_LEAD);
        cache_flight_fail(l.flight, -EIO);
        ck_assert_uint_eq(stats(c).expirations, 2);

        /* A fetch that took longer than the TTL is handed on but not stored. */
        l = look(c, &perms, NULL, NULL);
        ck_assert_int_eq(l.r, CACHE_LEAD);
        advance(61 * USEC_PER_SEC);
        CacheEntry *e = cache_flight_done(l.flight, 200, NULL, strdup("[4]"), 3, clock_now());
        ck_assert(!cache_entry_stored(e));
        cache_entry_unref(e);
        ck_assert_int_eq((l = look(c, &perms, NULL, NULL)).r, CACHE_LEAD);
        cache_flight_fail(l.flight, -EIO);
}
END_TEST

START_TEST(test_only_200_stored) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey k = key(NULL, R_PERM, "/v1/admin/permissions/p1");
        const unsigned statuses[] = { 206, 404, 429, 500, 503 };
        Lookup l;

        for (size_t i = 0; i < ELEMENTSOF(statuses); i++) {
                Got g = {};
                Lookup f;

                l = look(c, &k, NULL, NULL);
                ck_assert_int_eq(l.r, CACHE_LEAD);
                f = look(c, &k, NULL, &g);
                ck_assert_int_eq(f.r, CACHE_FOLLOW);
                CacheEntry *e = cache_flight_done(l.flight, statuses[i], "application/json", strdup("{}"), 2,
                                                  clock_now());
                ck_assert(!cache_entry_stored(e));
                /* The follower asked the same thing at the same time: it gets the same answer. */
                ck_assert_int_eq(g.calls, 1);
                ck_assert_ptr_eq(g.entry, e);
                ck_assert_uint_eq(cache_entry_status(g.entry), statuses[i]);
                char status[CACHE_STATUS_MAX];
                char want[CACHE_STATUS_MAX];
                snprintf(want, sizeof(want), "visierd; fwd=miss; fwd-status=%u; collapsed", statuses[i]);
                ck_assert_str_eq(cache_status_format(status, sizeof(status), CACHE_FOLLOW, g.entry, clock_now()), want);
                cache_entry_unref(g.entry);
                cache_entry_unref(e);
        }
        ck_assert_uint_eq(stats(c).entries, 0);
        ck_assert_uint_eq(stats(c).stored, 0);
}
END_TEST

/* A body of n bytes of 'x'. */
static char *body_n(size_t n) {
        char *b = malloc(n);

        ck_assert_ptr_nonnull(b);
        memset(b, 'x', n);
        return b;
}

START_TEST(test_lru_eviction) {
        const size_t max = 64 * 1024, each = 4000;
        _cleanup_(cache_freep) Cache *c = new_cache(max);
        char paths[40][64];
        CacheKey k[40];
        CacheStats s;
        Lookup l;

        for (int i = 0; i < 40; i++) {
                snprintf(paths[i], sizeof(paths[i]), "/v1/admin/capabilities/cap%d", i);
                k[i] = key(NULL, "/v1/admin/capabilities/*", paths[i]);
        }
        for (int i = 0; i < 10; i++) {
                l = look(c, &k[i], NULL, NULL);
                cache_entry_unref(cache_flight_done(l.flight, 200, NULL, body_n(each), each, clock_now()));
        }
        s = stats(c);
        ck_assert_uint_eq(s.entries, 10);
        ck_assert_uint_eq(s.evictions, 0);
        /* Touch the oldest: it becomes the most recently used and outlives the next ones. */
        ck_assert_int_eq((l = look(c, &k[0], NULL, NULL)).r, CACHE_HIT);
        cache_entry_unref(l.entry);
        for (int i = 10; i < 40; i++) {
                l = look(c, &k[i], NULL, NULL);
                cache_entry_unref(cache_flight_done(l.flight, 200, NULL, body_n(each), each, clock_now()));
                s = stats(c);
                ck_assert_uint_le(s.bytes, max);
                if (i < 20) { /* k[0] is touched again and again */
                        ck_assert_int_eq((l = look(c, &k[0], NULL, NULL)).r, CACHE_HIT);
                        cache_entry_unref(l.entry);
                }
        }
        s = stats(c);
        ck_assert_uint_gt(s.evictions, 0);
        ck_assert_uint_eq(s.entries + s.evictions, 40);
        ck_assert_uint_gt(s.bytes + each, max - each); /* full, give or take one entry */
        /* Exactly the newest are there (k[0] too was evicted: 20 came after its last touch);
         * look them up from the oldest so no hit changes the order before it is checked. */
        ck_assert_uint_lt(s.entries, 20);
        for (int i = 0; i < 40; i++) {
                l = look(c, &k[i], NULL, NULL);
                ck_assert_int_eq(l.r, i >= 40 - (int) s.entries ? CACHE_HIT : CACHE_LEAD);
                if (l.r == CACHE_HIT)
                        cache_entry_unref(l.entry);
                else
                        cache_flight_fail(l.flight, -EIO);
        }
}
END_TEST

START_TEST(test_oversize_not_stored) {
        const size_t max = 80 * 1024;
        _cleanup_(cache_freep) Cache *c = new_cache(max);
        CacheKey k = key(NULL, R_MEMBERS, "/v1/data/model/analytic-objects/Employee/dimensions/Org/members");
        CacheKey small = key(NULL, R_CAPS, R_CAPS);
        Got g = {};
        Lookup l, f;
        CacheEntry *e;

        fill(c, &small, 200, "[]");
        l = look(c, &k, NULL, NULL);
        f = look(c, &k, NULL, &g);
        ck_assert_int_eq(f.r, CACHE_FOLLOW);
        e = cache_flight_done(l.flight, 200, NULL, body_n(max / CACHE_ENTRY_FRACTION), max / CACHE_ENTRY_FRACTION,
                              clock_now());
        ck_assert(!cache_entry_stored(e));
        ck_assert_int_eq(g.calls, 1);
        ck_assert_ptr_eq(g.entry, e);
        cache_entry_unref(g.entry);
        cache_entry_unref(e);
        CacheStats s = stats(c);
        ck_assert_uint_eq(s.not_stored_oversize, 1);
        ck_assert_uint_eq(s.entries, 1); /* nothing was evicted for it */
        ck_assert_uint_eq(s.evictions, 0);
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_LEAD);
        /* Just under the fraction is stored. */
        e = cache_flight_done(l.flight, 200, NULL, body_n(max / CACHE_ENTRY_FRACTION - 1024),
                              max / CACHE_ENTRY_FRACTION - 1024, clock_now());
        ck_assert(cache_entry_stored(e));
        cache_entry_unref(e);
}
END_TEST

START_TEST(test_single_flight) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey k = key("tenantA", R_MEMBERS, "/v1/data/model/analytic-objects/Employee/dimensions/Org/members");
        Got got[100] = {};
        Lookup l[100];
        int leads = 0, follows = 0;
        CacheFlight *flight = NULL;
        CacheEntry *e;
        CacheStats s;

        for (int i = 0; i < 100; i++) {
                l[i] = look(c, &k, NULL, &got[i]);
                if (l[i].r == CACHE_LEAD) {
                        leads++;
                        flight = l[i].flight;
                } else if (l[i].r == CACHE_FOLLOW)
                        follows++;
        }
        ck_assert_int_eq(leads, 1);
        ck_assert_int_eq(follows, 99);
        ck_assert_int_eq(l[0].r, CACHE_LEAD);
        s = stats(c);
        ck_assert_uint_eq(s.flights, 1);
        for (int i = 1; i < 100; i++)
                ck_assert_int_eq(got[i].calls, 0);

        e = cache_flight_done(flight, 200, "application/json", strdup("{\"members\":[]}"), 14, clock_now());
        for (int i = 1; i < 100; i++) {
                ck_assert_int_eq(got[i].calls, 1);
                ck_assert_int_eq(got[i].error, 0);
                ck_assert_ptr_eq(got[i].entry, e);
                ck_assert(body_is(got[i].entry, "{\"members\":[]}"));
                cache_entry_unref(got[i].entry);
        }
        cache_entry_unref(e);
        s = stats(c);
        ck_assert_uint_eq(s.misses, 1);
        ck_assert_uint_eq(s.collapsed, 99);
        ck_assert_uint_eq(s.saved, 99);
        ck_assert_uint_eq(s.flights, 0);
        ck_assert_uint_eq(s.entries, 1);
}
END_TEST

START_TEST(test_flight_fail_and_cancel) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey k = key(NULL, R_PERMS, R_PERMS);
        Got a = {}, b = {}, x = {};
        Lookup l, fa, fb, fx;

        l = look(c, &k, NULL, NULL);
        fa = look(c, &k, NULL, &a);
        fx = look(c, &k, NULL, &x);
        fb = look(c, &k, NULL, &b);
        ck_assert_int_eq(fa.r, CACHE_FOLLOW);
        ck_assert_int_eq(fb.r, CACHE_FOLLOW);
        ck_assert_int_eq(fx.r, CACHE_FOLLOW);
        ck_assert(cache_waiter_cancel(fx.waiter)); /* its client went away */
        cache_flight_fail(l.flight, -ETIMEDOUT);
        ck_assert_int_eq(a.calls, 1);
        ck_assert_int_eq(a.error, -ETIMEDOUT);
        ck_assert_ptr_null(a.entry);
        ck_assert_int_eq(b.calls, 1);
        ck_assert_int_eq(x.calls, 0);
        /* Nothing stays behind: the next lookup leads. */
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_LEAD);
        cache_flight_fail(l.flight, -ECANCELED);
        ck_assert_uint_eq(stats(c).flights, 0);
        ck_assert_uint_eq(stats(c).entries, 0);
}
END_TEST

/* A follower whose cancel races with the end of its flight: cancel, called while the
 * callback is due or running (here: from inside it), says so and frees nothing. */
typedef struct SelfCancel {
        CacheWaiter *waiter;
        int calls;
        bool cancelled;
} SelfCancel;

static void self_cancel_cb(CacheEntry *e, int error, void *userdata) {
        SelfCancel *sc = userdata;

        sc->calls++;
        sc->cancelled = cache_waiter_cancel(sc->waiter);
        cache_entry_unref(e);
}

START_TEST(test_cancel_after_end) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey k = key(NULL, R_PERMS, R_PERMS);
        SelfCancel sc = {};
        CacheEntry *e = NULL;
        CacheFlight *lead = NULL, *f = NULL;
        CacheWaiter *w = NULL;

        ck_assert_int_eq(cache_lookup(c, &k, NULL, clock_now(), self_cancel_cb, &sc, &e, &lead, &w), CACHE_LEAD);
        ck_assert_int_eq(cache_lookup(c, &k, NULL, clock_now(), self_cancel_cb, &sc, &e, &f, &sc.waiter),
                         CACHE_FOLLOW);
        cache_entry_unref(cache_flight_done(lead, 200, NULL, strdup("[]"), 2, clock_now()));
        ck_assert_int_eq(sc.calls, 1);
        ck_assert(!sc.cancelled);
}
END_TEST

/* A write finishes while a read of what it changed is in flight: the read's answer goes to
 * those already waiting, but is never stored, and no later lookup joins that read. */
START_TEST(test_invalidation_during_flight) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey k = key(NULL, R_PERMS, R_PERMS);
        Got early = {}, late = {};
        Lookup old, f1, fresh, f2, l;
        CacheEntry *e;

        old = look(c, &k, NULL, NULL);
        f1 = look(c, &k, NULL, &early);
        ck_assert_int_eq(f1.r, CACHE_FOLLOW);

        cache_invalidate(c, NULL, cache_invalidation_for_op(JOB_OP_CREATE));

        /* A lookup after the write does not join the older fetch. */
        fresh = look(c, &k, NULL, NULL);
        ck_assert_int_eq(fresh.r, CACHE_LEAD);
        f2 = look(c, &k, NULL, &late);
        ck_assert_int_eq(f2.r, CACHE_FOLLOW);

        /* The newer fetch ends first and is stored; the older one ends later and is not. */
        cache_entry_unref(cache_flight_done(fresh.flight, 200, NULL, strdup("[\"old\",\"new\"]"), 13, clock_now()));
        ck_assert_int_eq(late.calls, 1);
        ck_assert(body_is(late.entry, "[\"old\",\"new\"]"));
        cache_entry_unref(late.entry);
        e = cache_flight_done(old.flight, 200, NULL, strdup("[\"old\"]"), 7, clock_now());
        ck_assert(!cache_entry_stored(e));
        ck_assert_int_eq(early.calls, 1);
        ck_assert_ptr_eq(early.entry, e);
        cache_entry_unref(early.entry);
        cache_entry_unref(e);
        ck_assert_uint_eq(stats(c).not_stored_stale, 1);

        l = look(c, &k, NULL, NULL);
        ck_assert_int_eq(l.r, CACHE_HIT);
        ck_assert(body_is(l.entry, "[\"old\",\"new\"]"));
        cache_entry_unref(l.entry);

        /* Without a second fetch: the stale answer is not stored, the next lookup misses. */
        cache_invalidate(c, NULL, CACHE_CLASSES_ALL);
        old = look(c, &k, NULL, NULL);
        ck_assert_int_eq(old.r, CACHE_LEAD);
        cache_invalidate(c, "", CACHE_CLASS_BIT(CACHE_CLASS_PERMISSIONS));
        cache_entry_unref(cache_flight_done(old.flight, 200, NULL, strdup("[]"), 2, clock_now()));
        l = look(c, &k, NULL, NULL);
        ck_assert_int_eq(l.r, CACHE_LEAD);
        ck_assert_int_eq(cache_flight_forward(l.flight), CACHE_FWD_MISS);
        cache_flight_fail(l.flight, -EIO);

        /* An invalidation of another class or tenant leaves the flight current. */
        old = look(c, &k, NULL, NULL);
        cache_invalidate(c, NULL, CACHE_CLASS_BIT(CACHE_CLASS_ASSIGNMENTS) | CACHE_CLASS_BIT(CACHE_CLASS_MODEL));
        cache_invalidate(c, "tenantB", CACHE_CLASSES_ALL);
        cache_entry_unref(cache_flight_done(old.flight, 200, NULL, strdup("[]"), 2, clock_now()));
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_HIT);
        cache_entry_unref(l.entry);
}
END_TEST

START_TEST(test_invalidation_scope) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey pa = key("A", R_PERMS, R_PERMS), pb = key("B", R_PERMS, R_PERMS);
        CacheKey pn = key(NULL, R_PERMS, R_PERMS), pe = key("", R_PERMS, R_PERMS);
        CacheKey ca = key("A", R_CAPS, R_CAPS);
        Lookup l;

#define EXPECT(k, result)                                            \
        do {                                                         \
                l = look(c, &(k), NULL, NULL);                       \
                ck_assert_int_eq(l.r, (result));                     \
                if (l.r == CACHE_HIT)                                \
                        cache_entry_unref(l.entry);                  \
                else                                                 \
                        cache_entry_unref(cache_flight_done(l.flight, 200, NULL, strdup("[]"), 2, clock_now())); \
        } while (0)

        fill(c, &pa, 200, "[\"a\"]");
        fill(c, &pb, 200, "[\"b\"]");
        fill(c, &pn, 200, "[\"admin\"]");
        fill(c, &pe, 200, "[\"admin, empty header\"]");
        fill(c, &ca, 200, "[\"caps a\"]");
        ck_assert_uint_eq(stats(c).entries, 5); /* absent and empty TargetTenantID are two keys */

        cache_invalidate(c, "A", CACHE_CLASS_BIT(CACHE_CLASS_PERMISSIONS));
        EXPECT(ca, CACHE_HIT); /* another class */
        EXPECT(pb, CACHE_HIT);
        EXPECT(pn, CACHE_HIT);
        EXPECT(pe, CACHE_HIT);
        EXPECT(pa, CACHE_LEAD);
        ck_assert_uint_eq(stats(c).invalidations, 1);

        cache_invalidate(c, "", CACHE_CLASS_BIT(CACHE_CLASS_PERMISSIONS)); /* the administrating tenant */
        EXPECT(pa, CACHE_HIT);
        EXPECT(pb, CACHE_HIT);
        EXPECT(pn, CACHE_LEAD);
        EXPECT(pe, CACHE_LEAD);

        cache_invalidate(c, NULL, CACHE_CLASS_BIT(CACHE_CLASS_PERMISSIONS)); /* every tenant */
        EXPECT(ca, CACHE_HIT);
        EXPECT(pa, CACHE_LEAD);
        EXPECT(pb, CACHE_LEAD);
        EXPECT(pn, CACHE_LEAD);
        EXPECT(pe, CACHE_LEAD);
#undef EXPECT
}
END_TEST

START_TEST(test_tenants_do_not_share) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey a = key("A", R_PERMS, R_PERMS), b = key("B", R_PERMS, R_PERMS);
        Got gb = {};
        Lookup la, lb, fb;

        la = look(c, &a, NULL, NULL);
        lb = look(c, &b, NULL, &gb);
        ck_assert_int_eq(la.r, CACHE_LEAD);
        ck_assert_int_eq(lb.r, CACHE_LEAD); /* not a follower of A's fetch */
        cache_entry_unref(cache_flight_done(la.flight, 200, NULL, strdup("[\"a\"]"), 5, clock_now()));
        ck_assert_int_eq(gb.calls, 0);
        fb = look(c, &b, NULL, &gb);
        ck_assert_int_eq(fb.r, CACHE_FOLLOW); /* B still waits for its own */
        cache_entry_unref(cache_flight_done(lb.flight, 200, NULL, strdup("[\"b\"]"), 5, clock_now()));
        ck_assert(body_is(gb.entry, "[\"b\"]"));
        cache_entry_unref(gb.entry);

        la = look(c, &a, NULL, NULL);
        ck_assert_int_eq(la.r, CACHE_HIT);
        ck_assert(body_is(la.entry, "[\"a\"]"));
        cache_entry_unref(la.entry);
        lb = look(c, &b, NULL, NULL);
        ck_assert_int_eq(lb.r, CACHE_HIT);
        ck_assert(body_is(lb.entry, "[\"b\"]"));
        cache_entry_unref(lb.entry);
}
END_TEST

START_TEST(test_force_refresh) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey k = key(NULL, R_CAPS, R_CAPS);
        CacheDirectives no_cache, max5, max20;
        Got g = {};
        Lookup l, r1, r2, f;
        CacheEntry *e;

        cache_directives_parse("no-cache", NULL, &no_cache);
        cache_directives_parse("max-age=5", NULL, &max5);
        cache_directives_parse("max-age=20", NULL, &max20);
        fill(c, &k, 200, "v1");
        advance(10 * USEC_PER_SEC);

        ck_assert_int_eq((l = look(c, &k, &max20, NULL)).r, CACHE_HIT);
        cache_entry_unref(l.entry);
        r1 = look(c, &k, &max5, NULL); /* stored 10 s ago: too old for this client */
        ck_assert_int_eq(r1.r, CACHE_LEAD);
        ck_assert_int_eq(cache_flight_forward(r1.flight), CACHE_FWD_REQUEST);
        /* Others are still served the stored answer meanwhile. */
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_HIT);
        ck_assert(body_is(l.entry, "v1"));
        cache_entry_unref(l.entry);
        /* A no-cache client does not join a fetch that began before it asked: it leads its own,
         * which supersedes the older one. */
        r2 = look(c, &k, &no_cache, NULL);
        ck_assert_int_eq(r2.r, CACHE_LEAD);
        f = look(c, &k, &max5, &g); /* joins the newest fetch */
        ck_assert_int_eq(f.r, CACHE_FOLLOW);
        e = cache_flight_done(r2.flight, 200, NULL, strdup("v3"), 2, clock_now());
        ck_assert(cache_entry_stored(e));
        char status[CACHE_STATUS_MAX];
        ck_assert_str_eq(cache_status_format(status, sizeof(status), CACHE_LEAD, e, clock_now()),
                         "visierd; fwd=request; fwd-status=200; stored; ttl=300");
        ck_assert_str_eq(cache_status_format(status, sizeof(status), CACHE_FOLLOW, g.entry, clock_now()),
                         "visierd; fwd=request; fwd-status=200; collapsed; stored; ttl=300");
        cache_entry_unref(g.entry);
        cache_entry_unref(e);
        /* The superseded fetch ends later with an older answer: it must not replace v3. */
        e = cache_flight_done(r1.flight, 200, NULL, strdup("v2"), 2, clock_now());
        ck_assert(!cache_entry_stored(e));
        cache_entry_unref(e);
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_HIT);
        ck_assert(body_is(l.entry, "v3"));
        cache_entry_unref(l.entry);
        ck_assert_uint_eq(stats(c).entries, 1);

        /* no-cache always fetches, even with a fresh answer stored; the result replaces it. */
        l = look(c, &k, &no_cache, NULL);
        ck_assert_int_eq(l.r, CACHE_LEAD);
        cache_entry_unref(cache_flight_done(l.flight, 200, NULL, strdup("v4"), 2, clock_now()));
        ck_assert_int_eq((l = look(c, &k, NULL, NULL)).r, CACHE_HIT);
        ck_assert(body_is(l.entry, "v4"));
        cache_entry_unref(l.entry);
        ck_assert_uint_eq(stats(c).entries, 1);
}
END_TEST

START_TEST(test_bypass) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey users = key(NULL, R_USERS, "/v1/admin/permissions/p1/users");
        CacheKey jobs = key(NULL, "/jobs", "/jobs");
        CacheKey caps = key(NULL, R_CAPS, R_CAPS);
        CacheDirectives no_store;
        char status[CACHE_STATUS_MAX];
        _cleanup_free_ char *long_query = malloc(CACHE_KEY_MAX + 1);
        Lookup a, b;

        ck_assert_uint_eq(cache_route_ttl(c, R_USERS), 0); /* assignments_ttl 0 */
        ck_assert_uint_eq(cache_route_ttl(c, "/jobs"), 0);
        ck_assert_uint_eq(cache_route_ttl(c, R_PERMS), 60 * USEC_PER_SEC);
        cache_directives_parse("no-store", NULL, &no_store);
        memset(long_query, 'q', CACHE_KEY_MAX);
        long_query[CACHE_KEY_MAX] = '\0';

        const struct {
                CacheKey *k;
                const CacheDirectives *d;
                const char *query;
        } cases[] = { { &users, NULL, NULL }, { &jobs, NULL, NULL }, { &caps, &no_store, NULL }, { &caps, NULL, long_query } };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                cases[i].k->query = cases[i].query;
                a = look(c, cases[i].k, cases[i].d, NULL);
                b = look(c, cases[i].k, cases[i].d, NULL);
                ck_assert_int_eq(a.r, CACHE_LEAD);
                ck_assert_int_eq(b.r, CACHE_LEAD); /* no sharing */
                ck_assert_int_eq(cache_flight_forward(a.flight), CACHE_FWD_BYPASS);
                CacheEntry *e = cache_flight_done(a.flight, 200, NULL, strdup("x"), 1, clock_now());
                ck_assert(!cache_entry_stored(e));
                ck_assert_int_eq(cache_entry_class(e), cases[i].k == &jobs ? _CACHE_CLASS_INVALID
                                                                           : cache_route_class(cases[i].k->route));
                ck_assert_str_eq(cache_status_format(status, sizeof(status), CACHE_LEAD, e, clock_now()),
                                 "visierd; fwd=bypass; fwd-status=200");
                cache_entry_unref(e);
                cache_flight_fail(b.flight, -EIO);
                cases[i].k->query = NULL;
        }
        CacheStats s = stats(c);
        ck_assert_uint_eq(s.bypasses, 8);
        ck_assert_uint_eq(s.misses, 0);
        ck_assert_uint_eq(s.entries, 0);
        ck_assert_uint_eq(s.not_stored_stale + s.not_stored_oversize, 0);
}
END_TEST

START_TEST(test_disabled) {
        _cleanup_(cache_freep) Cache *c = new_cache(0);
        CacheKey k = key(NULL, R_CAPS, R_CAPS);
        Lookup l[100];

        ck_assert_uint_eq(cache_route_ttl(c, R_CAPS), 0);
        for (int i = 0; i < 100; i++) {
                l[i] = look(c, &k, NULL, NULL);
                ck_assert_int_eq(l[i].r, CACHE_LEAD);
                ck_assert_int_eq(cache_flight_forward(l[i].flight), CACHE_FWD_BYPASS);
        }
        for (int i = 0; i < 100; i++) {
                CacheEntry *e = cache_flight_done(l[i].flight, 200, NULL, strdup("[]"), 2, clock_now());
                ck_assert(!cache_entry_stored(e));
                cache_entry_unref(e);
        }
        CacheStats s = stats(c);
        ck_assert_uint_eq(s.bypasses, 100);
        ck_assert_uint_eq(s.collapsed, 0);
        ck_assert_uint_eq(s.entries, 0);
        ck_assert_uint_eq(s.bytes, 0);
        ck_assert_uint_eq(s.max_bytes, 0);
}
END_TEST

START_TEST(test_settings_change) {
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey caps = key(NULL, R_CAPS, R_CAPS), perms = key(NULL, R_PERMS, R_PERMS);
        CacheSettings s = settings(1 << 20);
        Got g = {};
        Lookup l, f;

        fill(c, &caps, 200, "[]");
        fill(c, &perms, 200, "[]");
        s.ttl[CACHE_CLASS_PERMISSIONS] = 10 * USEC_PER_SEC; /* the permissions' TTL changes */
        cache_set_settings(c, &s);
        ck_assert_int_eq((l = look(c, &caps, NULL, NULL)).r, CACHE_HIT);
        cache_entry_unref(l.entry);
        ck_assert_int_eq((l = look(c, &perms, NULL, NULL)).r, CACHE_LEAD);
        cache_entry_unref(cache_flight_done(l.flight, 200, NULL, strdup("[]"), 2, clock_now()));
        advance(10 * USEC_PER_SEC);
        ck_assert_int_eq((l = look(c, &perms, NULL, NULL)).r, CACHE_LEAD);
        f = look(c, &perms, NULL, &g);
        ck_assert_int_eq(f.r, CACHE_FOLLOW);

        /* Off while a fetch is in flight: its answer still reaches the follower, nothing is
         * stored, and later lookups do not share. */
        s.max_bytes = 0;
        cache_set_settings(c, &s);
        ck_assert_uint_eq(stats(c).entries, 0);
        ck_assert_uint_eq(stats(c).bytes, 0);
        ck_assert_uint_eq(stats(c).flights, 0);
        cache_entry_unref(cache_flight_done(l.flight, 200, NULL, strdup("[]"), 2, clock_now()));
        ck_assert_int_eq(g.calls, 1);
        cache_entry_unref(g.entry);
        ck_assert_int_eq((l = look(c, &caps, NULL, NULL)).r, CACHE_LEAD);
        ck_assert_int_eq(cache_flight_forward(l.flight), CACHE_FWD_BYPASS);
        cache_flight_fail(l.flight, -EIO);

        /* On again with a small bound: filling past it evicts. */
        s.max_bytes = 16 * 1024;
        cache_set_settings(c, &s);
        fill(c, &caps, 200, "[]");
        ck_assert_uint_eq(stats(c).entries, 1);
        s.max_bytes = 100; /* below one entry's size */
        cache_set_settings(c, &s);
        ck_assert_uint_eq(stats(c).entries, 0);
        ck_assert_uint_ge(stats(c).evictions, 1);
}
END_TEST

/* A hit handed to a client stays readable after the cache dropped it. */
START_TEST(test_entry_outlives_cache) {
        Cache *c = new_cache(1 << 20);
        CacheKey k = key(NULL, R_CAPS, R_CAPS);
        CacheEntry *e;
        Lookup l;

        fill(c, &k, 200, "still here");
        l = look(c, &k, NULL, NULL);
        ck_assert_int_eq(l.r, CACHE_HIT);
        e = l.entry;
        cache_invalidate(c, NULL, CACHE_CLASSES_ALL);
        ck_assert_uint_eq(stats(c).entries, 0);
        cache_free(c);
        ck_assert(body_is(e, "still here"));
        ck_assert_ptr_eq(cache_entry_ref(e), e);
        cache_entry_unref(e);
        cache_entry_unref(e);
}
END_TEST

START_TEST(test_config_and_metrics) {
        _cleanup_(config_freep) Config *cfg = NULL;
        _cleanup_(metrics_freep) Metrics *m = NULL;
        _cleanup_(cache_freep) Cache *c = new_cache(1 << 20);
        CacheKey k = key(NULL, R_CAPS, R_CAPS);
        ConfigErrors errors = {};
        MetricsGauges g = {};
        CacheStats s;
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        Lookup l;

        ck_assert_int_eq(config_load_string("t.conf", "[visier]\nbase_url = https://x.api.visier.io\nusername = u\n",
                                            &cfg, &errors), 0);
        ck_assert_uint_eq(cfg->cache_max_bytes, 64 * 1024 * 1024);
        ck_assert_uint_eq(cfg->cache_model_ttl, 300);
        ck_assert_uint_eq(cfg->cache_members_ttl, 300);
        ck_assert_uint_eq(cfg->cache_permissions_ttl, 60);
        ck_assert_uint_eq(cfg->cache_assignments_ttl, 0);
        config_free(TAKE_PTR(cfg));
        ck_assert_int_eq(config_load_string("t.conf",
                                            "[visier]\nbase_url = https://x.api.visier.io\nusername = u\n"
                                            "[cache]\nmax_bytes = 0\nassignments_ttl = 30\n",
                                            &cfg, &errors), 0);
        ck_assert_uint_eq(cfg->cache_max_bytes, 0);
        ck_assert_uint_eq(cfg->cache_assignments_ttl, 30);

        fill(c, &k, 200, "[]");
        l = look(c, &k, NULL, NULL);
        cache_entry_unref(l.entry);
        cache_stats(c, &s);
        ck_assert_int_eq(metrics_new(&m), 0);
        text = metrics_render(m, &g, &len);
        ck_assert_ptr_null(strstr(text, "visierd_cache_")); /* not given: not rendered */
        free(TAKE_PTR(text));
        g.cache = &s;
        text = metrics_render(m, &g, &len);
        ck_assert_ptr_nonnull(strstr(text, "\nvisierd_cache_hits_total 1\n"));
        ck_assert_ptr_nonnull(strstr(text, "\nvisierd_cache_misses_total 1\n"));
        ck_assert_ptr_nonnull(strstr(text, "\nvisierd_cache_upstream_calls_saved_total 1\n"));
        ck_assert_ptr_nonnull(strstr(text, "\nvisierd_cache_entries 1\n"));
        ck_assert_ptr_nonnull(strstr(text, "\nvisierd_cache_max_bytes 1048576\n"));
        ck_assert_ptr_nonnull(strstr(text, "# TYPE visierd_cache_bytes gauge\n"));
        ck_assert_ptr_nonnull(strstr(text, "visierd_cache_not_stored_total{reason=\"oversize\"} 0\n"));
}
END_TEST

/* ---- threads: lookups on several threads, invalidations from another ---- */

#define T_READERS 6
#define T_ROUNDS 3000
#define T_TENANTS 3

typedef struct World {
        Cache *cache;
        atomic_uint_fast64_t version[T_TENANTS];   /* "Visier's" state per tenant */
        atomic_uint_fast64_t published[T_TENANTS]; /* the last version whose write was invalidated */
        atomic_int stop;
        atomic_int stale_reads, bad, hits, follows, leads, writes, cancels;
} World;

typedef struct Wait {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
        int error;
        CacheEntry *entry;
} Wait;

static void wait_cb(CacheEntry *e, int error, void *userdata) {
        Wait *w = userdata;

        pthread_mutex_lock(&w->lock);
        w->entry = e;
        w->error = error;
        w->done = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

static const char *const t_tenants[T_TENANTS] = { NULL, "A", "B" };
static const char *const t_routes[][2] = {
        { R_PERMS, R_PERMS },
        { R_PERM, "/v1/admin/permissions/p1" },
        { R_CAPS, R_CAPS },
};

static void *reader(void *arg) {
        World *w = arg;
        unsigned seed = (unsigned) (uintptr_t) pthread_self();

        for (int i = 0; i < T_ROUNDS; i++) {
                int t = rand_r(&seed) % T_TENANTS, rt = rand_r(&seed) % (int) ELEMENTSOF(t_routes);
                CacheKey k = key(t_tenants[t], t_routes[rt][0], t_routes[rt][1]);
                uint64_t floor = atomic_load(&w->published[t]), got;
                Wait wait = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
                CacheEntry *e = NULL;
                CacheFlight *f = NULL;
                CacheWaiter *waiter = NULL;
                char body[64];
                int r;

                if (i % 8 == 0)
                        clock_sleep(10);
                r = cache_lookup(w->cache, &k, NULL, clock_now(), wait_cb, &wait, &e, &f, &waiter);
                if (r == CACHE_LEAD) {
                        atomic_fetch_add(&w->leads, 1);
                        /* "Fetch": Visier's state as of now, taking a little time. */
                        snprintf(body, sizeof(body), "%llu",
                                 (unsigned long long) atomic_load(&w->version[t]));
                        clock_sleep(50); /* the call takes a while: others join, writes land */
                        if (rand_r(&seed) % 50 == 0) {
                                cache_flight_fail(f, -ETIMEDOUT);
                                continue;
                        }
                        e = cache_flight_done(f, 200, "application/json", strdup(body), strlen(body), clock_now());
                } else if (r == CACHE_FOLLOW) {
                        atomic_fetch_add(&w->follows, 1);
                        pthread_mutex_lock(&wait.lock);
                        /* Now and then the client goes away, racing with the lead's end: the
                         * cancel is serialised with the callback by wait.lock. */
                        if (rand_r(&seed) % 8 == 0 && !wait.done && cache_waiter_cancel(waiter)) {
                                pthread_mutex_unlock(&wait.lock);
                                atomic_fetch_add(&w->cancels, 1);
                                continue;
                        }
                        while (!wait.done)
                                pthread_cond_wait(&wait.cond, &wait.lock);
                        pthread_mutex_unlock(&wait.lock);
                        e = wait.entry;
                        if (wait.error < 0) {
                                if (wait.error != -ETIMEDOUT || e)
                                        atomic_fetch_add(&w->bad, 1);
                                continue;
                        }
                } else if (r == CACHE_HIT)
                        atomic_fetch_add(&w->hits, 1);
                else {
                        atomic_fetch_add(&w->bad, 1);
                        continue;
                }
                if (!e) {
                        atomic_fetch_add(&w->bad, 1);
                        continue;
                }
                size_t n;
                const char *b = cache_entry_body(e, &n);
                got = strtoull(b, NULL, 10);
                /* Read-your-writes: nothing older than the last write invalidated before the
                 * lookup began. Only the permission classes are invalidated by writes. */
                if (cache_entry_class(e) == CACHE_CLASS_PERMISSIONS && got < floor)
                        atomic_fetch_add(&w->stale_reads, 1);
                cache_entry_unref(e);
        }
        return NULL;
}

/* Writes until the readers are done, each a little apart: now and then a reload to a bound
 * too small for any answer, undone by the next write. */
static void *writer(void *arg) {
        World *w = arg;
        unsigned seed = 7;
        int i;

        for (i = 0; !atomic_load(&w->stop); i++) {
                int t = rand_r(&seed) % T_TENANTS;
                uint64_t v = atomic_fetch_add(&w->version[t], 1) + 1;

                /* The write is done at "Visier"; then visierd invalidates, then says so. */
                cache_invalidate(w->cache, rand_r(&seed) % 2 ? NULL : strempty(t_tenants[t]),
                                 cache_invalidation_for_op(JOB_OP_UPDATE));
                atomic_store(&w->published[t], v);
                if (i % 64 == 0 || i % 64 == 1) {
                        CacheSettings s = settings(i % 64 == 0 ? 200 : 1 << 20);
                        cache_set_settings(w->cache, &s);
                }
                clock_sleep(100);
        }
        CacheSettings s = settings(1 << 20);
        cache_set_settings(w->cache, &s);
        atomic_store(&w->writes, i);
        return NULL;
}

START_TEST(test_threads) {
        static World w;
        pthread_t readers[T_READERS], wr;
        CacheStats s;

        clock_set_source(NULL); /* real time; the TTLs are far longer than the test */
        memset(&w, 0, sizeof(w));
        w.cache = new_cache(1 << 20);
        ck_assert_int_eq(pthread_create(&wr, NULL, writer, &w), 0);
        for (int i = 0; i < T_READERS; i++)
                ck_assert_int_eq(pthread_create(&readers[i], NULL, reader, &w), 0);
        for (int i = 0; i < T_READERS; i++)
                pthread_join(readers[i], NULL);
        atomic_store(&w.stop, 1);
        pthread_join(wr, NULL);

        cache_stats(w.cache, &s);
        int bad = atomic_load(&w.bad), stale_reads = atomic_load(&w.stale_reads);
        uint64_t hits = (uint64_t) atomic_load(&w.hits), follows = (uint64_t) atomic_load(&w.follows),
                 leads = (uint64_t) atomic_load(&w.leads);
        printf("test_threads: %d lookups: %llu hits, %llu followers (%d cancelled), %llu leads; %d writes; %llu "
               "evictions, %llu answers not stored as outdated\n",
               T_READERS * T_ROUNDS, (unsigned long long) hits, (unsigned long long) follows,
               atomic_load(&w.cancels), (unsigned long long) leads, atomic_load(&w.writes),
               (unsigned long long) s.evictions, (unsigned long long) s.not_stored_stale);
        ck_assert_int_eq(bad, 0);
        ck_assert_int_eq(stale_reads, 0);
        ck_assert_uint_eq(s.flights, 0);
        ck_assert_uint_eq(s.hits, hits);
        ck_assert_uint_eq(s.collapsed, follows);
        ck_assert_uint_eq(s.misses + s.bypasses, leads);
        ck_assert_uint_gt(follows, 0);
        ck_assert_int_gt(atomic_load(&w.writes), 0);
        ck_assert_uint_gt(s.hits, 0);
        ck_assert_uint_le(s.bytes, 1 << 20);
        cache_free(w.cache);
}
END_TEST

static Suite *cache_suite(void) {
        Suite *s = suite_create("cache");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_route_table);
        tcase_add_test(tc, test_invalidation_for_op);
        tcase_add_test(tc, test_directives);
        tcase_add_test(tc, test_hit_and_miss);
        tcase_add_test(tc, test_ttl_expiry);
        tcase_add_test(tc, test_only_200_stored);
        tcase_add_test(tc, test_lru_eviction);
        tcase_add_test(tc, test_oversize_not_stored);
        tcase_add_test(tc, test_single_flight);
        tcase_add_test(tc, test_flight_fail_and_cancel);
        tcase_add_test(tc, test_cancel_after_end);
        tcase_add_test(tc, test_invalidation_during_flight);
        tcase_add_test(tc, test_invalidation_scope);
        tcase_add_test(tc, test_tenants_do_not_share);
        tcase_add_test(tc, test_force_refresh);
        tcase_add_test(tc, test_bypass);
        tcase_add_test(tc, test_disabled);
        tcase_add_test(tc, test_settings_change);
        tcase_add_test(tc, test_entry_outlives_cache);
        tcase_add_test(tc, test_config_and_metrics);
        tcase_add_test(tc, test_threads);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(cache_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
