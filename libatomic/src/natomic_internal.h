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
/* The value of a header, or NULL. Owned by the message. */
const char *natomic__header(natsMsg *m, const char *key);
/* True for a short printable token without commas, shorter than cap: safe to copy as an id. */
bool natomic__usable_id(const char *s, size_t cap);
/* Monotonic clock in milliseconds. */
int64_t natomic__now_ms(void);
/* Wall clock in nanoseconds since the epoch. */
int64_t natomic__wall_ns(void);
void natomic__sleep_ms(int64_t ms);

/* ---- log ---------------------------------------------------------- */
typedef enum { NATOMIC_LOG_ERROR, NATOMIC_LOG_WARN, NATOMIC_LOG_INFO, NATOMIC_LOG_DEBUG } natomic_log_level_t;
void natomic__log(natomic_log_level_t level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- fault.c -------------------------------------------------------- */
/*
 * The service runs: hits on its threads are traced on its connection
 * (borrowed until natomic__fault_detach), and what the process hit before
 * any service started is published now. Idempotent.
 */
void natomic__fault_attach(const natomic_service_t *svc);
/* The service stops: nothing more is published for it. Idempotent. */
void natomic__fault_detach(const natomic_service_t *svc);
/* The calling thread works for svc (NULL: none) until told otherwise. */
void natomic__fault_bind_thread(const natomic_service_t *svc);

/* ---- commands.c --------------------------------------------------- */
typedef struct natomic_command {
    char *name;
    natomic_command_fn fn;
    void *arg;
    natomic_free_fn free_arg;
    bool ended;   /* ran to its end (succeeded or dead-lettered): no longer in the saga log */
} natomic_command_t;

typedef struct natomic_cmdlist {
    natomic_command_t *items;
    size_t count;
    size_t cap;
} natomic_cmdlist_t;

/* Called once for each command that failed every attempt. */
typedef void (*natomic_exhausted_fn)(natomic_ctx_t *ctx, const char *list_kind, const natomic_command_t *cmd,
                                     int attempts, natomic_status_t last, void *user);

/* How a command's run ended. */
typedef enum natomic_cmd_end {
    NATOMIC_CMD_DONE = 0,   /* an attempt succeeded                                    */
    NATOMIC_CMD_DEAD,       /* every attempt failed: dead-lettered                     */
    NATOMIC_CMD_DEFERRED    /* every attempt failed, kept for a later round (durable)  */
} natomic_cmd_end_t;

/* What a list run tells its owner, command by command (all may be NULL). */
typedef struct natomic_run_hooks {
    /* A command failed every attempt: dead-letter it (DEAD) or keep it (DEFERRED). NULL: DEAD. */
    natomic_cmd_end_t (*exhausted)(natomic_ctx_t *ctx, const char *list_kind, natomic_command_t *cmd, int attempts,
                                   natomic_status_t last, void *user);
    /* A command's run ended (cmd->ended is already set for DONE and DEAD). */
    void (*finished)(natomic_ctx_t *ctx, const char *list_kind, natomic_command_t *cmd, natomic_cmd_end_t end,
                     void *user);
    /* Asked before each command and each retry: true stops the run there (what is left stays unended). */
    bool (*stop)(natomic_ctx_t *ctx, void *user);
    void *user;
} natomic_run_hooks_t;

typedef struct natomic_run_report {
    size_t succeeded;
    size_t exhausted;   /* dead-lettered */
    size_t deferred;    /* kept for a later round (durable mode) */
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
/*
 * The same with hooks; commands already `ended` are skipped. Returns NONE
 * when nothing ran, COMPLETE when every command that ran succeeded,
 * INCOMPLETE otherwise (dead-lettered or deferred).
 */
natomic_outcome_t natomic__cmdlist_run_hooked(natomic_cmdlist_t *list, natomic_ctx_t *ctx, const char *list_kind,
                                              bool reverse, const natomic_retry_policy_t *policy,
                                              const natomic_run_hooks_t *hooks, natomic_run_report_t *report);
/* Removes the command at index (its arg freed); EINVAL outside the list. */
natomic_status_t natomic__cmdlist_remove(natomic_cmdlist_t *list, size_t index);
/* Fills zero fields of a policy with the defaults (3 attempts, 20 ms, 1000 ms). */
natomic_retry_policy_t natomic__retry_policy_normalize(natomic_retry_policy_t p);
/* Backoff before attempt `attempt` (1-based retry number): min(cap, base * 2^(attempt-1)). */
int64_t natomic__backoff_ms(const natomic_retry_policy_t *p, int attempt);

/* ---- context.c ------------------------------------------------------ */
typedef struct natomic_arena_block natomic_arena_block_t;

/* The saga log's view of one call (durable mode; saga_log.c). */
typedef struct natomic_saga {
    uint64_t revision;          /* of the last version written; 0: nothing logged yet */
    bool lost;                  /* a write found another owner: recovery has it       */
    bool compensating;          /* state COMPENSATING written                         */
    int64_t started_ns;
} natomic_saga_t;

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
    int attempt;                /* while a command runs: its attempt (1..)      */
    int64_t backoff_ms;         /* ... and the wait before it (0 for the first)  */
    char event_id[NATOMIC_ID_LEN + 1 + 32]; /* set for event handlers          */
    /* durable mode and idempotency */
    natomic_saga_t saga;
    char idem_key[129];         /* Natomic-Idempotency-Key of the call, "" none  */
    bool committed;             /* natomic_durable_commit() wrote its rows       */
    ProtobufCMessage *reply;    /* the handler's reply message (idempotency)     */
    bool recovering;            /* a context made by recovery, not by a call     */
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
/* Raw request with headers from ctx (if any) and Natomic-Branch (NULL or "": none). */
natomic_status_t natomic__request_bytes(natsMsg **reply_out, natsConnection *nc, natomic_ctx_t *ctx,
                                        const char *subject, const void *data, size_t len, int64_t timeout_ms,
                                        const char *branch);

/* 1..128 printable ASCII characters, no spaces. */
bool natomic__valid_idempotency_key(const char *key);
/* natomic_ctx_request() with a Natomic-Branch header (NULL: none). */
natomic_status_t natomic__ctx_request_branch(ProtobufCMessage **reply, natomic_ctx_t *ctx, const char *subject,
                                             const ProtobufCMessage *request,
                                             const ProtobufCMessageDescriptor *reply_desc, const char *branch,
                                             natomic_call_info_t *info);
/* Sets the headers of a call made from ctx (tx, call ids, caller, phase) and the deadline. */
natsStatus natomic__set_call_headers(natsMsg *m, natomic_ctx_t *ctx, int64_t timeout_ms);

/* ---- events.c ------------------------------------------------------- */
/* Logs, counts and publishes a dead letter for an exhausted command. */
void natomic__dead_letter(natomic_ctx_t *ctx, const char *list_kind, const natomic_command_t *cmd, int attempts,
                          natomic_status_t last, void *user);

/* ---- compensation.c -------------------------------------------------- */
/* A compensation: a request to another service, or a named command of this one. */
typedef enum natomic_comp_kind { NATOMIC_COMP_REMOTE = 0, NATOMIC_COMP_LOCAL = 1 } natomic_comp_kind_t;

typedef struct natomic_comp {
    natomic_comp_kind_t kind;
    char subject[256];          /* REMOTE                                  */
    char command[64];           /* LOCAL: the registered name              */
    char branch[48];            /* Natomic-Branch, "" when none            */
    uint8_t *data;
    size_t len;
    uint32_t attempts;          /* failed attempts, over every round       */
} natomic_comp_t;

/* The command function of every compensation: its arg is a natomic_comp_t. */
natomic_status_t natomic__comp_run(natomic_ctx_t *ctx, void *arg);
/* A new compensation owning a copy of data; NULL on OOM. Free with natomic__comp_free. */
natomic_comp_t *natomic__comp_new(natomic_comp_kind_t kind, const char *target, const char *branch,
                                  const void *data, size_t len);
void natomic__comp_free(void *comp);
/* natomic_rollback_request() with a Natomic-Branch (the saga step's). */
natomic_status_t natomic__rollback_request_branch(natomic_ctx_t *ctx, const char *subject,
                                                  const ProtobufCMessage *request, const char *branch);
/* True when cmd is a compensation (its arg a natomic_comp_t). */
bool natomic__is_comp(const natomic_command_t *cmd);

/* An event waiting to be published (dispatch command publish_event). */
typedef struct natomic_event {
    char subject[256];
    char type[64];
    char event_id[NATOMIC_ID_LEN + 1];
    uint8_t *data;
    size_t len;
} natomic_event_t;

/* The event of a dispatch command, or NULL when cmd is not an event. */
const natomic_event_t *natomic__event_of(const natomic_command_t *cmd);

/* ---- mode.c / command_registry.c -------------------------------------- */
typedef struct natomic_named_command {
    char name[64];
    natomic_durable_fn fn;
    void *closure;
} natomic_named_command_t;

/* The registered command of that name, or NULL. */
const natomic_named_command_t *natomic__registry_find(const natomic_service_t *svc, const char *name);
void natomic__registry_free(natomic_service_t *svc);

/* ---- barrier.c ------------------------------------------------------ */
/* The statements the barrier keeps on a service's store (BEGIN, the row
   insert, the reason lookup, COMMIT, ROLLBACK). */
#define NATOMIC_BARRIER_STMT_COUNT_ 5
/* Finalizes them; natomic_service_destroy calls it, before the store is closed. */
void natomic__barrier_forget(natomic_service_t *svc);

/* ---- service.c ------------------------------------------------------ */
/* The public key (U...) of the user nkey seed in seed_file (nkey.c); NATOMIC_EINVAL with a message that never quotes the seed. */
natomic_status_t natomic__nkey_public(const char *seed_file, char *pub, size_t cap, char *err, size_t errcap);

/*
 * Reads a request's Natomic-Deadline-Ms (`h`, NULL when absent) at `now_ms`:
 * 0 with *deadline_ms the absolute deadline (0: none), the budget capped at
 * NATOMIC_MAX_BUDGET_MS; 1 when the budget is already spent (<= 0); -1 when
 * it is not a number. Any client chooses `h`: tests/fuzz feeds it.
 */
int natomic__parse_deadline(const char *h, int64_t now_ms, int64_t *deadline_ms);

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
    char *durable;                  /* consumer name (durable mode)          */
    natomic_event_fn handler;
    const ProtobufCMessageDescriptor *desc;
    void *closure;
    natsSubscription *sub;
    pthread_t thread;               /* durable mode: the fetch loop          */
    bool thread_started;
} natomic_event_sub_t;

typedef struct natomic_durable natomic_durable_t;

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
    natsSubscription *fault_control_instance; /* $NATOMIC.FAULTS.<name>.<instance> */
    bool trace;                     /* NATOMIC_TRACE=1: copies for observers  */
    char inbox_prefixes[256];       /* where replies may go: NATOMIC_INBOX_PREFIXES, else "_INBOX." */
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
    /* barrier.c's statements on `store`, prepared once and used only under
       the connection's mutex; finalized by natomic_service_destroy */
    struct sqlite3_stmt *barrier_stmts[NATOMIC_BARRIER_STMT_COUNT_];
    natomic_event_sub_t *event_subs; /* array of n_event_subs               */
    size_t n_event_subs;
    /* durable mode, idempotency, housekeeping */
    natomic_mode_t mode;
    struct sqlite3 *store;          /* borrowed, may be NULL                 */
    struct sqlite3 *idem_db;        /* store (durable) or a private :memory: */
    bool own_idem_db;
    char instance[65];
    char incarnation[NATOMIC_ID_LEN + 1];
    int lease_ms;
    int recovery_interval_ms;
    int64_t idempotency_retention_s;
    int64_t barrier_retention_s;
    natomic_named_command_t *commands; /* the registry, n_commands            */
    size_t n_commands;
    natomic_durable_t *durable;     /* NULL in memory mode                   */
    pthread_t housekeeping_thread;
    bool housekeeping_started;
    pthread_mutex_t housekeeping_mu;
    pthread_cond_t housekeeping_cond;
    _Atomic bool stopping_housekeeping;
    _Atomic bool stopping_events;
    _Atomic uint64_t sagas_logged, log_failures, sagas_recovered, outbox_relayed, idempotent_replays;
};

/* True when the service runs in durable mode (and its durable state is up). */
bool natomic__durable(const natomic_service_t *svc);


/* Sends a reply (success or error) with the outcome headers; `replayed` adds Natomic-Replayed. */
void natomic__send_reply(natomic_service_t *svc, natsMsg *req, const char *tx, const void *data, size_t len,
                         natomic_status_t kind, const char *type, const char *message, natomic_outcome_t rollback,
                         natomic_outcome_t dispatch, bool replayed);

/* ---- discovery.c ---------------------------------------------------- */
natomic_status_t natomic__discovery_start(natomic_service_t *svc);
void natomic__discovery_stop(natomic_service_t *svc);

/* ---- saga_log.c: the saga record of a call in JetStream KV ---------------- */
/*
 * Writes the call's saga record: its compensations still to run (the
 * rollback list's compensations not yet ended), created on the first
 * write, then replaced by compare-and-set on the last revision. OK; ELOG
 * when the write failed (nothing changed); ENOTOWNER when another
 * instance took the saga over (ctx->saga.lost set).
 */
natomic_status_t natomic__saga_write(natomic_ctx_t *ctx);
/* Deletes the record (by its revision: no marker left). OK also when there was none. */
natomic_status_t natomic__saga_delete(natomic_ctx_t *ctx);
/* Registers cmd (already inserted at index) in the log; on failure removes it again. */
natomic_status_t natomic__saga_logged_insert(natomic_ctx_t *ctx, size_t index);

/* ---- idempotency.c ------------------------------------------------------------- */
typedef enum natomic_idem_state {
    NATOMIC_IDEM_NEW = 0,     /* no key, or the key is this call's now: run it        */
    NATOMIC_IDEM_ANSWERED     /* a reply was sent (stored outcome, InProgress, bad key) */
} natomic_idem_state_t;

natomic_status_t natomic__idem_open(natomic_service_t *svc);
void natomic__idem_close(natomic_service_t *svc);
/* Before the handler: claims the key for this call, or answers from what is stored. */
natomic_idem_state_t natomic__idem_begin(natomic_service_t *svc, natomic_ctx_t *ctx, natsMsg *request);
/* After the reply was decided: stores the outcome of the call that owns the key. */
void natomic__idem_finish(natomic_service_t *svc, natomic_ctx_t *ctx, int code, const char *type,
                          const char *message, natomic_outcome_t rollback, natomic_outcome_t dispatch,
                          const void *reply, size_t len);
/* Inside the commit transaction: the outcome "done" with the reply as it is now. */
natomic_status_t natomic__idem_commit(natomic_ctx_t *ctx, struct sqlite3 *db);
/* Recovery ended a saga: the key (if any) replays "Interrupted" from now on. */
void natomic__idem_interrupted(natomic_service_t *svc, const char *method, const char *key, const char *call_id,
                               natomic_outcome_t rollback, const char *text);
/* Deletes expired keys; the number removed or -1. */
int64_t natomic__idem_sweep(natomic_service_t *svc);

/* ---- outbox.c ------------------------------------------------------------------- */
natomic_status_t natomic__outbox_init(struct sqlite3 *db);
/* Inside the commit transaction: every event of ctx's dispatch list into the outbox. */
natomic_status_t natomic__outbox_write(natomic_ctx_t *ctx, struct sqlite3 *db);
/* Publishes one event to the EVENTS stream and waits for the ack (durable). */
natomic_status_t natomic__outbox_publish(natomic_service_t *svc, natomic_ctx_t *ctx, const natomic_event_t *e,
                                         const char *tx, const char *call_id);
/* Removes a published event's row. */
void natomic__outbox_delete(natomic_service_t *svc, const char *event_id);
/* Publishes rows older than grace_ms; how many were published, or -1 when it stopped on an error. */
int natomic__outbox_relay(natomic_service_t *svc, int64_t grace_ms);

/* ---- decisions (outbox.c): the saga's outcome, decided once in the store ------- */
/* In the commit transaction: "committed"; ENOTOWNER when recovery decided "aborted". */
natomic_status_t natomic__decision_commit(struct sqlite3 *db, const char *call_id);
/* Recovery: decides "aborted" unless "committed" stands; *committed says which. */
natomic_status_t natomic__decision_abort(struct sqlite3 *db, const char *call_id, bool *committed);

/* ---- durable.c: start, stop, JetStream handles ------------------------------------ */
natomic_status_t natomic__durable_start(natomic_service_t *svc);
void natomic__durable_stop(natomic_service_t *svc);
/* In-flight calls of this process that own a saga record (not recovery's to take). */
void natomic__inflight_add(natomic_service_t *svc, const char *call_id);
void natomic__inflight_remove(natomic_service_t *svc, const char *call_id);
bool natomic__inflight_has(natomic_service_t *svc, const char *call_id);

/* ---- lease.c --------------------------------------------------------------------- */
natomic_status_t natomic__lease_renew(natomic_service_t *svc);
void natomic__lease_release(natomic_service_t *svc);
/* 1 when instance/incarnation holds a live lease, 0 when not, -1 when it cannot be told. */
int natomic__lease_alive(natomic_service_t *svc, const char *instance, const char *incarnation);

/* ---- recovery.c ------------------------------------------------------------------- */
/* One round: claims orphaned sagas and ends them; retries this instance's deferred ones. */
void natomic__recovery_round(natomic_service_t *svc);
/* The hooks the runtime and recovery share for a rollback list in durable mode. */
extern const natomic_run_hooks_t natomic__durable_rollback_hooks;
/* Publishes a recovery event (JSON) on natomic.recovery.<service>. */
void natomic__recovery_event(natomic_service_t *svc, const char *what, const char *call_id, const char *tx,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- event_consumer.c --------------------------------------------------------------- */
natomic_status_t natomic__event_consumers_start(natomic_service_t *svc);
void natomic__event_consumers_stop(natomic_service_t *svc);
/* Runs one event through its handler (both modes); the status of the handler. */
natomic_status_t natomic__event_handle(natomic_event_sub_t *es, natsMsg *msg);

/* ---- housekeeping.c ----------------------------------------------------------------- */
natomic_status_t natomic__housekeeping_start(natomic_service_t *svc);
void natomic__housekeeping_stop(natomic_service_t *svc);
/* One round of sweeps (barrier, idempotency keys, decisions); logged. */
void natomic__housekeeping_round(natomic_service_t *svc);

#endif
