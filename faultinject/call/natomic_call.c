/*
 * natomic-call -- call any method of a natomic service with JSON.
 *
 *     natomic-call inventory.get_stock '{"sku":"book"}'
 *
 * It needs no per-service code: the service's $SRV.INFO answer names the
 * protobuf request and reply types of each method (endpoint metadata
 * request_type / reply_type), the message registry turns those names into
 * descriptors, and message_json.c encodes the JSON request and decodes the
 * reply through them.
 *
 * Exit status: 0 success; 1 the service answered with an error (business,
 * bad input, ...); 2 bad usage or bad JSON (nothing was sent); 3 transport
 * failure (NATS unreachable, no such service, timeout: in doubt).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <natomic.h>

#include "message_json.h"
#include "message_registry.h"

enum { EXIT_OK = 0, EXIT_REMOTE = 1, EXIT_USAGE = 2, EXIT_TRANSPORT = 3 };

static void usage(FILE *f)
{
    fputs("Usage: natomic-call [options] SERVICE.METHOD [JSON]\n"
          "\n"
          "Calls a method of a natomic service and prints the reply as JSON.\n"
          "The request is JSON (default {}), encoded to the method's protobuf type\n"
          "as named by the service's $SRV.INFO answer.\n"
          "\n"
          "Options:\n"
          "  --nats URL        the same as --server\n",
          f);
    fputs(natomic_conn_config_help(), f);
    fputs("  --timeout MS      how long to wait for the reply (default 5000)\n"
          "  --tx ID           run the call in this transaction (Natomic-Tx)\n"
          "  --key KEY         idempotency key (Natomic-Idempotency-Key): a repeated call\n"
          "                    with the same key gets the first outcome, marked replayed\n"
          "  --list            list the methods of SERVICE (give SERVICE only)\n"
          "  -h, --help        show this help\n"
          "\n"
          "Exit status: 0 success, 1 the service answered with an error,\n"
          "2 bad usage or bad JSON, 3 transport failure (unreachable, no service, timeout).\n"
          "\n"
          "Examples:\n"
          "  natomic-call conversions.inches_to_cm '{\"inches\": 10}'\n"
          "  natomic-call inventory.get_stock '{\"sku\":\"book\"}'\n"
          "  natomic-call --list orders\n",
          f);
}

/* Asks $SRV.INFO.<service>; returns the parsed answer or NULL (message printed). */
static json_t *service_info(natsConnection *nc, const char *service, int64_t timeout_ms, int *exit_code)
{
    char subject[256];
    snprintf(subject, sizeof subject, "$SRV.INFO.%s", service);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, nc, subject, "", timeout_ms);
    if (s != NATS_OK) {
        fprintf(stderr, "natomic-call: no service '%s' answers on %s (%s)\n", service, subject,
                s == NATS_NO_RESPONDERS ? "no responders" : natsStatus_GetText(s));
        *exit_code = EXIT_TRANSPORT;
        return NULL;
    }
    json_error_t jerr;
    json_t *info = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, &jerr);
    natsMsg_Destroy(reply);
    if (info == NULL) {
        fprintf(stderr, "natomic-call: %s answered something that is not JSON: %s\n", subject, jerr.text);
        *exit_code = EXIT_TRANSPORT;
    }
    return info;
}

static int list_methods(json_t *info)
{
    json_t *eps = json_object_get(info, "endpoints");
    size_t i;
    json_t *ep;
    json_array_foreach(eps, i, ep) {
        json_t *md = json_object_get(ep, "metadata");
        printf("%-36s %s -> %s\n", json_string_value(json_object_get(ep, "subject")),
               json_string_value(json_object_get(md, "request_type")),
               json_string_value(json_object_get(md, "reply_type")));
    }
    return EXIT_OK;
}

/* Finds the endpoint of `subject` in an INFO answer; NULL if absent. */
static json_t *find_endpoint(json_t *info, const char *subject)
{
    json_t *eps = json_object_get(info, "endpoints");
    size_t i;
    json_t *ep;
    json_array_foreach(eps, i, ep) {
        const char *s = json_string_value(json_object_get(ep, "subject"));
        if (s != NULL && strcmp(s, subject) == 0)
            return ep;
    }
    return NULL;
}

static int call(natsConnection *nc, const char *subject, const char *json_text, int64_t timeout_ms, const char *tx,
                const char *key)
{
    char service[128];
    const char *dot = strchr(subject, '.');
    if (dot == NULL || dot == subject || dot[1] == '\0' || (size_t)(dot - subject) >= sizeof service) {
        fprintf(stderr, "natomic-call: '%s' is not SERVICE.METHOD\n", subject);
        return EXIT_USAGE;
    }
    memcpy(service, subject, (size_t)(dot - subject));
    service[dot - subject] = '\0';

    json_error_t jerr;
    json_t *request_json = json_loads(json_text, JSON_DECODE_ANY, &jerr);
    if (request_json == NULL) {
        fprintf(stderr, "natomic-call: bad JSON at line %d, column %d: %s\n", jerr.line, jerr.column, jerr.text);
        return EXIT_USAGE;
    }
    int rc = EXIT_OK;
    json_t *info = service_info(nc, service, timeout_ms, &rc);
    ProtobufCMessage *request = NULL, *reply = NULL;
    if (info == NULL)
        goto out;
    json_t *ep = find_endpoint(info, subject);
    if (ep == NULL) {
        fprintf(stderr, "natomic-call: service '%s' has no method '%s'; it has:\n", service, dot + 1);
        list_methods(info);
        rc = EXIT_USAGE;
        goto out;
    }
    json_t *md = json_object_get(ep, "metadata");
    const char *req_type = json_string_value(json_object_get(md, "request_type"));
    const char *rep_type = json_string_value(json_object_get(md, "reply_type"));
    const ProtobufCMessageDescriptor *req_desc = message_registry_find(req_type);
    const ProtobufCMessageDescriptor *rep_desc = message_registry_find(rep_type);
    if (req_desc == NULL || rep_desc == NULL) {
        fprintf(stderr, "natomic-call: %s uses message types this build does not know (%s, %s)\n", subject,
                req_type ? req_type : "?", rep_type ? rep_type : "?");
        rc = EXIT_USAGE;
        goto out;
    }
    char err[256];
    if (message_from_json(&request, req_desc, request_json, err, sizeof err) != 0) {
        fprintf(stderr, "natomic-call: %s\n", err);
        rc = EXIT_USAGE;
        goto out;
    }

    natomic_call_info_t ci;
    natomic_status_t st;
    if (tx != NULL || key != NULL) {
        /* Transaction id and key are headers: send by hand, decode like natomic_request. */
        size_t len = protobuf_c_message_get_packed_size(request);
        uint8_t *buf = malloc(len ? len : 1);
        natsMsg *m = NULL, *r = NULL;
        protobuf_c_message_pack(request, buf);
        natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len);
        if (s == NATS_OK && tx != NULL)
            s = natsMsgHeader_Set(m, NATOMIC_HDR_TX, tx);
        if (s == NATS_OK && key != NULL)
            s = natsMsgHeader_Set(m, NATOMIC_HDR_IDEMPOTENCY_KEY, key);
        if (s == NATS_OK)
            s = natsConnection_RequestMsg(&r, nc, m, timeout_ms);
        free(buf);
        natsMsg_Destroy(m);
        memset(&ci, 0, sizeof ci);
        if (s != NATS_OK) {
            st = s == NATS_TIMEOUT ? NATOMIC_ETIMEOUT : s == NATS_NO_RESPONDERS ? NATOMIC_ENORESPONDERS : NATOMIC_ENATS;
        } else {
            const char *code = NULL, *type = NULL, *text = NULL, *replayed = NULL, *rollback = NULL;
            ci.replayed = natsMsgHeader_Get(r, NATOMIC_HDR_REPLAYED, &replayed) == NATS_OK &&
                          strcmp(replayed, "true") == 0;
            if (natsMsgHeader_Get(r, NATOMIC_HDR_ROLLBACK, &rollback) == NATS_OK)
                ci.rollback = strcmp(rollback, "complete") == 0     ? NATOMIC_OUTCOME_COMPLETE
                              : strcmp(rollback, "incomplete") == 0 ? NATOMIC_OUTCOME_INCOMPLETE
                                                                    : NATOMIC_OUTCOME_NONE;
            if (natsMsgHeader_Get(r, NATOMIC_HDR_SERVICE_ERROR_CODE, &code) == NATS_OK) {
                natsMsgHeader_Get(r, NATOMIC_HDR_ERROR_TYPE, &type);
                natsMsgHeader_Get(r, NATOMIC_HDR_SERVICE_ERROR, &text);
                ci.code = atoi(code);
                ci.kind = st = natomic_error_kind(ci.code);
                snprintf(ci.type, sizeof ci.type, "%s", type ? type : "");
                snprintf(ci.message, sizeof ci.message, "%s", text ? text : "");
            } else {
                reply = protobuf_c_message_unpack(rep_desc, NULL, (size_t)natsMsg_GetDataLength(r),
                                                  (const uint8_t *)natsMsg_GetData(r));
                st = reply != NULL ? NATOMIC_OK : NATOMIC_EBADREPLY;
            }
            natsMsg_Destroy(r);
        }
    } else {
        st = natomic_request(&reply, nc, subject, request, rep_desc, timeout_ms, &ci);
    }

    if (ci.replayed)
        fprintf(stderr, "natomic-call: replayed: the stored outcome of the first call with key '%s'\n", key);
    if (st == NATOMIC_OK) {
        json_t *out = message_to_json(reply);
        char *text = out != NULL ? json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) : NULL;
        printf("%s\n", text != NULL ? text : "{}");
        free(text);
        json_decref(out);
    } else if (ci.code != 0) {
        json_t *out = json_pack("{s:{s:i, s:s, s:s, s:s}}", "error", "code", ci.code, "type", ci.type, "message",
                                ci.message, "rollback", natomic_outcome_name(ci.rollback));
        char *text = out != NULL ? json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) : NULL;
        printf("%s\n", text != NULL ? text : "{}");
        free(text);
        json_decref(out);
        rc = EXIT_REMOTE;
    } else {
        /* A publish the server does not permit is dropped, and the server says so asynchronously
           (-ERR 'Permissions Violation ...'): the call then looks like a timeout unless asked. */
        const char *why = NULL;
        if (st == NATOMIC_ETIMEOUT && natsConnection_GetLastError(nc, &why) == NATS_NOT_PERMITTED && why != NULL)
            fprintf(stderr, "natomic-call: %s: refused by the server: %s\n", subject, why);
        else
            fprintf(stderr, "natomic-call: %s: %s\n", subject,
                    st == NATOMIC_ETIMEOUT ? "no reply in time (the outcome is in doubt)" : natomic_strerror(st));
        rc = st == NATOMIC_EBADREPLY ? EXIT_REMOTE : EXIT_TRANSPORT;
    }
out:
    protobuf_c_message_free_unpacked(request, NULL);
    protobuf_c_message_free_unpacked(reply, NULL);
    json_decref(info);
    json_decref(request_json);
    return rc;
}

int main(int argc, char **argv)
{
    natomic_conn_config_t conn = {0};
    const char *tx = NULL, *key = NULL;
    int64_t timeout_ms = 5000;
    bool list = false;
    static const struct option opts[] = {{"nats", required_argument, NULL, 'c'},
                                         NATOMIC_CONN_LONGOPTS('c'), /* --server, credentials, TLS */
                                         {"timeout", required_argument, NULL, 't'},
                                         {"tx", required_argument, NULL, 'x'},
                                         {"key", required_argument, NULL, 'k'},
                                         {"list", no_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c, longindex = 0;
    while ((c = getopt_long(argc, argv, "h", opts, &longindex)) != -1) {
        switch (c) {
        case 'c': /* where NATS is and who to be there (natomic_conn_config_set) */
            natomic_conn_config_set(&conn, opts[longindex].name, optarg);
            break;
        case 't': {
            char *end = NULL;
            long long v = strtoll(optarg, &end, 10);
            if (end == optarg || *end != '\0' || v <= 0 || v > 3600000) {
                fprintf(stderr, "natomic-call: --timeout wants milliseconds from 1 to 3600000, got '%s'\n", optarg);
                return EXIT_USAGE;
            }
            timeout_ms = v;
            break;
        }
        case 'x':
            tx = optarg;
            break;
        case 'k':
            key = optarg;
            if (*key == '\0' || strlen(key) > 128 || strpbrk(key, " \t\r\n") != NULL) {
                fprintf(stderr, "natomic-call: --key wants 1 to 128 printable characters without spaces\n");
                return EXIT_USAGE;
            }
            break;
        case 'l':
            list = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            fprintf(stderr, "Try 'natomic-call --help'.\n");
            return EXIT_USAGE;
        }
    }
    int rest = argc - optind;
    if (rest < 1 || rest > 2 || (list && rest != 1)) {
        usage(stderr);
        return EXIT_USAGE;
    }
    natomic_conn_config_from_env(&conn);
    char err[512];
    natsConnection *nc = NULL;
    /* Fail fast when NATS is not there: the default connect timeout is 2 s. */
    natomic_status_t connected = natomic_connect_config(&nc, &conn, err, sizeof err);
    if (connected != NATOMIC_OK) {
        fprintf(stderr, "natomic-call: %s\n", err);
        return connected == NATOMIC_EINVAL ? EXIT_USAGE : EXIT_TRANSPORT; /* a file it cannot use, or NATS */
    }
    int rc;
    if (list) {
        rc = EXIT_OK;
        json_t *info = service_info(nc, argv[optind], timeout_ms, &rc);
        if (info != NULL)
            rc = list_methods(info);
        json_decref(info);
    } else {
        rc = call(nc, argv[optind], rest == 2 ? argv[optind + 1] : "{}", timeout_ms, tx, key);
    }
    natsConnection_Destroy(nc);
    nats_Close();
    return rc;
}
