/* Reply parsers: see paradice_frontend_parse.h, and pd_reply_result (paradice_frontend.h). Every count is
 * checked against the bytes left before anything is read. */
#include "paradice_frontend.h"
#include <errno.h>
#include <poll.h>
#include <string.h>

#define FAIL(reason) do { *why = (reason); return EPROTO; } while (0)

static uint64_t padded(uint64_t n) { return (n + 7) / 8 * 8; }

int pd_spans_cover(const struct pd_span *spans, size_t count, uint64_t address, uint64_t length) {
    if (length == 0) return 1;
    if (address + length < address) return 0;
    uint64_t at = address, end = address + length;
    while (at < end) {
        int advanced = 0;
        for (size_t i = 0; i < count; i++) {
            uint64_t start = spans[i].address, stop = spans[i].address + spans[i].length;
            if (stop < start) stop = UINT64_MAX;   /* a span to the top of memory */
            if (at >= start && at < stop) { at = stop; advanced = 1; break; }
        }
        if (!advanced) return 0;
    }
    return 1;
}

static int slot_inside(const struct pd_slot *slot, const struct pd_bounds *bounds, const uint8_t *more, uint32_t more_count) {
    if (slot->width != 4 && slot->width != 8) return 0;
    if (pd_spans_cover(bounds->regions, bounds->region_count, slot->address, slot->width)) return 1;
    for (uint32_t i = 0; i < more_count; i++) {
        struct pd_region r;
        memcpy(&r, more + (size_t)i * sizeof r, sizeof r);
        if (slot->address >= r.address && slot->address + slot->width >= slot->address
            && slot->address + slot->width <= r.address + r.length && r.address + r.length >= r.address)
            return 1;
    }
    return 0;
}

static const struct pd_mirror_span *mirror_of(const struct pd_bounds *bounds, uint32_t id) {
    for (size_t i = 0; i < bounds->mirror_count; i++) if (bounds->mirrors[i].id == id) return &bounds->mirrors[i];
    return NULL;
}

static int range_inside(const struct pd_mapping_range *m, const struct pd_bounds *bounds) {
    const struct pd_mirror_span *mirror = mirror_of(bounds, m->mapping);
    return mirror && m->offset <= mirror->length && m->length <= mirror->length - m->offset;
}

int pd_parse_need(const uint8_t *body, size_t length, const struct pd_bounds *bounds, struct pd_need_view *out,
                  const char **why) {
    if (length < sizeof out->need) FAIL("PD_NEED shorter than pd_need");
    memcpy(&out->need, body, sizeof out->need);
    uint64_t need = (uint64_t)out->need.region_count * sizeof(struct pd_region)
                  + (uint64_t)out->need.slot_count * sizeof(struct pd_slot)
                  + (uint64_t)out->need.mapping_count * sizeof(struct pd_mapping_range);
    if (need > length - sizeof out->need) FAIL("PD_NEED counts past the frame");
    out->regions = body + sizeof out->need;
    out->slots = out->regions + (size_t)out->need.region_count * sizeof(struct pd_region);
    out->mappings = out->slots + (size_t)out->need.slot_count * sizeof(struct pd_slot);
    if (bounds->region_count + out->need.region_count > PD_MAX_CALL_REGIONS) FAIL("PD_NEED asks for too many regions");
    uint64_t total = bounds->gathered_bytes;
    for (uint32_t i = 0; i < out->need.region_count; i++) {
        struct pd_region r;
        memcpy(&r, out->regions + (size_t)i * sizeof r, sizeof r);
        if (r.address + r.length < r.address) FAIL("PD_NEED region wraps around memory");
        if (r.reserved & PD_REGION_OUT) continue;   /* named, not sent */
        total += r.length;
        if (total > PD_MAX_CALL_BYTES) FAIL("PD_NEED asks for more bytes than a request carries");
    }
    for (uint32_t i = 0; i < out->need.slot_count; i++) {
        struct pd_slot s;
        memcpy(&s, out->slots + (size_t)i * sizeof s, sizeof s);
        if (!slot_inside(&s, bounds, out->regions, out->need.region_count)) FAIL("PD_NEED slot outside the gathered regions");
    }
    for (uint32_t i = 0; i < out->need.mapping_count; i++) {
        struct pd_mapping_range m;
        memcpy(&m, out->mappings + (size_t)i * sizeof m, sizeof m);
        if (!range_inside(&m, bounds)) FAIL("PD_NEED mapping range outside the file's mirrors");
    }
    return 0;
}

int pd_parse_mapping_ranges(const uint8_t *p, size_t length, uint32_t count, const struct pd_bounds *bounds,
                            const uint8_t **end, const char **why) {
    size_t left = length;
    for (uint32_t i = 0; i < count; i++) {
        struct pd_mapping_range m;
        if (left < sizeof m) FAIL("mapping range past the frame");
        memcpy(&m, p, sizeof m);
        p += sizeof m;
        left -= sizeof m;
        if (padded(m.length) > left) FAIL("mapping bytes past the frame");
        if (!range_inside(&m, bounds)) FAIL("mapping range outside the file's mirrors");
        p += padded(m.length);
        left -= padded(m.length);
    }
    *end = p;
    return 0;
}

int pd_parse_done(const uint8_t *data, size_t length, const struct pd_bounds *bounds, struct pd_done_view *out,
                  const char **why) {
    if (length < sizeof out->done) FAIL("ioctl reply shorter than pd_ioctl_done");
    memcpy(&out->done, data, sizeof out->done);
    const uint8_t *p = data + sizeof out->done;
    size_t left = length - sizeof out->done;
    out->regions = p;
    for (uint32_t i = 0; i < out->done.region_count; i++) {
        struct pd_region r;
        if (left < sizeof r) FAIL("ioctl reply region past the frame");
        memcpy(&r, p, sizeof r);
        p += sizeof r;
        left -= sizeof r;
        if (padded(r.length) > left) FAIL("ioctl reply region bytes past the frame");
        if (!pd_spans_cover(bounds->regions, bounds->region_count, r.address, r.length))
            FAIL("ioctl reply writes memory the frontend did not send");
        p += padded(r.length);
        left -= padded(r.length);
    }
    out->slots = p;
    if ((uint64_t)out->done.slot_count * sizeof(struct pd_slot) > left) FAIL("ioctl reply slots past the frame");
    for (uint32_t i = 0; i < out->done.slot_count; i++) {
        struct pd_slot s;
        memcpy(&s, p, sizeof s);
        p += sizeof s;
        if (!slot_inside(&s, bounds, NULL, 0)) FAIL("ioctl reply slot outside the memory the frontend sent");
    }
    left -= (size_t)out->done.slot_count * sizeof(struct pd_slot);
    out->mappings = p;
    int r = pd_parse_mapping_ranges(p, left, out->done.mapping_count, bounds, &out->end, why);
    return r;
}

int pd_parse_mmap_contents(const uint8_t *data, size_t length, uint32_t id, uint64_t mapping_length,
                           uint32_t *count, const uint8_t **ranges, const char **why) {
    *count = 0;
    *ranges = data;
    if (length == 0) return 0;
    struct pd_mapping_count n;
    if (length < sizeof n) FAIL("PD_MMAP contents shorter than pd_mapping_count");
    memcpy(&n, data, sizeof n);
    struct pd_mirror_span only = { id, mapping_length };
    struct pd_bounds bounds = { .mirrors = &only, .mirror_count = 1 };
    const uint8_t *end;
    int r = pd_parse_mapping_ranges(data + sizeof n, length - sizeof n, n.count, &bounds, &end, why);
    if (r != 0) return r;
    *count = n.count;
    *ranges = data + sizeof n;
    return 0;
}

int pd_parse_read_ahead(const uint8_t *data, size_t length, int64_t revents, uint32_t read_max, uint32_t read_unit,
                        const uint8_t **bytes, uint32_t *count, const char **why) {
    struct pd_read_ahead_done done;
    if (length < sizeof done) FAIL("a poll's reply without its read-ahead");
    memcpy(&done, data, sizeof done);
    if (done.length > length - sizeof done) FAIL("read-ahead bytes past the reply");
    if (done.length > read_max) FAIL("more bytes read ahead than asked");
    if (read_unit == 0 || done.length % read_unit != 0) FAIL("bytes read ahead that are not whole read units");
    if (done.length > 0 && !(revents & POLLIN)) FAIL("bytes read ahead of a file not readable");
    *bytes = data + sizeof done;
    *count = done.length;
    return 0;
}

int pd_parse_listing(const uint8_t *data, size_t length, int64_t count,
                     void (*each)(const char *name, size_t name_length, uint8_t type, void *context), void *context,
                     const char **why) {
    if (count < 0 || (uint64_t)count > length / sizeof(struct pd_dirent)) FAIL("a listing of more entries than its bytes hold");
    const uint8_t *p = data, *end = data + length;
    for (int64_t i = 0; i < count; i++) {
        struct pd_dirent e;
        if ((size_t)(end - p) < sizeof e) FAIL("a listing entry past the reply");
        memcpy(&e, p, sizeof e);
        p += sizeof e;
        size_t padded = ((size_t)e.name_length + 7) / 8 * 8;
        if (e.name_length == 0 || e.name_length > PD_MAX_NAME_LENGTH) FAIL("a listing entry with no name or one too long");
        if ((size_t)(end - p) < padded) FAIL("a listing entry's name past the reply");
        if (memchr(p, 0, e.name_length)) FAIL("a listing entry's name holds a NUL");
        p += padded;
    }
    p = data;
    for (int64_t i = 0; i < count; i++) {
        struct pd_dirent e;
        memcpy(&e, p, sizeof e);
        p += sizeof e;
        if (each) each((const char *)p, e.name_length, e.type, context);
        p += ((size_t)e.name_length + 7) / 8 * 8;
    }
    return 0;
}

int pd_parse_hello(const uint8_t *body, size_t length, struct pd_hello_reply *out, const char **why) {
    if (length < sizeof *out) FAIL("handshake reply shorter than pd_hello_reply");
    memcpy(out, body, sizeof *out);
    if (out->magic != PD_MAGIC) FAIL("handshake reply without the protocol's magic");
    if (out->major != PD_VERSION_MAJOR) FAIL("handshake reply of another major version");
    const uint8_t *p = body + sizeof *out;
    size_t left = length - sizeof *out;
    for (uint32_t i = 0; i < out->device_count; i++) {
        struct pd_device d;
        if (left < sizeof d) FAIL("device entry past the frame");
        memcpy(&d, p, sizeof d);
        p += sizeof d;
        left -= sizeof d;
        uint64_t names = padded((uint64_t)d.path_length + d.class_length);
        if (names > left) FAIL("device names past the frame");
        p += names;
        left -= names;
    }
    return 0;
}

const uint8_t *pd_region_entry(const uint8_t *p, struct pd_region *region, const uint8_t **bytes) {
    memcpy(region, p, sizeof *region);
    *bytes = p + sizeof *region;
    return *bytes + padded(region->length);
}

const uint8_t *pd_mapping_entry(const uint8_t *p, struct pd_mapping_range *range, const uint8_t **bytes) {
    memcpy(range, p, sizeof *range);
    *bytes = p + sizeof *range;
    return *bytes + padded(range->length);
}

int pd_reply_broken(const struct pd_frame *f) {
    if (f->header.op != PD_REPLY || f->header.length < sizeof(struct pd_reply)) return 1;
    struct pd_reply r;
    memcpy(&r, f->body, sizeof r);
    return r.error == 0 && r.result < 0;
}

int64_t pd_reply_result(const struct pd_frame *f, const uint8_t **data, size_t *length) {
    if (data) *data = NULL;
    if (length) *length = 0;
    if (pd_reply_broken(f)) { errno = EPROTO; return -1; }
    struct pd_reply r;
    memcpy(&r, f->body, sizeof r);
    if (data) *data = f->body + sizeof r;
    if (length) *length = f->header.length - sizeof r;
    if (r.error != 0) { errno = r.error > 0 ? r.error : EPROTO; return -1; }
    return r.result;
}
