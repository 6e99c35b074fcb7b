/* A growable byte buffer: the one way bytes are accumulated in the C core. */
#ifndef FORAGE_BUF_H
#define FORAGE_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
} buf;

#define BUF_INIT {NULL, 0, 0}

/* Each returns 0, or -1 when memory runs out (the buffer is left as it was). */
int buf_reserve(buf *b, size_t extra);
int buf_append(buf *b, const void *p, size_t n);
int buf_putc(buf *b, unsigned char c);
void buf_reset(buf *b);   /* length 0, memory kept */
void buf_free(buf *b);    /* memory released; the buffer is reusable */

#endif
