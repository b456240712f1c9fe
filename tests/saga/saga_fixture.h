/*
 * saga_fixture.h -- the order saga as a test sees it: four real service
 * binaries (inventory, payments, orders, notifications) started as child
 * processes against this binary's nats-server, each with its own fresh
 * SQLite file, and driven only from outside -- NATS calls, the events on
 * events.orders.order_created, and the databases opened read-only.
 *
 * saga_main() starts one nats-server before Check forks any test and
 * stops it afterwards. Each test starts its own four services
 * (saga_start) and stops them (saga_stop). Helpers that can fail assert
 * with Check: call them from the test's thread (the children die with the
 * thread that started them, PR_SET_PDEATHSIG).
 */
#ifndef SAGA_FIXTURE_H
#define SAGA_FIXTURE_H

#include <check.h>
#include <natomic.h>
#include <stdint.h>

#include "orders.pb-c.h"
#include "process.h"

#define SAGA_CALL_TIMEOUT_MS 30000

typedef struct saga_service {
    const char *name;      /* "inventory", ...                           */
    lab_process_t proc;
    char db_path[512];
    char log_path[512];
} saga_service_t;

typedef struct saga {
    natsConnection *nc;
    natsSubscription *events;   /* events.orders.order_created, from before the start */
    saga_service_t inventory, payments, orders, notifications;
} saga_t;

/* Starts nats-server, runs the suite (TAP), stops the server, removes the work folder. Returns 0 (1 with "Bail out!"). */
int saga_main(Suite *suite);

/* A bounded wait of `ms`, five times longer under valgrind. */
int saga_ms(int ms);
int64_t saga_now_ms(void);
void saga_sleep_ms(int ms);

/* Connects, subscribes to the events, starts the four services and waits until each answers $SRV.PING.<name>. */
void saga_start(saga_t *s);
/* Stops the services with SIGTERM (each must exit 0) and closes the connection. */
void saga_stop(saga_t *s);

/* Stops one service early with `sig` (saga_stop then skips it). Returns the wait status. */
int saga_service_stop(saga_service_t *svc, int sig);

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
 * The one integer result of `fmt` (an sqlite3_mprintf() format: %Q
 * quotes a string) on the database at `path` opened read-only; NULL reads
 * as 0. Asserts the query ran.
 */
int64_t saga_db_int(const char *path, const char *fmt, ...);

/*
 * Read-only connection to the orders database with the three others
 * attached as inv, pay and notif, for cross-service oracles. Close with
 * sqlite3_close().
 */
struct sqlite3 *saga_oracle_open(const saga_t *s);
/* The same on an oracle connection. */
int64_t saga_oracle_int(struct sqlite3 *db, const char *fmt, ...);

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
