/*
 * bench_client.c -- timing calls of conversions.inches_to_cm.
 *
 * A call is one natomic_request() (pack, publish, wait for the reply,
 * decode), timed by bench_load.c. Latency: one thread, one call at a time,
 * median and 99th percentile after untimed warm-up calls that fill the
 * caches, the SQLite page cache and nats.c's response mux.
 *
 * Throughput: N threads on one shared connection, each in its own request
 * loop, released together (bench_load.c). One connection stands for one
 * client process with many threads; nats.c multiplexes their replies.
 *
 * Inputs are positive lengths, so every call succeeds, saves one row and
 * publishes one event: the caller can check both counts afterwards. A
 * reply whose value is wrong counts as a failure.
 */
#include "bench_client.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <natomic.h>

#include "conversions.pb-c.h"

#define CALL_TIMEOUT_MS 5000
#define CM_PER_INCH 2.54

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

/* bench_call_fn: the i-th input on the connection `arg`. */
static int call_input(void *arg, int i)
{
    return call_once(arg, input(i));
}

int bench_latency_run(bench_latency_t *out, natsConnection *nc, int warmup, int calls)
{
    return bench_load_latency(out, "natomic-bench", call_input, nc, warmup, calls);
}

int bench_throughput_run(double *calls_per_s, natsConnection *nc, int clients, int warmup, int calls)
{
    return bench_load_throughput(calls_per_s, "natomic-bench", call_input, nc, clients, warmup, calls);
}
