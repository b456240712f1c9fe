/*
 * replay_main.c -- runs a fuzz harness over its corpus without libFuzzer.
 *
 * Linked with one harness (its LLVMFuzzerTestOneInput) in every build, so
 * `meson test --suite fuzz` replays the corpus as a regression test: each
 * file given, or each regular file of each folder given, is read and handed
 * to the harness once. Output is TAP 14, one point per input; a crash is a
 * crash of the test (meson reports it), which is what a fuzzer would say.
 *
 *     replay-<harness> FILE|DIR...
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#define REPLAY_MAX_BYTES (1 << 20)

static int n_points;

/* Replays one file; 0, or -1 when it cannot be read. */
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        printf("not ok %d - %s: cannot open\n", ++n_points, path);
        return -1;
    }
    uint8_t *buf = malloc(REPLAY_MAX_BYTES);
    size_t n = buf != NULL ? fread(buf, 1, REPLAY_MAX_BYTES, f) : 0;
    bool too_big = buf != NULL && fgetc(f) != EOF;
    fclose(f);
    if (buf == NULL || too_big) {
        printf("not ok %d - %s: %s\n", ++n_points, path, buf == NULL ? "out of memory" : "over 1 MiB");
        free(buf);
        return -1;
    }
    fflush(stdout);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    printf("ok %d - %s (%zu bytes)\n", ++n_points, path, n);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays every regular file of a folder, in name order; the count of failures. */
static int replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        printf("not ok %d - %s: cannot open the folder\n", ++n_points, dir);
        return 1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(names, cap * sizeof *names);
            if (grown == NULL)
                break;
            names = grown;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        names[n] = malloc(len);
        if (names[n] == NULL)
            break;
        snprintf(names[n], len, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, compare_names);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode) && replay_file(names[i]) != 0)
            failed++;
        free(names[i]);
    }
    free(names);
    return failed;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(stderr, "usage: %s FILE|DIR...  (replays each input through the harness once, TAP on stdout)\n",
                argv[0]);
        return argc < 2 ? 2 : 0;
    }
    printf("TAP version 14\n");
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
            failed += replay_dir(argv[i]);
        else if (replay_file(argv[i]) != 0)
            failed++;
    }
    if (n_points == 0)
        printf("not ok 1 - no input found\n"), n_points = 1, failed = 1;
    printf("1..%d\n", n_points);
    return failed ? 1 : 0;
}
