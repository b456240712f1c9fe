/*
 * raw_service.c -- calls in and out of a role of natomic-raw-saga, by hand.
 *
 * The life of a call, chosen to match libnatomic's runtime
 * (libatomic/src/service.c) in everything but what the library adds:
 *   1. nats.c's reader thread queues the request on the role's one
 *      synchronous queue subscription "<name>.>" (queue group <name>,
 *      pending limits off, so a burst of 128 callers is never dropped);
 *   2. one of `workers` threads takes it (natsSubscription_NextMsg, 100 ms
 *      poll to notice a stop);
 *   3. the method is the subject's last token, looked up in the role's
 *      table (unknown: a 404 reply); the transaction id is Natomic-Tx or
 *      new, the deadline is Natomic-Deadline-Ms from now or 30 s;
 *   4. the method runs and answers once (raw_reply / raw_fail);
 *   5. the worker frees the request and takes the next.
 * Same threads, same hand-off from the reader thread to a worker, same
 * connection options: what is left to differ from the library is what it
 * does per call (contexts, command lists, retries, outcome headers,
 * traces, the saga log) -- the thing the benchmark measures.
 *
 * Outgoing requests use natsConnection_RequestMsg (nats.c's shared reply
 * subscription, as natomic_request does); packing goes to a stack buffer
 * when it fits, which every message of the saga does but a long
 * notifications.list.
 *
 * Failure: a reply or event that cannot be sent is logged and the call
 * goes on (the caller times out, as it would with the library); a worker
 * leaves when its subscription is closed. Stop unsubscribes first, so no
 * new call starts, then joins the workers after their call in hand.
 */
#include "raw_service.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define POLL_MS 100
#define STACK_PACK 1024 /* bytes packed on the stack; larger messages are malloc'ed */

struct raw_service {
    natsConnection *nc;
    char name[64];
    const raw_method_t *methods;
    size_t n_methods;
    void *state;
    natsSubscription *sub;
    natsSubscription *ping_all, *ping_named;
    char ping_reply[256];
    pthread_t *workers;
    int n_workers;
    atomic_bool stopping;
};

/* ------------------------------------------------------------------ */
/* Ids, time, packing                                                  */
/* ------------------------------------------------------------------ */

void raw_id_new(char out[RAW_ID_LEN + 1])
{
    static atomic_uint_fast64_t fallback;
    uint8_t bytes[16];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t a = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        uint64_t b = atomic_fetch_add(&fallback, 1) + 1;
        memcpy(bytes, &a, 8);
        memcpy(bytes + 8, &b, 8);
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof bytes; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    out[RAW_ID_LEN] = '\0';
}

int64_t raw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Packs `m` into stack[STACK_PACK] or, when larger, a malloc'ed block (*heap, to free). NULL when out of memory. */
static uint8_t *pack(const ProtobufCMessage *m, uint8_t stack[STACK_PACK], uint8_t **heap, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = stack;
    *heap = NULL;
    if (n > STACK_PACK) {
        buf = *heap = malloc(n);
        if (buf == NULL)
            return NULL;
    }
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}

/* The value of header `key`, or NULL. */
static const char *header(natsMsg *m, const char *key)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

/* ------------------------------------------------------------------ */
/* Connection                                                          */
/* ------------------------------------------------------------------ */

natsStatus raw_connect(natsConnection **out, const char *url)
{
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 100);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, 2000);
    if (s == NATS_OK)
        s = natsConnection_Connect(out, opts);
    natsOptions_Destroy(opts);
    return s;
}

/* ------------------------------------------------------------------ */
/* Answers                                                             */
/* ------------------------------------------------------------------ */

/* Publishes data[len] to `subject` with the header pairs kv[0..2n); the NATS status. */
static natsStatus publish(natsConnection *nc, const char *subject, const void *data, size_t len,
                          const char *const *kv, int n)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, data, (int)len);
    for (int i = 0; s == NATS_OK && i < n; i++)
        s = natsMsgHeader_Set(m, kv[2 * i], kv[2 * i + 1]);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(nc, m);
    natsMsg_Destroy(m);
    return s;
}

void *raw_unpack(raw_call_t *call, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, (size_t)natsMsg_GetDataLength(call->msg),
                                                    (const uint8_t *)natsMsg_GetData(call->msg));
    if (m == NULL)
        raw_fail(call, 400, "MalformedPayload", "payload is not a valid %s", desc->name);
    return m;
}

void raw_reply(raw_call_t *call, const ProtobufCMessage *reply)
{
    call->answered = true;
    const char *to = natsMsg_GetReply(call->msg);
    if (to == NULL || *to == '\0')
        return;
    uint8_t stack[STACK_PACK], *heap = NULL;
    size_t len = 0;
    uint8_t *buf = pack(reply, stack, &heap, &len);
    if (buf == NULL) {
        raw_fail(call, 500, "OutOfMemory", "out of memory packing the reply");
        return;
    }
    const char *kv[] = {"Natomic-Tx", call->tx};
    natsStatus s = publish(call->svc->nc, to, buf, len, kv, 1);
    free(heap);
    if (s != NATS_OK)
        fprintf(stderr, "%s: cannot send the reply: %s\n", call->svc->name, natsStatus_GetText(s));
}

void raw_fail(raw_call_t *call, int code, const char *type, const char *fmt, ...)
{
    call->answered = true;
    const char *to = natsMsg_GetReply(call->msg);
    if (to == NULL || *to == '\0')
        return;
    char message[512], code_text[16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    snprintf(code_text, sizeof code_text, "%d", code);
    const char *kv[] = {"Natomic-Tx", call->tx, "Nats-Service-Error-Code", code_text, "Nats-Service-Error", message,
                        "Natomic-Error-Type", type};
    natsStatus s = publish(call->svc->nc, to, NULL, 0, kv, 4);
    if (s != NATS_OK)
        fprintf(stderr, "%s: cannot send the error reply (%s): %s\n", call->svc->name, type, natsStatus_GetText(s));
}

void raw_refuse(raw_refusal_t *r, int code, const char *type, const char *fmt, ...)
{
    r->code = code;
    r->type = type;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
}

void raw_fail_with(raw_call_t *call, const raw_refusal_t *r)
{
    raw_fail(call, r->code, r->type, "%s", r->message);
}

natsStatus raw_publish_event(natsConnection *nc, const char *subject, const char *type, const char *tx,
                             const ProtobufCMessage *event)
{
    uint8_t stack[STACK_PACK], *heap = NULL;
    size_t len = 0;
    uint8_t *buf = pack(event, stack, &heap, &len);
    if (buf == NULL)
        return NATS_NO_MEMORY;
    char event_id[RAW_ID_LEN + 1];
    raw_id_new(event_id);
    const char *kv[] = {"Natomic-Tx", tx, "Natomic-Event-Id", event_id, "Natomic-Event-Type", type};
    natsStatus s = publish(nc, subject, buf, len, kv, 3);
    free(heap);
    return s;
}

/* ------------------------------------------------------------------ */
/* Requests to other roles                                             */
/* ------------------------------------------------------------------ */

/* Fills *err; returns -1 for the caller to return. */
static int remote_error(raw_remote_error_t *err, int code, bool in_doubt, const char *type, const char *message)
{
    err->code = code;
    err->in_doubt = in_doubt;
    snprintf(err->type, sizeof err->type, "%s", type != NULL ? type : "");
    snprintf(err->message, sizeof err->message, "%s", message != NULL ? message : "");
    return -1;
}

int raw_request(ProtobufCMessage **reply, natsConnection *nc, const char *subject, const ProtobufCMessage *request,
                const ProtobufCMessageDescriptor *reply_desc, const char *tx, int64_t timeout_ms,
                raw_remote_error_t *err)
{
    if (timeout_ms < 1)
        return remote_error(err, 504, false, "Timeout", "no time left for the call");
    uint8_t stack[STACK_PACK], *heap = NULL;
    size_t len = 0;
    uint8_t *buf = pack(request, stack, &heap, &len);
    if (buf == NULL)
        return remote_error(err, 500, false, "OutOfMemory", "out of memory packing the request");
    char deadline[32];
    snprintf(deadline, sizeof deadline, "%" PRId64, timeout_ms);
    natsMsg *m = NULL, *answer = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Natomic-Tx", tx);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Natomic-Deadline-Ms", deadline);
    if (s == NATS_OK)
        s = natsConnection_RequestMsg(&answer, nc, m, timeout_ms);
    natsMsg_Destroy(m);
    free(heap);
    if (s == NATS_TIMEOUT)
        return remote_error(err, 504, true, "Timeout", "no reply in time");
    if (s == NATS_NO_RESPONDERS)
        return remote_error(err, 503, false, "Unavailable", "nobody answers");
    if (s != NATS_OK)
        return remote_error(err, 503, false, "Unavailable", natsStatus_GetText(s));
    const char *code = header(answer, "Nats-Service-Error-Code");
    int rc = 0;
    if (code != NULL) {
        int n = atoi(code);
        rc = remote_error(err, n > 0 ? n : 500, false, header(answer, "Natomic-Error-Type"),
                          header(answer, "Nats-Service-Error"));
    } else {
        ProtobufCMessage *decoded = protobuf_c_message_unpack(reply_desc, NULL, (size_t)natsMsg_GetDataLength(answer),
                                                              (const uint8_t *)natsMsg_GetData(answer));
        if (decoded == NULL)
            rc = remote_error(err, 500, false, "BadReply", "the reply does not decode");
        else
            *reply = decoded;
    }
    natsMsg_Destroy(answer);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */
/* ------------------------------------------------------------------ */

/* Takes the caller's transaction id when it is a short printable token, else makes one. */
static void transaction_id(natsMsg *msg, char tx[RAW_TX_CAP])
{
    const char *h = header(msg, "Natomic-Tx");
    if (h != NULL && *h != '\0' && strlen(h) < RAW_TX_CAP) {
        bool printable = true;
        for (const char *p = h; *p && printable; p++)
            printable = *p > ' ' && *p <= '~' && *p != ',';
        if (printable) {
            strcpy(tx, h);
            return;
        }
    }
    raw_id_new(tx);
}

/* The deadline the caller gave (Natomic-Deadline-Ms from now), else RAW_DEFAULT_TIMEOUT_MS. */
static int64_t deadline_of(natsMsg *msg)
{
    const char *h = header(msg, "Natomic-Deadline-Ms");
    long long ms = h != NULL ? atoll(h) : 0;
    return raw_now_ms() + (ms > 0 ? ms : RAW_DEFAULT_TIMEOUT_MS);
}

static void dispatch(raw_service_t *svc, natsMsg *msg)
{
    raw_call_t call = {.svc = svc, .msg = msg};
    transaction_id(msg, call.tx);
    call.deadline_ms = deadline_of(msg);
    const char *subject = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subject, '.');
    const char *method = dot != NULL ? dot + 1 : subject;
    for (size_t i = 0; i < svc->n_methods; i++) {
        if (strcmp(svc->methods[i].name, method) == 0) {
            svc->methods[i].fn(&call, svc->state);
            if (!call.answered)
                raw_fail(&call, 500, "InternalError", "%s.%s did not answer", svc->name, method);
            return;
        }
    }
    raw_fail(&call, 404, "UnknownMethod", "%s has no method '%s'", svc->name, method);
}

static void *worker_main(void *arg)
{
    raw_service_t *svc = arg;
    for (;;) {
        natsMsg *msg = NULL;
        natsStatus s = natsSubscription_NextMsg(&msg, svc->sub, POLL_MS);
        if (s == NATS_TIMEOUT) {
            if (atomic_load(&svc->stopping))
                break;
            continue;
        }
        if (s != NATS_OK)
            break; /* unsubscribed, or the connection is gone */
        dispatch(svc, msg);
        natsMsg_Destroy(msg);
    }
    return NULL;
}

/* $SRV.PING and $SRV.PING.<name>: what the lab's supervisor waits for before it calls the role. */
static void on_ping(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    raw_service_t *svc = closure;
    const char *to = natsMsg_GetReply(msg);
    if (to != NULL && *to != '\0')
        natsConnection_PublishString(nc, to, svc->ping_reply);
    natsMsg_Destroy(msg);
}

natsConnection *raw_service_connection(raw_service_t *svc)
{
    return svc->nc;
}

int raw_service_start(raw_service_t **out, natsConnection *nc, const char *name, const raw_method_t *methods,
                      size_t n_methods, void *state, int workers)
{
    if (workers < 1) {
        fprintf(stderr, "%s: need at least one worker, got %d\n", name, workers);
        return -1;
    }
    raw_service_t *svc = calloc(1, sizeof *svc);
    if (svc != NULL)
        svc->workers = calloc((size_t)workers, sizeof *svc->workers);
    if (svc == NULL || svc->workers == NULL) {
        fprintf(stderr, "%s: out of memory\n", name);
        free(svc);
        return -1;
    }
    svc->nc = nc;
    snprintf(svc->name, sizeof svc->name, "%s", name);
    svc->methods = methods;
    svc->n_methods = n_methods;
    svc->state = state;
    atomic_init(&svc->stopping, false);
    char id[RAW_ID_LEN + 1], subject[96], ping_subject[96];
    raw_id_new(id);
    snprintf(svc->ping_reply, sizeof svc->ping_reply,
             "{\"type\":\"io.nats.micro.v1.ping_response\",\"name\":\"%s\",\"id\":\"%s\",\"version\":\"0.1.0\"}",
             name, id);
    snprintf(subject, sizeof subject, "%s.>", name);
    snprintf(ping_subject, sizeof ping_subject, "$SRV.PING.%s", name);
    natsStatus s = natsConnection_QueueSubscribeSync(&svc->sub, nc, subject, name);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(svc->sub, -1, -1);
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&svc->ping_all, nc, "$SRV.PING", on_ping, svc);
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&svc->ping_named, nc, ping_subject, on_ping, svc);
    if (s != NATS_OK) {
        fprintf(stderr, "%s: cannot subscribe to %s: %s\n", name, subject, natsStatus_GetText(s));
        raw_service_stop(svc);
        return -1;
    }
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&svc->workers[i], NULL, worker_main, svc) != 0) {
            fprintf(stderr, "%s: cannot start worker %d of %d\n", name, i + 1, workers);
            raw_service_stop(svc);
            return -1;
        }
        svc->n_workers++;
    }
    /* The server must know the subscriptions before anyone is told the role is up. */
    s = natsConnection_FlushTimeout(nc, 5000);
    if (s != NATS_OK) {
        fprintf(stderr, "%s: flush after subscribing: %s\n", name, natsStatus_GetText(s));
        raw_service_stop(svc);
        return -1;
    }
    *out = svc;
    return 0;
}

void raw_service_stop(raw_service_t *svc)
{
    if (svc == NULL)
        return;
    atomic_store(&svc->stopping, true);
    if (svc->ping_all != NULL)
        natsSubscription_Unsubscribe(svc->ping_all);
    if (svc->ping_named != NULL)
        natsSubscription_Unsubscribe(svc->ping_named);
    if (svc->sub != NULL)
        natsSubscription_Unsubscribe(svc->sub);
    for (int i = 0; i < svc->n_workers; i++)
        pthread_join(svc->workers[i], NULL);
    natsSubscription_Destroy(svc->sub);
    natsSubscription_Destroy(svc->ping_all);
    natsSubscription_Destroy(svc->ping_named);
    natsConnection_FlushTimeout(svc->nc, 2000); /* the replies and events of the last calls */
    free(svc->workers);
    free(svc);
}
