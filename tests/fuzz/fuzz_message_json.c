/*
 * fuzz_message_json.c -- JSON -> protobuf, as natomic-call and the scenario
 * runner turn a user's request into a message (faultinject/messages/).
 *
 * Input: the first byte picks a message type of proto/ (modulo how many the
 * registry knows), the rest is JSON text. Checks: message_from_json() never
 * crashes or leaks, whatever the JSON (wrong types, huge numbers, nested
 * objects, arrays of anything, bad base64) and refuses with a message; what
 * it accepts packs, unpacks to a message of the same size, and turns back
 * into JSON.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "message_json.h"
#include "message_registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    size_t count = 0;
    const ProtobufCMessageDescriptor *const *all = message_registry_all(&count);
    if (count == 0)
        abort();
    const ProtobufCMessageDescriptor *desc = all[data[0] % count];
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, &jerr);
    if (obj == NULL)
        return 0;
    ProtobufCMessage *msg = NULL;
    char err[256] = "";
    if (message_from_json(&msg, desc, obj, err, sizeof err) != 0) {
        if (err[0] == '\0' || msg != NULL)
            abort(); /* refused without a reason, or refused and still handed something out */
        json_decref(obj);
        return 0;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf != NULL) {
        if (protobuf_c_message_pack(msg, buf) != len)
            abort();
        ProtobufCMessage *back = protobuf_c_message_unpack(desc, NULL, len, buf);
        if (back == NULL || protobuf_c_message_get_packed_size(back) != len)
            abort();
        protobuf_c_message_free_unpacked(back, NULL);
        free(buf);
    }
    json_t *again = message_to_json(msg);
    json_decref(again);
    protobuf_c_message_free_unpacked(msg, NULL);
    json_decref(obj);
    return 0;
}
