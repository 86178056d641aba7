// fuzz-build: Sources/ParadiceFrontendCore/parse.c
/*
 * The frontend core's reading of a poll's read-ahead (pd_parse_read_ahead) over arbitrary reply data: the
 * first eight bytes are the poll's revents, the next four read_max and four read_unit, the rest the data
 * after pd_reply. What the core then does with accepted bytes is done here under ASan: they are copied
 * into a buffer of exactly read_max bytes, and must be whole read units of a readable file.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "paradice_frontend.h"
#include "paradice_frontend_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 16) return 0;
    int64_t revents;
    uint32_t read_max, read_unit;
    memcpy(&revents, data, 8);
    memcpy(&read_max, data + 8, 4);
    memcpy(&read_unit, data + 12, 4);
    read_max %= PD_MAX_READ_AHEAD + 1;
    size_t length = size - 16;
    uint8_t *body = malloc(length ? length : 1);   /* exactly the data: a read past it is ASan's to see */
    memcpy(body, data + 16, length);
    const uint8_t *bytes = NULL;
    uint32_t count = 0;
    const char *why = NULL;
    if (pd_parse_read_ahead(body, length, revents, read_max, read_unit, &bytes, &count, &why) == 0) {
        if (count > read_max || read_unit == 0 || count % read_unit || (count && !(revents & POLLIN))) __builtin_trap();
        uint8_t *into = malloc(read_max ? read_max : 1);
        memcpy(into, bytes, count);
        free(into);
    } else if (!why) {
        __builtin_trap();
    }
    free(body);
    return 0;
}
