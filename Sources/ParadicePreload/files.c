/* Which local descriptors stand for forwarded files, and the operations on those files. Each forwarded
 * file is held locally by an eventfd placeholder: a real descriptor number, closed by close/exec like any
 * other, so the program's descriptor bookkeeping stays true. */
#include "shim.h"
#include "inheritance.h"
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>


#define MAX_FDS 65536
_Static_assert(PD_INHERIT_MAX_FD == MAX_FDS - 1, "an inherited descriptor is one of the table's");
#define HANDLE_BUCKETS 256
/* One lock guards the descriptor table, the handle index, and each file's references, event state
 * (watch, revents, polling, placeholder) and flags. Nothing blocking runs under it: a
 * placeholder's close, dup and eventfd reads and writes never block. */
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pd_file *table[MAX_FDS];
static struct pd_file *by_handle[HANDLE_BUCKETS];   /* the files with descriptors, chained by handle */

/* A fork while another thread holds the lock would leave it held in the child for ever. */
static void lock_for_fork(void) { pthread_mutex_lock(&files_lock); }
static void unlock_after_fork(void) { pthread_mutex_unlock(&files_lock); }
static void parent_after_fork(void);
static void child_after_fork(void);
__attribute__((constructor)) static void guard_fork(void) { pthread_atfork(lock_for_fork, parent_after_fork, child_after_fork); }

static void index_file(struct pd_file *f) {
    if (f->indexed) return;
    struct pd_file **bucket = &by_handle[f->handle % HANDLE_BUCKETS];
    f->next_by_handle = *bucket;
    *bucket = f;
    f->indexed = 1;
}

static void unindex_file(struct pd_file *f) {
    if (!f->indexed) return;
    for (struct pd_file **p = &by_handle[f->handle % HANDLE_BUCKETS]; *p; p = &(*p)->next_by_handle)
        if (*p == f) { *p = f->next_by_handle; break; }
    f->indexed = 0;
}

/* The table no longer has fd naming f: another descriptor of it takes over as placeholder. */
static void forget_descriptor(struct pd_file *f, int fd) {
    f->descriptors--;
    if (f->placeholder != fd) return;
    f->placeholder = -1;
    if (f->descriptors > 0)
        for (int other = 0; other < MAX_FDS; other++) if (table[other] == f) { f->placeholder = other; break; }
}

static void close_remote(uint32_t handle, int *result) {
    if (pd_call_without_body(PD_CLOSE, handle) < 0 && result) *result = -1;
}

/* The last reference is gone: the remote file closes (when its session is this process's) and f is freed. */
static int finish(struct pd_file *f) {
    int r = 0;
    if (pd_usable(f)) close_remote(f->handle, &r);
    if (f->shared >= 0) pd_real.close(f->shared);
    pd_lent_destroy(&f->lent);
    free(f->ahead);
    free(f);
    return r;
}

/* Drops one reference; the last runs finish. */
static int put(struct pd_file *f) {
    pthread_mutex_lock(&files_lock);
    int last = --f->refs == 0;
    if (last) unindex_file(f);
    pthread_mutex_unlock(&files_lock);
    return last ? finish(f) : 0;
}

struct pd_file *pd_get(int fd) {
    if (fd < 0 || fd >= MAX_FDS) return NULL;
    pthread_mutex_lock(&files_lock);
    struct pd_file *f = table[fd];
    if (f) f->refs++;
    pthread_mutex_unlock(&files_lock);
    return f;
}

void pd_put(struct pd_file *f) {
    int e = errno;   /* the call's errno survives a last put's remote close */
    (void)put(f);
    errno = e;
}

int pd_forwarded(int fd) {
    if (fd < 0 || fd >= MAX_FDS) return 0;
    pthread_mutex_lock(&files_lock);
    int yes = table[fd] != NULL;
    pthread_mutex_unlock(&files_lock);
    return yes;
}

/* Under the lock: fd names f from now on; returns the file it named before (its reference to drop). */
static struct pd_file *bind_locked(int fd, struct pd_file *f) {
    struct pd_file *old = table[fd];
    table[fd] = f;
    if (old) forget_descriptor(old, fd);
    if (f) {
        f->refs++;
        f->descriptors++;
        if (f->placeholder < 0) f->placeholder = fd;
        index_file(f);
    }
    return old;
}

void pd_bind(int fd, struct pd_file *f) {
    if (fd < 0 || fd >= MAX_FDS) return;
    pthread_mutex_lock(&files_lock);
    struct pd_file *old = bind_locked(fd, f);
    pthread_mutex_unlock(&files_lock);
    if (old) put(old);   /* dup2 over a forwarded descriptor drops that one */
}

int pd_install(struct pd_file *f, int cloexec) {
    int fd = eventfd(0, EFD_NONBLOCK | (cloexec ? EFD_CLOEXEC : 0));
    if (fd < 0) return -1;
    if (fd >= MAX_FDS) { pd_real.close(fd); errno = EMFILE; return -1; }
    f->placeholder = -1;
    pd_bind(fd, f);
    return fd;
}

int pd_close_descriptor(int fd) {
    if (fd < 0 || fd >= MAX_FDS) return pd_real.close(fd);
    pthread_mutex_lock(&files_lock);
    struct pd_file *f = bind_locked(fd, NULL);
    /* Closed while the table still says what it names: an event never reaches a reused number. */
    pd_real.close(fd);
    pthread_mutex_unlock(&files_lock);
    return f ? put(f) : 0;
}

int pd_dup_onto(int fd, int target, int flags, int three) {
    if (fd < 0 || fd >= MAX_FDS || target < 0 || target >= MAX_FDS)
        return three ? pd_real.dup3(fd, target, flags) : pd_real.dup2(fd, target);
    pthread_mutex_lock(&files_lock);
    int r = three ? pd_real.dup3(fd, target, flags) : pd_real.dup2(fd, target);
    int e = errno;
    struct pd_file *old = NULL;
    if (r >= 0 && fd != target) old = bind_locked(target, table[fd]);
    pthread_mutex_unlock(&files_lock);
    if (old) put(old);
    errno = e;
    return r;
}

void pd_event(uint32_t handle, short revents) {
    pthread_mutex_lock(&files_lock);
    for (struct pd_file *f = by_handle[handle % HANDLE_BUCKETS]; f; f = f->next_by_handle) {
        if (f->handle != handle || !(f->watch || f->polling)) continue;
        f->revents = revents;
        if (f->polling & revents & POLLOUT) revents |= POLLIN;   /* a poll waiting to write wakes too */
        if (f->placeholder >= 0 && (revents & (POLLIN | POLLPRI | POLLHUP | POLLERR))) {
            uint64_t one = 1;
            ssize_t ignored = pd_real.write(f->placeholder, &one, sizeof one);   /* non-blocking */
            (void)ignored;
        }
        break;
    }
    pthread_mutex_unlock(&files_lock);
}

/* Under the lock: the placeholder reads as not ready. */
static void drain_locked(struct pd_file *f) {
    if (f->placeholder < 0) return;
    uint64_t count;
    ssize_t ignored = pd_real.read(f->placeholder, &count, sizeof count);   /* non-blocking: clears */
    (void)ignored;
}

/* Under the lock: bytes read ahead make the file readable for an epoll set too, where the device's own
 * readiness, already taken, will not. */
static void show_ahead_locked(struct pd_file *f) {
    if (!f->watch || f->ahead_length == f->ahead_taken || f->placeholder < 0) return;
    f->revents |= POLLIN;
    uint64_t one = 1;
    ssize_t ignored = pd_real.write(f->placeholder, &one, sizeof one);   /* non-blocking */
    (void)ignored;
}

static void send_watch(struct pd_file *f, short events, struct pd_frame *reply, int *r) {
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof(struct pd_poll));
    struct pd_poll p = { events, -1 };
    pd_buffer_append(&b, &p, sizeof p);
    *r = pd_call(PD_WATCH, 0, f->handle, &b, reply);
    pd_buffer_free(&b);
}

void pd_rearm(struct pd_file *f) {
    pthread_mutex_lock(&files_lock);
    short watch = f->watch;
    pthread_mutex_unlock(&files_lock);
    if (!watch || f->owner != pd_session_token()) return;   /* most files have no epoll set watching */
    pthread_mutex_lock(&files_lock);
    watch = f->watch;
    if (watch) {
        f->revents = 0;
        drain_locked(f);
        show_ahead_locked(f);
    }
    pthread_mutex_unlock(&files_lock);
    if (!watch) return;
    struct pd_frame reply = { .descriptor = -1 };
    int r;
    send_watch(f, watch, &reply, &r);
    if (r == 0) pd_frame_free(&reply);
}

int pd_watch_once(struct pd_file *f, short events) {
    if (!pd_usable(f)) return -1;
    pd_start_event_reader();   /* before the watch: only that thread delivers events */
    pthread_mutex_lock(&files_lock);
    drain_locked(f);
    f->revents = 0;
    f->polling = events;
    pthread_mutex_unlock(&files_lock);
    struct pd_frame reply = { .descriptor = -1 };
    int r;
    send_watch(f, events, &reply, &r);
    int64_t result = r == 0 ? pd_reply_result(&reply, NULL, NULL) : -1;
    if (r == 0) pd_frame_free(&reply);
    if (result < 0) {
        pthread_mutex_lock(&files_lock);
        f->polling = 0;
        pthread_mutex_unlock(&files_lock);
        return -1;
    }
    return 0;
}

short pd_end_poll(struct pd_file *f) {
    pthread_mutex_lock(&files_lock);
    short revents = f->revents;
    f->polling = 0;
    pthread_mutex_unlock(&files_lock);
    return revents;
}

void pd_set_watch(struct pd_file *f, short events) {
    pthread_mutex_lock(&files_lock);
    f->watch = events;
    show_ahead_locked(f);
    pthread_mutex_unlock(&files_lock);
}

short pd_revents(struct pd_file *f) {
    pthread_mutex_lock(&files_lock);
    short revents = f->revents;
    pthread_mutex_unlock(&files_lock);
    return revents;
}

int pd_placeholder(struct pd_file *f) {
    pthread_mutex_lock(&files_lock);
    int fd = f->placeholder;
    pthread_mutex_unlock(&files_lock);
    return fd;
}

int pd_file_flags(struct pd_file *f) {
    pthread_mutex_lock(&files_lock);
    int flags = f->flags;
    pthread_mutex_unlock(&files_lock);
    return flags;
}

int pd_adopt_handle(uint32_t handle, int flags) {
    struct pd_file *f = calloc(1, sizeof *f);
    if (!f) { close_remote(handle, NULL); errno = ENOMEM; return -1; }
    f->handle = handle;
    f->flags = flags;
    f->owner = pd_session_token();
    f->shared = -1;
    pd_lent_init(&f->lent);
    int fd = pd_install(f, 0);
    if (fd < 0) { int e = errno; close_remote(handle, NULL); pd_lent_destroy(&f->lent); free(f); errno = e; }
    return fd;
}

int pd_shared_descriptor(struct pd_file *f) {
    if (!pd_usable(f) || pd_connect() != 0) return -1;
    return pd_file_shared(&pd_conn, f->handle, &f->shared, &files_lock);
}

int pd_handle_for_fd(int fd, uint32_t *handle) {
    PD_HOLD(f, fd);
    if (!f) return -1;
    *handle = f->handle;
    return 0;
}

/* "/a/./b/../c" → "/a/c", lexically: only to decide whether a path is forwarded. */
static void normalize(const char *path, char *out, size_t size) {
    size_t length = 0;
    out[0] = 0;
    const char *p = path;
    while (*p) {
        while (*p == '/') p++;
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0) break;
        if (n == 1 && p[0] == '.') {
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            while (length > 0 && out[length - 1] != '/') length--;
            if (length > 0) length--;
            out[length] = 0;
        } else if (length + n + 2 < size) {
            out[length++] = '/';
            memcpy(out + length, p, n);
            length += n;
            out[length] = 0;
        }
        p += n;
    }
    if (length == 0 && size > 1) { out[0] = '/'; out[1] = 0; }
}

/* Calls `match` on each entry of a colon-separated list (an entry too long for it is skipped) until one
 * matches. */
static int any_entry(const char *list, int (*match)(const char *entry, void *context), void *context) {
    char entry[512];
    while (list && *list) {
        const char *end = strchr(list, ':');
        size_t n = end ? (size_t)(end - list) : strlen(list);
        if (n < sizeof entry) {
            memcpy(entry, list, n);
            entry[n] = 0;
            if (match(entry, context)) return 1;
        }
        list = end ? end + 1 : NULL;
    }
    return 0;
}

struct renaming { const char *path; char *target; size_t size; };

/* "guest=backend": the backend's name for `path`. */
static int renames(const char *entry, void *context) {
    struct renaming *r = context;
    const char *eq = strchr(entry, '=');
    if (!eq || (size_t)(eq - entry) != strlen(r->path) || strncmp(entry, r->path, (size_t)(eq - entry)) != 0) return 0;
    snprintf(r->target, r->size, "%s", eq + 1);
    return 1;
}

struct candidate { const char *normal; const char *path; };

/* A tree ("/sys/", everything below it: the backend checks where the path really leads) or a pattern. */
static int exports(const char *pattern, void *context) {
    const struct candidate *c = context;
    size_t n = strlen(pattern);
    if (n > 1 && pattern[n - 1] == '/')
        return strncmp(c->normal, pattern, n) == 0 || (strncmp(c->normal, pattern, n - 1) == 0 && c->normal[n - 1] == 0);
    return fnmatch(pattern, c->path, FNM_PATHNAME) == 0;
}

/* PARADICE_MAP="guest=backend:…" renames; PARADICE_FORWARD="pattern:…" says what goes to the backend. */
int pd_forwarded_path(const char *path, char *backend_path, size_t size) {
    if (!path || path[0] != '/') return 0;
    static __thread char target[512];
    struct renaming renaming = { path, target, sizeof target };
    int renamed = any_entry(getenv("PARADICE_MAP"), renames, &renaming);
    const char *mapped = renamed ? target : path;
    char normal[512];
    normalize(mapped, normal, sizeof normal);
    struct candidate candidate = { normal, mapped };
    int yes = renamed || any_entry(getenv("PARADICE_FORWARD"), exports, &candidate);
    if (yes) snprintf(backend_path, size, "%s", mapped);
    return yes;
}

/* Whether `pattern` names its nodes in the folder `context` ("/dev/dri/card*" in "/dev/dri"). */
static int holds_nodes(const char *pattern, void *context) {
    const char *folder = context;
    size_t length = strlen(folder);
    const char *slash = strrchr(pattern, '/');
    return slash && (size_t)(slash - pattern) == length && length > 1 && strncmp(pattern, folder, length) == 0
        && strcspn(pattern, "*?[") > length;
}

/* The folder that holds exported device nodes (for a pattern "/dev/dri/card*", "/dev/dri") when this machine lacks it:
 * the backend's, so that libraries that look for the folder before the node (libdrm) find it. */
int pd_device_directory(const char *path, char *backend_path, size_t size) {
    if (!path || path[0] != '/') return 0;
    char normal[512];
    normalize(path, normal, sizeof normal);
    if (!any_entry(getenv("PARADICE_FORWARD"), holds_nodes, normal)) return 0;
    if (access(normal, F_OK) == 0 || errno != ENOENT) return 0;   /* access: not one we redo */
    snprintf(backend_path, size, "%s", normal);
    return 1;
}

int pd_open(const char *path, int flags, mode_t mode) {
    if (pd_connect() != 0) return -1;
    struct pd_stat st;
    int64_t handle = pd_file_open(&pd_conn, path, strlen(path), flags, mode, &st, NULL);
    if (handle < 0) return -1;
    struct pd_file *f = calloc(1, sizeof *f);
    if (!f) { close_remote((uint32_t)handle, NULL); errno = ENOMEM; return -1; }
    f->handle = (uint32_t)handle;
    f->flags = flags & (O_ACCMODE | O_NONBLOCK | O_APPEND);
    f->owner = pd_session_token();
    f->shared = -1;
    f->mode = st.mode;
    f->read_unit = st.read_unit;
    f->rdev = st.rdev;
    pd_lent_init(&f->lent);
    int fd = pd_install(f, flags & O_CLOEXEC);
    if (fd < 0) {   /* no descriptor: the handle goes */
        int e = errno;
        close_remote(f->handle, NULL);
        pd_lent_destroy(&f->lent);
        free(f);
        errno = e;
    }
    return fd;
}

/* A file inherited across fork belongs to the parent's session: it fails cleanly in the child. */
int pd_usable(struct pd_file *f) {
    if (pd_connect() != 0) return 0;
    if (f->owner != pd_session_token()) { errno = EIO; return 0; }   /* a session this process cannot join */
    return 1;
}

/* A poll's answer and a read of the same file from another thread: the read waits for bytes the poll may
 * bring, which come before any it could forward. */
static pthread_cond_t ahead_answered = PTHREAD_COND_INITIALIZER;

/* Under the lock: the files a fork shares between two processes. A poll of one reads nothing ahead from
 * then on, in either: the bytes would be one process's, while natively a poll takes nothing and the other
 * process may be the one to read them. */
static void mark_forked_locked(void) {
    for (int bucket = 0; bucket < HANDLE_BUCKETS; bucket++)
        for (struct pd_file *f = by_handle[bucket]; f; f = f->next_by_handle) f->forked = 1;
}

static void parent_after_fork(void) {
    mark_forked_locked();
    pthread_mutex_unlock(&files_lock);
}

/* The child of a fork has only the forking thread, and a copy of the parent's memory. Bytes read ahead
 * stay the parent's: the device gave them once, and a copy in the child would be read twice. Polls and
 * reads in flight were other threads' and will never be answered here, nor put the files they held. */
static void child_after_fork(void) {
    for (int bucket = 0; bucket < HANDLE_BUCKETS; bucket++)
        for (struct pd_file *f = by_handle[bucket]; f; f = f->next_by_handle) {
            f->forked = 1;
            free(f->ahead);
            f->ahead = NULL;
            f->ahead_length = f->ahead_taken = 0;
            f->ahead_pending = 0;
            f->reads_in_flight = 0;
            f->polling = 0;
            if (f->descriptors > 0) f->refs = f->descriptors;   /* one closed mid-call stays unreachable */
        }
    pthread_cond_init(&ahead_answered, NULL);   /* its waiters were other threads */
    pthread_mutex_unlock(&files_lock);
}

/* Under the lock: what a read of count bytes takes from the read-ahead, as the device's read would: up to
 * count bytes of a stream, whole records of a record file (fewer bytes than one: EINVAL). -1 with
 * errno, or the bytes; *served is 0 when nothing is ahead. */
static ssize_t take_ahead_locked(struct pd_file *f, void *buffer, size_t count, int *served) {
    size_t left = f->ahead_length - f->ahead_taken;
    *served = left > 0;
    if (!*served) return 0;
    if (count > 0 && count < f->read_unit) { errno = EINVAL; return -1; }
    size_t n = count < left ? count : left;
    n -= n % f->read_unit;
    memcpy(buffer, f->ahead + f->ahead_taken, n);
    f->ahead_taken += n;
    if (f->ahead_taken == f->ahead_length) {
        free(f->ahead);
        f->ahead = NULL;
        f->ahead_length = f->ahead_taken = 0;
    }
    return (ssize_t)n;
}

static long monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* A read that comes within this long of the poll's answer gets what the device held then, as a local
 * program reading that soon could have got no more; a later one that has room for more asks the device
 * for the rest without sleeping (a poll with timeout 0 that reads ahead), as a local read would take
 * whatever came in between. */
#define PD_READ_AHEAD_FRESH_NS 1000000L

ssize_t pd_read(struct pd_file *f, void *buffer, size_t count, int positional, off_t offset) {
    if (!pd_usable(f)) return -1;
    if (!positional) {
        pthread_mutex_lock(&files_lock);
        while (f->ahead_pending) pthread_cond_wait(&ahead_answered, &files_lock);
        long taken_at = f->ahead_at;
        int served;
        ssize_t taken = take_ahead_locked(f, buffer, count, &served);
        int e = errno;
        int emptied = served && f->ahead_length == 0;
        size_t room = taken > 0 ? count - (size_t)taken : 0;
        int top_up = emptied && taken > 0 && room >= f->read_unit && monotonic_ns() - taken_at > PD_READ_AHEAD_FRESH_NS;
        if (top_up) f->ahead_pending = 1;   /* other reads and polls of the file wait for the rest */
        if (!served) f->reads_in_flight++;
        pthread_mutex_unlock(&files_lock);
        if (top_up) {
            uint8_t *more;
            size_t length;
            uint32_t want = room < PD_MAX_READ_AHEAD ? (uint32_t)room : PD_MAX_READ_AHEAD;
            /* Its failure leaves the read what it took: a short read, which the next read or poll asks again. */
            (void)pd_file_poll_read(&pd_conn, f->handle, POLLIN, 0, want, f->read_unit, &more, &length, NULL);
            pthread_mutex_lock(&files_lock);
            if (more) {   /* no more than `want`, whole units: pd_file_poll_read checked it */
                memcpy((uint8_t *)buffer + taken, more, length);
                taken += (ssize_t)length;
                free(more);
            }
            f->ahead_pending = 0;
            pthread_cond_broadcast(&ahead_answered);
            pthread_mutex_unlock(&files_lock);
        }
        if (emptied) pd_rearm(f);   /* an epoll set sees the device's own readiness again */
        if (served) { errno = e; return taken; }
    }
    int64_t n = pd_file_read(&pd_conn, f->handle, buffer, count, positional, offset, NULL);
    int e = errno;
    if (!positional) {
        pthread_mutex_lock(&files_lock);
        f->reads_in_flight--;
        pthread_mutex_unlock(&files_lock);
    }
    pd_rearm(f);
    errno = e;
    return (ssize_t)n;
}

int pd_has_files(void) {
    pthread_mutex_lock(&files_lock);
    int any = 0;
    for (int bucket = 0; bucket < HANDLE_BUCKETS && !any; bucket++) any = by_handle[bucket] != NULL;
    pthread_mutex_unlock(&files_lock);
    return any;
}

int pd_has_read_ahead(struct pd_file *f) {
    pthread_mutex_lock(&files_lock);
    int ahead = f->ahead_length > f->ahead_taken;
    pthread_mutex_unlock(&files_lock);
    return ahead;
}

ssize_t pd_write(struct pd_file *f, const void *buffer, size_t count, int positional, off_t offset) {
    if (!pd_usable(f)) return -1;
    int64_t n = pd_file_write(&pd_conn, f->handle, buffer, count, positional, offset, NULL);
    int e = errno;
    pd_rearm(f);
    errno = e;
    return (ssize_t)n;
}

static int64_t simple(struct pd_file *f, uint16_t op, const void *body, size_t length, uint8_t *out, size_t outLength) {
    if (!pd_usable(f)) return -1;
    return pd_file_simple(&pd_conn, f->handle, op, body, length, out, outLength, NULL);
}

/* A poll of a file that may be read ahead asks the backend to read what it finds readable, so that the
 * read that follows takes no round trip; a file with bytes ahead is readable without asking. */
int pd_poll_one(struct pd_file *f, short events, int timeout_ms, short *revents) {
    if (!pd_usable(f)) return -1;
    const short input = POLLIN | POLLRDNORM;
    pthread_mutex_lock(&files_lock);
    int ahead = f->ahead_length > f->ahead_taken;
    /* Only one thread's bytes ahead at a time, and none while a forwarded read may be taking earlier ones. */
    int reads_ahead = !ahead && f->read_unit && !f->forked && (events & input) && !f->ahead_pending && f->reads_in_flight == 0 &&
                      (f->flags & O_ACCMODE) != O_WRONLY;
    if (reads_ahead) f->ahead_pending = 1;
    pthread_mutex_unlock(&files_lock);
    if (ahead && !(events & ~input)) {   /* the program asks only what the bytes answer */
        *revents = events & input;
        return 1;
    }
    struct pd_poll p = { events, ahead ? 0 : timeout_ms };
    int64_t r;
    if (reads_ahead) {
        uint8_t *bytes;
        size_t length;
        r = pd_file_poll_read(&pd_conn, f->handle, events, timeout_ms, PD_MAX_READ_AHEAD, f->read_unit, &bytes, &length, NULL);
        int e = errno;
        pthread_mutex_lock(&files_lock);
        if (bytes) { f->ahead = bytes; f->ahead_length = length; f->ahead_taken = 0; f->ahead_at = monotonic_ns(); }
        f->ahead_pending = 0;
        show_ahead_locked(f);
        pthread_cond_broadcast(&ahead_answered);
        pthread_mutex_unlock(&files_lock);
        errno = e;
    } else {
        r = pd_file_simple(&pd_conn, f->handle, PD_POLL, &p, sizeof p, NULL, 0, NULL);
    }
    if (r < 0) return -1;
    if (ahead) r |= events & input;
    *revents = (short)r;
    return r != 0;
}

off_t pd_lseek(struct pd_file *f, off_t offset, int whence) {
    struct pd_llseek l = { offset, whence, 0 };
    return (off_t)simple(f, PD_LLSEEK, &l, sizeof l, NULL, 0);
}

int pd_setfl(struct pd_file *f, int flags) {
    struct pd_flags p = { flags, 0 };
    if (simple(f, PD_SETFL, &p, sizeof p, NULL, 0) < 0) return -1;
    pthread_mutex_lock(&files_lock);
    f->flags = (f->flags & ~(O_NONBLOCK | O_APPEND)) | (flags & (O_NONBLOCK | O_APPEND));
    pthread_mutex_unlock(&files_lock);
    return 0;
}

int pd_fstat(struct pd_file *f, struct stat *st) {
    struct pd_stat remote;
    if (simple(f, PD_FSTAT, NULL, 0, (uint8_t *)&remote, sizeof remote) < 0) return -1;
    memset(st, 0, sizeof *st);
    st->st_mode = remote.mode;
    st->st_rdev = remote.rdev;
    st->st_size = (off_t)remote.size;
    st->st_nlink = 1;
    st->st_blksize = 4096;
    st->st_uid = getuid();
    st->st_gid = getgid();
    return 0;
}

/* ---- exec ----
 * An exec keeps the descriptors without FD_CLOEXEC, placeholders included, but not this library's memory.
 * The image that execs describes the forwarded ones in PARADICE_INHERIT, and the new one adopts them:
 *   "PID TICKET TOKEN AHEAD_MEMORY" then " f:FD:HANDLE:FLAGS:MODE:RDEV:READ_UNIT:FORKED:AHEAD_BYTES" for each
 *   such descriptor and " d:HANDLE" for each file none of them names (the new program closes it: its
 *   descriptors closed with the exec).
 * A file's bytes read ahead are in the memfd AHEAD_MEMORY, in the order of the entries. */

/* Under the lock: 1 when fd's placeholder survives an exec (the program may have closed it behind the
 * table's back, with close_range). */
static int survives_exec_locked(int fd) {
    int flags = pd_real.fcntl(fd, F_GETFD);
    return flags >= 0 && !(flags & FD_CLOEXEC);
}

size_t pd_inheritance_size(void) {
    size_t size = 0;
    pthread_mutex_lock(&files_lock);
    for (int bucket = 0; bucket < HANDLE_BUCKETS; bucket++)
        for (struct pd_file *f = by_handle[bucket]; f; f = f->next_by_handle) size += 112 * (size_t)f->descriptors + 16;
    pthread_mutex_unlock(&files_lock);
    return size ? size + 64 : 0;
}

static int append(char *out, size_t size, size_t *length, const char *format, ...) __attribute__((format(printf, 4, 5)));
static int append(char *out, size_t size, size_t *length, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    int n = *length < size ? vsnprintf(out + *length, size - *length, format, ap) : -1;
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *length) return -1;
    *length += (size_t)n;
    return 0;
}

/* A vfork child shares its parent's memory and files: both hold them from now on, so nothing more is read
 * ahead of them, and bytes already read ahead stay the parent's (the child cannot take them back from it
 * if its exec fails). */
size_t pd_describe_inheritance(char *out, size_t size, int parents_memory, int *ahead_memory) {
    *ahead_memory = -1;
    size_t length = 0;
    int carried = 0, failed = 0;
    pthread_mutex_lock(&files_lock);
    for (int fd = 0; fd < MAX_FDS && !failed; fd++) {
        struct pd_file *f = table[fd];
        if (!f || !survives_exec_locked(fd)) continue;
        size_t ahead = !f->described && !parents_memory ? f->ahead_length - f->ahead_taken : 0;
        if (ahead > 0) {
            if (*ahead_memory < 0) *ahead_memory = memfd_create("paradice-read-ahead", 0);
            failed = *ahead_memory < 0 || pd_real.write(*ahead_memory, f->ahead + f->ahead_taken, ahead) != (ssize_t)ahead;
        }
        if (parents_memory) f->forked = 1;
        failed = failed || append(out, size, &length, " f:%d:%u:%d:%u:%llu:%u:%d:%zu", fd, f->handle, f->flags, f->mode,
                                  (unsigned long long)f->rdev, f->read_unit, f->forked, ahead) != 0;
        f->described = 1;
        carried++;
    }
    for (int bucket = 0; bucket < HANDLE_BUCKETS; bucket++)
        for (struct pd_file *f = by_handle[bucket]; f; f = f->next_by_handle) {
            if (!f->described && !failed) failed = append(out, size, &length, " d:%u", f->handle) != 0;
            f->described = 0;
        }
    pthread_mutex_unlock(&files_lock);
    if (failed || carried == 0) {
        if (*ahead_memory >= 0) pd_real.close(*ahead_memory);
        *ahead_memory = -1;
        return 0;
    }
    return length;
}

/* Whether fd is what the image before made: "anon_inode:[eventfd]" for a placeholder. */
static int links_to(int fd, const char *prefix) {
    char path[64], target[96];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = fd >= 0 ? readlink(path, target, sizeof target - 1) : -1;
    if (n < 0) return 0;
    target[n] = 0;
    return strncmp(target, prefix, strlen(prefix)) == 0;
}

static struct pd_file *adopted_file(uint32_t handle) {
    for (struct pd_file *f = by_handle[handle % HANDLE_BUCKETS]; f; f = f->next_by_handle)
        if (f->handle == handle) return f;
    return NULL;
}

/* One " f:…" entry: its descriptor named by its file (made by the first entry of the handle). */
static int adopt_entry(const struct pd_inherited_entry *e, uint32_t token, int ahead_memory, off_t *ahead_offset) {
    size_t ahead = e->ahead;
    off_t at = *ahead_offset;
    *ahead_offset += (off_t)ahead;   /* the next entry's bytes follow, whether or not this one is adopted */
    if ((ahead > 0 && ahead_memory < 0) || !links_to(e->fd, "anon_inode:[eventfd]")) return -1;
    int fd = e->fd;
    unsigned handle = e->handle;
    uint8_t *bytes = NULL;
    if (ahead > 0) {
        bytes = malloc(ahead);
        if (!bytes || pread(ahead_memory, bytes, ahead, at) != (ssize_t)ahead) { free(bytes); return -1; }
    }
    pthread_mutex_lock(&files_lock);
    struct pd_file *f = adopted_file(handle);
    int made = f == NULL && table[fd] == NULL;
    if (made) {
        f = calloc(1, sizeof *f);
        if (f) {
            f->handle = handle;
            f->flags = e->flags & (O_ACCMODE | O_NONBLOCK | O_APPEND);
            f->mode = e->mode;
            f->rdev = e->rdev;
            f->read_unit = e->read_unit;
            f->forked = e->forked;
            f->owner = token;
            f->shared = -1;
            f->placeholder = -1;
            pd_lent_init(&f->lent);
            f->ahead = bytes;   /* ahead_at 0: the first read that empties them asks the device for more */
            f->ahead_length = bytes ? ahead : 0;
            bytes = NULL;
        }
    }
    int ok = f != NULL && table[fd] == NULL;
    if (ok) bind_locked(fd, f);
    pthread_mutex_unlock(&files_lock);
    free(bytes);
    return ok ? 0 : -1;
}

void pd_adopt_inheritance(void) {
    const char *variable = getenv("PARADICE_INHERIT");
    if (!variable) return;
    char *description = strdup(variable);
    unsetenv("PARADICE_INHERIT");   /* this program's children inherit through it only if it execs */
    if (!description) return;
    struct pd_inherited_head head;
    const char *cursor = pd_parse_inherited_head(description, &head);
    if (!cursor || head.pid != getpid()) {
        free(description);   /* another process's description: its descriptor numbers are not ours */
        return;
    }
    uint32_t ticket = head.ticket, token = head.token;
    int ahead_memory = head.ahead_memory;
    if (ahead_memory >= 0 && !links_to(ahead_memory, "/memfd:paradice-read-ahead")) ahead_memory = -1;
    int rejected = 0;
    off_t ahead_offset = 0;
    uint32_t dropped[1024];   /* files the new program has no descriptor of: closed once they are its own */
    size_t drops = 0;
    struct pd_inherited_entry entry;
    while ((cursor = pd_parse_inherited_entry(cursor, &entry)) != NULL) {
        int bad = entry.kind == 0 || (entry.kind == 'f' && adopt_entry(&entry, token, ahead_memory, &ahead_offset) != 0);
        rejected += bad;
        if (entry.handle != 0 && (entry.kind == 'd' || bad) && drops < sizeof dropped / sizeof *dropped)
            dropped[drops++] = entry.handle;
    }
    free(description);
    if (ahead_memory >= 0) pd_real.close(ahead_memory);
    if (rejected) pd_log("paradice: %d inherited descriptors not adopted", rejected);
    if (!pd_claim_exec_ticket(ticket, token)) {
        pd_log("paradice: the files inherited across exec are not this program's: %s", strerror(errno));
        return;
    }
    for (size_t i = 0; i < drops; i++) {
        pthread_mutex_lock(&files_lock);
        int named = adopted_file(dropped[i]) != NULL;   /* a rejected entry of a file another entry made */
        pthread_mutex_unlock(&files_lock);
        if (!named) close_remote(dropped[i], NULL);
    }
}
