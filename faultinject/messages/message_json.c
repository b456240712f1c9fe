/*
 * message_json.c -- JSON <-> protobuf-c messages through descriptors.
 *
 * Encoding walks the JSON object and, for each key, finds the field by
 * name in the descriptor and writes the value into the message struct at
 * the field's offset: that is all the generated code does too. Memory for
 * strings, bytes, arrays and sub-messages comes from malloc, which is what
 * protobuf_c_message_free_unpacked(msg, NULL) releases, so a message built
 * here is freed like one that was unpacked. Fields absent from the JSON
 * keep the defaults set by the descriptor's init function (static, never
 * freed).
 */
#include "message_json.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEMBER(msg, off) ((void *)((char *)(msg) + (off)))

static void fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static size_t element_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return 4; /* 32-bit ints, float, enum, protobuf_c_boolean */
    }
}

/* ---- base64 (bytes fields) ------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const uint8_t *in, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1), *p = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        *p++ = b64[v >> 18 & 63];
        *p++ = b64[v >> 12 & 63];
        *p++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *p = '\0';
    return out;
}

/* Decodes standard base64 (padding optional); -1 on a bad character. */
static int base64_decode(const char *in, uint8_t **out, size_t *len)
{
    size_t n = strlen(in);
    uint8_t *buf = malloc(n / 4 * 3 + 3), *p = buf;
    if (buf == NULL)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && in[i] != '='; i++) {
        const char *c = strchr(b64, in[i]);
        if (c == NULL) {
            free(buf);
            return -1;
        }
        acc = acc << 6 | (uint32_t)(c - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *p++ = (uint8_t)(acc >> bits & 0xff);
        }
    }
    *out = buf;
    *len = (size_t)(p - buf);
    return 0;
}

/* ---- JSON -> message ------------------------------------------------- */

static int from_object(ProtobufCMessage *msg, const json_t *obj, char *err, size_t cap);

/* Integers: JSON integers, or strings of digits (proto3 JSON writes int64 so). */
static int get_integer(const json_t *v, bool is_unsigned, long double *out)
{
    if (json_is_integer(v)) {
        *out = (long double)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d))
            return -1;
        *out = d;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end = NULL;
        errno = 0;
        if (is_unsigned) {
            if (*s == '-')
                return -1;
            unsigned long long u = strtoull(s, &end, 10);
            *out = (long double)u;
        } else {
            long long i = strtoll(s, &end, 10);
            *out = (long double)i;
        }
        return (errno == 0 && end != s && *end == '\0') ? 0 : -1;
    }
    return -1;
}

/* Writes one value of field f into slot. */
static int set_value(const ProtobufCFieldDescriptor *f, const char *owner, void *slot, const json_t *v, char *err,
                     size_t cap)
{
    long double n = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (get_integer(v, false, &n) != 0 || n < INT32_MIN || n > INT32_MAX)
            goto bad_int;
        *(int32_t *)slot = (int32_t)n;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (get_integer(v, true, &n) != 0 || n < 0 || n > UINT32_MAX)
            goto bad_int;
        *(uint32_t *)slot = (uint32_t)n;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (json_is_integer(v)) {
            *(int64_t *)slot = (int64_t)json_integer_value(v);
            return 0;
        }
        if (get_integer(v, false, &n) != 0 || n < (long double)INT64_MIN || n > (long double)INT64_MAX)
            goto bad_int;
        *(int64_t *)slot = (int64_t)n;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (json_is_integer(v) && json_integer_value(v) >= 0) {
            *(uint64_t *)slot = (uint64_t)json_integer_value(v);
            return 0;
        }
        if (get_integer(v, true, &n) != 0 || n < 0 || n > (long double)UINT64_MAX)
            goto bad_int;
        *(uint64_t *)slot = (uint64_t)n;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(v)) {
            fail(err, cap, "field '%s' of %s: expected a number, got %s", f->name, owner, json_kind(v));
            return -1;
        }
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)slot = (float)json_number_value(v);
        else
            *(double *)slot = json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) {
            fail(err, cap, "field '%s' of %s: expected true or false, got %s", f->name, owner, json_kind(v));
            return -1;
        }
        *(protobuf_c_boolean *)slot = json_is_true(v);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = NULL;
        if (json_is_string(v))
            ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
        else if (json_is_integer(v) && json_integer_value(v) >= INT_MIN && json_integer_value(v) <= INT_MAX)
            ev = protobuf_c_enum_descriptor_get_value(ed, (int)json_integer_value(v));
        if (ev == NULL) {
            fail(err, cap, "field '%s' of %s: not a value of enum %s", f->name, owner, ed->name);
            return -1;
        }
        *(int *)slot = ev->value;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(v)) {
            fail(err, cap, "field '%s' of %s: expected a string, got %s", f->name, owner, json_kind(v));
            return -1;
        }
        char *s = strdup(json_string_value(v));
        if (s == NULL)
            goto oom;
        *(char **)slot = s;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = slot;
        if (!json_is_string(v) || base64_decode(json_string_value(v), &b->data, &b->len) != 0) {
            fail(err, cap, "field '%s' of %s: expected a base64 string", f->name, owner);
            b->data = NULL;
            b->len = 0;
            return -1;
        }
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessageDescriptor *md = f->descriptor;
        if (!json_is_object(v)) {
            fail(err, cap, "field '%s' of %s: expected an object (%s), got %s", f->name, owner, md->name,
                 json_kind(v));
            return -1;
        }
        ProtobufCMessage *sub = calloc(1, md->sizeof_message);
        if (sub == NULL)
            goto oom;
        md->message_init(sub);
        *(ProtobufCMessage **)slot = sub;
        return from_object(sub, v, err, cap);
    }
    }
    fail(err, cap, "field '%s' of %s: unsupported type", f->name, owner);
    return -1;
bad_int:
    fail(err, cap, "field '%s' of %s: expected an integer in range, got %s", f->name, owner, json_kind(v));
    return -1;
oom:
    fail(err, cap, "out of memory");
    return -1;
}

static int set_field(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const json_t *v, char *err,
                     size_t cap)
{
    const char *owner = msg->descriptor->name;
    if (json_is_null(v))
        return 0; /* null means default, as in proto3 JSON */
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        if (!json_is_array(v)) {
            fail(err, cap, "field '%s' of %s: expected an array, got %s", f->name, owner, json_kind(v));
            return -1;
        }
        size_t n = json_array_size(v), size = element_size(f->type);
        void *items = calloc(n > 0 ? n : 1, size);
        if (items == NULL) {
            fail(err, cap, "out of memory");
            return -1;
        }
        /* Publish the array first: on a later error, free_unpacked frees what is in it. */
        *(size_t *)MEMBER(msg, f->quantifier_offset) = n;
        *(void **)MEMBER(msg, f->offset) = items;
        for (size_t i = 0; i < n; i++)
            if (set_value(f, owner, (char *)items + i * size, json_array_get(v, i), err, cap) != 0)
                return -1;
        return 0;
    }
    if (set_value(f, owner, MEMBER(msg, f->offset), v, err, cap) != 0)
        return -1;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)MEMBER(msg, f->quantifier_offset) = f->id;
    else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
             f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
        *(protobuf_c_boolean *)MEMBER(msg, f->quantifier_offset) = 1;
    return 0;
}

static int from_object(ProtobufCMessage *msg, const json_t *obj, char *err, size_t cap)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, key);
        if (f == NULL) {
            fail(err, cap, "unknown field '%s' in %s", key, msg->descriptor->name);
            return -1;
        }
        if (set_field(msg, f, v, err, cap) != 0)
            return -1;
    }
    return 0;
}

int message_from_json(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const json_t *obj, char *err,
                      size_t errcap)
{
    if (obj != NULL && !json_is_null(obj) && !json_is_object(obj)) {
        fail(err, errcap, "%s must be given as an object, got %s", desc->name, json_kind(obj));
        return -1;
    }
    ProtobufCMessage *msg = calloc(1, desc->sizeof_message);
    if (msg == NULL) {
        fail(err, errcap, "out of memory");
        return -1;
    }
    desc->message_init(msg);
    if (obj != NULL && json_is_object(obj) && from_object(msg, obj, err, errcap) != 0) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return -1;
    }
    *out = msg;
    return 0;
}

/* ---- message -> JSON ------------------------------------------------- */

static json_t *value_to_json(const ProtobufCFieldDescriptor *f, const void *slot)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)slot);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)slot);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)slot);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t u = *(const uint64_t *)slot;
        if (u <= INT64_MAX)
            return json_integer((json_int_t)u);
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRIu64, u);
        return json_string(buf);
    }
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)slot);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)slot);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)slot);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)slot);
        return ev != NULL ? json_string(ev->name) : json_integer(*(const int *)slot);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)slot;
        return json_string(s != NULL ? s : ""); /* NULL for invalid UTF-8: the caller skips the field */
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = slot;
        char *text = base64_encode(b->data, b->len);
        json_t *j = text != NULL ? json_string(text) : NULL;
        free(text);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)slot;
        return sub != NULL ? message_to_json(sub) : json_null();
    }
    }
    return json_null();
}

json_t *message_to_json(const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    json_t *obj = json_object();
    if (obj == NULL)
        return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *slot = (const char *)msg + f->offset;
        json_t *v;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
            const char *items = *(char *const *)slot;
            v = json_array();
            for (size_t k = 0; v != NULL && k < n; k++)
                json_array_append_new(v, value_to_json(f, items + k * element_size(f->type)));
        } else {
            if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                *(const uint32_t *)((const char *)msg + f->quantifier_offset) != f->id)
                continue;
            v = value_to_json(f, slot);
        }
        if (v != NULL)
            json_object_set_new(obj, f->name, v);
    }
    return obj;
}
