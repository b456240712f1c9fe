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
 * orders_service.c next to the saga step in libatomic/src/rpc.c.
 *
 *     orders --nats nats://127.0.0.1:4222 --db orders.db
 */
#include <stdio.h>

#include <natomic.h>

#include "orders_service.h"
#include "orders_store.h"
#include "service_options.h"

static const char about[] =
    "orders: the saga orchestrator. orders.create_order saves the order, reserves stock\n"
    "(inventory.reserve), charges the customer (payments.charge) and confirms it; when a\n"
    "step fails, what was done is compensated (payments.refund, inventory.release, the\n"
    "order cancelled) and the caller gets the original error (OutOfStock, PaymentDeclined).\n"
    "events.orders.order_created leaves only for confirmed orders. orders.get_order reads one.";

int main(int argc, char **argv)
{
    service_options_t opt;
    int exit_now = 0;
    int rc = service_options_parse(&opt, argc, argv, "orders", about, &exit_now);
    if (exit_now)
        return rc;

    struct sqlite3 *db = NULL;
    if (orders_store_open(&db, opt.db_path) != 0)
        return 1;
    natsConnection *nc = NULL;
    natomic_service_t *svc = NULL;
    natomic_status_t st = natomic_connect(&nc, opt.nats_url, NULL);
    if (st == NATOMIC_OK) {
        natomic_service_config_t cfg = {
            .name = "orders",
            .version = NATOMIC_VERSION,
            .description = "The order saga: reserve stock, charge, confirm; compensate on failure",
            .max_workers = opt.workers,
        };
        st = natomic_service_new(&svc, nc, &cfg);
    }
    if (st == NATOMIC_OK)
        st = orders_service_register(svc, db);
    if (st == NATOMIC_OK)
        st = natomic_service_run(svc);
    if (st != NATOMIC_OK)
        fprintf(stderr, "orders: %s (%s)\n", natomic_strerror(st), opt.nats_url);
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
    orders_store_close(db);
    nats_Close();
    return st == NATOMIC_OK ? 0 : 1;
}
