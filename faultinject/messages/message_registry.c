/*
 * message_registry.c -- lookup of the generated message descriptors by
 * full name. The table itself is generated at build time from protoc-c's
 * headers (gen_message_registry.py), so it cannot drift from proto/.
 */
#include "message_registry.h"

#include <string.h>

extern const ProtobufCMessageDescriptor *const message_registry_table[];
extern const size_t message_registry_size;

const ProtobufCMessageDescriptor *message_registry_find(const char *full_name)
{
    if (full_name == NULL)
        return NULL;
    for (size_t i = 0; i < message_registry_size; i++)
        if (strcmp(message_registry_table[i]->name, full_name) == 0)
            return message_registry_table[i];
    return NULL;
}

const ProtobufCMessageDescriptor *const *message_registry_all(size_t *count)
{
    *count = message_registry_size;
    return message_registry_table;
}
