/*
 * test_recovery.c -- durable mode kept to its word, end to end: the four
 * saga services as real child processes in durable mode against this
 * binary's nats-server (JetStream), crashed on cue with NATOMIC_FAULTS,
 * restarted, and judged only from outside -- their replies, the recovery
 * events on natomic.recovery.orders, the KV buckets natomic_saga_orders
 * and natomic_lease_orders, the EVENTS stream, and the SQLite files
 * opened read-only.
 *
 *   1. the saga log cannot be written: on the first write (the order's
 *      own cancel) the call fails before any step; on the write for the
 *      reserve step's compensation it fails before the reserve leaves,
 *      inventory never hears of it and the order ends cancelled; the next
 *      call succeeds either way;
 *   2. the orchestrator dies after the charge and comes back under the
 *      same instance name: it takes its saga over at once, refunds,
 *      releases and cancels, tells "claimed" and "ended" once each, and
 *      the caller's idempotency key replays "Interrupted" and runs nothing;
 *   3. two new instances race for a dead one's saga -- both are held at
 *      their claim until both hold one, then let go: one claim, each
 *      compensation run once (three rounds);
 *   4. a dead instance's saga is claimed only once its lease is gone (the
 *      test keeps the lease alive for a while, then lets it expire);
 *   5. a crash between the commit and the publish: the outbox row is
 *      published once by the restarted process, and notified once; the
 *      caller's retry with its key gets the committed reply;
 *   6. a publish sent twice is kept once by the stream (and notified once);
 *   7. a consumer that was down catches up on what it missed, once;
 *   8. durable mode against a server without JetStream refuses to start
 *      and says how to fix it; memory mode runs there;
 *   9. the lesson: memory mode, crashed and restarted the same way as in 2,
 *      leaves the order pending and the money charged;
 *  10. natomic/after_handler=error on a call whose handler committed itself
 *      (natomic_durable_commit): nothing is left to fail, so the caller gets
 *      its success -- not an error for an order that is confirmed and
 *      announced (before, the caller was told InjectedFault while the order
 *      was confirmed and order_created left: what natomic-lab explore saw
 *      as a broken no_premature_events in durable mode).
 *
 * Every test starts from empty JetStream state (all streams of the shared
 * server are deleted first), so no saga, lease or consumer of an earlier
 * test can be claimed, expire or deliver into a later one. Waits are
 * bounded and scaled (fixture_ms); nothing asserts on how long something
 * took.
 */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "embedded_nats.h"
#include "notifications.pb-c.h"
#include "saga_fixture.h"

#define SKU "book"
#define CUSTOMER "alice"
#define STOCK 10
#define DEPOSIT 10000
#define QTY 2
#define PRICE 3000

#define CALL_MS 10000         /* a call that is answered                                  */
#define CRASH_CALL_MS 2000    /* a call whose orchestrator dies: the reply never comes     */
#define RECOVERY_MS 5000      /* a recovery that is due (the lease, when it matters, comes on top) */
#define LEASE_MS 2000         /* the services' lease (natomic_service_config_t default)   */
#define SETTLE_MS 1000        /* two recovery rounds: a second claim or publish would show */
#define QUIET_MS 300
#define LEASE_RENEW_MS 300    /* how often the test renews a lease it holds for a dead instance */

#define SAGA_STREAM "KV_natomic_saga_orders"
#define LEASE_BUCKET "natomic_lease_orders"
#define ORDER_CREATED "events.orders.order_created"
#define RECOVERY_SUBJECT NATOMIC_RECOVERY_PREFIX ".orders"
#define NOTIFY_CONSUMER "notifications-orders-order_created"
#define CRASH_AFTER_CHARGE "orders/create_order/after_charge=crash@1"

/* ---- the rig: the services, their server's JetStream, what recovery tells --- */

typedef struct recovery_event {
    char event[16];
    char instance[72];
    char call_id[72];
} recovery_event_t;

#define MAX_SEEN 128

typedef struct rig {
    saga_t s;                     /* nc, the core order_created subscription, the four services */
    fixture_child_t extra[2];     /* more orders instances on the same orders store */
    const char *mode;             /* "durable" or "memory" */
    jsCtx *js;
    kvStore *leases;              /* natomic_lease_orders, opened on first use */
    natsSubscription *recovery;   /* natomic.recovery.orders, from before any service ran */
    recovery_event_t seen[MAX_SEEN];
    int n_seen;
} rig_t;

/* Deletes every stream of the server: saga logs, leases, EVENTS and its consumers. */
static void reset_jetstream(rig_t *r)
{
    jsStreamNamesList *names = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_StreamNames(&names, r->js, NULL, &jerr);
    if (s == NATS_NOT_FOUND)
        return;
    ck_assert_msg(s == NATS_OK, "js_StreamNames: %s (error %d)", natsStatus_GetText(s), (int)jerr);
    for (int i = 0; i < names->Count; i++) {
        s = js_DeleteStream(r->js, names->List[i], NULL, &jerr);
        ck_assert_msg(s == NATS_OK || s == NATS_NOT_FOUND, "deleting stream %s: %s (error %d)", names->List[i],
                      natsStatus_GetText(s), (int)jerr);
    }
    jsStreamNamesList_Destroy(names);
}

/*
 * Starts `name` ($bin_env) against the binary's server with the store
 * c->db_path, in `mode`, as `instance` (NULL: a random name), with
 * NATOMIC_FAULTS=`faults` (NULL: none) and, if `fault_control`, the fault
 * control subjects; TMPDIR is the work folder (libfiu's FIFOs go with it).
 * Output is appended to c->log_path (made once). Does not wait.
 */
static void service_spawn(fixture_child_t *c, const char *bin_env, const char *name, const char *mode,
                          const char *instance, const char *faults, bool fault_control)
{
    if (c->log_path[0] == '\0') {
        char stem[128];
        snprintf(stem, sizeof stem, "%s-%s", instance != NULL ? instance : name, mode);
        fixture_path(c->log_path, sizeof c->log_path, stem, ".log");
    }
    c->name = name;
    char tmpdir[600], faults_env[512], control[32], no_mode[] = "NATOMIC_MODE=", no_instance[] = "NATOMIC_INSTANCE=";
    snprintf(tmpdir, sizeof tmpdir, "TMPDIR=%s", fixture_work_dir());
    snprintf(faults_env, sizeof faults_env, "NATOMIC_FAULTS=%s", faults != NULL ? faults : "");
    snprintf(control, sizeof control, "NATOMIC_FAULT_CONTROL=%s", fault_control ? "1" : "");
    char *const env[] = {tmpdir, faults_env, control, no_mode, no_instance, NULL};
    const char *args[] = {"--nats", fixture_nats_url(), "--db", c->db_path, "--mode", mode,
                          instance != NULL ? "--instance" : NULL, instance, NULL};
    fixture_spawn(c, fixture_bin(bin_env), args, env);
}

/* service_spawn, then waits until $SRV.PING.<name> answers; asserts (with the log) when it died or never did. */
static void service_start(rig_t *r, fixture_child_t *c, const char *bin_env, const char *name, const char *instance,
                          const char *faults, bool fault_control)
{
    service_spawn(c, bin_env, name, r->mode, instance, faults, fault_control);
    if (fixture_wait_ping(c, r->s.nc, name))
        return;
    int status = fixture_stop_child(c, SIGKILL);
    ck_abort_msg("%s (%s mode, instance %s) never answered $SRV.PING.%s (wait status %#x; log: %s)", name, r->mode,
                 instance != NULL ? instance : "random", name, (unsigned)status, c->log_path);
}

/* Starts orders in the rig's mode on the rig's orders store. */
static void orders_start(rig_t *r, const char *instance, const char *faults, bool fault_control)
{
    service_start(r, &r->s.orders, "ORDERS_BIN", "orders", instance, faults, fault_control);
}

/*
 * Empties JetStream, connects, subscribes to order_created (core) and to
 * the recovery events, starts inventory, payments and notifications in
 * `mode` with fresh stores, and seeds STOCK books and DEPOSIT cents for
 * CUSTOMER. orders' store is named; orders_start() starts it.
 */
static void rig_start(rig_t *r, const char *mode)
{
    memset(r, 0, sizeof *r);
    r->mode = mode;
    r->s.nc = fixture_connect();
    natsStatus s = natsConnection_JetStream(&r->js, r->s.nc, NULL);
    ck_assert_msg(s == NATS_OK, "natsConnection_JetStream: %s", natsStatus_GetText(s));
    reset_jetstream(r);
    s = natsConnection_SubscribeSync(&r->s.events, r->s.nc, ORDER_CREATED);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(r->s.events, -1, -1);
    if (s == NATS_OK)
        s = natsConnection_SubscribeSync(&r->recovery, r->s.nc, RECOVERY_SUBJECT);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(r->recovery, -1, -1);
    if (s == NATS_OK)
        s = natsConnection_Flush(r->s.nc);
    ck_assert_msg(s == NATS_OK, "subscribing to %s and %s: %s", ORDER_CREATED, RECOVERY_SUBJECT,
                  natsStatus_GetText(s));
    struct {
        fixture_child_t *c;
        const char *name, *bin_env;
    } parts[] = {{&r->s.inventory, "inventory", "INVENTORY_BIN"},
                 {&r->s.payments, "payments", "PAYMENTS_BIN"},
                 {&r->s.notifications, "notifications", "NOTIFICATIONS_BIN"}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        fixture_path(parts[i].c->db_path, sizeof parts[i].c->db_path, parts[i].name, ".db");
        service_start(r, parts[i].c, parts[i].bin_env, parts[i].name, NULL, NULL, false);
    }
    fixture_path(r->s.orders.db_path, sizeof r->s.orders.db_path, "orders", ".db");
    for (int i = 0; i < 2; i++)
        memcpy(r->extra[i].db_path, r->s.orders.db_path, sizeof r->extra[i].db_path);
    saga_restock(&r->s, SKU, STOCK);
    saga_deposit(&r->s, CUSTOMER, DEPOSIT);
}

/*
 * Stops every service still running with SIGTERM (orders first) and
 * asserts each exited 0; one that ended earlier (a crash the test caused
 * and checked) keeps its status. Closes the connection.
 */
static void rig_stop(rig_t *r)
{
    fixture_child_t *all[] = {&r->s.orders, &r->extra[0], &r->extra[1], &r->s.notifications, &r->s.payments,
                              &r->s.inventory};
    enum { N = sizeof all / sizeof all[0] };
    bool running[N];
    int status[N];
    for (int i = 0; i < N; i++) {
        running[i] = !all[i]->reaped && all[i]->proc.pid > 0;
        status[i] = fixture_stop_child(all[i], SIGTERM);
    }
    kvStore_Destroy(r->leases);
    jsCtx_Destroy(r->js);
    natsSubscription_Destroy(r->recovery);
    natsSubscription_Destroy(r->s.events);
    natsConnection_Destroy(r->s.nc);
    for (int i = 0; i < N; i++)
        ck_assert_msg(!running[i] || (WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0),
                      "%s ended with wait status %#x, expected a clean exit 0 (log: %s)", all[i]->name,
                      (unsigned)status[i], all[i]->log_path);
}

/* Waits until `c` died by SIGKILL (a crash fault point); asserts, with its log, otherwise. */
static void wait_crash(fixture_child_t *c, const char *point)
{
    int status = 0;
    if (!fixture_wait_exit(c, fixture_ms(10000), &status)) {
        status = fixture_stop_child(c, SIGKILL);
        ck_abort_msg("%s did not crash at %s within 10 s (killed now; log: %s)", c->name, point, c->log_path);
    }
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "%s: expected death by SIGKILL at %s, got wait status %#x (log: %s)", c->name, point,
                  (unsigned)status, c->log_path);
}

/* ---- JetStream: streams and leases --------------------------------------- */

/* Messages `stream` holds on `subject` (NULL: all of them); 0 when the stream does not exist. */
static int64_t stream_count(rig_t *r, const char *stream, const char *subject)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = subject;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, r->js, stream, subject != NULL ? &o : NULL, &jerr);
    if (s == NATS_NOT_FOUND)
        return 0;
    ck_assert_msg(s == NATS_OK, "stream info of %s: %s (error %d)", stream, natsStatus_GetText(s), (int)jerr);
    int64_t n = 0;
    if (subject == NULL) {
        n = (int64_t)si->State.Msgs;
    } else if (si->State.Subjects != NULL) {
        for (int i = 0; i < si->State.Subjects->Count; i++)
            if (strcmp(si->State.Subjects->List[i].Subject, subject) == 0)
                n += (int64_t)si->State.Subjects->List[i].Msgs;
    }
    jsStreamInfo_Destroy(si);
    return n;
}

static kvStore *lease_bucket(rig_t *r)
{
    if (r->leases == NULL) {
        natsStatus s = js_KeyValue(&r->leases, r->js, LEASE_BUCKET);
        ck_assert_msg(s == NATS_OK, "opening the KV bucket %s: %s", LEASE_BUCKET, natsStatus_GetText(s));
    }
    return r->leases;
}

/* True while the lease bucket holds the key of `instance`. */
static bool lease_present(rig_t *r, const char *instance)
{
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, lease_bucket(r), instance);
    kvEntry_Destroy(e);
    if (s == NATS_NOT_FOUND)
        return false;
    ck_assert_msg(s == NATS_OK, "reading the lease of %s in %s: %s", instance, LEASE_BUCKET, natsStatus_GetText(s));
    return true;
}

/* Waits until orders instance `instance` holds its lease (it is past its durable start); asserts it did not die. */
static void wait_instance(rig_t *r, fixture_child_t *c, const char *instance)
{
    int64_t end = fixture_now_ms() + fixture_ms(10000);
    while (!lease_present(r, instance)) {
        int status = 0;
        ck_assert_msg(!fixture_wait_exit(c, 0, &status), "orders %s died at start (wait status %#x, log: %s)",
                      instance, (unsigned)status, c->log_path);
        ck_assert_msg(fixture_now_ms() < end, "orders %s took no lease within 10 s (log: %s)", instance,
                      c->log_path);
        fixture_sleep_ms(20);
    }
}

/* Copies the lease value of `instance` (it must be there) into out[cap]; returns its length. */
static size_t lease_copy(rig_t *r, const char *instance, void *out, size_t cap)
{
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, lease_bucket(r), instance);
    ck_assert_msg(s == NATS_OK, "the lease of live instance %s: %s", instance, natsStatus_GetText(s));
    size_t len = (size_t)kvEntry_ValueLen(e);
    ck_assert_msg(len > 0 && len <= cap, "lease of %s: %zu bytes", instance, len);
    memcpy(out, kvEntry_Value(e), len);
    kvEntry_Destroy(e);
    return len;
}

/* Writes the lease of `instance` as the instance itself would (renewal). */
static void lease_put(rig_t *r, const char *instance, const void *value, size_t len)
{
    uint64_t rev = 0;
    natsStatus s = kvStore_Put(&rev, lease_bucket(r), instance, value, (int)len);
    ck_assert_msg(s == NATS_OK, "renewing the lease of %s: %s", instance, natsStatus_GetText(s));
}

/* The consumer of notifications has every event it was handed acknowledged. */
static bool consumer_settled(rig_t *r)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, r->js, NATOMIC_EVENTS_STREAM, NOTIFY_CONSUMER, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "the durable consumer %s on %s: %s (error %d)", NOTIFY_CONSUMER,
                  NATOMIC_EVENTS_STREAM, natsStatus_GetText(s), (int)jerr);
    bool settled = ci->NumAckPending == 0 && ci->NumPending == 0;
    jsConsumerInfo_Destroy(ci);
    return settled;
}

/* The Natomic-Event-Id of the last message the EVENTS stream holds on order_created, into out[cap]. */
static void stream_last_event_id(rig_t *r, char *out, size_t cap)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, r->js, NATOMIC_EVENTS_STREAM, ORDER_CREATED, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "last %s in %s: %s (error %d)", ORDER_CREATED, NATOMIC_EVENTS_STREAM,
                  natsStatus_GetText(s), (int)jerr);
    const char *id = fixture_header(m, NATOMIC_HDR_EVENT_ID);
    snprintf(out, cap, "%s", id != NULL ? id : "");
    natsMsg_Destroy(m);
}

/* ---- recovery events ------------------------------------------------------ */

/* Takes what arrived on natomic.recovery.orders, waiting up to wait_ms for the first; checks the format. */
static void recovery_read(rig_t *r, int wait_ms)
{
    int64_t timeout = wait_ms > 0 ? wait_ms : 1;
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, r->recovery, timeout) == NATS_OK) {
        timeout = 1;
        char text[1024];
        snprintf(text, sizeof text, "%.*s", natsMsg_GetDataLength(m), natsMsg_GetData(m));
        natsMsg_Destroy(m);
        fprintf(stderr, "recovery event: %s\n", text);
        json_error_t err;
        json_t *doc = json_loads(text, 0, &err);
        const char *event = NULL, *service = NULL, *instance = NULL, *call_id = NULL, *tx = NULL, *detail = NULL;
        json_int_t time_ns = 0;
        int rc = doc != NULL ? json_unpack(doc, "{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "event", &event, "service",
                                           &service, "instance", &instance, "call_id", &call_id, "tx", &tx, "detail",
                                           &detail, "time_ns", &time_ns)
                             : -1;
        if (rc != 0) {
            json_decref(doc);
            ck_abort_msg("a recovery event that is not {event, service, instance, call_id, tx, detail, time_ns}: %s",
                         text);
        }
        bool known = strcmp(event, "claimed") == 0 || strcmp(event, "compensated") == 0 ||
                     strcmp(event, "deferred") == 0 || strcmp(event, "ended") == 0;
        bool ours = strcmp(service, "orders") == 0;
        if (known && ours && r->n_seen < MAX_SEEN) {
            recovery_event_t *e = &r->seen[r->n_seen++];
            snprintf(e->event, sizeof e->event, "%s", event);
            snprintf(e->instance, sizeof e->instance, "%s", instance);
            snprintf(e->call_id, sizeof e->call_id, "%s", call_id);
        }
        json_decref(doc);
        ck_assert_msg(known, "recovery event '%s' is none of claimed, compensated, deferred, ended: %s", event, text);
        ck_assert_msg(ours, "an event of service '%s' on %s: %s", service, RECOVERY_SUBJECT, text);
        ck_assert_msg(r->n_seen < MAX_SEEN, "more than %d recovery events", MAX_SEEN);
    }
}

/* How many `event`s were seen for call_id; the instance of the last one into instance[cap] (may be NULL). */
static int recovery_count(const rig_t *r, const char *event, const char *call_id, char *instance, size_t cap)
{
    int n = 0;
    for (int i = 0; i < r->n_seen; i++) {
        if (strcmp(r->seen[i].event, event) == 0 && strcmp(r->seen[i].call_id, call_id) == 0) {
            n++;
            if (instance != NULL)
                snprintf(instance, cap, "%s", r->seen[i].instance);
        }
    }
    return n;
}

/* Waits up to total_ms for an `event` of call_id; returns how many were seen. */
static int recovery_wait(rig_t *r, const char *event, const char *call_id, int total_ms)
{
    int64_t end = fixture_now_ms() + total_ms;
    int n;
    while ((n = recovery_count(r, event, call_id, NULL, 0)) == 0 && fixture_now_ms() < end)
        recovery_read(r, 50);
    return n;
}

/* ---- calls ------------------------------------------------------------------ */

static void order_request(Orders__CreateOrderRequest *req)
{
    Orders__CreateOrderRequest init = ORDERS__CREATE_ORDER_REQUEST__INIT;
    *req = init;
    req->customer = (char *)CUSTOMER;
    req->sku = (char *)SKU;
    req->qty = QTY;
    req->amount = PRICE;
}

/*
 * orders.create_order for QTY books at PRICE, with the idempotency key
 * `key` (NULL: none), waiting timeout_ms. Does not assert (safe from any
 * thread). On NATOMIC_OK, *reply (may be NULL) is the decoded reply.
 */
static natomic_status_t create_order(rig_t *r, const char *key, int timeout_ms, Orders__OrderReply **reply,
                                     natomic_call_info_t *info)
{
    Orders__CreateOrderRequest req;
    order_request(&req);
    ProtobufCMessage *out = NULL;
    natomic_status_t st = natomic_request_idempotent(&out, r->s.nc, "orders.create_order", &req.base,
                                                     &orders__order_reply__descriptor, timeout_ms, key, info);
    if (st == NATOMIC_OK) {
        if (reply != NULL)
            *reply = (Orders__OrderReply *)out;
        else
            protobuf_c_message_free_unpacked(out, NULL);
    }
    return st;
}

/* create_order, asserting success and a confirmed order; its id into order_id[cap]. */
static void create_order_ok(rig_t *r, char *order_id, size_t cap)
{
    Orders__OrderReply *reply = NULL;
    natomic_call_info_t info;
    natomic_status_t st = create_order(r, NULL, fixture_ms(CALL_MS), &reply, &info);
    ck_assert_msg(st == NATOMIC_OK, "create_order: expected success, got %s (%s: %s)", natomic_status_name(st),
                  info.type, info.message);
    ck_assert_str_eq(reply->status, "confirmed");
    snprintf(order_id, cap, "%s", reply->order_id);
    orders__order_reply__free_unpacked(reply, NULL);
}

/* Sends create_order (with the idempotency key `key`, NULL: none) and does not wait for an
   answer: its orchestrator is about to crash. */
static void send_create_order(rig_t *r, const char *key)
{
    Orders__CreateOrderRequest req;
    order_request(&req);
    uint8_t buf[256];
    size_t len = protobuf_c_message_get_packed_size(&req.base);
    ck_assert_uint_le(len, sizeof buf);
    protobuf_c_message_pack(&req.base, buf);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, "orders.create_order", "_INBOX.recovery.nobody-listens", (const char *)buf,
                                  (int)len);
    if (s == NATS_OK && key != NULL)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_IDEMPOTENCY_KEY, key);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(r->s.nc, m);
    natsMsg_Destroy(m);
    if (s == NATS_OK)
        s = natsConnection_Flush(r->s.nc);
    ck_assert_msg(s == NATS_OK, "sending orders.create_order: %s", natsStatus_GetText(s));
}

/* Sends `spec` to $NATOMIC.FAULTS.orders (orders runs with NATOMIC_FAULT_CONTROL=1); asserts "ok". */
static void apply_faults(rig_t *r, const char *spec)
{
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, r->s.nc, "$NATOMIC.FAULTS.orders", spec, fixture_ms(5000));
    ck_assert_msg(s == NATS_OK, "fault control '%s': %s", spec, natsStatus_GetText(s));
    char text[256];
    snprintf(text, sizeof text, "%.*s", natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
    natsMsg_Destroy(reply);
    ck_assert_msg(strcmp(text, "ok") == 0, "fault control refused '%s': %s", spec, text);
}

/* A service's counter from $SRV.STATS.<service>: data.<name>, or data.barrier.<outcome> with name "barrier". */
static int64_t service_stat(rig_t *r, const char *service, const char *name, const char *outcome)
{
    char subject[96];
    snprintf(subject, sizeof subject, "$SRV.STATS.%s", service);
    natsMsg *m = NULL;
    natsStatus s = natsConnection_RequestString(&m, r->s.nc, subject, "", fixture_ms(5000));
    ck_assert_msg(s == NATS_OK, "%s: %s", subject, natsStatus_GetText(s));
    json_error_t err;
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &err);
    natsMsg_Destroy(m);
    json_t *data = json_object_get(json_array_get(json_object_get(doc, "endpoints"), 0), "data");
    json_t *v = json_object_get(data, name);
    if (outcome != NULL)
        v = json_object_get(v, outcome);
    bool found = json_is_integer(v);
    int64_t n = found ? (int64_t)json_integer_value(v) : -1;
    json_decref(doc);
    ck_assert_msg(found, "%s has no counter %s%s%s", subject, name, outcome != NULL ? "." : "",
                  outcome != NULL ? outcome : "");
    return n;
}

/* ---- the databases (read-only) ------------------------------------------- */

/* The one text result of `fmt` (sqlite3_mprintf) on the file `path`, "" for no row or NULL. */
static void db_text(char *out, size_t cap, const char *path, const char *fmt, ...)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    va_list ap;
    va_start(ap, fmt);
    char *sql = rc == SQLITE_OK ? sqlite3_vmprintf(fmt, ap) : NULL;
    va_end(ap);
    sqlite3_stmt *st = NULL;
    if (rc == SQLITE_OK)
        rc = sql != NULL ? sqlite3_prepare_v2(db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    out[0] = '\0';
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    char err[256];
    snprintf(err, sizeof err, "%s", db != NULL ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        char q[256];
        snprintf(q, sizeof q, "%s", sql != NULL ? sql : fmt);
        sqlite3_free(sql);
        ck_abort_msg("%s on %s: %s", q, path, err);
    }
    sqlite3_free(sql);
}

/* The status of order_id in the orders store, or "missing". */
static void order_status(rig_t *r, const char *order_id, char *out, size_t cap)
{
    db_text(out, cap, r->s.orders.db_path,
            "SELECT coalesce((SELECT status FROM orders WHERE order_id = %Q), 'missing')", order_id);
}

/* The only order in `status`: its id, call id (the id without "ord-") and transaction. */
static void only_order(rig_t *r, const char *status, char order_id[128], char call_id[128], char tx[128])
{
    int64_t n = fixture_db_int(r->s.orders.db_path, "SELECT count(*) FROM orders WHERE status = %Q", status);
    ck_assert_msg(n == 1, "orders in status %s: expected 1, got %lld", status, (long long)n);
    db_text(order_id, 128, r->s.orders.db_path, "SELECT order_id FROM orders WHERE status = %Q", status);
    db_text(tx, 128, r->s.orders.db_path, "SELECT tx FROM orders WHERE status = %Q", status);
    ck_assert_msg(strncmp(order_id, "ord-", 4) == 0, "order id '%s' does not start with ord-", order_id);
    snprintf(call_id, 128, "%s", order_id + 4);
}

typedef struct figures {
    int64_t available, reserved; /* books */
    int64_t balance, charged;    /* CUSTOMER's cents */
} figures_t;

static figures_t read_figures(rig_t *r)
{
    figures_t f;
    f.available = fixture_db_int(r->s.inventory.db_path, "SELECT available FROM stock WHERE sku = %Q", SKU);
    f.reserved = fixture_db_int(r->s.inventory.db_path, "SELECT reserved FROM stock WHERE sku = %Q", SKU);
    f.balance = fixture_db_int(r->s.payments.db_path, "SELECT balance FROM accounts WHERE customer = %Q", CUSTOMER);
    f.charged = fixture_db_int(r->s.payments.db_path, "SELECT charged FROM accounts WHERE customer = %Q", CUSTOMER);
    return f;
}

static bool figures_equal(figures_t a, figures_t b)
{
    return a.available == b.available && a.reserved == b.reserved && a.balance == b.balance && a.charged == b.charged;
}

#define UNTOUCHED ((figures_t){STOCK, 0, DEPOSIT, 0})
#define ONE_ORDER ((figures_t){STOCK - QTY, QTY, DEPOSIT - PRICE, PRICE})

/* Asserts the books and the money are `want`, printing both. */
static void expect_figures(rig_t *r, figures_t want, const char *when)
{
    figures_t got = read_figures(r);
    ck_assert_msg(figures_equal(got, want),
                  "%s: books available/reserved %lld/%lld, money balance/charged %lld/%lld; expected %lld/%lld and "
                  "%lld/%lld",
                  when, (long long)got.available, (long long)got.reserved, (long long)got.balance,
                  (long long)got.charged, (long long)want.available, (long long)want.reserved,
                  (long long)want.balance, (long long)want.charged);
}

/* Waits (bounded) until the books and money are `want` and order_id has `status`; then asserts both. */
static void wait_settled(rig_t *r, figures_t want, const char *order_id, const char *status, int total_ms,
                         const char *when)
{
    int64_t end = fixture_now_ms() + total_ms;
    char got[32];
    for (;;) {
        order_status(r, order_id, got, sizeof got);
        if ((figures_equal(read_figures(r), want) && strcmp(got, status) == 0) || fixture_now_ms() >= end)
            break;
        fixture_sleep_ms(20);
    }
    expect_figures(r, want, when);
    ck_assert_msg(strcmp(got, status) == 0, "%s: order %s is '%s', expected '%s'", when, order_id, got, status);
}

/* Barrier rows of `tx` with op `op` in a participant's store. */
static int64_t barrier_rows(const fixture_child_t *participant, const char *tx, const char *op)
{
    return fixture_db_int(participant->db_path, "SELECT count(*) FROM natomic_barrier WHERE tx = %Q AND op = %Q", tx,
                          op);
}

static int64_t notifications_of(rig_t *r, const char *order_id)
{
    return fixture_db_int(r->s.notifications.db_path, "SELECT count(*) FROM notifications WHERE order_id = %Q",
                          order_id);
}

/* Waits (bounded) until notifications recorded order_id; returns the count then. */
static int64_t wait_notification(rig_t *r, const char *order_id, int total_ms)
{
    int64_t end = fixture_now_ms() + total_ms, n;
    while ((n = notifications_of(r, order_id)) == 0 && fixture_now_ms() < end)
        fixture_sleep_ms(20);
    return n;
}

/* No order_created reached the core subscription within QUIET_MS. */
static void expect_no_event(rig_t *r)
{
    Orders__OrderCreated *ev[4];
    int n = saga_collect_events(&r->s, ev, NULL, 4, 0, QUIET_MS, fixture_ms(QUIET_MS));
    for (int i = 0; i < n && i < 4; i++) {
        fprintf(stderr, "unexpected order_created for %s\n", ev[i]->order_id);
        orders__order_created__free_unpacked(ev[i], NULL);
    }
    ck_assert_msg(n == 0, "order_created events on core NATS: expected 0, got %d", n);
}

/* ---- 1. the saga log cannot be written ---------------------------------- */

START_TEST(test_log_write_fails_before_any_step)
{
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, NULL, "natomic/before_log_write=error@1", false);

    natomic_call_info_t info;
    natomic_status_t st = create_order(&r, NULL, fixture_ms(CALL_MS), NULL, &info);
    fprintf(stderr, "log write failed at the first write: %s %d %s: %s (rollback %s)\n", natomic_status_name(st),
            info.code, info.type, info.message, natomic_outcome_name(info.rollback));
    ck_assert_msg(st == NATOMIC_ETRANSIENT && info.code == 503,
                  "create_order with an unwritable saga log: expected NATOMIC_ETRANSIENT (503, retry), got %s (%d)",
                  natomic_status_name(st), info.code);
    ck_assert_msg(info.type[0] != '\0', "the error reply names no type");
    ck_assert_msg(strstr(info.message, "saga log") != NULL, "the message does not say the saga log failed: '%s'",
                  info.message);
    ck_assert_msg(info.rollback != NATOMIC_OUTCOME_INCOMPLETE, "Natomic-Rollback: %s, expected none or complete",
                  natomic_outcome_name(info.rollback));
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "none");

    /* Nothing reserved, nothing charged, no live order, nothing in the log. */
    expect_figures(&r, UNTOUCHED, "after the failed call");
    ck_assert_int_eq(fixture_db_int(r.s.inventory.db_path, "SELECT count(*) FROM reservations"), 0);
    ck_assert_int_eq(fixture_db_int(r.s.inventory.db_path, "SELECT count(*) FROM natomic_barrier"), 0);
    ck_assert_int_eq(fixture_db_int(r.s.payments.db_path, "SELECT count(*) FROM charges"), 0);
    ck_assert_int_eq(fixture_db_int(r.s.payments.db_path, "SELECT count(*) FROM natomic_barrier"), 0);
    ck_assert_int_eq(fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM orders WHERE status != 'cancelled'"),
                     0);
    ck_assert_int_eq(stream_count(&r, SAGA_STREAM, NULL), 0);
    expect_no_event(&r);

    /* The fault fired once: the next order goes through. */
    char order_id[128];
    create_order_ok(&r, order_id, sizeof order_id);
    expect_figures(&r, ONE_ORDER, "after the next call");
    rig_stop(&r);
}
END_TEST

typedef struct pending_call {
    rig_t *rig;
    pthread_t thread;
    natomic_status_t status;
    natomic_call_info_t info;
} pending_call_t;

static void *pending_call_main(void *arg)
{
    pending_call_t *c = arg;
    c->status = create_order(c->rig, NULL, fixture_ms(CALL_MS), NULL, &c->info);
    return NULL;
}

START_TEST(test_log_write_fails_before_reserve)
{
    /* The first write (the order's cancel) goes through and pauses right after; meanwhile
       the next write -- the reserve step's compensation -- is made to fail, then the pause ends.
       ("before_log_write=error@2" would fail the first two writes, not the second.) */
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, NULL, "natomic/after_log_write=pause@1", true);

    pending_call_t call = {.rig = &r};
    ck_assert_int_eq(pthread_create(&call.thread, NULL, pending_call_main, &call), 0);
    int64_t end = fixture_now_ms() + fixture_ms(10000);
    while (stream_count(&r, SAGA_STREAM, NULL) == 0 && fixture_now_ms() < end)
        fixture_sleep_ms(10);
    int64_t records = stream_count(&r, SAGA_STREAM, NULL);
    if (records != 1) {
        apply_faults(&r, "natomic/after_log_write=off");
        pthread_join(call.thread, NULL);
        ck_abort_msg("saga log records after the first write: expected 1, got %lld", (long long)records);
    }
    apply_faults(&r, "natomic/before_log_write=error@1;natomic/after_log_write=off");
    pthread_join(call.thread, NULL);

    natomic_status_t st = call.status;
    fprintf(stderr, "log write failed at the reserve's compensation: %s %d %s: %s (rollback %s)\n",
            natomic_status_name(st), call.info.code, call.info.type, call.info.message,
            natomic_outcome_name(call.info.rollback));
    ck_assert_msg(st != NATOMIC_OK && st != NATOMIC_ETIMEOUT, "create_order: expected an error reply, got %s",
                  natomic_status_name(st));
    ck_assert_msg(call.info.type[0] != '\0', "the error reply names no type");
    ck_assert_msg(strstr(call.info.message, "saga log") != NULL, "the message does not say the saga log failed: '%s'",
                  call.info.message);
    /* The order's cancel was logged and ran. */
    ck_assert_str_eq(natomic_outcome_name(call.info.rollback), "complete");
    char order_id[128];
    saga_order_id_from_message(order_id, sizeof order_id, call.info.message);
    char status[32];
    order_status(&r, order_id, status, sizeof status);
    ck_assert_str_eq(status, "cancelled");

    /* inventory never saw a reserve (nor a release), payments nothing. */
    expect_figures(&r, UNTOUCHED, "after the failed call");
    ck_assert_int_eq(fixture_db_int(r.s.inventory.db_path, "SELECT count(*) FROM reservations"), 0);
    ck_assert_int_eq(fixture_db_int(r.s.inventory.db_path, "SELECT count(*) FROM natomic_barrier"), 0);
    ck_assert_int_eq(fixture_db_int(r.s.payments.db_path, "SELECT count(*) FROM charges"), 0);
    ck_assert_int_eq(fixture_db_int(r.s.payments.db_path, "SELECT count(*) FROM natomic_barrier"), 0);
    ck_assert_int_eq(stream_count(&r, SAGA_STREAM, NULL), 0);
    expect_no_event(&r);

    char next[128];
    create_order_ok(&r, next, sizeof next);
    expect_figures(&r, ONE_ORDER, "after the next call");
    rig_stop(&r);
    /* The same cause as a failing first write, the same kind for the caller: retry may succeed. */
    ck_assert_msg(st == NATOMIC_ETRANSIENT && call.info.code == 503,
                  "a saga log write that failed before the reserve was reported as %s (%d %s); the same failure "
                  "at the first write is NATOMIC_ETRANSIENT (503 Unavailable)",
                  natomic_status_name(st), call.info.code, call.info.type);
}
END_TEST

/* ---- 2. crash after the charge, restart under the same name ------------- */

START_TEST(test_restart_same_instance_recovers)
{
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, "orders-0", CRASH_AFTER_CHARGE, false);

    natomic_call_info_t info;
    natomic_status_t st = create_order(&r, "key-crash-1", fixture_ms(CRASH_CALL_MS), NULL, &info);
    ck_assert_msg(st == NATOMIC_ETIMEOUT, "create_order whose orchestrator dies: expected NATOMIC_ETIMEOUT, got %s",
                  natomic_status_name(st));
    wait_crash(&r.s.orders, "orders/create_order/after_charge");

    /* The crash left the saga half done, and its compensations in the log. */
    char order_id[128], call_id[128], tx[128];
    only_order(&r, "pending", order_id, call_id, tx);
    expect_figures(&r, ONE_ORDER, "after the crash");
    ck_assert_int_eq(stream_count(&r, SAGA_STREAM, NULL), 1);

    orders_start(&r, "orders-0", NULL, false);
    wait_settled(&r, UNTOUCHED, order_id, "cancelled", fixture_ms(RECOVERY_MS), "after orders-0 came back");
    ck_assert_int_eq(fixture_db_int(r.s.inventory.db_path,
                                    "SELECT count(*) FROM reservations WHERE order_id = %Q AND state = 'released'",
                                    order_id),
                     1);
    ck_assert_int_eq(fixture_db_int(r.s.payments.db_path,
                                    "SELECT count(*) FROM charges WHERE order_id = %Q AND state = 'refunded'",
                                    order_id),
                     1);

    /* Told once each: claimed by orders-0 itself, ended. */
    int ended = recovery_wait(&r, "ended", call_id, fixture_ms(RECOVERY_MS));
    recovery_read(&r, fixture_ms(SETTLE_MS));
    char claimer[72] = "";
    int claimed = recovery_count(&r, "claimed", call_id, claimer, sizeof claimer);
    ended = recovery_count(&r, "ended", call_id, NULL, 0);
    int compensated = recovery_count(&r, "compensated", call_id, NULL, 0);
    ck_assert_msg(claimed == 1, "'claimed' events for call %s: expected 1, got %d", call_id, claimed);
    ck_assert_msg(ended == 1, "'ended' events for call %s: expected 1, got %d", call_id, ended);
    ck_assert_str_eq(claimer, "orders-0");
    ck_assert_msg(compensated == 3, "'compensated' events for call %s: expected 3 (refund, release, cancel), got %d",
                  call_id, compensated);
    ck_assert_int_eq(stream_count(&r, SAGA_STREAM, NULL), 0);

    /* No order_created, anywhere. */
    ck_assert_int_eq(stream_count(&r, NATOMIC_EVENTS_STREAM, ORDER_CREATED), 0);
    expect_no_event(&r);

    /* The caller retries with its key: the stored outcome, and nothing runs. */
    int64_t orders = fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM orders");
    int64_t charges = fixture_db_int(r.s.payments.db_path, "SELECT count(*) FROM charges");
    int64_t reservations = fixture_db_int(r.s.inventory.db_path, "SELECT count(*) FROM reservations");
    st = create_order(&r, "key-crash-1", fixture_ms(CALL_MS), NULL, &info);
    fprintf(stderr, "retry with the key: %s %d %s: %s (replayed %d, rollback %s)\n", natomic_status_name(st),
            info.code, info.type, info.message, (int)info.replayed, natomic_outcome_name(info.rollback));
    ck_assert_msg(st == NATOMIC_ETRANSIENT, "retry with the key: expected NATOMIC_ETRANSIENT, got %s",
                  natomic_status_name(st));
    ck_assert_str_eq(info.type, "Interrupted");
    ck_assert_msg(info.replayed, "the retry's reply lacks %s: true", NATOMIC_HDR_REPLAYED);
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "complete");
    ck_assert_msg(strstr(info.message, call_id) != NULL, "the stored error does not name call %s: '%s'", call_id,
                  info.message);
    expect_figures(&r, UNTOUCHED, "after the retry");
    ck_assert_int_eq(fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM orders"), orders);
    ck_assert_int_eq(fixture_db_int(r.s.payments.db_path, "SELECT count(*) FROM charges"), charges);
    ck_assert_int_eq(fixture_db_int(r.s.inventory.db_path, "SELECT count(*) FROM reservations"), reservations);
    rig_stop(&r);
}
END_TEST

/* ---- 3. two heirs race for one saga ------------------------------------- */

#define RACE_ROUNDS 3
#define CLAIM_PAUSE "natomic/before_log_write=pause@1"

/* Waits (bounded) until the log of `c` contains `text`; false when it never did. */
static bool wait_log(const fixture_child_t *c, const char *text, int total_ms)
{
    static char log[1 << 18];
    int64_t end = fixture_now_ms() + total_ms;
    for (;;) {
        fixture_read_file(c->log_path, log, sizeof log);
        if (strstr(log, text) != NULL)
            return true;
        if (fixture_now_ms() >= end)
            return false;
        fixture_sleep_ms(20);
    }
}

/*
 * One round: orders-0 dies after the charge; orders-1 and orders-2 start
 * at once. Each heir's first saga log write is its claim, and each holds
 * there (pause) until both hold a claim of the same record: then both are
 * let go together, so both writes name the revision they read and exactly
 * one may succeed.
 */
static void claim_race_round(rig_t *r, int round)
{
    if (round > 0)
        orders_start(r, "orders-0", CRASH_AFTER_CHARGE, false);
    send_create_order(r, NULL);
    wait_crash(&r->s.orders, "orders/create_order/after_charge");
    char order_id[128], call_id[128], tx[128];
    only_order(r, "pending", order_id, call_id, tx);
    expect_figures(r, ONE_ORDER, "after the crash");

    const char *heirs[] = {"orders-1", "orders-2"};
    for (int i = 0; i < 2; i++) {
        r->extra[i].log_path[0] = '\0'; /* a log per round: the pause below is found in this round's */
        service_spawn(&r->extra[i], "ORDERS_BIN", "orders", "durable", heirs[i], CLAIM_PAUSE, true);
    }
    for (int i = 0; i < 2; i++)
        wait_instance(r, &r->extra[i], heirs[i]);
    fprintf(stderr, "round %d: orders-1 and orders-2 hold leases; orders-0's lease is %s\n", round,
            lease_present(r, "orders-0") ? "still there" : "already gone");
    for (int i = 0; i < 2; i++)
        ck_assert_msg(wait_log(&r->extra[i], "natomic/before_log_write fired", fixture_ms(LEASE_MS + RECOVERY_MS)),
                      "round %d: %s never tried to claim call %s (log: %s)", round, heirs[i], call_id,
                      r->extra[i].log_path);
    recovery_read(r, 1);
    ck_assert_int_eq(recovery_count(r, "claimed", call_id, NULL, 0), 0);
    for (int k = 0; k < 2; k++) {
        int i = (k + round) % 2; /* who is let go first changes from round to round */
        char subject[96];
        snprintf(subject, sizeof subject, "$NATOMIC.FAULTS.orders.%s", heirs[i]);
        natsMsg *reply = NULL;
        natsStatus s = natsConnection_RequestString(&reply, r->s.nc, subject, "natomic/before_log_write=off",
                                                    fixture_ms(5000));
        ck_assert_msg(s == NATS_OK, "round %d: releasing %s: %s", round, heirs[i], natsStatus_GetText(s));
        natsMsg_Destroy(reply);
    }

    char when[64];
    snprintf(when, sizeof when, "round %d, after the race", round);
    wait_settled(r, UNTOUCHED, order_id, "cancelled", fixture_ms(RECOVERY_MS), when);
    int ended = recovery_wait(r, "ended", call_id, fixture_ms(RECOVERY_MS));
    recovery_read(r, fixture_ms(SETTLE_MS));
    char winner[72] = "";
    int claimed = recovery_count(r, "claimed", call_id, winner, sizeof winner);
    ended = recovery_count(r, "ended", call_id, NULL, 0);
    int compensated = recovery_count(r, "compensated", call_id, NULL, 0);
    fprintf(stderr, "round %d: both heirs held a claim of call %s; %d claimed, by %s\n", round, call_id, claimed,
            winner);
    ck_assert_msg(claimed == 1, "round %d: 'claimed' events for call %s: expected 1, got %d", round, call_id,
                  claimed);
    ck_assert_msg(strcmp(winner, "orders-1") == 0 || strcmp(winner, "orders-2") == 0,
                  "round %d: claimed by '%s', expected orders-1 or orders-2", round, winner);
    ck_assert_msg(ended == 1, "round %d: 'ended' events for call %s: expected 1, got %d", round, call_id, ended);
    ck_assert_msg(compensated == 3, "round %d: 'compensated' events for call %s: expected 3, got %d", round, call_id,
                  compensated);
    /* Each compensation reached its participant and ran there once. */
    ck_assert_int_eq(barrier_rows(&r->s.payments, tx, "compensation"), 1);
    ck_assert_int_eq(barrier_rows(&r->s.inventory, tx, "compensation"), 1);
    ck_assert_int_eq(barrier_rows(&r->s.payments, tx, "action"), 1);
    ck_assert_int_eq(barrier_rows(&r->s.inventory, tx, "action"), 1);
    ck_assert_int_eq(stream_count(r, SAGA_STREAM, NULL), 0);

    for (int i = 0; i < 2; i++) {
        int status = fixture_stop_child(&r->extra[i], SIGTERM);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "round %d: %s ended with wait status %#x (log: %s)", round, heirs[i], (unsigned)status,
                      r->extra[i].log_path);
    }
}

START_TEST(test_claim_race_one_winner)
{
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, "orders-0", CRASH_AFTER_CHARGE, false);
    for (int round = 0; round < RACE_ROUNDS; round++)
        claim_race_round(&r, round);
    /* No participant ever saw a compensation twice, or one for an action that never ran. */
    const char *participants[] = {"payments", "inventory"};
    for (int i = 0; i < 2; i++) {
        int64_t dup = service_stat(&r, participants[i], "barrier", "duplicate");
        int64_t null = service_stat(&r, participants[i], "barrier", "null_compensation");
        ck_assert_msg(dup == 0 && null == 0, "%s's barrier over %d rounds: %lld duplicate, %lld null compensations",
                      participants[i], RACE_ROUNDS, (long long)dup, (long long)null);
    }
    ck_assert_int_eq(fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM orders WHERE status = 'cancelled'"),
                     RACE_ROUNDS);
    rig_stop(&r);
}
END_TEST

/* ---- 4. no claim while the lease holds ------------------------------------ */

START_TEST(test_claim_waits_for_lease_expiry)
{
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, "orders-dead", CRASH_AFTER_CHARGE, false);
    uint8_t lease[1024];
    size_t lease_len = lease_copy(&r, "orders-dead", lease, sizeof lease);

    send_create_order(&r, NULL);
    wait_crash(&r.s.orders, "orders/create_order/after_charge");
    lease_put(&r, "orders-dead", lease, lease_len); /* from here the test renews it, as if it lived */
    char order_id[128], call_id[128], tx[128];
    only_order(&r, "pending", order_id, call_id, tx);

    service_start(&r, &r.extra[0], "ORDERS_BIN", "orders", "orders-live", NULL, false);

    /* While the lease is renewed, the live instance leaves the saga alone, round after round. */
    int64_t hold_until = fixture_now_ms() + fixture_ms(2000);
    while (fixture_now_ms() < hold_until) {
        lease_put(&r, "orders-dead", lease, lease_len);
        recovery_read(&r, LEASE_RENEW_MS);
        int claimed = recovery_count(&r, "claimed", call_id, NULL, 0);
        ck_assert_msg(claimed == 0, "call %s was claimed while the lease of orders-dead was renewed", call_id);
    }
    ck_assert_int_eq(stream_count(&r, SAGA_STREAM, NULL), 1);
    expect_figures(&r, ONE_ORDER, "while the lease held");

    /* Renewal stops: the lease expires by itself, and only then is the saga claimed. Read the events
       first, the lease after: a claim seen before a lease still there was made while it was there. */
    int64_t end = fixture_now_ms() + fixture_ms(RECOVERY_MS + LEASE_MS);
    int claimed = 0, polls_with_lease = 0;
    while (fixture_now_ms() < end) {
        recovery_read(&r, 20);
        claimed = recovery_count(&r, "claimed", call_id, NULL, 0);
        bool held = lease_present(&r, "orders-dead");
        ck_assert_msg(!(claimed > 0 && held),
                      "call %s was claimed while the lease of orders-dead was still in %s", call_id, LEASE_BUCKET);
        if (claimed > 0)
            break;
        polls_with_lease += held;
    }
    fprintf(stderr, "lease of orders-dead seen %d times after renewal stopped, then the claim\n", polls_with_lease);
    ck_assert_msg(claimed == 1, "'claimed' events for call %s after the lease expired: expected 1, got %d", call_id,
                  claimed);
    char claimer[72] = "";
    recovery_count(&r, "claimed", call_id, claimer, sizeof claimer);
    ck_assert_str_eq(claimer, "orders-live");
    ck_assert_msg(!lease_present(&r, "orders-dead"), "the lease of orders-dead is back");

    wait_settled(&r, UNTOUCHED, order_id, "cancelled", fixture_ms(RECOVERY_MS), "after orders-live recovered");
    ck_assert_int_eq(recovery_wait(&r, "ended", call_id, fixture_ms(RECOVERY_MS)), 1);
    ck_assert_int_eq(stream_count(&r, SAGA_STREAM, NULL), 0);
    rig_stop(&r);
}
END_TEST

/* ---- 5. crash between commit and publish: the outbox relay --------------- */

START_TEST(test_outbox_relayed_after_crash)
{
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, "orders-0", "natomic/before_dispatch=crash@1", false);

    send_create_order(&r, "key-outbox-1");
    wait_crash(&r.s.orders, "natomic/before_dispatch");

    /* Committed: the order, its decision and its event row; nothing published. */
    char order_id[128], call_id[128], tx[128];
    only_order(&r, "confirmed", order_id, call_id, tx);
    expect_figures(&r, ONE_ORDER, "after the crash");
    ck_assert_int_eq(fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM natomic_outbox"), 1);
    ck_assert_int_eq(fixture_db_int(r.s.orders.db_path,
                                    "SELECT count(*) FROM natomic_decision WHERE call_id = %Q AND outcome = 'committed'",
                                    call_id),
                     1);
    char event_id[128];
    db_text(event_id, sizeof event_id, r.s.orders.db_path, "SELECT event_id FROM natomic_outbox");
    ck_assert_int_eq(stream_count(&r, NATOMIC_EVENTS_STREAM, ORDER_CREATED), 0);
    ck_assert_int_eq(notifications_of(&r, order_id), 0);

    orders_start(&r, "orders-0", NULL, false);
    int64_t end = fixture_now_ms() + fixture_ms(RECOVERY_MS);
    while ((fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM natomic_outbox") > 0 ||
            notifications_of(&r, order_id) == 0) &&
           fixture_now_ms() < end)
        fixture_sleep_ms(20);
    fixture_sleep_ms(fixture_ms(SETTLE_MS)); /* two more relay rounds: a second publish would show */

    ck_assert_int_eq(fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM natomic_outbox"), 0);
    ck_assert_int_eq(stream_count(&r, NATOMIC_EVENTS_STREAM, ORDER_CREATED), 1);
    char published[128];
    stream_last_event_id(&r, published, sizeof published);
    ck_assert_str_eq(published, event_id);
    ck_assert_int_eq(notifications_of(&r, order_id), 1);
    char noted[128];
    db_text(noted, sizeof noted, r.s.notifications.db_path, "SELECT event_id FROM notifications WHERE order_id = %Q",
            order_id);
    ck_assert_str_eq(noted, event_id);
    ck_assert_int_eq(service_stat(&r, "notifications", "events_handled", NULL), 1);
    char status[32];
    order_status(&r, order_id, status, sizeof status);
    ck_assert_str_eq(status, "confirmed");
    expect_figures(&r, ONE_ORDER, "after the relay");

    /* The caller never got its reply; its retry gets the one committed with the order, and runs nothing. */
    Orders__OrderReply *reply = NULL;
    natomic_call_info_t info;
    natomic_status_t st = create_order(&r, "key-outbox-1", fixture_ms(CALL_MS), &reply, &info);
    ck_assert_msg(st == NATOMIC_OK, "retry with the key: expected the stored success, got %s (%s: %s)",
                  natomic_status_name(st), info.type, info.message);
    ck_assert_msg(info.replayed, "the retry's reply lacks %s: true", NATOMIC_HDR_REPLAYED);
    ck_assert_str_eq(reply->order_id, order_id);
    ck_assert_str_eq(reply->status, "confirmed");
    orders__order_reply__free_unpacked(reply, NULL);
    ck_assert_int_eq(fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM orders"), 1);
    expect_figures(&r, ONE_ORDER, "after the retry");
    fixture_sleep_ms(fixture_ms(QUIET_MS));
    ck_assert_int_eq(stream_count(&r, NATOMIC_EVENTS_STREAM, ORDER_CREATED), 1);
    rig_stop(&r);
}
END_TEST

/* ---- 6. a duplicate publish is kept once ----------------------------------- */

START_TEST(test_duplicate_publish_deduplicated)
{
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, NULL, "natomic/event_publish=duplicate@1", false);

    char order_id[128];
    create_order_ok(&r, order_id, sizeof order_id);

    /* Two publishes went out (core subscribers see both, with one event id)... */
    Orders__OrderCreated *ev[4];
    char ids[4][64];
    int n = saga_collect_events(&r.s, ev, ids, 4, 2, QUIET_MS, fixture_ms(5000));
    for (int i = 0; i < n && i < 4; i++) {
        ck_assert_str_eq(ev[i]->order_id, order_id);
        orders__order_created__free_unpacked(ev[i], NULL);
    }
    ck_assert_msg(n == 2, "publishes of order_created seen on core NATS: expected 2 (the fault), got %d", n);
    ck_assert_str_eq(ids[0], ids[1]);

    /* ...and the stream kept one, which notifications handled once. */
    ck_assert_int_eq(wait_notification(&r, order_id, fixture_ms(RECOVERY_MS)), 1);
    fixture_sleep_ms(fixture_ms(SETTLE_MS));
    ck_assert_int_eq(stream_count(&r, NATOMIC_EVENTS_STREAM, ORDER_CREATED), 1);
    ck_assert_int_eq(notifications_of(&r, order_id), 1);
    ck_assert_int_eq(service_stat(&r, "notifications", "events_handled", NULL), 1);
    ck_assert_int_eq(fixture_db_int(r.s.orders.db_path, "SELECT count(*) FROM natomic_outbox"), 0);
    rig_stop(&r);
}
END_TEST

/* ---- 7. a consumer that was down catches up -------------------------------- */

START_TEST(test_consumer_catches_up)
{
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, NULL, NULL, false);

    char first[128];
    create_order_ok(&r, first, sizeof first);
    ck_assert_int_eq(wait_notification(&r, first, fixture_ms(RECOVERY_MS)), 1);
    int64_t end = fixture_now_ms() + fixture_ms(RECOVERY_MS);
    while (!consumer_settled(&r) && fixture_now_ms() < end)
        fixture_sleep_ms(20);
    ck_assert_msg(consumer_settled(&r), "consumer %s still has events pending or unacknowledged", NOTIFY_CONSUMER);

    int status = fixture_stop_child(&r.s.notifications, SIGKILL);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "notifications: wait status %#x",
                  (unsigned)status);
    char second[128];
    create_order_ok(&r, second, sizeof second);
    ck_assert_int_eq(stream_count(&r, NATOMIC_EVENTS_STREAM, ORDER_CREATED), 2);
    ck_assert_int_eq(notifications_of(&r, second), 0);

    service_start(&r, &r.s.notifications, "NOTIFICATIONS_BIN", "notifications", NULL, NULL, false);
    ck_assert_int_eq(wait_notification(&r, second, fixture_ms(2 * RECOVERY_MS)), 1);
    fixture_sleep_ms(fixture_ms(SETTLE_MS));
    ck_assert_int_eq(notifications_of(&r, second), 1);
    ck_assert_int_eq(fixture_db_int(r.s.notifications.db_path, "SELECT count(*) FROM notifications"), 2);
    ck_assert_int_eq(service_stat(&r, "notifications", "events_handled", NULL), 1);
    rig_stop(&r);
}
END_TEST

/* ---- 8. durable mode needs JetStream ----------------------------------------- */

/* The nats-server program: $NATOMIC_NATS_SERVER, else the first on PATH (as embedded_nats does). */
static void nats_server_path(char *out, size_t cap)
{
    const char *bin = getenv("NATOMIC_NATS_SERVER");
    if (bin != NULL && *bin != '\0' && strchr(bin, '/') != NULL) {
        snprintf(out, cap, "%s", bin);
        return;
    }
    const char *name = bin != NULL && *bin != '\0' ? bin : "nats-server";
    const char *path = getenv("PATH");
    for (const char *p = path != NULL ? path : "/usr/local/bin:/usr/bin:/bin"; *p != '\0';) {
        size_t n = strcspn(p, ":");
        snprintf(out, cap, "%.*s/%s", (int)n, p, name);
        if (n > 0 && access(out, X_OK) == 0)
            return;
        p += n;
        if (*p == ':')
            p++;
    }
    ck_abort_msg("%s is not on PATH", name);
}

START_TEST(test_durable_needs_jetstream)
{
    int port = embedded_nats_free_port();
    ck_assert_int_gt(port, 0);
    char bin[512], port_text[16], url[64];
    nats_server_path(bin, sizeof bin);
    snprintf(port_text, sizeof port_text, "%d", port);
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    fixture_child_t server;
    memset(&server, 0, sizeof server);
    server.name = "nats-server (no JetStream)";
    const char *server_args[] = {"-a", "127.0.0.1", "-p", port_text, NULL};
    fixture_spawn(&server, bin, server_args, NULL);
    natsConnection *nc = NULL;
    int64_t end = fixture_now_ms() + fixture_ms(10000);
    while (natsConnection_ConnectTo(&nc, url) != NATS_OK) {
        ck_assert_msg(!fixture_wait_exit(&server, 0, NULL), "%s on port %d ended (log: %s)", bin, port,
                      server.log_path);
        ck_assert_msg(fixture_now_ms() < end, "%s never accepted connections on port %d (log: %s)", bin, port,
                      server.log_path);
        fixture_sleep_ms(20);
    }

    fixture_child_t orders;
    memset(&orders, 0, sizeof orders);
    orders.name = "orders";
    fixture_path(orders.db_path, sizeof orders.db_path, "orders-nojs", ".db");
    fixture_path(orders.log_path, sizeof orders.log_path, "orders-nojs-durable", ".log");
    char no_mode[] = "NATOMIC_MODE=", no_faults[] = "NATOMIC_FAULTS=";
    char *const env[] = {no_mode, no_faults, NULL};
    const char *durable[] = {"--nats", url, "--db", orders.db_path, "--mode", "durable", NULL};
    fixture_spawn(&orders, fixture_bin("ORDERS_BIN"), durable, env);
    int status = 0;
    bool ended = fixture_wait_exit(&orders, fixture_ms(15000), &status);
    if (!ended)
        status = fixture_stop_child(&orders, SIGKILL);
    ck_assert_msg(ended, "orders in durable mode kept running against a server without JetStream (log: %s)",
                  orders.log_path);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1,
                  "orders in durable mode without JetStream: wait status %#x, expected exit 1 (log: %s)",
                  (unsigned)status, orders.log_path);
    char log[8192];
    fixture_read_file(orders.log_path, log, sizeof log);
    ck_assert_msg(strstr(log, "-js") != NULL && strstr(log, "--mode memory") != NULL,
                  "the log of orders does not name both fixes (-js, --mode memory):\n%s", log);

    /* The same binary in memory mode runs there. */
    memset(orders.log_path, 0, sizeof orders.log_path);
    fixture_path(orders.log_path, sizeof orders.log_path, "orders-nojs-memory", ".log");
    const char *memory[] = {"--nats", url, "--db", orders.db_path, "--mode", "memory", NULL};
    fixture_spawn(&orders, fixture_bin("ORDERS_BIN"), memory, env);
    bool up = fixture_wait_ping(&orders, nc, "orders");
    status = fixture_stop_child(&orders, SIGTERM);
    natsConnection_Destroy(nc);
    fixture_stop_child(&server, SIGTERM);
    ck_assert_msg(up, "orders in memory mode never answered against a server without JetStream (log: %s)",
                  orders.log_path);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "orders in memory mode: wait status %#x at SIGTERM, expected exit 0 (log: %s)", (unsigned)status,
                  orders.log_path);
}
END_TEST

/* ---- 9. the lesson: memory mode loses what durable mode keeps --------------- */

START_TEST(test_memory_mode_loses_the_saga)
{
    rig_t r;
    rig_start(&r, "memory");
    orders_start(&r, "orders-0", CRASH_AFTER_CHARGE, false);
    send_create_order(&r, NULL);
    wait_crash(&r.s.orders, "orders/create_order/after_charge");
    char order_id[128], call_id[128], tx[128];
    only_order(&r, "pending", order_id, call_id, tx);

    orders_start(&r, "orders-0", NULL, false);
    /* As long as durable mode needs to put it right (test_restart_same_instance_recovers), and longer. */
    fixture_sleep_ms(fixture_ms(2 * SETTLE_MS));
    char status[32];
    order_status(&r, order_id, status, sizeof status);
    ck_assert_str_eq(status, "pending");
    expect_figures(&r, ONE_ORDER, "memory mode, after the restart");
    ck_assert_int_eq(fixture_db_int(r.s.payments.db_path,
                                    "SELECT count(*) FROM charges WHERE order_id = %Q AND state = 'charged'", order_id),
                     1);
    recovery_read(&r, 1);
    ck_assert_int_eq(r.n_seen, 0);
    ck_assert_int_eq(stream_count(&r, SAGA_STREAM, NULL), 0);
    rig_stop(&r);
}
END_TEST

/* ---- 10. after its commit, nothing is left to fail --------------------------- */

START_TEST(test_after_handler_after_commit)
{
    rig_t r;
    rig_start(&r, "durable");
    orders_start(&r, NULL, "natomic/after_handler=error", false);
    char order_id[128];
    create_order_ok(&r, order_id, sizeof order_id);
    ck_assert_int_eq(wait_notification(&r, order_id, fixture_ms(RECOVERY_MS)), 1);
    ck_assert_int_eq(stream_count(&r, NATOMIC_EVENTS_STREAM, ORDER_CREATED), 1);
    expect_figures(&r, ONE_ORDER, "after the order");
    char status[32];
    order_status(&r, order_id, status, sizeof status);
    ck_assert_str_eq(status, "confirmed");
    rig_stop(&r);
}
END_TEST

static Suite *recovery_suite(void)
{
    Suite *suite = suite_create("recovery");
    TCase *tc = tcase_create("durable");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_log_write_fails_before_any_step);
    tcase_add_test(tc, test_log_write_fails_before_reserve);
    tcase_add_test(tc, test_restart_same_instance_recovers);
    tcase_add_test(tc, test_claim_race_one_winner);
    tcase_add_test(tc, test_claim_waits_for_lease_expiry);
    tcase_add_test(tc, test_outbox_relayed_after_crash);
    tcase_add_test(tc, test_duplicate_publish_deduplicated);
    tcase_add_test(tc, test_consumer_catches_up);
    tcase_add_test(tc, test_durable_needs_jetstream);
    tcase_add_test(tc, test_memory_mode_loses_the_saga);
    tcase_add_test(tc, test_after_handler_after_commit);
    suite_add_tcase(suite, tc);
    return suite;
}

int main(void)
{
    return fixture_run(recovery_suite(), "recovery");
}
