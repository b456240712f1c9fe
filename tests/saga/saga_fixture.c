/*
 * saga_fixture.c -- the four saga services as children, calls, event
 * collection and the read-only oracle; the server, the children's
 * plumbing and the database reads are tests/fixture's.
 */
#include "saga_fixture.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "inventory.pb-c.h"
#include "payments.pb-c.h"

/* ---- services ----------------------------------------------------------- */

/* Starts $bin_env with a fresh --db and waits until it answers $SRV.PING.<name>. */
static void service_start(fixture_child_t *svc, natsConnection *nc, const char *name, const char *bin_env)
{
    memset(svc, 0, sizeof *svc);
    fixture_path(svc->db_path, sizeof svc->db_path, name, ".db");
    fixture_path(svc->log_path, sizeof svc->log_path, name, ".log");
    const char *args[] = {"--db", svc->db_path, NULL};
    fixture_spawn_service(svc, nc, bin_env, name, args);
}

void saga_start(saga_t *s)
{
    memset(s, 0, sizeof *s);
    s->nc = fixture_connect();
    natsStatus ns = natsConnection_SubscribeSync(&s->events, s->nc, "events.orders.order_created");
    ck_assert_msg(ns == NATS_OK, "subscribe events.orders.order_created: %s", natsStatus_GetText(ns));
    ck_assert_int_eq(natsSubscription_SetPendingLimits(s->events, -1, -1), NATS_OK);
    /* Consumers first, the orchestrator last: no event can leave before notifications listens. */
    service_start(&s->inventory, s->nc, "inventory", "INVENTORY_BIN");
    service_start(&s->payments, s->nc, "payments", "PAYMENTS_BIN");
    service_start(&s->notifications, s->nc, "notifications", "NOTIFICATIONS_BIN");
    service_start(&s->orders, s->nc, "orders", "ORDERS_BIN");
}

void saga_stop(saga_t *s)
{
    fixture_child_t *all[] = {&s->orders, &s->notifications, &s->payments, &s->inventory};
    int status[4];
    for (int i = 0; i < 4; i++) /* one stopped early: the status of that stop */
        status[i] = fixture_stop_child(all[i], SIGTERM);
    natsSubscription_Destroy(s->events);
    natsConnection_Destroy(s->nc);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0,
                      "%s ended with wait status %#x, expected a clean exit 0 (log: %s)", all[i]->name,
                      (unsigned)status[i], all[i]->log_path);
}

/* ---- calls ------------------------------------------------------------- */

/* Calls `subject`; asserts success and returns the decoded reply. */
static ProtobufCMessage *call_ok(saga_t *s, const char *subject, const ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *reply_desc)
{
    ProtobufCMessage *reply = NULL;
    natomic_call_info_t info;
    natomic_status_t st =
        natomic_request(&reply, s->nc, subject, req, reply_desc, fixture_ms(SAGA_CALL_TIMEOUT_MS), &info);
    ck_assert_msg(st == NATOMIC_OK, "%s: expected success, got %s (%s: %s)", subject, natomic_status_name(st),
                  info.type, info.message);
    return reply;
}

void saga_restock(saga_t *s, const char *sku, int64_t qty)
{
    Inventory__RestockRequest req = INVENTORY__RESTOCK_REQUEST__INIT;
    req.sku = (char *)sku;
    req.qty = qty;
    protobuf_c_message_free_unpacked(call_ok(s, "inventory.restock", &req.base, &inventory__stock_reply__descriptor),
                                     NULL);
}

void saga_deposit(saga_t *s, const char *customer, int64_t amount)
{
    Payments__DepositRequest req = PAYMENTS__DEPOSIT_REQUEST__INIT;
    req.customer = (char *)customer;
    req.amount = amount;
    protobuf_c_message_free_unpacked(
        call_ok(s, "payments.deposit", &req.base, &payments__balance_reply__descriptor), NULL);
}

void saga_get_stock(saga_t *s, const char *sku, int64_t *available, int64_t *reserved)
{
    Inventory__GetStockRequest req = INVENTORY__GET_STOCK_REQUEST__INIT;
    req.sku = (char *)sku;
    Inventory__StockReply *r =
        (Inventory__StockReply *)call_ok(s, "inventory.get_stock", &req.base, &inventory__stock_reply__descriptor);
    *available = r->available;
    *reserved = r->reserved;
    inventory__stock_reply__free_unpacked(r, NULL);
}

void saga_get_balance(saga_t *s, const char *customer, int64_t *balance, int64_t *charged)
{
    Payments__GetBalanceRequest req = PAYMENTS__GET_BALANCE_REQUEST__INIT;
    req.customer = (char *)customer;
    Payments__BalanceReply *r = (Payments__BalanceReply *)call_ok(s, "payments.get_balance", &req.base,
                                                                  &payments__balance_reply__descriptor);
    *balance = r->balance;
    *charged = r->charged;
    payments__balance_reply__free_unpacked(r, NULL);
}

natomic_status_t saga_create_order(saga_t *s, const char *customer, const char *sku, int64_t qty, int64_t amount,
                                   Orders__OrderReply **reply, natomic_call_info_t *info)
{
    Orders__CreateOrderRequest req = ORDERS__CREATE_ORDER_REQUEST__INIT;
    req.customer = (char *)customer;
    req.sku = (char *)sku;
    req.qty = qty;
    req.amount = amount;
    ProtobufCMessage *r = NULL;
    natomic_status_t st = natomic_request(&r, s->nc, "orders.create_order", &req.base,
                                          &orders__order_reply__descriptor, fixture_ms(SAGA_CALL_TIMEOUT_MS), info);
    if (st == NATOMIC_OK) {
        if (reply != NULL)
            *reply = (Orders__OrderReply *)r;
        else
            protobuf_c_message_free_unpacked(r, NULL);
    }
    return st;
}

natomic_status_t saga_get_order(saga_t *s, const char *order_id, Orders__OrderReply **reply,
                                natomic_call_info_t *info)
{
    Orders__GetOrderRequest req = ORDERS__GET_ORDER_REQUEST__INIT;
    req.order_id = (char *)order_id;
    ProtobufCMessage *r = NULL;
    natomic_status_t st = natomic_request(&r, s->nc, "orders.get_order", &req.base, &orders__order_reply__descriptor,
                                          fixture_ms(SAGA_CALL_TIMEOUT_MS), info);
    if (st == NATOMIC_OK) {
        if (reply != NULL)
            *reply = (Orders__OrderReply *)r;
        else
            protobuf_c_message_free_unpacked(r, NULL);
    }
    return st;
}

void saga_order_id_from_message(char *out, size_t cap, const char *message)
{
    const char *p = strstr(message, "ord-");
    ck_assert_msg(p != NULL, "the error message names no order id: '%s'", message);
    size_t n = strcspn(p, ": ,");
    ck_assert_msg(n < cap, "order id in '%s' too long", message);
    memcpy(out, p, n);
    out[n] = '\0';
}

/* ---- oracles ------------------------------------------------------------ */

sqlite3 *saga_oracle_open(const saga_t *s)
{
    sqlite3 *db = NULL;
    char uri[600];
    snprintf(uri, sizeof uri, "file:%s?mode=ro", s->orders.db_path);
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    ck_assert_msg(rc == SQLITE_OK, "open %s: %s", uri, db != NULL ? sqlite3_errmsg(db) : "no memory");
    const fixture_child_t *others[] = {&s->inventory, &s->payments, &s->notifications};
    const char *names[] = {"inv", "pay", "notif"};
    for (int i = 0; i < 3; i++) {
        snprintf(uri, sizeof uri, "file:%s?mode=ro", others[i]->db_path);
        char *sql = sqlite3_mprintf("ATTACH %Q AS %s", uri, names[i]);
        char *err = NULL;
        rc = sql != NULL ? sqlite3_exec(db, sql, NULL, NULL, &err) : SQLITE_NOMEM;
        ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql != NULL ? sql : "ATTACH", err != NULL ? err : "out of memory");
        sqlite3_free(sql);
    }
    return db;
}

typedef struct event_sink {
    Orders__OrderCreated **out;
    char (*ids)[64];
    int max;
} event_sink_t;

/* Decodes event `index` into the sink while there is room; counts (drops) the rest. */
static bool take_event(natsMsg *m, int index, void *arg)
{
    event_sink_t *sink = arg;
    if (index < sink->max) {
        sink->out[index] = orders__order_created__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                         (const uint8_t *)natsMsg_GetData(m));
        if (sink->ids != NULL) {
            const char *id = fixture_header(m, NATOMIC_HDR_EVENT_ID);
            snprintf(sink->ids[index], 64, "%s", id != NULL ? id : "");
        }
        natsMsg_Destroy(m);
        ck_assert_msg(sink->out[index] != NULL, "an order_created event does not decode as orders.OrderCreated");
    } else {
        natsMsg_Destroy(m);
    }
    return true;
}

int saga_collect_events(saga_t *s, Orders__OrderCreated **out, char (*ids)[64], int max, int want, int quiet_ms,
                        int total_ms)
{
    event_sink_t sink = {out, ids, max};
    return fixture_collect_each(s->events, want, quiet_ms, total_ms, take_event, &sink);
}
