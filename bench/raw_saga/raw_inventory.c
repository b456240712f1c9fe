/*
 * raw_inventory.c -- inventory of the order saga by hand: the rows and
 * replies of services/inventory, without libnatomic.
 *
 *   inventory.restock(RestockRequest{sku, qty})           -> StockReply
 *   inventory.reserve(ReserveRequest{order_id, sku, qty}) -> ReserveReply
 *   inventory.release(ReleaseRequest{order_id})           -> ReleaseReply
 *   inventory.get_stock(GetStockRequest{sku})             -> StockReply
 *
 * reserve is the saga's action and release its compensation; both run in
 * one transaction with their barrier rows (raw_barrier.c), the order id as
 * the branch and Natomic-Tx as the transaction, so the stock moves at most
 * once per transaction whatever the network repeats or reorders.
 *
 * Invariants, as in services/inventory/inventory_store.c, kept by the
 * statements: stock never goes negative (a reservation takes stock only
 * `WHERE available >= qty`, in the statement that decides it);
 * available + reserved changes only by restock; an order has at most one
 * reservation and a release returns exactly what it took, once.
 *
 * Failure: any SQLite error rolls the whole transaction back (barrier rows
 * included) and replies 503 StorageError; a business refusal (OutOfStock,
 * TransactionAborted, InvalidRequest) rolls back too and replies 422.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory.pb-c.h"
#include "raw_barrier.h"
#include "raw_db.h"
#include "raw_roles.h"

enum {
    RESTOCK,
    GET_STOCK,
    TAKE_STOCK,
    PUT_BACK_STOCK,
    INSERT_RESERVATION,
    RELEASE_RESERVATION,
    BARRIER_INSERT,
    BARRIER_REASON,
    N_STATEMENTS
};

static const char *const statements[N_STATEMENTS] = {
    [RESTOCK] = "INSERT INTO stock(sku, available, reserved) VALUES (?1, ?2, 0) "
                "ON CONFLICT(sku) DO UPDATE SET available = available + excluded.available "
                "  WHERE available <= 9223372036854775807 - excluded.available - reserved "
                "RETURNING available, reserved",
    [GET_STOCK] = "SELECT available, reserved FROM stock WHERE sku = ?",
    [TAKE_STOCK] = "UPDATE stock SET available = available - ?1, reserved = reserved + ?1 "
                   "WHERE sku = ?2 AND available >= ?1 RETURNING available",
    [PUT_BACK_STOCK] = "UPDATE stock SET available = available + ?1, reserved = reserved - ?1 "
                       "WHERE sku = (SELECT sku FROM reservations WHERE order_id = ?2)",
    [INSERT_RESERVATION] = "INSERT INTO reservations(order_id, sku, qty, tx, state) VALUES (?, ?, ?, ?, 'reserved') "
                           "ON CONFLICT(order_id) DO NOTHING",
    [RELEASE_RESERVATION] = "UPDATE reservations SET state = 'released' "
                            "WHERE order_id = ? AND tx = ? AND state = 'reserved' RETURNING qty",
    [BARRIER_INSERT] = RAW_BARRIER_INSERT_SQL,
    [BARRIER_REASON] = RAW_BARRIER_REASON_SQL,
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS stock ("
                             "  sku TEXT PRIMARY KEY,"
                             "  available INTEGER NOT NULL CHECK (available >= 0),"
                             "  reserved INTEGER NOT NULL CHECK (reserved >= 0));"
                             "CREATE TABLE IF NOT EXISTS reservations ("
                             "  order_id TEXT PRIMARY KEY,"
                             "  sku TEXT NOT NULL,"
                             "  qty INTEGER NOT NULL CHECK (qty > 0),"
                             "  tx TEXT NOT NULL,"
                             "  state TEXT NOT NULL CHECK (state IN ('reserved', 'released')),"
                             "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));" RAW_BARRIER_SCHEMA;

/* available and reserved of `sku` (0, 0 when unknown; *known says which); lock held. SQLITE_OK or the failure. */
static int read_stock(raw_db_t *d, const char *sku, int64_t *available, int64_t *reserved, bool *known)
{
    sqlite3_stmt *st = raw_db_stmt(d, GET_STOCK);
    sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *known = rc == SQLITE_ROW;
    *available = *known ? sqlite3_column_int64(st, 0) : 0;
    *reserved = *known ? sqlite3_column_int64(st, 1) : 0;
    return raw_db_finish(st, rc);
}

static void restock(raw_call_t *call, void *state)
{
    raw_db_t *d = state;
    Inventory__RestockRequest *req = raw_unpack(call, &inventory__restock_request__descriptor);
    if (req == NULL)
        return;
    if (*req->sku == '\0' || req->qty <= 0) {
        raw_fail(call, 400, "InvalidRequest", "sku must not be empty and qty must be positive");
        inventory__restock_request__free_unpacked(req, NULL);
        return;
    }
    Inventory__StockReply out = INVENTORY__STOCK_REPLY__INIT;
    bool returned = false;
    raw_db_lock(d);
    int rc = raw_db_begin(d);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *st = raw_db_stmt(d, RESTOCK);
        sqlite3_bind_text(st, 1, req->sku, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, req->qty);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            returned = true;
            out.available = sqlite3_column_int64(st, 0);
            out.reserved = sqlite3_column_int64(st, 1);
        }
        rc = raw_db_finish(st, rc);
        if (rc == SQLITE_OK && returned)
            rc = raw_db_commit(d);
        else
            raw_db_rollback(d);
    }
    raw_db_unlock(d);
    out.sku = req->sku;
    if (rc != SQLITE_OK)
        raw_fail(call, 503, "StorageError", "restock: %s", sqlite3_errstr(rc));
    else if (!returned)
        raw_fail(call, 400, "InvalidRequest", "restocking %" PRId64 " of %s would overflow", req->qty, req->sku);
    else
        raw_reply(call, &out.base);
    inventory__restock_request__free_unpacked(req, NULL);
}

/* What the barrier bodies of reserve and release need, and what they leave for the reply. */
typedef struct step {
    const raw_call_t *call;
    const char *order_id;
    const char *sku;  /* reserve only */
    int64_t qty;      /* reserve only */
    int64_t result;   /* reserve: available after; release: quantity given back */
} step_t;

/* reserve, executed: takes the stock and records the reservation, or refuses. */
static int take(raw_db_t *d, void *arg, raw_refusal_t *no)
{
    step_t *r = arg;
    sqlite3_stmt *st = raw_db_stmt(d, TAKE_STOCK);
    sqlite3_bind_int64(st, 1, r->qty);
    sqlite3_bind_text(st, 2, r->sku, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    bool taken = rc == SQLITE_ROW;
    if (taken)
        r->result = sqlite3_column_int64(st, 0);
    rc = raw_db_finish(st, rc);
    if (rc != SQLITE_OK)
        return rc;
    if (!taken) {
        /* Why not: an unknown sku, or too little of it. Read in the same transaction. */
        int64_t available = 0, reserved = 0;
        bool known = false;
        rc = read_stock(d, r->sku, &available, &reserved, &known);
        if (rc == SQLITE_OK && known)
            raw_refuse(no, 422, "OutOfStock", "only %" PRId64 " of %s available, %" PRId64 " requested", available,
                       r->sku, r->qty);
        else if (rc == SQLITE_OK)
            raw_refuse(no, 422, "OutOfStock", "unknown sku %s", r->sku);
        return rc;
    }
    st = raw_db_stmt(d, INSERT_RESERVATION);
    sqlite3_bind_text(st, 1, r->order_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->sku, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, r->qty);
    sqlite3_bind_text(st, 4, r->call->tx, -1, SQLITE_STATIC);
    rc = raw_db_finish(st, sqlite3_step(st));
    if (rc == SQLITE_OK && sqlite3_changes(d->db) != 1)
        raw_refuse(no, 422, "InvalidRequest", "order %s already has a reservation", r->order_id);
    return rc;
}

/* reserve, a duplicate: applied before, so only the stock as it is now. */
static int stock_now(raw_db_t *d, void *arg, raw_refusal_t *no)
{
    (void)no;
    step_t *r = arg;
    int64_t reserved = 0;
    bool known = false;
    return read_stock(d, r->sku, &r->result, &reserved, &known);
}

/* release, executed: gives back what the reservation still holds. */
static int give_back(raw_db_t *d, void *arg, raw_refusal_t *no)
{
    (void)no;
    step_t *r = arg;
    sqlite3_stmt *st = raw_db_stmt(d, RELEASE_RESERVATION);
    sqlite3_bind_text(st, 1, r->order_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->call->tx, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int64_t qty = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    rc = raw_db_finish(st, rc);
    if (rc != SQLITE_OK || qty == 0)
        return rc;
    st = raw_db_stmt(d, PUT_BACK_STOCK);
    sqlite3_bind_int64(st, 1, qty);
    sqlite3_bind_text(st, 2, r->order_id, -1, SQLITE_STATIC);
    rc = raw_db_finish(st, sqlite3_step(st));
    /* A reservation whose stock row vanished: refuse rather than lose the quantity. */
    if (rc == SQLITE_OK && sqlite3_changes(d->db) != 1)
        rc = SQLITE_CORRUPT;
    if (rc == SQLITE_OK)
        r->result = qty;
    return rc;
}

static void reserve(raw_call_t *call, void *state)
{
    Inventory__ReserveRequest *req = raw_unpack(call, &inventory__reserve_request__descriptor);
    if (req == NULL)
        return;
    if (*req->order_id == '\0' || *req->sku == '\0' || req->qty <= 0) {
        raw_fail(call, 400, "InvalidRequest", "order_id and sku must not be empty and qty must be positive");
        inventory__reserve_request__free_unpacked(req, NULL);
        return;
    }
    step_t r = {call, req->order_id, req->sku, req->qty, 0};
    raw_refusal_t no = {0};
    raw_barrier_outcome_t outcome = RAW_BARRIER_EXECUTED;
    int rc = raw_barrier_run(&outcome, &no, state, BARRIER_INSERT, BARRIER_REASON, call->tx, req->order_id, false,
                             take, stock_now, &r);
    if (rc != SQLITE_OK) {
        raw_fail(call, 503, "StorageError", "reserve: %s", sqlite3_errstr(rc));
    } else if (no.code != 0) {
        raw_fail_with(call, &no);
    } else if (outcome == RAW_BARRIER_REFUSED_LATE) {
        raw_fail(call, 422, "TransactionAborted", "order %s was already released: late reserve refused",
                 req->order_id);
    } else {
        Inventory__ReserveReply out = INVENTORY__RESERVE_REPLY__INIT;
        out.order_id = req->order_id;
        out.outcome = (char *)raw_barrier_outcome_name(outcome);
        out.available = r.result;
        raw_reply(call, &out.base);
    }
    inventory__reserve_request__free_unpacked(req, NULL);
}

static void release(raw_call_t *call, void *state)
{
    Inventory__ReleaseRequest *req = raw_unpack(call, &inventory__release_request__descriptor);
    if (req == NULL)
        return;
    if (*req->order_id == '\0') {
        raw_fail(call, 400, "InvalidRequest", "order_id must not be empty");
        inventory__release_request__free_unpacked(req, NULL);
        return;
    }
    step_t r = {call, req->order_id, NULL, 0, 0};
    raw_refusal_t no = {0};
    raw_barrier_outcome_t outcome = RAW_BARRIER_EXECUTED;
    int rc = raw_barrier_run(&outcome, &no, state, BARRIER_INSERT, BARRIER_REASON, call->tx, req->order_id, true,
                             give_back, NULL, &r);
    if (rc != SQLITE_OK) {
        raw_fail(call, 503, "StorageError", "release: %s", sqlite3_errstr(rc));
    } else {
        Inventory__ReleaseReply out = INVENTORY__RELEASE_REPLY__INIT;
        out.order_id = req->order_id;
        out.outcome = (char *)raw_barrier_outcome_name(outcome);
        out.released = r.result; /* 0 unless the body ran and found a held reservation */
        raw_reply(call, &out.base);
    }
    inventory__release_request__free_unpacked(req, NULL);
}

static void get_stock(raw_call_t *call, void *state)
{
    raw_db_t *d = state;
    Inventory__GetStockRequest *req = raw_unpack(call, &inventory__get_stock_request__descriptor);
    if (req == NULL)
        return;
    Inventory__StockReply out = INVENTORY__STOCK_REPLY__INIT;
    bool known = false;
    raw_db_lock(d);
    int rc = read_stock(d, req->sku, &out.available, &out.reserved, &known);
    raw_db_unlock(d);
    out.sku = req->sku;
    if (rc != SQLITE_OK)
        raw_fail(call, 503, "StorageError", "get_stock: %s", sqlite3_errstr(rc));
    else
        raw_reply(call, &out.base);
    inventory__get_stock_request__free_unpacked(req, NULL);
}

static void *open_inventory(const char *db_path)
{
    raw_db_t *d = calloc(1, sizeof *d);
    if (d == NULL || raw_db_open(d, db_path, "inventory", schema, statements, N_STATEMENTS) != 0) {
        free(d);
        return NULL;
    }
    return d;
}

static void close_inventory(void *state)
{
    if (state != NULL)
        raw_db_close(state);
    free(state);
}

static const raw_method_t methods[] = {
    {"restock", restock},
    {"reserve", reserve},
    {"release", release},
    {"get_stock", get_stock},
};

const raw_role_t raw_inventory_role = {
    .name = "inventory",
    .stores = true,
    .open = open_inventory,
    .close = close_inventory,
    .methods = methods,
    .n_methods = sizeof methods / sizeof methods[0],
};
