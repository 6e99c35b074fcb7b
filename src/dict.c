/* forage.Dict: a map from strings to wire-encoded values in shared memory, inherited by
   the processes forked after its creation, behind one robust lock.

   Crash safety (a holder killed at any instruction leaves a dict that works):
   - Records (key + encoded value) are immutable once written. A store writes the new
     record past the heap's bump pointer, moves the bump pointer, and only then switches
     the slot to it; a delete is one store of a tombstone into the slot. A kill therefore
     leaves each key with its old value or its new one, never a torn one.
   - Compaction is a copy into a second generation (table + heap) that nobody reads, ended
     by one store that makes it the active generation. A kill before that store leaves the
     old generation untouched; the half-built one is simply rebuilt next time.
   - The counters (entries, tombstones, live bytes) are derived: the first acquirer after
     a death recounts them from the slots.
   What a kill can leak: the bytes of a record written but not yet (or no longer)
   referenced, until the next compaction reclaims them. Nothing is leaked for good.
   The second generation doubles the address space reserved, not the memory used: the
   pages of the generation left behind are handed back (MADV_REMOVE) after each flip. */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "hash.h"
#include "lauxlib.h"
#include "luatype.h"
#include "pause.h"
#include "shm.h"
#include "wire.h"

#define DICT_TYPE "forage.Dict"
#define DICT_DEFAULT_CAPACITY 1024
#define DICT_DEFAULT_BYTES ((lua_Integer)1 << 20)
#define DICT_MAX_CAPACITY ((lua_Integer)1 << 28)
#define DICT_MAX_BYTES ((lua_Integer)1 << 40)

/* Slot values: EMPTY ends a probe, DELETED does not; anything else is a record's offset
   in the heap plus REF_BASE. */
#define REF_EMPTY 0
#define REF_DELETED 1
#define REF_BASE 2

typedef struct record {
    uint64_t hash;
    uint64_t key_len;
    uint64_t value_len;
    /* the key's bytes, then the value's, padded to 8 */
} record;

typedef struct generation {
    _Atomic uint64_t top;   /* bump pointer: every referenced record lies below it */
    uint64_t live;          /* derived: entries */
    uint64_t deleted;       /* derived: tombstones */
    uint64_t live_bytes;    /* derived: heap bytes of the live records */
    size_t slots_at;        /* offsets from the start of the mapping (fixed) */
    size_t heap_at;
} generation;

typedef struct dict_shared {
    shm_lock lock;
    uint64_t capacity;      /* most entries */
    uint64_t nslots;        /* a power of two, at least twice the capacity */
    uint64_t heap_bytes;
    _Atomic uint32_t active;   /* 0 or 1: the generation in use */
    generation gen[2];
} dict_shared;

typedef struct dict {
    dict_shared *shared;   /* NULL once closed */
    size_t size;           /* of the mapping */
    int busy;              /* inside update's function: the lock is held by this process */
    buf scratch;           /* bytes copied out under the lock, decoded after it */
    buf encoded;           /* the value being stored */
} dict;

static _Atomic uint64_t *slots_of(dict_shared *s, const generation *g) {
    return (_Atomic uint64_t *)((char *)s + g->slots_at);
}

static char *heap_of(dict_shared *s, const generation *g) {
    return (char *)s + g->heap_at;
}

static generation *active_gen(dict_shared *s) {
    return &s->gen[atomic_load_explicit(&s->active, memory_order_acquire)];
}

static record *record_at(dict_shared *s, const generation *g, uint64_t ref) {
    return (record *)(heap_of(s, g) + (ref - REF_BASE));
}

static uint64_t align8(uint64_t n) {
    return (n + 7) & ~(uint64_t)7;
}

static uint64_t record_size(uint64_t key_len, uint64_t value_len) {
    return align8(sizeof(record) + key_len + value_len);
}

/* The low bits (the slot index) must depend on every byte: FNV-1a with a final mix. */
static uint64_t hash_key(const char *key, size_t len) {
    return fnv1a_mixed(key, len);
}

/* Where key is (its slot index in *at, returns 1), or where it would go (returns 0 and
   the first tombstone or empty slot of its probe in *at). */
static int find_slot(dict_shared *s, generation *g, const char *key, size_t len, uint64_t hash, uint64_t *at) {
    _Atomic uint64_t *slots = slots_of(s, g);
    uint64_t mask = s->nslots - 1, i = hash & mask, free_at = UINT64_MAX;
    for (uint64_t n = 0; n < s->nslots; n++, i = (i + 1) & mask) {
        uint64_t ref = atomic_load_explicit(&slots[i], memory_order_relaxed);
        if (ref == REF_EMPTY) {
            *at = free_at != UINT64_MAX ? free_at : i;
            return 0;
        }
        if (ref == REF_DELETED) {
            if (free_at == UINT64_MAX) free_at = i;
            continue;
        }
        const record *r = record_at(s, g, ref);
        if (r->hash == hash && r->key_len == len && memcmp(r + 1, key, len) == 0) {
            *at = i;
            return 1;
        }
    }
    *at = free_at;   /* unreachable while a quarter of the slots stays empty */
    return 0;
}

/* Writes a record at the bump pointer of g (the caller checked the room) and moves the
   pointer past it. Returns the record's ref; nothing references it yet. */
static uint64_t append_record(dict_shared *s, generation *g, uint64_t hash, const char *key, size_t key_len,
                              const char *value, size_t value_len) {
    uint64_t off = atomic_load_explicit(&g->top, memory_order_relaxed);
    record *r = (record *)(heap_of(s, g) + off);
    r->hash = hash;
    r->key_len = key_len;
    r->value_len = value_len;
    memcpy((char *)(r + 1), key, key_len);
    memcpy((char *)(r + 1) + key_len, value, value_len);
    /* release: the record's bytes are in memory before the pointer says they are used */
    atomic_store_explicit(&g->top, off + record_size(key_len, value_len), memory_order_release);
    return off + REF_BASE;
}

/* Puts ref into the first empty slot of its probe in a generation without tombstones. */
static void place_ref(dict_shared *s, generation *g, uint64_t hash, uint64_t ref) {
    _Atomic uint64_t *slots = slots_of(s, g);
    uint64_t mask = s->nslots - 1, i = hash & mask;
    while (atomic_load_explicit(&slots[i], memory_order_relaxed) != REF_EMPTY) i = (i + 1) & mask;
    atomic_store_explicit(&slots[i], ref, memory_order_relaxed);
}

/* Compaction: copies the live records of the active generation, except skip (a ref, or
   0), and then the new record (when key is not NULL) into the other generation, and makes
   it the active one with a single store. */
static void rebuild(dict_shared *s, uint64_t skip, uint64_t hash, const char *key, size_t key_len,
                    const char *value, size_t value_len) {
    uint32_t from_index = atomic_load_explicit(&s->active, memory_order_relaxed);
    generation *from = &s->gen[from_index], *to = &s->gen[1 - from_index];
    _Atomic uint64_t *old_slots = slots_of(s, from);
    memset((void *)slots_of(s, to), 0, s->nslots * sizeof(uint64_t));
    atomic_store_explicit(&to->top, 0, memory_order_relaxed);
    uint64_t live = 0;
    for (uint64_t i = 0; i < s->nslots; i++) {
        uint64_t ref = atomic_load_explicit(&old_slots[i], memory_order_relaxed);
        if (ref < REF_BASE || ref == skip) continue;
        const record *r = record_at(s, from, ref);
        const char *bytes = (const char *)(r + 1);
        place_ref(s, to, r->hash,
                  append_record(s, to, r->hash, bytes, r->key_len, bytes + r->key_len, r->value_len));
        live++;
        if (live == 1) PAUSE_POINT("dict.rebuild.copying");
    }
    if (key != NULL) {
        place_ref(s, to, hash, append_record(s, to, hash, key, key_len, value, value_len));
        live++;
    }
    to->live = live;
    to->deleted = 0;
    to->live_bytes = atomic_load_explicit(&to->top, memory_order_relaxed);
    PAUSE_POINT("dict.rebuild.commit");
    atomic_store_explicit(&s->active, 1 - from_index, memory_order_release);   /* the commit */
    /* The old generation is garbage now: give its pages back (it reads as zeros after). */
    long page = sysconf(_SC_PAGESIZE);
    size_t first = from->slots_at, last = from->heap_at + s->heap_bytes;
    if (page > 0) madvise((char *)s + first, (last - first) / (size_t)page * (size_t)page, MADV_REMOVE);
}

/* After a holder died: recounts the derived counters from the slots. Idempotent, so a
   death in the middle of it is repaired by the next acquirer. */
static void repair(dict_shared *s) {
    generation *g = active_gen(s);
    _Atomic uint64_t *slots = slots_of(s, g);
    uint64_t live = 0, deleted = 0, bytes = 0;
    for (uint64_t i = 0; i < s->nslots; i++) {
        uint64_t ref = atomic_load_explicit(&slots[i], memory_order_relaxed);
        if (ref == REF_DELETED) deleted++;
        if (ref < REF_BASE) continue;
        const record *r = record_at(s, g, ref);
        live++;
        bytes += record_size(r->key_len, r->value_len);
    }
    g->live = live;
    g->deleted = deleted;
    g->live_bytes = bytes;
}

enum store_result { STORE_OK, STORE_FULL, STORE_HEAP_FULL };

/* Sets key to the encoded value, under the lock. Never raises. */
static enum store_result store(dict_shared *s, const char *key, size_t key_len, const char *value,
                               size_t value_len) {
    generation *g = active_gen(s);
    _Atomic uint64_t *slots = slots_of(s, g);
    uint64_t hash = hash_key(key, key_len), at;
    int found = find_slot(s, g, key, key_len, hash, &at);
    uint64_t old_ref = found ? atomic_load_explicit(&slots[at], memory_order_relaxed) : 0;
    uint64_t old_size = 0;
    if (found) {
        const record *r = record_at(s, g, old_ref);
        old_size = record_size(r->key_len, r->value_len);
    }
    if (!found && (g->live >= s->capacity || at == UINT64_MAX)) return STORE_FULL;
    if (key_len > s->heap_bytes || value_len > s->heap_bytes) return STORE_HEAP_FULL;
    uint64_t need = record_size(key_len, value_len);
    if (g->live_bytes - old_size + need > s->heap_bytes) return STORE_HEAP_FULL;
    int fills_empty_slot = !found && atomic_load_explicit(&slots[at], memory_order_relaxed) == REF_EMPTY;
    if (atomic_load_explicit(&g->top, memory_order_relaxed) + need > s->heap_bytes ||
        (fills_empty_slot && (g->live + g->deleted + 1) * 4 > s->nslots * 3)) {
        rebuild(s, old_ref, hash, key, key_len, value, value_len);
        return STORE_OK;
    }
    uint64_t ref = append_record(s, g, hash, key, key_len, value, value_len);
    int was_deleted = !found && !fills_empty_slot;
    PAUSE_POINT("dict.store.appended");
    atomic_store_explicit(&slots[at], ref, memory_order_release);   /* the commit */
    PAUSE_POINT("dict.store.committed");
    if (!found) g->live++;
    if (was_deleted) g->deleted--;
    g->live_bytes = g->live_bytes - old_size + need;
    return STORE_OK;
}

/* Removes key, under the lock. Returns 1 when it was there. */
static int remove_key(dict_shared *s, const char *key, size_t key_len) {
    generation *g = active_gen(s);
    _Atomic uint64_t *slots = slots_of(s, g);
    uint64_t at;
    if (!find_slot(s, g, key, key_len, hash_key(key, key_len), &at)) return 0;
    const record *r = record_at(s, g, atomic_load_explicit(&slots[at], memory_order_relaxed));
    uint64_t size = record_size(r->key_len, r->value_len);
    PAUSE_POINT("dict.delete.found");
    atomic_store_explicit(&slots[at], REF_DELETED, memory_order_release);   /* the commit */
    PAUSE_POINT("dict.delete.committed");
    g->live--;
    g->deleted++;
    g->live_bytes -= size;
    return 1;
}

/* Copies key's encoded value into b (emptied first), under the lock. Returns 1 when found,
   0 when absent, -1 when memory runs out. */
static int copy_value(dict_shared *s, const char *key, size_t key_len, buf *b) {
    generation *g = active_gen(s);
    uint64_t at;
    buf_reset(b);
    if (!find_slot(s, g, key, key_len, hash_key(key, key_len), &at)) return 0;
    const record *r = record_at(s, g, atomic_load_explicit(&slots_of(s, g)[at], memory_order_relaxed));
    return buf_append(b, (const char *)(r + 1) + r->key_len, r->value_len) == 0 ? 1 : -1;
}

/* Lua side. */

static dict *check_dict(lua_State *L, int i) {
    dict *d = luaL_checkudata(L, i, DICT_TYPE);
    if (d->shared == NULL) type_closed_error(L, DICT_TYPE);
    if (d->busy) luaL_error(L, "cannot use a dict inside the function of its own update");
    return d;
}

/* The key at index i: a string, never a number converted to one (d:set(1, x) and
   d:get("1") would otherwise meet). */
static const char *check_key(lua_State *L, int i, size_t *len) {
    if (lua_type(L, i) != LUA_TSTRING) luaL_typeerror(L, i, "string");
    return lua_tolstring(L, i, len);
}

/* Takes the lock; repairs the counters when the previous holder died. Raises on failure
   (nothing is held then). */
static void dict_lock(lua_State *L, dict *d) {
    int recovered;
    int rc = shm_lock_acquire(&d->shared->lock, -1, &recovered);
    if (rc != 0) luaL_error(L, "cannot lock dict: %s", strerror(rc));
    if (recovered) repair(d->shared);
    PAUSE_POINT("dict.locked");
}

static void dict_unlock(dict *d) {
    shm_lock_release(&d->shared->lock);
}

/* Drops a scratch buffer grown by one big value or snapshot. */
static void trim(buf *b) {
    if (b->cap > ((size_t)1 << 20)) buf_free(b);
}

/* Raises the error of a failed store (the lock is released by then). */
static int store_error(lua_State *L, dict *d, enum store_result rc, size_t value_len) {
    if (rc == STORE_FULL)
        return luaL_error(L, "dict is full (capacity %I entries)", (lua_Integer)d->shared->capacity);
    return luaL_error(L, "dict heap is full: %I bytes (value of %I bytes)", (lua_Integer)d->shared->heap_bytes,
                      (lua_Integer)value_len);
}

static void encode_value(lua_State *L, dict *d, int i) {
    char err[256];
    buf_reset(&d->encoded);
    if (wire_encode(L, i, &d->encoded, WIRE_CODE, "value", err, sizeof err) != 0) luaL_error(L, "%s", err);
}

/* Pushes the value encoded in b. */
static void decode_value(lua_State *L, const buf *b) {
    char err[256];
    if (wire_decode(L, b->data, b->len, WIRE_CODE, err, sizeof err) != 0)
        luaL_error(L, "dict value does not decode: %s", err);
}

/* forage.dict([{ capacity = 1024, bytes = 1 MiB }]) -> a Dict. capacity counts entries,
   bytes the heap that holds keys and encoded values. Unknown options raise. */
static int dict_new(lua_State *L) {
    static const char *const names[] = {"bytes", "capacity", NULL};
    lua_Integer capacity = DICT_DEFAULT_CAPACITY, bytes = DICT_DEFAULT_BYTES;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        args_check_options(L, 1, "forage.dict", names);
        capacity = args_opt_integer(L, 1, "forage.dict", "capacity", DICT_DEFAULT_CAPACITY, 1, DICT_MAX_CAPACITY);
        bytes = args_opt_integer(L, 1, "forage.dict", "bytes", DICT_DEFAULT_BYTES, 64, DICT_MAX_BYTES);
    }
    uint64_t nslots = 8;
    while (nslots < 2 * (uint64_t)capacity) nslots *= 2;
    /* Each generation starts on a page, so that a flip can give the old one's pages back. */
    long page_size = sysconf(_SC_PAGESIZE);
    size_t page = page_size > 0 ? (size_t)page_size : 4096;
    size_t header = (sizeof(dict_shared) + page - 1) / page * page;
    size_t gen_size = ((size_t)nslots * sizeof(uint64_t) + (size_t)bytes + page - 1) / page * page;

    dict *d = lua_newuserdatauv(L, sizeof *d, 0);   /* closed until mapped */
    memset(d, 0, sizeof *d);
    luaL_setmetatable(L, DICT_TYPE);
    size_t size = header + 2 * gen_size;
    dict_shared *s = shm_map_locked(size, offsetof(dict_shared, lock));
    if (s == NULL) return luaL_error(L, "forage.dict: cannot map %I bytes: %s", (lua_Integer)size, strerror(errno));
    s->capacity = (uint64_t)capacity;
    s->nslots = nslots;
    s->heap_bytes = (uint64_t)bytes;
    for (int i = 0; i < 2; i++) {
        s->gen[i].slots_at = header + (size_t)i * gen_size;
        s->gen[i].heap_at = s->gen[i].slots_at + (size_t)nslots * sizeof(uint64_t);
    }
    d->shared = s;
    d->size = size;
    shm_share(L, -1);
    return 1;
}

/* d:get(key) -> the value, or nil. */
static int dict_get(lua_State *L) {
    dict *d = check_dict(L, 1);
    size_t len;
    const char *key = check_key(L, 2, &len);
    dict_lock(L, d);
    int found = copy_value(d->shared, key, len, &d->scratch);
    dict_unlock(d);
    if (found < 0) return luaL_error(L, "not enough memory");
    if (found == 0) lua_pushnil(L);
    else decode_value(L, &d->scratch);
    trim(&d->scratch);
    return 1;
}

/* d:set(key, value): stores a copy of value; nil deletes. Raises when the dict or its heap
   is full (nothing changed then). */
static int dict_set(lua_State *L) {
    dict *d = check_dict(L, 1);
    size_t len;
    const char *key = check_key(L, 2, &len);
    if (lua_isnoneornil(L, 3)) {
        dict_lock(L, d);
        remove_key(d->shared, key, len);
        dict_unlock(d);
        return 0;
    }
    encode_value(L, d, 3);
    dict_lock(L, d);
    enum store_result rc = store(d->shared, key, len, d->encoded.data, d->encoded.len);
    dict_unlock(d);
    size_t value_len = d->encoded.len;
    trim(&d->encoded);
    if (rc != STORE_OK) return store_error(L, d, rc, value_len);
    return 0;
}

/* d:delete(key) -> true when key was there, false otherwise. */
static int dict_delete(lua_State *L) {
    dict *d = check_dict(L, 1);
    size_t len;
    const char *key = check_key(L, 2, &len);
    dict_lock(L, d);
    int removed = remove_key(d->shared, key, len);
    dict_unlock(d);
    lua_pushboolean(L, removed);
    return 1;
}

/* Run under lua_pcall with the lock held: (dict, fn, found) -> fn(old). Decodes the old
   value from scratch, calls fn, encodes its result into encoded (emptied when nil). */
static int update_call(lua_State *L) {
    dict *d = lua_touserdata(L, 1);
    lua_pushvalue(L, 2);
    if (lua_toboolean(L, 3)) decode_value(L, &d->scratch);
    else lua_pushnil(L);
    lua_call(L, 1, 1);
    buf_reset(&d->encoded);
    if (!lua_isnil(L, -1)) encode_value(L, d, lua_gettop(L));
    return 1;
}

/* d:update(key, fn [, timeout]) -> the new value: stores fn(old) (nil deletes) atomically;
   nil, "timeout", "timeout" when the lock was not had within timeout seconds. fn runs in
   this process with the dict's lock held, so it must not use this dict. When fn raises,
   or its result cannot be stored, nothing changes and the error is raised. */
static int dict_update(lua_State *L) {
    dict *d = check_dict(L, 1);
    size_t len;
    const char *key = check_key(L, 2, &len);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    double deadline = shm_deadline(args_timeout(L, 4));
    lua_settop(L, 3);
    lua_pushcfunction(L, update_call);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    int recovered;
    int lrc = shm_lock_acquire(&d->shared->lock, deadline, &recovered);
    if (lrc == ETIMEDOUT) return args_fail(L, "timeout", "timeout");
    if (lrc != 0) return luaL_error(L, "cannot lock dict: %s", strerror(lrc));
    if (recovered) repair(d->shared);
    PAUSE_POINT("dict.locked");
    int found = copy_value(d->shared, key, len, &d->scratch);
    if (found < 0) {
        dict_unlock(d);
        return luaL_error(L, "not enough memory");
    }
    lua_pushboolean(L, found);
    d->busy = 1;
    int status = lua_pcall(L, 3, 1, 0);
    d->busy = 0;
    if (status != LUA_OK) {
        dict_unlock(d);
        trim(&d->scratch);
        trim(&d->encoded);
        return lua_error(L);
    }
    enum store_result rc = STORE_OK;
    if (d->encoded.len == 0) remove_key(d->shared, key, len);
    else rc = store(d->shared, key, len, d->encoded.data, d->encoded.len);
    dict_unlock(d);
    size_t value_len = d->encoded.len;
    trim(&d->scratch);
    trim(&d->encoded);
    if (rc != STORE_OK) return store_error(L, d, rc, value_len);
    return 1;
}

/* Pushes a new table holding a copy of every entry. */
static void push_snapshot(lua_State *L, dict *d) {
    dict_lock(L, d);
    dict_shared *s = d->shared;
    generation *g = active_gen(s);
    _Atomic uint64_t *slots = slots_of(s, g);
    uint64_t count = g->live;
    int failed = 0;
    buf_reset(&d->scratch);
    for (uint64_t i = 0; i < s->nslots && !failed; i++) {
        uint64_t ref = atomic_load_explicit(&slots[i], memory_order_relaxed);
        if (ref < REF_BASE) continue;
        const record *r = record_at(s, g, ref);
        failed = buf_append(&d->scratch, r, sizeof *r + r->key_len + r->value_len) != 0;
    }
    dict_unlock(d);
    if (failed) luaL_error(L, "not enough memory");
    lua_createtable(L, 0, count > INT32_MAX ? 0 : (int)count);
    char err[256];
    for (size_t at = 0; at < d->scratch.len;) {
        record r;
        memcpy(&r, d->scratch.data + at, sizeof r);   /* the copy is not aligned */
        const char *bytes = d->scratch.data + at + sizeof r;
        lua_pushlstring(L, bytes, r.key_len);
        if (wire_decode(L, bytes + r.key_len, r.value_len, WIRE_CODE, err, sizeof err) != 0)
            luaL_error(L, "dict value of key %s does not decode: %s", args_show(L, -1), err);
        lua_rawset(L, -3);
        at += sizeof r + r.key_len + r.value_len;
    }
    trim(&d->scratch);
}

/* d:copy() -> a table copy of the entries, taken at one instant (Python's dict.copy()). */
static int dict_copy(lua_State *L) {
    dict *d = check_dict(L, 1);
    push_snapshot(L, d);
    return 1;
}

static int snapshot_next(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1) != 0) return 2;
    lua_pushnil(L);
    return 1;
}

/* d:pairs() and __pairs -> an iterator over a copy of the entries taken at the call, so
   that `for k, v in d:pairs() do` and `for k, v in pairs(d) do` both work and never hold
   the lock across the loop's body. */
static int dict_pairs(lua_State *L) {
    dict *d = check_dict(L, 1);
    lua_pushcfunction(L, snapshot_next);
    push_snapshot(L, d);
    lua_pushnil(L);
    return 3;
}

/* #d -> the number of entries. */
static int dict_len(lua_State *L) {
    dict *d = check_dict(L, 1);
    dict_lock(L, d);
    lua_Integer n = (lua_Integer)active_gen(d->shared)->live;
    dict_unlock(d);
    lua_pushinteger(L, n);
    return 1;
}

static void release_dict(dict *d) {
    shm_unmap(d->shared, d->size);
    d->shared = NULL;
    buf_free(&d->scratch);
    buf_free(&d->encoded);
}

/* d:close() and __close: unmaps this process's view (other processes keep theirs).
   Idempotent. */
static int dict_close(lua_State *L) {
    dict *d = luaL_checkudata(L, 1, DICT_TYPE);
    if (d->busy) return luaL_error(L, "cannot close a dict inside the function of its own update");
    release_dict(d);
    return 0;
}

/* __gc: as close, but a dict whose lock this process holds (a state closed from inside
   update's function) stays mapped, so that the kernel can still mark the lock's owner dead. */
static int dict_gc(lua_State *L) {
    dict *d = luaL_checkudata(L, 1, DICT_TYPE);
    if (!d->busy) release_dict(d);
    return 0;
}

static int dict_tostring(lua_State *L) {
    dict *d = luaL_checkudata(L, 1, DICT_TYPE);
    if (d->shared == NULL) {
        lua_pushliteral(L, "forage.Dict (closed)");
    } else if (d->busy) {
        lua_pushfstring(L, "forage.Dict (capacity %I, updating)", (lua_Integer)d->shared->capacity);
    } else {
        dict_lock(L, d);
        lua_Integer n = (lua_Integer)active_gen(d->shared)->live;
        dict_unlock(d);
        lua_pushfstring(L, "forage.Dict (%I/%I entries, %I bytes)", n, (lua_Integer)d->shared->capacity,
                        (lua_Integer)d->shared->heap_bytes);
    }
    return 1;
}

void forage_open_dict(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"get", dict_get}, {"set", dict_set}, {"update", dict_update}, {"delete", dict_delete},
        {"pairs", dict_pairs}, {"copy", dict_copy}, {"close", dict_close}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__len", dict_len}, {"__pairs", dict_pairs}, {"__tostring", dict_tostring},
        {"__gc", dict_gc}, {"__close", dict_close}, {NULL, NULL},
    };
    type_register(L, DICT_TYPE, methods, meta, 0);
    lua_pushcfunction(L, dict_new);
    lua_setfield(L, -2, "dict");
}
