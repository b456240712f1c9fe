/*
 * runner.h -- runs scenarios: starts what each needs, plays its steps,
 * checks its expectations from outside, prints TAP 14, writes the report.
 */
#ifndef RUNNER_H
#define RUNNER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct runner_options {
    const char *filter;          /* substring of "<group>/<name>", or NULL             */
    bool has_seed;
    unsigned long long seed;     /* --seed overrides every scenario's seed            */
    const char *report_dir;      /* NULL: no report                                    */
    bool keep;                   /* keep temp folders                                  */
    bool progress;               /* a line per scenario on stderr                      */
    int jobs;                    /* scenarios played at once; 0: one per core          */
} runner_options_t;

/* Runs the scenario files found in `paths` (files or folders, recursively, *.yaml). Returns the exit status: 0 all passed. */
int runner_run(char *const paths[], size_t n_paths, const runner_options_t *opts);


#endif
