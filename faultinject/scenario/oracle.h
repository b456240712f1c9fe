/*
 * oracle.h -- the checks of the example domain (DESIGN 4.4), read from
 * the services' SQLite files and the recorded event stream, never from
 * the code under test.
 */
#ifndef ORACLE_H
#define ORACLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A call the lab saw reach a service (the callee's trace copy), and how the callee answered it. */
typedef struct oracle_call {
    const char *service;            /* the callee                                    */
    const char *tx;                 /* its Natomic-Tx                                */
    bool compensation;              /* Natomic-Phase: rollback                        */
    int64_t time_ns;                /* the callee's clock when it took the call       */
    int answer;                     /* 0 no reply seen, 1 a success reply, -1 an error */
    bool awaited;                   /* it had a reply subject: an answer was expected */
    int code;                       /* an error reply's Nats-Service-Error-Code       */
    const char *type;               /* an error reply's Natomic-Error-Type, or ""     */
    const char *claimed;            /* a success reply's field "outcome", or NULL     */
} oracle_call_t;

/* An event the lab saw: who published it, in which transaction. */
typedef struct oracle_event {
    const char *service, *type, *tx;
} oracle_event_t;

/* What the lab itself put in (its successful restock and deposit calls), and what it saw. */
typedef struct oracle_inputs {
    const char *inventory_db, *payments_db, *orders_db, *notifications_db, *conversions_db; /* NULL: not running */
    long long restocked_total;      /* sum of restocked quantities                   */
    long long deposited_total;      /* sum of deposited amounts                      */
    const char *const *order_created_ids; /* order ids of the order_created events seen */
    size_t n_order_created;
    long long dead_letters;         /* messages seen on natomic.deadletter.>           */
    const oracle_call_t *calls;     /* every call seen, in the order seen            */
    size_t n_calls;
    const oracle_event_t *events;   /* every event seen                              */
    size_t n_events;
} oracle_inputs_t;

/* A participant's barrier outcomes (docs/scenarios.md, "barrier"). */
typedef struct oracle_barrier {
    long long executed, duplicate, null_compensation, refused_late;
    char disagreement[400]; /* "" when every reply's claimed outcome fits the state */
} oracle_barrier_t;

/*
 * Counts the barrier outcomes of `service` from its natomic_barrier table
 * (in `db_path`, read-only) and the calls that reached it, over every
 * transaction or only `tx` (NULL: all). The table decides executed and
 * null_compensation; a duplicate or a refused late action writes no row,
 * so those are the calls beyond what the rows account for. A success reply
 * whose "outcome" field claims what the state does not record (an
 * "executed" compensation whose action row says it never ran) is written
 * to out->disagreement. 0, or -1 with a reason (no such table, ...).
 */
int oracle_barrier(const oracle_inputs_t *in, const char *service, const char *db_path, const char *tx,
                   oracle_barrier_t *out, char *err, size_t errcap);

/*
 * Reads one state value ("stock.book.available", "balance.ann",
 * "orders.confirmed", ...; see scenario_state_key_valid). 0 and *value,
 * or -1 with a reason in err.
 */
int oracle_state(const oracle_inputs_t *in, const char *key, long long *value, char *err, size_t errcap);

/*
 * Checks a named invariant: 1 when it holds, 0 when it is broken (`why`
 * says what broke), -1 when it cannot be evaluated (a database it needs is
 * missing or unreadable; `why` says which) -- so an expected violation is
 * never "confirmed" by a check that could not run.
 */
int oracle_invariant(const oracle_inputs_t *in, const char *name, char *why, size_t whycap);

#endif
