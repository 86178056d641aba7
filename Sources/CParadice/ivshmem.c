/* Shared-memory rings with a VM through QEMU's ivshmem-plain (paradice_ring.h).
 *
 * No ivshmem server (Debian does not package one) and no KVM to count on, so no ioeventfd or irqfd: the
 * doorbell is adaptive polling. The ring's own wait spins first (ring.c, spin_budget); a wait that still
 * finds nothing naps here, each nap twice the last, from IVSHMEM_NAP_MIN_NS up to IVSHMEM_NAP_MAX_NS, so a
 * side idle for long costs a wake-up a millisecond and one that just missed its bytes pays a few tens of
 * µs. Ringing is then nothing at all. Each nap also looks at the peer's liveness: its `gone` word, and
 * its `beat`, which a thread of each side bumps; a beat that stood still for PARADICE_IVSHMEM_LIVENESS_MS
 * ends the session (a peer whose process died, or that was stopped, or whose VM was). Everything in the
 * region is the peer's to change: the header is read once and checked against the mapping. */
#define _GNU_SOURCE
#include "paradice_ring.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define IVSHMEM_NAP_MIN_NS 5000L
#define IVSHMEM_NAP_MAX_NS 1000000L
#define IVSHMEM_CONNECT_WAIT_MS 5000

/* The system calls themselves (as in ring.c: a preloaded program's wrappers are not for the ring). */
static void close_descriptor(int fd) { if (fd >= 0) syscall(SYS_close, (long)fd); }

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void nap(long ns) {
    struct timespec t = { ns / 1000000000L, ns % 1000000000L };
    syscall(SYS_nanosleep, &t, NULL);
}

/* One kind of wait's learning (0: receive, 1: send): each touched by its own thread only. */
struct ivshmem_wait {
    unsigned round;           /* the ring call it belongs to (paradice_ring.rounds) */
    long started, nap_ns;
    uint32_t peer_beat;
    long beat_seen;
};

struct ivshmem_state {
    struct paradice_ivshmem_header *header;
    uint32_t session;
    pid_t owner;              /* a forked child's copy neither stops the beat nor says it is gone */
    pthread_t beater;
    int beating, stop;
    int mapped;               /* the region is this end's mapping, header and all (munmap at close) */
    struct ivshmem_wait waits[2];
};

static void *beat(void *argument) {
    struct paradice_ring *r = argument;
    struct ivshmem_state *s = r->doorbell_state;
    while (!LOAD(&s->stop)) {
        __atomic_fetch_add(&s->header->side[r->side].beat, 1, __ATOMIC_RELEASE);
        nap(PARADICE_IVSHMEM_BEAT_MS * 1000000L);
    }
    return NULL;
}

static void ivshmem_ring(struct paradice_ring *r, int bell) { (void)r; (void)bell; }   /* the peer polls */

static int ivshmem_wait(struct paradice_ring *r, int bell, int timeout_ms) {
    struct ivshmem_state *s = r->doorbell_state;
    struct paradice_ivshmem_header *h = s->header;
    int which = bell == PARADICE_BELL_DATA(1 - r->side) ? 0 : 1;
    struct ivshmem_wait *w = &s->waits[which];
    long now = now_ns();
    uint32_t peer_beat = LOAD(&h->side[1 - r->side].beat);
    if (w->round != r->rounds[which]) {   /* the first wait of this send or receive */
        w->round = r->rounds[which];
        w->started = now;
        w->nap_ns = IVSHMEM_NAP_MIN_NS;
        w->peer_beat = peer_beat;
        w->beat_seen = now;
    }
    if (__atomic_load_n(&r->shut, __ATOMIC_ACQUIRE) || LOAD(&h->side[1 - r->side].gone)
        || LOAD(&h->session) != s->session || LOAD(&h->state) != PARADICE_IVSHMEM_CONNECTED) { errno = EPIPE; return -1; }
    if (peer_beat != w->peer_beat) { w->peer_beat = peer_beat; w->beat_seen = now; }
    else if (now - w->beat_seen > PARADICE_IVSHMEM_LIVENESS_MS * 1000000L) { errno = EPIPE; return -1; }
    if (timeout_ms >= 0 && now - w->started >= timeout_ms * 1000000L) { errno = EAGAIN; return -1; }
    nap(w->nap_ns);
    w->nap_ns = w->nap_ns * 2 > IVSHMEM_NAP_MAX_NS ? IVSHMEM_NAP_MAX_NS : w->nap_ns * 2;
    return 0;
}

/* Waits see the ring's shut word at their next nap (within IVSHMEM_NAP_MAX_NS). */
static void ivshmem_shutdown(struct paradice_ring *r) { (void)r; }

static void ivshmem_close(struct paradice_ring *r) {
    struct ivshmem_state *s = r->doorbell_state;
    if (!s) return;
    if (s->owner == getpid()) {
        if (s->beating) {
            STORE(&s->stop, 1);
            pthread_join(s->beater, NULL);
        }
        if (LOAD(&s->header->session) == s->session) STORE(&s->header->side[r->side].gone, 1);
    }
    if (s->mapped) syscall(SYS_munmap, (void *)s->header, (long)r->size + PARADICE_IVSHMEM_RING_OFFSET);
    free(s);
    r->doorbell_state = NULL;
}

static const struct paradice_doorbell_ops ivshmem_doorbell = { ivshmem_ring, ivshmem_wait, ivshmem_shutdown, ivshmem_close };

/* The first PCI device with vendor 1af4 and device 1110 (ivshmem): its BAR 2 (the shared memory). */
static int find_device(char *found) {
    DIR *d = opendir("/sys/bus/pci/devices");
    if (!d) return -1;
    struct dirent *e;
    int ok = -1;
    while (ok != 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX], vendor[16] = "", device[16] = "";
        FILE *f;
        snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/vendor", e->d_name);
        if ((f = fopen(path, "re"))) { if (!fgets(vendor, sizeof vendor, f)) vendor[0] = 0; fclose(f); }
        snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/device", e->d_name);
        if ((f = fopen(path, "re"))) { if (!fgets(device, sizeof device, f)) device[0] = 0; fclose(f); }
        if (strncmp(vendor, "0x1af4", 6) == 0 && strncmp(device, "0x1110", 6) == 0) {
            snprintf(found, PATH_MAX, "/sys/bus/pci/devices/%s/resource2", e->d_name);
            ok = 0;
        }
    }
    closedir(d);
    if (ok != 0) errno = ENODEV;
    return ok;
}

int paradice_ivshmem_map(const char *path, void **region, size_t *size, char *found) {
    char where[PATH_MAX];
    if (path[0] == '/' && path[1] == '/') path += 2;
    if (strcmp(path, "auto") == 0) {
        if (find_device(where) != 0) return -1;
    } else {
        if (strlen(path) >= sizeof where) { errno = ENAMETOOLONG; return -1; }
        strcpy(where, path);
    }
    if (found) strcpy(found, where);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, where, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (syscall(SYS_fstat, (long)fd, &st) != 0) { int e = errno; close_descriptor(fd); errno = e; return -1; }
    /* A sysfs resource file's size is its BAR's; a host file's is what QEMU made it. */
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)(PARADICE_IVSHMEM_RING_OFFSET + PARADICE_RING_DATA_OFFSET + 2 * PARADICE_RING_MIN_CAPACITY)
        || st.st_size > (off_t)1 << 32) {
        close_descriptor(fd);
        errno = EINVAL;
        return -1;
    }
    long p = syscall(SYS_mmap, (long)0, (long)st.st_size, (long)(PROT_READ | PROT_WRITE), (long)MAP_SHARED, (long)fd, (long)0);
    close_descriptor(fd);
    if (p < 0 && p > -4096) return -1;
    *region = (void *)p;
    *size = (size_t)st.st_size;
    return 0;
}

/* The end's doorbell and its beat, once the session is set up. */
static int start(struct paradice_ring *r, struct paradice_ivshmem_header *h, uint32_t session, int mapped) {
    struct ivshmem_state *s = calloc(1, sizeof *s);
    if (!s) { errno = ENOMEM; return -1; }
    s->header = h;
    s->session = session;
    s->owner = getpid();
    r->doorbell_state = s;
    r->doorbell = &ivshmem_doorbell;
    s->mapped = mapped;
    r->unmap = 0;   /* the doorbell unmaps the whole region, header and all */
    /* Signals stay with the program's own threads (the frontend may live inside one). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    s->beating = pthread_create(&s->beater, NULL, beat, r) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return 0;
}

/* The largest ring both directions fit in the region after the setup page, up to the default. */
static uint32_t capacity_for(size_t size) {
    size_t room = (size - PARADICE_IVSHMEM_RING_OFFSET - PARADICE_RING_DATA_OFFSET) / 2;
    uint32_t c = PARADICE_RING_DEFAULT_CAPACITY;
    while (c > room) c /= 2;
    return c;
}

int paradice_ivshmem_listen(struct paradice_ring *r, const char *path) {
    void *region;
    size_t size;
    if (paradice_ivshmem_map(path, &region, &size, NULL) != 0) return -1;
    struct paradice_ivshmem_header *h = region;
    uint32_t capacity = capacity_for(size);
    uint32_t session = LOAD(&h->session) + 1;   /* anything but the last one's */
    STORE(&h->state, 0);
    uint8_t *rings = (uint8_t *)region + PARADICE_IVSHMEM_RING_OFFSET;
    size_t ring_size = size - PARADICE_IVSHMEM_RING_OFFSET;
    if (paradice_ring_attach(r, rings, ring_size, 1, 1, capacity) != 0) { syscall(SYS_munmap, region, (long)size); return -1; }
    STORE(&h->claim, 0);
    STORE(&h->accepted, 0);
    for (int i = 0; i < 2; i++) { STORE(&h->side[i].beat, 0); STORE(&h->side[i].gone, 0); }
    h->magic = PARADICE_IVSHMEM_MAGIC;
    h->version = PARADICE_IVSHMEM_VERSION;
    STORE(&h->session, session);
    STORE(&h->state, PARADICE_IVSHMEM_LISTENING);
    /* No doorbell wakes a listener: it looks every few ms until a connector claims the session. */
    uint32_t claim;
    long pause = IVSHMEM_NAP_MIN_NS;
    while ((claim = LOAD(&h->claim)) == 0) {
        nap(pause);
        if (pause < 10 * IVSHMEM_NAP_MAX_NS) pause *= 2;
    }
    STORE(&h->accepted, claim);
    STORE(&h->state, PARADICE_IVSHMEM_CONNECTED);
    if (start(r, h, session, 1) != 0) { syscall(SYS_munmap, region, (long)size); return -1; }
    return 0;
}

int paradice_ivshmem_connect_region(struct paradice_ring *r, void *region, size_t size, int wait_ms) {
    struct paradice_ivshmem_header *h = region;
    if (size < PARADICE_IVSHMEM_RING_OFFSET + PARADICE_RING_DATA_OFFSET + 2 * PARADICE_RING_MIN_CAPACITY) { errno = EINVAL; return -1; }
    uint32_t token = (uint32_t)now_ns() ^ ((uint32_t)getpid() << 16);
    if (token == 0) token = 1;
    long deadline = now_ns() + wait_ms * 1000000L, pause = IVSHMEM_NAP_MIN_NS;
    /* A region serves one session at a time: a connector waits its turn (as one queued on a listening
     * socket does) while the last session ends and the listener publishes the next, up to the bound. */
    uint32_t session;
    for (;;) {
        int listening = LOAD(&h->magic) == PARADICE_IVSHMEM_MAGIC && LOAD(&h->version) == PARADICE_IVSHMEM_VERSION
            && LOAD(&h->state) == PARADICE_IVSHMEM_LISTENING;
        session = LOAD(&h->session);
        uint32_t free_claim = 0;
        if (listening && __atomic_compare_exchange_n(&h->claim, &free_claim, token, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) break;
        if (now_ns() > deadline) { errno = listening ? EBUSY : ECONNREFUSED; return -1; }
        nap(pause);
        if (pause < IVSHMEM_NAP_MAX_NS) pause *= 2;
    }
    pause = IVSHMEM_NAP_MIN_NS;
    while (!(LOAD(&h->state) == PARADICE_IVSHMEM_CONNECTED && LOAD(&h->accepted) == token)) {
        if (LOAD(&h->session) != session || LOAD(&h->claim) != token) { errno = EBUSY; return -1; }
        if (now_ns() > deadline) {
            __atomic_compare_exchange_n(&h->claim, &token, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
            errno = ETIMEDOUT;
            return -1;
        }
        nap(pause);
        if (pause < IVSHMEM_NAP_MAX_NS) pause *= 2;
    }
    if (LOAD(&h->session) != session) { errno = EBUSY; return -1; }
    /* The rings' header was the listener's to write before it said LISTENING; attach checks it. */
    if (paradice_ring_attach(r, (uint8_t *)region + PARADICE_IVSHMEM_RING_OFFSET, size - PARADICE_IVSHMEM_RING_OFFSET, 0, 0, 0) != 0) return -1;
    return start(r, h, session, 0);
}

int paradice_ivshmem_connect(struct paradice_ring *r, const char *path) {
    void *region;
    size_t size;
    if (paradice_ivshmem_map(path, &region, &size, NULL) != 0) return -1;
    if (paradice_ivshmem_connect_region(r, region, size, IVSHMEM_CONNECT_WAIT_MS) != 0) {
        int e = errno;
        syscall(SYS_munmap, region, (long)size);
        errno = e;
        return -1;
    }
    ((struct ivshmem_state *)r->doorbell_state)->mapped = 1;
    return 0;
}
