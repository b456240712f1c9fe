/*
 * test_runtime.c -- the public API's guard rails and the service's life.
 *
 * Proves that invalid arguments are refused with a clear status and no
 * side effect (service names, duplicate or late methods, requests without
 * subject or time, command inserts out of range -- whose arg is freed at
 * once), that every status has its own text and the error codes map both
 * ways, that a client gives up with NATOMIC_ETIMEOUT on a slow handler,
 * and that SIGTERM drains a service: calls in flight get their replies,
 * the process exits 0, and nobody answers afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conversions.pb-c.h"
#include "harness.h"

#define REQ_DESC (&conversions__inches_to_cm_request__descriptor)
#define REPLY_DESC (&conversions__inches_to_cm_reply__descriptor)

static natomic_status_t ok_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                   void *closure)
{
    return NATOMIC_OK;
}

static natomic_status_t noop_command(natomic_ctx_t *ctx, void *arg)
{
    return NATOMIC_OK;
}

static atomic_int args_freed;

static void count_free(void *arg)
{
    free(arg);
    atomic_fetch_add(&args_freed, 1);
}

/* Starts service `name` on `nc` with `handler` as method `method`; asserts. */
static natomic_service_t *start_service(natsConnection *nc, const char *name, const char *method,
                                        natomic_handler_fn handler, unsigned flags)
{
    natomic_service_t *svc = NULL;
    natomic_status_t st = natomic_service_new(&svc, nc, &(natomic_service_config_t){.name = name});
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_new(%s): %s", name, natomic_strerror(st));
    st = natomic_service_add_method(svc, method, handler, flags, REQ_DESC, REPLY_DESC, NULL);
    ck_assert_msg(st == NATOMIC_OK, "add_method(%s): %s", method, natomic_strerror(st));
    st = natomic_service_start(svc);
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_start(%s): %s", name, natomic_strerror(st));
    return svc;
}

START_TEST(test_service_new_rejects_bad_config)
{
    natsConnection *nc = fixture_connect();
    static const char *const bad_names[] = {NULL, "", "a.b", "a b", "a*", "a>", "\xc3\xa9t\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        natomic_service_t *svc = NULL;
        natomic_status_t st = natomic_service_new(&svc, nc, &(natomic_service_config_t){.name = bad_names[i]});
        ck_assert_msg(st == NATOMIC_EINVAL, "name '%s': %s, expected NATOMIC_EINVAL",
                      bad_names[i] ? bad_names[i] : "(null)", natomic_status_name(st));
        ck_assert_ptr_null(svc); /* out-parameters are written only on success */
    }
    natomic_service_t *svc = NULL;
    ck_assert_str_eq(natomic_status_name(natomic_service_new(&svc, NULL, &(natomic_service_config_t){.name = "x"})),
                     "NATOMIC_EINVAL");
    ck_assert_str_eq(natomic_status_name(natomic_service_new(&svc, nc, NULL)), "NATOMIC_EINVAL");
    ck_assert_str_eq(natomic_status_name(natomic_service_new(NULL, nc, &(natomic_service_config_t){.name = "x"})),
                     "NATOMIC_EINVAL");
    ck_assert_str_eq(natomic_status_name(natomic_service_new(
                         &svc, nc, &(natomic_service_config_t){.name = "x", .max_workers = -1})),
                     "NATOMIC_EINVAL");
    ck_assert_ptr_null(svc);

    natomic_status_t st = natomic_service_new(&svc, nc, &(natomic_service_config_t){.name = "Good_name-1"});
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_str_eq(natomic_service_name(svc), "Good_name-1");
    natomic_service_destroy(svc);
    natomic_service_destroy(NULL);
    natsConnection_Destroy(nc);
}
END_TEST

START_TEST(test_add_method_duplicate_and_late)
{
    natsConnection *nc = fixture_connect();
    natomic_service_t *svc = NULL;
    ck_assert_int_eq(natomic_service_new(&svc, nc, &(natomic_service_config_t){.name = "methods"}), NATOMIC_OK);
    natomic_status_t st = natomic_service_add_method(svc, "m", ok_handler, 0, REQ_DESC, REPLY_DESC, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    st = natomic_service_add_method(svc, "m", ok_handler, 0, REQ_DESC, REPLY_DESC, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EEXIST");
    st = natomic_service_add_method(svc, "a.b", ok_handler, 0, REQ_DESC, REPLY_DESC, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    st = natomic_service_add_method(svc, "n", NULL, 0, REQ_DESC, REPLY_DESC, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    st = natomic_service_add_method(svc, "n", ok_handler, 1u << 7, REQ_DESC, REPLY_DESC, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");

    ck_assert_int_eq(natomic_service_start(svc), NATOMIC_OK);
    st = natomic_service_add_method(svc, "late", ok_handler, 0, REQ_DESC, REPLY_DESC, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_ESTATE");
    /* The refused method was not added: its subject has no method behind it. */
    natomic_call_info_t info;
    st = harness_call(nc, "methods.late", 1, fixture_ms(5000), NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_ENOMETHOD");
    ck_assert_str_eq(natomic_status_name(harness_call(nc, "methods.m", 1, fixture_ms(5000), NULL, NULL)),
                     "NATOMIC_OK");
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
}
END_TEST

START_TEST(test_request_rejects_bad_arguments)
{
    natsConnection *nc = fixture_connect();
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    natomic_call_info_t info;
    natomic_status_t st = natomic_request(&reply, nc, NULL, &req.base, REPLY_DESC, 1000, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    ck_assert_str_eq(natomic_status_name(info.kind), "NATOMIC_EINVAL");
    st = natomic_request(&reply, nc, "", &req.base, REPLY_DESC, 1000, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    st = natomic_request(&reply, nc, "any.thing", &req.base, REPLY_DESC, 0, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    st = natomic_request(&reply, nc, "any.thing", &req.base, REPLY_DESC, -5, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    st = natomic_request(&reply, NULL, "any.thing", &req.base, REPLY_DESC, 1000, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    st = natomic_request(&reply, nc, "any.thing", NULL, REPLY_DESC, 1000, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    st = natomic_request(&reply, nc, "any.thing", &req.base, NULL, 1000, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EINVAL");
    ck_assert_ptr_null(reply);
    /* Nobody listens on a valid subject: that is a different status. */
    st = natomic_request(&reply, nc, "nobody.here", &req.base, REPLY_DESC, fixture_ms(2000), NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_ENORESPONDERS");
    ck_assert_ptr_null(reply);
    natsConnection_Destroy(nc);
}
END_TEST

/* What insert_handler saw, read by the test after the reply. */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
typedef struct insert_seen {
    natomic_status_t rollback_past_end, rollback_at_end, rollback_past_end_again, dispatch_past_end;
    int freed_by_refusals;
    size_t rollback_count;
} insert_seen_t;

static insert_seen_t inserts;

static void *new_arg(void)
{
    return malloc(16);
}

/* Inserts at indexes past the end (refused) and at the end (accepted). */
static natomic_status_t insert_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                       void *closure)
{
    int before = atomic_load(&args_freed);
    natomic_status_t a = natomic_rollback_insert(ctx, 1, "past end", noop_command, new_arg(), count_free);
    natomic_status_t b = natomic_rollback_insert(ctx, 0, "at end", noop_command, new_arg(), count_free);
    natomic_status_t c = natomic_rollback_insert(ctx, 2, "past end", noop_command, new_arg(), count_free);
    natomic_status_t d = natomic_dispatch_insert(ctx, 1, "past end", noop_command, new_arg(), count_free);
    int freed = atomic_load(&args_freed) - before;
    pthread_mutex_lock(&seen_mu);
    inserts.rollback_past_end = a;
    inserts.rollback_at_end = b;
    inserts.rollback_past_end_again = c;
    inserts.dispatch_past_end = d;
    inserts.freed_by_refusals = freed;
    inserts.rollback_count = natomic_rollback_count(ctx);
    pthread_mutex_unlock(&seen_mu);
    return NATOMIC_OK;
}

START_TEST(test_insert_out_of_range_frees_arg)
{
    atomic_store(&args_freed, 0);
    natsConnection *nc = fixture_connect();
    natomic_service_t *svc = start_service(nc, "inserts", "insert", insert_handler,
                                           NATOMIC_ROLLBACK_ONCE_FAILED | NATOMIC_DISPATCH_AFTER_COMMIT);
    natomic_status_t st = harness_call(nc, "inserts.insert", 1, fixture_ms(5000), NULL, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    pthread_mutex_lock(&seen_mu);
    insert_seen_t got = inserts;
    pthread_mutex_unlock(&seen_mu);
    ck_assert_str_eq(natomic_status_name(got.rollback_past_end), "NATOMIC_EINVAL");
    ck_assert_str_eq(natomic_status_name(got.rollback_at_end), "NATOMIC_OK");
    ck_assert_str_eq(natomic_status_name(got.rollback_past_end_again), "NATOMIC_EINVAL");
    ck_assert_str_eq(natomic_status_name(got.dispatch_past_end), "NATOMIC_EINVAL");
    ck_assert_int_eq(got.freed_by_refusals, 3);
    ck_assert_uint_eq(got.rollback_count, 1);
    natomic_service_destroy(svc); /* the call ended: the accepted one is freed too */
    ck_assert_int_eq(atomic_load(&args_freed), 4);
    natsConnection_Destroy(nc);
}
END_TEST

START_TEST(test_status_texts)
{
    for (int i = 0; i < NATOMIC_STATUS_COUNT_; i++) {
        const char *text = natomic_strerror((natomic_status_t)i);
        const char *name = natomic_status_name((natomic_status_t)i);
        ck_assert_ptr_nonnull(text);
        ck_assert_ptr_nonnull(name);
        ck_assert_str_ne(text, "unknown status");
        ck_assert_msg(strncmp(name, "NATOMIC_", 8) == 0, "status %d is named '%s'", i, name);
        for (int j = 0; j < i; j++) {
            ck_assert_msg(strcmp(text, natomic_strerror((natomic_status_t)j)) != 0, "statuses %d and %d share '%s'",
                          j, i, text);
            ck_assert_str_ne(name, natomic_status_name((natomic_status_t)j));
        }
    }
    ck_assert_str_eq(natomic_strerror(NATOMIC_STATUS_COUNT_), "unknown status");
    ck_assert_str_eq(natomic_strerror((natomic_status_t)-1), "unknown status");
    ck_assert_str_eq(natomic_status_name(NATOMIC_EBUSINESS), "NATOMIC_EBUSINESS");
}
END_TEST

START_TEST(test_error_code_round_trip)
{
    static const struct {
        natomic_status_t kind;
        int code;
    } table[] = {{NATOMIC_EBADINPUT, 400}, {NATOMIC_ENOMETHOD, 404},  {NATOMIC_EBUSINESS, 422},
                 {NATOMIC_EINTERNAL, 500}, {NATOMIC_ETRANSIENT, 503}, {NATOMIC_ETIMEOUT, 504}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        ck_assert_int_eq(natomic_error_code(table[i].kind), table[i].code);
        ck_assert_str_eq(natomic_status_name(natomic_error_kind(table[i].code)), natomic_status_name(table[i].kind));
    }
    /* Every error kind survives the wire. */
    for (int k = NATOMIC_EBADINPUT; k <= NATOMIC_EINTERNAL; k++)
        ck_assert_str_eq(natomic_status_name(natomic_error_kind(natomic_error_code((natomic_status_t)k))),
                         natomic_status_name((natomic_status_t)k));
    ck_assert_int_eq(natomic_error_code(NATOMIC_OK), 500);
    ck_assert_int_eq(natomic_error_code(NATOMIC_ENATS), 500);
    /* Unknown codes: a 4xx is the client's fault, anything else the service's. */
    ck_assert_str_eq(natomic_status_name(natomic_error_kind(418)), "NATOMIC_EBADINPUT");
    ck_assert_str_eq(natomic_status_name(natomic_error_kind(999)), "NATOMIC_EINTERNAL");
    ck_assert_str_eq(natomic_status_name(natomic_error_kind(0)), "NATOMIC_EINTERNAL");
}
END_TEST

/* Sleeps 300 ms, then succeeds. */
static natomic_status_t nap_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                    void *closure)
{
    fixture_sleep_ms(300);
    return NATOMIC_OK;
}

START_TEST(test_client_timeout_on_slow_handler)
{
    natsConnection *nc = fixture_connect();
    natomic_service_t *svc = start_service(nc, "sleepy", "nap", nap_handler, 0);
    natomic_call_info_t info;
    natomic_status_t st = harness_call(nc, "sleepy.nap", 1, 1, NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_ETIMEOUT");
    ck_assert_str_eq(natomic_status_name(info.kind), "NATOMIC_ETIMEOUT");
    natomic_service_destroy(svc); /* waits for the nap to end */
    natsConnection_Destroy(nc);
}
END_TEST

/* ---- SIGTERM drains in-flight calls ------------------------------ */

#define IN_FLIGHT 5

typedef struct slow_call {
    natsConnection *nc;
    double inches;
    natomic_status_t status;
    double cm;
} slow_call_t;

static void *slow_call_main(void *arg)
{
    slow_call_t *c = arg;
    c->status = harness_call(c->nc, "slow.echo", c->inches, fixture_ms(5000), &c->cm, NULL);
    return NULL;
}

/* Polls $SRV.STATS.slow (bounded) until the service has taken `n` calls. */
static int64_t wait_calls_taken(natsConnection *nc, int64_t n)
{
    int64_t taken = -1;
    int64_t end = fixture_now_ms() + fixture_ms(5000);
    while (fixture_now_ms() < end) {
        json_t *stats = harness_request_json(nc, "$SRV.STATS.slow");
        taken = json_integer_value(json_object_get(json_array_get(json_object_get(stats, "endpoints"), 0),
                                                   "num_requests"));
        json_decref(stats);
        if (taken >= n)
            break;
        fixture_sleep_ms(5);
    }
    return taken;
}

START_TEST(test_sigterm_drains_in_flight_calls)
{
    natsConnection *nc = fixture_connect();
    fixture_child_t child;
    memset(&child, 0, sizeof child);
    const char *args[] = {"--sleep-ms", "500", NULL};
    fixture_spawn_service(&child, nc, "SLOW_SERVICE_BIN", "slow", args);

    slow_call_t calls[IN_FLIGHT];
    pthread_t threads[IN_FLIGHT];
    for (int i = 0; i < IN_FLIGHT; i++) {
        calls[i] = (slow_call_t){.nc = nc, .inches = i + 1, .status = NATOMIC_EINTERNAL};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, slow_call_main, &calls[i]), 0);
    }
    /* SIGTERM once every call is inside the service (each sleeps 500 ms there). */
    int64_t taken = wait_calls_taken(nc, IN_FLIGHT);
    int status = fixture_stop_child(&child, SIGTERM);
    for (int i = 0; i < IN_FLIGHT; i++)
        pthread_join(threads[i], NULL);

    ck_assert_int_eq(taken, IN_FLIGHT);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "slow_service ended with wait status %#x (log: %s)",
                  (unsigned)status, child.log_path);
    for (int i = 0; i < IN_FLIGHT; i++) {
        ck_assert_msg(calls[i].status == NATOMIC_OK, "call %d: %s", i, natomic_status_name(calls[i].status));
        ck_assert_double_eq(calls[i].cm, calls[i].inches);
    }
    /* The process is gone: nobody answers any more. */
    natomic_status_t st = harness_call(nc, "slow.echo", 9, fixture_ms(2000), NULL, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_ENORESPONDERS");
    natsConnection_Destroy(nc);
}
END_TEST

/*
 * A FIFO whose pipe is already full, for a child's stdout and stderr: the
 * child's first log line blocks until the test reads. Returns the read end.
 */
static int make_full_fifo(char *path, size_t cap)
{
    fixture_path(path, cap, "full", ".fifo");
    ck_assert_msg(mkfifo(path, 0600) == 0, "mkfifo %s: %s", path, strerror(errno));
    int rd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    int wr = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ck_assert_msg(rd >= 0 && wr >= 0, "open %s: %s", path, strerror(errno));
    static const char filler[4096];
    while (write(wr, filler, sizeof filler) > 0) {
    }
    while (write(wr, filler, 1) > 0) { /* the last bytes below one page */
    }
    close(wr); /* the data stays: the read end is still open */
    return rd;
}

/* Reads (and drops) the child's output until it exits, at most 10 s; then SIGKILL. Returns the wait status. */
static int drain_until_exit(int rd, pid_t pid)
{
    char buf[4096];
    int status = 0;
    int64_t end = fixture_now_ms() + fixture_ms(10000);
    while (fixture_now_ms() < end) {
        while (read(rd, buf, sizeof buf) > 0) {
        }
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        fixture_sleep_ms(5);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return status;
}

/*
 * A service that answers requests must already stop gracefully on SIGTERM.
 * The child's stderr is a full pipe, so its "started" log line -- written
 * once the service is subscribed and answering -- blocks: this holds open,
 * deterministically, the moment between "answering" and whatever
 * natomic_service_run() does after starting the service.
 */
START_TEST(test_sigterm_as_soon_as_ready)
{
    natsConnection *nc = fixture_connect();
    fixture_child_t child;
    memset(&child, 0, sizeof child);
    int rd = make_full_fifo(child.log_path, sizeof child.log_path);
    const char *args[] = {"--sleep-ms", "0", NULL};
    fixture_spawn_service(&child, nc, "SLOW_SERVICE_BIN", "slow", args);
    double cm = 0;
    natomic_status_t st = harness_call(nc, "slow.echo", 2, fixture_ms(5000), &cm, NULL);

    kill(child.proc.pid, SIGTERM);
    int status = drain_until_exit(rd, child.proc.pid);
    child.proc.pid = 0;
    close(rd);

    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_double_eq(cm, 2);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "slow_service answered requests, then SIGTERM %s (wait status %#x), expected a graceful exit 0",
                  WIFSIGNALED(status) ? "killed it" : "ended it with an error", (unsigned)status);
    natsConnection_Destroy(nc);
}
END_TEST

static Suite *runtime_suite(void)
{
    Suite *s = suite_create("runtime");
    TCase *args = tcase_create("arguments");
    tcase_add_test(args, test_service_new_rejects_bad_config);
    tcase_add_test(args, test_add_method_duplicate_and_late);
    tcase_add_test(args, test_request_rejects_bad_arguments);
    tcase_add_test(args, test_insert_out_of_range_frees_arg);
    tcase_add_test(args, test_status_texts);
    tcase_add_test(args, test_error_code_round_trip);
    suite_add_tcase(s, args);
    TCase *life = tcase_create("life");
    tcase_add_test(life, test_client_timeout_on_slow_handler);
    tcase_add_test(life, test_sigterm_drains_in_flight_calls);
    tcase_add_test(life, test_sigterm_as_soon_as_ready);
    suite_add_tcase(s, life);
    return s;
}

int main(void)
{
    return fixture_run(runtime_suite(), "it");
}
