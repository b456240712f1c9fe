/*
 * natomic-lab -- the lab's command line.
 *
 *   natomic-lab demo     start an embedded nats-server and the five example
 *                        services, then tell two stories: the seed's two
 *                        examples (conversions) and the order saga
 *                        (confirmed, declined payment, out of stock), with
 *                        the state before and after each.
 *   natomic-lab with -- COMMAND...
 *                        start the same, run COMMAND with NATS_URL and the
 *                        services' database paths in the environment, stop
 *                        everything, exit with COMMAND's status (clients in
 *                        other languages are tested this way).
 *
 *   natomic-lab run [FILES|DIRS] ...   the scenario suite (runner.c)
 *   natomic-lab check FILES|DIRS       validate scenario files
 *   natomic-lab explore [FILES|DIRS]   every fault point of a story, each
 *                                      action replayed alone (explore/)
 * Everything started here is stopped before it exits, and dies with it if
 * it is killed (see embedded_nats.c and process.c).
 */
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <natomic.h>

#include "conversions.pb-c.h"
#include "embedded_nats.h"
#include "explore.h"
#include "inventory.pb-c.h"
#include "lab_services.h"
#include "message_json.h"
#include "notifications.pb-c.h"
#include "orders.pb-c.h"
#include "payments.pb-c.h"
#include "process.h"
#include "runner.h"
#include "scenario_check.h"

#define CALL_TIMEOUT_MS 5000

static void usage(FILE *f)
{
    fputs("Usage: natomic-lab <command> [options]\n"
          "\n"
          "Commands:\n"
          "  demo          start NATS and the five example services and show: one successful\n"
          "                and one rolled-back call (the seed's examples), then the order saga\n"
          "                (confirmed, payment declined, out of stock) with state before/after\n"
          "  with -- CMD   start NATS and the services, run CMD with NATS_URL and\n"
          "                NATOMIC_<SERVICE>_DB set, stop everything; exit with CMD's status\n"
          "  run [FILE|DIR...] [--filter TEXT] [--seed N] [--jobs N] [--report DIR] [--keep] [--quiet]\n"
          "      [--server URLS [--user U | --token T | --creds F] [--node-control PROGRAM]\n"
          "       [--monitor-port P]]\n"
          "                run scenarios (default: the folder 'scenarios'): TAP 14 on stdout,\n"
          "                a progress line per scenario on stderr, a report with --report\n"
          "  check FILE|DIR...\n"
          "                validate scenario files (folders: every *.yaml, *.yml) without running\n"
          "  explore [--mode memory|durable|both] [--actions LIST] [--json FILE] [--report DIR]\n"
          "          [--jobs N] [--points LIST] [--cell SPEC] [--seed N] FILE|DIR...\n"
          "                every fault point the story hits, each action at each hit replayed\n"
          "                alone in each mode, judged by its invariants: TAP 14 on stdout, one\n"
          "                point per cell; a matrix page with --report, a JSON file with --json\n"
          "  help          show this help\n"
          "\n",
          f);
    fputs("Options of run:\n"
          "  --filter TEXT run only scenarios whose <group>/<name> contains TEXT\n"
          "  --seed N      the seed of every random choice (default: each scenario's own)\n"
          "  --jobs N      play N scenarios at once, 1 to 64 (default: two per core); TAP,\n"
          "                progress and report stay in file order\n"
          "  --report DIR  write the report there (index.html, one page per scenario)\n"
          "  --keep        keep each scenario's folder (NATS store, logs, databases); its path\n"
          "                follows the scenario's progress line: kept: <folder>\n"
          "  --quiet       no progress lines\n"
          "  --server URLS run on NATS the lab did not start (comma list; a cluster's nodes must be\n"
          "                named n1, n2, ... in that order), one story at a time, through the lab's\n"
          "                fault proxies; its KV_natomic_* and EVENTS streams are DELETED before each\n"
          "                story: give the lab a NATS of its own. With --user (and NATS_PASSWORD),\n"
          "                --token, --creds or --nkey, as for natomic-call; not TLS\n"
          "  --node-control PROGRAM\n"
          "                with --server: node steps run PROGRAM stop|start|cut|heal <node> <host>\n"
          "                (deploy/vagrant/node-control.sh for the Vagrant cluster)\n"
          "  --monitor-port P[,P2,...]\n"
          "                with --server: the nodes' monitoring port(s), for /jsz and /healthz\n"
          "                (default 8222)\n"
          "Exit status of run: 0 all passed, 1 a check failed, 2 bad usage or a missing path.\n"
          "\n"
          "Options of explore (docs/lab.md, \"Exploring every crash point\"):\n"
          "  --mode M      memory, durable or both (default both)\n"
          "  --actions L   crash,error,drop,duplicate,delay or all (default all); error, drop and\n"
          "                duplicate only where the point defines them (docs/fault-points.md)\n"
          "  --points L    only these fault points (comma-separated names)\n"
          "  --cell SPEC   replay one cell alone, no clean run: INSTANCE:POINT=ACTION#N,\n"
          "                e.g. orders-0:natomic/client_send=crash#2 (the JSON's replay command)\n"
          "  --json FILE   write every cell (verdict, invariants broken, replay command) there\n"
          "  --report DIR  write the matrix (DIR/index.html) and a page per replay (DIR/replays/)\n"
          "  --jobs N      replays at once, 1 to 64 (default: one per core)\n"
          "  --seed N      the seed of every replay (default: the story's)\n"
          "  --restart-after MS  a process that died is restarted this long after (default 500)\n"
          "  --cell-limit S      one replay's time limit (default 120)\n"
          "  --time-limit S      the whole exploration's (default 1800)\n"
          "  --keep, --quiet     as for run\n"
          "Exit status of explore: 0 no unexpected violation, 1 one (or a clean run that is not\n"
          "consistent, a fault that never fired, a replay cut short), 2 bad usage.\n"
          "\n"
          "Options of demo:\n"
          "  --keep        keep the temporary folder (NATS store, service logs, databases)\n"
          "\n"
          "Environment: NATOMIC_NATS_SERVER (nats-server binary), NATOMIC_LOG (service log level).\n",
          f);
}

/* The lab around a demo or a command: NATS, the services, a client. */
typedef struct lab {
    embedded_nats_t nats;
    lab_services_t services;
    natsConnection *nc;
} lab_t;

static int lab_up(lab_t *lab)
{
    memset(lab, 0, sizeof *lab);
    if (embedded_nats_start(&lab->nats) != 0)
        return -1;
    if (natomic_connect(&lab->nc, lab->nats.url, NULL) != NATOMIC_OK ||
        lab_services_start(&lab->services, lab->nats.url, lab->nats.dir, lab->nc) != 0) {
        natsConnection_Destroy(lab->nc);
        lab->nc = NULL;
        embedded_nats_stop(&lab->nats);
        return -1;
    }
    return 0;
}

static void lab_down(lab_t *lab)
{
    natsConnection_Destroy(lab->nc);
    lab->nc = NULL;
    lab_services_stop(&lab->services);
    embedded_nats_stop(&lab->nats);
}

/* ---- demo ------------------------------------------------------------ */

static int failures; /* promises the demo saw broken */

static void expect(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect(bool ok, const char *fmt, ...)
{
    if (ok)
        return;
    failures++;
    va_list ap;
    va_start(ap, fmt);
    printf("  !! NOT AS PROMISED: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static int64_t db_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void print_json_line(const char *prefix, const ProtobufCMessage *m)
{
    json_t *j = message_to_json(m);
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) : NULL;
    printf("%s%s\n", prefix, text != NULL ? text : "?");
    free(text);
    json_decref(j);
}

/* Calls subject, prints request and reply (or error); the reply in *out (NULL: freed). */
static natomic_status_t call(lab_t *lab, const char *subject, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **out,
                             natomic_call_info_t *info, bool show)
{
    natomic_call_info_t local;
    if (info == NULL)
        info = &local;
    ProtobufCMessage *reply = NULL;
    if (show) {
        char prefix[160];
        snprintf(prefix, sizeof prefix, "  -> %s ", subject);
        print_json_line(prefix, req);
    }
    natomic_status_t st = natomic_request(&reply, lab->nc, subject, req, reply_desc, CALL_TIMEOUT_MS, info);
    if (show) {
        if (st == NATOMIC_OK)
            print_json_line("  <- ", reply);
        else if (info->code != 0)
            printf("  <- error %d %s: %s\n     Natomic-Rollback: %s\n", info->code, info->type, info->message,
                   natomic_outcome_name(info->rollback));
        else
            printf("  <- no reply: %s\n", natomic_strerror(st));
    }
    if (out != NULL && st == NATOMIC_OK)
        *out = reply;
    else
        protobuf_c_message_free_unpacked(reply, NULL);
    return st;
}

/* Collects what arrived on an event subscription within quiet_ms; prints each. */
static int drain_events(natsSubscription *sub, int quiet_ms, const char *label)
{
    int n = 0;
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, sub, quiet_ms) == NATS_OK) {
        const char *tx = NULL;
        natsMsgHeader_Get(m, NATOMIC_HDR_TX, &tx);
        printf("  %s %s (%d bytes, tx %.8s...)\n", label, natsMsg_GetSubject(m), natsMsg_GetDataLength(m),
               tx != NULL ? tx : "?");
        natsMsg_Destroy(m);
        n++;
    }
    return n;
}

static void demo_conversions(lab_t *lab)
{
    const char *db = lab_services_find(&lab->services, "conversions")->db_path;
    natsSubscription *events = NULL;
    natsConnection_SubscribeSync(&events, lab->nc, "events.conversions.>");
    natsConnection_Flush(lab->nc);

    printf("\nPart 1 - the seed's two examples (conversions.inches_to_cm)\n");
    printf("\n1. A successful call: saved, no rollback, the event leaves after commit.\n");
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = 10;
    natomic_status_t st =
        call(lab, "conversions.inches_to_cm", &req.base, &conversions__inches_to_cm_reply__descriptor, NULL, NULL, true);
    int64_t rows = db_int(db, "SELECT count(*) FROM history");
    printf("  history rows: %lld\n", (long long)rows);
    int n1 = drain_events(events, 300, "event");
    expect(st == NATOMIC_OK && rows == 1 && n1 == 1, "success saved one row and sent one event (rows %lld, events %d)",
           (long long)rows, n1);

    printf("\n2. A failing call: the handler saves, then fails with InvalidLength;\n"
           "   the rollback deletes the row and no event leaves.\n");
    req.inches = -3;
    natomic_call_info_t info;
    st = call(lab, "conversions.inches_to_cm", &req.base, &conversions__inches_to_cm_reply__descriptor, NULL, &info,
              true);
    rows = db_int(db, "SELECT count(*) FROM history");
    printf("  history rows: %lld (the failed call's row was rolled back)\n", (long long)rows);
    int n2 = drain_events(events, 300, "event");
    if (n2 == 0)
        printf("  no event (as promised: dispatch only after success)\n");
    expect(st == NATOMIC_EBUSINESS && strcmp(info.type, "InvalidLength") == 0 &&
               info.rollback == NATOMIC_OUTCOME_COMPLETE && rows == 1 && n2 == 0,
           "failure rolled back and sent nothing (rows %lld, events %d)", (long long)rows, n2);
    natsSubscription_Destroy(events);
}

/* State of the saga domain, read from the services' own SQLite files. */
typedef struct saga_state {
    int64_t available, reserved, balance_ann, balance_bob, charged, orders_confirmed, orders_cancelled,
        notifications;
} saga_state_t;

static saga_state_t saga_state(lab_t *lab)
{
    const char *inv = lab_services_find(&lab->services, "inventory")->db_path;
    const char *pay = lab_services_find(&lab->services, "payments")->db_path;
    const char *ord = lab_services_find(&lab->services, "orders")->db_path;
    const char *notif = lab_services_find(&lab->services, "notifications")->db_path;
    saga_state_t s = {
        .available = db_int(inv, "SELECT coalesce(sum(available),0) FROM stock WHERE sku='book'"),
        .reserved = db_int(inv, "SELECT coalesce(sum(reserved),0) FROM stock WHERE sku='book'"),
        .balance_ann = db_int(pay, "SELECT coalesce(sum(balance),0) FROM accounts WHERE customer='ann'"),
        .balance_bob = db_int(pay, "SELECT coalesce(sum(balance),0) FROM accounts WHERE customer='bob'"),
        .charged = db_int(pay, "SELECT coalesce(sum(charged),0) FROM accounts"),
        .orders_confirmed = db_int(ord, "SELECT count(*) FROM orders WHERE status='confirmed'"),
        .orders_cancelled = db_int(ord, "SELECT count(*) FROM orders WHERE status='cancelled'"),
        .notifications = db_int(notif, "SELECT count(*) FROM notifications"),
    };
    return s;
}

static void print_state(const char *when, const saga_state_t *s)
{
    printf("  %-7s stock book: available %lld, reserved %lld | ann %lld, bob %lld, charged %lld | "
           "orders confirmed %lld, cancelled %lld | notifications %lld\n",
           when, (long long)s->available, (long long)s->reserved, (long long)s->balance_ann,
           (long long)s->balance_bob, (long long)s->charged, (long long)s->orders_confirmed,
           (long long)s->orders_cancelled, (long long)s->notifications);
}

static natomic_status_t create_order(lab_t *lab, const char *customer, int64_t qty, int64_t amount,
                                     natomic_call_info_t *info)
{
    Orders__CreateOrderRequest req = ORDERS__CREATE_ORDER_REQUEST__INIT;
    req.customer = (char *)customer;
    req.sku = "book";
    req.qty = qty;
    req.amount = amount;
    return call(lab, "orders.create_order", &req.base, &orders__order_reply__descriptor, NULL, info, true);
}

/* Waits until the notifications db holds n rows (bounded), for the event to land. */
static void wait_notifications(lab_t *lab, int64_t n)
{
    const char *notif = lab_services_find(&lab->services, "notifications")->db_path;
    for (int i = 0; i < 50 && db_int(notif, "SELECT count(*) FROM notifications") < n; i++)
        usleep(20 * 1000);
}

static void demo_saga(lab_t *lab)
{
    printf("\nPart 2 - the order saga: orders -> inventory.reserve, payments.charge;\n"
           "         each step's compensation (release, refund) is registered before the step.\n");
    Inventory__RestockRequest restock = INVENTORY__RESTOCK_REQUEST__INIT;
    restock.sku = "book";
    restock.qty = 5;
    Payments__DepositRequest dep = PAYMENTS__DEPOSIT_REQUEST__INIT;
    printf("\nSeed data:\n");
    call(lab, "inventory.restock", &restock.base, &inventory__stock_reply__descriptor, NULL, NULL, true);
    dep.customer = "ann";
    dep.amount = 5000;
    call(lab, "payments.deposit", &dep.base, &payments__balance_reply__descriptor, NULL, NULL, true);
    dep.customer = "bob";
    dep.amount = 100;
    call(lab, "payments.deposit", &dep.base, &payments__balance_reply__descriptor, NULL, NULL, true);

    natsSubscription *events = NULL;
    natsConnection_SubscribeSync(&events, lab->nc, "events.orders.>");
    natsConnection_Flush(lab->nc);

    saga_state_t before = saga_state(lab), after;
    natomic_call_info_t info;

    printf("\nA. A confirmed order: reserved, charged, confirmed; order_created leaves once.\n");
    print_state("before", &before);
    natomic_status_t st = create_order(lab, "ann", 2, 3000, &info);
    int ev = drain_events(events, 300, "event");
    wait_notifications(lab, before.notifications + 1);
    after = saga_state(lab);
    print_state("after", &after);
    expect(st == NATOMIC_OK && ev == 1 && after.available == before.available - 2 && after.reserved == 2 &&
               after.balance_ann == before.balance_ann - 3000 && after.notifications == before.notifications + 1,
           "the confirmed order moved stock and money once and notified once");

    printf("\nB. A declined payment: bob has 100; the reservation is released, nothing is charged.\n");
    before = after;
    print_state("before", &before);
    st = create_order(lab, "bob", 1, 1500, &info);
    ev = drain_events(events, 300, "event");
    after = saga_state(lab);
    print_state("after", &after);
    expect(st == NATOMIC_EBUSINESS && strcmp(info.type, "PaymentDeclined") == 0 &&
               info.rollback == NATOMIC_OUTCOME_COMPLETE && ev == 0 && after.available == before.available &&
               after.reserved == before.reserved && after.balance_bob == before.balance_bob &&
               after.orders_cancelled == before.orders_cancelled + 1,
           "the declined order left stock and money as they were, and sent no event");

    printf("\nC. Out of stock: 10 books wanted, 3 left; no charge is even attempted.\n");
    before = after;
    print_state("before", &before);
    st = create_order(lab, "ann", 10, 100, &info);
    ev = drain_events(events, 300, "event");
    after = saga_state(lab);
    print_state("after", &after);
    /* The error message names the order: "order ord-...: ...". */
    char order_id[80] = "", sql[200];
    sscanf(info.message, "order %79[^:]", order_id);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM natomic_barrier WHERE branch = '%s'", order_id);
    int64_t touched = db_int(lab_services_find(&lab->services, "payments")->db_path, sql);
    printf("  payments' barrier rows for %s: %lld (payments never heard of it)\n", order_id, (long long)touched);
    expect(st == NATOMIC_EBUSINESS && strcmp(info.type, "OutOfStock") == 0 && ev == 0 &&
               after.available == before.available && after.balance_ann == before.balance_ann &&
               after.orders_cancelled == before.orders_cancelled + 1 && touched == 0,
           "the out-of-stock order changed nothing, charged nothing and sent no event");
    natsSubscription_Destroy(events);
}

/* Prints the log lines that tell the stories: rollbacks, barrier outcomes, dead letters. */
static void print_service_logs(lab_t *lab)
{
    printf("\nWhat the services logged (rollbacks, compensations, barrier outcomes, dead letters):\n");
    for (int i = 0; i < lab->services.count; i++) {
        FILE *f = fopen(lab->services.svc[i].proc.log_path, "r");
        char line[512];
        while (f != NULL && fgets(line, sizeof line, f) != NULL)
            if (strstr(line, "rolled back") || strstr(line, "barrier") || strstr(line, "DEAD LETTER") ||
                strstr(line, "compensating") || strstr(line, "cancelled"))
                printf("  %-13s| %s", lab->services.svc[i].name, line);
        if (f != NULL)
            fclose(f);
    }
}

static int demo(bool keep)
{
    if (keep)
        setenv("NATOMIC_KEEP", "1", 1);
    printf("nats-atomicity demo: rollback and dispatch commands over a real NATS\n\n");
    lab_t lab;
    if (lab_up(&lab) != 0)
        return 1;
    printf("* nats-server on %s (JetStream in %s)\n", lab.nats.url, lab.nats.dir);
    printf("* services up:");
    for (int i = 0; i < lab.services.count; i++)
        printf(" %s", lab.services.svc[i].name);
    printf(" (logs and databases in %s)\n", lab.nats.dir);

    demo_conversions(&lab);
    demo_saga(&lab);
    lab_services_stop(&lab.services); /* flushes the logs */
    print_service_logs(&lab);

    printf("\nSummary: %s\n", failures == 0 ? "every promise held" : "SOME PROMISES WERE BROKEN (see !! above)");
    if (keep)
        printf("kept: %s\n", lab.nats.dir);
    lab_down(&lab);
    nats_Close();
    return failures == 0 ? 0 : 1;
}

/* ---- with -------------------------------------------------------------- */

/* execv needs a path: looks cmd up on PATH; 0 or -1. */
static int find_on_path(char *out, size_t cap, const char *cmd)
{
    if (strchr(cmd, '/') != NULL) {
        snprintf(out, cap, "%s", cmd);
        return 0;
    }
    const char *p = getenv("PATH");
    char *dirs = strdup(p != NULL ? p : "/usr/bin:/bin"), *save = NULL;
    int rc = -1;
    for (char *d = strtok_r(dirs, ":", &save); d != NULL && rc != 0; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, cap, "%s/%s", d, cmd);
        if (access(out, X_OK) == 0)
            rc = 0;
    }
    free(dirs);
    return rc;
}

/* Starts NATS and the services, runs cmd with NATS_URL set, returns its exit status. */
static int with_services(char **cmd)
{
    char path[1024];
    if (find_on_path(path, sizeof path, cmd[0]) != 0) {
        fprintf(stderr, "natomic-lab: %s: command not found\n", cmd[0]);
        return 127;
    }
    cmd[0] = path;
    lab_t lab;
    if (lab_up(&lab) != 0)
        return 1;
    char env_text[1 + LAB_SERVICE_COUNT][600];
    char *env[2 + LAB_SERVICE_COUNT] = {NULL};
    snprintf(env_text[0], sizeof env_text[0], "NATS_URL=%s", lab.nats.url);
    env[0] = env_text[0];
    for (int i = 0; i < lab.services.count; i++) {
        char upper[32];
        snprintf(upper, sizeof upper, "%s", lab.services.svc[i].name);
        for (char *c = upper; *c; c++)
            *c = (char)(*c - 'a' + 'A');
        snprintf(env_text[i + 1], sizeof env_text[i + 1], "NATOMIC_%s_DB=%s", upper, lab.services.svc[i].db_path);
        env[i + 1] = env_text[i + 1];
    }
    lab_process_t child;
    int rc = 1;
    if (lab_process_start(&child, cmd, NULL, env) == 0) {
        int status = lab_process_stop(&child, 0, 10 * 60 * 1000); /* signal 0: just wait, bounded */
        rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    lab_down(&lab);
    nats_Close();
    return rc;
}

/* natomic-lab run [paths] [options]. */
static int run_command(int argc, char **argv)
{
    runner_options_t opts = {.progress = true};
    natomic_conn_config_t conn = {0};
    char **paths = calloc((size_t)argc + 1, sizeof *paths);
    size_t n = 0;
    int rc = 2;
    if (paths == NULL)
        return 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--filter") == 0 && has_value) {
            opts.filter = argv[++i];
        } else if (strcmp(a, "--report") == 0 && has_value) {
            opts.report_dir = argv[++i];
        } else if (strcmp(a, "--seed") == 0 && has_value) {
            char *end = NULL;
            errno = 0;
            opts.seed = strtoull(argv[++i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || argv[i][0] == '-') {
                fprintf(stderr, "natomic-lab run: --seed wants a non-negative integer, got '%s'\n", argv[i]);
                goto out;
            }
            opts.has_seed = true;
        } else if (strcmp(a, "--jobs") == 0 && has_value) {
            char *end = NULL;
            errno = 0;
            long jobs = strtol(argv[++i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || jobs < 1 || jobs > 64) {
                fprintf(stderr, "natomic-lab run: --jobs wants a number from 1 to 64, got '%s'\n", argv[i]);
                goto out;
            }
            opts.jobs = (int)jobs;
        } else if (strcmp(a, "--keep") == 0) {
            opts.keep = true;
        } else if (strcmp(a, "--quiet") == 0) {
            opts.progress = false;
        } else if (strcmp(a, "--node-control") == 0 && has_value) {
            opts.node_control = argv[++i];
        } else if (strcmp(a, "--monitor-port") == 0 && has_value) {
            opts.monitor_ports = argv[++i];
        } else if (strncmp(a, "--", 2) == 0 && has_value && natomic_conn_config_set(&conn, a, argv[i + 1]) == NATOMIC_OK) {
            i++; /* --server, --user, --password, --token, --creds, --tls*: an outside NATS */
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (a[0] == '-') {
            fprintf(stderr, "natomic-lab run: unknown option '%s' (or it lacks its value)\n", a);
            usage(stderr);
            goto out;
        } else {
            paths[n++] = (char *)a;
        }
    }
    if (n == 0)
        paths[n++] = "scenarios";
    if (conn.url != NULL || conn.user != NULL || conn.token != NULL || conn.creds_file != NULL || conn.tls_ca != NULL ||
        conn.nkey_file != NULL) {
        if (conn.url == NULL) {
            fprintf(stderr, "natomic-lab run: credentials without --server: each story starts its own NATS, which "
                            "needs none\n");
            goto out;
        }
        natomic_conn_config_from_env(&conn); /* NATS_PASSWORD and the like, for the given server */
        char err[300];
        if (natomic_conn_config_check(&conn, err, sizeof err) != NATOMIC_OK) {
            fprintf(stderr, "natomic-lab run: %s\n", err);
            goto out;
        }
        opts.nats = &conn;
    } else if (opts.node_control != NULL || opts.monitor_ports != NULL) {
        fprintf(stderr, "natomic-lab run: --node-control and --monitor-port go with --server (an outside NATS)\n");
        goto out;
    }
    if (opts.node_control != NULL && access(opts.node_control, X_OK) != 0) {
        fprintf(stderr, "natomic-lab run: --node-control %s: not an executable program\n", opts.node_control);
        goto out;
    }
    rc = runner_run(paths, n, &opts);
out:
    free(paths);
    nats_Close();
    return rc;
}

/* A whole number from lo to hi for option `name`; false after a message. */
static bool number_arg(const char *cmd, const char *name, const char *text, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "natomic-lab %s: %s wants a number from %ld to %ld, got '%s'\n", cmd, name, lo, hi, text);
        return false;
    }
    *out = v;
    return true;
}

/* natomic-lab explore [paths] [options]. */
static int explore_command(int argc, char **argv)
{
    explore_options_t o = {.modes = EXPLORE_MEMORY | EXPLORE_DURABLE,
                           .actions = EXPLORE_ALL_ACTIONS,
                           .restart_after_ms = EXPLORE_RESTART_AFTER_MS,
                           .cell_limit_s = EXPLORE_CELL_LIMIT_S,
                           .time_limit_s = EXPLORE_TIME_LIMIT_S,
                           .progress = true};
    char **paths = calloc((size_t)argc + 1, sizeof *paths);
    char command[2048] = "natomic-lab explore";
    size_t n = 0, used = strlen(command);
    int rc = 2;
    if (paths == NULL)
        return 1;
    for (int i = 0; i < argc; i++) {
        int w = snprintf(command + used, sizeof command - used, " %s", argv[i]);
        used += w > 0 && (size_t)w < sizeof command - used ? (size_t)w : 0;
    }
    o.command = command;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        long v = 0;
        char err[200];
        if (strcmp(a, "--mode") == 0 && has_value) {
            const char *m = argv[++i];
            if (strcmp(m, "memory") == 0)
                o.modes = EXPLORE_MEMORY;
            else if (strcmp(m, "durable") == 0)
                o.modes = EXPLORE_DURABLE;
            else if (strcmp(m, "both") == 0)
                o.modes = EXPLORE_MEMORY | EXPLORE_DURABLE;
            else {
                fprintf(stderr, "natomic-lab explore: --mode is memory, durable or both, not '%s'\n", m);
                goto out;
            }
        } else if (strcmp(a, "--actions") == 0 && has_value) {
            if (explore_parse_actions(argv[++i], &o.actions, err, sizeof err) != 0) {
                fprintf(stderr, "natomic-lab explore: --actions: %s\n", err);
                goto out;
            }
        } else if (strcmp(a, "--points") == 0 && has_value) {
            o.points = argv[++i];
        } else if (strcmp(a, "--cell") == 0 && has_value) {
            o.cell = argv[++i];
        } else if (strcmp(a, "--json") == 0 && has_value) {
            o.json_path = argv[++i];
        } else if (strcmp(a, "--report") == 0 && has_value) {
            o.report_dir = argv[++i];
        } else if (strcmp(a, "--jobs") == 0 && has_value) {
            if (!number_arg("explore", a, argv[++i], 1, 64, &v))
                goto out;
            o.jobs = (int)v;
        } else if (strcmp(a, "--seed") == 0 && has_value) {
            char *end = NULL;
            errno = 0;
            o.seed = strtoull(argv[++i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || argv[i][0] == '-') {
                fprintf(stderr, "natomic-lab explore: --seed wants a non-negative integer, got '%s'\n", argv[i]);
                goto out;
            }
            o.has_seed = true;
        } else if (strcmp(a, "--restart-after") == 0 && has_value) {
            if (!number_arg("explore", a, argv[++i], 0, 60000, &v))
                goto out;
            o.restart_after_ms = (int)v;
        } else if (strcmp(a, "--cell-limit") == 0 && has_value) {
            if (!number_arg("explore", a, argv[++i], 10, 3600, &v))
                goto out;
            o.cell_limit_s = (int)v;
        } else if (strcmp(a, "--time-limit") == 0 && has_value) {
            if (!number_arg("explore", a, argv[++i], 10, 7 * 24 * 3600, &v))
                goto out;
            o.time_limit_s = (int)v;
        } else if (strcmp(a, "--keep") == 0) {
            o.keep = true;
        } else if (strcmp(a, "--quiet") == 0) {
            o.progress = false;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (a[0] == '-') {
            fprintf(stderr, "natomic-lab explore: unknown option '%s' (or it lacks its value)\n", a);
            usage(stderr);
            goto out;
        } else {
            paths[n++] = (char *)a;
        }
    }
    if (n == 0) {
        fprintf(stderr, "natomic-lab explore: give a story, e.g. natomic-lab explore scenarios/saga/confirmed-order.yaml\n");
        goto out;
    }
    rc = explore_run(paths, n, &o);
out:
    free(paths);
    nats_Close();
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "demo") == 0) {
        bool keep = false;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--keep") == 0) {
                keep = true;
            } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                usage(stdout);
                return 0;
            } else {
                fprintf(stderr, "natomic-lab demo: unknown option '%s'\n", argv[i]);
                usage(stderr);
                return 2;
            }
        }
        return demo(keep);
    }
    if (strcmp(cmd, "run") == 0)
        return run_command(argc - 2, argv + 2);
    if (strcmp(cmd, "explore") == 0)
        return explore_command(argc - 2, argv + 2);
    if (strcmp(cmd, "check") == 0) {
        if (argc < 3) {
            fprintf(stderr, "natomic-lab check: give scenario files or folders, e.g. natomic-lab check scenarios\n");
            return 2;
        }
        return scenario_check_paths(&argv[2], (size_t)(argc - 2));
    }
    if (strcmp(cmd, "with") == 0) {
        int i = 2;
        if (i < argc && strcmp(argv[i], "--") == 0)
            i++;
        if (i >= argc) {
            fprintf(stderr, "natomic-lab with: give a command to run, e.g. natomic-lab with -- node client.mjs\n");
            return 2;
        }
        return with_services(&argv[i]);
    }
    fprintf(stderr, "natomic-lab: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
