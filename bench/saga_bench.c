/*
 * natomic-bench-saga -- what durable mode costs on the order saga, and
 * how fast it recovers from an orchestrator crash (DESIGN §3.7, §5).
 *
 * What is measured. orders.create_order, the saga of the example domain:
 * validate, save the order, inventory.reserve, payments.charge, confirm,
 * publish order_created (services/orders/orders_service.c). Every call is
 * one book for 100 cents by one customer, against stock and money seeded
 * to cover all of them, so every call must succeed.
 *   1. Memory vs durable. The same four service binaries, started in
 *      memory mode or in durable mode (the saga log in JetStream KV, the
 *      outbox, the decision table; the essays of libatomic/src/durable.c,
 *      saga_log.c, recovery.c, outbox.c). For each mode:
 *        - latency: sequential calls from one thread, each timed alone
 *          around natomic_request() (median and p99, µs);
 *        - throughput: `concurrency` client threads on one connection
 *          make a fixed number of calls (sagas/s, from their common start
 *          to the last reply);
 *      each after untimed warm-up calls. After each of the two, the
 *      invariants are checked from outside (saga_session.c: stock and
 *      money conserved and matching the confirmed orders, every order
 *      'confirmed' by get_order, one order_created per order by distinct
 *      Natomic-Event-Id, one notification per order). A broken invariant
 *      is said at once, in the table and in the exit status: it is a bug
 *      of the library or the services, not noise.
 *   2. Recovery (--recovery N). N times: a fresh durable session whose
 *      orders crashes after the charge (saga_recovery.c), then
 *      supervisor_restart("orders"); from just before the restart: when
 *      the saga's "ended" recovery event arrives, when stock and money are
 *      back as seen by get_stock / get_balance, and when orders answers
 *      $SRV.PING (which separates starting a process from recovering).
 *      Median, p90 and max of each, and the target of DESIGN §5 (all
 *      compensations done <= 1 s after the restart) met or missed.
 *
 * How. Every measurement starts a session of its own (saga_session.c):
 * an embedded nats-server with JetStream in a fresh temporary folder and
 * the four services as child processes of the lab's supervisor, each
 * behind the supervisor's pass-through TCP proxy (a thread of this
 * process). The proxies, the client threads and the services share this
 * machine's CPUs; they are the same in both modes, so the ratios compare
 * the modes, while the absolute figures are this set-up's, not a
 * production one's. The rounds interleave (memory, durable, memory,
 * durable, ...) so that drift of the machine hits both modes alike; each
 * figure is the median over rounds and the ratios are taken between those
 * medians. As in natomic-bench, the neighbouring measurements of one
 * round make a pair: their ratio per round shows how steady the machine
 * was, and the sign-test interval of the median of those ratios says how
 * far the reported ratio can be trusted.
 *
 * Bounds. Counts are fixed by the options; each call times out (10 s for
 * a measured call, 1 s for the call that crashes orders); every wait for
 * an event, a process or a state is bounded; the whole run stops after
 * --max-seconds or on SIGINT / SIGTERM. Everything started is stopped
 * (supervisor_stop) on every path, and the temporary folders removed.
 *
 * Exit status: 0 when the run completed and every invariant held (a missed
 * target is a figure, not a failure); 1 when it failed (a call failed, a
 * process would not start) or was stopped; 2 for bad options; 3 when it
 * completed but an invariant was broken or a recovery did not finish.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <natomic.h>

#include "bench_budget.h"
#include "bench_json.h"
#include "bench_options.h"
#include "bench_stats.h"
#include "saga_recovery.h"
#include "saga_session.h"

#define RECOVERY_TARGET_MS 1000.0 /* DESIGN §5: compensations done <= 1 s after the restart */
#define STOCK_MARGIN 100          /* orders the seed covers beyond those planned            */

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

typedef enum mode { MODE_MEMORY, MODE_DURABLE, MODE_COUNT } saga_mode_t;

static const char *const mode_name[MODE_COUNT] = {"memory", "durable"};

typedef struct options {
    int rounds;           /* measurements per mode, interleaved        */
    int calls;            /* sequential orders timed for latency       */
    int warmup;           /* untimed orders before each phase          */
    int throughput_calls; /* orders timed for throughput               */
    int concurrency;      /* client threads for throughput             */
    int recovery;         /* recovery runs; 0: none                    */
    bool recovery_only;   /* skip the memory vs durable comparison     */
    int max_seconds;      /* time budget of the whole run              */
    const char *json;     /* NULL: no JSON file                        */
} options_t;

/* One measurement of one mode. */
typedef struct figures {
    double median_us;
    double p99_us;
    double sagas_per_s;
    double seconds;           /* the whole measurement, start to stop */
    saga_check_t latency_check;    /* after the latency phase    */
    saga_check_t throughput_check; /* after the throughput phase */
} figures_t;

/* The medians over rounds, the ratios, and how steady the rounds were. */
typedef struct verdict {
    figures_t median[MODE_COUNT]; /* only the three figures are set */
    double latency_ratio;         /* durable/memory, medians        */
    double p99_ratio;
    double throughput_ratio;
    double spread_latency[MODE_COUNT];    /* (max - min) / median over rounds */
    double spread_throughput[MODE_COUNT];
    bool has_interval;                    /* at least 2 rounds */
    double coverage;
    double latency_lo, latency_hi;
    double throughput_lo, throughput_hi;
    int checks, checks_failed;            /* invariant checks made and failed */
} verdict_t;

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
    figures_t *results[MODE_COUNT]; /* [mode][round] */
    int rounds_done;
    saga_recovery_run_t *recovery;
    int recovery_done;
} bench_t;

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("Usage: natomic-bench-saga [options]\n"
          "\n"
          "Measures orders.create_order -- the order saga: reserve the stock, charge the\n"
          "customer, confirm, publish order_created -- with inventory, payments, orders\n"
          "and notifications started through the lab's supervisor, in memory mode and in\n"
          "durable mode, rounds interleaved, each measurement on a fresh nats-server and\n"
          "fresh stores. For each mode: median and p99 latency of sequential calls, and\n"
          "throughput of concurrent clients (sagas/s); then the ratios durable/memory and\n"
          "how much they varied between rounds. After each measurement the invariants are\n"
          "checked from outside: stock and money conserved, every order confirmed, one\n"
          "order_created (distinct Natomic-Event-Id) and one notification per order.\n"
          "\n"
          "With --recovery N, also (or with --recovery-only, only) the recovery time after\n"
          "an orchestrator crash in durable mode: N times, orders dies after charging\n"
          "(NATOMIC_FAULTS=" SAGA_RECOVERY_FAULTS ") and is restarted\n"
          "under the same instance name; measured from just before the restart: the\n"
          "saga's \"ended\" recovery event, stock and money back (get_stock/get_balance),\n"
          "and orders answering $SRV.PING. Median, p90 and max, against the target of\n"
          "DESIGN §5: all compensations done within 1 s of the restart.\n"
          "\n"
          "Options:\n"
          "  --rounds N            measurements per mode, interleaved (default 5)\n"
          "  --calls N             sequential orders timed for latency (default 500)\n"
          "  --warmup N            untimed orders before each phase (default 20)\n"
          "  --throughput-calls N  orders timed for throughput (default 1000)\n"
          "  --concurrency N       concurrent clients for throughput (default 8)\n"
          "  --recovery N          also measure recovery, N crash-and-restart runs (1..1000)\n"
          "  --recovery-only       only the recovery measurement (20 runs unless --recovery)\n"
          "  --max-seconds N       time budget of the whole run (default 1200)\n"
          "  --json FILE           also write every figure to FILE as JSON\n"
          "  -h, --help            show this help\n"
          "\n"
          "Progress goes to stderr, the tables to stdout. Exit status: 0 when the run\n"
          "completed and every invariant held (whether or not the targets were met), 1\n"
          "when it failed or was stopped, 2 for bad options, 3 when it completed but an\n"
          "invariant was broken or a recovery did not finish (a bug: the message says how).\n"
          "\n"
          "Environment: NATOMIC_NATS_SERVER (nats-server binary), NATOMIC_SERVICES_DIR\n"
          "(the services' folder, default ../services beside this program), NATOMIC_LOG\n"
          "(the library's log level in the services; the benchmark sets warn unless\n"
          "given), TMPDIR (where each session's NATS store, databases and logs go).\n",
          f);
}

enum {
    OPT_ROUNDS = 1000,
    OPT_CALLS,
    OPT_WARMUP,
    OPT_THROUGHPUT_CALLS,
    OPT_CONCURRENCY,
    OPT_RECOVERY,
    OPT_RECOVERY_ONLY,
    OPT_MAX_SECONDS,
    OPT_JSON,
};

/* Fills *opt from argv: 0 to run, 1 when help was shown, 2 for bad options (message printed). */
static int parse_options(options_t *opt, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"calls", required_argument, NULL, OPT_CALLS},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"throughput-calls", required_argument, NULL, OPT_THROUGHPUT_CALLS},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"recovery", required_argument, NULL, OPT_RECOVERY},
        {"recovery-only", no_argument, NULL, OPT_RECOVERY_ONLY},
        {"max-seconds", required_argument, NULL, OPT_MAX_SECONDS},
        {"json", required_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *opt = (options_t){.rounds = 5, .calls = 500, .warmup = 20, .throughput_calls = 1000, .concurrency = 8,
                       .recovery = -1, .max_seconds = 1200};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case OPT_ROUNDS:
            ok = bench_option_count(&opt->rounds, PROGRAM, "--rounds", optarg, 1, 100);
            break;
        case OPT_CALLS:
            ok = bench_option_count(&opt->calls, PROGRAM, "--calls", optarg, 1, 1000000);
            break;
        case OPT_WARMUP:
            ok = bench_option_count(&opt->warmup, PROGRAM, "--warmup", optarg, 0, 1000000);
            break;
        case OPT_THROUGHPUT_CALLS:
            ok = bench_option_count(&opt->throughput_calls, PROGRAM, "--throughput-calls", optarg, 1, 1000000);
            break;
        case OPT_CONCURRENCY:
            ok = bench_option_count(&opt->concurrency, PROGRAM, "--concurrency", optarg, 1, 256);
            break;
        case OPT_RECOVERY:
            ok = bench_option_count(&opt->recovery, PROGRAM, "--recovery", optarg, 1, 1000);
            break;
        case OPT_RECOVERY_ONLY:
            opt->recovery_only = true;
            break;
        case OPT_MAX_SECONDS:
            ok = bench_option_count(&opt->max_seconds, PROGRAM, "--max-seconds", optarg, 1, 24 * 3600);
            break;
        case OPT_JSON:
            ok = bench_option_json(&opt->json, PROGRAM, optarg);
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
    if (!bench_options_finish(PROGRAM, argc, argv, opt->json))
        return 2;
    if (opt->recovery < 0)
        opt->recovery = opt->recovery_only ? 20 : 0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Memory vs durable                                                   */
/* ------------------------------------------------------------------ */

/* Says on stderr what a broken invariant looks like, and how to see it again. */
static void report_broken(const saga_check_t *c, saga_mode_t mode, int round, const char *phase)
{
    fprintf(stderr, "natomic-bench-saga: INVARIANT BROKEN in round %d, %s mode, after the %s phase: %s\n", round,
            mode_name[mode], phase, c->failed);
}

/* One measurement of one mode: a session, latency, check, throughput, check, stop. 0 or -1. */
static int measure(bench_t *b, saga_mode_t mode, int round, figures_t *out)
{
    const options_t *o = &b->opt;
    figures_t f;
    memset(&f, 0, sizeof f);
    int64_t t0 = bench_now_ns();
    long long planned = 2LL * o->warmup + o->calls + o->throughput_calls + STOCK_MARGIN;
    saga_session_t *s = NULL;
    bench_latency_t lat = {0};
    int rc = saga_session_start(&s, mode == MODE_DURABLE, NULL);
    if (rc == 0)
        rc = saga_session_seed(s, planned * SAGA_QTY, planned * SAGA_AMOUNT);
    if (rc == 0)
        rc = saga_session_latency(s, o->warmup, o->calls, &lat);
    if (rc == 0)
        rc = saga_session_check(s, &f.latency_check);
    if (rc == 0 && !f.latency_check.ok) {
        report_broken(&f.latency_check, mode, round, "latency");
        saga_session_print_logs(s, 20);
    }
    if (rc == 0)
        rc = saga_session_throughput(s, o->concurrency, o->warmup, o->throughput_calls, &f.sagas_per_s);
    if (rc == 0)
        rc = saga_session_check(s, &f.throughput_check);
    if (rc == 0 && !f.throughput_check.ok) {
        report_broken(&f.throughput_check, mode, round, "throughput");
        saga_session_print_logs(s, 20);
    }
    if (rc != 0 && s != NULL && bench_stop_reason() == NULL)
        saga_session_print_logs(s, 20);
    saga_session_stop(s);
    if (rc != 0) {
        fprintf(stderr, "natomic-bench-saga: round %d of %s mode %s\n", round, mode_name[mode],
                bench_stop_reason() != NULL ? "stopped early" : "failed");
        return -1;
    }
    f.median_us = lat.median_us;
    f.p99_us = lat.p99_us;
    f.seconds = (double)(bench_now_ns() - t0) / 1e9;
    bool ok = f.latency_check.ok && f.throughput_check.ok;
    fprintf(stderr,
            "  round %d/%d  %-7s  median %8.1f µs   p99 %8.1f µs   %7.1f sagas/s   invariants %s   (%.1f s)\n", round,
            o->rounds, mode_name[mode], f.median_us, f.p99_us, f.sagas_per_s, ok ? "held" : "BROKEN", f.seconds);
    *out = f;
    return 0;
}

/* All rounds, memory then durable in each. 0, or -1 when a measurement failed or the run was stopped. */
static int run_rounds(bench_t *b)
{
    for (int r = 1; r <= b->opt.rounds; r++) {
        for (int m = 0; m < MODE_COUNT; m++) {
            if (bench_should_stop())
                return -1;
            if (measure(b, (saga_mode_t)m, r, &b->results[m][r - 1]) != 0)
                return -1;
        }
        b->rounds_done = r;
    }
    return 0;
}

/* (max - min) / median over n rounds of the median latency, or of the throughput when `throughput`;
 * NAN when out of memory. */
static double spread(const figures_t *rounds, int n, bool throughput)
{
    double lo = INFINITY, hi = -INFINITY;
    double *v = malloc((size_t)n * sizeof *v);
    if (v == NULL)
        return NAN;
    for (int r = 0; r < n; r++) {
        v[r] = throughput ? rounds[r].sagas_per_s : rounds[r].median_us;
        lo = fmin(lo, v[r]);
        hi = fmax(hi, v[r]);
    }
    double m = bench_stats_median(v, n);
    free(v);
    return (hi - lo) / m;
}

static verdict_t judge(const bench_t *b)
{
    int n = b->opt.rounds;
    verdict_t v;
    memset(&v, 0, sizeof v);
    double *a = malloc((size_t)n * sizeof *a), *t = malloc((size_t)n * sizeof *t);
    for (int m = 0; a != NULL && t != NULL && m < MODE_COUNT; m++) {
        const figures_t *rs = b->results[m];
        for (int r = 0; r < n; r++)
            a[r] = rs[r].median_us;
        v.median[m].median_us = bench_stats_median(a, n);
        for (int r = 0; r < n; r++)
            a[r] = rs[r].p99_us;
        v.median[m].p99_us = bench_stats_median(a, n);
        for (int r = 0; r < n; r++)
            a[r] = rs[r].sagas_per_s;
        v.median[m].sagas_per_s = bench_stats_median(a, n);
        v.spread_latency[m] = spread(rs, n, false);
        v.spread_throughput[m] = spread(rs, n, true);
        for (int r = 0; r < n; r++) {
            v.checks += 2;
            v.checks_failed += (rs[r].latency_check.ok ? 0 : 1) + (rs[r].throughput_check.ok ? 0 : 1);
        }
    }
    const figures_t *mem = &v.median[MODE_MEMORY], *dur = &v.median[MODE_DURABLE];
    v.latency_ratio = dur->median_us / mem->median_us;
    v.p99_ratio = dur->p99_us / mem->p99_us;
    v.throughput_ratio = dur->sagas_per_s / mem->sagas_per_s;
    if (n >= 2 && a != NULL && t != NULL) {
        for (int r = 0; r < n; r++) {
            a[r] = b->results[MODE_DURABLE][r].median_us / b->results[MODE_MEMORY][r].median_us;
            t[r] = b->results[MODE_DURABLE][r].sagas_per_s / b->results[MODE_MEMORY][r].sagas_per_s;
        }
        bench_stats_median_interval(a, n, &v.latency_lo, &v.latency_hi, &v.coverage);
        bench_stats_median_interval(t, n, &v.throughput_lo, &v.throughput_hi, &v.coverage);
        v.has_interval = true;
    }
    free(a);
    free(t);
    return v;
}

static void print_cost(const bench_t *b, const verdict_t *v)
{
    const options_t *o = &b->opt;
    printf("\nnatomic-bench-saga: orders.create_order (reserve, charge, confirm, order_created), memory vs durable\n");
    printf("  NATS and inventory, payments, orders, notifications through the lab's supervisor, each service\n"
           "  behind its pass-through proxy; a fresh session per measurement\n");
    printf("  latency: %d sequential orders after %d warm-up; throughput: %d orders from %d clients after %d\n",
           o->calls, o->warmup, o->throughput_calls, o->concurrency, o->warmup);
    printf("  %d round%s per mode, interleaved (memory, durable, ...); each figure is the median over rounds\n\n",
           o->rounds, o->rounds == 1 ? "" : "s");
    printf("  %-9s %12s %12s %12s   %s\n", "mode", "median µs", "p99 µs", "sagas/s", "invariants");
    for (int m = 0; m < MODE_COUNT; m++) {
        int broken = 0;
        for (int r = 0; r < o->rounds; r++)
            broken += (b->results[m][r].latency_check.ok ? 0 : 1) + (b->results[m][r].throughput_check.ok ? 0 : 1);
        printf("  %-9s %12.1f %12.1f %12.1f   ", mode_name[m], v->median[m].median_us, v->median[m].p99_us,
               v->median[m].sagas_per_s);
        if (broken == 0)
            printf("held (%d of %d checks)\n", 2 * o->rounds, 2 * o->rounds);
        else
            printf("BROKEN in %d of %d checks (see stderr)\n", broken, 2 * o->rounds);
    }
    printf("\n  durable/memory latency     median %6.3f   p99 %6.3f\n", v->latency_ratio, v->p99_ratio);
    printf("  durable/memory throughput         %6.3f\n", v->throughput_ratio);
    if (o->rounds > 1) {
        printf("\n  per round (median µs / p99 µs / sagas/s):\n");
        for (int m = 0; m < MODE_COUNT; m++) {
            printf("    %-8s", mode_name[m]);
            for (int r = 0; r < o->rounds; r++)
                printf("  %.0f / %.0f / %.1f", b->results[m][r].median_us, b->results[m][r].p99_us,
                       b->results[m][r].sagas_per_s);
            printf("\n");
        }
        printf("  spread between rounds ((max - min) / median):\n");
        for (int m = 0; m < MODE_COUNT; m++)
            printf("    %-8s  latency %5.1f%%   throughput %5.1f%%\n", mode_name[m], 100.0 * v->spread_latency[m],
                   100.0 * v->spread_throughput[m]);
        printf("  durable/memory of each round: latency   ");
        for (int r = 0; r < o->rounds; r++)
            printf(" %.3f", b->results[MODE_DURABLE][r].median_us / b->results[MODE_MEMORY][r].median_us);
        printf("\n                                throughput");
        for (int r = 0; r < o->rounds; r++)
            printf(" %.3f", b->results[MODE_DURABLE][r].sagas_per_s / b->results[MODE_MEMORY][r].sagas_per_s);
        printf("\n  noise: the per-round ratios put their median in latency %.3f..%.3f, throughput %.3f..%.3f\n"
               "         (%.1f%% interval over %d rounds)\n",
               v->latency_lo, v->latency_hi, v->throughput_lo, v->throughput_hi, 100.0 * v->coverage, o->rounds);
    } else {
        printf("  noise: one round gives no idea of it; use --rounds 5 or more\n");
    }
    printf("  (DESIGN §5 sets durable mode's targets -- median latency <= 2.5x, throughput >= 0.4x -- against a\n"
           "  raw nats.c baseline of the same call graph, which this program does not build: no verdict here.)\n");
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

static json_t *check_json(const saga_check_t *c)
{
    json_t *j = json_pack("{s:b, s:b, s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "ok",
                          c->ok, "stock", c->stock_ok, "money", c->money_ok, "orders_confirmed", c->orders_ok,
                          "one_event_per_order", c->events_ok, "one_notification_per_order", c->notified_ok,
                          "orders", (json_int_t)c->orders, "available", (json_int_t)c->available, "reserved",
                          (json_int_t)c->reserved, "balance", (json_int_t)c->balance, "charged",
                          (json_int_t)c->charged, "not_confirmed", (json_int_t)c->not_confirmed, "events_heard",
                          (json_int_t)c->events, "distinct_event_ids", (json_int_t)c->distinct_events,
                          "event_orders", (json_int_t)c->event_orders, "notifications", (json_int_t)c->notifications);
    if (j != NULL && !c->ok)
        json_object_set_new(j, "failed", json_string(c->failed));
    return j;
}

static json_t *cost_json(const bench_t *b, const verdict_t *v)
{
    json_t *modes = json_object();
    for (int m = 0; modes != NULL && m < MODE_COUNT; m++) {
        json_t *rounds = json_array();
        for (int r = 0; rounds != NULL && r < b->opt.rounds; r++) {
            const figures_t *f = &b->results[m][r];
            json_array_append_new(rounds, json_pack("{s:f, s:f, s:f, s:f, s:o, s:o}", "median_us", f->median_us,
                                                    "p99_us", f->p99_us, "sagas_per_s", f->sagas_per_s, "seconds",
                                                    f->seconds, "latency_check", check_json(&f->latency_check),
                                                    "throughput_check", check_json(&f->throughput_check)));
        }
        json_object_set_new(modes, mode_name[m],
                            json_pack("{s:f, s:f, s:f, s:f, s:f, s:o}", "median_us", v->median[m].median_us, "p99_us",
                                      v->median[m].p99_us, "sagas_per_s", v->median[m].sagas_per_s,
                                      "spread_latency", v->spread_latency[m], "spread_throughput",
                                      v->spread_throughput[m], "rounds", rounds));
    }
    json_t *cost = json_pack("{s:o, s:{s:f, s:f, s:f}, s:i, s:i, s:b}", "modes", modes, "ratios_durable_over_memory",
                             "latency_median", v->latency_ratio, "latency_p99", v->p99_ratio, "throughput",
                             v->throughput_ratio, "invariant_checks", v->checks, "invariant_checks_failed",
                             v->checks_failed, "invariants_held", v->checks_failed == 0);
    if (cost != NULL && v->has_interval)
        json_object_set_new(cost, "noise",
                            json_pack("{s:f, s:[f, f], s:[f, f]}", "coverage", v->coverage,
                                      "latency_ratio_median_interval", v->latency_lo, v->latency_hi,
                                      "throughput_ratio_median_interval", v->throughput_lo, v->throughput_hi));
    return cost;
}

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
static int write_json(const bench_t *b, const verdict_t *v, const recovery_summary_t *s, const char *path)
{
    const options_t *o = &b->opt;
    json_t *doc = json_pack("{s:s, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:i, s:i, s:i, s:i}}", "benchmark",
                            "orders.create_order saga: memory vs durable, recovery", "config", "rounds", o->rounds,
                            "calls", o->calls, "warmup", o->warmup, "throughput_calls", o->throughput_calls,
                            "concurrency", o->concurrency, "recovery_runs", o->recovery, "recovery_only",
                            o->recovery_only, "qty_per_order", SAGA_QTY,
                            "amount_per_order", SAGA_AMOUNT, "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN), "max_seconds",
                            o->max_seconds);
    if (doc != NULL)
        json_object_set_new(doc, "load_average",
                            json_pack("{s:[f, f, f], s:[f, f, f]}", "start", b->load_start[0], b->load_start[1],
                                      b->load_start[2], "end", b->load_end[0], b->load_end[1], b->load_end[2]));
    if (doc != NULL && v != NULL)
        json_object_set_new(doc, "cost", cost_json(b, v));
    if (doc != NULL && s != NULL)
        json_object_set_new(doc, "recovery", recovery_json(b, s));
    if (doc != NULL && s == NULL && o->recovery > 0 && !recovery_possible)
        json_object_set_new(doc, "recovery", json_pack("{s:s}", "skipped", RECOVERY_SKIPPED_WHY));
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

    bool run_cost = !b.opt.recovery_only;
    bool run_rec = b.opt.recovery > 0 && recovery_possible;
    if (b.opt.recovery > 0 && !recovery_possible)
        fprintf(stderr, "natomic-bench-saga: recovery: skipped: %s\n", RECOVERY_SKIPPED_WHY);
    for (int m = 0; m < MODE_COUNT; m++) {
        b.results[m] = calloc((size_t)b.opt.rounds, sizeof *b.results[m]);
        if (b.results[m] == NULL) {
            fprintf(stderr, "natomic-bench-saga: out of memory\n");
            return 1;
        }
    }
    b.recovery = calloc((size_t)(b.opt.recovery > 0 ? b.opt.recovery : 1), sizeof *b.recovery);
    if (b.recovery == NULL) {
        fprintf(stderr, "natomic-bench-saga: out of memory\n");
        return 1;
    }

    int rc = 1;
    verdict_t v;
    recovery_summary_t s;
    memset(&v, 0, sizeof v);
    memset(&s, 0, sizeof s);
    if (run_cost) {
        fprintf(stderr, "natomic-bench-saga: %d round%s of memory then durable mode, a fresh session each\n",
                b.opt.rounds, b.opt.rounds == 1 ? "" : "s");
        if (run_rounds(&b) != 0)
            goto out;
    }
    if (run_rec) {
        fprintf(stderr, "natomic-bench-saga: %d recovery run%s (durable, orders crashes after the charge)\n",
                b.opt.recovery, b.opt.recovery == 1 ? "" : "s");
        if (run_recovery(&b) != 0)
            goto out;
    }

    read_load(b.load_end);
    print_machine(&b);
    bool broken = false;
    if (run_cost) {
        v = judge(&b);
        print_cost(&b, &v);
        broken = broken || v.checks_failed > 0;
    }
    if (run_rec) {
        s = summarize_recovery(&b);
        print_recovery(&b, &s);
        broken = broken || s.recovered != s.runs;
    } else if (b.opt.recovery > 0) {
        printf("\nnatomic-bench-saga: recovery: skipped\n  %s.\n", RECOVERY_SKIPPED_WHY);
    }
    fflush(stdout);
    rc = broken ? 3 : 0;
    if (b.opt.json != NULL) {
        if (write_json(&b, run_cost ? &v : NULL, run_rec ? &s : NULL, b.opt.json) != 0)
            rc = 1;
        else
            fprintf(stderr, "natomic-bench-saga: figures written to %s\n", b.opt.json);
    }

out:
    if (rc == 1 && bench_stop_reason() != NULL)
        fprintf(stderr, "natomic-bench-saga: run stopped: %s; no figures\n", bench_stop_reason());
    for (int m = 0; m < MODE_COUNT; m++)
        free(b.results[m]);
    free(b.recovery);
    nats_Close();
    return rc;
}
