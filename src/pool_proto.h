/* The messages between the parent side of a pool (pool.c) and its workers (worker.c),
   defined once: their tags, their headers, and the functions that encode and decode them.
   Neither side reads or writes a message's bytes by itself.

   Each message is one frame (frame.h) whose payload starts with its tag. Items, results
   and functions travel in WIRE_CODE mode (the pool's own process tree); errors in
   WIRE_DATA. Integers are little-endian.

   parent -> worker
     MSG_DEFINE   u32 fn, wire(function)         define function fn
     MSG_FORGET   u32 fn                         forget it
     MSG_TASK     task_header, wire({ item1 .. itemN })
   worker -> parent
     MSG_READY                                   init ran
     MSG_INIT_FAILED  wire(error)                init failed; the worker exits
     MSG_DONE     result_header, wire({ result1 .. resultN })
     MSG_FAILED   result_header, wire({ results before index }), wire(error): the items
                  before index ran, the one at index failed
     MSG_BOUNCED  u64 task                       not run: the worker holds no resource

   An error is the table proto_push_error makes: { value = <the error value>,
   traceback = "..." }; the parent adds index and pid (proto_error_origin). */
#ifndef FORAGE_POOL_PROTO_H
#define FORAGE_POOL_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "lua.h"

enum {
    MSG_DEFINE = 'F',
    MSG_FORGET = 'U',
    MSG_TASK = 'T',
    MSG_READY = 'R',
    MSG_INIT_FAILED = 'I',
    MSG_DONE = 'D',
    MSG_FAILED = 'E',
    MSG_BOUNCED = 'B',
};

/* task_header.flags */
#define TASK_STAR 1         /* each item is an argument list */
#define TASK_ALL_VALUES 2   /* each result is the list of every value returned, { n = count, ... } */

typedef struct task_header {
    uint64_t task;    /* the pool's id of the task */
    uint32_t fn;      /* the function, as defined by MSG_DEFINE */
    uint8_t flags;
    uint32_t count;   /* items */
    uint64_t seq;     /* its number among the tasks sent to this worker (see shared_slot) */
} task_header;

typedef struct result_header {
    uint64_t task;
    uint64_t ns;        /* the time the task ran */
    uint32_t index;     /* results that follow (0-based index of the failed item in MSG_FAILED) */
    uint32_t list_len;  /* bytes of the encoded results list */
} result_header;

/* Each encoder appends one whole message to b and returns 0, or -1 when memory runs out
   or the message is over FRAME_MAX. */
int proto_put_ready(buf *b);
int proto_put_bounced(buf *b, uint64_t task);
/* MSG_DEFINE (with the encoded function) or MSG_FORGET (blob NULL). */
int proto_put_function(buf *b, int tag, uint32_t fn, const char *blob, size_t len);

/* A message whose body is written between begin and end: MSG_TASK (after
   proto_put_task_header, the items), MSG_INIT_FAILED (the error). *at is where the frame
   begins; proto_end returns -1 when the message is over FRAME_MAX. */
int proto_begin(buf *b, int tag, size_t *at);
int proto_end(buf *b, size_t at);

/* The task header, right after proto_begin(b, MSG_TASK, ...). */
int proto_put_task_header(buf *b, const task_header *h);
/* A task message kept whole (frame header included) is given its function id and its seq
   when it is sent, without encoding it again. */
void proto_task_set_fn(char *message, uint32_t fn);
void proto_task_set_seq(char *message, uint64_t seq);

/* A result: proto_begin_result reserves the header, the results (and the error) follow,
   and proto_end_result writes the header with tag MSG_DONE or MSG_FAILED and closes the
   frame (-1 when over FRAME_MAX: the frame is then removed, b as it was before). */
int proto_begin_result(buf *b, size_t *at);
int proto_end_result(buf *b, size_t at, int tag, const result_header *h);
/* Where the results list begins, for a result begun at at. */
size_t proto_result_body(size_t at);

/* Decoders take a payload after its tag (p, n); each returns 0, or -1 when it is too short
   to hold what its tag promises. */
int proto_get_task_header(const char *p, size_t n, task_header *h, const char **items, size_t *items_len);
int proto_get_result_header(const char *p, size_t n, result_header *h, const char **body, size_t *body_len);
int proto_get_function(const char *p, size_t n, uint32_t *fn, const char **blob, size_t *len);
int proto_get_bounced(const char *p, size_t n, uint64_t *task);

/* Pushes a task's error: { value = <the value at value_idx>, traceback = traceback or "" }. */
void proto_push_error(lua_State *L, int value_idx, const char *traceback);
/* The same with a message as the value. */
void proto_push_error_message(lua_State *L, const char *msg);
/* Sets on the error table at idx what the parent knows of it: the 0-based item that failed
   and the pid of the worker it failed in (0: none). */
void proto_error_origin(lua_State *L, int idx, uint32_t index, pid_t pid);

#endif
