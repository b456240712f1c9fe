/*
 * events.c -- commands that talk to NATS: publishing an event after
 * commit, calling a compensation in another service, and dead letters.
 *
 * An event is packed when it is registered, so the handler's message can
 * be freed at once, and gets its id then: every retry publishes the same
 * id (`Natomic-Event-Id`, and `Nats-Msg-Id` for JetStream's duplicate
 * window), so a consumer can drop the copies a retry may produce.
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

typedef struct event_cmd {
    char subject[256];
    char type[64];
    char event_id[NATOMIC_ID_LEN + 1];
    uint8_t *data;
    size_t len;
} event_cmd_t;

static void event_cmd_free(void *p)
{
    event_cmd_t *e = p;
    if (e != NULL)
        free(e->data);
    free(e);
}

static natomic_status_t publish_event(natomic_ctx_t *ctx, void *arg)
{
    event_cmd_t *e = arg;
    if (ctx->nc == NULL)
        return NATOMIC_ESTATE;
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
    if (ctx == NULL || !valid_token(type) || strlen(type) >= sizeof((event_cmd_t *)0)->type || event == NULL ||
        event->descriptor == NULL)
        return NATOMIC_EINVAL;
    if ((ctx->flags & NATOMIC_DISPATCH_AFTER_COMMIT) == 0)
        return natomic_dispatch_append(ctx, type, publish_event, NULL, NULL); /* reports ENOTENABLED */
    event_cmd_t *e = calloc(1, sizeof *e);
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
    return natomic_dispatch_append(ctx, name, publish_event, e, event_cmd_free);
}

typedef struct remote_cmd {
    char subject[256];
    uint8_t *data;
    size_t len;
} remote_cmd_t;

static void remote_cmd_free(void *p)
{
    remote_cmd_t *r = p;
    if (r != NULL)
        free(r->data);
    free(r);
}

/* Calls the compensation; OK only on a success reply. */
static natomic_status_t call_remote(natomic_ctx_t *ctx, void *arg)
{
    remote_cmd_t *r = arg;
    if (ctx->nc == NULL)
        return NATOMIC_ESTATE;
    natsMsg *reply = NULL;
    /* A compensation runs whatever the call's deadline: it often runs because the deadline passed. */
    natomic_status_t st =
        natomic__request_bytes(&reply, ctx->nc, ctx, r->subject, r->data, r->len, COMPENSATION_TIMEOUT_MS);
    if (st != NATOMIC_OK)
        return st;
    natomic_call_info_t info;
    if (natomic__read_reply_headers(reply, &info)) {
        natomic__log(NATOMIC_LOG_WARN, ctx->service_name, "compensation %s answered %d %s: %s", r->subject,
                     info.code, info.type, info.message);
        st = info.kind;
    }
    natsMsg_Destroy(reply);
    return st;
}

NATOMIC_API natomic_status_t natomic_rollback_request(natomic_ctx_t *ctx, const char *subject,
                                                      const ProtobufCMessage *request)
{
    if (ctx == NULL || subject == NULL || *subject == '\0' || strlen(subject) >= sizeof((remote_cmd_t *)0)->subject ||
        request == NULL || request->descriptor == NULL)
        return NATOMIC_EINVAL;
    if ((ctx->flags & NATOMIC_ROLLBACK_ONCE_FAILED) == 0)
        return natomic_rollback_append(ctx, subject, call_remote, NULL, NULL); /* reports ENOTENABLED */
    remote_cmd_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NATOMIC_ENOMEM;
    natomic__copy(r->subject, sizeof r->subject, subject);
    r->data = natomic__pack(request, &r->len);
    if (r->data == NULL) {
        free(r);
        return NATOMIC_ENOMEM;
    }
    char name[300];
    snprintf(name, sizeof name, "call %s", subject);
    return natomic_rollback_append(ctx, name, call_remote, r, remote_cmd_free);
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
