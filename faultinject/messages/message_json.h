/*
 * message_json.h -- protobuf messages to and from JSON, through the
 * protobuf-c descriptors alone, so the call CLI and the scenario runner
 * need no per-service code.
 *
 * Mapping (close to proto3's JSON mapping): field names as in the .proto;
 * 64-bit integers as JSON integers (strings of digits accepted on input);
 * bytes as base64 strings; enums by name (or number on input); nested
 * messages as objects; repeated fields as arrays. Unknown fields and
 * wrong types are errors, never ignored.
 */
#ifndef MESSAGE_JSON_H
#define MESSAGE_JSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/*
 * Builds a message of type `desc` from the JSON object `obj` (NULL or
 * null: all defaults). On success *out is a message to free with
 * protobuf_c_message_free_unpacked(*out, NULL) and 0 is returned; on
 * failure -1 with a one-line reason in err (e.g. "field 'qty' of
 * inventory.ReserveRequest: expected an integer, got a string").
 */
int message_from_json(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const json_t *obj, char *err,
                      size_t errcap);

/* A JSON object with every field of msg (defaults included); NULL on OOM. */
json_t *message_to_json(const ProtobufCMessage *msg);

#endif
