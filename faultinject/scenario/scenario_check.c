/*
 * scenario_check.c -- `natomic-lab check FILE|DIR...`: every scenario
 * loaded and validated by scenario_load, nothing started.
 *
 * Folders are walked recursively, entries in strcmp order (not the
 * locale's, so the output is the same everywhere), keeping *.yaml and
 * *.yml and skipping names that start with a dot and the lessons files
 * of the explorer (*.lessons.yaml, beside their story). A file named on the
 * command line is checked whatever its extension. The walk stops at
 * MAX_DEPTH folders deep, so a symbolic link to a parent cannot loop.
 */
#include "scenario_check.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scenario.h"

#define MAX_DEPTH 32

typedef struct tally {
    int invalid;
    int missing;
    int visited;
    scenario_visit_fn visit;
    void *user;
} tally_t;

static void visit_file(const char *path, tally_t *t)
{
    t->visited++;
    if (t->visit(path, t->user) != 0)
        t->invalid++;
}

/* scenario_check_paths' visitor: load, print ok or the error. */
static int check_file(const char *path, void *user)
{
    (void)user;
    char err[2048];
    scenario_t *s = NULL;
    if (scenario_load(&s, path, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    size_t first_line = strcspn(s->about, "\n");
    printf("ok   %s (%zu step%s): %.*s\n", path, s->n_steps, s->n_steps == 1 ? "" : "s", (int)first_line, s->about);
    scenario_free(s);
    return 0;
}

static bool ends_with(const char *name, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && strcmp(name + n - k, suffix) == 0;
}

/* *.yaml and *.yml, but not a story's lessons file (<name>.lessons.yaml: the explorer's). */
static bool is_scenario_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && (ends_with(name, n, ".yaml") || ends_with(name, n, ".yml")) &&
           !ends_with(name, n, ".lessons.yaml") && !ends_with(name, n, ".lessons.yml");
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk(const char *path, int depth, tally_t *t);

/* Every entry of folder `dir` in name order: folders walked, scenario files checked. */
static void walk_dir(const char *dir, int depth, tally_t *t)
{
    if (depth > MAX_DEPTH) {
        fprintf(stderr, "%s: more than %d folders deep (a link loop?), skipped\n", dir, MAX_DEPTH);
        t->invalid++;
        return;
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "%s: cannot open folder: %s\n", dir, strerror(errno));
        t->invalid++;
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **grown = realloc(names, ncap * sizeof *grown);
            if (grown == NULL)
                break;
            names = grown;
            cap = ncap;
        }
        size_t len = strlen(dir) + 1 + strlen(e->d_name) + 1;
        if ((names[n] = malloc(len)) == NULL)
            break;
        snprintf(names[n], len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", e->d_name);
        n++;
    }
    bool short_of_memory = e != NULL;
    closedir(d);
    if (short_of_memory) {
        fprintf(stderr, "%s: out of memory listing the folder\n", dir);
        t->invalid++;
    }
    if (n > 0)
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        const char *base = strrchr(names[i], '/') + 1;
        if (stat(names[i], &st) == 0 && S_ISDIR(st.st_mode))
            walk(names[i], depth + 1, t);
        else if (is_scenario_name(base))
            visit_file(names[i], t);
        free(names[i]);
    }
    free(names);
}

static void walk(const char *path, int depth, tally_t *t)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        if (errno == ENOENT || errno == ENOTDIR)
            t->missing++;
        else
            t->invalid++;
        return;
    }
    if (S_ISDIR(st.st_mode))
        walk_dir(path, depth, t);
    else
        visit_file(path, t);
}

int scenario_walk(char *const paths[], size_t n, scenario_visit_fn visit, void *user)
{
    tally_t t = {.visit = visit, .user = user};
    for (size_t i = 0; i < n; i++) {
        int before = t.visited;
        walk(paths[i], 0, &t);
        struct stat st;
        if (t.visited == before && stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode))
            fprintf(stderr, "%s: no scenario files (*.yaml, *.yml) in this folder\n", paths[i]);
    }
    if (t.missing > 0)
        return 2;
    return t.invalid > 0 ? 1 : 0;
}

int scenario_check_paths(char *const paths[], size_t n)
{
    int rc = scenario_walk(paths, n, check_file, NULL);
    fflush(stdout);
    return rc;
}
