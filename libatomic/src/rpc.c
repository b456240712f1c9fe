/*
 * rpc.c -- connecting, and calling a method of another service.
 *
 * A call is one NATS request: the protobuf-packed request as payload, the
 * natomic headers when made inside a call (transaction id, call-id chain,
 * remaining deadline), and a reply that is either the packed reply
 * message or an error reply carrying `Nats-Service-Error-Code`.
 *
 * Failure modes a caller must tell apart (DESIGN 3.5):
 *   - an error reply: business, bad input, transient, timeout upstream;
 *   - no reply in time (NATOMIC_ETIMEOUT): the callee may have committed,
 *     the outcome is in doubt -- a saga compensates anyway;
 *   - no responders: nobody listens, nothing happened;
 *   - a reply that does not decode (NATOMIC_EBADREPLY).
 */
#include "natomic_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CALL_TIMEOUT_MS 30000
#define DEADLINE_MARGIN_MAX_MS 200 /* kept back from a propagated deadline */

uint8_t *natomic__pack(const ProtobufCMessage *msg, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL)
        return NULL;
    *len = protobuf_c_message_pack(msg, buf);
    return buf;
}

natomic_outcome_t natomic__outcome_parse(const char *s)
{
    if (s == NULL)
        return NATOMIC_OUTCOME_NONE;
    if (strcmp(s, "complete") == 0)
        return NATOMIC_OUTCOME_COMPLETE;
    if (strcmp(s, "incomplete") == 0)
        return NATOMIC_OUTCOME_INCOMPLETE;
    return NATOMIC_OUTCOME_NONE;
}

static const char *header(natsMsg *m, const char *key)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK)
        return NULL;
    return v;
}

bool natomic__read_reply_headers(natsMsg *reply, natomic_call_info_t *info)
{
    memset(info, 0, sizeof *info);
    info->rollback = natomic__outcome_parse(header(reply, NATOMIC_HDR_ROLLBACK));
    info->dispatch = natomic__outcome_parse(header(reply, NATOMIC_HDR_DISPATCH));
    const char *replayed = header(reply, NATOMIC_HDR_REPLAYED);
    info->replayed = replayed != NULL && strcmp(replayed, "true") == 0;
    const char *code = header(reply, NATOMIC_HDR_SERVICE_ERROR_CODE);
    if (code == NULL)
        return false;
    info->code = atoi(code);
    if (info->code <= 0)
        info->code = 500;
    info->kind = natomic_error_kind(info->code);
    natomic__copy(info->type, sizeof info->type, header(reply, NATOMIC_HDR_ERROR_TYPE));
    natomic__copy(info->message, sizeof info->message, header(reply, NATOMIC_HDR_SERVICE_ERROR));
    return true;
}

static natomic_status_t request_msg(natsMsg **reply_out, natsConnection *nc, natomic_ctx_t *ctx, const char *subject,
                                    const void *data, size_t len, int64_t timeout_ms, const char *branch,
                                    const char *idempotency_key);

/* Adds the propagation headers of ctx (if any) and the deadline. */
natsStatus natomic__set_call_headers(natsMsg *m, natomic_ctx_t *ctx, int64_t timeout_ms)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, timeout_ms);
    natsStatus s = natsMsgHeader_Set(m, NATOMIC_HDR_DEADLINE_MS, buf);
    if (ctx == NULL || s != NATS_OK)
        return s;
    s = natsMsgHeader_Set(m, NATOMIC_HDR_TX, ctx->tx);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_CALL_ID, ctx->call_id);
    /* Who calls, and from which phase: what an outside observer (the lab) draws. */
    if (s == NATS_OK && ctx->service_name[0] != '\0')
        s = natsMsgHeader_Set(m, NATOMIC_HDR_CALLER, ctx->service_name);
    if (s == NATS_OK && ctx->phase != NULL)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_PHASE, ctx->phase);
    if (s == NATS_OK && ctx->phase != NULL && ctx->attempt > 0) {
        /* Which attempt of its command, and how long the caller waited before it. */
        snprintf(buf, sizeof buf, "%d", ctx->attempt);
        s = natsMsgHeader_Set(m, NATOMIC_HDR_ATTEMPT, buf);
        if (s == NATS_OK && ctx->attempt > 1) {
            snprintf(buf, sizeof buf, "%" PRId64, ctx->backoff_ms);
            s = natsMsgHeader_Set(m, NATOMIC_HDR_BACKOFF_MS, buf);
        }
    }
    if (s == NATS_OK) {
        /* The chain is bounded: the oldest ancestors go first. */
        char chain[sizeof ctx->chain + NATOMIC_ID_LEN + 2];
        if (ctx->chain[0] != '\0')
            snprintf(chain, sizeof chain, "%s,%s", ctx->chain, ctx->call_id);
        else
            natomic__copy(chain, sizeof chain, ctx->call_id);
        const char *start = chain;
        while (strlen(start) > sizeof ctx->chain - NATOMIC_ID_LEN - 2 && strchr(start, ',') != NULL)
            start = strchr(start, ',') + 1;
        s = natsMsgHeader_Set(m, NATOMIC_HDR_CALL_CHAIN, start);
    }
    return s;
}

natomic_status_t natomic__request_bytes(natsMsg **reply_out, natsConnection *nc, natomic_ctx_t *ctx,
                                        const char *subject, const void *data, size_t len, int64_t timeout_ms,
                                        const char *branch)
{
    return request_msg(reply_out, nc, ctx, subject, data, len, timeout_ms, branch, NULL);
}

/* The request itself, between the fault points natomic/client_send and natomic/client_receive. */
static natomic_status_t request_msg(natsMsg **reply_out, natsConnection *nc, natomic_ctx_t *ctx, const char *subject,
                                    const void *data, size_t len, int64_t timeout_ms, const char *branch,
                                    const char *idempotency_key)
{
    if (len > INT32_MAX)
        return NATOMIC_EINVAL;
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)data, (int)len);
    if (s == NATS_OK)
        s = natomic__set_call_headers(m, ctx, timeout_ms);
    if (s == NATS_OK && branch != NULL && *branch != '\0')
        s = natsMsgHeader_Set(m, NATOMIC_HDR_BRANCH, branch);
    if (s == NATS_OK && idempotency_key != NULL && *idempotency_key != '\0')
        s = natsMsgHeader_Set(m, NATOMIC_HDR_IDEMPOTENCY_KEY, idempotency_key);
    natsMsg *reply = NULL;
    natomic_fault_t f = NATOMIC_FAULT("natomic/client_send");
    if (s == NATS_OK && f == NATOMIC_FAULT_ERROR)
        s = NATS_CONNECTION_CLOSED;
    if (s == NATS_OK && f == NATOMIC_FAULT_DROP) {
        /* The request is lost on the way: the caller waits its timeout out. */
        natomic__sleep_ms(timeout_ms);
        s = NATS_TIMEOUT;
    }
    if (s == NATS_OK && f == NATOMIC_FAULT_DUPLICATE)
        s = natsConnection_PublishMsg(nc, m); /* a copy, same headers, that nobody waits for */
    if (s == NATS_OK)
        s = natsConnection_RequestMsg(&reply, nc, m, timeout_ms);
    natsMsg_Destroy(m);
    if (s == NATS_OK) {
        f = NATOMIC_FAULT("natomic/client_receive");
        if (f == NATOMIC_FAULT_DROP || f == NATOMIC_FAULT_ERROR) {
            /* The reply is lost: the callee did its work, the caller cannot know. */
            natsMsg_Destroy(reply);
            reply = NULL;
            s = f == NATOMIC_FAULT_DROP ? NATS_TIMEOUT : NATS_CONNECTION_CLOSED;
        }
    }
    switch (s) {
    case NATS_OK:
        *reply_out = reply;
        return NATOMIC_OK;
    case NATS_TIMEOUT:
        return NATOMIC_ETIMEOUT;
    case NATS_NO_RESPONDERS:
        return NATOMIC_ENORESPONDERS;
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_ARG:
        return NATOMIC_EINVAL;
    default:
        return NATOMIC_ENATS;
    }
}

/* The common body of natomic_request() and natomic_ctx_request(). */
static natomic_status_t do_request(ProtobufCMessage **reply, natsConnection *nc, natomic_ctx_t *ctx,
                                   const char *subject, const ProtobufCMessage *request,
                                   const ProtobufCMessageDescriptor *reply_desc, int64_t timeout_ms,
                                   const char *branch, const char *key, natomic_call_info_t *info)
{
    natomic_call_info_t local;
    if (info == NULL)
        info = &local;
    memset(info, 0, sizeof *info);
    if (reply == NULL || nc == NULL || subject == NULL || *subject == '\0' || request == NULL ||
        reply_desc == NULL || request->descriptor == NULL || timeout_ms <= 0)
        return info->kind = NATOMIC_EINVAL;
    if (timeout_ms > NATOMIC_MAX_BUDGET_MS)
        timeout_ms = NATOMIC_MAX_BUDGET_MS;

    size_t len = 0;
    uint8_t *data = natomic__pack(request, &len);
    if (data == NULL)
        return info->kind = NATOMIC_ENOMEM;
    natsMsg *r = NULL;
    natomic_status_t st = request_msg(&r, nc, ctx, subject, data, len, timeout_ms, branch, key);
    free(data);
    if (st != NATOMIC_OK) {
        info->kind = st;
        natomic__copy(info->message, sizeof info->message, natomic_strerror(st));
        return st;
    }
    if (natomic__read_reply_headers(r, info)) {
        natsMsg_Destroy(r);
        return info->kind;
    }
    bool replayed = info->replayed;
    ProtobufCMessage *msg = protobuf_c_message_unpack(reply_desc, NULL, (size_t)natsMsg_GetDataLength(r),
                                                      (const uint8_t *)natsMsg_GetData(r));
    natsMsg_Destroy(r);
    if (msg == NULL) {
        info->kind = NATOMIC_EBADREPLY;
        snprintf(info->message, sizeof info->message, "reply from %s is not a %s", subject, reply_desc->name);
        return NATOMIC_EBADREPLY;
    }
    info->replayed = replayed;
    *reply = msg;
    return NATOMIC_OK;
}

NATOMIC_API natomic_status_t natomic_request(ProtobufCMessage **reply, natsConnection *nc, const char *subject,
                                             const ProtobufCMessage *request,
                                             const ProtobufCMessageDescriptor *reply_desc, int64_t timeout_ms,
                                             natomic_call_info_t *info)
{
    return do_request(reply, nc, NULL, subject, request, reply_desc, timeout_ms, NULL, NULL, info);
}

/* 1..128 printable ASCII characters, no spaces: what a header value can carry unchanged. */
bool natomic__valid_idempotency_key(const char *key)
{
    size_t n = key != NULL ? strlen(key) : 0;
    if (n == 0 || n > 128)
        return false;
    for (; *key; key++)
        if (*key <= ' ' || *key > '~')
            return false;
    return true;
}

NATOMIC_API natomic_status_t natomic_request_idempotent(ProtobufCMessage **reply, natsConnection *nc,
                                                        const char *subject, const ProtobufCMessage *request,
                                                        const ProtobufCMessageDescriptor *reply_desc,
                                                        int64_t timeout_ms, const char *key,
                                                        natomic_call_info_t *info)
{
    if (key != NULL && *key != '\0' && !natomic__valid_idempotency_key(key)) {
        if (info != NULL) {
            memset(info, 0, sizeof *info);
            info->kind = NATOMIC_EINVAL;
            natomic__copy(info->message, sizeof info->message, "invalid idempotency key");
        }
        return NATOMIC_EINVAL;
    }
    return do_request(reply, nc, NULL, subject, request, reply_desc, timeout_ms, NULL, key, info);
}

/* natomic_ctx_request() with a Natomic-Branch header (the saga step's). */
natomic_status_t natomic__ctx_request_branch(ProtobufCMessage **reply, natomic_ctx_t *ctx, const char *subject,
                                    const ProtobufCMessage *request, const ProtobufCMessageDescriptor *reply_desc,
                                    const char *branch, natomic_call_info_t *info)
{
    if (ctx == NULL)
        return NATOMIC_EINVAL;
    int64_t timeout = DEFAULT_CALL_TIMEOUT_MS;
    if (ctx->deadline_ms != 0) {
        /* Stop waiting a little before our caller does, so there is time left to
           compensate and still answer it (a Timeout reply, not silence). */
        int64_t left = natomic_ctx_remaining_ms(ctx);
        int64_t margin = left / 10 < DEADLINE_MARGIN_MAX_MS ? left / 10 : DEADLINE_MARGIN_MAX_MS;
        timeout = left - margin;
    }
    natomic_call_info_t got;
    memset(&got, 0, sizeof got);
    natomic_status_t st;
    if (timeout <= 0) {
        got.kind = st = NATOMIC_ETIMEOUT;
        got.code = natomic_error_code(st);
        natomic__copy(got.type, sizeof got.type, "DeadlineExceeded");
        snprintf(got.message, sizeof got.message, "no time left to call %s", subject ? subject : "");
    } else {
        st = do_request(reply, ctx->nc, ctx, subject, request, reply_desc, timeout, branch, NULL, &got);
    }
    if (st != NATOMIC_OK) {
        ctx->has_remote_error = true;
        ctx->remote_error = got;
    }
    if (info != NULL)
        *info = got;
    return st;
}

NATOMIC_API natomic_status_t natomic_ctx_request(ProtobufCMessage **reply, natomic_ctx_t *ctx, const char *subject,
                                                 const ProtobufCMessage *request,
                                                 const ProtobufCMessageDescriptor *reply_desc,
                                                 natomic_call_info_t *info)
{
    return natomic__ctx_request_branch(reply, ctx, subject, request, reply_desc, NULL, info);
}
