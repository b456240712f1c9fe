/*
 * fault_fixture.c -- see fault_fixture.h.
 */
#include "fault_fixture.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIU_CTRL_MS 10000

void fault_tmpdir(char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s", fixture_work_dir());
    ck_assert_msg(n > 0 && (size_t)n < cap, "work folder '%s' too long", fixture_work_dir());
}

void fault_child_start(fault_fixture_t *f, const char *faults, const char *seed, bool ready)
{
    fault_child_start_env(f, faults, seed, NULL, ready);
}

void fault_child_start_env(fault_fixture_t *f, const char *faults, const char *seed, const char *const extra[],
                           bool ready)
{
    const char *bin = fixture_bin("CONVERSIONS_BIN");
    memset(&f->child, 0, sizeof f->child);
    fixture_path(f->child.db_path, sizeof f->child.db_path, "conversions", ".db");
    fixture_path(f->child.log_path, sizeof f->child.log_path, "conversions", ".log");

    /* The child gets its own copy of these (fork), which its putenv() keeps. */
    char env_tmp[600], env_faults[600], env_seed[80];
    char *env[4 + FAULT_EXTRA_ENV];
    size_t n = 0;
    snprintf(env_tmp, sizeof env_tmp, "TMPDIR=%s", f->tmpdir);
    env[n++] = env_tmp;
    if (faults != NULL) {
        snprintf(env_faults, sizeof env_faults, "NATOMIC_FAULTS=%s", faults);
        env[n++] = env_faults;
    }
    if (seed != NULL) {
        snprintf(env_seed, sizeof env_seed, "NATOMIC_FAULT_SEED=%s", seed);
        env[n++] = env_seed;
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        ck_assert_msg(i < FAULT_EXTRA_ENV, "more than %d extra environment entries", FAULT_EXTRA_ENV);
        env[n++] = (char *)(void *)extra[i]; /* only read: the child gets a copy */
    }
    env[n] = NULL;
    /* Memory mode: these tests pin down what each action does to the nameko model
       (a failed dispatch is dead-lettered); durable mode has its own tests (tests/durable). */
    const char *args[] = {"--nats", fixture_nats_url(), "--db", f->child.db_path, "--mode", "memory", NULL};
    fixture_spawn(&f->child, bin, args, env);
    if (!ready || fixture_wait_ping(&f->child, f->nc, "conversions"))
        return;
    int status = fixture_stop_child(&f->child, SIGKILL); /* the real status when it had died */
    char log[2048];
    fixture_read_file(f->child.log_path, log, sizeof log);
    ck_abort_msg("conversions (NATOMIC_FAULTS=%s) never answered, wait status %#x; log %s:\n%s",
                 faults != NULL ? faults : "(unset)", (unsigned)status, f->child.log_path, log);
}

void fault_start(fault_fixture_t *f, const char *faults, const char *seed)
{
    memset(f, 0, sizeof *f);
    fault_tmpdir(f->tmpdir, sizeof f->tmpdir);
    f->nc = fixture_connect();
    natsStatus s = natsConnection_SubscribeSync(&f->events, f->nc, EVENTS);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(f->events, -1, -1);
    if (s == NATS_OK)
        s = natsConnection_SubscribeSync(&f->dead_letters, f->nc, DEADLETTERS);
    if (s == NATS_OK)
        s = natsConnection_Flush(f->nc);
    ck_assert_msg(s == NATS_OK, "subscribe: %s", natsStatus_GetText(s));
    fault_child_start(f, faults, seed, true);
}

void fault_child_stop(fault_fixture_t *f)
{
    if (f->child.proc.pid <= 0)
        return;
    int status = fixture_stop_child(&f->child, SIGTERM);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "conversions ended with wait status %#x (log: %s)",
                  (unsigned)status, f->child.log_path);
}

void fault_close(fault_fixture_t *f)
{
    natsSubscription_Destroy(f->events);
    natsSubscription_Destroy(f->dead_letters);
    natsConnection_Destroy(f->nc);
    f->events = f->dead_letters = NULL;
    f->nc = NULL;
}

void fault_stop(fault_fixture_t *f)
{
    int status = f->child.proc.pid > 0 ? fixture_stop_child(&f->child, SIGTERM) : 0;
    fault_close(f);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "conversions ended with wait status %#x (log: %s)",
                  (unsigned)status, f->child.log_path);
}

natomic_status_t fault_call(fault_fixture_t *f, double inches, int timeout_ms, natomic_call_info_t *info)
{
    return harness_call(f->nc, SUBJECT, inches, timeout_ms, NULL, info);
}

int64_t fault_history_rows(const fault_fixture_t *f)
{
    return fixture_db_int(f->child.db_path, "SELECT count(*) FROM history");
}

int fault_count_msgs(natsSubscription *sub, int want)
{
    natsMsg *msgs[64];
    int n = fixture_collect(sub, msgs, 64, want, QUIET_MS, fixture_ms(5000));
    fixture_msgs_destroy(msgs, n);
    return n;
}

void fault_fiu_ctrl(fault_fixture_t *f, const char *command)
{
    ck_assert_msg(access(FIU_CTRL, X_OK) == 0,
                  FIU_CTRL " is missing (%s): the project installs fiu-utils, which provides it", strerror(errno));
    ck_assert_msg(f->child.proc.pid > 0, "fiu-ctrl: the service is not running");
    char pid[32], env_tmp[600];
    snprintf(pid, sizeof pid, "%ld", (long)f->child.proc.pid);
    snprintf(env_tmp, sizeof env_tmp, "TMPDIR=%s", f->tmpdir);
    fixture_child_t p;
    memset(&p, 0, sizeof p);
    fixture_path(p.log_path, sizeof p.log_path, "fiu-ctrl", ".log");
    const char *args[] = {"-c", command, pid, NULL};
    char *env[] = {env_tmp, NULL};
    fixture_spawn(&p, FIU_CTRL, args, env);
    int status = 0;
    bool ended = fixture_wait_exit(&p, fixture_ms(FIU_CTRL_MS), &status);
    if (!ended)
        fixture_stop_child(&p, SIGKILL);
    char log[2048];
    fixture_read_file(p.log_path, log, sizeof log);
    ck_assert_msg(ended, "fiu-ctrl -c '%s' %s did not finish within %d ms (the service never answered its FIFO "
                  "in %s); output:\n%s", command, pid, fixture_ms(FIU_CTRL_MS), f->tmpdir, log);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fiu-ctrl -c '%s' %s: wait status %#x; output:\n%s",
                  command, pid, (unsigned)status, log);
    /* fiu-ctrl exits 0 even when it found no FIFO or the command failed: it says so instead. */
    ck_assert_msg(strstr(log, "Error") == NULL && strstr(log, "error") == NULL,
                  "fiu-ctrl -c '%s' %s (TMPDIR=%s) reported: %s", command, pid, f->tmpdir, log);
}
