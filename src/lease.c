/* forage.Leases: sticky resources (proxies) for the workers of a pool, in shared memory.

   Each worker slot holds at most one resource and keeps it until it breaks: consecutive
   failures reaching max_failures, or an explicit swap, put the resource in cooldown
   (exponential, jittered, capped), and the worker is given another. A resource whose
   cooldown ended is free again (revival); one that went to cooldown retire_after times in
   a row without a success in between, or that a worker retired, never comes back.
   The parent leases resources to idle workers before giving them tasks (pool.c), and a
   worker reports outcomes and swaps from inside a task (lua/forage/worker.lua): both sides
   work on this one table under its robust lock. Policy about what counts as a failure
   stays in Lua; this file is the mechanism. */
#include "lease.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "core.h"
#include "frame.h"
#include "lauxlib.h"
#include "shm.h"

#define LEASES_TYPE "forage.Leases"
#define REASON_SIZE 96

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

struct lease_table {
    shm_lock lock;
    int32_t nresources, nslots;
    uint32_t max_failures, retire_after;
    double cooldown, max_cooldown;
    uint64_t rng;
    /* resource resources[nresources]; int32_t slot_resource[nslots]; */
};

typedef struct leases_box {
    lease_table *t;
    size_t size;
} leases_box;

static resource *resources_of(lease_table *t) { return (resource *)(t + 1); }
static int32_t *slots_of(lease_table *t) { return (int32_t *)(resources_of(t) + t->nresources); }

static void lock_table(lease_table *t) { shm_lock_acquire(&t->lock, -1, NULL); }
static void unlock_table(lease_table *t) { shm_lock_release(&t->lock); }

/* A number in [0.5, 1.5) for jitter, from a xorshift generator in the table. */
static double jitter(lease_table *t) {
    uint64_t x = t->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t->rng = x;
    return 0.5 + (double)(x >> 11) / (double)(1ull << 53);
}

/* Frees the resources whose cooldown is over. Lock held. */
static void revive(lease_table *t, double now) {
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources; i++)
        if (r[i].state == R_COOLING && r[i].cooling_until <= now) r[i].state = R_FREE;
}

static void set_reason(resource *r, const char *reason) {
    if (reason == NULL) return;
    strncpy(r->reason, reason, REASON_SIZE - 1);
    r->reason[REASON_SIZE - 1] = '\0';
}

/* Takes resource i away from its holder into cooldown (or retirement). Lock held. */
static void cool(lease_table *t, int32_t i, const char *reason, int retire) {
    resource *r = &resources_of(t)[i];
    if (r->holder >= 0) slots_of(t)[r->holder] = -1;
    r->holder = -1;
    r->consecutive_failures = 0;
    r->cooldowns++;
    set_reason(r, reason);
    if (retire || (t->retire_after > 0 && r->cooldowns >= t->retire_after)) {
        r->state = R_RETIRED;
        return;
    }
    double d = t->cooldown;
    for (uint32_t k = 1; k < r->cooldowns && d < t->max_cooldown; k++) d *= 2;   /* exponential */
    if (d > t->max_cooldown) d = t->max_cooldown;
    r->state = R_COOLING;
    r->cooling_until = now_seconds() + d * jitter(t);
}

/* Gives slot a free resource (the least leased one, so use spreads). Lock held.
   Returns its index, or -1. */
static int32_t acquire_locked(lease_table *t, int32_t slot) {
    int32_t *held = slots_of(t);
    if (held[slot] >= 0) return held[slot];
    revive(t, now_seconds());
    resource *r = resources_of(t);
    int32_t best = -1;
    for (int32_t i = 0; i < t->nresources; i++)
        if (r[i].state == R_FREE && (best < 0 || r[i].leases < r[best].leases)) best = i;
    if (best >= 0) {
        r[best].state = R_LEASED;
        r[best].holder = slot;
        r[best].leases++;
        held[slot] = best;
    }
    return best;
}

int32_t lease_acquire(lease_table *t, int32_t slot) {
    lock_table(t);
    int32_t i = acquire_locked(t, slot);
    unlock_table(t);
    return i;
}

int32_t lease_held(lease_table *t, int32_t slot) {
    return slots_of(t)[slot];
}

void lease_release(lease_table *t, int32_t slot) {
    lock_table(t);
    int32_t i = slots_of(t)[slot];
    if (i >= 0) {
        resource *r = &resources_of(t)[i];
        r->state = R_FREE;
        r->holder = -1;
        slots_of(t)[slot] = -1;
    }
    unlock_table(t);
}

int lease_none_left(lease_table *t) {
    lock_table(t);
    int any = 0;
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources && !any; i++) any = r[i].state != R_RETIRED;
    unlock_table(t);
    return !any;
}

double lease_next_revival(lease_table *t) {
    lock_table(t);
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

static lease_table *check_leases(lua_State *L, int i) {
    leases_box *b = luaL_checkudata(L, i, LEASES_TYPE);
    if (b->t == NULL) luaL_error(L, "attempt to use a closed lease table");
    return b->t;
}

lease_table *lease_check(lua_State *L, int i) { return check_leases(L, i); }

/* Slots are 1-based in Lua. */
static int32_t check_slot(lua_State *L, lease_table *t, int i) {
    lua_Integer s = luaL_checkinteger(L, i);
    luaL_argcheck(L, s >= 1 && s <= t->nslots, i, "worker slot out of range");
    return (int32_t)(s - 1);
}

static int push_index(lua_State *L, int32_t i) {
    if (i < 0) luaL_pushfail(L);
    else lua_pushinteger(L, i + 1);
    return 1;
}

static double opt_positive(lua_State *L, int t, const char *field, double dflt) {
    lua_getfield(L, t, field);
    double v = luaL_optnumber(L, -1, dflt);
    lua_pop(L, 1);
    if (!(v >= 0) || isinf(v)) luaL_error(L, "resource.%s must be a non-negative number", field);
    return v;
}

/* leases{ count, slots, max_failures = 3, cooldown = 30, max_cooldown = 600,
   retire_after = 0 (never) } -> a lease table in shared memory. */
static int leases_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "count");
    lua_Integer n = luaL_checkinteger(L, -1);
    lua_getfield(L, 1, "slots");
    lua_Integer slots = luaL_checkinteger(L, -1);
    lua_pop(L, 2);
    if (n < 1 || n > 1000000) return luaL_error(L, "resources: between 1 and 1000000 expected (got %d)", (int)n);
    if (slots < 1 || slots > 4096) return luaL_error(L, "lease table: bad slot count %d", (int)slots);
    double max_failures = opt_positive(L, 1, "max_failures", 3);
    double retire_after = opt_positive(L, 1, "retire_after", 0);
    double cooldown = opt_positive(L, 1, "cooldown", 30);
    double max_cooldown = opt_positive(L, 1, "max_cooldown", 600);
    if (max_failures < 1) return luaL_error(L, "resource.max_failures must be at least 1");

    leases_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->t = NULL;
    b->size = 0;
    luaL_setmetatable(L, LEASES_TYPE);
    size_t size = sizeof(lease_table) + (size_t)n * sizeof(resource) + (size_t)slots * sizeof(int32_t);
    lease_table *t = shm_map(size);
    if (t == NULL) return luaL_error(L, "cannot map the lease table: %s", strerror(errno));
    b->t = t;
    b->size = size;
    int rc = shm_lock_init(&t->lock);
    if (rc != 0) return luaL_error(L, "cannot create the lease lock: %s", strerror(rc));
    t->nresources = (int32_t)n;
    t->nslots = (int32_t)slots;
    t->max_failures = (uint32_t)max_failures;
    t->retire_after = (uint32_t)retire_after;
    t->cooldown = cooldown;
    t->max_cooldown = max_cooldown < cooldown ? cooldown : max_cooldown;
    t->rng = (uint64_t)(now_seconds() * 1e9) | 1;
    resource *r = resources_of(t);
    for (lua_Integer i = 0; i < n; i++) r[i].holder = -1;
    int32_t *held = slots_of(t);
    for (lua_Integer s = 0; s < slots; s++) held[s] = -1;
    return 1;
}

/* L:acquire(slot) -> resource index, or nil when none is free. */
static int leases_acquire(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    return push_index(L, lease_acquire(t, check_slot(L, t, 2)));
}

/* L:held(slot) -> the index the slot holds, or nil. */
static int leases_held(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    return push_index(L, lease_held(t, check_slot(L, t, 2)));
}

/* L:release(slot): the slot's resource is free again, unharmed. */
static int leases_release(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    lease_release(t, check_slot(L, t, 2));
    return 0;
}

/* L:report(slot, ok [, reason]) -> the index the slot holds afterwards, or nil.
   A failure that reaches max_failures in a row cools the resource and leases another. */
static int leases_report(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    int ok = lua_toboolean(L, 3);
    const char *reason = luaL_optstring(L, 4, NULL);
    lock_table(t);
    int32_t i = slots_of(t)[slot];
    if (i >= 0) {
        resource *r = &resources_of(t)[i];
        if (ok) {
            r->successes++;
            r->consecutive_failures = 0;
            r->cooldowns = 0;
        } else {
            r->failures++;
            set_reason(r, reason);
            if (++r->consecutive_failures >= t->max_failures) {
                cool(t, i, reason, 0);
                i = acquire_locked(t, slot);
            }
        }
    }
    unlock_table(t);
    return push_index(L, i);
}

/* Takes the slot's resource away (cooled, or retired for good) and leases it another;
   pushes the new index, or nil when none is free. A swap counts as a failure. */
static int take_back(lua_State *L, int retire) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    const char *reason = luaL_optstring(L, 3, retire ? "retired" : "swapped");
    lock_table(t);
    int32_t i = slots_of(t)[slot];
    if (i >= 0) {
        if (!retire) resources_of(t)[i].failures++;
        cool(t, i, reason, retire);
    }
    i = acquire_locked(t, slot);
    unlock_table(t);
    return push_index(L, i);
}

/* L:swap(slot [, reason]) -> another resource for the slot (or nil); the old one cools. */
static int leases_swap(lua_State *L) { return take_back(L, 0); }

/* L:retire(slot [, reason]) -> another resource (or nil); the old one never comes back. */
static int leases_retire(lua_State *L) { return take_back(L, 1); }

/* L:snapshot() -> { { state, holder, leases, successes, failures, cooldown, reason }, ... }
   holder is a 1-based slot or nil; cooldown the seconds left (0 unless cooling). */
static int leases_snapshot(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    lock_table(t);
    revive(t, now_seconds());
    size_t size = (size_t)t->nresources * sizeof(resource);
    resource *copy = lua_newuserdatauv(L, size, 0);
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

/* __gc and __close: unmap (each process its own view). */
static int leases_gc(lua_State *L) {
    leases_box *b = luaL_checkudata(L, 1, LEASES_TYPE);
    shm_unmap(b->t, b->size);
    b->t = NULL;
    return 0;
}

void forage_open_lease(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"acquire", leases_acquire}, {"held", leases_held}, {"release", leases_release},
        {"report", leases_report}, {"swap", leases_swap}, {"retire", leases_retire},
        {"snapshot", leases_snapshot}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {{"__gc", leases_gc}, {"__close", leases_gc}, {NULL, NULL}};
    luaL_newmetatable(L, LEASES_TYPE);
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, leases_new);
    lua_setfield(L, -2, "leases");
}
