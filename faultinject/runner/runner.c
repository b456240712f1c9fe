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
 *      keeps), a memory story every delivery;
 *   3. seed data, then the steps, are played in order; each call step's
 *      expectation is one TAP test point;
 *   4. the final expectations (state read from the SQLite files, event,
 *      compensation and recovery counts, invariants, expected violations) are checked
 *      repeatedly until they all hold or `eventually` ms passed since the
 *      last step -- every fault has healed by then or the story says not;
 *   5. everything is stopped; the report gets the checks, the timeline and
 *      the recovery steps. When a restart was followed by a saga ended by
 *      recovery, the time between them is printed (progress line, a
 *      "# recovery_ms: N" TAP comment, the report) and never asserted on.
 *
 * Output is TAP 14 on stdout: one point per expectation, a YAML block with
 * expected, actual, the seed, the replay command and the service logs'
 * tails for each failure. Progress goes to stderr. One seed drives every
 * random draw (fault probabilities); it is printed and replayable. With
 * concurrent calls the same draws can land on different calls, since the
 * order in which workers reach a point varies: the invariants must hold
 * for any such assignment, which is what those stories check.
 */
#include "runner.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
#define PENDING_SLOTS 4096
#define CHECK_POLL_MS 100
#define N_TAPS 4
#define MAX_RESTARTS 64          /* restarts remembered for the recovery time        */
#define MAX_RECOVERY_EVENTS 2000 /* recovery events kept for the report              */

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

/* ---- the methods of the running services (from $SRV.INFO) -------------- */

typedef struct method_types {
    char subject[128];
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *reply;
} method_types_t;

/* ---- one scenario's run ---------------------------------------------------- */

typedef struct pending_call {
    char inbox[96];
    char caller[32];
    char callee[32];
    char method[64];
    const ProtobufCMessageDescriptor *reply;
} pending_call_t;

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
    pending_call_t pending[PENDING_SLOTS];
    size_t pending_next;
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
    /* results */
    report_check_t *checks;
    size_t n_checks;
    int tap_failed;
    char *log_excerpt;               /* the services' log tails, for the report      */
} run_t;

static int tap_counter;  /* test point numbers across the whole run */

static const method_types_t *find_method(const run_t *r, const char *subject)
{
    for (int i = 0; i < r->n_methods; i++)
        if (strcmp(r->methods[i].subject, subject) == 0)
            return &r->methods[i];
    return NULL;
}

/* Asks every started service for its methods' protobuf types. */
static void learn_methods(run_t *r)
{
    for (size_t i = 0; i < r->sc->n_services; i++) {
        char subject[128];
        snprintf(subject, sizeof subject, "$SRV.INFO.%s", r->sc->services[i].name);
        natsMsg *m = NULL;
        if (natsConnection_RequestString(&m, r->sv.nc, subject, "", 2000) != NATS_OK)
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

static void count_key(json_t *counts, const char *key)
{
    json_t *v = json_object_get(counts, key);
    json_object_set_new(counts, key, json_integer(v != NULL ? json_integer_value(v) + 1 : 1));
}

/* A short readable label for a payload of a known type. */
static void payload_label(char *out, size_t cap, const char *prefix, const ProtobufCMessageDescriptor *d,
                          natsMsg *m)
{
    ProtobufCMessage *msg = d != NULL ? protobuf_c_message_unpack(d, NULL, (size_t)natsMsg_GetDataLength(m),
                                                                  (const uint8_t *)natsMsg_GetData(m))
                                      : NULL;
    json_t *j = msg != NULL ? message_to_json(msg) : NULL;
    char *text = json_compact(j, 110);
    snprintf(out, cap, "%s%s%s", prefix, text != NULL ? " " : "", text != NULL ? text : "");
    free(text);
    json_decref(j);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void tap_call(run_t *r, const char *subject, natsMsg *m)
{
    char svc[32] = "", method[64] = "", label[200];
    if (sscanf(subject, "%31[^.].%63s", svc, method) != 2)
        return;
    const char *caller = hdr(m, NATOMIC_HDR_CALLER), *phase = hdr(m, NATOMIC_HDR_PHASE);
    const char *inbox = hdr(m, "Natomic-Reply-To");
    bool compensation = phase != NULL && strcmp(phase, "rollback") == 0;
    const method_types_t *mt = find_method(r, subject);
    pthread_mutex_lock(&r->mu);
    if (inbox != NULL && *inbox != '\0') {
        pending_call_t *p = &r->pending[r->pending_next++ % PENDING_SLOTS];
        snprintf(p->inbox, sizeof p->inbox, "%s", inbox);
        snprintf(p->caller, sizeof p->caller, "%s", caller != NULL ? caller : "lab");
        snprintf(p->callee, sizeof p->callee, "%s", svc);
        snprintf(p->method, sizeof p->method, "%s", method);
        p->reply = mt != NULL ? mt->reply : NULL;
    }
    if (compensation)
        count_key(r->compensation_counts, subject);
    pthread_mutex_unlock(&r->mu);
    payload_label(label, sizeof label, method, mt != NULL ? mt->request : NULL, m);
    timeline_add(&r->tl, compensation ? TL_COMPENSATION : TL_CALL, caller != NULL ? caller : "lab", svc, false,
                 "%s", label);
}

static void tap_reply(run_t *r, natsMsg *m)
{
    const char *inbox = hdr(m, "Natomic-Reply-To");
    if (inbox == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    pending_call_t found = {0};
    for (size_t i = 0; i < PENDING_SLOTS; i++) {
        if (r->pending[i].inbox[0] != '\0' && strcmp(r->pending[i].inbox, inbox) == 0) {
            found = r->pending[i];
            r->pending[i].inbox[0] = '\0';
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (found.callee[0] == '\0')
        return;
    const char *code = hdr(m, NATOMIC_HDR_SERVICE_ERROR_CODE), *replayed = hdr(m, NATOMIC_HDR_REPLAYED);
    bool again = replayed != NULL && strcmp(replayed, "true") == 0;
    if (code != NULL) {
        const char *type = hdr(m, NATOMIC_HDR_ERROR_TYPE), *rb = hdr(m, NATOMIC_HDR_ROLLBACK);
        timeline_add(&r->tl, TL_REPLY, found.callee, found.caller, true, "%s %s (rollback %s%s)", code,
                     type ? type : "?", rb ? rb : "none", again ? ", replayed" : "");
    } else {
        char label[200];
        payload_label(label, sizeof label, again ? "ok (replayed)" : "ok", found.reply, m);
        timeline_add(&r->tl, TL_REPLY, found.callee, found.caller, false, "%s", label);
    }
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
    const char *id = hdr(m, NATOMIC_HDR_EVENT_ID);
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
    pthread_mutex_unlock(&r->mu);
    if (again)
        timeline_add(&r->tl, TL_EVENT, svc, "events", false, "%s again (same event id: the stream keeps one)", type);
    else
        timeline_add(&r->tl, TL_EVENT, svc, "events", false, "%s", type);
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
    if (strncmp(subject, "natomic.trace.call.", 19) == 0) {
        tap_call(r, subject + 19, m);
    } else if (strncmp(subject, "natomic.trace.reply.", 20) == 0) {
        tap_reply(r, m);
    } else if (strncmp(subject, "events.", 7) == 0) {
        tap_event(r, subject + 7, m);
    } else if (strncmp(subject, NATOMIC_RECOVERY_PREFIX ".", strlen(NATOMIC_RECOVERY_PREFIX) + 1) == 0) {
        tap_recovery(r, m);
    } else if (strncmp(subject, NATOMIC_DEADLETTER_PREFIX ".", strlen(NATOMIC_DEADLETTER_PREFIX) + 1) == 0) {
        const char *svc = subject + strlen(NATOMIC_DEADLETTER_PREFIX) + 1;
        json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
        json_t *list = json_object_get(doc, "list"), *cmd = json_object_get(doc, "command");
        pthread_mutex_lock(&r->mu);
        r->dead_letters++;
        pthread_mutex_unlock(&r->mu);
        timeline_add(&r->tl, TL_DEAD_LETTER, svc, svc, true, "%s command '%s' given up",
                     json_is_string(list) ? json_string_value(list) : "?",
                     json_is_string(cmd) ? json_string_value(cmd) : "?");
        json_decref(doc);
    }
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

/* One TAP test point, recorded for the report too. */
static void point(run_t *r, bool ok, const char *expected, const char *actual, const char *fmt, ...)
{
    char desc[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    const char *who = r->sc->group[0] != '\0' ? r->sc->group : "";
    printf("%s %d - %s%s%s: %s\n", ok ? "ok" : "not ok", ++tap_counter, who, who[0] ? "/" : "", r->sc->name, desc);
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
    printf("  ---\n");
    yaml_quoted(stdout, "expected", expected);
    yaml_quoted(stdout, "actual", actual);
    printf("  seed: %llu\n", r->seed);
    yaml_quoted(stdout, "replay", r->replay);
    if (r->sv_up) {
        printf("  logs: |\n");
        for (size_t i = 0; i < r->sc->n_services; i++) {
            char *tail = supervisor_log_tail(&r->sv, r->sc->services[i].name, 6);
            for (char *line = tail ? strtok(tail, "\n") : NULL; line != NULL; line = strtok(NULL, "\n"))
                printf("    %s\n", line);
            free(tail);
        }
    }
    printf("  ...\n");
    fflush(stdout);
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

typedef struct call_result {
    natomic_status_t st;
    natomic_call_info_t info;
    json_t *reply;          /* on success */
    char error[256];        /* a local failure (bad request) */
} call_result_t;

static void call_once(run_t *r, const scenario_step_t *step, long index, call_result_t *res)
{
    memset(res, 0, sizeof *res);
    const method_types_t *mt = find_method(r, step->subject);
    if (mt == NULL) {
        res->st = NATOMIC_ENOMETHOD;
        snprintf(res->error, sizeof res->error, "no running service offers %s", step->subject);
        return;
    }
    json_t *req_json = expand(step->request, index);
    ProtobufCMessage *req = NULL, *reply = NULL;
    if (message_from_json(&req, mt->request, req_json, res->error, sizeof res->error) != 0) {
        res->st = NATOMIC_EBADINPUT;
        json_decref(req_json);
        return;
    }
    char key[SCENARIO_MAX_IDEMPOTENCY_KEY + 1] = "";
    if (step->idempotency_key != NULL)
        scenario_expand_text(step->idempotency_key, index, key, sizeof key); /* fits: checked by the parser */
    res->st = natomic_request_idempotent(&reply, r->sv.nc, step->subject, req, mt->reply, step->timeout_ms,
                                         key[0] != '\0' ? key : NULL, &res->info);
    if (res->st == NATOMIC_OK) {
        res->reply = message_to_json(reply);
        /* What the lab itself put in, for the conservation invariants. */
        pthread_mutex_lock(&r->mu);
        if (strcmp(step->subject, "inventory.restock") == 0)
            r->restocked += json_int_any(json_object_get(req_json, "qty"));
        else if (strcmp(step->subject, "payments.deposit") == 0)
            r->deposited += json_int_any(json_object_get(req_json, "amount"));
        pthread_mutex_unlock(&r->mu);
    }
    protobuf_c_message_free_unpacked(reply, NULL);
    protobuf_c_message_free_unpacked(req, NULL);
    json_decref(req_json);
}

/* "ok {...}", "error PaymentDeclined (rollback complete)", "timeout", ... */
static void describe_result(const call_result_t *res, char *out, size_t cap)
{
    if (res->error[0] != '\0') {
        snprintf(out, cap, "not sent: %s", res->error);
    } else if (res->st == NATOMIC_OK) {
        char *text = json_compact(res->reply, 200);
        snprintf(out, cap, "ok %s%s", text ? text : "{}", res->info.replayed ? ", replayed" : "");
        free(text);
    } else if (res->st == NATOMIC_ETIMEOUT && res->info.code == 0) {
        snprintf(out, cap, "timeout (no reply in time)");
    } else if (res->info.code != 0) {
        snprintf(out, cap, "error %s (code %d, rollback %s%s): %s", res->info.type, res->info.code,
                 natomic_outcome_name(res->info.rollback), res->info.replayed ? ", replayed" : "",
                 res->info.message);
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
    return json_equal(want, got);
}

static bool result_matches(const scenario_call_expect_t *e, bool has_expect, const call_result_t *res)
{
    if (has_expect && e->any)
        return true;
    if (has_expect && e->timeout)
        return res->st == NATOMIC_ETIMEOUT && res->info.code == 0;
    /* Natomic-Replayed comes with a reply or an error reply; the parser keeps it from any and timeout. */
    if (has_expect && e->check_replayed && res->info.replayed != e->replayed)
        return false;
    if (has_expect && e->error != NULL) {
        if (res->info.code == 0 || strcmp(res->info.type, e->error) != 0)
            return false;
        return e->rollback == NULL || strcmp(natomic_outcome_name(res->info.rollback), e->rollback) == 0;
    }
    if (res->st != NATOMIC_OK)
        return false;
    return !has_expect || e->reply == NULL || json_matches(e->reply, res->reply);
}

static void describe_expect(const scenario_step_t *s, char *out, size_t cap)
{
    const scenario_call_expect_t *e = &s->expect;
    if (s->has_expect && e->any)
        snprintf(out, cap, "any outcome");
    else if (s->has_expect && e->timeout)
        snprintf(out, cap, "timeout (no reply in time)");
    else if (s->has_expect && e->error != NULL)
        snprintf(out, cap, "error %s%s%s", e->error, e->rollback ? ", rollback " : "", e->rollback ? e->rollback : "");
    else if (s->has_expect && e->reply != NULL) {
        char *text = json_compact(e->reply, 200);
        snprintf(out, cap, "ok with %s", text ? text : "{}");
        free(text);
    } else
        snprintf(out, cap, "ok");
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
        call_once(b->r, b->step, i, &res);
        bool match = result_matches(&b->step->expect, b->step->has_expect, &res);
        pthread_mutex_lock(&b->mu);
        if (res.st == NATOMIC_OK)
            b->ok++;
        else if (res.info.code != 0) {
            b->errors++;
            count_key(b->error_types, res.info.type);
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

/* Plays a call step; returns true when it met its expectation. Emits one point unless `quiet`. */
static bool play_call(run_t *r, const scenario_step_t *step, size_t index, bool seed_data)
{
    char expected[300], actual[600];
    describe_expect(step, expected, sizeof expected);
    const char *what = seed_data ? "seed data" : "step";
    if (step->repeat <= 1) {
        call_result_t res;
        call_once(r, step, 0, &res);
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
    char inbox[64], subject[200];
    snprintf(inbox, sizeof inbox, "_NATOMIC_LAB.%p.%d", (void *)r, rand());
    if (instance >= 0) {
        snprintf(subject, sizeof subject, "$NATOMIC.FAULTS.%s.%s-%d", service, service, instance);
        instances = 1;
    } else {
        snprintf(subject, sizeof subject, "$NATOMIC.FAULTS.%s", service);
    }
    natsSubscription *sub = NULL;
    int ok = 0;
    if (natsConnection_SubscribeSync(&sub, r->sv.nc, inbox) == NATS_OK &&
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
    char expected[200];
    char actual[600];
} final_check_t;

static void oracle_inputs(run_t *r, oracle_inputs_t *in)
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
}

/* Evaluates every final expectation once; returns how many failed. */
static size_t evaluate(run_t *r, final_check_t *out, size_t *n_out)
{
    const scenario_t *sc = r->sc;
    size_t n = 0, failed = 0;
    pthread_mutex_lock(&r->mu);
    oracle_inputs_t in;
    oracle_inputs(r, &in);
    for (size_t i = 0; i < sc->n_state; i++, n++) {
        final_check_t *c = &out[n];
        long long v = 0;
        char err[300] = "";
        int rc = oracle_state(&in, sc->state[i].key, &v, err, sizeof err);
        c->ok = rc == 0 && v == sc->state[i].value;
        snprintf(c->desc, sizeof c->desc, "state %s = %lld", sc->state[i].key, sc->state[i].value);
        snprintf(c->expected, sizeof c->expected, "%lld", sc->state[i].value);
        if (rc == 0)
            snprintf(c->actual, sizeof c->actual, "%lld", v);
        else
            snprintf(c->actual, sizeof c->actual, "unreadable: %s", err);
    }
    for (size_t i = 0; i < sc->n_events; i++, n++) {
        final_check_t *c = &out[n];
        json_int_t v = json_integer_value(json_object_get(r->event_counts, sc->events[i].key));
        c->ok = v == sc->events[i].value;
        snprintf(c->desc, sizeof c->desc, "events %s = %lld", sc->events[i].key, sc->events[i].value);
        snprintf(c->expected, sizeof c->expected, "%lld", sc->events[i].value);
        snprintf(c->actual, sizeof c->actual, "%lld", (long long)v);
    }
    for (size_t i = 0; i < sc->n_compensations; i++, n++) {
        final_check_t *c = &out[n];
        json_int_t v = json_integer_value(json_object_get(r->compensation_counts, sc->compensations[i].key));
        c->ok = v == sc->compensations[i].value;
        snprintf(c->desc, sizeof c->desc, "compensations %s = %lld", sc->compensations[i].key,
                 sc->compensations[i].value);
        snprintf(c->expected, sizeof c->expected, "%lld", sc->compensations[i].value);
        snprintf(c->actual, sizeof c->actual, "%lld", (long long)v);
    }
    if (sc->dead_letters >= 0) {
        final_check_t *c = &out[n++];
        c->ok = r->dead_letters == sc->dead_letters;
        snprintf(c->desc, sizeof c->desc, "dead letters = %lld", sc->dead_letters);
        snprintf(c->expected, sizeof c->expected, "%lld", sc->dead_letters);
        snprintf(c->actual, sizeof c->actual, "%lld", r->dead_letters);
    }
    if (sc->recoveries >= 0) {
        final_check_t *c = &out[n++];
        c->ok = r->recoveries == sc->recoveries;
        snprintf(c->desc, sizeof c->desc, "recoveries = %lld", sc->recoveries);
        snprintf(c->expected, sizeof c->expected, "%lld", sc->recoveries);
        snprintf(c->actual, sizeof c->actual, "%lld (recovery steps seen: %zu)", r->recoveries, r->n_recovery);
    }
    for (size_t i = 0; i < sc->n_invariants; i++, n++) {
        final_check_t *c = &out[n];
        int holds = oracle_invariant(&in, sc->invariants[i], c->actual, sizeof c->actual);
        c->ok = holds == 1;
        if (holds < 0) {
            char reason[sizeof c->actual - 32];
            snprintf(reason, sizeof reason, "%s", c->actual);
            snprintf(c->actual, sizeof c->actual, "cannot be checked: %s", reason);
        }
        snprintf(c->desc, sizeof c->desc, "invariant %s holds", sc->invariants[i]);
        snprintf(c->expected, sizeof c->expected, "%s holds", sc->invariants[i]);
    }
    for (size_t i = 0; i < sc->n_violations; i++, n++) {
        final_check_t *c = &out[n];
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
    for (size_t i = 0; i < n; i++)
        failed += !out[i].ok;
    *n_out = n;
    return failed;
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
    printf("# %s%s%s (seed %llu): %s\n", sc->group, sc->group[0] ? "/" : "", sc->name, r->seed, about);
    fflush(stdout);
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

    size_t max = sc->n_state + sc->n_events + sc->n_compensations + 2 + sc->n_invariants + sc->n_violations;
    final_check_t *checks = calloc(max, sizeof *checks);
    size_t n = 0;
    double deadline = now_s() + sc->eventually_ms / 1000.0;
    while (checks != NULL && evaluate(r, checks, &n) > 0 && now_s() < deadline)
        sleep_ms(CHECK_POLL_MS);
    for (size_t i = 0; checks != NULL && i < n; i++)
        point(r, checks[i].ok, checks[i].expected, checks[i].actual, "%s", checks[i].desc);
    free(checks);
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

static void free_run(run_t *r)
{
    json_decref(r->event_counts);
    json_decref(r->event_ids);
    free(r->recovery);
    json_decref(r->compensation_counts);
    for (size_t i = 0; i < r->n_order_created; i++)
        free(r->order_created[i]);
    free(r->order_created);
    pthread_mutex_destroy(&r->mu);
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

    /* Services started from here on accept fault lists on $NATOMIC.FAULTS.<name>. */
    setenv("NATOMIC_FAULT_CONTROL", "1", 1);
    setenv("NATOMIC_TRACE", "1", 1); /* copies of calls and replies for the tap */
    printf("TAP version 14\n");
    fflush(stdout);
    size_t n_runs = 0, n_failed_scenarios = 0;
    report_scenario_t *reports = calloc(files.n > 0 ? files.n : 1, sizeof *reports);
    run_t **runs = calloc(files.n > 0 ? files.n : 1, sizeof *runs);
    scenario_t **loaded = calloc(files.n > 0 ? files.n : 1, sizeof *loaded);
    double t_all = now_s();
    for (size_t i = 0; i < files.n; i++) {
        char err[512];
        scenario_t *sc = NULL;
        if (scenario_load(&sc, files.paths[i], err, sizeof err) != 0) {
            printf("not ok %d - %s: the file is not a valid scenario\n  ---\n", ++tap_counter, files.paths[i]);
            yaml_quoted(stdout, "message", err);
            printf("  ...\n");
            fprintf(stderr, "%s\n", err);
            n_failed_scenarios++;
            continue;
        }
        char full[300];
        snprintf(full, sizeof full, "%s%s%s", sc->group, sc->group[0] ? "/" : "", sc->name);
        if (opts->filter != NULL && strstr(full, opts->filter) == NULL) {
            scenario_free(sc);
            continue;
        }
        loaded[n_runs] = sc;
        run_t *r = calloc(1, sizeof *r);
        runs[n_runs] = r;
        r->sc = sc;
        r->opts = opts;
        r->seed = opts->has_seed ? opts->seed : sc->seed;
        snprintf(r->replay, sizeof r->replay, "natomic-lab run %s --seed %llu", sc->path, r->seed);
        r->event_counts = json_object();
        r->event_ids = json_object();
        r->compensation_counts = json_object();
        pthread_mutex_init(&r->mu, NULL);
        timeline_init(&r->tl);
        if (opts->progress)
            fprintf(stderr, "[%zu/%zu] %-48s ", i + 1, files.n, full);
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
        if (r->sv_up && opts->keep)
            fprintf(stderr, "kept: %s\n", r->sv.dir);
        if (r->sv_up)
            supervisor_stop(&r->sv, opts->keep);
        r->sv_up = false;
        double dt = now_s() - t0;
        size_t passed = r->n_checks - (size_t)r->tap_failed;
        /* The taps are drained: nothing writes the recovery figures any more. For scripts (a median
         * over runs) as a TAP comment; never asserted on, since time is not behaviour. */
        char recovery[96] = "";
        if (r->has_recovery_ms) {
            printf("# recovery_ms: %.0f (%s, after the restart of %s)\n", r->recovery_ms, full, r->recovery_restart);
            fflush(stdout);
            snprintf(recovery, sizeof recovery, " recovery %.2f s after restart", r->recovery_ms / 1000.0);
        }
        if (opts->progress)
            fprintf(stderr, "%s %zu/%zu checks (%.1f s)%s\n", r->tap_failed ? "FAILED" : "ok", passed, r->n_checks, dt,
                    recovery);
        if (r->tap_failed)
            n_failed_scenarios++;
        reports[n_runs] = (report_scenario_t){.name = sc->name,
                                              .group = sc->group,
                                              .about = sc->about,
                                              .path = sc->path,
                                              .seed = r->seed,
                                              .replay = r->replay,
                                              .duration_s = dt,
                                              .checks = r->checks,
                                              .n_checks = r->n_checks,
                                              .timeline = &r->tl,
                                              .log_excerpt = r->log_excerpt,
                                              .durable = sc->durable,
                                              .recoveries = r->recovery,
                                              .n_recoveries = r->n_recovery,
                                              .has_recovery_ms = r->has_recovery_ms,
                                              .recovery_ms = r->recovery_ms,
                                              .recovery_restart = r->recovery_restart};
        n_runs++;
    }
    printf("1..%d\n", tap_counter);
    fflush(stdout);
    if (opts->progress)
        fprintf(stderr, "%zu scenarios, %zu failed, %d checks, %.1f s\n", n_runs, n_failed_scenarios, tap_counter,
                now_s() - t_all);
    int rc = n_failed_scenarios > 0 ? 1 : 0;
    if (opts->report_dir != NULL) {
        char err[512];
        if (report_write(opts->report_dir, reports, n_runs, err, sizeof err) != 0) {
            fprintf(stderr, "natomic-lab: report: %s\n", err);
            rc = rc ? rc : 1;
        } else if (opts->progress) {
            fprintf(stderr, "report: %s/index.html\n", opts->report_dir);
        }
    }
    for (size_t i = 0; i < n_runs; i++) {
        timeline_free(&runs[i]->tl);
        free(runs[i]->checks);
        free(runs[i]->log_excerpt);
        free_run(runs[i]);
        free(runs[i]);
        scenario_free(loaded[i]);
    }
    free(runs);
    free(loaded);
    free(reports);
    free_list(&files);
    return rc;
}
