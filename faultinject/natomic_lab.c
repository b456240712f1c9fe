/*
 * natomic-lab -- the lab's command line.
 *
 *   natomic-lab demo     start an embedded nats-server and the conversions
 *                        service, make one successful and one failing call,
 *                        and show what was saved, rolled back and published.
 *   natomic-lab with -- COMMAND...
 *                        start the same, run COMMAND with NATS_URL and
 *                        NATOMIC_CONVERSIONS_DB set, stop everything, exit
 *                        with COMMAND's status (clients in other languages
 *                        are tested this way).
 *
 * The scenario runner (run, check) joins this program with the lab issue.
 * Everything the demo starts is stopped before it exits, and dies with it
 * if it is killed (see embedded_nats.c and process.c).
 */
#include <getopt.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <natomic.h>

#include "conversions.pb-c.h"
#include "embedded_nats.h"
#include "process.h"

static void usage(FILE *f)
{
    fputs("Usage: natomic-lab <command> [options]\n"
          "\n"
          "Commands:\n"
          "  demo          start NATS and the conversions service, show one successful\n"
          "                and one rolled-back call and the events that left\n"
          "  with -- CMD   start NATS and the conversions service, run CMD with NATS_URL\n"
          "                and NATOMIC_CONVERSIONS_DB set, stop everything; exit with CMD's status\n"
          "  help          show this help\n"
          "\n"
          "Options of demo:\n"
          "  --keep        keep the temporary folder (NATS store, service log, database)\n"
          "\n"
          "Environment: NATOMIC_NATS_SERVER (nats-server binary), NATOMIC_LOG (service log level).\n",
          f);
}

static int64_t count_rows(const char *db_path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT count(*) FROM history", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* Calls inches_to_cm and prints what came back. */
static void call(natsConnection *nc, double inches)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = inches;
    ProtobufCMessage *reply = NULL;
    natomic_call_info_t info;
    printf("\n  -> conversions.inches_to_cm { inches: %g }\n", inches);
    natomic_status_t st = natomic_request(&reply, nc, "conversions.inches_to_cm", &req.base,
                                          &conversions__inches_to_cm_reply__descriptor, 5000, &info);
    if (st == NATOMIC_OK) {
        printf("  <- reply { cm: %g }   Natomic-Dispatch: %s, Natomic-Rollback: %s\n",
               ((Conversions__InchesToCmReply *)reply)->cm, natomic_outcome_name(info.dispatch),
               natomic_outcome_name(info.rollback));
        protobuf_c_message_free_unpacked(reply, NULL);
    } else if (info.code != 0) {
        printf("  <- error %d %s: %s\n     Natomic-Rollback: %s, Natomic-Dispatch: %s\n", info.code, info.type,
               info.message, natomic_outcome_name(info.rollback), natomic_outcome_name(info.dispatch));
    } else {
        printf("  <- no reply: %s\n", natomic_strerror(st));
    }
}

static int print_events(natsSubscription *sub)
{
    int n = 0;
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, sub, 300) == NATS_OK) {
        Conversions__Converted *ev = conversions__converted__unpack(
            NULL, (size_t)natsMsg_GetDataLength(m), (const uint8_t *)natsMsg_GetData(m));
        const char *tx = NULL;
        natsMsgHeader_Get(m, NATOMIC_HDR_TX, &tx);
        if (ev != NULL)
            printf("  event %s { inches: %g, cm: %g, conversion_id: %lld }  tx %.8s...\n", natsMsg_GetSubject(m),
                   ev->inches, ev->cm, (long long)ev->conversion_id, tx ? tx : "?");
        conversions__converted__free_unpacked(ev, NULL);
        natsMsg_Destroy(m);
        n++;
    }
    return n;
}

static int wait_for_service(natsConnection *nc, bool show)
{
    for (int i = 0; i < 100; i++) {
        natsMsg *r = NULL;
        if (natsConnection_RequestString(&r, nc, "$SRV.PING.conversions", "", 100) == NATS_OK) {
            if (show)
                printf("  $SRV.PING.conversions -> %.*s\n", natsMsg_GetDataLength(r), natsMsg_GetData(r));
            natsMsg_Destroy(r);
            return 0;
        }
        usleep(50 * 1000);
    }
    return -1;
}

static int demo(bool keep)
{
    embedded_nats_t ns;
    if (keep)
        setenv("NATOMIC_KEEP", "1", 1);
    printf("nats-atomicity demo: the seed's two examples, in C, over a real NATS\n\n");
    if (embedded_nats_start(&ns) != 0)
        return 1;
    printf("* nats-server on %s (JetStream in %s)\n", ns.url, ns.dir);

    char bin[1024], db[400], log[400];
    if (lab_sibling_path(bin, sizeof bin, "../services/conversions/conversions") != 0) {
        embedded_nats_stop(&ns);
        return 1;
    }
    snprintf(db, sizeof db, "%s/conversions.db", ns.dir);
    snprintf(log, sizeof log, "%s/conversions.log", ns.dir);
    char *argv[] = {bin, "--nats", ns.url, "--db", db, NULL};
    lab_process_t svc;
    int rc = 1;
    natsConnection *nc = NULL;
    natsSubscription *events = NULL;
    if (lab_process_start(&svc, argv, log, NULL) != 0)
        goto out;
    printf("* conversions service started (log: %s)\n", log);
    if (natomic_connect(&nc, ns.url, NULL) != NATOMIC_OK || wait_for_service(nc, true) != 0) {
        fprintf(stderr, "demo: the conversions service did not come up; see %s\n", log);
        goto out;
    }
    natsConnection_SubscribeSync(&events, nc, "events.conversions.>");
    natsConnection_Flush(nc);

    printf("\n1. A successful call: saved, no rollback, the event leaves after commit.\n");
    call(nc, 10);
    printf("  history rows: %lld\n", (long long)count_rows(db));
    int n1 = print_events(events);

    printf("\n2. A failing call: the handler saves, then fails with InvalidLength;\n"
           "   the rollback deletes the row and no event leaves.\n");
    call(nc, -3);
    printf("  history rows: %lld (the failed call's row was rolled back)\n", (long long)count_rows(db));
    int n2 = print_events(events);
    if (n2 == 0)
        printf("  no event (as promised: dispatch only after success)\n");

    printf("\n3. What the service said in its log:\n");
    lab_process_stop(&svc, SIGTERM, 5000);
    FILE *f = fopen(log, "r");
    char line[512];
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        printf("  | %s", line);
    if (f != NULL)
        fclose(f);

    bool ok = n1 == 1 && n2 == 0 && count_rows(db) == 1;
    printf("\nSummary: %s (events: %d after success, %d after failure; history rows: %lld)\n",
           ok ? "as promised" : "NOT AS PROMISED", n1, n2, (long long)count_rows(db));
    rc = ok ? 0 : 1;
out:
    natsSubscription_Destroy(events);
    natsConnection_Destroy(nc);
    lab_process_stop(&svc, SIGTERM, 5000);
    embedded_nats_stop(&ns);
    if (keep)
        printf("kept: %s\n", ns.dir);
    nats_Close();
    return rc;
}

/* Starts NATS and conversions, runs argv with NATS_URL set, returns its exit status. */
static int with_services(char **cmd)
{
    embedded_nats_t ns;
    if (embedded_nats_start(&ns) != 0)
        return 1;
    char bin[1024], db[400], log[400];
    snprintf(db, sizeof db, "%s/conversions.db", ns.dir);
    snprintf(log, sizeof log, "%s/conversions.log", ns.dir);
    lab_process_t svc = {0}, child = {0};
    natsConnection *nc = NULL;
    int rc = 1;
    if (lab_sibling_path(bin, sizeof bin, "../services/conversions/conversions") != 0)
        goto out;
    char *argv[] = {bin, "--nats", ns.url, "--db", db, NULL};
    if (lab_process_start(&svc, argv, log, NULL) != 0)
        goto out;
    if (natomic_connect(&nc, ns.url, NULL) != NATOMIC_OK || wait_for_service(nc, false) != 0) {
        fprintf(stderr, "natomic-lab: the conversions service did not come up; see %s\n", log);
        goto out;
    }
    char url_env[128], db_env[450];
    snprintf(url_env, sizeof url_env, "NATS_URL=%s", ns.url);
    snprintf(db_env, sizeof db_env, "NATOMIC_CONVERSIONS_DB=%s", db);
    char *env[] = {url_env, db_env, NULL};
    char path[1024];
    if (strchr(cmd[0], '/') == NULL) {
        /* execv needs a path: look the command up on PATH. */
        const char *p = getenv("PATH");
        char *dirs = strdup(p != NULL ? p : "/usr/bin:/bin"), *save = NULL;
        path[0] = '\0';
        for (char *d = strtok_r(dirs, ":", &save); d != NULL; d = strtok_r(NULL, ":", &save)) {
            snprintf(path, sizeof path, "%s/%s", d, cmd[0]);
            if (access(path, X_OK) == 0)
                break;
            path[0] = '\0';
        }
        free(dirs);
        if (path[0] == '\0') {
            fprintf(stderr, "natomic-lab: %s: command not found\n", cmd[0]);
            rc = 127;
            goto out;
        }
        cmd[0] = path;
    }
    if (lab_process_start(&child, cmd, NULL, env) != 0)
        goto out;
    int status = lab_process_stop(&child, 0, 10 * 60 * 1000); /* signal 0: just wait, bounded */
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
out:
    natsConnection_Destroy(nc);
    lab_process_stop(&child, SIGTERM, 2000);
    lab_process_stop(&svc, SIGTERM, 5000);
    embedded_nats_stop(&ns);
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
