/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test harness for integration suites: starts the real visier-sim and visierd on loopback
 * ports chosen by the kernel, each with a private temporary directory, random credentials,
 * and its stderr captured to a log file; waits for readiness on a notify socket; talks HTTP
 * with libcurl. Children die with the test process (PR_SET_PDEATHSIG), so a failed or timed
 * out test leaves nothing running.
 */
#pragma once

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define HARNESS_START_TIMEOUT_SEC 20

typedef struct Sim {
        pid_t pid;
        unsigned port;
        char dir[128];
        char log[192];
        char username[32];
        char apikey[64];
        char password[64];
        char apikey_file[192];
        char password_file[192];
} Sim;

typedef struct Visierd {
        pid_t pid;
        unsigned port;
        char dir[128];
        char log[192];
        char config[192];
        char notify_log[4096];
        char store_url[384]; /* [store] url when the job store is PostgreSQL, else "" */
} Visierd;

typedef struct HttpResult {
        long status;
        char *body;
        size_t len;
        char *content_type;
        int curl_error; /* CURLcode; 0 when an answer came */
} HttpResult;

/* When non-zero, programs started next get RLIMIT_FSIZE set to this many bytes (and ignore
 * SIGXFSZ), so writes past it fail as on a full disk. */
extern unsigned long harness_fsize_limit;

/* When true, the visierd started next may serve on its unix socket only (tcp = no): it
 * reports no TCP port. */
extern bool harness_socket_only;

/* The IPv4 address the visierd configured next listens on and visierd_url() names (default
 * 127.0.0.1, set back after each test). */
extern const char *harness_listen_address;

/* Extra "NAME=value" environment for programs started next (NULL-terminated, or NULL). */
extern const char *const *harness_child_env;

/*
 * The job store of the visierds configured next: SQLite in their own directory, or, when the
 * environment says VISIERD_TEST_STORE=postgresql (tests/on-postgresql.sh runs a suite so),
 * PostgreSQL: one real server for the whole test program (tests/pg-harness.h), started before
 * its first test — the program exits 77 (SKIP), saying why, where PostgreSQL cannot run — and
 * a database of its own for each visierd configured. A test that names its own database path
 * (visierd_write_config_db) keeps SQLite.
 */
bool harness_store_is_pg(void);
/* A connection string for the server's maintenance database (dbname=postgres), or NULL. */
const char *harness_store_pg_conninfo(void);
/* A new, empty database on that server, as a [store] url, into ret (for unit suites). */
void harness_store_pg_new_url(char *ret, size_t len);

/* Fork and exec argv (searched in $PATH) with stdout and stderr appended to log and
 * NOTIFY_SOCKET set to notify_path (or unset); the child dies with the test process. */
pid_t harness_spawn(const char *const *argv, const char *log, const char *notify_path);

/* A fresh private directory under $TMPDIR. */
void harness_mkdtemp(char *buf, size_t len, const char *prefix);
void harness_write_file(const char *path, const char *content, mode_t mode);
/* Whole file as a string (caller frees); NULL if unreadable. */
char *harness_read_file(const char *path);
void harness_random_hex(char *buf, size_t bytes);
/* Remove a directory tree made by harness_mkdtemp. */
void harness_rmtree(const char *dir);

/* Start visier-sim with random credentials; extra_args is NULL-terminated (or NULL). */
void sim_start(Sim *s, const char *const *extra_args);
void sim_stop(Sim *s);
char *sim_url(const Sim *s, const char *path);
json_t *sim_control_get(const Sim *s, const char *path);
json_t *sim_control_post(const Sim *s, const char *path, const char *json);
/* One counter from GET /_sim/counters (-1 if absent). */
long long sim_counter(const Sim *s, const char *name);
/* Calls counted for one path. */
long long sim_calls(const Sim *s, const char *path);
/* Log in to the sim directly; returns the token (caller frees). */
char *sim_login(const Sim *s);
/* One call straight to the sim's API (bypassing visierd) with TOKEN from sim_login(), the
 * apikey and a JSON body (BODY may be NULL); fills *ret, the caller calls http_result_done(). */
void sim_api(const Sim *s, const char *token, const char *method, const char *path, const char *body, HttpResult *ret);

/* Start visierd against the sim with extra configuration lines appended to [visier]
 * (extra_visier) and the whole file's tail (extra_tail); waits for READY=1. */
void visierd_start(Visierd *d, const Sim *s, const char *extra_visier, const char *extra_tail);
/* Send request (the whole text, as is) on a new loopback connection to port and read until
 * the server closes it (bounded by timeout_s); the answer as received (caller frees). Fails
 * the test when the connection closes without a byte. */
char *harness_raw_exchange(unsigned port, const char *request, unsigned timeout_s);
/* Sign in to visierd as Visier's clients do (POST /v1/admin/visierSecureToken, form body);
 * asserts 200 text/plain and returns the session token (caller frees). */
char *visierd_signin(const Visierd *d, const char *username, const char *password);
/* Only write visierd's temporary directory and configuration (as visierd_start does). */
void visierd_write_config(Visierd *d, const Sim *s, const char *extra_visier, const char *extra_tail);
/* The same, with [store] database set to DATABASE (NULL: visierd.db in visierd's directory,
 * as visierd_write_config does), e.g. on a small filesystem of the test's own. */
void visierd_write_config_db(Visierd *d, const Sim *s, const char *database, const char *extra_visier,
                             const char *extra_tail);
/* The same with the job store on PostgreSQL at url ([store] url): the nodes of a fleet share one. */
void visierd_write_config_url(Visierd *d, const Sim *s, const char *url, const char *extra_visier,
                              const char *extra_tail);
/*
 * Read d's job store directly, to check an end state: its SQLite file (visierd.db in its
 * directory, read-only) or its PostgreSQL database (store_url). SQL is written so that both
 * accept it, with at most one parameter, $1, bound to PARAM as text (NULL: none). Returns 1
 * with the first column of the first row in *ret_value (caller frees; NULL reads as ""), 0
 * when there is no row, or -EIO with the reason in err. Never fails the test itself, so it
 * may be called from any thread.
 */
int visierd_store_query(const Visierd *d, const char *sql, const char *param, char **ret_value, char *err,
                        size_t errlen);
/* Start visierd again with the same configuration and database (after a stop or a kill). */
void visierd_restart(Visierd *d);
/* SIGKILL, as a crash would. */
void visierd_kill(Visierd *d);
/* Wait until GET /readyz answers 200 (probing), or fail the test. */
void visierd_wait_ready(const Visierd *d);
/* SIGTERM and wait; returns the exit status (or -1 if killed by a signal). */
int visierd_stop(Visierd *d);
char *visierd_url(const Visierd *d, const char *path);

/* End of an integration test: visierd must exit 0 on SIGTERM; the sim is stopped and both
 * directories removed. */
void harness_teardown(Sim *s, Visierd *d);

/* Blocking HTTP request; headers is a NULL-terminated list of "Name: value" lines or NULL. */
void http_request(const char *method, const char *url, const char *const *headers, const char *body,
                  long timeout_ms, HttpResult *ret);
void http_result_done(HttpResult *r);
/* A CURLOPT_WRITEFUNCTION appending to the HttpResult in CURLOPT_WRITEDATA (kept NUL-terminated). */
size_t harness_body_write(char *ptr, size_t size, size_t nmemb, void *userdata);
/* The same on the caller's easy handle, so its connections are kept and reused (for loops that
 * poll or submit thousands of times). BODY_LEN 0 means strlen(body). Never fails the test, so
 * it may be called from any thread: a handle that cannot be set up is a curl_error. */
void http_request_on(CURL *h, const char *method, const char *url, const char *const *headers, const char *body,
                     size_t body_len, long timeout_ms, HttpResult *ret);
/* GET and parse JSON; fails the test on a transport error. */
json_t *http_get_json(const char *url, long *ret_status);

/* A whole number from the environment into *ret, or FALLBACK when unset or empty; -EINVAL when
 * it is not a whole number (for main to refuse before any test runs). */
int harness_env_u64(const char *name, uint64_t fallback, uint64_t *ret);

/* A request to visierd (path from the root) whose answer must be JSON: the parsed answer
 * (caller decrefs) and its status; fails the test on a transport error or a non-JSON answer. */
/* One request to visierd (20 s at most): its status (0: no answer), its body in *ret_body when
 * ret_body is not NULL (the caller frees it). */
long visierd_call(const Visierd *d, const char *method, const char *path, const char *const *headers, const char *body,
                  char **ret_body);
json_t *visierd_request_json(const Visierd *d, const char *method, const char *path, const char *body,
                             const char *const *headers, long *ret_status);
/* Wait (probing /status) until no job is queued or running; fails the test after seconds. */
void visierd_wait_drained(const Visierd *d, unsigned seconds);
/* How many times needle is in d's log (0 when the log cannot be read). */
unsigned visierd_log_count(const Visierd *d, const char *needle);
/* GET /jobs/ID (must answer 200); caller decrefs. */
json_t *visierd_job(const Visierd *d, long long id);
/* Does one of the reasons of a /readyz answer contain needle? */
bool readyz_says(json_t *readyz, const char *needle);
/* How many permissions of a GET /_sim/permissions dump carry this display name. */
int sim_count_named(json_t *dump, const char *name);

/* Run a program to completion, capturing stdout+stderr; returns its exit status. */
int harness_run(const char *const *argv, char **ret_output);
