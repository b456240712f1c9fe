/*
 * saga_log.c -- the saga log: each call's pending compensations, kept in
 * JetStream KV where a crash of the process cannot take them.
 *
 * FORMAT. The bucket "natomic_saga_<service>" (stream KV_natomic_saga_
 * <service>, subjects "$KV.natomic_saga_<service>.>", one message per
 * subject) holds one key per call that registered a compensation:
 *
 *     saga.<call_id>  ->  natomic.SagaRecord (proto/natomic_log.proto)
 *
 * A record carries what recovery needs to finish the call without the
 * process that began it: the service, method, transaction and call ids
 * and chain (the headers the compensations are sent with), the owner
 * (instance name and the random incarnation of its process), the call's
 * idempotency key, and the compensations still to run, in registration
 * order: for a remote one the subject, the encoded request, its extra
 * headers (Natomic-Branch) and branch; for a local one the registered
 * command's name and payload; and for each the attempts that failed.
 *
 * LIFE OF A RECORD. Versions are written whole; each write names the
 * revision it replaces (Nats-Expected-Last-Subject-Sequence), so a write
 * succeeds only for the instance that wrote the version before it:
 *
 *   1. the first durable registration of a call creates it (expected
 *      revision 0); every later one replaces it -- always BEFORE the
 *      forward step it undoes is sent (natomic_saga_step), so no step
 *      ever leaves without its compensation on the server's disk;
 *   2. success: the call commits locally (the decision "committed", see
 *      durable.c), then the record is deleted;
 *   3. failure: the compensations run last first; after each one that
 *      succeeded or was dead-lettered the record is rewritten without it,
 *      so a crash in the middle resumes with what was left; one deferred
 *      (its target unreachable) stays, and the record with it;
 *   4. recovery claims a record by rewriting it with itself as owner
 *      (state COMPENSATING) -- the compare-and-set lets one claimer win.
 *
 * A record is deleted by its sequence (js_DeleteMsg), not with a KV delete
 * marker: nothing is left behind for scans to read, and the delete fails
 * if the record was replaced meanwhile. That is why the bucket's stream is
 * made by durable.c rather than by kvStore: a KV stream denies deletes.
 *
 * ELECTIONS. On a cluster the bucket's stream has replicas, and a write
 * that meets no leader (it died, or was cut off, and the others have not
 * elected another yet: a few seconds) times out or is told "temporarily
 * unavailable". Such a write is tried again, with a growing wait, for at
 * most LOG_RETRY_MS and never past the call's deadline. An attempt whose
 * answer was lost may have been stored all the same: the next attempt then
 * finds the revision moved on, and the record is read back -- if it holds
 * exactly what we wrote, that revision is ours. A delete that is retried
 * and finds nothing checks the same way that the record is really gone.
 *
 * FAILURE. A write that fails (NATS down, JetStream unavailable, the
 * fault point natomic/before_log_write) returns NATOMIC_ELOG and leaves
 * the record as it was; the registration that asked for it is undone and
 * the handler fails the call before its step. A write that finds another
 * revision returns NATOMIC_ENOTOWNER: recovery took the saga over (this
 * process was thought dead -- paused, cut off, too slow to renew its
 * lease); from then on this process leaves the saga alone.
 */
#include "natomic_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "durable_internal.h"
#include "natomic_log.pb-c.h"

#define LOG_WRITE_TIMEOUT_MS 3000
#define LOG_RETRY_MS 8000        /* a write keeps trying through an election this long...  */
#define LOG_BACKOFF_MAX_MS 1000  /* ...waiting 100, 200, 400, ... ms between tries,     */
#define LOG_REPLY_MARGIN_MS 500  /* and stopping this long before the call's deadline,
                                    so that the caller still hears how the call ended   */

/* "$KV.<bucket>.saga.<call_id>" */
static void record_subject(const natomic_service_t *svc, const char *call_id, char *out, size_t cap)
{
    snprintf(out, cap, "$KV.%s.saga.%s", svc->durable->saga_bucket, call_id);
}

/* The record of ctx as it stands: its compensations not yet ended. Strings borrowed from ctx. */
static uint8_t *pack_record(const natomic_ctx_t *ctx, size_t *len)
{
    const natomic_service_t *svc = ctx->svc;
    size_t n = 0;
    for (size_t i = 0; i < ctx->rollbacks.count; i++)
        if (natomic__is_comp(&ctx->rollbacks.items[i]) && !ctx->rollbacks.items[i].ended)
            n++;
    Natomic__Compensation *comps = calloc(n > 0 ? n : 1, sizeof *comps);
    Natomic__Compensation **ptrs = calloc(n > 0 ? n : 1, sizeof *ptrs);
    Natomic__Header *headers = calloc(n > 0 ? n : 1, sizeof *headers);
    Natomic__Header **header_ptrs = calloc(n > 0 ? n : 1, sizeof *header_ptrs);
    uint8_t *buf = NULL;
    if (comps == NULL || ptrs == NULL || headers == NULL || header_ptrs == NULL)
        goto out;
    size_t k = 0;
    for (size_t i = 0; i < ctx->rollbacks.count; i++) {
        const natomic_command_t *cmd = &ctx->rollbacks.items[i];
        if (!natomic__is_comp(cmd) || cmd->ended)
            continue;
        const natomic_comp_t *c = cmd->arg;
        Natomic__Compensation *p = &comps[k];
        natomic__compensation__init(p);
        p->kind = c->kind == NATOMIC_COMP_REMOTE ? NATOMIC__COMPENSATION__KIND__REMOTE
                                                 : NATOMIC__COMPENSATION__KIND__LOCAL;
        p->name = cmd->name;
        p->subject = (char *)c->subject;
        p->data.data = c->data;
        p->data.len = c->len;
        p->branch = (char *)c->branch;
        p->attempts = c->attempts;
        if (c->branch[0] != '\0') {
            natomic__header__init(&headers[k]);
            headers[k].key = NATOMIC_HDR_BRANCH;
            headers[k].value = (char *)c->branch;
            header_ptrs[k] = &headers[k];
            p->n_headers = 1;
            p->headers = &header_ptrs[k];
        }
        ptrs[k++] = p;
    }
    Natomic__SagaRecord rec = NATOMIC__SAGA_RECORD__INIT;
    rec.version = 1;
    rec.service = (char *)ctx->service_name;
    rec.method = (char *)ctx->method_name;
    rec.tx = (char *)ctx->tx;
    rec.call_id = (char *)ctx->call_id;
    rec.chain = (char *)ctx->chain;
    rec.owner = (char *)svc->instance;
    rec.incarnation = (char *)svc->incarnation;
    rec.idempotency_key = (char *)ctx->idem_key;
    rec.started_ns = ctx->saga.started_ns;
    rec.updated_ns = natomic__wall_ns();
    rec.state = ctx->saga.compensating ? NATOMIC__SAGA_RECORD__STATE__COMPENSATING
                                       : NATOMIC__SAGA_RECORD__STATE__RUNNING;
    rec.n_compensations = k;
    rec.compensations = ptrs;
    buf = natomic__pack(&rec.base, len);
out:
    free(comps);
    free(ptrs);
    free(headers);
    free(header_ptrs);
    return buf;
}

/* An answer that an election (or a reconnect) explains: worth another try. */
static bool transient(natsStatus s, jsErrCode jerr)
{
    return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || jerr == JSClusterNotAvailErr ||
           jerr == JSClusterNotLeaderErr || jerr == JSStreamOfflineErr || jerr == JSClusterIncompleteErr;
}

/*
 * Waits before try `attempt` + 1 of a log operation and gives that try's
 * time in *try_ms; false when the time is up (LOG_RETRY_MS from
 * `start_ms`, or LOG_REPLY_MARGIN_MS before the call's deadline).
 */
static bool retry_wait(const natomic_ctx_t *ctx, int64_t start_ms, int attempt, int64_t *try_ms)
{
    int64_t wait = 100LL << (attempt < 4 ? attempt : 4);
    if (wait > LOG_BACKOFF_MAX_MS)
        wait = LOG_BACKOFF_MAX_MS;
    int64_t end = start_ms + LOG_RETRY_MS, now = natomic__now_ms();
    if (ctx->deadline_ms > 0 && ctx->deadline_ms - LOG_REPLY_MARGIN_MS < end)
        end = ctx->deadline_ms - LOG_REPLY_MARGIN_MS;
    int64_t left = end - now - wait;
    if (left < 200) /* too short for a JetStream round trip in an election */
        return false;
    natomic__sleep_ms(wait);
    *try_ms = left < LOG_WRITE_TIMEOUT_MS ? left : LOG_WRITE_TIMEOUT_MS;
    return true;
}

/* The first try's time: LOG_WRITE_TIMEOUT_MS, less when the call's deadline (less the margin) is nearer. */
static int64_t first_try_ms(const natomic_ctx_t *ctx)
{
    if (ctx->deadline_ms <= 0)
        return LOG_WRITE_TIMEOUT_MS;
    int64_t left = ctx->deadline_ms - LOG_REPLY_MARGIN_MS - natomic__now_ms();
    return left < 200 ? 200 : left < LOG_WRITE_TIMEOUT_MS ? left : LOG_WRITE_TIMEOUT_MS;
}

/*
 * The stored record of this call, read back: its revision in *rev, 0 when
 * there is none. Whether it holds exactly `data` in *same. false when it
 * could not be read.
 */
static bool read_back(natomic_ctx_t *ctx, const char *subject, const uint8_t *data, size_t len, uint64_t *rev,
                      bool *same)
{
    natomic_durable_t *d = ctx->svc->durable;
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = LOG_WRITE_TIMEOUT_MS;
    natsStatus s = js_GetLastMsg(&m, d->js, d->saga_stream, subject, &o, &jerr);
    *rev = 0;
    *same = false;
    if (s != NATS_OK) {
        return jerr == JSNoMessageFoundErr || s == NATS_NOT_FOUND;
    }
    *rev = natsMsg_GetSequence(m);
    *same = data != NULL && natsMsg_GetDataLength(m) == (int)len && memcmp(natsMsg_GetData(m), data, len) == 0;
    natsMsg_Destroy(m);
    return true;
}

/*
 * One compare-and-set publish of the record; *rev gets the new revision.
 * Tried again through an election (see ELECTIONS above).
 */
static natomic_status_t publish_record(natomic_ctx_t *ctx, const uint8_t *data, size_t len, uint64_t last,
                                       uint64_t *rev)
{
    natomic_service_t *svc = ctx->svc;
    char subject[256], expected[32];
    record_subject(svc, ctx->call_id, subject, sizeof subject);
    snprintf(expected, sizeof expected, "%" PRIu64, last);
    jsPubOptions o;
    jsPubOptions_Init(&o);
    o.MaxWait = LOG_WRITE_TIMEOUT_MS;
    int64_t start = natomic__now_ms();
    natsStatus s;
    jsErrCode jerr;
    jsPubAck *pa = NULL;
    int64_t try_ms = first_try_ms(ctx);
    for (int attempt = 0;; attempt++) {
        o.MaxWait = try_ms;
        natsMsg *m = NULL;
        jerr = 0;
        s = natsMsg_Create(&m, subject, NULL, (const char *)data, (int)len);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", expected);
        if (s == NATS_OK)
            s = js_PublishMsg(&pa, svc->durable->js, m, &o, &jerr);
        natsMsg_Destroy(m);
        if (s == NATS_OK || !transient(s, jerr) || !retry_wait(ctx, start, attempt, &try_ms)) {
            if (attempt > 0 && jerr == JSStreamWrongLastSequenceErr) {
                /* Moved on since we asked: by our own earlier try whose answer was lost, or by another? */
                bool same = false;
                uint64_t stored = 0;
                if (read_back(ctx, subject, data, len, &stored, &same) && same && stored > last) {
                    natomic__log(NATOMIC_LOG_INFO, ctx->service_name,
                                 "saga log write for tx %s: an earlier try was stored (revision %" PRIu64 ")", ctx->tx,
                                 stored);
                    *rev = stored;
                    return NATOMIC_OK;
                }
            }
            break;
        }
        natomic__log(NATOMIC_LOG_INFO, ctx->service_name, "saga log write for tx %s: %s; trying again", ctx->tx,
                     jerr != 0 ? "JetStream unavailable" : natsStatus_GetText(s));
    }
    natomic_status_t st = NATOMIC_OK;
    if (s == NATS_OK) {
        *rev = pa->Sequence;
    } else if (jerr == JSStreamWrongLastSequenceErr) {
        st = NATOMIC_ENOTOWNER;
    } else {
        natomic__log(NATOMIC_LOG_WARN, ctx->service_name, "saga log write for tx %s failed: %s", ctx->tx,
                     jerr != 0 ? nats_GetLastError(NULL) : natsStatus_GetText(s));
        st = NATOMIC_ELOG;
    }
    jsPubAck_Destroy(pa);
    return st;
}

static bool has_log(const natomic_ctx_t *ctx)
{
    return ctx->svc != NULL && natomic__durable(ctx->svc) && ctx->svc->durable->saga_kv != NULL;
}

natomic_status_t natomic__saga_write(natomic_ctx_t *ctx)
{
    if (!has_log(ctx))
        return NATOMIC_OK;
    if (ctx->saga.lost)
        return NATOMIC_ENOTOWNER;
    natomic_fault_t f = NATOMIC_FAULT("natomic/before_log_write");
    if (f == NATOMIC_FAULT_ERROR) {
        natomic__log(NATOMIC_LOG_WARN, ctx->service_name, "saga log write for tx %s failed: fault point "
                     "natomic/before_log_write", ctx->tx);
        return NATOMIC_ELOG;
    }
    bool first = ctx->saga.revision == 0;
    if (first && ctx->saga.started_ns == 0)
        ctx->saga.started_ns = natomic__wall_ns();
    size_t len = 0;
    uint8_t *data = pack_record(ctx, &len);
    if (data == NULL)
        return NATOMIC_ENOMEM;
    if (first && !ctx->recovering)
        natomic__inflight_add(ctx->svc, ctx->call_id); /* before it is visible to our own recovery */
    uint64_t rev = 0;
    natomic_status_t st = publish_record(ctx, data, len, ctx->saga.revision, &rev);
    free(data);
    if (st == NATOMIC_OK) {
        ctx->saga.revision = rev;
        if (first && !ctx->recovering)
            atomic_fetch_add(&ctx->svc->sagas_logged, 1);
        if (NATOMIC_FAULT("natomic/after_log_write") == NATOMIC_FAULT_ERROR)
            st = NATOMIC_ELOG; /* written, but the caller is told otherwise: it compensates a step never sent */
    } else {
        if (st == NATOMIC_ENOTOWNER) {
            ctx->saga.lost = true;
            if (ctx->recovering) /* another instance claimed it first, or it ended meanwhile */
                natomic__log(NATOMIC_LOG_DEBUG, ctx->service_name, "recovery: tx %s is not ours to claim",
                             ctx->tx);
            else
                natomic__log(NATOMIC_LOG_WARN, ctx->service_name,
                             "%s (tx %s): the saga was taken over by recovery; this process leaves it alone",
                             ctx->method_name, ctx->tx);
        }
        if (first && !ctx->recovering)
            natomic__inflight_remove(ctx->svc, ctx->call_id);
    }
    return st;
}

natomic_status_t natomic__saga_delete(natomic_ctx_t *ctx)
{
    if (!has_log(ctx) || ctx->saga.revision == 0)
        return NATOMIC_OK;
    if (ctx->saga.lost)
        return NATOMIC_ENOTOWNER;
    natomic_durable_t *d = ctx->svc->durable;
    jsErrCode jerr = 0;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = LOG_WRITE_TIMEOUT_MS;
    int64_t start = natomic__now_ms();
    natsStatus s;
    int attempt = 0;
    int64_t try_ms = first_try_ms(ctx);
    for (;; attempt++) {
        o.Wait = try_ms;
        jerr = 0;
        s = js_DeleteMsg(d->js, d->saga_stream, ctx->saga.revision, &o, &jerr);
        if (s == NATS_OK || !transient(s, jerr) || !retry_wait(ctx, start, attempt, &try_ms))
            break;
        natomic__log(NATOMIC_LOG_INFO, ctx->service_name, "saga log: deleting the record of tx %s: %s; trying again",
                     ctx->tx, jerr != 0 ? "JetStream unavailable" : natsStatus_GetText(s));
    }
    if (s != NATS_OK && attempt > 0 && (jerr == JSNoMessageFoundErr || jerr == JSSequenceNotFoundErr)) {
        /* Gone: by our own earlier try whose answer was lost, unless another revision is there now. */
        char subject[256];
        record_subject(ctx->svc, ctx->call_id, subject, sizeof subject);
        bool same = false;
        uint64_t stored = 0;
        if (read_back(ctx, subject, NULL, 0, &stored, &same) && stored == 0) {
            s = NATS_OK;
        }
    }
    natomic_status_t st = NATOMIC_OK;
    if (s != NATS_OK) {
        if (jerr == JSNoMessageFoundErr || jerr == JSSequenceNotFoundErr) {
            /* Replaced since our last write: someone else owns it now. */
            ctx->saga.lost = true;
            st = NATOMIC_ENOTOWNER;
        } else {
            /* It stays; recovery finds it and, from the decision, knows what is left to do. */
            natomic__log(NATOMIC_LOG_WARN, ctx->service_name, "saga log: cannot delete the record of tx %s: %s",
                         ctx->tx, jerr != 0 ? nats_GetLastError(NULL) : natsStatus_GetText(s));
            st = NATOMIC_ELOG;
        }
    }
    if (st == NATOMIC_OK)
        ctx->saga.revision = 0;
    return st;
}

natomic_status_t natomic__saga_logged_insert(natomic_ctx_t *ctx, size_t index)
{
    if (!has_log(ctx))
        return NATOMIC_OK;
    natomic_status_t st = natomic__saga_write(ctx);
    if (st != NATOMIC_OK) {
        /* Not logged, so not registered: the handler fails before the step it was for. */
        natomic__cmdlist_remove(&ctx->rollbacks, index);
        atomic_fetch_add(&ctx->svc->log_failures, 1);
        if (st == NATOMIC_ENOMEM)
            st = NATOMIC_ELOG;
    }
    return st;
}
