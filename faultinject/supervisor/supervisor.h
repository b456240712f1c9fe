/*
 * supervisor.h -- what a scenario runs on: an embedded nats-server, the
 * example services as child processes (each behind its own fault proxy),
 * and the means to hurt them: kill -9, pause/resume, restart (of every
 * instance of a service, or of one), cut/heal the connection, restart
 * NATS, enable/disable fault points at run time.
 *
 * Nothing it starts outlives it: children get PR_SET_PDEATHSIG(SIGKILL)
 * and their own process group, and supervisor_stop() (also called from
 * the runner's SIGTERM/SIGINT handling) kills what is left.
 */
#ifndef SUPERVISOR_H
#define SUPERVISOR_H

#include <natomic.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "embedded_nats.h"
#include "fault_proxy.h"
#include "nats_cluster.h"
#include "process.h"

#define SUPERVISOR_MAX_SERVICES 8
#define SUPERVISOR_IDENTITIES 8 /* a secure story's: the five services, client, admin, lab */

typedef struct supervised_service {
    char name[32];          /* "orders"; instance k>0 is "orders#k" in logs          */
    int instance;
    char db_path[512];      /* shared by the instances of one service                */
    char log_path[512];
    char faults[1024];      /* NATOMIC_FAULTS for the first start ("" none)          */
    fault_proxy_t *proxy[NATS_CLUSTER_MAX]; /* between this process and NATS: one per node  */
    int n_proxy;            /* 1 on a single server; one per node on a cluster        */
    fault_proxy_mode_t link_mode; /* what the story set (supervisor_link): a healed node */
    int link_delay_ms;            /* gives the service back this, not a plain pass      */
    lab_process_t proc;
    bool paused;
    bool died;              /* ended on its own (not by a kill of ours): the watcher's */
    int64_t died_ms;        /* when it was seen ended, monotonic ms                   */
    int died_signal;        /* the signal that ended it, or 0                         */
    int died_status;        /* its exit status, or -1                                 */
    bool death_told;        /* the watcher told its `fn` of this death                */
    int watch_restarts;     /* restarts the watcher made                               */
} supervised_service_t;

/*
 * What the watcher tells (supervisor_watch): an instance that ended on its
 * own (`restarted` false, `what` says how: "killed by signal 9"), and its
 * restart after the quiet period (`restarted` true; `what` is "" or why
 * the restart failed). Runs on the watcher's thread, the supervisor's lock
 * not held: it must not call the supervisor.
 */
typedef void (*supervisor_watch_fn)(void *user, const char *service, int instance, bool restarted,
                                    const char *what);

typedef struct supervisor {
    embedded_nats_t nats;   /* the server (one server); unused on a cluster          */
    int nodes;              /* 1: one server; 2..NATS_CLUSTER_MAX: `cluster`          */
    nats_cluster_t cluster;
    fault_proxy_t *lab_proxy[NATS_CLUSTER_MAX]; /* a cluster: the supervisor's client, per node */
    bool secure;            /* supervisor_start_secure: deploy/'s identities, TLS        */
    bool external;          /* supervisor_start_external: NATS the lab did not start     */
    char node_control[512]; /* external: the program that stops/starts/cuts/heals a node */
    char conn_env[5][600];  /* external: NATS_USER=..., NATS_PASSWORD=..., ... for services */
    int n_conn_env;
    char tls_dir[256];      /* its certificates and the run's server config            */
    char password[SUPERVISOR_IDENTITIES][40]; /* one per supervisor_identities[] entry, random */
    char dir[256];          /* = nats.dir: databases, logs                          */
    unsigned long long seed;/* NATOMIC_FAULT_SEED for the services                  */
    supervised_service_t svc[SUPERVISOR_MAX_SERVICES];
    int n_svc;
    natsConnection *nc;     /* the supervisor's own client (direct to one server; to a
                               cluster through lab_proxy, so a node cut off is cut
                               off from it too)                                     */
    bool durable;           /* services run in durable mode (set before adding them;
                               supervisor_start leaves memory mode)                 */
    bool direct;            /* services connect straight to NATS, no fault proxy (set
                               before adding them): for benchmarks, where the proxy's
                               copying would be counted as the services' cost; link
                               faults (supervisor_link) are then refused             */
    /* The watcher (supervisor_watch), and the lock that keeps it apart from the process
       faults: kill, restart, pause, resume, run-time faults and stop take it. */
    pthread_mutex_t mu;
    bool mu_ready;
    pthread_t watcher;
    bool watching;
    atomic_bool watch_stop;
    int watch_quiet_ms;
    supervisor_watch_fn watch_fn;
    void *watch_user;
} supervisor_t;

/* Starts NATS (JetStream in a temp folder) and connects. 0 or -1 with a message. */
int supervisor_start(supervisor_t *sv, unsigned long long seed);

/*
 * The same on `nodes` servers: 1 is supervisor_start(); 2..NATS_CLUSTER_MAX
 * a cluster (nats_cluster.h) whose JetStream has a meta leader. On a
 * cluster every service instance gets one fault proxy per node and all of
 * them as its server list, and NATOMIC_JS_REPLICAS=min(3, nodes): its saga
 * log, leases and the EVENTS stream are replicated.
 */
int supervisor_start_nodes(supervisor_t *sv, unsigned long long seed, int nodes);

/*
 * A story on the shipped least-privilege configuration: one nats-server
 * started from deploy/nats-server.conf (memory) or deploy/nats-server-
 * durable.conf (`durable`), as shipped plus one identity of the lab's own
 * ("lab", every subject: it pings the services, reads their types and
 * taps what it may), with TLS on and client certificates required
 * (deploy/gen-certs.sh makes a CA and the certificates for this run alone).
 * Every service then runs under its own identity, password and certificate
 * (NATS_USER, NATS_PASSWORD, NATS_CA/CERT/KEY, NATS_INBOX_PREFIX
 * _INBOX.<name>), without trace copies or run-time fault control -- the
 * shipped identities may not use them. The deploy folder is
 * $NATOMIC_DEPLOY_DIR, else the source tree's. Passwords are random, and
 * never printed. 0, or -1 with a message.
 */
int supervisor_start_secure(supervisor_t *sv, unsigned long long seed, bool durable);

/* The identities of a secure story: orders, inventory, payments, notifications, conversions, client, admin, lab. */
extern const char *const supervisor_identities[];

/*
 * A new connection to a secure story's server as `identity` (one of
 * supervisor_identities), straight to the server (no proxy), over TLS,
 * with that identity's inbox prefix. The caller destroys it. 0, or -1
 * with a message.
 */
int supervisor_connect_as(supervisor_t *sv, const char *identity, natsConnection **nc);

/*
 * A story on NATS the lab did not start (natomic-lab run --server): the
 * servers of conn->url (comma list; several make a cluster, whose nodes
 * must be named n1, n2, ... in that order), reached through fault proxies
 * as the lab's own are, with conn's credentials (user and password, token
 * or credentials file; not TLS: the proxies stand between the clients and
 * the nodes, so no host name would match) for the lab and every service.
 * Node steps run `node_control` (NULL: refused) as
 *     <node_control> stop|start|cut|heal <node name> <host>
 * and read /jsz and /healthz on each node's monitoring port
 * (`monitor_ports`: one for all or one per node; default 8222). Before the
 * story every stream the library makes (KV_natomic_*, EVENTS) is deleted
 * from that server, so that no saga of an earlier story is recovered into
 * this one: give the lab a NATS of its own. Databases and logs go to a
 * temporary folder. 0, or -1 with a message.
 */
int supervisor_start_external(supervisor_t *sv, unsigned long long seed, const natomic_conn_config_t *conn,
                              const char *node_control, const char *monitor_ports);

/* What happens to one node of a cluster. */
typedef enum supervisor_node_op {
    SUPERVISOR_NODE_KILL,    /* SIGTERM then SIGKILL; port and store stay                */
    SUPERVISOR_NODE_RESTART, /* start again on its port and store; waits for a meta leader */
    SUPERVISOR_NODE_CUT,     /* running, but every route and client connection to it is
                                closed and refused: cut off from the cluster and from
                                everybody, with the state it had                          */
    SUPERVISOR_NODE_HEAL     /* its routes and clients' links pass again                  */
} supervisor_node_op_t;

/*
 * The node a target names, 0-based, in *node: "n2" (the second), "meta-leader"
 * (JetStream's meta leader now, asked of the nodes' monitoring port),
 * "leader-of:<stream>" (that stream's leader now, e.g. KV_natomic_saga_orders
 * for orders' saga log), "connected-to:<service>" (the node instance 0 of
 * that service is connected to now). Waits up to 5 s for an answer (an
 * election, a reconnect). 0, or -1 with a message.
 */
int supervisor_node_find(supervisor_t *sv, const char *target, int *node);

/*
 * Does `op` to node `node` (0-based) of the cluster; a restart or a heal
 * then waits until every live node's JetStream is healthy (/healthz, 30 s).
 * 0, or -1 with a message.
 */
int supervisor_node(supervisor_t *sv, int node, supervisor_node_op_t op);

/* The same on several nodes at once: all of them first, then one wait. */
int supervisor_nodes(supervisor_t *sv, const int *nodes, int n, supervisor_node_op_t op);

/*
 * Adds and starts `instances` processes of a service (build-tree binary
 * ../services/<name>/<name> beside the running program), each behind a new
 * fault proxy, with NATOMIC_FAULTS=`faults` (may be NULL),
 * NATOMIC_FAULT_SEED=seed, NATOMIC_MODE (sv->durable) and
 * NATOMIC_INSTANCE=<name>-<k> -- the same name after a restart, so a
 * durable instance takes its own sagas over at once; waits until
 * $SRV.PING.<name> answers (10 s).
 * NATOMIC_SERVICE_WRAPPER (e.g. "valgrind --error-exitcode=99 -q") runs
 * each service under that command (a name is looked up in /usr/bin).
 * $NATOMIC_SERVICES_DIR, when set, replaces that folder: <dir>/<name>/<name>.
 */
int supervisor_add_service(supervisor_t *sv, const char *name, int instances, const char *faults);

/*
 * The same, with `faults` in the environment of instance `instance`'s first
 * start alone (-1: of every instance); the other instances start with
 * NATOMIC_FAULTS empty. 0, or -1 with a message (also for an instance out
 * of range).
 */
int supervisor_add_service_for(supervisor_t *sv, const char *name, int instances, const char *faults, int instance);

/*
 * Watches the services as a real supervisor would (systemd's
 * Restart=always): an instance that ends on its own -- a crash, an exit --
 * is started again after `quiet_ms`, with no faults and its own name (so a
 * durable instance takes its sagas back at once), at most 8 times per
 * instance. An instance stopped by supervisor_kill*(), or paused, is left
 * alone: the story does that on purpose. One thread, polling every 20 ms;
 * `fn` (may be NULL) hears of each death and restart. Call once, after the
 * services were added; supervisor_stop() ends it (and, since the children
 * it restarted die with the thread that started them, those too: after
 * the story's checks). 0, or -1 with a message.
 */
int supervisor_watch(supervisor_t *sv, int quiet_ms, supervisor_watch_fn fn, void *user);

/* Every instance of the named service (count in *n); NULL if unknown. */
supervised_service_t *supervisor_find(supervisor_t *sv, const char *name, int *n);

/* Process faults on every instance of a service. 0 or -1 with a message. */
int supervisor_kill(supervisor_t *sv, const char *name);       /* SIGKILL, reaped           */
int supervisor_restart(supervisor_t *sv, const char *name);    /* start again, no faults, wait ping */
int supervisor_pause(supervisor_t *sv, const char *name);      /* SIGSTOP                   */
int supervisor_resume(supervisor_t *sv, const char *name);     /* SIGCONT                   */
/*
 * The same on one instance, 0-based (instance k runs as NATOMIC_INSTANCE
 * <name>-<k>, logs as "<name>#<k>" for k > 0); the others are untouched.
 * A restarted instance keeps its name, so in durable mode it takes its own
 * unfinished sagas over at once; the restart waits until every live
 * instance of the service answers the ping. 0, or -1 with a message (also
 * for an instance < 0 or beyond the service's).
 */
int supervisor_kill_instance(supervisor_t *sv, const char *name, int instance);
int supervisor_restart_instance(supervisor_t *sv, const char *name, int instance);
int supervisor_pause_instance(supervisor_t *sv, const char *name, int instance);
int supervisor_resume_instance(supervisor_t *sv, const char *name, int instance);
/* Connection faults on every instance's proxy. */
int supervisor_link(supervisor_t *sv, const char *name, fault_proxy_mode_t mode, int delay_ms);
/* NATS restart: stop the server, start it again on the same port and store (one server only). */
int supervisor_restart_nats(supervisor_t *sv);
/*
 * Run-time fault points through libfiu's remote control (what fiu-ctrl
 * does): "enable name=<point>,failnum=<n>" / "disable name=<point>" to
 * every live instance. 0 or -1 with a message.
 */
int supervisor_fault_enable(supervisor_t *sv, const char *name, const char *point, int failnum,
                            double probability);
int supervisor_fault_disable(supervisor_t *sv, const char *name, const char *point);

/* The last `lines` lines of a service's logs (all instances), malloc'ed; NULL if none. */
char *supervisor_log_tail(supervisor_t *sv, const char *name, int lines);

/* Stops everything (services SIGTERM then SIGKILL, proxies, NATS, folder unless keep). */
void supervisor_stop(supervisor_t *sv, bool keep);

/* Kills every child this process started (async-signal-safe): for signal handlers. */
void supervisor_emergency_kill(void);

#endif
