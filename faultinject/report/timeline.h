/*
 * timeline.h -- what happened during a scenario, as seen from outside:
 * calls and replies between services (and the lab), events, faults,
 * compensations, dead letters, process and link faults, check results.
 * Recorded by the runner (a wildcard tap on NATS plus its own actions);
 * the report draws it as a sequence diagram.
 */
#ifndef TIMELINE_H
#define TIMELINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum timeline_kind {
    TL_CALL,          /* from -> to: label = method and request summary           */
    TL_REPLY,         /* to -> from: label = "ok ..." or the error type             */
    TL_COMPENSATION,  /* a call made by a rollback command (Natomic-Phase)         */
    TL_EVENT,         /* from -> "events": label = type                            */
    TL_DEAD_LETTER,   /* from: label = the command that was given up               */
    TL_FAULT,         /* on `to`: label = what was done (kill, cut, point=action)  */
    TL_NOTE,          /* on `to` (or the lab): free text, e.g. a step or a check    */
    TL_RECOVERY       /* on `from`, the recovering service (durable mode): label =
                         "<instance> claimed|compensated|deferred|ended <call>: ..." */
} timeline_kind_t;

typedef struct timeline_entry {
    int64_t t_us;     /* since the timeline started                               */
    timeline_kind_t kind;
    char from[32];
    char to[32];
    char label[200];
    bool error;       /* a failed reply or a failed check: drawn in red            */
} timeline_entry_t;

typedef struct timeline {
    pthread_mutex_t mu;
    int64_t start_us;
    timeline_entry_t *items;
    size_t count;
    size_t cap;
    size_t dropped;   /* entries not kept beyond the cap (bounded memory)          */
} timeline_t;

void timeline_init(timeline_t *tl);
void timeline_free(timeline_t *tl);
/* Microseconds since timeline_init: the clock of the entries' t_us. */
int64_t timeline_elapsed_us(const timeline_t *tl);
/* Thread-safe; keeps at most 20000 entries (then counts what it drops). */
void timeline_add(timeline_t *tl, timeline_kind_t kind, const char *from, const char *to, bool error,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#endif
