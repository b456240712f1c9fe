/*
 * barrier.c -- idempotent participants: the sub-transaction barrier.
 *
 * A participant in a saga receives actions (reserve, charge) and their
 * compensations (release, refund). The network makes three things happen
 * that naive code gets wrong:
 *   - duplicates: a retried or redelivered request runs twice;
 *   - null compensation: the compensation arrives for an action that never
 *     ran (the action was lost, or timed out before reaching us);
 *   - hanging action: the action arrives AFTER its compensation (it was
 *     delayed in flight) and would leave a reservation nobody releases.
 *
 * The barrier table
 *     natomic_barrier(tx, branch, op, reason, created_at,
 *                     PRIMARY KEY (tx, branch, op))
 * is written in the same SQLite transaction as the business change, and
 * only with INSERT OR IGNORE -- never read-then-insert, which races. The
 * number of rows an insert changed is the decision:
 *
 *   action:        insert (tx, branch, 'action', reason 'action')
 *                    1 row  -> run the body                  EXECUTED
 *                    0 rows -> the row exists: if its reason is
 *                              'compensation', the compensation came
 *                              first                          REFUSED_LATE
 *                              else                           DUPLICATE
 *   compensation:  insert (tx, branch, 'compensation')
 *                    0 rows ->                                DUPLICATE
 *                  insert (tx, branch, 'action', reason 'compensation')
 *                    1 row  -> the action never ran: record
 *                              it, do nothing                 NULL_COMPENSATION
 *                    0 rows -> the action ran: run the body   EXECUTED
 *
 * The row inserted by a null compensation is what later refuses the late
 * action. Everything runs under BEGIN IMMEDIATE while holding the
 * connection's own mutex, so workers sharing one serialized connection
 * cannot interleave statements inside each other's transactions. If the
 * body fails the transaction is rolled back, barrier rows included, so a
 * retry starts clean. Rows older than a retention period are swept.
 */
#include "natomic_internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const outcome_names[] = {"executed", "duplicate", "null_compensation", "refused_late"};

NATOMIC_API const char *natomic_barrier_outcome_name(natomic_barrier_outcome_t outcome)
{
    if ((unsigned)outcome >= NATOMIC_BARRIER_OUTCOME_COUNT_)
        return "unknown";
    return outcome_names[outcome];
}

NATOMIC_API natomic_status_t natomic_barrier_init(struct sqlite3 *db)
{
    if (db == NULL)
        return NATOMIC_EINVAL;
    int rc = sqlite3_exec(db,
                          "CREATE TABLE IF NOT EXISTS natomic_barrier ("
                          "  tx TEXT NOT NULL, branch TEXT NOT NULL, op TEXT NOT NULL,"
                          "  reason TEXT NOT NULL, created_at INTEGER NOT NULL,"
                          "  PRIMARY KEY (tx, branch, op)) WITHOUT ROWID;"
                          "CREATE INDEX IF NOT EXISTS natomic_barrier_age ON natomic_barrier(created_at);",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        natomic__log(NATOMIC_LOG_ERROR, NULL, "barrier: cannot create its table: %s", sqlite3_errmsg(db));
        return NATOMIC_ETRANSIENT;
    }
    return NATOMIC_OK;
}

/*
 * The barrier's statements. Compiling SQL costs more than running these
 * (about 45 K instructions to prepare the insert against a few K to step
 * it: docs/performance.md), so on the service's own store they are
 * prepared once and kept in the service: every use is under the
 * connection's mutex (natomic_barrier_run holds it throughout), so one copy
 * each is enough, and natomic_service_destroy finalizes them, before the
 * store it borrowed is closed. Any other connection (a barrier run on a
 * second database, or a context with no service) gets them prepared and
 * finalized per use, as before.
 */
enum { STMT_BEGIN, STMT_INSERT, STMT_REASON, STMT_COMMIT, STMT_ROLLBACK };

static const char *const stmt_sql[NATOMIC_BARRIER_STMT_COUNT_] = {
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_INSERT] = "INSERT OR IGNORE INTO natomic_barrier(tx, branch, op, reason, created_at) VALUES (?, ?, ?, ?, ?)",
    [STMT_REASON] = "SELECT reason FROM natomic_barrier WHERE tx = ? AND branch = ? AND op = 'action'",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
};

/* The statement `which` on db, kept when db is svc's store; NULL when it cannot be prepared. */
static sqlite3_stmt *stmt_get(natomic_service_t *svc, sqlite3 *db, int which)
{
    bool keep = svc != NULL && db == svc->store;
    if (keep && svc->barrier_stmts[which] != NULL)
        return svc->barrier_stmts[which];
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, stmt_sql[which], -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    if (keep)
        svc->barrier_stmts[which] = st;
    return st;
}

/* After use: a kept statement is reset and loses its bindings (they point into the call), any other is finalized. */
static void stmt_put(natomic_service_t *svc, sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    for (int i = 0; svc != NULL && i < NATOMIC_BARRIER_STMT_COUNT_; i++)
        if (svc->barrier_stmts[i] == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    sqlite3_finalize(st);
}

void natomic__barrier_forget(natomic_service_t *svc)
{
    for (int i = 0; i < NATOMIC_BARRIER_STMT_COUNT_; i++) {
        sqlite3_finalize(svc->barrier_stmts[i]);
        svc->barrier_stmts[i] = NULL;
    }
}

/* Runs a statement without parameters (BEGIN, COMMIT, ROLLBACK); SQLITE_OK or the error. */
static int exec_stmt(natomic_service_t *svc, sqlite3 *db, int which)
{
    sqlite3_stmt *st = stmt_get(svc, db, which);
    if (st == NULL)
        return sqlite3_errcode(db) != SQLITE_OK ? sqlite3_errcode(db) : SQLITE_ERROR;
    int rc = sqlite3_step(st);
    stmt_put(svc, st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* INSERT OR IGNORE one barrier row; returns rows changed (0/1) or -1 on error. */
static int insert_row(natomic_service_t *svc, sqlite3 *db, const char *tx, const char *branch, const char *op,
                      const char *reason)
{
    sqlite3_stmt *st = stmt_get(svc, db, STMT_INSERT);
    if (st == NULL)
        return -1;
    sqlite3_bind_text(st, 1, tx, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, branch, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, op, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL));
    int rc = sqlite3_step(st);
    int changed = rc == SQLITE_DONE ? sqlite3_changes(db) : -1;
    stmt_put(svc, st);
    return changed;
}

/* The reason of an existing action row ("action" or "compensation"); false on error. */
static bool action_reason(natomic_service_t *svc, sqlite3 *db, const char *tx, const char *branch, char *out,
                          size_t cap)
{
    sqlite3_stmt *st = stmt_get(svc, db, STMT_REASON);
    if (st == NULL)
        return false;
    bool ok = false;
    sqlite3_bind_text(st, 1, tx, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, branch, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        natomic__copy(out, cap, (const char *)sqlite3_column_text(st, 0));
        ok = true;
    }
    stmt_put(svc, st);
    return ok;
}

/* Decides the outcome by inserting rows; -1 on SQLite error. */
static int decide(natomic_service_t *svc, sqlite3 *db, const char *tx, const char *branch, natomic_barrier_op_t op,
                  natomic_barrier_outcome_t *outcome)
{
    if (op == NATOMIC_BARRIER_ACTION) {
        int n = insert_row(svc, db, tx, branch, "action", "action");
        if (n < 0)
            return -1;
        if (n == 1) {
            *outcome = NATOMIC_BARRIER_EXECUTED;
            return 0;
        }
        char reason[32];
        if (!action_reason(svc, db, tx, branch, reason, sizeof reason))
            return -1;
        *outcome = strcmp(reason, "compensation") == 0 ? NATOMIC_BARRIER_REFUSED_LATE : NATOMIC_BARRIER_DUPLICATE;
        return 0;
    }
    int n = insert_row(svc, db, tx, branch, "compensation", "compensation");
    if (n < 0)
        return -1;
    if (n == 0) {
        *outcome = NATOMIC_BARRIER_DUPLICATE;
        return 0;
    }
    n = insert_row(svc, db, tx, branch, "action", "compensation");
    if (n < 0)
        return -1;
    *outcome = n == 1 ? NATOMIC_BARRIER_NULL_COMPENSATION : NATOMIC_BARRIER_EXECUTED;
    return 0;
}

NATOMIC_API natomic_status_t natomic_barrier_run(natomic_barrier_outcome_t *outcome, natomic_ctx_t *ctx,
                                                 struct sqlite3 *db, const char *branch, natomic_barrier_op_t op,
                                                 natomic_barrier_body_fn body, void *arg)
{
    if (outcome == NULL || ctx == NULL || db == NULL || branch == NULL || *branch == '\0' || body == NULL ||
        (op != NATOMIC_BARRIER_ACTION && op != NATOMIC_BARRIER_COMPENSATION))
        return NATOMIC_EINVAL;
    const char *op_name = op == NATOMIC_BARRIER_ACTION ? "action" : "compensation";
    sqlite3_mutex *mu = sqlite3_db_mutex(db); /* NULL unless serialized: then the caller serializes */
    sqlite3_mutex_enter(mu);

    natomic_status_t st = NATOMIC_OK;
    natomic_barrier_outcome_t out = NATOMIC_BARRIER_EXECUTED;
    natomic_service_t *svc = ctx->svc;
    if (exec_stmt(svc, db, STMT_BEGIN) != SQLITE_OK) {
        natomic__log(NATOMIC_LOG_ERROR, ctx->service_name, "barrier: BEGIN failed: %s", sqlite3_errmsg(db));
        st = natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "barrier: BEGIN failed: %s", sqlite3_errmsg(db));
        sqlite3_mutex_leave(mu);
        return st;
    }
    if (decide(svc, db, ctx->tx, branch, op, &out) != 0) {
        natomic__log(NATOMIC_LOG_ERROR, ctx->service_name, "barrier: %s", sqlite3_errmsg(db));
        st = natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "barrier: %s", sqlite3_errmsg(db));
    } else if (out == NATOMIC_BARRIER_EXECUTED) {
        st = body(db, arg);
    }
    if (st == NATOMIC_OK && NATOMIC_FAULT("natomic/barrier_before_commit") == NATOMIC_FAULT_ERROR)
        st = natomic_fail(ctx, NATOMIC_ETRANSIENT, "InjectedFault", "fault point natomic/barrier_before_commit");
    if (st == NATOMIC_OK && exec_stmt(svc, db, STMT_COMMIT) != SQLITE_OK) {
        natomic__log(NATOMIC_LOG_ERROR, ctx->service_name, "barrier: COMMIT failed: %s", sqlite3_errmsg(db));
        st = natomic_fail(ctx, NATOMIC_ETRANSIENT, "StorageError", "barrier: COMMIT failed: %s", sqlite3_errmsg(db));
    }
    if (st != NATOMIC_OK)
        exec_stmt(svc, db, STMT_ROLLBACK);
    sqlite3_mutex_leave(mu);

    if (st != NATOMIC_OK)
        return st;
    /* Committed, not yet answered: a crash here is the classic in-doubt participant. */
    if (NATOMIC_FAULT("natomic/barrier_after_commit") == NATOMIC_FAULT_ERROR)
        return natomic_fail(ctx, NATOMIC_ETRANSIENT, "InjectedFault", "fault point natomic/barrier_after_commit");
    if (ctx->svc != NULL)
        atomic_fetch_add(&ctx->svc->barrier[out], 1);
    /* Every outcome but a plain executed action is worth a line at info. */
    bool routine = out == NATOMIC_BARRIER_EXECUTED && op == NATOMIC_BARRIER_ACTION;
    natomic__log(routine ? NATOMIC_LOG_DEBUG : NATOMIC_LOG_INFO, ctx->service_name,
                 "barrier: %s %s of branch %s (tx %s): %s", ctx->method_name, op_name, branch, ctx->tx,
                 natomic_barrier_outcome_name(out));
    *outcome = out;
    return NATOMIC_OK;
}

NATOMIC_API natomic_status_t natomic_barrier_sweep(int64_t *removed, struct sqlite3 *db, int64_t retention_s)
{
    if (db == NULL || retention_s < 0)
        return NATOMIC_EINVAL;
    sqlite3_mutex *mu = sqlite3_db_mutex(db); /* the count must be this statement's */
    sqlite3_mutex_enter(mu);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "DELETE FROM natomic_barrier WHERE created_at < ?", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)(time(NULL) - retention_s));
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    int64_t n = sqlite3_changes(db);
    sqlite3_mutex_leave(mu);
    if (rc != SQLITE_DONE)
        return NATOMIC_ETRANSIENT;
    if (removed != NULL)
        *removed = n;
    return NATOMIC_OK;
}
