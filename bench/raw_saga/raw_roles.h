/*
 * raw_roles.h -- the roles natomic-raw-saga can play, one process each:
 * the order saga by hand (orders, inventory, payments, notifications;
 * the same subjects, messages and rows as services/) and the bare chain
 * without storage (chain-a, chain-b, chain-c).
 */
#ifndef RAW_ROLES_H
#define RAW_ROLES_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>

#include "raw_service.h"

typedef struct raw_role {
    const char *name;    /* the role, the subject prefix and the queue group          */
    bool stores;         /* keeps a SQLite file (--db)                                 */
    /* The role's state, its database open (db_path NULL for a role that does not store);
       NULL after a message on stderr. */
    void *(*open)(const char *db_path);
    void (*close)(void *state);
    const raw_method_t *methods;
    size_t n_methods;
    /* Optional: what the role listens to besides its methods (notifications: the events).
       0, or -1 after a message; `stop` undoes it and may be called after a failed start. */
    int (*listen)(void *state, natsConnection *nc);
    void (*stop)(void *state);
} raw_role_t;

extern const raw_role_t raw_orders_role;
extern const raw_role_t raw_inventory_role;
extern const raw_role_t raw_payments_role;
extern const raw_role_t raw_notifications_role;
extern const raw_role_t raw_chain_a_role;
extern const raw_role_t raw_chain_b_role;
extern const raw_role_t raw_chain_c_role;

/* Text of the order's parts the saga's roles check alike (customer, sku): up to this many bytes. */
#define RAW_MAX_FIELD_LEN 200

#endif
