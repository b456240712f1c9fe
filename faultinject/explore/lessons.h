/*
 * lessons.h -- the lessons file beside a story: the memory-mode violations
 * an exploration expects, each with the reason it is a lesson and not a bug.
 *
 *   scenarios/saga/confirmed-order.yaml           the story
 *   scenarios/saga/confirmed-order.lessons.yaml   its lessons
 *
 *   about: >                            # optional: what the file is
 *     ...
 *   lessons:
 *     - mode: memory                    # required; only memory: durable mode has none
 *       service: orders                 # required: the service where the fault fires
 *       instance: 0                     # optional: that instance alone (default: any)
 *       point: orders/create_order/after_reserve   # required: a point of docs/fault-points.md
 *       action: crash                   # required: crash | error | drop | duplicate | delay
 *       occurrence: 1                   # optional: that hit alone (default: every hit)
 *       breaks: [order_atomicity, no_pending_orders]   # required: invariants it may break
 *       reason: >                       # required: why that is what memory mode does
 *         ...
 *
 * A cell's broken invariant is expected when one entry that matches the
 * cell (mode, service, instance, point, action, occurrence) lists it.
 */
#ifndef LESSONS_H
#define LESSONS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct lesson {
    char *mode;              /* "memory"                                            */
    char *service;
    int instance;            /* -1: any                                             */
    char *point;
    char *action;            /* crash | error | drop | duplicate | delay             */
    unsigned long long occurrence; /* 0: any hit                                    */
    char **breaks;
    size_t n_breaks;
    char *reason;
    int line;
    size_t cells;            /* cells it explained (the caller counts)               */
} lesson_t;

typedef struct lessons {
    char *path;
    char *about;
    lesson_t *items;
    size_t n;
} lessons_t;

/* The lessons file of a story: <dir>/<name>.lessons.yaml for <dir>/<name>.yaml (or .yml). */
void lessons_path_of(char *out, size_t cap, const char *story_path);

/*
 * Loads and validates a lessons file. 0 and *out (free with lessons_free),
 * 1 when there is no such file (*out is an empty list), -1 with "file:line:
 * reason" in err for the first problem.
 */
int lessons_load(lessons_t **out, const char *path, char *err, size_t errcap);
void lessons_free(lessons_t *l);

/* The first entry that matches the cell and lists `invariant`, or NULL. */
lesson_t *lessons_find(const lessons_t *l, const char *mode, const char *service, int instance, const char *point,
                       const char *action, unsigned long long occurrence, const char *invariant);

#endif
