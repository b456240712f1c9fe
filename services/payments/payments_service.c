/*
 * payments_service.c -- the payments methods of the order saga.
 *
 *   payments.deposit(DepositRequest{customer, amount})          -> BalanceReply
 *   payments.charge(ChargeRequest{order_id, customer, amount})  -> ChargeReply
 *   payments.refund(RefundRequest{order_id})                    -> RefundReply
 *   payments.get_balance(GetBalanceRequest{customer})           -> BalanceReply
 *
 * charge is a saga action and refund its compensation. Both run through
 * the barrier (natomic_barrier_run), with the order id as the branch, so
 * money moves at most once per transaction whatever the network does:
 *   - a duplicate charge (same Natomic-Tx) replies "duplicate" and takes
 *     nothing more;
 *   - a refund whose charge never ran replies "null_compensation" and
 *     pays nothing back -- and blocks that charge for good;
 *   - a charge arriving after its refund fails with TransactionAborted
 *     instead of taking money nobody will ever refund.
 * A charge that fails (PaymentDeclined) rolls back with its barrier row,
 * so a later refund in the same transaction is a null compensation.
 * refund never fails for a missing charge: a compensation must be safe to
 * send whenever the caller is in doubt.
 *
 * Errors: InvalidRequest (400, or 422 for an order that already holds a
 * charge from another transaction), PaymentDeclined (422),
 * TransactionAborted (422), StorageError (503: SQLite failed, retry).
 */
#include "payments_service.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>

#include "payments.pb-c.h"
#include "payments_store.h"
#include "request_fields.h"

/* What a barrier body needs: the call (to fail it) and the request. */
typedef struct barrier_call {
    natomic_ctx_t *ctx;
    const char *order_id;
    const char *customer;
    int64_t amount;
    int64_t result;    /* charge: balance after; refund: amount refunded */
} barrier_call_t;

static natomic_status_t storage_error(natomic_ctx_t *ctx, const char *what, int rc)
{
    return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "%s: %s", what, sqlite3_errstr(rc));
}

/* Reply strings point at static storage or the request: both outlive the reply's packing. */
static char *outcome_text(natomic_barrier_outcome_t outcome)
{
    return (char *)natomic_barrier_outcome_name(outcome);
}

static natomic_status_t deposit(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                void *closure)
{
    const Payments__DepositRequest *req = (const Payments__DepositRequest *)request;
    Payments__BalanceReply *out = (Payments__BalanceReply *)reply;
    sqlite3 *db = closure;

    if (request_text(ctx, "customer", req->customer) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;
    if (req->amount <= 0)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "amount must be positive, got %" PRId64,
                            req->amount);
    payments_account_t after;
    int overflow = 0;
    int rc = payments_store_deposit(db, req->customer, req->amount, &after, &overflow);
    if (rc != SQLITE_OK)
        return storage_error(ctx, "deposit", rc);
    if (overflow)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest",
                            "depositing %" PRId64 " for %s would overflow", req->amount, req->customer);
    out->customer = req->customer;
    out->balance = after.balance;
    out->charged = after.charged;
    return NATOMIC_OK;
}

/* Barrier body of charge: runs in the barrier's transaction, holding the connection's mutex. */
static natomic_status_t charge_body(sqlite3 *db, void *arg)
{
    barrier_call_t *call = arg;
    payments_charge_result_t result = PAYMENTS_CHARGED;
    int64_t balance = 0;
    int rc = payments_store_charge(db, call->order_id, call->customer, call->amount, natomic_ctx_tx(call->ctx),
                                   &result, &balance);
    if (rc != SQLITE_OK)
        return storage_error(call->ctx, "charge", rc);
    switch (result) {
    case PAYMENTS_CHARGED:
        call->result = balance;
        return NATOMIC_OK;
    case PAYMENTS_INSUFFICIENT:
        return natomic_fail(call->ctx, NATOMIC_EBUSINESS, "PaymentDeclined",
                            "insufficient balance: %s has %" PRId64 ", %" PRId64 " requested", call->customer,
                            balance, call->amount);
    case PAYMENTS_UNKNOWN_CUSTOMER:
        return natomic_fail(call->ctx, NATOMIC_EBUSINESS, "PaymentDeclined", "unknown customer %s", call->customer);
    case PAYMENTS_ALREADY_CHARGED:
        break;
    }
    return natomic_fail(call->ctx, NATOMIC_EBUSINESS, "InvalidRequest", "order %s already has a charge",
                        call->order_id);
}

static natomic_status_t charge(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                               void *closure)
{
    const Payments__ChargeRequest *req = (const Payments__ChargeRequest *)request;
    Payments__ChargeReply *out = (Payments__ChargeReply *)reply;
    sqlite3 *db = closure;

    if (request_text(ctx, "order_id", req->order_id) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;
    if (request_text(ctx, "customer", req->customer) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;
    if (req->amount <= 0)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "amount must be positive, got %" PRId64,
                            req->amount);

    barrier_call_t call = {ctx, req->order_id, req->customer, req->amount, 0};
    natomic_barrier_outcome_t outcome;
    natomic_status_t st =
        natomic_barrier_run(&outcome, ctx, db, req->order_id, NATOMIC_BARRIER_ACTION, charge_body, &call);
    if (st != NATOMIC_OK)
        return st;
    if (outcome == NATOMIC_BARRIER_REFUSED_LATE)
        return natomic_fail(ctx, NATOMIC_EBUSINESS, "TransactionAborted",
                            "order %s was already refunded: late charge refused", req->order_id);
    if (outcome == NATOMIC_BARRIER_DUPLICATE) {
        /* Applied before: report the balance as it is now. */
        payments_account_t now;
        int rc = payments_store_get(db, req->customer, &now);
        if (rc != SQLITE_OK)
            return storage_error(ctx, "get_balance", rc);
        call.result = now.balance;
    }
    out->order_id = req->order_id;
    out->outcome = outcome_text(outcome);
    out->balance = call.result;
    return NATOMIC_OK;
}

/* Barrier body of refund: pays back what the charge took, if it still holds it. */
static natomic_status_t refund_body(sqlite3 *db, void *arg)
{
    barrier_call_t *call = arg;
    int rc = payments_store_refund(db, call->order_id, natomic_ctx_tx(call->ctx), &call->result);
    if (rc != SQLITE_OK)
        return storage_error(call->ctx, "refund", rc);
    return NATOMIC_OK;
}

static natomic_status_t refund(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                               void *closure)
{
    const Payments__RefundRequest *req = (const Payments__RefundRequest *)request;
    Payments__RefundReply *out = (Payments__RefundReply *)reply;
    sqlite3 *db = closure;

    if (request_text(ctx, "order_id", req->order_id) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;
    barrier_call_t call = {ctx, req->order_id, NULL, 0, 0};
    natomic_barrier_outcome_t outcome;
    natomic_status_t st =
        natomic_barrier_run(&outcome, ctx, db, req->order_id, NATOMIC_BARRIER_COMPENSATION, refund_body, &call);
    if (st != NATOMIC_OK)
        return st;
    out->order_id = req->order_id;
    out->outcome = outcome_text(outcome);
    out->refunded = call.result; /* 0 unless the body ran and found a held charge */
    return NATOMIC_OK;
}

static natomic_status_t get_balance(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                    void *closure)
{
    const Payments__GetBalanceRequest *req = (const Payments__GetBalanceRequest *)request;
    Payments__BalanceReply *out = (Payments__BalanceReply *)reply;
    payments_account_t now;
    int rc = payments_store_get(closure, req->customer, &now);
    if (rc != SQLITE_OK)
        return storage_error(ctx, "get_balance", rc);
    out->customer = req->customer;
    out->balance = now.balance;
    out->charged = now.charged;
    return NATOMIC_OK;
}

natomic_status_t payments_service_register(natomic_service_t *svc, struct sqlite3 *db)
{
    if (svc == NULL || db == NULL)
        return NATOMIC_EINVAL;
    int rc = payments_store_init(db);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "payments: cannot create the tables: %s\n", sqlite3_errmsg(db));
        return NATOMIC_ETRANSIENT;
    }
    natomic_status_t st = natomic_barrier_init(db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "deposit", deposit, 0, &payments__deposit_request__descriptor,
                                        &payments__balance_reply__descriptor, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "charge", charge, 0, &payments__charge_request__descriptor,
                                        &payments__charge_reply__descriptor, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "refund", refund, 0, &payments__refund_request__descriptor,
                                        &payments__refund_reply__descriptor, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "get_balance", get_balance, 0,
                                        &payments__get_balance_request__descriptor,
                                        &payments__balance_reply__descriptor, db);
    return st;
}
