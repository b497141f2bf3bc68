/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The job store's database edge on PostgreSQL, through libpq (see db.h; the ops it provides
 * are listed in db-internal.h).
 *
 * DESIGN: SQL arrives with SQLite's placeholders and is translated once, at db_prepare(), into
 * PostgreSQL's "$N" (placeholders_translate(): a small scanner that leaves '...' and E'...'
 * literals, "..." identifiers, $tag$...$tag$ bodies and both kinds of comment alone). Each
 * db_step() after a reset runs the statement once, in the extended protocol, and keeps the
 * whole result: a persistent statement is a named server-side prepared statement
 * ("visierd_<n>", n counted per connection), prepared by its first step and executed by name
 * afterwards; any other statement goes with its text each time (PQexecParams). Parameters
 * travel as text, with the server inferring their types, except blobs: binary bytea. Results
 * come back as text; a bytea column is decoded the first time db_column_blob() asks for it in
 * a row, and the bytes live until the next step or reset.
 *
 * Where this differs from SQLite, and the SQL written once must allow for it: a parameter's
 * type is the server's inference from its context (a column: that column's; "? + 1": integer,
 * so write "?::bigint" where no column says); db_column_count() is known once the statement
 * has run (0 before its first step); db_column_text() of a bytea column is its hex text (read
 * blobs with db_column_blob()); db_exec() of several statements runs them as one transaction.
 *
 * A failure is translated at this edge into db.h's errno values, with the server's primary
 * message (or libpq's) kept as the connection's message: never the connection string, never
 * the password (libpq does not repeat either; a message holding the password anyway is
 * withheld). A connection found gone answers -ENOTCONN to every later call: nothing here
 * reconnects, the caller opens a new one.
 *
 * Must never log (libpq's notices are dropped), nor keep state beyond the connection.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "db-internal.h"
#include "fleetdb.h"
#include "macro.h"

/* Fixed OIDs of pg_type (catalog/pg_type.dat), which libpq's client headers do not carry. */
#define PG_TYPE_BOOL 16
#define PG_TYPE_BYTEA 17

/* The protocol's limit on a statement's parameters (a 16-bit count). */
#define DB_PG_PARAMS_MAX 65535
/* "visierd_" and a 64-bit counter. */
#define DB_PG_NAME_MAX 32
/*
 * How long data written to the server may stay unacknowledged before the kernel drops the
 * connection (TCP_USER_TIMEOUT). Without it a write to a server that vanished without a reset
 * (host down, network partition) is retransmitted for the kernel's tcp_retries2, about 15
 * minutes, and the calling thread is blocked in libpq all that time: keepalives do not help,
 * they only probe an idle connection. 10 s is many round trips on any network a fleet shares
 * a database over, and short enough that the store reports the loss (-ENOTCONN) while a
 * client still waits for its answer.
 */
#define DB_PG_TCP_USER_TIMEOUT_MS 10000
/* An idle connection is probed after 30 s, every 10 s, and dropped after 3 probes unanswered. */
#define DB_PG_KEEPALIVES_IDLE_S "30"
#define DB_PG_KEEPALIVES_INTERVAL_S "10"
#define DB_PG_KEEPALIVES_COUNT "3"

typedef struct PgStmt PgStmt;

typedef struct PgDb {
        Db base;
        PGconn *conn;
        PgStmt *stmts;      /* every statement prepared on it, for db_close() */
        uint64_t next_name; /* the number of the next persistent statement's name */
        int64_t changes;
        char errmsg[DB_ERROR_MAX];
} PgDb;

typedef enum PgStmtState {
        PG_STMT_READY, /* not run since it was prepared or reset */
        PG_STMT_ROWS,  /* run; row is the current one */
        PG_STMT_DONE,  /* run to its end or failed: the next step runs it again */
} PgStmtState;

struct PgStmt {
        DbStmt base;
        PgStmt *prev, *next;
        char *sql;                /* with $N placeholders */
        char name[DB_PG_NAME_MAX]; /* a persistent statement's; "" otherwise */
        bool prepared;            /* the server holds it under name */
        int n_params;
        char **values; /* n_params of each: NULL is SQL NULL */
        int *lengths;
        int *formats;
        Oid *types;
        /* Which of the first 64 "?N" the text names: SQLite lets a statement leave some out (the
         * store's list statements do), PostgreSQL cannot infer a type for one it never sees, so
         * those are declared text and whatever is bound to them goes unused. */
        uint64_t used;
        PgStmtState state;
        PGresult *res; /* the last run's (ROWS, DONE after a success) */
        int row;
        unsigned char **blobs; /* per column: the current row's bytea, decoded on demand */
        size_t *blob_lens;
        int n_blobs;
};

static const DbOps db_pg_ops;

static PgDb *pg_db(const Db *db) {
        assert(db->ops == &db_pg_ops);
        return (PgDb *) db;
}

static PgStmt *pg_stmt(const DbStmt *st) {
        assert(st->db->ops == &db_pg_ops);
        return (PgStmt *) st;
}

/* ---- placeholders ---- */

static bool ident_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
               (unsigned char) c >= 0x80;
}

/* p is at the opening quote: the end of the quoted text ('' or "" inside is the quote itself;
 * with backslash, a backslash escapes the next byte). An unterminated one runs to the end. */
static const char *skip_quoted(const char *p, char quote, bool backslash) {
        for (p++; *p; p++) {
                if (backslash && *p == '\\' && p[1])
                        p++;
                else if (*p == quote) {
                        if (p[1] != quote)
                                return p + 1;
                        p++;
                }
        }
        return p;
}

/* p is at "/" "*": the end of the comment, which nests in PostgreSQL. */
static const char *skip_block_comment(const char *p) {
        unsigned depth = 0;

        while (*p) {
                if (p[0] == '/' && p[1] == '*') {
                        depth++;
                        p += 2;
                } else if (p[0] == '*' && p[1] == '/') {
                        p += 2;
                        if (--depth == 0)
                                return p;
                } else
                        p++;
        }
        return p;
}

/* p is at a "$" not inside a word: the end of a $tag$...$tag$ string, or NULL if p does not
 * open one (a "$1" is a parameter, not a tag). */
static const char *skip_dollar_quoted(const char *p) {
        const char *tag_end = p + 1, *q;
        size_t tag_len;

        if (*tag_end >= '0' && *tag_end <= '9')
                return NULL;
        while (*tag_end && *tag_end != '$' && ident_char(*tag_end))
                tag_end++;
        if (*tag_end != '$')
                return NULL;
        tag_len = (size_t) (tag_end - p) + 1; /* "$tag$" */
        for (q = tag_end + 1; *q; q++)
                if (*q == '$' && strncmp(q, p, tag_len) == 0)
                        return q + tag_len;
        return q;
}

/*
 * SQLite's "?" (numbered in order) or "?N" as PostgreSQL's "$N", outside literals, quoted
 * identifiers, dollar-quoted strings and comments. *ret (malloc()ed) and *ret_n (the number of
 * parameters: the count of "?", or the largest N) on success; -EINVAL for both styles in one
 * statement, a "?0" or a number above DB_PG_PARAMS_MAX; -ENOMEM.
 */
static int placeholders_translate(const char *sql, char **ret, int *ret_n, uint64_t *ret_used) {
        _cleanup_free_ char *out = NULL;
        uint64_t used = 0;
        size_t len = strlen(sql), o = 0;
        int ordered = 0, numbered_max = 0;
        const char *p = sql;

        /* Each "?" becomes at most "$65535"; everything else stays as long as it is. */
        if (len > (SIZE_MAX - 1) / 6)
                return -ENOMEM;
        out = malloc(len * 6 + 1);
        if (!out)
                return -ENOMEM;

        while (*p) {
                const char *end = NULL;
                bool word = p > sql && ident_char(p[-1]);

                if (*p == '\'')
                        end = skip_quoted(p, '\'', word && (p[-1] == 'E' || p[-1] == 'e') &&
                                                           (p - 1 == sql || !ident_char(p[-2])));
                else if (*p == '"')
                        end = skip_quoted(p, '"', false);
                else if (p[0] == '-' && p[1] == '-')
                        end = p + strcspn(p, "\n");
                else if (p[0] == '/' && p[1] == '*')
                        end = skip_block_comment(p);
                else if (*p == '$' && !word)
                        end = skip_dollar_quoted(p);

                if (end) {
                        memcpy(out + o, p, (size_t) (end - p));
                        o += (size_t) (end - p);
                        p = end;
                } else if (*p == '?') {
                        long n;

                        if (p[1] >= '0' && p[1] <= '9') {
                                char *e;

                                errno = 0;
                                n = strtol(p + 1, &e, 10);
                                if (errno != 0 || n < 1 || n > DB_PG_PARAMS_MAX)
                                        return -EINVAL;
                                if (n > numbered_max)
                                        numbered_max = (int) n;
                                p = e;
                        } else {
                                if (ordered >= DB_PG_PARAMS_MAX)
                                        return -EINVAL;
                                n = ++ordered;
                                p++;
                        }
                        if (ordered > 0 && numbered_max > 0)
                                return -EINVAL;
                        if (ret_used && n <= (long) sizeof(used) * 8)
                                used |= UINT64_C(1) << (n - 1);
                        o += (size_t) snprintf(out + o, 7, "$%ld", n);
                } else
                        out[o++] = *p++;
        }
        out[o] = '\0';
        *ret_n = ordered > 0 ? ordered : numbered_max;
        if (ret_used)
                *ret_used = used;
        *ret = TAKE_PTR(out);
        return 0;
}

/* ---- errors ---- */

_printf_(2, 3) static void pg_set_errmsg(PgDb *db, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(db->errmsg, sizeof(db->errmsg), fmt, ap);
        va_end(ap);
}

/* A failed command (res may be NULL; it is cleared): the connection's message and db.h's errno. */
static int pg_fail(PgDb *db, PGresult *res) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        char msg[DB_ERROR_MAX - 32];
        int r;

        fleetdb_message(db->conn, res, msg, sizeof(msg));
        if (fleetdb_connection_lost(db->conn, res))
                r = -ENOTCONN;
        else if (!state)
                r = res ? -EIO : -ENOMEM; /* no result at all: libpq could not allocate one */
        else if (streq(state, "23505"))
                r = -EEXIST;
        else if (streq(state, "40001") || streq(state, "40P01") || streq(state, "55P03"))
                r = -EBUSY;
        else if (streq(state, "53100"))
                r = -ENOSPC;
        else if (streq(state, "53200"))
                r = -ENOMEM;
        else if (streq(state, "42501") || streq(state, "25006"))
                r = -EACCES;
        else
                r = -EIO;
        if (state)
                pg_set_errmsg(db, "%s (SQLSTATE %s)", msg, state);
        else
                pg_set_errmsg(db, "%s", msg[0] ? msg : "the connection to PostgreSQL failed");
        PQclear(res);
        return r;
}

/* May a command be sent? Not on a connection found gone. */
static int pg_usable(PgDb *db) {
        if (PQstatus(db->conn) != CONNECTION_OK) {
                pg_set_errmsg(db, "the connection to PostgreSQL is gone: open a new one");
                return -ENOTCONN;
        }
        return 0;
}

/* db_changes() follows INSERT, UPDATE, DELETE and MERGE, as SQLite's counts only those. */
static void pg_note_changes(PgDb *db, const PGresult *res) {
        static const char *const tags[] = { "INSERT ", "UPDATE ", "DELETE ", "MERGE " };
        const char *cmd = PQcmdStatus((PGresult *) res);

        for (size_t k = 0; k < ELEMENTSOF(tags); k++)
                if (strncmp(cmd, tags[k], strlen(tags[k])) == 0) {
                        const char *n = PQcmdTuples((PGresult *) res);
                        char *end;
                        long long v;

                        errno = 0;
                        v = strtoll(n, &end, 10);
                        db->changes = errno == 0 && end != n && !*end ? v : 0;
                        return;
                }
}

/* ---- statements ---- */

static void pg_blobs_clear(PgStmt *st) {
        for (int i = 0; i < st->n_blobs; i++) {
                PQfreemem(st->blobs[i]);
                st->blobs[i] = NULL;
        }
}

#define TEXT_OID 25 /* pg_type.h's TEXTOID */

/* A parameter the statement's text never names (see PgStmt.used). */
static bool param_unused(const PgStmt *st, int i) {
        return i <= 64 && !(st->used & (UINT64_C(1) << (i - 1)));
}

static void pg_params_clear(PgStmt *st) {
        for (int i = 0; i < st->n_params; i++) {
                free(st->values[i]);
                st->values[i] = NULL;
                st->lengths[i] = 0;
                st->formats[i] = 0;
                st->types[i] = param_unused(st, i + 1) ? TEXT_OID : 0;
        }
}

static void pg_stmt_reset(DbStmt *s) {
        PgStmt *st = pg_stmt(s);

        pg_blobs_clear(st);
        pg_params_clear(st);
        PQclear(st->res);
        st->res = NULL;
        st->row = 0;
        st->state = PG_STMT_READY;
}

/* Free st and unlink it; a prepared one is DEALLOCATEd first if deallocate, best effort: only
 * outside a transaction, where a DEALLOCATE that fails (a statement a DISCARD dropped) fails
 * nothing else. Inside one it stays on the server, under a name never used again, until the
 * connection closes. */
static void pg_stmt_free(PgStmt *st, bool deallocate) {
        PgDb *db = pg_db(st->base.db);

        if (deallocate && st->prepared && PQstatus(db->conn) == CONNECTION_OK &&
            PQtransactionStatus(db->conn) == PQTRANS_IDLE) {
                char sql[DB_PG_NAME_MAX + 16];

                snprintf(sql, sizeof(sql), "DEALLOCATE %s", st->name);
                PQclear(PQexec(db->conn, sql));
        }
        if (st->prev)
                st->prev->next = st->next;
        else
                db->stmts = st->next;
        if (st->next)
                st->next->prev = st->prev;

        pg_blobs_clear(st);
        if (st->values)
                pg_params_clear(st);
        PQclear(st->res);
        free(st->blobs);
        free(st->blob_lens);
        free(st->values);
        free(st->lengths);
        free(st->formats);
        free(st->types);
        free(st->sql);
        free(st);
}

static DbStmt *pg_finalize(DbStmt *s) {
        pg_stmt_free(pg_stmt(s), true);
        return NULL;
}

static int pg_prepare(Db *d, const char *sql, bool persistent, DbStmt **ret) {
        PgDb *db = pg_db(d);
        PgStmt *st;
        int r;

        r = pg_usable(db);
        if (r < 0)
                return r;
        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        st->base.db = d;
        r = placeholders_translate(sql, &st->sql, &st->n_params, &st->used);
        if (r < 0) {
                free(st);
                if (r == -EINVAL)
                        pg_set_errmsg(db, "placeholders: \"?\" and \"?N\" in one statement, or a \"?N\" "
                                          "outside 1 to %d", DB_PG_PARAMS_MAX);
                return r;
        }
        if (st->n_params > 0) {
                st->values = calloc((size_t) st->n_params, sizeof(*st->values));
                st->lengths = calloc((size_t) st->n_params, sizeof(*st->lengths));
                st->formats = calloc((size_t) st->n_params, sizeof(*st->formats));
                st->types = calloc((size_t) st->n_params, sizeof(*st->types));
                if (!st->values || !st->lengths || !st->formats || !st->types) {
                        free(st->values);
                        free(st->lengths);
                        free(st->formats);
                        free(st->types);
                        free(st->sql);
                        free(st);
                        return -ENOMEM;
                }
                pg_params_clear(st); /* the types of the parameters the text leaves out */
        }
        if (persistent)
                snprintf(st->name, sizeof(st->name), "visierd_%" PRIu64, db->next_name++);
        st->next = db->stmts;
        if (db->stmts)
                db->stmts->prev = st;
        db->stmts = st;
        *ret = &st->base;
        return 0;
}

/* Parameter i (from 1) of st set to v (owned from here on; NULL: SQL NULL). */
static int pg_param_set(PgStmt *st, int i, char *v, int length, int format, Oid type) {
        if (i > st->n_params) {
                free(v);
                pg_set_errmsg(pg_db(st->base.db), "parameter %d of a statement with %d", i, st->n_params);
                return -ERANGE;
        }
        if (param_unused(st, i)) { /* bound, never read: kept as text NULL */
                free(v);
                return 0;
        }
        free(st->values[i - 1]);
        st->values[i - 1] = v;
        st->lengths[i - 1] = length;
        st->formats[i - 1] = format;
        st->types[i - 1] = type;
        return 0;
}

static int pg_bind_int64(DbStmt *s, int i, int64_t v) {
        char buf[24], *t;

        snprintf(buf, sizeof(buf), "%" PRId64, v);
        t = strdup(buf);
        if (!t)
                return -ENOMEM;
        return pg_param_set(pg_stmt(s), i, t, 0, 0, 0);
}

static int pg_bind_text(DbStmt *s, int i, const char *v) {
        char *t = NULL;

        if (v) {
                t = strdup(v);
                if (!t)
                        return -ENOMEM;
        }
        return pg_param_set(pg_stmt(s), i, t, 0, 0, 0);
}

static int pg_bind_blob(DbStmt *s, int i, const void *p, size_t n) {
        char *b;

        if (!p)
                return pg_param_set(pg_stmt(s), i, NULL, 0, 0, 0);
        if (n > INT_MAX) {
                pg_set_errmsg(pg_db(s->db), "a blob of %zu bytes: libpq takes at most %d", n, INT_MAX);
                return -E2BIG;
        }
        b = malloc(n > 0 ? n : 1); /* never NULL: that would send SQL NULL */
        if (!b)
                return -ENOMEM;
        if (n > 0)
                memcpy(b, p, n);
        return pg_param_set(pg_stmt(s), i, b, (int) n, 1, PG_TYPE_BYTEA);
}

static int pg_bind_null(DbStmt *s, int i) {
        return pg_param_set(pg_stmt(s), i, NULL, 0, 0, 0);
}

static int pg_step(DbStmt *s) {
        PgStmt *st = pg_stmt(s);
        PgDb *db = pg_db(s->db);
        PGresult *res;
        int r;

        pg_blobs_clear(st);
        if (st->state == PG_STMT_ROWS) {
                if (++st->row < PQntuples(st->res))
                        return 1;
                st->state = PG_STMT_DONE;
                return 0;
        }

        /* Not run yet, or run to its end: run it (again). */
        PQclear(st->res);
        st->res = NULL;
        st->row = 0;
        st->state = PG_STMT_DONE;
        r = pg_usable(db);
        if (r < 0)
                return r;
        if (st->name[0] && !st->prepared) {
                res = PQprepare(db->conn, st->name, st->sql, st->n_params, st->types);
                if (PQresultStatus(res) != PGRES_COMMAND_OK)
                        return pg_fail(db, res);
                PQclear(res);
                st->prepared = true;
        }
        if (st->name[0])
                res = PQexecPrepared(db->conn, st->name, st->n_params, (const char *const *) st->values, st->lengths,
                                     st->formats, 0);
        else
                res = PQexecParams(db->conn, st->sql, st->n_params, st->types, (const char *const *) st->values,
                                   st->lengths, st->formats, 0);
        switch (PQresultStatus(res)) {
        case PGRES_TUPLES_OK:
                pg_note_changes(db, res); /* INSERT ... RETURNING */
                st->res = res;
                if (PQntuples(res) == 0)
                        return 0;
                st->state = PG_STMT_ROWS;
                return 1;
        case PGRES_COMMAND_OK:
                pg_note_changes(db, res);
                st->res = res;
                return 0;
        default:
                return pg_fail(db, res);
        }
}

/* Is column i there in a current row? */
static bool pg_column_ok(const PgStmt *st, int i) {
        return st->state == PG_STMT_ROWS && i < PQnfields(st->res);
}

static int pg_column_count(DbStmt *s) {
        PgStmt *st = pg_stmt(s);

        return st->res ? PQnfields(st->res) : 0;
}

static bool pg_column_is_null(DbStmt *s, int i) {
        PgStmt *st = pg_stmt(s);

        return !pg_column_ok(st, i) || PQgetisnull(st->res, st->row, i);
}

static int64_t pg_column_int64(DbStmt *s, int i) {
        PgStmt *st = pg_stmt(s);
        const char *v;

        if (pg_column_is_null(s, i))
                return 0;
        v = PQgetvalue(st->res, st->row, i);
        /* A boolean reads as SQLite's 1 or 0; numbers as strtoll() reads their text (a
         * fraction is cut, a value past int64 is clamped, as SQLite does). */
        if (PQftype(st->res, i) == PG_TYPE_BOOL)
                return v[0] == 't';
        return strtoll(v, NULL, 10);
}

static const char *pg_column_text(DbStmt *s, int i) {
        PgStmt *st = pg_stmt(s);

        if (pg_column_is_null(s, i))
                return NULL;
        return PQgetvalue(st->res, st->row, i);
}

static const void *pg_column_blob(DbStmt *s, int i, size_t *ret_len) {
        PgStmt *st = pg_stmt(s);
        int n;

        *ret_len = 0;
        if (pg_column_is_null(s, i))
                return NULL;
        if (PQftype(st->res, i) != PG_TYPE_BYTEA) {
                *ret_len = (size_t) PQgetlength(st->res, st->row, i);
                return PQgetvalue(st->res, st->row, i);
        }

        n = PQnfields(st->res);
        if (st->n_blobs < n) {
                unsigned char **b = realloc(st->blobs, (size_t) n * sizeof(*b));
                size_t *l;

                if (!b)
                        return NULL;
                st->blobs = b;
                l = realloc(st->blob_lens, (size_t) n * sizeof(*l));
                if (!l)
                        return NULL;
                st->blob_lens = l;
                for (int k = st->n_blobs; k < n; k++)
                        st->blobs[k] = NULL;
                st->n_blobs = n;
        }
        if (!st->blobs[i]) {
                /* Text format's bytea (hex, or the old escape format): out of memory reads as NULL. */
                st->blobs[i] = PQunescapeBytea((const unsigned char *) PQgetvalue(st->res, st->row, i),
                                               &st->blob_lens[i]);
                if (!st->blobs[i])
                        return NULL;
        }
        *ret_len = st->blob_lens[i];
        return st->blobs[i];
}

/* ---- the connection ---- */

static PgDb *pg_db_free(PgDb *db) {
        if (!db)
                return NULL;
        while (db->stmts)
                pg_stmt_free(db->stmts, false); /* PQfinish() drops them on the server */
        PQfinish(db->conn);
        free(db);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(PgDb *, pg_db_free);

static Db *pg_close(Db *d) {
        return (Db *) pg_db_free(pg_db(d));
}

static const char *pg_errmsg(const Db *d) {
        return pg_db(d)->errmsg;
}

static int64_t pg_changes(const Db *d) {
        return pg_db(d)->changes;
}

static bool pg_in_transaction(const Db *d) {
        PGTransactionStatusType t = PQtransactionStatus(pg_db(d)->conn);

        return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

static bool pg_transaction_failed(const Db *d) {
        return PQtransactionStatus(pg_db(d)->conn) == PQTRANS_INERROR;
}

static int pg_exec(Db *d, const char *sql) {
        PgDb *db = pg_db(d);
        PGresult *res;
        int r;

        r = pg_usable(db);
        if (r < 0)
                return r;
        /* The simple protocol: several statements in one string run as one transaction (an
         * implicit one, unless the string holds its own BEGIN and COMMIT); the result is the
         * last statement's, or the first failure's. */
        res = PQexec(db->conn, sql);
        switch (PQresultStatus(res)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
                pg_note_changes(db, res);
                PQclear(res);
                return 0;
        case PGRES_EMPTY_QUERY:
                PQclear(res);
                return 0;
        default:
                return pg_fail(db, res);
        }
}

static PGconn *pg_conn(Db *d) {
        return pg_db(d)->conn;
}

static void pg_notice_ignore(void *arg, const char *message) {
}

/* Bound a write to a dead server (see DB_PG_TCP_USER_TIMEOUT_MS); a unix socket has no need. */
static int pg_socket_bound(PGconn *conn) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        unsigned ms = DB_PG_TCP_USER_TIMEOUT_MS;
        int fd = PQsocket(conn);

        if (fd < 0)
                return -ENOTCONN;
        if (getsockname(fd, (struct sockaddr *) &sa, &salen) < 0)
                return negative_errno();
        if (sa.ss_family != AF_INET && sa.ss_family != AF_INET6)
                return 0;
        if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms)) < 0)
                return negative_errno();
        return 0;
}

/* Does the conninfo parse? Its text and libpq's words about it are never repeated: a broken
 * string may hold a password. A plain database name (no "=", not a URI) is one too. */
static bool pg_conninfo_valid(const char *conninfo) {
        PQconninfoOption *opts;
        char *msg = NULL;

        if (!strchr(conninfo, '=') && strncmp(conninfo, "postgresql://", 13) != 0 &&
            strncmp(conninfo, "postgres://", 11) != 0)
                return true;
        opts = PQconninfoParse(conninfo, &msg);
        PQfreemem(msg);
        if (!opts)
                return false;
        PQconninfoFree(opts);
        return true;
}

int db_open_pg(const char *conninfo, const char *password, unsigned connect_timeout_s,
               unsigned statement_timeout_ms, Db **ret, char *err, size_t errlen) {
        _cleanup_(pg_db_freep) PgDb *db = NULL;
        const char *keywords[12], *values[12];
        char timeout[16], set[96], msg[DB_ERROR_MAX];
        size_t k = 0;
        int r;

        assert(conninfo);
        assert(ret);

        if (!pg_conninfo_valid(conninfo)) {
                fleetdb_set_error(err, errlen,
                                  "invalid PostgreSQL connection string (not repeated here: it may hold a secret)");
                return -EINVAL;
        }
        db = calloc(1, sizeof(*db));
        if (!db)
                return -ENOMEM;
        db->base.ops = &db_pg_ops;

        /* conninfo first, expanded (expand_dbname): what follows overrides what it says. */
        keywords[k] = "dbname", values[k++] = conninfo;
        if (password)
                keywords[k] = "password", values[k++] = password;
        if (connect_timeout_s > 0) {
                snprintf(timeout, sizeof(timeout), "%u", connect_timeout_s);
                keywords[k] = "connect_timeout", values[k++] = timeout;
        }
        keywords[k] = "client_encoding", values[k++] = "UTF8";
        keywords[k] = "keepalives", values[k++] = "1";
        keywords[k] = "keepalives_idle", values[k++] = DB_PG_KEEPALIVES_IDLE_S;
        keywords[k] = "keepalives_interval", values[k++] = DB_PG_KEEPALIVES_INTERVAL_S;
        keywords[k] = "keepalives_count", values[k++] = DB_PG_KEEPALIVES_COUNT;
        keywords[k] = "fallback_application_name", values[k++] = "visierd";
        keywords[k] = NULL, values[k++] = NULL;
        assert(k <= ELEMENTSOF(keywords));

        db->conn = PQconnectdbParams(keywords, values, 1);
        if (!db->conn)
                return -ENOMEM;
        PQsetNoticeProcessor(db->conn, pg_notice_ignore, NULL);
        if (PQstatus(db->conn) != CONNECTION_OK) {
                fleetdb_message(db->conn, NULL, msg, sizeof(msg));
                /* libpq does not repeat a password; should a message hold it all the same, it is withheld. */
                if (password && *password && strstr(msg, password))
                        snprintf(msg, sizeof(msg), "(libpq's message withheld: it holds the password)");
                fleetdb_set_error(err, errlen, "cannot connect to PostgreSQL: %s", msg);
                /* A password asked for and refused reads as a refusal; the rest as no connection. */
                return PQconnectionNeedsPassword(db->conn) || PQconnectionUsedPassword(db->conn) ? -EACCES
                                                                                                 : -ENOTCONN;
        }
        r = pg_socket_bound(db->conn);
        if (r < 0) {
                fleetdb_set_error(err, errlen, "cannot set TCP_USER_TIMEOUT on the connection to PostgreSQL: %s",
                                  strerror(-r));
                return r;
        }
        snprintf(set, sizeof(set), "SET TimeZone TO 'UTC'; SET statement_timeout TO %u", statement_timeout_ms);
        r = pg_exec(&db->base, set);
        if (r < 0) {
                fleetdb_set_error(err, errlen, "cannot set up the PostgreSQL session: %s", db->errmsg);
                return r;
        }
        *ret = &TAKE_PTR(db)->base;
        return 0;
}

static const DbOps db_pg_ops = {
        .kind = DB_POSTGRES,
        .close = pg_close,
        .errmsg = pg_errmsg,
        .changes = pg_changes,
        .in_transaction = pg_in_transaction,
        .transaction_failed = pg_transaction_failed,
        .exec = pg_exec,
        .prepare = pg_prepare,
        .finalize = pg_finalize,
        .reset = pg_stmt_reset,
        .bind_int64 = pg_bind_int64,
        .bind_text = pg_bind_text,
        .bind_blob = pg_bind_blob,
        .bind_null = pg_bind_null,
        .step = pg_step,
        .column_count = pg_column_count,
        .column_is_null = pg_column_is_null,
        .column_int64 = pg_column_int64,
        .column_text = pg_column_text,
        .column_blob = pg_column_blob,
        .pg_conn = pg_conn,
};
