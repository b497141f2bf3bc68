/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metadata cache: answers of Visier's metadata reads (capabilities, content packages,
 * data security objects, analytic objects, dimensions, members, permissions) kept in memory
 * per tenant and request, bounded in bytes with LRU eviction, with one upstream call per key
 * at a time (single flight), and invalidated by visierd's own successful writes so that no
 * lookup after a write returns an answer fetched before it finished.
 *
 * Pure: no I/O, no clock (every time is passed in), no threads of its own, never logs. It
 * never calls Visier either: a lookup that misses makes its caller the "lead", which fetches
 * and hands the answer back. Thread-safe behind one mutex, which is never held while a
 * caller's callback runs. docs/architecture.md ("Metadata cache") has the rules.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "jobs.h"
#include "macro.h"

/* Longest key (the headers, path and query string together) that is cached; a longer
 * request is fetched for itself alone. */
#define CACHE_KEY_MAX 16384
/* An answer that would take more than 1/CACHE_ENTRY_FRACTION of max_bytes is not stored. */
#define CACHE_ENTRY_FRACTION 8
/* Room a Cache-Status value needs with cache_status_format(). */
#define CACHE_STATUS_MAX 128

/* What a cached answer is, which decides its time to live and the writes that invalidate it. */
typedef enum CacheClass {
        CACHE_CLASS_MODEL,       /* capabilities, content packages, data security objects,
                                  * analytic objects, dimensions */
        CACHE_CLASS_MEMBERS,     /* dimension members */
        CACHE_CLASS_PERMISSIONS, /* the permission list and single permissions */
        CACHE_CLASS_ASSIGNMENTS, /* the users a permission is assigned to */
        _CACHE_CLASS_MAX,
        _CACHE_CLASS_INVALID = -1,
} CacheClass;

#define CACHE_CLASS_BIT(c) (1u << (unsigned) (c))
#define CACHE_CLASSES_ALL ((1u << _CACHE_CLASS_MAX) - 1u)

const char *cache_class_to_string(CacheClass c);
CacheClass cache_class_from_string(const char *s);

/* The class of a local route pattern, spelled as in api.c's route table (wildcards and all);
 * _CACHE_CLASS_INVALID for a route that is never cached. */
CacheClass cache_route_class(const char *route);

/* The classes (CACHE_CLASS_BIT mask) whose answers a successful write operation changes;
 * 0 for an operation that is not a write. */
unsigned cache_invalidation_for_op(JobOp op);

typedef struct CacheSettings {
        size_t max_bytes;             /* 0: the cache is off (every lookup leads, alone) */
        usec_t ttl[_CACHE_CLASS_MAX]; /* per class; 0: that class is not cached */
} CacheSettings;

/*
 * What identifies one answer: everything visierd forwards to Visier for a proxied read. The
 * strings are borrowed for the call. NULL means "header absent", which is not the same key as
 * an empty value (Visier is sent something different); for invalidation both are the
 * administrating tenant "".
 */
typedef struct CacheKey {
        const char *route;         /* the route pattern: gives the class (cache_route_class()) */
        const char *tenant;        /* TargetTenantID */
        const char *project;       /* ProjectID */
        const char *non_versioned; /* NonVersioned */
        const char *accept;        /* Accept */
        const char *path;          /* the path as forwarded */
        const char *query;         /* the query string as forwarded, without '?', or NULL */
} CacheKey;

/* A client's Cache-Control request directives, as far as the cache honours them. */
typedef struct CacheDirectives {
        bool no_cache;  /* no-cache (or Pragma: no-cache): fetch anew, and store the result */
        bool no_store;  /* no-store: fetch for this request alone, store nothing */
        usec_t max_age; /* max-age=N: use a stored answer at most N s old; USEC_INFINITY: any */
} CacheDirectives;

/* Parse Cache-Control (and Pragma, consulted only without Cache-Control), either may be NULL.
 * Unknown directives and malformed values are ignored, so the result is always usable. */
void cache_directives_parse(const char *cache_control, const char *pragma, CacheDirectives *ret);

typedef struct Cache Cache;
typedef struct CacheEntry CacheEntry;
typedef struct CacheFlight CacheFlight;
typedef struct CacheWaiter CacheWaiter;

typedef enum CacheResult {
        CACHE_HIT,    /* *ret_entry is a stored answer: the caller's reference */
        CACHE_LEAD,   /* *ret_flight: fetch from Visier, then cache_flight_done() or _fail() */
        CACHE_FOLLOW, /* *ret_waiter: the callback gets the answer the lead fetches */
        _CACHE_RESULT_MAX,
        _CACHE_RESULT_INVALID = -1,
} CacheResult;

/* Why a lead is fetching, for Cache-Status (RFC 9211 "fwd"). */
typedef enum CacheForward {
        CACHE_FWD_BYPASS,  /* not cacheable: the route, the class's TTL 0, the cache off, no-store */
        CACHE_FWD_MISS,    /* nothing stored */
        CACHE_FWD_STALE,   /* an answer was stored but is past its TTL */
        CACHE_FWD_REQUEST, /* a fresh answer was stored but the request refused it (no-cache, max-age) */
        _CACHE_FORWARD_MAX,
        _CACHE_FORWARD_INVALID = -1,
} CacheForward;

const char *cache_forward_to_string(CacheForward f);

/*
 * Called once with the lead's answer: entry is the callee's own reference (cache_entry_unref()
 * it), or NULL with error < 0 when the lead failed (error is what it passed to
 * cache_flight_fail(), or -ENOMEM). Runs on the thread that ends the flight, with no cache
 * lock held: it may call into the cache again.
 */
typedef void (*CacheWaitFn)(CacheEntry *entry, int error, void *userdata);

typedef struct CacheStats {
        uint64_t hits;                /* lookups answered from a stored answer */
        uint64_t misses;              /* lookups of a cacheable key that led a fetch */
        uint64_t collapsed;           /* lookups that followed another's fetch */
        uint64_t bypasses;            /* lookups fetched alone (not cacheable) */
        uint64_t saved;               /* hits + collapsed: upstream calls not made */
        uint64_t stored;              /* answers stored */
        uint64_t evictions;           /* stored answers dropped for room (LRU) */
        uint64_t expirations;         /* stored answers dropped past their TTL */
        uint64_t invalidations;       /* stored answers dropped by cache_invalidate() */
        uint64_t not_stored_oversize; /* 200 answers too big to store */
        uint64_t not_stored_stale;    /* answers of a flight an invalidation (or a newer fetch) outdated */
        uint64_t bytes;               /* memory charged to stored answers */
        uint64_t entries;             /* stored answers */
        uint64_t flights;             /* shared fetches in progress */
        uint64_t max_bytes;
} CacheStats;

int cache_new(const CacheSettings *s, Cache **ret);
/* Every flight must have ended; entries still referenced stay valid (they do not point back). */
Cache *cache_free(Cache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Cache *, cache_free);

/* Replace the settings (reload): a class whose TTL changed is dropped; a smaller max_bytes
 * evicts down to it, 0 drops everything and ends sharing of the fetches in progress. */
void cache_set_settings(Cache *c, const CacheSettings *s);

/* The TTL of a route's class under the current settings; 0: not cacheable (then api.c need
 * not build a key at all). */
usec_t cache_route_ttl(Cache *c, const char *route);

/*
 * Look key up at time now (monotonic), honouring the request's directives (NULL: none).
 *
 *  CACHE_HIT:    *ret_entry gets a reference to a fresh stored answer (moved to the LRU front).
 *  CACHE_LEAD:   *ret_flight gets the flight the caller now owns: it must end it exactly once,
 *                with cache_flight_done() or cache_flight_fail(), also when its own client went
 *                away — others may be waiting on it. A bypass (see CacheForward) is a lead too,
 *                whose flight nobody else joins and whose answer is not stored.
 *  CACHE_FOLLOW: another lookup of the same key leads; cb(entry or error, userdata) will be
 *                called once when it ends, unless *ret_waiter is cancelled first.
 *
 * Only the out-parameter of the result is written. -ENOMEM when the flight or waiter could not
 * be allocated (the caller may then fetch without the cache). cb must not be NULL.
 */
int cache_lookup(Cache *c, const CacheKey *key, const CacheDirectives *d, usec_t now, CacheWaitFn cb,
                 void *userdata, CacheEntry **ret_entry, CacheFlight **ret_flight, CacheWaiter **ret_waiter);

/*
 * End a flight with Visier's answer, fetched from the lookup's now until this now. Takes
 * ownership of body (malloc'd, or NULL with len 0), always. A 200 answer is stored unless it
 * is too big, its class is no longer cached, or an invalidation or a newer fetch of the same
 * key came while it was in flight; any answer goes to the followers. Calls the followers'
 * callbacks before it returns. Returns the caller's reference to the answer, or NULL when it
 * could not be allocated (the followers then get -ENOMEM). The flight is gone afterwards.
 */
CacheEntry *cache_flight_done(CacheFlight *f, unsigned status, const char *content_type, char *body, size_t len,
                              usec_t now);

/* End a flight without an answer (error < 0, e.g. -ETIMEDOUT, -ECANCELED): the followers get
 * error and decide themselves (answer the same error, or fetch). The flight is gone afterwards. */
void cache_flight_fail(CacheFlight *f, int error);

/* Why the flight fetches. */
CacheForward cache_flight_forward(const CacheFlight *f);

/*
 * Stop waiting (the follower's client went away). True: the waiter is freed and its callback
 * will never be called. False: its flight has just ended and the callback is due or running,
 * on the thread that ended the flight; it will be called (or has been) and the waiter is freed
 * after it returns. The caller must serialise this call with its own callback — never call it
 * once the callback has returned (the waiter is gone): e.g. clear the caller's pointer to the
 * waiter in the callback, and cancel only while it is set, both under the caller's lock, or
 * both on one thread.
 */
bool cache_waiter_cancel(CacheWaiter *w);

/*
 * Drop every stored answer of the classes (CACHE_CLASS_BIT mask) for tenant (a TargetTenantID
 * value; "" the administrating tenant, matching keys without the header too), or for every
 * tenant when tenant is NULL; and mark the flights in progress for them outdated, so their
 * answers go to their followers but are never stored and later lookups fetch anew. After it
 * returns, no lookup returns an answer whose fetch began before the call. Any thread.
 */
void cache_invalidate(Cache *c, const char *tenant, unsigned classes);

void cache_stats(Cache *c, CacheStats *ret);

/* Entries are immutable and reference-counted; any thread may unref. */
CacheEntry *cache_entry_ref(CacheEntry *e);
CacheEntry *cache_entry_unref(CacheEntry *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(CacheEntry *, cache_entry_unref);

unsigned cache_entry_status(const CacheEntry *e);
const char *cache_entry_content_type(const CacheEntry *e); /* NULL when Visier sent none */
const char *cache_entry_body(const CacheEntry *e, size_t *ret_len);
CacheClass cache_entry_class(const CacheEntry *e);
bool cache_entry_stored(const CacheEntry *e);
/* Seconds since the fetch of the answer began (the Age header), at time now. */
uint64_t cache_entry_age(const CacheEntry *e, usec_t now);

/*
 * A Cache-Status field value (RFC 9211) for an answer given after a lookup that returned how:
 *   hit:    "visierd; hit; ttl=42"
 *   lead:   "visierd; fwd=miss; fwd-status=200; stored; ttl=300"
 *   follow: "visierd; fwd=miss; fwd-status=200; collapsed; stored; ttl=300"
 * "stored; ttl" only when the answer was stored; ttl is its remaining freshness in whole
 * seconds. Returns buf, always terminated.
 */
const char *cache_status_format(char *buf, size_t size, CacheResult how, const CacheEntry *e, usec_t now);
