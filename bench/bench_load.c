/*
 * bench_load.c -- timing calls, one at a time and concurrently.
 *
 * Latency: one thread, one call at a time, each timed alone with
 * CLOCK_MONOTONIC around the call. The figures are the median and the 99th
 * percentile of those durations, after untimed warm-up calls that fill the
 * caches on both sides.
 *
 * Throughput: N threads, each in its own request loop (a call, wait for
 * its reply, the next call), drawing call numbers from one atomic counter
 * so that exactly `calls` calls are made whatever the scheduling. The
 * threads are created first and wait; one broadcast releases them all,
 * and the clock runs from that release to the last reply, so thread
 * creation is not timed. The warm-up is a phase of its own, the same way.
 * A timed load (bench_load_timed) is the same with a deadline as well: no
 * call starts after it, the calls in flight finish, and the count made is
 * what the counter handed out.
 *
 * Failure: the first failed call (or a stop, bench_budget.h) marks the
 * phase failed; every thread leaves before its next call, and the phase
 * gives no figure. A benchmark of failures measures nothing.
 */
#include "bench_load.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_budget.h"
#include "bench_stats.h"

int bench_load_latency(bench_latency_t *out, const char *program, bench_call_fn *call, void *arg, int warmup,
                       int calls)
{
    if (calls < 1)
        return -1;
    double *us = malloc((size_t)calls * sizeof *us);
    if (us == NULL) {
        fprintf(stderr, "%s: out of memory for %d samples\n", program, calls);
        return -1;
    }
    int rc = 0;
    for (int i = 0; rc == 0 && i < warmup; i++)
        if (bench_should_stop() || call(arg, i) != 0)
            rc = -1;
    for (int i = 0; rc == 0 && i < calls; i++) {
        if (bench_should_stop()) {
            rc = -1;
            break;
        }
        int64_t t0 = bench_now_ns();
        if (call(arg, i) != 0)
            rc = -1;
        us[i] = (double)(bench_now_ns() - t0) / 1000.0;
    }
    if (rc == 0) {
        bench_stats_sort(us, calls);
        out->median_us = bench_stats_percentile(us, calls, 50.0);
        out->p99_us = bench_stats_percentile(us, calls, 99.0);
    }
    free(us);
    return rc;
}

/* Shared by the threads of one throughput phase. */
typedef struct load {
    bench_call_fn *call;
    void *arg;
    int total;
    int64_t deadline_ns; /* no call starts after it (CLOCK_MONOTONIC); 0: none */
    atomic_int next;
    atomic_bool failed;
    pthread_mutex_t mu; /* guards `go`: the common start */
    pthread_cond_t cond;
    bool go;
} load_t;

static void *client_main(void *p)
{
    load_t *load = p;
    pthread_mutex_lock(&load->mu);
    while (!load->go)
        pthread_cond_wait(&load->cond, &load->mu);
    pthread_mutex_unlock(&load->mu);
    while (!atomic_load(&load->failed)) {
        if (bench_should_stop()) {
            atomic_store(&load->failed, true);
            break;
        }
        if (load->deadline_ns != 0 && bench_now_ns() >= load->deadline_ns)
            break; /* time is up: not a failure */
        int i = atomic_fetch_add(&load->next, 1);
        if (i >= load->total)
            break;
        if (load->call(load->arg, i) != 0)
            atomic_store(&load->failed, true);
    }
    return NULL;
}

/*
 * `total` calls from `clients` threads, none started `seconds` after their
 * common start when `seconds` > 0; the seconds they took, or a negative
 * value on failure. *made (may be NULL) is how many calls were made.
 */
static double run_load(const char *program, bench_call_fn *call, void *arg, int clients, int total, double seconds,
                       int *made)
{
    load_t load = {.call = call, .arg = arg, .total = total, .go = false};
    atomic_init(&load.next, 0);
    atomic_init(&load.failed, false);
    pthread_t *threads = calloc((size_t)clients, sizeof *threads);
    if (threads == NULL) {
        fprintf(stderr, "%s: out of memory for %d clients\n", program, clients);
        return -1.0;
    }
    pthread_mutex_init(&load.mu, NULL);
    pthread_cond_init(&load.cond, NULL);
    int started = 0;
    for (; started < clients; started++)
        if (pthread_create(&threads[started], NULL, client_main, &load) != 0)
            break;
    if (started < clients) {
        /* The ones already waiting are released into a failed run and leave at once. */
        fprintf(stderr, "%s: could start only %d of %d client threads\n", program, started, clients);
        atomic_store(&load.failed, true);
    }
    pthread_mutex_lock(&load.mu);
    load.go = true;
    int64_t t0 = bench_now_ns();
    /* Set under the lock the threads take before they read it. */
    load.deadline_ns = seconds > 0 ? t0 + (int64_t)(seconds * 1e9) : 0;
    pthread_cond_broadcast(&load.cond);
    pthread_mutex_unlock(&load.mu);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    int64_t t1 = bench_now_ns();
    free(threads);
    pthread_cond_destroy(&load.cond);
    pthread_mutex_destroy(&load.mu);
    if (atomic_load(&load.failed))
        return -1.0;
    if (made != NULL) {
        int next = atomic_load(&load.next);
        *made = next < total ? next : total;
    }
    return (double)(t1 - t0) / 1e9;
}

int bench_load_throughput(double *calls_per_s, const char *program, bench_call_fn *call, void *arg, int clients,
                          int warmup, int calls)
{
    if (clients < 1 || calls < 1)
        return -1;
    if (warmup > 0 && run_load(program, call, arg, clients, warmup, 0, NULL) < 0)
        return -1;
    double seconds = run_load(program, call, arg, clients, calls, 0, NULL);
    if (seconds < 0)
        return -1;
    *calls_per_s = seconds > 0 ? (double)calls / seconds : 0.0;
    return 0;
}

int bench_load_timed(int *made, double *elapsed_s, const char *program, bench_call_fn *call, void *arg, int clients,
                     int max_calls, double seconds)
{
    if (clients < 1 || max_calls < 1 || !(seconds > 0))
        return -1;
    int n = 0;
    double took = run_load(program, call, arg, clients, max_calls, seconds, &n);
    if (took < 0)
        return -1;
    *made = n;
    *elapsed_s = took;
    return 0;
}
