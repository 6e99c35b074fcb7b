#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "lauxlib.h"

#define SHM_LOCK_TRIES 100   /* trylocks before sleeping on a contended lock */

void *shm_map(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void shm_unmap(void *p, size_t size) {
    if (p != NULL) munmap(p, size);
}

int shm_lock_init(shm_lock *l) {
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc != 0) return rc;
    if ((rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) == 0 &&
        (rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) == 0)
        rc = pthread_mutex_init(&l->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

void *shm_map_locked(size_t size, size_t lock_at) {
    char *p = shm_map(size);
    if (p == NULL) return NULL;
    int rc = shm_lock_init((shm_lock *)(void *)(p + lock_at));
    if (rc != 0) {
        shm_unmap(p, size);
        errno = rc;
        return NULL;
    }
    return p;
}

double shm_deadline(double timeout) {
    return timeout < 0 ? -1 : now_seconds() + timeout;
}

int shm_lock_acquire(shm_lock *l, double deadline, int *recovered) {
    /* The holder is usually about to finish: a few trylocks cost less than a futex sleep. */
    int rc = pthread_mutex_trylock(&l->mutex);
    for (int i = 1; i < SHM_LOCK_TRIES && rc == EBUSY; i++) {
        for (int k = 0; k < 8; k++) cpu_relax();
        rc = pthread_mutex_trylock(&l->mutex);
    }
    if (rc == EBUSY && deadline < 0) {
        rc = pthread_mutex_lock(&l->mutex);
    } else if (rc == EBUSY) {
        struct timespec ts = seconds_to_timespec(deadline);
        rc = pthread_mutex_clocklock(&l->mutex, CLOCK_MONOTONIC, &ts);
    }
    if (recovered != NULL) *recovered = 0;
    if (rc == EOWNERDEAD) {
        /* The holder died inside its critical section: the lock is ours, made usable again. */
        pthread_mutex_consistent(&l->mutex);
        if (recovered != NULL) *recovered = 1;
        rc = 0;
    }
    return rc;
}

/* The thread id of the holder of l, 0 when free. The kernel reads the holder from the
   mutex word (the robust-futex ABI: the low bits of the word are the owner's tid) and
   clears it when the holder dies, so, unlike a pid kept beside the lock, it can never
   name a dead holder whose pid has been reused. glibc's pthread_mutex_t keeps that word
   in __data.__lock. */
pid_t shm_lock_holder(shm_lock *l) {
    unsigned word = (unsigned)__atomic_load_n(&l->mutex.__data.__lock, __ATOMIC_ACQUIRE);
    return (pid_t)(word & FUTEX_TID_MASK);
}

/* 1 when the last holder of l died holding it and no one has locked it since. */
int shm_lock_holder_died(shm_lock *l) {
    unsigned word = (unsigned)__atomic_load_n(&l->mutex.__data.__lock, __ATOMIC_ACQUIRE);
    return (word & FUTEX_OWNER_DIED) != 0 && (word & FUTEX_TID_MASK) == 0;
}

void shm_lock_release(shm_lock *l) {
    pthread_mutex_unlock(&l->mutex);
}

int shm_cond_wait(shm_cond *c, shm_lock *l, double deadline, int *recovered) {
    uint32_t seen = atomic_load(&c->seq);
    shm_lock_release(l);
    int timed_out = 0;
    struct timespec ts = seconds_to_timespec(deadline < 0 ? 0 : deadline);
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time; the word is in a shared
       mapping, so the futex is not FUTEX_PRIVATE. */
    long r = syscall(SYS_futex, &c->seq, FUTEX_WAIT_BITSET, seen, deadline < 0 ? NULL : &ts, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r != 0 && errno == ETIMEDOUT) timed_out = 1;
    int rc = shm_lock_acquire(l, -1, recovered);
    (void)rc;   /* a lock without a deadline only fails on a broken mapping */
    return timed_out ? ETIMEDOUT : 0;
}

void shm_cond_notify(shm_cond *c, int n) {
    atomic_fetch_add(&c->seq, 1);
    syscall(SYS_futex, &c->seq, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* Two tables in the registry: userdata -> id (weak keys) for the sender, id -> userdata
   (weak values) for the receiver. A forked child inherits both with the objects. */
#define SHARED_IDS "forage.shared.ids"
#define SHARED_OBJECTS "forage.shared.objects"

/* Pushes the registry table name, creating it with the given weak mode. */
static void push_weak_table(lua_State *L, const char *name, const char *mode) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, name) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, name);
}

void shm_share(lua_State *L, int idx) {
    static uint32_t counter;
    idx = lua_absindex(L, idx);
    /* Unique across the tree: the creating process's pid and its own count. */
    lua_Integer id = (lua_Integer)((uint64_t)(uint32_t)getpid() << 32 | ++counter);
    push_weak_table(L, SHARED_IDS, "k");
    lua_pushvalue(L, idx);
    lua_pushinteger(L, id);
    lua_rawset(L, -3);
    push_weak_table(L, SHARED_OBJECTS, "v");
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, id);
    lua_pop(L, 2);
}

int shm_shared_id(lua_State *L, int idx, lua_Integer *id) {
    idx = lua_absindex(L, idx);
    if (lua_getfield(L, LUA_REGISTRYINDEX, SHARED_IDS) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushvalue(L, idx);
    int found = lua_rawget(L, -2) == LUA_TNUMBER;
    if (found) *id = lua_tointeger(L, -1);
    lua_pop(L, 2);
    return found;
}

int shm_push_shared(lua_State *L, lua_Integer id) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, SHARED_OBJECTS) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_rawgeti(L, -1, id) == LUA_TUSERDATA) {
        lua_remove(L, -2);
        return 1;
    }
    lua_pop(L, 2);
    return 0;
}
