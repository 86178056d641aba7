/* ioctl on a forwarded file: the frontend core executes the backend's memory plan over the program's own
 * memory; descriptor numbers in arguments and results are this process's forwarded descriptors. */
#include "shim.h"
#include <errno.h>
#include <fcntl.h>

static int handle_for(void *unused, int64_t fd, uint32_t *handle) {
    (void)unused;
    if (fd < 0 || fd > INT32_MAX) return -1;
    return pd_handle_for_fd((int)fd, handle);
}

static int64_t adopt(void *unused, uint32_t handle) {
    (void)unused;
    return pd_adopt_handle(handle, O_RDWR);
}

static const struct pd_descriptors forwarded_descriptors = { NULL, 0, handle_for, adopt };

long pd_ioctl(struct pd_file *f, unsigned long command, unsigned long argument) {
    if (!pd_usable(f)) return -1;
    struct pd_target target = { &pd_conn, f->handle, &f->lent, &pd_self_memory, &forwarded_descriptors };
    int64_t result = pd_file_ioctl(&target, (uint32_t)command, argument, NULL);
    int e = errno;
    pd_rearm(f);
    errno = e;
    return (long)result;
}
