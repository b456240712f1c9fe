/*
 * inventory -- the stock keeper of the order saga, and the lesson of the
 * barrier.
 *
 * orders asks inventory to reserve stock for an order and, when a later
 * step fails, to release it. Over a network each of those messages can
 * arrive twice, never, or late, and a participant that trusts them ends
 * up wrong in three classic ways:
 *   - duplicates: a retried reserve takes the stock twice;
 *   - null compensation: a release arrives for a reserve that never ran
 *     (lost, or timed out before reaching us) and "returns" stock that was
 *     never taken;
 *   - late actions: the reserve arrives after its release, takes stock,
 *     and nobody will ever release it (a hanging reservation).
 * This service runs reserve and release through natomic_barrier_run():
 * a barrier row keyed by (transaction, order, action|compensation) is
 * written with INSERT OR IGNORE in the same SQLite transaction as the
 * stock change, and the rows already present decide what to do. Watch the
 * log (NATOMIC_LOG=info) and the `outcome` field of each reply:
 * executed, duplicate, null_compensation, or a TransactionAborted error
 * for a late reserve. See inventory_service.c for the methods.
 *
 *     inventory --nats nats://127.0.0.1:4222 --db inventory.db
 */
#include <natomic.h>

#include "inventory_service.h"
#include "sqlite_tx.h"
#include "service_main.h"

static const char about[] =
    "inventory: stock per SKU and reservations per order, over NATS\n"
    "(inventory.restock, reserve, release, get_stock). reserve and its compensation\n"
    "release are idempotent through the barrier: duplicates are applied once, a release\n"
    "before its reserve is a null compensation, and a reserve after its release is refused.";

static void *open_state(const char *db_path)
{
    return sqlite_tx_open_participant(db_path, "inventory");
}

static natomic_status_t register_methods(natomic_service_t *svc, void *state)
{
    return inventory_service_register(svc, state);
}

static const service_def_t service = {
    .name = "inventory",
    .about = about,
    .description = "Stock and reservations; reserve/release are barrier-protected saga steps",
    .open = open_state,
    .close = sqlite_tx_close,
    .store = sqlite_tx_store,
    .register_methods = register_methods,
};

int main(int argc, char **argv)
{
    return service_main(argc, argv, &service);
}
