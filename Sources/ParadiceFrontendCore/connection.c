/* The connection to the backend, shared by the frontend's threads. The first waiting thread reads the
 * socket for all of them (a lone caller never changes threads). */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include "cparadice.h"
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
#include <sys/syscall.h>
#include <unistd.h>

/* A call waiting for its reply, on its own stack: whichever thread reads the socket hands the frame over.
 * A frame for no call in flight is dropped, so a backend cannot make the frontend keep what it sends. */
struct pd_waiter {
    uint32_t request;
    int arrived;
    struct pd_frame frame;
    struct pd_waiter *next;
};

/* close(2) itself: inside a program whose close the frontend wraps, the wrapper is not for the core. */
static void close_descriptor(int fd) { syscall(SYS_close, fd); }

/* The connection's TLS state goes (without a word: the socket is closed or not this process's). */
static void drop_tls(struct pd_connection *c) {
    if (c->tls) pd_tls_free(c->tls);
    if (c->tls_context) pd_tls_context_free(c->tls_context);
    c->tls = NULL;
    c->tls_context = NULL;
}

struct pd_connection *pd_conn_new(void) {
    struct pd_connection *c = calloc(1, sizeof *c);
    if (!c) { errno = ENOMEM; return NULL; }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    pthread_mutex_init(&c->shapes_lock, NULL);
    pthread_mutex_init(&c->mirrors_lock, NULL);
    c->fd = -1;
    c->next = 1;
    c->refs = 1;
    return c;
}

void pd_conn_release(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->lock);
    if (!last) return;
    if (c->fd >= 0) close_descriptor(c->fd);
    drop_tls(c);
    for (int i = 0; i < PD_MIRRORS; i++) free(c->mirrors[i].shadow);
    if (c->release) c->release(c->context);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->send_lock);
    pthread_mutex_destroy(&c->shapes_lock);
    pthread_mutex_destroy(&c->mirrors_lock);
    free(c);
}

void pd_conn_log(struct pd_connection *c, const char *format, ...) {
    if (!c->log) return;
    char line[512];
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(line, sizeof line, format, ap);
    va_end(ap);
    if (n < 0) return;
    c->log(c->context, line);
}


int pd_conn_live(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    int live = c->fd >= 0 && c->owner == getpid() && !c->dead;
    pthread_mutex_unlock(&c->lock);
    return live;
}

uint32_t pd_conn_token(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    uint32_t t = c->fd >= 0 && c->owner == getpid() && !c->dead ? c->token : 0;
    pthread_mutex_unlock(&c->lock);
    return t;
}

void pd_conn_forget(struct pd_connection *c, uint32_t *session, uint32_t *token) {
    pthread_mutex_lock(&c->lock);
    *session = c->session;
    *token = c->token;
    if (c->fd >= 0) close_descriptor(c->fd);
    drop_tls(c);
    c->fd = -1;
    c->dead = 0;
    c->reading = 0;
    c->waiting = NULL;
    c->event_reader = 0;   /* the thread did not survive the fork */
    pthread_mutex_unlock(&c->lock);
}

/* A pushed readiness event: it reaches the frontend's handler, then the frame is freed. */
static void deliver_event(struct pd_connection *c, struct pd_frame *f) {
    struct pd_event e = { 0 };
    if (f->header.length >= sizeof e) memcpy(&e, f->body, sizeof e);
    if (c->on_event) c->on_event(c->context, f->header.handle, (short)e.revents);
    pd_frame_release(c, f);
}

static int send_all(struct pd_connection *c, int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = c->tls ? pd_tls_write(c->tls, p, n) : send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int recv_all(struct pd_connection *c, int fd, void *buffer, size_t n) {
    uint8_t *p = buffer;
    while (n > 0) {
        ssize_t k = c->tls ? pd_tls_read(c->tls, p, n) : recv(fd, p, n, 0);
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

static int read_frame(struct pd_connection *c, int fd, struct pd_frame *f) {
    /* A descriptor, when one is passed, comes with the first byte of its frame. */
    f->descriptor = -1;
    f->body = NULL;
    long first = 0;   /* over TLS no descriptor travels: the header is read like the body */
    if (!c->tls) {
        first = paradice_recv_with_descriptor(fd, &f->header, sizeof f->header, &f->descriptor);
        if (first == 0) { errno = EIO; return -1; }
        if (first < 0) { if (errno != EINTR) return -1; first = 0; }
    }
    int failed = recv_all(c, fd, (uint8_t *)&f->header + first, sizeof f->header - (size_t)first) != 0;
    if (!failed && f->header.length > PD_MAX_FRAME) { errno = EPROTO; failed = 1; }
    if (!failed) {
        f->body = malloc(f->header.length ? f->header.length : 1);
        if (!f->body) { errno = ENOMEM; failed = 1; }
    }
    if (!failed && recv_all(c, fd, f->body, f->header.length) != 0) failed = 1;
    if (failed) {
        int e = errno;
        pd_frame_release(c, f);
        errno = e;
        return -1;
    }
    return 0;
}

void pd_frame_release(struct pd_connection *c, struct pd_frame *f) {
    free(f->body);
    f->body = NULL;
    if (f->descriptor >= 0) close_descriptor(f->descriptor);   /* not taken by its receiver */
    f->descriptor = -1;
}

static int finish_send(struct pd_connection *c, int fd, uint16_t op, uint16_t flags, uint32_t request, uint32_t handle,
                       struct pd_buffer *b) {
    struct pd_header h = { (uint32_t)(b->length - sizeof h), op, flags, request, handle };
    memcpy(b->data, &h, sizeof h);
    pthread_mutex_lock(&c->send_lock);
    int r = send_all(c, fd, b->data, b->length);
    pthread_mutex_unlock(&c->send_lock);
    return r;
}

int pd_conn_dial(const char *url) {
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        if (path[0] == '/' && path[1] == '/') path += 2;
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
        strcpy(addr.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { int e = errno; close_descriptor(fd); errno = e; return -1; }
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
    if (h[0] == '[') { h++; size_t n = strlen(h); if (n) h[n - 1] = 0; }
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
        close_descriptor(fd);
        fd = -1;
    }
    freeaddrinfo(list);
    if (fd < 0) errno = e;
    return fd;
}

struct pd_security pd_security_from_environment(void) {
    struct pd_security s = { getenv("PARADICE_TLS_CERT"), getenv("PARADICE_TLS_KEY"), getenv("PARADICE_TLS_CA"),
                             getenv("PARADICE_PSK_FILE"), 0 };
    const char *plain = getenv("PARADICE_PLAIN_TCP");
    s.plain_tcp = plain && strcmp(plain, "1") == 0;
    return s;
}

int pd_conn_dial_secure(struct pd_connection *c, const char *url, const struct pd_security *s) {
    c->why[0] = 0;
    int tcp = strncmp(url, "tcp:", 4) == 0;
    int tls = s->cert || s->key || s->ca || s->psk_file;
    if (tcp && !tls && !s->plain_tcp) {
        snprintf(c->why, sizeof c->why, "TCP needs TLS: --tls-cert, --tls-key and --tls-ca, or --psk-file "
                 "(or, unauthenticated and unencrypted, --plain-tcp)");
        errno = EACCES;
        return -1;
    }
    if (tcp && tls && s->plain_tcp) {
        snprintf(c->why, sizeof c->why, "--plain-tcp and TLS settings exclude each other");
        errno = EINVAL;
        return -1;
    }
    c->plain_tcp = tcp && !tls;
    int fd = pd_conn_dial(url);
    if (fd < 0 || !tcp || !tls) return fd;
    drop_tls(c);
    struct pd_tls_settings settings = { s->cert, s->key, s->ca, s->psk_file };
    char error[256];
    c->tls_context = pd_tls_context_new(PD_TLS_CLIENT, &settings, error, sizeof error);
    if (c->tls_context) c->tls = pd_tls_handshake(c->tls_context, fd, 10000, error, sizeof error);
    if (!c->tls) {
        snprintf(c->why, sizeof c->why, c->tls_context ? "the backend is refused: %s" : "%s", error);
        drop_tls(c);
        close_descriptor(fd);
        errno = EACCES;
        return -1;
    }
    /* pd_tls_handshake made it non-blocking; the TLS layer waits for it itself. */
    return fd;
}

/* Under the caller's care: no other thread uses c until it returns. */
int pd_conn_start(struct pd_connection *c, int fd, const struct pd_hello *hello, const char *name, size_t name_length,
                  struct pd_frame *reply, const char **why) {
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof *hello + name_length);
    pd_buffer_append(&b, hello, sizeof *hello);
    pd_buffer_append(&b, name, name_length);
    *reply = (struct pd_frame){ .descriptor = -1 };
    *why = "the backend closed the connection or answered no PD_REPLY";
    int ok = finish_send(c, fd, PD_HELLO, 0, 0, 0, &b) == 0 && read_frame(c, fd, reply) == 0 && reply->header.op == PD_REPLY;
    int failure = errno;
    pd_buffer_free(&b);
    if (!ok && c->plain_tcp && failure != EPROTO && reply->header.op != PD_REPLY) {
        snprintf(c->why, sizeof c->why, "the backend ended the connection at the handshake (a TLS backend does so to plain TCP)");
        *why = c->why;
    }
    const uint8_t *first = (const uint8_t *)&reply->header;
    if (!ok && c->plain_tcp && (first[0] == 0x15 || first[0] == 0x16) && first[1] == 3) {
        /* A TLS record (an alert, a server hello): the backend wants TLS and this frontend spoke plain TCP. */
        snprintf(c->why, sizeof c->why, "the backend speaks TLS: give this frontend --tls-cert, --tls-key and --tls-ca, or --psk-file");
        *why = c->why;
        close_descriptor(fd);
        errno = EACCES;
        return -1;
    }
    if (!ok && c->tls && pd_tls_failure(c->tls)[0]) {
        /* TLS 1.3: the backend refuses a guest's certificate or key after the guest's side of the handshake. */
        snprintf(c->why, sizeof c->why, "the backend refused this frontend's TLS credentials: %s", pd_tls_failure(c->tls));
        *why = c->why;
        close_descriptor(fd);
        drop_tls(c);
        errno = EACCES;
        return -1;
    }
    struct pd_hello_reply hr;
    if (ok) ok = pd_parse_hello(reply->body, reply->header.length, &hr, why) == 0;
    if (!ok) {
        /* A refusal (another major version, say) is a bare pd_reply with its errno. */
        int e = EPROTO;
        struct pd_reply refusal;
        if (reply->body && reply->header.op == PD_REPLY && reply->header.length >= sizeof refusal
            && reply->header.length < sizeof hr) {
            memcpy(&refusal, reply->body, sizeof refusal);
            if (refusal.error > 0) e = refusal.error;
        }
        pd_frame_release(c, reply);
        close_descriptor(fd);
        drop_tls(c);
        errno = e;
        return -1;
    }
    pthread_mutex_lock(&c->lock);
    c->fd = fd;
    c->owner = getpid();
    c->dead = 0;
    c->leaving = 0;
    c->session = hr.session;
    c->token = hr.token;
    c->capabilities = hr.capabilities;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* Under the lock. */
static void mark_dead(struct pd_connection *c) {
    if (!c->dead) {
        c->dead = 1;
        if (!c->leaving && c->address) pd_conn_log(c, "paradice: lost the backend at %s", c->address);
        else if (!c->leaving) pd_conn_log(c, "paradice: lost the backend");
    }
    pthread_cond_broadcast(&c->cond);
}

void pd_conn_shutdown(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    c->leaving = 1;
    if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->lock);
}

void pd_conn_goodbye(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    int ours = c->fd >= 0 && c->owner == getpid() && !c->dead;
    if (ours) c->leaving = 1;
    pthread_mutex_unlock(&c->lock);
    if (!ours) return;
    struct pd_buffer b;
    pd_buffer_init(&b, 0);
    struct pd_frame reply = { .descriptor = -1 };
    if (pd_conn_call(c, PD_BYE, 0, 0, &b, &reply) == 0) pd_frame_release(c, &reply);
    pd_buffer_free(&b);
    pthread_mutex_lock(&c->lock);
    mark_dead(c);
    pthread_mutex_unlock(&c->lock);
}

static void unregister(struct pd_connection *c, struct pd_waiter *w) {
    for (struct pd_waiter **p = &c->waiting; *p; p = &(*p)->next)
        if (*p == w) { *p = w->next; break; }
}

/* Under the lock: gives a reply to the call waiting for it, or drops it. */
static void hand_over(struct pd_connection *c, struct pd_frame *f) {
    for (struct pd_waiter *w = c->waiting; w; w = w->next) {
        if (w->request != f->header.request || w->arrived) continue;
        w->frame = *f;
        w->arrived = 1;
        pthread_cond_broadcast(&c->cond);
        return;
    }
    if (!c->told_stray) pd_conn_log(c, "paradice: the backend answered request %u, which is not in flight: dropped", f->header.request);
    c->told_stray = 1;
    pd_frame_release(c, f);
}

int pd_conn_call(struct pd_connection *c, uint16_t op, uint16_t flags, uint32_t handle, struct pd_buffer *request,
                 struct pd_frame *reply) {
    return pd_conn_call_interruptible(c, op, flags, handle, request, reply, NULL);
}

/* PD_INTERRUPT naming `request`, which went before it. A frame that cannot go leaves the stream broken. */
static void send_interrupt(struct pd_connection *c, int fd, uint32_t request) {
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof(struct pd_interrupt_request));
    struct pd_interrupt_request body = { request, 0 };
    pd_buffer_append(&b, &body, sizeof body);
    if (finish_send(c, fd, PD_INTERRUPT, 0, 0, 0, &b) != 0) {
        pthread_mutex_lock(&c->lock);
        mark_dead(c);
        pthread_mutex_unlock(&c->lock);
    }
    pd_buffer_free(&b);
}

/* The request is on its way: from now on an interrupt names it. One that came while it was being sent
 * (or before, between two requests of the call) follows it now. */
static void interruptible_from(struct pd_connection *c, int fd, struct pd_interruption *i, uint32_t request) {
    if (!i) return;
    pthread_mutex_lock(&i->lock);
    i->request = request;
    int pending = i->pending;
    i->pending = 0;
    pthread_mutex_unlock(&i->lock);
    if (pending) send_interrupt(c, fd, request);
}

/* Its answer came (or the connection died): an interrupt from now on waits for the call's next request. */
static void interruptible_until(struct pd_interruption *i, uint32_t request) {
    if (!i) return;
    pthread_mutex_lock(&i->lock);
    if (i->request == request) i->request = 0;
    pthread_mutex_unlock(&i->lock);
}

void pd_interruption_init(struct pd_interruption *i) {
    memset(i, 0, sizeof *i);
    pthread_mutex_init(&i->lock, NULL);
}

void pd_interruption_destroy(struct pd_interruption *i) { pthread_mutex_destroy(&i->lock); }

void pd_interruption_end(struct pd_interruption *i) {
    if (!i) return;
    pthread_mutex_lock(&i->lock);
    i->ended = 1;
    i->pending = 0;
    i->request = 0;
    pthread_mutex_unlock(&i->lock);
}

void pd_interrupt(struct pd_connection *c, struct pd_interruption *i) {
    pthread_mutex_lock(&c->lock);
    int able = c->fd >= 0 && c->owner == getpid() && !c->dead && (c->capabilities & PD_CAP_INTERRUPT);
    int fd = c->fd;
    pthread_mutex_unlock(&c->lock);
    if (!able) return;
    pthread_mutex_lock(&i->lock);
    uint32_t request = i->ended ? 0 : i->request;
    if (!i->ended && request == 0) i->pending = 1;
    pthread_mutex_unlock(&i->lock);
    /* Named only once its request was sent (interruptible_from): the backend never sees the interrupt first. */
    if (request) send_interrupt(c, fd, request);
}

int pd_conn_call_interruptible(struct pd_connection *c, uint16_t op, uint16_t flags, uint32_t handle,
                               struct pd_buffer *request, struct pd_frame *reply, struct pd_interruption *i) {
    pthread_mutex_lock(&c->lock);
    if (c->dead || c->fd < 0) { pthread_mutex_unlock(&c->lock); errno = EIO; return -1; }
    struct pd_waiter me = { .request = c->next++ };
    if (c->next == 0) c->next = 1;
    me.next = c->waiting;   /* before the request goes: another thread may read the reply */
    c->waiting = &me;
    int fd = c->fd;
    pthread_mutex_unlock(&c->lock);
    if (finish_send(c, fd, op, flags, me.request, handle, request) != 0) {
        pthread_mutex_lock(&c->lock);
        unregister(c, &me);
        mark_dead(c);
        pthread_mutex_unlock(&c->lock);
        errno = EIO;
        return -1;
    }
    interruptible_from(c, fd, i, me.request);
    pthread_mutex_lock(&c->lock);
    for (;;) {
        if (me.arrived) {
            unregister(c, &me);
            pthread_mutex_unlock(&c->lock);
            interruptible_until(i, me.request);
            *reply = me.frame;
            return 0;
        }
        if (c->dead) {
            unregister(c, &me);
            pthread_mutex_unlock(&c->lock);
            interruptible_until(i, me.request);
            errno = EIO;
            return -1;
        }
        if (c->reading) { pthread_cond_wait(&c->cond, &c->lock); continue; }
        c->reading = 1;
        pthread_mutex_unlock(&c->lock);
        struct pd_frame f = { .descriptor = -1 };
        int r = read_frame(c, fd, &f);
        pthread_mutex_lock(&c->lock);
        c->reading = 0;
        pthread_cond_broadcast(&c->cond);   /* another caller may read next */
        if (r != 0) {
            mark_dead(c);
            unregister(c, &me);
            pthread_mutex_unlock(&c->lock);
            interruptible_until(i, me.request);
            errno = EIO;
            return -1;
        }
        if (f.header.op == PD_EVENT) {
            /* Whichever thread reads delivers the event: until the event reader has taken over the
             * socket, a caller waiting for its reply may be the one that reads a watch's event. */
            pthread_mutex_unlock(&c->lock);
            deliver_event(c, &f);
            pthread_mutex_lock(&c->lock);
            continue;
        }
        hand_over(c, &f);
    }
}

/* Once a file is watched, this thread reads the socket for good: events can come while no call is in
 * flight. Callers then wait for it to hand their replies over. It holds a reference to the connection. */
static void *event_reader(void *argument) {
    struct pd_connection *c = argument;
    pthread_mutex_lock(&c->lock);
    while (c->reading && !c->dead) pthread_cond_wait(&c->cond, &c->lock);
    if (c->dead) { pthread_mutex_unlock(&c->lock); pd_conn_release(c); return NULL; }
    c->reading = 1;
    int fd = c->fd;
    for (;;) {
        pthread_mutex_unlock(&c->lock);
        struct pd_frame f = { .descriptor = -1 };
        int r = read_frame(c, fd, &f);
        if (r == 0 && f.header.op == PD_EVENT) {
            deliver_event(c, &f);
            pthread_mutex_lock(&c->lock);
            continue;
        }
        pthread_mutex_lock(&c->lock);
        if (r != 0) {
            c->reading = 0;
            mark_dead(c);
            pthread_mutex_unlock(&c->lock);
            pd_conn_release(c);
            return NULL;
        }
        hand_over(c, &f);
    }
}

void pd_conn_start_event_reader(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    int start = !c->event_reader && !c->dead && c->fd >= 0;
    if (start) {
        c->event_reader = 1;
        c->refs++;
    }
    pthread_mutex_unlock(&c->lock);
    if (!start) return;
    pthread_t thread;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attributes, event_reader, c) != 0) {
        pthread_mutex_lock(&c->lock);
        c->event_reader = 0;
        pthread_mutex_unlock(&c->lock);
        pd_conn_release(c);
    }
    pthread_attr_destroy(&attributes);
}
