/*
 * saga_compare.c -- the order saga four ways, measured alike and judged
 * against the hand-written one.
 *
 * The variants (saga_session.h): raw -- the saga by hand with nats.c and
 * SQLite (bench/raw_saga), the baseline of DESIGN §5; chain -- the same
 * messages with nothing stored, so that raw minus chain is what storage
 * costs; memory and durable -- the services of services/ on libnatomic.
 *
 * One measurement of one variant:
 *   1. a session (saga_session.c): a fresh nats-server and stores, the
 *      variant's processes started through the lab's supervisor;
 *   2. seed stock and money to cover every order planned;
 *   3. latency: `warmup` untimed orders, then `calls` sequential ones,
 *      each timed alone (median and p99);
 *   4. check the invariants (stock, money, orders, events, notifications);
 *   5. for each number of clients, ascending: `warmup` untimed orders,
 *      then `throughput_calls` from that many client threads (sagas/s),
 *      and check the invariants again;
 *   6. stop everything.
 * A broken invariant is said at once and counted: it is a bug, not noise.
 *
 * Rounds interleave the variants (raw, chain, memory, durable, raw, ...)
 * so that drift of the machine hits each alike; each figure is the median
 * over rounds, and each ratio is taken between medians. The measurements
 * of one round make pairs: the ratio of a pair per round shows how steady
 * the machine was, and the sign-test interval of the median of those
 * ratios (bench_stats.h) says how far a reported ratio -- and a target met
 * or missed -- can be trusted ("within noise" when the interval straddles
 * the target; below 5 rounds the interval holds the median less than 90%
 * of the time, and the table says there are too few rounds to tell).
 *
 * Targets, as figures, never failures (DESIGN §5 and issue 10): memory
 * mode's median latency <= 1.10x raw and throughput at 32 clients >= 0.9x
 * raw and >= 5,000 sagas/s; durable mode's median latency <= 2.5x raw and
 * throughput at 32 clients >= 0.4x raw and >= 2,000 sagas/s. A target that
 * needs a variant or the level of 32 clients not measured is "not
 * measured".
 */
#include "saga_compare.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_budget.h"
#include "bench_stats.h"
#include "saga_plot.h"

#define STOCK_MARGIN 100 /* orders the seed covers beyond those planned */
#define TARGET_CLIENTS 32
#define MIN_COVERAGE 0.9 /* of a sign-test interval, to call a target resolved or within noise */

/* One measurement of one variant. */
typedef struct figures {
    double median_us;
    double p99_us;
    double sagas_per_s[SAGA_MAX_LEVELS];
    double seconds;                                /* the whole measurement, start to stop */
    saga_check_t latency_check;                    /* after the latency phase             */
    saga_check_t throughput_check[SAGA_MAX_LEVELS]; /* after each throughput phase         */
} figures_t;

/* One variant over rounds. */
typedef struct summary {
    double median_us, p99_us;
    double sagas_per_s[SAGA_MAX_LEVELS];
    double min_sagas[SAGA_MAX_LEVELS], max_sagas[SAGA_MAX_LEVELS];
    double spread_latency;                     /* (max - min) / median of the median latency */
    double spread_throughput[SAGA_MAX_LEVELS];
    int checks, checks_failed;
} summary_t;

/* num over den, between the medians, and the interval of the per-round ratios' median. */
typedef struct ratio {
    bool on;           /* both variants measured */
    saga_variant_t num, den;
    double latency, p99, throughput[SAGA_MAX_LEVELS];
    bool has_interval; /* at least 2 rounds */
    double coverage;
    double latency_lo, latency_hi;
    double throughput_lo[SAGA_MAX_LEVELS], throughput_hi[SAGA_MAX_LEVELS];
} ratio_t;

enum { MEMORY_OVER_RAW, DURABLE_OVER_RAW, CHAIN_OVER_RAW, DURABLE_OVER_MEMORY, N_RATIOS };

static const struct {
    const char *name;
    saga_variant_t num, den;
} ratio_defs[N_RATIOS] = {
    [MEMORY_OVER_RAW] = {"memory_over_raw", SAGA_MEMORY, SAGA_RAW},
    [DURABLE_OVER_RAW] = {"durable_over_raw", SAGA_DURABLE, SAGA_RAW},
    [CHAIN_OVER_RAW] = {"chain_over_raw", SAGA_CHAIN, SAGA_RAW},
    [DURABLE_OVER_MEMORY] = {"durable_over_memory", SAGA_DURABLE, SAGA_MEMORY},
};

/* A target of DESIGN §5 / issue 10. */
typedef enum target_kind { LATENCY_RATIO_MAX, THROUGHPUT_RATIO_MIN, THROUGHPUT_MIN } target_kind_t;

static const struct {
    saga_variant_t variant;
    target_kind_t kind;
    double bound;
} target_defs[] = {
    {SAGA_MEMORY, LATENCY_RATIO_MAX, 1.10},  {SAGA_MEMORY, THROUGHPUT_RATIO_MIN, 0.9},
    {SAGA_MEMORY, THROUGHPUT_MIN, 5000.0},   {SAGA_DURABLE, LATENCY_RATIO_MAX, 2.5},
    {SAGA_DURABLE, THROUGHPUT_RATIO_MIN, 0.4}, {SAGA_DURABLE, THROUGHPUT_MIN, 2000.0},
};
#define N_TARGETS (sizeof target_defs / sizeof target_defs[0])

/* A target judged. */
typedef struct target {
    bool measured;
    double value;
    bool met;
    bool resolved; /* the interval (per-round ratios, or min..max of the rounds) on one side of the bound */
    bool too_few;  /* a ratio's interval covers its median with less than MIN_COVERAGE: no verdict on noise */
    double lo, hi;
    char what[96];
} target_t;

struct saga_compare {
    saga_compare_config_t cfg;
    figures_t *results[SAGA_VARIANT_COUNT]; /* [variant][round], for the variants switched on */
    summary_t sum[SAGA_VARIANT_COUNT];
    ratio_t ratios[N_RATIOS];
    target_t targets[N_TARGETS];
    int checks, checks_failed;
    int level32; /* index of TARGET_CLIENTS in cfg.clients, -1 if not measured */
};

int saga_compare_new(saga_compare_t **out, const saga_compare_config_t *cfg)
{
    saga_compare_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        fprintf(stderr, "natomic-bench-saga: out of memory\n");
        return -1;
    }
    c->cfg = *cfg;
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
        if (!cfg->variant_on[v])
            continue;
        c->results[v] = calloc((size_t)cfg->rounds, sizeof *c->results[v]);
        if (c->results[v] == NULL) {
            fprintf(stderr, "natomic-bench-saga: out of memory\n");
            saga_compare_free(c);
            return -1;
        }
    }
    c->level32 = -1;
    for (int l = 0; l < cfg->n_levels; l++)
        if (cfg->clients[l] == TARGET_CLIENTS)
            c->level32 = l;
    *out = c;
    return 0;
}

void saga_compare_free(saga_compare_t *c)
{
    if (c == NULL)
        return;
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++)
        free(c->results[v]);
    free(c);
}

/* ------------------------------------------------------------------ */
/* Measuring                                                           */
/* ------------------------------------------------------------------ */

/* Checks the invariants into *out; a broken one is said on stderr with the logs. 0, or -1 when no check could be made. */
static int check(saga_session_t *s, saga_variant_t v, int round, const char *phase, saga_check_t *out)
{
    if (saga_session_check(s, out) != 0)
        return -1;
    if (!out->ok) {
        fprintf(stderr, "natomic-bench-saga: INVARIANT BROKEN in round %d, %s, after the %s phase: %s\n", round,
                saga_variant_names[v], phase, out->failed);
        saga_session_print_logs(s, 20);
    }
    return 0;
}

/* One measurement of one variant (steps 1-6 of the essay). 0, or -1 with a message. */
static int measure(const saga_compare_config_t *o, saga_variant_t v, int round, figures_t *out)
{
    figures_t f;
    memset(&f, 0, sizeof f);
    int64_t t0 = bench_now_ns();
    long long planned = (long long)o->warmup + o->calls + STOCK_MARGIN +
                        (long long)o->n_levels * ((long long)o->warmup + o->throughput_calls);
    saga_session_t *s = NULL;
    bench_latency_t lat = {0};
    int rc = saga_session_start_variant(&s, v, NULL);
    if (rc == 0)
        rc = saga_session_seed(s, planned * SAGA_QTY, planned * SAGA_AMOUNT);
    if (rc == 0)
        rc = saga_session_latency(s, o->warmup, o->calls, &lat);
    if (rc == 0)
        rc = check(s, v, round, "latency", &f.latency_check);
    for (int l = 0; rc == 0 && l < o->n_levels; l++) {
        char phase[48];
        snprintf(phase, sizeof phase, "throughput (%d clients)", o->clients[l]);
        rc = saga_session_throughput(s, o->clients[l], o->warmup, o->throughput_calls, &f.sagas_per_s[l]);
        if (rc == 0)
            rc = check(s, v, round, phase, &f.throughput_check[l]);
    }
    if (rc != 0 && s != NULL && bench_stop_reason() == NULL)
        saga_session_print_logs(s, 20);
    saga_session_stop(s);
    if (rc != 0) {
        fprintf(stderr, "natomic-bench-saga: round %d of %s %s\n", round, saga_variant_names[v],
                bench_stop_reason() != NULL ? "stopped early" : "failed");
        return -1;
    }
    f.median_us = lat.median_us;
    f.p99_us = lat.p99_us;
    f.seconds = (double)(bench_now_ns() - t0) / 1e9;
    bool ok = f.latency_check.ok;
    for (int l = 0; l < o->n_levels; l++)
        ok = ok && f.throughput_check[l].ok;
    fprintf(stderr, "  round %d/%d  %-7s  median %8.1f µs  p99 %8.1f µs  sagas/s", round, o->rounds,
            saga_variant_names[v], f.median_us, f.p99_us);
    for (int l = 0; l < o->n_levels; l++)
        fprintf(stderr, "%s%.0f@%d", l == 0 ? " " : " / ", f.sagas_per_s[l], o->clients[l]);
    fprintf(stderr, "  invariants %s  (%.1f s)\n",
            !saga_variant_has_invariants(v) ? "none" : ok ? "held" : "BROKEN", f.seconds);
    *out = f;
    return 0;
}

int saga_compare_run(saga_compare_t *c)
{
    const saga_compare_config_t *o = &c->cfg;
    for (int r = 1; r <= o->rounds; r++) {
        for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
            if (!o->variant_on[v])
                continue;
            if (bench_should_stop())
                return -1;
            if (measure(o, (saga_variant_t)v, r, &c->results[v][r - 1]) != 0)
                return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Judging                                                             */
/* ------------------------------------------------------------------ */

/* The field of each round of one variant, as an array to take statistics of. */
typedef double figure_fn(const figures_t *f, int level);

static double median_of(const figures_t *f, int level)
{
    (void)level;
    return f->median_us;
}

static double p99_of(const figures_t *f, int level)
{
    (void)level;
    return f->p99_us;
}

static double sagas_of(const figures_t *f, int level)
{
    return f->sagas_per_s[level];
}

/* Median, min, max and spread ((max - min) / median) of one figure over n rounds; NAN each when out of memory. */
static void over_rounds(const figures_t *rounds, int n, figure_fn *fn, int level, double *median, double *min,
                        double *max, double *spread)
{
    double *v = malloc((size_t)n * sizeof *v);
    *median = *min = *max = *spread = NAN;
    if (v == NULL)
        return;
    for (int r = 0; r < n; r++)
        v[r] = fn(&rounds[r], level);
    bench_stats_sort(v, n);
    *min = v[0];
    *max = v[n - 1];
    *median = bench_stats_percentile(v, n, 50.0);
    *spread = (*max - *min) / *median;
    free(v);
}

static void summarize(saga_compare_t *c, saga_variant_t var)
{
    const saga_compare_config_t *o = &c->cfg;
    const figures_t *rs = c->results[var];
    summary_t *s = &c->sum[var];
    double lo, hi, spread;
    over_rounds(rs, o->rounds, median_of, 0, &s->median_us, &lo, &hi, &s->spread_latency);
    over_rounds(rs, o->rounds, p99_of, 0, &s->p99_us, &lo, &hi, &spread);
    for (int l = 0; l < o->n_levels; l++)
        over_rounds(rs, o->rounds, sagas_of, l, &s->sagas_per_s[l], &s->min_sagas[l], &s->max_sagas[l],
                    &s->spread_throughput[l]);
    for (int r = 0; r < o->rounds; r++) {
        const saga_check_t *checks[SAGA_MAX_LEVELS + 1] = {&rs[r].latency_check};
        for (int l = 0; l < o->n_levels; l++)
            checks[l + 1] = &rs[r].throughput_check[l];
        for (int k = 0; k <= o->n_levels; k++) {
            s->checks += checks[k]->checked ? 1 : 0;
            s->checks_failed += checks[k]->ok ? 0 : 1;
        }
    }
}

/* The per-round ratios of one figure and the sign-test interval of their median. */
static void ratio_interval(const saga_compare_t *c, const ratio_t *q, figure_fn *fn, int level, double *lo,
                           double *hi, double *coverage)
{
    int n = c->cfg.rounds;
    double *v = malloc((size_t)n * sizeof *v);
    *lo = *hi = NAN;
    if (v == NULL)
        return;
    for (int r = 0; r < n; r++)
        v[r] = fn(&c->results[q->num][r], level) / fn(&c->results[q->den][r], level);
    bench_stats_median_interval(v, n, lo, hi, coverage);
    free(v);
}

static void judge_ratio(saga_compare_t *c, int i)
{
    ratio_t *q = &c->ratios[i];
    q->num = ratio_defs[i].num;
    q->den = ratio_defs[i].den;
    q->on = c->cfg.variant_on[q->num] && c->cfg.variant_on[q->den];
    if (!q->on)
        return;
    const summary_t *a = &c->sum[q->num], *b = &c->sum[q->den];
    q->latency = a->median_us / b->median_us;
    q->p99 = a->p99_us / b->p99_us;
    for (int l = 0; l < c->cfg.n_levels; l++)
        q->throughput[l] = a->sagas_per_s[l] / b->sagas_per_s[l];
    if (c->cfg.rounds < 2)
        return;
    q->has_interval = true;
    ratio_interval(c, q, median_of, 0, &q->latency_lo, &q->latency_hi, &q->coverage);
    for (int l = 0; l < c->cfg.n_levels; l++)
        ratio_interval(c, q, sagas_of, l, &q->throughput_lo[l], &q->throughput_hi[l], &q->coverage);
}

static const char *variant_title(saga_variant_t v)
{
    return v == SAGA_MEMORY ? "memory mode" : v == SAGA_DURABLE ? "durable mode" : saga_variant_names[v];
}

static void judge_target(saga_compare_t *c, size_t i)
{
    target_t *t = &c->targets[i];
    saga_variant_t v = target_defs[i].variant;
    double bound = target_defs[i].bound;
    const ratio_t *q = &c->ratios[v == SAGA_MEMORY ? MEMORY_OVER_RAW : DURABLE_OVER_RAW];
    int l = c->level32;
    switch (target_defs[i].kind) {
    case LATENCY_RATIO_MAX:
        snprintf(t->what, sizeof t->what, "%s: median latency <= %.2fx raw", variant_title(v), bound);
        t->measured = q->on;
        t->value = q->latency;
        t->met = t->value <= bound;
        t->lo = q->has_interval ? q->latency_lo : t->value;
        t->hi = q->has_interval ? q->latency_hi : t->value;
        break;
    case THROUGHPUT_RATIO_MIN:
        snprintf(t->what, sizeof t->what, "%s: throughput at %d clients >= %.2fx raw", variant_title(v),
                 TARGET_CLIENTS, bound);
        t->measured = q->on && l >= 0;
        t->value = l >= 0 ? q->throughput[l] : NAN;
        t->met = t->value >= bound;
        t->lo = l >= 0 && q->has_interval ? q->throughput_lo[l] : t->value;
        t->hi = l >= 0 && q->has_interval ? q->throughput_hi[l] : t->value;
        break;
    case THROUGHPUT_MIN:
        snprintf(t->what, sizeof t->what, "%s: >= %.0f sagas/s at %d clients", variant_title(v), bound,
                 TARGET_CLIENTS);
        t->measured = c->cfg.variant_on[v] && l >= 0;
        t->value = l >= 0 ? c->sum[v].sagas_per_s[l] : NAN;
        t->met = t->value >= bound;
        t->lo = l >= 0 ? c->sum[v].min_sagas[l] : NAN;
        t->hi = l >= 0 ? c->sum[v].max_sagas[l] : NAN;
        break;
    }
    t->resolved = t->lo > bound || t->hi < bound;
    t->too_few = target_defs[i].kind != THROUGHPUT_MIN && (!q->has_interval || q->coverage < MIN_COVERAGE);
}

static void judge(saga_compare_t *c)
{
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
        if (!c->cfg.variant_on[v])
            continue;
        summarize(c, (saga_variant_t)v);
        c->checks += c->sum[v].checks;
        c->checks_failed += c->sum[v].checks_failed;
    }
    for (int i = 0; i < N_RATIOS; i++)
        judge_ratio(c, i);
    for (size_t i = 0; i < N_TARGETS; i++)
        judge_target(c, i);
}

int saga_compare_checks(const saga_compare_t *c)
{
    return c->checks;
}

int saga_compare_checks_failed(const saga_compare_t *c)
{
    return c->checks_failed;
}

/* ------------------------------------------------------------------ */
/* The tables                                                          */
/* ------------------------------------------------------------------ */

static const char *const variant_about[SAGA_VARIANT_COUNT] = {
    [SAGA_RAW] = "the saga by hand: nats.c + SQLite, no libnatomic (natomic-raw-saga)",
    [SAGA_CHAIN] = "the same messages, nothing stored: client -> A -> B, C (natomic-raw-saga)",
    [SAGA_MEMORY] = "services/ on libnatomic, memory mode",
    [SAGA_DURABLE] = "services/ on libnatomic, durable mode (saga log, outbox in JetStream)",
};

static void print_header(const saga_compare_t *c)
{
    const saga_compare_config_t *o = &c->cfg;
    printf("\nnatomic-bench-saga: orders.create_order (reserve, charge, confirm, order_created), compared\n");
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++)
        if (o->variant_on[v])
            printf("  %-8s %s\n", saga_variant_names[v], variant_about[v]);
    printf("  every process a child of the lab's supervisor, connected straight to NATS; a fresh nats-server\n"
           "  and fresh stores per measurement\n");
    printf("  latency: %d sequential orders after %d warm-up; throughput: %d orders at each of", o->calls, o->warmup,
           o->throughput_calls);
    for (int l = 0; l < o->n_levels; l++)
        printf("%s%d", l == 0 ? " " : ", ", o->clients[l]);
    printf(" clients,\n  after %d warm-up; %d round%s, variants interleaved; each figure is the median over rounds\n\n",
           o->warmup, o->rounds, o->rounds == 1 ? "" : "s");
}

static void print_figures(const saga_compare_t *c)
{
    const saga_compare_config_t *o = &c->cfg;
    printf("  %-8s %10s %10s   sagas/s with", "variant", "median µs", "p99 µs");
    for (int l = 0; l < o->n_levels; l++)
        printf(" %6d", o->clients[l]);
    printf(" clients   invariants\n");
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
        if (!o->variant_on[v])
            continue;
        const summary_t *s = &c->sum[v];
        printf("  %-8s %10.1f %10.1f   %12s", saga_variant_names[v], s->median_us, s->p99_us, "");
        for (int l = 0; l < o->n_levels; l++)
            printf(" %6.0f", s->sagas_per_s[l]);
        if (!saga_variant_has_invariants((saga_variant_t)v))
            printf("           none (nothing stored)\n");
        else if (s->checks_failed == 0)
            printf("           held (%d of %d checks)\n", s->checks, s->checks);
        else
            printf("           BROKEN in %d of %d checks (see stderr)\n", s->checks_failed, s->checks);
    }
}

static void print_ratios(const saga_compare_t *c)
{
    const saga_compare_config_t *o = &c->cfg;
    bool any = false;
    for (int i = 0; i < N_RATIOS; i++)
        any = any || c->ratios[i].on;
    if (!any)
        return;
    printf("\n  %-19s %10s %10s   throughput at", "ratio of medians", "latency", "p99");
    for (int l = 0; l < o->n_levels; l++)
        printf(" %6d", o->clients[l]);
    printf(" clients\n");
    for (int i = 0; i < N_RATIOS; i++) {
        const ratio_t *q = &c->ratios[i];
        if (!q->on)
            continue;
        char name[32];
        snprintf(name, sizeof name, "%s / %s", saga_variant_names[q->num], saga_variant_names[q->den]);
        printf("  %-19s %10.3f %10.3f   %13s", name, q->latency, q->p99, "");
        for (int l = 0; l < o->n_levels; l++)
            printf(" %6.3f", q->throughput[l]);
        printf("\n");
    }
    const ratio_t *chain = &c->ratios[CHAIN_OVER_RAW];
    if (chain->on) {
        printf("\n  storage share of the hand-written saga, 1 - chain/raw: median latency %.0f%%; throughput",
               100.0 * (1.0 - chain->latency));
        for (int l = 0; l < o->n_levels; l++)
            printf("%s%.0f%% at %d", l == 0 ? " " : ", ", 100.0 * (1.0 - 1.0 / chain->throughput[l]),
                   o->clients[l]);
        printf("\n  (the throughput share is 1 - raw/chain: the part of the chain's capacity that storage takes)\n");
    }
}

static void print_targets(const saga_compare_t *c)
{
    bool any = false;
    for (size_t i = 0; i < N_TARGETS; i++)
        any = any || c->targets[i].measured;
    if (!any) {
        printf("\n  targets (DESIGN §5): need raw and memory or durable measured, and %d clients\n", TARGET_CLIENTS);
        return;
    }
    printf("\n  targets (DESIGN §5, issue 10) -- figures, not failures:\n");
    for (size_t i = 0; i < N_TARGETS; i++) {
        const target_t *t = &c->targets[i];
        printf("    %-52s ", t->what);
        if (!t->measured) {
            printf("not measured\n");
            continue;
        }
        bool absolute = target_defs[i].kind == THROUGHPUT_MIN;
        int digits = absolute ? 0 : 3;
        printf("%8.*f%s  %s", digits, t->value, absolute ? " " : "x", t->met ? "MET" : "MISSED");
        if (c->cfg.rounds < 2)
            printf("\n");
        else if (t->too_few)
            printf("%s  too few rounds to tell from noise (interval %.*f..%.*f)\n", t->met ? "   " : "", digits,
                   t->lo, digits, t->hi);
        else
            printf("%s  %s %.*f..%.*f%s\n", t->met ? "   " : "", t->resolved ? "resolved:" : "within noise:", digits, t->lo, digits, t->hi,
                   absolute ? " (rounds' min..max)" : " (median of the per-round ratios)");
    }
}

static void print_noise(const saga_compare_t *c)
{
    const saga_compare_config_t *o = &c->cfg;
    if (o->rounds < 2) {
        printf("\n  noise: one round gives no idea of it; use --rounds 5 or more\n");
        return;
    }
    printf("\n  per round (median µs / p99 µs / sagas/s at each number of clients):\n");
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
        if (!o->variant_on[v])
            continue;
        printf("    %-8s", saga_variant_names[v]);
        for (int r = 0; r < o->rounds; r++) {
            const figures_t *f = &c->results[v][r];
            printf("  %.0f / %.0f /", f->median_us, f->p99_us);
            for (int l = 0; l < o->n_levels; l++)
                printf(" %.0f", f->sagas_per_s[l]);
        }
        printf("\n");
    }
    printf("  spread between rounds ((max - min) / median): latency; throughput at each number of clients\n");
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
        if (!o->variant_on[v])
            continue;
        printf("    %-8s %5.1f%%;", saga_variant_names[v], 100.0 * c->sum[v].spread_latency);
        for (int l = 0; l < o->n_levels; l++)
            printf(" %5.1f%%", 100.0 * c->sum[v].spread_throughput[l]);
        printf("\n");
    }
    double coverage = NAN;
    for (int i = 0; i < N_RATIOS; i++) {
        const ratio_t *q = &c->ratios[i];
        if (!q->on || !q->has_interval)
            continue;
        coverage = q->coverage;
        printf("  %s / %s per round: latency", saga_variant_names[q->num], saga_variant_names[q->den]);
        for (int r = 0; r < o->rounds; r++)
            printf(" %.3f", c->results[q->num][r].median_us / c->results[q->den][r].median_us);
        printf("; median in %.3f..%.3f\n", q->latency_lo, q->latency_hi);
        for (int l = 0; l < o->n_levels; l++) {
            printf("    throughput at %3d clients", o->clients[l]);
            for (int r = 0; r < o->rounds; r++)
                printf(" %.3f", c->results[q->num][r].sagas_per_s[l] / c->results[q->den][r].sagas_per_s[l]);
            printf("; median in %.3f..%.3f\n", q->throughput_lo[l], q->throughput_hi[l]);
        }
    }
    if (!isnan(coverage))
        printf("  (intervals: sign test of the median of the per-round ratios, %.1f%% over %d rounds)\n",
               100.0 * coverage, o->rounds);
}

void saga_compare_print(saga_compare_t *c)
{
    judge(c);
    print_header(c);
    print_figures(c);
    print_ratios(c);
    print_targets(c);
    print_noise(c);
}

/* ------------------------------------------------------------------ */
/* JSON and the chart                                                  */
/* ------------------------------------------------------------------ */

static json_t *check_json(const saga_check_t *c)
{
    if (!c->checked)
        return json_pack("{s:b, s:b, s:I}", "checked", false, "ok", true, "orders", (json_int_t)c->orders);
    json_t *j = json_pack("{s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                          "checked", true, "ok", c->ok, "stock", c->stock_ok, "money", c->money_ok,
                          "orders_confirmed", c->orders_ok, "one_event_per_order", c->events_ok,
                          "one_notification_per_order", c->notified_ok, "orders", (json_int_t)c->orders, "available",
                          (json_int_t)c->available, "reserved", (json_int_t)c->reserved, "balance",
                          (json_int_t)c->balance, "charged", (json_int_t)c->charged, "not_confirmed",
                          (json_int_t)c->not_confirmed, "events_heard", (json_int_t)c->events, "distinct_event_ids",
                          (json_int_t)c->distinct_events, "event_orders", (json_int_t)c->event_orders,
                          "notifications", (json_int_t)c->notifications);
    if (j != NULL && !c->ok)
        json_object_set_new(j, "failed", json_string(c->failed));
    return j;
}

/* A figure, or null when it is not a number (a ratio of a missing figure). */
static json_t *real_json(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *variant_json(const saga_compare_t *c, saga_variant_t v)
{
    const saga_compare_config_t *o = &c->cfg;
    const summary_t *s = &c->sum[v];
    json_t *levels = json_array(), *rounds = json_array();
    for (int l = 0; levels != NULL && l < o->n_levels; l++)
        json_array_append_new(levels, json_pack("{s:i, s:o, s:o, s:o, s:o}", "clients", o->clients[l], "sagas_per_s",
                                                real_json(s->sagas_per_s[l]), "min", real_json(s->min_sagas[l]),
                                                "max", real_json(s->max_sagas[l]), "spread",
                                                real_json(s->spread_throughput[l])));
    for (int r = 0; rounds != NULL && r < o->rounds; r++) {
        const figures_t *f = &c->results[v][r];
        json_t *thr = json_array(), *checks = json_array();
        for (int l = 0; thr != NULL && checks != NULL && l < o->n_levels; l++) {
            json_array_append_new(thr, json_pack("{s:i, s:f}", "clients", o->clients[l], "sagas_per_s",
                                                 f->sagas_per_s[l]));
            json_array_append_new(checks, check_json(&f->throughput_check[l]));
        }
        json_array_append_new(rounds, json_pack("{s:f, s:f, s:f, s:o, s:o, s:o}", "median_us", f->median_us, "p99_us",
                                                f->p99_us, "seconds", f->seconds, "throughput", thr, "latency_check",
                                                check_json(&f->latency_check), "throughput_checks", checks));
    }
    return json_pack("{s:s, s:o, s:o, s:o, s:o, s:b, s:i, s:i, s:o}", "about", variant_about[v], "median_us",
                     real_json(s->median_us), "p99_us", real_json(s->p99_us), "spread_latency",
                     real_json(s->spread_latency), "throughput", levels, "invariants_checked",
                     saga_variant_has_invariants(v), "invariant_checks", s->checks, "invariant_checks_failed",
                     s->checks_failed, "rounds", rounds);
}

static json_t *ratio_json(const saga_compare_t *c, const ratio_t *q)
{
    json_t *thr = json_array();
    for (int l = 0; thr != NULL && l < c->cfg.n_levels; l++) {
        json_t *one = json_pack("{s:i, s:o}", "clients", c->cfg.clients[l], "ratio", real_json(q->throughput[l]));
        if (one != NULL && q->has_interval)
            json_object_set_new(one, "median_interval",
                                json_pack("[o, o]", real_json(q->throughput_lo[l]), real_json(q->throughput_hi[l])));
        json_array_append_new(thr, one);
    }
    json_t *j = json_pack("{s:o, s:o, s:o}", "latency_median", real_json(q->latency), "latency_p99",
                          real_json(q->p99), "throughput", thr);
    if (j != NULL && q->has_interval) {
        json_object_set_new(j, "latency_median_interval",
                            json_pack("[o, o]", real_json(q->latency_lo), real_json(q->latency_hi)));
        json_object_set_new(j, "coverage", json_real(q->coverage));
    }
    return j;
}

json_t *saga_compare_json(const saga_compare_t *c)
{
    json_t *variants = json_object(), *ratios = json_object(), *targets = json_array();
    for (int v = 0; variants != NULL && v < SAGA_VARIANT_COUNT; v++)
        if (c->cfg.variant_on[v])
            json_object_set_new(variants, saga_variant_names[v], variant_json(c, (saga_variant_t)v));
    for (int i = 0; ratios != NULL && i < N_RATIOS; i++)
        if (c->ratios[i].on)
            json_object_set_new(ratios, ratio_defs[i].name, ratio_json(c, &c->ratios[i]));
    for (size_t i = 0; targets != NULL && i < N_TARGETS; i++) {
        const target_t *t = &c->targets[i];
        json_t *one = json_pack("{s:s, s:s, s:f, s:b}", "target", t->what, "variant",
                                saga_variant_names[target_defs[i].variant], "bound", target_defs[i].bound, "measured",
                                t->measured);
        if (one != NULL && t->measured) {
            json_object_set_new(one, "value", real_json(t->value));
            json_object_set_new(one, "met", json_boolean(t->met));
            json_object_set_new(one, "resolved", json_boolean(c->cfg.rounds >= 2 && !t->too_few && t->resolved));
            json_object_set_new(one, "interval", json_pack("[o, o]", real_json(t->lo), real_json(t->hi)));
        }
        json_array_append_new(targets, one);
    }
    json_t *doc = json_pack("{s:o, s:o, s:o, s:i, s:i, s:b}", "variants", variants, "ratios", ratios, "targets",
                            targets, "invariant_checks", c->checks, "invariant_checks_failed", c->checks_failed,
                            "invariants_held", c->checks_failed == 0);
    const ratio_t *chain = &c->ratios[CHAIN_OVER_RAW];
    if (doc != NULL && chain->on) {
        json_t *thr = json_array();
        for (int l = 0; thr != NULL && l < c->cfg.n_levels; l++)
            json_array_append_new(thr, json_pack("{s:i, s:o}", "clients", c->cfg.clients[l], "share",
                                                 real_json(1.0 - 1.0 / chain->throughput[l])));
        json_object_set_new(doc, "storage_share_of_raw",
                            json_pack("{s:o, s:o}", "latency_median", real_json(1.0 - chain->latency), "throughput",
                                      thr));
    }
    return doc;
}

int saga_compare_plot(const saga_compare_t *c, const char *path, const char *program)
{
    const saga_compare_config_t *o = &c->cfg;
    saga_plot_series_t series[SAGA_VARIANT_COUNT];
    int n = 0;
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
        if (!o->variant_on[v])
            continue;
        series[n++] = (saga_plot_series_t){.name = saga_variant_names[v],
                                           .y = c->sum[v].sagas_per_s,
                                           .lo = o->rounds > 1 ? c->sum[v].min_sagas : NULL,
                                           .hi = o->rounds > 1 ? c->sum[v].max_sagas : NULL};
    }
    char subtitle[200], day[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(day, sizeof day, "%Y-%m-%d %H:%M", localtime_r(&now, &tm));
    snprintf(subtitle, sizeof subtitle, "median of %d round%s%s; %d orders per point; %ld CPUs; %s", o->rounds,
             o->rounds == 1 ? "" : "s", o->rounds > 1 ? " (whiskers: min..max)" : "", o->throughput_calls,
             sysconf(_SC_NPROCESSORS_ONLN), day);
    saga_plot_t plot = {.title = "orders.create_order: throughput against concurrent clients",
                        .subtitle = subtitle,
                        .x_label = "concurrent clients",
                        .y_label = "sagas per second",
                        .x = o->clients,
                        .n_x = o->n_levels,
                        .series = series,
                        .n_series = n};
    return saga_plot_write(&plot, path, program);
}
