/*
 * harness.h -- what the integration tests share.
 *
 * Each test binary starts one real nats-server in main() (harness_run) on
 * a free loopback port; Check then forks every test from that process, so
 * the server outlives each test while the NATS client library is only
 * ever initialised inside a test. Everything a test starts (connections,
 * services, child processes) it also stops; a crashed test's children die
 * with it (PR_SET_PDEATHSIG, see faultinject/process.c).
 *
 * Helpers that can fail assert with Check, so call them from a test's own
 * thread, never from a handler or a command.
 */
#ifndef HARNESS_H
#define HARNESS_H

#include <check.h>
#include <jansson.h>
#include <natomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "process.h"

/* Starts nats-server, runs the suite (TAP on stdout), stops the server and
 * removes the work folder. Returns 0 (meson reads the TAP lines), or 1 with
 * a "Bail out!" line when the server cannot start. Frees the suite. */
int harness_run(Suite *suite);

/* The URL of this binary's nats-server. */
const char *harness_nats_url(void);

/* A bounded wait of `ms`, scaled up when the tests run under valgrind. */
int harness_ms(int ms);
int64_t harness_now_ms(void);
void harness_sleep_ms(int ms);

/* A fresh file name in the binary's work folder: <dir>/<stem>-<pid>-<n><ext>. */
void harness_path(char *out, size_t cap, const char *stem, const char *ext);

/* A connection to the test server made with natomic_connect(); asserts. */
natsConnection *harness_connect(void);

/* The value of header `key` of `m` (owned by the message), or NULL. */
const char *harness_header(natsMsg *m, const char *key);

/*
 * Calls `subject` with InchesToCmRequest{inches} through natomic_request()
 * and returns its status; on NATOMIC_OK the reply's cm goes to *cm (may be
 * NULL). `info` may be NULL.
 */
natomic_status_t harness_call(natsConnection *nc, const char *subject, double inches, int timeout_ms, double *cm,
                              natomic_call_info_t *info);

/* A NATS message carrying the packed InchesToCmRequest{inches}; asserts. */
natsMsg *harness_request_msg(const char *subject, double inches);

/* Requests `subject` (empty payload) and parses the reply as a JSON object; asserts. */
json_t *harness_request_json(natsConnection *nc, const char *subject);

/*
 * Collects messages of `sub` into out[max]: waits up to total_ms for
 * `want` of them, then goes on until none came for quiet_ms (or max, or
 * total_ms). Returns how many; destroy them with harness_msgs_destroy().
 */
int harness_collect(natsSubscription *sub, natsMsg **out, int max, int want, int quiet_ms, int total_ms);
void harness_msgs_destroy(natsMsg **msgs, int n);

/* A service binary started as a child of the test, with its own files. */
typedef struct harness_child {
    lab_process_t proc;
    char db_path[512];
    char log_path[512];
} harness_child_t;

/*
 * Starts the program named by the environment variable `bin_env` with
 * "--nats <url>" and `args` (NULL-terminated, may be NULL), output to
 * child->log_path (when empty, a new log in the work folder; zero the
 * struct first), and waits (bounded) until `ping_subject` answers.
 * Asserts, naming the log, when the program dies or never answers.
 */
void harness_child_start(harness_child_t *child, natsConnection *nc, const char *bin_env, const char *ping_subject,
                         const char *const args[]);

/* The conversions binary ($CONVERSIONS_BIN) with a fresh --db in the work folder. */
void harness_conversions_start(harness_child_t *child, natsConnection *nc);

/* Sends `sig`, waits up to 10 s (then SIGKILL). Returns the wait status. */
int harness_child_stop(harness_child_t *child, int sig);

/* Runs `sql` (one integer result, e.g. count(*)) on the database opened read-only; asserts it ran. */
int64_t harness_db_int(const char *db_path, const char *sql);

#endif
