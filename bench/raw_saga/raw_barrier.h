/*
 * raw_barrier.h -- the sub-transaction barrier of inventory and payments
 * in natomic-raw-saga: the same table and the same decisions as
 * libnatomic's natomic_barrier_run (libatomic/src/barrier.c), written by
 * hand inside the participant's own transaction.
 */
#ifndef RAW_BARRIER_H
#define RAW_BARRIER_H

#include <stdbool.h>

#include "raw_db.h"
#include "raw_service.h"

typedef enum raw_barrier_outcome {
    RAW_BARRIER_EXECUTED,          /* run the body                                    */
    RAW_BARRIER_DUPLICATE,         /* done before in this transaction: do nothing     */
    RAW_BARRIER_NULL_COMPENSATION, /* a compensation whose action never ran: nothing  */
    RAW_BARRIER_REFUSED_LATE,      /* an action after its compensation: refuse it     */
} raw_barrier_outcome_t;

/* The table, created by the participant's schema (CREATE ... IF NOT EXISTS). */
#define RAW_BARRIER_SCHEMA                                                                                   \
    "CREATE TABLE IF NOT EXISTS barrier ("                                                                   \
    "  tx TEXT NOT NULL, branch TEXT NOT NULL, op TEXT NOT NULL,"                                             \
    "  reason TEXT NOT NULL, created_at INTEGER NOT NULL,"                                                   \
    "  PRIMARY KEY (tx, branch, op)) WITHOUT ROWID;"                                                         \
    "CREATE INDEX IF NOT EXISTS barrier_age ON barrier(created_at);"

/* The two statements it needs: the participant prepares them with its own (raw_db_open) and passes their indexes. */
#define RAW_BARRIER_INSERT_SQL                                                                               \
    "INSERT OR IGNORE INTO barrier(tx, branch, op, reason, created_at) VALUES (?, ?, ?, ?, unixepoch())"
#define RAW_BARRIER_REASON_SQL "SELECT reason FROM barrier WHERE tx = ? AND branch = ? AND op = 'action'"

/* "executed", "duplicate", "null_compensation", "refused_late": the replies' outcome field. */
const char *raw_barrier_outcome_name(raw_barrier_outcome_t outcome);

/*
 * Decides an action (`compensation` false) or a compensation of branch
 * `branch` in transaction `tx` by inserting barrier rows, inside the
 * caller's open transaction (lock held); `insert` and `reason` are the
 * prepared RAW_BARRIER_INSERT_SQL and RAW_BARRIER_REASON_SQL. SQLITE_OK
 * with *out set, or the SQLite failure (the caller rolls back).
 */
int raw_barrier_decide(raw_barrier_outcome_t *out, raw_db_t *d, int insert, int reason, const char *tx,
                       const char *branch, bool compensation);

/*
 * A barrier body: the business change, in the barrier's transaction, lock
 * held. SQLITE_OK, or the failure; a business refusal goes to *no (code
 * set), and the transaction is then rolled back as for a failure.
 */
typedef int raw_barrier_body_fn(raw_db_t *d, void *arg, raw_refusal_t *no);

/*
 * One action or compensation behind the barrier, start to end, as
 * natomic_barrier_run does it: lock, BEGIN IMMEDIATE, decide, then `body`
 * when EXECUTED or `duplicate` (may be NULL) when DUPLICATE, then COMMIT
 * -- or ROLLBACK when anything failed or refused -- and unlock. SQLITE_OK
 * with *out set (and no->code set when the body refused: nothing kept),
 * or the SQLite failure (nothing kept). Nothing waits on the network
 * inside.
 */
int raw_barrier_run(raw_barrier_outcome_t *out, raw_refusal_t *no, raw_db_t *d, int insert, int reason,
                    const char *tx, const char *branch, bool compensation, raw_barrier_body_fn *body,
                    raw_barrier_body_fn *duplicate, void *arg);

#endif
