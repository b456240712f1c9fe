/*
 * test_order_concurrency.c -- 200 orders at once against stock for 60
 * and money for 150, then the domain's invariants (DESIGN 4.4) checked
 * from the services' databases and the event stream, not from the code
 * under test:
 *
 *   - stock never negative and conserved: available + reserved == 60;
 *   - money conserved: balances + charged == deposits;
 *   - every confirmed order holds a reservation and a charge, every
 *     cancelled one neither; nothing is left pending;
 *   - confirmed orders == order_created events == notifications <= 60;
 *   - every reply agrees with the order's status in the database.
 *
 * The money is spread unevenly so that both failures happen under load:
 * five customers can pay for 29 orders each, five for just one, so the
 * latter get PaymentDeclined (with their reservations released) while
 * everyone races for the stock and late orders get OutOfStock.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_fixture.h"

#define THREADS 10
#define ORDERS_PER_THREAD 20
#define ORDERS (THREADS * ORDERS_PER_THREAD)
#define STOCK 60
#define PRICE 100
#define RICH_DEPOSIT (29 * PRICE)
#define POOR_DEPOSIT (1 * PRICE)
#define DEPOSITS (5 * RICH_DEPOSIT + 5 * POOR_DEPOSIT) /* money for 150 orders */
#define SETTLE_MS 10000

typedef struct order_result {
    natomic_status_t status;
    char type[64];
    char message[256];
    char order_id[128];
    char reply_status[16];
} order_result_t;

typedef struct client {
    saga_t *saga;
    char customer[16];
    order_result_t results[ORDERS_PER_THREAD];
} client_t;

/* Places this client's orders one after the other; results only, no assertions off the test thread. */
static void *client_main(void *arg)
{
    client_t *c = arg;
    for (int i = 0; i < ORDERS_PER_THREAD; i++) {
        order_result_t *r = &c->results[i];
        Orders__OrderReply *reply = NULL;
        natomic_call_info_t info;
        r->status = saga_create_order(c->saga, c->customer, "widget", 1, PRICE, &reply, &info);
        if (r->status == NATOMIC_OK) {
            snprintf(r->order_id, sizeof r->order_id, "%s", reply->order_id);
            snprintf(r->reply_status, sizeof r->reply_status, "%s", reply->status);
            orders__order_reply__free_unpacked(reply, NULL);
        } else {
            snprintf(r->type, sizeof r->type, "%s", info.type);
            snprintf(r->message, sizeof r->message, "%s", info.message);
        }
    }
    return NULL;
}

static int64_t confirmed_orders(sqlite3 *oracle)
{
    return fixture_query_int(oracle, "SELECT count(*) FROM orders WHERE status = 'confirmed'");
}

START_TEST(test_200_concurrent_orders)
{
    saga_t s;
    saga_start(&s);
    saga_restock(&s, "widget", STOCK);
    static client_t clients[THREADS];
    for (int t = 0; t < THREADS; t++) {
        memset(&clients[t], 0, sizeof clients[t]);
        clients[t].saga = &s;
        snprintf(clients[t].customer, sizeof clients[t].customer, "c%d", t);
        saga_deposit(&s, clients[t].customer, t < 5 ? RICH_DEPOSIT : POOR_DEPOSIT);
    }

    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++)
        ck_assert_int_eq(pthread_create(&threads[t], NULL, client_main, &clients[t]), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);

    /* Every call got a definite answer: confirmed, or one of the two business refusals. */
    int ok = 0, out_of_stock = 0, declined = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < ORDERS_PER_THREAD; i++) {
            order_result_t *r = &clients[t].results[i];
            if (r->status == NATOMIC_OK) {
                ok++;
                ck_assert_msg(strcmp(r->reply_status, "confirmed") == 0,
                              "order %s of %s: reply status expected 'confirmed', got '%s'", r->order_id,
                              clients[t].customer, r->reply_status);
                continue;
            }
            ck_assert_msg(r->status == NATOMIC_EBUSINESS &&
                              (strcmp(r->type, "OutOfStock") == 0 || strcmp(r->type, "PaymentDeclined") == 0),
                          "order #%d of %s: expected success, OutOfStock or PaymentDeclined, got %s %s (%s)", i,
                          clients[t].customer, natomic_status_name(r->status), r->type, r->message);
            if (strcmp(r->type, "OutOfStock") == 0)
                out_of_stock++;
            else
                declined++;
            saga_order_id_from_message(r->order_id, sizeof r->order_id, r->message);
        }
    fprintf(stderr, "test_200_concurrent_orders: %d confirmed, %d out of stock, %d declined\n", ok, out_of_stock,
            declined);
    ck_assert_int_eq(ok + out_of_stock + declined, ORDERS);
    ck_assert_msg(ok > 0 && ok <= STOCK, "confirmed orders: expected 1..%d, got %d", STOCK, ok);
    ck_assert_msg(out_of_stock > 0, "expected some OutOfStock among %d orders for stock %d, got %d", ORDERS, STOCK,
                  out_of_stock);
    ck_assert_msg(declined > 0, "expected some PaymentDeclined (five customers can pay once), got %d", declined);

    /* Events and notifications trail the replies: wait until the counts settle (bounded). */
    sqlite3 *oracle = saga_oracle_open(&s);
    int64_t confirmed = confirmed_orders(oracle);
    ck_assert_msg(confirmed == ok, "confirmed orders in the database: %lld, confirmed replies: %d",
                  (long long)confirmed, ok);
    static Orders__OrderCreated *events[ORDERS + 16];
    static char event_ids[ORDERS + 16][64];
    int n_events = saga_collect_events(&s, events, event_ids, ORDERS + 16, (int)confirmed, 500, fixture_ms(SETTLE_MS));
    int64_t notifications = 0;
    for (int64_t end = fixture_now_ms() + fixture_ms(SETTLE_MS);;) {
        notifications = fixture_query_int(oracle, "SELECT count(*) FROM notif.notifications");
        if (notifications >= confirmed || fixture_now_ms() > end)
            break;
        fixture_sleep_ms(50);
    }
    ck_assert_msg(n_events == confirmed, "order_created events: %d, confirmed orders: %lld", n_events,
                  (long long)confirmed);
    ck_assert_msg(notifications == confirmed, "notifications: %lld, confirmed orders: %lld",
                  (long long)notifications, (long long)confirmed);

    /* Each event is for a distinct confirmed order. */
    for (int i = 0; i < n_events; i++) {
        int64_t is_confirmed = fixture_query_int(
            oracle, "SELECT count(*) FROM orders WHERE order_id = %Q AND status = 'confirmed'", events[i]->order_id);
        ck_assert_msg(is_confirmed == 1, "order_created for %s, which is not a confirmed order",
                      events[i]->order_id);
        for (int j = 0; j < i; j++) {
            ck_assert_msg(strcmp(events[i]->order_id, events[j]->order_id) != 0, "two order_created for %s",
                          events[i]->order_id);
            ck_assert_msg(strcmp(event_ids[i], event_ids[j]) != 0, "two events with id %s", event_ids[i]);
        }
    }
    for (int i = 0; i < n_events; i++)
        orders__order_created__free_unpacked(events[i], NULL);
    ck_assert_int_eq(fixture_query_int(oracle, "SELECT count(*) FROM notif.notifications n WHERE NOT EXISTS "
                                               "(SELECT 1 FROM orders o WHERE o.order_id = n.order_id "
                                               "AND o.status = 'confirmed')"),
                     0);

    /* Every reply agrees with the database. */
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < ORDERS_PER_THREAD; i++) {
            const order_result_t *r = &clients[t].results[i];
            const char *want = r->status == NATOMIC_OK ? "confirmed" : "cancelled";
            int64_t match = fixture_query_int(oracle, "SELECT count(*) FROM orders WHERE order_id = %Q AND status = %Q",
                                              r->order_id, want);
            ck_assert_msg(match == 1, "order %s: reply says %s, the database has %lld such row(s)", r->order_id,
                          want, (long long)match);
        }
    ck_assert_int_eq(fixture_query_int(oracle, "SELECT count(*) FROM orders"), ORDERS);
    ck_assert_int_eq(fixture_query_int(oracle, "SELECT count(*) FROM orders WHERE status = 'pending'"), 0);

    /* Stock: never negative, conserved, and what is reserved is held by reservations. */
    int64_t available = fixture_query_int(oracle, "SELECT available FROM inv.stock WHERE sku = 'widget'");
    int64_t reserved = fixture_query_int(oracle, "SELECT reserved FROM inv.stock WHERE sku = 'widget'");
    ck_assert_msg(available >= 0, "available stock is negative: %lld", (long long)available);
    ck_assert_msg(available + reserved == STOCK, "available %lld + reserved %lld: expected %d", (long long)available,
                  (long long)reserved, STOCK);
    ck_assert_int_eq(fixture_query_int(oracle, "SELECT coalesce(sum(qty), 0) FROM inv.reservations "
                                               "WHERE state = 'reserved'"),
                     reserved);
    int64_t svc_available = 0, svc_reserved = 0;
    saga_get_stock(&s, "widget", &svc_available, &svc_reserved);
    ck_assert_int_eq(svc_available, available);
    ck_assert_int_eq(svc_reserved, reserved);

    /* Money: no balance negative, conserved, and what is charged is held by charges. */
    int64_t balances = fixture_query_int(oracle, "SELECT coalesce(sum(balance), 0) FROM pay.accounts");
    int64_t charged = fixture_query_int(oracle, "SELECT coalesce(sum(charged), 0) FROM pay.accounts");
    ck_assert_int_eq(fixture_query_int(oracle, "SELECT count(*) FROM pay.accounts WHERE balance < 0 OR charged < 0"),
                     0);
    ck_assert_msg(balances + charged == DEPOSITS, "balances %lld + charged %lld: expected deposits %d",
                  (long long)balances, (long long)charged, DEPOSITS);
    ck_assert_int_eq(fixture_query_int(oracle, "SELECT coalesce(sum(amount), 0) FROM pay.charges "
                                               "WHERE state = 'charged'"),
                     charged);
    ck_assert_int_eq(charged, confirmed * PRICE);
    ck_assert_int_eq(reserved, confirmed);

    /* Atomicity per order: confirmed with both, cancelled with neither. */
    int64_t confirmed_incomplete = fixture_query_int(
        oracle, "SELECT count(*) FROM orders o WHERE o.status = 'confirmed' AND ("
                "NOT EXISTS (SELECT 1 FROM inv.reservations r WHERE r.order_id = o.order_id AND r.state = 'reserved')"
                " OR NOT EXISTS (SELECT 1 FROM pay.charges c WHERE c.order_id = o.order_id AND c.state = 'charged'))");
    ck_assert_msg(confirmed_incomplete == 0, "confirmed orders missing a reservation or a charge: %lld, expected 0",
                  (long long)confirmed_incomplete);
    int64_t cancelled_holding = fixture_query_int(
        oracle, "SELECT count(*) FROM orders o WHERE o.status = 'cancelled' AND ("
                "EXISTS (SELECT 1 FROM inv.reservations r WHERE r.order_id = o.order_id AND r.state = 'reserved')"
                " OR EXISTS (SELECT 1 FROM pay.charges c WHERE c.order_id = o.order_id AND c.state = 'charged'))");
    ck_assert_msg(cancelled_holding == 0, "cancelled orders still holding a reservation or a charge: %lld, expected 0",
                  (long long)cancelled_holding);
    /* Nothing downstream belongs to an order the orders service does not know. */
    ck_assert_int_eq(fixture_query_int(oracle, "SELECT count(*) FROM inv.reservations r WHERE NOT EXISTS "
                                               "(SELECT 1 FROM orders o WHERE o.order_id = r.order_id)"),
                     0);
    ck_assert_int_eq(fixture_query_int(oracle, "SELECT count(*) FROM pay.charges c WHERE NOT EXISTS "
                                               "(SELECT 1 FROM orders o WHERE o.order_id = c.order_id)"),
                     0);
    sqlite3_close(oracle);
    saga_stop(&s);
}
END_TEST

static Suite *order_concurrency_suite(void)
{
    Suite *suite = suite_create("order_concurrency");
    TCase *tc = tcase_create("load");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_200_concurrent_orders);
    suite_add_tcase(suite, tc);
    return suite;
}

int main(void)
{
    return fixture_run(order_concurrency_suite(), "saga");
}
