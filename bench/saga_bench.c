/*
 * natomic-bench-saga -- what the order saga costs on libnatomic against
 * the same saga written by hand, and how fast durable mode recovers from
 * an orchestrator crash (DESIGN §3.7, §5; issue 10).
 *
 * What is measured. orders.create_order, the saga of the example domain:
 * validate, save the order, inventory.reserve, payments.charge, confirm,
 * publish order_created (services/orders/orders_service.c). Every call is
 * one book for 100 cents by one customer, against stock and money seeded
 * to cover all of them, so every call must succeed.
 *   1. The comparison (saga_compare.c). The saga answered four ways:
 *        raw      by hand with nats.c and SQLite, no libnatomic
 *                 (bench/raw_saga): the same rows, event, undos, subjects,
 *                 messages, connection options and worker counts -- the
 *                 baseline of DESIGN §5;
 *        chain    the same messages with nothing stored (client -> A ->
 *                 B, C): raw minus chain is what storage costs;
 *        memory   the four services of services/ in memory mode;
 *        durable  the same in durable mode (the saga log in JetStream KV,
 *                 the outbox, the decision table).
 *      For each: latency of sequential calls (median and p99, µs), then
 *      throughput at each number of concurrent clients (--clients, default
 *      1, 8, 32, 128; sagas/s), the invariants checked from outside after
 *      each phase (saga_session.c: stock and money conserved and matching
 *      the confirmed orders, every order 'confirmed' by get_order, one
 *      order_created per order by distinct Natomic-Event-Id, one
 *      notification per order; the chain keeps nothing and has none). A
 *      broken invariant is said at once, in the table and in the exit
 *      status: it is a bug, not noise. Rounds interleave the variants; the
 *      ratios to raw, the storage share, the targets of DESIGN §5 (met,
 *      missed, or within noise) and the noise of the rounds are printed;
 *      the figures go to a JSON file and the throughput to an SVG chart.
 *   2. Recovery (--recovery N). N times: a fresh durable session whose
 *      orders crashes after the charge (saga_recovery.c), then
 *      supervisor_restart("orders"); from just before the restart: when
 *      the saga's "ended" recovery event arrives, when stock and money are
 *      back as seen by get_stock / get_balance, and when orders answers
 *      $SRV.PING (which separates starting a process from recovering).
 *      Median, p90 and max of each, and the target of DESIGN §5 (all
 *      compensations done <= 1 s after the restart) met or missed.
 *   3. Memory (--memory; saga_memory.c). For each variant: the resident
 *      set (VmRSS) of every process and of nats-server, read from /proc
 *      once a second while --memory-clients clients (default 128) make
 *      orders for --memory-seconds (default 60) after a warm-up, with the
 *      RSS after the warm-up, at the end, the peak, the growth, the slope
 *      over the second half and a verdict ("no growth" when the slope is
 *      at most 256 KiB or 1% of the process per minute); the invariants
 *      checked after. Then the heap bytes and blocks each service
 *      allocates per saga: every service under valgrind's DHAT in two
 *      sessions of --memory-sagas N1,N2 sequential sagas (default 50,250),
 *      per saga = (second - first) / (N2 - N1), with the bytes still
 *      allocated at exit per saga (a leak shows there). Tables after
 *      the others, and the JSON's "memory" object; how to read them:
 *      docs/performance.md, "Memory".
 *
 * How. Every measurement starts a session of its own (saga_session.c):
 * an embedded nats-server with JetStream in a fresh temporary folder and
 * the variant's processes as children of the lab's supervisor, each
 * connected straight to NATS (no fault proxy: a relay thread in this
 * process would copy every byte and be counted as the saga's cost). The
 * client threads, nats-server and the services share this machine's
 * CPUs; they are the same for every variant, so the ratios
 * compare the variants, while the absolute figures are this set-up's, not
 * a production one's.
 *
 * Files. The JSON goes to --json FILE, else to
 * bench-results/saga-<date>-<time>.json (the folder made if missing,
 * relative to the current folder: ./lab runs from the project's root);
 * the chart to --svg FILE, else next to the JSON with .svg for .json (and,
 * then, a copy as reports/bench/saga-throughput.svg: the latest run's chart
 * with the lab's other reports).
 *
 * Bounds. Counts are fixed by the options, the memory load by its time
 * (and a count); each call times out (10 s for a measured call, 60 s under
 * valgrind, 1 s for the call that crashes orders); every wait for
 * an event, a process or a state is bounded; the whole run stops after
 * --max-seconds or on SIGINT / SIGTERM. Everything started is stopped
 * (supervisor_stop) on every path, and the temporary folders removed.
 *
 * Exit status: 0 when the run completed and every invariant held (a missed
 * target is a figure, not a failure); 1 when it failed (a call failed, a
 * process would not start, a file could not be written) or was stopped; 2
 * for bad options; 3 when it completed but an invariant was broken or a
 * recovery did not finish.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <natomic.h>

#include "bench_budget.h"
#include "bench_json.h"
#include "bench_options.h"
#include "bench_stats.h"
#include "saga_compare.h"
#include "saga_memory.h"
#include "saga_recovery.h"
#include "saga_session.h"

#define RECOVERY_TARGET_MS 1000.0 /* DESIGN §5: compensations done <= 1 s after the restart */
#define DEFAULT_OUT_DIR "bench-results"
#define REPORT_DIR_PARENT "reports"
#define REPORT_DIR "reports/bench" /* the latest chart, beside reports/latest and reports/explore */

#define PROGRAM "natomic-bench-saga" /* how its messages start */

/*
 * Whether this build can crash orders on purpose: not when the project was
 * configured with -Dfault_points=disabled (the flag reaches every file).
 */
#ifdef NATOMIC_NO_FAULT_POINTS
static const bool recovery_possible = false;
#else
static const bool recovery_possible = true;
#endif
#define RECOVERY_SKIPPED_WHY                                                                                   \
    "this build is configured with -Dfault_points=disabled, so orders cannot be made to crash after the charge; " \
    "reconfigure with -Dfault_points=enabled"

typedef struct options {
    saga_compare_config_t compare; /* rounds, calls, warm-up, clients, variants */
    int recovery;                  /* recovery runs; 0: none                    */
    bool recovery_only;            /* skip the comparison                       */
    saga_memory_config_t memory;   /* seconds, clients, sagas, parts            */
    bool memory_on;                /* --memory or --memory-only                  */
    bool memory_only;              /* skip the comparison                       */
    int max_seconds;               /* time budget of the whole run              */
    const char *json;              /* the JSON file (a default when not given)  */
    const char *svg;               /* the chart (a default when not given)      */
    char json_default[256];
    char svg_default[256];
} options_t;

/* The recovery series summarized. */
typedef struct recovery_summary {
    int runs, recovered;
    int n_ended, n_restored, n_ping; /* runs that saw each */
    double ended[3], restored[3], ping[3]; /* median, p90, max (ms); NAN when none */
    int ended_over_target, restored_over_target;
} recovery_summary_t;

typedef struct bench {
    options_t opt;
    double load_start[3], load_end[3]; /* /proc/loadavg: 1, 5, 15 minutes; -1 when unknown */
    saga_compare_t *compare;
    saga_recovery_run_t *recovery;
    int recovery_done;
    saga_memory_t *memory;
} bench_t;

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("Usage: natomic-bench-saga [options]\n"
          "\n"
          "Measures orders.create_order -- the order saga: reserve the stock, charge the\n"
          "customer, confirm, publish order_created -- answered four ways, every process\n"
          "started through the lab's supervisor, each measurement on a fresh nats-server\n"
          "and fresh stores, the variants interleaved in rounds:\n"
          "  raw      the saga by hand with nats.c and SQLite (natomic-raw-saga), the baseline\n"
          "  chain    the same messages with nothing stored (client -> A -> B, C)\n"
          "  memory   the services on libnatomic, memory mode\n"
          "  durable  the same, durable mode\n"
          "For each: median and p99 latency of sequential calls, and throughput (sagas/s)\n"
          "at each number of concurrent clients; then the ratios to raw, the storage share\n"
          "(raw against chain), the targets of DESIGN §5 and how much the rounds varied.\n"
          "After each phase the invariants are checked from outside: stock and money\n"
          "conserved, every order confirmed, one order_created (distinct Natomic-Event-Id)\n"
          "and one notification per order (not for the chain, which keeps nothing).\n"
          "\n"
          "With --recovery N, also (or with --recovery-only, only) the recovery time after\n"
          "an orchestrator crash in durable mode: N times, orders dies after charging\n"
          "(NATOMIC_FAULTS=" SAGA_RECOVERY_FAULTS ") and is restarted\n"
          "under the same instance name; measured from just before the restart: the\n"
          "saga's \"ended\" recovery event, stock and money back (get_stock/get_balance),\n"
          "and orders answering $SRV.PING. Median, p90 and max, against the target of\n"
          "DESIGN §5: all compensations done within 1 s of the restart.\n"
          "\n",
          f);
    /* In parts: ISO C compilers need not take a string literal over 4095 characters. */
    fputs("With --memory, also (or with --memory-only, only) what the saga costs in memory,\n"
          "for each variant of --variants, in sessions of its own:\n"
          "  RSS      --memory-clients clients make orders for --memory-seconds after a\n"
          "           warm-up, while VmRSS and VmHWM of every process (and nats-server) are\n"
          "           read from /proc/<pid>/status once a second: RSS after the warm-up, at\n"
          "           the end, the peak, the growth, the slope over the second half (KiB/min)\n"
          "           and a verdict, \"no growth\" when that slope is at most 256 KiB or 1% of\n"
          "           the process per minute; the invariants checked after the load\n"
          "  heap     every service under valgrind --tool=dhat (NATOMIC_SERVICE_WRAPPER) in\n"
          "           two sessions of N1 and N2 sequential sagas: bytes and blocks allocated\n"
          "           per saga, (second - first) / (N2 - N1), and the bytes still allocated\n"
          "           at exit per saga (a leak shows there); skipped without valgrind\n"
          "\n",
          f);
    fputs("Options:\n"
          "  --rounds N            measurements per variant, interleaved (default 5)\n"
          "  --calls N             sequential orders timed for latency (default 500)\n"
          "  --warmup N            untimed orders before each phase (default 20)\n"
          "  --throughput-calls N  orders timed at each number of clients (default 1000)\n"
          "  --clients LIST        numbers of concurrent clients, ascending, comma-separated,\n"
          "                        1..256, at most 8 (default 1,8,32,128)\n"
          "  --concurrency N       the same as --clients N\n"
          "  --variants LIST       which of raw,chain,memory,durable to measure (default all;\n"
          "                        they always run in that order within a round)\n"
          "  --recovery N          also measure recovery, N crash-and-restart runs (1..1000)\n"
          "  --recovery-only       only the recovery measurement (20 runs unless --recovery)\n"
          "  --memory              also measure memory (RSS under load, heap per saga)\n"
          "  --memory-only         only the memory measurement (and recovery if --recovery)\n"
          "  --memory-seconds N    length of the RSS load, 1..3600 (default 60)\n"
          "  --memory-clients N    concurrent clients of the RSS load, 1..256 (default 128)\n"
          "  --memory-sagas N1,N2  sequential sagas of the two DHAT sessions, N1 < N2,\n"
          "                        1..100000 (default 50,250)\n"
          "  --memory-parts LIST   which of rss,heap to measure (default both)\n"
          "  --max-seconds N       time budget of the whole run (default 1800)\n"
          "  --json FILE           the figures as JSON (default bench-results/saga-DATE-TIME.json)\n"
          "  --svg FILE            the throughput chart (default: the JSON's name with .svg)\n"
          "  -h, --help            show this help\n"
          "\n"
          "Progress goes to stderr, the tables to stdout. Exit status: 0 when the run\n"
          "completed and every invariant held (whether or not the targets were met), 1\n"
          "when it failed or was stopped, 2 for bad options, 3 when it completed but an\n"
          "invariant was broken or a recovery did not finish (a bug: the message says how).\n"
          "\n"
          "Environment: NATOMIC_NATS_SERVER (nats-server binary), NATOMIC_SERVICES_DIR\n"
          "(the services' folder, default ../services beside this program), NATOMIC_RAW_SAGA\n"
          "(natomic-raw-saga, default raw_saga/natomic-raw-saga beside this program),\n"
          "NATOMIC_LOG (the library's log level in the services; the benchmark sets warn\n"
          "unless given), TMPDIR (where each session's NATS store, databases and logs go,\n"
          "and DHAT's files while they are read).\n",
          f);
}

enum {
    OPT_ROUNDS = 1000,
    OPT_CALLS,
    OPT_WARMUP,
    OPT_THROUGHPUT_CALLS,
    OPT_CLIENTS,
    OPT_CONCURRENCY,
    OPT_VARIANTS,
    OPT_RECOVERY,
    OPT_RECOVERY_ONLY,
    OPT_MEMORY,
    OPT_MEMORY_ONLY,
    OPT_MEMORY_SECONDS,
    OPT_MEMORY_CLIENTS,
    OPT_MEMORY_SAGAS,
    OPT_MEMORY_PARTS,
    OPT_MAX_SECONDS,
    OPT_JSON,
    OPT_SVG,
};

/* --clients 1,8,32,128: ascending whole numbers 1..256, at most SAGA_MAX_LEVELS. False with a message. */
static bool parse_clients(saga_compare_config_t *c, const char *text)
{
    char copy[256], *save = NULL;
    if (snprintf(copy, sizeof copy, "%s", text) >= (int)sizeof copy) {
        fprintf(stderr, PROGRAM ": --clients: list too long\n");
        return false;
    }
    int n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        int v = 0;
        if (n == SAGA_MAX_LEVELS) {
            fprintf(stderr, PROGRAM ": --clients: at most %d numbers\n", SAGA_MAX_LEVELS);
            return false;
        }
        if (!bench_option_count(&v, PROGRAM, "--clients", tok, 1, 256))
            return false;
        if (n > 0 && v <= c->clients[n - 1]) {
            fprintf(stderr, PROGRAM ": --clients wants ascending numbers, got '%s'\n", text);
            return false;
        }
        c->clients[n++] = v;
    }
    if (n == 0) {
        fprintf(stderr, PROGRAM ": --clients needs at least one number\n");
        return false;
    }
    c->n_levels = n;
    return true;
}

/* --variants raw,memory: each named once at most. False with a message. */
static bool parse_variants(saga_compare_config_t *c, const char *text)
{
    char copy[256], *save = NULL;
    snprintf(copy, sizeof copy, "%s", text);
    bool on[SAGA_VARIANT_COUNT] = {false};
    int n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        int v = 0;
        while (v < SAGA_VARIANT_COUNT && strcmp(tok, saga_variant_names[v]) != 0)
            v++;
        if (v == SAGA_VARIANT_COUNT) {
            fprintf(stderr, PROGRAM ": --variants: no variant '%s' (raw, chain, memory, durable)\n", tok);
            return false;
        }
        on[v] = true;
        n++;
    }
    if (n == 0) {
        fprintf(stderr, PROGRAM ": --variants needs at least one of raw, chain, memory, durable\n");
        return false;
    }
    memcpy(c->variant_on, on, sizeof on);
    return true;
}

/* --memory-sagas 50,250: two counts 1..100000, the first smaller. False with a message. */
static bool parse_memory_sagas(saga_memory_config_t *m, const char *text)
{
    char copy[64];
    if (snprintf(copy, sizeof copy, "%s", text) >= (int)sizeof copy || strchr(copy, ',') == NULL) {
        fprintf(stderr, PROGRAM ": --memory-sagas wants two counts, N1,N2, got '%s'\n", text);
        return false;
    }
    char *comma = strchr(copy, ',');
    *comma = '\0';
    int a = 0, b = 0;
    if (!bench_option_count(&a, PROGRAM, "--memory-sagas", copy, 1, 100000) ||
        !bench_option_count(&b, PROGRAM, "--memory-sagas", comma + 1, 1, 100000))
        return false;
    if (a >= b) {
        fprintf(stderr, PROGRAM ": --memory-sagas wants N1 < N2 (the difference is what is measured), got '%s'\n",
                text);
        return false;
    }
    m->sagas[0] = a;
    m->sagas[1] = b;
    return true;
}

/* --memory-parts rss,heap: at least one. False with a message. */
static bool parse_memory_parts(saga_memory_config_t *m, const char *text)
{
    char copy[64], *save = NULL;
    snprintf(copy, sizeof copy, "%s", text);
    bool rss = false, heap = false;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "rss") == 0) {
            rss = true;
        } else if (strcmp(tok, "heap") == 0) {
            heap = true;
        } else {
            fprintf(stderr, PROGRAM ": --memory-parts: no part '%s' (rss, heap)\n", tok);
            return false;
        }
    }
    if (!rss && !heap) {
        fprintf(stderr, PROGRAM ": --memory-parts needs at least one of rss, heap\n");
        return false;
    }
    m->rss = rss;
    m->dhat = heap;
    return true;
}

/* Whether the comparison runs: not when only recovery or only memory was asked for. */
static bool comparison_on(const options_t *opt)
{
    return !opt->recovery_only && !opt->memory_only;
}

/*
 * The file names not given: bench-results/saga-<date>-<time>.json (the folder made)
 * and the JSON's name with .svg. False with a message.
 */
static bool default_files(options_t *opt)
{
    if (opt->json == NULL) {
        if (mkdir(DEFAULT_OUT_DIR, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, PROGRAM ": cannot make %s/: %s\n", DEFAULT_OUT_DIR, strerror(errno));
            return false;
        }
        char stamp[32];
        time_t now = time(NULL);
        struct tm tm;
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime_r(&now, &tm));
        snprintf(opt->json_default, sizeof opt->json_default, "%s/saga-%s.json", DEFAULT_OUT_DIR, stamp);
        opt->json = opt->json_default;
    }
    if (opt->svg == NULL) {
        size_t n = strlen(opt->json);
        int stem = n > 5 && strcmp(opt->json + n - 5, ".json") == 0 ? (int)(n - 5) : (int)n;
        if (snprintf(opt->svg_default, sizeof opt->svg_default, "%.*s.svg", stem, opt->json) >=
            (int)sizeof opt->svg_default) {
            fprintf(stderr, PROGRAM ": --json path too long to put the chart beside it; give --svg\n");
            return false;
        }
        opt->svg = opt->svg_default;
    }
    return true;
}

/* Whether the chart's folder takes new files; false with a message. */
static bool svg_path_writable(const char *path)
{
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", path);
    char *slash = strrchr(copy, '/');
    const char *dir = slash == NULL ? "." : slash == copy ? "/" : (*slash = '\0', copy);
    if (access(dir, W_OK) != 0) {
        fprintf(stderr, PROGRAM ": --svg %s: cannot write in %s: %s\n", path, dir, strerror(errno));
        return false;
    }
    return true;
}

/* Fills *opt from argv: 0 to run, 1 when help was shown, 2 for bad options (message printed). */
static int parse_options(options_t *opt, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"calls", required_argument, NULL, OPT_CALLS},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"throughput-calls", required_argument, NULL, OPT_THROUGHPUT_CALLS},
        {"clients", required_argument, NULL, OPT_CLIENTS},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"variants", required_argument, NULL, OPT_VARIANTS},
        {"recovery", required_argument, NULL, OPT_RECOVERY},
        {"recovery-only", no_argument, NULL, OPT_RECOVERY_ONLY},
        {"memory", no_argument, NULL, OPT_MEMORY},
        {"memory-only", no_argument, NULL, OPT_MEMORY_ONLY},
        {"memory-seconds", required_argument, NULL, OPT_MEMORY_SECONDS},
        {"memory-clients", required_argument, NULL, OPT_MEMORY_CLIENTS},
        {"memory-sagas", required_argument, NULL, OPT_MEMORY_SAGAS},
        {"memory-parts", required_argument, NULL, OPT_MEMORY_PARTS},
        {"max-seconds", required_argument, NULL, OPT_MAX_SECONDS},
        {"json", required_argument, NULL, OPT_JSON},
        {"svg", required_argument, NULL, OPT_SVG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(opt, 0, sizeof *opt);
    saga_compare_config_t *c = &opt->compare;
    *c = (saga_compare_config_t){.rounds = 5, .calls = 500, .warmup = 20, .throughput_calls = 1000,
                                 .clients = {1, 8, 32, 128}, .n_levels = 4};
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++)
        c->variant_on[v] = true;
    opt->recovery = -1;
    opt->memory = (saga_memory_config_t){.rss = true, .dhat = true, .seconds = 60, .clients = 128, .sagas = {50, 250}};
    opt->max_seconds = 1800;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        bool ok = true;
        switch (ch) {
        case OPT_ROUNDS:
            ok = bench_option_count(&c->rounds, PROGRAM, "--rounds", optarg, 1, 100);
            break;
        case OPT_CALLS:
            ok = bench_option_count(&c->calls, PROGRAM, "--calls", optarg, 1, 1000000);
            break;
        case OPT_WARMUP:
            ok = bench_option_count(&c->warmup, PROGRAM, "--warmup", optarg, 0, 1000000);
            break;
        case OPT_THROUGHPUT_CALLS:
            ok = bench_option_count(&c->throughput_calls, PROGRAM, "--throughput-calls", optarg, 1, 1000000);
            break;
        case OPT_CLIENTS:
        case OPT_CONCURRENCY:
            ok = parse_clients(c, optarg);
            break;
        case OPT_VARIANTS:
            ok = parse_variants(c, optarg);
            break;
        case OPT_RECOVERY:
            ok = bench_option_count(&opt->recovery, PROGRAM, "--recovery", optarg, 1, 1000);
            break;
        case OPT_RECOVERY_ONLY:
            opt->recovery_only = true;
            break;
        case OPT_MEMORY:
            opt->memory_on = true;
            break;
        case OPT_MEMORY_ONLY:
            opt->memory_on = opt->memory_only = true;
            break;
        case OPT_MEMORY_SECONDS:
            ok = bench_option_count(&opt->memory.seconds, PROGRAM, "--memory-seconds", optarg, 1, 3600);
            break;
        case OPT_MEMORY_CLIENTS:
            ok = bench_option_count(&opt->memory.clients, PROGRAM, "--memory-clients", optarg, 1, 256);
            break;
        case OPT_MEMORY_SAGAS:
            ok = parse_memory_sagas(&opt->memory, optarg);
            break;
        case OPT_MEMORY_PARTS:
            ok = parse_memory_parts(&opt->memory, optarg);
            break;
        case OPT_MAX_SECONDS:
            ok = bench_option_count(&opt->max_seconds, PROGRAM, "--max-seconds", optarg, 1, 24 * 3600);
            break;
        case OPT_JSON:
            ok = bench_option_json(&opt->json, PROGRAM, optarg);
            break;
        case OPT_SVG:
            opt->svg = optarg;
            ok = *optarg != '\0';
            if (!ok)
                fprintf(stderr, PROGRAM ": --svg needs a file name\n");
            break;
        case 'h':
            usage(stdout);
            return 1;
        default: /* ':' a value missing, '?' an unknown option */
            bench_option_complain(PROGRAM, ch, argv);
            ok = false;
            break;
        }
        if (!ok)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", PROGRAM, argv[optind]);
        return 2;
    }
    if (!default_files(opt) || !bench_options_finish(PROGRAM, argc, argv, opt->json) ||
        (comparison_on(opt) && !svg_path_writable(opt->svg)))
        return 2;
    if (opt->recovery < 0)
        opt->recovery = opt->recovery_only ? 20 : 0;
    memcpy(opt->memory.variant_on, opt->compare.variant_on, sizeof opt->memory.variant_on);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Recovery                                                            */
/* ------------------------------------------------------------------ */

/* Median, p90 and max of the non-negative values of one field; NAN when none. Returns how many. */
static int summarize_field(double out[3], const saga_recovery_run_t *runs, int n, size_t field)
{
    double *v = malloc(((size_t)n + 1) * sizeof *v);
    int k = 0;
    for (int i = 0; v != NULL && i < n; i++) {
        double x;
        memcpy(&x, (const char *)&runs[i] + field, sizeof x);
        if (runs[i].measured && x >= 0)
            v[k++] = x;
    }
    if (k == 0) {
        out[0] = out[1] = out[2] = NAN;
    } else {
        bench_stats_sort(v, k);
        out[0] = bench_stats_percentile(v, k, 50.0);
        out[1] = bench_stats_percentile(v, k, 90.0);
        out[2] = v[k - 1];
    }
    free(v);
    return k;
}

static recovery_summary_t summarize_recovery(const bench_t *b)
{
    recovery_summary_t s;
    memset(&s, 0, sizeof s);
    s.runs = b->recovery_done;
    for (int i = 0; i < s.runs; i++) {
        const saga_recovery_run_t *r = &b->recovery[i];
        s.recovered += r->recovered ? 1 : 0;
        s.ended_over_target += r->ended_ms < 0 || r->ended_ms > RECOVERY_TARGET_MS ? 1 : 0;
        s.restored_over_target += r->restored_ms < 0 || r->restored_ms > RECOVERY_TARGET_MS ? 1 : 0;
    }
    s.n_ended = summarize_field(s.ended, b->recovery, s.runs, offsetof(saga_recovery_run_t, ended_ms));
    s.n_restored = summarize_field(s.restored, b->recovery, s.runs, offsetof(saga_recovery_run_t, restored_ms));
    s.n_ping = summarize_field(s.ping, b->recovery, s.runs, offsetof(saga_recovery_run_t, ping_ms));
    return s;
}

/* "  123.4" or "      -" for a time not seen. */
static void print_ms(double ms)
{
    if (ms >= 0)
        printf(" %9.1f", ms);
    else
        printf(" %9s", "-");
}

static void print_recovery(const bench_t *b, const recovery_summary_t *s)
{
    printf("\nnatomic-bench-saga: recovery after an orchestrator crash, durable mode -- %d run%s\n", s->runs,
           s->runs == 1 ? "" : "s");
    printf("  orders started with NATOMIC_FAULTS=%s, one create_order (times out),\n"
           "  orders dead, then supervisor_restart(\"orders\") (same instance name: it claims its own saga).\n"
           "  Milliseconds from just before the restart:\n\n",
           SAGA_RECOVERY_FAULTS);
    printf("  %4s %9s %9s %9s %9s %9s\n", "run", "ping", "claimed", "ended", "back", "restart");
    for (int i = 0; i < s->runs; i++) {
        const saga_recovery_run_t *r = &b->recovery[i];
        printf("  %4d", i + 1);
        print_ms(r->ping_ms);
        print_ms(r->claimed_ms);
        print_ms(r->ended_ms);
        print_ms(r->restored_ms);
        print_ms(r->restart_ms);
        if (!r->recovered || r->note[0] != '\0')
            printf("   %s%s", r->recovered ? "" : "NOT RECOVERED: ", r->note);
        printf("\n");
    }
    printf("\n  ping: orders answers $SRV.PING; claimed / ended: its recovery events for the saga received;\n"
           "  back: get_stock and get_balance show the seed again; restart: supervisor_restart() returned.\n\n");
    printf("  %-28s %9s %9s %9s\n", "", "median", "p90", "max");
    const struct {
        const char *what;
        const double *v;
        int n;
    } rows[] = {{"restart -> saga ended", s->ended, s->n_ended},
                {"restart -> stock+money back", s->restored, s->n_restored},
                {"restart -> $SRV.PING answered", s->ping, s->n_ping}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        printf("  %-28s", rows[i].what);
        for (int k = 0; k < 3; k++)
            print_ms(rows[i].n > 0 ? rows[i].v[k] : -1.0);
        printf("   (%d of %d runs)\n", rows[i].n, s->runs);
    }
    printf("\n  target (DESIGN §5): all compensations done <= %.0f ms after the restart\n", RECOVERY_TARGET_MS);
    printf("    saga ended:           %s (%d of %d runs within it; max %.1f ms)\n",
           s->ended_over_target == 0 ? "MET" : "MISSED", s->runs - s->ended_over_target, s->runs, s->ended[2]);
    printf("    stock and money back: %s (%d of %d runs within it; max %.1f ms)\n",
           s->restored_over_target == 0 ? "MET" : "MISSED", s->runs - s->restored_over_target, s->runs,
           s->restored[2]);
    if (s->recovered != s->runs)
        printf("  RECOVERY DID NOT FINISH in %d of %d runs (see the notes above and stderr)\n", s->runs - s->recovered,
               s->runs);
}

/* N recovery runs. 0, or -1 when one could not be made or the run was stopped. */
static int run_recovery(bench_t *b)
{
    for (int i = 0; i < b->opt.recovery; i++) {
        if (bench_should_stop())
            return -1;
        saga_recovery_run_t *r = &b->recovery[i];
        if (saga_recovery_measure(r) != 0) {
            fprintf(stderr, "natomic-bench-saga: recovery run %d %s\n", i + 1,
                    bench_stop_reason() != NULL ? "stopped early" : "failed");
            return -1;
        }
        b->recovery_done = i + 1;
        int width = snprintf(NULL, 0, "%d", b->opt.recovery);
        fprintf(stderr, "  recovery %*d/%d  ping %7.1f ms  claimed %7.1f ms  ended %7.1f ms  back %7.1f ms%s%s\n",
                width, i + 1, b->opt.recovery, r->ping_ms, r->claimed_ms, r->ended_ms, r->restored_ms,
                r->recovered ? "" : "   NOT RECOVERED: ", r->recovered ? "" : r->note);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */
/* ------------------------------------------------------------------ */

/* A time in ms, or null when it was not seen. */
static json_t *ms_json(double ms)
{
    return ms >= 0 && !isnan(ms) ? json_real(ms) : json_null();
}

static json_t *stats_json(const double v[3], int n)
{
    return json_pack("{s:o, s:o, s:o, s:i}", "median_ms", ms_json(n > 0 ? v[0] : -1), "p90_ms",
                     ms_json(n > 0 ? v[1] : -1), "max_ms", ms_json(n > 0 ? v[2] : -1), "runs_seen", n);
}

static json_t *recovery_json(const bench_t *b, const recovery_summary_t *s)
{
    json_t *runs = json_array();
    for (int i = 0; runs != NULL && i < s->runs; i++) {
        const saga_recovery_run_t *r = &b->recovery[i];
        json_array_append_new(runs,
                              json_pack("{s:b, s:o, s:o, s:o, s:o, s:o, s:s, s:s, s:s}", "recovered", r->recovered,
                                        "ping_ms", ms_json(r->ping_ms), "claimed_ms", ms_json(r->claimed_ms),
                                        "ended_ms", ms_json(r->ended_ms), "restored_ms", ms_json(r->restored_ms),
                                        "restart_returned_ms", ms_json(r->restart_ms), "call_id", r->call_id,
                                        "order_status", r->order_status, "note", r->note));
    }
    return json_pack("{s:s, s:f, s:i, s:i, s:o, s:o, s:o, s:b, s:b, s:o}", "faults", SAGA_RECOVERY_FAULTS,
                     "target_ms", RECOVERY_TARGET_MS, "runs_total", s->runs, "recovered", s->recovered, "ended",
                     stats_json(s->ended, s->n_ended), "restored", stats_json(s->restored, s->n_restored), "ping",
                     stats_json(s->ping, s->n_ping), "target_met_ended", s->ended_over_target == 0,
                     "target_met_restored", s->restored_over_target == 0, "runs", runs);
}

/* Writes the figures to `path`; 0, or -1 with a message. A part not run is absent (or says why it was skipped). */
static int write_json(const bench_t *b, bool cost, const recovery_summary_t *s, bool memory, const char *path)
{
    const options_t *o = &b->opt;
    const saga_compare_config_t *c = &o->compare;
    json_t *clients = json_array(), *variants = json_array();
    for (int l = 0; clients != NULL && l < c->n_levels; l++)
        json_array_append_new(clients, json_integer(c->clients[l]));
    for (int v = 0; variants != NULL && v < SAGA_VARIANT_COUNT; v++)
        if (c->variant_on[v])
            json_array_append_new(variants, json_string(saga_variant_names[v]));
    json_t *doc = json_pack("{s:s, s:{s:i, s:i, s:i, s:i, s:o, s:o, s:i, s:b, s:i, s:i, s:i, s:i}}", "benchmark",
                            "orders.create_order saga: raw, chain, memory, durable; recovery; memory", "config",
                            "rounds",
                            c->rounds, "calls", c->calls, "warmup", c->warmup, "throughput_calls", c->throughput_calls,
                            "clients", clients, "variants", variants, "recovery_runs", o->recovery, "recovery_only",
                            o->recovery_only, "qty_per_order", SAGA_QTY, "amount_per_order", SAGA_AMOUNT, "cpus",
                            (int)sysconf(_SC_NPROCESSORS_ONLN), "max_seconds", o->max_seconds);
    if (doc != NULL)
        json_object_set_new(doc, "load_average",
                            json_pack("{s:[f, f, f], s:[f, f, f]}", "start", b->load_start[0], b->load_start[1],
                                      b->load_start[2], "end", b->load_end[0], b->load_end[1], b->load_end[2]));
    if (doc != NULL && cost) {
        json_object_set_new(doc, "cost", saga_compare_json(b->compare));
        json_object_set_new(doc, "chart", json_string(o->svg));
    }
    if (doc != NULL && s != NULL)
        json_object_set_new(doc, "recovery", recovery_json(b, s));
    if (doc != NULL && s == NULL && o->recovery > 0 && !recovery_possible)
        json_object_set_new(doc, "recovery", json_pack("{s:s}", "skipped", RECOVERY_SKIPPED_WHY));
    if (doc != NULL && memory)
        json_object_set_new(doc, "memory", saga_memory_json(b->memory));
    return bench_json_write(doc, PROGRAM, path);
}

/* ------------------------------------------------------------------ */
/* The run                                                             */
/* ------------------------------------------------------------------ */

/* The system's load averages (1, 5, 15 minutes), -1 each when they cannot be read: noise to report. */
static void read_load(double load[3])
{
    load[0] = load[1] = load[2] = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f == NULL)
        return;
    if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
        load[0] = load[1] = load[2] = -1.0;
    fclose(f);
}

static void print_machine(const bench_t *b)
{
    printf("\nmachine: %ld CPUs online; load average %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end\n",
           sysconf(_SC_NPROCESSORS_ONLN), b->load_start[0], b->load_start[1], b->load_start[2], b->load_end[0],
           b->load_end[1], b->load_end[2]);
    if (b->load_start[0] > (double)sysconf(_SC_NPROCESSORS_ONLN) ||
        b->load_end[0] > (double)sysconf(_SC_NPROCESSORS_ONLN))
        printf("  (more runnable work than CPUs: other programs shared the machine; expect noise)\n");
}

int main(int argc, char **argv)
{
    bench_t b;
    memset(&b, 0, sizeof b);
    int prc = parse_options(&b.opt, argc, argv);
    if (prc != 0)
        return prc == 1 ? 0 : 2;

    /* The services inherit it: their info lines would cost time in the measured calls. */
    setenv("NATOMIC_LOG", "warn", 0);
    bench_budget_start(b.opt.max_seconds);
    read_load(b.load_start);

    const saga_compare_config_t *c = &b.opt.compare;
    bool run_cost = comparison_on(&b.opt);
    bool run_rec = b.opt.recovery > 0 && recovery_possible;
    bool run_mem = b.opt.memory_on;
    if (b.opt.recovery > 0 && !recovery_possible)
        fprintf(stderr, PROGRAM ": recovery: skipped: %s\n", RECOVERY_SKIPPED_WHY);
    if (run_cost && saga_compare_new(&b.compare, c) != 0)
        return 1;
    if (run_mem && saga_memory_new(&b.memory, &b.opt.memory) != 0) {
        saga_compare_free(b.compare);
        return 1;
    }
    b.recovery = calloc((size_t)(b.opt.recovery > 0 ? b.opt.recovery : 1), sizeof *b.recovery);
    if (b.recovery == NULL) {
        fprintf(stderr, PROGRAM ": out of memory\n");
        saga_compare_free(b.compare);
        saga_memory_free(b.memory);
        return 1;
    }

    int rc = 1;
    recovery_summary_t s;
    memset(&s, 0, sizeof s);
    if (run_cost) {
        int n = 0;
        for (int v = 0; v < SAGA_VARIANT_COUNT; v++)
            n += c->variant_on[v] ? 1 : 0;
        fprintf(stderr, PROGRAM ": %d round%s of %d variant%s, a fresh session each\n", c->rounds,
                c->rounds == 1 ? "" : "s", n, n == 1 ? "" : "s");
        if (saga_compare_run(b.compare) != 0)
            goto out;
    }
    if (run_rec) {
        fprintf(stderr, PROGRAM ": %d recovery run%s (durable, orders crashes after the charge)\n", b.opt.recovery,
                b.opt.recovery == 1 ? "" : "s");
        if (run_recovery(&b) != 0)
            goto out;
    }
    if (run_mem) {
        const saga_memory_config_t *m = &b.opt.memory;
        fprintf(stderr, PROGRAM ": memory: %s, for each variant, a fresh session each\n",
                m->rss && m->dhat ? "RSS under load, then the heap per saga under valgrind's DHAT"
                : m->rss          ? "RSS under load"
                                  : "the heap per saga under valgrind's DHAT");
        if (saga_memory_run(b.memory) != 0)
            goto out;
    }

    read_load(b.load_end);
    print_machine(&b);
    bool broken = false;
    if (run_cost) {
        saga_compare_print(b.compare);
        broken = broken || saga_compare_checks_failed(b.compare) > 0;
    }
    if (run_rec) {
        s = summarize_recovery(&b);
        print_recovery(&b, &s);
        broken = broken || s.recovered != s.runs;
    } else if (b.opt.recovery > 0) {
        printf("\n" PROGRAM ": recovery: skipped\n  %s.\n", RECOVERY_SKIPPED_WHY);
    }
    if (run_mem) {
        saga_memory_print(b.memory);
        broken = broken || saga_memory_checks_failed(b.memory) > 0;
    }
    fflush(stdout);
    rc = broken ? 3 : 0;
    if (write_json(&b, run_cost, run_rec ? &s : NULL, run_mem, b.opt.json) != 0)
        rc = 1;
    else
        fprintf(stderr, PROGRAM ": figures written to %s\n", b.opt.json);
    if (run_cost) {
        if (saga_compare_plot(b.compare, b.opt.svg, PROGRAM) != 0)
            rc = 1;
        else
            fprintf(stderr, PROGRAM ": chart written to %s\n", b.opt.svg);
        /* The default run also leaves the latest chart with the lab's other reports. */
        if (rc != 1 && b.opt.svg == b.opt.svg_default && (mkdir(REPORT_DIR_PARENT, 0755) == 0 || errno == EEXIST) &&
            (mkdir(REPORT_DIR, 0755) == 0 || errno == EEXIST) &&
            saga_compare_plot(b.compare, REPORT_DIR "/saga-throughput.svg", PROGRAM) == 0)
            fprintf(stderr, PROGRAM ": and the latest at %s/saga-throughput.svg\n", REPORT_DIR);
    }

out:
    if (rc == 1 && bench_stop_reason() != NULL)
        fprintf(stderr, PROGRAM ": run stopped: %s; no figures\n", bench_stop_reason());
    saga_compare_free(b.compare);
    saga_memory_free(b.memory);
    free(b.recovery);
    nats_Close();
    return rc;
}
