/* Pause points: named places in the C core where a test can stop a process on purpose,
   so that a spec that must kill a process "in the middle of X" puts it exactly there
   instead of hoping a timed kill lands. A process that has armed a point and reaches it
   records its pid in shared memory and waits, doing nothing, until it is killed:

       local p = core.pause_point("queue.put.copying")   -- before the fork
       local child = forage.process(function() p:arm(); q:put(big) end)
       child:start()
       local pid = p:wait(10)    -- the child is now stopped inside the lock, mid-copy
       child:kill()

   Unarmed, a point costs one load and one branch. Only the process that armed a point
   (not its parent, not its other children) stops there. */
#ifndef FORAGE_PAUSE_H
#define FORAGE_PAUSE_H

#include "lua.h"

/* The armed point's name in this process, or NULL. */
extern const char *pause_armed_name;

/* Cold and out of line: a point inside a hot loop (a queue's put) must cost its load and
   branch only, not the register spills of a call the compiler thinks it may take. */
__attribute__((cold, noinline)) void pause_reached(const char *name);

#define PAUSE_POINT(name)                                                   \
    do {                                                                    \
        if (__builtin_expect(pause_armed_name != NULL, 0)) pause_reached(name); \
    } while (0)

void forage_open_pause(lua_State *L);   /* core.pause_point(name) */

#endif
