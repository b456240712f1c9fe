/*
 * request_fields.c -- see request_fields.h.
 */
#include "request_fields.h"

#include <string.h>

natomic_status_t request_text(natomic_ctx_t *ctx, const char *name, const char *value)
{
    if (value == NULL || *value == '\0')
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "%s must not be empty", name);
    size_t len = strnlen(value, REQUEST_TEXT_MAX + 1);
    if (len > REQUEST_TEXT_MAX)
        return natomic_fail(ctx, NATOMIC_EBADINPUT, "InvalidRequest", "%s is longer than %d bytes", name,
                            REQUEST_TEXT_MAX);
    return NATOMIC_OK;
}
