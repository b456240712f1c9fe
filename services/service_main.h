/*
 * service_main.h -- the main() every example service shares: options,
 * state, connection, the natomic service, run until SIGTERM/SIGINT, and
 * clean exit codes (0 after a graceful stop or --help, 2 for a bad option,
 * 1 when the database or NATS fails).
 */
#ifndef SERVICE_MAIN_H
#define SERVICE_MAIN_H

#include <natomic.h>

struct sqlite3;

typedef struct service_def {
    const char *name;         /* the service and subject prefix: "orders"            */
    const char *about;        /* the paragraph --help prints                          */
    const char *description;  /* what $SRV.INFO says                                  */
    /* Opens the service's state in its SQLite file; NULL after a message on stderr. */
    void *(*open)(const char *db_path);
    void (*close)(void *state);
    /* The SQLite connection inside the state: the library keeps its tables there
       (outbox, idempotency keys, saga decisions) and sweeps old barrier rows. */
    struct sqlite3 *(*store)(void *state);
    /* Adds the methods and event handlers, over the state. */
    natomic_status_t (*register_methods)(natomic_service_t *svc, void *state);
} service_def_t;

/* Runs the service described by `def`; returns the process exit status. */
int service_main(int argc, char **argv, const service_def_t *def);

#endif
