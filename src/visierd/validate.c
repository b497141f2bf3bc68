/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Write-body validation (see validate.h).
 */
#include <stdarg.h>

#include "macro.h"
#include "validate.h"

#define CORRELATION_ID_MIN 3
#define CORRELATION_ID_MAX 64
#define MODEL_ID_MIN 3
#define MODEL_ID_MAX 200
#define VALIDATE_DEPTH_MAX 32

static const char *const model_id_keys[] = { "analyticObjectId", "dimensionId", "propertyId", "hierarchyPropertyId" };

_printf_(3, 4) static int fail(ValidateError *err, const char *path, const char *fmt, ...) {
        va_list ap;

        snprintf(err->path, sizeof(err->path), "%s", path);
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* base + suffix into p (truncated if too long; paths are for messages only). */
static void path_join(char *p, size_t n, const char *base, const char *suffix) {
        size_t bl = strnlen(base, n - 1), sl = strnlen(suffix, n - 1 - bl);

        memcpy(p, base, bl);
        memcpy(p + bl, suffix, sl);
        p[bl + sl] = '\0';
}

static bool is_alnum_(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

bool validate_correlation_id(const char *s) {
        size_t n = strlen(s);

        if (n < CORRELATION_ID_MIN || n > CORRELATION_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_alnum_(s[i]) && s[i] != '-')
                        return false;
        return true;
}

static bool model_id_part_ok(const char *s, size_t n) {
        if (n < MODEL_ID_MIN || n > MODEL_ID_MAX || (s[0] >= '0' && s[0] <= '9'))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_alnum_(s[i]))
                        return false;
        return true;
}

bool validate_model_id(const char *s) {
        for (;;) {
                const char *dot = strchr(s, '.');
                size_t n = dot ? (size_t) (dot - s) : strlen(s);

                if (!model_id_part_ok(s, n))
                        return false;
                if (!dot)
                        return true;
                s = dot + 1;
        }
}

static bool is_model_id_key(const char *k) {
        for (size_t i = 0; i < ELEMENTSOF(model_id_keys); i++)
                if (streq(k, model_id_keys[i]))
                        return true;
        return false;
}

/* Walk an item and check every model ID member at any depth. */
static int check_model_ids(json_t *v, char *path, size_t pathlen, unsigned depth, ValidateError *err) {
        size_t base = strlen(path);
        const char *k;
        json_t *c;
        size_t i;
        int r;

        if (depth > VALIDATE_DEPTH_MAX)
                return fail(err, path, "nested too deeply");
        if (json_is_object(v)) {
                json_object_foreach(v, k, c) {
                        snprintf(path + base, pathlen - base, ".%s", k);
                        if (is_model_id_key(k)) {
                                if (!json_is_string(c))
                                        return fail(err, path, "must be a string");
                                if (!validate_model_id(json_string_value(c)))
                                        return fail(err, path,
                                                    "'%.64s' is not a valid ID: use A-Z a-z 0-9 and _, 3 to 200 "
                                                    "characters, not starting with a digit",
                                                    json_string_value(c));
                        }
                        r = check_model_ids(c, path, pathlen, depth + 1, err);
                        if (r < 0)
                                return r;
                }
        } else if (json_is_array(v)) {
                json_array_foreach(v, i, c) {
                        snprintf(path + base, pathlen - base, "[%zu]", i);
                        r = check_model_ids(c, path, pathlen, depth + 1, err);
                        if (r < 0)
                                return r;
                }
        }
        path[base] = '\0';
        return 0;
}

static int check_permission(JobOp op, json_t *item, const char *path, json_t *seen_cids, ValidateError *err) {
        char p[VALIDATE_PATH_MAX];
        json_t *v;

        if (!json_is_object(item))
                return fail(err, path, "must be an object");
        v = json_object_get(item, "displayName");
        path_join(p, sizeof(p), path, ".displayName");
        if (op == JOB_OP_CREATE && !v)
                return fail(err, p, "is required");
        if (v && (!json_is_string(v) || json_string_length(v) == 0))
                return fail(err, p, "must be a non-empty string");
        v = json_object_get(item, "permissionId");
        path_join(p, sizeof(p), path, ".permissionId");
        if (op == JOB_OP_CREATE && v)
                return fail(err, p, "must not be given when creating a permission (Visier assigns it)");
        if (op == JOB_OP_UPDATE && !v)
                return fail(err, p, "is required to update a permission");
        if (v && (!json_is_string(v) || json_string_length(v) == 0))
                return fail(err, p, "must be a non-empty string");
        v = json_object_get(item, "correlationId");
        path_join(p, sizeof(p), path, ".correlationId");
        if (v) {
                if (!json_is_string(v) || !validate_correlation_id(json_string_value(v)))
                        return fail(err, p, "must be 3 to 64 characters of A-Z a-z 0-9 _ -");
                if (json_object_get(seen_cids, json_string_value(v)))
                        return fail(err, p, "'%s' is used more than once in this request", json_string_value(v));
                json_object_set_new(seen_cids, json_string_value(v), json_true());
        }
        path_join(p, sizeof(p), path, "");
        return check_model_ids(item, p, sizeof(p), 0, err);
}

static int check_assignment(json_t *item, const char *path, ValidateError *err) {
        char p[VALIDATE_PATH_MAX];
        json_t *v, *u;
        size_t i;

        if (!json_is_object(item))
                return fail(err, path, "must be an object");
        v = json_object_get(item, "permissionId");
        path_join(p, sizeof(p), path, ".permissionId");
        if (!v)
                return fail(err, p, "is required");
        if (!json_is_string(v) || json_string_length(v) == 0)
                return fail(err, p, "must be a non-empty string");
        v = json_object_get(item, "userIds");
        path_join(p, sizeof(p), path, ".userIds");
        if (!v)
                return fail(err, p, "is required");
        if (!json_is_array(v) || json_array_size(v) == 0)
                return fail(err, p, "must be a non-empty array of user IDs");
        json_array_foreach(v, i, u) {
                if (!json_is_string(u) || json_string_length(u) == 0) {
                        char idx[32];
                        snprintf(idx, sizeof(idx), ".userIds[%zu]", i);
                        path_join(p, sizeof(p), path, idx);
                        return fail(err, p, "must be a non-empty string");
                }
        }
        return 0;
}

int validate_write(JobOp op, const char *body, size_t len, size_t max_items, json_t **ret, ValidateError *err) {
        const char *member = job_op_items_member(op);
        json_t *root, *items, *item, *seen;
        json_error_t jerr;
        char path[VALIDATE_PATH_MAX];
        size_t i;
        int r = 0;

        if (!body || len == 0)
                return fail(err, "$", "a JSON body is required");
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return fail(err, "$", "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        if (!json_is_object(root)) {
                json_decref(root);
                return fail(err, "$", "must be a JSON object with a '%s' array", member);
        }
        items = json_object_get(root, member);
        if (!items) {
                json_decref(root);
                return fail(err, member, "is required");
        }
        if (!json_is_array(items)) {
                json_decref(root);
                return fail(err, member, "must be an array");
        }
        if (json_array_size(items) == 0 || json_array_size(items) > max_items) {
                json_decref(root);
                return fail(err, member, "must hold 1 to %zu entries (has %zu)", max_items, json_array_size(items));
        }
        seen = json_object();
        json_array_foreach(items, i, item) {
                snprintf(path, sizeof(path), "%s[%zu]", member, i);
                switch (op) {
                case JOB_OP_CREATE:
                case JOB_OP_UPDATE:
                        r = check_permission(op, item, path, seen, err);
                        break;
                case JOB_OP_DELETE:
                case JOB_OP_REVERT:
                        r = json_is_string(item) && json_string_length(item) > 0
                                    ? 0
                                    : fail(err, path, "must be a non-empty permission ID string");
                        break;
                case JOB_OP_ASSIGN:
                case JOB_OP_REMOVE:
                        r = check_assignment(item, path, err);
                        break;
                default:
                        r = fail(err, "$", "unsupported operation");
                }
                if (r < 0)
                        break;
        }
        json_decref(seen);
        if (r < 0) {
                json_decref(root);
                return r;
        }
        *ret = root;
        return 0;
}
