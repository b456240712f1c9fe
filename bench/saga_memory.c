/*
 * saga_memory.c -- what the order saga costs in memory: whether a process
 * grows under a long load, and how many heap bytes one saga allocates in
 * each service (issue 10, item 4).
 *
 * Part 1, RSS. For each variant, one session (saga_session.c):
 *   1. seed stock and money for every order the load could make (its
 *      bound: MAX_RATE sagas/s over the warm-up and the load);
 *   2. warm-up: the same concurrent load for a sixth of its time (2..30 s),
 *      not sampled: thread stacks, connection buffers, SQLite's page
 *      caches and malloc's arenas fill there, which is start-up, not
 *      growth;
 *   3. the load: `clients` threads making orders for `seconds` (or until
 *      MAX_RATE x seconds were made), while this thread reads VmRSS,
 *      RssAnon and VmHWM of every process of the variant and of
 *      nats-server from /proc/<pid>/status when it starts and once a
 *      second after, and once more when the last call returned;
 *   4. the invariants checked (saga_session_check), as after every phase
 *      of the comparison;
 *   5. stop.
 * Per process: RSS after the warm-up (the first sample), at the end (the
 * last), the largest sample, VmHWM (the kernel's peak, warm-up included),
 * growth = end - after warm-up, and the least-squares slope of RSS against
 * time over the second half of the load, in KiB/min. The verdict reads the
 * slope, not the growth: the first half still holds what fills once and
 * stops (caches up to their caps, arenas of new threads), and a leak is
 * steady, so it is still climbing in the second half. A slope over its
 * limit whose last quarter is under it is "grows, levelling off": what a
 * cache reaching its cap late in the run looks like, where a leak would
 * still climb (in a trial run, the hand-written saga's inventory and
 * payments climbed ~600 KiB over 40 s to the level memory mode's reached
 * within its warm-up, and stayed there). nats-server is read and judged
 * the same way but not counted among the services: it is Go, and its
 * collector's sawtooth of a few hundred KiB makes a 30-second slope
 * noisy.
 *
 * The threshold: "no growth" when that slope is at most
 * max(SLOPE_FLOOR_KIB_MIN, SLOPE_SHARE_MIN x RSS at the end) per minute
 * -- 256 KiB/min or 1% of the process per minute. Why a floor: RSS moves
 * in pages and in jumps (malloc takes and trims memory in 128 KiB steps or
 * more, SQLite's page cache takes pages as the tables grow until its
 * cache_size), so a process that keeps nothing still shows a slope of tens
 * of KiB/min over 30 s; a leak under the floor is also under what a
 * 60-second run can tell from that noise, at ~4 bytes per saga at 1,000
 * sagas/s -- the allocations of part 2, with their bytes kept at exit,
 * see those. Why a share: for a large process (nats-server, whose
 * JetStream store and buffers are tens of MB) a page-sized jitter is not
 * a slope, and 1% a minute is still a process that would double in under
 * two hours, which a service must not do. A verdict "grows" is a figure
 * to look into -- with part 2 and a longer --memory-seconds, which tells a
 * cache still filling from a leak -- never a failure of the run.
 *
 * Part 2, allocations. DHAT (valgrind --tool=dhat) counts every heap
 * allocation of a process and, when it exits, writes per allocation point
 * the bytes and blocks allocated in total ("tb", "tbk"), at the heap's
 * peak ("gb") and still allocated at the end ("eb", "ebk"); the sums over
 * the points are the process's totals. For each variant, two sessions
 * with every service run under DHAT (NATOMIC_SERVICE_WRAPPER, which the
 * supervisor reads when it starts a service; the pid DHAT names its file
 * after is the service's own, valgrind runs in the process it starts):
 * seed, n sequential sagas (n = sagas[0], then sagas[1]), wait for their
 * events, check stock and money, then SIGTERM every service and wait until
 * it has ended -- until DHAT has written its file; the supervisor's own
 * stop would SIGKILL a slow one after 5 s. A session's total is start-up +
 * seeding + n sagas + shutdown, so the difference of the two over the
 * difference of n is one saga alone: bytes per saga = (B2 - B1) / (n2 -
 * n1), and the same for blocks and for bytes still allocated at exit (a
 * leak per saga shows there; a cache freed at exit does not -- part 1 is
 * what sees that). What a service allocates per second rather than per
 * saga (timers, NATS pings) is counted in too, since the longer session
 * also lasts longer; under DHAT a saga takes tens of ms, so that share is
 * small but not nil. Only stock and money are checked in these sessions:
 * the full check asks get_order once per order and lists every
 * notification, and those calls would be counted as the sagas'
 * allocations.
 *
 * Bounds. The load ends `seconds` after it started (a call in flight
 * finishes within its 10 s timeout), the samples are at most one a second
 * plus SAMPLE_SLACK; under DHAT every call may take DHAT_CALL_TIMEOUT_MS (a
 * program under valgrind runs 20-50 times slower), a session
 * DHAT_SESSION_MAX_S, and the wait for the services to end
 * DHAT_EXIT_WAIT_MS. Everything stops on bench_should_stop(); every
 * session is stopped on every path and the DHAT files and folder removed.
 */
#include "saga_memory.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "bench_budget.h"
#include "supervisor.h"

#define PROGRAM "natomic-bench-saga"

#define MAX_RATE 20000        /* sagas/s: bounds a load's calls (and its seed), above what a machine here reaches */
#define WARMUP_MIN_S 2
#define WARMUP_MAX_S 30
#define SAMPLE_SLACK 32       /* samples beyond one a second: the calls in flight at the deadline, and margin */
#define SLOPE_FLOOR_KIB_MIN 256.0
#define SLOPE_SHARE_MIN 0.01  /* of the RSS at the end, per minute */
#define MIN_SLOPE_POINTS 3
#define MAX_PROCS (SUPERVISOR_MAX_SERVICES + 1) /* the variant's processes and nats-server */
#define STOCK_MARGIN 100

#define VALGRIND "/usr/bin/valgrind" /* where the supervisor looks a wrapper's tool up */
#define DHAT_CALL_TIMEOUT_MS 60000
#define DHAT_SESSION_MAX_S 900
#define DHAT_EXIT_WAIT_MS 120000
#define DHAT_EVENT_WAIT_MS 30000
#define DHAT_SETTLE_MS 1000 /* after the last event: notifications records it under valgrind */

/* One reading of /proc/<pid>/status; -1 each when it could not be read. */
typedef struct sample {
    double t_s; /* since the load started */
    long rss_kib, anon_kib;
} sample_t;

typedef struct rss_process {
    char name[32];
    pid_t pid;
    bool broker;                           /* nats-server: shown, not counted a service   */
    sample_t *samples;
    int n, cap;
    long hwm_kib;                          /* VmHWM at the last reading; -1 unknown      */
    int lost;                              /* readings that failed (the process gone?)    */
    long first_kib, last_kib, max_kib;     /* judged from the samples                     */
    double slope_kib_min, threshold_kib_min; /* over the second half of the load        */
    double tail_slope_kib_min;             /* over its last quarter; NAN when too few     */
    int slope_points;
    bool judged;                           /* enough samples for a slope                  */
    bool grows;                            /* the slope over its limit                    */
    bool levelling;                        /* grows, but the last quarter's slope is not  */
} rss_process_t;

typedef struct rss_part {
    bool done;
    double warmup_s, load_s;  /* as asked, and as it took */
    int warmup_calls, calls;
    saga_check_t check;
    int n_procs;
    rss_process_t procs[MAX_PROCS];
} rss_part_t;

/* A DHAT file's totals over its allocation points. */
typedef struct dhat_totals {
    long long bytes, blocks;       /* tb, tbk: allocated over the process's life */
    long long peak_bytes;          /* gb: at the heap's peak                     */
    long long exit_bytes, exit_blocks; /* eb, ebk: still allocated at the end    */
} dhat_totals_t;

typedef struct dhat_process {
    char name[32];
    bool read[2];
    dhat_totals_t t[2]; /* the session with sagas[0], then sagas[1] */
} dhat_process_t;

typedef struct dhat_part {
    bool done;
    double seconds[2];   /* each session, start to stop */
    bool checked;        /* stock and money (not for the chain) */
    bool ok;
    char failed[512];
    int n_procs;
    dhat_process_t procs[SUPERVISOR_MAX_SERVICES];
} dhat_part_t;

struct saga_memory {
    saga_memory_config_t cfg;
    bool dhat_skipped;
    char dhat_why[200];
    char dhat_dir[512];
    rss_part_t rss[SAGA_VARIANT_COUNT];
    dhat_part_t dhat[SAGA_VARIANT_COUNT];
    int checks, checks_failed;
};

int saga_memory_new(saga_memory_t **out, const saga_memory_config_t *cfg)
{
    assert(cfg->seconds >= 1 && cfg->clients >= 1);
    assert(!cfg->dhat || (cfg->sagas[0] >= 1 && cfg->sagas[0] < cfg->sagas[1]));
    saga_memory_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        fprintf(stderr, PROGRAM ": out of memory\n");
        return -1;
    }
    m->cfg = *cfg;
    *out = m;
    return 0;
}

void saga_memory_free(saga_memory_t *m)
{
    if (m == NULL)
        return;
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++)
        for (int i = 0; i < m->rss[v].n_procs; i++)
            free(m->rss[v].procs[i].samples);
    free(m);
}

/* Counts a check made in either part (the caller has said what broke). */
static void count_check(saga_memory_t *m, bool ok)
{
    m->checks++;
    m->checks_failed += ok ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* Part 1: RSS under load                                              */
/* ------------------------------------------------------------------ */

/*
 * VmRSS, RssAnon and VmHWM of `pid`, KiB, from /proc/<pid>/status. 0, or -1
 * when they cannot be read (the process is gone, or ended and not reaped
 * yet: a zombie has no Vm lines); the outputs are then untouched.
 */
static int read_status(pid_t pid, long *rss, long *anon, long *hwm)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long r = -1, a = -1, h = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            r = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "RssAnon:", 8) == 0)
            a = strtol(line + 8, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            h = strtol(line + 6, NULL, 10);
    }
    fclose(f);
    if (r < 0)
        return -1;
    *rss = r;
    *anon = a;
    *hwm = h;
    return 0;
}

/* The session's processes and nats-server, each with room for `cap` samples. 0, or -1 (out of memory). */
static int list_processes(rss_part_t *r, saga_session_t *s, int cap)
{
    supervisor_t *sv = saga_session_supervisor(s);
    r->n_procs = 0;
    for (int i = 0; i <= sv->n_svc && r->n_procs < MAX_PROCS; i++) {
        rss_process_t *p = &r->procs[r->n_procs];
        memset(p, 0, sizeof *p);
        if (i < sv->n_svc) {
            snprintf(p->name, sizeof p->name, "%s", sv->svc[i].name);
            p->pid = sv->svc[i].proc.pid;
        } else {
            snprintf(p->name, sizeof p->name, "nats-server");
            p->pid = sv->nats.pid;
            p->broker = true;
        }
        p->hwm_kib = -1;
        p->cap = cap;
        p->samples = calloc((size_t)cap, sizeof *p->samples);
        if (p->samples == NULL) {
            fprintf(stderr, PROGRAM ": out of memory for the samples\n");
            return -1;
        }
        r->n_procs++;
    }
    return 0;
}

/* One reading of every process, at `t_s` seconds into the load; quietly none past the room. */
static void take_sample(rss_part_t *r, double t_s)
{
    for (int i = 0; i < r->n_procs; i++) {
        rss_process_t *p = &r->procs[i];
        if (p->n == p->cap)
            continue;
        sample_t *x = &p->samples[p->n++];
        x->t_s = t_s;
        x->rss_kib = x->anon_kib = -1;
        long hwm = -1;
        if (p->pid <= 0 || read_status(p->pid, &x->rss_kib, &x->anon_kib, &hwm) != 0)
            p->lost++;
        else
            p->hwm_kib = hwm;
    }
}

/*
 * The least-squares slope of RSS against time (KiB/min) over the readings
 * at or after `from_s`, and how many there were; NAN when fewer than
 * MIN_SLOPE_POINTS or all at one time.
 */
static double slope_from(const rss_process_t *p, double from_s, int *points)
{
    double sx = 0, sy = 0;
    int n = 0;
    for (int k = 0; k < p->n; k++)
        if (p->samples[k].rss_kib >= 0 && p->samples[k].t_s >= from_s) {
            sx += p->samples[k].t_s;
            sy += (double)p->samples[k].rss_kib;
            n++;
        }
    *points = n;
    if (n < MIN_SLOPE_POINTS)
        return NAN;
    double mx = sx / n, my = sy / n, sxy = 0, sxx = 0;
    for (int k = 0; k < p->n; k++)
        if (p->samples[k].rss_kib >= 0 && p->samples[k].t_s >= from_s) {
            double dx = p->samples[k].t_s - mx;
            sxy += dx * ((double)p->samples[k].rss_kib - my);
            sxx += dx * dx;
        }
    return sxx > 0 ? 60.0 * sxy / sxx : NAN;
}

/*
 * First, last and largest readings; the slope over the second half of the
 * load against its limit (the opening comment says why those), and over
 * the last quarter, which tells a growth that is levelling off (a cache
 * reaching its cap late in the run) from one still going.
 */
static void judge_process(rss_process_t *p)
{
    p->first_kib = p->last_kib = p->max_kib = -1;
    double t_end = 0;
    for (int k = 0; k < p->n; k++) {
        const sample_t *x = &p->samples[k];
        if (x->rss_kib < 0)
            continue;
        if (p->first_kib < 0)
            p->first_kib = x->rss_kib;
        p->last_kib = x->rss_kib;
        p->max_kib = x->rss_kib > p->max_kib ? x->rss_kib : p->max_kib;
        t_end = x->t_s;
    }
    p->threshold_kib_min = fmax(SLOPE_FLOOR_KIB_MIN, SLOPE_SHARE_MIN * (double)p->last_kib);
    int tail_points = 0;
    p->slope_kib_min = slope_from(p, t_end / 2, &p->slope_points);
    p->tail_slope_kib_min = slope_from(p, t_end * 3 / 4, &tail_points);
    p->judged = !isnan(p->slope_kib_min);
    p->grows = p->judged && p->slope_kib_min > p->threshold_kib_min;
    p->levelling = p->grows && !isnan(p->tail_slope_kib_min) && p->tail_slope_kib_min <= p->threshold_kib_min;
}

/* The load, on a thread of its own while the caller samples. */
typedef struct load_job {
    saga_session_t *s;
    int clients, max_calls;
    double seconds;
    int made;
    double elapsed_s;
    int rc;
    atomic_bool finished;
} load_job_t;

static void *load_main(void *arg)
{
    load_job_t *job = arg;
    job->rc = saga_session_timed_load(job->s, job->clients, job->max_calls, job->seconds, &job->made,
                                      &job->elapsed_s);
    atomic_store(&job->finished, true);
    return NULL;
}

/* The measured load with the samples taken meanwhile (steps 3 of the essay). 0, or -1 with a message. */
static int sampled_load(rss_part_t *r, saga_session_t *s, const saga_memory_config_t *cfg)
{
    load_job_t job = {.s = s, .clients = cfg->clients, .max_calls = MAX_RATE * cfg->seconds,
                      .seconds = cfg->seconds, .rc = -1};
    atomic_init(&job.finished, false);
    int64_t t0 = bench_now_ns();
    take_sample(r, 0.0);
    pthread_t thread;
    if (pthread_create(&thread, NULL, load_main, &job) != 0) {
        fprintf(stderr, PROGRAM ": cannot start the load's thread\n");
        return -1;
    }
    /* Ends when the load does: by its deadline, a failed call or a stop, each bounded. */
    int64_t next = t0 + 1000000000LL;
    while (!atomic_load(&job.finished)) {
        bench_sleep_ms(20);
        int64_t now = bench_now_ns();
        if (now < next)
            continue;
        take_sample(r, (double)(now - t0) / 1e9);
        while (next <= now)
            next += 1000000000LL;
    }
    pthread_join(thread, NULL);
    if (job.rc != 0)
        return -1;
    take_sample(r, (double)(bench_now_ns() - t0) / 1e9);
    r->calls = job.made;
    r->load_s = job.elapsed_s;
    return 0;
}

/* Steps 1-5 of part 1 for one variant. 0, or -1 with a message. */
static int measure_rss(saga_memory_t *m, saga_variant_t v)
{
    const saga_memory_config_t *cfg = &m->cfg;
    rss_part_t *r = &m->rss[v];
    int warmup_s = cfg->seconds / 6;
    warmup_s = warmup_s < WARMUP_MIN_S ? WARMUP_MIN_S : warmup_s > WARMUP_MAX_S ? WARMUP_MAX_S : warmup_s;
    r->warmup_s = warmup_s;
    long long planned = (long long)MAX_RATE * (warmup_s + cfg->seconds) + STOCK_MARGIN;
    int64_t t0 = bench_now_ns();
    saga_session_t *s = NULL;
    double warmup_took = 0;
    int rc = saga_session_start_variant(&s, v, NULL);
    if (rc == 0)
        rc = saga_session_seed(s, planned * SAGA_QTY, planned * SAGA_AMOUNT);
    if (rc == 0)
        rc = saga_session_timed_load(s, cfg->clients, MAX_RATE * warmup_s, warmup_s, &r->warmup_calls,
                                     &warmup_took);
    if (rc == 0)
        rc = list_processes(r, s, cfg->seconds + SAMPLE_SLACK);
    if (rc == 0)
        rc = sampled_load(r, s, cfg);
    if (rc == 0)
        rc = saga_session_check(s, &r->check);
    if (rc == 0 && !r->check.ok) {
        fprintf(stderr, PROGRAM ": INVARIANT BROKEN in the memory measurement, %s, after the load: %s\n",
                saga_variant_names[v], r->check.failed);
        saga_session_print_logs(s, 20);
    }
    if (rc != 0 && s != NULL && bench_stop_reason() == NULL)
        saga_session_print_logs(s, 20);
    saga_session_stop(s);
    if (rc != 0) {
        fprintf(stderr, PROGRAM ": memory (RSS) of %s %s\n", saga_variant_names[v],
                bench_stop_reason() != NULL ? "stopped early" : "failed");
        return -1;
    }
    if (r->check.checked)
        count_check(m, r->check.ok);
    int grows = 0;
    for (int i = 0; i < r->n_procs; i++) {
        judge_process(&r->procs[i]);
        grows += r->procs[i].grows ? 1 : 0;
    }
    r->done = true;
    fprintf(stderr, "  memory %-7s  RSS: %d sagas in %.1f s at %d clients (%.0f/s); %d process%s growing; "
                    "invariants %s  (%.1f s)\n",
            saga_variant_names[v], r->calls, r->load_s, cfg->clients, r->load_s > 0 ? r->calls / r->load_s : 0.0,
            grows, grows == 1 ? "" : "es",
            !saga_variant_has_invariants(v) ? "none" : r->check.ok ? "held" : "BROKEN",
            (double)(bench_now_ns() - t0) / 1e9);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Part 2: allocations per saga under DHAT                             */
/* ------------------------------------------------------------------ */

/* Why DHAT cannot run here, into why[cap]; false when it can. */
static bool dhat_unavailable(char *why, size_t cap)
{
    if (access(VALGRIND, X_OK) != 0) {
        snprintf(why, cap, "no %s (the supervisor runs a wrapper's tool from /usr/bin): install valgrind", VALGRIND);
        return true;
    }
    return false;
}

/* A folder of our own for the DHAT files, under $TMPDIR or /tmp. 0, or -1 with a message. */
static int make_dhat_dir(char *dir, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = "/tmp";
    if (snprintf(dir, cap, "%s/natomic-dhat-XXXXXX", tmp) >= (int)cap || strchr(dir, ' ') != NULL) {
        /* The supervisor splits the wrapper on spaces: the path cannot have any. */
        fprintf(stderr, PROGRAM ": TMPDIR '%s' is too long or holds a space: no folder for DHAT's files\n", tmp);
        return -1;
    }
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, PROGRAM ": cannot make %s: %s\n", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * Removes the DHAT folder and what is left in it (the files of a session
 * that failed while starting, whose pids were never known). Says so when it
 * cannot.
 */
static void remove_dhat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    /* Bounded by the folder's entries: nothing else writes there once the sessions are stopped. */
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    if (rmdir(dir) != 0)
        fprintf(stderr, PROGRAM ": cannot remove %s: %s\n", dir, strerror(errno));
}

/*
 * The totals of a DHAT file: sums of tb, tbk, gb, eb, ebk over its "pps"
 * (the file format of valgrind >= 3.15, dhatFileVersion 2). 0, or -1 with a
 * message.
 */
static int read_dhat(dhat_totals_t *out, const char *path)
{
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    if (doc == NULL) {
        fprintf(stderr, PROGRAM ": cannot read DHAT's %s: %s (line %d)\n", path, err.text, err.line);
        return -1;
    }
    json_t *pps = json_object_get(doc, "pps");
    json_t *version = json_object_get(doc, "dhatFileVersion");
    if (!json_is_array(pps) || !json_is_integer(version) || json_integer_value(version) != 2) {
        fprintf(stderr, PROGRAM ": %s is not a DHAT heap profile of a known version (dhatFileVersion 2)\n", path);
        json_decref(doc);
        return -1;
    }
    dhat_totals_t t;
    memset(&t, 0, sizeof t);
    size_t i;
    json_t *pp;
    json_array_foreach(pps, i, pp)
    {
        t.bytes += json_integer_value(json_object_get(pp, "tb"));
        t.blocks += json_integer_value(json_object_get(pp, "tbk"));
        t.peak_bytes += json_integer_value(json_object_get(pp, "gb"));
        t.exit_bytes += json_integer_value(json_object_get(pp, "eb"));
        t.exit_blocks += json_integer_value(json_object_get(pp, "ebk"));
    }
    json_decref(doc);
    *out = t;
    return 0;
}

/* Whether `pid` has ended: gone, or a zombie not reaped yet (/proc/<pid>/stat's state). */
static bool process_ended(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    return paren == NULL || paren[1] == '\0' || paren[2] == 'Z' || paren[2] == 'X';
}

/*
 * SIGTERM to every service, then waits until each has ended -- under
 * DHAT, until it has written its file. They stay unreaped for the
 * supervisor's stop. 0, or -1 with a message when one did not end in
 * DHAT_EXIT_WAIT_MS (or the run was stopped).
 */
static int end_services(supervisor_t *sv)
{
    for (int i = 0; i < sv->n_svc; i++)
        if (sv->svc[i].proc.pid > 0)
            lab_process_signal(&sv->svc[i].proc, SIGTERM);
    int64_t until = bench_now_ns() + (int64_t)DHAT_EXIT_WAIT_MS * 1000000;
    for (;;) {
        int running = 0;
        const char *which = "";
        for (int i = 0; i < sv->n_svc; i++)
            if (sv->svc[i].proc.pid > 0 && !process_ended(sv->svc[i].proc.pid)) {
                running++;
                which = sv->svc[i].name;
            }
        if (running == 0)
            return 0;
        if (bench_should_stop())
            return -1;
        if (bench_now_ns() >= until) {
            fprintf(stderr, PROGRAM ": %s (and %d more) did not end within %d ms of SIGTERM under DHAT\n", which,
                    running - 1, DHAT_EXIT_WAIT_MS);
            return -1;
        }
        bench_sleep_ms(50);
    }
}

/* Stock and money after `n` orders, as a saga_session_check would see them; into d (ok, failed). 0 or -1. */
static int check_stock_money(dhat_part_t *d, saga_session_t *s, long long n, long long stock, long long money)
{
    long long available = 0, reserved = 0, balance = 0, charged = 0;
    if (saga_session_stock(s, saga_session_client(s), &available, &reserved, true) != 0 ||
        saga_session_balance(s, saga_session_client(s), &balance, &charged, true) != 0)
        return -1;
    bool stock_ok = available + reserved == stock && reserved == n * SAGA_QTY;
    bool money_ok = balance + charged == money && charged == n * SAGA_AMOUNT;
    size_t used = strlen(d->failed);
    if (!stock_ok)
        used += (size_t)snprintf(d->failed + used, sizeof d->failed - used,
                                 "%sstock after %lld orders: available %lld + reserved %lld, restocked %lld",
                                 used > 0 ? "; " : "", n, available, reserved, stock);
    if (!money_ok && used < sizeof d->failed)
        snprintf(d->failed + used, sizeof d->failed - used,
                 "%smoney after %lld orders: balance %lld + charged %lld, deposited %lld", used > 0 ? "; " : "", n,
                 balance, charged, money);
    d->ok = d->ok && stock_ok && money_ok;
    return 0;
}

/*
 * Starts the variant with every service under DHAT, its files named
 * <pattern>.<pid>: NATOMIC_SERVICE_WRAPPER set for the time of the start
 * (the supervisor reads it when it spawns; put back after, as
 * saga_session.c does with NATOMIC_SERVICES_DIR). 0, or -1 with a message.
 */
static int start_under_dhat(saga_session_t **s, saga_variant_t v, const char *pattern)
{
    char wrapper[512];
    if (snprintf(wrapper, sizeof wrapper, VALGRIND " --tool=dhat --dhat-out-file=%s.%%p", pattern) >=
        (int)sizeof wrapper) {
        fprintf(stderr, PROGRAM ": the DHAT folder's path is too long\n");
        return -1;
    }
    char *saved = NULL;
    const char *old = getenv("NATOMIC_SERVICE_WRAPPER");
    if (old != NULL && (saved = strdup(old)) == NULL) {
        fprintf(stderr, PROGRAM ": out of memory\n");
        return -1;
    }
    setenv("NATOMIC_SERVICE_WRAPPER", wrapper, 1);
    int rc = saga_session_start_variant(s, v, NULL);
    if (saved != NULL)
        setenv("NATOMIC_SERVICE_WRAPPER", saved, 1);
    else
        unsetenv("NATOMIC_SERVICE_WRAPPER");
    free(saved);
    return rc;
}

/* One session of part 2: n sequential sagas under DHAT, its totals into d->procs[..].t[k]. 0, or -1 with a message. */
static int dhat_session(saga_memory_t *m, saga_variant_t v, int k)
{
    dhat_part_t *d = &m->dhat[v];
    int n = m->cfg.sagas[k];
    char pattern[600];
    snprintf(pattern, sizeof pattern, "%s/%s-%d", m->dhat_dir, saga_variant_names[v], n);
    int64_t t0 = bench_now_ns();
    int64_t until = t0 + (int64_t)DHAT_SESSION_MAX_S * 1000000000LL;
    long long stock = (long long)(n + STOCK_MARGIN) * SAGA_QTY, money = (long long)(n + STOCK_MARGIN) * SAGA_AMOUNT;
    saga_session_t *s = NULL;
    int rc = start_under_dhat(&s, v, pattern);
    /* The services' names, and the pids that name their files, while they run. */
    pid_t pids[SUPERVISOR_MAX_SERVICES] = {0};
    supervisor_t *sv = rc == 0 ? saga_session_supervisor(s) : NULL;
    if (rc == 0) {
        assert(sv->n_svc <= SUPERVISOR_MAX_SERVICES);
        d->n_procs = sv->n_svc;
        for (int i = 0; i < sv->n_svc; i++) {
            snprintf(d->procs[i].name, sizeof d->procs[i].name, "%s", sv->svc[i].name);
            pids[i] = sv->svc[i].proc.pid;
        }
    }
    if (rc == 0)
        rc = saga_session_seed(s, stock, money);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (bench_should_stop() || bench_now_ns() >= until) {
            if (!bench_should_stop())
                fprintf(stderr, PROGRAM ": the DHAT session of %s took over %d s\n", saga_variant_names[v],
                        DHAT_SESSION_MAX_S);
            rc = -1;
            break;
        }
        natomic_call_info_t info;
        natomic_status_t st = saga_session_order(s, saga_session_client(s), DHAT_CALL_TIMEOUT_MS, NULL, &info);
        if (st != NATOMIC_OK) {
            fprintf(stderr, PROGRAM ": create_order %d of %d under DHAT failed: %s (%s%s%s)\n", i + 1, n,
                    natomic_strerror(st), info.type, info.type[0] != '\0' ? ": " : "", info.message);
            rc = -1;
        }
    }
    if (rc == 0 && saga_variant_has_invariants(v)) {
        int64_t wait_until = bench_now_ns() + (int64_t)DHAT_EVENT_WAIT_MS * 1000000;
        while (saga_session_events_heard(s) < n && bench_now_ns() < wait_until && !bench_should_stop())
            bench_sleep_ms(20);
        d->checked = true;
        rc = check_stock_money(d, s, n, stock, money);
    }
    if (rc == 0)
        bench_sleep_ms(DHAT_SETTLE_MS);
    if (rc == 0)
        rc = end_services(sv);
    if (rc != 0 && s != NULL && bench_stop_reason() == NULL)
        saga_session_print_logs(s, 20);
    saga_session_stop(s);
    for (int i = 0; rc == 0 && i < d->n_procs; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s.%ld", pattern, (long)pids[i]);
        if (read_dhat(&d->procs[i].t[k], path) != 0)
            rc = -1;
        else
            d->procs[i].read[k] = true;
    }
    for (int i = 0; i < SUPERVISOR_MAX_SERVICES; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s.%ld", pattern, (long)pids[i]);
        if (pids[i] > 0)
            unlink(path); /* read or not: a failed session's files go too */
    }
    d->seconds[k] = (double)(bench_now_ns() - t0) / 1e9;
    if (rc != 0) {
        fprintf(stderr, PROGRAM ": memory (DHAT, %d sagas) of %s %s\n", n, saga_variant_names[v],
                bench_stop_reason() != NULL ? "stopped early" : "failed");
        return -1;
    }
    return 0;
}

/* Both sessions of part 2 for one variant. 0, or -1 with a message. */
static int measure_dhat(saga_memory_t *m, saga_variant_t v)
{
    dhat_part_t *d = &m->dhat[v];
    d->ok = true;
    for (int k = 0; k < 2; k++) {
        if (dhat_session(m, v, k) != 0)
            return -1;
        fprintf(stderr, "  memory %-7s  DHAT: %d sequential sagas, every service under valgrind  (%.1f s)\n",
                saga_variant_names[v], m->cfg.sagas[k], d->seconds[k]);
    }
    if (d->checked) {
        count_check(m, d->ok);
        if (!d->ok)
            fprintf(stderr, PROGRAM ": INVARIANT BROKEN in the memory measurement, %s, under DHAT: %s\n",
                    saga_variant_names[v], d->failed);
    }
    d->done = true;
    return 0;
}

int saga_memory_run(saga_memory_t *m)
{
    const saga_memory_config_t *cfg = &m->cfg;
    if (cfg->dhat && dhat_unavailable(m->dhat_why, sizeof m->dhat_why)) {
        m->dhat_skipped = true;
        fprintf(stderr, PROGRAM ": memory: allocations per saga skipped: %s\n", m->dhat_why);
    }
    bool dhat = cfg->dhat && !m->dhat_skipped;
    if (dhat && make_dhat_dir(m->dhat_dir, sizeof m->dhat_dir) != 0)
        return -1;
    int rc = 0;
    for (int v = 0; rc == 0 && v < SAGA_VARIANT_COUNT; v++) {
        if (!cfg->variant_on[v])
            continue;
        if (bench_should_stop())
            rc = -1;
        if (rc == 0 && cfg->rss)
            rc = measure_rss(m, (saga_variant_t)v);
        if (rc == 0 && dhat)
            rc = measure_dhat(m, (saga_variant_t)v);
    }
    if (dhat)
        remove_dhat_dir(m->dhat_dir);
    return rc;
}

int saga_memory_checks(const saga_memory_t *m)
{
    return m->checks;
}

int saga_memory_checks_failed(const saga_memory_t *m)
{
    return m->checks_failed;
}

/* ------------------------------------------------------------------ */
/* Tables                                                              */
/* ------------------------------------------------------------------ */

/* (second - first) / (n2 - n1). */
static double per_saga(const saga_memory_config_t *cfg, long long first, long long second)
{
    return (double)(second - first) / (double)(cfg->sagas[1] - cfg->sagas[0]);
}

/* The verdict on one process, as the table and the JSON say it. */
static const char *verdict(const rss_process_t *p, bool loud)
{
    if (!p->judged)
        return "too few readings for a slope";
    if (!p->grows)
        return "no growth";
    if (p->levelling)
        return loud ? "GROWS, levelling off" : "grows, levelling off";
    return loud ? "GROWS" : "grows";
}

static void print_rss(const saga_memory_t *m)
{
    const saga_memory_config_t *cfg = &m->cfg;
    int warmup_s = 0;
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++)
        if (m->rss[v].done)
            warmup_s = (int)m->rss[v].warmup_s;
    printf("\nnatomic-bench-saga: memory under load -- %d concurrent clients for %d s after a %d s warm-up,\n"
           "one session per variant\n",
           cfg->clients, cfg->seconds, warmup_s);
    printf("  VmRSS of every process from /proc/<pid>/status once a second during the load, KiB:\n"
           "  after wu = the first reading, end = the last, max = the largest reading, VmHWM = the kernel's\n"
           "  peak (warm-up included), growth = end - after wu; slope = least squares over the second half\n"
           "  of the load, last 1/4 = over its last quarter (KiB/min); \"no growth\" when the slope is at\n"
           "  most the limit, max(%.0f KiB, %.0f%% of the RSS) per minute; \"levelling off\" when it is over\n"
           "  but the last quarter's is not (a cache reaching its cap? a longer --memory-seconds tells)\n\n",
           SLOPE_FLOOR_KIB_MIN, 100.0 * SLOPE_SHARE_MIN);
    printf("  %-8s %-14s %9s %9s %9s %9s %8s %10s %10s %6s  %s\n", "variant", "process", "after wu", "end", "max",
           "VmHWM", "growth", "slope/min", "last 1/4", "limit", "verdict");
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
        const rss_part_t *r = &m->rss[v];
        if (!r->done)
            continue;
        char growing[160] = "";
        for (int i = 0; i < r->n_procs; i++) {
            const rss_process_t *p = &r->procs[i];
            printf("  %-8s %-14s %9ld %9ld %9ld %9ld %+8ld", saga_variant_names[v], p->name, p->first_kib,
                   p->last_kib, p->max_kib, p->hwm_kib, p->last_kib - p->first_kib);
            if (p->judged)
                printf(" %+10.1f", p->slope_kib_min);
            else
                printf(" %10s", "-");
            if (!isnan(p->tail_slope_kib_min))
                printf(" %+10.1f", p->tail_slope_kib_min);
            else
                printf(" %10s", "-");
            printf(" %6.0f  %s", p->threshold_kib_min, verdict(p, true));
            if (p->lost > 0)
                printf(" (%d reading%s failed)", p->lost, p->lost == 1 ? "" : "s");
            printf("\n");
            if (p->grows && !p->broker) {
                size_t used = strlen(growing);
                snprintf(growing + used, sizeof growing - used, "%s%s", used > 0 ? ", " : "", p->name);
            }
        }
        printf("  %-8s services: %s%s\n", saga_variant_names[v], growing[0] != '\0' ? "growing: " : "no growth",
               growing);
        printf("  %-8s load: %d sagas in %.1f s (%.0f/s), %d in the warm-up; invariants %s\n", saga_variant_names[v],
               r->calls, r->load_s, r->load_s > 0 ? r->calls / r->load_s : 0.0, r->warmup_calls,
               !r->check.checked ? "none (the chain keeps nothing)"
               : r->check.ok     ? "held"
                                 : "BROKEN");
        if (r->check.checked && !r->check.ok)
            printf("           %s\n", r->check.failed);
    }
    printf("  (nats-server, the broker, is Go: its collector's sawtooth of a few hundred KiB makes its slope\n"
           "  noisier; it is shown for the record and not counted among the services)\n");
}

static void print_dhat(const saga_memory_t *m)
{
    const saga_memory_config_t *cfg = &m->cfg;
    printf("\nnatomic-bench-saga: heap allocated per saga -- every service under valgrind --tool=dhat, two sessions\n"
           "of %d and %d sequential sagas; per saga = (second session - first) / %d\n",
           cfg->sagas[0], cfg->sagas[1], cfg->sagas[1] - cfg->sagas[0]);
    if (m->dhat_skipped) {
        printf("  skipped: %s\n", m->dhat_why);
        return;
    }
    printf("  bytes, blocks: allocated (malloc, calloc, realloc, new) in total; kept: still allocated when the\n"
           "  process ended (a leak per saga shows there); peak: the heap at its largest, second session\n\n");
    printf("  %-8s %-14s %12s %12s %12s %14s %14s %12s\n", "variant", "process", "bytes/saga", "blocks/saga",
           "kept/saga", "bytes (1st)", "bytes (2nd)", "peak KiB");
    for (int v = 0; v < SAGA_VARIANT_COUNT; v++) {
        const dhat_part_t *d = &m->dhat[v];
        if (!d->done)
            continue;
        dhat_totals_t sum[2];
        memset(sum, 0, sizeof sum);
        for (int i = 0; i < d->n_procs; i++) {
            const dhat_process_t *p = &d->procs[i];
            for (int k = 0; k < 2; k++) {
                sum[k].bytes += p->t[k].bytes;
                sum[k].blocks += p->t[k].blocks;
                sum[k].exit_bytes += p->t[k].exit_bytes;
                sum[k].peak_bytes += p->t[k].peak_bytes;
            }
            printf("  %-8s %-14s %12.0f %12.1f %12.1f %14lld %14lld %12.0f\n", saga_variant_names[v], p->name,
                   per_saga(cfg, p->t[0].bytes, p->t[1].bytes), per_saga(cfg, p->t[0].blocks, p->t[1].blocks),
                   per_saga(cfg, p->t[0].exit_bytes, p->t[1].exit_bytes), p->t[0].bytes, p->t[1].bytes,
                   (double)p->t[1].peak_bytes / 1024.0);
        }
        printf("  %-8s %-14s %12.0f %12.1f %12.1f %14lld %14lld %12.0f\n", saga_variant_names[v], "(all)",
               per_saga(cfg, sum[0].bytes, sum[1].bytes), per_saga(cfg, sum[0].blocks, sum[1].blocks),
               per_saga(cfg, sum[0].exit_bytes, sum[1].exit_bytes), sum[0].bytes, sum[1].bytes,
               (double)sum[1].peak_bytes / 1024.0);
        if (d->checked && !d->ok)
            printf("  %-8s INVARIANT BROKEN: %s\n", saga_variant_names[v], d->failed);
    }
}

void saga_memory_print(const saga_memory_t *m)
{
    if (m->cfg.rss)
        print_rss(m);
    if (m->cfg.dhat)
        print_dhat(m);
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */
/* ------------------------------------------------------------------ */

static json_t *rss_process_json(const rss_process_t *p)
{
    json_t *t = json_array(), *rss = json_array(), *anon = json_array();
    for (int k = 0; t != NULL && rss != NULL && anon != NULL && k < p->n; k++) {
        json_array_append_new(t, json_real(p->samples[k].t_s));
        json_array_append_new(rss, p->samples[k].rss_kib >= 0 ? json_integer(p->samples[k].rss_kib) : json_null());
        json_array_append_new(anon,
                              p->samples[k].anon_kib >= 0 ? json_integer(p->samples[k].anon_kib) : json_null());
    }
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:f, s:i, s:s, s:b, s:b, s:i, s:{s:o, s:o, s:o}}",
                     "process",
                     p->name, "rss_after_warmup_kib", (json_int_t)p->first_kib, "rss_end_kib",
                     (json_int_t)p->last_kib, "rss_max_kib", (json_int_t)p->max_kib, "vm_hwm_kib",
                     (json_int_t)p->hwm_kib, "growth_kib", (json_int_t)(p->last_kib - p->first_kib),
                     "slope_second_half_kib_per_min", p->judged ? json_real(p->slope_kib_min) : json_null(),
                     "slope_last_quarter_kib_per_min",
                     !isnan(p->tail_slope_kib_min) ? json_real(p->tail_slope_kib_min) : json_null(),
                     "limit_kib_per_min", p->threshold_kib_min, "slope_points", p->slope_points, "verdict",
                     verdict(p, false), "grows", p->grows, "broker", p->broker, "readings_failed", p->lost,
                     "samples", "t_s", t, "rss_kib", rss, "anon_kib", anon);
}

static json_t *rss_json(const saga_memory_t *m, const rss_part_t *r)
{
    json_t *procs = json_array(), *growing = json_array();
    for (int i = 0; procs != NULL && growing != NULL && i < r->n_procs; i++) {
        json_array_append_new(procs, rss_process_json(&r->procs[i]));
        if (r->procs[i].grows && !r->procs[i].broker)
            json_array_append_new(growing, json_string(r->procs[i].name));
    }
    json_t *j = json_pack("{s:i, s:f, s:i, s:f, s:f, s:b, s:b, s:I, s:o, s:o}", "clients", m->cfg.clients, "warmup_s",
                          r->warmup_s, "warmup_calls", r->warmup_calls, "load_s", r->load_s, "sagas_per_s",
                          r->load_s > 0 ? r->calls / r->load_s : 0.0, "invariants_checked", r->check.checked,
                          "invariants_held", r->check.ok, "calls", (json_int_t)r->calls, "processes", procs,
                          "services_growing", growing);
    if (j != NULL && !r->check.ok)
        json_object_set_new(j, "failed", json_string(r->check.failed));
    return j;
}

static json_t *totals_json(const dhat_totals_t *t)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "bytes", (json_int_t)t->bytes, "blocks", (json_int_t)t->blocks,
                     "peak_bytes", (json_int_t)t->peak_bytes, "exit_bytes", (json_int_t)t->exit_bytes, "exit_blocks",
                     (json_int_t)t->exit_blocks);
}

static json_t *dhat_process_json(const saga_memory_config_t *cfg, const char *name, const dhat_totals_t t[2])
{
    return json_pack("{s:s, s:f, s:f, s:f, s:f, s:[o, o]}", "process", name, "bytes_per_saga",
                     per_saga(cfg, t[0].bytes, t[1].bytes), "blocks_per_saga", per_saga(cfg, t[0].blocks, t[1].blocks),
                     "exit_bytes_per_saga", per_saga(cfg, t[0].exit_bytes, t[1].exit_bytes), "exit_blocks_per_saga",
                     per_saga(cfg, t[0].exit_blocks, t[1].exit_blocks), "sessions", totals_json(&t[0]),
                     totals_json(&t[1]));
}

static json_t *dhat_json(const saga_memory_t *m, const dhat_part_t *d)
{
    json_t *procs = json_array();
    dhat_totals_t sum[2];
    memset(sum, 0, sizeof sum);
    for (int i = 0; procs != NULL && i < d->n_procs; i++) {
        const dhat_process_t *p = &d->procs[i];
        for (int k = 0; k < 2; k++) {
            sum[k].bytes += p->t[k].bytes;
            sum[k].blocks += p->t[k].blocks;
            sum[k].peak_bytes += p->t[k].peak_bytes;
            sum[k].exit_bytes += p->t[k].exit_bytes;
            sum[k].exit_blocks += p->t[k].exit_blocks;
        }
        json_array_append_new(procs, dhat_process_json(&m->cfg, p->name, p->t));
    }
    json_t *j = json_pack("{s:[i, i], s:[f, f], s:b, s:b, s:o, s:o}", "sagas", m->cfg.sagas[0], m->cfg.sagas[1],
                          "session_seconds", d->seconds[0], d->seconds[1], "stock_and_money_checked", d->checked,
                          "stock_and_money_held", !d->checked || d->ok, "processes", procs, "all_services",
                          dhat_process_json(&m->cfg, "(all)", sum));
    if (j != NULL && d->checked && !d->ok)
        json_object_set_new(j, "failed", json_string(d->failed));
    return j;
}

json_t *saga_memory_json(const saga_memory_t *m)
{
    const saga_memory_config_t *cfg = &m->cfg;
    json_t *variants = json_object();
    for (int v = 0; variants != NULL && v < SAGA_VARIANT_COUNT; v++) {
        if (!cfg->variant_on[v])
            continue;
        json_t *one = json_object();
        if (one != NULL && m->rss[v].done)
            json_object_set_new(one, "rss", rss_json(m, &m->rss[v]));
        if (one != NULL && m->dhat[v].done)
            json_object_set_new(one, "allocations", dhat_json(m, &m->dhat[v]));
        json_object_set_new(variants, saga_variant_names[v], one);
    }
    json_t *doc = json_pack("{s:{s:b, s:b, s:i, s:i, s:[i, i], s:f, s:f, s:i}, s:o, s:i, s:i, s:b}", "config", "rss",
                            cfg->rss, "allocations", cfg->dhat, "seconds", cfg->seconds, "clients", cfg->clients,
                            "sagas", cfg->sagas[0], cfg->sagas[1], "slope_floor_kib_per_min", SLOPE_FLOOR_KIB_MIN,
                            "slope_share_per_min", SLOPE_SHARE_MIN, "max_rate", MAX_RATE, "variants", variants,
                            "invariant_checks", m->checks, "invariant_checks_failed", m->checks_failed,
                            "invariants_held", m->checks_failed == 0);
    if (doc != NULL && cfg->dhat && m->dhat_skipped)
        json_object_set_new(doc, "allocations_skipped", json_string(m->dhat_why));
    return doc;
}
