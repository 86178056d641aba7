#define _GNU_SOURCE
#include <sys/uio.h>
#include <malloc.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <string.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
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

int paradice_peer_ucred(int fd, int *pid, unsigned int *uid, unsigned int *gid) {
    struct ucred cred;
    socklen_t size = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &size) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int paradice_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }
int paradice_o_direct(void) { return O_DIRECT; }
int paradice_o_path(void) { return O_PATH; }

int paradice_send_with_descriptor(int sock, const void *bytes, size_t length, int descriptor) {
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = { (void *)bytes, length };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &descriptor, sizeof(int));
    ssize_t sent;
    do { sent = sendmsg(sock, &message, MSG_NOSIGNAL); } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -1;
    const char *rest = (const char *)bytes + sent;
    size_t left = length - (size_t)sent;
    while (left > 0) {
        ssize_t k = send(sock, rest, left, MSG_NOSIGNAL);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        rest += k;
        left -= (size_t)k;
    }
    return 0;
}

long paradice_recv_with_descriptor(int sock, void *bytes, size_t length, int *descriptor) {
    return paradice_recv_with_descriptor_flags(sock, bytes, length, descriptor, 0);
}

long paradice_recv_with_descriptor_flags(int sock, void *bytes, size_t length, int *descriptor, int flags) {
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { bytes, length };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    *descriptor = -1;
    ssize_t n = recvmsg(sock, &message, MSG_CMSG_CLOEXEC | flags);
    if (n > 0) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(descriptor, CMSG_DATA(c), sizeof(int));
    }
    return n;
}

int paradice_fix_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

int paradice_finit_module(int fd) { return (int)syscall(SYS_finit_module, fd, "", 0); }

/* The system calls themselves: in a frontend, fcntl and close are the program's wrapped ones. */
int paradice_descriptor_out_of_the_way(int fd) {
    struct rlimit limit;
    if (fd < 0 || getrlimit(RLIMIT_NOFILE, &limit) != 0) return fd;
    long top = limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > 65536 ? 65536 : (long)limit.rlim_cur;
    for (long target = top - 1; target > fd && target >= top - 16; target--) {
        if (syscall(SYS_fcntl, (int)target, F_GETFD) >= 0 || errno != EBADF) continue;   /* taken */
        long moved = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, target);
        if (moved < 0) return fd;
        syscall(SYS_close, fd);
        return (int)moved;
    }
    return fd;
}
