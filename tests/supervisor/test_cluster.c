/*
 * test_cluster.c -- the order saga in durable mode on a 3-node NATS cluster
 * (issue 11, item 1, first increment): real nats-servers clustered on
 * loopback (faultinject/supervisor/nats_cluster.c), JetStream on each, the
 * saga log, leases and EVENTS stream with three replicas
 * (NATOMIC_JS_REPLICAS=3), the four services connected to all three URLs.
 *
 * Each node in turn is stopped while orders keep coming, then started
 * again. An order may fail while the cluster moves a stream's leader (a
 * transient error, its saga compensated); none may be lost half-way.
 * Checked at the end, from the services' stores and answers:
 *   - stock and money are conserved (available + reserved = restocked;
 *     balance + charged = deposited);
 *   - every confirmed order holds exactly one live reservation and one
 *     live charge of its amount, every cancelled one none, none stays
 *     pending;
 *   - every confirmed order got exactly one notification (the EVENTS
 *     stream's consumer, through the failovers);
 *   - most orders went through (the cluster kept serving).
 */
#include <check.h>
#include <natomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "fixture.h"
#include "inventory.pb-c.h"
#include "nats_cluster.h"
#include "orders.pb-c.h"
#include "payments.pb-c.h"

#define STOCK 1000
#define MONEY 1000000
#define ORDERS_PER_PHASE 4
#define PHASES 7 /* before, then (node down, node back) for each of the three */

static const char *const service_names[] = {"inventory", "payments", "orders", "notifications"};
#define N_SERVICES 4

typedef struct cluster_fixture {
    nats_cluster_t cluster;
    natsConnection *nc;
    fixture_child_t svc[N_SERVICES];
    char db[N_SERVICES][512];
} cluster_fixture_t;

static void start_services(cluster_fixture_t *f)
{
    static char *env[] = {"NATOMIC_JS_REPLICAS=3", NULL};
    for (int i = 0; i < N_SERVICES; i++) {
        fixture_path(f->db[i], sizeof f->db[i], service_names[i], ".db");
        char instance[32];
        snprintf(instance, sizeof instance, "%s-1", service_names[i]);
        const char *args[] = {"--nats", f->cluster.urls, "--db", f->db[i], "--mode", "durable", "--instance", instance,
                              NULL};
        char bin_env[32];
        snprintf(bin_env, sizeof bin_env, "%s_BIN", service_names[i]);
        for (char *p = bin_env; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        memset(&f->svc[i], 0, sizeof f->svc[i]);
        fixture_spawn(&f->svc[i], fixture_bin(bin_env), args, env);
        ck_assert_msg(fixture_wait_ping(&f->svc[i], f->nc, service_names[i]), "%s did not come up (log: %s)",
                      service_names[i], f->svc[i].log_path);
    }
}

static natomic_status_t call(cluster_fixture_t *f, const char *subject, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply,
                             natomic_call_info_t *info)
{
    ProtobufCMessage *r = NULL;
    natomic_status_t st = natomic_request(&r, f->nc, subject, req, reply_desc, fixture_ms(15000), info);
    if (reply != NULL)
        *reply = r;
    else
        protobuf_c_message_free_unpacked(r, NULL);
    return st;
}

/* Makes one order; 1 confirmed, 0 failed cleanly (an error reply), -1 no answer (in doubt). */
static int order_once(cluster_fixture_t *f, int n)
{
    Orders__CreateOrderRequest req = ORDERS__CREATE_ORDER_REQUEST__INIT;
    req.customer = "alice";
    req.sku = "book";
    req.qty = 1 + n % 3;
    req.amount = 100 * (1 + n % 5);
    natomic_call_info_t info;
    natomic_status_t st;
    /* No responders: orders is reconnecting to another node and its subscription is not there yet.
       Nothing was delivered, so the caller tries again (bounded), as any caller should. */
    int64_t end = fixture_now_ms() + fixture_ms(10000);
    while ((st = call(f, "orders.create_order", &req.base, &orders__order_reply__descriptor, NULL, &info)) ==
               NATOMIC_ENORESPONDERS &&
           fixture_now_ms() < end)
        fixture_sleep_ms(100);
    if (st != NATOMIC_OK)
        fprintf(stderr, "# order %d: %s (%s: %s)\n", n, natomic_status_name(st), info.type, info.message);
    return st == NATOMIC_OK ? 1 : info.code != 0 ? 0 : -1;
}

/* An integer from a service's store, read-only. */
static int64_t db(cluster_fixture_t *f, int svc, const char *sql)
{
    return fixture_db_int(f->db[svc], "%s", sql);
}

START_TEST(test_saga_through_node_failures)
{
    cluster_fixture_t f;
    memset(&f, 0, sizeof f);
    ck_assert_msg(nats_cluster_start(&f.cluster, 3) == 0, "the cluster did not start");
    ck_assert_str_eq(natomic_status_name(natomic_connect(&f.nc, f.cluster.urls, NULL)), "NATOMIC_OK");
    start_services(&f);

    Inventory__RestockRequest restock = INVENTORY__RESTOCK_REQUEST__INIT;
    restock.sku = "book";
    restock.qty = STOCK;
    natomic_call_info_t info;
    ck_assert_str_eq(natomic_status_name(call(&f, "inventory.restock", &restock.base,
                                              &inventory__stock_reply__descriptor, NULL, &info)),
                     "NATOMIC_OK");
    Payments__DepositRequest deposit = PAYMENTS__DEPOSIT_REQUEST__INIT;
    deposit.customer = "alice";
    deposit.amount = MONEY;
    ck_assert_str_eq(natomic_status_name(call(&f, "payments.deposit", &deposit.base,
                                              &payments__balance_reply__descriptor, NULL, &info)),
                     "NATOMIC_OK");

    int confirmed = 0, failed = 0, doubtful = 0, n = 0;
    for (int phase = 0; phase < PHASES; phase++) {
        if (phase > 0) {
            int node = (phase - 1) / 2;
            if (phase % 2 == 1) {
                fprintf(stderr, "# stopping node n%d\n", node + 1);
                nats_cluster_kill_node(&f.cluster, node);
            } else {
                fprintf(stderr, "# starting node n%d again\n", node + 1);
                ck_assert_int_eq(nats_cluster_restart_node(&f.cluster, node), 0);
                ck_assert_msg(nats_cluster_wait_jetstream(&f.cluster, fixture_ms(30000)) == 0,
                              "no JetStream meta leader after n%d came back", node + 1);
            }
        }
        for (int k = 0; k < ORDERS_PER_PHASE; k++, n++) {
            int r = order_once(&f, n);
            confirmed += r == 1;
            failed += r == 0;
            doubtful += r == -1;
        }
    }
    fprintf(stderr, "# %d orders: %d confirmed, %d failed cleanly, %d without an answer\n", n, confirmed, failed,
            doubtful);

    /* Let every saga settle: recovery finishes what a lost answer left (bounded). */
    int64_t end = fixture_now_ms() + fixture_ms(30000);
    while (db(&f, 2, "SELECT count(*) FROM orders WHERE status = 'pending'") != 0 && fixture_now_ms() < end)
        fixture_sleep_ms(200);
    ck_assert_int_eq(db(&f, 2, "SELECT count(*) FROM orders WHERE status = 'pending'"), 0);

    /* Conservation. */
    ck_assert_int_eq(db(&f, 0, "SELECT available + reserved FROM stock WHERE sku = 'book'"), STOCK);
    ck_assert_int_eq(db(&f, 1, "SELECT balance + charged FROM accounts WHERE customer = 'alice'"), MONEY);
    /* Each confirmed order holds its reservation and its charge; nothing else is held. */
    int64_t confirmed_db = db(&f, 2, "SELECT count(*) FROM orders WHERE status = 'confirmed'");
    ck_assert_int_eq(db(&f, 0, "SELECT count(*) FROM reservations WHERE state = 'reserved'"), confirmed_db);
    ck_assert_int_eq(db(&f, 1, "SELECT count(*) FROM charges WHERE state = 'charged'"), confirmed_db);
    ck_assert_int_eq(db(&f, 0, "SELECT coalesce(sum(qty), 0) FROM reservations WHERE state = 'reserved'"),
                     db(&f, 2, "SELECT coalesce(sum(qty), 0) FROM orders WHERE status = 'confirmed'"));
    ck_assert_int_eq(db(&f, 1, "SELECT coalesce(sum(amount), 0) FROM charges WHERE state = 'charged'"),
                     db(&f, 2, "SELECT coalesce(sum(amount), 0) FROM orders WHERE status = 'confirmed'"));
    ck_assert_int_eq(db(&f, 0, "SELECT reserved FROM stock WHERE sku = 'book'"),
                     db(&f, 2, "SELECT coalesce(sum(qty), 0) FROM orders WHERE status = 'confirmed'"));
    /* Every order the caller saw confirmed is confirmed. */
    ck_assert_int_ge(confirmed_db, confirmed);
    /* One notification per confirmed order, through the failovers (the consumer may lag: bounded wait). */
    end = fixture_now_ms() + fixture_ms(30000);
    while (db(&f, 3, "SELECT count(*) FROM notifications") < confirmed_db && fixture_now_ms() < end)
        fixture_sleep_ms(200);
    ck_assert_int_eq(db(&f, 3, "SELECT count(*) FROM notifications"), confirmed_db);
    ck_assert_int_eq(db(&f, 3, "SELECT count(DISTINCT order_id) FROM notifications"), confirmed_db);
    /* The cluster kept serving: most orders went through. */
    ck_assert_msg(confirmed * 2 >= n, "only %d of %d orders were confirmed", confirmed, n);

    for (int i = N_SERVICES - 1; i >= 0; i--) {
        int status = fixture_stop_child(&f.svc[i], SIGTERM);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s ended with wait status %#x (log: %s)",
                      service_names[i], (unsigned)status, f.svc[i].log_path);
    }
    natsConnection_Destroy(f.nc);
    nats_cluster_stop(&f.cluster);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("durable saga on three nodes");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_saga_through_node_failures);
    suite_add_tcase(s, tc);
    return fixture_run(s, "cluster");
}
