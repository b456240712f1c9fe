/*
 * fuzz.h -- the one function every harness of tests/fuzz defines: libFuzzer
 * calls it with each input it makes, replay_main.c with each corpus file.
 * Returns 0; a bug is a crash (abort, a sanitizer's report, a signal).
 */
#ifndef NATOMIC_FUZZ_H
#define NATOMIC_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a C string (a header value, a list), as its reader gets it; NULL when over `max` bytes. Free it. */
static inline char *fuzz_cstring(const uint8_t *data, size_t size, size_t max)
{
    if (size > max)
        return NULL;
    char *s = malloc(size + 1);
    if (s != NULL) {
        memcpy(s, data, size);
        s[size] = '\0';
    }
    return s;
}

#endif
