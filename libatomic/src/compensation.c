/*
 * compensation.c -- compensations, and the saga step that registers them.
 *
 * A compensation undoes a step of a call. It is one of two things:
 *   - a request to another service (natomic_rollback_request): the
 *     subject and the request packed when it is registered, sent inside
 *     the call's transaction with Natomic-Phase: rollback -- it succeeds
 *     only on a success reply, an error reply is a failure to retry;
 *   - a named command of this service (natomic_rollback_append_durable):
 *     a registered function and a byte payload.
 * Both are a natomic_comp_t run by natomic__comp_run: data, not code, so
 * that the saga log (saga_log.c) can write it down before its step leaves
 * and recovery (recovery.c) can rebuild it in another process.
 *
 * The saga step (natomic_saga_step) is "reserve, and if anything later
 * fails, release": the compensation is registered -- in durable mode,
 * logged -- BEFORE the forward request is sent, because a request that
 * times out may have run. Both carry the same Natomic-Branch (the step's
 * number). Only when nobody received the request (no responders) is the
 * compensation taken back: that action certainly did not run.
 *
 * Dependencies run one way: this file uses rpc.c (requests) and
 * saga_log.c (the log); neither calls back here.
 */
#include "natomic_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPENSATION_TIMEOUT_MS 5000
#define MAX_DURABLE_PAYLOAD (64 * 1024)

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

/* ---- the saga step ------------------------------------------------------- */

NATOMIC_API natomic_status_t natomic_saga_step(ProtobufCMessage **reply, natomic_ctx_t *ctx, const char *subject,
                                               const ProtobufCMessage *request,
                                               const ProtobufCMessageDescriptor *reply_desc,
                                               const char *compensation_subject,
                                               const ProtobufCMessage *compensation_request,
                                               natomic_call_info_t *info)
{
    natomic_status_t st = NATOMIC_EINVAL;
    char branch[16] = "";
    if (reply != NULL && ctx != NULL && subject != NULL && request != NULL && reply_desc != NULL) {
        /* Compensation first: once the request is sent, its effect is possible. In
           durable mode it is in the saga log before the request leaves. */
        snprintf(branch, sizeof branch, "%02zu", ctx->rollbacks.count + 1);
        st = natomic__rollback_request_branch(ctx, compensation_subject, compensation_request, branch);
    }
    if (st != NATOMIC_OK) {
        if (info != NULL) {
            memset(info, 0, sizeof *info);
            info->kind = st;
            natomic__copy(info->message, sizeof info->message, natomic_strerror(st));
        }
        return st;
    }
    size_t registered = ctx->rollbacks.count - 1;
    st = natomic__ctx_request_branch(reply, ctx, subject, request, reply_desc, branch, info);
    if (st == NATOMIC_ENORESPONDERS && registered + 1 == ctx->rollbacks.count) {
        /* Nobody received the action: it certainly did not run, nothing to compensate.
           If the log cannot be told, it keeps a compensation the barrier makes a no-op. */
        natomic__cmdlist_remove(&ctx->rollbacks, registered);
        if (ctx->saga.revision != 0)
            natomic__saga_write(ctx);
    }
    return st;
}
