/*
 * discovery.c -- the NATS micro discovery protocol (ADR-32), so stock NATS
 * tooling (`nats micro ls`, `nats micro stats`) sees natomic services.
 *
 * Each instance answers, outside the queue group (every instance replies):
 *   $SRV.PING | $SRV.PING.<name> | $SRV.PING.<name>.<id>   -> ping_response
 *   $SRV.INFO ...                                          -> info_response
 *   $SRV.STATS ...                                         -> stats_response
 *
 * INFO's endpoint metadata names the protobuf request and reply types of
 * each method (`request_type`, `reply_type`) and its flags, so a generic
 * client can encode a call from the descriptors alone. STATS carries the
 * natomic counters (rollbacks, dispatches, dead letters) in each
 * endpoint's `data`. Answers run on nats.c's delivery thread, never on a
 * worker, so discovery answers even when every worker is busy.
 */
#include "natomic_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum verb { VERB_PING, VERB_INFO, VERB_STATS };

static json_t *base_doc(const natomic_service_t *svc, const char *type)
{
    char workers[16]; /* ADR-32 metadata values are strings */
    snprintf(workers, sizeof workers, "%d", svc->max_workers);
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "type", type, "name", svc->name, "id", svc->id, "version",
                     svc->version, "metadata", "natomic.version", NATOMIC_VERSION, "natomic.max_workers", workers);
}

static json_t *endpoint_info(const natomic_service_t *svc, const natomic_method_t *m)
{
    return json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s}}", "name", m->name, "subject", m->subject,
                     "queue_group", svc->name, "metadata", "request_type", m->request_desc->name, "reply_type",
                     m->reply_desc->name, "rollback_once_failed",
                     (m->flags & NATOMIC_ROLLBACK_ONCE_FAILED) ? "true" : "false", "dispatch_after_commit",
                     (m->flags & NATOMIC_DISPATCH_AFTER_COMMIT) ? "true" : "false");
}

/* The natomic counters, service-wide, in each endpoint's `data`. */
static json_t *natomic_counters(natomic_service_t *svc)
{
    json_t *barrier = json_object();
    for (int i = 0; i < NATOMIC_BARRIER_OUTCOME_COUNT_; i++)
        json_object_set_new(barrier, natomic_barrier_outcome_name((natomic_barrier_outcome_t)i),
                            json_integer((json_int_t)atomic_load(&svc->barrier[i])));
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "rollbacks_run",
                     (json_int_t)atomic_load(&svc->rollbacks_run), "rollbacks_exhausted",
                     (json_int_t)atomic_load(&svc->rollbacks_exhausted), "dispatches_run",
                     (json_int_t)atomic_load(&svc->dispatches_run), "dispatches_exhausted",
                     (json_int_t)atomic_load(&svc->dispatches_exhausted), "retries",
                     (json_int_t)atomic_load(&svc->retries), "unknown_method",
                     (json_int_t)atomic_load(&svc->unknown_method), "events_handled",
                     (json_int_t)atomic_load(&svc->events_handled), "events_failed",
                     (json_int_t)atomic_load(&svc->events_failed), "barrier", barrier);
}

static json_t *endpoint_stats(natomic_service_t *svc, natomic_method_t *m)
{
    uint64_t n = atomic_load(&m->num_requests), ns = atomic_load(&m->processing_ns);
    char last[sizeof m->last_error];
    pthread_mutex_lock(&m->last_error_mu);
    memcpy(last, m->last_error, sizeof last);
    pthread_mutex_unlock(&m->last_error_mu);
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:o}", "name", m->name, "subject", m->subject,
                     "queue_group", svc->name, "num_requests", (json_int_t)n, "num_errors",
                     (json_int_t)atomic_load(&m->num_errors), "last_error", last, "processing_time", (json_int_t)ns,
                     "average_processing_time", (json_int_t)(n ? ns / n : 0), "data", natomic_counters(svc));
}

/* Builds the answer document for a verb; NULL on OOM. */
static json_t *answer(natomic_service_t *svc, enum verb verb)
{
    static const char *const types[] = {"io.nats.micro.v1.ping_response", "io.nats.micro.v1.info_response",
                                        "io.nats.micro.v1.stats_response"};
    json_t *doc = base_doc(svc, types[verb]);
    if (doc == NULL)
        return NULL;
    if (verb == VERB_PING)
        return doc;
    json_t *eps = json_array();
    for (size_t i = 0; i < svc->n_methods; i++)
        json_array_append_new(eps, verb == VERB_INFO ? endpoint_info(svc, &svc->methods[i])
                                                     : endpoint_stats(svc, &svc->methods[i]));
    json_object_set_new(doc, "endpoints", eps);
    if (verb == VERB_INFO)
        json_object_set_new(doc, "description", json_string(svc->description));
    else
        json_object_set_new(doc, "started", json_string(svc->started_at));
    return doc;
}

static void on_discovery(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    natomic_service_t *svc = closure;
    const char *subject = natsMsg_GetSubject(msg);
    const char *reply = natsMsg_GetReply(msg);
    enum verb verb = strncmp(subject, "$SRV.PING", 9) == 0   ? VERB_PING
                     : strncmp(subject, "$SRV.INFO", 9) == 0 ? VERB_INFO
                                                             : VERB_STATS;
    if (reply != NULL && *reply != '\0') {
        json_t *doc = answer(svc, verb);
        char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
        if (text != NULL)
            natsConnection_PublishString(nc, reply, text);
        free(text);
        json_decref(doc);
    }
    natsMsg_Destroy(msg);
    (void)sub;
}

natomic_status_t natomic__discovery_start(natomic_service_t *svc)
{
    /* PING last: the server takes subscriptions in order, and whoever waits for an
       instance waits for its PING answer -- INFO and STATS must already be there then. */
    static const char *const verbs[] = {"STATS", "INFO", "PING"};
    int k = 0;
    for (int v = 0; v < 3; v++) {
        char subjects[3][256];
        snprintf(subjects[0], sizeof subjects[0], "$SRV.%s", verbs[v]);
        snprintf(subjects[1], sizeof subjects[1], "$SRV.%s.%s", verbs[v], svc->name);
        snprintf(subjects[2], sizeof subjects[2], "$SRV.%s.%s.%s", verbs[v], svc->name, svc->id);
        for (int i = 0; i < 3; i++, k++) {
            natsStatus s = natsConnection_Subscribe(&svc->discovery[k], svc->nc, subjects[i], on_discovery, svc);
            if (s != NATS_OK) {
                natomic__log(NATOMIC_LOG_ERROR, svc->name, "cannot subscribe to %s: %s", subjects[i],
                             natsStatus_GetText(s));
                return NATOMIC_ENATS;
            }
        }
    }
    return NATOMIC_OK;
}

void natomic__discovery_stop(natomic_service_t *svc)
{
    for (int i = 0; i < NATOMIC_DISCOVERY_SUBS; i++) {
        if (svc->discovery[i] == NULL)
            continue;
        /* Drain, then wait: no callback may still run when the service is freed. */
        if (natsSubscription_Drain(svc->discovery[i]) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(svc->discovery[i], 5000);
        else
            natsSubscription_Unsubscribe(svc->discovery[i]);
        natsSubscription_Destroy(svc->discovery[i]);
        svc->discovery[i] = NULL;
    }
}
