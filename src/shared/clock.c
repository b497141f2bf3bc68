/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Clock module: see clock.h. Never blocks except in clock_sleep().
 */
#include <errno.h>
#include <time.h>

#include "clock.h"

static usec_t (*clock_source)(void);

static usec_t timespec_to_usec(const struct timespec *ts) {
        return (usec_t) ts->tv_sec * USEC_PER_SEC + (usec_t) ts->tv_nsec / 1000;
}

usec_t clock_now(void) {
        struct timespec ts;

        if (clock_source)
                return clock_source();
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return timespec_to_usec(&ts);
}

usec_t clock_realtime(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return timespec_to_usec(&ts);
}

void clock_set_source(usec_t (*source)(void)) {
        clock_source = source;
}

void clock_sleep(usec_t usec) {
        struct timespec ts = {
                .tv_sec = (time_t) (usec / USEC_PER_SEC),
                .tv_nsec = (long) (usec % USEC_PER_SEC) * 1000,
        };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}
