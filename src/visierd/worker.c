/* SPDX-License-Identifier: Apache-2.0 */
/* A fixed pool of threads for blocking work, completions on the loop (see worker.h). */
#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "worker.h"

#define WORKER_THREADS_MAX 64

typedef struct Item {
        worker_fn work, done;
        void *userdata;
        struct Item *next;
} Item;

typedef struct Queue {
        Item *head, *tail;
} Queue;

struct WorkerPool {
        sd_event_source *source;
        int fd; /* eventfd: completions are waiting */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        Queue todo, done;
        size_t pending;
        bool stopping;
        unsigned n_threads;
        pthread_t threads[WORKER_THREADS_MAX];
};

/* The threads to join, once. */
#define TAKE_THREADS(p)                       \
        ({                                    \
                unsigned _n_ = (p)->n_threads; \
                (p)->n_threads = 0;           \
                _n_;                          \
        })

static void push(Queue *q, Item *it) {
        it->next = NULL;
        if (q->tail)
                q->tail->next = it;
        else
                q->head = it;
        q->tail = it;
}

static Item *pop(Queue *q) {
        Item *it = q->head;

        if (it) {
                q->head = it->next;
                if (!q->head)
                        q->tail = NULL;
        }
        return it;
}

static void wake_loop(WorkerPool *p) {
        uint64_t one = 1;

        /* A full counter still wakes the loop: nothing is lost if this fails. */
        (void) !write(p->fd, &one, sizeof(one));
}

static void *worker_thread(void *arg) {
        WorkerPool *p = arg;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                Item *it = pop(&p->todo);

                if (!it) {
                        if (p->stopping)
                                break;
                        pthread_cond_wait(&p->cond, &p->lock);
                        continue;
                }
                pthread_mutex_unlock(&p->lock);
                if (it->work)
                        it->work(it->userdata);
                pthread_mutex_lock(&p->lock);
                push(&p->done, it);
                pthread_mutex_unlock(&p->lock);
                wake_loop(p);
                pthread_mutex_lock(&p->lock);
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* Run the completions that are in (loop thread). */
static void run_done(WorkerPool *p) {
        Queue q;

        pthread_mutex_lock(&p->lock);
        q = p->done;
        p->done = (Queue) {};
        pthread_mutex_unlock(&p->lock);
        for (Item *it; (it = pop(&q));) {
                if (it->done)
                        it->done(it->userdata);
                pthread_mutex_lock(&p->lock);
                if (it->work)
                        p->pending--;
                pthread_mutex_unlock(&p->lock);
                free(it);
        }
}

static int on_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        WorkerPool *p = userdata;
        uint64_t n;

        (void) !read(p->fd, &n, sizeof(n));
        run_done(p);
        return 0;
}

int worker_pool_new(sd_event *e, unsigned n, WorkerPool **ret) {
        _cleanup_(worker_pool_freep) WorkerPool *p = NULL;
        int r;

        if (n == 0 || n > WORKER_THREADS_MAX)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->fd < 0)
                return -errno;
        r = sd_event_add_io(e, &p->source, p->fd, EPOLLIN, on_done, p);
        if (r < 0)
                return r;
        for (; p->n_threads < n; p->n_threads++) {
                r = pthread_create(&p->threads[p->n_threads], NULL, worker_thread, p);
                if (r != 0)
                        return -r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

void worker_pool_stop(WorkerPool *p) {
        unsigned n;

        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->cond);
        n = TAKE_THREADS(p);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < n; i++)
                pthread_join(p->threads[i], NULL);
        run_done(p);
}

WorkerPool *worker_pool_free(WorkerPool *p) {
        if (!p)
                return NULL;
        worker_pool_stop(p);
        sd_event_source_disable_unref(p->source);
        if (p->fd >= 0)
                close(p->fd);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

static int enqueue(WorkerPool *p, worker_fn work, worker_fn done, void *userdata) {
        Item *it = calloc(1, sizeof(*it));

        if (!it)
                return -ENOMEM;
        *it = (Item) { .work = work, .done = done, .userdata = userdata };
        pthread_mutex_lock(&p->lock);
        if (p->stopping && work) {
                pthread_mutex_unlock(&p->lock);
                free(it);
                return -ESHUTDOWN;
        }
        if (work) {
                p->pending++;
                push(&p->todo, it);
                pthread_cond_signal(&p->cond);
        } else
                push(&p->done, it);
        pthread_mutex_unlock(&p->lock);
        if (!work)
                wake_loop(p);
        return 0;
}

int worker_queue(WorkerPool *p, worker_fn work, worker_fn done, void *userdata) {
        assert(work);
        return enqueue(p, work, done, userdata);
}

int worker_post(WorkerPool *p, worker_fn fn, void *userdata) {
        assert(fn);
        return enqueue(p, NULL, fn, userdata);
}

size_t worker_pending(WorkerPool *p) {
        size_t n;

        pthread_mutex_lock(&p->lock);
        n = p->pending;
        pthread_mutex_unlock(&p->lock);
        return n;
}
