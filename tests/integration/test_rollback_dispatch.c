/*
 * test_rollback_dispatch.c -- rollback and dispatch commands through a
 * real NATS round trip, against an in-process service.
 *
 * Proves DESIGN 3.2-3.5: rollbacks run in reverse registration order
 * (insert-at-index included), all of them, each retried by the policy and
 * dead-lettered when exhausted, with the outcome in `Natomic-Rollback`;
 * dispatches run in registration order, only after success, and a failing
 * one leaves the reply a success; commands are refused on a method without
 * the matching flag; a business failure reaches the caller with its code,
 * type and headers; `Natomic-Tx` and the call-id chain follow a call made
 * from inside a handler.
 *
 * Each test starts its own service (a distinct name, so a failed test in
 * no-fork mode cannot answer for the next one). Its methods take
 * InchesToCmRequest and reply InchesToCmReply; commands write their name
 * into a journal at every attempt, so the journal is the execution order.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conversions.pb-c.h"
#include "harness.h"

#define CALL_TIMEOUT_MS 5000
#define FAIL_ALWAYS (-1)
#define JOURNAL_MAX 64

/* ------------------------------------------------------------------ */
/* What commands and handlers observed, shared with the test thread.   */
/* ------------------------------------------------------------------ */

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static char journal[JOURNAL_MAX][16];
static int journal_len;
static atomic_int args_freed;

static void journal_reset(void)
{
    pthread_mutex_lock(&seen_mu);
    journal_len = 0;
    pthread_mutex_unlock(&seen_mu);
    atomic_store(&args_freed, 0);
}

static void journal_add(const char *name)
{
    pthread_mutex_lock(&seen_mu);
    if (journal_len < JOURNAL_MAX)
        snprintf(journal[journal_len++], sizeof journal[0], "%s", name);
    pthread_mutex_unlock(&seen_mu);
}

/* The journal as "C,B,A" (empty string when nothing ran). */
static void journal_text(char *out, size_t cap)
{
    pthread_mutex_lock(&seen_mu);
    out[0] = '\0';
    for (int i = 0; i < journal_len; i++) {
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s%s", i > 0 ? "," : "", journal[i]);
    }
    pthread_mutex_unlock(&seen_mu);
}

#define ck_assert_journal(expected)                                                                                \
    do {                                                                                                           \
        char got_[JOURNAL_MAX * 16];                                                                               \
        journal_text(got_, sizeof got_);                                                                           \
        ck_assert_str_eq(got_, expected);                                                                          \
    } while (0)

/* Args are freed after the reply left: wait (bounded) for the expected count. */
static int wait_args_freed(int expected)
{
    int64_t end = fixture_now_ms() + fixture_ms(5000);
    while (atomic_load(&args_freed) < expected && fixture_now_ms() < end)
        fixture_sleep_ms(5);
    return atomic_load(&args_freed);
}

/* ------------------------------------------------------------------ */
/* Commands                                                             */
/* ------------------------------------------------------------------ */

/* A command's plan: the first `failures` attempts fail (FAIL_ALWAYS: all). */
typedef struct step {
    char name[16];
    int failures;
    int attempts;
} step_t;

static natomic_status_t run_step(natomic_ctx_t *ctx, void *arg)
{
    (void)ctx;
    step_t *s = arg;
    journal_add(s->name);
    s->attempts++;
    return s->failures == FAIL_ALWAYS || s->attempts <= s->failures ? NATOMIC_ETRANSIENT : NATOMIC_OK;
}

static void free_step(void *arg)
{
    free(arg);
    atomic_fetch_add(&args_freed, 1);
}

static step_t *new_step(const char *name, int failures)
{
    step_t *s = calloc(1, sizeof *s);
    if (s != NULL) {
        snprintf(s->name, sizeof s->name, "%s", name);
        s->failures = failures;
    }
    return s;
}

/* Registration helpers: index SIZE_MAX appends. */
static natomic_status_t add_rollback(natomic_ctx_t *ctx, size_t index, const char *name, int failures)
{
    if (index == SIZE_MAX)
        return natomic_rollback_append(ctx, name, run_step, new_step(name, failures), free_step);
    return natomic_rollback_insert(ctx, index, name, run_step, new_step(name, failures), free_step);
}

static natomic_status_t add_dispatch(natomic_ctx_t *ctx, size_t index, const char *name, int failures)
{
    if (index == SIZE_MAX)
        return natomic_dispatch_append(ctx, name, run_step, new_step(name, failures), free_step);
    return natomic_dispatch_insert(ctx, index, name, run_step, new_step(name, failures), free_step);
}

/* Fails the call in a way no test expects when a registration did not work. */
static natomic_status_t registration_failed(natomic_ctx_t *ctx, natomic_status_t st)
{
    return natomic_fail(ctx, NATOMIC_EINTERNAL, "RegistrationFailed", "%s", natomic_strerror(st));
}

/* ------------------------------------------------------------------ */
/* Handlers                                                             */
/* ------------------------------------------------------------------ */

/* Rollbacks A, B, C appended, X inserted at 0, Y at 2: [X, A, Y, B, C]; then fails. */
static natomic_status_t order_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                      void *closure)
{
    natomic_status_t st = add_rollback(ctx, SIZE_MAX, "A", 0);
    if (st == NATOMIC_OK)
        st = add_rollback(ctx, SIZE_MAX, "B", 0);
    if (st == NATOMIC_OK)
        st = add_rollback(ctx, SIZE_MAX, "C", 0);
    if (st == NATOMIC_OK)
        st = add_rollback(ctx, 0, "X", 0);
    if (st == NATOMIC_OK)
        st = add_rollback(ctx, 2, "Y", 0);
    if (st != NATOMIC_OK)
        return registration_failed(ctx, st);
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "PaymentDeclined", "declined after %zu rollbacks",
                        natomic_rollback_count(ctx));
}

/* Rollbacks A, B (fails every attempt), C; then fails. */
static natomic_status_t one_fails_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                          ProtobufCMessage *reply, void *closure)
{
    natomic_status_t st = add_rollback(ctx, SIZE_MAX, "A", 0);
    if (st == NATOMIC_OK)
        st = add_rollback(ctx, SIZE_MAX, "B", FAIL_ALWAYS);
    if (st == NATOMIC_OK)
        st = add_rollback(ctx, SIZE_MAX, "C", 0);
    if (st != NATOMIC_OK)
        return registration_failed(ctx, st);
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "OutOfStock", "nothing left");
}

/* One rollback `release` that fails every attempt; then fails. */
static natomic_status_t exhausted_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                          ProtobufCMessage *reply, void *closure)
{
    natomic_status_t st = add_rollback(ctx, SIZE_MAX, "release", FAIL_ALWAYS);
    if (st != NATOMIC_OK)
        return registration_failed(ctx, st);
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "OutOfStock", "nothing left");
}

/* One rollback `flaky` that fails twice, then succeeds; then fails. */
static natomic_status_t flaky_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                      void *closure)
{
    natomic_status_t st = add_rollback(ctx, SIZE_MAX, "flaky", 2);
    if (st != NATOMIC_OK)
        return registration_failed(ctx, st);
    return natomic_fail(ctx, NATOMIC_ETRANSIENT, "Unavailable", "try later");
}

/*
 * Rollbacks R1, R2; dispatches B, D appended, A inserted at 0, C at 2:
 * [A, B, C, D]. Succeeds (cm = inches) for inches >= 0, fails otherwise.
 */
static natomic_status_t saga_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                     void *closure)
{
    double inches = ((const Conversions__InchesToCmRequest *)request)->inches;
    natomic_status_t st = add_rollback(ctx, SIZE_MAX, "R1", 0);
    if (st == NATOMIC_OK)
        st = add_rollback(ctx, SIZE_MAX, "R2", 0);
    if (st == NATOMIC_OK)
        st = add_dispatch(ctx, SIZE_MAX, "B", 0);
    if (st == NATOMIC_OK)
        st = add_dispatch(ctx, SIZE_MAX, "D", 0);
    if (st == NATOMIC_OK)
        st = add_dispatch(ctx, 0, "A", 0);
    if (st == NATOMIC_OK)
        st = add_dispatch(ctx, 2, "C", 0);
    if (st != NATOMIC_OK)
        return registration_failed(ctx, st);
    if (inches < 0)
        return natomic_fail(ctx, NATOMIC_EBUSINESS, "Refused", "negative: %g", inches);
    ((Conversions__InchesToCmReply *)reply)->cm = inches;
    return NATOMIC_OK;
}

/* One dispatch `notify` that fails every attempt; succeeds with cm = inches. */
static natomic_status_t bad_dispatch_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                             ProtobufCMessage *reply, void *closure)
{
    natomic_status_t st = add_dispatch(ctx, SIZE_MAX, "notify", FAIL_ALWAYS);
    if (st != NATOMIC_OK)
        return registration_failed(ctx, st);
    ((Conversions__InchesToCmReply *)reply)->cm = ((const Conversions__InchesToCmRequest *)request)->inches;
    return NATOMIC_OK;
}

/* A business failure with a type, no command. */
static natomic_status_t declined_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                         ProtobufCMessage *reply, void *closure)
{
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "PaymentDeclined", "card ending %d declined", 4242);
}

/* What try_register_handler saw: the statuses and how many args each refusal freed at once. */
typedef struct registration {
    natomic_status_t rollback, dispatch;
    int rollback_freed, dispatch_freed;
} registration_t;

static registration_t registrations[3]; /* flags none, rollback, dispatch */

/* Registers one rollback and one dispatch `probe`, records what happened, succeeds. */
static natomic_status_t try_register_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                             ProtobufCMessage *reply, void *closure)
{
    registration_t seen;
    int before = atomic_load(&args_freed);
    seen.rollback = add_rollback(ctx, SIZE_MAX, "probe", 0);
    seen.rollback_freed = atomic_load(&args_freed) - before;
    before = atomic_load(&args_freed);
    seen.dispatch = add_dispatch(ctx, SIZE_MAX, "probe", 0);
    seen.dispatch_freed = atomic_load(&args_freed) - before;
    pthread_mutex_lock(&seen_mu);
    *(registration_t *)closure = seen;
    pthread_mutex_unlock(&seen_mu);
    return NATOMIC_OK;
}

/* The ids each side of a nested call saw. */
typedef struct call_ids {
    char tx[80], call_id[80], parent_id[80];
    int64_t remaining_ms;
} call_ids_t;

static call_ids_t outer_seen, inner_seen;

static void record_ids(call_ids_t *dst, const natomic_ctx_t *ctx)
{
    pthread_mutex_lock(&seen_mu);
    snprintf(dst->tx, sizeof dst->tx, "%s", natomic_ctx_tx(ctx));
    snprintf(dst->call_id, sizeof dst->call_id, "%s", natomic_ctx_call_id(ctx));
    snprintf(dst->parent_id, sizeof dst->parent_id, "%s", natomic_ctx_parent_id(ctx));
    dst->remaining_ms = natomic_ctx_remaining_ms(ctx);
    pthread_mutex_unlock(&seen_mu);
}

static natomic_status_t inner_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                      void *closure)
{
    record_ids(&inner_seen, ctx);
    ((Conversions__InchesToCmReply *)reply)->cm = ((const Conversions__InchesToCmRequest *)request)->inches * 2;
    return NATOMIC_OK;
}

/* Calls <service>.inner from inside the call and replies with its answer. */
static natomic_status_t outer_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                      void *closure)
{
    record_ids(&outer_seen, ctx);
    char subject[128];
    snprintf(subject, sizeof subject, "%s.inner", natomic_service_name(natomic_ctx_service(ctx)));
    ProtobufCMessage *inner = NULL;
    natomic_status_t st = natomic_ctx_request(&inner, ctx, subject, request,
                                              &conversions__inches_to_cm_reply__descriptor, NULL);
    if (st != NATOMIC_OK)
        return st;
    ((Conversions__InchesToCmReply *)reply)->cm = ((Conversions__InchesToCmReply *)inner)->cm;
    protobuf_c_message_free_unpacked(inner, NULL);
    return NATOMIC_OK;
}

/* ------------------------------------------------------------------ */
/* The service under test                                               */
/* ------------------------------------------------------------------ */

typedef struct flow {
    natsConnection *nc;
    natomic_service_t *svc;
    char name[64];
} flow_t;

static const struct {
    const char *name;
    natomic_handler_fn handler;
    unsigned flags;
    void *closure;
} flow_methods[] = {
    {"order", order_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL},
    {"one_fails", one_fails_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL},
    {"exhausted", exhausted_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL},
    {"flaky", flaky_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL},
    {"saga", saga_handler, NATOMIC_ROLLBACK_ONCE_FAILED | NATOMIC_DISPATCH_AFTER_COMMIT, NULL},
    {"bad_dispatch", bad_dispatch_handler, NATOMIC_DISPATCH_AFTER_COMMIT, NULL},
    {"declined", declined_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL},
    {"flags_none", try_register_handler, 0, &registrations[0]},
    {"flags_rollback", try_register_handler, NATOMIC_ROLLBACK_ONCE_FAILED, &registrations[1]},
    {"flags_dispatch", try_register_handler, NATOMIC_DISPATCH_AFTER_COMMIT, &registrations[2]},
    {"outer", outer_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL},
    {"inner", inner_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL},
};

/* Connects and starts service `name` with every method and the policy {3 attempts, 1 ms, 2 ms}. */
static void flow_start(flow_t *f, const char *name)
{
    journal_reset();
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->nc = fixture_connect();
    natomic_service_config_t cfg = {.name = name, .retry = {.attempts = 3, .base_ms = 1, .cap_ms = 2}};
    natomic_status_t st = natomic_service_new(&f->svc, f->nc, &cfg);
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_new(%s): %s", name, natomic_strerror(st));
    for (size_t i = 0; i < sizeof flow_methods / sizeof flow_methods[0]; i++) {
        st = natomic_service_add_method(f->svc, flow_methods[i].name, flow_methods[i].handler, flow_methods[i].flags,
                                        &conversions__inches_to_cm_request__descriptor,
                                        &conversions__inches_to_cm_reply__descriptor, flow_methods[i].closure);
        ck_assert_msg(st == NATOMIC_OK, "add_method(%s): %s", flow_methods[i].name, natomic_strerror(st));
    }
    st = natomic_service_start(f->svc);
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_start(%s): %s", name, natomic_strerror(st));
}

static void flow_stop(flow_t *f)
{
    natomic_service_destroy(f->svc);
    natsConnection_Destroy(f->nc);
    f->svc = NULL;
    f->nc = NULL;
}

/* Calls <service>.<method> with `inches`. */
static natomic_status_t flow_call(flow_t *f, const char *method, double inches, double *cm, natomic_call_info_t *info)
{
    char subject[128];
    snprintf(subject, sizeof subject, "%s.%s", f->name, method);
    return harness_call(f->nc, subject, inches, fixture_ms(CALL_TIMEOUT_MS), cm, info);
}

static natomic_service_stats_t flow_stats(flow_t *f)
{
    natomic_service_stats_t stats;
    natomic_status_t st = natomic_service_get_stats(&stats, f->svc);
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_get_stats: %s", natomic_strerror(st));
    return stats;
}

static natsSubscription *subscribe_dead_letters(flow_t *f)
{
    char subject[128];
    snprintf(subject, sizeof subject, NATOMIC_DEADLETTER_PREFIX ".%s", f->name);
    natsSubscription *sub = NULL;
    natsStatus s = natsConnection_SubscribeSync(&sub, f->nc, subject);
    ck_assert_msg(s == NATS_OK, "subscribe %s: %s", subject, natsStatus_GetText(s));
    ck_assert_int_eq(natsConnection_Flush(f->nc), NATS_OK);
    return sub;
}

/* Waits (bounded) for one dead letter and returns its JSON object; asserts. */
static json_t *next_dead_letter(natsSubscription *sub)
{
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, sub, fixture_ms(5000));
    ck_assert_msg(s == NATS_OK, "no dead letter within 5 s: %s", natsStatus_GetText(s));
    json_error_t err;
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &err);
    ck_assert_msg(doc != NULL && json_is_object(doc), "dead letter is not a JSON object (%s): %.*s", err.text,
                  natsMsg_GetDataLength(m), natsMsg_GetData(m));
    natsMsg_Destroy(m);
    return doc;
}

static const char *json_str(json_t *doc, const char *key)
{
    const char *v = json_string_value(json_object_get(doc, key));
    return v != NULL ? v : "(missing)";
}

/* Checks the fields of a dead letter. */
static void check_dead_letter(json_t *doc, const flow_t *f, const char *method, const char *list,
                              const char *command)
{
    ck_assert_str_eq(json_str(doc, "service"), f->name);
    ck_assert_str_eq(json_str(doc, "method"), method);
    ck_assert_str_eq(json_str(doc, "list"), list);
    ck_assert_str_eq(json_str(doc, "command"), command);
    ck_assert_uint_eq(strlen(json_str(doc, "tx")), 32);
    json_t *attempts = json_object_get(doc, "attempts");
    ck_assert_msg(json_is_integer(attempts), "attempts is not an integer");
    ck_assert_int_eq(json_integer_value(attempts), 3);
}

/* ------------------------------------------------------------------ */
/* Tests                                                                */
/* ------------------------------------------------------------------ */

START_TEST(test_rollback_reverse_order_with_inserts)
{
    flow_t f;
    flow_start(&f, "rb_order");
    natomic_call_info_t info;
    natomic_status_t st = flow_call(&f, "order", 1, NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EBUSINESS");
    ck_assert_str_eq(info.message, "declined after 5 rollbacks");
    /* Registered [X, A, Y, B, C]: compensation order is the reverse. */
    ck_assert_journal("C,B,Y,A,X");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "complete");
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "none");
    /* Every arg freed exactly once, when the call ended. */
    ck_assert_int_eq(wait_args_freed(5), 5);
    flow_stop(&f);
}
END_TEST

START_TEST(test_rollback_every_command_attempted)
{
    flow_t f;
    flow_start(&f, "rb_all");
    natsSubscription *dead = subscribe_dead_letters(&f);
    natomic_call_info_t info;
    natomic_status_t st = flow_call(&f, "one_fails", 1, NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EBUSINESS");
    ck_assert_str_eq(info.type, "OutOfStock");
    /* B fails all 3 attempts, and A still runs after it. */
    ck_assert_journal("C,B,B,B,A");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "incomplete");
    json_t *doc = next_dead_letter(dead);
    check_dead_letter(doc, &f, "one_fails", "rollback", "B");
    json_decref(doc);
    natomic_service_stats_t stats = flow_stats(&f);
    ck_assert_uint_eq(stats.rollbacks_run, 2);
    ck_assert_uint_eq(stats.rollbacks_exhausted, 1);
    ck_assert_uint_eq(stats.dead_letters, 1);
    natsSubscription_Destroy(dead);
    flow_stop(&f);
}
END_TEST

START_TEST(test_rollback_retry_then_dead_letter)
{
    flow_t f;
    flow_start(&f, "rb_dead");
    natsSubscription *dead = subscribe_dead_letters(&f);
    natomic_call_info_t info;
    natomic_status_t st = flow_call(&f, "exhausted", 1, NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EBUSINESS");
    ck_assert_int_eq(info.code, 422);
    ck_assert_str_eq(info.type, "OutOfStock");
    ck_assert_journal("release,release,release");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "incomplete");

    json_t *doc = next_dead_letter(dead);
    check_dead_letter(doc, &f, "exhausted", "rollback", "release");
    json_decref(doc);
    natsMsg *extra = NULL;
    ck_assert_msg(natsSubscription_NextMsg(&extra, dead, 200) == NATS_TIMEOUT, "a second dead letter: %.*s",
                  extra ? natsMsg_GetDataLength(extra) : 0, extra ? natsMsg_GetData(extra) : "");

    natomic_service_stats_t stats = flow_stats(&f);
    ck_assert_uint_eq(stats.rollbacks_exhausted, 1);
    ck_assert_uint_eq(stats.dead_letters, 1);
    ck_assert_uint_eq(stats.rollbacks_run, 0);
    ck_assert_uint_eq(stats.retries, 2);
    natsSubscription_Destroy(dead);
    flow_stop(&f);
}
END_TEST

START_TEST(test_rollback_retry_then_success)
{
    flow_t f;
    flow_start(&f, "rb_flaky");
    natsSubscription *dead = subscribe_dead_letters(&f);
    natomic_call_info_t info;
    natomic_status_t st = flow_call(&f, "flaky", 1, NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_ETRANSIENT");
    ck_assert_int_eq(info.code, 503);
    ck_assert_journal("flaky,flaky,flaky");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "complete");
    natomic_service_stats_t stats = flow_stats(&f);
    ck_assert_uint_eq(stats.rollbacks_run, 1);
    ck_assert_uint_eq(stats.retries, 2);
    ck_assert_uint_eq(stats.rollbacks_exhausted, 0);
    ck_assert_uint_eq(stats.dead_letters, 0);
    natsMsg *m = NULL;
    ck_assert_msg(natsSubscription_NextMsg(&m, dead, 200) == NATS_TIMEOUT, "unexpected dead letter: %.*s",
                  m ? natsMsg_GetDataLength(m) : 0, m ? natsMsg_GetData(m) : "");
    natsSubscription_Destroy(dead);
    flow_stop(&f);
}
END_TEST

START_TEST(test_success_dispatches_never_rolls_back)
{
    flow_t f;
    flow_start(&f, "dp_success");
    natomic_call_info_t info;
    double cm = 0;
    natomic_status_t st = flow_call(&f, "saga", 7, &cm, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_double_eq(cm, 7);
    /* Registered B, D, then A at 0 and C at 2: registration order A, B, C, D; no R. */
    ck_assert_journal("A,B,C,D");
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "complete");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "none");
    natomic_service_stats_t stats = flow_stats(&f);
    ck_assert_uint_eq(stats.dispatches_run, 4);
    ck_assert_uint_eq(stats.rollbacks_run, 0);
    ck_assert_int_eq(wait_args_freed(6), 6);
    flow_stop(&f);
}
END_TEST

START_TEST(test_failure_rolls_back_never_dispatches)
{
    flow_t f;
    flow_start(&f, "dp_failure");
    natomic_call_info_t info;
    natomic_status_t st = flow_call(&f, "saga", -7, NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EBUSINESS");
    ck_assert_str_eq(info.type, "Refused");
    ck_assert_journal("R2,R1");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "complete");
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "none");
    natomic_service_stats_t stats = flow_stats(&f);
    ck_assert_uint_eq(stats.dispatches_run, 0);
    ck_assert_uint_eq(stats.rollbacks_run, 2);
    ck_assert_int_eq(wait_args_freed(6), 6);
    flow_stop(&f);
}
END_TEST

START_TEST(test_failing_dispatch_keeps_reply_ok)
{
    flow_t f;
    flow_start(&f, "dp_failing");
    natsSubscription *dead = subscribe_dead_letters(&f);
    natomic_call_info_t info;
    double cm = 0;
    natomic_status_t st = flow_call(&f, "bad_dispatch", 3, &cm, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_double_eq(cm, 3);
    ck_assert_int_eq(info.code, 0);
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "incomplete");
    ck_assert_journal("notify,notify,notify");
    json_t *doc = next_dead_letter(dead);
    check_dead_letter(doc, &f, "bad_dispatch", "dispatch", "notify");
    json_decref(doc);
    natomic_service_stats_t stats = flow_stats(&f);
    ck_assert_uint_eq(stats.dispatches_exhausted, 1);
    ck_assert_uint_eq(stats.dead_letters, 1);
    ck_assert_uint_eq(stats.errors, 0);
    natsSubscription_Destroy(dead);
    flow_stop(&f);
}
END_TEST

/* Checks what try_register_handler recorded for one method. */
static void check_registration(int which, natomic_status_t rollback, natomic_status_t dispatch)
{
    pthread_mutex_lock(&seen_mu);
    registration_t got = registrations[which];
    pthread_mutex_unlock(&seen_mu);
    ck_assert_str_eq(natomic_status_name(got.rollback), natomic_status_name(rollback));
    ck_assert_str_eq(natomic_status_name(got.dispatch), natomic_status_name(dispatch));
    /* A refused registration frees its arg at once; an accepted one keeps it. */
    ck_assert_int_eq(got.rollback_freed, rollback == NATOMIC_OK ? 0 : 1);
    ck_assert_int_eq(got.dispatch_freed, dispatch == NATOMIC_OK ? 0 : 1);
}

START_TEST(test_commands_refused_without_flag)
{
    flow_t f;
    flow_start(&f, "flags");
    natomic_status_t st = flow_call(&f, "flags_none", 1, NULL, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    check_registration(0, NATOMIC_ENOTENABLED, NATOMIC_ENOTENABLED);

    st = flow_call(&f, "flags_rollback", 1, NULL, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    check_registration(1, NATOMIC_OK, NATOMIC_ENOTENABLED);
    ck_assert_journal(""); /* success: the accepted rollback never ran */

    st = flow_call(&f, "flags_dispatch", 1, NULL, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    check_registration(2, NATOMIC_ENOTENABLED, NATOMIC_OK);
    ck_assert_journal("probe"); /* the accepted dispatch ran */
    flow_stop(&f);
}
END_TEST

START_TEST(test_business_error_reaches_caller)
{
    flow_t f;
    flow_start(&f, "declined");
    natomic_call_info_t info;
    natomic_status_t st = flow_call(&f, "declined", 1, NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EBUSINESS");
    ck_assert_str_eq(natomic_status_name(info.kind), "NATOMIC_EBUSINESS");
    ck_assert_int_eq(info.code, 422);
    ck_assert_str_eq(info.type, "PaymentDeclined");
    ck_assert_str_eq(info.message, "card ending 4242 declined");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "none");

    /* The same call with a plain NATS client: the headers are the contract. */
    natsMsg *req = harness_request_msg("declined.declined", 1);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestMsg(&reply, f.nc, req, fixture_ms(CALL_TIMEOUT_MS));
    natsMsg_Destroy(req);
    ck_assert_msg(s == NATS_OK, "raw request: %s", natsStatus_GetText(s));
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_SERVICE_ERROR), "card ending 4242 declined");
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_SERVICE_ERROR_CODE), "422");
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_ERROR_TYPE), "PaymentDeclined");
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_ROLLBACK), "none");
    natsMsg_Destroy(reply);
    flow_stop(&f);
}
END_TEST

START_TEST(test_tx_propagates_to_nested_call)
{
    flow_t f;
    flow_start(&f, "nested");

    /* A transaction id given by the caller is kept across the nested call. */
    natsMsg *req = harness_request_msg("nested.outer", 4);
    ck_assert_int_eq(natsMsgHeader_Set(req, NATOMIC_HDR_TX, "tx-from-the-test"), NATS_OK);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestMsg(&reply, f.nc, req, fixture_ms(CALL_TIMEOUT_MS));
    natsMsg_Destroy(req);
    ck_assert_msg(s == NATS_OK, "raw request: %s", natsStatus_GetText(s));
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_SERVICE_ERROR_CODE), NULL);
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_TX), "tx-from-the-test");
    natsMsg_Destroy(reply);
    pthread_mutex_lock(&seen_mu);
    call_ids_t outer = outer_seen, inner = inner_seen;
    pthread_mutex_unlock(&seen_mu);
    ck_assert_str_eq(outer.tx, "tx-from-the-test");
    ck_assert_str_eq(inner.tx, "tx-from-the-test");
    ck_assert_str_eq(outer.parent_id, "");
    ck_assert_str_eq(inner.parent_id, outer.call_id);
    ck_assert_str_ne(inner.call_id, outer.call_id);

    /* Without one, the outer call makes a new transaction and passes it on. */
    double cm = 0;
    natomic_status_t st = flow_call(&f, "outer", 5, &cm, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_double_eq(cm, 10);
    pthread_mutex_lock(&seen_mu);
    outer = outer_seen;
    inner = inner_seen;
    pthread_mutex_unlock(&seen_mu);
    ck_assert_uint_eq(strlen(outer.tx), 32);
    ck_assert_str_ne(outer.tx, "tx-from-the-test");
    ck_assert_str_eq(inner.tx, outer.tx);
    ck_assert_str_eq(inner.parent_id, outer.call_id);
    /* The caller's timeout became the outer deadline, and what was left of it the inner one. */
    ck_assert_int_le(outer.remaining_ms, fixture_ms(CALL_TIMEOUT_MS));
    ck_assert_int_le(inner.remaining_ms, outer.remaining_ms);
    ck_assert_int_gt(inner.remaining_ms, 0);
    flow_stop(&f);
}
END_TEST

static Suite *rollback_dispatch_suite(void)
{
    Suite *s = suite_create("rollback_dispatch");
    TCase *rollback = tcase_create("rollback");
    tcase_add_test(rollback, test_rollback_reverse_order_with_inserts);
    tcase_add_test(rollback, test_rollback_every_command_attempted);
    tcase_add_test(rollback, test_rollback_retry_then_dead_letter);
    tcase_add_test(rollback, test_rollback_retry_then_success);
    suite_add_tcase(s, rollback);
    TCase *dispatch = tcase_create("dispatch");
    tcase_add_test(dispatch, test_success_dispatches_never_rolls_back);
    tcase_add_test(dispatch, test_failure_rolls_back_never_dispatches);
    tcase_add_test(dispatch, test_failing_dispatch_keeps_reply_ok);
    tcase_add_test(dispatch, test_commands_refused_without_flag);
    suite_add_tcase(s, dispatch);
    TCase *calls = tcase_create("calls");
    tcase_add_test(calls, test_business_error_reaches_caller);
    tcase_add_test(calls, test_tx_propagates_to_nested_call);
    suite_add_tcase(s, calls);
    return s;
}

int main(void)
{
    return fixture_run(rollback_dispatch_suite(), "it");
}
