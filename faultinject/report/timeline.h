/*
 * timeline.h -- what happened during a scenario, as seen from outside:
 * calls and replies between services (and the lab), events, faults (what
 * the lab did, and the moment a fault point fired in a service),
 * compensations, dead letters, restarts, releases and heals, the lab's
 * timeouts, check results. Recorded by the runner (a tap on NATS plus its
 * own actions); the report draws it as a sequence diagram.
 *
 * Time. Every entry carries the moment it happened at its source: the
 * wall clock of the service that sent a trace copy, an event, a dead
 * letter, a recovery step or a fault record (Natomic-Time-Ns, time_ns),
 * the lab's own wall clock for what the lab does. The lab and its
 * services run on one machine, so these clocks are one clock. Entries
 * are kept in that order however late they reach the lab. t_us counts
 * from the story's start (timeline_start).
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
    TL_FAULT,         /* on `to`: a fault the lab caused (kill -9, pause, cut, blackhole,
                         delayed link, NATS restart): label = what was done        */
    TL_NOTE,          /* on `to` (or the lab): free text, e.g. a step or a check    */
    TL_RECOVERY,      /* on `from`, the recovering service (durable mode): label =
                         "<instance> claimed|compensated|deferred|ended <call>: ..." */
    TL_FIRED,         /* on `from`, the service where a fault point fired: label =
                         "<action> at <point> (<instance>, hit <n>)"               */
    TL_TIMEOUT,       /* on `from` ("lab"): a call the lab gave up on, its timeout:
                         label = "<subject>: no reply in <ms> ms ..."               */
    TL_ARM,           /* on `to`: a fault point rule the lab enabled: label =
                         "point=action[@times][%p]"; it fires later, or never     */
    TL_RESTART,       /* on `to`: the lab started the service's process again      */
    TL_RESUME,        /* on `to`: the lab let a paused (SIGSTOP) process go on      */
    TL_RELEASE,       /* on `to`: the lab disabled a fault point ("point=off")     */
    TL_HEAL           /* on `to`: the lab set the service's link (its fault proxy)
                         back to pass-through after a cut, blackhole or delay      */
} timeline_kind_t;

typedef struct timeline_entry {
    int64_t t_us;     /* when it happened at its source, since the timeline started
                         (negative when before it)                                */
    timeline_kind_t kind;
    char from[32];
    char to[32];
    char label[200];
    bool error;       /* a failed reply or a failed check: drawn in red            */
} timeline_entry_t;

typedef struct timeline {
    pthread_mutex_t mu;
    int64_t start_ns; /* the origin of t_us, on the wall clock (CLOCK_REALTIME)    */
    timeline_entry_t *items;  /* in t_us order; equal times in the order added   */
    size_t count;
    size_t cap;
    size_t dropped;   /* entries not kept beyond the cap (bounded memory)          */
} timeline_t;

void timeline_init(timeline_t *tl);
void timeline_free(timeline_t *tl);
/* Moves the origin of t_us to now (the story starts), entries already
 * there included: they keep their moments, and read them from the new origin. */
void timeline_start(timeline_t *tl);
/* Microseconds from the origin (timeline_init, timeline_start) to now, on the wall clock: the scale of the entries' t_us. */
int64_t timeline_elapsed_us(const timeline_t *tl);
/* The wall-clock moment at_ns (ns since the epoch) on that scale. */
int64_t timeline_us_at(const timeline_t *tl, int64_t at_ns);
/* Adds an entry that happened now, by the caller's clock (the lab's own
 * steps). Thread-safe; keeps at most 20000 entries (then counts what it
 * drops). */
void timeline_add(timeline_t *tl, timeline_kind_t kind, const char *from, const char *to, bool error,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The same for an entry that happened at at_ns, the wall clock of its
 * source (a service's Natomic-Time-Ns or time_ns; <= 0: now): merged into
 * its place among the entries already there, after those of the same time. */
void timeline_add_at(timeline_t *tl, int64_t at_ns, timeline_kind_t kind, const char *from, const char *to,
                     bool error, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

#endif
