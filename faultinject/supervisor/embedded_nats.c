/*
 * embedded_nats.c -- start and stop a real nats-server for the lab.
 *
 * The port is one below the kernel's ephemeral range that this process
 * holds for no other server (see hold_port: stories may run at once);
 * another process could still take it before the server binds, so a start
 * that fails to come up is retried on a fresh port (three times). The
 * server listens on loopback
 * only. Its JetStream store and log live in a mkdtemp() folder that
 * embedded_nats_stop() removes. The child asks the kernel for SIGKILL when
 * its parent dies, so a crashed test leaves no server behind.
 */
#include "embedded_nats.h"
#include "process.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * The port of a new server. Stories run at once in one lab (natomic-lab run
 * --jobs) must never meet on a port: a port asked of the kernel (bind to 0)
 * is free only until it is closed again, and in that window another
 * story's fault proxy, bound to port 0 too, could be given it -- then this
 * server fails to start while the proxy answers on its port. So servers
 * take ports below the kernel's ephemeral range, which bind-to-0 and
 * outgoing connections never hand out, and this process keeps the list of
 * the ports its servers hold until they stop for good.
 */
#define MAX_SERVERS 64
static pthread_mutex_t ports_mu = PTHREAD_MUTEX_INITIALIZER;
static int ports_held[MAX_SERVERS];

/* The lowest port of the kernel's ephemeral range (32768 when it cannot be read). */
static int ephemeral_low(void)
{
    int low = 32768, high = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        if (fscanf(f, "%d %d", &low, &high) != 2)
            low = 32768;
        fclose(f);
    }
    return low;
}

static bool port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* as nats-server binds */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* A port for a server, held in ports_held until release_port(); -1 when none. */
static int hold_port(void)
{
    int low = ephemeral_low(), span = 12000;
    if (low - span < 1024)
        return embedded_nats_free_port(); /* an odd range: ask the kernel */
    static unsigned seq;
    pthread_mutex_lock(&ports_mu);
    unsigned start = (unsigned)getpid() * 2654435761u + (unsigned)time(NULL) + seq++ * 7919u;
    int port = -1;
    for (int k = 0; k < span && port < 0; k++) {
        int candidate = low - span + (int)((start + (unsigned)k) % (unsigned)span);
        bool held = false;
        for (int i = 0; i < MAX_SERVERS; i++)
            held = held || ports_held[i] == candidate;
        if (held || !port_bindable(candidate))
            continue;
        for (int i = 0; i < MAX_SERVERS && port < 0; i++)
            if (ports_held[i] == 0) {
                ports_held[i] = candidate;
                port = candidate;
            }
        if (port < 0)
            break; /* every slot taken */
    }
    pthread_mutex_unlock(&ports_mu);
    return port;
}

static void release_port(int port)
{
    pthread_mutex_lock(&ports_mu);
    for (int i = 0; i < MAX_SERVERS; i++)
        if (ports_held[i] == port && port > 0) {
            ports_held[i] = 0;
            break;
        }
    pthread_mutex_unlock(&ports_mu);
}

int embedded_nats_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Forks and execs the server; 0 once it accepts connections, else -1 (child reaped). */
static int spawn(embedded_nats_t *ns)
{
    const char *bin = getenv("NATOMIC_NATS_SERVER");
    if (bin == NULL || *bin == '\0')
        bin = "nats-server";
    char port[16], log[300], store[300];
    snprintf(port, sizeof port, "%d", ns->port);
    snprintf(log, sizeof log, "%s/nats-server.log", ns->dir);
    snprintf(store, sizeof store, "%s/jetstream", ns->dir);
    /* Built before the fork: the child of a threaded parent must not allocate. */
    char *env[EMBEDDED_NATS_MAX_ENV + 1];
    for (int i = 0; i < ns->n_env; i++)
        env[i] = ns->env[i];
    env[ns->n_env] = NULL;
    char **envp = lab_process_environment(env);
    if (envp == NULL)
        return -1;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "embedded_nats: fork: %s\n", strerror(errno));
        free(envp);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        /* With a configuration file (-c first among the extra arguments) JetStream is the file's
         * to set: nats-server refuses a store folder given twice. */
        bool file = ns->n_extra > 0 && strcmp(ns->extra[0], "-c") == 0;
        const char *argv[16 + EMBEDDED_NATS_MAX_EXTRA] = {bin, "-a", "127.0.0.1", "-p", port, "-l", log,
                                                           "--http_port", "0", "-js", "-sd", store};
        int argc = file ? 9 : 12;
        for (int i = 0; i < ns->n_extra; i++)
            argv[argc++] = ns->extra[i];
        argv[argc] = NULL;
        execvpe(bin, (char *const *)argv, envp);
        _exit(127);
    }
    free(envp);
    ns->pid = pid;
    for (int i = 0; i < 1000; i++) {        /* 10 s */
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            ns->pid = 0;
            return -1;
        }
        if (port_accepts(ns->port))
            return 0;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ns->pid = 0;
    return -1;
}

int embedded_nats_hold_port(void)
{
    return hold_port();
}

void embedded_nats_release_port(int port)
{
    release_port(port);
}

int embedded_nats_start(embedded_nats_t *out)
{
    return embedded_nats_start_args(out, NULL);
}

int embedded_nats_start_args(embedded_nats_t *out, const char *const extra[])
{
    return embedded_nats_start_env(out, extra, NULL);
}

int embedded_nats_start_env(embedded_nats_t *out, const char *const extra[], const char *const env[])
{
    embedded_nats_t ns;
    memset(&ns, 0, sizeof ns);
    for (int i = 0; env != NULL && env[i] != NULL; i++) {
        if (i == EMBEDDED_NATS_MAX_ENV || strlen(env[i]) >= sizeof ns.env[0] || strchr(env[i], '=') == NULL) {
            fprintf(stderr, "embedded_nats: too many, too long or malformed environment entries\n");
            return -1;
        }
        snprintf(ns.env[i], sizeof ns.env[i], "%s", env[i]);
        ns.n_env = i + 1;
    }
    for (int i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (i == EMBEDDED_NATS_MAX_EXTRA || strlen(extra[i]) >= sizeof ns.extra[0]) {
            fprintf(stderr, "embedded_nats: too many or too long extra arguments\n");
            return -1;
        }
        snprintf(ns.extra[i], sizeof ns.extra[i], "%s", extra[i]);
        ns.n_extra = i + 1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(ns.dir, sizeof ns.dir, "%s/natomic-nats-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(ns.dir) == NULL) {
        fprintf(stderr, "embedded_nats: mkdtemp %s: %s\n", ns.dir, strerror(errno));
        return -1;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        ns.port = hold_port();
        if (ns.port <= 0)
            continue;
        if (spawn(&ns) == 0) {
            snprintf(ns.url, sizeof ns.url, "nats://127.0.0.1:%d", ns.port);
            *out = ns;
            return 0;
        }
        release_port(ns.port);
    }
    fprintf(stderr, "embedded_nats: nats-server did not start (is it installed? see %s/nats-server.log)\n",
            ns.dir);
    return -1;
}

int embedded_nats_restart(embedded_nats_t *ns)
{
    if (ns->pid > 0)
        embedded_nats_kill(ns);
    return spawn(ns);
}

void embedded_nats_kill(embedded_nats_t *ns)
{
    if (ns->pid <= 0)
        return;
    kill(ns->pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(ns->pid, NULL, WNOHANG) == ns->pid) {
            ns->pid = 0;
            return;
        }
        sleep_ms(10);
    }
    kill(ns->pid, SIGKILL);
    waitpid(ns->pid, NULL, 0);
    ns->pid = 0;
}

static void remove_tree(const char *dir)
{
    /* The folder holds only what nats-server wrote; let rm do the walk. */
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

static void stop(embedded_nats_t *ns, bool keep)
{
    embedded_nats_kill(ns);
    if (ns->dir[0] != '\0')
        release_port(ns->port); /* once: a second stop finds the folder name cleared */
    if (ns->dir[0] != '\0' && !keep && getenv("NATOMIC_KEEP") == NULL)
        remove_tree(ns->dir);
    ns->dir[0] = '\0';
}

void embedded_nats_stop(embedded_nats_t *ns)
{
    stop(ns, false);
}

void embedded_nats_stop_keep(embedded_nats_t *ns)
{
    stop(ns, true);
}
