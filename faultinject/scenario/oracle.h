/*
 * oracle.h -- the checks of the example domain (DESIGN 4.4), read from
 * the services' SQLite files and the recorded event stream, never from
 * the code under test.
 */
#ifndef ORACLE_H
#define ORACLE_H

#include <stdbool.h>
#include <stddef.h>

/* What the lab itself put in (its successful restock and deposit calls). */
typedef struct oracle_inputs {
    const char *inventory_db, *payments_db, *orders_db, *notifications_db, *conversions_db; /* NULL: not running */
    long long restocked_total;      /* sum of restocked quantities                   */
    long long deposited_total;      /* sum of deposited amounts                      */
    const char *const *order_created_ids; /* order ids of the order_created events seen */
    size_t n_order_created;
    long long dead_letters;         /* messages seen on natomic.deadletter.>           */
} oracle_inputs_t;

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
