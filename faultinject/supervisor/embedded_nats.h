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

#define EMBEDDED_NATS_MAX_EXTRA 16
#define EMBEDDED_NATS_MAX_ENV 12

typedef struct embedded_nats {
    pid_t pid;
    int port;
    char url[64];      /* nats://127.0.0.1:<port>                 */
    char dir[256];     /* temp folder: JetStream store and log     */
    char extra[EMBEDDED_NATS_MAX_EXTRA][256]; /* more arguments (a cluster node's), kept for restarts */
    int n_extra;
    char env[EMBEDDED_NATS_MAX_ENV][300]; /* "NAME=value" for the server's environment, kept for restarts */
    int n_env;
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

/*
 * embedded_nats_start() with more arguments for nats-server, NULL-terminated
 * (at most EMBEDDED_NATS_MAX_EXTRA, copied): a cluster node's name, cluster
 * port and routes (nats_cluster.c). They are used again by a restart.
 */
int embedded_nats_start_args(embedded_nats_t *out, const char *const extra[]);

/*
 * The same with variables for the server's environment ("NAME=value",
 * NULL-terminated, at most EMBEDDED_NATS_MAX_ENV): what a configuration
 * file's `$NAME` values read (deploy/). Kept for restarts too.
 */
int embedded_nats_start_env(embedded_nats_t *out, const char *const extra[], const char *const env[]);

/* A port below the ephemeral range held for this process's servers (see embedded_nats.c), or -1; and its release. */
int embedded_nats_hold_port(void);
void embedded_nats_release_port(int port);

/* Restarts the server on the same port and store (after a stop or a kill). */
int embedded_nats_restart(embedded_nats_t *ns);

/* Stops the server (SIGTERM, then SIGKILL after 5 s); keeps the folder. */
void embedded_nats_kill(embedded_nats_t *ns);

/* Stops the server and removes its folder. Safe to call twice. */
void embedded_nats_stop(embedded_nats_t *ns);

/* Stops the server for good but keeps its folder (logs, store) for whoever reads them; the port goes back. */
void embedded_nats_stop_keep(embedded_nats_t *ns);

/* A free TCP port on 127.0.0.1 (asked of the kernel), or -1. */
int embedded_nats_free_port(void);

#endif
