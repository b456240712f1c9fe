/*
 * bench_client.h -- the client side of the benchmark: calls
 * conversions.inches_to_cm with natomic_request() and times them
 * (bench_load.h).
 *
 * The same code calls both servers, so only the server differs between
 * the figures. Every run stops at the first failed call (a benchmark of
 * failures measures nothing) and when the run's budget says so
 * (bench_should_stop(), bench_budget.h).
 */
#ifndef BENCH_CLIENT_H
#define BENCH_CLIENT_H

#include <nats/nats.h>
#include <stdbool.h>

#include "bench_load.h"

#define BENCH_SUBJECT "conversions.inches_to_cm"

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
