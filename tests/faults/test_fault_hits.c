/*
 * test_fault_hits.c -- which hit of a fault point fires (`#N`), and the
 * trace of every hit (NATOMIC_FAULT_TRACE=1, docs/fault-points.md), on the
 * real `conversions` binary and on two services inside this process.
 *
 * One call of conversions.inches_to_cm checks natomic/before_handler once,
 * so the N-th call is that point's N-th hit: a rule on it shows from
 * outside which calls it failed.
 *
 *   error#3             calls 1..6: only the third fails
 *   error#2@3           calls 1..6: the second, third and fourth fail
 *   #N at run time      ($NATOMIC.FAULTS) counts from the process's start, not from the
 *                       request; `off` cancels a #N not reached yet; a bad #N is refused;
 *                       a rule replaced by one with another action fires the new action
 *   validate            #N and its combinations accepted, malformed ones refused by name
 *   trace on            every hit published, each point numbered 1, 2, ... in order
 *   crash#2, trace off  one record, "fired": "crash", arrives although the process died
 *   crash#2, trace on   the fired record is the last one, after hit 1 of that point
 *   trace off           no record when nothing fires (with and without a #N rule waiting)
 *   two services here   each hit on the subject of the service whose thread hit it,
 *                       numbered per process; a thread of neither is not published
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "conversions.pb-c.h"
#include "fault_fixture.h"

#define CALL_TIMEOUT_MS 10000
#define CRASH_CALL_TIMEOUT_MS 1000
#define CONTROL_SUBJECT "$NATOMIC.FAULTS.conversions"
#define TRACE_ALL NATOMIC_FAULT_TRACE_PREFIX ".>"
#define MAX_HITS 1024

static const char *const trace_on[] = {"NATOMIC_FAULT_TRACE=1", NULL};
static const char *const trace_off[] = {"NATOMIC_FAULT_TRACE=0", NULL};
static const char *const control_on[] = {"NATOMIC_FAULT_TRACE=0", "NATOMIC_FAULT_CONTROL=1", NULL};

/* ---- trace records -------------------------------------------------- */

typedef struct hit {
    char subject[200];
    char service[64];
    char instance[80];
    char point[128];
    long long pid;
    long long occurrence;  /* -1: null */
    long long seq;         /* -1: null */
    long long time_ns;
    char fired[16];        /* "": null */
} hit_t;

typedef struct hits {
    hit_t items[MAX_HITS];
    int n;
} hits_t;

static void copy_str(char *dst, size_t cap, json_t *doc, const char *key, const char *raw)
{
    json_t *v = json_object_get(doc, key);
    ck_assert_msg(json_is_string(v), "trace record: '%s' is not a string in %s", key, raw);
    snprintf(dst, cap, "%s", json_string_value(v));
}

static long long get_int(json_t *doc, const char *key, bool nullable, const char *raw)
{
    json_t *v = json_object_get(doc, key);
    if (nullable && json_is_null(v))
        return -1;
    ck_assert_msg(json_is_integer(v), "trace record: '%s' is not an integer%s in %s", key,
                  nullable ? " or null" : "", raw);
    return (long long)json_integer_value(v);
}

/* Parses one record (the documented fields, all present); asserts. */
static bool take_hit(natsMsg *m, int index, void *arg)
{
    hits_t *h = arg;
    ck_assert_msg(index < MAX_HITS, "more than %d trace records", MAX_HITS);
    char raw[1024];
    snprintf(raw, sizeof raw, "%.*s", natsMsg_GetDataLength(m), natsMsg_GetData(m));
    json_error_t err;
    json_t *doc = json_loads(raw, 0, &err);
    ck_assert_msg(json_is_object(doc), "trace record on %s is not a JSON object (%s): %s", natsMsg_GetSubject(m),
                  err.text, raw);
    hit_t *x = &h->items[h->n++];
    memset(x, 0, sizeof *x);
    snprintf(x->subject, sizeof x->subject, "%s", natsMsg_GetSubject(m));
    copy_str(x->service, sizeof x->service, doc, "service", raw);
    copy_str(x->instance, sizeof x->instance, doc, "instance", raw);
    copy_str(x->point, sizeof x->point, doc, "point", raw);
    ck_assert_msg(json_is_string(json_object_get(doc, "incarnation")), "no incarnation in %s", raw);
    x->pid = get_int(doc, "pid", false, raw);
    x->occurrence = get_int(doc, "occurrence", true, raw);
    x->seq = get_int(doc, "seq", true, raw);
    x->time_ns = get_int(doc, "time_ns", false, raw);
    json_t *fired = json_object_get(doc, "fired");
    ck_assert_msg(fired != NULL && (json_is_null(fired) || json_is_string(fired)),
                  "'fired' must be null or a string in %s", raw);
    if (json_is_string(fired))
        snprintf(x->fired, sizeof x->fired, "%s", json_string_value(fired));
    char want_subject[200];
    snprintf(want_subject, sizeof want_subject, NATOMIC_FAULT_TRACE_PREFIX ".%s.%s", x->service, x->instance);
    ck_assert_msg(strcmp(x->subject, want_subject) == 0, "record of %s/%s came on %s, expected %s", x->service,
                  x->instance, x->subject, want_subject);
    json_decref(doc);
    natsMsg_Destroy(m);
    return true;
}

/* Every record on `sub` until none came for QUIET_MS (waits up to 5 s for `want`). Free with free(). */
static hits_t *collect_hits(natsSubscription *sub, int want)
{
    hits_t *h = calloc(1, sizeof *h);
    ck_assert_ptr_nonnull(h);
    fixture_collect_each(sub, want, QUIET_MS, fixture_ms(5000), take_hit, h);
    return h;
}

/* The records of `point`, in arrival order, into out[max]; returns how many. */
static int hits_of(const hits_t *h, const char *point, const hit_t **out, int max)
{
    int n = 0;
    for (int i = 0; i < h->n && n < max; i++)
        if (strcmp(h->items[i].point, point) == 0)
            out[n++] = &h->items[i];
    return n;
}

/* ---- the conversions child ------------------------------------------ */

/* Connects and subscribes to every trace record before the child starts (its first hits count). */
static natsSubscription *start_traced(fault_fixture_t *f, const char *faults, const char *const extra[])
{
    memset(f, 0, sizeof *f);
    fault_tmpdir(f->tmpdir, sizeof f->tmpdir);
    f->nc = fixture_connect();
    natsSubscription *sub = NULL;
    natsStatus s = natsConnection_SubscribeSync(&sub, f->nc, TRACE_ALL);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(sub, -1, -1);
    if (s == NATS_OK)
        s = natsConnection_Flush(f->nc);
    ck_assert_msg(s == NATS_OK, "subscribe " TRACE_ALL ": %s", natsStatus_GetText(s));
    fault_child_start_env(f, faults, NULL, extra, true);
    return sub;
}

/* `calls` calls as 'S' (success) or 'F' (InjectedFault); anything else fails the test. */
static void call_pattern(fault_fixture_t *f, int first, int calls, char *out)
{
    for (int i = 0; i < calls; i++) {
        natomic_call_info_t info;
        natomic_status_t st = fault_call(f, first + i, fixture_ms(CALL_TIMEOUT_MS), &info);
        if (st == NATOMIC_OK) {
            out[i] = 'S';
        } else {
            ck_assert_msg(st == NATOMIC_ETRANSIENT && info.code == 503 && strcmp(info.type, "InjectedFault") == 0,
                          "call %d: expected NATOMIC_OK or a 503 InjectedFault, got %s %d '%s' (%s)", first + i,
                          natomic_status_name(st), info.code, info.type, info.message);
            out[i] = 'F';
        }
    }
    out[calls] = '\0';
}

/* Sends a fault list to every conversions instance and returns its answer in out. */
static void control(fault_fixture_t *f, const char *spec, char *out, size_t cap)
{
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, f->nc, CONTROL_SUBJECT, spec, fixture_ms(5000));
    ck_assert_msg(s == NATS_OK, CONTROL_SUBJECT " '%s': %s", spec, natsStatus_GetText(s));
    snprintf(out, cap, "%.*s", natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
    natsMsg_Destroy(reply);
}

/* Waits for the child's death by SIGKILL; asserts. */
static void expect_killed(fault_fixture_t *f, const char *what)
{
    int status = 0;
    bool ended = fixture_wait_exit(&f->child, fixture_ms(10000), &status);
    if (!ended)
        fixture_stop_child(&f->child, SIGKILL);
    ck_assert_msg(ended, "%s: conversions still runs 10 s later (log: %s)", what, f->child.log_path);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "%s: expected death by SIGKILL, got wait status %#x (log: %s)", what, (unsigned)status,
                  f->child.log_path);
}

/* ---- #N ------------------------------------------------------------- */

START_TEST(test_occurrence_fires_on_nth_hit_only)
{
    fault_fixture_t f;
    fault_start(&f, "natomic/before_handler=error#3", NULL);
    char got[8];
    call_pattern(&f, 1, 6, got);
    ck_assert_msg(strcmp(got, "SSFSSS") == 0,
                  "before_handler=error#3 over 6 calls: expected SSFSSS (the third hit only), got %s", got);
    int64_t rows = fault_history_rows(&f);
    ck_assert_msg(rows == 5, "five successes: expected 5 history rows, got %lld", (long long)rows);
    fault_stop(&f);
}
END_TEST

START_TEST(test_occurrence_window)
{
    fault_fixture_t f;
    fault_start(&f, "natomic/before_handler=error#2@3", NULL);
    char got[8];
    call_pattern(&f, 1, 6, got);
    ck_assert_msg(strcmp(got, "SFFFSS") == 0,
                  "before_handler=error#2@3 over 6 calls: expected SFFFSS (hits 2, 3, 4), got %s", got);
    fault_stop(&f);
}
END_TEST

START_TEST(test_occurrence_at_run_time)
{
    fault_fixture_t f;
    memset(&f, 0, sizeof f);
    fault_tmpdir(f.tmpdir, sizeof f.tmpdir);
    f.nc = fixture_connect();
    fault_child_start_env(&f, NULL, NULL, control_on, true);
    char got[8], answer[256];
    call_pattern(&f, 1, 2, got);
    ck_assert_msg(strcmp(got, "SS") == 0, "no rule yet: expected SS, got %s", got);

    /* Hits 1 and 2 are behind us: #4 is the second call from now, not the fourth. */
    control(&f, "natomic/before_handler=error#4", answer, sizeof answer);
    ck_assert_msg(strcmp(answer, "ok") == 0, "error#4 at run time: expected 'ok', got '%s'", answer);
    call_pattern(&f, 3, 3, got);
    ck_assert_msg(strcmp(got, "SFS") == 0,
                  "error#4 sent after 2 calls, then calls 3..5: expected SFS (the process's 4th hit), got %s", got);

    /* `off` cancels a #N that has not come yet. */
    control(&f, "natomic/before_handler=error#7", answer, sizeof answer);
    ck_assert_msg(strcmp(answer, "ok") == 0, "error#7: expected 'ok', got '%s'", answer);
    control(&f, "natomic/before_handler=off", answer, sizeof answer);
    ck_assert_msg(strcmp(answer, "ok") == 0, "off: expected 'ok', got '%s'", answer);
    call_pattern(&f, 6, 3, got);
    ck_assert_msg(strcmp(got, "SSS") == 0, "error#7 then off, calls 6..8: expected SSS, got %s", got);

    /* A bad occurrence is refused with the reason; nothing changes. */
    control(&f, "natomic/before_handler=error#0", answer, sizeof answer);
    ck_assert_msg(strstr(answer, "occurrence") != NULL && strstr(answer, "natomic/before_handler=error#0") != NULL,
                  "error#0: expected a refusal naming the occurrence and the entry, got '%s'", answer);
    call_pattern(&f, 9, 1, got);
    ck_assert_msg(strcmp(got, "S") == 0, "after the refused list: expected S, got %s", got);

    /* A rule replaced by one with another action: the new action is what fires. */
    control(&f, "natomic/before_handler=error#11", answer, sizeof answer);
    ck_assert_msg(strcmp(answer, "ok") == 0, "error#11: expected 'ok', got '%s'", answer);
    control(&f, "natomic/before_handler=drop#11", answer, sizeof answer);
    ck_assert_msg(strcmp(answer, "ok") == 0, "drop#11: expected 'ok', got '%s'", answer);
    call_pattern(&f, 10, 1, got);
    ck_assert_msg(strcmp(got, "S") == 0, "call 10 (before drop#11): expected S, got %s", got);
    natomic_call_info_t info;
    natomic_status_t st = fault_call(&f, 11, CRASH_CALL_TIMEOUT_MS, &info);
    ck_assert_msg(st == NATOMIC_ETIMEOUT, "call 11 under drop#11 (which replaced error#11): expected NATOMIC_ETIMEOUT "
                  "(request dropped), got %s %d '%s'", natomic_status_name(st), info.code, info.type);
    call_pattern(&f, 12, 1, got);
    ck_assert_msg(strcmp(got, "S") == 0, "call 12 (after hit 11): expected S, got %s", got);
    fault_stop(&f);
}
END_TEST

START_TEST(test_validate_occurrence)
{
    static const char *const good[] = {
        "natomic/before_reply=crash#3",
        "natomic/before_reply=crash#1",
        "natomic/before_handler=error#2@3",
        "natomic/before_handler=error@3#2",
        "natomic/client_send=delay:200#5",
        "natomic/before_handler=duplicate#4@2%0.5",
        "natomic/before_handler=pause#2;natomic/before_reply=off",
    };
    static const struct {
        const char *spec;
        const char *says; /* a word the message must hold */
    } bad[] = {
        {"x=crash#0", "occurrence"},        {"x=crash#", "occurrence"},      {"x=crash#-1", "occurrence"},
        {"x=crash#3x", "occurrence"},       {"x=crash# 3", "occurrence"},    {"x=crash#+3", "occurrence"},
        {"x=crash#3#4", "occurrence"},      {"x=crash#99999999999999999999", "occurrence"},
        {"x=crash#3@0", "times"},           {"x=off#2", "off"},              {"x=off@1", "off"},
        {"x=explode#2", "unknown action"},  {"ok=error#1;x=drop#0", "occurrence"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char err[256] = "";
        natomic_status_t st = natomic_faults_validate(good[i], err, sizeof err);
        ck_assert_msg(st == NATOMIC_OK, "'%s' must be accepted: got %s (%s)", good[i], natomic_status_name(st), err);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        natomic_status_t st = natomic_faults_validate(bad[i].spec, err, sizeof err);
        ck_assert_msg(st == NATOMIC_EINVAL, "'%s' must be refused with NATOMIC_EINVAL: got %s", bad[i].spec,
                      natomic_status_name(st));
        const char *entry = strrchr(bad[i].spec, ';') != NULL ? strrchr(bad[i].spec, ';') + 1 : bad[i].spec;
        ck_assert_msg(strstr(err, entry) != NULL && strstr(err, bad[i].says) != NULL,
                      "'%s' refused, but the message does not name '%s' and say '%s': %s", bad[i].spec, entry,
                      bad[i].says, err);
    }
}
END_TEST

/* ---- the trace ------------------------------------------------------ */

START_TEST(test_trace_every_hit_in_order)
{
    fault_fixture_t f;
    natsSubscription *sub = start_traced(&f, NULL, trace_on);
    char got[8];
    call_pattern(&f, 1, 4, got);
    ck_assert_msg(strcmp(got, "SSSS") == 0, "no rule: expected SSSS, got %s", got);
    hits_t *h = collect_hits(sub, 8);
    long pid = (long)f.child.proc.pid;
    fault_stop(&f);
    natsSubscription_Destroy(sub);

    ck_assert_msg(h->n >= 8, "4 calls, trace on: expected at least 8 records (before_handler, before_reply), got %d",
                  h->n);
    long long last_seq = 0;
    for (int i = 0; i < h->n; i++) {
        const hit_t *x = &h->items[i];
        ck_assert_msg(strcmp(x->service, "conversions") == 0 && strcmp(x->instance, h->items[0].instance) == 0 &&
                          x->pid == pid,
                      "record %d: service '%s' instance '%s' pid %lld, expected conversions, '%s', pid %ld", i,
                      x->service, x->instance, x->pid, h->items[0].instance, pid);
        ck_assert_msg(x->fired[0] == '\0', "record %d (%s #%lld): fired '%s' with no rule", i, x->point,
                      x->occurrence, x->fired);
        ck_assert_msg(x->seq > last_seq && x->time_ns > 0,
                      "record %d (%s): seq %lld after %lld (must increase), time_ns %lld", i, x->point, x->seq,
                      last_seq, x->time_ns);
        last_seq = x->seq;
    }
    /* Each point numbered 1, 2, 3, ... in the order its records came. */
    for (int i = 0; i < h->n; i++) {
        const hit_t *same[MAX_HITS];
        int n = hits_of(h, h->items[i].point, same, MAX_HITS);
        for (int k = 0; k < n; k++)
            ck_assert_msg(same[k]->occurrence == k + 1, "%s: record %d of the point has occurrence %lld, expected %d",
                          h->items[i].point, k + 1, same[k]->occurrence, k + 1);
    }
    static const char *const once_per_call[] = {"natomic/before_handler", "natomic/after_handler",
                                                "natomic/before_reply"};
    for (size_t p = 0; p < sizeof once_per_call / sizeof once_per_call[0]; p++) {
        const hit_t *same[MAX_HITS];
        int n = hits_of(h, once_per_call[p], same, MAX_HITS);
        ck_assert_msg(n == 4, "4 calls: expected 4 records of %s, got %d", once_per_call[p], n);
    }
    free(h);
}
END_TEST

START_TEST(test_fired_record_before_crash_without_trace)
{
    fault_fixture_t f;
    natsSubscription *sub = start_traced(&f, "natomic/before_reply=crash#2", trace_off);
    natomic_call_info_t info;
    natomic_status_t st = fault_call(&f, 1, fixture_ms(CALL_TIMEOUT_MS), &info);
    ck_assert_msg(st == NATOMIC_OK, "call 1 (hit 1): expected NATOMIC_OK, got %s (%s)", natomic_status_name(st),
                  info.message);
    st = fault_call(&f, 2, CRASH_CALL_TIMEOUT_MS, &info);
    ck_assert_msg(st == NATOMIC_ETIMEOUT, "call 2 (hit 2, crash): expected NATOMIC_ETIMEOUT, got %s (%s)",
                  natomic_status_name(st), info.message);
    expect_killed(&f, "before_reply=crash#2");
    hits_t *h = collect_hits(sub, 1);
    natsSubscription_Destroy(sub);
    fault_close(&f);

    ck_assert_msg(h->n == 1, "trace off, one fire: expected exactly 1 record (the fired one), got %d", h->n);
    const hit_t *x = &h->items[0];
    ck_assert_msg(strcmp(x->point, "natomic/before_reply") == 0 && x->occurrence == 2 &&
                      strcmp(x->fired, "crash") == 0 && strcmp(x->service, "conversions") == 0,
                  "expected natomic/before_reply occurrence 2 fired crash from conversions, got %s occurrence %lld "
                  "fired '%s' from %s",
                  x->point, x->occurrence, x->fired, x->service);
    free(h);
}
END_TEST

START_TEST(test_fired_record_last_before_crash_with_trace)
{
    fault_fixture_t f;
    natsSubscription *sub = start_traced(&f, "natomic/before_handler=crash#2", trace_on);
    natomic_call_info_t info;
    natomic_status_t st = fault_call(&f, 1, fixture_ms(CALL_TIMEOUT_MS), &info);
    ck_assert_msg(st == NATOMIC_OK, "call 1: expected NATOMIC_OK, got %s (%s)", natomic_status_name(st),
                  info.message);
    st = fault_call(&f, 2, CRASH_CALL_TIMEOUT_MS, &info);
    ck_assert_msg(st == NATOMIC_ETIMEOUT, "call 2 (crash before its handler): expected NATOMIC_ETIMEOUT, got %s",
                  natomic_status_name(st));
    expect_killed(&f, "before_handler=crash#2");
    hits_t *h = collect_hits(sub, 2);
    natsSubscription_Destroy(sub);
    fault_close(&f);

    const hit_t *same[MAX_HITS];
    int n = hits_of(h, "natomic/before_handler", same, MAX_HITS);
    ck_assert_msg(n == 2, "expected 2 records of natomic/before_handler (hit 1, then the crash), got %d", n);
    ck_assert_msg(same[0]->occurrence == 1 && same[0]->fired[0] == '\0',
                  "first before_handler record: expected occurrence 1 not fired, got %lld '%s'",
                  same[0]->occurrence, same[0]->fired);
    ck_assert_msg(same[1]->occurrence == 2 && strcmp(same[1]->fired, "crash") == 0,
                  "second before_handler record: expected occurrence 2 fired crash, got %lld '%s'",
                  same[1]->occurrence, same[1]->fired);
    /* Nothing of the second call happened after the fault: its record is the process's last word. */
    const hit_t *last = &h->items[h->n - 1];
    ck_assert_msg(last == same[1], "the crash record must be the last of %d records; the last is %s #%lld", h->n,
                  last->point, last->occurrence);
    free(h);
}
END_TEST

START_TEST(test_no_record_without_trace_or_fire)
{
    static const char *const lists[] = {NULL, "natomic/before_handler=error#100"};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        fault_fixture_t f;
        natsSubscription *sub = start_traced(&f, lists[i], trace_off);
        char got[8];
        call_pattern(&f, 1, 3, got);
        ck_assert_msg(strcmp(got, "SSS") == 0, "NATOMIC_FAULTS=%s: expected SSS, got %s", lists[i] ? lists[i] : "",
                      got);
        hits_t *h = collect_hits(sub, 0);
        fault_stop(&f);
        natsSubscription_Destroy(sub);
        ck_assert_msg(h->n == 0, "trace off, nothing fired (NATOMIC_FAULTS=%s): expected no record, got %d, the "
                      "first %s #%lld", lists[i] ? lists[i] : "(unset)", h->n, h->n > 0 ? h->items[0].point : "",
                      h->n > 0 ? h->items[0].occurrence : 0);
        free(h);
    }
}
END_TEST

/* ---- two services in this process ------------------------------------ */

static natomic_status_t ok_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                   void *closure)
{
    (void)ctx;
    (void)request;
    (void)reply;
    (void)closure;
    return NATOMIC_OK;
}

static natomic_service_t *start_in_process(natsConnection *nc, const char *name)
{
    natomic_service_t *svc = NULL;
    natomic_status_t st =
        natomic_service_new(&svc, nc, &(natomic_service_config_t){.name = name, .instance = name, .max_workers = 2});
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_new(%s): %s", name, natomic_strerror(st));
    st = natomic_service_add_method(svc, "inches_to_cm", ok_handler, 0, &conversions__inches_to_cm_request__descriptor,
                                    &conversions__inches_to_cm_reply__descriptor, NULL);
    ck_assert_msg(st == NATOMIC_OK, "add_method(%s): %s", name, natomic_strerror(st));
    st = natomic_service_start(svc);
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_start(%s): %s", name, natomic_strerror(st));
    return svc;
}

/* Runs last: under valgrind (no fork) the environment it sets is undone before anything follows. */
START_TEST(test_two_services_in_one_process)
{
    setenv("NATOMIC_FAULT_TRACE", "1", 1);
    natsConnection *nc = fixture_connect(), *observer = fixture_connect();
    natsSubscription *sub = NULL;
    ck_assert_int_eq(natsConnection_SubscribeSync(&sub, observer, TRACE_ALL), NATS_OK);
    ck_assert_int_eq(natsConnection_Flush(observer), NATS_OK);
    natomic_service_t *alpha = start_in_process(nc, "alpha"), *beta = start_in_process(nc, "beta");
    static const char *const order[] = {"alpha", "beta", "alpha"};
    for (size_t i = 0; i < 3; i++) {
        char subject[64];
        snprintf(subject, sizeof subject, "%s.inches_to_cm", order[i]);
        natomic_status_t st = harness_call(nc, subject, 1, fixture_ms(CALL_TIMEOUT_MS), NULL, NULL);
        ck_assert_msg(st == NATOMIC_OK, "call %zu to %s: %s", i + 1, subject, natomic_status_name(st));
    }
    hits_t *h = collect_hits(sub, 6);
    natomic_service_destroy(alpha);
    natomic_service_destroy(beta);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(observer);
    natsConnection_Destroy(nc);
    unsetenv("NATOMIC_FAULT_TRACE");

    /* The process numbers the point; each record names the service whose worker hit it. */
    const hit_t *same[MAX_HITS];
    int n = hits_of(h, "natomic/before_handler", same, MAX_HITS);
    ck_assert_msg(n == 3, "3 calls: expected 3 before_handler records, got %d", n);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(same[i]->occurrence == i + 1 && strcmp(same[i]->service, order[i]) == 0 &&
                          strcmp(same[i]->instance, order[i]) == 0,
                      "before_handler record %d: expected occurrence %d of %s, got occurrence %lld of %s/%s", i + 1,
                      i + 1, order[i], same[i]->occurrence, same[i]->service, same[i]->instance);
    /* This thread calls both and works for neither: its client_send hits are counted, not published. */
    n = hits_of(h, "natomic/client_send", same, MAX_HITS);
    ck_assert_msg(n == 0, "client_send on the test's thread (no service's): expected no record, got %d (first from %s)",
                  n, n > 0 ? same[0]->service : "");
    free(h);
}
END_TEST

static Suite *fault_hits_suite(void)
{
    Suite *s = suite_create("fault_hits");
    TCase *tc = tcase_create("hits");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_occurrence_fires_on_nth_hit_only);
    tcase_add_test(tc, test_occurrence_window);
    tcase_add_test(tc, test_occurrence_at_run_time);
    tcase_add_test(tc, test_validate_occurrence);
    tcase_add_test(tc, test_trace_every_hit_in_order);
    tcase_add_test(tc, test_fired_record_before_crash_without_trace);
    tcase_add_test(tc, test_fired_record_last_before_crash_with_trace);
    tcase_add_test(tc, test_no_record_without_trace_or_fire);
    tcase_add_test(tc, test_two_services_in_one_process);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fixture_run(fault_hits_suite(), "faults");
}
