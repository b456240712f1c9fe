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
 */
#ifndef NATS_CLUSTER_H
#define NATS_CLUSTER_H

#include "embedded_nats.h"

#define NATS_CLUSTER_MAX 5

typedef struct nats_cluster {
    int n;
    embedded_nats_t node[NATS_CLUSTER_MAX];
    int cluster_port[NATS_CLUSTER_MAX];
    char urls[NATS_CLUSTER_MAX * 64]; /* "nats://127.0.0.1:p1,nats://127.0.0.1:p2,..." */
} nats_cluster_t;

/*
 * Starts `nodes` servers (2..NATS_CLUSTER_MAX) as one cluster and waits
 * until JetStream has a meta leader (at most 30 s), so that streams and
 * buckets with replicas can be made at once. 0, or -1 with a message on
 * stderr and nothing left running.
 */
int nats_cluster_start(nats_cluster_t *c, int nodes);

/* Waits until JetStream answers $JS.API.INFO through the cluster (a meta leader); 0 or -1 after timeout_ms. */
int nats_cluster_wait_jetstream(const nats_cluster_t *c, int timeout_ms);

/* Stops node i (SIGTERM, then SIGKILL); its port and store stay for a restart. */
void nats_cluster_kill_node(nats_cluster_t *c, int i);

/* Starts node i again on its port and store, with its routes; 0 or -1. */
int nats_cluster_restart_node(nats_cluster_t *c, int i);

/* Stops every node and removes their folders. Safe to call twice. */
void nats_cluster_stop(nats_cluster_t *c);

#endif
