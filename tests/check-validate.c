/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for validation: write bodies against Visier's request schemas (exact paths and
 * messages for the bodies of issue 9, every member of the table made wrong in turn), the
 * six operations' valid bodies, and the header, tenantCode and NonVersioned helpers. */
#include <check.h>
#include <stdlib.h>

#include "macro.h"
#include "validate.h"

/* validate_write on a C string; on success the parsed root is dropped. */
static int check_body(JobOp op, const char *body, ValidateError *e) {
        json_t *root = NULL;
        int r;

        memset(e, 0, sizeof(*e));
        r = validate_write(op, body, strlen(body), 1000, &root, e);
        if (r >= 0) {
                ck_assert_ptr_nonnull(root);
                json_decref(root);
        }
        return r;
}

#define assert_refused(op, body, want_path, want_message)                                    \
        do {                                                                                \
                ValidateError _e;                                                           \
                ck_assert_int_eq(check_body((op), (body), &_e), -EINVAL);                   \
                ck_assert_str_eq(_e.path, (want_path));                                     \
                ck_assert_str_eq(_e.message, (want_message));                               \
        } while (0)

#define assert_accepted(op, body)                                                            \
        do {                                                                                \
                ValidateError _e;                                                           \
                int _r = check_body((op), (body), &_e);                                     \
                ck_assert_msg(_r == 0, "refused: %s: %s", _e.path, _e.message);             \
        } while (0)

/* The bodies of issue 9: each was queued and sent before. */
START_TEST(test_issue_bodies) {
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":["
                       "{\"analyticObjectId\":\"Employee\",\"allDataPointAccess\":true},"
                       "{\"analyticObjectId\":\"Employee\",\"allDataPointAccess\":\"yes\"}]}]}",
                       "permissions[0].dataSecurityProfiles[1].allDataPointAccess", "must be a boolean");
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"adminCapabilityConfig\":{\"capabilities\":\"data\"}}]}",
                       "permissions[0].adminCapabilityConfig.capabilities", "must be an array");
        assert_refused(JOB_OP_UPDATE,
                       "{\"permissions\":[{\"permissionId\":\"p1\",\"dataSecurityProfiles\":["
                       "{\"analyticObjectId\":\"Employee\",\"analyticObjectStatus\":\"Bogus\"}]}]}",
                       "permissions[0].dataSecurityProfiles[0].analyticObjectStatus",
                       "must be one of Unset, Valid, NoData, NotFound");
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\",\"description\":5}]}",
                       "permissions[0].description", "must be a string");
        assert_refused(JOB_OP_ASSIGN,
                       "{\"permissions\":[{\"permissionId\":\"p1\",\"userIds\":[\"u1\"]}],\"targetProjectForTenantsList\":\"x\"}",
                       "targetProjectForTenantsList", "must be an object");
        /* The same members with right values pass. */
        assert_accepted(JOB_OP_ASSIGN,
                        "{\"permissions\":[{\"permissionId\":\"p1\",\"userIds\":[\"u1\"]}],\"targetProjectForTenantsList\":"
                        "{\"targetProjectForTenants\":[{\"tenantCode\":\"WFF_j1r~c7o\",\"projectId\":\"p-1\"}]}}");
        assert_accepted(JOB_OP_CREATE,
                        "{\"permissions\":[{\"displayName\":\"a\",\"description\":\"d\",\"adminCapabilityConfig\":"
                        "{\"capabilities\":[\"data\"]},\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\","
                        "\"allDataPointAccess\":false,\"analyticObjectStatus\":\"Valid\"}]}]}");
}
END_TEST

START_TEST(test_unknown_members) {
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\"}],\"dryRun\":true}", "dryRun",
                       "is not a member of admin.PermissionsListDTO");
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\",\"name\":\"b\"}]}", "permissions[0].name",
                       "is not a member of servicing.PermissionDTO");
        /* A misspelt member: Visier would drop it and write the permission without it. */
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\","
                       "\"memberFilterConfig\":[]}]}]}",
                       "permissions[0].dataSecurityProfiles[0].memberFilterConfig",
                       "is not a member of servicing.DataSecurityProfileDTO");
        assert_refused(JOB_OP_DELETE, "{\"permissionIds\":[\"p1\"],\"permissions\":[]}", "permissions",
                       "is not a member of servicing.DeletePermissionsRequestDTO");
        assert_refused(JOB_OP_REMOVE,
                       "{\"permissions\":[{\"permissionId\":\"p1\",\"userIds\":[\"u1\"],\"tenantCode\":\"t\"}]}",
                       "permissions[0].tenantCode", "is not a member of servicing.AssignRevokePermissionRequestDTO");
        /* correlationId, which visierd itself adds to creates, is a PermissionDTO member. */
        assert_accepted(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\",\"correlationId\":\"visierd-1\"}]}");
}
END_TEST

START_TEST(test_nested_enums) {
        const char *prefix = "permissions[0].dataSecurityProfiles[0].memberFilterConfigs[0].dimensionFilters[1]";
        char want[256];

        snprintf(want, sizeof(want), "%s.staticDimensionFilter.memberSelections[0].dimensionMemberStatus", prefix);
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\","
                       "\"memberFilterConfigs\":[{\"dimensionFilters\":[{\"staticDimensionFilter\":{\"dimensionId\":\"Location\"}},"
                       "{\"staticDimensionFilter\":{\"dimensionId\":\"Location\",\"memberSelections\":[{\"namePath\":[\"Canada\"],"
                       "\"dimensionMemberStatus\":\"Gone\"}]}}]}]}]}]}",
                       want, "must be one of Unset, Valid, NoData, NotFound");
        snprintf(want, sizeof(want), "%s.dynamicDimensionFilter.dynamicPropertyMappings[0].userProperty.name", prefix);
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\","
                       "\"memberFilterConfigs\":[{\"dimensionFilters\":[{},{\"dynamicDimensionFilter\":{\"dimensionId\":\"Location\","
                       "\"dynamicPropertyMappings\":[{\"hierarchyPropertyId\":\"Location.Country\",\"userProperty\":{\"name\":[]}}]}}]}]}]}]}",
                       want, "must be a string");
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\","
                       "\"propertySetConfig\":{\"propertyAccessConfigs\":[{\"propertyId\":\"Employee.Salary\",\"accessLevel\":\"Full\"}]}}]}]}",
                       "permissions[0].dataSecurityProfiles[0].propertySetConfig.propertyAccessConfigs[0].accessLevel",
                       "must be one of None, Aggregate, Detailed");
        /* An enum member that is not a string at all hears the values too. */
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectStatus\":1}]}]}",
                       "permissions[0].dataSecurityProfiles[0].analyticObjectStatus",
                       "must be one of Unset, Valid, NoData, NotFound");
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectStatus\":null}]}]}",
                       "permissions[0].dataSecurityProfiles[0].analyticObjectStatus", "must be a string, not null");
        /* Enum values are case-sensitive, as Visier's are. */
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\","
                       "\"propertySetConfig\":{\"propertyAccessConfigs\":[{\"propertyId\":\"Employee.Salary\",\"accessLevel\":\"detailed\"}]}}]}]}",
                       "permissions[0].dataSecurityProfiles[0].propertySetConfig.propertyAccessConfigs[0].accessLevel",
                       "must be one of None, Aggregate, Detailed");
}
END_TEST

/* Every member of servicing.PermissionDTO, recursively, with a valid value. */
static const char full_create[] =
        "{\"permissions\":[{"
        "\"displayName\":\"Diversity Access\",\"description\":\"HR partners\",\"correlationId\":\"div-access-1\","
        "\"dataSecurityProfiles\":[{"
        "  \"analyticObjectId\":\"Employee\",\"allDataPointAccess\":false,\"analyticObjectStatus\":\"Valid\","
        "  \"propertySetConfig\":{"
        "    \"propertyAccessConfigs\":[{\"propertyId\":\"Employee.Salary\",\"analyticObjectId\":\"Employee\","
        "      \"analyticObjectReferencePaths\":[\"Employee.Manager\"],\"accessLevel\":\"Aggregate\",\"propertyStatus\":\"Unset\"}],"
        "    \"shareableDataAccessSet\":{\"dataAccessSetId\":\"das-1\"}},"
        "  \"memberFilterConfigs\":[{\"dimensionFilters\":["
        "    {\"staticDimensionFilter\":{\"dimensionId\":\"Location\",\"subjectReferencePath\":[\"Employee\"],"
        "      \"memberSelections\":[{\"namePath\":[\"North America\",\"Canada\"],\"excluded\":false,\"dimensionMemberStatus\":\"Valid\"}],"
        "      \"dimensionStatus\":\"Valid\"}},"
        "    {\"dynamicDimensionFilter\":{\"dimensionId\":\"Organization_Hierarchy\",\"subjectReferencePath\":[\"Employee\"],"
        "      \"dynamicPropertyMappings\":[{\"hierarchyPropertyId\":\"Organization_Hierarchy.Manager_ID\","
        "        \"userProperty\":{\"name\":\"EmployeeID\"},\"hierarchyPropertyStatus\":\"NoData\"}],"
        "      \"dimensionStatus\":\"NotFound\"}}]}],"
        "  \"inheritedAccessConfigs\":[{\"analyticObjectId\":\"Employee_Exit\",\"removeAccess\":true,"
        "    \"memberFilterConfigs\":[{\"dimensionFilters\":[]}]}],"
        "  \"inheritedReferenceMemberFilterConfig\":{\"targetAnalyticObjectId\":\"Requisition\",\"analyticObjectReference\":\"Requisition\"}"
        "}],"
        "\"adminCapabilityConfig\":{\"allCapabilitiesAccess\":false,\"capabilities\":[\"data\",\"analysis\"]},"
        "\"roleModulesConfig\":{\"contentPackageIds\":[\"cp-1\"]},"
        "\"sourceSecurityConfig\":{\"sourceSecurityProfiles\":[{\"sourceId\":\"src-1\"}],\"hasWriteAccessToAllSources\":false},"
        "\"targetSecurityConfig\":{\"targetSecurityForAll\":{\"accessToAllTargets\":false,\"targetIds\":[\"t1\"]},"
        "  \"targetSecurityProfiles\":[{\"dataCategoryId\":\"dc-1\",\"accessToAllTargets\":true,\"targetIds\":[]}]}"
        "}]}";

START_TEST(test_valid_bodies) {
        json_t *root = NULL;
        ValidateError e;

        assert_accepted(JOB_OP_CREATE, full_create);
        assert_accepted(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\"},{\"displayName\":\"b\"}]}");
        assert_accepted(JOB_OP_UPDATE, "{\"permissions\":[{\"permissionId\":\"p1\",\"displayName\":\"renamed\","
                                       "\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Employee\",\"allDataPointAccess\":true}]}]}");
        assert_accepted(JOB_OP_DELETE, "{\"permissionIds\":[\"p1\",\"p2\"]}");
        assert_accepted(JOB_OP_REVERT, "{\"permissionIds\":[\"p1\"]}");
        assert_accepted(JOB_OP_ASSIGN, "{\"permissions\":[{\"permissionId\":\"p1\",\"userIds\":[\"u1\",\"u2\"]}]}");
        assert_accepted(JOB_OP_REMOVE,
                        "{\"permissions\":[{\"permissionId\":\"p1\",\"userIds\":[\"u1\"]}],"
                        "\"targetProjectForTenantsList\":{\"targetProjectForTenants\":[]}}");
        /* The parsed body is handed back whole. */
        ck_assert_int_eq(validate_write(JOB_OP_CREATE, full_create, strlen(full_create), 10, &root, &e), 0);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(root, "permissions"), 0),
                                                           "correlationId")),
                         "div-access-1");
        json_decref(root);
}
END_TEST

START_TEST(test_visierd_rules_kept) {
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"description\":\"x\"}]}", "permissions[0].displayName", "is required");
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"\"}]}", "permissions[0].displayName",
                       "must be a non-empty string");
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\",\"permissionId\":\"p\"}]}",
                       "permissions[0].permissionId",
                       "must not be given when creating a permission (Visier assigns it)");
        assert_refused(JOB_OP_UPDATE, "{\"permissions\":[{\"displayName\":\"a\"}]}", "permissions[0].permissionId",
                       "is required to update a permission");
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\",\"correlationId\":\"x!\"}]}",
                       "permissions[0].correlationId", "must be 3 to 64 characters of A-Z a-z 0-9 _ -");
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"correlationId\":\"same\"},{\"displayName\":\"b\",\"correlationId\":\"same\"}]}",
                       "permissions[1].correlationId", "'same' is used more than once in this request");
        assert_refused(JOB_OP_CREATE,
                       "{\"permissions\":[{\"displayName\":\"a\",\"dataSecurityProfiles\":[{\"analyticObjectId\":\"Em-ployee\"}]}]}",
                       "permissions[0].dataSecurityProfiles[0].analyticObjectId",
                       "'Em-ployee' is not a valid ID: use A-Z a-z 0-9 and _, 3 to 200 characters, not starting with a digit");
        assert_refused(JOB_OP_CREATE, "{}", "permissions", "is required");
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[]}", "permissions", "must hold 1 to 1000 entries (has 0)");
        assert_refused(JOB_OP_CREATE, "[]", "$", "must be a JSON object with a 'permissions' array");
        assert_refused(JOB_OP_DELETE, "{\"permissionIds\":[\"ok\",3]}", "permissionIds[1]",
                       "must be a non-empty permission ID string");
        assert_refused(JOB_OP_REVERT, "{\"permissionIds\":[\"\"]}", "permissionIds[0]", "must be a non-empty permission ID string");
        assert_refused(JOB_OP_ASSIGN, "{\"permissions\":[{\"permissionId\":\"p\"}]}", "permissions[0].userIds", "is required");
        assert_refused(JOB_OP_ASSIGN, "{\"permissions\":[{\"permissionId\":\"p\",\"userIds\":[]}]}", "permissions[0].userIds",
                       "must be a non-empty array of user IDs");
        assert_refused(JOB_OP_REMOVE, "{\"permissions\":[{\"permissionId\":\"p\",\"userIds\":[\"\"]}]}",
                       "permissions[0].userIds[0]", "must be a non-empty string");
        assert_refused(JOB_OP_REMOVE, "{\"permissions\":[{\"userIds\":[\"u\"]}]}", "permissions[0].permissionId", "is required");
        /* null is no value of a string member: leave the member out instead. */
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\",\"description\":null}]}",
                       "permissions[0].description", "must be a string, not null");
        /* 5.0 is a number, not a boolean, and not a string. */
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":5.0}]}", "permissions[0].displayName", "must be a string");
        /* Not a write. */
        assert_refused(JOB_OP_EXPORT, "{}", "$", "unsupported operation");
        ck_assert_ptr_null(validate_request_schema(JOB_OP_EXPORT));
        ck_assert_ptr_null(validate_request_schema(_JOB_OP_INVALID));
}
END_TEST

/* The first bad member in the order the client wrote them is the one named. */
START_TEST(test_first_bad_member_in_document_order) {
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"description\":5,\"displayName\":7}]}", "permissions[0].description",
                       "must be a string");
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":7,\"description\":5}]}", "permissions[0].displayName",
                       "must be a string");
        assert_refused(JOB_OP_ASSIGN, "{\"targetProjectForTenantsList\":[],\"permissions\":[7]}", "targetProjectForTenantsList",
                       "must be an object");
        assert_refused(JOB_OP_ASSIGN, "{\"permissions\":[7],\"targetProjectForTenantsList\":[]}", "permissions[0]",
                       "must be an object");
        assert_refused(JOB_OP_CREATE, "{\"permissions\":[{\"displayName\":\"a\"},{\"displayName\":true},{\"bogus\":1}]}",
                       "permissions[1].displayName", "must be a string");
}
END_TEST

/* A valid value for every member of s, recursively (the first enum value, one array element). */
static json_t *build_valid(const ValidateSchema *s) {
        json_t *v;

        switch (s->type) {
        case VALIDATE_STRING:
                return json_string("Abc_1");
        case VALIDATE_BOOLEAN:
                return json_true();
        case VALIDATE_INTEGER:
                return json_integer(s->int_min);
        case VALIDATE_NUMBER:
                return json_real(1.5);
        case VALIDATE_ENUM:
                return json_string(s->enum_values[0]);
        case VALIDATE_ARRAY:
                v = json_array();
                json_array_append_new(v, build_valid(s->items));
                return v;
        case VALIDATE_OBJECT:
                v = json_object();
                for (const ValidateMember *m = s->members; m->name; m++)
                        json_object_set_new(v, m->name, build_valid(m->schema));
                return v;
        case VALIDATE_MAP:
                v = json_object();
                json_object_set_new(v, "key", build_valid(s->items));
                return v;
        default:
                ck_abort_msg("unknown type %d", s->type);
                return NULL;
        }
}

/* A body the operation accepts with every member of its schema present. */
static json_t *build_full_body(JobOp op) {
        json_t *body = build_valid(validate_request_schema(op));
        json_t *item = json_array_get(json_object_get(body, job_op_items_member(op)), 0);

        if (op == JOB_OP_CREATE)
                json_object_del(item, "permissionId");
        return body;
}

typedef struct Mutation {
        JobOp op;
        unsigned count;
} Mutation;

static void check_mutated(Mutation *mu, json_t *body, const char *path, const char *want) {
        ValidateError e;
        char *text = json_dumps(body, JSON_COMPACT);
        int r;

        ck_assert_ptr_nonnull(text);
        r = check_body(mu->op, text, &e);
        ck_assert_msg(r == -EINVAL, "%s accepted: %s", job_op_to_string(mu->op), text);
        ck_assert_msg(streq(e.path, path) && streq(e.message, want), "%s %s: want \"%s: %s\", got \"%s: %s\"",
                      job_op_to_string(mu->op), text, path, want, e.path, e.message);
        mu->count++;
        free(text);
}

/* Make each member below v wrong in turn (its type, its enum value, an unknown member beside
 * it) and check that the body is refused naming that member, then put it back. */
static void mutate_all(Mutation *mu, json_t *body, json_t *v, const ValidateSchema *s, const char *path) {
        char p[VALIDATE_PATH_MAX];
        const char *k;
        json_t *c;
        size_t i;

        if (s->type == VALIDATE_ARRAY) {
                json_array_foreach(v, i, c) {
                        snprintf(p, sizeof(p), "%s[%zu]", path, i);
                        mutate_all(mu, body, c, s->items, p);
                }
                return;
        }
        if (s->type != VALIDATE_OBJECT)
                return;
        {
                char want[VALIDATE_MESSAGE_MAX];

                json_object_set_new(v, "notAMember", json_true());
                snprintf(p, sizeof(p), "%s%snotAMember", path, *path ? "." : "");
                snprintf(want, sizeof(want), "is not a member of %s", s->name);
                check_mutated(mu, body, p, want);
                json_object_del(v, "notAMember");
        }

        json_object_foreach(v, k, c) {
                const ValidateMember *m = NULL;
                const char *want;
                json_t *saved = json_incref(c), *wrong;

                for (const ValidateMember *x = s->members; x->name; x++)
                        if (streq(x->name, k))
                                m = x;
                ck_assert_ptr_nonnull(m);
                snprintf(p, sizeof(p), "%s%s%s", path, *path ? "." : "", k);
                switch (m->schema->type) {
                case VALIDATE_STRING:
                        wrong = json_integer(5), want = "must be a string";
                        break;
                case VALIDATE_BOOLEAN:
                        wrong = json_string("yes"), want = "must be a boolean";
                        break;
                case VALIDATE_ENUM:
                        wrong = json_string("Bogus"), want = NULL;
                        break;
                case VALIDATE_ARRAY:
                        wrong = json_string("data"), want = "must be an array";
                        break;
                case VALIDATE_OBJECT:
                        wrong = json_string("x"), want = "must be an object";
                        break;
                default:
                        ck_abort_msg("%s: the request schemas hold no member of type %d", p, m->schema->type);
                        return;
                }
                json_object_set_new(v, k, wrong);
                if (want)
                        check_mutated(mu, body, p, want);
                else {
                        char msg[VALIDATE_MESSAGE_MAX] = "must be one of";
                        for (i = 0; m->schema->enum_values[i]; i++)
                                snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "%s %s", i ? "," : "",
                                         m->schema->enum_values[i]);
                        check_mutated(mu, body, p, msg);
                }
                json_object_set(v, k, saved);
                json_decref(saved);
                mutate_all(mu, body, c, m->schema, p);
        }
}

START_TEST(test_every_member_is_checked) {
        static const JobOp ops[] = { JOB_OP_CREATE, JOB_OP_UPDATE, JOB_OP_DELETE, JOB_OP_ASSIGN, JOB_OP_REMOVE, JOB_OP_REVERT };

        for (size_t o = 0; o < ELEMENTSOF(ops); o++) {
                Mutation mu = { .op = ops[o] };
                json_t *body = build_full_body(ops[o]);
                char *text = json_dumps(body, JSON_COMPACT);

                assert_accepted(ops[o], text);
                free(text);
                mutate_all(&mu, body, body, validate_request_schema(ops[o]), "");
                /* The body is whole again after the mutations. */
                text = json_dumps(body, JSON_COMPACT);
                assert_accepted(ops[o], text);
                free(text);
                json_decref(body);
                /* Each member and object of the table was made wrong at least once: 107 for a
                 * create today, 2 for a delete (the list member and an unknown member beside it). */
                ck_assert_uint_ge(mu.count, ops[o] == JOB_OP_CREATE || ops[o] == JOB_OP_UPDATE ? 100
                                            : ops[o] == JOB_OP_ASSIGN || ops[o] == JOB_OP_REMOVE ? 11 : 2);
        }
}
END_TEST

/* Node types that Visier's permission schemas do not use today, on hand-made schemas. */
START_TEST(test_other_node_types) {
        static const ValidateSchema int32 = { .type = VALIDATE_INTEGER, .int_min = INT32_MIN, .int_max = INT32_MAX };
        static const ValidateSchema number = { .type = VALIDATE_NUMBER };
        static const ValidateSchema map = { .type = VALIDATE_MAP, .items = &number };
        static const ValidateSchema nest = { .type = VALIDATE_ARRAY, .items = &nest };
        static const char *const many[] = { "Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                            "Bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                                            "Ccccccccccccccccccccccccccccccccccccccccccccccccc",
                                            "Ddddddddddddddddddddddddddddddddddddddddddddddddd",
                                            "Eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
                                            "Fffffffffffffffffffffffffffffffffffffffffffffffff",
                                            NULL };
        static const ValidateSchema big_enum = { .type = VALIDATE_ENUM, .enum_values = many };
        ValidateError e;
        json_t *v;

        v = json_integer(INT32_MAX);
        ck_assert_int_eq(validate_json(&int32, v, "n", &e), 0);
        json_decref(v);
        v = json_integer((json_int_t) INT32_MAX + 1);
        ck_assert_int_eq(validate_json(&int32, v, "n", &e), -EINVAL);
        ck_assert_str_eq(e.message, "must be an integer from -2147483648 to 2147483647");
        json_decref(v);
        v = json_real(1.0);
        ck_assert_int_eq(validate_json(&int32, v, "n", &e), -EINVAL);
        ck_assert_str_eq(e.message, "must be an integer");
        ck_assert_int_eq(validate_json(&number, v, "n", &e), 0);
        json_decref(v);

        v = json_pack("{s:f, s:i, s:s}", "a", 1.5, "b", 2, "c", "3");
        ck_assert_int_eq(validate_json(&map, v, "m", &e), -EINVAL);
        ck_assert_str_eq(e.path, "m.c");
        ck_assert_str_eq(e.message, "must be a number");
        json_decref(v);

        v = json_array();
        for (int i = 0; i < 40; i++) {
                json_t *outer = json_array();
                json_array_append_new(outer, v);
                v = outer;
        }
        ck_assert_int_eq(validate_json(&nest, v, "x", &e), -EINVAL);
        ck_assert_str_eq(e.message, "nested too deeply");
        ck_assert_str_eq(e.path, "x[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]");
        json_decref(v);

        /* An enum too long for a message is cut short, whole values only. */
        v = json_string("Z");
        ck_assert_int_eq(validate_json(&big_enum, v, "e", &e), -EINVAL);
        ck_assert_ptr_nonnull(strstr(e.message, "Aaaa"));
        ck_assert_ptr_null(strstr(e.message, "Fff"));
        ck_assert_str_eq(e.message + strlen(e.message) - 5, ", ...");
        json_decref(v);
}
END_TEST

START_TEST(test_header_values) {
        char longest[VALIDATE_HEADER_VALUE_MAX + 2];
        ValidateError e;

        ck_assert_int_eq(validate_header_value("TargetTenantID", "WFF_j1r~c7o", &e), 0);
        ck_assert_int_eq(validate_header_value("ProjectID", NULL, &e), 0);
        ck_assert_int_eq(validate_header_value("ProjectID", "", &e), 0);
        /* Multi-byte UTF-8: two, three and four bytes. */
        ck_assert_int_eq(validate_header_value("TargetTenantID", "Z\xc3\xbcrich \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x99\x82", &e), 0);

        ck_assert_int_eq(validate_header_value("TargetTenantID", "abc\xff", &e), -EINVAL);
        ck_assert_str_eq(e.path, "TargetTenantID");
        ck_assert_str_eq(e.message, "must be valid UTF-8");
        ck_assert_int_eq(validate_header_value("ProjectID", "a\nb", &e), -EINVAL);
        ck_assert_str_eq(e.path, "ProjectID");
        ck_assert_str_eq(e.message, "must not contain control characters");
        ck_assert_int_eq(validate_header_value("ProjectID", "a\tb", &e), -EINVAL);
        ck_assert_str_eq(e.message, "must not contain control characters");
        ck_assert_int_eq(validate_header_value("ProjectID", "a\x7f", &e), -EINVAL);
        ck_assert_str_eq(e.message, "must not contain control characters");
        ck_assert_int_eq(validate_header_value("ProjectID", "a\xc2\x85", &e), -EINVAL); /* U+0085, a C1 control */
        ck_assert_str_eq(e.message, "must not contain control characters");
        /* Ill-formed UTF-8: overlong, surrogate, beyond U+10FFFF, cut short, stray continuation. */
        static const char *const bad[] = { "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                           "\xe2\x82", "\x80", "\xf0\x9f\x99" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ck_assert_int_eq(validate_header_value("Idempotency-Key", bad[i], &e), -EINVAL);
                ck_assert_str_eq(e.path, "Idempotency-Key");
                ck_assert_str_eq(e.message, "must be valid UTF-8");
        }

        memset(longest, 'a', VALIDATE_HEADER_VALUE_MAX);
        longest[VALIDATE_HEADER_VALUE_MAX] = '\0';
        ck_assert_int_eq(validate_header_value("TargetTenantID", longest, &e), 0);
        longest[VALIDATE_HEADER_VALUE_MAX] = 'a';
        longest[VALIDATE_HEADER_VALUE_MAX + 1] = '\0';
        ck_assert_int_eq(validate_header_value("TargetTenantID", longest, &e), -EINVAL);
        ck_assert_str_eq(e.message, "must be at most 256 bytes");
}
END_TEST

START_TEST(test_tenant_code) {
        ValidateError e;

        ck_assert_int_eq(validate_tenant_code("WFF_j1r~c7o", 11, &e), 0);
        ck_assert_int_eq(validate_tenant_code(NULL, 0, &e), 0);
        /* A %00 in the query decodes to a NUL: seen through the length. */
        ck_assert_int_eq(validate_tenant_code("WFF\0x", 5, &e), -EINVAL);
        ck_assert_str_eq(e.path, "tenantCode");
        ck_assert_str_eq(e.message, "must not contain control characters");
        ck_assert_int_eq(validate_tenant_code("\xfe", 1, &e), -EINVAL);
        ck_assert_str_eq(e.path, "tenantCode");
        ck_assert_str_eq(e.message, "must be valid UTF-8");
}
END_TEST

START_TEST(test_non_versioned) {
        static const char *const trues[] = { "true", "True", "TRUE" }, *const falses[] = { "false", "False", "FALSE" };
        static const char *const bad[] = { "", "yes", "1", "0", "tRUE", " true", "true ", "False\n", "t" };
        const char *n;
        ValidateError e;

        for (size_t i = 0; i < ELEMENTSOF(trues); i++) {
                n = NULL;
                ck_assert_int_eq(validate_non_versioned(trues[i], &n, &e), 0);
                ck_assert_str_eq(n, "true");
                n = NULL;
                ck_assert_int_eq(validate_non_versioned(falses[i], &n, &e), 0);
                ck_assert_str_eq(n, "false");
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                n = "untouched";
                ck_assert_int_eq(validate_non_versioned(bad[i], &n, &e), -EINVAL);
                ck_assert_str_eq(n, "untouched");
                ck_assert_str_eq(e.path, "NonVersioned");
                ck_assert_str_eq(e.message, "must be true or false");
        }
        n = "untouched";
        ck_assert_int_eq(validate_non_versioned(NULL, &n, &e), 0);
        ck_assert_ptr_null(n);
}
END_TEST

int main(void) {
        Suite *s = suite_create("validate");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_issue_bodies);
        tcase_add_test(tc, test_unknown_members);
        tcase_add_test(tc, test_nested_enums);
        tcase_add_test(tc, test_valid_bodies);
        tcase_add_test(tc, test_visierd_rules_kept);
        tcase_add_test(tc, test_first_bad_member_in_document_order);
        tcase_add_test(tc, test_every_member_is_checked);
        tcase_add_test(tc, test_other_node_types);
        tcase_add_test(tc, test_header_values);
        tcase_add_test(tc, test_tenant_code);
        tcase_add_test(tc, test_non_versioned);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
