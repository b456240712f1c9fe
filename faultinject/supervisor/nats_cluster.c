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

#include <arpa/inet.h>
#include <nats/nats.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int nats_cluster_start(nats_cluster_t *c, int nodes)
{
    memset(c, 0, sizeof *c);
    if (nodes < 2 || nodes > NATS_CLUSTER_MAX) {
        fprintf(stderr, "nats_cluster: %d nodes: want 2 to %d\n", nodes, NATS_CLUSTER_MAX);
        return -1;
    }
    for (int i = 0; i < nodes; i++) {
        c->cluster_port[i] = embedded_nats_hold_port();
        c->http_port[i] = embedded_nats_hold_port();
        if (c->cluster_port[i] <= 0 || c->http_port[i] <= 0) {
            fprintf(stderr, "nats_cluster: no free port for node %d's routes\n", i + 1);
            nats_cluster_stop(c);
            return -1;
        }
    }
    c->n = nodes;
    for (int i = 0; i < nodes; i++)
        snprintf(c->host[i], sizeof c->host[i], "127.0.0.1");
    for (int i = 0; i < nodes; i++)
        for (int j = 0; j < nodes; j++)
            if (i != j && fault_proxy_start(&c->route[i][j], c->cluster_port[j]) != 0) {
                fprintf(stderr, "nats_cluster: no proxy for the route n%d -> n%d\n", i + 1, j + 1);
                nats_cluster_stop(c);
                return -1;
            }
    /* The address each node gives the others for routes of their own making: a port of ours that
     * nothing listens on. Every pair already has its explicit route through a proxy; a route
     * made from gossip would go around the proxies and make a cut node reachable. */
    int closed = embedded_nats_free_port();
    for (int i = 0; i < nodes; i++) {
        char name[16], listen[64], advertise[64], http[16], routes[NATS_CLUSTER_MAX * 48] = "";
        snprintf(http, sizeof http, "%d", c->http_port[i]);
        nats_cluster_node_name(i, name, sizeof name);
        snprintf(listen, sizeof listen, "nats://127.0.0.1:%d", c->cluster_port[i]);
        snprintf(advertise, sizeof advertise, "127.0.0.1:%d", closed > 0 ? closed : 1);
        size_t used = 0;
        for (int j = 0; j < nodes; j++)
            if (j != i)
                used += (size_t)snprintf(routes + used, sizeof routes - used, "%snats-route://127.0.0.1:%d",
                                         used > 0 ? "," : "", fault_proxy_port(c->route[i][j]));
        const char *extra[] = {"--name",          name,      "--cluster", listen, "--cluster_name", "natomic",
                               "--cluster_advertise", advertise, "--routes",  routes, "--http_port", http,
                               /* clients keep to the list they were given (the lab's proxies) */
                               "--no_advertise", NULL};
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

bool nats_cluster_node_up(const nats_cluster_t *c, int i)
{
    return i >= 0 && i < c->n && (c->external ? !c->down[i] : c->node[i].pid > 0);
}

int nats_cluster_attach(nats_cluster_t *c, const char *urls, const char *monitor_ports)
{
    memset(c, 0, sizeof *c);
    c->external = true;
    char list[sizeof c->urls];
    snprintf(list, sizeof list, "%s", urls != NULL ? urls : "");
    char *save = NULL;
    for (char *u = strtok_r(list, ",", &save); u != NULL; u = strtok_r(NULL, ",", &save)) {
        if (c->n == NATS_CLUSTER_MAX) {
            fprintf(stderr, "nats_cluster: more than %d servers in %s\n", NATS_CLUSTER_MAX, urls);
            return -1;
        }
        const char *hp = strstr(u, "://") != NULL ? strstr(u, "://") + 3 : u;
        if (strchr(hp, '@') != NULL)
            hp = strchr(hp, '@') + 1; /* user info is the connection's business, not the node's */
        const char *colon = strrchr(hp, ':');
        int port = colon != NULL ? atoi(colon + 1) : 4222;
        size_t hl = colon != NULL ? (size_t)(colon - hp) : strlen(hp);
        if (hl == 0 || hl >= sizeof c->host[0] || port <= 0 || port > 65535) {
            fprintf(stderr, "nats_cluster: '%s' is not nats://host:port\n", u);
            return -1;
        }
        memcpy(c->host[c->n], hp, hl);
        c->host[c->n][hl] = '\0';
        c->node[c->n].port = port;
        snprintf(c->node[c->n].url, sizeof c->node[c->n].url, "%s", u);
        c->n++;
    }
    if (c->n == 0) {
        fprintf(stderr, "nats_cluster: no server URL given\n");
        return -1;
    }
    char mp[128];
    snprintf(mp, sizeof mp, "%s", monitor_ports != NULL && *monitor_ports ? monitor_ports : "8222");
    int k = 0, last = 8222;
    save = NULL;
    for (char *p = strtok_r(mp, ",", &save); p != NULL && k < c->n; p = strtok_r(NULL, ",", &save))
        c->http_port[k++] = last = atoi(p);
    for (; k < c->n; k++)
        c->http_port[k] = last;
    for (int i = 0; i < c->n; i++)
        if (c->http_port[i] <= 0 || c->http_port[i] > 65535) {
            fprintf(stderr, "nats_cluster: bad monitoring port in '%s'\n", monitor_ports);
            return -1;
        }
    snprintf(c->urls, sizeof c->urls, "%s", urls);
    return 0;
}

/* GET <path> from host:port into buf (the body, NUL-terminated); 0, or -1. 1 s at most. */
static int http_get(const char *host, int port, const char *path, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
        if (getaddrinfo(host, NULL, &hints, &ai) != 0 || ai == NULL) {
            close(fd);
            return -1;
        }
        a.sin_addr = ((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        freeaddrinfo(ai);
    }
    char req[160];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, req, (size_t)n) == n) {
        ssize_t r;
        while (got + 1 < cap && (r = read(fd, buf + got, cap - 1 - got)) > 0)
            got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || strstr(buf, " 200 ") == NULL || body == NULL)
        return -1;
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return 0;
}

/* The node named by the first `"leader": "<name>"` after `block` in json: its index, or -1. */
static int leader_after(const nats_cluster_t *c, const char *json, const char *block)
{
    const char *at = json != NULL ? strstr(json, block) : NULL;
    at = at != NULL ? strstr(at, "\"leader\"") : NULL;
    if (at == NULL)
        return -1;
    at = strchr(at + 8, '"');
    const char *end = at != NULL ? strchr(at + 1, '"') : NULL;
    char name[16];
    if (end == NULL || end - at - 1 <= 0 || (size_t)(end - at - 1) >= sizeof name)
        return -1;
    memcpy(name, at + 1, (size_t)(end - at - 1));
    name[end - at - 1] = '\0';
    return nats_cluster_node_index(c, name);
}

int nats_cluster_meta_leader(const nats_cluster_t *c)
{
    static char buf[64 * 1024]; /* /jsz without details is about 1 KB */
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int leader = -1;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < c->n && leader < 0; i++)
        if (nats_cluster_node_up(c, i) && !c->isolated[i] &&
            http_get(c->host[i], c->http_port[i], "/jsz", buf, sizeof buf) == 0)
            leader = leader_after(c, buf, "\"meta_cluster\"");
    pthread_mutex_unlock(&mu);
    return leader;
}

int nats_cluster_wait_healthy(const nats_cluster_t *c, int timeout_ms)
{
    static char buf[16 * 1024];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int64_t end = lab_monotonic_ms() + timeout_ms;
    for (;;) {
        bool all = true;
        pthread_mutex_lock(&mu);
        for (int i = 0; i < c->n && all; i++)
            if (nats_cluster_node_up(c, i) && !c->isolated[i])
                all = http_get(c->host[i], c->http_port[i], "/healthz", buf, sizeof buf) == 0 &&
                      strstr(buf, "\"ok\"") != NULL;
        pthread_mutex_unlock(&mu);
        if (all)
            return 0;
        if (lab_monotonic_ms() >= end)
            return -1;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int nats_cluster_leader_in(const nats_cluster_t *c, const char *json)
{
    return leader_after(c, json, "\"cluster\"");
}

void nats_cluster_kill_node(nats_cluster_t *c, int i)
{
    if (i >= 0 && i < c->n && !c->external)
        embedded_nats_kill(&c->node[i]);
}

int nats_cluster_restart_node(nats_cluster_t *c, int i)
{
    return i >= 0 && i < c->n && !c->external ? embedded_nats_restart(&c->node[i]) : -1;
}

void nats_cluster_isolate(nats_cluster_t *c, int i, bool cut)
{
    if (i < 0 || i >= c->n)
        return;
    for (int j = 0; j < c->n && !c->external; j++)
        if (j != i) {
            fault_proxy_set(c->route[i][j], cut ? FAULT_PROXY_CUT : FAULT_PROXY_PASS, 0);
            fault_proxy_set(c->route[j][i], cut ? FAULT_PROXY_CUT : FAULT_PROXY_PASS, 0);
        }
    c->isolated[i] = cut;
}

void nats_cluster_node_name(int i, char *out, size_t cap)
{
    snprintf(out, cap, "n%d", i + 1);
}

int nats_cluster_node_index(const nats_cluster_t *c, const char *name)
{
    for (int i = 0; i < c->n; i++) {
        char mine[16];
        nats_cluster_node_name(i, mine, sizeof mine);
        if (strcmp(mine, name) == 0)
            return i;
    }
    return -1;
}

void nats_cluster_stop(nats_cluster_t *c)
{
    nats_cluster_stop_keep(c, false);
}

void nats_cluster_stop_keep(nats_cluster_t *c, bool keep)
{
    for (int i = 0; i < c->n && !c->external; i++)
        if (keep)
            embedded_nats_stop_keep(&c->node[i]);
        else
            embedded_nats_stop(&c->node[i]);
    for (int i = 0; i < NATS_CLUSTER_MAX; i++)
        for (int j = 0; j < NATS_CLUSTER_MAX; j++) {
            fault_proxy_stop(c->route[i][j]);
            c->route[i][j] = NULL;
        }
    for (int i = 0; i < NATS_CLUSTER_MAX; i++)
        for (int *port = &c->cluster_port[i]; port != NULL; port = port == &c->cluster_port[i] ? &c->http_port[i] : NULL)
            if (*port > 0) {
                embedded_nats_release_port(*port);
                *port = 0;
            }
    c->n = 0;
}
