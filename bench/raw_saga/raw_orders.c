/*
 * raw_orders.c -- the order saga's orchestrator by hand: what
 * services/orders/orders_service.c does through libnatomic, written with
 * nats.c and SQLite alone, as a careful author would.
 *
 *   orders.create_order(CreateOrderRequest{customer, sku, qty, amount})
 *       -> OrderReply{order_id, status "confirmed", ...}
 *   orders.get_order(GetOrderRequest{order_id}) -> OrderReply
 *
 * create_order, step by step, each local write committing on its own:
 *   1. validate                       400 InvalidRequest, nothing written
 *   2. INSERT the order 'pending'     undo: mark it 'cancelled'
 *   3. inventory.reserve              undo: inventory.release
 *   4. payments.charge                undo: payments.refund
 *   5. UPDATE the order 'confirmed'   (only from 'pending')
 *   6. publish events.orders.order_created (Natomic-Event-Id), then reply.
 * A step counts as started -- and its undo as due -- before its request
 * leaves: a request that times out may have been carried out, and the
 * participants' barrier turns an undo of what never happened into a
 * recorded no-op. When a step fails, the undos of the started steps run
 * newest first (refund, release, cancel), each retried a few times, and
 * only then does the caller get the failing step's own error (code and
 * Natomic-Error-Type: OutOfStock, PaymentDeclined, Timeout, ...) with the
 * order id in the message. The undos carry the call's Natomic-Tx, which
 * is what the participants' barrier keys on.
 *
 * What it does not do, being the careful author's version and not a
 * library: survive its own crash. A process that dies between steps 2 and
 * 5 leaves the order 'pending' and its undos undone -- libnatomic's memory
 * mode has the same hole; its durable mode is what closes it.
 *
 * Each request gets what is left of the caller's deadline
 * (Natomic-Deadline-Ms) minus a margin to answer in; an undo gets a fresh
 * UNDO_TIMEOUT_MS per attempt, since it must run even after the deadline.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inventory.pb-c.h"
#include "orders.pb-c.h"
#include "payments.pb-c.h"
#include "raw_db.h"
#include "raw_roles.h"

#define ORDER_ID_CAP (4 + RAW_ID_LEN + 1) /* "ord-" + id */
#define DEADLINE_MARGIN_MAX_MS 200          /* kept back from the caller's deadline to answer in */
#define UNDO_ATTEMPTS 3
#define UNDO_TIMEOUT_MS 2000
#define UNDO_BACKOFF_MS 50                  /* doubled after each failed attempt */

enum { INSERT_PENDING, SET_STATUS, GET_ORDER, N_STATEMENTS };

static const char *const statements[N_STATEMENTS] = {
    [INSERT_PENDING] = "INSERT OR IGNORE INTO orders(order_id, customer, sku, qty, amount, status, tx) "
                       "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
    [SET_STATUS] = "UPDATE orders SET status = ?1, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                   "WHERE order_id = ?2 AND status <> ?1 AND (?3 IS NULL OR status = ?3)",
    [GET_ORDER] = "SELECT order_id, customer, sku, status, qty, amount FROM orders WHERE order_id = ?",
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS orders ("
                             "  order_id TEXT PRIMARY KEY,"
                             "  customer TEXT NOT NULL,"
                             "  sku TEXT NOT NULL,"
                             "  qty INTEGER NOT NULL CHECK (qty > 0),"
                             "  amount INTEGER NOT NULL CHECK (amount > 0),"
                             "  status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),"
                             "  tx TEXT NOT NULL,"
                             "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),"
                             "  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));"
                             "CREATE INDEX IF NOT EXISTS orders_by_status ON orders(status);";

/* One create_order in progress: what was started, so what must be undone. */
typedef struct saga {
    raw_call_t *call;
    raw_db_t *db;
    char order_id[ORDER_ID_CAP];
    bool reserve_started;
    bool charge_started;
} saga_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What is left of the caller's time for one request, a margin kept back to answer in. */
static int64_t time_left(const raw_call_t *call)
{
    int64_t left = call->deadline_ms - raw_now_ms();
    int64_t margin = left / 10 < DEADLINE_MARGIN_MAX_MS ? left / 10 : DEADLINE_MARGIN_MAX_MS;
    return left - margin;
}

/*
 * Sets the order's status (only from `from` when not NULL). The rows it
 * changed (0 or 1), or -1 with err[cap] filled. One statement: it commits
 * on its own.
 */
static int set_status(raw_db_t *d, const char *order_id, const char *status, const char *from, char *err, size_t cap)
{
    raw_db_lock(d);
    sqlite3_stmt *st = raw_db_stmt(d, SET_STATUS);
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, order_id, -1, SQLITE_STATIC);
    if (from != NULL)
        sqlite3_bind_text(st, 3, from, -1, SQLITE_STATIC);
    int rc = raw_db_finish(st, sqlite3_step(st));
    int changed = rc == SQLITE_OK ? sqlite3_changes(d->db) : -1;
    if (rc != SQLITE_OK)
        snprintf(err, cap, "%s", sqlite3_errmsg(d->db));
    raw_db_unlock(d);
    return changed;
}

/* One undo request, retried UNDO_ATTEMPTS times; true when the participant answered it. */
static bool undo(saga_t *sg, const char *subject, const ProtobufCMessage *request,
                 const ProtobufCMessageDescriptor *reply_desc)
{
    natsConnection *nc = raw_service_connection(sg->call->svc);
    raw_remote_error_t err = {0};
    for (int attempt = 0, wait = UNDO_BACKOFF_MS; attempt < UNDO_ATTEMPTS; attempt++, wait *= 2) {
        ProtobufCMessage *answer = NULL;
        if (raw_request(&answer, nc, subject, request, reply_desc, sg->call->tx, UNDO_TIMEOUT_MS, &err) == 0) {
            protobuf_c_message_free_unpacked(answer, NULL);
            return true;
        }
        if (err.code >= 400 && err.code < 500)
            break; /* refused for good: a retry gets the same answer */
        if (attempt + 1 < UNDO_ATTEMPTS)
            sleep_ms(wait);
    }
    fprintf(stderr, "orders: order %s: %s failed: %s: %s (tx %s); left undone\n", sg->order_id, subject, err.type,
            err.message, sg->call->tx);
    return false;
}

/*
 * Undoes the started steps newest first -- refund, release, cancel -- then
 * answers the caller with the failing step's error.
 */
static void compensate_and_fail(saga_t *sg, int code, const char *type, const char *message)
{
    fprintf(stderr, "orders: order %s failed with %s: %s (tx %s); compensating\n", sg->order_id, type, message,
            sg->call->tx);
    if (sg->charge_started) {
        Payments__RefundRequest refund = PAYMENTS__REFUND_REQUEST__INIT;
        refund.order_id = sg->order_id;
        undo(sg, "payments.refund", &refund.base, &payments__refund_reply__descriptor);
    }
    if (sg->reserve_started) {
        Inventory__ReleaseRequest release = INVENTORY__RELEASE_REQUEST__INIT;
        release.order_id = sg->order_id;
        undo(sg, "inventory.release", &release.base, &inventory__release_reply__descriptor);
    }
    char err[256];
    if (set_status(sg->db, sg->order_id, "cancelled", NULL, err, sizeof err) < 0)
        fprintf(stderr, "orders: cannot cancel order %s (tx %s): %s\n", sg->order_id, sg->call->tx, err);
    raw_fail(sg->call, code, type, "order %s: %s", sg->order_id, message);
}

/* A saga step: the request to a participant. 0, or -1 after compensating and answering the caller. */
static int step(saga_t *sg, const char *subject, const ProtobufCMessage *request,
                const ProtobufCMessageDescriptor *reply_desc)
{
    raw_remote_error_t err = {0};
    ProtobufCMessage *answer = NULL;
    if (raw_request(&answer, raw_service_connection(sg->call->svc), subject, request, reply_desc, sg->call->tx,
                    time_left(sg->call), &err) == 0) {
        protobuf_c_message_free_unpacked(answer, NULL);
        return 0;
    }
    compensate_and_fail(sg, err.code, err.type[0] != '\0' ? err.type : "RemoteError",
                        err.message[0] != '\0' ? err.message : subject);
    return -1;
}

/* The text checks of create_order; true when `value` is fine, else a 400 reply. */
static bool check_field(raw_call_t *call, const char *name, const char *value)
{
    if (value == NULL || *value == '\0') {
        raw_fail(call, 400, "InvalidRequest", "%s must not be empty", name);
        return false;
    }
    if (strlen(value) > RAW_MAX_FIELD_LEN) {
        raw_fail(call, 400, "InvalidRequest", "%s is longer than %d bytes", name, RAW_MAX_FIELD_LEN);
        return false;
    }
    return true;
}

/* Step 2: the order row, 'pending'. 0, or -1 after answering the caller (nothing to undo yet). */
static int save_pending(saga_t *sg, const Orders__CreateOrderRequest *req)
{
    raw_db_t *d = sg->db;
    raw_db_lock(d);
    sqlite3_stmt *st = raw_db_stmt(d, INSERT_PENDING);
    sqlite3_bind_text(st, 1, sg->order_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, req->customer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, req->sku, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, req->qty);
    sqlite3_bind_int64(st, 5, req->amount);
    sqlite3_bind_text(st, 6, sg->call->tx, -1, SQLITE_STATIC);
    int rc = raw_db_finish(st, sqlite3_step(st));
    int changed = rc == SQLITE_OK ? sqlite3_changes(d->db) : 0;
    char err[256];
    snprintf(err, sizeof err, "%s", rc == SQLITE_OK ? "" : sqlite3_errmsg(d->db));
    raw_db_unlock(d);
    if (rc != SQLITE_OK) {
        raw_fail(sg->call, 503, "StorageError", "cannot save order %s: %s", sg->order_id, err);
        return -1;
    }
    if (changed != 1) { /* ids are random 128-bit: this is a bug, not bad luck */
        raw_fail(sg->call, 500, "InternalError", "order %s exists already", sg->order_id);
        return -1;
    }
    return 0;
}

/* Steps 1 to 6 for one decoded request; every path answers the caller. */
static void run_saga(raw_call_t *call, raw_db_t *db, const Orders__CreateOrderRequest *req)
{
    /* 1. Validate: a bad request writes nothing and calls nobody. */
    if (!check_field(call, "customer", req->customer) || !check_field(call, "sku", req->sku))
        return;
    if (req->qty <= 0 || req->amount <= 0) {
        raw_fail(call, 400, "InvalidRequest", "qty and amount must be > 0, got %" PRId64 " and %" PRId64, req->qty,
                 req->amount);
        return;
    }
    saga_t sg = {.call = call, .db = db};
    memcpy(sg.order_id, "ord-", 4);
    raw_id_new(sg.order_id + 4);

    /* 2. The order exists here before anyone downstream hears of it. */
    if (save_pending(&sg, req) != 0)
        return;

    /* 3. Reserve the stock. */
    Inventory__ReserveRequest reserve = INVENTORY__RESERVE_REQUEST__INIT;
    reserve.order_id = sg.order_id;
    reserve.sku = req->sku;
    reserve.qty = req->qty;
    sg.reserve_started = true;
    if (step(&sg, "inventory.reserve", &reserve.base, &inventory__reserve_reply__descriptor) != 0)
        return;

    /* 4. Charge the customer. */
    Payments__ChargeRequest charge = PAYMENTS__CHARGE_REQUEST__INIT;
    charge.order_id = sg.order_id;
    charge.customer = req->customer;
    charge.amount = req->amount;
    sg.charge_started = true;
    if (step(&sg, "payments.charge", &charge.base, &payments__charge_reply__descriptor) != 0)
        return;

    /* 5. Confirm: only a pending order. */
    char err[256] = "";
    int changed = set_status(db, sg.order_id, "confirmed", "pending", err, sizeof err);
    if (changed != 1) {
        char why[300];
        snprintf(why, sizeof why, "cannot confirm: %s", changed < 0 ? err : "it is no longer pending");
        compensate_and_fail(&sg, 503, "StorageError", why);
        return;
    }

    /* 6. Announce it, then answer. A lost event is logged: the order stands. */
    Orders__OrderCreated event = ORDERS__ORDER_CREATED__INIT;
    event.order_id = sg.order_id;
    event.customer = req->customer;
    event.sku = req->sku;
    event.qty = req->qty;
    event.amount = req->amount;
    natsStatus s = raw_publish_event(raw_service_connection(call->svc), "events.orders.order_created",
                                     "order_created", call->tx, &event.base);
    if (s != NATS_OK)
        fprintf(stderr, "orders: order %s: order_created not published: %s\n", sg.order_id, natsStatus_GetText(s));
    Orders__OrderReply out = ORDERS__ORDER_REPLY__INIT;
    out.order_id = sg.order_id;
    out.status = (char *)"confirmed";
    out.customer = req->customer;
    out.sku = req->sku;
    out.qty = req->qty;
    out.amount = req->amount;
    raw_reply(call, &out.base);
}

static void create_order(raw_call_t *call, void *state)
{
    Orders__CreateOrderRequest *req = raw_unpack(call, &orders__create_order_request__descriptor);
    if (req == NULL)
        return;
    run_saga(call, state, req);
    orders__create_order_request__free_unpacked(req, NULL);
}

/* strdup of a column, "" for NULL; NULL only when out of memory. */
static char *column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return strdup(s != NULL ? (const char *)s : "");
}

static void get_order(raw_call_t *call, void *state)
{
    raw_db_t *d = state;
    Orders__GetOrderRequest *req = raw_unpack(call, &orders__get_order_request__descriptor);
    if (req == NULL)
        return;
    if (!check_field(call, "order_id", req->order_id)) {
        orders__get_order_request__free_unpacked(req, NULL);
        return;
    }
    Orders__OrderReply out = ORDERS__ORDER_REPLY__INIT;
    raw_db_lock(d);
    sqlite3_stmt *st = raw_db_stmt(d, GET_ORDER);
    sqlite3_bind_text(st, 1, req->order_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    bool found = rc == SQLITE_ROW;
    if (found) {
        out.order_id = column_dup(st, 0);
        out.customer = column_dup(st, 1);
        out.sku = column_dup(st, 2);
        out.status = column_dup(st, 3);
        out.qty = sqlite3_column_int64(st, 4);
        out.amount = sqlite3_column_int64(st, 5);
    }
    rc = raw_db_finish(st, rc);
    raw_db_unlock(d);
    if (rc != SQLITE_OK)
        raw_fail(call, 503, "StorageError", "cannot read order %s: %s", req->order_id, sqlite3_errstr(rc));
    else if (!found)
        raw_fail(call, 422, "UnknownOrder", "no order %s", req->order_id);
    else if (out.order_id == NULL || out.customer == NULL || out.sku == NULL || out.status == NULL)
        raw_fail(call, 500, "OutOfMemory", "out of memory");
    else
        raw_reply(call, &out.base);
    free(out.order_id);
    free(out.customer);
    free(out.sku);
    free(out.status);
    orders__get_order_request__free_unpacked(req, NULL);
}

static void *open_orders(const char *db_path)
{
    raw_db_t *d = calloc(1, sizeof *d);
    if (d == NULL || raw_db_open(d, db_path, "orders", schema, statements, N_STATEMENTS) != 0) {
        free(d);
        return NULL;
    }
    return d;
}

static void close_orders(void *state)
{
    if (state != NULL)
        raw_db_close(state);
    free(state);
}

static const raw_method_t methods[] = {
    {"create_order", create_order},
    {"get_order", get_order},
};

const raw_role_t raw_orders_role = {
    .name = "orders",
    .stores = true,
    .open = open_orders,
    .close = close_orders,
    .methods = methods,
    .n_methods = sizeof methods / sizeof methods[0],
};
