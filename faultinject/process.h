/*
 * process.h -- child processes of the lab (services), started so that
 * they die with the lab: own process group, PR_SET_PDEATHSIG, logs kept.
 */
#ifndef LAB_PROCESS_H
#define LAB_PROCESS_H

#include <sys/types.h>

typedef struct lab_process {
    pid_t pid;
    char log_path[512];
} lab_process_t;

/*
 * Starts argv[0] (a path) with argv, stdout and stderr appended to
 * `log_path` (NULL: inherited). Extra environment "NAME=value" strings in
 * `env` (NULL-terminated, may be NULL). 0, or -1 with a message.
 */
int lab_process_start(lab_process_t *p, char *const argv[], const char *log_path, char *const env[]);

/* Sends `sig` and waits up to `wait_ms` for the exit, then SIGKILL. Returns the wait status. */
int lab_process_stop(lab_process_t *p, int sig, int wait_ms);

/* The path of a sibling program of the running binary: <dir of /proc/self/exe>/<rel>. */
int lab_sibling_path(char *out, size_t cap, const char *rel);

#endif
