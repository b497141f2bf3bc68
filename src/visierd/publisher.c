/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Publisher (see publisher.h).
 *
 * DESIGN: a batch's outcome falls in one of four classes, handled in publish_batch():
 *   not sent   (no token, rate budget empty, 429 past the deadline) → back to the queue, no attempt used;
 *   ambiguous  (network error, timeout, 5xx) → creates reconciled, then retried with backoff;
 *   answered   (2xx) → each item's success or failure recorded on its own job;
 *   rejected   (4xx) → a merged batch is split (every job goes alone next time), a lone job fails.
 * Each outcome is written in one transaction, then waiters (Prefer: wait) are woken.
 */
#include <assert.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "publisher.h"
#include "validate.h"

struct Publisher {
        Store *store;
        Upstream *upstream;
        PublisherSettings settings; /* under lock; written by publisher_set_settings() */
        PublisherSettings active;   /* the thread's copy, taken under lock once a round */
        publisher_event_fn event;
        void *userdata;

        pthread_mutex_t lock;
        pthread_cond_t wake;  /* the thread waits here for work */
        pthread_cond_t done;  /* waiters for jobs wait here */
        pthread_t thread;
        bool started, stopping, woken, released;
        Cache *cache;       /* set before start: invalidated by every write sent */
        uint64_t done_seq;  /* bumped (under lock) whenever jobs may have reached a final state */
        atomic_bool in_flight;
        PublisherStats stats;

        /* The thread's own state. */
        bool store_trouble;         /* a write to the store failed; look for orphans when idle */
        usec_t trouble_backoff;     /* after store errors: wait before trying again */
        usec_t trouble_retry_at;
        int64_t lane_free_at_ms;    /* wall clock: no write before this (a call may still run) */
        bool lane_dirty;            /* the lane record must be updated in the next recording */
        int64_t lane_started_ms, lane_deadline_ms;
        bool rounds_pending;        /* a round may be left unfinished (a restart, a lost answer) */
        Fleet *fleet;               /* fleet mode: publish only under the lane's term (set before start) */
        int64_t fleet_term;         /* the term the thread publishes under; 0: none */
        bool budget_told;           /* the wait for the rate budget now going on was logged */
        usec_t rounds_backoff, rounds_retry_at;
};

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The call in flight begins and ends: publisher_call_in_flight() and /status see it. */
static void call_begin(Publisher *p, const char *operation, const char *method, const char *endpoint, const Batch *b,
                       uint64_t n_items) {
        pthread_mutex_lock(&p->lock);
        p->stats.current = (PublisherCall) { .active = true, .n_jobs = b ? (unsigned) b->n_jobs : 0, .n_items = n_items,
                                             .first_job = b && b->n_jobs > 0 ? b->jobs[0].id : 0,
                                             .started = clock_now() };
        snprintf(p->stats.current.operation, sizeof(p->stats.current.operation), "%s", operation);
        snprintf(p->stats.current.method, sizeof(p->stats.current.method), "%s", method);
        snprintf(p->stats.current.endpoint, sizeof(p->stats.current.endpoint), "%s", endpoint);
        pthread_mutex_unlock(&p->lock);
        atomic_store(&p->in_flight, true);
}

static void call_end(Publisher *p) {
        atomic_store(&p->in_flight, false);
        pthread_mutex_lock(&p->lock);
        p->stats.current = (PublisherCall) {};
        pthread_mutex_unlock(&p->lock);
}

usec_t publisher_backoff(unsigned attempts) {
        usec_t d = PUBLISHER_BACKOFF_INITIAL;
        uint64_t r = 0;

        for (unsigned i = 1; i < attempts && d < PUBLISHER_BACKOFF_MAX; i++)
                d *= 2;
        if (d > PUBLISHER_BACKOFF_MAX)
                d = PUBLISHER_BACKOFF_MAX;
        if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
                r = clock_now();
        return d / 2 + r % (d / 2 + 1); /* jitter: between half and all of the step */
}

/* Begin a recording transaction; it also brings the lane record up to date with the call
 * whose outcome it records. */
static int record_begin(Publisher *p) {
        int r = store_begin_lane(p->store); /* fleet mode: under this node's term, or nothing */

        if (r < 0) {
                p->store_trouble = true;
                return r;
        }
        if (p->lane_dirty)
                (void) store_lane_set(p->store, p->lane_started_ms, p->lane_deadline_ms); /* fails the tx if it fails */
        return 0;
}

/* End a recording transaction; on failure the jobs stay as they were (running) and are
 * recovered as orphans once the store works again. */
static int record_end(Publisher *p) {
        bool lane_dirty = p->lane_dirty;

        p->lane_dirty = false;
        if (store_end(p->store, true) < 0) {
                p->lane_dirty = lane_dirty;
                p->store_trouble = true;
                if (p->event)
                        p->event(p->userdata, &(PublisherEvent) { .kind = PUBLISHER_STORE_ERROR,
                                                                   .message = "cannot record a write's outcome; will retry" });
                return -EIO;
        }
        return 0;
}

static void emit(Publisher *p, const PublisherEvent *e) {
        if (p->event)
                p->event(p->userdata, e);
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *m, usec_t rel) {
        struct timespec ts;
        usec_t abs;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        abs = (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000 + rel;
        ts.tv_sec = (time_t) (abs / USEC_PER_SEC);
        ts.tv_nsec = (long) (abs % USEC_PER_SEC) * 1000;
        pthread_cond_timedwait(c, m, &ts);
}

/* ---- building the call ---- */

typedef struct Call {
        char *body;
        char *query;
        char header_lines[7][512];
        const char *headers[7 + 3]; /* the lines, Content-Type, Accept, NULL */
} Call;

static void call_done(Call *c) {
        free(c->body);
        free(c->query);
}

/* The scope a batch's calls carry: the tenantCode query and the TargetTenantID, ProjectID and
 * NonVersioned headers, then Accept (and Content-Type when with_body), the same for the
 * write and for the lookup that checks what it created. */
static int build_scope_headers(const Batch *b, bool with_body, bool write_headers, Call *c);

static int build_scope(const Batch *b, bool with_body, Call *c) {
        return build_scope_headers(b, with_body, true, c);
}

/* The scope of a batch's reads (a patch's read of its permission): no write headers. */
static int build_read_scope(const Batch *b, Call *c) {
        return build_scope_headers(b, false, false, c);
}

static int build_scope_headers(const Batch *b, bool with_body, bool write_headers, Call *c) {
        size_t nh = 0;

        if (*b->tenant_code) {
                char *e = curl_easy_escape(NULL, b->tenant_code, 0);
                if (!e || asprintf(&c->query, "tenantCode=%s", e) < 0)
                        c->query = NULL;
                curl_free(e);
                if (!c->query)
                        return -ENOMEM;
        }
        if (*b->tenant)
                snprintf(c->header_lines[nh++], sizeof(c->header_lines[0]), "TargetTenantID: %s", b->tenant);
        if (*b->project)
                snprintf(c->header_lines[nh++], sizeof(c->header_lines[0]), "ProjectID: %s", b->project);
        if (*b->non_versioned)
                snprintf(c->header_lines[nh++], sizeof(c->header_lines[0]), "NonVersioned: %s", b->non_versioned);
        /* FastMode, SessionBasedPermissions, SessionRepoId as the job recorded them. */
        for (const char *p = write_headers && b->upstream_headers ? b->upstream_headers : "";
             *p && nh < ELEMENTSOF(c->header_lines);) {
                size_t n = strcspn(p, "\n");

                if (n > 0 && n < sizeof(c->header_lines[0])) {
                        memcpy(c->header_lines[nh], p, n);
                        c->header_lines[nh++][n] = '\0';
                }
                p += n;
                if (*p == '\n')
                        p++;
        }
        for (size_t i = 0; i < nh; i++)
                c->headers[i] = c->header_lines[i];
        if (with_body)
                c->headers[nh++] = "Content-Type: application/json";
        c->headers[nh++] = "Accept: application/json";
        c->headers[nh] = NULL;
        return 0;
}

static int build_call(const Batch *b, Call *c) {
        json_t *root = b->extra ? json_deep_copy(b->extra) : json_object();
        json_t *list = json_array();

        for (size_t i = 0; i < b->n_items; i++) {
                if (b->items[i].done)
                        continue;
                if (b->op == JOB_OP_PATCH && !b->items[i].before) {
                        /* A merge patch is never sent as a full replacement. */
                        json_decref(list);
                        json_decref(root);
                        return -EINVAL;
                }
                json_array_append(list, b->items[i].item);
        }
        json_object_set_new(root, job_op_items_member(b->op), list);
        c->body = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        if (!c->body)
                return -ENOMEM;
        return build_scope(b, true, c);
}

/* ---- reconciliation of creates ---- */

/* Ask Visier which of the batch's pending creates whose job is in doubt already exist, in the
 * scope the write was sent to (TargetTenantID, ProjectID, NonVersioned, tenantCode); an item
 * counts as landed only when what was found is that item (same displayName), since a client's
 * own correlation ID may also name someone else's permission. Marks those done and records
 * them, each chunk in its own small transaction. */
static int reconcile_creates(Publisher *p, Batch *b) {
        Call scope = {};
        int r;

        r = build_scope(b, false, &scope);
        if (r < 0) {
                call_done(&scope);
                return r;
        }

        for (size_t start = 0; start < b->n_items;) {
                char *ids = NULL, err[UPSTREAM_ERROR_MAX] = "", *query = NULL;
                size_t len = 0, taken = 0, i;
                FILE *f = open_memstream(&ids, &len);
                UpstreamResponse resp = {};
                json_t *root, *list, *perm;

                if (!f) {
                        r = -ENOMEM;
                        goto out;
                }
                for (i = start; i < b->n_items && taken < PUBLISHER_RECONCILE_CHUNK; i++) {
                        if (b->items[i].done || !b->items[i].correlation_id || !b->items[i].in_doubt)
                                continue;
                        fprintf(f, "%s%s", taken ? "," : "", b->items[i].correlation_id);
                        taken++;
                }
                fclose(f);
                start = i;
                if (taken == 0) {
                        free(ids);
                        continue;
                }
                if (asprintf(&query, "%s%scorrelationIds=%s", strempty(scope.query), scope.query ? "&" : "", ids) < 0)
                        query = NULL;
                free(ids);
                if (!query) {
                        r = -ENOMEM;
                        goto out;
                }
                pthread_mutex_lock(&p->lock);
                p->stats.reconcile_calls++;
                pthread_mutex_unlock(&p->lock);
                r = upstream_call(p->upstream,
                                  &(UpstreamRequest) {
                                          .endpoint = "/v1/admin/permissions?correlationIds",
                                          .method = "GET",
                                          .path = "/v1/admin/permissions",
                                          .query = query,
                                          .headers = scope.headers,
                                          .idempotent = true,
                                  },
                                  &resp, err, sizeof(err));
                free(query);
                if (r < 0)
                        goto out;
                if (resp.status != 200) {
                        upstream_response_done(&resp);
                        r = -EPROTO;
                        goto out;
                }
                root = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
                upstream_response_done(&resp);
                list = json_object_get(root, "permissions");
                if (record_begin(p) < 0) {
                        json_decref(root);
                        r = -EIO;
                        goto out;
                }
                {
                        size_t found[PUBLISHER_RECONCILE_CHUNK], n_found = 0;

                        json_array_foreach(list, i, perm) {
                                const char *cid = json_string_value(json_object_get(perm, "correlationId"));
                                const char *name = json_string_value(json_object_get(perm, "displayName"));
                                if (!cid)
                                        continue;
                                for (size_t k = 0; k < b->n_items; k++) {
                                        BatchItem *it = &b->items[k];
                                        const char *want = json_string_value(json_object_get(it->item, "displayName"));
                                        json_t *res;

                                        if (it->done || !it->in_doubt || !it->correlation_id ||
                                            !streq(it->correlation_id, cid))
                                                continue;
                                        if (!name || !want || !streq(name, want))
                                                continue; /* not this item: someone else's use of the ID */
                                        res = json_pack("{s:O?, s:O?, s:s}", "permissionId",
                                                        json_object_get(perm, "permissionId"), "displayName",
                                                        json_object_get(perm, "displayName"), "correlationId", cid);
                                        store_item_record(p->store, it->job_id, it->idx, true, res);
                                        json_decref(res);
                                        it->done = true;
                                        if (n_found < ELEMENTSOF(found))
                                                found[n_found++] = k;
                                }
                        }
                        if (store_end(p->store, true) < 0) {
                                /* Not recorded: as if not found, so nothing is believed done that
                                 * the store does not say is done. */
                                for (size_t x = 0; x < n_found; x++)
                                        b->items[found[x]].done = false;
                                json_decref(root);
                                p->store_trouble = true;
                                r = -EIO;
                                goto out;
                        }
                }
                json_decref(root);
        }
        r = 0;
out:
        call_done(&scope);
        return r;
}

/* ---- patches: read, merge, check ---- */

static void requeue_all(Publisher *p, const Batch *b, bool count_attempt, bool solo, bool in_doubt, usec_t delay,
                        long status, const char *error);
static void finish_jobs(Publisher *p, const Batch *b, long status);

/* A PermissionFailureDTO for item ID with MESSAGE, and what was read before (if anything),
 * as a patch item's result: {"answer": Visier-shaped entry, "before", "after"}. */
static json_t *patch_result(json_t *answer, json_t *before, json_t *after) {
        return json_pack("{s:o, s:O?, s:O?}", "answer", answer, "before", before, "after", after);
}

/* Requeue the jobs of B, each alone: the one holding item FAILED counts an attempt and goes
 * alone next time (its read keeps failing: backoff), the others try again soon. */
static void requeue_around(Publisher *p, const Batch *b, size_t failed, const char *error) {
        for (size_t j = 0; j < b->n_jobs; j++) {
                Batch one = *b;
                bool culprit = failed >= b->jobs[j].first_item && failed < b->jobs[j].first_item + b->jobs[j].n_items;

                one.jobs = &b->jobs[j];
                one.n_jobs = 1;
                requeue_all(p, &one, culprit, culprit, false, culprit ? 0 : PUBLISHER_BACKOFF_INITIAL, 0, error);
        }
}

/* A Status body and HTTP status for a job of one patch settled as failed (with why, from
 * reading its permission with status READ_STATUS, or 400 for an invalid result). */
static char *settled_status_body(long read_status, const char *msg, long *ret_status) {
        const char *code = "BadRequest";
        bool user = true;
        json_t *body;
        char *text;

        *ret_status = read_status;
        if (read_status == 404)
                code = "NotFound";
        else if (read_status == 403)
                code = "Forbidden";
        else if (read_status != 400) {
                code = "BadGateway", user = false;
                *ret_status = 502;
        }
        body = json_pack("{s:s, s:s, s:s, s:b}", "code", code, "message", msg, "localizedMessage", msg, "userError", user);
        text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        return text;
}

/*
 * Turn each pending merge patch of B into the full permission Visier's PUT takes: read the
 * permission as it is now (GET /v1/admin/permissions/{id}, in the batch's scope), apply the
 * patch (RFC 7396) to it without its correlationId (it names a create, not the permission's
 * state), and check the result as an update. Nothing else of visierd's can write it until the
 * PUT: the lane is held. A permission that is gone, or a patch that would make it invalid,
 * settles its item as failed (nothing is sent for it); a job all of whose items settled so is
 * finished now (a job of one patch with 404 or 400 and Visier's Status body, a larger one with
 * the bulk answer of its failures). When a read cannot be made (network, 429, 5xx) nothing is
 * recorded and nothing sent: that item's job is tried again alone with backoff, the others
 * soon; -EAGAIN. -ENOMEM (the batch is tried again).
 */
static int resolve_patches(Publisher *p, Batch *b) {
        json_t **settled = calloc(b->n_items ? b->n_items : 1, sizeof(json_t *));
        long *settled_status = calloc(b->n_items ? b->n_items : 1, sizeof(long));
        char why[UPSTREAM_ERROR_MAX + 128] = "";
        size_t failed_read = SIZE_MAX, kept;
        Call scope = {};
        int r;

        if (!settled || !settled_status) {
                r = -ENOMEM;
                goto out;
        }
        r = build_read_scope(b, &scope);
        for (size_t i = 0; r >= 0 && i < b->n_items; i++) {
                BatchItem *it = &b->items[i];
                const char *id = json_string_value(json_object_get(it->item, "permissionId"));
                char err[UPSTREAM_ERROR_MAX] = "", *path = NULL, *esc, *text = NULL;
                UpstreamResponse resp = {};
                json_t *current = NULL, *base = NULL, *merged = NULL, *list = NULL, *checked = NULL;
                ValidateError verr;
                int v;

                if (it->done)
                        continue;
                esc = curl_easy_escape(NULL, id, 0);
                if (!esc || asprintf(&path, "/v1/admin/permissions/%s", esc) < 0)
                        path = NULL;
                curl_free(esc);
                if (!path) {
                        r = -ENOMEM;
                        break;
                }
                r = upstream_call(p->upstream,
                                  &(UpstreamRequest) { .endpoint = "/v1/admin/permissions/*", .method = "GET",
                                                       .path = path, .query = scope.query, .headers = scope.headers,
                                                       .idempotent = true },
                                  &resp, err, sizeof(err));
                free(path);
                if (r < 0 || resp.status == 429 || resp.status >= 500) {
                        if (r < 0)
                                snprintf(why, sizeof(why), "could not read permission %.64s to patch it: %s", id, err);
                        else
                                snprintf(why, sizeof(why), "could not read permission %.64s to patch it: Visier answered %ld",
                                         id, resp.status);
                        upstream_response_done(&resp);
                        failed_read = i;
                        r = -EAGAIN;
                        break;
                }
                if (resp.status != 200) {
                        const char *msg = resp.status == 404 ? "permission not found" : "Visier refused to read it";

                        settled[i] = patch_result(json_pack("{s:s, s:{s:s}}", "permissionId", id, "error", "message", msg),
                                                  NULL, NULL);
                        settled_status[i] = resp.status;
                        upstream_response_done(&resp);
                        if (!settled[i]) {
                                r = -ENOMEM;
                                break;
                        }
                        continue;
                }
                current = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
                upstream_response_done(&resp);
                r = 0;
                if (!json_is_object(current)) {
                        settled[i] = patch_result(json_pack("{s:s, s:{s:s}}", "permissionId", id, "error", "message",
                                                            "Visier's answer was not a permission"),
                                                  NULL, NULL);
                        settled_status[i] = 502;
                        r = settled[i] ? 0 : -ENOMEM;
                        goto next;
                }
                base = json_copy(current);
                if (base)
                        (void) json_object_del(base, "correlationId");
                merged = base ? job_merge_patch(base, it->item) : NULL;
                list = merged ? json_pack("{s:[O]}", "permissions", merged) : NULL;
                text = list ? json_dumps(list, JSON_COMPACT) : NULL;
                if (!text) {
                        r = -ENOMEM;
                        goto next;
                }
                v = validate_write(JOB_OP_UPDATE, text, strlen(text), 1, &checked, &verr);
                if (v == -ENOMEM) {
                        r = -ENOMEM;
                } else if (v < 0) {
                        char msg[VALIDATE_PATH_MAX + VALIDATE_MESSAGE_MAX + 64];

                        /* "permissions[0].x" names the patched permission's member. */
                        snprintf(msg, sizeof(msg), "the patched permission is not valid: %.*s %.*s",
                                 VALIDATE_PATH_MAX - 1,
                                 verr.path + (strncmp(verr.path, "permissions[0].", 15) == 0 ? 15 : 0),
                                 VALIDATE_MESSAGE_MAX - 1, verr.message);
                        settled[i] = patch_result(json_pack("{s:s, s:{s:s}}", "permissionId", id, "error", "message", msg),
                                                  current, NULL);
                        settled_status[i] = 400;
                        r = settled[i] ? 0 : -ENOMEM;
                } else {
                        it->before = json_incref(current);
                        json_decref(it->item);
                        it->item = json_incref(merged);
                }
        next:
                json_decref(checked);
                free(text);
                json_decref(list);
                json_decref(merged);
                json_decref(base);
                json_decref(current);
        }
        if (r == -EAGAIN) {
                requeue_around(p, b, failed_read, why);
                goto out;
        }
        if (r < 0)
                goto out;
        /* Never a raw patch as a full replacement: every item left to send was resolved. */
        for (size_t i = 0; i < b->n_items; i++)
                if (!b->items[i].done && !settled[i] && !b->items[i].before) {
                        r = -ENOMEM;
                        goto out;
                }

        /* Record what settled, and finish the jobs with nothing left to send. */
        if (record_begin(p) < 0) {
                p->store_trouble = true;
                r = -EIO;
                goto out;
        }
        for (size_t i = 0; i < b->n_items; i++)
                if (settled[i]) {
                        store_item_record(p->store, b->items[i].job_id, b->items[i].idx, false, settled[i]);
                        b->items[i].done = true;
                }
        kept = 0;
        for (size_t j = 0; j < b->n_jobs; j++) {
                BatchJob *job = &b->jobs[j];
                size_t n_settled = 0;

                for (size_t k = 0; k < job->n_items; k++)
                        n_settled += settled[job->first_item + k] != NULL;
                if (n_settled == 0 || n_settled < job->n_items) {
                        /* Still to send: stays in the batch. */
                        b->jobs[kept++] = *job;
                        continue;
                }
                if (job->n_items == 1) {
                        const char *msg = json_string_value(json_object_get(
                                json_object_get(json_object_get(settled[job->first_item], "answer"), "error"), "message"));
                        long st;
                        char *text = settled_status_body(settled_status[job->first_item], msg, &st);

                        store_job_finish(p->store, job->id, JOB_FAILED, settled_status[job->first_item], msg, st,
                                         text ? text : "");
                        emit(p, &(PublisherEvent) { .kind = PUBLISHER_JOB_DONE, .job_id = job->id,
                                                     .op = job_op_to_string(b->op), .n_items = job->n_items,
                                                     .status = st, .state = "failed", .message = msg });
                        free(text);
                } else {
                        Batch one = *b;

                        one.jobs = job;
                        one.n_jobs = 1;
                        finish_jobs(p, &one, 200); /* Visier's bulk shape, every item a failure */
                }
        }
        /* A finished job leaves the batch, so nothing after this finishes, splits or requeues it
         * again (its items stay, done). */
        b->n_jobs = kept;
        record_end(p);
        r = 0;
out:
        for (size_t i = 0; settled && i < b->n_items; i++)
                json_decref(settled[i]);
        free(settled);
        free(settled_status);
        call_done(&scope);
        return r;
}

/* ---- mapping an answer back to jobs ---- */

static bool message_says_not_found(json_t *failure) {
        const char *m = json_string_value(json_object_get(json_object_get(failure, "error"), "message"));
        return m && strcasestr(m, "not found");
}

static const char *item_permission_id(const Batch *b, const BatchItem *it) {
        if (b->op == JOB_OP_DELETE || b->op == JOB_OP_REVERT)
                return json_string_value(it->item);
        return json_string_value(json_object_get(it->item, "permissionId"));
}

/* Find and take the first unused entry of list whose key matches; marks it used in `used`. */
static json_t *take_match(json_t *list, json_t *used, const char *field, const char *value) {
        json_t *e;
        size_t i;

        if (!value)
                return NULL;
        json_array_foreach(list, i, e) {
                const char *v = json_string_value(json_object_get(e, field));
                if (v && streq(v, value) && !json_is_true(json_array_get(used, i))) {
                        json_array_set_new(used, i, json_true());
                        return e;
                }
        }
        return NULL;
}

static json_t *mark_list(json_t *list) {
        json_t *used = json_array();
        for (size_t i = 0; i < json_array_size(list); i++)
                json_array_append_new(used, json_false());
        return used;
}

/* Per item: succeeded?, and the entry of Visier's answer that says so. */
static void map_bulk(const Batch *b, json_t *answer, bool *ok, json_t **results, const BatchJob *job_of_item[]) {
        json_t *succ = json_object_get(answer, "successes"), *fail = json_object_get(answer, "failures");
        json_t *su = mark_list(succ), *fu = mark_list(fail);
        const bool by_cid = b->op == JOB_OP_CREATE;

        for (size_t i = 0; i < b->n_items; i++) {
                const BatchItem *it = &b->items[i];
                const char *key = by_cid ? it->correlation_id : item_permission_id(b, it);
                const char *field = by_cid ? "correlationId" : "permissionId";
                json_t *e;

                if (it->done)
                        continue;
                if ((e = take_match(succ, su, field, key))) {
                        ok[i] = true;
                        results[i] = json_incref(e);
                } else if ((e = take_match(fail, fu, field, key))) {
                        /* A delete retried after an ambiguous attempt may find its permission gone: done. */
                        ok[i] = b->op == JOB_OP_DELETE && job_of_item[i]->in_doubt && message_says_not_found(e);
                        results[i] = json_incref(e);
                } else {
                        ok[i] = false;
                        /* PermissionFailureDTO: no member is null, so an unknown ID is left out. */
                        results[i] = json_pack("{s:{s:s}}", "error", "message", "Visier's answer did not mention this item");
                        if (results[i] && !by_cid && key)
                                json_object_set_new(results[i], "permissionId", json_string(key));
                        if (results[i] && by_cid && it->correlation_id)
                                json_object_set_new(results[i], "correlationId", json_string(it->correlation_id));
                }
        }
        json_decref(su);
        json_decref(fu);
}

/*
 * Per assignment item: Visier answers one group per tenant the users belong to, each listing
 * the permissions of the call with their users. An item succeeded when its permission appears
 * and none of its entries, in any tenant, carries a failure: a message on the entry or on any
 * of its users (in a merged call a tenant's status says "Succeed" while a missing permission's
 * users each say "permission … not found"), or a tenant whose every change failed.
 */
static void map_assignments(const Batch *b, json_t *answer, bool *ok, json_t **results) {
        json_t *tenants = json_object_get(answer, "tenants"), *t, *e, *u;
        size_t ti, ei, ui;

        for (size_t i = 0; i < b->n_items; i++) {
                const char *pid = json_string_value(json_object_get(b->items[i].item, "permissionId"));
                json_t *found = NULL, *tenant = NULL;
                bool failed = false;

                if (b->items[i].done)
                        continue;
                json_array_foreach(tenants, ti, t) {
                        json_array_foreach(json_object_get(t, "permissions"), ei, e) {
                                const char *v = json_string_value(
                                        json_object_get(json_object_get(e, "permission"), "permissionId"));

                                if (!v || !pid || !streq(v, pid))
                                        continue;
                                if (!found) {
                                        found = e;
                                        tenant = t;
                                }
                                if (json_object_get(e, "message") || json_object_get(e, "error") ||
                                    streq(json_string_value(json_object_get(t, "status")) ?: "", "Failed"))
                                        failed = true;
                                json_array_foreach(json_object_get(e, "users"), ui, u)
                                        if (json_object_get(u, "message"))
                                                failed = true;
                                if (failed && found != e) {
                                        /* Keep the entry that tells the failure for the job's answer. */
                                        found = e;
                                        tenant = t;
                                }
                        }
                }
                if (!found) {
                        ok[i] = false;
                        results[i] = json_pack("{s:{s:{s:s?}, s:[]}, s:s}", "entry", "permission", "permissionId", pid,
                                               "users", "error", "Visier's answer did not mention this permission");
                        continue;
                }
                ok[i] = !failed;
                results[i] = json_pack("{s:O, s:O?, s:O?}", "entry", found, "tenantCode",
                                       json_object_get(tenant, "tenantCode"), "status",
                                       json_object_get(tenant, "status"));
        }
}

static bool in_string_array(json_t *list, const char *v) {
        json_t *e;
        size_t i;

        json_array_foreach(list, i, e)
                if (v && streq(strempty(json_string_value(e)), v))
                        return true;
        return false;
}

/*
 * Visier's answer for exactly one job's items, from the recorded item results. A create's
 * entries keep a correlationId only when the request had it (client_cids): Visier answers
 * with the ones it was given, and the ones visierd added for its own bookkeeping were not the
 * client's.
 */
static char *job_answer(JobOp op, json_t *item_results, json_t *client_cids, bool *ret_any_ok, bool *ret_any_failed) {
        json_t *root, *r;
        size_t i;
        char *s;

        *ret_any_ok = *ret_any_failed = false;
        if (job_op_is_bulk(op)) {
                json_t *succ = json_array(), *fail = json_array();
                json_array_foreach(item_results, i, r) {
                        bool ok = streq(json_string_value(json_object_get(r, "state")) ?: "", "succeeded");
                        json_t *res = json_object_get(r, "result");
                        if (ok)
                                *ret_any_ok = true;
                        else
                                *ret_any_failed = true;
                        if (op == JOB_OP_PATCH) /* {"answer", "before", "after"}: Visier's entry */
                                res = json_object_get(res, "answer");
                        if (!res)
                                continue;
                        if (op == JOB_OP_CREATE &&
                            !in_string_array(client_cids, json_string_value(json_object_get(res, "correlationId")))) {
                                json_t *copy = json_copy(res);

                                json_object_del(copy, "correlationId");
                                json_array_append_new(ok ? succ : fail, copy);
                        } else
                                json_array_append(ok ? succ : fail, res);
                }
                root = json_pack("{s:o, s:o}", "successes", succ, "failures", fail);
        } else {
                json_t *perms = json_array(), *first = NULL;
                json_array_foreach(item_results, i, r) {
                        json_t *res = json_object_get(r, "result");
                        bool ok = streq(json_string_value(json_object_get(r, "state")) ?: "", "succeeded");
                        if (ok)
                                *ret_any_ok = true;
                        else
                                *ret_any_failed = true;
                        if (!res)
                                continue;
                        if (!first)
                                first = res;
                        if (json_object_get(res, "entry"))
                                json_array_append(perms, json_object_get(res, "entry"));
                        else
                                json_array_append(perms, res);
                }
                json_t *tenant = json_pack("{s:s, s:o}", "status", *ret_any_ok ? "Succeed" : "Failed", "permissions", perms);
                json_t *code = first ? json_object_get(first, "tenantCode") : NULL;

                if (tenant && json_is_string(code)) /* never null: the schema says string */
                        json_object_set(tenant, "tenantCode", code);
                root = json_pack("{s:[o]}", "tenants", tenant);
        }
        s = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        return s;
}

/* Finish every job of the batch whose items all have an outcome now. */
static void finish_jobs(Publisher *p, const Batch *b, long status) {
        /* Before any job is marked done or its waiter answered. */
        if (p->cache)
                cache_invalidate(p->cache, NULL, cache_invalidation_for_op(b->op));
        for (size_t j = 0; j < b->n_jobs; j++) {
                json_t *results = store_job_item_results(p->store, b->jobs[j].id);
                json_t *cids = b->op == JOB_OP_CREATE ? store_job_client_correlation_ids(p->store, b->jobs[j].id) : NULL;
                bool any_ok, any_failed;
                char *answer = job_answer(b->op, results, cids, &any_ok, &any_failed);
                JobState state = any_ok ? JOB_SUCCEEDED : JOB_FAILED;

                store_job_finish(p->store, b->jobs[j].id, state, status,
                                 any_ok ? (any_failed ? "some items failed; see item_results" : NULL)
                                        : "every item failed; see item_results",
                                 200, answer);
                emit(p, &(PublisherEvent) { .kind = PUBLISHER_JOB_DONE, .job_id = b->jobs[j].id,
                                             .op = job_op_to_string(b->op), .n_items = b->jobs[j].n_items,
                                             .status = status, .state = job_state_to_string(state),
                                             .message = any_failed ? "some items failed" : NULL });
                free(answer);
                json_decref(results);
                json_decref(cids);
        }
}

/* Record Visier's answer for B's items; in a round (ROUND > 0) they are stashed in it and the
 * jobs go on running until the draft is published. */
static int record_answer(Publisher *p, Batch *b, long status, json_t *answer, int64_t round) {
        const BatchJob **job_of_item = calloc(b->n_items ? b->n_items : 1, sizeof(*job_of_item));
        bool *ok = calloc(b->n_items ? b->n_items : 1, sizeof(*ok));
        json_t **results = calloc(b->n_items ? b->n_items : 1, sizeof(*results));
        int r = -ENOMEM;

        if (!job_of_item || !ok || !results)
                goto out;
        for (size_t j = 0; j < b->n_jobs; j++)
                for (size_t k = 0; k < b->jobs[j].n_items; k++)
                        job_of_item[b->jobs[j].first_item + k] = &b->jobs[j];
        if (job_op_is_bulk(b->op))
                map_bulk(b, answer, ok, results, job_of_item);
        else
                map_assignments(b, answer, ok, results);

        /* A create refused because its correlation ID is taken may be our own earlier attempt
         * that landed unseen — only if an earlier attempt may have landed (in doubt): ask
         * Visier before calling it a failure. */
        if (b->op == JOB_OP_CREATE) {
                bool ask = false;
                for (size_t i = 0; i < b->n_items; i++) {
                        const char *m = json_string_value(json_object_get(json_object_get(results[i], "error"), "message"));
                        ask |= !ok[i] && !b->items[i].done && b->items[i].in_doubt && m && strcasestr(m, "correlation");
                }
                if (ask)
                        (void) reconcile_creates(p, b);
        }

        if (record_begin(p) < 0) {
                p->store_trouble = true;
                r = -EIO;
                goto out;
        }
        for (size_t i = 0; i < b->n_items; i++) {
                if (b->items[i].done)
                        continue;
                if (b->op == JOB_OP_PATCH) /* the operator sees what changed */
                        results[i] = patch_result(results[i], b->items[i].before, ok[i] ? b->items[i].item : NULL);
                if (round > 0)
                        store_round_stash(p->store, round, b->items[i].job_id, b->items[i].idx, ok[i], results[i]);
                else
                        store_item_record(p->store, b->items[i].job_id, b->items[i].idx, ok[i], results[i]);
        }
        if (round == 0)
                finish_jobs(p, b, status);
        r = record_end(p);
out:
        for (size_t i = 0; results && i < b->n_items; i++)
                json_decref(results[i]);
        free(results);
        free(ok);
        free(job_of_item);
        return r;
}

/* Has a job that failed transiently (again) been tried long enough? Only its age, and the
 * optional attempt limit, decide: a transient failure says nothing about the job itself. */
static bool gives_up(Publisher *p, const BatchJob *job, bool count_attempt) {
        if (count_attempt && p->active.max_attempts > 0 && job->attempts + 1 >= p->active.max_attempts)
                return true;
        return p->active.give_up_after_ms > 0 && wall_ms() - job->created_at_ms >= p->active.give_up_after_ms;
}

/* Put every job of the batch back in the queue (or fail those that have been tried long enough). */
static void requeue_all(Publisher *p, const Batch *b, bool count_attempt, bool solo, bool in_doubt, usec_t delay,
                        long status,
                        const char *error) {
        if (record_begin(p) < 0) {
                p->store_trouble = true;
                return;
        }
        for (size_t j = 0; j < b->n_jobs; j++) {
                const BatchJob *job = &b->jobs[j];
                bool all_done = true;

                for (size_t k = 0; k < job->n_items; k++)
                        all_done &= b->items[job->first_item + k].done;
                if (all_done && job->n_items > 0) { /* everything was found to have landed */
                        Batch one = *b;
                        one.jobs = (BatchJob *) job;
                        one.n_jobs = 1;
                        finish_jobs(p, &one, status);
                        continue;
                }
                if (!solo && gives_up(p, job, count_attempt)) {
                        char msg[UPSTREAM_ERROR_MAX + 96];
                        char *body;

                        snprintf(msg, sizeof(msg), "gave up after %u attempts over %lld s: %s",
                                 job->attempts + (count_attempt ? 1 : 0),
                                 (long long) ((wall_ms() - job->created_at_ms) / 1000), error);
                        {
                                json_t *st = json_pack("{s:s, s:s, s:s, s:b}", "code", "ServiceUnavailable", "message",
                                                       msg, "localizedMessage", msg, "userError", 0);
                                body = json_dumps(st, JSON_COMPACT);
                                json_decref(st);
                        }
                        store_job_finish(p->store, job->id, JOB_FAILED, status, msg, status >= 500 ? status : 502,
                                         body);
                        free(body);
                        emit(p, &(PublisherEvent) { .kind = PUBLISHER_JOB_DONE, .job_id = job->id,
                                                     .op = job_op_to_string(b->op), .n_items = job->n_items,
                                                     .status = status, .state = "failed", .message = msg });
                        continue;
                }
                usec_t d = count_attempt ? publisher_backoff(job->attempts + 1) : delay;
                store_job_requeue(p->store, job->id, count_attempt, wall_ms() + (int64_t) (d / USEC_PER_MSEC), solo, in_doubt,
                                  status, error);
                emit(p, &(PublisherEvent) { .kind = PUBLISHER_JOB_RETRY, .job_id = job->id,
                                             .op = job_op_to_string(b->op), .n_items = job->n_items, .status = status,
                                             .message = error });
        }
        record_end(p);
        pthread_mutex_lock(&p->lock);
        p->stats.retries += b->n_jobs;
        pthread_mutex_unlock(&p->lock);
}

static void fail_alone(Publisher *p, const Batch *b, long status, const char *body, const char *error) {
        if (record_begin(p) < 0) {
                p->store_trouble = true;
                return;
        }
        for (size_t j = 0; j < b->n_jobs; j++) {
                store_job_finish(p->store, b->jobs[j].id, JOB_FAILED, status, error, status, body);
                emit(p, &(PublisherEvent) { .kind = PUBLISHER_JOB_DONE, .job_id = b->jobs[j].id,
                                             .op = job_op_to_string(b->op), .n_items = b->jobs[j].n_items,
                                             .status = status, .state = "failed", .message = error });
        }
        record_end(p);
}

/* The lane is free again at once (the call was answered), or only after publish_settle (its
 * answer was lost: Visier may still be publishing it). Written with the outcome's recording. */
static void lane_after_call(Publisher *p, int64_t started_ms, bool answered) {
        int64_t now = wall_ms();

        p->lane_dirty = true;
        if (answered) {
                p->lane_started_ms = p->lane_deadline_ms = 0;
                return;
        }
        p->lane_started_ms = started_ms;
        p->lane_deadline_ms = now; /* a restart waits publish_settle from here */
        p->lane_free_at_ms = now + (int64_t) (p->active.publish_settle / USEC_PER_MSEC);
}

/* No write is sent before its opening is on disk: if visierd dies during the call, the next
 * start knows until when it may run. On failure the jobs stay running; they are recovered once
 * the store works again. */
static int lane_open(Publisher *p, int64_t *ret_started) {
        usec_t watch = clock_now(); /* fleet mode's stopwatch: started before the fence */
        int64_t started = wall_ms();
        int r = store_lane_open(p->store, started,
                                started + (int64_t) ((p->active.request_timeout + USEC_PER_SEC) / USEC_PER_MSEC));

        if (r >= 0 && p->fleet && clock_now() - watch > PUBLISHER_FENCE_SLACK) {
                /* Fenced, but too late to send within the recorded deadline: abandoned, never
                 * sent, and the next recording ends the fenced call as answered. */
                p->lane_dirty = true;
                p->lane_started_ms = p->lane_deadline_ms = 0;
                r = -ETIMEDOUT;
        }
        if (r < 0) {
                /* The fence refusing is the fleet working as designed (a notice); anything else is
                 * trouble with the database. */
                bool fenced = r == -ESTALE || r == -EAGAIN;

                p->store_trouble = true;
                emit(p, &(PublisherEvent) {
                                .kind = fenced ? PUBLISHER_FENCED : PUBLISHER_STORE_ERROR,
                                .message = r == -ESTALE    ? "another node holds the publish lane now; the write call was not sent"
                                           : r == -EAGAIN  ? "the publish lane's wait is not over; the write call was not sent"
                                           : r == -ETIMEDOUT ? "the write call's fence took too long; not sent"
                                                             : "cannot record the opening of a write call; not sent" });
                return r;
        }
        *ret_started = started;
        return 0;
}

/* Finish the call job of b with Visier's answer (status and body, as the client gets them). */
static void finish_call(Publisher *p, const Batch *b, JobState state, long status, const char *body, const char *error) {
        if (record_begin(p) < 0)
                return;
        store_job_finish(p->store, b->jobs[0].id, state, status, error, status, body);
        emit(p, &(PublisherEvent) { .kind = PUBLISHER_JOB_DONE, .job_id = b->jobs[0].id, .op = job_op_to_string(b->op),
                                     .status = status, .state = job_state_to_string(state), .message = error });
        record_end(p);
}

static void fail_call(Publisher *p, const Batch *b, long status, const char *msg) {
        json_t *st = json_pack("{s:s, s:s, s:s, s:b}", "code", status == 502 ? "BadGateway" : "ServiceUnavailable",
                               "message", msg, "localizedMessage", msg, "userError", 0);
        char *body = st ? json_dumps(st, JSON_COMPACT) : NULL;

        finish_call(p, b, JOB_FAILED, status, body ? body : "", msg);
        free(body);
        json_decref(st);
}

/*
 * A call job: any other write of Visier's API (policy table), sent once as it came, alone,
 * through the same lane as every permission write. Visier's answer is the job's. There is no
 * way to ask Visier whether such a call landed, so one that may have (a lost answer, a 5xx,
 * or a visierd that stopped during it) is never sent again: the job fails and says so.
 */
static void publish_call(Publisher *p, Batch *b) {
        json_t *call = json_object_get(b->extra, "call");
        const char *method = json_string_value(json_object_get(call, "method"));
        const char *path = json_string_value(json_object_get(call, "path"));
        const char *route = json_string_value(json_object_get(call, "route")); /* the metrics label */
        const char *query = json_string_value(json_object_get(call, "query"));
        const char *body = json_string_value(json_object_get(call, "body"));
        char err[UPSTREAM_ERROR_MAX] = "", msg[UPSTREAM_ERROR_MAX + 160];
        UpstreamResponse resp = {};
        int64_t started;
        Call c = {};
        int r;

        if (b->n_jobs != 1 || !method || !path) {
                fail_call(p, b, 500, "the job's call cannot be read back from the job database");
                return;
        }
        if (b->jobs[0].in_doubt) {
                fail_call(p, b, 502,
                          "an earlier attempt may have been applied (its answer was lost, or visierd stopped during "
                          "it); visierd does not send a call it cannot check again");
                return;
        }
        if (build_scope(b, body && *body, &c) < 0 || (query && *query && !(c.query = strdup(query)))) {
                call_done(&c);
                requeue_all(p, b, false, false, false, PUBLISHER_BACKOFF_INITIAL, 0, "out of memory");
                return;
        }
        if (lane_open(p, &started) < 0) {
                call_done(&c);
                return;
        }
        pthread_mutex_lock(&p->lock);
        p->stats.write_calls++;
        pthread_mutex_unlock(&p->lock);
        call_begin(p, job_op_to_string(b->op), method, route ? route : "call", b, b->n_items);
        r = upstream_call(p->upstream,
                          &(UpstreamRequest) {
                                  .endpoint = route ? route : "call",
                                  .method = method,
                                  .path = path,
                                  .query = c.query,
                                  .headers = c.headers,
                                  .body = body && *body ? body : NULL,
                                  .body_len = body ? strlen(body) : 0,
                                  .idempotent = false,
                          },
                          &resp, err, sizeof(err));
        call_end(p);
        call_done(&c);
        if (p->cache)
                cache_invalidate(p->cache, NULL, cache_invalidation_for_op(b->op));
        emit(p, &(PublisherEvent) { .kind = PUBLISHER_CALL, .op = job_op_to_string(b->op), .n_jobs = 1,
                                     .status = r < 0 ? 0 : resp.status, .message = r < 0 ? err : NULL });

        if (r == -ENOKEY || r == -EBUSY || r == -ECANCELED || (r >= 0 && resp.status == 429)) {
                lane_after_call(p, started, true); /* never applied: sent again later */
                requeue_all(p, b, false, false, false, PUBLISHER_BACKOFF_INITIAL, r < 0 ? 0 : resp.status,
                            r < 0 ? err : "Visier's rate limit");
                upstream_response_done(&resp);
                return;
        }
        if (r < 0) {
                lane_after_call(p, started, false);
                snprintf(msg, sizeof(msg), "%s; the call may or may not have been applied, and visierd does not send "
                                           "it again",
                         err);
                fail_call(p, b, 502, msg);
                return;
        }
        if (resp.status >= 500) {
                lane_after_call(p, started, resp.status != 502 && resp.status != 504);
                snprintf(msg, sizeof(msg), "Visier answered %ld; the call may or may not have been applied, and visierd "
                                           "does not send it again",
                         resp.status);
                finish_call(p, b, JOB_FAILED, resp.status, resp.body ? resp.body : "", msg);
                upstream_response_done(&resp);
                return;
        }
        lane_after_call(p, started, true);
        if (resp.status >= 400)
                snprintf(msg, sizeof(msg), "Visier refused the call with %ld", resp.status);
        finish_call(p, b, resp.status < 400 ? JOB_SUCCEEDED : JOB_FAILED, resp.status, resp.body ? resp.body : "",
                    resp.status < 400 ? NULL : msg);
        upstream_response_done(&resp);
}

/* How a batch's call went, as a round needs to know. */
typedef enum Sent {
        SENT_ANSWERED,  /* Visier answered every item */
        SENT_SETTLED,   /* nothing was sent, or Visier refused the call whole: nothing changed */
        SENT_NOT_SENT,  /* no token, no rate budget, or a 429: tried again later */
        SENT_IN_DOUBT,  /* it may or may not have been applied */
} Sent;

/*
 * Send B as one call. In a round (ROUND > 0) it goes into the round's draft (B's project is
 * the draft), its answer is stashed in the round, and an attempt that may have landed there
 * leaves nothing in doubt: the draft will never be published (see publish_round()).
 */
static Sent publish_batch(Publisher *p, Batch *b, int64_t round) {
        char err[UPSTREAM_ERROR_MAX] = "", msg[UPSTREAM_ERROR_MAX + 64];
        UpstreamResponse resp = {};
        bool maybe_landed = false;
        size_t pending = 0;
        int64_t started;
        Call c = {};
        json_t *answer;
        int r;

        if (b->op == JOB_OP_CALL) {
                publish_call(p, b);
                return SENT_ANSWERED;
        }
        for (size_t j = 0; j < b->n_jobs; j++)
                maybe_landed |= b->jobs[j].in_doubt;
        if (b->op == JOB_OP_CREATE && maybe_landed) {
                r = reconcile_creates(p, b);
                if (r < 0) {
                        requeue_all(p, b, false, false, false, PUBLISHER_BACKOFF_INITIAL, 0,
                                    "could not ask Visier which creates already landed");
                        return SENT_SETTLED;
                }
        }
        if (b->op == JOB_OP_PATCH) {
                r = resolve_patches(p, b);
                if (r == -EAGAIN)
                        return SENT_SETTLED; /* requeued around the read that failed */
                if (r < 0) {
                        requeue_all(p, b, false, false, false, PUBLISHER_BACKOFF_INITIAL, 0,
                                    r == -EIO ? "could not record the patches' outcome" : "out of memory");
                        return SENT_SETTLED;
                }
        }
        for (size_t i = 0; i < b->n_items; i++)
                pending += !b->items[i].done;
        if (pending == 0) {
                if (record_begin(p) >= 0) {
                        finish_jobs(p, b, 200);
                        record_end(p);
                }
                return SENT_SETTLED;
        }

        r = build_call(b, &c);
        if (r < 0) {
                requeue_all(p, b, false, false, false, PUBLISHER_BACKOFF_INITIAL, 0, "out of memory");
                call_done(&c);
                return SENT_SETTLED;
        }
        if (lane_open(p, &started) < 0) {
                call_done(&c);
                return SENT_NOT_SENT;
        }
        pthread_mutex_lock(&p->lock);
        p->stats.write_calls++;
        p->stats.items_sent += pending;
        pthread_mutex_unlock(&p->lock);
        call_begin(p, job_op_to_string(b->op), job_op_method(b->op), job_op_path(b->op), b, pending);
        r = upstream_call(p->upstream,
                          &(UpstreamRequest) {
                                  .endpoint = job_op_path(b->op),
                                  .method = job_op_method(b->op),
                                  .path = job_op_path(b->op),
                                  .query = c.query,
                                  .headers = c.headers,
                                  .body = c.body,
                                  .body_len = strlen(c.body),
                                  .idempotent = false,
                          },
                          &resp, err, sizeof(err));
        call_end(p);
        call_done(&c);
        /* Sent: whatever Visier did with it, no cached read from before it may be served
         * again (read-your-writes). Every tenant: a write's tenant header does not bound
         * what it changes (docs/architecture.md, "Metadata cache"). */
        if (p->cache)
                cache_invalidate(p->cache, NULL, cache_invalidation_for_op(b->op));
        emit(p, &(PublisherEvent) { .kind = PUBLISHER_CALL, .op = job_op_to_string(b->op), .n_jobs = b->n_jobs,
                                     .n_items = pending, .status = r < 0 ? 0 : resp.status,
                                     .message = r < 0 ? err : NULL });

        if (r == -ENOKEY || r == -EBUSY || r == -ECANCELED || (r >= 0 && resp.status == 429)) {
                /* Never applied: no token (or Visier kept refusing it), no rate budget, or
                 * refused outright until the deadline. No attempt used; nothing may be running. */
                lane_after_call(p, started, true);
                requeue_all(p, b, false, false, false, PUBLISHER_BACKOFF_INITIAL, r < 0 ? 0 : resp.status,
                            r < 0 ? err : "Visier's rate limit");
                upstream_response_done(&resp);
                return SENT_NOT_SENT;
        }
        if (r < 0) { /* may or may not have landed, and may still be publishing */
                lane_after_call(p, started, false);
                requeue_all(p, b, true, false, round == 0, 0, 0, err);
                return SENT_IN_DOUBT;
        }
        if (resp.status >= 500) {
                /* Answered, but with a server error: whether the change was applied is unknown.
                 * Whether it may still be publishing depends on who answered: Visier's own 500,
                 * 501 or 503 come when it has finished with the call; a gateway's 502 or 504 mean
                 * the call may go on behind it, like a lost answer. */
                lane_after_call(p, started, resp.status != 502 && resp.status != 504);
                snprintf(msg, sizeof(msg), "Visier answered %ld", resp.status);
                requeue_all(p, b, true, false, round == 0, 0, resp.status, msg);
                upstream_response_done(&resp);
                return SENT_IN_DOUBT;
        }
        lane_after_call(p, started, true);
        if (resp.status >= 400) {
                json_t *st = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
                const char *why = json_string_value(json_object_get(st, "localizedMessage"));

                snprintf(msg, sizeof(msg), "Visier rejected the call with %ld: %s", resp.status,
                         why ? why : "(no message)");
                if (b->n_jobs > 1) {
                        /* One job's item spoiled a merged call: every job goes alone, so only it fails. */
                        pthread_mutex_lock(&p->lock);
                        p->stats.splits++;
                        pthread_mutex_unlock(&p->lock);
                        requeue_all(p, b, false, true, false, 0, resp.status, msg);
                } else
                        fail_alone(p, b, resp.status, resp.body ? resp.body : "", msg);
                json_decref(st);
                upstream_response_done(&resp);
                return SENT_SETTLED;
        }
        answer = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
        if (round > 0 && !json_is_object(answer)) {
                /* The draft holds the call's effect, but nothing says which items succeeded:
                 * it must not be published so; the round is dropped and its jobs sent again. */
                json_decref(answer);
                upstream_response_done(&resp);
                requeue_all(p, b, true, false, false, 0, resp.status, "Visier's answer in the draft could not be read");
                return SENT_IN_DOUBT;
        }
        r = record_answer(p, b, resp.status, answer, round);
        json_decref(answer);
        upstream_response_done(&resp);
        /* In a round, an answer not kept with it must not be published (its jobs stay running
         * in the round, which is dropped). */
        return r < 0 && round > 0 ? SENT_IN_DOUBT : SENT_ANSWERED;
}

/* ---- project mode: rounds ---- */

/*
 * A round (project mode): a draft project, the bulk calls of one scope sent into it (any
 * operations, as the claim's reordering rules allow), then one commitAndPublish — one
 * production version for all of them. Every step is written before it is taken (the store's
 * round row: opening, filling, committing), so that whatever a crash leaves is resolved by
 * resolve_rounds() before anything else is claimed:
 *   opening, filling → the draft (found by its ID, or by its name if the ID was never
 *                      learnt) is deleted unpublished and the round's jobs go back to the queue;
 *   committing       → Visier's production versions say whether the draft was published: if
 *                      so the stashed answers become the jobs' outcomes; if not and the draft is
 *                      still open it is committed again; if it is gone, the jobs are queued again.
 * A refused commit (4xx) deletes the draft; its jobs are then sent again each in a round of
 * its own, and a job alone in a refused round fails with Visier's answer.
 */

/* Could Visier not be asked (no token, no budget, 429, network, 5xx)? Then try again later. */
static bool unanswered(int r, const UpstreamResponse *resp) {
        return r < 0 || resp->status == 429 || resp->status >= 500;
}

static bool never_sent(int r, const UpstreamResponse *resp) {
        return r == -ENOKEY || r == -EBUSY || r == -ECANCELED || (r >= 0 && resp->status == 429);
}

/* A call about the draft projects or production versions of TENANT (TargetTenantID; "": the
 * login's). */
static int project_call(Publisher *p, const char *tenant, const char *method, const char *endpoint, const char *path,
                        const char *query, const char *body, UpstreamResponse *resp, char *err, size_t err_size) {
        char tenant_line[512];
        const char *headers[4];
        size_t nh = 0;

        if (*tenant) {
                snprintf(tenant_line, sizeof(tenant_line), "TargetTenantID: %s", tenant);
                headers[nh++] = tenant_line;
        }
        if (body)
                headers[nh++] = "Content-Type: application/json";
        headers[nh++] = "Accept: application/json";
        headers[nh] = NULL;
        return upstream_call(p->upstream,
                             &(UpstreamRequest) { .endpoint = endpoint, .method = method, .path = path, .query = query,
                                                  .headers = headers, .body = body, .body_len = body ? strlen(body) : 0,
                                                  .idempotent = !streq(method, "POST") },
                             resp, err, err_size);
}

static char *project_path(const char *id) {
        char *esc = curl_easy_escape(NULL, id, 0), *path = NULL;

        if (!esc || asprintf(&path, "/v1/admin/projects/%s", esc) < 0)
                path = NULL;
        curl_free(esc);
        return path;
}

static void round_event(Publisher *p, const StoreRound *rd, long status, const char *fmt, ...) _printf_(4, 5);
static void round_event(Publisher *p, const StoreRound *rd, long status, const char *fmt, ...) {
        char m[UPSTREAM_ERROR_MAX + 256];
        int n;
        va_list ap;

        n = snprintf(m, sizeof(m), "round %lld (draft project %s): ", (long long) rd->id,
                     rd->project_id ? rd->project_id : rd->name);
        va_start(ap, fmt);
        if (n > 0 && (size_t) n < sizeof(m))
                vsnprintf(m + n, sizeof(m) - (size_t) n, fmt, ap);
        va_end(ap);
        emit(p, &(PublisherEvent) { .kind = PUBLISHER_ROUND, .op = "round", .status = status, .message = m });
}

/* Is B to go into a draft project? Not a call job, not a write the client scoped itself
 * (its own ProjectID, NonVersioned: true, a tenantCode), and its tenant is one of
 * project_tenants. */
static bool round_eligible(const Publisher *p, const Batch *b) {
        const char *want = *b->tenant ? b->tenant : "-";

        if (!p->active.project_mode || b->op == JOB_OP_CALL || *b->project || *b->tenant_code ||
            strcaseeq(b->non_versioned, "true"))
                return false;
        if (!*p->active.project_tenants)
                return true;
        for (const char *t = p->active.project_tenants; *t;) {
                size_t n;

                t += strspn(t, " \t,");
                n = strcspn(t, ",");
                while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
                        n--;
                if (n > 0 && strlen(want) == n && strncmp(t, want, n) == 0)
                        return true;
                t += strcspn(t, ",");
        }
        return false;
}

static void round_done(StoreRound *rd) {
        free(rd->name);
        free(rd->tenant);
        free(rd->project_id);
        *rd = (StoreRound) {};
}

static void batches_free(Batch **list, size_t n) {
        for (size_t i = 0; i < n; i++)
                batch_free(list[i]);
        free(list);
}

static int round_close(Publisher *p, const StoreRound *rd) {
        if (record_begin(p) < 0)
                return -EIO;
        store_round_close(p->store, rd->id);
        return record_end(p);
}

/* Delete the round's draft (by its ID, or by its name when the ID was never learnt): 1 when
 * it is gone (deleted, never there, or Visier will not delete it: it is never published by
 * visierd either way), 0 when Visier could not be asked. */
static int round_delete_draft(Publisher *p, const StoreRound *rd) {
        char err[UPSTREAM_ERROR_MAX] = "";
        UpstreamResponse resp = {};
        json_t *root, *e;
        size_t i;
        int r;

        if (rd->project_id) {
                char *path = project_path(rd->project_id);

                if (!path)
                        return 0;
                r = project_call(p, rd->tenant, "DELETE", "/v1/admin/projects/*", path, NULL, NULL, &resp, err,
                                 sizeof(err));
                free(path);
                if (unanswered(r, &resp)) {
                        upstream_response_done(&resp);
                        return 0;
                }
                if (resp.status >= 400 && resp.status != 404)
                        round_event(p, rd, resp.status, "Visier would not delete the unpublished draft (%ld)",
                                    resp.status);
                upstream_response_done(&resp);
                return 1;
        }
        /* Opened, but its ID never recorded: look for it by its name among the open drafts. */
        r = project_call(p, rd->tenant, "GET", "/v1/admin/projects", "/v1/admin/projects", "limit=1000", NULL, &resp,
                         err, sizeof(err));
        if (unanswered(r, &resp)) {
                upstream_response_done(&resp);
                return 0;
        }
        if (resp.status != 200) {
                upstream_response_done(&resp);
                return 0;
        }
        root = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
        upstream_response_done(&resp);
        if (!json_is_object(root)) {
                json_decref(root);
                return 0;
        }
        json_array_foreach(json_object_get(root, "openProjects"), i, e) {
                const char *id = json_string_value(json_object_get(e, "id"));
                const char *name = json_string_value(json_object_get(e, "name"));
                StoreRound named = *rd;

                if (!id || !name || !streq(name, rd->name))
                        continue;
                named.project_id = (char *) id;
                if (round_delete_draft(p, &named) == 0) {
                        json_decref(root);
                        return 0;
                }
        }
        json_decref(root);
        return 1;
}

/* The round's jobs go back to the queue, and the round ends. Nothing of theirs was published,
 * or (IN_DOUBT) that cannot be ruled out: creates are then looked up before they are sent
 * again, and deletes that find nothing count as done. */
static int round_discard(Publisher *p, const StoreRound *rd, bool in_doubt, const char *why) {
        Batch **jobs = NULL;
        size_t n = 0;

        if (store_round_batches(p->store, rd->id, &jobs, &n) < 0) {
                p->store_trouble = true;
                return -EIO;
        }
        for (size_t i = 0; i < n; i++)
                requeue_all(p, jobs[i], false, false, in_doubt, 0, 0, why);
        batches_free(jobs, n);
        if (p->store_trouble || round_close(p, rd) < 0)
                return -EIO;
        pthread_mutex_lock(&p->lock);
        p->stats.rounds_discarded++;
        pthread_mutex_unlock(&p->lock);
        if (n > 0)
                round_event(p, rd, 0, "discarded unpublished; its %zu jobs are sent again", n);
        else
                round_event(p, rd, 0, "discarded unpublished: nothing in it was left to publish");
        return 0;
}

/* A round Visier has not let visierd resolve for give_up_after since it opened: its jobs fail
 * — what became of them is unknown if it was committing — and the round ends, so the queue
 * moves again. True when given up. */
static bool round_give_up(Publisher *p, const StoreRound *rd) {
        int64_t age = wall_ms() - rd->created_at_ms;
        char msg[320], *body;
        Batch **jobs = NULL;
        size_t n = 0;
        json_t *st;

        if (p->active.give_up_after_ms <= 0 || age < p->active.give_up_after_ms)
                return false;
        snprintf(msg, sizeof(msg),
                 "gave up after %lld s: the %s step of its round (draft project %.64s) could not be resolved with "
                 "Visier; %s",
                 (long long) (age / 1000), store_round_state_to_string(rd->state),
                 rd->project_id ? rd->project_id : rd->name,
                 rd->state == STORE_ROUND_COMMITTING ? "it may or may not have been published"
                                                     : "it was not published");
        if (store_round_batches(p->store, rd->id, &jobs, &n) < 0) {
                p->store_trouble = true;
                return false;
        }
        st = json_pack("{s:s, s:s, s:s, s:b}", "code", "BadGateway", "message", msg, "localizedMessage", msg,
                       "userError", 0);
        body = st ? json_dumps(st, JSON_COMPACT) : NULL;
        json_decref(st);
        for (size_t i = 0; i < n; i++)
                fail_alone(p, jobs[i], 502, body ? body : "", msg);
        free(body);
        batches_free(jobs, n);
        if (p->store_trouble || round_close(p, rd) < 0)
                return false;
        round_event(p, rd, 0, "%s", msg);
        return true;
}

/* Delete the draft and discard the round: 1 done, 0 to try again later. */
static int round_drop(Publisher *p, const StoreRound *rd, bool in_doubt, const char *why) {
        if (round_delete_draft(p, rd) == 0)
                return 0;
        return round_discard(p, rd, in_doubt, why) >= 0;
}

/* The draft was published: the stashed answers become the jobs' outcomes. */
static int round_finish(Publisher *p, const StoreRound *rd) {
        Batch **jobs = NULL;
        size_t n = 0;
        int r;

        if (store_round_batches(p->store, rd->id, &jobs, &n) < 0) {
                p->store_trouble = true;
                return -EIO;
        }
        r = record_begin(p);
        if (r >= 0) {
                store_round_apply(p->store, rd->id);
                for (size_t i = 0; i < n; i++)
                        finish_jobs(p, jobs[i], 200);
                store_round_close(p->store, rd->id);
                r = record_end(p);
        }
        batches_free(jobs, n);
        if (r < 0)
                return r;
        pthread_mutex_lock(&p->lock);
        p->stats.rounds_published++;
        pthread_mutex_unlock(&p->lock);
        round_event(p, rd, 200, "published: one production version for %zu jobs", n);
        return 0;
}

/* Visier refused to publish the draft (STATUS, BODY): the draft is deleted; a round of several
 * jobs is split (each goes again in a round of its own), a lone job fails with that answer. */
static void round_refused(Publisher *p, const StoreRound *rd, long status, const char *body) {
        json_t *st = json_loads(body ? body : "", 0, NULL);
        const char *why = json_string_value(json_object_get(st, "localizedMessage"));
        char msg[UPSTREAM_ERROR_MAX + 160];
        Batch **jobs = NULL;
        size_t n = 0;

        snprintf(msg, sizeof(msg), "Visier refused to publish draft project %s with %ld: %.*s", rd->project_id,
                 status, UPSTREAM_ERROR_MAX, why ? why : "(no message)");
        json_decref(st);
        if (round_delete_draft(p, rd) == 0)
                round_event(p, rd, status, "the refused draft could not be deleted; visierd never publishes it");
        if (store_round_batches(p->store, rd->id, &jobs, &n) < 0) {
                p->store_trouble = true;
                return;
        }
        for (size_t i = 0; i < n; i++)
                if (n > 1)
                        requeue_all(p, jobs[i], false, true, false, 0, status, msg);
                else
                        fail_alone(p, jobs[i], status, body ? body : "", msg);
        if (n > 1) {
                pthread_mutex_lock(&p->lock);
                p->stats.splits++;
                pthread_mutex_unlock(&p->lock);
        }
        batches_free(jobs, n);
        if (!p->store_trouble)
                (void) round_close(p, rd);
        round_event(p, rd, status, "%s; %s", msg, n > 1 ? "each job goes again alone" : "its job failed");
}

/* Send commitAndPublish through the lane: 1 when the round is over (published or refused), 0
 * when it stays to be resolved (not sent, or its outcome unknown). RESENT: an earlier commit
 * of the draft may still land, so a 404 (the draft gone) is no refusal: asked again later. */
static int round_send_commit(Publisher *p, const StoreRound *rd, bool resent) {
        char err[UPSTREAM_ERROR_MAX] = "", *path = project_path(rd->project_id);
        UpstreamResponse resp = {};
        int64_t started;
        int r, done = 0;

        if (!path)
                return 0;
        if (lane_open(p, &started) < 0) {
                free(path);
                return 0;
        }
        call_begin(p, "publish", "POST", "/v1/admin/projects/*", NULL, 0);
        r = project_call(p, rd->tenant, "POST", "/v1/admin/projects/*", path, NULL, "{\"operation\":\"commitAndPublish\"}",
                         &resp, err, sizeof(err));
        call_end(p);
        free(path);
        /* Whatever happened, production may have changed in every way the round's calls could. */
        if (p->cache)
                cache_invalidate(p->cache, NULL, CACHE_CLASSES_ALL);
        if (never_sent(r, &resp)) {
                lane_after_call(p, started, true);
                round_event(p, rd, r < 0 ? 0 : resp.status, "commitAndPublish not sent: %s",
                            r < 0 ? err : "Visier's rate limit");
        } else if (r < 0 || resp.status >= 500) {
                lane_after_call(p, started, r >= 0 && resp.status != 502 && resp.status != 504);
                round_event(p, rd, r < 0 ? 0 : resp.status,
                            "commitAndPublish ended without an answer (%s); Visier is asked whether it was published",
                            r < 0 ? err : "a server error");
        } else {
                lane_after_call(p, started, true);
                if (resp.status < 300)
                        done = round_finish(p, rd) >= 0;
                else if (resent && resp.status == 404)
                        round_event(p, rd, resp.status, "commitAndPublish sent again found the draft gone; Visier is "
                                                        "asked again whether it was published");
                else {
                        round_refused(p, rd, resp.status, resp.body);
                        done = 1;
                }
        }
        upstream_response_done(&resp);
        return done;
}

/* Did Visier publish the round's draft? 1 yes, 0 no (not among its latest production
 * versions), -1 cannot tell now. */
static int round_published(Publisher *p, const StoreRound *rd) {
        for (int start = 0; start < PUBLISHER_VERSIONS_LOOKBACK; start += 400) {
                char err[UPSTREAM_ERROR_MAX] = "", query[64];
                UpstreamResponse resp = {};
                json_t *root, *list, *e;
                size_t i, n;
                int r;

                snprintf(query, sizeof(query), "limit=400&start=%d", start);
                r = project_call(p, rd->tenant, "GET", "/v1/admin/production-versions", "/v1/admin/production-versions",
                                 query, NULL, &resp, err, sizeof(err));
                if (r < 0 || resp.status != 200) {
                        upstream_response_done(&resp);
                        return -1;
                }
                root = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
                upstream_response_done(&resp);
                /* An object without the list is an empty one (as protobuf-shaped answers omit
                 * empty lists); anything else cannot be read. */
                list = json_object_get(root, "publishedVersions");
                if (!json_is_object(root) || (list && !json_is_array(list))) {
                        json_decref(root);
                        return -1;
                }
                json_array_foreach(list, i, e) {
                        const char *id = json_string_value(json_object_get(e, "id"));

                        if (id && strcaseeq(id, rd->project_id)) {
                                json_decref(root);
                                return 1;
                        }
                }
                n = json_array_size(list);
                json_decref(root);
                if (n < 400)
                        return 0;
        }
        return 0;
}

/* Is the round's draft still open? 1 yes, 0 gone, -1 cannot tell now. */
static int round_draft_open(Publisher *p, const StoreRound *rd) {
        char err[UPSTREAM_ERROR_MAX] = "", *path = project_path(rd->project_id);
        UpstreamResponse resp = {};
        int r;

        if (!path)
                return -1;
        r = project_call(p, rd->tenant, "GET", "/v1/admin/projects/*", path, NULL, NULL, &resp, err, sizeof(err));
        free(path);
        r = r < 0 ? -1 : resp.status == 200 ? 1 : resp.status == 404 ? 0 : -1;
        upstream_response_done(&resp);
        return r;
}

/* Resolve every round left in the store (see above); those that cannot be resolved now are
 * tried again with backoff, and nothing new is claimed meanwhile. */
static void resolve_rounds(Publisher *p) {
        StoreRound *list = NULL;
        size_t n = 0;
        bool left = false;

        if (store_rounds(p->store, &list, &n) < 0) {
                p->store_trouble = true;
                emit(p, &(PublisherEvent) { .kind = PUBLISHER_STORE_ERROR, .message = "cannot list draft-project rounds" });
                return;
        }
        for (size_t i = 0; i < n && !p->store_trouble; i++) {
                StoreRound *rd = &list[i];
                int done = 0, k;

                if (rd->state != STORE_ROUND_COMMITTING || !rd->project_id) {
                        done = round_drop(p, rd, false,
                                          "its draft project was discarded unpublished; sent again in a new one");
                } else if ((k = round_published(p, rd)) > 0) {
                        done = round_finish(p, rd) >= 0;
                } else {
                        /* Not among the versions Visier lists (or they cannot be read): an open
                         * draft was not published; a gone one may have been, beyond them. */
                        int open = round_draft_open(p, rd);

                        if (open > 0)
                                done = round_send_commit(p, rd, true);
                        else if (open == 0 && k == 0)
                                done = round_drop(p, rd, true,
                                                  "its draft project is gone and not among the production versions; "
                                                  "sent again, creates looked up first");
                }
                if (!done && !p->store_trouble && round_give_up(p, rd))
                        done = 1;
                if (!done)
                        round_event(p, rd, 0, "%s step cannot be resolved with Visier now; nothing else is sent until "
                                              "it is (tried again with backoff)",
                                    store_round_state_to_string(rd->state));
                left |= !done;
        }
        store_rounds_free(list, n);
        p->rounds_pending = left || p->store_trouble;
        if (left) {
                p->rounds_backoff = p->rounds_backoff ? p->rounds_backoff * 2 : PUBLISHER_BACKOFF_INITIAL;
                if (p->rounds_backoff > PUBLISHER_TROUBLE_BACKOFF_MAX)
                        p->rounds_backoff = PUBLISHER_TROUBLE_BACKOFF_MAX;
                p->rounds_retry_at = clock_now() + p->rounds_backoff;
        } else
                p->rounds_backoff = 0;
}

/* Open a round for FIRST (claimed, running): record it, then create its draft. 0, or <0 when
 * FIRST's jobs were dealt with (requeued) or are left to the store's recovery. */
static int round_open(Publisher *p, Batch *first, StoreRound *rd) {
        char err[UPSTREAM_ERROR_MAX] = "", msg[UPSTREAM_ERROR_MAX + 96], name[64], *text;
        UpstreamResponse resp = {};
        uint64_t nonce = 0;
        const char *id;
        json_t *root;
        int r;

        if (getrandom(&nonce, sizeof(nonce), GRND_NONBLOCK) != sizeof(nonce))
                nonce = clock_now() ^ (uint64_t) wall_ms();
        snprintf(name, sizeof(name), "visierd round %016" PRIx64, nonce);
        *rd = (StoreRound) { .state = STORE_ROUND_OPENING, .name = strdup(name), .tenant = strdup(first->tenant) };
        root = json_pack("{s:s, s:s}", "name", name, "description",
                         "Queued permission changes, published together by visierd.");
        text = root ? json_dumps(root, JSON_COMPACT) : NULL;
        json_decref(root);
        if (!rd->name || !rd->tenant || !text) {
                free(text);
                requeue_all(p, first, false, false, false, PUBLISHER_BACKOFF_INITIAL, 0, "out of memory");
                return -ENOMEM;
        }
        if (record_begin(p) < 0) {
                free(text);
                return -EIO; /* the jobs stay running: recovered as orphans */
        }
        if (store_round_open(p->store, name, first->tenant, first, &rd->id) < 0) {
                (void) store_end(p->store, false);
                p->store_trouble = true;
                free(text);
                return -EIO; /* the jobs stay running: recovered as orphans */
        }
        if (record_end(p) < 0) {
                free(text);
                return -EIO;
        }

        r = project_call(p, rd->tenant, "POST", "/v1/admin/projects", "/v1/admin/projects", NULL, text, &resp, err,
                         sizeof(err));
        free(text);
        root = r >= 0 && resp.status / 100 == 2 ? json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL) : NULL;
        id = json_string_value(json_object_get(root, "id"));
        if (never_sent(r, &resp)) {
                requeue_all(p, first, false, false, false, PUBLISHER_BACKOFF_INITIAL, r < 0 ? 0 : resp.status,
                            r < 0 ? err : "Visier's rate limit");
                (void) round_close(p, rd);
                r = -EAGAIN;
        } else if (r < 0 || resp.status >= 500 || (resp.status / 100 == 2 && !id)) {
                /* The draft may exist, or come to exist: after publish_settle it is looked for
                 * by its name and deleted, before anything else is sent. */
                snprintf(msg, sizeof(msg), "could not create a draft project: %s",
                         r < 0 ? err : resp.status >= 500 ? "Visier answered a server error" : "Visier's answer had no id");
                requeue_all(p, first, true, false, false, 0, r < 0 ? 0 : resp.status, msg);
                p->rounds_pending = true;
                p->rounds_retry_at = clock_now() + p->active.publish_settle;
                r = -EAGAIN;
        } else if (resp.status / 100 != 2) {
                json_t *st = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
                const char *why = json_string_value(json_object_get(st, "localizedMessage"));

                snprintf(msg, sizeof(msg), "Visier refused to create a draft project with %ld: %.*s", resp.status,
                         UPSTREAM_ERROR_MAX, why ? why : "(no message)");
                json_decref(st);
                requeue_all(p, first, true, false, false, 0, resp.status, msg);
                (void) round_close(p, rd);
                r = -EAGAIN;
        } else if (!(rd->project_id = strdup(id))) {
                p->rounds_pending = true; /* deleted by its name */
                r = -ENOMEM;
        } else if (record_begin(p) < 0) {
                p->rounds_pending = true;
                r = -EIO;
        } else if (store_round_set(p->store, rd->id, STORE_ROUND_FILLING, id) < 0) {
                (void) store_end(p->store, false);
                p->store_trouble = p->rounds_pending = true;
                r = -EIO;
        } else {
                r = record_end(p);
                if (r < 0)
                        p->rounds_pending = true;
                else
                        rd->state = STORE_ROUND_FILLING;
        }
        json_decref(root);
        upstream_response_done(&resp);
        return r;
}

/* Everything the round's jobs did in the draft is stashed: commit it. */
static void round_commit(Publisher *p, StoreRound *rd) {
        Batch **jobs = NULL;
        size_t n = 0;

        if (store_round_batches(p->store, rd->id, &jobs, &n) < 0) {
                p->store_trouble = true;
                p->rounds_pending = true;
                return;
        }
        batches_free(jobs, n);
        if (n == 0) { /* every job left the round (failed, or back in the queue): nothing to publish */
                if (!round_drop(p, rd, false, "its draft project was discarded unpublished"))
                        p->rounds_pending = true;
                return;
        }
        if (record_begin(p) < 0) {
                p->rounds_pending = true;
                return;
        }
        if (store_round_set(p->store, rd->id, STORE_ROUND_COMMITTING, NULL) < 0) {
                (void) store_end(p->store, false);
                p->store_trouble = p->rounds_pending = true;
                return;
        }
        if (record_end(p) < 0) {
                p->rounds_pending = true;
                return;
        }
        rd->state = STORE_ROUND_COMMITTING;
        if (!round_send_commit(p, rd, false))
                p->rounds_pending = true;
}

/*
 * Publish FIRST (claimed, eligible) and the jobs of its scope claimed after it through one
 * draft project: at most round_max_calls bulk calls into it, then one commitAndPublish. A call
 * whose outcome is unknown leaves the draft's contents unknown: the round is left to
 * resolve_rounds(), which deletes the draft and queues its jobs again.
 */
static void publish_round(Publisher *p, Batch *first) {
        _cleanup_free_ char *scope = NULL;
        StoreRound rd = {};
        Batch *b = first;
        size_t calls = 0;

        if (first->scope && !(scope = strdup(first->scope))) {
                requeue_all(p, first, false, false, false, PUBLISHER_BACKOFF_INITIAL, 0, "out of memory");
                return;
        }
        if (round_open(p, first, &rd) < 0) {
                round_done(&rd);
                return;
        }
        round_event(p, &rd, 200, "opened");
        for (;;) {
                int64_t next_due;
                bool stopping;
                Sent sent;

                free(b->project);
                b->project = strdup(rd.project_id); /* the batch's calls go into the draft */
                if (!b->project) {
                        requeue_all(p, b, false, false, false, PUBLISHER_BACKOFF_INITIAL, 0, "out of memory");
                        sent = SENT_SETTLED;
                } else
                        sent = publish_batch(p, b, rd.id);
                if (b != first)
                        batch_free(b);
                b = NULL;
                if (sent == SENT_IN_DOUBT || p->store_trouble) {
                        p->rounds_pending = true;
                        round_done(&rd);
                        return;
                }
                calls += sent == SENT_ANSWERED;
                pthread_mutex_lock(&p->lock);
                stopping = p->stopping;
                pthread_mutex_unlock(&p->lock);
                /* A stop publishes what the draft holds (the calls are done; only the commit is left). */
                if (sent == SENT_NOT_SENT || !scope || calls >= p->active.round_max_calls || stopping)
                        break;
                if (store_batch_claim(p->store, wall_ms(), p->active.batch_max, scope, rd.id, &b, &next_due) < 0) {
                        p->store_trouble = true;
                        p->rounds_pending = true;
                        emit(p, &(PublisherEvent) { .kind = PUBLISHER_STORE_ERROR, .message = "cannot claim queued jobs" });
                        round_done(&rd);
                        return;
                }
                if (!b)
                        break;
        }
        round_commit(p, &rd);
        round_done(&rd);
}

static void recover_orphans(Publisher *p) {
        Batch **orphans = NULL;
        size_t n = 0;

        if (store_orphans(p->store, &orphans, &n) < 0) {
                p->store_trouble = true;
                emit(p, &(PublisherEvent) { .kind = PUBLISHER_STORE_ERROR, .message = "cannot list orphaned jobs" });
                return;
        }
        for (size_t i = 0; i < n; i++) {
                Batch *b = orphans[i];

                emit(p, &(PublisherEvent) { .kind = PUBLISHER_ORPHAN, .job_id = b->jobs[0].id,
                                             .op = job_op_to_string(b->op), .n_items = b->n_items });
                /* Its call may have landed: it is in doubt from now on (kept in the store), so
                 * creates are looked up before they are sent again and deletes that find
                 * nothing count as done. */
                b->jobs[0].in_doubt = true;
                for (size_t k = 0; k < b->n_items; k++)
                        b->items[k].in_doubt = true;
                if (b->op == JOB_OP_CREATE && reconcile_creates(p, b) < 0) {
                        /* Visier unreachable: the next attempt reconciles first. */
                }
                requeue_all(p, b, false, false, true, 0, 0, "recovered after a restart");
                batch_free(b);
        }
        free(orphans);
}

/* Wake every publisher_wait_job() caller: jobs may have reached a final state. Lock held. */
static void jobs_changed_locked(Publisher *p) {
        emit(p, &(PublisherEvent) { .kind = PUBLISHER_JOBS_CHANGED });
        p->done_seq++;
        pthread_cond_broadcast(&p->done);
}

/*
 * Wait (lock held) until the lane is free: no write call, and no lookup of what one created,
 * while a call whose answer was lost may still be publishing at Visier. False if stopping.
 */
static bool lane_wait_locked(Publisher *p) {
        bool told = false;

        for (;;) {
                int64_t now = wall_ms(), left = p->lane_free_at_ms - now;

                if (p->stopping)
                        return false;
                if (left <= 0)
                        return true;
                if (!told) {
                        char m[160];

                        snprintf(m, sizeof(m),
                                 "waiting %lld ms before the next write: the last write call's answer was lost and "
                                 "Visier may still be publishing it",
                                 (long long) left);
                        pthread_mutex_unlock(&p->lock);
                        emit(p, &(PublisherEvent) { .kind = PUBLISHER_LANE_WAIT, .message = m });
                        pthread_mutex_lock(&p->lock);
                        told = true;
                        continue;
                }
                timed_wait(&p->wake, &p->lock, (usec_t) left * USEC_PER_MSEC);
        }
}

/* At start-up: a write call that a dead process left open may still run at Visier until its
 * deadline, and go on publishing for publish_settle after it. */
static void lane_from_store(Publisher *p) {
        int64_t started = 0, deadline = 0, now = wall_ms(), latest;

        if (store_lane_get(p->store, &started, &deadline) < 0) {
                /* Cannot tell: assume a call was opened just now. */
                started = now;
                deadline = now + (int64_t) (p->active.request_timeout / USEC_PER_MSEC);
        }
        if (deadline <= 0)
                return;
        /* A deadline far ahead (a clock set back since) is capped at one request timeout. */
        latest = now + (int64_t) (p->active.request_timeout / USEC_PER_MSEC) + 1000;
        if (deadline > latest)
                deadline = latest;
        p->lane_free_at_ms = deadline + (int64_t) (p->active.publish_settle / USEC_PER_MSEC);
}

/*
 * Fleet mode: may this node publish now (fleet_lane_usable())? On a term new to the thread the
 * store's fence moves to it, and what was left running — by the previous holder, or by this
 * node under an earlier term — is recovered under it before anything is claimed: write jobs as
 * orphans, rounds by resolve_rounds(), export runs queued again. Without a usable term the
 * fence is cleared, so no recording of this node commits until it holds the lane again.
 */
typedef enum FleetGate {
        FLEET_GATE_CLOSED, /* this node may not publish now */
        FLEET_GATE_OPEN,   /* it may, under the term it has been publishing under */
        FLEET_GATE_OPENED, /* a new term: recovered now; the claim waits for the next pass */
} FleetGate;

static FleetGate fleet_gate(Publisher *p) {
        char m[96];
        int64_t term;

        if (!p->fleet)
                return FLEET_GATE_OPEN;
        if (!fleet_lane_usable(p->fleet, clock_now(), &term)) {
                if (p->fleet_term != 0) {
                        snprintf(m, sizeof(m), "stopped publishing under term %lld of the fleet's lane",
                                 (long long) p->fleet_term);
                        p->fleet_term = 0;
                        store_set_fence_term(p->store, 0);
                        emit(p, &(PublisherEvent) { .kind = PUBLISHER_FLEET_LANE, .message = m });
                }
                return FLEET_GATE_CLOSED;
        }
        if (term == p->fleet_term)
                return FLEET_GATE_OPEN;
        p->fleet_term = term;
        store_set_fence_term(p->store, term);
        snprintf(m, sizeof(m), "publishing under term %lld of the fleet's lane", (long long) term);
        emit(p, &(PublisherEvent) { .kind = PUBLISHER_FLEET_LANE, .message = m });
        p->store_trouble = false;
        p->rounds_pending = true;
        recover_orphans(p);
        if (store_export_requeue_orphans(p->store) < 0)
                p->store_trouble = true;
        /* Jobs that came in during the recovery wait through the loop's wait like any others
         * (a burst gathers for batch_delay), not claimed one by one right now. */
        return FLEET_GATE_OPENED;
}

/* Wait (lock held) for `span`, whatever wakes the thread meanwhile: only stopping cuts it short. */
static void wait_out_locked(Publisher *p, usec_t span) {
        usec_t until = clock_now() + span;

        for (usec_t t = clock_now(); t < until && !p->stopping; t = clock_now())
                timed_wait(&p->wake, &p->lock, until - t);
}

/* Say once per wait for the rate budget that nothing is claimed meanwhile; waits shorter than
 * the thread's poll are the budget's pacing, not worth a line each. */
static void budget_wait_told(Publisher *p, usec_t wait) {
        char m[160];

        if (p->budget_told || wait < PUBLISHER_BUDGET_POLL)
                return;
        p->budget_told = true;
        snprintf(m, sizeof(m), "the Visier rate budget has no call for %.3f s: no write is claimed or sent before then",
                 (double) wait / (double) USEC_PER_SEC);
        emit(p, &(PublisherEvent) { .kind = PUBLISHER_BUDGET_WAIT, .message = m });
}

static void *publisher_thread(void *arg) {
        Publisher *p = arg;
        usec_t last_prune = 0;

        pthread_mutex_lock(&p->lock);
        p->active = p->settings;
        pthread_mutex_unlock(&p->lock);
        /* Fleet mode: the lane's row says how long to wait (fleet_gate()), not this node's record. */
        if (!p->fleet)
                lane_from_store(p);

        pthread_mutex_lock(&p->lock);
        if (!p->fleet && lane_wait_locked(p)) {
                pthread_mutex_unlock(&p->lock);
                recover_orphans(p);
                pthread_mutex_lock(&p->lock);
        }
        jobs_changed_locked(p);
        while (!p->stopping) {
                Batch *b = NULL;
                int64_t next_due = INT64_MAX, now;
                usec_t budget_wait = 0;
                FleetGate gate;
                usec_t wait;
                int r;

                if (!lane_wait_locked(p))
                        break;
                p->active = p->settings;
                pthread_mutex_unlock(&p->lock);
                gate = fleet_gate(p);
                if (gate == FLEET_GATE_CLOSED) {
                        pthread_mutex_lock(&p->lock);
                        if (!p->stopping && !p->woken)
                                timed_wait(&p->wake, &p->lock, PUBLISHER_FLEET_POLL);
                        p->woken = false;
                        continue;
                }
                now = wall_ms();
                if (clock_now() - last_prune > PUBLISHER_PRUNE_INTERVAL) {
                        store_prune(p->store, now, p->active.keep_succeeded_ms, p->active.keep_failed_ms);
                        last_prune = clock_now();
                }
                r = 0;
                if (clock_now() >= p->trouble_retry_at) {
                        if (p->store_trouble) {
                                /* A store error may have left a job marked running with nobody
                                 * working on it; between calls, every running job is such an orphan
                                 * (or in a round left unfinished). */
                                p->store_trouble = false;
                                p->rounds_pending = true;
                                recover_orphans(p);
                        }
                        if (!p->store_trouble && p->rounds_pending && clock_now() >= p->rounds_retry_at)
                                resolve_rounds(p);
                        /* Nothing is claimed while the rate budget has no call: claimed now, the
                         * jobs would wait for it in their call, and those queued meanwhile would
                         * miss it; claimed when it comes free, they all share that call. */
                        if (!p->store_trouble && !p->rounds_pending && gate == FLEET_GATE_OPEN) {
                                budget_wait = upstream_budget_wait(p->upstream);
                                if (budget_wait > 0)
                                        budget_wait_told(p, budget_wait);
                                else {
                                        p->budget_told = false;
                                        r = store_batch_claim(p->store, now, p->active.batch_max, NULL, 0, &b,
                                                              &next_due);
                                }
                                if (r < 0) {
                                        p->store_trouble = true;
                                        emit(p, &(PublisherEvent) { .kind = PUBLISHER_STORE_ERROR,
                                                                     .message = "cannot claim queued jobs" });
                                }
                        }
                        if (b) {
                                if (round_eligible(p, b))
                                        publish_round(p, b);
                                else
                                        (void) publish_batch(p, b, 0);
                                batch_free(b);
                        }
                        /* Store errors back off like any other failure: 1 s doubling to a minute. */
                        if (p->store_trouble) {
                                p->trouble_backoff = p->trouble_backoff ? p->trouble_backoff * 2 : USEC_PER_SEC;
                                if (p->trouble_backoff > PUBLISHER_TROUBLE_BACKOFF_MAX)
                                        p->trouble_backoff = PUBLISHER_TROUBLE_BACKOFF_MAX;
                                p->trouble_retry_at = clock_now() + p->trouble_backoff;
                        } else
                                p->trouble_backoff = 0;
                }
                pthread_mutex_lock(&p->lock);
                jobs_changed_locked(p);
                if (p->stopping)
                        break;
                if (b && !p->store_trouble)
                        continue;
                if (budget_wait > 0) {
                        /* Jobs queued meanwhile do not cut it short: there is no call for them. */
                        wait_out_locked(p, budget_wait < PUBLISHER_BUDGET_POLL ? budget_wait : PUBLISHER_BUDGET_POLL);
                        p->woken = false;
                        continue;
                }
                wait = next_due == INT64_MAX ? USEC_PER_SEC
                                             : (usec_t) (next_due > now ? next_due - now : 1) * USEC_PER_MSEC;
                if (wait > USEC_PER_SEC)
                        wait = USEC_PER_SEC;
                if (p->store_trouble || p->trouble_backoff) {
                        usec_t t = clock_now();
                        wait = p->trouble_retry_at > t ? p->trouble_retry_at - t : 1;
                } else if (p->rounds_pending) {
                        usec_t t = clock_now();
                        wait = p->rounds_retry_at > t ? p->rounds_retry_at - t : 1;
                }
                if (!p->woken)
                        timed_wait(&p->wake, &p->lock, wait);
                if (p->woken && !p->stopping && p->settings.batch_delay > 0) {
                        /* Let the jobs of a burst gather so they share one call: new jobs arriving
                         * meanwhile do not cut the delay short. */
                        wait_out_locked(p, p->settings.batch_delay);
                }
                p->woken = false;
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int publisher_new(Store *store, Upstream *upstream, const PublisherSettings *s, publisher_event_fn event,
                  void *userdata, Publisher **ret) {
        pthread_condattr_t attr;
        Publisher *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        p->store = store;
        p->upstream = upstream;
        p->settings = p->active = *s;
        p->rounds_pending = true; /* the store may hold rounds an earlier process left */
        p->event = event;
        p->userdata = userdata;
        pthread_mutex_init(&p->lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&p->wake, &attr);
        pthread_cond_init(&p->done, &attr);
        pthread_condattr_destroy(&attr);
        *ret = p;
        return 0;
}

int publisher_start(Publisher *p) {
        int r = pthread_create(&p->thread, NULL, publisher_thread, p);

        if (r != 0)
                return -r;
        p->started = true;
        return 0;
}

void publisher_stop(Publisher *p) {
        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->wake);
        pthread_cond_broadcast(&p->done);
        pthread_mutex_unlock(&p->lock);
}

Publisher *publisher_free(Publisher *p) {
        if (!p)
                return NULL;
        publisher_stop(p);
        if (p->started)
                pthread_join(p->thread, NULL);
        pthread_cond_destroy(&p->wake);
        pthread_cond_destroy(&p->done);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

void publisher_set_cache(Publisher *p, Cache *cache) {
        p->cache = cache;
}

void publisher_set_fleet(Publisher *p, Fleet *fleet) {
        assert(p && !p->started);
        p->fleet = fleet;
}

void publisher_set_settings(Publisher *p, const PublisherSettings *s) {
        pthread_mutex_lock(&p->lock);
        p->settings = *s;
        pthread_mutex_unlock(&p->lock);
}

void publisher_release_waiters(Publisher *p) {
        pthread_mutex_lock(&p->lock);
        p->released = true;
        pthread_cond_broadcast(&p->done);
        pthread_mutex_unlock(&p->lock);
}

bool publisher_call_in_flight(Publisher *p) {
        return atomic_load(&p->in_flight);
}

void publisher_wake(Publisher *p) {
        pthread_mutex_lock(&p->lock);
        p->woken = true;
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
}

int publisher_wait_job(Publisher *p, int64_t job_id, usec_t deadline) {
        for (;;) {
                uint64_t seq;
                JobState s;
                usec_t now;

                /* Read the sequence before the state: a job finished between the two bumps it,
                 * so the wait below returns at once instead of sleeping through the news. */
                pthread_mutex_lock(&p->lock);
                seq = p->done_seq;
                pthread_mutex_unlock(&p->lock);
                s = store_job_state(p->store, job_id);
                if (s == _JOB_STATE_INVALID)
                        return -ENOENT;
                if (job_state_is_final(s))
                        return 0;
                now = clock_now();
                if (now >= deadline)
                        return -ETIMEDOUT;
                pthread_mutex_lock(&p->lock);
                if (p->stopping || p->released) {
                        pthread_mutex_unlock(&p->lock);
                        return -ETIMEDOUT;
                }
                if (p->done_seq == seq)
                        timed_wait(&p->done, &p->lock, deadline - now < USEC_PER_SEC ? deadline - now : USEC_PER_SEC);
                pthread_mutex_unlock(&p->lock);
        }
}

void publisher_stats(Publisher *p, PublisherStats *ret) {
        pthread_mutex_lock(&p->lock);
        *ret = p->stats;
        pthread_mutex_unlock(&p->lock);
}
