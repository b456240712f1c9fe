/*
 * saga_plot.c -- the saga benchmark's chart, as SVG written with fprintf.
 *
 * Layout, in SVG user units (the file scales): a 760 x 470 canvas, the
 * plot area from (80, 70) to (590, 400), the legend to its right, the
 * title above, the axis labels below and to the left. The x axis is the
 * number of concurrent clients on a log scale (1, 8, 32, 128 are then
 * evenly apart, as they are on the log of the load) unless the values
 * span less than 4x; the y axis is linear from 0 to a round number above
 * the highest value or whisker, with 4 to 8 grid lines at 1, 2 or 5 times
 * a power of ten. Each series is a polyline of its points (broken where a
 * value is missing), a dot per point with its value as a tooltip (<title>),
 * and, when given, a whisker from `lo` to `hi` -- the spread over rounds.
 *
 * Invariants: every coordinate written is finite (missing values are
 * skipped, a degenerate axis gets a unit range); every text is
 * XML-escaped. Failure: -1 when the file cannot be opened or written,
 * after one line on stderr; a half-written file may be left behind.
 */
#include "saga_plot.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define WIDTH 760
#define HEIGHT 470
#define LEFT 80.0
#define RIGHT 590.0
#define TOP 70.0
#define BOTTOM 400.0
#define X_PAD 0.06 /* of the axis, kept free at each end so dots are not cut */

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
#define N_COLORS (sizeof colors / sizeof colors[0])

/* Writes `text` XML-escaped. */
static void put_text(FILE *f, const char *text)
{
    for (const char *p = text != NULL ? text : ""; *p; p++) {
        switch (*p) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*p, f);
        }
    }
}

/* A round step for about 5 grid lines up to `max` (> 0): 1, 2 or 5 times a power of ten. */
static double grid_step(double max)
{
    double raw = max / 5.0;
    double power = pow(10.0, floor(log10(raw)));
    double m = raw / power;
    return power * (m <= 1.0 ? 1.0 : m <= 2.0 ? 2.0 : m <= 5.0 ? 5.0 : 10.0);
}

typedef struct axes {
    bool log_x;
    double x_lo, x_hi; /* in axis units: log(x) or x */
    double y_max, y_step;
} axes_t;

static double x_pos(const axes_t *a, double x)
{
    double u = a->log_x ? log(x) : x;
    double t = a->x_hi > a->x_lo ? (u - a->x_lo) / (a->x_hi - a->x_lo) : 0.5;
    return LEFT + (RIGHT - LEFT) * (X_PAD + (1.0 - 2.0 * X_PAD) * t);
}

static double y_pos(const axes_t *a, double y)
{
    return BOTTOM - (BOTTOM - TOP) * (y / a->y_max);
}

static axes_t make_axes(const saga_plot_t *p)
{
    axes_t a = {0};
    double x0 = p->n_x > 0 ? p->x[0] : 1, x1 = p->n_x > 0 ? p->x[p->n_x - 1] : 1;
    a.log_x = x0 > 0 && x1 / x0 >= 4.0;
    a.x_lo = a.log_x ? log(x0) : x0;
    a.x_hi = a.log_x ? log(x1) : x1;
    double max = 0.0;
    for (int s = 0; s < p->n_series; s++) {
        for (int i = 0; i < p->n_x; i++) {
            const saga_plot_series_t *se = &p->series[s];
            if (isfinite(se->y[i]))
                max = fmax(max, se->y[i]);
            if (se->hi != NULL && isfinite(se->hi[i]))
                max = fmax(max, se->hi[i]);
        }
    }
    if (!(max > 0.0))
        max = 1.0;
    a.y_step = grid_step(max);
    a.y_max = ceil(max / a.y_step) * a.y_step;
    if (a.y_max < max * 1.02) /* room above the top dot */
        a.y_max += a.y_step;
    return a;
}

/* "12,345" for a whole figure: easier on the eye than "12345". */
static void put_number(FILE *f, double v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t n = strlen(digits);
    for (size_t i = 0; i < n; i++) {
        fputc(digits[i], f);
        size_t left = n - 1 - i;
        if (left > 0 && left % 3 == 0 && digits[i] != '-')
            fputc(',', f);
    }
}

static void draw_frame(FILE *f, const saga_plot_t *p, const axes_t *a)
{
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", WIDTH, HEIGHT);
    fputs("<text x=\"80\" y=\"28\" font-size=\"16\" font-weight=\"bold\">", f);
    put_text(f, p->title);
    fputs("</text>\n", f);
    if (p->subtitle != NULL) {
        fputs("<text x=\"80\" y=\"48\" font-size=\"11\" fill=\"#555\">", f);
        put_text(f, p->subtitle);
        fputs("</text>\n", f);
    }
    for (double y = 0.0; y <= a->y_max + a->y_step / 2; y += a->y_step) {
        double py = y_pos(a, y);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", LEFT, py, RIGHT, py);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">", LEFT - 6, py + 4);
        put_number(f, y);
        fputs("</text>\n", f);
    }
    for (int i = 0; i < p->n_x; i++) {
        double px = x_pos(a, p->x[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#efefef\"/>\n", px, TOP, px, BOTTOM);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%d</text>\n", px, BOTTOM + 16,
                p->x[i]);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>\n", LEFT,
            TOP, RIGHT - LEFT, BOTTOM - TOP);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">", (LEFT + RIGHT) / 2,
            BOTTOM + 40);
    put_text(f, p->x_label);
    fputs(a->log_x ? " (log scale)" : "", f);
    fputs("</text>\n", f);
    fprintf(f, "<text x=\"18\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">",
            (TOP + BOTTOM) / 2, (TOP + BOTTOM) / 2);
    put_text(f, p->y_label);
    fputs("</text>\n", f);
}

static void draw_series(FILE *f, const saga_plot_t *p, const axes_t *a, int s)
{
    const saga_plot_series_t *se = &p->series[s];
    const char *color = colors[(size_t)s % N_COLORS];
    fprintf(f, "<g stroke=\"%s\" fill=\"%s\">\n", color, color);
    /* The line, broken where a value is missing. */
    fputs("<path fill=\"none\" stroke-width=\"2\" d=\"", f);
    bool pen_down = false;
    for (int i = 0; i < p->n_x; i++) {
        if (!isfinite(se->y[i])) {
            pen_down = false;
            continue;
        }
        fprintf(f, "%s%.1f %.1f ", pen_down ? "L" : "M", x_pos(a, p->x[i]), y_pos(a, se->y[i]));
        pen_down = true;
    }
    fputs("\"/>\n", f);
    for (int i = 0; i < p->n_x; i++) {
        if (!isfinite(se->y[i]))
            continue;
        double px = x_pos(a, p->x[i]);
        if (se->lo != NULL && se->hi != NULL && isfinite(se->lo[i]) && isfinite(se->hi[i])) {
            double lo = y_pos(a, se->lo[i]), hi = y_pos(a, se->hi[i]);
            fprintf(f, "<path fill=\"none\" stroke-width=\"1\" d=\"M%.1f %.1f L%.1f %.1f M%.1f %.1f L%.1f %.1f "
                       "M%.1f %.1f L%.1f %.1f\"/>\n",
                    px, lo, px, hi, px - 4, lo, px + 4, lo, px - 4, hi, px + 4, hi);
        }
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\"><title>", px, y_pos(a, se->y[i]));
        put_text(f, se->name);
        fprintf(f, ", %d clients: ", p->x[i]);
        put_number(f, se->y[i]);
        fputs("</title></circle>\n", f);
    }
    double ly = TOP + 10 + 22.0 * s;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke-width=\"2\"/>\n", RIGHT + 20, ly,
            RIGHT + 44, ly);
    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\"/>\n", RIGHT + 32, ly);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" stroke=\"none\" fill=\"#222\">", RIGHT + 52, ly + 4);
    put_text(f, se->name);
    fputs("</text>\n</g>\n", f);
}

int saga_plot_write(const saga_plot_t *plot, const char *path, const char *program)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot write %s: %s\n", program, path, strerror(errno));
        return -1;
    }
    axes_t a = make_axes(plot);
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\">\n",
            WIDTH, HEIGHT, WIDTH, HEIGHT);
    draw_frame(f, plot, &a);
    for (int s = 0; s < plot->n_series; s++)
        draw_series(f, plot, &a, s);
    fputs("</svg>\n", f);
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed) {
        fprintf(stderr, "%s: cannot write %s: %s\n", program, path, strerror(errno));
        return -1;
    }
    return 0;
}
