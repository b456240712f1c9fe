/*
 * lease.c -- which instances are alive, told without comparing clocks.
 *
 * Every instance of a durable service puts the key "<instance>" into the
 * KV bucket "natomic_lease_<service>" at start and again every quarter of
 * the lease time (natomic_service_config_t.lease_ms, default 2000 ms). The
 * bucket's TTL is the lease time: the server itself removes an entry that
 * was not renewed, so a dead instance's lease vanishes within one lease
 * time, whatever the clocks of the machines say. The value
 * (natomic.Lease) names the incarnation -- a random id per process -- so
 * a restarted process that keeps its instance name replaces its old life
 * at once: recovery treats a record whose owner has that name but another
 * incarnation as orphaned, and claims it without waiting for the TTL.
 *
 * A saga record names its owner's instance and incarnation; recovery asks
 * natomic__lease_alive() before claiming. "Alive" is only a hint: a paused
 * or cut-off owner can lose its lease and still wake up. What keeps that
 * safe is not the lease but the compare-and-set on every record write and
 * the decision row in the store (durable.c).
 *
 * When NATS is unreachable renewal fails and is retried at the next tick;
 * a lease that expired meanwhile costs this instance the sagas it owned
 * (recovery elsewhere may claim them), never their consistency.
 */
#include "natomic_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "durable_internal.h"
#include "natomic_log.pb-c.h"

natomic_status_t natomic__lease_renew(natomic_service_t *svc)
{
    natomic_durable_t *d = svc->durable;
    char host[128] = "";
    gethostname(host, sizeof host - 1);
    Natomic__Lease lease = NATOMIC__LEASE__INIT;
    lease.instance = svc->instance;
    lease.incarnation = svc->incarnation;
    lease.pid = (int64_t)getpid();
    lease.host = host;
    lease.started_ns = d->started_ns;
    size_t len = 0;
    uint8_t *data = natomic__pack(&lease.base, &len);
    if (data == NULL)
        return NATOMIC_ENOMEM;
    uint64_t rev = 0;
    natsStatus s = kvStore_Put(&rev, d->lease_kv, svc->instance, data, (int)len);
    free(data);
    if (s != NATS_OK) {
        return NATOMIC_ENATS;
    }
    return NATOMIC_OK;
}

void natomic__lease_release(natomic_service_t *svc)
{
    (void)kvStore_Delete(svc->durable->lease_kv, svc->instance); /* if it fails, it expires by itself */
}

int natomic__lease_alive(natomic_service_t *svc, const char *instance, const char *incarnation)
{
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, svc->durable->lease_kv, instance);
    if (s == NATS_NOT_FOUND) {
        return 0;
    }
    if (s != NATS_OK) {
        return -1;
    }
    Natomic__Lease *lease = natomic__lease__unpack(NULL, (size_t)kvEntry_ValueLen(e), kvEntry_Value(e));
    int alive = lease != NULL && lease->incarnation != NULL && strcmp(lease->incarnation, incarnation) == 0;
    natomic__lease__free_unpacked(lease, NULL);
    kvEntry_Destroy(e);
    return alive;
}

void *natomic__lease_thread(void *arg)
{
    natomic_service_t *svc = arg;
    int64_t every = svc->lease_ms / 4 > 0 ? svc->lease_ms / 4 : 1;
    bool warned = false;
    while (natomic__durable_wait(svc, every)) {
        natomic_status_t st = natomic__lease_renew(svc);
        if (st != NATOMIC_OK && !warned)
            natomic__log(NATOMIC_LOG_WARN, svc->name, "cannot renew the lease of instance %s: retrying",
                         svc->instance);
        else if (st == NATOMIC_OK && warned)
            natomic__log(NATOMIC_LOG_INFO, svc->name, "lease of instance %s renewed again", svc->instance);
        warned = st != NATOMIC_OK;
    }
    return NULL;
}
