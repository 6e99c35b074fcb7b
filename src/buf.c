#include "buf.h"

#include <stdlib.h>
#include <string.h>

int buf_reserve(buf *b, size_t extra) {
    if (extra <= b->cap - b->len) return 0;
    if (extra > SIZE_MAX / 2 - b->len) return -1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(buf *b, const void *p, size_t n) {
    if (buf_reserve(b, n) != 0) return -1;
    if (n > 0) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_putc(buf *b, unsigned char c) {
    if (b->len == b->cap && buf_reserve(b, 1) != 0) return -1;
    b->data[b->len++] = (char)c;
    return 0;
}

void buf_reset(buf *b) { b->len = 0; }

void buf_free(buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
