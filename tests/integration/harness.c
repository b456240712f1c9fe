/*
 * harness.c -- one nats-server per test binary, connections, child
 * services, the conversions history, and bounded message collection.
 *
 * The server and the work folder are made in main() before Check forks
 * any test, and live in globals every forked test inherits. No NATS
 * client call happens in main() before the tests run: nats.c starts
 * threads on first use, and threads do not survive fork().
 */
#include "harness.h"

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

#include "conversions.pb-c.h"
#include "embedded_nats.h"

#define CHILD_START_MS 10000
#define CHILD_STOP_MS 10000

static embedded_nats_t nats_server;
static char work_dir[256];

const char *harness_nats_url(void)
{
    return nats_server.url;
}

int harness_ms(int ms)
{
    const char *v = getenv("NATOMIC_UNDER_VALGRIND");
    return v != NULL && *v != '\0' && strcmp(v, "0") != 0 ? ms * 5 : ms;
}

int64_t harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void harness_sleep_ms(int ms)
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

int harness_run(Suite *suite)
{
    SRunner *runner = srunner_create(suite);
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof work_dir, "%s/natomic-it-XXXXXX", tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
    if (mkdtemp(work_dir) == NULL) {
        printf("Bail out! cannot make %s: %s\n", work_dir, strerror(errno));
        srunner_free(runner);
        return 1;
    }
    if (embedded_nats_start(&nats_server) != 0) {
        printf("Bail out! cannot start nats-server (see stderr)\n");
        rmdir(work_dir);
        srunner_free(runner);
        return 1;
    }
    srunner_run_all(runner, CK_ENV);
    srunner_free(runner);
    embedded_nats_stop(&nats_server);
    if (getenv("NATOMIC_KEEP") == NULL)
        nftw(work_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "harness: kept %s\n", work_dir);
    /* Without fork (valgrind) the tests ran here: let nats.c free its threads. */
    nats_CloseAndWait(5000);
    return 0;
}

void harness_path(char *out, size_t cap, const char *stem, const char *ext)
{
    static int counter;
    int n = snprintf(out, cap, "%s/%s-%ld-%d%s", work_dir, stem, (long)getpid(), counter++, ext);
    ck_assert_msg(n > 0 && (size_t)n < cap, "path in %s too long", work_dir);
}

natsConnection *harness_connect(void)
{
    natsConnection *nc = NULL;
    natomic_status_t st = natomic_connect(&nc, harness_nats_url(), NULL);
    ck_assert_msg(st == NATOMIC_OK, "natomic_connect(%s): %s", harness_nats_url(), natomic_strerror(st));
    return nc;
}

const char *harness_header(natsMsg *m, const char *key)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

natomic_status_t harness_call(natsConnection *nc, const char *subject, double inches, int timeout_ms, double *cm,
                              natomic_call_info_t *info)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = inches;
    ProtobufCMessage *reply = NULL;
    natomic_status_t st = natomic_request(&reply, nc, subject, &req.base,
                                          &conversions__inches_to_cm_reply__descriptor, timeout_ms, info);
    if (st == NATOMIC_OK) {
        if (cm != NULL)
            *cm = ((Conversions__InchesToCmReply *)reply)->cm;
        protobuf_c_message_free_unpacked(reply, NULL);
    }
    return st;
}

natsMsg *harness_request_msg(const char *subject, double inches)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = inches;
    uint8_t buf[32];
    size_t len = protobuf_c_message_pack(&req.base, buf);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len);
    ck_assert_msg(s == NATS_OK, "natsMsg_Create(%s): %s", subject, natsStatus_GetText(s));
    return m;
}

json_t *harness_request_json(natsConnection *nc, const char *subject)
{
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, nc, subject, "", harness_ms(5000));
    ck_assert_msg(s == NATS_OK, "request %s: %s", subject, natsStatus_GetText(s));
    json_error_t err;
    json_t *doc = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, &err);
    ck_assert_msg(doc != NULL && json_is_object(doc), "%s answered no JSON object (%s): %.*s", subject, err.text,
                  natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
    natsMsg_Destroy(reply);
    return doc;
}

int harness_collect(natsSubscription *sub, natsMsg **out, int max, int want, int quiet_ms, int total_ms)
{
    int n = 0;
    int64_t end = harness_now_ms() + total_ms;
    while (n < max) {
        int64_t left = end - harness_now_ms();
        if (left <= 0)
            break;
        int64_t wait = n < want || left < quiet_ms ? left : quiet_ms;
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, sub, wait) != NATS_OK)
            break;
        out[n++] = m;
    }
    return n;
}

void harness_msgs_destroy(natsMsg **msgs, int n)
{
    for (int i = 0; i < n; i++)
        natsMsg_Destroy(msgs[i]);
}

/* True when `subject` answered a request within the bounded start time. */
static bool wait_answer(natsConnection *nc, const char *subject, const lab_process_t *proc)
{
    int64_t end = harness_now_ms() + harness_ms(CHILD_START_MS);
    while (harness_now_ms() < end) {
        natsMsg *r = NULL;
        if (natsConnection_RequestString(&r, nc, subject, "", 200) == NATS_OK) {
            natsMsg_Destroy(r);
            return true;
        }
        if (waitpid(proc->pid, NULL, WNOHANG) == proc->pid)
            return false; /* the child died: no point waiting */
        harness_sleep_ms(20);
    }
    return false;
}

void harness_child_start(harness_child_t *child, natsConnection *nc, const char *bin_env, const char *ping_subject,
                         const char *const args[])
{
    const char *bin = getenv(bin_env);
    ck_assert_msg(bin != NULL && *bin != '\0', "%s is not set (meson passes it)", bin_env);
    const char *argv[16] = {bin, "--nats", harness_nats_url()};
    size_t argc = 3;
    for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
        ck_assert_uint_lt(argc, sizeof argv / sizeof argv[0] - 1);
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    const char *base = strrchr(bin, '/');
    if (child->log_path[0] == '\0')
        harness_path(child->log_path, sizeof child->log_path, base != NULL ? base + 1 : bin, ".log");
    /* lab_process_start's argv is not const (execv's is not); it is only read. */
    int rc = lab_process_start(&child->proc, (char *const *)(void *)argv, child->log_path, NULL);
    ck_assert_msg(rc == 0, "cannot start %s", bin);
    bool up = wait_answer(nc, ping_subject, &child->proc);
    if (!up)
        harness_child_stop(child, SIGKILL);
    ck_assert_msg(up, "%s never answered %s (log: %s)", bin, ping_subject, child->log_path);
}

void harness_conversions_start(harness_child_t *child, natsConnection *nc)
{
    memset(child, 0, sizeof *child);
    harness_path(child->db_path, sizeof child->db_path, "conversions", ".db");
    const char *args[] = {"--db", child->db_path, NULL};
    harness_child_start(child, nc, "CONVERSIONS_BIN", "$SRV.PING.conversions", args);
}

int harness_child_stop(harness_child_t *child, int sig)
{
    return lab_process_stop(&child->proc, sig, CHILD_STOP_MS);
}

int64_t harness_db_int(const char *db_path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    char err[256];
    snprintf(err, sizeof err, "%s", db != NULL ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_finalize(st);
    sqlite3_close(db);
    ck_assert_msg(rc == SQLITE_ROW, "%s on %s: %s", sql, db_path, err);
    return v;
}
