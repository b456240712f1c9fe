/*
 * inventory_store.h -- the inventory service's SQLite state.
 *
 *     stock(sku PRIMARY KEY, available >= 0, reserved >= 0)
 *     reservations(order_id PRIMARY KEY, sku, qty, tx,
 *                  state 'reserved' | 'released', created_at)
 *
 * Every function takes the service's connection (opened with
 * sqlite_tx_open()) and returns an SQLite result code: SQLITE_OK, or the
 * failure (sqlite3_errstr() names it). Business results come back through
 * out-parameters, never as SQLite errors.
 */
#ifndef INVENTORY_STORE_H
#define INVENTORY_STORE_H

#include <stdint.h>

struct sqlite3;

typedef struct inventory_stock {
    int64_t available;
    int64_t reserved;
} inventory_stock_t;

typedef enum inventory_reserve_result {
    INVENTORY_RESERVED = 0,      /* stock moved to reserved, reservation saved        */
    INVENTORY_OUT_OF_STOCK,      /* fewer than qty available (*available says how many) */
    INVENTORY_UNKNOWN_SKU,       /* no stock row for the sku                           */
    INVENTORY_ALREADY_RESERVED   /* the order already has a reservation row            */
} inventory_reserve_result_t;

/* Creates the two tables if missing. */
int inventory_store_init(struct sqlite3 *db);

/*
 * Adds qty (> 0) to the available stock of sku in its own transaction
 * (sqlite_tx). *after gets the new figures. *overflow is set (and nothing
 * changed) when available + reserved would no longer fit in 64 bits.
 */
int inventory_store_restock(struct sqlite3 *db, const char *sku, int64_t qty, inventory_stock_t *after,
                            int *overflow);

/* The stock of sku; zeros for an unknown sku. One statement: a consistent read. */
int inventory_store_get(struct sqlite3 *db, const char *sku, inventory_stock_t *out);

/*
 * Inside the caller's transaction (the barrier's): moves qty from
 * available to reserved and records the reservation of order_id under tx.
 * *result says which business case happened; *available is the stock
 * after the reservation (INVENTORY_RESERVED) or the stock that was short
 * (INVENTORY_OUT_OF_STOCK). On any result but INVENTORY_RESERVED, and on
 * any error, the caller must roll the transaction back: a partial change
 * may have been made in it.
 */
int inventory_store_reserve(struct sqlite3 *db, const char *order_id, const char *sku, int64_t qty, const char *tx,
                            inventory_reserve_result_t *result, int64_t *available);

/*
 * Inside the caller's transaction: if order_id holds a 'reserved'
 * reservation made under tx, returns its qty to available and marks it
 * 'released'; *released gets that qty, or 0 when there was none (already
 * released, or never reserved). On error the caller rolls back.
 */
int inventory_store_release(struct sqlite3 *db, const char *order_id, const char *tx, int64_t *released);

#endif
