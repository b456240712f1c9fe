/*
 * test_conversions.c -- the real `conversions` binary, started as a child
 * against the test's nats-server, seen only from outside: NATS replies,
 * events on events.conversions.converted, and its SQLite history read
 * read-only.
 *
 * Proves the end-to-end contract: a success saves one row and
 * publishes one event carrying Natomic-Tx; a failure rolls its save back
 * and publishes nothing; an unknown method, a malformed payload and an
 * exceeded deadline get clear error replies and never take the service
 * down; 200 concurrent mixed calls never mix their commands (events and
 * history hold exactly the successes); the NATS micro discovery answers
 * are valid JSON with the documented fields.
 */
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "conversions.pb-c.h"
#include "harness.h"

#define SUBJECT "conversions.inches_to_cm"
#define EVENTS "events.conversions.converted"
#define CALL_TIMEOUT_MS 10000
#define QUIET_MS 300

/* A conversions service and a client connection, per test. */
typedef struct fixture {
    natsConnection *nc;
    fixture_child_t child;
    natsSubscription *events;
} fixture_t;

static void fixture_start(fixture_t *f)
{
    memset(f, 0, sizeof *f);
    f->nc = fixture_connect();
    natsStatus s = natsConnection_SubscribeSync(&f->events, f->nc, EVENTS);
    ck_assert_msg(s == NATS_OK, "subscribe " EVENTS ": %s", natsStatus_GetText(s));
    ck_assert_int_eq(natsSubscription_SetPendingLimits(f->events, -1, -1), NATS_OK);
    harness_conversions_start(&f->child, f->nc);
}

/* Stops the service (it must exit 0 on SIGTERM) and closes the client. */
static void fixture_stop(fixture_t *f)
{
    int status = fixture_stop_child(&f->child, SIGTERM);
    natsSubscription_Destroy(f->events);
    natsConnection_Destroy(f->nc);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "conversions ended with wait status %#x (log: %s)",
                  (unsigned)status, f->child.log_path);
}

static int64_t history_rows(const fixture_t *f)
{
    return fixture_db_int(f->child.db_path, "SELECT count(*) FROM history");
}

/* Asserts that no event arrives within QUIET_MS. */
static void check_no_event(fixture_t *f)
{
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, f->events, QUIET_MS);
    ck_assert_msg(s == NATS_TIMEOUT, "unexpected event: %.*s", m != NULL ? natsMsg_GetDataLength(m) : 0,
                  m != NULL ? natsMsg_GetData(m) : "");
}

/* A successful call of 1 inch: the service is alive and answering. */
static void check_alive(fixture_t *f)
{
    double cm = 0;
    natomic_status_t st = harness_call(f->nc, SUBJECT, 1, fixture_ms(CALL_TIMEOUT_MS), &cm, NULL);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_double_eq_tol(cm, 2.54, 1e-9);
}

static Conversions__Converted *decode_event(natsMsg *m)
{
    Conversions__Converted *ev = conversions__converted__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                                (const uint8_t *)natsMsg_GetData(m));
    ck_assert_msg(ev != NULL, "event of %d bytes does not decode as conversions.Converted",
                  natsMsg_GetDataLength(m));
    return ev;
}

START_TEST(test_success_saves_and_publishes)
{
    fixture_t f;
    fixture_start(&f);
    natomic_call_info_t info;
    double cm = 0;
    natomic_status_t st = harness_call(f.nc, SUBJECT, 10, fixture_ms(CALL_TIMEOUT_MS), &cm, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_OK");
    ck_assert_double_eq_tol(cm, 25.4, 1e-9);
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "complete");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "none");

    natsMsg *msgs[8];
    int n = fixture_collect(f.events, msgs, 8, 1, QUIET_MS, fixture_ms(5000));
    ck_assert_int_eq(n, 1);
    Conversions__Converted *ev = decode_event(msgs[0]);
    ck_assert_double_eq(ev->inches, 10);
    ck_assert_double_eq_tol(ev->cm, 25.4, 1e-9);
    const char *tx = fixture_header(msgs[0], NATOMIC_HDR_TX);
    ck_assert_msg(tx != NULL && *tx != '\0', "event without a %s header", NATOMIC_HDR_TX);

    ck_assert_int_eq(history_rows(&f), 1);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM history WHERE inches = 10 AND tx = '%s' AND id = %lld", tx,
             (long long)ev->conversion_id);
    ck_assert_int_eq(fixture_db_int(f.child.db_path, "%s", sql), 1);
    conversions__converted__free_unpacked(ev, NULL);
    fixture_msgs_destroy(msgs, n);
    fixture_stop(&f);
}
END_TEST

START_TEST(test_negative_length_rolls_back)
{
    fixture_t f;
    fixture_start(&f);
    int64_t before = history_rows(&f);
    natomic_call_info_t info;
    natomic_status_t st = harness_call(f.nc, SUBJECT, -3, fixture_ms(CALL_TIMEOUT_MS), NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_EBUSINESS");
    ck_assert_int_eq(info.code, 422);
    ck_assert_str_eq(info.type, "InvalidLength");
    ck_assert_str_eq(natomic_outcome_name(info.rollback), "complete");
    ck_assert_str_eq(natomic_outcome_name(info.dispatch), "none");
    check_no_event(&f);
    ck_assert_int_eq(history_rows(&f), before);
    fixture_stop(&f);
}
END_TEST

START_TEST(test_unknown_method)
{
    fixture_t f;
    fixture_start(&f);
    natomic_call_info_t info;
    natomic_status_t st = harness_call(f.nc, "conversions.nope", 1, fixture_ms(CALL_TIMEOUT_MS), NULL, &info);
    ck_assert_str_eq(natomic_status_name(st), "NATOMIC_ENOMETHOD");
    ck_assert_int_eq(info.code, 404);
    ck_assert_str_eq(info.type, "UnknownMethod");
    ck_assert_msg(strstr(info.message, "nope") != NULL, "message does not name the method: '%s'", info.message);
    check_alive(&f);
    fixture_stop(&f);
}
END_TEST

START_TEST(test_malformed_payload)
{
    fixture_t f;
    fixture_start(&f);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_Request(&reply, f.nc, SUBJECT, "\xff\xff\xff", 3, fixture_ms(CALL_TIMEOUT_MS));
    ck_assert_msg(s == NATS_OK, "raw request: %s", natsStatus_GetText(s));
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_SERVICE_ERROR_CODE), "400");
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_ERROR_TYPE), "MalformedPayload");
    const char *text = fixture_header(reply, NATOMIC_HDR_SERVICE_ERROR);
    ck_assert_msg(text != NULL && *text != '\0', "no %s text", NATOMIC_HDR_SERVICE_ERROR);
    natsMsg_Destroy(reply);
    ck_assert_int_eq(history_rows(&f), 0);
    check_alive(&f);
    fixture_stop(&f);
}
END_TEST

START_TEST(test_deadline_exceeded)
{
    fixture_t f;
    fixture_start(&f);
    natsMsg *req = harness_request_msg(SUBJECT, 10);
    ck_assert_int_eq(natsMsgHeader_Set(req, NATOMIC_HDR_DEADLINE_MS, "0"), NATS_OK);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestMsg(&reply, f.nc, req, fixture_ms(CALL_TIMEOUT_MS));
    natsMsg_Destroy(req);
    ck_assert_msg(s == NATS_OK, "raw request: %s", natsStatus_GetText(s));
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_SERVICE_ERROR_CODE), "504");
    ck_assert_pstr_eq(fixture_header(reply, NATOMIC_HDR_ERROR_TYPE), "DeadlineExceeded");
    natsMsg_Destroy(reply);
    check_no_event(&f);
    ck_assert_int_eq(history_rows(&f), 0);
    check_alive(&f);
    fixture_stop(&f);
}
END_TEST

/* ---- 200 concurrent mixed calls ---------------------------------- */

#define CLIENTS 8
#define CALLS_PER_CLIENT 25
#define CALLS (CLIENTS * CALLS_PER_CLIENT)

typedef struct call_result {
    double inches;
    natomic_status_t status;
    char type[64];
    double cm;
} call_result_t;

typedef struct client {
    natsConnection *nc;
    int first;
    call_result_t *results;
} client_t;

/* Call i sends i + 0.5 inches when i is even, -(i + 0.5) when odd: every magnitude distinct. */
static double inches_of_call(int i)
{
    return i % 2 == 0 ? i + 0.5 : -(i + 0.5);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    for (int k = 0; k < CALLS_PER_CLIENT; k++) {
        call_result_t *r = &c->results[c->first + k];
        natomic_call_info_t info;
        r->inches = inches_of_call(c->first + k);
        r->status = harness_call(c->nc, SUBJECT, r->inches, fixture_ms(CALL_TIMEOUT_MS), &r->cm, &info);
        snprintf(r->type, sizeof r->type, "%s", info.type);
    }
    return NULL;
}

typedef struct record {
    double inches;
    char tx[80];
} record_t;

static int by_inches(const void *a, const void *b)
{
    double x = ((const record_t *)a)->inches, y = ((const record_t *)b)->inches;
    return (x > y) - (x < y);
}

/* Reads (inches, tx) of every history row into out[max]; returns the count. */
static int read_history(const char *db_path, record_t *out, int max)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT inches, tx FROM history", -1, &st, NULL);
    int n = 0;
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n < max) {
            out[n].inches = sqlite3_column_double(st, 0);
            snprintf(out[n].tx, sizeof out[n].tx, "%s", (const char *)sqlite3_column_text(st, 1));
        }
        n++;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    ck_assert_msg(rc == SQLITE_DONE, "reading history of %s: sqlite status %d", db_path, rc);
    return n;
}

/*
 * A caller chooses where the answer goes. One that asks for it on another
 * service's subject (here "victim.deposit", watched by the test) would make
 * the service publish there with its own permissions: such a call is
 * neither run nor answered. A call answered to an inbox still works.
 */
START_TEST(test_reply_subject_must_be_an_inbox)
{
    fixture_t f;
    fixture_start(&f);
    natsSubscription *victim = NULL;
    ck_assert_int_eq(natsConnection_SubscribeSync(&victim, f.nc, "victim.>"), NATS_OK);
    natsMsg *req = harness_request_msg(SUBJECT, 10);
    natsMsg *redirected = NULL;
    ck_assert_int_eq(natsMsg_Create(&redirected, SUBJECT, "victim.deposit", natsMsg_GetData(req),
                                    natsMsg_GetDataLength(req)),
                     NATS_OK);
    natsMsg_Destroy(req);
    ck_assert_int_eq(natsConnection_PublishMsg(f.nc, redirected), NATS_OK);
    natsMsg_Destroy(redirected);
    ck_assert_int_eq(natsConnection_Flush(f.nc), NATS_OK);
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, victim, QUIET_MS);
    ck_assert_msg(s == NATS_TIMEOUT, "the service answered to victim.deposit: %.*s",
                  m != NULL ? natsMsg_GetDataLength(m) : 0, m != NULL ? natsMsg_GetData(m) : "");
    check_no_event(&f);
    ck_assert_int_eq(history_rows(&f), 0);
    natsSubscription_Destroy(victim);
    check_alive(&f);
    ck_assert_int_eq(history_rows(&f), 1);
    fixture_stop(&f);
}
END_TEST

START_TEST(test_concurrent_mixed_calls)
{
    fixture_t f;
    fixture_start(&f);
    static call_result_t results[CALLS];
    client_t clients[CLIENTS];
    pthread_t threads[CLIENTS];
    for (int t = 0; t < CLIENTS; t++) {
        clients[t] = (client_t){.nc = f.nc, .first = t * CALLS_PER_CLIENT, .results = results};
        ck_assert_int_eq(pthread_create(&threads[t], NULL, client_main, &clients[t]), 0);
    }
    for (int t = 0; t < CLIENTS; t++)
        pthread_join(threads[t], NULL);

    /* Every positive length succeeded, every negative one failed as InvalidLength. */
    static record_t ok[CALLS];
    int n_ok = 0;
    for (int i = 0; i < CALLS; i++) {
        const call_result_t *r = &results[i];
        if (r->inches >= 0) {
            ck_assert_msg(r->status == NATOMIC_OK, "call %d (%g in): %s %s", i, r->inches,
                          natomic_status_name(r->status), r->type);
            ck_assert_msg(r->cm == r->inches * 2.54, "call %d: %g in -> %g cm", i, r->inches, r->cm);
            ok[n_ok++].inches = r->inches;
        } else {
            ck_assert_msg(r->status == NATOMIC_EBUSINESS && strcmp(r->type, "InvalidLength") == 0,
                          "call %d (%g in): %s %s, expected NATOMIC_EBUSINESS InvalidLength", i, r->inches,
                          natomic_status_name(r->status), r->type);
        }
    }
    ck_assert_int_eq(n_ok, CALLS / 2);
    qsort(ok, (size_t)n_ok, sizeof ok[0], by_inches);

    /* Events: until their count stops changing (bounded); exactly the successes. */
    static natsMsg *msgs[2 * CALLS];
    int n_events = fixture_collect(f.events, msgs, 2 * CALLS, n_ok, 2 * QUIET_MS, fixture_ms(5000));
    static record_t events[2 * CALLS];
    for (int i = 0; i < n_events; i++) {
        Conversions__Converted *ev = decode_event(msgs[i]);
        events[i].inches = ev->inches;
        const char *tx = fixture_header(msgs[i], NATOMIC_HDR_TX);
        snprintf(events[i].tx, sizeof events[i].tx, "%s", tx != NULL ? tx : "");
        conversions__converted__free_unpacked(ev, NULL);
    }
    fixture_msgs_destroy(msgs, n_events);
    ck_assert_int_eq(n_events, n_ok);
    qsort(events, (size_t)n_events, sizeof events[0], by_inches);
    for (int i = 0; i < n_ok; i++)
        ck_assert_msg(events[i].inches == ok[i].inches, "event #%d: %g in, success #%d: %g in", i, events[i].inches,
                      i, ok[i].inches);

    /* History: exactly the successes, each row from the same transaction as its event. */
    static record_t rows[2 * CALLS];
    int n_rows = read_history(f.child.db_path, rows, 2 * CALLS);
    ck_assert_int_eq(n_rows, n_ok);
    qsort(rows, (size_t)n_rows, sizeof rows[0], by_inches);
    for (int i = 0; i < n_ok; i++) {
        ck_assert_msg(rows[i].inches == ok[i].inches, "row #%d: %g in, success #%d: %g in", i, rows[i].inches, i,
                      ok[i].inches);
        ck_assert_str_eq(rows[i].tx, events[i].tx);
    }
    ck_assert_int_eq(fixture_db_int(f.child.db_path, "SELECT count(*) FROM history WHERE inches < 0"), 0);
    fixture_stop(&f);
}
END_TEST

/* ---- discovery --------------------------------------------------- */

static const char *json_str(json_t *doc, const char *key)
{
    const char *v = json_string_value(json_object_get(doc, key));
    return v != NULL ? v : "(missing)";
}

/* The fields every discovery answer carries; returns the instance id (owned by doc). */
static const char *check_discovery_doc(json_t *doc, const char *type)
{
    ck_assert_str_eq(json_str(doc, "type"), type);
    ck_assert_str_eq(json_str(doc, "name"), "conversions");
    ck_assert_str_eq(json_str(doc, "version"), NATOMIC_VERSION);
    const char *id = json_str(doc, "id");
    ck_assert_msg(*id != '\0' && strcmp(id, "(missing)") != 0, "no id in %s", type);
    return id;
}

/* inches_to_cm, then the two methods the lab tests natomic_rollback_insert() with. */
static json_t *first_endpoint(json_t *doc)
{
    static const char *const names[] = {"inches_to_cm", "inches_to_cm_batch", "forget"};
    json_t *eps = json_object_get(doc, "endpoints");
    ck_assert_msg(json_is_array(eps), "endpoints is not an array");
    ck_assert_uint_eq(json_array_size(eps), 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_str_eq(json_str(json_array_get(eps, i), "name"), names[i]);
    return json_array_get(eps, 0);
}

START_TEST(test_discovery)
{
    fixture_t f;
    fixture_start(&f);

    json_t *ping = harness_request_json(f.nc, "$SRV.PING");
    char id[80];
    snprintf(id, sizeof id, "%s", check_discovery_doc(ping, "io.nats.micro.v1.ping_response"));
    json_decref(ping);

    /* Every verb answers bare, with the name, and with name and id. */
    static const char *const verbs[][2] = {{"PING", "io.nats.micro.v1.ping_response"},
                                           {"INFO", "io.nats.micro.v1.info_response"},
                                           {"STATS", "io.nats.micro.v1.stats_response"}};
    char subject[160];
    for (size_t v = 0; v < 3; v++) {
        for (int form = 0; form < 3; form++) {
            snprintf(subject, sizeof subject, "$SRV.%s%s%s", verbs[v][0], form > 0 ? ".conversions" : "",
                     form > 1 ? "." : "");
            if (form > 1)
                strncat(subject, id, sizeof subject - strlen(subject) - 1);
            json_t *doc = harness_request_json(f.nc, subject);
            ck_assert_str_eq(check_discovery_doc(doc, verbs[v][1]), id);
            json_decref(doc);
        }
    }

    json_t *info = harness_request_json(f.nc, "$SRV.INFO.conversions");
    check_discovery_doc(info, "io.nats.micro.v1.info_response");
    ck_assert_msg(json_is_string(json_object_get(info, "description")), "INFO without a description");
    json_t *ep = first_endpoint(info);
    ck_assert_str_eq(json_str(ep, "name"), "inches_to_cm");
    ck_assert_str_eq(json_str(ep, "subject"), SUBJECT);
    ck_assert_str_eq(json_str(ep, "queue_group"), "conversions");
    ck_assert_str_eq(json_str(json_object_get(ep, "metadata"), "request_type"), "conversions.InchesToCmRequest");
    ck_assert_str_eq(json_str(json_object_get(ep, "metadata"), "reply_type"), "conversions.InchesToCmReply");
    json_decref(info);

    /* Three calls, one failing: STATS counts them. */
    ck_assert_int_eq(harness_call(f.nc, SUBJECT, 1, fixture_ms(CALL_TIMEOUT_MS), NULL, NULL), NATOMIC_OK);
    ck_assert_int_eq(harness_call(f.nc, SUBJECT, 2, fixture_ms(CALL_TIMEOUT_MS), NULL, NULL), NATOMIC_OK);
    ck_assert_int_eq(harness_call(f.nc, SUBJECT, -1, fixture_ms(CALL_TIMEOUT_MS), NULL, NULL), NATOMIC_EBUSINESS);
    snprintf(subject, sizeof subject, "$SRV.STATS.conversions.%s", id);
    json_t *stats = harness_request_json(f.nc, subject);
    ck_assert_str_eq(check_discovery_doc(stats, "io.nats.micro.v1.stats_response"), id);
    ck_assert_msg(json_is_string(json_object_get(stats, "started")), "STATS without a started time");
    ep = first_endpoint(stats);
    ck_assert_str_eq(json_str(ep, "subject"), SUBJECT);
    ck_assert_int_eq(json_integer_value(json_object_get(ep, "num_requests")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(ep, "num_errors")), 1);
    ck_assert_msg(strstr(json_str(ep, "last_error"), "InvalidLength") != NULL ||
                      strstr(json_str(ep, "last_error"), "negative") != NULL,
                  "last_error does not tell the failure: '%s'", json_str(ep, "last_error"));
    json_decref(stats);
    fixture_stop(&f);
}
END_TEST

static Suite *conversions_suite(void)
{
    Suite *s = suite_create("conversions");
    TCase *calls = tcase_create("calls");
    tcase_add_test(calls, test_success_saves_and_publishes);
    tcase_add_test(calls, test_negative_length_rolls_back);
    tcase_add_test(calls, test_unknown_method);
    tcase_add_test(calls, test_malformed_payload);
    tcase_add_test(calls, test_deadline_exceeded);
    tcase_add_test(calls, test_reply_subject_must_be_an_inbox);
    suite_add_tcase(s, calls);
    TCase *load = tcase_create("concurrency");
    tcase_add_test(load, test_concurrent_mixed_calls);
    suite_add_tcase(s, load);
    TCase *discovery = tcase_create("discovery");
    tcase_add_test(discovery, test_discovery);
    suite_add_tcase(s, discovery);
    return s;
}

int main(void)
{
    return fixture_run(conversions_suite(), "it");
}
