/*
 * lessons.c -- reads a story's lessons file (lessons.h) with libyaml's
 * document API and validates it whole before the exploration starts: an
 * unknown key, a point the lab does not know, an action the point does
 * not define, an invariant the oracle does not know, a missing reason or
 * an entry for durable mode is refused with "file:line: reason", so a
 * typo can never turn a real violation into an "expected" one.
 */
#include "lessons.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "scenario.h"

typedef struct parse {
    const char *path;
    yaml_document_t *doc;
    char *err;
    size_t errcap;
} parse_t;

static int fail(parse_t *p, const yaml_node_t *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parse_t *p, const yaml_node_t *at, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errcap, "%s:%d: %s", p->path, at != NULL ? (int)at->start_mark.line + 1 : 1, what);
    return -1;
}

static yaml_node_t *node(parse_t *p, int index)
{
    return yaml_document_get_node(p->doc, index);
}

static const char *scalar(const yaml_node_t *n)
{
    return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A non-empty string, copied into *out. */
static int get_text(parse_t *p, const yaml_node_t *n, const char *what, char **out)
{
    const char *s = scalar(n);
    if (s == NULL || *s == '\0')
        return fail(p, n, "%s must be a non-empty text", what);
    if ((*out = strdup(s)) == NULL)
        return fail(p, n, "out of memory");
    /* A folded or literal block (`>`, `|`) ends with a newline: not part of the text. */
    for (size_t len = strlen(*out); len > 0 && ((*out)[len - 1] == '\n' || (*out)[len - 1] == ' '); len--)
        (*out)[len - 1] = '\0';
    return 0;
}

static int get_count(parse_t *p, const yaml_node_t *n, const char *what, unsigned long long max,
                     unsigned long long *out)
{
    const char *s = scalar(n);
    char *end = NULL;
    errno = 0;
    unsigned long long v = s != NULL && *s >= '0' && *s <= '9' ? strtoull(s, &end, 10) : 0;
    if (s == NULL || end == NULL || *end != '\0' || errno != 0 || v > max)
        return fail(p, n, "%s must be a whole number from 0 to %llu", what, max);
    *out = v;
    return 0;
}

static bool in_list(const char *const list[], const char *s)
{
    for (size_t i = 0; list[i] != NULL; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

static const scenario_fault_point_t *find_point(const char *name)
{
    for (const scenario_fault_point_t *fp = scenario_fault_points; fp->name != NULL; fp++)
        if (strcmp(fp->name, name) == 0)
            return fp;
    return NULL;
}

static const char *const entry_keys[] = {"mode", "service", "instance", "point", "action", "occurrence", "breaks",
                                         "reason", NULL};
static const char *const actions[] = {"crash", "error", "drop", "duplicate", "delay", NULL};

/* One entry of `lessons`, validated. */
static int read_entry(parse_t *p, const yaml_node_t *m, lesson_t *l)
{
    l->instance = -1;
    l->line = (int)m->start_mark.line + 1;
    if (m->type != YAML_MAPPING_NODE)
        return fail(p, m, "a lesson is a map (mode, service, point, action, breaks, reason)");
    const yaml_node_t *point_node = NULL, *action_node = NULL;
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = node(p, pr->key), *v = node(p, pr->value);
        const char *key = scalar(k);
        if (key == NULL || !in_list(entry_keys, key))
            return fail(p, k, "unknown key '%s' in a lesson (known: mode, service, instance, point, action, "
                              "occurrence, breaks, reason)", key != NULL ? key : "?");
        int rc = 0;
        if (strcmp(key, "mode") == 0) {
            rc = get_text(p, v, "mode", &l->mode);
            if (rc == 0 && strcmp(l->mode, "memory") != 0)
                return fail(p, v, "mode must be memory: in durable mode every cell must be consistent, so a "
                                  "durable violation is a bug to fix, never a lesson");
        } else if (strcmp(key, "service") == 0) {
            rc = get_text(p, v, "service", &l->service);
            if (rc == 0 && !in_list(scenario_service_names, l->service))
                return fail(p, v, "unknown service '%s'", l->service);
        } else if (strcmp(key, "instance") == 0) {
            unsigned long long k2 = 0;
            rc = get_count(p, v, "instance", 7, &k2);
            l->instance = (int)k2;
        } else if (strcmp(key, "point") == 0) {
            rc = get_text(p, v, "point", &l->point);
            point_node = v;
        } else if (strcmp(key, "action") == 0) {
            rc = get_text(p, v, "action", &l->action);
            action_node = v;
        } else if (strcmp(key, "occurrence") == 0) {
            rc = get_count(p, v, "occurrence", 1000000000000ULL, &l->occurrence);
            if (rc == 0 && l->occurrence == 0)
                return fail(p, v, "occurrence counts from 1 (leave it out for every hit)");
        } else if (strcmp(key, "reason") == 0) {
            rc = get_text(p, v, "reason", &l->reason);
        } else { /* breaks */
            if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top == v->data.sequence.items.start)
                return fail(p, v, "breaks must be a non-empty list of invariants");
            size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
            l->breaks = calloc(n, sizeof *l->breaks);
            if (l->breaks == NULL)
                return fail(p, v, "out of memory");
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                const yaml_node_t *item = node(p, *it);
                if (get_text(p, item, "an invariant", &l->breaks[l->n_breaks]) != 0)
                    return -1;
                if (!in_list(scenario_invariant_names, l->breaks[l->n_breaks++]))
                    return fail(p, item, "unknown invariant '%s'", l->breaks[l->n_breaks - 1]);
            }
        }
        if (rc != 0)
            return -1;
    }
    const char *missing = l->mode == NULL      ? "mode"
                          : l->service == NULL ? "service"
                          : l->point == NULL   ? "point"
                          : l->action == NULL  ? "action"
                          : l->breaks == NULL  ? "breaks"
                          : l->reason == NULL  ? "reason"
                                               : NULL;
    if (missing != NULL)
        return fail(p, m, "a lesson needs '%s'", missing);
    const scenario_fault_point_t *fp = find_point(l->point);
    if (fp == NULL)
        return fail(p, point_node, "unknown fault point '%s' (docs/fault-points.md)", l->point);
    if (!in_list(actions, l->action))
        return fail(p, action_node, "action '%s' is not explored (crash, error, drop, duplicate, delay)", l->action);
    if ((strcmp(l->action, "error") == 0 && !fp->error) || (strcmp(l->action, "drop") == 0 && !fp->drop) ||
        (strcmp(l->action, "duplicate") == 0 && !fp->duplicate))
        return fail(p, action_node, "%s defines no '%s' (docs/fault-points.md marks it '-')", l->point, l->action);
    return 0;
}

void lessons_path_of(char *out, size_t cap, const char *story_path)
{
    size_t n = strlen(story_path);
    size_t stem = n > 5 && strcmp(story_path + n - 5, ".yaml") == 0 ? n - 5
                  : n > 4 && strcmp(story_path + n - 4, ".yml") == 0 ? n - 4
                                                                     : n;
    snprintf(out, cap, "%.*s.lessons.yaml", (int)stem, story_path);
}

int lessons_load(lessons_t **out, const char *path, char *err, size_t errcap)
{
    *out = NULL;
    lessons_t *l = calloc(1, sizeof *l);
    if (l == NULL || (l->path = strdup(path)) == NULL) {
        free(l);
        snprintf(err, errcap, "%s: out of memory", path);
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT) {
            *out = l;
            return 1;
        }
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        lessons_free(l);
        return -1;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    parse_t p = {.path = path, .doc = &doc, .err = err, .errcap = errcap};
    int rc = 0;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errcap, "%s:%d: not YAML: %s", path, (int)parser.problem_mark.line + 1,
                 parser.problem != NULL ? parser.problem : "?");
        yaml_parser_delete(&parser);
        fclose(f);
        lessons_free(l);
        return -1;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    const yaml_node_t *list = NULL;
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        rc = fail(&p, root, "a lessons file is a map with a list 'lessons'");
    } else {
        for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; rc == 0 && pr < root->data.mapping.pairs.top;
             pr++) {
            const yaml_node_t *k = node(&p, pr->key), *v = node(&p, pr->value);
            const char *key = scalar(k);
            if (key != NULL && strcmp(key, "lessons") == 0)
                list = v;
            else if (key != NULL && strcmp(key, "about") == 0)
                rc = get_text(&p, v, "about", &l->about);
            else
                rc = fail(&p, k, "unknown key '%s' (known: about, lessons)", key != NULL ? key : "?");
        }
        if (rc == 0 && (list == NULL || list->type != YAML_SEQUENCE_NODE))
            rc = fail(&p, list != NULL ? list : root, "'lessons' must be a list");
    }
    if (rc == 0) {
        size_t n = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
        l->items = calloc(n > 0 ? n : 1, sizeof *l->items);
        if (l->items == NULL)
            rc = fail(&p, list, "out of memory");
        for (yaml_node_item_t *it = list->data.sequence.items.start; rc == 0 && it < list->data.sequence.items.top;
             it++)
            rc = read_entry(&p, node(&p, *it), &l->items[l->n++]);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    if (rc != 0) {
        lessons_free(l);
        return -1;
    }
    *out = l;
    return 0;
}

void lessons_free(lessons_t *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++) {
        lesson_t *e = &l->items[i];
        free(e->mode);
        free(e->service);
        free(e->point);
        free(e->action);
        for (size_t k = 0; k < e->n_breaks; k++)
            free(e->breaks[k]);
        free(e->breaks);
        free(e->reason);
    }
    free(l->items);
    free(l->about);
    free(l->path);
    free(l);
}

lesson_t *lessons_find(const lessons_t *l, const char *mode, const char *service, int instance, const char *point,
                       const char *action, unsigned long long occurrence, const char *invariant)
{
    for (size_t i = 0; l != NULL && i < l->n; i++) {
        lesson_t *e = &l->items[i];
        if (strcmp(e->mode, mode) != 0 || strcmp(e->service, service) != 0 || strcmp(e->point, point) != 0 ||
            strcmp(e->action, action) != 0 || (e->instance >= 0 && e->instance != instance) ||
            (e->occurrence != 0 && e->occurrence != occurrence))
            continue;
        for (size_t k = 0; k < e->n_breaks; k++)
            if (strcmp(e->breaks[k], invariant) == 0)
                return e;
    }
    return NULL;
}
