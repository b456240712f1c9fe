/*
 * service.c -- the service runtime: subjects, workers, and the life of a
 * call.
 *
 * A service subscribes once to "<name>.>" in the queue group "<name>", so
 * instances share the load and an unknown method still gets an answer.
 * `max_workers` threads pull from that one synchronous subscription; each
 * pulled request is one call, handled start to end by that thread:
 *
 *   1. context: transaction id from `Natomic-Tx` (or new), a new call id,
 *      the caller's call id as parent, the deadline from
 *      `Natomic-Deadline-Ms`; an already exceeded deadline is refused;
 *   2. the request is decoded with the method's descriptor (a malformed
 *      payload gets a 400 reply, the handler never sees it);
 *   3. the handler runs and registers commands on its own context;
 *   4. success: rollback commands are dropped unexecuted, dispatch
 *      commands run in order (a failing one is retried, then
 *      dead-lettered; the reply stays a success), then the reply leaves;
 *      failure: dispatch commands are dropped, rollback commands run in
 *      reverse order, all of them, then the error reply leaves with the
 *      handler's original error and `Natomic-Rollback`.
 *
 * In durable mode (durable.c and the files it names) the same steps
 * also keep the saga log, the outbox and the idempotency keys: a repeated
 * Natomic-Idempotency-Key is answered before step 3 from what is stored;
 * on success the call's decision, events and outcome commit with its
 * business change before its saga record is deleted; on failure each
 * compensation leaves the log as it ends.
 *
 * Stop is graceful: the subscription is drained (the server sends nothing
 * more; what was delivered is still handled), workers finish their calls,
 * then exit; recovery and housekeeping stop, and the lease is given up
 * last. Nothing here keeps state across calls except counters.
 */
#include "natomic_internal.h"
#include "durable_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_WORKERS 10
#define DEFAULT_LEASE_MS 2000
#define DEFAULT_RECOVERY_INTERVAL_MS 500
#define DEFAULT_IDEMPOTENCY_RETENTION_S (24 * 3600)
#define DEFAULT_BARRIER_RETENTION_S (7 * 24 * 3600)
#define POLL_MS 100
#define DRAIN_TIMEOUT_MS 30000

static bool valid_name(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 128)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

NATOMIC_API natomic_status_t natomic_service_new(natomic_service_t **out, natsConnection *nc,
                                                 const natomic_service_config_t *config)
{
    if (out == NULL || nc == NULL || config == NULL || !valid_name(config->name) || config->max_workers < 0 ||
        config->max_workers > 1024 || config->retry.attempts < 0 || config->retry.base_ms < 0 ||
        config->retry.cap_ms < 0 ||
        (config->mode != NATOMIC_MODE_MEMORY && config->mode != NATOMIC_MODE_DURABLE) ||
        (config->instance != NULL && (!valid_name(config->instance) || strlen(config->instance) > 64)) ||
        config->lease_ms < 0 || config->recovery_interval_ms < 0 || config->idempotency_retention_s < 0 ||
        config->barrier_retention_s < 0)
        return NATOMIC_EINVAL;
    natomic_service_t *svc = calloc(1, sizeof *svc);
    if (svc == NULL)
        return NATOMIC_ENOMEM;
    svc->stop_pipe[0] = svc->stop_pipe[1] = -1;
    svc->nc = nc;
    svc->name = strdup(config->name);
    svc->version = strdup(config->version != NULL && *config->version ? config->version : "0.1.0");
    svc->description = strdup(config->description != NULL ? config->description : "");
    svc->max_workers = config->max_workers > 0 ? config->max_workers : DEFAULT_MAX_WORKERS;
    svc->retry = natomic__retry_policy_normalize(config->retry);
    natomic__id_new(svc->id);
    pthread_mutex_init(&svc->mu, NULL);
    pthread_mutex_init(&svc->housekeeping_mu, NULL);
    pthread_cond_init(&svc->housekeeping_cond, NULL);
    svc->mode = config->mode;
    svc->store = config->store;
    natomic__id_new(svc->incarnation);
    if (config->instance != NULL)
        natomic__copy(svc->instance, sizeof svc->instance, config->instance);
    else
        snprintf(svc->instance, sizeof svc->instance, "%.48s-%.8s", config->name, svc->incarnation);
    svc->lease_ms = config->lease_ms > 0 ? config->lease_ms : DEFAULT_LEASE_MS;
    svc->recovery_interval_ms = config->recovery_interval_ms > 0 ? config->recovery_interval_ms
                                                                 : DEFAULT_RECOVERY_INTERVAL_MS;
    svc->idempotency_retention_s =
        config->idempotency_retention_s > 0 ? config->idempotency_retention_s : DEFAULT_IDEMPOTENCY_RETENTION_S;
    svc->barrier_retention_s =
        config->barrier_retention_s > 0 ? config->barrier_retention_s : DEFAULT_BARRIER_RETENTION_S;
    if (svc->name == NULL || svc->version == NULL || svc->description == NULL ||
        pipe2(svc->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        natomic_service_destroy(svc);
        return NATOMIC_ENOMEM;
    }
    *out = svc;
    return NATOMIC_OK;
}

NATOMIC_API natomic_status_t natomic_service_add_method(natomic_service_t *svc, const char *name,
                                                        natomic_handler_fn handler, unsigned flags,
                                                        const ProtobufCMessageDescriptor *request_desc,
                                                        const ProtobufCMessageDescriptor *reply_desc,
                                                        void *closure)
{
    if (svc == NULL || !valid_name(name) || handler == NULL || request_desc == NULL || reply_desc == NULL ||
        (flags & ~(unsigned)(NATOMIC_ROLLBACK_ONCE_FAILED | NATOMIC_DISPATCH_AFTER_COMMIT)) != 0 ||
        request_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ||
        reply_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return NATOMIC_EINVAL;
    pthread_mutex_lock(&svc->mu);
    natomic_status_t st = NATOMIC_OK;
    if (svc->started)
        st = NATOMIC_ESTATE;
    for (size_t i = 0; st == NATOMIC_OK && i < svc->n_methods; i++)
        if (strcmp(svc->methods[i].name, name) == 0)
            st = NATOMIC_EEXIST;
    natomic_method_t *methods = NULL;
    if (st == NATOMIC_OK) {
        methods = realloc(svc->methods, (svc->n_methods + 1) * sizeof *methods);
        if (methods == NULL)
            st = NATOMIC_ENOMEM;
        else
            svc->methods = methods;
    }
    if (st == NATOMIC_OK) {
        natomic_method_t *m = &svc->methods[svc->n_methods];
        memset(m, 0, sizeof *m);
        m->name = strdup(name);
        size_t n = strlen(svc->name) + strlen(name) + 2;
        m->subject = malloc(n);
        if (m->name == NULL || m->subject == NULL) {
            free(m->name);
            free(m->subject);
            st = NATOMIC_ENOMEM;
        } else {
            snprintf(m->subject, n, "%s.%s", svc->name, name);
            m->handler = handler;
            m->flags = flags;
            m->request_desc = request_desc;
            m->reply_desc = reply_desc;
            m->closure = closure;
            pthread_mutex_init(&m->last_error_mu, NULL);
            svc->n_methods++;
        }
    }
    pthread_mutex_unlock(&svc->mu);
    return st;
}

NATOMIC_API natomic_status_t natomic_service_add_event_handler(natomic_service_t *svc, const char *source,
                                                               const char *type, natomic_event_fn handler,
                                                               const ProtobufCMessageDescriptor *event_desc,
                                                               void *closure)
{
    if (svc == NULL || !valid_name(source) || !valid_name(type) || handler == NULL || event_desc == NULL ||
        event_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return NATOMIC_EINVAL;
    pthread_mutex_lock(&svc->mu);
    natomic_status_t st = svc->started ? NATOMIC_ESTATE : NATOMIC_OK;
    size_t n = strlen(NATOMIC_EVENTS_PREFIX) + strlen(source) + strlen(type) + 3;
    char *subject = st == NATOMIC_OK ? malloc(n) : NULL;
    if (st == NATOMIC_OK && subject == NULL)
        st = NATOMIC_ENOMEM;
    if (st == NATOMIC_OK) {
        snprintf(subject, n, NATOMIC_EVENTS_PREFIX ".%s.%s", source, type);
        for (size_t i = 0; i < svc->n_event_subs; i++)
            if (strcmp(svc->event_subs[i].subject, subject) == 0)
                st = NATOMIC_EEXIST;
    }
    if (st == NATOMIC_OK) {
        natomic_event_sub_t *subs = realloc(svc->event_subs, (svc->n_event_subs + 1) * sizeof *subs);
        if (subs == NULL) {
            st = NATOMIC_ENOMEM;
        } else {
            svc->event_subs = subs;
            subs[svc->n_event_subs++] = (natomic_event_sub_t){
                .svc = svc, .subject = subject, .handler = handler, .desc = event_desc, .closure = closure};
            subject = NULL;
        }
    }
    free(subject);
    pthread_mutex_unlock(&svc->mu);
    return st;
}

static natomic_method_t *find_method(natomic_service_t *svc, const char *name)
{
    for (size_t i = 0; i < svc->n_methods; i++)
        if (strcmp(svc->methods[i].name, name) == 0)
            return &svc->methods[i];
    return NULL;
}

/*
 * NATOMIC_TRACE=1: a copy of each call received and each reply sent goes to
 * natomic.trace.call.<subject> / natomic.trace.reply.<subject>, with the
 * original headers, Natomic-Reply-To (the caller's inbox, to pair them) and
 * Natomic-Time-Ns (this process's wall clock when the call came or the
 * reply left, so an observer can order what it saw by when it happened).
 * An observer (the lab) reads these instead of subscribing to the request
 * subjects, where it would itself count as a responder and hide the
 * "no responders" answer a caller of a dead service must get.
 */
static void trace(natomic_service_t *svc, const char *kind, natsMsg *req, natsMsg *reply, int64_t at_ns)
{
    if (!svc->trace)
        return;
    natsMsg *src = reply != NULL ? reply : req;
    char subject[320];
    snprintf(subject, sizeof subject, "natomic.trace.%s.%s", kind, natsMsg_GetSubject(req));
    natsMsg *t = NULL;
    if (natsMsg_Create(&t, subject, NULL, natsMsg_GetData(src), natsMsg_GetDataLength(src)) != NATS_OK)
        return;
    const char **keys = NULL;
    int n = 0;
    if (natsMsgHeader_Keys(src, &keys, &n) == NATS_OK) {
        for (int i = 0; i < n; i++) {
            const char *v = NULL;
            if (natsMsgHeader_Get(src, keys[i], &v) == NATS_OK)
                natsMsgHeader_Set(t, keys[i], v);
        }
        free((void *)keys);
    }
    /* Only when there is one: nats.c 3.4.1 reads an empty header value as the next header line. */
    const char *inbox = natsMsg_GetReply(req);
    if (inbox != NULL && *inbox != '\0')
        natsMsgHeader_Set(t, "Natomic-Reply-To", inbox);
    /* When it happened here, by this process's clock: observers order by it, not by arrival. */
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)at_ns);
    natsMsgHeader_Set(t, NATOMIC_HDR_TIME_NS, now);
    natsConnection_PublishMsg(svc->nc, t);
    natsMsg_Destroy(t);
}

/* Header values must be one line: control characters become spaces. */
static void header_safe(char *dst, size_t cap, const char *src)
{
    natomic__copy(dst, cap, src);
    for (char *p = dst; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

/* Sends a reply (success or error) with the outcome headers. Failures are logged. */
void natomic__send_reply(natomic_service_t *svc, natsMsg *req, const char *tx, const void *data, size_t len,
                         natomic_status_t kind, const char *type, const char *message, natomic_outcome_t rollback,
                         natomic_outcome_t dispatch, bool replayed)
{
    const char *reply_to = natsMsg_GetReply(req);
    if (reply_to == NULL || *reply_to == '\0')
        return;
    /* DROP: the reply is lost on the way, and the caller times out, in doubt. DUPLICATE: it
       arrives twice. There is no ERROR: nothing between a service and its caller turns a
       success into a failure, so a lie of that kind would test a bug of ours, not the world. */
    natomic_fault_t f = NATOMIC_FAULT("natomic/before_reply");
    if (f == NATOMIC_FAULT_DROP)
        return;
    char *body = NULL;
    if (kind != NATOMIC_OK) {
        /* A readable body for tools that print payloads; clients read the headers. */
        json_t *doc = json_pack("{s:i, s:s, s:s, s:s}", "code", natomic_error_code(kind), "type", type ? type : "",
                                "message", message ? message : "", "rollback", natomic_outcome_name(rollback));
        body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        data = body;
        len = body != NULL ? strlen(body) : 0;
    }
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, reply_to, NULL, (const char *)data, (int)len);
    if (s == NATS_OK && tx != NULL)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_TX, tx);
    if (s == NATS_OK && replayed)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_REPLAYED, "true");
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_ROLLBACK, natomic_outcome_name(rollback));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_DISPATCH, natomic_outcome_name(dispatch));
    if (s == NATS_OK && kind != NATOMIC_OK) {
        char code[16], safe_message[256], safe_type[64];
        snprintf(code, sizeof code, "%d", natomic_error_code(kind));
        header_safe(safe_message, sizeof safe_message, message);
        header_safe(safe_type, sizeof safe_type, type);
        s = natsMsgHeader_Set(m, NATOMIC_HDR_SERVICE_ERROR, safe_message);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, NATOMIC_HDR_SERVICE_ERROR_CODE, code);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, NATOMIC_HDR_ERROR_TYPE, safe_type);
    }
    int64_t sent_ns = natomic__wall_ns(); /* before it leaves: nothing it causes can come earlier */
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(svc->nc, m);
    if (s == NATS_OK && f == NATOMIC_FAULT_DUPLICATE)
        s = natsConnection_PublishMsg(svc->nc, m);
    if (s == NATS_OK)
        trace(svc, "reply", req, m, sent_ns);
    if (s != NATS_OK)
        natomic__log(NATOMIC_LOG_ERROR, svc->name, "could not send the reply to %s: %s", reply_to,
                     natsStatus_GetText(s));
    natsMsg_Destroy(m);
    free(body);
}

/* Type names for failures the handler did not describe. */
static const char *default_type(natomic_status_t kind)
{
    switch (kind) {
    case NATOMIC_EBADINPUT:
        return "BadRequest";
    case NATOMIC_ENOMETHOD:
        return "UnknownMethod";
    case NATOMIC_EBUSINESS:
        return "BusinessError";
    case NATOMIC_ETRANSIENT:
        return "TransientError";
    case NATOMIC_ETIMEOUT:
        return "Timeout";
    default:
        return "InternalError";
    }
}

static void record_error(natomic_method_t *m, int code, const char *message)
{
    atomic_fetch_add(&m->num_errors, 1);
    pthread_mutex_lock(&m->last_error_mu);
    snprintf(m->last_error, sizeof m->last_error, "%d:%s", code, message);
    pthread_mutex_unlock(&m->last_error_mu);
}

/* Durable mode: an event that could not be published waits in the outbox for the relay. */
static natomic_cmd_end_t durable_dispatch_exhausted(natomic_ctx_t *ctx, const char *list_kind, natomic_command_t *cmd,
                                                    int attempts, natomic_status_t last, void *user)
{
    (void)user;
    if (natomic__event_of(cmd) != NULL && ctx->committed) {
        natomic__log(NATOMIC_LOG_WARN, ctx->service_name,
                     "%s command '%s' of tx %s not published after %d attempts (%s): it stays in the outbox, the "
                     "relay publishes it later",
                     list_kind, cmd->name, ctx->tx, attempts, natomic_status_name(last));
        return NATOMIC_CMD_DEFERRED;
    }
    natomic__dead_letter(ctx, list_kind, cmd, attempts, last, NULL);
    return NATOMIC_CMD_DEAD;
}

static const natomic_run_hooks_t durable_dispatch_hooks = {.exhausted = durable_dispatch_exhausted};

/* Runs one list with the service's policy and counts what happened. */
static natomic_outcome_t run_list(natomic_service_t *svc, natomic_ctx_t *ctx, bool rollback)
{
    natomic_run_report_t rep = {0};
    ctx->commands_running = true;
    ctx->phase = rollback ? "rollback" : "dispatch";
    natomic_outcome_t out;
    if (natomic__durable(svc)) {
        /* Compensations leave the saga log as they end; unreachable ones are deferred to
           recovery rounds; an event that cannot be published stays in the outbox. */
        out = natomic__cmdlist_run_hooked(rollback ? &ctx->rollbacks : &ctx->dispatches, ctx,
                                          rollback ? "rollback" : "dispatch", rollback, &svc->retry,
                                          rollback ? &natomic__durable_rollback_hooks : &durable_dispatch_hooks,
                                          &rep);
    } else {
        out = natomic__cmdlist_run(rollback ? &ctx->rollbacks : &ctx->dispatches, ctx,
                                   rollback ? "rollback" : "dispatch", rollback, &svc->retry, natomic__dead_letter,
                                   NULL, &rep);
    }
    ctx->commands_running = false;
    ctx->phase = NULL;
    atomic_fetch_add(rollback ? &svc->rollbacks_run : &svc->dispatches_run, rep.succeeded);
    atomic_fetch_add(rollback ? &svc->rollbacks_exhausted : &svc->dispatches_exhausted, rep.exhausted);
    atomic_fetch_add(&svc->retries, rep.retries);
    return out;
}

/* The error a failed handler leaves: its natomic_fail(), a remote error it returned, or its status. */
static natomic_status_t describe_failure(const natomic_ctx_t *ctx, const natomic_method_t *m, natomic_status_t st,
                                         char *type, size_t type_cap, char *text, size_t text_cap)
{
    natomic_status_t kind;
    if (ctx->failed) {
        kind = ctx->fail_kind;
        natomic__copy(type, type_cap, ctx->fail_type);
        natomic__copy(text, text_cap, ctx->fail_message);
    } else if (ctx->has_remote_error && ctx->remote_error.kind == st) {
        kind = st;
        natomic__copy(type, type_cap, ctx->remote_error.type[0] ? ctx->remote_error.type : default_type(st));
        natomic__copy(text, text_cap, ctx->remote_error.message);
    } else {
        kind = st >= NATOMIC_EBADINPUT && st <= NATOMIC_EINTERNAL ? st : NATOMIC_EINTERNAL;
        natomic__copy(type, type_cap, default_type(kind));
        snprintf(text, text_cap, "%s failed: %s", m->name, natomic_strerror(st));
    }
    return kind;
}

/* True when the call's saga log record holds no compensation still to run. */
static bool saga_settled(const natomic_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->rollbacks.count; i++)
        if (natomic__is_comp(&ctx->rollbacks.items[i]) && !ctx->rollbacks.items[i].ended)
            return false;
    return true;
}

/* Sends the reply and stores it for the call's idempotency key. */
static void answer(natomic_service_t *svc, natsMsg *msg, natomic_ctx_t *ctx, const void *data, size_t len,
                   natomic_status_t kind, const char *type, const char *text, natomic_outcome_t rolled,
                   natomic_outcome_t dispatched)
{
    natomic__idem_finish(svc, ctx, kind == NATOMIC_OK ? 0 : natomic_error_code(kind), type, text, rolled, dispatched,
                         data, len);
    natomic__send_reply(svc, msg, ctx->tx, data, len, kind, type, text, rolled, dispatched, false);
}

/* Success: commit (durable), forget the saga, run the dispatch list, reply. */
static void call_succeeded(natomic_service_t *svc, natsMsg *msg, natomic_ctx_t *ctx, natomic_method_t *m,
                           ProtobufCMessage *reply)
{
    size_t len = 0;
    uint8_t *data = natomic__pack(reply, &len);
    natomic__cmdlist_clear(&ctx->rollbacks);
    /* An error here leaves the record as a failed delete would: recovery finds it, reads the
       decision (committed) and only deletes it. A crash leaves it for the restarted process. */
    if (ctx->saga.revision == 0 || NATOMIC_FAULT("natomic/before_saga_delete") != NATOMIC_FAULT_ERROR)
        natomic__saga_delete(ctx); /* committed: recovery would only find the decision and delete it */
    natomic_outcome_t dispatched = run_list(svc, ctx, false);
    if (data != NULL) {
        answer(svc, msg, ctx, data, len, NATOMIC_OK, NULL, NULL, NATOMIC_OUTCOME_NONE, dispatched);
    } else {
        record_error(m, 500, "out of memory packing the reply");
        answer(svc, msg, ctx, NULL, 0, NATOMIC_EINTERNAL, "OutOfMemory", "out of memory packing the reply",
               NATOMIC_OUTCOME_NONE, dispatched);
    }
    free(data);
    natomic__log(NATOMIC_LOG_DEBUG, svc->name, "%s ok (tx %s, dispatch %s)", m->name, ctx->tx,
                 natomic_outcome_name(dispatched));
}

/* Failure: drop the dispatch list, compensate (unless recovery owns the saga), reply the original error. */
static void call_failed(natomic_service_t *svc, natsMsg *msg, natomic_ctx_t *ctx, natomic_method_t *m,
                        natomic_status_t kind, const char *type, const char *text)
{
    bool committed = false;
    if (ctx->committed && ctx->saga.revision != 0 && svc->store != NULL &&
        natomic__decision_abort(svc->store, ctx->call_id, &committed) == NATOMIC_OK && committed) {
        /* The handler failed after its commit went through: the commit stands, nothing is undone. */
        natomic__log(NATOMIC_LOG_ERROR, svc->name,
                     "%s (tx %s) failed after natomic_durable_commit() committed: the commit stands", m->name,
                     ctx->tx);
        natomic__cmdlist_clear(&ctx->rollbacks);
        natomic__saga_delete(ctx);
    }
    if (!committed)
        natomic__cmdlist_clear(&ctx->dispatches);
    natomic_outcome_t rolled = NATOMIC_OUTCOME_NONE;
    if ((m->flags & NATOMIC_ROLLBACK_ONCE_FAILED) && !ctx->saga.lost)
        rolled = run_list(svc, ctx, true);
    natomic_outcome_t dispatched = committed ? run_list(svc, ctx, false) : NATOMIC_OUTCOME_NONE;
    if (ctx->saga.revision != 0 && !ctx->saga.lost && saga_settled(ctx))
        natomic__saga_delete(ctx);
    record_error(m, natomic_error_code(kind), text);
    answer(svc, msg, ctx, NULL, 0, kind, type, text, rolled, dispatched);
    natomic__log(NATOMIC_LOG_DEBUG, svc->name, "%s failed with %s: %s (tx %s, rollback %s)", m->name, type, text,
                 ctx->tx, natomic_outcome_name(rolled));
}

int natomic__parse_deadline(const char *h, int64_t now_ms, int64_t *deadline_ms)
{
    *deadline_ms = 0;
    if (h == NULL)
        return 0;
    char *end = NULL;
    errno = 0;
    long long ms = strtoll(h, &end, 10);
    if (errno != 0 || end == h || *end != '\0')
        return -1;
    if (ms <= 0)
        return 1;
    /* Capped before it is added: any client may send INT64_MAX, and now + that overflows. */
    *deadline_ms = now_ms + (ms < NATOMIC_MAX_BUDGET_MS ? (int64_t)ms : NATOMIC_MAX_BUDGET_MS);
    return 0;
}

/* One call, start to end, on the calling worker thread. `injected`: fail it before the handler. */
/*
 * Whether a reply may go to `reply`: an inbox (one of svc->inbox_prefixes), or no reply at all.
 * A caller chooses the reply subject, and the server checks only what the caller may publish, not
 * where it asks the answer to go: a reply sent to payments.refund would be a refund made with this
 * service's permissions (tests/security shows it). So a call whose reply subject is not an inbox is
 * not run, and not answered.
 */
static bool reply_subject_allowed(const natomic_service_t *svc, const char *reply)
{
    if (reply == NULL || *reply == '\0')
        return true;
    for (const char *p = svc->inbox_prefixes; *p != '\0';) {
        size_t len = strcspn(p, ",");
        if (len > 0 && strncmp(reply, p, len) == 0 && reply[len] != '\0')
            return true;
        p += len;
        if (*p == ',')
            p++;
    }
    return false;
}

static void handle_call(natomic_service_t *svc, natsMsg *msg, bool injected)
{
    if (!reply_subject_allowed(svc, natsMsg_GetReply(msg))) {
        natomic__log(NATOMIC_LOG_WARN, svc->name,
                     "refused a call to %.100s: its reply subject %.100s is not an inbox (%s); nothing was run",
                     natsMsg_GetSubject(msg), natsMsg_GetReply(msg), svc->inbox_prefixes);
        return;
    }
    trace(svc, "call", msg, NULL, natomic__wall_ns());
    const char *subject = natsMsg_GetSubject(msg);
    const char *name = subject + strlen(svc->name) + 1; /* the subscription guarantees "<name>." */
    natomic_method_t *m = find_method(svc, name);
    if (m == NULL) {
        atomic_fetch_add(&svc->unknown_method, 1);
        char text[256];
        snprintf(text, sizeof text, "service %s has no method '%.100s'", svc->name, name);
        natomic__log(NATOMIC_LOG_WARN, svc->name, "%s", text);
        const char *tx = natomic__header(msg, NATOMIC_HDR_TX);
        char new_tx[NATOMIC_ID_LEN + 1];
        if (!natomic__usable_id(tx, NATOMIC_ID_LEN + 1 + 32)) {
            natomic__id_new(new_tx);
            tx = new_tx;
        }
        natomic__send_reply(svc, msg, tx, NULL, 0, NATOMIC_ENOMETHOD, "UnknownMethod", text, NATOMIC_OUTCOME_NONE,
                            NATOMIC_OUTCOME_NONE, false);
        return;
    }
    int64_t t0 = natomic__wall_ns();
    atomic_fetch_add(&m->num_requests, 1);

    natomic_ctx_t ctx;
    natomic__ctx_init(&ctx, svc, svc->nc, svc->name, m->name, m->flags);
    const char *h = natomic__header(msg, NATOMIC_HDR_TX);
    if (natomic__usable_id(h, sizeof ctx.tx))
        natomic__copy(ctx.tx, sizeof ctx.tx, h);
    h = natomic__header(msg, NATOMIC_HDR_CALL_ID);
    if (natomic__usable_id(h, sizeof ctx.parent_id))
        natomic__copy(ctx.parent_id, sizeof ctx.parent_id, h);
    h = natomic__header(msg, NATOMIC_HDR_CALL_CHAIN);
    if (h != NULL && strlen(h) < sizeof ctx.chain)
        natomic__copy(ctx.chain, sizeof ctx.chain, h);

    natomic_status_t kind = NATOMIC_OK;
    char type[64] = "", text[256] = "";
    ProtobufCMessage *request = NULL, *reply = NULL;

    h = natomic__header(msg, NATOMIC_HDR_DEADLINE_MS);
    int deadline = natomic__parse_deadline(h, natomic__now_ms(), &ctx.deadline_ms);
    if (deadline < 0) {
        kind = NATOMIC_EBADINPUT;
        natomic__copy(type, sizeof type, "BadRequest");
        snprintf(text, sizeof text, "header %s is not a number of milliseconds", NATOMIC_HDR_DEADLINE_MS);
    } else if (deadline > 0) {
        kind = NATOMIC_ETIMEOUT;
        natomic__copy(type, sizeof type, "DeadlineExceeded");
        snprintf(text, sizeof text, "the caller's deadline passed before %s started", m->subject);
    }
    if (kind == NATOMIC_OK) {
        request = protobuf_c_message_unpack(m->request_desc, NULL, (size_t)natsMsg_GetDataLength(msg),
                                            (const uint8_t *)natsMsg_GetData(msg));
        if (request == NULL) {
            kind = NATOMIC_EBADINPUT;
            natomic__copy(type, sizeof type, "MalformedPayload");
            snprintf(text, sizeof text, "payload of %d bytes is not a valid %s", natsMsg_GetDataLength(msg),
                     m->request_desc->name);
        }
    }
    if (kind == NATOMIC_OK) {
        reply = calloc(1, m->reply_desc->sizeof_message);
        if (reply == NULL) {
            kind = NATOMIC_EINTERNAL;
            natomic__copy(type, sizeof type, "OutOfMemory");
            natomic__copy(text, sizeof text, "out of memory");
        } else {
            m->reply_desc->message_init(reply);
            ctx.reply = reply;
        }
    }
    if (kind != NATOMIC_OK) {
        /* Refused before the handler: nothing to roll back or dispatch, nothing worth replaying. */
        natomic__log(NATOMIC_LOG_WARN, svc->name, "%s refused: %s", m->name, text);
        record_error(m, natomic_error_code(kind), text);
        natomic__send_reply(svc, msg, ctx.tx, NULL, 0, kind, type, text, NATOMIC_OUTCOME_NONE, NATOMIC_OUTCOME_NONE,
                            false);
        goto done;
    }
    /* A repeated idempotency key is answered from what is stored, and nothing runs. */
    if (natomic__idem_begin(svc, &ctx, msg) == NATOMIC_IDEM_ANSWERED)
        goto done;

    natomic_status_t st = injected ? natomic_fail(&ctx, NATOMIC_ETRANSIENT, "InjectedFault",
                                                  "fault point natomic/before_handler")
                                   : m->handler(&ctx, request, reply, m->closure);
    /* What fails after a handler that succeeded is what is left to do: the runtime's commit.
       A durable call whose handler committed itself (natomic_durable_commit) has none left --
       its data, its events and its decision are in -- so the point is not even checked. */
    if (st == NATOMIC_OK && !ctx.committed && NATOMIC_FAULT("natomic/after_handler") == NATOMIC_FAULT_ERROR)
        st = natomic_fail(&ctx, NATOMIC_ETRANSIENT, "InjectedFault", "fault point natomic/after_handler");
    if (st == NATOMIC_OK) {
        /* Durable: the decision, the outbox and the key commit now, if the handler did not. */
        st = natomic__durable_autocommit(&ctx);
        if (st == NATOMIC_ENOTOWNER) {
            /* Recovery decided to compensate while we were slow: it runs the rollback, not us. */
            ctx.saga.lost = true;
            st = natomic_fail(&ctx, NATOMIC_ETRANSIENT, "TakenOver",
                              "%s: the saga was taken over by recovery, which compensates it", m->name);
        } else if (st != NATOMIC_OK) {
            st = natomic_fail(&ctx, NATOMIC_ETRANSIENT, "StorageError", "%s: cannot commit: %s", m->name,
                              natomic_strerror(st));
        }
    }
    if (st == NATOMIC_OK) {
        call_succeeded(svc, msg, &ctx, m, reply);
    } else {
        kind = describe_failure(&ctx, m, st, type, sizeof type, text, sizeof text);
        call_failed(svc, msg, &ctx, m, kind, type, text);
    }

done:
    if (ctx.saga.revision != 0 || ctx.saga.started_ns != 0)
        natomic__inflight_remove(svc, ctx.call_id);
    if (reply != NULL) {
        /* The reply shell is ours; what its fields point to is the handler's (arena). */
        free(reply);
    }
    protobuf_c_message_free_unpacked(request, NULL);
    natomic__ctx_release(&ctx);
    atomic_fetch_add(&m->processing_ns, (uint64_t)(natomic__wall_ns() - t0));
}

/* $NATOMIC.FAULTS.<name>: a fault list to apply now (NATOMIC_FAULT_CONTROL=1 only). */
static void on_fault_control(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    natomic_service_t *svc = closure;
    char spec[2048], err[256] = "";
    int len = natsMsg_GetDataLength(msg);
    if (len < 0 || (size_t)len >= sizeof spec) {
        snprintf(err, sizeof err, "fault list longer than %zu bytes", sizeof spec - 1);
    } else {
        memcpy(spec, natsMsg_GetData(msg), (size_t)len);
        spec[len] = '\0';
        natomic__log(NATOMIC_LOG_INFO, svc->name, "fault control: %s", spec);
        if (natomic_faults_apply(spec, err, sizeof err) == NATOMIC_OK)
            snprintf(err, sizeof err, "ok");
    }
    if (natsMsg_GetReply(msg) != NULL)
        natsConnection_PublishString(nc, natsMsg_GetReply(msg), err);
    natsMsg_Destroy(msg);
    (void)sub;
}

static void *worker_main(void *arg)
{
    natomic_service_t *svc = arg;
    natomic__fault_bind_thread(svc); /* its fault point hits are this service's (fault.c) */
    for (;;) {
        natsMsg *msg = NULL;
        natsStatus s = natsSubscription_NextMsg(&msg, svc->sub, POLL_MS);
        if (s == NATS_TIMEOUT) {
            if (atomic_load(&svc->stopping) && natsSubscription_DrainCompletionStatus(svc->sub) != NATS_ILLEGAL_STATE)
                break;
            continue;
        }
        if (s != NATS_OK)
            break; /* drained, closed, or the connection is gone */
        natomic_fault_t f = NATOMIC_FAULT("natomic/before_handler");
        if (f != NATOMIC_FAULT_DROP)
            handle_call(svc, msg, f == NATOMIC_FAULT_ERROR);
        if (f == NATOMIC_FAULT_DUPLICATE)
            handle_call(svc, msg, false); /* a redelivery: same request, handled again */
        natsMsg_Destroy(msg);
    }
    return NULL;
}

static void format_rfc3339(char *buf, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%09ldZ", ts.tv_nsec % 1000000000L);
}

NATOMIC_API natomic_status_t natomic_service_start(natomic_service_t *svc)
{
    if (svc == NULL)
        return NATOMIC_EINVAL;
    pthread_mutex_lock(&svc->mu);
    if (svc->started) {
        pthread_mutex_unlock(&svc->mu);
        return NATOMIC_ESTATE;
    }
    if (natomic_faults_setup() != NATOMIC_OK) {
        pthread_mutex_unlock(&svc->mu);
        return NATOMIC_EINVAL; /* a bad NATOMIC_FAULTS: refuse to run a different experiment */
    }
    /* From here the fault trace knows our name and connection: durable start may hit points. */
    natomic__fault_attach(svc);
    /* Durable mode's ground first: JetStream, buckets, stream, tables, lease. Nothing is
       visible to callers before it stands. */
    natomic_status_t st = natomic__durable_start(svc);
    if (st == NATOMIC_OK)
        st = natomic__idem_open(svc);
    char subject[160];
    snprintf(subject, sizeof subject, "%s.>", svc->name);
    natsStatus s = NATS_OK;
    if (st == NATOMIC_OK) {
        s = natsConnection_QueueSubscribeSync(&svc->sub, svc->nc, subject, svc->name);
        if (s == NATS_OK)
            s = natsSubscription_SetPendingLimits(svc->sub, -1, -1);
        if (s != NATS_OK) {
            natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot subscribe to %s: %s", subject, natsStatus_GetText(s));
            natsSubscription_Destroy(svc->sub);
            svc->sub = NULL;
            st = NATOMIC_ENATS;
        }
    }
    if (st != NATOMIC_OK) {
        natomic__idem_close(svc);
        natomic__durable_stop(svc);
        pthread_mutex_unlock(&svc->mu);
        return st;
    }
    const char *trace_env = getenv("NATOMIC_TRACE");
    svc->trace = trace_env != NULL && strcmp(trace_env, "1") == 0;
    const char *inboxes = getenv("NATOMIC_INBOX_PREFIXES");
    natomic__copy(svc->inbox_prefixes, sizeof svc->inbox_prefixes,
                  inboxes != NULL && *inboxes != '\0' ? inboxes : NATOMIC_DEFAULT_INBOX_PREFIX);
    const char *control = getenv("NATOMIC_FAULT_CONTROL");
    if (st == NATOMIC_OK && control != NULL && strcmp(control, "1") == 0) {
        char fsubject[200];
        snprintf(fsubject, sizeof fsubject, "$NATOMIC.FAULTS.%s", svc->name);
        if (natsConnection_Subscribe(&svc->fault_control, svc->nc, fsubject, on_fault_control, svc) != NATS_OK)
            st = NATOMIC_ENATS;
        /* ... and one instance alone, by its name: $NATOMIC.FAULTS.<service>.<instance>. */
        snprintf(fsubject, sizeof fsubject, "$NATOMIC.FAULTS.%s.%s", svc->name, svc->instance);
        if (st == NATOMIC_OK &&
            natsConnection_Subscribe(&svc->fault_control_instance, svc->nc, fsubject, on_fault_control, svc) !=
                NATS_OK)
            st = NATOMIC_ENATS;
    }
    if (st == NATOMIC_OK)
        st = natomic__event_consumers_start(svc);
    svc->workers = calloc((size_t)svc->max_workers, sizeof *svc->workers);
    if (st == NATOMIC_OK && svc->workers == NULL)
        st = NATOMIC_ENOMEM;
    for (int i = 0; st == NATOMIC_OK && i < svc->max_workers; i++) {
        if (pthread_create(&svc->workers[i], NULL, worker_main, svc) != 0)
            st = NATOMIC_ENOMEM;
        else
            svc->n_workers++;
    }
    /* Recovery rounds (durable) and sweeps: the first round runs at once. */
    if (st == NATOMIC_OK)
        st = natomic__housekeeping_start(svc);
    /* Discovery last: a service answers $SRV.PING only when it is ready for everything it does,
     * its event consumers included (on a cluster making one can take seconds). */
    if (st == NATOMIC_OK)
        st = natomic__discovery_start(svc);
    format_rfc3339(svc->started_at, sizeof svc->started_at);
    svc->started = true;
    /* Make sure the server knows the subscription before anyone is told we are up. */
    if (st == NATOMIC_OK && natsConnection_FlushTimeout(svc->nc, 5000) != NATS_OK)
        st = NATOMIC_ENATS;
    pthread_mutex_unlock(&svc->mu);
    if (st != NATOMIC_OK) {
        natomic_service_stop(svc);
        return st;
    }
    natomic__log(NATOMIC_LOG_INFO, svc->name, "service %s %s started (id %s, %zu methods, %d workers, %s mode)",
                 svc->name, svc->version, svc->id, svc->n_methods, svc->max_workers, natomic_mode_name(svc->mode));
    return NATOMIC_OK;
}

NATOMIC_API natomic_status_t natomic_service_stop(natomic_service_t *svc)
{
    if (svc == NULL)
        return NATOMIC_EINVAL;
    pthread_mutex_lock(&svc->mu);
    if (!svc->started || svc->stopped) {
        pthread_mutex_unlock(&svc->mu);
        return NATOMIC_OK;
    }
    natomic__discovery_stop(svc);
    natsSubscription **controls[] = {&svc->fault_control, &svc->fault_control_instance};
    for (size_t i = 0; i < sizeof controls / sizeof controls[0]; i++) {
        if (*controls[i] == NULL)
            continue;
        if (natsSubscription_Drain(*controls[i]) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(*controls[i], 5000);
        natsSubscription_Destroy(*controls[i]);
        *controls[i] = NULL;
    }
    /* Events first: their handlers may still be running (nats.c's threads, or our fetch loops). */
    natomic__event_consumers_stop(svc);
    /* Drain: the server stops sending, what is pending is still handled. */
    natsStatus s = natsSubscription_DrainTimeout(svc->sub, DRAIN_TIMEOUT_MS);
    atomic_store(&svc->stopping, true);
    if (s != NATS_OK)
        natsSubscription_Unsubscribe(svc->sub);
    for (int i = 0; i < svc->n_workers; i++)
        pthread_join(svc->workers[i], NULL);
    svc->n_workers = 0;
    natsSubscription_Destroy(svc->sub);
    svc->sub = NULL;
    /* No call runs any more: recovery and sweeps stop, then the lease goes (durable.c). */
    natomic__housekeeping_stop(svc);
    natomic__durable_stop(svc);
    natomic__idem_close(svc);
    natomic__fault_detach(svc);
    natsConnection_FlushTimeout(svc->nc, 2000); /* replies, events and fault traces of the last calls */
    svc->stopped = true;
    pthread_mutex_unlock(&svc->mu);
    natomic__log(NATOMIC_LOG_INFO, svc->name, "service %s stopped", svc->name);
    return NATOMIC_OK;
}

/* Signals for natomic_service_run() go through one process-wide pipe. */
static int signal_pipe[2] = {-1, -1};
static pthread_once_t signal_pipe_once = PTHREAD_ONCE_INIT;

static void make_signal_pipe(void)
{
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        signal_pipe[0] = signal_pipe[1] = -1;
}

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (signal_pipe[1] >= 0 && write(signal_pipe[1], &b, 1) < 0) {
        /* nothing to do in a signal handler */
    }
    errno = saved;
}

NATOMIC_API void natomic_service_request_stop(natomic_service_t *svc)
{
    if (svc == NULL || svc->stop_pipe[1] < 0)
        return;
    int saved = errno;
    unsigned char b = 1;
    if (write(svc->stop_pipe[1], &b, 1) < 0) {
        /* full pipe: a stop is already pending */
    }
    errno = saved;
}

NATOMIC_API natomic_status_t natomic_service_run(natomic_service_t *svc)
{
    if (svc == NULL)
        return NATOMIC_EINVAL;
    /* Handlers first: a SIGTERM as soon as the service is visible must still drain. */
    pthread_once(&signal_pipe_once, make_signal_pipe);
    struct sigaction sa, old_term, old_int;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);
    if (!svc->started) {
        natomic_status_t st = natomic_service_start(svc);
        if (st != NATOMIC_OK) {
            sigaction(SIGTERM, &old_term, NULL);
            sigaction(SIGINT, &old_int, NULL);
            return st;
        }
    }

    struct pollfd fds[2] = {{.fd = svc->stop_pipe[0], .events = POLLIN}, {.fd = signal_pipe[0], .events = POLLIN}};
    int why = 0;
    while (why == 0) {
        int n = poll(fds, signal_pipe[0] >= 0 ? 2 : 1, 1000);
        if (n < 0 && errno != EINTR)
            break;
        unsigned char b;
        if (n > 0 && (fds[0].revents & POLLIN) && read(svc->stop_pipe[0], &b, 1) == 1)
            why = -1;
        if (n > 0 && (fds[1].revents & POLLIN) && read(signal_pipe[0], &b, 1) == 1)
            why = b;
    }
    if (why > 0)
        natomic__log(NATOMIC_LOG_INFO, svc->name, "%s received: finishing calls in flight", strsignal(why));
    natomic_status_t st = natomic_service_stop(svc);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    return st;
}

NATOMIC_API void natomic_service_destroy(natomic_service_t *svc)
{
    if (svc == NULL)
        return;
    natomic_service_stop(svc);
    natomic__fault_detach(svc); /* also after a start that failed before it started */
    for (size_t i = 0; i < svc->n_methods; i++) {
        free(svc->methods[i].name);
        free(svc->methods[i].subject);
        pthread_mutex_destroy(&svc->methods[i].last_error_mu);
    }
    free(svc->methods);
    for (size_t i = 0; i < svc->n_event_subs; i++)
        free(svc->event_subs[i].subject);
    free(svc->event_subs);
    natomic__registry_free(svc);
    natomic__barrier_forget(svc);
    pthread_mutex_destroy(&svc->housekeeping_mu);
    pthread_cond_destroy(&svc->housekeeping_cond);
    free(svc->workers);
    for (int i = 0; i < 2; i++)
        if (svc->stop_pipe[i] >= 0)
            close(svc->stop_pipe[i]);
    pthread_mutex_destroy(&svc->mu);
    free(svc->name);
    free(svc->version);
    free(svc->description);
    free(svc);
}

NATOMIC_API const char *natomic_service_name(const natomic_service_t *svc)
{
    return svc != NULL ? svc->name : "";
}

NATOMIC_API const char *natomic_service_id(const natomic_service_t *svc)
{
    return svc != NULL ? svc->id : "";
}

NATOMIC_API natomic_status_t natomic_service_get_stats(natomic_service_stats_t *out, const natomic_service_t *svc)
{
    if (out == NULL || svc == NULL)
        return NATOMIC_EINVAL;
    natomic_service_stats_t s = {0};
    for (size_t i = 0; i < svc->n_methods; i++) {
        s.requests += atomic_load(&svc->methods[i].num_requests);
        s.errors += atomic_load(&svc->methods[i].num_errors);
    }
    s.requests += atomic_load(&svc->unknown_method);
    s.errors += atomic_load(&svc->unknown_method);
    s.rollbacks_run = atomic_load(&svc->rollbacks_run);
    s.rollbacks_exhausted = atomic_load(&svc->rollbacks_exhausted);
    s.dispatches_run = atomic_load(&svc->dispatches_run);
    s.dispatches_exhausted = atomic_load(&svc->dispatches_exhausted);
    s.retries = atomic_load(&svc->retries);
    s.dead_letters = s.rollbacks_exhausted + s.dispatches_exhausted;
    s.events_handled = atomic_load(&svc->events_handled);
    s.events_failed = atomic_load(&svc->events_failed);
    for (int i = 0; i < NATOMIC_BARRIER_OUTCOME_COUNT_; i++)
        s.barrier[i] = atomic_load(&svc->barrier[i]);
    s.sagas_logged = atomic_load(&svc->sagas_logged);
    s.log_failures = atomic_load(&svc->log_failures);
    s.sagas_recovered = atomic_load(&svc->sagas_recovered);
    s.outbox_relayed = atomic_load(&svc->outbox_relayed);
    s.idempotent_replays = atomic_load(&svc->idempotent_replays);
    *out = s;
    return NATOMIC_OK;
}
