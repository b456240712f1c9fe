/*
 * runner.c -- plays scenarios and checks them from outside.
 *
 * For each scenario file:
 *   1. the supervisor starts NATS and the listed services, without faults;
 *      after the seed data the file's faults are applied through
 *      $NATOMIC.FAULTS.<service> (probabilities drawn from the run's seed);
 *   2. the "tap" records every call, reply, event, compensation (a call
 *      carrying Natomic-Phase: rollback), dead letter and, in durable mode,
 *      recovery step into the timeline: the services copy calls and replies
 *      to natomic.trace.> (NATOMIC_TRACE); events, dead letters and
 *      natomic.recovery.> are read where they are published. A durable
 *      story counts events by distinct Natomic-Event-Id (what the stream
 *      keeps), a memory story every delivery. The tap also keeps what it
 *      saw for the checks: each call (callee, transaction, phase, the
 *      callee's clock, the request) with the reply it got (success, or the
 *      error's code and type, and the "outcome" a participant claims), each
 *      event (transaction, clock, payload) and each dead letter document;
 *   3. seed data, then the steps, are played in order; each call step's
 *      expectation is one TAP test point. Every call the lab makes runs in
 *      a transaction of its own (the lab sets Natomic-Tx), so what happened
 *      in it -- its compensations, its events, its barrier rows -- is told
 *      apart from every other call's, even when its reply was lost;
 *   4. the final expectations (state read from the SQLite files, event,
 *      compensation, dead letter and recovery counts, barrier outcomes, each
 *      call's own compensations, events and barrier outcomes, invariants,
 *      expected violations) are checked repeatedly until they all hold or
 *      `eventually` ms passed since the last step -- every fault has healed
 *      by then or the story says not. With `hold`, checks that held are
 *      then checked again for that long: one that breaks (a late action
 *      arriving) fails, so a story cannot pass before the late action came;
 *   5. everything is stopped; the report gets the checks, the timeline and
 *      the recovery steps. When a restart was followed by a saga ended by
 *      recovery, the time between them is printed (progress line, a
 *      "# recovery_ms: N" TAP comment, the report) and never asserted on.
 *
 * Output is TAP 14 on stdout: one point per expectation, a YAML block with
 * expected, actual, the seed, the replay command and the service logs'
 * tails for each failure. Progress goes to stderr, one whole line per
 * scenario. One seed drives every random draw (fault probabilities); it is
 * printed and replayable. With concurrent calls the same draws can land on
 * different calls, since the order in which workers reach a point varies:
 * the invariants must hold for any such assignment, which is what those
 * stories check.
 *
 * Scenarios run several at once with --jobs N (default: the number of
 * cores). Each has its own NATS on its own port, its own temporary folder
 * and services, and one worker thread from start to stop (its children
 * die with the thread that started them). A scenario writes its TAP into a
 * buffer; the main thread prints the buffers in file order, numbering the
 * test points as it goes, with the progress line of each -- so TAP,
 * progress and report read the same whatever the number of jobs.
 */
#include "runner.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <natomic.h>

#include "message_json.h"
#include "message_registry.h"
#include "oracle.h"
#include "orders.pb-c.h"
#include "report.h"
#include "scenario.h"
#include "scenario_check.h"
#include "supervisor.h"
#include "timeline.h"

#define MAX_METHODS 64
#define CHECK_POLL_MS 100
#define N_TAPS 4
#define MAX_RESTARTS 64          /* restarts remembered for the recovery time        */
#define MAX_RECOVERY_EVENTS 2000 /* recovery events kept for the report              */
#define MAX_OBSERVED 200000      /* calls and events kept for the checks             */
#define PAIR_WINDOW 8192         /* a reply is paired with one of the last calls     */
#define MAX_JOBS 64
#define TX_LEN 32

/* ---- small helpers ------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static char *json_compact(const json_t *j, size_t max)
{
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) : NULL;
    if (text != NULL && strlen(text) > max) {
        text[max - 3] = '.';
        text[max - 2] = '.';
        text[max - 1] = '.';
        text[max] = '\0';
    }
    return text;
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool starts_with(const char *s, const char *prefix)
{
    return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static const char *json_text(const json_t *doc, const char *key)
{
    const char *v = json_string_value(json_object_get(doc, key));
    return v != NULL ? v : "";
}

/* A new transaction id for one call of the lab: 32 hex digits, as the library makes them. */
static void new_tx(char out[TX_LEN + 1])
{
    unsigned char bytes[TX_LEN / 2];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
        uint64_t x = (uint64_t)wall_ns() ^ ((uint64_t)(uintptr_t)out << 17);
        for (size_t i = 0; i < sizeof bytes; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes[i] = (unsigned char)x;
        }
    }
    for (size_t i = 0; i < sizeof bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
}

/* ---- the methods of the running services (from $SRV.INFO) -------------- */

typedef struct method_types {
    char subject[128];
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *reply;
} method_types_t;

/* ---- what the tap saw, kept for the checks ------------------------------ */

typedef struct observed_call {
    char service[32];        /* the callee                                          */
    char subject[128];       /* "<service>.<method>"                                 */
    char caller[32];         /* "lab" for the lab's own calls                         */
    char tx[80];
    char inbox[96];          /* the caller's inbox: pairs the reply with the call    */
    bool compensation;       /* Natomic-Phase: rollback                               */
    int64_t time_ns;         /* the callee's clock when it took the call (Natomic-Time-Ns) */
    json_t *request;         /* decoded, or NULL                                      */
    const ProtobufCMessageDescriptor *reply_desc;
    int answer;              /* 0 none yet, 1 success, -1 error                        */
    int code;
    char type[64];
    char claimed[24];        /* a success reply's "outcome" field                     */
    bool has_claim;
} observed_call_t;

typedef struct observed_event {
    char service[32];
    char type[64];
    char tx[80];
    int64_t time_ns;
    json_t *payload;         /* decoded, or NULL                                      */
} observed_event_t;

/* ---- one scenario's run ---------------------------------------------------- */

typedef struct run {
    const scenario_t *sc;
    const runner_options_t *opts;
    unsigned long long seed;
    char replay[1024];
    supervisor_t sv;
    bool sv_up;
    timeline_t tl;
    natsSubscription *tap[N_TAPS];   /* traces, events, dead letters, recovery      */
    method_types_t methods[MAX_METHODS];
    int n_methods;
    pthread_mutex_t mu;               /* everything the tap writes below            */
    observed_call_t *calls;
    size_t n_calls, cap_calls;
    observed_event_t *events;
    size_t n_events, cap_events;
    json_t *dead_letter_docs;         /* every dead letter, in the order seen       */
    json_t *event_counts;             /* "<service>.<type>" -> count                 */
    json_t *event_ids;                /* durable: Natomic-Event-Id already counted   */
    json_t *compensation_counts;      /* "<service>.<method>" -> count               */
    long long dead_letters;
    char **order_created;
    size_t n_order_created;
    long long restocked, deposited;
    long long recoveries;             /* "ended" events: compensated or incomplete   */
    report_recovery_t *recovery;      /* every recovery event seen, in order         */
    size_t n_recovery;
    struct restart_mark {             /* the story's restarts, for the recovery time */
        char service[32];
        char what[48];                /* "orders" or "orders-0"                       */
        int64_t wall_ns;
    } restarts[MAX_RESTARTS];
    size_t n_restarts;
    bool has_recovery_ms;             /* a restart, then an "ended" from that service */
    double recovery_ms;
    char recovery_restart[48];
    char (*step_tx)[TX_LEN + 1];      /* the transaction of each single-call step     */
    /* results */
    FILE *out;                        /* this scenario's TAP, numbered 1.. locally    */
    char *out_text;
    size_t out_len;
    int points;
    report_check_t *checks;
    size_t n_checks;
    int tap_failed;
    char *log_excerpt;               /* the services' log tails, for the report      */
    char kept[300];                  /* the folder kept with --keep                  */
    double duration_s;
} run_t;

static const method_types_t *find_method(const run_t *r, const char *subject)
{
    for (int i = 0; i < r->n_methods; i++)
        if (strcmp(r->methods[i].subject, subject) == 0)
            return &r->methods[i];
    return NULL;
}

/*
 * Asks every started service for its methods' protobuf types. A service
 * answers $SRV.PING (what the supervisor waits for) a moment before it
 * listens on $SRV.INFO: "no responders" then means "not yet", so it is
 * asked again for up to 2 s.
 */
static void learn_methods(run_t *r)
{
    for (size_t i = 0; i < r->sc->n_services; i++) {
        char subject[128];
        snprintf(subject, sizeof subject, "$SRV.INFO.%s", r->sc->services[i].name);
        natsMsg *m = NULL;
        natsStatus s = NATS_NO_RESPONDERS;
        for (int attempt = 0; attempt < 100 && s == NATS_NO_RESPONDERS; attempt++) {
            if (attempt > 0)
                sleep_ms(20);
            s = natsConnection_RequestString(&m, r->sv.nc, subject, "", 2000);
        }
        if (s != NATS_OK)
            continue;
        json_t *info = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
        natsMsg_Destroy(m);
        size_t k;
        json_t *ep;
        json_array_foreach(json_object_get(info, "endpoints"), k, ep) {
            if (r->n_methods == MAX_METHODS)
                break;
            json_t *md = json_object_get(ep, "metadata");
            method_types_t *mt = &r->methods[r->n_methods];
            snprintf(mt->subject, sizeof mt->subject, "%s", json_string_value(json_object_get(ep, "subject")));
            mt->request = message_registry_find(json_string_value(json_object_get(md, "request_type")));
            mt->reply = message_registry_find(json_string_value(json_object_get(md, "reply_type")));
            if (mt->request != NULL && mt->reply != NULL)
                r->n_methods++;
        }
        json_decref(info);
    }
}

/* ---- the tap: what crosses NATS, recorded into the timeline ------------ */

static const char *hdr(natsMsg *m, const char *key)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

static int64_t hdr_time_ns(natsMsg *m)
{
    const char *t = hdr(m, NATOMIC_HDR_TIME_NS);
    return t != NULL ? strtoll(t, NULL, 10) : wall_ns();
}

static void count_key(json_t *counts, const char *key)
{
    json_t *v = json_object_get(counts, key);
    json_object_set_new(counts, key, json_integer(v != NULL ? json_integer_value(v) + 1 : 1));
}

/* A payload of a known type as JSON, or NULL. */
static json_t *payload_json(const ProtobufCMessageDescriptor *d, natsMsg *m)
{
    ProtobufCMessage *msg = d != NULL ? protobuf_c_message_unpack(d, NULL, (size_t)natsMsg_GetDataLength(m),
                                                                  (const uint8_t *)natsMsg_GetData(m))
                                      : NULL;
    json_t *j = msg != NULL ? message_to_json(msg) : NULL;
    protobuf_c_message_free_unpacked(msg, NULL);
    return j;
}

/* "prefix {...json...}" for the diagram. */
static void payload_label(char *out, size_t cap, const char *prefix, const json_t *j)
{
    char *text = json_compact(j, 110);
    snprintf(out, cap, "%s%s%s", prefix, text != NULL ? " " : "", text != NULL ? text : "");
    free(text);
}

static void tap_call(run_t *r, const char *subject, natsMsg *m)
{
    char svc[32] = "", method[64] = "", label[200];
    if (sscanf(subject, "%31[^.].%63s", svc, method) != 2)
        return;
    const char *caller = hdr(m, NATOMIC_HDR_CALLER), *phase = hdr(m, NATOMIC_HDR_PHASE);
    const char *inbox = hdr(m, "Natomic-Reply-To"), *tx = hdr(m, NATOMIC_HDR_TX);
    bool compensation = phase != NULL && strcmp(phase, "rollback") == 0;
    const method_types_t *mt = find_method(r, subject);
    json_t *request = payload_json(mt != NULL ? mt->request : NULL, m);
    payload_label(label, sizeof label, method, request);
    pthread_mutex_lock(&r->mu);
    if (compensation)
        count_key(r->compensation_counts, subject);
    if (r->n_calls == r->cap_calls && r->cap_calls < MAX_OBSERVED) {
        size_t cap = r->cap_calls ? r->cap_calls * 2 : 256;
        observed_call_t *grown = realloc(r->calls, cap * sizeof *grown);
        if (grown != NULL) {
            r->calls = grown;
            r->cap_calls = cap;
        }
    }
    if (r->n_calls < r->cap_calls) {
        observed_call_t *c = &r->calls[r->n_calls++];
        memset(c, 0, sizeof *c);
        snprintf(c->service, sizeof c->service, "%s", svc);
        snprintf(c->subject, sizeof c->subject, "%s", subject);
        snprintf(c->caller, sizeof c->caller, "%s", caller != NULL ? caller : "lab");
        snprintf(c->tx, sizeof c->tx, "%s", tx != NULL ? tx : "");
        snprintf(c->inbox, sizeof c->inbox, "%s", inbox != NULL ? inbox : "");
        c->compensation = compensation;
        c->time_ns = hdr_time_ns(m);
        c->request = request;
        c->reply_desc = mt != NULL ? mt->reply : NULL;
        request = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    json_decref(request);
    timeline_add(&r->tl, compensation ? TL_COMPENSATION : TL_CALL, caller != NULL ? caller : "lab", svc, false,
                 "%s", label);
}

/* Pairs a reply with the earliest unanswered call made from its inbox (a redelivered call shares it). */
static void tap_reply(run_t *r, natsMsg *m)
{
    const char *inbox = hdr(m, "Natomic-Reply-To");
    if (inbox == NULL || *inbox == '\0')
        return;
    const char *code = hdr(m, NATOMIC_HDR_SERVICE_ERROR_CODE), *replayed = hdr(m, NATOMIC_HDR_REPLAYED);
    const char *type = hdr(m, NATOMIC_HDR_ERROR_TYPE);
    pthread_mutex_lock(&r->mu);
    observed_call_t *found = NULL;
    size_t from = r->n_calls > PAIR_WINDOW ? r->n_calls - PAIR_WINDOW : 0;
    for (size_t i = from; i < r->n_calls && found == NULL; i++)
        if (r->calls[i].answer == 0 && strcmp(r->calls[i].inbox, inbox) == 0)
            found = &r->calls[i];
    char callee[32] = "", caller[32] = "";
    const ProtobufCMessageDescriptor *reply_desc = NULL;
    if (found != NULL) {
        found->answer = code != NULL ? -1 : 1;
        found->code = code != NULL ? atoi(code) : 0;
        snprintf(found->type, sizeof found->type, "%s", type != NULL ? type : "");
        snprintf(callee, sizeof callee, "%s", found->service);
        snprintf(caller, sizeof caller, "%s", found->caller);
        reply_desc = found->reply_desc;
    }
    pthread_mutex_unlock(&r->mu);
    if (found == NULL)
        return;
    bool again = replayed != NULL && strcmp(replayed, "true") == 0;
    if (code != NULL) {
        const char *rb = hdr(m, NATOMIC_HDR_ROLLBACK);
        timeline_add(&r->tl, TL_REPLY, callee, caller, true, "%s %s (rollback %s%s)", code, type ? type : "?",
                     rb ? rb : "none", again ? ", replayed" : "");
        return;
    }
    json_t *reply = payload_json(reply_desc, m);
    const char *claimed = json_string_value(json_object_get(reply, "outcome"));
    if (claimed != NULL) {
        /* `found` may have moved (the array grows): the claim goes to the first answered call of
         * the inbox still without one, which is the call just answered. */
        pthread_mutex_lock(&r->mu);
        for (size_t i = from; i < r->n_calls; i++) {
            observed_call_t *c = &r->calls[i];
            if (c->answer == 1 && !c->has_claim && strcmp(c->inbox, inbox) == 0) {
                snprintf(c->claimed, sizeof c->claimed, "%s", claimed);
                c->has_claim = true;
                break;
            }
        }
        pthread_mutex_unlock(&r->mu);
    }
    char label[200];
    payload_label(label, sizeof label, again ? "ok (replayed)" : "ok", reply);
    json_decref(reply);
    timeline_add(&r->tl, TL_REPLY, callee, caller, false, "%s", label);
}

/* The message type of an event: "orders" and "order_created" -> orders.OrderCreated. */
static const ProtobufCMessageDescriptor *event_type(const char *service, const char *type)
{
    char name[160];
    int n = snprintf(name, sizeof name, "%s.", service);
    bool up = true;
    for (const char *c = type; *c != '\0' && n > 0 && (size_t)n + 1 < sizeof name; c++) {
        if (*c == '_') {
            up = true;
            continue;
        }
        name[n++] = up && *c >= 'a' && *c <= 'z' ? (char)(*c - 'a' + 'A') : *c;
        up = false;
    }
    name[n > 0 ? n : 0] = '\0';
    return message_registry_find(name);
}

/*
 * An event. In durable mode consumers read the stream EVENTS, which drops a
 * second publish with the same Nats-Msg-Id (= Natomic-Event-Id): an outbox
 * relay that publishes again after a crash is not a second event there, but
 * the tap, a core subscriber, sees both. So a durable story counts distinct
 * event ids; a memory story counts every delivery, as its consumers see them.
 */
static void tap_event(run_t *r, const char *subject, natsMsg *m)
{
    char svc[32] = "", type[64] = "";
    sscanf(subject, "%31[^.].%63s", svc, type);
    char key[100];
    snprintf(key, sizeof key, "%s.%s", svc, type);
    const char *id = hdr(m, NATOMIC_HDR_EVENT_ID), *tx = hdr(m, NATOMIC_HDR_TX);
    json_t *payload = payload_json(event_type(svc, type), m);
    bool again = false;
    pthread_mutex_lock(&r->mu);
    if (r->sc->durable && id != NULL && *id != '\0') {
        again = json_object_get(r->event_ids, id) != NULL;
        if (!again)
            json_object_set_new(r->event_ids, id, json_true());
    }
    if (!again)
        count_key(r->event_counts, key);
    if (!again && strcmp(key, "orders.order_created") == 0) {
        Orders__OrderCreated *ev = orders__order_created__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                                 (const uint8_t *)natsMsg_GetData(m));
        char **grown = ev != NULL ? realloc(r->order_created, (r->n_order_created + 1) * sizeof *grown) : NULL;
        if (grown != NULL) {
            r->order_created = grown;
            r->order_created[r->n_order_created++] = strdup(ev->order_id);
        }
        orders__order_created__free_unpacked(ev, NULL);
    }
    if (!again && r->n_events == r->cap_events && r->cap_events < MAX_OBSERVED) {
        size_t cap = r->cap_events ? r->cap_events * 2 : 64;
        observed_event_t *grown = realloc(r->events, cap * sizeof *grown);
        if (grown != NULL) {
            r->events = grown;
            r->cap_events = cap;
        }
    }
    if (!again && r->n_events < r->cap_events) {
        observed_event_t *e = &r->events[r->n_events++];
        memset(e, 0, sizeof *e);
        snprintf(e->service, sizeof e->service, "%s", svc);
        snprintf(e->type, sizeof e->type, "%s", type);
        snprintf(e->tx, sizeof e->tx, "%s", tx != NULL ? tx : "");
        e->time_ns = hdr_time_ns(m);
        e->payload = payload;
        payload = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    json_decref(payload);
    if (again)
        timeline_add(&r->tl, TL_EVENT, svc, "events", false, "%s again (same event id: the stream keeps one)", type);
    else
        timeline_add(&r->tl, TL_EVENT, svc, "events", false, "%s", type);
}

/*
 * A recovery event (durable mode): {"event": claimed|compensated|deferred|
 * ended, "service", "instance", "call_id", "tx", "detail", "time_ns"}. Kept
 * for the report's Recovery section, drawn on the service's lifeline, and
 * counted: an "ended" whose outcome is compensated or incomplete is a saga
 * recovery finished for a dead owner (expect.recoveries). The first "ended"
 * after a restart of its service gives the story's recovery time, from the
 * service's own clock stamp (same host, so no delivery delay in it).
 */
static void tap_recovery(run_t *r, natsMsg *m)
{
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
    const char *event = json_text(doc, "event");
    if (*event == '\0') {
        json_decref(doc);
        return;
    }
    const char *service = json_text(doc, "service"), *detail = json_text(doc, "detail");
    json_t *t = json_object_get(doc, "time_ns");
    int64_t at_ns = json_is_integer(t) ? (int64_t)json_integer_value(t) : wall_ns();
    bool ended = strcmp(event, "ended") == 0;
    bool recovered = ended && (starts_with(detail, "outcome compensated") || starts_with(detail, "outcome incomplete"));
    /* Gone wrong: a saga ended incomplete, or one compensation dead-lettered ("0 dead-lettered" is not). */
    bool bad = starts_with(detail, "outcome incomplete") ||
               (strcmp(event, "compensated") == 0 && ends_with(detail, ": dead-lettered"));
    report_recovery_t rec;
    memset(&rec, 0, sizeof rec);
    rec.t_us = timeline_elapsed_us(&r->tl);
    snprintf(rec.event, sizeof rec.event, "%s", event);
    snprintf(rec.service, sizeof rec.service, "%s", service);
    snprintf(rec.instance, sizeof rec.instance, "%s", json_text(doc, "instance"));
    snprintf(rec.call_id, sizeof rec.call_id, "%s", json_text(doc, "call_id"));
    snprintf(rec.tx, sizeof rec.tx, "%s", json_text(doc, "tx"));
    snprintf(rec.detail, sizeof rec.detail, "%s", detail);
    json_decref(doc);

    pthread_mutex_lock(&r->mu);
    if (r->n_recovery < MAX_RECOVERY_EVENTS) {
        report_recovery_t *grown = realloc(r->recovery, (r->n_recovery + 1) * sizeof *grown);
        if (grown != NULL) {
            r->recovery = grown;
            r->recovery[r->n_recovery++] = rec;
        }
    }
    if (recovered)
        r->recoveries++;
    if (ended && !r->has_recovery_ms) {
        for (size_t i = r->n_restarts; i > 0; i--) {
            const struct restart_mark *mk = &r->restarts[i - 1];
            if (strcmp(mk->service, rec.service) == 0 && mk->wall_ns <= at_ns) {
                r->has_recovery_ms = true;
                r->recovery_ms = (double)(at_ns - mk->wall_ns) / 1e6;
                snprintf(r->recovery_restart, sizeof r->recovery_restart, "%s", mk->what);
                break;
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    timeline_add(&r->tl, TL_RECOVERY, rec.service, rec.service, bad, "%s %s %.8s: %s", rec.instance, rec.event,
                 rec.call_id, rec.detail);
}

/* A dead letter: counted, its document kept for expect.dead_letters, drawn. */
static void tap_dead_letter(run_t *r, const char *svc, natsMsg *m)
{
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
    json_t *list = json_object_get(doc, "list"), *cmd = json_object_get(doc, "command");
    timeline_add(&r->tl, TL_DEAD_LETTER, svc, svc, true, "%s command '%s' given up",
                 json_is_string(list) ? json_string_value(list) : "?", json_is_string(cmd) ? json_string_value(cmd) : "?");
    pthread_mutex_lock(&r->mu);
    r->dead_letters++;
    json_array_append_new(r->dead_letter_docs, doc != NULL ? doc : json_object());
    pthread_mutex_unlock(&r->mu);
}

/*
 * The lab observes without subscribing to request subjects (a subscriber
 * there would count as a responder and hide "no responders" from callers
 * of a dead service): services run with NATOMIC_TRACE=1 and copy each call
 * and reply to natomic.trace.{call,reply}.<subject>; events, dead letters
 * and recovery steps are read where they are published.
 */
static void on_tap(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    run_t *r = closure;
    const char *subject = natsMsg_GetSubject(m);
    if (strncmp(subject, "natomic.trace.call.", 19) == 0)
        tap_call(r, subject + 19, m);
    else if (strncmp(subject, "natomic.trace.reply.", 20) == 0)
        tap_reply(r, m);
    else if (strncmp(subject, "events.", 7) == 0)
        tap_event(r, subject + 7, m);
    else if (strncmp(subject, NATOMIC_RECOVERY_PREFIX ".", strlen(NATOMIC_RECOVERY_PREFIX) + 1) == 0)
        tap_recovery(r, m);
    else if (strncmp(subject, NATOMIC_DEADLETTER_PREFIX ".", strlen(NATOMIC_DEADLETTER_PREFIX) + 1) == 0)
        tap_dead_letter(r, subject + strlen(NATOMIC_DEADLETTER_PREFIX) + 1, m);
    natsMsg_Destroy(m);
}

/* ---- checks and TAP ------------------------------------------------------- */

static void yaml_quoted(FILE *f, const char *key, const char *value)
{
    fprintf(f, "  %s: \"", key);
    for (const char *c = value != NULL ? value : ""; *c; c++) {
        if (*c == '"' || *c == '\\')
            fputc('\\', f);
        if (*c == '\n')
            fputs("\\n", f);
        else
            fputc(*c, f);
    }
    fputs("\"\n", f);
}

/*
 * One TAP test point, into the scenario's buffer (numbered from 1 there;
 * the main thread renumbers it for the whole run), recorded for the
 * report too.
 */
static void point(run_t *r, bool ok, const char *expected, const char *actual, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void point(run_t *r, bool ok, const char *expected, const char *actual, const char *fmt, ...)
{
    char desc[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    const char *who = r->sc->group[0] != '\0' ? r->sc->group : "";
    fprintf(r->out, "%s %d - %s%s%s: %s\n", ok ? "ok" : "not ok", ++r->points, who, who[0] ? "/" : "", r->sc->name,
            desc);
    report_check_t *grown = realloc(r->checks, (r->n_checks + 1) * sizeof *grown);
    if (grown != NULL) {
        r->checks = grown;
        report_check_t *c = &r->checks[r->n_checks++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", desc);
        c->ok = ok;
        if (!ok)
            snprintf(c->detail, sizeof c->detail, "expected %s, got %s", expected ? expected : "?",
                     actual ? actual : "?");
    }
    if (ok)
        return;
    r->tap_failed++;
    timeline_add(&r->tl, TL_NOTE, "lab", "lab", true, "check failed: %s", desc);
    fprintf(r->out, "  ---\n");
    yaml_quoted(r->out, "expected", expected);
    yaml_quoted(r->out, "actual", actual);
    fprintf(r->out, "  seed: %llu\n", r->seed);
    yaml_quoted(r->out, "replay", r->replay);
    if (r->sv_up) {
        fprintf(r->out, "  logs: |\n");
        for (size_t i = 0; i < r->sc->n_services; i++) {
            char *tail = supervisor_log_tail(&r->sv, r->sc->services[i].name, 6);
            char *save = NULL;
            for (char *line = tail ? strtok_r(tail, "\n", &save) : NULL; line != NULL;
                 line = strtok_r(NULL, "\n", &save))
                fprintf(r->out, "    %s\n", line);
            free(tail);
        }
    }
    fprintf(r->out, "  ...\n");
}

/* ---- calls ------------------------------------------------------------------ */

/* Copies a request, replacing "{i}" and "{i%N}" in strings (a whole-string template becomes a number). */
static json_t *expand(const json_t *tmpl, long i)
{
    if (json_is_object(tmpl)) {
        json_t *o = json_object();
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)tmpl, k, v) json_object_set_new(o, k, expand(v, i));
        return o;
    }
    if (json_is_array(tmpl)) {
        json_t *a = json_array();
        size_t k;
        json_t *v;
        json_array_foreach(tmpl, k, v) json_array_append_new(a, expand(v, i));
        return a;
    }
    if (!json_is_string(tmpl) || strchr(json_string_value(tmpl), '{') == NULL)
        return json_deep_copy(tmpl);
    char out[490];
    bool whole = scenario_expand_text(json_string_value(tmpl), i, out, sizeof out);
    return whole ? json_integer(strtoll(out, NULL, 10)) : json_string(out);
}

/* An integer field as message_json reads it: a JSON integer or a string of digits. */
static long long json_int_any(const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

/* What one call of the lab got back. */
typedef struct call_result {
    natomic_status_t st;
    int code;               /* Nats-Service-Error-Code of an error reply, else 0 */
    char type[64];          /* Natomic-Error-Type                               */
    char message[256];      /* Nats-Service-Error                               */
    char rollback[16];      /* Natomic-Rollback: complete | incomplete | none   */
    bool replayed;          /* Natomic-Replayed: true                           */
    json_t *reply;          /* on success                                       */
    char error[256];        /* a local failure (bad request)                    */
} call_result_t;

/*
 * One request from the lab, in the transaction `tx`: the headers
 * natomic_request_idempotent() sends (Natomic-Deadline-Ms, the key) plus
 * Natomic-Tx, so that everything the call causes -- compensations, events,
 * barrier rows, dead letters -- carries an id the lab knows.
 */
static void lab_request(run_t *r, const char *subject, const uint8_t *data, size_t len,
                        const ProtobufCMessageDescriptor *reply_desc, int timeout_ms, const char *key, const char *tx,
                        call_result_t *res)
{
    natsMsg *m = NULL, *reply = NULL;
    char deadline[32];
    snprintf(deadline, sizeof deadline, "%d", timeout_ms);
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)data, (int)len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_DEADLINE_MS, deadline);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_TX, tx);
    if (s == NATS_OK && key != NULL)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_IDEMPOTENCY_KEY, key);
    if (s == NATS_OK)
        s = natsConnection_RequestMsg(&reply, r->sv.nc, m, timeout_ms);
    natsMsg_Destroy(m);
    if (s != NATS_OK) {
        res->st = s == NATS_TIMEOUT ? NATOMIC_ETIMEOUT : s == NATS_NO_RESPONDERS ? NATOMIC_ENORESPONDERS : NATOMIC_ENATS;
        return;
    }
    const char *v = hdr(reply, NATOMIC_HDR_REPLAYED);
    res->replayed = v != NULL && strcmp(v, "true") == 0;
    v = hdr(reply, NATOMIC_HDR_ROLLBACK);
    snprintf(res->rollback, sizeof res->rollback, "%s", v != NULL ? v : "none");
    const char *code = hdr(reply, NATOMIC_HDR_SERVICE_ERROR_CODE);
    if (code != NULL) {
        res->code = atoi(code) > 0 ? atoi(code) : 500;
        res->st = natomic_error_kind(res->code);
        snprintf(res->type, sizeof res->type, "%s", (v = hdr(reply, NATOMIC_HDR_ERROR_TYPE)) != NULL ? v : "");
        snprintf(res->message, sizeof res->message, "%s", (v = hdr(reply, NATOMIC_HDR_SERVICE_ERROR)) != NULL ? v : "");
    } else {
        ProtobufCMessage *msg = protobuf_c_message_unpack(reply_desc, NULL, (size_t)natsMsg_GetDataLength(reply),
                                                          (const uint8_t *)natsMsg_GetData(reply));
        res->st = msg != NULL ? NATOMIC_OK : NATOMIC_EBADREPLY;
        res->reply = msg != NULL ? message_to_json(msg) : NULL;
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    natsMsg_Destroy(reply);
}

static void call_once(run_t *r, const scenario_step_t *step, long index, const char *tx, call_result_t *res)
{
    memset(res, 0, sizeof *res);
    const method_types_t *mt = find_method(r, step->subject);
    if (mt == NULL) {
        res->st = NATOMIC_ENOMETHOD;
        snprintf(res->error, sizeof res->error, "no running service offers %s", step->subject);
        return;
    }
    json_t *req_json = expand(step->request, index);
    ProtobufCMessage *req = NULL;
    if (message_from_json(&req, mt->request, req_json, res->error, sizeof res->error) != 0) {
        res->st = NATOMIC_EBADINPUT;
        json_decref(req_json);
        return;
    }
    char key[SCENARIO_MAX_IDEMPOTENCY_KEY + 1] = "";
    if (step->idempotency_key != NULL)
        scenario_expand_text(step->idempotency_key, index, key, sizeof key); /* fits: checked by the parser */
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *data = malloc(len > 0 ? len : 1);
    if (data == NULL) {
        res->st = NATOMIC_ENOMEM;
        snprintf(res->error, sizeof res->error, "out of memory");
    } else {
        protobuf_c_message_pack(req, data);
        lab_request(r, step->subject, data, len, mt->reply, step->timeout_ms, key[0] != '\0' ? key : NULL, tx, res);
    }
    free(data);
    if (res->st == NATOMIC_OK) {
        /* What the lab itself put in, for the conservation invariants. */
        pthread_mutex_lock(&r->mu);
        if (strcmp(step->subject, "inventory.restock") == 0)
            r->restocked += json_int_any(json_object_get(req_json, "qty"));
        else if (strcmp(step->subject, "payments.deposit") == 0)
            r->deposited += json_int_any(json_object_get(req_json, "amount"));
        pthread_mutex_unlock(&r->mu);
    }
    protobuf_c_message_free_unpacked(req, NULL);
    json_decref(req_json);
}

/* "ok {...}", "error PaymentDeclined (code 422, rollback complete): ...", "timeout", ... */
static void describe_result(const call_result_t *res, char *out, size_t cap)
{
    if (res->error[0] != '\0') {
        snprintf(out, cap, "not sent: %s", res->error);
    } else if (res->st == NATOMIC_OK) {
        char *text = json_compact(res->reply, 200);
        snprintf(out, cap, "ok %s%s", text ? text : "{}", res->replayed ? ", replayed" : "");
        free(text);
    } else if (res->st == NATOMIC_ETIMEOUT && res->code == 0) {
        snprintf(out, cap, "timeout (no reply in time)");
    } else if (res->code != 0) {
        snprintf(out, cap, "error %s (code %d, rollback %s%s): %s", res->type, res->code, res->rollback,
                 res->replayed ? ", replayed" : "", res->message);
    } else {
        snprintf(out, cap, "%s", natomic_strerror(res->st));
    }
}

static bool json_matches(const json_t *want, const json_t *got)
{
    if (json_is_number(want) && json_is_number(got))
        return fabs(json_number_value(want) - json_number_value(got)) < 1e-9;
    if (json_is_object(want)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)want, k, v) if (!json_matches(v, json_object_get(got, k))) return false;
        return true;
    }
    if (json_is_array(want) && json_is_array(got)) {
        if (json_array_size(want) != json_array_size(got))
            return false;
        for (size_t i = 0; i < json_array_size(want); i++)
            if (!json_matches(json_array_get(want, i), json_array_get(got, i)))
                return false;
        return true;
    }
    return json_equal(want, got);
}

static bool result_matches(const scenario_call_expect_t *e, bool has_expect, const call_result_t *res)
{
    if (has_expect && e->any)
        return true;
    if (has_expect && e->timeout)
        return res->st == NATOMIC_ETIMEOUT && res->code == 0;
    /* Natomic-Replayed comes with a reply or an error reply; the parser keeps it from any and timeout. */
    if (has_expect && e->check_replayed && res->replayed != e->replayed)
        return false;
    if (has_expect && (e->error != NULL || e->code != 0)) {
        if (res->code == 0)
            return false;
        if (e->error != NULL && strcmp(res->type, e->error) != 0)
            return false;
        if (e->code != 0 && res->code != e->code)
            return false;
        return e->rollback == NULL || strcmp(res->rollback, e->rollback) == 0;
    }
    if (res->st != NATOMIC_OK)
        return false;
    return !has_expect || e->reply == NULL || json_matches(e->reply, res->reply);
}

static void describe_expect(const scenario_step_t *s, char *out, size_t cap)
{
    const scenario_call_expect_t *e = &s->expect;
    if (s->has_expect && e->any) {
        snprintf(out, cap, "any outcome");
    } else if (s->has_expect && e->timeout) {
        snprintf(out, cap, "timeout (no reply in time)");
    } else if (s->has_expect && (e->error != NULL || e->code != 0)) {
        char code[24] = "";
        if (e->code != 0)
            snprintf(code, sizeof code, "%scode %d", e->error != NULL ? ", " : "", e->code);
        snprintf(out, cap, "error %s%s%s%s", e->error != NULL ? e->error : "", code, e->rollback ? ", rollback " : "",
                 e->rollback ? e->rollback : "");
    } else if (s->has_expect && e->reply != NULL) {
        char *text = json_compact(e->reply, 200);
        snprintf(out, cap, "ok with %s", text ? text : "{}");
        free(text);
    } else {
        snprintf(out, cap, "ok");
    }
    if (s->has_expect && e->check_replayed) {
        size_t used = strlen(out);
        if (used < cap)
            snprintf(out + used, cap - used, ", %s", e->replayed ? "replayed" : "not replayed");
    }
}

/* A repeated call: `concurrency` threads share the indices 0..repeat-1. */
typedef struct batch {
    run_t *r;
    const scenario_step_t *step;
    atomic_long next;
    pthread_mutex_t mu;
    long ok, errors, timeouts, matched;
    char first_mismatch[400];
    json_t *error_types;
} batch_t;

static void *batch_worker(void *arg)
{
    batch_t *b = arg;
    for (;;) {
        long i = atomic_fetch_add(&b->next, 1);
        if (i >= b->step->repeat)
            break;
        call_result_t res;
        char tx[TX_LEN + 1];
        new_tx(tx);
        call_once(b->r, b->step, i, tx, &res);
        bool match = result_matches(&b->step->expect, b->step->has_expect, &res);
        pthread_mutex_lock(&b->mu);
        if (res.st == NATOMIC_OK)
            b->ok++;
        else if (res.code != 0) {
            b->errors++;
            count_key(b->error_types, res.type);
        } else
            b->timeouts++;
        if (match)
            b->matched++;
        else if (b->first_mismatch[0] == '\0')
            describe_result(&res, b->first_mismatch, sizeof b->first_mismatch);
        pthread_mutex_unlock(&b->mu);
        json_decref(res.reply);
    }
    return NULL;
}

/* Plays a call step; returns true when it met its expectation. Emits one point unless a passing seed call. */
static bool play_call(run_t *r, const scenario_step_t *step, size_t index, bool seed_data)
{
    char expected[300], actual[600];
    describe_expect(step, expected, sizeof expected);
    const char *what = seed_data ? "seed data" : "step";
    if (step->repeat <= 1) {
        call_result_t res;
        char tx[TX_LEN + 1];
        new_tx(tx);
        if (!seed_data)
            memcpy(r->step_tx[index], tx, sizeof tx);
        call_once(r, step, 0, tx, &res);
        describe_result(&res, actual, sizeof actual);
        bool ok = result_matches(&step->expect, step->has_expect, &res);
        json_decref(res.reply);
        if (!seed_data || !ok)
            point(r, ok, expected, actual, "%s %zu (line %d) %s -> %s", what, index + 1, step->line, step->subject,
                  expected);
        return ok;
    }
    batch_t b = {.r = r, .step = step, .error_types = json_object()};
    atomic_init(&b.next, 0);
    pthread_mutex_init(&b.mu, NULL);
    int n = step->concurrency > 0 ? step->concurrency : 1;
    pthread_t threads[64];
    int started = 0;
    for (int i = 0; i < n && i < 64; i++)
        if (pthread_create(&threads[started], NULL, batch_worker, &b) == 0)
            started++;
    if (started == 0)
        batch_worker(&b);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    char *types = json_compact(b.error_types, 200);
    snprintf(actual, sizeof actual, "%ld ok, %ld errors %s, %ld no reply%s%s", b.ok, b.errors, types ? types : "",
             b.timeouts, b.first_mismatch[0] ? "; first unexpected: " : "", b.first_mismatch);
    free(types);
    bool ok = b.matched == step->repeat;
    timeline_add(&r->tl, TL_NOTE, "lab", "lab", !ok, "%d x %s: %s", step->repeat, step->subject, actual);
    if (!seed_data || !ok)
        point(r, ok, expected, actual, "%s %zu (line %d) %d x %s, %d at once -> %s", what, index + 1, step->line,
              step->repeat, step->subject, n, expected);
    json_decref(b.error_types);
    pthread_mutex_destroy(&b.mu);
    return ok;
}

/* ---- the other steps ------------------------------------------------------------ */

/* "point=action[@times][%p]" for one fault. */
static void fault_spec(const scenario_fault_t *f, char *out, size_t cap)
{
    int len = snprintf(out, cap, "%s=%s", f->point, f->action);
    if (f->times > 0 && len > 0 && (size_t)len < cap)
        len += snprintf(out + len, cap - (size_t)len, "@%d", f->times);
    if (f->probability < 1.0 && len > 0 && (size_t)len < cap)
        snprintf(out + len, cap - (size_t)len, "%%%g", f->probability);
}

/*
 * Applies a fault list to every instance of a service through its
 * $NATOMIC.FAULTS.<name> control subject (the services run with
 * NATOMIC_FAULT_CONTROL=1), or with `instance` >= 0 to that instance
 * alone through $NATOMIC.FAULTS.<name>.<name>-<instance> (the instance
 * names the supervisor gives, NATOMIC_INSTANCE). 0 when every instance
 * addressed answered "ok".
 */
static int apply_faults(run_t *r, const char *service, int instance, const char *spec)
{
    int instances = 0;
    if (supervisor_find(&r->sv, service, &instances) == NULL || instances == 0 || instance >= instances) {
        fprintf(stderr, "natomic-lab: no service %s (instance %d) to apply faults to\n", service, instance);
        return -1;
    }
    char subject[200];
    if (instance >= 0) {
        snprintf(subject, sizeof subject, "$NATOMIC.FAULTS.%s.%s-%d", service, service, instance);
        instances = 1;
    } else {
        snprintf(subject, sizeof subject, "$NATOMIC.FAULTS.%s", service);
    }
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    int ok = 0;
    if (natsInbox_Create(&inbox) == NATS_OK && natsConnection_SubscribeSync(&sub, r->sv.nc, inbox) == NATS_OK &&
        natsConnection_PublishRequestString(r->sv.nc, subject, inbox, spec) == NATS_OK) {
        for (int i = 0; i < instances; i++) {
            natsMsg *m = NULL;
            if (natsSubscription_NextMsg(&m, sub, 2000) != NATS_OK)
                break;
            if (natsMsg_GetDataLength(m) == 2 && memcmp(natsMsg_GetData(m), "ok", 2) == 0)
                ok++;
            else
                fprintf(stderr, "natomic-lab: %s refused faults '%s': %.*s\n", service, spec,
                        natsMsg_GetDataLength(m), natsMsg_GetData(m));
            natsMsg_Destroy(m);
        }
    }
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
    if (ok != instances)
        fprintf(stderr, "natomic-lab: %d of %d instances of %s applied '%s' (%s)\n", ok, instances, service, spec,
                subject);
    return ok == instances ? 0 : -1;
}

/* " on orders-1" for a fault or step on one instance, "" for all; into buf. */
static const char *on_instance(char *buf, size_t cap, const char *service, int instance)
{
    if (instance < 0)
        snprintf(buf, cap, "%s", "");
    else
        snprintf(buf, cap, " on %s-%d", service, instance);
    return buf;
}

/* Remembers a restart (before it happens: recovery starts as the process does). */
static void mark_restart(run_t *r, const char *service, int instance)
{
    pthread_mutex_lock(&r->mu);
    if (r->n_restarts < MAX_RESTARTS) {
        struct restart_mark *mk = &r->restarts[r->n_restarts++];
        snprintf(mk->service, sizeof mk->service, "%s", service);
        if (instance < 0)
            snprintf(mk->what, sizeof mk->what, "%s", service);
        else
            snprintf(mk->what, sizeof mk->what, "%s-%d", service, instance);
        mk->wall_ns = wall_ns();
    }
    pthread_mutex_unlock(&r->mu);
}

static bool play_step(run_t *r, const scenario_step_t *s, size_t index)
{
    int rc = 0;
    const char *svc = s->service;
    int k = s->instance; /* kill, restart, pause, resume: -1 every instance */
    char on[80];
    switch (s->kind) {
    case STEP_CALL:
        return play_call(r, s, index, false);
    case STEP_KILL:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, true, "kill -9%s", on_instance(on, sizeof on, svc, k));
        rc = k < 0 ? supervisor_kill(&r->sv, svc) : supervisor_kill_instance(&r->sv, svc, k);
        break;
    case STEP_RESTART:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, false, "restart%s", on_instance(on, sizeof on, svc, k));
        mark_restart(r, svc, k);
        rc = k < 0 ? supervisor_restart(&r->sv, svc) : supervisor_restart_instance(&r->sv, svc, k);
        break;
    case STEP_PAUSE:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, true, "pause (SIGSTOP)%s", on_instance(on, sizeof on, svc, k));
        rc = k < 0 ? supervisor_pause(&r->sv, svc) : supervisor_pause_instance(&r->sv, svc, k);
        break;
    case STEP_RESUME:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, false, "resume (SIGCONT)%s", on_instance(on, sizeof on, svc, k));
        rc = k < 0 ? supervisor_resume(&r->sv, svc) : supervisor_resume_instance(&r->sv, svc, k);
        break;
    case STEP_CUT:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, true, "connection cut");
        rc = supervisor_link(&r->sv, svc, FAULT_PROXY_CUT, 0);
        break;
    case STEP_BLACKHOLE:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, true, "connection blackholed");
        rc = supervisor_link(&r->sv, svc, FAULT_PROXY_BLACKHOLE, 0);
        break;
    case STEP_DELAY_LINK:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, true, "link delayed %d ms", s->ms);
        rc = supervisor_link(&r->sv, svc, FAULT_PROXY_DELAY, s->ms);
        break;
    case STEP_HEAL:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, false, "connection healed");
        rc = supervisor_link(&r->sv, svc, FAULT_PROXY_PASS, 0);
        break;
    case STEP_NATS_RESTART:
        timeline_add(&r->tl, TL_FAULT, "lab", "lab", true, "NATS server restart");
        rc = supervisor_restart_nats(&r->sv);
        break;
    case STEP_FAULT: {
        char spec[400];
        fault_spec(&s->fault, spec, sizeof spec);
        timeline_add(&r->tl, TL_FAULT, "lab", s->fault.service, true, "%s%s", spec,
                     on_instance(on, sizeof on, s->fault.service, s->fault.instance));
        rc = apply_faults(r, s->fault.service, s->fault.instance, spec);
        break;
    }
    case STEP_RELEASE: {
        char spec[300];
        snprintf(spec, sizeof spec, "%s=off", s->fault.point);
        timeline_add(&r->tl, TL_FAULT, "lab", s->fault.service, false, "release %s%s", s->fault.point,
                     on_instance(on, sizeof on, s->fault.service, s->fault.instance));
        rc = apply_faults(r, s->fault.service, s->fault.instance, spec);
        break;
    }
    case STEP_WAIT:
        sleep_ms(s->ms);
        break;
    }
    if (rc != 0)
        point(r, false, "the step to succeed", "the supervisor could not do it (see stderr)", "step %zu (line %d)",
              index + 1, s->line);
    return rc == 0;
}

/* ---- final expectations ------------------------------------------------------------ */

typedef struct final_check {
    char desc[200];
    bool ok;
    char expected[300];
    char actual[800];
} final_check_t;

/* The checks of one evaluation, in the order they become TAP points. */
typedef struct final_checks {
    final_check_t *items;
    size_t n, cap;
    size_t failed;
} final_checks_t;

static final_check_t *add_check(final_checks_t *fc)
{
    if (fc->n == fc->cap) {
        size_t cap = fc->cap ? fc->cap * 2 : 32;
        final_check_t *grown = realloc(fc->items, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        fc->items = grown;
        fc->cap = cap;
    }
    final_check_t *c = &fc->items[fc->n++];
    memset(c, 0, sizeof *c);
    return c;
}

/* A count check: "<what> <key> <op> <value>" against `got`. */
static void count_check(final_checks_t *fc, const char *what, const char *key, scenario_cmp_t op, long long want,
                        long long got, const char *detail)
{
    final_check_t *c = add_check(fc);
    if (c == NULL)
        return;
    c->ok = scenario_compare(got, op, want);
    snprintf(c->desc, sizeof c->desc, "%s%s%s %s %lld", what, key[0] ? " " : "", key, scenario_cmp_text(op), want);
    if (op == CMP_EQ)
        snprintf(c->expected, sizeof c->expected, "%lld", want);
    else
        snprintf(c->expected, sizeof c->expected, "%s %lld", scenario_cmp_text(op), want);
    snprintf(c->actual, sizeof c->actual, "%lld%s", got, detail != NULL ? detail : "");
}

/* The oracle's view of what the tap saw (the arrays borrow the run's; r->mu held). */
typedef struct wire_view {
    oracle_call_t *calls;
    oracle_event_t *events;
} wire_view_t;

static void oracle_inputs(run_t *r, oracle_inputs_t *in, wire_view_t *w)
{
    memset(in, 0, sizeof *in);
    int n = 0;
    supervised_service_t *s;
    in->inventory_db = (s = supervisor_find(&r->sv, "inventory", &n)) ? s->db_path : NULL;
    in->payments_db = (s = supervisor_find(&r->sv, "payments", &n)) ? s->db_path : NULL;
    in->orders_db = (s = supervisor_find(&r->sv, "orders", &n)) ? s->db_path : NULL;
    in->notifications_db = (s = supervisor_find(&r->sv, "notifications", &n)) ? s->db_path : NULL;
    in->conversions_db = (s = supervisor_find(&r->sv, "conversions", &n)) ? s->db_path : NULL;
    in->restocked_total = r->restocked;
    in->deposited_total = r->deposited;
    in->order_created_ids = (const char *const *)r->order_created;
    in->n_order_created = r->n_order_created;
    in->dead_letters = r->dead_letters;
    w->calls = calloc(r->n_calls > 0 ? r->n_calls : 1, sizeof *w->calls);
    w->events = calloc(r->n_events > 0 ? r->n_events : 1, sizeof *w->events);
    if (w->calls != NULL) {
        for (size_t i = 0; i < r->n_calls; i++) {
            const observed_call_t *c = &r->calls[i];
            w->calls[i] = (oracle_call_t){.service = c->service,
                                          .tx = c->tx,
                                          .compensation = c->compensation,
                                          .time_ns = c->time_ns,
                                          .answer = c->answer,
                                          .code = c->code,
                                          .type = c->type,
                                          .claimed = c->has_claim ? c->claimed : NULL};
        }
        in->calls = w->calls;
        in->n_calls = r->n_calls;
    }
    if (w->events != NULL) {
        for (size_t i = 0; i < r->n_events; i++)
            w->events[i] = (oracle_event_t){r->events[i].service, r->events[i].type, r->events[i].tx};
        in->events = w->events;
        in->n_events = r->n_events;
    }
}

/* One seen entry of a sequence: a compensation call or an event. */
typedef struct seen {
    const char *service, *name;  /* "inventory" and "release" -> inventory.release */
    int64_t time_ns;
    size_t order;                /* the order seen, for equal times           */
    const json_t *payload;
} seen_t;

static int by_time(const void *a, const void *b)
{
    const seen_t *x = a, *y = b;
    if (x->time_ns != y->time_ns)
        return x->time_ns < y->time_ns ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* "a, b {\"f\":1}, c" or "none"; at most cap. */
static void describe_seen(const seen_t *s, size_t n, bool with_payload, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    if (n == 0)
        snprintf(out, cap, "none");
    for (size_t i = 0; i < n && used + 1 < cap; i++) {
        char *text = with_payload ? json_compact(s[i].payload, 60) : NULL;
        int w = snprintf(out + used, cap - used, "%s%s.%s%s%s", i > 0 ? ", " : "", s[i].service, s[i].name,
                         text != NULL ? " " : "", text != NULL ? text : "");
        free(text);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static void describe_expected_seq(const scenario_seq_t *q, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    if (q->n == 0)
        snprintf(out, cap, "none");
    for (size_t i = 0; i < q->n && used + 1 < cap; i++) {
        char *text = q->items[i].fields != NULL ? json_compact(q->items[i].fields, 60) : NULL;
        int w = snprintf(out + used, cap - used, "%s%s%s%s", i > 0 ? ", " : "", q->items[i].name,
                         text != NULL ? " " : "", text != NULL ? text : "");
        free(text);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* A step's expected sequence against what was seen in its transaction (compensations or events). */
static void sequence_check(run_t *r, final_checks_t *fc, size_t step, const scenario_seq_t *q, bool events)
{
    const char *tx = r->step_tx[step];
    size_t total = events ? r->n_events : r->n_calls, n = 0;
    seen_t *seen = calloc(total > 0 ? total : 1, sizeof *seen);
    final_check_t *c = add_check(fc);
    if (c == NULL || seen == NULL) {
        free(seen);
        return;
    }
    for (size_t i = 0; i < total; i++) {
        if (events) {
            const observed_event_t *e = &r->events[i];
            if (strcmp(e->tx, tx) == 0)
                seen[n++] = (seen_t){e->service, e->type, e->time_ns, i, e->payload};
        } else {
            const observed_call_t *k = &r->calls[i];
            if (k->compensation && strcmp(k->tx, tx) == 0)
                seen[n++] = (seen_t){k->service, k->subject + strlen(k->service) + 1, k->time_ns, i, k->request};
        }
    }
    qsort(seen, n, sizeof *seen, by_time);
    bool ok = n == q->n, with_payload = false;
    for (size_t i = 0; i < q->n; i++) {
        with_payload = with_payload || q->items[i].fields != NULL;
        if (!ok)
            continue;
        char name[200];
        snprintf(name, sizeof name, "%s.%s", seen[i].service, seen[i].name);
        ok = strcmp(name, q->items[i].name) == 0 &&
             (q->items[i].fields == NULL || (seen[i].payload != NULL && json_matches(q->items[i].fields, seen[i].payload)));
    }
    const scenario_step_t *st = &r->sc->steps[step];
    c->ok = ok;
    describe_expected_seq(q, c->expected, sizeof c->expected);
    describe_seen(seen, n, with_payload, c->actual, sizeof c->actual);
    snprintf(c->desc, sizeof c->desc, "step %zu (line %d) %s: %.150s", step + 1, st->line,
             events ? "events" : "compensations", c->expected);
    free(seen);
}

/*
 * Barrier checks (keys "<service>.<outcome>", grouped by service as
 * written) for one transaction (NULL: the whole story): each count, then
 * once per participant whether what it replied fits what its state records.
 */
static void barrier_checks(run_t *r, final_checks_t *fc, const oracle_inputs_t *in, const scenario_check_t *checks,
                           size_t n, const char *tx, const char *prefix)
{
    for (size_t first = 0, end; first < n; first = end) {
        size_t len = (size_t)(strchr(checks[first].key, '.') - checks[first].key);
        for (end = first + 1; end < n && strncmp(checks[end].key, checks[first].key, len + 1) == 0; end++) {
        }
        char service[64], what[120], err[300] = "";
        snprintf(service, sizeof service, "%.*s", (int)len, checks[first].key);
        snprintf(what, sizeof what, "%sbarrier %s", prefix, service);
        int count = 0;
        supervised_service_t *s = supervisor_find(&r->sv, service, &count);
        oracle_barrier_t b = {0};
        int rc = s != NULL ? oracle_barrier(in, service, s->db_path, tx, &b, err, sizeof err) : -1;
        if (s == NULL)
            snprintf(err, sizeof err, "the service is not part of this scenario");
        char detail[120];
        snprintf(detail, sizeof detail, " (executed %lld, duplicate %lld, null_compensation %lld, refused_late %lld)",
                 b.executed, b.duplicate, b.null_compensation, b.refused_late);
        for (size_t i = first; i < end; i++) {
            const char *outcome = checks[i].key + len + 1;
            if (rc != 0) {
                final_check_t *c = add_check(fc);
                if (c == NULL)
                    return;
                snprintf(c->desc, sizeof c->desc, "%s %s %s %lld", what, outcome, scenario_cmp_text(checks[i].op),
                         checks[i].value);
                snprintf(c->expected, sizeof c->expected, "%s%s%lld",
                         checks[i].op == CMP_EQ ? "" : scenario_cmp_text(checks[i].op),
                         checks[i].op == CMP_EQ ? "" : " ", checks[i].value);
                snprintf(c->actual, sizeof c->actual, "unreadable: %s", err);
                continue;
            }
            long long got = strcmp(outcome, "executed") == 0            ? b.executed
                            : strcmp(outcome, "duplicate") == 0         ? b.duplicate
                            : strcmp(outcome, "null_compensation") == 0 ? b.null_compensation
                                                                        : b.refused_late;
            count_check(fc, what, outcome, checks[i].op, checks[i].value, got, detail);
        }
        if (rc != 0)
            continue;
        final_check_t *c = add_check(fc);
        if (c == NULL)
            return;
        c->ok = b.disagreement[0] == '\0';
        snprintf(c->desc, sizeof c->desc, "%s: its replies agree with its state", what);
        snprintf(c->expected, sizeof c->expected, "every outcome it replied is recorded in its natomic_barrier");
        snprintf(c->actual, sizeof c->actual, "%s", c->ok ? "they agree" : b.disagreement);
    }
}

/* Dead letter documents, each a partial match of the one seen at its place. */
static void dead_letter_checks(run_t *r, final_checks_t *fc)
{
    size_t i;
    json_t *want;
    json_array_foreach(r->sc->dead_letter_docs, i, want) {
        final_check_t *c = add_check(fc);
        if (c == NULL)
            return;
        json_t *got = json_array_get(r->dead_letter_docs, i);
        c->ok = got != NULL && json_matches(want, got);
        char *w = json_compact(want, 150), *g = json_compact(got, 400);
        snprintf(c->desc, sizeof c->desc, "dead letter %zu has %.150s", i + 1, w != NULL ? w : "?");
        snprintf(c->expected, sizeof c->expected, "%s", w != NULL ? w : "?");
        snprintf(c->actual, sizeof c->actual, "%s", g != NULL ? g : "no such dead letter");
        free(w);
        free(g);
    }
}

/* Evaluates every final expectation once into fc (emptied first); returns how many failed. */
static size_t evaluate(run_t *r, final_checks_t *fc)
{
    const scenario_t *sc = r->sc;
    fc->n = 0;
    pthread_mutex_lock(&r->mu);
    oracle_inputs_t in;
    wire_view_t wire;
    oracle_inputs(r, &in, &wire);
    for (size_t i = 0; i < sc->n_state; i++) {
        const scenario_check_t *want = &sc->state[i];
        long long v = 0;
        char err[300] = "";
        if (oracle_state(&in, want->key, &v, err, sizeof err) == 0) {
            count_check(fc, "state", want->key, want->op, want->value, v, NULL);
            continue;
        }
        final_check_t *c = add_check(fc);
        if (c == NULL)
            break;
        snprintf(c->desc, sizeof c->desc, "state %s %s %lld", want->key, scenario_cmp_text(want->op), want->value);
        snprintf(c->expected, sizeof c->expected, "%s%s%lld", want->op == CMP_EQ ? "" : scenario_cmp_text(want->op),
                 want->op == CMP_EQ ? "" : " ", want->value);
        snprintf(c->actual, sizeof c->actual, "unreadable: %s", err);
    }
    for (size_t i = 0; i < sc->n_events; i++)
        count_check(fc, "events", sc->events[i].key, sc->events[i].op, sc->events[i].value,
                    json_integer_value(json_object_get(r->event_counts, sc->events[i].key)), NULL);
    for (size_t i = 0; i < sc->n_compensations; i++)
        count_check(fc, "compensations", sc->compensations[i].key, sc->compensations[i].op, sc->compensations[i].value,
                    json_integer_value(json_object_get(r->compensation_counts, sc->compensations[i].key)), NULL);
    if (sc->dead_letters >= 0)
        count_check(fc, "dead letters", "", sc->dead_letters_op, sc->dead_letters, r->dead_letters, NULL);
    if (sc->dead_letter_docs != NULL)
        dead_letter_checks(r, fc);
    if (sc->recoveries >= 0) {
        char detail[64];
        snprintf(detail, sizeof detail, " (recovery steps seen: %zu)", r->n_recovery);
        count_check(fc, "recoveries", "", sc->recoveries_op, sc->recoveries, r->recoveries, detail);
    }
    barrier_checks(r, fc, &in, sc->barrier, sc->n_barrier, NULL, "");
    for (size_t i = 0; i < sc->n_steps; i++) {
        const scenario_step_t *st = &sc->steps[i];
        if (st->kind != STEP_CALL || !st->has_expect)
            continue;
        if (st->expect.compensations.given)
            sequence_check(r, fc, i, &st->expect.compensations, false);
        if (st->expect.events.given)
            sequence_check(r, fc, i, &st->expect.events, true);
        if (st->expect.n_barrier > 0) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "step %zu (line %d) ", i + 1, st->line);
            barrier_checks(r, fc, &in, st->expect.barrier, st->expect.n_barrier, r->step_tx[i], prefix);
        }
    }
    for (size_t i = 0; i < sc->n_invariants; i++) {
        final_check_t *c = add_check(fc);
        if (c == NULL)
            break;
        char why[sizeof c->actual - 32];
        int holds = oracle_invariant(&in, sc->invariants[i], why, sizeof why);
        c->ok = holds == 1;
        snprintf(c->actual, sizeof c->actual, "%s%s", holds < 0 ? "cannot be checked: " : "", why);
        snprintf(c->desc, sizeof c->desc, "invariant %s holds", sc->invariants[i]);
        snprintf(c->expected, sizeof c->expected, "%s holds", sc->invariants[i]);
    }
    for (size_t i = 0; i < sc->n_violations; i++) {
        final_check_t *c = add_check(fc);
        if (c == NULL)
            break;
        char why[sizeof c->actual - 32];
        int holds = oracle_invariant(&in, sc->violations[i], why, sizeof why);
        c->ok = holds == 0; /* broken, and really checked */
        snprintf(c->desc, sizeof c->desc, "invariant %s is violated (the lesson of this story)", sc->violations[i]);
        snprintf(c->expected, sizeof c->expected, "%s broken", sc->violations[i]);
        if (holds < 0)
            snprintf(c->actual, sizeof c->actual, "cannot be checked: %s", why);
        else
            snprintf(c->actual, sizeof c->actual, "%s", c->ok ? why : "it held");
        if (c->ok)
            snprintf(c->desc, sizeof c->desc, "invariant %s is violated, as this story teaches: %.100s",
                     sc->violations[i], why);
    }
    pthread_mutex_unlock(&r->mu);
    free(wire.calls);
    free(wire.events);
    fc->failed = 0;
    for (size_t i = 0; i < fc->n; i++)
        fc->failed += !fc->items[i].ok;
    return fc->failed;
}

/*
 * The final checks: evaluated until they all hold or `eventually` ran out;
 * then, with `hold`, evaluated again every poll for that long -- the first
 * evaluation in which one breaks is the one reported, its actual saying
 * when it broke.
 */
static void final_checks(run_t *r)
{
    final_checks_t fc = {0};
    double deadline = now_s() + r->sc->eventually_ms / 1000.0;
    while (evaluate(r, &fc) > 0 && now_s() < deadline)
        sleep_ms(CHECK_POLL_MS);
    if (fc.failed == 0 && r->sc->hold_ms > 0) {
        double start = now_s(), end = start + r->sc->hold_ms / 1000.0;
        while (now_s() < end) {
            sleep_ms(CHECK_POLL_MS);
            if (evaluate(r, &fc) == 0)
                continue;
            double held_ms = (now_s() - start) * 1000.0;
            for (size_t i = 0; i < fc.n; i++) {
                if (fc.items[i].ok)
                    continue;
                char was[sizeof fc.items[i].actual];
                snprintf(was, sizeof was, "%s", fc.items[i].actual);
                snprintf(fc.items[i].actual, sizeof fc.items[i].actual, "held %.0f of %d ms, then: %.700s", held_ms,
                         r->sc->hold_ms, was);
            }
            break;
        }
    }
    for (size_t i = 0; i < fc.n; i++)
        point(r, fc.items[i].ok, fc.items[i].expected, fc.items[i].actual, "%s", fc.items[i].desc);
    free(fc.items);
}

/* ---- one scenario, start to end ------------------------------------------------------ */

static bool run_scenario(run_t *r)
{
    const scenario_t *sc = r->sc;
    /* A TAP comment is one line: a multi-line about (YAML |) is folded. */
    char about[1024];
    snprintf(about, sizeof about, "%s", sc->about);
    for (char *c = about; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    fprintf(r->out, "# %s%s%s (seed %llu): %s\n", sc->group, sc->group[0] ? "/" : "", sc->name, r->seed, about);
    if (supervisor_start(&r->sv, r->seed) != 0) {
        point(r, false, "NATS to start", "it did not (see stderr)", "start NATS");
        return false;
    }
    r->sv_up = true;
    r->sv.durable = sc->durable;
    for (size_t i = 0; i < sc->n_services; i++) {
        if (supervisor_add_service(&r->sv, sc->services[i].name, sc->services[i].instances, NULL) != 0) {
            point(r, false, "the service to start", "it did not (see its log)", "start %s", sc->services[i].name);
            return false;
        }
    }
    learn_methods(r);
    static const char *const watched[N_TAPS] = {"natomic.trace.>", "events.>", NATOMIC_DEADLETTER_PREFIX ".>",
                                                NATOMIC_RECOVERY_PREFIX ".>"};
    bool subscribed = true;
    for (int i = 0; i < N_TAPS; i++)
        subscribed = subscribed && natsConnection_Subscribe(&r->tap[i], r->sv.nc, watched[i], on_tap, r) == NATS_OK;
    if (!subscribed || natsConnection_FlushTimeout(r->sv.nc, 2000) != NATS_OK) {
        point(r, false, "the tap to subscribe", "it did not", "tap NATS");
        return false;
    }
    for (size_t i = 0; i < sc->n_seed_data; i++)
        if (!play_call(r, &sc->seed_data[i], i, true))
            return false;
    /* The story's faults start after the seed data, so they hurt only the story. */
    for (size_t i = 0; i < sc->n_faults; i++) {
        char spec[400];
        fault_spec(&sc->faults[i], spec, sizeof spec);
        char on[80];
        on_instance(on, sizeof on, sc->faults[i].service, sc->faults[i].instance);
        timeline_add(&r->tl, TL_FAULT, "lab", sc->faults[i].service, true, "%s%s", spec, on);
        if (apply_faults(r, sc->faults[i].service, sc->faults[i].instance, spec) != 0) {
            point(r, false, "the fault to be enabled", "the service refused it (see stderr)", "fault %s%s (line %d)",
                  spec, on, sc->faults[i].line);
            return false;
        }
    }
    for (size_t i = 0; i < sc->n_steps; i++) {
        timeline_add(&r->tl, TL_NOTE, "lab", "lab", false, "step %zu (line %d)", i + 1, sc->steps[i].line);
        play_step(r, &sc->steps[i], i);
    }
    final_checks(r);
    return true;
}

/* The last lines of every service's log, for the report. */
static char *collect_logs(run_t *r)
{
    size_t cap = 1, used = 0;
    char *all = calloc(1, cap);
    for (size_t i = 0; all != NULL && i < r->sc->n_services; i++) {
        char *tail = supervisor_log_tail(&r->sv, r->sc->services[i].name, 15);
        if (tail == NULL)
            continue;
        size_t n = strlen(tail);
        char *grown = realloc(all, cap + n + 1);
        if (grown != NULL) {
            all = grown;
            memcpy(all + used, tail, n);
            used += n;
            all[used++] = '\n';
            all[used] = '\0';
            cap += n + 1;
        }
        free(tail);
    }
    return all;
}

/* Plays one scenario start to end on the calling thread; its TAP ends up in r->out_text. */
static void play_scenario(run_t *r)
{
    double t0 = now_s();
    run_scenario(r);
    for (int k = 0; k < N_TAPS; k++) {
        if (r->tap[k] == NULL)
            continue;
        /* Drain: no tap callback may still run once the run is freed. */
        if (natsSubscription_Drain(r->tap[k]) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(r->tap[k], 2000);
        natsSubscription_Destroy(r->tap[k]);
        r->tap[k] = NULL;
    }
    if (r->sv_up)
        r->log_excerpt = collect_logs(r);
    if (r->sv_up && r->opts->keep)
        snprintf(r->kept, sizeof r->kept, "%s", r->sv.dir);
    if (r->sv_up)
        supervisor_stop(&r->sv, r->opts->keep);
    r->sv_up = false;
    r->duration_s = now_s() - t0;
    /* The taps are drained: nothing writes the recovery figures any more. For scripts (a median
     * over runs) as a TAP comment; never asserted on, since time is not behaviour. */
    if (r->has_recovery_ms)
        fprintf(r->out, "# recovery_ms: %.0f (%s%s%s, after the restart of %s)\n", r->recovery_ms, r->sc->group,
                r->sc->group[0] ? "/" : "", r->sc->name, r->recovery_restart);
    fclose(r->out);
    r->out = NULL;
}

/* ---- files ------------------------------------------------------------------------------ */

typedef struct file_list {
    char **paths;
    size_t n;
} file_list_t;

static int add_path(file_list_t *l, const char *p)
{
    char **grown = realloc(l->paths, (l->n + 1) * sizeof *grown);
    if (grown == NULL)
        return -1;
    l->paths = grown;
    l->paths[l->n++] = strdup(p);
    return 0;
}

/* scenario_walk's visitor: keeps the path. */
static int collect(const char *path, void *user)
{
    return add_path(user, path);
}

static void free_list(file_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->paths[i]);
    free(l->paths);
}

/* ---- the whole run ----------------------------------------------------------------------- */

static void on_fatal_signal(int sig)
{
    supervisor_emergency_kill();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* One file of the run: a scenario to play, or the reason it is not one. */
typedef struct job {
    const char *path;
    scenario_t *sc;         /* NULL: invalid, see err                       */
    char err[2048];
    char full[300];         /* "<group>/<name>"                             */
    run_t *r;               /* NULL: filtered out or invalid                */
    bool done;
} job_t;

typedef struct pool {
    job_t *jobs;
    size_t n;
    atomic_size_t next;
    pthread_mutex_t mu;
    pthread_cond_t cond;    /* a job is done                                */
} pool_t;

static run_t *new_run(scenario_t *sc, const runner_options_t *opts)
{
    run_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->sc = sc;
    r->opts = opts;
    r->seed = opts->has_seed ? opts->seed : sc->seed;
    snprintf(r->replay, sizeof r->replay, "natomic-lab run %s --seed %llu", sc->path, r->seed);
    r->event_counts = json_object();
    r->event_ids = json_object();
    r->compensation_counts = json_object();
    r->dead_letter_docs = json_array();
    r->step_tx = calloc(sc->n_steps > 0 ? sc->n_steps : 1, sizeof *r->step_tx);
    r->out = open_memstream(&r->out_text, &r->out_len);
    pthread_mutex_init(&r->mu, NULL);
    timeline_init(&r->tl);
    if (r->step_tx == NULL || r->out == NULL || r->event_counts == NULL || r->dead_letter_docs == NULL) {
        if (r->out != NULL)
            fclose(r->out);
        free(r->out_text);
        free(r->step_tx);
        json_decref(r->event_counts);
        json_decref(r->event_ids);
        json_decref(r->compensation_counts);
        json_decref(r->dead_letter_docs);
        timeline_free(&r->tl);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    return r;
}

static void free_run(run_t *r)
{
    if (r == NULL)
        return;
    timeline_free(&r->tl);
    free(r->checks);
    free(r->log_excerpt);
    json_decref(r->event_counts);
    json_decref(r->event_ids);
    json_decref(r->compensation_counts);
    json_decref(r->dead_letter_docs);
    free(r->recovery);
    for (size_t i = 0; i < r->n_order_created; i++)
        free(r->order_created[i]);
    free(r->order_created);
    for (size_t i = 0; i < r->n_calls; i++)
        json_decref(r->calls[i].request);
    free(r->calls);
    for (size_t i = 0; i < r->n_events; i++)
        json_decref(r->events[i].payload);
    free(r->events);
    free(r->step_tx);
    free(r->out_text);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* A worker: plays the next scenario not yet taken until none is left. */
static void *worker(void *arg)
{
    pool_t *p = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n)
            return NULL;
        job_t *j = &p->jobs[i];
        if (j->r != NULL)
            play_scenario(j->r);
        pthread_mutex_lock(&p->mu);
        j->done = true;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mu);
    }
}

/*
 * Copies a scenario's TAP to stdout with its test points renumbered from
 * *counter: lines that start with "ok N" or "not ok N" are points (YAML
 * blocks are indented and comments start with '#').
 */
static void emit_tap(const char *text, size_t len, int *counter)
{
    const char *line = text, *end = text + len;
    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl != NULL ? (size_t)(nl - line) + 1 : (size_t)(end - line);
        const char *rest = NULL;
        bool ok = false;
        if (n > 3 && strncmp(line, "ok ", 3) == 0) {
            ok = true;
            rest = line + 3;
        } else if (n > 7 && strncmp(line, "not ok ", 7) == 0) {
            rest = line + 7;
        }
        const char *after = rest;
        while (after != NULL && after < line + n && *after >= '0' && *after <= '9')
            after++;
        if (rest != NULL && after > rest) {
            printf("%s %d", ok ? "ok" : "not ok", ++*counter);
            fwrite(after, 1, (size_t)(line + n - after), stdout);
        } else {
            fwrite(line, 1, n, stdout);
        }
        line += n;
    }
    fflush(stdout);
}

/* The last progress lines: the counts, then each invalid file and why. */
static void summary(const job_t *jobs, size_t n, size_t n_runs, size_t n_failed, int points, double seconds)
{
    size_t invalid = 0;
    for (size_t i = 0; i < n; i++)
        invalid += jobs[i].sc == NULL;
    fprintf(stderr, "%zu scenarios, %zu failed, %d checks, %.1f s", n_runs, n_failed, points, seconds);
    if (invalid > 0)
        fprintf(stderr, "; %zu file%s not a valid scenario:", invalid, invalid == 1 ? " is" : "s are");
    fprintf(stderr, "\n");
    for (size_t i = 0; i < n; i++)
        if (jobs[i].sc == NULL)
            fprintf(stderr, "  %s\n", jobs[i].err);
}

static int default_jobs(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_JOBS ? MAX_JOBS : (int)n;
}

int runner_run(char *const paths[], size_t n_paths, const runner_options_t *opts)
{
    file_list_t files = {0};
    if (scenario_walk(paths, n_paths, collect, &files) != 0) {
        free_list(&files);
        return 2;
    }
    signal(SIGTERM, on_fatal_signal);
    signal(SIGINT, on_fatal_signal);
    signal(SIGHUP, on_fatal_signal);
    signal(SIGPIPE, SIG_IGN);

    /* Services started from here on accept fault lists on $NATOMIC.FAULTS.<name>. Set before any
     * worker exists: the environment is read by every fork. */
    setenv("NATOMIC_FAULT_CONTROL", "1", 1);
    setenv("NATOMIC_TRACE", "1", 1); /* copies of calls and replies for the tap */
    printf("TAP version 14\n");
    fflush(stdout);

    /* Every file is read first, in order: the invalid ones and the filter are known before anything runs. */
    pool_t pool = {.jobs = calloc(files.n > 0 ? files.n : 1, sizeof *pool.jobs), .n = files.n};
    atomic_init(&pool.next, 0);
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.cond, NULL);
    size_t n_runs = 0;
    for (size_t i = 0; pool.jobs != NULL && i < files.n; i++) {
        job_t *j = &pool.jobs[i];
        j->path = files.paths[i];
        if (scenario_load(&j->sc, j->path, j->err, sizeof j->err) != 0) {
            j->sc = NULL;
            continue;
        }
        snprintf(j->full, sizeof j->full, "%s%s%s", j->sc->group, j->sc->group[0] ? "/" : "", j->sc->name);
        if (opts->filter != NULL && strstr(j->full, opts->filter) == NULL)
            continue;
        if ((j->r = new_run(j->sc, opts)) == NULL) {
            snprintf(j->err, sizeof j->err, "%s: out of memory", j->path);
            scenario_free(j->sc);
            j->sc = NULL;
            continue;
        }
        n_runs++;
    }
    int jobs = opts->jobs > 0 ? opts->jobs : default_jobs();
    if ((size_t)jobs > n_runs)
        jobs = n_runs > 0 ? (int)n_runs : 1;
    pthread_t threads[MAX_JOBS];
    int started = 0;
    double t_all = now_s();
    for (int i = 0; pool.jobs != NULL && i < jobs && i < MAX_JOBS; i++)
        if (pthread_create(&threads[started], NULL, worker, &pool) == 0)
            started++;
    if (started == 0 && pool.jobs != NULL)
        worker(&pool); /* no thread to be had: play them here, one at a time */

    /* In file order, whatever order they end in: TAP, progress, the kept folder. */
    size_t n_failed = 0, n_invalid = 0;
    int counter = 0;
    report_scenario_t *reports = calloc(n_runs > 0 ? n_runs : 1, sizeof *reports);
    size_t n_reports = 0;
    for (size_t i = 0; pool.jobs != NULL && i < pool.n; i++) {
        job_t *j = &pool.jobs[i];
        pthread_mutex_lock(&pool.mu);
        while (!j->done)
            pthread_cond_wait(&pool.cond, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
        if (j->sc == NULL) {
            printf("not ok %d - %s: the file is not a valid scenario\n  ---\n", ++counter, j->path);
            yaml_quoted(stdout, "message", j->err);
            printf("  ...\n");
            fflush(stdout);
            if (opts->progress)
                fprintf(stderr, "[%zu/%zu] %-48s INVALID: %s\n", i + 1, pool.n, j->path, j->err);
            n_invalid++;
            continue;
        }
        run_t *r = j->r;
        if (r == NULL)
            continue;
        emit_tap(r->out_text, r->out_len, &counter);
        size_t passed = r->n_checks - (size_t)r->tap_failed;
        char recovery[96] = "";
        if (r->has_recovery_ms)
            snprintf(recovery, sizeof recovery, " recovery %.2f s after restart", r->recovery_ms / 1000.0);
        if (opts->progress)
            fprintf(stderr, "[%zu/%zu] %-48s %s %zu/%zu checks (%.1f s)%s\n", i + 1, pool.n, j->full,
                    r->tap_failed ? "FAILED" : "ok", passed, r->n_checks, r->duration_s, recovery);
        if (r->kept[0] != '\0')
            fprintf(stderr, "kept: %s\n", r->kept);
        n_failed += r->tap_failed > 0;
        if (reports != NULL)
            reports[n_reports++] = (report_scenario_t){.name = r->sc->name,
                                                       .group = r->sc->group,
                                                       .about = r->sc->about,
                                                       .path = r->sc->path,
                                                       .seed = r->seed,
                                                       .replay = r->replay,
                                                       .duration_s = r->duration_s,
                                                       .checks = r->checks,
                                                       .n_checks = r->n_checks,
                                                       .timeline = &r->tl,
                                                       .log_excerpt = r->log_excerpt,
                                                       .durable = r->sc->durable,
                                                       .recoveries = r->recovery,
                                                       .n_recoveries = r->n_recovery,
                                                       .has_recovery_ms = r->has_recovery_ms,
                                                       .recovery_ms = r->recovery_ms,
                                                       .recovery_restart = r->recovery_restart};
    }
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    printf("1..%d\n", counter);
    fflush(stdout);
    if (opts->progress)
        summary(pool.jobs, pool.jobs != NULL ? pool.n : 0, n_runs, n_failed, counter, now_s() - t_all);
    int rc = n_failed + n_invalid > 0 || pool.jobs == NULL ? 1 : 0;
    if (opts->report_dir != NULL && reports != NULL) {
        char err[512];
        if (report_write(opts->report_dir, reports, n_reports, err, sizeof err) != 0) {
            fprintf(stderr, "natomic-lab: report: %s\n", err);
            rc = rc ? rc : 1;
        } else if (opts->progress) {
            fprintf(stderr, "report: %s/index.html\n", opts->report_dir);
        }
    }
    for (size_t i = 0; pool.jobs != NULL && i < pool.n; i++) {
        free_run(pool.jobs[i].r);
        scenario_free(pool.jobs[i].sc);
    }
    free(reports);
    free(pool.jobs);
    pthread_mutex_destroy(&pool.mu);
    pthread_cond_destroy(&pool.cond);
    free_list(&files);
    return rc;
}
