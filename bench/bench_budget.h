/*
 * bench_budget.h -- the run budget of a benchmark program: a stop asked
 * for by SIGINT or SIGTERM, or a deadline on CLOCK_MONOTONIC (the
 * program's --max-seconds). Calls in flight finish; everything that loops
 * or waits asks bench_should_stop() before going on.
 */
#ifndef BENCH_BUDGET_H
#define BENCH_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Starts the budget: SIGINT and SIGTERM, from now on, only ask for a stop
 * (their handler is async-signal-safe), and the run stops `max_seconds`
 * from now. Call once, from main, before any thread is started.
 */
void bench_budget_start(int max_seconds);

/* True once a stop was asked for or the deadline passed. */
bool bench_should_stop(void);

/* Why the run stops: "interrupted by a signal", "time budget (--max-seconds) spent", or NULL while it may go on. */
const char *bench_stop_reason(void);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t bench_now_ns(void);

/* Sleeps `ms` milliseconds (resumes after signals). */
void bench_sleep_ms(int ms);

#endif
