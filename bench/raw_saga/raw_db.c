/*
 * raw_db.c -- one SQLite connection per role, as a careful author keeps it.
 *
 * Why one connection and a mutex, not a connection per worker: every
 * write of the saga is a short transaction on a few rows, and SQLite runs
 * one writer at a time per file whatever the connections. With several
 * connections the losers of BEGIN IMMEDIATE sleep in SQLite's busy handler
 * (1, 2, 5, 10 ms ...), far longer than the transaction they wait for;
 * with one connection they wait on a mutex and run the moment it is free.
 * The connection is opened SQLITE_OPEN_NOMUTEX: the mutex here is the only
 * one, taken once per transaction, not once per API call as in SQLite's
 * serialized mode.
 *
 * Why statements prepared once: a statement compiles in tens of
 * microseconds, as long as it runs; prepared at start, a call only binds,
 * steps and resets.
 *
 * Invariants: a statement is used only while the mutex is held, and is
 * reset and its bindings cleared before the mutex is left
 * (raw_db_finish); a transaction begins and ends under one holding of the
 * mutex, so no worker ever sees another's uncommitted rows and no
 * transaction spans a network wait. A failed COMMIT is rolled back before
 * the mutex is left.
 */
#include "raw_db.h"

#include <stdio.h>
#include <string.h>

/* Prepares `sql` into *out; SQLITE_OK or the failure (with a message). */
static int prepare(raw_db_t *d, const char *sql, sqlite3_stmt **out)
{
    int rc = sqlite3_prepare_v3(d->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: cannot prepare \"%s\": %s\n", d->who, sql, sqlite3_errmsg(d->db));
    return rc;
}

int raw_db_open(raw_db_t *d, const char *path, const char *who, const char *schema, const char *const *sql, int n)
{
    memset(d, 0, sizeof *d);
    snprintf(d->who, sizeof d->who, "%s", who);
    if (n > RAW_DB_MAX_STATEMENTS) {
        fprintf(stderr, "%s: %d statements, at most %d\n", who, n, RAW_DB_MAX_STATEMENTS);
        return -1;
    }
    int rc = sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(d->db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(d->db, schema, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "%s: cannot open %s: %s\n", who, path, d->db != NULL ? sqlite3_errmsg(d->db) : "out of memory");
        raw_db_close(d);
        return -1;
    }
    if (prepare(d, "BEGIN IMMEDIATE", &d->begin) != SQLITE_OK || prepare(d, "COMMIT", &d->commit) != SQLITE_OK ||
        prepare(d, "ROLLBACK", &d->rollback) != SQLITE_OK) {
        raw_db_close(d);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (prepare(d, sql[i], &d->stmt[i]) != SQLITE_OK) {
            raw_db_close(d);
            return -1;
        }
        d->n_stmt = i + 1;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->mu_ready = 1;
    return 0;
}

void raw_db_close(raw_db_t *d)
{
    if (d->mu_ready)
        pthread_mutex_destroy(&d->mu);
    for (int i = 0; i < d->n_stmt; i++)
        sqlite3_finalize(d->stmt[i]);
    sqlite3_finalize(d->begin);
    sqlite3_finalize(d->commit);
    sqlite3_finalize(d->rollback);
    sqlite3_close(d->db); /* NULL: a no-op */
    memset(d, 0, sizeof *d);
}

void raw_db_lock(raw_db_t *d)
{
    pthread_mutex_lock(&d->mu);
}

void raw_db_unlock(raw_db_t *d)
{
    pthread_mutex_unlock(&d->mu);
}

sqlite3_stmt *raw_db_stmt(raw_db_t *d, int i)
{
    return d->stmt[i];
}

int raw_db_finish(sqlite3_stmt *st, int rc)
{
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int raw_db_begin(raw_db_t *d)
{
    return raw_db_finish(d->begin, sqlite3_step(d->begin));
}

int raw_db_commit(raw_db_t *d)
{
    int rc = raw_db_finish(d->commit, sqlite3_step(d->commit));
    if (rc != SQLITE_OK)
        raw_db_rollback(d);
    return rc;
}

void raw_db_rollback(raw_db_t *d)
{
    raw_db_finish(d->rollback, sqlite3_step(d->rollback));
}
