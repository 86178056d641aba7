/* Byte streams under the frames, and dialing a backend's address. */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include "cparadice.h"
#include "paradice_ring.h"
#include "paradice_spin.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* close(2) itself: inside a program whose close the frontend wraps, the wrapper is not for the core. */
static void close_descriptor(int fd) { syscall(SYS_close, fd); }

/* ---- a socket ---- */

static long socket_send(struct pd_stream *s, const void *bytes, size_t n) { return send(s->fd, bytes, n, MSG_NOSIGNAL); }

/* A receive that sleeps at once. A descriptor, when one is passed, comes with the first byte of its frame. */
static long recv_sleeping(struct pd_stream *s, void *bytes, size_t n, int *descriptor) {
    return descriptor ? paradice_recv_with_descriptor(s->fd, bytes, n, descriptor) : recv(s->fd, bytes, n, 0);
}

/* The receive spins before it sleeps (paradice_spin.h): on a virtual CPU that halted, a reply that wakes a
 * sleeping reader costs it tens of µs. */
static long socket_recv(struct pd_stream *s, void *bytes, size_t n, int *descriptor) {
    if (!s->state) return recv_sleeping(s, bytes, n, descriptor);
    return paradice_recv_spinning(s->fd, bytes, n, descriptor, s->state);
}

static void socket_shutdown(struct pd_stream *s) { shutdown(s->fd, SHUT_RDWR); }

/* The child's copy of an inherited socket closes without touching the parent's. */
static void socket_close(struct pd_stream *s) {
    close_descriptor(s->fd);
    free(s->state);
    s->state = NULL;
}

static const struct pd_stream_ops socket_ops = { socket_send, socket_recv, socket_shutdown, socket_close };

/* The spin's state is shared by the stream's copies (each call takes one), as the reading is: one thread
 * at a time. Without memory for it, receives sleep at once. */
void pd_stream_socket(struct pd_stream *s, int fd) {
    struct paradice_spin *spin = malloc(sizeof *spin);
    if (spin) paradice_spin_init(spin, PARADICE_SPIN_CEILING_NS);
    *s = (struct pd_stream){ .ops = &socket_ops, .fd = fd, .state = spin };
}

/* ---- QEMU's chardev socket of a virtio-serial port (on the host) ---- */

/* A socket whose receives sleep at once, and which can connect again: a client that connects within a
 * moment of the last one's close sometimes has its first frame lost on the way to the port in the VM
 * (docs/transports.md, "serial"). The state is the socket's path. */
static void chardev_close(struct pd_stream *s) {
    close_descriptor(s->fd);
    free(s->state);
    s->state = NULL;
}

static int dial_unix(const char *path);

static int chardev_redial(struct pd_stream *s) {
    int fd = paradice_descriptor_out_of_the_way(dial_unix(s->state));
    if (fd < 0) return -1;
    close_descriptor(s->fd);
    s->fd = fd;
    return 0;
}

static const struct pd_stream_ops chardev_ops = { socket_send, recv_sleeping, socket_shutdown, chardev_close, chardev_redial };

/* ---- a character device (a virtio-serial port in a VM) ---- */

/* Read and written, as send and recv are for sockets; the system calls themselves, as close_descriptor's:
 * a frontend may wrap read and write. No descriptor travels. A device has no shutdown: a thread blocked
 * in recv stays there until the port's host side sends or goes away. */
static long device_send(struct pd_stream *s, const void *bytes, size_t n) { return syscall(SYS_write, s->fd, bytes, n); }

static long device_recv(struct pd_stream *s, void *bytes, size_t n, int *descriptor) {
    if (descriptor) *descriptor = -1;
    return syscall(SYS_read, s->fd, bytes, n);
}

static void device_shutdown(struct pd_stream *s) { (void)s; }

static void device_close(struct pd_stream *s) { close_descriptor(s->fd); }

static const struct pd_stream_ops device_ops = { device_send, device_recv, device_shutdown, device_close };
/* ---- a shared-memory ring (paradice_ring.h), set up over a unix socket ---- */

static long ring_send(struct pd_stream *s, const void *bytes, size_t n) { return paradice_ring_send(s->state, bytes, n); }

static long ring_recv(struct pd_stream *s, void *bytes, size_t n, int *descriptor) {
    struct paradice_ring *r = s->state;
    uint32_t position = r->tail;
    long k = paradice_ring_recv(r, bytes, n);
    /* A descriptor comes over the setup socket, named by the position of its frame's first byte. */
    if (descriptor) *descriptor = k > 0 ? paradice_ring_take_descriptor(r, position) : -1;
    return k;
}

static void ring_shutdown(struct pd_stream *s) { paradice_ring_shutdown(s->state); }

/* Unmaps and closes this process's copies: the region is not written, so a parent's stream goes on. */
static void ring_close(struct pd_stream *s) {
    paradice_ring_close(s->state);
    free(s->state);
}

static const struct pd_stream_ops ring_ops = { ring_send, ring_recv, ring_shutdown, ring_close };

int pd_stream_ring(struct pd_stream *s, int setup_fd) {
    struct paradice_ring *r = malloc(sizeof *r);
    if (!r) { close_descriptor(setup_fd); errno = ENOMEM; return -1; }
    if (paradice_ring_accept_offer(r, setup_fd) != 0) {
        int e = errno;
        free(r);
        close_descriptor(setup_fd);
        errno = e;
        return -1;
    }
    *s = (struct pd_stream){ .ops = &ring_ops, .fd = -1, .state = r };
    return 0;
}

/* A region shared with a VM (ivshmem.c): `path` is the host's file, the guest's PCI resource file, or "auto". */
static int stream_ivshmem(struct pd_stream *s, const char *path) {
    struct paradice_ring *r = malloc(sizeof *r);
    if (!r) { errno = ENOMEM; return -1; }
    if (paradice_ivshmem_connect(r, path) != 0) {
        int e = errno;
        free(r);
        errno = e;
        return -1;
    }
    *s = (struct pd_stream){ .ops = &ring_ops, .fd = -1, .state = r };
    return 0;
}

/* ---- dialing ---- */

static int dial_unix(const char *path) {
    if (path[0] == '/' && path[1] == '/') path += 2;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { int e = errno; close_descriptor(fd); errno = e; return -1; }
    return fd;
}

static int dial_tcp(const char *rest) {
    char host[256];
    const char *colon = strrchr(rest, ':');
    if (!colon || (size_t)(colon - rest) >= sizeof host) { errno = EINVAL; return -1; }
    memcpy(host, rest, colon - rest);
    host[colon - rest] = 0;
    char *h = host;
    if (h[0] == '[') { h++; size_t n = strlen(h); if (n) h[n - 1] = 0; }
    char port[16];
    snprintf(port, sizeof port, "%s", colon + 1);
    size_t plen = strlen(port);
    if (plen && port[plen - 1] == '/') port[plen - 1] = 0;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *list;
    if (getaddrinfo(h, port, &hints, &list) != 0) { errno = EHOSTUNREACH; return -1; }
    int fd = -1, e = ECONNREFUSED;
    for (struct addrinfo *a = list; a; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) { e = errno; continue; }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            break;
        }
        e = errno;
        close_descriptor(fd);
        fd = -1;
    }
    freeaddrinfo(list);
    if (fd < 0) errno = e;
    return fd;
}

/* A decimal number that fits in 32 bits and is not 0xffffffff (VMADDR_CID_ANY, VMADDR_PORT_ANY). */
static int parse_u32(const char *s, size_t n, uint32_t *out) {
    if (n == 0 || n > 10) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v >= 0xffffffffu) return -1;
    *out = (uint32_t)v;
    return 0;
}

/* vsock://CID:PORT (a connection names its peer's CID). */
static int dial_vsock(const char *rest) {
    if (rest[0] == '/' && rest[1] == '/') rest += 2;
    const char *colon = strchr(rest, ':');
    size_t plen = colon ? strlen(colon + 1) : 0;
    if (plen && colon[plen] == '/') plen--;
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK };
    uint32_t cid, port;
    if (!colon || parse_u32(rest, (size_t)(colon - rest), &cid) != 0 || parse_u32(colon + 1, plen, &port) != 0) {
        errno = EINVAL;
        return -1;
    }
    addr.svm_cid = cid;
    addr.svm_port = port;
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { int e = errno; close_descriptor(fd); errno = e; return -1; }
    return fd;
}

/* serial:PATH: a virtio-serial port's character device (in a VM), or QEMU's chardev socket for it (on the
 * host). openat itself: a frontend may wrap open. */
static int dial_serial(const char *path, int *device) {
    struct stat st;
    if (!path[0]) { errno = EINVAL; return -1; }
    if (stat(path, &st) != 0) return -1;
    *device = S_ISCHR(st.st_mode);
    if (S_ISSOCK(st.st_mode)) return dial_unix(path);
    if (!*device) { errno = ENOTSUP; return -1; }
    return (int)syscall(SYS_openat, AT_FDCWD, path, O_RDWR | O_CLOEXEC | O_NOCTTY);
}

int pd_conn_dial(const char *url, struct pd_stream *stream) {
    *stream = (struct pd_stream)PD_STREAM_NONE;
    int fd;
    if (strncmp(url, "unix:", 5) == 0) {
        fd = dial_unix(url + 5);
    } else if (strncmp(url, "vsock:", 6) == 0) {
        fd = dial_vsock(url + 6);
    } else if (strncmp(url, "serial:", 7) == 0) {
        const char *path = url + 7;
        if (path[0] == '/' && path[1] == '/') path += 2;   /* serial:///path */
        int device = 0;
        fd = paradice_descriptor_out_of_the_way(dial_serial(path, &device));
        if (fd < 0) return -1;
        if (device) {
            *stream = (struct pd_stream){ .ops = &device_ops, .fd = fd, .state = NULL };
            return 0;
        }
        char *kept = strdup(path);
        if (!kept) { close_descriptor(fd); errno = ENOMEM; return -1; }
        *stream = (struct pd_stream){ .ops = &chardev_ops, .fd = fd, .state = kept };
        return 0;
    } else if (strncmp(url, "ivshmem:", 8) == 0) {
        return stream_ivshmem(stream, url + 8);
    } else if (strncmp(url, "shm:", 4) == 0) {
        fd = paradice_descriptor_out_of_the_way(dial_unix(url + 4));
        return fd < 0 ? -1 : pd_stream_ring(stream, fd);
    } else {
        const char *rest = strncmp(url, "tcp://", 6) == 0 ? url + 6 : strncmp(url, "tcp:", 4) == 0 ? url + 4 : NULL;
        if (!rest) { errno = EINVAL; return -1; }
        fd = dial_tcp(rest);
    }
    if (fd < 0) return -1;
    pd_stream_socket(stream, paradice_descriptor_out_of_the_way(fd));
    return 0;
}
