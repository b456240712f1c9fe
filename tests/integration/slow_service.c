/*
 * slow_service -- a helper of test_runtime.c: the natomic service "slow",
 * whose one method `slow.echo` sleeps (--sleep-ms, default 400) and then
 * replies InchesToCmReply{cm = the request's inches}.
 *
 * It runs under natomic_service_run(), as a real service does, so SIGTERM
 * stops it the real way: the test checks that calls in flight still get
 * their replies and that the process exits 0.
 *
 *     slow_service --nats URL [--sleep-ms N]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <natomic.h>

#include "conversions.pb-c.h"

static natomic_status_t echo(natomic_ctx_t *ctx, const ProtobufCMessage *request, ProtobufCMessage *reply,
                             void *closure)
{
    int ms = *(const int *)closure;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    ((Conversions__InchesToCmReply *)reply)->cm = ((const Conversions__InchesToCmRequest *)request)->inches;
    return NATOMIC_OK;
}

int main(int argc, char **argv)
{
    const char *url = natomic_default_url();
    static int sleep_ms = 400;
    static const struct option longopts[] = {
        {"nats", required_argument, NULL, 'n'}, {"sleep-ms", required_argument, NULL, 's'}, {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'n') {
            url = optarg;
        } else if (c == 's' && atoi(optarg) >= 0 && atoi(optarg) <= 60000) {
            sleep_ms = atoi(optarg);
        } else {
            fprintf(stderr, "usage: %s --nats URL [--sleep-ms N]\n", argv[0]);
            return 2;
        }
    }

    natsConnection *nc = NULL;
    natomic_service_t *svc = NULL;
    natomic_status_t st = natomic_connect(&nc, url, NULL);
    if (st == NATOMIC_OK)
        st = natomic_service_new(&svc, nc, &(natomic_service_config_t){.name = "slow"});
    if (st == NATOMIC_OK)
        st = natomic_service_add_method(svc, "echo", echo, 0, &conversions__inches_to_cm_request__descriptor,
                                        &conversions__inches_to_cm_reply__descriptor, &sleep_ms);
    if (st == NATOMIC_OK)
        st = natomic_service_run(svc);
    if (st != NATOMIC_OK)
        fprintf(stderr, "slow_service: %s\n", natomic_strerror(st));
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
    nats_Close();
    return st == NATOMIC_OK ? 0 : 1;
}
