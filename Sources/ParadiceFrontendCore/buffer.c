#include "paradice_frontend.h"
#include <stdlib.h>
#include <string.h>

void pd_buffer_init(struct pd_buffer *b, size_t capacity) {
    b->capacity = capacity + sizeof(struct pd_header);
    b->data = malloc(b->capacity);
    b->length = sizeof(struct pd_header);
}

static void grow(struct pd_buffer *b, size_t more) {
    if (b->length + more <= b->capacity) return;
    while (b->length + more > b->capacity) b->capacity *= 2;
    b->data = realloc(b->data, b->capacity);
}

void pd_buffer_append(struct pd_buffer *b, const void *bytes, size_t n) {
    grow(b, n);
    if (bytes) memcpy(b->data + b->length, bytes, n); else memset(b->data + b->length, 0, n);
    b->length += n;
}

void pd_buffer_pad(struct pd_buffer *b) {
    static const uint8_t zeros[8];
    size_t pad = (8 - b->length % 8) % 8;
    if (pad) pd_buffer_append(b, zeros, pad);
}

void pd_buffer_free(struct pd_buffer *b) {
    free(b->data);
    b->data = NULL;
}
