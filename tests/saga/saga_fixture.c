/*
 * saga_fixture.c -- one nats-server per test binary, the four saga
 * services as children, calls, event collection and read-only oracles.
 *
 * The server and the work folder are made in saga_main() before Check
 * forks any test, and live in globals every forked test inherits. No
 * NATS client call happens before the tests run: nats.c starts threads
 * on first use, and threads do not survive fork().
 */
#include "saga_fixture.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "embedded_nats.h"
#include "inventory.pb-c.h"
#include "payments.pb-c.h"

#define CHILD_START_MS 10000
#define CHILD_STOP_MS 10000

static embedded_nats_t nats_server;
static char work_dir[256];

int saga_ms(int ms)
{
    const char *v = getenv("NATOMIC_UNDER_VALGRIND");
    return v != NULL && *v != '\0' && strcmp(v, "0") != 0 ? ms * 5 : ms;
}

int64_t saga_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void saga_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

int saga_main(Suite *suite)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof work_dir, "%s/natomic-saga-XXXXXX", tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
    if (mkdtemp(work_dir) == NULL || embedded_nats_start(&nats_server) != 0) {
        printf("Bail out! cannot start nats-server or make %s\n", work_dir);
        fflush(stdout);
        return 1;
    }
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_ENV);
    srunner_free(runner);
    embedded_nats_stop(&nats_server);
    if (getenv("NATOMIC_KEEP") == NULL)
        nftw(work_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "saga: kept %s\n", work_dir);
    /* Without fork (valgrind) the tests ran in this process: let nats.c free its threads. */
    nats_CloseAndWait(5000);
    return 0;
}

static void work_path(char *out, size_t cap, const char *stem, const char *ext)
{
    static int counter;
    int n = snprintf(out, cap, "%s/%s-%ld-%d%s", work_dir, stem, (long)getpid(), counter++, ext);
    ck_assert_msg(n > 0 && (size_t)n < cap, "path in %s too long", work_dir);
}

/* ---- services ----------------------------------------------------------- */

/* True when $SRV.PING.<name> answered within the bounded start time. */
static bool wait_ping(natsConnection *nc, const saga_service_t *svc)
{
    char subject[64];
    snprintf(subject, sizeof subject, "$SRV.PING.%s", svc->name);
    int64_t end = saga_now_ms() + saga_ms(CHILD_START_MS);
    while (saga_now_ms() < end) {
        natsMsg *r = NULL;
        if (natsConnection_RequestString(&r, nc, subject, "", 200) == NATS_OK) {
            natsMsg_Destroy(r);
            return true;
        }
        if (waitpid(svc->proc.pid, NULL, WNOHANG) == svc->proc.pid)
            return false; /* the child died: no point waiting */
        saga_sleep_ms(20);
    }
    return false;
}

static void service_start(saga_service_t *svc, natsConnection *nc, const char *name, const char *bin_env)
{
    memset(svc, 0, sizeof *svc);
    svc->name = name;
    const char *bin = getenv(bin_env);
    ck_assert_msg(bin != NULL && *bin != '\0', "%s is not set (meson passes it)", bin_env);
    work_path(svc->db_path, sizeof svc->db_path, name, ".db");
    work_path(svc->log_path, sizeof svc->log_path, name, ".log");
    const char *argv[] = {bin, "--nats", nats_server.url, "--db", svc->db_path, NULL};
    /* lab_process_start's argv is not const (execv's is not); it is only read. */
    int rc = lab_process_start(&svc->proc, (char *const *)(void *)argv, svc->log_path, NULL);
    ck_assert_msg(rc == 0, "cannot start %s", bin);
    bool up = wait_ping(nc, svc);
    if (!up)
        lab_process_stop(&svc->proc, SIGKILL, CHILD_STOP_MS);
    ck_assert_msg(up, "%s never answered $SRV.PING.%s (log: %s)", bin, name, svc->log_path);
}

void saga_start(saga_t *s)
{
    memset(s, 0, sizeof *s);
    natomic_status_t st = natomic_connect(&s->nc, nats_server.url, NULL);
    ck_assert_msg(st == NATOMIC_OK, "natomic_connect(%s): %s", nats_server.url, natomic_strerror(st));
    natsStatus ns = natsConnection_SubscribeSync(&s->events, s->nc, "events.orders.order_created");
    ck_assert_msg(ns == NATS_OK, "subscribe events.orders.order_created: %s", natsStatus_GetText(ns));
    ck_assert_int_eq(natsSubscription_SetPendingLimits(s->events, -1, -1), NATS_OK);
    /* Consumers first, the orchestrator last: no event can leave before notifications listens. */
    service_start(&s->inventory, s->nc, "inventory", "INVENTORY_BIN");
    service_start(&s->payments, s->nc, "payments", "PAYMENTS_BIN");
    service_start(&s->notifications, s->nc, "notifications", "NOTIFICATIONS_BIN");
    service_start(&s->orders, s->nc, "orders", "ORDERS_BIN");
}

int saga_service_stop(saga_service_t *svc, int sig)
{
    return lab_process_stop(&svc->proc, sig, CHILD_STOP_MS);
}

void saga_stop(saga_t *s)
{
    saga_service_t *all[] = {&s->orders, &s->notifications, &s->payments, &s->inventory};
    int status[4];
    for (int i = 0; i < 4; i++) /* one stopped early has pid 0: status 0 */
        status[i] = saga_service_stop(all[i], SIGTERM);
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
        natomic_request(&reply, s->nc, subject, req, reply_desc, saga_ms(SAGA_CALL_TIMEOUT_MS), &info);
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
                                          &orders__order_reply__descriptor, saga_ms(SAGA_CALL_TIMEOUT_MS), info);
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
                                          saga_ms(SAGA_CALL_TIMEOUT_MS), info);
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

static int64_t query_int(sqlite3 *db, const char *where, const char *fmt, va_list ap)
{
    char *sql = sqlite3_vmprintf(fmt, ap);
    ck_assert_msg(sql != NULL, "out of memory");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    char err[256];
    snprintf(err, sizeof err, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        ck_abort_msg("%s on %s: %s", sql, where, err);
    }
    sqlite3_free(sql);
    return v;
}

int64_t saga_db_int(const char *path, const char *fmt, ...)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    ck_assert_msg(rc == SQLITE_OK, "open %s read-only: %s", path, db != NULL ? sqlite3_errmsg(db) : "no memory");
    va_list ap;
    va_start(ap, fmt);
    int64_t v = query_int(db, path, fmt, ap);
    va_end(ap);
    sqlite3_close(db);
    return v;
}

sqlite3 *saga_oracle_open(const saga_t *s)
{
    sqlite3 *db = NULL;
    char uri[600];
    snprintf(uri, sizeof uri, "file:%s?mode=ro", s->orders.db_path);
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    ck_assert_msg(rc == SQLITE_OK, "open %s: %s", uri, db != NULL ? sqlite3_errmsg(db) : "no memory");
    const saga_service_t *others[] = {&s->inventory, &s->payments, &s->notifications};
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

int64_t saga_oracle_int(sqlite3 *db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int64_t v = query_int(db, "the oracle", fmt, ap);
    va_end(ap);
    return v;
}

int saga_collect_events(saga_t *s, Orders__OrderCreated **out, char (*ids)[64], int max, int want, int quiet_ms,
                        int total_ms)
{
    int n = 0;
    int64_t end = saga_now_ms() + total_ms;
    for (;;) {
        int64_t left = end - saga_now_ms();
        if (left <= 0)
            break;
        int64_t wait = n < want || left < quiet_ms ? left : quiet_ms;
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, s->events, wait) != NATS_OK)
            break;
        if (n < max) {
            out[n] = orders__order_created__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                   (const uint8_t *)natsMsg_GetData(m));
            const char *id = NULL;
            if (ids != NULL)
                snprintf(ids[n], 64, "%s",
                         natsMsgHeader_Get(m, NATOMIC_HDR_EVENT_ID, &id) == NATS_OK && id != NULL ? id : "");
            natsMsg_Destroy(m);
            ck_assert_msg(out[n] != NULL, "an order_created event does not decode as orders.OrderCreated");
        } else {
            natsMsg_Destroy(m);
        }
        n++;
    }
    return n;
}
