/*
 * command_registry.c -- named commands: rollbacks that outlive a process.
 *
 * A rollback command in memory mode is a function pointer and an argument
 * in the memory of the call that registered it. Neither survives a crash,
 * so what the saga log keeps of a local compensation is a name and bytes:
 * "orders.cancel" with the order id. Every instance of a service registers
 * the same names at start, before any call; the recovering instance finds
 * the function by name and gives it the bytes.
 *
 * The registry is written before natomic_service_start() and only read
 * after it, so lookups need no lock. A name that is not registered cannot
 * be logged (natomic_rollback_append_durable refuses it); a record naming
 * one that this build no longer has is dead-lettered by recovery.
 */
#include "natomic_internal.h"

#include <stdlib.h>
#include <string.h>

static bool valid_command_name(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n >= sizeof((natomic_named_command_t *)0)->name)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return false;
    }
    return true;
}

NATOMIC_API natomic_status_t natomic_command_register(natomic_service_t *svc, const char *name, natomic_durable_fn fn,
                                                      void *closure)
{
    if (svc == NULL || fn == NULL || !valid_command_name(name))
        return NATOMIC_EINVAL;
    pthread_mutex_lock(&svc->mu);
    natomic_status_t st = svc->started ? NATOMIC_ESTATE : NATOMIC_OK;
    if (st == NATOMIC_OK && natomic__registry_find(svc, name) != NULL)
        st = NATOMIC_EEXIST;
    if (st == NATOMIC_OK) {
        natomic_named_command_t *grown = realloc(svc->commands, (svc->n_commands + 1) * sizeof *grown);
        if (grown == NULL) {
            st = NATOMIC_ENOMEM;
        } else {
            svc->commands = grown;
            natomic_named_command_t *c = &svc->commands[svc->n_commands++];
            memset(c, 0, sizeof *c);
            natomic__copy(c->name, sizeof c->name, name);
            c->fn = fn;
            c->closure = closure;
        }
    }
    pthread_mutex_unlock(&svc->mu);
    return st;
}

const natomic_named_command_t *natomic__registry_find(const natomic_service_t *svc, const char *name)
{
    if (svc == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < svc->n_commands; i++)
        if (strcmp(svc->commands[i].name, name) == 0)
            return &svc->commands[i];
    return NULL;
}

void natomic__registry_free(natomic_service_t *svc)
{
    free(svc->commands);
    svc->commands = NULL;
    svc->n_commands = 0;
}
