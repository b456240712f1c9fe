/*
 * saga_plot.h -- a line chart as a standalone SVG file, written by hand:
 * throughput against concurrent clients, one line per variant of the
 * saga benchmark. No plotting tool, no dependency: the file opens in any
 * browser and sits in a report folder beside the JSON it was drawn from.
 */
#ifndef SAGA_PLOT_H
#define SAGA_PLOT_H

/* One line: a value per x (NAN where there is none), and optionally the spread drawn as a whisker. */
typedef struct saga_plot_series {
    const char *name;   /* the legend's text                              */
    const double *y;    /* [n_x]                                          */
    const double *lo;   /* [n_x] or NULL: the whisker's bottom (min over rounds) */
    const double *hi;   /* [n_x] or NULL: its top                         */
} saga_plot_series_t;

typedef struct saga_plot {
    const char *title;
    const char *subtitle;   /* may be NULL */
    const char *x_label;
    const char *y_label;
    const int *x;           /* [n_x], > 0 and ascending: drawn on a log scale when they span 4x or more */
    int n_x;
    const saga_plot_series_t *series;
    int n_series;
} saga_plot_t;

/* Writes the chart to `path` (replacing it). 0, or -1 with a message on stderr naming `program`. */
int saga_plot_write(const saga_plot_t *plot, const char *path, const char *program);

#endif
