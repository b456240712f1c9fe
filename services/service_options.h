/*
 * service_options.h -- the command line every example service shares:
 * --nats URL (or --server), --db PATH, --workers N, --mode memory|durable,
 * --instance NAME, the connection's credentials and TLS as the `nats` CLI
 * takes them (--user, --password, --token, --creds, --tlscert, --tlskey,
 * --tlsca, and their NATS_* variables), --help.
 */
#ifndef SERVICE_OPTIONS_H
#define SERVICE_OPTIONS_H

#include <natomic.h>

typedef struct service_options {
    const char *nats_url;  /* --nats/--server, else $NATS_URL, else nats://127.0.0.1:4222 */
    natomic_conn_config_t conn; /* the URL above, credentials and TLS (checked: files readable) */
    const char *db_path;   /* --db, else "<service>.db" in the current folder     */
    int workers;           /* --workers, else 10                                  */
    natomic_mode_t mode;   /* --mode, else $NATOMIC_MODE, else durable            */
    const char *instance;  /* --instance, else $NATOMIC_INSTANCE, else NULL (random) */
} service_options_t;

/*
 * Parses argv. `about` is the one-paragraph description printed by
 * --help. Returns 0 to go on, or an exit status (0 after --help, 2 after
 * a usage error, with a message on stderr) with *exit_now set.
 */
int service_options_parse(service_options_t *out, int argc, char **argv, const char *service, const char *about,
                          int *exit_now);

#endif
