/* forage.Frontier: the crawl's queue of requests and its seen set, in the parent's own
   memory (malloc, and private mappings for big tables: one process owns it; workers never
   touch it, and nothing of it is shared). Requests are opaque
   strings to this file: lua/forage/crawl/frontier.lua encodes them and decodes them.

   Queue. Each host has its own queues, one per priority, kept in a small array sorted from
   the highest priority down; a queue is a FIFO of entries (a varint length, then the
   bytes) packed into a chain of chunks that double in size up to CHUNK_MAX, so that an
   entry costs its bytes plus one or two, with no allocation of its own: a million
   150-byte requests cost about 152 MB, not a million mallocs. A chunk is freed as soon as
   pop has read past it.

   Round robin. The hosts that may be served now (something queued, fewer than per_host
   in flight) form a ring; pop takes one entry from the host at the cursor and moves the
   cursor on, so one host with a million queued requests gets one turn in each round like
   a host with one. A host leaves the ring when it has nothing queued or reaches per_host,
   and comes back (just behind the cursor: at the end of the round) on push or done. pop
   therefore costs O(entries returned), whatever the number of hosts waiting on their
   limit. A host with nothing queued and nothing in flight is freed.

   Seen set. A key is stored as its 128-bit SipHash-2-4, keyed with 16 random bytes drawn
   when the frontier is created, in an open-addressing table (linear probing, 16 bytes a
   slot, a power of two of slots) that doubles when three quarters full: an add costs the
   same at ten million keys as at a thousand (amortised), with no fixed capacity. Two keys
   share a hash with probability 2^-128, so ten million keys give a false "seen" with
   probability about 1.5e-25.

   Bytes: every allocation of the store is counted (counts().bytes), malloc's own
   bookkeeping (8 to 16 bytes a block) aside. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "args.h"
#include "core.h"
#include "hash.h"
#include "lauxlib.h"
#include "luatype.h"

#define FRONTIER_TYPE "forage.Frontier"
#define CHUNK_MIN 64                  /* bytes of a host's first chunk, or the first entry's size */
#define CHUNK_MAX (64 * 1024)         /* chunks double up to this (a bigger entry gets its own) */
#define ENTRY_MAX ((size_t)UINT32_MAX - 16)
#define SEEN_FIRST_SLOTS 1024
#define HOSTS_FIRST_SLOTS 64

typedef struct chunk {
    struct chunk *next;
    uint32_t cap;    /* bytes of data */
    uint32_t used;   /* bytes written */
    unsigned char data[];
} chunk;

/* One priority's FIFO of one host. */
typedef struct level {
    lua_Integer priority;
    chunk *head, *tail;
    uint32_t head_off;   /* read position in head */
    size_t count;
} level;

typedef struct host {
    struct host *ring_prev, *ring_next;   /* in the ready ring when on_ring */
    int on_ring;
    level *levels;                        /* sorted, highest priority first */
    uint32_t nlevels, levels_cap;
    size_t queued, inflight;
    uint64_t hash;
    size_t name_len;
    char name[];
} host;

typedef struct seen_slot {
    uint64_t hi, lo;   /* hi == 0: empty (a hash with a zero half has it replaced by 1) */
} seen_slot;

typedef struct frontier {
    int open;
    lua_Integer per_host;   /* 0: no limit */
    host **hosts;           /* open addressing, linear probing, NULL empty */
    size_t hosts_slots, nhosts;
    host *cursor;           /* the ready ring's next host, NULL when the ring is empty */
    size_t queued, inflight;
    seen_slot *seen;
    size_t seen_slots, nseen;
    uint64_t key[2];
    size_t bytes;           /* allocated by the store */
} frontier;

/* ---------------------------------------------------------------------------------
   Allocation, counted */

static void *store_alloc(frontier *f, size_t size) {
    void *p = malloc(size);
    if (p != NULL) f->bytes += size;
    return p;
}

static void *store_calloc(frontier *f, size_t n, size_t size) {
    void *p = calloc(n, size);
    if (p != NULL) f->bytes += n * size;
    return p;
}

static void store_free(frontier *f, void *p, size_t size) {
    if (p == NULL) return;
    free(p);
    f->bytes -= size;
}

/* Tables of TABLE_HUGE bytes or more (the seen set past about 100,000 keys) are mapped
   with transparent huge pages asked for: an add is one random access into the table, and
   with 4 KB pages a 268 MB table (ten million keys) makes nearly every add a TLB miss too.
   Anonymous memory comes zeroed, page by page as it is touched. */
#define TABLE_HUGE ((size_t)2 << 20)

static void *table_alloc(frontier *f, size_t size) {
    if (size < TABLE_HUGE) return store_calloc(f, 1, size);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    (void)madvise(p, size, MADV_HUGEPAGE);   /* a hint: without THP the table still works */
    f->bytes += size;
    return p;
}

static void table_free(frontier *f, void *p, size_t size) {
    if (p == NULL) return;
    if (size < TABLE_HUGE) {
        store_free(f, p, size);
        return;
    }
    munmap(p, size);
    f->bytes -= size;
}

static int out_of_memory(lua_State *L) {
    return luaL_error(L, "forage.Frontier: out of memory");
}

/* ---------------------------------------------------------------------------------
   Varints: an entry's length */

static size_t varint_size(size_t n) {
    size_t k = 1;
    while (n >= 0x80) {
        n >>= 7;
        k++;
    }
    return k;
}

static void varint_put(unsigned char *p, size_t n) {
    while (n >= 0x80) {
        *p++ = (unsigned char)(n | 0x80);
        n >>= 7;
    }
    *p = (unsigned char)n;
}

static size_t varint_get(const unsigned char *p, uint32_t *advance) {
    size_t n = 0;
    unsigned shift = 0;
    uint32_t k = 0;
    for (;;) {
        unsigned char b = p[k++];
        n |= (size_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) break;
        shift += 7;
    }
    *advance = k;
    return n;
}

/* ---------------------------------------------------------------------------------
   FIFOs */

static size_t chunk_bytes(const chunk *c) {
    return sizeof(chunk) + c->cap;
}

static void level_free_chunks(frontier *f, level *lv) {
    chunk *c = lv->head;
    while (c != NULL) {
        chunk *next = c->next;
        store_free(f, c, chunk_bytes(c));
        c = next;
    }
    lv->head = lv->tail = NULL;
}

/* Appends an entry: 1, or 0 out of memory (nothing changed). */
static int level_append(frontier *f, level *lv, const char *blob, size_t len) {
    size_t need = varint_size(len) + len;
    chunk *t = lv->tail;
    if (t == NULL || (size_t)(t->cap - t->used) < need) {
        size_t cap = t == NULL ? CHUNK_MIN : (size_t)t->cap * 2;
        if (cap > CHUNK_MAX) cap = CHUNK_MAX;
        if (cap < need) cap = need;
        chunk *c = store_alloc(f, sizeof(chunk) + cap);
        if (c == NULL) return 0;
        c->next = NULL;
        c->cap = (uint32_t)cap;
        c->used = 0;
        if (t == NULL) {
            lv->head = c;
            lv->head_off = 0;
        } else {
            t->next = c;
        }
        lv->tail = t = c;
    }
    varint_put(t->data + t->used, len);
    memcpy(t->data + t->used + varint_size(len), blob, len);
    t->used += (uint32_t)need;
    lv->count++;
    return 1;
}

/* Pushes the oldest entry of a non-empty level as a string and drops it. */
static void level_pop_push(lua_State *L, frontier *f, level *lv) {
    chunk *c = lv->head;
    uint32_t k;
    size_t len = varint_get(c->data + lv->head_off, &k);
    lua_pushlstring(L, (const char *)c->data + lv->head_off + k, len);
    lv->head_off += k + (uint32_t)len;
    lv->count--;
    if (lv->head_off == c->used && c->next != NULL) {
        lv->head = c->next;
        lv->head_off = 0;
        store_free(f, c, chunk_bytes(c));
    }
}

/* ---------------------------------------------------------------------------------
   Hosts */

static size_t host_bytes(const host *h) {
    return sizeof(host) + h->name_len;
}

static host **host_slot(frontier *f, const char *name, size_t len, uint64_t hash) {
    size_t mask = f->hosts_slots - 1, i = (size_t)hash & mask;
    for (;;) {
        host *h = f->hosts[i];
        if (h == NULL || (h->hash == hash && h->name_len == len && memcmp(h->name, name, len) == 0))
            return &f->hosts[i];
        i = (i + 1) & mask;
    }
}

static host *host_find(frontier *f, const char *name, size_t len) {
    return *host_slot(f, name, len, fnv1a_mixed(name, len));
}

/* Doubles the host table: 1, or 0 out of memory (nothing changed). */
static int hosts_grow(frontier *f) {
    size_t slots = f->hosts_slots * 2;
    host **table = store_calloc(f, slots, sizeof *table);
    if (table == NULL) return 0;
    for (size_t i = 0; i < f->hosts_slots; i++) {
        host *h = f->hosts[i];
        if (h == NULL) continue;
        size_t j = (size_t)h->hash & (slots - 1);
        while (table[j] != NULL) j = (j + 1) & (slots - 1);
        table[j] = h;
    }
    store_free(f, f->hosts, f->hosts_slots * sizeof *f->hosts);
    f->hosts = table;
    f->hosts_slots = slots;
    return 1;
}

/* The host named so, created when new; NULL out of memory. */
static host *host_get(frontier *f, const char *name, size_t len) {
    uint64_t hash = fnv1a_mixed(name, len);
    host **slot = host_slot(f, name, len, hash);
    if (*slot != NULL) return *slot;
    if ((f->nhosts + 1) * 2 > f->hosts_slots) {
        if (!hosts_grow(f)) return NULL;
        slot = host_slot(f, name, len, hash);
    }
    host *h = store_alloc(f, sizeof(host) + len);
    if (h == NULL) return NULL;
    memset(h, 0, sizeof *h);
    h->hash = hash;
    h->name_len = len;
    memcpy(h->name, name, len);
    *slot = h;
    f->nhosts++;
    return h;
}

static void ring_insert(frontier *f, host *h) {
    if (f->cursor == NULL) {
        h->ring_prev = h->ring_next = h;
        f->cursor = h;
    } else {   /* just behind the cursor: served at the end of this round */
        host *c = f->cursor;
        h->ring_next = c;
        h->ring_prev = c->ring_prev;
        c->ring_prev->ring_next = h;
        c->ring_prev = h;
    }
    h->on_ring = 1;
}

static void ring_remove(frontier *f, host *h) {
    if (h->ring_next == h) {
        f->cursor = NULL;
    } else {
        h->ring_prev->ring_next = h->ring_next;
        h->ring_next->ring_prev = h->ring_prev;
        if (f->cursor == h) f->cursor = h->ring_next;
    }
    h->ring_prev = h->ring_next = NULL;
    h->on_ring = 0;
}

/* Removes host h from the table (backward-shift deletion keeps every probe sequence
   unbroken) and frees it. */
static void host_delete(frontier *f, host *h) {
    size_t mask = f->hosts_slots - 1;
    size_t i = (size_t)h->hash & mask;
    while (f->hosts[i] != h) i = (i + 1) & mask;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        host *g = f->hosts[j];
        if (g == NULL) break;
        size_t home = (size_t)g->hash & mask;
        /* g may move to the hole at i when its home is not in (i, j] (cyclically). */
        if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
            f->hosts[i] = g;
            i = j;
        }
    }
    f->hosts[i] = NULL;
    f->nhosts--;
    if (h->on_ring) ring_remove(f, h);
    for (uint32_t k = 0; k < h->nlevels; k++) level_free_chunks(f, &h->levels[k]);
    store_free(f, h->levels, h->levels_cap * sizeof(level));
    store_free(f, h, host_bytes(h));
}

/* Puts h on the ready ring or takes it off, as its counts say; frees it when it has
   nothing queued and nothing in flight. */
static void host_settle(frontier *f, host *h) {
    if (h->queued == 0 && h->inflight == 0) {
        host_delete(f, h);
        return;
    }
    int ready = h->queued > 0 && (f->per_host == 0 || h->inflight < (size_t)f->per_host);
    if (ready && !h->on_ring) ring_insert(f, h);
    else if (!ready && h->on_ring) ring_remove(f, h);
}

/* The level of priority p in h, created when new; NULL out of memory. */
static level *host_level(frontier *f, host *h, lua_Integer p) {
    uint32_t lo = 0, hi = h->nlevels;   /* levels[0..lo) have priority > p */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (h->levels[mid].priority > p) lo = mid + 1;
        else hi = mid;
    }
    if (lo < h->nlevels && h->levels[lo].priority == p) return &h->levels[lo];
    if (h->nlevels == h->levels_cap) {
        uint32_t cap = h->levels_cap == 0 ? 1 : h->levels_cap * 2;
        level *grown = store_alloc(f, cap * sizeof(level));
        if (grown == NULL) return NULL;
        if (h->nlevels > 0) memcpy(grown, h->levels, h->nlevels * sizeof(level));
        store_free(f, h->levels, h->levels_cap * sizeof(level));
        h->levels = grown;
        h->levels_cap = cap;
    }
    memmove(&h->levels[lo + 1], &h->levels[lo], (h->nlevels - lo) * sizeof(level));
    h->nlevels++;
    level *lv = &h->levels[lo];
    memset(lv, 0, sizeof *lv);
    lv->priority = p;
    return lv;
}

/* Pops h's next entry (highest priority, oldest) onto the stack; h has one queued. */
static void host_pop_push(lua_State *L, frontier *f, host *h) {
    level *lv = &h->levels[0];
    level_pop_push(L, f, lv);
    if (lv->count == 0) {
        level_free_chunks(f, lv);
        h->nlevels--;
        memmove(&h->levels[0], &h->levels[1], h->nlevels * sizeof(level));
    }
    h->queued--;
    f->queued--;
}

/* ---------------------------------------------------------------------------------
   The seen set */

static void seen_hash(const frontier *f, const char *key, size_t len, seen_slot *out) {
    uint64_t h[2];
    siphash128(f->key, key, len, h);
    out->hi = h[0] != 0 ? h[0] : 1;
    out->lo = h[1];
}

/* The slot holding hash s, or the empty slot where it would go. */
static seen_slot *seen_find(const frontier *f, const seen_slot *s) {
    size_t mask = f->seen_slots - 1, i = (size_t)s->lo & mask;
    for (;;) {
        seen_slot *slot = &f->seen[i];
        if (slot->hi == 0 || (slot->hi == s->hi && slot->lo == s->lo)) return slot;
        i = (i + 1) & mask;
    }
}

/* Doubles the table: 1, or 0 out of memory (nothing changed). */
static int seen_grow(frontier *f) {
    size_t slots = f->seen_slots * 2;
    seen_slot *table = table_alloc(f, slots * sizeof *table);
    if (table == NULL) return 0;
    for (size_t i = 0; i < f->seen_slots; i++) {
        seen_slot s = f->seen[i];
        if (s.hi == 0) continue;
        size_t j = (size_t)s.lo & (slots - 1);
        while (table[j].hi != 0) j = (j + 1) & (slots - 1);
        table[j] = s;
    }
    table_free(f, f->seen, f->seen_slots * sizeof *f->seen);
    f->seen = table;
    f->seen_slots = slots;
    return 1;
}

/* ---------------------------------------------------------------------------------
   Lua */

static frontier *check_frontier(lua_State *L, int i) {
    frontier *f = type_check_fast(L, i, FRONTIER_TYPE);
    if (!f->open) type_closed_error(L, FRONTIER_TYPE);
    return f;
}

static const char *check_host(lua_State *L, int arg, size_t *len) {
    const char *name = luaL_checklstring(L, arg, len);
    luaL_argcheck(L, *len > 0, arg, "host must not be empty");
    return name;
}

static void frontier_free(frontier *f) {
    if (f->hosts != NULL) {
        for (size_t i = 0; i < f->hosts_slots; i++) {
            host *h = f->hosts[i];
            if (h == NULL) continue;
            for (uint32_t k = 0; k < h->nlevels; k++) level_free_chunks(f, &h->levels[k]);
            store_free(f, h->levels, h->levels_cap * sizeof(level));
            store_free(f, h, host_bytes(h));
        }
        store_free(f, f->hosts, f->hosts_slots * sizeof *f->hosts);
    }
    table_free(f, f->seen, f->seen_slots * sizeof *f->seen);
    f->hosts = NULL;
    f->seen = NULL;
    f->cursor = NULL;
    f->hosts_slots = f->nhosts = f->seen_slots = f->nseen = f->queued = f->inflight = 0;
    f->open = 0;
}

/* core.frontier{ per_host = 0 } -> an empty Frontier; per_host: the most entries of one
   host in flight at once (0: no limit). */
static int frontier_new(lua_State *L) {
    static const char *const names[] = {"per_host", NULL};
    lua_Integer per_host = 0;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        args_check_options(L, 1, "forage.frontier", names);
        per_host = args_opt_integer(L, 1, "forage.frontier", "per_host", 0, 0, INT32_MAX);
    }
    /* Created closed, then opened: an allocation that fails leaves a closed object that
       __gc frees consistently. */
    frontier *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    luaL_setmetatable(L, FRONTIER_TYPE);
    if (getrandom(f->key, sizeof f->key, 0) != (ssize_t)sizeof f->key)
        return luaL_error(L, "forage.frontier: cannot draw a random key: %s", strerror(errno));
    f->per_host = per_host;
    f->hosts = store_calloc(f, HOSTS_FIRST_SLOTS, sizeof *f->hosts);
    f->seen = table_alloc(f, SEEN_FIRST_SLOTS * sizeof *f->seen);
    if (f->hosts == NULL || f->seen == NULL) {
        frontier_free(f);
        return out_of_memory(L);
    }
    f->hosts_slots = HOSTS_FIRST_SLOTS;
    f->seen_slots = SEEN_FIRST_SLOTS;
    f->open = 1;
    return 1;
}

/* f:push(host, priority, blob): queues blob for host at an integer priority (higher
   first; FIFO within one). */
static int frontier_push(lua_State *L) {
    frontier *f = check_frontier(L, 1);
    size_t name_len, len;
    const char *name = check_host(L, 2, &name_len);
    if (lua_type(L, 3) != LUA_TNUMBER) return luaL_typeerror(L, 3, "integer");
    lua_Integer priority = luaL_checkinteger(L, 3);
    const char *blob = luaL_checklstring(L, 4, &len);
    luaL_argcheck(L, len <= ENTRY_MAX, 4, "request too large");
    host *h = host_get(f, name, name_len);
    if (h == NULL) return out_of_memory(L);
    level *lv = host_level(f, h, priority);
    if (lv == NULL || !level_append(f, lv, blob, len)) {
        if (lv != NULL && lv->count == 0) {   /* a level just made: take it out again */
            level_free_chunks(f, lv);
            uint32_t k = (uint32_t)(lv - h->levels);
            h->nlevels--;
            memmove(&h->levels[k], &h->levels[k + 1], (h->nlevels - k) * sizeof(level));
        }
        host_settle(f, h);
        return out_of_memory(L);
    }
    h->queued++;
    f->queued++;
    host_settle(f, h);
    return 0;
}

/* f:pop([n = 1]) -> a list of up to n entries, one host after another (round robin),
   skipping hosts with per_host in flight; each counts as in flight until f:done(host).
   The list is empty when nothing may be served now. */
static int frontier_pop(lua_State *L) {
    frontier *f = check_frontier(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, n >= 1, 2, "count must be at least 1");
    lua_Integer want = n < (lua_Integer)f->queued ? n : (lua_Integer)f->queued;
    lua_createtable(L, (int)(want < 1024 ? want : 1024), 0);
    lua_Integer got = 0;
    while (got < n && f->cursor != NULL) {
        host *h = f->cursor;
        host_pop_push(L, f, h);
        lua_rawseti(L, -2, ++got);
        h->inflight++;
        f->inflight++;
        f->cursor = h->ring_next;
        host_settle(f, h);   /* never frees h: it has one in flight */
    }
    return 1;
}

/* f:done(host): one entry of host popped earlier has ended; raises when host has none in
   flight. */
static int frontier_done(lua_State *L) {
    frontier *f = check_frontier(L, 1);
    size_t len;
    const char *name = check_host(L, 2, &len);
    host *h = host_find(f, name, len);
    if (h == NULL || h->inflight == 0) {
        args_show(L, 2);
        return luaL_argerror(L, 2, lua_pushfstring(L, "host %s has nothing in flight", lua_tostring(L, -1)));
    }
    h->inflight--;
    f->inflight--;
    host_settle(f, h);
    return 0;
}

/* f:seen_add(key) -> true when key is new (and now seen), false when it was seen. */
static int frontier_seen_add(lua_State *L) {
    frontier *f = check_frontier(L, 1);
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);
    seen_slot s;
    seen_hash(f, key, len, &s);
    seen_slot *slot = seen_find(f, &s);
    if (slot->hi != 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if ((f->nseen + 1) * 4 > f->seen_slots * 3) {
        if (!seen_grow(f)) return out_of_memory(L);
        slot = seen_find(f, &s);
    }
    *slot = s;
    f->nseen++;
    lua_pushboolean(L, 1);
    return 1;
}

/* f:seen_has(key) -> true when key was added. */
static int frontier_seen_has(lua_State *L) {
    frontier *f = check_frontier(L, 1);
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);
    seen_slot s;
    seen_hash(f, key, len, &s);
    lua_pushboolean(L, seen_find(f, &s)->hi != 0);
    return 1;
}

static void set_count_field(lua_State *L, const char *name, size_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, name);
}

/* f:counts() -> { queued, inflight, hosts (with something queued or in flight), seen,
   bytes (allocated by the store) }. */
static int frontier_counts(lua_State *L) {
    frontier *f = check_frontier(L, 1);
    lua_createtable(L, 0, 5);
    set_count_field(L, "queued", f->queued);
    set_count_field(L, "inflight", f->inflight);
    set_count_field(L, "hosts", f->nhosts);
    set_count_field(L, "seen", f->nseen);
    set_count_field(L, "bytes", f->bytes);
    return 1;
}

/* #f -> the number of entries queued. */
static int frontier_len(lua_State *L) {
    frontier *f = check_frontier(L, 1);
    lua_pushinteger(L, (lua_Integer)f->queued);
    return 1;
}

/* f:close(), __gc and __close: frees everything; idempotent. */
static int frontier_close(lua_State *L) {
    frontier *f = type_check_fast(L, 1, FRONTIER_TYPE);
    frontier_free(f);
    return 0;
}

static int frontier_tostring(lua_State *L) {
    frontier *f = type_check_fast(L, 1, FRONTIER_TYPE);
    if (!f->open) lua_pushliteral(L, "forage.Frontier (closed)");
    else
        lua_pushfstring(L, "forage.Frontier (%I queued, %I in flight, %I hosts, %I seen)", (LUAI_UACINT)f->queued,
                        (LUAI_UACINT)f->inflight, (LUAI_UACINT)f->nhosts, (LUAI_UACINT)f->nseen);
    return 1;
}

void forage_open_frontier(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"push", frontier_push},         {"pop", frontier_pop},           {"done", frontier_done},
        {"seen_add", frontier_seen_add}, {"seen_has", frontier_seen_has}, {"counts", frontier_counts},
        {"close", frontier_close},       {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__len", frontier_len},
        {"__gc", frontier_close},
        {"__close", frontier_close},
        {"__tostring", frontier_tostring},
        {NULL, NULL},
    };
    type_register(L, FRONTIER_TYPE, methods, meta, 1);
    lua_pushcfunction(L, frontier_new);
    lua_setfield(L, -2, "frontier");
}
