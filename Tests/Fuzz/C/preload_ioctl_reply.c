// fuzz-build: Sources/ParadiceFrontendCore/parse.c
/*
 * The preload frontend's ioctl reply parsers (PD_NEED, and pd_ioctl_done after pd_reply) over arbitrary
 * bytes and an arbitrary call (fuzz_input.h), with the first body byte choosing the parser. What a parser
 * accepts is applied to memory of the call's regions and mirrors: ASan and the trap catch a write it
 * should have refused.
 */
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int done = data[0] & 1;
    struct fuzz_call c;
    if (!fuzz_call_read(data + 1, size - 1, &c)) { fuzz_call_free(&c); return 0; }
    /* The parser sees the body in a buffer of exactly its length, as a frame's body is. */
    uint8_t *body = malloc(c.length ? c.length : 1);
    memcpy(body, c.body, c.length);
    const char *why = NULL;
    if (done) {
        struct pd_done_view v;
        if (pd_parse_done(body, c.length, &c.bounds, &v, &why) == 0) {
            const uint8_t *p = v.regions;
            for (uint32_t i = 0; i < v.done.region_count; i++) {
                struct pd_region r;
                const uint8_t *bytes;
                p = pd_region_entry(p, &r, &bytes);
                fuzz_write_memory(&c, r.address, bytes, r.length);
            }
            for (uint32_t i = 0; i < v.done.slot_count; i++) {
                struct pd_slot s;
                memcpy(&s, v.slots + (size_t)i * sizeof s, sizeof s);
                uint8_t handle[8] = { 0 };
                fuzz_write_memory(&c, s.address, handle, s.width);
            }
            fuzz_apply_ranges(&c, v.mappings, v.done.mapping_count);
            if (v.end > body + c.length) __builtin_trap();
        } else if (!why) {
            __builtin_trap();   /* a refusal names its reason */
        }
    } else {
        struct pd_need_view v;
        if (pd_parse_need(body, c.length, &c.bounds, &v, &why) == 0) {
            const uint8_t *end = v.mappings + (size_t)v.need.mapping_count * sizeof(struct pd_mapping_range);
            if (end > body + c.length) __builtin_trap();
            uint64_t total = c.bounds.gathered_bytes;
            for (uint32_t i = 0; i < v.need.region_count; i++) {
                struct pd_region r;
                memcpy(&r, v.regions + (size_t)i * sizeof r, sizeof r);
                if (!(r.reserved & PD_REGION_OUT)) total += r.length;   /* named regions carry no bytes */
            }
            if (total > PD_MAX_CALL_BYTES) __builtin_trap();
            for (uint32_t i = 0; i < v.need.mapping_count; i++) {
                struct pd_mapping_range m;
                memcpy(&m, v.mappings + (size_t)i * sizeof m, sizeof m);
                int inside = 0;
                for (size_t k = 0; k < c.bounds.mirror_count && !inside; k++)
                    inside = c.mirrors[k].id == m.mapping && m.offset <= c.mirrors[k].length
                             && m.length <= c.mirrors[k].length - m.offset;
                if (!inside) __builtin_trap();
            }
        } else if (!why) {
            __builtin_trap();
        }
    }
    free(body);
    fuzz_call_free(&c);
    return 0;
}
