/*
 * natomic-bench -- what libnatomic costs on a real call, against the same
 * call written with raw nats.c (DESIGN §5, memory mode).
 *
 * What is measured. conversions.inches_to_cm, served two ways:
 *   - "natomic": a natomic_service_t named "conversions" with
 *     conversions_service_register() -- the library's real path: call
 *     context, a rollback command registered and dropped, a dispatch
 *     command that publishes events.conversions.converted, outcome headers;
 *   - "raw nats.c": raw_conversions.c, the same handler by hand: decode,
 *     save, publish the event, reply; on failure delete and reply with the
 *     error headers.
 * Both save one SQLite row and publish one event per call. For each server:
 *   - latency: sequential calls from one thread (median and p99, µs);
 *   - throughput: N concurrent clients (calls/s).
 *
 * How. One nats-server (embedded_nats: a real one, loopback, free port)
 * serves the whole run. Each measurement starts one server on its own
 * connection (natomic_connect: SendAsap on) with a fresh SQLite file in a
 * temporary folder, checks that a negative length is refused with
 * InvalidLength, measures, stops the server, and checks that the history
 * holds one row and the event subscriber saw one event per successful
 * call. Only one server runs at a time, and rounds interleave (raw,
 * natomic, raw, natomic, ...) so that drift of the machine (frequency,
 * neighbours, page cache) hits both alike. Each figure is the median over
 * rounds; the ratios are taken between those medians.
 *
 * Why it is fair. The client code is the same for both (natomic_request on
 * the same connection), so only the server differs. Both servers use the
 * same concurrency: `workers` threads (default 10, libnatomic's default
 * max_workers) pulling from one synchronous queue subscription with
 * natsSubscription_NextMsg(), unlimited pending limits, the same
 * connection options. The raw server gets what a careful author would add
 * by hand (a transaction id header, error headers, the undo on failure)
 * and nothing the library adds beyond that (contexts, command lists,
 * retries, deadlines, discovery, outcome headers) -- that is the cost
 * being measured.
 *
 * Bounds. Counts are fixed by the options; every call times out after 5 s;
 * the whole run stops after --max-seconds (default 300) or on SIGINT or
 * SIGTERM, and always stops the servers and nats-server and removes its
 * temporary folders. The first failed call ends the run with exit status
 * 1: a benchmark of failures measures nothing. A missed target is a figure,
 * not a failure: the exit status is 0 (timed assertions belong nowhere,
 * least of all in tests).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <natomic.h>

#include "bench_client.h"
#include "conversions_service.h"
#include "conversions_store.h"
#include "embedded_nats.h"
#include "raw_conversions.h"

#define LATENCY_TARGET 1.10    /* natomic/raw median latency at most this (DESIGN §5) */
#define THROUGHPUT_TARGET 0.90 /* natomic/raw throughput at least this            */
#define EVENT_WAIT_MS 5000

typedef enum server_kind { SERVER_RAW, SERVER_NATOMIC, SERVER_COUNT } server_kind_t;

static const char *const server_name[SERVER_COUNT] = {"raw nats.c", "natomic"};
static const char *const server_key[SERVER_COUNT] = {"raw", "natomic"};

typedef struct options {
    int calls;            /* sequential calls timed for latency            */
    int warmup;           /* untimed calls before each phase               */
    int throughput_calls; /* calls timed for throughput                    */
    int concurrency;      /* client threads for throughput                 */
    int rounds;           /* measurements per server                       */
    int workers;          /* server threads, both servers                  */
    int max_seconds;      /* time budget of the whole run                  */
    const char *json;     /* NULL: no JSON file                            */
} options_t;

/* One measurement of one server. */
typedef struct figures {
    double median_us;
    double p99_us;
    double calls_per_s;
} figures_t;

/* What every measurement shares. */
typedef struct bench {
    options_t opt;
    const char *url;
    char dir[256];                 /* temporary folder of the SQLite files */
    natsConnection *client;        /* the callers' connection              */
    natsConnection *event_nc;      /* the event subscriber's connection    */
    natsSubscription *event_sub;
    atomic_long events_seen;
    figures_t *results[SERVER_COUNT]; /* [server][round] */
} bench_t;

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("Usage: natomic-bench [options]\n"
          "\n"
          "Measures conversions.inches_to_cm served by libnatomic and by the same handler\n"
          "written with raw nats.c, one server at a time, rounds interleaved, against one\n"
          "embedded nats-server on loopback. Prints median and p99 latency and throughput\n"
          "for each, and the ratios natomic/raw against the targets of DESIGN §5.\n"
          "\n"
          "Options:\n"
          "  --calls N             sequential calls timed for latency (default 2000)\n"
          "  --warmup N            untimed calls before each phase (default 200)\n"
          "  --throughput-calls N  calls timed for throughput (default 5000)\n"
          "  --concurrency N       concurrent clients for throughput (default 32)\n"
          "  --rounds N            measurements per server, interleaved (default 3)\n"
          "  --workers N           server threads, both servers (default 10)\n"
          "  --max-seconds N       time budget of the whole run (default 300)\n"
          "  --quick               smoke run: 200 calls, 20 warm-up, 500 throughput calls,\n"
          "                        1 round (options given explicitly still win)\n"
          "  --json FILE           also write the figures to FILE as JSON\n"
          "  -h, --help            show this help\n"
          "\n"
          "Progress goes to stderr, the table to stdout. Exit status: 0 when the run\n"
          "completed (whether or not the targets were met), 1 when it failed or was\n"
          "stopped, 2 for bad options.\n"
          "\n"
          "Environment: NATOMIC_NATS_SERVER (nats-server binary), NATOMIC_LOG (the\n"
          "library's log level; the benchmark sets warn unless given), TMPDIR.\n",
          f);
}

/* Parses a whole decimal integer in [min, max] into *out; false with a message otherwise. */
static bool parse_count(int *out, const char *option, const char *text, int min, int max)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "natomic-bench: %s needs a whole number from %d to %d, got '%s'\n", option, min, max,
                text);
        return false;
    }
    *out = (int)v;
    return true;
}

/* Whether the JSON file can be written, checked before a long run rather than after it. */
static bool json_path_writable(const char *path)
{
    char copy[PATH_MAX];
    if (strlen(path) >= sizeof copy) {
        fprintf(stderr, "natomic-bench: --json path is too long\n");
        return false;
    }
    strcpy(copy, path);
    const char *dir = dirname(copy);
    if (access(dir, W_OK) != 0) {
        fprintf(stderr, "natomic-bench: --json %s: cannot write in %s: %s\n", path, dir, strerror(errno));
        return false;
    }
    return true;
}

enum {
    OPT_CALLS = 1000,
    OPT_WARMUP,
    OPT_THROUGHPUT_CALLS,
    OPT_CONCURRENCY,
    OPT_ROUNDS,
    OPT_WORKERS,
    OPT_MAX_SECONDS,
    OPT_QUICK,
    OPT_JSON,
};

/* Fills *opt from argv: 0 to run, 1 when help was shown, 2 for bad options (message printed). */
static int parse_options(options_t *opt, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"calls", required_argument, NULL, OPT_CALLS},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"throughput-calls", required_argument, NULL, OPT_THROUGHPUT_CALLS},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"max-seconds", required_argument, NULL, OPT_MAX_SECONDS},
        {"quick", no_argument, NULL, OPT_QUICK},
        {"json", required_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* -1: not given; applied over the defaults (or --quick's) at the end. */
    options_t given = {.calls = -1, .warmup = -1, .throughput_calls = -1, .concurrency = -1, .rounds = -1,
                       .workers = -1, .max_seconds = -1, .json = NULL};
    bool quick = false;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case OPT_CALLS:
            ok = parse_count(&given.calls, "--calls", optarg, 1, 10000000);
            break;
        case OPT_WARMUP:
            ok = parse_count(&given.warmup, "--warmup", optarg, 0, 10000000);
            break;
        case OPT_THROUGHPUT_CALLS:
            ok = parse_count(&given.throughput_calls, "--throughput-calls", optarg, 1, 10000000);
            break;
        case OPT_CONCURRENCY:
            ok = parse_count(&given.concurrency, "--concurrency", optarg, 1, 1024);
            break;
        case OPT_ROUNDS:
            ok = parse_count(&given.rounds, "--rounds", optarg, 1, 100);
            break;
        case OPT_WORKERS:
            ok = parse_count(&given.workers, "--workers", optarg, 1, 1024);
            break;
        case OPT_MAX_SECONDS:
            ok = parse_count(&given.max_seconds, "--max-seconds", optarg, 1, 24 * 3600);
            break;
        case OPT_QUICK:
            quick = true;
            break;
        case OPT_JSON:
            if (*optarg == '\0') {
                fprintf(stderr, "natomic-bench: --json needs a file name\n");
                ok = false;
            }
            given.json = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            fprintf(stderr, "natomic-bench: %s needs a value (see --help)\n", argv[optind - 1]);
            ok = false;
            break;
        default:
            fprintf(stderr, "natomic-bench: unknown option '%s' (see --help)\n", argv[optind - 1]);
            ok = false;
            break;
        }
        if (!ok)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "natomic-bench: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    static const options_t defaults = {.calls = 2000, .warmup = 200, .throughput_calls = 5000, .concurrency = 32,
                                       .rounds = 3, .workers = 10, .max_seconds = 300};
    static const options_t quick_defaults = {.calls = 200, .warmup = 20, .throughput_calls = 500, .concurrency = 32,
                                             .rounds = 1, .workers = 10, .max_seconds = 300};
    *opt = quick ? quick_defaults : defaults;
    if (given.calls >= 0)
        opt->calls = given.calls;
    if (given.warmup >= 0)
        opt->warmup = given.warmup;
    if (given.throughput_calls >= 0)
        opt->throughput_calls = given.throughput_calls;
    if (given.concurrency >= 0)
        opt->concurrency = given.concurrency;
    if (given.rounds >= 0)
        opt->rounds = given.rounds;
    if (given.workers >= 0)
        opt->workers = given.workers;
    if (given.max_seconds >= 0)
        opt->max_seconds = given.max_seconds;
    opt->json = given.json;
    if (opt->json != NULL && !json_path_writable(opt->json))
        return 2;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Events and the temporary folder                                     */
/* ------------------------------------------------------------------ */

static void on_event(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    bench_t *b = closure;
    atomic_fetch_add(&b->events_seen, 1);
    natsMsg_Destroy(msg);
}

/* Waits until `expected` events arrived (bounded); true when exactly that many did. */
static bool events_arrived(bench_t *b, long expected)
{
    int64_t until = bench_now_ns() + (int64_t)EVENT_WAIT_MS * 1000000;
    while (atomic_load(&b->events_seen) < expected && bench_now_ns() < until) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* Anything a server published twice has had time to arrive too. */
    natsConnection_FlushTimeout(b->event_nc, 1000);
    long seen = atomic_load(&b->events_seen);
    if (seen != expected)
        fprintf(stderr, "natomic-bench: expected %ld events, saw %ld\n", expected, seen);
    return seen == expected;
}

/* Removes a SQLite database and its WAL companions; missing files are fine. */
static void remove_database(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        if (unlink(p) != 0 && errno != ENOENT)
            fprintf(stderr, "natomic-bench: cannot remove %s: %s\n", p, strerror(errno));
    }
}

/* ------------------------------------------------------------------ */
/* One measurement                                                     */
/* ------------------------------------------------------------------ */

/* The servers behind one measurement: exactly one of svc and raw is set once started. */
typedef struct server {
    server_kind_t kind;
    natsConnection *nc;
    conversions_store_t *store;
    natomic_service_t *svc;
    raw_conversions_t *raw;
} server_t;

/* Starts `s->kind` on its own connection and store at `db`. 0, or -1 with a message (release with server_stop). */
static int server_start(server_t *s, const bench_t *b, const char *db)
{
    if (conversions_store_open(&s->store, db) != 0)
        return -1;
    natomic_status_t st = natomic_connect(&s->nc, b->url, NULL);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "natomic-bench: cannot connect the server to %s: %s\n", b->url, natomic_strerror(st));
        return -1;
    }
    if (s->kind == SERVER_RAW)
        return raw_conversions_start(&s->raw, s->nc, s->store, b->opt.workers);

    natomic_service_config_t config = {.name = "conversions", .max_workers = b->opt.workers};
    st = natomic_service_new(&s->svc, s->nc, &config);
    if (st == NATOMIC_OK)
        st = conversions_service_register(s->svc, s->store);
    if (st == NATOMIC_OK)
        st = natomic_service_start(s->svc);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "natomic-bench: cannot start the natomic service: %s\n", natomic_strerror(st));
        return -1;
    }
    return 0;
}

/* Stops the server (calls in flight finish) and closes its connection; keeps the store open. */
static void server_stop(server_t *s)
{
    natomic_service_destroy(s->svc);
    s->svc = NULL;
    raw_conversions_stop(s->raw);
    s->raw = NULL;
    natsConnection_Destroy(s->nc);
    s->nc = NULL;
}

/* Starts one server, checks it, measures it, stops it, checks what it left. 0 or -1. */
static int measure(bench_t *b, server_kind_t kind, int round, figures_t *out)
{
    const options_t *o = &b->opt;
    char db[400];
    snprintf(db, sizeof db, "%s/%s-%d.db", b->dir, server_key[kind], round);
    server_t s = {.kind = kind};
    figures_t f = {0};
    bench_latency_t lat = {0};
    int64_t t0 = bench_now_ns();
    atomic_store(&b->events_seen, 0);

    int rc = server_start(&s, b, db);
    if (rc == 0 && !bench_check_refusal(b->client))
        rc = -1;
    if (rc == 0)
        rc = bench_latency_run(&lat, b->client, o->warmup, o->calls);
    if (rc == 0)
        rc = bench_throughput_run(&f.calls_per_s, b->client, o->concurrency, o->warmup, o->throughput_calls);
    server_stop(&s);

    /* Every successful call saved one row and sent one event; the refused one neither. */
    long expected = 2L * o->warmup + o->calls + o->throughput_calls;
    if (rc == 0 && !events_arrived(b, expected))
        rc = -1;
    if (rc == 0) {
        int64_t rows = conversions_store_count(s.store);
        if (rows != expected) {
            fprintf(stderr, "natomic-bench: %s left %lld rows, expected %ld\n", server_name[kind], (long long)rows,
                    expected);
            rc = -1;
        }
    }
    conversions_store_close(s.store);
    remove_database(db);
    if (rc != 0) {
        const char *why = bench_client_stop_reason();
        fprintf(stderr, "natomic-bench: round %d of %s %s\n", round, server_name[kind],
                why != NULL ? "stopped early" : "failed");
        return -1;
    }
    f.median_us = lat.median_us;
    f.p99_us = lat.p99_us;
    fprintf(stderr, "  round %d/%d  %-10s  median %8.1f µs   p99 %8.1f µs   %9.0f calls/s   (%.1f s)\n", round,
            o->rounds, server_name[kind], f.median_us, f.p99_us, f.calls_per_s,
            (double)(bench_now_ns() - t0) / 1e9);
    *out = f;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Report                                                              */
/* ------------------------------------------------------------------ */

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of one field over the rounds; `field` is an offset into figures_t. */
static double median_over_rounds(const figures_t *rounds, int n, size_t field)
{
    double *v = malloc((size_t)n * sizeof *v);
    if (v == NULL)
        return NAN;
    for (int i = 0; i < n; i++)
        memcpy(&v[i], (const char *)&rounds[i] + field, sizeof v[i]);
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    double m = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
    free(v);
    return m;
}

static figures_t summarize(const figures_t *rounds, int n)
{
    return (figures_t){
        .median_us = median_over_rounds(rounds, n, offsetof(figures_t, median_us)),
        .p99_us = median_over_rounds(rounds, n, offsetof(figures_t, p99_us)),
        .calls_per_s = median_over_rounds(rounds, n, offsetof(figures_t, calls_per_s)),
    };
}

typedef struct verdict {
    figures_t server[SERVER_COUNT]; /* medians over rounds */
    double latency_median_ratio;    /* natomic / raw       */
    double latency_p99_ratio;       /* natomic / raw       */
    double throughput_ratio;        /* natomic / raw       */
    bool latency_median_pass;
    bool latency_p99_pass;
    bool throughput_pass;
} verdict_t;

static verdict_t judge(const bench_t *b)
{
    verdict_t v;
    for (int k = 0; k < SERVER_COUNT; k++)
        v.server[k] = summarize(b->results[k], b->opt.rounds);
    const figures_t *raw = &v.server[SERVER_RAW], *nat = &v.server[SERVER_NATOMIC];
    v.latency_median_ratio = nat->median_us / raw->median_us;
    v.latency_p99_ratio = nat->p99_us / raw->p99_us;
    v.throughput_ratio = nat->calls_per_s / raw->calls_per_s;
    v.latency_median_pass = v.latency_median_ratio <= LATENCY_TARGET;
    v.latency_p99_pass = v.latency_p99_ratio <= LATENCY_TARGET;
    v.throughput_pass = v.throughput_ratio >= THROUGHPUT_TARGET;
    return v;
}

static void print_report(const bench_t *b, const verdict_t *v, int port)
{
    const options_t *o = &b->opt;
    printf("\nnatomic-bench: conversions.inches_to_cm, libnatomic vs raw nats.c\n");
    printf("  nats-server on 127.0.0.1:%d, %ld CPUs online, %d worker threads per server\n", port,
           sysconf(_SC_NPROCESSORS_ONLN), o->workers);
    printf("  latency: %d sequential calls after %d warm-up; throughput: %d calls from %d clients\n", o->calls,
           o->warmup, o->throughput_calls, o->concurrency);
    printf("  %d round%s per server, interleaved; each figure is the median over rounds\n\n", o->rounds,
           o->rounds == 1 ? "" : "s");

    printf("  %-12s %12s %12s %20s\n", "server", "median µs", "p99 µs", "throughput calls/s");
    for (int k = 0; k < SERVER_COUNT; k++)
        printf("  %-12s %12.1f %12.1f %20.0f\n", server_name[k], v->server[k].median_us, v->server[k].p99_us,
               v->server[k].calls_per_s);

    if (o->rounds > 1) {
        printf("\n  per round (median µs / p99 µs / calls/s):\n");
        for (int k = 0; k < SERVER_COUNT; k++) {
            printf("    %-11s", server_name[k]);
            for (int r = 0; r < o->rounds; r++)
                printf("  %.1f / %.1f / %.0f", b->results[k][r].median_us, b->results[k][r].p99_us,
                       b->results[k][r].calls_per_s);
            printf("\n");
        }
        /* Neighbouring measurements share the machine's state: their ratio shows how steady it was. */
        printf("    median latency ratio of each round (natomic/raw):");
        for (int r = 0; r < o->rounds; r++)
            printf(" %.3f", b->results[SERVER_NATOMIC][r].median_us / b->results[SERVER_RAW][r].median_us);
        printf("\n");
    }

    printf("\n  latency ratio (natomic/raw, target ≤ %.2f)      median %6.3f  %s\n", LATENCY_TARGET,
           v->latency_median_ratio, v->latency_median_pass ? "PASS" : "MISS");
    printf("  %-47s p99    %6.3f  %s  (the target is on the median)\n", "", v->latency_p99_ratio,
           v->latency_p99_pass ? "PASS" : "MISS");
    printf("  throughput ratio (natomic/raw, target ≥ %.2f)          %6.3f  %s\n", THROUGHPUT_TARGET,
           v->throughput_ratio, v->throughput_pass ? "PASS" : "MISS");
}

static json_t *figures_json(const figures_t *f)
{
    return json_pack("{s:f, s:f, s:f}", "median_us", f->median_us, "p99_us", f->p99_us, "calls_per_s",
                     f->calls_per_s);
}

/* Writes the figures to `path`; 0, or -1 with a message. */
static int write_json(const bench_t *b, const verdict_t *v, const char *path)
{
    const options_t *o = &b->opt;
    json_t *servers = json_object();
    for (int k = 0; servers != NULL && k < SERVER_COUNT; k++) {
        json_t *rounds = json_array();
        for (int r = 0; rounds != NULL && r < o->rounds; r++)
            json_array_append_new(rounds, figures_json(&b->results[k][r]));
        json_t *s = figures_json(&v->server[k]);
        if (s != NULL) {
            json_object_set_new(s, "name", json_string(server_name[k]));
            json_object_set_new(s, "rounds", rounds);
        } else {
            json_decref(rounds);
        }
        json_object_set_new(servers, server_key[k], s);
    }
    json_t *doc = json_pack(
        "{s:s, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i}, s:o, s:{s:f, s:f, s:f}, s:{s:f, s:f}, s:{s:b, s:b, s:b}}",
        "benchmark", "conversions.inches_to_cm",
        "config", "calls", o->calls, "warmup", o->warmup, "throughput_calls", o->throughput_calls, "concurrency",
        o->concurrency, "rounds", o->rounds, "workers", o->workers, "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN),
        "servers", servers,
        "ratios", "latency_median", v->latency_median_ratio, "latency_p99", v->latency_p99_ratio, "throughput",
        v->throughput_ratio,
        "targets", "latency_max", LATENCY_TARGET, "throughput_min", THROUGHPUT_TARGET,
        "pass", "latency_median", v->latency_median_pass, "latency_p99", v->latency_p99_pass, "throughput",
        v->throughput_pass);
    if (doc == NULL || json_dump_file(doc, path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
        fprintf(stderr, "natomic-bench: cannot write %s: %s\n", path, doc == NULL ? "out of memory" : strerror(errno));
        json_decref(doc);
        return -1;
    }
    json_decref(doc);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The run                                                             */
/* ------------------------------------------------------------------ */

static void on_stop_signal(int sig)
{
    (void)sig;
    bench_client_request_stop();
}

/* Connects the client and the event subscriber. 0, or -1 with a message. */
static int connect_observers(bench_t *b)
{
    natomic_status_t st = natomic_connect(&b->client, b->url, NULL);
    if (st == NATOMIC_OK)
        st = natomic_connect(&b->event_nc, b->url, NULL);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "natomic-bench: cannot connect to %s: %s\n", b->url, natomic_strerror(st));
        return -1;
    }
    natsStatus s = natsConnection_Subscribe(&b->event_sub, b->event_nc, "events.conversions.converted", on_event, b);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(b->event_sub, -1, -1);
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(b->event_nc, 5000);
    if (s != NATS_OK) {
        fprintf(stderr, "natomic-bench: cannot subscribe to the events: %s\n", natsStatus_GetText(s));
        return -1;
    }
    return 0;
}

/* All rounds, interleaved. 0, or -1 when a measurement failed or the run was stopped. */
static int run_rounds(bench_t *b)
{
    for (int r = 1; r <= b->opt.rounds; r++) {
        for (int k = 0; k < SERVER_COUNT; k++) {
            if (bench_client_should_stop())
                return -1;
            if (measure(b, (server_kind_t)k, r, &b->results[k][r - 1]) != 0)
                return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_t b;
    memset(&b, 0, sizeof b);
    int prc = parse_options(&b.opt, argc, argv);
    if (prc != 0)
        return prc == 1 ? 0 : 2;

    /* The services' start and stop lines would interleave with the progress. */
    setenv("NATOMIC_LOG", "warn", 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bench_client_set_deadline(bench_now_ns() + (int64_t)b.opt.max_seconds * 1000000000);

    for (int k = 0; k < SERVER_COUNT; k++) {
        b.results[k] = calloc((size_t)b.opt.rounds, sizeof *b.results[k]);
        if (b.results[k] == NULL) {
            fprintf(stderr, "natomic-bench: out of memory\n");
            return 1;
        }
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(b.dir, sizeof b.dir, "%s/natomic-bench-XXXXXX", tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
    if (mkdtemp(b.dir) == NULL) {
        fprintf(stderr, "natomic-bench: cannot create a folder %s: %s\n", b.dir, strerror(errno));
        return 1;
    }

    int rc = 1;
    embedded_nats_t ns;
    bool nats_started = false;
    fprintf(stderr, "natomic-bench: starting nats-server\n");
    if (embedded_nats_start(&ns) != 0)
        goto out;
    nats_started = true;
    b.url = ns.url;
    fprintf(stderr, "natomic-bench: nats-server on %s; %d round%s of raw nats.c then natomic\n", ns.url,
            b.opt.rounds, b.opt.rounds == 1 ? "" : "s");
    if (connect_observers(&b) != 0 || run_rounds(&b) != 0)
        goto out;

    verdict_t v = judge(&b);
    print_report(&b, &v, ns.port);
    fflush(stdout);
    rc = 0;
    if (b.opt.json != NULL) {
        if (write_json(&b, &v, b.opt.json) != 0)
            rc = 1;
        else
            fprintf(stderr, "natomic-bench: figures written to %s\n", b.opt.json);
    }

out:
    if (rc != 0 && bench_client_stop_reason() != NULL)
        fprintf(stderr, "natomic-bench: run stopped: %s; no figures\n", bench_client_stop_reason());
    natsSubscription_Destroy(b.event_sub);
    natsConnection_Destroy(b.event_nc);
    natsConnection_Destroy(b.client);
    if (nats_started)
        embedded_nats_stop(&ns);
    if (rmdir(b.dir) != 0)
        fprintf(stderr, "natomic-bench: cannot remove %s: %s\n", b.dir, strerror(errno));
    for (int k = 0; k < SERVER_COUNT; k++)
        free(b.results[k]);
    nats_Close();
    return rc;
}
