/*
 * scenario.h -- a scenario file (DESIGN 4.3), parsed and validated.
 *
 * A scenario is a story with faults and expectations, written in YAML:
 *
 *   about: >                      # required: what it teaches
 *     A declined payment releases the reservation.
 *   mode: memory                  # memory (default) | durable (saga log, recovery, outbox)
 *   nats: single                  # single (default): one nats-server | cluster: three nodes,
 *                                 # routes and clients through fault proxies, R3 in durable mode
 *                                 # | secure: deploy/'s config, an identity per service, TLS
 *     - {call: payments.refund, as: client, request: {...}, timeout: 500,
 *        expect: {refused: true}}  # secure: the server refuses it (or nobody may answer)
 *     - {subscribe: "payments.>", queue: payments, as: client, expect: {refused: true}}
 *     - {publish: "$NATOMIC.FAULTS.payments", payload: "x=crash", as: client,
 *        expect: {refused: true}}
 *   seed: 42                      # default random seed (--seed overrides)
 *   services: [inventory, payments, orders, notifications]
 *                                 # or a map: {orders: {instances: 2}, payments: 1}
 *   faults:                       # enabled after seed_data ($NATOMIC.FAULTS.<service>)
 *     - {service: payments, point: natomic/before_handler, action: error,
 *        times: 1, probability: 0.5}      # times: N | always (default); probability optional
 *     - {service: orders, instance: 1, point: orders/create_order/after_charge,
 *        action: crash}           # instance N: that instance alone ($NATOMIC.FAULTS.orders.orders-1)
 *   seed_data:                    # calls made before the story (must succeed)
 *     - {call: inventory.restock, request: {sku: book, qty: 5}}
 *   steps:
 *     - call: orders.create_order
 *       request: {customer: ann, sku: book, qty: 2, amount: 3000}
 *       timeout: 5000             # ms, default 5000
 *       expect: {reply: {status: confirmed}}       # partial match of the reply
 *       # or {error: PaymentDeclined, code: 422, rollback: complete} | {timeout: true} | {any: true}
 *     - call: orders.create_order  # what the call caused, in its own transaction (the lab's Natomic-Tx):
 *       request: {customer: bob, sku: book, qty: 1, amount: 1500}
 *       expect: {error: PaymentDeclined, code: 422,
 *                compensations: [payments.refund, inventory.release],  # in the order they ran
 *                events: [],                                           # [{orders.order_created: {qty: 1}}]
 *                barrier: {payments: {null_compensation: 1}}}          # from its natomic_barrier table
 *       # retry_waits: {payments.refund: [20, 40]}  # the waits before a compensation's retries, ms
 *     - call: orders.create_order
 *       request: {customer: ann, sku: book, qty: 1, amount: 100}
 *       idempotency_key: "ann-{i}" # sent as Natomic-Idempotency-Key; "{i}" templates too
 *       expect: {reply: {status: confirmed}, replayed: true}   # Natomic-Replayed of the reply
 *     - {call: orders.create_order, request: {...}, timeout: 8000, background: true}
 *                                 # the next steps go on at once while this call runs (a kill
 *                                 # mid-call); its outcome is checked when the steps are done
 *     - {call: orders.create_order, repeat: 100, concurrency: 8,
 *        request: {customer: "c{i%5}", sku: book, qty: 1, amount: 100},
 *        expect: {any: true}}     # "{i}" and "{i%N}" in strings take the index
 *     - kill: orders              # SIGKILL        | restart: orders  (same db)
 *     - pause: payments           # SIGSTOP        | resume: payments (SIGCONT)
 *     - {kill: orders, instance: 0}   # one instance only (kill, restart, pause, resume)
 *     - cut: payments             # TCP proxy: close and refuse | blackhole: payments
 *     - {delay_link: payments, ms: 200}            # proxy adds latency
 *     - heal: payments            # proxy back to normal
 *     - restart: nats             # the NATS server restarts (same port, same store)
 *     - kill_node: meta-leader    # nats: cluster only. A node: n1..n3, meta-leader (JetStream's),
 *                                 # leader-of:<stream> (KV_natomic_saga_orders: orders' saga log),
 *                                 # connected-to:<service> -- resolved when the step runs
 *     - cut_node: connected-to:orders   # running, but every route and client link to it cut
 *     - heal_node: all            # restart_node and heal_node: n1..n3, or all (every node down/cut)
 *     - {fault: {service: orders, point: natomic/before_reply, action: drop, times: 1}}
 *                                 # a point of docs/fault-points.md, an action it defines
 *     - {release: {service: orders, point: natomic/before_reply}}   # disable (ends a pause)
 *                                 # fault and release take `instance: N` too
 *     - wait: 200                 # ms
 *   expect:
 *     eventually: 3000            # ms: checks retry until they hold, after the last step
 *     hold: 2000                  # ms: once they hold, they must keep holding this long
 *     state: {stock.book.available: 3, balance.ann: 2000, orders.confirmed: ">= 1"}
 *                                 # a value, or a comparison in quotes: "!= 0", "< 5", ...
 *     events: {orders.order_created: 1, conversions.converted: 0}
 *     compensations: {inventory.release: 1}      # compensation calls seen on the wire
 *     dead_letters: 0             # or a list of partial matches of each dead letter document:
 *                                 # [{command: call payments.refund, attempts: 3}]
 *     barrier: {payments: {null_compensation: 1, duplicate: 0}}   # executed, duplicate,
 *                                 # null_compensation, refused_late over the story
 *     recoveries: 1               # sagas ended by recovery (compensated or incomplete);
 *                                 # mode: durable only
 *     invariants: [stock_conserved, money_conserved, order_atomicity,
 *                  order_created_once, notifications_match]
 *     violations: [order_atomicity]   # invariants this story EXPECTS to break (lessons)
 *
 * Every node keeps its line, so a bad file gets "file:line: reason".
 */
#ifndef SCENARIO_H
#define SCENARIO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum scenario_step_kind {
    STEP_CALL,
    STEP_KILL,
    STEP_RESTART,
    STEP_PAUSE,
    STEP_RESUME,
    STEP_CUT,
    STEP_BLACKHOLE,
    STEP_DELAY_LINK,
    STEP_HEAL,
    STEP_NATS_RESTART,
    STEP_FAULT,
    STEP_RELEASE,
    STEP_WAIT,
    STEP_NODE_KILL,         /* kill_node: <node>     (nats: cluster)                      */
    STEP_NODE_RESTART,      /* restart_node: <node>|all                                   */
    STEP_NODE_CUT,          /* cut_node: <node>                                           */
    STEP_NODE_HEAL,         /* heal_node: <node>|all                                      */
    STEP_SUBSCRIBE,         /* subscribe: <subject> [queue] as <identity>  (nats: secure)  */
    STEP_PUBLISH            /* publish: <subject> [payload] as <identity>  (nats: secure)  */
} scenario_step_kind_t;

/* How an observed value compares with the expected one: `= 3`, `">= 1"`, `"!= 0"`, ... */
typedef enum scenario_cmp { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE } scenario_cmp_t;

/* One expected value, e.g. "stock.book.available" >= 3. */
typedef struct scenario_check {
    char *key;
    scenario_cmp_t op;      /* CMP_EQ unless the value was written "<op> <integer>"   */
    long long value;
    int line;
} scenario_check_t;

/* One entry of an expected sequence: a name, and maybe a partial match of its payload. */
typedef struct scenario_seq_item {
    char *name;             /* "<service>.<method>" (a compensation) or "<service>.<type>" (an event) */
    json_t *fields;         /* {field: value, ...} matched like a reply, or NULL       */
    int line;
} scenario_seq_item_t;

/* An expected sequence: exactly these entries, in this order ([] = none). */
typedef struct scenario_seq {
    bool given;
    scenario_seq_item_t *items;
    size_t n;
    int line;
} scenario_seq_t;

/*
 * The waits before the retries of one compensation: retry_waits:
 * {payments.refund: [20, "40..79"]} -- the k-th entry bounds the wait the
 * caller said it made before attempt k+1 (Natomic-Backoff-Ms), in ms; the
 * runner also requires the participant's clock to show at least that gap.
 */
typedef struct scenario_wait_range {
    long long lo, hi;       /* inclusive, ms; hi = LLONG_MAX: no upper bound           */
    int line;
} scenario_wait_range_t;

typedef struct scenario_waits {
    char *name;             /* "<service>.<method>" of the compensation               */
    scenario_wait_range_t *gaps;
    size_t n;
    int line;
} scenario_waits_t;

/* What a call step expects. */
typedef struct scenario_call_expect {
    bool any;               /* anything goes (random faults): only recorded           */
    bool timeout;           /* expects no reply in time (in doubt)                     */
    char *error;            /* expected Natomic-Error-Type; NULL: expects success      */
    int code;               /* expected Nats-Service-Error-Code; 0: not checked        */
    char *rollback;         /* expected Natomic-Rollback ("complete"...), or NULL      */
    json_t *reply;          /* partial match of the reply's fields, or NULL            */
    bool check_replayed;    /* `replayed` was given: compare Natomic-Replayed          */
    bool replayed;          /* its value                                              */
    bool refused;           /* nats: secure: the server refuses it (Permissions Violation,
                               or no responders); for subscribe/publish steps, false:
                               the server lets it through                             */
    /* What happened in the call's transaction, checked with the final checks: */
    scenario_seq_t compensations; /* its compensation calls, in the order they ran     */
    scenario_seq_t events;        /* its events, in the order they were published      */
    scenario_check_t *barrier;    /* key "<service>.<outcome>": barrier outcome counts */
    size_t n_barrier;
    scenario_waits_t *retry_waits; /* the backoff between a compensation's attempts    */
    size_t n_retry_waits;
} scenario_call_expect_t;

typedef struct scenario_fault {
    char *service;
    char *point;
    char *action;           /* error | crash | drop | duplicate | pause | delay:<ms>   */
    int times;              /* 0: always                                               */
    double probability;     /* 1: always                                               */
    int instance;           /* -1: every instance; N: instance N alone (<service>-<N>)  */
    int line;
} scenario_fault_t;

typedef struct scenario_step {
    scenario_step_kind_t kind;
    int line;
    char *service;          /* target of kill/restart/pause/resume/cut/blackhole/...  */
    int instance;           /* kill/restart/pause/resume: -1 every instance, or N      */
    /* call */
    char *subject;          /* "orders.create_order"                                  */
    json_t *request;        /* owned; may hold "{i}" templates                         */
    char *idempotency_key;  /* NULL: none; may hold "{i}" templates                    */
    int timeout_ms;
    int repeat;             /* 1 = a single call                                      */
    int concurrency;        /* callers at once for repeat > 1                         */
    bool background;        /* the steps after it start at once; joined before the checks */
    bool has_expect;
    scenario_call_expect_t expect;
    /* delay_link and wait */
    int ms;
    /* fault and release */
    scenario_fault_t fault;
    /* kill_node, restart_node, cut_node, heal_node: "n2", "meta-leader", "leader-of:<stream>",
       "connected-to:<service>", or "all" (restart, heal) */
    char *node;
    /* nats: secure: who does a call, subscribe or publish ("client", "admin", a service); NULL:
       client in steps, admin in seed_data */
    char *as;
    char *queue;            /* subscribe: the queue group, or NULL                        */
    char *payload;          /* publish: the text, or NULL (empty)                          */
} scenario_step_t;

typedef struct scenario_service {
    char *name;             /* conversions | inventory | payments | orders | notifications */
    int instances;          /* >= 1                                                   */
    int line;
} scenario_service_t;

typedef struct scenario {
    char *path;             /* as given                                               */
    char *name;             /* file name without .yaml                                 */
    char *group;            /* parent folder name ("" at top level)                    */
    char *about;
    bool durable;
    int nats_nodes;         /* 1: one nats-server (nats: single); 3: nats: cluster      */
    bool secure;            /* nats: secure: deploy/'s configuration, identities, TLS   */
    unsigned long long seed;
    scenario_service_t *services;
    size_t n_services;
    scenario_fault_t *faults;
    size_t n_faults;
    scenario_step_t *seed_data;
    size_t n_seed_data;
    scenario_step_t *steps;
    size_t n_steps;
    int eventually_ms;      /* default 2000                                           */
    scenario_check_t *state;     /* expect.state                                      */
    size_t n_state;
    scenario_check_t *events;    /* expect.events: key = "<service>.<type>"            */
    size_t n_events;
    scenario_check_t *compensations; /* key = "<service>.<method>"                      */
    size_t n_compensations;
    long long dead_letters;      /* -1: not checked                                    */
    scenario_cmp_t dead_letters_op;
    json_t *dead_letter_docs;    /* dead_letters as a list: partial matches, in order  */
    long long recoveries;        /* expect.recoveries; -1: not checked                  */
    scenario_cmp_t recoveries_op;
    scenario_check_t *barrier;   /* expect.barrier: key "<service>.<outcome>"           */
    size_t n_barrier;
    int hold_ms;                 /* expect.hold: the checks must keep holding this long */
    char **invariants;
    size_t n_invariants;
    char **violations;
    size_t n_violations;
} scenario_t;

/*
 * Loads and validates a scenario file. On success *out is the scenario
 * (free with scenario_free) and 0 is returned; on failure -1 and `err`
 * holds "file:line: reason" (the first problem found).
 */
int scenario_load(scenario_t **out, const char *path, char *err, size_t errcap);
void scenario_free(scenario_t *s);

/* The names the format knows, for validation and docs. NULL-terminated. */
extern const char *const scenario_service_names[];

/*
 * A fault point a story may name, and which of the point-specific actions
 * it defines (crash, pause and delay:<ms> mean the same everywhere). The
 * table is generated at build time from docs/fault-points.md, which the
 * fault-point-list test keeps equal to the code; it ends with a NULL name.
 */
typedef struct scenario_fault_point {
    const char *name;
    bool error, drop, duplicate;
} scenario_fault_point_t;
extern const scenario_fault_point_t scenario_fault_points[];
extern const char *const scenario_invariant_names[];
/* The identities `as` may name in a secure story (deploy/'s users). NULL-terminated. */
extern const char *const scenario_identities[];
/* True when `key` names a state value the oracle can read (stock.<sku>.available, ...). */
bool scenario_state_key_valid(const char *key);
/* The barrier outcomes a story can count: executed, duplicate, null_compensation, refused_late. */
extern const char *const scenario_barrier_outcomes[];

/* True when `got` <op> `want`; and the operator's text ("=", "!=", "<", ...). */
bool scenario_compare(long long got, scenario_cmp_t op, long long want);
const char *scenario_cmp_text(scenario_cmp_t op);

/*
 * Writes `tmpl` into out (cap > 0) with "{i}" replaced by i and "{i%N}"
 * (N >= 1) by i mod N; stops short, NUL-terminated, when out is full.
 * Returns true when the whole of `tmpl` was one template (the caller may
 * then take the result as a number).
 */
bool scenario_expand_text(const char *tmpl, long i, char *out, size_t cap);

#define SCENARIO_MAX_IDEMPOTENCY_KEY 128

#endif
