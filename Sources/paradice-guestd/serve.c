/* The request loop: a pool of threads, each reading one pdk_request from the control file, carrying it
 * out on the backend with the frontend core, and answering with PDK_REPLY. A call that blocks (a read, an
 * ioctl waiting for a frame) holds its thread, so the pool grows whenever every thread is busy, up to a
 * cap.
 *
 * One thread reads at a time (the reading lock), so requests are taken in the module's queue order. A
 * PDK_OP_MUNMAP is carried out whole (the mirror's write-back and the backend's PD_MUNMAP answered)
 * before the next request is read: the module does not wait for it (a vma close runs with the caller's
 * mmap lock held, and at exit), yet the program's next call, queued after it, must find the backend's
 * mapping gone, as the preload's synchronous munmap leaves it. */
#define _GNU_SOURCE
#include "guestd.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_THREADS 256
#define FIRST_THREADS 4

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t reading_lock = PTHREAD_MUTEX_INITIALIZER;   /* held by the one thread in read(2) */
static int threads, idle;
static int told_cap;

static void reply(const struct pdk_request *r, int64_t result, uint64_t value) {
    struct pdk_reply answer = { r->id, result, value };
    if (result >= 0) atomic_fetch_add(&gd.served, 1);
    else atomic_fetch_add(&gd.failed, 1);
    gd.dirty = 1;
    if (ioctl(gd.control, PDK_REPLY, &answer) != 0 && errno != ESRCH)
        gd_log("reply to request %llu (op %u): %m", (unsigned long long)r->id, r->op);
}

/* -errno of a failed core call; EIO for every call once the backend is gone. */
static int64_t failure(void) {
    if (gd.lost) return -EIO;
    return errno > 0 ? -(int64_t)errno : -EIO;
}

/* Open flags the backend's file gets: the guest's access mode and status flags; nothing that creates,
 * truncates or makes the backend's process a terminal's owner. */
static int backend_open_flags(uint64_t flags) {
    int f = (int)flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW | O_PATH | O_TMPFILE);
    return f | O_NOCTTY;
}

static void serve_open(struct gd_call *call) {
    const struct pdk_request *r = &call->request;
    struct gd_node *node = gd_node(r->cookie);
    if (!node) { reply(r, -ENODEV, 0); return; }
    struct pd_stat st;
    int broken;
    int64_t handle = pd_file_open(gd.connection, node->backend, strlen(node->backend), backend_open_flags(r->arg[0]),
                                  0, &st, &broken);
    if (handle < 0) { reply(r, failure(), 0); return; }
    struct gd_file *f = gd_file_add((uint32_t)handle, r->cookie, (int)r->arg[0] & (O_NONBLOCK | O_APPEND));
    if (!f) {
        (void)pd_file_simple(gd.connection, (uint32_t)handle, PD_CLOSE, NULL, 0, NULL, 0, &broken);
        reply(r, -ENOMEM, 0);
        return;
    }
    atomic_fetch_add(&node->open_files, 1);
    /* A regular file or a block device keeps a position; a character device answers where it is. */
    int seekable = S_ISREG(st.mode) || S_ISBLK(st.mode);
    reply(r, seekable ? PDK_OPEN_SEEKABLE : 0, (uint64_t)handle);
}

/* The module waits for the answer (its result is ignored), so that the backend's file is closed when the
 * guest's last reference goes, as a local driver's release has run by then. */
static void serve_release(struct gd_call *call) {
    const struct pdk_request *r = &call->request;
    struct gd_file *f = r->handle && r->handle <= UINT32_MAX ? gd_file_remove((uint32_t)r->handle) : NULL;
    if (!f) { reply(r, 0, 0); return; }
    struct gd_node *node = gd_node(f->cookie);
    if (node) atomic_fetch_sub(&node->open_files, 1);
    gd_file_put(f);
    gd_interrupt_file((uint32_t)r->handle);
    int broken;
    (void)pd_file_simple(gd.connection, (uint32_t)r->handle, PD_CLOSE, NULL, 0, NULL, 0, &broken);
    reply(r, 0, 0);
}

/* The guest changes O_NONBLOCK and O_APPEND with fcntl, which no driver sees: the backend's file follows
 * them before a call that depends on them. */
static void follow_flags(struct gd_file *f, uint32_t file_flags) {
    int want = (int)file_flags & (O_NONBLOCK | O_APPEND);
    if (want == f->flags) return;
    struct pd_flags p = { want, 0 };
    int broken;
    if (pd_file_simple(gd.connection, f->handle, PD_SETFL, &p, sizeof p, NULL, 0, &broken) >= 0) f->flags = want;
}

static void serve_transfer(struct gd_call *call, struct gd_file *f, int writing) {
    const struct pdk_request *r = &call->request;
    struct pd_memory memory = gd_caller_memory(call);
    struct pd_descriptors descriptors = gd_caller_descriptors(call);
    struct pd_interruption interruption;
    gd_interruptible_begin(r->id, f->handle, &interruption);
    struct pd_target t = { gd.connection, f->handle, &f->lent, &memory, &descriptors, &interruption };
    int positional = r->arg[3] == 1;
    int broken;
    uint64_t count = r->arg[1] < PD_MAX_CALL_BYTES ? r->arg[1] : PD_MAX_CALL_BYTES;
    int64_t n = writing ? pd_target_write(&t, r->arg[0], count, positional, (int64_t)r->arg[2], &broken)
                        : pd_target_read(&t, r->arg[0], count, positional, (int64_t)r->arg[2], &broken);
    int64_t result = n < 0 ? failure() : n;
    gd_interruptible_end(r->id, &interruption);
    reply(r, result, 0);
}

static void serve_ioctl(struct gd_call *call, struct gd_file *f) {
    const struct pdk_request *r = &call->request;
    /* arg[2] = 1: a 32-bit caller's compat_ioctl. The specs describe the 64-bit ABI only, so such a call
       is refused as a driver without compat_ioctl refuses it. */
    if (r->arg[2] == 1) { reply(r, -ENOTTY, 0); return; }
    struct pd_memory memory = gd_caller_memory(call);
    struct pd_descriptors descriptors = gd_caller_descriptors(call);
    struct pd_interruption interruption;
    gd_interruptible_begin(r->id, f->handle, &interruption);
    struct pd_target t = { gd.connection, f->handle, &f->lent, &memory, &descriptors, &interruption };
    int broken;
    int64_t result = pd_file_ioctl(&t, (uint32_t)r->arg[0], r->arg[1], &broken);
    if (result < 0) result = failure();
    gd_interruptible_end(r->id, &interruption);
    reply(r, result, 0);
}

static void serve_simple(struct gd_call *call, struct gd_file *f) {
    const struct pdk_request *r = &call->request;
    int broken;
    int64_t result;
    struct pd_interruption interruption;
    gd_interruptible_begin(r->id, f->handle, &interruption);
    struct pd_target t = { gd.connection, f->handle, &f->lent, NULL, NULL, &interruption };
    if (r->op == PDK_OP_LLSEEK) {
        struct pd_llseek l = { (int64_t)r->arg[0], (int32_t)r->arg[1], 0 };
        result = pd_target_simple(&t, PD_LLSEEK, &l, sizeof l, NULL, 0, &broken);
    } else if (r->op == PDK_OP_FSYNC) {
        result = pd_target_simple(&t, PD_FSYNC, NULL, 0, NULL, 0, &broken);
    } else {
        struct pd_flags p = { r->arg[0] ? 1 : 0, 0 };
        result = pd_target_simple(&t, PD_FASYNC, &p, sizeof p, NULL, 0, &broken);
    }
    if (result < 0) result = failure();
    gd_interruptible_end(r->id, &interruption);
    reply(r, result, 0);
}

/* Readiness is asked once per PDK_OP_WATCH; the backend's PD_EVENT answers it (gd_file_event). Serving
 * threads take WATCHes in any order: one at a time per handle, each naming every event asked since the
 * last event, the backend's watch never loses an event a module file still waits for. The backend's
 * watch reports a level already there at once (it polls the device). */
static void serve_watch(struct gd_call *call, struct gd_file *f) {
    const struct pdk_request *r = &call->request;
    struct pdk_notify notify = { r->file, POLLERR, 0 };
    short events = 0;
    pthread_mutex_lock(&f->watch_lock);
    if (gd.lost || gd_file_watch(f->handle, r->file, (short)(r->arg[0] & 0xffff), &events, NULL) != 0) {
        pthread_mutex_unlock(&f->watch_lock);
        notify.revents = POLLERR | POLLHUP;
        (void)ioctl(gd.control, PDK_NOTIFY, &notify);
        return;
    }
    struct pd_poll p = { (int32_t)(uint16_t)events, -1 };
    int broken;
    int64_t result = pd_file_simple(gd.connection, f->handle, PD_WATCH, &p, sizeof p, NULL, 0, &broken);
    pthread_mutex_unlock(&f->watch_lock);
    if (result < 0) gd_file_event(f->handle, gd.lost ? POLLERR | POLLHUP : POLLERR);
}

/* PDK_OP_POLL: the level now; when none of the events holds, the WATCH is armed before the answer, so
 * that nothing coming in between goes unreported. One round trip (pd_file_watch_level): the backend looks
 * at this waiter's events alone (a driver's answer depends on them) and, not ready, arms the watch for
 * every event asked since the last event. The module file is a watcher before the request goes, as the
 * WATCH's event may come before its reply is taken; a level that holds takes that back. */
static void serve_poll(struct gd_call *call, struct gd_file *f) {
    const struct pdk_request *r = &call->request;
    short asked = (short)(r->arg[0] & 0xffff), events = 0;
    struct gd_watch_mark mark;
    int broken;
    pthread_mutex_lock(&f->watch_lock);
    if (gd.lost) {
        pthread_mutex_unlock(&f->watch_lock);
        reply(r, POLLERR | POLLHUP, 0);
        return;
    }
    if (gd_file_watch(f->handle, r->file, asked, &events, &mark) != 0) {
        pthread_mutex_unlock(&f->watch_lock);
        reply(r, POLLERR, 0);
        return;
    }
    int64_t revents = pd_file_watch_level(gd.connection, f->handle, events, asked, &broken);
    if (revents != 0) gd_file_unwatch(f->handle, &mark);   /* ready, or no watch was made */
    pthread_mutex_unlock(&f->watch_lock);
    reply(r, revents < 0 ? (gd.lost ? POLLERR | POLLHUP : POLLERR) : revents & 0xffff, 0);
}

/* The memory of an mmap request: the caller's, and the view of its area as the mirror's memory. */
struct mapping_call { struct gd_call call; uint64_t view, length; };

static uint64_t view_of(void *context, uint64_t hint, uint64_t length, int fixed) {
    (void)hint;
    (void)fixed;   /* the caller's address is the module's business; the mirror lives in the view */
    struct mapping_call *m = context;
    if (length != m->length) { errno = EINVAL; return PD_NO_ADDRESS; }
    return m->view;
}

/* A same-host backend's device maps into the caller itself (PDK_MMAP_DEVICE), its area left alone; else
 * (TCP, or a backend that keeps its descriptors) the area holds a mirror. */
static void serve_mmap(struct gd_call *call, struct gd_file *f) {
    const struct pdk_request *r = &call->request;
    uint64_t length = r->arg[0];
    int device = gd_file_shared(f);
    if (device >= 0) {
        struct pdk_reply answer = { r->id, PDK_MMAP_DEVICE, (uint64_t)device };
        if (ioctl(gd.control, PDK_REPLY, &answer) == 0) {
            atomic_fetch_add(&gd.served, 1);
            atomic_fetch_add(&gd.shared_maps, 1);
            gd.dirty = 1;
            return;
        }
        if (errno == ESRCH) return;   /* its caller is gone */
        gd_log("request %llu: the module refused the device's descriptor (%m): a mirror", (unsigned long long)r->id);
    }
    struct mapping_call m = { *call, 0, length };
    m.view = gd_area_map(r->area, length, f->handle);
    if (m.view == PD_NO_ADDRESS) { reply(r, failure(), 0); return; }
    struct pd_memory memory = gd_caller_memory(&m.call);
    memory.map = view_of;
    struct pd_descriptors descriptors = gd_caller_descriptors(&m.call);
    struct pd_target t = { gd.connection, f->handle, &f->lent, &memory, &descriptors };
    int flags = (int)r->arg[3] & (MAP_SHARED | MAP_PRIVATE);
    uint64_t at = pd_file_map(&t, 0, length, (int)r->arg[2], flags, (int64_t)r->arg[1]);
    if (at == PD_NO_ADDRESS) {
        int64_t e = failure();
        gd_area_unmap(r->area);
        reply(r, e, 0);
        return;
    }
    reply(r, 0, 0);
}

static void serve_munmap(struct gd_call *call) {
    const struct pdk_request *r = &call->request;
    uint64_t view, length;
    if (gd_area_find(r->area, &view, &length) != 0) return;
    struct pd_memory memory = gd_caller_memory(call);   /* no caller waits: only the view is reached */
    (void)pd_file_unmap(gd.connection, &memory, view);  /* a writable shared mirror's stores go first */
    gd_area_unmap(r->area);
}

static void serve(struct gd_call *call) {
    const struct pdk_request *r = &call->request;
    switch (r->op) {
    case PDK_OP_OPEN: serve_open(call); return;
    case PDK_OP_RELEASE: serve_release(call); return;
    case PDK_OP_MUNMAP: serve_munmap(call); return;
    case PDK_OP_INTERRUPT: gd_interrupt(r->arg[0]); return;
    default: break;
    }
    int answers = r->op != PDK_OP_WATCH;
    struct gd_file *f = r->handle && r->handle <= UINT32_MAX ? gd_file_get((uint32_t)r->handle) : NULL;
    if (!f) {
        if (answers) reply(r, -EBADF, 0);
        else { struct pdk_notify n = { r->file, POLLERR | POLLHUP, 0 }; (void)ioctl(gd.control, PDK_NOTIFY, &n); }
        return;
    }
    if (r->op == PDK_OP_READ || r->op == PDK_OP_WRITE || r->op == PDK_OP_IOCTL) follow_flags(f, r->file_flags);
    switch (r->op) {
    case PDK_OP_READ: serve_transfer(call, f, 0); break;
    case PDK_OP_WRITE: serve_transfer(call, f, 1); break;
    case PDK_OP_IOCTL: serve_ioctl(call, f); break;
    case PDK_OP_LLSEEK: case PDK_OP_FSYNC: case PDK_OP_FASYNC: serve_simple(call, f); break;
    case PDK_OP_WATCH: serve_watch(call, f); break;
    case PDK_OP_POLL: serve_poll(call, f); break;
    case PDK_OP_MMAP: serve_mmap(call, f); break;
    default:
        gd_log("request %llu: unknown op %u", (unsigned long long)r->id, r->op);
        reply(r, -EINVAL, 0);
    }
    gd_file_put(f);
}

static int spawn(void);

static void *worker(void *unused) {
    (void)unused;
    for (;;) {
        struct gd_call call;
        pthread_mutex_lock(&reading_lock);
        ssize_t n = read(gd.control, &call.request, sizeof call.request);
        int e = errno;
        int whole = (size_t)n == sizeof call.request;
        if (whole && call.request.op == PDK_OP_MUNMAP) {
            gd.dirty = 1;
            serve(&call);   /* ordered: done before the next request is read */
            pthread_mutex_unlock(&reading_lock);
            continue;
        }
        pthread_mutex_unlock(&reading_lock);
        if (n < 0 && (e == EINTR || e == EAGAIN)) continue;
        if (n < 0) { errno = e; gd_log("read of the control file: %m"); return NULL; }
        if (!whole) { gd_log("a short request (%zd bytes)", n); continue; }
        pthread_mutex_lock(&pool_lock);
        int grow = --idle == 0;
        pthread_mutex_unlock(&pool_lock);
        gd.dirty = 1;
        if (grow) (void)spawn();   /* a thread is always reading while one can be */
        serve(&call);
        pthread_mutex_lock(&pool_lock);
        idle++;
        pthread_mutex_unlock(&pool_lock);
    }
}

static int spawn(void) {
    pthread_mutex_lock(&pool_lock);
    if (threads >= MAX_THREADS) {
        int tell = !told_cap;
        told_cap = 1;
        pthread_mutex_unlock(&pool_lock);
        if (tell) gd_log("all %d threads are busy: further requests wait for one", MAX_THREADS);
        return -1;
    }
    threads++;
    idle++;
    pthread_mutex_unlock(&pool_lock);
    pthread_t thread;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attributes, 256 << 10);
    int e = pthread_create(&thread, &attributes, worker, NULL);
    pthread_attr_destroy(&attributes);
    if (e != 0) {
        pthread_mutex_lock(&pool_lock);
        threads--;
        idle--;
        pthread_mutex_unlock(&pool_lock);
        gd_log("cannot start a thread: %s", strerror(e));
        return -1;
    }
    return 0;
}

void gd_pool_size(int *total, int *busy) {
    pthread_mutex_lock(&pool_lock);
    *total = threads;
    *busy = threads - idle;
    pthread_mutex_unlock(&pool_lock);
}

int gd_serve_start(void) {
    for (int i = 0; i < FIRST_THREADS; i++)
        if (spawn() != 0) return -1;
    return 0;
}
