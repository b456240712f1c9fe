/*
 * conversions_store.c -- SQLite history of the conversions service.
 *
 * The table is the service's whole state:
 *     history(id INTEGER PRIMARY KEY, tx TEXT, inches REAL, cm REAL,
 *             created_at TEXT)
 * Each statement runs in its own implicit transaction, so a save is
 * committed when conversions_store_save() returns: that is the "local
 * transaction" a rollback command undoes and a dispatch waits for.
 * Deleting is idempotent so a retried rollback is harmless.
 */
#include "conversions_store.h"
#include "sqlite_tx.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct conversions_store {
    sqlite3 *db;
};

static const char schema[] = "PRAGMA journal_mode=WAL;"
                             "PRAGMA synchronous=NORMAL;"
                             "CREATE TABLE IF NOT EXISTS history ("
                             "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             "  tx TEXT NOT NULL,"
                             "  inches REAL NOT NULL,"
                             "  cm REAL NOT NULL,"
                             "  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));";

int conversions_store_open(conversions_store_t **out, const char *path)
{
    conversions_store_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    if (sqlite_tx_create_private(path) != 0) { /* the history is the user's: owner only */
        fprintf(stderr, "conversions: cannot create %s: %s\n", path, strerror(errno));
        free(s);
        return -1;
    }
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(s->db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, schema, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "conversions: cannot open %s: %s\n", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        conversions_store_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void conversions_store_close(conversions_store_t *store)
{
    if (store == NULL)
        return;
    sqlite3_close(store->db);
    free(store);
}

sqlite3 *conversions_store_db(conversions_store_t *store)
{
    return store != NULL ? store->db : NULL;
}

const char *conversions_store_error(conversions_store_t *store)
{
    return store != NULL && store->db != NULL ? sqlite3_errmsg(store->db) : "no store";
}

/*
 * Each function holds the connection's mutex from prepare to finalize: the
 * workers share the connection, and a statement left active by one (the
 * INSERT ... RETURNING below, between its row and its finalize) would
 * otherwise sit inside another worker's transaction -- or natomic's, which
 * commits a call's outbox rows in this store in durable mode.
 */
int conversions_store_save(conversions_store_t *store, const char *tx, double inches, double cm, int64_t *id)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(store->db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(store->db, "INSERT INTO history(tx, inches, cm) VALUES (?, ?, ?) RETURNING id", -1,
                                &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, tx, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 2, inches);
        sqlite3_bind_double(st, 3, cm);
        rc = sqlite3_step(st);
    }
    int ok = rc == SQLITE_ROW;
    if (ok)
        *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(store->db));
    return ok ? 0 : -1;
}

int conversions_store_delete(conversions_store_t *store, int64_t id)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(store->db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(store->db, "DELETE FROM history WHERE id = ?", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    sqlite3_mutex_leave(sqlite3_db_mutex(store->db));
    return rc == SQLITE_DONE ? 0 : -1;
}

int64_t conversions_store_count(conversions_store_t *store)
{
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(store->db, "SELECT count(*) FROM history", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}
