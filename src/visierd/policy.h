/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy table's types: what visierd does with each operation of Visier's published API
 * (policy-table.h, generated from the definitions by tools/gen-policy.py). The router serves
 * visierd's own routes first (api.c's route table, which also holds the Visier operations
 * with a handler of their own: permission writes, data queries, sign-in); any other Visier
 * path is looked up here: reads are proxied, writes not yet sent by the publisher are refused
 * with 501 rather than sent around the lane, denied operations get 403, and a path the table
 * does not know is 404.
 */
#pragma once

typedef enum PolicyClass {
        POLICY_LOCAL,   /* answered by visierd itself (sign-in) */
        POLICY_READ,    /* proxied */
        POLICY_PUBLISH, /* a write that publishes a production version: the publisher's lane */
        POLICY_WRITE,   /* another write: the lane too */
        POLICY_DENIED,  /* refused: could reveal or change visierd's own credentials or keys */
} PolicyClass;

/* The request headers Visier defines, one bit each (the order of tools/gen-policy.py). */
enum {
        PH_TARGET_TENANT_ID = 1u << 0,
        PH_PROJECT_ID = 1u << 1,
        PH_NON_VERSIONED = 1u << 2,
        PH_DATA_VERSION_ID = 1u << 3,
        PH_FAST_MODE = 1u << 4,
        PH_SESSION_BASED_PERMISSIONS = 1u << 5,
        PH_SESSION_REPO_ID = 1u << 6,
        PH_PREFER = 1u << 7,
        PH_TARGET_USERNAME = 1u << 8,
};

typedef struct PolicyRow {
        const char *method;
        const char *pattern; /* Visier's path with each {parameter} as '*' */
        PolicyClass class;
        unsigned headers;    /* PH_*: the headers Visier defines for it */
} PolicyRow;

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

const char *policy_class_to_string(PolicyClass c);
size_t policy_count(void);
const PolicyRow *policy_row(size_t i); /* NULL past the end */
const PolicyRow *policy_find(const char *method, const char *pattern);

/*
 * [policy] allow: a comma-separated list of "METHOD PATH" (Visier's path as its definitions
 * write it, with {parameter}s) naming denied operations an operator lets clients use anyway.
 * policy_allow_check(): 0, or -1 with the first entry that is malformed or not a denied
 * operation copied into bad. policy_allowed(): is row on the list?
 */
int policy_allow_check(const char *list, char *bad, size_t badlen);
bool policy_allowed(const char *list, const PolicyRow *row);
