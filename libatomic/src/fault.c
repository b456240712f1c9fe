/*
 * fault.c -- named fault points over libfiu (DESIGN 3.9).
 *
 * A fault point is a name checked on a code path, e.g. "natomic/before_reply".
 * libfiu keeps the table of enabled points; its failnum carries the action
 * (1 error, 2 crash, 3 drop, 4 duplicate, 5 pause, 1000+N delay N ms), so
 * the stock `fiu-ctrl` can fail a live service by name:
 *     fiu-ctrl -c 'enable name=natomic/before_reply,failnum=3' <pid>
 *
 * At start, $NATOMIC_FAULTS enables points with counts and seeded
 * probabilities that libfiu alone does not have: those go through
 * fiu_enable_external() with a rule of ours (remaining count, probability,
 * a xorshift generator seeded by $NATOMIC_FAULT_SEED) behind one mutex, so
 * "fire 3 times" fires exactly 3 times across all workers and one seed
 * replays the same draws for the same sequence of checks.
 *
 * Disabled points cost one fiu_fail() call; a build with
 * -Dfault_points=disabled compiles NATOMIC_FAULT() out entirely.
 * Pause holds the calling thread until the point is disabled (fiu-ctrl
 * disable) or 60 s passed: every fault heals.
 */
#define FIU_ENABLE 1
#include <fiu-control.h>
#include <fiu.h>

#include "natomic_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAUSE_LIMIT_MS 60000
#define MAX_RULES 64

typedef struct fault_rule {
    char point[128];
    int failnum;
    long remaining;       /* < 0: always */
    double probability;   /* 1: always    */
} fault_rule_t;

static pthread_mutex_t rules_mu = PTHREAD_MUTEX_INITIALIZER;
static fault_rule_t rules[MAX_RULES];
static int n_rules;
static uint64_t rng_state = 1;

static double next_uniform(void)
{
    /* xorshift64*: small, fast, and the same sequence for the same seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* Set while a paused thread asks whether its point is still enabled. */
static _Thread_local bool probing;

/* libfiu asks us whether an env-enabled point fails this time. */
static int decide(const char *name, int *failnum, void **failinfo, unsigned int *flags)
{
    (void)failnum;
    (void)failinfo;
    (void)flags;
    if (probing)
        return 1; /* still enabled in libfiu: not released; counts are not consumed */
    int fail = 0;
    pthread_mutex_lock(&rules_mu);
    for (int i = 0; i < n_rules; i++) {
        fault_rule_t *r = &rules[i];
        if (strcmp(r->point, name) != 0 || r->remaining == 0)
            continue;
        if (r->probability < 1.0 && next_uniform() >= r->probability)
            break;
        if (r->remaining > 0)
            r->remaining--;
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

/* Parses one "point=action[:ms][@times][%prob]" entry. 0 or -1 with err. */
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
    char *action = eq + 1, *pct = strchr(action, '%'), *at = strchr(action, '@');
    if (pct != NULL) {
        *pct = '\0';
        char *end = NULL;
        r->probability = strtod(pct + 1, &end);
        if (end == pct + 1 || *end != '\0' || !(r->probability > 0.0 && r->probability <= 1.0)) {
            snprintf(err, cap, "probability in '%s' must be in (0, 1]", entry);
            return -1;
        }
    }
    if (at != NULL) {
        *at = '\0';
        char *end = NULL;
        r->remaining = strtol(at + 1, &end, 10);
        if (end == at + 1 || *end != '\0' || r->remaining < 1) {
            snprintf(err, cap, "times in '%s' must be a number >= 1", entry);
            return -1;
        }
    }
    r->failnum = parse_action(action);
    if (r->failnum < 0) {
        snprintf(err, cap, "unknown action '%s' in '%s' (error, crash, delay:<ms>, drop, duplicate, pause, off)",
                 action, entry);
        return -1;
    }
    return 0;
}

/* Parses a whole list into out[] (may be NULL); returns the count or -1. */
static int parse_list(const char *spec, fault_rule_t *out, int max, char *err, size_t cap)
{
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
            if (out != NULL)
                out[n] = r;
            n++;
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

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static natomic_status_t setup_status = NATOMIC_OK;

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
    if (spec == NULL || *spec == '\0')
        return;
    char err[256];
    if (natomic_faults_apply(spec, err, sizeof err) != NATOMIC_OK) {
        natomic__log(NATOMIC_LOG_ERROR, NULL, "NATOMIC_FAULTS: %s; no fault point enabled", err);
        setup_status = NATOMIC_EINVAL;
    }
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
    pthread_mutex_lock(&rules_mu);
    for (int i = 0; i < n; i++) {
        /* A point has one rule: a new one replaces the old, "off" removes it. */
        for (int k = 0; k < n_rules; k++) {
            if (strcmp(rules[k].point, parsed[i].point) == 0) {
                rules[k] = rules[--n_rules];
                break;
            }
        }
        if (parsed[i].failnum == 0) {
            fiu_disable(parsed[i].point);
            natomic__log(NATOMIC_LOG_INFO, NULL, "fault point %s disabled", parsed[i].point);
            continue;
        }
        if (n_rules == MAX_RULES) {
            snprintf(err, errcap, "more than %d fault points", MAX_RULES);
            pthread_mutex_unlock(&rules_mu);
            return NATOMIC_EINVAL;
        }
        rules[n_rules++] = parsed[i];
        fiu_enable_external(parsed[i].point, parsed[i].failnum, NULL, 0, decide);
        natomic__log(NATOMIC_LOG_INFO, NULL, "fault point %s enabled (failnum %d, times %ld, probability %g)",
                     parsed[i].point, parsed[i].failnum, parsed[i].remaining, parsed[i].probability);
    }
    pthread_mutex_unlock(&rules_mu);
    return NATOMIC_OK;
}

NATOMIC_API natomic_status_t natomic_faults_setup(void)
{
    pthread_once(&setup_once, setup);
    return setup_status;
}

NATOMIC_API natomic_fault_t natomic_fault_check(const char *point)
{
    int failnum = fiu_fail(point);
    if (failnum == 0)
        return NATOMIC_FAULT_NONE;
    natomic__log(NATOMIC_LOG_INFO, NULL, "fault point %s fired (failnum %d)", point, failnum);
    if (failnum >= NATOMIC_FAULT_DELAY) {
        natomic__sleep_ms(failnum - NATOMIC_FAULT_DELAY);
        return NATOMIC_FAULT_NONE;
    }
    switch (failnum) {
    case NATOMIC_FAULT_CRASH:
        /* SIGKILL: no atexit, no flush -- what a power cut leaves behind. */
        kill(getpid(), SIGKILL);
        for (;;)
            pause();
    case NATOMIC_FAULT_PAUSE: {
        /* Released when the point is disabled (fiu-ctrl -c 'disable name=...'). */
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
