/*
 * embedded_nats.h -- a real nats-server, started as a child process on a
 * free loopback port with JetStream in a temporary folder.
 *
 * Used by the lab, the integration tests and the benchmarks: nothing here
 * is mocked. The child dies with its parent (PR_SET_PDEATHSIG) and
 * embedded_nats_stop() removes its folder.
 */
#ifndef EMBEDDED_NATS_H
#define EMBEDDED_NATS_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct embedded_nats {
    pid_t pid;
    int port;
    char url[64];      /* nats://127.0.0.1:<port>                 */
    char dir[256];     /* temp folder: JetStream store and log     */
} embedded_nats_t;

/*
 * Starts nats-server ($NATOMIC_NATS_SERVER or "nats-server" on PATH) on a
 * free port below the kernel's ephemeral range, held for it in this
 * process until embedded_nats_stop(), and waits until it accepts
 * connections (at most 10 s). Thread-safe: servers started at once get
 * different ports. Returns 0, or -1 with a message on stderr and nothing
 * left running.
 */
int embedded_nats_start(embedded_nats_t *out);

/* Restarts the server on the same port and store (after a stop or a kill). */
int embedded_nats_restart(embedded_nats_t *ns);

/* Stops the server (SIGTERM, then SIGKILL after 5 s); keeps the folder. */
void embedded_nats_kill(embedded_nats_t *ns);

/* Stops the server and removes its folder. Safe to call twice. */
void embedded_nats_stop(embedded_nats_t *ns);

/* A free TCP port on 127.0.0.1 (asked of the kernel), or -1. */
int embedded_nats_free_port(void);

#endif
