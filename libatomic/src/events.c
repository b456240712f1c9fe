/*
 * events.c -- publishing an event after commit, and dead letters.
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
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)natomic__wall_ns());
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_TIME_NS, now);
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
