/*
 * commands.c -- the rollback and dispatch command lists of one call.
 *
 * A list is a plain growable array owned by one call context, so
 * concurrent calls can never see each other's commands (nameko-atomicity
 * keys its lists by container and shares them between workers; we don't).
 *
 * Running a list:
 *   - rollback lists run in reverse registration order (compensation
 *     order), dispatch lists in registration order;
 *   - every command is attempted, whatever happened to the ones before;
 *   - a failing command is retried: attempt k+1 waits
 *     min(cap, base * 2^(k-1)) ms;
 *   - a command that fails every attempt is handed to `on_exhausted`
 *     (which logs, counts and dead-letters it) -- never dropped silently.
 *
 * Each command's argument is freed exactly once, when the list is cleared
 * or freed, never by running it (a retried command needs it again).
 *
 * Durable mode adds two things through hooks (natomic__cmdlist_run_hooked):
 * a command that failed every attempt may be DEFERRED instead of
 * dead-lettered -- kept in the saga log for a later round -- and the
 * owner hears of each command's end, so the log forgets what finished.
 * A command that ended (succeeded or dead-lettered) is marked `ended`
 * and is skipped by a later run of the same list.
 */
#include "natomic_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

natomic_retry_policy_t natomic__retry_policy_normalize(natomic_retry_policy_t p)
{
    if (p.attempts <= 0)
        p.attempts = 3;
    if (p.base_ms <= 0)
        p.base_ms = 20;
    if (p.cap_ms <= 0)
        p.cap_ms = 1000;
    if (p.cap_ms < p.base_ms)
        p.cap_ms = p.base_ms;
    return p;
}

int64_t natomic__backoff_ms(const natomic_retry_policy_t *p, int attempt)
{
    int64_t d = p->base_ms;
    for (int i = 1; i < attempt && d < p->cap_ms; i++)
        d *= 2;
    return d < p->cap_ms ? d : p->cap_ms;
}

natomic_status_t natomic__cmdlist_insert(natomic_cmdlist_t *list, size_t index, const char *name,
                                         natomic_command_fn fn, void *arg, natomic_free_fn free_arg)
{
    if (list == NULL || fn == NULL || index > list->count) {
        if (free_arg != NULL)
            free_arg(arg);
        return NATOMIC_EINVAL;
    }
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 4;
        natomic_command_t *items = realloc(list->items, cap * sizeof *items);
        if (items == NULL) {
            if (free_arg != NULL)
                free_arg(arg);
            return NATOMIC_ENOMEM;
        }
        list->items = items;
        list->cap = cap;
    }
    char *copy = strdup(name != NULL && *name != '\0' ? name : "command");
    if (copy == NULL) {
        if (free_arg != NULL)
            free_arg(arg);
        return NATOMIC_ENOMEM;
    }
    memmove(&list->items[index + 1], &list->items[index], (list->count - index) * sizeof list->items[0]);
    list->items[index] = (natomic_command_t){.name = copy, .fn = fn, .arg = arg, .free_arg = free_arg};
    list->count++;
    return NATOMIC_OK;
}

natomic_status_t natomic__cmdlist_remove(natomic_cmdlist_t *list, size_t index)
{
    if (list == NULL || index >= list->count)
        return NATOMIC_EINVAL;
    natomic_command_t *c = &list->items[index];
    if (c->free_arg != NULL)
        c->free_arg(c->arg);
    free(c->name);
    memmove(&list->items[index], &list->items[index + 1], (list->count - index - 1) * sizeof list->items[0]);
    list->count--;
    return NATOMIC_OK;
}

void natomic__cmdlist_clear(natomic_cmdlist_t *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->count; i++) {
        natomic_command_t *c = &list->items[i];
        if (c->free_arg != NULL)
            c->free_arg(c->arg);
        free(c->name);
    }
    list->count = 0;
}

void natomic__cmdlist_free(natomic_cmdlist_t *list)
{
    if (list == NULL)
        return;
    natomic__cmdlist_clear(list);
    free(list->items);
    list->items = NULL;
    list->cap = 0;
}

/*
 * One attempt, between the fault points natomic/before_<kind> and
 * natomic/after_<kind>: before, ERROR fails the attempt unrun (its target
 * refused it), DUPLICATE runs it twice (a redelivery); after, ERROR fails an
 * attempt that did run (its answer was lost, so a retry repeats it). There
 * is no DROP: a command skipped and reported done is a bug of the runtime,
 * not something the world does -- a message lost on its way is
 * natomic/client_send's or natomic/event_publish's drop.
 */
static natomic_status_t run_attempt(natomic_command_t *cmd, natomic_ctx_t *ctx, const char *list_kind)
{
    bool rollback = strcmp(list_kind, "rollback") == 0;
    natomic_fault_t f = NATOMIC_FAULT(rollback ? "natomic/before_rollback" : "natomic/before_dispatch");
    if (f == NATOMIC_FAULT_ERROR)
        return NATOMIC_ETRANSIENT;
    natomic_status_t st = cmd->fn(ctx, cmd->arg);
    if (f == NATOMIC_FAULT_DUPLICATE && st == NATOMIC_OK)
        st = cmd->fn(ctx, cmd->arg);
    if (st == NATOMIC_OK &&
        NATOMIC_FAULT(rollback ? "natomic/after_rollback" : "natomic/after_dispatch") == NATOMIC_FAULT_ERROR)
        return NATOMIC_ETRANSIENT;
    return st;
}

/* Runs one command with retries; how it ended. */
static natomic_cmd_end_t run_one(natomic_command_t *cmd, natomic_ctx_t *ctx, const char *list_kind,
                                 const natomic_retry_policy_t *policy, const natomic_run_hooks_t *hooks,
                                 natomic_run_report_t *report)
{
    natomic_status_t st = NATOMIC_EINTERNAL;
    for (int attempt = 1; attempt <= policy->attempts; attempt++) {
        int64_t wait_ms = 0;
        if (attempt > 1) {
            if (hooks != NULL && hooks->stop != NULL && hooks->stop(ctx, hooks->user))
                return NATOMIC_CMD_DEFERRED; /* stopping: left for whoever runs the list next */
            report->retries++;
            wait_ms = natomic__backoff_ms(policy, attempt - 1);
            natomic__sleep_ms(wait_ms);
        }
        if (ctx != NULL) {
            /* Told to the callee with the command's calls (Natomic-Attempt, Natomic-Backoff-Ms). */
            ctx->attempt = attempt;
            ctx->backoff_ms = wait_ms;
        }
        st = run_attempt(cmd, ctx, list_kind);
        if (ctx != NULL)
            ctx->attempt = 0;
        if (st == NATOMIC_OK)
            return NATOMIC_CMD_DONE;
        natomic__log(NATOMIC_LOG_WARN, ctx ? ctx->service_name : NULL, "%s command '%s' failed (attempt %d/%d): %s",
                     list_kind, cmd->name, attempt, policy->attempts, natomic_strerror(st));
    }
    if (hooks != NULL && hooks->exhausted != NULL)
        return hooks->exhausted(ctx, list_kind, cmd, policy->attempts, st, hooks->user);
    return NATOMIC_CMD_DEAD;
}

natomic_outcome_t natomic__cmdlist_run_hooked(natomic_cmdlist_t *list, natomic_ctx_t *ctx, const char *list_kind,
                                              bool reverse, const natomic_retry_policy_t *policy,
                                              const natomic_run_hooks_t *hooks, natomic_run_report_t *report)
{
    natomic_run_report_t local = {0};
    if (report == NULL)
        report = &local;
    if (list == NULL || list->count == 0)
        return NATOMIC_OUTCOME_NONE;
    natomic_retry_policy_t p = natomic__retry_policy_normalize(policy ? *policy : (natomic_retry_policy_t){0});
    size_t n = list->count, ran = 0, failed = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = reverse ? n - 1 - k : k;
        assert(i < list->count);
        natomic_command_t *cmd = &list->items[i];
        if (cmd->ended)
            continue;
        if (hooks != NULL && hooks->stop != NULL && hooks->stop(ctx, hooks->user))
            break;
        ran++;
        natomic_cmd_end_t end = run_one(cmd, ctx, list_kind, &p, hooks, report);
        if (end == NATOMIC_CMD_DONE) {
            report->succeeded++;
        } else {
            failed++;
            if (end == NATOMIC_CMD_DEAD)
                report->exhausted++;
            else
                report->deferred++;
        }
        cmd->ended = end != NATOMIC_CMD_DEFERRED;
        if (hooks != NULL && hooks->finished != NULL)
            hooks->finished(ctx, list_kind, cmd, end, hooks->user);
    }
    /* Decided on this run alone: a report may carry counts of earlier runs. */
    if (ran == 0)
        return NATOMIC_OUTCOME_NONE;
    return failed == 0 ? NATOMIC_OUTCOME_COMPLETE : NATOMIC_OUTCOME_INCOMPLETE;
}

/* Adapts a plain exhausted callback (memory mode, tests) to the hooks. */
typedef struct plain_exhausted {
    natomic_exhausted_fn fn;
    void *user;
} plain_exhausted_t;

static natomic_cmd_end_t call_plain_exhausted(natomic_ctx_t *ctx, const char *list_kind, natomic_command_t *cmd,
                                              int attempts, natomic_status_t last, void *user)
{
    plain_exhausted_t *p = user;
    if (p->fn != NULL)
        p->fn(ctx, list_kind, cmd, attempts, last, p->user);
    return NATOMIC_CMD_DEAD;
}

natomic_outcome_t natomic__cmdlist_run(natomic_cmdlist_t *list, natomic_ctx_t *ctx, const char *list_kind,
                                       bool reverse, const natomic_retry_policy_t *policy,
                                       natomic_exhausted_fn on_exhausted, void *user,
                                       natomic_run_report_t *report)
{
    plain_exhausted_t plain = {on_exhausted, user};
    natomic_run_hooks_t hooks = {.exhausted = call_plain_exhausted, .user = &plain};
    return natomic__cmdlist_run_hooked(list, ctx, list_kind, reverse, policy, &hooks, report);
}
