/* What the parent side of a pool (pool.c) and its workers (worker.c) share: the slot a
   worker writes for the parent to read after its death, and the messages between them.

   Messages parent -> worker, one frame each, a tag byte first:
     'F' u32 id, wire(fn)                        define function id
     'U' u32 id                                  forget function id
     'T' u64 task, u32 fn, u8 flags, u32 count, u64 seq, wire({ item1 .. itemN })
         flags: TASK_STAR (each item is an argument list), TASK_ALL_VALUES (each result
         is the list of every value returned, { n = count, ... })
   Messages worker -> parent:
     'R'                                         ready: init ran
     'B' u64 task                                bounced: not run (no resource held)
     'I' wire(error)                             init failed; the worker exits
     'D' u64 task, u64 ns, u32 index, u32 count, u32 len, wire({ result1 .. })
     'E' the same, then wire(error): the items before index ran, the one at index failed.
   An error is { value = <the error value>, traceback = "..." }. Items, results and
   functions travel in WIRE_CODE mode (the pool's own process tree); errors in WIRE_DATA. */
#ifndef FORAGE_POOL_H
#define FORAGE_POOL_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "lua.h"

#define TASK_STAR 1
#define TASK_ALL_VALUES 2
#define TASK_HEADER (8 + 4 + 1 + 4 + 8)       /* after the tag */
#define RESULT_HEADER (8 + 8 + 4 + 4 + 4)     /* after the tag */

/* Shared by a worker and the parent. running_task is read once the worker died: which task
   was running, so that only that one counts an attempt. gate decides, task by task, who
   owns a task the worker has been sent but not started: the parent numbers the tasks it
   sends to one worker 1, 2, 3... (seq); the worker starts task seq only by moving gate from
   seq - 1 to seq, and the parent takes back every task after gate by moving gate to the
   last seq it sent. One compare-and-swap each: a task is run or taken back, never both. */
typedef struct shared_slot {
    _Atomic uint64_t running_task;   /* 0 between tasks */
    _Atomic uint64_t gate;           /* the last seq started or taken back */
} shared_slot;

/* Pushes an error table { value = msg, traceback = "" }: the shape of a task's error. */
void push_task_error(lua_State *L, const char *msg);

/* Adds to the config table at stack index config what every worker will need (the
   compiled loop over a task's items). Called in the parent, before the forks. */
void worker_prepare(lua_State *L, int config);

/* The life of a worker process: runs init from the config table at stack index config
   ({ init = fn, init_args = list }), says ready, then runs tasks until its task pipe
   ends. Never returns. */
_Noreturn void worker_main(lua_State *L, int config, int slot_index, shared_slot *slot, pid_t parent, int task_fd,
                           int result_fd);

#endif
