/*
 * command_probe.c -- the recording command of the unit tests (see
 * command_probe.h). Kept apart from the tests so that every test file
 * counts calls and frees the same way.
 */
#include "command_probe.h"

#include <stdio.h>
#include <string.h>

/* Appends ",word" (or "word" when empty) to buf[cap], truncating safely. */
static void append_word(char *buf, size_t cap, const char *word)
{
    size_t used = strlen(buf);
    if (used + 1 >= cap)
        return;
    snprintf(buf + used, cap - used, "%s%s", used > 0 ? "," : "", word);
}

natomic_status_t probe_command(natomic_ctx_t *ctx, void *arg)
{
    probe_t *p = arg;
    p->calls++;
    p->last_ctx = ctx;
    if (p->trace != NULL)
        append_word(p->trace->text, sizeof p->trace->text, p->name);
    bool fails = p->fail_times < 0 || p->calls <= p->fail_times;
    if (!fails)
        return NATOMIC_OK;
    return p->fail_with != NATOMIC_OK ? p->fail_with : NATOMIC_ETRANSIENT;
}

void probe_free(void *arg)
{
    probe_t *p = arg;
    p->frees++;
}

const char *probe_list_names(const natomic_cmdlist_t *list, char *buf, size_t cap)
{
    if (cap == 0)
        return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < list->count; i++)
        append_word(buf, cap, list->items[i].name);
    return buf;
}
