/*
 * test_durable.c -- durable mode at the library level: in-process
 * services (natomic_service_new) on the binary's real nats-server with
 * JetStream, each with its own SQLite store file, short leases and short
 * recovery intervals. No mocks: what is checked is read back from NATS
 * (KV buckets, the EVENTS stream, natomic.recovery.<service>) and from
 * the SQLite files.
 *
 * Proves:
 *   1. idempotency keys: a repeated Natomic-Idempotency-Key replays the
 *      first reply or error (Natomic-Replayed) and the handler ran once;
 *      another body under the same key is "IdempotencyKeyReused"; a key
 *      whose call still runs is "InProgress"; a key expires after
 *      idempotency_retention_s; durable keys survive a new service on the
 *      same store, memory-mode keys do not; an invalid key is refused by
 *      the client (EINVAL) and by the service (400);
 *   2. named commands: natomic_rollback_append_durable() gives the
 *      registered function exactly the bytes, once, when the call fails
 *      (both modes) and never when it succeeds; in durable mode the saga
 *      record (natomic_saga_<service>, saga.<call_id>) exists while the
 *      handler runs and is gone when the call ended;
 *   3. a saga log write that fails (fault point natomic/before_log_write,
 *      applied in-process) returns NATOMIC_ELOG, registers nothing and is
 *      counted in stats.log_failures, while what was registered before
 *      and after still runs;
 *   4. two instances racing for orphaned records (owner "dead-instance",
 *      no lease): each record is claimed by exactly one, its command runs
 *      exactly once, the record is gone -- for one record and for twenty;
 *   5. leases: an instance's lease key exists and is renewed while it
 *      runs and is deleted by natomic_service_destroy(); a record whose
 *      owner's lease lives (renewed by the test) is not claimed, and is
 *      claimed once that lease expired; a record of another incarnation
 *      of the same owner is claimed at once;
 *   6. natomic_durable_commit(): OK and nothing in memory mode; EINVAL
 *      for another db, ESTATE the second time; its outbox row lives and
 *      dies with the caller's transaction; after success the event is in
 *      the EVENTS stream with Nats-Msg-Id = its event id; a handler that
 *      never calls it gets the same by auto-commit (seen in the outbox
 *      when the publish fails, then relayed);
 *   7. durable mode refuses to start without a store when a method is
 *      flagged rollback or dispatch, starts without one otherwise, and
 *      refuses command registration once started.
 *
 * Each test uses its own service names (the server and its JetStream
 * state live as long as the binary). Handlers and commands write what
 * they saw into globals under a mutex; the test thread asserts. Every
 * wait is bounded by fixture_ms().
 */
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conversions.pb-c.h"
#include "fixture.h"
#include "natomic_log.pb-c.h"

#define CALL_TIMEOUT_MS 5000
#define LEASE_MS 1000
#define RECOVERY_MS 100
#define GATE_HOLD_MS 20000 /* a handler held at the gate gives up after this */
#define MAX_RECORDS 128
#define UNDO "svc.undo"

#define ck_assert_status(got, want) ck_assert_str_eq(natomic_status_name(got), natomic_status_name(want))

/* ------------------------------------------------------------------ */
/* What handlers and commands saw                                       */
/* ------------------------------------------------------------------ */

static atomic_int handler_runs;

/* A gate handlers pass: when armed, each waits there until the test opens it. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool armed;
    bool open;
    int arrived;
    char call_id[80];
    char tx[80];
} gate_t;

static gate_t gate = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void gate_reset(bool armed)
{
    pthread_mutex_lock(&gate.mu);
    gate.armed = armed;
    gate.open = false;
    gate.arrived = 0;
    gate.call_id[0] = gate.tx[0] = '\0';
    pthread_mutex_unlock(&gate.mu);
}

static struct timespec realtime_in(int ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Handler side: records the call's ids; when armed, waits (bounded) for the test. */
static void gate_pass(natomic_ctx_t *ctx)
{
    pthread_mutex_lock(&gate.mu);
    snprintf(gate.call_id, sizeof gate.call_id, "%s", natomic_ctx_call_id(ctx));
    snprintf(gate.tx, sizeof gate.tx, "%s", natomic_ctx_tx(ctx));
    if (gate.armed) {
        gate.arrived++;
        pthread_cond_broadcast(&gate.cond);
        struct timespec until = realtime_in(fixture_ms(GATE_HOLD_MS));
        while (!gate.open && pthread_cond_timedwait(&gate.cond, &gate.mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&gate.mu);
}

/* Test side: true once `n` handlers arrived within ms. */
static bool gate_wait_arrived(int n, int ms)
{
    struct timespec until = realtime_in(ms);
    pthread_mutex_lock(&gate.mu);
    while (gate.arrived < n && pthread_cond_timedwait(&gate.cond, &gate.mu, &until) == 0) {
    }
    bool ok = gate.arrived >= n;
    pthread_mutex_unlock(&gate.mu);
    return ok;
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.open = true;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.mu);
}

/* The ids the last call through the gate had. */
static void gate_ids(char *call_id, size_t call_cap, char *tx, size_t tx_cap)
{
    pthread_mutex_lock(&gate.mu);
    snprintf(call_id, call_cap, "%s", gate.call_id);
    if (tx != NULL)
        snprintf(tx, tx_cap, "%s", gate.tx);
    pthread_mutex_unlock(&gate.mu);
}

/* What the registered command svc.undo saw, over every instance. */
typedef struct undo_log {
    int runs;
    int by_node[3];
    int per_record[MAX_RECORDS];  /* payload "rec:<n>" */
    char journal[512];            /* payloads as text ("bin" when not printable), in run order */
    unsigned char last[64];
    size_t last_len;
    char tx[80];
    char call_id[80];
} undo_log_t;

static pthread_mutex_t undo_mu = PTHREAD_MUTEX_INITIALIZER;
static undo_log_t undo;
static atomic_int undo_delay_ms; /* how long svc.undo takes, as a compensation that calls out would */
static const int node_ids[3] = {0, 1, 2};

static void undo_reset(void)
{
    pthread_mutex_lock(&undo_mu);
    memset(&undo, 0, sizeof undo);
    pthread_mutex_unlock(&undo_mu);
    atomic_store(&handler_runs, 0);
    atomic_store(&undo_delay_ms, 0);
}

static undo_log_t undo_snapshot(void)
{
    pthread_mutex_lock(&undo_mu);
    undo_log_t copy = undo;
    pthread_mutex_unlock(&undo_mu);
    return copy;
}

static bool printable(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    return len > 0;
}

/* The named command: records its payload, succeeds. closure: the node's number. */
static natomic_status_t undo_command(natomic_ctx_t *ctx, const void *data, size_t len, void *closure)
{
    const unsigned char *p = data;
    int delay = atomic_load(&undo_delay_ms);
    if (delay > 0)
        fixture_sleep_ms(delay);
    pthread_mutex_lock(&undo_mu);
    undo.runs++;
    undo.by_node[*(const int *)closure]++;
    undo.last_len = len < sizeof undo.last ? len : sizeof undo.last;
    if (undo.last_len > 0)
        memcpy(undo.last, p, undo.last_len);
    snprintf(undo.tx, sizeof undo.tx, "%s", natomic_ctx_tx(ctx));
    snprintf(undo.call_id, sizeof undo.call_id, "%s", natomic_ctx_call_id(ctx));
    char text[64] = "bin";
    if (printable(p, len) && len < sizeof text) {
        memcpy(text, p, len);
        text[len] = '\0';
    }
    int n = -1;
    if (len > 4 && len < 16 && memcmp(p, "rec:", 4) == 0) {
        char digits[16];
        memcpy(digits, p + 4, len - 4);
        digits[len - 4] = '\0';
        n = atoi(digits);
    }
    if (n >= 0 && n < MAX_RECORDS)
        undo.per_record[n]++;
    size_t used = strlen(undo.journal);
    snprintf(undo.journal + used, sizeof undo.journal - used, "%s%s", used > 0 ? "," : "", text);
    pthread_mutex_unlock(&undo_mu);
    return NATOMIC_OK;
}

/* ------------------------------------------------------------------ */
/* Services, stores, calls                                              */
/* ------------------------------------------------------------------ */

static sqlite3 *store_open(const char *path)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        char err[256];
        snprintf(err, sizeof err, "%s", db != NULL ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        ck_abort_msg("open %s: %s", path, err);
    }
    ck_assert_ptr_nonnull(sqlite3_db_mutex(db));
    return db;
}

static void store_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    char text[256];
    snprintf(text, sizeof text, "%s", err != NULL ? err : "");
    sqlite3_free(err);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, text);
}

/* One in-process service with its own connection and (optionally) its own store. */
typedef struct node {
    char name[64];
    char db_path[512];
    sqlite3 *db;
    natsConnection *nc;
    natomic_service_t *svc;
} node_t;

typedef struct node_opts {
    natomic_mode_t mode;
    bool store;
    const char *db_path;        /* NULL: a new file in the work folder */
    const char *instance;       /* NULL: a random one */
    int lease_ms;               /* 0: LEASE_MS */
    int64_t idempotency_retention_s;
} node_opts_t;

static void node_create(node_t *n, const char *name, const node_opts_t *o)
{
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    if (o->store) {
        if (o->db_path != NULL)
            snprintf(n->db_path, sizeof n->db_path, "%s", o->db_path);
        else
            fixture_path(n->db_path, sizeof n->db_path, name, ".db");
        n->db = store_open(n->db_path);
    }
    n->nc = fixture_connect();
    natomic_service_config_t cfg = {
        .name = name,
        .mode = o->mode,
        .store = n->db,
        .instance = o->instance,
        .lease_ms = o->lease_ms > 0 ? o->lease_ms : LEASE_MS,
        .recovery_interval_ms = RECOVERY_MS,
        .idempotency_retention_s = o->idempotency_retention_s,
        .retry = {.attempts = 3, .base_ms = 1, .cap_ms = 2},
    };
    natomic_status_t st = natomic_service_new(&n->svc, n->nc, &cfg);
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_new(%s): %s", name, natomic_status_name(st));
}

static void node_method(node_t *n, const char *method, natomic_handler_fn handler, unsigned flags, void *closure)
{
    natomic_status_t st =
        natomic_service_add_method(n->svc, method, handler, flags, &conversions__inches_to_cm_request__descriptor,
                                   &conversions__inches_to_cm_reply__descriptor, closure);
    ck_assert_msg(st == NATOMIC_OK, "add_method(%s.%s): %s", n->name, method, natomic_status_name(st));
}

static void node_register_undo(node_t *n, int id)
{
    natomic_status_t st = natomic_command_register(n->svc, UNDO, undo_command, (void *)&node_ids[id]);
    ck_assert_msg(st == NATOMIC_OK, "register %s on %s: %s", UNDO, n->name, natomic_status_name(st));
}

static void node_start(node_t *n)
{
    natomic_status_t st = natomic_service_start(n->svc);
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_start(%s): %s", n->name, natomic_status_name(st));
}

/* Destroys the service (a graceful stop), then its connection and store. */
static void node_stop(node_t *n)
{
    natomic_service_destroy(n->svc);
    natsConnection_Destroy(n->nc);
    if (n->db != NULL)
        ck_assert_int_eq(sqlite3_close(n->db), SQLITE_OK);
    n->svc = NULL;
    n->nc = NULL;
    n->db = NULL;
}

static natomic_service_stats_t node_stats(const node_t *n)
{
    natomic_service_stats_t s;
    natomic_status_t st = natomic_service_get_stats(&s, n->svc);
    ck_assert_msg(st == NATOMIC_OK, "get_stats(%s): %s", n->name, natomic_status_name(st));
    return s;
}

/*
 * The replay counter is bumped after the replay left, so a caller can read
 * the stats before it moved: waits (bounded) for it to reach `want`.
 */
static uint64_t wait_replays(const node_t *n, uint64_t want)
{
    int64_t end = fixture_now_ms() + fixture_ms(2000);
    uint64_t got = node_stats(n).idempotent_replays;
    while (got < want && fixture_now_ms() < end) {
        fixture_sleep_ms(5);
        got = node_stats(n).idempotent_replays;
    }
    return got;
}

/* Calls <service>.<method> with InchesToCmRequest{inches} and the key (NULL: none). Safe from any thread. */
static natomic_status_t call_key(natsConnection *nc, const char *service, const char *method, double inches,
                                 const char *key, double *cm, natomic_call_info_t *info)
{
    char subject[160];
    snprintf(subject, sizeof subject, "%s.%s", service, method);
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = inches;
    ProtobufCMessage *reply = NULL;
    natomic_status_t st = natomic_request_idempotent(&reply, nc, subject, &req.base,
                                                     &conversions__inches_to_cm_reply__descriptor,
                                                     fixture_ms(CALL_TIMEOUT_MS), key, info);
    if (st == NATOMIC_OK) {
        if (cm != NULL)
            *cm = ((Conversions__InchesToCmReply *)reply)->cm;
        protobuf_c_message_free_unpacked(reply, NULL);
    }
    return st;
}

/* A call made on a thread of its own, for a handler the test holds at the gate. */
typedef struct bg_call {
    pthread_t thread;
    natsConnection *nc;
    char service[64];
    char method[64];
    double inches;
    char key[256];
    natomic_status_t st;
    double cm;
    natomic_call_info_t info;
} bg_call_t;

static void *bg_call_main(void *arg)
{
    bg_call_t *c = arg;
    c->st = call_key(c->nc, c->service, c->method, c->inches, c->key[0] != '\0' ? c->key : NULL, &c->cm, &c->info);
    return NULL;
}

static void bg_call_start(bg_call_t *c, natsConnection *nc, const char *service, const char *method, double inches,
                          const char *key)
{
    memset(c, 0, sizeof *c);
    c->nc = nc;
    snprintf(c->service, sizeof c->service, "%s", service);
    snprintf(c->method, sizeof c->method, "%s", method);
    c->inches = inches;
    snprintf(c->key, sizeof c->key, "%s", key != NULL ? key : "");
    ck_assert_int_eq(pthread_create(&c->thread, NULL, bg_call_main, c), 0);
}

static void bg_call_join(bg_call_t *c)
{
    ck_assert_int_eq(pthread_join(c->thread, NULL), 0);
}

/* A raw request carrying the header Natomic-Idempotency-Key: key as given; the reply's error code (0: success). */
static int raw_call_code(natsConnection *nc, const char *subject, const char *key, char *type, size_t type_cap)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = 1;
    uint8_t buf[32];
    size_t len = protobuf_c_message_pack(&req.base, buf);
    natsMsg *m = NULL, *reply = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_IDEMPOTENCY_KEY, key);
    if (s == NATS_OK)
        s = natsConnection_RequestMsg(&reply, nc, m, fixture_ms(CALL_TIMEOUT_MS));
    natsMsg_Destroy(m);
    ck_assert_msg(s == NATS_OK, "raw request %s: %s", subject, natsStatus_GetText(s));
    const char *code = fixture_header(reply, NATOMIC_HDR_SERVICE_ERROR_CODE);
    const char *t = fixture_header(reply, NATOMIC_HDR_ERROR_TYPE);
    snprintf(type, type_cap, "%s", t != NULL ? t : "");
    int result = code != NULL ? atoi(code) : 0;
    natsMsg_Destroy(reply);
    return result;
}

/* ------------------------------------------------------------------ */
/* JetStream: the test's own view                                       */
/* ------------------------------------------------------------------ */

typedef struct tool {
    natsConnection *nc;
    jsCtx *js;
} tool_t;

static void tool_open(tool_t *t)
{
    t->nc = fixture_connect();
    t->js = NULL;
    natsStatus s = natsConnection_JetStream(&t->js, t->nc, NULL);
    ck_assert_msg(s == NATS_OK, "JetStream context: %s", natsStatus_GetText(s));
}

static void tool_close(tool_t *t)
{
    jsCtx_Destroy(t->js);
    natsConnection_Destroy(t->nc);
    t->js = NULL;
    t->nc = NULL;
}

static kvStore *kv_open(tool_t *t, const char *prefix, const char *service)
{
    char bucket[128];
    snprintf(bucket, sizeof bucket, "%s%s", prefix, service);
    kvStore *kv = NULL;
    natsStatus s = js_KeyValue(&kv, t->js, bucket);
    ck_assert_msg(s == NATS_OK, "open KV bucket %s: %s", bucket, natsStatus_GetText(s));
    return kv;
}

/* The saga record of call_id: NATS_OK with *out (free with natomic__saga_record__free_unpacked), or the status. */
static natsStatus saga_get(Natomic__SagaRecord **out, kvStore *kv, const char *call_id)
{
    char key[128];
    snprintf(key, sizeof key, "saga.%s", call_id);
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, kv, key);
    if (s != NATS_OK)
        return s;
    *out = natomic__saga_record__unpack(NULL, (size_t)kvEntry_ValueLen(e), (const uint8_t *)kvEntry_Value(e));
    kvEntry_Destroy(e);
    ck_assert_msg(*out != NULL, "the value of %s is not a natomic.SagaRecord", key);
    return NATS_OK;
}

/* A fresh 32-hex id for calls and incarnations the test makes up. */
static void made_up_id(char out[33])
{
    static atomic_uint counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, 33, "%08x%08x%016" PRIx64, (unsigned)getpid(), atomic_fetch_add(&counter, 1) + 1,
             (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec);
}

/*
 * Writes an orphaned saga record by hand, as a process that died mid-call
 * would have left it: state RUNNING, one local compensation svc.undo with
 * the payload "rec:<n>", owner `owner`/`incarnation`.
 */
static void orphan_publish(tool_t *t, const char *service, const char *call_id, const char *owner,
                           const char *incarnation, int n)
{
    char payload[16], tx[33];
    snprintf(payload, sizeof payload, "rec:%d", n);
    made_up_id(tx);
    Natomic__Compensation comp = NATOMIC__COMPENSATION__INIT;
    comp.kind = NATOMIC__COMPENSATION__KIND__LOCAL;
    comp.name = UNDO;
    comp.data.data = (uint8_t *)payload;
    comp.data.len = strlen(payload);
    Natomic__Compensation *comps[1] = {&comp};
    Natomic__SagaRecord rec = NATOMIC__SAGA_RECORD__INIT;
    rec.version = 1;
    rec.service = (char *)service;
    rec.method = "undo_fail";
    rec.tx = tx;
    rec.call_id = (char *)call_id;
    rec.chain = "";
    rec.owner = (char *)owner;
    rec.incarnation = (char *)incarnation;
    rec.idempotency_key = "";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rec.started_ns = rec.updated_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    rec.state = NATOMIC__SAGA_RECORD__STATE__RUNNING;
    rec.n_compensations = 1;
    rec.compensations = comps;
    uint8_t buf[1024];
    size_t len = natomic__saga_record__get_packed_size(&rec);
    ck_assert_uint_le(len, sizeof buf);
    natomic__saga_record__pack(&rec, buf);

    char subject[200];
    snprintf(subject, sizeof subject, "$KV.natomic_saga_%s.saga.%s", service, call_id);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len);
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, t->js, m, NULL, &jerr);
    natsMsg_Destroy(m);
    jsPubAck_Destroy(pa);
    ck_assert_msg(s == NATS_OK, "publish the record %s: %s (JetStream error %d)", subject, natsStatus_GetText(s),
                  (int)jerr);
}

/* A natomic.Lease for `instance` of `incarnation`, put into the lease bucket. */
static int64_t lease_put(kvStore *kv, const char *instance, const char *incarnation)
{
    Natomic__Lease lease = NATOMIC__LEASE__INIT;
    lease.instance = (char *)instance;
    lease.incarnation = (char *)incarnation;
    lease.pid = 1;
    lease.host = "test";
    uint8_t buf[256];
    size_t len = natomic__lease__pack(&lease, buf);
    int64_t t0 = fixture_now_ms();
    uint64_t rev = 0;
    natsStatus s = kvStore_Put(&rev, kv, instance, buf, (int)len);
    ck_assert_msg(s == NATS_OK, "put the lease of %s: %s", instance, natsStatus_GetText(s));
    return t0;
}

/* ---- recovery events ---------------------------------------------------------- */

typedef struct recovery_seen {
    char call_id[MAX_RECORDS][40];
    int claimed[MAX_RECORDS];
    int compensated[MAX_RECORDS];
    int ended[MAX_RECORDS];
    char claimed_by[MAX_RECORDS][16];
    char ended_by[MAX_RECORDS][16];
    int n;
    int unknown;   /* events for call ids the test did not make */
    int64_t first_claim_ms;
} recovery_seen_t;

static natsSubscription *recovery_subscribe(tool_t *t, const char *service)
{
    char subject[160];
    snprintf(subject, sizeof subject, NATOMIC_RECOVERY_PREFIX ".%s", service);
    natsSubscription *sub = NULL;
    natsStatus s = natsConnection_SubscribeSync(&sub, t->nc, subject);
    ck_assert_msg(s == NATS_OK, "subscribe %s: %s", subject, natsStatus_GetText(s));
    ck_assert_int_eq(natsConnection_Flush(t->nc), NATS_OK);
    return sub;
}

static int seen_index(const recovery_seen_t *r, const char *call_id)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->call_id[i], call_id) == 0)
            return i;
    return -1;
}

/* Reads one recovery event into r; false when none came within ms. */
static bool recovery_next(natsSubscription *sub, recovery_seen_t *r, int ms)
{
    natsMsg *m = NULL;
    if (natsSubscription_NextMsg(&m, sub, ms) != NATS_OK)
        return false;
    json_error_t err;
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &err);
    char text[512];
    snprintf(text, sizeof text, "%.*s", natsMsg_GetDataLength(m), natsMsg_GetData(m));
    natsMsg_Destroy(m);
    ck_assert_msg(doc != NULL && json_is_object(doc), "recovery event is not a JSON object: %s", text);
    const char *event = json_string_value(json_object_get(doc, "event"));
    const char *call_id = json_string_value(json_object_get(doc, "call_id"));
    const char *instance = json_string_value(json_object_get(doc, "instance"));
    ck_assert_msg(event != NULL && call_id != NULL && instance != NULL, "recovery event without fields: %s", text);
    int i = seen_index(r, call_id);
    if (i < 0) {
        r->unknown++;
    } else if (strcmp(event, "claimed") == 0) {
        if (r->claimed[i]++ == 0)
            snprintf(r->claimed_by[i], sizeof r->claimed_by[i], "%s", instance);
        if (r->first_claim_ms == 0)
            r->first_claim_ms = fixture_now_ms();
    } else if (strcmp(event, "compensated") == 0) {
        r->compensated[i]++;
    } else if (strcmp(event, "ended") == 0) {
        if (r->ended[i]++ == 0)
            snprintf(r->ended_by[i], sizeof r->ended_by[i], "%s", instance);
    }
    json_decref(doc);
    return true;
}

static int ended_count(const recovery_seen_t *r)
{
    int n = 0;
    for (int i = 0; i < r->n; i++)
        n += r->ended[i] > 0;
    return n;
}

/* Gathers events until every record ended (bounded), then for quiet_ms more: late duplicates show. */
static void recovery_collect(natsSubscription *sub, recovery_seen_t *r, int total_ms, int quiet_ms)
{
    int64_t end = fixture_now_ms() + total_ms;
    while (ended_count(r) < r->n && fixture_now_ms() < end)
        recovery_next(sub, r, (int)(end - fixture_now_ms()) > 0 ? (int)(end - fixture_now_ms()) : 1);
    int64_t quiet_end = fixture_now_ms() + quiet_ms;
    while (fixture_now_ms() < quiet_end)
        recovery_next(sub, r, (int)(quiet_end - fixture_now_ms()) > 0 ? (int)(quiet_end - fixture_now_ms()) : 1);
}

/* ------------------------------------------------------------------ */
/* Handlers                                                             */
/* ------------------------------------------------------------------ */

/* cm = 1000 * (how many times a handler ran) + inches: a replay shows the first run's number. */
static natomic_status_t count_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                      void *closure)
{
    int n = atomic_fetch_add(&handler_runs, 1) + 1;
    double inches = ((const Conversions__InchesToCmRequest *)request)->inches;
    ((Conversions__InchesToCmReply *)reply)->cm = 1000.0 * n + inches;
    return NATOMIC_OK;
}

/* Fails with a message naming the run. */
static natomic_status_t refuse_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                       void *closure)
{
    int n = atomic_fetch_add(&handler_runs, 1) + 1;
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "OutOfStock", "run %d refused %g", n,
                        ((const Conversions__InchesToCmRequest *)request)->inches);
}

/* count_handler held at the gate. */
static natomic_status_t slow_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                     void *closure)
{
    int n = atomic_fetch_add(&handler_runs, 1) + 1;
    gate_pass(ctx);
    double inches = ((const Conversions__InchesToCmRequest *)request)->inches;
    ((Conversions__InchesToCmReply *)reply)->cm = 1000.0 * n + inches;
    return NATOMIC_OK;
}

static const unsigned char undo_payload[] = {0x00, 0xff, 'u', 'n', 'd', 'o', 0x00, 0x7f};

/* What a registering handler got back. */
typedef struct registered {
    natomic_status_t st[3];
    size_t count[3];
} registered_t;

static pthread_mutex_t registered_mu = PTHREAD_MUTEX_INITIALIZER;
static registered_t registered;

static void registered_set(const registered_t *r)
{
    pthread_mutex_lock(&registered_mu);
    registered = *r;
    pthread_mutex_unlock(&registered_mu);
}

static registered_t registered_get(void)
{
    pthread_mutex_lock(&registered_mu);
    registered_t r = registered;
    pthread_mutex_unlock(&registered_mu);
    return r;
}

/* Registers svc.undo with undo_payload, passes the gate, fails. */
static natomic_status_t undo_fail_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                          ProtobufCMessage *reply, void *closure)
{
    registered_t r = {{NATOMIC_OK}, {0}};
    r.st[0] = natomic_rollback_append_durable(ctx, UNDO, undo_payload, sizeof undo_payload);
    r.count[0] = natomic_rollback_count(ctx);
    registered_set(&r);
    gate_pass(ctx);
    if (r.st[0] != NATOMIC_OK)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "RegistrationFailed", "%s", natomic_status_name(r.st[0]));
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "Refused", "refused after registering %s", UNDO);
}

/* Registers svc.undo, passes the gate, succeeds. */
static natomic_status_t undo_ok_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                                        void *closure)
{
    registered_t r = {{NATOMIC_OK}, {0}};
    r.st[0] = natomic_rollback_append_durable(ctx, UNDO, undo_payload, sizeof undo_payload);
    r.count[0] = natomic_rollback_count(ctx);
    registered_set(&r);
    gate_pass(ctx);
    ((Conversions__InchesToCmReply *)reply)->cm = ((const Conversions__InchesToCmRequest *)request)->inches;
    return NATOMIC_OK;
}

/* Registers svc.undo with "rec:<inches>", fails: one compensation per call, told apart by its payload. */
static natomic_status_t undo_n_fail_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                            ProtobufCMessage *reply, void *closure)
{
    char payload[16];
    int n = snprintf(payload, sizeof payload, "rec:%d", (int)((const Conversions__InchesToCmRequest *)request)->inches);
    natomic_status_t st = natomic_rollback_append_durable(ctx, UNDO, payload, (size_t)n);
    if (st != NATOMIC_OK)
        return natomic_fail(ctx, NATOMIC_EINTERNAL, "RegistrationFailed", "%s", natomic_status_name(st));
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "Refused", "refused %s", payload);
}

/* Registers "one", passes the gate (the test arms a fault), registers "two" and "three", fails. */
static natomic_status_t three_steps_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                            ProtobufCMessage *reply, void *closure)
{
    registered_t r = {{NATOMIC_OK}, {0}};
    r.st[0] = natomic_rollback_append_durable(ctx, UNDO, "one", 3);
    r.count[0] = natomic_rollback_count(ctx);
    gate_pass(ctx);
    r.st[1] = natomic_rollback_append_durable(ctx, UNDO, "two", 3);
    r.count[1] = natomic_rollback_count(ctx);
    r.st[2] = natomic_rollback_append_durable(ctx, UNDO, "three", 5);
    r.count[2] = natomic_rollback_count(ctx);
    registered_set(&r);
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "Refused", "refused after three steps");
}

/* ---- natomic_durable_commit probes ---------------------------------------------- */

/* What a commit handler saw. */
typedef struct commit_seen {
    natomic_status_t first, second, wrong_db;
    int64_t rows_in_tx;      /* outbox rows of this call inside the transaction */
    int64_t rows_after;      /* ... after the caller's ROLLBACK                */
    char event_id[80];
    char call_id[80];
    char tx[80];
    bool sql_failed;
} commit_seen_t;

static pthread_mutex_t commit_mu = PTHREAD_MUTEX_INITIALIZER;
static commit_seen_t commit_seen;
static sqlite3 *other_db; /* a connection that is not the service's store */

static void commit_record(const commit_seen_t *c)
{
    pthread_mutex_lock(&commit_mu);
    commit_seen = *c;
    pthread_mutex_unlock(&commit_mu);
}

static commit_seen_t commit_get(void)
{
    pthread_mutex_lock(&commit_mu);
    commit_seen_t c = commit_seen;
    pthread_mutex_unlock(&commit_mu);
    return c;
}

/* One integer from `sql` with ?1 = text; -1 on error. */
static int64_t db_int(sqlite3 *db, const char *sql, const char *text)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

/* One text from `sql` with ?1 = text into out ("" when none); false on error. */
static bool db_text(sqlite3 *db, const char *sql, const char *text, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    bool ok = false;
    out[0] = '\0';
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
            snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        ok = rc == SQLITE_ROW || rc == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return ok;
}

/* The same text read from a file opened read-only (for the test thread); asserts. */
static void file_text(const char *path, const char *sql, const char *text, char *out, size_t cap)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    bool ok = rc == SQLITE_OK && db_text(db, sql, text, out, cap);
    char err[256];
    snprintf(err, sizeof err, "%s", db != NULL ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    ck_assert_msg(ok, "%s on %s: %s", sql, path, err);
}

static bool tx_begin(sqlite3 *db)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK)
        return true;
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return false;
}

static bool tx_end(sqlite3 *db, const char *how)
{
    bool ok = sqlite3_exec(db, how, NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return ok;
}

static natomic_status_t dispatch_converted(natomic_ctx_t *ctx, const char *type, double inches)
{
    Conversions__Converted ev = CONVERSIONS__CONVERTED__INIT;
    ev.inches = inches;
    ev.cm = inches * 2.54;
    ev.conversion_id = 42;
    return natomic_dispatch_event(ctx, type, &ev.base);
}

#define OUTBOX_ROWS "SELECT count(*) FROM natomic_outbox WHERE call_id = ?"
#define OUTBOX_EVENT_ID "SELECT event_id FROM natomic_outbox WHERE call_id = ?"

/* Memory mode: commit twice, no transaction needed: nothing is written. */
static natomic_status_t commit_memory_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                              ProtobufCMessage *reply, void *closure)
{
    node_t *n = closure;
    commit_seen_t c = {0};
    c.first = natomic_durable_commit(ctx, n->db);
    c.second = natomic_durable_commit(ctx, n->db);
    c.wrong_db = natomic_durable_commit(ctx, other_db);
    commit_record(&c);
    return NATOMIC_OK;
}

/* Durable: another db, then the store inside a transaction, then once more. */
static natomic_status_t commit_twice_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                             ProtobufCMessage *reply, void *closure)
{
    node_t *n = closure;
    commit_seen_t c = {0};
    c.wrong_db = natomic_durable_commit(ctx, other_db);
    c.sql_failed = !tx_begin(n->db);
    if (!c.sql_failed) {
        c.first = natomic_durable_commit(ctx, n->db);
        c.sql_failed = !tx_end(n->db, "COMMIT");
    }
    c.second = natomic_durable_commit(ctx, n->db);
    commit_record(&c);
    return NATOMIC_OK;
}

/* Durable: an event, the commit in the caller's transaction, then the caller rolls back and fails. */
static natomic_status_t commit_rolled_back_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                                   ProtobufCMessage *reply, void *closure)
{
    node_t *n = closure;
    commit_seen_t c = {0};
    snprintf(c.call_id, sizeof c.call_id, "%s", natomic_ctx_call_id(ctx));
    natomic_status_t st = dispatch_converted(ctx, "rejected", 1);
    c.sql_failed = st != NATOMIC_OK || !tx_begin(n->db);
    if (!c.sql_failed) {
        c.sql_failed = db_int(n->db, "INSERT INTO business(call_id) VALUES (?) RETURNING 1", c.call_id) != 1;
        c.first = natomic_durable_commit(ctx, n->db);
        c.rows_in_tx = db_int(n->db, OUTBOX_ROWS, c.call_id);
        db_text(n->db, OUTBOX_EVENT_ID, c.call_id, c.event_id, sizeof c.event_id);
        c.sql_failed = !tx_end(n->db, "ROLLBACK") || c.sql_failed;
        c.rows_after = db_int(n->db, OUTBOX_ROWS, c.call_id);
    }
    commit_record(&c);
    return natomic_fail(ctx, NATOMIC_EBUSINESS, "Rejected", "the business change was rolled back");
}

/* Durable: an event, business row and commit in one transaction, committed; succeeds. */
static natomic_status_t commit_published_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                                 ProtobufCMessage *reply, void *closure)
{
    node_t *n = closure;
    commit_seen_t c = {0};
    snprintf(c.call_id, sizeof c.call_id, "%s", natomic_ctx_call_id(ctx));
    snprintf(c.tx, sizeof c.tx, "%s", natomic_ctx_tx(ctx));
    double inches = ((const Conversions__InchesToCmRequest *)request)->inches;
    natomic_status_t st = dispatch_converted(ctx, "converted", inches);
    ((Conversions__InchesToCmReply *)reply)->cm = inches * 2.54;
    c.sql_failed = st != NATOMIC_OK || !tx_begin(n->db);
    if (!c.sql_failed) {
        c.sql_failed = db_int(n->db, "INSERT INTO business(call_id) VALUES (?) RETURNING 1", c.call_id) != 1;
        c.first = natomic_durable_commit(ctx, n->db);
        c.rows_in_tx = db_int(n->db, OUTBOX_ROWS, c.call_id);
        db_text(n->db, OUTBOX_EVENT_ID, c.call_id, c.event_id, sizeof c.event_id);
        c.sql_failed = !tx_end(n->db, "COMMIT") || c.sql_failed;
    }
    commit_record(&c);
    return c.sql_failed || c.first != NATOMIC_OK ? natomic_fail(ctx, NATOMIC_EINTERNAL, "CommitFailed", "see test")
                                                 : NATOMIC_OK;
}

/* Durable: an event and no commit: the runtime commits it. */
static natomic_status_t auto_commit_handler(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                            ProtobufCMessage *reply, void *closure)
{
    commit_seen_t c = {0};
    snprintf(c.call_id, sizeof c.call_id, "%s", natomic_ctx_call_id(ctx));
    snprintf(c.tx, sizeof c.tx, "%s", natomic_ctx_tx(ctx));
    double inches = ((const Conversions__InchesToCmRequest *)request)->inches;
    c.first = dispatch_converted(ctx, "auto_converted", inches);
    commit_record(&c);
    ((Conversions__InchesToCmReply *)reply)->cm = inches * 2.54;
    return c.first == NATOMIC_OK ? NATOMIC_OK : natomic_fail(ctx, NATOMIC_EINTERNAL, "DispatchFailed", "see test");
}

/* The last message of `subject` in the EVENTS stream: NATS_OK with *out, or the status. */
static natsStatus events_last(natsMsg **out, tool_t *t, const char *service, const char *type)
{
    char subject[160];
    snprintf(subject, sizeof subject, NATOMIC_EVENTS_PREFIX ".%s.%s", service, type);
    jsErrCode jerr = 0;
    return js_GetLastMsg(out, t->js, NATOMIC_EVENTS_STREAM, subject, NULL, &jerr);
}

static bool is_hex_id(const char *s)
{
    if (s == NULL || strlen(s) != 32)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* ------------------------------------------------------------------ */
/* 1. Idempotency keys                                                  */
/* ------------------------------------------------------------------ */

static void idem_node(node_t *n, const char *name, natomic_mode_t mode, const char *db_path, int64_t retention_s)
{
    node_opts_t o = {.mode = mode, .store = true, .db_path = db_path, .idempotency_retention_s = retention_s};
    node_create(n, name, &o);
    node_method(n, "convert", count_handler, 0, NULL);
    node_method(n, "refuse", refuse_handler, 0, NULL);
    node_method(n, "slow", slow_handler, 0, NULL);
}

START_TEST(test_idem_replays_first_reply)
{
    undo_reset();
    gate_reset(false);
    node_t n;
    idem_node(&n, "idem_reply", NATOMIC_MODE_DURABLE, NULL, 0);
    node_start(&n);

    natomic_call_info_t info;
    double cm = 0;
    ck_assert_status(call_key(n.nc, n.name, "convert", 2.5, "order-1", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1002.5);
    ck_assert_msg(!info.replayed, "the first call with a key is marked replayed");

    ck_assert_status(call_key(n.nc, n.name, "convert", 2.5, "order-1", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1002.5);
    ck_assert_msg(info.replayed, "a repeated key was not marked replayed");
    ck_assert_int_eq(atomic_load(&handler_runs), 1);

    /* Without a key the handler does run again: the replay above was not a coincidence. */
    ck_assert_status(call_key(n.nc, n.name, "convert", 2.5, NULL, &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 2002.5);
    ck_assert_msg(!info.replayed, "a call without a key is marked replayed");
    /* A key names one method's call: the same key on another method is new there. */
    ck_assert_status(call_key(n.nc, n.name, "refuse", 2.5, "order-1", NULL, &info), NATOMIC_EBUSINESS);
    ck_assert_msg(!info.replayed, "a key of another method replayed");
    ck_assert_int_eq(atomic_load(&handler_runs), 3);

    ck_assert_uint_eq(wait_replays(&n, 1), 1);
    node_stop(&n);
}
END_TEST

START_TEST(test_idem_replays_stored_error)
{
    undo_reset();
    node_t n;
    idem_node(&n, "idem_error", NATOMIC_MODE_DURABLE, NULL, 0);
    node_start(&n);

    natomic_call_info_t first, again;
    ck_assert_status(call_key(n.nc, n.name, "refuse", 3, "refuse-1", NULL, &first), NATOMIC_EBUSINESS);
    ck_assert_int_eq(first.code, 422);
    ck_assert_str_eq(first.type, "OutOfStock");
    ck_assert_str_eq(first.message, "run 1 refused 3");
    ck_assert_msg(!first.replayed, "the first failed call is marked replayed");

    ck_assert_status(call_key(n.nc, n.name, "refuse", 3, "refuse-1", NULL, &again), NATOMIC_EBUSINESS);
    ck_assert_int_eq(again.code, 422);
    ck_assert_str_eq(again.type, "OutOfStock");
    ck_assert_str_eq(again.message, "run 1 refused 3");
    ck_assert_msg(again.replayed, "a replayed error is not marked replayed");
    ck_assert_int_eq(atomic_load(&handler_runs), 1);
    node_stop(&n);
}
END_TEST

START_TEST(test_idem_key_reused_with_other_body)
{
    undo_reset();
    node_t n;
    idem_node(&n, "idem_reused", NATOMIC_MODE_DURABLE, NULL, 0);
    node_start(&n);

    natomic_call_info_t info;
    double cm = 0;
    ck_assert_status(call_key(n.nc, n.name, "convert", 1, "pay-7", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1001);

    ck_assert_status(call_key(n.nc, n.name, "convert", 2, "pay-7", &cm, &info), NATOMIC_EBADINPUT);
    ck_assert_int_eq(info.code, 400);
    ck_assert_str_eq(info.type, "IdempotencyKeyReused");
    ck_assert_msg(!info.replayed, "a refused reuse is marked replayed");
    ck_assert_int_eq(atomic_load(&handler_runs), 1);

    /* The refusal did not overwrite the stored outcome. */
    ck_assert_status(call_key(n.nc, n.name, "convert", 1, "pay-7", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1001);
    ck_assert_msg(info.replayed, "the original request no longer replays after a reuse");
    ck_assert_int_eq(atomic_load(&handler_runs), 1);
    node_stop(&n);
}
END_TEST

START_TEST(test_idem_in_progress)
{
    undo_reset();
    gate_reset(true);
    node_t n;
    idem_node(&n, "idem_progress", NATOMIC_MODE_DURABLE, NULL, 0);
    node_start(&n);

    bg_call_t first;
    bg_call_start(&first, n.nc, n.name, "slow", 3, "slow-1");
    bool arrived = gate_wait_arrived(1, fixture_ms(CALL_TIMEOUT_MS));
    if (!arrived)
        gate_open();
    ck_assert_msg(arrived, "the first call never reached its handler");

    natomic_call_info_t info;
    natomic_status_t st = call_key(n.nc, n.name, "slow", 3, "slow-1", NULL, &info);
    gate_open();
    bg_call_join(&first);
    ck_assert_status(st, NATOMIC_ETRANSIENT);
    ck_assert_int_eq(info.code, 503);
    ck_assert_str_eq(info.type, "InProgress");
    ck_assert_int_eq(atomic_load(&handler_runs), 1);

    ck_assert_status(first.st, NATOMIC_OK);
    ck_assert_double_eq(first.cm, 1003);
    ck_assert_msg(!first.info.replayed, "the held call is marked replayed");

    /* Once it ended, its outcome replays. */
    double cm = 0;
    gate_reset(false);
    ck_assert_status(call_key(n.nc, n.name, "slow", 3, "slow-1", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1003);
    ck_assert_msg(info.replayed, "the outcome of the held call does not replay");
    ck_assert_int_eq(atomic_load(&handler_runs), 1);
    node_stop(&n);
}
END_TEST

START_TEST(test_idem_key_expires)
{
    undo_reset();
    node_t n;
    idem_node(&n, "idem_expiry", NATOMIC_MODE_DURABLE, NULL, 1);
    node_start(&n);

    natomic_call_info_t info;
    double cm = 0;
    ck_assert_status(call_key(n.nc, n.name, "convert", 5, "short-lived", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1005);

    /* Replays (if any) answer run 1; within the bound the key expires and run 2 happens. */
    int64_t end = fixture_now_ms() + fixture_ms(5000);
    int replays = 0;
    bool ran_again = false;
    while (!ran_again && fixture_now_ms() < end) {
        fixture_sleep_ms(100);
        ck_assert_status(call_key(n.nc, n.name, "convert", 5, "short-lived", &cm, &info), NATOMIC_OK);
        if (info.replayed) {
            ck_assert_double_eq(cm, 1005);
            replays++;
        } else {
            ran_again = true;
        }
    }
    ck_assert_msg(ran_again, "the key never expired within 5 s (%d replays)", replays);
    ck_assert_double_eq(cm, 2005);
    ck_assert_int_eq(atomic_load(&handler_runs), 2);
    /* Expiry is counted in whole seconds, so how many polls replayed first is not fixed: logged only. */
    fprintf(stderr, "idem_expiry: %d replays before the key expired\n", replays);

    /* The key now names the second run: a replay answers it (or, past the next expiry, a third run). */
    ck_assert_status(call_key(n.nc, n.name, "convert", 5, "short-lived", &cm, &info), NATOMIC_OK);
    if (info.replayed)
        ck_assert_double_eq(cm, 2005);
    else
        ck_assert_double_eq(cm, 3005);
    node_stop(&n);
}
END_TEST

/* Durable keys live in the store: a new service on the same file replays them. */
START_TEST(test_idem_durable_survives_restart)
{
    undo_reset();
    node_t n;
    idem_node(&n, "idem_restart", NATOMIC_MODE_DURABLE, NULL, 0);
    node_start(&n);
    natomic_call_info_t info;
    double cm = 0;
    ck_assert_status(call_key(n.nc, n.name, "convert", 7, "keep-me", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1007);
    char path[512];
    snprintf(path, sizeof path, "%s", n.db_path);
    node_stop(&n);
    ck_assert_int_eq(fixture_db_int(path, "SELECT count(*) FROM natomic_idempotency WHERE key = 'keep-me' AND "
                                          "state = 'done'"),
                     1);

    idem_node(&n, "idem_restart", NATOMIC_MODE_DURABLE, path, 0);
    node_start(&n);
    ck_assert_status(call_key(n.nc, n.name, "convert", 7, "keep-me", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1007);
    ck_assert_msg(info.replayed, "a new durable service on the same store did not replay the key");
    ck_assert_int_eq(atomic_load(&handler_runs), 1);
    ck_assert_uint_eq(wait_replays(&n, 1), 1);
    node_stop(&n);
}
END_TEST

/* Memory-mode keys live in the process: replayed there, forgotten by a new service. */
START_TEST(test_idem_memory_forgets_on_restart)
{
    undo_reset();
    node_t n;
    idem_node(&n, "idem_memory", NATOMIC_MODE_MEMORY, NULL, 0);
    node_start(&n);
    natomic_call_info_t info;
    double cm = 0;
    ck_assert_status(call_key(n.nc, n.name, "convert", 7, "keep-me", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1007);
    ck_assert_status(call_key(n.nc, n.name, "convert", 7, "keep-me", &cm, &info), NATOMIC_OK);
    ck_assert_msg(info.replayed, "memory mode did not replay a key within the process");
    ck_assert_double_eq(cm, 1007);
    char path[512];
    snprintf(path, sizeof path, "%s", n.db_path);
    node_stop(&n);
    /* The store it was given holds no keys in memory mode. */
    ck_assert_int_eq(fixture_db_int(path, "SELECT count(*) FROM sqlite_master WHERE name = 'natomic_idempotency'"),
                     0);

    idem_node(&n, "idem_memory", NATOMIC_MODE_MEMORY, path, 0);
    node_start(&n);
    ck_assert_status(call_key(n.nc, n.name, "convert", 7, "keep-me", &cm, &info), NATOMIC_OK);
    ck_assert_msg(!info.replayed, "a new memory-mode service replayed a key of the old one");
    ck_assert_double_eq(cm, 2007);
    ck_assert_int_eq(atomic_load(&handler_runs), 2);
    node_stop(&n);
}
END_TEST

START_TEST(test_idem_invalid_key)
{
    undo_reset();
    node_t n;
    idem_node(&n, "idem_badkey", NATOMIC_MODE_DURABLE, NULL, 0);
    node_start(&n);
    char long_key[201], max_key[129], over_key[130];
    memset(long_key, 'k', 200);
    long_key[200] = '\0';
    memset(max_key, 'm', 128);
    max_key[128] = '\0';
    memset(over_key, 'o', 129);
    over_key[129] = '\0';

    /* The client refuses to send them. */
    natomic_call_info_t info;
    ck_assert_status(call_key(n.nc, n.name, "convert", 1, "has space", NULL, &info), NATOMIC_EINVAL);
    ck_assert_status(call_key(n.nc, n.name, "convert", 1, long_key, NULL, &info), NATOMIC_EINVAL);

    /* Sent anyway, the service answers 400 and runs nothing. */
    char subject[128], type[64];
    snprintf(subject, sizeof subject, "%s.convert", n.name);
    ck_assert_int_eq(raw_call_code(n.nc, subject, "has space", type, sizeof type), 400);
    ck_assert_str_eq(type, "BadRequest");
    ck_assert_int_eq(raw_call_code(n.nc, subject, long_key, type, sizeof type), 400);
    ck_assert_str_eq(type, "BadRequest");
    ck_assert_int_eq(raw_call_code(n.nc, subject, over_key, type, sizeof type), 400);
    ck_assert_int_eq(atomic_load(&handler_runs), 0);

    /* 128 characters is the longest key. */
    ck_assert_int_eq(raw_call_code(n.nc, subject, max_key, type, sizeof type), 0);
    ck_assert_int_eq(atomic_load(&handler_runs), 1);
    ck_assert_status(call_key(n.nc, n.name, "convert", 1, max_key, NULL, &info), NATOMIC_OK);
    ck_assert_msg(info.replayed, "the 128-character key did not replay");
    ck_assert_int_eq(atomic_load(&handler_runs), 1);
    node_stop(&n);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 2. Named commands and the saga record                                */
/* ------------------------------------------------------------------ */

static void undo_node(node_t *n, const char *name, natomic_mode_t mode, const char *instance, int id)
{
    node_opts_t o = {.mode = mode, .store = true, .instance = instance};
    node_create(n, name, &o);
    node_method(n, "undo_fail", undo_fail_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL);
    node_method(n, "undo_ok", undo_ok_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL);
    node_method(n, "three_steps", three_steps_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL);
    node_method(n, "undo_n_fail", undo_n_fail_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL);
    node_register_undo(n, id);
}

/* Loop test: _i = 0 memory mode, 1 durable mode. */
START_TEST(test_named_command_runs_with_bytes_on_failure)
{
    bool durable = _i == 1;
    const char *name = durable ? "named_durable" : "named_memory";
    undo_reset();
    gate_reset(true);
    node_t n;
    undo_node(&n, name, durable ? NATOMIC_MODE_DURABLE : NATOMIC_MODE_MEMORY, "named-a", 0);
    node_start(&n);
    tool_t t;
    tool_open(&t);

    bg_call_t call;
    bg_call_start(&call, n.nc, n.name, "undo_fail", 1, NULL);
    bool arrived = gate_wait_arrived(1, fixture_ms(CALL_TIMEOUT_MS));
    if (!arrived)
        gate_open();
    ck_assert_msg(arrived, "the handler never ran");
    char call_id[80], tx[80];
    gate_ids(call_id, sizeof call_id, tx, sizeof tx);
    registered_t r = registered_get();

    /* While the handler runs: the record is on the server (durable), nothing ran yet. */
    Natomic__SagaRecord *rec = NULL;
    natsStatus s = NATS_OK;
    kvStore *kv = NULL;
    if (durable) {
        kv = kv_open(&t, "natomic_saga_", n.name);
        s = saga_get(&rec, kv, call_id);
    } else {
        char bucket[128];
        snprintf(bucket, sizeof bucket, "natomic_saga_%s", n.name);
        s = js_KeyValue(&kv, t.js, bucket);
    }
    int runs_while_held = undo_snapshot().runs;
    gate_open();
    bg_call_join(&call);

    ck_assert_status(r.st[0], NATOMIC_OK);
    ck_assert_uint_eq(r.count[0], 1);
    ck_assert_int_eq(runs_while_held, 0);
    if (durable) {
        ck_assert_msg(s == NATS_OK, "no saga record saga.%s while the handler ran: %s", call_id,
                      natsStatus_GetText(s));
        ck_assert_str_eq(rec->service, n.name);
        ck_assert_str_eq(rec->method, "undo_fail");
        ck_assert_str_eq(rec->call_id, call_id);
        ck_assert_str_eq(rec->tx, tx);
        ck_assert_str_eq(rec->owner, "named-a");
        ck_assert_msg(is_hex_id(rec->incarnation), "incarnation '%s' is not a 32-hex id", rec->incarnation);
        ck_assert_int_eq(rec->state, NATOMIC__SAGA_RECORD__STATE__RUNNING);
        ck_assert_uint_eq(rec->n_compensations, 1);
        const Natomic__Compensation *c = rec->compensations[0];
        ck_assert_int_eq(c->kind, NATOMIC__COMPENSATION__KIND__LOCAL);
        ck_assert_str_eq(c->name, UNDO);
        ck_assert_uint_eq(c->data.len, sizeof undo_payload);
        ck_assert_mem_eq(c->data.data, undo_payload, sizeof undo_payload);
        ck_assert_uint_eq(c->attempts, 0);
        natomic__saga_record__free_unpacked(rec, NULL);
    } else {
        ck_assert_msg(s != NATS_OK, "memory mode made the saga bucket natomic_saga_%s", n.name);
    }

    ck_assert_status(call.st, NATOMIC_EBUSINESS);
    ck_assert_str_eq(call.info.type, "Refused");
    ck_assert_str_eq(natomic_outcome_name(call.info.rollback), "complete");
    undo_log_t u = undo_snapshot();
    ck_assert_int_eq(u.runs, 1);
    ck_assert_uint_eq(u.last_len, sizeof undo_payload);
    ck_assert_mem_eq(u.last, undo_payload, sizeof undo_payload);
    ck_assert_str_eq(u.tx, tx);
    ck_assert_str_eq(u.call_id, call_id);

    natomic_service_stats_t st = node_stats(&n);
    ck_assert_uint_eq(st.rollbacks_run, 1);
    ck_assert_uint_eq(st.sagas_logged, durable ? 1 : 0);
    ck_assert_uint_eq(st.log_failures, 0);
    if (durable) {
        /* The call ended: its record is gone. */
        s = saga_get(&rec, kv, call_id);
        ck_assert_msg(s == NATS_NOT_FOUND, "saga.%s still there after the call ended: %s", call_id,
                      natsStatus_GetText(s));
    }
    kvStore_Destroy(kv);
    tool_close(&t);
    node_stop(&n);
}
END_TEST

START_TEST(test_named_command_not_run_on_success)
{
    undo_reset();
    gate_reset(true);
    node_t n;
    undo_node(&n, "named_success", NATOMIC_MODE_DURABLE, "named-b", 0);
    node_start(&n);
    tool_t t;
    tool_open(&t);
    kvStore *kv = kv_open(&t, "natomic_saga_", n.name);

    bg_call_t call;
    bg_call_start(&call, n.nc, n.name, "undo_ok", 4, NULL);
    bool arrived = gate_wait_arrived(1, fixture_ms(CALL_TIMEOUT_MS));
    if (!arrived)
        gate_open();
    ck_assert_msg(arrived, "the handler never ran");
    char call_id[80];
    gate_ids(call_id, sizeof call_id, NULL, 0);
    Natomic__SagaRecord *rec = NULL;
    natsStatus s = saga_get(&rec, kv, call_id);
    gate_open();
    bg_call_join(&call);
    ck_assert_msg(s == NATS_OK, "no saga record while the handler ran: %s", natsStatus_GetText(s));
    natomic__saga_record__free_unpacked(rec, NULL);

    ck_assert_status(call.st, NATOMIC_OK);
    ck_assert_double_eq(call.cm, 4);
    ck_assert_str_eq(natomic_outcome_name(call.info.rollback), "none");
    ck_assert_int_eq(undo_snapshot().runs, 0);
    s = saga_get(&rec, kv, call_id);
    ck_assert_msg(s == NATS_NOT_FOUND, "saga.%s still there after success: %s", call_id, natsStatus_GetText(s));
    /* The runtime's commit decided "committed" for this saga. */
    ck_assert_int_eq(fixture_db_int(n.db_path,
                                    "SELECT count(*) FROM natomic_decision WHERE call_id = %Q AND "
                                    "outcome = 'committed'",
                                    call_id),
                     1);
    /* A while later no recovery round has touched it either. */
    fixture_sleep_ms(fixture_ms(3 * RECOVERY_MS));
    ck_assert_int_eq(undo_snapshot().runs, 0);
    kvStore_Destroy(kv);
    tool_close(&t);
    node_stop(&n);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 3. A saga log write that fails                                       */
/* ------------------------------------------------------------------ */

#ifndef NATOMIC_NO_FAULT_POINTS
START_TEST(test_log_write_failure_registers_nothing)
{
    undo_reset();
    gate_reset(true);
    node_t n;
    undo_node(&n, "log_failure", NATOMIC_MODE_DURABLE, "log-a", 0);
    node_start(&n);

    bg_call_t call;
    bg_call_start(&call, n.nc, n.name, "three_steps", 1, NULL);
    bool arrived = gate_wait_arrived(1, fixture_ms(CALL_TIMEOUT_MS));
    char err[256] = "";
    natomic_status_t applied = arrived ? natomic_faults_apply("natomic/before_log_write=error@1", err, sizeof err)
                                       : NATOMIC_ESTATE;
    gate_open();
    bg_call_join(&call);
    natomic_faults_apply("natomic/before_log_write=off", NULL, 0);
    ck_assert_msg(arrived, "the handler never ran");
    ck_assert_msg(applied == NATOMIC_OK, "natomic_faults_apply: %s (%s)", natomic_status_name(applied), err);

    registered_t r = registered_get();
    ck_assert_status(r.st[0], NATOMIC_OK);
    ck_assert_uint_eq(r.count[0], 1);
    ck_assert_status(r.st[1], NATOMIC_ELOG);
    ck_assert_uint_eq(r.count[1], 1); /* unchanged: nothing registered */
    ck_assert_status(r.st[2], NATOMIC_OK);
    ck_assert_uint_eq(r.count[2], 2);

    ck_assert_status(call.st, NATOMIC_EBUSINESS);
    ck_assert_str_eq(natomic_outcome_name(call.info.rollback), "complete");
    undo_log_t u = undo_snapshot();
    ck_assert_str_eq(u.journal, "three,one"); /* "two" was never registered, so it never runs */
    natomic_service_stats_t st = node_stats(&n);
    ck_assert_uint_eq(st.log_failures, 1);
    ck_assert_uint_eq(st.sagas_logged, 1);
    ck_assert_uint_eq(st.rollbacks_run, 2);
    node_stop(&n);
}
END_TEST
#endif

/* Callers that make `per_thread` failing calls each, "rec:<first + k>" for k = 0.. */
typedef struct caller {
    pthread_t thread;
    natsConnection *nc;
    const char *service;
    int first, per_thread;
    int refused;            /* calls that failed as the handler said (Refused) */
} caller_t;

static void *caller_main(void *arg)
{
    caller_t *c = arg;
    for (int k = 0; k < c->per_thread; k++) {
        natomic_call_info_t info;
        natomic_status_t st = call_key(c->nc, c->service, "undo_n_fail", c->first + k, NULL, NULL, &info);
        if (st == NATOMIC_EBUSINESS && strcmp(info.type, "Refused") == 0)
            c->refused++;
        fixture_sleep_ms(20 + (c->first + k) % 31); /* spread the calls over many recovery rounds */
    }
    return NULL;
}

/*
 * A live instance's own recovery rounds must leave its calls alone: a
 * call's compensation runs once, by the call, and recovery reports
 * nothing. Failing calls whose compensation takes 30 ms keep records in
 * the log while rounds read it, so a round sees records of calls that end
 * before it gets to them; a hundred records of another live instance
 * ("parked", never to be claimed) make each round take a while to get
 * there, as a busy log does.
 */
START_TEST(test_own_recovery_leaves_finished_calls_alone)
{
    enum { THREADS = 4, PER_THREAD = 30, CALLS = THREADS * PER_THREAD, PARKED = 100 };
    undo_reset();
    atomic_store(&undo_delay_ms, 30);
    node_t n;
    node_opts_t o = {.mode = NATOMIC_MODE_DURABLE, .store = true, .instance = "own-a", .lease_ms = 20000};
    node_create(&n, "own_recovery", &o);
    node_method(&n, "undo_n_fail", undo_n_fail_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL);
    node_register_undo(&n, 0);
    node_start(&n);
    tool_t t;
    tool_open(&t);
    natsSubscription *sub = recovery_subscribe(&t, n.name);
    /* The parked records' owner stays alive for the lease time of this service's bucket (20 s). */
    kvStore *leases = kv_open(&t, "natomic_lease_", n.name);
    char parked_inc[33];
    made_up_id(parked_inc);
    lease_put(leases, "parked-owner", parked_inc);
    for (int i = 0; i < PARKED; i++) {
        char call_id[33];
        made_up_id(call_id);
        orphan_publish(&t, n.name, call_id, "parked-owner", parked_inc, MAX_RECORDS + i);
    }

    caller_t callers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        callers[i] = (caller_t){.nc = n.nc, .service = n.name, .first = i * PER_THREAD, .per_thread = PER_THREAD};
        ck_assert_int_eq(pthread_create(&callers[i].thread, NULL, caller_main, &callers[i]), 0);
    }
    int refused = 0;
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_join(callers[i].thread, NULL), 0);
        refused += callers[i].refused;
    }
    ck_assert_int_eq(refused, CALLS);
    /* A few more rounds: whatever they would do, they do now. */
    fixture_sleep_ms(fixture_ms(5 * RECOVERY_MS));

    undo_log_t u = undo_snapshot();
    int events = 0;
    char first_event[512] = "";
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, sub, 50) == NATS_OK) {
        if (events++ == 0)
            snprintf(first_event, sizeof first_event, "%.*s", natsMsg_GetDataLength(m), natsMsg_GetData(m));
        natsMsg_Destroy(m);
    }
    int twice = 0, first_twice = -1;
    for (int i = 0; i < CALLS; i++) {
        if (u.per_record[i] != 1 && first_twice < 0)
            first_twice = i;
        twice += u.per_record[i] > 1;
    }
    /* Stopped before asserting: under valgrind (no fork) a failure here must not leave a service running. */
    kvStore_Destroy(leases);
    natsSubscription_Destroy(sub);
    tool_close(&t);
    node_stop(&n);
    ck_assert_msg(first_twice < 0, "%d of %d compensations ran more than once (rec:%d ran %d times); %d recovery "
                  "events, the first: %s", twice, CALLS, first_twice, first_twice >= 0 ? u.per_record[first_twice] : 0,
                  events, first_event);
    ck_assert_int_eq(u.runs, CALLS);
    ck_assert_msg(events == 0, "%d recovery events about a live instance's own calls, the first: %s", events,
                  first_event);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 4. Recovery: two instances race for orphaned records                 */
/* ------------------------------------------------------------------ */

/* Loop test: _i = 0 one record, 1 twenty at once, 2 twenty more (another service). */
START_TEST(test_claim_race_one_winner)
{
    static const int counts[] = {1, 20, 20};
    int records = counts[_i];
    char name[64];
    snprintf(name, sizeof name, "claim_race_%d", _i);
    undo_reset();
    gate_reset(false);

    node_t b, c;
    undo_node(&b, name, NATOMIC_MODE_DURABLE, "b", 0);
    undo_node(&c, name, NATOMIC_MODE_DURABLE, "c", 1);
    node_start(&b);
    node_start(&c);
    tool_t t;
    tool_open(&t);
    natsSubscription *sub = recovery_subscribe(&t, name);

    recovery_seen_t seen;
    memset(&seen, 0, sizeof seen);
    char incarnation[33];
    made_up_id(incarnation);
    for (int i = 0; i < records; i++) {
        made_up_id(seen.call_id[i]);
        seen.n++;
        orphan_publish(&t, name, seen.call_id[i], "dead-instance", incarnation, i);
    }
    recovery_collect(sub, &seen, fixture_ms(20000), fixture_ms(5 * RECOVERY_MS));

    kvStore *kv = kv_open(&t, "natomic_saga_", name);
    undo_log_t u = undo_snapshot();
    for (int i = 0; i < records; i++) {
        ck_assert_msg(seen.claimed[i] == 1, "record %d (%s) claimed %d times", i, seen.call_id[i], seen.claimed[i]);
        ck_assert_msg(seen.ended[i] == 1, "record %d (%s) ended %d times", i, seen.call_id[i], seen.ended[i]);
        ck_assert_msg(seen.compensated[i] == 1, "record %d compensated %d times", i, seen.compensated[i]);
        ck_assert_msg(strcmp(seen.claimed_by[i], "b") == 0 || strcmp(seen.claimed_by[i], "c") == 0,
                      "record %d claimed by '%s'", i, seen.claimed_by[i]);
        ck_assert_str_eq(seen.ended_by[i], seen.claimed_by[i]);
        ck_assert_msg(u.per_record[i] == 1, "the command of record %d ran %d times", i, u.per_record[i]);
        Natomic__SagaRecord *rec = NULL;
        natsStatus s = saga_get(&rec, kv, seen.call_id[i]);
        if (s == NATS_OK)
            natomic__saga_record__free_unpacked(rec, NULL);
        ck_assert_msg(s == NATS_NOT_FOUND, "record %d still in the log: %s", i, natsStatus_GetText(s));
    }
    ck_assert_int_eq(u.runs, records);
    ck_assert_int_eq(u.by_node[0] + u.by_node[1], records);
    ck_assert_int_eq(seen.unknown, 0);
    natomic_service_stats_t sb = node_stats(&b), sc = node_stats(&c);
    ck_assert_uint_eq(sb.sagas_recovered + sc.sagas_recovered, (uint64_t)records);
    ck_assert_uint_eq(sb.sagas_recovered, (uint64_t)u.by_node[0]);
    ck_assert_uint_eq(sc.sagas_recovered, (uint64_t)u.by_node[1]);
    fprintf(stderr, "%s: %d records, b recovered %d, c %d\n", name, records, u.by_node[0], u.by_node[1]);

    kvStore_Destroy(kv);
    natsSubscription_Destroy(sub);
    tool_close(&t);
    node_stop(&b);
    node_stop(&c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 5. Leases                                                            */
/* ------------------------------------------------------------------ */

START_TEST(test_lease_held_and_released)
{
    int lease_ms = fixture_ms(LEASE_MS);
    undo_reset();
    node_t n;
    node_opts_t o = {.mode = NATOMIC_MODE_DURABLE, .instance = "lease-a", .lease_ms = lease_ms};
    node_create(&n, "lease_life", &o);
    node_method(&n, "convert", count_handler, 0, NULL);
    node_start(&n);
    tool_t t;
    tool_open(&t);
    kvStore *kv = kv_open(&t, "natomic_lease_", n.name);

    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, kv, "lease-a");
    ck_assert_msg(s == NATS_OK, "no lease key for instance lease-a while it runs: %s", natsStatus_GetText(s));
    Natomic__Lease *lease = natomic__lease__unpack(NULL, (size_t)kvEntry_ValueLen(e), kvEntry_Value(e));
    uint64_t first_rev = kvEntry_Revision(e);
    kvEntry_Destroy(e);
    ck_assert_ptr_nonnull(lease);
    ck_assert_str_eq(lease->instance, "lease-a");
    ck_assert_msg(is_hex_id(lease->incarnation), "incarnation '%s'", lease->incarnation);
    ck_assert_int_eq(lease->pid, (int64_t)getpid());
    ck_assert_int_gt(lease->started_ns, 0);
    natomic__lease__free_unpacked(lease, NULL);

    /* Renewed every quarter of the lease: alive past its TTL, with newer revisions. */
    fixture_sleep_ms(lease_ms + lease_ms / 2);
    s = kvStore_Get(&e, kv, "lease-a");
    ck_assert_msg(s == NATS_OK, "the lease expired although the instance runs: %s", natsStatus_GetText(s));
    uint64_t later_rev = kvEntry_Revision(e);
    kvEntry_Destroy(e);
    ck_assert_uint_gt(later_rev, first_rev);

    /* A graceful stop deletes it at once: no waiting for the TTL. */
    natomic_service_destroy(n.svc);
    n.svc = NULL;
    s = kvStore_Get(&e, kv, "lease-a");
    kvEntry_Destroy(e);
    ck_assert_msg(s == NATS_NOT_FOUND, "the lease key is still there after natomic_service_destroy: %s",
                  natsStatus_GetText(s));
    kvStore_Destroy(kv);
    tool_close(&t);
    node_stop(&n);
}
END_TEST

/*
 * A record owned by "ghost", whose lease the test keeps alive: not
 * claimed while renewed, claimed after the entry expired. A second record
 * names another incarnation of "ghost", a third another incarnation of
 * the claimer's own instance name "b": those processes are gone, both
 * records are claimed at once.
 */
START_TEST(test_live_lease_protects_its_records)
{
    const char *name = "ghost_lease";
    int lease_ms = fixture_ms(LEASE_MS);
    undo_reset();
    node_t b;
    node_opts_t o = {.mode = NATOMIC_MODE_DURABLE, .store = true, .instance = "b", .lease_ms = lease_ms};
    node_create(&b, name, &o);
    node_method(&b, "undo_fail", undo_fail_handler, NATOMIC_ROLLBACK_ONCE_FAILED, NULL);
    node_register_undo(&b, 0);
    node_start(&b);
    tool_t t;
    tool_open(&t);
    natsSubscription *sub = recovery_subscribe(&t, name);
    kvStore *leases = kv_open(&t, "natomic_lease_", name);

    char alive_inc[33], old_inc[33];
    made_up_id(alive_inc);
    made_up_id(old_inc);
    recovery_seen_t seen;
    memset(&seen, 0, sizeof seen);
    made_up_id(seen.call_id[0]);
    made_up_id(seen.call_id[1]);
    made_up_id(seen.call_id[2]);
    seen.n = 3;
    int64_t last_put = lease_put(leases, "ghost", alive_inc);
    orphan_publish(&t, name, seen.call_id[0], "ghost", alive_inc, 0);
    orphan_publish(&t, name, seen.call_id[1], "ghost", old_inc, 1);
    orphan_publish(&t, name, seen.call_id[2], "b", old_inc, 2);

    /* Renew for 2.5 lease times, every fifth of one. */
    int64_t renew_end = fixture_now_ms() + lease_ms * 5 / 2;
    while (fixture_now_ms() < renew_end) {
        recovery_next(sub, &seen, lease_ms / 5);
        last_put = lease_put(leases, "ghost", alive_inc);
    }
    int64_t stopped_renewing = last_put;
    undo_log_t during = undo_snapshot();
    ck_assert_msg(seen.claimed[0] == 0, "the record of a live lease was claimed (%d times)", seen.claimed[0]);
    ck_assert_int_eq(during.per_record[0], 0);
    ck_assert_int_eq(seen.claimed[1], 1);
    ck_assert_int_eq(during.per_record[1], 1);
    ck_assert_int_eq(seen.claimed[2], 1);
    ck_assert_int_eq(during.per_record[2], 1);

    /* Left to expire: claimed only then. */
    int64_t end = fixture_now_ms() + fixture_ms(10000) + lease_ms;
    while (seen.claimed[0] == 0 && fixture_now_ms() < end)
        recovery_next(sub, &seen, 50);
    int64_t claimed_at = fixture_now_ms();
    ck_assert_msg(seen.claimed[0] == 1, "the record was not claimed after its lease expired (claimed %d)",
                  seen.claimed[0]);
    /* The TTL counts from the last put (which began at stopped_renewing); the claim came after it. */
    ck_assert_int_ge(claimed_at - stopped_renewing, lease_ms - 100);
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, leases, "ghost");
    kvEntry_Destroy(e);
    ck_assert_msg(s == NATS_NOT_FOUND, "claimed while the ghost's lease entry exists: %s", natsStatus_GetText(s));

    recovery_collect(sub, &seen, fixture_ms(10000), fixture_ms(3 * RECOVERY_MS));
    undo_log_t u = undo_snapshot();
    ck_assert_int_eq(seen.claimed[0], 1);
    ck_assert_int_eq(seen.ended[0], 1);
    ck_assert_int_eq(u.per_record[0], 1);
    ck_assert_int_eq(u.per_record[1], 1);
    ck_assert_int_eq(u.per_record[2], 1);
    ck_assert_int_eq(u.runs, 3);
    ck_assert_uint_eq(node_stats(&b).sagas_recovered, 3);

    kvStore_Destroy(leases);
    natsSubscription_Destroy(sub);
    tool_close(&t);
    node_stop(&b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 6. natomic_durable_commit                                            */
/* ------------------------------------------------------------------ */

static void commit_node(node_t *n, const char *name, natomic_mode_t mode)
{
    node_opts_t o = {.mode = mode, .store = true};
    node_create(n, name, &o);
    store_exec(n->db, "CREATE TABLE business(call_id TEXT NOT NULL)");
    node_method(n, "memory", commit_memory_handler, NATOMIC_DISPATCH_AFTER_COMMIT, n);
    node_method(n, "twice", commit_twice_handler, NATOMIC_DISPATCH_AFTER_COMMIT, n);
    node_method(n, "rolled_back", commit_rolled_back_handler, NATOMIC_DISPATCH_AFTER_COMMIT, n);
    node_method(n, "published", commit_published_handler, NATOMIC_DISPATCH_AFTER_COMMIT, n);
    node_method(n, "auto", auto_commit_handler, NATOMIC_DISPATCH_AFTER_COMMIT, n);
}

static void other_db_open(void)
{
    char path[512];
    fixture_path(path, sizeof path, "other", ".db");
    other_db = store_open(path);
}

static void other_db_close(void)
{
    sqlite3_close(other_db);
    other_db = NULL;
}

START_TEST(test_commit_in_memory_mode_does_nothing)
{
    node_t n;
    commit_node(&n, "commit_memory", NATOMIC_MODE_MEMORY);
    node_start(&n);
    other_db_open();
    natomic_call_info_t info;
    ck_assert_status(call_key(n.nc, n.name, "memory", 1, NULL, NULL, &info), NATOMIC_OK);
    commit_seen_t c = commit_get();
    ck_assert_status(c.first, NATOMIC_OK);
    ck_assert_status(c.second, NATOMIC_OK); /* nothing was committed, so no ESTATE */
    ck_assert_status(c.wrong_db, NATOMIC_OK);
    ck_assert_int_eq(fixture_db_int(n.db_path, "SELECT count(*) FROM sqlite_master WHERE name LIKE 'natomic_%%'"),
                     0);
    other_db_close();
    node_stop(&n);
}
END_TEST

START_TEST(test_commit_wrong_db_and_twice)
{
    node_t n;
    commit_node(&n, "commit_twice", NATOMIC_MODE_DURABLE);
    node_start(&n);
    other_db_open();
    natomic_call_info_t info;
    ck_assert_status(call_key(n.nc, n.name, "twice", 1, NULL, NULL, &info), NATOMIC_OK);
    commit_seen_t c = commit_get();
    ck_assert_msg(!c.sql_failed, "the handler's transaction failed");
    ck_assert_status(c.wrong_db, NATOMIC_EINVAL);
    ck_assert_status(c.first, NATOMIC_OK);
    ck_assert_status(c.second, NATOMIC_ESTATE);
    other_db_close();
    node_stop(&n);
}
END_TEST

START_TEST(test_commit_rolled_back_by_caller_leaves_nothing)
{
    node_t n;
    commit_node(&n, "commit_rollback", NATOMIC_MODE_DURABLE);
    node_start(&n);
    tool_t t;
    tool_open(&t);
    natomic_call_info_t info;
    ck_assert_status(call_key(n.nc, n.name, "rolled_back", 1, NULL, NULL, &info), NATOMIC_EBUSINESS);
    ck_assert_str_eq(info.type, "Rejected");
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "none");
    commit_seen_t c = commit_get();
    ck_assert_msg(!c.sql_failed, "the handler's transaction failed");
    ck_assert_status(c.first, NATOMIC_OK);
    ck_assert_int_eq(c.rows_in_tx, 1);   /* written inside the caller's transaction ... */
    ck_assert_int_eq(c.rows_after, 0);   /* ... and gone with its ROLLBACK */
    ck_assert_msg(is_hex_id(c.event_id), "event id '%s' read from the outbox", c.event_id);
    ck_assert_int_eq(fixture_db_int(n.db_path, "SELECT count(*) FROM natomic_outbox WHERE call_id = %Q", c.call_id),
                     0);
    ck_assert_int_eq(fixture_db_int(n.db_path, "SELECT count(*) FROM business"), 0);

    /* Not published, not even later by the relay (it would be after a second). */
    fixture_sleep_ms(fixture_ms(1000 + 3 * RECOVERY_MS));
    natsMsg *m = NULL;
    natsStatus s = events_last(&m, &t, n.name, "rejected");
    ck_assert_msg(s != NATS_OK, "a rolled-back event was published: %.*s", m ? natsMsg_GetDataLength(m) : 0,
                  m ? natsMsg_GetData(m) : "");
    ck_assert_uint_eq(node_stats(&n).outbox_relayed, 0);
    tool_close(&t);
    node_stop(&n);
}
END_TEST

START_TEST(test_commit_then_event_published_with_msg_id)
{
    node_t n;
    commit_node(&n, "commit_publish", NATOMIC_MODE_DURABLE);
    node_start(&n);
    tool_t t;
    tool_open(&t);
    natomic_call_info_t info;
    double cm = 0;
    ck_assert_status(call_key(n.nc, n.name, "published", 2, NULL, &cm, &info), NATOMIC_OK);
    ck_assert_double_eq_tol(cm, 5.08, 1e-9);
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "complete");
    commit_seen_t c = commit_get();
    ck_assert_msg(!c.sql_failed, "the handler's transaction failed");
    ck_assert_status(c.first, NATOMIC_OK);
    ck_assert_int_eq(c.rows_in_tx, 1);
    ck_assert_msg(is_hex_id(c.event_id), "event id '%s' read from the outbox", c.event_id);
    /* Published and acknowledged before the reply: the row is gone, the business row stays. */
    ck_assert_int_eq(fixture_db_int(n.db_path, "SELECT count(*) FROM natomic_outbox"), 0);
    ck_assert_int_eq(fixture_db_int(n.db_path, "SELECT count(*) FROM business WHERE call_id = %Q", c.call_id), 1);

    natsMsg *m = NULL;
    natsStatus s = events_last(&m, &t, n.name, "converted");
    ck_assert_msg(s == NATS_OK, "no event events.%s.converted in the stream %s: %s", n.name, NATOMIC_EVENTS_STREAM,
                  natsStatus_GetText(s));
    ck_assert_pstr_eq(fixture_header(m, "Nats-Msg-Id"), c.event_id);
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_EVENT_ID), c.event_id);
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_EVENT_TYPE), "converted");
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_TX), c.tx);
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_CALL_ID), c.call_id);
    Conversions__Converted *ev = conversions__converted__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                                (const uint8_t *)natsMsg_GetData(m));
    natsMsg_Destroy(m);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(ev->conversion_id, 42);
    ck_assert_double_eq(ev->inches, 2);
    conversions__converted__free_unpacked(ev, NULL);
    ck_assert_uint_eq(node_stats(&n).outbox_relayed, 0);
    tool_close(&t);
    node_stop(&n);
}
END_TEST

/* Waits (bounded) until the outbox of `path` has no row for call_id; the rows left. */
static int64_t wait_outbox_empty(const char *path, const char *call_id, int ms)
{
    int64_t end = fixture_now_ms() + ms;
    int64_t rows = fixture_db_int(path, "SELECT count(*) FROM natomic_outbox WHERE call_id = %Q", call_id);
    while (rows > 0 && fixture_now_ms() < end) {
        fixture_sleep_ms(50);
        rows = fixture_db_int(path, "SELECT count(*) FROM natomic_outbox WHERE call_id = %Q", call_id);
    }
    return rows;
}

START_TEST(test_auto_commit_publishes_events)
{
    node_t n;
    commit_node(&n, "commit_auto", NATOMIC_MODE_DURABLE);
    node_start(&n);
    tool_t t;
    tool_open(&t);

    /* Without a commit in the handler the event still leaves, with its id as Nats-Msg-Id. */
    natomic_call_info_t info;
    ck_assert_status(call_key(n.nc, n.name, "auto", 3, NULL, NULL, &info), NATOMIC_OK);
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "complete");
    commit_seen_t c = commit_get();
    ck_assert_status(c.first, NATOMIC_OK);
    natsMsg *m = NULL;
    natsStatus s = events_last(&m, &t, n.name, "auto_converted");
    ck_assert_msg(s == NATS_OK, "no event events.%s.auto_converted: %s", n.name, natsStatus_GetText(s));
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_CALL_ID), c.call_id);
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_TX), c.tx);
    const char *msg_id = fixture_header(m, "Nats-Msg-Id");
    ck_assert_msg(is_hex_id(msg_id), "Nats-Msg-Id '%s'", msg_id != NULL ? msg_id : "(none)");
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_EVENT_ID), msg_id);
    natsMsg_Destroy(m);
    m = NULL;
    ck_assert_int_eq(fixture_db_int(n.db_path, "SELECT count(*) FROM natomic_outbox"), 0);

#ifndef NATOMIC_NO_FAULT_POINTS
    /* The runtime's commit wrote an outbox row: seen while publishing fails, then relayed. */
    char err[256] = "";
    natomic_status_t applied = natomic_faults_apply("natomic/event_publish=error", err, sizeof err);
    ck_assert_msg(applied == NATOMIC_OK, "natomic_faults_apply: %s (%s)", natomic_status_name(applied), err);
    natomic_status_t st = call_key(n.nc, n.name, "auto", 4, NULL, NULL, &info);
    c = commit_get();
    int64_t rows = fixture_db_int(n.db_path, "SELECT count(*) FROM natomic_outbox WHERE call_id = %Q", c.call_id);
    char row_event_id[80] = "";
    file_text(n.db_path, "SELECT event_id FROM natomic_outbox WHERE call_id = ?", c.call_id, row_event_id,
              sizeof row_event_id);
    natomic_faults_apply("natomic/event_publish=off", NULL, 0);
    ck_assert_status(st, NATOMIC_OK);
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "incomplete");
    ck_assert_int_eq(rows, 1);
    ck_assert_msg(is_hex_id(row_event_id), "event id in the outbox: '%s'", row_event_id);

    /* The relay publishes rows older than a second. */
    ck_assert_int_eq(wait_outbox_empty(n.db_path, c.call_id, fixture_ms(10000)), 0);
    ck_assert_uint_eq(node_stats(&n).outbox_relayed, 1);
    s = events_last(&m, &t, n.name, "auto_converted");
    ck_assert_msg(s == NATS_OK, "the relayed event is not in the stream: %s", natsStatus_GetText(s));
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_CALL_ID), c.call_id);
    ck_assert_pstr_eq(fixture_header(m, "Nats-Msg-Id"), row_event_id);
    ck_assert_pstr_eq(fixture_header(m, NATOMIC_HDR_EVENT_ID), row_event_id);
    natsMsg_Destroy(m);
#endif
    tool_close(&t);
    node_stop(&n);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 7. The store durable mode needs                                      */
/* ------------------------------------------------------------------ */

START_TEST(test_durable_needs_store_for_flagged_methods)
{
    static const unsigned flags[] = {NATOMIC_ROLLBACK_ONCE_FAILED, NATOMIC_DISPATCH_AFTER_COMMIT};
    for (int i = 0; i < 2; i++) {
        char name[64];
        snprintf(name, sizeof name, "no_store_%d", i);
        node_t n;
        node_opts_t o = {.mode = NATOMIC_MODE_DURABLE, .store = false};
        node_create(&n, name, &o);
        node_method(&n, "convert", count_handler, 0, NULL);
        node_method(&n, "flagged", count_handler, flags[i], NULL);
        natomic_status_t st = natomic_service_start(n.svc);
        ck_assert_msg(st == NATOMIC_EINVAL, "durable start without a store, a method flagged %u: %s, expected "
                      "NATOMIC_EINVAL", flags[i], natomic_status_name(st));
        /* Nothing answers: it never started. */
        natomic_call_info_t info;
        ck_assert_status(call_key(n.nc, name, "convert", 1, NULL, NULL, &info), NATOMIC_ENORESPONDERS);
        node_stop(&n);
    }
}
END_TEST

START_TEST(test_durable_without_store_when_nothing_is_flagged)
{
    undo_reset();
    node_t n;
    node_opts_t o = {.mode = NATOMIC_MODE_DURABLE, .store = false};
    node_create(&n, "store_free", &o);
    node_method(&n, "convert", count_handler, 0, NULL);
    node_start(&n);
    natomic_call_info_t info;
    double cm = 0;
    ck_assert_status(call_key(n.nc, n.name, "convert", 1, "k-1", &cm, &info), NATOMIC_OK);
    ck_assert_double_eq(cm, 1001);
    /* Its keys live in the process, and still replay. */
    ck_assert_status(call_key(n.nc, n.name, "convert", 1, "k-1", &cm, &info), NATOMIC_OK);
    ck_assert_msg(info.replayed, "no replay without a store");
    ck_assert_double_eq(cm, 1001);
    /* The registry is closed once started. */
    ck_assert_status(natomic_command_register(n.svc, "late.command", undo_command, (void *)&node_ids[0]),
                     NATOMIC_ESTATE);
    node_stop(&n);
}
END_TEST

static Suite *durable_suite(void)
{
    Suite *s = suite_create("durable");

    TCase *idem = tcase_create("idempotency");
    tcase_set_timeout(idem, 60);
    tcase_add_test(idem, test_idem_replays_first_reply);
    tcase_add_test(idem, test_idem_replays_stored_error);
    tcase_add_test(idem, test_idem_key_reused_with_other_body);
    tcase_add_test(idem, test_idem_in_progress);
    tcase_add_test(idem, test_idem_key_expires);
    tcase_add_test(idem, test_idem_durable_survives_restart);
    tcase_add_test(idem, test_idem_memory_forgets_on_restart);
    tcase_add_test(idem, test_idem_invalid_key);
    suite_add_tcase(s, idem);

    TCase *named = tcase_create("named commands");
    tcase_set_timeout(named, 60);
    tcase_add_loop_test(named, test_named_command_runs_with_bytes_on_failure, 0, 2);
    tcase_add_test(named, test_named_command_not_run_on_success);
#ifndef NATOMIC_NO_FAULT_POINTS
    tcase_add_test(named, test_log_write_failure_registers_nothing);
#endif
    suite_add_tcase(s, named);

    TCase *recovery = tcase_create("recovery");
    tcase_set_timeout(recovery, 120);
    tcase_add_test(recovery, test_own_recovery_leaves_finished_calls_alone);
    tcase_add_loop_test(recovery, test_claim_race_one_winner, 0, 3);
    tcase_add_test(recovery, test_lease_held_and_released);
    tcase_add_test(recovery, test_live_lease_protects_its_records);
    suite_add_tcase(s, recovery);

    TCase *commit = tcase_create("commit");
    tcase_set_timeout(commit, 60);
    tcase_add_test(commit, test_commit_in_memory_mode_does_nothing);
    tcase_add_test(commit, test_commit_wrong_db_and_twice);
    tcase_add_test(commit, test_commit_rolled_back_by_caller_leaves_nothing);
    tcase_add_test(commit, test_commit_then_event_published_with_msg_id);
    tcase_add_test(commit, test_auto_commit_publishes_events);
    suite_add_tcase(s, commit);

    TCase *store = tcase_create("store");
    tcase_add_test(store, test_durable_needs_store_for_flagged_methods);
    tcase_add_test(store, test_durable_without_store_when_nothing_is_flagged);
    suite_add_tcase(s, store);
    return s;
}

int main(void)
{
    return fixture_run(durable_suite(), "durable");
}
