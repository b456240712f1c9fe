/*
 * ids.c -- transaction, call and event ids, clocks and the log.
 *
 * Ids are 128 random bits from getrandom(2) written as 32 hex digits:
 * unique without coordination between instances. If the kernel cannot
 * give randomness (never seen in practice) a counter mixed with the clock
 * keeps ids unique within the process.
 */
#include "natomic_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

void natomic__id_new(char buf[NATOMIC_ID_LEN + 1])
{
    static atomic_uint_fast64_t fallback;
    uint8_t raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        uint64_t a = (uint64_t)natomic__wall_ns(), b = atomic_fetch_add(&fallback, 1) + 1;
        memcpy(raw, &a, 8);
        memcpy(raw + 8, &b, 8);
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[NATOMIC_ID_LEN] = '\0';
}

int64_t natomic__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t natomic__wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void natomic__sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* NATOMIC_LOG=error|warn|info|debug (default info). Read once. */
static natomic_log_level_t log_threshold(void)
{
    static _Atomic int cached = -1;
    int v = atomic_load(&cached);
    if (v >= 0)
        return (natomic_log_level_t)v;
    const char *env = getenv("NATOMIC_LOG");
    v = NATOMIC_LOG_INFO;
    if (env != NULL) {
        if (strcasecmp(env, "error") == 0)
            v = NATOMIC_LOG_ERROR;
        else if (strcasecmp(env, "warn") == 0)
            v = NATOMIC_LOG_WARN;
        else if (strcasecmp(env, "debug") == 0)
            v = NATOMIC_LOG_DEBUG;
    }
    atomic_store(&cached, v);
    return (natomic_log_level_t)v;
}

void natomic__log(natomic_log_level_t level, const char *who, const char *fmt, ...)
{
    if (level > log_threshold())
        return;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %-5s %s: ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[level], who != NULL ? who : "natomic");
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    if ((size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line keeps lines of concurrent workers whole. */
    fprintf(stderr, "%s\n", line);
}

const char *natomic__header(natsMsg *m, const char *key)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK)
        return NULL;
    return v;
}

bool natomic__usable_id(const char *s, size_t cap)
{
    if (s == NULL || *s == '\0' || strlen(s) >= cap)
        return false;
    for (; *s; s++)
        if (*s <= ' ' || *s > '~' || *s == ',')
            return false;
    return true;
}
