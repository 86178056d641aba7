#define _GNU_SOURCE
#include <sys/uio.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <fcntl.h>
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

#include <sys/ioctl.h>

long paradice_ioctl(int fd, unsigned long command, unsigned long argument) {
    return ioctl(fd, command, argument);
}

int paradice_accept(int fd, void *address, unsigned int *length) {
    socklen_t l = *length;
    int r = accept4(fd, (struct sockaddr *)address, &l, SOCK_CLOEXEC);
    *length = l;
    return r;
}

int paradice_peer_credentials(int fd, int *pid, unsigned int *uid) {
    struct ucred cred;
    socklen_t size = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &size) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    return 0;
}

int paradice_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }
int paradice_o_direct(void) { return O_DIRECT; }
int paradice_o_path(void) { return O_PATH; }
