/*
 * saga_memory.h -- the saga benchmark's memory measurement (issue 10,
 * item 4): the resident set of every process of a variant under a long
 * concurrent load, sampled once a second and judged for growth, and the
 * heap bytes and blocks each service allocates per saga, counted by
 * valgrind's DHAT over two sessions of different lengths.
 */
#ifndef SAGA_MEMORY_H
#define SAGA_MEMORY_H

#include <jansson.h>
#include <stdbool.h>

#include "saga_session.h"

typedef struct saga_memory_config {
    bool rss;                            /* the RSS part                                     */
    bool dhat;                           /* the allocations part                             */
    int seconds;                         /* of the measured load, after its warm-up           */
    int clients;                         /* concurrent clients of that load                  */
    int sagas[2];                        /* sequential sagas of the two DHAT sessions, a < b */
    bool variant_on[SAGA_VARIANT_COUNT];
} saga_memory_config_t;

typedef struct saga_memory saga_memory_t;

/* A measurement to run with `cfg` (copied). 0 with *out set, or -1 (out of memory, message printed). */
int saga_memory_new(saga_memory_t **out, const saga_memory_config_t *cfg);

/* NULL is a no-op. */
void saga_memory_free(saga_memory_t *m);

/*
 * For each variant switched on, in saga_variant_t's order: the RSS part,
 * then the DHAT part, each in sessions of its own; progress on stderr. The
 * DHAT part is skipped (and says why) when valgrind cannot be found. 0, or
 * -1 when a measurement failed or the run was stopped (message printed).
 */
int saga_memory_run(saga_memory_t *m);

/* Prints the tables on stdout. Call once, after saga_memory_run returned 0. */
void saga_memory_print(const saga_memory_t *m);

/* Invariant checks made and broken. */
int saga_memory_checks(const saga_memory_t *m);
int saga_memory_checks_failed(const saga_memory_t *m);

/* Every figure and verdict as a new JSON object (the "memory" of the run's file); NULL when out of memory. */
json_t *saga_memory_json(const saga_memory_t *m);

#endif
