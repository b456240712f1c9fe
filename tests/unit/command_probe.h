/*
 * command_probe.h -- a command argument that records what happened to it.
 *
 * Shared by the unit tests of the command lists and of the call context.
 * A probe belongs to the test (usually on its stack): probe_free() only
 * counts, so a test can assert that an argument was freed exactly once
 * and that a command ran exactly as many times as expected.
 */
#ifndef COMMAND_PROBE_H
#define COMMAND_PROBE_H

#include "natomic_internal.h"

#include <stddef.h>

/* The names of the probes that ran, in call order, comma separated. */
typedef struct probe_trace {
    char text[512];
} probe_trace_t;

typedef struct probe {
    const char *name;           /* written to the trace on each call       */
    probe_trace_t *trace;       /* NULL: not traced                        */
    int fail_times;             /* fail this many first calls; -1: always  */
    natomic_status_t fail_with; /* status of a failed call (OK: ETRANSIENT) */
    int calls;                  /* times probe_command() ran               */
    int frees;                  /* times probe_free() was called           */
    natomic_ctx_t *last_ctx;    /* ctx of the last call                    */
} probe_t;

/* A command: records the call, then fails or succeeds as the probe says. */
natomic_status_t probe_command(natomic_ctx_t *ctx, void *arg);
/* A free_arg: counts, frees nothing. */
void probe_free(void *arg);

/* Writes the names of the list's commands, comma separated, into buf[cap]; returns buf. */
const char *probe_list_names(const natomic_cmdlist_t *list, char *buf, size_t cap);

#endif
