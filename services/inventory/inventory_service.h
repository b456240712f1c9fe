/*
 * inventory_service.h -- the inventory methods, registered on any natomic
 * service (the binary and the tests share them).
 */
#ifndef INVENTORY_SERVICE_H
#define INVENTORY_SERVICE_H

#include <natomic.h>

struct sqlite3;

/*
 * Creates the inventory tables and the barrier's in `db` if missing, then
 * adds inventory.restock, inventory.reserve, inventory.release and
 * inventory.get_stock to `svc`. `db` is borrowed: open it with
 * sqlite_tx_open() (serialized mode) and keep it open until the service
 * is destroyed. NATOMIC_OK; NATOMIC_ETRANSIENT when SQLite fails (with a
 * message on stderr); or the failure of natomic_service_add_method().
 */
natomic_status_t inventory_service_register(natomic_service_t *svc, struct sqlite3 *db);

#endif
