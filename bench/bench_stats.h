/*
 * bench_stats.h -- the few statistics both benchmark programs print:
 * sorting, percentiles, the median, and a distribution-free interval for
 * the median (the sign-test interval) that says how much of a ratio
 * between rounds is the machine's noise.
 */
#ifndef BENCH_STATS_H
#define BENCH_STATS_H

/* Sorts v[0..n) in ascending order. */
void bench_stats_sort(double *v, int n);

/*
 * The p-th percentile (0..100) of sorted[0..n), n >= 1, linear between
 * the closest ranks (p 50 of an even count is the mean of the middle two).
 */
double bench_stats_percentile(const double *sorted, int n, double p);

/* The median of v[0..n), n >= 1, without changing v; NAN when out of memory. */
double bench_stats_median(const double *v, int n);

/*
 * The sign-test interval of the median of v[0..n), n >= 2 (sorts v): the
 * order statistics k and n-k+1, k the largest rank whose interval holds
 * the median with probability at least 95% whatever the distribution
 * (k = 1, min..max, when n is too small for 95%; *coverage then says
 * how much less it holds).
 */
void bench_stats_median_interval(double *v, int n, double *lo, double *hi, double *coverage);

#endif
