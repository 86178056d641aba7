/* The connection to the backend, shared by the frontend's threads. The first waiting thread reads the
 * stream for all of them (a lone caller never changes threads). */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

/* Under the lock, or under the caller's care. */
static int connected(const struct pd_connection *c) { return c->stream.ops != NULL; }

static void drop_stream(struct pd_connection *c) {
    if (connected(c)) c->stream.ops->close(&c->stream);
    c->stream = (struct pd_stream)PD_STREAM_NONE;
}

struct pd_connection *pd_conn_new(void) {
    struct pd_connection *c = calloc(1, sizeof *c);
    if (!c) { errno = ENOMEM; return NULL; }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    pthread_mutex_init(&c->shapes_lock, NULL);
    pthread_mutex_init(&c->mirrors_lock, NULL);
    c->stream = (struct pd_stream)PD_STREAM_NONE;
    c->next = 1;
    c->refs = 1;
    return c;
}

void pd_conn_release(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->lock);
    if (!last) return;
    drop_stream(c);
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
    int live = connected(c) && c->owner == getpid() && !c->dead;
    pthread_mutex_unlock(&c->lock);
    return live;
}

uint32_t pd_conn_token(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    uint32_t t = connected(c) && c->owner == getpid() && !c->dead ? c->token : 0;
    pthread_mutex_unlock(&c->lock);
    return t;
}

pid_t pd_conn_owner(struct pd_connection *c, uint32_t *token) {
    pthread_mutex_lock(&c->lock);
    pid_t owner = connected(c) && !c->dead ? c->owner : 0;
    *token = owner ? c->token : 0;
    pthread_mutex_unlock(&c->lock);
    return owner;
}

void pd_conn_forget(struct pd_connection *c, uint32_t *session, uint32_t *token) {
    pthread_mutex_lock(&c->lock);
    *session = c->session;
    *token = c->token;
    drop_stream(c);
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

int pd_conn_inherited(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    int inherited = connected(c) && c->owner != getpid();
    pthread_mutex_unlock(&c->lock);
    return inherited;
}

static int send_all(struct pd_stream *s, const uint8_t *p, size_t n) {
    while (n > 0) {
        long k = s->ops->send(s, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int recv_all(struct pd_stream *s, void *buffer, size_t n) {
    uint8_t *p = buffer;
    while (n > 0) {
        long k = s->ops->recv(s, p, n, NULL);
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

static int read_frame(struct pd_connection *c, struct pd_stream *s, struct pd_frame *f) {
    /* A descriptor, when one is passed, comes with the first byte of its frame. */
    f->descriptor = -1;
    f->body = NULL;
    long first = s->ops->recv(s, &f->header, sizeof f->header, &f->descriptor);
    if (first == 0) { errno = EIO; return -1; }
    if (first < 0) { if (errno != EINTR) return -1; first = 0; }
    int failed = recv_all(s, (uint8_t *)&f->header + first, sizeof f->header - (size_t)first) != 0;
    if (!failed && f->header.length > PD_MAX_FRAME) { errno = EPROTO; failed = 1; }
    if (!failed) {
        f->body = malloc(f->header.length ? f->header.length : 1);
        if (!f->body) { errno = ENOMEM; failed = 1; }
    }
    if (!failed && recv_all(s, f->body, f->header.length) != 0) failed = 1;
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

static int finish_send(struct pd_connection *c, struct pd_stream *s, uint16_t op, uint16_t flags, uint32_t request, uint32_t handle,
                       struct pd_buffer *b) {
    struct pd_header h = { (uint32_t)(b->length - sizeof h), op, flags, request, handle };
    memcpy(b->data, &h, sizeof h);
    pthread_mutex_lock(&c->send_lock);
    int r = send_all(s, b->data, b->length);
    pthread_mutex_unlock(&c->send_lock);
    return r;
}

/* Whether the stream's socket has bytes (or its end) within `ms`. */
static int answered_within(const struct pd_stream *s, int ms) {
    struct pollfd p = { s->fd, POLLIN, 0 };
    int n;
    do n = poll(&p, 1, ms); while (n < 0 && errno == EINTR);
    return n != 0;
}

/* Under the caller's care: no other thread uses c until it returns. */

int pd_conn_start(struct pd_connection *c, const struct pd_stream *stream, const struct pd_hello *hello, const char *name,
                  size_t name_length, struct pd_frame *reply, const char **why) {
    struct pd_stream s = *stream;
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof *hello + name_length);
    pd_buffer_append(&b, hello, sizeof *hello);
    pd_buffer_append(&b, name, name_length);
    *reply = (struct pd_frame){ .descriptor = -1 };
    *why = "the backend closed the connection or answered no PD_REPLY";
    int sent = finish_send(c, &s, PD_HELLO, 0, 0, 0, &b) == 0;
    /* A stream that can lose its first frame is connected anew while PD_HELLO gets no answer (the last
       attempt waits as long as it takes). An earlier attempt's answer later than that would reach the new
       connection first (a port in a VM keeps a write until a host side is connected): this frontend would
       hold that attempt's session number and token, whose session ended at the next PD_HELLO. */
    for (int attempt = 1; sent && s.ops->redial && attempt < PD_HELLO_ATTEMPTS && !answered_within(&s, PD_HELLO_SILENCE_MS); attempt++) {
        pd_conn_log(c, "paradice: no answer to PD_HELLO within %d ms: connecting again (attempt %d)", PD_HELLO_SILENCE_MS, attempt + 1);
        sent = s.ops->redial(&s) == 0 && finish_send(c, &s, PD_HELLO, 0, 0, 0, &b) == 0;
    }
    int ok = sent && read_frame(c, &s, reply) == 0 && reply->header.op == PD_REPLY;
    int failure = errno;
    pd_buffer_free(&b);
    const uint8_t *first = (const uint8_t *)&reply->header;
    const char *refused = ok ? NULL : pd_stream_tls_failure(&s);
    if (!ok && c->plain_tcp && failure != EPROTO && reply->header.op != PD_REPLY) {
        snprintf(c->why, sizeof c->why, "the backend ended the connection at the handshake (a TLS backend does so to plain TCP)");
        *why = c->why;
    }
    if ((!ok && c->plain_tcp && (first[0] == 0x15 || first[0] == 0x16) && first[1] == 3) || refused) {
        /* TLS 1.3: the backend refuses a guest's certificate or key after the guest's side of the handshake;
         * a TLS record (an alert, a server hello) to plain TCP: the backend wants TLS. */
        if (refused) snprintf(c->why, sizeof c->why, "the backend refused this frontend's TLS credentials: %s", refused);
        else snprintf(c->why, sizeof c->why, "the backend speaks TLS: give this frontend --tls-cert, --tls-key and --tls-ca, or --psk-file");
        *why = c->why;
        pd_frame_release(c, reply);
        s.ops->close(&s);
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
        s.ops->close(&s);
        errno = e;
        return -1;
    }
    pthread_mutex_lock(&c->lock);
    c->stream = s;
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
    if (connected(c)) c->stream.ops->shutdown(&c->stream);
    pthread_mutex_unlock(&c->lock);
}

void pd_conn_goodbye(struct pd_connection *c) {
    pthread_mutex_lock(&c->lock);
    int ours = connected(c) && c->owner == getpid() && !c->dead;
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
static void send_interrupt(struct pd_connection *c, struct pd_stream *s, uint32_t request) {
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof(struct pd_interrupt_request));
    struct pd_interrupt_request body = { request, 0 };
    pd_buffer_append(&b, &body, sizeof body);
    if (finish_send(c, s, PD_INTERRUPT, 0, 0, 0, &b) != 0) {
        pthread_mutex_lock(&c->lock);
        mark_dead(c);
        pthread_mutex_unlock(&c->lock);
    }
    pd_buffer_free(&b);
}

/* The request is on its way: from now on an interrupt names it. One that came while it was being sent
 * (or before, between two requests of the call) follows it now. */
static void interruptible_from(struct pd_connection *c, struct pd_stream *s, struct pd_interruption *i, uint32_t request) {
    if (!i) return;
    pthread_mutex_lock(&i->lock);
    i->request = request;
    int pending = i->pending;
    i->pending = 0;
    pthread_mutex_unlock(&i->lock);
    if (pending) send_interrupt(c, s, request);
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
    int able = connected(c) && c->owner == getpid() && !c->dead && (c->capabilities & PD_CAP_INTERRUPT);
    struct pd_stream s = c->stream;
    pthread_mutex_unlock(&c->lock);
    if (!able) return;
    pthread_mutex_lock(&i->lock);
    uint32_t request = i->ended ? 0 : i->request;
    if (!i->ended && request == 0) i->pending = 1;
    pthread_mutex_unlock(&i->lock);
    /* Named only once its request was sent (interruptible_from): the backend never sees the interrupt first. */
    if (request) send_interrupt(c, &s, request);
}

int pd_conn_call_interruptible(struct pd_connection *c, uint16_t op, uint16_t flags, uint32_t handle,
                               struct pd_buffer *request, struct pd_frame *reply, struct pd_interruption *i) {
    pthread_mutex_lock(&c->lock);
    if (c->dead || !connected(c)) { pthread_mutex_unlock(&c->lock); errno = EIO; return -1; }
    struct pd_waiter me = { .request = c->next++ };
    if (c->next == 0) c->next = 1;
    me.next = c->waiting;   /* before the request goes: another thread may read the reply */
    c->waiting = &me;
    struct pd_stream s = c->stream;
    pthread_mutex_unlock(&c->lock);
    if (finish_send(c, &s, op, flags, me.request, handle, request) != 0) {
        pthread_mutex_lock(&c->lock);
        unregister(c, &me);
        mark_dead(c);
        pthread_mutex_unlock(&c->lock);
        errno = EIO;
        return -1;
    }
    interruptible_from(c, &s, i, me.request);
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
        int r = read_frame(c, &s, &f);
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
    struct pd_stream s = c->stream;
    for (;;) {
        pthread_mutex_unlock(&c->lock);
        struct pd_frame f = { .descriptor = -1 };
        int r = read_frame(c, &s, &f);
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
    int start = !c->event_reader && !c->dead && connected(c);
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
