/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metadata cache (see cache.h). Must never log, call Visier, read the clock or hold its
 * lock while a caller's callback runs.
 *
 * DESIGN: one mutex guards two intrusive hash tables keyed by the same bytes — stored
 * answers (entries) and fetches in progress (flights) — and the LRU list of the entries.
 * A key is the forwarded request serialised field by field (a presence byte, the value and a
 * NUL each), hashed with SipHash-2-4 under a random key so that clients cannot aim requests
 * at one bucket. Entries are immutable once built and reference-counted (atomically), so a
 * hit can be streamed to a client after it was evicted; the table holds one reference.
 *
 * Coherence does not use generation counters: an invalidation walks the flights in progress
 * (at most one per key, so few) and takes the matching ones out of the flight table, which is
 * what "current" means. A flight that is no longer current still hands its answer to its
 * followers but never stores it, and the next lookup of its key leads a new one. A newer fetch
 * of the same key (no-cache, max-age) supersedes the old flight the same way, so an older
 * answer can never overwrite a newer one.
 */
#include <assert.h>
#include <endian.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/random.h>

#include "cache.h"

#define HASH_BUCKETS_MIN 64

/* ---- classes and routes ---- */

static const char *const class_names[_CACHE_CLASS_MAX] = {
        [CACHE_CLASS_MODEL] = "model",
        [CACHE_CLASS_MEMBERS] = "members",
        [CACHE_CLASS_PERMISSIONS] = "permissions",
        [CACHE_CLASS_ASSIGNMENTS] = "assignments",
};

const char *cache_class_to_string(CacheClass c) {
        return c >= 0 && c < _CACHE_CLASS_MAX ? class_names[c] : NULL;
}

CacheClass cache_class_from_string(const char *s) {
        for (int i = 0; s && i < _CACHE_CLASS_MAX; i++)
                if (streq(class_names[i], s))
                        return (CacheClass) i;
        return _CACHE_CLASS_INVALID;
}

static const char *const forward_names[_CACHE_FORWARD_MAX] = {
        [CACHE_FWD_BYPASS] = "bypass",
        [CACHE_FWD_MISS] = "miss",
        [CACHE_FWD_STALE] = "stale",
        [CACHE_FWD_REQUEST] = "request",
};

const char *cache_forward_to_string(CacheForward f) {
        return f >= 0 && f < _CACHE_FORWARD_MAX ? forward_names[f] : NULL;
}

/* The proxied GET routes of api.c that are cached. A route not listed is never cached; the
 * unit test fails when api.c proxies a GET this table does not name. */
static const struct {
        const char *route;
        CacheClass class;
} cache_routes[] = {
        { "/v1/admin/capabilities", CACHE_CLASS_MODEL },
        { "/v1/admin/capabilities/*", CACHE_CLASS_MODEL },
        { "/v1/admin/content-packages", CACHE_CLASS_MODEL },
        { "/v1/admin/content-packages/*", CACHE_CLASS_MODEL },
        { "/v1/admin/data-security-objects", CACHE_CLASS_MODEL },
        { "/v1/data/model/analytic-objects", CACHE_CLASS_MODEL },
        { "/v1/data/model/analytic-objects/*/dimensions", CACHE_CLASS_MODEL },
        { "/v1/data/model/analytic-objects/*/dimensions/*/members", CACHE_CLASS_MEMBERS },
        { "/v1/admin/permissions", CACHE_CLASS_PERMISSIONS },
        { "/v1/admin/permissions/*", CACHE_CLASS_PERMISSIONS },
        { "/v1/admin/permissions/*/users", CACHE_CLASS_ASSIGNMENTS },
};

CacheClass cache_route_class(const char *route) {
        for (size_t i = 0; route && i < ELEMENTSOF(cache_routes); i++)
                if (streq(cache_routes[i].route, route))
                        return cache_routes[i].class;
        return _CACHE_CLASS_INVALID;
}

unsigned cache_invalidation_for_op(JobOp op) {
        switch (op) {
        case JOB_OP_CREATE: /* the list gains it; a read by correlation ID finds it */
        case JOB_OP_UPDATE: /* the permission and the list */
        case JOB_OP_PATCH:
                return CACHE_CLASS_BIT(CACHE_CLASS_PERMISSIONS);
        case JOB_OP_DELETE: /* gone from the list, and its users with it */
        case JOB_OP_REVERT: /* replaced by the parent's version, which may be another object */
                return CACHE_CLASS_BIT(CACHE_CLASS_PERMISSIONS) | CACHE_CLASS_BIT(CACHE_CLASS_ASSIGNMENTS);
        case JOB_OP_ASSIGN: /* a permission's users (the permission itself lists none) */
        case JOB_OP_REMOVE:
                return CACHE_CLASS_BIT(CACHE_CLASS_ASSIGNMENTS);
        case JOB_OP_CALL: /* any other write: what it changes is not known here */
                return CACHE_CLASSES_ALL;
        default:
                return 0;
        }
}

/* ---- Cache-Control ---- */

static bool directive_is(const char *name, size_t n, const char *want) {
        return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* max-age's delta-seconds: digits only; too large a number means "any age". */
static bool parse_delta_seconds(const char *v, size_t n, usec_t *ret) {
        uint64_t s = 0;

        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return false;
                if (s > (USEC_INFINITY / USEC_PER_SEC - 9) / 10) {
                        *ret = USEC_INFINITY;
                        for (; i < n; i++)
                                if (v[i] < '0' || v[i] > '9')
                                        return false;
                        return true;
                }
                s = s * 10 + (uint64_t) (v[i] - '0');
        }
        *ret = s * USEC_PER_SEC;
        return true;
}

void cache_directives_parse(const char *cache_control, const char *pragma, CacheDirectives *ret) {
        CacheDirectives d = { .max_age = USEC_INFINITY };
        const char *p;

        assert(ret);
        if (!cache_control && pragma) {
                /* RFC 9111 5.4: Pragma counts only when Cache-Control is absent. */
                for (p = pragma; *p;) {
                        size_t n;

                        p += strspn(p, " \t,");
                        n = strcspn(p, " \t,");
                        if (directive_is(p, n, "no-cache"))
                                d.no_cache = true;
                        p += n;
                }
        }
        for (p = cache_control; p && *p;) {
                const char *name, *value = NULL;
                size_t n, vn = 0;

                p += strspn(p, " \t,");
                name = p;
                n = strcspn(p, " \t,=");
                p += n;
                p += strspn(p, " \t");
                if (*p == '=') {
                        p++;
                        p += strspn(p, " \t");
                        if (*p == '"') {
                                value = ++p;
                                vn = strcspn(p, "\"");
                                p += vn;
                                if (*p == '"')
                                        p++;
                        } else {
                                value = p;
                                vn = strcspn(p, " \t,");
                                p += vn;
                        }
                }
                /* Skip whatever is left of a malformed directive, up to the next one. */
                p += strcspn(p, ",");
                if (n == 0)
                        continue;
                if (directive_is(name, n, "no-cache"))
                        d.no_cache = true;
                else if (directive_is(name, n, "no-store"))
                        d.no_store = true;
                else if (directive_is(name, n, "max-age") && value) {
                        usec_t age;

                        if (parse_delta_seconds(value, vn, &age) && age < d.max_age)
                                d.max_age = age;
                }
        }
        *ret = d;
}

/* ---- SipHash-2-4 (Aumasson and Bernstein's reference algorithm) ---- */

#define ROTL64(x, b) (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
        do {                                                                   \
                v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32); \
                v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                       \
                v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                       \
                v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32); \
        } while (0)

static uint64_t siphash24(const void *data, size_t len, const uint64_t k[2]) {
        const uint8_t *p = data, *end = p + (len & ~(size_t) 7);
        uint64_t v0 = 0x736f6d6570736575ULL ^ k[0], v1 = 0x646f72616e646f6dULL ^ k[1];
        uint64_t v2 = 0x6c7967656e657261ULL ^ k[0], v3 = 0x7465646279746573ULL ^ k[1];
        uint64_t m, b = (uint64_t) len << 56;

        for (; p != end; p += 8) {
                memcpy(&m, p, sizeof(m));
                m = le64toh(m);
                v3 ^= m;
                SIPROUND;
                SIPROUND;
                v0 ^= m;
        }
        for (size_t i = 0; i < (len & 7); i++)
                b |= (uint64_t) p[i] << (8 * i);
        v3 ^= b;
        SIPROUND;
        SIPROUND;
        v0 ^= b;
        v2 ^= 0xff;
        SIPROUND;
        SIPROUND;
        SIPROUND;
        SIPROUND;
        return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- an intrusive hash table (chained; grows, never shrinks) ---- */

typedef struct HashNode {
        struct HashNode *next;
        uint64_t hash;
        const char *key;
        size_t key_len;
} HashNode;

typedef struct HashTable {
        HashNode **buckets;
        size_t n_buckets; /* a power of two */
        size_t n;
} HashTable;

static int table_init(HashTable *t) {
        t->buckets = calloc(HASH_BUCKETS_MIN, sizeof(HashNode *));
        if (!t->buckets)
                return -ENOMEM;
        t->n_buckets = HASH_BUCKETS_MIN;
        t->n = 0;
        return 0;
}

static HashNode *table_find(const HashTable *t, uint64_t hash, const char *key, size_t key_len) {
        for (HashNode *n = t->buckets[hash & (t->n_buckets - 1)]; n; n = n->next)
                if (n->hash == hash && n->key_len == key_len && memcmp(n->key, key, key_len) == 0)
                        return n;
        return NULL;
}

/* Double the buckets at a load of 1; when that fails the chains just get longer. */
static void table_grow(HashTable *t) {
        size_t nb = t->n_buckets * 2;
        HashNode **b;

        if (t->n < t->n_buckets || nb < t->n_buckets)
                return;
        b = calloc(nb, sizeof(HashNode *));
        if (!b)
                return;
        for (size_t i = 0; i < t->n_buckets; i++)
                for (HashNode *n = t->buckets[i], *next; n; n = next) {
                        next = n->next;
                        n->next = b[n->hash & (nb - 1)];
                        b[n->hash & (nb - 1)] = n;
                }
        free(t->buckets);
        t->buckets = b;
        t->n_buckets = nb;
}

static void table_add(HashTable *t, HashNode *n) {
        HashNode **b;

        table_grow(t);
        b = &t->buckets[n->hash & (t->n_buckets - 1)];
        n->next = *b;
        *b = n;
        t->n++;
}

static void table_remove(HashTable *t, HashNode *n) {
        for (HashNode **p = &t->buckets[n->hash & (t->n_buckets - 1)]; *p; p = &(*p)->next)
                if (*p == n) {
                        *p = n->next;
                        n->next = NULL;
                        t->n--;
                        return;
                }
        assert(!"node not in its table");
}

/* ---- the cache ---- */

struct CacheEntry {
        unsigned refs; /* atomic */

        /* Under the cache's lock, while the table holds the entry: */
        HashNode node;
        CacheEntry *lru_prev, *lru_next; /* prev: more recently used */
        bool in_table;

        /* Immutable once built: */
        CacheClass class;
        CacheForward fwd;
        bool stored;
        unsigned status;
        usec_t fetched_at; /* when the fetch began */
        usec_t expires_at; /* when stored */
        size_t charge;     /* bytes counted against max_bytes */
        const char *tenant;
        const char *content_type;
        char *body;
        size_t body_len;
        char data[]; /* key, then the content type */
};

struct CacheWaiter {
        CacheWaiter *prev, *next;
        Cache *cache;
        CacheFlight *flight; /* NULL once its flight ended: the callback is due, or running */
        CacheWaitFn cb;
        void *userdata;
};

struct CacheFlight {
        Cache *cache;
        HashNode node;
        bool in_table; /* current for its key: others join it, and its answer may be stored */
        CacheClass class;
        CacheForward fwd;
        usec_t started_at;
        CacheWaiter *waiters;
        const char *tenant;
        char key[];
};

struct Cache {
        pthread_mutex_t lock;
        CacheSettings settings;
        uint64_t hash_key[2];
        HashTable entries, flights;
        CacheEntry *lru_head, *lru_tail; /* head: most recently used */
        CacheStats stats;
};

CacheEntry *cache_entry_ref(CacheEntry *e) {
        if (e)
                __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
        return e;
}

CacheEntry *cache_entry_unref(CacheEntry *e) {
        if (!e)
                return NULL;
        if (__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0) {
                free(e->body);
                free(e);
        }
        return NULL;
}

unsigned cache_entry_status(const CacheEntry *e) {
        assert(e);
        return e->status;
}

const char *cache_entry_content_type(const CacheEntry *e) {
        assert(e);
        return e->content_type;
}

const char *cache_entry_body(const CacheEntry *e, size_t *ret_len) {
        assert(e && ret_len);
        *ret_len = e->body_len;
        return e->body ? e->body : "";
}

CacheClass cache_entry_class(const CacheEntry *e) {
        assert(e);
        return e->class;
}

bool cache_entry_stored(const CacheEntry *e) {
        assert(e);
        return e->stored;
}

uint64_t cache_entry_age(const CacheEntry *e, usec_t now) {
        assert(e);
        return now > e->fetched_at ? (now - e->fetched_at) / USEC_PER_SEC : 0;
}

const char *cache_status_format(char *buf, size_t size, CacheResult how, const CacheEntry *e, usec_t now) {
        size_t n;
        int k;

        assert(buf && size > 0 && e);
        if (how == CACHE_HIT)
                k = snprintf(buf, size, "visierd; hit; ttl=%llu",
                             (unsigned long long) (e->expires_at > now ? (e->expires_at - now) / USEC_PER_SEC : 0));
        else
                k = snprintf(buf, size, "visierd; fwd=%s; fwd-status=%u%s", cache_forward_to_string(e->fwd), e->status,
                             how == CACHE_FOLLOW ? "; collapsed" : "");
        n = k < 0 ? 0 : (size_t) k;
        if (how != CACHE_HIT && e->stored && n < size)
                snprintf(buf + n, size - n, "; stored; ttl=%llu",
                         (unsigned long long) (e->expires_at > now ? (e->expires_at - now) / USEC_PER_SEC : 0));
        return buf;
}

/* The key's bytes: per field a presence byte (1 absent, 2 present), then the value and a NUL. */
static size_t key_length(const CacheKey *k) {
        const char *f[] = { k->tenant, k->project, k->non_versioned, k->accept, k->path, k->query };
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(f); i++)
                n += 1 + (f[i] ? strlen(f[i]) + 1 : 0);
        return n;
}

/* Writes exactly key_length(k) bytes. */
static void key_write(const CacheKey *k, char *out) {
        const char *f[] = { k->tenant, k->project, k->non_versioned, k->accept, k->path, k->query };

        for (size_t i = 0; i < ELEMENTSOF(f); i++) {
                size_t n;

                if (!f[i]) {
                        *out++ = 1;
                        continue;
                }
                n = strlen(f[i]) + 1;
                *out++ = 2;
                memcpy(out, f[i], n);
                out += n;
        }
}

/* The TargetTenantID of a key, "" when absent. */
static const char *key_tenant(const char *key) {
        return key[0] == 2 ? key + 1 : "";
}

int cache_new(const CacheSettings *s, Cache **ret) {
        Cache *c;

        assert(s && ret);
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        if (table_init(&c->entries) < 0 || table_init(&c->flights) < 0) {
                free(c->entries.buckets);
                free(c);
                return -ENOMEM;
        }
        if (getrandom(c->hash_key, sizeof(c->hash_key), GRND_NONBLOCK) != (ssize_t) sizeof(c->hash_key)) {
                /* Early at boot the pool may not be ready: any key still spreads the buckets. */
                c->hash_key[0] = (uint64_t) (uintptr_t) c ^ 0x9e3779b97f4a7c15ULL;
                c->hash_key[1] = (uint64_t) getpid() * 0xff51afd7ed558ccdULL;
        }
        pthread_mutex_init(&c->lock, NULL);
        c->settings = *s;
        *ret = c;
        return 0;
}

static void lru_unlink(Cache *c, CacheEntry *e) {
        if (e->lru_prev)
                e->lru_prev->lru_next = e->lru_next;
        else
                c->lru_head = e->lru_next;
        if (e->lru_next)
                e->lru_next->lru_prev = e->lru_prev;
        else
                c->lru_tail = e->lru_prev;
        e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(Cache *c, CacheEntry *e) {
        e->lru_prev = NULL;
        e->lru_next = c->lru_head;
        if (c->lru_head)
                c->lru_head->lru_prev = e;
        else
                c->lru_tail = e;
        c->lru_head = e;
}

/* Take a stored entry out of the table. Its reference goes on *graveyard (linked through
 * lru_next), dropped by graveyard_free() after the lock is released: freeing a big body under
 * the lock would hold up every lookup. */
static void entry_drop(Cache *c, CacheEntry *e, CacheEntry **graveyard) {
        assert(e->in_table);
        table_remove(&c->entries, &e->node);
        lru_unlink(c, e);
        e->in_table = false;
        c->stats.bytes -= e->charge;
        c->stats.entries--;
        e->lru_next = *graveyard;
        *graveyard = e;
}

static void graveyard_free(CacheEntry *graveyard) {
        while (graveyard) {
                CacheEntry *next = graveyard->lru_next;

                cache_entry_unref(graveyard);
                graveyard = next;
        }
}

/* No longer current: no one joins it and its answer is not stored. */
static void flight_detach(Cache *c, CacheFlight *f) {
        if (!f->in_table)
                return;
        table_remove(&c->flights, &f->node);
        f->in_table = false;
        c->stats.flights--;
}

static void flights_detach_matching(Cache *c, const char *tenant, unsigned classes) {
        for (size_t i = 0; i < c->flights.n_buckets; i++)
                for (HashNode *n = c->flights.buckets[i], *next; n; n = next) {
                        CacheFlight *f = (CacheFlight *) ((char *) n - offsetof(CacheFlight, node));

                        next = n->next;
                        if ((classes & CACHE_CLASS_BIT(f->class)) && (!tenant || streq(f->tenant, tenant)))
                                flight_detach(c, f);
                }
}

Cache *cache_free(Cache *c) {
        CacheEntry *graveyard = NULL;

        if (!c)
                return NULL;
        assert(c->flights.n == 0);
        while (c->lru_head)
                entry_drop(c, c->lru_head, &graveyard);
        graveyard_free(graveyard);
        free(c->entries.buckets);
        free(c->flights.buckets);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

void cache_set_settings(Cache *c, const CacheSettings *s) {
        CacheEntry *graveyard = NULL;
        CacheSettings old;

        assert(c && s);
        pthread_mutex_lock(&c->lock);
        old = c->settings;
        c->settings = *s;
        for (CacheEntry *e = c->lru_head, *next; e; e = next) {
                next = e->lru_next;
                if (s->max_bytes == 0 || s->ttl[e->class] != old.ttl[e->class])
                        entry_drop(c, e, &graveyard);
        }
        while (c->lru_tail && c->stats.bytes > s->max_bytes) {
                entry_drop(c, c->lru_tail, &graveyard);
                c->stats.evictions++;
        }
        if (s->max_bytes == 0)
                flights_detach_matching(c, NULL, CACHE_CLASSES_ALL);
        pthread_mutex_unlock(&c->lock);
        graveyard_free(graveyard);
}

usec_t cache_route_ttl(Cache *c, const char *route) {
        CacheClass cls = cache_route_class(route);
        usec_t ttl;

        assert(c);
        if (cls < 0)
                return 0;
        pthread_mutex_lock(&c->lock);
        ttl = c->settings.max_bytes > 0 ? c->settings.ttl[cls] : 0;
        pthread_mutex_unlock(&c->lock);
        return ttl;
}

static CacheFlight *flight_new(Cache *c, const char *key, size_t key_len, CacheClass cls, CacheForward fwd, usec_t now) {
        CacheFlight *f = malloc(sizeof(*f) + key_len);

        if (!f)
                return NULL;
        *f = (CacheFlight) { .cache = c, .class = cls, .fwd = fwd, .started_at = now };
        memcpy(f->key, key, key_len);
        f->tenant = key_tenant(f->key);
        f->node = (HashNode) { .key = f->key, .key_len = key_len };
        return f;
}

int cache_lookup(Cache *c, const CacheKey *key, const CacheDirectives *d, usec_t now, CacheWaitFn cb,
                 void *userdata, CacheEntry **ret_entry, CacheFlight **ret_flight, CacheWaiter **ret_waiter) {
        static const CacheDirectives none = { .max_age = USEC_INFINITY };
        CacheEntry *graveyard = NULL, *e;
        CacheForward fwd = CACHE_FWD_MISS;
        _cleanup_free_ char *k = NULL;
        CacheClass cls;
        CacheFlight *f;
        HashNode *n;
        size_t klen;
        uint64_t h;
        int r;

        assert(c && key && key->path && cb && ret_entry && ret_flight && ret_waiter);
        if (!d)
                d = &none;
        cls = cache_route_class(key->route);
        klen = key_length(key);
        k = malloc(klen);
        if (!k)
                return -ENOMEM;
        key_write(key, k);
        h = siphash24(k, klen, c->hash_key);

        pthread_mutex_lock(&c->lock);
        if (c->settings.max_bytes == 0 || cls < 0 || c->settings.ttl[cls] == 0 || d->no_store || klen > CACHE_KEY_MAX) {
                /* Fetched for this request alone: never in the table, never stored. */
                f = flight_new(c, k, klen, cls, CACHE_FWD_BYPASS, now);
                if (f)
                        c->stats.bypasses++;
                pthread_mutex_unlock(&c->lock);
                if (!f)
                        return -ENOMEM;
                *ret_flight = f;
                return CACHE_LEAD;
        }

        n = table_find(&c->entries, h, k, klen);
        if (n) {
                e = (CacheEntry *) ((char *) n - offsetof(CacheEntry, node));
                if (now >= e->expires_at) {
                        entry_drop(c, e, &graveyard);
                        c->stats.expirations++;
                        fwd = CACHE_FWD_STALE;
                } else if (d->no_cache || (now > e->fetched_at ? now - e->fetched_at : 0) > d->max_age)
                        fwd = CACHE_FWD_REQUEST;
                else {
                        lru_unlink(c, e);
                        lru_push_front(c, e);
                        c->stats.hits++;
                        *ret_entry = cache_entry_ref(e);
                        pthread_mutex_unlock(&c->lock);
                        return CACHE_HIT;
                }
        }

        n = table_find(&c->flights, h, k, klen);
        f = n ? (CacheFlight *) ((char *) n - offsetof(CacheFlight, node)) : NULL;
        if (f && !d->no_cache && (now > f->started_at ? now - f->started_at : 0) <= d->max_age) {
                CacheWaiter *w = malloc(sizeof(*w));

                if (!w) {
                        r = -ENOMEM;
                        goto out;
                }
                *w = (CacheWaiter) { .cache = c, .flight = f, .cb = cb, .userdata = userdata, .next = f->waiters };
                if (f->waiters)
                        f->waiters->prev = w;
                f->waiters = w;
                c->stats.collapsed++;
                *ret_waiter = w;
                r = CACHE_FOLLOW;
                goto out;
        }

        /* Lead a new flight; one the request would not wait for is superseded, so it
         * cannot store its older answer over this one's. */
        if (f)
                flight_detach(c, f);
        f = flight_new(c, k, klen, cls, fwd, now);
        if (!f) {
                r = -ENOMEM;
                goto out;
        }
        f->node.hash = h;
        f->in_table = true;
        table_add(&c->flights, &f->node);
        c->stats.flights++;
        c->stats.misses++;
        *ret_flight = f;
        r = CACHE_LEAD;
out:
        pthread_mutex_unlock(&c->lock);
        graveyard_free(graveyard);
        return r;
}

/* Take the waiters off a flight that is ending (under the lock). */
static CacheWaiter *flight_take_waiters(CacheFlight *f) {
        CacheWaiter *w = f->waiters;

        f->waiters = NULL;
        for (CacheWaiter *i = w; i; i = i->next)
                i->flight = NULL;
        return w;
}

/* Each waiter is freed only after its callback returned: a cache_waiter_cancel() that the
 * caller serialised with its callback finds it still there, and ended. */
static void waiters_call(CacheWaiter *w, CacheEntry *e, int error) {
        while (w) {
                CacheWaiter *next = w->next;

                w->cb(cache_entry_ref(e), error, w->userdata);
                free(w);
                w = next;
        }
}

void cache_flight_fail(CacheFlight *f, int error) {
        Cache *c;
        CacheWaiter *w;

        assert(f && error < 0);
        c = f->cache;
        pthread_mutex_lock(&c->lock);
        flight_detach(c, f);
        w = flight_take_waiters(f);
        pthread_mutex_unlock(&c->lock);
        waiters_call(w, NULL, error);
        free(f);
}

CacheEntry *cache_flight_done(CacheFlight *f, unsigned status, const char *content_type, char *body, size_t len,
                              usec_t now) {
        CacheEntry *graveyard = NULL, *e;
        size_t klen, ctlen;
        CacheWaiter *w;
        Cache *c;
        HashNode *n;

        assert(f);
        assert(body || len == 0);
        c = f->cache;
        klen = f->node.key_len;
        ctlen = content_type ? strlen(content_type) + 1 : 0;
        e = malloc(sizeof(*e) + klen + ctlen);
        if (!e) {
                free(body);
                cache_flight_fail(f, -ENOMEM);
                return NULL;
        }
        *e = (CacheEntry) {
                .refs = 1,
                .class = f->class,
                .fwd = f->fwd,
                .status = status,
                .fetched_at = f->started_at,
                .body = body,
                .body_len = len,
        };
        memcpy(e->data, f->key, klen);
        e->tenant = key_tenant(e->data);
        if (content_type)
                e->content_type = memcpy(e->data + klen, content_type, ctlen);
        e->charge = sizeof(*e) + klen + ctlen + len;
        e->node = (HashNode) { .hash = f->node.hash, .key = e->data, .key_len = klen };

        pthread_mutex_lock(&c->lock);
        if (status == 200 && f->fwd != CACHE_FWD_BYPASS) {
                usec_t ttl = c->settings.ttl[f->class];

                if (!f->in_table)
                        c->stats.not_stored_stale++;
                else if (c->settings.max_bytes == 0 || ttl == 0 || now >= f->started_at + ttl)
                        ; /* switched off while in flight, or already past its TTL */
                else if (e->charge > c->settings.max_bytes / CACHE_ENTRY_FRACTION)
                        c->stats.not_stored_oversize++;
                else {
                        e->stored = true;
                        e->expires_at = f->started_at + ttl;
                }
        }
        flight_detach(c, f);
        if (e->stored) {
                n = table_find(&c->entries, e->node.hash, e->data, klen);
                if (n) /* an older answer of the same key (no-cache, max-age): replaced */
                        entry_drop(c, (CacheEntry *) ((char *) n - offsetof(CacheEntry, node)), &graveyard);
                while (c->lru_tail && c->stats.bytes + e->charge > c->settings.max_bytes) {
                        entry_drop(c, c->lru_tail, &graveyard);
                        c->stats.evictions++;
                }
                table_add(&c->entries, &e->node);
                lru_push_front(c, e);
                e->in_table = true;
                c->stats.bytes += e->charge;
                c->stats.entries++;
                c->stats.stored++;
                cache_entry_ref(e); /* the table's */
        }
        w = flight_take_waiters(f);
        pthread_mutex_unlock(&c->lock);
        graveyard_free(graveyard);
        waiters_call(w, e, 0);
        free(f);
        return e;
}

CacheForward cache_flight_forward(const CacheFlight *f) {
        assert(f);
        return f->fwd;
}

bool cache_waiter_cancel(CacheWaiter *w) {
        Cache *c;
        CacheFlight *f;

        assert(w);
        c = w->cache;
        pthread_mutex_lock(&c->lock);
        f = w->flight;
        if (!f) {
                /* Its flight ended: the callback is due or running; it frees the waiter. */
                pthread_mutex_unlock(&c->lock);
                return false;
        }
        if (w->prev)
                w->prev->next = w->next;
        else
                f->waiters = w->next;
        if (w->next)
                w->next->prev = w->prev;
        pthread_mutex_unlock(&c->lock);
        free(w);
        return true;
}

void cache_invalidate(Cache *c, const char *tenant, unsigned classes) {
        CacheEntry *graveyard = NULL;

        assert(c);
        pthread_mutex_lock(&c->lock);
        for (CacheEntry *e = c->lru_head, *next; e; e = next) {
                next = e->lru_next;
                if ((classes & CACHE_CLASS_BIT(e->class)) && (!tenant || streq(e->tenant, tenant))) {
                        entry_drop(c, e, &graveyard);
                        c->stats.invalidations++;
                }
        }
        flights_detach_matching(c, tenant, classes);
        pthread_mutex_unlock(&c->lock);
        graveyard_free(graveyard);
}

void cache_stats(Cache *c, CacheStats *ret) {
        assert(c && ret);
        pthread_mutex_lock(&c->lock);
        *ret = c->stats;
        ret->saved = ret->hits + ret->collapsed;
        ret->max_bytes = c->settings.max_bytes;
        pthread_mutex_unlock(&c->lock);
}
