/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A PostgreSQL server for tests (see pg-harness.h). Never fails a test while starting a
 * server: it returns a reason, and the caller decides between SKIP and failure.
 */
#include <assert.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"
#include "pg-harness.h"

#define PG_PORT "5432" /* only names the socket file: nothing listens on TCP */
#define PG_USER "visier"

_printf_(3, 4) static int reason_set(char *reason, size_t len, const char *fmt, ...) {
        va_list ap;

        if (reason && len > 0) {
                va_start(ap, fmt);
                vsnprintf(reason, len, fmt, ap);
                va_end(ap);
        }
        return 0;
}

/* The last part of a log, for a reason: at most len - 1 bytes. */
static void log_tail(const char *path, char *buf, size_t len) {
        char *l = harness_read_file(path);
        size_t n = l ? strlen(l) : 0;

        snprintf(buf, len, "%s", l ? l + (n >= len ? n - len + 1 : 0) : "(no log)");
        free(l);
}

static bool executable(const char *dir, const char *name) {
        char p[256];

        snprintf(p, sizeof(p), "%s/%s", dir, name);
        return access(p, X_OK) == 0;
}

int pg_server_find_bindir(char *buf, size_t len, char *reason, size_t reasonlen) {
        const char *env = getenv("PG_BINDIR");
        unsigned long best = 0;
        struct dirent *e;
        DIR *d;

        if (env && *env) {
                if (!executable(env, "initdb") || !executable(env, "postgres")) {
                        reason_set(reason, reasonlen, "PG_BINDIR=%s holds no initdb and postgres", env);
                        return -ENOENT;
                }
                snprintf(buf, len, "%s", env);
                return 0;
        }
        d = opendir("/usr/lib/postgresql");
        if (!d) {
                reason_set(reason, reasonlen,
                           "no PostgreSQL server: /usr/lib/postgresql is missing (install Debian's postgresql)");
                return -ENOENT;
        }
        while ((e = readdir(d))) {
                char bin[sizeof(((PgServer *) NULL)->bindir)], *end;
                unsigned long v = strtoul(e->d_name, &end, 10);

                if (end == e->d_name || *end || v <= best)
                        continue;
                snprintf(bin, sizeof(bin), "/usr/lib/postgresql/%lu/bin", v); /* digits only: "15", not "015" */
                if (executable(bin, "initdb") && executable(bin, "postgres")) {
                        best = v;
                        snprintf(buf, len, "%s", bin);
                }
        }
        closedir(d);
        if (best == 0) {
                reason_set(reason, reasonlen,
                           "no PostgreSQL server: no /usr/lib/postgresql/N/bin with initdb and postgres "
                           "(install Debian's postgresql)");
                return -ENOENT;
        }
        return 0;
}

/* Fork and exec argv as pg's user with output appended to pg's log; the child gets deathsig
 * when the test process dies. */
static pid_t spawn_as(const PgServer *pg, const char *const *argv, int deathsig) {
        pid_t parent = getpid(), pid = fork();

        if (pid != 0)
                return pid;
        {
                int fd = open(pg->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                sigset_t none;

                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                if (getuid() == 0 &&
                    (setgroups(0, NULL) < 0 || setgid(pg->gid) < 0 || setuid(pg->uid) < 0)) {
                        fprintf(stderr, "pg-harness: cannot become uid %u: %m\n", (unsigned) pg->uid);
                        _exit(126);
                }
                /* After setuid(), which clears the parent-death signal. */
                if (prctl(PR_SET_PDEATHSIG, deathsig) < 0 || getppid() != parent)
                        _exit(126);
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                for (int sig = 1; sig < NSIG; sig++)
                        if (sig != SIGKILL && sig != SIGSTOP)
                                (void) signal(sig, SIG_DFL);
                unsetenv("PGDATA");
                unsetenv("PGHOST");
                unsetenv("PGPORT");
                unsetenv("PGUSER");
                unsetenv("PGDATABASE");
                setenv("LC_ALL", "C", 1);
                if (chdir(pg->dir) < 0)
                        _exit(126);
                execv(argv[0], (char *const *) argv);
                fprintf(stderr, "pg-harness: exec %s: %m\n", argv[0]);
                _exit(127);
        }
}

/* Wait for pid until deadline (monotonic): its wait status, or -ETIMEDOUT (still running). */
static int wait_until(pid_t pid, usec_t deadline, int *ret_status) {
        for (;;) {
                pid_t w = waitpid(pid, ret_status, WNOHANG);

                if (w == pid)
                        return 0;
                if (w < 0 && errno != EINTR)
                        return -errno;
                if (clock_now() >= deadline)
                        return -ETIMEDOUT;
                clock_sleep(10 * USEC_PER_MSEC);
        }
}

int pg_server_init(PgServer *pg, char *reason, size_t reasonlen) {
        char bin[192], tail[PG_REASON_MAX / 2];
        const char *tmp;
        int r, status = 0;
        pid_t pid;

        memset(pg, 0, sizeof(*pg));
        r = pg_server_find_bindir(pg->bindir, sizeof(pg->bindir), reason, reasonlen);
        if (r < 0)
                return r;
        pg->uid = getuid();
        pg->gid = getgid();
        if (pg->uid == 0) {
                struct passwd *pw = getpwnam("nobody");

                if (!pw) {
                        reason_set(reason, reasonlen, "running as root and there is no user nobody to run PostgreSQL");
                        return -ENOENT;
                }
                pg->uid = pw->pw_uid;
                pg->gid = pw->pw_gid;
        }
        /* Not harness_mkdtemp(): nothing here may call Check (main() calls this outside a test). */
        tmp = getenv("TMPDIR");
        snprintf(pg->dir, sizeof(pg->dir), "%s/pg-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(pg->dir)) {
                r = negative_errno();
                reason_set(reason, reasonlen, "mkdtemp %s: %m", pg->dir);
                pg->dir[0] = '\0';
                return r;
        }
        if (chown(pg->dir, pg->uid, pg->gid) < 0) {
                r = negative_errno();
                reason_set(reason, reasonlen, "chown %s: %m", pg->dir);
                return r;
        }
        snprintf(pg->data, sizeof(pg->data), "%s/data", pg->dir);
        snprintf(pg->log, sizeof(pg->log), "%s/postgres.log", pg->dir);
        snprintf(pg->conninfo, sizeof(pg->conninfo),
                 "host='%s' port=" PG_PORT " user=" PG_USER " dbname=postgres connect_timeout=5", pg->dir);

        snprintf(bin, sizeof(bin), "%s/initdb", pg->bindir);
        {
                const char *argv[] = { bin, "-D", pg->data, "-U", PG_USER, "-A", "trust", "-E", "UTF8",
                                       "--no-locale", "--no-sync", NULL };

                pid = spawn_as(pg, argv, SIGKILL);
        }
        if (pid < 0) {
                r = negative_errno();
                reason_set(reason, reasonlen, "fork: %m");
                return r;
        }
        r = wait_until(pid, clock_now() + 2 * PG_START_TIMEOUT_SEC * USEC_PER_SEC, &status);
        if (r < 0) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
        }
        if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                log_tail(pg->log, tail, sizeof(tail));
                reason_set(reason, reasonlen, "initdb (%s) failed%s; its output:\n%s", bin,
                           r == -ETIMEDOUT ? " (timed out)" : "", tail);
                return r < 0 ? r : -EIO;
        }
        return pg_server_start(pg, reason, reasonlen);
}

int pg_server_start(PgServer *pg, char *reason, size_t reasonlen) {
        char bin[192], tail[PG_REASON_MAX / 2];
        const char *argv[] = { bin, "-D", pg->data, "-k", pg->dir, "-p", PG_PORT,
                               "-c", "listen_addresses=", "-c", "fsync=off", "-c", "full_page_writes=off",
                               "-c", "shared_buffers=16MB", "-c", "max_connections=50",
                               "-c", "unix_socket_permissions=0700", NULL };
        usec_t deadline = clock_now() + PG_START_TIMEOUT_SEC * USEC_PER_SEC;
        int status;

        assert(pg->pid == 0);
        snprintf(bin, sizeof(bin), "%s/postgres", pg->bindir);
        pg->pid = spawn_as(pg, argv, SIGQUIT);
        if (pg->pid < 0) {
                int r = negative_errno();
                pg->pid = 0;
                reason_set(reason, reasonlen, "fork: %m");
                return r;
        }
        /* Probe until it accepts connections (PQPING_REJECT while it starts or recovers). */
        for (;;) {
                PGPing ping = PQping(pg->conninfo);

                if (ping == PQPING_OK)
                        return 0;
                if (waitpid(pg->pid, &status, WNOHANG) == pg->pid) {
                        pg->pid = 0;
                        log_tail(pg->log, tail, sizeof(tail));
                        reason_set(reason, reasonlen, "postgres exited at start; its log:\n%s", tail);
                        return -EIO;
                }
                if (clock_now() >= deadline) {
                        pg_server_stop(pg, PG_STOP_IMMEDIATE);
                        log_tail(pg->log, tail, sizeof(tail));
                        reason_set(reason, reasonlen, "postgres did not accept connections within %d s; its log:\n%s",
                                   PG_START_TIMEOUT_SEC, tail);
                        return -ETIMEDOUT;
                }
                clock_sleep(10 * USEC_PER_MSEC);
        }
}

int pg_server_stop(PgServer *pg, PgStop mode) {
        int status, r;

        if (pg->pid <= 0)
                return 0;
        kill(pg->pid, mode == PG_STOP_FAST ? SIGINT : SIGQUIT);
        r = wait_until(pg->pid, clock_now() + PG_START_TIMEOUT_SEC * USEC_PER_SEC, &status);
        if (r < 0) {
                kill(pg->pid, SIGKILL);
                waitpid(pg->pid, &status, 0);
        }
        pg->pid = 0;
        return r;
}

int pg_server_restart(PgServer *pg, PgStop mode, char *reason, size_t reasonlen) {
        int r = pg_server_stop(pg, mode);

        if (r < 0) {
                reason_set(reason, reasonlen, "postgres did not stop within %d s", PG_START_TIMEOUT_SEC);
                return r;
        }
        return pg_server_start(pg, reason, reasonlen);
}

void pg_server_destroy(PgServer *pg) {
        pg_server_stop(pg, PG_STOP_IMMEDIATE);
        if (pg->dir[0])
                harness_rmtree(pg->dir);
        pg->dir[0] = '\0';
}

PGconn *pg_server_connect(const PgServer *pg) {
        PGconn *c = PQconnectdb(pg->conninfo);

        ck_assert_msg(c && PQstatus(c) == CONNECTION_OK, "connect to PostgreSQL (%s): %s", pg->conninfo,
                      c ? PQerrorMessage(c) : "out of memory");
        return c;
}
