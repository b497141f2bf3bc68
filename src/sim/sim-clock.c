/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Monotonic time and sleeping for the simulator. Owns nothing else; never logs.
 */
#include <errno.h>
#include <time.h>

#include "sim-clock.h"

uint64_t clock_now_usec(void) {
        struct timespec ts;

        /* CLOCK_MONOTONIC cannot fail on Linux with a valid pointer. */
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

void clock_sleep_msec(uint64_t msec) {
        struct timespec ts = {
                .tv_sec = (time_t) (msec / 1000),
                .tv_nsec = (long) (msec % 1000) * 1000000L,
        };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}
