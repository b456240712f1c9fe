/*
 * orders_service.h -- the orders methods, registered on any natomic
 * service (the binary and the tests share them).
 */
#ifndef ORDERS_SERVICE_H
#define ORDERS_SERVICE_H

#include <natomic.h>

struct sqlite3;

/*
 * Adds orders.create_order (rollback once failed, dispatch after commit)
 * and orders.get_order to `svc`, keeping orders in `db` (borrowed: opened
 * with orders_store_open(), it must outlive the service). Returns the
 * first failure of natomic_service_add_method(), NATOMIC_OK otherwise.
 */
natomic_status_t orders_service_register(natomic_service_t *svc, struct sqlite3 *db);

#endif
