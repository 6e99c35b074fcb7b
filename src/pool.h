/* What the parent side of a pool (pool.c) and its workers (worker.c) share besides their
   messages (pool_proto.h): the slot each worker shares with the parent, and the worker's
   entry points. */
#ifndef FORAGE_POOL_H
#define FORAGE_POOL_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "lua.h"

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

/* Adds to the config table at stack index config what every worker will need (the
   compiled loop over a task's items). Called in the parent, before the forks. */
void worker_prepare(lua_State *L, int config);

/* The life of a worker process: runs init from the config table at stack index config
   ({ init = fn, init_args = list }), says ready, then runs tasks until its task pipe
   ends. Never returns. */
_Noreturn void worker_main(lua_State *L, int config, int slot_index, shared_slot *slot, pid_t parent, int task_fd,
                           int result_fd);

#endif
