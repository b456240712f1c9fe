/*
 * test_sqlite_tx.c -- the services' statement cache (services/sqlite_tx.h).
 *
 * What it proves, on real SQLite connections (in-memory databases opened
 * in serialized mode, as sqlite_tx_open opens the services' files):
 *   1. a released statement is the one handed out next for the same SQL on
 *      the same connection: it is prepared once;
 *   2. two callers holding the same SQL at once get two statements, and
 *      the same SQL on another connection is another statement;
 *   3. a released statement comes back reset, with its bindings cleared:
 *      nothing of the previous call leaks into the next;
 *   4. sqlite_tx_forget() finalizes what the cache holds for a connection,
 *      so it closes cleanly (SQLITE_OK, no statement left), and leaves the
 *      other connections' statements alone;
 *   5. more distinct statements than the cache holds still work: those it
 *      cannot keep are finalized on release;
 *   6. eight threads sharing one connection, each running transactions of
 *      cached statements, lose no update;
 *   7. a store sqlite_tx_open creates is its owner's only (0600), and so
 *      are its -wal and -shm files; an existing file keeps its mode.
 */
#include <check.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sqlite_tx.h"

static const char insert_sql[] = "INSERT INTO t(v) VALUES (?)";
static const char count_sql[] = "SELECT count(*), coalesce(sum(v), 0) FROM t";
static const char echo_sql[] = "SELECT ?";

static sqlite3 *open_db(void)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                                     NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE t(v INTEGER)", NULL, NULL, NULL), SQLITE_OK);
    return db;
}

static int live_statements(sqlite3 *db)
{
    int n = 0;
    for (sqlite3_stmt *s = sqlite3_next_stmt(db, NULL); s != NULL; s = sqlite3_next_stmt(db, s))
        n++;
    return n;
}

START_TEST(released_statement_is_reused)
{
    sqlite3 *db = open_db();
    sqlite3_stmt *a = NULL, *b = NULL;
    ck_assert_int_eq(sqlite_tx_prepare(db, count_sql, &a), SQLITE_OK);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(sqlite3_step(a), SQLITE_ROW);
    sqlite_tx_release(a);
    ck_assert_int_eq(sqlite_tx_prepare(db, count_sql, &b), SQLITE_OK);
    ck_assert_ptr_eq(a, b);
    ck_assert_int_eq(sqlite3_step(b), SQLITE_ROW); /* reset on release: it runs again from the start */
    sqlite_tx_release(b);
    ck_assert_int_eq(live_statements(db), 1);
    sqlite_tx_forget(db);
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}
END_TEST

START_TEST(held_statements_are_not_shared)
{
    sqlite3 *db = open_db(), *other = open_db();
    sqlite3_stmt *a = NULL, *b = NULL, *c = NULL;
    ck_assert_int_eq(sqlite_tx_prepare(db, echo_sql, &a), SQLITE_OK);
    ck_assert_int_eq(sqlite_tx_prepare(db, echo_sql, &b), SQLITE_OK);
    ck_assert_int_eq(sqlite_tx_prepare(other, echo_sql, &c), SQLITE_OK);
    ck_assert_ptr_ne(a, b);
    ck_assert_ptr_ne(a, c);
    ck_assert_ptr_ne(b, c);
    ck_assert_ptr_eq(sqlite3_db_handle(c), other);
    sqlite_tx_release(a);
    sqlite_tx_release(b);
    sqlite_tx_release(c);
    sqlite_tx_close_db(db);
    /* the other connection's statement is still there and usable */
    sqlite3_stmt *d = NULL;
    ck_assert_int_eq(sqlite_tx_prepare(other, echo_sql, &d), SQLITE_OK);
    ck_assert_ptr_eq(d, c);
    sqlite_tx_release(d);
    sqlite_tx_forget(other);
    ck_assert_int_eq(live_statements(other), 0);
    ck_assert_int_eq(sqlite3_close(other), SQLITE_OK);
}
END_TEST

START_TEST(bindings_do_not_leak_into_the_next_call)
{
    sqlite3 *db = open_db();
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite_tx_prepare(db, echo_sql, &st), SQLITE_OK);
    sqlite3_bind_int64(st, 1, 42);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int64(st, 0), 42);
    sqlite_tx_release(st); /* mid-result: the reset must end it */
    ck_assert_int_eq(sqlite_tx_prepare(db, echo_sql, &st), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_type(st, 0), SQLITE_NULL); /* the 42 is gone */
    sqlite_tx_release(st);
    sqlite_tx_close_db(db);
}
END_TEST

#define MANY 300 /* more than the cache holds */
static char many_sql[MANY][40];

START_TEST(more_statements_than_the_cache_holds)
{
    sqlite3 *db = open_db();
    static sqlite3_stmt *held[MANY];
    for (int i = 0; i < MANY; i++) {
        snprintf(many_sql[i], sizeof many_sql[i], "SELECT %d", i);
        ck_assert_int_eq(sqlite_tx_prepare(db, many_sql[i], &held[i]), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(held[i]), SQLITE_ROW);
        ck_assert_int_eq(sqlite3_column_int(held[i], 0), i);
    }
    ck_assert_int_eq(live_statements(db), MANY);
    for (int i = 0; i < MANY; i++)
        sqlite_tx_release(held[i]);
    int kept = live_statements(db);
    ck_assert_int_lt(kept, MANY); /* the ones it could not keep were finalized */
    ck_assert_int_gt(kept, 0);
    sqlite_tx_forget(db);
    ck_assert_int_eq(live_statements(db), 0);
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}
END_TEST

#define THREADS 8
#define ROUNDS 500

static void *writer(void *arg)
{
    sqlite3 *db = arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (sqlite_tx_begin(db) != SQLITE_OK)
            return (void *)1;
        sqlite3_stmt *st = NULL;
        int rc = sqlite_tx_prepare(db, insert_sql, &st);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, 1);
            rc = sqlite_tx_finish(st, sqlite3_step(st));
        }
        sqlite_tx_release(st);
        if (rc != SQLITE_OK) {
            sqlite_tx_rollback(db);
            return (void *)1;
        }
        if (sqlite_tx_commit(db) != SQLITE_OK)
            return (void *)1;
    }
    return NULL;
}

START_TEST(threads_sharing_a_connection_lose_nothing)
{
    sqlite3 *db = open_db();
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, writer, db), 0);
    for (int i = 0; i < THREADS; i++) {
        void *failed = NULL;
        pthread_join(t[i], &failed);
        ck_assert_ptr_null(failed);
    }
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite_tx_prepare(db, count_sql, &st), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int64(st, 0), THREADS * ROUNDS);
    ck_assert_int_eq(sqlite3_column_int64(st, 1), THREADS * ROUNDS);
    sqlite_tx_release(st);
    ck_assert_int_le(live_statements(db), THREADS + 1); /* at most one insert per thread at once */
    sqlite_tx_close_db(db);
}
END_TEST

/* The permission bits of `path`, or -1 when it does not exist. */
static int mode_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

START_TEST(store_files_are_private)
{
    char dir[] = "/tmp/natomic-sqlite-tx-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], wal[300], shm[300], old[256];
    snprintf(path, sizeof path, "%s/store.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    mode_t was = umask(022); /* the usual umask, which alone would leave the files world-readable */
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite_tx_open(&db, path, "test"), 0);
    ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE t(v); INSERT INTO t VALUES (1);", NULL, NULL, NULL), SQLITE_OK);
    ck_assert_int_eq(mode_of(path), 0600);
    ck_assert_int_eq(mode_of(wal), 0600);
    ck_assert_int_eq(mode_of(shm), 0600);
    sqlite_tx_close_db(db);

    /* A file the user made stays as the user made it. */
    snprintf(old, sizeof old, "%s/theirs.db", dir);
    FILE *f = fopen(old, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ck_assert_int_eq(chmod(old, 0640), 0);
    ck_assert_int_eq(sqlite_tx_open(&db, old, "test"), 0);
    ck_assert_int_eq(mode_of(old), 0640);
    sqlite_tx_close_db(db);
    umask(was);

    /* In-memory names create nothing. */
    ck_assert_int_eq(sqlite_tx_create_private(":memory:"), 0);
    ck_assert_int_eq(sqlite_tx_create_private(""), 0);

    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf -- '%s'", dir);
    ck_assert_int_eq(system(rm), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sqlite_tx");
    TCase *tc = tcase_create("statement-cache");
    tcase_add_test(tc, released_statement_is_reused);
    tcase_add_test(tc, held_statements_are_not_shared);
    tcase_add_test(tc, bindings_do_not_leak_into_the_next_call);
    tcase_add_test(tc, more_statements_than_the_cache_holds);
    tcase_add_test(tc, threads_sharing_a_connection_lose_nothing);
    tcase_add_test(tc, store_files_are_private);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
