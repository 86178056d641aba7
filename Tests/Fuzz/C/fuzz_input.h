/*
 * The input layout the preload parser harnesses share: what the call knows, then the frame's bytes.
 *   u8 region_count (mod 17), u8 mirror_count (mod 9),
 *   region_count × (u64 address, u32 length): regions gathered for the call (lengths mod 64 KiB),
 *   mirror_count × (u32 id, u32 length): mirrors the process holds of the file (lengths mod 64 KiB),
 *   then the body.
 * Each region and mirror gets memory of its own, so that a harness can apply what a parser accepted
 * and let ASan catch any write the parser should have refused.
 */
#ifndef FUZZ_INPUT_H
#define FUZZ_INPUT_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "paradice_frontend_parse.h"

struct fuzz_call {
    struct pd_span spans[16];
    uint8_t *span_memory[16];
    struct pd_mirror_span mirrors[8];
    uint8_t *mirror_memory[8];
    struct pd_bounds bounds;
    const uint8_t *body;
    size_t length;
};

static int fuzz_take(const uint8_t **p, size_t *left, void *out, size_t n) {
    if (*left < n) return 0;
    memcpy(out, *p, n);
    *p += n;
    *left -= n;
    return 1;
}

static int fuzz_call_read(const uint8_t *data, size_t size, struct fuzz_call *c) {
    memset(c, 0, sizeof *c);
    uint8_t counts[2];
    if (!fuzz_take(&data, &size, counts, 2)) return 0;
    size_t regions = counts[0] % 17, mirrors = counts[1] % 9;
    if (regions > 16) regions = 16;
    uint64_t bytes = 0;
    for (size_t i = 0; i < regions; i++) {
        uint64_t address;
        uint32_t length;
        if (!fuzz_take(&data, &size, &address, 8) || !fuzz_take(&data, &size, &length, 4)) return 0;
        length %= 65536;
        c->spans[i] = (struct pd_span){ address, length };
        c->span_memory[i] = malloc(length ? length : 1);
        bytes += length;
        c->bounds.region_count = i + 1;
    }
    for (size_t i = 0; i < mirrors; i++) {
        uint32_t id, length;
        if (!fuzz_take(&data, &size, &id, 4) || !fuzz_take(&data, &size, &length, 4)) return 0;
        length %= 65536;
        c->mirrors[i] = (struct pd_mirror_span){ id, length };
        c->mirror_memory[i] = malloc(length ? length : 1);
        c->bounds.mirror_count = i + 1;
    }
    c->bounds.regions = c->spans;
    c->bounds.mirrors = c->mirrors;
    c->bounds.gathered_bytes = bytes;
    c->body = data;
    c->length = size;
    return 1;
}

static void fuzz_call_free(struct fuzz_call *c) {
    for (size_t i = 0; i < 16; i++) free(c->span_memory[i]);
    for (size_t i = 0; i < 8; i++) free(c->mirror_memory[i]);
}

/* Writes bytes where the program's memory would take them: each byte into the first region that holds
 * it. A parser that let through a byte no region holds is a bug: trap. */
static void fuzz_write_memory(struct fuzz_call *c, uint64_t address, const uint8_t *bytes, uint64_t length) {
    for (uint64_t k = 0; k < length;) {
        uint64_t at = address + k;
        size_t i = 0;
        for (; i < c->bounds.region_count; i++) {
            uint64_t start = c->spans[i].address, stop = start + c->spans[i].length;
            if (stop < start) stop = UINT64_MAX;
            if (at >= start && at < stop) break;
        }
        if (i == c->bounds.region_count) __builtin_trap();
        uint64_t offset = at - c->spans[i].address;
        uint64_t n = c->spans[i].length - offset;
        if (n > length - k) n = length - k;
        memcpy(c->span_memory[i] + offset, bytes + k, n);
        k += n;
    }
}

/* Copies a checked mapping range into the mirror the parser matched (the first of its id). */
static void fuzz_write_mirror(struct fuzz_call *c, const struct pd_mapping_range *m, const uint8_t *bytes) {
    for (size_t i = 0; i < c->bounds.mirror_count; i++) {
        if (c->mirrors[i].id != m->mapping) continue;
        memcpy(c->mirror_memory[i] + m->offset, bytes, m->length);
        return;
    }
    __builtin_trap();
}

static void fuzz_apply_ranges(struct fuzz_call *c, const uint8_t *p, uint32_t count) {
    for (uint32_t i = 0; i < count; i++) {
        struct pd_mapping_range m;
        const uint8_t *bytes;
        p = pd_mapping_entry(p, &m, &bytes);
        fuzz_write_mirror(c, &m, bytes);
    }
}
#endif
