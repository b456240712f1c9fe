/*
 * notifications -- the consumer of the order saga's events.
 *
 * What it teaches: the other end of "dispatch after commit". orders
 * publishes events.orders.order_created only once an order is confirmed,
 * so a notification is never sent for an order that was rolled back; and
 * this service records each one idempotently -- keyed by the event's
 * Natomic-Event-Id, one per order -- so a duplicated or retried event
 * never notifies twice. No rollback here: a consumer of committed facts
 * has nothing to undo. notifications.list shows what a customer was told.
 *
 *     notifications --nats nats://127.0.0.1:4222 --db notifications.db
 */
#include <natomic.h>

#include "notifications_service.h"
#include "notifications_store.h"
#include "service_main.h"
#include "sqlite_tx.h"

static const char about[] =
    "notifications: consumes events.orders.order_created and records one notification per\n"
    "order, idempotently (by the event's Natomic-Event-Id, and one per order id).\n"
    "notifications.list returns a customer's notifications.";

static void *open_state(const char *db_path)
{
    struct sqlite3 *state = NULL;
    return notifications_store_open(&state, db_path) == 0 ? state : NULL;
}

static void close_state(void *state)
{
    notifications_store_close(state);
}

static natomic_status_t register_methods(natomic_service_t *svc, void *state)
{
    return notifications_service_register(svc, state);
}

static const service_def_t service = {
    .name = "notifications",
    .about = about,
    .description = "Records one notification per confirmed order (order_created events)",
    .open = open_state,
    .close = close_state,
    .store = sqlite_tx_store,
    .register_methods = register_methods,
};

int main(int argc, char **argv)
{
    return service_main(argc, argv, &service);
}
