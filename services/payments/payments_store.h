/*
 * payments_store.h -- the payments service's SQLite state.
 *
 *     accounts(customer PRIMARY KEY, balance >= 0, charged >= 0)
 *     charges(order_id PRIMARY KEY, customer, amount, tx,
 *             state 'charged' | 'refunded', created_at)
 *
 * Every function takes the service's connection (opened with
 * sqlite_tx_open()) and returns an SQLite result code: SQLITE_OK, or the
 * failure (sqlite3_errstr() names it). Business results come back through
 * out-parameters, never as SQLite errors. Amounts are in cents.
 */
#ifndef PAYMENTS_STORE_H
#define PAYMENTS_STORE_H

#include <stdint.h>

struct sqlite3;

typedef struct payments_account {
    int64_t balance;
    int64_t charged;
} payments_account_t;

typedef enum payments_charge_result {
    PAYMENTS_CHARGED = 0,        /* money moved to charged, charge saved                */
    PAYMENTS_INSUFFICIENT,       /* balance below amount (*balance says how much)        */
    PAYMENTS_UNKNOWN_CUSTOMER,   /* no account for the customer                         */
    PAYMENTS_ALREADY_CHARGED     /* the order already has a charge row                  */
} payments_charge_result_t;

/* Creates the two tables if missing. */
int payments_store_init(struct sqlite3 *db);

/*
 * Adds amount (> 0) to the balance of customer in its own transaction
 * (sqlite_tx). *after gets the new figures. *overflow is set (and nothing
 * changed) when balance + charged would no longer fit in 64 bits.
 */
int payments_store_deposit(struct sqlite3 *db, const char *customer, int64_t amount, payments_account_t *after,
                           int *overflow);

/* The account of customer; zeros for an unknown customer. One statement: a consistent read. */
int payments_store_get(struct sqlite3 *db, const char *customer, payments_account_t *out);

/*
 * Inside the caller's transaction (the barrier's): moves amount from
 * balance to charged and records the charge of order_id under tx.
 * *result says which business case happened; *balance is the balance
 * after the charge (PAYMENTS_CHARGED) or the balance that was short
 * (PAYMENTS_INSUFFICIENT). On any result but PAYMENTS_CHARGED, and on any
 * error, the caller must roll the transaction back.
 */
int payments_store_charge(struct sqlite3 *db, const char *order_id, const char *customer, int64_t amount,
                          const char *tx, payments_charge_result_t *result, int64_t *balance);

/*
 * Inside the caller's transaction: if order_id holds a 'charged' charge
 * made under tx, returns its amount to the balance and marks it
 * 'refunded'; *refunded gets that amount, or 0 when there was none. On
 * error the caller rolls back.
 */
int payments_store_refund(struct sqlite3 *db, const char *order_id, const char *tx, int64_t *refunded);

#endif
