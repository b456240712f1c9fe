/*
 * durable_internal.h -- the state durable mode keeps per service, shared
 * by durable.c, saga_log.c, lease.c, recovery.c, outbox.c and
 * event_consumer.c. Not installed. NULL (svc->durable) in memory mode.
 */
#ifndef NATOMIC_DURABLE_INTERNAL_H
#define NATOMIC_DURABLE_INTERNAL_H

#include "natomic_internal.h"

#include <time.h>

struct natomic_durable {
    jsCtx *js;
    kvStore *saga_kv;              /* NULL when no method is flagged rollback  */
    kvStore *lease_kv;
    char saga_bucket[96];          /* natomic_saga_<service>                   */
    char saga_stream[100];         /* KV_natomic_saga_<service>                */
    char lease_bucket[96];         /* natomic_lease_<service>                  */
    pthread_mutex_t mu;            /* inflight, stopping                       */
    pthread_cond_t cond;           /* signalled on stop                        */
    bool stopping;
    char (*inflight)[NATOMIC_ID_LEN + 1]; /* call ids of this process's live sagas */
    size_t n_inflight, cap_inflight;
    pthread_t lease_thread;
    bool lease_started;
    int64_t started_ns;            /* wall clock, for the lease's value        */
};

/* Renews the lease every lease_ms / 4 until stop (lease.c). */
void *natomic__lease_thread(void *arg);
/* Sleeps up to ms or until stop; false when stopping. */
bool natomic__durable_wait(natomic_service_t *svc, int64_t ms);
/*
 * A context standing for the call of a saga record read back from the log
 * (recovery.c): its ids, state and compensations, in registration order.
 * Whatever the record holds -- it comes from JetStream, where anything with
 * the bucket's permissions may have written it -- the context is safe to
 * run and to release (natomic__ctx_release, also after an error);
 * tests/fuzz feeds it.
 */
struct Natomic__SagaRecord;
natomic_status_t natomic__saga_rebuild(natomic_service_t *svc, const struct Natomic__SagaRecord *rec,
                                       uint64_t revision, natomic_ctx_t *ctx);

/* After a successful handler: natomic_durable_commit() in a transaction of its own, if needed. */
natomic_status_t natomic__durable_autocommit(natomic_ctx_t *ctx);

#endif
