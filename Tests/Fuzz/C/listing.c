// fuzz-build: Sources/ParadiceFrontendCore/parse.c
/*
 * PD_LISTDIR's reply parser (the preload's opendir and the guest daemon's listings): an entry count, then
 * arbitrary bytes. An accepted listing's names are read back byte by byte under ASan, and must hold no NUL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "paradice_frontend_parse.h"

static void each(const char *name, size_t name_length, uint8_t type, void *context) {
    (void)type;
    if (name_length == 0 || name_length > PD_MAX_NAME_LENGTH) __builtin_trap();
    for (size_t i = 0; i < name_length; i++) if (name[i] == 0) __builtin_trap();
    ++*(size_t *)context;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int64_t count = 0;
    if (size >= sizeof count) {
        memcpy(&count, data, sizeof count);
        data += sizeof count;
        size -= sizeof count;
    }
    uint8_t *body = malloc(size ? size : 1);
    memcpy(body, data, size);
    size_t seen = 0;
    const char *why = NULL;
    if (pd_parse_listing(body, size, count, each, &seen, &why) == 0) {
        if ((int64_t)seen != count) __builtin_trap();
    } else if (!why || seen != 0) {
        __builtin_trap();   /* a refused listing calls back for nothing */
    }
    free(body);
    return 0;
}
