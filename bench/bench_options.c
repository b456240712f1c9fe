/*
 * bench_options.c -- what natomic-bench and natomic-bench-saga check the
 * same way on their command lines.
 *
 * Each program keeps its own options, defaults and getopt_long switch;
 * only the checks and their messages live here, so that a count out of
 * range, a missing value or an unwritable --json path (bench_json.c)
 * reads the same in both programs. Nothing is kept between calls; getopt's optind is read,
 * never changed.
 */
#include "bench_options.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_json.h"

bool bench_option_count(int *out, const char *program, const char *option, const char *text, int min, int max)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "%s: %s needs a whole number from %d to %d, got '%s'\n", program, option, min, max, text);
        return false;
    }
    *out = (int)v;
    return true;
}

bool bench_option_json(const char **out, const char *program, const char *text)
{
    if (*text == '\0') {
        fprintf(stderr, "%s: --json needs a file name\n", program);
        return false;
    }
    *out = text;
    return true;
}

void bench_option_complain(const char *program, int c, char **argv)
{
    if (c == ':')
        fprintf(stderr, "%s: %s needs a value (see --help)\n", program, argv[optind - 1]);
    else
        fprintf(stderr, "%s: unknown option '%s' (see --help)\n", program, argv[optind - 1]);
}

bool bench_options_finish(const char *program, int argc, char **argv, const char *json)
{
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", program, argv[optind]);
        return false;
    }
    return json == NULL || bench_json_path_writable(program, json);
}
