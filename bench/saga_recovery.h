/*
 * saga_recovery.h -- one measurement of recovery after an orchestrator
 * crash in durable mode: how long after orders is restarted its saga is
 * ended, the stock and money are back, and it answers $SRV.PING.
 */
#ifndef SAGA_RECOVERY_H
#define SAGA_RECOVERY_H

#include <stdbool.h>

/* The fault that makes orders SIGKILL itself once, after charging, before confirming. */
#define SAGA_RECOVERY_FAULTS "orders/create_order/after_charge=crash@1"

/* One run. Times are milliseconds after the moment just before supervisor_restart(); < 0: not seen. */
typedef struct saga_recovery_run {
    bool measured;          /* the crash happened as planned and the restart was watched   */
    bool recovered;         /* "ended" seen, stock and money back, order 'cancelled', no event */
    double ping_ms;         /* orders answered $SRV.PING (polled every POLL_MS)            */
    double restart_ms;      /* supervisor_restart() returned (it waits for a ping itself)   */
    double claimed_ms;      /* "claimed" for the call received on natomic.recovery.orders   */
    double ended_ms;        /* "ended" for that call received                              */
    double restored_ms;     /* get_stock and get_balance first showed the seed again        */
    char call_id[64];       /* the saga's call id, from "claimed"                          */
    char order_status[24];  /* get_order("ord-<call_id>") afterwards: 'cancelled' expected  */
    char note[512];         /* what went wrong or looked odd; "" when nothing did           */
} saga_recovery_run_t;

/*
 * Starts NATS and the four services in durable mode (orders' first start
 * under SAGA_RECOVERY_FAULTS), seeds, makes one create_order (it times
 * out: orders died after the charge), waits until orders is dead,
 * restarts it with supervisor_restart() while watching, then stops
 * everything. Returns 0 with *out filled -- out->recovered says whether
 * recovery did its job, out->note what it did not -- or -1 with a message
 * when the run could not be made (NATS or a service would not start, the
 * fault did not fire, the run is stopping); everything started is stopped
 * either way.
 */
int saga_recovery_measure(saga_recovery_run_t *out);

#endif
