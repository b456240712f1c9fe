/*
 * events.c -- commands that talk to NATS: publishing an event after
 * commit, calling a compensation in another service, and dead letters.
 *
 * An event is packed when it is registered, so the handler's message can
 * be freed at once, and gets its id then: every retry publishes the same
 * id (`Natomic-Event-Id`, and `Nats-Msg-Id` for JetStream's duplicate
 * window), so a consumer can drop the copies a retry may produce.
 *
 * In durable mode an event takes the outbox's way instead
 * (natomic_durable_commit wrote it into the store with the business
 * change): the dispatch command publishes it to the EVENTS stream, waits
 * for the ack, then deletes its row; one that cannot be published is not
 * dead-lettered but left to the relay (outbox.c).
 *
 * A compensation is a request to another service (natomic_rollback_request,
 * the saga step) or a named command of this one (natomic_rollback_append_
 * durable): both are a natomic_comp_t run by natomic__comp_run, which is
 * what the saga log can write down and recovery can rebuild.
 *
 * A dead letter is a JSON document on "natomic.deadletter.<service>":
 * one per command that failed every attempt, with the transaction, the
 * call, the command's name and the last error. It is also logged at error
 * level, so nothing is lost even with no subscriber.
 */
#include "natomic_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPENSATION_TIMEOUT_MS 5000
#define MAX_DURABLE_PAYLOAD (64 * 1024)

static void event_free(void *p)
{
    natomic_event_t *e = p;
    if (e != NULL)
        free(e->data);
    free(e);
}

static natomic_status_t publish_event(natomic_ctx_t *ctx, void *arg)
{
    natomic_event_t *e = arg;
    if (ctx->nc == NULL)
        return NATOMIC_ESTATE;
    if (ctx->svc != NULL && natomic__durable(ctx->svc)) {
        natomic_status_t st = natomic__outbox_publish(ctx->svc, ctx, e, ctx->tx, ctx->call_id);
        if (st == NATOMIC_OK)
            natomic__outbox_delete(ctx->svc, e->event_id);
        return st;
    }
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, e->subject, NULL, (const char *)e->data, (int)e->len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_TX, ctx->tx);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_CALL_ID, ctx->call_id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_EVENT_ID, e->event_id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_EVENT_TYPE, e->type);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Msg-Id", e->event_id);
    natomic_fault_t f = NATOMIC_FAULT("natomic/event_publish");
    if (s == NATS_OK && f == NATOMIC_FAULT_ERROR)
        s = NATS_CONNECTION_CLOSED;
    if (s == NATS_OK && f != NATOMIC_FAULT_DROP) /* DROP: lost on the way, reported sent */
        s = natsConnection_PublishMsg(ctx->nc, m);
    if (s == NATS_OK && f == NATOMIC_FAULT_DUPLICATE)
        s = natsConnection_PublishMsg(ctx->nc, m); /* same event id: consumers must dedupe */
    natsMsg_Destroy(m);
    return s == NATS_OK ? NATOMIC_OK : NATOMIC_ENATS;
}

const natomic_event_t *natomic__event_of(const natomic_command_t *cmd)
{
    return cmd != NULL && cmd->fn == publish_event ? cmd->arg : NULL;
}

static bool valid_token(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++)
        if (*s == '.' || *s == '*' || *s == '>' || *s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
            return false;
    return true;
}

NATOMIC_API natomic_status_t natomic_dispatch_event(natomic_ctx_t *ctx, const char *type,
                                                    const ProtobufCMessage *event)
{
    if (ctx == NULL || !valid_token(type) || strlen(type) >= sizeof((natomic_event_t *)0)->type || event == NULL ||
        event->descriptor == NULL)
        return NATOMIC_EINVAL;
    if ((ctx->flags & NATOMIC_DISPATCH_AFTER_COMMIT) == 0)
        return natomic_dispatch_append(ctx, type, publish_event, NULL, NULL); /* reports ENOTENABLED */
    if (ctx->committed)
        return NATOMIC_ESTATE; /* the outbox was written: a later event would be lost in a crash */
    natomic_event_t *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NATOMIC_ENOMEM;
    snprintf(e->subject, sizeof e->subject, NATOMIC_EVENTS_PREFIX ".%s.%s", ctx->service_name, type);
    natomic__copy(e->type, sizeof e->type, type);
    natomic__id_new(e->event_id);
    e->data = natomic__pack(event, &e->len);
    if (e->data == NULL) {
        free(e);
        return NATOMIC_ENOMEM;
    }
    char name[96];
    snprintf(name, sizeof name, "publish %s", type);
    return natomic_dispatch_append(ctx, name, publish_event, e, event_free);
}

/* ---- compensations ------------------------------------------------------ */

natomic_comp_t *natomic__comp_new(natomic_comp_kind_t kind, const char *target, const char *branch,
                                  const void *data, size_t len)
{
    natomic_comp_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->kind = kind;
    natomic__copy(kind == NATOMIC_COMP_REMOTE ? c->subject : c->command,
                  kind == NATOMIC_COMP_REMOTE ? sizeof c->subject : sizeof c->command, target);
    natomic__copy(c->branch, sizeof c->branch, branch);
    c->data = malloc(len > 0 ? len : 1);
    if (c->data == NULL) {
        free(c);
        return NULL;
    }
    if (len > 0)
        memcpy(c->data, data, len);
    c->len = len;
    return c;
}

void natomic__comp_free(void *p)
{
    natomic_comp_t *c = p;
    if (c != NULL)
        free(c->data);
    free(c);
}

/* Calls the compensation; OK only on a success reply. */
static natomic_status_t call_remote(natomic_ctx_t *ctx, const natomic_comp_t *c)
{
    if (ctx->nc == NULL)
        return NATOMIC_ESTATE;
    natsMsg *reply = NULL;
    /* A compensation runs whatever the call's deadline: it often runs because the deadline passed. */
    natomic_status_t st = natomic__request_bytes(&reply, ctx->nc, ctx, c->subject, c->data, c->len,
                                                 COMPENSATION_TIMEOUT_MS, c->branch);
    if (st != NATOMIC_OK)
        return st;
    natomic_call_info_t info;
    if (natomic__read_reply_headers(reply, &info)) {
        natomic__log(NATOMIC_LOG_WARN, ctx->service_name, "compensation %s answered %d %s: %s", c->subject,
                     info.code, info.type, info.message);
        st = info.kind;
    }
    natsMsg_Destroy(reply);
    return st;
}

natomic_status_t natomic__comp_run(natomic_ctx_t *ctx, void *arg)
{
    natomic_comp_t *c = arg;
    if (c->kind == NATOMIC_COMP_REMOTE)
        return call_remote(ctx, c);
    const natomic_named_command_t *named = natomic__registry_find(ctx->svc, c->command);
    if (named == NULL) {
        natomic__log(NATOMIC_LOG_ERROR, ctx->service_name, "no command is registered as '%s' (tx %s)", c->command,
                     ctx->tx);
        return NATOMIC_EINVAL;
    }
    return named->fn(ctx, c->data, c->len, named->closure);
}

bool natomic__is_comp(const natomic_command_t *cmd)
{
    return cmd != NULL && cmd->fn == natomic__comp_run && cmd->arg != NULL;
}

/*
 * Inserts the compensation at index and, in durable mode, writes the saga
 * log before returning. On failure nothing stays registered.
 */
static natomic_status_t register_comp(natomic_ctx_t *ctx, size_t index, const char *name, natomic_comp_t *c)
{
    if (c == NULL)
        return NATOMIC_ENOMEM;
    natomic_status_t st = natomic_rollback_insert(ctx, index, name, natomic__comp_run, c, natomic__comp_free);
    if (st != NATOMIC_OK)
        return st; /* c was freed */
    return natomic__saga_logged_insert(ctx, index);
}

natomic_status_t natomic__rollback_request_branch(natomic_ctx_t *ctx, const char *subject,
                                                  const ProtobufCMessage *request, const char *branch)
{
    if (ctx == NULL || subject == NULL || *subject == '\0' || strlen(subject) >= sizeof((natomic_comp_t *)0)->subject ||
        request == NULL || request->descriptor == NULL)
        return NATOMIC_EINVAL;
    if ((ctx->flags & NATOMIC_ROLLBACK_ONCE_FAILED) == 0)
        return natomic_rollback_append(ctx, subject, natomic__comp_run, NULL, NULL); /* reports ENOTENABLED */
    size_t len = 0;
    uint8_t *data = natomic__pack(request, &len);
    if (data == NULL)
        return NATOMIC_ENOMEM;
    natomic_comp_t *c = natomic__comp_new(NATOMIC_COMP_REMOTE, subject, branch, data, len);
    free(data);
    char name[300];
    snprintf(name, sizeof name, "call %s", subject);
    return register_comp(ctx, ctx->rollbacks.count, name, c);
}

NATOMIC_API natomic_status_t natomic_rollback_request(natomic_ctx_t *ctx, const char *subject,
                                                      const ProtobufCMessage *request)
{
    return natomic__rollback_request_branch(ctx, subject, request, "");
}

NATOMIC_API natomic_status_t natomic_rollback_insert_durable(natomic_ctx_t *ctx, size_t index, const char *name,
                                                             const void *data, size_t len)
{
    if (ctx == NULL || name == NULL || (data == NULL && len > 0) || len > MAX_DURABLE_PAYLOAD)
        return NATOMIC_EINVAL;
    if (natomic__registry_find(ctx->svc, name) == NULL) {
        natomic__log(NATOMIC_LOG_WARN, ctx->service_name, "%s: no command is registered as '%s'", ctx->method_name,
                     name);
        return NATOMIC_EINVAL;
    }
    if ((ctx->flags & NATOMIC_ROLLBACK_ONCE_FAILED) == 0)
        return natomic_rollback_append(ctx, name, natomic__comp_run, NULL, NULL); /* reports ENOTENABLED */
    if (index > ctx->rollbacks.count)
        return NATOMIC_EINVAL;
    return register_comp(ctx, index, name, natomic__comp_new(NATOMIC_COMP_LOCAL, name, "", data, len));
}

NATOMIC_API natomic_status_t natomic_rollback_append_durable(natomic_ctx_t *ctx, const char *name, const void *data,
                                                             size_t len)
{
    return natomic_rollback_insert_durable(ctx, ctx != NULL ? ctx->rollbacks.count : 0, name, data, len);
}

void natomic__dead_letter(natomic_ctx_t *ctx, const char *list_kind, const natomic_command_t *cmd, int attempts,
                          natomic_status_t last, void *user)
{
    (void)user;
    natomic__log(NATOMIC_LOG_ERROR, ctx->service_name,
                 "DEAD LETTER: %s command '%s' of %s (tx %s, call %s) failed %d times, last: %s", list_kind,
                 cmd->name, ctx->method_name, ctx->tx, ctx->call_id, attempts, natomic_status_name(last));
    if (ctx->nc == NULL)
        return;
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:I}", "service", ctx->service_name,
                            "method", ctx->method_name, "tx", ctx->tx, "call_id", ctx->call_id, "list", list_kind,
                            "command", cmd->name, "attempts", attempts, "error", natomic_status_name(last),
                            "error_text", natomic_strerror(last), "time_ns", (json_int_t)natomic__wall_ns());
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return;
    char subject[256];
    snprintf(subject, sizeof subject, NATOMIC_DEADLETTER_PREFIX ".%s", ctx->service_name);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, text, (int)strlen(text));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_TX, ctx->tx);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(ctx->nc, m);
    if (s != NATS_OK)
        natomic__log(NATOMIC_LOG_ERROR, ctx->service_name, "could not publish the dead letter: %s",
                     natsStatus_GetText(s));
    natsMsg_Destroy(m);
    free(text);
}
