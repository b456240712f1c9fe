/*
 * natomic_internal.h -- what the subsystems of libnatomic share.
 * Not installed; unit tests include it to reach the command lists.
 */
#ifndef NATOMIC_INTERNAL_H
#define NATOMIC_INTERNAL_H

#include "natomic.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>

/* Internal symbols are hidden from the shared library by default. */
#define NATOMIC_ID_LEN 32 /* hex chars of a 128-bit id */

/* ---- ids.c ------------------------------------------------------ */
/* Writes a new random 128-bit id as 32 hex chars plus NUL into buf[33]. */
void natomic__id_new(char buf[NATOMIC_ID_LEN + 1]);
/* Monotonic clock in milliseconds. */
int64_t natomic__now_ms(void);
/* Wall clock in nanoseconds since the epoch. */
int64_t natomic__wall_ns(void);
void natomic__sleep_ms(int64_t ms);

/* ---- log ---------------------------------------------------------- */
typedef enum { NATOMIC_LOG_ERROR, NATOMIC_LOG_WARN, NATOMIC_LOG_INFO, NATOMIC_LOG_DEBUG } natomic_log_level_t;
void natomic__log(natomic_log_level_t level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- commands.c --------------------------------------------------- */
typedef struct natomic_command {
    char *name;
    natomic_command_fn fn;
    void *arg;
    natomic_free_fn free_arg;
} natomic_command_t;

typedef struct natomic_cmdlist {
    natomic_command_t *items;
    size_t count;
    size_t cap;
} natomic_cmdlist_t;

/* Called once for each command that failed every attempt. */
typedef void (*natomic_exhausted_fn)(natomic_ctx_t *ctx, const char *list_kind, const natomic_command_t *cmd,
                                     int attempts, natomic_status_t last, void *user);

typedef struct natomic_run_report {
    size_t succeeded;
    size_t exhausted;
    size_t retries;
} natomic_run_report_t;

/* Inserts at index (0..count). On failure (EINVAL, ENOMEM) arg is freed and the list unchanged. */
natomic_status_t natomic__cmdlist_insert(natomic_cmdlist_t *list, size_t index, const char *name,
                                         natomic_command_fn fn, void *arg, natomic_free_fn free_arg);
/* Frees every command's arg and empties the list (capacity kept). */
void natomic__cmdlist_clear(natomic_cmdlist_t *list);
void natomic__cmdlist_free(natomic_cmdlist_t *list);
/*
 * Runs every command (in reverse order when `reverse`), each retried by
 * `policy`; never stops at a failure. Returns NONE for an empty list,
 * COMPLETE when all succeeded, INCOMPLETE otherwise. Counts are added to
 * `report` (may be NULL). The list is left as it was (the caller clears it).
 */
natomic_outcome_t natomic__cmdlist_run(natomic_cmdlist_t *list, natomic_ctx_t *ctx, const char *list_kind,
                                       bool reverse, const natomic_retry_policy_t *policy,
                                       natomic_exhausted_fn on_exhausted, void *user,
                                       natomic_run_report_t *report);
/* Fills zero fields of a policy with the defaults (3 attempts, 20 ms, 1000 ms). */
natomic_retry_policy_t natomic__retry_policy_normalize(natomic_retry_policy_t p);
/* Backoff before attempt `attempt` (1-based retry number): min(cap, base * 2^(attempt-1)). */
int64_t natomic__backoff_ms(const natomic_retry_policy_t *p, int attempt);

/* ---- context.c ------------------------------------------------------ */
typedef struct natomic_arena_block natomic_arena_block_t;

struct natomic_ctx {
    natomic_service_t *svc;     /* NULL for a detached context (unit tests)   */
    natsConnection *nc;
    const char *service_name;   /* borrowed from svc                          */
    const char *method_name;    /* borrowed from the method                   */
    unsigned flags;
    char tx[NATOMIC_ID_LEN + 1 + 32];   /* inherited ids may be longer: keep room */
    char call_id[NATOMIC_ID_LEN + 1];
    char parent_id[NATOMIC_ID_LEN + 1 + 32];
    char chain[512];            /* ancestors incl. parent, comma separated      */
    int64_t deadline_ms;        /* monotonic; 0 = none                          */
    natomic_cmdlist_t rollbacks;
    natomic_cmdlist_t dispatches;
    bool failed;                /* natomic_fail() was called                    */
    natomic_status_t fail_kind;
    char fail_type[64];
    char fail_message[256];
    bool has_remote_error;      /* last failed natomic_ctx_request()            */
    natomic_call_info_t remote_error;
    natomic_arena_block_t *arena;
    bool commands_running;      /* registration is refused while lists run     */
    const char *phase;          /* "rollback" or "dispatch" while a list runs   */
    char event_id[NATOMIC_ID_LEN + 1 + 32]; /* set for event handlers          */
};

/* Sets up a context for one call; ids are new unless given. Never fails. */
void natomic__ctx_init(natomic_ctx_t *ctx, natomic_service_t *svc, natsConnection *nc, const char *service_name,
                       const char *method_name, unsigned flags);
/* Frees the command lists and the arena. */
void natomic__ctx_release(natomic_ctx_t *ctx);
/* Copies s into dst[cap] truncating, always NUL-terminated. */
void natomic__copy(char *dst, size_t cap, const char *s);

/* ---- rpc.c ---------------------------------------------------------- */
/* Packs a protobuf message into a malloc'ed buffer (*len set); NULL on OOM. */
uint8_t *natomic__pack(const ProtobufCMessage *msg, size_t *len);
/* Reads the error headers of a reply into info; true when it is an error reply. */
bool natomic__read_reply_headers(natsMsg *reply, natomic_call_info_t *info);
natomic_outcome_t natomic__outcome_parse(const char *s);
/* Raw request with headers from ctx (if any); used by natomic_rollback_request. */
natomic_status_t natomic__request_bytes(natsMsg **reply_out, natsConnection *nc, natomic_ctx_t *ctx,
                                        const char *subject, const void *data, size_t len, int64_t timeout_ms);

/* ---- events.c ------------------------------------------------------- */
/* Logs, counts and publishes a dead letter for an exhausted command. */
void natomic__dead_letter(natomic_ctx_t *ctx, const char *list_kind, const natomic_command_t *cmd, int attempts,
                          natomic_status_t last, void *user);

/* ---- service.c ------------------------------------------------------ */
typedef struct natomic_method natomic_method_t;
struct natomic_method {
    char *name;
    char *subject;
    natomic_handler_fn handler;
    unsigned flags;
    const ProtobufCMessageDescriptor *request_desc;
    const ProtobufCMessageDescriptor *reply_desc;
    void *closure;
    _Atomic uint64_t num_requests;
    _Atomic uint64_t num_errors;
    _Atomic uint64_t processing_ns;
    pthread_mutex_t last_error_mu;
    char last_error[256];
};

#define NATOMIC_DISCOVERY_SUBS 9

typedef struct natomic_event_sub {
    natomic_service_t *svc;
    char *subject;                  /* events.<source>.<type>               */
    natomic_event_fn handler;
    const ProtobufCMessageDescriptor *desc;
    void *closure;
    natsSubscription *sub;
} natomic_event_sub_t;

struct natomic_service {
    char *name;
    char *version;
    char *description;
    char id[NATOMIC_ID_LEN + 1];
    char started_at[64];            /* RFC 3339, UTC                         */
    natsConnection *nc;             /* borrowed                              */
    int max_workers;
    natomic_retry_policy_t retry;
    natomic_method_t *methods;      /* array of n_methods                    */
    size_t n_methods;
    natsSubscription *sub;          /* "<name>.>" in queue group <name>      */
    natsSubscription *discovery[NATOMIC_DISCOVERY_SUBS];
    natsSubscription *fault_control;  /* $NATOMIC.FAULTS.<name>, when enabled  */
    bool trace;                     /* NATOMIC_TRACE=1: copies for observers  */
    pthread_t *workers;
    int n_workers;
    pthread_mutex_t mu;             /* start/stop transitions                */
    bool started;
    bool stopped;
    _Atomic bool stopping;
    int stop_pipe[2];               /* natomic_service_request_stop() writes */
    _Atomic uint64_t unknown_method;
    _Atomic uint64_t rollbacks_run, rollbacks_exhausted;
    _Atomic uint64_t dispatches_run, dispatches_exhausted;
    _Atomic uint64_t retries;
    _Atomic uint64_t events_handled, events_failed;
    _Atomic uint64_t barrier[NATOMIC_BARRIER_OUTCOME_COUNT_];
    natomic_event_sub_t *event_subs; /* array of n_event_subs               */
    size_t n_event_subs;
};


/* ---- discovery.c ---------------------------------------------------- */
natomic_status_t natomic__discovery_start(natomic_service_t *svc);
void natomic__discovery_stop(natomic_service_t *svc);

#endif
