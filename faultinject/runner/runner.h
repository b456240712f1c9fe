/*
 * runner.h -- runs scenarios: starts what each needs, plays its steps,
 * checks its expectations from outside, prints TAP 14, writes the report.
 */
#ifndef RUNNER_H
#define RUNNER_H

#include <natomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct runner_options {
    const char *filter;          /* substring of "<group>/<name>", or NULL             */
    bool has_seed;
    unsigned long long seed;     /* --seed overrides every scenario's seed            */
    const char *report_dir;      /* NULL: no report                                    */
    bool keep;                   /* keep temp folders                                  */
    bool progress;               /* a line per scenario on stderr                      */
    int jobs;                    /* scenarios played at once; 0: two per core          */
    /* NATS the lab did not start (--server): the stories run on it one at a time, through
       supervisor_start_external(); NULL: each story starts its own. */
    const natomic_conn_config_t *nats;
    const char *node_control;    /* the program that stops/starts/cuts/heals an outside node */
    const char *monitor_ports;   /* the outside nodes' monitoring port(s); NULL: 8222       */
} runner_options_t;

/* Runs the scenario files found in `paths` (files or folders, recursively, *.yaml). Returns the exit status: 0 all passed. */
int runner_run(char *const paths[], size_t n_paths, const runner_options_t *opts);

/* ==== One story with overrides: the explorer's (faultinject/explore/) ==================
 *
 * runner_replay() plays one story on the calling thread as `run` does --
 * NATS, the services, the seed data, the story's faults, its steps -- with
 * what an exploration changes: the mode, one fault list in the environment
 * of one instance's first start (so `point=action#N` counts the same hits
 * as a clean run did), every fault point hit reported, the per-call
 * expectations not checked (a call's answer is recorded, whatever it is),
 * a watcher that restarts a process which died, and, after the last step,
 * only the story's invariants, evaluated until they hold for a stable
 * period (or a bound ran out). What it saw stays for a report page.
 */
#include "report.h"
#include "scenario.h"

#include <stdint.h>

typedef enum runner_mode { RUNNER_MODE_STORY, RUNNER_MODE_MEMORY, RUNNER_MODE_DURABLE } runner_mode_t;

/* One record of natomic.trace.fault.<service>.<instance> (docs/fault-points.md, "The trace"). */
typedef struct runner_fault_hit {
    char service[32];
    char instance[64];           /* "orders-0": NATOMIC_INSTANCE, <service>-<k>            */
    char incarnation[40];        /* the process: new at every start                        */
    char point[128];
    unsigned long long occurrence; /* the point's hit number in that process; 0: uncounted */
    int64_t time_ns;             /* the service's wall clock at the hit                    */
    char fired[16];              /* "" (a plain hit), or error|crash|drop|duplicate|pause|delay */
    long delay_ms;               /* fired "delay": how long                                */
    bool in_story;               /* at or after the first step: not the seed data's         */
} runner_fault_hit_t;

/* One invariant of the story after it settled. */
typedef struct runner_invariant {
    const char *name;            /* borrowed from the scenario                             */
    bool expected_broken;        /* from expect.violations: the story's own lesson         */
    int holds;                   /* 1 holds, 0 broken, -1 could not be checked             */
    char why[400];               /* what broke, or why it could not be checked             */
} runner_invariant_t;

typedef struct runner_replay_options {
    runner_mode_t mode;
    bool has_seed;
    unsigned long long seed;     /* else the story's                                       */
    const char *fault_service;   /* NULL: none; else `faults` (NATOMIC_FAULTS syntax) goes  */
    int fault_instance;          /* into that instance's environment, first start only     */
    const char *faults;
    int restart_after_ms;        /* >= 0: a process that died is restarted after this quiet
                                    period (supervisor_watch); < 0: left dead              */
    int settle_ms;               /* after the last step -- and after a fired delay ran out
                                    and a restart came -- the longest wait for the story's
                                    invariants (expect.invariants) to hold                  */
    int stable_ms;               /* ... and to keep holding this long, then it stops        */
    /* Each fault trace record, from a NATS thread (may be NULL). */
    void (*on_hit)(void *user, const runner_fault_hit_t *hit);
    /* Asked between steps and while settling: true stops the story there (may be NULL). */
    bool (*cancelled)(void *user);
    void *user;
    const char *replay;          /* the command that replays it, for its page              */
    bool keep;                   /* keep its temporary folder (NATS store, logs, databases) */
} runner_replay_options_t;

/* What one replay saw; free with runner_replay_free(). */
typedef struct runner_replay {
    bool setup_ok;               /* NATS, the services, the seed data and the story's faults */
    char setup_error[300];       /* else why not                                           */
    bool cancelled;              /* stopped early by o->cancelled                          */
    bool settled;                /* the invariants held for stable_ms before the bound     */
    double settle_s;             /* from the last step to the verdict                      */
    double duration_s;           /* NATS up to everything stopped                          */
    runner_invariant_t *invariants; /* expect.invariants, then expect.violations          */
    size_t n_invariants;
    size_t restarts;             /* processes the watcher restarted                         */
    char kept[300];              /* the folder kept with o->keep                            */
    /* Its page, for report_write(): the checks (the invariants), the timeline, the logs,
     * recovery. Borrows from the replay; name, group, about and path are the caller's to
     * set (they start as the story's). */
    report_scenario_t report;
    void *priv;
} runner_replay_t;

/*
 * Services started from now on get NATOMIC_FAULT_CONTROL=1, NATOMIC_TRACE=1
 * and NATOMIC_FAULT_TRACE=1 (every hit traced). Call once, before any
 * thread starts: it sets the process's environment.
 */
void runner_replay_environment(void);

/*
 * Plays `sc` with `o` on the calling thread (its children die with the
 * thread). 0 when it ran to its verdict -- out->invariants says how it
 * settled -- or was cancelled; -1 when the story could not be set up
 * (out->setup_error) or memory ran out. Either way *out holds what there
 * is, for runner_replay_free().
 */
int runner_replay(const scenario_t *sc, const runner_replay_options_t *o, runner_replay_t *out);
void runner_replay_free(runner_replay_t *rp);


#endif
