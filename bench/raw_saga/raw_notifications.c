/*
 * raw_notifications.c -- the consumer at the end of the saga by hand: what
 * services/notifications does through libnatomic.
 *
 *   events.orders.order_created (OrderCreated) -> one notification row
 *   notifications.list(ListRequest{customer})  -> ListReply{notifications}
 *
 * The events come on core NATS in the queue group "notifications", as in
 * libnatomic's memory mode: one asynchronous subscription, its callback on
 * nats.c's delivery thread, pending limits off. Each is written with
 * INSERT OR IGNORE keyed on its Natomic-Event-Id (the order id unique
 * too), so a copy of an event changes nothing and an order never gets two
 * notifications. An event without the id, or that does not decode, is
 * dropped with a line on stderr; one that arrives while the process is
 * down is lost (what durable mode's stream is for).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications.pb-c.h"
#include "orders.pb-c.h"
#include "raw_db.h"
#include "raw_roles.h"

#define EVENT_SUBJECT "events.orders.order_created"
#define MAX_TEXT 512

enum { INSERT_NOTIFICATION, LIST_NOTIFICATIONS, N_STATEMENTS };

static const char *const statements[N_STATEMENTS] = {
    [INSERT_NOTIFICATION] = "INSERT OR IGNORE INTO notifications(event_id, order_id, customer, text) "
                            "VALUES (?, ?, ?, ?)",
    [LIST_NOTIFICATIONS] = "SELECT event_id, order_id, customer, text, created_at FROM notifications "
                           "WHERE customer = ? ORDER BY created_at, rowid",
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS notifications ("
                             "  event_id TEXT PRIMARY KEY,"
                             "  order_id TEXT NOT NULL UNIQUE,"
                             "  customer TEXT NOT NULL,"
                             "  text TEXT NOT NULL,"
                             "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));"
                             "CREATE INDEX IF NOT EXISTS notifications_by_customer "
                             "  ON notifications(customer, created_at);";

typedef struct notifications {
    raw_db_t db;
    natsSubscription *events;
} notifications_t;

/* "Order ord-1 confirmed: 2 × book for 30.00" (amount in cents), as the natomic service writes it. */
static void format_text(char *buf, size_t cap, const Orders__OrderCreated *ev)
{
    long long cents = (long long)ev->amount;
    const char *sign = cents < 0 ? "-" : "";
    unsigned long long abs_cents = cents < 0 ? 0ULL - (unsigned long long)cents : (unsigned long long)cents;
    snprintf(buf, cap, "Order %s confirmed: %lld \u00d7 %s for %s%llu.%02llu", ev->order_id, (long long)ev->qty,
             ev->sku, sign, abs_cents / 100, abs_cents % 100);
}

/* One order_created: the notification recorded once. Runs on nats.c's delivery thread. */
static void on_order_created(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    notifications_t *n = closure;
    const char *event_id = NULL;
    if (natsMsgHeader_Get(msg, "Natomic-Event-Id", &event_id) != NATS_OK || event_id == NULL || *event_id == '\0') {
        fprintf(stderr, "notifications: order_created without Natomic-Event-Id: cannot deduplicate, dropped\n");
        natsMsg_Destroy(msg);
        return;
    }
    Orders__OrderCreated *ev = orders__order_created__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                             (const uint8_t *)natsMsg_GetData(msg));
    if (ev == NULL || *ev->order_id == '\0' || *ev->customer == '\0') {
        fprintf(stderr, "notifications: order_created %s does not decode or lacks its order: dropped\n", event_id);
    } else {
        char text[MAX_TEXT];
        format_text(text, sizeof text, ev);
        raw_db_lock(&n->db);
        sqlite3_stmt *st = raw_db_stmt(&n->db, INSERT_NOTIFICATION);
        sqlite3_bind_text(st, 1, event_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, ev->order_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, ev->customer, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, text, -1, SQLITE_STATIC);
        int rc = raw_db_finish(st, sqlite3_step(st));
        int changed = rc == SQLITE_OK ? sqlite3_changes(n->db.db) : 0;
        raw_db_unlock(&n->db);
        if (rc != SQLITE_OK)
            fprintf(stderr, "notifications: cannot record order %s: %s\n", ev->order_id, sqlite3_errstr(rc));
        else if (changed == 0)
            fprintf(stderr, "notifications: order_created %s for order %s already recorded: skipped\n", event_id,
                    ev->order_id);
    }
    if (ev != NULL)
        orders__order_created__free_unpacked(ev, NULL);
    natsMsg_Destroy(msg);
}

/* The notifications built for one list reply, freed with free_list. */
typedef struct list {
    Notifications__Notification **items;
    size_t count, cap;
} list_t;

static void free_list(list_t *l)
{
    for (size_t i = 0; i < l->count; i++) {
        Notifications__Notification *n = l->items[i];
        free(n->event_id);
        free(n->order_id);
        free(n->customer);
        free(n->text);
        free(n->created_at);
        free(n);
    }
    free(l->items);
}

static char *column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return strdup(s != NULL ? (const char *)s : "");
}

/* Appends the current row; false when out of memory. */
static bool add_row(list_t *l, sqlite3_stmt *st)
{
    if (l->count == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 16;
        Notifications__Notification **items = realloc(l->items, cap * sizeof *items);
        if (items == NULL)
            return false;
        l->items = items;
        l->cap = cap;
    }
    Notifications__Notification *n = malloc(sizeof *n);
    if (n == NULL)
        return false;
    *n = (Notifications__Notification)NOTIFICATIONS__NOTIFICATION__INIT;
    n->event_id = column_dup(st, 0);
    n->order_id = column_dup(st, 1);
    n->customer = column_dup(st, 2);
    n->text = column_dup(st, 3);
    n->created_at = column_dup(st, 4);
    l->items[l->count++] = n; /* freed with the list even when a copy failed */
    return n->event_id != NULL && n->order_id != NULL && n->customer != NULL && n->text != NULL &&
           n->created_at != NULL;
}

static void list(raw_call_t *call, void *state)
{
    notifications_t *n = state;
    Notifications__ListRequest *req = raw_unpack(call, &notifications__list_request__descriptor);
    if (req == NULL)
        return;
    if (*req->customer == '\0') {
        raw_fail(call, 400, "InvalidRequest", "customer must not be empty");
        notifications__list_request__free_unpacked(req, NULL);
        return;
    }
    list_t l = {0};
    bool out_of_memory = false;
    raw_db_lock(&n->db);
    sqlite3_stmt *st = raw_db_stmt(&n->db, LIST_NOTIFICATIONS);
    sqlite3_bind_text(st, 1, req->customer, -1, SQLITE_STATIC);
    int rc = SQLITE_DONE;
    while (!out_of_memory && (rc = sqlite3_step(st)) == SQLITE_ROW)
        out_of_memory = !add_row(&l, st);
    rc = raw_db_finish(st, out_of_memory ? SQLITE_DONE : rc);
    raw_db_unlock(&n->db);
    if (rc != SQLITE_OK) {
        raw_fail(call, 503, "StorageError", "cannot list notifications of %s: %s", req->customer, sqlite3_errstr(rc));
    } else if (out_of_memory) {
        raw_fail(call, 500, "OutOfMemory", "out of memory listing %s", req->customer);
    } else {
        Notifications__ListReply out = NOTIFICATIONS__LIST_REPLY__INIT;
        out.n_notifications = l.count;
        out.notifications = l.items;
        raw_reply(call, &out.base);
    }
    free_list(&l);
    notifications__list_request__free_unpacked(req, NULL);
}

static int listen_events(void *state, natsConnection *nc)
{
    notifications_t *n = state;
    natsStatus s = natsConnection_QueueSubscribe(&n->events, nc, EVENT_SUBJECT, "notifications", on_order_created, n);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(n->events, -1, -1);
    if (s != NATS_OK) {
        fprintf(stderr, "notifications: cannot subscribe to %s: %s\n", EVENT_SUBJECT, natsStatus_GetText(s));
        return -1;
    }
    return 0;
}

/* Drained: the events already delivered are recorded before the database closes. */
static void stop_events(void *state)
{
    notifications_t *n = state;
    if (n->events != NULL && natsSubscription_Drain(n->events) == NATS_OK)
        natsSubscription_WaitForDrainCompletion(n->events, 5000);
    natsSubscription_Destroy(n->events);
    n->events = NULL;
}

static void *open_notifications(const char *db_path)
{
    notifications_t *n = calloc(1, sizeof *n);
    if (n == NULL || raw_db_open(&n->db, db_path, "notifications", schema, statements, N_STATEMENTS) != 0) {
        free(n);
        return NULL;
    }
    return n;
}

static void close_notifications(void *state)
{
    notifications_t *n = state;
    if (n != NULL)
        raw_db_close(&n->db);
    free(n);
}

static const raw_method_t methods[] = {
    {"list", list},
};

const raw_role_t raw_notifications_role = {
    .name = "notifications",
    .stores = true,
    .open = open_notifications,
    .close = close_notifications,
    .methods = methods,
    .n_methods = sizeof methods / sizeof methods[0],
    .listen = listen_events,
    .stop = stop_events,
};
