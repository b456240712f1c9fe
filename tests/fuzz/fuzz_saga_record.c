/*
 * fuzz_saga_record.c -- a saga record as recovery reads it back from
 * JetStream KV (durable mode): protobuf bytes that anything allowed to
 * write the bucket may have put there, or a crash may have cut.
 *
 * The input is the KV value. What recovery does with it is run: unpack
 * (natomic__saga_record__unpack), rebuild a context from it
 * (natomic__saga_rebuild: ids, state, compensations, their data), then
 * release it; a record that unpacks also packs back. Checks: no crash, no
 * leak, no undefined behaviour, whatever the ids' lengths, the number of
 * compensations, their kinds and payloads. Nothing is sent: the context's
 * service has no connection and nothing runs its commands.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "durable_internal.h"
#include "natomic_log.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 20)
        return 0;
    Natomic__SagaRecord *rec = natomic__saga_record__unpack(NULL, size, data);
    if (rec == NULL)
        return 0;
    size_t len = natomic__saga_record__get_packed_size(rec);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf != NULL) {
        if (natomic__saga_record__pack(rec, buf) != len)
            abort();
        free(buf);
    }
    natomic_service_t *svc = calloc(1, sizeof *svc);
    if (svc != NULL) {
        svc->name = strdup("fuzz");
        natomic_ctx_t ctx;
        natomic__saga_rebuild(svc, rec, 1, &ctx);
        if (ctx.rollbacks.count > rec->n_compensations)
            abort(); /* one command per compensation, never more */
        natomic__ctx_release(&ctx);
        free(svc->name);
        free(svc);
    }
    natomic__saga_record__free_unpacked(rec, NULL);
    return 0;
}
