/* A byte stream through shared memory: two single-producer single-consumer byte rings in one region, one
 * per direction, with a pluggable doorbell to wake a side that sleeps. The region may be any shared memory
 * both sides map (a memfd between processes on one host; a PCI BAR into a VM). Everything in the region is
 * the peer's to change at any moment: each index is read once, checked against the capacity, and the
 * bytes are copied out before anyone parses them. The indices a side owns live in its private state and
 * are only ever written to the region, never read back. */
#ifndef PARADICE_RING_H
#define PARADICE_RING_H
#include <stddef.h>
#include <stdint.h>
#include "paradice_spin.h"

#define PARADICE_RING_MAGIC 0x676e6972u   /* "ring" */
#define PARADICE_RING_VERSION 1u
#define PARADICE_RING_DATA_OFFSET 4096u
#define PARADICE_RING_MIN_CAPACITY 4096u
#define PARADICE_RING_MAX_CAPACITY (16u << 20)
#define PARADICE_RING_DEFAULT_CAPACITY (512u << 10)

/* One direction's shared words, each on its own cache line: free-running byte counts (head: produced,
 * tail: consumed), whether a side sleeps (so that the other rings the doorbell only then), and the
 * producer's end of the stream. */
struct paradice_ring_control {
    uint32_t head; uint8_t pad0[60];
    uint32_t tail; uint8_t pad1[60];
    uint32_t consumer_waiting; uint8_t pad2[60];
    uint32_t producer_waiting; uint8_t pad3[60];
    uint32_t finished; uint8_t pad4[60];
};

/* The start of the region; ring 0 (frontend to backend) and ring 1 (backend to frontend) follow from
 * PARADICE_RING_DATA_OFFSET, `capacity` bytes each. */
struct paradice_ring_header {
    uint32_t magic, version, capacity, reserved;
    uint8_t pad[48];
    struct paradice_ring_control ring[2];
};

/* The doorbells: per ring, one the producer rings when there is data and one the consumer rings when there
 * is room. A side waits on the bells of its own waits and rings the others. */
#define PARADICE_BELL_DATA(ring) ((ring) * 2)
#define PARADICE_BELL_SPACE(ring) ((ring) * 2 + 1)
#define PARADICE_BELLS 4

struct paradice_ring;
struct paradice_doorbell_ops {
    /* Wakes the peer's waiter on `bell`. */
    void (*ring)(struct paradice_ring *r, int bell);
    /* Sleeps until `bell` may have rung (0), or fails (-1): errno EPIPE when the peer is gone or the
     * stream was shut down, EAGAIN after timeout_ms (-1: no bound). A spurious return is fine. */
    int (*wait)(struct paradice_ring *r, int bell, int timeout_ms);
    /* Ends every wait (shutdown), from any thread. */
    void (*shutdown)(struct paradice_ring *r);
    /* Releases the doorbell's resources, without a word to the peer. */
    void (*close)(struct paradice_ring *r);
};

/* One side's end of a region. */
struct paradice_ring {
    uint8_t *region;
    size_t size;
    uint32_t capacity;                 /* a power of two */
    int side;                          /* 0: the frontend (sends on ring 0), 1: the backend */
    struct paradice_ring_control *out, *in;
    uint8_t *out_data, *in_data;
    uint32_t head;                     /* of the ring this side sends on: private, only ever written out */
    uint32_t tail;                     /* of the ring this side receives on: likewise */
    int peer_gone;
    int broken;                        /* the peer broke the ring's rules: the stream is over */
    int shut;                          /* atomic: shutdown came */
    int timeout_ms;                    /* of each receive wait; -1: none */
    long spin_ns;                      /* the longest a wait spins before it sleeps */
    struct paradice_spin spin[2];      /* per kind of wait (0: receive, 1: send), each its own thread's */
    int woke_peer;                     /* atomic: a send rang the peer's data bell since the last receive */
    const struct paradice_doorbell_ops *doorbell;
    /* The eventfd doorbell's: the setup socket (liveness, descriptors), the four eventfds. */
    int setup_fd;
    int bells[PARADICE_BELLS];
    int pending_descriptor;            /* came over the setup socket for a frame not read yet (-1: none) */
    uint32_t pending_position;
    int unmap;                         /* the region is this end's mapping (munmap at close) */
    unsigned rounds[2];                /* per kind of wait: counts its send or receive calls (a doorbell's fresh wait) */
    void *doorbell_state;              /* the ivshmem doorbell's (ivshmem.c) */
};

/* Puts an end over a region already mapped (`size` bytes, header checked here); no doorbell yet. 0, or
 * -1 with errno EPROTO when the header is not a ring's. `initialize`: writes a fresh header first. */
int paradice_ring_attach(struct paradice_ring *r, void *region, size_t size, int side, int initialize, uint32_t capacity);

/* Some of the n bytes (at least one), blocking while the ring is full: how many, or -1 with errno (EPIPE:
 * the peer is gone or the stream shut down; EPROTO: the peer broke the ring). */
long paradice_ring_send(struct paradice_ring *r, const void *bytes, size_t n);
/* Up to n bytes, blocking until one came: how many, 0 at the end of the stream, or -1 with errno (EAGAIN
 * after the receive timeout, EPROTO: the peer broke the ring). */
long paradice_ring_recv(struct paradice_ring *r, void *bytes, size_t n);
/* The end of the stream for the peer, once it has read what was sent. */
void paradice_ring_finish(struct paradice_ring *r);
/* Ends the stream both ways, waking both sides' waiters. */
void paradice_ring_shutdown(struct paradice_ring *r);
/* Unmaps, closes the doorbell, frees nothing of the caller's (r itself is the caller's). */
void paradice_ring_close(struct paradice_ring *r);

/* ---- between processes on one host: a memfd and eventfds over a unix socket ---- */

/* What the backend sends over the setup socket, with the memfd and the four eventfds. */
struct paradice_ring_offer {
    uint32_t magic, version, capacity, size;
};

/* The backend's side: makes a sealed memfd region and four eventfds, offers them over `setup_fd` (a
 * connected unix socket, which the end keeps for liveness and descriptors). 0, or -1 with errno. */
int paradice_ring_offer(struct paradice_ring *r, int setup_fd, uint32_t capacity);
/* The frontend's side: takes the offer from `setup_fd`, checks and maps it. 0, or -1 with errno. */
int paradice_ring_accept_offer(struct paradice_ring *r, int setup_fd);
/* Passes `descriptor` with the frame this side sends next (the backend's, under its send lock). */
int paradice_ring_send_descriptor(struct paradice_ring *r, int descriptor);
/* The descriptor passed with the frame whose first byte is at `position` of the stream received (the
 * end's tail before that byte was read; ask once the byte came), or -1. */
int paradice_ring_take_descriptor(struct paradice_ring *r, uint32_t position);

/* ---- with a VM: a region QEMU's ivshmem-plain shares (ivshmem.c) ---- */

/* Page 0 of an ivshmem region: the session setup, each word on its own cache line where both sides write.
 * The listener writes the header and `session`, then `state` LISTENING; a connector claims the session by
 * setting `claim` from 0 to a token of its own, and the listener answers with `accepted` = that token and
 * `state` CONNECTED. The rings (struct paradice_ring_header) follow at PARADICE_IVSHMEM_RING_OFFSET. Each
 * side bumps its `beat` every PARADICE_IVSHMEM_BEAT_MS and sets its `gone` when it closes: a peer whose beat
 * stood still for PARADICE_IVSHMEM_LIVENESS_MS is gone (its process or its VM died or stopped). */
#define PARADICE_IVSHMEM_MAGIC 0x68737669u   /* "ivsh" */
#define PARADICE_IVSHMEM_VERSION 1u
#define PARADICE_IVSHMEM_RING_OFFSET 4096u
#define PARADICE_IVSHMEM_LISTENING 1u
#define PARADICE_IVSHMEM_CONNECTED 2u
#define PARADICE_IVSHMEM_BEAT_MS 50
#define PARADICE_IVSHMEM_LIVENESS_MS 6000
struct paradice_ivshmem_header {
    uint32_t magic, version, state, session;
    uint8_t pad0[48];
    uint32_t claim; uint8_t pad1[60];
    uint32_t accepted; uint8_t pad2[60];
    struct { uint32_t beat, gone; uint8_t pad[56]; } side[2];
};

/* The region at `path`: a file QEMU's memory-backend-file shares (the host), a PCI BAR's sysfs resource
 * file (the guest), or "auto": the BAR of the first ivshmem device (PCI 1af4:1110). Maps it into *region,
 * *size; 0, or -1 with errno. `found` (may be NULL, PATH_MAX bytes) gets the path used. */
int paradice_ivshmem_map(const char *path, void **region, size_t *size, char *found);
/* The listener's side (the backend): a fresh session on the region, waiting until a connector claims
 * it. 0, or -1 with errno. */
int paradice_ivshmem_listen(struct paradice_ring *r, const char *path);
/* The connector's side: claims the session a listener offers, waiting its turn while another holds the
 * region or the last one ends. 0, or -1 with errno (ECONNREFUSED: no listener on the region; EBUSY: another
 * session held it throughout; ETIMEDOUT: the listener did not answer; EPROTO: a header that is not a ring's). */
int paradice_ivshmem_connect(struct paradice_ring *r, const char *path);
/* Over a region already mapped: the setup without the mapping (the fuzz harness's way in). `wait_ms`
 * bounds the connector's waits for its turn and for the listener's answer. */
int paradice_ivshmem_connect_region(struct paradice_ring *r, void *region, size_t size, int wait_ms);

/* The fuzz harness's and tests' way in: sets the ring's shared words as a hostile peer would. */
void paradice_ring_poke(struct paradice_ring *r, int ring, uint32_t head, uint32_t tail);
#endif
