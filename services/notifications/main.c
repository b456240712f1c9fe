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
#include <stdio.h>

#include <natomic.h>

#include "notifications_service.h"
#include "notifications_store.h"
#include "service_options.h"

static const char about[] =
    "notifications: consumes events.orders.order_created and records one notification per\n"
    "order, idempotently (by the event's Natomic-Event-Id, and one per order id).\n"
    "notifications.list returns a customer's notifications.";

int main(int argc, char **argv)
{
    service_options_t opt;
    int exit_now = 0;
    int rc = service_options_parse(&opt, argc, argv, "notifications", about, &exit_now);
    if (exit_now)
        return rc;

    struct sqlite3 *db = NULL;
    if (notifications_store_open(&db, opt.db_path) != 0)
        return 1;
    natsConnection *nc = NULL;
    natomic_service_t *svc = NULL;
    natomic_status_t st = natomic_connect(&nc, opt.nats_url, NULL);
    if (st == NATOMIC_OK) {
        natomic_service_config_t cfg = {
            .name = "notifications",
            .version = NATOMIC_VERSION,
            .description = "Records one notification per confirmed order (order_created events)",
            .max_workers = opt.workers,
        };
        st = natomic_service_new(&svc, nc, &cfg);
    }
    if (st == NATOMIC_OK)
        st = notifications_service_register(svc, db);
    if (st == NATOMIC_OK)
        st = natomic_service_run(svc);
    if (st != NATOMIC_OK)
        fprintf(stderr, "notifications: %s (%s)\n", natomic_strerror(st), opt.nats_url);
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
    notifications_store_close(db);
    nats_Close();
    return st == NATOMIC_OK ? 0 : 1;
}
