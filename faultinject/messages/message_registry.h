/*
 * message_registry.h -- every protobuf message type of the example
 * services, found by its full name ("inventory.ReserveRequest"), as
 * $SRV.INFO's endpoint metadata names them.
 */
#ifndef MESSAGE_REGISTRY_H
#define MESSAGE_REGISTRY_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* The descriptor of a message type, or NULL when it is unknown. */
const ProtobufCMessageDescriptor *message_registry_find(const char *full_name);

/* All known descriptors (for listing and for the test that checks proto/). */
const ProtobufCMessageDescriptor *const *message_registry_all(size_t *count);

#endif
