/* The caller's memory and descriptors for one request: every byte and descriptor is reached through
 * PDK_ACCESS, which the module carries out in the waiting caller's own context. Mirrors are not the
 * caller's memory: they live in the daemon's views of module areas (areas.c), reached only through
 * `local`, so that no argument address the caller picks can reach a view, nor a view address the caller. */
#define _GNU_SOURCE
#include "guestd.h"
#include <errno.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int copy(struct gd_call *call, uint32_t kind, uint64_t address, void *buffer, size_t length) {
    for (size_t done = 0; done < length;) {
        size_t n = length - done < PDK_MAX_ACCESS ? length - done : PDK_MAX_ACCESS;
        struct pdk_access a = { .request = call->request.id, .kind = kind, .address = address + done, .length = n,
                                .buffer = (uint64_t)(uintptr_t)((uint8_t *)buffer + done) };
        if (address + done < address) { errno = EFAULT; return -1; }
        if (ioctl(gd.control, PDK_ACCESS, &a) != 0) return -1;
        done += n;
    }
    return 0;
}

static int caller_read(void *context, uint64_t address, void *into, size_t length) {
    return copy(context, PDK_COPY_FROM_CALLER, address, into, length);
}

static int caller_write(void *context, uint64_t address, const void *from, size_t length) {
    return copy(context, PDK_COPY_TO_CALLER, address, (void *)from, length);
}

struct pd_memory gd_caller_memory(struct gd_call *call) {
    return (struct pd_memory){ call, caller_read, caller_write, gd_view_local, NULL, NULL };
}

/* The daemon handle of the caller's descriptor, when it is a file of this control file's nodes. */
static int handle_for(void *context, int64_t fd, uint32_t *handle) {
    struct gd_call *call = context;
    if (fd < 0 || fd > INT32_MAX) return -1;
    struct pdk_access a = { .request = call->request.id, .kind = PDK_FILE_HANDLE, .address = (uint64_t)fd };
    if (ioctl(gd.control, PDK_ACCESS, &a) != 0) return -1;
    if (a.value == 0 || a.value > UINT32_MAX) return -1;
    *handle = (uint32_t)a.value;
    return 0;
}

/* A backend file an ioctl made becomes a new open file of the same node in the caller. */
static int64_t adopt(void *context, uint32_t handle) {
    struct gd_call *call = context;
    struct gd_file *f = gd_file_add(handle, call->request.cookie, 0);
    struct pdk_access a = { .request = call->request.id, .kind = PDK_NEW_FILE, .value = handle };
    if (!f || ioctl(gd.control, PDK_ACCESS, &a) != 0) {
        int e = f ? errno : ENOMEM;
        struct gd_file *held = gd_file_remove(handle);
        if (held) gd_file_put(held);
        int ignored;
        (void)pd_file_simple(gd.connection, handle, PD_CLOSE, NULL, 0, NULL, 0, &ignored);
        errno = e;
        return -1;
    }
    struct gd_node *node = gd_node(call->request.cookie);
    if (node) atomic_fetch_add(&node->open_files, 1);
    gd.dirty = 1;
    return (int64_t)a.value;
}

struct pd_descriptors gd_caller_descriptors(struct gd_call *call) {
    return (struct pd_descriptors){ call, 0, handle_for, adopt };
}
