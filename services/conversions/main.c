/*
 * conversions -- the hello-world service of nats-atomicity.
 *
 * Run it against a NATS server and call it from any NATS client:
 *     conversions --nats nats://127.0.0.1:4222 --db conversions.db
 * See conversions_service.c for what it teaches.
 */
#include <natomic.h>

#include "conversions_service.h"
#include "service_main.h"

static const char about[] =
    "conversions: converts inches to centimetres over NATS (conversions.inches_to_cm).\n"
    "Each conversion is saved in SQLite; a failed call rolls its save back, and\n"
    "events.conversions.converted is published only after a call succeeded.";

static void *open_state(const char *db_path)
{
    conversions_store_t *state = NULL;
    return conversions_store_open(&state, db_path) == 0 ? state : NULL;
}

static void close_state(void *state)
{
    conversions_store_close(state);
}

static struct sqlite3 *store_of(void *state)
{
    return conversions_store_db(state);
}

static natomic_status_t register_methods(natomic_service_t *svc, void *state)
{
    return conversions_service_register(svc, state);
}

static const service_def_t service = {
    .name = "conversions",
    .about = about,
    .description = "Converts inches to centimetres; the seed's rollback and dispatch examples",
    .open = open_state,
    .close = close_state,
    .store = store_of,
    .register_methods = register_methods,
};

int main(int argc, char **argv)
{
    return service_main(argc, argv, &service);
}
