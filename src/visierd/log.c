/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Log sink (see log.h). Thread-safe: each line is one write(2) or one sd_journal_sendv().
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>

#include "log.h"
#include "parse.h"

#define LOG_LINE_MAX 2048
#define LOG_FIELDS_MAX 16

static bool log_to_journal;
/* Changed on reload while other threads log. */
static atomic_bool log_json; /* stderr lines as JSON objects ([log] format = json) */
static atomic_int log_max_level = LOG_INFO;

void log_set_json(bool json) {
        atomic_store_explicit(&log_json, json, memory_order_relaxed);
}

void log_setup(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        /* stderr is the journal exactly when its device:inode matches $JOURNAL_STREAM. */
        if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
            (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino)
                log_to_journal = true;
        e = getenv("VISIERD_LOG_LEVEL");
        if (e && streq(e, "debug"))
                atomic_store_explicit(&log_max_level, LOG_DEBUG, memory_order_relaxed);
}

bool log_enabled(int priority) {
        return priority <= atomic_load_explicit(&log_max_level, memory_order_relaxed);
}

void log_set_max_level(int level) {
        atomic_store_explicit(&log_max_level, level, memory_order_relaxed);
}

static const char *priority_name(int p) {
        static const char *const names[] = { "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug" };
        return p >= 0 && p < (int) ELEMENTSOF(names) ? names[p] : "info";
}

void log_full(int priority, const char *msgid, const char *const *fields, const char *fmt, ...) {
        char msg[LOG_LINE_MAX];
        va_list ap;
        int saved = errno;

        if (priority > atomic_load_explicit(&log_max_level, memory_order_relaxed))
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        if (log_to_journal) {
                char prio[16], message[LOG_LINE_MAX + 16], id[48];
                struct iovec iov[LOG_FIELDS_MAX + 3];
                size_t n = 0;

                snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
                snprintf(message, sizeof(message), "MESSAGE=%s", msg);
                iov[n++] = (struct iovec) { prio, strlen(prio) };
                iov[n++] = (struct iovec) { message, strlen(message) };
                if (msgid) {
                        snprintf(id, sizeof(id), "MESSAGE_ID=%s", msgid);
                        iov[n++] = (struct iovec) { id, strlen(id) };
                }
                for (size_t i = 0; fields && fields[i] && n < ELEMENTSOF(iov); i++)
                        iov[n++] = (struct iovec) { (void *) fields[i], strlen(fields[i]) };
                sd_journal_sendv(iov, (int) n);
        } else {
                char line[LOG_LINE_MAX * 2 + 512], when[96];
                struct timespec ts;
                struct tm tm;
                int len;

                clock_gettime(CLOCK_REALTIME, &ts);
                gmtime_r(&ts.tv_sec, &tm);
                snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
                if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
                        /* One object a line: time, level, pid, message, message_id and the journal
                         * fields by their names. */
                        json_t *o;
                        char *text;

                        (void) utf8_sanitize(msg);
                        o = json_pack("{s:s, s:s, s:i, s:s}", "time", when, "level", priority_name(priority), "pid",
                                      (int) getpid(), "message", msg);
                        if (o && msgid)
                                json_object_set_new(o, "message_id", json_string(msgid));
                        for (size_t i = 0; o && fields && fields[i]; i++) {
                                const char *eq = strchr(fields[i], '=');
                                char key[64];

                                if (!eq || (size_t) (eq - fields[i]) >= sizeof(key))
                                        continue;
                                snprintf(key, sizeof(key), "%.*s", (int) (eq - fields[i]), fields[i]);
                                json_object_set_new(o, key, json_string(eq + 1));
                        }
                        text = o ? json_dumps(o, JSON_COMPACT) : NULL;
                        json_decref(o);
                        len = snprintf(line, sizeof(line), "%s\n", text ? text : "{\"message\":\"out of memory\"}");
                        free(text);
                } else
                        len = snprintf(line, sizeof(line), "%s visierd[%d] %s: %s\n", when, (int) getpid(),
                                       priority_name(priority), msg);
                if (len > (int) sizeof(line) - 1)
                        len = (int) sizeof(line) - 1;
                if (write(STDERR_FILENO, line, (size_t) len) < 0) {
                        /* nowhere left to report it */
                }
        }
        errno = saved;
}
