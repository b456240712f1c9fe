/*
 * saga_compare.h -- the saga benchmark's comparison: the order saga
 * answered four ways (saga_variant_t: by hand, the bare chain, libnatomic
 * in memory and in durable mode), measured in interleaved rounds --
 * latency of sequential calls, throughput at several numbers of
 * concurrent clients, the invariants checked after each phase -- then
 * judged against the hand-written saga (DESIGN §5) and reported as a
 * table, a JSON object and an SVG chart.
 */
#ifndef SAGA_COMPARE_H
#define SAGA_COMPARE_H

#include <jansson.h>
#include <stdbool.h>

#include "saga_session.h"

#define SAGA_MAX_LEVELS 8 /* numbers of concurrent clients measured */

typedef struct saga_compare_config {
    int rounds;                     /* measurements per variant, interleaved       */
    int calls;                      /* sequential orders timed for latency         */
    int warmup;                     /* untimed orders before each phase            */
    int throughput_calls;           /* orders timed at each number of clients      */
    int clients[SAGA_MAX_LEVELS];   /* ascending                                   */
    int n_levels;
    bool variant_on[SAGA_VARIANT_COUNT];
} saga_compare_config_t;

typedef struct saga_compare saga_compare_t;

/* A comparison to run with `cfg` (copied). 0 with *out set, or -1 (out of memory, message printed). */
int saga_compare_new(saga_compare_t **out, const saga_compare_config_t *cfg);

/* NULL is a no-op. */
void saga_compare_free(saga_compare_t *c);

/*
 * Every round: each variant switched on, in saga_variant_t's order, in a
 * session of its own (saga_session.c); progress on stderr. 0, or -1 when a
 * measurement failed or the run was stopped (message printed; the figures
 * so far are not judged).
 */
int saga_compare_run(saga_compare_t *c);

/* Judges the completed run and prints the tables on stdout. Call once, after saga_compare_run returned 0. */
void saga_compare_print(saga_compare_t *c);

/* Invariant checks made and broken (after saga_compare_print). */
int saga_compare_checks(const saga_compare_t *c);
int saga_compare_checks_failed(const saga_compare_t *c);

/* Every figure, ratio, target and check as a new JSON object (after saga_compare_print); NULL when out of memory. */
json_t *saga_compare_json(const saga_compare_t *c);

/* The chart of throughput against clients, one line per variant, to `path`. 0, or -1 with a message. */
int saga_compare_plot(const saga_compare_t *c, const char *path, const char *program);

#endif
