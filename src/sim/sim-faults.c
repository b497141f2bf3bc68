/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the fault settings the tests steer through /_sim/faults or the command line, and the
 * random draws behind the percentage faults (an xorshift generator seeded from getrandom,
 * guarded by the module's mutex). One table lists every field with its bounds, so the JSON
 * reader and writer cannot drift apart. Never logs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "macro.h"
#include "sim-faults.h"

struct Faults {
        pthread_mutex_t lock;
        FaultSettings s;
        uint64_t rng;
};

typedef struct FaultField {
        const char *name;
        size_t offset;
        uint64_t max;
} FaultField;

#define FIELD(n, m) { #n, offsetof(FaultSettings, n), m }
static const FaultField fault_fields[] = {
        FIELD(latency_ms, FAULTS_LATENCY_MAX_MS),
        FIELD(login_latency_ms, FAULTS_LATENCY_MAX_MS),
        FIELD(error_rate, 100),
        FIELD(drop_rate, 100),
        FIELD(throttle_rate, 100),
        FIELD(retry_after, FAULTS_RETRY_AFTER_MAX),
        FIELD(next_errors, FAULTS_NEXT_MAX),
        FIELD(next_drops, FAULTS_NEXT_MAX),
        FIELD(next_throttles, FAULTS_NEXT_MAX),
        FIELD(publish_ms, FAULTS_PUBLISH_MAX_MS),
        FIELD(next_apply_then_drop, FAULTS_NEXT_MAX),
        FIELD(query_rows, FAULTS_QUERY_ROWS_MAX),
        FIELD(next_query_abort_after_bytes, FAULTS_ABORT_BYTES_MAX),
        FIELD(query_abort_after_bytes, FAULTS_ABORT_BYTES_MAX),
};
#undef FIELD

static uint64_t *field_ptr(FaultSettings *s, const FaultField *f) {
        return (uint64_t *) (void *) ((char *) s + f->offset);
}

static const char *const fault_action_table[_FAULT_ACTION_MAX] = {
        [FAULT_NONE] = "none",
        [FAULT_ERROR] = "error",
        [FAULT_DROP] = "drop",
        [FAULT_THROTTLE] = "throttle",
};

const char *fault_action_to_string(FaultAction a) {
        if (a < 0 || a >= _FAULT_ACTION_MAX)
                return NULL;
        return fault_action_table[a];
}

int faults_new(const FaultSettings *initial, Faults **ret) {
        Faults *f;

        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        pthread_mutex_init(&f->lock, NULL);
        f->s = initial ? *initial : FAULT_SETTINGS_DEFAULT;
        if (getrandom(&f->rng, sizeof(f->rng), 0) != (ssize_t) sizeof(f->rng) || f->rng == 0)
                f->rng = UINT64_C(0x9e3779b97f4a7c15);
        *ret = f;
        return 0;
}

Faults *faults_free(Faults *f) {
        if (!f)
                return NULL;
        pthread_mutex_destroy(&f->lock);
        free(f);
        return NULL;
}

/* A number in [0, 100). Lock held. */
static uint64_t faults_roll_locked(Faults *f) {
        uint64_t x = f->rng;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f->rng = x;
        return x % 100;
}

void faults_decide(Faults *f, bool is_login, FaultDecision *ret) {
        FaultDecision d = { .action = FAULT_NONE };

        pthread_mutex_lock(&f->lock);
        d.retry_after = f->s.retry_after;
        if (is_login) {
                d.latency_ms = f->s.login_latency_ms;
                if (!f->s.faults_include_login)
                        goto out;
                d.latency_ms += f->s.latency_ms;
        } else
                d.latency_ms = f->s.latency_ms;

        if (f->s.next_drops > 0) {
                f->s.next_drops--;
                d.action = FAULT_DROP;
        } else if (f->s.next_errors > 0) {
                f->s.next_errors--;
                d.action = FAULT_ERROR;
        } else if (f->s.next_throttles > 0) {
                f->s.next_throttles--;
                d.action = FAULT_THROTTLE;
        } else if (f->s.drop_rate > 0 && faults_roll_locked(f) < f->s.drop_rate)
                d.action = FAULT_DROP;
        else if (f->s.error_rate > 0 && faults_roll_locked(f) < f->s.error_rate)
                d.action = FAULT_ERROR;
        else if (f->s.throttle_rate > 0 && faults_roll_locked(f) < f->s.throttle_rate)
                d.action = FAULT_THROTTLE;
out:
        pthread_mutex_unlock(&f->lock);
        *ret = d;
}

static json_t *settings_to_json(FaultSettings *s) {
        json_t *o;
        size_t i;

        o = json_object();
        if (!o)
                return NULL;
        for (i = 0; i < ELEMENTSOF(fault_fields); i++)
                if (json_object_set_new(o, fault_fields[i].name,
                                        json_integer((json_int_t) *field_ptr(s, &fault_fields[i]))) < 0)
                        goto fail;
        if (json_object_set_new(o, "faults_include_login", json_boolean(s->faults_include_login)) < 0 ||
            json_object_set_new(o, "reject_overlaps", json_boolean(s->reject_overlaps)) < 0 ||
            json_object_set_new(o, "refuse_tokens", json_boolean(s->refuse_tokens)) < 0 ||
            json_object_set_new(o, "hold_writes", json_boolean(s->hold_writes)) < 0 ||
            json_object_set_new(o, "refuse_commits", json_boolean(s->refuse_commits)) < 0 ||
            json_object_set_new(o, "hold_commits", json_boolean(s->hold_commits)) < 0 ||
            json_object_set_new(o, "exports_disabled", json_boolean(s->exports_disabled)) < 0 ||
            json_object_set_new(o, "reject_display_name", json_string(s->reject_display_name)) < 0)
                goto fail;
        return o;
fail:
        json_decref(o);
        return NULL;
}

json_t *faults_to_json(Faults *f) {
        FaultSettings s;

        pthread_mutex_lock(&f->lock);
        s = f->s;
        pthread_mutex_unlock(&f->lock);
        return settings_to_json(&s);
}

int faults_apply_json(Faults *f, json_t *obj, char *err, size_t err_size) {
        const char *key;
        json_t *value;
        FaultSettings s;

        if (!json_is_object(obj)) {
                snprintf(err, err_size, "expected a JSON object");
                return -EINVAL;
        }

        pthread_mutex_lock(&f->lock);
        s = f->s;
        json_object_foreach(obj, key, value) {
                const FaultField *field = NULL;
                size_t i;

                if (streq(key, "faults_include_login") || streq(key, "reject_overlaps") ||
                    streq(key, "exports_disabled") || streq(key, "refuse_tokens") || streq(key, "hold_writes") ||
                    streq(key, "refuse_commits") || streq(key, "hold_commits")) {
                        if (!json_is_boolean(value)) {
                                snprintf(err, err_size, "%s must be a boolean", key);
                                goto invalid;
                        }
                        if (streq(key, "faults_include_login"))
                                s.faults_include_login = json_is_true(value);
                        else if (streq(key, "reject_overlaps"))
                                s.reject_overlaps = json_is_true(value);
                        else if (streq(key, "refuse_tokens"))
                                s.refuse_tokens = json_is_true(value);
                        else if (streq(key, "hold_writes"))
                                s.hold_writes = json_is_true(value);
                        else if (streq(key, "refuse_commits"))
                                s.refuse_commits = json_is_true(value);
                        else if (streq(key, "hold_commits"))
                                s.hold_commits = json_is_true(value);
                        else
                                s.exports_disabled = json_is_true(value);
                        continue;
                }
                if (streq(key, "reject_display_name")) {
                        const char *v = json_string_value(value);
                        size_t len = v ? json_string_length(value) : 0;

                        if (!v || len > FAULTS_NAME_MAX || strlen(v) != len) {
                                snprintf(err, err_size, "reject_display_name must be a string of at most %d bytes",
                                         FAULTS_NAME_MAX);
                                goto invalid;
                        }
                        memcpy(s.reject_display_name, v, len + 1);
                        continue;
                }
                for (i = 0; i < ELEMENTSOF(fault_fields); i++)
                        if (streq(key, fault_fields[i].name))
                                field = &fault_fields[i];
                if (!field) {
                        snprintf(err, err_size, "unknown field '%.64s'", key);
                        goto invalid;
                }
                if (!json_is_integer(value) || json_integer_value(value) < 0 ||
                    (uint64_t) json_integer_value(value) > field->max) {
                        snprintf(err, err_size, "%s must be an integer between 0 and %llu",
                                 field->name, (unsigned long long) field->max);
                        goto invalid;
                }
                *field_ptr(&s, field) = (uint64_t) json_integer_value(value);
        }
        f->s = s;
        pthread_mutex_unlock(&f->lock);
        return 0;

invalid:
        pthread_mutex_unlock(&f->lock);
        return -EINVAL;
}

void faults_write_settings(Faults *f, WriteFaults *ret) {
        pthread_mutex_lock(&f->lock);
        ret->publish_ms = f->s.publish_ms;
        ret->reject_overlaps = f->s.reject_overlaps;
        memcpy(ret->reject_display_name, f->s.reject_display_name, sizeof(ret->reject_display_name));
        pthread_mutex_unlock(&f->lock);
}

static bool hold_while(Faults *f, bool commits) {
        usec_t deadline = clock_now() + FAULTS_HOLD_MAX_MS * USEC_PER_MSEC;
        bool held = false;

        for (;;) {
                bool hold;

                pthread_mutex_lock(&f->lock);
                hold = commits ? f->s.hold_commits : f->s.hold_writes;
                pthread_mutex_unlock(&f->lock);
                if (!hold || clock_now() >= deadline)
                        return held;
                held = true;
                clock_sleep(10 * USEC_PER_MSEC); /* a test knob: polling is precise enough */
        }
}

bool faults_hold_writes(Faults *f) {
        return hold_while(f, false);
}

bool faults_hold_commits(Faults *f) {
        return hold_while(f, true);
}

bool faults_refuse_commits(Faults *f) {
        bool refuse;

        pthread_mutex_lock(&f->lock);
        refuse = f->s.refuse_commits;
        pthread_mutex_unlock(&f->lock);
        return refuse;
}

bool faults_refuse_tokens(Faults *f) {
        bool refuse;

        pthread_mutex_lock(&f->lock);
        refuse = f->s.refuse_tokens;
        pthread_mutex_unlock(&f->lock);
        return refuse;
}

bool faults_take_apply_then_drop(Faults *f) {
        bool drop = false;

        pthread_mutex_lock(&f->lock);
        if (f->s.next_apply_then_drop > 0) {
                f->s.next_apply_then_drop--;
                drop = true;
        }
        pthread_mutex_unlock(&f->lock);
        return drop;
}

void faults_query_settings(Faults *f, bool take_abort, QueryFaults *ret) {
        pthread_mutex_lock(&f->lock);
        ret->rows = f->s.query_rows;
        ret->exports_disabled = f->s.exports_disabled;
        ret->abort_after_bytes = f->s.query_abort_after_bytes;
        if (take_abort && f->s.next_query_abort_after_bytes > 0) {
                ret->abort_after_bytes = f->s.next_query_abort_after_bytes;
                f->s.next_query_abort_after_bytes = 0;
        }
        pthread_mutex_unlock(&f->lock);
}

void faults_reset(Faults *f) {
        pthread_mutex_lock(&f->lock);
        f->s = FAULT_SETTINGS_DEFAULT;
        pthread_mutex_unlock(&f->lock);
}
