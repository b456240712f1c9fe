/*
 * bench_json.c -- the file behind --json.
 *
 * Checked once the options are read, written once the figures are: the
 * check looks only at the folder (access W_OK on its dirname), so a file
 * that exists is replaced, and a folder that loses its permission during
 * the run still fails at the end, with the same message as any other
 * write error. Nothing is written when the document is incomplete.
 */
#include "bench_json.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

bool bench_json_path_writable(const char *program, const char *path)
{
    char copy[PATH_MAX];
    if (strlen(path) >= sizeof copy) {
        fprintf(stderr, "%s: --json path is too long\n", program);
        return false;
    }
    strcpy(copy, path);
    const char *dir = dirname(copy);
    if (access(dir, W_OK) != 0) {
        fprintf(stderr, "%s: --json %s: cannot write in %s: %s\n", program, path, dir, strerror(errno));
        return false;
    }
    return true;
}

int bench_json_write(json_t *doc, const char *program, const char *path)
{
    if (doc == NULL || json_dump_file(doc, path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
        fprintf(stderr, "%s: cannot write %s: %s\n", program, path, doc == NULL ? "out of memory" : strerror(errno));
        json_decref(doc);
        return -1;
    }
    json_decref(doc);
    return 0;
}
