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
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>

#include <natomic.h>

#include "payments_service.h"
#include "service_options.h"
#include "sqlite_tx.h"

/* Barrier rows older than this are swept at start: no retry lives that long. */
#define BARRIER_RETENTION_S (7 * 24 * 3600)

static const char about[] =
    "payments: customer balances and charges per order, over NATS\n"
    "(payments.deposit, charge, refund, get_balance). charge and its compensation refund\n"
    "are idempotent through the barrier: duplicates are applied once, a refund before its\n"
    "charge is a null compensation, and a charge after its refund is refused.";

int main(int argc, char **argv)
{
    service_options_t opt;
    int exit_now = 0;
    int rc = service_options_parse(&opt, argc, argv, "payments", about, &exit_now);
    if (exit_now)
        return rc;

    sqlite3 *db = NULL;
    if (sqlite_tx_open(&db, opt.db_path, "payments") != 0)
        return 1;
    int64_t swept = 0;
    natomic_status_t st = natomic_barrier_init(db);
    if (st == NATOMIC_OK)
        st = natomic_barrier_sweep(&swept, db, BARRIER_RETENTION_S);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "payments: cannot prepare the barrier in %s: %s\n", opt.db_path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return 1;
    }
    if (swept > 0)
        fprintf(stderr, "payments: swept %" PRId64 " barrier rows older than 7 days\n", swept);

    natsConnection *nc = NULL;
    natomic_service_t *svc = NULL;
    st = natomic_connect(&nc, opt.nats_url, NULL);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "payments: cannot connect to %s: %s\n", opt.nats_url, natomic_strerror(st));
    } else {
        natomic_service_config_t cfg = {
            .name = "payments",
            .version = NATOMIC_VERSION,
            .description = "Balances and charges; charge/refund are barrier-protected saga steps",
            .max_workers = opt.workers,
        };
        st = natomic_service_new(&svc, nc, &cfg);
        if (st == NATOMIC_OK)
            st = payments_service_register(svc, db);
        if (st == NATOMIC_OK)
            st = natomic_service_run(svc);
        if (st != NATOMIC_OK)
            fprintf(stderr, "payments: %s (%s)\n", natomic_strerror(st), opt.nats_url);
    }
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
    sqlite3_close(db);
    nats_Close();
    return st == NATOMIC_OK ? 0 : 1;
}
