/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: visierd as systemd runs it. The notify protocol (READY=1, STATUS=, WATCHDOG=1
 * at the watchdog's half period, RELOADING=1, STOPPING=1), socket activation on a TCP port
 * and a unix socket (systemd-socket-activate), and reload on SIGHUP.
 */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "clock.h"
#include "harness.h"
#include "macro.h"
#include "notify.h"

static Sim sim;
static Visierd vd;
static NotifySocket ns = { .fd = -1 };

static void teardown(void) {
        if (vd.pid > 0) {
                kill(vd.pid, SIGKILL);
                waitpid(vd.pid, NULL, 0);
        }
        sim_stop(&sim);
        notify_socket_close(&ns);
        if (vd.dir[0])
                harness_rmtree(vd.dir);
        if (sim.dir[0])
                harness_rmtree(sim.dir);
        memset(&vd, 0, sizeof(vd));
        memset(&sim, 0, sizeof(sim));
        harness_child_env = NULL;
}

static bool has_line(const char *msg, const char *prefix) {
        size_t n = strlen(prefix);

        for (const char *p = msg; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
                if (strncmp(p, prefix, n) == 0)
                        return true;
        return false;
}

/* Receive datagrams until one has a line starting with `want`; fail after timeout_sec. */
static void expect_notify(const char *want, unsigned timeout_sec, char *ret, size_t retlen) {
        usec_t deadline = clock_now() + timeout_sec * USEC_PER_SEC;
        char buf[4096];

        for (;;) {
                int r = notify_receive(&ns, deadline, buf, sizeof(buf));
                ck_assert_msg(r == 0, "no %s from visierd within %u s", want, timeout_sec);
                if (has_line(buf, want)) {
                        if (ret)
                                snprintf(ret, retlen, "%s", buf);
                        return;
                }
        }
}

/* Start visierd with our own notify socket kept open for the whole test. */
static void launch(const char *const *argv) {
        ck_assert_int_eq(notify_socket_open(&ns), 0);
        vd.pid = harness_spawn(argv, vd.log, ns.path);
}

static const char *const *visierd_argv(void) {
        static const char *argv[4];

        argv[0] = getenv("VISIERD_BIN");
        argv[1] = "--config";
        argv[2] = vd.config;
        argv[3] = NULL;
        return argv;
}

static int wait_exit(pid_t pid) {
        int status = 0;

        for (int i = 0; i < 400; i++) {
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
                clock_sleep(25 * USEC_PER_MSEC);
        }
        return -2;
}

START_TEST(test_notify_watchdog_and_stop) {
        static const char *const env[] = { "WATCHDOG_USEC=2000000", NULL };
        char msg[4096];
        usec_t last = 0, max_gap = 0, end;
        int keepalives = 0;

        sim_start(&sim, NULL);
        visierd_write_config(&vd, &sim, NULL, NULL);
        harness_child_env = env;
        launch(visierd_argv());
        expect_notify("READY=1", 20, msg, sizeof(msg));
        ck_assert_msg(has_line(msg, "STATUS="), "READY=1 came without STATUS=: %s", msg);

        /* Keep-alives at half the watchdog period, from the event loop. */
        end = clock_now() + 5 * USEC_PER_SEC;
        while (clock_now() < end) {
                char buf[4096];
                if (notify_receive(&ns, end, buf, sizeof(buf)) < 0)
                        break;
                if (!has_line(buf, "WATCHDOG=1"))
                        continue;
                if (last && clock_now() - last > max_gap)
                        max_gap = clock_now() - last;
                last = clock_now();
                keepalives++;
        }
        fprintf(stderr, "watchdog: %d keep-alives in 5 s, longest gap %llu ms\n", keepalives,
                (unsigned long long) (max_gap / 1000));
        ck_assert_int_ge(keepalives, 3);
        ck_assert_msg(max_gap < 2000 * USEC_PER_MSEC, "a keep-alive gap of %llu ms exceeds WATCHDOG_USEC",
                      (unsigned long long) (max_gap / 1000));

        kill(vd.pid, SIGTERM);
        expect_notify("STOPPING=1", 20, NULL, 0);
        ck_assert_int_eq(wait_exit(vd.pid), 0);
        vd.pid = 0;
}
END_TEST

static unsigned free_port(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &a, &len), 0);
        close(fd);
        return ntohs(a.sin_port);
}

static long get_status(const char *url, const char *unix_path, char **ret_body) {
        CURL *h = curl_easy_init();
        char *body = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&body, &len);
        long status = 0;

        curl_easy_setopt(h, CURLOPT_URL, url);
        if (unix_path)
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, unix_path);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
        if (curl_easy_perform(h) == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(h);
        fclose(f);
        if (ret_body)
                *ret_body = body;
        else
                free(body);
        return status;
}

/* Start visierd (vd's config) under systemd-socket-activate with listeners a and b (b may be
 * NULL); it starts visierd on the first connection. Debian's systemd package, which the
 * README's set-up installs, has the program: a missing one is a failure, never a silent pass. */
static void socket_activate(const char *a, const char *b) {
        const char *argv[12];
        size_t n = 0;

        if (access("/usr/bin/systemd-socket-activate", X_OK) != 0 && access("/bin/systemd-socket-activate", X_OK) != 0)
                ck_abort_msg("systemd-socket-activate is not installed (Debian's systemd package)");
        argv[n++] = "systemd-socket-activate";
        argv[n++] = "-l";
        argv[n++] = a;
        if (b) {
                argv[n++] = "-l";
                argv[n++] = b;
        }
        argv[n++] = "-E"; /* it passes on only the environment it is told to */
        argv[n++] = "NOTIFY_SOCKET";
        argv[n++] = getenv("VISIERD_BIN");
        argv[n++] = "--config";
        argv[n++] = vd.config;
        argv[n] = NULL;
        launch(argv);
}

START_TEST(test_socket_activation) {
        char tcp[64], sock[256], url[128], *body;
        unsigned port;

        sim_start(&sim, NULL);
        /* The configured listener must not be used: point it at a port nobody checks. */
        visierd_write_config(&vd, &sim, NULL, NULL);
        port = free_port();
        snprintf(tcp, sizeof(tcp), "127.0.0.1:%u", port);
        snprintf(sock, sizeof(sock), "%s/visierd.sock", vd.dir);
        socket_activate(tcp, sock);
        /* systemd-socket-activate starts visierd on the first connection. */
        for (int i = 0; i < 400 && access(sock, F_OK) != 0; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        snprintf(url, sizeof(url), "http://%s/healthz", tcp);
        ck_assert_int_eq(get_status(url, NULL, &body), 200);
        ck_assert_ptr_nonnull(strstr(body, "\"ok\""));
        free(body);
        ck_assert_int_eq(get_status("http://localhost/healthz", sock, &body), 200);
        free(body);
        expect_notify("READY=1", 20, NULL, 0);
        {
                char *log = harness_read_file(vd.log);
                ck_assert_msg(strstr(log, sock) && strstr(log, tcp), "visierd did not report both sockets: %s", log);
                free(log);
        }
        kill(vd.pid, SIGTERM);
        ck_assert_int_eq(wait_exit(vd.pid), 0);
        vd.pid = 0;
}
END_TEST

/* A dual-stack socket passed by systemd ([::]:PORT): an IPv4 client that reached it at
 * 127.0.0.53 names 127.0.0.53 in Host, and that is the address the connection came in on
 * (getsockname says ::ffff:127.0.0.53). */
START_TEST(test_dual_stack_socket_host) {
        char tcp[64], url[128], *body;
        unsigned port;

        sim_start(&sim, NULL);
        visierd_write_config(&vd, &sim, NULL, NULL);
        port = free_port();
        snprintf(tcp, sizeof(tcp), "[::]:%u", port);
        socket_activate(tcp, NULL);
        snprintf(url, sizeof(url), "http://127.0.0.53:%u/healthz", port);
        /* visierd starts on the first connection, once systemd-socket-activate listens. */
        for (usec_t deadline = clock_now() + 20 * USEC_PER_SEC;; clock_sleep(20 * USEC_PER_MSEC)) {
                long status = get_status(url, NULL, &body);

                if (status != 0) {
                        ck_assert_int_eq(status, 200);
                        break;
                }
                free(body);
                ck_assert_msg(clock_now() < deadline, "systemd-socket-activate did not listen on %s", tcp);
        }
        ck_assert_str_eq(body, "{\"status\":\"ok\"}");
        free(body);
        expect_notify("READY=1", 20, NULL, 0);
        snprintf(url, sizeof(url), "http://127.0.0.54:%u/healthz", port);
        ck_assert_int_eq(get_status(url, NULL, NULL), 200);
        kill(vd.pid, SIGTERM);
        ck_assert_int_eq(wait_exit(vd.pid), 0);
        vd.pid = 0;
}
END_TEST

START_TEST(test_reload) {
        char newpw[64], *log, *conf, *u;
        long long logins;
        HttpResult r;

        char ready[4096];

        sim_start(&sim, NULL);
        visierd_write_config(&vd, &sim, NULL, NULL);
        launch(visierd_argv());
        expect_notify("READY=1", 20, ready, sizeof(ready));
        ck_assert_ptr_nonnull(strstr(ready, "X_LISTEN_PORT="));
        vd.port = (unsigned) strtoul(strstr(ready, "X_LISTEN_PORT=") + strlen("X_LISTEN_PORT="), NULL, 10);
        visierd_wait_ready(&vd);
        ck_assert_int_eq(sim_counter(&sim, "logins"), 1);

        /* The password changes on both sides; the sim and visierd re-read it on SIGHUP. */
        harness_random_hex(newpw, 20);
        harness_write_file(sim.password_file, newpw, 0600);
        kill(sim.pid, SIGHUP);
        for (int i = 0; i < 400; i++) {
                log = harness_read_file(sim.log);
                bool done = log && strstr(log, "credentials re-read");
                free(log);
                if (done)
                        break;
                clock_sleep(10 * USEC_PER_MSEC);
        }
        kill(vd.pid, SIGHUP);
        expect_notify("RELOADING=1", 20, NULL, 0);
        expect_notify("READY=1", 20, NULL, 0);
        for (int i = 0; i < 1000 && sim_counter(&sim, "logins") < 2; i++)
                clock_sleep(10 * USEC_PER_MSEC);
        logins = sim_counter(&sim, "logins");
        ck_assert_int_eq(logins, 2); /* a login with the new password, accepted */
        ck_assert_int_eq(sim_counter(&sim, "login_failures"), 0);

        /* An invalid configuration is rejected and the old one keeps serving. */
        conf = harness_read_file(vd.config);
        harness_write_file(vd.config, "[visier]\nbase_url = ftp://nowhere\nbogus_key = 1\n", 0644);
        kill(vd.pid, SIGHUP);
        expect_notify("RELOADING=1", 20, NULL, 0);
        expect_notify("READY=1", 20, NULL, 0);
        u = visierd_url(&vd, "/v1/admin/capabilities");
        http_request("GET", u, NULL, NULL, 10000, &r);
        ck_assert_int_eq(r.status, 200);
        http_result_done(&r);
        free(u);
        log = harness_read_file(vd.log);
        ck_assert_ptr_nonnull(strstr(log, "unknown key 'bogus_key'"));
        ck_assert_ptr_nonnull(strstr(log, "configuration reload rejected"));
        ck_assert_ptr_null(strstr(log, newpw));
        free(log);
        harness_write_file(vd.config, conf, 0644);
        free(conf);

        kill(vd.pid, SIGTERM);
        ck_assert_int_eq(wait_exit(vd.pid), 0);
        vd.pid = 0;
}
END_TEST

int main(void) {
        Suite *s = suite_create("systemd");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_notify_watchdog_and_stop);
        tcase_add_test(tc, test_socket_activation);
        tcase_add_test(tc, test_dual_stack_socket_host);
        tcase_add_test(tc, test_reload);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        curl_global_cleanup();
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
