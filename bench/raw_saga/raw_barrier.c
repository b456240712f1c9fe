/*
 * raw_barrier.c -- idempotent saga participants, by hand.
 *
 * What the network does to a participant -- a duplicate request, a
 * compensation for an action that never arrived, an action arriving after
 * its compensation -- is decided by inserting rows into
 *     barrier(tx, branch, op, reason, created_at, PRIMARY KEY (tx, branch, op))
 * with INSERT OR IGNORE, in the same transaction as the business change,
 * never by reading first (which races). The number of rows an insert
 * changed is the decision:
 *
 *   action:        insert (tx, branch, 'action', 'action')
 *                    1 row  -> EXECUTED
 *                    0 rows -> its reason 'compensation' -> REFUSED_LATE, else DUPLICATE
 *   compensation:  insert (tx, branch, 'compensation', 'compensation')
 *                    0 rows -> DUPLICATE
 *                  insert (tx, branch, 'action', 'compensation')
 *                    1 row  -> NULL_COMPENSATION (and the late action is refused for good)
 *                    0 rows -> EXECUTED
 *
 * This is libnatomic's barrier (libatomic/src/barrier.c) because a careful
 * author needs exactly this much, no less: the raw saga must survive the
 * same network as the library's for the comparison to be fair.
 * raw_barrier_run wraps the decision and the business change in one
 * transaction; if the change fails or refuses, the transaction is rolled
 * back, barrier rows included, so a retry starts clean. Sweeping old rows is left out: no
 * benchmark session lives long enough to need it.
 */
#include "raw_barrier.h"

#include <string.h>

static const char *const outcome_names[] = {"executed", "duplicate", "null_compensation", "refused_late"};

const char *raw_barrier_outcome_name(raw_barrier_outcome_t outcome)
{
    return (unsigned)outcome < sizeof outcome_names / sizeof outcome_names[0] ? outcome_names[outcome] : "unknown";
}

/* INSERT OR IGNORE one row; rows changed (0 or 1), or -1 with *rc set. */
static int insert_row(raw_db_t *d, int insert, const char *tx, const char *branch, const char *op, const char *reason,
                      int *rc)
{
    sqlite3_stmt *st = raw_db_stmt(d, insert);
    sqlite3_bind_text(st, 1, tx, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, branch, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, op, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
    *rc = raw_db_finish(st, sqlite3_step(st));
    return *rc == SQLITE_OK ? sqlite3_changes(d->db) : -1;
}

int raw_barrier_decide(raw_barrier_outcome_t *out, raw_db_t *d, int insert, int reason, const char *tx,
                       const char *branch, bool compensation)
{
    int rc = SQLITE_OK;
    if (!compensation) {
        int n = insert_row(d, insert, tx, branch, "action", "action", &rc);
        if (n < 0)
            return rc;
        if (n == 1) {
            *out = RAW_BARRIER_EXECUTED;
            return SQLITE_OK;
        }
        sqlite3_stmt *st = raw_db_stmt(d, reason);
        sqlite3_bind_text(st, 1, tx, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, branch, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        const unsigned char *why = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
        bool late = why != NULL && strcmp((const char *)why, "compensation") == 0;
        rc = raw_db_finish(st, rc);
        if (rc == SQLITE_OK)
            *out = late ? RAW_BARRIER_REFUSED_LATE : RAW_BARRIER_DUPLICATE;
        return rc;
    }
    int n = insert_row(d, insert, tx, branch, "compensation", "compensation", &rc);
    if (n < 0)
        return rc;
    if (n == 0) {
        *out = RAW_BARRIER_DUPLICATE;
        return SQLITE_OK;
    }
    n = insert_row(d, insert, tx, branch, "action", "compensation", &rc);
    if (n < 0)
        return rc;
    *out = n == 1 ? RAW_BARRIER_NULL_COMPENSATION : RAW_BARRIER_EXECUTED;
    return SQLITE_OK;
}

int raw_barrier_run(raw_barrier_outcome_t *out, raw_refusal_t *no, raw_db_t *d, int insert, int reason,
                    const char *tx, const char *branch, bool compensation, raw_barrier_body_fn *body,
                    raw_barrier_body_fn *duplicate, void *arg)
{
    raw_barrier_outcome_t outcome = RAW_BARRIER_EXECUTED;
    no->code = 0;
    raw_db_lock(d);
    int rc = raw_db_begin(d);
    if (rc == SQLITE_OK) {
        rc = raw_barrier_decide(&outcome, d, insert, reason, tx, branch, compensation);
        if (rc == SQLITE_OK && outcome == RAW_BARRIER_EXECUTED)
            rc = body(d, arg, no);
        else if (rc == SQLITE_OK && outcome == RAW_BARRIER_DUPLICATE && duplicate != NULL)
            rc = duplicate(d, arg, no);
        if (rc == SQLITE_OK && no->code == 0)
            rc = raw_db_commit(d);
        else
            raw_db_rollback(d);
    }
    raw_db_unlock(d);
    if (rc == SQLITE_OK)
        *out = outcome;
    return rc;
}
