/* The daemon's open files, by handle: the backend's handle is the daemon's (PDK_OP_OPEN's value), so
 * the module names backend files directly and the daemon only checks that it holds them. Each keeps the
 * memory its caller lent the device (pd_lent) and the module files waiting for its readiness. */
#define _GNU_SOURCE
#include "guestd.h"
#include <errno.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BUCKETS 256
struct entry { struct gd_file *file; struct entry *next; };
static struct entry *table[BUCKETS];
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;

struct gd_file *gd_file_add(uint32_t handle, uint64_t cookie, int flags) {
    struct gd_file *f = calloc(1, sizeof *f);
    struct entry *e = calloc(1, sizeof *e);
    if (!f || !e) { free(f); free(e); errno = ENOMEM; return NULL; }
    f->handle = handle;
    f->cookie = cookie;
    f->flags = flags;
    f->refs = 1;
    f->shared = -1;
    pthread_mutex_init(&f->watch_lock, NULL);
    pd_lent_init(&f->lent);
    e->file = f;
    pthread_mutex_lock(&files_lock);
    e->next = table[handle % BUCKETS];
    table[handle % BUCKETS] = e;
    pthread_mutex_unlock(&files_lock);
    return f;
}

struct gd_file *gd_file_get(uint32_t handle) {
    struct gd_file *found = NULL;
    pthread_mutex_lock(&files_lock);
    for (struct entry *e = table[handle % BUCKETS]; e; e = e->next)
        if (e->file->handle == handle) { found = e->file; found->refs++; break; }
    pthread_mutex_unlock(&files_lock);
    return found;
}

void gd_file_put(struct gd_file *f) {
    pthread_mutex_lock(&files_lock);
    int last = --f->refs == 0;
    pthread_mutex_unlock(&files_lock);
    if (!last) return;
    if (f->shared >= 0) close(f->shared);
    pd_lent_destroy(&f->lent);
    pthread_mutex_destroy(&f->watch_lock);
    free(f);
}

struct gd_file *gd_file_remove(uint32_t handle) {
    struct gd_file *found = NULL;
    pthread_mutex_lock(&files_lock);
    for (struct entry **p = &table[handle % BUCKETS]; *p; p = &(*p)->next) {
        if ((*p)->file->handle != handle) continue;
        struct entry *e = *p;
        *p = e->next;
        found = e->file;
        found->closed = 1;
        free(e);
        break;
    }
    pthread_mutex_unlock(&files_lock);
    return found;
}

/* The backend keeps one watch per handle, and each PD_WATCH replaces it: what it is sent names every event
 * a module file asked for since the last event, so that a later, narrower WATCH (another module file's,
 * or one served out of order) does not drop what an earlier one still waits for. */
int gd_file_watch(uint32_t handle, uint64_t module_file, short events, short *all, struct gd_watch_mark *mark) {
    int r = -1, added = 0;
    pthread_mutex_lock(&files_lock);
    for (struct entry *e = table[handle % BUCKETS]; e; e = e->next) {
        struct gd_file *f = e->file;
        if (f->handle != handle) continue;
        int known = 0;
        for (int i = 0; i < f->watcher_count; i++) known |= f->watchers[i] == module_file;
        if (known) r = 0;
        else if (f->watcher_count < (int)(sizeof f->watchers / sizeof f->watchers[0])) {
            f->watchers[f->watcher_count++] = module_file;
            added = 1;
            r = 0;
        }
        if (r == 0 && mark) *mark = (struct gd_watch_mark){ module_file, added, f->watch_events, f->events_heard };
        if (r == 0) *all = f->watch_events |= events;
        break;
    }
    pthread_mutex_unlock(&files_lock);
    return r;
}

void gd_file_unwatch(uint32_t handle, const struct gd_watch_mark *mark) {
    pthread_mutex_lock(&files_lock);
    for (struct entry *e = table[handle % BUCKETS]; e; e = e->next) {
        struct gd_file *f = e->file;
        if (f->handle != handle) continue;
        if (f->events_heard != mark->heard) break;
        f->watch_events = mark->events_before;
        for (int i = 0; mark->added && i < f->watcher_count; i++) {
            if (f->watchers[i] != mark->module_file) continue;
            f->watchers[i] = f->watchers[--f->watcher_count];
            break;
        }
        break;
    }
    pthread_mutex_unlock(&files_lock);
}

/* The backend's readiness of a handle: each module file that waited for it hears once. */
void gd_file_event(uint32_t handle, short revents) {
    uint64_t waiting[8];
    int n = 0;
    pthread_mutex_lock(&files_lock);
    for (struct entry *e = table[handle % BUCKETS]; e; e = e->next) {
        if (e->file->handle != handle) continue;
        n = e->file->watcher_count;
        for (int i = 0; i < n; i++) waiting[i] = e->file->watchers[i];
        e->file->watcher_count = 0;
        e->file->watch_events = 0;   /* the backend's watch fired: it holds none now */
        e->file->events_heard++;
        break;
    }
    pthread_mutex_unlock(&files_lock);
    for (int i = 0; i < n; i++) {
        struct pdk_notify notify = { waiting[i], (uint16_t)revents, 0 };
        if (ioctl(gd.control, PDK_NOTIFY, &notify) != 0 && errno != ENOENT && errno != EBADF)
            gd_log("notify file %llu: %m", (unsigned long long)waiting[i]);
    }
}

/* PD_SHARE: a backend on this machine that shares mappings hands the device's own open file, which the
 * module maps into the caller itself; any other answers ENODEV (TCP, or no --share-mappings), once. */
int gd_file_shared(struct gd_file *f) {
    if (gd.lost) { errno = ENODEV; return -1; }
    return pd_file_shared(gd.connection, f->handle, &f->shared, &files_lock);
}
