/*
 * orders_store.c -- SQLite state of the orders service.
 *
 * The orders table is the orchestrator's whole state. An order is written
 * 'pending' before the saga calls anyone, so an order that exists anywhere
 * downstream exists here first; it ends 'confirmed' (reserved and charged)
 * or 'cancelled' (everything compensated). Each write is a single
 * statement and commits on its own: the "local transaction" that the
 * rollback command undoes and the order_created dispatch waits for.
 *
 * The connection is shared by every worker (serialized mode). Each
 * function holds the connection's mutex around its statement so that the
 * error text it reports is its own and not another worker's.
 */
#include "orders_store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_tx.h"

static const char schema[] = "CREATE TABLE IF NOT EXISTS orders ("
                             "  order_id TEXT PRIMARY KEY,"
                             "  customer TEXT NOT NULL,"
                             "  sku TEXT NOT NULL,"
                             "  qty INTEGER NOT NULL CHECK (qty > 0),"
                             "  amount INTEGER NOT NULL CHECK (amount > 0),"
                             "  status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),"
                             "  tx TEXT NOT NULL,"
                             "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),"
                             "  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));"
                             "CREATE INDEX IF NOT EXISTS orders_by_status ON orders(status);";

int orders_store_open(sqlite3 **out, const char *path)
{
    return sqlite_tx_open_schema(out, path, "orders", schema);
}

void orders_store_close(sqlite3 *db)
{
    sqlite_tx_close_db(db);
}

static void set_err(char *err, size_t cap, sqlite3 *db)
{
    if (err != NULL && cap > 0)
        snprintf(err, cap, "%s", sqlite3_errmsg(db));
}

int orders_store_insert_pending(sqlite3 *db, const char *order_id, const char *customer, const char *sku,
                                int64_t qty, int64_t amount, const char *tx, char *err, size_t cap)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite_tx_prepare(db,
                                "INSERT OR IGNORE INTO orders(order_id, customer, sku, qty, amount, status, tx) "
                                "VALUES (?, ?, ?, ?, ?, 'pending', ?)", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, customer, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, sku, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, qty);
        sqlite3_bind_int64(st, 5, amount);
        sqlite3_bind_text(st, 6, tx, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    int result = rc == SQLITE_DONE ? (sqlite3_changes(db) == 1 ? 0 : 1) : -1;
    if (result < 0)
        set_err(err, cap, db);
    sqlite_tx_release(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return result;
}

int orders_store_set_status(sqlite3 *db, const char *order_id, const char *status, const char *from, char *err,
                            size_t cap)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite_tx_prepare(db,
                                "UPDATE orders SET status = ?1, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                                "WHERE order_id = ?2 AND status <> ?1 AND (?3 IS NULL OR status = ?3)", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, order_id, -1, SQLITE_STATIC);
        if (from != NULL)
            sqlite3_bind_text(st, 3, from, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 3);
        rc = sqlite3_step(st);
    }
    int result = rc == SQLITE_DONE ? sqlite3_changes(db) : -1;
    if (result < 0)
        set_err(err, cap, db);
    sqlite_tx_release(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return result;
}

/* strdup of a column, "" for NULL; NULL only on OOM. */
static char *column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return strdup(s != NULL ? (const char *)s : "");
}

int orders_store_get(sqlite3 *db, const char *order_id, order_row_t *out, char *err, size_t cap)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite_tx_prepare(db,
                                "SELECT order_id, customer, sku, status, tx, qty, amount FROM orders "
                                "WHERE order_id = ?", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    int result;
    if (rc == SQLITE_ROW) {
        order_row_t row = {
            .order_id = column_dup(st, 0),
            .customer = column_dup(st, 1),
            .sku = column_dup(st, 2),
            .status = column_dup(st, 3),
            .tx = column_dup(st, 4),
            .qty = sqlite3_column_int64(st, 5),
            .amount = sqlite3_column_int64(st, 6),
        };
        if (row.order_id == NULL || row.customer == NULL || row.sku == NULL || row.status == NULL ||
            row.tx == NULL) {
            orders_store_row_free(&row);
            if (err != NULL && cap > 0)
                snprintf(err, cap, "out of memory");
            result = -1;
        } else {
            *out = row;
            result = 0;
        }
    } else if (rc == SQLITE_DONE) {
        result = 1;
    } else {
        set_err(err, cap, db);
        result = -1;
    }
    sqlite_tx_release(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return result;
}

void orders_store_row_free(order_row_t *row)
{
    if (row == NULL)
        return;
    free(row->order_id);
    free(row->customer);
    free(row->sku);
    free(row->status);
    free(row->tx);
    memset(row, 0, sizeof *row);
}
