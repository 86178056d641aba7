/* Mirrors of device mappings a backend on another machine holds: the guest maps private memory; the
 * backend's plug-in names the sync points, at which bytes travel in ioctl requests and replies. Each
 * mirror keeps a shadow of what the device was last known to hold, so that only the pages the guest
 * changed travel to the device (at a sync point, and when a writable shared mirror is unmapped, as a
 * real mapping's stores would have reached the device). The mirror's bytes are the guest's, reached
 * through its memory interface. */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

/* Under the mirrors lock: mirror `id` of file `handle` this process holds, when [offset, offset + length)
 * lies inside it. */
static struct pd_mirror *find(struct pd_connection *c, uint32_t handle, uint32_t id, uint64_t offset, uint64_t length) {
    pid_t self = getpid();
    for (int i = 0; i < PD_MIRRORS; i++) {
        struct pd_mirror *m = &c->mirrors[i];
        if (m->address && m->id == id && m->handle == handle && m->owner == self && offset <= m->length
            && length <= m->length - offset)
            return m;
    }
    return NULL;
}

void pd_mirror_receive(struct pd_connection *c, const struct pd_memory *memory, uint32_t handle, const uint8_t *p,
                       uint32_t count) {
    for (uint32_t i = 0; i < count; i++) {
        struct pd_mapping_range m;
        const uint8_t *bytes;
        p = pd_mapping_entry(p, &m, &bytes);
        pthread_mutex_lock(&c->mirrors_lock);
        struct pd_mirror *at = find(c, handle, m.mapping, m.offset, m.length);
        if (at && m.length) {
            /* A memory with `local` holds its mirrors there, apart from the call's argument memory. */
            uint8_t *here = memory->local ? memory->local(memory->context, at->address + m.offset, m.length) : NULL;
            if (here) memcpy(here, bytes, m.length);
            else if (!memory->local) (void)memory->write(memory->context, at->address + m.offset, bytes, m.length);
            memcpy(at->shadow + m.offset, bytes, m.length);
        }
        pthread_mutex_unlock(&c->mirrors_lock);
    }
}

size_t pd_mirror_spans(struct pd_connection *c, uint32_t handle, struct pd_mirror_span *out, size_t max) {
    size_t n = 0;
    pid_t self = getpid();
    pthread_mutex_lock(&c->mirrors_lock);
    for (int i = 0; i < PD_MIRRORS && n < max; i++)
        if (c->mirrors[i].address && c->mirrors[i].handle == handle && c->mirrors[i].owner == self)
            out[n++] = (struct pd_mirror_span){ c->mirrors[i].id, c->mirrors[i].length };
    pthread_mutex_unlock(&c->mirrors_lock);
    return n;
}

/* The guest's bytes of [offset, end) of mirror m: in place when the memory has `local` (then only there:
 * a mirror address is never read as argument memory), else a copy (*copy, to free). NULL when they cannot
 * be read. */
static const uint8_t *current(const struct pd_memory *memory, struct pd_mirror *m, uint64_t offset, uint64_t end,
                              uint8_t **copy) {
    *copy = NULL;
    if (memory->local) return memory->local(memory->context, m->address + offset, end - offset);
    *copy = malloc(end - offset ? end - offset : 1);
    if (!*copy) return NULL;
    if (end > offset && memory->read(memory->context, m->address + offset, *copy, end - offset) != 0) {
        free(*copy);
        *copy = NULL;
        return NULL;
    }
    return *copy;
}

uint32_t pd_mirror_changes(struct pd_connection *c, const struct pd_memory *memory, struct pd_buffer *b,
                           uint32_t handle, uint32_t id, uint64_t offset, uint64_t length) {
    uint32_t entries = 0;
    pthread_mutex_lock(&c->mirrors_lock);
    struct pd_mirror *m = find(c, handle, id, offset, length);
    uint64_t end = offset + length;
    uint8_t *copy = NULL;
    const uint8_t *now = m ? current(memory, m, offset, end, &copy) : NULL;   /* now[0] is offset */
    for (uint64_t at = offset; now && at < end;) {
        uint64_t next = (at / PAGE + 1) * PAGE < end ? (at / PAGE + 1) * PAGE : end;
        if (memcmp(now + (at - offset), m->shadow + at, next - at) == 0) { at = next; continue; }
        uint64_t run = at;
        while (next < end) {
            uint64_t after = next + PAGE < end ? next + PAGE : end;
            if (memcmp(now + (next - offset), m->shadow + next, after - next) == 0) break;
            next = after;
        }
        struct pd_mapping_range r = { id, (uint32_t)(next - run), run };
        pd_buffer_append(b, &r, sizeof r);
        pd_buffer_append(b, now + (run - offset), next - run);
        pd_buffer_pad(b);
        memcpy(m->shadow + run, now + (run - offset), next - run);
        entries++;
        at = next;
    }
    free(copy);
    pthread_mutex_unlock(&c->mirrors_lock);
    return entries;
}

uint32_t pd_mirror_file_changes(struct pd_connection *c, const struct pd_memory *memory, struct pd_buffer *b,
                                uint32_t handle) {
    uint32_t entries = 0;
    pid_t self = getpid();
    for (int i = 0; i < PD_MIRRORS; i++) {
        pthread_mutex_lock(&c->mirrors_lock);
        int ours = c->mirrors[i].address && c->mirrors[i].handle == handle && c->mirrors[i].owner == self;
        uint32_t id = c->mirrors[i].id;
        uint64_t length = c->mirrors[i].length;
        pthread_mutex_unlock(&c->mirrors_lock);
        if (ours) entries += pd_mirror_changes(c, memory, b, handle, id, 0, length);
    }
    return entries;
}

uint64_t pd_file_map(const struct pd_target *t, uint64_t hint, uint64_t length, int protection, int flags,
                     int64_t offset) {
    struct pd_connection *c = t->connection;
    const struct pd_memory *memory = t->memory;
    if (!memory->map) { errno = ENODEV; return PD_NO_ADDRESS; }
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof(struct pd_mmap));
    struct pd_mmap request = { (uint64_t)offset, length, protection, flags };
    pd_buffer_append(&b, &request, sizeof request);
    struct pd_frame reply = { .descriptor = -1 };
    int r = pd_conn_call(c, PD_MMAP, 0, t->handle, &b, &reply);
    pd_buffer_free(&b);
    if (r != 0) return PD_NO_ADDRESS;
    const uint8_t *data;
    size_t n;
    int64_t id = pd_reply_result(&reply, &data, &n);
    int e = errno;
    if (id < 0) { pd_frame_release(c, &reply); errno = e; return PD_NO_ADDRESS; }
    /* Writable for the updates the backend sends, whatever the guest asked. */
    uint64_t local = memory->map(memory->context, hint, length, (flags & MAP_FIXED) != 0);
    uint8_t *shadow = local == PD_NO_ADDRESS ? NULL : calloc(1, length ? length : 1);
    if (local == PD_NO_ADDRESS || !shadow) {
        e = local == PD_NO_ADDRESS ? errno : ENOMEM;
        if (local != PD_NO_ADDRESS && memory->unmap) memory->unmap(memory->context, local, length);
        free(shadow);
        pd_frame_release(c, &reply);
        errno = e;
        return PD_NO_ADDRESS;
    }
    pid_t self = getpid();
    pthread_mutex_lock(&c->mirrors_lock);
    for (int i = 0; i < PD_MIRRORS; i++) {
        struct pd_mirror *m = &c->mirrors[i];
        if (m->address == 0 || m->owner != self) {
            if (m->owner == self) free(m->shadow);   /* a parent's, inherited across fork, stays allocated */
            int writeback = (flags & MAP_SHARED) && (protection & PROT_WRITE);
            *m = (struct pd_mirror){ local, length, (uint32_t)id, t->handle, self, shadow, writeback };
            shadow = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&c->mirrors_lock);
    free(shadow);   /* no free slot: a mirror that is never synced */
    /* What the device already holds there, when the plug-in says the mirror starts with it: ranges of
       this new mapping only. */
    uint32_t count;
    const uint8_t *ranges;
    const char *why;
    if (pd_parse_mmap_contents(data, n, (uint32_t)id, length, &count, &ranges, &why) == 0)
        pd_mirror_receive(c, memory, t->handle, ranges, count);
    else
        pd_conn_log(c, "paradice: mmap: %s", why);
    pd_frame_release(c, &reply);
    return local;
}

int pd_file_unmap(struct pd_connection *c, const struct pd_memory *memory, uint64_t address) {
    uint32_t id = 0, handle = 0;
    uint64_t length = 0;
    int writeback = 0;
    pid_t self = getpid();
    pthread_mutex_lock(&c->mirrors_lock);
    for (int i = 0; i < PD_MIRRORS; i++) {
        if (c->mirrors[i].address == address && c->mirrors[i].owner == self) {
            id = c->mirrors[i].id;
            length = c->mirrors[i].length;
            writeback = c->mirrors[i].writeback;
            handle = c->mirrors[i].handle;
            break;
        }
    }
    pthread_mutex_unlock(&c->mirrors_lock);
    if (!id) return 0;
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof(struct pd_munmap) + sizeof(struct pd_mapping_count));
    struct pd_munmap request = { id, 0 };
    pd_buffer_append(&b, &request, sizeof request);
    /* The guest's stores since the last sync reach the device before the mapping goes. */
    size_t at = b.length;
    struct pd_mapping_count count = { 0, 0 };
    pd_buffer_append(&b, &count, sizeof count);
    if (writeback) count.count = pd_mirror_changes(c, memory, &b, handle, id, 0, length);
    memcpy(b.data + at, &count, sizeof count);
    pthread_mutex_lock(&c->mirrors_lock);
    for (int i = 0; i < PD_MIRRORS; i++) {
        if (c->mirrors[i].address == address && c->mirrors[i].owner == self) {
            c->mirrors[i].address = 0;
            free(c->mirrors[i].shadow);
            c->mirrors[i].shadow = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&c->mirrors_lock);
    struct pd_frame reply = { .descriptor = -1 };
    if (pd_conn_call(c, PD_MUNMAP, 0, 0, &b, &reply) == 0) pd_frame_release(c, &reply);
    pd_buffer_free(&b);
    return 1;
}
