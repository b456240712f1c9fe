/*
 * test_supervisor.c -- the lab's harness against real processes: the TCP
 * fault proxy between a NATS client and a real nats-server (pass, cut,
 * blackhole, delay, heal), the supervisor driving the conversions service
 * (kill, restart, pause, resume -- of every instance or of one -- link
 * faults, NATS restart, fault points through libfiu's control FIFO, logs),
 * and cleanup: after the process
 * that ran a supervisor is SIGKILLed, nothing it started is left.
 *
 * The cleanup tests re-run this binary as the supervising child
 * (`--cleanup-child FD MODE`), so the child starts fresh even when the
 * tests run without fork (valgrind); it reports its pids through a pipe.
 *
 * Every wait is bounded; waits scale by 5 under valgrind.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <natomic.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conversions.pb-c.h"
#include "embedded_nats.h"
#include "fault_proxy.h"
#include "fixture.h"
#include "supervisor.h"

#define SUBJECT "conversions.inches_to_cm"

static char self_path[PATH_MAX];

/* ------------------------------------------------------------------ */
/* The proxy between a client and a real nats-server                   */
/* ------------------------------------------------------------------ */

typedef struct proxy_fixture {
    embedded_nats_t nats;
    natsConnection *direct;   /* the echo responder's connection */
    natsSubscription *echo;
    fault_proxy_t *proxy;
    natsConnection *via;      /* the client behind the proxy     */
} proxy_fixture_t;

static void echo_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    (void)closure;
    if (natsMsg_GetReply(msg) != NULL)
        natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

static void proxy_up(proxy_fixture_t *f)
{
    memset(f, 0, sizeof *f);
    ck_assert_msg(embedded_nats_start(&f->nats) == 0, "nats-server did not start");
    natomic_status_t st = natomic_connect(&f->direct, f->nats.url, NULL);
    ck_assert_msg(st == NATOMIC_OK, "connect %s: %s", f->nats.url, natomic_strerror(st));
    natsStatus s = natsConnection_Subscribe(&f->echo, f->direct, "echo", echo_cb, NULL);
    if (s == NATS_OK)
        s = natsConnection_Flush(f->direct);
    ck_assert_msg(s == NATS_OK, "subscribe echo: %s", natsStatus_GetText(s));
    ck_assert_int_eq(fault_proxy_start(&f->proxy, f->nats.port), 0);
    ck_assert_msg(fault_proxy_port(f->proxy) > 0 && fault_proxy_port(f->proxy) != f->nats.port,
                  "proxy port %d (nats %d)", fault_proxy_port(f->proxy), f->nats.port);
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", fault_proxy_port(f->proxy));
    st = natomic_connect(&f->via, url, NULL);
    ck_assert_msg(st == NATOMIC_OK, "connect through the proxy %s: %s", url, natomic_strerror(st));
}

static void proxy_down(proxy_fixture_t *f)
{
    natsConnection_Destroy(f->via);
    fault_proxy_stop(f->proxy);
    natsSubscription_Destroy(f->echo);
    natsConnection_Destroy(f->direct);
    embedded_nats_stop(&f->nats);
}

/* A request through the proxy; the status, and the payload checked on success. */
static natsStatus echo(proxy_fixture_t *f, const char *payload, int timeout_ms)
{
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, f->via, "echo", payload, timeout_ms);
    if (s == NATS_OK) {
        ck_assert_msg((size_t)natsMsg_GetDataLength(reply) == strlen(payload) &&
                          memcmp(natsMsg_GetData(reply), payload, strlen(payload)) == 0,
                      "echo came back different (%d bytes, sent %zu)", natsMsg_GetDataLength(reply),
                      strlen(payload));
        natsMsg_Destroy(reply);
    }
    return s;
}

/* Retries until a request succeeds; the time it took, or -1 after total_ms. */
static int64_t echo_until_ok(proxy_fixture_t *f, int total_ms)
{
    int64_t start = fixture_now_ms(), end = start + total_ms;
    while (fixture_now_ms() < end) {
        if (echo(f, "again", 300) == NATS_OK)
            return fixture_now_ms() - start;
        fixture_sleep_ms(50);
    }
    return -1;
}

START_TEST(proxy_pass_cut_heal)
{
    proxy_fixture_t f;
    proxy_up(&f);
    natsStatus s = echo(&f, "hello", fixture_ms(2000));
    ck_assert_msg(s == NATS_OK, "request through a passing proxy: %s", natsStatus_GetText(s));

    fault_proxy_set(f.proxy, FAULT_PROXY_CUT, 0);
    int64_t end = fixture_now_ms() + fixture_ms(5000);
    while (natsConnection_Status(f.via) == NATS_CONN_STATUS_CONNECTED && fixture_now_ms() < end)
        fixture_sleep_ms(10);
    natsConnStatus cs = natsConnection_Status(f.via);
    ck_assert_msg(cs != NATS_CONN_STATUS_CONNECTED, "the client still says connected after the cut (status %d)",
                  (int)cs);
    s = echo(&f, "lost", 300);
    ck_assert_msg(s != NATS_OK, "a request went through a cut proxy");
    /* Its reconnects are accepted and closed: it stays disconnected while cut. */
    fixture_sleep_ms(500);
    cs = natsConnection_Status(f.via);
    ck_assert_msg(cs != NATS_CONN_STATUS_CONNECTED, "the client reconnected through a cut proxy (status %d)",
                  (int)cs);

    fault_proxy_set(f.proxy, FAULT_PROXY_PASS, 0);
    int64_t took = echo_until_ok(&f, fixture_ms(10000));
    ck_assert_msg(took >= 0, "no request went through within %d ms of the heal", fixture_ms(10000));
    proxy_down(&f);
}
END_TEST

START_TEST(proxy_blackhole_heal)
{
    proxy_fixture_t f;
    proxy_up(&f);
    natsStatus s = echo(&f, "hello", fixture_ms(2000));
    ck_assert_msg(s == NATS_OK, "request through a passing proxy: %s", natsStatus_GetText(s));

    fault_proxy_set(f.proxy, FAULT_PROXY_BLACKHOLE, 0);
    s = echo(&f, "into the void", 300);
    ck_assert_msg(s == NATS_TIMEOUT, "request in a blackhole: %s, expected a timeout", natsStatus_GetText(s));
    s = echo(&f, "again", 300);
    ck_assert_msg(s == NATS_TIMEOUT, "second request in a blackhole: %s, expected a timeout", natsStatus_GetText(s));
    /* Silence, not a close: the client has no reason to think it is disconnected. */
    natsConnStatus cs = natsConnection_Status(f.via);
    ck_assert_msg(cs == NATS_CONN_STATUS_CONNECTED, "status %d in a blackhole, expected connected", (int)cs);

    fault_proxy_set(f.proxy, FAULT_PROXY_PASS, 0);
    int64_t took = echo_until_ok(&f, fixture_ms(10000));
    ck_assert_msg(took >= 0, "no request went through within %d ms of the heal", fixture_ms(10000));
    proxy_down(&f);
}
END_TEST

START_TEST(proxy_delay)
{
    proxy_fixture_t f;
    proxy_up(&f);
    fault_proxy_set(f.proxy, FAULT_PROXY_DELAY, 300);
    natsStatus s = echo(&f, "slow", 100);
    ck_assert_msg(s == NATS_TIMEOUT, "request with 100 ms through a 300 ms delay: %s, expected a timeout",
                  natsStatus_GetText(s));
    s = echo(&f, "slow but in time", fixture_ms(2000));
    ck_assert_msg(s == NATS_OK, "request with 2 s through a 300 ms delay: %s", natsStatus_GetText(s));

    /* A payload bigger than one read, in order, through the delay and then the plain pipe. */
    size_t big_len = 600 * 1024;
    char *big = malloc(big_len + 1);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    big[big_len] = '\0';
    s = echo(&f, big, fixture_ms(5000));
    ck_assert_msg(s == NATS_OK, "600 KiB echo through a delay: %s", natsStatus_GetText(s));
    fault_proxy_set(f.proxy, FAULT_PROXY_PASS, 0);
    s = echo(&f, big, fixture_ms(5000));
    ck_assert_msg(s == NATS_OK, "600 KiB echo after the heal: %s", natsStatus_GetText(s));
    free(big);
    proxy_down(&f);
}
END_TEST

START_TEST(proxy_stop_with_open_connections)
{
    /* Stopping while a client is connected (and in a fault mode) closes and frees everything. */
    proxy_fixture_t f;
    proxy_up(&f);
    fault_proxy_set(f.proxy, FAULT_PROXY_DELAY, 1000);
    natsConnection_PublishString(f.via, "echo", "pending");
    fault_proxy_stop(f.proxy);
    f.proxy = NULL;
    int64_t end = fixture_now_ms() + fixture_ms(5000);
    while (natsConnection_Status(f.via) == NATS_CONN_STATUS_CONNECTED && fixture_now_ms() < end)
        fixture_sleep_ms(10);
    ck_assert_msg(natsConnection_Status(f.via) != NATS_CONN_STATUS_CONNECTED,
                  "the client is still connected after the proxy stopped");
    fault_proxy_stop(NULL); /* a no-op */
    proxy_down(&f);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The supervisor with the conversions service                         */
/* ------------------------------------------------------------------ */

static void sv_up(supervisor_t *sv, const char *faults)
{
    ck_assert_msg(supervisor_start(sv, 42) == 0, "supervisor_start failed (see stderr)");
    ck_assert_msg(supervisor_add_service(sv, "conversions", 1, faults) == 0,
                  "conversions did not start (NATOMIC_SERVICES_DIR=%s; see stderr)",
                  getenv("NATOMIC_SERVICES_DIR") != NULL ? getenv("NATOMIC_SERVICES_DIR") : "(unset)");
}

static natomic_status_t convert(supervisor_t *sv, double inches, int timeout_ms, natomic_call_info_t *info)
{
    Conversions__InchesToCmRequest req = CONVERSIONS__INCHES_TO_CM_REQUEST__INIT;
    req.inches = inches;
    ProtobufCMessage *reply = NULL;
    natomic_call_info_t local;
    natomic_status_t st = natomic_request(&reply, sv->nc, SUBJECT, &req.base,
                                          &conversions__inches_to_cm_reply__descriptor, timeout_ms,
                                          info != NULL ? info : &local);
    if (st == NATOMIC_OK) {
        double cm = ((Conversions__InchesToCmReply *)reply)->cm;
        ck_assert_msg(cm > inches * 2.54 - 1e-9 && cm < inches * 2.54 + 1e-9, "%g in = %g cm?", inches, cm);
        protobuf_c_message_free_unpacked(reply, NULL);
    }
    return st;
}

/* Retries until a call succeeds within total_ms; the last status. */
static natomic_status_t convert_until_ok(supervisor_t *sv, int total_ms)
{
    int64_t end = fixture_now_ms() + total_ms;
    natomic_status_t st;
    do {
        st = convert(sv, 1.0, 500, NULL);
        if (st == NATOMIC_OK)
            return st;
        fixture_sleep_ms(50);
    } while (fixture_now_ms() < end);
    return st;
}

static int64_t history_rows(const supervisor_t *sv)
{
    return fixture_db_int(sv->svc[0].db_path, "SELECT count(*) FROM history");
}

START_TEST(supervisor_kill_and_restart)
{
    supervisor_t sv;
    sv_up(&sv, NULL);
    int n = 0;
    supervised_service_t *s = supervisor_find(&sv, "conversions", &n);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_null(supervisor_find(&sv, "nonesuch", &n));
    ck_assert_int_eq(n, 0);

    natomic_status_t st = convert(&sv, 2.0, fixture_ms(5000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "first call: %s", natomic_strerror(st));
    ck_assert_int_eq(history_rows(&sv), 1);

    pid_t old_pid = s->proc.pid;
    ck_assert_int_eq(supervisor_kill(&sv, "conversions"), 0);
    ck_assert_int_eq(s->proc.pid, 0);
    ck_assert_msg(kill(old_pid, 0) == -1 && errno == ESRCH, "pid %ld still exists after the kill", (long)old_pid);
    int64_t end = fixture_now_ms() + fixture_ms(5000);
    do {
        st = convert(&sv, 1.0, 500, NULL);
    } while (st != NATOMIC_ENORESPONDERS && fixture_now_ms() < end);
    ck_assert_msg(st == NATOMIC_ENORESPONDERS, "call to a killed service: %s, expected no responders",
                  natomic_status_name(st));
    ck_assert_int_eq(supervisor_kill(&sv, "conversions"), 0); /* again: nothing left to kill */

    ck_assert_int_eq(supervisor_restart(&sv, "conversions"), 0);
    ck_assert_msg(s->proc.pid > 0 && s->proc.pid != old_pid, "restart pid %ld (old %ld)", (long)s->proc.pid,
                  (long)old_pid);
    ck_assert_int_eq(history_rows(&sv), 1); /* the database outlived the process */
    st = convert(&sv, 3.0, fixture_ms(5000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "call after the restart: %s", natomic_strerror(st));
    ck_assert_int_eq(history_rows(&sv), 2);

    /* Restart of a running service: killed and started again. */
    pid_t second = s->proc.pid;
    ck_assert_int_eq(supervisor_restart(&sv, "conversions"), 0);
    ck_assert_msg(s->proc.pid > 0 && s->proc.pid != second, "second restart pid %ld", (long)s->proc.pid);

    char *tail = supervisor_log_tail(&sv, "conversions", 50);
    ck_assert_ptr_nonnull(tail);
    ck_assert_msg(strstr(tail, "conversions| ---- supervisor: restart of conversions") != NULL,
                  "no restart marker in the log tail:\n%s", tail);
    ck_assert_msg(strstr(tail, "SIGKILL to conversions") != NULL, "no kill marker in the log tail:\n%s", tail);
    /* A marker for a process not running names no pid (it once said "(pid 0)"). */
    ck_assert_msg(strstr(tail, "(pid 0)") == NULL, "a marker names pid 0:\n%s", tail);
    free(tail);
    tail = supervisor_log_tail(&sv, "conversions", 1);
    ck_assert_ptr_nonnull(tail);
    ck_assert_msg(strchr(tail, '\n') == tail + strlen(tail) - 1, "one line asked, got:\n%s", tail);
    free(tail);
    ck_assert_ptr_null(supervisor_log_tail(&sv, "nonesuch", 10));

    ck_assert_int_eq(supervisor_kill(&sv, "nonesuch"), -1);
    ck_assert_int_eq(supervisor_restart(&sv, "nonesuch"), -1);
    supervisor_stop(&sv, false);
    supervisor_stop(&sv, false); /* twice: a no-op */
}
END_TEST

#ifndef NATOMIC_NO_FAULT_POINTS
START_TEST(supervisor_faults_only_at_first_start)
{
    supervisor_t sv;
    sv_up(&sv, "natomic/before_handler=error");
    natomic_call_info_t info;
    natomic_status_t st = convert(&sv, 1.0, fixture_ms(5000), &info);
    ck_assert_msg(st == NATOMIC_ETRANSIENT && strcmp(info.type, "InjectedFault") == 0,
                  "call with NATOMIC_FAULTS: %s type '%s', expected ETRANSIENT InjectedFault",
                  natomic_status_name(st), info.type);
    ck_assert_int_eq(supervisor_restart(&sv, "conversions"), 0);
    st = convert(&sv, 1.0, fixture_ms(5000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "call after the restart (faults are for the first start only): %s",
                  natomic_status_name(st));
    supervisor_stop(&sv, false);
}
END_TEST
#endif

START_TEST(supervisor_pause_and_resume)
{
    supervisor_t sv;
    sv_up(&sv, NULL);
    supervised_service_t *s = supervisor_find(&sv, "conversions", NULL);
    ck_assert_int_eq(supervisor_pause(&sv, "conversions"), 0);
    ck_assert(s->paused);
    natomic_status_t st = convert(&sv, 1.0, 500, NULL);
    ck_assert_msg(st == NATOMIC_ETIMEOUT, "call to a paused service: %s, expected a timeout",
                  natomic_status_name(st));
    ck_assert_int_eq(supervisor_pause(&sv, "conversions"), 0); /* already paused: nothing to do */
    ck_assert_int_eq(supervisor_resume(&sv, "conversions"), 0);
    ck_assert(!s->paused);
    st = convert_until_ok(&sv, fixture_ms(5000));
    ck_assert_msg(st == NATOMIC_OK, "call after the resume: %s", natomic_status_name(st));

    /* Stopping with a paused service still ends it (SIGCONT before SIGTERM). */
    ck_assert_int_eq(supervisor_pause(&sv, "conversions"), 0);
    pid_t pid = s->proc.pid;
    int64_t t0 = fixture_now_ms();
    supervisor_stop(&sv, false);
    ck_assert_msg(fixture_now_ms() - t0 < 4000, "stop took %lld ms: the paused service ignored SIGTERM",
                  (long long)(fixture_now_ms() - t0));
    ck_assert_msg(kill(pid, 0) == -1 && errno == ESRCH, "pid %ld still exists after stop", (long)pid);
}
END_TEST

START_TEST(supervisor_link_faults)
{
    supervisor_t sv;
    sv_up(&sv, NULL);
    ck_assert_int_eq(supervisor_link(&sv, "conversions", FAULT_PROXY_CUT, 0), 0);
    natomic_status_t st = convert(&sv, 1.0, 500, NULL);
    ck_assert_msg(st != NATOMIC_OK, "a call went through a cut link");
    ck_assert_int_eq(supervisor_link(&sv, "conversions", FAULT_PROXY_PASS, 0), 0);
    st = convert_until_ok(&sv, fixture_ms(10000));
    ck_assert_msg(st == NATOMIC_OK, "call after the heal: %s", natomic_status_name(st));

    ck_assert_int_eq(supervisor_link(&sv, "conversions", FAULT_PROXY_DELAY, 300), 0);
    st = convert(&sv, 1.0, 100, NULL);
    ck_assert_msg(st == NATOMIC_ETIMEOUT, "100 ms call over a 300 ms link: %s", natomic_status_name(st));
    st = convert(&sv, 1.0, fixture_ms(3000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "3 s call over a 300 ms link: %s", natomic_status_name(st));

    ck_assert_int_eq(supervisor_link(&sv, "conversions", FAULT_PROXY_BLACKHOLE, 0), 0);
    st = convert(&sv, 1.0, 300, NULL);
    ck_assert_msg(st == NATOMIC_ETIMEOUT, "call over a blackholed link: %s", natomic_status_name(st));
    ck_assert_int_eq(supervisor_link(&sv, "conversions", FAULT_PROXY_PASS, 0), 0);
    st = convert_until_ok(&sv, fixture_ms(10000));
    ck_assert_msg(st == NATOMIC_OK, "call after the blackhole healed: %s", natomic_status_name(st));

    ck_assert_int_eq(supervisor_link(&sv, "nonesuch", FAULT_PROXY_CUT, 0), -1);
    /* A cut left in place does not hold up the stop: links heal before SIGTERM. */
    ck_assert_int_eq(supervisor_link(&sv, "conversions", FAULT_PROXY_CUT, 0), 0);
    int64_t t0 = fixture_now_ms();
    supervisor_stop(&sv, false);
    ck_assert_msg(fixture_now_ms() - t0 < 4000, "stop with a cut link took %lld ms",
                  (long long)(fixture_now_ms() - t0));
}
END_TEST

START_TEST(supervisor_nats_restart)
{
    supervisor_t sv;
    sv_up(&sv, NULL);
    natomic_status_t st = convert(&sv, 1.0, fixture_ms(5000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "call before: %s", natomic_status_name(st));
    int port = sv.nats.port;
    pid_t old = sv.nats.pid;
    ck_assert_int_eq(supervisor_restart_nats(&sv), 0);
    ck_assert_int_eq(sv.nats.port, port);
    ck_assert_msg(sv.nats.pid > 0 && sv.nats.pid != old, "nats pid %ld (old %ld)", (long)sv.nats.pid, (long)old);
    ck_assert_int_eq(natsConnection_Status(sv.nc), NATS_CONN_STATUS_CONNECTED);
    st = convert_until_ok(&sv, fixture_ms(15000));
    ck_assert_msg(st == NATOMIC_OK, "call after the NATS restart: %s", natomic_status_name(st));
    ck_assert_int_eq(history_rows(&sv), 2);
    supervisor_stop(&sv, false);
}
END_TEST

#ifndef NATOMIC_NO_FAULT_POINTS
START_TEST(supervisor_fault_points_at_run_time)
{
    supervisor_t sv;
    sv_up(&sv, NULL);
    natomic_status_t st = convert(&sv, 1.0, fixture_ms(5000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "call before: %s", natomic_status_name(st));

    ck_assert_int_eq(supervisor_fault_enable(&sv, "conversions", "natomic/before_handler", 1, 1.0), 0);
    natomic_call_info_t info;
    st = convert(&sv, 1.0, fixture_ms(5000), &info);
    ck_assert_msg(st == NATOMIC_ETRANSIENT && strcmp(info.type, "InjectedFault") == 0,
                  "call with the point enabled: %s type '%s', expected ETRANSIENT InjectedFault",
                  natomic_status_name(st), info.type);
    ck_assert_int_eq(supervisor_fault_disable(&sv, "conversions", "natomic/before_handler"), 0);
    st = convert(&sv, 1.0, fixture_ms(5000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "call after disable: %s", natomic_status_name(st));
    /* Disabling what is not enabled is no failure: the point is off, as asked. */
    ck_assert_int_eq(supervisor_fault_disable(&sv, "conversions", "natomic/before_handler"), 0);

    /* A probability of (nearly) zero goes through enable_random and never fires here. */
    ck_assert_int_eq(supervisor_fault_enable(&sv, "conversions", "natomic/before_handler", 1, 0.000001), 0);
    st = convert(&sv, 1.0, fixture_ms(5000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "call with probability 1e-6: %s", natomic_status_name(st));
    ck_assert_int_eq(supervisor_fault_disable(&sv, "conversions", "natomic/before_handler"), 0);

    /* Refusals come at once and say why (stderr). */
    ck_assert_int_eq(supervisor_fault_enable(&sv, "nonesuch", "natomic/before_handler", 1, 1.0), -1);
    ck_assert_int_eq(supervisor_fault_enable(&sv, "conversions", "bad name,with=comma", 1, 1.0), -1);
    ck_assert_int_eq(supervisor_pause(&sv, "conversions"), 0);
    int64_t t0 = fixture_now_ms();
    ck_assert_int_eq(supervisor_fault_enable(&sv, "conversions", "natomic/before_handler", 1, 1.0), -1);
    ck_assert_msg(fixture_now_ms() - t0 < 1000, "refusing a paused service took %lld ms",
                  (long long)(fixture_now_ms() - t0));
    ck_assert_int_eq(supervisor_resume(&sv, "conversions"), 0);
    ck_assert_int_eq(supervisor_kill(&sv, "conversions"), 0);
    ck_assert_int_eq(supervisor_fault_enable(&sv, "conversions", "natomic/before_handler", 1, 1.0), -1);
    supervisor_stop(&sv, false);
}
END_TEST
#endif

START_TEST(supervisor_instances_and_keep)
{
    supervisor_t sv;
    ck_assert_int_eq(supervisor_start(&sv, 1), 0);
    ck_assert_int_eq(supervisor_add_service(&sv, "conversions", 2, NULL), 0);
    ck_assert_int_eq(supervisor_add_service(&sv, "conversions", 1, NULL), -1); /* already there */
    ck_assert_int_eq(supervisor_add_service(&sv, "nonesuch", 1, NULL), -1);     /* no binary    */
    ck_assert_int_eq(supervisor_add_service(&sv, "inventory", SUPERVISOR_MAX_SERVICES, NULL), -1);
    int n = 0;
    supervised_service_t *s = supervisor_find(&sv, "conversions", &n);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(sv.n_svc, 2);
    ck_assert_str_eq(s[0].db_path, s[1].db_path);
    ck_assert_str_ne(s[0].log_path, s[1].log_path);
    ck_assert_ptr_ne(s[0].proxy[0], s[1].proxy[0]);
    ck_assert_int_ne(fault_proxy_port(s[0].proxy[0]), fault_proxy_port(s[1].proxy[0]));
    natomic_status_t st = convert(&sv, 1.0, fixture_ms(5000), NULL);
    ck_assert_msg(st == NATOMIC_OK, "call to two instances: %s", natomic_status_name(st));
    ck_assert_int_eq(supervisor_pause(&sv, "conversions"), 0);
    ck_assert_int_eq(supervisor_restart(&sv, "conversions"), 0);  /* paused ones are killed first */
    ck_assert(!s[0].paused && !s[1].paused);
    ck_assert_int_eq(supervisor_kill(&sv, "conversions"), 0);
    char *tail = supervisor_log_tail(&sv, "conversions", 20);
    ck_assert_ptr_nonnull(tail);
    ck_assert_msg(strstr(tail, "\nconversions#1| ") != NULL && strncmp(tail, "conversions| ", 13) == 0,
                  "both instances in the tail, each named:\n%s", tail);
    free(tail);

    char dir[256];
    snprintf(dir, sizeof dir, "%s", sv.dir);
    supervisor_stop(&sv, true);
    ck_assert_msg(access(s[0].log_path, R_OK) == 0, "keep: %s is gone", s[0].log_path);
    fixture_remove_tree(dir);
}
END_TEST

/* One instance of two: killed, restarted, paused and resumed while the other goes on. */
START_TEST(supervisor_one_instance)
{
    supervisor_t sv;
    ck_assert_int_eq(supervisor_start(&sv, 1), 0);
    ck_assert_int_eq(supervisor_add_service(&sv, "conversions", 2, NULL), 0);
    int n = 0;
    supervised_service_t *s = supervisor_find(&sv, "conversions", &n);
    ck_assert_int_eq(n, 2);
    pid_t first = s[0].proc.pid, second = s[1].proc.pid;

    ck_assert_int_eq(supervisor_kill_instance(&sv, "conversions", 0), 0);
    ck_assert_int_eq(s[0].proc.pid, 0);
    ck_assert_msg(kill(first, 0) == -1 && errno == ESRCH, "pid %ld still exists after the kill", (long)first);
    ck_assert_int_eq(s[1].proc.pid, second); /* untouched */
    /* Until NATS drops the dead one's subscription a call may still go to it: retry. */
    natomic_status_t st = convert_until_ok(&sv, fixture_ms(10000));
    ck_assert_msg(st == NATOMIC_OK, "the other instance still answers: %s", natomic_status_name(st));

    ck_assert_int_eq(supervisor_restart_instance(&sv, "conversions", 0), 0);
    ck_assert_msg(s[0].proc.pid > 0 && s[0].proc.pid != first, "restarted pid %ld (old %ld)", (long)s[0].proc.pid,
                  (long)first);
    ck_assert_int_eq(s[1].proc.pid, second);

    ck_assert_int_eq(supervisor_pause_instance(&sv, "conversions", 1), 0);
    ck_assert(s[1].paused && !s[0].paused);
    /* The paused one still holds its subscription; calls to it time out, so only count on the other. */
    ck_assert_int_eq(supervisor_resume_instance(&sv, "conversions", 1), 0);
    ck_assert(!s[1].paused);
    st = convert_until_ok(&sv, fixture_ms(10000));
    ck_assert_msg(st == NATOMIC_OK, "call after resume: %s", natomic_status_name(st));

    /* A restart of one waits for all: with instance 1 paused, only instance 0 must answer. */
    ck_assert_int_eq(supervisor_pause_instance(&sv, "conversions", 1), 0);
    ck_assert_int_eq(supervisor_restart_instance(&sv, "conversions", 0), 0);
    ck_assert(s[1].paused);
    ck_assert_int_eq(supervisor_resume_instance(&sv, "conversions", 1), 0);

    /* Only instance 0's log has the markers of what was done to it. */
    char *tail = supervisor_log_tail(&sv, "conversions", 50);
    ck_assert_ptr_nonnull(tail);
    ck_assert_msg(strstr(tail, "conversions| ---- supervisor: SIGKILL to conversions (pid") != NULL,
                  "no kill marker for instance 0:\n%s", tail);
    ck_assert_msg(strstr(tail, "conversions#1| ---- supervisor: SIGKILL to") == NULL,
                  "instance 1 was killed:\n%s", tail);
    ck_assert_msg(strstr(tail, "conversions#1| ---- supervisor: SIGSTOP to conversions#1") != NULL,
                  "no pause marker for instance 1:\n%s", tail);
    free(tail);

    ck_assert_int_eq(supervisor_kill_instance(&sv, "conversions", 2), -1);  /* no such instance */
    ck_assert_int_eq(supervisor_restart_instance(&sv, "conversions", -1), -1); /* a number, not "all" */
    ck_assert_int_eq(supervisor_pause_instance(&sv, "nonesuch", 0), -1);
    ck_assert_int_eq(supervisor_resume_instance(&sv, "conversions", 5), -1);
    ck_assert_int_eq(s[0].proc.pid > 0 && s[1].proc.pid == second, 1); /* refusals changed nothing */
    supervisor_stop(&sv, false);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Nothing outlives the supervising process                            */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t emergency_asked;

static void on_usr1(int sig)
{
    (void)sig;
    supervisor_emergency_kill();
    emergency_asked = 1;
}

/* The supervising child: NATS and two services, its pids on `fd`, then it waits to be killed
 * ("sigkill"), or SIGKILLs its own children on SIGUSR1, reaps them and says so ("emergency"). */
static int cleanup_child(int fd, bool emergency)
{
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);

    supervisor_t sv;
    if (supervisor_start(&sv, 7) != 0)
        return 2;
    if (supervisor_add_service(&sv, "conversions", 1, NULL) != 0 ||
        supervisor_add_service(&sv, "inventory", 1, NULL) != 0)
        return 3;
    dprintf(fd, "dir %s\n", sv.dir);
    dprintf(fd, "pid %ld\n", (long)sv.nats.pid);
    for (int i = 0; i < sv.n_svc; i++)
        dprintf(fd, "pid %ld\n", (long)sv.svc[i].proc.pid);
    dprintf(fd, "ready\n");
    if (!emergency)
        for (;;)
            pause();
    while (!emergency_asked)
        sigsuspend(&old);
    /* They are ours: reap them, so the test sees them gone while we still live. */
    int64_t end = fixture_now_ms() + 10000;
    while (fixture_now_ms() < end && waitpid(-1, NULL, WNOHANG) >= 0)
        fixture_sleep_ms(5);
    dprintf(fd, "reaped\n");
    for (;;)
        pause();
}

typedef struct child_report {
    pid_t pids[16];
    int n;
    char dir[256];
    char buf[4096];   /* what was read and not yet parsed */
    size_t len;
} child_report_t;

/* Reads lines from the child until `until` ("ready", "reaped"); false after `ms`. */
static bool read_report(int fd, child_report_t *r, const char *until, int ms)
{
    char *buf = r->buf;
    int64_t end = fixture_now_ms() + ms;
    for (;;) {
        char *nl;
        while ((nl = memchr(buf, '\n', r->len)) != NULL) {
            *nl = '\0';
            long pid;
            bool done = strcmp(buf, until) == 0;
            if (sscanf(buf, "pid %ld", &pid) == 1 && r->n < 16)
                r->pids[r->n++] = (pid_t)pid;
            else if (strncmp(buf, "dir ", 4) == 0)
                snprintf(r->dir, sizeof r->dir, "%s", buf + 4);
            size_t used = (size_t)(nl - buf) + 1;
            memmove(buf, nl + 1, r->len - used);
            r->len -= used;
            if (done)
                return true;
        }
        int64_t left = end - fixture_now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return false;
        ssize_t n = read(fd, buf + r->len, sizeof r->buf - 1 - r->len);
        if (n <= 0)
            return false;
        r->len += (size_t)n;
    }
}

/* True once every pid is gone (reaped by us as their subreaper, or by anyone) within ms. */
static bool all_gone(const child_report_t *r, int ms, pid_t *left_over)
{
    int64_t end = fixture_now_ms() + ms;
    for (;;) {
        bool gone = true;
        for (int i = 0; i < r->n; i++) {
            waitpid(r->pids[i], NULL, WNOHANG);
            if (!(kill(r->pids[i], 0) == -1 && errno == ESRCH)) {
                gone = false;
                *left_over = r->pids[i];
            }
        }
        if (gone)
            return true;
        if (fixture_now_ms() >= end)
            return false;
        fixture_sleep_ms(20);
    }
}

static void run_cleanup(bool emergency)
{
    /* Orphans come to us (not to a pid 1 that may never reap), so a dead one reads as gone. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int pfd[2];
    ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
    char fd_arg[16];
    snprintf(fd_arg, sizeof fd_arg, "%d", pfd[1]);
    const char *mode = emergency ? "emergency" : "sigkill";
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        fcntl(pfd[1], F_SETFD, 0);
        dup2(STDERR_FILENO, STDOUT_FILENO); /* stdout is the TAP stream */
        execl(self_path, self_path, "--cleanup-child", fd_arg, mode, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    child_report_t r;
    memset(&r, 0, sizeof r);
    bool ready = read_report(pfd[0], &r, "ready", 30000);
    if (!ready) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    ck_assert_msg(ready, "the supervising child never reported ready (see stderr)");
    ck_assert_msg(r.n == 3, "the child reported %d pids, expected 3 (nats-server and two services)", r.n);
    for (int i = 0; i < r.n; i++)
        ck_assert_msg(kill(r.pids[i], 0) == 0, "pid %ld is not running before the kill", (long)r.pids[i]);

    if (emergency) {
        ck_assert_int_eq(kill(child, SIGUSR1), 0);
        ck_assert_msg(read_report(pfd[0], &r, "reaped", 15000), "the child never reported its children reaped");
        ck_assert_msg(kill(child, 0) == 0, "the child itself died of supervisor_emergency_kill()");
    }
    pid_t left_over = 0;
    bool gone = emergency ? all_gone(&r, 10000, &left_over) : true;
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    close(pfd[0]);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child wait status %#x", (unsigned)status);
    if (!emergency)
        gone = all_gone(&r, 10000, &left_over);
    if (r.dir[0] != '\0')
        fixture_remove_tree(r.dir); /* nobody was left to remove it */
    ck_assert_msg(gone, "pid %ld outlived the supervising process (%s)", (long)left_over, mode);
}

START_TEST(cleanup_after_sigkill)
{
    run_cleanup(false);
}
END_TEST

START_TEST(cleanup_emergency_kill)
{
    run_cleanup(true);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--cleanup-child") == 0)
        return cleanup_child(atoi(argv[2]), strcmp(argv[3], "emergency") == 0);
    if (realpath(argv[0], self_path) == NULL) {
        ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
        self_path[n > 0 ? n : 0] = '\0';
    }

    Suite *suite = suite_create("supervisor");
    TCase *proxy = tcase_create("fault_proxy");
    tcase_set_timeout(proxy, 120);
    tcase_add_test(proxy, proxy_pass_cut_heal);
    tcase_add_test(proxy, proxy_blackhole_heal);
    tcase_add_test(proxy, proxy_delay);
    tcase_add_test(proxy, proxy_stop_with_open_connections);
    suite_add_tcase(suite, proxy);
    TCase *sup = tcase_create("supervisor");
    tcase_set_timeout(sup, 120);
    tcase_add_test(sup, supervisor_kill_and_restart);
#ifndef NATOMIC_NO_FAULT_POINTS /* a build without fault points cannot inject any */
    tcase_add_test(sup, supervisor_faults_only_at_first_start);
#endif
    tcase_add_test(sup, supervisor_pause_and_resume);
    tcase_add_test(sup, supervisor_link_faults);
    tcase_add_test(sup, supervisor_nats_restart);
#ifndef NATOMIC_NO_FAULT_POINTS
    tcase_add_test(sup, supervisor_fault_points_at_run_time);
#endif
    tcase_add_test(sup, supervisor_instances_and_keep);
    tcase_add_test(sup, supervisor_one_instance);
    suite_add_tcase(suite, sup);
    TCase *cleanup = tcase_create("cleanup");
    tcase_set_timeout(cleanup, 120);
    tcase_add_test(cleanup, cleanup_after_sigkill);
    tcase_add_test(cleanup, cleanup_emergency_kill);
    suite_add_tcase(suite, cleanup);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_ENV);
    srunner_free(runner);
    /* Without fork (valgrind) the tests ran here: let nats.c free its threads. */
    nats_CloseAndWait(5000);
    return 0;
}
