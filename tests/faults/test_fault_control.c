/*
 * test_fault_control.c -- how fault points are turned on and off
 * (docs/fault-points.md, "Enabling them"), on the real `conversions`
 * binary:
 *
 *   - a seeded probability replays: the same NATOMIC_FAULT_SEED gives the
 *     same fail/success pattern over the same sequence of calls, another
 *     seed a different one;
 *   - fiu-ctrl (libfiu's stock remote control) fails a live service's
 *     point by name and disables it again;
 *   - a `pause` holds a call until fiu-ctrl disables the point;
 *   - lists applied through $NATOMIC.FAULTS while workers check the same
 *     point neither deadlock nor fail a call (natomic_faults_apply once
 *     held its rule lock while libfiu waited for checks that wanted it);
 *   - a malformed NATOMIC_FAULTS keeps the service from starting, and its
 *     log names the bad entry;
 *   - natomic_faults_validate() accepts and refuses lists as documented.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "fault_fixture.h"

#define CALL_TIMEOUT_MS 10000
#define PATTERN_CALLS 24

/* ---- seeded probability ------------------------------------------ */

/* Starts conversions with before_handler=error%0.5 and `seed`; 24 calls as "F"/"S". */
static void seeded_pattern(fault_fixture_t *f, const char *seed, char out[PATTERN_CALLS + 1])
{
    fault_child_start(f, "natomic/before_handler=error%0.5", seed, true);
    for (int i = 0; i < PATTERN_CALLS; i++) {
        natomic_call_info_t info;
        natomic_status_t st = fault_call(f, i + 1, fixture_ms(CALL_TIMEOUT_MS), &info);
        if (st == NATOMIC_OK) {
            out[i] = 'S';
        } else {
            ck_assert_msg(st == NATOMIC_ETRANSIENT && strcmp(info.type, "InjectedFault") == 0,
                          "seed %s, call %d: expected NATOMIC_OK or an InjectedFault, got %s '%s' (%s)", seed, i,
                          natomic_status_name(st), info.type, info.message);
            out[i] = 'F';
        }
    }
    out[PATTERN_CALLS] = '\0';
    fault_child_stop(f);
}

START_TEST(test_seeded_probability_replays)
{
    fault_fixture_t f;
    memset(&f, 0, sizeof f);
    fault_tmpdir(f.tmpdir, sizeof f.tmpdir);
    f.nc = fixture_connect();

    char first[PATTERN_CALLS + 1], again[PATTERN_CALLS + 1], other[PATTERN_CALLS + 1];
    seeded_pattern(&f, "7", first);
    seeded_pattern(&f, "7", again);
    seeded_pattern(&f, "8", other);
    fault_close(&f);
    fprintf(stderr, "error%%0.5 over %d calls: seed 7 %s, seed 7 again %s, seed 8 %s\n", PATTERN_CALLS, first, again,
            other);

    ck_assert_msg(strcmp(first, again) == 0, "seed 7 twice, two fresh processes: %s vs %s (must be identical)", first,
                  again);
    ck_assert_msg(strchr(first, 'F') != NULL && strchr(first, 'S') != NULL,
                  "probability 0.5 over %d calls, seed 7: %s (expected failures and successes)", PATTERN_CALLS,
                  first);
    ck_assert_msg(strcmp(first, other) != 0, "seed 7 and seed 8 gave the same pattern: %s vs %s", first, other);
}
END_TEST

/* ---- fiu-ctrl on a live service ---------------------------------- */

START_TEST(test_fiu_ctrl_enable_disable)
{
    fault_fixture_t f;
    fault_start(&f, NULL, NULL);
    natomic_call_info_t info;
    natomic_status_t st = fault_call(&f, 1, fixture_ms(CALL_TIMEOUT_MS), &info);
    ck_assert_msg(st == NATOMIC_OK, "before fiu-ctrl: expected NATOMIC_OK, got %s (%s)", natomic_status_name(st),
                  info.message);

    fault_fiu_ctrl(&f, "enable name=natomic/before_handler,failnum=1");
    st = fault_call(&f, 2, fixture_ms(CALL_TIMEOUT_MS), &info);
    ck_assert_msg(st == NATOMIC_ETRANSIENT && info.code == 503 && strcmp(info.type, "InjectedFault") == 0,
                  "after fiu-ctrl enable: expected NATOMIC_ETRANSIENT 503 InjectedFault, got %s %d '%s' (%s)",
                  natomic_status_name(st), info.code, info.type, info.message);

    fault_fiu_ctrl(&f, "disable name=natomic/before_handler");
    st = fault_call(&f, 3, fixture_ms(CALL_TIMEOUT_MS), &info);
    ck_assert_msg(st == NATOMIC_OK, "after fiu-ctrl disable: expected NATOMIC_OK, got %s '%s' (%s)",
                  natomic_status_name(st), info.type, info.message);
    int64_t rows = fault_history_rows(&f);
    ck_assert_msg(rows == 2, "two successes, one injected failure: expected 2 rows, got %lld", (long long)rows);
    fault_stop(&f);
}
END_TEST

/* ---- pause released by fiu-ctrl ---------------------------------- */

typedef struct paused_call {
    fault_fixture_t *f;
    natomic_status_t status;
    natomic_call_info_t info;
    atomic_bool done;
} paused_call_t;

static void *paused_call_main(void *arg)
{
    paused_call_t *c = arg;
    c->status = fault_call(c->f, 4, fixture_ms(CALL_TIMEOUT_MS), &c->info);
    atomic_store(&c->done, true);
    return NULL;
}

START_TEST(test_pause_released_by_fiu_ctrl)
{
    fault_fixture_t f;
    fault_start(&f, "natomic/before_handler=pause", NULL);
    paused_call_t c = {.f = &f, .status = NATOMIC_EINTERNAL};
    atomic_init(&c.done, false);
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, paused_call_main, &c), 0);
    fixture_sleep_ms(fixture_ms(300));
    bool held = !atomic_load(&c.done);

    fault_fiu_ctrl(&f, "disable name=natomic/before_handler");
    pthread_join(thread, NULL);
    ck_assert_msg(held, "the call returned (%s) before the paused point was released",
                  natomic_status_name(c.status));
    ck_assert_msg(c.status == NATOMIC_OK, "released call: expected NATOMIC_OK, got %s '%s' (%s)",
                  natomic_status_name(c.status), c.info.type, c.info.message);
    ck_assert_int_eq(fixture_db_int(f.child.db_path, "SELECT count(*) FROM history WHERE inches = 4"), 1);
    fault_stop(&f);
}
END_TEST

/* ---- lists applied while the point is checked --------------------- */

#define APPLY_CALLERS 4

typedef struct busy_caller {
    fault_fixture_t *f;
    int64_t until_ms;
    int calls;
    natomic_status_t first_failure;
    natomic_call_info_t info;
} busy_caller_t;

static void *busy_caller_main(void *arg)
{
    busy_caller_t *c = arg;
    c->first_failure = NATOMIC_OK;
    while (fixture_now_ms() < c->until_ms) {
        natomic_call_info_t info;
        natomic_status_t st = fault_call(c->f, c->calls + 1, fixture_ms(5000), &info);
        if (st != NATOMIC_OK) {
            c->first_failure = st;
            c->info = info;
            break; /* a deadlocked service answers nothing more: no use waiting again */
        }
        c->calls++;
    }
    return NULL;
}

START_TEST(test_apply_while_points_are_checked)
{
    /* A rule that never fires but is asked (libfiu calls its decide()) at every check. */
    static const char *const list = "natomic/before_handler=error#1000000000";
    static const char *const control[] = {"NATOMIC_FAULT_CONTROL=1", NULL};
    fault_fixture_t f;
    memset(&f, 0, sizeof f);
    fault_tmpdir(f.tmpdir, sizeof f.tmpdir);
    f.nc = fixture_connect();
    fault_child_start_env(&f, list, NULL, control, true);

    busy_caller_t callers[APPLY_CALLERS];
    pthread_t threads[APPLY_CALLERS];
    int64_t until = fixture_now_ms() + fixture_ms(2000);
    for (int i = 0; i < APPLY_CALLERS; i++) {
        callers[i] = (busy_caller_t){.f = &f, .until_ms = until};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, busy_caller_main, &callers[i]), 0);
    }
    /* Replace the rule again and again while the workers check the point. */
    int applied = 0;
    char answer[256] = "";
    natsStatus s = NATS_OK;
    while (fixture_now_ms() < until) {
        natsMsg *reply = NULL;
        s = natsConnection_RequestString(&reply, f.nc, "$NATOMIC.FAULTS.conversions", list, fixture_ms(5000));
        if (s != NATS_OK)
            break;
        snprintf(answer, sizeof answer, "%.*s", natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
        natsMsg_Destroy(reply);
        if (strcmp(answer, "ok") != 0)
            break;
        applied++;
    }
    int calls = 0;
    for (int i = 0; i < APPLY_CALLERS; i++) {
        pthread_join(threads[i], NULL);
        calls += callers[i].calls;
    }
    ck_assert_msg(s == NATS_OK && strcmp(answer, "ok") == 0,
                  "apply %d of '%s' while %d calls ran: %s, answer '%s' (a service that stopped answering is "
                  "deadlocked; log: %s)",
                  applied + 1, list, calls, natsStatus_GetText(s), answer, f.child.log_path);
    for (int i = 0; i < APPLY_CALLERS; i++)
        ck_assert_msg(callers[i].first_failure == NATOMIC_OK,
                      "caller %d, call %d, while %d lists were applied: %s '%s' (log: %s)", i, callers[i].calls + 1,
                      applied, natomic_status_name(callers[i].first_failure), callers[i].info.message,
                      f.child.log_path);
    fprintf(stderr, "%d lists applied while %d calls checked the point\n", applied, calls);
    ck_assert_msg(applied >= 50 && calls >= 50, "too little overlap to mean anything: %d lists, %d calls", applied,
                  calls);
    fault_stop(&f);
}
END_TEST

/* ---- a malformed NATOMIC_FAULTS ---------------------------------- */

START_TEST(test_malformed_faults_refused)
{
    fault_fixture_t f;
    memset(&f, 0, sizeof f);
    fault_tmpdir(f.tmpdir, sizeof f.tmpdir);
    fault_child_start(&f, "natomic/before_reply=explode", NULL, false);
    int status = 0;
    bool ended = fixture_wait_exit(&f.child, fixture_ms(10000), &status);
    if (!ended)
        fixture_stop_child(&f.child, SIGKILL);
    char log[4096];
    fixture_read_file(f.child.log_path, log, sizeof log);
    ck_assert_msg(ended, "conversions with NATOMIC_FAULTS=natomic/before_reply=explode still runs after 10 s; log:\n%s",
                  log);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 0,
                  "expected a non-zero exit, got wait status %#x (exited %d, status %d); log:\n%s", (unsigned)status,
                  WIFEXITED(status), WIFEXITED(status) ? WEXITSTATUS(status) : -1, log);
    ck_assert_msg(strstr(log, "unknown action 'explode'") != NULL && strstr(log, "natomic/before_reply=explode") != NULL,
                  "the log must name the bad entry ('unknown action 'explode'' in 'natomic/before_reply=explode'); "
                  "log:\n%s",
                  log);
}
END_TEST

/* ---- natomic_faults_validate ------------------------------------- */

START_TEST(test_validate_lists)
{
    static const char *const good[] = {
        "",
        "natomic/before_reply=drop@1",
        "natomic/before_reply=drop@1;",
        "natomic/before_handler=delay:0",
        "natomic/before_handler=error%1",
        "natomic/client_send=delay:200%0.25",
        "natomic/before_handler=error@3;orders/create_order/after_reserve=crash;natomic/before_rollback=pause;",
        "a=duplicate@2%0.5",
    };
    static const char *const bad[] = {
        "=drop", "x=drop@0", "x=drop%0", "x=drop%1.5", "x=delay:", "x=delay:-1", "nonsense", "ok=error;x=explode",
        "x=error;x=drop", "natomic/before_reply=drop#1;y=error;natomic/before_reply=drop#3",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char err[256] = "";
        natomic_status_t st = natomic_faults_validate(good[i], err, sizeof err);
        ck_assert_msg(st == NATOMIC_OK, "'%s' must be accepted: got %s (%s)", good[i], natomic_status_name(st), err);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        natomic_status_t st = natomic_faults_validate(bad[i], err, sizeof err);
        ck_assert_msg(st == NATOMIC_EINVAL, "'%s' must be refused with NATOMIC_EINVAL: got %s", bad[i],
                      natomic_status_name(st));
        ck_assert_msg(err[0] != '\0', "'%s' refused without a message", bad[i]);
        /* The message names the bad entry (the last entry of a list). */
        const char *entry = strrchr(bad[i], ';') != NULL ? strrchr(bad[i], ';') + 1 : bad[i];
        ck_assert_msg(strstr(err, entry) != NULL, "'%s' refused, but the message does not name '%s': %s", bad[i],
                      entry, err);
    }
    ck_assert_int_eq(natomic_faults_validate(NULL, NULL, 0), NATOMIC_EINVAL);
}
END_TEST

static Suite *fault_control_suite(void)
{
    Suite *s = suite_create("fault_control");
    TCase *tc = tcase_create("conversions");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_seeded_probability_replays);
    tcase_add_test(tc, test_fiu_ctrl_enable_disable);
    tcase_add_test(tc, test_pause_released_by_fiu_ctrl);
    tcase_add_test(tc, test_apply_while_points_are_checked);
    tcase_add_test(tc, test_malformed_faults_refused);
    tcase_add_test(tc, test_validate_lists);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fixture_run(fault_control_suite(), "faults");
}
