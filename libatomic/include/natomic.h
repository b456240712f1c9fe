/*
 * natomic.h -- atomic RPC calls between services over NATS.
 *
 * libnatomic is the C counterpart of Python's nameko-atomicity. A service
 * built with it answers requests on `<service>.<method>`; while a handler
 * runs it registers
 *
 *   - rollback commands, run in reverse order when the call fails
 *     (methods flagged NATOMIC_ROLLBACK_ONCE_FAILED), and
 *   - dispatch commands, run in registration order only after the call
 *     succeeded (methods flagged NATOMIC_DISPATCH_AFTER_COMMIT).
 *
 * Every call has its own context (natomic_ctx_t): concurrent calls never
 * share their command lists. Every command is attempted; a failing one is
 * retried with exponential backoff and, when it still fails, logged,
 * published on the dead-letter subject and counted -- never dropped
 * silently.
 *
 * Conventions of this header
 *   - Functions that can fail return a natomic_status_t; natomic_strerror()
 *     names it. Accessors, counters and _free/_destroy return plain values.
 *   - Out-parameters come first and are written only on success.
 *   - Strings passed in are copied unless the comment says "borrowed".
 *   - _free/_destroy of NULL is a no-op.
 *
 * Threads: a service runs handlers on up to `max_workers` threads at once.
 * A natomic_ctx_t belongs to the one thread running its call; do not share
 * it. natomic_request() and the service functions are thread-safe.
 */
#ifndef NATOMIC_H
#define NATOMIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(NATOMIC_BUILDING) && defined(__GNUC__)
#define NATOMIC_API __attribute__((visibility("default")))
#else
#define NATOMIC_API
#endif

#define NATOMIC_VERSION "0.1.0"

/* ------------------------------------------------------------------ */
/* Status                                                              */
/* ------------------------------------------------------------------ */

/*
 * X(name, text). The statuses from NATOMIC_EBADINPUT to NATOMIC_EINTERNAL
 * are also the error kinds of a failed call: a handler fails with one of
 * them, and a caller receives the same status (see natomic_error_code()).
 */
#define NATOMIC_STATUS_LIST(X)                                                          \
    X(NATOMIC_OK, "success")                                                            \
    X(NATOMIC_EINVAL, "invalid argument")                                               \
    X(NATOMIC_ENOMEM, "out of memory")                                                  \
    X(NATOMIC_ENATS, "NATS operation failed")                                           \
    X(NATOMIC_ENOTENABLED, "method is not flagged for this kind of command")            \
    X(NATOMIC_ESTATE, "operation not allowed in the current state")                     \
    X(NATOMIC_EEXIST, "already exists")                                                 \
    X(NATOMIC_ENORESPONDERS, "no service is listening on that subject")                 \
    X(NATOMIC_EBADREPLY, "reply could not be decoded")                                  \
    X(NATOMIC_EBADINPUT, "bad input: the request was malformed or invalid")             \
    X(NATOMIC_ENOMETHOD, "unknown method")                                              \
    X(NATOMIC_EBUSINESS, "business failure (do not retry)")                             \
    X(NATOMIC_ETRANSIENT, "transient failure (retry may succeed)")                      \
    X(NATOMIC_ETIMEOUT, "timeout: the outcome is in doubt")                             \
    X(NATOMIC_EINTERNAL, "internal error in the service")                               \
    X(NATOMIC_ENOJETSTREAM, "durable mode needs JetStream: start nats-server with -js, or use memory mode") \
    X(NATOMIC_ELOG, "the saga log could not be written: nothing was sent")               \
    X(NATOMIC_ENOTOWNER, "this instance no longer owns the saga: recovery took it over")  \
    X(NATOMIC_ENOTFOUND, "no such entry")

typedef enum natomic_status {
#define NATOMIC_STATUS_ENUM_(name, text) name,
    NATOMIC_STATUS_LIST(NATOMIC_STATUS_ENUM_)
#undef NATOMIC_STATUS_ENUM_
    NATOMIC_STATUS_COUNT_
} natomic_status_t;

/* Human text of a status; never NULL, static storage. */
NATOMIC_API const char *natomic_strerror(natomic_status_t status);
/* Symbolic name ("NATOMIC_EBUSINESS"); never NULL, static storage. */
NATOMIC_API const char *natomic_status_name(natomic_status_t status);

/*
 * The numeric code sent in the `Nats-Service-Error-Code` header for an
 * error kind: EBADINPUT 400, ENOMETHOD 404, EBUSINESS 422, EINTERNAL 500,
 * ETRANSIENT 503, ETIMEOUT 504. Other statuses map to 500.
 */
NATOMIC_API int natomic_error_code(natomic_status_t kind);
/* The inverse: the error kind for a received code. Unknown 4xx codes read as
 * EBADINPUT (a client error: do not retry), other unknown codes as EINTERNAL. */
NATOMIC_API natomic_status_t natomic_error_kind(int code);

/* ------------------------------------------------------------------ */
/* Headers and subjects (part of the wire contract)                    */
/* ------------------------------------------------------------------ */

#define NATOMIC_HDR_TX          "Natomic-Tx"          /* transaction id           */
#define NATOMIC_HDR_CALL_ID     "Natomic-Call-Id"     /* the sender's call id     */
#define NATOMIC_HDR_CALL_CHAIN  "Natomic-Call-Chain"  /* ancestors, comma list    */
#define NATOMIC_HDR_DEADLINE_MS "Natomic-Deadline-Ms" /* remaining budget, ms     */
/* Where a service sends replies: a call whose reply subject does not start
   with one of these (NATOMIC_INBOX_PREFIXES, a comma list, replaces the
   default) is neither run nor answered -- the reply subject is the
   caller's choice, and an answer sent to "payments.refund" would be a
   refund made with the service's own permissions. */
#define NATOMIC_DEFAULT_INBOX_PREFIX "_INBOX."

/* The longest budget a call carries, one day: a Natomic-Deadline-Ms above
   it, or a call's timeout above it, is taken as this much (so that adding
   it to a clock can never overflow, whatever a client sends). */
#define NATOMIC_MAX_BUDGET_MS   86400000LL
#define NATOMIC_HDR_CALLER      "Natomic-Caller"      /* calling service's name   */
#define NATOMIC_HDR_PHASE       "Natomic-Phase"       /* rollback|dispatch: a call made by a command */
#define NATOMIC_HDR_ROLLBACK    "Natomic-Rollback"    /* complete|incomplete|none */
#define NATOMIC_HDR_DISPATCH    "Natomic-Dispatch"    /* complete|incomplete|none */
#define NATOMIC_HDR_ERROR_TYPE  "Natomic-Error-Type"  /* e.g. "PaymentDeclined"   */
#define NATOMIC_HDR_EVENT_ID    "Natomic-Event-Id"
#define NATOMIC_HDR_EVENT_TYPE  "Natomic-Event-Type"
#define NATOMIC_HDR_BRANCH      "Natomic-Branch"      /* saga step: the same on an action and its compensation */
#define NATOMIC_HDR_ATTEMPT     "Natomic-Attempt"     /* a call made by a command: its attempt, 1.. */
#define NATOMIC_HDR_BACKOFF_MS  "Natomic-Backoff-Ms"  /* ... and, from attempt 2, the wait before it, ms */
#define NATOMIC_HDR_IDEMPOTENCY_KEY "Natomic-Idempotency-Key" /* request: replay the first outcome */
#define NATOMIC_HDR_REPLAYED    "Natomic-Replayed"    /* reply: "true" when it is a stored outcome */
#define NATOMIC_HDR_TIME_NS     "Natomic-Time-Ns"     /* trace copies, events: the sender's wall clock, ns */
#define NATOMIC_HDR_SERVICE_ERROR      "Nats-Service-Error"
#define NATOMIC_HDR_SERVICE_ERROR_CODE "Nats-Service-Error-Code"

/* Events go to "events.<service>.<type>"; dead letters to
 * "natomic.deadletter.<service>" (a JSON document per exhausted command);
 * in durable mode what recovery does is told on "natomic.recovery.<service>"
 * (a JSON document per step: claimed, compensated, ended; docs/durable.md).
 * Durable events are kept in the JetStream stream NATOMIC_EVENTS_STREAM
 * (subjects "events.>"). Fault point hits and fires are traced on
 * "natomic.trace.fault.<service>.<instance>" (see natomic_faults_setup). */
#define NATOMIC_EVENTS_PREFIX     "events"
#define NATOMIC_DEADLETTER_PREFIX "natomic.deadletter"
#define NATOMIC_RECOVERY_PREFIX   "natomic.recovery"
#define NATOMIC_FAULT_TRACE_PREFIX "natomic.trace.fault"
#define NATOMIC_EVENTS_STREAM     "EVENTS"

/* How the commands of one call ended, as sent in the reply headers. */
typedef enum natomic_outcome {
    NATOMIC_OUTCOME_NONE = 0,   /* no command ran                        */
    NATOMIC_OUTCOME_COMPLETE,   /* every command succeeded (maybe after retries) */
    NATOMIC_OUTCOME_INCOMPLETE  /* at least one was exhausted (dead-lettered) */
} natomic_outcome_t;

/* "none", "complete", "incomplete"; static storage. */
NATOMIC_API const char *natomic_outcome_name(natomic_outcome_t outcome);

/* ------------------------------------------------------------------ */
/* Connection                                                          */
/* ------------------------------------------------------------------ */

/*
 * Connects to `url` (NULL: $NATS_URL, else nats://127.0.0.1:4222) with the
 * options natomic needs: sends go out at once (natsOptions_SetSendAsap;
 * nats.c's buffering otherwise adds about 1 ms per hop). With `opts` NULL
 * natomic also sets reconnection forever (every 100 ms) and a 2 s connect
 * timeout. Given `opts` (borrowed: your credentials, TLS, reconnect
 * policy), natomic only sets the URL and SendAsap on it.
 * The connection is the caller's: natsConnection_Destroy() it.
 */
NATOMIC_API natomic_status_t natomic_connect(natsConnection **out, const char *url, natsOptions *opts);

/* The URL natomic_connect() uses for NULL: $NATS_URL or the default. Static or environment storage. */
NATOMIC_API const char *natomic_default_url(void);

/*
 * How to reach NATS and who to be there, as the `nats` CLI takes it (the
 * same flags in the services and natomic-call: --server, --user,
 * --password, --token, --creds, --tlscert, --tlskey, --tlsca). NULL: not
 * used. Strings are borrowed.
 */
typedef struct natomic_conn_config {
    const char *url;        /* server URL(s), comma list; NULL: $NATS_URL or nats://127.0.0.1:4222 */
    const char *user;       /* user name, with password                                   */
    const char *password;   /* visible in the process list when given as a flag: prefer NATS_PASSWORD */
    const char *token;      /* an authorization token                                    */
    const char *creds_file; /* a credentials file: user JWT and nkey seed (nsc)           */
    const char *tls_cert;   /* client certificate (PEM), with tls_key                     */
    const char *tls_key;    /* its private key (PEM)                                      */
    const char *tls_ca;     /* CA certificates to trust the server by (PEM); turns TLS on */
    const char *inbox_prefix; /* replies come to <prefix>.<id>...; NULL: "_INBOX". A per-identity
                                 prefix under _INBOX. (e.g. "_INBOX.client") lets a server config
                                 give each identity its own replies only (deploy/) */
    const char *nkey_file;  /* a user's nkey seed file (SU...): the server knows its public key */
} natomic_conn_config_t;

/*
 * Sets the field of a command-line flag: "server" (or "nats"), "user",
 * "password", "token", "creds", "nkey", "tlscert", "tlskey", "tlsca", "inbox-prefix" (leading
 * dashes ignored); `value` is borrowed. NATOMIC_EINVAL for another flag.
 */
NATOMIC_API natomic_status_t natomic_conn_config_set(natomic_conn_config_t *c, const char *flag, const char *value);

/*
 * Those flags as getopt_long() entries (struct option from <getopt.h>),
 * each returning `val`; then natomic_conn_config_set(&c,
 * longopts[index].name, optarg) fills the field, e.g.
 *     static const struct option opts[] = {NATOMIC_CONN_LONGOPTS('c'), {"help", no_argument, NULL, 'h'}, {0}};
 */
#define NATOMIC_CONN_LONGOPTS(val)                                                                          \
    {"server", 1, NULL, (val)}, {"user", 1, NULL, (val)}, {"password", 1, NULL, (val)},                      \
        {"token", 1, NULL, (val)}, {"creds", 1, NULL, (val)}, {"tlscert", 1, NULL, (val)},                   \
        {"tlskey", 1, NULL, (val)}, {"tlsca", 1, NULL, (val)}, {"inbox-prefix", 1, NULL, (val)},               \
        {"nkey", 1, NULL, (val)}

/* The help lines of those flags, for a tool's --help (each ends with a newline). */
NATOMIC_API const char *natomic_conn_config_help(void);

/* Fills the fields left NULL from NATS_URL, NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY, NATS_CERT,
   NATS_KEY, NATS_CA, NATS_INBOX_PREFIX. */
NATOMIC_API void natomic_conn_config_from_env(natomic_conn_config_t *c);

/*
 * Checks a configuration without connecting: every file named exists and
 * is readable, a password has its user, a certificate its key, and one
 * way of authenticating at most (user and password, token, credentials
 * file, or user info in the URL). NATOMIC_OK, or NATOMIC_EINVAL with a
 * message in err naming the option and the file -- never a secret.
 */
NATOMIC_API natomic_status_t natomic_conn_config_check(const natomic_conn_config_t *c, char *err, size_t errcap);

/*
 * natsOptions for a configuration (checked first; files loaded), with
 * natomic_connect()'s defaults: reconnect forever every 100 ms, 2 s
 * connect timeout. The caller destroys them. NATOMIC_EINVAL with a message
 * when a file cannot be used (not PEM, no key in it).
 */
NATOMIC_API natomic_status_t natomic_conn_options(natsOptions **out, const natomic_conn_config_t *c, char *err,
                                                  size_t errcap);

/* natomic_conn_options(), then natomic_connect(): err says what failed, the URL shown redacted. */
NATOMIC_API natomic_status_t natomic_connect_config(natsConnection **out, const natomic_conn_config_t *c, char *err,
                                                    size_t errcap);

/* `url` (NULL: the default) with every user:password@ or token@ shown as ***@, for logs. Returns buf. */
NATOMIC_API const char *natomic_url_redacted(char *buf, size_t cap, const char *url);

/* ------------------------------------------------------------------ */
/* Call context and commands                                           */
/* ------------------------------------------------------------------ */

typedef struct natomic_ctx natomic_ctx_t;
typedef struct natomic_service natomic_service_t;

/*
 * A command: run with the context of the call that registered it (still
 * valid while commands run). Returns NATOMIC_OK or a failure, after which
 * the command is retried by the retry policy. It may run several times
 * (retries), so it should be idempotent; `arg` is freed with `free_arg`
 * (if not NULL) exactly once, when the call ends, whether the command ran
 * or not. If registering fails, `free_arg(arg)` has already been called.
 */
typedef natomic_status_t (*natomic_command_fn)(natomic_ctx_t *ctx, void *arg);
typedef void (*natomic_free_fn)(void *arg);

/* Registers a rollback command at the end of the list (it runs first). */
NATOMIC_API natomic_status_t natomic_rollback_append(natomic_ctx_t *ctx, const char *name,
                                                     natomic_command_fn fn, void *arg,
                                                     natomic_free_fn free_arg);
/* Inserts at `index` (0..count), like Python's list.insert; EINVAL outside. */
NATOMIC_API natomic_status_t natomic_rollback_insert(natomic_ctx_t *ctx, size_t index, const char *name,
                                                     natomic_command_fn fn, void *arg,
                                                     natomic_free_fn free_arg);
/* Drops every registered rollback command (their args are freed). */
NATOMIC_API natomic_status_t natomic_rollback_clear(natomic_ctx_t *ctx);
NATOMIC_API size_t natomic_rollback_count(const natomic_ctx_t *ctx);

NATOMIC_API natomic_status_t natomic_dispatch_append(natomic_ctx_t *ctx, const char *name,
                                                     natomic_command_fn fn, void *arg,
                                                     natomic_free_fn free_arg);
NATOMIC_API natomic_status_t natomic_dispatch_insert(natomic_ctx_t *ctx, size_t index, const char *name,
                                                     natomic_command_fn fn, void *arg,
                                                     natomic_free_fn free_arg);
NATOMIC_API natomic_status_t natomic_dispatch_clear(natomic_ctx_t *ctx);
NATOMIC_API size_t natomic_dispatch_count(const natomic_ctx_t *ctx);

/*
 * Registers a dispatch command that publishes `event` (packed now: the
 * message may be freed on return) on "events.<service>.<type>" with the
 * headers Natomic-Tx, Natomic-Call-Id, Natomic-Event-Id, Natomic-Event-Type
 * and Nats-Msg-Id (= the event id, for JetStream's duplicate window).
 * Memory mode: published on core NATS after the call succeeded. Durable
 * mode: written to the outbox by natomic_durable_commit() (or the
 * runtime's commit after the handler), then published to the EVENTS
 * stream with an ack; one that cannot be published waits in the outbox
 * for the relay (the reply then says Natomic-Dispatch: incomplete).
 * ESTATE after natomic_durable_commit(): the outbox is written.
 */
NATOMIC_API natomic_status_t natomic_dispatch_event(natomic_ctx_t *ctx, const char *type,
                                                    const ProtobufCMessage *event);

/*
 * Registers a rollback command that calls `subject` with `request` (packed
 * now) inside this transaction -- a compensation in another service. The
 * command succeeds when the remote call succeeds.
 */
NATOMIC_API natomic_status_t natomic_rollback_request(natomic_ctx_t *ctx, const char *subject,
                                                      const ProtobufCMessage *request);

/*
 * Fails the call: records the error kind (NATOMIC_EBADINPUT ..
 * NATOMIC_EINTERNAL), its type (e.g. "InvalidLength"; copied, at most 63
 * bytes) and a printf-style message (at most 255 bytes). Returns `kind`, so a handler can write
 *     return natomic_fail(ctx, NATOMIC_EBUSINESS, "OutOfStock", "only %d left", n);
 */
NATOMIC_API natomic_status_t natomic_fail(natomic_ctx_t *ctx, natomic_status_t kind, const char *type,
                                          const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Context accessors. Strings are owned by the context: valid during the call. */
NATOMIC_API const char *natomic_ctx_tx(const natomic_ctx_t *ctx);
NATOMIC_API const char *natomic_ctx_call_id(const natomic_ctx_t *ctx);
NATOMIC_API const char *natomic_ctx_parent_id(const natomic_ctx_t *ctx); /* "" when none */
NATOMIC_API const char *natomic_ctx_method(const natomic_ctx_t *ctx);
/* The Natomic-Event-Id of the event being handled; "" in a method call. */
NATOMIC_API const char *natomic_ctx_event_id(const natomic_ctx_t *ctx);
NATOMIC_API natomic_service_t *natomic_ctx_service(const natomic_ctx_t *ctx);
NATOMIC_API natsConnection *natomic_ctx_connection(const natomic_ctx_t *ctx);
/* Milliseconds left before the caller's deadline (<= 0: exceeded; INT64_MAX: the caller set none). */
NATOMIC_API int64_t natomic_ctx_remaining_ms(const natomic_ctx_t *ctx);
/* Memory that lives until the call ends (after every command ran). NULL on OOM. */
NATOMIC_API void *natomic_ctx_alloc(natomic_ctx_t *ctx, size_t size);
NATOMIC_API char *natomic_ctx_strdup(natomic_ctx_t *ctx, const char *s);

/* ------------------------------------------------------------------ */
/* Remote calls                                                        */
/* ------------------------------------------------------------------ */

/* What a failed call said. Strings are truncated to fit. */
typedef struct natomic_call_info {
    natomic_status_t kind;        /* NATOMIC_OK for a success reply                 */
    int code;                     /* Nats-Service-Error-Code, 0 on success          */
    char type[64];                /* Natomic-Error-Type, "" on success              */
    char message[256];            /* Nats-Service-Error, "" on success              */
    natomic_outcome_t rollback;   /* Natomic-Rollback of the reply                  */
    natomic_outcome_t dispatch;   /* Natomic-Dispatch of the reply                  */
    bool replayed;                /* Natomic-Replayed: the stored outcome of an
                                     earlier call with the same idempotency key    */
} natomic_call_info_t;

/*
 * Calls `subject` with `request` and waits at most `timeout_ms` for the
 * reply, decoded as `reply_desc`. On NATOMIC_OK, *reply is the decoded
 * message: free it with protobuf_c_message_free_unpacked(*reply, NULL).
 * A remote failure returns its kind (NATOMIC_EBUSINESS, ...) and fills
 * `info` (may be NULL) with code, type and message. NATOMIC_ETIMEOUT means
 * no reply came in time: the callee may still have committed.
 */
NATOMIC_API natomic_status_t natomic_request(ProtobufCMessage **reply, natsConnection *nc, const char *subject,
                                             const ProtobufCMessage *request,
                                             const ProtobufCMessageDescriptor *reply_desc, int64_t timeout_ms,
                                             natomic_call_info_t *info);

/*
 * natomic_request() with the header Natomic-Idempotency-Key: `key` (1 to
 * 128 printable ASCII characters, no spaces; NULL or "" sends none). A
 * service answers a repeated key for the same method with the first
 * call's outcome -- its reply or its error, `info->replayed` set -- and
 * runs nothing again; while the first call still runs, the answer is an
 * error of kind NATOMIC_ETRANSIENT and type "InProgress". Keys expire
 * after the service's retention (natomic_service_config_t).
 */
NATOMIC_API natomic_status_t natomic_request_idempotent(ProtobufCMessage **reply, natsConnection *nc,
                                                        const char *subject, const ProtobufCMessage *request,
                                                        const ProtobufCMessageDescriptor *reply_desc,
                                                        int64_t timeout_ms, const char *key,
                                                        natomic_call_info_t *info);

/*
 * The same from inside a handler or a command: propagates Natomic-Tx, the
 * call-id chain and the remaining deadline (the timeout: what is left, less
 * a tenth of it up to 200 ms, kept to compensate and still answer the
 * caller in time), and remembers a
 * remote failure so that a handler returning its status without calling
 * natomic_fail() replies with the remote error type and message.
 */
NATOMIC_API natomic_status_t natomic_ctx_request(ProtobufCMessage **reply, natomic_ctx_t *ctx, const char *subject,
                                                 const ProtobufCMessage *request,
                                                 const ProtobufCMessageDescriptor *reply_desc,
                                                 natomic_call_info_t *info);

/*
 * The saga step (DESIGN 3.4): registers `compensation_request` on
 * `compensation_subject` as a rollback command FIRST, then calls
 * `subject` like natomic_ctx_request(). "Reserve, and if anything later
 * fails, release": even when the forward call times out (the callee may
 * have committed) the compensation is registered, so a failing call
 * compensates it; the callee's barrier makes a compensation for an action
 * that never ran harmless. When nobody received the action
 * (NATOMIC_ENORESPONDERS) it certainly did not run, and its compensation
 * is dropped again. Needs NATOMIC_ROLLBACK_ONCE_FAILED on the method
 * (else NATOMIC_ENOTENABLED and nothing is sent). On any failure `info`
 * (may be NULL) says what happened.
 */
NATOMIC_API natomic_status_t natomic_saga_step(ProtobufCMessage **reply, natomic_ctx_t *ctx, const char *subject,
                                               const ProtobufCMessage *request,
                                               const ProtobufCMessageDescriptor *reply_desc,
                                               const char *compensation_subject,
                                               const ProtobufCMessage *compensation_request,
                                               natomic_call_info_t *info);

/* ------------------------------------------------------------------ */
/* Durable commands and the local commit (DESIGN 3.7)                  */
/* ------------------------------------------------------------------ */

struct sqlite3;

/*
 * A named command: what a rollback becomes when it must survive a crash.
 * A function pointer does not outlive its process, so the saga log keeps
 * a name and a byte payload instead, and any instance of the service --
 * the one that registered it, or the one that recovers the saga after a
 * crash -- looks the name up in its registry and calls `fn` with the
 * bytes (borrowed: valid during the call) and the `closure` given at
 * registration. The context carries the saga's transaction and call ids
 * (natomic_ctx_tx, natomic_ctx_call_id), not always the original
 * process. It may run several times (retries, a crash during it), so it
 * must be idempotent.
 */
typedef natomic_status_t (*natomic_durable_fn)(natomic_ctx_t *ctx, const void *data, size_t len, void *closure);

/*
 * Registers `fn` under `name` (1..63 chars of [A-Za-z0-9_.-]) before
 * natomic_service_start(). EEXIST for a name already registered, ESTATE
 * once started. Every instance of a service must register the same names.
 */
NATOMIC_API natomic_status_t natomic_command_register(natomic_service_t *svc, const char *name, natomic_durable_fn fn,
                                                      void *closure);

/*
 * Registers the named command `name` with a copy of `data` (`len` bytes,
 * at most 64 KiB) as a rollback command of this call, at the end of the
 * list (it runs first) or at `index`. In durable mode the saga log is
 * written before this returns: on NATOMIC_ELOG (the log could not be
 * written) nothing was registered and the handler should fail the call --
 * what was registered before still runs. In memory mode it is an ordinary
 * rollback command. EINVAL for a name that was never registered.
 */
NATOMIC_API natomic_status_t natomic_rollback_append_durable(natomic_ctx_t *ctx, const char *name, const void *data,
                                                             size_t len);
NATOMIC_API natomic_status_t natomic_rollback_insert_durable(natomic_ctx_t *ctx, size_t index, const char *name,
                                                             const void *data, size_t len);

/*
 * Durable mode: writes, inside the caller's open transaction on the
 * service's store (`db` must be natomic_service_config_t.store, between
 * BEGIN and COMMIT, as the last write of a call that will succeed), what
 * must commit together with the business change:
 *   - the call's decision "committed", which tells recovery not to
 *     compensate this saga after a crash (and which recovery's "aborted"
 *     excludes: then NATOMIC_ENOTOWNER, and the caller must roll back and
 *     fail the call -- recovery compensates it);
 *   - the events registered so far with natomic_dispatch_event(), into the
 *     outbox: they are published after the commit, and by the relay after
 *     a crash;
 *   - with an idempotency key, the reply as the handler filled it so far
 *     (fill the reply before calling this).
 * A successful call that never calls it gets the same written by the
 * runtime in a transaction of its own after the handler returned. In
 * memory mode it does nothing and returns NATOMIC_OK, so one handler
 * serves both modes. Call it at most once per call (ESTATE after).
 */
NATOMIC_API natomic_status_t natomic_durable_commit(natomic_ctx_t *ctx, struct sqlite3 *db);

/* ------------------------------------------------------------------ */
/* Barrier: idempotent participants over SQLite (DESIGN 3.6)           */
/* ------------------------------------------------------------------ */

typedef enum natomic_barrier_op {
    NATOMIC_BARRIER_ACTION = 0,     /* e.g. reserve, charge      */
    NATOMIC_BARRIER_COMPENSATION    /* e.g. release, refund      */
} natomic_barrier_op_t;

typedef enum natomic_barrier_outcome {
    NATOMIC_BARRIER_EXECUTED = 0,      /* the body ran and committed with the barrier row */
    NATOMIC_BARRIER_DUPLICATE,         /* this op already ran for (tx, branch): skipped    */
    NATOMIC_BARRIER_NULL_COMPENSATION, /* compensation before its action: recorded, no-op  */
    NATOMIC_BARRIER_REFUSED_LATE,      /* action after its compensation: refused          */
    NATOMIC_BARRIER_OUTCOME_COUNT_
} natomic_barrier_outcome_t;

/* "executed", "duplicate", "null_compensation", "refused_late"; static storage. */
NATOMIC_API const char *natomic_barrier_outcome_name(natomic_barrier_outcome_t outcome);

/* The body of a barrier-protected operation: runs inside the transaction. */
typedef natomic_status_t (*natomic_barrier_body_fn)(struct sqlite3 *db, void *arg);

/* Creates the barrier table (natomic_barrier) in `db` if missing. */
NATOMIC_API natomic_status_t natomic_barrier_init(struct sqlite3 *db);

/*
 * Runs `body` at most once for (transaction of ctx, branch, op), inside
 * one SQLite transaction (BEGIN IMMEDIATE, holding the connection's mutex:
 * a connection opened with SQLITE_OPEN_FULLMUTEX can then be shared by the
 * workers; any other connection must not be) together with the barrier
 * row, inserted with INSERT OR IGNORE only:
 *   - a duplicate action or compensation is skipped;
 *   - a compensation whose action never ran records that and does nothing
 *     (and so blocks that action for good);
 *   - an action arriving after its compensation is refused.
 * Returns NATOMIC_OK with *outcome set, or the body's failure (the whole
 * transaction, barrier row included, is rolled back, *outcome unset), or
 * NATOMIC_ETRANSIENT when SQLite fails. On every failure the call's error
 * is already recorded (the body's natomic_fail, or "StorageError" /
 * "InjectedFault" from the barrier): the handler just returns the status. Outcomes are logged and counted in
 * the service's stats. The body must not call other services.
 */
NATOMIC_API natomic_status_t natomic_barrier_run(natomic_barrier_outcome_t *outcome, natomic_ctx_t *ctx,
                                                 struct sqlite3 *db, const char *branch, natomic_barrier_op_t op,
                                                 natomic_barrier_body_fn body, void *arg);

/* Deletes barrier rows older than `retention_s` seconds; *removed (may be NULL) gets the count. */
NATOMIC_API natomic_status_t natomic_barrier_sweep(int64_t *removed, struct sqlite3 *db, int64_t retention_s);

/* ------------------------------------------------------------------ */
/* Service                                                             */
/* ------------------------------------------------------------------ */

/* Method flags, combinable (the Python decorators). */
enum {
    NATOMIC_ROLLBACK_ONCE_FAILED = 1u << 0,
    NATOMIC_DISPATCH_AFTER_COMMIT = 1u << 1
};

/*
 * A handler. `request` is decoded (borrowed until the call ends); `reply`
 * is a zeroed message of the method's reply type, owned by the runtime:
 * set its fields and return NATOMIC_OK. Memory the reply points to must
 * outlive the handler: use natomic_ctx_alloc(). Any other return value
 * fails the call (natomic_fail() says how).
 */
typedef natomic_status_t (*natomic_handler_fn)(natomic_ctx_t *ctx, const ProtobufCMessage *request,
                                               ProtobufCMessage *reply, void *closure);

typedef struct natomic_retry_policy {
    int attempts;      /* total attempts per command, >= 1 (default 3)     */
    int base_ms;       /* first backoff delay (default 20)                 */
    int cap_ms;        /* largest backoff delay (default 1000)             */
} natomic_retry_policy_t;

/*
 * Where a service keeps what must survive (DESIGN 3.7):
 *   memory   the nameko-atomicity model: command lists live in the
 *            process; a crash mid-call loses its rollbacks and events;
 *   durable  the saga log in JetStream KV, recovery by any instance, the
 *            outbox with acknowledged publishes to the EVENTS stream, and
 *            durable consumers for event handlers. Needs JetStream.
 */
typedef enum natomic_mode {
    NATOMIC_MODE_MEMORY = 0,
    NATOMIC_MODE_DURABLE
} natomic_mode_t;

/* "memory", "durable"; static storage. */
NATOMIC_API const char *natomic_mode_name(natomic_mode_t mode);
/* Reads "memory" or "durable"; EINVAL (and *out untouched) for anything else. */
NATOMIC_API natomic_status_t natomic_mode_parse(natomic_mode_t *out, const char *text);

typedef struct natomic_service_config {
    const char *name;          /* required: [A-Za-z0-9_-]+, the subject prefix      */
    const char *version;       /* semantic version, default "0.1.0"                 */
    const char *description;   /* optional                                          */
    int max_workers;           /* calls handled at once, default 10 (0: default)    */
    natomic_retry_policy_t retry; /* zeros: defaults                                */
    natomic_mode_t mode;       /* default (0) memory                                */
    /*
     * The SQLite connection where the service keeps its state (borrowed,
     * opened with SQLITE_OPEN_FULLMUTEX, outliving the service), or NULL.
     * The library keeps its tables there (natomic_*: outbox, idempotency
     * keys, saga decisions) and sweeps old barrier rows on a schedule.
     * Durable mode needs it for any method flagged rollback or dispatch.
     * Without it, idempotency keys live in the process (memory mode).
     */
    struct sqlite3 *store;
    /*
     * This instance's name in the saga log, [A-Za-z0-9_-]{1,64}; NULL: a
     * random one. Give a restarted process the name it had before and it
     * takes its own unfinished sagas over at once; otherwise they wait for
     * the old lease to expire.
     */
    const char *instance;
    int lease_ms;              /* an instance's lease on its sagas, default 2000    */
    int recovery_interval_ms;  /* scan for orphaned sagas and outbox leftovers, default 500 */
    int64_t idempotency_retention_s; /* how long a key replays, default 86400 (1 day) */
    int64_t barrier_retention_s;     /* barrier rows older are swept, default 604800 (7 days) */
} natomic_service_config_t;

/*
 * Creates a service on the connection `nc` (borrowed: it must outlive the
 * service; make it with natomic_connect() so replies leave at once).
 * The config is copied. Free with natomic_service_destroy().
 */
NATOMIC_API natomic_status_t natomic_service_new(natomic_service_t **out, natsConnection *nc,
                                                 const natomic_service_config_t *config);

/*
 * Adds `<service>.<name>` before natomic_service_start(). Descriptors are
 * borrowed (generated code: static). `closure` is passed to the handler.
 * EEXIST for a duplicate name, ESTATE once started.
 */
NATOMIC_API natomic_status_t natomic_service_add_method(natomic_service_t *svc, const char *name,
                                                        natomic_handler_fn handler, unsigned flags,
                                                        const ProtobufCMessageDescriptor *request_desc,
                                                        const ProtobufCMessageDescriptor *reply_desc,
                                                        void *closure);

/*
 * An event handler: `event` is decoded (borrowed until it returns). The
 * context carries the event's transaction (natomic_ctx_tx) and id
 * (natomic_ctx_event_id); commands cannot be registered on it. Returning a
 * failure logs it and counts it in the stats. In memory mode the event is
 * not redelivered (core NATS). In durable mode it comes from a durable
 * JetStream consumer with explicit ack: a failure is redelivered after a
 * backoff, up to 5 deliveries, then dead-lettered; an event published
 * while no instance ran is delivered when one comes back. Either way a
 * handler must be idempotent by event id.
 */
typedef natomic_status_t (*natomic_event_fn)(natomic_ctx_t *ctx, const ProtobufCMessage *event, void *closure);

/*
 * Consumes "events.<source>.<type>" before natomic_service_start(); each
 * event reaches one instance (memory: queue group = this service's name;
 * durable: the consumer "<service>-<source>-<type>" on the EVENTS stream).
 */
NATOMIC_API natomic_status_t natomic_service_add_event_handler(natomic_service_t *svc, const char *source,
                                                               const char *type, natomic_event_fn handler,
                                                               const ProtobufCMessageDescriptor *event_desc,
                                                               void *closure);

/*
 * Subscribes (queue group = service name), answers $SRV discovery, starts
 * the workers. With NATOMIC_TRACE=1 in the environment, a copy of each call
 * and reply also goes to natomic.trace.{call,reply}.<subject> (original
 * headers plus Natomic-Reply-To and Natomic-Time-Ns, the service's clock),
 * for observers such as the lab.
 * Durable mode first checks JetStream (NATOMIC_ENOJETSTREAM, with a log
 * line naming the fix, when the server has none), creates what is missing
 * (KV buckets natomic_saga_<service> and natomic_lease_<service>, the
 * EVENTS stream, the natomic_* tables in the store), takes its lease, and
 * starts looking for unfinished sagas and unpublished events at once, in
 * a thread of its own beside the workers.
 * EINVAL (with a log line) for durable mode without a store when a method
 * is flagged rollback or dispatch.
 */
NATOMIC_API natomic_status_t natomic_service_start(natomic_service_t *svc);

/*
 * Graceful stop: no new calls are taken, calls in flight and already
 * delivered finish (their rollbacks and dispatches included), then the
 * workers end. Blocks until done. Idempotent.
 */
NATOMIC_API natomic_status_t natomic_service_stop(natomic_service_t *svc);

/*
 * Starts the service if needed, then blocks until SIGTERM or SIGINT (or
 * natomic_service_request_stop()), then stops it gracefully. Installs
 * handlers for those two signals for the duration of the call.
 */
NATOMIC_API natomic_status_t natomic_service_run(natomic_service_t *svc);

/* Asks natomic_service_run() to return. Async-signal-safe. */
NATOMIC_API void natomic_service_request_stop(natomic_service_t *svc);

/* Stops (if running) and frees the service. */
NATOMIC_API void natomic_service_destroy(natomic_service_t *svc);

NATOMIC_API const char *natomic_service_name(const natomic_service_t *svc);
/* The instance id reported by $SRV discovery. */
NATOMIC_API const char *natomic_service_id(const natomic_service_t *svc);

/*
 * Counters since start, for the whole service (requests and errors summed
 * over methods, unknown methods included). $SRV.STATS reports requests and
 * errors per endpoint, and these service-wide counters in each endpoint's
 * `data` (the same object on every endpoint: do not sum them).
 */
typedef struct natomic_service_stats {
    uint64_t requests;
    uint64_t errors;
    uint64_t rollbacks_run;        /* rollback commands that succeeded    */
    uint64_t rollbacks_exhausted;  /* dead-lettered rollback commands     */
    uint64_t dispatches_run;
    uint64_t dispatches_exhausted;
    uint64_t retries;              /* extra attempts, all commands        */
    uint64_t dead_letters;         /* = rollbacks_ + dispatches_exhausted */
    uint64_t events_handled;       /* event handler calls that succeeded  */
    uint64_t events_failed;        /* ... failed or could not decode      */
    uint64_t barrier[NATOMIC_BARRIER_OUTCOME_COUNT_]; /* by outcome        */
    /* durable mode */
    uint64_t sagas_logged;         /* calls that wrote a saga log entry   */
    uint64_t log_failures;         /* log writes that failed (ELOG)       */
    uint64_t sagas_recovered;      /* others' sagas this instance claimed and ended */
    uint64_t outbox_relayed;       /* events published by the relay       */
    uint64_t idempotent_replays;   /* calls answered from a stored outcome */
} natomic_service_stats_t;

NATOMIC_API natomic_status_t natomic_service_get_stats(natomic_service_stats_t *out, const natomic_service_t *svc);

/* ------------------------------------------------------------------ */
/* Fault points (DESIGN 3.9)                                           */
/* ------------------------------------------------------------------ */

/*
 * What an enabled fault point asks for. CRASH, DELAY and PAUSE are carried
 * out inside natomic_fault_check() (SIGKILL of the own process; a sleep;
 * holding until the point is disabled or 60 s passed); the caller acts on
 * ERROR, DROP and DUPLICATE, which mean different things at each point
 * (docs/fault-points.md).
 */
typedef enum natomic_fault {
    NATOMIC_FAULT_NONE = 0,
    NATOMIC_FAULT_ERROR = 1,
    NATOMIC_FAULT_CRASH = 2,
    NATOMIC_FAULT_DROP = 3,
    NATOMIC_FAULT_DUPLICATE = 4,
    NATOMIC_FAULT_PAUSE = 5,
    NATOMIC_FAULT_DELAY = 1000 /* libfiu failnum 1000+N: delay N ms */
} natomic_fault_t;

/*
 * Checks the named point (libfiu's fiu_fail). Returns NONE when it is not
 * enabled -- the cheap, common case -- and after a delay or a pause.
 * Points are enabled by NATOMIC_FAULTS at start (see natomic_faults_setup)
 * or at run time with fiu-ctrl, failnum = the action's number above.
 * While the process counts hits (see natomic_faults_setup), the check is
 * the point's next occurrence; a check that fires publishes its trace
 * record before the action is carried out (before a crash: and flushes it,
 * waiting at most 1 s for the server).
 */
NATOMIC_API natomic_fault_t natomic_fault_check(const char *point);

/*
 * Sets up fault injection once per process (natomic_service_start calls
 * it): libfiu, its remote control on $TMPDIR/fiu-ctrl-<pid> (what fiu-ctrl
 * speaks), and the points listed in $NATOMIC_FAULTS, e.g.
 *   NATOMIC_FAULTS="natomic/before_reply=drop@1;inventory/reserve/before_commit=delay:200%0.5"
 * point=action[:ms][#occurrence][@times][%probability], ';'-separated
 * (the suffixes in any order); times defaults to always; probability draws
 * from $NATOMIC_FAULT_SEED (default 1). `#N` fires on the N-th hit of the
 * point in this process only; `#N@M` on hits N to N+M-1 (each drawing
 * the probability, if any).
 * NATOMIC_EINVAL (with a log line naming the entry) for a bad list: no
 * point of that list is enabled then.
 *
 * Hits are counted, per point and process from 1, from this call on when
 * NATOMIC_FAULT_TRACE=1, NATOMIC_FAULT_CONTROL=1 or a non-empty
 * NATOMIC_FAULTS is in the environment; otherwise from the first list
 * natomic_faults_apply() enables. A point is hit each time it is checked,
 * whether it fires or not; several services in one process share the
 * counts. Before this call (or a natomic_faults_apply()) nothing is
 * counted and no rule exists.
 *
 * The trace: with NATOMIC_FAULT_TRACE=1, each hit is published, and
 * without it each hit that fires, as one JSON document on
 * "natomic.trace.fault.<service>.<instance>" (NATOMIC_FAULT_TRACE_PREFIX):
 *   {"service":"orders","instance":"orders-1","incarnation":"<32 hex>",
 *    "pid":4242,"point":"natomic/before_reply","occurrence":3,"seq":17,
 *    "time_ns":1712000000123456789,"fired":null}
 * occurrence: the point's hit number; seq: the process's hit number over
 * all points (both null in a process that counts nothing, for a point
 * fiu-ctrl enabled); time_ns: wall clock of the check; fired: null or
 * "error", "crash", "drop", "duplicate", "pause", "delay" (then also
 * "delay_ms"). One point's records leave in occurrence order. The record
 * goes out on the connection of the service the checking thread works for
 * (the process's only service for other threads; with several services a
 * hit on a thread of none is not published). Hits before the first
 * service started are published when it starts (up to 256).
 */
NATOMIC_API natomic_status_t natomic_faults_setup(void);

/*
 * Applies a list in the NATOMIC_FAULTS syntax now, at run time; the action
 * `off` disables a point ("natomic/before_reply=off", no suffix allowed),
 * also one whose #N has not come yet. A new rule for a point replaces its
 * old one; #N counts from the process's first counted hit, not from this
 * call (a window already passed never fires: logged). NATOMIC_EINVAL with
 * `err` for a bad list (nothing applied). A service started with NATOMIC_FAULT_CONTROL=1 also
 * applies lists sent as requests to "$NATOMIC.FAULTS.<service>" (every
 * instance) and "$NATOMIC.FAULTS.<service>.<instance>" (that instance
 * alone); the reply is "ok" or the error: the lab uses it.
 */
NATOMIC_API natomic_status_t natomic_faults_apply(const char *spec, char *err, size_t errcap);

/* Parses one NATOMIC_FAULTS list without enabling anything (for tools and tests). */
NATOMIC_API natomic_status_t natomic_faults_validate(const char *spec, char *err, size_t errcap);

/*
 * NATOMIC_FAULT(point): the check, or NATOMIC_FAULT_NONE at no cost when
 * built without fault points (meson -Dfault_points=disabled).
 */
#ifdef NATOMIC_NO_FAULT_POINTS
#define NATOMIC_FAULT(point) ((void)(point), NATOMIC_FAULT_NONE)
#else
#define NATOMIC_FAULT(point) natomic_fault_check(point)
#endif

#ifdef __cplusplus
}
#endif

#endif /* NATOMIC_H */
