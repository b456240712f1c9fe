/*
 * raw_service.h -- the little runtime every role of natomic-raw-saga
 * shares, written by hand with nats.c: the connection, the workers that
 * take calls from one queue subscription, the replies, the calls to other
 * roles, the events, and the answer to $SRV.PING (the lab's supervisor
 * waits for it). No libnatomic anywhere: this is the baseline the library
 * is measured against (DESIGN §5).
 *
 * The wire contract is the one the natomic services speak, so the same
 * client (natomic_request) drives both: the packed reply on success; on
 * failure an empty reply with `Nats-Service-Error-Code` (400, 404, 422,
 * 500, 503, 504), `Nats-Service-Error` and `Natomic-Error-Type`.
 * Requests carry `Natomic-Tx` (the participants' barrier keys on it) and
 * `Natomic-Deadline-Ms` (what is left of the caller's time).
 */
#ifndef RAW_SERVICE_H
#define RAW_SERVICE_H

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RAW_ID_LEN 32             /* hex digits of a 128-bit id                       */
#define RAW_TX_CAP 65             /* a transaction id taken from a caller: up to 64    */
#define RAW_DEFAULT_TIMEOUT_MS 30000 /* a call without Natomic-Deadline-Ms, as natomic */

typedef struct raw_service raw_service_t;

/* One call being handled, on the worker that took it. Valid until the method returns. */
typedef struct raw_call {
    raw_service_t *svc;
    natsMsg *msg;            /* the request: borrowed                                  */
    char tx[RAW_TX_CAP];     /* Natomic-Tx of the request, or a new id                 */
    int64_t deadline_ms;     /* CLOCK_MONOTONIC ms at which the caller stops waiting   */
    bool answered;           /* raw_reply or raw_fail was called                       */
} raw_call_t;

/*
 * A method: decodes call->msg, does its work and answers exactly once
 * (raw_reply or raw_fail); a method that returns without answering gets
 * a 500 reply from the runtime. Runs on a worker thread, up to `workers`
 * at once, with the role's state.
 */
typedef void raw_method_fn(raw_call_t *call, void *state);

typedef struct raw_method {
    const char *name; /* "create_order": the subject's last token */
    raw_method_fn *fn;
} raw_method_t;

/*
 * Connects to `url` with the options natomic_connect() sets (the services
 * of the library use them): SendAsap (nats.c would otherwise buffer each
 * publish up to a flush), reconnect for ever every 100 ms, a 2 s connect
 * timeout. NATS_OK with *out set, or the failure and nothing open.
 */
natsStatus raw_connect(natsConnection **out, const char *url);

/*
 * Subscribes to "<name>.>" in the queue group <name> (pending limits off),
 * starts `workers` threads that take calls from it, and answers
 * $SRV.PING and $SRV.PING.<name>. `nc`, `methods` and `state` are
 * borrowed and must outlive the service. 0 with *out set, or -1 with a
 * message on stderr and nothing left running.
 */
int raw_service_start(raw_service_t **out, natsConnection *nc, const char *name, const raw_method_t *methods,
                      size_t n_methods, void *state, int workers);

/*
 * Unsubscribes, lets every worker finish the call in hand, joins them,
 * flushes what they sent and frees the service. NULL is a no-op.
 */
void raw_service_stop(raw_service_t *svc);

/* The connection the service answers on (borrowed). */
natsConnection *raw_service_connection(raw_service_t *svc);

/* Writes a new 128-bit random id as 32 hex digits. */
void raw_id_new(char out[RAW_ID_LEN + 1]);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t raw_now_ms(void);

/* The request decoded as `desc` (free with protobuf_c_message_free_unpacked), or NULL after a 400 reply. */
void *raw_unpack(raw_call_t *call, const ProtobufCMessageDescriptor *desc);

/* Sends `reply` packed to the caller, with Natomic-Tx. Failures are logged; the call is answered either way. */
void raw_reply(raw_call_t *call, const ProtobufCMessage *reply);

/* Sends the error reply: code (400..504), type ("OutOfStock") and the formatted message. Failures are logged. */
void raw_fail(raw_call_t *call, int code, const char *type, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A refusal decided while the database is locked, sent once it is not (raw_fail_with). code 0: none. */
typedef struct raw_refusal {
    int code;
    const char *type;  /* static text */
    char message[256];
} raw_refusal_t;

/* Sets *r. */
void raw_refuse(raw_refusal_t *r, int code, const char *type, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* raw_fail with the refusal's code, type and message. */
void raw_fail_with(raw_call_t *call, const raw_refusal_t *r);

/* What went wrong with a request to another role (raw_request). */
typedef struct raw_remote_error {
    int code;           /* the callee's Nats-Service-Error-Code; 504 no reply in time, 503 no responders or
                           NATS failed, 500 a reply that does not decode                              */
    bool in_doubt;      /* no answer: the callee may have done it (a timeout)                         */
    char type[64];      /* the callee's Natomic-Error-Type, or Timeout / Unavailable / BadReply        */
    char message[256];
} raw_remote_error_t;

/*
 * One request to another role: `request` packed, with Natomic-Tx = tx and
 * Natomic-Deadline-Ms = timeout_ms, waiting at most timeout_ms. 0 with
 * *reply decoded as `reply_desc` (free with
 * protobuf_c_message_free_unpacked), or -1 with *err filled and *reply
 * untouched.
 */
int raw_request(ProtobufCMessage **reply, natsConnection *nc, const char *subject, const ProtobufCMessage *request,
                const ProtobufCMessageDescriptor *reply_desc, const char *tx, int64_t timeout_ms,
                raw_remote_error_t *err);

/*
 * Publishes `event` packed on `subject` with Natomic-Tx, Natomic-Event-Id
 * (a new id: consumers deduplicate on it) and Natomic-Event-Type =
 * `type`. NATS_OK, or the failure (nothing was sent).
 */
natsStatus raw_publish_event(natsConnection *nc, const char *subject, const char *type, const char *tx,
                             const ProtobufCMessage *event);

#endif
