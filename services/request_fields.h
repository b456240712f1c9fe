/*
 * request_fields.h -- the checks every example service makes of the text
 * fields of a request before anything is stored.
 *
 * A request comes from any NATS client; a field it sends may become a key
 * of a table (a sku, a customer, an order id), a barrier branch, part of an
 * id or of a message. So each such field is refused when it is empty or
 * longer than REQUEST_TEXT_MAX bytes: a clear 400 InvalidRequest naming the
 * field and the limit, and nothing written (before this, a 1 MB sku was
 * stored as a key per request).
 */
#ifndef SERVICES_REQUEST_FIELDS_H
#define SERVICES_REQUEST_FIELDS_H

#include <natomic.h>

/* The longest text field a service keeps, in bytes: ids and names stay readable in logs and reports. */
#define REQUEST_TEXT_MAX 200

/* NATOMIC_OK, or the call failed with 400 InvalidRequest: "<name> must not be empty" / "is longer than". */
natomic_status_t request_text(natomic_ctx_t *ctx, const char *name, const char *value);

#endif
