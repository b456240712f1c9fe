/*
 * test_context.c -- the call context, through the public API.
 *
 * Each test works on a detached context (no service, no connection), set
 * up with natomic__ctx_init() as the runtime does for a call. Proves:
 *   - natomic_{rollback,dispatch}_{append,insert,clear,count} keep the
 *     list order of DESIGN 3.2/3.3 and own their arguments;
 *   - registration is refused with a clear status -- ENOTENABLED without
 *     the method flag, EINVAL for a NULL context or function, ESTATE while
 *     the lists run -- and a refused argument is freed exactly once;
 *   - natomic_fail() returns its kind, records type and message, maps a
 *     status that is not an error kind to EINTERNAL and truncates long
 *     text safely;
 *   - arena memory lives until release (valgrind checks it is freed);
 *   - ids are 32 lowercase hex chars, new for every context; with no
 *     deadline the remaining time is INT64_MAX.
 */
#include "command_probe.h"

#include <check.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BOTH_FLAGS (NATOMIC_ROLLBACK_ONCE_FAILED | NATOMIC_DISPATCH_AFTER_COMMIT)

/* The public registration functions of one list, so rollback and dispatch share their tests. */
typedef struct list_api {
    const char *kind;
    unsigned flag;
    natomic_status_t (*append)(natomic_ctx_t *, const char *, natomic_command_fn, void *, natomic_free_fn);
    natomic_status_t (*insert)(natomic_ctx_t *, size_t, const char *, natomic_command_fn, void *, natomic_free_fn);
    natomic_status_t (*clear)(natomic_ctx_t *);
    size_t (*count)(const natomic_ctx_t *);
    natomic_cmdlist_t *(*list)(natomic_ctx_t *);
} list_api_t;

static natomic_cmdlist_t *rollback_list(natomic_ctx_t *ctx)
{
    return &ctx->rollbacks;
}

static natomic_cmdlist_t *dispatch_list(natomic_ctx_t *ctx)
{
    return &ctx->dispatches;
}

static const list_api_t list_apis[] = {
    {"rollback", NATOMIC_ROLLBACK_ONCE_FAILED, natomic_rollback_append, natomic_rollback_insert,
     natomic_rollback_clear, natomic_rollback_count, rollback_list},
    {"dispatch", NATOMIC_DISPATCH_AFTER_COMMIT, natomic_dispatch_append, natomic_dispatch_insert,
     natomic_dispatch_clear, natomic_dispatch_count, dispatch_list},
};

/* Loop tests run once per list: _i indexes list_apis. */
#define N_LIST_APIS ((int)(sizeof list_apis / sizeof list_apis[0]))

static void open_detached(natomic_ctx_t *ctx, unsigned flags)
{
    natomic__ctx_init(ctx, NULL, NULL, "svc", "method", flags);
}

/* True when s is exactly NATOMIC_ID_LEN lowercase hex digits. */
static bool is_lower_hex_id(const char *s)
{
    if (strlen(s) != NATOMIC_ID_LEN)
        return false;
    for (const char *c = s; *c != '\0'; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

/* ---- registration ---------------------------------------------------- */

START_TEST(append_and_insert_keep_list_order)
{
    const list_api_t *api = &list_apis[_i];
    natomic_ctx_t ctx;
    probe_t a = {.name = "a"}, b = {.name = "b"}, x = {.name = "x"}, y = {.name = "y"}, z = {.name = "z"};
    char names[128];

    open_detached(&ctx, api->flag);
    ck_assert_int_eq(api->append(&ctx, "a", probe_command, &a, probe_free), NATOMIC_OK);
    ck_assert_int_eq(api->append(&ctx, "b", probe_command, &b, probe_free), NATOMIC_OK);
    ck_assert_int_eq(api->insert(&ctx, 0, "x", probe_command, &x, probe_free), NATOMIC_OK);
    ck_assert_int_eq(api->insert(&ctx, 2, "y", probe_command, &y, probe_free), NATOMIC_OK);
    ck_assert_int_eq(api->insert(&ctx, api->count(&ctx), "z", probe_command, &z, probe_free), NATOMIC_OK);

    ck_assert_uint_eq(api->count(&ctx), 5);
    ck_assert_str_eq(probe_list_names(api->list(&ctx), names, sizeof names), "x,a,y,b,z");
    natomic__ctx_release(&ctx);
    ck_assert_int_eq(a.frees + b.frees + x.frees + y.frees + z.frees, 5);
}
END_TEST

START_TEST(insert_past_count_is_refused)
{
    const list_api_t *api = &list_apis[_i];
    natomic_ctx_t ctx;
    probe_t a = {.name = "a"}, x = {.name = "x"};

    open_detached(&ctx, api->flag);
    ck_assert_int_eq(api->append(&ctx, "a", probe_command, &a, probe_free), NATOMIC_OK);
    ck_assert_int_eq(api->insert(&ctx, 2, "x", probe_command, &x, probe_free), NATOMIC_EINVAL);

    ck_assert_uint_eq(api->count(&ctx), 1);
    ck_assert_int_eq(x.frees, 1);
    natomic__ctx_release(&ctx);
    ck_assert_int_eq(x.frees, 1);
    ck_assert_int_eq(a.frees, 1);
}
END_TEST

START_TEST(clear_frees_args_and_empties)
{
    const list_api_t *api = &list_apis[_i];
    natomic_ctx_t ctx;
    probe_t a = {.name = "a"}, b = {.name = "b"};

    open_detached(&ctx, api->flag);
    ck_assert_int_eq(api->append(&ctx, "a", probe_command, &a, probe_free), NATOMIC_OK);
    ck_assert_int_eq(api->append(&ctx, "b", probe_command, &b, probe_free), NATOMIC_OK);
    ck_assert_int_eq(api->clear(&ctx), NATOMIC_OK);

    ck_assert_uint_eq(api->count(&ctx), 0);
    ck_assert_int_eq(a.frees, 1);
    ck_assert_int_eq(b.frees, 1);
    natomic__ctx_release(&ctx);
    ck_assert_int_eq(a.frees, 1);
    ck_assert_int_eq(b.frees, 1);
}
END_TEST

/* The two lists of one context are independent. */
START_TEST(rollback_and_dispatch_lists_are_separate)
{
    natomic_ctx_t ctx;
    probe_t r = {.name = "r"}, d = {.name = "d"};

    open_detached(&ctx, BOTH_FLAGS);
    ck_assert_int_eq(natomic_rollback_append(&ctx, "r", probe_command, &r, probe_free), NATOMIC_OK);
    ck_assert_int_eq(natomic_dispatch_append(&ctx, "d", probe_command, &d, probe_free), NATOMIC_OK);
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 1);
    ck_assert_uint_eq(natomic_dispatch_count(&ctx), 1);

    ck_assert_int_eq(natomic_rollback_clear(&ctx), NATOMIC_OK);
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 0);
    ck_assert_uint_eq(natomic_dispatch_count(&ctx), 1);
    ck_assert_int_eq(d.frees, 0);

    natomic__ctx_release(&ctx);
    ck_assert_int_eq(r.frees, 1);
    ck_assert_int_eq(d.frees, 1);
}
END_TEST

START_TEST(missing_flag_is_not_enabled)
{
    const list_api_t *api = &list_apis[_i];
    unsigned other_flag = BOTH_FLAGS & ~api->flag;
    static const char *const flag_names[] = {"no flag", "only the other flag"};
    const unsigned flag_sets[] = {0, other_flag};

    for (int f = 0; f < 2; f++) {
        natomic_ctx_t ctx;
        probe_t a = {.name = "a"}, x = {.name = "x"};

        open_detached(&ctx, flag_sets[f]);
        natomic_status_t appended = api->append(&ctx, "a", probe_command, &a, probe_free);
        natomic_status_t inserted = api->insert(&ctx, 0, "x", probe_command, &x, probe_free);

        ck_assert_msg(appended == NATOMIC_ENOTENABLED, "%s append with %s: %s, expected NATOMIC_ENOTENABLED",
                      api->kind, flag_names[f], natomic_status_name(appended));
        ck_assert_msg(inserted == NATOMIC_ENOTENABLED, "%s insert with %s: %s, expected NATOMIC_ENOTENABLED",
                      api->kind, flag_names[f], natomic_status_name(inserted));
        ck_assert_uint_eq(api->count(&ctx), 0);
        ck_assert_int_eq(a.frees, 1);
        ck_assert_int_eq(x.frees, 1);
        natomic__ctx_release(&ctx);
        ck_assert_int_eq(a.frees, 1);
        ck_assert_int_eq(x.frees, 1);
    }
}
END_TEST

START_TEST(null_context_is_invalid)
{
    const list_api_t *api = &list_apis[_i];
    probe_t a = {.name = "a"}, x = {.name = "x"};

    ck_assert_int_eq(api->append(NULL, "a", probe_command, &a, probe_free), NATOMIC_EINVAL);
    ck_assert_int_eq(api->insert(NULL, 0, "x", probe_command, &x, probe_free), NATOMIC_EINVAL);
    ck_assert_int_eq(api->clear(NULL), NATOMIC_EINVAL);
    ck_assert_uint_eq(api->count(NULL), 0);
    ck_assert_int_eq(a.frees, 1);
    ck_assert_int_eq(x.frees, 1);
}
END_TEST

START_TEST(null_function_is_invalid)
{
    const list_api_t *api = &list_apis[_i];
    natomic_ctx_t ctx;
    probe_t a = {.name = "a"}, x = {.name = "x"};

    open_detached(&ctx, api->flag);
    ck_assert_int_eq(api->append(&ctx, "a", NULL, &a, probe_free), NATOMIC_EINVAL);
    ck_assert_int_eq(api->insert(&ctx, 0, "x", NULL, &x, probe_free), NATOMIC_EINVAL);

    ck_assert_uint_eq(api->count(&ctx), 0);
    ck_assert_int_eq(a.frees, 1);
    ck_assert_int_eq(x.frees, 1);
    natomic__ctx_release(&ctx);
    ck_assert_int_eq(a.frees, 1);
}
END_TEST

START_TEST(registration_refused_while_commands_run)
{
    const list_api_t *api = &list_apis[_i];
    natomic_ctx_t ctx;
    probe_t a = {.name = "a"}, b = {.name = "b"}, x = {.name = "x"};

    open_detached(&ctx, BOTH_FLAGS);
    ck_assert_int_eq(api->append(&ctx, "a", probe_command, &a, probe_free), NATOMIC_OK);

    ctx.commands_running = true;
    ck_assert_int_eq(api->append(&ctx, "b", probe_command, &b, probe_free), NATOMIC_ESTATE);
    ck_assert_int_eq(api->insert(&ctx, 0, "x", probe_command, &x, probe_free), NATOMIC_ESTATE);
    ck_assert_int_eq(api->clear(&ctx), NATOMIC_ESTATE);
    ck_assert_uint_eq(api->count(&ctx), 1);
    ck_assert_int_eq(a.frees, 0);
    ck_assert_int_eq(b.frees, 1);
    ck_assert_int_eq(x.frees, 1);
    ctx.commands_running = false;

    natomic__ctx_release(&ctx);
    ck_assert_int_eq(a.frees, 1);
    ck_assert_int_eq(b.frees, 1);
    ck_assert_int_eq(x.frees, 1);
}
END_TEST

/* Heap arguments through the public API: valgrind sees any leak or double free. */
START_TEST(heap_args_freed_whatever_the_outcome)
{
    natomic_ctx_t ctx;

    open_detached(&ctx, NATOMIC_ROLLBACK_ONCE_FAILED);
    ck_assert_int_eq(natomic_rollback_append(&ctx, "kept", probe_command, strdup("kept"), free), NATOMIC_OK);
    ck_assert_int_eq(natomic_rollback_insert(&ctx, 9, "refused", probe_command, strdup("refused"), free),
                     NATOMIC_EINVAL);
    ck_assert_int_eq(natomic_dispatch_append(&ctx, "not enabled", probe_command, strdup("not enabled"), free),
                     NATOMIC_ENOTENABLED);
    ck_assert_int_eq(natomic_rollback_append(NULL, "no ctx", probe_command, strdup("no ctx"), free), NATOMIC_EINVAL);
    natomic__ctx_release(&ctx);
}
END_TEST

/* ---- natomic_fail ---------------------------------------------------- */

START_TEST(fail_returns_kind_and_records_it)
{
    static const natomic_status_t kinds[] = {NATOMIC_EBADINPUT, NATOMIC_ENOMETHOD, NATOMIC_EBUSINESS,
                                             NATOMIC_ETRANSIENT, NATOMIC_ETIMEOUT,  NATOMIC_EINTERNAL};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        natomic_ctx_t ctx;
        open_detached(&ctx, 0);

        natomic_status_t st = natomic_fail(&ctx, kinds[i], "OutOfStock", "only %d left of %s", 2, "widgets");

        ck_assert_str_eq(natomic_status_name(st), natomic_status_name(kinds[i]));
        ck_assert(ctx.failed);
        ck_assert_str_eq(natomic_status_name(ctx.fail_kind), natomic_status_name(kinds[i]));
        ck_assert_str_eq(ctx.fail_type, "OutOfStock");
        ck_assert_str_eq(ctx.fail_message, "only 2 left of widgets");
        natomic__ctx_release(&ctx);
    }
}
END_TEST

START_TEST(fail_maps_other_statuses_to_internal)
{
    static const natomic_status_t not_kinds[] = {NATOMIC_OK, NATOMIC_EINVAL, NATOMIC_ENOMEM, NATOMIC_ENATS,
                                                 NATOMIC_ESTATE, NATOMIC_STATUS_COUNT_, (natomic_status_t)999};
    for (size_t i = 0; i < sizeof not_kinds / sizeof not_kinds[0]; i++) {
        natomic_ctx_t ctx;
        open_detached(&ctx, 0);

        natomic_status_t st = natomic_fail(&ctx, not_kinds[i], "Oops", "status %d", (int)not_kinds[i]);

        ck_assert_msg(st == NATOMIC_EINTERNAL, "natomic_fail(%d) returned %s, expected NATOMIC_EINTERNAL",
                      (int)not_kinds[i], natomic_status_name(st));
        ck_assert_str_eq(natomic_status_name(ctx.fail_kind), "NATOMIC_EINTERNAL");
        ck_assert(ctx.failed);
        natomic__ctx_release(&ctx);
    }
}
END_TEST

START_TEST(fail_without_context_returns_kind)
{
    ck_assert_str_eq(natomic_status_name(natomic_fail(NULL, NATOMIC_EBUSINESS, "T", "m")), "NATOMIC_EBUSINESS");
    ck_assert_str_eq(natomic_status_name(natomic_fail(NULL, NATOMIC_OK, "T", "m")), "NATOMIC_EINTERNAL");
}
END_TEST

START_TEST(fail_truncates_long_text)
{
    natomic_ctx_t ctx;
    char long_type[300], long_message[2000];

    memset(long_type, 'T', sizeof long_type - 1);
    long_type[sizeof long_type - 1] = '\0';
    memset(long_message, 'm', sizeof long_message - 1);
    long_message[sizeof long_message - 1] = '\0';
    open_detached(&ctx, 0);

    natomic_fail(&ctx, NATOMIC_EBADINPUT, long_type, "%s", long_message);

    ck_assert_uint_eq(strlen(ctx.fail_type), sizeof ctx.fail_type - 1);
    ck_assert_uint_eq(strlen(ctx.fail_message), sizeof ctx.fail_message - 1);
    ck_assert_int_eq(strncmp(ctx.fail_type, long_type, sizeof ctx.fail_type - 1), 0);
    ck_assert_int_eq(strncmp(ctx.fail_message, long_message, sizeof ctx.fail_message - 1), 0);
    natomic__ctx_release(&ctx);
}
END_TEST

/* No type or no format still leaves a readable, non-empty record. */
START_TEST(fail_without_type_or_format_records_something)
{
    natomic_ctx_t ctx;
    open_detached(&ctx, 0);

    ck_assert_int_eq(natomic_fail(&ctx, NATOMIC_ETRANSIENT, NULL, NULL), NATOMIC_ETRANSIENT);

    ck_assert_uint_gt(strlen(ctx.fail_type), 0);
    ck_assert_uint_gt(strlen(ctx.fail_message), 0);
    natomic__ctx_release(&ctx);
}
END_TEST

/* ---- arena ------------------------------------------------------------ */

START_TEST(arena_memory_lives_until_release)
{
    natomic_ctx_t ctx;
    open_detached(&ctx, 0);

    char *s = natomic_ctx_strdup(&ctx, "reply text");
    int *numbers = natomic_ctx_alloc(&ctx, 100 * sizeof *numbers);
    void *empty = natomic_ctx_alloc(&ctx, 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(numbers);
    ck_assert_ptr_nonnull(empty);

    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(numbers[i], 0); /* zeroed, like a reply message */
    for (int i = 0; i < 100; i++)
        numbers[i] = i;
    for (int i = 0; i < 50; i++)
        ck_assert_ptr_nonnull(natomic_ctx_strdup(&ctx, "many small blocks"));

    ck_assert_str_eq(s, "reply text");
    ck_assert_int_eq(numbers[99], 99);
    ck_assert_msg((uintptr_t)numbers % alignof(max_align_t) == 0, "arena block %p not aligned to %zu",
                  (void *)numbers, alignof(max_align_t));
    natomic__ctx_release(&ctx);
}
END_TEST

START_TEST(arena_refuses_bad_requests)
{
    natomic_ctx_t ctx;
    open_detached(&ctx, 0);

    ck_assert_ptr_null(natomic_ctx_alloc(NULL, 16));
    ck_assert_ptr_null(natomic_ctx_strdup(NULL, "x"));
    ck_assert_ptr_null(natomic_ctx_strdup(&ctx, NULL));
    ck_assert_ptr_null(natomic_ctx_alloc(&ctx, SIZE_MAX));
    natomic__ctx_release(&ctx);
}
END_TEST

/* ---- ids and accessors ----------------------------------------------- */

START_TEST(ids_are_lowercase_hex_and_fresh)
{
    natomic_ctx_t one, two;
    open_detached(&one, 0);
    open_detached(&two, 0);

    ck_assert_msg(is_lower_hex_id(natomic_ctx_tx(&one)), "tx '%s' is not 32 lowercase hex chars",
                  natomic_ctx_tx(&one));
    ck_assert_msg(is_lower_hex_id(natomic_ctx_call_id(&one)), "call id '%s' is not 32 lowercase hex chars",
                  natomic_ctx_call_id(&one));
    ck_assert_msg(is_lower_hex_id(natomic_ctx_tx(&two)), "tx '%s' is not 32 lowercase hex chars",
                  natomic_ctx_tx(&two));
    ck_assert_msg(is_lower_hex_id(natomic_ctx_call_id(&two)), "call id '%s' is not 32 lowercase hex chars",
                  natomic_ctx_call_id(&two));

    ck_assert_str_ne(natomic_ctx_tx(&one), natomic_ctx_tx(&two));
    ck_assert_str_ne(natomic_ctx_call_id(&one), natomic_ctx_call_id(&two));
    ck_assert_str_ne(natomic_ctx_tx(&one), natomic_ctx_call_id(&one));
    natomic__ctx_release(&one);
    natomic__ctx_release(&two);
}
END_TEST

START_TEST(detached_context_accessors)
{
    natomic_ctx_t ctx;
    open_detached(&ctx, 0);

    ck_assert_str_eq(natomic_ctx_method(&ctx), "method");
    ck_assert_str_eq(natomic_ctx_parent_id(&ctx), "");
    ck_assert_str_eq(natomic_ctx_event_id(&ctx), "");
    ck_assert_ptr_null(natomic_ctx_service(&ctx));
    ck_assert_ptr_null(natomic_ctx_connection(&ctx));
    ck_assert_uint_eq(natomic_rollback_count(&ctx), 0);
    ck_assert_uint_eq(natomic_dispatch_count(&ctx), 0);
    ck_assert(!ctx.failed);
    natomic__ctx_release(&ctx);
}
END_TEST

START_TEST(no_deadline_leaves_all_the_time)
{
    natomic_ctx_t ctx;
    open_detached(&ctx, 0);

    ck_assert_msg(natomic_ctx_remaining_ms(&ctx) == INT64_MAX, "remaining %lld ms, expected INT64_MAX",
                  (long long)natomic_ctx_remaining_ms(&ctx));
    ck_assert_msg(natomic_ctx_remaining_ms(NULL) == INT64_MAX, "remaining %lld ms for NULL, expected INT64_MAX",
                  (long long)natomic_ctx_remaining_ms(NULL));
    natomic__ctx_release(&ctx);
}
END_TEST

START_TEST(accessors_accept_null)
{
    ck_assert_str_eq(natomic_ctx_tx(NULL), "");
    ck_assert_str_eq(natomic_ctx_call_id(NULL), "");
    ck_assert_str_eq(natomic_ctx_parent_id(NULL), "");
    ck_assert_str_eq(natomic_ctx_method(NULL), "");
    ck_assert_str_eq(natomic_ctx_event_id(NULL), "");
    ck_assert_ptr_null(natomic_ctx_service(NULL));
    ck_assert_ptr_null(natomic_ctx_connection(NULL));
}
END_TEST

static Suite *context_suite(void)
{
    Suite *s = suite_create("context");

    TCase *reg = tcase_create("registration");
    tcase_add_loop_test(reg, append_and_insert_keep_list_order, 0, N_LIST_APIS);
    tcase_add_loop_test(reg, insert_past_count_is_refused, 0, N_LIST_APIS);
    tcase_add_loop_test(reg, clear_frees_args_and_empties, 0, N_LIST_APIS);
    tcase_add_test(reg, rollback_and_dispatch_lists_are_separate);
    tcase_add_loop_test(reg, missing_flag_is_not_enabled, 0, N_LIST_APIS);
    tcase_add_loop_test(reg, null_context_is_invalid, 0, N_LIST_APIS);
    tcase_add_loop_test(reg, null_function_is_invalid, 0, N_LIST_APIS);
    tcase_add_loop_test(reg, registration_refused_while_commands_run, 0, N_LIST_APIS);
    tcase_add_test(reg, heap_args_freed_whatever_the_outcome);
    suite_add_tcase(s, reg);

    TCase *fail = tcase_create("fail");
    tcase_add_test(fail, fail_returns_kind_and_records_it);
    tcase_add_test(fail, fail_maps_other_statuses_to_internal);
    tcase_add_test(fail, fail_without_context_returns_kind);
    tcase_add_test(fail, fail_truncates_long_text);
    tcase_add_test(fail, fail_without_type_or_format_records_something);
    suite_add_tcase(s, fail);

    TCase *arena = tcase_create("arena");
    tcase_add_test(arena, arena_memory_lives_until_release);
    tcase_add_test(arena, arena_refuses_bad_requests);
    suite_add_tcase(s, arena);

    TCase *ids = tcase_create("ids and accessors");
    tcase_add_test(ids, ids_are_lowercase_hex_and_fresh);
    tcase_add_test(ids, detached_context_accessors);
    tcase_add_test(ids, no_deadline_leaves_all_the_time);
    tcase_add_test(ids, accessors_accept_null);
    suite_add_tcase(s, ids);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(context_suite());
    srunner_run_all(sr, CK_ENV);
    srunner_free(sr);
    return 0; /* results are the TAP lines; a non-zero exit is an ERROR for meson */
}
