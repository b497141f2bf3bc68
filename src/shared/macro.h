/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small helpers shared by every program in the tree: cleanup attributes in the style of
 * systemd's, TAKE_PTR(), array sizes. Nothing here allocates, logs or knows about Visier.
 */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Hand a pointer's ownership on: returns it and leaves NULL behind, so _cleanup_ frees nothing. */
#define TAKE_PTR(p)                                  \
        ({                                           \
                __typeof__(p) _ptr_ = (p);           \
                (p) = NULL;                          \
                _ptr_;                               \
        })

#define TAKE_FD(fd)                                  \
        ({                                           \
                int _fd_ = (fd);                     \
                (fd) = -1;                           \
                _fd_;                                \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Define a pointer-cleanup helper NAME##p for a destructor NAME that accepts NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)      \
        static inline void func##p(type *p) {        \
                if (*p)                              \
                        func(*p);                    \
        }

static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

static inline int streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline int strcaseeq(const char *a, const char *b) {
        return strcasecmp(a, b) == 0;
}

static inline const char *strempty(const char *s) {
        return s ? s : "";
}
