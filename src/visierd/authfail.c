/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Failed authentications per peer (see authfail.h). A fixed table of peers; when it is full
 * the peer whose last failure is oldest gives up its slot.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "authfail.h"

typedef struct Peer {
        char name[64];
        unsigned failures;
        usec_t window_start, last, logged, next_answer;
} Peer;

struct AuthFailures {
        pthread_mutex_t lock;
        Peer peers[AUTHFAIL_PEERS];
};

int authfail_new(AuthFailures **ret) {
        AuthFailures *a = calloc(1, sizeof(*a));

        if (!a)
                return -ENOMEM;
        pthread_mutex_init(&a->lock, NULL);
        *ret = a;
        return 0;
}

AuthFailures *authfail_free(AuthFailures *a) {
        if (!a)
                return NULL;
        pthread_mutex_destroy(&a->lock);
        free(a);
        return NULL;
}

static Peer *peer_slot(AuthFailures *a, const char *name) {
        Peer *oldest = &a->peers[0];

        for (size_t i = 0; i < AUTHFAIL_PEERS; i++) {
                Peer *p = &a->peers[i];

                if (p->name[0] && streq(p->name, name))
                        return p;
                if (!p->name[0] || p->last < oldest->last)
                        oldest = p;
                if (!p->name[0])
                        break;
        }
        *oldest = (Peer) {};
        snprintf(oldest->name, sizeof(oldest->name), "%s", name);
        return oldest;
}

void authfail_note(AuthFailures *a, const char *peer, usec_t now, AuthFailureNote *ret) {
        Peer *p;

        pthread_mutex_lock(&a->lock);
        p = peer_slot(a, peer);
        if (p->failures == 0 || now - p->last > AUTHFAIL_WINDOW) {
                p->failures = 0;
                p->window_start = now;
                p->logged = 0;
                p->next_answer = 0;
        }
        p->failures++;
        p->last = now;
        *ret = (AuthFailureNote) { .answer_at = now, .failures = p->failures, .window_start = p->window_start };
        if (p->failures > AUTHFAIL_FREE) {
                usec_t delay = AUTHFAIL_DELAY_FIRST;

                for (unsigned i = AUTHFAIL_FREE + 1; i < p->failures && delay < AUTHFAIL_DELAY_MAX; i++)
                        delay *= 2;
                if (delay > AUTHFAIL_DELAY_MAX)
                        delay = AUTHFAIL_DELAY_MAX;
                /* After the previous refusal's answer (parallel guesses spread out), but never
                 * more than AUTHFAIL_DELAY_MAX from now. */
                ret->answer_at = (p->next_answer > now ? p->next_answer : now) + delay;
                if (ret->answer_at > now + AUTHFAIL_DELAY_MAX)
                        ret->answer_at = now + AUTHFAIL_DELAY_MAX;
                p->next_answer = ret->answer_at;
        }
        if (p->logged == 0 || now - p->logged >= AUTHFAIL_LOG_INTERVAL) {
                ret->log = true;
                p->logged = now;
        }
        pthread_mutex_unlock(&a->lock);
}
