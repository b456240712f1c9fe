/*
 * explore.c -- `natomic-lab explore`: every crash point of a story, tried.
 *
 * A story (a scenario file) names its calls and its invariants; the
 * explorer asks what happens to those invariants when anything, anywhere,
 * goes wrong once. In four phases:
 *
 *   1. A clean run per mode. The story is played as written, every service
 *      tracing every fault point hit (NATOMIC_FAULT_TRACE=1). From the
 *      first step on, each hit is kept: (instance, point, occurrence), the
 *      occurrence being the point's hit number in that process -- what
 *      `point=action#N` targets. Hits of the seed data are not the story's
 *      and are left out; so are hits of a process the story itself
 *      restarted (its NATOMIC_FAULTS covered only its first start). A clean
 *      run whose invariants do not hold stops the exploration of that
 *      story in that mode: there is nothing to compare with.
 *
 *   2. The cells. Every hit, times every action the point defines (crash
 *      and delay everywhere; error, drop, duplicate where
 *      docs/fault-points.md does not mark them `-`), times every mode that
 *      hit it, is one cell. A `delay` lasts the story's longest call
 *      timeout plus DELAY_MARGIN_MS: longer than any caller's deadline in
 *      the story, since a deadline only shrinks as it is propagated down a
 *      call chain (docs/guide.md §6).
 *
 *   3. A replay per cell (runner_replay), several at once (--jobs, one per
 *      core by default), each with its own NATS and folder: the target
 *      instance starts with `point=action#N` in its environment, so the
 *      fault fires at the very hit the clean run saw; a process that dies
 *      is restarted after a quiet period (EXPLORE_RESTART_AFTER_MS) by a
 *      watcher, as systemd would; no call's `expect` is checked; after the
 *      last step the story's invariants are evaluated until they hold for
 *      STABLE_MS (memory: nothing comes later, durable: a lease, a
 *      recovery round, the outbox relay) or SETTLE_MS passed (durable: a
 *      crashed consumer's event comes back after its 5 s ack wait) --
 *      never before a fired delay ran out or a dead process came back. A
 *      consistent cell stops as soon as it is stable; only a violating one
 *      pays the whole wait.
 *
 *   4. The verdict. Every invariant holds: consistent. An invariant
 *      broken that a lesson of the story lists for that cell -- the
 *      lessons file beside the story, memory mode only -- or that the
 *      story itself expects to break (its `violations`): expected
 *      violation. Anything else -- another broken invariant, one that could
 *      not be checked, a story that did not start, a fault that never
 *      fired, a replay past its time limit -- is a violation, and makes the
 *      exit status 1. In durable mode no lesson applies: every cell must be
 *      consistent, and a violation there is a library bug.
 *
 * Output: TAP 14 on stdout, one point per cell in matrix order (an
 * expected violation is an ok point whose YAML block names the lesson);
 * one progress line per finished replay on stderr, with the ETA; with
 * --json a file whose array `cells` has one object per cell; with
 * --report a folder with the matrix (index.html, report/matrix.c) and one
 * page per replay (replays/, report_write).
 *
 * Bounds. Each replay has a time limit (--cell-limit); past it, it is cut
 * short between two steps or while settling, and the cell is a violation.
 * The whole exploration has one too (--time-limit): past it, or at the
 * first SIGINT or SIGTERM, no new replay starts, running ones are cut
 * short, what ran is written, and the rest is "not run"; a second signal
 * kills every child at once and ends the process.
 */
#include "explore.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lessons.h"
#include "matrix.h"
#include "report.h"
#include "runner.h"
#include "scenario.h"
#include "scenario_check.h"
#include "supervisor.h"

#define DELAY_MARGIN_MS 1000     /* a delay's length beyond the story's longest call timeout */
#define MEMORY_STABLE_MS 500    /* memory mode has nothing that comes late but a delay      */
#define DURABLE_STABLE_MS 1000   /* two recovery rounds (500 ms) and the outbox relay (rows
                                    older than 1 s) have run since                            */
#define MEMORY_SETTLE_MS 2000
#define DURABLE_SETTLE_MS 12000  /* a crashed consumer's event is redelivered after 5 s      */
#define MAX_JOBS 64
#define MAX_INSTANCES 16

enum { ACT_CRASH, ACT_ERROR, ACT_DROP, ACT_DUPLICATE, ACT_DELAY, N_ACTIONS };
static const char *const action_names[N_ACTIONS] = {"crash", "error", "drop", "duplicate", "delay"};

enum { MODE_MEMORY, MODE_DURABLE, N_MODES };
static const char *const mode_names[N_MODES] = {"memory", "durable"};

typedef enum verdict { V_CONSISTENT, V_EXPECTED, V_VIOLATION, V_NOT_RUN } verdict_t;
static const char *const verdict_names[] = {"consistent", "expected-violation", "violation", "not-run"};

/* ---- small helpers ------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "4m05s", "12s". */
static void duration_text(double s, char *out, size_t cap)
{
    long n = s > 0 ? (long)(s + 0.5) : 0;
    if (n >= 60)
        snprintf(out, cap, "%ldm%02lds", n / 60, n % 60);
    else
        snprintf(out, cap, "%lds", n);
}

/* A file-name-safe copy, as report.c makes its page names: [A-Za-z0-9._-], a leading '.' too. */
static void safe_part(char *out, size_t cap, const char *s)
{
    size_t len = 0;
    for (; s != NULL && *s != '\0' && len + 1 < cap && len < 100; s++) {
        char c = *s;
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_' || (c == '.' && len > 0);
        out[len++] = ok ? c : '_';
    }
    out[len] = '\0';
}

/* The first sentence of a text, on one line. */
static void first_sentence(const char *text, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *c = text != NULL ? text : ""; *c != '\0' && n + 1 < cap; c++) {
        out[n++] = *c == '\n' ? ' ' : *c;
        if (*c == '.' && (c[1] == ' ' || c[1] == '\n' || c[1] == '\0'))
            break;
    }
    out[n] = '\0';
}

/* ---- what is explored ------------------------------------------------------------------- */

/* One hit of the clean run. */
typedef struct hit {
    char service[32];
    int k;                       /* the instance's number: <service>-<k>                       */
    char instance[64];
    char point[128];
    unsigned long long occurrence;
    int64_t time_ns;
} hit_t;

typedef struct story story_t;

/* A clean run: the story as written, in one mode, its hits recorded. */
typedef struct clean {
    story_t *st;
    int mode;
    pthread_mutex_t mu;          /* the hits, while the run's NATS threads add them             */
    hit_t *hits;
    size_t n_hits, cap_hits;
    struct {
        char instance[64];
        char incarnation[40];
    } first[MAX_INSTANCES];      /* each instance's first process                               */
    size_t n_first;
    size_t restarted_hits;       /* hits of a later process of an instance: not explored        */
    bool ran, ok;
    char error[700];
    runner_replay_t rp;
} clean_t;

/* One row of the matrix: one hit of one point in one instance. */
typedef struct row {
    char service[32];
    int k;
    char instance[64];
    char point[128];
    unsigned long long occurrence;
    bool in_mode[N_MODES];       /* the clean run of that mode hit it                          */
    int service_rank;            /* the service's place in the story's `services`              */
    double point_rank;           /* the order points were first hit in (see build_rows)         */
} row_t;

struct story {
    scenario_t *sc;
    char full[300];              /* "<group>/<name>"                                            */
    char lessons_path[700];
    lessons_t *lessons;
    bool has_lessons;
    int delay_ms;
    clean_t clean[N_MODES];
    row_t *rows;
    size_t n_rows;
    size_t first_cell, n_cells;  /* its cells in the explorer's array                          */
};

/* One cell: a replay with one fault, and its verdict. */
typedef struct cell {
    story_t *st;
    size_t row;
    int action, mode;
    char spec[300];              /* NATOMIC_FAULTS of the target's first start                  */
    char replay[1500];           /* the command that replays this cell alone                   */
    char page_name[240];         /* its page: replays/<page_base>.html                         */
    char page_base[240];
    /* while it runs */
    atomic_bool fired;           /* the fault's own record came: it fired at that hit           */
    atomic_bool over_limit;      /* its time limit passed: cut it short                         */
    double started;
    /* its outcome */
    bool done;
    verdict_t verdict;
    double duration_s, settle_s;
    size_t restarts;
    json_t *broken;              /* [{invariant, why, expected, lesson}]                        */
    char note[900];              /* one line: the verdict and what broke, why                   */
    char about[2600];            /* its page's about                                             */
    runner_replay_t rp;          /* kept for its page until the report is written               */
    bool has_rp;
} cell_t;

/* The whole exploration. */
typedef struct explorer {
    const explore_options_t *o;
    story_t *stories;
    size_t n_stories;
    cell_t *cells;
    size_t n_cells;
    /* the pool */
    pthread_mutex_t mu;
    pthread_cond_t cond;         /* a task ended                                                */
    atomic_size_t next;
    size_t finished;             /* cells ended, for the progress line                          */
    double t_start, t_cells;
    pthread_mutex_t out_mu;      /* stderr lines                                                */
} explorer_t;

/* 0 going on; 1 interrupted (SIGINT, SIGTERM, SIGHUP); 2 the total time limit passed. */
static atomic_int stop_reason;

static void on_signal(int sig)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&stop_reason, &expected, 1)) {
        static const char msg[] = "\nnatomic-lab explore: stopping (cutting the running replays short; a "
                                  "second signal kills everything at once)\n";
        ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)ignored;
        return;
    }
    supervisor_emergency_kill();
    signal(sig, SIG_DFL);
    raise(sig);
}

static bool stopping(void)
{
    return atomic_load(&stop_reason) != 0;
}

static int default_jobs(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_JOBS ? MAX_JOBS : (int)n;
}

static const scenario_fault_point_t *fault_point(const char *name)
{
    for (const scenario_fault_point_t *fp = scenario_fault_points; fp->name != NULL; fp++)
        if (strcmp(fp->name, name) == 0)
            return fp;
    return NULL;
}

/* True when the point defines the action (crash and delay: every point). */
static bool point_defines(const char *point, int action)
{
    const scenario_fault_point_t *fp = fault_point(point);
    if (fp == NULL)
        return false;
    switch (action) {
    case ACT_ERROR:
        return fp->error;
    case ACT_DROP:
        return fp->drop;
    case ACT_DUPLICATE:
        return fp->duplicate;
    default:
        return true;
    }
}

static bool point_selected(const explore_options_t *o, const char *point)
{
    if (o->points == NULL)
        return true;
    size_t n = strlen(point);
    for (const char *p = o->points; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, point, n) == 0)
            return true;
        p = end != NULL ? end + 1 : p + len;
    }
    return false;
}

int explore_parse_actions(const char *list, unsigned *out, char *err, size_t errcap)
{
    unsigned bits = 0;
    for (const char *p = list; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        int found = -1;
        for (int a = 0; a < N_ACTIONS; a++)
            if (strlen(action_names[a]) == len && strncmp(action_names[a], p, len) == 0)
                found = a;
        if (found < 0 && len == 3 && strncmp(p, "all", 3) == 0) {
            bits = EXPLORE_ALL_ACTIONS;
        } else if (found < 0) {
            snprintf(err, errcap, "unknown action '%.*s' (crash, error, drop, duplicate, delay, all)", (int)len, p);
            return -1;
        } else {
            bits |= 1u << found;
        }
        p = end != NULL ? end + 1 : p + len;
    }
    if (bits == 0) {
        snprintf(err, errcap, "no action given (crash, error, drop, duplicate, delay, all)");
        return -1;
    }
    *out = bits;
    return 0;
}

/* "orders-0" of service "orders" -> 0; -1 when it is not <service>-<k>. */
static int instance_number(const char *service, const char *instance)
{
    size_t n = strlen(service);
    if (strncmp(instance, service, n) != 0 || instance[n] != '-' || instance[n + 1] < '0' || instance[n + 1] > '9')
        return -1;
    char *end = NULL;
    long k = strtol(instance + n + 1, &end, 10);
    return *end == '\0' && k >= 0 && k < MAX_INSTANCES ? (int)k : -1;
}

/* The story's longest call timeout plus the margin: longer than any deadline in it. */
static int delay_for(const scenario_t *sc)
{
    int longest = 0;
    for (size_t i = 0; i < sc->n_steps; i++)
        if (sc->steps[i].kind == STEP_CALL && sc->steps[i].timeout_ms > longest)
            longest = sc->steps[i].timeout_ms;
    return (longest > 0 ? longest : 5000) + DELAY_MARGIN_MS;
}

static void replay_options(const explorer_t *x, const story_t *st, int mode, runner_replay_options_t *ro)
{
    memset(ro, 0, sizeof *ro);
    ro->mode = mode == MODE_DURABLE ? RUNNER_MODE_DURABLE : RUNNER_MODE_MEMORY;
    ro->has_seed = x->o->has_seed;
    ro->seed = x->o->seed;
    ro->restart_after_ms = x->o->restart_after_ms;
    ro->settle_ms = mode == MODE_DURABLE ? DURABLE_SETTLE_MS : MEMORY_SETTLE_MS;
    ro->stable_ms = mode == MODE_DURABLE ? DURABLE_STABLE_MS : MEMORY_STABLE_MS;
    ro->keep = x->o->keep;
    (void)st;
}

/* ---- phase 1: the clean runs ------------------------------------------------------------ */

static void clean_on_hit(void *user, const runner_fault_hit_t *h)
{
    clean_t *c = user;
    pthread_mutex_lock(&c->mu);
    /* Which process is each instance's first: the one its first record came from. */
    size_t f = 0;
    while (f < c->n_first && strcmp(c->first[f].instance, h->instance) != 0)
        f++;
    if (f == c->n_first && f < MAX_INSTANCES) {
        snprintf(c->first[f].instance, sizeof c->first[f].instance, "%s", h->instance);
        snprintf(c->first[f].incarnation, sizeof c->first[f].incarnation, "%s", h->incarnation);
        c->n_first++;
    }
    bool first_process = f < c->n_first && strcmp(c->first[f].incarnation, h->incarnation) == 0;
    int k = instance_number(h->service, h->instance);
    if (h->in_story && !first_process)
        c->restarted_hits++;
    if (h->in_story && first_process && k >= 0 && h->occurrence > 0) {
        if (c->n_hits == c->cap_hits) {
            size_t cap = c->cap_hits ? c->cap_hits * 2 : 64;
            hit_t *grown = realloc(c->hits, cap * sizeof *grown);
            if (grown != NULL) {
                c->hits = grown;
                c->cap_hits = cap;
            }
        }
        if (c->n_hits < c->cap_hits) {
            hit_t *x = &c->hits[c->n_hits++];
            memset(x, 0, sizeof *x);
            snprintf(x->service, sizeof x->service, "%s", h->service);
            snprintf(x->instance, sizeof x->instance, "%s", h->instance);
            snprintf(x->point, sizeof x->point, "%s", h->point);
            x->k = k;
            x->occurrence = h->occurrence;
            x->time_ns = h->time_ns;
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static bool clean_cancelled(void *user)
{
    (void)user;
    return stopping();
}

/* Plays one clean run; its verdict in c->ok, or why not in c->error. */
static void clean_play(explorer_t *x, clean_t *c)
{
    runner_replay_options_t ro;
    replay_options(x, c->st, c->mode, &ro);
    ro.on_hit = clean_on_hit;
    ro.cancelled = clean_cancelled;
    ro.user = c;
    ro.restart_after_ms = -1; /* the story as written: what it kills stays dead until it says */
    static char replay_note[] = "the clean run of an exploration (no fault of the explorer's)";
    ro.replay = replay_note;
    double t0 = now_s();
    runner_replay(c->st->sc, &ro, &c->rp);
    c->ran = true;
    if (!c->rp.setup_ok) {
        snprintf(c->error, sizeof c->error, "the story did not start: %s", c->rp.setup_error);
        return;
    }
    if (c->rp.cancelled) {
        snprintf(c->error, sizeof c->error, "interrupted");
        return;
    }
    size_t used = 0;
    c->ok = true;
    for (size_t i = 0; i < c->rp.n_invariants; i++) {
        const runner_invariant_t *iv = &c->rp.invariants[i];
        if (iv->holds == 1 || (iv->expected_broken && iv->holds == 0))
            continue;
        c->ok = false;
        int w = snprintf(c->error + used, sizeof c->error - used, "%s%s %s: %.200s", used ? "; " : "", iv->name,
                         iv->holds == 0 ? "is violated" : "cannot be checked", iv->why);
        used += w > 0 && (size_t)w < sizeof c->error - used ? (size_t)w : 0;
    }
    if (c->ok && c->n_hits == 0)
        snprintf(c->error, sizeof c->error, "no fault point was hit after the seed data (%.1f s)", now_s() - t0);
}

/* ---- phase 2: rows and cells -------------------------------------------------------------- */

static int by_time(const void *a, const void *b)
{
    const hit_t *x = a, *y = b;
    return x->time_ns < y->time_ns ? -1 : x->time_ns > y->time_ns;
}

static int by_place(const void *a, const void *b)
{
    const row_t *x = a, *y = b;
    if (x->service_rank != y->service_rank)
        return x->service_rank < y->service_rank ? -1 : 1;
    if (x->k != y->k)
        return x->k < y->k ? -1 : 1;
    if (x->point_rank != y->point_rank)
        return x->point_rank < y->point_rank ? -1 : 1;
    return x->occurrence < y->occurrence ? -1 : x->occurrence > y->occurrence;
}

static int service_rank(const scenario_t *sc, const char *service)
{
    for (size_t i = 0; i < sc->n_services; i++)
        if (strcmp(sc->services[i].name, service) == 0)
            return (int)i;
    return (int)sc->n_services;
}

/*
 * The story's rows: every hit of every mode explored. Points are ranked in
 * the order durable mode first hit them (it hits the most); a point only
 * the other mode hit is ranked just after the point hit before it there.
 */
static int build_rows(explorer_t *x, story_t *st)
{
    static const int order[N_MODES] = {MODE_DURABLE, MODE_MEMORY};
    double next_rank = 0;
    for (int oi = 0; oi < N_MODES; oi++) {
        clean_t *c = &st->clean[order[oi]];
        if (!c->ok)
            continue;
        qsort(c->hits, c->n_hits, sizeof *c->hits, by_time);
        double last_rank = -1.0;
        for (size_t i = 0; i < c->n_hits; i++) {
            const hit_t *h = &c->hits[i];
            if (!point_selected(x->o, h->point))
                continue;
            if (fault_point(h->point) == NULL) {
                fprintf(stderr, "natomic-lab explore: %s hit %s, which docs/fault-points.md does not list: "
                                "not explored\n", h->instance, h->point);
                continue;
            }
            row_t *r = NULL;
            double rank = -1.0;
            for (size_t k = 0; k < st->n_rows && r == NULL; k++) {
                row_t *q = &st->rows[k];
                if (strcmp(q->instance, h->instance) == 0 && strcmp(q->point, h->point) == 0) {
                    rank = q->point_rank;
                    if (q->occurrence == h->occurrence)
                        r = q;
                }
            }
            if (r == NULL) {
                row_t *grown = realloc(st->rows, (st->n_rows + 1) * sizeof *grown);
                if (grown == NULL)
                    return -1;
                st->rows = grown;
                r = &st->rows[st->n_rows++];
                memset(r, 0, sizeof *r);
                snprintf(r->service, sizeof r->service, "%s", h->service);
                snprintf(r->instance, sizeof r->instance, "%s", h->instance);
                snprintf(r->point, sizeof r->point, "%s", h->point);
                r->k = h->k;
                r->occurrence = h->occurrence;
                r->service_rank = service_rank(st->sc, h->service);
                if (rank >= 0)
                    r->point_rank = rank;
                else if (oi == 0)
                    r->point_rank = next_rank++;
                else
                    r->point_rank = last_rank + 1e-3 * (double)(++next_rank); /* between its neighbours */
            }
            last_rank = r->point_rank;
            r->in_mode[order[oi]] = true;
        }
    }
    if (st->n_rows > 0)
        qsort(st->rows, st->n_rows, sizeof *st->rows, by_place);
    return 0;
}

/* The command that replays one cell alone. */
static void replay_command(const explorer_t *x, const story_t *st, const row_t *r, int action, int mode, char *out,
                           size_t cap)
{
    char seed[48] = "";
    if (x->o->has_seed)
        snprintf(seed, sizeof seed, " --seed %llu", x->o->seed);
    snprintf(out, cap, "natomic-lab explore --mode %s --cell '%s:%s=%s#%llu'%s %s", mode_names[mode], r->instance,
             r->point, action_names[action], r->occurrence, seed, st->sc->path);
}

static int add_cell(explorer_t *x, story_t *st, size_t row, int action, int mode)
{
    cell_t *grown = realloc(x->cells, (x->n_cells + 1) * sizeof *grown);
    if (grown == NULL)
        return -1;
    x->cells = grown;
    cell_t *c = &x->cells[x->n_cells++];
    memset(c, 0, sizeof *c);
    c->st = st;
    c->row = row;
    c->action = action;
    c->mode = mode;
    atomic_init(&c->fired, false);
    atomic_init(&c->over_limit, false);
    const row_t *r = &st->rows[row];
    if (action == ACT_DELAY)
        snprintf(c->spec, sizeof c->spec, "%s=delay:%d#%llu", r->point, st->delay_ms, r->occurrence);
    else
        snprintf(c->spec, sizeof c->spec, "%s=%s#%llu", r->point, action_names[action], r->occurrence);
    replay_command(x, st, r, action, mode, c->replay, sizeof c->replay);
    /* Its page: report_write names it <group>-<name>; keep each part short of its 100 characters. */
    char name[300];
    snprintf(name, sizeof name, "%s.%s.%s.%s.%llu.%s", st->sc->name, mode_names[mode], r->instance, r->point,
             r->occurrence, action_names[action]);
    if (strlen(name) >= 100)
        snprintf(name, sizeof name, "%.60s.cell-%zu", st->sc->name, x->n_cells);
    snprintf(c->page_name, sizeof c->page_name, "%s", name);
    char g[110], n[110];
    safe_part(g, sizeof g, st->sc->group);
    safe_part(n, sizeof n, name);
    snprintf(c->page_base, sizeof c->page_base, "%s%s%s", g, g[0] ? "-" : "", n);
    return 0;
}

/*
 * Whether the story arms `point` of `service` itself (its `faults`, or a
 * `fault`/`release` step): that run-time rule replaces the explorer's,
 * which then may never fire -- a cell that tests nothing. Such rows are
 * left out, and said so.
 */
static bool story_arms(const scenario_t *sc, const char *service, const char *point)
{
    for (size_t i = 0; i < sc->n_faults; i++)
        if (strcmp(sc->faults[i].service, service) == 0 && strcmp(sc->faults[i].point, point) == 0)
            return true;
    for (size_t i = 0; i < sc->n_steps; i++) {
        const scenario_step_t *s = &sc->steps[i];
        if ((s->kind == STEP_FAULT || s->kind == STEP_RELEASE) && strcmp(s->fault.service, service) == 0 &&
            strcmp(s->fault.point, point) == 0)
            return true;
    }
    return false;
}

/* Every cell of a story, in matrix order: row, action, mode. */
static int build_cells(explorer_t *x, story_t *st)
{
    st->first_cell = x->n_cells;
    size_t left_out = 0;
    char which[300] = "";
    for (size_t r = 0; r < st->n_rows; r++) {
        if (x->o->cell == NULL && story_arms(st->sc, st->rows[r].service, st->rows[r].point)) {
            if (left_out++ == 0)
                snprintf(which, sizeof which, "%s of %s", st->rows[r].point, st->rows[r].service);
            continue;
        }
        for (int a = 0; a < N_ACTIONS; a++) {
            if (!(x->o->actions & (1u << a)) || !point_defines(st->rows[r].point, a))
                continue;
            for (int m = 0; m < N_MODES; m++)
                if ((x->o->modes & (1u << m)) && st->rows[r].in_mode[m] && add_cell(x, st, r, a, m) != 0)
                    return -1;
        }
    }
    if (left_out > 0 && x->o->progress)
        fprintf(stderr, "%s: %zu hit%s left out, of points the story arms itself (%s%s): a fault of the "
                        "explorer's there would be replaced by the story's, and might never fire\n",
                st->full, left_out, left_out == 1 ? "" : "s", which, left_out > 1 ? ", ..." : "");
    st->n_cells = x->n_cells - st->first_cell;
    return 0;
}

/*
 * --cell INSTANCE:POINT=ACTION#N: one row, no clean run. "delay" takes the
 * story's delay; "delay:MS" is accepted and means the same (the length is
 * the explorer's). 0, or -1 with err.
 */
static int cell_row(story_t *st, const char *spec, unsigned *action_bits, char *err, size_t errcap)
{
    char buf[400], instance[64], service[32] = "", point[160], action[40];
    unsigned long long occ = 0;
    snprintf(buf, sizeof buf, "%s", spec);
    char *colon = strchr(buf, ':'), *eq = colon != NULL ? strchr(colon, '=') : NULL;
    char *hash = eq != NULL ? strchr(eq, '#') : NULL;
    if (colon == NULL || eq == NULL || hash == NULL) {
        snprintf(err, errcap, "--cell wants INSTANCE:POINT=ACTION#N (e.g. orders-0:natomic/client_send=crash#2), "
                              "got '%s'", spec);
        return -1;
    }
    *colon = *eq = *hash = '\0';
    snprintf(instance, sizeof instance, "%.63s", buf);
    snprintf(point, sizeof point, "%.159s", colon + 1);
    snprintf(action, sizeof action, "%.39s", eq + 1);
    char *end = NULL;
    occ = strtoull(hash + 1, &end, 10);
    if (strncmp(action, "delay:", 6) == 0)
        action[5] = '\0';
    int a = -1;
    for (int i = 0; i < N_ACTIONS; i++)
        if (strcmp(action_names[i], action) == 0)
            a = i;
    const char *dash = strrchr(instance, '-');
    if (dash != NULL)
        snprintf(service, sizeof service, "%.*s", (int)(dash - instance), instance);
    int k = dash != NULL ? instance_number(service, instance) : -1;
    if (k < 0 || service_rank(st->sc, service) == (int)st->sc->n_services) {
        snprintf(err, errcap, "--cell: '%s' is not an instance of this story (<service>-<k>, e.g. orders-0)", instance);
        return -1;
    }
    if (fault_point(point) == NULL) {
        snprintf(err, errcap, "--cell: unknown fault point '%s' (docs/fault-points.md)", point);
        return -1;
    }
    if (a < 0 || !point_defines(point, a)) {
        snprintf(err, errcap, "--cell: %s defines no action '%s' (crash and delay everywhere; error, drop, "
                              "duplicate where docs/fault-points.md has no '-')", point, action);
        return -1;
    }
    if (*end != '\0' || occ == 0) {
        snprintf(err, errcap, "--cell: the hit after '#' must be a number from 1, got '%s'", hash + 1);
        return -1;
    }
    st->rows = calloc(1, sizeof *st->rows);
    if (st->rows == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    row_t *r = &st->rows[0];
    st->n_rows = 1;
    snprintf(r->service, sizeof r->service, "%s", service);
    snprintf(r->instance, sizeof r->instance, "%s", instance);
    snprintf(r->point, sizeof r->point, "%.127s", point);
    r->k = k;
    r->occurrence = occ;
    r->in_mode[MODE_MEMORY] = r->in_mode[MODE_DURABLE] = true;
    *action_bits = 1u << a;
    return 0;
}

/* ---- phase 3: a replay per cell ------------------------------------------------------------ */

static void cell_on_hit(void *user, const runner_fault_hit_t *h)
{
    cell_t *c = user;
    const row_t *r = &c->st->rows[c->row];
    if (h->fired[0] != '\0' && h->occurrence == r->occurrence && strcmp(h->instance, r->instance) == 0 &&
        strcmp(h->point, r->point) == 0)
        atomic_store(&c->fired, true);
}

static bool cell_cancelled(void *user)
{
    cell_t *c = user;
    return stopping() || atomic_load(&c->over_limit);
}

static void add_broken(cell_t *c, const runner_invariant_t *iv, bool expected, const char *lesson)
{
    json_t *b = json_object();
    json_object_set_new(b, "invariant", json_string(iv->name));
    json_object_set_new(b, "holds", iv->holds < 0 ? json_string("cannot be checked") : json_false());
    json_object_set_new(b, "why", json_string(iv->why));
    json_object_set_new(b, "expected", json_boolean(expected));
    if (lesson != NULL)
        json_object_set_new(b, "lesson", json_string(lesson));
    json_array_append_new(c->broken, b);
}

/* The verdict of a replay that ran, from its invariants and the story's lessons. */
static void judge(explorer_t *x, cell_t *c)
{
    const row_t *r = &c->st->rows[c->row];
    const runner_replay_t *rp = &c->rp;
    c->broken = json_array();
    bool interrupted = rp->cancelled && !atomic_load(&c->over_limit);
    if (!rp->setup_ok) {
        c->verdict = V_VIOLATION;
        snprintf(c->note, sizeof c->note, "the story did not start: %s", rp->setup_error);
        return;
    }
    if (interrupted) {
        c->verdict = V_NOT_RUN;
        snprintf(c->note, sizeof c->note, "not run to its end: %s",
                 atomic_load(&stop_reason) == 2 ? "the exploration's time limit passed" : "interrupted");
        return;
    }
    if (rp->cancelled) {
        c->verdict = V_VIOLATION;
        snprintf(c->note, sizeof c->note, "cut short: past its time limit of %d s", x->o->cell_limit_s);
        return;
    }
    size_t unexpected = 0, expected = 0, used = 0;
    char what[700] = "";
    const lesson_t *first_lesson = NULL;
    for (size_t i = 0; i < rp->n_invariants; i++) {
        const runner_invariant_t *iv = &rp->invariants[i];
        if (iv->holds == 1)
            continue;
        const char *lesson = NULL;
        bool ok = false;
        if (iv->expected_broken && iv->holds == 0) {
            ok = true;
            lesson = "the story's own lesson (its `violations`)";
        } else if (iv->holds == 0 && c->mode == MODE_MEMORY) {
            lesson_t *l = lessons_find(c->st->lessons, mode_names[c->mode], r->service, r->k, r->point,
                                       action_names[c->action], r->occurrence, iv->name);
            if (l != NULL) {
                ok = true;
                lesson = l->reason;
                if (first_lesson == NULL)
                    first_lesson = l;
            }
        }
        add_broken(c, iv, ok, lesson);
        expected += ok;
        unexpected += !ok;
        int w = snprintf(what + used, sizeof what - used, "%s%s%s: %.160s", used ? "; " : "", iv->name,
                         ok ? "" : " (UNEXPECTED)", iv->why);
        used += w > 0 && (size_t)w < sizeof what - used ? (size_t)w : 0;
    }
    /* A lesson explains a cell once, however many of its invariants it names. */
    if (first_lesson != NULL && unexpected == 0) {
        pthread_mutex_lock(&x->mu);
        ((lesson_t *)first_lesson)->cells++;
        pthread_mutex_unlock(&x->mu);
    }
    bool fired = atomic_load(&c->fired);
    if (!fired) {
        c->verdict = V_VIOLATION;
        snprintf(c->note, sizeof c->note, "the fault never fired: hit %llu of %s at %s did not come in this replay "
                 "(the clean run saw it); %s", r->occurrence, r->instance, r->point,
                 used ? what : "every invariant held");
        return;
    }
    if (unexpected > 0) {
        c->verdict = V_VIOLATION;
        snprintf(c->note, sizeof c->note, "%s", what);
    } else if (expected > 0) {
        char why[400];
        first_sentence(first_lesson != NULL ? first_lesson->reason : "the story's own lesson", why, sizeof why);
        c->verdict = V_EXPECTED;
        snprintf(c->note, sizeof c->note, "expected (a lesson): %.400s -- %s", what, why);
    } else {
        c->verdict = V_CONSISTENT;
        snprintf(c->note, sizeof c->note, "consistent: every invariant held %s%.1f s after the last step%s",
                 rp->settled ? "steadily, " : "", rp->settle_s, c->restarts > 0 ? " (after a restart)" : "");
    }
}

static void cell_about(const explorer_t *x, cell_t *c)
{
    const row_t *r = &c->st->rows[c->row];
    char story[400];
    first_sentence(c->st->sc->about, story, sizeof story);
    snprintf(c->about, sizeof c->about,
             "Explored, %s mode: %s at %s, hit %llu of %s (NATOMIC_FAULTS=%s at its first start); a process that "
             "died was restarted %d ms later. Verdict: %s. %s The story: %s",
             mode_names[c->mode], action_names[c->action], r->point, r->occurrence, r->instance, c->spec,
             x->o->restart_after_ms, verdict_names[c->verdict], c->note, story);
}

/* Plays one cell and judges it. */
static void cell_play(explorer_t *x, cell_t *c)
{
    if (stopping()) {
        c->verdict = V_NOT_RUN;
        snprintf(c->note, sizeof c->note, "not run: %s",
                 atomic_load(&stop_reason) == 2 ? "the exploration's time limit passed" : "interrupted");
        c->broken = json_array();
        return;
    }
    const row_t *r = &c->st->rows[c->row];
    runner_replay_options_t ro;
    replay_options(x, c->st, c->mode, &ro);
    ro.fault_service = r->service;
    ro.fault_instance = r->k;
    ro.faults = c->spec;
    ro.on_hit = cell_on_hit;
    ro.cancelled = cell_cancelled;
    ro.user = c;
    ro.replay = c->replay;
    runner_replay(c->st->sc, &ro, &c->rp);
    c->has_rp = true;
    c->duration_s = c->rp.duration_s;
    c->settle_s = c->rp.settle_s;
    c->restarts = c->rp.restarts;
    judge(x, c);
    cell_about(x, c);
    if (c->rp.kept[0] != '\0') {
        pthread_mutex_lock(&x->out_mu);
        fprintf(stderr, "kept: %s (%s)\n", c->rp.kept, c->replay);
        pthread_mutex_unlock(&x->out_mu);
    }
    if (x->o->report_dir == NULL) {
        runner_replay_free(&c->rp);
        c->has_rp = false;
    }
}

/* ---- the pool -------------------------------------------------------------------------------- */

typedef struct task {
    clean_t *clean;              /* a clean run, or */
    cell_t *cell;                /* a cell                                                      */
    bool done;
} task_t;

typedef struct pool {
    explorer_t *x;
    task_t *tasks;
    size_t n;
    atomic_size_t next;
} pool_t;

static void progress_line(explorer_t *x, const cell_t *c)
{
    if (!x->o->progress)
        return;
    const row_t *r = &c->st->rows[c->row];
    pthread_mutex_lock(&x->mu);
    size_t done = ++x->finished;
    pthread_mutex_unlock(&x->mu);
    double elapsed = now_s() - x->t_cells;
    char el[32], eta[32], where[240];
    duration_text(elapsed, el, sizeof el);
    duration_text(done < x->n_cells ? elapsed / (double)done * (double)(x->n_cells - done) : 0, eta, sizeof eta);
    snprintf(where, sizeof where, "%s %s#%llu %s", r->instance, r->point, r->occurrence, action_names[c->action]);
    pthread_mutex_lock(&x->out_mu);
    fprintf(stderr, "[%*zu/%zu] %-7s %-58s %-18s (%4.1f s)  %s elapsed, ETA %s\n", x->n_cells >= 100 ? 3 : 2, done,
            x->n_cells, mode_names[c->mode], where, verdict_names[c->verdict], c->duration_s, el, eta);
    if (c->verdict == V_VIOLATION)
        fprintf(stderr, "    %s\n    replay: %s\n", c->note, c->replay);
    pthread_mutex_unlock(&x->out_mu);
}

static void *pool_worker(void *arg)
{
    pool_t *p = arg;
    explorer_t *x = p->x;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n)
            return NULL;
        task_t *t = &p->tasks[i];
        if (t->clean != NULL) {
            clean_play(x, t->clean);
            if (x->o->progress) {
                clean_t *c = t->clean;
                pthread_mutex_lock(&x->out_mu);
                fprintf(stderr, "clean run %-7s %-40s %s, %zu hits in the story (%.1f s)%s%s\n", mode_names[c->mode],
                        c->st->full, c->ok ? "consistent" : "NOT CONSISTENT", c->n_hits, c->rp.duration_s,
                        c->error[0] ? ": " : "", c->error);
                pthread_mutex_unlock(&x->out_mu);
            }
        } else {
            pthread_mutex_lock(&x->mu);
            t->cell->started = now_s(); /* the main thread reads it for the time limit */
            pthread_mutex_unlock(&x->mu);
            cell_play(x, t->cell);
            t->cell->done = true;
            progress_line(x, t->cell);
        }
        pthread_mutex_lock(&x->mu);
        t->done = true;
        pthread_cond_broadcast(&x->cond);
        pthread_mutex_unlock(&x->mu);
    }
}

/* `  key: "value"` on one line, escaped for YAML's double quotes. */
static void yaml_line(const char *key, const char *value)
{
    printf("  %s: \"", key);
    for (const char *s = value; *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        if (*s == '\n')
            fputs("\\n", stdout);
        else
            putchar(*s);
    }
    printf("\"\n");
}

static void print_tap_cell(const cell_t *c, size_t number)
{
    const row_t *r = &c->st->rows[c->row];
    bool ok = c->verdict == V_CONSISTENT || c->verdict == V_EXPECTED;
    /* No '#' in a description: a TAP reader takes what follows it for a directive. */
    printf("%s %zu - %s %s: %s %s hit %llu %s: %s", ok || c->verdict == V_NOT_RUN ? "ok" : "not ok", number,
           mode_names[c->mode], c->st->full, r->instance, r->point, r->occurrence, action_names[c->action],
           c->verdict == V_EXPECTED ? "expected violation" : verdict_names[c->verdict]);
    if (c->verdict == V_NOT_RUN)
        printf(" # SKIP %s", c->note);
    printf("\n");
    if (c->verdict == V_CONSISTENT || c->verdict == V_NOT_RUN)
        return;
    json_t *names = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(c->broken, i, b) json_array_append(names, json_object_get(b, "invariant"));
    char *broken = json_dumps(names, JSON_COMPACT);
    json_decref(names);
    printf("  ---\n");
    yaml_line("message", c->note);
    printf("  invariants_broken: %s\n", broken != NULL ? broken : "[]");
    yaml_line("fault", c->spec);
    yaml_line("replay", c->replay);
    printf("  ...\n");
    free(broken);
}

/*
 * Runs the tasks on `jobs` threads. The calling thread watches the time
 * limits and, when `tap` is set, prints each cell's TAP point in order as
 * soon as it and those before it ended. Returns how many were printed.
 */
static size_t run_pool(explorer_t *x, task_t *tasks, size_t n, int jobs, bool tap, size_t *counter)
{
    pool_t p = {.x = x, .tasks = tasks, .n = n};
    atomic_init(&p.next, 0);
    pthread_t threads[MAX_JOBS];
    int started = 0;
    if ((size_t)jobs > n)
        jobs = n > 0 ? (int)n : 1;
    for (int i = 0; i < jobs; i++)
        if (pthread_create(&threads[started], NULL, pool_worker, &p) == 0)
            started++;
    if (started == 0)
        pool_worker(&p);
    size_t printed = 0;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        while (printed < n && tasks[printed].done) {
            if (tap && tasks[printed].cell != NULL) {
                pthread_mutex_unlock(&x->mu);
                print_tap_cell(tasks[printed].cell, ++*counter);
                fflush(stdout);
                pthread_mutex_lock(&x->mu);
            }
            printed++;
        }
        if (printed == n)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 200 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&x->cond, &x->mu, &until);
        double now = now_s();
        if (x->o->time_limit_s > 0 && now - x->t_start > x->o->time_limit_s) {
            int expected = 0;
            if (atomic_compare_exchange_strong(&stop_reason, &expected, 2))
                fprintf(stderr, "natomic-lab explore: the time limit of %d s passed: cutting the running replays "
                                "short, starting no other\n", x->o->time_limit_s);
        }
        for (size_t i = 0; i < n; i++) {
            cell_t *c = tasks[i].cell;
            if (c != NULL && !tasks[i].done && c->started > 0 && now - c->started > x->o->cell_limit_s)
                atomic_store(&c->over_limit, true);
        }
    }
    pthread_mutex_unlock(&x->mu);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    return printed;
}

/* ---- outputs ------------------------------------------------------------------------------- */

static json_t *cell_json(const explorer_t *x, const cell_t *c)
{
    const row_t *r = &c->st->rows[c->row];
    json_t *j = json_object();
    json_object_set_new(j, "story", json_string(c->st->full));
    json_object_set_new(j, "file", json_string(c->st->sc->path));
    json_object_set_new(j, "service", json_string(r->service));
    json_object_set_new(j, "instance", json_string(r->instance));
    json_object_set_new(j, "point", json_string(r->point));
    json_object_set_new(j, "occurrence", json_integer((json_int_t)r->occurrence));
    json_object_set_new(j, "action", json_string(action_names[c->action]));
    json_object_set_new(j, "mode", json_string(mode_names[c->mode]));
    json_object_set_new(j, "fault", json_string(c->spec));
    json_object_set_new(j, "verdict", json_string(verdict_names[c->verdict]));
    json_t *names = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(c->broken, i, b) json_array_append(names, json_object_get(b, "invariant"));
    json_object_set_new(j, "invariants_broken", names);
    json_object_set_new(j, "broken", c->broken != NULL ? json_incref(c->broken) : json_array());
    json_object_set_new(j, "note", json_string(c->note));
    json_object_set_new(j, "fired", json_boolean(atomic_load(&c->fired)));
    json_object_set_new(j, "restarts", json_integer((json_int_t)c->restarts));
    json_object_set_new(j, "settle_s", json_real((double)(long)(c->settle_s * 100) / 100.0));
    json_object_set_new(j, "duration_s", json_real((double)(long)(c->duration_s * 100) / 100.0));
    json_object_set_new(j, "replay", json_string(c->replay));
    if (x->o->report_dir != NULL && c->has_rp) {
        char page[300];
        snprintf(page, sizeof page, "replays/%s.html", c->page_base);
        json_object_set_new(j, "page", json_string(page));
    }
    return j;
}

static int write_json(const explorer_t *x, double duration_s)
{
    json_t *doc = json_object(), *cells = json_array(), *stories = json_array(), *summary = json_object();
    size_t counts[N_MODES][4] = {{0}};
    for (size_t i = 0; i < x->n_cells; i++) {
        const cell_t *c = &x->cells[i];
        counts[c->mode][c->verdict]++;
        if (c->verdict != V_NOT_RUN)
            json_array_append_new(cells, cell_json(x, c));
    }
    for (int m = 0; m < N_MODES; m++) {
        if (!(x->o->modes & (1u << m)))
            continue;
        json_t *s = json_object();
        json_object_set_new(s, "cells", json_integer((json_int_t)(counts[m][0] + counts[m][1] + counts[m][2])));
        for (int v = 0; v < 4; v++)
            json_object_set_new(s, verdict_names[v], json_integer((json_int_t)counts[m][v]));
        json_object_set_new(summary, mode_names[m], s);
    }
    for (size_t k = 0; k < x->n_stories; k++) {
        const story_t *st = &x->stories[k];
        json_t *s = json_object(), *clean = json_array(), *unused = json_array();
        json_object_set_new(s, "story", json_string(st->full));
        json_object_set_new(s, "file", json_string(st->sc->path));
        json_object_set_new(s, "lessons", st->has_lessons ? json_string(st->lessons_path) : json_null());
        json_object_set_new(s, "delay_ms", json_integer(st->delay_ms));
        json_object_set_new(s, "rows", json_integer((json_int_t)st->n_rows));
        for (int m = 0; m < N_MODES; m++) {
            const clean_t *c = &st->clean[m];
            if (!c->ran)
                continue;
            json_t *cj = json_object();
            json_object_set_new(cj, "mode", json_string(mode_names[m]));
            json_object_set_new(cj, "consistent", json_boolean(c->ok));
            json_object_set_new(cj, "hits", json_integer((json_int_t)c->n_hits));
            json_object_set_new(cj, "duration_s", json_real((double)(long)(c->rp.duration_s * 100) / 100.0));
            if (c->error[0] != '\0')
                json_object_set_new(cj, "error", json_string(c->error));
            json_array_append_new(clean, cj);
        }
        json_object_set_new(s, "clean_runs", clean);
        for (size_t i = 0; st->lessons != NULL && i < st->lessons->n; i++)
            if (st->lessons->items[i].cells == 0)
                json_array_append_new(unused, json_pack("{s:s, s:s, s:s, s:i}", "service",
                                                        st->lessons->items[i].service, "point",
                                                        st->lessons->items[i].point, "action",
                                                        st->lessons->items[i].action, "line",
                                                        st->lessons->items[i].line));
        json_object_set_new(s, "lessons_unused", unused);
        json_array_append_new(stories, s);
    }
    json_t *modes = json_array(), *actions = json_array();
    for (int m = 0; m < N_MODES; m++)
        if (x->o->modes & (1u << m))
            json_array_append_new(modes, json_string(mode_names[m]));
    for (int a = 0; a < N_ACTIONS; a++)
        if (x->o->actions & (1u << a))
            json_array_append_new(actions, json_string(action_names[a]));
    json_object_set_new(doc, "command", json_string(x->o->command != NULL ? x->o->command : ""));
    json_object_set_new(doc, "modes", modes);
    json_object_set_new(doc, "actions", actions);
    json_object_set_new(doc, "jobs", json_integer(x->o->jobs));
    json_object_set_new(doc, "duration_s", json_real((double)(long)(duration_s * 10) / 10.0));
    json_object_set_new(doc, "stories", stories);
    json_object_set_new(doc, "summary", summary);
    json_object_set_new(doc, "cells", cells);
    int rc = json_dump_file(doc, x->o->json_path, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (rc != 0)
        fprintf(stderr, "natomic-lab explore: cannot write %s: %s\n", x->o->json_path, strerror(errno));
    return rc == 0 ? 0 : -1;
}

static matrix_verdict_t matrix_verdict(verdict_t v)
{
    switch (v) {
    case V_CONSISTENT:
        return MATRIX_CONSISTENT;
    case V_EXPECTED:
        return MATRIX_EXPECTED;
    case V_VIOLATION:
        return MATRIX_VIOLATION;
    default:
        return MATRIX_NOT_RUN;
    }
}

/* The replays' pages (replays/), then the matrix (index.html). */
static int write_report(explorer_t *x, double duration_s)
{
    const char *dir = x->o->report_dir;
    char sub[4096], err[512];
    snprintf(sub, sizeof sub, "%s/replays", dir);
    size_t n_pages = 0;
    report_scenario_t *pages = calloc(x->n_cells + 2 * x->n_stories + 1, sizeof *pages);
    char (*clean_names)[200] = calloc(2 * x->n_stories + 1, sizeof *clean_names);
    char (*clean_about)[600] = calloc(2 * x->n_stories + 1, sizeof *clean_about);
    matrix_story_t *ms = calloc(x->n_stories + 1, sizeof *ms);
    if (pages == NULL || clean_names == NULL || clean_about == NULL || ms == NULL) {
        free(pages);
        free(clean_names);
        free(clean_about);
        free(ms);
        fprintf(stderr, "natomic-lab explore: report: out of memory\n");
        return -1;
    }
    for (size_t k = 0; k < x->n_stories; k++)
        for (int m = 0; m < N_MODES; m++) {
            clean_t *c = &x->stories[k].clean[m];
            if (!c->ran)
                continue;
            size_t i = 2 * k + (size_t)m;
            snprintf(clean_names[i], sizeof clean_names[i], "%s.%s.clean", x->stories[k].sc->name, mode_names[m]);
            snprintf(clean_about[i], sizeof clean_about[i], "The clean run of the exploration, %s mode: the story as "
                     "written, every fault point hit traced (%zu in the story). %s", mode_names[m], c->n_hits,
                     c->ok ? "Its invariants held." : c->error);
            pages[n_pages] = c->rp.report;
            pages[n_pages].name = clean_names[i];
            pages[n_pages].about = clean_about[i];
            n_pages++;
        }
    for (size_t i = 0; i < x->n_cells; i++) {
        cell_t *c = &x->cells[i];
        if (!c->has_rp)
            continue;
        pages[n_pages] = c->rp.report;
        pages[n_pages].name = c->page_name;
        pages[n_pages].about = c->about;
        n_pages++;
    }
    int rc = report_write(sub, pages, n_pages, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "natomic-lab explore: report: %s\n", err);

    /* The matrix: per story its rows, cells and lessons. */
    const char *modes[N_MODES], *actions[N_ACTIONS];
    int mode_col[N_MODES] = {0}, action_col[N_ACTIONS] = {0};
    size_t n_modes = 0, n_actions = 0;
    for (int m = 0; m < N_MODES; m++)
        if (x->o->modes & (1u << m)) {
            mode_col[m] = (int)n_modes;
            modes[n_modes++] = mode_names[m];
        }
    for (int a = 0; a < N_ACTIONS; a++)
        if (x->o->actions & (1u << a)) {
            action_col[a] = (int)n_actions;
            actions[n_actions++] = action_names[a];
        }
    size_t total_rows = 0, total_lessons = 0;
    for (size_t k = 0; k < x->n_stories; k++) {
        total_rows += x->stories[k].n_rows;
        total_lessons += x->stories[k].lessons != NULL ? x->stories[k].lessons->n : 0;
    }
    matrix_row_t *rows = calloc(total_rows + 1, sizeof *rows);
    matrix_cell_t *mcells = calloc(x->n_cells + 1, sizeof *mcells);
    char (*hrefs)[300] = calloc(x->n_cells + 1, sizeof *hrefs);
    char (*notes)[600] = calloc(x->n_stories * 3 + 1, sizeof *notes);
    const char **note_ptrs = calloc(x->n_stories * 3 + 1, sizeof *note_ptrs);
    matrix_lesson_t *mlessons = calloc(total_lessons + 1, sizeof *mlessons);
    char (*lesson_text)[2][2000] = calloc(total_lessons + 1, sizeof *lesson_text);
    matrix_link_t *links = calloc(x->n_stories * N_MODES + 1, sizeof *links);
    char (*link_text)[2][400] = calloc(x->n_stories * N_MODES + 1, sizeof *link_text);
    if (rows == NULL || mcells == NULL || hrefs == NULL || notes == NULL || note_ptrs == NULL || mlessons == NULL ||
        lesson_text == NULL || links == NULL || link_text == NULL) {
        fprintf(stderr, "natomic-lab explore: report: out of memory\n");
        rc = -1;
    }
    size_t row_at = 0, cell_at = 0, lesson_at = 0, note_at = 0, link_at = 0;
    for (size_t k = 0; rc == 0 && k < x->n_stories; k++) {
        story_t *st = &x->stories[k];
        matrix_story_t *s = &ms[k];
        s->title = st->full;
        s->path = st->sc->path;
        s->about = st->sc->about;
        s->lessons_path = st->has_lessons ? st->lessons_path : NULL;
        s->actions = actions;
        s->n_actions = n_actions;
        s->modes = modes;
        s->n_modes = n_modes;
        s->rows = &rows[row_at];
        s->n_rows = st->n_rows;
        for (size_t r = 0; r < st->n_rows; r++)
            rows[row_at + r] = (matrix_row_t){st->rows[r].instance, st->rows[r].point, st->rows[r].occurrence};
        row_at += st->n_rows;
        s->cells = &mcells[cell_at];
        for (size_t i = st->first_cell; i < st->first_cell + st->n_cells; i++) {
            const cell_t *c = &x->cells[i];
            matrix_cell_t *mc = &mcells[cell_at++];
            mc->row = c->row;
            mc->action = (size_t)action_col[c->action];
            mc->mode = (size_t)mode_col[c->mode];
            mc->verdict = matrix_verdict(c->verdict);
            mc->note = c->note;
            if (c->has_rp) {
                snprintf(hrefs[i], sizeof hrefs[i], "replays/%s.html", c->page_base);
                mc->href = hrefs[i];
            }
            s->n_cells++;
        }
        /* One row per reason: entries that share it (a YAML anchor) and their invariants are one lesson. */
        s->lessons = &mlessons[lesson_at];
        for (size_t i = 0; st->lessons != NULL && i < st->lessons->n; i++) {
            const lesson_t *l = &st->lessons->items[i];
            char where[300], occ[40] = "", inst[40] = "", breaks[300] = "";
            if (l->occurrence > 0)
                snprintf(occ, sizeof occ, ", hit %llu", l->occurrence);
            if (l->instance >= 0)
                snprintf(inst, sizeof inst, "-%d", l->instance);
            snprintf(where, sizeof where, "%s: %s%s, %s%s, %s", l->mode, l->service, inst, l->point, occ, l->action);
            size_t used = 0;
            for (size_t b = 0; b < l->n_breaks; b++) {
                int w = snprintf(breaks + used, sizeof breaks - used, "%s%s", b ? ", " : "", l->breaks[b]);
                used += w > 0 && (size_t)w < sizeof breaks - used ? (size_t)w : 0;
            }
            matrix_lesson_t *ml = NULL;
            for (size_t k2 = 0; k2 < s->n_lessons && ml == NULL; k2++)
                if (strcmp(s->lessons[k2].reason, l->reason) == 0 && strcmp(s->lessons[k2].breaks, breaks) == 0)
                    ml = &mlessons[lesson_at - s->n_lessons + k2];
            if (ml != NULL) {
                char (*text)[2000] = &lesson_text[ml - mlessons][0];
                size_t len = strlen(*text);
                snprintf(*text + len, sizeof *text - len, "\n%s", where);
                ml->cells += l->cells;
                continue;
            }
            ml = &mlessons[lesson_at];
            snprintf(lesson_text[lesson_at][0], sizeof lesson_text[lesson_at][0], "%s", where);
            snprintf(lesson_text[lesson_at][1], sizeof lesson_text[lesson_at][1], "%s", breaks);
            ml->what = lesson_text[lesson_at][0];
            ml->breaks = lesson_text[lesson_at][1];
            ml->reason = l->reason;
            ml->cells = l->cells;
            lesson_at++;
            s->n_lessons++;
        }
        s->notes = &note_ptrs[note_at];
        snprintf(notes[note_at], sizeof notes[note_at], "delay = %d ms: the story's longest call timeout plus %d ms, "
                 "so it outlasts every caller's deadline. A crashed process is restarted %d ms after it died.",
                 st->delay_ms, DELAY_MARGIN_MS, x->o->restart_after_ms);
        note_ptrs[note_at] = notes[note_at];
        note_at++;
        s->n_notes++;
        s->links = &links[link_at];
        for (int m = 0; m < N_MODES; m++) {
            const clean_t *c = &st->clean[m];
            if (!c->ran)
                continue;
            char g[110], n[110], name[200];
            snprintf(name, sizeof name, "%s.%s.clean", st->sc->name, mode_names[m]);
            safe_part(g, sizeof g, st->sc->group);
            safe_part(n, sizeof n, name);
            snprintf(link_text[link_at][0], sizeof link_text[link_at][0], "clean run, %s mode: %s, %zu hits in the "
                     "story, %.1f s%s%.200s", mode_names[m], c->ok ? "consistent" : "NOT consistent", c->n_hits,
                     c->rp.duration_s, c->error[0] ? ": " : "", c->error);
            snprintf(link_text[link_at][1], sizeof link_text[link_at][1], "replays/%s%s%s.html", g, g[0] ? "-" : "", n);
            links[link_at] = (matrix_link_t){link_text[link_at][0], link_text[link_at][1]};
            link_at++;
            s->n_links++;
        }
    }
    if (rc == 0) {
        matrix_page_t page = {.command = x->o->command,
                              .duration_s = duration_s,
                              .jobs = x->o->jobs,
                              .stories = ms,
                              .n_stories = x->n_stories};
        char path[4096];
        snprintf(path, sizeof path, "%s/index.html", dir);
        if (matrix_write(path, &page, err, sizeof err) != 0) {
            fprintf(stderr, "natomic-lab explore: report: %s\n", err);
            rc = -1;
        } else if (x->o->progress) {
            fprintf(stderr, "report: %s\n", path);
        }
    }
    free(pages);
    free(clean_names);
    free(clean_about);
    free(ms);
    free(rows);
    free(mcells);
    free(hrefs);
    free(notes);
    free(note_ptrs);
    free(mlessons);
    free(lesson_text);
    free(links);
    free(link_text);
    return rc;
}

/* ---- the whole exploration ---------------------------------------------------------------- */

typedef struct found {
    char **paths;
    size_t n;
} found_t;

static int collect(const char *path, void *user)
{
    found_t *f = user;
    char **grown = realloc(f->paths, (f->n + 1) * sizeof *grown);
    if (grown == NULL)
        return -1;
    f->paths = grown;
    f->paths[f->n++] = strdup(path);
    return 0;
}

/* Loads each story and its lessons; the first problem ends the exploration before anything runs. */
static int load_stories(explorer_t *x, const found_t *f)
{
    x->stories = calloc(f->n > 0 ? f->n : 1, sizeof *x->stories);
    if (x->stories == NULL)
        return -1;
    for (size_t i = 0; i < f->n; i++) {
        story_t *st = &x->stories[x->n_stories];
        char err[2048];
        if (scenario_load(&st->sc, f->paths[i], err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return -1;
        }
        x->n_stories++;
        if (st->sc->secure) {
            fprintf(stderr, "%s: a 'nats: secure' story cannot be explored: its services run without run-time "
                            "fault control and fault-point records, as the shipped identities require\n",
                    f->paths[i]);
            return -1;
        }
        snprintf(st->full, sizeof st->full, "%s%s%s", st->sc->group, st->sc->group[0] ? "/" : "", st->sc->name);
        lessons_path_of(st->lessons_path, sizeof st->lessons_path, f->paths[i]);
        int rc = lessons_load(&st->lessons, st->lessons_path, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "%s\n", err);
            return -1;
        }
        st->has_lessons = rc == 0;
        st->delay_ms = delay_for(st->sc);
        for (int m = 0; m < N_MODES; m++) {
            st->clean[m].st = st;
            st->clean[m].mode = m;
            pthread_mutex_init(&st->clean[m].mu, NULL);
        }
    }
    return 0;
}

static void free_all(explorer_t *x)
{
    for (size_t i = 0; i < x->n_cells; i++) {
        if (x->cells[i].has_rp)
            runner_replay_free(&x->cells[i].rp);
        json_decref(x->cells[i].broken);
    }
    free(x->cells);
    for (size_t k = 0; k < x->n_stories; k++) {
        story_t *st = &x->stories[k];
        for (int m = 0; m < N_MODES; m++) {
            if (st->clean[m].ran)
                runner_replay_free(&st->clean[m].rp);
            free(st->clean[m].hits);
            pthread_mutex_destroy(&st->clean[m].mu);
        }
        free(st->rows);
        lessons_free(st->lessons);
        scenario_free(st->sc);
    }
    free(x->stories);
}

int explore_run(char *const paths[], size_t n_paths, const explore_options_t *o)
{
    explorer_t x = {.o = o};
    found_t f = {0};
    int walked = scenario_walk(paths, n_paths, collect, &f);
    int rc = walked == 2 ? 2 : 0;
    if (walked == 0 && f.n == 0) {
        fprintf(stderr, "natomic-lab explore: no story found\n");
        rc = 2;
    }
    if (rc == 0 && load_stories(&x, &f) != 0)
        rc = 1;
    for (size_t i = 0; i < f.n; i++)
        free(f.paths[i]);
    free(f.paths);
    if (rc != 0) {
        free_all(&x);
        return rc;
    }
    pthread_mutex_init(&x.mu, NULL);
    pthread_cond_init(&x.cond, NULL);
    pthread_mutex_init(&x.out_mu, NULL);
    atomic_store(&stop_reason, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    runner_replay_environment(); /* before any thread: every fork reads it */
    int jobs = o->jobs > 0 ? o->jobs : default_jobs();
    explore_options_t opts = *o;
    opts.jobs = jobs;
    x.o = &opts;
    x.t_start = now_s();
    printf("TAP version 14\n");
    fflush(stdout);

    /* 1. The clean runs (none for --cell: its row is given). */
    size_t failed = 0, counter = 0;
    if (o->cell != NULL) {
        for (size_t k = 0; k < x.n_stories; k++) {
            char err[600];
            unsigned bits = 0;
            if (cell_row(&x.stories[k], o->cell, &bits, err, sizeof err) != 0) {
                fprintf(stderr, "natomic-lab explore: %s\n", err);
                rc = 2;
                break;
            }
            opts.actions = bits;
        }
    } else {
        task_t *tasks = calloc(x.n_stories * N_MODES + 1, sizeof *tasks);
        size_t n = 0;
        for (size_t k = 0; tasks != NULL && k < x.n_stories; k++)
            for (int m = 0; m < N_MODES; m++)
                if (o->modes & (1u << m))
                    tasks[n++].clean = &x.stories[k].clean[m];
        if (tasks == NULL)
            rc = 1;
        else
            run_pool(&x, tasks, n, jobs, false, &counter);
        free(tasks);
        for (size_t k = 0; rc == 0 && k < x.n_stories; k++)
            for (int m = 0; m < N_MODES; m++) {
                clean_t *c = &x.stories[k].clean[m];
                if (!c->ran)
                    continue;
                printf("# clean run, %s mode, %s: %s; %zu hits after the seed data%s\n", mode_names[m],
                       x.stories[k].full, c->ok ? "consistent" : "NOT consistent", c->n_hits,
                       c->restarted_hits ? " (and hits of restarted processes, not explored)" : "");
                if (!c->ok) {
                    failed++;
                    printf("not ok %zu - %s %s: the clean run\n  ---\n", ++counter, mode_names[m],
                           x.stories[k].full);
                    yaml_line("message", c->error);
                    printf("  ...\n");
                }
            }
    }
    /* 2. The rows and cells. */
    for (size_t k = 0; rc == 0 && k < x.n_stories; k++) {
        if (o->cell == NULL && build_rows(&x, &x.stories[k]) != 0)
            rc = 1;
        if (rc == 0 && build_cells(&x, &x.stories[k]) != 0)
            rc = 1;
    }
    /* 3. The replays. */
    if (rc == 0 && !stopping()) {
        if (o->progress) {
            size_t per_mode[N_MODES] = {0};
            for (size_t i = 0; i < x.n_cells; i++)
                per_mode[x.cells[i].mode]++;
            fprintf(stderr, "%zu cells (memory %zu, durable %zu), %d at once\n", x.n_cells, per_mode[MODE_MEMORY],
                    per_mode[MODE_DURABLE], jobs);
        }
        task_t *tasks = calloc(x.n_cells + 1, sizeof *tasks);
        if (tasks == NULL) {
            rc = 1;
        } else {
            for (size_t i = 0; i < x.n_cells; i++)
                tasks[i].cell = &x.cells[i];
            x.t_cells = now_s();
            run_pool(&x, tasks, x.n_cells, jobs, true, &counter);
        }
        free(tasks);
    }
    printf("1..%zu\n", counter);
    fflush(stdout);

    /* 4. The summary, the files. */
    double duration_s = now_s() - x.t_start;
    size_t counts[N_MODES][4] = {{0}};
    for (size_t i = 0; i < x.n_cells; i++) {
        counts[x.cells[i].mode][x.cells[i].verdict]++;
        failed += x.cells[i].verdict == V_VIOLATION;
    }
    bool not_run = false;
    for (int m = 0; m < N_MODES; m++)
        not_run = not_run || counts[m][V_NOT_RUN] > 0;
    if (o->progress) {
        char took[32];
        duration_text(duration_s, took, sizeof took);
        for (int m = 0; m < N_MODES; m++)
            if (opts.modes & (1u << m))
                fprintf(stderr, "%-7s %zu cells: %zu consistent, %zu expected violations, %zu violations%s\n",
                        mode_names[m], counts[m][0] + counts[m][1] + counts[m][2], counts[m][V_CONSISTENT],
                        counts[m][V_EXPECTED], counts[m][V_VIOLATION], counts[m][V_NOT_RUN] ? ", some not run" : "");
        fprintf(stderr, "explored in %s with %d job%s\n", took, jobs, jobs == 1 ? "" : "s");
        for (size_t k = 0; k < x.n_stories; k++)
            for (size_t i = 0; x.stories[k].lessons != NULL && o->cell == NULL && o->points == NULL && !not_run &&
                               opts.actions == EXPLORE_ALL_ACTIONS && (opts.modes & EXPLORE_MEMORY) &&
                               i < x.stories[k].lessons->n;
                 i++)
                if (x.stories[k].lessons->items[i].cells == 0)
                    fprintf(stderr, "%s:%d: this lesson explained no cell (memory mode does better now?)\n",
                            x.stories[k].lessons_path, x.stories[k].lessons->items[i].line);
    }
    if (rc == 0 && o->json_path != NULL && write_json(&x, duration_s) != 0)
        rc = 1;
    if (rc == 0 && o->report_dir != NULL && write_report(&x, duration_s) != 0)
        rc = 1;
    if (rc == 0 && (failed > 0 || not_run || stopping()))
        rc = 1;
    free_all(&x);
    pthread_mutex_destroy(&x.mu);
    pthread_cond_destroy(&x.cond);
    pthread_mutex_destroy(&x.out_mu);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    return rc;
}
