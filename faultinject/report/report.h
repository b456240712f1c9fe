/*
 * report.h -- the readable report of a run: per scenario a sequence
 * diagram of calls, replies, faults, compensations and events, as Mermaid
 * in Markdown and as a self-contained HTML page (inline SVG drawn here:
 * no script, no network), plus a summary page linking them. A durable
 * story's page also tells what recovery did (a Recovery section, and
 * recovery steps drawn apart in the diagram); the summary gives each
 * story's mode and the time from a restart to the first saga recovered.
 *
 * A story that expects a violation (`violations:` in its file) and whose
 * checks all passed -- so the violation was seen -- is neither a plain pass
 * nor a failure: the summary gives it a state of its own, "expected
 * violation", with its own colour and a column naming the invariants.
 */
#ifndef REPORT_H
#define REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "timeline.h"

typedef struct report_check {
    char name[200];     /* the TAP description                                    */
    bool ok;
    char detail[600];   /* expected/actual, for a failed check                    */
} report_check_t;

/* One step of durable recovery, as told on natomic.recovery.<service>. */
typedef struct report_recovery {
    int64_t t_us;       /* when it happened, by the recovering service's clock (its
                           time_ns), on the timeline's scale (timeline_us_at)     */
    char event[16];     /* claimed | compensated | deferred | ended               */
    char service[32];
    char instance[64];  /* the recovering instance, e.g. "orders-0"               */
    char call_id[40];
    char tx[40];
    char detail[400];   /* claimed: "from <owner> ..."; ended: "outcome <o>: ..." */
} report_recovery_t;

typedef struct report_scenario {
    const char *name;
    const char *group;
    const char *about;
    const char *path;
    unsigned long long seed;
    const char *replay;         /* the command that replays it                   */
    double duration_s;
    const report_check_t *checks;
    size_t n_checks;
    const timeline_t *timeline;
    const char *log_excerpt;    /* tails of the service logs, may be NULL        */
    bool durable;               /* mode: durable (the summary shows the mode)     */
    const report_recovery_t *recoveries; /* in time order; the Recovery section  */
    size_t n_recoveries;
    bool has_recovery_ms;       /* a restart was followed by an "ended" event:   */
    double recovery_ms;         /* the time between them                          */
    const char *recovery_restart; /* what was restarted ("orders", "orders-0")  */
    char *const *violations;    /* the invariants the story expects to break      */
    size_t n_violations;        /* (its `violations:`); borrowed, may be 0         */
} report_scenario_t;

/*
 * Writes dir/index.html and dir/index.md (summary: one line per scenario,
 * its state -- ok, expected violation, FAIL -- counts, mode, recovery
 * time, seeds, links) and, per scenario,
 * dir/<group>-<name>.html and .md. Creates dir. 0, or -1 with err.
 */
int report_write(const char *dir, const report_scenario_t *scenarios, size_t n, char *err, size_t errcap);

#endif
