/*
 * participant_fixture.h -- what the saga participant tests share.
 *
 * Each test binary starts one real nats-server in main()
 * (fixture_run) on a free loopback port; Check then forks every test
 * from that process (or, under valgrind, runs them in it). A test runs the
 * participant IN-PROCESS: its own natomic service on its own connection,
 * registered on a fresh SQLite file, plus a client connection -- so the
 * test can read the service's stats and database directly, and send raw
 * NATS requests with any Natomic-Tx it likes (that is how a duplicate
 * delivery or a compensation overtaking its action is staged).
 *
 * The binary's server, work folder, raw requests (fixture_request_tx),
 * child processes and read-only database files are tests/fixture's.
 *
 * Helpers assert with Check unless they say otherwise; call asserting
 * helpers only from the test's own thread.
 */
#ifndef PARTICIPANT_FIXTURE_H
#define PARTICIPANT_FIXTURE_H

#include "fixture.h"

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

/* fixture_request_tx on p's client connection; asserts that a reply came. */
void participant_call(fixture_reply_t *out, participant_t *p, const char *subject, const char *tx,
                      const ProtobufCMessage *request, const ProtobufCMessageDescriptor *reply_desc);

/* Asserts a success reply and returns it (still owned by r). */
ProtobufCMessage *expect_ok(const fixture_reply_t *r, const char *what);

/* Asserts an error reply of code and type (both values printed on mismatch). */
void expect_error(const fixture_reply_t *r, const char *what, int code, const char *type);

/* One integer from `sql` run on the participant's database; asserts it ran. */
int64_t participant_db_int(participant_t *p, const char *sql);

/* The participant's barrier counter for `outcome`. */
uint64_t participant_barrier_count(participant_t *p, natomic_barrier_outcome_t outcome);

/* A text of 201 bytes: one over the services' limit for a stored field (REQUEST_TEXT_MAX). Static. */
const char *participant_long_text(void);

/* Creates the barrier table in a new database file with one row 8 days old (tx 'tx-old') and one fresh ('tx-new'). */
void participant_seed_barrier(const char *db_path);

/*
 * Asserts that the service swept the old row and kept the fresh one. The first sweep runs on
 * the service's housekeeping thread, which may start after the service answers its first ping:
 * waits for it, bounded (5 s, scaled like every fixture wait).
 */
void participant_check_swept(const char *db_path);

/*
 * The binary $bin_env refuses cleanly: exit 1 naming the URL when NATS is
 * unreachable, exit 2 for a bad option, exit 0 for --help whose text
 * contains `help_needle`.
 */
void check_binary_refusals(const char *bin_env, const char *help_needle);

#endif
