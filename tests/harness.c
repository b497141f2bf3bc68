/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration test harness (see harness.h). Fails the running Check test on any problem it
 * cannot recover from, with a message naming what went wrong.
 */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "macro.h"
#include "harness.h"
#include "notify.h"
#include "pg-harness.h"

unsigned long harness_fsize_limit;
bool harness_socket_only;
const char *harness_listen_address = "127.0.0.1";

/* ---- the job store: SQLite, or one PostgreSQL for the program (harness.h) ---- */

static PgServer store_pg;
static bool store_pg_on;
static pid_t store_pg_owner; /* the process that started it: Check's forked tests must not stop it */

static void harness_store_teardown(void) {
        if (store_pg_on && getpid() == store_pg_owner)
                pg_server_destroy(&store_pg);
}

/* Before main(), so the server is the test program's own child, shared by every forked test. */
__attribute__((constructor)) static void harness_store_setup(void) {
        const char *kind = getenv("VISIERD_TEST_STORE");
        char reason[PG_REASON_MAX];

        if (!kind || !*kind || strcmp(kind, "sqlite") == 0)
                return;
        if (strcmp(kind, "postgresql") != 0) {
                fprintf(stderr, "VISIERD_TEST_STORE=%s: expected sqlite or postgresql\n", kind);
                _exit(2);
        }
        if (pg_server_init(&store_pg, reason, sizeof(reason)) < 0) {
                fprintf(stderr, "SKIP: the job store on PostgreSQL cannot be tested here: %s\n", reason);
                _exit(77);
        }
        store_pg_on = true;
        store_pg_owner = getpid();
        atexit(harness_store_teardown);
}

bool harness_store_is_pg(void) {
        return store_pg_on;
}

const char *harness_store_pg_conninfo(void) {
        return store_pg_on ? store_pg.conninfo : NULL;
}

/* A new database on the program's server for one visierd: its [store] url into ret. */
static void store_pg_database(char *ret, size_t len) {
        char name[40], hex[17], sql[96];
        PGconn *c;
        PGresult *res;

        harness_random_hex(hex, 8);
        snprintf(name, sizeof(name), "visierd_%s", hex);
        c = pg_server_connect(&store_pg);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        res = PQexec(c, sql);
        ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
        PQclear(res);
        PQfinish(c);
        ck_assert_int_lt(snprintf(ret, len, "host='%s' port=5432 user=visier dbname=%s", store_pg.dir, name), (int) len);
}

int visierd_store_query(const Visierd *d, const char *sql, const char *param, char **ret_value, char *err,
                        size_t errlen) {
        const char *params[1] = { param };
        char *value = NULL;
        int r = -EIO;

        if (d->store_url[0]) {
                PGconn *c = PQconnectdb(d->store_url);
                PGresult *res = NULL;

                if (PQstatus(c) != CONNECTION_OK)
                        snprintf(err, errlen, "cannot connect to %s: %s", d->store_url, PQerrorMessage(c));
                else if (res = PQexecParams(c, sql, param ? 1 : 0, NULL, param ? params : NULL, NULL, NULL, 0),
                         PQresultStatus(res) != PGRES_TUPLES_OK)
                        snprintf(err, errlen, "%s: %s", sql, PQerrorMessage(c));
                else if (PQntuples(res) == 0 || PQnfields(res) == 0)
                        r = 0;
                else if (!(value = strdup(PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0))))
                        snprintf(err, errlen, "out of memory");
                else
                        r = 1;
                PQclear(res);
                PQfinish(c);
        } else {
                char path[256];
                sqlite3 *db = NULL;
                sqlite3_stmt *st = NULL;
                int s;

                snprintf(path, sizeof(path), "%s/visierd.db", d->dir);
                if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
                        snprintf(err, errlen, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
                else if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
                         (param && sqlite3_bind_text(st, 1, param, -1, SQLITE_TRANSIENT) != SQLITE_OK))
                        snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
                else if ((s = sqlite3_step(st)) == SQLITE_DONE)
                        r = 0;
                else if (s != SQLITE_ROW)
                        snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
                else if (!(value = strdup(sqlite3_column_text(st, 0) ? (const char *) sqlite3_column_text(st, 0) : "")))
                        snprintf(err, errlen, "out of memory");
                else
                        r = 1;
                sqlite3_finalize(st);
                sqlite3_close(db);
        }
        if (r > 0)
                *ret_value = value;
        return r;
}

void harness_store_pg_new_url(char *ret, size_t len) {
        ck_assert_msg(store_pg_on, "no PostgreSQL: VISIERD_TEST_STORE=postgresql was not set");
        store_pg_database(ret, len);
}

static const char *env_or(const char *name, const char *fallback) {
        const char *v = getenv(name);
        return v && *v ? v : fallback;
}

void harness_mkdtemp(char *buf, size_t len, const char *prefix) {
        snprintf(buf, len, "%s/%s.XXXXXX", env_or("TMPDIR", "/tmp"), prefix);
        ck_assert_msg(mkdtemp(buf), "mkdtemp %s: %m", buf);
}

void harness_write_file(const char *path, const char *content, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        size_t n = strlen(content);

        ck_assert_msg(fd >= 0, "open %s: %m", path);
        ck_assert_msg(write(fd, content, n) == (ssize_t) n, "write %s: %m", path);
        ck_assert_int_eq(fchmod(fd, mode), 0);
        close(fd);
}

char *harness_read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0;

        if (!f)
                return NULL;
        {
                FILE *m = open_memstream(&buf, &len);
                char chunk[8192];
                size_t n;

                while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                        fwrite(chunk, 1, n, m);
                fclose(m);
        }
        fclose(f);
        return buf;
}

void harness_random_hex(char *buf, size_t bytes) {
        unsigned char raw[64];

        ck_assert(bytes <= sizeof(raw));
        ck_assert_int_eq(getrandom(raw, bytes, 0), (ssize_t) bytes);
        for (size_t i = 0; i < bytes; i++)
                snprintf(buf + 2 * i, 3, "%02x", raw[i]);
}

void harness_rmtree(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *e;
        char p[512];

        if (!d)
                return;
        while ((e = readdir(d))) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                if (e->d_type == DT_DIR)
                        harness_rmtree(p);
                else
                        unlink(p);
        }
        closedir(d);
        rmdir(dir);
}

const char *const *harness_child_env;

/* Fork and exec argv with stderr and stdout to log, NOTIFY_SOCKET set; the child dies with us. */
pid_t harness_spawn(const char *const *argv, const char *log, const char *notify_path) {
        pid_t parent = getpid(), pid;

        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %m");
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                sigset_t none;

                if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
                        _exit(126);
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                /* Dispositions as a service manager gives them, whatever the shell that started
                 * make check ignored (a background job ignores SIGINT and SIGQUIT). */
                for (int sig = 1; sig < NSIG; sig++)
                        if (sig != SIGKILL && sig != SIGSTOP)
                                (void) signal(sig, SIG_DFL);
                if (harness_fsize_limit > 0) {
                        struct rlimit rl = { harness_fsize_limit, RLIM_INFINITY };
                        signal(SIGXFSZ, SIG_IGN);
                        setrlimit(RLIMIT_FSIZE, &rl);
                }
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                if (notify_path)
                        setenv("NOTIFY_SOCKET", notify_path, 1);
                else
                        unsetenv("NOTIFY_SOCKET");
                unsetenv("JOURNAL_STREAM");
                unsetenv("CREDENTIALS_DIRECTORY");
                for (size_t i = 0; harness_child_env && harness_child_env[i]; i++)
                        putenv((char *) harness_child_env[i]);
                execvp(argv[0], (char *const *) argv);
                _exit(127);
        }
        return pid;
}

static void wait_notify(NotifySocket *ns, pid_t pid, const char *what, const char *log, unsigned *ret_port,
                        char *notify_log, size_t notify_loglen) {
        usec_t deadline = clock_now() + HARNESS_START_TIMEOUT_SEC * USEC_PER_SEC;
        int r;

        r = notify_wait_ready(ns, deadline, ret_port, notify_log, notify_loglen);
        if (r < 0) {
                char *l = harness_read_file(log);
                int status;
                pid_t w = waitpid(pid, &status, WNOHANG);
                ck_abort_msg("%s did not signal READY=1 (%s); %s; its log:\n%s", what, strerror(-r),
                             w == pid ? "it exited" : "it is still running", l ? l : "(none)");
        }
        ck_assert_msg(*ret_port > 0 || harness_socket_only, "%s gave no X_LISTEN_PORT", what);
}

void sim_start(Sim *s, const char *const *extra_args) {
        const char *argv[48];
        NotifySocket ns;
        size_t n = 0;

        memset(s, 0, sizeof(*s));
        harness_mkdtemp(s->dir, sizeof(s->dir), "visier-sim-test");
        snprintf(s->log, sizeof(s->log), "%s/sim.log", s->dir);
        snprintf(s->username, sizeof(s->username), "api-user-test");
        harness_random_hex(s->apikey, 20);
        harness_random_hex(s->password, 20);
        snprintf(s->apikey_file, sizeof(s->apikey_file), "%s/apikey", s->dir);
        snprintf(s->password_file, sizeof(s->password_file), "%s/password", s->dir);
        harness_write_file(s->apikey_file, s->apikey, 0600);
        harness_write_file(s->password_file, s->password, 0600);

        argv[n++] = env_or("VISIER_SIM_BIN", "./visier-sim");
        argv[n++] = "--listen";
        argv[n++] = "127.0.0.1";
        argv[n++] = "--port";
        argv[n++] = "0";
        argv[n++] = "--username";
        argv[n++] = s->username;
        argv[n++] = "--apikey-file";
        argv[n++] = s->apikey_file;
        argv[n++] = "--password-file";
        argv[n++] = s->password_file;
        for (size_t i = 0; extra_args && extra_args[i] && n < sizeof(argv) / sizeof(argv[0]) - 1; i++)
                argv[n++] = extra_args[i];
        argv[n] = NULL;

        ck_assert_int_eq(notify_socket_open(&ns), 0);
        s->pid = harness_spawn(argv, s->log, ns.path);
        wait_notify(&ns, s->pid, "visier-sim", s->log, &s->port, NULL, 0);
        notify_socket_close(&ns);
}

/* Sanitizers write their reports to the program's stderr, which is its log. ThreadSanitizer
 * lets a program run on after a race and only changes its exit status at the end, which a
 * SIGKILL (visierd_kill) or an unchecked stop (the sim) would lose: so a program's log is read
 * whenever it stops, and any report there fails the test, with the log copied to the test's
 * own output (its .log file under make check). `what` names the text, e.g. "visierd's log". */
static void check_no_sanitizer_report(const char *what, const char *where, const char *text) {
        bool found = text && strstr(text, "Sanitizer:");

        if (found)
                fprintf(stderr, "---- %s (%s) ----\n%s\n---- end of %s ----\n", what, where, text, what);
        ck_assert_msg(!found, "a sanitizer reported an error in %s (%s); it is copied to this test's output",
                      what, where);
}

static void check_log(const char *what, const char *log) {
        char *l = harness_read_file(log);

        check_no_sanitizer_report(what, log, l); /* a failure ends the test here, l unfreed */
        free(l);
}

static int stop_pid(pid_t *pid) {
        int status = 0;

        if (*pid <= 0)
                return 0;
        kill(*pid, SIGTERM);
        for (int i = 0; i < 200; i++) {
                if (waitpid(*pid, &status, WNOHANG) == *pid) {
                        *pid = 0;
                        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
                }
                clock_sleep(50 * USEC_PER_MSEC);
        }
        kill(*pid, SIGKILL);
        waitpid(*pid, &status, 0);
        *pid = 0;
        return -1;
}

void sim_stop(Sim *s) {
        stop_pid(&s->pid);
        if (s->log[0])
                check_log("visier-sim's log", s->log);
}

char *sim_url(const Sim *s, const char *path) {
        char *u;
        ck_assert_int_ge(asprintf(&u, "http://127.0.0.1:%u%s", s->port, path), 0);
        return u;
}

static json_t *control(const Sim *s, const char *method, const char *path, const char *json) {
        const char *headers[] = { "Content-Type: application/json", NULL };
        char *url = sim_url(s, path);
        HttpResult r;
        json_t *j;

        http_request(method, url, headers, json, 10000, &r);
        ck_assert_msg(r.status == 200, "%s %s answered %ld: %s", method, path, r.status, r.body ? r.body : "");
        j = json_loadb(r.body, r.len, 0, NULL);
        ck_assert_msg(j, "%s %s: not JSON", method, path);
        http_result_done(&r);
        free(url);
        return j;
}

json_t *sim_control_get(const Sim *s, const char *path) {
        return control(s, "GET", path, NULL);
}

json_t *sim_control_post(const Sim *s, const char *path, const char *json) {
        return control(s, "POST", path, json ? json : "{}");
}

long long sim_counter(const Sim *s, const char *name) {
        json_t *j = sim_control_get(s, "/_sim/counters");
        json_t *v = json_object_get(j, name);
        long long n = json_is_integer(v) ? json_integer_value(v) : -1;

        json_decref(j);
        return n;
}

long long sim_calls(const Sim *s, const char *path) {
        json_t *j = sim_control_get(s, "/_sim/counters");
        json_t *v = json_object_get(json_object_get(j, "calls"), path);
        long long n = json_is_integer(v) ? json_integer_value(v) : 0;

        json_decref(j);
        return n;
}

char *sim_login(const Sim *s) {
        char *url = sim_url(s, "/v1/admin/visierSecureToken"), *body, *apikey_h, *token;
        const char *headers[3];
        HttpResult r;

        ck_assert_int_ge(asprintf(&body, "username=%s&password=%s", s->username, s->password), 0);
        ck_assert_int_ge(asprintf(&apikey_h, "apikey: %s", s->apikey), 0);
        headers[0] = apikey_h;
        headers[1] = "Content-Type: application/x-www-form-urlencoded";
        headers[2] = NULL;
        http_request("POST", url, headers, body, 10000, &r);
        ck_assert_msg(r.status == 200, "direct login answered %ld", r.status);
        token = strndup(r.body, r.len);
        http_result_done(&r);
        free(url);
        free(body);
        free(apikey_h);
        return token;
}

void sim_api(const Sim *s, const char *token, const char *method, const char *path, const char *body, HttpResult *ret) {
        char *u = sim_url(s, path), *cookie, *apikey;
        const char *headers[4];

        ck_assert_int_ge(asprintf(&cookie, "Cookie: VisierASIDToken=%s", token), 0);
        ck_assert_int_ge(asprintf(&apikey, "apikey: %s", s->apikey), 0);
        headers[0] = cookie;
        headers[1] = apikey;
        headers[2] = "Content-Type: application/json";
        headers[3] = NULL;
        http_request(method, u, headers, body, 60000, ret);
        free(cookie);
        free(apikey);
        free(u);
}

char *harness_raw_exchange(unsigned port, const char *request, unsigned timeout_s) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        usec_t deadline = clock_now() + timeout_s * USEC_PER_SEC;
        size_t len = 0, n = strlen(request);
        char *out = NULL;
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        ck_assert_int_eq(send(fd, request, n, MSG_NOSIGNAL), (ssize_t) n);
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char buf[4096];
                ssize_t k;

                ck_assert_msg(clock_now() < deadline, "no whole answer within %u s", timeout_s);
                if (poll(&p, 1, 1000) <= 0)
                        continue;
                k = recv(fd, buf, sizeof(buf), 0);
                if (k <= 0)
                        break;
                out = realloc(out, len + (size_t) k + 1);
                ck_assert_ptr_nonnull(out);
                memcpy(out + len, buf, (size_t) k);
                len += (size_t) k;
                out[len] = '\0';
        }
        close(fd);
        ck_assert_msg(out, "the connection was closed without an answer");
        return out;
}

char *visierd_signin(const Visierd *d, const char *username, const char *password) {
        char *url = visierd_url(d, "/v1/admin/visierSecureToken"), *body, *token;
        const char *headers[] = { "Content-Type: application/x-www-form-urlencoded", NULL };
        HttpResult r;

        ck_assert_int_ge(asprintf(&body, "username=%s&password=%s", username, password), 0);
        http_request("POST", url, headers, body, 10000, &r);
        ck_assert_msg(r.status == 200, "local sign-in answered %ld: %s", r.status, r.body);
        ck_assert_str_eq(r.content_type, "text/plain");
        token = strndup(r.body, r.len);
        http_result_done(&r);
        free(url);
        free(body);
        return token;
}

void visierd_start(Visierd *d, const Sim *s, const char *extra_visier, const char *extra_tail) {
        visierd_write_config(d, s, extra_visier, extra_tail);
        visierd_restart(d);
}

void visierd_write_config(Visierd *d, const Sim *s, const char *extra_visier, const char *extra_tail) {
        visierd_write_config_db(d, s, NULL, extra_visier, extra_tail);
}

static void write_config(Visierd *d, const Sim *s, const char *database, const char *url, const char *extra_visier,
                         const char *extra_tail);

void visierd_write_config_db(Visierd *d, const Sim *s, const char *database, const char *extra_visier,
                             const char *extra_tail) {
        write_config(d, s, database, NULL, extra_visier, extra_tail);
}

void visierd_write_config_url(Visierd *d, const Sim *s, const char *url, const char *extra_visier,
                              const char *extra_tail) {
        write_config(d, s, NULL, url, extra_visier, extra_tail);
}

static void write_config(Visierd *d, const Sim *s, const char *database, const char *url, const char *extra_visier,
                         const char *extra_tail) {
        char *conf, db[256];

        memset(d, 0, sizeof(*d));
        harness_mkdtemp(d->dir, sizeof(d->dir), "visierd-test");
        snprintf(d->log, sizeof(d->log), "%s/visierd.log", d->dir);
        snprintf(d->config, sizeof(d->config), "%s/visierd.conf", d->dir);
        if (database)
                ck_assert_msg(snprintf(db, sizeof(db), "%s", database) < (int) sizeof(db), "database path too long");
        else
                snprintf(db, sizeof(db), "%s/visierd.db", d->dir);
        if (url)
                ck_assert_int_lt(snprintf(d->store_url, sizeof(d->store_url), "%s", url), (int) sizeof(d->store_url));
        else if (!database && store_pg_on)
                store_pg_database(d->store_url, sizeof(d->store_url));
        ck_assert_int_ge(asprintf(&conf,
                                  "[visier]\nbase_url = http://127.0.0.1:%u\nusername = %s\n"
                                  "apikey_file = %s\npassword_file = %s\n%s\n"
                                  "[listen]\naddress = %s\nport = 0\n"
                                  "[store]\n%s = %s\n"
                                  /* visier-sim publishes in well under a second unless a test
                                   * says otherwise (publish_ms); tests that do set their own. */
                                  "[jobs]\npublish_settle = 1\n"
                                  /* Suites that follow jobs get the 202 at once; the tests of
                                   * the Visier-shaped answer (test-answers) set their own. */
                                  "answer_wait = 0\n"
                                  /* Suites that count the calls Visier sees read through to it;
                                   * the cache's own tests turn it on. */
                                  "[cache]\nmax_bytes = 0\n"
                                  /* On PostgreSQL there is no database file to put them beside. */
                                  "%s%s%s%s\n",
                                  s->port, s->username, s->apikey_file, s->password_file,
                                  extra_visier ? extra_visier : "", harness_listen_address,
                                  d->store_url[0] ? "url" : "database", d->store_url[0] ? d->store_url : db,
                                  d->store_url[0] ? "[exports]\nresults = " : "", d->store_url[0] ? d->dir : "",
                                  d->store_url[0] ? "/exports\n" : "",
                                  extra_tail ? extra_tail : ""),
                         0);
        harness_write_file(d->config, conf, 0644);
        free(conf);
}

void visierd_restart(Visierd *d) {
        const char *argv[4];
        NotifySocket ns;

        argv[0] = env_or("VISIERD_BIN", "./visierd");
        argv[1] = "--config";
        argv[2] = d->config;
        argv[3] = NULL;
        ck_assert_int_eq(notify_socket_open(&ns), 0);
        d->notify_log[0] = '\0';
        d->pid = harness_spawn(argv, d->log, ns.path);
        wait_notify(&ns, d->pid, "visierd", d->log, &d->port, d->notify_log, sizeof(d->notify_log));
        notify_socket_close(&ns);
}

void visierd_kill(Visierd *d) {
        if (d->pid <= 0)
                return;
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
        check_log("visierd's log", d->log);
}

void visierd_wait_ready(const Visierd *d) {
        usec_t deadline = clock_now() + HARNESS_START_TIMEOUT_SEC * USEC_PER_SEC;
        char *url = visierd_url(d, "/readyz");

        for (;;) {
                HttpResult r;
                char last[512];

                http_request("GET", url, NULL, NULL, 2000, &r);
                if (r.status == 200) {
                        http_result_done(&r);
                        break;
                }
                snprintf(last, sizeof(last), "%ld %.*s", r.status, (int) (r.len < 400 ? r.len : 400), r.body ? r.body : "");
                http_result_done(&r);
                ck_assert_msg(clock_now() < deadline, "visierd did not become ready (last /readyz: %s)", last);
                clock_sleep(20 * USEC_PER_MSEC); /* probe interval, not a readiness guess */
        }
        free(url);
}

int visierd_stop(Visierd *d) {
        int r = stop_pid(&d->pid);

        if (d->log[0])
                check_log("visierd's log", d->log);
        return r;
}

char *visierd_url(const Visierd *d, const char *path) {
        char *u;
        ck_assert_int_ge(asprintf(&u, "http://%s:%u%s", harness_listen_address, d->port, path), 0);
        return u;
}

size_t harness_body_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        HttpResult *r = userdata;
        size_t n = size * nmemb;
        char *b = realloc(r->body, r->len + n + 1);

        if (!b)
                return 0;
        memcpy(b + r->len, ptr, n);
        r->body = b;
        r->len += n;
        r->body[r->len] = '\0';
        return n;
}

void http_request(const char *method, const char *url, const char *const *headers, const char *body,
                  long timeout_ms, HttpResult *ret) {
        CURL *h = curl_easy_init();

        ck_assert(h);
        http_request_on(h, method, url, headers, body, 0, timeout_ms, ret);
        curl_easy_cleanup(h);
}

void http_request_on(CURL *h, const char *method, const char *url, const char *const *headers, const char *body,
                     size_t body_len, long timeout_ms, HttpResult *ret) {
        struct curl_slist *l = NULL;
        char *ct = NULL;

        memset(ret, 0, sizeof(*ret));
        if (!h) {
                ret->curl_error = CURLE_FAILED_INIT;
                ret->body = calloc(1, 1);
                return;
        }
        curl_easy_reset(h); /* options only: the connection cache stays */
        {
                bool typed = false;

                for (size_t i = 0; headers && headers[i]; i++) {
                        l = curl_slist_append(l, headers[i]);
                        typed |= strncasecmp(headers[i], "Content-Type:", 13) == 0;
                }
                /* A body is JSON, as Visier's clients send it, unless the caller says otherwise
                 * (libcurl would label it a form). */
                if (body && !typed)
                        l = curl_slist_append(l, "Content-Type: application/json");
        }
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, harness_body_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, ret);
        if (strcmp(method, "GET") != 0)
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (body) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) (body_len ? body_len : strlen(body)));
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        }
        ret->curl_error = (int) curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->status);
        if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
                ret->content_type = strdup(ct);
        if (!ret->body)
                ret->body = calloc(1, 1);
        curl_slist_free_all(l);
}

void http_result_done(HttpResult *r) {
        free(r->body);
        free(r->content_type);
        memset(r, 0, sizeof(*r));
}

json_t *http_get_json(const char *url, long *ret_status) {
        HttpResult r;
        json_t *j;

        http_request("GET", url, NULL, NULL, 30000, &r);
        ck_assert_msg(r.curl_error == 0, "GET %s: %s", url, curl_easy_strerror((CURLcode) r.curl_error));
        j = json_loadb(r.body, r.len, 0, NULL);
        ck_assert_msg(j, "GET %s answered %ld with non-JSON: %s", url, r.status, r.body);
        if (ret_status)
                *ret_status = r.status;
        http_result_done(&r);
        return j;
}

int harness_env_u64(const char *name, uint64_t fallback, uint64_t *ret) {
        const char *v = getenv(name);
        unsigned long long n;
        char *end;

        if (!v || !*v) {
                *ret = fallback;
                return 0;
        }
        if (*v < '0' || *v > '9')
                return -EINVAL;
        errno = 0;
        n = strtoull(v, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        *ret = n;
        return 0;
}

int harness_run(const char *const *argv, char **ret_output) {
        char dir[128], log[192];
        int status;
        pid_t pid;

        harness_mkdtemp(dir, sizeof(dir), "visierd-run");
        snprintf(log, sizeof(log), "%s/out", dir);
        pid = harness_spawn(argv, log, NULL);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        *ret_output = harness_read_file(log);
        if (!*ret_output)
                *ret_output = strdup("");
        harness_rmtree(dir);
        check_no_sanitizer_report("the output", argv[0], *ret_output);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void harness_teardown(Sim *s, Visierd *d) {
        /* A clean exit on SIGTERM (under the sanitizers: no leak, no error at exit). */
        if (d->pid > 0)
                ck_assert_int_eq(visierd_stop(d), 0);
        sim_stop(s);
        if (d->dir[0])
                harness_rmtree(d->dir);
        if (s->dir[0])
                harness_rmtree(s->dir);
        memset(d, 0, sizeof(*d));
        memset(s, 0, sizeof(*s));
        harness_listen_address = "127.0.0.1";
}

long visierd_call(const Visierd *d, const char *method, const char *path, const char *const *headers, const char *body,
                  char **ret_body) {
        char *u = visierd_url(d, path);
        HttpResult r;
        long status;

        http_request(method, u, headers, body, 20000, &r);
        free(u);
        status = r.status;
        if (ret_body) {
                *ret_body = strdup(r.body);
                ck_assert_ptr_nonnull(*ret_body);
        }
        http_result_done(&r);
        return status;
}

json_t *visierd_request_json(const Visierd *d, const char *method, const char *path, const char *body,
                             const char *const *headers, long *ret_status) {
        char *u = visierd_url(d, path);
        HttpResult r;
        json_t *j;

        http_request(method, u, headers, body, 60000, &r);
        ck_assert_msg(r.curl_error == 0, "%s %s: transport error %d", method, path, r.curl_error);
        j = json_loadb(r.body, r.len, 0, NULL);
        ck_assert_msg(j, "%s %s answered %ld with non-JSON: %s", method, path, r.status, r.body);
        *ret_status = r.status;
        http_result_done(&r);
        free(u);
        return j;
}

unsigned visierd_log_count(const Visierd *d, const char *needle) {
        char *text = harness_read_file(d->log);
        unsigned n = 0;

        for (const char *p = text; p && (p = strstr(p, needle)); p += strlen(needle))
                n++;
        free(text);
        return n;
}

void visierd_wait_drained(const Visierd *d, unsigned seconds) {
        usec_t deadline = clock_now() + (usec_t) seconds * USEC_PER_SEC;
        char *u = visierd_url(d, "/status");

        for (;;) {
                long status;
                json_t *j = http_get_json(u, &status), *jobs = json_object_get(j, "jobs");
                long long pending = json_integer_value(json_object_get(jobs, "queued")) +
                                    json_integer_value(json_object_get(jobs, "running"));
                json_decref(j);
                if (pending == 0)
                        break;
                ck_assert_msg(clock_now() < deadline, "%lld jobs still pending", pending);
                clock_sleep(50 * USEC_PER_MSEC);
        }
        free(u);
}

int sim_count_named(json_t *dump, const char *name) {
        json_t *p;
        size_t i;
        int n = 0;

        json_array_foreach(json_object_get(dump, "permissions"), i, p)
                n += streq(json_string_value(json_object_get(p, "displayName")) ?: "", name);
        return n;
}

json_t *visierd_job(const Visierd *d, long long id) {
        char path[64], *u;
        long status;
        json_t *j;

        snprintf(path, sizeof(path), "/jobs/%lld", id);
        u = visierd_url(d, path);
        j = http_get_json(u, &status);
        ck_assert_int_eq(status, 200);
        free(u);
        return j;
}

bool readyz_says(json_t *readyz, const char *needle) {
        json_t *reason;
        size_t i;

        json_array_foreach(json_object_get(readyz, "reasons"), i, reason)
                if (strstr(json_string_value(reason) ?: "", needle))
                        return true;
        return false;
}
