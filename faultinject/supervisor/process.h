/*
 * process.h -- child processes of the lab (services), started so that
 * they die with the lab: PR_SET_PDEATHSIG, optionally their own process
 * group, logs kept.
 */
#ifndef LAB_PROCESS_H
#define LAB_PROCESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct lab_process {
    pid_t pid;             /* 0 once reaped (lab_process_stop) or never started     */
    char log_path[512];
    bool own_group;        /* started by lab_process_start_group: pgid == pid       */
} lab_process_t;

/*
 * Starts argv[0] (a path) with argv, stdout and stderr appended to
 * `log_path` (NULL: inherited). Extra environment "NAME=value" strings in
 * `env` (NULL-terminated, may be NULL) replace or extend the parent's.
 * The child stays in the caller's process group and keeps its stdin (an
 * interactive shell works). 0, or -1 with a message.
 */
int lab_process_start(lab_process_t *p, char *const argv[], const char *log_path, char *const env[]);

/*
 * The same, but the child leads a process group of its own (pgid = its
 * pid, set on both sides of the fork so no signal can miss it) and reads
 * stdin from /dev/null: for services, whose whole tree the supervisor
 * signals at once with lab_process_signal().
 */
int lab_process_start_group(lab_process_t *p, char *const argv[], const char *log_path, char *const env[]);

/* Sends `sig` to the child (its whole group when it has one). 0, or -1 (errno) when nothing ran. */
int lab_process_signal(const lab_process_t *p, int sig);

/* Sends `sig` (to the group when it has one) and waits up to `wait_ms` for the exit, then
 * SIGKILL. Returns the wait status; p->pid is 0 afterwards. Signal 0 only waits. */
int lab_process_stop(lab_process_t *p, int sig, int wait_ms);

/* The path of a sibling program of the running binary: <dir of /proc/self/exe>/<rel>. */
int lab_sibling_path(char *out, size_t cap, const char *rel);

/* CLOCK_MONOTONIC in milliseconds: what every bounded wait of the supervisor measures. */
int64_t lab_monotonic_ms(void);

/* A child's environment: this process's, minus the names `extra` ("NAME=value", NULL-ended)
 * sets, plus `extra`. Strings are borrowed: free() only the array. NULL when out of memory. */
char **lab_process_environment(char *const extra[]);

#endif
