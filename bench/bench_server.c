/*
 * bench_server.c -- conversions.inches_to_cm as a program of its own, for
 * natomic-bench's fault-point comparison (DESIGN §3.9, §5).
 *
 * bench/meson.build builds this one source twice, and nothing else
 * differs between the two programs:
 *   - natomic-bench-server: linked statically against the library's
 *     objects as the project builds them (libnatomic_objects.a, the very
 *     objects of libnatomic.so): the fault points are compiled in, and none
 *     is enabled;
 *   - natomic-bench-server-nofp: this file, the conversions service and a
 *     second copy of the library objects, all compiled with
 *     -DNATOMIC_NO_FAULT_POINTS: NATOMIC_FAULT() is compiled out.
 * Both link the library the same way (static, -fPIC, hidden symbols), so
 * the build flag is the only difference natomic-bench measures.
 *
 * It is services/conversions/main.c without the shared option parser
 * (that one links the shared libnatomic, and a process must not carry two
 * copies of the library): --nats URL, --db PATH, --workers N. It serves
 * until SIGTERM or SIGINT, then finishes the calls in flight and exits 0.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include <natomic.h>

#include "conversions_service.h"
#include "conversions_store.h"

#ifdef NATOMIC_NO_FAULT_POINTS
#define BUILD_NAME "natomic-bench-server-nofp (fault points compiled out)"
#else
#define BUILD_NAME "natomic-bench-server (fault points compiled in)"
#endif

static void usage(FILE *f)
{
    fputs("Usage: " BUILD_NAME "\n"
          "       [--nats URL] [--db PATH] [--workers N]\n"
          "\n"
          "conversions.inches_to_cm for natomic-bench, which starts it as a child process;\n"
          "not meant to be run by hand. Serves until SIGTERM or SIGINT.\n"
          "\n"
          "  --nats URL     NATS server (default: $NATS_URL or nats://127.0.0.1:4222)\n"
          "  --db PATH      SQLite file (default: ./bench-conversions.db)\n"
          "  --workers N    worker threads, 1..1024 (default: 10)\n",
          f);
}

int main(int argc, char **argv)
{
    const char *url = natomic_default_url();
    const char *db = "bench-conversions.db";
    int workers = 10;
    static const struct option longopts[] = {{"nats", required_argument, NULL, 'n'},
                                             {"db", required_argument, NULL, 'd'},
                                             {"workers", required_argument, NULL, 'w'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            url = optarg;
            break;
        case 'd':
            db = optarg;
            break;
        case 'w': {
            char *end = NULL;
            long n = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || n < 1 || n > 1024) {
                fprintf(stderr, "%s: --workers wants a number from 1 to 1024, got '%s'\n", argv[0], optarg);
                return 2;
            }
            workers = (int)n;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return 2;
    }

    conversions_store_t *store = NULL;
    if (conversions_store_open(&store, db) != 0)
        return 1;
    natsConnection *nc = NULL;
    natomic_service_t *svc = NULL;
    natomic_status_t st = natomic_connect(&nc, url, NULL);
    if (st == NATOMIC_OK) {
        /* The same configuration as natomic-bench's in-process natomic server. */
        natomic_service_config_t config = {.name = "conversions", .max_workers = workers};
        st = natomic_service_new(&svc, nc, &config);
    }
    if (st == NATOMIC_OK)
        st = conversions_service_register(svc, store);
    if (st == NATOMIC_OK)
        st = natomic_service_run(svc);
    if (st != NATOMIC_OK)
        fprintf(stderr, "%s: %s (%s)\n", argv[0], natomic_strerror(st), url);
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
    conversions_store_close(store);
    nats_Close();
    return st == NATOMIC_OK ? 0 : 1;
}
