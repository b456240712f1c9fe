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
 */
#include "conversions_service.h"

#include <inttypes.h>
#include <math.h>
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

natomic_status_t conversions_service_register(natomic_service_t *svc, conversions_store_t *store)
{
    return natomic_service_add_method(svc, "inches_to_cm", inches_to_cm,
                                      NATOMIC_ROLLBACK_ONCE_FAILED | NATOMIC_DISPATCH_AFTER_COMMIT,
                                      &conversions__inches_to_cm_request__descriptor,
                                      &conversions__inches_to_cm_reply__descriptor, store);
}
