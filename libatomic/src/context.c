/*
 * context.c -- the context of one call: ids, deadline, the two command
 * lists, the error the handler failed with, and an arena for memory that
 * lives until the call ends.
 *
 * A context is created by the runtime for each delivered request, used by
 * exactly one worker thread, and released after the reply was sent and
 * every command ran. Nothing in it is shared with another call.
 *
 * Registering commands is refused (NATOMIC_ENOTENABLED) on a method that
 * lacks the matching flag, so a forgotten flag shows up at once instead
 * of as a rollback that silently never runs; and refused (NATOMIC_ESTATE)
 * while the lists are running.
 */
#include "natomic_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct natomic_arena_block {
    natomic_arena_block_t *next;
    max_align_t data[];
};

void natomic__copy(char *dst, size_t cap, const char *s)
{
    if (cap == 0)
        return;
    if (s == NULL)
        s = "";
    size_t n = strlen(s);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

void natomic__ctx_init(natomic_ctx_t *ctx, natomic_service_t *svc, natsConnection *nc, const char *service_name,
                       const char *method_name, unsigned flags)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->svc = svc;
    if (svc != NULL)
        natomic__fault_bind_thread(svc); /* this thread's fault point hits are this service's */
    ctx->nc = nc;
    ctx->service_name = service_name ? service_name : "";
    ctx->method_name = method_name ? method_name : "";
    ctx->flags = flags;
    natomic__id_new(ctx->call_id);
    natomic__id_new(ctx->tx);
}

void natomic__ctx_release(natomic_ctx_t *ctx)
{
    if (ctx == NULL)
        return;
    natomic__cmdlist_free(&ctx->rollbacks);
    natomic__cmdlist_free(&ctx->dispatches);
    natomic_arena_block_t *b = ctx->arena;
    while (b != NULL) {
        natomic_arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    ctx->arena = NULL;
}

/* Common checks of the registration functions; frees arg when refusing. */
static natomic_status_t check_register(natomic_ctx_t *ctx, unsigned flag, natomic_command_fn fn, void *arg,
                                       natomic_free_fn free_arg)
{
    natomic_status_t st = NATOMIC_OK;
    if (ctx == NULL || fn == NULL)
        st = NATOMIC_EINVAL;
    else if (ctx->commands_running)
        st = NATOMIC_ESTATE;
    else if ((ctx->flags & flag) == 0)
        st = NATOMIC_ENOTENABLED;
    if (st != NATOMIC_OK) {
        if (ctx != NULL)
            natomic__log(NATOMIC_LOG_WARN, ctx->service_name, "%s: cannot register a %s command: %s",
                         ctx->method_name, flag == NATOMIC_ROLLBACK_ONCE_FAILED ? "rollback" : "dispatch",
                         natomic_strerror(st));
        if (free_arg != NULL)
            free_arg(arg);
    }
    return st;
}

NATOMIC_API natomic_status_t natomic_rollback_insert(natomic_ctx_t *ctx, size_t index, const char *name,
                                                     natomic_command_fn fn, void *arg, natomic_free_fn free_arg)
{
    natomic_status_t st = check_register(ctx, NATOMIC_ROLLBACK_ONCE_FAILED, fn, arg, free_arg);
    if (st != NATOMIC_OK)
        return st;
    return natomic__cmdlist_insert(&ctx->rollbacks, index, name, fn, arg, free_arg);
}

NATOMIC_API natomic_status_t natomic_rollback_append(natomic_ctx_t *ctx, const char *name, natomic_command_fn fn,
                                                     void *arg, natomic_free_fn free_arg)
{
    return natomic_rollback_insert(ctx, ctx != NULL ? ctx->rollbacks.count : 0, name, fn, arg, free_arg);
}

NATOMIC_API natomic_status_t natomic_rollback_clear(natomic_ctx_t *ctx)
{
    if (ctx == NULL)
        return NATOMIC_EINVAL;
    if (ctx->commands_running)
        return NATOMIC_ESTATE;
    natomic__cmdlist_clear(&ctx->rollbacks);
    return NATOMIC_OK;
}

NATOMIC_API size_t natomic_rollback_count(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->rollbacks.count : 0;
}

NATOMIC_API natomic_status_t natomic_dispatch_insert(natomic_ctx_t *ctx, size_t index, const char *name,
                                                     natomic_command_fn fn, void *arg, natomic_free_fn free_arg)
{
    natomic_status_t st = check_register(ctx, NATOMIC_DISPATCH_AFTER_COMMIT, fn, arg, free_arg);
    if (st != NATOMIC_OK)
        return st;
    return natomic__cmdlist_insert(&ctx->dispatches, index, name, fn, arg, free_arg);
}

NATOMIC_API natomic_status_t natomic_dispatch_append(natomic_ctx_t *ctx, const char *name, natomic_command_fn fn,
                                                     void *arg, natomic_free_fn free_arg)
{
    return natomic_dispatch_insert(ctx, ctx != NULL ? ctx->dispatches.count : 0, name, fn, arg, free_arg);
}

NATOMIC_API natomic_status_t natomic_dispatch_clear(natomic_ctx_t *ctx)
{
    if (ctx == NULL)
        return NATOMIC_EINVAL;
    if (ctx->commands_running)
        return NATOMIC_ESTATE;
    natomic__cmdlist_clear(&ctx->dispatches);
    return NATOMIC_OK;
}

NATOMIC_API size_t natomic_dispatch_count(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->dispatches.count : 0;
}

static bool is_error_kind(natomic_status_t kind)
{
    return kind >= NATOMIC_EBADINPUT && kind <= NATOMIC_EINTERNAL;
}

NATOMIC_API natomic_status_t natomic_fail(natomic_ctx_t *ctx, natomic_status_t kind, const char *type,
                                          const char *fmt, ...)
{
    if (!is_error_kind(kind))
        kind = NATOMIC_EINTERNAL;
    if (ctx == NULL)
        return kind;
    ctx->failed = true;
    ctx->fail_kind = kind;
    natomic__copy(ctx->fail_type, sizeof ctx->fail_type, type != NULL && *type != '\0' ? type : "Error");
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->fail_message, sizeof ctx->fail_message, fmt, ap);
        va_end(ap);
    } else {
        natomic__copy(ctx->fail_message, sizeof ctx->fail_message, natomic_strerror(kind));
    }
    return kind;
}

NATOMIC_API const char *natomic_ctx_tx(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->tx : "";
}

NATOMIC_API const char *natomic_ctx_call_id(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->call_id : "";
}

NATOMIC_API const char *natomic_ctx_parent_id(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->parent_id : "";
}

NATOMIC_API const char *natomic_ctx_method(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->method_name : "";
}

NATOMIC_API const char *natomic_ctx_event_id(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->event_id : "";
}

NATOMIC_API natomic_service_t *natomic_ctx_service(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->svc : NULL;
}

NATOMIC_API natsConnection *natomic_ctx_connection(const natomic_ctx_t *ctx)
{
    return ctx != NULL ? ctx->nc : NULL;
}

NATOMIC_API int64_t natomic_ctx_remaining_ms(const natomic_ctx_t *ctx)
{
    if (ctx == NULL || ctx->deadline_ms == 0)
        return INT64_MAX;
    return ctx->deadline_ms - natomic__now_ms();
}

NATOMIC_API void *natomic_ctx_alloc(natomic_ctx_t *ctx, size_t size)
{
    if (ctx == NULL || size > SIZE_MAX - sizeof(natomic_arena_block_t))
        return NULL;
    natomic_arena_block_t *b = calloc(1, sizeof *b + size);
    if (b == NULL)
        return NULL;
    b->next = ctx->arena;
    ctx->arena = b;
    return b->data;
}

NATOMIC_API char *natomic_ctx_strdup(natomic_ctx_t *ctx, const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = natomic_ctx_alloc(ctx, n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}
