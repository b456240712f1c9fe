/*
 * bench_client.c -- timing calls of conversions.inches_to_cm.
 *
 * Latency: one thread, one call at a time, each timed alone with
 * CLOCK_MONOTONIC around natomic_request() (pack, publish, wait for the
 * reply, decode). The figures are the median and the 99th percentile of
 * those durations, after untimed warm-up calls that fill the caches, the
 * SQLite page cache and nats.c's response mux.
 *
 * Throughput: N threads on one shared connection, each in its own request
 * loop (a call, wait for its reply, the next call), drawing call numbers
 * from one atomic counter so that exactly `calls` calls are made whatever
 * the scheduling. The threads are created first and wait; one broadcast
 * releases them all, and the clock runs from that release to the last
 * reply, so thread creation is not timed. One connection stands for one
 * client process with many threads; nats.c multiplexes their replies.
 *
 * Inputs are positive lengths, so every call succeeds, saves one row and
 * publishes one event: the caller can check both counts afterwards. A
 * reply whose value is wrong counts as a failure.
 */
#include "bench_client.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <natomic.h>

#include "conversions.pb-c.h"

#define CALL_TIMEOUT_MS 5000
#define CM_PER_INCH 2.54

static volatile sig_atomic_t stop_requested;
static _Atomic int64_t deadline_ns;

void bench_client_request_stop(void)
{
    stop_requested = 1;
}

void bench_client_set_deadline(int64_t when_ns)
{
    atomic_store(&deadline_ns, when_ns);
}

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool bench_client_should_stop(void)
{
    if (stop_requested)
        return true;
    int64_t d = atomic_load(&deadline_ns);
    return d != 0 && bench_now_ns() >= d;
}

const char *bench_client_stop_reason(void)
{
    if (stop_requested)
        return "interrupted by a signal";
    return bench_client_should_stop() ? "time budget (--max-seconds) spent" : NULL;
}

/* The i-th input: positive lengths between 1 and 250.75 inches. */
static double input(int i)
{
    return 1.0 + (double)(i % 1000) * 0.25;
}

/* One call of inches_to_cm; 0 when the reply is right, else -1 with a message on stderr. */
static int call_once(natsConnection *nc, double inches)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = inches;
    ProtobufCMessage *reply = NULL;
    natomic_call_info_t info;
    natomic_status_t st = natomic_request(&reply, nc, BENCH_SUBJECT, &req.base,
                                          &conversions__inches_to_cm_reply__descriptor, CALL_TIMEOUT_MS, &info);
    if (st != NATOMIC_OK) {
        fprintf(stderr, "natomic-bench: call with %g inches failed: %s (%s %s)\n", inches, natomic_strerror(st),
                info.type, info.message);
        return -1;
    }
    double cm = ((Conversions__InchesToCmReply *)reply)->cm;
    protobuf_c_message_free_unpacked(reply, NULL);
    if (fabs(cm - inches * CM_PER_INCH) > 1e-9 * fabs(inches * CM_PER_INCH)) {
        fprintf(stderr, "natomic-bench: %g inches came back as %g cm\n", inches, cm);
        return -1;
    }
    return 0;
}

bool bench_check_refusal(natsConnection *nc)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = -1.0;
    ProtobufCMessage *reply = NULL;
    natomic_call_info_t info;
    natomic_status_t st = natomic_request(&reply, nc, BENCH_SUBJECT, &req.base,
                                          &conversions__inches_to_cm_reply__descriptor, CALL_TIMEOUT_MS, &info);
    if (st == NATOMIC_OK) {
        protobuf_c_message_free_unpacked(reply, NULL);
        fprintf(stderr, "natomic-bench: a negative length was accepted\n");
        return false;
    }
    if (st != NATOMIC_EBUSINESS || info.code != 422 || strcmp(info.type, "InvalidLength") != 0) {
        fprintf(stderr, "natomic-bench: a negative length got %s, code %d, type '%s' (expected 422 InvalidLength)\n",
                natomic_status_name(st), info.code, info.type);
        return false;
    }
    return true;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of sorted[0..n), linear between closest ranks. */
static double percentile(const double *sorted, int n, double p)
{
    double rank = p / 100.0 * (double)(n - 1);
    int lo = (int)floor(rank);
    int hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (rank - (double)lo) * (sorted[hi] - sorted[lo]);
}

int bench_latency_run(bench_latency_t *out, natsConnection *nc, int warmup, int calls)
{
    if (calls < 1)
        return -1;
    double *us = malloc((size_t)calls * sizeof *us);
    if (us == NULL) {
        fprintf(stderr, "natomic-bench: out of memory for %d samples\n", calls);
        return -1;
    }
    int rc = 0;
    for (int i = 0; rc == 0 && i < warmup; i++) {
        if (bench_client_should_stop() || call_once(nc, input(i)) != 0)
            rc = -1;
    }
    for (int i = 0; rc == 0 && i < calls; i++) {
        if (bench_client_should_stop()) {
            rc = -1;
            break;
        }
        int64_t t0 = bench_now_ns();
        if (call_once(nc, input(i)) != 0)
            rc = -1;
        us[i] = (double)(bench_now_ns() - t0) / 1000.0;
    }
    if (rc == 0) {
        qsort(us, (size_t)calls, sizeof *us, compare_doubles);
        out->median_us = percentile(us, calls, 50.0);
        out->p99_us = percentile(us, calls, 99.0);
    }
    free(us);
    return rc;
}

/* Shared by the threads of one throughput phase. */
typedef struct load {
    natsConnection *nc;
    int total;
    atomic_int next;
    atomic_bool failed;
    pthread_mutex_t mu; /* guards `go`: the common start */
    pthread_cond_t cond;
    bool go;
} load_t;

static void *client_main(void *arg)
{
    load_t *load = arg;
    pthread_mutex_lock(&load->mu);
    while (!load->go)
        pthread_cond_wait(&load->cond, &load->mu);
    pthread_mutex_unlock(&load->mu);
    while (!atomic_load(&load->failed)) {
        if (bench_client_should_stop()) {
            atomic_store(&load->failed, true);
            break;
        }
        int i = atomic_fetch_add(&load->next, 1);
        if (i >= load->total)
            break;
        if (call_once(load->nc, input(i)) != 0)
            atomic_store(&load->failed, true);
    }
    return NULL;
}

/* `total` calls from `clients` threads; the seconds they took, or a negative value on failure. */
static double run_load(natsConnection *nc, int clients, int total)
{
    load_t load = {.nc = nc, .total = total, .go = false};
    atomic_init(&load.next, 0);
    atomic_init(&load.failed, false);
    pthread_t *threads = calloc((size_t)clients, sizeof *threads);
    if (threads == NULL) {
        fprintf(stderr, "natomic-bench: out of memory for %d clients\n", clients);
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
        fprintf(stderr, "natomic-bench: could start only %d of %d client threads\n", started, clients);
        atomic_store(&load.failed, true);
    }
    pthread_mutex_lock(&load.mu);
    load.go = true;
    pthread_cond_broadcast(&load.cond);
    int64_t t0 = bench_now_ns();
    pthread_mutex_unlock(&load.mu);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    int64_t t1 = bench_now_ns();
    free(threads);
    pthread_cond_destroy(&load.cond);
    pthread_mutex_destroy(&load.mu);
    if (atomic_load(&load.failed))
        return -1.0;
    return (double)(t1 - t0) / 1e9;
}

int bench_throughput_run(double *calls_per_s, natsConnection *nc, int clients, int warmup, int calls)
{
    if (clients < 1 || calls < 1)
        return -1;
    if (warmup > 0 && run_load(nc, clients, warmup) < 0)
        return -1;
    double seconds = run_load(nc, clients, calls);
    if (seconds < 0)
        return -1;
    *calls_per_s = seconds > 0 ? (double)calls / seconds : 0.0;
    return 0;
}
