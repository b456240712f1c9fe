/*
 * event_consumer.c -- how events reach a service's event handlers.
 *
 * Memory mode: a core NATS queue subscription on "events.<source>.<type>"
 * (queue group = the service's name). An event published while no
 * instance listens is gone, and a failing handler is not retried.
 *
 * Durable mode: a durable pull consumer "<service>-<source>-<type>" on the
 * stream EVENTS, filtered to that subject, with explicit acks. It is
 * created if missing (delivering everything the stream holds, so a new
 * consumer catches up on events kept before it existed) and bound, never
 * deleted here: it outlives every instance, which is the point -- an
 * event published while the service was down waits in the stream, and
 * the consumer hands it over when an instance comes back. Each instance
 * fetches from the same consumer, so each event goes to one of them.
 *
 * One thread per handler fetches batches. A message is acked after its
 * handler succeeded; a failure is nak'ed with a growing delay and so
 * redelivered; on its fifth delivery a failing event is dead-lettered and
 * terminated (never redelivered again). A crash mid-handler leaves the
 * message unacknowledged: the server redelivers it after the ack wait
 * (5 s). Redelivery means a handler sees an event more than once: it must
 * be idempotent by natomic_ctx_event_id(), in both modes.
 */
#include "natomic_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "durable_internal.h"

#define MAX_DELIVERIES 5
#define ACK_WAIT_MS 5000
#define CONSUMER_ATTEMPTS 8   /* creating a durable consumer, on a cluster electing a leader */
#define CONSUMER_RETRY_MS 500
#define FETCH_BATCH 16
#define FETCH_WAIT_MS 500

natomic_status_t natomic__event_handle(natomic_event_sub_t *es, natsMsg *msg)
{
    natomic_service_t *svc = es->svc;
    natomic_ctx_t ctx;
    natomic__ctx_init(&ctx, svc, svc->nc, svc->name, es->subject, 0);
    const char *h = natomic__header(msg, NATOMIC_HDR_TX);
    if (natomic__usable_id(h, sizeof ctx.tx))
        natomic__copy(ctx.tx, sizeof ctx.tx, h);
    h = natomic__header(msg, NATOMIC_HDR_CALL_ID);
    if (natomic__usable_id(h, sizeof ctx.parent_id))
        natomic__copy(ctx.parent_id, sizeof ctx.parent_id, h);
    h = natomic__header(msg, NATOMIC_HDR_EVENT_ID);
    if (natomic__usable_id(h, sizeof ctx.event_id))
        natomic__copy(ctx.event_id, sizeof ctx.event_id, h);
    ProtobufCMessage *event = protobuf_c_message_unpack(es->desc, NULL, (size_t)natsMsg_GetDataLength(msg),
                                                        (const uint8_t *)natsMsg_GetData(msg));
    natomic_status_t st = NATOMIC_EBADINPUT;
    natomic_fault_t f = event != NULL ? NATOMIC_FAULT("natomic/before_event_handler") : NATOMIC_FAULT_NONE;
    if (event == NULL)
        natomic__log(NATOMIC_LOG_WARN, svc->name, "event on %s is not a valid %s: dropped", es->subject,
                     es->desc->name);
    else if (f == NATOMIC_FAULT_ERROR)
        st = natomic_fail(&ctx, NATOMIC_ETRANSIENT, "InjectedFault", "fault point natomic/before_event_handler");
    else if (f == NATOMIC_FAULT_DROP)
        st = NATOMIC_OK; /* lost before the handler saw it (durable: see consume_one) */
    else
        st = es->handler(&ctx, event, es->closure);
    if (f == NATOMIC_FAULT_DUPLICATE && st == NATOMIC_OK)
        st = es->handler(&ctx, event, es->closure); /* a redelivery: the handler must dedupe */
    if (st == NATOMIC_OK) {
        atomic_fetch_add(&svc->events_handled, 1);
    } else {
        atomic_fetch_add(&svc->events_failed, 1);
        if (event != NULL)
            natomic__log(NATOMIC_LOG_WARN, svc->name, "event handler for %s (event %s) failed: %s%s%s", es->subject,
                         ctx.event_id, ctx.failed ? ctx.fail_type : natomic_strerror(st), ctx.failed ? ": " : "",
                         ctx.failed ? ctx.fail_message : "");
    }
    protobuf_c_message_free_unpacked(event, NULL);
    natomic__ctx_release(&ctx);
    /* A payload that does not decode never will: not worth a redelivery. */
    return event == NULL ? NATOMIC_EBADINPUT : (f == NATOMIC_FAULT_DROP ? NATOMIC_ENOTFOUND : st);
}

/* ---- memory mode: core NATS ------------------------------------------------ */

static void on_core_event(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    natomic__event_handle(closure, msg);
    natsMsg_Destroy(msg);
}

/* ---- durable mode: a durable JetStream consumer --------------------------- */

/* A dead letter for an event given up, like a command's. */
static void dead_letter_event(natomic_event_sub_t *es, natsMsg *msg, uint64_t deliveries)
{
    natomic_service_t *svc = es->svc;
    natomic_ctx_t ctx;
    natomic__ctx_init(&ctx, svc, svc->nc, svc->name, es->subject, 0);
    const char *tx = natomic__header(msg, NATOMIC_HDR_TX), *id = natomic__header(msg, NATOMIC_HDR_EVENT_ID);
    if (natomic__usable_id(tx, sizeof ctx.tx))
        natomic__copy(ctx.tx, sizeof ctx.tx, tx);
    char name[160];
    snprintf(name, sizeof name, "handle %s (event %.40s)", es->subject, id != NULL ? id : "?");
    natomic_command_t cmd = {.name = name};
    natomic__dead_letter(&ctx, "event", &cmd, (int)deliveries, NATOMIC_ETRANSIENT, NULL);
    natomic__ctx_release(&ctx);
}

static void consume_one(natomic_event_sub_t *es, natsMsg *msg)
{
    jsMsgMetaData *meta = NULL;
    uint64_t delivered = natsMsg_GetMetaData(&meta, msg) == NATS_OK ? meta->NumDelivered : 1;
    jsMsgMetaData_Destroy(meta);
    natomic_status_t st = natomic__event_handle(es, msg);
    natsStatus s;
    if (st == NATOMIC_OK) {
        s = natsMsg_Ack(msg, NULL);
    } else if (st == NATOMIC_ENOTFOUND) {
        s = NATS_OK; /* fault point "drop": no ack; the server redelivers after the ack wait */
    } else if (st == NATOMIC_EBADINPUT || delivered >= MAX_DELIVERIES) {
        dead_letter_event(es, msg, delivered);
        s = natsMsg_Term(msg, NULL);
    } else {
        int64_t delay = 100LL << (delivered < 6 ? delivered : 6); /* 200 ms, 400 ms, ... */
        s = natsMsg_NakWithDelay(msg, delay, NULL);
    }
    (void)s; /* an ack that did not go out: the server redelivers after the ack wait */
}

static void *fetch_loop(void *arg)
{
    natomic_event_sub_t *es = arg;
    natomic_service_t *svc = es->svc;
    while (!atomic_load(&svc->stopping_events)) {
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s = natsSubscription_Fetch(&list, es->sub, FETCH_BATCH, FETCH_WAIT_MS, &jerr);
        if (s == NATS_OK) {
            for (int i = 0; i < list.Count; i++)
                consume_one(es, list.Msgs[i]);
        } else if (s != NATS_TIMEOUT) {
            natomic__sleep_ms(FETCH_WAIT_MS); /* NATS down: try again */
        }
        natsMsgList_Destroy(&list);
    }
    return NULL;
}

static natomic_status_t start_durable(natomic_event_sub_t *es)
{
    natomic_service_t *svc = es->svc;
    jsCtx *js = svc->durable->js;
    const char *source_type = es->subject + strlen(NATOMIC_EVENTS_PREFIX) + 1; /* "<source>.<type>" */
    size_t n = strlen(svc->name) + strlen(source_type) + 2;
    es->durable = malloc(n);
    if (es->durable == NULL)
        return NATOMIC_ENOMEM;
    snprintf(es->durable, n, "%s-%s", svc->name, source_type);
    for (char *p = es->durable; *p; p++)
        if (*p == '.')
            *p = '-';
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = es->durable;
    cc.Description = "natomic event handler";
    cc.FilterSubject = es->subject;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)ACK_WAIT_MS * 1000000;
    cc.DeliverPolicy = js_DeliverAll;
    cc.MaxAckPending = 1024;
    /* On a cluster a stream just made (or one whose node just died) has no leader for a moment:
       creating its consumer times out or is refused until one is elected. Bounded retries. */
    jsErrCode jerr = 0;
    natsStatus s = NATS_ERR;
    for (int attempt = 1; attempt <= CONSUMER_ATTEMPTS; attempt++) {
        jsConsumerInfo *ci = NULL;
        jerr = 0;
        s = js_AddConsumer(&ci, js, NATOMIC_EVENTS_STREAM, &cc, NULL, &jerr);
        jsConsumerInfo_Destroy(ci);
        if (s == NATS_OK || jerr == JSConsumerNameExistErr || jerr == JSConsumerExistingActiveErr)
            break;
        if (attempt < CONSUMER_ATTEMPTS) {
            natomic__log(NATOMIC_LOG_WARN, svc->name, "cannot create the consumer %s on %s yet (%s): retrying",
                         es->durable, NATOMIC_EVENTS_STREAM, natsStatus_GetText(s));
            if (!natomic__durable_wait(svc, CONSUMER_RETRY_MS))
                break;
        }
    }
    if (s != NATS_OK && jerr != JSConsumerNameExistErr && jerr != JSConsumerExistingActiveErr) {
        natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot create the consumer %s on %s: %s", es->durable,
                     NATOMIC_EVENTS_STREAM, nats_GetLastError(NULL) != NULL ? nats_GetLastError(NULL)
                                                                            : natsStatus_GetText(s));
        return NATOMIC_ENATS;
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = NATOMIC_EVENTS_STREAM;
    so.Consumer = es->durable; /* bind: the consumer is not this subscription's to delete */
    s = js_PullSubscribe(&es->sub, js, es->subject, es->durable, NULL, &so, &jerr);
    if (s != NATS_OK) {
        natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot bind to the consumer %s: %s", es->durable,
                     nats_GetLastError(NULL));
        return NATOMIC_ENATS;
    }
    if (pthread_create(&es->thread, NULL, fetch_loop, es) != 0)
        return NATOMIC_ENOMEM;
    es->thread_started = true;
    return NATOMIC_OK;
}

natomic_status_t natomic__event_consumers_start(natomic_service_t *svc)
{
    atomic_store(&svc->stopping_events, false);
    for (size_t i = 0; i < svc->n_event_subs; i++) {
        natomic_event_sub_t *es = &svc->event_subs[i];
        natomic_status_t st;
        if (natomic__durable(svc)) {
            st = start_durable(es);
        } else {
            natsStatus s = natsConnection_QueueSubscribe(&es->sub, svc->nc, es->subject, svc->name, on_core_event, es);
            if (s == NATS_OK)
                s = natsSubscription_SetPendingLimits(es->sub, -1, -1);
            if (s != NATS_OK)
                natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot subscribe to %s: %s", es->subject,
                             natsStatus_GetText(s));
            st = s == NATS_OK ? NATOMIC_OK : NATOMIC_ENATS;
        }
        if (st != NATOMIC_OK)
            return st;
    }
    return NATOMIC_OK;
}

void natomic__event_consumers_stop(natomic_service_t *svc)
{
    atomic_store(&svc->stopping_events, true);
    for (size_t i = 0; i < svc->n_event_subs; i++) {
        natomic_event_sub_t *es = &svc->event_subs[i];
        if (es->thread_started) {
            pthread_join(es->thread, NULL); /* its handler finishes its batch first */
            es->thread_started = false;
        } else if (es->sub != NULL) {
            /* Core: handlers may still run on nats.c's threads; drain lets them finish. */
            if (natsSubscription_Drain(es->sub) == NATS_OK)
                natsSubscription_WaitForDrainCompletion(es->sub, 30000);
            else
                natsSubscription_Unsubscribe(es->sub);
        }
        natsSubscription_Destroy(es->sub); /* a bound consumer is kept on the server */
        es->sub = NULL;
        free(es->durable);
        es->durable = NULL;
    }
}
