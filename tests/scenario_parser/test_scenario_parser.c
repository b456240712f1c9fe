/*
 * test_scenario_parser.c -- the scenario format (DESIGN 4.3): scenario.c
 * and natomic-lab check (scenario_check.c).
 *
 * Proves: each file of good/ parses to exactly the values it spells out
 * (every step kind and every expectation kind, their lines, the defaults,
 * requests as JSON with YAML's core types, durable mode's keys:
 * idempotency_key, replayed, instance on faults and process steps,
 * recoveries; what a call caused -- code, compensations and events in
 * order, barrier outcomes -- comparisons, hold, dead letters by content);
 * "{i}" templates expand; the fault points come from docs/fault-points.md; each file of bad/ fails with
 * the line and the reason its first line announces ("# expect: <line>:
 * <substring>"), one test point per file; the state keys the oracle knows;
 * check's output and exit status for valid, invalid and missing paths; and
 * that every scenario under scenarios/ loads (the folder is read at run
 * time, so scenarios added later are covered without touching this file).
 *
 * Folders: SCENARIO_PARSER_DIR (this folder) and NATOMIC_SCENARIOS_DIR
 * (the suite), set by meson; the first falls back to the source path.
 * Memory, on every error path too, is checked by the valgrind setup.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scenario.h"
#include "scenario_check.h"

#ifndef SCENARIO_PARSER_SOURCE_DIR
#define SCENARIO_PARSER_SOURCE_DIR "."
#endif

static const char *parser_dir;
static char **bad_files;
static size_t n_bad;
static char **suite_files;
static size_t n_suite;

/* ---- helpers ----------------------------------------------------------- */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_yaml_ext(const char *name)
{
    size_t n = strlen(name);
    return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) || (n > 4 && strcmp(name + n - 4, ".yml") == 0);
}

/* A story's lessons file (natomic-lab explore's, beside the story) is no scenario. */
static int is_lessons_file(const char *name)
{
    size_t n = strlen(name);
    return n > 13 && strcmp(name + n - 13, ".lessons.yaml") == 0;
}

/* Appends the *.yaml and *.yml files under dir (recursively) to *files, lessons files aside. */
static void collect(const char *dir, char ***files, size_t *n)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(len);
        if (path == NULL)
            abort();
        snprintf(path, len, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            collect(path, files, n);
            free(path);
        } else if (has_yaml_ext(e->d_name) && !is_lessons_file(e->d_name)) {
            char **grown = realloc(*files, (*n + 1) * sizeof *grown);
            if (grown == NULL)
                abort();
            *files = grown;
            (*files)[(*n)++] = path;
        } else {
            free(path);
        }
    }
    closedir(d);
    if (*n > 0)
        qsort(*files, *n, sizeof **files, by_name);
}

static void files_free(char **files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
}

static char *path_in(const char *sub, const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s/%s", parser_dir, sub, name);
    return buf;
}

static scenario_t *load_good(const char *name)
{
    char err[1024] = "";
    scenario_t *s = NULL;
    int rc = scenario_load(&s, path_in("good", name), err, sizeof err);
    ck_assert_msg(rc == 0, "good/%s must load, got: %s", name, err);
    ck_assert_ptr_nonnull(s);
    return s;
}

/* Asserts JSON value `got` equals the JSON text `want`. */
static void assert_json(const json_t *got, const char *want)
{
    json_error_t jerr;
    json_t *w = json_loads(want, JSON_DECODE_ANY, &jerr);
    ck_assert_msg(w != NULL, "test JSON does not parse: %s", jerr.text);
    char *g = got != NULL ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    char *ws = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    int equal = got != NULL && json_equal(got, w);
    ck_assert_msg(equal, "JSON differs:\n  got  %s\n  want %s", g != NULL ? g : "(null)", ws);
    free(g);
    free(ws);
    json_decref(w);
}

static void assert_check(const scenario_check_t *c, const char *key, long long value, int line)
{
    ck_assert_str_eq(c->key, key);
    ck_assert_int_eq(c->value, value);
    ck_assert_int_eq(c->line, line);
}

/* Runs scenario_check_paths with stdout and stderr caught (they must not mix into the TAP stream). */
static int run_check(char *const paths[], size_t n, char **out, char **err)
{
    FILE *fo = tmpfile(), *fe = tmpfile();
    ck_assert_ptr_nonnull(fo);
    ck_assert_ptr_nonnull(fe);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fileno(fo), 1);
    dup2(fileno(fe), 2);
    int rc = scenario_check_paths(paths, n);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    FILE *files[2] = {fo, fe};
    char **texts[2] = {out, err};
    for (int i = 0; i < 2; i++) {
        long len = (fseek(files[i], 0, SEEK_END), ftell(files[i]));
        rewind(files[i]);
        *texts[i] = calloc(1, (size_t)len + 1);
        ck_assert_ptr_nonnull(*texts[i]);
        ck_assert_uint_eq(fread(*texts[i], 1, (size_t)len, files[i]), (size_t)len);
        fclose(files[i]);
    }
    return rc;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (; *text != '\0'; text++)
        n += *text == '\n';
    return n;
}

/* ---- good files -------------------------------------------------------- */

START_TEST(every_step_kind)
{
    scenario_t *s = load_good("all_steps.yaml");
    ck_assert_str_eq(s->name, "all_steps");
    ck_assert_str_eq(s->group, "good");
    ck_assert_str_eq(s->about, "Every kind of step.\nA second line that check does not print.");
    ck_assert_uint_eq(s->n_services, 4);
    const char *names[] = {"inventory", "payments", "orders", "notifications"};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_str_eq(s->services[i].name, names[i]);
        ck_assert_int_eq(s->services[i].instances, 1);
        ck_assert_int_eq(s->services[i].line, 5);
    }
    static const struct {
        scenario_step_kind_t kind;
        const char *service;
        int line;
    } want[] = {
        {STEP_CALL, NULL, 7},         {STEP_KILL, "orders", 9},      {STEP_RESTART, "orders", 10},
        {STEP_PAUSE, "payments", 11}, {STEP_RESUME, "payments", 12}, {STEP_CUT, "payments", 13},
        {STEP_BLACKHOLE, "inventory", 14}, {STEP_DELAY_LINK, "payments", 15}, {STEP_HEAL, "payments", 16},
        {STEP_NATS_RESTART, NULL, 17}, {STEP_FAULT, "orders", 18},   {STEP_RELEASE, "orders", 19},
        {STEP_WAIT, NULL, 20},
    };
    ck_assert_uint_eq(s->n_steps, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < s->n_steps; i++) {
        ck_assert_msg(s->steps[i].kind == want[i].kind, "step %zu: kind %d, want %d", i, s->steps[i].kind,
                      want[i].kind);
        ck_assert_int_eq(s->steps[i].line, want[i].line);
        if (want[i].service != NULL)
            ck_assert_str_eq(s->steps[i].service, want[i].service);
        else
            ck_assert_ptr_null(s->steps[i].service);
    }
    const scenario_step_t *call = &s->steps[0];
    ck_assert_str_eq(call->subject, "orders.create_order");
    assert_json(call->request, "{\"customer\":\"ann\",\"sku\":\"book\",\"qty\":2,\"amount\":3000}");
    ck_assert_int_eq(call->timeout_ms, 5000);
    ck_assert_int_eq(call->repeat, 1);
    ck_assert_int_eq(call->concurrency, 1);
    ck_assert(!call->has_expect);
    ck_assert_int_eq(s->steps[7].ms, 200);
    const scenario_fault_t *f = &s->steps[10].fault;
    ck_assert_str_eq(f->service, "orders");
    ck_assert_str_eq(f->point, "natomic/before_reply");
    ck_assert_str_eq(f->action, "drop");
    ck_assert_int_eq(f->times, 1);
    ck_assert_double_eq(f->probability, 1.0);
    ck_assert_int_eq(f->line, 18);
    f = &s->steps[11].fault;
    ck_assert_str_eq(f->service, "orders");
    ck_assert_str_eq(f->point, "natomic/before_reply");
    ck_assert_ptr_null(f->action);
    ck_assert_int_eq(s->steps[12].ms, 250);
    ck_assert_ptr_null(s->steps[12].request);
    scenario_free(s);
}
END_TEST

START_TEST(every_expectation_kind)
{
    scenario_t *s = load_good("expectations.yaml");
    ck_assert(s->seed == 18446744073709551615ULL);
    ck_assert_uint_eq(s->n_services, 5);
    ck_assert_uint_eq(s->n_steps, 6);
    const scenario_step_t *st = s->steps;

    ck_assert(st[0].has_expect);
    ck_assert(!st[0].expect.any && !st[0].expect.timeout);
    ck_assert_ptr_null(st[0].expect.error);
    assert_json(st[0].expect.reply, "{\"status\":\"confirmed\",\"order\":{\"qty\":2}}");

    ck_assert_int_eq(st[1].line, 9);
    ck_assert_int_eq(st[1].timeout_ms, 1500);
    ck_assert_str_eq(st[1].expect.error, "PaymentDeclined");
    ck_assert_str_eq(st[1].expect.rollback, "complete");
    ck_assert_ptr_null(st[1].expect.reply);

    ck_assert_str_eq(st[2].subject, "inventory.reserve");
    assert_json(st[2].request, "{}"); /* no request: an empty one */
    ck_assert_str_eq(st[2].expect.error, "OutOfStock");
    ck_assert_ptr_null(st[2].expect.rollback);

    ck_assert(st[3].has_expect && st[3].expect.timeout && !st[3].expect.any);
    ck_assert_ptr_null(st[3].expect.error);

    ck_assert_int_eq(st[4].line, 18);
    ck_assert(st[4].expect.any && !st[4].expect.timeout);
    ck_assert_int_eq(st[4].repeat, 100);
    ck_assert_int_eq(st[4].concurrency, 64);
    assert_json(st[4].request, "{\"customer\":\"c{i%5}\",\"sku\":\"book\",\"qty\":1,\"amount\":100}");

    ck_assert(!st[5].has_expect);
    assert_json(st[5].request, "{\"inches\":2}");

    ck_assert_int_eq(s->eventually_ms, 3000);
    ck_assert_uint_eq(s->n_state, 10);
    assert_check(&s->state[0], "stock.book.available", 3, 25);
    assert_check(&s->state[1], "stock.pen-2.reserved", 0, 25);
    assert_check(&s->state[3], "charged.ann", -1, 25);
    assert_check(&s->state[9], "conversions.history", 1, 27);
    ck_assert_uint_eq(s->n_events, 2);
    assert_check(&s->events[0], "orders.order_created", 1, 28);
    assert_check(&s->events[1], "conversions.converted", 0, 28);
    ck_assert_uint_eq(s->n_compensations, 2);
    assert_check(&s->compensations[0], "inventory.release", 1, 29);
    assert_check(&s->compensations[1], "payments.refund", 0, 29);
    ck_assert_int_eq(s->dead_letters, 0);
    ck_assert_uint_eq(s->n_invariants, 7);
    for (size_t i = 0; i < 7; i++)
        ck_assert_str_eq(s->invariants[i], scenario_invariant_names[i]);
    ck_assert_uint_eq(s->n_violations, 1);
    ck_assert_str_eq(s->violations[0], "order_atomicity");
    scenario_free(s);
}
END_TEST

static void assert_cmp(const scenario_check_t *c, const char *key, scenario_cmp_t op, long long value)
{
    ck_assert_str_eq(c->key, key);
    ck_assert_msg(c->op == op, "%s: op %d, want %d", key, c->op, op);
    ck_assert_int_eq(c->value, value);
}

START_TEST(what_a_call_caused)
{
    scenario_t *s = load_good("outcomes.yaml");
    ck_assert_uint_eq(s->n_steps, 4);
    const scenario_call_expect_t *e = &s->steps[0].expect;
    ck_assert_str_eq(e->error, "PaymentDeclined");
    ck_assert_int_eq(e->code, 422);
    ck_assert_str_eq(e->rollback, "complete");
    ck_assert(e->compensations.given);
    ck_assert_uint_eq(e->compensations.n, 2);
    ck_assert_str_eq(e->compensations.items[0].name, "payments.refund");
    ck_assert_str_eq(e->compensations.items[1].name, "inventory.release");
    ck_assert_ptr_null(e->compensations.items[0].fields);
    ck_assert_int_eq(e->compensations.items[1].line, 11);
    ck_assert(e->events.given);
    ck_assert_uint_eq(e->events.n, 0); /* [] expects none */
    ck_assert_uint_eq(e->n_barrier, 3);
    assert_cmp(&e->barrier[0], "payments.null_compensation", CMP_EQ, 1);
    assert_cmp(&e->barrier[1], "payments.executed", CMP_EQ, 0);
    assert_cmp(&e->barrier[2], "inventory.executed", CMP_GE, 2);

    e = &s->steps[1].expect;
    ck_assert_ptr_null(e->error);
    ck_assert_int_eq(e->code, 422);
    ck_assert_uint_eq(e->compensations.n, 2);
    ck_assert_str_eq(e->compensations.items[0].name, "conversions.forget");
    assert_json(e->compensations.items[0].fields, "{\"conversion_id\":1}");
    ck_assert_ptr_null(e->compensations.items[1].fields);
    ck_assert(!e->events.given);
    ck_assert_uint_eq(e->n_barrier, 0);

    e = &s->steps[2].expect;
    ck_assert(e->timeout);
    ck_assert(!e->compensations.given);
    ck_assert_uint_eq(e->events.n, 1);
    ck_assert_str_eq(e->events.items[0].name, "orders.order_created");
    assert_json(e->events.items[0].fields, "{\"qty\":1}");

    ck_assert_int_eq(s->hold_ms, 1500);
    ck_assert_uint_eq(s->n_state, 6);
    assert_cmp(&s->state[0], "stock.book.available", CMP_GE, 1);
    assert_cmp(&s->state[1], "stock.book.reserved", CMP_LT, 5);
    assert_cmp(&s->state[2], "balance.bob", CMP_NE, 0);
    assert_cmp(&s->state[3], "orders.total", CMP_EQ, 3);
    assert_cmp(&s->state[4], "charged.ann", CMP_LE, 100);
    assert_cmp(&s->state[5], "orders.confirmed", CMP_GT, 0);
    assert_cmp(&s->events[0], "orders.order_created", CMP_GE, 1);
    assert_cmp(&s->compensations[0], "inventory.release", CMP_NE, 0);
    ck_assert_int_eq(s->dead_letters, 1);
    ck_assert(s->dead_letters_op == CMP_EQ);
    assert_json(s->dead_letter_docs, "[{\"service\":\"orders\",\"command\":\"call inventory.release\",\"attempts\":3}]");
    ck_assert_uint_eq(s->n_barrier, 4);
    assert_cmp(&s->barrier[0], "inventory.executed", CMP_EQ, 2);
    assert_cmp(&s->barrier[2], "inventory.null_compensation", CMP_LE, 1);
    assert_cmp(&s->barrier[3], "inventory.refused_late", CMP_EQ, 0);
    ck_assert_str_eq(s->invariants[0], "no_premature_events");

    ck_assert(scenario_compare(3, CMP_GE, 3) && !scenario_compare(2, CMP_GE, 3));
    ck_assert(scenario_compare(2, CMP_NE, 3) && !scenario_compare(3, CMP_NE, 3));
    ck_assert(scenario_compare(2, CMP_LT, 3) && !scenario_compare(3, CMP_LT, 3));
    ck_assert(scenario_compare(3, CMP_LE, 3) && !scenario_compare(4, CMP_LE, 3));
    ck_assert(scenario_compare(4, CMP_GT, 3) && !scenario_compare(3, CMP_GT, 3));
    ck_assert_str_eq(scenario_cmp_text(CMP_GE), ">=");
    scenario_free(s);
}
END_TEST

START_TEST(defaults)
{
    scenario_t *s = load_good("defaults.yaml");
    ck_assert_str_eq(s->name, "defaults");
    ck_assert_str_eq(s->group, "good");
    ck_assert_str_eq(s->about, "The smallest scenario; everything else takes its default.");
    ck_assert(!s->durable);
    ck_assert(s->seed == 1);
    ck_assert_uint_eq(s->n_services, 0);
    ck_assert_uint_eq(s->n_faults, 0);
    ck_assert_uint_eq(s->n_seed_data, 0);
    ck_assert_uint_eq(s->n_steps, 1);
    ck_assert(s->steps[0].kind == STEP_WAIT);
    ck_assert_int_eq(s->steps[0].ms, 0);
    ck_assert_int_eq(s->steps[0].line, 3);
    ck_assert_int_eq(s->eventually_ms, 2000);
    ck_assert_int_eq(s->dead_letters, -1);
    ck_assert_ptr_null(s->dead_letter_docs);
    ck_assert_int_eq(s->hold_ms, 0);
    ck_assert_uint_eq(s->n_barrier, 0);
    ck_assert_uint_eq(s->n_state + s->n_events + s->n_compensations + s->n_invariants + s->n_violations, 0);
    ck_assert_ptr_null(s->invariants);
    scenario_free(s);
}
END_TEST

START_TEST(requests_take_yaml_core_types)
{
    scenario_t *s = load_good("request_types.yaml");
    ck_assert_uint_eq(s->n_services, 1);
    ck_assert_str_eq(s->services[0].name, "orders");
    ck_assert_int_eq(s->services[0].instances, 1);
    const json_t *r = s->steps[0].request;
    assert_json(r, "{\"int\":42,\"negative\":-7,\"big\":9007199254740993,\"float\":2.5,\"exp\":1000.0,"
                   "\"yes_true\":true,\"no_false\":false,\"nothing\":null,\"tilde\":null,\"empty\":null,"
                   "\"word\":\"book\",\"quoted_int\":\"42\",\"quoted_true\":\"true\",\"quoted_null\":\"null\","
                   "\"yes_word\":\"yes\",\"infinity\":\".inf\",\"template\":\"c{i%5}\","
                   "\"list\":[1,\"two\",3.0],\"nested\":{\"a\":{\"b\":[\"x\",{\"c\":1}]}},"
                   "\"block\":\"two\\nlines\\n\",\"base\":{\"sku\":\"book\"},\"copy\":{\"sku\":\"book\"}}");
    /* json_equal tells 1000 from 1000.0, but say it outright for the types that matter. */
    ck_assert(json_is_integer(json_object_get(r, "big")));
    ck_assert_int_eq(json_integer_value(json_object_get(r, "big")), 9007199254740993LL);
    ck_assert(json_is_real(json_object_get(r, "exp")));
    ck_assert(json_is_string(json_object_get(r, "quoted_int")));
    scenario_free(s);
}
END_TEST

START_TEST(services_as_map_faults_and_seed_data)
{
    scenario_t *s = load_good("services_map.yml");
    ck_assert_str_eq(s->name, "services_map");
    ck_assert_str_eq(s->about, "Services as a map with instances, faults and seed data.");
    static const struct {
        const char *name;
        int instances, line;
    } want[] = {{"orders", 2, 6}, {"payments", 4, 7}, {"inventory", 1, 8}, {"notifications", 1, 9}};
    ck_assert_uint_eq(s->n_services, 4);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_str_eq(s->services[i].name, want[i].name);
        ck_assert_int_eq(s->services[i].instances, want[i].instances);
        ck_assert_int_eq(s->services[i].line, want[i].line);
    }
    ck_assert_uint_eq(s->n_faults, 3);
    ck_assert_str_eq(s->faults[0].service, "payments");
    ck_assert_str_eq(s->faults[0].point, "natomic/before_handler");
    ck_assert_str_eq(s->faults[0].action, "error");
    ck_assert_int_eq(s->faults[0].times, 1);
    ck_assert_double_eq(s->faults[0].probability, 0.5);
    ck_assert_int_eq(s->faults[0].line, 11);
    ck_assert_str_eq(s->faults[1].action, "delay:300");
    ck_assert_int_eq(s->faults[1].times, 0); /* always */
    ck_assert_double_eq(s->faults[1].probability, 1.0);
    ck_assert_int_eq(s->faults[1].line, 12);
    ck_assert_str_eq(s->faults[2].service, "inventory");
    ck_assert_str_eq(s->faults[2].action, "crash");
    ck_assert_int_eq(s->faults[2].times, 0);
    ck_assert_uint_eq(s->n_seed_data, 2);
    ck_assert(s->seed_data[0].kind == STEP_CALL);
    ck_assert_str_eq(s->seed_data[0].subject, "inventory.restock");
    assert_json(s->seed_data[0].request, "{\"sku\":\"book\",\"qty\":5}");
    ck_assert_int_eq(s->seed_data[0].line, 18);
    ck_assert_str_eq(s->seed_data[1].subject, "payments.deposit");
    assert_json(s->seed_data[1].request, "{\"customer\":\"ann\",\"amount\":5000}");
    ck_assert_int_eq(s->seed_data[1].line, 19);
    ck_assert_uint_eq(s->n_steps, 1);
    ck_assert_str_eq(s->steps[0].expect.error, "PaymentDeclined");
    ck_assert_ptr_null(s->steps[0].expect.rollback);
    scenario_free(s);
}
END_TEST

START_TEST(durable_keys)
{
    scenario_t *s = load_good("durable.yaml");
    ck_assert(s->durable);
    ck_assert_int_eq(s->recoveries, 2);
    ck_assert_uint_eq(s->n_services, 3);
    ck_assert_int_eq(s->services[0].instances, 2);

    /* Faults: one instance, or every instance (-1). */
    ck_assert_uint_eq(s->n_faults, 2);
    ck_assert_int_eq(s->faults[0].instance, 1);
    ck_assert_str_eq(s->faults[0].action, "crash");
    ck_assert_int_eq(s->faults[0].line, 6);
    ck_assert_int_eq(s->faults[1].instance, -1);

    /* Idempotency keys, in seed data too; templates are kept as written. */
    ck_assert_str_eq(s->seed_data[0].idempotency_key, "restock-1");
    ck_assert_uint_eq(s->n_steps, 12);
    const scenario_step_t *st = s->steps;
    ck_assert_str_eq(st[0].idempotency_key, "ann-1");
    ck_assert(st[0].has_expect && st[0].expect.check_replayed && !st[0].expect.replayed);
    assert_json(st[0].expect.reply, "{\"status\":\"confirmed\"}");
    ck_assert_int_eq(st[1].line, 15);
    ck_assert_str_eq(st[1].idempotency_key, "c{i%3}-order-{i}");
    ck_assert_int_eq(st[1].repeat, 10);
    ck_assert_str_eq(st[1].expect.error, "Interrupted");
    ck_assert_str_eq(st[1].expect.rollback, "complete");
    ck_assert(st[1].expect.check_replayed && st[1].expect.replayed);
    ck_assert_str_eq(st[2].idempotency_key, "42"); /* a plain number is a word here */
    ck_assert(st[2].expect.check_replayed && st[2].expect.replayed);
    ck_assert_ptr_null(st[2].expect.reply);
    ck_assert_ptr_null(st[2].expect.error);
    ck_assert_ptr_null(st[3].idempotency_key);
    ck_assert(!st[3].expect.check_replayed);

    /* kill / restart / pause / resume on one instance; the plain form is every instance. */
    static const struct {
        scenario_step_kind_t kind;
        int instance, line;
    } want[] = {{STEP_KILL, 0, 22},   {STEP_RESTART, 1, 23}, {STEP_PAUSE, 1, 24},
                {STEP_RESUME, 0, 25}, {STEP_KILL, -1, 26}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const scenario_step_t *k = &st[4 + i];
        ck_assert_msg(k->kind == want[i].kind, "step %zu: kind %d, want %d", 4 + i, k->kind, want[i].kind);
        ck_assert_str_eq(k->service, "orders");
        ck_assert_int_eq(k->instance, want[i].instance);
        ck_assert_int_eq(k->line, want[i].line);
    }
    ck_assert(st[9].kind == STEP_FAULT);
    ck_assert_int_eq(st[9].fault.instance, 0);
    ck_assert_int_eq(st[9].instance, -1);
    ck_assert(st[10].kind == STEP_RELEASE);
    ck_assert_int_eq(st[10].fault.instance, 1);
    ck_assert_int_eq(st[11].fault.instance, -1);
    scenario_free(s);
}
END_TEST

START_TEST(new_keys_default_off)
{
    scenario_t *s = load_good("all_steps.yaml");
    ck_assert(!s->durable);
    ck_assert_int_eq(s->recoveries, -1);
    for (size_t i = 0; i < s->n_steps; i++) {
        ck_assert_ptr_null(s->steps[i].idempotency_key);
        ck_assert_int_eq(s->steps[i].instance, -1);
        ck_assert_int_eq(s->steps[i].fault.instance, -1);
        ck_assert(!s->steps[i].expect.check_replayed);
    }
    scenario_free(s);
}
END_TEST

START_TEST(templates_expand)
{
    char out[64];
    ck_assert(!scenario_expand_text("c{i%3}-order-{i}", 7, out, sizeof out));
    ck_assert_str_eq(out, "c1-order-7");
    ck_assert(scenario_expand_text("{i}", 42, out, sizeof out)); /* the whole string: may become a number */
    ck_assert_str_eq(out, "42");
    ck_assert(scenario_expand_text("{i%5}", 42, out, sizeof out));
    ck_assert_str_eq(out, "2");
    ck_assert(!scenario_expand_text("plain {x} {i%0} {i", 3, out, sizeof out)); /* not templates */
    ck_assert_str_eq(out, "plain {x} {i%0} {i");
    char tiny[4];
    scenario_expand_text("key-{i}", 123456, tiny, sizeof tiny); /* cut, never overflowed */
    ck_assert_str_eq(tiny, "key");
}
END_TEST

START_TEST(any_extension_loads)
{
    scenario_t *s = load_good("no_extension.scenario");
    ck_assert_str_eq(s->name, "no_extension");
    ck_assert_uint_eq(s->n_steps, 1);
    scenario_free(s);
}
END_TEST

/* ---- bad files --------------------------------------------------------- */

START_TEST(bad_file_fails_as_announced)
{
    const char *path = bad_files[_i];
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char first[1024] = "";
    char *got_line = fgets(first, sizeof first, f);
    fclose(f);
    int line = 0, at = 0;
    ck_assert_msg(got_line != NULL && sscanf(first, "# expect: %d: %n", &line, &at) == 1 && at > 0,
                  "%s: first line must be '# expect: <line>: <reason>'", path);
    char *want = first + at;
    want[strcspn(want, "\n")] = '\0';

    char err[1024] = "";
    scenario_t *s = (scenario_t *)0x1; /* written only on success */
    int rc = scenario_load(&s, path, err, sizeof err);
    ck_assert_msg(rc == -1, "%s must fail to load", path);
    ck_assert_msg(s == (scenario_t *)0x1, "%s: out-parameter written on failure", path);
    char prefix[1200];
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "error must start with '%s', got '%s'", prefix, err);
    ck_assert_msg(strstr(err + strlen(prefix), want) != NULL, "%s: error '%s' lacks '%s'", path, err, want);
}
END_TEST

START_TEST(enough_bad_files)
{
    ck_assert_msg(n_bad >= 100, "bad/ holds %zu files, want at least 100", n_bad);
}
END_TEST

/* ---- API ----------------------------------------------------------------- */

START_TEST(state_keys)
{
    static const char *const valid[] = {
        "stock.book.available", "stock.pen-2.reserved", "stock.A_b-9.available", "balance.ann", "charged.c-1",
        "orders.confirmed",     "orders.cancelled",     "orders.pending",        "orders.total",
        "notifications.total",  "conversions.history",  NULL};
    static const char *const invalid[] = {
        "",           "stock",      "stock.book",       "stock..available",  "stock.book.free", "stock.a.b.available",
        "balance.",   "balance",    "balance.ann.smith", "balance.ann smith", "charged.",        "orders.shipped",
        "orders",     "notifications.sent", "conversions", "Balance.ann",     "stock.book.available.x", NULL};
    for (size_t i = 0; valid[i] != NULL; i++)
        ck_assert_msg(scenario_state_key_valid(valid[i]), "'%s' must be valid", valid[i]);
    for (size_t i = 0; invalid[i] != NULL; i++)
        ck_assert_msg(!scenario_state_key_valid(invalid[i]), "'%s' must be invalid", invalid[i]);
    ck_assert(!scenario_state_key_valid(NULL));
}
END_TEST

START_TEST(name_lists)
{
    static const char *const services[] = {"conversions", "inventory", "payments", "orders", "notifications"};
    for (size_t i = 0; i < 5; i++)
        ck_assert_str_eq(scenario_service_names[i], services[i]);
    ck_assert_ptr_null(scenario_service_names[5]);
    size_t n = 0;
    while (scenario_invariant_names[n] != NULL)
        n++;
    ck_assert_uint_eq(n, 8);
    ck_assert_str_eq(scenario_invariant_names[7], "no_premature_events");
    static const char *const outcomes[] = {"executed", "duplicate", "null_compensation", "refused_late"};
    for (size_t i = 0; i < 4; i++)
        ck_assert_str_eq(scenario_barrier_outcomes[i], outcomes[i]);
    ck_assert_ptr_null(scenario_barrier_outcomes[4]);
    /* The fault points come from docs/fault-points.md: a point of each kind is there, with its actions. */
    bool found_handler = false, found_after_handler = false;
    for (const scenario_fault_point_t *fp = scenario_fault_points; fp->name != NULL; fp++) {
        if (strcmp(fp->name, "natomic/before_handler") == 0)
            found_handler = fp->error && fp->drop && fp->duplicate;
        if (strcmp(fp->name, "natomic/after_handler") == 0)
            found_after_handler = fp->error && !fp->drop && !fp->duplicate;
    }
    ck_assert_msg(found_handler, "natomic/before_handler with error, drop and duplicate");
    ck_assert_msg(found_after_handler, "natomic/after_handler with error only");
    scenario_free(NULL);
}
END_TEST

START_TEST(missing_file)
{
    char err[512] = "";
    scenario_t *s = NULL;
    ck_assert_int_eq(scenario_load(&s, "/nonexistent/x.yaml", err, sizeof err), -1);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, "/nonexistent/x.yaml: cannot read") == err, "got '%s'", err);
    /* a tiny error buffer truncates, never overflows */
    char tiny[8];
    ck_assert_int_eq(scenario_load(&s, path_in("bad", "empty.yaml"), tiny, sizeof tiny), -1);
    ck_assert_uint_eq(strlen(tiny), sizeof tiny - 1);
    ck_assert_int_eq(scenario_load(&s, path_in("bad", "empty.yaml"), NULL, 0), -1);
}
END_TEST

/* ---- natomic-lab check --------------------------------------------------- */

START_TEST(check_good_folder)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/good", parser_dir);
    char *paths[] = {dir};
    char *out = NULL, *err = NULL;
    int rc = run_check(paths, 1, &out, &err);
    ck_assert_msg(rc == 0, "rc %d, stderr: %s", rc, err);
    ck_assert_str_eq(err, "");
    static const char *const lines[] = {
        "all_steps.yaml (13 steps): Every kind of step.",
        "defaults.yaml (1 step): The smallest scenario; everything else takes its default.",
        "durable.yaml (12 steps): Durable mode, idempotency keys, replays, one instance at a time, recoveries.",
        "expectations.yaml (6 steps): Every expectation a call and a story can have.",
        "outcomes.yaml (4 steps): What a call caused, compared beyond equality and held for a while.",
        "request_types.yaml (1 step): Requests are YAML maps that become JSON.",
        "services_map.yml (1 step): Services as a map with instances, faults and seed data.",
    };
    char want[8192] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        used += (size_t)snprintf(want + used, sizeof want - used, "ok   %s/%s\n", dir, lines[i]);
    ck_assert_str_eq(out, want);
    free(out);
    free(err);
}
END_TEST

START_TEST(check_bad_folder_and_missing_path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/bad", parser_dir);
    char *paths[] = {dir};
    char *out = NULL, *err = NULL;
    ck_assert_int_eq(run_check(paths, 1, &out, &err), 1);
    ck_assert_str_eq(out, "");
    ck_assert_uint_eq(count_lines(err), n_bad);
    free(out);
    free(err);

    char good[4096];
    snprintf(good, sizeof good, "%s/good/no_extension.scenario", parser_dir);
    char missing[] = "/nonexistent/scenarios";
    char *mixed[] = {good, missing};
    ck_assert_int_eq(run_check(mixed, 2, &out, &err), 2);
    ck_assert_msg(strstr(out, "ok   ") == out && strstr(out, "no_extension.scenario (1 step)") != NULL, "%s", out);
    ck_assert_msg(strstr(err, "/nonexistent/scenarios: ") == err, "%s", err);
    free(out);
    free(err);
}
END_TEST

/* ---- scenarios/ ------------------------------------------------------------ */

START_TEST(suite_scenario_loads)
{
    char err[1024] = "";
    scenario_t *s = NULL;
    int rc = scenario_load(&s, suite_files[_i], err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_gt(s->n_steps, 0);
    scenario_free(s);
}
END_TEST

START_TEST(suite_folder_empty)
{
    const char *dir = getenv("NATOMIC_SCENARIOS_DIR");
    printf("# no scenario files under %s yet: nothing to load\n", dir != NULL ? dir : "(NATOMIC_SCENARIOS_DIR unset)");
    fflush(stdout);
    ck_assert_uint_eq(n_suite, 0);
}
END_TEST

static Suite *scenario_parser_suite(void)
{
    Suite *s = suite_create("scenario_parser");
    TCase *tc = tcase_create("good");
    tcase_add_test(tc, every_step_kind);
    tcase_add_test(tc, every_expectation_kind);
    tcase_add_test(tc, what_a_call_caused);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, requests_take_yaml_core_types);
    tcase_add_test(tc, services_as_map_faults_and_seed_data);
    tcase_add_test(tc, durable_keys);
    tcase_add_test(tc, new_keys_default_off);
    tcase_add_test(tc, any_extension_loads);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad");
    tcase_add_test(tc, enough_bad_files);
    tcase_add_loop_test(tc, bad_file_fails_as_announced, 0, (int)n_bad);
    suite_add_tcase(s, tc);

    tc = tcase_create("api");
    tcase_add_test(tc, state_keys);
    tcase_add_test(tc, templates_expand);
    tcase_add_test(tc, name_lists);
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, check_good_folder);
    tcase_add_test(tc, check_bad_folder_and_missing_path);
    suite_add_tcase(s, tc);

    tc = tcase_create("scenarios");
    if (n_suite > 0)
        tcase_add_loop_test(tc, suite_scenario_loads, 0, (int)n_suite);
    else
        tcase_add_test(tc, suite_folder_empty);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    parser_dir = getenv("SCENARIO_PARSER_DIR");
    if (parser_dir == NULL || parser_dir[0] == '\0')
        parser_dir = SCENARIO_PARSER_SOURCE_DIR;
    char bad_dir[4096];
    snprintf(bad_dir, sizeof bad_dir, "%s/bad", parser_dir);
    collect(bad_dir, &bad_files, &n_bad);
    const char *suite_dir = getenv("NATOMIC_SCENARIOS_DIR");
    if (suite_dir != NULL && suite_dir[0] != '\0')
        collect(suite_dir, &suite_files, &n_suite);

    SRunner *sr = srunner_create(scenario_parser_suite());
    srunner_run_all(sr, CK_ENV);
    srunner_free(sr);
    files_free(bad_files, n_bad);
    files_free(suite_files, n_suite);
    return 0;
}
