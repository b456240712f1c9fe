/*
 * harness.h -- what the integration tests share beyond tests/fixture:
 * calls and raw messages of conversions.inches_to_cm (the request every
 * test service here takes), JSON answers, and the conversions binary.
 *
 * Each test binary starts one real nats-server in main() (fixture_run) on
 * a free loopback port; Check then forks every test from that process, so
 * the server outlives each test while the NATS client library is only
 * ever initialised inside a test. Everything a test starts (connections,
 * services, child processes) it also stops.
 *
 * Helpers that can fail assert with Check, so call them from a test's own
 * thread, never from a handler or a command.
 */
#ifndef HARNESS_H
#define HARNESS_H

#include <jansson.h>

#include "fixture.h"

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

/* The conversions binary ($CONVERSIONS_BIN) with a fresh --db in the work folder; waits for its ping. */
void harness_conversions_start(fixture_child_t *child, natsConnection *nc);

#endif
