/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging for the manager and the HTTP layer (modules below them never log). Writes
 * readable lines to stderr, or structured entries to the journal when stderr is connected to
 * it ($JOURNAL_STREAM). Extra journal fields are passed as "KEY=value" strings. Callers must
 * never pass a secret; nothing here could tell one from other text.
 */
#pragma once

#include <stdbool.h>
#include <syslog.h>

#include "macro.h"

/* Message IDs (sd-id128) for each kind of event, so ops can filter with journalctl MESSAGE_ID=. */
#define LOG_MSGID_STARTUP "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e01"
#define LOG_MSGID_LOGIN_OK "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e02"
#define LOG_MSGID_LOGIN_FAILED "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e03"
#define LOG_MSGID_UPSTREAM_ERROR "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e04"
#define LOG_MSGID_CONFIG "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e05"
#define LOG_MSGID_SHUTDOWN "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e06"
#define LOG_MSGID_REQUEST "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e07"
#define LOG_MSGID_WRITE_CALL "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e08"
#define LOG_MSGID_JOB_DONE "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e09"
#define LOG_MSGID_JOB_RETRY "5c3f0a1e9b7d4a2c8e6f1b3d5a7c9e0a"

void log_setup(void);
void log_set_max_level(int level);
/* Would a line at priority be written? (To skip work done only for a debug line.) */
bool log_enabled(int priority);
/* Lines on stderr as one JSON object each instead of text (never for the journal). */
void log_set_json(bool json);

/* fields: NULL-terminated list of "KEY=value" strings for the journal (may be NULL). */
_printf_(4, 5) void log_full(int priority, const char *msgid, const char *const *fields, const char *fmt, ...);

#define log_error(...) log_full(LOG_ERR, NULL, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, NULL, NULL, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, NULL, NULL, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, NULL, NULL, __VA_ARGS__)
#define log_debug(...) log_full(LOG_DEBUG, NULL, NULL, __VA_ARGS__)
