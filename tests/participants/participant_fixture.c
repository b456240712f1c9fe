/*
 * participant_fixture.c -- participants run in-process on fresh SQLite
 * files, their replies checked, and their binaries' refusals; the server,
 * raw requests and children are tests/fixture's.
 */
#include "participant_fixture.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "embedded_nats.h"
#include "sqlite_tx.h"

#define CALL_TIMEOUT_MS 10000

void participant_start(participant_t *p, const char *name, participant_register_fn reg)
{
    memset(p, 0, sizeof *p);
    fixture_path(p->db_path, sizeof p->db_path, name, ".db");
    ck_assert_msg(sqlite_tx_open(&p->db, p->db_path, name) == 0, "cannot open %s", p->db_path);
    p->svc_nc = fixture_connect();
    p->nc = fixture_connect();
    natomic_service_config_t cfg = {.name = name, .version = NATOMIC_VERSION, .max_workers = 10};
    natomic_status_t st = natomic_service_new(&p->svc, p->svc_nc, &cfg);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    st = reg(p->svc, p->db);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    st = natomic_service_start(p->svc);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    /* The service's subscriptions are registered with the server once its connection flushed. */
    ck_assert_int_eq(natsConnection_FlushTimeout(p->svc_nc, fixture_ms(5000)), NATS_OK);
}

void participant_stop(participant_t *p)
{
    natomic_service_destroy(p->svc);
    natsConnection_Destroy(p->svc_nc);
    natsConnection_Destroy(p->nc);
    sqlite3_close(p->db);
    memset(p, 0, sizeof *p);
}

void participant_call(fixture_reply_t *out, participant_t *p, const char *subject, const char *tx,
                      const ProtobufCMessage *request, const ProtobufCMessageDescriptor *reply_desc)
{
    natsStatus s = fixture_request_tx(out, p->nc, subject, tx, request, reply_desc, fixture_ms(CALL_TIMEOUT_MS));
    ck_assert_msg(s == NATS_OK, "request %s (tx %s): %s", subject, tx != NULL ? tx : "new", natsStatus_GetText(s));
}

ProtobufCMessage *expect_ok(const fixture_reply_t *r, const char *what)
{
    ck_assert_msg(r->code == 0, "%s: expected success, got %d %s: %s", what, r->code, r->type, r->message);
    return r->reply;
}

void expect_error(const fixture_reply_t *r, const char *what, int code, const char *type)
{
    ck_assert_msg(r->code == code && strcmp(r->type, type) == 0, "%s: expected error %d %s, got %d %s (%s)", what,
                  code, type, r->code, r->code == 0 ? "success" : r->type, r->message);
    ck_assert_msg(r->message[0] != '\0', "%s: error %d %s without a message", what, code, type);
}

int64_t participant_db_int(participant_t *p, const char *sql)
{
    return fixture_query_int(p->db, "%s", sql);
}

uint64_t participant_barrier_count(participant_t *p, natomic_barrier_outcome_t outcome)
{
    natomic_service_stats_t s;
    natomic_status_t st = natomic_service_get_stats(&s, p->svc);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    return s.barrier[outcome];
}

const char *participant_long_text(void)
{
    static char text[202];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    return text;
}

void participant_seed_barrier(const char *db_path)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite_tx_open(&db, db_path, "test"), 0);
    ck_assert_str_eq(natomic_status_name(natomic_barrier_init(db)), "NATOMIC_OK");
    char sql[512];
    long long now = (long long)time(NULL);
    snprintf(sql, sizeof sql,
             "INSERT INTO natomic_barrier(tx, branch, op, reason, created_at) VALUES"
             " ('tx-old', 'order-old', 'action', 'action', %lld),"
             " ('tx-new', 'order-new', 'action', 'action', %lld)",
             now - 8 * 24 * 3600, now);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    ck_assert_msg(rc == SQLITE_OK, "seeding the barrier of %s: %s", db_path, sqlite3_errstr(rc));
}

void participant_check_swept(const char *db_path)
{
    const char *old = "SELECT count(*) FROM natomic_barrier WHERE tx = 'tx-old'";
    int64_t end = fixture_now_ms() + fixture_ms(5000);
    while (fixture_db_int(db_path, "%s", old) != 0 && fixture_now_ms() < end)
        fixture_sleep_ms(20);
    ck_assert_int_eq(fixture_db_int(db_path, "%s", old), 0);
    ck_assert_int_eq(fixture_db_int(db_path, "SELECT count(*) FROM natomic_barrier WHERE tx = 'tx-new'"), 1);
}

/* Runs the binary with `args` to its own exit (bounded); asserts the exit status; leaves its log in `log`. */
static void run_to_exit(const char *bin_env, const char *const args[], int want, char *log, size_t cap)
{
    fixture_child_t c;
    memset(&c, 0, sizeof c);
    fixture_spawn(&c, fixture_bin(bin_env), args, NULL);
    int status = -1;
    if (!fixture_wait_exit(&c, fixture_ms(10000), &status)) {
        fixture_stop_child(&c, SIGKILL);
        status = -1;
    }
    fixture_read_file(c.log_path, log, cap);
    ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == want,
                  "%s %s: expected exit %d, got wait status %#x: %s", bin_env, args[0], want, (unsigned)status, log);
}

void check_binary_refusals(const char *bin_env, const char *help_needle)
{
    char db_path[512], url[64], log[4096];
    fixture_path(db_path, sizeof db_path, "refusals", ".db");
    int port = embedded_nats_free_port();
    ck_assert_int_gt(port, 0);
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port); /* nobody listens there */

    const char *unreachable[] = {"--nats", url, "--db", db_path, NULL};
    run_to_exit(bin_env, unreachable, 1, log, sizeof log);
    ck_assert_msg(strstr(log, "cannot connect to") != NULL && strstr(log, url) != NULL,
                  "no clear message naming %s: %s", url, log);

    const char *bad[] = {"--workers", "0", NULL};
    run_to_exit(bin_env, bad, 2, log, sizeof log);
    ck_assert_msg(strstr(log, "--workers") != NULL, "no message about --workers: %s", log);

    const char *help[] = {"--help", NULL};
    run_to_exit(bin_env, help, 0, log, sizeof log);
    ck_assert_msg(strstr(log, help_needle) != NULL, "--help does not mention %s: %s", help_needle, log);
}
