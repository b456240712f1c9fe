/*
 * orders_service.c -- the saga orchestrator.
 *
 *   orders.create_order(CreateOrderRequest{customer, sku, qty, amount})
 *       -> OrderReply{order_id, status "confirmed", ...}
 *   orders.get_order(GetOrderRequest{order_id}) -> OrderReply
 *
 * create_order is the classic order saga, written as straight-line code:
 *
 *   1. validate                      (InvalidRequest, nothing written)
 *   2. INSERT the order 'pending'    rollback: mark it 'cancelled'
 *   3. inventory.reserve             rollback: inventory.release
 *   4. payments.charge               rollback: payments.refund
 *   5. UPDATE the order 'confirmed'  with the event and the decision, in
 *                                    one transaction (natomic_durable_commit)
 *   6. order_created                 registered before step 5 commits,
 *                                    published after the call succeeded
 *
 * Every rollback command is registered BEFORE the step it undoes
 * (natomic_saga_step registers the compensation, then sends the forward
 * call). If any later step fails, the handler just returns the failure;
 * the runtime then runs the registered commands in reverse order --
 * refund, release, cancel -- and only then replies with the original
 * error. Why "before": a forward call that times out may still have
 * committed on the other side, so its compensation must run anyway; the
 * participant's barrier (DESIGN 3.6) turns a compensation for an action
 * that never happened into a recorded no-op. The compensations run in the
 * transaction of this call (its Natomic-Tx), which is what the barrier
 * keys on.
 *
 * Invariants this file keeps:
 *   - an out-of-stock order never reaches payments (step 4 never runs);
 *   - order_created leaves only for a confirmed order, exactly once per
 *     successful call (dispatch commands are dropped on failure);
 *   - the caller of a failed order sees the participant's own error kind
 *     and type (OutOfStock, PaymentDeclined, Timeout, ...) with the order
 *     id in the message, so it can look the cancelled order up.
 *
 * The same code runs in both modes (DESIGN 3.7). In memory mode, if this
 * process dies between steps 2 and 5 the order stays 'pending' and its
 * compensations are lost with the process. In durable mode every
 * compensation is in the saga log before its step: "cancel the order" is
 * the named command "orders.cancel" with the order id as payload (a
 * function pointer would not survive the crash), registered before the
 * order is even written; the two remote ones are written by
 * natomic_saga_step before the request leaves. Step 5 confirms the order
 * and calls natomic_durable_commit in the same SQLite transaction, so the
 * confirmation, the order_created event (the outbox) and the call's
 * decision commit together. If the process dies, recovery -- this
 * process restarted, or another orders instance -- refunds, releases and
 * cancels, and the order never stays pending (docs/durable.md).
 */
#include "orders_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory.pb-c.h"
#include "orders.pb-c.h"
#include "orders_store.h"
#include "payments.pb-c.h"
#include "request_fields.h"
#include "sqlite_tx.h"

#include <sqlite3.h>


static bool is_error_kind(natomic_status_t st)
{
    return st >= NATOMIC_EBADINPUT && st <= NATOMIC_EINTERNAL;
}


/* ---- rollback command: cancel the order ------------------------------- */

#define CANCEL_COMMAND "orders.cancel"

/*
 * The named command "orders.cancel": marks the order whose id is the
 * payload 'cancelled' (from whatever it was; a missing order -- the crash
 * came before it was written -- is nothing to cancel). Idempotent: a retry
 * finds it cancelled. Runs in the call that registered it, or after a
 * crash in whichever instance recovers the saga.
 */
static natomic_status_t cancel_order(natomic_ctx_t *ctx, const void *data, size_t len, void *closure)
{
    struct sqlite3 *db = closure;
    char order_id[REQUEST_TEXT_MAX + 8];
    if (len == 0 || len >= sizeof order_id)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "orders.cancel: bad order id");
    memcpy(order_id, data, len);
    order_id[len] = '\0';
    char err[256];
    int changed = orders_store_set_status(db, order_id, "cancelled", NULL, err, sizeof err);
    if (changed < 0) {
        fprintf(stderr, "orders: cannot cancel order %s (tx %s): %s\n", order_id, natomic_ctx_tx(ctx), err);
        return NATOMIC_ETRANSIENT;
    }
    fprintf(stderr, "orders: order %s %s (tx %s)\n", order_id, changed > 0 ? "cancelled" : "already cancelled or never saved",
            natomic_ctx_tx(ctx));
    return NATOMIC_OK;
}

/* Step 5: 'pending' -> 'confirmed' and, in the same transaction, what the call commits with it. */
static natomic_status_t confirm_order(natomic_ctx_t *ctx, struct sqlite3 *db, const char *order_id)
{
    char err[256];
    if (sqlite_tx_begin(db) != 0)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "order %s: cannot confirm: %s", order_id,
                            sqlite3_errmsg(db));
    int rc = orders_store_set_status(db, order_id, "confirmed", "pending", err, sizeof err);
    if (rc != 1) {
        sqlite_tx_rollback(db);
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "order %s: cannot confirm: %s", order_id,
                            rc < 0 ? err : "it is no longer pending");
    }
    natomic_status_t st = natomic_durable_commit(ctx, db);
    if (st != NATOMIC_OK) {
        sqlite_tx_rollback(db);
        if (st == NATOMIC_ENOTOWNER) /* recovery is compensating this order: it will be cancelled */
            return natomic_fail(ctx, NATOMIC_ETRANSIENT, "TakenOver", "order %s: taken over by recovery", order_id);
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "order %s: cannot commit: %s", order_id,
                            natomic_strerror(st));
    }
    if (sqlite_tx_commit(db) != 0)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "order %s: cannot commit its confirmation",
                            order_id);
    return NATOMIC_OK;
}

/*
 * Fails the call after a failed saga step, keeping the participant's
 * error kind and type; local failures (no responders, undecodable reply)
 * get a kind and type of their own. Returns the kind.
 */
static natomic_status_t fail_step(natomic_ctx_t *ctx, const char *order_id, const char *subject, natomic_status_t st,
                                  const natomic_call_info_t *info)
{
    natomic_status_t kind;
    const char *type;
    if (is_error_kind(info->kind) || is_error_kind(st)) {
        kind = is_error_kind(info->kind) ? info->kind : st;
        type = kind == NATOMIC_ETIMEOUT ? "Timeout" : "RemoteError";
    } else if (st == NATOMIC_ENORESPONDERS || st == NATOMIC_ENATS || st == NATOMIC_ELOG) {
        /* Nobody to call, or (durable) the saga log could not be written: nothing was sent. */
        kind = NATOMIC_ETRANSIENT;
        type = "Unavailable";
    } else if (st == NATOMIC_ENOTOWNER) {
        kind = NATOMIC_ETRANSIENT;
        type = "TakenOver";
    } else if (st == NATOMIC_EBADREPLY) {
        kind = NATOMIC_EINTERNAL;
        type = "BadReply";
    } else {
        kind = NATOMIC_EINTERNAL;
        type = "InternalError";
    }
    if (info->type[0] != '\0')
        type = info->type;
    const char *message = info->message[0] != '\0' ? info->message : natomic_strerror(st);
    fprintf(stderr, "orders: order %s: %s failed with %s: %s (tx %s); compensating\n", order_id, subject, type,
            message, natomic_ctx_tx(ctx));
    return natomic_fail(ctx, kind, type, "order %s: %s", order_id, message);
}

/* ---- create_order ------------------------------------------------------ */

static natomic_status_t create_order(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                     void *closure)
{
    const Orders__CreateOrderRequest *req = (const Orders__CreateOrderRequest *)request;
    Orders__OrderReply *out = (Orders__OrderReply *)reply;
    struct sqlite3 *db = closure;

    /* 1. Validate: a bad request writes nothing and calls nobody. */
    natomic_status_t st = request_text(ctx, "customer", req->customer);
    if (st == NATOMIC_OK)
        st = request_text(ctx, "sku", req->sku);
    if (st != NATOMIC_OK)
        return st;
    if (req->qty <= 0)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "qty must be > 0, got %lld",
                            (long long)req->qty);
    if (req->amount <= 0)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "amount must be > 0 cents, got %lld",
                            (long long)req->amount);

    /* 2. The order exists here before anyone downstream hears of it. Its cancel is
          registered first -- before the row, as every compensation comes before its
          step -- so it runs last, after the remote compensations. */
    const char *call_id = natomic_ctx_call_id(ctx);
    size_t id_len = strlen("ord-") + strlen(call_id);
    char *order_id = natomic_ctx_alloc(ctx, id_len + 1);
    if (order_id == NULL)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "OutOfMemory", "out of memory");
    snprintf(order_id, id_len + 1, "ord-%s", call_id);
    st = natomic_rollback_append_durable(ctx, CANCEL_COMMAND, order_id, id_len);
    if (st != NATOMIC_OK) /* durable: the saga log could not be written; nothing was saved */
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "Unavailable", "order %s: cannot register its rollback: %s",
                            order_id, natomic_strerror(st));

    char err[256];
    int rc = orders_store_insert_pending(db, order_id, req->customer, req->sku, req->qty, req->amount,
                                         natomic_ctx_tx(ctx), err, sizeof err);
    if (rc != 0) {
        if (rc > 0) /* call ids are random 128-bit: this is a bug, not bad luck */
            return natomic_fail(ctx, NATOMIC_EINTERNAL, "InternalError", "order %s exists already", order_id);
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "cannot save order %s: %s", order_id, err);
    }

    /* 3. Reserve the stock; release it if anything later fails. */
    Inventory__ReserveRequest reserve = INVENTORY__RESERVE_REQUEST__INIT;
    reserve.order_id = order_id;
    reserve.sku = req->sku;
    reserve.qty = req->qty;
    Inventory__ReleaseRequest release = INVENTORY__RELEASE_REQUEST__INIT;
    release.order_id = order_id;
    natomic_call_info_t info;
    memset(&info, 0, sizeof info);
    ProtobufCMessage *answer = NULL;
    st = natomic_saga_step(&answer, ctx, "inventory.reserve", &reserve.base, &inventory__reserve_reply__descriptor,
                           "inventory.release", &release.base, &info);
    if (st != NATOMIC_OK)
        return fail_step(ctx, order_id, "inventory.reserve", st, &info);
    protobuf_c_message_free_unpacked(answer, NULL);
    /* Between the steps: where an orchestrator crash hurts memory mode most. */
    if (NATOMIC_FAULT("orders/create_order/after_reserve") == NATOMIC_FAULT_ERROR)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "InjectedFault", "order %s: fault after reserve", order_id);

    /* 4. Charge the customer; refund if anything later fails. */
    Payments__ChargeRequest charge = PAYMENTS__CHARGE_REQUEST__INIT;
    charge.order_id = order_id;
    charge.customer = req->customer;
    charge.amount = req->amount;
    Payments__RefundRequest refund = PAYMENTS__REFUND_REQUEST__INIT;
    refund.order_id = order_id;
    memset(&info, 0, sizeof info);
    answer = NULL;
    st = natomic_saga_step(&answer, ctx, "payments.charge", &charge.base, &payments__charge_reply__descriptor,
                           "payments.refund", &refund.base, &info);
    if (st != NATOMIC_OK)
        return fail_step(ctx, order_id, "payments.charge", st, &info);
    protobuf_c_message_free_unpacked(answer, NULL);
    if (NATOMIC_FAULT("orders/create_order/after_charge") == NATOMIC_FAULT_ERROR)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "InjectedFault", "order %s: fault after charge", order_id);

    /* 6. Announce it -- published only once the call has succeeded (durable: from the
          outbox, written with the confirmation). Registered before step 5 commits. */
    Orders__OrderCreated event = ORDERS__ORDER_CREATED__INIT;
    event.order_id = order_id;
    event.customer = req->customer;
    event.sku = req->sku;
    event.qty = req->qty;
    event.amount = req->amount;
    st = natomic_dispatch_event(ctx, "order_created", &event.base);
    if (st != NATOMIC_OK)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "InternalError", "order %s: cannot register order_created: %s",
                            order_id, natomic_strerror(st));

    /* The reply, filled before the commit: an idempotency key replays it as it is now.
       The request lives until the call ends; order_id is in the call's arena. */
    out->order_id = order_id;
    out->status = natomic_ctx_strdup(ctx, "confirmed");
    out->customer = req->customer;
    out->sku = req->sku;
    out->qty = req->qty;
    out->amount = req->amount;
    if (out->status == NULL)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "OutOfMemory", "out of memory");

    /* 5. Confirm: the local commit the event waits for. */
    return confirm_order(ctx, db, order_id);
}

/* ---- get_order --------------------------------------------------------- */

static natomic_status_t get_order(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                  void *closure)
{
    const Orders__GetOrderRequest *req = (const Orders__GetOrderRequest *)request;
    Orders__OrderReply *out = (Orders__OrderReply *)reply;
    struct sqlite3 *db = closure;

    natomic_status_t st = request_text(ctx, "order_id", req->order_id);
    if (st != NATOMIC_OK)
        return st;
    order_row_t row;
    char err[256];
    int rc = orders_store_get(db, req->order_id, &row, err, sizeof err);
    if (rc > 0)
        return natomic_fail(ctx, NATOMIC_EBUSINESS, "UnknownOrder", "no order %s", req->order_id);
    if (rc < 0)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "cannot read order %s: %s", req->order_id, err);
    out->order_id = natomic_ctx_strdup(ctx, row.order_id);
    out->status = natomic_ctx_strdup(ctx, row.status);
    out->customer = natomic_ctx_strdup(ctx, row.customer);
    out->sku = natomic_ctx_strdup(ctx, row.sku);
    out->qty = row.qty;
    out->amount = row.amount;
    orders_store_row_free(&row);
    if (out->order_id == NULL || out->status == NULL || out->customer == NULL || out->sku == NULL)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "OutOfMemory", "out of memory");
    return NATOMIC_OK;
}

natomic_status_t orders_service_register(natomic_service_t *svc, struct sqlite3 *db)
{
    if (svc == NULL || db == NULL)
        return NATOMIC_EINVAL;
    natomic_status_t st = natomic_command_register(svc, CANCEL_COMMAND, cancel_order, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(
        svc, "create_order", create_order, NATOMIC_ROLLBACK_ONCE_FAILED | NATOMIC_DISPATCH_AFTER_COMMIT,
        &orders__create_order_request__descriptor, &orders__order_reply__descriptor, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "get_order", get_order, 0, &orders__get_order_request__descriptor,
                                        &orders__order_reply__descriptor, db);
    return st;
}
