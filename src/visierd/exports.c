/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named export definitions (see exports.h).
 */
#include <dirent.h>
#include <regex.h>
#include <stdarg.h>
#include <strings.h>

#include "exports.h"

static const char *const format_names[_EXPORT_FORMAT_MAX] = {
        [EXPORT_CSV] = "csv", [EXPORT_JSONL] = "jsonl", [EXPORT_JSON] = "json",
};
static const char *const format_types[_EXPORT_FORMAT_MAX] = {
        [EXPORT_CSV] = "text/csv", [EXPORT_JSONL] = "application/jsonlines", [EXPORT_JSON] = "application/json",
};
static const char *const queries[] = { "aggregate", "list", "sql", "snapshot" };

const char *export_format_to_string(ExportFormat f) {
        return f >= 0 && f < _EXPORT_FORMAT_MAX ? format_names[f] : NULL;
}

ExportFormat export_format_from_string(const char *s) {
        for (int i = 0; s && i < _EXPORT_FORMAT_MAX; i++)
                if (streq(format_names[i], s))
                        return (ExportFormat) i;
        return _EXPORT_FORMAT_INVALID;
}

const char *export_format_media_type(ExportFormat f) {
        return f >= 0 && f < _EXPORT_FORMAT_MAX ? format_types[f] : NULL;
}

ExportFormat export_format_from_accept(const char *accept) {
        if (!accept)
                return _EXPORT_FORMAT_INVALID;
        /* The first listed type we serve wins (quality values are not weighed). */
        for (const char *p = accept; p && *p;) {
                const char *end = strchr(p, ',');
                size_t n = end ? (size_t) (end - p) : strlen(p);
                const char *semi = memchr(p, ';', n);

                if (semi)
                        n = (size_t) (semi - p);
                while (n > 0 && *p == ' ')
                        p++, n--;
                while (n > 0 && p[n - 1] == ' ')
                        n--;
                for (int i = 0; i < _EXPORT_FORMAT_MAX; i++)
                        if (strlen(format_types[i]) == n && strncasecmp(p, format_types[i], n) == 0)
                                return (ExportFormat) i;
                if (n == 20 && strncasecmp(p, "application/x-ndjson", n) == 0)
                        return EXPORT_JSONL;
                p = end ? end + 1 : NULL;
        }
        return _EXPORT_FORMAT_INVALID;
}

json_t *json_pointer_get(json_t *root, const char *pointer) {
        char token[256];
        json_t *cur = root;

        if (!pointer || (*pointer != '/' && *pointer != '\0'))
                return NULL;
        while (*pointer == '/') {
                const char *next = strchr(pointer + 1, '/');
                size_t n = next ? (size_t) (next - pointer - 1) : strlen(pointer + 1), o = 0;

                if (n >= sizeof(token))
                        return NULL;
                for (size_t i = 0; i < n; i++) {
                        char c = pointer[1 + i];
                        if (c == '~' && i + 1 < n && (pointer[2 + i] == '0' || pointer[2 + i] == '1')) {
                                token[o++] = pointer[2 + i] == '0' ? '~' : '/';
                                i++;
                        } else
                                token[o++] = c;
                }
                token[o] = '\0';
                if (json_is_object(cur))
                        cur = json_object_get(cur, token);
                else if (json_is_array(cur)) {
                        char *end;
                        unsigned long idx = strtoul(token, &end, 10);
                        cur = *token && !*end ? json_array_get(cur, idx) : NULL;
                } else
                        cur = NULL;
                if (!cur)
                        return NULL;
                pointer += 1 + n;
        }
        return cur;
}

static bool name_ok(const char *n) {
        size_t len = strlen(n);

        if (len == 0 || len > EXPORT_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9') ||
                      n[i] == '-' || n[i] == '_'))
                        return false;
        return true;
}

_printf_(3, 4) static int fail(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static bool value_ok(json_t *param, const char *value) {
        const char *pattern = json_string_value(json_object_get(param, "pattern"));
        size_t n = strlen(value);
        regex_t re;
        bool ok;

        if (n == 0 || n > EXPORT_VALUE_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) value[i] < 0x20 || value[i] == 0x7f)
                        return false;
        if (!pattern)
                return true;
        if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
                return false;
        ok = regexec(&re, value, 0, NULL, 0) == 0;
        regfree(&re);
        return ok;
}

int export_validate(const char *name, json_t *def, char *err, size_t errlen) {
        json_t *body, *params, *p, *v;
        const char *q, *k;
        bool known = false;

        if (!name_ok(name))
                return fail(err, errlen, "the name '%s' must be 1 to %d characters of A-Z a-z 0-9 - _", name,
                            EXPORT_NAME_MAX);
        if (!json_is_object(def))
                return fail(err, errlen, "must be a JSON object");
        json_object_foreach(def, k, v)
                if (!streq(k, "description") && !streq(k, "query") && !streq(k, "format") && !streq(k, "body") &&
                    !streq(k, "parameters"))
                        return fail(err, errlen, "%s: unknown member (description, query, format, body, parameters)", k);
        q = json_string_value(json_object_get(def, "query"));
        for (size_t i = 0; q && i < ELEMENTSOF(queries); i++)
                known |= streq(q, queries[i]);
        if (!known)
                return fail(err, errlen, "query: must be aggregate, list, sql or snapshot");
        v = json_object_get(def, "format");
        if (v && export_format_from_string(json_string_value(v)) < 0)
                return fail(err, errlen, "format: must be csv, jsonl or json");
        v = json_object_get(def, "description");
        if (v && !json_is_string(v))
                return fail(err, errlen, "description: must be a string");
        body = json_object_get(def, "body");
        if (!json_is_object(body))
                return fail(err, errlen, "body: must be Visier's query body, a JSON object");
        params = json_object_get(def, "parameters");
        if (params && !json_is_object(params))
                return fail(err, errlen, "parameters: must be an object");
        if (json_object_size(params) > EXPORT_PARAMS_MAX)
                return fail(err, errlen, "parameters: at most %d", EXPORT_PARAMS_MAX);
        json_object_foreach(params, k, p) {
                const char *path = json_string_value(json_object_get(p, "path"));
                const char *def_value = json_string_value(json_object_get(p, "default"));
                const char *pattern = json_string_value(json_object_get(p, "pattern"));
                json_t *target;
                regex_t re;

                if (!name_ok(k))
                        return fail(err, errlen, "parameters.%s: a name is A-Z a-z 0-9 - _", k);
                if (!json_is_object(p))
                        return fail(err, errlen, "parameters.%s: must be an object", k);
                if (!path)
                        return fail(err, errlen, "parameters.%s.path: a JSON pointer into body is required", k);
                target = json_pointer_get(body, path);
                if (!target)
                        return fail(err, errlen, "parameters.%s.path: %s does not exist in body", k, path);
                if (!json_is_string(target))
                        return fail(err, errlen, "parameters.%s.path: %s must name a string in body", k, path);
                if (pattern) {
                        if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
                                return fail(err, errlen, "parameters.%s.pattern: not a valid regular expression", k);
                        regfree(&re);
                }
                if (json_object_get(p, "default") && !def_value)
                        return fail(err, errlen, "parameters.%s.default: must be a string", k);
                if (def_value && !value_ok(p, def_value))
                        return fail(err, errlen, "parameters.%s.default: '%s' does not match the pattern", k, def_value);
        }
        return 0;
}

Exports *exports_free(Exports *e) {
        if (!e)
                return NULL;
        for (size_t i = 0; i < e->n; i++) {
                free(e->items[i].name);
                free(e->items[i].description);
                free(e->items[i].query);
                json_decref(e->items[i].definition);
        }
        free(e);
        return NULL;
}

void exports_errors_free(char **errors, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(errors[i]);
        free(errors);
}

static void add_error(char ***errors, size_t *n, const char *fmt, ...) _printf_(3, 4);
static void add_error(char ***errors, size_t *n, const char *fmt, ...) {
        char **e = realloc(*errors, (*n + 1) * sizeof(char *));
        va_list ap;

        if (!e)
                return;
        *errors = e;
        va_start(ap, fmt);
        if (vasprintf(&e[*n], fmt, ap) >= 0)
                (*n)++;
        va_end(ap);
}

static int compare_names(const void *a, const void *b) {
        return strcmp(((const Export *) a)->name, ((const Export *) b)->name);
}

int exports_load(const char *dir, Exports **ret, char ***ret_errors, size_t *ret_n_errors) {
        _cleanup_(exports_freep) Exports *e = NULL;
        char **errors = NULL;
        size_t n_errors = 0;
        struct dirent *de;
        DIR *d;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        d = dir ? opendir(dir) : NULL;
        if (!d && dir && errno != ENOENT)
                add_error(&errors, &n_errors, "%s: cannot read the exports directory: %s", dir, strerror(errno));
        while (d && (de = readdir(d))) {
                size_t len = strlen(de->d_name);
                char path[1024], err[EXPORT_ERROR_MAX], name[EXPORT_NAME_MAX * 2];
                json_error_t jerr;
                json_t *def;

                if (len <= 5 || strcmp(de->d_name + len - 5, ".json") != 0 || de->d_name[0] == '.')
                        continue;
                snprintf(name, sizeof(name), "%.*s", (int) (len - 5), de->d_name);
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                def = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
                if (!def) {
                        add_error(&errors, &n_errors, "%s:%d: not valid JSON: %s", path, jerr.line, jerr.text);
                        continue;
                }
                if (export_validate(name, def, err, sizeof(err)) < 0) {
                        add_error(&errors, &n_errors, "%s: %s", path, err);
                        json_decref(def);
                        continue;
                }
                if (e->n >= EXPORTS_MAX) {
                        add_error(&errors, &n_errors, "%s: more than %d exports", path, EXPORTS_MAX);
                        json_decref(def);
                        continue;
                }
                e->items[e->n] = (Export) {
                        .name = strdup(name),
                        .description = strdup(json_string_value(json_object_get(def, "description")) ?: ""),
                        .query = strdup(json_string_value(json_object_get(def, "query"))),
                        .format = json_object_get(def, "format")
                                          ? export_format_from_string(json_string_value(json_object_get(def, "format")))
                                          : EXPORT_CSV,
                        .definition = def,
                };
                e->n++;
        }
        if (d)
                closedir(d);
        qsort(e->items, e->n, sizeof(e->items[0]), compare_names);
        if (n_errors > 0) {
                *ret_errors = errors;
                *ret_n_errors = n_errors;
                return -EINVAL;
        }
        free(errors);
        *ret_errors = NULL;
        *ret_n_errors = 0;
        *ret = TAKE_PTR(e);
        return 0;
}

const Export *exports_find(const Exports *e, const char *name) {
        for (size_t i = 0; e && i < e->n; i++)
                if (streq(e->items[i].name, name))
                        return &e->items[i];
        return NULL;
}

json_t *exports_describe(const Exports *e) {
        json_t *list = json_array();

        for (size_t i = 0; e && i < e->n; i++) {
                const Export *x = &e->items[i];
                json_t *params = json_object(), *p;
                const char *k;

                json_object_foreach(json_object_get(x->definition, "parameters"), k, p)
                        json_object_set_new(params, k,
                                            json_pack("{s:O?, s:O?, s:O?}", "default", json_object_get(p, "default"),
                                                      "pattern", json_object_get(p, "pattern"), "description",
                                                      json_object_get(p, "description")));
                json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:o}", "name", x->name, "description",
                                                      x->description, "query", x->query, "format",
                                                      export_format_to_string(x->format), "parameters", params));
        }
        return json_pack("{s:o}", "exports", list);
}

int export_build_body(const Export *x, const ExportParam *params, size_t n, json_t **ret, char *err, size_t errlen) {
        json_t *defs = json_object_get(x->definition, "parameters"), *body, *p;
        const char *k;

        for (size_t i = 0; i < n; i++) {
                p = json_object_get(defs, params[i].name);
                if (!p)
                        return fail(err, errlen, "%s: export %s has no such parameter", params[i].name, x->name);
                if (!value_ok(p, params[i].value))
                        return fail(err, errlen, "%s: '%.64s' is not a valid value%s%s%s", params[i].name,
                                    params[i].value, json_object_get(p, "pattern") ? " (it must match " : "",
                                    json_object_get(p, "pattern") ? json_string_value(json_object_get(p, "pattern")) : "",
                                    json_object_get(p, "pattern") ? ")" : "");
        }
        body = json_deep_copy(json_object_get(x->definition, "body"));
        if (!body)
                return -ENOMEM;
        json_object_foreach(defs, k, p) {
                const char *value = json_string_value(json_object_get(p, "default"));
                json_t *target = json_pointer_get(body, json_string_value(json_object_get(p, "path")));

                for (size_t i = 0; i < n; i++)
                        if (streq(params[i].name, k))
                                value = params[i].value;
                if (value && target)
                        json_string_set(target, value);
        }
        *ret = body;
        return 0;
}
