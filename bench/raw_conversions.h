/*
 * raw_conversions.h -- the benchmark's baseline: conversions.inches_to_cm
 * written with raw nats.c, protobuf-c and SQLite, without libnatomic.
 *
 * It answers the same wire contract as the natomic service, so the same
 * client code calls both: the packed InchesToCmReply on success; on
 * failure the NATS service error headers (`Nats-Service-Error`,
 * `Nats-Service-Error-Code`) and `Natomic-Error-Type`. It saves the row,
 * deletes it again when the call fails, and publishes
 * events.conversions.converted after a success, with a `Natomic-Tx`
 * header on the event and the reply.
 */
#ifndef RAW_CONVERSIONS_H
#define RAW_CONVERSIONS_H

#include <nats/nats.h>

#include "conversions_store.h"

typedef struct raw_conversions raw_conversions_t;

/*
 * Subscribes to "conversions.inches_to_cm" in queue group "conversions"
 * on `nc` and starts `workers` threads that pull from that subscription.
 * `nc` and `store` are borrowed and must outlive the server. Returns 0, or
 * -1 with a message on stderr and nothing left running.
 */
int raw_conversions_start(raw_conversions_t **out, natsConnection *nc, conversions_store_t *store, int workers);

/* Unsubscribes, lets the workers finish their call, joins and frees them. NULL is a no-op. */
void raw_conversions_stop(raw_conversions_t *srv);

#endif
