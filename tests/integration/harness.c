/*
 * harness.c -- conversions calls, raw request messages, JSON answers and
 * the conversions binary as a child; the rest is tests/fixture.
 */
#include "harness.h"

#include <string.h>

#include "conversions.pb-c.h"

natomic_status_t harness_call(natsConnection *nc, const char *subject, double inches, int timeout_ms, double *cm,
                              natomic_call_info_t *info)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = inches;
    ProtobufCMessage *reply = NULL;
    natomic_status_t st = natomic_request(&reply, nc, subject, &req.base,
                                          &conversions__inches_to_cm_reply__descriptor, timeout_ms, info);
    if (st == NATOMIC_OK) {
        if (cm != NULL)
            *cm = ((Conversions__InchesToCmReply *)reply)->cm;
        protobuf_c_message_free_unpacked(reply, NULL);
    }
    return st;
}

natsMsg *harness_request_msg(const char *subject, double inches)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = inches;
    uint8_t buf[32];
    size_t len = protobuf_c_message_pack(&req.base, buf);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len);
    ck_assert_msg(s == NATS_OK, "natsMsg_Create(%s): %s", subject, natsStatus_GetText(s));
    return m;
}

json_t *harness_request_json(natsConnection *nc, const char *subject)
{
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, nc, subject, "", fixture_ms(5000));
    ck_assert_msg(s == NATS_OK, "request %s: %s", subject, natsStatus_GetText(s));
    json_error_t err;
    json_t *doc = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, &err);
    ck_assert_msg(doc != NULL && json_is_object(doc), "%s answered no JSON object (%s): %.*s", subject, err.text,
                  natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
    natsMsg_Destroy(reply);
    return doc;
}

void harness_conversions_start(fixture_child_t *child, natsConnection *nc)
{
    memset(child, 0, sizeof *child);
    fixture_path(child->db_path, sizeof child->db_path, "conversions", ".db");
    const char *args[] = {"--db", child->db_path, NULL};
    fixture_spawn_service(child, nc, "CONVERSIONS_BIN", "conversions", args);
}
