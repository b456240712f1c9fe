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
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>

#include <natomic.h>

#include "inventory_service.h"
#include "service_options.h"
#include "sqlite_tx.h"

/* Barrier rows older than this are swept at start: no retry lives that long. */
#define BARRIER_RETENTION_S (7 * 24 * 3600)

static const char about[] =
    "inventory: stock per SKU and reservations per order, over NATS\n"
    "(inventory.restock, reserve, release, get_stock). reserve and its compensation\n"
    "release are idempotent through the barrier: duplicates are applied once, a release\n"
    "before its reserve is a null compensation, and a reserve after its release is refused.";

int main(int argc, char **argv)
{
    service_options_t opt;
    int exit_now = 0;
    int rc = service_options_parse(&opt, argc, argv, "inventory", about, &exit_now);
    if (exit_now)
        return rc;

    sqlite3 *db = NULL;
    if (sqlite_tx_open(&db, opt.db_path, "inventory") != 0)
        return 1;
    int64_t swept = 0;
    natomic_status_t st = natomic_barrier_init(db);
    if (st == NATOMIC_OK)
        st = natomic_barrier_sweep(&swept, db, BARRIER_RETENTION_S);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "inventory: cannot prepare the barrier in %s: %s\n", opt.db_path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return 1;
    }
    if (swept > 0)
        fprintf(stderr, "inventory: swept %" PRId64 " barrier rows older than 7 days\n", swept);

    natsConnection *nc = NULL;
    natomic_service_t *svc = NULL;
    st = natomic_connect(&nc, opt.nats_url, NULL);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "inventory: cannot connect to %s: %s\n", opt.nats_url, natomic_strerror(st));
    } else {
        natomic_service_config_t cfg = {
            .name = "inventory",
            .version = NATOMIC_VERSION,
            .description = "Stock and reservations; reserve/release are barrier-protected saga steps",
            .max_workers = opt.workers,
        };
        st = natomic_service_new(&svc, nc, &cfg);
        if (st == NATOMIC_OK)
            st = inventory_service_register(svc, db);
        if (st == NATOMIC_OK)
            st = natomic_service_run(svc);
        if (st != NATOMIC_OK)
            fprintf(stderr, "inventory: %s (%s)\n", natomic_strerror(st), opt.nats_url);
    }
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
    sqlite3_close(db);
    nats_Close();
    return st == NATOMIC_OK ? 0 : 1;
}
