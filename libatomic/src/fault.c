/*
 * fault.c -- named fault points over libfiu (DESIGN 3.9): rules, hit
 * counts, and the trace of every hit.
 *
 * A fault point is a name checked on a code path, e.g. "natomic/before_reply".
 * libfiu keeps the table of enabled points; its failnum carries the action
 * (1 error, 2 crash, 3 drop, 4 duplicate, 5 pause, 1000+N delay N ms), so
 * the stock `fiu-ctrl` can fail a live service by name:
 *     fiu-ctrl -c 'enable name=natomic/before_reply,failnum=3' <pid>
 *
 * Rules. $NATOMIC_FAULTS (at start) and natomic_faults_apply() (at run
 * time) enable points with what libfiu alone does not have: a count of
 * fires (@times), an occurrence window (#N: the N-th hit of the point in
 * this process, @times hits from there), a probability drawn from a
 * xorshift generator seeded by $NATOMIC_FAULT_SEED. Those go through
 * fiu_enable_external() with a rule of ours behind one mutex, so "fire 3
 * times" fires exactly 3 times across all workers and one seed replays
 * the same draws for the same sequence of checks. One rule per point: a
 * new one replaces it in our table while libfiu's entry stays, and
 * decide() names the action of the rule in force; `off` removes both.
 *
 * Hit counts. Once counting is on, every check of a point takes the next
 * number of that point (1, 2, ...: its occurrence) and the next number of
 * the process (seq), under one mutex, and the rule sees the occurrence.
 * Counting starts in natomic_faults_setup() when the process may need the
 * numbers (NATOMIC_FAULT_TRACE=1, NATOMIC_FAULT_CONTROL=1, or a non-empty
 * NATOMIC_FAULTS), otherwise with the first rule applied, and never stops
 * (a counter that restarted would renumber the hits). Numbers are per
 * process: a restarted service counts from 1 again, and several services
 * in one process share the counts of a point.
 *
 * Trace. With NATOMIC_FAULT_TRACE=1 every counted check is published as a
 * JSON record on natomic.trace.fault.<service>.<instance>; without it,
 * only a check that fires is. A fired record leaves BEFORE the action is
 * carried out; before a crash the connection is also flushed (at most
 * CRASH_FLUSH_MS), so the record reaches the server although the process
 * dies. Records of one point leave in the order of their occurrence
 * numbers: numbering and publishing happen under the same mutex.
 *
 * Which service a hit belongs to. The registry is process-wide, the
 * connections are the services': natomic_service_start() attaches its
 * service (name, instance, connection) and stop detaches it. A thread that
 * works for a service (its workers, its housekeeping thread, any thread
 * while it runs a call or an event of that service) is bound to it; a hit
 * on a thread bound to none belongs to the process's only service. With
 * several services and an unbound thread, or a bound thread whose service
 * stopped, the hit is counted but not published: an observer of one
 * service may then see gaps in the occurrence numbers. Hits before the
 * first service attached (after natomic_faults_setup(), before the
 * connection is known) are kept, up to MAX_PENDING, and published on the
 * first service's connection when it attaches; a crash before that can
 * only be logged.
 *
 * Locks, in this order only: apply_mu (natomic_faults_apply) -> hits_mu
 * (counts, registry, publishing) -> libfiu's table lock (fiu_fail holds it
 * for reading while it calls decide()) -> rules_mu. natomic_faults_apply()
 * never calls libfiu while holding rules_mu: libfiu takes its table lock
 * for writing there, and a check holding it for reading waits on rules_mu.
 *
 * Cost. With counting off, a check is one relaxed atomic load and one
 * fiu_fail(); a build with -Dfault_points=disabled compiles NATOMIC_FAULT()
 * out entirely. Pause holds the calling thread until the point is disabled
 * (fiu-ctrl disable, `off`) or 60 s passed: every fault heals.
 */
#define FIU_ENABLE 1
#include <fiu-control.h>
#include <fiu.h>

#include "natomic_internal.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAUSE_LIMIT_MS 60000
#define CRASH_FLUSH_MS 1000
#define MAX_RULES 64
#define MAX_POINTS 256    /* distinct point names counted; a power of two */
#define MAX_SINKS 16      /* services attached at once                    */
#define MAX_PENDING 256   /* records kept until the first service attaches */
#define POINT_CAP 128
#define MAX_OCCURRENCE 1000000000000ULL

/* ---- rules --------------------------------------------------------- */

typedef struct fault_rule {
    char point[POINT_CAP];
    int failnum;
    long remaining;       /* fires left; < 0: always. Unused with an occurrence. */
    uint64_t from;        /* #N: the first hit that may fire; 0: any hit        */
    uint64_t span;        /* with #N: how many hits from `from` may fire        */
    double probability;   /* 1: always                                          */
} fault_rule_t;

static pthread_mutex_t apply_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t rules_mu = PTHREAD_MUTEX_INITIALIZER;
static fault_rule_t rules[MAX_RULES];
static int n_rules;
static uint64_t rng_state = 1;

/* ---- counts and trace (hits_mu) ------------------------------------- */

typedef struct point_count {
    char name[POINT_CAP]; /* "" for a free slot */
    uint64_t hits;
} point_count_t;

typedef struct trace_sink {
    const natomic_service_t *svc;
    natsConnection *nc;
    char service[129];
    char instance[65];
    char incarnation[NATOMIC_ID_LEN + 1];
} trace_sink_t;

typedef struct pending_record {
    char point[POINT_CAP];
    uint64_t occurrence, seq;
    int64_t time_ns;
    int failnum;
} pending_record_t;

static atomic_bool counting;
static pthread_mutex_t hits_mu = PTHREAD_MUTEX_INITIALIZER;
static bool tracing;
static point_count_t counts[MAX_POINTS];
static uint64_t hits_total;
static bool counts_full_logged;
static trace_sink_t sinks[MAX_SINKS];
static int n_sinks;
static bool ever_attached;
static pending_record_t pending[MAX_PENDING];
static int n_pending;
static uint64_t pending_lost;

/* The service the calling thread works for, or NULL. */
static _Thread_local const natomic_service_t *thread_service;
/* The occurrence of the check this thread is in (decide() reads it); 0: not counted. */
static _Thread_local uint64_t hit_occurrence;
/* Set while a thread asks libfiu whether a point is still enabled (decide() says yes). */
static _Thread_local bool probing;
/* The action decide() chose for this thread's check; 0 once taken (take_decided). */
static _Thread_local int decided_failnum;
/*
 * libfiu's failinfo of the points our rules enabled. Such a point stays
 * enabled in libfiu while rules replace each other: decide() reads the
 * current rule and says which action (libfiu 1.1 leaks the name of a point
 * enabled again, and a disable-then-enable would let checks slip through).
 */
static char rule_marker;

static double next_uniform(void)
{
    /* xorshift64*: small, fast, and the same sequence for the same seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* libfiu asks us whether a point enabled by a rule fails this time (under its table lock). */
static int decide(const char *name, int *failnum, void **failinfo, unsigned int *flags)
{
    (void)failnum;
    (void)failinfo;
    (void)flags;
    if (probing)
        return 1; /* still enabled in libfiu: not released; counts are not consumed */
    int fail = 0;
    uint64_t occurrence = hit_occurrence;
    pthread_mutex_lock(&rules_mu);
    for (int i = 0; i < n_rules; i++) {
        fault_rule_t *r = &rules[i];
        if (strcmp(r->point, name) != 0)
            continue;
        /* One rule per point: whatever it says is the answer. An uncounted hit
           (occurrence 0) is no hit number, so an occurrence rule lets it pass. */
        if (r->from > 0 ? occurrence < r->from || occurrence - r->from >= r->span : r->remaining == 0)
            break;
        if (r->probability < 1.0 && next_uniform() >= r->probability)
            break;
        if (r->from == 0 && r->remaining > 0)
            r->remaining--;
        decided_failnum = r->failnum;
        fail = 1;
        break;
    }
    pthread_mutex_unlock(&rules_mu);
    return fail;
}

/* Parses "action[:ms]" into a libfiu failnum; -1 if unknown. */
static int parse_action(const char *s)
{
    static const struct {
        const char *name;
        int failnum;
    } actions[] = {{"error", NATOMIC_FAULT_ERROR},         {"crash", NATOMIC_FAULT_CRASH},
                   {"drop", NATOMIC_FAULT_DROP},           {"duplicate", NATOMIC_FAULT_DUPLICATE},
                   {"pause", NATOMIC_FAULT_PAUSE}};
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (strcmp(s, actions[i].name) == 0)
            return actions[i].failnum;
    if (strcmp(s, "off") == 0)
        return 0; /* natomic_faults_apply(): disable the point */
    if (strncmp(s, "delay:", 6) == 0) {
        char *end = NULL;
        long ms = strtol(s + 6, &end, 10);
        if (end != s + 6 && *end == '\0' && ms >= 0 && ms <= 600000)
            return NATOMIC_FAULT_DELAY + (int)ms;
    }
    return -1;
}

/* Reads a whole decimal number of 1..max (digits only); false otherwise. */
static bool parse_count(const char *s, uint64_t max, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > max)
        return false;
    *out = v;
    return true;
}

/* Parses one "point=action[:ms][#occurrence][@times][%prob]" entry. 0 or -1 with err. */
static int parse_entry(const char *entry, fault_rule_t *r, char *err, size_t cap)
{
    char buf[256];
    if (strlen(entry) >= sizeof buf) {
        snprintf(err, cap, "entry too long: '%.40s...'", entry);
        return -1;
    }
    strcpy(buf, entry);
    char *eq = strchr(buf, '=');
    if (eq == NULL || eq == buf) {
        snprintf(err, cap, "'%s' is not point=action", entry);
        return -1;
    }
    *eq = '\0';
    memset(r, 0, sizeof *r);
    if (strlen(buf) >= sizeof r->point) {
        snprintf(err, cap, "point name too long in '%s'", entry);
        return -1;
    }
    strcpy(r->point, buf);
    r->remaining = -1;
    r->probability = 1.0;
    /* The suffixes may come in any order: cut them all off first, then read each. */
    char *action = eq + 1, *hash = strchr(action, '#'), *at = strchr(action, '@'), *pct = strchr(action, '%');
    if (hash != NULL)
        *hash = '\0';
    if (at != NULL)
        *at = '\0';
    if (pct != NULL)
        *pct = '\0';
    if (pct != NULL) {
        char *end = NULL;
        r->probability = strtod(pct + 1, &end);
        if (end == pct + 1 || *end != '\0' || !(r->probability > 0.0 && r->probability <= 1.0)) {
            snprintf(err, cap, "probability in '%s' must be in (0, 1]", entry);
            return -1;
        }
    }
    uint64_t times = 0;
    if (at != NULL && !parse_count(at + 1, (uint64_t)LONG_MAX, &times)) {
        snprintf(err, cap, "times in '%s' must be a number >= 1", entry);
        return -1;
    }
    if (hash != NULL && !parse_count(hash + 1, MAX_OCCURRENCE, &r->from)) {
        snprintf(err, cap, "occurrence in '%s' must be a number from 1 to %llu (#N: the N-th hit of the point)",
                 entry, MAX_OCCURRENCE);
        return -1;
    }
    r->failnum = parse_action(action);
    if (r->failnum < 0) {
        snprintf(err, cap, "unknown action '%s' in '%s' (error, crash, delay:<ms>, drop, duplicate, pause, off)",
                 action, entry);
        return -1;
    }
    if (r->failnum == 0 && (hash != NULL || at != NULL || pct != NULL)) {
        snprintf(err, cap, "'off' takes no #occurrence, @times or %%probability in '%s'", entry);
        return -1;
    }
    if (r->from > 0)
        r->span = times > 0 ? times : 1; /* #N alone: that hit only */
    else if (times > 0)
        r->remaining = (long)times;
    return 0;
}

/* Parses a whole list into out[] (may be NULL); returns the count or -1. A point named twice is refused:
   which of its two rules would hold is not something a reader of the list should have to know. */
static int parse_list(const char *spec, fault_rule_t *out, int max, char *err, size_t cap)
{
    fault_rule_t local[MAX_RULES];
    if (out == NULL || max > MAX_RULES) {
        out = local;
        max = max < MAX_RULES ? max : MAX_RULES;
    }
    int n = 0;
    const char *p = spec;
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ';');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char entry[256];
        if (len >= sizeof entry) {
            snprintf(err, cap, "entry too long near '%.40s'", p);
            return -1;
        }
        memcpy(entry, p, len);
        entry[len] = '\0';
        /* Blank entries (a trailing ';') are allowed. */
        char *e = entry;
        while (*e == ' ')
            e++;
        if (*e != '\0') {
            fault_rule_t r;
            if (parse_entry(e, &r, err, cap) != 0)
                return -1;
            if (n == max) {
                snprintf(err, cap, "more than %d fault points", max);
                return -1;
            }
            for (int k = 0; k < n; k++)
                if (strcmp(out[k].point, r.point) == 0) {
                    snprintf(err, cap, "fault point %s is named twice (again in '%s'): give it one rule", r.point, e);
                    return -1;
                }
            out[n++] = r;
        }
        p = end != NULL ? end + 1 : NULL;
    }
    return n;
}

NATOMIC_API natomic_status_t natomic_faults_validate(const char *spec, char *err, size_t errcap)
{
    char local[256];
    if (err == NULL) {
        err = local;
        errcap = sizeof local;
    }
    if (spec == NULL)
        return NATOMIC_EINVAL;
    return parse_list(spec, NULL, MAX_RULES, err, errcap) < 0 ? NATOMIC_EINVAL : NATOMIC_OK;
}

/* ---- hit counts ----------------------------------------------------- */

/* The slot of `point` (inserted when `insert`), or NULL. Under hits_mu. */
static point_count_t *count_slot(const char *point, bool insert)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t len = 0;
    for (const char *c = point; *c; c++, len++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    if (len >= POINT_CAP)
        return NULL;
    for (size_t i = 0; i < MAX_POINTS; i++) {
        point_count_t *slot = &counts[(h + i) & (MAX_POINTS - 1)];
        if (slot->name[0] == '\0') {
            if (!insert)
                return NULL;
            memcpy(slot->name, point, len + 1);
            return slot;
        }
        if (strcmp(slot->name, point) == 0)
            return slot;
    }
    return NULL;
}

/* Counts one hit of `point`: its occurrence number, or 0 when it cannot be counted. Under hits_mu. */
static uint64_t count_hit(const char *point)
{
    point_count_t *slot = count_slot(point, true);
    if (slot != NULL)
        return ++slot->hits;
    if (!counts_full_logged) {
        counts_full_logged = true;
        natomic__log(NATOMIC_LOG_WARN, NULL, "fault point %.60s%s is not counted (more than %d points, or a "
                     "name of %d characters or more): #N never fires there, its trace has no occurrence",
                     point, strlen(point) > 60 ? "..." : "", MAX_POINTS, POINT_CAP);
    }
    return 0;
}

static uint64_t hits_of(const char *point)
{
    pthread_mutex_lock(&hits_mu);
    point_count_t *slot = count_slot(point, false);
    uint64_t n = slot != NULL ? slot->hits : 0;
    pthread_mutex_unlock(&hits_mu);
    return n;
}

/* ---- trace ---------------------------------------------------------- */

/* What the trace says a failnum did; NULL for none. */
static const char *fired_name(int failnum)
{
    if (failnum == 0)
        return NULL;
    if (failnum >= NATOMIC_FAULT_DELAY)
        return "delay";
    switch (failnum) {
    case NATOMIC_FAULT_CRASH:
        return "crash";
    case NATOMIC_FAULT_DROP:
        return "drop";
    case NATOMIC_FAULT_DUPLICATE:
        return "duplicate";
    case NATOMIC_FAULT_PAUSE:
        return "pause";
    default:
        return "error"; /* what natomic_fault_check() makes of failnum 1 and of any other */
    }
}

/* The sink of the calling thread's service, or NULL. Under hits_mu. */
static trace_sink_t *thread_sink(void)
{
    if (thread_service == NULL)
        return n_sinks == 1 ? &sinks[0] : NULL;
    for (int i = 0; i < n_sinks; i++)
        if (sinks[i].svc == thread_service)
            return &sinks[i];
    return NULL; /* its service stopped */
}

/* Publishes one record on the sink's connection; failures are not reported (the trace is best effort). */
static void publish_record(const trace_sink_t *s, const char *point, uint64_t occurrence, uint64_t seq,
                           int64_t time_ns, int failnum)
{
    json_t *doc = json_object();
    if (doc == NULL)
        return;
    const char *fired = fired_name(failnum);
    json_object_set_new(doc, "service", json_string(s->service));
    json_object_set_new(doc, "instance", json_string(s->instance));
    json_object_set_new(doc, "incarnation", json_string(s->incarnation));
    json_object_set_new(doc, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(doc, "point", json_string(point));
    json_object_set_new(doc, "occurrence", occurrence > 0 ? json_integer((json_int_t)occurrence) : json_null());
    json_object_set_new(doc, "seq", seq > 0 ? json_integer((json_int_t)seq) : json_null());
    json_object_set_new(doc, "time_ns", json_integer((json_int_t)time_ns));
    json_object_set_new(doc, "fired", fired != NULL ? json_string(fired) : json_null());
    if (failnum >= NATOMIC_FAULT_DELAY)
        json_object_set_new(doc, "delay_ms", json_integer(failnum - NATOMIC_FAULT_DELAY));
    char *body = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (body == NULL)
        return;
    char subject[256];
    snprintf(subject, sizeof subject, NATOMIC_FAULT_TRACE_PREFIX ".%s.%s", s->service, s->instance);
    natsConnection_PublishString(s->nc, subject, body);
    free(body);
}

/*
 * Publishes the record of one hit for the calling thread's service, or
 * keeps it until the first service attaches. Returns the connection it
 * went out on, or NULL. Under hits_mu.
 */
static natsConnection *emit(const char *point, uint64_t occurrence, uint64_t seq, int64_t time_ns, int failnum)
{
    trace_sink_t *s = thread_sink();
    if (s != NULL) {
        publish_record(s, point, occurrence, seq, time_ns, failnum);
        return s->nc;
    }
    if (ever_attached)
        return NULL; /* several services and a thread of none, or its service stopped */
    if (n_pending == MAX_PENDING || strlen(point) >= POINT_CAP) {
        pending_lost++;
        return NULL;
    }
    pending_record_t *p = &pending[n_pending++];
    strcpy(p->point, point);
    p->occurrence = occurrence;
    p->seq = seq;
    p->time_ns = time_ns;
    p->failnum = failnum;
    return NULL;
}

void natomic__fault_attach(const natomic_service_t *svc)
{
    assert(svc != NULL);
    pthread_mutex_lock(&hits_mu);
    bool known = false;
    for (int i = 0; i < n_sinks; i++)
        known = known || sinks[i].svc == svc;
    if (!known && n_sinks == MAX_SINKS) {
        natomic__log(NATOMIC_LOG_WARN, svc->name, "more than %d services in this process: the fault trace of %s "
                     "is not published", MAX_SINKS, svc->name);
    } else if (!known) {
        trace_sink_t *s = &sinks[n_sinks++];
        memset(s, 0, sizeof *s);
        s->svc = svc;
        s->nc = svc->nc;
        natomic__copy(s->service, sizeof s->service, svc->name);
        natomic__copy(s->instance, sizeof s->instance, svc->instance);
        natomic__copy(s->incarnation, sizeof s->incarnation, svc->incarnation);
        if (!ever_attached) {
            /* What the process hit before it had a connection is the first service's. */
            for (int i = 0; i < n_pending; i++)
                publish_record(s, pending[i].point, pending[i].occurrence, pending[i].seq, pending[i].time_ns,
                               pending[i].failnum);
            if (pending_lost > 0)
                natomic__log(NATOMIC_LOG_WARN, svc->name, "%llu fault point hits before the service started are "
                             "not in the trace (more than %d)", (unsigned long long)pending_lost, MAX_PENDING);
            n_pending = 0;
            ever_attached = true;
        }
    }
    pthread_mutex_unlock(&hits_mu);
}

void natomic__fault_detach(const natomic_service_t *svc)
{
    pthread_mutex_lock(&hits_mu);
    for (int i = 0; i < n_sinks; i++) {
        if (sinks[i].svc == svc) {
            sinks[i] = sinks[--n_sinks];
            break;
        }
    }
    pthread_mutex_unlock(&hits_mu);
}

void natomic__fault_bind_thread(const natomic_service_t *svc)
{
    thread_service = svc;
}

/* ---- setup and rules at run time ----------------------------------- */

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static natomic_status_t setup_status = NATOMIC_OK;

static bool env_is_1(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && strcmp(v, "1") == 0;
}

static void setup(void)
{
    fiu_init(0);
    const char *tmp = getenv("TMPDIR");
    char base[512];
    snprintf(base, sizeof base, "%s/fiu-ctrl", tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
    if (fiu_rc_fifo(base) != 0)
        natomic__log(NATOMIC_LOG_WARN, NULL, "fault points: no remote control at %s-%d (fiu-ctrl will not reach us)",
                     base, (int)getpid());

    const char *seed = getenv("NATOMIC_FAULT_SEED");
    rng_state = seed != NULL && *seed != '\0' ? strtoull(seed, NULL, 10) : 1;
    if (rng_state == 0)
        rng_state = 0x9e3779b97f4a7c15ULL; /* xorshift must not start at zero */

    const char *spec = getenv("NATOMIC_FAULTS");
    /* Count from here whenever the numbers may be asked for: the trace shows them, and a
       #N rule sent later ($NATOMIC.FAULTS) must mean the same N as the trace did. */
    pthread_mutex_lock(&hits_mu);
    tracing = env_is_1("NATOMIC_FAULT_TRACE");
    pthread_mutex_unlock(&hits_mu);
    if (tracing || env_is_1("NATOMIC_FAULT_CONTROL") || (spec != NULL && *spec != '\0'))
        atomic_store(&counting, true);
    if (tracing)
        natomic__log(NATOMIC_LOG_INFO, NULL, "fault trace on: every fault point hit goes to "
                     NATOMIC_FAULT_TRACE_PREFIX ".<service>.<instance>");

    if (spec == NULL || *spec == '\0')
        return;
    char err[256];
    if (natomic_faults_apply(spec, err, sizeof err) != NATOMIC_OK) {
        natomic__log(NATOMIC_LOG_ERROR, NULL, "NATOMIC_FAULTS: %s; no fault point enabled", err);
        setup_status = NATOMIC_EINVAL;
    }
}

/* True when libfiu has `point` enabled by a rule of ours (through decide()), not by fiu-ctrl. */
static bool enabled_by_rule(const char *point)
{
    probing = true;
    int failnum = fiu_fail(point);
    void *info = failnum != 0 ? fiu_failinfo() : NULL;
    probing = false;
    return info == &rule_marker;
}

/* Puts `r` in table[] (replacing the point's rule; failnum 0 removes it). false when full. */
static bool rules_put(fault_rule_t *table, int *n, const fault_rule_t *r)
{
    for (int k = 0; k < *n; k++) {
        if (strcmp(table[k].point, r->point) == 0) {
            table[k] = table[--*n];
            break;
        }
    }
    if (r->failnum == 0)
        return true;
    if (*n == MAX_RULES)
        return false;
    table[(*n)++] = *r;
    return true;
}

NATOMIC_API natomic_status_t natomic_faults_apply(const char *spec, char *err, size_t errcap)
{
    char local[256];
    if (err == NULL) {
        err = local;
        errcap = sizeof local;
    }
    if (spec == NULL)
        return NATOMIC_EINVAL;
    fiu_init(0);
    fault_rule_t parsed[MAX_RULES];
    int n = parse_list(spec, parsed, MAX_RULES, err, errcap);
    if (n < 0)
        return NATOMIC_EINVAL;
    pthread_mutex_lock(&apply_mu);
    /* The new table is made aside, so a list that does not fit changes nothing. */
    static fault_rule_t next[MAX_RULES];
    pthread_mutex_lock(&rules_mu);
    int n_next = n_rules;
    memcpy(next, rules, sizeof rules);
    pthread_mutex_unlock(&rules_mu);
    bool enables = false;
    for (int i = 0; i < n; i++) {
        enables = enables || parsed[i].failnum != 0;
        if (!rules_put(next, &n_next, &parsed[i])) {
            snprintf(err, errcap, "more than %d fault points", MAX_RULES);
            pthread_mutex_unlock(&apply_mu);
            return NATOMIC_EINVAL;
        }
    }
    /* Before a rule exists, so that every hit it may see has its number. */
    if (enables)
        atomic_store(&counting, true);
    pthread_mutex_lock(&rules_mu);
    memcpy(rules, next, sizeof rules);
    n_rules = n_next;
    pthread_mutex_unlock(&rules_mu);
    /* libfiu last, without rules_mu (see the lock order above). */
    for (int i = 0; i < n; i++) {
        const fault_rule_t *r = &parsed[i];
        if (r->failnum == 0) {
            fiu_disable(r->point);
            natomic__log(NATOMIC_LOG_INFO, NULL, "fault point %s disabled", r->point);
            continue;
        }
        if (!enabled_by_rule(r->point))
            fiu_enable_external(r->point, r->failnum, &rule_marker, 0, decide);
        if (r->from == 0) {
            natomic__log(NATOMIC_LOG_INFO, NULL, "fault point %s enabled (failnum %d, times %ld, probability %g)",
                         r->point, r->failnum, r->remaining, r->probability);
            continue;
        }
        uint64_t hits = hits_of(r->point);
        natomic__log(NATOMIC_LOG_INFO, NULL,
                     "fault point %s enabled (failnum %d, hits %llu to %llu, probability %g; hit %llu so far)",
                     r->point, r->failnum, (unsigned long long)r->from, (unsigned long long)(r->from + r->span - 1),
                     r->probability, (unsigned long long)hits);
        if (hits >= r->from + r->span - 1)
            natomic__log(NATOMIC_LOG_WARN, NULL, "fault point %s was hit %llu times already: #%llu never fires",
                         r->point, (unsigned long long)hits, (unsigned long long)r->from);
    }
    pthread_mutex_unlock(&apply_mu);
    return NATOMIC_OK;
}

NATOMIC_API natomic_status_t natomic_faults_setup(void)
{
    pthread_once(&setup_once, setup);
    return setup_status;
}

/* ---- the check ------------------------------------------------------ */

/* Carries out a fired action; its record went out on `nc` (may be NULL). */
static natomic_fault_t carry_out(const char *point, int failnum, uint64_t occurrence, natsConnection *nc)
{
    if (occurrence > 0)
        natomic__log(NATOMIC_LOG_INFO, NULL, "fault point %s fired (failnum %d, hit %llu)", point, failnum,
                     (unsigned long long)occurrence);
    else
        natomic__log(NATOMIC_LOG_INFO, NULL, "fault point %s fired (failnum %d)", point, failnum);
    if (failnum >= NATOMIC_FAULT_DELAY) {
        natomic__sleep_ms(failnum - NATOMIC_FAULT_DELAY);
        return NATOMIC_FAULT_NONE;
    }
    switch (failnum) {
    case NATOMIC_FAULT_CRASH:
        /* The record must reach the server first: the observer draws the moment from it. */
        if (nc != NULL)
            natsConnection_FlushTimeout(nc, CRASH_FLUSH_MS);
        /* SIGKILL: no atexit, no flush of anything else -- what a power cut leaves behind. */
        kill(getpid(), SIGKILL);
        for (;;)
            pause();
    case NATOMIC_FAULT_PAUSE: {
        /* Released when the point is disabled (fiu-ctrl -c 'disable name=...', or `off`). */
        int64_t waited = 0;
        for (;;) {
            probing = true;
            bool held = fiu_fail(point) != 0;
            probing = false;
            if (!held || waited >= PAUSE_LIMIT_MS)
                break;
            natomic__sleep_ms(10);
            waited += 10;
        }
        natomic__log(NATOMIC_LOG_INFO, NULL, "fault point %s released", point);
        return NATOMIC_FAULT_NONE;
    }
    case NATOMIC_FAULT_DROP:
    case NATOMIC_FAULT_DUPLICATE:
        return (natomic_fault_t)failnum;
    default:
        return NATOMIC_FAULT_ERROR; /* failnum 1, or any other number fiu-ctrl sent */
    }
}

/* The action of a check that fired: the rule's (decide() left it), else libfiu's (fiu-ctrl). */
static int take_decided(int failnum)
{
    int decided = decided_failnum;
    decided_failnum = 0;
    return decided != 0 ? decided : failnum;
}

/* A check while counting: number it, decide, record it, then act. */
static natomic_fault_t check_counted(const char *point)
{
    natsConnection *nc = NULL;
    pthread_mutex_lock(&hits_mu);
    uint64_t occurrence = count_hit(point);
    uint64_t seq = ++hits_total;
    int64_t time_ns = natomic__wall_ns();
    hit_occurrence = occurrence;
    int failnum = fiu_fail(point);
    hit_occurrence = 0;
    if (failnum != 0)
        failnum = take_decided(failnum);
    if (tracing || failnum != 0)
        nc = emit(point, occurrence, seq, time_ns, failnum);
    pthread_mutex_unlock(&hits_mu);
    return failnum == 0 ? NATOMIC_FAULT_NONE : carry_out(point, failnum, occurrence, nc);
}

NATOMIC_API natomic_fault_t natomic_fault_check(const char *point)
{
    /* The common case stays one load and one fiu_fail(): nothing is counted, nothing traced. */
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        return check_counted(point);
    int failnum = fiu_fail(point);
    if (failnum == 0)
        return NATOMIC_FAULT_NONE;
    failnum = take_decided(failnum);
    /* Enabled by fiu-ctrl alone, in a process that counts nothing: a record without numbers. */
    pthread_mutex_lock(&hits_mu);
    natsConnection *nc = emit(point, 0, 0, natomic__wall_ns(), failnum);
    pthread_mutex_unlock(&hits_mu);
    return carry_out(point, failnum, 0, nc);
}
