/* The connection to the backend: one per process, shared by its threads. The first waiting thread
 * reads the socket for all of them (a lone caller never changes threads). */
#include "shim.h"
#include "cparadice.h"
#include "parse.h"
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* A call waiting for its reply, on its own stack: whichever thread reads the socket hands the frame over.
 * A frame for no call in flight is dropped, so a backend cannot make the frontend keep what it sends. */
struct waiter {
    uint32_t request;
    int arrived;
    struct pd_frame frame;
    struct waiter *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_mutex_t send_lock;
    int fd;
    pid_t owner;
    int dead;
    int reading;
    uint32_t next;
    struct waiter *waiting;
    int complained;
    uint32_t session, token;   /* from the handshake: a forked child joins them */
    int leaving;               /* PD_BYE sent: the connection's end is no loss */
} conn = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, -1, 0, 0, 0, 1, NULL, 0, 0, 0 };

uint32_t pd_session_token(void) {
    pthread_mutex_lock(&conn.lock);
    uint32_t t = conn.fd >= 0 && conn.owner == getpid() && !conn.dead ? conn.token : 0;
    pthread_mutex_unlock(&conn.lock);
    return t;
}

static int event_reader_started;

/* A pushed readiness event: it reaches the forwarded file's placeholder, then the frame is freed. */
static void deliver_event(struct pd_frame *f) {
    struct pd_event e = { 0 };
    if (f->header.length >= sizeof e) memcpy(&e, f->body, sizeof e);
    pd_event(f->header.handle, (short)e.revents);
    pd_frame_free(f);
}

void pd_log(const char *format, ...) {
    char line[512];
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(line, sizeof line - 1, format, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = pd_real.write ? pd_real.write(2, line, n) : -1;
    (void)ignored;
}

static int send_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int recv_all(int fd, void *buffer, size_t n) {
    uint8_t *p = buffer;
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k == 0) { errno = EIO; return -1; }
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int read_frame(int fd, struct pd_frame *f) {
    /* A descriptor, when one is passed, comes with the first byte of its frame. */
    f->descriptor = -1;
    long first = paradice_recv_with_descriptor(fd, &f->header, sizeof f->header, &f->descriptor);
    if (first == 0) { errno = EIO; return -1; }
    if (first < 0) { if (errno != EINTR) return -1; first = 0; }
    if (recv_all(fd, (uint8_t *)&f->header + first, sizeof f->header - (size_t)first) != 0) return -1;
    if (f->header.length > PD_MAX_FRAME) { errno = EPROTO; return -1; }
    f->body = malloc(f->header.length ? f->header.length : 1);
    if (!f->body) { errno = ENOMEM; return -1; }
    if (recv_all(fd, f->body, f->header.length) != 0) { free(f->body); f->body = NULL; return -1; }
    return 0;
}

void pd_frame_free(struct pd_frame *f) {
    free(f->body);
    f->body = NULL;
    if (f->descriptor >= 0) pd_real.close(f->descriptor);   /* not taken by its receiver */
    f->descriptor = -1;
}

static int finish_send(int fd, uint16_t op, uint16_t flags, uint32_t request, uint32_t handle, struct pd_buffer *b) {
    struct pd_header h = { (uint32_t)(b->length - sizeof h), op, flags, request, handle };
    memcpy(b->data, &h, sizeof h);
    pthread_mutex_lock(&conn.send_lock);
    int r = send_all(fd, b->data, b->length);
    pthread_mutex_unlock(&conn.send_lock);
    return r;
}

static int open_socket(const char *url) {
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        if (path[0] == '/' && path[1] == '/') path += 2;
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
        strcpy(addr.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { int e = errno; pd_real.close(fd); errno = e; return -1; }
        return fd;
    }
    const char *rest = strncmp(url, "tcp://", 6) == 0 ? url + 6 : strncmp(url, "tcp:", 4) == 0 ? url + 4 : NULL;
    if (!rest) { errno = EINVAL; return -1; }
    char host[256];
    const char *colon = strrchr(rest, ':');
    if (!colon || (size_t)(colon - rest) >= sizeof host) { errno = EINVAL; return -1; }
    memcpy(host, rest, colon - rest);
    host[colon - rest] = 0;
    char *h = host;
    if (h[0] == '[') { h++; h[strlen(h) - 1] = 0; }
    char port[16];
    snprintf(port, sizeof port, "%s", colon + 1);
    size_t plen = strlen(port);
    if (plen && port[plen - 1] == '/') port[plen - 1] = 0;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *list;
    if (getaddrinfo(h, port, &hints, &list) != 0) { errno = EHOSTUNREACH; return -1; }
    int fd = -1, e = ECONNREFUSED;
    for (struct addrinfo *a = list; a; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) { e = errno; continue; }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            break;
        }
        e = errno;
        pd_real.close(fd);
        fd = -1;
    }
    freeaddrinfo(list);
    if (fd < 0) errno = e;
    return fd;
}

/* Connects (once per process) and shakes hands. */
int pd_connect(void) {
    pthread_mutex_lock(&conn.lock);
    if (conn.fd >= 0 && conn.owner == getpid() && !conn.dead) { pthread_mutex_unlock(&conn.lock); return 0; }
    uint32_t join_session = 0, join_token = 0;
    if (conn.fd >= 0 && conn.owner != getpid()) {
        /* Inherited across fork: the parent's connection is not ours to use, but its files are: the child
         * joins the parent's session with a connection of its own. */
        join_session = conn.session;
        join_token = conn.token;
        pd_real.close(conn.fd);
        conn.fd = -1;
        conn.dead = 0;
        conn.reading = 0;
        conn.waiting = NULL;
        event_reader_started = 0;   /* the thread did not survive the fork */
    }
    const char *url = getenv("PARADICE_BACKEND");
    if (!url) { pthread_mutex_unlock(&conn.lock); errno = ENOENT; return -1; }
    int fd = open_socket(url);
    if (fd < 0) {
        int e = errno;
        if (!conn.complained) pd_log("paradice: cannot reach the backend at %s: %s", url, strerror(e));
        conn.complained = 1;
        pthread_mutex_unlock(&conn.lock);
        errno = e;
        return -1;
    }
    struct pd_buffer b;
    pd_buffer_init(&b, 64);
    struct pd_hello hello = { PD_MAGIC, PD_VERSION_MAJOR, PD_VERSION_MINOR, PD_CAP_FD_SLOTS, (uint32_t)getpid(),
                              join_session, join_token };
    pd_buffer_append(&b, &hello, sizeof hello);
    const char *name = program_invocation_short_name;
    pd_buffer_append(&b, name, strlen(name));
    struct pd_frame reply = { .descriptor = -1 };
    int ok = finish_send(fd, PD_HELLO, 0, 0, 0, &b) == 0 && read_frame(fd, &reply) == 0 && reply.header.op == PD_REPLY;
    pd_buffer_free(&b);
    if (ok) {
        struct pd_hello_reply hr;
        const char *why = NULL;
        ok = pd_parse_hello(reply.body, reply.header.length, &hr, &why) == 0;
        if (ok) {
            conn.session = hr.session;
            conn.token = hr.token;
        } else if (!conn.complained) {
            pd_log("paradice: the backend at %s: %s", url, why);
        }
    }
    pd_frame_free(&reply);
    if (!ok) {
        pd_real.close(fd);
        if (!conn.complained) pd_log("paradice: the backend at %s does not speak protocol %d", url, PD_VERSION_MAJOR);
        conn.complained = 1;
        pthread_mutex_unlock(&conn.lock);
        errno = EPROTO;
        return -1;
    }
    conn.fd = fd;
    conn.owner = getpid();
    conn.dead = 0;
    pthread_mutex_unlock(&conn.lock);
    return 0;
}

static void mark_dead(void) {
    if (!conn.dead) {
        conn.dead = 1;
        if (!conn.leaving) pd_log("paradice: lost the backend at %s", getenv("PARADICE_BACKEND"));
    }
    pthread_cond_broadcast(&conn.cond);
}

/* As the process exits (exit(), a return from main), say goodbye and wait for the answer: the backend
 * drops this process's references first, as the kernel closes an exiting process's descriptors before
 * its parent's wait returns (a parent that reopens a device its child used finds it released). After
 * _exit or a kill the backend releases them when it sees the connection close, a little later. */
__attribute__((destructor)) static void pd_goodbye(void) {
    pthread_mutex_lock(&conn.lock);
    int ours = conn.fd >= 0 && conn.owner == getpid() && !conn.dead;
    if (ours) conn.leaving = 1;
    pthread_mutex_unlock(&conn.lock);
    if (!ours) return;
    fflush(NULL);   /* stdio streams over forwarded files write while their session lives */
    struct pd_buffer b;
    pd_buffer_init(&b, 0);
    struct pd_frame reply = { .descriptor = -1 };
    if (pd_call(PD_BYE, 0, 0, &b, &reply) == 0) pd_frame_free(&reply);
    pd_buffer_free(&b);
    pthread_mutex_lock(&conn.lock);
    mark_dead();
    pthread_mutex_unlock(&conn.lock);
}

static void unregister(struct waiter *w) {
    for (struct waiter **p = &conn.waiting; *p; p = &(*p)->next)
        if (*p == w) { *p = w->next; break; }
}

/* Under the lock: gives a reply to the call waiting for it, or drops it. */
static void hand_over(struct pd_frame *f) {
    for (struct waiter *w = conn.waiting; w; w = w->next) {
        if (w->request != f->header.request || w->arrived) continue;
        w->frame = *f;
        w->arrived = 1;
        pthread_cond_broadcast(&conn.cond);
        return;
    }
    static int told;
    if (!told) pd_log("paradice: the backend answered request %u, which is not in flight: dropped", f->header.request);
    told = 1;
    pd_frame_free(f);
}

/* Sends a request (the buffer holds the body after room for the header) and waits for its answer. */
int pd_call(uint16_t op, uint16_t flags, uint32_t handle, struct pd_buffer *request, struct pd_frame *reply) {
    if (pd_connect() != 0) return -1;
    pthread_mutex_lock(&conn.lock);
    if (conn.dead) { pthread_mutex_unlock(&conn.lock); errno = EIO; return -1; }
    struct waiter me = { .request = conn.next++ };
    if (conn.next == 0) conn.next = 1;
    me.next = conn.waiting;   /* before the request goes: another thread may read the reply */
    conn.waiting = &me;
    int fd = conn.fd;
    pthread_mutex_unlock(&conn.lock);
    if (finish_send(fd, op, flags, me.request, handle, request) != 0) {
        pthread_mutex_lock(&conn.lock);
        unregister(&me);
        mark_dead();
        pthread_mutex_unlock(&conn.lock);
        errno = EIO;
        return -1;
    }
    pthread_mutex_lock(&conn.lock);
    for (;;) {
        if (me.arrived) {
            unregister(&me);
            pthread_mutex_unlock(&conn.lock);
            *reply = me.frame;
            return 0;
        }
        if (conn.dead) { unregister(&me); pthread_mutex_unlock(&conn.lock); errno = EIO; return -1; }
        if (conn.reading) { pthread_cond_wait(&conn.cond, &conn.lock); continue; }
        conn.reading = 1;
        pthread_mutex_unlock(&conn.lock);
        struct pd_frame f = { .descriptor = -1 };
        int r = read_frame(fd, &f);
        pthread_mutex_lock(&conn.lock);
        conn.reading = 0;
        pthread_cond_broadcast(&conn.cond);   /* another caller may read next */
        if (r != 0) {
            mark_dead();
            unregister(&me);
            pthread_mutex_unlock(&conn.lock);
            errno = EIO;
            return -1;
        }
        if (f.header.op == PD_EVENT) {
            /* Whichever thread reads delivers the event: until the event reader has taken over the
             * socket, a caller waiting for its reply may be the one that reads a watch's event. */
            pthread_mutex_unlock(&conn.lock);
            deliver_event(&f);
            pthread_mutex_lock(&conn.lock);
            continue;
        }
        hand_over(&f);
    }
}

/* Once a program uses epoll, this thread reads the socket for good: events can come while no call is
 * in flight. Callers then wait for it to hand their replies over. */

static void *event_reader(void *unused) {
    (void)unused;
    pthread_mutex_lock(&conn.lock);
    while (conn.reading) pthread_cond_wait(&conn.cond, &conn.lock);
    conn.reading = 1;
    int fd = conn.fd;
    for (;;) {
        pthread_mutex_unlock(&conn.lock);
        struct pd_frame f = { .descriptor = -1 };
        int r = read_frame(fd, &f);
        if (r == 0 && f.header.op == PD_EVENT) {
            deliver_event(&f);
            pthread_mutex_lock(&conn.lock);
            continue;
        }
        pthread_mutex_lock(&conn.lock);
        if (r != 0) {
            conn.reading = 0;
            mark_dead();
            pthread_mutex_unlock(&conn.lock);
            return NULL;
        }
        hand_over(&f);
    }
}

void pd_start_event_reader(void) {
    if (pd_connect() != 0) return;
    pthread_mutex_lock(&conn.lock);
    int start = !event_reader_started;
    event_reader_started = 1;
    pthread_mutex_unlock(&conn.lock);
    if (!start) return;
    pthread_t thread;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_create(&thread, &attributes, event_reader, NULL);
    pthread_attr_destroy(&attributes);
}

int64_t pd_reply_result(const struct pd_frame *f, const uint8_t **data, size_t *length) {
    if (f->header.op != PD_REPLY || f->header.length < sizeof(struct pd_reply)) { errno = EPROTO; return -1; }
    struct pd_reply r;
    memcpy(&r, f->body, sizeof r);
    if (data) *data = f->body + sizeof r;
    if (length) *length = f->header.length - sizeof r;
    if (r.error != 0) { errno = r.error; return -1; }
    return r.result;
}
