/*
 * housekeeping.c -- the service's background thread: what must happen on
 * a schedule rather than in a call.
 *
 *   every recovery interval (durable mode; default 500 ms, and at once at
 *   start): a recovery round -- orphaned sagas claimed and ended, this
 *   instance's deferred compensations retried, outbox leftovers relayed
 *   (recovery.c, outbox.c);
 *
 *   every 10 minutes (and at start), in both modes, the sweeps:
 *     - barrier rows older than barrier_retention_s (default 7 days) in
 *       the store, when it has a barrier table: no retry, redelivery or
 *       late action lives that long, and past it a duplicate could no
 *       longer be told from a new call -- which is why the retention is
 *       long and must outlast any caller's retries;
 *     - idempotency keys past their expiry (idempotency_retention_s,
 *       default a day);
 *     - saga decisions older than the barrier retention: a decision is
 *       needed only while its record may still be claimed.
 *
 * Each sweep holds the store's mutex for one DELETE; counts are logged at
 * info when anything went. The thread sleeps on a condition variable, so
 * stopping the service does not wait out an interval.
 */
#include "natomic_internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <time.h>

#include "durable_internal.h"

#define SWEEP_INTERVAL_MS (10 * 60 * 1000)
#define TICK_MS 100

/* True when db has a table of that name. */
static bool has_table(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

static int64_t sweep_decisions(sqlite3 *db, int64_t retention_s)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "DELETE FROM natomic_decision WHERE decided_at < ?", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)(time(NULL) - retention_s));
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    int64_t n = rc == SQLITE_DONE ? sqlite3_changes(db) : -1;
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return n;
}

void natomic__housekeeping_round(natomic_service_t *svc)
{
    int64_t barrier = 0, keys = natomic__idem_sweep(svc), decisions = 0;
    if (svc->store != NULL) {
        sqlite3_mutex_enter(sqlite3_db_mutex(svc->store));
        bool barrier_table = has_table(svc->store, "natomic_barrier");
        bool decision_table = has_table(svc->store, "natomic_decision");
        sqlite3_mutex_leave(sqlite3_db_mutex(svc->store));
        if (barrier_table && natomic_barrier_sweep(&barrier, svc->store, svc->barrier_retention_s) != NATOMIC_OK)
            natomic__log(NATOMIC_LOG_WARN, svc->name, "housekeeping: barrier sweep failed: %s",
                         sqlite3_errmsg(svc->store));
        if (decision_table)
            decisions = sweep_decisions(svc->store, svc->barrier_retention_s);
    }
    if (barrier > 0 || keys > 0 || decisions > 0)
        natomic__log(NATOMIC_LOG_INFO, svc->name,
                     "housekeeping: swept %lld barrier rows (older than %lld s), %lld expired idempotency keys, "
                     "%lld old saga decisions",
                     (long long)barrier, (long long)svc->barrier_retention_s, (long long)(keys > 0 ? keys : 0),
                     (long long)(decisions > 0 ? decisions : 0));
}

static void *housekeeping_main(void *arg)
{
    natomic_service_t *svc = arg;
    natomic__fault_bind_thread(svc);
    int64_t next_sweep = 0, next_recovery = 0;
    while (!atomic_load(&svc->stopping_housekeeping)) {
        int64_t now = natomic__now_ms();
        if (natomic__durable(svc) && now >= next_recovery) {
            natomic__recovery_round(svc);
            next_recovery = natomic__now_ms() + svc->recovery_interval_ms;
        }
        if (now >= next_sweep) {
            natomic__housekeeping_round(svc);
            next_sweep = natomic__now_ms() + SWEEP_INTERVAL_MS;
        }
        pthread_mutex_lock(&svc->housekeeping_mu);
        if (!atomic_load(&svc->stopping_housekeeping)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += TICK_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&svc->housekeeping_cond, &svc->housekeeping_mu, &until);
        }
        pthread_mutex_unlock(&svc->housekeeping_mu);
    }
    return NULL;
}

natomic_status_t natomic__housekeeping_start(natomic_service_t *svc)
{
    atomic_store(&svc->stopping_housekeeping, false);
    if (pthread_create(&svc->housekeeping_thread, NULL, housekeeping_main, svc) != 0)
        return NATOMIC_ENOMEM;
    svc->housekeeping_started = true;
    return NATOMIC_OK;
}

void natomic__housekeeping_stop(natomic_service_t *svc)
{
    if (!svc->housekeeping_started)
        return;
    pthread_mutex_lock(&svc->housekeeping_mu);
    atomic_store(&svc->stopping_housekeeping, true);
    pthread_cond_broadcast(&svc->housekeeping_cond);
    pthread_mutex_unlock(&svc->housekeeping_mu);
    pthread_join(svc->housekeeping_thread, NULL);
    svc->housekeeping_started = false;
}
