/*
 * orders -- the orchestrator of the order saga.
 *
 * What it teaches: a distributed transaction without a distributed lock.
 * An order touches three databases that nobody can commit together --
 * this one, inventory's and payments'. Instead of two-phase commit, the
 * saga commits each step locally and remembers how to undo it:
 *
 *     save 'pending'        -> undo: cancel the order
 *     inventory.reserve     -> undo: inventory.release
 *     payments.charge       -> undo: payments.refund
 *     confirm, then publish events.orders.order_created
 *
 * Each undo is registered before its step runs (a step that times out may
 * have happened), the undos run newest first when a later step fails, and
 * the event leaves only after the whole call succeeded, so notifications
 * never hear of an order that was rolled back. The participants make the
 * undos safe to repeat and safe to arrive first (the barrier). Read
 * orders_service.c next to the saga step in libatomic/src/compensation.c.
 *
 *     orders --nats nats://127.0.0.1:4222 --db orders.db
 */
#include <natomic.h>

#include "orders_service.h"
#include "orders_store.h"
#include "service_main.h"
#include "sqlite_tx.h"

static const char about[] =
    "orders: the saga orchestrator. orders.create_order saves the order, reserves stock\n"
    "(inventory.reserve), charges the customer (payments.charge) and confirms it; when a\n"
    "step fails, what was done is compensated (payments.refund, inventory.release, the\n"
    "order cancelled) and the caller gets the original error (OutOfStock, PaymentDeclined).\n"
    "events.orders.order_created leaves only for confirmed orders. orders.get_order reads one.";

static void *open_state(const char *db_path)
{
    struct sqlite3 *state = NULL;
    return orders_store_open(&state, db_path) == 0 ? state : NULL;
}

static void close_state(void *state)
{
    orders_store_close(state);
}

static natomic_status_t register_methods(natomic_service_t *svc, void *state)
{
    return orders_service_register(svc, state);
}

static const service_def_t service = {
    .name = "orders",
    .about = about,
    .description = "The order saga: reserve stock, charge, confirm; compensate on failure",
    .open = open_state,
    .close = close_state,
    .store = sqlite_tx_store,
    .register_methods = register_methods,
};

int main(int argc, char **argv)
{
    return service_main(argc, argv, &service);
}
