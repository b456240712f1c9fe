/*
 * status.c -- names and texts of natomic_status_t, and the mapping between
 * error kinds and the numeric `Nats-Service-Error-Code` sent on the wire.
 * One X-macro list in natomic.h keeps names and texts together.
 */
#include "natomic_internal.h"

static const char *const status_text[] = {
#define X(name, text) text,
    NATOMIC_STATUS_LIST(X)
#undef X
};

static const char *const status_names[] = {
#define X(name, text) #name,
    NATOMIC_STATUS_LIST(X)
#undef X
};

NATOMIC_API const char *natomic_strerror(natomic_status_t status)
{
    if ((unsigned)status >= NATOMIC_STATUS_COUNT_)
        return "unknown status";
    return status_text[status];
}

NATOMIC_API const char *natomic_status_name(natomic_status_t status)
{
    if ((unsigned)status >= NATOMIC_STATUS_COUNT_)
        return "NATOMIC_UNKNOWN";
    return status_names[status];
}

static const struct {
    natomic_status_t kind;
    int code;
} code_table[] = {
    {NATOMIC_EBADINPUT, 400},  {NATOMIC_ENOMETHOD, 404}, {NATOMIC_EBUSINESS, 422},
    {NATOMIC_EINTERNAL, 500},  {NATOMIC_ETRANSIENT, 503}, {NATOMIC_ETIMEOUT, 504},
};

NATOMIC_API int natomic_error_code(natomic_status_t kind)
{
    for (size_t i = 0; i < sizeof code_table / sizeof code_table[0]; i++)
        if (code_table[i].kind == kind)
            return code_table[i].code;
    return 500;
}

NATOMIC_API natomic_status_t natomic_error_kind(int code)
{
    for (size_t i = 0; i < sizeof code_table / sizeof code_table[0]; i++)
        if (code_table[i].code == code)
            return code_table[i].kind;
    if (code >= 400 && code < 500)
        return NATOMIC_EBADINPUT;
    return NATOMIC_EINTERNAL;
}

NATOMIC_API const char *natomic_outcome_name(natomic_outcome_t outcome)
{
    switch (outcome) {
    case NATOMIC_OUTCOME_COMPLETE:
        return "complete";
    case NATOMIC_OUTCOME_INCOMPLETE:
        return "incomplete";
    case NATOMIC_OUTCOME_NONE:
    default:
        return "none";
    }
}
