/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The live screen (see screen.h). Signals that end it (SIGINT, SIGTERM, SIGHUP, SIGQUIT) and SIGWINCH
 * are blocked but for the wait between frames, which is one ppoll() on standard input with
 * the old mask: a signal is never lost between the check and the wait, and never interrupts
 * a request (one Ctrl-C during a request takes effect when it ends, at most --timeout later).
 * SIGTSTP is ignored while the terminal is changed, so that a stopped visierctl never leaves
 * it without echo on the alternate screen, and SIGPIPE too: a reader that goes away (top | head)
 * makes a write fail, which ends the screen with the terminal put back. Every line is clipped to the window, so that a
 * frame never scrolls the screen it is redrawing.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "output.h"
#include "screen.h"

#define SCREEN_ENTER "\033[?1049h\033[?25l" /* the alternate screen, the cursor hidden */
#define SCREEN_LEAVE "\033[?25h\033[?1049l"
#define SCREEN_HOME "\033[H"
#define SCREEN_EOL "\033[K"  /* clear the rest of the line */
#define SCREEN_EOS "\033[J"  /* clear the rest of the screen */
#define SCREEN_ROWS_DEFAULT 24
#define SCREEN_COLS_DEFAULT 80

static volatile sig_atomic_t screen_stop_signal, screen_resized;

static void screen_on_signal(int sig) {
        if (sig == SIGWINCH)
                screen_resized = 1;
        else
                screen_stop_signal = sig;
}

typedef struct Screen {
        bool tty;  /* standard output is a terminal: redraw in place */
        bool keys; /* standard input is a terminal: read keys, without echo */
        bool termios_saved, entered;
        struct termios saved;
        sigset_t old_mask;
        struct sigaction old_actions[7];
} Screen;

/* Blocked and caught: all but the last two, which are ignored. */
static const int screen_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGTSTP, SIGPIPE };
#define SCREEN_CAUGHT (ELEMENTSOF(screen_signals) - 2)

static void screen_setup(Screen *s) {
        struct sigaction sa = { .sa_handler = screen_on_signal };
        sigset_t block;

        screen_stop_signal = 0;
        screen_resized = 0;
        sigemptyset(&block);
        for (size_t i = 0; i < SCREEN_CAUGHT; i++)
                sigaddset(&block, screen_signals[i]);
        sigprocmask(SIG_BLOCK, &block, &s->old_mask);
        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < ELEMENTSOF(screen_signals); i++) {
                struct sigaction ign = { .sa_handler = SIG_IGN };

                sigaction(screen_signals[i], i < SCREEN_CAUGHT ? &sa : &ign, &s->old_actions[i]);
        }
        if (s->keys && tcgetattr(STDIN_FILENO, &s->saved) == 0) {
                struct termios raw = s->saved;

                s->termios_saved = true;
                raw.c_lflag &= ~(tcflag_t) (ICANON | ECHO); /* keys one at a time, unseen; ISIG stays */
                raw.c_cc[VMIN] = 1;
                raw.c_cc[VTIME] = 0;
                (void) tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        }
        if (s->tty) {
                fputs(SCREEN_ENTER, stdout);
                fflush(stdout);
                s->entered = true;
        }
}

static void screen_restore(Screen *s) {
        if (s->entered) {
                fputs(SCREEN_LEAVE, stdout);
                fflush(stdout);
        }
        if (s->termios_saved)
                (void) tcsetattr(STDIN_FILENO, TCSANOW, &s->saved);
        for (size_t i = 0; i < ELEMENTSOF(screen_signals); i++)
                sigaction(screen_signals[i], &s->old_actions[i], NULL);
        sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
}

static void screen_size(unsigned *ret_rows, unsigned *ret_cols) {
        struct winsize ws = {};

        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 || ws.ws_row == 0 || ws.ws_col == 0) {
                ws.ws_row = SCREEN_ROWS_DEFAULT;
                ws.ws_col = SCREEN_COLS_DEFAULT;
        }
        *ret_rows = ws.ws_row;
        *ret_cols = ws.ws_col;
}

/* The first cols characters of the line (UTF-8 continuation bytes do not count). */
static size_t screen_clip(const char *line, size_t len, unsigned cols) {
        size_t n = 0, chars = 0;

        while (n < len) {
                if (((unsigned char) line[n] & 0xc0) != 0x80) {
                        if (chars == cols)
                                break;
                        chars++;
                }
                n++;
        }
        return n;
}

/* The frame (title line and body) onto the terminal, in place. */
static void screen_paint(const char *frame, size_t len) {
        unsigned rows, cols, row = 0;
        const char *p = frame, *end = frame + len;

        screen_size(&rows, &cols);
        fputs(SCREEN_HOME, stdout);
        while (p < end && row < rows) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);

                fwrite(p, 1, screen_clip(p, n, cols), stdout);
                fputs(SCREEN_EOL, stdout);
                row++;
                if (row < rows && nl) /* never a newline on the last row: it would scroll */
                        fputc('\n', stdout);
                p = nl ? nl + 1 : end;
        }
        fputs(SCREEN_EOS, stdout);
        fflush(stdout);
}

/* Wait until the deadline, a key that quits, the end of standard input or a signal. Returns
 * true when the screen is to end. */
static bool screen_wait(Screen *s, usec_t deadline) {
        for (;;) {
                struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
                usec_t now = clock_now(), left = deadline > now ? deadline - now : 0;
                struct timespec ts = { .tv_sec = (time_t) (left / USEC_PER_SEC),
                                       .tv_nsec = (long) (left % USEC_PER_SEC * 1000) };
                int n;

                if (screen_stop_signal)
                        return true;
                if (screen_resized) {
                        screen_resized = 0;
                        return false; /* draw again now, at the new size */
                }
                if (left == 0)
                        return false;
                n = ppoll(&pfd, s->keys ? 1 : 0, &ts, &s->old_mask);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return true;
                if (n > 0) {
                        char keys[64];
                        ssize_t k = read(STDIN_FILENO, keys, sizeof(keys));

                        if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
                                return true; /* the terminal went away */
                        for (ssize_t i = 0; i < k; i++)
                                if (keys[i] == 'q' || keys[i] == 'Q' || keys[i] == 0x04 /* Ctrl-D */)
                                        return true;
                }
        }
}

static void screen_title(const ScreenConfig *c, bool tty, FILE *f) {
        char when[64];
        time_t t = time(NULL);
        struct tm tm;

        if (tty)
                strftime(when, sizeof(when), "%H:%M:%S", localtime_r(&t, &tm));
        else
                strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        fprintf(f, "%s  every %.1f s  %s%s\n", c->title, (double) c->interval / USEC_PER_SEC, when,
                tty ? "  (q to quit)" : "");
}

int screen_run(const ScreenConfig *c, screen_draw_fn draw, void *userdata) {
        Screen s = { .tty = isatty(STDOUT_FILENO), .keys = isatty(STDIN_FILENO) };
        char err[SCREEN_ERROR_MAX] = "";
        int r = 0, status = 0;
        bool fatal = false;

        screen_setup(&s);
        for (unsigned frames = 0;;) {
                usec_t deadline = clock_now() + c->interval;
                _cleanup_free_ char *body = NULL, *frame = NULL;
                size_t body_len = 0, frame_len = 0;
                bool retry = false;
                FILE *f;

                err[0] = '\0';
                f = open_memstream(&body, &body_len);
                if (!f) {
                        snprintf(err, sizeof(err), "out of memory");
                        r = 1;
                        fatal = true;
                        break;
                }
                status = draw(userdata, f, err, sizeof(err), &retry);
                if (fclose(f) != 0 && status == 0) {
                        snprintf(err, sizeof(err), "out of memory");
                        status = 1;
                }
                if (status != 0 && !retry) {
                        r = status;
                        fatal = true;
                        break;
                }
                if (s.tty) {
                        f = open_memstream(&frame, &frame_len);
                        if (!f) {
                                snprintf(err, sizeof(err), "out of memory");
                                r = 1;
                                fatal = true;
                                break;
                        }
                        screen_title(c, true, f);
                        fputc('\n', f);
                        if (status == 0)
                                fwrite(body, 1, body_len, f);
                        else
                                fprintf(f, "visierctl: %s\n(trying again every %.1f s)\n", err,
                                        (double) c->interval / USEC_PER_SEC);
                        if (fclose(f) == 0)
                                screen_paint(frame, frame_len);
                } else {
                        screen_title(c, false, stdout);
                        if (status == 0)
                                fwrite(body, 1, body_len, stdout);
                        else
                                output_error("%s (trying again in %.1f s)", err, (double) c->interval / USEC_PER_SEC);
                        fputc('\n', stdout);
                        fflush(stdout);
                }
                frames++;
                if (ferror(stdout)) {
                        r = 1; /* the reader went away (EPIPE), or the terminal did */
                        break;
                }
                if (c->count && frames >= c->count) {
                        r = status;
                        break;
                }
                if (screen_wait(&s, deadline))
                        break;
        }
        screen_restore(&s);
        if (fatal)
                output_error("%s", err);
        /* Ended by the user (q, Ctrl-D, Ctrl-C): 0. Ended by SIGTERM, SIGHUP or SIGQUIT: as a
         * shell reports a program killed by it, so a script can tell it from a whole --count. */
        if (!fatal && r == 0 && screen_stop_signal && screen_stop_signal != SIGINT)
                r = 128 + screen_stop_signal;
        return r;
}

static bool screen_digit(char c) {
        return c >= '0' && c <= '9';
}

int screen_parse_interval(const char *s, usec_t *ret) {
        usec_t whole = 0, frac = 0, scale = USEC_PER_SEC;
        const char *p = s;

        if (!screen_digit(*p))
                return -EINVAL;
        for (; screen_digit(*p); p++) {
                whole = whole * 10 + (usec_t) (*p - '0');
                if (whole > SCREEN_INTERVAL_MAX / USEC_PER_SEC)
                        return -EINVAL;
        }
        if (*p == '.') {
                p++;
                if (!screen_digit(*p))
                        return -EINVAL;
                for (; screen_digit(*p); p++)
                        if (scale >= 10) {
                                scale /= 10;
                                frac += (usec_t) (*p - '0') * scale;
                        }
        }
        if (*p)
                return -EINVAL;
        whole = whole * USEC_PER_SEC + frac;
        if (whole < SCREEN_INTERVAL_MIN || whole > SCREEN_INTERVAL_MAX)
                return -EINVAL;
        *ret = whole;
        return 0;
}
