/*
 * inventory_store.c -- stock and reservations in SQLite.
 *
 * Invariants, kept by the schema and the statements rather than by
 * checks in C:
 *   - stock never goes negative: CHECK (available >= 0, reserved >= 0),
 *     and a reservation takes stock only `WHERE available >= qty`, in the
 *     same statement that decides it (no read-then-write race);
 *   - available + reserved of a sku changes only by restock: reserve and
 *     release move quantity between the two columns in one UPDATE;
 *   - an order has at most one reservation (order_id is the key), and a
 *     release returns exactly what that reservation took, once: the row
 *     goes from 'reserved' to 'released' in the statement that reads it.
 * Reserve and release run inside the barrier's transaction (the caller's);
 * restock opens its own through sqlite_tx. A failure leaves nothing: the
 * transaction is rolled back whole.
 */
#include "inventory_store.h"

#include <sqlite3.h>
#include <stddef.h>

#include "sqlite_tx.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS stock ("
    "  sku TEXT PRIMARY KEY,"
    "  available INTEGER NOT NULL CHECK (available >= 0),"
    "  reserved INTEGER NOT NULL CHECK (reserved >= 0));"
    "CREATE TABLE IF NOT EXISTS reservations ("
    "  order_id TEXT PRIMARY KEY,"
    "  sku TEXT NOT NULL,"
    "  qty INTEGER NOT NULL CHECK (qty > 0),"
    "  tx TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('reserved', 'released')),"
    "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));";

int inventory_store_init(sqlite3 *db)
{
    return sqlite3_exec(db, schema, NULL, NULL, NULL);
}

int inventory_store_restock(sqlite3 *db, const char *sku, int64_t qty, inventory_stock_t *after, int *overflow)
{
    /* The WHERE keeps available + reserved within 64 bits; it is false only on overflow. */
    static const char sql[] = "INSERT INTO stock(sku, available, reserved) VALUES (?1, ?2, 0) "
                              "ON CONFLICT(sku) DO UPDATE SET available = available + excluded.available "
                              "  WHERE available <= 9223372036854775807 - excluded.available - reserved "
                              "RETURNING available, reserved";
    int rc = sqlite_tx_begin(db);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    inventory_stock_t now = {0, 0};
    int returned = 0;
    rc = sqlite_tx_prepare(db, sql, &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, qty);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            now.available = sqlite3_column_int64(st, 0);
            now.reserved = sqlite3_column_int64(st, 1);
            returned = 1;
        }
        rc = sqlite_tx_finish(st, rc);
    }
    sqlite_tx_release(st);
    if (rc != SQLITE_OK || !returned) {
        sqlite_tx_rollback(db);
        if (rc == SQLITE_OK)
            *overflow = 1;
        return rc;
    }
    rc = sqlite_tx_commit(db);
    if (rc == SQLITE_OK) {
        *after = now;
        *overflow = 0;
    }
    return rc;
}

int inventory_store_get(sqlite3 *db, const char *sku, inventory_stock_t *out)
{
    /* Hold the mutex for the whole read: no other worker can open and commit a transaction while it is live. */
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    inventory_stock_t now = {0, 0};
    int rc = sqlite_tx_prepare(db, "SELECT available, reserved FROM stock WHERE sku = ?", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            now.available = sqlite3_column_int64(st, 0);
            now.reserved = sqlite3_column_int64(st, 1);
        }
        rc = sqlite_tx_finish(st, rc);
    }
    sqlite_tx_release(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    if (rc == SQLITE_OK)
        *out = now;
    return rc;
}

/* Takes qty from available; *taken 1 and *available the rest, or *taken 0. */
static int take_stock(sqlite3 *db, const char *sku, int64_t qty, int *taken, int64_t *available)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite_tx_prepare(db,
                                "UPDATE stock SET available = available - ?1, reserved = reserved + ?1 "
                                "WHERE sku = ?2 AND available >= ?1 RETURNING available", &st);
    *taken = 0;
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, qty);
        sqlite3_bind_text(st, 2, sku, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *taken = 1;
            *available = sqlite3_column_int64(st, 0);
        }
        rc = sqlite_tx_finish(st, rc);
    }
    sqlite_tx_release(st);
    return rc;
}

int inventory_store_reserve(sqlite3 *db, const char *order_id, const char *sku, int64_t qty, const char *tx,
                            inventory_reserve_result_t *result, int64_t *available)
{
    int taken = 0;
    int rc = take_stock(db, sku, qty, &taken, available);
    if (rc != SQLITE_OK)
        return rc;
    if (!taken) {
        /* Why not: an unknown sku, or too little of it. Read in the same transaction. */
        int64_t short_of = 0;
        int known = 0;
        sqlite3_stmt *st = NULL;
        rc = sqlite_tx_prepare(db, "SELECT available FROM stock WHERE sku = ?", &st);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                known = 1;
                short_of = sqlite3_column_int64(st, 0);
            }
            rc = sqlite_tx_finish(st, rc);
        }
        sqlite_tx_release(st);
        if (rc != SQLITE_OK)
            return rc;
        *result = known ? INVENTORY_OUT_OF_STOCK : INVENTORY_UNKNOWN_SKU;
        *available = short_of;
        return SQLITE_OK;
    }

    sqlite3_stmt *st = NULL;
    rc = sqlite_tx_prepare(db,
                            "INSERT INTO reservations(order_id, sku, qty, tx, state) VALUES (?, ?, ?, ?, 'reserved') "
                            "ON CONFLICT(order_id) DO NOTHING", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, sku, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, qty);
        sqlite3_bind_text(st, 4, tx, -1, SQLITE_STATIC);
        rc = sqlite_tx_finish(st, sqlite3_step(st));
    }
    sqlite_tx_release(st);
    if (rc != SQLITE_OK)
        return rc;
    /* The caller holds the connection's mutex: changes() is this statement's. */
    *result = sqlite3_changes(db) == 1 ? INVENTORY_RESERVED : INVENTORY_ALREADY_RESERVED;
    return SQLITE_OK;
}

int inventory_store_release(sqlite3 *db, const char *order_id, const char *tx, int64_t *released)
{
    sqlite3_stmt *st = NULL;
    int64_t qty = 0;
    int rc = sqlite_tx_prepare(db,
                                "UPDATE reservations SET state = 'released' "
                                "WHERE order_id = ? AND tx = ? AND state = 'reserved' RETURNING qty", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, tx, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            qty = sqlite3_column_int64(st, 0);
        rc = sqlite_tx_finish(st, rc);
    }
    sqlite_tx_release(st);
    if (rc != SQLITE_OK)
        return rc;
    if (qty > 0) {
        rc = sqlite_tx_prepare(db,
                                "UPDATE stock SET available = available + ?1, reserved = reserved - ?1 "
                                "WHERE sku = (SELECT sku FROM reservations WHERE order_id = ?2)", &st);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, qty);
            sqlite3_bind_text(st, 2, order_id, -1, SQLITE_STATIC);
            rc = sqlite_tx_finish(st, sqlite3_step(st));
        }
        sqlite_tx_release(st);
        if (rc != SQLITE_OK)
            return rc;
        /* A reservation whose stock row vanished: refuse rather than lose the quantity. */
        if (sqlite3_changes(db) != 1)
            return SQLITE_CORRUPT;
    }
    *released = qty;
    return SQLITE_OK;
}
