/*
 * bench_json.h -- the --json FILE of both benchmark programs: checked
 * before the run (a run of minutes should not end in "cannot write"),
 * written after it. What goes in the document is each program's own.
 */
#ifndef BENCH_JSON_H
#define BENCH_JSON_H

#include <jansson.h>
#include <stdbool.h>

/* Whether `path` can be created: its folder exists and takes new files. False with a message on stderr otherwise. */
bool bench_json_path_writable(const char *program, const char *path);

/*
 * Writes `doc` to `path` (indented, keys sorted) and releases it: `doc` is
 * owned by this call, whatever it returns. NULL stands for a document that
 * could not be built. 0, or -1 with "<program>: cannot write <path>: <why>"
 * on stderr ("out of memory" for a NULL doc).
 */
int bench_json_write(json_t *doc, const char *program, const char *path);

#endif
