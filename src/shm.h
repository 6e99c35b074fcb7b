/* Shared memory that survives a killed process: mappings inherited across fork, a robust
   process-shared lock, and a condition built on a futex so that a waiter killed while
   waiting leaves nothing behind. Every shared object (queue, sync, value, set, dict,
   lease) is built from these. */
#ifndef FORAGE_SHM_H
#define FORAGE_SHM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lua.h"

/* A zeroed MAP_SHARED | MAP_ANONYMOUS mapping of size bytes, or NULL (errno set).
   Processes forked after this call share it. */
void *shm_map(size_t size);
void shm_unmap(void *p, size_t size);

/* A robust, process-shared mutex. When its holder dies (SIGKILL included) the next
   acquire recovers it: the lock is made consistent and acquire reports recovered = 1, so
   the object can repair what an interrupted operation left (each object's operations are
   written so that there is nothing to repair, or say what they repair). */
typedef struct shm_lock {
    pthread_mutex_t mutex;
} shm_lock;

/* Returns 0, or an errno. */
int shm_lock_init(shm_lock *l);

/* A zeroed shared mapping of size bytes whose shm_lock at byte offset lock_at is
   initialised: the start of every shared object. NULL with errno set on failure (nothing
   is left mapped). */
void *shm_map_locked(size_t size, size_t lock_at);

/* Deadlines are absolute seconds on the monotonic clock (see now_seconds in clock.h);
   a negative deadline waits forever. */
double shm_deadline(double timeout);

/* Returns 0 when locked, ETIMEDOUT, or another errno. *recovered (may be NULL) is set to
   1 when the previous holder died holding it. */
int shm_lock_acquire(shm_lock *l, double deadline, int *recovered);
void shm_lock_release(shm_lock *l);
/* The thread id holding l (from the robust-futex word, which the kernel clears when the
   holder dies), 0 when free; and 1 when the last holder died holding it and no one has
   locked it since. Read without locking: a snapshot. */
pid_t shm_lock_holder(shm_lock *l);
int shm_lock_holder_died(shm_lock *l);

/* A condition: a futex word counting notifications. No waiter state lives in shared
   memory, so a waiter that dies leaves the condition as it was. Spurious wake-ups happen:
   callers re-check their predicate in a loop. */
typedef struct shm_cond {
    _Atomic uint32_t seq;
} shm_cond;

/* Releases l, waits for a notification or the deadline, re-acquires l (always, even on
   timeout). Returns 0, or ETIMEDOUT. *recovered as shm_lock_acquire. */
int shm_cond_wait(shm_cond *c, shm_lock *l, double deadline, int *recovered);
/* Wakes up to n waiters (INT32_MAX: all). */
void shm_cond_notify(shm_cond *c, int n);

/* Lua helpers shared by the shared-object types. */

/* Makes the shared object (a userdata) at idx known by id in this Lua state, so that the
   wire format can send it by reference inside the process tree: a process forked after
   this call finds the same object under the same id. Call it once, at creation. */
void shm_share(lua_State *L, int idx);
/* 1 and *id when the value at idx is a shared object, else 0. */
int shm_shared_id(lua_State *L, int idx, lua_Integer *id);
/* Pushes the shared object with this id and returns 1, or pushes nothing and returns 0
   (it was created after this process was forked, or elsewhere). */
int shm_push_shared(lua_State *L, lua_Integer id);

#endif
