/*
 * idempotency.c -- a repeated request replays its first outcome.
 *
 * A caller that timed out cannot know whether its call ran. Retrying
 * create_order blindly makes a second order; not retrying may leave the
 * customer without one. The header Natomic-Idempotency-Key lets it retry
 * safely: the first call with a key runs, every later call with the same
 * key and method gets that call's outcome -- its reply or its error,
 * marked Natomic-Replayed: true -- and runs nothing.
 *
 *     natomic_idempotency(method, key, call_id, tx, state, owner,
 *                         incarnation, request_hash, code, error_type,
 *                         error_message, rollback, dispatch, reply,
 *                         created_at, expires_at,
 *                         PRIMARY KEY (method, key))
 *
 * A call claims its key with INSERT OR IGNORE (state 'running'); the
 * insert that changes a row wins, as in the barrier. Its outcome is
 * stored when its reply is decided (state 'done'); in durable mode the
 * successful outcome is also written inside the commit transaction
 * (natomic_durable_commit), so a crash between the commit and the reply
 * still replays the reply. A later call finds:
 *   - 'done': the stored outcome is sent again;
 *   - 'running', owner alive (this process, or an instance whose lease
 *     holds), or its saga record still in the log: "InProgress" (503,
 *     retry later) -- recovery will settle it;
 *   - 'running', owner dead and no saga record: the call died before it
 *     logged anything; it becomes 'done' with the error "Interrupted"
 *     (503), which this and every later retry of the key gets;
 *   - a different request under the same key: "IdempotencyKeyReused"
 *     (400), as a key names one request, not a slot to reuse.
 * Recovery, when it ends a saga, stores "Interrupted" too, naming what it
 * compensated. Keys expire after the service's retention (default a day)
 * and are swept by housekeeping; an expired key is a new key.
 *
 * Where keys live: in durable mode, the service's store, so they survive
 * restarts and every instance sharing the store sees them; in memory mode
 * (or without a store), a private in-memory SQLite database of this
 * process -- the same code, gone with the process, as memory mode's
 * promise is.
 */
#include "natomic_internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "durable_internal.h"

static const char schema[] = "CREATE TABLE IF NOT EXISTS natomic_idempotency ("
                             "  method TEXT NOT NULL, key TEXT NOT NULL, call_id TEXT NOT NULL, tx TEXT NOT NULL,"
                             "  state TEXT NOT NULL CHECK (state IN ('running', 'done')),"
                             "  owner TEXT NOT NULL, incarnation TEXT NOT NULL, request_hash INTEGER NOT NULL,"
                             "  code INTEGER NOT NULL DEFAULT 0, error_type TEXT NOT NULL DEFAULT '',"
                             "  error_message TEXT NOT NULL DEFAULT '', rollback TEXT NOT NULL DEFAULT 'none',"
                             "  dispatch TEXT NOT NULL DEFAULT 'none', reply BLOB,"
                             "  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
                             "  PRIMARY KEY (method, key)) WITHOUT ROWID;"
                             "CREATE INDEX IF NOT EXISTS natomic_idempotency_expiry ON natomic_idempotency(expires_at);";

natomic_status_t natomic__idem_open(natomic_service_t *svc)
{
    sqlite3 *db = NULL;
    if (svc->mode == NATOMIC_MODE_DURABLE && svc->store != NULL) {
        db = svc->store;
    } else if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                               NULL) != SQLITE_OK) {
        natomic__log(NATOMIC_LOG_ERROR, svc->name, "idempotency: cannot open an in-memory database");
        sqlite3_close(db);
        return NATOMIC_ENOMEM;
    } else {
        svc->own_idem_db = true;
    }
    svc->idem_db = db;
    if (sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        natomic__log(NATOMIC_LOG_ERROR, svc->name, "idempotency: cannot create its table: %s", sqlite3_errmsg(db));
        natomic__idem_close(svc);
        return NATOMIC_ETRANSIENT;
    }
    return NATOMIC_OK;
}

void natomic__idem_close(natomic_service_t *svc)
{
    if (svc->own_idem_db)
        sqlite3_close(svc->idem_db);
    svc->idem_db = NULL;
    svc->own_idem_db = false;
}

/* FNV-1a of the request payload: tells a reused key from a retry. */
static int64_t request_hash(natsMsg *msg)
{
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = (const unsigned char *)natsMsg_GetData(msg);
    for (int i = 0; i < natsMsg_GetDataLength(msg); i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return (int64_t)(h >> 1);
}

/* What a row holds, for a replay. */
typedef struct stored {
    char state[16];
    char call_id[NATOMIC_ID_LEN + 1 + 32];
    char tx[NATOMIC_ID_LEN + 1 + 32];
    char owner[65];
    char incarnation[NATOMIC_ID_LEN + 1];
    int64_t hash;
    int code;
    char type[64];
    char message[256];
    char rollback[16];
    char dispatch[16];
    void *reply;
    size_t len;
} stored_t;

/* Reads the row of (method, key); 1 found, 0 none, -1 error. reply malloc'ed. */
static int read_row(sqlite3 *db, const char *method, const char *key, stored_t *out)
{
    sqlite3_stmt *st = NULL;
    int found = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT state, call_id, tx, owner, incarnation, request_hash, code, error_type, "
                           "error_message, rollback, dispatch, reply FROM natomic_idempotency "
                           "WHERE method = ? AND key = ?",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            memset(out, 0, sizeof *out);
            natomic__copy(out->state, sizeof out->state, (const char *)sqlite3_column_text(st, 0));
            natomic__copy(out->call_id, sizeof out->call_id, (const char *)sqlite3_column_text(st, 1));
            natomic__copy(out->tx, sizeof out->tx, (const char *)sqlite3_column_text(st, 2));
            natomic__copy(out->owner, sizeof out->owner, (const char *)sqlite3_column_text(st, 3));
            natomic__copy(out->incarnation, sizeof out->incarnation, (const char *)sqlite3_column_text(st, 4));
            out->hash = sqlite3_column_int64(st, 5);
            out->code = sqlite3_column_int(st, 6);
            natomic__copy(out->type, sizeof out->type, (const char *)sqlite3_column_text(st, 7));
            natomic__copy(out->message, sizeof out->message, (const char *)sqlite3_column_text(st, 8));
            natomic__copy(out->rollback, sizeof out->rollback, (const char *)sqlite3_column_text(st, 9));
            natomic__copy(out->dispatch, sizeof out->dispatch, (const char *)sqlite3_column_text(st, 10));
            int len = sqlite3_column_bytes(st, 11);
            if (len > 0 && (out->reply = malloc((size_t)len)) != NULL) {
                memcpy(out->reply, sqlite3_column_blob(st, 11), (size_t)len);
                out->len = (size_t)len;
            }
            found = 1;
        } else if (rc == SQLITE_DONE) {
            found = 0;
        }
    }
    sqlite3_finalize(st);
    return found;
}

/* Claims (method, key) for ctx: 1 claimed, 0 taken (row in *row), -1 error. */
static int claim(natomic_service_t *svc, natomic_ctx_t *ctx, int64_t hash, stored_t *row)
{
    sqlite3 *db = svc->idem_db;
    int64_t now = (int64_t)time(NULL);
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    int result = -1;
    sqlite3_stmt *st = NULL;
    /* An expired key is a new key. */
    if (sqlite3_prepare_v2(db, "DELETE FROM natomic_idempotency WHERE method = ? AND key = ? AND expires_at <= ?", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, ctx->method_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, ctx->idem_key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now);
        sqlite3_step(st);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT OR IGNORE INTO natomic_idempotency(method, key, call_id, tx, state, owner, "
                           "incarnation, request_hash, created_at, expires_at) "
                           "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, ctx->method_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, ctx->idem_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, ctx->call_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, ctx->tx, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, svc->instance, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, svc->incarnation, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, hash);
        sqlite3_bind_int64(st, 8, now);
        sqlite3_bind_int64(st, 9, now + svc->idempotency_retention_s);
        if (sqlite3_step(st) == SQLITE_DONE)
            result = sqlite3_changes(db) == 1 ? 1 : 0;
    }
    sqlite3_finalize(st);
    if (result == 0 && read_row(db, ctx->method_name, ctx->idem_key, row) != 1)
        result = -1;
    if (result < 0)
        natomic__log(NATOMIC_LOG_ERROR, svc->name, "idempotency: %s", sqlite3_errmsg(db));
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return result;
}

/* Stores the outcome; `only_running`: only if nobody stored one meanwhile. */
static void store_outcome(sqlite3 *db, const char *method, const char *key, const char *call_id, int code,
                          const char *type, const char *message, natomic_outcome_t rollback,
                          natomic_outcome_t dispatch, const void *reply, size_t len, bool only_running)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                only_running
                                    ? "UPDATE natomic_idempotency SET state = 'done', code = ?, error_type = ?, "
                                      "error_message = ?, rollback = ?, dispatch = ?, reply = ? "
                                      "WHERE method = ? AND key = ? AND call_id = ? AND state = 'running'"
                                    : "UPDATE natomic_idempotency SET state = 'done', code = ?, error_type = ?, "
                                      "error_message = ?, rollback = ?, dispatch = ?, reply = ? "
                                      "WHERE method = ? AND key = ? AND call_id = ?",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int(st, 1, code);
        sqlite3_bind_text(st, 2, type != NULL ? type : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, message != NULL ? message : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, natomic_outcome_name(rollback), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, natomic_outcome_name(dispatch), -1, SQLITE_STATIC);
        if (reply != NULL)
            sqlite3_bind_blob(st, 6, reply, (int)len, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 6);
        sqlite3_bind_text(st, 7, method, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 8, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 9, call_id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE)
        natomic__log(NATOMIC_LOG_ERROR, NULL, "idempotency: cannot store the outcome of call %s: %s", call_id,
                     sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
}

/* Is the call that holds a 'running' row still going somewhere? */
static bool still_running(natomic_service_t *svc, const stored_t *row)
{
    if (strcmp(row->owner, svc->instance) == 0 && strcmp(row->incarnation, svc->incarnation) == 0)
        return true; /* ours, and this process is alive */
    if (!natomic__durable(svc))
        return true;
    if (natomic__lease_alive(svc, row->owner, row->incarnation) != 0)
        return true; /* alive, or cannot tell: do not guess */
    natomic_durable_t *d = svc->durable;
    if (d->saga_kv == NULL)
        return false;
    char key[NATOMIC_ID_LEN + 48];
    snprintf(key, sizeof key, "saga.%s", row->call_id);
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, d->saga_kv, key);
    kvEntry_Destroy(e);
    return s != NATS_NOT_FOUND; /* a record: recovery has work left and will settle the key */
}

natomic_idem_state_t natomic__idem_begin(natomic_service_t *svc, natomic_ctx_t *ctx, natsMsg *request)
{
    const char *key = NULL;
    if (natsMsgHeader_Get(request, NATOMIC_HDR_IDEMPOTENCY_KEY, &key) != NATS_OK || key == NULL || *key == '\0')
        return NATOMIC_IDEM_NEW;
    if (!natomic__valid_idempotency_key(key)) {
        natomic__send_reply(svc, request, ctx->tx, NULL, 0, NATOMIC_EBADINPUT, "BadRequest",
                            NATOMIC_HDR_IDEMPOTENCY_KEY " must be 1 to 128 printable ASCII characters without spaces",
                            NATOMIC_OUTCOME_NONE, NATOMIC_OUTCOME_NONE, false);
        return NATOMIC_IDEM_ANSWERED;
    }
    if (svc->idem_db == NULL)
        return NATOMIC_IDEM_NEW;
    natomic__copy(ctx->idem_key, sizeof ctx->idem_key, key);
    int64_t hash = request_hash(request);
    stored_t row;
    memset(&row, 0, sizeof row);
    int claimed = claim(svc, ctx, hash, &row);
    if (claimed == 1)
        return NATOMIC_IDEM_NEW;
    if (claimed < 0) {
        natomic__send_reply(svc, request, ctx->tx, NULL, 0, NATOMIC_ETRANSIENT, "StorageError",
                            "cannot read the idempotency key", NATOMIC_OUTCOME_NONE, NATOMIC_OUTCOME_NONE, false);
        return NATOMIC_IDEM_ANSWERED;
    }
    if (row.hash != hash) {
        char text[256];
        snprintf(text, sizeof text, "idempotency key '%.60s' was used for another %s request (call %.32s)", key,
                 ctx->method_name, row.call_id);
        natomic__send_reply(svc, request, row.tx, NULL, 0, NATOMIC_EBADINPUT, "IdempotencyKeyReused", text,
                            NATOMIC_OUTCOME_NONE, NATOMIC_OUTCOME_NONE, false);
    } else if (strcmp(row.state, "running") == 0 && still_running(svc, &row)) {
        char text[256];
        snprintf(text, sizeof text, "call %.32s with idempotency key '%.60s' is still running: retry later",
                 row.call_id, key);
        natomic__send_reply(svc, request, row.tx, NULL, 0, NATOMIC_ETRANSIENT, "InProgress", text,
                            NATOMIC_OUTCOME_NONE, NATOMIC_OUTCOME_NONE, false);
    } else {
        if (strcmp(row.state, "running") == 0) {
            /* Its owner died before logging anything: nothing ran that needs undoing. */
            snprintf(row.message, sizeof row.message,
                     "call %.32s was interrupted by a crash of %s before any step; nothing was done: retry with a "
                     "new key",
                     row.call_id, svc->name);
            row.code = natomic_error_code(NATOMIC_ETRANSIENT);
            natomic__copy(row.type, sizeof row.type, "Interrupted");
            natomic__copy(row.rollback, sizeof row.rollback, "none");
            natomic__copy(row.dispatch, sizeof row.dispatch, "none");
            store_outcome(svc->idem_db, ctx->method_name, key, row.call_id, row.code, row.type, row.message,
                          NATOMIC_OUTCOME_NONE, NATOMIC_OUTCOME_NONE, NULL, 0, true);
        }
        natomic_status_t kind = row.code != 0 ? natomic_error_kind(row.code) : NATOMIC_OK;
        natomic__send_reply(svc, request, row.tx, row.reply, row.len, kind, row.type, row.message,
                            natomic__outcome_parse(row.rollback), natomic__outcome_parse(row.dispatch), true);
        atomic_fetch_add(&svc->idempotent_replays, 1);
        natomic__log(NATOMIC_LOG_INFO, svc->name, "%s: idempotency key '%.60s' replays call %s (%s)",
                     ctx->method_name, key, row.call_id, row.code != 0 ? row.type : "success");
    }
    free(row.reply);
    ctx->idem_key[0] = '\0'; /* not this call's key: nothing to store at its end */
    return NATOMIC_IDEM_ANSWERED;
}

void natomic__idem_finish(natomic_service_t *svc, natomic_ctx_t *ctx, int code, const char *type,
                          const char *message, natomic_outcome_t rollback, natomic_outcome_t dispatch,
                          const void *reply, size_t len)
{
    if (ctx->idem_key[0] == '\0' || svc->idem_db == NULL || ctx->saga.lost)
        return;
    store_outcome(svc->idem_db, ctx->method_name, ctx->idem_key, ctx->call_id, code, type, message, rollback,
                  dispatch, reply, len, false);
}

natomic_status_t natomic__idem_commit(natomic_ctx_t *ctx, sqlite3 *db)
{
    if (ctx->svc->idem_db != db)
        return NATOMIC_OK; /* keys live elsewhere (memory): stored at the end of the call */
    size_t len = 0;
    uint8_t *data = ctx->reply != NULL ? natomic__pack(ctx->reply, &len) : NULL;
    if (ctx->reply != NULL && data == NULL)
        return NATOMIC_ENOMEM;
    store_outcome(db, ctx->method_name, ctx->idem_key, ctx->call_id, 0, "", "", NATOMIC_OUTCOME_NONE,
                  NATOMIC_OUTCOME_NONE, data, len, false);
    free(data);
    return NATOMIC_OK;
}

void natomic__idem_interrupted(natomic_service_t *svc, const char *method, const char *key, const char *call_id,
                               natomic_outcome_t rollback, const char *text)
{
    if (key == NULL || *key == '\0' || svc->idem_db == NULL)
        return;
    store_outcome(svc->idem_db, method, key, call_id, natomic_error_code(NATOMIC_ETRANSIENT), "Interrupted", text,
                  rollback, NATOMIC_OUTCOME_NONE, NULL, 0, true);
}

int64_t natomic__idem_sweep(natomic_service_t *svc)
{
    sqlite3 *db = svc->idem_db;
    if (db == NULL)
        return 0;
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "DELETE FROM natomic_idempotency WHERE expires_at <= ?", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    int64_t n = rc == SQLITE_DONE ? sqlite3_changes(db) : -1;
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return n;
}
