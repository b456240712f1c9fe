/*
 * supervisor.c -- NATS, the services, and the faults a scenario injects.
 *
 * One supervisor owns one embedded nats-server (JetStream in a temp
 * folder, which is also where the services' databases, logs and libfiu
 * control FIFOs live) and up to SUPERVISOR_MAX_SERVICES service
 * processes. Each process talks to NATS through its own fault proxy, so a
 * connection fault hits exactly one process; the supervisor's own client
 * connects directly and never sees those faults.
 *
 * Invariants
 *   - svc[i].proc.pid > 0 exactly while that child is not yet reaped; every
 *     reaped child is taken off the emergency list at once (its pid may be
 *     reused by the system afterwards).
 *   - The instances of one service are adjacent in svc[], instance 0 first.
 *   - A paused child is stopped (SIGSTOP seen by waitpid) until resumed,
 *     killed or stopped; supervisor_stop() continues it before SIGTERM.
 *   - Everything the supervisor writes into a service's log is one whole
 *     "---- supervisor: ... ----" line, appended (O_APPEND), so it never
 *     tears the service's own lines.
 *
 * Nothing outlives the supervisor: the children get PR_SET_PDEATHSIG
 * (SIGKILL when the thread that started them dies; start and restart from
 * a thread that lives as long as the supervisor) and a process group of
 * their own; supervisor_emergency_kill() SIGKILLs every registered pid
 * and group from a signal handler.
 *
 * The watcher (supervisor_watch, for the explorer) is a second thread that
 * restarts an instance which ended on its own, after a quiet period, as
 * systemd's Restart=always would. It and the process faults (kill,
 * restart, pause, resume, run-time faults, stop) take sv->mu, so the two
 * threads never reap, signal or spawn the same child at once; the rest
 * (links, logs, NATS) touches nothing the watcher does.
 *
 * Failures return -1 after one line on stderr naming the service and,
 * for a process that would not come up, its log.
 */
#include "supervisor.h"

#include "fault_proxy.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <natomic.h>

#define SECURE_ENV 8              /* the variables a secure story gives each service       */
#define START_WAIT_MS 10000      /* a (re)started service answers $SRV.PING within this */
#define STOP_WAIT_MS 5000        /* SIGTERM, then SIGKILL                              */
#define NATS_RECONNECT_MS 10000  /* the supervisor's client after a NATS restart       */
#define NODE_HEALTHY_MS 30000    /* a restarted or healed node's cluster is healthy again */
#define PAUSE_WAIT_MS 2000       /* until waitpid() reports the stop                   */
#define FIU_WAIT_MS 2000         /* a libfiu control FIFO answers within this          */
#define LOG_TAIL_BYTES (256 * 1024)
#define EMERGENCY_SLOTS 128

/* ------------------------------------------------------------------ */
/* The emergency list: pids a signal handler may SIGKILL               */
/* ------------------------------------------------------------------ */

/* Lock-free atomics: read from signal handlers, written by the supervisor. */
static atomic_int emergency_pids[EMERGENCY_SLOTS];

static void emergency_register(pid_t pid)
{
    for (int i = 0; pid > 1 && i < EMERGENCY_SLOTS; i++) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&emergency_pids[i], &expected, (int)pid))
            return;
    }
}

static void emergency_unregister(pid_t pid)
{
    for (int i = 0; pid > 1 && i < EMERGENCY_SLOTS; i++) {
        int expected = (int)pid;
        if (atomic_compare_exchange_strong(&emergency_pids[i], &expected, 0))
            return;
    }
}

void supervisor_emergency_kill(void)
{
    int saved = errno;
    for (int i = 0; i < EMERGENCY_SLOTS; i++) {
        int pid = atomic_load(&emergency_pids[i]);
        if (pid > 1) {
            kill(-pid, SIGKILL); /* the service's group (fails harmlessly for nats-server) */
            kill(pid, SIGKILL);
        }
    }
    errno = saved;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static void stop_nats(supervisor_t *sv, bool keep);
static int start_common(supervisor_t *sv);
static int identity_index(const char *name);

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_msg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("supervisor: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* "orders" for instance 0, "orders#2" for instance 2. */
static void display_name(char *out, size_t cap, const supervised_service_t *s)
{
    if (s->instance == 0)
        snprintf(out, cap, "%s", s->name);
    else
        snprintf(out, cap, "%s#%d", s->name, s->instance);
}

/* Appends one marker line to the instance's log; best effort. A child not running has no pid to name. */
static void log_marker(const supervised_service_t *s, const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char stamp[32], who[48], pid[32] = "", line[256];
    strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
    display_name(who, sizeof who, s);
    if (s->proc.pid > 0)
        snprintf(pid, sizeof pid, " (pid %ld)", (long)s->proc.pid);
    int n = snprintf(line, sizeof line, "---- supervisor: %s %s%s at %s.%03ld ----\n", what, who, pid, stamp,
                     ts.tv_nsec / 1000000L);
    if (n <= 0)
        return;
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    int fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t ignored = write(fd, line, (size_t)n);
    (void)ignored;
    close(fd);
}

/* Marks a reaped child gone (whether it `died` on its own is the caller's to say). */
static void forget_child(supervised_service_t *s)
{
    emergency_unregister(s->proc.pid);
    s->proc.pid = 0;
    s->paused = false;
}

/* True while the child runs (or is stopped); reaps it (and says so in its log) when it ended. */
static bool alive(supervised_service_t *s)
{
    if (s->proc.pid <= 0)
        return false;
    int status = 0;
    pid_t r = waitpid(s->proc.pid, &status, WNOHANG);
    if (r == 0)
        return true;
    if (r == s->proc.pid) {
        char what[64];
        if (WIFSIGNALED(status))
            snprintf(what, sizeof what, "saw the end (signal %d) of", WTERMSIG(status));
        else
            snprintf(what, sizeof what, "saw the exit (status %d) of", WEXITSTATUS(status));
        log_marker(s, what);
        s->died = true; /* on its own: no kill of ours reaps through here */
        s->died_ms = lab_monotonic_ms();
        s->died_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        s->died_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    forget_child(s);
    return false;
}

/* SIGKILL to the child's group, reaped before returning. The instance is down on purpose:
 * the watcher leaves it alone, even if it had ended on its own a moment before. */
static void kill_instance(supervised_service_t *s)
{
    bool running = alive(s);
    s->died = false;
    if (!running)
        return;
    log_marker(s, "SIGKILL to");
    lab_process_signal(&s->proc, SIGKILL);
    while (waitpid(s->proc.pid, NULL, 0) < 0 && errno == EINTR) {
    }
    forget_child(s);
}

/* The service binary: $NATOMIC_SERVICES_DIR/<name>/<name>, else ../services/<name>/<name>
 * beside the running program. 0, or -1 with a message. */
static int service_binary(char *out, size_t cap, const char *name)
{
    const char *dir = getenv("NATOMIC_SERVICES_DIR");
    int rc;
    if (dir != NULL && *dir != '\0') {
        int w = snprintf(out, cap, "%s/%s/%s", dir, name, name);
        rc = w > 0 && (size_t)w < cap ? 0 : -1;
    } else {
        char rel[128];
        snprintf(rel, sizeof rel, "../services/%s/%s", name, name);
        rc = lab_sibling_path(out, cap, rel);
    }
    if (rc != 0) {
        fail_msg("%s: path of the service binary too long", name);
        return -1;
    }
    if (access(out, X_OK) != 0) {
        fail_msg("%s: no service binary at %s (%s; set NATOMIC_SERVICES_DIR to the build's services folder)",
                 name, out, strerror(errno));
        return -1;
    }
    return 0;
}

/* Forks the instance against its proxy; faults only when `first_start`. 0, or -1 with a message. */
static int spawn_instance(supervisor_t *sv, supervised_service_t *s, bool first_start)
{
    char bin[1024], url[sizeof sv->cluster.urls], env_faults[1100], env_seed[64], env_tmp[300], env_mode[32],
        env_instance[64], env_replicas[40], secure_env[SECURE_ENV][320];
    if (service_binary(bin, sizeof bin, s->name) != 0)
        return -1;
    if (s->n_proxy > 0) { /* its own proxies, one per node */
        size_t used = 0;
        for (int k = 0; k < s->n_proxy; k++)
            used += (size_t)snprintf(url + used, sizeof url - used, "%snats://127.0.0.1:%d", k > 0 ? "," : "",
                                     fault_proxy_port(s->proxy[k]));
    } else
        snprintf(url, sizeof url, "%s", sv->nodes > 1 || sv->external ? sv->cluster.urls : sv->nats.url);
    /* Replicated saga log, leases and EVENTS on a cluster: what a production cluster runs. */
    snprintf(env_replicas, sizeof env_replicas, "NATOMIC_JS_REPLICAS=%d", sv->nodes >= 3 ? 3 : sv->nodes > 1 ? sv->nodes : 1);
    /* Set even when empty: a restart must not inherit faults from the lab's own environment. */
    snprintf(env_faults, sizeof env_faults, "NATOMIC_FAULTS=%s", first_start ? s->faults : "");
    snprintf(env_seed, sizeof env_seed, "NATOMIC_FAULT_SEED=%llu", sv->seed);
    snprintf(env_tmp, sizeof env_tmp, "TMPDIR=%s", sv->dir);
    snprintf(env_mode, sizeof env_mode, "NATOMIC_MODE=%s", sv->durable ? "durable" : "memory");
    snprintf(env_instance, sizeof env_instance, "NATOMIC_INSTANCE=%s-%d", s->name, s->instance);
    /* NATOMIC_SERVICE_WRAPPER="valgrind --error-exitcode=99 -q" runs each service under a tool. */
    char *argv[24], wrapper[512];
    int argc = 0;
    const char *w = getenv("NATOMIC_SERVICE_WRAPPER");
    if (w != NULL && *w != '\0') {
        snprintf(wrapper, sizeof wrapper, "%s", w);
        char *save = NULL;
        for (char *tok = strtok_r(wrapper, " ", &save); tok != NULL && argc < 18; tok = strtok_r(NULL, " ", &save))
            argv[argc++] = tok;
        /* execve wants a path: resolve the tool on PATH once, e.g. /usr/bin/valgrind. */
        static char tool[512];
        if (argc > 0 && strchr(argv[0], '/') == NULL) {
            snprintf(tool, sizeof tool, "/usr/bin/%s", argv[0]);
            argv[0] = tool;
        }
    }
    char *tail[] = {bin, "--nats", url, "--db", s->db_path, NULL};
    for (size_t i = 0; i < sizeof tail / sizeof tail[0]; i++)
        argv[argc++] = tail[i];
    char *env[8 + SECURE_ENV] = {env_faults, env_seed, env_tmp, env_mode, env_instance, env_replicas};
    for (int i = 0; sv->external && i < sv->n_conn_env; i++) /* the lab's credentials, for an outside NATS */
        env[6 + i] = sv->conn_env[i];
    if (sv->secure) { /* its own identity, over TLS; no trace copies, no fault control (not granted) */
        int k = identity_index(s->name);
        snprintf(secure_env[0], sizeof secure_env[0], "NATS_USER=%s", s->name);
        snprintf(secure_env[1], sizeof secure_env[1], "NATS_PASSWORD=%s", k >= 0 ? sv->password[k] : "");
        snprintf(secure_env[2], sizeof secure_env[2], "NATS_CA=%s/ca.pem", sv->tls_dir);
        snprintf(secure_env[3], sizeof secure_env[3], "NATS_CERT=%s/%s.pem", sv->tls_dir, s->name);
        snprintf(secure_env[4], sizeof secure_env[4], "NATS_KEY=%s/%s-key.pem", sv->tls_dir, s->name);
        snprintf(secure_env[5], sizeof secure_env[5], "NATS_INBOX_PREFIX=_INBOX.%s", s->name);
        snprintf(secure_env[6], sizeof secure_env[6], "NATOMIC_TRACE=0");
        snprintf(secure_env[7], sizeof secure_env[7], "NATOMIC_FAULT_CONTROL=0");
        for (int i = 0; i < SECURE_ENV; i++)
            env[6 + i] = secure_env[i];
    }
    if (lab_process_start_group(&s->proc, argv, s->log_path, env) != 0) {
        fail_msg("%s: cannot start %s", s->name, bin);
        return -1;
    }
    emergency_register(s->proc.pid);
    s->paused = false;
    s->died = false;
    s->death_told = false;
    return 0;
}

/* How many answers one $SRV.PING.<name> gets within wait_ms (stops at `want`). */
static int ping_count(natsConnection *nc, const char *subject, int want, int wait_ms)
{
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    int got = 0;
    if (natsInbox_Create(&inbox) == NATS_OK && natsConnection_SubscribeSync(&sub, nc, inbox) == NATS_OK &&
        natsConnection_PublishRequestString(nc, subject, inbox, "") == NATS_OK) {
        int64_t end = lab_monotonic_ms() + wait_ms;
        while (got < want) {
            int64_t left = end - lab_monotonic_ms();
            natsMsg *m = NULL;
            if (left <= 0 || natsSubscription_NextMsg(&m, sub, left) != NATS_OK)
                break;
            natsMsg_Destroy(m);
            got++;
        }
    }
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
    return got;
}

/* Waits until every running, unpaused instance of s[0..n) answers $SRV.PING.<name>.
 * 0, or -1 with a message naming the log when one died or none came up in time. */
static int wait_ready(supervisor_t *sv, supervised_service_t *s, int n)
{
    char subject[96];
    snprintf(subject, sizeof subject, "$SRV.PING.%s", s[0].name);
    int64_t end = lab_monotonic_ms() + START_WAIT_MS;
    for (;;) {
        int want = 0;
        for (int i = 0; i < n; i++) {
            bool was_running = s[i].proc.pid > 0;
            if (alive(&s[i]))
                want += s[i].paused ? 0 : 1;
            else if (was_running) {
                fail_msg("%s (instance %d) exited while starting; see %s", s[i].name, s[i].instance,
                         s[i].log_path);
                return -1;
            }
        }
        if (want == 0 || ping_count(sv->nc, subject, want, 250) >= want)
            return 0;
        if (lab_monotonic_ms() >= end) {
            fail_msg("%s did not answer %s within %d ms; see %s", s[0].name, subject, START_WAIT_MS,
                     s[0].log_path);
            return -1;
        }
        sleep_ms(20);
    }
}

/* ------------------------------------------------------------------ */
/* Start and services                                                  */
/* ------------------------------------------------------------------ */

int supervisor_start(supervisor_t *sv, unsigned long long seed)
{
    return supervisor_start_nodes(sv, seed, 1);
}

/* ------------------------------------------------------------------ */
/* A secure story: deploy/'s configuration, TLS                        */
/* ------------------------------------------------------------------ */

const char *const supervisor_identities[] = {"orders", "inventory", "payments", "notifications",
                                              "conversions", "client", "admin", "lab", NULL};

static int identity_index(const char *name)
{
    for (int i = 0; supervisor_identities[i] != NULL; i++)
        if (strcmp(supervisor_identities[i], name) == 0)
            return i;
    return -1;
}

/* A new folder $TMPDIR/<prefix>-XXXXXX into out; 0, or -1 with a message. */
static int make_run_dir(char *out, size_t cap, const char *prefix)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, cap, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    if (mkdtemp(out) != NULL)
        return 0;
    fail_msg("mkdtemp %s: %s", out, strerror(errno));
    return -1;
}

/* Removes a secure run's folder: certificates, config, the durable file's JetStream store. */
static void remove_run_dir(const char *dir)
{
    if (dir[0] == '\0' || getenv("NATOMIC_KEEP") != NULL)
        return;
    char *argv[] = {"/bin/rm", "-rf", "--", (char *)dir, NULL};
    lab_process_t p;
    if (lab_process_start(&p, argv, "/dev/null", NULL) == 0)
        lab_process_stop(&p, 0, 10000);
}

/* Runs deploy/gen-certs.sh for every identity into sv->tls_dir; 0, or -1 with its output in a message. */
static int make_certificates(supervisor_t *sv, const char *deploy)
{
    char script[600], log[400];
    snprintf(script, sizeof script, "%s/gen-certs.sh", deploy);
    snprintf(log, sizeof log, "%s/gen-certs.log", sv->tls_dir);
    char *argv[4 + SUPERVISOR_IDENTITIES] = {"/bin/bash", script, sv->tls_dir};
    for (int i = 0; supervisor_identities[i] != NULL; i++)
        argv[3 + i] = (char *)supervisor_identities[i];
    lab_process_t p;
    if (lab_process_start(&p, argv, log, NULL) != 0) {
        fail_msg("cannot run %s", script);
        return -1;
    }
    int status = lab_process_stop(&p, 0, 20000); /* no signal: wait for it */
    if (status != 0) {
        FILE *f = fopen(log, "r");
        char why[600] = "";
        if (f != NULL) {
            why[fread(why, 1, sizeof why - 1, f)] = '\0';
            fclose(f);
        }
        fail_msg("%s did not make the certificates (status %d): %s", script, status, why);
        return -1;
    }
    return 0;
}

/*
 * The run's server configuration: deploy's file as shipped, with the lab's
 * own identity added at the head of its user list. 0, or -1 with a message.
 */
static int write_config(supervisor_t *sv, const char *deploy, bool durable, char *out, size_t cap)
{
    char src[600];
    snprintf(src, sizeof src, "%s/%s", deploy, durable ? "nats-server-durable.conf" : "nats-server.conf");
    snprintf(out, cap, "%s/nats-server.conf", sv->tls_dir);
    FILE *in = fopen(src, "r");
    FILE *o = in != NULL ? fopen(out, "w") : NULL;
    if (o == NULL) {
        fail_msg("cannot read %s or write %s: %s", src, out, strerror(errno));
        if (in != NULL)
            fclose(in);
        return -1;
    }
    char line[1024];
    bool added = false;
    while (fgets(line, sizeof line, in) != NULL) {
        fputs(line, o);
        const char *t = line + strspn(line, " \t");
        if (!added && strncmp(t, "users", 5) == 0 && strchr(t, '[') != NULL) {
            fputs("    # ---- lab: added by natomic-lab for this run, not in the shipped file. The story's\n"
                  "    # observer: pings the services, reads their types, taps what it may.\n"
                  "    { user: lab, password: $LAB_PASSWORD }\n",
                  o);
            added = true;
        }
    }
    bool ok = !ferror(in) && fclose(o) == 0 && added;
    fclose(in);
    if (!ok)
        fail_msg("%s: %s", src, added ? "cannot write the run's copy" : "no 'users = [' list to add the lab to");
    return ok ? 0 : -1;
}

int supervisor_start_secure(supervisor_t *sv, unsigned long long seed, bool durable)
{
    memset(sv, 0, sizeof *sv);
    sv->nodes = 1;
    sv->secure = true;
    const char *deploy = getenv("NATOMIC_DEPLOY_DIR");
    if (deploy == NULL || *deploy == '\0')
        deploy = NATOMIC_DEPLOY_DIR;
    if (make_run_dir(sv->tls_dir, sizeof sv->tls_dir, "natomic-tls") != 0)
        return -1;
    char conf[300];
    if (make_certificates(sv, deploy) != 0 || write_config(sv, deploy, durable, conf, sizeof conf) != 0)
        goto fail;
    /* Passwords: random, a letter first and [0-9a-f] after, as deploy/README.md asks. */
    FILE *rnd = fopen("/dev/urandom", "r");
    for (int i = 0; supervisor_identities[i] != NULL; i++) {
        unsigned char b[12] = {0};
        if (rnd == NULL || fread(b, 1, sizeof b, rnd) != sizeof b) {
            fail_msg("cannot read /dev/urandom");
            if (rnd != NULL)
                fclose(rnd);
            goto fail;
        }
        int n = snprintf(sv->password[i], sizeof sv->password[i], "pw");
        for (size_t k = 0; k < sizeof b; k++)
            n += snprintf(sv->password[i] + n, sizeof sv->password[i] - (size_t)n, "%02x", b[k]);
    }
    fclose(rnd);
    char env_text[SUPERVISOR_IDENTITIES + 2][sizeof sv->tls_dir + 40];
    const char *env[SUPERVISOR_IDENTITIES + 3];
    int ne = 0;
    for (int i = 0; supervisor_identities[i] != NULL; i++) {
        int w = snprintf(env_text[ne], sizeof env_text[ne], "%s_PASSWORD=%s", supervisor_identities[i], sv->password[i]);
        for (int k = 0; k < w && env_text[ne][k] != '_'; k++) /* ORDERS_PASSWORD, ... */
            env_text[ne][k] = (char)toupper((unsigned char)env_text[ne][k]);
        env[ne] = env_text[ne];
        ne++;
    }
    /* Read by the file: the port is overridden by embedded_nats's -p; JetStream (the durable
     * file's) keeps its store in the run's folder, across NATS restarts. */
    snprintf(env_text[ne], sizeof env_text[ne], "NATOMIC_PORT=4222");
    env[ne] = env_text[ne];
    ne++;
    snprintf(env_text[ne], sizeof env_text[ne], "NATOMIC_JS_DIR=%s/jetstream", sv->tls_dir);
    env[ne] = env_text[ne];
    ne++;
    env[ne] = NULL;
    char cert[320], key[320], ca[320];
    snprintf(cert, sizeof cert, "%s/server.pem", sv->tls_dir);
    snprintf(key, sizeof key, "%s/server-key.pem", sv->tls_dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", sv->tls_dir);
    const char *extra[] = {"-c", conf, "--tls", "--tlscert", cert, "--tlskey", key, "--tlscacert", ca, "--tlsverify",
                           NULL};
    if (embedded_nats_start_env(&sv->nats, extra, env) != 0) {
        fail_msg("nats-server did not start from %s (TLS, certificates in %s)", conf, sv->tls_dir);
        goto fail;
    }
    emergency_register(sv->nats.pid);
    snprintf(sv->dir, sizeof sv->dir, "%s", sv->nats.dir);
    sv->seed = seed;
    if (supervisor_connect_as(sv, "lab", &sv->nc) != 0) {
        stop_nats(sv, false);
        goto fail;
    }
    return start_common(sv);
fail:
    remove_run_dir(sv->tls_dir);
    memset(sv, 0, sizeof *sv);
    return -1;
}

/* Deletes the streams the library makes (KV_natomic_*, EVENTS) from an outside server: a fresh story. */
static int clear_streams(supervisor_t *sv)
{
    jsCtx *js = NULL;
    jsStreamNamesList *names = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsConnection_JetStream(&js, sv->nc, NULL);
    if (s == NATS_OK)
        s = js_StreamNames(&names, js, NULL, &jerr);
    if (s == NATS_NOT_FOUND) /* no stream at all */
        s = NATS_OK;
    for (int i = 0; s == NATS_OK && names != NULL && i < names->Count; i++) {
        const char *n = names->List[i];
        if (strncmp(n, "KV_natomic_", 11) == 0 || strcmp(n, "EVENTS") == 0)
            s = js_DeleteStream(js, n, NULL, &jerr);
    }
    if (s != NATS_OK)
        fail_msg("cannot clear the library's streams on %s: %s", sv->cluster.urls,
                 jerr != 0 ? nats_GetLastError(NULL) : natsStatus_GetText(s));
    jsStreamNamesList_Destroy(names);
    jsCtx_Destroy(js);
    return s == NATS_OK ? 0 : -1;
}

int supervisor_start_external(supervisor_t *sv, unsigned long long seed, const natomic_conn_config_t *conn,
                              const char *node_control, const char *monitor_ports)
{
    memset(sv, 0, sizeof *sv);
    sv->external = true;
    if (conn->tls_ca != NULL || conn->tls_cert != NULL) {
        fail_msg("--server with TLS: the lab's fault proxies stand between the clients and the nodes, so no "
                 "certificate's host name would match; run the stories on that NATS without TLS");
        return -1;
    }
    if (nats_cluster_attach(&sv->cluster, conn->url, monitor_ports) != 0)
        return -1; /* it said why */
    sv->nodes = sv->cluster.n;
    /* An operator's cluster may be electing: the story starts on a healthy one. */
    if (nats_cluster_wait_healthy(&sv->cluster, NODE_HEALTHY_MS) != 0) {
        fail_msg("%s: JetStream is not healthy (/healthz on the monitoring port%s) after %d ms", sv->cluster.urls,
                 monitor_ports != NULL ? "s given" : " 8222", NODE_HEALTHY_MS);
        return -1;
    }
    snprintf(sv->node_control, sizeof sv->node_control, "%s", node_control != NULL ? node_control : "");
    if (make_run_dir(sv->dir, sizeof sv->dir, "natomic-lab") != 0)
        return -1;
    static const struct {
        const char *name;
        size_t off;
    } creds[] = {{"NATS_USER", offsetof(natomic_conn_config_t, user)},
                 {"NATS_PASSWORD", offsetof(natomic_conn_config_t, password)},
                 {"NATS_TOKEN", offsetof(natomic_conn_config_t, token)},
                 {"NATS_CREDS", offsetof(natomic_conn_config_t, creds_file)},
                 {"NATS_NKEY", offsetof(natomic_conn_config_t, nkey_file)}};
    for (size_t i = 0; i < sizeof creds / sizeof creds[0]; i++) {
        const char *v = *(const char *const *)((const char *)conn + creds[i].off);
        if (v != NULL)
            snprintf(sv->conn_env[sv->n_conn_env++], sizeof sv->conn_env[0], "%s=%s", creds[i].name, v);
    }
    char urls[NATS_CLUSTER_MAX * 40];
    size_t used = 0;
    for (int k = 0; k < sv->cluster.n; k++) {
        if (fault_proxy_start_to(&sv->lab_proxy[k], sv->cluster.host[k], sv->cluster.node[k].port) != 0)
            goto fail;
        used += (size_t)snprintf(urls + used, sizeof urls - used, "%snats://127.0.0.1:%d", k > 0 ? "," : "",
                                 fault_proxy_port(sv->lab_proxy[k]));
    }
    natomic_conn_config_t mine = *conn;
    mine.url = urls;
    char err[300];
    if (natomic_connect_config(&sv->nc, &mine, err, sizeof err) != NATOMIC_OK) {
        fail_msg("cannot connect to %s: %s", sv->cluster.urls, err);
        goto fail;
    }
    sv->seed = seed;
    if (clear_streams(sv) != 0) {
        natsConnection_Destroy(sv->nc);
        sv->nc = NULL;
        goto fail;
    }
    return start_common(sv);
fail:
    stop_nats(sv, false);
    memset(sv, 0, sizeof *sv);
    return -1;
}

int supervisor_connect_as(supervisor_t *sv, const char *identity, natsConnection **nc)
{
    int k = identity_index(identity);
    if (!sv->secure || k < 0) {
        fail_msg("%s: %s", identity, !sv->secure ? "not a secure story (no identities)" : "no such identity");
        return -1;
    }
    char cert[320], key[320], ca[320], inbox[64], err[300];
    snprintf(cert, sizeof cert, "%s/%s.pem", sv->tls_dir, identity);
    snprintf(key, sizeof key, "%s/%s-key.pem", sv->tls_dir, identity);
    snprintf(ca, sizeof ca, "%s/ca.pem", sv->tls_dir);
    snprintf(inbox, sizeof inbox, "_INBOX.%s", identity);
    natomic_conn_config_t c = {.url = sv->nats.url, .user = identity, .password = sv->password[k],
                               .tls_cert = cert, .tls_key = key, .tls_ca = ca,
                               /* the lab's identity may read every inbox: the library's default */
                               .inbox_prefix = strcmp(identity, "lab") == 0 ? NULL : inbox};
    if (natomic_connect_config(nc, &c, err, sizeof err) != NATOMIC_OK) {
        fail_msg("cannot connect as %s: %s", identity, err);
        return -1;
    }
    return 0;
}

/* Stops the servers (and the lab's proxies to a cluster); the folders go unless `keep`. */
static void stop_nats(supervisor_t *sv, bool keep)
{
    for (int k = 0; k < NATS_CLUSTER_MAX; k++) { /* the lab's own proxies to a cluster's nodes */
        fault_proxy_stop(sv->lab_proxy[k]);
        sv->lab_proxy[k] = NULL;
    }
    if (sv->external) { /* not ours to stop: the lab's folder goes */
        if (!keep)
            remove_run_dir(sv->dir);
        return;
    }
    if (sv->nodes <= 1) {
        pid_t pid = sv->nats.pid;
        if (keep)
            embedded_nats_stop_keep(&sv->nats); /* the folder stays: logs, databases, JetStream store */
        else
            embedded_nats_stop(&sv->nats);
        emergency_unregister(pid);
        return;
    }
    for (int k = 0; k < sv->cluster.n; k++)
        emergency_unregister(sv->cluster.node[k].pid);
    nats_cluster_stop_keep(&sv->cluster, keep);
}

int supervisor_start_nodes(supervisor_t *sv, unsigned long long seed, int nodes)
{
    memset(sv, 0, sizeof *sv);
    if (nodes < 1 || nodes > NATS_CLUSTER_MAX) {
        fail_msg("%d NATS nodes: want 1 to %d", nodes, NATS_CLUSTER_MAX);
        return -1;
    }
    sv->nodes = nodes;
    char urls[NATS_CLUSTER_MAX * 40];
    if (nodes == 1) {
        if (embedded_nats_start(&sv->nats) != 0)
            return -1; /* it said why */
        emergency_register(sv->nats.pid);
        snprintf(sv->dir, sizeof sv->dir, "%s", sv->nats.dir);
        snprintf(urls, sizeof urls, "%s", sv->nats.url);
    } else {
        if (nats_cluster_start(&sv->cluster, nodes) != 0)
            return -1; /* it said why */
        size_t used = 0;
        for (int k = 0; k < nodes; k++) {
            emergency_register(sv->cluster.node[k].pid);
            if (fault_proxy_start(&sv->lab_proxy[k], sv->cluster.node[k].port) != 0) {
                stop_nats(sv, false);
                memset(sv, 0, sizeof *sv);
                return -1;
            }
            used += (size_t)snprintf(urls + used, sizeof urls - used, "%snats://127.0.0.1:%d", k > 0 ? "," : "",
                                     fault_proxy_port(sv->lab_proxy[k]));
        }
        snprintf(sv->dir, sizeof sv->dir, "%s", sv->cluster.node[0].dir);
    }
    sv->seed = seed;
    natomic_status_t st = natomic_connect(&sv->nc, urls, NULL);
    if (st != NATOMIC_OK) {
        fail_msg("cannot connect to %s: %s", urls, natomic_strerror(st));
        stop_nats(sv, false);
        memset(sv, 0, sizeof *sv);
        return -1;
    }
    return start_common(sv);
}

/* What every start ends with, once the supervisor's client is connected. */
static int start_common(supervisor_t *sv)
{
    pthread_mutex_init(&sv->mu, NULL);
    sv->mu_ready = true;
    atomic_init(&sv->watch_stop, false);
    return 0;
}

supervised_service_t *supervisor_find(supervisor_t *sv, const char *name, int *n)
{
    for (int i = 0; i < sv->n_svc; i++) {
        if (strcmp(sv->svc[i].name, name) != 0)
            continue;
        int k = i;
        while (k < sv->n_svc && strcmp(sv->svc[k].name, name) == 0)
            k++;
        if (n != NULL)
            *n = k - i;
        return &sv->svc[i];
    }
    if (n != NULL)
        *n = 0;
    return NULL;
}

/* The instances of `name`, or NULL after a message. */
static supervised_service_t *find_or_complain(supervisor_t *sv, const char *name, int *n)
{
    supervised_service_t *s = supervisor_find(sv, name, n);
    if (s == NULL)
        fail_msg("no service named '%s' was added", name);
    return s;
}

static void stop_proxies(supervised_service_t *x)
{
    for (int k = 0; k < NATS_CLUSTER_MAX; k++) {
        fault_proxy_stop(x->proxy[k]);
        x->proxy[k] = NULL;
    }
    x->n_proxy = 0;
}

/* An instance's fault proxies: to the server, or one to each node of a cluster. 0, or -1. */
static int start_proxies(supervisor_t *sv, supervised_service_t *x)
{
    bool many = sv->nodes > 1 || sv->external; /* the nodes are in sv->cluster */
    int n = many ? sv->cluster.n : 1;
    for (x->n_proxy = 0; x->n_proxy < n; x->n_proxy++) {
        int port = many ? sv->cluster.node[x->n_proxy].port : sv->nats.port;
        if (fault_proxy_start_to(&x->proxy[x->n_proxy], many ? sv->cluster.host[x->n_proxy] : "127.0.0.1", port) !=
            0) {
            stop_proxies(x);
            return -1;
        }
        /* A node cut off now is cut off from the newcomer too. */
        if (sv->nodes > 1 && sv->cluster.isolated[x->n_proxy])
            fault_proxy_set(x->proxy[x->n_proxy], FAULT_PROXY_CUT, 0);
    }
    return 0;
}

int supervisor_add_service(supervisor_t *sv, const char *name, int instances, const char *faults)
{
    return supervisor_add_service_for(sv, name, instances, faults, -1);
}

int supervisor_add_service_for(supervisor_t *sv, const char *name, int instances, const char *faults, int instance)
{
    if (sv->nc == NULL) {
        fail_msg("%s: the supervisor is not started", name);
        return -1;
    }
    if (name == NULL || *name == '\0' || strlen(name) >= sizeof sv->svc[0].name || strchr(name, '/') != NULL) {
        fail_msg("'%s' is not a service name", name != NULL ? name : "(null)");
        return -1;
    }
    if (supervisor_find(sv, name, NULL) != NULL) {
        fail_msg("%s was already added", name);
        return -1;
    }
    if (instances < 1 || instances > SUPERVISOR_MAX_SERVICES - sv->n_svc) {
        fail_msg("%s: %d instances do not fit (at most %d processes, %d in use)", name, instances,
                 SUPERVISOR_MAX_SERVICES, sv->n_svc);
        return -1;
    }
    if (faults != NULL && strlen(faults) >= sizeof sv->svc[0].faults) {
        fail_msg("%s: fault list too long", name);
        return -1;
    }
    if (instance < -1 || instance >= instances) {
        fail_msg("%s: no instance %d for its faults (it has %d: 0 to %d)", name, instance, instances,
                 instances - 1);
        return -1;
    }
    supervised_service_t *s = &sv->svc[sv->n_svc];
    int started = 0;
    for (; started < instances; started++) {
        supervised_service_t *x = &s[started];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", name);
        x->instance = started;
        snprintf(x->db_path, sizeof x->db_path, "%s/%s.db", sv->dir, name);
        if (started == 0)
            snprintf(x->log_path, sizeof x->log_path, "%s/%s.log", sv->dir, name);
        else
            snprintf(x->log_path, sizeof x->log_path, "%s/%s-%d.log", sv->dir, name, started);
        snprintf(x->faults, sizeof x->faults, "%s", faults != NULL && (instance < 0 || instance == started) ? faults : "");
        if (!sv->direct && start_proxies(sv, x) != 0)
            break;
        if (spawn_instance(sv, x, true) != 0) {
            stop_proxies(x);
            break;
        }
        /* The first one creates the database alone: SQLite refuses two processes switching a new
         * file to WAL at once ("database is locked"), and the instances share one file. */
        if (started == 0 && instances > 1 && wait_ready(sv, s, 1) != 0) {
            started = 1;
            break;
        }
    }
    if (started == instances && wait_ready(sv, s, instances) == 0) {
        sv->n_svc += instances;
        return 0;
    }
    /* Leave nothing behind; the logs stay for whoever reads the message. */
    for (int i = 0; i < started; i++) {
        kill_instance(&s[i]);
        stop_proxies(&s[i]);
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* Process faults                                                      */
/* ------------------------------------------------------------------ */

/*
 * The instances a process fault acts on: every instance of `name` when
 * `instance` < 0, else that one. *all and *n_all are the whole service
 * (a restart waits for all of it), *first and *n the chosen ones.
 * 0, or -1 after a message (unknown service, no such instance).
 */
static int select_instances(supervisor_t *sv, const char *name, int instance, supervised_service_t **all,
                            int *n_all, supervised_service_t **first, int *n)
{
    *all = find_or_complain(sv, name, n_all);
    if (*all == NULL)
        return -1;
    if (instance >= *n_all) {
        fail_msg("%s has no instance %d (it has %d: 0 to %d)", name, instance, *n_all, *n_all - 1);
        return -1;
    }
    *first = instance < 0 ? *all : &(*all)[instance];
    *n = instance < 0 ? *n_all : 1;
    return 0;
}

/* The public one-instance calls take a number, never "all" (-1). */
static int one_instance(const char *name, int instance)
{
    if (instance >= 0)
        return 0;
    fail_msg("%s: instance %d: instances are numbered from 0", name != NULL ? name : "(null)", instance);
    return -1;
}

static void lock(supervisor_t *sv)
{
    if (sv->mu_ready)
        pthread_mutex_lock(&sv->mu);
}

static void unlock(supervisor_t *sv)
{
    if (sv->mu_ready)
        pthread_mutex_unlock(&sv->mu);
}

static int kill_some(supervisor_t *sv, const char *name, int instance)
{
    supervised_service_t *all, *s;
    int n_all, n;
    if (select_instances(sv, name, instance, &all, &n_all, &s, &n) != 0)
        return -1;
    lock(sv);
    for (int i = 0; i < n; i++)
        kill_instance(&s[i]);
    unlock(sv);
    return 0;
}

int supervisor_kill(supervisor_t *sv, const char *name)
{
    return kill_some(sv, name, -1);
}

int supervisor_kill_instance(supervisor_t *sv, const char *name, int instance)
{
    return one_instance(name, instance) == 0 ? kill_some(sv, name, instance) : -1;
}

static int restart_some(supervisor_t *sv, const char *name, int instance)
{
    supervised_service_t *all, *s;
    int n_all, n;
    if (select_instances(sv, name, instance, &all, &n_all, &s, &n) != 0)
        return -1;
    lock(sv);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        kill_instance(&s[i]);
        log_marker(&s[i], "restart of"); /* no pid: the old process is gone, the new one not born */
        rc = spawn_instance(sv, &s[i], false);
    }
    /* Every live instance must answer the ping, not just any one: the others answer at once. */
    if (rc == 0)
        rc = wait_ready(sv, all, n_all);
    unlock(sv);
    return rc;
}

int supervisor_restart(supervisor_t *sv, const char *name)
{
    return restart_some(sv, name, -1);
}

int supervisor_restart_instance(supervisor_t *sv, const char *name, int instance)
{
    return one_instance(name, instance) == 0 ? restart_some(sv, name, instance) : -1;
}

static int pause_some(supervisor_t *sv, const char *name, int instance)
{
    supervised_service_t *all, *s;
    int n_all, n;
    if (select_instances(sv, name, instance, &all, &n_all, &s, &n) != 0)
        return -1;
    int rc = 0;
    lock(sv);
    for (int i = 0; i < n; i++) {
        if (!alive(&s[i]) || s[i].paused)
            continue;
        log_marker(&s[i], "SIGSTOP to");
        lab_process_signal(&s[i].proc, SIGSTOP);
        /* Return only once it is stopped, so the caller's next request cannot be served. */
        int64_t end = lab_monotonic_ms() + PAUSE_WAIT_MS;
        for (;;) {
            int status = 0;
            pid_t r = waitpid(s[i].proc.pid, &status, WNOHANG | WUNTRACED);
            if (r == s[i].proc.pid && WIFSTOPPED(status)) {
                s[i].paused = true;
                break;
            }
            if (r == s[i].proc.pid || (r < 0 && errno != EINTR)) {
                forget_child(&s[i]); /* it ended meanwhile, on its own */
                s[i].died = true;
                s[i].died_ms = lab_monotonic_ms();
                break;
            }
            if (lab_monotonic_ms() >= end) {
                fail_msg("%s (instance %d) did not stop within %d ms", name, s[i].instance, PAUSE_WAIT_MS);
                s[i].paused = true; /* SIGSTOP is pending: count it as paused so resume sends SIGCONT */
                rc = -1;
                break;
            }
            sleep_ms(1);
        }
    }
    unlock(sv);
    return rc;
}

int supervisor_pause(supervisor_t *sv, const char *name)
{
    return pause_some(sv, name, -1);
}

int supervisor_pause_instance(supervisor_t *sv, const char *name, int instance)
{
    return one_instance(name, instance) == 0 ? pause_some(sv, name, instance) : -1;
}

static int resume_some(supervisor_t *sv, const char *name, int instance)
{
    supervised_service_t *all, *s;
    int n_all, n;
    if (select_instances(sv, name, instance, &all, &n_all, &s, &n) != 0)
        return -1;
    lock(sv);
    for (int i = 0; i < n; i++) {
        if (!alive(&s[i]) || !s[i].paused)
            continue;
        log_marker(&s[i], "SIGCONT to");
        lab_process_signal(&s[i].proc, SIGCONT);
        s[i].paused = false;
    }
    unlock(sv);
    return 0;
}

int supervisor_resume(supervisor_t *sv, const char *name)
{
    return resume_some(sv, name, -1);
}

int supervisor_resume_instance(supervisor_t *sv, const char *name, int instance)
{
    return one_instance(name, instance) == 0 ? resume_some(sv, name, instance) : -1;
}

/* ------------------------------------------------------------------ */
/* Connection and NATS faults                                          */
/* ------------------------------------------------------------------ */

int supervisor_link(supervisor_t *sv, const char *name, fault_proxy_mode_t mode, int delay_ms)
{
    int n;
    supervised_service_t *s = find_or_complain(sv, name, &n);
    if (s == NULL)
        return -1;
    if (mode < FAULT_PROXY_PASS || mode > FAULT_PROXY_DELAY || (mode == FAULT_PROXY_DELAY && delay_ms < 0)) {
        fail_msg("%s: bad link mode %d (delay %d ms)", name, (int)mode, delay_ms);
        return -1;
    }
    if (sv->direct) {
        fail_msg("%s: no fault proxy to set: the services connect straight to NATS (supervisor_t.direct)", name);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        s[i].link_mode = mode;
        s[i].link_delay_ms = delay_ms;
        for (int k = 0; k < s[i].n_proxy; k++)
            /* a node cut off stays cut off for everybody until it is healed */
            if (!(sv->nodes > 1 && sv->cluster.isolated[k]))
                fault_proxy_set(s[i].proxy[k], mode, delay_ms);
    }
    return 0;
}

static uint64_t reconnect_count(natsConnection *nc)
{
    natsStatistics *stats = NULL;
    uint64_t in_msgs = 0, in_bytes = 0, out_msgs = 0, out_bytes = 0, reconnects = 0;
    if (natsStatistics_Create(&stats) == NATS_OK && natsConnection_GetStats(nc, stats) == NATS_OK)
        natsStatistics_GetCounts(stats, &in_msgs, &in_bytes, &out_msgs, &out_bytes, &reconnects);
    natsStatistics_Destroy(stats);
    return reconnects;
}

int supervisor_restart_nats(supervisor_t *sv)
{
    if (sv->nc == NULL) {
        fail_msg("restart_nats: the supervisor is not started");
        return -1;
    }
    if (sv->nodes > 1 || sv->external) {
        fail_msg("restart_nats: %s", sv->external ? "NATS is outside the lab (--server): say kill_node and restart_node"
                                                  : "NATS is a cluster here: stop and start one node at a time");
        return -1;
    }
    uint64_t before = reconnect_count(sv->nc);
    pid_t old = sv->nats.pid;
    int rc = embedded_nats_restart(&sv->nats);
    emergency_unregister(old);
    if (rc != 0) {
        fail_msg("nats-server did not come back on port %d; see %s/nats-server.log", sv->nats.port, sv->dir);
        return -1;
    }
    emergency_register(sv->nats.pid);
    /* The services reconnect through their proxies on their own; the supervisor's client must be
     * back before the scenario goes on. Counting reconnects avoids trusting a status the client
     * set before it noticed the old server was gone. */
    int64_t end = lab_monotonic_ms() + NATS_RECONNECT_MS;
    while (lab_monotonic_ms() < end) {
        if (reconnect_count(sv->nc) > before && natsConnection_Status(sv->nc) == NATS_CONN_STATUS_CONNECTED &&
            natsConnection_FlushTimeout(sv->nc, 500) == NATS_OK)
            return 0;
        sleep_ms(20);
    }
    fail_msg("the supervisor's NATS client did not reconnect to %s within %d ms", sv->nats.url, NATS_RECONNECT_MS);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Cluster nodes                                                       */
/* ------------------------------------------------------------------ */

/* One try at what a node target names now: its index, or -1 (with `why` when it will not change). */
static int node_now(supervisor_t *sv, const char *target, char *why, size_t cap)
{
    int named = nats_cluster_node_index(&sv->cluster, target);
    if (named >= 0)
        return named;
    if (strcmp(target, "meta-leader") == 0)
        return nats_cluster_meta_leader(&sv->cluster);
    if (strncmp(target, "leader-of:", 10) == 0) {
        char subject[200];
        natsMsg *reply = NULL;
        snprintf(subject, sizeof subject, "$JS.API.STREAM.INFO.%s", target + 10);
        int node = -1;
        if (natsConnection_RequestString(&reply, sv->nc, subject, "", 1000) == NATS_OK) {
            const char *body = natsMsg_GetData(reply);
            if (body != NULL && strstr(body, "\"error\"") != NULL && strstr(body, "not found") != NULL)
                snprintf(why, cap, "there is no stream %s", target + 10);
            node = nats_cluster_leader_in(&sv->cluster, body);
            natsMsg_Destroy(reply);
        }
        return node;
    }
    if (strncmp(target, "connected-to:", 13) == 0) {
        int n;
        supervised_service_t *s = supervisor_find(sv, target + 13, &n);
        if (s == NULL || s->n_proxy < sv->cluster.n) {
            snprintf(why, cap, "%s", s == NULL ? "no such service in the story" : "its instances connect straight to NATS");
            return -1;
        }
        for (int k = 0; k < s->n_proxy; k++)
            if (fault_proxy_connections(s->proxy[k]) > 0)
                return k;
        return -1;
    }
    snprintf(why, cap, "not a node: say n1..n%d, meta-leader, leader-of:<stream> or connected-to:<service>",
             sv->cluster.n);
    return -1;
}

int supervisor_node_find(supervisor_t *sv, const char *target, int *node)
{
    if (sv->nodes <= 1) {
        fail_msg("%s: NATS is one server here, not a cluster", target);
        return -1;
    }
    char why[160] = "";
    int64_t end = lab_monotonic_ms() + 5000;
    for (;;) {
        int k = node_now(sv, target, why, sizeof why);
        if (k >= 0) {
            *node = k;
            return 0;
        }
        if (why[0] != '\0' || lab_monotonic_ms() >= end) {
            fail_msg("node %s: %s", target, why[0] != '\0' ? why : "no answer within 5 s (an election? a reconnect?)");
            return -1;
        }
        sleep_ms(50);
    }
}

/* Sets instance proxies to node k: cut, or back to what the story set for the service. */
static void node_links(supervisor_t *sv, int k, bool cut)
{
    for (int i = 0; i < sv->n_svc; i++) {
        supervised_service_t *s = &sv->svc[i];
        if (k < s->n_proxy)
            fault_proxy_set(s->proxy[k], cut ? FAULT_PROXY_CUT : s->link_mode, s->link_delay_ms);
    }
    fault_proxy_set(sv->lab_proxy[k], cut ? FAULT_PROXY_CUT : FAULT_PROXY_PASS, 0);
}

/* An outside node: `<node_control> <verb> <name> <host>`, waited for (60 s). 0, or -1 with a message. */
static int node_command(supervisor_t *sv, int node, const char *verb)
{
    if (sv->node_control[0] == '\0') {
        fail_msg("node n%d is outside the lab: give natomic-lab run --node-control PROGRAM to %s it", node + 1, verb);
        return -1;
    }
    char name[16], log[600];
    nats_cluster_node_name(node, name, sizeof name);
    snprintf(log, sizeof log, "%s/node-control.log", sv->dir);
    char *argv[] = {sv->node_control, (char *)verb, name, sv->cluster.host[node], NULL};
    lab_process_t p;
    if (lab_process_start(&p, argv, log, NULL) != 0) {
        fail_msg("cannot run %s", sv->node_control);
        return -1;
    }
    int status = lab_process_stop(&p, 0, 60000);
    if (status != 0) {
        fail_msg("%s %s %s %s failed (status %d); see %s", sv->node_control, verb, name, sv->cluster.host[node], status,
                 log);
        return -1;
    }
    return 0;
}

/* `op` on one node, the lock held; no wait. 0, or -1 with a message. */
static int node_op(supervisor_t *sv, int node, supervisor_node_op_t op)
{
    embedded_nats_t *ns = &sv->cluster.node[node];
    int rc = 0;
    if (sv->external) {
        static const char *const verbs[] = {"stop", "start", "cut", "heal"};
        if ((op == SUPERVISOR_NODE_RESTART && !sv->cluster.down[node]) ||
            (op == SUPERVISOR_NODE_HEAL && !sv->cluster.isolated[node]))
            return 0; /* nothing to undo */
        rc = node_command(sv, node, verbs[op]);
        if (rc == 0 && (op == SUPERVISOR_NODE_KILL || op == SUPERVISOR_NODE_RESTART))
            sv->cluster.down[node] = op == SUPERVISOR_NODE_KILL;
        if (rc == 0 && (op == SUPERVISOR_NODE_CUT || op == SUPERVISOR_NODE_HEAL)) {
            node_links(sv, node, op == SUPERVISOR_NODE_CUT);
            sv->cluster.isolated[node] = op == SUPERVISOR_NODE_CUT;
        }
        return rc;
    }
    switch (op) {
    case SUPERVISOR_NODE_KILL:
        emergency_unregister(ns->pid);
        nats_cluster_kill_node(&sv->cluster, node);
        break;
    case SUPERVISOR_NODE_RESTART:
        if (ns->pid > 0)
            break; /* running */
        rc = nats_cluster_restart_node(&sv->cluster, node);
        if (rc == 0)
            emergency_register(ns->pid);
        else
            fail_msg("node n%d did not come back on port %d; see %s/nats-server.log", node + 1, ns->port, ns->dir);
        break;
    case SUPERVISOR_NODE_CUT:
        nats_cluster_isolate(&sv->cluster, node, true);
        node_links(sv, node, true);
        break;
    case SUPERVISOR_NODE_HEAL:
        node_links(sv, node, false);
        nats_cluster_isolate(&sv->cluster, node, false);
        break;
    }
    return rc;
}

int supervisor_node(supervisor_t *sv, int node, supervisor_node_op_t op)
{
    return supervisor_nodes(sv, &node, 1, op);
}

int supervisor_nodes(supervisor_t *sv, const int *nodes, int n, supervisor_node_op_t op)
{
    for (int i = 0; i < n; i++)
        if (sv->nodes <= 1 || nodes[i] < 0 || nodes[i] >= sv->cluster.n) {
            fail_msg("node %d: %s", nodes[i] + 1, sv->nodes <= 1 ? "NATS is one server here" : "no such node");
            return -1;
        }
    int rc = 0;
    lock(sv);
    for (int i = 0; i < n; i++)
        rc = node_op(sv, nodes[i], op) != 0 ? -1 : rc;
    unlock(sv);
    /* Back in the cluster: ready when every node's JetStream is healthy again -- a meta leader,
     * and each stream and consumer caught up with a leader (the story's next saga needs its
     * log), as an operator waits for /healthz before calling a restart done. All of them first,
     * then one wait: a stream may need two of them back to be current. */
    if (rc == 0 && n > 0 && (op == SUPERVISOR_NODE_RESTART || op == SUPERVISOR_NODE_HEAL) &&
        nats_cluster_wait_healthy(&sv->cluster, NODE_HEALTHY_MS) != 0) {
        fail_msg("the cluster's JetStream is not healthy %d ms after node n%d came back (/healthz)", NODE_HEALTHY_MS,
                 nodes[n - 1] + 1);
        rc = -1;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Fault points through libfiu's remote control                        */
/* ------------------------------------------------------------------ */

/*
 * libfiu's control thread in the service opens <base>.in for reading
 * (blocking until a writer comes), then <base>.out for writing (blocking
 * until a reader comes), and answers each command line with one line:
 * "0" or "-1". So: open .out first (no wait for a reader), drop any stale
 * reply, open .in without blocking (ENXIO until the thread waits on it),
 * write the line, and read one line back -- all within FIU_WAIT_MS.
 */

/* Writes `line` to a FIFO without ever raising SIGPIPE in this process. True when all went. */
static bool fifo_write(int fd, const char *line, size_t len)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t w = write(fd, line, len);
    if (w < 0 && errno == EPIPE) {
        /* The reader closed between our open and the write: consume our SIGPIPE. */
        struct timespec zero = {0, 0};
        int was_pending = sigismember(&old, SIGPIPE);
        if (!was_pending)
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
            }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return w == (ssize_t)len;
}

/* Sends one command to the instance's control FIFO; its reply number in *reply. 0, or -1 after a message. */
static int fiu_command(const supervisor_t *sv, const supervised_service_t *s, const char *cmd, int *reply)
{
    char in_path[400], out_path[400], who[48];
    snprintf(in_path, sizeof in_path, "%s/fiu-ctrl-%ld.in", sv->dir, (long)s->proc.pid);
    snprintf(out_path, sizeof out_path, "%s/fiu-ctrl-%ld.out", sv->dir, (long)s->proc.pid);
    display_name(who, sizeof who, s);
    int64_t end = lab_monotonic_ms() + FIU_WAIT_MS;
    int out = -1, in = -1;
    const char *why = "no control FIFO";
    for (;;) {
        if (out < 0)
            out = open(out_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (out >= 0) {
            char stale[256];
            while (read(out, stale, sizeof stale) > 0) {
            }
            in = open(in_path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
            if (in >= 0) {
                size_t len = strlen(cmd);
                char line[600];
                snprintf(line, sizeof line, "%s\n", cmd);
                if (fifo_write(in, line, len + 1))
                    break;
                close(in);
                in = -1;
                why = "the control FIFO closed while writing";
            } else {
                why = errno == ENXIO ? "nobody reads the control FIFO" : "cannot open the control FIFO";
            }
        }
        if (lab_monotonic_ms() >= end) {
            if (out >= 0)
                close(out);
            fail_msg("%s did not answer '%s' within %d ms: %s (%s)", who, cmd, FIU_WAIT_MS, why, in_path);
            return -1;
        }
        sleep_ms(5);
    }

    char buf[64];
    size_t got = 0;
    bool done = false;
    while (!done) {
        int64_t left = end - lab_monotonic_ms();
        struct pollfd pfd = {.fd = out, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) == 0)
            break;
        ssize_t r = read(out, buf + got, sizeof buf - 1 - got);
        if (r > 0) {
            got += (size_t)r;
            done = memchr(buf, '\n', got) != NULL || got == sizeof buf - 1;
        } else if (r == 0) {
            /* No writer (yet, or the previous reply's writer closed: libfiu opens
               .out per reply). A busy service answers later: wait, do not give up. */
            sleep_ms(2);
        } else if (errno != EAGAIN && errno != EINTR) {
            break;
        }
    }
    close(in);
    close(out);
    buf[got] = '\0';
    if (!done) {
        fail_msg("%s did not answer '%s' within %d ms (got '%s'); is it stopped or stuck? (%s)", who, cmd,
                 FIU_WAIT_MS, buf, out_path);
        return -1;
    }
    *reply = atoi(buf);
    return 0;
}

/* A point name goes into a "name=...," parameter list: no separators in it. */
static bool good_point(const char *point)
{
    return point != NULL && *point != '\0' && strlen(point) < 256 && strpbrk(point, ", \t\r\n=") == NULL;
}

/* Sends `cmd` to every live instance. A "-1" answer fails unless `minus_one_ok`. */
static int fiu_all(supervisor_t *sv, const char *name, const char *cmd, bool minus_one_ok)
{
    int n;
    supervised_service_t *s = find_or_complain(sv, name, &n);
    if (s == NULL)
        return -1;
    int live = 0, rc = 0;
    lock(sv);
    for (int i = 0; i < n && rc == 0; i++) {
        if (!alive(&s[i]))
            continue;
        if (s[i].paused) {
            /* A stopped process cannot answer; its reply would later pair with another command. */
            fail_msg("%s (instance %d) is paused: resume it before '%s'", name, s[i].instance, cmd);
            rc = -1;
            break;
        }
        int reply = 0;
        if (fiu_command(sv, &s[i], cmd, &reply) != 0) {
            rc = -1;
            break;
        }
        if (reply != 0 && !minus_one_ok) {
            fail_msg("%s (instance %d) refused '%s' (libfiu answered %d)", name, s[i].instance, cmd, reply);
            rc = -1;
            break;
        }
        live++;
    }
    unlock(sv);
    if (rc == 0 && live == 0) {
        fail_msg("no live instance of %s for '%s'", name, cmd);
        return -1;
    }
    return rc;
}

int supervisor_fault_enable(supervisor_t *sv, const char *name, const char *point, int failnum,
                            double probability)
{
    if (!good_point(point) || failnum < 1 || !(probability > 0.0)) {
        fail_msg("%s: bad fault point '%s' (failnum %d, probability %g)", name, point != NULL ? point : "(null)",
                 failnum, probability);
        return -1;
    }
    char cmd[400];
    if (probability < 1.0)
        snprintf(cmd, sizeof cmd, "enable_random name=%s,failnum=%d,probability=%.6f", point, failnum,
                 probability);
    else
        snprintf(cmd, sizeof cmd, "enable name=%s,failnum=%d", point, failnum);
    return fiu_all(sv, name, cmd, false);
}

int supervisor_fault_disable(supervisor_t *sv, const char *name, const char *point)
{
    if (!good_point(point)) {
        fail_msg("%s: bad fault point '%s'", name, point != NULL ? point : "(null)");
        return -1;
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "disable name=%s", point);
    /* libfiu answers -1 for a point that is not enabled (never was, or its count ran out, or the
     * instance restarted since): what was asked for holds, so that is no failure. */
    return fiu_all(sv, name, cmd, true);
}

/* ------------------------------------------------------------------ */
/* The watcher: restart what ended on its own                          */
/* ------------------------------------------------------------------ */

#define WATCH_POLL_MS 20
#define WATCH_MAX_RESTARTS 8

/* What the watcher will tell, gathered under the lock and told after it. */
typedef struct watch_news {
    char service[32];
    int instance;
    bool restarted;
    char what[96];
} watch_news_t;

/* One look at every instance, under sv->mu: reaps what ended, restarts what has been quiet long enough. */
static size_t watch_round(supervisor_t *sv, watch_news_t *news, size_t cap)
{
    size_t n = 0;
    lock(sv);
    for (int i = 0; i < sv->n_svc; i++) {
        supervised_service_t *s = &sv->svc[i];
        if (s->proc.pid > 0 && !s->paused)
            alive(s); /* reaps it when it ended, and marks it `died` */
        if (s->died && !s->death_told && n < cap) {
            s->death_told = true;
            watch_news_t *w = &news[n++];
            snprintf(w->service, sizeof w->service, "%s", s->name);
            w->instance = s->instance;
            w->restarted = false;
            if (s->died_signal > 0)
                snprintf(w->what, sizeof w->what, "killed by signal %d", s->died_signal);
            else
                snprintf(w->what, sizeof w->what, "exited with status %d", s->died_status);
        }
        if (s->proc.pid > 0 || !s->died || lab_monotonic_ms() - s->died_ms < sv->watch_quiet_ms ||
            s->watch_restarts >= WATCH_MAX_RESTARTS || n >= cap)
            continue;
        char marker[96];
        snprintf(marker, sizeof marker, "restart (by the watcher, %d ms after it ended) of", sv->watch_quiet_ms);
        log_marker(s, marker);
        s->watch_restarts++;
        watch_news_t *w = &news[n++];
        snprintf(w->service, sizeof w->service, "%s", s->name);
        w->instance = s->instance;
        w->restarted = true;
        w->what[0] = '\0';
        if (spawn_instance(sv, s, false) != 0) {
            snprintf(w->what, sizeof w->what, "the restart failed (see %s)", s->log_path);
            s->died_ms = lab_monotonic_ms(); /* try again after another quiet period */
        }
    }
    unlock(sv);
    return n;
}

static void *watch_main(void *arg)
{
    supervisor_t *sv = arg;
    watch_news_t news[2 * SUPERVISOR_MAX_SERVICES];
    while (!atomic_load(&sv->watch_stop)) {
        size_t n = watch_round(sv, news, sizeof news / sizeof news[0]);
        for (size_t i = 0; i < n && sv->watch_fn != NULL; i++)
            sv->watch_fn(sv->watch_user, news[i].service, news[i].instance, news[i].restarted, news[i].what);
        sleep_ms(WATCH_POLL_MS);
    }
    return NULL;
}

int supervisor_watch(supervisor_t *sv, int quiet_ms, supervisor_watch_fn fn, void *user)
{
    if (sv->nc == NULL || !sv->mu_ready || sv->watching || quiet_ms < 0) {
        fail_msg("watch: the supervisor is not started, is watched already, or the quiet period %d ms is < 0",
                 quiet_ms);
        return -1;
    }
    sv->watch_quiet_ms = quiet_ms;
    sv->watch_fn = fn;
    sv->watch_user = user;
    atomic_store(&sv->watch_stop, false);
    if (pthread_create(&sv->watcher, NULL, watch_main, sv) != 0) {
        fail_msg("watch: cannot start its thread");
        return -1;
    }
    sv->watching = true;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Logs                                                                */
/* ------------------------------------------------------------------ */

typedef struct text {
    char *p;
    size_t len, cap;
} text_t;

static bool text_add(text_t *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap != 0 ? t->cap : 1024;
        while (t->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (p == NULL)
            return false;
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
    return true;
}

/* Appends the last `lines` lines of `path`, each as "<who>| line\n". */
static bool tail_file(text_t *t, const char *path, const char *who, int lines)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true; /* never started, or nothing written yet */
    struct stat st;
    char *buf = NULL;
    ssize_t got = 0;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        off_t from = st.st_size > LOG_TAIL_BYTES ? st.st_size - LOG_TAIL_BYTES : 0;
        size_t want = (size_t)(st.st_size - from);
        buf = malloc(want);
        if (buf != NULL)
            got = pread(fd, buf, want, from);
    }
    close(fd);
    if (buf == NULL || got <= 0) {
        free(buf);
        return true;
    }
    size_t end = (size_t)got;
    if (buf[end - 1] == '\n')
        end--;
    size_t start = end;
    for (int seen = 0; start > 0; start--)
        if (buf[start - 1] == '\n' && ++seen == lines)
            break;
    bool ok = true;
    for (size_t i = start; ok && i <= end;) {
        const char *nl = memchr(buf + i, '\n', end - i);
        size_t len = nl != NULL ? (size_t)(nl - (buf + i)) : end - i;
        ok = text_add(t, who, strlen(who)) && text_add(t, "| ", 2) && text_add(t, buf + i, len) &&
             text_add(t, "\n", 1);
        i += len + 1;
    }
    free(buf);
    return ok;
}

char *supervisor_log_tail(supervisor_t *sv, const char *name, int lines)
{
    int n;
    supervised_service_t *s = supervisor_find(sv, name, &n);
    if (s == NULL || lines <= 0)
        return NULL;
    text_t t = {0};
    for (int i = 0; i < n; i++) {
        char who[48];
        display_name(who, sizeof who, &s[i]);
        if (!tail_file(&t, s[i].log_path, who, lines)) {
            free(t.p);
            return NULL;
        }
    }
    return t.p; /* NULL when no log had a line */
}

/* ------------------------------------------------------------------ */
/* Stop                                                                */
/* ------------------------------------------------------------------ */

void supervisor_stop(supervisor_t *sv, bool keep)
{
    if (sv->watching) {
        atomic_store(&sv->watch_stop, true);
        pthread_join(sv->watcher, NULL);
        sv->watching = false;
    }
    /* A stopped process does not act on SIGTERM: continue the paused ones first. And heal every
     * link, so that a graceful drain is not held up by a cut the scenario left in place. */
    for (int i = 0; i < sv->n_svc; i++) {
        supervised_service_t *s = &sv->svc[i];
        for (int k = 0; k < s->n_proxy; k++)
            fault_proxy_set(s->proxy[k], FAULT_PROXY_PASS, 0);
        if (!alive(s))
            continue;
        if (s->paused) {
            lab_process_signal(&s->proc, SIGCONT);
            s->paused = false;
        }
        lab_process_signal(&s->proc, SIGTERM);
    }
    /* Let them drain through their proxies. */
    int64_t end = lab_monotonic_ms() + STOP_WAIT_MS;
    for (;;) {
        int running = 0;
        for (int i = 0; i < sv->n_svc; i++)
            running += alive(&sv->svc[i]) ? 1 : 0;
        if (running == 0 || lab_monotonic_ms() >= end)
            break;
        sleep_ms(10);
    }
    for (int i = 0; i < sv->n_svc; i++) {
        kill_instance(&sv->svc[i]);
        stop_proxies(&sv->svc[i]);
    }
    if (sv->nc != NULL) {
        natsConnection_Destroy(sv->nc);
        sv->nc = NULL;
    }
    stop_nats(sv, keep);
    if (sv->secure && !keep)
        remove_run_dir(sv->tls_dir); /* the certificates and the run's config (with keep: left to read) */
    if (sv->mu_ready) {
        pthread_mutex_destroy(&sv->mu);
        sv->mu_ready = false;
    }
}
