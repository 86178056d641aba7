/*
 * Reply parsers of the frontend core: pure functions over a frame's bytes and what the call knows
 * (the regions it gathered, the mirrors it holds), touching neither the socket nor the program's memory,
 * so that they can be fuzzed on their own. Each checks every count and length against the bytes
 * received, and the trust model of docs/protocol.md ("Trust"): a reply may write only memory the
 * frontend sent for the call (or the program lent the file), and only mirrors of that file.
 */
#ifndef PARADICE_FRONTEND_PARSE_H
#define PARADICE_FRONTEND_PARSE_H
#include <stddef.h>
#include <stdint.h>
#include "paradice_wire.h"

/* A NEED round that has not converged after this many rounds fails the ioctl (EPROTO): an argument of
 * depth d takes d rounds, plus one for descriptors and one for mirrors. */
#define PD_MAX_NEED_ROUNDS 16
/* Regions one ioctl may gather, and their bytes in all: no request can carry more than a frame. */
#define PD_MAX_CALL_REGIONS 1024
#define PD_MAX_CALL_BYTES (PD_MAX_FRAME / 2)

struct pd_span { uint64_t address; uint64_t length; };
struct pd_mirror_span { uint32_t id; uint64_t length; };

/* What a reply may touch. */
struct pd_bounds {
    const struct pd_span *regions;          /* gathered for this call, and memory lent to the file */
    size_t region_count;
    const struct pd_mirror_span *mirrors;   /* mirrors this process holds of the file */
    size_t mirror_count;
    uint64_t gathered_bytes;                /* what this call gathered so far (NEED's budget) */
};

/* A checked PD_NEED body: the arrays lie inside it (entries unaligned: read them with memcpy). */
struct pd_need_view {
    struct pd_need need;
    const uint8_t *regions;    /* pd_region × need.region_count */
    const uint8_t *slots;      /* pd_slot × need.slot_count */
    const uint8_t *mappings;   /* pd_mapping_range × need.mapping_count */
};

/* A checked pd_ioctl_done and what follows it. */
struct pd_done_view {
    struct pd_ioctl_done done;
    const uint8_t *regions;    /* (pd_region, bytes, padding to 8) × done.region_count */
    const uint8_t *slots;      /* pd_slot × done.slot_count */
    const uint8_t *mappings;   /* (pd_mapping_range, bytes, padding) × done.mapping_count */
    const uint8_t *end;
};

/* Each returns 0, or EPROTO with *why naming the broken rule (a static string). */
int pd_parse_need(const uint8_t *body, size_t length, const struct pd_bounds *bounds, struct pd_need_view *out,
                  const char **why);
int pd_parse_done(const uint8_t *data, size_t length, const struct pd_bounds *bounds, struct pd_done_view *out,
                  const char **why);
/* `count` entries of (pd_mapping_range, bytes, padding) at p, each inside a mirror of `bounds`; *end: after them. */
int pd_parse_mapping_ranges(const uint8_t *p, size_t length, uint32_t count, const struct pd_bounds *bounds,
                            const uint8_t **end, const char **why);
/* PD_MMAP's reply data (after pd_reply): nothing, or pd_mapping_count and ranges, all of mapping `id`. */
int pd_parse_mmap_contents(const uint8_t *data, size_t length, uint32_t id, uint64_t mapping_length,
                           uint32_t *count, const uint8_t **ranges, const char **why);
/* The handshake's reply body: pd_hello_reply, then its device list, every entry inside the body. */
int pd_parse_hello(const uint8_t *body, size_t length, struct pd_hello_reply *out, const char **why);

/* PD_READ_AHEAD's reply data after pd_reply (revents its result): pd_read_ahead_done and its bytes, inside
 * the data, no more than read_max, a whole number of read_unit (> 0) and only when revents has POLLIN.
 * *bytes and *count: the bytes read ahead. */
int pd_parse_read_ahead(const uint8_t *data, size_t length, int64_t revents, uint32_t read_max, uint32_t read_unit,
                        const uint8_t **bytes, uint32_t *count, const char **why);

/* PD_LISTDIR's reply data: `count` entries of (pd_dirent, name, padding to 8), every name inside the data,
 * 1 to PD_MAX_NAME_LENGTH bytes without a NUL. Checks them all, then calls `each` for every entry: a
 * listing is taken whole or not at all. */
#define PD_MAX_NAME_LENGTH 255
int pd_parse_listing(const uint8_t *data, size_t length, int64_t count,
                     void (*each)(const char *name, size_t name_length, uint8_t type, void *context), void *context,
                     const char **why);

/* After a successful parse: the entry at p and where the next starts. */
const uint8_t *pd_region_entry(const uint8_t *p, struct pd_region *region, const uint8_t **bytes);
const uint8_t *pd_mapping_entry(const uint8_t *p, struct pd_mapping_range *range, const uint8_t **bytes);

/* 1 when [address, address + length) lies inside the union of `spans`. */
int pd_spans_cover(const struct pd_span *spans, size_t count, uint64_t address, uint64_t length);
#endif
