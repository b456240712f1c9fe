/*
 * process.c -- start and stop the lab's child processes.
 *
 * Every child gets PR_SET_PDEATHSIG(SIGKILL), so it cannot outlive the
 * lab even when the lab itself is killed with SIGKILL, and its output
 * goes to a log file the lab keeps for the report. (The death signal
 * follows the *thread* that forked: start children from a thread that
 * lives as long as they should.)
 *
 * The lab forks from a process that runs other threads (nats.c's, the
 * fault proxies'), so between fork and exec the child only makes
 * async-signal-safe calls: the environment and the error text are built
 * in the parent, and the child only opens, dups, signals and execs.
 */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* True when "NAME=..." entry `e` sets the same name as one of `extra`. */
static int overridden(const char *e, char *const extra[])
{
    const char *eq = strchr(e, '=');
    size_t len = eq != NULL ? (size_t)(eq - e) : strlen(e);
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        if (strncmp(extra[i], e, len) == 0 && extra[i][len] == '=')
            return 1;
    return 0;
}

/* The child's environment: the parent's, minus the names `extra` sets, plus `extra`. Strings
 * are borrowed; free() only the array. NULL when out of memory. */
char **lab_process_environment(char *const extra[])
{
    size_t n = 0, k = 0;
    while (environ != NULL && environ[n] != NULL)
        n++;
    while (extra != NULL && extra[k] != NULL)
        k++;
    char **envp = malloc((n + k + 1) * sizeof *envp);
    if (envp == NULL)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (!overridden(environ[i], extra))
            envp[w++] = environ[i];
    for (size_t i = 0; i < k; i++)
        envp[w++] = extra[i];
    envp[w] = NULL;
    return envp;
}

static int start(lab_process_t *p, char *const argv[], const char *log_path, char *const env[], bool group)
{
    memset(p, 0, sizeof *p);
    p->own_group = group;
    if (log_path != NULL)
        snprintf(p->log_path, sizeof p->log_path, "%s", log_path);
    char **envp = lab_process_environment(env);
    if (envp == NULL) {
        fprintf(stderr, "lab: out of memory starting %s\n", argv[0]);
        return -1;
    }
    char fail_text[1200];
    int fail_len = snprintf(fail_text, sizeof fail_text, "lab: cannot run %s (exec failed)\n", argv[0]);
    if (fail_len < 0 || (size_t)fail_len >= sizeof fail_text)
        fail_len = (int)strlen(fail_text);

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "lab: fork: %s\n", strerror(errno));
        free(envp);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127); /* the lab died before the line above took effect */
        if (group) {
            setpgid(0, 0);
            int devnull = open("/dev/null", O_RDONLY);
            if (devnull >= 0 && devnull != STDIN_FILENO) {
                dup2(devnull, STDIN_FILENO);
                close(devnull);
            }
        }
        if (log_path != NULL) {
            int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) {
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
            }
        }
        execve(argv[0], argv, envp);
        ssize_t ignored = write(STDERR_FILENO, fail_text, (size_t)fail_len);
        (void)ignored;
        _exit(127);
    }
    if (group)
        setpgid(pid, pid); /* also here: a signal sent right after fork must reach the group */
    free(envp);
    p->pid = pid;
    return 0;
}

int lab_process_start(lab_process_t *p, char *const argv[], const char *log_path, char *const env[])
{
    return start(p, argv, log_path, env, false);
}

int lab_process_start_group(lab_process_t *p, char *const argv[], const char *log_path, char *const env[])
{
    return start(p, argv, log_path, env, true);
}

int lab_process_signal(const lab_process_t *p, int sig)
{
    if (p->pid <= 0) {
        errno = ESRCH;
        return -1;
    }
    if (p->own_group && kill(-p->pid, sig) == 0)
        return 0;
    return kill(p->pid, sig);
}

int lab_process_stop(lab_process_t *p, int sig, int wait_ms)
{
    if (p->pid <= 0)
        return 0;
    int status = 0;
    lab_process_signal(p, sig);
    for (int waited = 0; waited < wait_ms; waited += 10) {
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = 0;
            return status;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    lab_process_signal(p, SIGKILL);
    waitpid(p->pid, &status, 0);
    p->pid = 0;
    return status;
}

int lab_sibling_path(char *out, size_t cap, const char *rel)
{
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    int w = snprintf(out, cap, "%s/%s", dirname(self), rel);
    return w > 0 && (size_t)w < cap ? 0 : -1;
}

int64_t lab_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
