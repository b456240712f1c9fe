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

#define CHILD_START_MS 10000
#define CHILD_STOP_MS 10000
#define FIU_CTRL_MS 10000

void fault_tmpdir(char *out, size_t cap)
{
    harness_path(out, cap, "tmp", "");
    char *slash = strrchr(out, '/');
    ck_assert_msg(slash != NULL && slash != out, "work path '%s' has no folder", out);
    *slash = '\0';
}

bool fault_wait_exit(lab_process_t *p, int ms, int *status)
{
    int64_t end = harness_now_ms() + ms;
    for (;;) {
        pid_t r = waitpid(p->pid, status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return true;
        }
        ck_assert_msg(r == 0, "waitpid(%ld): %s", (long)p->pid, strerror(errno));
        if (harness_now_ms() >= end)
            return false;
        harness_sleep_ms(10);
    }
}

/* True when the child answers $SRV.PING.conversions; false when it died or never answered. */
static bool wait_ready(fault_fixture_t *f, int *status)
{
    int64_t end = harness_now_ms() + harness_ms(CHILD_START_MS);
    while (harness_now_ms() < end) {
        natsMsg *r = NULL;
        if (natsConnection_RequestString(&r, f->nc, "$SRV.PING.conversions", "", 200) == NATS_OK) {
            natsMsg_Destroy(r);
            return true;
        }
        if (fault_wait_exit(&f->child.proc, 0, status))
            return false;
        harness_sleep_ms(20);
    }
    return false;
}

void fault_child_start(fault_fixture_t *f, const char *faults, const char *seed, bool ready)
{
    const char *bin = getenv("CONVERSIONS_BIN");
    ck_assert_msg(bin != NULL && *bin != '\0', "CONVERSIONS_BIN is not set (meson passes it)");
    memset(&f->child, 0, sizeof f->child);
    harness_path(f->child.db_path, sizeof f->child.db_path, "conversions", ".db");
    harness_path(f->child.log_path, sizeof f->child.log_path, "conversions", ".log");

    /* The child gets its own copy of these (fork), which its putenv() keeps. */
    char env_tmp[600], env_faults[600], env_seed[80];
    char *env[4];
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
    env[n] = NULL;
    const char *argv[] = {bin, "--nats", harness_nats_url(), "--db", f->child.db_path, NULL};
    /* lab_process_start's argv is not const (execv's is not); it is only read. */
    int rc = lab_process_start(&f->child.proc, (char *const *)(void *)argv, f->child.log_path, env);
    ck_assert_msg(rc == 0, "cannot start %s", bin);
    if (!ready)
        return;
    int status = 0;
    bool up = wait_ready(f, &status);
    if (!up) {
        if (f->child.proc.pid > 0)
            status = harness_child_stop(&f->child, SIGKILL);
        char log[2048];
        fault_read_file(f->child.log_path, log, sizeof log);
        ck_abort_msg("conversions (NATOMIC_FAULTS=%s) never answered, wait status %#x; log %s:\n%s",
                     faults != NULL ? faults : "(unset)", (unsigned)status, f->child.log_path, log);
    }
}

void fault_start(fault_fixture_t *f, const char *faults, const char *seed)
{
    memset(f, 0, sizeof *f);
    fault_tmpdir(f->tmpdir, sizeof f->tmpdir);
    f->nc = harness_connect();
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
    int status = harness_child_stop(&f->child, SIGTERM);
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
    int status = f->child.proc.pid > 0 ? harness_child_stop(&f->child, SIGTERM) : 0;
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
    return harness_db_int(f->child.db_path, "SELECT count(*) FROM history");
}

int fault_count_msgs(natsSubscription *sub, int want)
{
    natsMsg *msgs[64];
    int n = harness_collect(sub, msgs, 64, want, QUIET_MS, harness_ms(5000));
    harness_msgs_destroy(msgs, n);
    return n;
}

void fault_read_file(const char *path, char *out, size_t cap)
{
    FILE *fp = fopen(path, "r");
    ck_assert_msg(fp != NULL, "cannot read %s: %s", path, strerror(errno));
    size_t n = fread(out, 1, cap - 1, fp);
    out[n] = '\0';
    fclose(fp);
}

void fault_fiu_ctrl(fault_fixture_t *f, const char *command)
{
    ck_assert_msg(access(FIU_CTRL, X_OK) == 0,
                  FIU_CTRL " is missing (%s): the project installs fiu-utils, which provides it", strerror(errno));
    ck_assert_msg(f->child.proc.pid > 0, "fiu-ctrl: the service is not running");
    char pid[32], log_path[512], env_tmp[600];
    snprintf(pid, sizeof pid, "%ld", (long)f->child.proc.pid);
    snprintf(env_tmp, sizeof env_tmp, "TMPDIR=%s", f->tmpdir);
    harness_path(log_path, sizeof log_path, "fiu-ctrl", ".log");
    const char *argv[] = {FIU_CTRL, "-c", command, pid, NULL};
    char *env[] = {env_tmp, NULL};
    lab_process_t p;
    int rc = lab_process_start(&p, (char *const *)(void *)argv, log_path, env);
    ck_assert_msg(rc == 0, "cannot start " FIU_CTRL);
    int status = 0;
    bool ended = fault_wait_exit(&p, harness_ms(FIU_CTRL_MS), &status);
    if (!ended)
        lab_process_stop(&p, SIGKILL, 1000);
    char log[2048];
    fault_read_file(log_path, log, sizeof log);
    ck_assert_msg(ended, "fiu-ctrl -c '%s' %s did not finish within %d ms (the service never answered its FIFO "
                  "in %s); output:\n%s", command, pid, harness_ms(FIU_CTRL_MS), f->tmpdir, log);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fiu-ctrl -c '%s' %s: wait status %#x; output:\n%s",
                  command, pid, (unsigned)status, log);
    /* fiu-ctrl exits 0 even when it found no FIFO or the command failed: it says so instead. */
    ck_assert_msg(strstr(log, "Error") == NULL && strstr(log, "error") == NULL,
                  "fiu-ctrl -c '%s' %s (TMPDIR=%s) reported: %s", command, pid, f->tmpdir, log);
}
