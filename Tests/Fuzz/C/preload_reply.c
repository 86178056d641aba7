// fuzz-build: Sources/ParadiceFrontendCore/parse.c
/*
 * The frontend core's reading of a plain PD_REPLY (pd_reply_result, pd_reply_broken) over an arbitrary
 * frame: the first two bytes are its op, the next eight the count a read asked for, the rest its body.
 * What the core then does with a read's answer is done here under ASan: the result's bytes are copied
 * into a buffer of exactly the asked size when the result passes the checks file.c makes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "paradice_frontend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 10) return 0;
    uint16_t op;
    uint64_t asked;
    memcpy(&op, data, 2);
    memcpy(&asked, data + 2, 8);
    asked %= 1 << 16;
    struct pd_frame f = { .descriptor = -1 };
    f.header.op = (op & 1) ? PD_REPLY : op;
    f.header.length = (uint32_t)(size - 10);
    f.body = malloc(f.header.length ? f.header.length : 1);
    memcpy(f.body, data + 10, f.header.length);
    const uint8_t *bytes = (const uint8_t *)1;
    size_t length = 12345;
    errno = 0;
    int64_t n = pd_reply_result(&f, &bytes, &length);
    int broken = pd_reply_broken(&f);
    if (broken && (n != -1 || errno != EPROTO || bytes != NULL || length != 0)) __builtin_trap();
    if (n < -1) __builtin_trap();                        /* a negative result always comes as -1 and an errno */
    if (n == -1 && errno == 0) __builtin_trap();
    if (!broken) {
        if (bytes != f.body + sizeof(struct pd_reply) || length != f.header.length - sizeof(struct pd_reply)) __builtin_trap();
        if (n >= 0 && (uint64_t)n <= asked && (uint64_t)n <= length) {
            uint8_t *into = malloc(asked ? asked : 1);
            memcpy(into, bytes, (size_t)n);
            free(into);
        }
    }
    free(f.body);
    return 0;
}
