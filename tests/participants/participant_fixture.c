/*
 * participant_fixture.c -- one nats-server per test binary, participants
 * run in-process on fresh SQLite files, raw requests with a chosen
 * Natomic-Tx, and service binaries as children.
 *
 * The server and the work folder are made in main() before Check forks
 * any test and live in globals every forked test inherits. No NATS client
 * call happens in main() before the tests run: nats.c starts threads on
 * first use, and threads do not survive fork().
 */
#include "participant_fixture.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "embedded_nats.h"
#include "sqlite_tx.h"

#define CALL_TIMEOUT_MS 10000
#define CHILD_START_MS 10000
#define CHILD_STOP_MS 10000

static embedded_nats_t nats_server;
static char work_dir[256];

const char *fixture_nats_url(void)
{
    return nats_server.url;
}

int fixture_ms(int ms)
{
    const char *v = getenv("NATOMIC_UNDER_VALGRIND");
    return v != NULL && *v != '\0' && strcmp(v, "0") != 0 ? ms * 5 : ms;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

int participant_main(Suite *suite)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof work_dir, "%s/natomic-participants-XXXXXX", tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
    if (mkdtemp(work_dir) == NULL || embedded_nats_start(&nats_server) != 0) {
        printf("Bail out! cannot start nats-server or make %s\n", work_dir);
        fflush(stdout);
        return 1;
    }
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_ENV);
    srunner_free(runner);
    embedded_nats_stop(&nats_server);
    if (getenv("NATOMIC_KEEP") == NULL)
        nftw(work_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "participants: kept %s\n", work_dir);
    /* Without fork (valgrind) the tests ran here: let nats.c free its threads. */
    nats_CloseAndWait(5000);
    return 0;
}

void fixture_path(char *out, size_t cap, const char *stem, const char *ext)
{
    static int counter;
    int n = snprintf(out, cap, "%s/%s-%ld-%d%s", work_dir, stem, (long)getpid(), counter++, ext);
    ck_assert_msg(n > 0 && (size_t)n < cap, "path in %s too long", work_dir);
}

static natsConnection *connect_or_fail(void)
{
    natsConnection *nc = NULL;
    natomic_status_t st = natomic_connect(&nc, fixture_nats_url(), NULL);
    ck_assert_msg(st == NATOMIC_OK, "natomic_connect(%s): %s", fixture_nats_url(), natomic_strerror(st));
    return nc;
}

void participant_start(participant_t *p, const char *name, participant_register_fn reg)
{
    memset(p, 0, sizeof *p);
    fixture_path(p->db_path, sizeof p->db_path, name, ".db");
    ck_assert_msg(sqlite_tx_open(&p->db, p->db_path, name) == 0, "cannot open %s", p->db_path);
    p->svc_nc = connect_or_fail();
    p->nc = connect_or_fail();
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

static void copy_header(natsMsg *m, const char *key, char *out, size_t cap)
{
    const char *v = NULL;
    snprintf(out, cap, "%s", natsMsgHeader_Get(m, key, &v) == NATS_OK && v != NULL ? v : "");
}

natsStatus participant_send(call_result_t *out, natsConnection *nc, const char *subject, const char *tx,
                            const ProtobufCMessage *request, const ProtobufCMessageDescriptor *reply_desc,
                            int timeout_ms)
{
    memset(out, 0, sizeof *out);
    size_t len = protobuf_c_message_get_packed_size(request);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL)
        return NATS_NO_MEMORY;
    protobuf_c_message_pack(request, buf);
    natsMsg *m = NULL, *reply = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len);
    free(buf);
    if (s == NATS_OK && tx != NULL)
        s = natsMsgHeader_Set(m, NATOMIC_HDR_TX, tx);
    if (s == NATS_OK)
        s = natsConnection_RequestMsg(&reply, nc, m, timeout_ms);
    natsMsg_Destroy(m);
    if (s != NATS_OK)
        return s;
    char code[16];
    copy_header(reply, NATOMIC_HDR_SERVICE_ERROR_CODE, code, sizeof code);
    if (code[0] != '\0') {
        out->code = atoi(code);
        copy_header(reply, NATOMIC_HDR_ERROR_TYPE, out->type, sizeof out->type);
        copy_header(reply, NATOMIC_HDR_SERVICE_ERROR, out->message, sizeof out->message);
    } else {
        out->reply = protobuf_c_message_unpack(reply_desc, NULL, (size_t)natsMsg_GetDataLength(reply),
                                               (const uint8_t *)natsMsg_GetData(reply));
        if (out->reply == NULL) {
            out->code = -1;
            snprintf(out->type, sizeof out->type, "Undecodable");
            snprintf(out->message, sizeof out->message, "success reply of %d bytes is not a %s",
                     natsMsg_GetDataLength(reply), reply_desc->name);
        }
    }
    natsMsg_Destroy(reply);
    return NATS_OK;
}

void participant_result_clear(call_result_t *r)
{
    if (r->reply != NULL)
        protobuf_c_message_free_unpacked(r->reply, NULL);
    memset(r, 0, sizeof *r);
}

void participant_call(call_result_t *out, participant_t *p, const char *subject, const char *tx,
                      const ProtobufCMessage *request, const ProtobufCMessageDescriptor *reply_desc)
{
    natsStatus s = participant_send(out, p->nc, subject, tx, request, reply_desc, fixture_ms(CALL_TIMEOUT_MS));
    ck_assert_msg(s == NATS_OK, "request %s (tx %s): %s", subject, tx != NULL ? tx : "new", natsStatus_GetText(s));
}

ProtobufCMessage *expect_ok(const call_result_t *r, const char *what)
{
    ck_assert_msg(r->code == 0, "%s: expected success, got %d %s: %s", what, r->code, r->type, r->message);
    return r->reply;
}

void expect_error(const call_result_t *r, const char *what, int code, const char *type)
{
    ck_assert_msg(r->code == code && strcmp(r->type, type) == 0, "%s: expected error %d %s, got %d %s (%s)", what,
                  code, type, r->code, r->code == 0 ? "success" : r->type, r->message);
    ck_assert_msg(r->message[0] != '\0', "%s: error %d %s without a message", what, code, type);
}

int64_t participant_db_int(participant_t *p, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(p->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    ck_assert_msg(rc == SQLITE_ROW, "%s: %s", sql, sqlite3_errstr(rc));
    return v;
}

uint64_t participant_barrier_count(participant_t *p, natomic_barrier_outcome_t outcome)
{
    natomic_service_stats_t s;
    natomic_status_t st = natomic_service_get_stats(&s, p->svc);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    return s.barrier[outcome];
}

void child_start(child_service_t *c, const char *bin_env, const char *const args[])
{
    memset(c, 0, sizeof *c);
    const char *bin = getenv(bin_env);
    ck_assert_msg(bin != NULL && *bin != '\0', "%s is not set (meson passes it)", bin_env);
    const char *argv[16] = {bin};
    size_t argc = 1;
    for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
        ck_assert_uint_lt(argc, sizeof argv / sizeof argv[0] - 1);
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    const char *base = strrchr(bin, '/');
    fixture_path(c->log_path, sizeof c->log_path, base != NULL ? base + 1 : bin, ".log");
    /* lab_process_start's argv is not const (execv's is not); it is only read. */
    int rc = lab_process_start(&c->proc, (char *const *)(void *)argv, c->log_path, NULL);
    ck_assert_msg(rc == 0, "cannot start %s", bin);
}

int child_wait_answer(child_service_t *c, natsConnection *nc, const char *subject)
{
    int64_t end = now_ms() + fixture_ms(CHILD_START_MS);
    while (now_ms() < end) {
        natsMsg *r = NULL;
        if (natsConnection_RequestString(&r, nc, subject, "", 200) == NATS_OK) {
            natsMsg_Destroy(r);
            return 1;
        }
        if (waitpid(c->proc.pid, NULL, WNOHANG) == c->proc.pid) {
            c->proc.pid = 0;
            return 0;
        }
        sleep_ms(20);
    }
    return 0;
}

int child_wait_exit(child_service_t *c, int timeout_ms)
{
    int64_t end = now_ms() + fixture_ms(timeout_ms);
    int status = 0;
    while (now_ms() < end) {
        if (waitpid(c->proc.pid, &status, WNOHANG) == c->proc.pid) {
            c->proc.pid = 0;
            return status;
        }
        sleep_ms(10);
    }
    lab_process_stop(&c->proc, SIGKILL, 1000);
    return -1;
}

int child_stop(child_service_t *c, int sig)
{
    return lab_process_stop(&c->proc, sig, CHILD_STOP_MS);
}

void child_log(const child_service_t *c, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(c->log_path, "r");
    if (f == NULL)
        return;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

void fixture_seed_barrier(const char *db_path)
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

int64_t fixture_file_int(const char *db_path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    ck_assert_msg(rc == SQLITE_ROW, "%s on %s: %s", sql, db_path, sqlite3_errstr(rc));
    return v;
}

/* Runs the binary with `args` to its own exit (bounded); asserts the exit status; leaves its log in `log`. */
static void run_to_exit(const char *bin_env, const char *const args[], int want, char *log, size_t cap)
{
    child_service_t c;
    child_start(&c, bin_env, args);
    int status = child_wait_exit(&c, 10000);
    child_log(&c, log, cap);
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
