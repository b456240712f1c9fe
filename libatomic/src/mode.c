/*
 * mode.c -- the names of the two modes a service runs in (DESIGN 3.7).
 *
 * memory is the nameko-atomicity model and the zero value of the config,
 * so a service written before durable mode existed keeps its meaning;
 * the example binaries choose durable unless told otherwise.
 */
#include "natomic_internal.h"

#include <string.h>

NATOMIC_API const char *natomic_mode_name(natomic_mode_t mode)
{
    return mode == NATOMIC_MODE_DURABLE ? "durable" : "memory";
}

NATOMIC_API natomic_status_t natomic_mode_parse(natomic_mode_t *out, const char *text)
{
    if (out == NULL || text == NULL)
        return NATOMIC_EINVAL;
    if (strcmp(text, "memory") == 0)
        *out = NATOMIC_MODE_MEMORY;
    else if (strcmp(text, "durable") == 0)
        *out = NATOMIC_MODE_DURABLE;
    else
        return NATOMIC_EINVAL;
    return NATOMIC_OK;
}
