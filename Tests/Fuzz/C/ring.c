// fuzz-build: Sources/CParadice/ring.c Sources/CParadice/spin.c Sources/CParadice/ivshmem.c Sources/CParadice/cparadice.c -lpthread
/*
 * The shared-memory ring reader and writer (paradice_ring.h) against a hostile peer: the input is a script
 * of what the peer does to the shared region (its head and tail words, its waiting words, the data bytes,
 * a header it wrote) between this side's receives and sends. The region is a heap block of exactly its
 * size, so that ASan catches any copy an unchecked index would send outside it; every receive must stay
 * within what it asked and what the ring held.
 *   u8 op, then its operands:
 *     0 u32: the peer's head of the ring this side reads      1 u32: the peer's tail of the ring this side writes
 *     2 u16 offset, u8 n, n bytes: data bytes anywhere in the region
 *     3 u16 n: a receive of n bytes                           4 u16 n: a send of n bytes
 *     5 u32: the peer's waiting and finished words            6 u32 capacity, u32 size: a header the peer wrote, attached
 *     7 u32 magic, version, state, session, accepted, capacity: an ivshmem setup page (ivshmem.c) the
 *       listener wrote, connected to (the connector's claim taken, its token answered only when `accepted` is it)
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "paradice_ring.h"

static void quiet_ring(struct paradice_ring *r, int bell) { (void)r; (void)bell; }
/* The peer never wakes this side: a wait is the peer's going, so nothing blocks. */
static int gone_wait(struct paradice_ring *r, int bell, int timeout_ms) { (void)r; (void)bell; (void)timeout_ms; errno = EPIPE; return -1; }
static void nothing(struct paradice_ring *r) { (void)r; }
static const struct paradice_doorbell_ops doorbell = { quiet_ring, gone_wait, nothing, nothing };

#define CAPACITY PARADICE_RING_MIN_CAPACITY
#define SIZE (PARADICE_RING_DATA_OFFSET + 2 * CAPACITY)

static int take(const uint8_t **p, size_t *left, void *out, size_t n) {
    if (*left < n) return 0;
    memcpy(out, *p, n);
    *p += n;
    *left -= n;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *region = malloc(SIZE);
    memset(region, 0, SIZE);
    struct paradice_ring r;
    if (paradice_ring_attach(&r, region, SIZE, 0, 1, CAPACITY) != 0) __builtin_trap();
    r.doorbell = &doorbell;
    r.spin_ns = 0;
    r.spin[0].budget = r.spin[1].budget = 0;
    struct paradice_ring_header *h = (struct paradice_ring_header *)region;
    uint8_t *buffer = NULL;
    uint8_t op;
    while (take(&data, &size, &op, 1)) {
        switch (op % 8) {
        case 0: { uint32_t v; if (!take(&data, &size, &v, 4)) goto done; h->ring[1].head = v; break; }
        case 1: { uint32_t v; if (!take(&data, &size, &v, 4)) goto done; h->ring[0].tail = v; break; }
        case 2: {
            uint16_t offset; uint8_t n;
            if (!take(&data, &size, &offset, 2) || !take(&data, &size, &n, 1)) goto done;
            size_t at = offset % SIZE;
            size_t k = n < SIZE - at ? n : SIZE - at;
            if (!take(&data, &size, region + at, k)) goto done;
            break;
        }
        case 3: case 4: {
            uint16_t n;
            if (!take(&data, &size, &n, 2)) goto done;
            size_t want = n % (2 * CAPACITY) + 1;
            buffer = malloc(want);   /* exactly what is asked: a longer copy is ASan's */
            memset(buffer, 0xA5, want);
            uint32_t before = op % 8 == 3 ? r.tail : r.head;
            long got = op % 8 == 3 ? paradice_ring_recv(&r, buffer, want) : paradice_ring_send(&r, buffer, want);
            uint32_t after = op % 8 == 3 ? r.tail : r.head;
            if (got > (long)want || got > (long)CAPACITY) __builtin_trap();
            if (got > 0 && after - before != (uint32_t)got) __builtin_trap();
            if (got <= 0 && after != before) __builtin_trap();
            free(buffer);
            buffer = NULL;
            break;
        }
        case 5: {
            uint32_t v;
            if (!take(&data, &size, &v, 4)) goto done;
            h->ring[0].consumer_waiting = v & 1; h->ring[1].producer_waiting = v & 2; h->ring[1].finished = v & 4;
            break;
        }
        case 6: {
            uint32_t capacity, claimed;
            if (!take(&data, &size, &capacity, 4) || !take(&data, &size, &claimed, 4)) goto done;
            h->capacity = capacity;
            struct paradice_ring other;
            /* A header the peer wrote is checked against the size this side mapped, not the one it claims. */
            if (paradice_ring_attach(&other, region, SIZE, 0, 0, 0) == 0
                && (other.capacity > CAPACITY || PARADICE_RING_DATA_OFFSET + 2 * (size_t)other.capacity > SIZE)) __builtin_trap();
            h->capacity = CAPACITY;
            (void)claimed;
            break;
        }
        case 7: {
            uint32_t words[6];
            if (!take(&data, &size, words, sizeof words)) goto done;
            size_t total = PARADICE_IVSHMEM_RING_OFFSET + SIZE;
            uint8_t *shared = calloc(1, total);
            struct paradice_ivshmem_header *setup = (struct paradice_ivshmem_header *)shared;
            setup->magic = words[0]; setup->version = words[1]; setup->state = words[2]; setup->session = words[3];
            setup->accepted = words[4];
            ((struct paradice_ring_header *)(shared + PARADICE_IVSHMEM_RING_OFFSET))->magic = PARADICE_RING_MAGIC;
            ((struct paradice_ring_header *)(shared + PARADICE_IVSHMEM_RING_OFFSET))->version = PARADICE_RING_VERSION;
            ((struct paradice_ring_header *)(shared + PARADICE_IVSHMEM_RING_OFFSET))->capacity = words[5];
            struct paradice_ring other;
            if (paradice_ivshmem_connect_region(&other, shared, total, 0) == 0) {
                if (other.capacity > CAPACITY || PARADICE_RING_DATA_OFFSET + 2 * (size_t)other.capacity > SIZE) __builtin_trap();
                paradice_ring_close(&other);
            }
            free(shared);
            break;
        }
        }
    }
done:
    free(buffer);
    free(region);
    return 0;
}
