/*
 * saga_session.h -- one session of the saga benchmark: NATS and the
 * processes of one variant of the order saga started through the lab's
 * supervisor, and the benchmark's client of them: seeding, create_order
 * calls (timed one by one or from concurrent clients), the order_created
 * events it hears, and the checks of the example domain made from
 * outside, through the services' own methods.
 *
 * The variants (saga_variant_t): the four services of services/ on
 * libnatomic in memory or in durable mode; the same four written by hand
 * (bench/raw_saga, natomic-raw-saga); and the bare chain -- the same
 * messages, nothing stored -- which has no invariants to check.
 *
 * Every order is customer SAGA_CUSTOMER buying SAGA_QTY of SAGA_SKU for
 * SAGA_AMOUNT cents, so the session knows what the stock, the money and
 * the events must be after any number of confirmed orders.
 */
#ifndef SAGA_SESSION_H
#define SAGA_SESSION_H

#include <nats/nats.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <natomic.h>

#include "bench_load.h"
#include "supervisor.h"

#define SAGA_SKU "book"
#define SAGA_CUSTOMER "ann"
#define SAGA_QTY 1
#define SAGA_AMOUNT 100 /* cents */
#define SAGA_ORDER_ID_CAP 96

typedef struct saga_session saga_session_t;

/* What answers orders.create_order, in the order a round measures them. */
typedef enum saga_variant {
    SAGA_RAW,     /* the saga by hand: natomic-raw-saga as orders, inventory, payments, notifications */
    SAGA_CHAIN,   /* natomic-raw-saga as chain-a -> chain-b, chain-c: the messages, nothing stored   */
    SAGA_MEMORY,  /* the services of services/ on libnatomic, memory mode                             */
    SAGA_DURABLE, /* the same, durable mode                                                          */
    SAGA_VARIANT_COUNT
} saga_variant_t;

/* "raw", "chain", "memory", "durable". */
extern const char *const saga_variant_names[SAGA_VARIANT_COUNT];

/* Whether the variant keeps the saga's state, so that saga_session_check() has invariants to check. */
bool saga_variant_has_invariants(saga_variant_t variant);

/*
 * The invariants after a measurement, read from outside: get_stock,
 * get_balance, get_order of every order, the order_created events heard,
 * notifications.list. `ok` when all held; `failed` names each that broke.
 */
typedef struct saga_check {
    bool checked;          /* false for a variant without invariants (the chain): then ok   */
    bool ok;
    bool stock_ok;         /* available + reserved = restocked; reserved = orders x qty     */
    bool money_ok;         /* balance + charged = deposited; charged = orders x amount       */
    bool orders_ok;        /* every order the callers were told about is 'confirmed'          */
    bool events_ok;        /* one order_created (distinct Natomic-Event-Id) per order, for it */
    bool notified_ok;      /* one notification per order                                      */
    long long orders;      /* confirmed orders the callers got a reply for                    */
    long long available, reserved, balance, charged;
    long long not_confirmed;   /* orders get_order did not call 'confirmed'                   */
    long long events;          /* order_created messages heard, copies included               */
    long long distinct_events; /* distinct Natomic-Event-Id among them                        */
    long long event_orders;    /* distinct order ids among them that are orders of ours       */
    long long notifications;
    char failed[768];          /* "" when ok                                                  */
} saga_check_t;

/*
 * Starts NATS and inventory, payments, orders, notifications through the
 * supervisor, in durable or memory mode (orders' first start with
 * NATOMIC_FAULTS=`orders_faults`, may be NULL), connects the client and
 * the event listener. 0 with *out set, or -1 with a message and nothing
 * left running. Free with saga_session_stop().
 */
int saga_session_start(saga_session_t **out, bool durable, const char *orders_faults);

/*
 * The same for any variant. SAGA_RAW and SAGA_CHAIN run natomic-raw-saga
 * (raw_saga/natomic-raw-saga beside this program, or $NATOMIC_RAW_SAGA)
 * through the supervisor, under links named after the roles in the
 * session's folder; `orders_faults` applies to the library's orders only.
 */
int saga_session_start_variant(saga_session_t **out, saga_variant_t variant, const char *orders_faults);

/* Stops everything it started (supervisor_stop) and frees it. NULL is a no-op. */
void saga_session_stop(saga_session_t *s);

/* Borrowed, valid until saga_session_stop(). */
supervisor_t *saga_session_supervisor(saga_session_t *s);
natsConnection *saga_session_client(saga_session_t *s);

/* Prints the last `lines` lines of each service's log on stderr, for a failure. */
void saga_session_print_logs(saga_session_t *s, int lines);

/* inventory.restock(SAGA_SKU, stock) and payments.deposit(SAGA_CUSTOMER, money) (the chain: nothing to seed).
 * 0, or -1 with a message. */
int saga_session_seed(saga_session_t *s, long long stock, long long money);

/*
 * One orders.create_order (the chain: chain-a.create_order) on `nc`. NATOMIC_OK when the reply said
 * 'confirmed' (the order id is recorded, and copied to order_id when not
 * NULL); otherwise the status (NATOMIC_EBADREPLY for a reply that is not
 * 'confirmed'), `info` (may be NULL) filled, nothing recorded.
 */
natomic_status_t saga_session_order(saga_session_t *s, natsConnection *nc, int64_t timeout_ms,
                                    char order_id[SAGA_ORDER_ID_CAP], natomic_call_info_t *info);

/*
 * `warmup` untimed orders, then `calls` sequential orders each timed
 * alone (bench_load.h). 0 with *out filled, or -1 (message on stderr) at
 * the first failed call or a stop.
 */
int saga_session_latency(saga_session_t *s, int warmup, int calls, bench_latency_t *out);

/*
 * `clients` threads on the client connection make `warmup` untimed
 * orders, then `calls` timed ones; *sagas_per_s is calls over the time
 * from their common start to the last reply. 0, or -1 (message on stderr).
 */
int saga_session_throughput(saga_session_t *s, int clients, int warmup, int calls, double *sagas_per_s);

/*
 * `clients` threads on the client connection make orders until `seconds`
 * have passed or `max_calls` were made (bench_load_timed). 0 with *made
 * and *elapsed_s set, or -1 (message on stderr).
 */
int saga_session_timed_load(saga_session_t *s, int clients, int max_calls, double seconds, int *made,
                            double *elapsed_s);

/*
 * Checks the invariants (see saga_check_t), waiting (bounded) for the
 * events and notifications still on their way. 0 with *out filled (out->ok
 * says whether they held), or -1 with a message when a check could not be
 * made (a service did not answer). The chain has none: 0 with out->checked
 * false and out->ok true.
 */
int saga_session_check(saga_session_t *s, saga_check_t *out);

/* inventory.get_stock(SAGA_SKU). 0, or -1 (quietly unless `loud`). */
int saga_session_stock(saga_session_t *s, natsConnection *nc, long long *available, long long *reserved, bool loud);

/* payments.get_balance(SAGA_CUSTOMER). 0, or -1 (quietly unless `loud`). */
int saga_session_balance(saga_session_t *s, natsConnection *nc, long long *balance, long long *charged, bool loud);

/* orders.get_order(order_id): its status copied into status[cap]. 0, or -1 with a message. */
int saga_session_order_status(saga_session_t *s, const char *order_id, char *status, size_t cap);

/* order_created events heard so far, copies included. */
long long saga_session_events_heard(saga_session_t *s);

/*
 * Appends the formatted text to the NUL-terminated note[cap], after "; "
 * when the note is not empty; what does not fit is cut. The way
 * saga_check_t.failed and saga_recovery_run_t.note collect what went wrong.
 */
void saga_note_vappend(char *note, size_t cap, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

#endif
