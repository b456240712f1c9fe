/*
 * inventory_service.c -- the inventory methods of the order saga.
 *
 *   inventory.restock(RestockRequest{sku, qty})        -> StockReply
 *   inventory.reserve(ReserveRequest{order_id, sku, qty}) -> ReserveReply
 *   inventory.release(ReleaseRequest{order_id})        -> ReleaseReply
 *   inventory.get_stock(GetStockRequest{sku})          -> StockReply
 *
 * reserve is a saga action and release its compensation. Both run through
 * the barrier (natomic_barrier_run), with the order id as the branch, so
 * whatever the network does the stock moves at most once per transaction:
 *   - a duplicate reserve (same Natomic-Tx) replies "duplicate" and takes
 *     nothing more;
 *   - a release whose reserve never ran replies "null_compensation" and
 *     returns nothing -- and blocks that reserve for good;
 *   - a reserve arriving after its release fails with TransactionAborted
 *     instead of leaving a reservation nobody will ever release.
 * A reserve that fails (OutOfStock) rolls back with its barrier row, so a
 * later release in the same transaction is a null compensation.
 * release never fails for a missing reservation: a compensation must be
 * safe to send whenever the caller is in doubt.
 *
 * Errors: InvalidRequest (400, or 422 for an order that already holds a
 * reservation from another transaction), OutOfStock (422),
 * TransactionAborted (422), StorageError (503: SQLite failed, retry).
 */
#include "inventory_service.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>

#include "inventory.pb-c.h"
#include "inventory_store.h"
#include "request_fields.h"

/* What a barrier body needs: the call (to fail it) and the request. */
typedef struct barrier_call {
    natomic_ctx_t *ctx;
    const char *order_id;
    const char *sku;
    int64_t qty;
    int64_t result;    /* reserve: available after; release: quantity released */
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

static natomic_status_t restock(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                void *closure)
{
    const Inventory__RestockRequest *req = (const Inventory__RestockRequest *)request;
    Inventory__StockReply *out = (Inventory__StockReply *)reply;
    sqlite3 *db = closure;

    if (request_text(ctx, "sku", req->sku) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;
    if (req->qty <= 0)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "qty must be positive, got %" PRId64,
                            req->qty);
    inventory_stock_t after;
    int overflow = 0;
    int rc = inventory_store_restock(db, req->sku, req->qty, &after, &overflow);
    if (rc != SQLITE_OK)
        return storage_error(ctx, "restock", rc);
    if (overflow)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "restocking %" PRId64 " of %s would overflow",
                            req->qty, req->sku);
    out->sku = req->sku;
    out->available = after.available;
    out->reserved = after.reserved;
    return NATOMIC_OK;
}

/* Barrier body of reserve: runs in the barrier's transaction, holding the connection's mutex. */
static natomic_status_t reserve_body(sqlite3 *db, void *arg)
{
    barrier_call_t *call = arg;
    inventory_reserve_result_t result = INVENTORY_RESERVED;
    int64_t available = 0;
    int rc = inventory_store_reserve(db, call->order_id, call->sku, call->qty, natomic_ctx_tx(call->ctx), &result,
                                     &available);
    if (rc != SQLITE_OK)
        return storage_error(call->ctx, "reserve", rc);
    switch (result) {
    case INVENTORY_RESERVED:
        call->result = available;
        return NATOMIC_OK;
    case INVENTORY_OUT_OF_STOCK:
        return natomic_fail(call->ctx, NATOMIC_EBUSINESS, "OutOfStock",
                            "only %" PRId64 " of %s available, %" PRId64 " requested", available, call->sku,
                            call->qty);
    case INVENTORY_UNKNOWN_SKU:
        return natomic_fail(call->ctx, NATOMIC_EBUSINESS, "OutOfStock", "unknown sku %s", call->sku);
    case INVENTORY_ALREADY_RESERVED:
        break;
    }
    return natomic_fail(call->ctx, NATOMIC_EBUSINESS, "InvalidRequest", "order %s already has a reservation",
                        call->order_id);
}

static natomic_status_t reserve(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                void *closure)
{
    const Inventory__ReserveRequest *req = (const Inventory__ReserveRequest *)request;
    Inventory__ReserveReply *out = (Inventory__ReserveReply *)reply;
    sqlite3 *db = closure;

    if (request_text(ctx, "order_id", req->order_id) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;
    if (request_text(ctx, "sku", req->sku) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;
    if (req->qty <= 0)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "qty must be positive, got %" PRId64,
                            req->qty);

    barrier_call_t call = {ctx, req->order_id, req->sku, req->qty, 0};
    natomic_barrier_outcome_t outcome;
    natomic_status_t st =
        natomic_barrier_run(&outcome, ctx, db, req->order_id, NATOMIC_BARRIER_ACTION, reserve_body, &call);
    if (st != NATOMIC_OK)
        return st;
    if (outcome == NATOMIC_BARRIER_REFUSED_LATE)
        return natomic_fail(ctx, NATOMIC_EBUSINESS, "TransactionAborted",
                            "order %s was already released: late reserve refused", req->order_id);
    if (outcome == NATOMIC_BARRIER_DUPLICATE) {
        /* Applied before: report the stock as it is now. */
        inventory_stock_t now;
        int rc = inventory_store_get(db, req->sku, &now);
        if (rc != SQLITE_OK)
            return storage_error(ctx, "get_stock", rc);
        call.result = now.available;
    }
    out->order_id = req->order_id;
    out->outcome = outcome_text(outcome);
    out->available = call.result;
    return NATOMIC_OK;
}

/* Barrier body of release: returns what the reservation took, if it is still held. */
static natomic_status_t release_body(sqlite3 *db, void *arg)
{
    barrier_call_t *call = arg;
    int rc = inventory_store_release(db, call->order_id, natomic_ctx_tx(call->ctx), &call->result);
    if (rc != SQLITE_OK)
        return storage_error(call->ctx, "release", rc);
    return NATOMIC_OK;
}

static natomic_status_t release(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                void *closure)
{
    const Inventory__ReleaseRequest *req = (const Inventory__ReleaseRequest *)request;
    Inventory__ReleaseReply *out = (Inventory__ReleaseReply *)reply;
    sqlite3 *db = closure;

    if (request_text(ctx, "order_id", req->order_id) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;
    barrier_call_t call = {ctx, req->order_id, NULL, 0, 0};
    natomic_barrier_outcome_t outcome;
    natomic_status_t st =
        natomic_barrier_run(&outcome, ctx, db, req->order_id, NATOMIC_BARRIER_COMPENSATION, release_body, &call);
    if (st != NATOMIC_OK)
        return st;
    out->order_id = req->order_id;
    out->outcome = outcome_text(outcome);
    out->released = call.result; /* 0 unless the body ran and found a held reservation */
    return NATOMIC_OK;
}

static natomic_status_t get_stock(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                  void *closure)
{
    const Inventory__GetStockRequest *req = (const Inventory__GetStockRequest *)request;
    Inventory__StockReply *out = (Inventory__StockReply *)reply;
    inventory_stock_t now;
    int rc = inventory_store_get(closure, req->sku, &now);
    if (rc != SQLITE_OK)
        return storage_error(ctx, "get_stock", rc);
    out->sku = req->sku;
    out->available = now.available;
    out->reserved = now.reserved;
    return NATOMIC_OK;
}

natomic_status_t inventory_service_register(natomic_service_t *svc, struct sqlite3 *db)
{
    if (svc == NULL || db == NULL)
        return NATOMIC_EINVAL;
    int rc = inventory_store_init(db);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "inventory: cannot create the tables: %s\n", sqlite3_errmsg(db));
        return NATOMIC_ETRANSIENT;
    }
    natomic_status_t st = natomic_barrier_init(db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "restock", restock, 0, &inventory__restock_request__descriptor,
                                        &inventory__stock_reply__descriptor, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "reserve", reserve, 0, &inventory__reserve_request__descriptor,
                                        &inventory__reserve_reply__descriptor, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "release", release, 0, &inventory__release_request__descriptor,
                                        &inventory__release_reply__descriptor, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "get_stock", get_stock, 0, &inventory__get_stock_request__descriptor,
                                        &inventory__stock_reply__descriptor, db);
    return st;
}
