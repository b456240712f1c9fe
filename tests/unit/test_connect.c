/*
 * test_connect.c -- the connection settings (libatomic/src/connect.c), no
 * network: what a log may show of a URL, which flags set which field, and
 * what is refused before connecting. The same settings against real
 * servers (password over TLS, token) are tests/cli/test_auth.sh.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <natomic.h>

START_TEST(urls_are_redacted)
{
    static const char *const cases[][2] = {
        {"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
        {"nats://bob:s3cret@127.0.0.1:4222", "nats://***@127.0.0.1:4222"},
        {"tls://tok3n@host:1", "tls://***@host:1"},
        {"nats://a:b@h1:1,nats://h2:2,nats://c:d@e@h3:3", "nats://***@h1:1,nats://h2:2,nats://***@h3:3"},
        {"bob:pw@127.0.0.1:4222", "***@127.0.0.1:4222"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        ck_assert_str_eq(natomic_url_redacted(buf, sizeof buf, cases[i][0]), cases[i][1]);
    }
    char tiny[8];
    const char *cut = natomic_url_redacted(tiny, sizeof tiny, "nats://bob:s3cret@127.0.0.1:4222");
    ck_assert_ptr_null(strstr(cut, "s3cret"));
}
END_TEST

START_TEST(flags_set_their_fields)
{
    natomic_conn_config_t c = {0};
    ck_assert_int_eq(natomic_conn_config_set(&c, "--server", "nats://x:1"), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_set(&c, "user", "u"), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_set(&c, "password", "p"), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_set(&c, "tlsca", "/ca"), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_set(&c, "tlscert", "/c"), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_set(&c, "tlskey", "/k"), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_set(&c, "creds", "/cr"), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_set(&c, "token", "t"), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_set(&c, "inbox-prefix", "_INBOX.me"), NATOMIC_OK);
    ck_assert_str_eq(c.inbox_prefix, "_INBOX.me");
    ck_assert_str_eq(c.url, "nats://x:1");
    ck_assert_str_eq(c.user, "u");
    ck_assert_str_eq(c.password, "p");
    ck_assert_str_eq(c.tls_ca, "/ca");
    ck_assert_str_eq(c.tls_cert, "/c");
    ck_assert_str_eq(c.tls_key, "/k");
    ck_assert_str_eq(c.creds_file, "/cr");
    ck_assert_str_eq(c.token, "t");
    ck_assert_int_eq(natomic_conn_config_set(&c, "nkey", "/seed.nk"), NATOMIC_OK);
    ck_assert_str_eq(c.nkey_file, "/seed.nk");
    ck_assert_int_eq(natomic_conn_config_set(&c, "jwt", "x"), NATOMIC_EINVAL);
    ck_assert_int_eq(natomic_conn_config_set(NULL, "user", "x"), NATOMIC_EINVAL);
}
END_TEST

START_TEST(the_environment_fills_what_flags_left)
{
    setenv("NATS_USER", "env-user", 1);
    setenv("NATS_PASSWORD", "env-pw", 1);
    setenv("NATS_CA", "/env/ca", 1);
    natomic_conn_config_t c = {.user = "flag-user"};
    natomic_conn_config_from_env(&c);
    ck_assert_str_eq(c.user, "flag-user");
    ck_assert_str_eq(c.password, "env-pw");
    ck_assert_str_eq(c.tls_ca, "/env/ca");
    unsetenv("NATS_USER");
    unsetenv("NATS_PASSWORD");
    unsetenv("NATS_CA");
}
END_TEST

/* check() refuses `c` with a message holding `want` and not `secret`. */
static void refused(const natomic_conn_config_t *c, const char *want, const char *secret)
{
    char err[256] = "";
    ck_assert_int_eq(natomic_conn_config_check(c, err, sizeof err), NATOMIC_EINVAL);
    ck_assert_msg(strstr(err, want) != NULL, "message '%s' lacks '%s'", err, want);
    if (secret != NULL)
        ck_assert_msg(strstr(err, secret) == NULL, "message '%s' shows the secret", err);
}

START_TEST(bad_settings_are_refused_before_connecting)
{
    refused(&(natomic_conn_config_t){.password = "pw-77"}, "needs a user", "pw-77");
    refused(&(natomic_conn_config_t){.user = "u", .password = "pw-77", .token = "tk-88"}, "more than one way", "pw-77");
    refused(&(natomic_conn_config_t){.url = "nats://u:pw-77@h:1", .token = "tk-88"}, "more than one way", "tk-88");
    refused(&(natomic_conn_config_t){.tls_cert = "/etc/hostname"}, "needs its key", NULL);
    refused(&(natomic_conn_config_t){.tls_ca = "/nonexistent/ca.pem"}, "--tlsca /nonexistent/ca.pem", NULL);
    refused(&(natomic_conn_config_t){.creds_file = "/nonexistent/u.creds"}, "--creds /nonexistent/u.creds", NULL);
    refused(&(natomic_conn_config_t){.url = ""}, "empty URL", NULL);
    refused(&(natomic_conn_config_t){.inbox_prefix = "_INBOX.>"}, "--inbox-prefix", NULL);
    refused(&(natomic_conn_config_t){.inbox_prefix = "_INBOX..x"}, "--inbox-prefix", NULL);
    refused(&(natomic_conn_config_t){.inbox_prefix = "_INBOX.client."}, "--inbox-prefix", NULL);
    refused(&(natomic_conn_config_t){.inbox_prefix = ""}, "--inbox-prefix", NULL);
    char err[256];
    ck_assert_int_eq(natomic_conn_config_check(&(natomic_conn_config_t){.user = "u", .password = "p"}, err, sizeof err),
                     NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_check(&(natomic_conn_config_t){0}, err, sizeof err), NATOMIC_OK);
    ck_assert_int_eq(natomic_conn_config_check(&(natomic_conn_config_t){.inbox_prefix = "_INBOX.client"}, err,
                                               sizeof err),
                     NATOMIC_OK);
    /* A readable file that is not PEM passes the check and is refused when loaded, still before connecting. */
    natsOptions *o = NULL;
    ck_assert_int_eq(natomic_conn_options(&o, &(natomic_conn_config_t){.tls_ca = "/etc/hostname"}, err, sizeof err),
                     NATOMIC_EINVAL);
    ck_assert_ptr_null(o);
    ck_assert_msg(strstr(err, "--tlsca") != NULL, "message '%s' does not name --tlsca", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("connect");
    TCase *tc = tcase_create("settings");
    tcase_add_test(tc, urls_are_redacted);
    tcase_add_test(tc, flags_set_their_fields);
    tcase_add_test(tc, the_environment_fills_what_flags_left);
    tcase_add_test(tc, bad_settings_are_refused_before_connecting);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_ENV);
    srunner_free(r);
    return 0;
}
