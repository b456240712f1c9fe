/*
 * test_command_run.c -- how a command list runs.
 *
 * Proves, on natomic__cmdlist_run() and the retry policy:
 *   - rollbacks (reverse=true) run in reverse registration order,
 *     dispatches (reverse=false) in registration order;
 *   - a permanently failing command does not stop the others;
 *   - a failing command is retried up to policy.attempts, the retries are
 *     counted, and one that fails every attempt is handed to on_exhausted
 *     exactly once with the attempt count and its last status;
 *   - the outcome is NONE for an empty list, COMPLETE when every command
 *     eventually succeeded, INCOMPLETE otherwise; running leaves the list
 *     and its arguments alone;
 *   - the backoff doubles from base up to cap; normalizing a policy fills
 *     the defaults (3 attempts, 20 ms, 1000 ms) and keeps cap >= base.
 * Delays are 1 ms so the suite stays fast; elapsed time is never asserted.
 */
#include "command_probe.h"

#include <check.h>
#include <string.h>

/* Fast policies: a retry waits 1 or 2 ms. */
#define FAST_POLICY(n) ((natomic_retry_policy_t){.attempts = (n), .base_ms = 1, .cap_ms = 2})

/* What on_exhausted saw. */
typedef struct exhausted_log {
    int calls;
    natomic_ctx_t *ctx;
    char list_kind[32];
    char command[32];
    int attempts;
    natomic_status_t last;
} exhausted_log_t;

static void record_exhausted(natomic_ctx_t *ctx, const char *list_kind, const natomic_command_t *cmd, int attempts,
                             natomic_status_t last, void *user)
{
    exhausted_log_t *log = user;
    log->calls++;
    log->ctx = ctx;
    natomic__copy(log->list_kind, sizeof log->list_kind, list_kind);
    natomic__copy(log->command, sizeof log->command, cmd->name);
    log->attempts = attempts;
    log->last = last;
}

/* Registers the probes in order, as natomic_*_append() does. */
static void append_probes(natomic_cmdlist_t *list, probe_t *probes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(natomic__cmdlist_insert(list, list->count, probes[i].name, probe_command, &probes[i],
                                                 probe_free),
                         NATOMIC_OK);
}

/* Fails with ETRANSIENT on the first two calls, ETIMEOUT from the third: the last status differs. */
static natomic_status_t fail_transient_then_timeout(natomic_ctx_t *ctx, void *arg)
{
    probe_t *p = arg;
    (void)ctx;
    p->calls++;
    return p->calls < 3 ? NATOMIC_ETRANSIENT : NATOMIC_ETIMEOUT;
}

START_TEST(rollbacks_run_in_reverse_order)
{
    natomic_cmdlist_t list = {0};
    probe_trace_t trace = {0};
    probe_t p[] = {{.name = "a", .trace = &trace}, {.name = "b", .trace = &trace}, {.name = "c", .trace = &trace}};
    natomic_retry_policy_t policy = FAST_POLICY(3);
    natomic_run_report_t report = {0};

    append_probes(&list, p, 3);
    natomic_outcome_t out = natomic__cmdlist_run(&list, NULL, "rollback", true, &policy, NULL, NULL, &report);

    ck_assert_str_eq(trace.text, "c,b,a");
    ck_assert_str_eq(natomic_outcome_name(out), "complete");
    ck_assert_uint_eq(report.succeeded, 3);
    ck_assert_uint_eq(report.exhausted, 0);
    ck_assert_uint_eq(report.retries, 0);
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(dispatches_run_in_registration_order)
{
    natomic_cmdlist_t list = {0};
    probe_trace_t trace = {0};
    probe_t p[] = {{.name = "a", .trace = &trace}, {.name = "b", .trace = &trace}, {.name = "c", .trace = &trace}};
    natomic_retry_policy_t policy = FAST_POLICY(3);

    append_probes(&list, p, 3);
    natomic_outcome_t out = natomic__cmdlist_run(&list, NULL, "dispatch", false, &policy, NULL, NULL, NULL);

    ck_assert_str_eq(trace.text, "a,b,c");
    ck_assert_str_eq(natomic_outcome_name(out), "complete");
    natomic__cmdlist_free(&list);
}
END_TEST

/* Order after inserts is the list's order, whatever the registration calls were. */
START_TEST(run_order_follows_inserts)
{
    natomic_cmdlist_t list = {0};
    probe_trace_t trace = {0};
    probe_t a = {.name = "a", .trace = &trace}, b = {.name = "b", .trace = &trace},
            x = {.name = "x", .trace = &trace};
    natomic_retry_policy_t policy = FAST_POLICY(1);

    append_probes(&list, &a, 1);
    append_probes(&list, &b, 1);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 0, "x", probe_command, &x, probe_free), NATOMIC_OK);
    natomic__cmdlist_run(&list, NULL, "rollback", true, &policy, NULL, NULL, NULL);

    ck_assert_str_eq(trace.text, "b,a,x");
    natomic__cmdlist_free(&list);
}
END_TEST

/* A middle command that always fails: each one is still attempted, in order. */
static void check_every_command_attempted(bool reverse, const char *expected_trace)
{
    natomic_cmdlist_t list = {0};
    probe_trace_t trace = {0};
    probe_t p[] = {{.name = "a", .trace = &trace},
                   {.name = "b", .trace = &trace, .fail_times = -1, .fail_with = NATOMIC_EBUSINESS},
                   {.name = "c", .trace = &trace}};
    natomic_retry_policy_t policy = FAST_POLICY(2);
    natomic_run_report_t report = {0};
    exhausted_log_t exhausted = {0};

    append_probes(&list, p, 3);
    natomic_outcome_t out = natomic__cmdlist_run(&list, NULL, reverse ? "rollback" : "dispatch", reverse, &policy,
                                                 record_exhausted, &exhausted, &report);

    ck_assert_str_eq(trace.text, expected_trace);
    ck_assert_int_eq(p[0].calls, 1);
    ck_assert_int_eq(p[1].calls, 2);
    ck_assert_int_eq(p[2].calls, 1);
    ck_assert_str_eq(natomic_outcome_name(out), "incomplete");
    ck_assert_uint_eq(report.succeeded, 2);
    ck_assert_uint_eq(report.exhausted, 1);
    ck_assert_int_eq(exhausted.calls, 1);
    ck_assert_str_eq(exhausted.command, "b");
    natomic__cmdlist_free(&list);
}

START_TEST(every_rollback_attempted_when_one_fails)
{
    check_every_command_attempted(true, "c,b,b,a");
}
END_TEST

START_TEST(every_dispatch_attempted_when_one_fails)
{
    check_every_command_attempted(false, "a,b,b,c");
}
END_TEST

/* A command failing n-1 times then succeeding, with attempts = n, completes with n-1 retries. */
START_TEST(retry_until_success_completes)
{
    int n = _i; /* loop test: n = 1 .. 5 */
    natomic_cmdlist_t list = {0};
    probe_t p = {.name = "flaky", .fail_times = n - 1};
    natomic_retry_policy_t policy = FAST_POLICY(n);
    natomic_run_report_t report = {0};
    exhausted_log_t exhausted = {0};

    append_probes(&list, &p, 1);
    natomic_outcome_t out =
        natomic__cmdlist_run(&list, NULL, "rollback", true, &policy, record_exhausted, &exhausted, &report);

    ck_assert_str_eq(natomic_outcome_name(out), "complete");
    ck_assert_int_eq(p.calls, n);
    ck_assert_uint_eq(report.retries, (size_t)(n - 1));
    ck_assert_uint_eq(report.succeeded, 1);
    ck_assert_uint_eq(report.exhausted, 0);
    ck_assert_int_eq(exhausted.calls, 0);
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(permanent_failure_is_exhausted_once)
{
    natomic_cmdlist_t list = {0};
    natomic_ctx_t ctx;
    probe_t p = {.name = "broken"};
    natomic_retry_policy_t policy = FAST_POLICY(3);
    natomic_run_report_t report = {0};
    exhausted_log_t exhausted = {0};

    natomic__ctx_init(&ctx, NULL, NULL, "svc", "method", 0);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 0, "broken", fail_transient_then_timeout, &p, probe_free),
                     NATOMIC_OK);
    natomic_outcome_t out =
        natomic__cmdlist_run(&list, &ctx, "dispatch", false, &policy, record_exhausted, &exhausted, &report);

    ck_assert_int_eq(p.calls, 3);
    ck_assert_str_eq(natomic_outcome_name(out), "incomplete");
    ck_assert_uint_eq(report.exhausted, 1);
    ck_assert_uint_eq(report.succeeded, 0);
    ck_assert_uint_eq(report.retries, 2);
    ck_assert_int_eq(exhausted.calls, 1);
    ck_assert_int_eq(exhausted.attempts, 3);
    ck_assert_str_eq(natomic_status_name(exhausted.last), natomic_status_name(NATOMIC_ETIMEOUT));
    ck_assert_str_eq(exhausted.list_kind, "dispatch");
    ck_assert_str_eq(exhausted.command, "broken");
    ck_assert_ptr_eq(exhausted.ctx, &ctx);
    natomic__cmdlist_free(&list);
    natomic__ctx_release(&ctx);
}
END_TEST

START_TEST(single_attempt_policy_never_retries)
{
    natomic_cmdlist_t list = {0};
    probe_t p = {.name = "once", .fail_times = -1};
    natomic_retry_policy_t policy = FAST_POLICY(1);
    natomic_run_report_t report = {0};
    exhausted_log_t exhausted = {0};

    append_probes(&list, &p, 1);
    natomic__cmdlist_run(&list, NULL, "rollback", true, &policy, record_exhausted, &exhausted, &report);

    ck_assert_int_eq(p.calls, 1);
    ck_assert_uint_eq(report.retries, 0);
    ck_assert_int_eq(exhausted.calls, 1);
    ck_assert_int_eq(exhausted.attempts, 1);
    ck_assert_str_eq(natomic_status_name(exhausted.last), natomic_status_name(NATOMIC_ETRANSIENT));
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(exhaustion_without_callback_is_counted)
{
    natomic_cmdlist_t list = {0};
    probe_t p = {.name = "broken", .fail_times = -1};
    natomic_retry_policy_t policy = FAST_POLICY(2);
    natomic_run_report_t report = {0};

    append_probes(&list, &p, 1);
    natomic_outcome_t out = natomic__cmdlist_run(&list, NULL, "rollback", true, &policy, NULL, NULL, &report);

    ck_assert_str_eq(natomic_outcome_name(out), "incomplete");
    ck_assert_uint_eq(report.exhausted, 1);
    ck_assert_int_eq(p.calls, 2);
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(empty_list_outcome_is_none)
{
    natomic_cmdlist_t list = {0};
    natomic_retry_policy_t policy = FAST_POLICY(3);
    natomic_run_report_t report = {0};
    exhausted_log_t exhausted = {0};

    natomic_outcome_t out =
        natomic__cmdlist_run(&list, NULL, "rollback", true, &policy, record_exhausted, &exhausted, &report);
    ck_assert_str_eq(natomic_outcome_name(out), "none");
    ck_assert_int_eq(out, NATOMIC_OUTCOME_NONE);
    ck_assert_uint_eq(report.succeeded + report.exhausted + report.retries, 0);
    ck_assert_int_eq(exhausted.calls, 0);

    out = natomic__cmdlist_run(NULL, NULL, "dispatch", false, &policy, NULL, NULL, NULL);
    ck_assert_str_eq(natomic_outcome_name(out), "none");
}
END_TEST

START_TEST(run_leaves_list_and_args_alone)
{
    natomic_cmdlist_t list = {0};
    natomic_ctx_t ctx;
    probe_t p[] = {{.name = "a"}, {.name = "b", .fail_times = -1}};
    natomic_retry_policy_t policy = FAST_POLICY(2);
    char names[128];

    natomic__ctx_init(&ctx, NULL, NULL, "svc", "method", 0);
    append_probes(&list, p, 2);
    natomic__cmdlist_run(&list, &ctx, "rollback", true, &policy, NULL, NULL, NULL);

    ck_assert_uint_eq(list.count, 2);
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,b");
    ck_assert_int_eq(p[0].frees, 0);
    ck_assert_int_eq(p[1].frees, 0);
    ck_assert_ptr_eq(p[0].last_ctx, &ctx);
    ck_assert_ptr_eq(p[1].last_ctx, &ctx);

    natomic__cmdlist_free(&list);
    ck_assert_int_eq(p[0].frees, 1);
    ck_assert_int_eq(p[1].frees, 1);
    natomic__ctx_release(&ctx);
}
END_TEST

/*
 * The outcome describes this run only: a report that already holds counts
 * (one report reused to total two runs) must not turn a run in which every
 * command succeeded into INCOMPLETE.
 */
START_TEST(outcome_ignores_earlier_report_counts)
{
    natomic_cmdlist_t failing = {0}, succeeding = {0};
    probe_t broken = {.name = "broken", .fail_times = -1}, fine = {.name = "fine"};
    natomic_retry_policy_t policy = FAST_POLICY(1);
    natomic_run_report_t report = {0};

    append_probes(&failing, &broken, 1);
    append_probes(&succeeding, &fine, 1);
    natomic_outcome_t first = natomic__cmdlist_run(&failing, NULL, "rollback", true, &policy, NULL, NULL, &report);
    natomic_outcome_t second =
        natomic__cmdlist_run(&succeeding, NULL, "dispatch", false, &policy, NULL, NULL, &report);
    /* Freed before asserting: a failure here must not show as a leak under valgrind (no fork). */
    natomic__cmdlist_free(&failing);
    natomic__cmdlist_free(&succeeding);

    ck_assert_str_eq(natomic_outcome_name(first), "incomplete");
    ck_assert_int_eq(fine.calls, 1);
    ck_assert_str_eq(natomic_outcome_name(second), "complete");
}
END_TEST

/* NULL policy means the defaults; a succeeding command never waits on them. */
START_TEST(null_policy_uses_defaults)
{
    natomic_cmdlist_t list = {0};
    probe_t p = {.name = "ok"};

    append_probes(&list, &p, 1);
    natomic_outcome_t out = natomic__cmdlist_run(&list, NULL, "dispatch", false, NULL, NULL, NULL, NULL);

    ck_assert_str_eq(natomic_outcome_name(out), "complete");
    ck_assert_int_eq(p.calls, 1);
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(backoff_doubles_up_to_cap)
{
    static const int64_t expected[] = {10, 20, 40, 80, 100, 100};
    natomic_retry_policy_t policy = {.attempts = 7, .base_ms = 10, .cap_ms = 100};

    for (int retry = 1; retry <= 6; retry++)
        ck_assert_msg(natomic__backoff_ms(&policy, retry) == expected[retry - 1],
                      "backoff before retry %d: %lld ms, expected %lld", retry,
                      (long long)natomic__backoff_ms(&policy, retry), (long long)expected[retry - 1]);
}
END_TEST

START_TEST(backoff_stays_at_cap_for_large_retry_numbers)
{
    natomic_retry_policy_t policy = {.attempts = 3, .base_ms = 20, .cap_ms = 1000};

    ck_assert_int_eq(natomic__backoff_ms(&policy, 64), 1000);
    ck_assert_int_eq(natomic__backoff_ms(&policy, 1000000), 1000);
}
END_TEST

START_TEST(normalize_fills_defaults)
{
    natomic_retry_policy_t p = natomic__retry_policy_normalize((natomic_retry_policy_t){0});
    ck_assert_int_eq(p.attempts, 3);
    ck_assert_int_eq(p.base_ms, 20);
    ck_assert_int_eq(p.cap_ms, 1000);

    p = natomic__retry_policy_normalize((natomic_retry_policy_t){.attempts = -1, .base_ms = -5, .cap_ms = -7});
    ck_assert_int_eq(p.attempts, 3);
    ck_assert_int_eq(p.base_ms, 20);
    ck_assert_int_eq(p.cap_ms, 1000);
}
END_TEST

START_TEST(normalize_keeps_given_values)
{
    natomic_retry_policy_t p =
        natomic__retry_policy_normalize((natomic_retry_policy_t){.attempts = 5, .base_ms = 7, .cap_ms = 300});
    ck_assert_int_eq(p.attempts, 5);
    ck_assert_int_eq(p.base_ms, 7);
    ck_assert_int_eq(p.cap_ms, 300);
}
END_TEST

START_TEST(normalize_raises_cap_to_base)
{
    natomic_retry_policy_t p =
        natomic__retry_policy_normalize((natomic_retry_policy_t){.attempts = 2, .base_ms = 50, .cap_ms = 10});
    ck_assert_int_eq(p.base_ms, 50);
    ck_assert_int_eq(p.cap_ms, 50);

    /* The default cap (1000) is below a large base: cap follows the base. */
    p = natomic__retry_policy_normalize((natomic_retry_policy_t){.base_ms = 2000});
    ck_assert_int_eq(p.base_ms, 2000);
    ck_assert_int_ge(p.cap_ms, p.base_ms);
}
END_TEST

static Suite *command_run_suite(void)
{
    Suite *s = suite_create("command run");

    TCase *order = tcase_create("order");
    tcase_add_test(order, rollbacks_run_in_reverse_order);
    tcase_add_test(order, dispatches_run_in_registration_order);
    tcase_add_test(order, run_order_follows_inserts);
    tcase_add_test(order, every_rollback_attempted_when_one_fails);
    tcase_add_test(order, every_dispatch_attempted_when_one_fails);
    suite_add_tcase(s, order);

    TCase *retry = tcase_create("retry");
    tcase_add_loop_test(retry, retry_until_success_completes, 1, 6);
    tcase_add_test(retry, permanent_failure_is_exhausted_once);
    tcase_add_test(retry, single_attempt_policy_never_retries);
    tcase_add_test(retry, exhaustion_without_callback_is_counted);
    suite_add_tcase(s, retry);

    TCase *outcome = tcase_create("outcome");
    tcase_add_test(outcome, empty_list_outcome_is_none);
    tcase_add_test(outcome, run_leaves_list_and_args_alone);
    tcase_add_test(outcome, outcome_ignores_earlier_report_counts);
    tcase_add_test(outcome, null_policy_uses_defaults);
    suite_add_tcase(s, outcome);

    TCase *policy = tcase_create("policy");
    tcase_add_test(policy, backoff_doubles_up_to_cap);
    tcase_add_test(policy, backoff_stays_at_cap_for_large_retry_numbers);
    tcase_add_test(policy, normalize_fills_defaults);
    tcase_add_test(policy, normalize_keeps_given_values);
    tcase_add_test(policy, normalize_raises_cap_to_base);
    suite_add_tcase(s, policy);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(command_run_suite());
    srunner_run_all(sr, CK_ENV);
    srunner_free(sr);
    return 0; /* results are the TAP lines; a non-zero exit is an ERROR for meson */
}
