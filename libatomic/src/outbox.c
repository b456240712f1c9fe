/*
 * outbox.c -- events that leave exactly once, and the saga's decision.
 *
 * THE OUTBOX. In memory mode an event is published after the call
 * succeeded, on core NATS: a crash between the commit and the publish
 * loses it, and a consumer that is down never hears of it. In durable
 * mode the event is a row of the service's own SQLite store, written in
 * the same transaction as the business change (natomic_durable_commit):
 *
 *     natomic_outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT,
 *                    event_id TEXT UNIQUE, subject, type, tx, call_id,
 *                    data BLOB, created_ms)
 *
 * so the event exists exactly when the change does. After the commit the
 * call's dispatch command publishes it to the JetStream stream EVENTS
 * (subjects "events.>") with Nats-Msg-Id = the event id, waits for the
 * stream's acknowledgement, and only then deletes the row. A crash
 * anywhere in between leaves the row, and the relay publishes it again:
 * at start and every recovery interval, each row older than a second
 * (so as not to race a call publishing its own) is published, in seq
 * order, and deleted on its ack. A row published twice -- by the call and
 * by the relay, or after a crash between the ack and the delete -- has
 * the same Nats-Msg-Id, and the stream drops the copy inside its
 * duplicate window (2 minutes). Consumers read the stream through durable
 * consumers (event_consumer.c), so one that was down catches up.
 *
 * THE DECISION. natomic_decision(call_id PRIMARY KEY, outcome, decided_at)
 * records once whether a saga committed or was aborted by recovery; see
 * durable.c for why both sides write it and only one can.
 *
 * Both tables live in the store the service gave (a serialized
 * connection); each statement here holds the connection's mutex, which is
 * recursive, so it may run inside the caller's own transaction.
 */
#include "natomic_internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "durable_internal.h"

#define PUBLISH_TIMEOUT_MS 3000
#define RELAY_BATCH 64

natomic_status_t natomic__outbox_init(sqlite3 *db)
{
    int rc = sqlite3_exec(db,
                          "CREATE TABLE IF NOT EXISTS natomic_outbox ("
                          "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                          "  event_id TEXT NOT NULL UNIQUE, subject TEXT NOT NULL, type TEXT NOT NULL,"
                          "  tx TEXT NOT NULL, call_id TEXT NOT NULL, data BLOB NOT NULL,"
                          "  created_ms INTEGER NOT NULL);"
                          "CREATE TABLE IF NOT EXISTS natomic_decision ("
                          "  call_id TEXT PRIMARY KEY,"
                          "  outcome TEXT NOT NULL CHECK (outcome IN ('committed', 'aborted')),"
                          "  decided_at INTEGER NOT NULL) WITHOUT ROWID;"
                          "CREATE INDEX IF NOT EXISTS natomic_decision_age ON natomic_decision(decided_at);",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        natomic__log(NATOMIC_LOG_ERROR, NULL, "outbox: cannot create its tables: %s", sqlite3_errmsg(db));
        return NATOMIC_ETRANSIENT;
    }
    return NATOMIC_OK;
}

static int64_t wall_ms(void)
{
    return natomic__wall_ns() / 1000000;
}

natomic_status_t natomic__outbox_write(natomic_ctx_t *ctx, sqlite3 *db)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_DONE;
    for (size_t i = 0; i < ctx->dispatches.count && rc == SQLITE_DONE; i++) {
        const natomic_event_t *e = natomic__event_of(&ctx->dispatches.items[i]);
        if (e == NULL)
            continue;
        if (st == NULL &&
            sqlite3_prepare_v2(db,
                               "INSERT INTO natomic_outbox(event_id, subject, type, tx, call_id, data, created_ms) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)",
                               -1, &st, NULL) != SQLITE_OK) {
            rc = SQLITE_ERROR;
            break;
        }
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, e->event_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, e->subject, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, e->type, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, ctx->tx, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, ctx->call_id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 6, e->data, (int)e->len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, wall_ms());
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE)
        natomic__log(NATOMIC_LOG_ERROR, ctx->service_name, "outbox: cannot write the events of tx %s: %s", ctx->tx,
                     sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return rc == SQLITE_DONE ? NATOMIC_OK : NATOMIC_ETRANSIENT;
}

natomic_status_t natomic__outbox_publish(natomic_service_t *svc, natomic_ctx_t *ctx, const natomic_event_t *e,
                                         const char *tx, const char *call_id)
{
    (void)ctx;
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, e->subject, NULL, (const char *)e->data, (int)e->len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_TX, tx);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_CALL_ID, call_id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_EVENT_ID, e->event_id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_EVENT_TYPE, e->type);
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)natomic__wall_ns());
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_TIME_NS, now);
    jsPubOptions o;
    jsPubOptions_Init(&o);
    o.MaxWait = PUBLISH_TIMEOUT_MS;
    o.MsgId = e->event_id;
    o.ExpectStream = NATOMIC_EVENTS_STREAM;
    natomic_fault_t f = NATOMIC_FAULT("natomic/event_publish");
    jsErrCode jerr = 0;
    if (s == NATS_OK && f == NATOMIC_FAULT_ERROR)
        s = NATS_CONNECTION_CLOSED;
    if (s == NATS_OK && f == NATOMIC_FAULT_DROP)
        s = NATS_TIMEOUT; /* lost on the way: no ack comes, the row stays for the relay */
    if (s == NATS_OK)
        s = js_PublishMsg(NULL, svc->durable->js, m, &o, &jerr);
    if (s == NATS_OK && f == NATOMIC_FAULT_DUPLICATE)
        s = js_PublishMsg(NULL, svc->durable->js, m, &o, &jerr); /* the stream drops the copy */
    natsMsg_Destroy(m);
    if (s != NATS_OK) {
        natomic__log(NATOMIC_LOG_WARN, svc->name, "outbox: event %s (%s) not acknowledged: %s", e->event_id, e->type,
                     jerr != 0 ? nats_GetLastError(NULL) : natsStatus_GetText(s));
        return NATOMIC_ENATS;
    }
    return NATOMIC_OK;
}

void natomic__outbox_delete(natomic_service_t *svc, const char *event_id)
{
    sqlite3 *db = svc->store;
    if (db == NULL)
        return;
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "DELETE FROM natomic_outbox WHERE event_id = ?", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, event_id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) /* published: the relay will publish it again, the stream drop it */
        natomic__log(NATOMIC_LOG_WARN, svc->name, "outbox: cannot delete published event %s: %s", event_id,
                     sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
}

/* One row read for the relay. */
typedef struct relay_row {
    natomic_event_t e;
    char tx[NATOMIC_ID_LEN + 1 + 32];
    char call_id[NATOMIC_ID_LEN + 1 + 32];
} relay_row_t;

/* Reads up to max rows older than the grace; count, or -1. Rows' data is malloc'ed. */
static int read_rows(natomic_service_t *svc, int64_t grace_ms, relay_row_t *rows, int max)
{
    sqlite3 *db = svc->store;
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int n = 0, rc = sqlite3_prepare_v2(db,
                                       "SELECT event_id, subject, type, tx, call_id, data FROM natomic_outbox "
                                       "WHERE created_ms <= ? ORDER BY seq LIMIT ?",
                                       -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, wall_ms() - grace_ms);
        sqlite3_bind_int(st, 2, max);
        while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            relay_row_t *r = &rows[n];
            memset(r, 0, sizeof *r);
            natomic__copy(r->e.event_id, sizeof r->e.event_id, (const char *)sqlite3_column_text(st, 0));
            natomic__copy(r->e.subject, sizeof r->e.subject, (const char *)sqlite3_column_text(st, 1));
            natomic__copy(r->e.type, sizeof r->e.type, (const char *)sqlite3_column_text(st, 2));
            natomic__copy(r->tx, sizeof r->tx, (const char *)sqlite3_column_text(st, 3));
            natomic__copy(r->call_id, sizeof r->call_id, (const char *)sqlite3_column_text(st, 4));
            int len = sqlite3_column_bytes(st, 5);
            r->e.data = malloc(len > 0 ? (size_t)len : 1);
            if (r->e.data == NULL)
                break;
            if (len > 0)
                memcpy(r->e.data, sqlite3_column_blob(st, 5), (size_t)len);
            r->e.len = (size_t)len;
            n++;
        }
    }
    bool failed = rc != SQLITE_ROW && rc != SQLITE_DONE && rc != SQLITE_OK;
    if (failed)
        natomic__log(NATOMIC_LOG_WARN, svc->name, "outbox: cannot read leftovers: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return failed && n == 0 ? -1 : n;
}

int natomic__outbox_relay(natomic_service_t *svc, int64_t grace_ms)
{
    if (!natomic__durable(svc) || svc->store == NULL)
        return 0;
    relay_row_t *rows = calloc(RELAY_BATCH, sizeof *rows);
    int n = rows != NULL ? read_rows(svc, grace_ms, rows, RELAY_BATCH) : -1;
    if (n < 0) {
        free(rows);
        return -1;
    }
    int published = 0;
    bool stopped = false;
    for (int i = 0; i < n; i++) {
        if (!stopped && natomic__outbox_publish(svc, NULL, &rows[i].e, rows[i].tx, rows[i].call_id) == NATOMIC_OK) {
            natomic__outbox_delete(svc, rows[i].e.event_id);
            published++;
        } else {
            stopped = true; /* NATS is down or the stream is gone: the next round tries again, in order */
        }
        free(rows[i].e.data);
    }
    free(rows);
    if (published > 0) {
        atomic_fetch_add(&svc->outbox_relayed, (uint64_t)published);
        natomic__log(NATOMIC_LOG_INFO, svc->name, "outbox: relayed %d event%s left unpublished", published,
                     published == 1 ? "" : "s");
    }
    return stopped ? -1 : published;
}

/* ---- the decision ------------------------------------------------------------- */

/* INSERT OR IGNORE of (call_id, outcome); rows changed, or -1. */
static int insert_decision(sqlite3 *db, const char *call_id, const char *outcome)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT OR IGNORE INTO natomic_decision(call_id, outcome, decided_at) VALUES (?, ?, ?)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, call_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, outcome, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? sqlite3_changes(db) : -1;
}

/* The outcome recorded for call_id into out ("" when none); false on error. */
static bool read_decision(sqlite3 *db, const char *call_id, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    bool ok = false;
    out[0] = '\0';
    if (sqlite3_prepare_v2(db, "SELECT outcome FROM natomic_decision WHERE call_id = ?", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, call_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            natomic__copy(out, cap, (const char *)sqlite3_column_text(st, 0));
        ok = rc == SQLITE_ROW || rc == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return ok;
}

natomic_status_t natomic__decision_commit(sqlite3 *db, const char *call_id)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    natomic_status_t st = NATOMIC_OK;
    int n = insert_decision(db, call_id, "committed");
    char outcome[16] = "";
    if (n < 0)
        st = NATOMIC_ETRANSIENT;
    else if (n == 0 && (!read_decision(db, call_id, outcome, sizeof outcome) || strcmp(outcome, "committed") != 0))
        st = NATOMIC_ENOTOWNER; /* recovery decided "aborted" first */
    if (st == NATOMIC_ETRANSIENT)
        natomic__log(NATOMIC_LOG_ERROR, NULL, "decision of call %s: %s", call_id, sqlite3_errmsg(db));
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return st;
}

natomic_status_t natomic__decision_abort(sqlite3 *db, const char *call_id, bool *committed)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    natomic_status_t st = NATOMIC_OK;
    char outcome[16] = "";
    if (insert_decision(db, call_id, "aborted") < 0 || !read_decision(db, call_id, outcome, sizeof outcome)) {
        natomic__log(NATOMIC_LOG_ERROR, NULL, "decision of call %s: %s", call_id, sqlite3_errmsg(db));
        st = NATOMIC_ETRANSIENT;
    } else {
        *committed = strcmp(outcome, "committed") == 0;
    }
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return st;
}
