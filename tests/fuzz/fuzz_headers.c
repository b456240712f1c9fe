/*
 * fuzz_headers.c -- the request headers every service reads before its
 * handler runs, which any NATS client can set: Natomic-Deadline-Ms (a
 * budget in milliseconds), Natomic-Tx and Natomic-Call-Id (ids), and
 * Natomic-Call-Chain (a comma list), through the same internal functions
 * handle_call() uses (libatomic/src/service.c, ids.c).
 *
 * The input is the header's value (NUL-terminated here, as nats.c hands
 * it). Checks: no crash, no undefined behaviour (the deadline near
 * INT64_MAX was a signed overflow), and the results keep their contracts:
 * a deadline that parses lies within NATOMIC_MAX_BUDGET_MS of now; an id
 * called usable fits its buffer and has no control characters.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "natomic_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *h = fuzz_cstring(data, size, 4096);
    if (h == NULL)
        return 0;

    /* A wall clock in ms, as natomic__now_ms() gives, and the extremes of what it could be. */
    static const int64_t nows[] = {1796000000000LL, 0, INT64_MAX - NATOMIC_MAX_BUDGET_MS};
    for (size_t i = 0; i < sizeof nows / sizeof nows[0]; i++) {
        int64_t deadline = -1;
        int r = natomic__parse_deadline(h, nows[i], &deadline);
        if (r == 0 && deadline != 0 && (deadline <= nows[i] || deadline - nows[i] > NATOMIC_MAX_BUDGET_MS))
            abort();
        if (r != 0 && deadline != 0)
            abort();
    }
    char tx[NATOMIC_ID_LEN + 1 + 32];
    if (natomic__usable_id(h, sizeof tx)) {
        if (strlen(h) >= sizeof tx)
            abort();
        natomic__copy(tx, sizeof tx, h);
        for (const char *c = tx; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                abort();
    }
    char chain[1024];
    natomic__copy(chain, sizeof chain, h);
    if (strlen(chain) >= sizeof chain)
        abort();
    free(h);
    return 0;
}
