/*
 * bench_budget.c -- when a benchmark run must stop.
 *
 * Two causes, checked in this order: a signal (SIGINT, SIGTERM) sets a
 * sig_atomic_t flag and nothing else, so the handler stays
 * async-signal-safe; the deadline is an atomic CLOCK_MONOTONIC time read
 * by any thread. Nothing is interrupted: the client threads, the waits and
 * the rounds ask bench_should_stop() between calls, so a stop lets the
 * calls in flight finish and the program stop what it started.
 */
#include "bench_budget.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_requested;
static _Atomic int64_t deadline_ns; /* 0: none */

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

void bench_budget_start(int max_seconds)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    atomic_store(&deadline_ns, bench_now_ns() + (int64_t)max_seconds * 1000000000);
}

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool bench_should_stop(void)
{
    if (stop_requested)
        return true;
    int64_t d = atomic_load(&deadline_ns);
    return d != 0 && bench_now_ns() >= d;
}

const char *bench_stop_reason(void)
{
    if (stop_requested)
        return "interrupted by a signal";
    return bench_should_stop() ? "time budget (--max-seconds) spent" : NULL;
}

void bench_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
