/*
 * report.h -- the readable report of a run: per scenario a sequence
 * diagram of calls, replies, faults, compensations and events, as Mermaid
 * in Markdown and as a self-contained HTML page (inline SVG drawn here:
 * no script, no network), plus a summary page linking them.
 */
#ifndef REPORT_H
#define REPORT_H

#include <stddef.h>

#include "timeline.h"

typedef struct report_check {
    char name[200];     /* the TAP description                                    */
    bool ok;
    char detail[600];   /* expected/actual, for a failed check                    */
} report_check_t;

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
} report_scenario_t;

/*
 * Writes dir/index.html and dir/index.md (summary: one line per scenario,
 * pass/fail counts, seeds, links) and, per scenario,
 * dir/<group>-<name>.html and .md. Creates dir. 0, or -1 with err.
 */
int report_write(const char *dir, const report_scenario_t *scenarios, size_t n, char *err, size_t errcap);

#endif
