/*
 * explore.h -- `natomic-lab explore`: every fault point a story hits, each
 * action at each hit, replayed alone in each mode, and judged by the
 * story's invariants (explore.c tells how; docs/lab.md, "Exploring every
 * crash point", how to read what it writes).
 */
#ifndef EXPLORE_H
#define EXPLORE_H

#include <stdbool.h>
#include <stddef.h>

/* The actions explored, as bits of explore_options_t.actions. */
enum {
    EXPLORE_CRASH = 1 << 0,
    EXPLORE_ERROR = 1 << 1,
    EXPLORE_DROP = 1 << 2,
    EXPLORE_DUPLICATE = 1 << 3,
    EXPLORE_DELAY = 1 << 4,
    EXPLORE_ALL_ACTIONS = (1 << 5) - 1
};

/* The modes, as bits of explore_options_t.modes. */
enum { EXPLORE_MEMORY = 1 << 0, EXPLORE_DURABLE = 1 << 1 };

typedef struct explore_options {
    unsigned modes;              /* EXPLORE_MEMORY | EXPLORE_DURABLE                      */
    unsigned actions;            /* EXPLORE_* bits                                        */
    const char *points;          /* comma-separated point names to explore; NULL: all      */
    const char *cell;            /* "INSTANCE:POINT=ACTION#N": that cell alone, no clean run */
    const char *json_path;       /* NULL: no JSON file                                     */
    const char *report_dir;      /* NULL: no pages                                         */
    int jobs;                    /* replays at once; 0: one per core                       */
    bool has_seed;
    unsigned long long seed;
    int restart_after_ms;        /* the watcher's quiet period before a restart            */
    int cell_limit_s;            /* one replay's bound                                     */
    int time_limit_s;            /* the whole exploration's bound                          */
    bool keep;                   /* keep every replay's folder                             */
    bool progress;               /* a line per replay on stderr, with the ETA              */
    const char *command;         /* the command line, for the page                         */
} explore_options_t;

/* Default bounds and the watcher's quiet period. */
#define EXPLORE_RESTART_AFTER_MS 500
#define EXPLORE_CELL_LIMIT_S 120
#define EXPLORE_TIME_LIMIT_S 1800

/*
 * Explores the stories in `paths` (files, or folders walked for *.yaml
 * as `run` does; lessons files are not stories). TAP 14 on stdout, one
 * point per cell; progress on stderr. Returns the exit status: 0 when no
 * cell is an unexpected violation (and every clean run was consistent,
 * every injected fault fired, nothing was cut short), 1 otherwise, 2 for
 * a path that does not exist or a bad --cell.
 */
int explore_run(char *const paths[], size_t n_paths, const explore_options_t *o);

/* Parses "crash,error,..." into EXPLORE_* bits; -1 naming the bad word in err. */
int explore_parse_actions(const char *list, unsigned *out, char *err, size_t errcap);

#endif
