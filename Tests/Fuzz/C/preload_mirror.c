// fuzz-build: Sources/ParadiceFrontendCore/parse.c
/*
 * The preload frontend's mirror parsers: PD_MMAP's initial contents (first body byte even: of the first
 * mirror of the call) and mapping ranges pushed with a reply (odd: a pd_mapping_count, then ranges of any
 * of the file's mirrors). Accepted ranges are copied into the mirrors' memory under ASan.
 */
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int pushed = data[0] & 1;
    struct fuzz_call c;
    if (!fuzz_call_read(data + 1, size - 1, &c)) { fuzz_call_free(&c); return 0; }
    uint8_t *body = malloc(c.length ? c.length : 1);
    memcpy(body, c.body, c.length);
    const char *why = NULL;
    if (!pushed) {
        if (c.bounds.mirror_count > 0) {
            uint32_t count;
            const uint8_t *ranges;
            struct pd_mirror_span *first = &c.mirrors[0];
            if (pd_parse_mmap_contents(body, c.length, first->id, first->length, &count, &ranges, &why) == 0)
                fuzz_apply_ranges(&c, ranges, count);
            else if (!why)
                __builtin_trap();
        }
    } else if (c.length >= sizeof(struct pd_mapping_count)) {
        struct pd_mapping_count n;
        memcpy(&n, body, sizeof n);
        const uint8_t *end;
        if (pd_parse_mapping_ranges(body + sizeof n, c.length - sizeof n, n.count, &c.bounds, &end, &why) == 0) {
            if (end > body + c.length) __builtin_trap();
            fuzz_apply_ranges(&c, body + sizeof n, n.count);
        } else if (!why) {
            __builtin_trap();
        }
    }
    free(body);
    fuzz_call_free(&c);
    return 0;
}
