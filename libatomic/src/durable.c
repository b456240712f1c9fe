/*
 * durable.c -- durable mode's frame: what it needs from NATS and SQLite,
 * how it starts and stops, and the local commit of a call.
 *
 * Durable mode (DESIGN 3.7; docs/durable.md tells the whole story) keeps
 * what memory mode holds in a process where a crash cannot take it:
 *
 *   saga_log.c     each call's pending compensations, in JetStream KV
 *   lease.c        which instances are alive, in a KV bucket with a TTL
 *   recovery.c     any instance ends the sagas of a dead one
 *   outbox.c       events committed with the business change, published
 *                  to the EVENTS stream with acks; the call's decision
 *   idempotency.c  a repeated idempotency key replays the first outcome
 *   event_consumer.c  durable JetStream consumers for event handlers
 *
 * This file starts them in an order that never leaves a gap: JetStream is
 * checked first (a server without it is refused with a message naming the
 * fix), then the KV buckets, the EVENTS stream and the tables in the
 * store exist, then this instance takes its lease, and only then do the
 * lease thread and (in housekeeping.c) the recovery rounds start. Stop
 * runs backwards: the lease is given up last, after the workers finished
 * their calls, so no saga of ours is ever claimed while we still run it.
 *
 * The local commit. A saga's outcome is decided once, in the service's
 * own SQLite store, by a row in natomic_decision: "committed" is written
 * by natomic_durable_commit() inside the handler's transaction, together
 * with the business change and the outbox rows; "aborted" is written by
 * recovery before it compensates. The primary key on call_id lets only
 * one of them in. That is what makes a slow owner and an eager recoverer
 * safe together: whichever comes second learns it lost and backs off.
 */
#include "natomic_internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "durable_internal.h"

bool natomic__durable(const natomic_service_t *svc)
{
    return svc != NULL && svc->durable != NULL;
}

/* ---- calls in flight that own a saga record -------------------------------- */

void natomic__inflight_add(natomic_service_t *svc, const char *call_id)
{
    natomic_durable_t *d = svc->durable;
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    if (d->n_inflight == d->cap_inflight) {
        size_t cap = d->cap_inflight ? d->cap_inflight * 2 : 16;
        char(*grown)[NATOMIC_ID_LEN + 1] = realloc(d->inflight, cap * sizeof *grown);
        if (grown != NULL) {
            d->inflight = grown;
            d->cap_inflight = cap;
        }
    }
    /* Without room the call is simply not protected from its own recovery
       thread, whose claim then fails on the record's revision. */
    if (d->n_inflight < d->cap_inflight)
        natomic__copy(d->inflight[d->n_inflight++], NATOMIC_ID_LEN + 1, call_id);
    pthread_mutex_unlock(&d->mu);
}

void natomic__inflight_remove(natomic_service_t *svc, const char *call_id)
{
    natomic_durable_t *d = svc->durable;
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->n_inflight; i++) {
        if (strcmp(d->inflight[i], call_id) == 0) {
            memcpy(d->inflight[i], d->inflight[d->n_inflight - 1], sizeof d->inflight[i]);
            d->n_inflight--;
            break;
        }
    }
    pthread_mutex_unlock(&d->mu);
}

bool natomic__inflight_has(natomic_service_t *svc, const char *call_id)
{
    natomic_durable_t *d = svc->durable;
    bool found = false;
    if (d == NULL)
        return false;
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->n_inflight && !found; i++)
        found = strcmp(d->inflight[i], call_id) == 0;
    pthread_mutex_unlock(&d->mu);
    return found;
}

/* ---- JetStream resources --------------------------------------------------- */

static bool needs_saga_log(const natomic_service_t *svc)
{
    for (size_t i = 0; i < svc->n_methods; i++)
        if (svc->methods[i].flags & NATOMIC_ROLLBACK_ONCE_FAILED)
            return true;
    return false;
}

static bool needs_events(const natomic_service_t *svc)
{
    for (size_t i = 0; i < svc->n_methods; i++)
        if (svc->methods[i].flags & NATOMIC_DISPATCH_AFTER_COMMIT)
            return true;
    return svc->n_event_subs > 0;
}

/* Creates a stream, or accepts the one of that name that exists. */
static natomic_status_t ensure_stream(natomic_service_t *svc, jsCtx *js, jsStreamConfig *cfg)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, js, cfg, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s == NATS_OK)
        return NATOMIC_OK;
    if (jerr == JSStreamNameExistErr) {
        /* Another instance made it, perhaps an older build: use it as it is. */
        return NATOMIC_OK;
    }
    natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot create the JetStream stream %s: %s (error %d)", cfg->Name,
                 nats_GetLastError(NULL), (int)jerr);
    return NATOMIC_ENATS;
}

/*
 * The saga bucket is a KV bucket made by hand: the stream a KV bucket
 * would get, except that messages may be deleted. A finished saga's
 * record is deleted by its sequence (natomic__saga_delete), which leaves
 * no delete marker behind for the scans to wade through, and fails when
 * the record was replaced meanwhile -- a delete by compare-and-set.
 */
/*
 * Replicas of the saga log, the leases and the EVENTS stream: 1 on a single
 * server; on a cluster NATOMIC_JS_REPLICAS=3 keeps each on three nodes, so
 * any one node may die without losing a record (docs/durable.md). An
 * existing stream keeps the replicas it was made with.
 */
static int js_replicas(void)
{
    const char *env = getenv("NATOMIC_JS_REPLICAS");
    if (env == NULL || *env == '\0')
        return 1;
    char *end = NULL;
    long n = strtol(env, &end, 10);
    if (end == env || *end != '\0' || n < 1 || n > 5) {
        natomic__log(NATOMIC_LOG_WARN, NULL, "NATOMIC_JS_REPLICAS=%.20s is not 1 to 5: using 1", env);
        return 1;
    }
    return (int)n;
}

static natomic_status_t open_saga_bucket(natomic_service_t *svc)
{
    natomic_durable_t *d = svc->durable;
    snprintf(d->saga_bucket, sizeof d->saga_bucket, "natomic_saga_%s", svc->name);
    snprintf(d->saga_stream, sizeof d->saga_stream, "KV_%s", d->saga_bucket);
    char subjects[160];
    snprintf(subjects, sizeof subjects, "$KV.%s.>", d->saga_bucket);
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = d->saga_stream;
    cfg.Description = "natomic saga log: pending compensations per call (docs/durable.md)";
    cfg.Subjects = (const char *[1]){subjects};
    cfg.SubjectsLen = 1;
    cfg.MaxMsgsPerSubject = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = js_replicas();
    cfg.AllowRollup = true;
    cfg.AllowDirect = true;
    cfg.Discard = js_DiscardNew;
    natomic_status_t st = ensure_stream(svc, d->js, &cfg);
    if (st == NATOMIC_OK && js_KeyValue(&d->saga_kv, d->js, d->saga_bucket) != NATS_OK) {
        natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot open the KV bucket %s: %s", d->saga_bucket,
                     nats_GetLastError(NULL));
        st = NATOMIC_ENATS;
    }
    return st;
}

static natomic_status_t open_lease_bucket(natomic_service_t *svc)
{
    natomic_durable_t *d = svc->durable;
    snprintf(d->lease_bucket, sizeof d->lease_bucket, "natomic_lease_%s", svc->name);
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = d->lease_bucket;
    cfg.Description = "natomic leases: an entry per live instance, expiring unless renewed";
    cfg.History = 1;
    cfg.TTL = (int64_t)svc->lease_ms * 1000000; /* nanoseconds */
    cfg.StorageType = js_FileStorage;
    cfg.Replicas = js_replicas();
    if (js_CreateKeyValue(&d->lease_kv, d->js, &cfg) == NATS_OK)
        return NATOMIC_OK;
    /* An existing bucket with another TTL (another build's lease time): use it. */
    if (js_KeyValue(&d->lease_kv, d->js, d->lease_bucket) == NATS_OK) {
        natomic__log(NATOMIC_LOG_WARN, svc->name, "the lease bucket %s exists with other settings: using it",
                     d->lease_bucket);
        return NATOMIC_OK;
    }
    natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot open the KV bucket %s: %s", d->lease_bucket,
                 nats_GetLastError(NULL));
    return NATOMIC_ENATS;
}

static natomic_status_t open_events_stream(natomic_service_t *svc)
{
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = NATOMIC_EVENTS_STREAM;
    cfg.Description = "natomic events: what services published after commit (events.<service>.<type>)";
    cfg.Subjects = (const char *[1]){NATOMIC_EVENTS_PREFIX ".>"};
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = js_replicas();
    cfg.MaxAge = (int64_t)7 * 24 * 3600 * 1000000000LL; /* a week of events to replay */
    cfg.Duplicates = (int64_t)120 * 1000000000LL;        /* Nats-Msg-Id window: 2 minutes */
    return ensure_stream(svc, svc->durable->js, &cfg);
}

/* Tells a server without JetStream apart, with the words that fix it. */
static natomic_status_t check_jetstream(natomic_service_t *svc)
{
    jsAccountInfo *ai = NULL;
    jsErrCode jerr = 0;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = 2000;
    natsStatus s = js_GetAccountInfo(&ai, svc->durable->js, &o, &jerr);
    jsAccountInfo_Destroy(ai);
    if (s == NATS_OK)
        return NATOMIC_OK;
    const char *why = nats_GetLastError(NULL);
    if (why == NULL || *why == '\0')
        why = natsStatus_GetText(s);
    natomic__log(NATOMIC_LOG_ERROR, svc->name,
                 "durable mode needs JetStream, and the NATS server has none (%s, error %d): start nats-server "
                 "with -js (and -sd DIR for its store), or run the service with --mode memory (NATOMIC_MODE=memory)",
                 why, (int)jerr);
    return NATOMIC_ENOJETSTREAM;
}

static natomic_status_t create_tables(natomic_service_t *svc)
{
    if (svc->store == NULL)
        return NATOMIC_OK;
    return natomic__outbox_init(svc->store);
}

natomic_status_t natomic__durable_start(natomic_service_t *svc)
{
    if (svc->mode != NATOMIC_MODE_DURABLE)
        return NATOMIC_OK;
    bool saga = needs_saga_log(svc), events = needs_events(svc);
    bool dispatch = false;
    for (size_t i = 0; i < svc->n_methods; i++)
        dispatch = dispatch || (svc->methods[i].flags & NATOMIC_DISPATCH_AFTER_COMMIT);
    if ((saga || dispatch) && svc->store == NULL) {
        natomic__log(NATOMIC_LOG_ERROR, svc->name,
                     "durable mode needs the service's SQLite store (natomic_service_config_t.store) for its "
                     "outbox and saga decisions: a method is flagged rollback or dispatch");
        return NATOMIC_EINVAL;
    }
    natomic_durable_t *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NATOMIC_ENOMEM;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cond, NULL);
    d->started_ns = natomic__wall_ns();
    svc->durable = d;
    /* Every JetStream call waits 2 s at most (nats.c's default is 5): a dead server
       must not hold a call, a recovery round or a stop for long. */
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 2000;
    natomic_status_t st = natsConnection_JetStream(&d->js, svc->nc, &jo) == NATS_OK ? NATOMIC_OK : NATOMIC_ENOMEM;
    if (st == NATOMIC_OK)
        st = check_jetstream(svc);
    if (st == NATOMIC_OK && saga)
        st = open_saga_bucket(svc);
    if (st == NATOMIC_OK)
        st = open_lease_bucket(svc);
    if (st == NATOMIC_OK && events)
        st = open_events_stream(svc);
    if (st == NATOMIC_OK)
        st = create_tables(svc);
    if (st == NATOMIC_OK) {
        st = natomic__lease_renew(svc);
        if (st != NATOMIC_OK)
            natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot take the lease of instance %s", svc->instance);
    }
    if (st == NATOMIC_OK) {
        if (pthread_create(&d->lease_thread, NULL, natomic__lease_thread, svc) != 0)
            st = NATOMIC_ENOMEM;
        else
            d->lease_started = true;
    }
    if (st != NATOMIC_OK) {
        natomic__durable_stop(svc);
        return st;
    }
    natomic__log(NATOMIC_LOG_INFO, svc->name,
                 "durable mode: instance %s (incarnation %.8s), lease %d ms, saga log %s, events %s", svc->instance,
                 svc->incarnation, svc->lease_ms, saga ? d->saga_bucket : "not needed",
                 events ? NATOMIC_EVENTS_STREAM : "not needed");
    return NATOMIC_OK;
}

void natomic__durable_stop(natomic_service_t *svc)
{
    natomic_durable_t *d = svc->durable;
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    if (d->lease_started)
        pthread_join(d->lease_thread, NULL);
    /* Last: whatever is left of ours may now be taken over at once. Cut off from NATS,
       there is nobody to tell: the lease expires by itself. */
    if (d->lease_kv != NULL && natsConnection_Status(svc->nc) == NATS_CONN_STATUS_CONNECTED)
        natomic__lease_release(svc);
    kvStore_Destroy(d->saga_kv);
    kvStore_Destroy(d->lease_kv);
    jsCtx_Destroy(d->js);
    free(d->inflight);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->mu);
    free(d);
    svc->durable = NULL;
}

bool natomic__durable_wait(natomic_service_t *svc, int64_t ms)
{
    natomic_durable_t *d = svc->durable;
    if (d == NULL)
        return false;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->mu);
    while (!d->stopping && pthread_cond_timedwait(&d->cond, &d->mu, &until) == 0) {
    }
    bool stopping = d->stopping;
    pthread_mutex_unlock(&d->mu);
    return !stopping;
}

/* ---- the local commit -------------------------------------------------------- */

NATOMIC_API natomic_status_t natomic_durable_commit(natomic_ctx_t *ctx, struct sqlite3 *db)
{
    if (ctx == NULL || db == NULL)
        return NATOMIC_EINVAL;
    if (!natomic__durable(ctx->svc))
        return NATOMIC_OK;
    if (db != ctx->svc->store)
        return NATOMIC_EINVAL;
    if (ctx->committed || ctx->recovering)
        return NATOMIC_ESTATE;
    natomic_status_t st = NATOMIC_OK;
    /* Only a call with a saga record can meet recovery: only it needs the decision. */
    if (ctx->saga.revision != 0)
        st = natomic__decision_commit(db, ctx->call_id);
    if (st == NATOMIC_OK)
        st = natomic__outbox_write(ctx, db);
    if (st == NATOMIC_OK && ctx->idem_key[0] != '\0')
        st = natomic__idem_commit(ctx, db);
    if (st == NATOMIC_OK) {
        ctx->committed = true;
    } else if (st == NATOMIC_ENOTOWNER) {
        ctx->saga.lost = true; /* recovery compensates: this process must not */
        natomic__log(NATOMIC_LOG_WARN, ctx->service_name,
                     "%s (tx %s): recovery decided to compensate this call before it could commit", ctx->method_name,
                     ctx->tx);
    }
    return st;
}

/* True when the call has anything the commit must write. */
static bool has_commit_rows(const natomic_ctx_t *ctx)
{
    if (ctx->saga.revision != 0 || ctx->idem_key[0] != '\0')
        return true;
    for (size_t i = 0; i < ctx->dispatches.count; i++)
        if (natomic__event_of(&ctx->dispatches.items[i]) != NULL)
            return true;
    return false;
}

natomic_status_t natomic__durable_autocommit(natomic_ctx_t *ctx)
{
    natomic_service_t *svc = ctx->svc;
    if (!natomic__durable(svc) || ctx->committed || svc->store == NULL || !has_commit_rows(ctx))
        return NATOMIC_OK;
    sqlite3 *db = svc->store;
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    natomic_status_t st = NATOMIC_OK;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        natomic__log(NATOMIC_LOG_ERROR, svc->name, "commit of %s (tx %s): BEGIN failed: %s", ctx->method_name,
                     ctx->tx, sqlite3_errmsg(db));
        st = NATOMIC_ETRANSIENT;
    } else {
        st = natomic_durable_commit(ctx, db);
        if (st == NATOMIC_OK && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            natomic__log(NATOMIC_LOG_ERROR, svc->name, "commit of %s (tx %s) failed: %s", ctx->method_name, ctx->tx,
                         sqlite3_errmsg(db));
            st = NATOMIC_ETRANSIENT;
        }
        if (st != NATOMIC_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            ctx->committed = false;
        }
    }
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return st;
}
