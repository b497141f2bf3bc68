/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secret storage (see secret.h). Owns reading secret files and the permission rule on them.
 * Must never log, and never copy a secret into an error message.
 */
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secret.h"

/*
 * Secret bytes live in one arena of fixed slots, mapped once, excluded from core dumps
 * (MADV_DONTDUMP) and, where the memory lock limit allows, from swap (mlock): the API key, the
 * password, client tokens, the Visier token and its per-call copies. A secret longer than a
 * slot, or one made while every slot is taken, is kept on the heap instead (still wiped when
 * freed). The process is also not dumpable at all (main.c).
 */
#define ARENA_SLOT 512
#define ARENA_SLOTS 1024

static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
static char *arena;          /* ARENA_SLOTS * ARENA_SLOT bytes, or NULL when it could not be mapped */
static bool arena_tried;
static uint64_t arena_used[ARENA_SLOTS / 64];

static char *arena_take(size_t size) {
        char *p = NULL;

        if (size > ARENA_SLOT)
                return NULL;
        pthread_mutex_lock(&arena_lock);
        if (!arena_tried) {
                void *m = mmap(NULL, (size_t) ARENA_SLOTS * ARENA_SLOT, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

                arena_tried = true;
                if (m != MAP_FAILED) {
                        (void) madvise(m, (size_t) ARENA_SLOTS * ARENA_SLOT, MADV_DONTDUMP);
                        (void) mlock(m, (size_t) ARENA_SLOTS * ARENA_SLOT); /* best effort */
                        arena = m;
                }
        }
        for (size_t w = 0; arena && !p && w < ELEMENTSOF(arena_used); w++)
                if (~arena_used[w]) {
                        int bit = __builtin_ctzll(~arena_used[w]);

                        arena_used[w] |= UINT64_C(1) << bit;
                        p = arena + (w * 64 + (size_t) bit) * ARENA_SLOT;
                }
        pthread_mutex_unlock(&arena_lock);
        return p;
}

static bool arena_give_back(char *p) {
        bool ours;

        pthread_mutex_lock(&arena_lock);
        ours = arena && p >= arena && p < arena + (size_t) ARENA_SLOTS * ARENA_SLOT;
        if (ours) {
                size_t slot = (size_t) (p - arena) / ARENA_SLOT;

                arena_used[slot / 64] &= ~(UINT64_C(1) << (slot % 64));
        }
        pthread_mutex_unlock(&arena_lock);
        return ours;
}

Secret *secret_new(const char *data, size_t len) {
        Secret *s;

        s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->data = arena_take(len + 1);
        if (!s->data)
                s->data = malloc(len + 1);
        if (!s->data) {
                free(s);
                return NULL;
        }
        memcpy(s->data, data, len);
        s->data[len] = '\0';
        s->len = len;
        return s;
}

Secret *secret_dup(const Secret *s) {
        return s ? secret_new(s->data, s->len) : NULL;
}

Secret *secret_free(Secret *s) {
        if (!s)
                return NULL;
        if (s->data) {
                explicit_bzero(s->data, s->len + 1);
                if (!arena_give_back(s->data))
                        free(s->data);
        }
        free(s);
        return NULL;
}

bool secret_equal(const Secret *a, const Secret *b) {
        unsigned char diff = 0;

        if (!a || !b)
                return a == b;
        if (a->len != b->len)
                return false;
        for (size_t i = 0; i < a->len; i++)
                diff |= (unsigned char) a->data[i] ^ (unsigned char) b->data[i];
        return diff == 0;
}

/* The uid of the service user the unit runs visierd as (so that root's --check-config accepts
 * what the service will), or (uid_t) -1 when there is none. */
static uid_t service_uid(void) {
        struct passwd pw, *found = NULL;
        char buf[1024];

        if (getpwnam_r(SECRET_SERVICE_USER, &pw, buf, sizeof(buf), &found) != 0 || !found)
                return (uid_t) -1;
        return found->pw_uid;
}

int secret_read_file(const char *path, Secret **ret, char *err, size_t errlen) {
        _cleanup_close_ int fd = -1;
        char buf[SECRET_FILE_MAX + 1];
        struct stat st;
        size_t len = 0;
        Secret *s;
        int r;

        /* Never blocks (a FIFO opens at once, and is refused below) and never follows a
         * symbolic link: the file checked is the file read. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ELOOP)
                        snprintf(err, errlen, "secret file %s is a symbolic link; give the file itself", path);
                else
                        snprintf(err, errlen, "cannot open secret file %s: %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                snprintf(err, errlen, "cannot stat secret file %s: %s", path, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                snprintf(err, errlen, "secret file %s is not a regular file", path);
                return -EINVAL;
        }
        if (st.st_mode & (S_IRWXG | S_IRWXO)) {
                snprintf(err, errlen,
                         "secret file %s is accessible by group or others (mode %04o); "
                         "refusing it: run chmod 600 (or 400) on it",
                         path, (unsigned) (st.st_mode & 07777));
                return -EPERM;
        }
        if (st.st_uid != 0 && st.st_uid != geteuid() && st.st_uid != service_uid()) {
                snprintf(err, errlen,
                         "secret file %s is owned by uid %u, neither root nor the user visierd runs as (uid %u) nor "
                         "the service user " SECRET_SERVICE_USER "; refusing it: whoever owns it can change it",
                         path, (unsigned) st.st_uid, (unsigned) geteuid());
                return -EPERM;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
                r = negative_errno();
                snprintf(err, errlen, "cannot read secret file %s: %s", path, strerror(-r));
                return r;
        }

        for (;;) {
                ssize_t n = read(fd, buf + len, sizeof(buf) - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        explicit_bzero(buf, sizeof(buf));
                        snprintf(err, errlen, "cannot read secret file %s: %s", path, strerror(-r));
                        return r;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > SECRET_FILE_MAX) {
                        explicit_bzero(buf, sizeof(buf));
                        snprintf(err, errlen, "secret file %s is larger than %d bytes", path, SECRET_FILE_MAX);
                        return -EFBIG;
                }
        }
        if (len > 0 && buf[len - 1] == '\n')
                len--;
        if (len > 0 && buf[len - 1] == '\r')
                len--;
        if (len == 0) {
                snprintf(err, errlen, "secret file %s is empty", path);
                return -ENODATA;
        }
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) buf[i] < 0x20 || buf[i] == 0x7f) {
                        /* A line break inside a key would become a second header line. */
                        explicit_bzero(buf, sizeof(buf));
                        snprintf(err, errlen,
                                 "secret file %s holds a control character (a line break or tab?) at byte %zu; a "
                                 "secret is one line of printable text",
                                 path, i + 1);
                        return -EINVAL;
                }

        s = secret_new(buf, len);
        explicit_bzero(buf, sizeof(buf));
        if (!s) {
                snprintf(err, errlen, "out of memory reading %s", path);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}
