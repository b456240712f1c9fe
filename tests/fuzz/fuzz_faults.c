/*
 * fuzz_faults.c -- the fault list syntax (docs/fault-points.md), as
 * NATOMIC_FAULTS and the $NATOMIC.FAULTS.<service> control message give it:
 * any bytes a stranger may send.
 *
 * Checks: natomic_faults_validate() never crashes or leaks; it refuses with
 * a message; and natomic_faults_apply() accepts exactly what validate
 * accepts (the control message is answered from apply, the scenario check
 * from validate: they must not disagree). Nothing here checks a point, so
 * an applied rule never fires; the rules are switched off again after each
 * input so the table does not fill up.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include <natomic.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *spec = fuzz_cstring(data, size, 4096);
    if (spec == NULL)
        return 0;

    char err[256] = "";
    natomic_status_t valid = natomic_faults_validate(spec, err, sizeof err);
    if (valid != NATOMIC_OK && err[0] == '\0')
        abort(); /* refused without saying why */
    char err2[256] = "";
    natomic_status_t applied = natomic_faults_apply(spec, err2, sizeof err2);
    /* Apply may also refuse a valid list when the table is full; it never accepts an invalid one. */
    if (valid != NATOMIC_OK && applied == NATOMIC_OK)
        abort();
    if (applied == NATOMIC_OK) {
        /* Every point of the list off again: "p=off" for each entry's point. */
        size_t cap = size * 2 + 16, used = 0;
        char *off = malloc(cap);
        if (off != NULL) {
            off[0] = '\0';
            for (char *save = NULL, *e = strtok_r(spec, ";", &save); e != NULL; e = strtok_r(NULL, ";", &save)) {
                while (*e == ' ')
                    e++;
                char *eq = strchr(e, '=');
                if (eq == NULL)
                    continue;
                int n = snprintf(off + used, cap - used, "%.*s=off;", (int)(eq - e), e);
                if (n < 0 || (size_t)n >= cap - used)
                    break;
                used += (size_t)n;
            }
            natomic_faults_apply(off, NULL, 0);
            free(off);
        }
    }
    free(spec);
    return 0;
}
