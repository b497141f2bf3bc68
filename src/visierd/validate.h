/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Validation of permission-write request bodies before they are queued. Every rule names
 * the JSON path of the first bad field (e.g. "permissions[3].correlationId"), so the client
 * hears exactly what to fix. Pure logic; never logs.
 *
 * Rules: the body is a JSON object with the operation's list member ("permissions" or
 * "permissionIds"), 1 to max_items entries of the right shape; creates carry a displayName
 * and no permissionId, updates a permissionId; correlationId is 3 to 64 characters of
 * A-Z a-z 0-9 _ - and unique within the request; IDs that name model objects
 * (analyticObjectId, dimensionId, propertyId, hierarchyPropertyId) follow Visier's rule for
 * IDs of data not yet in Visier: A-Z a-z 0-9 and _, 3 to 200 characters, not starting with
 * a digit — applied to each dot-separated part, as qualified names such as
 * "Employee.Job_Name" are how Visier names properties.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "jobs.h"

#define VALIDATE_PATH_MAX 256
#define VALIDATE_MESSAGE_MAX 256

typedef struct ValidateError {
        char path[VALIDATE_PATH_MAX];
        char message[VALIDATE_MESSAGE_MAX];
} ValidateError;

/* Parse and check a body; on success *ret is the parsed root (caller decrefs). -EINVAL otherwise. */
int validate_write(JobOp op, const char *body, size_t len, size_t max_items, json_t **ret, ValidateError *err);

bool validate_correlation_id(const char *s);
bool validate_model_id(const char *s);
