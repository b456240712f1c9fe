/*
 * lab_services.h -- the example services as child processes of the lab:
 * each with its own SQLite file and log in the lab's folder, started
 * against the embedded NATS, up once it answers $SRV.PING.<name>.
 */
#ifndef LAB_SERVICES_H
#define LAB_SERVICES_H

#include <nats/nats.h>

#include "process.h"

#define LAB_SERVICE_COUNT 5

typedef struct lab_service {
    const char *name;      /* conversions, inventory, payments, orders, notifications */
    char db_path[512];
    lab_process_t proc;
} lab_service_t;

typedef struct lab_services {
    lab_service_t svc[LAB_SERVICE_COUNT];
    int count;
} lab_services_t;

/*
 * Starts every example service with --nats url --db dir/<name>.db, logs in
 * dir/<name>.log, and waits (at most 10 s) until each answers on nc.
 * 0, or -1 with a message naming the service and its log; on failure what
 * was started is stopped.
 */
int lab_services_start(lab_services_t *out, const char *url, const char *dir, natsConnection *nc);

/* The service by name, or NULL. */
lab_service_t *lab_services_find(lab_services_t *s, const char *name);

/* SIGTERM to all (graceful drain), SIGKILL after 5 s. Logs and paths stay readable. */
void lab_services_stop(lab_services_t *s);

#endif
