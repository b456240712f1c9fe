/*
 * timeline.c -- the record of what happened during a scenario.
 *
 * Several threads add to one timeline at once (the NATS tap's callback
 * thread, the runner's own thread playing steps and faults), so every add
 * takes the mutex, and the time stamp is taken under it too: the array is
 * therefore always in time order, which the report relies on.
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

static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
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
    tl->start_us = monotonic_us();
}

int64_t timeline_elapsed_us(const timeline_t *tl)
{
    return monotonic_us() - tl->start_us; /* start_us is set once, before any thread adds */
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

/* Appends one entry, or counts it in `dropped` when the cap is reached or
 * memory runs out; the timeline is unchanged otherwise. */
void timeline_add(timeline_t *tl, timeline_kind_t kind, const char *from, const char *to, bool error,
                  const char *fmt, ...)
{
    timeline_entry_t e;
    memset(&e, 0, sizeof e);
    e.kind = kind;
    e.error = error;
    copy_name(e.from, sizeof e.from, from);
    copy_name(e.to, sizeof e.to, to);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.label, sizeof e.label, fmt, ap);
    va_end(ap);
    trim_partial_utf8(e.label);

    pthread_mutex_lock(&tl->mu);
    e.t_us = monotonic_us() - tl->start_us;
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
    if (tl->count < tl->cap)
        tl->items[tl->count++] = e;
    else
        tl->dropped++;
    pthread_mutex_unlock(&tl->mu);
}
