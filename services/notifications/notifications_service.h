/*
 * notifications_service.h -- the notifications event handler and method,
 * registered on any natomic service (the binary and the tests share them).
 */
#ifndef NOTIFICATIONS_SERVICE_H
#define NOTIFICATIONS_SERVICE_H

#include <natomic.h>

struct sqlite3;

/*
 * Adds the consumer of events.orders.order_created and the method
 * notifications.list to `svc`, keeping notifications in `db` (borrowed:
 * opened with notifications_store_open(), it must outlive the service).
 * Returns the first failure, NATOMIC_OK otherwise.
 */
natomic_status_t notifications_service_register(natomic_service_t *svc, struct sqlite3 *db);

#endif
