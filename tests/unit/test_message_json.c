/*
 * test_message_json.c -- JSON <-> protobuf through descriptors, the code
 * the call CLI and the scenario runner encode every request with.
 *
 * Proves: every scalar kind the example schemas use round-trips; absent
 * fields keep their defaults; unknown fields, wrong types and out-of-range
 * integers are refused with a message naming the field and the type;
 * repeated and nested messages (notifications.ListReply) round-trip; the
 * registry knows every message of proto/ by full name. Memory is checked
 * by the valgrind setup.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "conversions.pb-c.h"
#include "inventory.pb-c.h"
#include "message_json.h"
#include "message_registry.h"
#include "notifications.pb-c.h"

/* Encodes `text` as `desc`; returns the message or NULL with err filled. */
static ProtobufCMessage *encode(const ProtobufCMessageDescriptor *desc, const char *text, char *err, size_t cap)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    ck_assert_msg(j != NULL, "test JSON does not parse: %s", jerr.text);
    ProtobufCMessage *m = NULL;
    err[0] = '\0';
    if (message_from_json(&m, desc, j, err, cap) != 0)
        m = NULL;
    json_decref(j);
    return m;
}

START_TEST(scalars_round_trip)
{
    char err[256];
    ProtobufCMessage *m = encode(&inventory__reserve_request__descriptor,
                                 "{\"order_id\":\"o-1\",\"sku\":\"book\",\"qty\":9007199254740993}", err, sizeof err);
    ck_assert_msg(m != NULL, "encode failed: %s", err);
    const Inventory__ReserveRequest *r = (const Inventory__ReserveRequest *)m;
    ck_assert_str_eq(r->order_id, "o-1");
    ck_assert_str_eq(r->sku, "book");
    ck_assert_int_eq(r->qty, 9007199254740993LL);

    json_t *back = message_to_json(m);
    ck_assert_str_eq(json_string_value(json_object_get(back, "sku")), "book");
    ck_assert_int_eq(json_integer_value(json_object_get(back, "qty")), 9007199254740993LL);
    json_decref(back);
    protobuf_c_message_free_unpacked(m, NULL);
}
END_TEST

START_TEST(int64_as_string_and_double)
{
    char err[256];
    ProtobufCMessage *m = encode(&inventory__restock_request__descriptor, "{\"sku\":\"x\",\"qty\":\"-42\"}", err,
                                 sizeof err);
    ck_assert_msg(m != NULL, "encode failed: %s", err);
    ck_assert_int_eq(((Inventory__RestockRequest *)m)->qty, -42);
    protobuf_c_message_free_unpacked(m, NULL);

    m = encode(&conversions__inches_to_cm_request__descriptor, "{\"inches\": 2}", err, sizeof err);
    ck_assert_msg(m != NULL, "an integer must be accepted for a double: %s", err);
    ck_assert_double_eq(((Conversions__InchesToCmRequest *)m)->inches, 2.0);
    protobuf_c_message_free_unpacked(m, NULL);
}
END_TEST

START_TEST(absent_fields_keep_defaults)
{
    char err[256];
    ProtobufCMessage *m = encode(&inventory__reserve_request__descriptor, "{}", err, sizeof err);
    ck_assert_msg(m != NULL, "encode failed: %s", err);
    ck_assert_str_eq(((Inventory__ReserveRequest *)m)->sku, "");
    ck_assert_int_eq(((Inventory__ReserveRequest *)m)->qty, 0);
    protobuf_c_message_free_unpacked(m, NULL);

    m = encode(&inventory__reserve_request__descriptor, "null", err, sizeof err);
    ck_assert_msg(m != NULL, "null means all defaults: %s", err);
    protobuf_c_message_free_unpacked(m, NULL);
}
END_TEST

/* Each bad input is refused, and the reason names what is wrong. */
START_TEST(bad_input_refused_with_reason)
{
    static const struct {
        const char *json;
        const char *reason_part;
    } cases[] = {
        {"{\"skew\":\"book\"}", "unknown field 'skew' in inventory.ReserveRequest"},
        {"{\"qty\":\"ten\"}", "field 'qty'"},
        {"{\"qty\":1.5}", "field 'qty'"},
        {"{\"sku\":7}", "expected a string, got an integer"},
        {"{\"order_id\":[\"a\"]}", "expected a string, got an array"},
        {"[1,2]", "must be given as an object"},
        {"\"text\"", "must be given as an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256];
        ProtobufCMessage *m = encode(&inventory__reserve_request__descriptor, cases[i].json, err, sizeof err);
        ck_assert_msg(m == NULL, "%s was accepted", cases[i].json);
        ck_assert_msg(strstr(err, cases[i].reason_part) != NULL, "%s: reason '%s' lacks '%s'", cases[i].json, err,
                      cases[i].reason_part);
    }
}
END_TEST

START_TEST(repeated_nested_round_trip)
{
    char err[256];
    const char *text = "{\"notifications\":[{\"event_id\":\"e1\",\"order_id\":\"o1\",\"customer\":\"ann\"},"
                       "{\"event_id\":\"e2\",\"text\":\"hello\"}]}";
    ProtobufCMessage *m = encode(&notifications__list_reply__descriptor, text, err, sizeof err);
    ck_assert_msg(m != NULL, "encode failed: %s", err);
    const Notifications__ListReply *r = (const Notifications__ListReply *)m;
    ck_assert_uint_eq(r->n_notifications, 2);
    ck_assert_str_eq(r->notifications[0]->customer, "ann");
    ck_assert_str_eq(r->notifications[1]->text, "hello");

    /* Through the wire format and back: what the CLI prints for a reply. */
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len);
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *u = protobuf_c_message_unpack(&notifications__list_reply__descriptor, NULL, len, buf);
    free(buf);
    json_t *j = message_to_json(u);
    json_t *items = json_object_get(j, "notifications");
    ck_assert_uint_eq(json_array_size(items), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 1), "event_id")), "e2");
    json_decref(j);
    protobuf_c_message_free_unpacked(u, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
}
END_TEST

START_TEST(bad_element_in_array_frees_cleanly)
{
    char err[256];
    ProtobufCMessage *m = encode(&notifications__list_reply__descriptor,
                                 "{\"notifications\":[{\"event_id\":\"e1\"},{\"event_id\":5}]}", err, sizeof err);
    ck_assert_msg(m == NULL, "a bad element was accepted");
    ck_assert_msg(strstr(err, "event_id") != NULL, "reason: %s", err);
}
END_TEST

START_TEST(registry_knows_every_schema)
{
    static const char *const names[] = {"conversions.InchesToCmRequest", "inventory.ReserveRequest",
                                        "payments.ChargeRequest",        "orders.CreateOrderRequest",
                                        "orders.OrderCreated",           "notifications.ListReply"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const ProtobufCMessageDescriptor *d = message_registry_find(names[i]);
        ck_assert_msg(d != NULL, "registry lacks %s", names[i]);
        ck_assert_str_eq(d->name, names[i]);
    }
    ck_assert_ptr_null(message_registry_find("inventory.NoSuchMessage"));
    ck_assert_ptr_null(message_registry_find(NULL));
    size_t n = 0;
    message_registry_all(&n);
    ck_assert_uint_ge(n, 20);
}
END_TEST

static Suite *message_json_suite(void)
{
    Suite *s = suite_create("message_json");
    TCase *t = tcase_create("json");
    tcase_add_test(t, scalars_round_trip);
    tcase_add_test(t, int64_as_string_and_double);
    tcase_add_test(t, absent_fields_keep_defaults);
    tcase_add_test(t, bad_input_refused_with_reason);
    tcase_add_test(t, repeated_nested_round_trip);
    tcase_add_test(t, bad_element_in_array_frees_cleanly);
    tcase_add_test(t, registry_knows_every_schema);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(message_json_suite());
    srunner_run_all(sr, CK_ENV);
    srunner_free(sr);
    return 0;
}
