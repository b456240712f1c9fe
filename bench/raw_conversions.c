/*
 * raw_conversions.c -- conversions.inches_to_cm as a careful author writes
 * it with raw nats.c, without libnatomic: the benchmark's baseline.
 *
 * One call, on one worker thread:
 *
 *   1. the transaction id comes from the `Natomic-Tx` header, or is new
 *      (128 random bits from getrandom(2), as 32 hex digits);
 *   2. the payload is decoded as InchesToCmRequest (a malformed one gets a
 *      400 error reply);
 *   3. the conversion is saved in SQLite (committed on return);
 *   4. a negative length is refused after the save, like the natomic
 *      handler: the row is deleted again and the caller gets a 422
 *      `InvalidLength` error reply;
 *   5. on success the Converted event is published on
 *      events.conversions.converted, then the packed reply is sent.
 *
 * Concurrency, chosen to match libnatomic's runtime exactly: one
 * synchronous queue subscription with unlimited pending limits, and
 * `workers` threads pulling from it with natsSubscription_NextMsg() and a
 * 100 ms poll. The same number of threads, the same hand-off from nats.c's
 * reader thread to a worker, the same connection options (the caller makes
 * `nc` with natomic_connect: SendAsap on). What is left to differ is what
 * the library does per call -- the thing the benchmark measures.
 *
 * What it deliberately lacks, being the baseline: call contexts, command
 * lists, retries, dead letters, deadlines, discovery, outcome headers.
 * A failing event publish is logged once and the reply stays a success.
 */
#include "raw_conversions.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "conversions.pb-c.h"

#define SUBJECT "conversions.inches_to_cm"
#define QUEUE "conversions"
#define EVENT_SUBJECT "events.conversions.converted"
#define CM_PER_INCH 2.54
#define POLL_MS 100
#define ID_LEN 32

struct raw_conversions {
    natsConnection *nc;
    conversions_store_t *store;
    natsSubscription *sub;
    pthread_t *workers;
    int n_workers;
    atomic_bool stopping;
};

/* Writes a new 32-hex-digit id; a counter mixed with the clock if getrandom fails. */
static void new_id(char buf[ID_LEN + 1])
{
    static atomic_uint_fast64_t fallback;
    uint8_t raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t a = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        uint64_t b = atomic_fetch_add(&fallback, 1) + 1;
        memcpy(raw, &a, 8);
        memcpy(raw + 8, &b, 8);
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[ID_LEN] = '\0';
}

/* Takes the caller's transaction id when it is a short printable token, else makes one. */
static void transaction_id(natsMsg *msg, char tx[ID_LEN + 1])
{
    const char *h = NULL;
    if (natsMsgHeader_Get(msg, "Natomic-Tx", &h) == NATS_OK && h != NULL && *h != '\0' && strlen(h) <= ID_LEN) {
        bool printable = true;
        for (const char *p = h; *p && printable; p++)
            printable = *p > ' ' && *p <= '~' && *p != ',';
        if (printable) {
            strcpy(tx, h);
            return;
        }
    }
    new_id(tx);
}

/* Publishes `data` on `subject` with a Natomic-Tx header; the NATS status. */
static natsStatus publish_with_tx(natsConnection *nc, const char *subject, const char *tx, const void *data,
                                  int len)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, data, len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Natomic-Tx", tx);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(nc, m);
    natsMsg_Destroy(m);
    return s;
}

/* Sends an error reply in the NATS service convention. Failures are logged. */
static void reply_error(raw_conversions_t *srv, const char *reply_to, const char *tx, int code, const char *type,
                        const char *message)
{
    char code_text[16];
    snprintf(code_text, sizeof code_text, "%d", code);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, reply_to, NULL, NULL, 0);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Natomic-Tx", tx);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Service-Error", message);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Service-Error-Code", code_text);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Natomic-Error-Type", type);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(srv->nc, m);
    if (s != NATS_OK)
        fprintf(stderr, "raw conversions: could not send the error reply: %s\n", natsStatus_GetText(s));
    natsMsg_Destroy(m);
}

/* One call, start to end, on the calling worker thread. */
static void handle_inches_to_cm(raw_conversions_t *srv, natsMsg *msg)
{
    const char *reply_to = natsMsg_GetReply(msg);
    if (reply_to == NULL || *reply_to == '\0')
        return; /* nobody to answer: a request without reply subject is not a call */
    char tx[ID_LEN + 1];
    transaction_id(msg, tx);

    Conversions__InchesToCmRequest *req = conversions__inches_to_cm_request__unpack(
        NULL, (size_t)natsMsg_GetDataLength(msg), (const uint8_t *)natsMsg_GetData(msg));
    if (req == NULL) {
        reply_error(srv, reply_to, tx, 400, "MalformedPayload", "payload is not a valid InchesToCmRequest");
        return;
    }
    double inches = req->inches;
    conversions__inches_to_cm_request__free_unpacked(req, NULL);
    if (!isfinite(inches)) {
        reply_error(srv, reply_to, tx, 400, "InvalidLength", "length must be a finite number");
        return;
    }
    double cm = inches * CM_PER_INCH;

    int64_t id = 0;
    if (conversions_store_save(srv->store, tx, inches, cm, &id) != 0) {
        reply_error(srv, reply_to, tx, 503, "StorageError", conversions_store_error(srv->store));
        return;
    }
    /* Validation after the save, as the natomic handler does: undo by hand. */
    if (inches < 0) {
        if (conversions_store_delete(srv->store, id) != 0)
            fprintf(stderr, "raw conversions: could not delete conversion #%lld: %s\n", (long long)id,
                    conversions_store_error(srv->store));
        char text[128];
        snprintf(text, sizeof text, "length must not be negative, got %g inches", inches);
        reply_error(srv, reply_to, tx, 422, "InvalidLength", text);
        return;
    }

    /* Committed: the event may leave, then the reply. Both are tiny: packed on the stack. */
    Conversions__Converted event = CONVERSIONS__CONVERTED__INIT;
    event.inches = inches;
    event.cm = cm;
    event.conversion_id = id;
    uint8_t event_buf[64];
    if (conversions__converted__get_packed_size(&event) > sizeof event_buf)
        abort(); /* three scalar fields: at most 29 bytes */
    size_t event_len = conversions__converted__pack(&event, event_buf);
    natsStatus s = publish_with_tx(srv->nc, EVENT_SUBJECT, tx, event_buf, (int)event_len);
    if (s != NATS_OK)
        fprintf(stderr, "raw conversions: could not publish the event of #%lld: %s\n", (long long)id,
                natsStatus_GetText(s));

    Conversions__InchesToCmReply reply = CONVERSIONS__INCHES_TO_CM_REPLY__INIT;
    reply.cm = cm;
    uint8_t reply_buf[16];
    if (conversions__inches_to_cm_reply__get_packed_size(&reply) > sizeof reply_buf)
        abort(); /* one double: at most 9 bytes */
    size_t reply_len = conversions__inches_to_cm_reply__pack(&reply, reply_buf);
    s = publish_with_tx(srv->nc, reply_to, tx, reply_buf, (int)reply_len);
    if (s != NATS_OK)
        fprintf(stderr, "raw conversions: could not send the reply: %s\n", natsStatus_GetText(s));
}

static void *worker_main(void *arg)
{
    raw_conversions_t *srv = arg;
    for (;;) {
        natsMsg *msg = NULL;
        natsStatus s = natsSubscription_NextMsg(&msg, srv->sub, POLL_MS);
        if (s == NATS_TIMEOUT) {
            if (atomic_load(&srv->stopping))
                break;
            continue;
        }
        if (s != NATS_OK)
            break; /* unsubscribed, or the connection is gone */
        handle_inches_to_cm(srv, msg);
        natsMsg_Destroy(msg);
    }
    return NULL;
}

int raw_conversions_start(raw_conversions_t **out, natsConnection *nc, conversions_store_t *store, int workers)
{
    if (workers < 1) {
        fprintf(stderr, "raw conversions: need at least one worker, got %d\n", workers);
        return -1;
    }
    raw_conversions_t *srv = calloc(1, sizeof *srv);
    if (srv != NULL)
        srv->workers = calloc((size_t)workers, sizeof *srv->workers);
    if (srv == NULL || srv->workers == NULL) {
        fprintf(stderr, "raw conversions: out of memory\n");
        free(srv);
        return -1;
    }
    srv->nc = nc;
    srv->store = store;
    atomic_init(&srv->stopping, false);
    natsStatus s = natsConnection_QueueSubscribeSync(&srv->sub, nc, SUBJECT, QUEUE);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(srv->sub, -1, -1);
    if (s != NATS_OK) {
        fprintf(stderr, "raw conversions: cannot subscribe to %s: %s\n", SUBJECT, natsStatus_GetText(s));
        raw_conversions_stop(srv);
        return -1;
    }
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&srv->workers[i], NULL, worker_main, srv) != 0) {
            fprintf(stderr, "raw conversions: cannot start worker %d of %d\n", i + 1, workers);
            raw_conversions_stop(srv);
            return -1;
        }
        srv->n_workers++;
    }
    /* The server must know the subscription before the first request is sent. */
    s = natsConnection_FlushTimeout(nc, 5000);
    if (s != NATS_OK) {
        fprintf(stderr, "raw conversions: flush after subscribing: %s\n", natsStatus_GetText(s));
        raw_conversions_stop(srv);
        return -1;
    }
    *out = srv;
    return 0;
}

void raw_conversions_stop(raw_conversions_t *srv)
{
    if (srv == NULL)
        return;
    atomic_store(&srv->stopping, true);
    if (srv->sub != NULL)
        natsSubscription_Unsubscribe(srv->sub);
    for (int i = 0; i < srv->n_workers; i++)
        pthread_join(srv->workers[i], NULL);
    natsSubscription_Destroy(srv->sub);
    natsConnection_FlushTimeout(srv->nc, 2000); /* replies and events of the last calls */
    free(srv->workers);
    free(srv);
}
