/*
 * fault_fixture.h -- the real `conversions` binary started as a child
 * with fault points enabled through its environment (NATOMIC_FAULTS,
 * NATOMIC_FAULT_SEED), seen from outside: replies, the events and dead
 * letters it publishes, its SQLite history (read-only), its log, its exit
 * status, and libfiu's remote control driven with the stock fiu-ctrl.
 *
 * Fault points are enabled per process (natomic_faults_setup() reads the
 * environment once), so every service here is its own child process; the
 * test process never enables a point itself, which keeps the tests valid
 * in no-fork mode (valgrind) too.
 *
 * Every child gets TMPDIR = the binary's work folder, so libfiu's control
 * FIFOs ($TMPDIR/fiu-ctrl-<pid>.in/.out) are removed with that folder even
 * when a child was killed, and fiu-ctrl (run with the same TMPDIR) finds
 * them.
 */
#ifndef FAULT_FIXTURE_H
#define FAULT_FIXTURE_H

#include <stdbool.h>

#include "harness.h"

#define SUBJECT "conversions.inches_to_cm"
#define EVENTS "events.conversions.converted"
#define DEADLETTERS NATOMIC_DEADLETTER_PREFIX ".conversions"
#define FIU_CTRL "/usr/bin/fiu-ctrl"
#define QUIET_MS 300

typedef struct fault_fixture {
    natsConnection *nc;
    natsSubscription *events;
    natsSubscription *dead_letters;
    fixture_child_t child;
    char tmpdir[512];
} fault_fixture_t;

/* The work folder of this test binary (what the children get as TMPDIR). */
void fault_tmpdir(char *out, size_t cap);

/*
 * Connects, subscribes to EVENTS and DEADLETTERS, and starts conversions
 * with NATOMIC_FAULTS=`faults` (NULL: none) and NATOMIC_FAULT_SEED=`seed`
 * (NULL: unset); waits (bounded) until it answers $SRV.PING.conversions.
 */
void fault_start(fault_fixture_t *f, const char *faults, const char *seed);

/* Starts only the child (the fixture's connection stays); used by fault_start. */
void fault_child_start(fault_fixture_t *f, const char *faults, const char *seed, bool wait_ready);

/*
 * The same with extra environment entries for the child ("NAME=value",
 * NULL-terminated, at most FAULT_EXTRA_ENV; may be NULL), e.g.
 * NATOMIC_FAULT_TRACE=1 or NATOMIC_FAULT_CONTROL=1.
 */
#define FAULT_EXTRA_ENV 4
void fault_child_start_env(fault_fixture_t *f, const char *faults, const char *seed, const char *const extra[],
                           bool wait_ready);

/* Stops the child with SIGTERM and asserts it exited 0; then closes the client. */
void fault_stop(fault_fixture_t *f);

/* Stops the child with SIGTERM and asserts it exited 0; the connection stays. */
void fault_child_stop(fault_fixture_t *f);

/* Closes the client only (for a child that already ended). */
void fault_close(fault_fixture_t *f);

/* One call of conversions.inches_to_cm; info is filled (never NULL here). */
natomic_status_t fault_call(fault_fixture_t *f, double inches, int timeout_ms, natomic_call_info_t *info);

/* Rows in the child's history table. */
int64_t fault_history_rows(const fault_fixture_t *f);

/* Messages on `sub` until none came for QUIET_MS (waits up to 5 s for `want`); destroys them. */
int fault_count_msgs(natsSubscription *sub, int want);

/*
 * Runs `fiu-ctrl -c <command> <pid of the child>` with the child's TMPDIR
 * (bounded); asserts it exited 0 and reported no error.
 */
void fault_fiu_ctrl(fault_fixture_t *f, const char *command);

#endif
