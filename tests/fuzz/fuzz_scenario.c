/*
 * fuzz_scenario.c -- the scenario format (docs/scenarios.md): any file a
 * user may hand to `natomic-lab check` or `run`.
 *
 * The input is written to an anonymous file (memfd) and loaded through its
 * /proc/self/fd path, the same scenario_load() the lab calls. Checks: no
 * crash, no leak, no undefined behaviour; a refusal always says why
 * ("file:line: reason").
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "scenario.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    int fd = memfd_create("scenario", 0);
    if (fd < 0)
        return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    scenario_t *sc = NULL;
    char err[512] = "";
    if (off == size) {
        if (scenario_load(&sc, path, err, sizeof err) == 0)
            scenario_free(sc);
        else if (err[0] == '\0')
            abort();
    }
    close(fd);
    return 0;
}
