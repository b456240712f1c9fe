/*
 * sqlite_tx.h -- the SQLite connection of a participant service, and its
 * explicit transactions.
 *
 * A service opens one connection in serialized mode and shares it among
 * its workers. SQLite serializes each API call, not a sequence of them:
 * two workers issuing BEGIN/UPDATE/COMMIT on the same connection would
 * interleave inside one transaction. So a multi-statement write holds the
 * connection's own mutex (sqlite3_db_mutex) from BEGIN to COMMIT -- the
 * same mutex natomic_barrier_run() holds, so the two never interleave.
 */
#ifndef SQLITE_TX_H
#define SQLITE_TX_H

struct sqlite3;
struct sqlite3_stmt;

/*
 * Creates `path` readable and writable by its owner only (0600), unless it
 * exists already (then it is left as it is) or names no file (":memory:",
 * "", a "file:" URI). SQLite gives the -wal and -shm files the mode of the
 * database, so the whole store stays private: it holds balances and
 * orders. 0, or -1 with errno set.
 */
int sqlite_tx_create_private(const char *path);

/*
 * Opens (creating, private: sqlite_tx_create_private) `path` for the service `service`: serialized mode
 * (SQLITE_OPEN_FULLMUTEX), WAL journal, synchronous=NORMAL, busy timeout
 * 5000 ms. 0 with *out set, or -1 with a message on stderr and nothing
 * left open. Close with sqlite_tx_close_db() (the statement cache first).
 */
int sqlite_tx_open(struct sqlite3 **out, const char *path, const char *service);

/* sqlite_tx_open(), then runs `schema` (CREATE ... IF NOT EXISTS). 0 or -1 after a message. */
int sqlite_tx_open_schema(struct sqlite3 **out, const char *path, const char *service, const char *schema);

/*
 * sqlite_tx_open() for a saga participant: also creates the barrier table.
 * Its old rows are swept by libnatomic's housekeeping (a week's retention:
 * no retry lives that long). NULL after a message on stderr. Shaped for
 * service_def_t.open.
 */
void *sqlite_tx_open_participant(const char *path, const char *service);

/* The state itself when it is the connection: shaped for service_def_t.store. */
struct sqlite3 *sqlite_tx_store(void *state);

/* sqlite_tx_close_db() shaped for service_def_t.close. */
void sqlite_tx_close(void *db);

/*
 * Enters the connection's mutex and runs BEGIN IMMEDIATE (the write lock
 * is taken now, so the transaction cannot fail later for lack of it).
 * SQLITE_OK: the caller holds both and must end with sqlite_tx_commit()
 * or sqlite_tx_rollback(). Another SQLite code (sqlite3_errstr() names it,
 * safely from any thread): nothing is held.
 */
int sqlite_tx_begin(struct sqlite3 *db);

/*
 * Commits and leaves the mutex. SQLITE_OK, or the code COMMIT failed
 * with: then the transaction has been rolled back. Either way the mutex
 * is released.
 */
int sqlite_tx_commit(struct sqlite3 *db);

/* Rolls back and leaves the mutex. */
void sqlite_tx_rollback(struct sqlite3 *db);

/*
 * Runs a statement to its end, given `rc`, the result of the step just
 * taken (SQLITE_ROW while RETURNING rows remain): pass sqlite3_step(st)
 * for a statement whose rows you do not read. Never steps past
 * SQLITE_DONE, which would make SQLite reset the statement and run it
 * again. SQLITE_OK, or the failure.
 */
int sqlite_tx_finish(struct sqlite3_stmt *st, int rc);

/*
 * Prepared statements, kept. Compiling SQL is most of what a
 * reservation or a charge costs (docs/performance.md: about half of a
 * participant's instructions when every call prepared its statements),
 * so a statement is prepared once per connection and reused:
 *
 *   sqlite3_stmt *st;
 *   int rc = sqlite_tx_prepare(db, sql, &st);  // as sqlite3_prepare_v2(db, sql, -1, &st, NULL)
 *   ... bind, step ...
 *   sqlite_tx_release(st);                      // instead of sqlite3_finalize(st)
 *
 * `sql` must have static storage (a string literal or a static array):
 * the cache keys on its address and the connection. A statement is handed
 * to one caller at a time (two workers asking for the same SQL at once
 * get two statements), so it is used exactly as a freshly prepared one
 * would be; sqlite_tx_release() resets it and clears its bindings before
 * it goes back, and finalizes it when the cache is full. Before closing a
 * connection, sqlite_tx_forget() finalizes what the cache holds for it
 * (sqlite_tx_close does); no statement of that connection may be in use.
 */
int sqlite_tx_prepare(struct sqlite3 *db, const char *sql, struct sqlite3_stmt **out);
void sqlite_tx_release(struct sqlite3_stmt *st);
void sqlite_tx_forget(struct sqlite3 *db);

/* sqlite_tx_forget(), then sqlite3_close(). */
void sqlite_tx_close_db(struct sqlite3 *db);

#endif
