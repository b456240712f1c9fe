/*
 * conversions -- the hello-world service of nats-atomicity.
 *
 * Run it against a NATS server and call it from any NATS client:
 *     conversions --nats nats://127.0.0.1:4222 --db conversions.db
 * See conversions_service.c for what it teaches.
 */
#include <stdio.h>

#include <natomic.h>

#include "conversions_service.h"
#include "service_options.h"

static const char about[] =
    "conversions: converts inches to centimetres over NATS (conversions.inches_to_cm).\n"
    "Each conversion is saved in SQLite; a failed call rolls its save back, and\n"
    "events.conversions.converted is published only after a call succeeded.";

int main(int argc, char **argv)
{
    service_options_t opt;
    int exit_now = 0;
    int rc = service_options_parse(&opt, argc, argv, "conversions", about, &exit_now);
    if (exit_now)
        return rc;

    conversions_store_t *store = NULL;
    if (conversions_store_open(&store, opt.db_path) != 0)
        return 1;
    natsConnection *nc = NULL;
    natomic_service_t *svc = NULL;
    natomic_status_t st = natomic_connect(&nc, opt.nats_url, NULL);
    if (st == NATOMIC_OK) {
        natomic_service_config_t cfg = {
            .name = "conversions",
            .version = NATOMIC_VERSION,
            .description = "Converts inches to centimetres; the seed's rollback and dispatch examples",
            .max_workers = opt.workers,
        };
        st = natomic_service_new(&svc, nc, &cfg);
    }
    if (st == NATOMIC_OK)
        st = conversions_service_register(svc, store);
    if (st == NATOMIC_OK)
        st = natomic_service_run(svc);
    if (st != NATOMIC_OK)
        fprintf(stderr, "conversions: %s (%s)\n", natomic_strerror(st), opt.nats_url);
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
    conversions_store_close(store);
    nats_Close();
    return st == NATOMIC_OK ? 0 : 1;
}
