/*
 * process.c -- start and stop the lab's child processes.
 *
 * Every child gets PR_SET_PDEATHSIG(SIGKILL), so it cannot outlive the
 * lab even when the lab itself is killed with SIGKILL, and its output
 * goes to a log file the lab keeps for the report.
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

int lab_process_start(lab_process_t *p, char *const argv[], const char *log_path, char *const env[])
{
    memset(p, 0, sizeof *p);
    if (log_path != NULL)
        snprintf(p->log_path, sizeof p->log_path, "%s", log_path);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "lab: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (log_path != NULL) {
            int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) {
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
            }
        }
        for (size_t i = 0; env != NULL && env[i] != NULL; i++)
            putenv(env[i]);
        execv(argv[0], argv);
        fprintf(stderr, "lab: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

int lab_process_stop(lab_process_t *p, int sig, int wait_ms)
{
    if (p->pid <= 0)
        return 0;
    int status = 0;
    kill(p->pid, sig);
    for (int waited = 0; waited < wait_ms; waited += 10) {
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = 0;
            return status;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    kill(p->pid, SIGKILL);
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
