/* forage.Leases: sticky resources (proxies) for the workers of a pool, in shared memory.

   Each worker slot holds at most one resource and keeps it until it breaks: consecutive
   failures reaching max_failures, or an explicit swap, put the resource in cooldown
   (exponential, jittered, capped), and the worker is given another. A resource whose
   cooldown ended is free again (revival); one that went to cooldown retire_after times in
   a row without a success in between, or that a worker retired, never comes back.
   The parent leases resources to idle workers before giving them tasks (pool.c), and a
   worker reports outcomes and swaps from inside a task (lua/forage/worker.lua): both sides
   work on this one table under its robust lock. Policy about what counts as a failure
   stays in Lua; this file is the mechanism.

   Surviving a killed process. The state is two views of one relation, each resource's
   (state, holder) and each slot's entry (the resource it holds), plus counters; an
   operation writes several of these words, and a process can be killed between any two.
   Ordering the writes cannot make every prefix consistent (a swap must both take a
   resource from a slot and give it another), so every operation that changes a lease is
   made atomic by an undo log in the table:
   1. Under the lock, the operation first decides everything it will do (which resource it
      takes, which it gives), writing nothing.
   2. It copies the before-images of what it will write (at most two resources and one
      slot entry) into the log, then sets log.active (the log's commit: a fence keeps every
      byte of the images before it, and every write of step 3 after it).
   3. It writes the resources and the slot entry, in any order.
   4. It clears log.active (after a fence: step 3 is whole before it).
   A process killed before step 2 ends changed nothing that anyone reads; one killed after
   step 4 finished its operation. One killed in between left an active log: the next
   process to take the lock is told the holder died (shm_lock_acquire's recovered) and
   copies the before-images back, then clears the log, so the table is as it was before
   the operation began. Copying the same images again is harmless, so a process killed
   during that repair is repaired again by the next one. The operation is then simply not
   done: a swap cut short leaves the slot holding its old resource, unpunished, and the
   pool's release of the dead worker's slot (which takes the lock, hence repairs first)
   frees it. No resource can be lost (leased to a slot that does not know it) or leased
   twice (held by two slots), since only whole operations remain, and each keeps
   "resource i is leased to slot s exactly when slot s's entry is i" true.
   Revival (cooling to free once the cooldown is over) stays outside the log: it is one
   store of a resource's state, consistent on its own, and an operation revives before it
   fills its log, so its images are taken after.
   Everything that locks the table goes through lock_table, which repairs; lease_held
   locks too, so that no reader ever acts on a slot entry a dead process left half-done.
   PAUSE_POINTs sit between every two writes of an operation, so that a spec can kill a
   process at each (spec/lease_kill_spec.lua).

   Extending it. An operation that touches more records (a slot per crawl fetch, a proxy
   shared by several slots) only needs a larger log: UNDO_RESOURCES and UNDO_SLOTS bound
   what one operation may write, and the repair is the same copy-back. */
#include "lease.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "args.h"
#include "clock.h"
#include "core.h"
#include "lauxlib.h"
#include "luatype.h"
#include "pause.h"
#include "shm.h"

#define LEASES_TYPE "forage.Leases"
#define LEASES_FNAME "forage.pool resource"   /* the options come from forage.pool's resource table */
#define REASON_SIZE 96
#define MAX_RESOURCES 1000000
#define MAX_SLOTS 4096
#define MAX_COUNT 1000000                     /* max_failures, retire_after */

enum { R_FREE, R_LEASED, R_COOLING, R_RETIRED };
static const char *const state_names[] = {"free", "leased", "cooling", "retired"};

typedef struct resource {
    int32_t state;
    int32_t holder;              /* slot, or -1 */
    uint32_t consecutive_failures;
    uint32_t cooldowns;          /* cooldowns since the last success */
    uint64_t successes, failures, leases;
    double cooling_until;        /* monotonic seconds */
    char reason[REASON_SIZE];    /* why it last failed, was swapped or retired */
} resource;

/* What one operation may write: a swap cools one resource and leases another to one slot. */
#define UNDO_RESOURCES 2
#define UNDO_SLOTS 1

/* The before-images of the operation in progress; read only when active is set. */
typedef struct undo_log {
    _Atomic uint32_t active;
    uint32_t nresources, nslots;
    int32_t resource_at[UNDO_RESOURCES];
    int32_t slot_at[UNDO_SLOTS];
    int32_t slot_before[UNDO_SLOTS];
    resource resource_before[UNDO_RESOURCES];
} undo_log;

struct lease_table {
    shm_lock lock;
    int32_t nresources, nslots;
    uint32_t max_failures, retire_after;
    double cooldown, max_cooldown;
    uint64_t rng;                /* jitter's state: never rolled back, any value will do */
    uint64_t recoveries;         /* times the lock was taken over from a dead holder */
    undo_log undo;
    /* resource resources[nresources]; int32_t slot_resource[nslots]; */
};

typedef struct leases_box {
    lease_table *t;              /* NULL once closed */
    size_t size;
} leases_box;

static resource *resources_of(lease_table *t) { return (resource *)(t + 1); }
static int32_t *slots_of(lease_table *t) { return (int32_t *)(resources_of(t) + t->nresources); }

/* ---------- the undo log ---------- */

/* Saves what an operation on slot (or -1) and resources a, b (or -1) is about to change,
   then commits the log. Lock held; nothing of the operation written yet. */
static void undo_begin(lease_table *t, int32_t slot, int32_t a, int32_t b) {
    undo_log *u = &t->undo;
    resource *r = resources_of(t);
    uint32_t n = 0;
    if (a >= 0) {
        u->resource_at[n] = a;
        u->resource_before[n++] = r[a];
    }
    if (b >= 0 && b != a) {
        u->resource_at[n] = b;
        u->resource_before[n++] = r[b];
    }
    u->nresources = n;
    u->nslots = 0;
    if (slot >= 0) {
        u->slot_at[0] = slot;
        u->slot_before[0] = slots_of(t)[slot];
        u->nslots = 1;
    }
    PAUSE_POINT("lease.undo.written");
    /* The fences order the stores as the program does, for the compiler as for the
       processor: the images before active, the operation's writes after it. */
    atomic_thread_fence(memory_order_seq_cst);
    atomic_store(&u->active, 1);
    atomic_thread_fence(memory_order_seq_cst);
}

/* The operation is whole: the log is not needed any more. */
static void undo_end(lease_table *t) {
    atomic_thread_fence(memory_order_seq_cst);
    atomic_store(&t->undo.active, 0);
}

/* After a holder died: puts back what its unfinished operation changed. Idempotent, so a
   process killed in the middle of it is repaired again by the next holder. */
static void repair(lease_table *t) {
    t->recoveries++;
    undo_log *u = &t->undo;
    if (!atomic_load(&u->active)) return;
    for (uint32_t k = 0; k < u->nresources && k < UNDO_RESOURCES; k++) {
        int32_t i = u->resource_at[k];
        if (i >= 0 && i < t->nresources) resources_of(t)[i] = u->resource_before[k];
    }
    PAUSE_POINT("lease.repair.restored");
    for (uint32_t k = 0; k < u->nslots && k < UNDO_SLOTS; k++) {
        int32_t s = u->slot_at[k];
        if (s >= 0 && s < t->nslots) slots_of(t)[s] = u->slot_before[k];
    }
    undo_end(t);
}

/* Takes the lock, repairing when its last holder died. Returns 0, or an errno (not locked). */
static int lock_table(lease_table *t) {
    int recovered = 0;
    int rc = shm_lock_acquire(&t->lock, -1, &recovered);
    if (rc == 0 && recovered) repair(t);
    return rc;
}

static void unlock_table(lease_table *t) { shm_lock_release(&t->lock); }

/* True when the two views agree: a resource is leased to slot s exactly when slot s's
   entry names it, and nothing else has a holder. Lock held. */
static int table_consistent(lease_table *t) {
    resource *r = resources_of(t);
    int32_t *held = slots_of(t);
    if (atomic_load(&t->undo.active)) return 0;
    for (int32_t i = 0; i < t->nresources; i++) {
        if (r[i].state < R_FREE || r[i].state > R_RETIRED) return 0;
        int32_t s = r[i].holder;
        if (r[i].state == R_LEASED ? s < 0 || s >= t->nslots || held[s] != i : s != -1) return 0;
    }
    for (int32_t s = 0; s < t->nslots; s++) {
        int32_t i = held[s];
        if (i != -1 && (i < 0 || i >= t->nresources || r[i].state != R_LEASED || r[i].holder != s)) return 0;
    }
    return 1;
}

/* ---------- operations (lock held) ---------- */

/* A number in [0.5, 1.5) for jitter, from a xorshift generator in the table. */
static double jitter(lease_table *t) {
    uint64_t x = t->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t->rng = x;
    return 0.5 + (double)(x >> 11) / (double)(1ull << 53);
}

/* Frees the resources whose cooldown is over: one store each, consistent at every step. */
static void revive(lease_table *t, double now) {
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources; i++) {
        if (r[i].state == R_COOLING && r[i].cooling_until <= now) {
            r[i].state = R_FREE;
            PAUSE_POINT("lease.revive.freed");
        }
    }
}

/* The free resource leased least often (so use spreads), or -1. */
static int32_t pick_free(lease_table *t) {
    resource *r = resources_of(t);
    int32_t best = -1;
    for (int32_t i = 0; i < t->nresources; i++)
        if (r[i].state == R_FREE && (best < 0 || r[i].leases < r[best].leases)) best = i;
    return best;
}

static void set_reason(resource *r, const char *reason) {
    if (reason == NULL) return;
    strncpy(r->reason, reason, REASON_SIZE - 1);
    r->reason[REASON_SIZE - 1] = '\0';
}

/* Leases free resource i to slot. Inside a logged operation. */
static void lease_to(lease_table *t, int32_t i, int32_t slot) {
    resource *r = &resources_of(t)[i];
    r->state = R_LEASED;
    PAUSE_POINT("lease.acquire.state");
    r->holder = slot;
    PAUSE_POINT("lease.acquire.holder");
    r->leases++;
    PAUSE_POINT("lease.acquire.count");
    slots_of(t)[slot] = i;
    PAUSE_POINT("lease.acquire.slot");
}

/* Takes leased resource i from its holder into cooldown (or retirement). Inside a logged
   operation that saved the holder's slot entry. */
static void cool(lease_table *t, int32_t i, const char *reason, int retire) {
    resource *r = &resources_of(t)[i];
    if (r->holder >= 0) slots_of(t)[r->holder] = -1;
    PAUSE_POINT("lease.cool.slot");
    r->holder = -1;
    PAUSE_POINT("lease.cool.holder");
    r->consecutive_failures = 0;
    PAUSE_POINT("lease.cool.failures");
    r->cooldowns++;
    PAUSE_POINT("lease.cool.count");
    set_reason(r, reason);
    PAUSE_POINT("lease.cool.reason");
    if (retire || (t->retire_after > 0 && r->cooldowns >= t->retire_after)) {
        r->state = R_RETIRED;
        PAUSE_POINT("lease.retire.state");
        return;
    }
    double d = t->cooldown;
    for (uint32_t k = 1; k < r->cooldowns && d < t->max_cooldown; k++) d *= 2;   /* exponential */
    if (d > t->max_cooldown) d = t->max_cooldown;
    r->cooling_until = now_seconds() + d * jitter(t);
    PAUSE_POINT("lease.cool.until");
    r->state = R_COOLING;
    PAUSE_POINT("lease.cool.state");
}

/* Gives slot a free resource if it holds none. Returns what it holds, or -1. */
static int32_t acquire_locked(lease_table *t, int32_t slot) {
    int32_t held = slots_of(t)[slot];
    if (held >= 0) return held;
    revive(t, now_seconds());
    int32_t next = pick_free(t);
    if (next < 0) return -1;
    undo_begin(t, slot, next, -1);
    lease_to(t, next, slot);
    undo_end(t);
    return next;
}

/* Frees the slot's resource, unharmed. */
static void release_locked(lease_table *t, int32_t slot) {
    int32_t i = slots_of(t)[slot];
    if (i < 0) return;
    resource *r = &resources_of(t)[i];
    undo_begin(t, slot, i, -1);
    r->state = R_FREE;
    PAUSE_POINT("lease.release.state");
    r->holder = -1;
    PAUSE_POINT("lease.release.holder");
    slots_of(t)[slot] = -1;
    PAUSE_POINT("lease.release.slot");
    undo_end(t);
}

/* A success (the failure counts start again), or a failure, which after max_failures in a
   row cools the resource and leases the slot another. Returns what the slot holds, or -1. */
static int32_t report_locked(lease_table *t, int32_t slot, int ok, const char *reason) {
    int32_t i = slots_of(t)[slot];
    if (i < 0) return -1;
    resource *r = &resources_of(t)[i];
    if (ok) {
        undo_begin(t, -1, i, -1);
        r->successes++;
        PAUSE_POINT("lease.report.successes");
        r->consecutive_failures = 0;
        PAUSE_POINT("lease.report.consecutive");
        r->cooldowns = 0;
        PAUSE_POINT("lease.report.cooldowns");
        undo_end(t);
        return i;
    }
    int breaks = r->consecutive_failures + 1 >= t->max_failures;
    int32_t next = -1;
    if (breaks) {
        revive(t, now_seconds());
        next = pick_free(t);   /* never i: it is leased */
    }
    undo_begin(t, breaks ? slot : -1, i, next);
    r->failures++;
    PAUSE_POINT("lease.report.failures");
    set_reason(r, reason);
    PAUSE_POINT("lease.report.reason");
    if (!breaks) {
        r->consecutive_failures++;
        PAUSE_POINT("lease.report.consecutive");
        undo_end(t);
        return i;
    }
    cool(t, i, reason, 0);
    if (next >= 0) lease_to(t, next, slot);
    undo_end(t);
    return next;
}

/* Takes the slot's resource away (cooled, counted as a failure; or retired) and leases
   the slot another, in one operation. Returns the new one, or -1 when none is free. */
static int32_t replace_locked(lease_table *t, int32_t slot, const char *reason, int retire) {
    int32_t old = slots_of(t)[slot];
    revive(t, now_seconds());
    int32_t next = pick_free(t);   /* never old: it is leased */
    if (old < 0 && next < 0) return -1;
    undo_begin(t, slot, old, next);
    if (old >= 0) {
        if (!retire) {
            resources_of(t)[old].failures++;
            PAUSE_POINT("lease.swap.failures");
        }
        cool(t, old, reason, retire);
    }
    if (next >= 0) lease_to(t, next, slot);
    undo_end(t);
    return next;
}

/* ---------- the C interface (pool.c) ---------- */

int32_t lease_acquire(lease_table *t, int32_t slot) {
    if (lock_table(t) != 0) return -1;
    int32_t i = acquire_locked(t, slot);
    unlock_table(t);
    return i;
}

int32_t lease_held(lease_table *t, int32_t slot) {
    if (lock_table(t) != 0) return -1;
    int32_t i = slots_of(t)[slot];
    unlock_table(t);
    return i;
}

void lease_release(lease_table *t, int32_t slot) {
    if (lock_table(t) != 0) return;
    release_locked(t, slot);
    unlock_table(t);
}

int lease_none_left(lease_table *t) {
    if (lock_table(t) != 0) return 0;
    int any = 0;
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources && !any; i++) any = r[i].state != R_RETIRED;
    unlock_table(t);
    return !any;
}

double lease_next_revival(lease_table *t) {
    if (lock_table(t) != 0) return -1;
    double next = -1, now = now_seconds();
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources; i++) {
        if (r[i].state != R_COOLING) continue;
        double left = r[i].cooling_until - now;
        if (left < 0) left = 0;
        if (next < 0 || left < next) next = left;
    }
    unlock_table(t);
    return next;
}

int32_t lease_slots(lease_table *t) { return t->nslots; }

/* ---------- Lua ---------- */

static lease_table *open_table(lua_State *L, leases_box *b) {
    if (b->t == NULL) type_closed_error(L, LEASES_TYPE);
    return b->t;
}

/* For the methods, which type_register gave the metatable as upvalue 1. */
static lease_table *check_leases(lua_State *L, int i) { return open_table(L, type_check_fast(L, i, LEASES_TYPE)); }

/* For pool.c and worker.c, whose functions have no such upvalue. */
lease_table *lease_check(lua_State *L, int i) { return open_table(L, luaL_checkudata(L, i, LEASES_TYPE)); }

/* Slots are 1-based in Lua. */
static int32_t check_slot(lua_State *L, lease_table *t, int i) {
    lua_Integer s = luaL_checkinteger(L, i);
    if (s < 1 || s > t->nslots)
        luaL_argerror(L, i, lua_pushfstring(L, "slot must be from 1 to %d", (int)t->nslots));
    return (int32_t)(s - 1);
}

static void lock_or_raise(lua_State *L, lease_table *t) {
    int rc = lock_table(t);
    if (rc != 0) luaL_error(L, "cannot lock the lease table: %s", strerror(rc));
}

static int push_index(lua_State *L, int32_t i) {
    if (i < 0) luaL_pushfail(L);
    else lua_pushinteger(L, i + 1);
    return 1;
}

/* leases{ count, slots, max_failures = 3, cooldown = 30, max_cooldown = 600,
   retire_after = 0 (never) } -> a lease table in shared memory. */
static int leases_new(lua_State *L) {
    static const char *const options[] = {"count",    "slots",        "max_failures",
                                          "cooldown", "max_cooldown", "retire_after", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    args_check_options(L, 1, LEASES_FNAME, options);
    lua_Integer n = args_opt_integer(L, 1, LEASES_FNAME, "count", 0, 1, MAX_RESOURCES);
    lua_Integer slots = args_opt_integer(L, 1, LEASES_FNAME, "slots", 0, 1, MAX_SLOTS);
    if (n == 0 || slots == 0) return luaL_error(L, "%s: options 'count' and 'slots' are required", LEASES_FNAME);
    lua_Integer max_failures = args_opt_integer(L, 1, LEASES_FNAME, "max_failures", 3, 1, MAX_COUNT);
    lua_Integer retire_after = args_opt_integer(L, 1, LEASES_FNAME, "retire_after", 0, 0, MAX_COUNT);
    double cooldown = args_opt_number(L, 1, LEASES_FNAME, "cooldown", 30, 0, ARGS_FOREVER);
    double max_cooldown = args_opt_number(L, 1, LEASES_FNAME, "max_cooldown", 600, 0, ARGS_FOREVER);

    /* Created closed, then opened: a failure below leaves a userdata that __gc can take. */
    leases_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->t = NULL;
    b->size = 0;
    luaL_setmetatable(L, LEASES_TYPE);
    size_t size = sizeof(lease_table) + (size_t)n * sizeof(resource) + (size_t)slots * sizeof(int32_t);
    lease_table *t = shm_map_locked(size, offsetof(lease_table, lock));
    if (t == NULL) return luaL_error(L, "cannot map the lease table: %s", strerror(errno));
    b->t = t;
    b->size = size;
    t->nresources = (int32_t)n;
    t->nslots = (int32_t)slots;
    t->max_failures = (uint32_t)max_failures;
    t->retire_after = (uint32_t)retire_after;
    t->cooldown = cooldown;
    t->max_cooldown = max_cooldown < cooldown ? cooldown : max_cooldown;
    t->rng = (uint64_t)(now_seconds() * 1e9) | 1;
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources; i++) r[i].holder = -1;
    int32_t *held = slots_of(t);
    for (int32_t s = 0; s < t->nslots; s++) held[s] = -1;
    return 1;
}

/* L:acquire(slot) -> resource index, or nil when none is free. */
static int leases_acquire(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    lock_or_raise(L, t);
    int32_t i = acquire_locked(t, slot);
    unlock_table(t);
    return push_index(L, i);
}

/* L:held(slot) -> the index the slot holds, or nil. */
static int leases_held(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    lock_or_raise(L, t);
    int32_t i = slots_of(t)[slot];
    unlock_table(t);
    return push_index(L, i);
}

/* L:release(slot): the slot's resource is free again, unharmed. */
static int leases_release(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    lock_or_raise(L, t);
    release_locked(t, slot);
    unlock_table(t);
    return 0;
}

/* L:report(slot, ok [, reason]) -> the index the slot holds afterwards, or nil.
   A failure that reaches max_failures in a row cools the resource and leases another. */
static int leases_report(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    int ok = lua_toboolean(L, 3);
    const char *reason = luaL_optstring(L, 4, NULL);
    lock_or_raise(L, t);
    int32_t i = report_locked(t, slot, ok, reason);
    unlock_table(t);
    return push_index(L, i);
}

static int take_back(lua_State *L, int retire) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    const char *reason = luaL_optstring(L, 3, retire ? "retired" : "swapped");
    lock_or_raise(L, t);
    int32_t i = replace_locked(t, slot, reason, retire);
    unlock_table(t);
    return push_index(L, i);
}

/* L:swap(slot [, reason]) -> another resource for the slot (or nil); the old one cools.
   A swap counts as a failure. */
static int leases_swap(lua_State *L) { return take_back(L, 0); }

/* L:retire(slot [, reason]) -> another resource (or nil); the old one never comes back. */
static int leases_retire(lua_State *L) { return take_back(L, 1); }

/* L:snapshot() -> { { state, holder, leases, successes, failures, cooldowns, cooldown,
   reason }, ... }: holder is a 1-based slot or nil; cooldown the seconds left (0 unless
   cooling). */
static int leases_snapshot(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    size_t size = (size_t)t->nresources * sizeof(resource);
    resource *copy = lua_newuserdatauv(L, size, 0);   /* allocated before locking: may raise */
    lock_or_raise(L, t);
    revive(t, now_seconds());
    memcpy(copy, resources_of(t), size);
    unlock_table(t);
    double now = now_seconds();
    lua_createtable(L, t->nresources, 0);
    for (int32_t i = 0; i < t->nresources; i++) {
        resource *r = &copy[i];
        lua_createtable(L, 0, 8);
        lua_pushstring(L, state_names[r->state]);
        lua_setfield(L, -2, "state");
        if (r->holder >= 0) {
            lua_pushinteger(L, r->holder + 1);
            lua_setfield(L, -2, "holder");
        }
        lua_pushinteger(L, (lua_Integer)r->leases);
        lua_setfield(L, -2, "leases");
        lua_pushinteger(L, (lua_Integer)r->successes);
        lua_setfield(L, -2, "successes");
        lua_pushinteger(L, (lua_Integer)r->failures);
        lua_setfield(L, -2, "failures");
        lua_pushinteger(L, (lua_Integer)r->cooldowns);
        lua_setfield(L, -2, "cooldowns");
        lua_pushnumber(L, r->state == R_COOLING && r->cooling_until > now ? r->cooling_until - now : 0);
        lua_setfield(L, -2, "cooldown");
        if (r->reason[0]) {
            lua_pushstring(L, r->reason);
            lua_setfield(L, -2, "reason");
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* L:stats() -> { resources, slots, free, leased, cooling, retired, recoveries,
   consistent }: counts by state, the times a dead holder's lock was taken over (and its
   operation undone), and whether every lease is known to both its resource and its slot. */
static int leases_stats(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    lua_Integer count[4] = {0, 0, 0, 0};
    lock_or_raise(L, t);
    revive(t, now_seconds());
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources; i++)
        if (r[i].state >= R_FREE && r[i].state <= R_RETIRED) count[r[i].state]++;
    lua_Integer recoveries = (lua_Integer)t->recoveries;
    int consistent = table_consistent(t);
    unlock_table(t);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, t->nresources);
    lua_setfield(L, -2, "resources");
    lua_pushinteger(L, t->nslots);
    lua_setfield(L, -2, "slots");
    for (int s = R_FREE; s <= R_RETIRED; s++) {
        lua_pushinteger(L, count[s]);
        lua_setfield(L, -2, state_names[s]);
    }
    lua_pushinteger(L, recoveries);
    lua_setfield(L, -2, "recoveries");
    lua_pushboolean(L, consistent);
    lua_setfield(L, -2, "consistent");
    return 1;
}

/* __gc and __close: unmap (each process its own view). */
static int leases_gc(lua_State *L) {
    leases_box *b = luaL_checkudata(L, 1, LEASES_TYPE);
    shm_unmap(b->t, b->size);   /* NULL once closed: shm_unmap skips it */
    b->t = NULL;
    return 0;
}

void forage_open_lease(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"acquire", leases_acquire}, {"held", leases_held},       {"release", leases_release},
        {"report", leases_report},   {"swap", leases_swap},       {"retire", leases_retire},
        {"snapshot", leases_snapshot}, {"stats", leases_stats}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {{"__gc", leases_gc}, {"__close", leases_gc}, {NULL, NULL}};
    type_register(L, LEASES_TYPE, methods, meta, 1);
    lua_pushcfunction(L, leases_new);
    lua_setfield(L, -2, "leases");
}
