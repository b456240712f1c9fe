/*
 * scenario_check.h -- `natomic-lab check`: validate scenario files
 * without running them.
 */
#ifndef SCENARIO_CHECK_H
#define SCENARIO_CHECK_H

#include <stddef.h>

/*
 * Loads every scenario in `paths` (files, whatever their name, and
 * folders, walked recursively for *.yaml and *.yml in sorted order) and
 * prints "ok   path (N steps): about's first line" on stdout for each valid
 * one, "path:line: reason" on stderr for each other. Returns 0 when all are
 * valid, 1 when one is not, 2 when a path does not exist (it checks the
 * others all the same).
 */
int scenario_check_paths(char *const paths[], size_t n);

/* Called for each scenario file found; non-zero counts it as invalid. */
typedef int (*scenario_visit_fn)(const char *path, void *user);

/*
 * The walk behind both check and run: each file in `paths` (whatever its
 * name) and each *.yaml / *.yml under each folder (recursively, dot names
 * and *.lessons.yaml skipped, strcmp order, at most 32 deep) is passed to
 * `visit`. Returns 0,
 * 1 when a visit failed or a folder could not be read, 2 when a path does
 * not exist (the others are walked all the same).
 */
int scenario_walk(char *const paths[], size_t n, scenario_visit_fn visit, void *user);

#endif
