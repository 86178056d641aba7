/* Shared-memory byte rings (paradice_ring.h).
 *
 * Notification: a side that finds nothing to do spins as long as its kind of wait learned to (spin.c), then
 * says it sleeps (a word in the region), checks once more, and sleeps on its doorbell; the other side rings
 * only when that word is set, so while both are busy no system call is made. The doorbell between processes
 * is an eventfd per bell, waited on with poll together with the setup socket rather than a futex in the
 * region: one poll sees the bell, the peer's death (POLLHUP when its last descriptor of the socket closes)
 * and this side's own shutdown (shutdown(2) of the socket hangs it up both ways), where a futex sees none of
 * the latter two and would need a watching thread per session and a timed wait. A sleep costs a poll and a
 * read instead of one futex call; only a side that already waited pays it. An ivshmem doorbell is eventfds
 * too (the ioeventfd and irqfd of the BAR), so the same ops serve it. */
#define _GNU_SOURCE
#include "paradice_ring.h"
#include "cparadice.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* The system calls themselves: inside a program whose close, read, write, poll, fcntl, fstat, mmap and
 * munmap the preload wraps, the wrappers are not for the ring (and may take the connection's locks). */
static void close_descriptor(int fd) { if (fd >= 0) syscall(SYS_close, (long)fd); }
static long raw_read(int fd, void *p, size_t n) { return syscall(SYS_read, (long)fd, p, (long)n); }
static long raw_write(int fd, const void *p, size_t n) { return syscall(SYS_write, (long)fd, p, (long)n); }
static int raw_poll(struct pollfd *fds, nfds_t n, int timeout_ms) { return (int)syscall(SYS_poll, fds, (long)n, (long)timeout_ms); }
static int raw_fcntl(int fd, int command, long argument) { return (int)syscall(SYS_fcntl, (long)fd, (long)command, argument); }
static int raw_fstat(int fd, struct stat *st) { return (int)syscall(SYS_fstat, (long)fd, st); }
static void *raw_mmap(size_t size, int fd) {
    /* syscall is variadic: every argument goes as a long, or its register's upper half is garbage. */
    long r = syscall(SYS_mmap, (long)0, (long)size, (long)(PROT_READ | PROT_WRITE), (long)MAP_SHARED, (long)fd, (long)0);
    return r < 0 && r > -4096 ? MAP_FAILED : (void *)r;
}
static void raw_munmap(void *p, size_t size) { syscall(SYS_munmap, p, (long)size); }

/* A receive that follows a send which woke a sleeping peer learns nothing from a spin that ran out: its
 * wait holds the peer's wake-up, which on a virtual CPU that halted costs tens of µs, far more than a call.
 * Counting it would drive both sides to sleep for good, each then waiting for the other's wake-up
 * (measured on a 2-core VM: a 40-byte ping-pong at 97 µs a round trip instead of 0.8 µs), and no short
 * probe escapes that, since the peer it probes is asleep. So a side whose peer sleeps keeps spinning; the
 * peer's own probe then finds its bytes at once, and both spin again. */

int paradice_ring_attach(struct paradice_ring *r, void *region, size_t size, int side, int initialize, uint32_t capacity) {
    struct paradice_ring_header *h = region;
    if (initialize) {
        memset(h, 0, sizeof *h);
        h->magic = PARADICE_RING_MAGIC;
        h->version = PARADICE_RING_VERSION;
        h->capacity = capacity;
    } else {
        capacity = h->capacity;   /* read once */
        if (h->magic != PARADICE_RING_MAGIC || h->version != PARADICE_RING_VERSION) { errno = EPROTO; return -1; }
    }
    if (capacity < PARADICE_RING_MIN_CAPACITY || capacity > PARADICE_RING_MAX_CAPACITY || (capacity & (capacity - 1))
        || size < PARADICE_RING_DATA_OFFSET + 2 * (size_t)capacity) { errno = EPROTO; return -1; }
    memset(r, 0, sizeof *r);
    r->region = region;
    r->size = size;
    r->capacity = capacity;
    r->side = side;
    r->out = &h->ring[side];
    r->in = &h->ring[1 - side];
    r->out_data = r->region + PARADICE_RING_DATA_OFFSET + (size_t)side * capacity;
    r->in_data = r->region + PARADICE_RING_DATA_OFFSET + (size_t)(1 - side) * capacity;
    /* A fresh end starts where the region's indices are, which its creator set to 0. */
    r->head = 0;
    r->tail = 0;
    r->timeout_ms = -1;
    r->spin_ns = PARADICE_SPIN_CEILING_NS;
    paradice_spin_init(&r->spin[0], r->spin_ns);
    paradice_spin_init(&r->spin[1], r->spin_ns);
    r->setup_fd = -1;
    for (int i = 0; i < PARADICE_BELLS; i++) r->bells[i] = -1;
    r->pending_descriptor = -1;
    return 0;
}

static int is_shut(struct paradice_ring *r) { return __atomic_load_n(&r->shut, __ATOMIC_ACQUIRE); }

long paradice_ring_send(struct paradice_ring *r, const void *bytes, size_t n) {
    if (n == 0) return 0;
    r->rounds[1]++;
    struct paradice_spin_wait spin = { 0 };
    for (;;) {
        if (is_shut(r) || __atomic_load_n(&r->peer_gone, __ATOMIC_RELAXED)) { errno = EPIPE; return -1; }
        if (__atomic_load_n(&r->broken, __ATOMIC_RELAXED)) { errno = EPROTO; return -1; }
        uint32_t tail = LOAD(&r->out->tail);   /* the peer's: read once, checked */
        uint32_t used = r->head - tail;
        if (used > r->capacity) { __atomic_store_n(&r->broken, 1, __ATOMIC_RELAXED); errno = EPROTO; return -1; }
        uint32_t room = r->capacity - used;
        if (room > 0) {
            size_t k = n < room ? n : room;
            uint32_t at = r->head & (r->capacity - 1);
            size_t first = k < r->capacity - at ? k : r->capacity - at;
            memcpy(r->out_data + at, bytes, first);
            memcpy(r->out_data, (const uint8_t *)bytes + first, k - first);
            r->head += (uint32_t)k;
            STORE(&r->out->head, r->head);
            FENCE();   /* the head before the look at the waiting word, as the waiter sets it before its last look */
            if (__atomic_load_n(&r->out->consumer_waiting, __ATOMIC_RELAXED)) {
                __atomic_store_n(&r->woke_peer, 1, __ATOMIC_RELAXED);
                r->doorbell->ring(r, PARADICE_BELL_DATA(r->side));
            }
            paradice_spin_found(&r->spin[1], &spin, r->spin_ns);
            return (long)k;
        }
        /* Full: spin a little, then sleep until the consumer makes room. */
        if (paradice_spin_turn(&r->spin[1], &spin, r->spin_ns, 1)) continue;
        __atomic_store_n(&r->out->producer_waiting, 1, __ATOMIC_SEQ_CST);
        FENCE();
        uint32_t again = LOAD(&r->out->tail);
        if (r->head - again == r->capacity && !is_shut(r)) {
            if (r->doorbell->wait(r, PARADICE_BELL_SPACE(r->side), -1) != 0) {
                __atomic_store_n(&r->out->producer_waiting, 0, __ATOMIC_RELAXED);
                if (errno == EPIPE) __atomic_store_n(&r->peer_gone, !is_shut(r), __ATOMIC_RELAXED);
                errno = EPIPE;
                return -1;
            }
        }
        __atomic_store_n(&r->out->producer_waiting, 0, __ATOMIC_RELAXED);
    }
}

long paradice_ring_recv(struct paradice_ring *r, void *bytes, size_t n) {
    if (n == 0) return 0;
    r->rounds[0]++;
    struct paradice_spin_wait spin = { 0 };
    int peer_woken = __atomic_exchange_n(&r->woke_peer, 0, __ATOMIC_RELAXED);
    for (;;) {
        if (__atomic_load_n(&r->broken, __ATOMIC_RELAXED)) { errno = EPROTO; return -1; }
        uint32_t head = LOAD(&r->in->head);   /* the peer's: read once, checked */
        uint32_t available = head - r->tail;
        if (available > r->capacity) { __atomic_store_n(&r->broken, 1, __ATOMIC_RELAXED); errno = EPROTO; return -1; }
        if (available > 0) {
            size_t k = n < available ? n : available;
            uint32_t at = r->tail & (r->capacity - 1);
            size_t first = k < r->capacity - at ? k : r->capacity - at;
            /* Copied out before anyone parses it: the peer may change these bytes while they are read. */
            memcpy(bytes, r->in_data + at, first);
            memcpy((uint8_t *)bytes + first, r->in_data, k - first);
            r->tail += (uint32_t)k;
            STORE(&r->in->tail, r->tail);
            FENCE();
            if (__atomic_load_n(&r->in->producer_waiting, __ATOMIC_RELAXED)) r->doorbell->ring(r, PARADICE_BELL_SPACE(1 - r->side));
            paradice_spin_found(&r->spin[0], &spin, r->spin_ns);
            return (long)k;
        }
        if (is_shut(r) || __atomic_load_n(&r->peer_gone, __ATOMIC_RELAXED) || LOAD(&r->in->finished)) return 0;
        if (paradice_spin_turn(&r->spin[0], &spin, r->spin_ns, !peer_woken)) continue;
        __atomic_store_n(&r->in->consumer_waiting, 1, __ATOMIC_SEQ_CST);
        FENCE();
        if (LOAD(&r->in->head) == r->tail && !LOAD(&r->in->finished) && !is_shut(r)) {
            if (r->doorbell->wait(r, PARADICE_BELL_DATA(1 - r->side), r->timeout_ms) != 0) {
                int e = errno;
                __atomic_store_n(&r->in->consumer_waiting, 0, __ATOMIC_RELAXED);
                if (e != EPIPE) { errno = e; return -1; }
                __atomic_store_n(&r->peer_gone, 1, __ATOMIC_RELAXED);   /* what it sent before it went is still read */
                continue;
            }
        }
        __atomic_store_n(&r->in->consumer_waiting, 0, __ATOMIC_RELAXED);
    }
}

void paradice_ring_finish(struct paradice_ring *r) {
    STORE(&r->out->finished, 1);
    FENCE();
    r->doorbell->ring(r, PARADICE_BELL_DATA(r->side));
}

void paradice_ring_shutdown(struct paradice_ring *r) {
    __atomic_store_n(&r->shut, 1, __ATOMIC_RELEASE);
    if (r->doorbell) r->doorbell->shutdown(r);
}

void paradice_ring_close(struct paradice_ring *r) {
    if (r->doorbell) r->doorbell->close(r);
    r->doorbell = NULL;
    if (r->unmap && r->region) raw_munmap(r->region, r->size);
    r->region = NULL;
}

void paradice_ring_poke(struct paradice_ring *r, int ring, uint32_t head, uint32_t tail) {
    struct paradice_ring_header *h = (struct paradice_ring_header *)r->region;
    STORE(&h->ring[ring].head, head);
    STORE(&h->ring[ring].tail, tail);
}

/* ---- the eventfd doorbell, over a setup socket ---- */

static void eventfd_ring(struct paradice_ring *r, int bell) {
    uint64_t one = 1;
    long ignored = raw_write(r->bells[bell], &one, sizeof one);   /* a full counter has woken its waiter already */
    (void)ignored;
}

static int eventfd_wait(struct paradice_ring *r, int bell, int timeout_ms) {
    /* Events 0 on the socket: only its hang-up wakes this wait, not a descriptor arriving on it. */
    struct pollfd fds[2] = { { .fd = r->bells[bell], .events = POLLIN }, { .fd = r->setup_fd, .events = 0 } };
    int n = raw_poll(fds, 2, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -1;
    if (n == 0) { errno = EAGAIN; return -1; }
    if (fds[0].revents & POLLIN) {
        uint64_t count;
        long ignored = raw_read(r->bells[bell], &count, sizeof count);   /* non-blocking: a peer's drain is no hang */
        (void)ignored;
    }
    if (fds[1].revents & (POLLHUP | POLLERR | POLLNVAL)) { errno = EPIPE; return -1; }
    return 0;
}

/* The socket hung up both ways: this side's waits and the peer's see it. */
static void eventfd_shutdown(struct paradice_ring *r) { shutdown(r->setup_fd, SHUT_RDWR); }

static void eventfd_close(struct paradice_ring *r) {
    close_descriptor(r->setup_fd);
    r->setup_fd = -1;
    for (int i = 0; i < PARADICE_BELLS; i++) { close_descriptor(r->bells[i]); r->bells[i] = -1; }
    close_descriptor(r->pending_descriptor);
    r->pending_descriptor = -1;
}

static const struct paradice_doorbell_ops eventfd_doorbell = { eventfd_ring, eventfd_wait, eventfd_shutdown, eventfd_close };

int paradice_ring_offer(struct paradice_ring *r, int setup_fd, uint32_t capacity) {
    if (capacity < PARADICE_RING_MIN_CAPACITY || capacity > PARADICE_RING_MAX_CAPACITY || (capacity & (capacity - 1))) {
        errno = EINVAL;
        return -1;
    }
    size_t size = PARADICE_RING_DATA_OFFSET + 2 * (size_t)capacity;
    int bells[PARADICE_BELLS] = { -1, -1, -1, -1 };
    void *region = MAP_FAILED;
    int memfd = memfd_create("paradice-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (memfd < 0) return -1;
    /* Sealed at its size: a peer that could shrink it would make this side's next access a SIGBUS. */
    if (ftruncate(memfd, (off_t)size) != 0
        || raw_fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) goto fail;
    region = raw_mmap(size, memfd);
    if (region == MAP_FAILED) goto fail;
    for (int i = 0; i < PARADICE_BELLS; i++)
        if ((bells[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) goto fail;
    if (paradice_ring_attach(r, region, size, 1, 1, capacity) != 0) goto fail;
    struct paradice_ring_offer offer = { PARADICE_RING_MAGIC, PARADICE_RING_VERSION, capacity, (uint32_t)size };
    int passed[1 + PARADICE_BELLS] = { memfd, bells[0], bells[1], bells[2], bells[3] };
    char control[CMSG_SPACE(sizeof passed)];
    memset(control, 0, sizeof control);
    struct iovec iov = { &offer, sizeof offer };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof passed);
    memcpy(CMSG_DATA(c), passed, sizeof passed);
    ssize_t sent;
    do { sent = sendmsg(setup_fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT); } while (sent < 0 && errno == EINTR);
    if (sent != (ssize_t)sizeof offer) { if (sent >= 0) errno = EPIPE; goto fail; }
    close_descriptor(memfd);
    r->unmap = 1;
    r->setup_fd = setup_fd;
    memcpy(r->bells, bells, sizeof bells);
    r->doorbell = &eventfd_doorbell;
    return 0;
fail: {
        int e = errno;
        if (region != MAP_FAILED) raw_munmap(region, size);
        close_descriptor(memfd);
        for (int i = 0; i < PARADICE_BELLS; i++) close_descriptor(bells[i]);
        errno = e;
        return -1;
    }
}

/* A region its maker can no longer shrink under this side's feet (a SIGBUS at the next access). */
static int sealed_at_its_size(int memfd) {
    int seals = raw_fcntl(memfd, F_GET_SEALS, 0);
    return seals >= 0 && (seals & F_SEAL_SHRINK) && (seals & F_SEAL_SEAL);
}

int paradice_ring_accept_offer(struct paradice_ring *r, int setup_fd) {
    struct paradice_ring_offer offer;
    int passed[1 + PARADICE_BELLS];
    char control[CMSG_SPACE(sizeof passed)];
    struct iovec iov = { &offer, sizeof offer };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    ssize_t n;
    do { n = recvmsg(setup_fd, &message, MSG_CMSG_CLOEXEC | MSG_WAITALL); } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    int count = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int here = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < here; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (count < 1 + PARADICE_BELLS) passed[count++] = fd; else close_descriptor(fd);
        }
    }
    void *region = MAP_FAILED;
    size_t size = offer.size;
    struct stat st;
    int ok = n == (ssize_t)sizeof offer && !(message.msg_flags & MSG_CTRUNC) && count == 1 + PARADICE_BELLS
             && offer.magic == PARADICE_RING_MAGIC && offer.version == PARADICE_RING_VERSION
             && offer.capacity >= PARADICE_RING_MIN_CAPACITY && offer.capacity <= PARADICE_RING_MAX_CAPACITY
             && !(offer.capacity & (offer.capacity - 1)) && size == PARADICE_RING_DATA_OFFSET + 2 * (size_t)offer.capacity
             && raw_fstat(passed[0], &st) == 0 && st.st_size == (off_t)size
             && sealed_at_its_size(passed[0]);
    if (ok) ok = (region = raw_mmap(size, passed[0])) != MAP_FAILED;
    if (ok) ok = paradice_ring_attach(r, region, size, 0, 0, 0) == 0 && r->capacity == offer.capacity;
    if (count > 0) close_descriptor(passed[0]);
    if (!ok) {
        if (region != MAP_FAILED) raw_munmap(region, size);
        for (int i = 1; i < count; i++) close_descriptor(passed[i]);
        errno = n == 0 ? ECONNRESET : EPROTO;
        return -1;
    }
    r->unmap = 1;
    r->setup_fd = setup_fd;
    for (int i = 0; i < PARADICE_BELLS; i++) r->bells[i] = paradice_descriptor_out_of_the_way(passed[1 + i]);
    r->doorbell = &eventfd_doorbell;
    return 0;
}

/* The descriptor travels over the setup socket with the ring position of its frame's first byte. */
int paradice_ring_send_descriptor(struct paradice_ring *r, int descriptor) {
    if (r->setup_fd < 0) { errno = ENOTSUP; return -1; }   /* a region with a VM: no descriptor travels */
    uint32_t position = r->head;
    return paradice_send_with_descriptor(r->setup_fd, &position, sizeof position, descriptor);
}

int paradice_ring_take_descriptor(struct paradice_ring *r, uint32_t position) {
    if (r->setup_fd < 0) return -1;
    /* Sent before its frame's bytes went into the ring: by the time they are read, it is queued. */
    for (;;) {
        if (r->pending_descriptor < 0) {
            uint32_t at;
            int passed = -1;
            char control[CMSG_SPACE(sizeof(int))];
            struct iovec iov = { &at, sizeof at };
            struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
            ssize_t n = recvmsg(r->setup_fd, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
            if (n <= 0) return -1;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                    close_descriptor(passed);
                    memcpy(&passed, CMSG_DATA(c), sizeof passed);
                }
            if (n != (ssize_t)sizeof at || passed < 0) { close_descriptor(passed); continue; }
            r->pending_descriptor = passed;
            r->pending_position = at;
        }
        int32_t ahead = (int32_t)(r->pending_position - position);
        if (ahead > 0) return -1;   /* a later frame's */
        int fd = r->pending_descriptor;
        r->pending_descriptor = -1;
        if (ahead == 0) return fd;
        close_descriptor(fd);       /* for a frame already read: not this one's */
    }
}
