/*
 * conversions_service.c -- the seed's hello world, in C.
 *
 * What it teaches: the two halves of nameko-atomicity on one method.
 *
 *   conversions.inches_to_cm(InchesToCmRequest{inches}) -> InchesToCmReply{cm}
 *
 * The handler saves the conversion in its SQLite history, then registers
 *   - a rollback command that deletes that row again (run only if the
 *     call fails: NATOMIC_ROLLBACK_ONCE_FAILED), and
 *   - a dispatch command that publishes events.conversions.converted
 *     (run only after the call succeeded: NATOMIC_DISPATCH_AFTER_COMMIT).
 *
 * A negative length is saved first and refused afterwards, on purpose:
 * the call fails with error type `InvalidLength`, the rollback deletes the
 * row, the reply says `Natomic-Rollback: complete`, and no event leaves.
 * Saving before validating is what real handlers do by accident; the
 * rollback is what makes it harmless.
 *
 * Two more methods exist for the lab, to test natomic_rollback_insert()
 * from outside:
 *
 *   conversions.inches_to_cm_batch(InchesToCmBatchRequest{inches[]})
 *       -> InchesToCmBatchReply{cm[]}
 *   conversions.forget(ForgetRequest{conversion_id}) -> ForgetReply
 *
 * The batch saves every length, in order, and registers the undo of each
 * row with natomic_rollback_insert(ctx, 0, ...): at the head of the list,
 * which runs last. So a failed batch (a negative length, refused after the
 * saves like inches_to_cm) is undone in the order it was saved -- oldest
 * first, the reverse of what appending gives. Each undo is a call to
 * conversions.forget (Natomic-Phase: rollback), so the order it ran in is
 * visible on the wire. A successful batch publishes one converted event
 * per length, in order.
 */
#include "conversions_service.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "conversions.pb-c.h"

#define CM_PER_INCH 2.54

typedef struct saved_row {
    conversions_store_t *store;
    int64_t id;
} saved_row_t;

/* Rollback command: delete the row this call saved. Idempotent. */
static natomic_status_t delete_saved_row(natomic_ctx_t *ctx, void *arg)
{
    saved_row_t *row = arg;
    if (conversions_store_delete(row->store, row->id) != 0) {
        fprintf(stderr, "conversions: rollback of conversion #%" PRId64 " failed: %s\n", row->id,
                conversions_store_error(row->store));
        return NATOMIC_ETRANSIENT;
    }
    fprintf(stderr, "conversions: rolled back conversion #%" PRId64 " (tx %s)\n", row->id, natomic_ctx_tx(ctx));
    return NATOMIC_OK;
}

static natomic_status_t inches_to_cm(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                     void *closure)
{
    const Conversions__InchesToCmRequest *req = (const Conversions__InchesToCmRequest *)request;
    Conversions__InchesToCmReply *out = (Conversions__InchesToCmReply *)reply;
    conversions_store_t *store = closure;

    if (!isfinite(req->inches))
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidLength", "length must be a finite number");
    double cm = req->inches * CM_PER_INCH;

    int64_t id = 0;
    if (conversions_store_save(store, natomic_ctx_tx(ctx), req->inches, cm, &id) != 0)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "could not save: %s",
                            conversions_store_error(store));

    saved_row_t *row = malloc(sizeof *row);
    if (row == NULL)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "OutOfMemory", "out of memory");
    *row = (saved_row_t){store, id};
    natomic_status_t st = natomic_rollback_append(ctx, "delete conversion", delete_saved_row, row, free);
    if (st != NATOMIC_OK) {
        conversions_store_delete(store, id);
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "InternalError", "cannot register rollback: %s",
                            natomic_strerror(st));
    }

    Conversions__Converted event = CONVERSIONS__CONVERTED__INIT;
    event.inches = req->inches;
    event.cm = cm;
    event.conversion_id = id;
    st = natomic_dispatch_event(ctx, "converted", &event.base);
    if (st != NATOMIC_OK)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "InternalError", "cannot register event: %s",
                            natomic_strerror(st));

    /* Validation after the save, on purpose: see the comment at the top. */
    if (req->inches < 0)
        return natomic_fail(ctx, NATOMIC_EBUSINESS, "InvalidLength", "length must not be negative, got %g inches",
                            req->inches);

    out->cm = cm;
    return NATOMIC_OK;
}

/* ---- the batch: natomic_rollback_insert() seen from outside --------------- */

/* Rollback command of the batch: asks conversions.forget to delete one saved row. */
static natomic_status_t forget_saved_row(natomic_ctx_t *ctx, void *arg)
{
    const saved_row_t *row = arg;
    Conversions__ForgetRequest req = CONVERSIONS__FORGET_REQUEST__INIT;
    req.conversion_id = row->id;
    ProtobufCMessage *reply = NULL;
    natomic_status_t st = natomic_ctx_request(&reply, ctx, "conversions.forget", &req.base,
                                              &conversions__forget_reply__descriptor, NULL);
    protobuf_c_message_free_unpacked(reply, NULL);
    return st;
}

static natomic_status_t inches_to_cm_batch(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                           ProtobufCMessage *reply, void *closure)
{
    const Conversions__InchesToCmBatchRequest *req = (const Conversions__InchesToCmBatchRequest *)request;
    Conversions__InchesToCmBatchReply *out = (Conversions__InchesToCmBatchReply *)reply;
    conversions_store_t *store = closure;

    if (req->n_inches == 0)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidLength", "the batch holds no length");
    out->cm = natomic_ctx_alloc(ctx, req->n_inches * sizeof *out->cm);
    if (out->cm == NULL)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "OutOfMemory", "out of memory");
    bool negative = false;
    for (size_t i = 0; i < req->n_inches; i++) {
        double inches = req->inches[i];
        if (!isfinite(inches))
            return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidLength", "length %zu is not a finite number", i);
        double cm = inches * CM_PER_INCH;
        int64_t id = 0;
        if (conversions_store_save(store, natomic_ctx_tx(ctx), inches, cm, &id) != 0)
            return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "could not save: %s",
                                conversions_store_error(store));
        saved_row_t *row = malloc(sizeof *row);
        if (row == NULL) {
            conversions_store_delete(store, id);
            return natomic_fail(ctx, NATOMIC_EINTERNAL, "OutOfMemory", "out of memory");
        }
        *row = (saved_row_t){store, id};
        /* At the head: this undo runs after every one registered before it. */
        natomic_status_t st = natomic_rollback_insert(ctx, 0, "forget conversion", forget_saved_row, row, free);
        if (st != NATOMIC_OK) {
            conversions_store_delete(store, id);
            return natomic_fail(ctx, NATOMIC_EINTERNAL, "InternalError", "cannot register rollback: %s",
                                natomic_strerror(st));
        }
        Conversions__Converted event = CONVERSIONS__CONVERTED__INIT;
        event.inches = inches;
        event.cm = cm;
        event.conversion_id = id;
        st = natomic_dispatch_event(ctx, "converted", &event.base);
        if (st != NATOMIC_OK)
            return natomic_fail(ctx, NATOMIC_EINTERNAL, "InternalError", "cannot register event: %s",
                                natomic_strerror(st));
        out->cm[i] = cm;
        negative = negative || inches < 0;
    }
    out->n_cm = req->n_inches;
    /* Validation after the saves, as in inches_to_cm. */
    if (negative)
        return natomic_fail(ctx, NATOMIC_EBUSINESS, "InvalidLength", "a length of the batch is negative");
    return NATOMIC_OK;
}

/* Deletes one saved conversion; idempotent (a row already gone is forgotten). */
static natomic_status_t forget(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                               void *closure)
{
    const Conversions__ForgetRequest *req = (const Conversions__ForgetRequest *)request;
    Conversions__ForgetReply *out = (Conversions__ForgetReply *)reply;
    conversions_store_t *store = closure;
    if (conversions_store_delete(store, req->conversion_id) != 0)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "could not forget conversion #%" PRId64 ": %s",
                            req->conversion_id, conversions_store_error(store));
    fprintf(stderr, "conversions: forgot conversion #%" PRId64 " (tx %s)\n", req->conversion_id, natomic_ctx_tx(ctx));
    out->conversion_id = req->conversion_id;
    return NATOMIC_OK;
}

natomic_status_t conversions_service_register(natomic_service_t *svc, conversions_store_t *store)
{
    natomic_status_t st = natomic_service_add_method(svc, "inches_to_cm", inches_to_cm,
                                                     NATOMIC_ROLLBACK_ONCE_FAILED | NATOMIC_DISPATCH_AFTER_COMMIT,
                                                     &conversions__inches_to_cm_request__descriptor,
                                                     &conversions__inches_to_cm_reply__descriptor, store);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "inches_to_cm_batch", inches_to_cm_batch,
                                        NATOMIC_ROLLBACK_ONCE_FAILED | NATOMIC_DISPATCH_AFTER_COMMIT,
                                        &conversions__inches_to_cm_batch_request__descriptor,
                                        &conversions__inches_to_cm_batch_reply__descriptor, store);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "forget", forget, 0, &conversions__forget_request__descriptor,
                                        &conversions__forget_reply__descriptor, store);
    return st;
}
