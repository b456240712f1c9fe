/*
 * participant_fixture.h -- what the saga participant tests share.
 *
 * Each test binary starts one real nats-server in main()
 * (participant_main) on a free loopback port; Check then forks every test
 * from that process (or, under valgrind, runs them in it). A test runs the
 * participant IN-PROCESS: its own natomic service on its own connection,
 * registered on a fresh SQLite file, plus a client connection -- so the
 * test can read the service's stats and database directly, and send raw
 * NATS requests with any Natomic-Tx it likes (that is how a duplicate
 * delivery or a compensation overtaking its action is staged).
 *
 * Helpers assert with Check unless they say otherwise; call asserting
 * helpers only from the test's own thread.
 */
#ifndef PARTICIPANT_FIXTURE_H
#define PARTICIPANT_FIXTURE_H

#include <check.h>
#include <natomic.h>
#include <stdint.h>

#include "process.h"

struct sqlite3;

/* Starts nats-server and a work folder, runs the suite (TAP on stdout), stops
 * and removes them. Returns 0 (meson reads the TAP lines), or 1 after a
 * "Bail out!" line when the server cannot start. Frees the suite. */
int participant_main(Suite *suite);

const char *fixture_nats_url(void);
/* A bounded wait of `ms`, scaled up under valgrind. */
int fixture_ms(int ms);
/* A fresh file name in the work folder: <dir>/<stem>-<pid>-<n><ext>. */
void fixture_path(char *out, size_t cap, const char *stem, const char *ext);

typedef natomic_status_t (*participant_register_fn)(natomic_service_t *svc, struct sqlite3 *db);

/* One participant service running in the test's process, and a client. */
typedef struct participant {
    natomic_service_t *svc;
    natsConnection *svc_nc;   /* the service's connection           */
    natsConnection *nc;       /* the test's client connection       */
    struct sqlite3 *db;       /* the service's database (shared)    */
    char db_path[512];
} participant_t;

/* Opens a fresh database (sqlite_tx_open), registers the methods with `reg`, starts the service `name`. */
void participant_start(participant_t *p, const char *name, participant_register_fn reg);
/* Stops and frees everything participant_start made. */
void participant_stop(participant_t *p);

/* What a call got back. */
typedef struct call_result {
    int code;                  /* 0 for success, else Nats-Service-Error-Code */
    char type[64];             /* Natomic-Error-Type, "" on success           */
    char message[256];         /* Nats-Service-Error, "" on success           */
    ProtobufCMessage *reply;   /* the decoded reply on success, else NULL     */
} call_result_t;

/*
 * Sends `request` on `subject` as a raw NATS request carrying Natomic-Tx:
 * `tx` (NULL: no header, the service makes a new transaction), waits at
 * most `timeout_ms`, decodes a success as `reply_desc`. Does not assert:
 * returns the NATS status (NATS_OK when a reply came) and fills *out,
 * which participant_result_clear() empties. Safe from any thread.
 */
natsStatus participant_send(call_result_t *out, natsConnection *nc, const char *subject, const char *tx,
                            const ProtobufCMessage *request, const ProtobufCMessageDescriptor *reply_desc,
                            int timeout_ms);
void participant_result_clear(call_result_t *r);

/* participant_send on p's client connection; asserts that a reply came. */
void participant_call(call_result_t *out, participant_t *p, const char *subject, const char *tx,
                      const ProtobufCMessage *request, const ProtobufCMessageDescriptor *reply_desc);

/* Asserts a success reply and returns it (still owned by r). */
ProtobufCMessage *expect_ok(const call_result_t *r, const char *what);

/* Asserts an error reply of code and type (both values printed on mismatch). */
void expect_error(const call_result_t *r, const char *what, int code, const char *type);

/* One integer from `sql` run on the participant's database; asserts it ran. */
int64_t participant_db_int(participant_t *p, const char *sql);

/* The participant's barrier counter for `outcome`. */
uint64_t participant_barrier_count(participant_t *p, natomic_barrier_outcome_t outcome);

/* A service binary run as a child, for the tests of main(). */
typedef struct child_service {
    lab_process_t proc;
    char log_path[512];
} child_service_t;

/* Starts the program $bin_env with argv tail `args` (NULL-terminated); asserts it started. */
void child_start(child_service_t *c, const char *bin_env, const char *const args[]);
/* Waits (bounded) until `subject` answers on nc; false when the child died or never answered. */
int child_wait_answer(child_service_t *c, natsConnection *nc, const char *subject);
/* Waits (bounded) for the child to exit by itself; returns its wait status, or -1 after killing it. */
int child_wait_exit(child_service_t *c, int timeout_ms);
/* Sends `sig`, waits up to 10 s (then SIGKILL); returns the wait status. */
int child_stop(child_service_t *c, int sig);
/* The child's log (for messages), read into out; "" when unreadable. */
void child_log(const child_service_t *c, char *out, size_t cap);

/* Creates the barrier table in a new database file with one row 8 days old (tx 'tx-old') and one fresh ('tx-new'). */
void fixture_seed_barrier(const char *db_path);
/* One integer from `sql` on the database file opened read-only; asserts it ran. */
int64_t fixture_file_int(const char *db_path, const char *sql);

/*
 * The binary $bin_env refuses cleanly: exit 1 naming the URL when NATS is
 * unreachable, exit 2 for a bad option, exit 0 for --help whose text
 * contains `help_needle`.
 */
void check_binary_refusals(const char *bin_env, const char *help_needle);

#endif
