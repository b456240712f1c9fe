/*
 * scenario.c -- a scenario file (DESIGN 4.3) read into a scenario_t.
 *
 * libyaml's document API (yaml_parser_load) gives a tree of nodes, each
 * with the line it starts on; the tree is walked once, in a fixed order
 * (about, mode, seed, services, faults, seed_data, steps, expect) so that
 * services are known before the faults and steps that name them. The first
 * problem stops the walk: the caller gets "file:line: reason" and nothing
 * else (the half-built scenario is freed with scenario_free, which accepts
 * any prefix of a build because every array is zeroed and counted before
 * it is filled).
 *
 * Templates ("{i}", "{i%N}") are expanded by scenario_expand_text, for the
 * runner; the parser uses the same reading to check an idempotency key's
 * longest expansion against the 128 characters the library accepts.
 *
 * Requests and expected replies are YAML maps turned into jansson values
 * with the YAML 1.2 core schema for plain scalars: integers ([-+]?[0-9]+),
 * floats, true/false, null/~/empty; anything else, and every quoted
 * scalar, is a string. Tags are ignored. .inf and .nan stay strings (JSON
 * has no such numbers); an integer beyond 64 bits is an error, not a
 * silent float.
 *
 * Hostile input: aliases are resolved by libyaml into shared nodes, so a
 * document can refer to itself (&a [*a]) or multiply itself (the "billion
 * laughs"). The JSON conversion has a depth limit and a budget of nodes per
 * file; the rest of the walk only ever looks one level into a node it
 * expects, so it terminates on any tree. Files are read whole, up to
 * SCENARIO_MAX_BYTES.
 */
#include "scenario.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define SCENARIO_MAX_BYTES (4u * 1024 * 1024)
#define JSON_MAX_DEPTH 64
#define JSON_MAX_NODES 1000000

#define DEFAULT_SEED 1
#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_EVENTUALLY_MS 2000
#define MAX_TIMEOUT_MS 3600000
#define MAX_REPEAT 1000000
#define MAX_CONCURRENCY 64
#define MAX_WAIT_MS 60000
#define MAX_INSTANCES 4
#define MAX_TIMES 1000000

const char *const scenario_service_names[] = {"conversions", "inventory", "payments", "orders", "notifications", NULL};

const char *const scenario_invariant_names[] = {"stock_conserved",   "money_conserved",     "order_atomicity",
                                                "order_created_once", "notifications_match", "no_pending_orders",
                                                "no_dead_letters",    "no_premature_events", NULL};

static const char *const top_keys[] = {"about",     "mode",  "nats",   "seed",   "services", "faults",
                                       "seed_data", "steps", "expect", NULL};
/* Every key a step may have; the first of them present names its kind. */
static const char *const step_keys[] = {"call",  "request",    "timeout", "repeat",    "concurrency", "expect",
                                        "idempotency_key", "kill", "restart", "pause",  "resume",      "cut",
                                        "blackhole", "delay_link", "ms",   "heal",      "fault",       "release",
                                        "wait",  "instance",   "kill_node", "restart_node", "cut_node",
                                        "heal_node", "background", "as", "subscribe", "queue", "publish",
                                        "payload", NULL};
static const char *const call_keys[] = {"call",   "request", "timeout", "repeat", "concurrency",
                                        "expect", "idempotency_key", "background", "as", NULL};
static const char *const subscribe_keys[] = {"subscribe", "queue", "as", "expect", NULL};
static const char *const publish_keys[] = {"publish", "payload", "as", "expect", NULL};
/* The identities of a secure story (deploy/'s users), for `as`. */
const char *const scenario_identities[] = {"client", "admin", "orders", "inventory", "payments", "notifications",
                                           "conversions", NULL};
static const char *const delay_link_keys[] = {"delay_link", "ms", NULL};
/* kill, restart, pause and resume may name one instance. */
static const char *const kill_keys[] = {"kill", "instance", NULL};
static const char *const restart_keys[] = {"restart", "instance", NULL};
static const char *const pause_keys[] = {"pause", "instance", NULL};
static const char *const resume_keys[] = {"resume", "instance", NULL};
static const char *const fault_keys[] = {"service", "instance", "point", "action", "times", "probability", NULL};
static const char *const release_keys[] = {"service", "instance", "point", NULL};
static const char *const call_expect_keys[] = {"reply",         "error",  "code",    "rollback", "timeout", "any",
                                               "replayed",      "compensations", "events", "barrier", "retry_waits",
                                               "refused",       NULL};
static const char *const expect_keys[] = {"eventually", "compensations", "dead_letters", "events",  "invariants",
                                          "state",      "violations",    "recoveries",   "barrier", "hold",
                                          NULL};
const char *const scenario_barrier_outcomes[] = {"executed", "duplicate", "null_compensation", "refused_late", NULL};
static const char *const instance_keys[] = {"instances", NULL};
static const char *const fault_actions[] = {"error", "crash", "drop", "duplicate", "pause", "delay:<ms>", NULL};
static const char *const rollback_names[] = {"complete", "incomplete", "none", NULL};
static const char *const state_key_forms[] = {
    "stock.<sku>.available", "stock.<sku>.reserved", "balance.<customer>", "charged.<customer>",
    "orders.confirmed",      "orders.cancelled",     "orders.pending",     "orders.total",
    "notifications.total",   "conversions.history",  NULL};

/* A step kind by the key that introduces it. */
static const struct {
    const char *key;
    scenario_step_kind_t kind;
} step_kinds[] = {
    {"call", STEP_CALL},           {"kill", STEP_KILL},   {"restart", STEP_RESTART}, {"pause", STEP_PAUSE},
    {"resume", STEP_RESUME},       {"cut", STEP_CUT},     {"blackhole", STEP_BLACKHOLE},
    {"delay_link", STEP_DELAY_LINK}, {"heal", STEP_HEAL}, {"fault", STEP_FAULT},     {"release", STEP_RELEASE},
    {"wait", STEP_WAIT},
    {"kill_node", STEP_NODE_KILL}, {"restart_node", STEP_NODE_RESTART}, {"cut_node", STEP_NODE_CUT},
    {"heal_node", STEP_NODE_HEAL}, {"subscribe", STEP_SUBSCRIBE}, {"publish", STEP_PUBLISH},
};
#define N_STEP_KINDS (sizeof step_kinds / sizeof step_kinds[0])

typedef struct parse {
    const char *path;
    yaml_document_t *doc;
    char *err;
    size_t errcap;
    long json_budget; /* nodes the JSON conversion may still visit */
} parse_t;

/* ---- small helpers ---------------------------------------------------- */

static int line_of(const yaml_node_t *n)
{
    return n != NULL ? (int)n->start_mark.line + 1 : 1;
}

#if defined(__GNUC__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

static int fail(parse_t *p, const yaml_node_t *at, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void set_error(char *err, size_t errcap, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Writes "path:line: reason" into the error buffer; returns -1 to be returned. */
static int fail(parse_t *p, const yaml_node_t *at, const char *fmt, ...)
{
    if (p->err == NULL || p->errcap == 0)
        return -1;
    int n = snprintf(p->err, p->errcap, "%s:%d: ", p->path, line_of(at));
    if (n >= 0 && (size_t)n < p->errcap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errcap - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void set_error(char *err, size_t errcap, const char *fmt, ...)
{
    if (err == NULL || errcap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errcap, fmt, ap);
    va_end(ap);
}

static yaml_node_t *node_at(parse_t *p, int index)
{
    return yaml_document_get_node(p->doc, index);
}

static const char *kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a map";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return "a scalar";
    }
}

static const char *text_of(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* An empty value, ~ or null, written plain. */
static bool is_null(const yaml_node_t *n)
{
    if (!is_plain(n))
        return false;
    const char *t = text_of(n);
    return t[0] == '\0' || strcmp(t, "~") == 0 || strcmp(t, "null") == 0 || strcmp(t, "Null") == 0 ||
           strcmp(t, "NULL") == 0;
}

static int index_of(const char *const names[], const char *s)
{
    for (int i = 0; names[i] != NULL; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* "a, b, c" into buf (truncated if it must be). */
static const char *join(const char *const names[], char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] != NULL && used < cap; i++) {
        int n = snprintf(buf + used, cap - used, "%s%s", i > 0 ? ", " : "", names[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return buf;
}

static bool is_ident_char(char c, bool dash)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           (dash && c == '-');
}

/* True when s[0..n) is non-empty and all [A-Za-z0-9_] (plus '-' if dash). */
static bool is_ident(const char *s, size_t n, bool dash)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_ident_char(s[i], dash))
            return false;
    return true;
}

/* The value of `key` in map `m`, or NULL. Keys are checked unique beforehand. */
static yaml_node_t *map_get(parse_t *p, const yaml_node_t *m, const char *key)
{
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = node_at(p, pr->key);
        const char *t = k != NULL ? text_of(k) : NULL;
        if (t != NULL && strcmp(t, key) == 0)
            return node_at(p, pr->value);
    }
    return NULL;
}

/*
 * Every key of map `m` is a scalar among `allowed`, each at most once.
 * Returns 0, or -1 naming the first bad key and the allowed ones.
 */
static int check_keys(parse_t *p, const yaml_node_t *m, const char *const allowed[], const char *where)
{
    unsigned long long seen = 0;
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = node_at(p, pr->key);
        if (k == NULL || k->type != YAML_SCALAR_NODE)
            return fail(p, k, "keys %s are names, found %s", where, k != NULL ? kind_name(k) : "nothing");
        int i = index_of(allowed, text_of(k));
        if (i < 0) {
            char names[512];
            return fail(p, k, "unknown key '%.80s' %s (allowed: %s)", text_of(k), where,
                        join(allowed, names, sizeof names));
        }
        assert(i < 64);
        if (seen & (1ull << i))
            return fail(p, k, "key '%s' given twice %s", allowed[i], where);
        seen |= 1ull << i;
    }
    return 0;
}

static int expect_map(parse_t *p, const yaml_node_t *n, const char *what)
{
    if (n->type != YAML_MAPPING_NODE)
        return fail(p, n, "%s must be a map, found %s", what, kind_name(n));
    return 0;
}

static int expect_list(parse_t *p, const yaml_node_t *n, const char *what)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(p, n, "%s must be a list, found %s", what, kind_name(n));
    return 0;
}

/* A non-empty scalar, copied into *out (freeing what was there). */
static int get_string(parse_t *p, const yaml_node_t *n, const char *what, char **out)
{
    if (n->type != YAML_SCALAR_NODE)
        return fail(p, n, "%s must be a word or text, found %s", what, kind_name(n));
    if (text_of(n)[0] == '\0')
        return fail(p, n, "%s is empty", what);
    char *copy = strdup(text_of(n));
    if (copy == NULL)
        return fail(p, n, "out of memory");
    free(*out);
    *out = copy;
    return 0;
}

/* 0: an integer in *out; -1: not an integer; -2: out of the range of long long. */
static int scalar_integer(const yaml_node_t *n, long long *out)
{
    const char *t = text_of(n);
    if (t == NULL)
        return -1;
    const char *d = t + (t[0] == '-' || t[0] == '+');
    if (*d == '\0')
        return -1;
    for (const char *c = d; *c != '\0'; c++)
        if (*c < '0' || *c > '9')
            return -1;
    errno = 0;
    long long v = strtoll(t, NULL, 10);
    if (errno == ERANGE)
        return -2;
    *out = v;
    return 0;
}

/* An integer within [min, max]; -1 with a reason otherwise. */
static int get_int(parse_t *p, const yaml_node_t *n, const char *what, long long min, long long max,
                   long long *out)
{
    long long v = 0;
    int rc = scalar_integer(n, &v);
    if (rc == -1) {
        if (n->type != YAML_SCALAR_NODE)
            return fail(p, n, "%s must be an integer, found %s", what, kind_name(n));
        return fail(p, n, "%s must be an integer, got '%.40s'", what, text_of(n));
    }
    if (rc == -2 || v < min || v > max)
        return fail(p, n, "%s must be between %lld and %lld, got %.40s", what, min, max, text_of(n));
    *out = v;
    return 0;
}

static int get_int32(parse_t *p, const yaml_node_t *n, const char *what, int min, int max, int *out)
{
    long long v = 0;
    if (get_int(p, n, what, min, max, &v) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

static bool word_is(const char *t, const char *lower, const char *title, const char *upper)
{
    return strcmp(t, lower) == 0 || strcmp(t, title) == 0 || strcmp(t, upper) == 0;
}

static int get_bool(parse_t *p, const yaml_node_t *n, const char *what, bool *out)
{
    const char *t = text_of(n);
    if (t != NULL && is_plain(n) && word_is(t, "true", "True", "TRUE")) {
        *out = true;
        return 0;
    }
    if (t != NULL && is_plain(n) && word_is(t, "false", "False", "FALSE")) {
        *out = false;
        return 0;
    }
    return fail(p, n, "%s must be true or false", what);
}

/* ---- YAML to JSON ------------------------------------------------------ */

/* True when t is a YAML 1.2 core float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool looks_float(const char *t)
{
    const char *c = t + (*t == '-' || *t == '+');
    size_t int_digits = 0, frac_digits = 0;
    while (*c >= '0' && *c <= '9') {
        c++;
        int_digits++;
    }
    if (*c == '.') {
        c++;
        while (*c >= '0' && *c <= '9') {
            c++;
            frac_digits++;
        }
    }
    if (int_digits == 0 && frac_digits == 0)
        return false;
    if (*c == 'e' || *c == 'E') {
        c++;
        if (*c == '-' || *c == '+')
            c++;
        if (!(*c >= '0' && *c <= '9'))
            return false;
        while (*c >= '0' && *c <= '9')
            c++;
    }
    return *c == '\0';
}

static json_t *scalar_to_json(parse_t *p, const yaml_node_t *n)
{
    const char *t = text_of(n);
    size_t len = n->data.scalar.length;
    json_t *j = NULL;
    if (!is_plain(n)) {
        j = json_stringn(t, len);
    } else if (is_null(n)) {
        j = json_null();
    } else if (word_is(t, "true", "True", "TRUE")) {
        j = json_true();
    } else if (word_is(t, "false", "False", "FALSE")) {
        j = json_false();
    } else {
        long long v = 0;
        int rc = scalar_integer(n, &v);
        if (rc == 0) {
            j = json_integer(v);
        } else if (rc == -2) {
            fail(p, n, "integer %.40s is out of range (64 bits)", t);
            return NULL;
        } else if (looks_float(t)) {
            double d = strtod(t, NULL);
            if (!isfinite(d)) {
                fail(p, n, "number %.40s is out of range", t);
                return NULL;
            }
            j = json_real(d);
        } else {
            j = json_stringn(t, len);
        }
    }
    if (j == NULL)
        fail(p, n, "cannot hold '%.40s' as JSON (out of memory or not UTF-8)", t);
    return j;
}

/* A new JSON value for node n, or NULL with the error written. */
static json_t *to_json(parse_t *p, const yaml_node_t *n, int depth)
{
    if (depth > JSON_MAX_DEPTH) {
        fail(p, n, "nested more than %d levels deep (or an alias refers to itself)", JSON_MAX_DEPTH);
        return NULL;
    }
    if (--p->json_budget < 0) {
        fail(p, n, "too many values once aliases are expanded (more than %d)", JSON_MAX_NODES);
        return NULL;
    }
    if (n->type == YAML_SCALAR_NODE)
        return scalar_to_json(p, n);
    if (n->type == YAML_SEQUENCE_NODE) {
        json_t *arr = json_array();
        if (arr == NULL) {
            fail(p, n, "out of memory");
            return NULL;
        }
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
            const yaml_node_t *item = node_at(p, *it);
            json_t *v = item != NULL ? to_json(p, item, depth + 1) : NULL;
            if (v == NULL || json_array_append_new(arr, v) != 0) {
                if (item == NULL)
                    fail(p, n, "broken YAML document");
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    if (n->type != YAML_MAPPING_NODE) {
        fail(p, n, "broken YAML document");
        return NULL;
    }
    json_t *obj = json_object();
    if (obj == NULL) {
        fail(p, n, "out of memory");
        return NULL;
    }
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = node_at(p, pr->key);
        const yaml_node_t *val = node_at(p, pr->value);
        if (k == NULL || val == NULL || k->type != YAML_SCALAR_NODE) {
            fail(p, k != NULL ? k : n, "keys of a request or reply are field names, found %s",
                 k != NULL ? kind_name(k) : "nothing");
            json_decref(obj);
            return NULL;
        }
        if (json_object_get(obj, text_of(k)) != NULL) {
            fail(p, k, "field '%.80s' given twice", text_of(k));
            json_decref(obj);
            return NULL;
        }
        json_t *v = to_json(p, val, depth + 1);
        if (v == NULL) {
            json_decref(obj);
            return NULL;
        }
        if (json_object_set_new(obj, text_of(k), v) != 0) {
            fail(p, k, "field name '%.80s' is not valid UTF-8 text", text_of(k));
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* A map converted to a JSON object (what requests and replies are). */
static int get_object(parse_t *p, const yaml_node_t *n, const char *what, json_t **out)
{
    if (n->type != YAML_MAPPING_NODE)
        return fail(p, n, "%s must be a map of fields, found %s%s", what, kind_name(n),
                    is_null(n) ? " (write {} for no fields)" : "");
    json_t *j = to_json(p, n, 0);
    if (j == NULL)
        return -1;
    json_decref(*out);
    *out = j;
    return 0;
}

/* ---- templates ---------------------------------------------------------- */

/* The template at s ("{i}" or "{i%N}", N >= 1): its length in *used and N in *mod (0 for "{i}"). */
static bool template_at(const char *s, int *used, long *mod)
{
    long m = 0;
    int n = 0;
    if (sscanf(s, "{i%%%ld}%n", &m, &n) == 1 && n > 0 && m > 0) {
        *used = n;
        *mod = m;
        return true;
    }
    if (strncmp(s, "{i}", 3) == 0) {
        *used = 3;
        *mod = 0;
        return true;
    }
    return false;
}

bool scenario_expand_text(const char *tmpl, long i, char *out, size_t cap)
{
    assert(cap > 0);
    const char *s = tmpl;
    size_t o = 0;
    bool whole = false;
    while (*s != '\0' && o + 1 < cap) {
        int used = 0;
        long mod = 0;
        if (template_at(s, &used, &mod)) {
            whole = s == tmpl && s[used] == '\0';
            int n = snprintf(out + o, cap - o, "%ld", mod > 0 ? i % mod : i);
            if (n < 0 || (size_t)n >= cap - o) {
                o = cap - 1;
                break;
            }
            o += (size_t)n;
            s += used;
        } else {
            out[o++] = *s++;
        }
    }
    out[o] = '\0';
    return whole;
}

static size_t digits(long v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* The longest text `tmpl` expands to for i = 0 .. repeat-1. */
static size_t template_max_len(const char *tmpl, long repeat)
{
    size_t len = 0;
    for (const char *s = tmpl; *s != '\0';) {
        int used = 0;
        long mod = 0;
        if (template_at(s, &used, &mod)) {
            long top = repeat - 1;
            if (mod > 0 && mod - 1 < top)
                top = mod - 1;
            len += digits(top);
            s += used;
        } else {
            len++;
            s++;
        }
    }
    return len;
}

/* ---- services ---------------------------------------------------------- */

static const scenario_service_t *find_service(const scenario_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_services; i++)
        if (s->services[i].name != NULL && strcmp(s->services[i].name, name) == 0)
            return &s->services[i];
    return NULL;
}

static int unknown_service(parse_t *p, const yaml_node_t *at, const char *name, size_t len)
{
    char names[256];
    return fail(p, at, "unknown service '%.*s' (known: %s)", (int)(len > 80 ? 80 : len), name,
                join(scenario_service_names, names, sizeof names));
}

/* Name `name[0..len)` is a service the scenario starts; -1 says which it is not. */
static int check_started(parse_t *p, const yaml_node_t *at, const scenario_t *s, const char *name, size_t len)
{
    char buf[64];
    if (len >= sizeof buf)
        return unknown_service(p, at, name, len);
    memcpy(buf, name, len);
    buf[len] = '\0';
    if (index_of(scenario_service_names, buf) < 0)
        return unknown_service(p, at, name, len);
    if (find_service(s, buf) != NULL)
        return 0;
    char listed[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < s->n_services && used < sizeof listed; i++) {
        int n = snprintf(listed + used, sizeof listed - used, "%s%s", i > 0 ? ", " : "", s->services[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return fail(p, at, "service '%s' is not listed in services, so it is not started (listed: %s)", buf,
                s->n_services > 0 ? listed : "none");
}

/*
 * A node step's target, copied into *out: n1..nN, meta-leader,
 * leader-of:<stream>, connected-to:<a started service>, and `all` where
 * `all_ok` (restart_node, heal_node). Needs `nats: cluster`.
 */
static int parse_node(parse_t *p, const yaml_node_t *n, const scenario_t *s, const char *key, bool all_ok,
                      char **out)
{
    if (s->nats_nodes < 2)
        return fail(p, n, "'%s' needs 'nats: cluster' at top level (this story runs on one server)", key);
    if (get_string(p, n, key, out) != 0)
        return -1;
    const char *t = *out;
    char *end = NULL;
    if (t[0] == 'n' && t[1] >= '1' && t[1] <= '9') {
        long k = strtol(t + 1, &end, 10);
        if (*end == '\0' && k >= 1 && k <= s->nats_nodes)
            return 0;
        return fail(p, n, "no node '%.40s': the cluster has n1 to n%d", t, s->nats_nodes);
    }
    if (strcmp(t, "all") == 0) {
        if (all_ok)
            return 0;
        return fail(p, n, "'%s: all' would take the whole cluster down: name one node", key);
    }
    if (strcmp(t, "meta-leader") == 0)
        return 0;
    if (strncmp(t, "leader-of:", 10) == 0) {
        if (t[10] != '\0' && strspn(t + 10, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
                                  strlen(t + 10))
            return 0;
        return fail(p, n, "leader-of: wants a stream name ([A-Za-z0-9_-]), e.g. leader-of:KV_natomic_saga_orders");
    }
    if (strncmp(t, "connected-to:", 13) == 0)
        return check_started(p, n, s, t + 13, strlen(t + 13));
    return fail(p, n, "'%s: %.40s': a node is n1..n%d, meta-leader, leader-of:<stream> or connected-to:<service>%s",
                key, t, s->nats_nodes, all_ok ? ", or all" : "");
}

/* Keys of the map n. */
static size_t map_size(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start) : 0;
}

/* What a secure story cannot use, and why. */
static int not_in_secure(parse_t *p, const yaml_node_t *n, const char *what, const char *because)
{
    return fail(p, n, "%s cannot be used in a 'nats: secure' story: the shipped identities may not %s", what,
                because);
}

/* `as: <identity>`: one of deploy/'s users, in a secure story. */
static int get_identity(parse_t *p, const yaml_node_t *n, const scenario_t *s, char **out)
{
    if (!s->secure)
        return fail(p, n, "'as' needs 'nats: secure' at top level (a server with identities)");
    if (get_string(p, n, "as", out) != 0)
        return -1;
    if (index_of(scenario_identities, *out) >= 0)
        return 0;
    char names[160];
    return fail(p, n, "unknown identity '%.40s' (allowed: %s)", *out, join(scenario_identities, names, sizeof names));
}

/*
 * subscribe: <subject> [queue: <group>] / publish: <subject> [payload: text],
 * as an identity, in a secure story; expect: {refused: true} (the server
 * says "Permissions Violation") or {refused: false} (it lets it through).
 */
static int parse_wire_step(parse_t *p, const yaml_node_t *n, const scenario_t *s, const char *key,
                           scenario_step_t *st)
{
    if (!s->secure)
        return fail(p, n, "'%s' needs 'nats: secure' at top level (a server with identities)", key);
    const yaml_node_t *v = map_get(p, n, key);
    if (get_string(p, v, key, &st->subject) != 0)
        return -1;
    if (st->subject[0] == '\0' || strpbrk(st->subject, " \t\r\n") != NULL)
        return fail(p, v, "'%.60s' is not a subject (no spaces, not empty)", st->subject);
    if ((v = map_get(p, n, "queue")) != NULL && get_string(p, v, "queue", &st->queue) != 0)
        return -1;
    if ((v = map_get(p, n, "payload")) != NULL && get_string(p, v, "payload", &st->payload) != 0)
        return -1;
    if ((v = map_get(p, n, "as")) == NULL)
        return fail(p, n, "a %s step says who does it: as: client (or admin, orders, ...)", key);
    if (get_identity(p, v, s, &st->as) != 0)
        return -1;
    if ((v = map_get(p, n, "expect")) == NULL)
        return fail(p, n, "a %s step needs expect: {refused: true} or {refused: false}", key);
    const yaml_node_t *r = v->type == YAML_MAPPING_NODE ? map_get(p, v, "refused") : NULL;
    if (r == NULL || map_size(v) != 1)
        return fail(p, v, "a %s step's expect is {refused: true} or {refused: false}", key);
    st->has_expect = true;
    return get_bool(p, r, "refused", &st->expect.refused);
}

/* A step's target service: a listed one, copied into *out. */
static int get_started(parse_t *p, const yaml_node_t *n, const scenario_t *s, const char *what, char **out)
{
    if (get_string(p, n, what, out) != 0)
        return -1;
    return check_started(p, n, s, *out, strlen(*out));
}

static int parse_instances(parse_t *p, const yaml_node_t *v, scenario_service_t *svc)
{
    if (is_null(v))
        return 0;
    if (v->type == YAML_SCALAR_NODE)
        return get_int32(p, v, "instances", 1, MAX_INSTANCES, &svc->instances);
    if (v->type != YAML_MAPPING_NODE)
        return fail(p, v, "a service's value is a number of instances or {instances: N}, found %s", kind_name(v));
    if (check_keys(p, v, instance_keys, "in a service") != 0)
        return -1;
    const yaml_node_t *n = map_get(p, v, "instances");
    return n != NULL ? get_int32(p, n, "instances", 1, MAX_INSTANCES, &svc->instances) : 0;
}

static int parse_services(parse_t *p, const yaml_node_t *n, scenario_t *s)
{
    bool is_map = n->type == YAML_MAPPING_NODE;
    if (!is_map && n->type != YAML_SEQUENCE_NODE)
        return fail(p, n, "services must be a list of names or a map of name: {instances: N}, found %s",
                    kind_name(n));
    size_t count = is_map ? (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start)
                          : (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return 0;
    s->services = calloc(count, sizeof *s->services);
    if (s->services == NULL)
        return fail(p, n, "out of memory");
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *name_node =
            node_at(p, is_map ? n->data.mapping.pairs.start[i].key : n->data.sequence.items.start[i]);
        const yaml_node_t *value = is_map ? node_at(p, n->data.mapping.pairs.start[i].value) : NULL;
        if (name_node == NULL || (is_map && value == NULL))
            return fail(p, n, "broken YAML document");
        if (name_node->type != YAML_SCALAR_NODE)
            return fail(p, name_node, "a service is named by a word, found %s", kind_name(name_node));
        const char *name = text_of(name_node);
        if (index_of(scenario_service_names, name) < 0)
            return unknown_service(p, name_node, name, strlen(name));
        if (find_service(s, name) != NULL)
            return fail(p, name_node, "service '%s' listed twice", name);
        scenario_service_t *svc = &s->services[s->n_services];
        svc->name = strdup(name);
        svc->instances = 1;
        svc->line = line_of(name_node);
        if (svc->name == NULL)
            return fail(p, name_node, "out of memory");
        s->n_services++;
        if (is_map && parse_instances(p, value, svc) != 0)
            return -1;
    }
    return 0;
}

/* `instance: N` for a listed service: 0 <= N < its instances, into *out. */
static int get_instance(parse_t *p, const yaml_node_t *n, const scenario_t *s, const char *service, int *out)
{
    const scenario_service_t *svc = find_service(s, service);
    assert(svc != NULL); /* checked started before */
    long long v = 0;
    int rc = scalar_integer(n, &v);
    if (rc == -1)
        return fail(p, n, "instance must be an instance number (0 for the first), got %.40s",
                    n->type == YAML_SCALAR_NODE ? text_of(n) : kind_name(n));
    if (rc == -2 || v < 0 || v >= svc->instances) {
        char range[32];
        if (svc->instances == 1)
            snprintf(range, sizeof range, "1 instance, number 0");
        else
            snprintf(range, sizeof range, "%d instances, 0 to %d", svc->instances, svc->instances - 1);
        return fail(p, n, "instance %.40s of %s does not exist: services gives it %s", text_of(n), service, range);
    }
    *out = (int)v;
    return 0;
}

/* ---- faults ------------------------------------------------------------ */

static bool action_valid(const char *a)
{
    if (index_of(fault_actions, a) >= 0 && strcmp(a, "delay:<ms>") != 0)
        return true;
    if (strncmp(a, "delay:", 6) != 0)
        return false;
    const char *d = a + 6;
    size_t n = strlen(d);
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++)
        if (d[i] < '0' || d[i] > '9')
            return false;
    return atoi(d) <= MAX_WAIT_MS;
}

static const scenario_fault_point_t *find_fault_point(const char *name)
{
    for (const scenario_fault_point_t *fp = scenario_fault_points; fp->name != NULL; fp++)
        if (strcmp(fp->name, name) == 0)
            return fp;
    return NULL;
}

/* Levenshtein distance of a and b, both shorter than 64 bytes (else a large number). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n >= 64 || m >= 64)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= m; j++)
        row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

/*
 * A point no service defines would be accepted by the services and never
 * fire: the story would silently test nothing. Refused here, with the
 * nearest known name when one is close, and the whole list.
 */
static int unknown_fault_point(parse_t *p, const yaml_node_t *at, const char *name)
{
    const char *nearest = NULL;
    size_t best = 4; /* at most 3 edits away: a typo, not another point */
    char known[1024];
    size_t used = 0;
    known[0] = '\0';
    for (const scenario_fault_point_t *fp = scenario_fault_points; fp->name != NULL; fp++) {
        size_t d = edit_distance(name, fp->name);
        if (d < best) {
            best = d;
            nearest = fp->name;
        }
        int n = snprintf(known + used, sizeof known - used, "%s%s", used > 0 ? ", " : "", fp->name);
        if (n < 0 || (size_t)n >= sizeof known - used)
            break;
        used += (size_t)n;
    }
    if (nearest != NULL)
        return fail(p, at, "unknown fault point '%.80s': did you mean %s? (known: %s; see docs/fault-points.md)", name,
                    nearest, known);
    return fail(p, at, "unknown fault point '%.80s' (known: %s; see docs/fault-points.md)", name, known);
}

/* The action is one the point defines: crash, pause and delay everywhere, error, drop, duplicate per point. */
static int check_point_action(parse_t *p, const yaml_node_t *at, const scenario_fault_point_t *fp, const char *action)
{
    bool defined = true;
    if (strcmp(action, "error") == 0)
        defined = fp->error;
    else if (strcmp(action, "drop") == 0)
        defined = fp->drop;
    else if (strcmp(action, "duplicate") == 0)
        defined = fp->duplicate;
    if (defined)
        return 0;
    return fail(p, at, "fault point %s does not define '%s': it would never fire (it defines: %s%s%scrash, pause, "
                       "delay:<ms>; see docs/fault-points.md)",
                fp->name, action, fp->error ? "error, " : "", fp->drop ? "drop, " : "",
                fp->duplicate ? "duplicate, " : "");
}

/* A fault (with_action) or a release (service and point only) into *f. */
static int parse_fault(parse_t *p, const yaml_node_t *n, const scenario_t *s, bool with_action, scenario_fault_t *f)
{
    const char *what = with_action ? "fault" : "release";
    f->times = 0;
    f->probability = 1.0;
    f->instance = -1;
    f->line = line_of(n);
    if (n->type != YAML_MAPPING_NODE)
        return fail(p, n, "a %s is a map like {service: orders, point: natomic/before_reply%s}, found %s", what,
                    with_action ? ", action: error" : "", kind_name(n));
    char where[32];
    snprintf(where, sizeof where, "in a %s", what);
    if (check_keys(p, n, with_action ? fault_keys : release_keys, where) != 0)
        return -1;
    const yaml_node_t *v = map_get(p, n, "service");
    if (v == NULL)
        return fail(p, n, "a %s needs 'service'", what);
    if (get_started(p, v, s, "service", &f->service) != 0)
        return -1;
    v = map_get(p, n, "point");
    if (v == NULL)
        return fail(p, n, "a %s needs 'point' (a fault point name, see docs/fault-points.md)", what);
    if (get_string(p, v, "point", &f->point) != 0)
        return -1;
    const scenario_fault_point_t *fp = find_fault_point(f->point);
    if (fp == NULL)
        return unknown_fault_point(p, v, f->point);
    if ((v = map_get(p, n, "instance")) != NULL && get_instance(p, v, s, f->service, &f->instance) != 0)
        return -1;
    if (!with_action)
        return 0;
    v = map_get(p, n, "action");
    if (v == NULL)
        return fail(p, n, "a fault needs 'action'");
    if (get_string(p, v, "action", &f->action) != 0)
        return -1;
    if (!action_valid(f->action)) {
        char names[128];
        return fail(p, v, "unknown fault action '%.40s' (allowed: %s, with 0 <= ms <= %d)", f->action,
                    join(fault_actions, names, sizeof names), MAX_WAIT_MS);
    }
    if (check_point_action(p, v, fp, f->action) != 0)
        return -1;
    v = map_get(p, n, "times");
    if (v != NULL) {
        const char *t = text_of(v);
        long long ignored;
        if (t != NULL && strcmp(t, "always") == 0)
            f->times = 0;
        else if (scalar_integer(v, &ignored) == -1)
            return fail(p, v, "times must be a number >= 1 or 'always', got %.40s", t != NULL ? t : kind_name(v));
        else if (get_int32(p, v, "times", 1, MAX_TIMES, &f->times) != 0)
            return -1;
    }
    v = map_get(p, n, "probability");
    if (v != NULL) {
        const char *t = text_of(v);
        double d = t != NULL && looks_float(t) ? strtod(t, NULL) : NAN;
        if (!(d > 0.0 && d <= 1.0))
            return fail(p, v, "probability must be in (0, 1], got %.40s", t != NULL ? t : kind_name(v));
        f->probability = d;
    }
    return 0;
}

static int parse_faults(parse_t *p, const yaml_node_t *n, scenario_t *s)
{
    if (is_null(n))
        return 0;
    if (s->secure)
        return not_in_secure(p, n, "fault points", "use run-time fault control ($NATOMIC.FAULTS.>)");
    if (expect_list(p, n, "faults") != 0)
        return -1;
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return 0;
    s->faults = calloc(count, sizeof *s->faults);
    if (s->faults == NULL)
        return fail(p, n, "out of memory");
    s->n_faults = count;
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = node_at(p, n->data.sequence.items.start[i]);
        if (item == NULL)
            return fail(p, n, "broken YAML document");
        if (parse_fault(p, item, s, true, &s->faults[i]) != 0)
            return -1;
    }
    return 0;
}

/* ---- expected values: comparisons, sequences, barrier outcomes ---------- */

static const char *const cmp_texts[] = {"=", "!=", "<", "<=", ">", ">="};

const char *scenario_cmp_text(scenario_cmp_t op)
{
    return (unsigned)op < sizeof cmp_texts / sizeof cmp_texts[0] ? cmp_texts[op] : "?";
}

bool scenario_compare(long long got, scenario_cmp_t op, long long want)
{
    switch (op) {
    case CMP_EQ: return got == want;
    case CMP_NE: return got != want;
    case CMP_LT: return got < want;
    case CMP_LE: return got <= want;
    case CMP_GT: return got > want;
    case CMP_GE: return got >= want;
    }
    return false;
}

/*
 * An expected integer: `3`, or a comparison written as text, `">= 1"`,
 * `"< 5"`, `"!= 0"` (also "<=", ">", "=="). Quoted, because unquoted YAML
 * reads `>` as a folded block and `!` as a tag: a tag is refused here
 * rather than silently dropped. The integer is within [min, LLONG_MAX].
 */
static int get_expected(parse_t *p, const yaml_node_t *n, const char *what, long long min, scenario_cmp_t *op,
                        long long *out)
{
    *op = CMP_EQ;
    if (n->type == YAML_SCALAR_NODE && n->tag != NULL && n->tag[0] == '!' && strncmp((const char *)n->tag, "!!", 2) != 0)
        return fail(p, n, "%s: write a comparison in quotes, e.g. \"%s %.20s\" (unquoted, YAML reads '%s' as a tag)",
                    what, (const char *)n->tag, text_of(n), (const char *)n->tag);
    const char *t = text_of(n);
    long long plain = 0;
    if (t != NULL && scalar_integer(n, &plain) == -1) {
        static const struct {
            const char *text;
            scenario_cmp_t op;
        } ops[] = {{"==", CMP_EQ}, {"!=", CMP_NE}, {"<=", CMP_LE}, {">=", CMP_GE}, {"<", CMP_LT}, {">", CMP_GT}};
        const char *c = t;
        while (*c == ' ')
            c++;
        size_t k = 0;
        for (; k < sizeof ops / sizeof ops[0]; k++)
            if (strncmp(c, ops[k].text, strlen(ops[k].text)) == 0)
                break;
        if (k == sizeof ops / sizeof ops[0])
            return fail(p, n, "%s must be an integer or a comparison like \">= 1\" (one of ==, !=, <, <=, >, >=), "
                              "got '%.40s'", what, t);
        c += strlen(ops[k].text);
        while (*c == ' ')
            c++;
        char *end = NULL;
        errno = 0;
        long long v = strtoll(c, &end, 10);
        bool digits = end != c && (c[0] == '-' || c[0] == '+' || (c[0] >= '0' && c[0] <= '9'));
        while (end != NULL && *end == ' ')
            end++;
        if (!digits || end == NULL || *end != '\0' || errno == ERANGE)
            return fail(p, n, "%s: '%.40s' compares with something that is not an integer", what, t);
        if (v < min)
            return fail(p, n, "%s must compare with an integer >= %lld, got %.40s", what, min, t);
        *op = ops[k].op;
        *out = v;
        return 0;
    }
    long long v = 0;
    if (get_int(p, n, what, min, LLONG_MAX, &v) != 0)
        return -1;
    *out = v;
    return 0;
}

/* A name "<service>.<name>" with [A-Za-z0-9_]+ parts whose service is listed; `form` names it in errors. */
static int check_service_dotted(parse_t *p, const yaml_node_t *at, const scenario_t *s, const char *key,
                                const char *what, const char *form)
{
    const char *dot = strchr(key, '.');
    if (dot == NULL || !is_ident(key, (size_t)(dot - key), false) || !is_ident(dot + 1, strlen(dot + 1), false))
        return fail(p, at, "%s entry '%.80s' is not %s", what, key, form);
    return check_started(p, at, s, key, (size_t)(dot - key));
}

/*
 * An expected sequence: a list whose entries are "<service>.<name>" or a
 * one-key map {<service>.<name>: {field: value, ...}} (a partial match of
 * the compensation's request, or of the event). [] expects none.
 */
static int parse_sequence(parse_t *p, const yaml_node_t *n, const scenario_t *s, const char *what, const char *form,
                          scenario_seq_t *out)
{
    if (expect_list(p, n, what) != 0)
        return -1;
    out->given = true;
    out->line = line_of(n);
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return 0;
    out->items = calloc(count, sizeof *out->items);
    if (out->items == NULL)
        return fail(p, n, "out of memory");
    out->n = count;
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = node_at(p, n->data.sequence.items.start[i]);
        if (item == NULL)
            return fail(p, n, "broken YAML document");
        scenario_seq_item_t *it = &out->items[i];
        it->line = line_of(item);
        const yaml_node_t *name = item, *fields = NULL;
        if (item->type == YAML_MAPPING_NODE) {
            if (item->data.mapping.pairs.top - item->data.mapping.pairs.start != 1)
                return fail(p, item, "an entry of %s is %s or a map with one key: {%s: {field: value}}", what, form,
                            form);
            name = node_at(p, item->data.mapping.pairs.start[0].key);
            fields = node_at(p, item->data.mapping.pairs.start[0].value);
            if (name == NULL || fields == NULL)
                return fail(p, item, "broken YAML document");
        }
        if (name->type != YAML_SCALAR_NODE)
            return fail(p, name, "an entry of %s is %s, found %s", what, form, kind_name(name));
        if (get_string(p, name, what, &it->name) != 0 || check_service_dotted(p, name, s, it->name, what, form) != 0)
            return -1;
        if (fields != NULL && get_object(p, fields, "the fields of an entry", &it->fields) != 0)
            return -1;
    }
    return 0;
}

/* One bound of retry_waits: "A..B" (inclusive, ms) or a comparison ("<= 39", ">= 20", "< 40", "> 19"). */
static int parse_wait_range(parse_t *p, const yaml_node_t *n, const char *what, scenario_wait_range_t *out)
{
    out->line = line_of(n);
    out->lo = 0;
    out->hi = LLONG_MAX;
    const char *t = text_of(n);
    const char *dots = t != NULL ? strstr(t, "..") : NULL;
    if (n->type == YAML_SCALAR_NODE && dots != NULL) {
        char *end = NULL;
        errno = 0;
        long long lo = strtoll(t, &end, 10);
        bool lo_ok = end == dots && end != t && errno == 0;
        errno = 0;
        long long hi = strtoll(dots + 2, &end, 10);
        bool hi_ok = end != dots + 2 && *end == '\0' && errno == 0;
        if (!lo_ok || !hi_ok || lo < 0 || hi < lo)
            return fail(p, n, "%s: '%.40s' is not a range of milliseconds \"A..B\" with 0 <= A <= B", what, t);
        out->lo = lo;
        out->hi = hi;
        return 0;
    }
    scenario_cmp_t op;
    long long v = 0;
    if (get_expected(p, n, what, 0, &op, &v) != 0)
        return -1;
    switch (op) {
    case CMP_EQ: out->lo = out->hi = v; break;
    case CMP_LT: out->hi = v - 1; break;
    case CMP_LE: out->hi = v; break;
    case CMP_GT: out->lo = v + 1; break;
    case CMP_GE: out->lo = v; break;
    case CMP_NE: return fail(p, n, "%s: a wait is bounded with \"A..B\", <, <=, > or >=, not !=", what);
    }
    if (out->hi < out->lo)
        return fail(p, n, "%s: no wait can be '%.40s'", what, t != NULL ? t : "");
    return 0;
}

/* retry_waits: {<service>.<method>: [range, ...], ...}: one range per wait between two attempts. */
static int parse_retry_waits(parse_t *p, const yaml_node_t *n, const scenario_t *s, scenario_waits_t **out,
                             size_t *n_out)
{
    if (expect_map(p, n, "retry_waits") != 0)
        return -1;
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count == 0)
        return fail(p, n, "retry_waits is empty: name a compensation and its waits in ms, e.g. {payments.refund: "
                          "[\"20..39\", \"40..79\"]}");
    if ((*out = calloc(count, sizeof **out)) == NULL)
        return fail(p, n, "out of memory");
    *n_out = 0;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = node_at(p, pr->key), *v = node_at(p, pr->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE)
            return fail(p, k != NULL ? k : n, "keys of retry_waits are <service>.<method>");
        scenario_waits_t *w = &(*out)[(*n_out)++];
        w->line = line_of(k);
        if (get_string(p, k, "retry_waits", &w->name) != 0 ||
            check_service_dotted(p, k, s, w->name, "retry_waits", "<service>.<method>") != 0)
            return -1;
        for (scenario_waits_t *q = *out; q < w; q++)
            if (strcmp(q->name, w->name) == 0)
                return fail(p, k, "'%.80s' given twice in retry_waits", w->name);
        if (expect_list(p, v, "the waits of a compensation") != 0)
            return -1;
        size_t m = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        if (m == 0)
            return fail(p, v, "the waits of %s are a non-empty list, one range per retry, e.g. [\"20..39\"]",
                        w->name);
        if ((w->gaps = calloc(m, sizeof *w->gaps)) == NULL)
            return fail(p, v, "out of memory");
        for (size_t i = 0; i < m; i++) {
            const yaml_node_t *item = node_at(p, v->data.sequence.items.start[i]);
            if (item == NULL)
                return fail(p, v, "broken YAML document");
            if (parse_wait_range(p, item, "a wait of retry_waits", &w->gaps[i]) != 0)
                return -1;
            w->n++;
        }
    }
    return 0;
}

/* barrier: {<service>: {<outcome>: value, ...}, ...} into checks keyed "<service>.<outcome>". */
static int parse_barrier(parse_t *p, const yaml_node_t *n, const scenario_t *s, scenario_check_t **out,
                         size_t *n_out)
{
    if (expect_map(p, n, "barrier") != 0)
        return -1;
    size_t total = 0;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        const yaml_node_t *v = node_at(p, pr->value);
        if (v != NULL && v->type == YAML_MAPPING_NODE)
            total += (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    }
    if (total == 0 && n->data.mapping.pairs.top == n->data.mapping.pairs.start)
        return fail(p, n, "barrier is empty: name a participant and the outcomes to count, e.g. {payments: "
                          "{null_compensation: 1}}");
    scenario_check_t *checks = calloc(total > 0 ? total : 1, sizeof *checks);
    if (checks == NULL)
        return fail(p, n, "out of memory");
    *out = checks;
    *n_out = 0;
    char names[128];
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = node_at(p, pr->key), *v = node_at(p, pr->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE)
            return fail(p, k != NULL ? k : n, "keys of barrier are service names");
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < pr; q++)
            if (strcmp(text_of(node_at(p, q->key)), text_of(k)) == 0)
                return fail(p, k, "'%.40s' given twice in barrier", text_of(k));
        if (check_started(p, k, s, text_of(k), strlen(text_of(k))) != 0)
            return -1;
        if (v->type != YAML_MAPPING_NODE || v->data.mapping.pairs.top == v->data.mapping.pairs.start)
            return fail(p, v, "barrier of %s is a map of outcomes to counts, e.g. {executed: 1, null_compensation: "
                              "1} (outcomes: %s)", text_of(k), join(scenario_barrier_outcomes, names, sizeof names));
        if (check_keys(p, v, scenario_barrier_outcomes, "in a participant's barrier outcomes") != 0)
            return -1;
        for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
            const yaml_node_t *ok = node_at(p, q->key), *ov = node_at(p, q->value);
            scenario_check_t *c = &checks[(*n_out)++];
            size_t len = strlen(text_of(k)) + strlen(text_of(ok)) + 2;
            if ((c->key = malloc(len)) == NULL)
                return fail(p, ok, "out of memory");
            snprintf(c->key, len, "%s.%s", text_of(k), text_of(ok));
            c->line = line_of(ok);
            if (ov == NULL)
                return fail(p, ok, "broken YAML document");
            if (get_expected(p, ov, c->key, 0, &c->op, &c->value) != 0)
                return -1;
        }
    }
    return 0;
}

/* ---- steps ------------------------------------------------------------- */

/*
 * What happened in the call's transaction -- its compensations, its events,
 * its barrier outcomes -- is checked with the final checks, for one call:
 * not with `repeat`, and not in seed_data (which checks replies only).
 */
static int parse_call_outcomes(parse_t *p, const yaml_node_t *n, const scenario_t *s, const scenario_step_t *st,
                               bool seed_data, scenario_call_expect_t *e)
{
    static const char *const keys[] = {"compensations", "events", "barrier", "retry_waits"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const yaml_node_t *v = map_get(p, n, keys[i]);
        if (v == NULL)
            continue;
        if (seed_data)
            return fail(p, v, "'%s' does not go in seed_data: a seed call checks its reply only", keys[i]);
        if (st->repeat > 1)
            return fail(p, v, "'%s' checks one call's transaction: it does not go with 'repeat' (%d calls)", keys[i],
                        st->repeat);
    }
    const yaml_node_t *v;
    if ((v = map_get(p, n, "compensations")) != NULL && s->secure)
        return not_in_secure(p, v, "a call's compensations", "send trace copies (natomic.trace.>)");
    if ((v = map_get(p, n, "retry_waits")) != NULL && s->secure)
        return not_in_secure(p, v, "retry waits", "send trace copies (natomic.trace.>)");
    if ((v = map_get(p, n, "compensations")) != NULL &&
        parse_sequence(p, v, s, "compensations", "<service>.<method>", &e->compensations) != 0)
        return -1;
    if ((v = map_get(p, n, "events")) != NULL && parse_sequence(p, v, s, "events", "<service>.<type>", &e->events) != 0)
        return -1;
    if ((v = map_get(p, n, "barrier")) != NULL && parse_barrier(p, v, s, &e->barrier, &e->n_barrier) != 0)
        return -1;
    if ((v = map_get(p, n, "retry_waits")) != NULL &&
        parse_retry_waits(p, v, s, &e->retry_waits, &e->n_retry_waits) != 0)
        return -1;
    return 0;
}

/* A call's expect; `keyed`: the call sends an idempotency key (only such a call can be replayed). */
static int parse_call_expect(parse_t *p, const yaml_node_t *n, const scenario_t *s, const scenario_step_t *st,
                             bool seed_data, scenario_call_expect_t *e)
{
    bool keyed = st->idempotency_key != NULL;
    if (n->type != YAML_MAPPING_NODE)
        return fail(p, n, "a call's expect must be a map: {reply: {...}} | {error: Type, code: 422, rollback: "
                          "complete} | {replayed: true} | {timeout: true} | {any: true}, found %s",
                    kind_name(n));
    if (check_keys(p, n, call_expect_keys, "in a call's expect") != 0)
        return -1;
    const yaml_node_t *any = map_get(p, n, "any");
    const yaml_node_t *timeout = map_get(p, n, "timeout");
    const yaml_node_t *error = map_get(p, n, "error");
    const yaml_node_t *code = map_get(p, n, "code");
    const yaml_node_t *rollback = map_get(p, n, "rollback");
    const yaml_node_t *reply = map_get(p, n, "reply");
    const yaml_node_t *replayed = map_get(p, n, "replayed");
    const yaml_node_t *refused = map_get(p, n, "refused");
    if (refused != NULL) {
        if (!s->secure)
            return fail(p, refused, "'refused' needs 'nats: secure' at top level (a server with identities)");
        if (get_bool(p, refused, "refused", &e->refused) != 0)
            return -1;
        if (!e->refused)
            return fail(p, refused, "say what the call gives instead of 'refused: false' (reply, error, ...)");
        if (map_size(n) != 1)
            return fail(p, n, "'refused: true' stands alone: the server drops the call, nothing comes back");
        return 0;
    }
    if (any != NULL && get_bool(p, any, "any", &e->any) != 0)
        return -1;
    if (timeout != NULL && get_bool(p, timeout, "timeout", &e->timeout) != 0)
        return -1;
    if (replayed != NULL) {
        if (get_bool(p, replayed, "replayed", &e->replayed) != 0)
            return -1;
        e->check_replayed = true;
        if (e->replayed && !keyed)
            return fail(p, replayed, "'replayed: true' needs 'idempotency_key' in the call: only a call with a key "
                                     "is answered from a stored outcome");
    }
    size_t others = (error != NULL) + (code != NULL) + (rollback != NULL) + (reply != NULL) + (replayed != NULL);
    if (e->any && (e->timeout || others > 0))
        return fail(p, any, "'any: true' stands alone: it expects no reply, error or timeout in particular");
    if (e->timeout && others > 0)
        return fail(p, timeout, "'timeout: true' stands alone: no reply and no error arrive in time");
    if ((error != NULL || code != NULL) && reply != NULL)
        return fail(p, reply, "expect takes 'error' or 'reply', not both");
    if (rollback != NULL && error == NULL && code == NULL)
        return fail(p, rollback, "'rollback' goes with 'error' (the rollback of a failed call)");
    if (!e->any && !e->timeout && others == 0)
        return fail(p, n, "a call's expect needs one of: reply, error, code, replayed, timeout: true, any: true");
    if (error != NULL && get_string(p, error, "error", &e->error) != 0)
        return -1;
    if (code != NULL) {
        long long v = 0;
        if (get_int(p, code, "code (an error reply's Nats-Service-Error-Code)", 100, 599, &v) != 0)
            return -1;
        e->code = (int)v;
    }
    if (rollback != NULL) {
        if (get_string(p, rollback, "rollback", &e->rollback) != 0)
            return -1;
        if (index_of(rollback_names, e->rollback) < 0) {
            char names[64];
            return fail(p, rollback, "unknown rollback '%.40s' (allowed: %s)", e->rollback,
                        join(rollback_names, names, sizeof names));
        }
    }
    if (reply != NULL && get_object(p, reply, "reply", &e->reply) != 0)
        return -1;
    return parse_call_outcomes(p, n, s, st, seed_data, e);
}

/*
 * idempotency_key: what natomic_request_idempotent() accepts -- 1 to 128
 * printable ASCII characters, no spaces -- for every call of the step once
 * "{i}" and "{i%N}" are expanded (so after `repeat` is known).
 */
static int get_idempotency_key(parse_t *p, const yaml_node_t *n, scenario_step_t *st)
{
    if (n->type != YAML_SCALAR_NODE)
        return fail(p, n, "idempotency_key must be a word, found %s", kind_name(n));
    const char *key = text_of(n);
    if (key[0] == '\0')
        return fail(p, n, "idempotency_key is empty: leave the key out to send none");
    for (const char *c = key; *c != '\0'; c++)
        if (*c <= ' ' || *c > '~')
            return fail(p, n, "idempotency_key '%.60s' holds %s: a key is printable ASCII without spaces", key,
                        *c == ' ' ? "a space" : "a character that is not printable ASCII");
    size_t longest = template_max_len(key, st->repeat), len = strlen(key);
    if (longest > SCENARIO_MAX_IDEMPOTENCY_KEY)
        return fail(p, n, "idempotency_key '%.40s%s' is %zu characters long%s: at most %d", key, len > 40 ? "..." : "",
                    longest, longest != len ? " once its templates are expanded" : "", SCENARIO_MAX_IDEMPOTENCY_KEY);
    if ((st->idempotency_key = strdup(key)) == NULL)
        return fail(p, n, "out of memory");
    return 0;
}

static int parse_call(parse_t *p, const yaml_node_t *n, const scenario_t *s, bool seed_data, scenario_step_t *st)
{
    const yaml_node_t *v = map_get(p, n, "call");
    if (get_string(p, v, "call", &st->subject) != 0)
        return -1;
    const char *dot = strchr(st->subject, '.');
    if (dot == NULL || !is_ident(st->subject, (size_t)(dot - st->subject), false) ||
        !is_ident(dot + 1, strlen(dot + 1), false))
        return fail(p, v, "call '%.80s' is not <service>.<method> (e.g. orders.create_order)", st->subject);
    if (check_started(p, v, s, st->subject, (size_t)(dot - st->subject)) != 0)
        return -1;
    if ((v = map_get(p, n, "request")) != NULL) {
        if (get_object(p, v, "request", &st->request) != 0)
            return -1;
    } else if ((st->request = json_object()) == NULL) {
        return fail(p, n, "out of memory");
    }
    if ((v = map_get(p, n, "timeout")) != NULL && get_int32(p, v, "timeout (ms)", 1, MAX_TIMEOUT_MS, &st->timeout_ms) != 0)
        return -1;
    if ((v = map_get(p, n, "repeat")) != NULL && get_int32(p, v, "repeat", 1, MAX_REPEAT, &st->repeat) != 0)
        return -1;
    if ((v = map_get(p, n, "concurrency")) != NULL &&
        get_int32(p, v, "concurrency", 1, MAX_CONCURRENCY, &st->concurrency) != 0)
        return -1;
    if ((v = map_get(p, n, "idempotency_key")) != NULL && get_idempotency_key(p, v, st) != 0)
        return -1;
    if ((v = map_get(p, n, "as")) != NULL && get_identity(p, v, s, &st->as) != 0)
        return -1;
    if ((v = map_get(p, n, "background")) != NULL) {
        if (seed_data)
            return fail(p, v, "seed_data calls run one after another: 'background' goes in steps only");
        if (get_bool(p, v, "background", &st->background) != 0)
            return -1;
    }
    if ((v = map_get(p, n, "expect")) != NULL) {
        st->has_expect = true;
        if (parse_call_expect(p, v, s, st, seed_data, &st->expect) != 0)
            return -1;
    }
    return 0;
}

/* One step (or one seed_data call when calls_only) into *st. */
static int parse_step(parse_t *p, const yaml_node_t *n, const scenario_t *s, bool calls_only, scenario_step_t *st)
{
    st->line = line_of(n);
    st->timeout_ms = DEFAULT_TIMEOUT_MS;
    st->repeat = 1;
    st->concurrency = 1;
    st->instance = -1;
    st->fault.probability = 1.0;
    st->fault.instance = -1;
    if (n->type != YAML_MAPPING_NODE)
        return fail(p, n, "a %s is a map like {%s}, found %s", calls_only ? "seed_data entry" : "step",
                    calls_only ? "call: inventory.restock, request: {sku: book, qty: 5}" : "kill: orders",
                    kind_name(n));
    if (check_keys(p, n, step_keys, calls_only ? "in seed_data" : "in a step") != 0)
        return -1;
    int kind = -1;
    for (size_t i = 0; i < N_STEP_KINDS; i++) {
        if (map_get(p, n, step_kinds[i].key) == NULL)
            continue;
        if (kind >= 0)
            return fail(p, n, "a step does one thing: found both '%s' and '%s'", step_kinds[kind].key,
                        step_kinds[i].key);
        kind = (int)i;
    }
    if (kind < 0) {
        char names[256] = "";
        size_t used = 0;
        for (size_t i = 0; i < N_STEP_KINDS && used < sizeof names; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i > 0 ? ", " : "",
                                     step_kinds[i].key);
        return fail(p, n, "a step needs one of: %s", names);
    }
    const char *key = step_kinds[kind].key;
    st->kind = step_kinds[kind].kind;
    if (calls_only && st->kind != STEP_CALL)
        return fail(p, n, "seed_data holds calls only, found '%s'", key);
    const char *const *allowed = NULL;
    switch (st->kind) {
    case STEP_CALL: allowed = call_keys; break;
    case STEP_SUBSCRIBE: allowed = subscribe_keys; break;
    case STEP_PUBLISH: allowed = publish_keys; break;
    case STEP_DELAY_LINK: allowed = delay_link_keys; break;
    case STEP_KILL: allowed = kill_keys; break;
    case STEP_RESTART: allowed = restart_keys; break;
    case STEP_PAUSE: allowed = pause_keys; break;
    case STEP_RESUME: allowed = resume_keys; break;
    default: break;
    }
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        const char *k = text_of(node_at(p, pr->key)); /* check_keys: all scalars */
        if (strcmp(k, key) == 0 || (allowed != NULL && index_of(allowed, k) >= 0))
            continue;
        if (strcmp(k, "instance") == 0 && (st->kind == STEP_FAULT || st->kind == STEP_RELEASE))
            return fail(p, node_at(p, pr->key), "'instance' goes inside the %s's map: {%s: {service: ..., "
                                                "instance: N, point: ...}}", key, key);
        char names[256];
        return fail(p, node_at(p, pr->key), "'%s' does not go with '%s' (a %s step takes: %s)", k, key, key,
                    allowed != NULL ? join(allowed, names, sizeof names) : key);
    }
    const yaml_node_t *v = map_get(p, n, key);
    switch (st->kind) {
    case STEP_CALL:
        return parse_call(p, n, s, calls_only, st);
    case STEP_RESTART:
        if (v->type == YAML_SCALAR_NODE && strcmp(text_of(v), "nats") == 0) {
            st->kind = STEP_NATS_RESTART;
            if (s->nats_nodes > 1)
                return fail(p, v, "'restart: nats' restarts the one server; on a cluster say kill_node and "
                                  "restart_node (n1..n%d, meta-leader, ...)", s->nats_nodes);
            if ((v = map_get(p, n, "instance")) != NULL)
                return fail(p, v, "'instance' does not go with 'restart: nats' (NATS runs once)");
            return 0;
        }
        /* fall through */
    case STEP_KILL:
    case STEP_PAUSE:
    case STEP_RESUME:
        if (get_started(p, v, s, key, &st->service) != 0)
            return -1;
        if ((v = map_get(p, n, "instance")) != NULL && get_instance(p, v, s, st->service, &st->instance) != 0)
            return -1;
        return 0;
    case STEP_CUT:
    case STEP_BLACKHOLE:
    case STEP_HEAL:
        return get_started(p, v, s, key, &st->service);
    case STEP_DELAY_LINK:
        if (get_started(p, v, s, key, &st->service) != 0)
            return -1;
        if ((v = map_get(p, n, "ms")) == NULL)
            return fail(p, n, "delay_link needs 'ms' (the latency to add)");
        return get_int32(p, v, "ms", 0, MAX_WAIT_MS, &st->ms);
    case STEP_FAULT:
    case STEP_RELEASE:
        if (s->secure)
            return not_in_secure(p, v, "fault points", "use run-time fault control ($NATOMIC.FAULTS.>)");
        if (parse_fault(p, v, s, st->kind == STEP_FAULT, &st->fault) != 0)
            return -1;
        st->service = strdup(st->fault.service);
        return st->service != NULL ? 0 : fail(p, n, "out of memory");
    case STEP_WAIT:
        return get_int32(p, v, "wait (ms)", 0, MAX_WAIT_MS, &st->ms);
    case STEP_SUBSCRIBE:
    case STEP_PUBLISH:
        return parse_wire_step(p, n, s, key, st);
    case STEP_NODE_KILL:
    case STEP_NODE_RESTART:
    case STEP_NODE_CUT:
    case STEP_NODE_HEAL:
        return parse_node(p, v, s, key, st->kind == STEP_NODE_RESTART || st->kind == STEP_NODE_HEAL, &st->node);
    case STEP_NATS_RESTART:
        break;
    }
    return fail(p, n, "unknown step"); /* not reached: every kind key is handled above */
}

static int parse_steps(parse_t *p, const yaml_node_t *n, scenario_t *s, bool seed_data)
{
    const char *what = seed_data ? "seed_data" : "steps";
    if (seed_data && is_null(n))
        return 0;
    if (expect_list(p, n, what) != 0)
        return -1;
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return seed_data ? 0 : fail(p, n, "steps is empty: a scenario tells a story of at least one step");
    scenario_step_t *steps = calloc(count, sizeof *steps);
    if (steps == NULL)
        return fail(p, n, "out of memory");
    if (seed_data) {
        s->seed_data = steps;
        s->n_seed_data = count;
    } else {
        s->steps = steps;
        s->n_steps = count;
    }
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = node_at(p, n->data.sequence.items.start[i]);
        if (item == NULL)
            return fail(p, n, "broken YAML document");
        if (parse_step(p, item, s, seed_data, &steps[i]) != 0)
            return -1;
    }
    return 0;
}

/* ---- expect ------------------------------------------------------------ */

bool scenario_state_key_valid(const char *key)
{
    if (key == NULL)
        return false;
    static const char *const fixed[] = {"orders.confirmed",    "orders.cancelled",    "orders.pending",
                                        "orders.total",        "notifications.total", "conversions.history",
                                        NULL};
    if (index_of(fixed, key) >= 0)
        return true;
    if (strncmp(key, "balance.", 8) == 0)
        return is_ident(key + 8, strlen(key + 8), true);
    if (strncmp(key, "charged.", 8) == 0)
        return is_ident(key + 8, strlen(key + 8), true);
    if (strncmp(key, "stock.", 6) == 0) {
        const char *sku = key + 6;
        const char *dot = strchr(sku, '.');
        if (dot == NULL || !is_ident(sku, (size_t)(dot - sku), true))
            return false;
        return strcmp(dot + 1, "available") == 0 || strcmp(dot + 1, "reserved") == 0;
    }
    return false;
}

typedef enum check_kind { CHECK_STATE, CHECK_EVENTS, CHECK_COMPENSATIONS } check_kind_t;

static int check_key(parse_t *p, const yaml_node_t *k, check_kind_t kind)
{
    const char *key = text_of(k);
    char names[512];
    if (kind == CHECK_STATE) {
        if (!scenario_state_key_valid(key))
            return fail(p, k, "unknown state key '%.80s' (known: %s; <sku> and <customer> are [A-Za-z0-9_-]+)", key,
                        join(state_key_forms, names, sizeof names));
        return 0;
    }
    const char *form = kind == CHECK_EVENTS ? "<service>.<type>" : "<service>.<method>";
    const char *dot = strchr(key, '.');
    if (dot == NULL || !is_ident(key, (size_t)(dot - key), false) || !is_ident(dot + 1, strlen(dot + 1), false))
        return fail(p, k, "%s key '%.80s' is not %s", kind == CHECK_EVENTS ? "an events" : "a compensations", key,
                    form);
    size_t len = (size_t)(dot - key);
    for (int i = 0; scenario_service_names[i] != NULL; i++)
        if (strlen(scenario_service_names[i]) == len && strncmp(scenario_service_names[i], key, len) == 0)
            return 0;
    return unknown_service(p, k, key, len);
}

/* expect.state, .events or .compensations: a map of key -> integer. */
static int parse_checks(parse_t *p, const yaml_node_t *n, check_kind_t kind, scenario_check_t **out, size_t *n_out)
{
    static const char *const what[] = {"state", "events", "compensations"};
    if (is_null(n))
        return 0;
    if (expect_map(p, n, what[kind]) != 0)
        return -1;
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count == 0)
        return 0;
    json_t *seen = json_object(); /* a set of keys, to refuse duplicates in O(n) */
    scenario_check_t *checks = calloc(count, sizeof *checks);
    if (seen == NULL || checks == NULL) {
        json_decref(seen);
        free(checks);
        return fail(p, n, "out of memory");
    }
    *out = checks;
    *n_out = count;
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        const yaml_node_t *k = node_at(p, n->data.mapping.pairs.start[i].key);
        const yaml_node_t *v = node_at(p, n->data.mapping.pairs.start[i].value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE) {
            rc = fail(p, k != NULL ? k : n, "keys of %s are names, found %s", what[kind],
                      k != NULL ? kind_name(k) : "nothing");
            break;
        }
        if ((rc = check_key(p, k, kind)) != 0)
            break;
        if (json_object_get(seen, text_of(k)) != NULL) {
            rc = fail(p, k, "'%.80s' given twice in %s", text_of(k), what[kind]);
            break;
        }
        json_object_set_new(seen, text_of(k), json_true());
        checks[i].line = line_of(k);
        if ((checks[i].key = strdup(text_of(k))) == NULL) {
            rc = fail(p, k, "out of memory");
            break;
        }
        rc = get_expected(p, v, checks[i].key, kind == CHECK_STATE ? LLONG_MIN : 0, &checks[i].op, &checks[i].value);
    }
    json_decref(seen);
    return rc;
}

/* expect.invariants or .violations: a list of known invariant names. */
static int parse_invariants(parse_t *p, const yaml_node_t *n, const char *what, char ***out, size_t *n_out)
{
    if (is_null(n))
        return 0;
    if (expect_list(p, n, what) != 0)
        return -1;
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return 0;
    char **names = calloc(count, sizeof *names);
    if (names == NULL)
        return fail(p, n, "out of memory");
    *out = names;
    *n_out = count;
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = node_at(p, n->data.sequence.items.start[i]);
        if (item == NULL)
            return fail(p, n, "broken YAML document");
        if (get_string(p, item, what, &names[i]) != 0)
            return -1;
        if (index_of(scenario_invariant_names, names[i]) < 0) {
            char known[512];
            return fail(p, item, "unknown invariant '%.80s' (known: %s)", names[i],
                        join(scenario_invariant_names, known, sizeof known));
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[j], names[i]) == 0)
                return fail(p, item, "invariant '%s' listed twice in %s", names[i], what);
    }
    return 0;
}

/*
 * expect.dead_letters: a count (`1`, `">= 1"`), or a list of maps, each a
 * partial match of one dead letter's JSON document (service, method, tx,
 * call_id, list, command, attempts, error, ...), in the order seen: the
 * count is then the list's length.
 */
static int parse_dead_letters(parse_t *p, const yaml_node_t *v, scenario_t *s)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return get_expected(p, v, "dead_letters", 0, &s->dead_letters_op, &s->dead_letters);
    json_t *docs = to_json(p, v, 0);
    if (docs == NULL)
        return -1;
    s->dead_letter_docs = docs;
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d) {
        if (!json_is_object(d) || json_object_size(d) == 0)
            return fail(p, node_at(p, v->data.sequence.items.start[i]),
                        "an entry of dead_letters is a map of the fields a dead letter holds, e.g. {command: "
                        "call inventory.release, attempts: 3}");
    }
    s->dead_letters = (long long)json_array_size(docs);
    s->dead_letters_op = CMP_EQ;
    return 0;
}

static int parse_expect(parse_t *p, const yaml_node_t *n, scenario_t *s)
{
    if (is_null(n))
        return 0;
    if (expect_map(p, n, "expect") != 0 || check_keys(p, n, expect_keys, "in expect") != 0)
        return -1;
    const yaml_node_t *v;
    if ((v = map_get(p, n, "eventually")) != NULL &&
        get_int32(p, v, "eventually (ms)", 0, MAX_WAIT_MS, &s->eventually_ms) != 0)
        return -1;
    if ((v = map_get(p, n, "state")) != NULL && parse_checks(p, v, CHECK_STATE, &s->state, &s->n_state) != 0)
        return -1;
    if ((v = map_get(p, n, "events")) != NULL && parse_checks(p, v, CHECK_EVENTS, &s->events, &s->n_events) != 0)
        return -1;
    if ((v = map_get(p, n, "compensations")) != NULL && s->secure)
        return not_in_secure(p, v, "compensations", "send trace copies (natomic.trace.>)");
    if ((v = map_get(p, n, "recoveries")) != NULL && s->secure)
        return not_in_secure(p, v, "recoveries", "report recovery (natomic.recovery.>)");
    if ((v = map_get(p, n, "compensations")) != NULL &&
        parse_checks(p, v, CHECK_COMPENSATIONS, &s->compensations, &s->n_compensations) != 0)
        return -1;
    if ((v = map_get(p, n, "dead_letters")) != NULL && parse_dead_letters(p, v, s) != 0)
        return -1;
    if ((v = map_get(p, n, "recoveries")) != NULL) {
        if (!s->durable)
            return fail(p, v, "'recoveries' needs 'mode: durable': in memory mode no saga is recovered");
        if (get_expected(p, v, "recoveries", 0, &s->recoveries_op, &s->recoveries) != 0)
            return -1;
    }
    if ((v = map_get(p, n, "barrier")) != NULL && parse_barrier(p, v, s, &s->barrier, &s->n_barrier) != 0)
        return -1;
    if ((v = map_get(p, n, "hold")) != NULL && get_int32(p, v, "hold (ms)", 0, MAX_WAIT_MS, &s->hold_ms) != 0)
        return -1;
    if ((v = map_get(p, n, "invariants")) != NULL &&
        parse_invariants(p, v, "invariants", &s->invariants, &s->n_invariants) != 0)
        return -1;
    if ((v = map_get(p, n, "violations")) != NULL &&
        parse_invariants(p, v, "violations", &s->violations, &s->n_violations) != 0)
        return -1;
    return 0;
}

/* ---- the whole file ---------------------------------------------------- */

static int parse_root(parse_t *p, const yaml_node_t *root, scenario_t *s)
{
    if (root->type != YAML_MAPPING_NODE)
        return fail(p, root, "a scenario is a map with at least 'about' and 'steps', found %s", kind_name(root));
    if (check_keys(p, root, top_keys, "at top level") != 0)
        return -1;
    const yaml_node_t *v = map_get(p, root, "about");
    if (v == NULL)
        return fail(p, root, "missing 'about': say what this scenario teaches");
    if (get_string(p, v, "about", &s->about) != 0)
        return -1;
    size_t len = strlen(s->about); /* folded text (>) ends with a newline */
    while (len > 0 && (s->about[len - 1] == '\n' || s->about[len - 1] == ' ' || s->about[len - 1] == '\t'))
        s->about[--len] = '\0';
    if (len == 0)
        return fail(p, v, "about is empty");
    if ((v = map_get(p, root, "mode")) != NULL) {
        const char *mode = text_of(v);
        if (mode != NULL && strcmp(mode, "durable") == 0)
            s->durable = true;
        else if (mode == NULL || strcmp(mode, "memory") != 0)
            return fail(p, v, "unknown mode '%.40s' (allowed: memory, durable)", mode != NULL ? mode : kind_name(v));
    }
    s->nats_nodes = 1;
    if ((v = map_get(p, root, "nats")) != NULL) {
        const char *nats = text_of(v);
        if (nats != NULL && strcmp(nats, "cluster") == 0)
            s->nats_nodes = 3;
        else if (nats != NULL && strcmp(nats, "secure") == 0)
            s->secure = true;
        else if (nats == NULL || strcmp(nats, "single") != 0)
            return fail(p, v, "unknown nats '%.40s' (allowed: single, cluster, secure)", nats != NULL ? nats : kind_name(v));
    }
    if ((v = map_get(p, root, "seed")) != NULL) {
        const char *t = text_of(v);
        long long ignored;
        if (t == NULL || t[0] == '-' || scalar_integer(v, &ignored) == -1)
            return fail(p, v, "seed must be an integer >= 0, got %.40s", t != NULL ? t : kind_name(v));
        errno = 0;
        s->seed = strtoull(t, NULL, 10);
        if (errno == ERANGE)
            return fail(p, v, "seed %.40s is out of range (64 bits)", t);
    }
    if ((v = map_get(p, root, "services")) != NULL && parse_services(p, v, s) != 0)
        return -1;
    if ((v = map_get(p, root, "faults")) != NULL && parse_faults(p, v, s) != 0)
        return -1;
    if ((v = map_get(p, root, "seed_data")) != NULL && parse_steps(p, v, s, true) != 0)
        return -1;
    if ((v = map_get(p, root, "steps")) == NULL)
        return fail(p, root, "missing 'steps': a scenario tells a story of at least one step");
    if (parse_steps(p, v, s, false) != 0)
        return -1;
    if ((v = map_get(p, root, "expect")) != NULL && parse_expect(p, v, s) != 0)
        return -1;
    return 0;
}

/* The file's bytes with a terminating NUL, or NULL with err set. */
static char *read_file(const char *path, size_t *len, char *err, size_t errcap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_error(err, errcap, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(SCENARIO_MAX_BYTES + 1);
    size_t n = buf != NULL ? fread(buf, 1, SCENARIO_MAX_BYTES + 1, f) : 0;
    bool bad = ferror(f) != 0;
    int saved = errno;
    fclose(f);
    if (buf == NULL) {
        set_error(err, errcap, "%s: out of memory", path);
        return NULL;
    }
    if (bad) {
        set_error(err, errcap, "%s: cannot read: %s", path, strerror(saved));
    } else if (n > SCENARIO_MAX_BYTES) {
        set_error(err, errcap, "%s: larger than %u bytes: not a scenario", path, SCENARIO_MAX_BYTES);
    } else {
        buf[n] = '\0';
        *len = n;
        return buf;
    }
    free(buf);
    return NULL;
}

/* libyaml's complaint as "path:line: bad YAML: problem (context at line N)". */
static void yaml_error(const yaml_parser_t *parser, const char *path, const char *text, size_t len, char *err,
                       size_t errcap)
{
    if (parser->error == YAML_MEMORY_ERROR) {
        set_error(err, errcap, "%s: out of memory", path);
        return;
    }
    size_t line = parser->problem_mark.line + 1;
    if (parser->error == YAML_READER_ERROR) { /* the reader knows a byte offset, not a line */
        line = 1;
        for (size_t i = 0; i < parser->problem_offset && i < len; i++)
            line += text[i] == '\n';
    }
    const char *problem = parser->problem != NULL ? parser->problem : "cannot parse";
    if (parser->context != NULL)
        set_error(err, errcap, "%s:%zu: bad YAML: %s (%s at line %zu)", path, line, problem, parser->context,
                  parser->context_mark.line + 1);
    else
        set_error(err, errcap, "%s:%zu: bad YAML: %s", path, line, problem);
}

/* "dir/group/name.yaml" -> name "name", group "group". */
static int set_names(scenario_t *s, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t name_len = dot != NULL && dot != base ? (size_t)(dot - base) : strlen(base);
    s->name = strndup(base, name_len);
    const char *group = "";
    size_t group_len = 0;
    if (slash != NULL) {
        const char *end = slash;
        while (end > path && end[-1] == '/')
            end--;
        const char *start = end;
        while (start > path && start[-1] != '/')
            start--;
        group = start;
        group_len = (size_t)(end - start);
        if ((group_len == 1 && group[0] == '.') || (group_len == 2 && group[0] == '.' && group[1] == '.'))
            group_len = 0;
    }
    s->group = strndup(group, group_len);
    s->path = strdup(path);
    return s->name != NULL && s->group != NULL && s->path != NULL ? 0 : -1;
}

int scenario_load(scenario_t **out, const char *path, char *err, size_t errcap)
{
    if (err != NULL && errcap > 0)
        err[0] = '\0';
    if (out == NULL || path == NULL) {
        set_error(err, errcap, "%s: scenario_load needs a path and a place for the result", path ? path : "?");
        return -1;
    }
    size_t len = 0;
    char *text = read_file(path, &len, err, errcap);
    if (text == NULL)
        return -1;
    scenario_t *s = calloc(1, sizeof *s);
    yaml_parser_t parser;
    yaml_document_t doc;
    bool parser_up = false, doc_up = false;
    int rc = -1;
    if (s == NULL || set_names(s, path) != 0) {
        set_error(err, errcap, "%s: out of memory", path);
        goto done;
    }
    s->seed = DEFAULT_SEED;
    s->eventually_ms = DEFAULT_EVENTUALLY_MS;
    s->dead_letters = -1;
    s->recoveries = -1;
    if (!yaml_parser_initialize(&parser)) {
        set_error(err, errcap, "%s: out of memory", path);
        goto done;
    }
    parser_up = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_error(&parser, path, text, len, err, errcap);
        goto done;
    }
    doc_up = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        set_error(err, errcap, "%s:1: empty file: a scenario is a map with at least 'about' and 'steps'", path);
        goto done;
    }
    parse_t p = {.path = path, .doc = &doc, .err = err, .errcap = errcap, .json_budget = JSON_MAX_NODES};
    if (parse_root(&p, root, s) != 0)
        goto done;
    /* A second document would be silently ignored: refuse it instead. */
    yaml_document_t next;
    if (!yaml_parser_load(&parser, &next)) {
        yaml_error(&parser, path, text, len, err, errcap);
        goto done;
    }
    yaml_node_t *next_root = yaml_document_get_root_node(&next);
    if (next_root != NULL)
        set_error(err, errcap, "%s:%d: a scenario file holds one YAML document, a second one starts here", path,
                  line_of(next_root));
    else
        rc = 0;
    yaml_document_delete(&next);
done:
    if (doc_up)
        yaml_document_delete(&doc);
    if (parser_up)
        yaml_parser_delete(&parser);
    free(text);
    if (rc != 0) {
        scenario_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

/* ---- freeing ----------------------------------------------------------- */

static void fault_clear(scenario_fault_t *f)
{
    free(f->service);
    free(f->point);
    free(f->action);
}

static void checks_free(scenario_check_t *checks, size_t n);

static void seq_free(scenario_seq_t *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->items[i].name);
        json_decref(q->items[i].fields);
    }
    free(q->items);
}

static void steps_free(scenario_step_t *steps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        scenario_step_t *st = &steps[i];
        free(st->service);
        free(st->node);
        free(st->as);
        free(st->queue);
        free(st->payload);
        free(st->subject);
        json_decref(st->request);
        free(st->idempotency_key);
        free(st->expect.error);
        free(st->expect.rollback);
        json_decref(st->expect.reply);
        seq_free(&st->expect.compensations);
        seq_free(&st->expect.events);
        checks_free(st->expect.barrier, st->expect.n_barrier);
        for (size_t k = 0; k < st->expect.n_retry_waits; k++) {
            free(st->expect.retry_waits[k].name);
            free(st->expect.retry_waits[k].gaps);
        }
        free(st->expect.retry_waits);
        fault_clear(&st->fault);
    }
    free(steps);
}

static void checks_free(scenario_check_t *checks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(checks[i].key);
    free(checks);
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

void scenario_free(scenario_t *s)
{
    if (s == NULL)
        return;
    free(s->path);
    free(s->name);
    free(s->group);
    free(s->about);
    for (size_t i = 0; i < s->n_services; i++)
        free(s->services[i].name);
    free(s->services);
    for (size_t i = 0; i < s->n_faults; i++)
        fault_clear(&s->faults[i]);
    free(s->faults);
    steps_free(s->seed_data, s->n_seed_data);
    steps_free(s->steps, s->n_steps);
    checks_free(s->state, s->n_state);
    checks_free(s->events, s->n_events);
    checks_free(s->compensations, s->n_compensations);
    checks_free(s->barrier, s->n_barrier);
    json_decref(s->dead_letter_docs);
    names_free(s->invariants, s->n_invariants);
    names_free(s->violations, s->n_violations);
    free(s);
}
