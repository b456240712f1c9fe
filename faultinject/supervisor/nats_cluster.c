/*
 * nats_cluster.c -- see nats_cluster.h.
 *
 * The cluster ports are held first (the same way client ports are, below
 * the kernel's ephemeral range), so every node can be given the routes to
 * all the others before any of them starts; the nodes then start one after
 * another, each retrying the routes to the ones not up yet by itself.
 * Readiness is JetStream's, not the sockets': the first stream a service
 * makes with three replicas needs a meta leader, which the cluster elects
 * a moment after the last node is up.
 */
#include "nats_cluster.h"
#include "process.h"

#include <nats/nats.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int nats_cluster_start(nats_cluster_t *c, int nodes)
{
    memset(c, 0, sizeof *c);
    if (nodes < 2 || nodes > NATS_CLUSTER_MAX) {
        fprintf(stderr, "nats_cluster: %d nodes: want 2 to %d\n", nodes, NATS_CLUSTER_MAX);
        return -1;
    }
    for (int i = 0; i < nodes; i++) {
        c->cluster_port[i] = embedded_nats_hold_port();
        if (c->cluster_port[i] <= 0) {
            fprintf(stderr, "nats_cluster: no free port for node %d's routes\n", i + 1);
            nats_cluster_stop(c);
            return -1;
        }
    }
    c->n = nodes;
    for (int i = 0; i < nodes; i++) {
        char name[16], listen[64], routes[NATS_CLUSTER_MAX * 48] = "";
        snprintf(name, sizeof name, "n%d", i + 1);
        snprintf(listen, sizeof listen, "nats://127.0.0.1:%d", c->cluster_port[i]);
        size_t used = 0;
        for (int j = 0; j < nodes; j++)
            if (j != i)
                used += (size_t)snprintf(routes + used, sizeof routes - used, "%snats-route://127.0.0.1:%d",
                                         used > 0 ? "," : "", c->cluster_port[j]);
        const char *extra[] = {"--name", name, "--cluster", listen, "--cluster_name", "natomic", "--routes", routes,
                               NULL};
        if (embedded_nats_start_args(&c->node[i], extra) != 0) {
            fprintf(stderr, "nats_cluster: node %s did not start\n", name);
            nats_cluster_stop(c);
            return -1;
        }
    }
    size_t used = 0;
    for (int i = 0; i < nodes; i++)
        used += (size_t)snprintf(c->urls + used, sizeof c->urls - used, "%s%s", i > 0 ? "," : "", c->node[i].url);
    if (nats_cluster_wait_jetstream(c, 30000) != 0) {
        fprintf(stderr, "nats_cluster: JetStream elected no meta leader in 30 s (logs in %s/..)\n", c->node[0].dir);
        nats_cluster_stop(c);
        return -1;
    }
    return 0;
}

int nats_cluster_wait_jetstream(const nats_cluster_t *c, int timeout_ms)
{
    int64_t end = lab_monotonic_ms() + timeout_ms;
    int rc = -1;
    while (rc != 0 && lab_monotonic_ms() < end) {
        natsOptions *o = NULL;
        natsConnection *nc = NULL;
        const char *servers[NATS_CLUSTER_MAX];
        for (int i = 0; i < c->n; i++)
            servers[i] = c->node[i].url;
        if (natsOptions_Create(&o) == NATS_OK && natsOptions_SetServers(o, servers, c->n) == NATS_OK &&
            natsOptions_SetTimeout(o, 1000) == NATS_OK && natsConnection_Connect(&nc, o) == NATS_OK) {
            natsMsg *reply = NULL;
            if (natsConnection_RequestString(&reply, nc, "$JS.API.INFO", "", 1000) == NATS_OK) {
                /* Without a meta leader the answer is an error ("JetStream system temporarily unavailable"). */
                const char *body = natsMsg_GetData(reply);
                if (body != NULL && strstr(body, "\"error\"") == NULL)
                    rc = 0;
                natsMsg_Destroy(reply);
            }
        }
        natsConnection_Destroy(nc);
        natsOptions_Destroy(o);
        if (rc != 0) {
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return rc;
}

void nats_cluster_kill_node(nats_cluster_t *c, int i)
{
    if (i >= 0 && i < c->n)
        embedded_nats_kill(&c->node[i]);
}

int nats_cluster_restart_node(nats_cluster_t *c, int i)
{
    return i >= 0 && i < c->n ? embedded_nats_restart(&c->node[i]) : -1;
}

void nats_cluster_stop(nats_cluster_t *c)
{
    for (int i = 0; i < c->n; i++)
        embedded_nats_stop(&c->node[i]);
    for (int i = 0; i < NATS_CLUSTER_MAX; i++)
        if (c->cluster_port[i] > 0) {
            embedded_nats_release_port(c->cluster_port[i]);
            c->cluster_port[i] = 0;
        }
    c->n = 0;
}
