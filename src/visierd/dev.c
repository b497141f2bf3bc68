/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Developer mode (see dev.h). Runs before the manager exists, so it reports to stderr
 * itself. The generated secrets are written only to 0600 files in a 0700 directory.
 */
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "dev.h"
#include "notify.h"

#define DEV_SIM_START_TIMEOUT (15 * USEC_PER_SEC)
#define DEV_USERNAME "dev-user"

static int write_random_secret(const char *path) {
        unsigned char raw[24];
        char hex[sizeof(raw) * 2 + 2];
        _cleanup_close_ int fd = -1;
        int r = 0;

        if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
                return -EIO;
        for (size_t i = 0; i < sizeof(raw); i++)
                snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        hex[sizeof(raw) * 2] = '\n';
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                r = -errno;
        else if (write(fd, hex, sizeof(raw) * 2 + 1) != (ssize_t) (sizeof(raw) * 2 + 1))
                r = -EIO;
        explicit_bzero(raw, sizeof(raw));
        explicit_bzero(hex, sizeof(hex));
        return r;
}

static int find_sim(char *buf, size_t len) {
        char self[PATH_MAX];
        const char *env = getenv("VISIER_SIM_BIN");
        ssize_t n;

        if (env && *env) {
                snprintf(buf, len, "%s", env);
                return access(buf, X_OK) == 0 ? 0 : -ENOENT;
        }
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                snprintf(buf, len, "%s/visier-sim", dirname(self));
                if (access(buf, X_OK) == 0)
                        return 0;
        }
        snprintf(buf, len, "%s/visier-sim", BINDIR);
        return access(buf, X_OK) == 0 ? 0 : -ENOENT;
}

int dev_start(Dev *d, Config **ret) {
        char sim[PATH_MAX], apikey[128], password[128], db[128], port[16];
        _cleanup_free_ char *text = NULL;
        NotifySocket ns = { .fd = -1 };
        ConfigErrors errors = {};
        Config *c = NULL;
        sigset_t none;
        int r;

        *d = (Dev) { .sim = -1 };
        r = find_sim(sim, sizeof(sim));
        if (r < 0) {
                fprintf(stderr, "visierd --dev: cannot find the visier-sim program (set $VISIER_SIM_BIN)\n");
                return r;
        }
        snprintf(d->dir, sizeof(d->dir), "/tmp/visierd-dev.XXXXXX");
        if (!mkdtemp(d->dir)) {
                fprintf(stderr, "visierd --dev: cannot create a temporary directory: %m\n");
                return -errno;
        }
        snprintf(apikey, sizeof(apikey), "%s/apikey", d->dir);
        snprintf(password, sizeof(password), "%s/password", d->dir);
        snprintf(db, sizeof(db), "%s/visierd.db", d->dir);
        if (write_random_secret(apikey) < 0 || write_random_secret(password) < 0) {
                fprintf(stderr, "visierd --dev: cannot write throwaway credentials in %s\n", d->dir);
                return -EIO;
        }

        r = notify_socket_open(&ns);
        if (r < 0) {
                fprintf(stderr, "visierd --dev: cannot create a notify socket: %s\n", strerror(-r));
                return r;
        }
        d->sim = fork();
        if (d->sim < 0) {
                r = -errno;
                notify_socket_close(&ns);
                return r;
        }
        if (d->sim == 0) {
                sigemptyset(&none);
                pthread_sigmask(SIG_SETMASK, &none, NULL);
                setenv("NOTIFY_SOCKET", ns.path, 1);
                execl(sim, "visier-sim", "--listen", "127.0.0.1", "--port", "0", "--username", DEV_USERNAME,
                      "--password-file", password, "--apikey-file", apikey, (char *) NULL);
                fprintf(stderr, "visierd --dev: cannot run %s: %m\n", sim);
                _exit(127);
        }
        r = notify_wait_ready(&ns, clock_now() + DEV_SIM_START_TIMEOUT, &d->sim_port, NULL, 0);
        notify_socket_close(&ns);
        if (r < 0 || d->sim_port == 0) {
                fprintf(stderr, "visierd --dev: visier-sim did not become ready\n");
                return r < 0 ? r : -EPROTO;
        }

        snprintf(port, sizeof(port), "%u", d->sim_port);
        if (asprintf(&text,
                     "[visier]\nbase_url = http://127.0.0.1:%s\nusername = " DEV_USERNAME "\n"
                     "apikey_file = %s\npassword_file = %s\n"
                     "[store]\ndatabase = %s\n",
                     port, apikey, password, db) < 0)
                return -ENOMEM;
        r = config_load_string("--dev", text, &c, &errors);
        if (r >= 0)
                r = config_load_secrets(c, &errors);
        for (size_t i = 0; i < errors.n; i++)
                fprintf(stderr, "%s\n", errors.messages[i]);
        config_errors_clear(&errors);
        if (r < 0) {
                config_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

void dev_print_welcome(const Dev *d, const Config *c, unsigned port) {
        printf("visierd is running in development mode against visier-sim on 127.0.0.1:%u.\n"
               "Local API: http://127.0.0.1:%u/  (throwaway state in %s)\n"
               "Try:\n"
               "  curl -s http://127.0.0.1:%u/status\n"
               "  curl -s http://127.0.0.1:%u/v1/admin/capabilities\n"
               "  a browser on http://127.0.0.1:%u/ui (the status page)\n"
               "Stop with Ctrl-C.\n",
               d->sim_port, port, d->dir, port, port, port);
        fflush(stdout);
}

static void remove_file(const char *dir, const char *name) {
        char p[512];

        snprintf(p, sizeof(p), "%s/%s", dir, name);
        unlink(p);
}

static void remove_tree(const char *dir, const char *name) {
        char p[192];
        struct dirent *de;
        DIR *dd;

        snprintf(p, sizeof(p), "%s/%s", dir, name);
        dd = opendir(p);
        while (dd && (de = readdir(dd)))
                if (de->d_name[0] != '.')
                        remove_file(p, de->d_name);
        if (dd)
                closedir(dd);
        rmdir(p);
}

void dev_stop(Dev *d) {
        if (d->sim > 0) {
                kill(d->sim, SIGTERM);
                waitpid(d->sim, NULL, 0);
                d->sim = -1;
        }
        if (d->dir[0]) {
                remove_file(d->dir, "apikey");
                remove_file(d->dir, "password");
                remove_file(d->dir, "visierd.db");
                remove_file(d->dir, "visierd.db-wal");
                remove_file(d->dir, "visierd.db-shm");
                remove_tree(d->dir, "exports"); /* export run results, next to the database */
                rmdir(d->dir);
                d->dir[0] = '\0';
        }
}
