/*
 * matrix.h -- the explorer's page (faultinject/explore/): per story, a
 * matrix of every fault point hit (rows: instance, point, hit) against
 * every action in every mode (columns), each cell saying how the story
 * ended when that fault, alone, hit there -- consistent, an expected
 * violation (a memory-mode lesson), or a violation -- and linking to that
 * replay's own page (report_write) with its sequence diagram. Then the
 * lessons, with their reasons, and the violations. One self-contained
 * HTML file: inline CSS, no script, nothing from the network.
 */
#ifndef MATRIX_H
#define MATRIX_H

#include <stddef.h>

typedef enum matrix_verdict {
    MATRIX_NONE,        /* nothing to explore: the point defines no such action, or this
                           mode never hit that point there                                */
    MATRIX_CONSISTENT,
    MATRIX_EXPECTED,    /* broke invariants a lesson of the story names                   */
    MATRIX_VIOLATION,
    MATRIX_NOT_RUN      /* interrupted, or the time limit came first                      */
} matrix_verdict_t;

typedef struct matrix_row {
    const char *instance;          /* "orders-0"                                           */
    const char *point;
    unsigned long long occurrence; /* the point's hit number in that instance's process    */
} matrix_row_t;

typedef struct matrix_cell {
    size_t row, action, mode;      /* indexes into the story's rows, actions and modes      */
    matrix_verdict_t verdict;
    const char *href;              /* its replay's page, relative to the matrix page; NULL   */
    const char *note;              /* the tooltip: what broke and why, or how it settled     */
} matrix_cell_t;

typedef struct matrix_lesson {
    const char *what;              /* "memory: orders, orders/create_order/after_reserve, crash";
                                      several such lines ('\n') when they share the reason   */
    const char *breaks;            /* "order_atomicity, no_pending_orders"                  */
    const char *reason;
    size_t cells;                  /* cells it explained                                    */
} matrix_lesson_t;

/* A page linked from a story's section: "clean run, memory mode: consistent, 23 hits". */
typedef struct matrix_link {
    const char *text;
    const char *href;              /* relative to the matrix page                           */
} matrix_link_t;

typedef struct matrix_story {
    const char *title;             /* "saga/confirmed-order"                                */
    const char *path;              /* the story's file                                      */
    const char *about;
    const char *lessons_path;      /* NULL: none                                            */
    const char *const *actions;
    size_t n_actions;
    const char *const *modes;
    size_t n_modes;
    const matrix_row_t *rows;
    size_t n_rows;
    const matrix_cell_t *cells;    /* any order; a (row, action, mode) missing is NONE      */
    size_t n_cells;
    const matrix_lesson_t *lessons;
    size_t n_lessons;
    const char *const *notes;      /* lines said under the title (the delay used, ...)      */
    size_t n_notes;
    const matrix_link_t *links;    /* pages linked under the notes (the clean runs)         */
    size_t n_links;
} matrix_story_t;

typedef struct matrix_page {
    const char *command;           /* the command line that made it                        */
    double duration_s;
    int jobs;
    const matrix_story_t *stories;
    size_t n_stories;
} matrix_page_t;

/* Writes the page to `path` (a temporary file renamed over it). 0, or -1 with err. */
int matrix_write(const char *path, const matrix_page_t *page, char *err, size_t errcap);

#endif
