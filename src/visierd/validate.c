/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Write-body, header and query-value validation (see validate.h). The schema walk is driven
 * by the generated table in validate-schema.h and is bounded by it: only members the table
 * defines are descended, so the depth of a walk never depends on the input beyond the
 * table's own depth (VALIDATE_DEPTH_MAX guards against a recursive table). Never logs;
 * allocates only the parsed body it hands back and, while it runs, the set of correlation
 * IDs seen.
 */
#include <stdarg.h>
#include <stdint.h>

#include "macro.h"
#include "validate.h"
#include "validate-schema.h" /* the generated tables; included here only */

#define CORRELATION_ID_MIN 3
#define CORRELATION_ID_MAX 64
#define MODEL_ID_MIN 3
#define MODEL_ID_MAX 200
#define VALIDATE_DEPTH_MAX 32

static const char *const model_id_keys[] = { "analyticObjectId", "dimensionId", "propertyId", "hierarchyPropertyId" };

static int fail_oom(ValidateError *err) {
        snprintf(err->path, sizeof(err->path), "$");
        snprintf(err->message, sizeof(err->message), "out of memory");
        return -ENOMEM;
}

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

/* Member KEY of an object, value V at PATH: a model ID must follow Visier's rule. */
static int check_model_id(const char *key, json_t *v, const char *path, ValidateError *err) {
        if (is_model_id_key(key) && json_is_string(v) && !validate_model_id(json_string_value(v)))
                return fail(err, path,
                            "'%.64s' is not a valid ID: use A-Z a-z 0-9 and _, 3 to 200 characters, "
                            "not starting with a digit",
                            json_string_value(v));
        return 0;
}

const ValidateSchema *validate_request_schema(JobOp op) {
        if (op == JOB_OP_PATCH) /* a list of partial PermissionDTOs: the update's schema */
                return validate_request_schemas[JOB_OP_UPDATE];
        return op >= 0 && op < _JOB_OP_MAX ? validate_request_schemas[op] : NULL;
}

static const ValidateMember *schema_member(const ValidateSchema *s, const char *name) {
        for (const ValidateMember *m = s->members; m && m->name; m++)
                if (streq(m->name, name))
                        return m;
        return NULL;
}

static const char *type_message(ValidateType t) {
        static const char *const messages[_VALIDATE_TYPE_MAX] = {
                [VALIDATE_STRING] = "must be a string",   [VALIDATE_BOOLEAN] = "must be a boolean",
                [VALIDATE_INTEGER] = "must be an integer", [VALIDATE_NUMBER] = "must be a number",
                [VALIDATE_ENUM] = "must be a string",     [VALIDATE_ARRAY] = "must be an array",
                [VALIDATE_OBJECT] = "must be an object",  [VALIDATE_MAP] = "must be an object",
        };
        return t >= 0 && t < _VALIDATE_TYPE_MAX ? messages[t] : "has an unsupported type";
}

/* "must be one of A, B, C", cut short with ", ..." when the values do not fit a message. */
static int fail_enum(ValidateError *err, const char *path, const char *const *values) {
        static const char head[] = "must be one of", more[] = ", ...";
        char m[VALIDATE_MESSAGE_MAX];
        size_t n = sizeof(head) - 1;

        memcpy(m, head, sizeof(head));
        for (size_t i = 0; values[i]; i++) {
                size_t l = strlen(values[i]);

                /* Room for ", value", and for ", ..." after it should more values follow. */
                if (n + 2 + l + sizeof(more) > sizeof(m)) {
                        memcpy(m + n, more, sizeof(more));
                        break;
                }
                memcpy(m + n, i ? ", " : " ", i ? 2 : 1);
                n += i ? 2 : 1;
                memcpy(m + n, values[i], l + 1);
                n += l;
        }
        return fail(err, path, "%s", m);
}

static bool value_fits(const ValidateSchema *s, json_t *v) {
        switch (s->type) {
        case VALIDATE_STRING:
        case VALIDATE_ENUM:
                return json_is_string(v);
        case VALIDATE_BOOLEAN:
                return json_is_boolean(v);
        case VALIDATE_INTEGER:
                return json_is_integer(v);
        case VALIDATE_NUMBER:
                return json_is_number(v);
        case VALIDATE_ARRAY:
                return json_is_array(v);
        case VALIDATE_OBJECT:
        case VALIDATE_MAP:
                return json_is_object(v);
        default:
                return false;
        }
}

/* Walk v against s. path holds v's path (pathlen bytes of room) and is restored on return. */
static int walk(const ValidateSchema *s, json_t *v, char *path, size_t pathlen, unsigned depth, ValidateError *err) {
        size_t base = strlen(path);
        const ValidateMember *m;
        const char *k;
        json_t *c;
        size_t i;
        int r;

        if (depth > VALIDATE_DEPTH_MAX)
                return fail(err, path, "nested too deeply");
        if (!value_fits(s, v) && s->type == VALIDATE_ENUM && !json_is_null(v))
                return fail_enum(err, path, s->enum_values);
        if (!value_fits(s, v))
                return fail(err, path, "%s%s", type_message(s->type), json_is_null(v) ? ", not null" : "");

        switch (s->type) {
        case VALIDATE_ENUM:
                for (i = 0; s->enum_values[i]; i++)
                        if (streq(s->enum_values[i], json_string_value(v)))
                                return 0;
                return fail_enum(err, path, s->enum_values);
        case VALIDATE_INTEGER:
                if (json_integer_value(v) < s->int_min || json_integer_value(v) > s->int_max)
                        return fail(err, path, "must be an integer from %lld to %lld", (long long) s->int_min,
                                    (long long) s->int_max);
                return 0;
        case VALIDATE_ARRAY:
                json_array_foreach(v, i, c) {
                        snprintf(path + base, pathlen - base, "[%zu]", i);
                        r = walk(s->items, c, path, pathlen, depth + 1, err);
                        if (r < 0)
                                return r;
                }
                break;
        case VALIDATE_OBJECT:
        case VALIDATE_MAP:
                json_object_foreach(v, k, c) {
                        const ValidateSchema *cs = s->items;

                        snprintf(path + base, pathlen - base, "%s%s", base > 0 ? "." : "", k);
                        if (s->type == VALIDATE_OBJECT) {
                                m = schema_member(s, k);
                                if (!m)
                                        return fail(err, path, "is not a member of %s", s->name);
                                cs = m->schema;
                        }
                        r = walk(cs, c, path, pathlen, depth + 1, err);
                        if (r < 0)
                                return r;
                        r = check_model_id(k, c, path, err);
                        if (r < 0)
                                return r;
                }
                path[base] = '\0';
                for (m = s->type == VALIDATE_OBJECT ? s->members : NULL; m && m->name; m++)
                        if (m->required && !json_object_get(v, m->name)) {
                                snprintf(path + base, pathlen - base, "%s%s", base > 0 ? "." : "", m->name);
                                return fail(err, path, "is required");
                        }
                break;
        default:
                break;
        }
        path[base] = '\0';
        return 0;
}

int validate_json(const ValidateSchema *s, json_t *v, const char *path, ValidateError *err) {
        char p[VALIDATE_PATH_MAX];

        snprintf(p, sizeof(p), "%s", path);
        return walk(s, v, p, sizeof(p), 0, err);
}

/* visierd's rules for one permission of a create or update, after the schema walk. */
static int check_permission(JobOp op, json_t *item, const char *path, json_t *seen_cids, ValidateError *err) {
        char p[VALIDATE_PATH_MAX];
        json_t *v;

        v = json_object_get(item, "displayName");
        path_join(p, sizeof(p), path, ".displayName");
        if (op == JOB_OP_CREATE && !v)
                return fail(err, p, "is required");
        if (v && json_string_length(v) == 0)
                return fail(err, p, "must be a non-empty string");
        v = json_object_get(item, "permissionId");
        path_join(p, sizeof(p), path, ".permissionId");
        if (op == JOB_OP_CREATE && v)
                return fail(err, p, "must not be given when creating a permission (Visier assigns it)");
        if (op == JOB_OP_UPDATE && !v)
                return fail(err, p, "is required to update a permission");
        if (v && json_string_length(v) == 0)
                return fail(err, p, "must be a non-empty string");
        v = json_object_get(item, "correlationId");
        path_join(p, sizeof(p), path, ".correlationId");
        if (v) {
                if (!validate_correlation_id(json_string_value(v)))
                        return fail(err, p, "must be 3 to 64 characters of A-Z a-z 0-9 _ -");
                if (json_object_get(seen_cids, json_string_value(v)))
                        return fail(err, p, "'%s' is used more than once in this request", json_string_value(v));
                if (json_object_set_new(seen_cids, json_string_value(v), json_true()) < 0)
                        return fail_oom(err);
        }
        return 0;
}

/* A value of a merge patch against SCHEMA: null (remove it), an object merged member by member
 * (each member one the schema defines, checked the same way), or a value of the schema's type. */
static int check_patch_value(const ValidateSchema *schema, json_t *v, const char *path, ValidateError *err) {
        char p[VALIDATE_PATH_MAX];
        const char *key;
        json_t *m;
        int r;

        if (json_is_null(v))
                return 0;
        if (json_is_object(v) && (schema->type == VALIDATE_OBJECT || schema->type == VALIDATE_MAP)) {
                json_object_foreach(v, key, m) {
                        const ValidateSchema *sub = schema->type == VALIDATE_MAP ? schema->items : NULL;
                        char member[VALIDATE_PATH_MAX / 2];

                        snprintf(member, sizeof(member), ".%s", key);
                        path_join(p, sizeof(p), path, member);
                        if (!sub) {
                                const ValidateMember *sm = schema_member(schema, key);

                                if (!sm)
                                        return fail(err, p, "is not a member of %s", schema->name);
                                sub = sm->schema;
                        }
                        r = check_patch_value(sub, m, p, err);
                        if (r < 0)
                                return r;
                        r = check_model_id(key, m, p, err);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        return validate_json(schema, v, path, err);
}

/*
 * One merge patch of a PATCH: an object naming its permission (permissionId, a non-empty string)
 * whose other members are members of PermissionDTO, each either null (remove it; not
 * displayName, which a permission must keep), an object patched member by member the same
 * way, or of the member's type. The permission after the patch is checked in full when it is
 * sent.
 */
static int check_patch(const ValidateSchema *item_schema, json_t *item, const char *path, ValidateError *err) {
        char p[VALIDATE_PATH_MAX];
        const char *key;
        json_t *v;
        int r;

        if (!json_is_object(item))
                return fail(err, path, "must be a JSON merge patch object naming its permissionId");
        v = json_object_get(item, "permissionId");
        path_join(p, sizeof(p), path, ".permissionId");
        if (!json_is_string(v) || json_string_length(v) == 0)
                return fail(err, p, "is required: the permission the patch changes");
        json_object_foreach(item, key, v) {
                const ValidateMember *m = schema_member(item_schema, key);
                char member[VALIDATE_PATH_MAX / 2];

                snprintf(member, sizeof(member), ".%s", key);
                path_join(p, sizeof(p), path, member);
                if (!m)
                        return fail(err, p, "is not a member of %s", item_schema->name);
                if (json_is_null(v)) {
                        if (streq(key, "displayName") || streq(key, "permissionId"))
                                return fail(err, p, "cannot be removed");
                        continue;
                }
                if (streq(key, "correlationId"))
                        return fail(err, p, "cannot be set by a patch (it names a create)");
                if (streq(key, "displayName") && json_string_length(v) == 0)
                        return fail(err, p, "must be a non-empty string");
                /* An object member is itself a merge patch: its members may be null. */
                r = check_patch_value(m->schema, v, p, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* visierd's rules for one assignment of an assign or remove, after the schema walk. */
static int check_assignment(json_t *item, const char *path, ValidateError *err) {
        char p[VALIDATE_PATH_MAX];
        json_t *v, *u;
        size_t i;

        v = json_object_get(item, "permissionId");
        path_join(p, sizeof(p), path, ".permissionId");
        if (!v)
                return fail(err, p, "is required");
        if (json_string_length(v) == 0)
                return fail(err, p, "must be a non-empty string");
        v = json_object_get(item, "userIds");
        path_join(p, sizeof(p), path, ".userIds");
        if (!v)
                return fail(err, p, "is required");
        if (json_array_size(v) == 0)
                return fail(err, p, "must be a non-empty array of user IDs");
        json_array_foreach(v, i, u) {
                if (json_string_length(u) == 0) {
                        char idx[32];
                        snprintf(idx, sizeof(idx), ".userIds[%zu]", i);
                        path_join(p, sizeof(p), path, idx);
                        return fail(err, p, "must be a non-empty string");
                }
        }
        return 0;
}

/* The operation's list member: an array of 1 to max_items entries, each of the schema's item
 * type and obeying visierd's rules. */
static int check_items(JobOp op, const ValidateSchema *s, json_t *items, size_t max_items, ValidateError *err) {
        const char *member = job_op_items_member(op);
        json_auto_t *seen = NULL;
        char path[VALIDATE_PATH_MAX];
        json_t *item;
        size_t i;
        int r;

        if (!json_is_array(items))
                return fail(err, member, "must be an array");
        if (json_array_size(items) == 0 || json_array_size(items) > max_items)
                return fail(err, member, "must hold 1 to %zu entries (has %zu)", max_items, json_array_size(items));
        seen = json_object();
        if (!seen)
                return fail_oom(err);
        json_array_foreach(items, i, item) {
                snprintf(path, sizeof(path), "%s[%zu]", member, i);
                switch (op) {
                case JOB_OP_DELETE:
                case JOB_OP_REVERT:
                        /* Stricter than the schema's "a string": checked first for its message. */
                        if (!json_is_string(item) || json_string_length(item) == 0)
                                return fail(err, path, "must be a non-empty permission ID string");
                        r = validate_json(s->items, item, path, err);
                        break;
                case JOB_OP_CREATE:
                case JOB_OP_UPDATE:
                        r = validate_json(s->items, item, path, err);
                        if (r >= 0)
                                r = check_permission(op, item, path, seen, err);
                        break;
                case JOB_OP_ASSIGN:
                case JOB_OP_REMOVE:
                        r = validate_json(s->items, item, path, err);
                        if (r >= 0)
                                r = check_assignment(item, path, err);
                        break;
                case JOB_OP_PATCH:
                        r = check_patch(s->items, item, path, err);
                        if (r >= 0) {
                                const char *id = json_string_value(json_object_get(item, "permissionId"));

                                /* Two patches of one permission in one request: send two requests. */
                                if (json_object_get(seen, id))
                                        r = fail(err, path, "patches permission %s a second time in this request", id);
                                else if (json_object_set_new(seen, id, json_true()) < 0)
                                        r = fail_oom(err);
                        }
                        break;
                default:
                        r = fail(err, "$", "unsupported operation");
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

int validate_write(JobOp op, const char *body, size_t len, size_t max_items, json_t **ret, ValidateError *err) {
        const ValidateSchema *schema = validate_request_schema(op);
        json_auto_t *root = NULL;
        const ValidateMember *m;
        const char *member, *k;
        json_error_t jerr;
        json_t *v;
        int r;

        if (!schema)
                return fail(err, "$", "unsupported operation");
        member = job_op_items_member(op);
        m = schema_member(schema, member);
        if (!m || m->schema->type != VALIDATE_ARRAY)
                return fail(err, "$", "unsupported operation");
        if (!body || len == 0)
                return fail(err, "$", "a JSON body is required");
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return fail(err, "$", "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        if (!json_is_object(root))
                return fail(err, "$", "must be a JSON object with a '%s' array", member);
        /* Members in the order the client wrote them, so the first bad one is the one named. */
        json_object_foreach(root, k, v) {
                if (streq(k, member))
                        r = check_items(op, m->schema, v, max_items, err);
                else if (schema_member(schema, k))
                        r = validate_json(schema_member(schema, k)->schema, v, k, err);
                else
                        r = fail(err, k, "is not a member of %s", schema->name);
                if (r < 0)
                        return r;
        }
        if (!json_object_get(root, member))
                return fail(err, member, "is required");
        *ret = TAKE_PTR(root);
        return 0;
}

/* Length of the UTF-8 sequence at s (n bytes left) and its code point, or 0 when it is not
 * well-formed (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *ret_cp) {
        uint32_t cp;
        size_t len;

        if (s[0] < 0x80) {
                *ret_cp = s[0];
                return 1;
        }
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                len = 2, cp = s[0] & 0x1f;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                len = 3, cp = s[0] & 0x0f;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                len = 4, cp = s[0] & 0x07;
        else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        *ret_cp = cp;
        return len;
}

static int check_stored_value(const char *name, const char *value, size_t len, ValidateError *err) {
        const unsigned char *s = (const unsigned char *) value;

        if (len > VALIDATE_HEADER_VALUE_MAX)
                return fail(err, name, "must be at most %d bytes", VALIDATE_HEADER_VALUE_MAX);
        for (size_t i = 0; i < len;) {
                uint32_t cp;
                size_t l = utf8_decode(s + i, len - i, &cp);

                if (l == 0)
                        return fail(err, name, "must be valid UTF-8");
                if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
                        return fail(err, name, "must not contain control characters");
                i += l;
        }
        return 0;
}

int validate_header_value(const char *name, const char *value, ValidateError *err) {
        if (!value)
                return 0;
        return check_stored_value(name, value, strlen(value), err);
}

int validate_tenant_code(const char *value, size_t len, ValidateError *err) {
        if (!value)
                return 0;
        return check_stored_value("tenantCode", value, len, err);
}

int validate_non_versioned(const char *value, const char **ret_normalized, ValidateError *err) {
        return validate_boolean_header("NonVersioned", value, ret_normalized, err);
}

int validate_boolean_header(const char *name, const char *value, const char **ret_normalized, ValidateError *err) {
        static const char *const trues[] = { "true", "True", "TRUE" }, *const falses[] = { "false", "False", "FALSE" };

        if (!value) {
                *ret_normalized = NULL;
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(trues); i++) {
                if (streq(value, trues[i])) {
                        *ret_normalized = "true";
                        return 0;
                }
                if (streq(value, falses[i])) {
                        *ret_normalized = "false";
                        return 0;
                }
        }
        return fail(err, name, "must be true or false");
}
