/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the configuration table, parser, validation and secret loading. */
#include <check.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "config.h"
#include "harness.h"

static char dir[128];

static void setup(void) {
        harness_mkdtemp(dir, sizeof(dir), "check-config");
        unsetenv("CREDENTIALS_DIRECTORY");
}

static void teardown(void) {
        harness_rmtree(dir);
}

static bool errors_contain(const ConfigErrors *e, const char *needle) {
        for (size_t i = 0; i < e->n; i++)
                if (strstr(e->messages[i], needle))
                        return true;
        return false;
}

static const char *const minimal = "[visier]\nbase_url = https://example.api.visier.io\nusername = svc\n";

START_TEST(test_defaults_from_table) {
        _cleanup_(config_freep) Config *c = NULL;
        ConfigErrors e = {};

        ck_assert_int_eq(config_load_string("t.conf", minimal, &c, &e), 0);
        ck_assert_uint_eq(e.n, 0);
        ck_assert_uint_eq(c->token_lifetime, 3600);
        ck_assert_uint_eq(c->refresh_margin, 300);
        ck_assert_uint_eq(c->listen_port, 8420);
        ck_assert_str_eq(c->listen_address, "127.0.0.1");
        ck_assert_uint_eq(c->rate_limit_minute, 100);
        ck_assert_uint_eq(c->rate_limit_hour, 6000);
        ck_assert_str_eq(c->username, "svc");
        /* Every key with a default in the table parses to that default. */
        for (const ConfigKey *k = config_keys; k->name; k++)
                ck_assert_ptr_nonnull(k->help);
}
END_TEST

START_TEST(test_unknown_key_has_line) {
        _cleanup_(config_freep) Config *c = NULL;
        ConfigErrors e = {};
        const char *text = "[visier]\nbase_url = https://x.api.visier.io\nusername = svc\nbogus = 1\n[nope]\na = b\n";

        ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), -EINVAL);
        ck_assert_ptr_null(c);
        ck_assert(errors_contain(&e, "t.conf:4: unknown key 'bogus' in section [visier]"));
        ck_assert(errors_contain(&e, "t.conf:6: unknown section [nope]"));
        config_errors_clear(&e);
}
END_TEST

START_TEST(test_bounds_and_numbers) {
        _cleanup_(config_freep) Config *c = NULL;
        ConfigErrors e = {};
        const char *text = "[visier]\nbase_url = https://x.api.visier.io\nusername = svc\n"
                           "token_lifetime = 1\nconnect_timeout = ten\n[listen]\nport = 70000\n";

        ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), -EINVAL);
        ck_assert(errors_contain(&e, "t.conf:4: [visier] token_lifetime: 1 is out of range (2 to 86400)"));
        ck_assert(errors_contain(&e, "t.conf:5: [visier] connect_timeout: 'ten' is not a whole number"));
        ck_assert(errors_contain(&e, "t.conf:7: [listen] port: 70000 is out of range"));
        config_errors_clear(&e);
}
END_TEST

/* String values are UTF-8: an invalid byte is refused, naming the key and the line (the value
 * would make /status and the job listings invalid JSON, and go to Visier in the login form),
 * and the value is not echoed. Valid non-ASCII text is kept, and so are control characters,
 * which JSON escapes (test-loop's test_status_text_escapes). */
START_TEST(test_string_values_are_text) {
        static const char *const bad[] = {
                "b\xe9ob",         /* Latin-1 */
                "svc\xc0\xaf",     /* an overlong '/' */
                "svc\xed\xa0\x80", /* a surrogate */
                "svc\xe2\x82",     /* cut short */
                "svc\xf4\x90\x80\x80", /* past U+10FFFF */
                "svc\x80x",        /* a lone continuation byte */
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};
                char *text;

                ck_assert_int_ge(asprintf(&text, "[visier]\nbase_url = https://x.api.visier.io\nusername = %s\n", bad[i]),
                                 0);
                ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), -EINVAL);
                ck_assert_msg(errors_contain(&e, "t.conf:3: [visier] username: the value is not valid UTF-8"),
                              "value %zu was not refused as it should be", i);
                for (size_t k = 0; k < e.n; k++)
                        ck_assert_ptr_null(strstr(e.messages[k], "svc"));
                config_errors_clear(&e);
                free(text);
        }
        {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                ck_assert_int_eq(config_load_string("t.conf",
                                                    "[visier]\nbase_url = https://x.api.visier.io\nusername = Zoë-svc\n",
                                                    &c, &e),
                                 0);
                ck_assert_str_eq(c->username, "Zoë-svc");
        }
}
END_TEST

/* base_url is scheme://host[:port]: a user name or password (or a host hidden behind one) is
 * refused without the value being echoed, and so is a fragment. */
START_TEST(test_base_url_origin_only) {
        static const struct {
                const char *url, *error;
        } bad[] = {
                { "http://user:S3cret@127.0.0.1:9", "must not carry a user name or password" },
                { "https://example.api.visier.io@evil.example", "must not carry a user name or password" },
                { "https://S3cret@x.api.visier.io", "must not carry a user name or password" },
                { "https://x.api.visier.io/#S3cret", "must not have a fragment" },
                { "https://x.api.visier.io/v1", "without a path" },
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};
                char text[256];

                snprintf(text, sizeof(text), "[visier]\nbase_url = %s\nusername = u\n", bad[i].url);
                ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), -EINVAL);
                ck_assert_msg(errors_contain(&e, bad[i].error), "%s: no error '%s'", bad[i].url, bad[i].error);
                if (strchr(bad[i].url, '@'))
                        for (size_t k = 0; k < e.n; k++)
                                ck_assert_msg(!strstr(e.messages[k], "S3cret") && !strstr(e.messages[k], "evil"),
                                              "the value was echoed: %s", e.messages[k]);
                config_errors_clear(&e);
        }
}
END_TEST

/* [visier] proxy: http(s)://host[:port] only, never for a plain-http base_url (the proxy would
 * read the API key and the password), credentials never echoed; unset means no proxy. */
START_TEST(test_proxy_key) {
        static const struct {
                const char *base, *proxy, *error;
        } cases[] = {
                { "https://x.api.visier.io", "http://proxy.internal:3128", NULL },
                { "https://x.api.visier.io", "https://[::1]:3128/", NULL },
                { "https://x.api.visier.io", "", NULL },
                { "http://127.0.0.1:9", "http://127.0.0.1:3128", "only for an https:// base_url" },
                { "https://x.api.visier.io", "http://u:S3cret@proxy.internal:3128", "must not carry a user name or password" },
                { "https://x.api.visier.io", "socks5://proxy.internal:1080", "scheme 'socks5' is not supported" },
                { "https://x.api.visier.io", "http://proxy.internal:3128/path", "give scheme://host[:port] only" },
                { "https://x.api.visier.io", "http://proxy.internal:3128/#S3cret@", "give scheme://host[:port] only" },
                { "https://x.api.visier.io", "proxy internal", "is not a URL" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};
                char text[256];

                snprintf(text, sizeof(text), "[visier]\nbase_url = %s\nusername = u\nproxy = %s\n", cases[i].base,
                         cases[i].proxy);
                if (!cases[i].error) {
                        ck_assert_msg(config_load_string("t.conf", text, &c, &e) == 0, "%s: %s", cases[i].proxy,
                                      e.n ? e.messages[0] : "");
                        continue;
                }
                ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), -EINVAL);
                ck_assert_msg(errors_contain(&e, cases[i].error), "%s: no error '%s'", cases[i].proxy, cases[i].error);
                for (size_t k = 0; k < e.n; k++)
                        ck_assert_msg(!strstr(e.messages[k], "S3cret"), "the value was echoed: %s", e.messages[k]);
                config_errors_clear(&e);
        }
}
END_TEST

/* [metrics] listen: ADDRESS:PORT, IPv6 bracketed, into metrics_address and metrics_port. */
START_TEST(test_metrics_listen_key) {
        static const struct {
                const char *value, *address, *error;
                int port;
        } cases[] = {
                { "127.0.0.1:9420", "127.0.0.1", NULL, 9420 },
                { "[::1]:0", "::1", NULL, 0 },
                { "0.0.0.0:9420", "0.0.0.0", NULL, 9420 },
                { "localhost:9420", NULL, "is not an IPv4 address or a bracketed IPv6 one", 0 },
                { "::1:9420", NULL, "is not an IPv4 address or a bracketed IPv6 one", 0 },
                { "127.0.0.1", NULL, "is not ADDRESS:PORT", 0 },
                { "[::1]9420", NULL, "is not ADDRESS:PORT", 0 },
                { "127.0.0.1:70000", NULL, "is not a port from 0 to 65535", 0 },
                { "127.0.0.1:-1", NULL, "is not a port from 0 to 65535", 0 },
                { "127.0.0.1:", NULL, "is not a port from 0 to 65535", 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};
                char text[256];

                snprintf(text, sizeof(text), "[visier]\nbase_url = http://127.0.0.1:9\nusername = u\n[metrics]\nlisten = %s\n",
                         cases[i].value);
                if (!cases[i].error) {
                        ck_assert_msg(config_load_string("t.conf", text, &c, &e) == 0, "%s: %s", cases[i].value,
                                      e.n ? e.messages[0] : "");
                        ck_assert_str_eq(c->metrics_address, cases[i].address);
                        ck_assert_int_eq(c->metrics_port, cases[i].port);
                        continue;
                }
                ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), -EINVAL);
                ck_assert_msg(errors_contain(&e, cases[i].error), "%s: no error '%s'", cases[i].value, cases[i].error);
                config_errors_clear(&e);
        }
        {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                ck_assert_int_eq(config_load_string("t.conf", "[visier]\nbase_url = http://127.0.0.1:9\nusername = u\n", &c, &e),
                                 0);
                ck_assert_int_eq(c->metrics_port, -1); /* none by default */
        }
}
END_TEST

START_TEST(test_validation) {
        _cleanup_(config_freep) Config *c = NULL;
        ConfigErrors e = {};
        const char *text = "[visier]\nbase_url = http://visier.example.com\ntoken_lifetime = 60\nrefresh_margin = 60\n"
                           "[listen]\naddress = 0.0.0.0\n[jobs]\npublish = drafts\n";

        ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), -EINVAL);
        ck_assert(errors_contain(&e, "t.conf: [jobs] publish: 'drafts' is not direct or project"));
        ck_assert(errors_contain(&e, "plain http:// is allowed only for loopback"));
        ck_assert(errors_contain(&e, "username is required"));
        ck_assert(errors_contain(&e, "refresh_margin (60 s) must be shorter than token_lifetime (60 s)"));
        ck_assert(errors_contain(&e, "0.0.0.0 is not a loopback address"));
        config_errors_clear(&e);

        ck_assert_int_eq(config_load_string("t.conf",
                                            "[visier]\nbase_url = http://127.0.0.1:9/\nusername = u\n"
                                            "[listen]\naddress = ::1\n",
                                            &c, &e),
                         0);
        ck_assert_uint_eq(e.n, 0);
}
END_TEST

static Config *load_with_files(const char *apikey_file, const char *password_file, ConfigErrors *e) {
        Config *c = NULL;
        char *text;

        ck_assert_int_ge(asprintf(&text, "%s%s%s%s%s%s%s", minimal, apikey_file ? "apikey_file = " : "",
                                  apikey_file ? apikey_file : "", apikey_file ? "\n" : "",
                                  password_file ? "password_file = " : "", password_file ? password_file : "",
                                  password_file ? "\n" : ""),
                         0);
        ck_assert_int_eq(config_load_string("t.conf", text, &c, e), 0);
        free(text);
        return c;
}

START_TEST(test_secret_files) {
        char key[192], pw[192], missing[192];
        _cleanup_(config_freep) Config *c = NULL;
        ConfigErrors e = {};

        snprintf(key, sizeof(key), "%s/key", dir);
        snprintf(pw, sizeof(pw), "%s/pw", dir);
        snprintf(missing, sizeof(missing), "%s/missing", dir);
        harness_write_file(key, "k3y-value\n", 0600);
        harness_write_file(pw, "pa55word", 0640);

        c = load_with_files(key, pw, &e);
        ck_assert_int_eq(config_load_secrets(c, &e), -EPERM);
        ck_assert(errors_contain(&e, "is accessible by group or others (mode 0640)"));
        /* The message names the file, never what is in it. */
        for (size_t i = 0; i < e.n; i++)
                ck_assert_ptr_null(strstr(e.messages[i], "pa55word"));
        config_errors_clear(&e);

        chmod(pw, 0400);
        ck_assert_int_eq(config_load_secrets(c, &e), 0);
        ck_assert_str_eq(c->apikey->data, "k3y-value"); /* trailing newline stripped */
        ck_assert_str_eq(c->password->data, "pa55word");
        config_free(c);

        c = load_with_files(missing, pw, &e);
        ck_assert_int_eq(config_load_secrets(c, &e), -ENOENT);
        ck_assert(errors_contain(&e, "cannot open secret file"));
        ck_assert(errors_contain(&e, "missing: No such file or directory"));
        config_errors_clear(&e);
}
END_TEST

/* What a secret file may not be: a FIFO (refused at once, where the old open waited forever),
 * a symbolic link, a file owned by another user, or one with a line break inside (it would be
 * sent as a second header line). None of the refusals shows the contents. */
START_TEST(test_secret_file_hazards) {
        char key[192], pw[192], fifo[192], link[192], theirs[192], injected[192];
        static const struct {
                const char *which, *error;
                int r;
        } cases[] = {
                { "fifo", "is not a regular file", -EINVAL },
                { "link", "is a symbolic link", -ELOOP },
                { "theirs", "is owned by uid 65534, neither root nor the user visierd runs as", -EPERM },
                { "injected", "holds a control character (a line break or tab?) at byte 4", -EINVAL },
        };

        snprintf(key, sizeof(key), "%s/key", dir);
        snprintf(pw, sizeof(pw), "%s/pw", dir);
        snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
        snprintf(link, sizeof(link), "%s/link", dir);
        snprintf(theirs, sizeof(theirs), "%s/theirs", dir);
        snprintf(injected, sizeof(injected), "%s/injected", dir);
        harness_write_file(key, "k3y-value\n", 0600);
        harness_write_file(pw, "pa55word", 0600);
        ck_assert_int_eq(mkfifo(fifo, 0600), 0);
        ck_assert_int_eq(symlink(key, link), 0);
        harness_write_file(theirs, "k3y-value", 0600);
        harness_write_file(injected, "key\nX-Injected: yes\n", 0600);
        if (geteuid() == 0)
                ck_assert_int_eq(chown(theirs, 65534, 65534), 0);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};
                char path[192];

                if (streq(cases[i].which, "theirs") && geteuid() != 0) {
                        /* Only root can give a file away; the other cases still run. */
                        fprintf(stderr, "SKIP: test_secret_file_hazards: the other-owner case needs root\n");
                        continue;
                }
                snprintf(path, sizeof(path), "%s/%s", dir, cases[i].which);
                c = load_with_files(path, pw, &e);
                ck_assert_int_eq(config_load_secrets(c, &e), cases[i].r);
                ck_assert_msg(errors_contain(&e, cases[i].error), "%s: no error '%s'", cases[i].which, cases[i].error);
                for (size_t k = 0; k < e.n; k++)
                        ck_assert_msg(!strstr(e.messages[k], "k3y") && !strstr(e.messages[k], "X-Injected"),
                                      "contents shown: %s", e.messages[k]);
                config_errors_clear(&e);
        }
}
END_TEST

/* A client token must be hard to guess: a 1-byte token, and a long one of one repeated
 * character, are refused (even with address = 0.0.0.0); a 64-hex-digit one passes. */
START_TEST(test_client_tokens_must_be_strong) {
        static const struct {
                const char *token;
                bool ok;
        } cases[] = {
                { "x", false },
                { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false },
                { "0123456789abcdef0123456789abcde", false }, /* 31 bytes */
                { "3f9a1c0d7e2b4a6f8c1d3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b", true },
        };
        char key[192], tok[192];

        snprintf(key, sizeof(key), "%s/key", dir);
        snprintf(tok, sizeof(tok), "%s/token", dir);
        harness_write_file(key, "k3y-value", 0600);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};
                char text[1024];

                harness_write_file(tok, cases[i].token, 0600);
                snprintf(text, sizeof(text),
                         "[visier]\nbase_url = https://x.api.visier.io\nusername = u\napikey_file = %s\npassword_file = %s\n"
                         "[listen]\naddress = 0.0.0.0\n[client ops]\ntoken_file = %s\nrole = read\n",
                         key, key, tok);
                ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), 0);
                ck_assert_int_eq(config_load_secrets(c, &e), cases[i].ok ? 0 : -EINVAL);
                if (!cases[i].ok) {
                        ck_assert_msg(errors_contain(&e, "a client token needs at least 32 bytes and 8 different characters"),
                                      "token %zu: no error", i);
                        for (size_t k = 0; strlen(cases[i].token) > 8 && k < e.n; k++)
                                ck_assert_msg(!strstr(e.messages[k], cases[i].token), "the token was shown: %s",
                                              e.messages[k]);
                }
                config_errors_clear(&e);
        }
}
END_TEST

START_TEST(test_credentials_directory) {
        _cleanup_(config_freep) Config *c = NULL;
        char p[192];
        ConfigErrors e = {};

        c = load_with_files(NULL, NULL, &e);
        ck_assert_int_lt(config_load_secrets(c, &e), 0);
        ck_assert(errors_contain(&e, "no systemd credential 'visier-apikey'"));
        config_errors_clear(&e);

        snprintf(p, sizeof(p), "%s/visier-apikey", dir);
        harness_write_file(p, "from-credential", 0400);
        snprintf(p, sizeof(p), "%s/visier-password", dir);
        harness_write_file(p, "pw-credential", 0400);
        setenv("CREDENTIALS_DIRECTORY", dir, 1);
        ck_assert_int_eq(config_load_secrets(c, &e), 0);
        ck_assert_str_eq(c->apikey->data, "from-credential");
        ck_assert_str_eq(c->password->data, "pw-credential");
}
END_TEST

/* The text of one configuration: minimal plus extra lines (lines 4 onwards). */
static int load_extra(const char *extra, Config **ret, ConfigErrors *e) {
        _cleanup_free_ char *text = NULL;

        ck_assert_int_ge(asprintf(&text, "%s%s", minimal, extra), 0);
        return config_load_string("t.conf", text, ret, e);
}

static void assert_not_shown(const ConfigErrors *e, const char *secret) {
        for (size_t i = 0; i < e->n; i++)
                ck_assert_msg(!strstr(e->messages[i], secret), "shown: %s", e->messages[i]);
}

/* [store] url turns fleet mode on, with the derived defaults of the [fleet] keys; it is shown
 * exactly as configured. */
START_TEST(test_store_url_fleet_defaults) {
        static const char *const urls[] = {
                "host=/run/postgresql dbname=visierd user=visierd",
                "postgresql://visierd@db.internal:5432/visierd?sslmode=verify-full&connect_timeout=3",
                "postgresql:///visierd?host=/run/postgresql",
        };
        char host[256] = "", node[300];

        ck_assert_int_eq(gethostname(host, sizeof(host) - 1), 0);
        snprintf(node, sizeof(node), "%s:%ld", host, (long) getpid());
        for (size_t i = 0; i < ELEMENTSOF(urls); i++) {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};
                char extra[256];

                snprintf(extra, sizeof(extra), "[store]\nurl = %s\n", urls[i]);
                ck_assert_msg(load_extra(extra, &c, &e) == 0, "%s: %s", urls[i], e.n ? e.messages[0] : "");
                ck_assert(config_fleet_mode(c));
                ck_assert_str_eq(c->store_url, urls[i]); /* byte for byte */
                ck_assert_str_eq(c->fleet_node, node);
                ck_assert_str_eq(c->fleet_tenant, "example.api.visier.io");
                ck_assert_uint_eq(c->fleet_lease_seconds, 15);
                ck_assert_uint_eq(c->fleet_renew_seconds, 5);
                ck_assert_ptr_null(c->store_password_file);
        }
        {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                /* Without url: not fleet mode, nothing derived. */
                ck_assert_int_eq(load_extra("", &c, &e), 0);
                ck_assert(!config_fleet_mode(c));
                ck_assert_ptr_null(c->fleet_node);
                ck_assert_ptr_null(c->fleet_tenant);
                ck_assert_uint_eq(c->fleet_renew_seconds, 0);
        }
        {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                ck_assert_int_eq(load_extra("[store]\nurl = host=db\n[fleet]\nnode = web-1:a\ntenant = acme\n"
                                            "lease_seconds = 3\n",
                                            &c, &e),
                                 0);
                ck_assert_str_eq(c->fleet_node, "web-1:a");
                ck_assert_str_eq(c->fleet_tenant, "acme");
                ck_assert_uint_eq(c->fleet_lease_seconds, 3);
                ck_assert_uint_eq(c->fleet_renew_seconds, 1);
        }
}
END_TEST

/* Each rule of [store] url, password_file and [fleet], with its exact message; a refused url is
 * never echoed (it may hold the password). */
START_TEST(test_store_url_rules) {
        static const struct {
                const char *extra, *error;
        } cases[] = {
                { "[store]\ndatabase = /var/lib/visierd/v.db\nurl = host=db\n",
                  "t.conf:6: [store] url and [store] database are mutually exclusive: database is a single visierd's "
                  "SQLite file, url the fleet's PostgreSQL" },
                { "[store]\nurl = host=db password=S3cret\n",
                  "t.conf:5: [store] url must not carry a password (password=, sslpassword= or user:password@ in a "
                  "URI): give it in [store] password_file" },
                { "[store]\nurl = postgresql://visierd:S3cret@db/visierd\n",
                  "t.conf:5: [store] url must not carry a password (password=, sslpassword= or user:password@ in a "
                  "URI): give it in [store] password_file" },
                { "[store]\nurl = postgresql://db/visierd?password=S3cret\n",
                  "t.conf:5: [store] url must not carry a password" },
                { "[store]\nurl = host=db sslpassword=S3cret\n", "t.conf:5: [store] url must not carry a password" },
                { "[store]\nurl = host=db passfile=/etc/S3cret/pgpass\n",
                  "t.conf:5: [store] url must not name a passfile: give the password in [store] password_file" },
                { "[store]\nurl = host=db 'S3cret\n",
                  "t.conf:5: [store] url is not a libpq connection string or postgresql:// URI (not shown: it may "
                  "hold a secret)" },
                { "[store]\nurl = postgresql://db/visierd?S3cret=x\n",
                  "t.conf:5: [store] url is not a libpq connection string or postgresql:// URI" },
                { "[store]\nurl =\n", "t.conf:5: [store] url must not be empty" },
                { "[fleet]\nnode = a\n", "t.conf:5: [fleet] node is accepted only in fleet mode, with [store] url" },
                { "[fleet]\ntenant = a\n", "t.conf:5: [fleet] tenant is accepted only in fleet mode, with [store] url" },
                { "[fleet]\nlease_seconds = 15\n",
                  "t.conf:5: [fleet] lease_seconds is accepted only in fleet mode, with [store] url" },
                { "[fleet]\nrenew_seconds = 5\n",
                  "t.conf:5: [fleet] renew_seconds is accepted only in fleet mode, with [store] url" },
                { "[store]\npassword_file = /etc/visierd/pg\n",
                  "t.conf:5: [store] password_file is accepted only in fleet mode, with [store] url" },
                { "[store]\nurl = host=db\n[fleet]\nlease_seconds = 2\n",
                  "t.conf:7: [fleet] lease_seconds: 2 is out of range (3 to 3600)" },
                { "[store]\nurl = host=db\n[fleet]\nlease_seconds = 10\nrenew_seconds = 5\n",
                  "t.conf:8: [fleet] renew_seconds (5 s) must be shorter than half of lease_seconds (10 s)" },
                { "[store]\nurl = host=db\n[fleet]\nrenew_seconds = 8\n",
                  "t.conf:7: [fleet] renew_seconds (8 s) must be shorter than half of lease_seconds (15 s)" },
                { "[store]\nurl = host=db\n[fleet]\nnode = web 1\n",
                  "t.conf:7: [fleet] node must be 1 to 128 printable characters without spaces" },
                { "[store]\nurl = host=db\n[fleet]\nnode =\n",
                  "t.conf:7: [fleet] node must be 1 to 128 printable characters without spaces" },
                { "[store]\nurl = host=db\n[fleet]\nnode = "
                  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                  "xxxxxxxxxxxxxxxxxxxxxxxxx\n",
                  "t.conf:7: [fleet] node must be 1 to 128 printable characters without spaces" },
                { "[store]\nurl = host=db\n[fleet]\ntenant = a\tb\n",
                  "t.conf:7: [fleet] tenant must be 1 to 128 printable characters without spaces" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                ck_assert_int_eq(load_extra(cases[i].extra, &c, &e), -EINVAL);
                ck_assert_msg(errors_contain(&e, cases[i].error), "case %zu: no error '%s' (first: %s)", i,
                              cases[i].error, e.n ? e.messages[0] : "none");
                assert_not_shown(&e, "S3cret");
                config_errors_clear(&e);
        }
        {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                /* A node of exactly 128 bytes, and renew just under half the lease. */
                ck_assert_int_eq(load_extra("[store]\nurl = host=db\n[fleet]\nlease_seconds = 11\nrenew_seconds = 5\n"
                                            "node = xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
                                            &c, &e),
                                 0);
                ck_assert_uint_eq(strlen(c->fleet_node), 128);
                ck_assert_uint_eq(c->fleet_renew_seconds, 5);
        }
}
END_TEST

/* Fleet mode's database password: [store] password_file (refused when group- or world-readable,
 * never shown), else the credential store-password when it exists, else none. Not read outside
 * fleet mode. The url is kept as configured and the password appears in no field of it. */
START_TEST(test_store_password) {
        char key[192], pw[192], spw[192], cred[192], text[1024];
        static const char *const url = "postgresql://visierd@db.internal/visierd";

        snprintf(key, sizeof(key), "%s/key", dir);
        snprintf(pw, sizeof(pw), "%s/pw", dir);
        snprintf(spw, sizeof(spw), "%s/pg", dir);
        snprintf(cred, sizeof(cred), "%s/store-password", dir);
        harness_write_file(key, "k3y-value", 0600);
        harness_write_file(pw, "pa55word", 0600);
        harness_write_file(spw, "Pg-S3cret\n", 0640);

        {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                snprintf(text, sizeof(text), "%sapikey_file = %s\npassword_file = %s\n[store]\nurl = %s\npassword_file = %s\n",
                         minimal, key, pw, url, spw);
                ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), 0);
                ck_assert_int_eq(config_load_secrets(c, &e), -EPERM);
                ck_assert(errors_contain(&e, "t.conf: [store] password_file: "));
                ck_assert(errors_contain(&e, "is accessible by group or others (mode 0640)"));
                assert_not_shown(&e, "Pg-S3cret");
                ck_assert_ptr_null(c->store_password);
                config_errors_clear(&e);

                ck_assert_int_eq(chmod(spw, 0600), 0);
                ck_assert_int_eq(config_load_secrets(c, &e), 0);
                ck_assert_str_eq(c->store_password->data, "Pg-S3cret");
                ck_assert_str_eq(c->store_url, url);
                ck_assert_ptr_null(strstr(c->store_url, "S3cret"));
        }
        {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                /* No password_file and no credentials directory: no password, no error. */
                snprintf(text, sizeof(text), "%sapikey_file = %s\npassword_file = %s\n[store]\nurl = %s\n", minimal,
                         key, pw, url);
                ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), 0);
                ck_assert_int_eq(config_load_secrets(c, &e), 0);
                ck_assert_ptr_null(c->store_password);

                /* A credentials directory without store-password: none either. */
                setenv("CREDENTIALS_DIRECTORY", dir, 1);
                ck_assert_int_eq(config_load_secrets(c, &e), 0);
                ck_assert_ptr_null(c->store_password);

                /* The credential, when it exists; refused when others may read it. */
                harness_write_file(cred, "from-credential", 0644);
                ck_assert_int_eq(config_load_secrets(c, &e), -EPERM);
                ck_assert(errors_contain(&e, "t.conf: [store] password_file: "));
                assert_not_shown(&e, "from-credential");
                config_errors_clear(&e);
                ck_assert_int_eq(chmod(cred, 0400), 0);
                ck_assert_int_eq(config_load_secrets(c, &e), 0);
                ck_assert_str_eq(c->store_password->data, "from-credential");
        }
        {
                _cleanup_(config_freep) Config *c = NULL;
                ConfigErrors e = {};

                /* Outside fleet mode the credential is not read. */
                snprintf(text, sizeof(text), "%sapikey_file = %s\npassword_file = %s\n", minimal, key, pw);
                ck_assert_int_eq(config_load_string("t.conf", text, &c, &e), 0);
                ck_assert_int_eq(config_load_secrets(c, &e), 0);
                ck_assert_ptr_null(c->store_password);
        }
}
END_TEST

/* visierd.conf(5) documents every key of the table with its default and bounds. */
START_TEST(test_man_page_matches_table) {
        const char *top = getenv("TOP_SRCDIR") ? getenv("TOP_SRCDIR") : ".";
        char path[512], *page;

        snprintf(path, sizeof(path), "%s/man/visierd.conf.5", top);
        page = harness_read_file(path);
        ck_assert_msg(page, "cannot read %s", path);
        for (const ConfigKey *k = config_keys; k->name; k++) {
                char item[128], expect[192];
                const char *block, *end, *next;
                _cleanup_free_ char *text = NULL;

                snprintf(item, sizeof(item), ".It Cm %s Ns", k->name);
                block = strstr(page, item);
                ck_assert_msg(block, "visierd.conf(5) does not document [%s] %s", k->section, k->name);
                end = strstr(block + 1, "\n.It Cm ");
                next = strstr(block + 1, "\n.El");
                if (!end || (next && next < end))
                        end = next;
                text = strndup(block, end ? (size_t) (end - block) : strlen(block));
                if (k->default_value) {
                        const char *d = k->default_value;
                        /* Paths under the build's directories are documented by their tail. */
                        if (strncmp(d, STATEDIR, strlen(STATEDIR)) == 0)
                                d += strlen(STATEDIR);
                        else if (strncmp(d, CONFDIR, strlen(CONFDIR)) == 0)
                                d += strlen(CONFDIR);
                        ck_assert_msg(strstr(text, "Default:") && strstr(text, d),
                                      "visierd.conf(5): %s should give the default %s", k->name, d);
                } else
                        ck_assert_msg(strcasestr(text, "no default") || strstr(text, "Default: unset"),
                                      "visierd.conf(5): %s should say it has no default", k->name);
                if (k->type == CONFIG_UINT) {
                        snprintf(expect, sizeof(expect), "Range: %lu to %lu.", k->min, k->max);
                        ck_assert_msg(strstr(text, expect), "visierd.conf(5): %s should say '%s'", k->name, expect);
                }
        }
        free(page);
}
END_TEST

static Suite *config_suite(void) {
        Suite *s = suite_create("config");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_defaults_from_table);
        tcase_add_test(tc, test_unknown_key_has_line);
        tcase_add_test(tc, test_bounds_and_numbers);
        tcase_add_test(tc, test_string_values_are_text);
        tcase_add_test(tc, test_validation);
        tcase_add_test(tc, test_base_url_origin_only);
        tcase_add_test(tc, test_proxy_key);
        tcase_add_test(tc, test_metrics_listen_key);
        tcase_add_test(tc, test_secret_files);
        tcase_add_test(tc, test_secret_file_hazards);
        tcase_add_test(tc, test_client_tokens_must_be_strong);
        tcase_add_test(tc, test_credentials_directory);
        tcase_add_test(tc, test_store_url_fleet_defaults);
        tcase_add_test(tc, test_store_url_rules);
        tcase_add_test(tc, test_store_password);
        tcase_add_test(tc, test_man_page_matches_table);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(config_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
