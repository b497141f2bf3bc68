/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A live screen for visierctl (jobs --watch, top): a frame drawn again every interval. On a
 * terminal the frame is redrawn in place on the alternate screen, clipped to the window, with
 * the cursor hidden and the keys read one at a time; everything is put back as it was on the
 * way out. Anywhere else each frame is printed whole, one after the other, without escape
 * codes. Knows nothing of visierd: the caller's draw function writes the frame.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "clock.h"

#define SCREEN_INTERVAL_DEFAULT (2 * USEC_PER_SEC)
#define SCREEN_INTERVAL_MIN (100 * USEC_PER_MSEC)
#define SCREEN_INTERVAL_MAX (3600 * USEC_PER_SEC)
#define SCREEN_COUNT_MAX 1000000u
#define SCREEN_ERROR_MAX 512

/* Write one frame's body to f: 0, or an exit status with err filled. *ret_retry says whether
 * the error may pass (visierd unreachable, a 5xx): it is then shown in the frame and the next
 * interval tries again; otherwise the screen ends with that status (a refusal, a 4xx). */
typedef int (*screen_draw_fn)(void *userdata, FILE *f, char *err, size_t errlen, bool *ret_retry);

typedef struct ScreenConfig {
        const char *title; /* the first line of every frame, before the time */
        usec_t interval;   /* between the start of one frame and the next */
        unsigned count;    /* frames to draw before returning 0; 0 for no end */
} ScreenConfig;

/* Draw frames until SIGINT, SIGTERM or SIGHUP, q or Ctrl-D or the end of standard input
 * when it is a terminal, or count frames: 0 then (or the last frame's status when it failed
 * and count ran out). A draw error that may not pass ends it with that status, its message
 * printed on standard error once the terminal is restored. */
int screen_run(const ScreenConfig *c, screen_draw_fn draw, void *userdata);

/* "2", "0.5", "1.25" seconds as microseconds in [SCREEN_INTERVAL_MIN, SCREEN_INTERVAL_MAX];
 * -EINVAL otherwise. */
int screen_parse_interval(const char *s, usec_t *ret);
