/*
 * saga_session.c -- NATS and one variant of the order saga for one
 * measurement, and the benchmark's client of them.
 *
 * A session is:
 *   1. a supervisor (faultinject/supervisor/supervisor.h): an embedded nats-server
 *      with JetStream in a fresh temporary folder, and inventory,
 *      payments, orders, notifications as child processes, each connected
 *      straight to NATS (supervisor_t.direct: no fault proxy, whose copying
 *      would be counted as the saga's cost), in the mode asked for
 *      (supervisor_t.durable -> NATOMIC_MODE). For the hand-written saga
 *      and the chain the children are natomic-raw-saga: the supervisor
 *      runs $NATOMIC_SERVICES_DIR/<name>/<name>, so the session makes
 *      that folder in its own temporary folder with links named after
 *      the roles (raw-roles/orders/orders -> natomic-raw-saga, ...) and
 *      points the variable there while it adds them -- the same proxies,
 *      logs, start checks and stop as the library's services get;
 *   2. two connections of this process, straight to NATS (no proxy): the
 *      callers' (shared by every client thread, as one client process
 *      with many threads) and the listener of events.orders.order_created,
 *      which records each message's Natomic-Event-Id and order id;
 *   3. a ledger: what was restocked and deposited, and the id of every
 *      order a caller was told is confirmed.
 * Nothing is kept between sessions: each starts from empty stores, an
 * empty JetStream and new processes.
 *
 * The checks (saga_session_check) are made from outside, through the
 * services' methods and the events on the wire, never by reading their
 * databases: what a client of the system could verify. With every order
 * SAGA_QTY of SAGA_SKU for SAGA_AMOUNT cents and nothing ever shipped or
 * refunded in a clean run, after n confirmed orders:
 *   stock      available + reserved = restocked, reserved = n x qty
 *   money      balance + charged = deposited,   charged = n x amount
 *   orders     get_order says 'confirmed' for each of the n ids
 *   events     n distinct Natomic-Event-Id heard, carrying exactly the n
 *              order ids (copies of one event id -- an outbox relay after
 *              the call's own publish -- are counted but are no failure:
 *              consumers deduplicate on the id)
 *   notified   notifications.list(customer) holds n notifications
 * Events and notifications travel asynchronously, so the check waits for
 * them (bounded: EVENT_WAIT_MS, NOTIFY_WAIT_MS) before it judges.
 * The hand-written saga (natomic-raw-saga) answers the same methods with
 * the same rows and events, so it is checked the same way; the chain
 * stores nothing and is not checked at all (saga_check_t.checked false).
 *
 * Failures: start and seed failures return -1 after a message and leave
 * nothing running; a failed call is reported with its kind, type and
 * message. Every wait is bounded by a time and by bench_should_stop().
 */
#include "saga_session.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_budget.h"
#include "inventory.pb-c.h"
#include "notifications.pb-c.h"
#include "orders.pb-c.h"
#include "payments.pb-c.h"

#define CALL_TIMEOUT_MS 10000  /* one create_order of the measurements            */
#define QUERY_TIMEOUT_MS 5000  /* get_stock, get_balance, get_order, list, seeding */
#define EVENT_WAIT_MS 5000     /* for order_created events still on their way     */
#define NOTIFY_WAIT_MS 5000    /* for notifications still being recorded           */
#define EVENT_SETTLE_MS 100    /* after the last expected event: room for copies   */
/* notifications.list returns every notification of a customer in one reply, about 200 bytes
 * each; NATS refuses payloads over 1 MB, so past this many the check is not made (and says so). */
#define NOTIFY_CHECK_MAX 4000
#define SUPERVISOR_SEED 1ULL

/* The processes of each variant, in the order they start: the callees before their callers. */
static const char *const saga_services[] = {"inventory", "payments", "orders", "notifications"};
static const char *const chain_services[] = {"chain-b", "chain-c", "chain-a"};
#define N_SAGA_SERVICES (sizeof saga_services / sizeof saga_services[0])
#define N_CHAIN_SERVICES (sizeof chain_services / sizeof chain_services[0])

const char *const saga_variant_names[SAGA_VARIANT_COUNT] = {"raw", "chain", "memory", "durable"};

bool saga_variant_has_invariants(saga_variant_t variant)
{
    return variant != SAGA_CHAIN;
}

/* A growable list of strings, owned. */
typedef struct strings {
    char **items;
    size_t count, cap;
} strings_t;

struct saga_session {
    supervisor_t sv;
    bool sv_started;
    saga_variant_t variant;
    const char *const *services; /* the variant's processes             */
    size_t n_services;
    const char *order_subject;   /* "orders.create_order", or the chain's */
    natsConnection *client;   /* the callers'                         */
    natsConnection *event_nc; /* the event listener's                 */
    natsSubscription *event_sub;
    pthread_mutex_t mu;       /* guards everything below              */
    strings_t orders;         /* confirmed order ids, in reply order  */
    size_t orders_checked;    /* orders[0..orders_checked) passed get_order */
    long long not_confirmed;  /* found by earlier checks              */
    strings_t event_ids;      /* Natomic-Event-Id of each event heard */
    strings_t event_orders;   /* its order id ("" if undecodable)     */
    long long restocked, deposited;
};

/* ------------------------------------------------------------------ */
/* Strings                                                             */
/* ------------------------------------------------------------------ */

/* Appends a copy of `text`; false when out of memory (nothing appended). */
static bool strings_add(strings_t *l, const char *text)
{
    if (l->count == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 256;
        char **grown = realloc(l->items, cap * sizeof *grown);
        if (grown == NULL)
            return false;
        l->items = grown;
        l->cap = cap;
    }
    char *copy = strdup(text);
    if (copy == NULL)
        return false;
    l->items[l->count++] = copy;
    return true;
}

static void strings_free(strings_t *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A sorted copy of the pointers of l (the strings stay l's), duplicates removed; NULL when out of memory. */
static char **sorted_distinct(const strings_t *l, size_t *n)
{
    char **v = malloc((l->count != 0 ? l->count : 1) * sizeof *v);
    if (v == NULL)
        return NULL;
    memcpy(v, l->items, l->count * sizeof *v);
    qsort(v, l->count, sizeof *v, compare_strings);
    size_t k = 0;
    for (size_t i = 0; i < l->count; i++)
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0)
            v[k++] = v[i];
    *n = k;
    return v;
}

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

static void on_order_created(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    saga_session_t *s = closure;
    const char *event_id = NULL;
    if (natsMsgHeader_Get(msg, NATOMIC_HDR_EVENT_ID, &event_id) != NATS_OK || event_id == NULL)
        event_id = "";
    Orders__OrderCreated *ev = orders__order_created__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                                             (const uint8_t *)natsMsg_GetData(msg));
    const char *order_id = ev != NULL && ev->order_id != NULL ? ev->order_id : "";
    pthread_mutex_lock(&s->mu);
    if (strings_add(&s->event_ids, event_id) && !strings_add(&s->event_orders, order_id)) {
        /* Keep both lists the same length: one entry per message. */
        free(s->event_ids.items[--s->event_ids.count]);
    }
    pthread_mutex_unlock(&s->mu);
    if (ev != NULL)
        orders__order_created__free_unpacked(ev, NULL);
    natsMsg_Destroy(msg);
}

long long saga_session_events_heard(saga_session_t *s)
{
    pthread_mutex_lock(&s->mu);
    long long n = (long long)s->event_ids.count;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ------------------------------------------------------------------ */
/* Start and stop                                                      */
/* ------------------------------------------------------------------ */

supervisor_t *saga_session_supervisor(saga_session_t *s)
{
    return &s->sv;
}

natsConnection *saga_session_client(saga_session_t *s)
{
    return s->client;
}

void saga_session_print_logs(saga_session_t *s, int lines)
{
    if (s == NULL || !s->sv_started)
        return;
    for (size_t i = 0; i < s->n_services; i++) {
        char *tail = supervisor_log_tail(&s->sv, s->services[i], lines);
        if (tail != NULL)
            fprintf(stderr, "natomic-bench-saga: the end of %s's log:\n%s", s->services[i], tail);
        free(tail);
    }
}

/* natomic-raw-saga: $NATOMIC_RAW_SAGA, else raw_saga/natomic-raw-saga beside this program. 0, or -1 with a message. */
static int raw_saga_binary(char *out, size_t cap)
{
    const char *env = getenv("NATOMIC_RAW_SAGA");
    int rc;
    if (env != NULL && *env != '\0') {
        int w = snprintf(out, cap, "%s", env);
        rc = w > 0 && (size_t)w < cap ? 0 : -1;
    } else {
        rc = lab_sibling_path(out, cap, "raw_saga/natomic-raw-saga");
    }
    char resolved[PATH_MAX];
    if (rc != 0 || access(out, X_OK) != 0 || realpath(out, resolved) == NULL) {
        fprintf(stderr, "natomic-bench-saga: no natomic-raw-saga at %s (%s; set NATOMIC_RAW_SAGA)\n",
                rc != 0 ? "(path too long)" : out, rc != 0 ? "" : strerror(errno));
        return -1;
    }
    /* Absolute: the links that point at it live in another folder. */
    if (snprintf(out, cap, "%s", resolved) >= (int)cap) {
        fprintf(stderr, "natomic-bench-saga: the path of natomic-raw-saga is too long\n");
        return -1;
    }
    return 0;
}

/* The supervisor's service folder for natomic-raw-saga: <dir>/raw-roles/<role>/<role> -> the binary. 0 or -1. */
static int make_role_links(char *dir, size_t cap, const supervisor_t *sv, const char *const *roles, size_t n)
{
    char bin[1024], path[1200];
    if (raw_saga_binary(bin, sizeof bin) != 0)
        return -1;
    int w = snprintf(dir, cap, "%s/raw-roles", sv->dir);
    if (w <= 0 || (size_t)w >= cap || (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
        fprintf(stderr, "natomic-bench-saga: cannot make %s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, roles[i]);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "natomic-bench-saga: cannot make %s: %s\n", path, strerror(errno));
            return -1;
        }
        snprintf(path, sizeof path, "%s/%s/%s", dir, roles[i], roles[i]);
        if (symlink(bin, path) != 0 && errno != EEXIST) {
            fprintf(stderr, "natomic-bench-saga: cannot link %s: %s\n", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/*
 * Adds the session's processes through the supervisor; for the raw variants with
 * NATOMIC_SERVICES_DIR pointing at the role links for the time of the adds (the
 * supervisor reads it there; it is put back after). The environment changes on the
 * thread that starts sessions, while no other thread of this program reads it: the
 * proxies never do, nats.c only when the library opens. 0, or -1 with a message.
 */
static int add_services(saga_session_t *s, const char *orders_faults)
{
    bool raw = s->variant == SAGA_RAW || s->variant == SAGA_CHAIN;
    char links[512], *saved = NULL;
    if (raw) {
        if (make_role_links(links, sizeof links, &s->sv, s->services, s->n_services) != 0)
            return -1;
        const char *old = getenv("NATOMIC_SERVICES_DIR");
        if (old != NULL && (saved = strdup(old)) == NULL) {
            fprintf(stderr, "natomic-bench-saga: out of memory\n");
            return -1;
        }
        setenv("NATOMIC_SERVICES_DIR", links, 1);
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < s->n_services; i++) {
        const char *faults = !raw && strcmp(s->services[i], "orders") == 0 ? orders_faults : NULL;
        if (bench_should_stop() || supervisor_add_service(&s->sv, s->services[i], 1, faults) != 0)
            rc = -1;
    }
    if (raw) {
        if (saved != NULL)
            setenv("NATOMIC_SERVICES_DIR", saved, 1);
        else
            unsetenv("NATOMIC_SERVICES_DIR");
        free(saved);
    }
    return rc;
}

int saga_session_start(saga_session_t **out, bool durable, const char *orders_faults)
{
    return saga_session_start_variant(out, durable ? SAGA_DURABLE : SAGA_MEMORY, orders_faults);
}

int saga_session_start_variant(saga_session_t **out, saga_variant_t variant, const char *orders_faults)
{
    saga_session_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        fprintf(stderr, "natomic-bench-saga: out of memory\n");
        return -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->variant = variant;
    bool chain = variant == SAGA_CHAIN;
    s->services = chain ? chain_services : saga_services;
    s->n_services = chain ? N_CHAIN_SERVICES : N_SAGA_SERVICES;
    s->order_subject = chain ? "chain-a.create_order" : "orders.create_order";
    if (supervisor_start(&s->sv, SUPERVISOR_SEED) != 0) {
        saga_session_stop(s);
        return -1; /* it said why */
    }
    s->sv_started = true;
    s->sv.durable = variant == SAGA_DURABLE;
    s->sv.direct = true; /* no fault proxy: its copying is the lab's cost, not the saga's */
    if (add_services(s, orders_faults) != 0) {
        if (!bench_should_stop())
            saga_session_print_logs(s, 20);
        saga_session_stop(s);
        return -1;
    }
    natomic_status_t st = natomic_connect(&s->client, s->sv.nats.url, NULL);
    if (st == NATOMIC_OK)
        st = natomic_connect(&s->event_nc, s->sv.nats.url, NULL);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "natomic-bench-saga: cannot connect to %s: %s\n", s->sv.nats.url, natomic_strerror(st));
        saga_session_stop(s);
        return -1;
    }
    natsStatus ns = natsConnection_Subscribe(&s->event_sub, s->event_nc, "events.orders.order_created",
                                             on_order_created, s);
    if (ns == NATS_OK)
        ns = natsSubscription_SetPendingLimits(s->event_sub, -1, -1);
    if (ns == NATS_OK)
        ns = natsConnection_FlushTimeout(s->event_nc, QUERY_TIMEOUT_MS);
    if (ns != NATS_OK) {
        fprintf(stderr, "natomic-bench-saga: cannot subscribe to events.orders.order_created: %s\n",
                natsStatus_GetText(ns));
        saga_session_stop(s);
        return -1;
    }
    *out = s;
    return 0;
}

void saga_session_stop(saga_session_t *s)
{
    if (s == NULL)
        return;
    /* Drained, so that no callback still runs when the lists are freed. */
    if (s->event_sub != NULL && natsSubscription_Drain(s->event_sub) == NATS_OK)
        natsSubscription_WaitForDrainCompletion(s->event_sub, 2000);
    natsSubscription_Destroy(s->event_sub);
    natsConnection_Destroy(s->event_nc);
    natsConnection_Destroy(s->client);
    if (s->sv_started)
        supervisor_stop(&s->sv, false);
    strings_free(&s->orders);
    strings_free(&s->event_ids);
    strings_free(&s->event_orders);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ------------------------------------------------------------------ */
/* Calls                                                               */
/* ------------------------------------------------------------------ */

/* One query of the services; `what` names it in a message. NATOMIC_OK with *reply, else a message if `loud`. */
static natomic_status_t query(ProtobufCMessage **reply, natsConnection *nc, const char *subject,
                              const ProtobufCMessage *request, const ProtobufCMessageDescriptor *desc, bool loud)
{
    natomic_call_info_t info;
    memset(&info, 0, sizeof info);
    natomic_status_t st = natomic_request(reply, nc, subject, request, desc, QUERY_TIMEOUT_MS, &info);
    if (st != NATOMIC_OK && loud) {
        if (info.type[0] != '\0')
            fprintf(stderr, "natomic-bench-saga: %s failed: %s (%s: %s)\n", subject, natomic_strerror(st), info.type,
                    info.message);
        else
            fprintf(stderr, "natomic-bench-saga: %s failed: %s\n", subject, natomic_strerror(st));
    }
    return st;
}

int saga_session_seed(saga_session_t *s, long long stock, long long money)
{
    if (!saga_variant_has_invariants(s->variant))
        return 0;
    ProtobufCMessage *reply = NULL;
    Inventory__RestockRequest restock = INVENTORY__RESTOCK_REQUEST__INIT;
    restock.sku = SAGA_SKU;
    restock.qty = stock;
    if (query(&reply, s->client, "inventory.restock", &restock.base, &inventory__stock_reply__descriptor, true) !=
        NATOMIC_OK)
        return -1;
    protobuf_c_message_free_unpacked(reply, NULL);
    Payments__DepositRequest deposit = PAYMENTS__DEPOSIT_REQUEST__INIT;
    deposit.customer = SAGA_CUSTOMER;
    deposit.amount = money;
    if (query(&reply, s->client, "payments.deposit", &deposit.base, &payments__balance_reply__descriptor, true) !=
        NATOMIC_OK)
        return -1;
    protobuf_c_message_free_unpacked(reply, NULL);
    pthread_mutex_lock(&s->mu);
    s->restocked += stock;
    s->deposited += money;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

natomic_status_t saga_session_order(saga_session_t *s, natsConnection *nc, int64_t timeout_ms,
                                    char order_id[SAGA_ORDER_ID_CAP], natomic_call_info_t *info)
{
    natomic_call_info_t local;
    if (info == NULL)
        info = &local;
    memset(info, 0, sizeof *info);
    Orders__CreateOrderRequest req = ORDERS__CREATE_ORDER_REQUEST__INIT;
    req.customer = SAGA_CUSTOMER;
    req.sku = SAGA_SKU;
    req.qty = SAGA_QTY;
    req.amount = SAGA_AMOUNT;
    ProtobufCMessage *reply = NULL;
    natomic_status_t st = natomic_request(&reply, nc, s->order_subject, &req.base,
                                          &orders__order_reply__descriptor, timeout_ms, info);
    if (st != NATOMIC_OK)
        return st;
    const Orders__OrderReply *r = (const Orders__OrderReply *)reply;
    if (r->status == NULL || strcmp(r->status, "confirmed") != 0 || r->order_id == NULL ||
        strlen(r->order_id) >= SAGA_ORDER_ID_CAP) {
        snprintf(info->message, sizeof info->message, "the reply says order '%s' is '%s'",
                 r->order_id != NULL ? r->order_id : "", r->status != NULL ? r->status : "");
        protobuf_c_message_free_unpacked(reply, NULL);
        return NATOMIC_EBADREPLY;
    }
    if (order_id != NULL)
        snprintf(order_id, SAGA_ORDER_ID_CAP, "%s", r->order_id);
    pthread_mutex_lock(&s->mu);
    bool kept = strings_add(&s->orders, r->order_id);
    pthread_mutex_unlock(&s->mu);
    protobuf_c_message_free_unpacked(reply, NULL);
    if (!kept) {
        snprintf(info->message, sizeof info->message, "out of memory for the order ids");
        return NATOMIC_EINTERNAL;
    }
    return NATOMIC_OK;
}

/* One measured order; 0, or -1 with a message naming what failed. */
static int order_or_complain(saga_session_t *s, natsConnection *nc)
{
    natomic_call_info_t info;
    natomic_status_t st = saga_session_order(s, nc, CALL_TIMEOUT_MS, NULL, &info);
    if (st == NATOMIC_OK)
        return 0;
    fprintf(stderr, "natomic-bench-saga: %s failed: %s (%s%s%s)\n", s->order_subject, natomic_strerror(st), info.type,
            info.type[0] != '\0' ? ": " : "", info.message);
    return -1;
}

/* bench_call_fn: one measured order on the session `arg`'s client connection (every order is alike: `i` unused). */
static int order_call(void *arg, int i)
{
    (void)i;
    saga_session_t *s = arg;
    return order_or_complain(s, s->client);
}

int saga_session_latency(saga_session_t *s, int warmup, int calls, bench_latency_t *out)
{
    return bench_load_latency(out, "natomic-bench-saga", order_call, s, warmup, calls);
}

int saga_session_throughput(saga_session_t *s, int clients, int warmup, int calls, double *sagas_per_s)
{
    return bench_load_throughput(sagas_per_s, "natomic-bench-saga", order_call, s, clients, warmup, calls);
}

int saga_session_timed_load(saga_session_t *s, int clients, int max_calls, double seconds, int *made,
                            double *elapsed_s)
{
    return bench_load_timed(made, elapsed_s, "natomic-bench-saga", order_call, s, clients, max_calls, seconds);
}

/* ------------------------------------------------------------------ */
/* Queries                                                             */
/* ------------------------------------------------------------------ */

int saga_session_stock(saga_session_t *s, natsConnection *nc, long long *available, long long *reserved, bool loud)
{
    (void)s;
    Inventory__GetStockRequest req = INVENTORY__GET_STOCK_REQUEST__INIT;
    req.sku = SAGA_SKU;
    ProtobufCMessage *reply = NULL;
    if (query(&reply, nc, "inventory.get_stock", &req.base, &inventory__stock_reply__descriptor, loud) != NATOMIC_OK)
        return -1;
    const Inventory__StockReply *r = (const Inventory__StockReply *)reply;
    *available = (long long)r->available;
    *reserved = (long long)r->reserved;
    protobuf_c_message_free_unpacked(reply, NULL);
    return 0;
}

int saga_session_balance(saga_session_t *s, natsConnection *nc, long long *balance, long long *charged, bool loud)
{
    (void)s;
    Payments__GetBalanceRequest req = PAYMENTS__GET_BALANCE_REQUEST__INIT;
    req.customer = SAGA_CUSTOMER;
    ProtobufCMessage *reply = NULL;
    if (query(&reply, nc, "payments.get_balance", &req.base, &payments__balance_reply__descriptor, loud) !=
        NATOMIC_OK)
        return -1;
    const Payments__BalanceReply *r = (const Payments__BalanceReply *)reply;
    *balance = (long long)r->balance;
    *charged = (long long)r->charged;
    protobuf_c_message_free_unpacked(reply, NULL);
    return 0;
}

int saga_session_order_status(saga_session_t *s, const char *order_id, char *status, size_t cap)
{
    Orders__GetOrderRequest req = ORDERS__GET_ORDER_REQUEST__INIT;
    req.order_id = (char *)order_id;
    ProtobufCMessage *reply = NULL;
    if (query(&reply, s->client, "orders.get_order", &req.base, &orders__order_reply__descriptor, true) != NATOMIC_OK)
        return -1;
    const Orders__OrderReply *r = (const Orders__OrderReply *)reply;
    snprintf(status, cap, "%s", r->status != NULL ? r->status : "");
    protobuf_c_message_free_unpacked(reply, NULL);
    return 0;
}

/* notifications.list(SAGA_CUSTOMER): how many. 0, or -1 with a message. */
static int notification_count(saga_session_t *s, long long *count)
{
    Notifications__ListRequest req = NOTIFICATIONS__LIST_REQUEST__INIT;
    req.customer = SAGA_CUSTOMER;
    ProtobufCMessage *reply = NULL;
    if (query(&reply, s->client, "notifications.list", &req.base, &notifications__list_reply__descriptor, true) !=
        NATOMIC_OK)
        return -1;
    *count = (long long)((const Notifications__ListReply *)reply)->n_notifications;
    protobuf_c_message_free_unpacked(reply, NULL);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The checks                                                          */
/* ------------------------------------------------------------------ */

void saga_note_vappend(char *note, size_t cap, const char *fmt, va_list ap)
{
    size_t used = strlen(note);
    if (used > 0 && used + 2 < cap) {
        memcpy(note + used, "; ", 3);
        used += 2;
    }
    if (used < cap)
        vsnprintf(note + used, cap - used, fmt, ap);
}

/* Appends "; what" (or "what") to c->failed. */
static void failed(saga_check_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failed(saga_check_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga_note_vappend(c->failed, sizeof c->failed, fmt, ap);
    va_end(ap);
}

/* Asks get_order for every order not looked at yet; adds those not 'confirmed' to s->not_confirmed. 0 or -1. */
static int check_orders(saga_session_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t from = s->orders_checked, to = s->orders.count;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = from; i < to; i++) {
        if (bench_should_stop())
            return -1;
        pthread_mutex_lock(&s->mu);
        char id[SAGA_ORDER_ID_CAP];
        snprintf(id, sizeof id, "%s", s->orders.items[i]);
        pthread_mutex_unlock(&s->mu);
        char status[32];
        if (saga_session_order_status(s, id, status, sizeof status) != 0)
            return -1;
        if (strcmp(status, "confirmed") != 0) {
            if (s->not_confirmed < 5)
                fprintf(stderr, "natomic-bench-saga: order %s was confirmed to its caller but get_order says '%s'\n",
                        id, status);
            s->not_confirmed++;
        }
    }
    s->orders_checked = to;
    return 0;
}

/* Counts the events heard against the orders: distinct event ids, and distinct order ids of ours among them. */
static int count_events(saga_session_t *s, saga_check_t *c)
{
    pthread_mutex_lock(&s->mu);
    size_t n_ids = 0, n_event_orders = 0, n_orders = 0;
    char **ids = sorted_distinct(&s->event_ids, &n_ids);
    char **event_orders = sorted_distinct(&s->event_orders, &n_event_orders);
    char **orders = sorted_distinct(&s->orders, &n_orders);
    c->events = (long long)s->event_ids.count;
    int rc = ids != NULL && event_orders != NULL && orders != NULL ? 0 : -1;
    if (rc == 0) {
        size_t i = 0, j = 0, matched = 0;
        while (i < n_event_orders && j < n_orders) {
            int cmp = strcmp(event_orders[i], orders[j]);
            matched += cmp == 0 ? 1 : 0;
            i += cmp <= 0 ? 1 : 0;
            j += cmp >= 0 ? 1 : 0;
        }
        c->distinct_events = (long long)n_ids;
        c->event_orders = (long long)matched;
        c->events_ok = n_ids == n_orders && matched == n_orders;
        if (!c->events_ok)
            failed(c, "events: %lld order_created heard (%zu distinct ids, for %zu of our orders), %zu orders",
                   c->events, n_ids, matched, n_orders);
        /* An empty id (no header) cannot be told from another; an order nobody was told about is a ghost. */
        if (n_ids > 0 && ids[0][0] == '\0') {
            c->events_ok = false;
            failed(c, "order_created without %s", NATOMIC_HDR_EVENT_ID);
        }
        if (n_event_orders > matched) {
            c->events_ok = false;
            failed(c, "%zu order_created event(s) for orders no caller was told about", n_event_orders - matched);
        }
    }
    pthread_mutex_unlock(&s->mu);
    free(ids);
    free(event_orders);
    free(orders);
    if (rc != 0)
        fprintf(stderr, "natomic-bench-saga: out of memory counting events\n");
    return rc;
}

int saga_session_check(saga_session_t *s, saga_check_t *out)
{
    saga_check_t c;
    memset(&c, 0, sizeof c);
    if (!saga_variant_has_invariants(s->variant)) {
        c.ok = true; /* nothing kept, nothing to check: c.checked stays false */
        pthread_mutex_lock(&s->mu);
        c.orders = (long long)s->orders.count;
        pthread_mutex_unlock(&s->mu);
        *out = c;
        return 0;
    }
    c.checked = true;
    pthread_mutex_lock(&s->mu);
    c.orders = (long long)s->orders.count;
    long long restocked = s->restocked, deposited = s->deposited;
    pthread_mutex_unlock(&s->mu);

    /* Events first: they are on their way while the rest is asked. */
    int64_t until = bench_now_ns() + (int64_t)EVENT_WAIT_MS * 1000000;
    while (saga_session_events_heard(s) < c.orders && bench_now_ns() < until && !bench_should_stop())
        bench_sleep_ms(5);
    natsConnection_FlushTimeout(s->event_nc, 1000);
    bench_sleep_ms(EVENT_SETTLE_MS);

    if (saga_session_stock(s, s->client, &c.available, &c.reserved, true) != 0 ||
        saga_session_balance(s, s->client, &c.balance, &c.charged, true) != 0 || check_orders(s) != 0 ||
        count_events(s, &c) != 0)
        return -1;
    c.not_confirmed = s->not_confirmed;

    c.stock_ok = c.available + c.reserved == restocked && c.reserved == c.orders * SAGA_QTY;
    if (!c.stock_ok)
        failed(&c, "stock: available %lld + reserved %lld, restocked %lld; reserved should be %lld", c.available,
               c.reserved, restocked, c.orders * SAGA_QTY);
    c.money_ok = c.balance + c.charged == deposited && c.charged == c.orders * SAGA_AMOUNT;
    if (!c.money_ok)
        failed(&c, "money: balance %lld + charged %lld, deposited %lld; charged should be %lld", c.balance,
               c.charged, deposited, c.orders * SAGA_AMOUNT);
    c.orders_ok = c.not_confirmed == 0;
    if (!c.orders_ok)
        failed(&c, "%lld order(s) confirmed to the caller are not 'confirmed' in orders", c.not_confirmed);

    if (c.orders > NOTIFY_CHECK_MAX) {
        c.notified_ok = true;
        c.notifications = -1; /* not checked: the list would not fit in one NATS message */
    } else {
        until = bench_now_ns() + (int64_t)NOTIFY_WAIT_MS * 1000000;
        for (;;) {
            if (notification_count(s, &c.notifications) != 0)
                return -1;
            if (c.notifications >= c.orders || bench_now_ns() >= until || bench_should_stop())
                break;
            bench_sleep_ms(50);
        }
        c.notified_ok = c.notifications == c.orders;
        if (!c.notified_ok)
            failed(&c, "notifications: %lld recorded for %lld orders", c.notifications, c.orders);
    }
    c.ok = c.stock_ok && c.money_ok && c.orders_ok && c.events_ok && c.notified_ok;
    *out = c;
    return 0;
}
