/* Mirrors of device mappings a backend on another machine holds: the program maps private memory; the
 * backend's plug-in names the sync points, at which bytes travel in ioctl requests and replies. Each
 * mirror keeps a shadow of what the device was last known to hold, so that only the pages the program
 * changed travel to the device (at a sync point, and when a writable shared mirror is unmapped, as a
 * real mapping's stores would have reached the device). */
#include "shim.h"
#include "parse.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIRRORS 256
#define PAGE 4096
static struct mirror {
    uint8_t *address;
    size_t length;
    uint32_t id;
    pid_t owner;
    uint8_t *shadow;          /* the device's bytes as last sent or received */
    int writeback;            /* MAP_SHARED and writable: changes reach the device at munmap */
    uint32_t handle;          /* the file it maps */
} mirrors[MIRRORS];
static pthread_mutex_t mirrors_lock = PTHREAD_MUTEX_INITIALIZER;

/* The mirror `id` of file `handle` this process holds, when [offset, offset + length) lies inside it. */
static struct mirror *find(uint32_t handle, uint32_t id, uint64_t offset, uint64_t length) {
    for (int i = 0; i < MIRRORS; i++)
        if (mirrors[i].address && mirrors[i].id == id && mirrors[i].handle == handle && mirrors[i].owner == getpid()
            && offset <= mirrors[i].length && length <= mirrors[i].length - offset)
            return &mirrors[i];
    return NULL;
}

/* Copies `count` (pd_mapping_range, bytes) entries, checked by pd_parse_mapping_ranges, into the mirrors of
 * file `handle` (one unmapped since is skipped). */
void pd_mirror_receive(uint32_t handle, const uint8_t *p, uint32_t count) {
    for (uint32_t i = 0; i < count; i++) {
        struct pd_mapping_range m;
        const uint8_t *bytes;
        p = pd_mapping_entry(p, &m, &bytes);
        pthread_mutex_lock(&mirrors_lock);
        struct mirror *at = find(handle, m.mapping, m.offset, m.length);
        if (at) {
            memcpy(at->address + m.offset, bytes, m.length);
            memcpy(at->shadow + m.offset, bytes, m.length);
        }
        pthread_mutex_unlock(&mirrors_lock);
    }
}

size_t pd_mirror_spans(uint32_t handle, struct pd_mirror_span *out, size_t max) {
    size_t n = 0;
    pthread_mutex_lock(&mirrors_lock);
    for (int i = 0; i < MIRRORS && n < max; i++)
        if (mirrors[i].address && mirrors[i].handle == handle && mirrors[i].owner == getpid())
            out[n++] = (struct pd_mirror_span){ mirrors[i].id, mirrors[i].length };
    pthread_mutex_unlock(&mirrors_lock);
    return n;
}

/* Appends, as pd_mapping_range + bytes entries, the runs of pages in [offset, offset+length) of mirror
 * `id` that differ from its shadow, and takes them as the device's. Returns the number of entries. */
uint32_t pd_mirror_changes(struct pd_buffer *b, uint32_t handle, uint32_t id, uint64_t offset, uint64_t length) {
    uint32_t entries = 0;
    pthread_mutex_lock(&mirrors_lock);
    struct mirror *m = find(handle, id, offset, length);
    uint64_t end = offset + length;
    for (uint64_t at = offset; m && at < end;) {
        uint64_t next = (at / PAGE + 1) * PAGE < end ? (at / PAGE + 1) * PAGE : end;
        if (memcmp(m->address + at, m->shadow + at, next - at) == 0) { at = next; continue; }
        uint64_t run = at;
        while (next < end) {
            uint64_t after = next + PAGE < end ? next + PAGE : end;
            if (memcmp(m->address + next, m->shadow + next, after - next) == 0) break;
            next = after;
        }
        struct pd_mapping_range r = { id, (uint32_t)(next - run), run };
        pd_buffer_append(b, &r, sizeof r);
        pd_buffer_append(b, m->address + run, next - run);
        pd_buffer_pad(b);
        memcpy(m->shadow + run, m->address + run, next - run);
        entries++;
        at = next;
    }
    pthread_mutex_unlock(&mirrors_lock);
    return entries;
}

/* pd_mirror_changes for every mirror of one file, whole. */
uint32_t pd_mirror_file_changes(struct pd_buffer *b, uint32_t handle) {
    uint32_t entries = 0;
    for (int i = 0; i < MIRRORS; i++) {
        pthread_mutex_lock(&mirrors_lock);
        int ours = mirrors[i].address && mirrors[i].handle == handle && mirrors[i].owner == getpid();
        uint32_t id = mirrors[i].id;
        uint64_t length = mirrors[i].length;
        pthread_mutex_unlock(&mirrors_lock);
        if (ours) entries += pd_mirror_changes(b, handle, id, 0, length);
    }
    return entries;
}

void *pd_mirror_map(struct pd_file *f, void *address, size_t length, int protection, int flags, off_t offset,
                    void *(*real_mmap)(void *, size_t, int, int, int, off_t)) {
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof(struct pd_mmap));
    struct pd_mmap request = { (uint64_t)offset, length, protection, flags };
    pd_buffer_append(&b, &request, sizeof request);
    struct pd_frame reply = { .descriptor = -1 };
    int r = pd_call(PD_MMAP, 0, f->handle, &b, &reply);
    pd_buffer_free(&b);
    if (r != 0) return MAP_FAILED;
    const uint8_t *data;
    size_t n;
    int64_t id = pd_reply_result(&reply, &data, &n);
    int e = errno;
    if (id < 0) { pd_frame_free(&reply); errno = e; return MAP_FAILED; }
    /* Writable for the updates the backend sends, whatever the program asked. */
    uint8_t *local = real_mmap(address, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (flags & MAP_FIXED), -1, 0);
    uint8_t *shadow = local == MAP_FAILED ? NULL : calloc(1, length);
    if (local == MAP_FAILED || !shadow) { free(shadow); pd_frame_free(&reply); return MAP_FAILED; }
    pthread_mutex_lock(&mirrors_lock);
    for (int i = 0; i < MIRRORS; i++) {
        if (mirrors[i].address == NULL || mirrors[i].owner != getpid()) {
            if (mirrors[i].owner == getpid()) free(mirrors[i].shadow);
            int writeback = (flags & MAP_SHARED) && (protection & PROT_WRITE);
            mirrors[i] = (struct mirror){ local, length, (uint32_t)id, getpid(), shadow, writeback, f->handle };
            shadow = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&mirrors_lock);
    free(shadow);   /* no free slot: a mirror that is never synced */
    /* What the device already holds there, when the plug-in says the mirror starts with it: ranges of
       this new mapping only. */
    uint32_t count;
    const uint8_t *ranges;
    const char *why;
    if (pd_parse_mmap_contents(data, n, (uint32_t)id, length, &count, &ranges, &why) == 0)
        pd_mirror_receive(f->handle, ranges, count);
    else
        pd_log("paradice: mmap: %s", why);
    pd_frame_free(&reply);
    return local;
}

/* 1 when address starts a mirror (its backend mapping is released), 0 otherwise. */
int pd_mirror_unmap(void *address) {
    uint32_t id = 0, handle = 0;
    size_t length = 0;
    int writeback = 0;
    pthread_mutex_lock(&mirrors_lock);
    for (int i = 0; i < MIRRORS; i++) {
        if (mirrors[i].address == address && mirrors[i].owner == getpid()) {
            id = mirrors[i].id;
            length = mirrors[i].length;
            writeback = mirrors[i].writeback;
            handle = mirrors[i].handle;
            break;
        }
    }
    pthread_mutex_unlock(&mirrors_lock);
    if (!id) return 0;
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof(struct pd_munmap) + sizeof(struct pd_mapping_count));
    struct pd_munmap request = { id, 0 };
    pd_buffer_append(&b, &request, sizeof request);
    /* The program's stores since the last sync reach the device before the mapping goes. */
    size_t at = b.length;
    struct pd_mapping_count count = { 0, 0 };
    pd_buffer_append(&b, &count, sizeof count);
    if (writeback) count.count = pd_mirror_changes(&b, handle, id, 0, length);
    memcpy(b.data + at, &count, sizeof count);
    pthread_mutex_lock(&mirrors_lock);
    for (int i = 0; i < MIRRORS; i++) {
        if (mirrors[i].address == address && mirrors[i].owner == getpid()) {
            mirrors[i].address = NULL;
            free(mirrors[i].shadow);
            mirrors[i].shadow = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&mirrors_lock);
    struct pd_frame reply = { .descriptor = -1 };
    if (pd_call(PD_MUNMAP, 0, 0, &b, &reply) == 0) pd_frame_free(&reply);
    pd_buffer_free(&b);
    return 1;
}
