/*
 * fuzz_event.c -- an event as a consumer reads it back from JetStream (durable mode: the
 * EVENTS stream, where the outbox publishes) or from core NATS (memory mode): headers and a
 * payload that anyone allowed to publish on events.> -- or a message planted in the stream --
 * chose.
 *
 * Input: the first byte picks the event type (orders' OrderCreated or conversions'
 * Converted); then header lines "Name: value" up to an empty line, then the payload. The
 * message goes through natomic__event_handle() as a consumer's fetch loop would hand it over:
 * the Natomic-Tx / Natomic-Call-Id / Natomic-Event-Id headers taken into the handler's context,
 * the payload decoded as the type, the handler run. The handler here checks what it was given
 * and fails on demand (a payload byte), so the failure path runs too. Checks: no crash, no
 * leak, no UB; the handler runs only for a payload that decodes, and sees ids that fit and hold
 * no control characters. Nothing is sent: the service has no connection.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "natomic_internal.h"
#include "conversions.pb-c.h"
#include "orders.pb-c.h"

static bool clean_id(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static natomic_status_t handler(natomic_ctx_t *ctx, const ProtobufCMessage *event, void *closure)
{
    int *calls = closure;
    (*calls)++;
    if (event == NULL || !clean_id(ctx->tx, sizeof ctx->tx) || !clean_id(ctx->parent_id, sizeof ctx->parent_id) ||
        !clean_id(ctx->event_id, sizeof ctx->event_id))
        abort();
    size_t len = protobuf_c_message_get_packed_size(event);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return NATOMIC_ENOMEM;
    size_t packed = protobuf_c_message_pack(event, buf);
    bool fail = packed > 0 && buf[0] % 3 == 0;
    free(buf);
    if (packed != len)
        abort();
    return fail ? natomic_fail(ctx, NATOMIC_ETRANSIENT, "FuzzFailure", "the handler fails on demand") : NATOMIC_OK;
}

static void nats_close(void)
{
    nats_Close();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    static bool opened;
    if (!opened && nats_Open(-1) == NATS_OK) { /* nats.c's messages live in its library state: open it once */
        opened = true;
        atexit(nats_close); /* and close it at the end, its threads with it */
    }
    const ProtobufCMessageDescriptor *desc =
        data[0] % 2 == 0 ? &orders__order_created__descriptor : &conversions__converted__descriptor;
    const char *text = (const char *)data + 1;
    size_t left = size - 1;
    /* Headers up to an empty line (or the end), then the payload. */
    const char *end = memmem(text, left, "\n\n", 2);
    size_t head_len = end != NULL ? (size_t)(end - text) : left;
    const char *payload = end != NULL ? end + 2 : text + left;
    size_t payload_len = end != NULL ? left - head_len - 2 : 0;

    natsMsg *msg = NULL;
    if (natsMsg_Create(&msg, "events.fuzz.event", NULL, payload, (int)payload_len) != NATS_OK)
        return 0;
    char *head = strndup(text, head_len);
    for (char *save = NULL, *line = head != NULL ? strtok_r(head, "\n", &save) : NULL; line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *colon = strchr(line, ':');
        if (colon == NULL || colon == line)
            continue;
        *colon = '\0';
        const char *value = colon + 1;
        while (*value == ' ')
            value++;
        natsMsgHeader_Add(msg, line, value); /* nats.c refuses what it must: that is its business */
    }
    free(head);

    natomic_service_t *svc = calloc(1, sizeof *svc);
    int calls = 0;
    if (svc != NULL && (svc->name = strdup("fuzz")) != NULL) {
        natomic_event_sub_t es = {.svc = svc, .subject = "events.fuzz.event", .handler = handler, .desc = desc,
                                  .closure = &calls};
        natomic_status_t st = natomic__event_handle(&es, msg);
        ProtobufCMessage *probe = protobuf_c_message_unpack(desc, NULL, payload_len, (const uint8_t *)payload);
        if ((probe == NULL) != (calls == 0) || (probe == NULL && st != NATOMIC_EBADINPUT))
            abort(); /* the handler runs exactly when the payload decodes */
        protobuf_c_message_free_unpacked(probe, NULL);
    }
    if (svc != NULL)
        free(svc->name);
    free(svc);
    natsMsg_Destroy(msg);
    return 0;
}
