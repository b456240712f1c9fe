/*
 * bench_stats.c -- percentiles and the sign-test interval of a median.
 *
 * The interval: for n independent samples of any continuous distribution,
 * the median lies between the k-th smallest and the k-th largest sample
 * with probability 1 - 2 P(Binomial(n, 1/2) <= k - 1). With 5 rounds the
 * widest choice (min..max) covers 93.75%; with 60 rounds the 23rd and
 * 38th values cover 95%.
 */
#include "bench_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_stats_sort(double *v, int n)
{
    if (n > 1)
        qsort(v, (size_t)n, sizeof *v, compare_doubles);
}

double bench_stats_percentile(const double *sorted, int n, double p)
{
    double rank = p / 100.0 * (double)(n - 1);
    int lo = (int)floor(rank);
    int hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (rank - (double)lo) * (sorted[hi] - sorted[lo]);
}

double bench_stats_median(const double *v, int n)
{
    double *copy = malloc((size_t)n * sizeof *copy);
    if (copy == NULL)
        return NAN;
    memcpy(copy, v, (size_t)n * sizeof *copy);
    bench_stats_sort(copy, n);
    double m = bench_stats_percentile(copy, n, 50.0);
    free(copy);
    return m;
}

/* 1 - 2 P(Binomial(n, 1/2) <= k - 1): how often [x(k), x(n-k+1)] holds the median. */
static double sign_interval_coverage(int n, int k)
{
    double p = ldexp(1.0, -n), tail = 0.0; /* p = C(n, j) / 2^n, from j = 0 */
    for (int j = 0; j < k; j++) {
        tail += p;
        p = p * (double)(n - j) / (double)(j + 1);
    }
    return 1.0 - 2.0 * tail;
}

void bench_stats_median_interval(double *v, int n, double *lo, double *hi, double *coverage)
{
    bench_stats_sort(v, n);
    int k = 1;
    while (k + 1 <= n / 2 && sign_interval_coverage(n, k + 1) >= 0.95)
        k++;
    *lo = v[k - 1];
    *hi = v[n - k];
    *coverage = sign_interval_coverage(n, k);
}
