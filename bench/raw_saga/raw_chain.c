/*
 * raw_chain.c -- the bare chain: the order saga's messages with nothing
 * stored, so that the benchmark can show what the message path alone costs
 * and, against the hand-written saga, what its storage does.
 *
 *   client -> chain-a.create_order (CreateOrderRequest -> OrderReply)
 *               chain-a -> chain-b.reserve (ReserveRequest -> ReserveReply)
 *               chain-a -> chain-c.charge  (ChargeRequest  -> ChargeReply)
 *               chain-a publishes events.chain.order_created (OrderCreated)
 *
 * The same messages as raw_orders.c sends and receives, field for field
 * and header for header (Natomic-Tx, Natomic-Deadline-Ms on the requests;
 * Natomic-Event-Id on the event; an "ord-" id of the same length), on the
 * same runtime (raw_service.c: workers, queue subscription, connection
 * options), one after the other as the saga makes them. What is missing
 * is exactly the storage: no order row, no barrier, no stock or balance,
 * no confirm, no notification written (nobody listens to the event), and
 * hence no undo. chain-b and chain-c answer with a counter where the
 * participants answer with what is left of the stock and the money.
 *
 * Failure: a failed request fails the call with the callee's error, as
 * create_order does, with nothing to undo.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory.pb-c.h"
#include "orders.pb-c.h"
#include "payments.pb-c.h"
#include "raw_roles.h"

#define ORDER_ID_CAP (4 + RAW_ID_LEN + 1)
#define DEADLINE_MARGIN_MAX_MS 200
#define COUNTER_START 1000000 /* a figure of the size the participants answer with */

/* The state of every chain role: what B and C count down in their replies. */
typedef struct chain {
    atomic_llong left;
} chain_t;

/* One request to the next link; 0, or -1 after failing the call with the callee's error. */
static int forward(raw_call_t *call, const char *subject, const ProtobufCMessage *request,
                   const ProtobufCMessageDescriptor *reply_desc, const char *order_id)
{
    int64_t left = call->deadline_ms - raw_now_ms();
    int64_t margin = left / 10 < DEADLINE_MARGIN_MAX_MS ? left / 10 : DEADLINE_MARGIN_MAX_MS;
    raw_remote_error_t err = {0};
    ProtobufCMessage *answer = NULL;
    if (raw_request(&answer, raw_service_connection(call->svc), subject, request, reply_desc, call->tx, left - margin,
                    &err) != 0) {
        raw_fail(call, err.code, err.type[0] != '\0' ? err.type : "RemoteError", "order %s: %s: %s", order_id,
                 subject, err.message);
        return -1;
    }
    protobuf_c_message_free_unpacked(answer, NULL);
    return 0;
}

static void chain_order(raw_call_t *call, const Orders__CreateOrderRequest *req)
{
    if (*req->customer == '\0' || *req->sku == '\0' || strlen(req->customer) > RAW_MAX_FIELD_LEN ||
        strlen(req->sku) > RAW_MAX_FIELD_LEN || req->qty <= 0 || req->amount <= 0) {
        raw_fail(call, 400, "InvalidRequest", "customer and sku must be 1 to %d bytes, qty and amount > 0",
                 RAW_MAX_FIELD_LEN);
        return;
    }
    char order_id[ORDER_ID_CAP] = "ord-";
    raw_id_new(order_id + 4);

    Inventory__ReserveRequest reserve = INVENTORY__RESERVE_REQUEST__INIT;
    reserve.order_id = order_id;
    reserve.sku = req->sku;
    reserve.qty = req->qty;
    if (forward(call, "chain-b.reserve", &reserve.base, &inventory__reserve_reply__descriptor, order_id) != 0)
        return;
    Payments__ChargeRequest charge = PAYMENTS__CHARGE_REQUEST__INIT;
    charge.order_id = order_id;
    charge.customer = req->customer;
    charge.amount = req->amount;
    if (forward(call, "chain-c.charge", &charge.base, &payments__charge_reply__descriptor, order_id) != 0)
        return;

    Orders__OrderCreated event = ORDERS__ORDER_CREATED__INIT;
    event.order_id = order_id;
    event.customer = req->customer;
    event.sku = req->sku;
    event.qty = req->qty;
    event.amount = req->amount;
    natsStatus s =
        raw_publish_event(raw_service_connection(call->svc), "events.chain.order_created", "order_created", call->tx,
                          &event.base);
    if (s != NATS_OK)
        fprintf(stderr, "chain-a: order %s: event not published: %s\n", order_id, natsStatus_GetText(s));
    Orders__OrderReply out = ORDERS__ORDER_REPLY__INIT;
    out.order_id = order_id;
    out.status = (char *)"confirmed";
    out.customer = req->customer;
    out.sku = req->sku;
    out.qty = req->qty;
    out.amount = req->amount;
    raw_reply(call, &out.base);
}

static void create_order(raw_call_t *call, void *state)
{
    (void)state;
    Orders__CreateOrderRequest *req = raw_unpack(call, &orders__create_order_request__descriptor);
    if (req == NULL)
        return;
    chain_order(call, req);
    orders__create_order_request__free_unpacked(req, NULL);
}

static void reserve(raw_call_t *call, void *state)
{
    chain_t *c = state;
    Inventory__ReserveRequest *req = raw_unpack(call, &inventory__reserve_request__descriptor);
    if (req == NULL)
        return;
    Inventory__ReserveReply out = INVENTORY__RESERVE_REPLY__INIT;
    out.order_id = req->order_id;
    out.outcome = (char *)"executed";
    out.available = (int64_t)atomic_fetch_sub(&c->left, req->qty) - req->qty;
    raw_reply(call, &out.base);
    inventory__reserve_request__free_unpacked(req, NULL);
}

static void charge(raw_call_t *call, void *state)
{
    chain_t *c = state;
    Payments__ChargeRequest *req = raw_unpack(call, &payments__charge_request__descriptor);
    if (req == NULL)
        return;
    Payments__ChargeReply out = PAYMENTS__CHARGE_REPLY__INIT;
    out.order_id = req->order_id;
    out.outcome = (char *)"executed";
    out.balance = (int64_t)atomic_fetch_sub(&c->left, req->amount) - req->amount;
    raw_reply(call, &out.base);
    payments__charge_request__free_unpacked(req, NULL);
}

static void *open_chain(const char *db_path)
{
    (void)db_path;
    chain_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        fprintf(stderr, "chain: out of memory\n");
        return NULL;
    }
    atomic_init(&c->left, COUNTER_START);
    return c;
}

static void close_chain(void *state)
{
    free(state);
}

static const raw_method_t a_methods[] = {{"create_order", create_order}};
static const raw_method_t b_methods[] = {{"reserve", reserve}};
static const raw_method_t c_methods[] = {{"charge", charge}};

const raw_role_t raw_chain_a_role = {
    .name = "chain-a", .open = open_chain, .close = close_chain, .methods = a_methods, .n_methods = 1};
const raw_role_t raw_chain_b_role = {
    .name = "chain-b", .open = open_chain, .close = close_chain, .methods = b_methods, .n_methods = 1};
const raw_role_t raw_chain_c_role = {
    .name = "chain-c", .open = open_chain, .close = close_chain, .methods = c_methods, .n_methods = 1};
