/* The pool's messages, encoded and decoded (see pool_proto.h). */
#include "pool_proto.h"

#include <string.h>

#include "frame.h"

/* Bytes of each header, after the tag. */
#define TASK_HEADER_SIZE (8 + 4 + 1 + 4 + 8)
#define RESULT_HEADER_SIZE (8 + 8 + 4 + 4)
/* Where the task header's fields sit in a whole task message (frame header, tag, ...). */
#define TASK_FN_AT (FRAME_HEADER + 1 + 8)
#define TASK_SEQ_AT (FRAME_HEADER + 1 + 8 + 4 + 1 + 4)

int proto_begin(buf *b, int tag, size_t *at) {
    if (frame_begin(b, at) != 0) return -1;
    return buf_putc(b, (unsigned char)tag);
}

int proto_end(buf *b, size_t at) {
    return frame_end(b, at);
}

/* A message of tag with a body of n bytes. */
static int put_small(buf *b, int tag, const char *body, size_t n, const char *tail, size_t tn) {
    size_t at;
    if (proto_begin(b, tag, &at) != 0 || buf_append(b, body, n) != 0 || buf_append(b, tail, tn) != 0) return -1;
    return proto_end(b, at);
}

int proto_put_ready(buf *b) {
    return put_small(b, MSG_READY, NULL, 0, NULL, 0);
}

int proto_put_bounced(buf *b, uint64_t task) {
    char body[8];
    put_u64(body, task);
    return put_small(b, MSG_BOUNCED, body, sizeof body, NULL, 0);
}

int proto_put_function(buf *b, int tag, uint32_t fn, const char *blob, size_t len) {
    char body[4];
    put_u32(body, fn);
    return put_small(b, tag, body, sizeof body, blob, blob ? len : 0);
}

int proto_put_task_header(buf *b, const task_header *h) {
    char hdr[TASK_HEADER_SIZE];
    put_u64(hdr, h->task);
    put_u32(hdr + 8, h->fn);
    hdr[12] = (char)h->flags;
    put_u32(hdr + 13, h->count);
    put_u64(hdr + 17, h->seq);
    return buf_append(b, hdr, sizeof hdr);
}

void proto_task_set_fn(char *message, uint32_t fn) {
    put_u32(message + TASK_FN_AT, fn);
}

void proto_task_set_seq(char *message, uint64_t seq) {
    put_u64(message + TASK_SEQ_AT, seq);
}

int proto_get_task_header(const char *p, size_t n, task_header *h, const char **items, size_t *items_len) {
    if (n < TASK_HEADER_SIZE) return -1;
    h->task = get_u64(p);
    h->fn = get_u32(p + 8);
    h->flags = (uint8_t)p[12];
    h->count = get_u32(p + 13);
    h->seq = get_u64(p + 17);
    *items = p + TASK_HEADER_SIZE;
    *items_len = n - TASK_HEADER_SIZE;
    return 0;
}

int proto_begin_result(buf *b, size_t *at) {
    static const char zero[1 + RESULT_HEADER_SIZE];
    if (frame_begin(b, at) != 0) return -1;
    return buf_append(b, zero, sizeof zero);
}

size_t proto_result_body(size_t at) {
    return at + FRAME_HEADER + 1 + RESULT_HEADER_SIZE;
}

int proto_end_result(buf *b, size_t at, int tag, const result_header *h) {
    char *p = b->data + at + FRAME_HEADER;
    p[0] = (char)tag;
    put_u64(p + 1, h->task);
    put_u64(p + 9, h->ns);
    put_u32(p + 17, h->index);
    put_u32(p + 21, h->list_len);
    if (frame_end(b, at) == 0) return 0;
    b->len = at;
    return -1;
}

int proto_get_result_header(const char *p, size_t n, result_header *h, const char **body, size_t *body_len) {
    if (n < RESULT_HEADER_SIZE) return -1;
    h->task = get_u64(p);
    h->ns = get_u64(p + 8);
    h->index = get_u32(p + 16);
    h->list_len = get_u32(p + 20);
    if (n - RESULT_HEADER_SIZE < h->list_len) return -1;
    *body = p + RESULT_HEADER_SIZE;
    *body_len = n - RESULT_HEADER_SIZE;
    return 0;
}

int proto_get_function(const char *p, size_t n, uint32_t *fn, const char **blob, size_t *len) {
    if (n < 4) return -1;
    *fn = get_u32(p);
    *blob = p + 4;
    *len = n - 4;
    return 0;
}

int proto_get_bounced(const char *p, size_t n, uint64_t *task) {
    if (n < 8) return -1;
    *task = get_u64(p);
    return 0;
}

void proto_push_error(lua_State *L, int value_idx, const char *traceback) {
    value_idx = lua_absindex(L, value_idx);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, value_idx);
    lua_setfield(L, -2, "value");
    lua_pushstring(L, traceback ? traceback : "");
    lua_setfield(L, -2, "traceback");
}

void proto_push_error_message(lua_State *L, const char *msg) {
    lua_pushstring(L, msg);
    proto_push_error(L, -1, NULL);
    lua_remove(L, -2);
}

void proto_error_origin(lua_State *L, int idx, uint32_t index, pid_t pid) {
    idx = lua_absindex(L, idx);
    lua_pushinteger(L, (lua_Integer)index);
    lua_setfield(L, idx, "index");
    if (pid > 0) {
        lua_pushinteger(L, (lua_Integer)pid);
        lua_setfield(L, idx, "pid");
    }
}
