/*
 * nats_cluster.h -- a NATS cluster of real nats-servers on loopback, each
 * with JetStream, for the lab and the tests (issue 11, item 1).
 *
 * Every node is an embedded_nats_t (its own client port, store folder and
 * log) started with a server name (n1, n2, ...), a cluster port and routes
 * to every other node's cluster port, in the cluster "natomic". Clients get
 * all the client URLs as one comma list (natomic_connect() takes it as a
 * server list) and learn the rest from the servers. A node can be killed
 * and restarted on its own port and store, which is what the cluster
 * stories do to it.
 *
 * Every route goes through a fault proxy of its own, one per ordered pair
 * of nodes (node i dials node j through route[i][j]), so a node can be cut
 * off from the others and healed while it keeps running: its routes are
 * closed and refused both ways (nats_cluster_isolate). Each node
 * advertises a closed port as its cluster address, so gossip never makes
 * a route around the proxies; and no node tells its clients of the others
 * (--no_advertise), so a client never reconnects around its own proxies.
 */
#ifndef NATS_CLUSTER_H
#define NATS_CLUSTER_H

#include "embedded_nats.h"
#include "fault_proxy.h"

#include <stdbool.h>

#define NATS_CLUSTER_MAX 5

typedef struct nats_cluster {
    int n;
    embedded_nats_t node[NATS_CLUSTER_MAX];
    int cluster_port[NATS_CLUSTER_MAX];
    int http_port[NATS_CLUSTER_MAX];  /* monitoring (/jsz), loopback */
    fault_proxy_t *route[NATS_CLUSTER_MAX][NATS_CLUSTER_MAX]; /* i dials j through [i][j]; NULL on i == j */
    bool isolated[NATS_CLUSTER_MAX];
    /* An outside cluster (nats_cluster_attach): nodes the lab did not start and cannot signal.
       Their host, and whether a node command took them down; route[][] stays NULL. */
    bool external;
    char host[NATS_CLUSTER_MAX][64];
    bool down[NATS_CLUSTER_MAX];
    char urls[NATS_CLUSTER_MAX * 64]; /* "nats://127.0.0.1:p1,nats://127.0.0.1:p2,..." */
} nats_cluster_t;

/*
 * Starts `nodes` servers (2..NATS_CLUSTER_MAX) as one cluster and waits
 * until JetStream has a meta leader (at most 30 s), so that streams and
 * buckets with replicas can be made at once. 0, or -1 with a message on
 * stderr and nothing left running.
 */
int nats_cluster_start(nats_cluster_t *c, int nodes);

/*
 * An outside cluster: the servers of `urls` (a comma list of nats://host:port
 * or tls://host:port, 1..NATS_CLUSTER_MAX), named n1, n2, ... in that order
 * (the servers must carry those names), each with its monitoring port
 * (`monitor_ports`: one for all, or one per node, comma-separated). Nothing
 * is started or stopped here. 0, or -1 with a message.
 */
int nats_cluster_attach(nats_cluster_t *c, const char *urls, const char *monitor_ports);

/* Whether node i runs (started and not killed; for an outside node: not taken down by the lab). */
bool nats_cluster_node_up(const nats_cluster_t *c, int i);

/* Waits until JetStream answers $JS.API.INFO through the cluster (a meta leader); 0 or -1 after timeout_ms. */
int nats_cluster_wait_jetstream(const nats_cluster_t *c, int timeout_ms);

/*
 * The node JetStream's meta leader runs on now, as the live nodes' /jsz
 * says it, or -1 (no leader: an election, or too few nodes up).
 */
int nats_cluster_meta_leader(const nats_cluster_t *c);

/*
 * Waits until every running node that is not cut off answers its /healthz
 * "ok": JetStream has a meta leader, and every stream and consumer that
 * node holds a replica of is current (caught up, with a leader). 0, or -1
 * after timeout_ms.
 */
int nats_cluster_wait_healthy(const nats_cluster_t *c, int timeout_ms);

/* The leader named in a JetStream answer's "cluster" block ($JS.API.STREAM.INFO): its index, or -1. */
int nats_cluster_leader_in(const nats_cluster_t *c, const char *json);

/* Stops node i (SIGTERM, then SIGKILL); its port and store stay for a restart. */
void nats_cluster_kill_node(nats_cluster_t *c, int i);

/* Starts node i again on its port and store, with its routes; 0 or -1. */
int nats_cluster_restart_node(nats_cluster_t *c, int i);

/* Cuts node i's routes to and from every other node (true), or heals them (false). */
void nats_cluster_isolate(nats_cluster_t *c, int i, bool cut);

/* Node i's name as the servers know it: "n1" for i = 0. */
void nats_cluster_node_name(int i, char *out, size_t cap);

/* The node named `name` ("n2"), or -1. */
int nats_cluster_node_index(const nats_cluster_t *c, const char *name);

/* Stops every node and removes their folders. Safe to call twice. */
void nats_cluster_stop(nats_cluster_t *c);

/* The same; with `keep` the folders stay (logs, stores). Every port goes back either way. */
void nats_cluster_stop_keep(nats_cluster_t *c, bool keep);

#endif
