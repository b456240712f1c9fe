/*
 * test_inventory_participant.c -- inventory as a saga participant, seen
 * through NATS against a real nats-server, its state read from its own
 * SQLite file and its barrier counters from the service's stats.
 *
 * Proves the barrier's three promises on reserve/release (DESIGN 3.6):
 * a duplicate reserve with the same Natomic-Tx is applied once; a release
 * before its reserve is a null compensation and the late reserve is
 * refused; a failed reserve (OutOfStock) leaves nothing, so its release is
 * a null compensation too. Also: restock/get_stock, bad input, an order
 * reserved twice under different transactions, concurrent reserves never
 * overselling, and the binary's start (barrier sweep), stop and failure.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "inventory.pb-c.h"
#include "inventory_service.h"
#include "participant_fixture.h"

/* ---- calls ---------------------------------------------------------- */

static void call_restock(fixture_reply_t *r, participant_t *p, const char *sku, int64_t qty)
{
    Inventory__RestockRequest req = INVENTORY__RESTOCK_REQUEST__INIT;
    req.sku = (char *)sku;
    req.qty = qty;
    participant_call(r, p, "inventory.restock", NULL, &req.base, &inventory__stock_reply__descriptor);
}

static void call_reserve(fixture_reply_t *r, participant_t *p, const char *tx, const char *order_id, const char *sku,
                         int64_t qty)
{
    Inventory__ReserveRequest req = INVENTORY__RESERVE_REQUEST__INIT;
    req.order_id = (char *)order_id;
    req.sku = (char *)sku;
    req.qty = qty;
    participant_call(r, p, "inventory.reserve", tx, &req.base, &inventory__reserve_reply__descriptor);
}

static void call_release(fixture_reply_t *r, participant_t *p, const char *tx, const char *order_id)
{
    Inventory__ReleaseRequest req = INVENTORY__RELEASE_REQUEST__INIT;
    req.order_id = (char *)order_id;
    participant_call(r, p, "inventory.release", tx, &req.base, &inventory__release_reply__descriptor);
}

/* Asserts that get_stock(sku) answers these figures. */
static void check_stock(participant_t *p, const char *sku, int64_t available, int64_t reserved)
{
    Inventory__GetStockRequest req = INVENTORY__GET_STOCK_REQUEST__INIT;
    req.sku = (char *)sku;
    fixture_reply_t r;
    participant_call(&r, p, "inventory.get_stock", NULL, &req.base, &inventory__stock_reply__descriptor);
    const Inventory__StockReply *s = (const Inventory__StockReply *)expect_ok(&r, "get_stock");
    ck_assert_str_eq(s->sku, sku);
    ck_assert_int_eq(s->available, available);
    ck_assert_int_eq(s->reserved, reserved);
    fixture_reply_clear(&r);
}

/* Asserts a successful reserve with this outcome and available stock. */
static void check_reserved(participant_t *p, const char *tx, const char *order_id, const char *sku, int64_t qty,
                           const char *outcome, int64_t available)
{
    fixture_reply_t r;
    call_reserve(&r, p, tx, order_id, sku, qty);
    const Inventory__ReserveReply *rep = (const Inventory__ReserveReply *)expect_ok(&r, "reserve");
    ck_assert_str_eq(rep->order_id, order_id);
    ck_assert_str_eq(rep->outcome, outcome);
    ck_assert_int_eq(rep->available, available);
    fixture_reply_clear(&r);
}

/* Asserts a successful release with this outcome and released quantity. */
static void check_released(participant_t *p, const char *tx, const char *order_id, const char *outcome,
                           int64_t released)
{
    fixture_reply_t r;
    call_release(&r, p, tx, order_id);
    const Inventory__ReleaseReply *rep = (const Inventory__ReleaseReply *)expect_ok(&r, "release");
    ck_assert_str_eq(rep->order_id, order_id);
    ck_assert_str_eq(rep->outcome, outcome);
    ck_assert_int_eq(rep->released, released);
    fixture_reply_clear(&r);
}

static int64_t reservations(participant_t *p, const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM reservations WHERE %s", where);
    return participant_db_int(p, sql);
}

static void start(participant_t *p)
{
    participant_start(p, "inventory", inventory_service_register);
}

static void restock_ok(participant_t *p, const char *sku, int64_t qty)
{
    fixture_reply_t r;
    call_restock(&r, p, sku, qty);
    expect_ok(&r, "restock");
    fixture_reply_clear(&r);
}

/* ---- tests ---------------------------------------------------------- */

START_TEST(test_restock_and_get_stock)
{
    participant_t p;
    start(&p);
    fixture_reply_t r;
    call_restock(&r, &p, "book", 5);
    const Inventory__StockReply *s = (const Inventory__StockReply *)expect_ok(&r, "restock");
    ck_assert_str_eq(s->sku, "book");
    ck_assert_int_eq(s->available, 5);
    ck_assert_int_eq(s->reserved, 0);
    fixture_reply_clear(&r);
    call_restock(&r, &p, "book", 3);
    s = (const Inventory__StockReply *)expect_ok(&r, "second restock");
    ck_assert_int_eq(s->available, 8);
    fixture_reply_clear(&r);
    check_stock(&p, "book", 8, 0);
    check_stock(&p, "no-such-sku", 0, 0);
    /* Plain methods do not touch the barrier. */
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 0);
    participant_stop(&p);
}
END_TEST

START_TEST(test_reserve_then_release_restores_stock)
{
    participant_t p;
    start(&p);
    restock_ok(&p, "book", 10);
    check_reserved(&p, "tx-a", "order-1", "book", 4, "executed", 6);
    check_stock(&p, "book", 6, 4);
    ck_assert_int_eq(reservations(&p, "order_id = 'order-1' AND state = 'reserved' AND qty = 4 AND tx = 'tx-a'"), 1);

    check_released(&p, "tx-a", "order-1", "executed", 4);
    check_stock(&p, "book", 10, 0);
    ck_assert_int_eq(reservations(&p, "order_id = 'order-1' AND state = 'released'"), 1);

    /* The compensation delivered again: skipped, nothing returned twice. */
    check_released(&p, "tx-a", "order-1", "duplicate", 0);
    check_stock(&p, "book", 10, 0);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 2);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_DUPLICATE), 1);
    participant_stop(&p);
}
END_TEST

START_TEST(test_duplicate_reserve_applied_once)
{
    participant_t p;
    start(&p);
    restock_ok(&p, "book", 10);
    check_reserved(&p, "tx-dup", "order-2", "book", 3, "executed", 7);
    check_reserved(&p, "tx-dup", "order-2", "book", 3, "duplicate", 7);
    check_stock(&p, "book", 7, 3);
    ck_assert_int_eq(reservations(&p, "order_id = 'order-2'"), 1);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 1);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_DUPLICATE), 1);
    participant_stop(&p);
}
END_TEST

START_TEST(test_release_before_reserve_refuses_late_reserve)
{
    participant_t p;
    start(&p);
    restock_ok(&p, "book", 10);
    check_released(&p, "tx-late", "order-3", "null_compensation", 0);
    check_stock(&p, "book", 10, 0);

    fixture_reply_t r;
    call_reserve(&r, &p, "tx-late", "order-3", "book", 2);
    expect_error(&r, "late reserve", 422, "TransactionAborted");
    ck_assert_msg(strstr(r.message, "order-3") != NULL, "message does not name the order: '%s'", r.message);
    fixture_reply_clear(&r);
    check_stock(&p, "book", 10, 0);
    ck_assert_int_eq(reservations(&p, "order_id = 'order-3'"), 0);

    /* The compensation again is a duplicate; a second late reserve is still refused. */
    check_released(&p, "tx-late", "order-3", "duplicate", 0);
    call_reserve(&r, &p, "tx-late", "order-3", "book", 2);
    expect_error(&r, "second late reserve", 422, "TransactionAborted");
    fixture_reply_clear(&r);
    check_stock(&p, "book", 10, 0);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_NULL_COMPENSATION), 1);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_REFUSED_LATE), 2);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_DUPLICATE), 1);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 0);
    participant_stop(&p);
}
END_TEST

START_TEST(test_out_of_stock_leaves_nothing)
{
    participant_t p;
    start(&p);
    restock_ok(&p, "book", 2);
    fixture_reply_t r;
    call_reserve(&r, &p, "tx-oos", "order-4", "book", 5);
    expect_error(&r, "reserve 5 of 2", 422, "OutOfStock");
    ck_assert_msg(strstr(r.message, "only 2 of book") != NULL, "message: '%s'", r.message);
    fixture_reply_clear(&r);
    check_stock(&p, "book", 2, 0);
    ck_assert_int_eq(reservations(&p, "1"), 0);
    /* The failed reserve rolled back with its barrier row: the release finds no action. */
    ck_assert_int_eq(participant_db_int(&p, "SELECT count(*) FROM natomic_barrier WHERE tx = 'tx-oos'"), 0);
    check_released(&p, "tx-oos", "order-4", "null_compensation", 0);
    check_stock(&p, "book", 2, 0);

    call_reserve(&r, &p, "tx-unknown", "order-5", "no-such-sku", 1);
    expect_error(&r, "reserve of an unknown sku", 422, "OutOfStock");
    ck_assert_msg(strstr(r.message, "unknown sku no-such-sku") != NULL, "message: '%s'", r.message);
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
    restock_ok(&p, "book", 5);
    fixture_reply_t r;
    call_restock(&r, &p, "", 5);
    expect_error(&r, "restock without sku", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_restock(&r, &p, "book", 0);
    expect_error(&r, "restock of 0", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_restock(&r, &p, "book", -3);
    expect_error(&r, "restock of -3", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_reserve(&r, &p, "tx-bad", "", "book", 1);
    expect_error(&r, "reserve without order_id", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_reserve(&r, &p, "tx-bad", "order-6", "", 1);
    expect_error(&r, "reserve without sku", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_reserve(&r, &p, "tx-bad", "order-6", "book", 0);
    expect_error(&r, "reserve of 0", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_release(&r, &p, "tx-bad", "");
    expect_error(&r, "release without order_id", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    /* Text fields over 200 bytes (REQUEST_TEXT_MAX) are refused before anything is stored. */
    const char *long_text = participant_long_text();
    call_restock(&r, &p, long_text, 5);
    expect_error(&r, "restock of a 201-byte sku", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_reserve(&r, &p, "tx-bad", long_text, "book", 1);
    expect_error(&r, "reserve with a 201-byte order_id", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_reserve(&r, &p, "tx-bad", "order-7", long_text, 1);
    expect_error(&r, "reserve of a 201-byte sku", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    call_release(&r, &p, "tx-bad", long_text);
    expect_error(&r, "release with a 201-byte order_id", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    ck_assert_int_eq(participant_db_int(&p, "SELECT count(*) FROM stock WHERE length(sku) > 200"), 0);
    /* A restock that would overflow 64 bits is refused, the stock untouched. */
    call_restock(&r, &p, "book", INT64_MAX - 2);
    expect_error(&r, "overflowing restock", 400, "InvalidRequest");
    fixture_reply_clear(&r);
    check_stock(&p, "book", 5, 0);
    /* Bad input never reached the barrier. */
    ck_assert_int_eq(participant_db_int(&p, "SELECT count(*) FROM natomic_barrier"), 0);
    participant_stop(&p);
}
END_TEST

START_TEST(test_order_reserved_under_two_transactions)
{
    participant_t p;
    start(&p);
    restock_ok(&p, "book", 10);
    check_reserved(&p, "tx-first", "order-7", "book", 2, "executed", 8);
    fixture_reply_t r;
    call_reserve(&r, &p, "tx-second", "order-7", "book", 2);
    expect_error(&r, "same order, another transaction", 422, "InvalidRequest");
    ck_assert_msg(strstr(r.message, "already has a reservation") != NULL, "message: '%s'", r.message);
    fixture_reply_clear(&r);
    check_stock(&p, "book", 8, 2);
    /* The second transaction's release compensates nothing of the first's. */
    check_released(&p, "tx-second", "order-7", "null_compensation", 0);
    check_stock(&p, "book", 8, 2);
    check_released(&p, "tx-first", "order-7", "executed", 2);
    check_stock(&p, "book", 10, 0);
    participant_stop(&p);
}
END_TEST

/* ---- concurrency ---------------------------------------------------- */

#define WORKERS 8
#define ORDERS_PER_WORKER 25
#define ORDERS (WORKERS * ORDERS_PER_WORKER)
#define STOCK 60

typedef struct worker {
    natsConnection *nc;
    int first;
    int release;              /* 0: reserve, 1: release            */
    int ok[ORDERS_PER_WORKER];
    int code[ORDERS_PER_WORKER];
    char type[ORDERS_PER_WORKER][64];
    int64_t released[ORDERS_PER_WORKER];
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
        if (w->release) {
            Inventory__ReleaseRequest req = INVENTORY__RELEASE_REQUEST__INIT;
            req.order_id = order_id;
            s = fixture_request_tx(&r, w->nc, "inventory.release", tx, &req.base,
                                   &inventory__release_reply__descriptor, fixture_ms(20000));
            if (s == NATS_OK && r.code == 0)
                w->released[i] = ((Inventory__ReleaseReply *)r.reply)->released;
        } else {
            Inventory__ReserveRequest req = INVENTORY__RESERVE_REQUEST__INIT;
            req.order_id = order_id;
            req.sku = "book";
            req.qty = 1;
            s = fixture_request_tx(&r, w->nc, "inventory.reserve", tx, &req.base,
                                   &inventory__reserve_reply__descriptor, fixture_ms(20000));
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
static void run_workers(participant_t *p, worker_t *workers, int release)
{
    pthread_t threads[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].nc = p->nc;
        workers[i].first = i * ORDERS_PER_WORKER;
        workers[i].release = release;
        ck_assert_int_eq(pthread_create(&threads[i], NULL, worker_run, &workers[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < WORKERS; i++)
        ck_assert_msg(workers[i].transport == NATS_OK, "worker %d: %s", i, natsStatus_GetText(workers[i].transport));
}

START_TEST(test_concurrent_reserves_never_oversell)
{
    participant_t p;
    start(&p);
    restock_ok(&p, "book", STOCK);
    static worker_t workers[WORKERS];
    run_workers(&p, workers, 0);
    int reserved = 0, refused = 0;
    for (int i = 0; i < WORKERS; i++)
        for (int j = 0; j < ORDERS_PER_WORKER; j++) {
            if (workers[i].ok[j]) {
                reserved++;
            } else {
                ck_assert_msg(workers[i].code[j] == 422 && strcmp(workers[i].type[j], "OutOfStock") == 0,
                              "order-%d: expected 422 OutOfStock, got %d %s", workers[i].first + j,
                              workers[i].code[j], workers[i].type[j]);
                refused++;
            }
        }
    ck_assert_int_eq(reserved, STOCK);
    ck_assert_int_eq(refused, ORDERS - STOCK);
    check_stock(&p, "book", 0, STOCK);
    ck_assert_int_eq(reservations(&p, "state = 'reserved'"), STOCK);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), STOCK);

    /* Every order compensated, concurrently: the reserved ones give back 1, the others are null. */
    run_workers(&p, workers, 1);
    int64_t back = 0;
    for (int i = 0; i < WORKERS; i++)
        for (int j = 0; j < ORDERS_PER_WORKER; j++) {
            ck_assert_msg(workers[i].ok[j], "release order-%d: %d %s", workers[i].first + j, workers[i].code[j],
                          workers[i].type[j]);
            back += workers[i].released[j];
        }
    ck_assert_int_eq(back, STOCK);
    check_stock(&p, "book", STOCK, 0);
    ck_assert_int_eq(reservations(&p, "state = 'released'"), STOCK);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_EXECUTED), 2 * STOCK);
    ck_assert_uint_eq(participant_barrier_count(&p, NATOMIC_BARRIER_NULL_COMPENSATION), ORDERS - STOCK);
    participant_stop(&p);
}
END_TEST

/* ---- the binary ----------------------------------------------------- */

START_TEST(test_binary_sweeps_serves_and_stops)
{
    char db_path[512];
    fixture_path(db_path, sizeof db_path, "inventory-bin", ".db");
    participant_seed_barrier(db_path);
    natsConnection *nc = NULL;
    ck_assert_str_eq(natomic_status_name(natomic_connect(&nc, fixture_nats_url(), NULL)), "NATOMIC_OK");
    fixture_child_t c;
    memset(&c, 0, sizeof c);
    const char *args[] = {"--nats", fixture_nats_url(), "--db", db_path, "--workers", "4", NULL};
    fixture_spawn(&c, fixture_bin("INVENTORY_BIN"), args, NULL);
    int up = fixture_wait_ping(&c, nc, "inventory");
    if (!up)
        fixture_stop_child(&c, SIGKILL);
    ck_assert_msg(up, "inventory never answered (log: %s)", c.log_path);

    participant_check_swept(db_path);

    Inventory__RestockRequest req = INVENTORY__RESTOCK_REQUEST__INIT;
    req.sku = "pen";
    req.qty = 7;
    ProtobufCMessage *reply = NULL;
    natomic_call_info_t info;
    natomic_status_t st = natomic_request(&reply, nc, "inventory.restock", &req.base,
                                          &inventory__stock_reply__descriptor, fixture_ms(10000), &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_int_eq(((Inventory__StockReply *)reply)->available, 7);
    protobuf_c_message_free_unpacked(reply, NULL);

    int status = fixture_stop_child(&c, SIGTERM);
    char log[4096];
    fixture_read_file(c.log_path, log, sizeof log);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "inventory ended with wait status %#x: %s",
                  (unsigned)status, log);
    ck_assert_msg(strstr(log, "swept 1 barrier rows") != NULL, "the log does not report the sweep: %s", log);
    ck_assert_int_eq(fixture_db_int(db_path, "SELECT available FROM stock WHERE sku = 'pen'"), 7);
    natsConnection_Destroy(nc);
}
END_TEST

START_TEST(test_binary_unreachable_nats_and_bad_options)
{
    check_binary_refusals("INVENTORY_BIN", "inventory.restock");
}
END_TEST

static Suite *inventory_suite(void)
{
    Suite *s = suite_create("inventory participant");
    TCase *tc = tcase_create("barrier");
    tcase_add_test(tc, test_restock_and_get_stock);
    tcase_add_test(tc, test_reserve_then_release_restores_stock);
    tcase_add_test(tc, test_duplicate_reserve_applied_once);
    tcase_add_test(tc, test_release_before_reserve_refuses_late_reserve);
    tcase_add_test(tc, test_out_of_stock_leaves_nothing);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_order_reserved_under_two_transactions);
    tcase_add_test(tc, test_concurrent_reserves_never_oversell);
    suite_add_tcase(s, tc);
    TCase *bin = tcase_create("binary");
    tcase_add_test(bin, test_binary_sweeps_serves_and_stops);
    tcase_add_test(bin, test_binary_unreachable_nats_and_bad_options);
    suite_add_tcase(s, bin);
    return s;
}

int main(void)
{
    return fixture_run(inventory_suite(), "participants");
}
