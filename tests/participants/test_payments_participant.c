/*
 * test_payments_participant.c -- payments as a saga participant, seen
 * through NATS against a real nats-server, its state read from its own
 * SQLite file and its barrier counters from the service's stats.
 *
 * Proves the barrier's three promises on charge/refund (DESIGN 3.6): a
 * duplicate charge with the same Natomic-Tx is applied once; a refund
 * before its charge is a null compensation and the late charge is
 * refused; a declined charge (PaymentDeclined) leaves nothing, so its
 * refund is a null compensation too. Also: deposit/get_balance, bad
 * input, an order charged twice under different transactions, concurrent
 * charges never overdrawing (money conserved), and the binary's start
 * (barrier sweep), stop and failure.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "participant_fixture.h"
#include "payments.pb-c.h"
#include "payments_service.h"

/* ---- calls ---------------------------------------------------------- */

static void call_deposit(fixture_reply_t *r, participant_t *p, const char *customer, int64_t amount)
{
    Payments__DepositRequest req = PAYMENTS__DEPOSIT_REQUEST__INIT;
    req.customer = (char *)customer;
    req.amount = amount;
    participant_call(r, p, "payments.deposit", NULL, &req.base, &payments__balance_reply__descriptor);
}

static void call_charge(fixture_reply_t *r, participant_t *p, const char *tx, const char *order_id,
                        const char *customer, int64_t amount)
{
    Payments__ChargeRequest req = PAYMENTS__CHARGE_REQUEST__INIT;
    req.order_id = (char *)order_id;
    req.customer = (char *)customer;
    req.amount = amount;
    participant_call(r, p, "payments.charge", tx, &req.base, &payments__charge_reply__descriptor);
}

static void call_refund(fixture_reply_t *r, participant_t *p, const char *tx, const char *order_id)
{
    Payments__RefundRequest req = PAYMENTS__REFUND_REQUEST__INIT;
    req.order_id = (char *)order_id;
    participant_call(r, p, "payments.refund", tx, &req.base, &payments__refund_reply__descriptor);
}

/* Asserts that get_balance(customer) answers these figures. */
static void check_balance(participant_t *p, const char *customer, int64_t balance, int64_t charged)
{
    Payments__GetBalanceRequest req = PAYMENTS__GET_BALANCE_REQUEST__INIT;
    req.customer = (char *)customer;
    fixture_reply_t r;
    participant_call(&r, p, "payments.get_balance", NULL, &req.base, &payments__balance_reply__descriptor);
    const Payments__BalanceReply *b = (const Payments__BalanceReply *)expect_ok(&r, "get_balance");
    ck_assert_str_eq(b->customer, customer);
    ck_assert_int_eq(b->balance, balance);
    ck_assert_int_eq(b->charged, charged);
    fixture_reply_clear(&r);
}

/* Asserts a successful charge with this outcome and balance. */
static void check_charged(participant_t *p, const char *tx, const char *order_id, const char *customer,
                          int64_t amount, const char *outcome, int64_t balance)
{
    fixture_reply_t r;
    call_charge(&r, p, tx, order_id, customer, amount);
    const Payments__ChargeReply *rep = (const Payments__ChargeReply *)expect_ok(&r, "charge");
    ck_assert_str_eq(rep->order_id, order_id);
    ck_assert_str_eq(rep->outcome, outcome);
    ck_assert_int_eq(rep->balance, balance);
    fixture_reply_clear(&r);
}

/* Asserts a successful refund with this outcome and refunded amount. */
static void check_refunded(participant_t *p, const char *tx, const char *order_id, const char *outcome,
                           int64_t refunded)
{
    fixture_reply_t r;
    call_refund(&r, p, tx, order_id);
    const Payments__RefundReply *rep = (const Payments__RefundReply *)expect_ok(&r, "refund");
    ck_assert_str_eq(rep->order_id, order_id);
    ck_assert_str_eq(rep->outcome, outcome);
    ck_assert_int_eq(rep->refunded, refunded);
    fixture_reply_clear(&r);
}

static int64_t charges(participant_t *p, const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM charges WHERE %s", where);
    return participant_db_int(p, sql);
}

static void start(participant_t *p)
{
    participant_start(p, "payments", payments_service_register);
}

static void deposit_ok(participant_t *p, const char *customer, int64_t amount)
{
    fixture_reply_t r;
    call_deposit(&r, p, customer, amount);
    expect_ok(&r, "deposit");
    fixture_reply_clear(&r);
}

/* ---- tests ---------------------------------------------------------- */

START_TEST(test_deposit_and_get_balance)
{
    participant_t p;
    start(&p);
    fixture_reply_t r;
    call_deposit(&r, &p, "ann", 1000);
    const Payments__BalanceReply *b = (const Payments__BalanceReply *)expect_ok(&r, "deposit");
    ck_assert_str_eq(b->customer, "ann");
    ck_assert_int_eq(b->balance, 1000);
    ck_assert_int_eq(b->charged, 0);
    fixture_reply_clear(&r);
    call_deposit(&r, &p, "ann", 250);
    b = (const Payments__BalanceReply *)expect_ok(&r, "second deposit");
    ck_assert_int_eq(b->balance, 1250);
    fixture_reply_clear(&r);
    check_balance(&p, "ann", 1250, 0);
    check_balance(&p, "nobody", 0, 0);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 0);
    participant_stop(&p);
}
END_TEST

START_TEST(test_charge_then_refund_restores_balance)
{
    participant_t p;
    start(&p);
    deposit_ok(&p, "ann", 1000);
    check_charged(&p, "tx-a", "order-1", "ann", 400, "executed", 600);
    check_balance(&p, "ann", 600, 400);
    ck_assert_int_eq(charges(&p, "order_id = 'order-1' AND state = 'charged' AND amount = 400 AND tx = 'tx-a'"), 1);

    check_refunded(&p, "tx-a", "order-1", "executed", 400);
    check_balance(&p, "ann", 1000, 0);
    ck_assert_int_eq(charges(&p, "order_id = 'order-1' AND state = 'refunded'"), 1);

    /* The compensation delivered again: skipped, nothing paid back twice. */
    check_refunded(&p, "tx-a", "order-1", "duplicate", 0);
    check_balance(&p, "ann", 1000, 0);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 2);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_DUPLICATE), 1);
    participant_stop(&p);
}
END_TEST

START_TEST(test_duplicate_charge_applied_once)
{
    participant_t p;
    start(&p);
    deposit_ok(&p, "ann", 1000);
    check_charged(&p, "tx-dup", "order-2", "ann", 300, "executed", 700);
    check_charged(&p, "tx-dup", "order-2", "ann", 300, "duplicate", 700);
    check_balance(&p, "ann", 700, 300);
    ck_assert_int_eq(charges(&p, "order_id = 'order-2'"), 1);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 1);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_DUPLICATE), 1);
    participant_stop(&p);
}
END_TEST

START_TEST(test_refund_before_charge_refuses_late_charge)
{
    participant_t p;
    start(&p);
    deposit_ok(&p, "ann", 1000);
    check_refunded(&p, "tx-late", "order-3", "null_compensation", 0);
    check_balance(&p, "ann", 1000, 0);

    fixture_reply_t r;
    call_charge(&r, &p, "tx-late", "order-3", "ann", 200);
    expect_error(&r, "late charge", 422, "TransactionAborted");
    ck_assert_msg(strstr(r.message, "order-3") != NULL, "message does not name the order: '%s'", r.message);
    fixture_reply_clear(&r);
    check_balance(&p, "ann", 1000, 0);
    ck_assert_int_eq(charges(&p, "order_id = 'order-3'"), 0);

    check_refunded(&p, "tx-late", "order-3", "duplicate", 0);
    call_charge(&r, &p, "tx-late", "order-3", "ann", 200);
    expect_error(&r, "second late charge", 422, "TransactionAborted");
    fixture_reply_clear(&r);
    check_balance(&p, "ann", 1000, 0);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_NULL_COMPENSATION), 1);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_REFUSED_LATE), 2);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_DUPLICATE), 1);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 0);
    participant_stop(&p);
}
END_TEST

START_TEST(test_declined_charge_leaves_nothing)
{
    participant_t p;
    start(&p);
    deposit_ok(&p, "ann", 100);
    fixture_reply_t r;
    call_charge(&r, &p, "tx-poor", "order-4", "ann", 500);
    expect_error(&r, "charge 500 of 100", 422, "PaymentDeclined");
    ck_assert_msg(strstr(r.message, "insufficient balance") != NULL, "message: '%s'", r.message);
    fixture_reply_clear(&r);
    check_balance(&p, "ann", 100, 0);
    ck_assert_int_eq(charges(&p, "1"), 0);
    /* Text fields over 200 bytes (REQUEST_TEXT_MAX) are refused before anything is stored. */
    const char *long_text = participant_long_text();
    call_deposit(&r, &p, long_text, 5);
    expect_error(&r, "deposit for a 201-byte customer", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_charge(&r, &p, "tx-bad", long_text, "ann", 1);
    expect_error(&r, "charge with a 201-byte order_id", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_charge(&r, &p, "tx-bad", "order-7", long_text, 1);
    expect_error(&r, "charge of a 201-byte customer", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_refund(&r, &p, "tx-bad", long_text);
    expect_error(&r, "refund with a 201-byte order_id", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    ck_assert_int_eq(participant_db_int(&p, "SELECT count(*) FROM accounts WHERE length(customer) > 200"), 0);
    /* The declined charge rolled back with its barrier row: the refund finds no action. */
    ck_assert_int_eq(participant_db_int(&p, "SELECT count(*) FROM natomic_barrier WHERE tx = 'tx-poor'"), 0);
    check_refunded(&p, "tx-poor", "order-4", "null_compensation", 0);
    check_balance(&p, "ann", 100, 0);

    call_charge(&r, &p, "tx-unknown", "order-5", "nobody", 1);
    expect_error(&r, "charge of an unknown customer", 422, "PaymentDeclined");
    ck_assert_msg(strstr(r.message, "unknown customer nobody") != NULL, "message: '%s'", r.message);
    fixture_reply_clear(&r);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 0);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_NULL_COMPENSATION), 1);
    participant_stop(&p);
}
END_TEST

START_TEST(test_bad_input)
{
    participant_t p;
    start(&p);
    deposit_ok(&p, "ann", 500);
    fixture_reply_t r;
    call_deposit(&r, &p, "", 5);
    expect_error(&r, "deposit without customer", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_deposit(&r, &p, "ann", 0);
    expect_error(&r, "deposit of 0", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_deposit(&r, &p, "ann", -3);
    expect_error(&r, "deposit of -3", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_charge(&r, &p, "tx-bad", "", "ann", 1);
    expect_error(&r, "charge without order_id", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_charge(&r, &p, "tx-bad", "order-6", "", 1);
    expect_error(&r, "charge without customer", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_charge(&r, &p, "tx-bad", "order-6", "ann", -1);
    expect_error(&r, "charge of -1", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_refund(&r, &p, "tx-bad", "");
    expect_error(&r, "refund without order_id", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_deposit(&r, &p, "ann", INT64_MAX - 2);
    expect_error(&r, "overflowing deposit", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    check_balance(&p, "ann", 500, 0);
    ck_assert_int_eq(participant_db_int(&p, "SELECT count(*) FROM natomic_barrier"), 0);
    participant_stop(&p);
}
END_TEST

START_TEST(test_order_charged_under_two_transactions)
{
    participant_t p;
    start(&p);
    deposit_ok(&p, "ann", 1000);
    check_charged(&p, "tx-first", "order-7", "ann", 200, "executed", 800);
    fixture_reply_t r;
    call_charge(&r, &p, "tx-second", "order-7", "ann", 200);
    expect_error(&r, "same order, another transaction", 422, "InvalidRequest");
    ck_assert_msg(strstr(r.message, "already has a charge") != NULL, "message: '%s'", r.message);
    fixture_reply_clear(&r);
    check_balance(&p, "ann", 800, 200);
    check_refunded(&p, "tx-second", "order-7", "null_compensation", 0);
    check_balance(&p, "ann", 800, 200);
    check_refunded(&p, "tx-first", "order-7", "executed", 200);
    check_balance(&p, "ann", 1000, 0);
    participant_stop(&p);
}
END_TEST

/* ---- concurrency ---------------------------------------------------- */

#define WORKERS 8
#define ORDERS_PER_WORKER 25
#define ORDERS (WORKERS * ORDERS_PER_WORKER)
#define PRICE 10
#define AFFORDABLE 150

typedef struct worker {
    natsConnection *nc;
    int first;
    int refund;               /* 0: charge, 1: refund              */
    int ok[ORDERS_PER_WORKER];
    int code[ORDERS_PER_WORKER];
    char type[ORDERS_PER_WORKER][64];
    int64_t refunded[ORDERS_PER_WORKER];
    natsStatus transport;
} worker_t;

static void *worker_run(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < ORDERS_PER_WORKER; i++) {
        char order_id[32], tx[32];
        snprintf(order_id, sizeof order_id, "order-%d", w->first + i);
        snprintf(tx, sizeof tx, "tx-%d", w->first + i);
        fixture_reply_t r;
        natsStatus s;
        if (w->refund) {
            Payments__RefundRequest req = PAYMENTS__REFUND_REQUEST__INIT;
            req.order_id = order_id;
            s = fixture_request_tx(&r, w->nc, "payments.refund", tx, &req.base, &payments__refund_reply__descriptor,
                                   fixture_ms(20000));
            if (s == NATS_OK && r.code == 0)
                w->refunded[i] = ((Payments__RefundReply *)r.reply)->refunded;
        } else {
            Payments__ChargeRequest req = PAYMENTS__CHARGE_REQUEST__INIT;
            req.order_id = order_id;
            req.customer = "ann";
            req.amount = PRICE;
            s = fixture_request_tx(&r, w->nc, "payments.charge", tx, &req.base, &payments__charge_reply__descriptor,
                                   fixture_ms(20000));
        }
        if (s != NATS_OK) {
            w->transport = s;
            return NULL;
        }
        w->ok[i] = r.code == 0;
        w->code[i] = r.code;
        snprintf(w->type[i], sizeof w->type[i], "%s", r.type);
        fixture_reply_clear(&r);
    }
    return NULL;
}

/* Runs WORKERS threads over all orders; asserts no transport failure. */
static void run_workers(participant_t *p, worker_t *workers, int refund)
{
    pthread_t threads[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].nc = p->nc;
        workers[i].first = i * ORDERS_PER_WORKER;
        workers[i].refund = refund;
        ck_assert_int_eq(pthread_create(&threads[i], NULL, worker_run, &workers[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < WORKERS; i++)
        ck_assert_msg(workers[i].transport == NATS_OK, "worker %d: %s", i, natsStatus_GetText(workers[i].transport));
}

START_TEST(test_concurrent_charges_never_overdraw)
{
    participant_t p;
    start(&p);
    deposit_ok(&p, "ann", AFFORDABLE * PRICE);
    static worker_t workers[WORKERS];
    run_workers(&p, workers, 0);
    int charged = 0, declined = 0;
    for (int i = 0; i < WORKERS; i++)
        for (int j = 0; j < ORDERS_PER_WORKER; j++) {
            if (workers[i].ok[j]) {
                charged++;
            } else {
                ck_assert_msg(workers[i].code[j] == 422 && strcmp(workers[i].type[j], "PaymentDeclined") == 0,
                              "order-%d: expected 422 PaymentDeclined, got %d %s", workers[i].first + j,
                              workers[i].code[j], workers[i].type[j]);
                declined++;
            }
        }
    ck_assert_int_eq(charged, AFFORDABLE);
    ck_assert_int_eq(declined, ORDERS - AFFORDABLE);
    check_balance(&p, "ann", 0, AFFORDABLE * PRICE);
    ck_assert_int_eq(charges(&p, "state = 'charged'"), AFFORDABLE);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), AFFORDABLE);

    run_workers(&p, workers, 1);
    int64_t back = 0;
    for (int i = 0; i < WORKERS; i++)
        for (int j = 0; j < ORDERS_PER_WORKER; j++) {
            ck_assert_msg(workers[i].ok[j], "refund order-%d: %d %s", workers[i].first + j, workers[i].code[j],
                          workers[i].type[j]);
            back += workers[i].refunded[j];
        }
    ck_assert_int_eq(back, AFFORDABLE * PRICE);
    check_balance(&p, "ann", AFFORDABLE * PRICE, 0);
    ck_assert_int_eq(charges(&p, "state = 'refunded'"), AFFORDABLE);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 2 * AFFORDABLE);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_NULL_COMPENSATION), ORDERS - AFFORDABLE);
    participant_stop(&p);
}
END_TEST

/* ---- the binary ----------------------------------------------------- */

START_TEST(test_binary_sweeps_serves_and_stops)
{
    char db_path[512];
    fixture_path(db_path, sizeof db_path, "payments-bin", ".db");
    participant_seed_barrier(db_path);
    natsConnection *nc = NULL;
    ck_assert_str_eq(natomic_status_name(natomic_connect(&nc, fixture_nats_url(), NULL)), "NATOMIC_OK");
    fixture_child_t c;
    memset(&c, 0, sizeof c);
    const char *args[] = {"--nats", fixture_nats_url(), "--db", db_path, "--workers", "4", NULL};
    fixture_spawn(&c, fixture_bin("PAYMENTS_BIN"), args, NULL);
    int up = fixture_wait_ping(&c, nc, "payments");
    if (!up)
        fixture_stop_child(&c, SIGKILL);
    ck_assert_msg(up, "payments never answered (log: %s)", c.log_path);

    participant_check_swept(db_path);

    Payments__DepositRequest req = PAYMENTS__DEPOSIT_REQUEST__INIT;
    req.customer = "bob";
    req.amount = 70;
    ProtobufCMessage *reply = NULL;
    natomic_call_info_t info;
    natomic_status_t st = natomic_request(&reply, nc, "payments.deposit", &req.base,
                                          &payments__balance_reply__descriptor, fixture_ms(10000), &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_int_eq(((Payments__BalanceReply *)reply)->balance, 70);
    protobuf_c_message_free_unpacked(reply, NULL);

    int status = fixture_stop_child(&c, SIGTERM);
    char log[4096];
    fixture_read_file(c.log_path, log, sizeof log);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "payments ended with wait status %#x: %s",
                  (unsigned)status, log);
    ck_assert_msg(strstr(log, "swept 1 barrier rows") != NULL, "the log does not report the sweep: %s", log);
    ck_assert_int_eq(fixture_db_int(db_path, "SELECT balance FROM accounts WHERE customer = 'bob'"), 70);
    natsConnection_Destroy(nc);
}
END_TEST

START_TEST(test_binary_unreachable_nats_and_bad_options)
{
    check_binary_refusals("PAYMENTS_BIN", "payments.deposit");
}
END_TEST

static Suite *payments_suite(void)
{
    Suite *s = suite_create("payments participant");
    TCase *tc = tcase_create("barrier");
    tcase_add_test(tc, test_deposit_and_get_balance);
    tcase_add_test(tc, test_charge_then_refund_restores_balance);
    tcase_add_test(tc, test_duplicate_charge_applied_once);
    tcase_add_test(tc, test_refund_before_charge_refuses_late_charge);
    tcase_add_test(tc, test_declined_charge_leaves_nothing);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_order_charged_under_two_transactions);
    tcase_add_test(tc, test_concurrent_charges_never_overdraw);
    suite_add_tcase(s, tc);
    TCase *bin = tcase_create("binary");
    tcase_add_test(bin, test_binary_sweeps_serves_and_stops);
    tcase_add_test(bin, test_binary_unreachable_nats_and_bad_options);
    suite_add_tcase(s, bin);
    return s;
}

int main(void)
{
    return fixture_run(payments_suite(), "participants");
}
