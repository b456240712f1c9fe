/*
 * saga_recovery.c -- how long durable mode takes to finish a saga whose
 * orchestrator died (DESIGN §5: all compensations done <= 1 s after the
 * restart).
 *
 * One run, in five steps:
 *   1. A fresh session in durable mode (saga_session.c): NATS, inventory,
 *      payments, notifications, and orders started with
 *      NATOMIC_FAULTS=orders/create_order/after_charge=crash@1 (the
 *      supervisor gives faults to the first start only). Seed: RESTOCK
 *      books, DEPOSIT cents. Listen on natomic.recovery.orders.
 *   2. One create_order with a CRASH_CALL_TIMEOUT_MS timeout. orders
 *      reserves, charges, and SIGKILLs itself: the call times out, one
 *      book is reserved and SAGA_AMOUNT charged, the saga record (refund,
 *      release, cancel) is in the KV bucket. The run checks all three:
 *      the timeout, the death by SIGKILL (waitid with WNOWAIT, so the
 *      supervisor still reaps it and writes its log line), and the state.
 *   3. A watcher thread is released, then t0 is taken and
 *      supervisor_restart("orders") called: the same instance name
 *      (orders-0), so the new process claims its predecessor's saga at
 *      once, without waiting for a lease to expire. The watcher polls
 *      every POLL_MS, from t0, on the client's connection:
 *        - $SRV.PING.orders until it is answered (NATS says "no
 *          responders" at once while nobody listens): the process start;
 *        - inventory.get_stock and payments.get_balance until both show
 *          the seed again (available RESTOCK, reserved 0, balance
 *          DEPOSIT, charged 0): the state back, seen from outside.
 *      The listener stamps, on receipt, "claimed" and then "ended" for
 *      the claimed call id. (Each figure includes at most one NATS hop,
 *      and the ping and state figures up to POLL_MS of polling.)
 *   4. Once both are seen, or RECOVERY_WAIT_MS after t0: the order
 *      "ord-<call id>" must be 'cancelled', and no order_created may have
 *      been heard.
 *   5. Everything is stopped (saga_session_stop -> supervisor_stop).
 * The times are from t0, "just before the restart": they include the
 * fork and exec of orders, its connection, its JetStream set-up, the
 * recovery round and the compensations. The ping figure separates the
 * first part (up to the process answering) from the rest.
 *
 * The restart is made on the main thread: the supervisor ties its
 * children's lives to the thread that started them (PR_SET_PDEATHSIG).
 */
#include "saga_recovery.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <natomic.h>

#include "bench_budget.h"
#include "saga_session.h"
#include "supervisor.h"

#define RESTOCK 10
#define DEPOSIT 10000
#define CRASH_CALL_TIMEOUT_MS 1000 /* the call that crashes orders                     */
#define DEATH_WAIT_MS 10000        /* orders is dead within this after that call's end  */
#define RECOVERY_WAIT_MS 15000     /* ping, state and "ended" are seen within this       */
#define POLL_MS 2                  /* the watcher's pause between polls                  */
#define PING_TIMEOUT_MS 200

/* What the watcher and the listener see, from t0. Guarded by mu. */
typedef struct watch {
    saga_session_t *s;
    natsConnection *nc;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool go;              /* t0 is set: start polling */
    bool abandon;         /* the restart failed: stop polling */
    int64_t t0_ns;
    int64_t deadline_ns;
    int64_t ping_ns;      /* 0 until seen */
    int64_t restored_ns;
    int64_t claimed_ns;
    int64_t ended_ns;
    char call_id[64];     /* of the first "claimed" */
    long events;          /* recovery events received */
    char odd[256];        /* an event that did not fit the story */
} watch_t;

/* ------------------------------------------------------------------ */
/* The listener: natomic.recovery.orders                               */
/* ------------------------------------------------------------------ */

static void on_recovery(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    int64_t now = bench_now_ns();
    watch_t *w = closure;
    json_error_t jerr;
    json_t *doc = json_loadb(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), 0, &jerr);
    const char *event = doc != NULL ? json_string_value(json_object_get(doc, "event")) : NULL;
    const char *call_id = doc != NULL ? json_string_value(json_object_get(doc, "call_id")) : NULL;
    pthread_mutex_lock(&w->mu);
    w->events++;
    if (event == NULL || call_id == NULL) {
        snprintf(w->odd, sizeof w->odd, "a recovery message that is not a JSON event: %.*s",
                 natsMsg_GetDataLength(msg) > 120 ? 120 : natsMsg_GetDataLength(msg), natsMsg_GetData(msg));
    } else if (strcmp(event, "claimed") == 0) {
        if (w->claimed_ns == 0) {
            w->claimed_ns = now;
            snprintf(w->call_id, sizeof w->call_id, "%s", call_id);
        } else if (strcmp(call_id, w->call_id) != 0) {
            snprintf(w->odd, sizeof w->odd, "a second saga was claimed: %s (after %s)", call_id, w->call_id);
        }
    } else if (strcmp(event, "ended") == 0) {
        if (w->claimed_ns != 0 && strcmp(call_id, w->call_id) == 0 && w->ended_ns == 0)
            w->ended_ns = now;
        else if (w->claimed_ns == 0 || strcmp(call_id, w->call_id) != 0)
            snprintf(w->odd, sizeof w->odd, "\"ended\" for call %s, which was not claimed first", call_id);
    } else if (strcmp(event, "deferred") == 0) {
        snprintf(w->odd, sizeof w->odd, "a compensation was deferred: %s",
                 json_string_value(json_object_get(doc, "detail")) != NULL
                     ? json_string_value(json_object_get(doc, "detail"))
                     : "");
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    json_decref(doc);
    natsMsg_Destroy(msg);
}

/* ------------------------------------------------------------------ */
/* The watcher: ping, stock and money, from t0                         */
/* ------------------------------------------------------------------ */

static bool orders_answers_ping(natsConnection *nc)
{
    natsMsg *reply = NULL;
    natsStatus st = natsConnection_RequestString(&reply, nc, "$SRV.PING.orders", "", PING_TIMEOUT_MS);
    natsMsg_Destroy(reply);
    return st == NATS_OK;
}

static bool state_restored(watch_t *w)
{
    long long available = -1, reserved = -1, balance = -1, charged = -1;
    return saga_session_stock(w->s, w->nc, &available, &reserved, false) == 0 && available == RESTOCK &&
           reserved == 0 && saga_session_balance(w->s, w->nc, &balance, &charged, false) == 0 &&
           balance == DEPOSIT && charged == 0;
}

static void *watcher_main(void *arg)
{
    watch_t *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->go)
        pthread_cond_wait(&w->cond, &w->mu);
    int64_t deadline = w->deadline_ns;
    pthread_mutex_unlock(&w->mu);
    bool pinged = false, restored = false, abandon = false;
    while (!(pinged && restored) && !abandon && bench_now_ns() < deadline && !bench_should_stop()) {
        if (!pinged && orders_answers_ping(w->nc)) {
            pinged = true;
            pthread_mutex_lock(&w->mu);
            w->ping_ns = bench_now_ns();
            pthread_mutex_unlock(&w->mu);
        }
        if (!restored && state_restored(w)) {
            restored = true;
            pthread_mutex_lock(&w->mu);
            w->restored_ns = bench_now_ns();
            pthread_mutex_unlock(&w->mu);
        }
        bench_sleep_ms(POLL_MS);
        pthread_mutex_lock(&w->mu);
        abandon = w->abandon;
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* One run                                                             */
/* ------------------------------------------------------------------ */

/* Appends "; text" (or "text") to out->note. */
static void note(saga_recovery_run_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(saga_recovery_run_t *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga_note_vappend(out->note, sizeof out->note, fmt, ap);
    va_end(ap);
}

static double ms_after(int64_t t0, int64_t t)
{
    return t == 0 ? -1.0 : (double)(t - t0) / 1e6;
}

/* Waits (bounded) until orders' process ended, without reaping it. 0 when it died by SIGKILL, else -1 with a
 * message. */
static int wait_orders_dead(saga_session_t *s)
{
    supervised_service_t *orders = supervisor_find(saga_session_supervisor(s), "orders", NULL);
    if (orders == NULL || orders->proc.pid <= 0) {
        fprintf(stderr, "natomic-bench-saga: orders is not running under the supervisor\n");
        return -1;
    }
    pid_t pid = orders->proc.pid;
    int64_t until = bench_now_ns() + (int64_t)DEATH_WAIT_MS * 1000000;
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        /* WNOWAIT: the supervisor reaps it in supervisor_restart() and notes it in its log. */
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 && errno != EINTR) {
            fprintf(stderr, "natomic-bench-saga: waitid on orders (pid %d): %s\n", (int)pid, strerror(errno));
            return -1;
        }
        if (si.si_pid == pid) {
            if (si.si_code == CLD_KILLED && si.si_status == SIGKILL)
                return 0;
            fprintf(stderr,
                    "natomic-bench-saga: orders ended otherwise than by its crash fault (code %d, status %d); "
                    "see its log\n",
                    si.si_code, si.si_status);
            return -1;
        }
        if (bench_now_ns() >= until || bench_should_stop()) {
            if (!bench_should_stop())
                fprintf(stderr,
                        "natomic-bench-saga: orders (pid %d) still runs %d ms after the call that should have "
                        "crashed it\n",
                        (int)pid, DEATH_WAIT_MS);
            return -1;
        }
        bench_sleep_ms(1);
    }
}

/* Step 2: the call that crashes orders, its death, the state it left. 0, or -1 with a message. */
static int crash_orders(saga_session_t *s)
{
    natomic_call_info_t info;
    char order_id[SAGA_ORDER_ID_CAP];
    natomic_status_t st = saga_session_order(s, saga_session_client(s), CRASH_CALL_TIMEOUT_MS, order_id, &info);
    if (st != NATOMIC_ETIMEOUT) {
        fprintf(stderr,
                "natomic-bench-saga: the order meant to crash orders (%s) ended with %s, not a timeout%s%s "
                "(is the build configured with -Dfault_points=disabled?)\n",
                SAGA_RECOVERY_FAULTS, natomic_status_name(st), info.message[0] != '\0' ? ": " : "", info.message);
        return -1;
    }
    if (wait_orders_dead(s) != 0)
        return -1;
    long long available = 0, reserved = 0, balance = 0, charged = 0;
    if (saga_session_stock(s, saga_session_client(s), &available, &reserved, true) != 0 ||
        saga_session_balance(s, saga_session_client(s), &balance, &charged, true) != 0)
        return -1;
    if (available != RESTOCK - SAGA_QTY || reserved != SAGA_QTY || balance != DEPOSIT - SAGA_AMOUNT ||
        charged != SAGA_AMOUNT) {
        fprintf(stderr,
                "natomic-bench-saga: after the crash, stock is %lld available + %lld reserved and money %lld + %lld "
                "charged; expected %d + %d and %d + %d (the fault fires after the charge)\n",
                available, reserved, balance, charged, RESTOCK - SAGA_QTY, SAGA_QTY, DEPOSIT - SAGA_AMOUNT,
                SAGA_AMOUNT);
        return -1;
    }
    return 0;
}

/* Step 3: restart orders and watch. Fills the times in *out. 0, or -1 with a message. */
static int restart_watched(saga_session_t *s, watch_t *w, saga_recovery_run_t *out)
{
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watcher_main, w) != 0) {
        fprintf(stderr, "natomic-bench-saga: cannot start the watcher thread\n");
        return -1;
    }
    pthread_mutex_lock(&w->mu);
    w->t0_ns = bench_now_ns();
    w->deadline_ns = w->t0_ns + (int64_t)RECOVERY_WAIT_MS * 1000000;
    w->go = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    int rc = supervisor_restart(saga_session_supervisor(s), "orders");
    int64_t restart_ns = bench_now_ns();
    if (rc != 0) {
        pthread_mutex_lock(&w->mu);
        w->abandon = true;
        pthread_mutex_unlock(&w->mu);
        fprintf(stderr, "natomic-bench-saga: orders did not come back after its restart\n");
    }
    pthread_join(watcher, NULL);

    /* "ended" may come after the state is back: wait for it within the same bound. */
    pthread_mutex_lock(&w->mu);
    while (rc == 0 && w->ended_ns == 0 && bench_now_ns() < w->deadline_ns && !bench_should_stop()) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->cond, &w->mu, &ts);
    }
    int64_t t0 = w->t0_ns;
    out->ping_ms = ms_after(t0, w->ping_ns);
    out->restart_ms = ms_after(t0, restart_ns);
    out->claimed_ms = ms_after(t0, w->claimed_ns);
    out->ended_ms = ms_after(t0, w->ended_ns);
    out->restored_ms = ms_after(t0, w->restored_ns);
    snprintf(out->call_id, sizeof out->call_id, "%s", w->call_id);
    if (w->odd[0] != '\0')
        note(out, "%s", w->odd);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* Step 4: what recovery left. Sets out->recovered and notes what is missing. 0, or -1 with a message. */
static int judge_recovery(saga_session_t *s, saga_recovery_run_t *out)
{
    if (out->claimed_ms < 0)
        note(out, "no \"claimed\" within %d ms of the restart", RECOVERY_WAIT_MS);
    else if (out->ended_ms < 0)
        note(out, "no \"ended\" for call %s within %d ms of the restart", out->call_id, RECOVERY_WAIT_MS);
    if (out->restored_ms < 0)
        note(out, "stock and money not back within %d ms of the restart", RECOVERY_WAIT_MS);
    if (out->ping_ms < 0)
        note(out, "orders did not answer $SRV.PING within %d ms", RECOVERY_WAIT_MS);
    if (out->call_id[0] != '\0') {
        char order_id[SAGA_ORDER_ID_CAP + 8];
        snprintf(order_id, sizeof order_id, "ord-%s", out->call_id);
        if (saga_session_order_status(s, order_id, out->order_status, sizeof out->order_status) != 0)
            return -1;
        if (strcmp(out->order_status, "cancelled") != 0)
            note(out, "order %s is '%s', not 'cancelled'", order_id, out->order_status);
    }
    long long events = saga_session_events_heard(s);
    if (events != 0)
        note(out, "%lld order_created heard for an order that was never confirmed", events);
    out->recovered = out->ended_ms >= 0 && out->restored_ms >= 0 && strcmp(out->order_status, "cancelled") == 0 &&
                     events == 0;
    return 0;
}

int saga_recovery_measure(saga_recovery_run_t *out)
{
    saga_recovery_run_t r;
    memset(&r, 0, sizeof r);
    r.ping_ms = r.restart_ms = r.claimed_ms = r.ended_ms = r.restored_ms = -1.0;
    watch_t w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cond, NULL);

    saga_session_t *s = NULL;
    natsSubscription *sub = NULL;
    int rc = saga_session_start(&s, true, SAGA_RECOVERY_FAULTS);
    if (rc == 0) {
        w.s = s;
        w.nc = saga_session_client(s);
        rc = saga_session_seed(s, RESTOCK, DEPOSIT);
    }
    if (rc == 0) {
        natsStatus ns = natsConnection_Subscribe(&sub, w.nc, NATOMIC_RECOVERY_PREFIX ".orders", on_recovery, &w);
        if (ns == NATS_OK)
            ns = natsConnection_FlushTimeout(w.nc, 5000);
        if (ns != NATS_OK) {
            fprintf(stderr, "natomic-bench-saga: cannot subscribe to %s.orders: %s\n", NATOMIC_RECOVERY_PREFIX,
                    natsStatus_GetText(ns));
            rc = -1;
        }
    }
    if (rc == 0)
        rc = crash_orders(s);
    if (rc == 0)
        rc = restart_watched(s, &w, &r);
    if (rc == 0 && !bench_should_stop())
        rc = judge_recovery(s, &r);
    if (rc == 0 && bench_should_stop())
        rc = -1;
    if (rc == 0 && !r.recovered)
        saga_session_print_logs(s, 30);
    if (rc != 0 && bench_stop_reason() == NULL)
        saga_session_print_logs(s, 20);
    r.measured = rc == 0;

    /* Drained, so that no callback touches `w` once this function returns. */
    if (sub != NULL && natsSubscription_Drain(sub) == NATS_OK)
        natsSubscription_WaitForDrainCompletion(sub, 2000);
    natsSubscription_Destroy(sub);
    saga_session_stop(s);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mu);
    if (rc == 0)
        *out = r;
    return rc;
}
