/*
 * oracle.c -- the example domain's checks, read from outside the code
 * under test: the services' own SQLite files (opened read-only, so a
 * check can never change what it checks) and what the lab recorded on
 * the wire (order_created events, dead letters, its own restocks and
 * deposits).
 *
 * Invariants (DESIGN 4.4):
 *   stock_conserved     sum(available + reserved) == what was restocked
 *   money_conserved     sum(balance + charged)    == what was deposited
 *   order_atomicity     a confirmed order has its reservation and charge;
 *                       any other order has neither (a pending one is a
 *                       saga stuck halfway: a violation)
 *   order_created_once  one order_created per confirmed order, none else
 *   notifications_match one notification per confirmed order, none else
 *   no_pending_orders   no order left 'pending'
 *   no_dead_letters     no command was given up
 *   no_premature_events no event of a call that ended in an error: an event
 *                       leaves only once its call's result is final
 * A database that is missing (service not in the scenario) makes the
 * checks that need it fail with a clear reason instead of passing.
 *
 * Barrier outcomes (oracle_barrier) come from a participant's own
 * natomic_barrier table, which the barrier writes in the same transaction
 * as the business change (libatomic/src/barrier.c):
 *   an action row with reason 'action'          an action that ran: executed
 *   a compensation row, action reason 'action'  a compensation that ran: executed
 *   an action row with reason 'compensation'    the compensation came first:
 *                                               null_compensation
 * A duplicate or a refused late action writes nothing, so those are read
 * from the calls that reached the participant (the lab's trace copies) in
 * the same transaction: a call answered with success, or sent without a
 * reply subject (a copy nobody waits for), beyond the rows that account
 * for it is a duplicate (one whose due answer was not seen is not counted
 * either way); an action answered with an
 * error after a null compensation of its transaction was refused late.
 * What a reply claims (its "outcome" field) is never the count; it is
 * checked against the state, so a participant that says "executed" for a
 * compensation its table records as null is caught.
 */
#include "oracle.h"

#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void say(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static sqlite3 *open_ro(const char *path, char *err, size_t cap)
{
    sqlite3 *db = NULL;
    if (path == NULL) {
        say(err, cap, "the service is not part of this scenario");
        return NULL;
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        say(err, cap, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 2000);
    return db;
}

/* Runs a one-value query with an optional text parameter. 0 and *out, or -1. */
static int query_int(const char *path, const char *sql, const char *param, long long *out, char *err, size_t cap)
{
    sqlite3 *db = open_ro(path, err, cap);
    if (db == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && param != NULL)
        sqlite3_bind_text(st, 1, param, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int ok = rc == SQLITE_ROW;
    if (ok)
        *out = sqlite3_column_int64(st, 0);
    else
        say(err, cap, "%s: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ok ? 0 : -1;
}

int oracle_state(const oracle_inputs_t *in, const char *key, long long *value, char *err, size_t errcap)
{
    char a[128] = "", b[128] = "";
    if (sscanf(key, "stock.%127[A-Za-z0-9_-].%127s", a, b) == 2) {
        const char *sql = strcmp(b, "available") == 0 ? "SELECT coalesce(max(available),0) FROM stock WHERE sku=?"
                          : strcmp(b, "reserved") == 0 ? "SELECT coalesce(max(reserved),0) FROM stock WHERE sku=?"
                                                       : NULL;
        if (sql != NULL)
            return query_int(in->inventory_db, sql, a, value, err, errcap);
    } else if (sscanf(key, "balance.%127s", a) == 1) {
        return query_int(in->payments_db, "SELECT coalesce(max(balance),0) FROM accounts WHERE customer=?", a, value,
                         err, errcap);
    } else if (sscanf(key, "charged.%127s", a) == 1) {
        return query_int(in->payments_db, "SELECT coalesce(max(charged),0) FROM accounts WHERE customer=?", a, value,
                         err, errcap);
    } else if (sscanf(key, "orders.%127s", a) == 1) {
        if (strcmp(a, "total") == 0)
            return query_int(in->orders_db, "SELECT count(*) FROM orders", NULL, value, err, errcap);
        if (strcmp(a, "confirmed") == 0 || strcmp(a, "cancelled") == 0 || strcmp(a, "pending") == 0)
            return query_int(in->orders_db, "SELECT count(*) FROM orders WHERE status=?", a, value, err, errcap);
    } else if (strcmp(key, "notifications.total") == 0) {
        return query_int(in->notifications_db, "SELECT count(*) FROM notifications", NULL, value, err, errcap);
    } else if (strcmp(key, "conversions.history") == 0) {
        return query_int(in->conversions_db, "SELECT count(*) FROM history", NULL, value, err, errcap);
    }
    say(err, errcap, "unknown state key '%s'", key);
    return -1;
}

/* Orders whose saga is not atomic, one per line in why; -1 on error. */
static long long atomicity_violations(const oracle_inputs_t *in, char *why, size_t cap)
{
    sqlite3 *db = open_ro(in->orders_db, why, cap);
    if (db == NULL)
        return -1;
    if (in->inventory_db == NULL || in->payments_db == NULL) {
        say(why, cap, "order atomicity needs inventory and payments in the scenario");
        sqlite3_close(db);
        return -1;
    }
    char attach[1200];
    snprintf(attach, sizeof attach, "ATTACH DATABASE 'file:%s?mode=ro' AS inv; ATTACH DATABASE 'file:%s?mode=ro' AS pay;",
             in->inventory_db, in->payments_db);
    sqlite3_close(db);
    if (sqlite3_open_v2(in->orders_db, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK ||
        sqlite3_exec(db, attach, NULL, NULL, NULL) != SQLITE_OK) {
        say(why, cap, "cannot read the three databases together: %s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    static const char sql[] =
        "SELECT o.order_id, o.status,"
        "  EXISTS(SELECT 1 FROM inv.reservations r WHERE r.order_id = o.order_id AND r.state = 'reserved'),"
        "  EXISTS(SELECT 1 FROM pay.charges c WHERE c.order_id = o.order_id AND c.state = 'charged')"
        " FROM orders o ORDER BY o.created_at";
    sqlite3_stmt *st = NULL;
    long long bad = 0;
    size_t used = 0;
    why[0] = '\0';
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        say(why, cap, "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0), *status = (const char *)sqlite3_column_text(st, 1);
        int reserved = sqlite3_column_int(st, 2), charged = sqlite3_column_int(st, 3);
        bool confirmed = strcmp(status, "confirmed") == 0;
        bool ok = confirmed ? (reserved && charged) : (!reserved && !charged && strcmp(status, "pending") != 0);
        if (ok)
            continue;
        bad++;
        if (used + 1 < cap) {
            int n = snprintf(why + used, cap - used, "%sorder %s is %s with%s reservation and%s charge",
                             used ? "; " : "", id, status, reserved ? " a" : " no", charged ? " a" : " no");
            used += n > 0 ? (size_t)n : 0;
        }
    }
    sqlite3_finalize(st);
    /* Reservations or charges for orders that orders never recorded. */
    long long orphans = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT (SELECT count(*) FROM inv.reservations r WHERE r.state = 'reserved' AND "
                           "        r.order_id NOT IN (SELECT order_id FROM orders))"
                           "     + (SELECT count(*) FROM pay.charges c WHERE c.state = 'charged' AND "
                           "        c.order_id NOT IN (SELECT order_id FROM orders))",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        orphans = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (orphans > 0 && used + 1 < cap)
        snprintf(why + used, cap - used, "%s%lld reservations/charges for unknown orders", used ? "; " : "", orphans);
    return bad + orphans;
}

/* Compares a list of order ids with the confirmed orders: each exactly once. */
static bool matches_confirmed(const oracle_inputs_t *in, const char *const *ids, size_t n, const char *what,
                              char *why, size_t cap)
{
    sqlite3 *db = open_ro(in->orders_db, why, cap);
    if (db == NULL)
        return false;
    long long confirmed = 0, bad = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM orders WHERE status = 'confirmed'", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        confirmed = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    char first_bad[160] = "";
    for (size_t i = 0; i < n; i++) {
        int dup = 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(ids[i], ids[j]) == 0)
                dup = 1;
        long long is_confirmed = 0;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM orders WHERE order_id = ? AND status = 'confirmed'", -1, &st,
                               NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                is_confirmed = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
        if (dup || !is_confirmed) {
            if (bad++ == 0)
                snprintf(first_bad, sizeof first_bad, "%s for %s order %s", dup ? "a second" : "one",
                         is_confirmed ? "confirmed" : "unconfirmed", ids[i]);
        }
    }
    sqlite3_close(db);
    long long distinct_good = (long long)n - bad;
    if (bad == 0 && distinct_good == confirmed)
        return true;
    say(why, cap, "%lld confirmed orders, %zu %s%s%s", confirmed, n, what, bad ? "; first problem: " : "",
        first_bad);
    return false;
}

/* The order ids in the notifications db. */
static bool notifications_match(const oracle_inputs_t *in, char *why, size_t cap)
{
    sqlite3 *db = open_ro(in->notifications_db, why, cap);
    if (db == NULL)
        return false;
    sqlite3_stmt *st = NULL;
    char **ids = NULL;
    size_t n = 0;
    if (sqlite3_prepare_v2(db, "SELECT order_id FROM notifications", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            char **grown = realloc(ids, (n + 1) * sizeof *ids);
            if (grown == NULL)
                break;
            ids = grown;
            ids[n++] = strdup((const char *)sqlite3_column_text(st, 0));
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    bool ok = matches_confirmed(in, (const char *const *)ids, n, "notifications", why, cap);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return ok;
}

/* True when every database the invariant reads can be opened; else why says which cannot. */
static bool readable(const char *const *paths, size_t n, char *why, size_t cap)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3 *db = open_ro(paths[i], why, cap);
        if (db == NULL)
            return false;
        sqlite3_close(db);
    }
    return true;
}

static bool invariant_holds(const oracle_inputs_t *in, const char *name, char *why, size_t whycap);

/* ---- barrier outcomes --------------------------------------------------- */

typedef struct barrier_row {
    char *tx, *branch;
    bool compensation;       /* op 'compensation' (else 'action')              */
    bool by_compensation;    /* reason 'compensation'                           */
} barrier_row_t;

/* The reason of the action row of (tx, branch): 1 'action', 0 'compensation', -1 none. */
static int action_reason(const barrier_row_t *rows, size_t n, const char *tx, const char *branch)
{
    for (size_t i = 0; i < n; i++)
        if (!rows[i].compensation && strcmp(rows[i].tx, tx) == 0 && strcmp(rows[i].branch, branch) == 0)
            return rows[i].by_compensation ? 0 : 1;
    return -1;
}

/* One transaction's outcomes (rows[first..end) share tx) into *out. */
static void barrier_tx(const oracle_inputs_t *in, const char *service, const barrier_row_t *rows, size_t first,
                       size_t end, oracle_barrier_t *out)
{
    const char *tx = rows[first].tx;
    long long a_exec = 0, a_null = 0, c_exec = 0, c_true = 0, c_null = 0, c_rows = 0;
    for (size_t i = first; i < end; i++) {
        if (!rows[i].compensation) {
            a_exec += !rows[i].by_compensation;
            a_null += rows[i].by_compensation;
            continue;
        }
        c_rows++;
        int reason = action_reason(rows + first, end - first, tx, rows[i].branch);
        if (reason == 0)
            c_null++;
        else
            c_exec++; /* reason -1 is no barrier's doing: a compensation ran and recorded no action */
        c_true += reason == 1;
    }
    long long s_act = 0, s_comp = 0, late = 0, claim_exec_act = 0, claim_dup_act = 0, claim_exec_comp = 0,
              claim_null = 0, claim_dup_comp = 0;
    int64_t first_comp = INT64_MAX;
    for (size_t i = 0; i < in->n_calls; i++) {
        const oracle_call_t *c = &in->calls[i];
        if (c->compensation && strcmp(c->service, service) == 0 && strcmp(c->tx, tx) == 0 && c->time_ns < first_comp)
            first_comp = c->time_ns;
    }
    for (size_t i = 0; i < in->n_calls; i++) {
        const oracle_call_t *c = &in->calls[i];
        if (strcmp(c->service, service) != 0 || strcmp(c->tx, tx) != 0)
            continue;
        if (c->answer < 0) {
            late += !c->compensation && a_null > 0 && c->time_ns > first_comp;
            continue;
        }
        if (c->answer == 0 && c->awaited)
            continue; /* an answer was due and not seen (lost, or not paired): what it did is unknown */
        if (c->compensation)
            s_comp++;
        else
            s_act++;
        const char *cl = c->answer > 0 ? c->claimed : NULL;
        if (cl == NULL)
            continue;
        bool exec = strcmp(cl, "executed") == 0, dup = strcmp(cl, "duplicate") == 0;
        claim_exec_act += !c->compensation && exec;
        claim_dup_act += !c->compensation && dup;
        claim_exec_comp += c->compensation && exec;
        claim_dup_comp += c->compensation && dup;
        claim_null += c->compensation && strcmp(cl, "null_compensation") == 0;
    }
    out->executed += a_exec + c_exec;
    out->null_compensation += c_null;
    out->duplicate += (s_act > a_exec ? s_act - a_exec : 0) + (s_comp > c_exec + c_null ? s_comp - c_exec - c_null : 0);
    out->refused_late += late;
    if (out->disagreement[0] != '\0')
        return;
    const char *what = NULL;
    if (claim_exec_comp > c_true)
        what = c_null > 0 ? "'executed' for a compensation its state records as a null compensation (the action "
                            "never ran)"
                          : "'executed' for more compensations than its state records";
    else if (claim_null > c_null)
        what = "'null_compensation' for a compensation whose action its state records as run";
    else if (claim_exec_act > a_exec)
        what = "'executed' for an action its state does not record as run";
    else if (claim_dup_act > 0 && a_exec == 0)
        what = "'duplicate' for an action its state does not record as run";
    else if (claim_dup_comp > 0 && c_rows == 0)
        what = "'duplicate' for a compensation its state does not record";
    if (what != NULL)
        say(out->disagreement, sizeof out->disagreement, "%s replied %s (tx %s)", service, what, tx);
}

static int by_tx(const void *a, const void *b)
{
    return strcmp(((const barrier_row_t *)a)->tx, ((const barrier_row_t *)b)->tx);
}

int oracle_barrier(const oracle_inputs_t *in, const char *service, const char *db_path, const char *tx,
                   oracle_barrier_t *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    sqlite3 *db = open_ro(db_path, err, errcap);
    if (db == NULL)
        return -1;
    sqlite3_stmt *st = NULL;
    const char *sql = tx != NULL ? "SELECT tx, branch, op, reason FROM natomic_barrier WHERE tx = ?"
                                 : "SELECT tx, branch, op, reason FROM natomic_barrier";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        say(err, errcap, "%s keeps no barrier table (natomic_barrier): %s", service, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    if (tx != NULL)
        sqlite3_bind_text(st, 1, tx, -1, SQLITE_STATIC);
    barrier_row_t *rows = NULL;
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        barrier_row_t *grown = realloc(rows, (n + 1) * sizeof *rows);
        if (grown == NULL)
            break;
        rows = grown;
        barrier_row_t *r = &rows[n++];
        r->tx = strdup((const char *)sqlite3_column_text(st, 0));
        r->branch = strdup((const char *)sqlite3_column_text(st, 1));
        r->compensation = strcmp((const char *)sqlite3_column_text(st, 2), "compensation") == 0;
        r->by_compensation = strcmp((const char *)sqlite3_column_text(st, 3), "compensation") == 0;
        if (r->tx == NULL || r->branch == NULL)
            break;
    }
    bool ok = rc == SQLITE_DONE;
    if (!ok)
        say(err, errcap, "%s: reading natomic_barrier: %s", service, rc == SQLITE_ROW ? "out of memory" : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (ok && n > 0) {
        qsort(rows, n, sizeof *rows, by_tx);
        for (size_t first = 0, end; first < n; first = end) {
            for (end = first + 1; end < n && strcmp(rows[end].tx, rows[first].tx) == 0; end++) {
            }
            barrier_tx(in, service, rows, first, end, out);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(rows[i].tx);
        free(rows[i].branch);
    }
    free(rows);
    return ok ? 0 : -1;
}

/* ---- events after the result ------------------------------------------- */

/*
 * Every event belongs to a call that ended in success: for the publishing
 * service, the calls it took in the event's transaction (compensations
 * aside) were answered with success -- at least one -- or not answered yet
 * (a lost reply, a process that died after its commit). An event whose
 * call was answered only with errors left before the call's result was
 * final.
 */
static bool events_after_result(const oracle_inputs_t *in, char *why, size_t cap)
{
    for (size_t i = 0; i < in->n_events; i++) {
        const oracle_event_t *e = &in->events[i];
        const oracle_call_t *failed = NULL;
        bool succeeded = false;
        for (size_t k = 0; k < in->n_calls && !succeeded; k++) {
            const oracle_call_t *c = &in->calls[k];
            if (c->compensation || strcmp(c->service, e->service) != 0 || strcmp(c->tx, e->tx) != 0)
                continue;
            succeeded = c->answer > 0;
            if (c->answer < 0 && failed == NULL)
                failed = c;
        }
        if (!succeeded && failed != NULL) {
            say(why, cap, "event %s.%s left in tx %s, whose call %s answered with an error (%d %s)", e->service,
                e->type, e->tx, e->service, failed->code, failed->type);
            return false;
        }
    }
    return true;
}

int oracle_invariant(const oracle_inputs_t *in, const char *name, char *why, size_t whycap)
{
    why[0] = '\0';
    const char *needs[3] = {NULL, NULL, NULL};
    size_t n = 0;
    if (strcmp(name, "stock_conserved") == 0) {
        needs[n++] = in->inventory_db;
    } else if (strcmp(name, "money_conserved") == 0) {
        needs[n++] = in->payments_db;
    } else if (strcmp(name, "order_atomicity") == 0) {
        needs[n++] = in->orders_db;
        needs[n++] = in->inventory_db;
        needs[n++] = in->payments_db;
    } else if (strcmp(name, "order_created_once") == 0 || strcmp(name, "no_pending_orders") == 0) {
        needs[n++] = in->orders_db;
    } else if (strcmp(name, "notifications_match") == 0) {
        needs[n++] = in->orders_db;
        needs[n++] = in->notifications_db;
    } else if (strcmp(name, "no_dead_letters") != 0 && strcmp(name, "no_premature_events") != 0) {
        say(why, whycap, "unknown invariant '%s'", name);
        return -1;
    }
    if (!readable(needs, n, why, whycap))
        return -1;
    return invariant_holds(in, name, why, whycap) ? 1 : 0;
}

static bool invariant_holds(const oracle_inputs_t *in, const char *name, char *why, size_t whycap)
{
    long long v = 0;
    if (strcmp(name, "stock_conserved") == 0) {
        long long negative = 0;
        if (query_int(in->inventory_db, "SELECT coalesce(sum(available + reserved), 0) FROM stock", NULL, &v, why,
                      whycap) != 0 ||
            query_int(in->inventory_db, "SELECT count(*) FROM stock WHERE available < 0 OR reserved < 0", NULL,
                      &negative, why, whycap) != 0)
            return false;
        if (v == in->restocked_total && negative == 0)
            return true;
        say(why, whycap, "available + reserved = %lld, restocked %lld, negative rows %lld", v, in->restocked_total,
            negative);
        return false;
    }
    if (strcmp(name, "money_conserved") == 0) {
        if (query_int(in->payments_db, "SELECT coalesce(sum(balance + charged), 0) FROM accounts", NULL, &v, why,
                      whycap) != 0)
            return false;
        if (v == in->deposited_total)
            return true;
        say(why, whycap, "balance + charged = %lld, deposited %lld", v, in->deposited_total);
        return false;
    }
    if (strcmp(name, "order_atomicity") == 0)
        return atomicity_violations(in, why, whycap) == 0;
    if (strcmp(name, "order_created_once") == 0)
        return matches_confirmed(in, in->order_created_ids, in->n_order_created, "order_created events", why,
                                 whycap);
    if (strcmp(name, "notifications_match") == 0)
        return notifications_match(in, why, whycap);
    if (strcmp(name, "no_pending_orders") == 0) {
        if (query_int(in->orders_db, "SELECT count(*) FROM orders WHERE status = 'pending'", NULL, &v, why, whycap) !=
            0)
            return false;
        if (v == 0)
            return true;
        say(why, whycap, "%lld orders are still pending", v);
        return false;
    }
    if (strcmp(name, "no_premature_events") == 0)
        return events_after_result(in, why, whycap);
    if (strcmp(name, "no_dead_letters") == 0) {
        if (in->dead_letters == 0)
            return true;
        say(why, whycap, "%lld dead letters", in->dead_letters);
        return false;
    }
    say(why, whycap, "unknown invariant '%s'", name);
    return false;
}
