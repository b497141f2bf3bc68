/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Jobs that end on another node (see jobwatch.h).
 *
 * DESIGN: one libpq session in non-blocking use once connected: the io source fires when its
 * socket is readable; PQconsumeInput() reads what arrived and PQnotifies() hands out each
 * notification. A failed read means the session is gone: the io source is dropped and the
 * retry timer armed. The connect itself is blocking (PQconnectdbParams with a short
 * connect_timeout): simpler than PQconnectStart's state machine, and bounded.
 */
#include <assert.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "jobwatch.h"
#include "log.h"

struct JobWatch {
        sd_event *event;
        char *conninfo, *password;
        jobwatch_fn fn;
        void *userdata;
        PGconn *conn;
        sd_event_source *io, *retry;
        bool warned; /* the loss was logged: log the next one only after a success */
};

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata);

static void session_drop(JobWatch *w) {
        w->io = sd_event_source_disable_unref(w->io);
        if (w->conn)
                PQfinish(w->conn);
        w->conn = NULL;
}

static void retry_later(JobWatch *w) {
        int r;

        session_drop(w);
        if (w->retry)
                r = sd_event_source_set_time_relative(w->retry, JOBWATCH_RETRY_USEC) < 0
                            ? -EIO
                            : sd_event_source_set_enabled(w->retry, SD_EVENT_ONESHOT);
        else
                r = sd_event_add_time_relative(w->event, &w->retry, CLOCK_MONOTONIC, JOBWATCH_RETRY_USEC, 0, on_retry, w);
        if (r < 0)
                log_error("cannot arm the timer that reconnects the job watch: %s", strerror(-r));
}

/* libpq's last message on one line (it ends its messages with a newline). */
static const char *pq_message(JobWatch *w, char *buf, size_t len) {
        snprintf(buf, len, "%s", w->conn ? PQerrorMessage(w->conn) : "out of memory");
        for (char *p = buf; *p; p++)
                if (*p == '\n')
                        *p = *(p + 1) ? ' ' : '\0';
        return buf;
}

static void deliver(JobWatch *w) {
        PGnotify *n;

        while ((n = PQnotifies(w->conn))) {
                char *end = NULL;
                long long id;

                if (streq(n->relname, JOBWATCH_QUEUED_CHANNEL)) {
                        w->fn(w->userdata, JOBWATCH_QUEUED);
                        PQfreemem(n);
                        continue;
                }
                errno = 0;
                id = strtoll(n->extra ? n->extra : "", &end, 10);
                if (errno == 0 && end && *end == '\0' && id > 0)
                        w->fn(w->userdata, (int64_t) id);
                PQfreemem(n);
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        JobWatch *w = userdata;
        char msg[256];

        if (!PQconsumeInput(w->conn)) {
                if (!w->warned)
                        log_warning("the job watch lost its database session (%s); reconnecting",
                                    pq_message(w, msg, sizeof(msg)));
                w->warned = true;
                retry_later(w);
                /* Holds may miss a job that ends while the session is down: the reconnect says so. */
                return 0;
        }
        deliver(w);
        return 0;
}

static int session_open(JobWatch *w) {
        const char *keys[] = { "dbname", "password", "connect_timeout", "application_name", NULL };
        const char *values[] = { w->conninfo, w->password, "2", "visierd job watch",
                                 NULL };
        PGresult *res;
        int r;

        if (!w->password) { /* no password keyword at all: libpq's own sources apply */
                keys[1] = "connect_timeout", values[1] = values[2];
                keys[2] = "application_name", values[2] = values[3];
                keys[3] = NULL, values[3] = NULL;
        }
        w->conn = PQconnectdbParams(keys, values, 1);
        if (!w->conn)
                return -ENOMEM;
        if (PQstatus(w->conn) != CONNECTION_OK)
                return -ENOTCONN;
        res = PQexec(w->conn, "LISTEN " JOBWATCH_CHANNEL "; LISTEN " JOBWATCH_QUEUED_CHANNEL);
        r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -EIO;
        PQclear(res);
        if (r < 0)
                return r;
        if (PQsetnonblocking(w->conn, 1) < 0)
                return -EIO;
        r = sd_event_add_io(w->event, &w->io, PQsocket(w->conn), EPOLLIN, on_io, w);
        if (r < 0)
                return r;
        return 0;
}

static void connect_now(JobWatch *w) {
        int r = session_open(w);
        char msg[256];

        if (r < 0) {
                if (!w->warned)
                        log_warning("the job watch cannot listen for jobs ended on other nodes: %s",
                                    r == -ENOMEM ? strerror(-r) : pq_message(w, msg, sizeof(msg)));
                w->warned = true;
                retry_later(w);
                return;
        }
        if (w->warned)
                log_info("the job watch listens again for jobs ended on other nodes");
        w->warned = false;
        /* Anything may have ended before the LISTEN took effect. */
        w->fn(w->userdata, 0);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        connect_now(userdata);
        return 0;
}

int jobwatch_new(sd_event *e, const char *conninfo, const char *password, jobwatch_fn fn, void *userdata,
                 JobWatch **ret) {
        JobWatch *w;

        assert(e && conninfo && fn && ret);
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->event = sd_event_ref(e);
        w->fn = fn;
        w->userdata = userdata;
        w->conninfo = strdup(conninfo);
        w->password = password ? strdup(password) : NULL;
        if (!w->conninfo || (password && !w->password)) {
                jobwatch_free(w);
                return -ENOMEM;
        }
        connect_now(w);
        *ret = w;
        return 0;
}

JobWatch *jobwatch_free(JobWatch *w) {
        if (!w)
                return NULL;
        session_drop(w);
        w->retry = sd_event_source_disable_unref(w->retry);
        sd_event_unref(w->event);
        free(w->conninfo);
        if (w->password) {
                explicit_bzero(w->password, strlen(w->password));
                free(w->password);
        }
        free(w);
        return NULL;
}

bool jobwatch_listening(const JobWatch *w) {
        return w && w->conn && w->io;
}
