/*
 * sqlite_tx.c -- one serialized SQLite connection per service, and
 * explicit transactions that hold its mutex (see sqlite_tx.h for why).
 *
 * The mutex is recursive (SQLite's SQLITE_MUTEX_RECURSIVE for a
 * connection), so the statements run between begin and commit, which
 * enter it again themselves, do not deadlock. If COMMIT fails (a full
 * disk, say) the transaction is rolled back before the mutex is left, so
 * no half-done write ever becomes visible to another worker.
 */
#include "sqlite_tx.h"

#include <sqlite3.h>

#include <natomic.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * The statement cache (sqlite_tx.h): one table for the process, small and
 * scanned under one lock -- a scan of a few hundred pointers costs far
 * less than compiling one statement. An entry is (connection, SQL text's
 * address, statement), busy while a caller holds it.
 */
#define STMT_CACHE_CAP 256

static struct cached_stmt {
    sqlite3 *db;
    const char *sql;
    sqlite3_stmt *st;
    bool busy;
} stmt_cache[STMT_CACHE_CAP];
static pthread_mutex_t stmt_cache_mu = PTHREAD_MUTEX_INITIALIZER;

int sqlite_tx_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
    *out = NULL;
    int free_slot = -1;
    pthread_mutex_lock(&stmt_cache_mu);
    for (int i = 0; i < STMT_CACHE_CAP; i++) {
        struct cached_stmt *c = &stmt_cache[i];
        if (c->st == NULL) {
            if (free_slot < 0 && !c->busy) /* busy without a statement: another caller's slot */
                free_slot = i;
        } else if (!c->busy && c->db == db && c->sql == sql) {
            c->busy = true;
            *out = c->st;
            break;
        }
    }
    if (*out == NULL && free_slot >= 0)
        stmt_cache[free_slot].busy = true; /* reserved while it is prepared, outside the lock */
    pthread_mutex_unlock(&stmt_cache_mu);
    if (*out != NULL)
        return SQLITE_OK;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (free_slot >= 0) {
        pthread_mutex_lock(&stmt_cache_mu);
        if (rc == SQLITE_OK && st != NULL) {
            stmt_cache[free_slot] = (struct cached_stmt){.db = db, .sql = sql, .st = st, .busy = true};
        } else {
            stmt_cache[free_slot].busy = false;
        }
        pthread_mutex_unlock(&stmt_cache_mu);
    }
    *out = st;
    return rc;
}

void sqlite_tx_release(sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    bool kept = false;
    pthread_mutex_lock(&stmt_cache_mu);
    for (int i = 0; i < STMT_CACHE_CAP && !kept; i++)
        if (stmt_cache[i].st == st) {
            stmt_cache[i].busy = false;
            kept = true;
        }
    pthread_mutex_unlock(&stmt_cache_mu);
    if (!kept)
        sqlite3_finalize(st); /* the cache was full when it was prepared */
}

void sqlite_tx_forget(sqlite3 *db)
{
    /* Finalized outside the cache's lock: a worker inside a transaction holds the connection's
       mutex and then takes the cache's, so this must never hold them the other way round. */
    sqlite3_stmt *gone[STMT_CACHE_CAP];
    int n = 0;
    pthread_mutex_lock(&stmt_cache_mu);
    for (int i = 0; i < STMT_CACHE_CAP; i++)
        if (stmt_cache[i].st != NULL && stmt_cache[i].db == db) {
            gone[n++] = stmt_cache[i].st;
            stmt_cache[i] = (struct cached_stmt){0};
        }
    pthread_mutex_unlock(&stmt_cache_mu);
    for (int i = 0; i < n; i++)
        sqlite3_finalize(gone[i]);
}

void sqlite_tx_close_db(sqlite3 *db)
{
    if (db == NULL)
        return;
    sqlite_tx_forget(db);
    sqlite3_close(db);
}

int sqlite_tx_create_private(const char *path)
{
    if (path == NULL || path[0] == '\0' || path[0] == ':' || strncmp(path, "file:", 5) == 0)
        return 0; /* in memory, temporary, or a URI: SQLite's to handle */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

int sqlite_tx_open(sqlite3 **out, const char *path, const char *service)
{
    sqlite3 *db = NULL;
    if (sqlite_tx_create_private(path) != 0) {
        fprintf(stderr, "%s: cannot create %s: %s\n", service, path, strerror(errno));
        return -1;
    }
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "%s: cannot open %s: %s\n", service, path, db != NULL ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    /* Serialized mode is what makes sqlite3_db_mutex() non-NULL: the transactions below rely on it. */
    if (sqlite3_db_mutex(db) == NULL) {
        fprintf(stderr, "%s: this SQLite cannot share a connection between threads (built without threads?)\n",
                service);
        sqlite3_close(db);
        return -1;
    }
    *out = db;
    return 0;
}

int sqlite_tx_begin(sqlite3 *db)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return rc;
}

int sqlite_tx_commit(sqlite3 *db)
{
    int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return rc;
}

void sqlite_tx_rollback(sqlite3 *db)
{
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
}

int sqlite_tx_finish(sqlite3_stmt *st, int rc)
{
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

void *sqlite_tx_open_participant(const char *path, const char *service)
{
    sqlite3 *db = NULL;
    if (sqlite_tx_open(&db, path, service) != 0)
        return NULL;
    if (natomic_barrier_init(db) != NATOMIC_OK) {
        fprintf(stderr, "%s: cannot prepare the barrier in %s: %s\n", service, path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    /* Old barrier rows are swept by libnatomic's housekeeping, at start and every
       10 minutes (natomic_service_config_t.barrier_retention_s, default 7 days). */
    return db;
}

struct sqlite3 *sqlite_tx_store(void *state)
{
    return state;
}

void sqlite_tx_close(void *db)
{
    sqlite_tx_close_db(db);
}

int sqlite_tx_open_schema(sqlite3 **out, const char *path, const char *service, const char *schema)
{
    sqlite3 *db = NULL;
    if (sqlite_tx_open(&db, path, service) != 0)
        return -1;
    if (sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: cannot create the tables in %s: %s\n", service, path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    *out = db;
    return 0;
}
