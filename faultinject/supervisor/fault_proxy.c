/*
 * fault_proxy.c -- a TCP proxy between one service and NATS that breaks
 * the connection on purpose.
 *
 * One thread owns everything: the listening socket, every connection
 * pair (the service's side and the upstream side) and their queues. It
 * runs a poll() loop; fault_proxy_set() changes the mode under a mutex,
 * wakes the loop through a pipe and waits until the loop has applied it,
 * so when fault_proxy_set() returns the new mode is in force (a request
 * sent afterwards cannot slip through a cut).
 *
 * Each direction of a pair is a FIFO of chunks, each with the time it may
 * leave. Bytes are read as they come and written when due, in order:
 *
 *   PASS       due at once (a plain pipe);
 *   DELAY ms   due `ms` after they were read; the head holds the rest, so
 *              order is kept per direction;
 *   BLACKHOLE  everything read is discarded, in both directions, and what
 *              was queued is dropped; connections stay open and new ones
 *              are accepted (the service sees silence, not a close);
 *   CUT        every pair is closed at once; new connections are accepted
 *              and closed, so the service's reconnects fail until heal.
 *
 * Healing (PASS) after a blackhole closes the pairs that lost bytes: their
 * NATS protocol streams are torn mid-message and cannot resume; the
 * service reconnects through the proxy. Pairs that lost nothing go on.
 *
 * Bounds: at most PAIR_CAP bytes wait per direction; the loop stops
 * reading a side whose queue is full (TCP pushes back on the sender).
 * At most MAX_PAIRS connections; more are accepted and closed.
 * A side that reaches end of file ends its pair once what it sent was
 * delivered; any socket error ends the pair at once. An upstream that
 * refuses (NATS restarting) closes the new client connection.
 *
 * Every socket is close-on-exec, so the services the lab forks hold no
 * copy of a proxy socket (a copy would keep a "cut" connection open).
 */
#include "fault_proxy.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 64
#define PAIR_CAP (1024 * 1024)   /* bytes queued per direction, at most */
#define READ_CHUNK (64 * 1024)
#define SET_WAIT_MS 5000         /* fault_proxy_set() waits at most this for the loop */

typedef struct chunk {
    struct chunk *next;
    int64_t due_ms;
    size_t len, off;
    char data[];
} chunk_t;

/* Bytes read from one side, waiting to be written to the other. */
typedef struct flow {
    chunk_t *head, *tail;
    size_t queued;
    bool eof;                   /* the source side closed: no more reads */
} flow_t;

/* fd[0] is the service's connection, fd[1] the upstream one; flow[i] goes fd[i] -> fd[1-i]. */
typedef struct pair {
    int fd[2];
    flow_t flow[2];
    bool lost_bytes;            /* a blackhole discarded some of its stream */
    bool dead;
} pair_t;

struct fault_proxy {
    int listen_fd;
    int port;
    int upstream_port;
    struct sockaddr_in upstream; /* 127.0.0.1, or the host fault_proxy_start_to() named */
    int wake[2];
    pthread_t thread;

    pthread_mutex_t mu;         /* guards the fields below */
    pthread_cond_t applied_cv;
    fault_proxy_mode_t mode;
    int delay_ms;
    bool stopping;
    unsigned long requested;    /* mode changes asked for ...       */
    unsigned long applied;      /* ... and applied by the loop      */

    /* The loop's own state (no lock: only the thread touches it). */
    pair_t *pairs[MAX_PAIRS];
    int n_pairs;
    atomic_int live;            /* = n_pairs, for fault_proxy_connections() on other threads */
    char scratch[READ_CHUNK];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void flow_clear(flow_t *f)
{
    chunk_t *c = f->head;
    while (c != NULL) {
        chunk_t *next = c->next;
        free(c);
        c = next;
    }
    f->head = f->tail = NULL;
    f->queued = 0;
}

static void pair_free(pair_t *pr)
{
    for (int i = 0; i < 2; i++) {
        if (pr->fd[i] >= 0)
            close(pr->fd[i]);
        flow_clear(&pr->flow[i]);
    }
    free(pr);
}

/* Frees the pairs marked dead and keeps the others in order. */
static void sweep(fault_proxy_t *p)
{
    int w = 0;
    for (int i = 0; i < p->n_pairs; i++) {
        if (p->pairs[i]->dead)
            pair_free(p->pairs[i]);
        else
            p->pairs[w++] = p->pairs[i];
    }
    p->n_pairs = w;
    atomic_store(&p->live, w);
}

static void set_socket_options(int fd)
{
    int one = 1;
    /* NATS sends small frames; Nagle plus delayed ACKs would add ~40 ms per hop. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A connection to the upstream, or -1 (refused: NATS is down). */
static int connect_upstream(const struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* Blocking: on loopback (the lab's own servers) it succeeds or is refused at once; to a
     * host of its own (an outside cluster) a dead one is refused or times out (the kernel's
     * connect timeout), which the services see as a slow reconnect. */
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) != 0) {
        close(fd);
        return -1;
    }
    set_socket_options(fd);
    return fd;
}

/* Accepts every pending connection; pairs them with upstream unless cut or full. */
static void accept_all(fault_proxy_t *p, fault_proxy_mode_t mode)
{
    for (;;) {
        int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return; /* EAGAIN, or an aborted connection: nothing to do */
        if (mode == FAULT_PROXY_CUT || p->n_pairs >= MAX_PAIRS) {
            close(fd);
            continue;
        }
        int up = connect_upstream(&p->upstream);
        pair_t *pr = up >= 0 ? calloc(1, sizeof *pr) : NULL;
        if (pr == NULL) {
            close(fd);
            if (up >= 0)
                close(up);
            continue;
        }
        set_socket_options(fd);
        pr->fd[0] = fd;
        pr->fd[1] = up;
        p->pairs[p->n_pairs++] = pr;
        atomic_store(&p->live, p->n_pairs);
    }
}

/* Reads what side i has (bounded by its queue), queues or discards it. False: the pair ends. */
static bool pump_in(fault_proxy_t *p, pair_t *pr, int i, fault_proxy_mode_t mode, int delay_ms)
{
    flow_t *f = &pr->flow[i];
    size_t room = mode == FAULT_PROXY_BLACKHOLE ? READ_CHUNK : PAIR_CAP - f->queued;
    if (room > READ_CHUNK)
        room = READ_CHUNK;
    if (room == 0)
        return true;
    ssize_t n = recv(pr->fd[i], p->scratch, room, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    if (n == 0) {
        f->eof = true;
        /* Nothing will be delivered in a blackhole: end now rather than hold a dead peer. */
        return mode != FAULT_PROXY_BLACKHOLE && f->queued > 0;
    }
    if (mode == FAULT_PROXY_BLACKHOLE) {
        pr->lost_bytes = true;
        return true;
    }
    chunk_t *c = malloc(sizeof *c + (size_t)n);
    if (c == NULL)
        return false;
    c->next = NULL;
    c->len = (size_t)n;
    c->off = 0;
    c->due_ms = now_ms() + (mode == FAULT_PROXY_DELAY ? delay_ms : 0);
    memcpy(c->data, p->scratch, (size_t)n);
    if (f->tail != NULL)
        f->tail->next = c;
    else
        f->head = c;
    f->tail = c;
    f->queued += (size_t)n;
    return true;
}

/* Writes the due chunks of flow i to the other side until it would block. False: the pair ends. */
static bool pump_out(pair_t *pr, int i, fault_proxy_mode_t mode, int64_t now)
{
    flow_t *f = &pr->flow[i];
    int to = pr->fd[1 - i];
    while (f->head != NULL) {
        chunk_t *c = f->head;
        if (mode == FAULT_PROXY_DELAY && c->due_ms > now)
            break;
        ssize_t n = send(to, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        c->off += (size_t)n;
        f->queued -= (size_t)n;
        if (c->off == c->len) {
            f->head = c->next;
            if (f->head == NULL)
                f->tail = NULL;
            free(c);
        }
    }
    /* A side that closed ends the pair once everything it sent went through. */
    return !(f->eof && f->head == NULL);
}

/* Brings the pairs in line with a mode the loop has not applied yet. */
static void apply_mode(fault_proxy_t *p, fault_proxy_mode_t from, fault_proxy_mode_t to)
{
    for (int i = 0; i < p->n_pairs; i++) {
        pair_t *pr = p->pairs[i];
        if (to == FAULT_PROXY_CUT) {
            pr->dead = true;
        } else if (to == FAULT_PROXY_BLACKHOLE) {
            for (int k = 0; k < 2; k++) {
                if (pr->flow[k].queued > 0)
                    pr->lost_bytes = true;
                flow_clear(&pr->flow[k]);
                if (pr->flow[k].eof)
                    pr->dead = true;
            }
        } else if (from == FAULT_PROXY_BLACKHOLE && pr->lost_bytes) {
            pr->dead = true;
        }
    }
    sweep(p);
}

static void *proxy_loop(void *arg)
{
    fault_proxy_t *p = arg;
    struct pollfd pfd[2 + 2 * MAX_PAIRS];
    fault_proxy_mode_t current = FAULT_PROXY_PASS;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        fault_proxy_mode_t mode = p->mode;
        int delay_ms = p->delay_ms;
        bool stopping = p->stopping;
        unsigned long requested = p->requested;
        pthread_mutex_unlock(&p->mu);
        if (stopping)
            break;
        if (mode != current) {
            apply_mode(p, current, mode);
            current = mode;
        }
        if (p->applied != requested) {
            pthread_mutex_lock(&p->mu);
            p->applied = requested;
            pthread_cond_broadcast(&p->applied_cv);
            pthread_mutex_unlock(&p->mu);
        }

        /* Deliver what is due, then wait for more to read, room to write, or a due time. */
        int64_t now = now_ms();
        for (int i = 0; i < p->n_pairs; i++)
            for (int k = 0; k < 2 && !p->pairs[i]->dead; k++)
                if (!pump_out(p->pairs[i], k, mode, now))
                    p->pairs[i]->dead = true;
        sweep(p);

        int timeout = -1;
        pfd[0] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        for (int i = 0; i < p->n_pairs; i++) {
            pair_t *pr = p->pairs[i];
            for (int k = 0; k < 2; k++) {
                short ev = 0;
                const flow_t *in = &pr->flow[k];      /* read from fd[k]  */
                const flow_t *out = &pr->flow[1 - k]; /* written to fd[k] */
                if (!in->eof && (mode == FAULT_PROXY_BLACKHOLE || in->queued < PAIR_CAP))
                    ev |= POLLIN;
                if (out->head != NULL) {
                    int64_t wait = mode == FAULT_PROXY_DELAY ? out->head->due_ms - now : 0;
                    if (wait <= 0)
                        ev |= POLLOUT;
                    else if (timeout < 0 || wait < timeout)
                        timeout = (int)wait;
                }
                pfd[2 + 2 * i + k] = (struct pollfd){.fd = pr->fd[k], .events = ev};
            }
        }
        int nfds = 2 + 2 * p->n_pairs;
        if (poll(pfd, (nfds_t)nfds, timeout) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "fault_proxy: poll: %s\n", strerror(errno));
            break;
        }
        if (pfd[0].revents & POLLIN) {
            char drain[64];
            while (read(p->wake[0], drain, sizeof drain) > 0) {
            }
            continue; /* a mode change: apply it before touching any byte */
        }
        int n_before = p->n_pairs; /* pfd describes these; accept_all appends after them */
        if (pfd[1].revents & POLLIN)
            accept_all(p, mode);
        for (int i = 0; i < n_before; i++) {
            pair_t *pr = p->pairs[i];
            for (int k = 0; k < 2 && !pr->dead; k++) {
                short rev = pfd[2 + 2 * i + k].revents;
                if (pr->flow[k].eof)
                    pr->dead = (rev & (POLLHUP | POLLERR)) != 0; /* reset after its close */
                else if ((rev & (POLLIN | POLLHUP | POLLERR)) && !pump_in(p, pr, k, mode, delay_ms))
                    pr->dead = true;
            }
        }
        sweep(p);
    }
    for (int i = 0; i < p->n_pairs; i++)
        p->pairs[i]->dead = true;
    sweep(p);
    return NULL;
}

int fault_proxy_start(fault_proxy_t **out, int upstream_port)
{
    return fault_proxy_start_to(out, "127.0.0.1", upstream_port);
}

int fault_proxy_start_to(fault_proxy_t **out, const char *host, int upstream_port)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &ai);
    if (gai != 0 || ai == NULL) {
        fprintf(stderr, "fault_proxy: cannot resolve %s: %s\n", host, gai != 0 ? gai_strerror(gai) : "no address");
        return -1;
    }
    fault_proxy_t *p = calloc(1, sizeof *p);
    if (p == NULL) {
        freeaddrinfo(ai);
        fprintf(stderr, "fault_proxy: out of memory\n");
        return -1;
    }
    memcpy(&p->upstream, ai->ai_addr, sizeof p->upstream);
    p->upstream.sin_port = htons((uint16_t)upstream_port);
    freeaddrinfo(ai);
    p->upstream_port = upstream_port;
    p->wake[0] = p->wake[1] = -1;
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->listen_fd, 64) != 0 || getsockname(p->listen_fd, (struct sockaddr *)&a, &len) != 0 ||
        pipe2(p->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        fprintf(stderr, "fault_proxy: cannot listen on 127.0.0.1: %s\n", strerror(errno));
        goto fail;
    }
    p->port = ntohs(a.sin_port);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->applied_cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&p->thread, NULL, proxy_loop, p);
    if (rc != 0) {
        fprintf(stderr, "fault_proxy: pthread_create: %s\n", strerror(rc));
        pthread_cond_destroy(&p->applied_cv);
        pthread_mutex_destroy(&p->mu);
        goto fail;
    }
    *out = p;
    return 0;
fail:
    if (p->listen_fd >= 0)
        close(p->listen_fd);
    if (p->wake[0] >= 0) {
        close(p->wake[0]);
        close(p->wake[1]);
    }
    free(p);
    return -1;
}

int fault_proxy_port(const fault_proxy_t *p)
{
    return p->port;
}

int fault_proxy_connections(fault_proxy_t *p)
{
    return atomic_load(&p->live);
}

static void wake_loop(fault_proxy_t *p)
{
    /* A full pipe already wakes the loop: EAGAIN is fine. */
    ssize_t ignored = write(p->wake[1], "x", 1);
    (void)ignored;
}

void fault_proxy_set(fault_proxy_t *p, fault_proxy_mode_t mode, int delay_ms)
{
    assert(mode >= FAULT_PROXY_PASS && mode <= FAULT_PROXY_DELAY);
    pthread_mutex_lock(&p->mu);
    p->mode = mode;
    p->delay_ms = delay_ms > 0 ? delay_ms : 0;
    unsigned long mine = ++p->requested;
    pthread_mutex_unlock(&p->mu);
    wake_loop(p);

    /* Wait until the loop has applied it (bounded: the loop never blocks long). */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += SET_WAIT_MS / 1000;
    pthread_mutex_lock(&p->mu);
    while ((long)(p->applied - mine) < 0 && !p->stopping)
        if (pthread_cond_timedwait(&p->applied_cv, &p->mu, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&p->mu);
}

void fault_proxy_stop(fault_proxy_t *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->applied_cv);
    pthread_mutex_unlock(&p->mu);
    wake_loop(p);
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_cond_destroy(&p->applied_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
