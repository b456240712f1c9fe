/*
 * bench_options.h -- the command-line pieces both benchmark programs read
 * alike, around their own getopt_long loop: whole-number counts, --json
 * FILE, the complaints about a bad option, and the checks once the loop
 * is done. Every message goes to stderr and starts with `program`; a
 * false return means "exit status 2".
 */
#ifndef BENCH_OPTIONS_H
#define BENCH_OPTIONS_H

#include <stdbool.h>

/* Parses a whole decimal integer in [min, max] into *out; false with a message otherwise (*out untouched). */
bool bench_option_count(int *out, const char *program, const char *option, const char *text, int min, int max);

/* --json FILE: sets *out to `text`; false with a message when the name is empty. */
bool bench_option_json(const char **out, const char *program, const char *text);

/*
 * Says why getopt_long (optstring starting with ':') returned `c`, which
 * the program does not take: ':' for an option missing its value, else
 * an unknown option. Names argv[optind - 1].
 */
void bench_option_complain(const char *program, int c, char **argv);

/*
 * After the getopt_long loop: true when no argument is left over and the
 * --json file (`json`, NULL when not given) can be written
 * (bench_json_path_writable). False with a message otherwise.
 */
bool bench_options_finish(const char *program, int argc, char **argv, const char *json);

#endif
