/*
 * runner.c -- plays scenarios and checks them from outside.
 *
 * For each scenario file:
 *   1. the supervisor starts NATS and the listed services, without faults;
 *      after the seed data the file's faults are applied through
 *      $NATOMIC.FAULTS.<service> (probabilities drawn from the run's seed);
 *   2. the "tap" records every call, reply, event, compensation (a call
 *      carrying Natomic-Phase: rollback), dead letter, fault point that
 *      fired and, in durable mode, recovery step into the timeline, each at
 *      the time its source stamped on it (the services' clocks): the
 *      services copy calls and replies to natomic.trace.{call,reply}.>
 *      (NATOMIC_TRACE) and publish fault records on natomic.trace.fault.>;
 *      events, dead letters and natomic.recovery.> are read where they are
 *      published. The lab's own steps, and the moment it gives up on a call
 *      (its timeout), are stamped by its clock. A durable
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
 * Scenarios run several at once with --jobs N (default: twice the number
 * of cores: a story spends most of its time waiting -- on timeouts, on
 * restarts, on a cluster's elections -- and the whole suite keeps the two
 * cores of the reference machine about a third busy at one story per core). Each has its own NATS on its own port, its own temporary folder
 * and services, and one worker thread from start to stop (its children
 * die with the thread that started them). A scenario writes its TAP into a
 * buffer; the main thread prints the buffers in file order, numbering the
 * test points as it goes, with the progress line of each -- so TAP,
 * progress and report read the same whatever the number of jobs.
 */
#include "runner.h"

#include <errno.h>
#include <limits.h>
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
#define N_TAPS 5                 /* calls and replies, fault records, events, dead letters, recovery */
#define TAP_PENDING_MSGS (1 << 20)  /* what one tap subscription may hold unread...       */
#define TAP_PENDING_BYTES (1 << 30) /* ...instead of nats.c's 65536 messages              */
#define MAX_RESTARTS 64          /* restarts remembered for the recovery time        */
#define MAX_RECOVERY_EVENTS 2000 /* recovery events kept for the report              */
#define MAX_OBSERVED 200000      /* calls and events kept for the checks             */
#define PAIR_WINDOW 8192         /* a reply is paired with one of the last calls     */
#define MAX_JOBS 64
#define TX_LEN 32
#define MAX_BACKGROUND 16        /* calls going on at once with `background: true`    */
#define BACKGROUND_HEAD_START_MS 100 /* before the step after a background call      */

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
    int64_t reply_ns;        /* the callee's clock when its reply left; 0: none seen   */
    long long backoff_ms;    /* Natomic-Backoff-Ms: the caller's wait before it; -1 none */
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
    natsSubscription *tap[N_TAPS];   /* traces, fault records, events, dead letters, recovery */
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
    struct background *background[MAX_BACKGROUND]; /* calls going on (`background: true`) */
    int n_background;
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

/* "prefix {...json...}" for the diagram. A long payload is cut, but never its
 * key fields: "status" and "outcome" (what a reply decides) come first. */
static void payload_label(char *out, size_t cap, const char *prefix, const json_t *j)
{
    static const char *const keys[] = {"status", "outcome"};
    json_t *ordered = json_is_object(j) ? json_object() : NULL;
    if (ordered != NULL) {
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (json_object_get(j, keys[i]) != NULL)
                json_object_set(ordered, keys[i], json_object_get(j, keys[i]));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) if (json_object_get(ordered, k) == NULL) json_object_set(ordered, k, v);
    }
    char *text = json_compact(ordered != NULL ? ordered : j, 110);
    json_decref(ordered);
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
    int64_t at_ns = hdr_time_ns(m);
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
        c->time_ns = at_ns;
        const char *backoff = hdr(m, NATOMIC_HDR_BACKOFF_MS);
        c->backoff_ms = backoff != NULL ? strtoll(backoff, NULL, 10) : -1;
        c->request = request;
        c->reply_desc = mt != NULL ? mt->reply : NULL;
        request = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    json_decref(request);
    timeline_add_at(&r->tl, at_ns, compensation ? TL_COMPENSATION : TL_CALL, caller != NULL ? caller : "lab", svc,
                    false, "%s", label);
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
        found->reply_ns = hdr_time_ns(m);
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
        timeline_add_at(&r->tl, hdr_time_ns(m), TL_REPLY, callee, caller, true, "%s %s (rollback %s%s)", code,
                        type ? type : "?", rb ? rb : "none", again ? ", replayed" : "");
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
    timeline_add_at(&r->tl, hdr_time_ns(m), TL_REPLY, callee, caller, false, "%s", label);
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
    int64_t at_ns = hdr_time_ns(m);
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
        e->time_ns = at_ns;
        e->payload = payload;
        payload = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    json_decref(payload);
    if (again)
        timeline_add_at(&r->tl, at_ns, TL_EVENT, svc, "events", false, "%s again (same event id: the stream keeps one)",
                        type);
    else
        timeline_add_at(&r->tl, at_ns, TL_EVENT, svc, "events", false, "%s", type);
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
    rec.t_us = timeline_us_at(&r->tl, at_ns);
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
            /* In the order the steps happened (the services' clocks), as the timeline. */
            size_t at = r->n_recovery;
            while (at > 0 && grown[at - 1].t_us > rec.t_us)
                at--;
            memmove(&grown[at + 1], &grown[at], (r->n_recovery - at) * sizeof *grown);
            grown[at] = rec;
            r->recovery = grown;
            r->n_recovery++;
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
    timeline_add_at(&r->tl, at_ns, TL_RECOVERY, rec.service, rec.service, bad, "%s %s %.8s: %s", rec.instance,
                    rec.event, rec.call_id, rec.detail);
}

/* A dead letter: counted, its document kept for expect.dead_letters, drawn. */
static void tap_dead_letter(run_t *r, const char *svc, natsMsg *m)
{
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
    json_t *list = json_object_get(doc, "list"), *cmd = json_object_get(doc, "command");
    json_t *t = json_object_get(doc, "time_ns");
    timeline_add_at(&r->tl, json_is_integer(t) ? (int64_t)json_integer_value(t) : 0, TL_DEAD_LETTER, svc, svc, true,
                    "%s command '%s' given up", json_is_string(list) ? json_string_value(list) : "?",
                    json_is_string(cmd) ? json_string_value(cmd) : "?");
    pthread_mutex_lock(&r->mu);
    r->dead_letters++;
    json_array_append_new(r->dead_letter_docs, doc != NULL ? doc : json_object());
    pthread_mutex_unlock(&r->mu);
}

/*
 * A fault point record, on natomic.trace.fault.<service>.<instance> (see
 * docs/fault-points.md, "The trace"): {"service", "instance", "point",
 * "occurrence", "time_ns", "fired", "delay_ms"?, ...}. One that fired is
 * drawn on the service's lifeline at the moment it fired, which is before
 * its action: before the error is returned, the message dropped, the
 * thread paused -- a crash's record is the last thing its process did.
 * With NATOMIC_FAULT_TRACE=1 every hit is published; hits that did not
 * fire are not drawn, and are skipped before any parsing (most of a traced
 * run's records are those).
 */
static void tap_fault(run_t *r, natsMsg *m)
{
    const char *data = natsMsg_GetData(m);
    size_t len = (size_t)natsMsg_GetDataLength(m);
    static const char not_fired[] = "\"fired\":null";
    if (data == NULL || memmem(data, len, not_fired, sizeof not_fired - 1) != NULL)
        return;
    json_t *doc = json_loadb(data, len, 0, NULL);
    const char *fired = json_text(doc, "fired"), *service = json_text(doc, "service");
    if (*fired == '\0' || *service == '\0') {
        json_decref(doc);
        return;
    }
    json_t *t = json_object_get(doc, "time_ns"), *hit = json_object_get(doc, "occurrence");
    json_t *delay = json_object_get(doc, "delay_ms");
    char action[48], nth[48] = "";
    if (json_is_integer(delay))
        snprintf(action, sizeof action, "%s %lld ms", fired, (long long)json_integer_value(delay));
    else
        snprintf(action, sizeof action, "%s", fired);
    if (json_is_integer(hit))
        snprintf(nth, sizeof nth, ", hit %lld", (long long)json_integer_value(hit));
    timeline_add_at(&r->tl, json_is_integer(t) ? (int64_t)json_integer_value(t) : 0, TL_FIRED, service, service, true,
                    "%s at %s (%s%s)", action, json_text(doc, "point"), json_text(doc, "instance"), nth);
    json_decref(doc);
}

/*
 * The lab observes without subscribing to request subjects (a subscriber
 * there would count as a responder and hide "no responders" from callers
 * of a dead service): services run with NATOMIC_TRACE=1 and copy each call
 * and reply to natomic.trace.{call,reply}.<subject>; fault point records
 * come on natomic.trace.fault.<service>.<instance>; events, dead letters
 * and recovery steps are read where they are published. Each entry goes
 * into the timeline at the time its source stamped on it, so the timeline
 * tells the order things happened in, not the order the subscriptions
 * (one thread each) delivered them. Fault records have a subscription and
 * a callback of their own (on_fault_trace): on_tap ignores them, so a
 * subscription to all of natomic.trace.> draws nothing twice.
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

/* The tap's subscription to natomic.trace.fault.>: fault point records alone. */
static void on_fault_trace(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    tap_fault(closure, m);
    natsMsg_Destroy(m);
}

/*
 * Subscribes tap k to subject, with room for TAP_PENDING_MSGS unread
 * messages: with NATOMIC_FAULT_TRACE=1 a story publishes a record per hit,
 * far beyond nats.c's default of 65536, and a subscription over its limit
 * drops messages (a slow consumer) rather than queue them. 0, or -1.
 */
static int tap_subscribe(run_t *r, int k, const char *subject, natsMsgHandler cb)
{
    if (natsConnection_Subscribe(&r->tap[k], r->sv.nc, subject, cb, r) != NATS_OK)
        return -1;
    return natsSubscription_SetPendingLimits(r->tap[k], TAP_PENDING_MSGS, TAP_PENDING_BYTES) == NATS_OK ? 0 : -1;
}

/* Says in the story when tap k lost messages all the same: its diagram misses them. */
static void tap_note_dropped(run_t *r, int k)
{
    int64_t dropped = 0;
    if (r->tap[k] != NULL && natsSubscription_GetDropped(r->tap[k], &dropped) == NATS_OK && dropped > 0)
        timeline_add(&r->tl, TL_NOTE, "lab", "lab", true, "the tap lost %lld messages on %s (a slow consumer): the "
                     "story misses them", (long long)dropped, natsSubscription_GetSubject(r->tap[k]));
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
static void point_locked(run_t *r, bool ok, const char *expected, const char *actual, const char *desc);
static void point(run_t *r, bool ok, const char *expected, const char *actual, const char *fmt, ...)
{
    /* Background calls (a step's `background: true`) end on their own threads. */
    static pthread_mutex_t point_mu = PTHREAD_MUTEX_INITIALIZER;
    char desc[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&point_mu);
    point_locked(r, ok, expected, actual, desc);
    pthread_mutex_unlock(&point_mu);
}

static void point_locked(run_t *r, bool ok, const char *expected, const char *actual, const char *desc)
{
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
    bool refused;           /* the server refused the publish (Permissions Violation) */
} call_result_t;

/*
 * One request from the lab, in the transaction `tx`: the headers
 * natomic_request_idempotent() sends (Natomic-Deadline-Ms, the key) plus
 * Natomic-Tx, so that everything the call causes -- compensations, events,
 * barrier rows, dead letters -- carries an id the lab knows.
 */
static void lab_request(run_t *r, natsConnection *nc, const char *subject, const uint8_t *data, size_t len,
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
        s = natsConnection_RequestMsg(&reply, nc, m, timeout_ms);
    natsMsg_Destroy(m);
    if (s != NATS_OK) {
        res->st = s == NATS_TIMEOUT ? NATOMIC_ETIMEOUT : s == NATS_NO_RESPONDERS ? NATOMIC_ENORESPONDERS : NATOMIC_ENATS;
        /* A publish the server refuses is dropped and said so asynchronously (-ERR 'Permissions
         * Violation ...'): the request then just times out. The connection is the step's own. */
        const char *why = NULL;
        if (nc != r->sv.nc && natsConnection_GetLastError(nc, &why) == NATS_NOT_PERMITTED) {
            res->refused = true;
            snprintf(res->message, sizeof res->message, "%s", why != NULL ? why : "Permissions Violation");
            return;
        }
        /* The moment the lab gave up: its own mark, whatever the callee did meanwhile. */
        if (s == NATS_TIMEOUT)
            timeline_add(&r->tl, TL_TIMEOUT, "lab", "lab", false, "%s: no reply in %d ms (tx %.8s)", subject, timeout_ms,
                         tx);
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

static void call_once(run_t *r, natsConnection *nc, const scenario_step_t *step, long index, const char *tx,
                      call_result_t *res)
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
        lab_request(r, nc, step->subject, data, len, mt->reply, step->timeout_ms, key[0] != '\0' ? key : NULL, tx,
                    res);
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
    } else if (res->refused) {
        snprintf(out, cap, "refused by the server: %s", res->message);
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
    if (has_expect && e->refused) /* the server refused it, or nobody may answer it */
        return res->refused || res->st == NATOMIC_ENORESPONDERS;
    if (res->refused)
        return false;
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
    if (s->has_expect && e->refused) {
        snprintf(out, cap, "refused (Permissions Violation, or no responders)");
    } else if (s->has_expect && e->any) {
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
    natsConnection *nc;
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
        call_once(b->r, b->nc, b->step, i, tx, &res);
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

/* Who a call of a secure story is made as: its `as`, else client in steps and admin in seed_data. */
static const char *identity_of(const run_t *r, const scenario_step_t *step, bool seed_data)
{
    if (!r->sc->secure)
        return "lab";
    return step->as != NULL ? step->as : seed_data ? "admin" : "client";
}

/*
 * The connection a step's calls go on: the lab's own, or in a secure story
 * a new one as the step's identity (so a refusal the server reports on it
 * belongs to this step alone). NULL after a message.
 */
static natsConnection *step_connection(run_t *r, const scenario_step_t *step, bool seed_data)
{
    if (!r->sc->secure)
        return r->sv.nc;
    natsConnection *nc = NULL;
    return supervisor_connect_as(&r->sv, identity_of(r, step, seed_data), &nc) == 0 ? nc : NULL;
}

static bool play_call_on(run_t *r, natsConnection *nc, const scenario_step_t *step, size_t index, bool seed_data);

/* Plays a call step; returns true when it met its expectation. Emits one point unless a passing seed call. */
static bool play_call(run_t *r, const scenario_step_t *step, size_t index, bool seed_data)
{
    natsConnection *nc = step_connection(r, step, seed_data);
    if (nc == NULL) {
        point(r, false, "a connection as the step's identity", "none (see stderr)", "%s %zu (line %d) %s as %s",
              seed_data ? "seed data" : "step", index + 1, step->line, step->subject, identity_of(r, step, seed_data));
        return false;
    }
    bool ok = play_call_on(r, nc, step, index, seed_data);
    if (nc != r->sv.nc)
        natsConnection_Destroy(nc);
    return ok;
}

static bool play_call_on(run_t *r, natsConnection *nc, const scenario_step_t *step, size_t index, bool seed_data)
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
        call_once(r, nc, step, 0, tx, &res);
        describe_result(&res, actual, sizeof actual);
        bool ok = result_matches(&step->expect, step->has_expect, &res);
        json_decref(res.reply);
        if (!seed_data || !ok)
            point(r, ok, expected, actual, "%s %zu (line %d) %s -> %s", what, index + 1, step->line, step->subject,
                  expected);
        return ok;
    }
    batch_t b = {.r = r, .nc = nc, .step = step, .error_types = json_object()};
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

static void on_wire_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    atomic_fetch_add((atomic_int *)closure, 1);
    natsMsg_Destroy(msg);
}

/*
 * subscribe / publish as an identity of a secure story: on a connection of
 * its own, so that the "Permissions Violation" the server sends back
 * (asynchronously) is this step's. One TAP point: refused or let through,
 * as the step expects.
 */
static bool play_wire_step(run_t *r, const scenario_step_t *s, size_t index)
{
    bool sub = s->kind == STEP_SUBSCRIBE;
    char what[300];
    snprintf(what, sizeof what, "%s %s%s%s as %s", sub ? "subscribe to" : "publish to", s->subject,
             s->queue != NULL ? " in queue group " : "", s->queue != NULL ? s->queue : "", s->as);
    timeline_add(&r->tl, TL_NOTE, "lab", "lab", false, "%s", what);
    natsConnection *nc = NULL;
    if (supervisor_connect_as(&r->sv, s->as, &nc) != 0) {
        point(r, false, "a connection as the step's identity", "none (see stderr)", "step %zu (line %d) %s", index + 1,
              s->line, what);
        return false;
    }
    atomic_int got;
    atomic_init(&got, 0);
    natsSubscription *subscription = NULL;
    natsStatus st;
    if (sub)
        st = s->queue != NULL ? natsConnection_QueueSubscribe(&subscription, nc, s->subject, s->queue, on_wire_msg, &got)
                              : natsConnection_Subscribe(&subscription, nc, s->subject, on_wire_msg, &got);
    else
        st = natsConnection_PublishString(nc, s->subject, s->payload != NULL ? s->payload : "");
    /* The server answers a refused subscription or publish with -ERR before the PONG of this flush;
     * a little more time covers a slow reader of it. */
    if (st == NATS_OK)
        st = natsConnection_FlushTimeout(nc, 2000);
    sleep_ms(100);
    const char *why = NULL;
    bool refused = natsConnection_GetLastError(nc, &why) == NATS_NOT_PERMITTED;
    char actual[400];
    if (refused)
        snprintf(actual, sizeof actual, "refused by the server: %s", why != NULL ? why : "Permissions Violation");
    else if (st != NATS_OK)
        snprintf(actual, sizeof actual, "failed: %s", natsStatus_GetText(st));
    else
        snprintf(actual, sizeof actual, "let through");
    bool ok = s->expect.refused ? refused : (st == NATS_OK && !refused);
    point(r, ok, s->expect.refused ? "refused (Permissions Violation)" : "let through", actual,
          "step %zu (line %d) %s -> %s", index + 1, s->line, what, s->expect.refused ? "refused" : "let through");
    natsSubscription_Destroy(subscription);
    natsConnection_Destroy(nc);
    return ok;
}

/* A call step with `background: true`: played on a thread of its own, joined by join_background(). */
typedef struct background {
    run_t *r;
    const scenario_step_t *step;
    size_t index;
    pthread_t thread;
} background_t;

static void *background_main(void *arg)
{
    background_t *b = arg;
    play_call(b->r, b->step, b->index, false);
    return NULL;
}

static bool play_background(run_t *r, const scenario_step_t *s, size_t index)
{
    background_t *b = r->n_background < MAX_BACKGROUND ? calloc(1, sizeof *b) : NULL;
    if (b != NULL) {
        *b = (background_t){.r = r, .step = s, .index = index};
        if (pthread_create(&b->thread, NULL, background_main, b) == 0) {
            timeline_add(&r->tl, TL_NOTE, "lab", "lab", false, "%s goes on in the background", s->subject);
            r->background[r->n_background++] = b;
            /* Let it leave before the next step acts (a kill meant to land mid-call). */
            sleep_ms(BACKGROUND_HEAD_START_MS);
            return true;
        }
        free(b);
    }
    return play_call(r, s, index, false); /* no thread: in the foreground, as a plain step */
}

/* Waits for every background call (each ends by its own timeout) before the final checks. */
static void join_background(run_t *r)
{
    for (int i = 0; i < r->n_background; i++) {
        pthread_join(r->background[i]->thread, NULL);
        free(r->background[i]);
    }
    r->n_background = 0;
}

/*
 * kill_node, restart_node, cut_node, heal_node: the target is resolved now
 * (the meta leader, a stream's leader, the node a service is connected to
 * are facts of this moment), and the timeline says which node it was.
 * restart_node and heal_node `all`: every node down, or every node cut.
 */
static int play_node_step(run_t *r, const scenario_step_t *s)
{
    static const struct {
        supervisor_node_op_t op;
        const char *verb;
    } ops[] = {{SUPERVISOR_NODE_KILL, "killed"},
               {SUPERVISOR_NODE_RESTART, "restarted"},
               {SUPERVISOR_NODE_CUT, "cut off (routes and clients)"},
               {SUPERVISOR_NODE_HEAL, "healed (routes and clients pass again)"}};
    int which = s->kind == STEP_NODE_KILL ? 0 : s->kind == STEP_NODE_RESTART ? 1 : s->kind == STEP_NODE_CUT ? 2 : 3;
    supervisor_node_op_t op = ops[which].op;
    bool undo = op == SUPERVISOR_NODE_RESTART || op == SUPERVISOR_NODE_HEAL;
    int first = 0, last = -1;
    if (strcmp(s->node, "all") == 0)
        last = r->sv.cluster.n - 1;
    else if (supervisor_node_find(&r->sv, s->node, &first) == 0)
        last = first;
    else
        return -1; /* it said why */
    int chosen[NATS_CLUSTER_MAX], n = 0;
    for (int k = first; k <= last; k++) {
        bool down = !nats_cluster_node_up(&r->sv.cluster, k), cut = r->sv.cluster.isolated[k];
        if (undo && !(op == SUPERVISOR_NODE_RESTART ? down : cut))
            continue; /* nothing to undo on this one */
        char name[16], as[80] = "";
        nats_cluster_node_name(k, name, sizeof name);
        if (strcmp(s->node, name) != 0 && strcmp(s->node, "all") != 0)
            snprintf(as, sizeof as, " (%s)", s->node);
        timeline_add(&r->tl, undo ? TL_HEAL : TL_FAULT, "lab", "lab", !undo, "NATS node %s%s %s", name, as,
                     ops[which].verb);
        chosen[n++] = k;
    }
    return supervisor_nodes(&r->sv, chosen, n, op);
}

static bool play_step(run_t *r, const scenario_step_t *s, size_t index)
{
    int rc = 0;
    const char *svc = s->service;
    int k = s->instance; /* kill, restart, pause, resume: -1 every instance */
    char on[80];
    switch (s->kind) {
    case STEP_CALL:
        if (s->background)
            return play_background(r, s, index);
        return play_call(r, s, index, false);
    case STEP_KILL:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, true, "kill -9%s", on_instance(on, sizeof on, svc, k));
        rc = k < 0 ? supervisor_kill(&r->sv, svc) : supervisor_kill_instance(&r->sv, svc, k);
        break;
    case STEP_RESTART:
        if (k < 0)
            timeline_add(&r->tl, TL_RESTART, "lab", svc, false, "%s", svc);
        else
            timeline_add(&r->tl, TL_RESTART, "lab", svc, false, "%s-%d", svc, k);
        mark_restart(r, svc, k);
        rc = k < 0 ? supervisor_restart(&r->sv, svc) : supervisor_restart_instance(&r->sv, svc, k);
        break;
    case STEP_PAUSE:
        timeline_add(&r->tl, TL_FAULT, "lab", svc, true, "pause (SIGSTOP)%s", on_instance(on, sizeof on, svc, k));
        rc = k < 0 ? supervisor_pause(&r->sv, svc) : supervisor_pause_instance(&r->sv, svc, k);
        break;
    case STEP_RESUME:
        timeline_add(&r->tl, TL_RESUME, "lab", svc, false, "(SIGCONT)%s", on_instance(on, sizeof on, svc, k));
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
        timeline_add(&r->tl, TL_HEAL, "lab", svc, false, "link back to normal (the proxy passes again)");
        rc = supervisor_link(&r->sv, svc, FAULT_PROXY_PASS, 0);
        break;
    case STEP_NATS_RESTART:
        timeline_add(&r->tl, TL_FAULT, "lab", "lab", true, "NATS server restart");
        rc = supervisor_restart_nats(&r->sv);
        break;
    case STEP_FAULT: {
        char spec[400];
        fault_spec(&s->fault, spec, sizeof spec);
        timeline_add(&r->tl, TL_ARM, "lab", s->fault.service, false, "%s%s", spec,
                     on_instance(on, sizeof on, s->fault.service, s->fault.instance));
        rc = apply_faults(r, s->fault.service, s->fault.instance, spec);
        break;
    }
    case STEP_RELEASE: {
        char spec[300];
        snprintf(spec, sizeof spec, "%s=off", s->fault.point);
        timeline_add(&r->tl, TL_RELEASE, "lab", s->fault.service, false, "%s%s", s->fault.point,
                     on_instance(on, sizeof on, s->fault.service, s->fault.instance));
        rc = apply_faults(r, s->fault.service, s->fault.instance, spec);
        break;
    }
    case STEP_WAIT:
        sleep_ms(s->ms);
        break;
    case STEP_NODE_KILL:
    case STEP_NODE_RESTART:
    case STEP_NODE_CUT:
    case STEP_NODE_HEAL:
        rc = play_node_step(r, s);
        break;
    case STEP_SUBSCRIBE:
    case STEP_PUBLISH:
        return play_wire_step(r, s, index);
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
                                          .awaited = c->inbox[0] != '\0',
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

/* Only the time of each: the calls of one compensation, ordered by when the participant took them. */
static int by_call_time(const void *a, const void *b)
{
    const observed_call_t *x = *(const observed_call_t *const *)a, *y = *(const observed_call_t *const *)b;
    return x->time_ns != y->time_ns ? (x->time_ns < y->time_ns ? -1 : 1) : 0;
}

/*
 * retry_waits of one step: the attempts of each named compensation in the
 * step's transaction, ordered by the participant's clock. Wait k is what
 * the caller says it waited before attempt k+1 (Natomic-Backoff-Ms, from
 * its retry policy), and it must be true: the participant's reply to
 * attempt k and its taking of attempt k+1 (its own clock, trace copies)
 * lie at least that far apart. The said wait is what is compared with the
 * range: the measured gap adds the loopback trips and, on a loaded
 * machine, the scheduler's delays -- tens of ms at worst -- so a check on
 * it alone could not tell a policy from a busy machine. One check per
 * compensation: as many waits as ranges, each said wait within its range
 * and none longer than the gap measured around it.
 */
static void retry_wait_checks(run_t *r, final_checks_t *fc, size_t step)
{
    const scenario_step_t *st = &r->sc->steps[step];
    const char *tx = r->step_tx[step];
    const observed_call_t **calls = calloc(r->n_calls > 0 ? r->n_calls : 1, sizeof *calls);
    for (size_t w = 0; w < st->expect.n_retry_waits && calls != NULL; w++) {
        const scenario_waits_t *want = &st->expect.retry_waits[w];
        final_check_t *c = add_check(fc);
        if (c == NULL)
            break;
        size_t n = 0;
        for (size_t i = 0; i < r->n_calls; i++)
            if (r->calls[i].compensation && strcmp(r->calls[i].tx, tx) == 0 &&
                strcmp(r->calls[i].subject, want->name) == 0)
                calls[n++] = &r->calls[i];
        qsort(calls, n, sizeof *calls, by_call_time);
        size_t used = 0, eused = 0;
        bool ok = n == want->n + 1;
        for (size_t k = 0; k < want->n; k++) {
            const scenario_wait_range_t *g = &want->gaps[k];
            int e = g->hi == LLONG_MAX ? snprintf(c->expected + eused, sizeof c->expected - eused, "%s>= %lld",
                                                  k > 0 ? ", " : "", g->lo)
                    : g->lo == g->hi   ? snprintf(c->expected + eused, sizeof c->expected - eused, "%s%lld",
                                                  k > 0 ? ", " : "", g->lo)
                                       : snprintf(c->expected + eused, sizeof c->expected - eused, "%s%lld..%lld",
                                                  k > 0 ? ", " : "", g->lo, g->hi);
            if (e > 0 && (size_t)e < sizeof c->expected - eused)
                eused += (size_t)e;
        }
        for (size_t k = 0; k + 1 < n; k++) {
            long long said = calls[k + 1]->backoff_ms;
            double gap = -1;
            if (calls[k]->reply_ns > 0 && calls[k + 1]->time_ns > 0)
                gap = (double)(calls[k + 1]->time_ns - calls[k]->reply_ns) / 1e6;
            /* 1 ms of slack: the two stamps are whole clock readings around the caller's sleep. */
            bool in = said >= 0 && k < want->n && said >= want->gaps[k].lo && said <= want->gaps[k].hi &&
                      gap >= 0 && gap + 1.0 >= (double)said;
            ok = ok && in;
            char said_text[32], gap_text[32];
            if (said >= 0)
                snprintf(said_text, sizeof said_text, "%lld", said);
            else
                snprintf(said_text, sizeof said_text, "no Natomic-Backoff-Ms");
            if (gap >= 0)
                snprintf(gap_text, sizeof gap_text, "%.1f", gap);
            else
                snprintf(gap_text, sizeof gap_text, "no reply seen");
            int e = snprintf(c->actual + used, sizeof c->actual - used, "%s%s (gap %s)", k > 0 ? ", " : "", said_text,
                             gap_text);
            if (e > 0 && (size_t)e < sizeof c->actual - used)
                used += (size_t)e;
        }
        if (n < 2)
            snprintf(c->actual, sizeof c->actual, "%zu attempt%s: no wait", n, n == 1 ? "" : "s");
        else if (used + 40 < sizeof c->actual)
            snprintf(c->actual + used, sizeof c->actual - used, " ms (%zu attempts)", n);
        c->ok = ok;
        snprintf(c->desc, sizeof c->desc, "step %zu (line %d) retry waits of %.60s: %.60s ms", step + 1, st->line,
                 want->name, c->expected);
    }
    free(calls);
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
        if (st->expect.n_retry_waits > 0)
            retry_wait_checks(r, fc, i);
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
    if (r->opts->nats != NULL && sc->secure) {
        point(r, false, "NATS to start", "a secure story starts its own server (deploy/'s configuration), not --server",
              "start NATS");
        return false;
    }
    if ((r->opts->nats != NULL ? supervisor_start_external(&r->sv, r->seed, r->opts->nats, r->opts->node_control,
                                                           r->opts->monitor_ports)
         : sc->secure          ? supervisor_start_secure(&r->sv, r->seed, sc->durable)
                               : supervisor_start_nodes(&r->sv, r->seed, sc->nats_nodes)) != 0) {
        point(r, false, "NATS to start", "it did not (see stderr)", "start NATS");
        return false;
    }
    r->sv_up = true;
    if (sc->nats_nodes > 1 && r->sv.cluster.n < sc->nats_nodes) {
        point(r, false, "a cluster of 3 nodes", "fewer servers in --server", "start NATS (nats: cluster)");
        return false;
    }
    r->sv.durable = sc->durable;
    for (size_t i = 0; i < sc->n_services; i++) {
        if (supervisor_add_service(&r->sv, sc->services[i].name, sc->services[i].instances, NULL) != 0) {
            point(r, false, "the service to start", "it did not (see its log)", "start %s", sc->services[i].name);
            return false;
        }
    }
    learn_methods(r);
    /* A subscription per kind of message, each with its own thread and pending limit -- but
     * calls and replies share one: a reply is paired with a call already seen, and NATS keeps
     * a publisher's order within one subscription only. It also gets the fault records
     * (natomic.trace.> holds them), which on_tap passes over; the fault records' own
     * subscription draws them. */
    static const char *const watched[N_TAPS] = {"natomic.trace.>", NATOMIC_FAULT_TRACE_PREFIX ".>", "events.>",
                                                NATOMIC_DEADLETTER_PREFIX ".>", NATOMIC_RECOVERY_PREFIX ".>"};
    bool subscribed = true;
    for (int i = 0; i < N_TAPS; i++)
        subscribed = subscribed && tap_subscribe(r, i, watched[i], i == 1 ? on_fault_trace : on_tap) == 0;
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
        timeline_add(&r->tl, TL_ARM, "lab", sc->faults[i].service, false, "%s%s", spec, on);
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
    join_background(r);
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
    timeline_start(&r->tl); /* the diagram's times count from here, not from when the run began */
    run_scenario(r);
    for (int k = 0; k < N_TAPS; k++) {
        if (r->tap[k] == NULL)
            continue;
        /* Drain: no tap callback may still run once the run is freed. */
        if (natsSubscription_Drain(r->tap[k]) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(r->tap[k], 2000);
        tap_note_dropped(r, k);
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
    long n = 2 * sysconf(_SC_NPROCESSORS_ONLN);
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
    if (opts->nats != NULL)
        jobs = 1; /* one outside NATS: its streams are cleared for each story in turn */
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
                                                       .recovery_restart = r->recovery_restart,
                                                       .violations = r->sc->violations,
                                                       .n_violations = r->sc->n_violations};
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

/* ==== One story with overrides: the explorer's (runner_replay) ===========================
 *
 * Everything below serves faultinject/explore/ and touches the code above only through its
 * helpers (new_run, play_call, play_step, oracle_inputs, point, ...). A replay is a run_t
 * played on the caller's thread as play_scenario() plays one, with these differences:
 *
 *   - the story is a shallow copy whose mode may be overridden;
 *   - one instance may start with a fault list in its environment (supervisor_add_service_for),
 *     so `point=action#N` counts hits from the process's start, as the explorer's clean run did;
 *   - the fault trace (natomic.trace.fault.>) is read: every record goes to the caller, a fired
 *     one is drawn, and a fired delay pushes the verdict back until it ran out;
 *   - a watcher restarts a process that died, after a quiet period (supervisor_watch);
 *   - a call step's answer is recorded, never checked against its `expect`;
 *   - after the last step only the story's invariants are evaluated, every CHECK_POLL_MS, until
 *     they have held for stable_ms -- not before a fired delay ran out or a dead process came
 *     back -- or settle_ms passed: a consistent replay stops early, a violating one pays the
 *     whole bound.
 */

#define REPLAY_MAX_INVARIANTS 64

static const char *const replay_watched[] = {"natomic.trace.>", "events.>", NATOMIC_DEADLETTER_PREFIX ".>",
                                             NATOMIC_RECOVERY_PREFIX ".>"};

typedef struct replay {
    run_t *r;
    scenario_t sc;                   /* the story, mode overridden (a shallow copy: not freed) */
    runner_options_t ropts;
    const runner_replay_options_t *o;
    natsSubscription *hits;
    pthread_mutex_t mu;              /* quiet_until, restarts                                 */
    double quiet_until;              /* now_s() scale: the verdict waits at least until then   */
    size_t restarts;
    _Atomic int64_t story_start_ns;  /* wall clock of the first step; INT64_MAX before         */
} replay_t;

static void replay_quiet_until(replay_t *x, double t)
{
    pthread_mutex_lock(&x->mu);
    if (t > x->quiet_until)
        x->quiet_until = t;
    pthread_mutex_unlock(&x->mu);
}

static bool replay_cancelled(const replay_t *x)
{
    return x->o->cancelled != NULL && x->o->cancelled(x->o->user);
}

/* A record of natomic.trace.fault.<service>.<instance>: to the caller; a firing is drawn. */
static void replay_on_hit(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    replay_t *x = closure;
    tap_fault(x->r, m); /* drawn as `run` draws it */
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
    natsMsg_Destroy(m);
    if (doc == NULL)
        return;
    runner_fault_hit_t h;
    memset(&h, 0, sizeof h);
    snprintf(h.service, sizeof h.service, "%s", json_text(doc, "service"));
    snprintf(h.instance, sizeof h.instance, "%s", json_text(doc, "instance"));
    snprintf(h.incarnation, sizeof h.incarnation, "%s", json_text(doc, "incarnation"));
    snprintf(h.point, sizeof h.point, "%s", json_text(doc, "point"));
    snprintf(h.fired, sizeof h.fired, "%s", json_text(doc, "fired"));
    json_t *v = json_object_get(doc, "occurrence");
    h.occurrence = json_is_integer(v) && json_integer_value(v) > 0 ? (unsigned long long)json_integer_value(v) : 0;
    v = json_object_get(doc, "time_ns");
    h.time_ns = json_is_integer(v) ? (int64_t)json_integer_value(v) : wall_ns();
    v = json_object_get(doc, "delay_ms");
    h.delay_ms = json_is_integer(v) ? (long)json_integer_value(v) : 0;
    json_decref(doc);
    h.in_story = h.time_ns >= atomic_load(&x->story_start_ns);
    /* A delayed thread acts late: no verdict before it woke up and did what it does. */
    if (strcmp(h.fired, "delay") == 0)
        replay_quiet_until(x, now_s() + (double)h.delay_ms / 1000.0 + 0.2);
    if (x->o->on_hit != NULL)
        x->o->on_hit(x->o->user, &h);
}

/* The watcher's news: a process that died, and its restart. */
static void replay_on_watch(void *user, const char *service, int instance, bool restarted, const char *what)
{
    replay_t *x = user;
    run_t *r = x->r;
    char on[80];
    on_instance(on, sizeof on, service, instance);
    if (!restarted) {
        timeline_add(&r->tl, TL_NOTE, service, service, true, "process ended: %s%s", what, on);
        /* Nothing is settled while it is down: its restart and what that starts come first. */
        replay_quiet_until(x, now_s() + (double)x->o->restart_after_ms / 1000.0 + 0.5);
        return;
    }
    mark_restart(r, service, instance);
    timeline_add(&r->tl, TL_RESTART, "lab", service, what[0] != '\0', "restart by the supervisor, %d ms after it "
                 "ended%s%s%s", x->o->restart_after_ms, on, what[0] != '\0' ? ": " : "", what);
    pthread_mutex_lock(&x->mu);
    x->restarts++;
    pthread_mutex_unlock(&x->mu);
    replay_quiet_until(x, now_s() + 0.5);
}

/* A call step, its answer recorded as a passing point (an exploration checks no call's `expect`). */
static void replay_call(run_t *r, const scenario_step_t *step, size_t index)
{
    if (step->repeat > 1) {
        scenario_step_t any = *step;
        any.has_expect = true;
        memset(&any.expect, 0, sizeof any.expect);
        any.expect.any = true;
        play_call(r, &any, index, false);
        return;
    }
    call_result_t res;
    char tx[TX_LEN + 1], actual[600];
    new_tx(tx);
    memcpy(r->step_tx[index], tx, sizeof tx);
    call_once(r, r->sv.nc, step, 0, tx, &res);
    describe_result(&res, actual, sizeof actual);
    json_decref(res.reply);
    point(r, true, NULL, NULL, "step %zu (line %d) %s answered: %.150s (not checked)", index + 1, step->line,
          step->subject, actual);
}

/* Evaluates the story's invariants into out[]; returns how many of expect.invariants do not hold. */
static size_t replay_invariants(replay_t *x, runner_invariant_t *out, size_t cap, size_t *n_out)
{
    run_t *r = x->r;
    const scenario_t *sc = r->sc;
    size_t n = 0, failing = 0;
    pthread_mutex_lock(&r->mu);
    oracle_inputs_t in;
    wire_view_t wire;
    oracle_inputs(r, &in, &wire);
    for (size_t k = 0; k < sc->n_invariants + sc->n_violations && n < cap; k++) {
        bool lesson = k >= sc->n_invariants;
        runner_invariant_t *iv = &out[n++];
        memset(iv, 0, sizeof *iv);
        iv->name = lesson ? sc->violations[k - sc->n_invariants] : sc->invariants[k];
        iv->expected_broken = lesson;
        iv->holds = oracle_invariant(&in, iv->name, iv->why, sizeof iv->why);
        failing += !lesson && iv->holds != 1;
    }
    pthread_mutex_unlock(&r->mu);
    free(wire.calls);
    free(wire.events);
    *n_out = n;
    return failing;
}

/* NATS, the services (one maybe with start faults), the tap, the seed data, the story's faults. */
static bool replay_setup(replay_t *x, runner_replay_t *out)
{
    run_t *r = x->r;
    const scenario_t *sc = r->sc;
    const runner_replay_options_t *o = x->o;
    if (supervisor_start_nodes(&r->sv, r->seed, sc->nats_nodes) != 0) {
        snprintf(out->setup_error, sizeof out->setup_error, "NATS did not start (see stderr)");
        return false;
    }
    r->sv_up = true;
    r->sv.durable = sc->durable;
    /* The fault trace first: a hit during a service's start is the service's first. */
    if (natsConnection_Subscribe(&x->hits, r->sv.nc, NATOMIC_FAULT_TRACE_PREFIX ".>", replay_on_hit, x) != NATS_OK ||
        natsSubscription_SetPendingLimits(x->hits, TAP_PENDING_MSGS, TAP_PENDING_BYTES) != NATS_OK ||
        natsConnection_FlushTimeout(r->sv.nc, 2000) != NATS_OK) {
        snprintf(out->setup_error, sizeof out->setup_error, "cannot subscribe to the fault trace");
        return false;
    }
    for (size_t i = 0; i < sc->n_services; i++) {
        const char *name = sc->services[i].name;
        bool target = o->fault_service != NULL && strcmp(o->fault_service, name) == 0;
        if (supervisor_add_service_for(&r->sv, name, sc->services[i].instances, target ? o->faults : NULL,
                                       target ? o->fault_instance : -1) != 0) {
            snprintf(out->setup_error, sizeof out->setup_error, "%s did not start (see its log)", name);
            return false;
        }
    }
    learn_methods(r);
    bool subscribed = true;
    for (size_t i = 0; i < sizeof replay_watched / sizeof replay_watched[0] && i < N_TAPS; i++)
        subscribed = subscribed && tap_subscribe(r, (int)i, replay_watched[i], on_tap) == 0;
    if (!subscribed || natsConnection_FlushTimeout(r->sv.nc, 2000) != NATS_OK) {
        snprintf(out->setup_error, sizeof out->setup_error, "the tap did not subscribe");
        return false;
    }
    if (o->restart_after_ms >= 0 && supervisor_watch(&r->sv, o->restart_after_ms, replay_on_watch, x) != 0) {
        snprintf(out->setup_error, sizeof out->setup_error, "the watcher did not start");
        return false;
    }
    for (size_t i = 0; i < sc->n_seed_data; i++) {
        if (!play_call(r, &sc->seed_data[i], i, true)) {
            snprintf(out->setup_error, sizeof out->setup_error, "seed data %zu (line %d) %s failed", i + 1,
                     sc->seed_data[i].line, sc->seed_data[i].subject);
            return false;
        }
    }
    for (size_t i = 0; i < sc->n_faults; i++) {
        char spec[400], on[80];
        fault_spec(&sc->faults[i], spec, sizeof spec);
        on_instance(on, sizeof on, sc->faults[i].service, sc->faults[i].instance);
        timeline_add(&r->tl, TL_ARM, "lab", sc->faults[i].service, false, "%s%s", spec, on);
        if (apply_faults(r, sc->faults[i].service, sc->faults[i].instance, spec) != 0) {
            snprintf(out->setup_error, sizeof out->setup_error, "fault %.200s%.60s (line %d) was refused", spec, on,
                     sc->faults[i].line);
            return false;
        }
    }
    return true;
}

/* After the last step: the invariants until they hold for stable_ms, or the bound. */
static void replay_settle(replay_t *x, runner_replay_t *out, runner_invariant_t *inv, size_t *n_inv)
{
    const runner_replay_options_t *o = x->o;
    double steps_end = now_s(), stable_since = -1.0;
    for (;;) {
        size_t failing = replay_invariants(x, inv, REPLAY_MAX_INVARIANTS, n_inv);
        double now = now_s();
        pthread_mutex_lock(&x->mu);
        double quiet = x->quiet_until;
        pthread_mutex_unlock(&x->mu);
        double deadline = (quiet > steps_end ? quiet : steps_end) + o->settle_ms / 1000.0;
        if (failing > 0)
            stable_since = -1.0;
        else if (stable_since < 0)
            stable_since = now;
        if (stable_since >= 0 && now >= quiet && now - stable_since >= o->stable_ms / 1000.0) {
            out->settled = true;
            break;
        }
        if (now >= deadline)
            break;
        if (replay_cancelled(x)) {
            out->cancelled = true;
            break;
        }
        sleep_ms(CHECK_POLL_MS);
    }
    out->settle_s = now_s() - steps_end;
}

void runner_replay_environment(void)
{
    setenv("NATOMIC_FAULT_CONTROL", "1", 1);
    setenv("NATOMIC_TRACE", "1", 1);
    setenv("NATOMIC_FAULT_TRACE", "1", 1);
}

int runner_replay(const scenario_t *sc, const runner_replay_options_t *o, runner_replay_t *out)
{
    memset(out, 0, sizeof *out);
    replay_t *x = calloc(1, sizeof *x);
    runner_invariant_t *inv = calloc(REPLAY_MAX_INVARIANTS, sizeof *inv);
    if (x == NULL || inv == NULL) {
        free(x);
        free(inv);
        snprintf(out->setup_error, sizeof out->setup_error, "out of memory");
        return -1;
    }
    x->sc = *sc;
    if (o->mode != RUNNER_MODE_STORY)
        x->sc.durable = o->mode == RUNNER_MODE_DURABLE;
    x->ropts = (runner_options_t){.has_seed = o->has_seed, .seed = o->seed, .keep = o->keep};
    x->o = o;
    pthread_mutex_init(&x->mu, NULL);
    atomic_init(&x->story_start_ns, INT64_MAX);
    x->r = new_run(&x->sc, &x->ropts);
    out->priv = x;
    out->invariants = inv;
    if (x->r == NULL) {
        snprintf(out->setup_error, sizeof out->setup_error, "out of memory");
        return -1;
    }
    run_t *r = x->r;
    if (o->replay != NULL)
        snprintf(r->replay, sizeof r->replay, "%s", o->replay);
    double t0 = now_s();
    timeline_start(&r->tl); /* the diagram's times count from here, as play_scenario's */
    fprintf(r->out, "# %s%s%s (seed %llu), explored\n", sc->group, sc->group[0] ? "/" : "", sc->name, r->seed);
    out->setup_ok = replay_setup(x, out);
    if (out->setup_ok) {
        atomic_store(&x->story_start_ns, wall_ns());
        for (size_t i = 0; i < x->sc.n_steps && !out->cancelled; i++) {
            const scenario_step_t *step = &x->sc.steps[i];
            timeline_add(&r->tl, TL_NOTE, "lab", "lab", false, "step %zu (line %d)", i + 1, step->line);
            if (step->kind == STEP_CALL)
                replay_call(r, step, i);
            else
                play_step(r, step, i);
            out->cancelled = replay_cancelled(x);
        }
        if (!out->cancelled)
            replay_settle(x, out, inv, &out->n_invariants);
        for (size_t i = 0; i < out->n_invariants; i++) {
            const runner_invariant_t *iv = &inv[i];
            if (iv->holds == 1)
                point(r, true, NULL, NULL, "invariant %s holds", iv->name);
            else
                point(r, iv->expected_broken && iv->holds == 0, "it holds", iv->why, "invariant %s %s: %.150s",
                      iv->name, iv->holds == 0 ? "is violated" : "cannot be checked", iv->why);
        }
    } else {
        point(r, false, "the story to start", out->setup_error, "setup");
    }
    /* Teardown as play_scenario's: no tap callback may run once the run is freed. */
    if (x->hits != NULL) {
        if (natsSubscription_Drain(x->hits) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(x->hits, 2000);
        natsSubscription_Destroy(x->hits);
        x->hits = NULL;
    }
    for (int k = 0; k < N_TAPS; k++) {
        if (r->tap[k] == NULL)
            continue;
        if (natsSubscription_Drain(r->tap[k]) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(r->tap[k], 2000);
        tap_note_dropped(r, k);
        natsSubscription_Destroy(r->tap[k]);
        r->tap[k] = NULL;
    }
    if (r->sv_up)
        r->log_excerpt = collect_logs(r);
    if (r->sv_up && o->keep)
        snprintf(out->kept, sizeof out->kept, "%s", r->sv.dir);
    if (r->sv_up)
        supervisor_stop(&r->sv, o->keep);
    r->sv_up = false;
    r->duration_s = now_s() - t0;
    fclose(r->out);
    r->out = NULL;
    out->duration_s = r->duration_s;
    out->restarts = x->restarts;
    out->report = (report_scenario_t){.name = sc->name,
                                      .group = sc->group,
                                      .about = sc->about,
                                      .path = sc->path,
                                      .seed = r->seed,
                                      .replay = r->replay,
                                      .duration_s = r->duration_s,
                                      .checks = r->checks,
                                      .n_checks = r->n_checks,
                                      .timeline = &r->tl,
                                      .log_excerpt = r->log_excerpt,
                                      .durable = x->sc.durable,
                                      .recoveries = r->recovery,
                                      .n_recoveries = r->n_recovery,
                                      .has_recovery_ms = r->has_recovery_ms,
                                      .recovery_ms = r->recovery_ms,
                                      .recovery_restart = r->recovery_restart,
                                      .violations = sc->violations,
                                      .n_violations = sc->n_violations};
    return out->setup_ok ? 0 : -1;
}

void runner_replay_free(runner_replay_t *rp)
{
    if (rp == NULL)
        return;
    replay_t *x = rp->priv;
    if (x != NULL) {
        free_run(x->r);
        pthread_mutex_destroy(&x->mu);
        free(x);
    }
    free(rp->invariants);
    memset(rp, 0, sizeof *rp);
}
