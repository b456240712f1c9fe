/*
 * service_main.c -- what every example service does around its methods:
 * parse the common options, open its SQLite state, connect (SendAsap),
 * create the natomic service (its mode, its store, its instance name),
 * register, and run until SIGTERM or SIGINT,
 * which drain the calls in flight. Each service's main.c only says what
 * it is; this is the one place its life cycle is written.
 */
#include "service_main.h"

#include <stdbool.h>
#include <stdio.h>

#include "service_options.h"

int service_main(int argc, char **argv, const service_def_t *def)
{
    service_options_t opt;
    int exit_now = 0;
    int rc = service_options_parse(&opt, argc, argv, def->name, def->about, &exit_now);
    if (exit_now)
        return rc;

    void *state = def->open(opt.db_path);
    if (state == NULL)
        return 1;
    natsConnection *nc = NULL;
    natomic_service_t *svc = NULL;
    char err[512] = "";
    natomic_status_t st = natomic_connect_config(&nc, &opt.conn, err, sizeof err);
    bool connected = st == NATOMIC_OK;
    if (!connected)
        fprintf(stderr, "%s: %s\n", def->name, err);
    if (st == NATOMIC_OK) {
        natomic_service_config_t cfg = {
            .name = def->name,
            .version = NATOMIC_VERSION,
            .description = def->description,
            .max_workers = opt.workers,
            .mode = opt.mode,
            .store = def->store(state),
            .instance = opt.instance,
        };
        st = natomic_service_new(&svc, nc, &cfg);
    }
    if (st == NATOMIC_OK)
        st = def->register_methods(svc, state);
    if (st == NATOMIC_OK)
        st = natomic_service_run(svc);
    char url[512];
    if (st != NATOMIC_OK && connected)
        fprintf(stderr, "%s: %s (%s, %s mode)\n", def->name, natomic_strerror(st),
                natomic_url_redacted(url, sizeof url, opt.nats_url), natomic_mode_name(opt.mode));
    natomic_service_destroy(svc);
    natsConnection_Destroy(nc);
    def->close(state);
    nats_Close();
    return st == NATOMIC_OK ? 0 : 1;
}
