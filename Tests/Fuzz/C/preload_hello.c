// fuzz-build: Sources/ParadiceFrontendCore/parse.c
/*
 * The preload frontend's handshake parser: pd_hello_reply and its device list over arbitrary bytes.
 * An accepted reply's device list is walked again here, reading every name byte under ASan.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "paradice_frontend_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *body = malloc(size ? size : 1);
    memcpy(body, data, size);
    struct pd_hello_reply hr;
    const char *why = NULL;
    if (pd_parse_hello(body, size, &hr, &why) == 0) {
        const uint8_t *p = body + sizeof hr;
        volatile uint8_t sum = 0;
        for (uint32_t i = 0; i < hr.device_count; i++) {
            struct pd_device d;
            memcpy(&d, p, sizeof d);
            p += sizeof d;
            for (uint64_t k = 0; k < (uint64_t)d.path_length + d.class_length; k++) sum += p[k];
            p += ((uint64_t)d.path_length + d.class_length + 7) / 8 * 8;
        }
        if (p > body + size) __builtin_trap();
    } else if (!why) {
        __builtin_trap();
    }
    free(body);
    return 0;
}
