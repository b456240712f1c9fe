/*
 * raw_payments.c -- payments of the order saga by hand: the rows and
 * replies of services/payments, without libnatomic.
 *
 *   payments.deposit(DepositRequest{customer, amount})         -> BalanceReply
 *   payments.charge(ChargeRequest{order_id, customer, amount}) -> ChargeReply
 *   payments.refund(RefundRequest{order_id})                   -> RefundReply
 *   payments.get_balance(GetBalanceRequest{customer})          -> BalanceReply
 *
 * charge is the saga's action and refund its compensation; both run in
 * one transaction with their barrier rows (raw_barrier.c), the order id as
 * the branch and Natomic-Tx as the transaction, so money moves at most
 * once per transaction whatever the network repeats or reorders.
 *
 * Invariants, as in services/payments/payments_store.c, kept by the
 * statements: a balance never goes negative (a charge takes money only
 * `WHERE balance >= amount`, in the statement that decides it);
 * balance + charged changes only by deposit; an order has at most one
 * charge and a refund pays back exactly what it took, once.
 *
 * Failure: any SQLite error rolls the whole transaction back (barrier rows
 * included) and replies 503 StorageError; a business refusal
 * (PaymentDeclined, TransactionAborted, InvalidRequest) rolls back too and
 * replies 422. The shape is raw_inventory.c's, money for stock: kept as two
 * files, as the services keep theirs, so each reads alone.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payments.pb-c.h"
#include "raw_barrier.h"
#include "raw_db.h"
#include "raw_roles.h"

enum {
    DEPOSIT,
    GET_BALANCE,
    TAKE_MONEY,
    PAY_BACK,
    INSERT_CHARGE,
    REFUND_CHARGE,
    BARRIER_INSERT,
    BARRIER_REASON,
    N_STATEMENTS
};

static const char *const statements[N_STATEMENTS] = {
    [DEPOSIT] = "INSERT INTO accounts(customer, balance, charged) VALUES (?1, ?2, 0) "
                "ON CONFLICT(customer) DO UPDATE SET balance = balance + excluded.balance "
                "  WHERE balance <= 9223372036854775807 - excluded.balance - charged "
                "RETURNING balance, charged",
    [GET_BALANCE] = "SELECT balance, charged FROM accounts WHERE customer = ?",
    [TAKE_MONEY] = "UPDATE accounts SET balance = balance - ?1, charged = charged + ?1 "
                   "WHERE customer = ?2 AND balance >= ?1 RETURNING balance",
    [PAY_BACK] = "UPDATE accounts SET balance = balance + ?1, charged = charged - ?1 "
                 "WHERE customer = (SELECT customer FROM charges WHERE order_id = ?2)",
    [INSERT_CHARGE] = "INSERT INTO charges(order_id, customer, amount, tx, state) VALUES (?, ?, ?, ?, 'charged') "
                      "ON CONFLICT(order_id) DO NOTHING",
    [REFUND_CHARGE] = "UPDATE charges SET state = 'refunded' "
                      "WHERE order_id = ? AND tx = ? AND state = 'charged' RETURNING amount",
    [BARRIER_INSERT] = RAW_BARRIER_INSERT_SQL,
    [BARRIER_REASON] = RAW_BARRIER_REASON_SQL,
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS accounts ("
                             "  customer TEXT PRIMARY KEY,"
                             "  balance INTEGER NOT NULL CHECK (balance >= 0),"
                             "  charged INTEGER NOT NULL CHECK (charged >= 0));"
                             "CREATE TABLE IF NOT EXISTS charges ("
                             "  order_id TEXT PRIMARY KEY,"
                             "  customer TEXT NOT NULL,"
                             "  amount INTEGER NOT NULL CHECK (amount > 0),"
                             "  tx TEXT NOT NULL,"
                             "  state TEXT NOT NULL CHECK (state IN ('charged', 'refunded')),"
                             "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));" RAW_BARRIER_SCHEMA;

/* balance and charged of `customer` (0, 0 when unknown; *known says which); lock held. SQLITE_OK or the failure. */
static int read_account(raw_db_t *d, const char *customer, int64_t *balance, int64_t *charged, bool *known)
{
    sqlite3_stmt *st = raw_db_stmt(d, GET_BALANCE);
    sqlite3_bind_text(st, 1, customer, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *known = rc == SQLITE_ROW;
    *balance = *known ? sqlite3_column_int64(st, 0) : 0;
    *charged = *known ? sqlite3_column_int64(st, 1) : 0;
    return raw_db_finish(st, rc);
}

static void deposit(raw_call_t *call, void *state)
{
    raw_db_t *d = state;
    Payments__DepositRequest *req = raw_unpack(call, &payments__deposit_request__descriptor);
    if (req == NULL)
        return;
    if (*req->customer == '\0' || req->amount <= 0) {
        raw_fail(call, 400, "InvalidRequest", "customer must not be empty and amount must be positive");
        payments__deposit_request__free_unpacked(req, NULL);
        return;
    }
    Payments__BalanceReply out = PAYMENTS__BALANCE_REPLY__INIT;
    bool returned = false;
    raw_db_lock(d);
    int rc = raw_db_begin(d);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *st = raw_db_stmt(d, DEPOSIT);
        sqlite3_bind_text(st, 1, req->customer, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, req->amount);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            returned = true;
            out.balance = sqlite3_column_int64(st, 0);
            out.charged = sqlite3_column_int64(st, 1);
        }
        rc = raw_db_finish(st, rc);
        if (rc == SQLITE_OK && returned)
            rc = raw_db_commit(d);
        else
            raw_db_rollback(d);
    }
    raw_db_unlock(d);
    out.customer = req->customer;
    if (rc != SQLITE_OK)
        raw_fail(call, 503, "StorageError", "deposit: %s", sqlite3_errstr(rc));
    else if (!returned)
        raw_fail(call, 400, "InvalidRequest", "depositing %" PRId64 " for %s would overflow", req->amount,
                 req->customer);
    else
        raw_reply(call, &out.base);
    payments__deposit_request__free_unpacked(req, NULL);
}

/* What the barrier bodies of charge and refund need, and what they leave for the reply. */
typedef struct step {
    const raw_call_t *call;
    const char *order_id;
    const char *customer; /* charge only */
    int64_t amount;       /* charge only */
    int64_t result;       /* charge: balance after; refund: amount paid back */
} step_t;

/* charge, executed: takes the money and records the charge, or refuses. */
static int take(raw_db_t *d, void *arg, raw_refusal_t *no)
{
    step_t *r = arg;
    sqlite3_stmt *st = raw_db_stmt(d, TAKE_MONEY);
    sqlite3_bind_int64(st, 1, r->amount);
    sqlite3_bind_text(st, 2, r->customer, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    bool taken = rc == SQLITE_ROW;
    if (taken)
        r->result = sqlite3_column_int64(st, 0);
    rc = raw_db_finish(st, rc);
    if (rc != SQLITE_OK)
        return rc;
    if (!taken) {
        /* Why not: an unknown customer, or too little money. Read in the same transaction. */
        int64_t balance = 0, charged = 0;
        bool known = false;
        rc = read_account(d, r->customer, &balance, &charged, &known);
        if (rc == SQLITE_OK && known)
            raw_refuse(no, 422, "PaymentDeclined", "insufficient balance: %s has %" PRId64 ", %" PRId64 " requested",
                       r->customer, balance, r->amount);
        else if (rc == SQLITE_OK)
            raw_refuse(no, 422, "PaymentDeclined", "unknown customer %s", r->customer);
        return rc;
    }
    st = raw_db_stmt(d, INSERT_CHARGE);
    sqlite3_bind_text(st, 1, r->order_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->customer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, r->amount);
    sqlite3_bind_text(st, 4, r->call->tx, -1, SQLITE_STATIC);
    rc = raw_db_finish(st, sqlite3_step(st));
    if (rc == SQLITE_OK && sqlite3_changes(d->db) != 1)
        raw_refuse(no, 422, "InvalidRequest", "order %s already has a charge", r->order_id);
    return rc;
}

/* charge, a duplicate: applied before, so only the balance as it is now. */
static int balance_now(raw_db_t *d, void *arg, raw_refusal_t *no)
{
    (void)no;
    step_t *r = arg;
    int64_t charged = 0;
    bool known = false;
    return read_account(d, r->customer, &r->result, &charged, &known);
}

/* refund, executed: pays back what the charge still holds. */
static int pay_back(raw_db_t *d, void *arg, raw_refusal_t *no)
{
    (void)no;
    step_t *r = arg;
    sqlite3_stmt *st = raw_db_stmt(d, REFUND_CHARGE);
    sqlite3_bind_text(st, 1, r->order_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->call->tx, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int64_t amount = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    rc = raw_db_finish(st, rc);
    if (rc != SQLITE_OK || amount == 0)
        return rc;
    st = raw_db_stmt(d, PAY_BACK);
    sqlite3_bind_int64(st, 1, amount);
    sqlite3_bind_text(st, 2, r->order_id, -1, SQLITE_STATIC);
    rc = raw_db_finish(st, sqlite3_step(st));
    /* A charge whose account vanished: refuse rather than lose the money. */
    if (rc == SQLITE_OK && sqlite3_changes(d->db) != 1)
        rc = SQLITE_CORRUPT;
    if (rc == SQLITE_OK)
        r->result = amount;
    return rc;
}

static void charge(raw_call_t *call, void *state)
{
    Payments__ChargeRequest *req = raw_unpack(call, &payments__charge_request__descriptor);
    if (req == NULL)
        return;
    if (*req->order_id == '\0' || *req->customer == '\0' || req->amount <= 0) {
        raw_fail(call, 400, "InvalidRequest", "order_id and customer must not be empty and amount must be positive");
        payments__charge_request__free_unpacked(req, NULL);
        return;
    }
    step_t r = {call, req->order_id, req->customer, req->amount, 0};
    raw_refusal_t no = {0};
    raw_barrier_outcome_t outcome = RAW_BARRIER_EXECUTED;
    int rc = raw_barrier_run(&outcome, &no, state, BARRIER_INSERT, BARRIER_REASON, call->tx, req->order_id, false,
                             take, balance_now, &r);
    if (rc != SQLITE_OK) {
        raw_fail(call, 503, "StorageError", "charge: %s", sqlite3_errstr(rc));
    } else if (no.code != 0) {
        raw_fail_with(call, &no);
    } else if (outcome == RAW_BARRIER_REFUSED_LATE) {
        raw_fail(call, 422, "TransactionAborted", "order %s was already refunded: late charge refused",
                 req->order_id);
    } else {
        Payments__ChargeReply out = PAYMENTS__CHARGE_REPLY__INIT;
        out.order_id = req->order_id;
        out.outcome = (char *)raw_barrier_outcome_name(outcome);
        out.balance = r.result;
        raw_reply(call, &out.base);
    }
    payments__charge_request__free_unpacked(req, NULL);
}

static void refund(raw_call_t *call, void *state)
{
    Payments__RefundRequest *req = raw_unpack(call, &payments__refund_request__descriptor);
    if (req == NULL)
        return;
    if (*req->order_id == '\0') {
        raw_fail(call, 400, "InvalidRequest", "order_id must not be empty");
        payments__refund_request__free_unpacked(req, NULL);
        return;
    }
    step_t r = {call, req->order_id, NULL, 0, 0};
    raw_refusal_t no = {0};
    raw_barrier_outcome_t outcome = RAW_BARRIER_EXECUTED;
    int rc = raw_barrier_run(&outcome, &no, state, BARRIER_INSERT, BARRIER_REASON, call->tx, req->order_id, true,
                             pay_back, NULL, &r);
    if (rc != SQLITE_OK) {
        raw_fail(call, 503, "StorageError", "refund: %s", sqlite3_errstr(rc));
    } else {
        Payments__RefundReply out = PAYMENTS__REFUND_REPLY__INIT;
        out.order_id = req->order_id;
        out.outcome = (char *)raw_barrier_outcome_name(outcome);
        out.refunded = r.result; /* 0 unless the body ran and found a held charge */
        raw_reply(call, &out.base);
    }
    payments__refund_request__free_unpacked(req, NULL);
}

static void get_balance(raw_call_t *call, void *state)
{
    raw_db_t *d = state;
    Payments__GetBalanceRequest *req = raw_unpack(call, &payments__get_balance_request__descriptor);
    if (req == NULL)
        return;
    Payments__BalanceReply out = PAYMENTS__BALANCE_REPLY__INIT;
    bool known = false;
    raw_db_lock(d);
    int rc = read_account(d, req->customer, &out.balance, &out.charged, &known);
    raw_db_unlock(d);
    out.customer = req->customer;
    if (rc != SQLITE_OK)
        raw_fail(call, 503, "StorageError", "get_balance: %s", sqlite3_errstr(rc));
    else
        raw_reply(call, &out.base);
    payments__get_balance_request__free_unpacked(req, NULL);
}

static void *open_payments(const char *db_path)
{
    raw_db_t *d = calloc(1, sizeof *d);
    if (d == NULL || raw_db_open(d, db_path, "payments", schema, statements, N_STATEMENTS) != 0) {
        free(d);
        return NULL;
    }
    return d;
}

static void close_payments(void *state)
{
    if (state != NULL)
        raw_db_close(state);
    free(state);
}

static const raw_method_t methods[] = {
    {"deposit", deposit},
    {"charge", charge},
    {"refund", refund},
    {"get_balance", get_balance},
};

const raw_role_t raw_payments_role = {
    .name = "payments",
    .stores = true,
    .open = open_payments,
    .close = close_payments,
    .methods = methods,
    .n_methods = sizeof methods / sizeof methods[0],
};
