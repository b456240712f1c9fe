/*
 * test_command_list.c -- what a command list promises about its contents.
 *
 * Proves, on natomic__cmdlist_* directly:
 *   - append (insert at count) keeps registration order;
 *   - insert at 0, in the middle and at count behaves like Python's
 *     list.insert, also across the array's growth;
 *   - an insert that is refused (index > count, no function) leaves the
 *     list unchanged and frees the argument exactly once;
 *   - clear and free release every argument exactly once, and freeing an
 *     empty, already freed or NULL list is harmless.
 */
#include "command_probe.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NAMES_CAP 512

/* Appends a probe at the end of the list, as natomic_*_append() does. */
static natomic_status_t append_probe(natomic_cmdlist_t *list, probe_t *p)
{
    return natomic__cmdlist_insert(list, list->count, p->name, probe_command, p, probe_free);
}

/* Builds the list "a,b,c" from three probes. */
static void build_abc(natomic_cmdlist_t *list, probe_t probes[3])
{
    static const char *const names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        probes[i] = (probe_t){.name = names[i]};
        ck_assert_int_eq(append_probe(list, &probes[i]), NATOMIC_OK);
    }
}

START_TEST(append_keeps_registration_order)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3];
    char names[NAMES_CAP];

    build_abc(&list, p);

    ck_assert_uint_eq(list.count, 3);
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,b,c");
    for (size_t i = 0; i < list.count; i++) {
        ck_assert_ptr_eq(list.items[i].arg, &p[i]);
        ck_assert_msg(list.items[i].free_arg == probe_free, "items[%zu] lost its free_arg", i);
    }
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(insert_at_zero_goes_first)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3], x = {.name = "x"};
    char names[NAMES_CAP];

    build_abc(&list, p);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 0, "x", probe_command, &x, probe_free), NATOMIC_OK);

    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "x,a,b,c");
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(insert_in_the_middle_shifts_the_rest)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3], x = {.name = "x"}, y = {.name = "y"};
    char names[NAMES_CAP];

    build_abc(&list, p);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 1, "x", probe_command, &x, probe_free), NATOMIC_OK);
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,x,b,c");
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 3, "y", probe_command, &y, probe_free), NATOMIC_OK);
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,x,b,y,c");

    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(insert_at_count_appends)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3], x = {.name = "x"};
    char names[NAMES_CAP];

    build_abc(&list, p);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, list.count, "x", probe_command, &x, probe_free), NATOMIC_OK);

    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,b,c,x");
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(insert_into_empty_list_at_zero)
{
    natomic_cmdlist_t list = {0};
    probe_t x = {.name = "x"};
    char names[NAMES_CAP];

    ck_assert_int_eq(natomic__cmdlist_insert(&list, 0, "x", probe_command, &x, probe_free), NATOMIC_OK);

    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "x");
    natomic__cmdlist_free(&list);
    ck_assert_int_eq(x.frees, 1);
}
END_TEST

/* Inserting at 0 over and over crosses several reallocations: order must survive them. */
START_TEST(insert_order_survives_growth)
{
    enum { N = 100 };
    natomic_cmdlist_t list = {0};
    probe_t p[N];

    for (int i = 0; i < N; i++) {
        p[i] = (probe_t){.name = "p"};
        ck_assert_int_eq(natomic__cmdlist_insert(&list, 0, "p", probe_command, &p[i], probe_free), NATOMIC_OK);
    }

    ck_assert_uint_eq(list.count, N);
    ck_assert_uint_ge(list.cap, list.count);
    for (int i = 0; i < N; i++)
        ck_assert_msg(list.items[i].arg == &p[N - 1 - i], "items[%d] holds probe %td, expected probe %d", i,
                      (probe_t *)list.items[i].arg - p, N - 1 - i);
    natomic__cmdlist_free(&list);
    for (int i = 0; i < N; i++)
        ck_assert_msg(p[i].frees == 1, "probe %d freed %d times, expected 1", i, p[i].frees);
}
END_TEST

/* A refused insert at `index` leaves "a,b,c" as it was and frees x once. */
static void check_refused_insert(size_t index)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3], x = {.name = "x"};
    char names[NAMES_CAP];

    build_abc(&list, p);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, index, "x", probe_command, &x, probe_free), NATOMIC_EINVAL);

    ck_assert_uint_eq(list.count, 3);
    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,b,c");
    ck_assert_int_eq(x.frees, 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(p[i].frees, 0);

    natomic__cmdlist_free(&list);
    ck_assert_int_eq(x.frees, 1);
    ck_assert_int_eq(x.calls, 0);
}

START_TEST(insert_past_count_is_refused)
{
    check_refused_insert(4);
}
END_TEST

START_TEST(insert_far_past_count_is_refused)
{
    check_refused_insert(SIZE_MAX);
}
END_TEST

START_TEST(insert_past_count_of_empty_list_is_refused)
{
    natomic_cmdlist_t list = {0};
    probe_t x = {.name = "x"};

    ck_assert_int_eq(natomic__cmdlist_insert(&list, 1, "x", probe_command, &x, probe_free), NATOMIC_EINVAL);

    ck_assert_uint_eq(list.count, 0);
    ck_assert_int_eq(x.frees, 1);
    natomic__cmdlist_free(&list);
    ck_assert_int_eq(x.frees, 1);
}
END_TEST

START_TEST(insert_without_function_is_refused)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3], x = {.name = "x"};
    char names[NAMES_CAP];

    build_abc(&list, p);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 0, "x", NULL, &x, probe_free), NATOMIC_EINVAL);

    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "a,b,c");
    ck_assert_int_eq(x.frees, 1);
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(clear_frees_every_arg_once)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3];

    build_abc(&list, p);
    natomic__cmdlist_clear(&list);

    ck_assert_uint_eq(list.count, 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(p[i].frees, 1);
        ck_assert_int_eq(p[i].calls, 0);
    }
    /* Freeing after clearing must not free the old args again. */
    natomic__cmdlist_free(&list);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(p[i].frees, 1);
}
END_TEST

START_TEST(list_is_reusable_after_clear)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3], x = {.name = "x"};
    char names[NAMES_CAP];

    build_abc(&list, p);
    natomic__cmdlist_clear(&list);
    ck_assert_int_eq(append_probe(&list, &x), NATOMIC_OK);

    ck_assert_str_eq(probe_list_names(&list, names, sizeof names), "x");
    natomic__cmdlist_free(&list);
    ck_assert_int_eq(x.frees, 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(p[i].frees, 1);
}
END_TEST

START_TEST(free_releases_every_arg_once)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3];

    build_abc(&list, p);
    natomic__cmdlist_free(&list);

    ck_assert_uint_eq(list.count, 0);
    ck_assert_uint_eq(list.cap, 0);
    ck_assert_ptr_null(list.items);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(p[i].frees, 1);
}
END_TEST

/* Real heap arguments: valgrind sees a leak or a double free if ownership is wrong. */
START_TEST(heap_args_are_freed_with_free_arg)
{
    natomic_cmdlist_t list = {0};

    for (int i = 0; i < 10; i++) {
        char *arg = strdup("owned by the list");
        ck_assert_ptr_nonnull(arg);
        ck_assert_int_eq(natomic__cmdlist_insert(&list, list.count, "heap", probe_command, arg, free), NATOMIC_OK);
    }
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 99, "heap", probe_command, strdup("refused"), free),
                     NATOMIC_EINVAL);
    natomic__cmdlist_clear(&list);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 0, "heap", probe_command, strdup("again"), free), NATOMIC_OK);
    natomic__cmdlist_free(&list);
}
END_TEST

START_TEST(commands_without_free_arg_are_fine)
{
    natomic_cmdlist_t list = {0};
    probe_t x = {.name = "x"};

    ck_assert_int_eq(natomic__cmdlist_insert(&list, 0, "x", probe_command, &x, NULL), NATOMIC_OK);
    ck_assert_int_eq(natomic__cmdlist_insert(&list, 5, "y", probe_command, &x, NULL), NATOMIC_EINVAL);
    natomic__cmdlist_free(&list);

    ck_assert_int_eq(x.frees, 0);
}
END_TEST

START_TEST(free_of_empty_list_is_harmless)
{
    natomic_cmdlist_t list = {0};

    natomic__cmdlist_clear(&list);
    natomic__cmdlist_free(&list);
    natomic__cmdlist_free(&list);
    natomic__cmdlist_clear(NULL);
    natomic__cmdlist_free(NULL);

    ck_assert_uint_eq(list.count, 0);
    ck_assert_ptr_null(list.items);
}
END_TEST

START_TEST(free_twice_does_not_free_args_twice)
{
    natomic_cmdlist_t list = {0};
    probe_t p[3];

    build_abc(&list, p);
    natomic__cmdlist_free(&list);
    natomic__cmdlist_free(&list);

    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(p[i].frees, 1);
}
END_TEST

static Suite *command_list_suite(void)
{
    Suite *s = suite_create("command list");

    TCase *order = tcase_create("order");
    tcase_add_test(order, append_keeps_registration_order);
    tcase_add_test(order, insert_at_zero_goes_first);
    tcase_add_test(order, insert_in_the_middle_shifts_the_rest);
    tcase_add_test(order, insert_at_count_appends);
    tcase_add_test(order, insert_into_empty_list_at_zero);
    tcase_add_test(order, insert_order_survives_growth);
    suite_add_tcase(s, order);

    TCase *refused = tcase_create("refused insert");
    tcase_add_test(refused, insert_past_count_is_refused);
    tcase_add_test(refused, insert_far_past_count_is_refused);
    tcase_add_test(refused, insert_past_count_of_empty_list_is_refused);
    tcase_add_test(refused, insert_without_function_is_refused);
    suite_add_tcase(s, refused);

    TCase *ownership = tcase_create("ownership");
    tcase_add_test(ownership, clear_frees_every_arg_once);
    tcase_add_test(ownership, list_is_reusable_after_clear);
    tcase_add_test(ownership, free_releases_every_arg_once);
    tcase_add_test(ownership, heap_args_are_freed_with_free_arg);
    tcase_add_test(ownership, commands_without_free_arg_are_fine);
    tcase_add_test(ownership, free_of_empty_list_is_harmless);
    tcase_add_test(ownership, free_twice_does_not_free_args_twice);
    suite_add_tcase(s, ownership);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(command_list_suite());
    srunner_run_all(sr, CK_ENV);
    srunner_free(sr);
    return 0; /* results are the TAP lines; a non-zero exit is an ERROR for meson */
}
