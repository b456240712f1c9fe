/*
 * service_options.c -- command-line parsing shared by the example
 * services, so every binary answers --help and refuses bad options the
 * same way.
 */
#include "service_options.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <natomic.h>

static void usage(FILE *f, const char *prog, const char *service, const char *about)
{
    fprintf(f,
            "Usage: %s [--nats URL] [--db PATH] [--workers N] [--mode memory|durable] [--instance NAME]\n"
            "          [--user NAME [--password P] | --token T | --creds FILE] [--tlscert FILE --tlskey FILE]\n"
            "          [--tlsca FILE]\n"
            "\n%s\n\n"
            "Options:\n"
            "  --nats URL        the same as --server\n"
            "%s"
            "  --db PATH         SQLite file of this service (default: ./%s.db)\n"
            "  --workers N       calls handled at once, 1..1024 (default: 10)\n"
            "  --mode MODE       durable: saga log, recovery, outbox and durable consumers on\n"
            "                    JetStream (the server needs -js); memory: commands live in the\n"
            "                    process, as in nameko-atomicity (default: $NATOMIC_MODE or durable)\n"
            "  --instance NAME   this instance's name in the saga log, [A-Za-z0-9_-], up to 64;\n"
            "                    a restarted process with its old name recovers its sagas at once\n"
            "                    (default: $NATOMIC_INSTANCE or a random name)\n"
            "  -h, --help        show this help\n"
            "\nThe service answers on %s.<method> and on NATS micro discovery ($SRV.PING|INFO|STATS).\n"
            "A request with Natomic-Idempotency-Key replays the first outcome of that key.\n"
            "SIGTERM or SIGINT stops it gracefully: calls in flight finish first.\n"
            "Log level: NATOMIC_LOG=error|warn|info|debug (default info).\n",
            prog, about, natomic_conn_config_help(), service, service);
}

/* [A-Za-z0-9_-]{1,64} */
static bool valid_instance(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-'))
            return false;
    return true;
}

int service_options_parse(service_options_t *out, int argc, char **argv, const char *service, const char *about,
                          int *exit_now)
{
    static char default_db[256];
    snprintf(default_db, sizeof default_db, "%s.db", service);
    service_options_t o = {.nats_url = natomic_default_url(), .db_path = default_db, .workers = 10,
                           .mode = NATOMIC_MODE_DURABLE, .instance = NULL};
    static const struct option longopts[] = {{"nats", required_argument, NULL, 'n'},
                                             NATOMIC_CONN_LONGOPTS('c'), /* --server, credentials, TLS */
                                             {"db", required_argument, NULL, 'd'},
                                             {"workers", required_argument, NULL, 'w'},
                                             {"mode", required_argument, NULL, 'm'},
                                             {"instance", required_argument, NULL, 'i'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    *exit_now = 0;
    const char *mode = getenv("NATOMIC_MODE"), *mode_from = "NATOMIC_MODE";
    const char *instance = getenv("NATOMIC_INSTANCE"), *instance_from = "NATOMIC_INSTANCE";
    if (mode != NULL && *mode == '\0')
        mode = NULL;
    if (instance != NULL && *instance == '\0')
        instance = NULL;
    optind = 1;
    int c;
    int longindex = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, &longindex)) != -1) {
        switch (c) {
        case 'n':
            o.nats_url = optarg;
            break;
        case 'd':
            o.db_path = optarg;
            break;
        case 'c': /* a connection flag: --server, credentials, TLS (natomic_conn_config_set) */
            if (strcmp(longopts[longindex].name, "server") == 0)
                o.nats_url = optarg; /* as --nats */
            else
                natomic_conn_config_set(&o.conn, longopts[longindex].name, optarg);
            break;
        case 'w': {
            char *end = NULL;
            long n = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || n < 1 || n > 1024) {
                fprintf(stderr, "%s: --workers wants a number from 1 to 1024, got '%s'\n", argv[0], optarg);
                *exit_now = 1;
                return 2;
            }
            o.workers = (int)n;
            break;
        }
        case 'm':
            mode = optarg;
            mode_from = "--mode";
            break;
        case 'i':
            instance = optarg;
            instance_from = "--instance";
            break;
        case 'h':
            usage(stdout, argv[0], service, about);
            *exit_now = 1;
            return 0;
        default:
            fprintf(stderr, "Try '%s --help'.\n", argv[0]);
            *exit_now = 1;
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", argv[0], argv[optind], argv[0]);
        *exit_now = 1;
        return 2;
    }
    if (*o.db_path == '\0' || *o.nats_url == '\0') {
        fprintf(stderr, "%s: --db and --nats must not be empty\n", argv[0]);
        *exit_now = 1;
        return 2;
    }
    if (mode != NULL && natomic_mode_parse(&o.mode, mode) != NATOMIC_OK) {
        fprintf(stderr, "%s: %s wants memory or durable, got '%s'\n", argv[0], mode_from, mode);
        *exit_now = 1;
        return 2;
    }
    if (instance != NULL && !valid_instance(instance)) {
        fprintf(stderr, "%s: %s wants 1 to 64 characters of [A-Za-z0-9_-], got '%s'\n", argv[0], instance_from,
                instance);
        *exit_now = 1;
        return 2;
    }
    o.instance = instance;
    /* The flags first, then NATS_* for what they left unset; a bad file is refused before connecting. */
    o.conn.url = o.nats_url;
    natomic_conn_config_from_env(&o.conn);
    char err[512];
    if (natomic_conn_config_check(&o.conn, err, sizeof err) != NATOMIC_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        *exit_now = 1;
        return 2;
    }
    *out = o;
    return 0;
}
