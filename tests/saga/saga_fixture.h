/*
 * saga_fixture.h -- the order saga as a test sees it: four real service
 * binaries (inventory, payments, orders, notifications) started as child
 * processes against this binary's nats-server, each with its own fresh
 * SQLite file, and driven only from outside -- NATS calls, the events on
 * events.orders.order_created, and the databases opened read-only.
 *
 * fixture_run() (tests/fixture) starts one nats-server before Check
 * forks any test and stops it afterwards. Each test starts its own four
 * services (saga_start) and stops them (saga_stop); a service stopped
 * early goes through fixture_stop_child(). Database reads are
 * fixture_db_int() (a file, read-only) and fixture_query_int() (an
 * oracle connection). Helpers that can fail assert with Check: call them
 * from the test's thread (the children die with the thread that started
 * them, PR_SET_PDEATHSIG).
 */
#ifndef SAGA_FIXTURE_H
#define SAGA_FIXTURE_H

#include "fixture.h"
#include "orders.pb-c.h"

#define SAGA_CALL_TIMEOUT_MS 30000

typedef struct saga {
    natsConnection *nc;
    natsSubscription *events;   /* events.orders.order_created, from before the start */
    fixture_child_t inventory, payments, orders, notifications;   /* each with its name and db_path */
} saga_t;

/* Connects, subscribes to the events, starts the four services and waits until each answers $SRV.PING.<name>. */
void saga_start(saga_t *s);
/* Stops the services with SIGTERM (each must exit 0, one stopped early too) and closes the connection. */
void saga_stop(saga_t *s);

/* Seeds: inventory.restock and payments.deposit; assert success. */
void saga_restock(saga_t *s, const char *sku, int64_t qty);
void saga_deposit(saga_t *s, const char *customer, int64_t amount);

/* The figures as the services report them (inventory.get_stock, payments.get_balance); assert success. */
void saga_get_stock(saga_t *s, const char *sku, int64_t *available, int64_t *reserved);
void saga_get_balance(saga_t *s, const char *customer, int64_t *balance, int64_t *charged);

/*
 * orders.create_order through natomic_request(). On NATOMIC_OK *reply (may
 * be NULL) is the decoded OrderReply: free with
 * orders__order_reply__free_unpacked(). `info` may be NULL.
 */
natomic_status_t saga_create_order(saga_t *s, const char *customer, const char *sku, int64_t qty, int64_t amount,
                                   Orders__OrderReply **reply, natomic_call_info_t *info);
/* orders.get_order; same conventions. */
natomic_status_t saga_get_order(saga_t *s, const char *order_id, Orders__OrderReply **reply,
                                natomic_call_info_t *info);

/* The order id ("ord-...") named in a failed call's message, copied to out[cap]; asserts there is one. */
void saga_order_id_from_message(char *out, size_t cap, const char *message);

/*
 * Read-only connection to the orders database with the three others
 * attached as inv, pay and notif, for cross-service oracles (read with
 * fixture_query_int). Close with sqlite3_close().
 */
struct sqlite3 *saga_oracle_open(const saga_t *s);

/*
 * Waits up to total_ms for events on s->events until `want` arrived, then
 * until none came for quiet_ms. Stores up to max decoded events in out[]
 * (free each with orders__order_created__free_unpacked) and their
 * Natomic-Event-Id in ids[][64] (may be NULL). Returns how many arrived
 * (may exceed max: the extra are counted and dropped).
 */
int saga_collect_events(saga_t *s, Orders__OrderCreated **out, char (*ids)[64], int max, int want, int quiet_ms,
                        int total_ms);

#endif
