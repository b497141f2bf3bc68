/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the observation counters of the simulator: logins, failures, logins in flight and
 * their high-water mark, the busiest second of logins, per-path call counts, the auth/fault tallies and the publishing
 * record of permission writes (calls, items, production_version, writes in flight, overlaps),
 * and the TCP connections accepted (so tests can see whether a client keeps them warm). Everything sits
 * behind one mutex; the per-path map is a bounded JSON object. Never logs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "clock.h"
#include "macro.h"
#include "sim-counters.h"

struct Counters {
        pthread_mutex_t lock;
        uint64_t values[_COUNTER_MAX];
        uint64_t in_flight, in_flight_max;
        uint64_t writes_in_flight, writes_in_flight_max;
        json_t *calls;          /* path -> integer */
        json_t *write_ops;      /* "METHOD path" of the write calls -> integer */
        /* Times of the logins of the last second, oldest first, as a ring. */
        uint64_t login_times[COUNTERS_LOGIN_WINDOW_MAX];
        size_t login_head, n_login_times;
        uint64_t logins_per_second_max;
};

static const char *const counter_table[_COUNTER_MAX] = {
        [COUNTER_LOGINS] = "logins",
        [COUNTER_LOGIN_FAILURES] = "login_failures",
        [COUNTER_CALLS_TOTAL] = "calls_total",
        [COUNTER_BAD_APIKEY] = "bad_apikey",
        [COUNTER_BAD_TOKEN] = "bad_token",
        [COUNTER_AUTHORIZATION_HEADERS] = "authorization_headers",
        [COUNTER_FOREIGN_COOKIES] = "foreign_cookies",
        [COUNTER_RATE_LIMITED] = "rate_limited",
        [COUNTER_ERRORS_INJECTED] = "errors_injected",
        [COUNTER_DROPS_INJECTED] = "drops_injected",
        [COUNTER_THROTTLES_INJECTED] = "throttles_injected",
        [COUNTER_APPLY_THEN_DROPS_INJECTED] = "apply_then_drops_injected",
        [COUNTER_WRITE_CALLS] = "write_calls",
        [COUNTER_WRITE_ITEMS] = "write_items",
        [COUNTER_PRODUCTION_VERSION] = "production_version",
        [COUNTER_COMMIT_CALLS] = "commit_calls",
        [COUNTER_PUBLISH_OVERLAPS] = "publish_overlaps",
        [COUNTER_QUERY_ABORTS_INJECTED] = "query_aborts_injected",
        [COUNTER_QUERY_CALLS] = "query_calls",
        [COUNTER_QUERY_EXPORTS_REFUSED] = "query_exports_refused",
        [COUNTER_TOKENS_REFUSED] = "tokens_refused",
        [COUNTER_CONNECTIONS] = "connections",
};

const char *counter_id_to_string(CounterId id) {
        if (id < 0 || id >= _COUNTER_MAX)
                return NULL;
        return counter_table[id];
}

int counters_new(Counters **ret) {
        Counters *c;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->calls = json_object();
        c->write_ops = json_object();
        if (!c->calls || !c->write_ops) {
                free(c);
                return -ENOMEM;
        }
        pthread_mutex_init(&c->lock, NULL);
        *ret = c;
        return 0;
}

Counters *counters_free(Counters *c) {
        if (!c)
                return NULL;
        json_decref(c->calls);
        json_decref(c->write_ops);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

void counters_inc(Counters *c, CounterId id) {
        if (id < 0 || id >= _COUNTER_MAX)
                return;
        pthread_mutex_lock(&c->lock);
        c->values[id]++;
        pthread_mutex_unlock(&c->lock);
}

void counters_add(Counters *c, CounterId id, uint64_t n) {
        if (id < 0 || id >= _COUNTER_MAX)
                return;
        pthread_mutex_lock(&c->lock);
        c->values[id] += n;
        pthread_mutex_unlock(&c->lock);
}

void counters_call(Counters *c, const char *path) {
        json_t *v;

        pthread_mutex_lock(&c->lock);
        c->values[COUNTER_CALLS_TOTAL]++;
        v = json_object_get(c->calls, path);
        if (!v && json_object_size(c->calls) >= COUNTERS_PATHS_MAX)
                path = "(other)", v = json_object_get(c->calls, path);
        if (v)
                json_integer_set(v, json_integer_value(v) + 1);
        else
                (void) json_object_set_new(c->calls, path, json_integer(1));
        pthread_mutex_unlock(&c->lock);
}

void counters_login_issued(Counters *c, uint64_t now) {
        pthread_mutex_lock(&c->lock);
        c->values[COUNTER_LOGINS]++;
        /* Forget logins a second or more before NOW; a full ring forgets its oldest. */
        while (c->n_login_times > 0 &&
               (c->login_times[c->login_head] + USEC_PER_SEC <= now || c->n_login_times >= COUNTERS_LOGIN_WINDOW_MAX)) {
                c->login_head = (c->login_head + 1) % COUNTERS_LOGIN_WINDOW_MAX;
                c->n_login_times--;
        }
        c->login_times[(c->login_head + c->n_login_times) % COUNTERS_LOGIN_WINDOW_MAX] = now;
        c->n_login_times++;
        if (c->n_login_times > c->logins_per_second_max)
                c->logins_per_second_max = c->n_login_times;
        pthread_mutex_unlock(&c->lock);
}

void counters_login_begin(Counters *c) {
        pthread_mutex_lock(&c->lock);
        c->in_flight++;
        if (c->in_flight > c->in_flight_max)
                c->in_flight_max = c->in_flight;
        pthread_mutex_unlock(&c->lock);
}

void counters_login_end(Counters *c) {
        pthread_mutex_lock(&c->lock);
        if (c->in_flight > 0)
                c->in_flight--;
        pthread_mutex_unlock(&c->lock);
}

int counters_write_begin(Counters *c, bool reject_overlaps) {
        int r = 0;

        pthread_mutex_lock(&c->lock);
        if (c->writes_in_flight > 0) {
                c->values[COUNTER_PUBLISH_OVERLAPS]++;
                if (reject_overlaps)
                        r = -EBUSY;
        }
        if (r >= 0) {
                c->writes_in_flight++;
                if (c->writes_in_flight > c->writes_in_flight_max)
                        c->writes_in_flight_max = c->writes_in_flight;
        }
        pthread_mutex_unlock(&c->lock);
        return r;
}

void counters_write_end(Counters *c, bool bump_version) {
        pthread_mutex_lock(&c->lock);
        if (c->writes_in_flight > 0)
                c->writes_in_flight--;
        if (bump_version)
                c->values[COUNTER_PRODUCTION_VERSION]++;
        pthread_mutex_unlock(&c->lock);
}

void counters_reset(Counters *c) {
        pthread_mutex_lock(&c->lock);
        memset(c->values, 0, sizeof(c->values));
        c->in_flight_max = c->in_flight;
        c->writes_in_flight_max = c->writes_in_flight;
        c->login_head = c->n_login_times = 0;
        c->logins_per_second_max = 0;
        json_object_clear(c->calls);
        json_object_clear(c->write_ops);
        pthread_mutex_unlock(&c->lock);
}

void counters_write_call(Counters *c, const char *method, const char *path) {
        char key[160];
        json_t *v;

        snprintf(key, sizeof(key), "%s %s", method, path);
        pthread_mutex_lock(&c->lock);
        c->values[COUNTER_WRITE_CALLS]++;
        v = json_object_get(c->write_ops, key);
        if (v)
                json_integer_set(v, json_integer_value(v) + 1);
        else
                (void) json_object_set_new(c->write_ops, key, json_integer(1));
        pthread_mutex_unlock(&c->lock);
}

json_t *counters_to_json(Counters *c) {
        json_t *o, *calls, *write_ops;
        int r = 0;

        o = json_object();
        if (!o)
                return NULL;

        pthread_mutex_lock(&c->lock);
        calls = json_deep_copy(c->calls);
        write_ops = json_deep_copy(c->write_ops);
        r |= json_object_set_new(o, "logins", json_integer((json_int_t) c->values[COUNTER_LOGINS]));
        r |= json_object_set_new(o, "login_failures", json_integer((json_int_t) c->values[COUNTER_LOGIN_FAILURES]));
        r |= json_object_set_new(o, "logins_per_second_max", json_integer((json_int_t) c->logins_per_second_max));
        r |= json_object_set_new(o, "logins_in_flight", json_integer((json_int_t) c->in_flight));
        r |= json_object_set_new(o, "logins_in_flight_max", json_integer((json_int_t) c->in_flight_max));
        r |= json_object_set_new(o, "calls_total", json_integer((json_int_t) c->values[COUNTER_CALLS_TOTAL]));
        r |= json_object_set_new(o, "calls", calls);
        r |= json_object_set_new(o, "write_calls_by_operation", write_ops);
        r |= json_object_set_new(o, "writes_in_flight", json_integer((json_int_t) c->writes_in_flight));
        r |= json_object_set_new(o, "writes_in_flight_max", json_integer((json_int_t) c->writes_in_flight_max));
        for (CounterId id = COUNTER_BAD_APIKEY; id < _COUNTER_MAX; id++)
                r |= json_object_set_new(o, counter_table[id], json_integer((json_int_t) c->values[id]));
        pthread_mutex_unlock(&c->lock);

        if (r < 0 || !calls || !write_ops) {
                json_decref(o);
                return NULL;
        }
        return o;
}
