/*
 * fault_proxy.h -- a small TCP proxy between one service and NATS, to
 * break the connection on purpose: cut (close everything, refuse new
 * connections), blackhole (accept and keep connections but forward
 * nothing), delay (forward after N ms), heal (back to a plain pipe).
 *
 * Listens on 127.0.0.1 on a free port, forwards to 127.0.0.1:<upstream> (or,
 * for a NATS node the lab did not start, to the host it was given).
 * One thread runs a poll() loop over all connections; every mode change
 * takes effect at once. Nothing leaves loopback, except to an outside node
 * the caller named (fault_proxy_start_to: natomic-lab run --server).
 */
#ifndef FAULT_PROXY_H
#define FAULT_PROXY_H

typedef enum fault_proxy_mode {
    FAULT_PROXY_PASS = 0,
    FAULT_PROXY_CUT,
    FAULT_PROXY_BLACKHOLE,
    FAULT_PROXY_DELAY
} fault_proxy_mode_t;

typedef struct fault_proxy fault_proxy_t;

/* Starts a proxy to upstream_port; *out and its port. 0, or -1 with a message. */
int fault_proxy_start(fault_proxy_t **out, int upstream_port);

/* The same to <host>:upstream_port (an IPv4 address or a name, resolved once): an outside
 * NATS node (natomic-lab run --server). It still listens on 127.0.0.1 only. */
int fault_proxy_start_to(fault_proxy_t **out, const char *host, int upstream_port);
/* The port services connect to (nats://127.0.0.1:<port>). */
int fault_proxy_port(const fault_proxy_t *p);
/* The connections it carries now (a service connected through it: 1). */
int fault_proxy_connections(fault_proxy_t *p);
/* Changes the mode; delay_ms is used by FAULT_PROXY_DELAY. */
void fault_proxy_set(fault_proxy_t *p, fault_proxy_mode_t mode, int delay_ms);
/* Stops the thread, closes every socket, frees. NULL is a no-op. */
void fault_proxy_stop(fault_proxy_t *p);

#endif
