/* Mirrors of device mappings a backend on another machine holds: the program maps private memory; the
 * backend's plug-in names the sync points, at which bytes travel in ioctl requests and replies. */
#include "shim.h"
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIRRORS 256
static struct mirror {
    uint8_t *address;
    size_t length;
    uint32_t id;
    pid_t owner;
} mirrors[MIRRORS];
static pthread_mutex_t mirrors_lock = PTHREAD_MUTEX_INITIALIZER;

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
    int64_t id = pd_reply_result(&reply, NULL, NULL);
    int e = errno;
    pd_frame_free(&reply);
    if (id < 0) { errno = e; return MAP_FAILED; }
    /* Writable for the updates the backend sends, whatever the program asked. */
    uint8_t *local = real_mmap(address, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (flags & MAP_FIXED), -1, 0);
    if (local == MAP_FAILED) return MAP_FAILED;
    pthread_mutex_lock(&mirrors_lock);
    for (int i = 0; i < MIRRORS; i++) {
        if (mirrors[i].address == NULL || mirrors[i].owner != getpid()) {
            mirrors[i] = (struct mirror){ local, length, (uint32_t)id, getpid() };
            break;
        }
    }
    pthread_mutex_unlock(&mirrors_lock);
    return local;
}

/* 1 when address starts a mirror (its backend mapping is released), 0 otherwise. */
int pd_mirror_unmap(void *address) {
    uint32_t id = 0;
    pthread_mutex_lock(&mirrors_lock);
    for (int i = 0; i < MIRRORS; i++) {
        if (mirrors[i].address == address && mirrors[i].owner == getpid()) {
            id = mirrors[i].id;
            mirrors[i].address = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&mirrors_lock);
    if (!id) return 0;
    struct pd_buffer b;
    pd_buffer_init(&b, sizeof(struct pd_munmap));
    struct pd_munmap request = { id, 0 };
    pd_buffer_append(&b, &request, sizeof request);
    struct pd_frame reply = { .descriptor = -1 };
    if (pd_call(PD_MUNMAP, 0, 0, &b, &reply) == 0) pd_frame_free(&reply);
    pd_buffer_free(&b);
    return 1;
}

/* The bytes of mirror `id` at [offset, offset+length), or NULL when out of range. */
uint8_t *pd_mirror_bytes(uint32_t id, uint64_t offset, uint32_t length) {
    uint8_t *at = NULL;
    pthread_mutex_lock(&mirrors_lock);
    for (int i = 0; i < MIRRORS; i++)
        if (mirrors[i].address && mirrors[i].id == id && mirrors[i].owner == getpid() && offset + length <= mirrors[i].length)
            at = mirrors[i].address + offset;
    pthread_mutex_unlock(&mirrors_lock);
    return at;
}
