/*
 * recovery.c -- finishing the sagas of instances that died.
 *
 * A ROUND (at start, then every recovery interval, in the housekeeping
 * thread) reads every record of the saga log and sorts them:
 *
 *   owner is this process            in flight here: not ours to touch;
 *                                    not in flight: compensations it
 *                                    deferred (their target was
 *                                    unreachable): try them again;
 *   owner has this instance's name,  this instance's previous process,
 *   another incarnation              which died: claim it at once;
 *   owner's lease holds              alive elsewhere: leave it;
 *   owner's lease is gone            dead: claim it.
 *
 * A CLAIM rewrites the record with this instance as owner, state
 * COMPENSATING, naming the revision it read: of several instances that
 * try at once, exactly one write succeeds (KV compare-and-set); the
 * others see NATOMIC_ENOTOWNER and move on.
 *
 * ENDING A CLAIMED SAGA:
 *   1. decide "aborted" in the store (natomic_decision) -- unless the
 *      call's own commit got there first, in which case the call
 *      succeeded, its events are in the outbox, and the only thing left
 *      is to delete the record;
 *   2. run the pending compensations, last registered first, through
 *      the same retry, backoff and dead-letter path as a live call; after
 *      each one that ended, the record is rewritten without it (so a
 *      crash of the recoverer resumes where it stopped); one whose target
 *      is unreachable is deferred to a later round;
 *   3. when none is left: the call's idempotency key (if any) answers
 *      "Interrupted" from now on, the record is deleted, done.
 * The local compensations (named commands) end the business row: orders'
 * "orders.cancel" turns the pending order into a cancelled one.
 *
 * What recovery does is also told, as JSON, on natomic.recovery.<service>
 * ("claimed", "compensated", "deferred", "ended"), for operators and for
 * the lab's report.
 */
#include "natomic_internal.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "durable_internal.h"
#include "natomic_log.pb-c.h"

#define GATHER_TIMEOUT_MS 2000
#define MAX_ROUNDS_FACTOR 10 /* deferred compensations: attempts over all rounds, x policy.attempts */

void natomic__recovery_event(natomic_service_t *svc, const char *what, const char *call_id, const char *tx,
                             const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    natomic__log(NATOMIC_LOG_INFO, svc->name, "recovery: %s call %s (tx %s): %s", what, call_id, tx, detail);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "event", what, "service", svc->name, "instance",
                            svc->instance, "call_id", call_id, "tx", tx, "detail", detail, "time_ns",
                            (json_int_t)natomic__wall_ns());
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return;
    char subject[200];
    snprintf(subject, sizeof subject, NATOMIC_RECOVERY_PREFIX ".%s", svc->name);
    (void)natsConnection_PublishString(svc->nc, subject, text); /* the log line above stays */
    free(text);
}

/* ---- the hooks of a durable rollback list ---------------------------------- */

static bool unreachable(natomic_status_t st)
{
    return st == NATOMIC_ETIMEOUT || st == NATOMIC_ENORESPONDERS || st == NATOMIC_ENATS || st == NATOMIC_ETRANSIENT;
}

static natomic_cmd_end_t durable_exhausted(natomic_ctx_t *ctx, const char *list_kind, natomic_command_t *cmd,
                                           int attempts, natomic_status_t last, void *user)
{
    (void)user;
    if (natomic__is_comp(cmd) && ctx->saga.revision != 0 && !ctx->saga.lost) {
        natomic_comp_t *c = cmd->arg;
        c->attempts += (uint32_t)attempts;
        int policy = ctx->svc->retry.attempts > 0 ? ctx->svc->retry.attempts : 3;
        if (unreachable(last) && c->attempts < (uint32_t)(policy * MAX_ROUNDS_FACTOR)) {
            natomic__log(NATOMIC_LOG_WARN, ctx->service_name,
                         "%s command '%s' of tx %s deferred (%u attempts so far, last: %s): it stays in the saga "
                         "log for a later round",
                         list_kind, cmd->name, ctx->tx, c->attempts, natomic_status_name(last));
            return NATOMIC_CMD_DEFERRED;
        }
        attempts = (int)c->attempts;
    }
    natomic__dead_letter(ctx, list_kind, cmd, attempts, last, NULL);
    return NATOMIC_CMD_DEAD;
}

/* After each compensation: the log forgets what ended, and keeps what was deferred. */
static void durable_finished(natomic_ctx_t *ctx, const char *list_kind, natomic_command_t *cmd,
                             natomic_cmd_end_t end, void *user)
{
    (void)list_kind;
    (void)user;
    if (!natomic__is_comp(cmd) || ctx->saga.revision == 0)
        return;
    if (ctx->recovering)
        natomic__recovery_event(ctx->svc, end == NATOMIC_CMD_DEFERRED ? "deferred" : "compensated", ctx->call_id,
                                ctx->tx, "%s: %s", cmd->name,
                                end == NATOMIC_CMD_DONE ? "done" : end == NATOMIC_CMD_DEAD ? "dead-lettered"
                                                                                           : "deferred");
    if (ctx->saga.lost)
        return;
    size_t left = 0;
    for (size_t i = 0; i < ctx->rollbacks.count; i++)
        if (natomic__is_comp(&ctx->rollbacks.items[i]) && !ctx->rollbacks.items[i].ended)
            left++;
    if (end == NATOMIC_CMD_DEFERRED && left > 0 && !ctx->saga.compensating) {
        ctx->saga.compensating = true;
        natomic__saga_write(ctx); /* attempts counted */
        return;
    }
    if (left == 0 && end != NATOMIC_CMD_DEFERRED) {
        /* The idempotency key keeps the outcome; the record may go. Recovery settles the key first. */
        if (!ctx->recovering)
            natomic__saga_delete(ctx);
        return;
    }
    ctx->saga.compensating = true;
    if (natomic__saga_write(ctx) == NATOMIC_ENOTOWNER) {
        /* Recovery took over: it runs the rest; skip what is left here. */
        for (size_t i = 0; i < ctx->rollbacks.count; i++)
            if (natomic__is_comp(&ctx->rollbacks.items[i]))
                ctx->rollbacks.items[i].ended = true;
    }
}

const natomic_run_hooks_t natomic__durable_rollback_hooks = {
    .exhausted = durable_exhausted,
    .finished = durable_finished,
    .user = NULL,
};

/* Recovery stops between compensations when the service stops: the record keeps the rest. */
static bool recovery_stopping(natomic_ctx_t *ctx, void *user)
{
    (void)user;
    return atomic_load(&ctx->svc->stopping_housekeeping);
}

static const natomic_run_hooks_t recovery_hooks = {
    .exhausted = durable_exhausted,
    .finished = durable_finished,
    .stop = recovery_stopping,
    .user = NULL,
};

/* ---- reading the log --------------------------------------------------------- */

typedef struct found_record {
    Natomic__SagaRecord *rec;
    uint64_t revision;
} found_record_t;

/* Every record of the log now (values and revisions); count or -1. */
static int gather(natomic_service_t *svc, found_record_t **out)
{
    natomic_durable_t *d = svc->durable;
    kvWatchOptions o;
    kvWatchOptions_Init(&o);
    o.IgnoreDeletes = true;
    kvWatcher *w = NULL;
    if (kvStore_WatchAll(&w, d->saga_kv, &o) != NATS_OK) {
        return -1;
    }
    found_record_t *list = NULL;
    int n = 0, cap = 0;
    bool failed = false;
    for (;;) {
        kvEntry *e = NULL;
        natsStatus s = kvWatcher_Next(&e, w, GATHER_TIMEOUT_MS);
        if (s != NATS_OK) {
            failed = true;
            break;
        }
        if (e == NULL)
            break; /* the initial values are all in */
        Natomic__SagaRecord *rec =
            natomic__saga_record__unpack(NULL, (size_t)kvEntry_ValueLen(e), (const uint8_t *)kvEntry_Value(e));
        if (rec == NULL) {
            natomic__log(NATOMIC_LOG_ERROR, svc->name, "saga log: key %s does not hold a saga record: skipped",
                         kvEntry_Key(e));
        } else {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                found_record_t *grown = realloc(list, (size_t)cap * sizeof *grown);
                if (grown == NULL) {
                    natomic__saga_record__free_unpacked(rec, NULL);
                    kvEntry_Destroy(e);
                    failed = true;
                    break;
                }
                list = grown;
            }
            list[n++] = (found_record_t){rec, kvEntry_Revision(e)};
        }
        kvEntry_Destroy(e);
    }
    kvWatcher_Destroy(w);
    if (failed) {
        for (int i = 0; i < n; i++)
            natomic__saga_record__free_unpacked(list[i].rec, NULL);
        free(list);
        return -1;
    }
    *out = list;
    return n;
}

/* A context that stands for the call of a record, with its compensations. */
natomic_status_t natomic__saga_rebuild(natomic_service_t *svc, const Natomic__SagaRecord *rec, uint64_t revision,
                                       natomic_ctx_t *ctx)
{
    natomic__ctx_init(ctx, svc, svc->nc, svc->name, rec->method, NATOMIC_ROLLBACK_ONCE_FAILED);
    /* The method name must outlive the record: keep a copy in the arena. */
    ctx->method_name = natomic_ctx_strdup(ctx, rec->method != NULL ? rec->method : "");
    if (ctx->method_name == NULL)
        return NATOMIC_ENOMEM;
    natomic__copy(ctx->tx, sizeof ctx->tx, rec->tx);
    natomic__copy(ctx->call_id, sizeof ctx->call_id, rec->call_id);
    natomic__copy(ctx->chain, sizeof ctx->chain, rec->chain);
    natomic__copy(ctx->idem_key, sizeof ctx->idem_key, rec->idempotency_key);
    ctx->recovering = true;
    ctx->saga.revision = revision;
    ctx->saga.started_ns = rec->started_ns;
    ctx->saga.compensating = rec->state == NATOMIC__SAGA_RECORD__STATE__COMPENSATING;
    for (size_t i = 0; i < rec->n_compensations; i++) {
        const Natomic__Compensation *p = rec->compensations[i];
        bool remote = p->kind == NATOMIC__COMPENSATION__KIND__REMOTE;
        natomic_comp_t *c = natomic__comp_new(remote ? NATOMIC_COMP_REMOTE : NATOMIC_COMP_LOCAL,
                                              remote ? p->subject : p->name, p->branch, p->data.data, p->data.len);
        if (c == NULL)
            return NATOMIC_ENOMEM;
        c->attempts = p->attempts;
        natomic_status_t st = natomic__cmdlist_insert(&ctx->rollbacks, ctx->rollbacks.count, p->name,
                                                      natomic__comp_run, c, natomic__comp_free);
        if (st != NATOMIC_OK)
            return st;
    }
    return NATOMIC_OK;
}

/* True when every compensation of the rebuilt call has ended. */
static bool saga_done(const natomic_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->rollbacks.count; i++)
        if (!ctx->rollbacks.items[i].ended)
            return false;
    return true;
}

/* Ends one saga this instance owns now (claimed from `from`, or its own deferred one). */
static void finish(natomic_service_t *svc, natomic_ctx_t *ctx, bool claimed, const char *from)
{
    int64_t t0 = natomic__now_ms();
    if (svc->store != NULL) {
        bool committed = false;
        if (natomic__decision_abort(svc->store, ctx->call_id, &committed) != NATOMIC_OK)
            return; /* the store failed: next round */
        if (committed) {
            if (natomic__saga_delete(ctx) == NATOMIC_OK)
                natomic__recovery_event(svc, "ended", ctx->call_id, ctx->tx,
                                        "outcome committed: the call had committed before %s died; nothing to "
                                        "compensate",
                                        from);
            return;
        }
    }
    natomic_run_report_t rep = {0};
    ctx->commands_running = true;
    ctx->phase = "rollback";
    natomic_outcome_t out = natomic__cmdlist_run_hooked(&ctx->rollbacks, ctx, "rollback", true, &svc->retry,
                                                        &recovery_hooks, &rep);
    ctx->commands_running = false;
    ctx->phase = NULL;
    atomic_fetch_add(&svc->rollbacks_run, rep.succeeded);
    atomic_fetch_add(&svc->rollbacks_exhausted, rep.exhausted);
    atomic_fetch_add(&svc->retries, rep.retries);
    if (ctx->saga.lost)
        return; /* another instance took it over meanwhile */
    if (rep.deferred > 0 || !saga_done(ctx))
        return; /* the record keeps what is left; a later round (or another instance) goes on */
    char text[300];
    snprintf(text, sizeof text,
             "call %.32s of %s was interrupted (its instance %s died) and its steps were compensated%s: retry with "
             "a new key",
             ctx->call_id, svc->name, from, out == NATOMIC_OUTCOME_INCOMPLETE ? " (some dead-lettered)" : "");
    natomic__idem_interrupted(svc, ctx->method_name, ctx->idem_key, ctx->call_id,
                              out == NATOMIC_OUTCOME_INCOMPLETE ? NATOMIC_OUTCOME_INCOMPLETE
                                                                : NATOMIC_OUTCOME_COMPLETE,
                              text);
    if (natomic__saga_delete(ctx) != NATOMIC_OK)
        return; /* still in the log: the next round runs it again (all of it is idempotent) and ends it */
    if (claimed)
        atomic_fetch_add(&svc->sagas_recovered, 1);
    natomic__recovery_event(svc, "ended", ctx->call_id, ctx->tx,
                            "outcome %s: %zu compensation%s done, %zu dead-lettered, in %lld ms",
                            out == NATOMIC_OUTCOME_INCOMPLETE ? "incomplete" : "compensated", rep.succeeded,
                            rep.succeeded == 1 ? "" : "s", rep.exhausted, (long long)(natomic__now_ms() - t0));
}

/* What to do with a record: 0 leave it, 1 claim it, 2 it is ours (deferred work). */
static int classify(natomic_service_t *svc, const Natomic__SagaRecord *rec)
{
    const char *owner = rec->owner != NULL ? rec->owner : "";
    const char *inc = rec->incarnation != NULL ? rec->incarnation : "";
    if (strcmp(owner, svc->instance) == 0) {
        if (strcmp(inc, svc->incarnation) != 0)
            return 1; /* this instance's previous process */
        return natomic__inflight_has(svc, rec->call_id) ? 0 : 2;
    }
    return natomic__lease_alive(svc, owner, inc) == 0 ? 1 : 0;
}

void natomic__recovery_round(natomic_service_t *svc)
{
    natomic_durable_t *d = svc->durable;
    if (d == NULL)
        return;
    if (d->saga_kv != NULL) {
        found_record_t *list = NULL;
        int n = gather(svc, &list);
        for (int i = 0; i < n; i++) {
            Natomic__SagaRecord *rec = list[i].rec;
            int what = rec->call_id != NULL && strlen(rec->call_id) <= NATOMIC_ID_LEN &&
                               !atomic_load(&svc->stopping_housekeeping)
                           ? classify(svc, rec)
                           : 0;
            if (what != 0) {
                char from[140];
                snprintf(from, sizeof from, "%s", rec->owner != NULL ? rec->owner : "?");
                natomic_ctx_t ctx;
                natomic_status_t st = natomic__saga_rebuild(svc, rec, list[i].revision, &ctx);
                if (st == NATOMIC_OK) {
                    /* The claim -- one instance wins. For a record of our own it proves the
                       version we read is still the last: the call may have ended (and deleted
                       it) since the round read it, and must not be compensated twice. */
                    ctx.saga.compensating = true;
                    st = natomic__saga_write(&ctx);
                }
                if (st == NATOMIC_OK && what == 1)
                    natomic__recovery_event(svc, "claimed", ctx.call_id, ctx.tx,
                                            "from %s (incarnation %.8s), %s.%s, %zu compensation%s pending", from,
                                            rec->incarnation != NULL ? rec->incarnation : "?", svc->name,
                                            ctx.method_name, ctx.rollbacks.count, ctx.rollbacks.count == 1 ? "" : "s");
                if (st == NATOMIC_OK)
                    finish(svc, &ctx, what == 1, from);
                natomic__ctx_release(&ctx);
            }
            natomic__saga_record__free_unpacked(rec, NULL);
        }
        free(list);
    }
    natomic__outbox_relay(svc, 1000);
}
