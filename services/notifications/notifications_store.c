/*
 * notifications_store.c -- SQLite state of the notifications service.
 *
 * The event id is the primary key and the order id is unique: a
 * redelivered or duplicated order_created event (same Natomic-Event-Id)
 * and a second event for the same order both end in INSERT OR IGNORE
 * changing nothing. Idempotency comes from the constraint, never from a
 * read-then-insert, which two deliveries could race through.
 */
#include "notifications_store.h"

#include <sqlite3.h>
#include <stdio.h>

#include "sqlite_tx.h"

static const char schema[] = "CREATE TABLE IF NOT EXISTS notifications ("
                             "  event_id TEXT PRIMARY KEY,"
                             "  order_id TEXT NOT NULL UNIQUE,"
                             "  customer TEXT NOT NULL,"
                             "  text TEXT NOT NULL,"
                             "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));"
                             "CREATE INDEX IF NOT EXISTS notifications_by_customer "
                             "  ON notifications(customer, created_at);";

int notifications_store_open(sqlite3 **out, const char *path)
{
    return sqlite_tx_open_schema(out, path, "notifications", schema);
}

void notifications_store_close(sqlite3 *db)
{
    sqlite_tx_close_db(db);
}

static void set_err(char *err, size_t cap, sqlite3 *db)
{
    if (err != NULL && cap > 0)
        snprintf(err, cap, "%s", sqlite3_errmsg(db));
}

int notifications_store_add(sqlite3 *db, const char *event_id, const char *order_id, const char *customer,
                            const char *text, char *err, size_t cap)
{
    /* Held so the error text and the change count are this statement's. */
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite_tx_prepare(db,
                                "INSERT OR IGNORE INTO notifications(event_id, order_id, customer, text) "
                                "VALUES (?, ?, ?, ?)", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, event_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, order_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, customer, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, text, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    int result = rc == SQLITE_DONE ? (sqlite3_changes(db) == 1 ? 0 : 1) : -1;
    if (result < 0)
        set_err(err, cap, db);
    sqlite_tx_release(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return result;
}

static const char *column(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s != NULL ? (const char *)s : "";
}

int notifications_store_list(sqlite3 *db, const char *customer, notifications_row_fn fn, void *user, char *err,
                             size_t cap)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite_tx_prepare(db,
                                "SELECT event_id, order_id, customer, text, created_at FROM notifications "
                                "WHERE customer = ? ORDER BY created_at, rowid", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, customer, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if (fn(user, column(st, 0), column(st, 1), column(st, 2), column(st, 3), column(st, 4)) != 0) {
                rc = SQLITE_DONE;
                break;
            }
    }
    int result = rc == SQLITE_DONE ? 0 : -1;
    if (result < 0)
        set_err(err, cap, db);
    sqlite_tx_release(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return result;
}
