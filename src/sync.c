/* Locks, semaphores, events, conditions and barriers shared between processes: each
   object is a page of shared memory mapped before the fork, guarded by a robust
   process-shared mutex (shm.h), so that a process killed at any point leaves the object
   usable by the others.

   forage.Lock and forage.RLock are the robust mutex itself, held across Lua calls: when a
   holder dies, the next acquire recovers the lock. The other types keep their state
   beside a mutex that is held for a few instructions inside one C call, never across a
   call into Lua, and wait on a shm_cond. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "lauxlib.h"
#include "luatype.h"
#include "pause.h"
#include "shm.h"

#define GUARD_TYPE "forage.Guard"
#define NOTIFY_ALL INT32_MAX

/* The start of every object's shared state. For a Lock or RLock, lock is the lock the
   user holds; for the others it guards the state that follows. changed is notified when
   that state changes (for a Condition: by notify). */
typedef struct sync_header {
    shm_lock lock;
    shm_cond changed;
} sync_header;

/* The userdata of every type: the shared state, or NULL once closed. */
typedef struct sync_object {
    sync_header *state;
} sync_object;

/* What differs between the types; the methods get their kind as upvalue 1. */
typedef struct sync_kind {
    const char *type;          /* the metatable name, "forage.Lock" */
    const char *noun;          /* how messages name it, "lock" */
    size_t state_size;
    /* Lockable kinds only (NULL for Event and Barrier). acquire returns 1, or 0 when the
       deadline passed; both raise on misuse, with nothing held. */
    int (*acquire)(lua_State *L, int self, double deadline);
    void (*release)(lua_State *L, int self);
    /* Lets go of what this process holds before the state is unmapped (may be NULL). */
    void (*let_go)(sync_header *state);
    /* Pushes the detail __tostring shows in parentheses. */
    void (*describe)(lua_State *L, int self);
    /* Pushes the property key of self and returns 1, or returns 0 (may be NULL). */
    int (*property)(lua_State *L, int self, const char *key);
    const luaL_Reg *methods;   /* beyond acquire, release, with and guard */
} sync_kind;

static const sync_kind *kind_of_method(lua_State *L) {
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* The object at index i, of the method's kind; raises when it is closed. */
static sync_object *check_object(lua_State *L, int i) {
    const sync_kind *kind = kind_of_method(L);
    sync_object *o = luaL_checkudata(L, i, kind->type);
    if (o->state == NULL) type_closed_error(L, kind->type);
    return o;
}

/* The shared state of the (checked) object at index i. */
static void *state_at(lua_State *L, int i) {
    return ((sync_object *)lua_touserdata(L, i))->state;
}

/* Takes the inner lock of a non-lock object, waiting without a deadline: it is only ever
   held for a few instructions (never across a wait or a call into Lua), and a holder's
   death frees it, so a timeout here would only make acquire(0) fail for nothing. Raises
   on an error, with nothing held. The updates made under it are one or two stores with no call
   in between (barrier_end_generation says what a kill between two leaves), but their
   maker may die before it notifies: whoever recovers the inner lock wakes every waiter,
   and they check the state again. */
static void hold_state(lua_State *L, sync_header *h) {
    int recovered;
    int rc = shm_lock_acquire(&h->lock, -1, &recovered);
    if (rc != 0) luaL_error(L, "cannot lock shared state: %s", strerror(rc));
    if (recovered) shm_cond_notify(&h->changed, NOTIFY_ALL);
}

/* Waits on changed, releasing the inner lock meanwhile. Returns 0, or ETIMEDOUT. */
static int wait_state(sync_header *h, double deadline) {
    int recovered;
    int rc = shm_cond_wait(&h->changed, &h->lock, deadline, &recovered);
    if (recovered) shm_cond_notify(&h->changed, NOTIFY_ALL);
    return rc;
}

/* --------------------------------------------------------------- who holds a lock */

static int held_here(shm_lock *l) {
    return shm_lock_holder(l) == gettid();
}

static void push_holder(lua_State *L, shm_lock *l, const char *extra_format, lua_Integer extra) {
    pid_t holder = shm_lock_holder(l);
    if (holder != 0) {
        lua_pushfstring(L, "locked by %d", (int)holder);
        if (extra_format != NULL) {
            lua_pushfstring(L, extra_format, extra);
            lua_concat(L, 2);
        }
    } else if (shm_lock_holder_died(l)) {
        lua_pushliteral(L, "unlocked: its holder died");
    } else {
        lua_pushliteral(L, "unlocked");
    }
}

/* ------------------------------------------------------------------------- Lock */

typedef struct lock_state {
    sync_header h;
} lock_state;

/* A robust mutex cannot be re-locked by its holder: without a deadline that would wait
   forever, so it raises; with one, it waits it out and fails, as Python's Lock does. */
static int lock_acquire(lua_State *L, int self, double deadline) {
    lock_state *s = state_at(L, self);
    if (deadline < 0 && held_here(&s->h.lock))
        luaL_error(L, "lock: acquire would deadlock: already held by this process");
    int rc = shm_lock_acquire(&s->h.lock, deadline, NULL);
    if (rc == ETIMEDOUT) return 0;
    if (rc != 0) luaL_error(L, "lock: cannot acquire: %s", strerror(rc));
    PAUSE_POINT("lock.acquired");
    return 1;
}

/* Only the holder may release: the kernel frees a robust mutex for the holder's death,
   which is what makes a killed holder harmless. */
static void lock_release(lua_State *L, int self) {
    lock_state *s = state_at(L, self);
    if (held_here(&s->h.lock)) {
        PAUSE_POINT("lock.releasing");
        shm_lock_release(&s->h.lock);
        return;
    }
    if (shm_lock_holder(&s->h.lock) == 0) luaL_error(L, "release unlocked lock");
    luaL_error(L, "cannot release un-acquired lock");
}

static void lock_let_go(sync_header *h) {
    if (held_here(&h->lock)) shm_lock_release(&h->lock);
}

static void lock_describe(lua_State *L, int self) {
    lock_state *s = state_at(L, self);
    push_holder(L, &s->h.lock, NULL, 0);
}

/* lock:locked() -> true when some process holds the lock. */
static int lock_locked(lua_State *L) {
    lock_state *s = (lock_state *)check_object(L, 1)->state;
    lua_pushboolean(L, shm_lock_holder(&s->h.lock) != 0);
    return 1;
}

/* ------------------------------------------------------------------------ RLock */

typedef struct rlock_state {
    sync_header h;
    lua_Integer count;   /* meaningful while held: the holder's acquires not yet released */
} rlock_state;

/* The count belongs to the holder: a process that acquires the lock afresh (a dead
   holder's lock included) starts it at 1. */
static int rlock_acquire(lua_State *L, int self, double deadline) {
    rlock_state *s = state_at(L, self);
    if (held_here(&s->h.lock)) {
        s->count++;
        return 1;
    }
    int rc = shm_lock_acquire(&s->h.lock, deadline, NULL);
    if (rc == ETIMEDOUT) return 0;
    if (rc != 0) luaL_error(L, "rlock: cannot acquire: %s", strerror(rc));
    PAUSE_POINT("rlock.acquired");
    s->count = 1;
    return 1;
}

static void rlock_release(lua_State *L, int self) {
    rlock_state *s = state_at(L, self);
    if (!held_here(&s->h.lock)) luaL_error(L, "cannot release un-acquired lock");
    if (--s->count == 0) shm_lock_release(&s->h.lock);
}

static void rlock_let_go(sync_header *h) {
    rlock_state *s = (rlock_state *)h;
    if (held_here(&h->lock)) {
        s->count = 0;
        shm_lock_release(&h->lock);
    }
}

static void rlock_describe(lua_State *L, int self) {
    rlock_state *s = state_at(L, self);
    push_holder(L, &s->h.lock, ", count %I", s->count);
}

/* -------------------------------------------------------------------- Semaphore */

typedef struct semaphore_state {
    sync_header h;
    lua_Integer value;
    lua_Integer bound;   /* the initial value of a bounded semaphore; -1 when unbounded */
} semaphore_state;

static int semaphore_acquire(lua_State *L, int self, double deadline) {
    semaphore_state *s = state_at(L, self);
    hold_state(L, &s->h);
    PAUSE_POINT("semaphore.acquire.locked");
    while (s->value == 0) {
        if (wait_state(&s->h, deadline) == ETIMEDOUT && s->value == 0) {
            shm_lock_release(&s->h.lock);
            return 0;
        }
    }
    int more = --s->value > 0;
    PAUSE_POINT("semaphore.acquire.taken");
    shm_lock_release(&s->h.lock);
    /* Pass the wake-up on: a release of n wakes n waiters, but a newcomer may have taken
       a permit meant for one of them. */
    if (more) shm_cond_notify(&s->h.changed, 1);
    return 1;
}

/* Returns NULL, or why the n permits cannot be returned. */
static const char *semaphore_give(lua_State *L, semaphore_state *s, lua_Integer n) {
    const char *refused = NULL;
    hold_state(L, &s->h);
    PAUSE_POINT("semaphore.release.locked");
    if (n > INT64_MAX - s->value || (s->bound >= 0 && s->value + n > s->bound))
        refused = "semaphore released too many times";
    else
        s->value += n;
    shm_lock_release(&s->h.lock);
    if (refused == NULL) shm_cond_notify(&s->h.changed, n > NOTIFY_ALL ? NOTIFY_ALL : (int)n);
    return refused;
}

static void semaphore_release(lua_State *L, int self) {
    const char *refused = semaphore_give(L, state_at(L, self), 1);
    if (refused != NULL) luaL_error(L, "%s", refused);
}

/* sem:release([n = 1]): returns n permits; raises past a bounded semaphore's initial value. */
static int semaphore_release_n(lua_State *L) {
    semaphore_state *s = (semaphore_state *)check_object(L, 1)->state;
    lua_Integer n = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, n >= 1, 2, "n must be at least 1");
    const char *refused = semaphore_give(L, s, n);
    if (refused != NULL) return luaL_error(L, "%s", refused);
    return 0;
}

/* sem:get_value() -> the permits available now. */
static int semaphore_get_value(lua_State *L) {
    semaphore_state *s = (semaphore_state *)check_object(L, 1)->state;
    hold_state(L, &s->h);
    lua_Integer value = s->value;
    shm_lock_release(&s->h.lock);
    lua_pushinteger(L, value);
    return 1;
}

static void semaphore_describe(lua_State *L, int self) {
    semaphore_state *s = state_at(L, self);
    hold_state(L, &s->h);
    lua_Integer value = s->value, bound = s->bound;
    shm_lock_release(&s->h.lock);
    if (bound >= 0) lua_pushfstring(L, "value %I/%I", value, bound);
    else lua_pushfstring(L, "value %I", value);
}

/* ------------------------------------------------------------------------ Event */

typedef struct event_state {
    sync_header h;
    int flag;
} event_state;

static void event_store(lua_State *L, int set) {
    event_state *s = (event_state *)check_object(L, 1)->state;
    hold_state(L, &s->h);
    s->flag = set;
    shm_lock_release(&s->h.lock);
    if (set) shm_cond_notify(&s->h.changed, NOTIFY_ALL);
}

/* ev:set(): wakes every waiter; ev:clear(). */
static int event_set(lua_State *L) {
    event_store(L, 1);
    return 0;
}

static int event_clear(lua_State *L) {
    event_store(L, 0);
    return 0;
}

/* ev:is_set() -> boolean. */
static int event_is_set(lua_State *L) {
    event_state *s = (event_state *)check_object(L, 1)->state;
    hold_state(L, &s->h);
    int flag = s->flag;
    shm_lock_release(&s->h.lock);
    lua_pushboolean(L, flag);
    return 1;
}

/* ev:wait([timeout]) -> true once set, false when the timeout passed first. */
static int event_wait(lua_State *L) {
    event_state *s = (event_state *)check_object(L, 1)->state;
    double deadline = shm_deadline(args_timeout(L, 2));
    hold_state(L, &s->h);
    while (!s->flag && wait_state(&s->h, deadline) != ETIMEDOUT) {}
    int flag = s->flag;
    shm_lock_release(&s->h.lock);
    lua_pushboolean(L, flag);
    return 1;
}

static void event_describe(lua_State *L, int self) {
    event_state *s = state_at(L, self);
    hold_state(L, &s->h);
    int flag = s->flag;
    shm_lock_release(&s->h.lock);
    if (flag) lua_pushliteral(L, "set");
    else lua_pushliteral(L, "unset");
}

/* -------------------------------------------------------------------- Condition */

/* A condition's own state is its header's changed; its lock (a forage.Lock or
   forage.RLock) is its uservalue. */

static const sync_kind lock_kind, rlock_kind;

/* Pushes the lock of the condition at self; returns its kind. Raises when it is closed. */
static const sync_kind *push_condition_lock(lua_State *L, int self) {
    lua_getiuservalue(L, self, 1);
    const sync_kind *kind = luaL_testudata(L, -1, lock_kind.type) != NULL ? &lock_kind : &rlock_kind;
    if (state_at(L, -1) == NULL) type_closed_error(L, kind->type);
    return kind;
}

static int condition_acquire(lua_State *L, int self, double deadline) {
    const sync_kind *kind = push_condition_lock(L, self);
    int acquired = kind->acquire(L, lua_gettop(L), deadline);
    lua_pop(L, 1);
    return acquired;
}

static void condition_release(lua_State *L, int self) {
    const sync_kind *kind = push_condition_lock(L, self);
    kind->release(L, lua_gettop(L));
    lua_pop(L, 1);
}

static void condition_describe(lua_State *L, int self) {
    lua_getiuservalue(L, self, 1);
    int lock = lua_gettop(L);
    const sync_kind *kind = luaL_testudata(L, lock, lock_kind.type) != NULL ? &lock_kind : &rlock_kind;
    lua_pushfstring(L, "%s ", kind->noun);
    if (state_at(L, lock) != NULL) kind->describe(L, lock);
    else lua_pushliteral(L, "closed");
    lua_concat(L, 2);
    lua_remove(L, lock);
}

/* The condition's lock, which this process must hold (else raises "cannot <verb> on
   un-acquired lock"); pushes it. */
static sync_header *held_condition_lock(lua_State *L, int self, const char *verb, const sync_kind **kind) {
    *kind = push_condition_lock(L, self);
    sync_header *lock = state_at(L, -1);
    if (!held_here(&lock->lock)) luaL_error(L, "cannot %s on un-acquired lock", verb);
    return lock;
}

/* Releases the lock fully (an RLock whatever its count), waits, and takes it back with
   its count, as Python does. Returns 1 when notified, 0 on timeout. */
static int condition_wait_until(lua_State *L, int self, double deadline) {
    sync_header *cond = state_at(L, self);
    const sync_kind *kind;
    sync_header *lock = held_condition_lock(L, self, "wait", &kind);
    lua_pop(L, 1);
    rlock_state *rlock = kind == &rlock_kind ? (rlock_state *)lock : NULL;
    lua_Integer count = rlock != NULL ? rlock->count : 0;
    int rc = shm_cond_wait(&cond->changed, &lock->lock, deadline, NULL);
    if (rlock != NULL) rlock->count = count;
    return rc != ETIMEDOUT;
}

/* cond:wait([timeout]) -> true when notified (or woken spuriously), false on timeout.
   The lock is held again on return either way. */
static int condition_wait(lua_State *L) {
    check_object(L, 1);
    double deadline = shm_deadline(args_timeout(L, 2));
    lua_pushboolean(L, condition_wait_until(L, 1, deadline));
    return 1;
}

/* cond:wait_for(predicate [, timeout]) -> predicate's last result: waits until it is
   true or the timeout passes, as Python's wait_for. */
static int condition_wait_for(lua_State *L) {
    check_object(L, 1);
    luaL_checkany(L, 2);
    double deadline = shm_deadline(args_timeout(L, 3));
    const sync_kind *kind;
    held_condition_lock(L, 1, "wait", &kind);
    lua_settop(L, 2);
    for (;;) {
        lua_pushvalue(L, 2);
        lua_call(L, 0, 1);
        if (lua_toboolean(L, -1)) return 1;
        if (deadline >= 0 && shm_deadline(0) >= deadline) return 1;
        lua_pop(L, 1);
        condition_wait_until(L, 1, deadline);
    }
}

/* cond:notify([n = 1]) wakes up to n waiters; cond:notify_all() wakes them all. */
static int condition_notify(lua_State *L) {
    sync_header *cond = check_object(L, 1)->state;
    lua_Integer n = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, n >= 0, 2, "n must not be negative");
    const sync_kind *kind;
    held_condition_lock(L, 1, "notify", &kind);
    if (n > 0) shm_cond_notify(&cond->changed, n > NOTIFY_ALL ? NOTIFY_ALL : (int)n);
    return 0;
}

static int condition_notify_all(lua_State *L) {
    sync_header *cond = check_object(L, 1)->state;
    const sync_kind *kind;
    held_condition_lock(L, 1, "notify", &kind);
    shm_cond_notify(&cond->changed, NOTIFY_ALL);
    return 0;
}

/* ---------------------------------------------------------------------- Barrier */

typedef struct barrier_state {
    sync_header h;
    lua_Integer parties;
    lua_Integer count;        /* arrived in the current generation */
    uint64_t generation;      /* ended generations: each trip or reset ends one */
    uint64_t reset_ended;     /* bit g % 64 set when generation g ended by reset */
    int broken;
    double timeout;           /* the default of wait, -1 for none */
} barrier_state;

/* Called with the inner lock held: ends the current generation. The store to generation
   comes last: a process killed before it leaves the generation running, without the
   arrivals counted so far (they wait for parties more, or their timeout). */
static void barrier_end_generation(barrier_state *s, int by_reset) {
    uint64_t bit = (uint64_t)1 << (s->generation % 64);
    if (by_reset) s->reset_ended |= bit;
    else s->reset_ended &= ~bit;
    s->count = 0;
    s->generation++;
}

/* Returns the arrival index, or -1 when the barrier is or becomes broken. */
static lua_Integer barrier_arrive(lua_State *L, barrier_state *s, double deadline) {
    hold_state(L, &s->h);
    if (s->broken) {
        shm_lock_release(&s->h.lock);
        return -1;
    }
    lua_Integer index = s->count++;
    uint64_t generation = s->generation;
    if (s->count == s->parties) {
        barrier_end_generation(s, 0);
        shm_lock_release(&s->h.lock);
        shm_cond_notify(&s->h.changed, NOTIFY_ALL);
        return index;
    }
    for (;;) {
        if (s->generation != generation) {
            /* Ended while we slept. A waiter more than 64 generations late (others went
               through the barrier 64 times before it woke) is told it went through. */
            int reset = s->generation - generation <= 64 && (s->reset_ended >> (generation % 64) & 1);
            if (reset) index = -1;
            break;
        }
        if (s->broken) {
            index = -1;
            break;
        }
        if (wait_state(&s->h, deadline) == ETIMEDOUT &&
            s->generation == generation && !s->broken) {
            /* As Python: a timeout breaks the barrier for everyone. */
            s->broken = 1;
            shm_lock_release(&s->h.lock);
            shm_cond_notify(&s->h.changed, NOTIFY_ALL);
            return -1;
        }
    }
    shm_lock_release(&s->h.lock);
    return index;
}

/* b:wait([timeout]) -> the arrival index, 0 .. parties - 1 (the last to arrive gets
   parties - 1); nil, "broken", "broken" when the barrier is broken, aborted, reset while waiting,
   or the timeout (the barrier's default when none) passed, which breaks it. */
static int barrier_wait(lua_State *L) {
    barrier_state *s = (barrier_state *)check_object(L, 1)->state;
    double timeout = lua_isnoneornil(L, 2) ? s->timeout : args_timeout(L, 2);
    lua_Integer index = barrier_arrive(L, s, shm_deadline(timeout));
    if (index < 0) return args_fail(L, "broken", "broken");
    lua_pushinteger(L, index);
    return 1;
}

/* b:reset(): back to empty and unbroken; processes waiting get nil, "broken". */
static int barrier_reset(lua_State *L) {
    barrier_state *s = (barrier_state *)check_object(L, 1)->state;
    hold_state(L, &s->h);
    barrier_end_generation(s, 1);
    s->broken = 0;
    shm_lock_release(&s->h.lock);
    shm_cond_notify(&s->h.changed, NOTIFY_ALL);
    return 0;
}

/* b:abort(): breaks the barrier until reset. */
static int barrier_abort(lua_State *L) {
    barrier_state *s = (barrier_state *)check_object(L, 1)->state;
    hold_state(L, &s->h);
    s->broken = 1;
    shm_lock_release(&s->h.lock);
    shm_cond_notify(&s->h.changed, NOTIFY_ALL);
    return 0;
}

/* b.parties, b.n_waiting (0 while broken, as Python), b.broken. */
static int barrier_property(lua_State *L, int self, const char *key) {
    if (strcmp(key, "parties") != 0 && strcmp(key, "n_waiting") != 0 && strcmp(key, "broken") != 0) return 0;
    barrier_state *s = state_at(L, self);
    hold_state(L, &s->h);
    lua_Integer parties = s->parties, count = s->count;
    int broken = s->broken;
    shm_lock_release(&s->h.lock);
    if (strcmp(key, "parties") == 0) lua_pushinteger(L, parties);
    else if (strcmp(key, "n_waiting") == 0) lua_pushinteger(L, broken ? 0 : count);
    else lua_pushboolean(L, broken);
    return 1;
}

static void barrier_describe(lua_State *L, int self) {
    barrier_state *s = state_at(L, self);
    hold_state(L, &s->h);
    lua_Integer count = s->count;
    int broken = s->broken;
    shm_lock_release(&s->h.lock);
    if (broken) lua_pushliteral(L, "broken");
    else lua_pushfstring(L, "%I/%I waiting", count, s->parties);
}

/* ------------------------------------------------------------ the kinds' tables */

static const luaL_Reg lock_methods[] = {{"locked", lock_locked}, {NULL, NULL}};
static const luaL_Reg semaphore_methods[] = {
    {"release", semaphore_release_n}, {"get_value", semaphore_get_value}, {NULL, NULL},
};
static const luaL_Reg event_methods[] = {
    {"set", event_set}, {"clear", event_clear}, {"is_set", event_is_set}, {"wait", event_wait}, {NULL, NULL},
};
static const luaL_Reg condition_methods[] = {
    {"wait", condition_wait}, {"wait_for", condition_wait_for}, {"notify", condition_notify},
    {"notify_all", condition_notify_all}, {NULL, NULL},
};
static const luaL_Reg barrier_methods[] = {
    {"wait", barrier_wait}, {"reset", barrier_reset}, {"abort", barrier_abort}, {NULL, NULL},
};

static const sync_kind lock_kind = {
    "forage.Lock", "lock", sizeof(lock_state),
    lock_acquire, lock_release, lock_let_go, lock_describe, NULL, lock_methods,
};
static const sync_kind rlock_kind = {
    "forage.RLock", "rlock", sizeof(rlock_state),
    rlock_acquire, rlock_release, rlock_let_go, rlock_describe, NULL, NULL,
};
static const sync_kind semaphore_kind = {
    "forage.Semaphore", "semaphore", sizeof(semaphore_state),
    semaphore_acquire, semaphore_release, NULL, semaphore_describe, NULL, semaphore_methods,
};
static const sync_kind bounded_semaphore_kind = {
    "forage.BoundedSemaphore", "semaphore", sizeof(semaphore_state),
    semaphore_acquire, semaphore_release, NULL, semaphore_describe, NULL, semaphore_methods,
};
static const sync_kind event_kind = {
    "forage.Event", "event", sizeof(event_state),
    NULL, NULL, NULL, event_describe, NULL, event_methods,
};
static const sync_kind condition_kind = {
    "forage.Condition", "condition", sizeof(sync_header),
    condition_acquire, condition_release, NULL, condition_describe, NULL, condition_methods,
};
static const sync_kind barrier_kind = {
    "forage.Barrier", "barrier", sizeof(barrier_state),
    NULL, NULL, NULL, barrier_describe, barrier_property, barrier_methods,
};

/* ------------------------------------------------- what every type shares */

/* A new object of kind: created closed, then mapped, so that an error leaves nothing
   behind (the mapping is the userdata's from then on). Returns its state, zeroed. */
static void *new_object(lua_State *L, const sync_kind *kind, int user_values) {
    sync_object *o = lua_newuserdatauv(L, sizeof *o, user_values);
    o->state = NULL;
    luaL_setmetatable(L, kind->type);
    sync_header *h = shm_map_locked(kind->state_size, offsetof(sync_header, lock));
    if (h == NULL) luaL_error(L, "%s: cannot map shared memory: %s", kind->noun, strerror(errno));
    o->state = h;
    shm_share(L, -1);
    return h;
}

/* obj:acquire([timeout]) -> true, or false when the timeout passed. */
static int sync_acquire(lua_State *L) {
    check_object(L, 1);
    double deadline = shm_deadline(args_timeout(L, 2));
    lua_pushboolean(L, kind_of_method(L)->acquire(L, 1, deadline));
    return 1;
}

/* obj:release(): raises when this process cannot release it. */
static int sync_release(lua_State *L) {
    check_object(L, 1);
    kind_of_method(L)->release(L, 1);
    return 0;
}

/* obj:with(fn, ...) -> fn's results: acquires (waiting as long as it takes), calls
   fn(...), releases, and raises fn's error (released first) when it fails. */
static int sync_with(lua_State *L) {
    const sync_kind *kind = kind_of_method(L);
    check_object(L, 1);
    luaL_checkany(L, 2);
    kind->acquire(L, 1, -1);
    if (lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0) != LUA_OK) {
        /* fn's error wins over a release that fails too (fn released it itself). */
        lua_pushlightuserdata(L, (void *)kind);
        lua_pushcclosure(L, sync_release, 1);
        lua_pushvalue(L, 1);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
        return lua_error(L);
    }
    check_object(L, 1);   /* fn may have closed it */
    kind->release(L, 1);
    return lua_gettop(L) - 1;
}

/* A guard: releases its object once, when closed. */
typedef struct guard {
    const sync_kind *kind;
    int held;
} guard;

/* local g <close> = obj:guard([timeout]): acquires, and releases when g goes out of
   scope (an error included). Raises "<noun>: acquire timed out" on timeout. */
static int sync_guard(lua_State *L) {
    const sync_kind *kind = kind_of_method(L);
    check_object(L, 1);
    double deadline = shm_deadline(args_timeout(L, 2));
    guard *g = lua_newuserdatauv(L, sizeof *g, 1);   /* before acquiring: no memory error after */
    g->kind = kind;
    g->held = 0;
    luaL_setmetatable(L, GUARD_TYPE);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    if (!kind->acquire(L, 1, deadline)) return luaL_error(L, "%s: acquire timed out", kind->noun);
    g->held = 1;
    return 1;
}

/* g:release(), __close: releases the guarded object once. */
static int guard_release(lua_State *L) {
    guard *g = luaL_checkudata(L, 1, GUARD_TYPE);
    if (!g->held) return 0;
    g->held = 0;
    lua_getiuservalue(L, 1, 1);
    if (state_at(L, -1) == NULL) return type_closed_error(L, g->kind->type);
    g->kind->release(L, lua_gettop(L));
    return 0;
}

static int guard_tostring(lua_State *L) {
    guard *g = luaL_checkudata(L, 1, GUARD_TYPE);
    lua_pushfstring(L, "forage.Guard (%s, %s)", g->kind->type, g->held ? "held" : "released");
    return 1;
}

/* __gc, __close: lets go of what this process holds and unmaps; idempotent. In a child
   it only unmaps the child's view: the other processes keep the object. */
static int sync_close(lua_State *L) {
    const sync_kind *kind = kind_of_method(L);
    sync_object *o = luaL_checkudata(L, 1, kind->type);
    if (o->state == NULL) return 0;
    /* glibc links the robust mutexes a thread holds through the mutexes themselves:
       one must not be unmapped while held. */
    if (kind->let_go != NULL) kind->let_go(o->state);
    shm_unmap(o->state, kind->state_size);
    o->state = NULL;
    return 0;
}

static int sync_tostring(lua_State *L) {
    const sync_kind *kind = kind_of_method(L);
    sync_object *o = luaL_checkudata(L, 1, kind->type);
    if (o->state == NULL) {
        lua_pushfstring(L, "%s (closed)", kind->type);
        return 1;
    }
    lua_pushfstring(L, "%s (", kind->type);
    kind->describe(L, 1);
    lua_pushliteral(L, ")");
    lua_concat(L, 3);
    return 1;
}

/* __index of a kind with properties: the property, else the method (upvalue 2). */
static int sync_index(lua_State *L) {
    const sync_kind *kind = kind_of_method(L);
    sync_object *o = luaL_checkudata(L, 1, kind->type);
    if (o->state != NULL && lua_type(L, 2) == LUA_TSTRING && kind->property(L, 1, lua_tostring(L, 2))) return 1;
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2));
    return 1;
}

/* -------------------------------------------------------------- constructors */

/* forage.lock() -> an unlocked Lock. */
static int lock_new(lua_State *L) {
    new_object(L, &lock_kind, 0);
    return 1;
}

/* forage.rlock() -> an unlocked RLock. */
static int rlock_new(lua_State *L) {
    new_object(L, &rlock_kind, 0);
    return 1;
}

static int new_semaphore(lua_State *L, const sync_kind *kind, int bounded) {
    lua_Integer value = luaL_optinteger(L, 1, 1);
    luaL_argcheck(L, value >= 0, 1, "initial value must not be negative");
    semaphore_state *s = new_object(L, kind, 0);
    s->value = value;
    s->bound = bounded ? value : -1;
    return 1;
}

/* forage.semaphore([value = 1]), forage.bounded_semaphore([value = 1]). */
static int semaphore_new(lua_State *L) {
    return new_semaphore(L, &semaphore_kind, 0);
}

static int bounded_semaphore_new(lua_State *L) {
    return new_semaphore(L, &bounded_semaphore_kind, 1);
}

/* forage.event() -> an unset Event. */
static int event_new(lua_State *L) {
    new_object(L, &event_kind, 0);
    return 1;
}

/* forage.condition([lock]) -> a Condition on lock (a Lock or RLock), or on a new RLock. */
static int condition_new(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        rlock_new(L);
    } else if (luaL_testudata(L, 1, lock_kind.type) == NULL && luaL_testudata(L, 1, rlock_kind.type) == NULL) {
        return luaL_typeerror(L, 1, "forage.Lock or forage.RLock");
    } else if (state_at(L, 1) == NULL) {
        return luaL_argerror(L, 1, "the lock is closed");
    }
    new_object(L, &condition_kind, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* forage.barrier(parties [, timeout]) -> a Barrier for parties processes; timeout is the
   default of wait. */
static int barrier_new(lua_State *L) {
    lua_Integer parties = luaL_checkinteger(L, 1);
    luaL_argcheck(L, parties >= 1, 1, "parties must be at least 1");
    double timeout = args_timeout(L, 2);
    barrier_state *s = new_object(L, &barrier_kind, 0);
    s->parties = parties;
    s->timeout = timeout;
    return 1;
}

/* Creates the metatable of kind: methods (with kind as their upvalue) as __index. */
static void register_kind(lua_State *L, const sync_kind *kind) {
    static const luaL_Reg lockable[] = {
        {"acquire", sync_acquire}, {"release", sync_release}, {"with", sync_with}, {"guard", sync_guard},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", sync_close}, {"__close", sync_close}, {"__tostring", sync_tostring}, {NULL, NULL},
    };
    luaL_newmetatable(L, kind->type);
    lua_pushlightuserdata(L, (void *)kind);
    luaL_setfuncs(L, meta, 1);
    lua_newtable(L);
    if (kind->acquire != NULL) {
        lua_pushlightuserdata(L, (void *)kind);
        luaL_setfuncs(L, lockable, 1);
    }
    if (kind->methods != NULL) {
        lua_pushlightuserdata(L, (void *)kind);
        luaL_setfuncs(L, kind->methods, 1);
    }
    if (kind->property != NULL) {
        lua_pushlightuserdata(L, (void *)kind);
        lua_insert(L, -2);
        lua_pushcclosure(L, sync_index, 2);
    }
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

void forage_open_sync(lua_State *L) {
    static const sync_kind *const kinds[] = {
        &lock_kind, &rlock_kind, &semaphore_kind, &bounded_semaphore_kind,
        &event_kind, &condition_kind, &barrier_kind,
    };
    static const luaL_Reg constructors[] = {
        {"lock", lock_new}, {"rlock", rlock_new}, {"semaphore", semaphore_new},
        {"bounded_semaphore", bounded_semaphore_new}, {"event", event_new},
        {"condition", condition_new}, {"barrier", barrier_new}, {NULL, NULL},
    };
    static const luaL_Reg guard_methods[] = {{"release", guard_release}, {NULL, NULL}};
    static const luaL_Reg guard_meta[] = {
        {"__close", guard_release}, {"__tostring", guard_tostring}, {NULL, NULL},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) register_kind(L, kinds[i]);
    type_register(L, GUARD_TYPE, guard_methods, guard_meta, 0);
    luaL_setfuncs(L, constructors, 0);
}
