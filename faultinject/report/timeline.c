/*
 * timeline.c -- the record of what happened during a scenario.
 *
 * Several threads add to one timeline at once (the NATS tap's callbacks,
 * the runner's own thread playing steps and faults), so every add takes
 * the mutex. An entry's time is when it happened at its source, not when
 * the lab learnt of it: a service stamps its trace copies and events with
 * its wall clock (Natomic-Time-Ns) and its dead letters, recovery steps
 * and fault records with time_ns, and these reach the lab late and out of
 * order (each travels on its own subject, through its own subscription).
 * So an add merges: the entry is inserted after the last one not later
 * than it, walking back from the end (most arrive within a few entries of
 * their place). The array is therefore always in time order, with equal
 * times in the order added, which the report relies on. Sorting once at
 * the end would do for the report, but the timeline is read while it
 * grows, and what is read must be in order too.
 *
 * One clock. Every stamp is CLOCK_REALTIME, the lab's own too: the lab
 * and its services share one machine and so one wall clock, and a step of
 * that clock (NTP) moves every source at once. t_us counts from
 * timeline_init, or from timeline_start (the runner calls it when the
 * story starts: several stories' timelines are made at once, played one
 * after another); a stamp from before it is negative.
 *
 * Memory is bounded: at most TIMELINE_MAX entries are kept; past that an add
 * only counts itself in `dropped`, so a runaway scenario cannot exhaust the
 * lab's memory and the report can still say how much is missing. A failed
 * allocation is treated the same way: the entry is dropped and counted.
 *
 * Strings are cut to their fields' sizes without splitting a UTF-8
 * sequence, so a truncated label is still valid text for the report.
 */
#include "timeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TIMELINE_MAX 20000
#define TIMELINE_FIRST_CAP 256

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Cuts `s` (NUL-terminated, possibly truncated by snprintf) back to the
 * last complete UTF-8 sequence, so no partial character is left at its end. */
static void trim_partial_utf8(char *s)
{
    size_t len = strlen(s);
    if (len == 0)
        return;
    size_t start = len;
    /* Walk back over at most three continuation bytes to the lead byte. */
    while (start > 0 && len - start < 3 && ((unsigned char)s[start - 1] & 0xC0) == 0x80)
        start--;
    if (start == 0)
        return;
    unsigned char lead = (unsigned char)s[start - 1];
    size_t need = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;
    size_t have = len - (start - 1);
    if (lead >= 0x80 && have < need)
        s[start - 1] = '\0';
}

static void copy_name(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
    trim_partial_utf8(dst);
}

void timeline_init(timeline_t *tl)
{
    memset(tl, 0, sizeof *tl);
    pthread_mutex_init(&tl->mu, NULL);
    tl->start_ns = wall_ns();
}

void timeline_start(timeline_t *tl)
{
    pthread_mutex_lock(&tl->mu);
    /* By whole microseconds, so that an entry's t_us stays what timeline_us_at says of its moment. */
    int64_t shift_us = (wall_ns() - tl->start_ns) / 1000;
    for (size_t i = 0; i < tl->count; i++)
        tl->items[i].t_us -= shift_us;
    tl->start_ns += shift_us * 1000;
    pthread_mutex_unlock(&tl->mu);
}

int64_t timeline_us_at(const timeline_t *tl, int64_t at_ns)
{
    int64_t d = at_ns - tl->start_ns; /* set by init and start, before the tap's threads exist */
    return d >= 0 ? d / 1000 : -((-d + 999) / 1000);
}

int64_t timeline_elapsed_us(const timeline_t *tl)
{
    return timeline_us_at(tl, wall_ns());
}

void timeline_free(timeline_t *tl)
{
    if (tl == NULL)
        return;
    free(tl->items);
    tl->items = NULL;
    tl->count = tl->cap = tl->dropped = 0;
    pthread_mutex_destroy(&tl->mu);
}

/* Merges one entry into its place by time, or counts it in `dropped` when
 * the cap is reached or memory runs out; the timeline is unchanged otherwise. */
static void add_entry(timeline_t *tl, int64_t at_ns, timeline_kind_t kind, const char *from, const char *to,
                      bool error, const char *fmt, va_list ap)
{
    timeline_entry_t e;
    memset(&e, 0, sizeof e);
    e.kind = kind;
    e.error = error;
    copy_name(e.from, sizeof e.from, from);
    copy_name(e.to, sizeof e.to, to);
    vsnprintf(e.label, sizeof e.label, fmt, ap);
    trim_partial_utf8(e.label);

    pthread_mutex_lock(&tl->mu);
    /* "Now" is read under the lock: the lab's own entries keep the order of their adds. */
    e.t_us = timeline_us_at(tl, at_ns > 0 ? at_ns : wall_ns());
    if (tl->count == tl->cap && tl->cap < TIMELINE_MAX) {
        size_t cap = tl->cap == 0 ? TIMELINE_FIRST_CAP : tl->cap * 2;
        if (cap > TIMELINE_MAX)
            cap = TIMELINE_MAX;
        timeline_entry_t *grown = realloc(tl->items, cap * sizeof *grown);
        if (grown != NULL) {
            tl->items = grown;
            tl->cap = cap;
        }
    }
    if (tl->count < tl->cap) {
        size_t at = tl->count;
        while (at > 0 && tl->items[at - 1].t_us > e.t_us)
            at--;
        memmove(&tl->items[at + 1], &tl->items[at], (tl->count - at) * sizeof e);
        tl->items[at] = e;
        tl->count++;
    } else {
        tl->dropped++;
    }
    pthread_mutex_unlock(&tl->mu);
}

void timeline_add(timeline_t *tl, timeline_kind_t kind, const char *from, const char *to, bool error,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_entry(tl, 0, kind, from, to, error, fmt, ap);
    va_end(ap);
}

void timeline_add_at(timeline_t *tl, int64_t at_ns, timeline_kind_t kind, const char *from, const char *to,
                     bool error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_entry(tl, at_ns, kind, from, to, error, fmt, ap);
    va_end(ap);
}
