/* forage.Leases: sticky resources (proxies) for slots (a pool's workers, a crawl's request
   slots), in shared memory.

   Each slot holds at most one resource and keeps it until it breaks: consecutive failures
   reaching max_failures, an explicit swap, or a cool (a ban with its Retry-After) put the
   resource in cooldown (exponential, jittered, capped), and the slot is given another. A
   resource may be held by up to per_resource slots at once (1 for the pool: one worker,
   one proxy); acquire gives the one with the fewest holders, so that load spreads evenly.
   When a resource cools or retires, every slot holding it loses it.
   A resource whose cooldown is over is on probation (half-open): one slot at most may hold
   it, and its next report decides, a success making it normal again, a failure cooling it
   again at once. One that went to cooldown retire_after times in a row without a success
   in between, or that a slot retired, never comes back.
   pace keeps a least gap between two uses of one resource (the crawl's delay), shared by
   all its holders. The parent leases to idle slots (pool.c, the crawl), the slots' process
   reports outcomes (lua/forage/worker.lua, the crawl's workers): all work on this one table
   under its robust lock. Policy about what counts as a failure stays in Lua; this file is
   the mechanism.

   The relation. A resource has a holder count and a generation; a slot's entry is one
   64-bit word naming the resource it leased and that resource's generation at the time
   (0: none). The entry is current while the generations agree; cooling or retiring a
   resource bumps its generation and zeroes its count, which takes it from all of its
   holders in two stores, whatever their number: each holder's entry is now stale, and is
   dropped by that slot's next held, acquire or report (one store, consistent on its own),
   which then behave as for a slot holding nothing. The invariant: a resource's holder
   count is the number of current entries naming it, at most per_resource, at most 1 on
   probation, 0 when cooling or retired.

   Surviving a killed process. An operation writes several of these words (a swap cools
   one resource, leases another and rewrites the slot's entry), and a process can be killed
   between any two. Ordering the writes cannot make every prefix consistent, so every
   operation that changes more than one word is made atomic by an undo log in the table:
   1. Under the lock, the operation first decides everything it will do (which resource it
      takes, which it gives), writing nothing.
   2. It copies the before-images of what it will write (at most two resources and one
      slot entry: other holders of a cooled resource are repaired lazily by generation,
      which keeps the log, like the operation, O(1)) into the log, then sets log.active
      (the log's commit: a fence keeps every byte of the images before it, and every write
      of step 3 after it).
   3. It writes the resources and the slot entry, in any order.
   4. It clears log.active (after a fence: step 3 is whole before it).
   A process killed before step 2 ends changed nothing that anyone reads; one killed after
   step 4 finished its operation. One killed in between left an active log: the next
   process to take the lock is told the holder died (shm_lock_acquire's recovered) and
   copies the before-images back, then clears the log, so the table is as it was before
   the operation began. Copying the same images again is harmless, so a process killed
   during that repair is repaired again by the next one. The operation is then simply not
   done: a swap cut short leaves the slot holding its old resource, unpunished, and the
   release of the dead process's slots (which takes the lock, hence repairs first) frees
   it. No resource can be lost (counted for a slot that does not know it) or over-leased,
   since only whole operations remain, and each keeps the invariant above.
   Three writes stay outside the log, each one store that is consistent on its own and
   made before an operation fills its log (so that its images are taken after): revival
   (a cooling resource's state becomes probing once its cooldown is over), the drop of a
   stale slot entry, and pace's reservation (the time before which the resource may not be
   used again, in an array of its own that no image covers: a kill before the store
   reserved nothing, one after it reserved a gap that the killed request did not use,
   which only delays the next request through that resource by one delay).
   Everything that locks the table goes through lock_table, which repairs; lease_held
   locks too, so that no reader ever acts on a slot entry a dead process left half-done.
   PAUSE_POINTs sit between every two writes of an operation, so that a spec can kill a
   process at each (spec/lease_kill_spec.lua).

   Extending it. An operation that touches more records only needs a larger log:
   UNDO_RESOURCES and UNDO_SLOTS bound what one operation may write, and the repair is the
   same copy-back. */
#include "lease.h"

#include <errno.h>
#include <math.h>
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
#define LEASES_FNAME "forage.pool resource"   /* the default: forage.pool's resource table */
#define REASON_SIZE 96
#define MAX_RESOURCES 1000000
#define MAX_SLOTS 100000
#define MAX_COUNT 1000000                     /* max_failures, retire_after */

/* A slot entry: (generation << INDEX_BITS) | (index + 1), or 0 for none. 44 bits of
   generation: a stale entry could only come back to life after 2^44 cooldowns of one
   resource. */
#define INDEX_BITS 20
#define INDEX_MASK ((UINT64_C(1) << INDEX_BITS) - 1)
#define GENERATION_MASK ((UINT64_C(1) << (64 - INDEX_BITS)) - 1)
_Static_assert(MAX_RESOURCES < INDEX_MASK, "a resource index must fit an entry's index bits");

/* R_READY and R_PROBING can be leased (the latter to one slot); display names depend on
   the holder count too (state_name). R_OFF: not this table's to lease for now (a crawl on
   several hosts: another host holds the proxy), until enabled again. */
enum { R_READY, R_PROBING, R_COOLING, R_RETIRED, R_OFF };

typedef struct resource {
    int32_t state;
    uint32_t holders;            /* slots with a current entry naming it */
    uint64_t generation;         /* bumped when it cools or retires */
    uint32_t consecutive_failures;   /* across all its holders */
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
    uint64_t slot_before[UNDO_SLOTS];
    resource resource_before[UNDO_RESOURCES];
} undo_log;

struct lease_table {
    shm_lock lock;
    int32_t nresources, nslots;
    uint32_t max_failures, retire_after, per_resource;
    double cooldown, max_cooldown;
    uint64_t rng;                /* jitter's state: never rolled back, any value will do */
    uint64_t recoveries;         /* times the lock was taken over from a dead holder */
    undo_log undo;
    /* resource resources[nresources]; uint64_t slot_entry[nslots]; double not_before[nresources]; */
};

typedef struct leases_box {
    lease_table *t;              /* NULL once closed */
    size_t size;
} leases_box;

static resource *resources_of(lease_table *t) { return (resource *)(t + 1); }
static uint64_t *slots_of(lease_table *t) { return (uint64_t *)(resources_of(t) + t->nresources); }
static double *not_before_of(lease_table *t) { return (double *)(slots_of(t) + t->nslots); }

static size_t table_size(lua_Integer nresources, lua_Integer nslots) {
    return sizeof(lease_table) + (size_t)nresources * (sizeof(resource) + sizeof(double)) +
           (size_t)nslots * sizeof(uint64_t);
}

/* ---------- slot entries ---------- */

static uint64_t entry_for(const resource *r, int32_t i) {
    return ((r->generation & GENERATION_MASK) << INDEX_BITS) | (uint64_t)(i + 1);
}

/* The resource entry e names (current or not), or -1 for none or garbage. */
static int32_t entry_index(uint64_t e, int32_t nresources) {
    int32_t i = (int32_t)(e & INDEX_MASK) - 1;
    return i >= 0 && i < nresources ? i : -1;
}

/* The resource entry e holds now (its generation is the resource's), or -1. */
static int32_t entry_current(uint64_t e, const resource *r, int32_t nresources) {
    int32_t i = entry_index(e, nresources);
    return i >= 0 && e == entry_for(&r[i], i) ? i : -1;
}

/* What slot holds, dropping a stale entry (one store, consistent on its own). Lock held. */
static int32_t settle(lease_table *t, int32_t slot) {
    uint64_t *entry = &slots_of(t)[slot];
    int32_t i = entry_current(*entry, resources_of(t), t->nresources);
    if (i < 0 && *entry != 0) {
        *entry = 0;
        PAUSE_POINT("lease.stale.dropped");
    }
    return i;
}

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

/* True when the invariant holds (no log open, every holder count equal to the current
   entries naming the resource and within its bounds, every entry naming a resource).
   tally: nresources counters of scratch space. Lock held. */
static int table_consistent(lease_table *t, uint32_t *tally) {
    resource *r = resources_of(t);
    uint64_t *entry = slots_of(t);
    if (atomic_load(&t->undo.active)) return 0;
    memset(tally, 0, (size_t)t->nresources * sizeof *tally);
    for (int32_t s = 0; s < t->nslots; s++) {
        if (entry[s] == 0) continue;
        if (entry_index(entry[s], t->nresources) < 0) return 0;
        int32_t i = entry_current(entry[s], r, t->nresources);
        if (i >= 0) tally[i]++;
    }
    for (int32_t i = 0; i < t->nresources; i++) {
        uint32_t bound = r[i].state == R_READY     ? t->per_resource
                         : r[i].state == R_PROBING ? 1
                         : r[i].state == R_COOLING || r[i].state == R_RETIRED || r[i].state == R_OFF ? 0
                                                                               : UINT32_MAX;
        if (bound == UINT32_MAX || r[i].holders > bound || r[i].holders != tally[i]) return 0;
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

/* Puts the resources whose cooldown is over on probation: one store each, consistent at
   every step (a cooling resource has no holders). */
static void revive(lease_table *t, double now) {
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources; i++) {
        if (r[i].state == R_COOLING && r[i].cooling_until <= now) {
            r[i].state = R_PROBING;
            PAUSE_POINT("lease.revive.probing");
        }
    }
}

/* The resource a slot may lease with the fewest holders (free ones first, so that load
   spreads), the least leased among equals; never skip; -1 when none. A resource on
   probation takes one holder only. */
static int32_t pick(lease_table *t, int32_t skip) {
    resource *r = resources_of(t);
    int32_t best = -1;
    for (int32_t i = 0; i < t->nresources; i++) {
        uint32_t room = r[i].state == R_READY ? t->per_resource : r[i].state == R_PROBING ? 1 : 0;
        if (i == skip || r[i].holders >= room) continue;
        if (best < 0 || r[i].holders < r[best].holders ||
            (r[i].holders == r[best].holders && r[i].leases < r[best].leases))
            best = i;
    }
    return best;
}

static void set_reason(resource *r, const char *reason) {
    if (reason == NULL) return;
    strncpy(r->reason, reason, REASON_SIZE - 1);
    r->reason[REASON_SIZE - 1] = '\0';
}

/* Leases resource i (picked) to slot. Inside a logged operation that saved both. */
static void lease_to(lease_table *t, int32_t i, int32_t slot) {
    resource *r = &resources_of(t)[i];
    r->holders++;
    PAUSE_POINT("lease.acquire.holders");
    r->leases++;
    PAUSE_POINT("lease.acquire.count");
    slots_of(t)[slot] = entry_for(r, i);
    PAUSE_POINT("lease.acquire.slot");
}

/* Takes resource i from all its holders (their entries go stale) into a cooldown of at
   least min_seconds, or retirement. Inside a logged operation that saved it. */
static void cool(lease_table *t, int32_t i, const char *reason, int retire, double min_seconds) {
    resource *r = &resources_of(t)[i];
    r->generation++;
    PAUSE_POINT("lease.cool.generation");
    r->holders = 0;
    PAUSE_POINT("lease.cool.holders");
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
    d *= jitter(t);
    if (d < min_seconds) d = min_seconds;
    r->cooling_until = now_seconds() + d;
    PAUSE_POINT("lease.cool.until");
    r->state = R_COOLING;
    PAUSE_POINT("lease.cool.state");
}

/* The slot that lost its resource to cool: leases it next, or records that it holds
   nothing. Inside the same logged operation. */
static void lease_next(lease_table *t, int32_t slot, int32_t next) {
    if (next >= 0) {
        lease_to(t, next, slot);
    } else if (slots_of(t)[slot] != 0) {
        slots_of(t)[slot] = 0;
        PAUSE_POINT("lease.cool.slot");
    }
}

/* Gives slot a resource if it holds none. Returns what it holds, or -1. */
static int32_t acquire_locked(lease_table *t, int32_t slot) {
    int32_t held = settle(t, slot);
    if (held >= 0) return held;
    revive(t, now_seconds());
    int32_t next = pick(t, -1);
    if (next < 0) return -1;
    undo_begin(t, slot, next, -1);
    lease_to(t, next, slot);
    undo_end(t);
    return next;
}

/* Gives the slot's resource back, unharmed (a probation resource stays on probation). */
static void release_locked(lease_table *t, int32_t slot) {
    int32_t i = settle(t, slot);
    if (i < 0) return;
    undo_begin(t, slot, i, -1);
    resources_of(t)[i].holders--;
    PAUSE_POINT("lease.release.holders");
    slots_of(t)[slot] = 0;
    PAUSE_POINT("lease.release.slot");
    undo_end(t);
}

/* A success (the failure counts start again, a probation ends), or a failure, which after
   max_failures in a row, or at once on probation, cools the resource and leases the slot
   another. Returns what the slot holds, or -1. */
static int32_t report_locked(lease_table *t, int32_t slot, int ok, const char *reason) {
    int32_t i = settle(t, slot);
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
        if (r->state == R_PROBING) {
            r->state = R_READY;
            PAUSE_POINT("lease.probe.passed");
        }
        undo_end(t);
        return i;
    }
    int breaks = r->state == R_PROBING || r->consecutive_failures + 1 >= t->max_failures;
    int32_t next = -1;
    if (breaks) {
        revive(t, now_seconds());
        next = pick(t, i);
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
    cool(t, i, reason, 0, 0);
    lease_next(t, slot, next);
    undo_end(t);
    return next;
}

/* Takes the slot's resource away (cooled for at least min_seconds, counted as a failure;
   or retired) and leases the slot another, in one operation. Returns the new one, or -1
   when none is free. */
static int32_t replace_locked(lease_table *t, int32_t slot, const char *reason, int retire, double min_seconds) {
    int32_t old = settle(t, slot);
    revive(t, now_seconds());
    int32_t next = pick(t, old);
    if (old < 0 && next < 0) return -1;
    undo_begin(t, slot, old, next);
    if (old >= 0) {
        if (!retire) {
            resources_of(t)[old].failures++;
            PAUSE_POINT("lease.swap.failures");
        }
        cool(t, old, reason, retire, min_seconds);
    }
    lease_next(t, slot, next);
    undo_end(t);
    return next;
}

/* 0 when resource i may be used now (then reserves: the next use not before now + delay),
   else the seconds to wait, reserving nothing. */
static double pace_locked(lease_table *t, int32_t i, double delay) {
    double now = now_seconds();
    double *not_before = &not_before_of(t)[i];
    if (*not_before > now) return *not_before - now;
    PAUSE_POINT("lease.pace.due");
    *not_before = now + delay;
    PAUSE_POINT("lease.pace.reserved");
    return 0;
}

/* ---------- the C interface (pool.c, worker.c) ---------- */

int32_t lease_acquire(lease_table *t, int32_t slot) {
    if (lock_table(t) != 0) return -1;
    int32_t i = acquire_locked(t, slot);
    unlock_table(t);
    return i;
}

int32_t lease_held(lease_table *t, int32_t slot) {
    if (lock_table(t) != 0) return -1;
    int32_t i = settle(t, slot);
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

/* What snapshot and stats call a resource: free and leased by its holders, probing while
   its one probe slot holds it (on probation with no holder it is free: any slot may take
   it, as its probe). */
static const char *state_name(const resource *r) {
    switch (r->state) {
    case R_READY: return r->holders > 0 ? "leased" : "free";
    case R_PROBING: return r->holders > 0 ? "probing" : "free";
    case R_COOLING: return "cooling";
    case R_OFF: return "off";
    default: return "retired";
    }
}

static lease_table *open_table(lua_State *L, leases_box *b) {
    if (b->t == NULL) type_closed_error(L, LEASES_TYPE);
    return b->t;
}

/* For the methods, which type_register gave the metatable as upvalue 1. */
static lease_table *check_leases(lua_State *L, int i) { return open_table(L, type_check_fast(L, i, LEASES_TYPE)); }

/* For pool.c and worker.c, whose functions have no such upvalue. */
lease_table *lease_check(lua_State *L, int i) { return open_table(L, luaL_checkudata(L, i, LEASES_TYPE)); }

/* Slots and resource indexes are 1-based in Lua. */
static int32_t check_index(lua_State *L, int i, const char *what, int32_t n) {
    lua_Integer v = luaL_checkinteger(L, i);
    if (v < 1 || v > n) luaL_argerror(L, i, lua_pushfstring(L, "%s must be from 1 to %d", what, (int)n));
    return (int32_t)(v - 1);
}

static int32_t check_slot(lua_State *L, lease_table *t, int i) { return check_index(L, i, "slot", t->nslots); }

/* A number of seconds >= 0 at i; more than ARGS_FOREVER counts as ARGS_FOREVER. */
static double check_seconds(lua_State *L, int i, const char *what) {
    double v = (double)luaL_checknumber(L, i);
    if (!(v >= 0)) {
        lua_pushvalue(L, i);
        luaL_argerror(L, i, lua_pushfstring(L, "%s must be a non-negative number of seconds, got %s", what,
                                            args_show(L, -1)));
    }
    return v > ARGS_FOREVER ? ARGS_FOREVER : v;
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
   retire_after = 0 (never), per_resource = 1, name = "forage.pool resource" } -> a lease
   table in shared memory. name is the function that option errors name. */
static int leases_new(lua_State *L) {
    static const char *const options[] = {"count",        "slots",        "max_failures", "cooldown",
                                          "max_cooldown", "retire_after", "per_resource", "name",
                                          NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *fname = args_opt_string(L, 1, LEASES_FNAME, "name", LEASES_FNAME, NULL);
    args_check_options(L, 1, fname, options);
    lua_Integer n = args_opt_integer(L, 1, fname, "count", 0, 1, MAX_RESOURCES);
    lua_Integer slots = args_opt_integer(L, 1, fname, "slots", 0, 1, MAX_SLOTS);
    if (n == 0 || slots == 0) return luaL_error(L, "%s: options 'count' and 'slots' are required", fname);
    lua_Integer max_failures = args_opt_integer(L, 1, fname, "max_failures", 3, 1, MAX_COUNT);
    lua_Integer retire_after = args_opt_integer(L, 1, fname, "retire_after", 0, 0, MAX_COUNT);
    lua_Integer per_resource = args_opt_integer(L, 1, fname, "per_resource", 1, 1, slots);
    double cooldown = args_opt_number(L, 1, fname, "cooldown", 30, 0, ARGS_FOREVER);
    double max_cooldown = args_opt_number(L, 1, fname, "max_cooldown", 600, 0, ARGS_FOREVER);

    /* Created closed, then opened: a failure below leaves a userdata that __gc can take. */
    leases_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->t = NULL;
    b->size = 0;
    luaL_setmetatable(L, LEASES_TYPE);
    size_t size = table_size(n, slots);
    lease_table *t = shm_map_locked(size, offsetof(lease_table, lock));
    if (t == NULL) return luaL_error(L, "cannot map the lease table: %s", strerror(errno));
    b->t = t;
    b->size = size;
    t->nresources = (int32_t)n;
    t->nslots = (int32_t)slots;
    t->max_failures = (uint32_t)max_failures;
    t->retire_after = (uint32_t)retire_after;
    t->per_resource = (uint32_t)per_resource;
    t->cooldown = cooldown;
    t->max_cooldown = max_cooldown < cooldown ? cooldown : max_cooldown;
    t->rng = (uint64_t)(now_seconds() * 1e9) | 1;
    /* The mapping is zeroed: every resource ready with no holder, every slot empty, every
       resource usable at once (not_before 0). */
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
    int32_t i = settle(t, slot);
    unlock_table(t);
    return push_index(L, i);
}

/* L:release(slot): the slot's resource is given back, unharmed. */
static int leases_release(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    lock_or_raise(L, t);
    release_locked(t, slot);
    unlock_table(t);
    return 0;
}

/* L:report(slot, ok [, reason]) -> the index the slot holds afterwards, or nil.
   A failure that reaches max_failures in a row, or any failure on probation, cools the
   resource (taking it from all its holders) and leases the slot another. */
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

static int take_back(lua_State *L, int retire, double min_seconds, int reason_at, const char *def) {
    lease_table *t = check_leases(L, 1);
    int32_t slot = check_slot(L, t, 2);
    const char *reason = luaL_optstring(L, reason_at, def);
    lock_or_raise(L, t);
    int32_t i = replace_locked(t, slot, reason, retire, min_seconds);
    unlock_table(t);
    return push_index(L, i);
}

/* L:swap(slot [, reason]) -> another resource for the slot (or nil); the old one cools.
   A swap counts as a failure. */
static int leases_swap(lua_State *L) { return take_back(L, 0, 0, 3, "swapped"); }

/* L:cool(slot, seconds [, reason]) -> another resource for the slot (or nil): a swap whose
   cooldown is at least seconds (a Retry-After), or the exponential one when longer. */
static int leases_cool(lua_State *L) {
    check_leases(L, 1);
    double seconds = check_seconds(L, 3, "cooldown");
    return take_back(L, 0, seconds, 4, "cooled");
}

/* L:restore(index, seconds [, reason]): resource index, held by no slot and ready, cools
   for seconds, as an earlier run left it (a crawl resuming from its state: a proxy that
   was cooling when the crawl stopped does not get requests the moment it resumes). Does
   nothing to a resource that is held, cooling or retired, or for 0 seconds. */
static int leases_restore(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t i = check_index(L, 2, "index", t->nresources);
    double seconds = check_seconds(L, 3, "cooldown");
    const char *reason = luaL_optstring(L, 4, "cooling when the crawl stopped");
    lock_or_raise(L, t);
    resource *r = &resources_of(t)[i];
    if (seconds > 0 && r->state == R_READY && r->holders == 0) {
        set_reason(r, reason);
        r->cooldowns = 1;
        r->cooling_until = now_seconds() + seconds;
        r->state = R_COOLING;
    }
    unlock_table(t);
    return 0;
}

/* L:disable(index): resource index is taken from all its holders (as a cooldown takes it,
   without counting a failure) and leased to none until enabled: a crawl on several hosts
   gives a proxy to another host. A retired resource stays retired; disabling an off one
   does nothing. */
static int leases_disable(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t i = check_index(L, 2, "index", t->nresources);
    lock_or_raise(L, t);
    resource *r = &resources_of(t)[i];
    if (r->state != R_RETIRED && r->state != R_OFF) {
        undo_begin(t, -1, i, -1);
        r->generation++;
        PAUSE_POINT("lease.disable.generation");
        r->holders = 0;
        PAUSE_POINT("lease.disable.holders");
        r->state = R_OFF;
        PAUSE_POINT("lease.disable.state");
        undo_end(t);
    }
    unlock_table(t);
    return 0;
}

/* L:enable(index [, seconds [, reason]]): an off resource may be leased again, at once, or
   after cooling for seconds (a cooldown another host gave it). Does nothing to a resource
   that is not off. One store publishes it (an off resource has no holder), so no log. */
static int leases_enable(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t i = check_index(L, 2, "index", t->nresources);
    double seconds = lua_isnoneornil(L, 3) ? 0 : check_seconds(L, 3, "cooldown");
    const char *reason = luaL_optstring(L, 4, NULL);
    lock_or_raise(L, t);
    resource *r = &resources_of(t)[i];
    if (r->state == R_OFF) {
        set_reason(r, reason);
        if (seconds > 0) {
            if (r->cooldowns == 0) r->cooldowns = 1;
            r->cooling_until = now_seconds() + seconds;
            r->state = R_COOLING;
        } else {
            r->state = R_READY;
        }
    }
    unlock_table(t);
    return 0;
}

/* L:retire(slot [, reason]) -> another resource (or nil); the old one never comes back. */
static int leases_retire(lua_State *L) { return take_back(L, 1, 0, 3, "retired"); }

/* L:pace(index, delay) -> 0 when resource index may be used now (the next use is then
   reserved for now + delay), else the seconds to wait (nothing reserved). */
static int leases_pace(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    int32_t i = check_index(L, 2, "index", t->nresources);
    double delay = check_seconds(L, 3, "delay");
    if (delay == 0) {
        lua_pushnumber(L, 0);
        return 1;
    }
    lock_or_raise(L, t);
    double wait = pace_locked(t, i, delay);
    unlock_table(t);
    lua_pushnumber(L, wait);
    return 1;
}

/* L:next_revival() -> the seconds until the next cooling resource may be probed (0: now),
   or nil when none is cooling. */
static int leases_next_revival(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    double next = lease_next_revival(t);
    if (next < 0) luaL_pushfail(L);
    else lua_pushnumber(L, next);
    return 1;
}

/* L:none_left() -> true when every resource is retired. */
static int leases_none_left(lua_State *L) {
    lua_pushboolean(L, lease_none_left(check_leases(L, 1)));
    return 1;
}

/* L:snapshot() -> { { state, holders, holder, probation, leases, successes, failures,
   cooldowns, cooldown, reason }, ... }: state "free", "leased", "probing", "cooling" or
   "retired"; holder one holding slot (1-based) or nil; probation true while the next
   report decides; cooldown the seconds left (0 unless cooling). */
static int leases_snapshot(lua_State *L) {
    lease_table *t = check_leases(L, 1);
    size_t rsize = (size_t)t->nresources * sizeof(resource), ssize = (size_t)t->nslots * sizeof(uint64_t);
    resource *copy = lua_newuserdatauv(L, rsize, 0);   /* allocated before locking: may raise */
    uint64_t *entries = lua_newuserdatauv(L, ssize, 0);
    lock_or_raise(L, t);
    revive(t, now_seconds());
    memcpy(copy, resources_of(t), rsize);
    memcpy(entries, slots_of(t), ssize);
    unlock_table(t);
    double now = now_seconds();
    lua_createtable(L, t->nresources, 0);
    for (int32_t i = 0; i < t->nresources; i++) {
        resource *r = &copy[i];
        lua_createtable(L, 0, 10);
        lua_pushstring(L, state_name(r));
        lua_setfield(L, -2, "state");
        lua_pushinteger(L, r->holders);
        lua_setfield(L, -2, "holders");
        if (r->state == R_PROBING) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "probation");
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
    /* holder: the first slot with a current entry naming the resource. */
    for (int32_t s = 0; s < t->nslots; s++) {
        int32_t i = entry_current(entries[s], copy, t->nresources);
        if (i < 0) continue;
        lua_rawgeti(L, -1, i + 1);
        if (lua_getfield(L, -1, "holder") == LUA_TNIL) {
            lua_pushinteger(L, s + 1);
            lua_setfield(L, -3, "holder");
        }
        lua_pop(L, 2);
    }
    return 1;
}

/* L:stats() -> { resources, slots, per_resource, free, leased, probing, cooling, retired,
   recoveries, consistent }: counts by state (as snapshot names them), the times a dead
   holder's lock was taken over (and its operation undone), and whether the invariant
   holds. */
static int leases_stats(lua_State *L) {
    static const char *const names[] = {"free", "leased", "probing", "cooling", "retired", "off"};
    lease_table *t = check_leases(L, 1);
    uint32_t *tally = lua_newuserdatauv(L, (size_t)t->nresources * sizeof(uint32_t), 0);
    lua_Integer count[6] = {0, 0, 0, 0, 0, 0};
    lock_or_raise(L, t);
    revive(t, now_seconds());
    resource *r = resources_of(t);
    for (int32_t i = 0; i < t->nresources; i++) {
        const char *name = state_name(&r[i]);
        for (int k = 0; k < 6; k++)
            if (strcmp(name, names[k]) == 0) count[k]++;
    }
    lua_Integer recoveries = (lua_Integer)t->recoveries;
    int consistent = table_consistent(t, tally);
    unlock_table(t);
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, t->nresources);
    lua_setfield(L, -2, "resources");
    lua_pushinteger(L, t->nslots);
    lua_setfield(L, -2, "slots");
    lua_pushinteger(L, t->per_resource);
    lua_setfield(L, -2, "per_resource");
    for (int k = 0; k < 6; k++) {
        lua_pushinteger(L, count[k]);
        lua_setfield(L, -2, names[k]);
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
        {"acquire", leases_acquire},
        {"held", leases_held},
        {"release", leases_release},
        {"report", leases_report},
        {"swap", leases_swap},
        {"cool", leases_cool},
        {"retire", leases_retire},
        {"restore", leases_restore},
        {"disable", leases_disable},
        {"enable", leases_enable},
        {"pace", leases_pace},
        {"next_revival", leases_next_revival},
        {"none_left", leases_none_left},
        {"snapshot", leases_snapshot},
        {"stats", leases_stats},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {{"__gc", leases_gc}, {"__close", leases_gc}, {NULL, NULL}};
    type_register(L, LEASES_TYPE, methods, meta, 1);
    lua_pushcfunction(L, leases_new);
    lua_setfield(L, -2, "leases");
}
