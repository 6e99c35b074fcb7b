/* forage.Queue: a multi-producer, multi-consumer queue of wire-encoded values in a byte ring
   in shared memory, mapped before the fork and inherited by the processes forked later.

   Surviving a killed process. The queue's state (tail, used, count, unfinished) lives in
   two slots; `current` names the committed one. Every operation, under the robust lock:
     1. reads the committed state;
     2. copies a record into the free bytes after the used ones (put), or the oldest record
        out of the ring into a process-local buffer (get): free bytes belong to nobody;
     3. wakes the waiters it must wake (before committing: a process killed between the two
        has woken someone for nothing, never left someone asleep for a committed change);
     4. writes the new state into the other slot and publishes it with one aligned store of
        `current`.
   A process killed at any instruction (inside the lock, in the middle of a memcpy) has
   therefore either committed all of its operation or none of it: a put that did not commit
   left bytes in free space, which the next put overwrites; a get that did not commit left
   its record in the ring for the next consumer. On EOWNERDEAD recovery there is nothing to
   repair; the committed state is checked anyway (state_valid) so that a bug would show as
   an error rather than as garbage. A value is lost only with a consumer killed after its
   get committed, as it would be with any queue.

   Waiter counts in the shared header let put and get skip the futex wake when nobody waits
   (no syscall on the fast path). They may overcount (a waiter killed or timed out) but never
   undercount: a waiter counts itself under the lock before it sleeps, and a notifier wakes
   everyone and zeroes the count, so a stale count costs one wasted wake, once. Before
   sleeping, a waiter spins briefly on the commit counter, for the common case of a peer
   that is about to put or get. */
#include <errno.h>
#include <limits.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "frame.h"
#include "lauxlib.h"
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
#define QUEUE_LOCK_SPINS 200                 /* trylocks before sleeping on a contended lock */

typedef struct queue_state {
    uint32_t tail;         /* ring offset of the oldest record */
    uint32_t used;         /* bytes of the records from tail on: the next one goes at tail + used */
    uint32_t count;        /* records */
    uint64_t unfinished;   /* puts not yet matched by a task_done */
} queue_state;

/* Laid out by cache line: a put or a get touches the lock's line, the state's line and the
   ring, nothing else. */
typedef struct queue_shared {
    shm_lock lock;
    shm_cond not_empty;             /* getters wait on it */
    shm_cond not_full;              /* putters wait on it */
    shm_cond all_done;              /* joiners wait on it */

    alignas(64) queue_state state[2];
    _Atomic uint32_t current;       /* the committed slot of state[]; spinners watch it flip */
    uint32_t closed;                /* close() was called: puts refused, gets drain */
    uint32_t getters_waiting;       /* the waiter counts: hints, see above */
    uint32_t putters_waiting;

    alignas(64) uint32_t joiners_waiting;
    uint64_t recoveries;            /* times the lock was recovered from a dead holder */
    uint64_t size;                  /* ring bytes */
} queue_shared;

_Static_assert(offsetof(queue_shared, putters_waiting) + sizeof(uint32_t) <= 128,
               "the state of a put or a get fits one cache line");

/* The ring starts on its own cache line after the header. */
#define RING_OFFSET ((sizeof(queue_shared) + 63) & ~(size_t)63)
#define RING(sh) ((char *)(sh) + RING_OFFSET)

typedef struct queue {
    queue_shared *sh;   /* NULL once unmapped (__gc, __close) */
    size_t map_size;
    size_t size;        /* ring bytes: sh->size, kept off the shared lines */
    buf out;            /* the record being put: header, then the encoded message */
    buf in;             /* the message being got, copied out of the ring */
} queue;

/* Returns the open queue at index i; raises on another type or an unmapped queue. */
static queue *check_queue(lua_State *L, int i) {
    queue *q = luaL_checkudata(L, i, QUEUE_TYPE);
    if (q->sh == NULL) luaL_error(L, "attempt to use a closed queue");
    return q;
}

/* Returns 2 after pushing nil and why. */
static int push_fail(lua_State *L, const char *why) {
    luaL_pushfail(L);
    lua_pushstring(L, why);
    return 2;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---------------------------------------------------------------- the shared state */

/* Returns a copy of the committed state (the lock held). */
static queue_state state_read(const queue_shared *sh) {
    return sh->state[atomic_load_explicit(&sh->current, memory_order_relaxed)];
}

/* Publishes s with one aligned store (the lock held): see the comment at the top. */
static void state_commit(queue_shared *sh, const queue_state *s) {
    uint32_t next = atomic_load_explicit(&sh->current, memory_order_relaxed) ^ 1u;
    sh->state[next] = *s;
    atomic_store_explicit(&sh->current, next, memory_order_release);
}

/* Returns offset + n within a ring of size bytes. */
static uint32_t ring_advance(size_t size, uint32_t offset, size_t n) {
    size_t at = (size_t)offset + n;
    return (uint32_t)(at >= size ? at - size : at);
}

static void ring_write(queue_shared *sh, size_t size, uint32_t at, const char *p, size_t n) {
    size_t first = size - at < n ? size - at : n;
    memcpy(RING(sh) + at, p, first);
    if (n > first) memcpy(RING(sh), p + first, n - first);
}

static void ring_read(const queue_shared *sh, size_t size, uint32_t at, char *p, size_t n) {
    size_t first = size - at < n ? size - at : n;
    memcpy(p, RING(sh) + at, first);
    if (n > first) memcpy(p + first, RING(sh), n - first);
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

/* Returns 1 when the committed state is coherent: its counters in range and its records
   chained exactly over `used` bytes. Run after a holder died (never needed by design). */
static int state_valid(const queue_shared *sh) {
    size_t size = (size_t)sh->size;
    queue_state s = state_read(sh);
    if (s.tail >= size || s.used > size) return 0;
    uint32_t at = s.tail, left = s.used, records = 0;
    while (left > 0) {
        uint32_t len = record_length(sh, size, at, left);
        if (len == 0) return 0;
        at = ring_advance(size, at, QUEUE_RECORD_HEADER + (size_t)len);
        left -= QUEUE_RECORD_HEADER + len;
        records++;
    }
    return records == s.count;
}

/* Wakes every waiter of c when the count says there may be one, and zeroes the count. */
static void wake_all(shm_cond *c, uint32_t *waiting) {
    if (*waiting == 0) return;
    shm_cond_notify(c, INT32_MAX);
    *waiting = 0;
}

/* After a recovered lock: counts the recovery; raises (the lock released) if the state is
   not coherent. */
static void after_recovery(lua_State *L, queue_shared *sh) {
    sh->recoveries++;
    if (!state_valid(sh)) {
        shm_lock_release(&sh->lock);
        luaL_error(L, "queue: shared state is inconsistent after a process died holding its lock");
    }
}

/* Returns 0 with the lock held, or ETIMEDOUT; raises on any other failure. A contended
   robust mutex costs a futex wait and a futex wake; the lock is held for a memcpy, so a
   short spin of trylocks usually gets it first. */
static int queue_lock(lua_State *L, queue_shared *sh, double deadline) {
    int recovered = 0;
    int rc = EBUSY;
    for (int i = 0; i < QUEUE_LOCK_SPINS && rc == EBUSY; i++) {
        rc = pthread_mutex_trylock(&sh->lock.mutex);
        if (rc == EOWNERDEAD) {   /* as shm_lock_acquire: the lock is ours, made usable */
            pthread_mutex_consistent(&sh->lock.mutex);
            recovered = 1;
            rc = 0;
        } else if (rc == EBUSY) {
            cpu_relax();
        }
    }
    if (rc != 0) rc = shm_lock_acquire(&sh->lock, deadline, &recovered);
    if (rc == ETIMEDOUT) return rc;
    if (rc != 0) return luaL_error(L, "queue: cannot lock: %s", strerror(rc));
    if (recovered) after_recovery(L, sh);
    return 0;
}

/* Waits for a change, the lock held and the caller's predicate false. The first call of a
   blocking operation (*spun == 0) spins on the commit counter without the lock; later ones
   sleep on c, counted in *waiting. Returns 0 with the lock held (re-check the predicate),
   or ETIMEDOUT with the lock released. */
static int queue_wait(lua_State *L, queue_shared *sh, shm_cond *c, uint32_t *waiting, double deadline, int *spun) {
    double now = now_seconds();
    if (deadline >= 0 && now >= deadline) {
        shm_lock_release(&sh->lock);
        return ETIMEDOUT;
    }
    if (!*spun) {
        *spun = 1;
        /* current flips at every commit (two commits may pass unseen: the spin then ends
           by time, and the caller re-checks under the lock anyway). */
        uint32_t seen = atomic_load_explicit(&sh->current, memory_order_relaxed);
        shm_lock_release(&sh->lock);
        double until = now + QUEUE_SPIN;
        if (deadline >= 0 && deadline < until) until = deadline;
        for (unsigned i = 1; atomic_load_explicit(&sh->current, memory_order_acquire) == seen; i++) {
            cpu_relax();
            if ((i & 63) == 0 && now_seconds() >= until) break;
        }
        return queue_lock(L, sh, deadline);
    }
    (*waiting)++;
    uint32_t seq = atomic_load(&c->seq);
    int recovered;
    int rc = shm_cond_wait(c, &sh->lock, deadline, &recovered);
    if (recovered) after_recovery(L, sh);
    /* Timed out with no notification since we counted ourselves: nobody zeroed our count. */
    if (rc == ETIMEDOUT && atomic_load(&c->seq) == seq && *waiting > 0) (*waiting)--;
    return 0;
}

/* ---------------------------------------------------------------- put and get */

/* Encodes the value at index 2 into q->out as a record; raises when it cannot travel or
   cannot fit the ring. */
static void encode_record(lua_State *L, queue *q) {
    static const char header[QUEUE_RECORD_HEADER] = {0};
    char err[512];
    buf_reset(&q->out);
    if (buf_append(&q->out, header, sizeof header) != 0) luaL_error(L, "not enough memory");
    if (wire_encode(L, 2, &q->out, WIRE_CODE, "value", err, sizeof err) != 0) luaL_error(L, "%s", err);
    size_t len = q->out.len - QUEUE_RECORD_HEADER;
    if (q->out.len > q->size) {
        if (q->out.cap > QUEUE_KEEP_BUFFER) buf_free(&q->out);
        luaL_error(L, "queue: message of %I bytes does not fit a queue of %I bytes", (lua_Integer)len,
                   (lua_Integer)q->size);
    }
    put_u32(q->out.data, (uint32_t)len);
}

/* put and put_nowait: returns true, or nil and "timeout", "full" or "closed". */
static int queue_put_value(lua_State *L, int nowait) {
    queue *q = check_queue(L, 1);
    luaL_checkany(L, 2);
    double deadline = nowait ? -1 : shm_deadline(shm_opt_timeout(L, 3));
    encode_record(L, q);
    queue_shared *sh = q->sh;
    size_t need = q->out.len;
    const char *why = NULL;
    int spun = 0;
    if (queue_lock(L, sh, deadline) != 0) return push_fail(L, "timeout");
    for (;;) {
        if (sh->closed) {
            why = "closed";
            shm_lock_release(&sh->lock);
            break;
        }
        queue_state s = state_read(sh);
        if (q->size - s.used >= need) {
            ring_write(sh, q->size, ring_advance(q->size, s.tail, s.used), q->out.data, need);
            s.used += (uint32_t)need;
            s.count++;
            s.unfinished++;
            wake_all(&sh->not_empty, &sh->getters_waiting);
            state_commit(sh, &s);
            shm_lock_release(&sh->lock);
            break;
        }
        if (nowait) {
            why = "full";
            shm_lock_release(&sh->lock);
            break;
        }
        if (queue_wait(L, sh, &sh->not_full, &sh->putters_waiting, deadline, &spun) != 0) {
            why = "timeout";
            break;
        }
    }
    if (q->out.cap > QUEUE_KEEP_BUFFER) buf_free(&q->out);
    if (why != NULL) return push_fail(L, why);
    lua_pushboolean(L, 1);
    return 1;
}

/* get and get_nowait: returns the oldest value, or nil and "timeout", "empty" or "closed"
   (closed and drained). */
static int queue_get_value(lua_State *L, int nowait) {
    queue *q = check_queue(L, 1);
    double deadline = nowait ? -1 : shm_deadline(shm_opt_timeout(L, 2));
    queue_shared *sh = q->sh;
    int spun = 0;
    if (queue_lock(L, sh, deadline) != 0) return push_fail(L, "timeout");
    for (;;) {
        queue_state s = state_read(sh);
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
            ring_read(sh, q->size, ring_advance(q->size, s.tail, QUEUE_RECORD_HEADER), q->in.data, len);
            q->in.len = len;
            s.tail = ring_advance(q->size, s.tail, QUEUE_RECORD_HEADER + (size_t)len);
            s.used -= QUEUE_RECORD_HEADER + len;
            s.count--;
            wake_all(&sh->not_full, &sh->putters_waiting);
            state_commit(sh, &s);
            shm_lock_release(&sh->lock);
            break;
        }
        if (sh->closed || nowait) {
            const char *why = sh->closed ? "closed" : "empty";
            shm_lock_release(&sh->lock);
            return push_fail(L, why);
        }
        if (queue_wait(L, sh, &sh->not_empty, &sh->getters_waiting, deadline, &spun) != 0)
            return push_fail(L, "timeout");
    }
    char err[256];
    int rc = wire_decode(L, q->in.data, q->in.len, WIRE_CODE, err, sizeof err);
    if (q->in.cap > QUEUE_KEEP_BUFFER) buf_free(&q->in);
    if (rc != 0) return luaL_error(L, "queue: %s", err);
    return 1;
}

/* q:put(v [, timeout]) -> true, or nil, "timeout" / nil, "closed". Waits while full. */
static int queue_put(lua_State *L) { return queue_put_value(L, 0); }

/* q:put_nowait(v) -> true, or nil, "full" / nil, "closed". */
static int queue_put_nowait(lua_State *L) { return queue_put_value(L, 1); }

/* q:get([timeout]) -> v, or nil, "timeout" / nil, "closed" (closed and empty). */
static int queue_get(lua_State *L) { return queue_get_value(L, 0); }

/* q:get_nowait() -> v, or nil, "empty" / nil, "closed" (closed and empty). */
static int queue_get_nowait(lua_State *L) { return queue_get_value(L, 1); }

/* ---------------------------------------------------------------- the rest */

/* Returns the committed state, read under the lock. */
static queue_state queue_snapshot(lua_State *L, queue_shared *sh) {
    queue_lock(L, sh, -1);
    queue_state s = state_read(sh);
    shm_lock_release(&sh->lock);
    return s;
}

/* #q -> the number of messages in the queue. */
static int queue_len(lua_State *L) {
    queue *q = check_queue(L, 1);
    lua_pushinteger(L, (lua_Integer)queue_snapshot(L, q->sh).count);
    return 1;
}

/* q:empty() -> true when the queue holds no message. */
static int queue_empty(lua_State *L) {
    queue *q = check_queue(L, 1);
    lua_pushboolean(L, queue_snapshot(L, q->sh).count == 0);
    return 1;
}

/* q:full() -> true when fewer than QUEUE_SMALL (64) bytes are free: a small message would
   not fit (a larger one may not fit earlier). */
static int queue_full(lua_State *L) {
    queue *q = check_queue(L, 1);
    queue_state s = queue_snapshot(L, q->sh);
    lua_pushboolean(L, q->size - s.used < QUEUE_SMALL);
    return 1;
}

/* q:task_done() -> nothing; raises when called more times than values were put. */
static int queue_task_done(lua_State *L) {
    queue *q = check_queue(L, 1);
    queue_shared *sh = q->sh;
    queue_lock(L, sh, -1);
    queue_state s = state_read(sh);
    if (s.unfinished == 0) {
        shm_lock_release(&sh->lock);
        return luaL_error(L, "task_done() called too many times");
    }
    s.unfinished--;
    if (s.unfinished == 0) wake_all(&sh->all_done, &sh->joiners_waiting);
    state_commit(sh, &s);
    shm_lock_release(&sh->lock);
    return 0;
}

/* q:join([timeout]) -> true once every value put has had its task_done, or nil, "timeout".
   close() does not end it: the values still in the queue can be taken and finished. */
static int queue_join(lua_State *L) {
    queue *q = check_queue(L, 1);
    double deadline = shm_deadline(shm_opt_timeout(L, 2));
    queue_shared *sh = q->sh;
    int spun = 1;   /* joins are long: sleep at once */
    if (queue_lock(L, sh, deadline) != 0) return push_fail(L, "timeout");
    while (state_read(sh).unfinished > 0) {
        if (queue_wait(L, sh, &sh->all_done, &sh->joiners_waiting, deadline, &spun) != 0)
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
    queue_lock(L, sh, -1);
    if (!sh->closed) {
        sh->closed = 1;
        shm_cond_notify(&sh->not_empty, INT32_MAX);
        shm_cond_notify(&sh->not_full, INT32_MAX);
        sh->getters_waiting = sh->putters_waiting = 0;
        queue_state s = state_read(sh);
        state_commit(sh, &s);   /* the same state: only to end the spinners' wait */
    }
    shm_lock_release(&sh->lock);
    return 0;
}

/* __gc and __close: unmaps this process's view (the other processes keep theirs) and frees
   the local buffers. Idempotent. */
static int queue_gc(lua_State *L) {
    queue *q = luaL_checkudata(L, 1, QUEUE_TYPE);
    if (q->sh != NULL) shm_unmap(q->sh, q->map_size);
    q->sh = NULL;
    buf_free(&q->out);
    buf_free(&q->in);
    return 0;
}

/* __tostring -> "forage.Queue (N messages, U of S bytes)", with ", closed" after close() and
   ", recovered K times" once a process died holding its lock. */
static int queue_tostring(lua_State *L) {
    queue *q = luaL_checkudata(L, 1, QUEUE_TYPE);
    if (q->sh == NULL) {
        lua_pushliteral(L, "forage.Queue (closed)");
        return 1;
    }
    queue_shared *sh = q->sh;
    queue_lock(L, sh, -1);
    queue_state s = state_read(sh);
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
    size_t bytes = QUEUE_DEFAULT_BYTES;
    if (lua_isnoneornil(L, 1)) return bytes;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "bytes") != 0)
            return (size_t)luaL_error(L, "forage.queue: unknown option '%s'", luaL_tolstring(L, -1, NULL));
    }
    lua_getfield(L, 1, "bytes");
    if (!lua_isnil(L, -1)) {
        int isint;
        lua_Integer n = lua_tointegerx(L, -1, &isint);
        if (!isint || n < (lua_Integer)QUEUE_MIN_BYTES || n > (lua_Integer)QUEUE_MAX_BYTES)
            luaL_error(L, "forage.queue: bytes must be an integer from %I to %I", (lua_Integer)QUEUE_MIN_BYTES,
                       (lua_Integer)QUEUE_MAX_BYTES);
        bytes = (size_t)n;
    }
    lua_pop(L, 1);
    return bytes;
}

/* forage.queue{ bytes = N } -> a new queue (the ring holds N bytes; 1 MiB by default). */
static int queue_new(lua_State *L) {
    size_t bytes = queue_options(L);
    queue *q = lua_newuserdatauv(L, sizeof *q, 0);   /* created closed: an error leaks nothing */
    memset(q, 0, sizeof *q);
    luaL_setmetatable(L, QUEUE_TYPE);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_size = (RING_OFFSET + bytes + page - 1) / page * page;
    queue_shared *sh = shm_map(map_size);
    if (sh == NULL) return luaL_error(L, "forage.queue: cannot map %I bytes: %s", (lua_Integer)map_size, strerror(errno));
    int rc = shm_lock_init(&sh->lock);
    if (rc != 0) {
        shm_unmap(sh, map_size);
        return luaL_error(L, "forage.queue: cannot create its lock: %s", strerror(rc));
    }
    sh->size = bytes;
    q->size = bytes;
    q->sh = sh;
    q->map_size = map_size;
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
    luaL_newmetatable(L, QUEUE_TYPE);
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, queue_new);
    lua_setfield(L, -2, "queue");
}
