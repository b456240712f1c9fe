/*
 * bench_client.h -- the client side of the benchmark: calls
 * conversions.inches_to_cm with natomic_request() and times them.
 *
 * The same code calls both servers, so only the server differs between
 * the figures. Every run stops at the first failed call (a benchmark of
 * failures measures nothing) and when bench_client_should_stop() says so.
 */
#ifndef BENCH_CLIENT_H
#define BENCH_CLIENT_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stdint.h>

#define BENCH_SUBJECT "conversions.inches_to_cm"

/* Latency of sequential calls, microseconds. */
typedef struct bench_latency {
    double median_us;
    double p99_us;
} bench_latency_t;

/*
 * Makes the run stop early: set by a signal handler (async-signal-safe)
 * or when the run's time budget is spent. Calls in flight finish.
 */
void bench_client_request_stop(void);
/* Sets the absolute CLOCK_MONOTONIC time (ns) after which runs stop; 0: none. */
void bench_client_set_deadline(int64_t deadline_ns);
/* True once a stop was requested or the deadline passed. */
bool bench_client_should_stop(void);
/* Why the run stops: "interrupted by a signal", "time budget spent", or NULL while it may go on. */
const char *bench_client_stop_reason(void);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t bench_now_ns(void);

/*
 * One call with a negative length: true when the server refused it with
 * error type InvalidLength (422), as both servers must.
 */
bool bench_check_refusal(natsConnection *nc);

/*
 * `warmup` untimed calls, then `calls` sequential calls on `nc`, each timed
 * alone. 0 with *out filled, or -1 (message on stderr, *out untouched).
 */
int bench_latency_run(bench_latency_t *out, natsConnection *nc, int warmup, int calls);

/*
 * `clients` threads share `nc` and together make `warmup` untimed calls,
 * then `calls` timed ones (each thread takes the next call number until
 * none is left). *calls_per_s is calls divided by the time from the common
 * start to the last reply. 0, or -1 (message on stderr).
 */
int bench_throughput_run(double *calls_per_s, natsConnection *nc, int clients, int warmup, int calls);

#endif
