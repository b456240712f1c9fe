/*
 * test_durable_units.c -- the pieces of durable mode that need no server.
 *
 * Proves:
 *   - natomic_mode_parse() reads exactly "memory" and "durable", refuses
 *     anything else (and NULL) with EINVAL and leaves *out untouched;
 *     natomic_mode_name() names both, and parse(name(m)) == m;
 *   - natomic_command_register() checks the name (1..63 of [A-Za-z0-9_.-]),
 *     the function and the service, refuses a second registration of a
 *     name with EEXIST (the first one stays); ESTATE after start needs a
 *     running service: tests/durable covers it;
 *   - natomic__cmdlist_run_hooked(): a command marked `ended` is skipped;
 *     the exhausted hook decides DEAD (ended, counted as exhausted) or
 *     DEFERRED (not ended, counted as deferred, run again by the next run
 *     of the list); a success is DONE and ended; the finished hook runs
 *     once per command that ran, with its end, after `ended` was set; the
 *     outcome is NONE when nothing ran;
 *   - natomic__cmdlist_remove() frees exactly the removed argument and
 *     keeps the others, their order and their `ended` marks;
 *   - natomic_rollback_insert_durable() refuses a name nobody registered
 *     (a detached context has no registry at all), bad arguments, a
 *     payload over 64 KiB and a method without the rollback flag; with a
 *     registered name on a memory-mode service it is an ordinary rollback
 *     that hands the registered function a copy of the bytes.
 *
 * The services here are created and never started: natomic_service_new()
 * keeps the connection it is given for natomic_service_start(), so a
 * placeholder stands in for it and is never used.
 */
#include "command_probe.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAST_POLICY(n) ((natomic_retry_policy_t){.attempts = (n), .base_ms = 1, .cap_ms = 2})

/* Statuses compared by name, so a failure prints both names. */
#define ck_assert_status(got, want) ck_assert_str_eq(natomic_status_name(got), natomic_status_name(want))

static const char *end_name(natomic_cmd_end_t end)
{
    switch (end) {
    case NATOMIC_CMD_DONE:
        return "done";
    case NATOMIC_CMD_DEAD:
        return "dead";
    case NATOMIC_CMD_DEFERRED:
        return "deferred";
    }
    return "?";
}

/* ---- modes ------------------------------------------------------------ */

START_TEST(mode_parse_reads_both_names)
{
    natomic_mode_t m = NATOMIC_MODE_MEMORY;
    ck_assert_status(natomic_mode_parse(&m, "durable"), NATOMIC_OK);
    ck_assert_int_eq(m, NATOMIC_MODE_DURABLE);
    ck_assert_status(natomic_mode_parse(&m, "memory"), NATOMIC_OK);
    ck_assert_int_eq(m, NATOMIC_MODE_MEMORY);
}
END_TEST

/* Anything but the two exact names is refused, and *out keeps what it held. */
START_TEST(mode_parse_refuses_other_text)
{
    static const char *const bad[] = {"", "Durable", "MEMORY", "durable ", " memory", "mem", "durables", "0", "1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        natomic_mode_t m = NATOMIC_MODE_DURABLE;
        natomic_status_t st = natomic_mode_parse(&m, bad[i]);
        ck_assert_msg(st == NATOMIC_EINVAL, "natomic_mode_parse(\"%s\") = %s, expected NATOMIC_EINVAL", bad[i],
                      natomic_status_name(st));
        ck_assert_msg(m == NATOMIC_MODE_DURABLE, "natomic_mode_parse(\"%s\") changed *out to %d", bad[i], (int)m);
        m = NATOMIC_MODE_MEMORY;
        natomic_mode_parse(&m, bad[i]);
        ck_assert_msg(m == NATOMIC_MODE_MEMORY, "natomic_mode_parse(\"%s\") changed *out to %d", bad[i], (int)m);
    }
}
END_TEST

START_TEST(mode_parse_refuses_null)
{
    natomic_mode_t m = NATOMIC_MODE_DURABLE;
    ck_assert_status(natomic_mode_parse(&m, NULL), NATOMIC_EINVAL);
    ck_assert_int_eq(m, NATOMIC_MODE_DURABLE);
    ck_assert_status(natomic_mode_parse(NULL, "durable"), NATOMIC_EINVAL);
}
END_TEST

START_TEST(mode_name_round_trips)
{
    ck_assert_str_eq(natomic_mode_name(NATOMIC_MODE_MEMORY), "memory");
    ck_assert_str_eq(natomic_mode_name(NATOMIC_MODE_DURABLE), "durable");
    const natomic_mode_t modes[] = {NATOMIC_MODE_MEMORY, NATOMIC_MODE_DURABLE};
    for (size_t i = 0; i < 2; i++) {
        natomic_mode_t back = modes[i] == NATOMIC_MODE_MEMORY ? NATOMIC_MODE_DURABLE : NATOMIC_MODE_MEMORY;
        ck_assert_status(natomic_mode_parse(&back, natomic_mode_name(modes[i])), NATOMIC_OK);
        ck_assert_int_eq(back, modes[i]);
    }
}
END_TEST

/* ---- the command registry ---------------------------------------------- */

/* Stands in for the connection of a service that is never started (see the top). */
static int connection_placeholder;
#define UNUSED_CONNECTION ((natsConnection *)(void *)&connection_placeholder)

static natomic_service_t *new_service(const char *name, natomic_mode_t mode)
{
    natomic_service_t *svc = NULL;
    natomic_service_config_t cfg = {.name = name, .mode = mode};
    natomic_status_t st = natomic_service_new(&svc, UNUSED_CONNECTION, &cfg);
    ck_assert_msg(st == NATOMIC_OK, "natomic_service_new(%s): %s", name, natomic_status_name(st));
    return svc;
}

/* What a named command saw, one record per call. */
typedef struct named_probe {
    int calls;
    natomic_ctx_t *ctx;
    unsigned char data[128];
    size_t len;
    natomic_status_t result;
} named_probe_t;

static natomic_status_t named_command(natomic_ctx_t *ctx, const void *data, size_t len, void *closure)
{
    named_probe_t *p = closure;
    p->calls++;
    p->ctx = ctx;
    p->len = len;
    if (len <= sizeof p->data && len > 0)
        memcpy(p->data, data, len);
    return p->result;
}

START_TEST(register_accepts_valid_names)
{
    natomic_service_t *svc = new_service("reg_ok", NATOMIC_MODE_DURABLE);
    named_probe_t p = {0};
    char longest[64];
    memset(longest, 'n', 63);
    longest[63] = '\0';
    const char *good[] = {"orders.cancel", "x", "A-Z_a-z.0-9", longest};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        natomic_status_t st = natomic_command_register(svc, good[i], named_command, &p);
        ck_assert_msg(st == NATOMIC_OK, "register \"%s\": %s", good[i], natomic_status_name(st));
        const natomic_named_command_t *found = natomic__registry_find(svc, good[i]);
        ck_assert_msg(found != NULL, "\"%s\" registered but not found", good[i]);
        ck_assert_str_eq(found->name, good[i]);
        ck_assert_ptr_eq(found->closure, &p);
    }
    ck_assert_ptr_null(natomic__registry_find(svc, "orders"));
    ck_assert_ptr_null(natomic__registry_find(svc, "orders.cancel.x"));
    natomic_service_destroy(svc);
}
END_TEST

START_TEST(register_refuses_bad_names_and_arguments)
{
    natomic_service_t *svc = new_service("reg_bad", NATOMIC_MODE_DURABLE);
    named_probe_t p = {0};
    char too_long[65];
    memset(too_long, 'n', 64);
    too_long[64] = '\0';
    const char *bad[] = {"", "a b", "a/b", "a*", "a>", "é", "tab\there", "new\nline", too_long};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        natomic_status_t st = natomic_command_register(svc, bad[i], named_command, &p);
        ck_assert_msg(st == NATOMIC_EINVAL, "register \"%s\": %s, expected NATOMIC_EINVAL", bad[i],
                      natomic_status_name(st));
        ck_assert_msg(natomic__registry_find(svc, bad[i]) == NULL, "refused \"%s\" is in the registry", bad[i]);
    }
    ck_assert_status(natomic_command_register(svc, NULL, named_command, &p), NATOMIC_EINVAL);
    ck_assert_status(natomic_command_register(svc, "fine", NULL, &p), NATOMIC_EINVAL);
    ck_assert_ptr_null(natomic__registry_find(svc, "fine"));
    ck_assert_status(natomic_command_register(NULL, "fine", named_command, &p), NATOMIC_EINVAL);
    natomic_service_destroy(svc);
}
END_TEST

START_TEST(register_twice_is_eexist_and_keeps_the_first)
{
    natomic_service_t *svc = new_service("reg_twice", NATOMIC_MODE_MEMORY);
    named_probe_t first = {0}, second = {0};
    ck_assert_status(natomic_command_register(svc, "stock.release", named_command, &first), NATOMIC_OK);
    ck_assert_status(natomic_command_register(svc, "stock.release", named_command, &second), NATOMIC_EEXIST);
    ck_assert_status(natomic_command_register(svc, "stock.restock", named_command, &second), NATOMIC_OK);
    const natomic_named_command_t *found = natomic__registry_find(svc, "stock.release");
    ck_assert_ptr_nonnull(found);
    ck_assert_ptr_eq(found->closure, &first);
    found = natomic__registry_find(svc, "stock.restock");
    ck_assert_ptr_nonnull(found);
    ck_assert_ptr_eq(found->closure, &second);
    natomic_service_destroy(svc);
}
END_TEST

/* ---- hooked runs ---------------------------------------------------------- */

#define MAX_SEEN 8

/* What the hooks saw, in order. */
typedef struct hook_log {
    const char *defer_name;   /* the exhausted hook defers this command, dead-letters the others */
    int exhausted_calls;
    int exhausted_attempts;
    natomic_status_t exhausted_last;
    int finished_calls;
    char finished[MAX_SEEN][16];
    natomic_cmd_end_t ends[MAX_SEEN];
    bool ended_at_finish[MAX_SEEN];
    void *user_seen;
} hook_log_t;

static natomic_cmd_end_t log_exhausted(natomic_ctx_t *ctx, const char *list_kind, natomic_command_t *cmd,
                                       int attempts, natomic_status_t last, void *user)
{
    hook_log_t *log = user;
    log->exhausted_calls++;
    log->exhausted_attempts = attempts;
    log->exhausted_last = last;
    log->user_seen = user;
    return log->defer_name != NULL && strcmp(cmd->name, log->defer_name) == 0 ? NATOMIC_CMD_DEFERRED
                                                                             : NATOMIC_CMD_DEAD;
}

static void log_finished(natomic_ctx_t *ctx, const char *list_kind, natomic_command_t *cmd, natomic_cmd_end_t end,
                         void *user)
{
    hook_log_t *log = user;
    if (log->finished_calls < MAX_SEEN) {
        natomic__copy(log->finished[log->finished_calls], sizeof log->finished[0], cmd->name);
        log->ends[log->finished_calls] = end;
        log->ended_at_finish[log->finished_calls] = cmd->ended;
    }
    log->finished_calls++;
}

static natomic_run_hooks_t hooks_for(hook_log_t *log)
{
    return (natomic_run_hooks_t){.exhausted = log_exhausted, .finished = log_finished, .user = log};
}

static void append_probes(natomic_cmdlist_t *list, probe_t *probes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_status(natomic__cmdlist_insert(list, list->count, probes[i].name, probe_command, &probes[i],
                                                 probe_free),
                         NATOMIC_OK);
}

/* Checks finished call number i: command name, end, and whether it was already marked ended. */
static void check_finished(const hook_log_t *log, int i, const char *name, natomic_cmd_end_t end, bool ended)
{
    ck_assert_int_lt(i, log->finished_calls);
    ck_assert_str_eq(log->finished[i], name);
    ck_assert_str_eq(end_name(log->ends[i]), end_name(end));
    ck_assert_msg(log->ended_at_finish[i] == ended, "finished(%s, %s): cmd->ended = %d, expected %d", name,
                  end_name(end), log->ended_at_finish[i], ended);
}

START_TEST(hooked_run_skips_ended_commands)
{
    natomic_cmdlist_t list = {0};
    probe_trace_t trace = {0};
    probe_t p[] = {{.name = "a", .trace = &trace}, {.name = "b", .trace = &trace}, {.name = "c", .trace = &trace}};
    hook_log_t log = {0};
    natomic_run_hooks_t hooks = hooks_for(&log);
    natomic_retry_policy_t policy = FAST_POLICY(2);
    natomic_run_report_t report = {0};

    append_probes(&list, p, 3);
    list.items[1].ended = true;
    natomic_outcome_t out = natomic__cmdlist_run_hooked(&list, NULL, "rollback", true, &policy, &hooks, &report);

    ck_assert_str_eq(trace.text, "c,a");
    ck_assert_int_eq(p[1].calls, 0);
    ck_assert_str_eq(natomic_outcome_name(out), "complete");
    ck_assert_uint_eq(report.succeeded, 2);
    ck_assert_int_eq(log.finished_calls, 2);
    check_finished(&log, 0, "c", NATOMIC_CMD_DONE, true);
    check_finished(&log, 1, "a", NATOMIC_CMD_DONE, true);
    ck_assert_msg(list.items[0].ended && list.items[1].ended && list.items[2].ended, "ended marks: a=%d b=%d c=%d",
                  list.items[0].ended, list.items[1].ended, list.items[2].ended);
    ck_assert_uint_eq(list.count, 3); /* skipping does not remove */
    natomic__cmdlist_free(&list);
    ck_assert_int_eq(p[0].frees + p[1].frees + p[2].frees, 3);
}
END_TEST

START_TEST(hooked_run_of_ended_list_is_none)
{
    natomic_cmdlist_t list = {0};
    probe_t p[] = {{.name = "a"}, {.name = "b"}};
    hook_log_t log = {0};
    natomic_run_hooks_t hooks = hooks_for(&log);
    natomic_retry_policy_t policy = FAST_POLICY(2);
    natomic_run_report_t report = {0};

    append_probes(&list, p, 2);
    list.items[0].ended = list.items[1].ended = true;
    natomic_outcome_t out = natomic__cmdlist_run_hooked(&list, NULL, "dispatch", false, &policy, &hooks, &report);

    ck_assert_str_eq(natomic_outcome_name(out), "none");
    ck_assert_int_eq(p[0].calls + p[1].calls, 0);
    ck_assert_int_eq(log.finished_calls, 0);
    ck_assert_int_eq(log.exhausted_calls, 0);
    ck_assert_uint_eq(report.succeeded + report.exhausted + report.deferred + report.retries, 0);

    /* An empty list and a NULL list are NONE too, with no hook called. */
    natomic_cmdlist_t empty = {0};
    ck_assert_str_eq(natomic_outcome_name(natomic__cmdlist_run_hooked(&empty, NULL, "dispatch", false, &policy,
                                                                      &hooks, &report)),
                     "none");
    ck_assert_str_eq(
        natomic_outcome_name(natomic__cmdlist_run_hooked(NULL, NULL, "dispatch", false, &policy, &hooks, NULL)),
        "none");
    ck_assert_int_eq(log.finished_calls, 0);
    natomic__cmdlist_free(&list);
}
END_TEST

/* DEFERRED: not ended, counted as deferred, INCOMPLETE; the next run takes it again, alone. */
START_TEST(deferred_command_stays_pending)
{
    natomic_cmdlist_t list = {0};
    probe_trace_t trace = {0};
    probe_t p[] = {{.name = "a", .trace = &trace},
                   {.name = "remote", .trace = &trace, .fail_times = -1, .fail_with = NATOMIC_ENORESPONDERS}};
    hook_log_t log = {.defer_name = "remote"};
    natomic_run_hooks_t hooks = hooks_for(&log);
    natomic_retry_policy_t policy = FAST_POLICY(2);
    natomic_run_report_t report = {0};

    append_probes(&list, p, 2);
    natomic_outcome_t out = natomic__cmdlist_run_hooked(&list, NULL, "rollback", true, &policy, &hooks, &report);

    ck_assert_str_eq(trace.text, "remote,remote,a");
    ck_assert_str_eq(natomic_outcome_name(out), "incomplete");
    ck_assert_uint_eq(report.deferred, 1);
    ck_assert_uint_eq(report.exhausted, 0);
    ck_assert_uint_eq(report.succeeded, 1);
    ck_assert_uint_eq(report.retries, 1);
    ck_assert_int_eq(log.exhausted_calls, 1);
    ck_assert_int_eq(log.exhausted_attempts, 2);
    ck_assert_status(log.exhausted_last, NATOMIC_ENORESPONDERS);
    ck_assert_ptr_eq(log.user_seen, &log);
    ck_assert_msg(!list.items[1].ended, "a deferred command is marked ended");
    ck_assert_msg(list.items[0].ended, "a command that succeeded is not marked ended");
    ck_assert_int_eq(log.finished_calls, 2);
    check_finished(&log, 0, "remote", NATOMIC_CMD_DEFERRED, false);
    check_finished(&log, 1, "a", NATOMIC_CMD_DONE, true);

    /* The next round: the target answers now; only the deferred command runs. */
    p[1].fail_times = 0;
    memset(&report, 0, sizeof report);
    out = natomic__cmdlist_run_hooked(&list, NULL, "rollback", true, &policy, &hooks, &report);
    ck_assert_str_eq(trace.text, "remote,remote,a,remote");
    ck_assert_int_eq(p[0].calls, 1);
    ck_assert_str_eq(natomic_outcome_name(out), "complete");
    ck_assert_uint_eq(report.succeeded, 1);
    ck_assert_uint_eq(report.deferred, 0);
    ck_assert_int_eq(log.finished_calls, 3);
    check_finished(&log, 2, "remote", NATOMIC_CMD_DONE, true);
    ck_assert_msg(list.items[1].ended, "the deferred command is not marked ended after it succeeded");

    /* And a third run has nothing left. */
    out = natomic__cmdlist_run_hooked(&list, NULL, "rollback", true, &policy, &hooks, NULL);
    ck_assert_str_eq(natomic_outcome_name(out), "none");
    ck_assert_int_eq(p[1].calls, 3);
    natomic__cmdlist_free(&list);
}
END_TEST

/* DEAD: ended, counted as exhausted; never run again. */
START_TEST(dead_command_is_ended)
{
    natomic_cmdlist_t list = {0};
    probe_t p = {.name = "broken", .fail_times = -1, .fail_with = NATOMIC_EBUSINESS};
    hook_log_t log = {0};
    natomic_run_hooks_t hooks = hooks_for(&log);
    natomic_retry_policy_t policy = FAST_POLICY(3);
    natomic_run_report_t report = {0};

    append_probes(&list, &p, 1);
    natomic_outcome_t out = natomic__cmdlist_run_hooked(&list, NULL, "dispatch", false, &policy, &hooks, &report);

    ck_assert_str_eq(natomic_outcome_name(out), "incomplete");
    ck_assert_int_eq(p.calls, 3);
    ck_assert_uint_eq(report.exhausted, 1);
    ck_assert_uint_eq(report.deferred, 0);
    ck_assert_uint_eq(report.retries, 2);
    ck_assert_int_eq(log.exhausted_calls, 1);
    ck_assert_int_eq(log.exhausted_attempts, 3);
    ck_assert_status(log.exhausted_last, NATOMIC_EBUSINESS);
    ck_assert_msg(list.items[0].ended, "a dead-lettered command is not marked ended");
    ck_assert_int_eq(log.finished_calls, 1);
    check_finished(&log, 0, "broken", NATOMIC_CMD_DEAD, true);

    out = natomic__cmdlist_run_hooked(&list, NULL, "dispatch", false, &policy, &hooks, &report);
    ck_assert_str_eq(natomic_outcome_name(out), "none");
    ck_assert_int_eq(p.calls, 3);
    ck_assert_int_eq(log.finished_calls, 1);
    natomic__cmdlist_free(&list);
}
END_TEST

/* One run, three ends: finished is called once per command, in run order, with its end. */
START_TEST(finished_hook_sees_each_end_once)
{
    natomic_cmdlist_t list = {0};
    probe_t p[] = {{.name = "ok"},
                   {.name = "dead", .fail_times = -1, .fail_with = NATOMIC_EINTERNAL},
                   {.name = "later", .fail_times = -1, .fail_with = NATOMIC_ETIMEOUT},
                   {.name = "flaky", .fail_times = 1}};
    hook_log_t log = {.defer_name = "later"};
    natomic_run_hooks_t hooks = hooks_for(&log);
    natomic_retry_policy_t policy = FAST_POLICY(2);
    natomic_run_report_t report = {0};

    append_probes(&list, p, 4);
    natomic_outcome_t out = natomic__cmdlist_run_hooked(&list, NULL, "rollback", true, &policy, &hooks, &report);

    ck_assert_str_eq(natomic_outcome_name(out), "incomplete");
    ck_assert_int_eq(log.finished_calls, 4);
    check_finished(&log, 0, "flaky", NATOMIC_CMD_DONE, true);
    check_finished(&log, 1, "later", NATOMIC_CMD_DEFERRED, false);
    check_finished(&log, 2, "dead", NATOMIC_CMD_DEAD, true);
    check_finished(&log, 3, "ok", NATOMIC_CMD_DONE, true);
    ck_assert_int_eq(log.exhausted_calls, 2);
    ck_assert_uint_eq(report.succeeded, 2);
    ck_assert_uint_eq(report.exhausted, 1);
    ck_assert_uint_eq(report.deferred, 1);
    ck_assert_uint_eq(report.retries, 3); /* flaky once, dead once, later once */
    natomic__cmdlist_free(&list);
}
END_TEST

/* Without an exhausted hook a command that failed every attempt is DEAD; without hooks too. */
START_TEST(missing_exhausted_hook_means_dead)
{
    natomic_cmdlist_t list = {0};
    probe_t p = {.name = "broken", .fail_times = -1};
    hook_log_t log = {0};
    natomic_run_hooks_t only_finished = {.finished = log_finished, .user = &log};
    natomic_retry_policy_t policy = FAST_POLICY(1);
    natomic_run_report_t report = {0};

    append_probes(&list, &p, 1);
    natomic_outcome_t out =
        natomic__cmdlist_run_hooked(&list, NULL, "dispatch", false, &policy, &only_finished, &report);
    ck_assert_str_eq(natomic_outcome_name(out), "incomplete");
    ck_assert_uint_eq(report.exhausted, 1);
    ck_assert_int_eq(log.finished_calls, 1);
    check_finished(&log, 0, "broken", NATOMIC_CMD_DEAD, true);

    list.items[0].ended = false;
    memset(&report, 0, sizeof report);
    out = natomic__cmdlist_run_hooked(&list, NULL, "dispatch", false, &policy, NULL, &report);
    ck_assert_str_eq(natomic_outcome_name(out), "incomplete");
    ck_assert_uint_eq(report.exhausted, 1);
    ck_assert_msg(list.items[0].ended, "a command exhausted without hooks is not marked ended");
    ck_assert_int_eq(p.calls, 2);
    natomic__cmdlist_free(&list);
}
END_TEST

/* ---- remove ------------------------------------------------------------------ */

START_TEST(remove_frees_only_that_command)
{
    natomic_cmdlist_t list = {0};
    probe_t p[] = {{.name = "a"}, {.name = "b"}, {.name = "c"}, {.name = "d"}};
    char names[64];

    append_probes(&list, p, 4);
    list.items[2].ended = true; /* c */
    ck_assert_status(natomic__cmdlist_remove(&list, 1), NATOMIC_OK);
    ck_assert_uint_eq(list.count, 3);
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,c,d");
    ck_assert_int_eq(p[1].frees, 1);
    ck_assert_int_eq(p[0].frees + p[2].frees + p[3].frees, 0);
    /* The marks moved with their commands. */
    ck_assert_msg(list.items[1].ended && !list.items[0].ended && !list.items[2].ended,
                  "ended marks after remove: a=%d c=%d d=%d", list.items[0].ended, list.items[1].ended,
                  list.items[2].ended);
    ck_assert_ptr_eq(list.items[1].arg, &p[2]);

    ck_assert_status(natomic__cmdlist_remove(&list, 2), NATOMIC_OK); /* the last */
    ck_assert_status(natomic__cmdlist_remove(&list, 0), NATOMIC_OK); /* the first */
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "c");
    ck_assert_int_eq(p[0].frees, 1);
    ck_assert_int_eq(p[3].frees, 1);
    ck_assert_int_eq(p[2].frees, 0);

    /* An insert after a remove lands where it is asked. */
    probe_t x = {.name = "x"};
    ck_assert_status(natomic__cmdlist_insert(&list, 0, "x", probe_command, &x, probe_free), NATOMIC_OK);
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "x,c");
    natomic__cmdlist_free(&list);
    ck_assert_int_eq(p[2].frees, 1);
    ck_assert_int_eq(x.frees, 1);
    ck_assert_int_eq(p[1].frees, 1);
}
END_TEST

START_TEST(remove_outside_the_list_is_refused)
{
    natomic_cmdlist_t list = {0};
    probe_t p[] = {{.name = "a"}, {.name = "b"}};
    char names[64];

    ck_assert_status(natomic__cmdlist_remove(&list, 0), NATOMIC_EINVAL);
    ck_assert_status(natomic__cmdlist_remove(NULL, 0), NATOMIC_EINVAL);
    append_probes(&list, p, 2);
    ck_assert_status(natomic__cmdlist_remove(&list, 2), NATOMIC_EINVAL);
    ck_assert_status(natomic__cmdlist_remove(&list, SIZE_MAX), NATOMIC_EINVAL);
    ck_assert_uint_eq(list.count, 2);
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,b");
    ck_assert_int_eq(p[0].frees + p[1].frees, 0);
    natomic__cmdlist_free(&list);
}
END_TEST

/* ---- durable rollback registration ---------------------------------------------- */

START_TEST(durable_rollback_on_detached_context_is_refused)
{
    natomic_ctx_t ctx;
    natomic__ctx_init(&ctx, NULL, NULL, "svc", "method", NATOMIC_ROLLBACK_ONCE_FAILED);
    const char payload[] = "order-17";
    ck_assert_status(natomic_rollback_append_durable(&ctx, "orders.cancel", payload, sizeof payload),
                     NATOMIC_EINVAL);
    ck_assert_status(natomic_rollback_insert_durable(&ctx, 0, "orders.cancel", payload, sizeof payload),
                     NATOMIC_EINVAL);
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 0);
    ck_assert_status(natomic_rollback_append_durable(NULL, "orders.cancel", payload, sizeof payload),
                     NATOMIC_EINVAL);
    natomic__ctx_release(&ctx);
}
END_TEST

START_TEST(durable_rollback_refuses_unregistered_name)
{
    natomic_service_t *svc = new_service("durable_names", NATOMIC_MODE_MEMORY);
    named_probe_t p = {0};
    ck_assert_status(natomic_command_register(svc, "orders.cancel", named_command, &p), NATOMIC_OK);
    natomic_ctx_t ctx;
    natomic__ctx_init(&ctx, svc, NULL, "durable_names", "create", NATOMIC_ROLLBACK_ONCE_FAILED);
    const char payload[] = "order-17";

    ck_assert_status(natomic_rollback_append_durable(&ctx, "orders.cancelled", payload, sizeof payload),
                     NATOMIC_EINVAL);
    ck_assert_status(natomic_rollback_append_durable(&ctx, "orders", payload, sizeof payload), NATOMIC_EINVAL);
    ck_assert_status(natomic_rollback_append_durable(&ctx, "", payload, sizeof payload), NATOMIC_EINVAL);
    ck_assert_status(natomic_rollback_append_durable(&ctx, NULL, payload, sizeof payload), NATOMIC_EINVAL);
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 0);
    natomic__ctx_release(&ctx);
    natomic_service_destroy(svc);
}
END_TEST

START_TEST(durable_rollback_refuses_bad_arguments)
{
    natomic_service_t *svc = new_service("durable_args", NATOMIC_MODE_MEMORY);
    named_probe_t p = {0};
    ck_assert_status(natomic_command_register(svc, "undo", named_command, &p), NATOMIC_OK);
    natomic_ctx_t ctx;
    natomic__ctx_init(&ctx, svc, NULL, "durable_args", "m", NATOMIC_ROLLBACK_ONCE_FAILED);
    size_t big = 64 * 1024 + 1;
    unsigned char *buf = calloc(1, big);
    ck_assert_ptr_nonnull(buf);

    ck_assert_status(natomic_rollback_append_durable(&ctx, "undo", NULL, 3), NATOMIC_EINVAL);
    ck_assert_status(natomic_rollback_append_durable(&ctx, "undo", buf, big), NATOMIC_EINVAL);
    ck_assert_status(natomic_rollback_insert_durable(&ctx, 1, "undo", buf, 1), NATOMIC_EINVAL); /* past count */
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 0);
    /* 64 KiB exactly, and an empty payload, are accepted. */
    ck_assert_status(natomic_rollback_append_durable(&ctx, "undo", buf, big - 1), NATOMIC_OK);
    ck_assert_status(natomic_rollback_insert_durable(&ctx, 0, "undo", NULL, 0), NATOMIC_OK);
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 2);
    free(buf);
    natomic__ctx_release(&ctx);

    /* A method without the rollback flag. */
    natomic__ctx_init(&ctx, svc, NULL, "durable_args", "m", NATOMIC_DISPATCH_AFTER_COMMIT);
    ck_assert_status(natomic_rollback_append_durable(&ctx, "undo", "x", 1), NATOMIC_ENOTENABLED);
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 0);
    natomic__ctx_release(&ctx);
    ck_assert_int_eq(p.calls, 0);
    natomic_service_destroy(svc);
}
END_TEST

/* Memory mode: an ordinary rollback that gives the registered function its own copy of the bytes. */
START_TEST(durable_rollback_runs_registered_function_with_bytes)
{
    natomic_service_t *svc = new_service("durable_run", NATOMIC_MODE_MEMORY);
    named_probe_t first = {0}, second = {0};
    ck_assert_status(natomic_command_register(svc, "stock.release", named_command, &first), NATOMIC_OK);
    ck_assert_status(natomic_command_register(svc, "card.refund", named_command, &second), NATOMIC_OK);
    natomic_ctx_t ctx;
    natomic__ctx_init(&ctx, svc, NULL, "durable_run", "buy", NATOMIC_ROLLBACK_ONCE_FAILED);
    unsigned char payload[] = {0x00, 0xff, 'o', 'k', 0x00, 0x7f};
    ck_assert_status(natomic_rollback_append_durable(&ctx, "stock.release", payload, sizeof payload), NATOMIC_OK);
    ck_assert_status(natomic_rollback_append_durable(&ctx, "card.refund", "r", 1), NATOMIC_OK);
    memset(payload, 0xee, sizeof payload); /* the registration kept its own copy */
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 2);

    natomic_retry_policy_t policy = FAST_POLICY(2);
    natomic_run_report_t report = {0};
    natomic_outcome_t out =
        natomic__cmdlist_run(&ctx.rollbacks, &ctx, "rollback", true, &policy, NULL, NULL, &report);
    ck_assert_str_eq(natomic_outcome_name(out), "complete");
    ck_assert_int_eq(first.calls, 1);
    ck_assert_int_eq(second.calls, 1);
    ck_assert_ptr_eq(first.ctx, &ctx);
    ck_assert_uint_eq(first.len, 6);
    const unsigned char expected[] = {0x00, 0xff, 'o', 'k', 0x00, 0x7f};
    ck_assert_mem_eq(first.data, expected, sizeof expected);
    ck_assert_uint_eq(second.len, 1);
    ck_assert_mem_eq(second.data, "r", 1);
    natomic__ctx_release(&ctx);
    natomic_service_destroy(svc);
}
END_TEST

static Suite *durable_units_suite(void)
{
    Suite *s = suite_create("durable units");

    TCase *modes = tcase_create("modes");
    tcase_add_test(modes, mode_parse_reads_both_names);
    tcase_add_test(modes, mode_parse_refuses_other_text);
    tcase_add_test(modes, mode_parse_refuses_null);
    tcase_add_test(modes, mode_name_round_trips);
    suite_add_tcase(s, modes);

    TCase *registry = tcase_create("registry");
    tcase_add_test(registry, register_accepts_valid_names);
    tcase_add_test(registry, register_refuses_bad_names_and_arguments);
    tcase_add_test(registry, register_twice_is_eexist_and_keeps_the_first);
    suite_add_tcase(s, registry);

    TCase *hooked = tcase_create("hooked run");
    tcase_add_test(hooked, hooked_run_skips_ended_commands);
    tcase_add_test(hooked, hooked_run_of_ended_list_is_none);
    tcase_add_test(hooked, deferred_command_stays_pending);
    tcase_add_test(hooked, dead_command_is_ended);
    tcase_add_test(hooked, finished_hook_sees_each_end_once);
    tcase_add_test(hooked, missing_exhausted_hook_means_dead);
    suite_add_tcase(s, hooked);

    TCase *remove = tcase_create("remove");
    tcase_add_test(remove, remove_frees_only_that_command);
    tcase_add_test(remove, remove_outside_the_list_is_refused);
    suite_add_tcase(s, remove);

    TCase *durable = tcase_create("durable rollback");
    tcase_add_test(durable, durable_rollback_on_detached_context_is_refused);
    tcase_add_test(durable, durable_rollback_refuses_unregistered_name);
    tcase_add_test(durable, durable_rollback_refuses_bad_arguments);
    tcase_add_test(durable, durable_rollback_runs_registered_function_with_bytes);
    suite_add_tcase(s, durable);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(durable_units_suite());
    srunner_run_all(sr, CK_ENV);
    srunner_free(sr);
    return 0; /* results are the TAP lines; a non-zero exit is an ERROR for meson */
}
