/*
 * test_status.c -- status names and texts, error codes, outcome names.
 *
 * Runs against the shared library, so it also proves these functions are
 * exported and usable by a service. Proves:
 *   - every status of NATOMIC_STATUS_LIST has its own text and its own
 *     symbolic name (the one in the list, starting with "NATOMIC_");
 *   - statuses outside the list give "unknown status", never NULL;
 *   - natomic_error_code() and natomic_error_kind() round-trip for the six
 *     error kinds (400, 404, 422, 500, 503, 504); other statuses send 500
 *     and unknown codes read as EINTERNAL, as natomic.h says;
 *   - natomic_outcome_name() gives the words of the Natomic-Rollback header.
 */
#include "natomic.h"

#include <check.h>
#include <string.h>

/* The list as the test sees it, built from the same X-macro as the library's tables. */
static const struct {
    natomic_status_t status;
    const char *name;
    const char *text;
} expected_status[] = {
#define X(name, text) {name, #name, text},
    NATOMIC_STATUS_LIST(X)
#undef X
};

#define N_STATUS ((int)(sizeof expected_status / sizeof expected_status[0]))

static const struct {
    natomic_status_t kind;
    int code;
} error_kinds[] = {
    {NATOMIC_EBADINPUT, 400}, {NATOMIC_ENOMETHOD, 404},  {NATOMIC_EBUSINESS, 422},
    {NATOMIC_EINTERNAL, 500}, {NATOMIC_ETRANSIENT, 503}, {NATOMIC_ETIMEOUT, 504},
};

#define N_ERROR_KINDS ((int)(sizeof error_kinds / sizeof error_kinds[0]))

static bool is_error_kind(natomic_status_t st)
{
    for (int i = 0; i < N_ERROR_KINDS; i++)
        if (error_kinds[i].kind == st)
            return true;
    return false;
}

START_TEST(list_and_enum_agree)
{
    ck_assert_int_eq(N_STATUS, NATOMIC_STATUS_COUNT_);
    for (int i = 0; i < N_STATUS; i++)
        ck_assert_int_eq(expected_status[i].status, i);
}
END_TEST

START_TEST(every_status_has_its_name_and_text)
{
    for (int i = 0; i < N_STATUS; i++) {
        natomic_status_t st = expected_status[i].status;
        const char *name = natomic_status_name(st);
        const char *text = natomic_strerror(st);

        ck_assert_ptr_nonnull(name);
        ck_assert_ptr_nonnull(text);
        ck_assert_str_eq(name, expected_status[i].name);
        ck_assert_str_eq(text, expected_status[i].text);
        ck_assert_msg(strncmp(name, "NATOMIC_", 8) == 0, "status %d is named '%s', not NATOMIC_*", i, name);
        ck_assert_msg(strlen(text) > 0, "status %s has an empty text", name);
    }
}
END_TEST

START_TEST(status_texts_and_names_are_distinct)
{
    for (int i = 0; i < N_STATUS; i++)
        for (int j = i + 1; j < N_STATUS; j++) {
            natomic_status_t a = expected_status[i].status, b = expected_status[j].status;
            ck_assert_msg(strcmp(natomic_strerror(a), natomic_strerror(b)) != 0, "%s and %s share the text '%s'",
                          natomic_status_name(a), natomic_status_name(b), natomic_strerror(a));
            ck_assert_str_ne(natomic_status_name(a), natomic_status_name(b));
        }
}
END_TEST

START_TEST(out_of_range_status_is_unknown)
{
    static const int values[] = {NATOMIC_STATUS_COUNT_, NATOMIC_STATUS_COUNT_ + 1, 1000, -1};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        natomic_status_t st = (natomic_status_t)values[i];
        ck_assert_str_eq(natomic_strerror(st), "unknown status");
        ck_assert_ptr_nonnull(natomic_status_name(st));
    }
}
END_TEST

START_TEST(error_codes_round_trip)
{
    for (int i = 0; i < N_ERROR_KINDS; i++) {
        natomic_status_t kind = error_kinds[i].kind;
        int code = error_kinds[i].code;

        ck_assert_msg(natomic_error_code(kind) == code, "natomic_error_code(%s) = %d, expected %d",
                      natomic_status_name(kind), natomic_error_code(kind), code);
        ck_assert_str_eq(natomic_status_name(natomic_error_kind(code)), natomic_status_name(kind));
    }
}
END_TEST

START_TEST(other_statuses_send_500)
{
    for (int i = 0; i < N_STATUS; i++) {
        natomic_status_t st = expected_status[i].status;
        if (is_error_kind(st))
            continue;
        ck_assert_msg(natomic_error_code(st) == 500, "natomic_error_code(%s) = %d, expected 500",
                      natomic_status_name(st), natomic_error_code(st));
    }
}
END_TEST

/* Asserts natomic_error_kind(code) is EINTERNAL for each code, as natomic.h says of unknown codes. */
static void check_codes_read_as_internal(const int *codes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        natomic_status_t kind = natomic_error_kind(codes[i]);
        ck_assert_msg(kind == NATOMIC_EINTERNAL, "natomic_error_kind(%d) = %s, expected NATOMIC_EINTERNAL", codes[i],
                      natomic_status_name(kind));
    }
}

START_TEST(unknown_codes_read_as_internal)
{
    static const int codes[] = {0, -1, 200, 302, 501, 599, 600, 99999};
    check_codes_read_as_internal(codes, sizeof codes / sizeof codes[0]);
}
END_TEST

/*
 * natomic.h: "The inverse: the error kind for a received code (unknown
 * codes: EINTERNAL)" -- 4xx codes other than 400, 404 and 422 included.
 */
/* Unknown 4xx codes are client errors: bad input, never retried. */
START_TEST(unknown_4xx_codes_read_as_bad_input)
{
    static const int codes[] = {401, 403, 409, 418, 429, 499};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        ck_assert_msg(natomic_error_kind(codes[i]) == NATOMIC_EBADINPUT, "natomic_error_kind(%d) = %s, want NATOMIC_EBADINPUT",
                      codes[i], natomic_status_name(natomic_error_kind(codes[i])));
}
END_TEST

START_TEST(outcome_names)
{
    ck_assert_str_eq(natomic_outcome_name(NATOMIC_OUTCOME_NONE), "none");
    ck_assert_str_eq(natomic_outcome_name(NATOMIC_OUTCOME_COMPLETE), "complete");
    ck_assert_str_eq(natomic_outcome_name(NATOMIC_OUTCOME_INCOMPLETE), "incomplete");
    ck_assert_ptr_nonnull(natomic_outcome_name((natomic_outcome_t)42));
}
END_TEST

static Suite *status_suite(void)
{
    Suite *s = suite_create("status");

    TCase *names = tcase_create("names and texts");
    tcase_add_test(names, list_and_enum_agree);
    tcase_add_test(names, every_status_has_its_name_and_text);
    tcase_add_test(names, status_texts_and_names_are_distinct);
    tcase_add_test(names, out_of_range_status_is_unknown);
    suite_add_tcase(s, names);

    TCase *codes = tcase_create("error codes");
    tcase_add_test(codes, error_codes_round_trip);
    tcase_add_test(codes, other_statuses_send_500);
    tcase_add_test(codes, unknown_codes_read_as_internal);
    tcase_add_test(codes, unknown_4xx_codes_read_as_bad_input);
    suite_add_tcase(s, codes);

    TCase *outcome = tcase_create("outcome");
    tcase_add_test(outcome, outcome_names);
    suite_add_tcase(s, outcome);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(status_suite());
    srunner_run_all(sr, CK_ENV);
    srunner_free(sr);
    return 0; /* results are the TAP lines; a non-zero exit is an ERROR for meson */
}
