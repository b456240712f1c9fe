/*
 * natomic-bench -- what libnatomic costs on a real call, against the same
 * call written with raw nats.c (DESIGN §5, memory mode), and what its fault
 * points cost when compiled in but disabled (DESIGN §3.9, §5).
 *
 * What is measured. conversions.inches_to_cm, served four ways, in two
 * comparisons:
 *   1. libnatomic vs raw nats.c, both servers inside this process:
 *      - "natomic": a natomic_service_t named "conversions" with
 *        conversions_service_register() -- the library's real path: call
 *        context, a rollback command registered and dropped, a dispatch
 *        command that publishes events.conversions.converted, outcome
 *        headers;
 *      - "raw nats.c": raw_conversions.c, the same handler by hand:
 *        decode, save, publish the event, reply; on failure delete and
 *        reply with the error headers.
 *   2. fault points compiled in vs compiled out, each server a child
 *      process (bench_server.c, built twice by bench/meson.build):
 *      - "fp in": natomic-bench-server, linked against the library objects
 *        as the project builds them (the objects of libnatomic.so): every
 *        NATOMIC_FAULT() is a natomic_fault_check() -> fiu_fail() call,
 *        and no point is enabled;
 *      - "fp out": natomic-bench-server-nofp, the same source, the
 *        conversions service and a second copy of the library objects, all
 *        compiled with -DNATOMIC_NO_FAULT_POINTS: NATOMIC_FAULT() is the
 *        constant NATOMIC_FAULT_NONE.
 *      Both link those objects statically with the same options, so the
 *      build flag is the only difference. A build configured with
 *      -Dfault_points=disabled has no compiled-in copy to compare (the
 *      flag is project-wide, this program included): the comparison is
 *      skipped and says so. --faults-only runs only this comparison.
 * Every server saves one SQLite row and publishes one event per call. For
 * each measurement:
 *   - latency: sequential calls from one thread (median and p99, µs);
 *   - throughput: N concurrent clients (calls/s).
 *
 * How. One nats-server (embedded_nats: a real one, loopback, free port)
 * serves the whole run. Each measurement starts one server on its own
 * connection (natomic_connect: SendAsap on) with a fresh SQLite file in a
 * temporary folder, checks that a negative length is refused with
 * InvalidLength, measures, stops the server, and checks that the history
 * holds one row and the event subscriber saw one event per successful
 * call. Only one server runs at a time. In comparison 1 the rounds
 * interleave (raw, natomic, raw, natomic, ...); in comparison 2 they
 * alternate in ABBA order (out, in, in, out, out, ...) so that neither build
 * always runs first after the other. Drift of the machine (frequency,
 * neighbours, page cache) thus hits both sides alike. Each figure is the
 * median over rounds; the ratios are taken between those medians.
 *
 * The two comparisons differ in method, so compare ratios within a
 * comparison, never absolute figures across them: in comparison 1 the
 * servers run inside natomic-bench (sharing its process, its allocator and
 * its scheduling with the 32 client threads) and the natomic one calls
 * the shared libnatomic.so; in comparison 2 each server is a separate
 * process (started with lab_process_start_group, --nats, --db, --workers;
 * it is measured once it answers the InvalidLength probe, and stopped with
 * SIGTERM, after which its exit status must be 0) linked statically. Its
 * libfiu remote control, present in both builds, gets this run's temporary
 * folder as TMPDIR.
 *
 * Noise. A disabled fault point costs one fiu_fail() call (about 35 ns:
 * a read lock and a hash lookup); a call passes about six of them, well
 * under 1 µs of a call of about 200 µs. What the machine varies from one
 * measurement to the next is far larger: on a 2-CPU VM, running
 * natomic-bench-server against a copy of itself gives per-round ratios
 * from 0.85 to 1.2. So the fault-point section also prints a
 * distribution-free interval for the median of the per-round ratios (the
 * sign-test interval, about 95%) and says whether each verdict is
 * "resolved" -- the whole interval on one side of the target -- or
 * "within noise". 5 rounds cannot resolve 2% there; 60 rounds bring the
 * interval to about ±2%.
 *
 * Why it is fair. The client code is the same for all (natomic_request on
 * the same connection), so only the server differs. All servers use the
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
 * a child server must answer within 10 s of its start; the whole run stops
 * after --max-seconds (default 300) or on SIGINT or SIGTERM, and always
 * stops the servers and nats-server and removes its temporary folders. The
 * first failed call ends the run with exit status 1: a benchmark of
 * failures measures nothing. A missed target is a figure, not a failure:
 * the exit status is 0 (timed assertions belong nowhere, least of all in
 * tests).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/wait.h>

#include <natomic.h>

#include "bench_budget.h"
#include "bench_client.h"
#include "bench_json.h"
#include "bench_options.h"
#include "bench_stats.h"
#include "conversions.pb-c.h"
#include "conversions_service.h"
#include "conversions_store.h"
#include "embedded_nats.h"
#include "process.h"
#include "raw_conversions.h"

#define LATENCY_TARGET 1.10           /* natomic/raw median latency at most this (DESIGN §5)  */
#define THROUGHPUT_TARGET 0.90        /* natomic/raw throughput at least this                 */
#define FAULTS_LATENCY_TARGET 1.02    /* fp in/fp out median latency at most this (DESIGN §5) */
#define FAULTS_THROUGHPUT_TARGET 0.98 /* fp in/fp out throughput at least this                */
#define EVENT_WAIT_MS 5000
#define READY_WAIT_MS 10000 /* a child server answers within this after its start */
#define PROBE_TIMEOUT_MS 200
#define CHILD_STOP_MS 10000 /* SIGTERM, then SIGKILL after this                    */

#define PROGRAM "natomic-bench" /* how its messages start */

/*
 * Whether this build can compare fault points compiled in and out: not
 * when the whole project was configured with -Dfault_points=disabled
 * (the flag then reaches this file too, and neither child server is built).
 */
#ifdef NATOMIC_NO_FAULT_POINTS
static const bool faults_comparable = false;
#else
static const bool faults_comparable = true;
#endif
#define FAULTS_SKIPPED_WHY                                                                                     \
    "this build is configured with -Dfault_points=disabled (NATOMIC_NO_FAULT_POINTS project-wide), so there " \
    "is no compiled-in build to compare with; reconfigure with -Dfault_points=enabled"

typedef enum server_kind { SERVER_RAW, SERVER_NATOMIC, SERVER_FP_IN, SERVER_FP_OUT, SERVER_COUNT } server_kind_t;

static const char *const server_name[SERVER_COUNT] = {"raw nats.c", "natomic", "fp in", "fp out"};
static const char *const server_key[SERVER_COUNT] = {"raw", "natomic", "compiled_in", "compiled_out"};
/* The child program of each kind, next to natomic-bench; NULL: served inside this process. */
static const char *const server_program[SERVER_COUNT] = {NULL, NULL, "natomic-bench-server",
                                                         "natomic-bench-server-nofp"};

/* A comparison: a candidate server against a baseline, with the targets on their ratios. */
typedef struct comparison_spec {
    const char *title;
    server_kind_t base;
    server_kind_t cand;
    double latency_target;    /* cand/base median latency at most this */
    double throughput_target; /* cand/base throughput at least this    */
} comparison_spec_t;

static const comparison_spec_t natomic_vs_raw = {"libnatomic vs raw nats.c", SERVER_RAW, SERVER_NATOMIC,
                                                 LATENCY_TARGET, THROUGHPUT_TARGET};
static const comparison_spec_t faults_in_vs_out = {"fault points compiled in vs out", SERVER_FP_OUT, SERVER_FP_IN,
                                                   FAULTS_LATENCY_TARGET, FAULTS_THROUGHPUT_TARGET};

typedef struct options {
    int calls;            /* sequential calls timed for latency            */
    int warmup;           /* untimed calls before each phase               */
    int throughput_calls; /* calls timed for throughput                    */
    int concurrency;      /* client threads for throughput                 */
    int rounds;           /* measurements per server                       */
    int workers;          /* server threads, both servers                  */
    int max_seconds;      /* time budget of the whole run                  */
    bool faults_only;     /* only the fault-point comparison               */
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
          "Then, in the same run, the cost of fault points compiled in but disabled:\n"
          "natomic-bench-server (fault points in, none enabled) against\n"
          "natomic-bench-server-nofp (the same code built with -DNATOMIC_NO_FAULT_POINTS),\n"
          "each started as a child process, rounds alternating; target: at most 2% on\n"
          "median latency and on throughput. Those servers run outside natomic-bench,\n"
          "the first two inside it: compare ratios, not figures, across the two.\n"
          "Skipped (and said so) in a build configured with -Dfault_points=disabled.\n"
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
          "  --faults-only         only the fault points comparison (in vs out)\n"
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

enum {
    OPT_CALLS = 1000,
    OPT_WARMUP,
    OPT_THROUGHPUT_CALLS,
    OPT_CONCURRENCY,
    OPT_ROUNDS,
    OPT_WORKERS,
    OPT_MAX_SECONDS,
    OPT_QUICK,
    OPT_FAULTS_ONLY,
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
        {"faults-only", no_argument, NULL, OPT_FAULTS_ONLY},
        {"json", required_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* -1: not given; applied over the defaults (or --quick's) at the end. */
    options_t given = {.calls = -1, .warmup = -1, .throughput_calls = -1, .concurrency = -1, .rounds = -1,
                       .workers = -1, .max_seconds = -1, .json = NULL};
    bool quick = false, faults_only = false;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case OPT_CALLS:
            ok = bench_option_count(&given.calls, PROGRAM, "--calls", optarg, 1, 10000000);
            break;
        case OPT_WARMUP:
            ok = bench_option_count(&given.warmup, PROGRAM, "--warmup", optarg, 0, 10000000);
            break;
        case OPT_THROUGHPUT_CALLS:
            ok = bench_option_count(&given.throughput_calls, PROGRAM, "--throughput-calls", optarg, 1, 10000000);
            break;
        case OPT_CONCURRENCY:
            ok = bench_option_count(&given.concurrency, PROGRAM, "--concurrency", optarg, 1, 1024);
            break;
        case OPT_ROUNDS:
            ok = bench_option_count(&given.rounds, PROGRAM, "--rounds", optarg, 1, 100);
            break;
        case OPT_WORKERS:
            ok = bench_option_count(&given.workers, PROGRAM, "--workers", optarg, 1, 1024);
            break;
        case OPT_MAX_SECONDS:
            ok = bench_option_count(&given.max_seconds, PROGRAM, "--max-seconds", optarg, 1, 24 * 3600);
            break;
        case OPT_QUICK:
            quick = true;
            break;
        case OPT_FAULTS_ONLY:
            faults_only = true;
            break;
        case OPT_JSON:
            ok = bench_option_json(&given.json, PROGRAM, optarg);
            break;
        case 'h':
            usage(stdout);
            return 1;
        default: /* ':' a value missing, '?' an unknown option */
            bench_option_complain(PROGRAM, c, argv);
            ok = false;
            break;
        }
        if (!ok)
            return 2;
    }
    if (!bench_options_finish(PROGRAM, argc, argv, given.json))
        return 2;
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
    opt->faults_only = faults_only;
    opt->json = given.json;
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
/* Child servers (the fault-point comparison)                          */
/* ------------------------------------------------------------------ */

/* Prints the end of a child's log on stderr, for a failed measurement. */
static void print_log_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char buf[2048];
    long start = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        start = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    }
    fseek(f, start, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (n > 0)
        fprintf(stderr, "natomic-bench: the end of %s:\n%s%s", path, buf, buf[n - 1] == '\n' ? "" : "\n");
}

/* What a wait status says, for a message. */
static void describe_status(char *out, size_t cap, int status)
{
    if (WIFEXITED(status))
        snprintf(out, cap, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, cap, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(out, cap, "wait status %d", status);
}

/*
 * Waits until the child answers a call (a negative length, refused and
 * rolled back: no row, no event), at most READY_WAIT_MS. 0, or -1 with a
 * message when it exited, did not answer in time, or the run is stopping.
 */
static int child_wait_ready(lab_process_t *proc, const bench_t *b, const char *program)
{
    int64_t until = bench_now_ns() + (int64_t)READY_WAIT_MS * 1000000;
    for (;;) {
        int status = 0;
        if (waitpid(proc->pid, &status, WNOHANG) == proc->pid) {
            proc->pid = 0;
            char why[96];
            describe_status(why, sizeof why, status);
            fprintf(stderr, "natomic-bench: %s ended before it answered (%s)\n", program, why);
            return -1;
        }
        Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
        req.inches = -1.0;
        ProtobufCMessage *reply = NULL;
        natomic_call_info_t info;
        natomic_status_t st = natomic_request(&reply, b->client, BENCH_SUBJECT, &req.base,
                                              &conversions__inches_to_cm_reply__descriptor, PROBE_TIMEOUT_MS, &info);
        if (st == NATOMIC_OK)
            protobuf_c_message_free_unpacked(reply, NULL);
        if (st != NATOMIC_ENORESPONDERS && st != NATOMIC_ETIMEOUT)
            return 0; /* it answered; bench_check_refusal() checks what */
        if (bench_should_stop())
            return -1;
        if (bench_now_ns() >= until) {
            fprintf(stderr, "natomic-bench: %s did not answer within %d ms (last: %s)\n", program, READY_WAIT_MS,
                    natomic_status_name(st));
            return -1;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Starts the child program of `kind` (next to this binary) and waits until it answers. 0 or -1. */
/* The path of the child program of `kind` into path[PATH_MAX]; 0, or -1 with a message when it is not there. */
static int child_program_path(char *path, server_kind_t kind)
{
    if (lab_sibling_path(path, PATH_MAX, server_program[kind]) != 0 || access(path, X_OK) != 0) {
        fprintf(stderr, "natomic-bench: cannot find %s next to natomic-bench (it is built with it: ninja -C build)\n",
                server_program[kind]);
        return -1;
    }
    return 0;
}

static int child_start(lab_process_t *proc, const bench_t *b, server_kind_t kind, const char *db, const char *log)
{
    char path[PATH_MAX];
    if (child_program_path(path, kind) != 0)
        return -1;
    char url[256], dbarg[400], workers[16], tmpdir[300];
    snprintf(url, sizeof url, "%s", b->url);
    snprintf(dbarg, sizeof dbarg, "%s", db);
    snprintf(workers, sizeof workers, "%d", b->opt.workers);
    /* libfiu's remote control FIFOs of the child land in this run's folder. */
    snprintf(tmpdir, sizeof tmpdir, "TMPDIR=%s", b->dir);
    char opt_nats[] = "--nats", opt_db[] = "--db", opt_workers[] = "--workers";
    char *const argv[] = {path, opt_nats, url, opt_db, dbarg, opt_workers, workers, NULL};
    char *const env[] = {tmpdir, NULL};
    /* Its own process group: a Ctrl-C at the terminal reaches natomic-bench, which stops it. */
    if (lab_process_start_group(proc, argv, log, env) != 0)
        return -1;
    return child_wait_ready(proc, b, server_program[kind]);
}

/* Stops the child with SIGTERM (calls in flight finish) and removes what it left in the run's folder. 0 when it
 * exited with status 0. */
static int child_stop(lab_process_t *proc, const bench_t *b, server_kind_t kind)
{
    if (proc->pid <= 0)
        return -1; /* it never ran, or ended by itself (already reported) */
    pid_t pid = proc->pid;
    int status = lab_process_stop(proc, SIGTERM, CHILD_STOP_MS);
    /* libfiu removes its FIFOs at exit; after a SIGKILL they are still there. */
    static const char *const fifo_suffixes[] = {"in", "out"};
    for (size_t i = 0; i < sizeof fifo_suffixes / sizeof fifo_suffixes[0]; i++) {
        char fifo[400];
        snprintf(fifo, sizeof fifo, "%s/fiu-ctrl-%d.%s", b->dir, (int)pid, fifo_suffixes[i]);
        unlink(fifo);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    char why[96];
    describe_status(why, sizeof why, status);
    fprintf(stderr, "natomic-bench: %s did not stop cleanly (%s)\n", server_program[kind], why);
    return -1;
}

/* ------------------------------------------------------------------ */
/* One measurement                                                     */
/* ------------------------------------------------------------------ */

/* The servers behind one measurement: one of svc, raw and proc is set once started. */
typedef struct server {
    server_kind_t kind;
    natsConnection *nc;
    conversions_store_t *store; /* in-process servers only; a child opens its own */
    natomic_service_t *svc;
    raw_conversions_t *raw;
    lab_process_t proc;
} server_t;

/* Starts `s->kind` on its own connection and store at `db`; a child logs to `log`. 0, or -1 with a message (release
 * with server_stop). */
static int server_start(server_t *s, const bench_t *b, const char *db, const char *log)
{
    if (server_program[s->kind] != NULL)
        return child_start(&s->proc, b, s->kind, db, log);
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

/* Stops the server (calls in flight finish) and closes its connection; keeps the store open. 0, or -1 when a child
 * did not exit cleanly. */
static int server_stop(server_t *s, const bench_t *b)
{
    if (server_program[s->kind] != NULL)
        return child_stop(&s->proc, b, s->kind);
    natomic_service_destroy(s->svc);
    s->svc = NULL;
    raw_conversions_stop(s->raw);
    s->raw = NULL;
    natsConnection_Destroy(s->nc);
    s->nc = NULL;
    return 0;
}

/* Starts one server, checks it, measures it, stops it, checks what it left. 0 or -1. */
static int measure(bench_t *b, server_kind_t kind, int round, figures_t *out)
{
    const options_t *o = &b->opt;
    bool child = server_program[kind] != NULL;
    char db[400], log[400];
    snprintf(db, sizeof db, "%s/%s-%d.db", b->dir, server_key[kind], round);
    snprintf(log, sizeof log, "%s/%s-%d.log", b->dir, server_key[kind], round);
    server_t s = {.kind = kind};
    figures_t f = {0};
    bench_latency_t lat = {0};
    int64_t t0 = bench_now_ns();
    atomic_store(&b->events_seen, 0);

    int rc = server_start(&s, b, db, log);
    if (rc == 0 && !bench_check_refusal(b->client))
        rc = -1;
    if (rc == 0)
        rc = bench_latency_run(&lat, b->client, o->warmup, o->calls);
    if (rc == 0)
        rc = bench_throughput_run(&f.calls_per_s, b->client, o->concurrency, o->warmup, o->throughput_calls);
    if (server_stop(&s, b) != 0)
        rc = -1;

    /* Every successful call saved one row and sent one event; the refused ones neither. */
    long expected = 2L * o->warmup + o->calls + o->throughput_calls;
    if (rc == 0 && !events_arrived(b, expected))
        rc = -1;
    /* A child's database is closed now that it exited: read it here. */
    if (rc == 0 && s.store == NULL && conversions_store_open(&s.store, db) != 0)
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
    if (child) {
        if (rc != 0 && bench_stop_reason() == NULL)
            print_log_tail(log); /* a failure, not a stop: what the server said may tell why */
        if (unlink(log) != 0 && errno != ENOENT)
            fprintf(stderr, "natomic-bench: cannot remove %s: %s\n", log, strerror(errno));
    }
    if (rc != 0) {
        const char *why = bench_stop_reason();
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

/* Median of one field over the rounds; `field` is an offset into figures_t. */
static double median_over_rounds(const figures_t *rounds, int n, size_t field)
{
    double *v = malloc((size_t)n * sizeof *v);
    if (v == NULL)
        return NAN;
    for (int i = 0; i < n; i++)
        memcpy(&v[i], (const char *)&rounds[i] + field, sizeof v[i]);
    double m = bench_stats_median(v, n);
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

/*
 * One comparison judged: medians over rounds, their ratios (candidate /
 * baseline), the verdicts; and how sure they are. Neighbouring
 * measurements form a pair per round; the median of the per-round ratios
 * lies in [lo, hi] with probability `coverage` whatever their distribution
 * (the sign-test interval: order statistics k and n-k+1 of n ratios, k the
 * largest rank giving at least 95%; with few rounds it is min..max and
 * covers less). A verdict is "resolved" when that whole interval is on one
 * side of the target: then the machine's noise cannot have made it.
 */
typedef struct verdict {
    const comparison_spec_t *spec;
    figures_t base;
    figures_t cand;
    double latency_median_ratio;
    double latency_p99_ratio;
    double throughput_ratio;
    bool latency_median_pass;
    bool latency_p99_pass;
    bool throughput_pass;
    bool has_interval; /* at least 2 rounds */
    double coverage;
    double latency_lo, latency_hi;
    double throughput_lo, throughput_hi;
    bool latency_resolved;
    bool throughput_resolved;
} verdict_t;

/* Fills the interval fields of `v` from the per-round ratios (nothing with one round). */
static void judge_noise(verdict_t *v, const bench_t *b)
{
    int n = b->opt.rounds;
    if (n < 2)
        return;
    double *lat = malloc((size_t)n * sizeof *lat), *thr = malloc((size_t)n * sizeof *thr);
    if (lat == NULL || thr == NULL) {
        free(lat);
        free(thr);
        return;
    }
    for (int r = 0; r < n; r++) {
        const figures_t *base = &b->results[v->spec->base][r], *cand = &b->results[v->spec->cand][r];
        lat[r] = cand->median_us / base->median_us;
        thr[r] = cand->calls_per_s / base->calls_per_s;
    }
    bench_stats_median_interval(lat, n, &v->latency_lo, &v->latency_hi, &v->coverage);
    bench_stats_median_interval(thr, n, &v->throughput_lo, &v->throughput_hi, &v->coverage);
    free(lat);
    free(thr);
    v->has_interval = true;
    v->latency_resolved = v->latency_hi <= v->spec->latency_target || v->latency_lo > v->spec->latency_target;
    v->throughput_resolved =
        v->throughput_lo >= v->spec->throughput_target || v->throughput_hi < v->spec->throughput_target;
}

static verdict_t judge(const bench_t *b, const comparison_spec_t *spec)
{
    verdict_t v = {.spec = spec};
    v.base = summarize(b->results[spec->base], b->opt.rounds);
    v.cand = summarize(b->results[spec->cand], b->opt.rounds);
    v.latency_median_ratio = v.cand.median_us / v.base.median_us;
    v.latency_p99_ratio = v.cand.p99_us / v.base.p99_us;
    v.throughput_ratio = v.cand.calls_per_s / v.base.calls_per_s;
    v.latency_median_pass = v.latency_median_ratio <= spec->latency_target;
    v.latency_p99_pass = v.latency_p99_ratio <= spec->latency_target;
    v.throughput_pass = v.throughput_ratio >= spec->throughput_target;
    judge_noise(&v, b);
    return v;
}

/* The table, the rounds and the per-round ratios of one comparison. */
static void print_figures(const bench_t *b, const verdict_t *v)
{
    const options_t *o = &b->opt;
    const server_kind_t kinds[2] = {v->spec->base, v->spec->cand};
    const figures_t *medians[2] = {&v->base, &v->cand};
    printf("  %-12s %12s %12s %20s\n", "server", "median µs", "p99 µs", "throughput calls/s");
    for (int i = 0; i < 2; i++)
        printf("  %-12s %12.1f %12.1f %20.0f\n", server_name[kinds[i]], medians[i]->median_us, medians[i]->p99_us,
               medians[i]->calls_per_s);
    if (o->rounds > 1) {
        printf("\n  per round (median µs / p99 µs / calls/s):\n");
        for (int i = 0; i < 2; i++) {
            printf("    %-11s", server_name[kinds[i]]);
            for (int r = 0; r < o->rounds; r++)
                printf("  %.1f / %.1f / %.0f", b->results[kinds[i]][r].median_us, b->results[kinds[i]][r].p99_us,
                       b->results[kinds[i]][r].calls_per_s);
            printf("\n");
        }
        /* Neighbouring measurements share the machine's state: their ratio shows how steady it was. */
        printf("    median latency ratio of each round (%s/%s):", server_name[kinds[1]], server_name[kinds[0]]);
        for (int r = 0; r < o->rounds; r++)
            printf(" %.3f", b->results[kinds[1]][r].median_us / b->results[kinds[0]][r].median_us);
        printf("\n    throughput ratio of each round (%s/%s):    ", server_name[kinds[1]], server_name[kinds[0]]);
        for (int r = 0; r < o->rounds; r++)
            printf(" %.3f", b->results[kinds[1]][r].calls_per_s / b->results[kinds[0]][r].calls_per_s);
        printf("\n");
    }
}

static void print_natomic_vs_raw(const bench_t *b, const verdict_t *v)
{
    printf("\n%s -- both servers inside natomic-bench (natomic through libnatomic.so)\n\n", v->spec->title);
    print_figures(b, v);
    printf("\n  latency ratio (natomic/raw, target ≤ %.2f)      median %6.3f  %s\n", v->spec->latency_target,
           v->latency_median_ratio, v->latency_median_pass ? "PASS" : "MISS");
    printf("  %-47s p99    %6.3f  %s  (the target is on the median)\n", "", v->latency_p99_ratio,
           v->latency_p99_pass ? "PASS" : "MISS");
    printf("  throughput ratio (natomic/raw, target ≥ %.2f)          %6.3f  %s\n", v->spec->throughput_target,
           v->throughput_ratio, v->throughput_pass ? "PASS" : "MISS");
}

/* v is NULL when the comparison was skipped. */
static void print_faults(const bench_t *b, const verdict_t *v)
{
    printf("\n%s -- %s\n", faults_in_vs_out.title,
           v != NULL ? "each server a child process" : "skipped");
    if (v == NULL) {
        printf("  %s.\n", FAULTS_SKIPPED_WHY);
        printf("\n  fault points compiled in vs out: skipped\n");
        return;
    }
    printf("  fp in:  %s, the library objects as built (fault points in, none enabled)\n",
           server_program[SERVER_FP_IN]);
    printf("  fp out: %s, the same code compiled with -DNATOMIC_NO_FAULT_POINTS\n", server_program[SERVER_FP_OUT]);
    printf("  method: separate processes, library linked statically in both, rounds in ABBA order.\n");
    if (!b->opt.faults_only)
        printf("  This differs from the rounds above (servers inside natomic-bench, shared libnatomic):\n"
               "  compare the ratios of each section, not figures across sections.\n");
    printf("\n");
    print_figures(b, v);
    printf("\n  fault points compiled in vs out: latency ratio %.3f (target ≤ %.2f) %s, "
           "throughput ratio %.3f (target ≥ %.2f) %s\n",
           v->latency_median_ratio, v->spec->latency_target, v->latency_median_pass ? "PASS" : "MISS",
           v->throughput_ratio, v->spec->throughput_target, v->throughput_pass ? "PASS" : "MISS");
    printf("  (latency: medians of sequential calls; p99 ratio %.3f, for information)\n", v->latency_p99_ratio);
    /* A 2% target is close to what the machine itself varies: say whether this run could tell. */
    if (!v->has_interval) {
        printf("  noise: one round gives no idea of it; use --rounds 5 or more for a verdict\n");
        return;
    }
    printf("  noise: the per-round ratios put their median in latency %.3f..%.3f, throughput %.3f..%.3f\n"
           "         (%.1f%% interval over %d rounds); latency verdict %s, throughput verdict %s\n",
           v->latency_lo, v->latency_hi, v->throughput_lo, v->throughput_hi, 100.0 * v->coverage, b->opt.rounds,
           v->latency_resolved ? "resolved" : "within noise", v->throughput_resolved ? "resolved" : "within noise");
    if (!v->latency_resolved || !v->throughput_resolved)
        printf("         (within noise: this run cannot tell a 2%% cost from none; more --rounds narrow it)\n");
}

static void print_header(const bench_t *b, int port)
{
    const options_t *o = &b->opt;
    printf("\nnatomic-bench: conversions.inches_to_cm%s\n",
           o->faults_only ? ", fault points compiled in vs out" : ", libnatomic vs raw nats.c; fault points in vs out");
    printf("  nats-server on 127.0.0.1:%d, %ld CPUs online, %d worker threads per server\n", port,
           sysconf(_SC_NPROCESSORS_ONLN), o->workers);
    printf("  latency: %d sequential calls after %d warm-up; throughput: %d calls from %d clients\n", o->calls,
           o->warmup, o->throughput_calls, o->concurrency);
    printf("  %d round%s per server, alternating; each figure is the median over rounds\n", o->rounds,
           o->rounds == 1 ? "" : "s");
}

static json_t *figures_json(const figures_t *f)
{
    return json_pack("{s:f, s:f, s:f}", "median_us", f->median_us, "p99_us", f->p99_us, "calls_per_s",
                     f->calls_per_s);
}

/* One server's entry: its medians, its name, its rounds (and its program for a child). */
static json_t *server_json(const bench_t *b, server_kind_t k, const figures_t *median)
{
    json_t *rounds = json_array();
    for (int r = 0; rounds != NULL && r < b->opt.rounds; r++)
        json_array_append_new(rounds, figures_json(&b->results[k][r]));
    json_t *s = figures_json(median);
    if (s == NULL) {
        json_decref(rounds);
        return NULL;
    }
    json_object_set_new(s, "name", json_string(server_name[k]));
    json_object_set_new(s, "rounds", rounds);
    if (server_program[k] != NULL)
        json_object_set_new(s, "program", json_string(server_program[k]));
    return s;
}

/* "servers", "ratios", "targets" and "pass" of one comparison, set into `into`. */
static void comparison_json(json_t *into, const bench_t *b, const verdict_t *v)
{
    json_t *servers = json_object();
    if (servers != NULL) {
        json_object_set_new(servers, server_key[v->spec->base], server_json(b, v->spec->base, &v->base));
        json_object_set_new(servers, server_key[v->spec->cand], server_json(b, v->spec->cand, &v->cand));
    }
    json_object_set_new(into, "servers", servers);
    json_object_set_new(into, "ratios",
                        json_pack("{s:f, s:f, s:f}", "latency_median", v->latency_median_ratio, "latency_p99",
                                  v->latency_p99_ratio, "throughput", v->throughput_ratio));
    json_object_set_new(into, "targets", json_pack("{s:f, s:f}", "latency_max", v->spec->latency_target,
                                                   "throughput_min", v->spec->throughput_target));
    json_object_set_new(into, "pass",
                        json_pack("{s:b, s:b, s:b}", "latency_median", v->latency_median_pass, "latency_p99",
                                  v->latency_p99_pass, "throughput", v->throughput_pass));
    if (v->has_interval)
        json_object_set_new(into, "noise",
                            json_pack("{s:f, s:[f, f], s:[f, f], s:b, s:b}", "coverage", v->coverage,
                                      "latency_median_ratio_interval", v->latency_lo, v->latency_hi,
                                      "throughput_ratio_interval", v->throughput_lo, v->throughput_hi,
                                      "latency_resolved", v->latency_resolved, "throughput_resolved",
                                      v->throughput_resolved));
}

/*
 * Writes the figures to `path`; 0, or -1 with a message. libnatomic vs raw
 * nats.c at the top level (absent with --faults-only), the fault-point
 * comparison under "fault_points" ({"compared": false, "skipped": why}
 * when it could not run).
 */
static int write_json(const bench_t *b, const verdict_t *main_v, const verdict_t *faults_v, const char *path)
{
    const options_t *o = &b->opt;
    json_t *doc = json_pack("{s:s, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b}}", "benchmark",
                            "conversions.inches_to_cm", "config", "calls", o->calls, "warmup", o->warmup,
                            "throughput_calls", o->throughput_calls, "concurrency", o->concurrency, "rounds",
                            o->rounds, "workers", o->workers, "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN),
                            "faults_only", o->faults_only);
    if (doc != NULL && main_v != NULL) {
        comparison_json(doc, b, main_v);
        json_object_set_new(doc, "method", json_string("servers inside natomic-bench; natomic through libnatomic.so"));
    }
    json_t *fp = doc != NULL ? json_object() : NULL;
    if (fp != NULL) {
        json_object_set_new(fp, "compared", json_boolean(faults_v != NULL));
        if (faults_v != NULL) {
            comparison_json(fp, b, faults_v);
            json_object_set_new(fp, "method", json_string("each server a child process, library linked statically, "
                                                          "rounds in ABBA order"));
        } else {
            json_object_set_new(fp, "skipped", json_string(FAULTS_SKIPPED_WHY));
        }
        json_object_set_new(doc, "fault_points", fp);
    }
    if (fp == NULL) { /* out of memory: no document to write */
        json_decref(doc);
        doc = NULL;
    }
    return bench_json_write(doc, PROGRAM, path);
}

/* ------------------------------------------------------------------ */
/* The run                                                             */
/* ------------------------------------------------------------------ */

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

/*
 * All rounds of one comparison. The baseline goes first in every round
 * (`abba` false: raw, natomic, raw, natomic, ...) or in odd rounds only
 * (`abba` true: base, cand, cand, base, base, ...). 0, or -1 when a
 * measurement failed or the run was stopped.
 */
static int run_rounds(bench_t *b, const comparison_spec_t *spec, bool abba)
{
    for (int r = 1; r <= b->opt.rounds; r++) {
        server_kind_t order[2] = {spec->base, spec->cand};
        if (abba && r % 2 == 0) {
            order[0] = spec->cand;
            order[1] = spec->base;
        }
        for (int i = 0; i < 2; i++) {
            if (bench_should_stop())
                return -1;
            if (measure(b, order[i], r, &b->results[order[i]][r - 1]) != 0)
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
    bench_budget_start(b.opt.max_seconds);

    bool run_main = !b.opt.faults_only, run_faults = faults_comparable;
    if (!faults_comparable)
        fprintf(stderr, "natomic-bench: fault points compiled in vs out: skipped: %s\n", FAULTS_SKIPPED_WHY);
    if (run_faults) {
        /* Before any measurement, not after the first comparison has been run for nothing. */
        char path[PATH_MAX];
        if (child_program_path(path, SERVER_FP_IN) != 0 || child_program_path(path, SERVER_FP_OUT) != 0)
            return 1;
    }

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
    if (!run_main && !run_faults) {
        /* --faults-only in a build without fault points: nothing to measure, and that is the answer. */
        printf("\nnatomic-bench: fault points compiled in vs out: skipped\n  %s.\n", FAULTS_SKIPPED_WHY);
        fflush(stdout);
        rc = 0;
        if (b.opt.json != NULL && write_json(&b, NULL, NULL, b.opt.json) != 0)
            rc = 1;
        goto out;
    }
    fprintf(stderr, "natomic-bench: starting nats-server\n");
    if (embedded_nats_start(&ns) != 0)
        goto out;
    nats_started = true;
    b.url = ns.url;
    if (connect_observers(&b) != 0)
        goto out;
    if (run_main) {
        fprintf(stderr, "natomic-bench: nats-server on %s; %d round%s of raw nats.c then natomic (in this process)\n",
                ns.url, b.opt.rounds, b.opt.rounds == 1 ? "" : "s");
        if (run_rounds(&b, &natomic_vs_raw, false) != 0)
            goto out;
    }
    if (run_faults) {
        fprintf(stderr,
                "natomic-bench: nats-server on %s; %d round%s of fault points compiled in and out "
                "(child processes, ABBA)\n",
                ns.url, b.opt.rounds, b.opt.rounds == 1 ? "" : "s");
        if (run_rounds(&b, &faults_in_vs_out, true) != 0)
            goto out;
    }

    verdict_t main_v, faults_v;
    if (run_main)
        main_v = judge(&b, &natomic_vs_raw);
    if (run_faults)
        faults_v = judge(&b, &faults_in_vs_out);
    print_header(&b, ns.port);
    if (run_main)
        print_natomic_vs_raw(&b, &main_v);
    print_faults(&b, run_faults ? &faults_v : NULL);
    fflush(stdout);
    rc = 0;
    if (b.opt.json != NULL) {
        if (write_json(&b, run_main ? &main_v : NULL, run_faults ? &faults_v : NULL, b.opt.json) != 0)
            rc = 1;
        else
            fprintf(stderr, "natomic-bench: figures written to %s\n", b.opt.json);
    }

out:
    if (rc != 0 && bench_stop_reason() != NULL)
        fprintf(stderr, "natomic-bench: run stopped: %s; no figures\n", bench_stop_reason());
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
