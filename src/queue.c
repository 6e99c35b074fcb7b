/* forage.Queue: a multi-producer, multi-consumer queue of wire-encoded values in a byte ring
   in shared memory, mapped before the fork and inherited by the processes forked later.

   Surviving a killed process. The whole state of the ring is two 64-bit words, each written
   by one aligned store under the robust lock: head_puts (where the next record goes, and how
   many puts ever committed) and tail_gets (where the oldest record starts, and how many gets
   ever committed); a third word counts task_done calls. A put copies its record into the
   free bytes at head and only then publishes it by storing head_puts; a get copies the
   record at tail into a process-local buffer and only then stores tail_gets. Waiters are
   woken before that store: a process killed between the two has woken someone for nothing,
   never left someone asleep after a committed change. A process killed at any instruction
   (inside the lock, in the middle of a memcpy) has therefore committed all of its operation
   or none of it: an uncommitted put left bytes in free space, which the next put
   overwrites; an uncommitted get left its record in the ring for the next consumer. On
   EOWNERDEAD recovery there is nothing to repair; the state is checked anyway (state_valid)
   so that a bug would show as an error rather than as garbage. A value is lost only with a
   consumer killed after its get committed, as with any queue.

   Speed. A put or a get touches one cache line of shared state (the lock and the three
   words), a line that nobody writes (size, closed) and the ring. Waiter counts sit in the
   same line so that put and get make the futex wake only when someone may sleep: they may
   overcount (a waiter killed or timed out) but never undercount, since a waiter counts
   itself under the lock before it sleeps and a waker wakes everyone and zeroes the count;
   a stale count costs one wasted wake, once. Before sleeping, a waiter spins briefly on
   the state words (and shm_lock_acquire on trylock): the peer is usually about to finish. */
#include <errno.h>
#include <limits.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "frame.h"
#include "lauxlib.h"
#include "luatype.h"
#include "pause.h"
#include "shm.h"
#include "wire.h"

#define QUEUE_TYPE "forage.Queue"
#define QUEUE_DEFAULT_BYTES ((size_t)1 << 20)
#define QUEUE_MIN_BYTES ((size_t)64)
#define QUEUE_MAX_BYTES ((size_t)1 << 31)   /* offsets and lengths are 32-bit */
#define QUEUE_RECORD_HEADER 4                /* each record: a 4-byte little-endian length, then the message */
#define QUEUE_SMALL 64                       /* full() when fewer bytes than this are free */
#define QUEUE_KEEP_BUFFER ((size_t)1 << 20)  /* larger local buffers are released after use */
#define QUEUE_SPIN 20e-6                     /* seconds a blocked call spins before sleeping */

typedef struct queue_shared {
    /* Line 0: what every put and get reads and writes. */
    shm_lock lock;
    _Atomic uint64_t head_puts;     /* ring offset of the next record | committed puts << 32 */
    _Atomic uint64_t tail_gets;     /* ring offset of the oldest record | committed gets << 32 */
    _Atomic uint32_t dones;         /* committed task_done calls */
    uint16_t getters_waiting;       /* the waiter counts: hints, see above (saturating) */
    uint16_t putters_waiting;

    /* Line 1: read by every operation, written almost never. */
    alignas(64) uint64_t size;      /* ring bytes */
    uint32_t closed;                /* close() was called: puts refused, gets drain */
    uint16_t joiners_waiting;
    uint64_t recoveries;            /* times the lock was recovered from a dead holder */

    /* Line 2: futex words, touched only by sleepers and their wakers. */
    alignas(64) shm_cond not_empty; /* getters sleep on it */
    shm_cond not_full;              /* putters sleep on it */
    shm_cond all_done;              /* joiners sleep on it */
} queue_shared;

#if defined(__x86_64__) && defined(__GLIBC__)
_Static_assert(offsetof(queue_shared, putters_waiting) + sizeof(uint16_t) <= 64,
               "the state of a put or a get fits the lock's cache line");
#endif

/* The ring starts on its own cache line after the header. */
#define RING_OFFSET ((sizeof(queue_shared) + 63) & ~(size_t)63)
#define RING(sh) ((char *)(sh) + RING_OFFSET)

typedef struct queue {
    queue_shared *sh;   /* NULL once unmapped (__gc, __close) */
    size_t map_size;
    size_t size;        /* ring bytes: sh->size, kept in local memory */
    uint32_t put_hint;  /* where this process's last put ended: its next record probably goes there */
    uint32_t get_hint;  /* where its last get ended: the next record to get is probably there */
    buf out;            /* the record being put: header, then the encoded message */
    buf in;             /* the message being got, copied out of the ring */
} queue;

/* The committed state, unpacked. */
typedef struct ring_state {
    uint32_t head, tail;   /* ring offsets */
    uint32_t puts, gets;   /* committed counts, modulo 2^32 */
    uint32_t count;        /* records in the ring */
    uint32_t used;         /* their bytes */
} ring_state;

/* Returns the open queue at index i; raises on another type or an unmapped queue. */
static queue *check_queue(lua_State *L, int i) {
    queue *q = type_check_fast(L, i, QUEUE_TYPE);
    if (q->sh == NULL) type_closed_error(L, QUEUE_TYPE);
    return q;
}

/* Returns 3 after pushing nil, why and why again: the message is the kind. */
static int push_fail(lua_State *L, const char *why) {
    return args_fail(L, why, "%s", why);
}

/* ---------------------------------------------------------------- the shared state */

static uint64_t pack(uint32_t offset, uint32_t n) {
    return (uint64_t)n << 32 | offset;
}

/* Returns the committed state (the lock held, or a hint without it). */
static ring_state state_read(const queue_shared *sh, size_t size) {
    ring_state s;
    uint64_t hp = atomic_load_explicit(&sh->head_puts, memory_order_acquire);
    uint64_t tg = atomic_load_explicit(&sh->tail_gets, memory_order_acquire);
    s.head = (uint32_t)hp;
    s.puts = (uint32_t)(hp >> 32);
    s.tail = (uint32_t)tg;
    s.gets = (uint32_t)(tg >> 32);
    s.count = s.puts - s.gets;
    if (s.count == 0) s.used = 0;
    else if (s.head > s.tail) s.used = s.head - s.tail;
    else s.used = (uint32_t)(size - s.tail + s.head);   /* head == tail: the ring is full */
    return s;
}

/* Returns offset + n within a ring of size bytes. */
static uint32_t ring_advance(size_t size, uint32_t offset, size_t n) {
    size_t at = (size_t)offset + n;
    return (uint32_t)(at >= size ? at - size : at);
}

static void ring_write_bytes(queue_shared *sh, size_t size, uint32_t at, const char *p, size_t n) {
    size_t first = size - at < n ? size - at : n;
    memcpy(RING(sh) + at, p, first);
    if (n > first) memcpy(RING(sh), p + first, n - first);
}

static void ring_read(const queue_shared *sh, size_t size, uint32_t at, char *p, size_t n) {
    size_t first = size - at < n ? size - at : n;
    memcpy(p, RING(sh) + at, first);
    if (n > first) memcpy(p + first, RING(sh), n - first);
}

/* A put's copy into the ring. With a pause point armed it copies in two halves with the
   point "queue.put.copy" between them, so that a spec can kill a put mid-copy. */
static void ring_write(queue_shared *sh, size_t size, uint32_t at, const char *p, size_t n) {
    size_t half = pause_armed_name != NULL ? n / 2 : n;
    ring_write_bytes(sh, size, at, p, half);
    PAUSE_POINT("queue.put.copy");
    if (half < n) ring_write_bytes(sh, size, ring_advance(size, at, half), p + half, n - half);
}

/* A get's copy out of the ring, with "queue.get.copy" halfway as in ring_write. */
static void ring_read_record(const queue_shared *sh, size_t size, uint32_t at, char *p, size_t n) {
    size_t half = pause_armed_name != NULL ? n / 2 : n;
    ring_read(sh, size, at, p, half);
    PAUSE_POINT("queue.get.copy");
    if (half < n) ring_read(sh, size, ring_advance(size, at, half), p + half, n - half);
}

/* Returns the length of the record at offset at, or 0 when its header does not describe a
   record within the `used` bytes from there. */
static uint32_t record_length(const queue_shared *sh, size_t size, uint32_t at, uint32_t used) {
    char header[QUEUE_RECORD_HEADER];
    if (used < QUEUE_RECORD_HEADER + 1) return 0;
    ring_read(sh, size, at, header, sizeof header);
    uint32_t len = get_u32(header);
    return (uint64_t)len + QUEUE_RECORD_HEADER > used ? 0 : len;
}

/* Returns 1 when the committed state is coherent: offsets in the ring, and count records
   chained from tail to head over exactly the used bytes. Run after a holder died (never
   needed by design). */
static int state_valid(const queue_shared *sh, size_t size) {
    ring_state s = state_read(sh, size);
    if (s.head >= size || s.tail >= size || s.count > size / (QUEUE_RECORD_HEADER + 1)) return 0;
    if (s.count == 0) return s.head == s.tail;
    uint32_t at = s.tail, left = s.used;
    for (uint32_t i = 0; i < s.count; i++) {
        uint32_t len = record_length(sh, size, at, left);
        if (len == 0) return 0;
        at = ring_advance(size, at, QUEUE_RECORD_HEADER + (size_t)len);
        left -= QUEUE_RECORD_HEADER + len;
    }
    return left == 0 && at == s.head;
}

/* Wakes every sleeper on c when the count says there may be one, then zeroes the count. */
static void wake_all(shm_cond *c, uint16_t *waiting) {
    if (*waiting == 0) return;
    shm_cond_notify(c, INT32_MAX);
    *waiting = 0;
}

/* After a recovered lock: counts the recovery; raises (the lock released) if the state is
   not coherent. */
static void after_recovery(lua_State *L, queue *q) {
    q->sh->recoveries++;
    if (!state_valid(q->sh, q->size)) {
        shm_lock_release(&q->sh->lock);
        luaL_error(L, "queue: shared state is inconsistent after a process died holding its lock");
    }
}

/* Returns 0 with the lock held, or ETIMEDOUT; raises on any other failure. The lock is held
   for a memcpy, and a contended robust mutex costs a futex wait and a futex wake: a few
   spaced trylocks usually get it first. */
static int queue_lock(lua_State *L, queue *q, double deadline) {
    int recovered = 0;
    int rc = shm_lock_acquire(&q->sh->lock, deadline, &recovered);
    if (rc == ETIMEDOUT) return rc;
    if (rc != 0) return luaL_error(L, "queue: cannot lock: %s", strerror(rc));
    if (recovered) after_recovery(L, q);
    return 0;
}

/* Waits for a change, the lock held and the caller's predicate false. The first call of a
   blocking operation (*spun == 0) spins on the state words without the lock; later ones
   sleep on c, counted in *waiting. Returns 0 with the lock held (re-check the predicate),
   or ETIMEDOUT with the lock released. */
static int queue_wait(lua_State *L, queue *q, shm_cond *c, uint16_t *waiting, double deadline, int *spun) {
    queue_shared *sh = q->sh;
    double now = now_seconds();
    if (deadline >= 0 && now >= deadline) {
        shm_lock_release(&sh->lock);
        return ETIMEDOUT;
    }
    if (!*spun) {
        *spun = 1;
        uint64_t head = atomic_load_explicit(&sh->head_puts, memory_order_relaxed);
        uint64_t tail = atomic_load_explicit(&sh->tail_gets, memory_order_relaxed);
        shm_lock_release(&sh->lock);
        double until = now + QUEUE_SPIN;
        if (deadline >= 0 && deadline < until) until = deadline;
        for (unsigned i = 1; atomic_load_explicit(&sh->head_puts, memory_order_relaxed) == head &&
                             atomic_load_explicit(&sh->tail_gets, memory_order_relaxed) == tail; i++) {
            for (int k = 0; k < 4; k++) cpu_relax();
            if ((i & 31) == 0 && now_seconds() >= until) break;
        }
        return queue_lock(L, q, deadline);
    }
    if (*waiting < UINT16_MAX) (*waiting)++;
    uint32_t seq = atomic_load(&c->seq);
    int recovered;
    int rc = shm_cond_wait(c, &sh->lock, deadline, &recovered);
    if (recovered) after_recovery(L, q);
    /* Timed out with no wake since we counted ourselves: nobody zeroed our count. */
    if (rc == ETIMEDOUT && atomic_load(&c->seq) == seq && *waiting > 0) (*waiting)--;
    return 0;
}

/* ---------------------------------------------------------------- put and get */

/* Encodes the value at index 2 into q->out as a record; raises when it cannot travel or
   cannot fit the ring. Plain data is encoded in data mode, which skips the module-name
   lookups that code mode makes for every table (a sixth of a small put); what data mode
   refuses (a function, a shared object, a module's C function) is encoded again in code
   mode, whose error is the one raised. Both decode the same in code mode. The difference:
   a loaded module made of data only (no function) arrives as a copy, not by name. */
static void encode_record(lua_State *L, queue *q) {
    char err[512];
    buf_reset(&q->out);
    if (buf_reserve(&q->out, QUEUE_RECORD_HEADER) != 0) luaL_error(L, "not enough memory");
    q->out.len = QUEUE_RECORD_HEADER;
    if (wire_encode(L, 2, &q->out, WIRE_DATA, "value", NULL, 0) != 0 &&
        wire_encode(L, 2, &q->out, WIRE_CODE, "value", err, sizeof err) != 0)
        luaL_error(L, "%s", err);
    size_t len = q->out.len - QUEUE_RECORD_HEADER;
    if (q->out.len > q->size) {
        if (q->out.cap > QUEUE_KEEP_BUFFER) buf_free(&q->out);
        luaL_error(L, "queue: message of %I bytes does not fit a queue of %I bytes", (lua_Integer)len,
                   (lua_Integer)q->size);
    }
    put_u32(q->out.data, (uint32_t)len);
}

/* put and put_nowait: returns true, or nil, why, why with why "timeout", "full" or "closed". */
static int queue_put_value(lua_State *L, int nowait) {
    queue *q = check_queue(L, 1);
    luaL_checkany(L, 2);
    double deadline = nowait ? -1 : shm_deadline(args_timeout(L, 3));
    encode_record(L, q);
    queue_shared *sh = q->sh;
    size_t need = q->out.len;
    const char *why = NULL;
    int spun = 0;
    /* The line the record probably goes to was last read by a consumer: start taking it
       now, not inside the lock. */
    __builtin_prefetch(RING(sh) + q->put_hint, 1);
    if (queue_lock(L, q, deadline) != 0) return push_fail(L, "timeout");
    PAUSE_POINT("queue.put.locked");
    for (;;) {
        if (sh->closed) {
            why = "closed";
            shm_lock_release(&sh->lock);
            break;
        }
        ring_state s = state_read(sh, q->size);
        if (q->size - s.used >= need) {
            ring_write(sh, q->size, s.head, q->out.data, need);
            wake_all(&sh->not_empty, &sh->getters_waiting);
            q->put_hint = ring_advance(q->size, s.head, need);
            PAUSE_POINT("queue.put.commit");
            atomic_store_explicit(&sh->head_puts, pack(q->put_hint, s.puts + 1), memory_order_release);
            shm_lock_release(&sh->lock);
            break;
        }
        if (nowait) {
            why = "full";
            shm_lock_release(&sh->lock);
            break;
        }
        if (queue_wait(L, q, &sh->not_full, &sh->putters_waiting, deadline, &spun) != 0) {
            why = "timeout";
            break;
        }
    }
    if (q->out.cap > QUEUE_KEEP_BUFFER) buf_free(&q->out);
    if (why != NULL) return push_fail(L, why);
    lua_pushboolean(L, 1);
    return 1;
}

/* get and get_nowait: returns the oldest value, or nil, why, why with why "timeout", "empty"
   or "closed" (closed and drained). */
static int queue_get_value(lua_State *L, int nowait) {
    queue *q = check_queue(L, 1);
    double deadline = nowait ? -1 : shm_deadline(args_timeout(L, 2));
    queue_shared *sh = q->sh;
    int spun = 0;
    __builtin_prefetch(RING(sh) + q->get_hint, 0);   /* as in put: the producer wrote it */
    if (queue_lock(L, q, deadline) != 0) return push_fail(L, "timeout");
    PAUSE_POINT("queue.get.locked");
    for (;;) {
        ring_state s = state_read(sh, q->size);
        if (s.count > 0) {
            uint32_t len = record_length(sh, q->size, s.tail, s.used);
            if (len == 0) {
                shm_lock_release(&sh->lock);
                return luaL_error(L, "queue: corrupt record at byte %I", (lua_Integer)s.tail);
            }
            buf_reset(&q->in);
            if (buf_reserve(&q->in, len) != 0) {
                shm_lock_release(&sh->lock);
                return luaL_error(L, "not enough memory");
            }
            ring_read_record(sh, q->size, ring_advance(q->size, s.tail, QUEUE_RECORD_HEADER), q->in.data, len);
            q->in.len = len;
            wake_all(&sh->not_full, &sh->putters_waiting);
            q->get_hint = ring_advance(q->size, s.tail, QUEUE_RECORD_HEADER + (size_t)len);
            PAUSE_POINT("queue.get.commit");
            atomic_store_explicit(&sh->tail_gets, pack(q->get_hint, s.gets + 1), memory_order_release);
            shm_lock_release(&sh->lock);
            break;
        }
        if (sh->closed || nowait) {
            const char *why = sh->closed ? "closed" : "empty";
            shm_lock_release(&sh->lock);
            return push_fail(L, why);
        }
        if (queue_wait(L, q, &sh->not_empty, &sh->getters_waiting, deadline, &spun) != 0)
            return push_fail(L, "timeout");
    }
    char err[256];
    int rc = wire_decode(L, q->in.data, q->in.len, WIRE_CODE, err, sizeof err);
    if (q->in.cap > QUEUE_KEEP_BUFFER) buf_free(&q->in);
    if (rc != 0) return luaL_error(L, "queue: %s", err);
    return 1;
}

/* q:put(v [, timeout]) -> true, or nil, "timeout", "timeout" / nil, "closed", "closed". Waits
   while full. */
static int queue_put(lua_State *L) { return queue_put_value(L, 0); }

/* q:put_nowait(v) -> true, or nil, "full", "full" / nil, "closed", "closed". */
static int queue_put_nowait(lua_State *L) { return queue_put_value(L, 1); }

/* q:get([timeout]) -> v, or nil, "timeout", "timeout" / nil, "closed", "closed" (closed and
   empty). */
static int queue_get(lua_State *L) { return queue_get_value(L, 0); }

/* q:get_nowait() -> v, or nil, "empty", "empty" / nil, "closed", "closed" (closed and empty). */
static int queue_get_nowait(lua_State *L) { return queue_get_value(L, 1); }

/* ---------------------------------------------------------------- the rest */

/* Returns the committed state, read under the lock. */
static ring_state queue_snapshot(lua_State *L, queue *q) {
    queue_lock(L, q, -1);
    ring_state s = state_read(q->sh, q->size);
    shm_lock_release(&q->sh->lock);
    return s;
}

/* Returns the puts not yet matched by a task_done (the lock held). */
static uint32_t unfinished(const queue_shared *sh) {
    uint32_t puts = (uint32_t)(atomic_load_explicit(&sh->head_puts, memory_order_relaxed) >> 32);
    return puts - atomic_load_explicit(&sh->dones, memory_order_relaxed);
}

/* #q -> the number of messages in the queue. */
static int queue_len(lua_State *L) {
    queue *q = check_queue(L, 1);
    lua_pushinteger(L, (lua_Integer)queue_snapshot(L, q).count);
    return 1;
}

/* q:empty() -> true when the queue holds no message. */
static int queue_empty(lua_State *L) {
    queue *q = check_queue(L, 1);
    lua_pushboolean(L, queue_snapshot(L, q).count == 0);
    return 1;
}

/* q:full() -> true when fewer than QUEUE_SMALL (64) bytes are free: a small message might
   not fit (a larger one may not fit earlier). */
static int queue_full(lua_State *L) {
    queue *q = check_queue(L, 1);
    lua_pushboolean(L, q->size - queue_snapshot(L, q).used < QUEUE_SMALL);
    return 1;
}

/* q:task_done() -> nothing; raises when called more times than values were put. */
static int queue_task_done(lua_State *L) {
    queue *q = check_queue(L, 1);
    queue_shared *sh = q->sh;
    queue_lock(L, q, -1);
    PAUSE_POINT("queue.task_done.locked");
    uint32_t left = unfinished(sh);
    if (left == 0) {
        shm_lock_release(&sh->lock);
        return luaL_error(L, "task_done() called too many times");
    }
    if (left == 1) wake_all(&sh->all_done, &sh->joiners_waiting);
    atomic_store_explicit(&sh->dones, atomic_load_explicit(&sh->dones, memory_order_relaxed) + 1,
                          memory_order_release);
    shm_lock_release(&sh->lock);
    return 0;
}

/* q:join([timeout]) -> true once every value put has had its task_done, or nil, "timeout",
   "timeout".
   close() does not end it: the values still in the queue can be taken and finished. */
static int queue_join(lua_State *L) {
    queue *q = check_queue(L, 1);
    double deadline = shm_deadline(args_timeout(L, 2));
    queue_shared *sh = q->sh;
    int spun = 1;   /* joins are long: sleep at once */
    if (queue_lock(L, q, deadline) != 0) return push_fail(L, "timeout");
    while (unfinished(sh) > 0) {
        if (queue_wait(L, q, &sh->all_done, &sh->joiners_waiting, deadline, &spun) != 0)
            return push_fail(L, "timeout");
    }
    shm_lock_release(&sh->lock);
    lua_pushboolean(L, 1);
    return 1;
}

/* q:close() -> nothing. Later puts return nil, "closed"; gets drain what remains, then
   return nil, "closed"; every blocked put and get wakes up to see it. Idempotent. */
static int queue_close(lua_State *L) {
    queue *q = check_queue(L, 1);
    queue_shared *sh = q->sh;
    queue_lock(L, q, -1);
    sh->closed = 1;
    shm_cond_notify(&sh->not_empty, INT32_MAX);
    shm_cond_notify(&sh->not_full, INT32_MAX);
    sh->getters_waiting = sh->putters_waiting = 0;
    shm_lock_release(&sh->lock);
    return 0;
}

/* __gc and __close: unmaps this process's view (the other processes keep theirs) and frees
   the local buffers. Idempotent. */
static int queue_gc(lua_State *L) {
    queue *q = type_check_fast(L, 1, QUEUE_TYPE);
    if (q->sh != NULL) shm_unmap(q->sh, q->map_size);
    q->sh = NULL;
    buf_free(&q->out);
    buf_free(&q->in);
    return 0;
}

/* __tostring -> "forage.Queue (N messages, U of S bytes)", with ", closed" after close() and
   ", recovered K times" once a process died holding its lock. */
static int queue_tostring(lua_State *L) {
    queue *q = type_check_fast(L, 1, QUEUE_TYPE);
    if (q->sh == NULL) {
        lua_pushliteral(L, "forage.Queue (closed)");
        return 1;
    }
    queue_shared *sh = q->sh;
    queue_lock(L, q, -1);
    ring_state s = state_read(sh, q->size);
    uint32_t closed = sh->closed;
    uint64_t recoveries = sh->recoveries;
    shm_lock_release(&sh->lock);
    lua_pushfstring(L, "forage.Queue (%I messages, %I of %I bytes", (lua_Integer)s.count, (lua_Integer)s.used,
                    (lua_Integer)q->size);
    if (closed) lua_pushliteral(L, ", closed");
    if (recoveries > 0) lua_pushfstring(L, ", recovered %I times", (lua_Integer)recoveries);
    lua_pushliteral(L, ")");
    lua_concat(L, 2 + (closed != 0) + (recoveries > 0));
    return 1;
}

/* Returns the ring size asked for by the options table at index 1 (none: the default). */
static size_t queue_options(lua_State *L) {
    static const char *const names[] = {"bytes", NULL};
    if (lua_isnoneornil(L, 1)) return QUEUE_DEFAULT_BYTES;
    luaL_checktype(L, 1, LUA_TTABLE);
    args_check_options(L, 1, "forage.queue", names);
    return (size_t)args_opt_integer(L, 1, "forage.queue", "bytes", (lua_Integer)QUEUE_DEFAULT_BYTES,
                                    (lua_Integer)QUEUE_MIN_BYTES, (lua_Integer)QUEUE_MAX_BYTES);
}

/* forage.queue{ bytes = N } -> a new queue (the ring holds N bytes; 1 MiB by default). */
static int queue_new(lua_State *L) {
    size_t bytes = queue_options(L);
    queue *q = lua_newuserdatauv(L, sizeof *q, 0);   /* created closed: an error leaks nothing */
    memset(q, 0, sizeof *q);
    luaL_setmetatable(L, QUEUE_TYPE);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_size = (RING_OFFSET + bytes + page - 1) / page * page;
    queue_shared *sh = shm_map_locked(map_size, offsetof(queue_shared, lock));
    if (sh == NULL) return luaL_error(L, "forage.queue: cannot map %I bytes: %s", (lua_Integer)map_size, strerror(errno));
    sh->size = bytes;
    q->size = bytes;
    q->sh = sh;
    q->map_size = map_size;
    shm_share(L, -1);   /* sent by reference to the processes forked from now on */
    return 1;
}

void forage_open_queue(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"put", queue_put}, {"get", queue_get}, {"put_nowait", queue_put_nowait},
        {"get_nowait", queue_get_nowait}, {"empty", queue_empty}, {"full", queue_full},
        {"task_done", queue_task_done}, {"join", queue_join}, {"close", queue_close}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", queue_gc}, {"__close", queue_gc}, {"__len", queue_len},
        {"__tostring", queue_tostring}, {NULL, NULL},
    };
    type_register(L, QUEUE_TYPE, methods, meta, 1);
    lua_pushcfunction(L, queue_new);
    lua_setfield(L, -2, "queue");
}
