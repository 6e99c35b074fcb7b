/* forage.Set: a set of strings shared by every process forked after its creation, for
   deduplicating URLs across a crawl's workers.

   A string is stored as its 128-bit fingerprint: SipHash-2-4 with a 128-bit output,
   keyed with 16 random bytes drawn when the set is created. Two different strings share
   a fingerprint with probability 2^-128 (whatever the strings, since the key is secret),
   so a set of n strings reports a false "already there" with probability about
   n^2 / 2^129: 1.5e-25 for ten million strings.

   The table is lock-free open addressing with linear probing, twice as many slots as the
   capacity. A slot is two 64-bit words, (hi, lo), each written once with a compare-and-
   swap from zero (fingerprints never have a zero half):

     hi == 0             empty
     hi == h, lo == 0    claimed for a fingerprint whose high half is h, low half not
                         yet written
     hi == h, lo == l    holds the fingerprint (h, l)

   add walks the probe sequence; at an empty slot it claims hi, at a slot claimed with
   its own h it tries to write lo. Whoever writes lo = l added the string (returns true);
   whoever finds lo == l was second (false). Because both words are write-once, every
   process adding the same string stops at the same slot, so exactly one is told "new".
   has stops at the first empty slot, at (h, l) (true), or at (h, 0) (false: the add in
   progress there has not happened yet). Nothing ever waits for another process.

   Capacity: the places left are counted down before a slot is claimed, and a claimed
   slot keeps its place, so at most half the slots are ever claimed and an add of a new
   string beyond the capacity raises "set is full"; #set is the number of places taken.
   At the boundary a place is reserved before anyone knows whether the string is new: two
   processes adding the same string when one place is left both reach the same empty slot,
   one holds the last place and is about to claim it, the other has none. That one waits
   for the slot to be claimed (a few instructions away, unless the holder is descheduled;
   at most 2 ms) and then compares, as when it loses a claim: the string was not new to
   it. Only an add that finds no place and an empty slot nobody claims reports "full".

   A process killed in the middle of an add either had not claimed a slot (nothing
   changed), or leaves a slot (h, 0): a dead slot, which keeps its place (so #set counts
   it) until the next add of a string with the same high half, in practice the same
   string added again, finishes it. A kill in the few instructions between taking a place
   and claiming the slot loses that place: #set is one too high for good. Either way no
   string is lost, none is reported new twice, and no add or has ever blocks. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <sys/random.h>

#include "args.h"
#include "clock.h"
#include "core.h"
#include "fork.h"
#include "hash.h"
#include "lauxlib.h"
#include "luatype.h"
#include "pause.h"
#include "shm.h"

#define SET_TYPE "forage.Set"
#define SET_DEFAULT_CAPACITY 1000000
/* The slot index is a 32 x 32-bit multiply-shift of the hash: at most 2^32 slots. */
#define SET_MAX_CAPACITY ((lua_Integer)1 << 31)

typedef struct set_slot {
    _Atomic uint64_t hi;
    _Atomic uint64_t lo;
} set_slot;

/* The places left (capacity minus places taken) are spread over stripes, each on a cache
   line of its own: a process takes from the stripe its pid picks, so that two processes
   adding at once do not bounce one counter between their cores (measured here: a single
   counter made 10^7 adds from two processes three to four times slower). A process whose
   stripe is empty takes one place at a time from the others. */
#define SET_STRIPES 64

typedef struct set_stripe {
    _Atomic int64_t spare;
    unsigned char pad[56];
} set_stripe;

/* The head of the mapping; the slots follow it. */
typedef struct set_shared {
    uint64_t capacity;
    uint64_t nslots;
    uint64_t key[2];
    unsigned char pad[32];
    set_stripe stripes[SET_STRIPES];
} set_shared;

typedef struct set {
    set_shared *shared;   /* NULL once closed */
    set_slot *slots;
    size_t map_size;
    pid_t victim_pid;     /* the process next_victim belongs to (the userdata is copied by fork) */
    unsigned next_victim; /* its next stripe to take a place from, once its own is empty */
} set;

/* ---------------------------------------------------------------------------------
   The table */

typedef struct fingerprint {
    uint64_t hi, lo;
    uint64_t slot;   /* where its probe sequence starts */
} fingerprint;

static fingerprint fingerprint_of(const set *s, const char *str, size_t len) {
    uint64_t h[2];
    siphash128(s->shared->key, str, len, h);
    fingerprint f;
    /* Zero marks an unwritten half: the two fingerprints with a zero half lose a bit. */
    f.hi = h[0] != 0 ? h[0] : 1;
    f.lo = h[1] != 0 ? h[1] : 1;
    f.slot = ((f.lo >> 32) * s->shared->nslots) >> 32;
    return f;
}

/* The stripe of process pid: a multiplicative hash, so that processes with nearby pids
   start far apart. */
static unsigned stripe_of(pid_t pid) {
    return (unsigned)(((uint32_t)pid * 2654435761u) >> 26);   /* the top 6 bits: 64 stripes */
}

static set_stripe *own_stripe(set_shared *sh) {
    return &sh->stripes[stripe_of(current_pid())];
}

/* Takes one place from stripe st: 1, or 0 when it has none. */
static int take_spare(set_stripe *st) {
    int64_t spare = atomic_load_explicit(&st->spare, memory_order_relaxed);
    while (spare > 0)
        if (atomic_compare_exchange_weak(&st->spare, &spare, spare - 1)) return 1;
    return 0;
}

/* Reserves a place for a new entry: 1, or 0 when the set holds its capacity. */
static int reserve_entry(set *s) {
    set_shared *sh = s->shared;
    pid_t pid = current_pid();
    if (take_spare(&sh->stripes[stripe_of(pid)])) return 1;
    /* Each process walks the other stripes from its own, so that two of them rarely
       take from the same one at once. */
    if (s->victim_pid != pid) {
        s->victim_pid = pid;
        s->next_victim = stripe_of(pid);
    }
    for (unsigned k = 0; k < SET_STRIPES; k++) {
        unsigned victim = (s->next_victim + k) % SET_STRIPES;
        if (take_spare(&sh->stripes[victim])) {
            s->next_victim = victim;
            return 1;
        }
    }
    return 0;
}

static void release_entry(set *s) {
    atomic_fetch_add(&own_stripe(s->shared)->spare, 1);
}

static lua_Integer set_count(const set *s) {
    int64_t spare = 0;
    for (unsigned k = 0; k < SET_STRIPES; k++) spare += atomic_load(&s->shared->stripes[k].spare);
    return (lua_Integer)s->shared->capacity - spare;
}

typedef enum { ADD_NEW, ADD_PRESENT, ADD_FULL } add_result;

/* The slot's hi once another process claims it, or 0 when nobody does within 2 ms: an
   add without a place waits at an empty slot for the add that holds one (header). */
static uint64_t await_claim(set_slot *slot) {
    double deadline = now_seconds() + 0.002;
    for (unsigned n = 1;; n++) {
        uint64_t hi = atomic_load(&slot->hi);
        if (hi != 0) return hi;
        if (n % 64 != 0) {
            cpu_relax();
        } else {
            if (now_seconds() > deadline) return 0;
            sched_yield();
        }
    }
}

/* A place is reserved before a slot is claimed and belongs to the slot once claimed: the
   add that writes lo, whoever claimed hi, needs no place of its own. */
static add_result set_insert(set *s, fingerprint f) {
    uint64_t nslots = s->shared->nslots;
    uint64_t i = f.slot;
    int reserved = 0;
    for (uint64_t probes = 0; probes < nslots; probes++) {
        set_slot *slot = &s->slots[i];
        uint64_t hi = atomic_load(&slot->hi);
        if (hi == 0) {
            /* Not in the set: this slot ends its probe sequence, unless someone claims it first. */
            if (!reserved) reserved = reserve_entry(s);
            if (!reserved) {
                hi = await_claim(slot);
                if (hi == 0) return ADD_FULL;
            } else {
                PAUSE_POINT("set.add.reserved");
                if (atomic_compare_exchange_strong(&slot->hi, &hi, f.hi)) {
                    hi = f.hi;
                    reserved = 0;
                    PAUSE_POINT("set.add.claimed");
                }
            }
        }
        if (hi == f.hi) {
            uint64_t lo = atomic_load(&slot->lo);
            add_result r = ADD_NEW;
            if (lo == 0 && atomic_compare_exchange_strong(&slot->lo, &lo, f.lo)) {
                lo = f.lo;
                PAUSE_POINT("set.add.written");
            } else {
                r = ADD_PRESENT;
            }
            if (lo == f.lo) {
                if (reserved) release_entry(s);   /* a place reserved for a claim that another made */
                return r;
            }
        }
        i = i + 1 == nslots ? 0 : i + 1;
    }
    if (reserved) release_entry(s);
    return ADD_FULL;   /* every slot claimed: cannot happen, at most half of them ever are */
}

static int set_contains(const set *s, fingerprint f) {
    uint64_t nslots = s->shared->nslots;
    uint64_t i = f.slot;
    for (uint64_t probes = 0; probes < nslots; probes++) {
        set_slot *slot = &s->slots[i];
        uint64_t hi = atomic_load(&slot->hi);
        if (hi == 0) return 0;
        if (hi == f.hi) {
            uint64_t lo = atomic_load(&slot->lo);
            if (lo == f.lo) return 1;
            if (lo == 0) return 0;
        }
        i = i + 1 == nslots ? 0 : i + 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------
   Lua */

static set *check_set(lua_State *L, int i) {
    set *s = type_check_fast(L, i, SET_TYPE);
    if (s->shared == NULL) type_closed_error(L, SET_TYPE);
    return s;
}

/* forage.set{ capacity = n } or forage.set(n) -> an empty Set for up to n strings
   (default 1,000,000), using 32 bytes of shared memory per place. */
static int set_new(lua_State *L) {
    static const char *const names[] = {"capacity", NULL};
    lua_Integer capacity = SET_DEFAULT_CAPACITY;
    if (lua_type(L, 1) == LUA_TTABLE) {
        args_check_options(L, 1, "forage.set", names);
        capacity = args_opt_integer(L, 1, "forage.set", "capacity", SET_DEFAULT_CAPACITY, 1, SET_MAX_CAPACITY);
    } else if (lua_type(L, 1) == LUA_TNUMBER) {
        capacity = luaL_checkinteger(L, 1);
        luaL_argcheck(L, capacity >= 1 && capacity <= SET_MAX_CAPACITY, 1, "capacity must be from 1 to 2147483648");
    } else if (!lua_isnoneornil(L, 1)) {
        return luaL_typeerror(L, 1, "table of options or capacity");
    }
    set *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, SET_TYPE);
    uint64_t nslots = 2 * (uint64_t)capacity;
    size_t map_size = sizeof(set_shared) + (size_t)nslots * sizeof(set_slot);
    uint64_t key[2];
    if (getrandom(key, sizeof key, 0) != (ssize_t)sizeof key)
        return luaL_error(L, "forage.set: cannot draw a random key: %s", strerror(errno));
    set_shared *sh = shm_map(map_size);
    if (sh == NULL) return luaL_error(L, "forage.set: cannot map %I bytes of shared memory: %s", (lua_Integer)map_size,
                                      strerror(errno));
    sh->capacity = (uint64_t)capacity;
    sh->nslots = nslots;
    sh->key[0] = key[0];
    sh->key[1] = key[1];
    uint64_t share = (uint64_t)capacity / SET_STRIPES, rest = (uint64_t)capacity % SET_STRIPES;
    for (unsigned k = 0; k < SET_STRIPES; k++) atomic_init(&sh->stripes[k].spare, (int64_t)(share + (k < rest)));
    s->shared = sh;
    s->slots = (set_slot *)(sh + 1);
    s->map_size = map_size;
    s->victim_pid = 0;
    shm_share(L, -1);
    return 1;
}

/* set:add(s) -> true when s was not in the set (and now is), false when it was; raises
   "set is full" when s is new and the set holds its capacity. */
static int set_add(lua_State *L) {
    set *s = check_set(L, 1);
    size_t len;
    const char *str = luaL_checklstring(L, 2, &len);
    add_result r = set_insert(s, fingerprint_of(s, str, len));
    if (r == ADD_FULL)
        return luaL_error(L, "set is full (capacity %I)", (LUAI_UACINT)s->shared->capacity);
    lua_pushboolean(L, r == ADD_NEW);
    return 1;
}

/* set:has(s) -> true when s was added. */
static int set_has(lua_State *L) {
    set *s = check_set(L, 1);
    size_t len;
    const char *str = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, set_contains(s, fingerprint_of(s, str, len)));
    return 1;
}

/* #set -> the number of strings added. */
static int set_len(lua_State *L) {
    set *s = check_set(L, 1);
    lua_pushinteger(L, set_count(s));
    return 1;
}

/* set:capacity() -> the most strings the set holds. */
static int set_capacity(lua_State *L) {
    set *s = check_set(L, 1);
    lua_pushinteger(L, (lua_Integer)s->shared->capacity);
    return 1;
}

/* set:bytes() -> the size of the shared mapping. */
static int set_bytes(lua_State *L) {
    set *s = check_set(L, 1);
    lua_pushinteger(L, (lua_Integer)s->map_size);
    return 1;
}

/* set:close(), __gc and __close: unmaps this process's view; idempotent. */
static int set_close(lua_State *L) {
    set *s = type_check_fast(L, 1, SET_TYPE);
    shm_unmap(s->shared, s->map_size);
    s->shared = NULL;
    s->slots = NULL;
    return 0;
}

static int set_tostring(lua_State *L) {
    set *s = type_check_fast(L, 1, SET_TYPE);
    if (s->shared == NULL) lua_pushliteral(L, "forage.Set (closed)");
    else
        lua_pushfstring(L, "forage.Set (%I of %I)", (LUAI_UACINT)set_count(s),
                        (LUAI_UACINT)s->shared->capacity);
    return 1;
}

void forage_open_set(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"add", set_add},     {"has", set_has},     {"capacity", set_capacity},
        {"bytes", set_bytes}, {"close", set_close}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__len", set_len}, {"__gc", set_close}, {"__close", set_close}, {"__tostring", set_tostring}, {NULL, NULL},
    };
    type_register(L, SET_TYPE, methods, meta, 1);
    lua_pushcfunction(L, set_new);
    lua_setfield(L, -2, "set");
}
