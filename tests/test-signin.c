/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local sign-in, as Visier's own clients do it (../shared/visier-api/CLIENTS.md): the SDK's and
 * the connector's login calls answered by visierd itself, later calls carrying the session as
 * the VisierASIDToken cookie or a bearer, the 401 that makes a client sign in again after a
 * restart, client identities and roles, and the OAuth token endpoint. Real visierd and
 * visier-sim on loopback.
 */
#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "session.h"

static Sim sim;
static Visierd vd;

static void teardown(void) {
        harness_teardown(&sim, &vd);
}

#define STATUS_BODY(code, msg, user) \
        "{\"code\":\"" code "\",\"message\":\"" msg "\",\"localizedMessage\":\"" msg "\",\"userError\":" user "}"

static const char *const sdk_login_headers[] = {
        "Content-Type: application/x-www-form-urlencoded",
        "Accept: application/jsonlines, application/json",
        "User-Agent: OpenAPI-python",
        NULL,
};

/* POST a form to visierd; returns the status, the body in *ret_body (caller frees). */
static long post(const char *path, const char *const *headers, const char *body, char **ret_body) {
        char *u = visierd_url(&vd, path);
        HttpResult r;
        long status;

        http_request("POST", u, headers, body, 10000, &r);
        free(u);
        ck_assert_int_eq(r.curl_error, 0);
        status = r.status;
        *ret_body = strndup(r.body ? r.body : "", r.len);
        http_result_done(&r);
        return status;
}

static long get(const char *path, const char *const *headers, char **ret_body) {
        char *u = visierd_url(&vd, path);
        HttpResult r;
        long status;

        http_request("GET", u, headers, NULL, 10000, &r);
        free(u);
        ck_assert_int_eq(r.curl_error, 0);
        status = r.status;
        if (ret_body)
                *ret_body = strndup(r.body ? r.body : "", r.len);
        http_result_done(&r);
        return status;
}

static void write_token(const char *dir, const char *name, const char *token, char *path, size_t len) {
        snprintf(path, len, "%s/%s.token", dir, name);
        harness_write_file(path, token, 0600);
}

/* The SDK's sequence with no client sections: login (no apikey), a read with the cookie and
 * the client's apikey, the same with a bearer, then a restart: the old session gets Visier's
 * 401, and a fresh login cures it. None of the sign-ins reaches Visier. */
START_TEST(test_sdk_sequence_anonymous) {
        char *token, *body, cookie[128], bearer[128];
        const char *with_cookie[] = { "apikey: the-clients-own-key", cookie, "User-Agent: Visier-SDK/0.99/python",
                                      "Accept: application/json", NULL };
        const char *with_bearer[] = { bearer, NULL };
        long long logins;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, NULL);
        visierd_wait_ready(&vd);
        logins = sim_counter(&sim, "logins");

        ck_assert_int_eq(post("/v1/admin/visierSecureToken", sdk_login_headers,
                              "username=svc%40example.com&password=any+thing&vanityName=acme", &token),
                         200);
        ck_assert_uint_eq(strlen(token), SESSION_TOKEN_LEN);
        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", token);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_cookie, NULL), 200);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_bearer, NULL), 200);
        ck_assert_int_eq(get("/status", with_cookie, NULL), 200);
        /* The sign-in never reached Visier: only visierd's own login did. */
        ck_assert_int_eq(sim_counter(&sim, "logins"), logins);

        /* After a restart the session is gone: 401 in Visier's Status shape, for cookie and
         * bearer alike, and nothing is sent to Visier for it. */
        ck_assert_int_eq(visierd_stop(&vd), 0);
        visierd_restart(&vd);
        visierd_wait_ready(&vd);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_cookie, &body), 401);
        ck_assert_str_eq(body, STATUS_BODY("Unauthorized", "the token is not valid; sign in again", "true"));
        free(body);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_bearer, &body), 401);
        free(body);
        free(token);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", sdk_login_headers, "username=svc&password=x", &token), 200);
        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_cookie, NULL), 200);
        free(token);
        /* Requests with no credential at all are still served without client sections. */
        ck_assert_int_eq(get("/v1/admin/capabilities", NULL, NULL), 200);
}
END_TEST

/* The connector keeps the old cookie on its session and sends it with its next login: the
 * login is answered, not refused. A body that is not a form is a 400. */
START_TEST(test_connector_relogin_with_stale_cookie) {
        const char *headers[] = { "Content-Type: application/x-www-form-urlencoded",
                                  "Cookie: VisierASIDToken=a0000000000000001ffffffffffffffffffffffffffffffff",
                                  "apikey: k", NULL };
        char *token, *body;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, NULL);
        visierd_wait_ready(&vd);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", headers, "username=u&password=p&vanityName=v", &token), 200);
        ck_assert_uint_eq(strlen(token), SESSION_TOKEN_LEN);
        free(token);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", headers, "username=%zz", &body), 400);
        ck_assert_str_eq(body, STATUS_BODY("BadRequest",
                                           "the body is not a valid application/x-www-form-urlencoded form", "true"));
        free(body);
}
END_TEST

/* With client sections, the username names a client and the password is its token; the
 * session carries the client's role; wrong credentials get Visier's 401. */
START_TEST(test_clients_sign_in_with_their_tokens) {
        char tail[1024], rp[256], wp[256], rt[41], wt[41], form[160], *token, *body, cookie[128];
        const char *with_cookie[] = { cookie, NULL };
        const char *form_headers[] = { "Content-Type: application/x-www-form-urlencoded", NULL };

        sim_start(&sim, NULL);
        harness_random_hex(rt, 20);
        harness_random_hex(wt, 20);
        write_token(sim.dir, "reader", rt, rp, sizeof(rp));
        write_token(sim.dir, "writer", wt, wp, sizeof(wp));
        snprintf(tail, sizeof(tail), "[client reader]\ntoken_file = %s\nrole = read\n"
                                     "[client writer]\ntoken_file = %s\nrole = write\n", rp, wp);
        visierd_start(&vd, &sim, "[jobs]\nbatch_delay_ms = 0", tail);
        visierd_wait_ready(&vd);

        /* Wrong password, another client's token, an unknown name: 401, and no session. */
        snprintf(form, sizeof(form), "username=reader&password=%s", wt);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", form_headers, form, &body), 401);
        ck_assert_str_eq(body, STATUS_BODY("Unauthorized", "the username and password are not valid", "true"));
        free(body);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", form_headers, "username=reader&password=guess", &body), 401);
        free(body);
        snprintf(form, sizeof(form), "username=nobody&password=%s", rt);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", form_headers, form, &body), 401);
        free(body);
        /* Without sections-worth of credentials a read is refused. */
        ck_assert_int_eq(get("/v1/admin/capabilities", NULL, NULL), 401);

        /* The refusals are counted (and their credentials never appear). */
        {
                const char *reader_bearer_line[2] = { NULL, NULL };
                char bearer_line[96], *metrics;

                snprintf(bearer_line, sizeof(bearer_line), "Authorization: Bearer %s", rt);
                reader_bearer_line[0] = bearer_line;
                ck_assert_int_eq(get("/metrics", reader_bearer_line, &metrics), 200);
                ck_assert_ptr_nonnull(strstr(metrics, "visierd_signins_total{result=\"refused\"} 3\n"));
                ck_assert_ptr_nonnull(strstr(metrics, "visierd_signins_total{result=\"ok\"} 0\n"));
                ck_assert_ptr_null(strstr(metrics, rt));
                free(metrics);
        }

        /* The reader's session reads, and may not write. */
        snprintf(form, sizeof(form), "username=reader&password=%s", rt);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", form_headers, form, &token), 200);
        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        free(token);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_cookie, NULL), 200);
        ck_assert_int_eq(post("/v1/admin/permissions", with_cookie, "{\"permissions\":[{\"displayName\":\"r\"}]}", &body),
                         403);
        ck_assert_str_eq(body, STATUS_BODY("Forbidden", "client reader has role read; this needs write", "true"));
        free(body);

        /* The writer's session writes, and the job records the client. */
        snprintf(form, sizeof(form), "username=writer&password=%s", wt);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", form_headers, form, &token), 200);
        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        free(token);
        ck_assert_int_eq(post("/v1/admin/permissions", with_cookie, "{\"permissions\":[{\"displayName\":\"w\"}]}", &body),
                         202);
        {
                json_t *j = json_loads(body, 0, NULL);

                ck_assert_ptr_nonnull(j);
                ck_assert_str_eq(json_string_value(json_object_get(j, "client")), "writer");
                json_decref(j);
        }
        free(body);

        /* The writer's section goes on reload: its session ends with it. */
        {
                char *conf = harness_read_file(vd.config), *cut;
                int i;

                ck_assert_ptr_nonnull(conf);
                cut = strstr(conf, "[client writer]");
                ck_assert_ptr_nonnull(cut);
                *cut = '\0';
                harness_write_file(vd.config, conf, 0644);
                free(conf);
                ck_assert_int_eq(get("/v1/admin/capabilities", with_cookie, NULL), 200);
                ck_assert_int_eq(kill(vd.pid, SIGHUP), 0);
                for (i = 0; i < 400 && get("/v1/admin/capabilities", with_cookie, NULL) != 401; i++)
                        usleep(25000); /* probing, bounded: the reload is asynchronous */
                ck_assert_msg(i < 400, "the removed client's session still works after the reload");
        }
        ck_assert_int_eq(get("/v1/admin/capabilities", with_cookie, &body), 401);
        ck_assert_str_eq(body, STATUS_BODY("Unauthorized", "the token is not valid; sign in again", "true"));
        free(body);
        /* No token reaches the log. */
        ck_assert_int_eq(visierd_stop(&vd), 0);
        body = harness_read_file(vd.log);
        ck_assert_msg(!strstr(body, rt) && !strstr(body, wt), "a client token was logged");
        free(body);
}
END_TEST

static void assert_token_response(const char *body, json_t **ret) {
        json_t *j = json_loads(body, 0, NULL);
        const char *key;
        json_t *v;
        size_t n = 0;

        ck_assert_msg(j, "not JSON: %s", body);
        json_object_foreach(j, key, v) {
                n++;
                if (strcmp(key, "expires_in") == 0)
                        ck_assert_int_eq(json_integer_value(v), 3600);
                else if (strcmp(key, "token_type") == 0)
                        ck_assert_str_eq(json_string_value(v), "Bearer");
                else if (strcmp(key, "access_token") == 0 || strcmp(key, "refresh_token") == 0)
                        ck_assert_uint_eq(strlen(json_string_value(v)), SESSION_TOKEN_LEN);
                else
                        ck_abort_msg("TokenResponse has a member Visier's schema does not define: %s", key);
        }
        ck_assert_uint_eq(n, 4);
        *ret = j;
}

/* POST /v1/auth/oauth2/token: password and client_credentials grants, as form and JSON, the
 * refresh grant (the old pair stops working), and Visier's errors for what it refuses. */
START_TEST(test_oauth2_token) {
        char tail[512], wp[256], wt[41], form[200], *body, bearer[128];
        const char *form_headers[] = { "Content-Type: application/x-www-form-urlencoded", NULL };
        const char *json_headers[] = { "Content-Type: application/json", NULL };
        const char *with_bearer[] = { bearer, NULL };
        char *old_access, *refresh;
        json_t *j;

        sim_start(&sim, NULL);
        harness_random_hex(wt, 20);
        write_token(sim.dir, "etl", wt, wp, sizeof(wp));
        snprintf(tail, sizeof(tail), "[client etl]\ntoken_file = %s\nrole = write\n", wp);
        visierd_start(&vd, &sim, NULL, tail);
        visierd_wait_ready(&vd);

        snprintf(form, sizeof(form), "grant_type=password&username=etl&password=%s&client_id=x&client_secret=y", wt);
        ck_assert_int_eq(post("/v1/auth/oauth2/token", form_headers, form, &body), 200);
        assert_token_response(body, &j);
        free(body);
        old_access = strdup(json_string_value(json_object_get(j, "access_token")));
        refresh = strdup(json_string_value(json_object_get(j, "refresh_token")));
        json_decref(j);
        snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", old_access);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_bearer, NULL), 200);

        /* Refresh: a new pair; the old access token is refused, the refresh token too. */
        snprintf(form, sizeof(form), "grant_type=refresh_token&refresh_token=%s", refresh);
        ck_assert_int_eq(post("/v1/auth/oauth2/token", form_headers, form, &body), 200);
        assert_token_response(body, &j);
        free(body);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_bearer, NULL), 401);
        snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", json_string_value(json_object_get(j, "access_token")));
        json_decref(j);
        ck_assert_int_eq(get("/v1/admin/capabilities", with_bearer, NULL), 200);
        ck_assert_int_eq(post("/v1/auth/oauth2/token", form_headers, form, &body), 401);
        ck_assert_str_eq(body, STATUS_BODY("Unauthorized", "the refresh token is not valid or has expired", "true"));
        free(body);

        /* client_credentials as JSON. */
        snprintf(form, sizeof(form), "{\"grant_type\":\"client_credentials\",\"client_id\":\"etl\",\"client_secret\":\"%s\"}",
                 wt);
        ck_assert_int_eq(post("/v1/auth/oauth2/token", json_headers, form, &body), 200);
        assert_token_response(body, &j);
        json_decref(j);
        free(body);

        /* Refusals. */
        ck_assert_int_eq(post("/v1/auth/oauth2/token", json_headers,
                              "{\"grant_type\":\"client_credentials\",\"client_id\":\"etl\",\"client_secret\":\"no\"}", &body),
                         401);
        ck_assert_str_eq(body, STATUS_BODY("Unauthorized", "the credentials are not valid", "true"));
        free(body);
        ck_assert_int_eq(post("/v1/auth/oauth2/token", form_headers, "grant_type=authorization_code&code=c", &body), 400);
        ck_assert_str_eq(body, STATUS_BODY("BadRequest",
                                           "grant_type must be password, client_credentials or refresh_token for visierd",
                                           "true"));
        free(body);
        ck_assert_int_eq(post("/v1/auth/oauth2/token", form_headers, "username=etl", &body), 400);
        ck_assert_str_eq(body, STATUS_BODY("BadRequest", "grant_type is required", "true"));
        free(body);
        ck_assert_int_eq(post("/v1/auth/oauth2/token", json_headers, "{\"grant_type\":7}", &body), 400);
        free(body);
        free(old_access);
        free(refresh);
}
END_TEST

/* Only members Visier's schema defines for the object, each of the type it defines. */
static void assert_members(json_t *o, const char *const *allowed) {
        const char *key;
        json_t *v;

        ck_assert(json_is_object(o));
        json_object_foreach(o, key, v) {
                bool ok = false;

                for (const char *const *a = allowed; *a && !ok; a++)
                        ok = strcmp(*a, key) == 0;
                ck_assert_msg(ok, "member %s is not in Visier's schema", key);
                ck_assert_msg(!json_is_null(v), "member %s is null", key);
        }
}

static json_t *json_of(long status, char *body, long expected) {
        json_t *j;

        ck_assert_msg(status == expected, "answered %ld, not %ld: %s", status, expected, body);
        j = json_loads(body, 0, NULL);
        ck_assert_msg(j, "not JSON: %s", body);
        free(body);
        return j;
}

static long send_json(const char *method, const char *path, const char *const *headers, const char *body,
                      char **ret_body) {
        char *u = visierd_url(&vd, path);
        HttpResult r;
        long status;

        http_request(method, u, headers, body, 30000, &r);
        free(u);
        ck_assert_int_eq(r.curl_error, 0);
        status = r.status;
        *ret_body = strndup(r.body ? r.body : "", r.len);
        http_result_done(&r);
        return status;
}

/* The SDK's and the connector's whole sequence with only the base URL changed: sign-in, reads
 * with the cookie and with a bearer, a paged read (206), a create, an update, an assignment
 * and a delete answered as Visier answers them, a data query in each format, then a restart:
 * 401, a fresh sign-in, and the calls work again. Each answer's status and shape is Visier's. */
START_TEST(test_sdk_replay) {
        static const char *const success_members[] = { "permissionId", "displayName", "correlationId", NULL };
        static const char *const bulk_members[] = { "successes", "failures", NULL };
        char *token, *body, cookie[128], bearer[128], path[160], write_body[256];
        const char *sdk[] = { "apikey: the-clients-key", cookie, "User-Agent: Visier-SDK/0.99/python",
                              "Accept: application/json", "Content-Type: application/json", NULL };
        const char *with_bearer[] = { bearer, "Accept: application/json", NULL };
        const char *jsonlines[] = { "apikey: k", cookie, "Accept: application/jsonlines, application/json",
                                    "Content-Type: application/json", NULL };
        const char *csv[] = { "apikey: k", cookie, "Accept: text/csv", "Content-Type: application/json", NULL };
        const char *query = "{\"source\":{\"analyticObject\":\"Employee\"},\"columns\":[{\"columnDefinition\":"
                            "{\"property\":{\"name\":\"Employee.EmployeeID\"}}}]}";
        json_t *j, *e;
        char *id;
        long st;

        sim_start(&sim, NULL);
        visierd_start(&vd, &sim, NULL, "[jobs]\nanswer_wait = 30\nbatch_delay_ms = 0\n");
        visierd_wait_ready(&vd);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", sdk_login_headers, "username=svc&password=pw", &token), 200);
        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", token);
        free(token);

        st = get("/v1/admin/capabilities", sdk, &body);
        j = json_of(st, body, 200);
        json_decref(j);
        st = get("/v1/data/model/analytic-objects/Employee/dimensions/Location/members?limit=2", with_bearer, &body);
        j = json_of(st, body, 206);
        json_decref(j);

        /* Create: Visier's PermissionBulkOperationResponseDTO, the new ID in it. */
        st = send_json("POST", "/v1/admin/permissions", sdk, "{\"permissions\":[{\"displayName\":\"replay\"}]}",
                              &body);
        j = json_of(st, body, 200);
        assert_members(j, bulk_members);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "failures")), 0);
        e = json_array_get(json_object_get(j, "successes"), 0);
        assert_members(e, success_members);
        ck_assert_str_eq(json_string_value(json_object_get(e, "displayName")), "replay");
        id = strdup(json_string_value(json_object_get(e, "permissionId")));
        ck_assert_ptr_nonnull(id);
        json_decref(j);

        /* Update, assignment, delete. */
        snprintf(write_body, sizeof(write_body), "{\"permissions\":[{\"permissionId\":\"%s\",\"displayName\":\"replay 2\"}]}",
                 id);
        st = send_json("PUT", "/v1/admin/permissions", sdk, write_body, &body);
        j = json_of(st, body, 200);
        assert_members(j, bulk_members);
        e = json_array_get(json_object_get(j, "successes"), 0);
        assert_members(e, success_members);
        ck_assert_str_eq(json_string_value(json_object_get(e, "permissionId")), id);
        json_decref(j);
        snprintf(write_body, sizeof(write_body), "{\"permissions\":[{\"permissionId\":\"%s\",\"userIds\":[\"u-001\"]}]}", id);
        st = send_json("PUT", "/v1/admin/permissions/users", sdk, write_body, &body);
        j = json_of(st, body, 200);
        ck_assert_uint_eq(json_object_size(j), 1);
        ck_assert(json_is_array(json_object_get(j, "tenants")));
        ck_assert(json_is_string(json_object_get(json_array_get(json_object_get(j, "tenants"), 0), "tenantCode")));
        json_decref(j);
        snprintf(write_body, sizeof(write_body), "{\"permissionIds\":[\"%s\"]}", id);
        st = send_json("DELETE", "/v1/admin/permissions", sdk, write_body, &body);
        j = json_of(st, body, 200);
        assert_members(j, bulk_members);
        e = json_array_get(json_object_get(j, "successes"), 0);
        assert_members(e, success_members);
        ck_assert_str_eq(json_string_value(json_object_get(e, "permissionId")), id);
        json_decref(j);
        snprintf(path, sizeof(path), "/v1/admin/permissions/%s", id);
        ck_assert_int_eq(get(path, sdk, &body), 404);
        free(body);
        free(id);

        /* A data query in each format: JSON, JSON lines (header line, then rows), CSV. */
        st = send_json("POST", "/v1/data/query/list", sdk, query, &body);
        j = json_of(st, body, 200);
        json_decref(j);
        ck_assert_int_eq(send_json("POST", "/v1/data/query/list", jsonlines, query, &body), 200);
        ck_assert_msg(strncmp(body, "[\"Employee.EmployeeID\"]\n[\"", 26) == 0, "JSON lines answer: %.200s", body);
        free(body);
        ck_assert_int_eq(send_json("POST", "/v1/data/query/list", csv, query, &body), 200);
        ck_assert_msg(strncmp(body, "Employee.EmployeeID", 19) == 0, "CSV answer: %.200s", body);
        free(body);

        /* Restart: 401 in Visier's shape, a fresh sign-in, and on. */
        ck_assert_int_eq(visierd_stop(&vd), 0);
        visierd_restart(&vd);
        visierd_wait_ready(&vd);
        ck_assert_int_eq(get("/v1/admin/capabilities", sdk, &body), 401);
        j = json_loads(body, 0, NULL);
        free(body);
        ck_assert_str_eq(json_string_value(json_object_get(j, "code")), "Unauthorized");
        ck_assert(json_is_true(json_object_get(j, "userError")));
        json_decref(j);
        ck_assert_int_eq(post("/v1/admin/visierSecureToken", sdk_login_headers, "username=svc&password=pw", &token), 200);
        snprintf(cookie, sizeof(cookie), "Cookie: VisierASIDToken=%s", token);
        free(token);
        ck_assert_int_eq(get("/v1/admin/capabilities", sdk, &body), 200);
        free(body);
}
END_TEST

int main(void) {
        Suite *s = suite_create("signin");
        TCase *tc = tcase_create("integration");
        SRunner *sr;
        int failed;

        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_sdk_sequence_anonymous);
        tcase_add_test(tc, test_connector_relogin_with_stale_cookie);
        tcase_add_test(tc, test_clients_sign_in_with_their_tokens);
        tcase_add_test(tc, test_oauth2_token);
        tcase_add_test(tc, test_sdk_replay);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
