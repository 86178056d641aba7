// fuzz-build: Sources/ParadicePreload/inheritance.c
/*
 * The preload's parse of PARADICE_INHERIT (pd_parse_inherited_head, pd_parse_inherited_entry) over an
 * arbitrary string, held in exactly its bytes and a NUL: the walk must end, each cursor must move forward
 * inside the string, and each accepted entry must be in the ranges files.c relies on when it adopts it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "inheritance.h"
#include "paradice_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    size_t length = strlen(text);
    struct pd_inherited_head head;
    const char *cursor = pd_parse_inherited_head(text, &head);
    if (cursor) {
        if (head.pid <= 0 || head.ticket == 0 || head.token == 0 || head.ahead_memory < -1) __builtin_trap();
        struct pd_inherited_entry e;
        for (;;) {
            const char *before = cursor;
            if ((cursor = pd_parse_inherited_entry(cursor, &e)) == NULL) break;
            if (cursor <= before || cursor > text + length) __builtin_trap();
            if (e.kind == 'f') {
                if (e.fd < 0 || e.fd > PD_INHERIT_MAX_FD || e.handle == 0 || (e.forked != 0 && e.forked != 1)
                    || e.ahead > PD_MAX_READ_AHEAD || (e.ahead > 0 && e.read_unit == 0) || e.flags < 0)
                    __builtin_trap();
            } else if (e.kind == 'd') {
                if (e.handle == 0) __builtin_trap();
            } else if (e.kind != 0 || e.handle != 0) {
                __builtin_trap();
            }
        }
    }
    free(text);
    return 0;
}
