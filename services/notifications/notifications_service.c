/*
 * notifications_service.c -- the consumer at the end of the saga.
 *
 *   events.orders.order_created (OrderCreated) -> one notification row
 *   notifications.list(ListRequest{customer}) -> ListReply{notifications}
 *
 * What it teaches: the receiving side of "dispatch after commit". orders
 * publishes order_created only after an order was confirmed, so this
 * service never has to undo anything -- but it must be idempotent: an
 * event can arrive twice (a retried dispatch publishes the same
 * Natomic-Event-Id again). The event id is the primary key and the order
 * id is unique, and the row is written with INSERT OR IGNORE, so a
 * duplicate changes nothing and there is never more than one notification
 * per order.
 *
 * Events come on core NATS in the queue group "notifications": each one
 * reaches one instance, and one that arrives while no instance runs is
 * lost (the durable outbox of DESIGN 3.7 is what fixes that).
 */
#include "notifications_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications.pb-c.h"
#include "notifications_store.h"
#include "orders.pb-c.h"
#include "request_fields.h"

#define MAX_TEXT 512

/* "Order ord-1 confirmed: 2 × book for 30.00" (amount in cents). */
static void format_text(char *buf, size_t cap, const Orders__OrderCreated *ev)
{
    long long cents = (long long)ev->amount;
    const char *sign = cents < 0 ? "-" : "";
    unsigned long long abs_cents = cents < 0 ? 0ULL - (unsigned long long)cents : (unsigned long long)cents;
    snprintf(buf, cap, "Order %s confirmed: %lld \u00d7 %s for %s%llu.%02llu", ev->order_id, (long long)ev->qty,
             ev->sku, sign, abs_cents / 100, abs_cents % 100);
}

/* Event handler: records the notification once; duplicates are not errors. */
static natomic_status_t on_order_created(natomic_ctx_t *ctx, const ProtobufCMessage *event, void *closure)
{
    const Orders__OrderCreated *ev = (const Orders__OrderCreated *)event;
    struct sqlite3 *db = closure;
    const char *event_id = natomic_ctx_event_id(ctx);
    if (*event_id == '\0')
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidEvent", "order_created without %s: cannot deduplicate",
                            NATOMIC_HDR_EVENT_ID);
    if (ev->order_id == NULL || *ev->order_id == '\0' || ev->customer == NULL || *ev->customer == '\0')
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidEvent", "order_created %s without order id or customer",
                            event_id);

    char text[MAX_TEXT], err[256];
    format_text(text, sizeof text, ev);
    int rc = notifications_store_add(db, event_id, ev->order_id, ev->customer, text, err, sizeof err);
    if (rc < 0)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "cannot record order %s: %s", ev->order_id,
                            err);
    if (rc > 0)
        fprintf(stderr, "notifications: order_created %s for order %s already recorded: skipped\n", event_id,
                ev->order_id);
    return NATOMIC_OK;
}

/* ---- list ------------------------------------------------------------- */

/* The reply under construction; every block lives in the call's arena. */
typedef struct list_builder {
    natomic_ctx_t *ctx;
    Notifications__Notification **items;
    size_t count;
    size_t cap;
    bool out_of_memory;
} list_builder_t;

static int add_row(void *user, const char *event_id, const char *order_id, const char *customer, const char *text,
                   const char *created_at)
{
    list_builder_t *b = user;
    if (b->count == b->cap) {
        /* The arena cannot realloc: copy into a twice larger block, the old one goes with the call. */
        size_t cap = b->cap != 0 ? b->cap * 2 : 16;
        Notifications__Notification **items = natomic_ctx_alloc(b->ctx, cap * sizeof *items);
        if (items == NULL) {
            b->out_of_memory = true;
            return 1;
        }
        if (b->count > 0)
            memcpy(items, b->items, b->count * sizeof *items);
        b->items = items;
        b->cap = cap;
    }
    Notifications__Notification *n = natomic_ctx_alloc(b->ctx, sizeof *n);
    if (n == NULL) {
        b->out_of_memory = true;
        return 1;
    }
    *n = (Notifications__Notification)NOTIFICATIONS__NOTIFICATION__INIT;
    n->event_id = natomic_ctx_strdup(b->ctx, event_id);
    n->order_id = natomic_ctx_strdup(b->ctx, order_id);
    n->customer = natomic_ctx_strdup(b->ctx, customer);
    n->text = natomic_ctx_strdup(b->ctx, text);
    n->created_at = natomic_ctx_strdup(b->ctx, created_at);
    if (n->event_id == NULL || n->order_id == NULL || n->customer == NULL || n->text == NULL ||
        n->created_at == NULL) {
        b->out_of_memory = true;
        return 1;
    }
    b->items[b->count++] = n;
    return 0;
}

static natomic_status_t list(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                             void *closure)
{
    const Notifications__ListRequest *req = (const Notifications__ListRequest *)request;
    Notifications__ListReply *out = (Notifications__ListReply *)reply;
    struct sqlite3 *db = closure;
    if (request_text(ctx, "customer", req->customer) != NATOMIC_OK)
        return NATOMIC_EBADINPUT;

    list_builder_t b = {.ctx = ctx};
    char err[256];
    if (notifications_store_list(db, req->customer, add_row, &b, err, sizeof err) != 0)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "cannot list notifications of %s: %s",
                            req->customer, err);
    if (b.out_of_memory)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "OutOfMemory", "out of memory listing %s", req->customer);
    out->n_notifications = b.count;
    out->notifications = b.items;
    return NATOMIC_OK;
}

natomic_status_t notifications_service_register(natomic_service_t *svc, struct sqlite3 *db)
{
    if (svc == NULL || db == NULL)
        return NATOMIC_EINVAL;
    natomic_status_t st = natomic_service_add_event_handler(svc, "orders", "order_created", on_order_created,
                                                            &orders__order_created__descriptor, db);
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "list", list, 0, &notifications__list_request__descriptor,
                                        &notifications__list_reply__descriptor, db);
    return st;
}
