/*
 * payments_store.c -- accounts and charges in SQLite.
 *
 * Invariants, kept by the schema and the statements rather than by
 * checks in C:
 *   - a balance never goes negative: CHECK (balance >= 0, charged >= 0),
 *     and a charge takes money only `WHERE balance >= amount`, in the same
 *     statement that decides it (no read-then-write race);
 *   - balance + charged of a customer changes only by deposit: charge and
 *     refund move money between the two columns in one UPDATE;
 *   - an order has at most one charge (order_id is the key), and a refund
 *     returns exactly what that charge took, once: the row goes from
 *     'charged' to 'refunded' in the statement that reads it.
 * Charge and refund run inside the barrier's transaction (the caller's);
 * deposit opens its own through sqlite_tx. A failure leaves nothing: the
 * transaction is rolled back whole.
 */
#include "payments_store.h"

#include <sqlite3.h>
#include <stddef.h>

#include "sqlite_tx.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS accounts ("
    "  customer TEXT PRIMARY KEY,"
    "  balance INTEGER NOT NULL CHECK (balance >= 0),"
    "  charged INTEGER NOT NULL CHECK (charged >= 0));"
    "CREATE TABLE IF NOT EXISTS charges ("
    "  order_id TEXT PRIMARY KEY,"
    "  customer TEXT NOT NULL,"
    "  amount INTEGER NOT NULL CHECK (amount > 0),"
    "  tx TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('charged', 'refunded')),"
    "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));";

int payments_store_init(sqlite3 *db)
{
    return sqlite3_exec(db, schema, NULL, NULL, NULL);
}

int payments_store_deposit(sqlite3 *db, const char *customer, int64_t amount, payments_account_t *after,
                           int *overflow)
{
    /* The WHERE keeps balance + charged within 64 bits; it is false only on overflow. */
    static const char sql[] = "INSERT INTO accounts(customer, balance, charged) VALUES (?1, ?2, 0) "
                              "ON CONFLICT(customer) DO UPDATE SET balance = balance + excluded.balance "
                              "  WHERE balance <= 9223372036854775807 - excluded.balance - charged "
                              "RETURNING balance, charged";
    int rc = sqlite_tx_begin(db);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    payments_account_t now = {0, 0};
    int returned = 0;
    rc = sqlite_tx_prepare(db, sql, &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, customer, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, amount);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            now.balance = sqlite3_column_int64(st, 0);
            now.charged = sqlite3_column_int64(st, 1);
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

int payments_store_get(sqlite3 *db, const char *customer, payments_account_t *out)
{
    /* Hold the mutex for the whole read: no other worker can open and commit a transaction while it is live. */
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    payments_account_t now = {0, 0};
    int rc = sqlite_tx_prepare(db, "SELECT balance, charged FROM accounts WHERE customer = ?", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, customer, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            now.balance = sqlite3_column_int64(st, 0);
            now.charged = sqlite3_column_int64(st, 1);
        }
        rc = sqlite_tx_finish(st, rc);
    }
    sqlite_tx_release(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    if (rc == SQLITE_OK)
        *out = now;
    return rc;
}

/* Takes amount from the balance; *taken 1 and *balance the rest, or *taken 0. */
static int take_money(sqlite3 *db, const char *customer, int64_t amount, int *taken, int64_t *balance)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite_tx_prepare(db,
                                "UPDATE accounts SET balance = balance - ?1, charged = charged + ?1 "
                                "WHERE customer = ?2 AND balance >= ?1 RETURNING balance", &st);
    *taken = 0;
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, amount);
        sqlite3_bind_text(st, 2, customer, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *taken = 1;
            *balance = sqlite3_column_int64(st, 0);
        }
        rc = sqlite_tx_finish(st, rc);
    }
    sqlite_tx_release(st);
    return rc;
}

int payments_store_charge(sqlite3 *db, const char *order_id, const char *customer, int64_t amount, const char *tx,
                          payments_charge_result_t *result, int64_t *balance)
{
    int taken = 0;
    int rc = take_money(db, customer, amount, &taken, balance);
    if (rc != SQLITE_OK)
        return rc;
    if (!taken) {
        /* Why not: an unknown customer, or too little money. Read in the same transaction. */
        int64_t short_of = 0;
        int known = 0;
        sqlite3_stmt *st = NULL;
        rc = sqlite_tx_prepare(db, "SELECT balance FROM accounts WHERE customer = ?", &st);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(st, 1, customer, -1, SQLITE_STATIC);
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
        *result = known ? PAYMENTS_INSUFFICIENT : PAYMENTS_UNKNOWN_CUSTOMER;
        *balance = short_of;
        return SQLITE_OK;
    }

    sqlite3_stmt *st = NULL;
    rc = sqlite_tx_prepare(db,
                            "INSERT INTO charges(order_id, customer, amount, tx, state) VALUES (?, ?, ?, ?, 'charged') "
                            "ON CONFLICT(order_id) DO NOTHING", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, customer, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, amount);
        sqlite3_bind_text(st, 4, tx, -1, SQLITE_STATIC);
        rc = sqlite_tx_finish(st, sqlite3_step(st));
    }
    sqlite_tx_release(st);
    if (rc != SQLITE_OK)
        return rc;
    /* The caller holds the connection's mutex: changes() is this statement's. */
    *result = sqlite3_changes(db) == 1 ? PAYMENTS_CHARGED : PAYMENTS_ALREADY_CHARGED;
    return SQLITE_OK;
}

int payments_store_refund(sqlite3 *db, const char *order_id, const char *tx, int64_t *refunded)
{
    sqlite3_stmt *st = NULL;
    int64_t amount = 0;
    int rc = sqlite_tx_prepare(db,
                                "UPDATE charges SET state = 'refunded' "
                                "WHERE order_id = ? AND tx = ? AND state = 'charged' RETURNING amount", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, tx, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            amount = sqlite3_column_int64(st, 0);
        rc = sqlite_tx_finish(st, rc);
    }
    sqlite_tx_release(st);
    if (rc != SQLITE_OK)
        return rc;
    if (amount > 0) {
        rc = sqlite_tx_prepare(db,
                                "UPDATE accounts SET balance = balance + ?1, charged = charged - ?1 "
                                "WHERE customer = (SELECT customer FROM charges WHERE order_id = ?2)", &st);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, amount);
            sqlite3_bind_text(st, 2, order_id, -1, SQLITE_STATIC);
            rc = sqlite_tx_finish(st, sqlite3_step(st));
        }
        sqlite_tx_release(st);
        if (rc != SQLITE_OK)
            return rc;
        /* A charge whose account vanished: refuse rather than lose the money. */
        if (sqlite3_changes(db) != 1)
            return SQLITE_CORRUPT;
    }
    *refunded = amount;
    return SQLITE_OK;
}
