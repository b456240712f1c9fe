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

#endif
