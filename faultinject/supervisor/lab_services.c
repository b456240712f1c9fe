/*
 * lab_services.c -- start and stop the five example services for the lab.
 *
 * The binaries are found beside natomic-lab's own build folder
 * (../services/<name>/<name>), so the lab runs from a build tree without
 * installing anything. Each child dies with the lab (process.c).
 */
#include "lab_services.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const names[LAB_SERVICE_COUNT] = {"conversions", "inventory", "payments", "orders",
                                                     "notifications"};

/* Waits until $SRV.PING.<name> answers; 0 or -1 after timeout_ms by the clock (a request with no
   responders returns at once, so counting rounds would give up long before timeout_ms). */
static int wait_ping(natsConnection *nc, const char *name, int timeout_ms)
{
    char subject[128];
    snprintf(subject, sizeof subject, "$SRV.PING.%s", name);
    for (int64_t end = lab_monotonic_ms() + timeout_ms; lab_monotonic_ms() < end;) {
        natsMsg *r = NULL;
        if (natsConnection_RequestString(&r, nc, subject, "", 50) == NATS_OK) {
            natsMsg_Destroy(r);
            return 0;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

int lab_services_start(lab_services_t *out, const char *url, const char *dir, natsConnection *nc)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < LAB_SERVICE_COUNT; i++) {
        lab_service_t *s = &out->svc[i];
        s->name = names[i];
        char bin[1024], rel[128], log[512];
        snprintf(rel, sizeof rel, "../services/%s/%s", s->name, s->name);
        snprintf(s->db_path, sizeof s->db_path, "%s/%s.db", dir, s->name);
        snprintf(log, sizeof log, "%s/%s.log", dir, s->name);
        if (lab_sibling_path(bin, sizeof bin, rel) != 0) {
            lab_services_stop(out);
            return -1;
        }
        char *argv[] = {bin, "--nats", (char *)url, "--db", s->db_path, NULL};
        if (lab_process_start(&s->proc, argv, log, NULL) != 0) {
            lab_services_stop(out);
            return -1;
        }
        out->count = i + 1;
    }
    for (int i = 0; i < out->count; i++) {
        if (wait_ping(nc, out->svc[i].name, 10000) != 0) {
            fprintf(stderr, "lab: service %s did not come up; see %s\n", out->svc[i].name,
                    out->svc[i].proc.log_path);
            lab_services_stop(out);
            return -1;
        }
    }
    return 0;
}

lab_service_t *lab_services_find(lab_services_t *s, const char *name)
{
    for (int i = 0; i < s->count; i++)
        if (strcmp(s->svc[i].name, name) == 0)
            return &s->svc[i];
    return NULL;
}

void lab_services_stop(lab_services_t *s)
{
    for (int i = 0; i < s->count; i++)
        if (s->svc[i].proc.pid > 0)
            kill(s->svc[i].proc.pid, SIGTERM);
    for (int i = 0; i < s->count; i++)
        lab_process_stop(&s->svc[i].proc, SIGTERM, 5000);
}
