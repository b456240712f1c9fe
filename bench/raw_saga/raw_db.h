/*
 * raw_db.h -- the SQLite file of a role of natomic-raw-saga: one
 * connection, a mutex around it, every statement prepared once.
 *
 * A role names its statements by index into the `sql` array it gives
 * raw_db_open(); raw_db_stmt() returns the prepared statement. Every use
 * of a statement, and every transaction, happens between raw_db_lock()
 * and raw_db_unlock(), and nothing between them waits on the network.
 */
#ifndef RAW_DB_H
#define RAW_DB_H

#include <pthread.h>
#include <sqlite3.h>

#define RAW_DB_MAX_STATEMENTS 16

typedef struct raw_db {
    sqlite3 *db;
    pthread_mutex_t mu;
    int mu_ready;                 /* mu initialized */
    char who[32];                 /* the role, for messages */
    sqlite3_stmt *begin, *commit, *rollback;
    sqlite3_stmt *stmt[RAW_DB_MAX_STATEMENTS];
    int n_stmt;
} raw_db_t;

/*
 * Opens (creating) `path`: WAL journal, synchronous=NORMAL, busy timeout
 * 5000 ms -- the pragmas of the natomic services (services/sqlite_tx.c) --
 * runs `schema` (CREATE ... IF NOT EXISTS), then prepares sql[0..n). 0, or
 * -1 with a message on stderr and nothing left open.
 */
int raw_db_open(raw_db_t *d, const char *path, const char *who, const char *schema, const char *const *sql, int n);

/* Finalizes the statements and closes. A never-opened (zeroed) raw_db_t is a no-op. */
void raw_db_close(raw_db_t *d);

void raw_db_lock(raw_db_t *d);
void raw_db_unlock(raw_db_t *d);

/* Statement `i` of the role's array, prepared; lock held. */
sqlite3_stmt *raw_db_stmt(raw_db_t *d, int i);

/*
 * Steps `st` to its end given `rc`, the result of the step just taken
 * (pass sqlite3_step(st) for a statement whose rows are not read), then
 * resets it and clears its bindings for the next use. SQLITE_OK, or the
 * failure.
 */
int raw_db_finish(sqlite3_stmt *st, int rc);

/* BEGIN IMMEDIATE (the write lock now, so nothing fails later for lack of it); lock held. SQLITE_OK or the failure. */
int raw_db_begin(raw_db_t *d);

/* COMMIT; on failure the transaction is rolled back. SQLITE_OK or the failure. */
int raw_db_commit(raw_db_t *d);

/* ROLLBACK (a failure of it leaves nothing more to do). */
void raw_db_rollback(raw_db_t *d);

#endif
