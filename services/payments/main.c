/*
 * payments -- the cashier of the order saga, and the barrier again, this
 * time with money.
 *
 * orders asks payments to charge a customer for an order and, when a
 * later step fails, to refund it. A charge is the step where getting the
 * network wrong costs the most:
 *   - duplicates: a retried charge takes the money twice;
 *   - null compensation: a refund arrives for a charge that never ran
 *     (lost, or timed out before reaching us) and pays out money that was
 *     never taken;
 *   - late actions: the charge arrives after its refund, takes the money,
 *     and nobody will ever refund it.
 * This service runs charge and refund through natomic_barrier_run(): a
 * barrier row keyed by (transaction, order, action|compensation) is
 * written with INSERT OR IGNORE in the same SQLite transaction as the
 * balance change, and the rows already present decide what to do. The
 * money a customer has (balance + charged) changes only by deposit, which
 * the lab's oracle checks. Watch the log (NATOMIC_LOG=info) and the
 * `outcome` field of each reply: executed, duplicate, null_compensation,
 * or a TransactionAborted error for a late charge. See
 * payments_service.c for the methods.
 *
 *     payments --nats nats://127.0.0.1:4222 --db payments.db
 */
#include <natomic.h>

#include "payments_service.h"
#include "sqlite_tx.h"
#include "service_main.h"

static const char about[] =
    "payments: customer balances and charges per order, over NATS\n"
    "(payments.deposit, charge, refund, get_balance). charge and its compensation refund\n"
    "are idempotent through the barrier: duplicates are applied once, a refund before its\n"
    "charge is a null compensation, and a charge after its refund is refused.";

static void *open_state(const char *db_path)
{
    return sqlite_tx_open_participant(db_path, "payments");
}

static natomic_status_t register_methods(natomic_service_t *svc, void *state)
{
    return payments_service_register(svc, state);
}

static const service_def_t service = {
    .name = "payments",
    .about = about,
    .description = "Balances and charges; charge/refund are barrier-protected saga steps",
    .open = open_state,
    .close = sqlite_tx_close,
    .store = sqlite_tx_store,
    .register_methods = register_methods,
};

int main(int argc, char **argv)
{
    return service_main(argc, argv, &service);
}
