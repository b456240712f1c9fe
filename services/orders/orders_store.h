/*
 * orders_store.h -- the orders service's SQLite table.
 *
 *     orders(order_id TEXT PRIMARY KEY, customer, sku, qty, amount,
 *            status 'pending' | 'confirmed' | 'cancelled', tx,
 *            created_at, updated_at)
 *
 * One connection in serialized mode (SQLITE_OPEN_FULLMUTEX) shared by all
 * workers, WAL journal. Every write is one statement, so each commits on
 * its own when the function returns.
 */
#ifndef ORDERS_STORE_H
#define ORDERS_STORE_H

#include <stddef.h>
#include <stdint.h>

struct sqlite3;

/* One order as read back; strings are malloc'ed, freed by orders_store_row_free(). */
typedef struct order_row {
    char *order_id;
    char *customer;
    char *sku;
    char *status;
    char *tx;
    int64_t qty;
    int64_t amount;
} order_row_t;

/*
 * Opens with sqlite_tx_open() (serialized, WAL, synchronous=NORMAL, 5 s
 * busy timeout) and creates the table if needed. 0, or -1 with a message
 * on stderr and nothing left open.
 */
int orders_store_open(struct sqlite3 **out, const char *path);
/* Closes; NULL is a no-op. */
void orders_store_close(struct sqlite3 *db);

/*
 * Inserts a 'pending' order. 0; 1 when the id exists already (nothing
 * written); -1 on error, with the text in err[cap].
 */
int orders_store_insert_pending(struct sqlite3 *db, const char *order_id, const char *customer, const char *sku,
                                int64_t qty, int64_t amount, const char *tx, char *err, size_t cap);

/*
 * Sets the status of `order_id` to `status`, only when its status is
 * currently `from` (NULL: any status other than `status` itself). Returns
 * the number of rows changed (0 or 1), or -1 on error with the text in
 * err[cap].
 */
int orders_store_set_status(struct sqlite3 *db, const char *order_id, const char *status, const char *from,
                            char *err, size_t cap);

/* Reads an order: 0 with *out filled, 1 when unknown, -1 on error (text in err[cap]). */
int orders_store_get(struct sqlite3 *db, const char *order_id, order_row_t *out, char *err, size_t cap);
void orders_store_row_free(order_row_t *row);

#endif
