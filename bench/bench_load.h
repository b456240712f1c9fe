/*
 * bench_load.h -- the two ways both benchmarks time calls: one after
 * another (latency) and from concurrent client threads (throughput). What a
 * call is -- inches_to_cm, create_order -- is the caller's, given as a
 * bench_call_fn; the timing, the warm-up, the threads and the stop
 * (bench_should_stop) are the same for every program.
 */
#ifndef BENCH_LOAD_H
#define BENCH_LOAD_H

/* Latency of sequential calls, microseconds. */
typedef struct bench_latency {
    double median_us;
    double p99_us;
} bench_latency_t;

/*
 * One call. `arg` is the one given to the run, `i` numbers the call within
 * its phase (0, 1, ...). Returns 0 when the call succeeded, else -1 after
 * saying why on stderr. Under bench_load_throughput() it runs on several
 * threads at once, with the same `arg`.
 */
typedef int bench_call_fn(void *arg, int i);

/*
 * `warmup` untimed calls, then `calls` sequential calls, each timed alone.
 * 0 with *out filled (median and 99th percentile), or -1 (message on
 * stderr, starting with `program`; *out untouched) at the first failed
 * call or a stop.
 */
int bench_load_latency(bench_latency_t *out, const char *program, bench_call_fn *call, void *arg, int warmup,
                       int calls);

/*
 * `clients` threads together make `warmup` untimed calls, then `calls`
 * timed ones (each thread takes the next call number until none is left).
 * *calls_per_s is `calls` over the time from their common start to the
 * last reply. 0, or -1 (message on stderr, starting with `program`;
 * *calls_per_s untouched) at the first failed call or a stop.
 */
int bench_load_throughput(double *calls_per_s, const char *program, bench_call_fn *call, void *arg, int clients,
                          int warmup, int calls);

/*
 * `clients` threads make calls, as bench_load_throughput() does, until
 * `seconds` (> 0) have passed since their common start or `max_calls`
 * were handed out, whichever comes first; a call in flight at the deadline
 * finishes. 0 with *made (the calls made) and *elapsed_s (from the common
 * start to the last reply) set, or -1 (message on stderr, starting with
 * `program`; both untouched) at the first failed call or a stop.
 */
int bench_load_timed(int *made, double *elapsed_s, const char *program, bench_call_fn *call, void *arg, int clients,
                     int max_calls, double seconds);

#endif
