/* A Xen vchan as a blocking byte stream (paradice_vchan.h). */
#define _GNU_SOURCE
#include "paradice_vchan.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <libxenvchan.h>

/* The library's entry points, typed by its own header. */
static struct {
    __typeof__(libxenvchan_server_init) *server_init;
    __typeof__(libxenvchan_client_init) *client_init;
    __typeof__(libxenvchan_close) *close;
    __typeof__(libxenvchan_read) *read;
    __typeof__(libxenvchan_write) *write;
    __typeof__(libxenvchan_wait) *wait;
    __typeof__(libxenvchan_fd_for_select) *fd_for_select;
    __typeof__(libxenvchan_is_open) *is_open;
} xv;
static pthread_once_t xv_once = PTHREAD_ONCE_INIT;
static int xv_loaded;

static void load(void) {
    void *lib = dlopen("libxenvchan.so.4.17", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libxenvchan.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
#define TAKE(name) if (!(*(void **)&xv.name = dlsym(lib, "libxenvchan_" #name))) return
    TAKE(server_init); TAKE(client_init); TAKE(close); TAKE(read); TAKE(write); TAKE(wait); TAKE(fd_for_select);
    TAKE(is_open);
#undef TAKE
    xv_loaded = 1;
}

struct paradice_vchan {
    pthread_mutex_t lock;          /* every call into the library */
    struct libxenvchan *ctrl;
    int events;                    /* the event channel's descriptor, non-blocking */
    int stop;                      /* an eventfd, written once by shutdown: readable for good */
    int shut;                      /* under lock */
    int receive_timeout;           /* milliseconds, 0: none */
    pid_t owner;                   /* the process that opened it */
};

int paradice_vchan_parse(const char *rest, int *domain, char *path, size_t path_size, const char **why) {
    char *end;
    errno = 0;
    long d = strtol(rest, &end, 10);
    if (end == rest || errno || d < 0 || d > 0x7fef || *end != ':') { *why = "a vchan endpoint is vchan:DOMID:XENSTORE-PATH"; return -1; }
    const char *p = end + 1;
    size_t n = strlen(p);
    if (n == 0 || n >= path_size || p[0] != '/' || strstr(p, "//") || p[n - 1] == '/') {
        *why = "a vchan's xenstore path is absolute, without empty components";
        return -1;
    }
    for (const char *c = p; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr("/-_.@", *c))) {
            *why = "a vchan's xenstore path holds only [A-Za-z0-9/_.@-]";
            return -1;
        }
    *domain = (int)d;
    memcpy(path, p, n + 1);
    return 0;
}

int paradice_vchan_probe(int server, const char **why) {
    pthread_once(&xv_once, load);
    if (!xv_loaded) { *why = "libxenvchan.so.4.17 is not installed here (Debian: libxenmisc4.17)"; errno = ENOSYS; return -1; }
    if (access("/dev/xen/evtchn", F_OK) != 0 || access(server ? "/dev/xen/gntalloc" : "/dev/xen/gntdev", F_OK) != 0) {
        *why = "Xen is not running here (no /dev/xen/evtchn, gntalloc or gntdev)";
        errno = ENODEV;
        return -1;
    }
    return 0;
}

struct paradice_vchan *paradice_vchan_open(int server, int domain, const char *path, const char **why) {
    if (paradice_vchan_probe(server, why) != 0) return NULL;
    struct paradice_vchan *v = calloc(1, sizeof *v);
    if (!v) { *why = "out of memory"; errno = ENOMEM; return NULL; }
    v->stop = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    v->ctrl = v->stop < 0 ? NULL : server ? xv.server_init(NULL, domain, path, 1 << 16, 1 << 16) : xv.client_init(NULL, domain, path);
    if (!v->ctrl) {
        int e = errno ? errno : EIO;
        *why = server ? "libxenvchan_server_init failed" : "libxenvchan_client_init failed (is the backend's server at that path?)";
        if (v->stop >= 0) close(v->stop);
        free(v);
        errno = e;
        return NULL;
    }
    v->ctrl->blocking = 0;   /* waits happen here, where a shutdown can end them */
    v->events = xv.fd_for_select(v->ctrl);
    int flags = fcntl(v->events, F_GETFL);
    if (flags >= 0) fcntl(v->events, F_SETFL, flags | O_NONBLOCK);
    pthread_mutex_init(&v->lock, NULL);
    v->owner = getpid();
    return v;
}

/* One attempt under the lock: bytes moved, 0 to wait, or -1 with errno; *ended when the peer is gone. */
static long attempt(struct paradice_vchan *v, int sending, void *bytes, size_t n, int *ended) {
    if (v->shut) { errno = ESHUTDOWN; return -1; }
    int k = n > INT32_MAX ? INT32_MAX : (int)n;
    int r = sending ? xv.write(v->ctrl, bytes, (size_t)k) : xv.read(v->ctrl, bytes, (size_t)k);
    if (r < 0) { errno = EIO; return -1; }
    if (r > 0) return r;
    *ended = xv.is_open(v->ctrl) == 0;
    return 0;
}

/* Waits for the event channel or a shutdown. Another thread of the stream may take the event this one
 * waited for: the bounded wait makes that cost a few milliseconds, never a hang. */
static void wait_for_peer(struct paradice_vchan *v) {
    struct pollfd fds[2] = { { v->events, POLLIN, 0 }, { v->stop, POLLIN, 0 } };
    if (poll(fds, 2, 10) > 0 && (fds[0].revents & POLLIN)) {
        pthread_mutex_lock(&v->lock);
        (void)xv.wait(v->ctrl);   /* takes the pending event (non-blocking) and unmasks the channel */
        pthread_mutex_unlock(&v->lock);
    }
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static long transfer(struct paradice_vchan *v, int sending, void *bytes, size_t n) {
    if (n == 0) return 0;
    int timeout = sending ? 0 : __atomic_load_n(&v->receive_timeout, __ATOMIC_RELAXED);
    long long deadline = timeout > 0 ? now_ms() + timeout : 0;
    for (;;) {
        int ended = 0;
        pthread_mutex_lock(&v->lock);
        long r = attempt(v, sending, bytes, n, &ended);
        pthread_mutex_unlock(&v->lock);
        if (r != 0) return r;
        if (ended) {
            if (sending) { errno = EPIPE; return -1; }
            return 0;
        }
        if (deadline && now_ms() >= deadline) { errno = EAGAIN; return -1; }
        wait_for_peer(v);
    }
}

void paradice_vchan_set_receive_timeout(struct paradice_vchan *v, int milliseconds) {
    __atomic_store_n(&v->receive_timeout, milliseconds > 0 ? milliseconds : 0, __ATOMIC_RELAXED);
}

int paradice_vchan_wait_connected(struct paradice_vchan *v) {
    for (;;) {
        pthread_mutex_lock(&v->lock);
        int shut = v->shut, state = xv.is_open(v->ctrl);
        pthread_mutex_unlock(&v->lock);
        if (shut) { errno = ESHUTDOWN; return -1; }
        if (state == 1) return 0;
        if (state == 0) { errno = EPIPE; return -1; }
        wait_for_peer(v);   /* 2: no client yet */
    }
}

long paradice_vchan_send(struct paradice_vchan *v, const void *bytes, size_t n) { return transfer(v, 1, (void *)bytes, n); }
long paradice_vchan_receive(struct paradice_vchan *v, void *bytes, size_t n) { return transfer(v, 0, bytes, n); }

void paradice_vchan_shutdown(struct paradice_vchan *v) {
    pthread_mutex_lock(&v->lock);
    v->shut = 1;
    pthread_mutex_unlock(&v->lock);
    uint64_t one = 1;
    (void)!write(v->stop, &one, sizeof one);
}

void paradice_vchan_close(struct paradice_vchan *v) {
    if (!v) return;
    /* A forked child's copy leaves the parent's vchan as it is: its mappings go when it exits. */
    if (getpid() == v->owner) xv.close(v->ctrl);
    close(v->stop);
    pthread_mutex_destroy(&v->lock);
    free(v);
}
