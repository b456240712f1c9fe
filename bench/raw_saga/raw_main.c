/*
 * natomic-raw-saga -- the order saga written by hand with nats.c, protobuf-c
 * and SQLite, no libnatomic: the careful author's version that DESIGN §5
 * measures the library against, plus the bare chain without storage.
 * One process plays one role:
 *
 *   orders, inventory, payments, notifications
 *       the four services of services/, on the same subjects with the
 *       same messages, rows and undos (raw_orders.c and its neighbours);
 *   chain-a, chain-b, chain-c
 *       the same messages with nothing stored (raw_chain.c).
 *
 *   natomic-raw-saga ROLE [--server URL] [--db PATH] [--workers N]
 *
 * The role may also come from the program's name: invoked through a link
 * named `orders` (or any role), it plays that role. That is how
 * natomic-bench-saga starts it through the lab's supervisor, which runs
 * <dir>/<name>/<name> --nats URL --db PATH for each service (--nats is
 * taken as --server).
 *
 * Life: signals blocked in every thread (nats.c's included: they are
 * created after), the role's database opened, connected, the role
 * started; then the main thread waits in sigwait() for SIGTERM or SIGINT
 * and stops it all in reverse order: calls in hand finish, events already
 * delivered are recorded, what was sent is flushed. Exit status 0 after a
 * clean stop or --help, 1 when the start failed, 2 for bad options.
 */
#include <getopt.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_roles.h"
#include "raw_service.h"

#define DEFAULT_WORKERS 10 /* libnatomic's max_workers default: the services run with it */

static const raw_role_t *const roles[] = {
    &raw_orders_role,  &raw_inventory_role, &raw_payments_role, &raw_notifications_role,
    &raw_chain_a_role, &raw_chain_b_role,   &raw_chain_c_role,
};

static const raw_role_t *find_role(const char *name)
{
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(roles[i]->name, name) == 0)
            return roles[i];
    return NULL;
}

static void usage(FILE *f)
{
    fputs("Usage: natomic-raw-saga ROLE [--server URL] [--db PATH] [--workers N]\n"
          "\n"
          "The order saga written by hand with nats.c and SQLite, without libnatomic: the\n"
          "baseline of natomic-bench-saga. ROLE is one of\n"
          "  orders         orders.create_order: save 'pending', inventory.reserve,\n"
          "                 payments.charge, confirm, publish events.orders.order_created;\n"
          "                 on failure refund, release, cancel; orders.get_order\n"
          "  inventory      restock, reserve, release, get_stock (barrier rows, stock)\n"
          "  payments       deposit, charge, refund, get_balance (barrier rows, balance)\n"
          "  notifications  one row per order_created event; notifications.list\n"
          "  chain-a        chain-a.create_order -> chain-b.reserve, chain-c.charge: the\n"
          "  chain-b        same messages with nothing stored\n"
          "  chain-c\n"
          "When ROLE is left out, the program's own name is the role (a link named orders).\n"
          "\n"
          "Options:\n"
          "  --server URL   NATS server (also --nats; default $NATS_URL or nats://127.0.0.1:4222)\n"
          "  --db PATH      SQLite file of the role (default ./ROLE.db; the chain stores nothing)\n"
          "  --workers N    calls handled at once, 1..1024 (default 10, as the natomic services)\n"
          "  -h, --help     show this help\n"
          "SIGTERM or SIGINT stops it: calls in hand finish first.\n",
          f);
}

typedef struct options {
    const raw_role_t *role;
    const char *url;
    const char *db_path;
    int workers;
} options_t;

/* Fills *o from argv: 0 to run, 1 after --help, 2 for bad options (message printed). */
static int parse_options(options_t *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'}, {"nats", required_argument, NULL, 's'},
        {"db", required_argument, NULL, 'd'},     {"workers", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *env = getenv("NATS_URL");
    *o = (options_t){.url = env != NULL && *env != '\0' ? env : "nats://127.0.0.1:4222", .workers = DEFAULT_WORKERS};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            o->url = optarg;
            break;
        case 'd':
            o->db_path = optarg;
            break;
        case 'w': {
            char *end = NULL;
            long n = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || n < 1 || n > 1024) {
                fprintf(stderr, "natomic-raw-saga: --workers wants a number from 1 to 1024, got '%s'\n", optarg);
                return 2;
            }
            o->workers = (int)n;
            break;
        }
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "Try 'natomic-raw-saga --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        o->role = find_role(argv[optind]);
        if (o->role == NULL) {
            fprintf(stderr, "natomic-raw-saga: no role '%s'\nTry 'natomic-raw-saga --help'.\n", argv[optind]);
            return 2;
        }
        optind++;
    } else {
        char self[512];
        snprintf(self, sizeof self, "%s", argv[0]);
        o->role = find_role(basename(self));
        if (o->role == NULL) {
            fprintf(stderr, "natomic-raw-saga: which role? Try 'natomic-raw-saga --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "natomic-raw-saga: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (*o->url == '\0' || (o->db_path != NULL && *o->db_path == '\0')) {
        fprintf(stderr, "natomic-raw-saga: --server and --db must not be empty\n");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options_t o;
    int prc = parse_options(&o, argc, argv);
    if (prc != 0)
        return prc == 1 ? 0 : 2;
    const raw_role_t *role = o.role;
    char default_db[96];
    snprintf(default_db, sizeof default_db, "%s.db", role->name);
    const char *db_path = role->stores ? (o.db_path != NULL ? o.db_path : default_db) : NULL;

    /* Blocked before any thread exists, so every thread inherits the mask and sigwait() gets them. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    void *state = role->open(db_path);
    if (state == NULL)
        return 1;
    natsConnection *nc = NULL;
    raw_service_t *svc = NULL;
    int rc = 1;
    natsStatus s = raw_connect(&nc, o.url);
    if (s != NATS_OK) {
        fprintf(stderr, "%s: cannot connect to %s: %s\n", role->name, o.url, natsStatus_GetText(s));
    } else if ((role->listen == NULL || role->listen(state, nc) == 0) &&
               raw_service_start(&svc, nc, role->name, role->methods, role->n_methods, state, o.workers) == 0) {
        fprintf(stderr, "%s: hand-written, %d workers, on %s\n", role->name, o.workers, o.url);
        int sig = 0;
        sigwait(&stop_signals, &sig); /* fails only for a bad set: then it stops at once */
        fprintf(stderr, "%s: signal %d: stopping\n", role->name, sig);
        rc = 0;
    }
    raw_service_stop(svc);
    if (role->stop != NULL)
        role->stop(state);
    natsConnection_Destroy(nc);
    role->close(state);
    nats_Close();
    return rc;
}
