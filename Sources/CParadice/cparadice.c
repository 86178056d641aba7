#define _GNU_SOURCE
#include <sys/uio.h>
#include "cparadice.h"

ssize_t paradice_read_process(pid_t pid, void *local, unsigned long remote, size_t length) {
    struct iovec l = { local, length };
    struct iovec r = { (void *)remote, length };
    return process_vm_readv(pid, &l, 1, &r, 1, 0);
}

ssize_t paradice_write_process(pid_t pid, const void *local, unsigned long remote, size_t length) {
    struct iovec l = { (void *)local, length };
    struct iovec r = { (void *)remote, length };
    return process_vm_writev(pid, &l, 1, &r, 1, 0);
}
